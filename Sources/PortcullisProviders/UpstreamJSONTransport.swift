import Foundation
import Logging
import NIOCore
import PortcullisCore

/// A `JSONTransport` over the pooled upstream client: one service's base address, deadlines
/// and (for AWS services) SigV4 signing of each request, host header included.
public struct UpstreamJSONTransport: JSONTransport {
    public let target: DeploymentTarget
    public let http: UpstreamHTTPClient
    public let signer: SigV4?
    public let logger: Logger

    public init(target: DeploymentTarget, http: UpstreamHTTPClient, signer: SigV4? = nil, logger: Logger) {
        self.target = target
        self.http = http
        self.signer = signer
        self.logger = logger
    }

    public func post(path: String, headers: [(String, String)], body: JSONValue, requestID: String) async throws -> JSONValue {
        let url = joinURL(target.apiBase, path)
        var headers = headers
        if let signer {
            guard let components = URLComponents(string: url), let host = components.host else {
                throw UpstreamFailure(reason: .malformed, message: "api_base has no host", deployment: target.name)
            }
            let hostHeader = components.port.map { "\(host):\($0)" } ?? host
            let bytes = Array(JSONWriter.buffer(body).readableBytesView)
            headers += signer.sign(method: "POST", path: components.percentEncodedPath, query: components.percentEncodedQuery ?? "",
                                   headers: headers + [("host", hostHeader)], body: bytes, date: Date())
        }
        let context = UpstreamContext(requestID: requestID, logger: logger)
        return try await http.sendJSON(url: url, headers: headers, body: body, target: target, context: context)
    }
}
