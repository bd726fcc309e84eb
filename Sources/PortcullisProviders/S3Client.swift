import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PortcullisCore

/// Writes objects to an S3-compatible bucket (path-style URLs, SigV4), optionally under
/// Object Lock in compliance mode — what audit checkpoints are published with.
public struct S3Client: Sendable {
    let http: UpstreamHTTPClient
    /// Scheme and authority, without a trailing slash.
    let endpoint: String
    let signer: SigV4
    let logger: Logger

    public init(http: UpstreamHTTPClient, endpoint: String?, region: String, accessKeyID: String, secretAccessKey: String, logger: Logger) {
        self.http = http
        var base = endpoint ?? "https://s3.\(region).amazonaws.com"
        while base.hasSuffix("/") { base.removeLast() }
        self.endpoint = base
        self.signer = SigV4(accessKeyID: accessKeyID, secretAccessKey: secretAccessKey, sessionToken: nil, region: region, service: "s3")
        self.logger = logger
    }

    /// `PUT /<bucket>/<key>`; with `lockedUntil`, the object cannot be changed or deleted before then.
    public func putObject(bucket: String, key: String, body: [UInt8], lockedUntil: Date? = nil) async throws {
        var lock: [(String, String)] = []
        if let lockedUntil {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime]
            lock = [("x-amz-object-lock-mode", "COMPLIANCE"), ("x-amz-object-lock-retain-until-date", formatter.string(from: lockedUntil))]
        }
        let response = try await send(method: .PUT, path: Self.path(bucket: bucket, key: key), body: body, extraHeaders: lock)
        _ = try await response.body.collect(upTo: 1 << 20)
    }

    /// `GET /<bucket>/<key>`: the object's bytes and response headers.
    public func getObject(bucket: String, key: String) async throws -> (body: [UInt8], headers: [(String, String)]) {
        let response = try await send(method: .GET, path: Self.path(bucket: bucket, key: key), body: [], extraHeaders: [])
        let buffer = try await response.body.collect(upTo: 16 << 20)
        return (Array(buffer.readableBytesView), response.headers.map { ($0.name.lowercased(), $0.value) })
    }

    /// `PUT /<bucket>`, with Object Lock enabled when asked (which also turns versioning on).
    public func createBucket(_ bucket: String, objectLock: Bool) async throws {
        let response = try await send(method: .PUT, path: "/" + SigV4.encode(bucket), body: [],
                                      extraHeaders: objectLock ? [("x-amz-bucket-object-lock-enabled", "true")] : [])
        _ = try await response.body.collect(upTo: 1 << 20)
    }

    static func path(bucket: String, key: String) -> String {
        "/" + SigV4.encode(bucket) + "/" + key.split(separator: "/", omittingEmptySubsequences: false).map { SigV4.encode(String($0)) }.joined(separator: "/")
    }

    /// One signed request; non-2xx answers are thrown as `UpstreamFailure`s.
    private func send(method: HTTPMethod, path: String, body: [UInt8], extraHeaders: [(String, String)]) async throws -> UpstreamResponse {
        let url = endpoint + path
        let (host, _) = try UpstreamHTTPClient.parse(url, deployment: "s3")
        var headers: [(String, String)] = [("host", host.hostHeader)] + extraHeaders
        if !body.isEmpty { headers.append(("content-md5", Data(Insecure.MD5.hash(data: body)).base64EncodedString())) }
        headers += signer.sign(method: method.rawValue, path: path, query: "", headers: headers, body: body, date: Date(), signPayloadHeader: true)
        let target = DeploymentTarget(name: "s3", provider: .openaiCompatible, upstreamModel: "", apiBase: endpoint,
                                      timeouts: UpstreamTimeouts(connect: 5, firstByte: 15, total: 30, streamIdle: 15))
        return try await http.send(method: method, url: url, headers: headers.filter { $0.0 != "host" }, body: body.isEmpty ? nil : ByteBuffer(bytes: body),
                                   target: target, context: UpstreamContext(requestID: FastRandom.uuidString(), logger: logger))
    }
}
