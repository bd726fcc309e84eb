import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PortcullisCore
import Synchronization

/// The pooled HTTP client all adapters share, with per-phase timeouts and failure classification.
///
/// Keep-alive HTTP/1.1 (TLS for https, with SNI) on the gateway's event loops; a request's
/// head, body and end leave in one write, and response bodies stream with back-pressure.
public final class UpstreamHTTPClient: Sendable {
    private let pool: UpstreamConnectionPool
    /// Largest non-streamed upstream body accepted.
    public let maximumResponseBytes: Int

    public init(maximumResponseBytes: Int = 64 * 1024 * 1024) {
        self.maximumResponseBytes = maximumResponseBytes
        self.pool = UpstreamConnectionPool()
    }

    /// Closes every pooled connection and refuses new ones; call once at shutdown.
    public func shutdown() async {
        await pool.shutdown()
    }

    /// Splits an absolute `http(s)://host[:port]/path?query` URL into the endpoint and the request target.
    static func parse(_ url: String, deployment: String) throws -> (UpstreamEndpoint, String) {
        let invalid = UpstreamFailure(reason: .connection, message: "invalid upstream URL", deployment: deployment)
        let isTLS: Bool
        let rest: Substring
        if url.hasPrefix("https://") {
            isTLS = true
            rest = url.dropFirst(8)
        } else if url.hasPrefix("http://") {
            isTLS = false
            rest = url.dropFirst(7)
        } else {
            throw invalid
        }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var host = authority
        var port = isTLS ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw invalid }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let afterHost = authority[authority.index(after: close)...]
            if afterHost.hasPrefix(":") {
                guard let value = Int(afterHost.dropFirst()) else { throw invalid }
                port = value
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let value = Int(authority[authority.index(after: colon)...]) else { throw invalid }
            port = value
        }
        guard !host.isEmpty, (1...65535).contains(port) else { throw invalid }
        var target = String(rest[authorityEnd...])
        if target.isEmpty || target.hasPrefix("?") { target = "/" + target }
        return (UpstreamEndpoint(isTLS: isTLS, host: String(host), port: port), target)
    }

    /// Sends one request and returns the response once its head arrived with a success status.
    ///
    /// Non-success statuses, timeouts and connection failures become `UpstreamFailure`s,
    /// with the upstream's own error message (credentials scrubbed) where it gave one.
    public func send(method: HTTPMethod = .POST, url: String, headers: [(String, String)], body: ByteBuffer?,
                     target: DeploymentTarget, context: UpstreamContext) async throws -> UpstreamResponse {
        var (parsedEndpoint, requestTarget) = try Self.parse(url, deployment: target.name)
        if parsedEndpoint.isTLS { parsedEndpoint.tls = target.tls }
        let endpoint = parsedEndpoint
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: requestTarget)
        head.headers.add(name: "host", value: endpoint.hostHeader)
        head.headers.add(name: "user-agent", value: "portcullis")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        for (name, value) in target.headers { head.headers.replaceOrAdd(name: name, value: value) }
        head.headers.replaceOrAdd(name: "x-request-id", value: context.requestID)
        if let traceparent = UpstreamTrace.traceparent ?? context.traceparent { head.headers.replaceOrAdd(name: "traceparent", value: traceparent) }
        if let body {
            // JSON unless the caller names its own type (AWS's JSON protocols ask for application/x-amz-json-1.1).
            if !head.headers.contains(name: "content-type") { head.headers.add(name: "content-type", value: "application/json") }
            head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        } else if method == .POST || method == .PUT {
            head.headers.replaceOrAdd(name: "content-length", value: "0")
        }
        let limits = ExchangeLimits(deadline: .now() + .nanoseconds(Int64(target.timeouts.total * 1e9)),
                                    idle: .nanoseconds(Int64(target.timeouts.streamIdle * 1e9)), deployment: target.name)
        let pool = self.pool
        var response: UpstreamResponse
        var mayReuse = true
        while true {
            let pooled = mayReuse ? pool.takeIdle(endpoint) : nil
            let connection: UpstreamConnection
            if let pooled {
                connection = pooled
            } else {
                connection = try await pool.connect(endpoint, timeout: .nanoseconds(Int64(target.timeouts.connect * 1e9)), deployment: target.name)
            }
            do {
                response = try await connection.execute(head: head, body: body, limits: limits) { reusable in
                    if reusable { pool.release(connection, to: endpoint) }
                }
                break
            } catch let failure as UpstreamFailure where pooled != nil && failure.reason == .connection && !Task.isCancelled {
                // A kept-alive connection the upstream had already closed: try once more on a new one.
                mayReuse = false
                continue
            } catch {
                throw Self.classify(error, deployment: target.name)
            }
        }
        guard (200..<300).contains(response.status) else {
            let retryAfter = Self.retryAfter(response.headers)
            let bytes = try? await response.body.collect(upTo: 256 * 1024)
            let message = Self.upstreamMessage(bytes, status: response.status, apiKey: target.apiKey)
            throw UpstreamFailure(reason: .status(response.status), message: message, retryAfter: retryAfter, deployment: target.name)
        }
        return response
    }

    /// Sends a request and decodes its JSON body.
    public func sendJSON(method: HTTPMethod = .POST, url: String, headers: [(String, String)], body: JSONValue?,
                         target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue {
        let response = try await send(method: method, url: url, headers: headers, body: body.map(JSONWriter.buffer),
                                      target: target, context: context)
        let buffer: ByteBuffer
        do {
            buffer = try await response.body.collect(upTo: maximumResponseBytes)
        } catch {
            throw Self.classify(error, deployment: target.name)
        }
        do {
            return try JSONParser.parse(buffer.readableBytesView)
        } catch {
            throw UpstreamFailure(reason: .malformed, message: "response body is not JSON (\(error.description))",
                                  deployment: target.name)
        }
    }

    /// The response body as server-sent events; read errors become `UpstreamFailure`s.
    public static func events(of response: UpstreamResponse, deployment: String) -> EventStream<SSEEvent> {
        let body = response.body
        return EventStream {
            var iterator = body.makeAsyncIterator()
            var parser = SSEParser()
            var queued: [SSEEvent] = []
            var queueIndex = 0
            var finished = false
            return {
                while true {
                    if queueIndex < queued.count {
                        defer { queueIndex += 1 }
                        return queued[queueIndex]
                    }
                    if finished { return nil }
                    queued.removeAll(keepingCapacity: true)
                    queueIndex = 0
                    let chunk: ByteBuffer?
                    do {
                        chunk = try await iterator.next()
                    } catch {
                        throw classify(error, deployment: deployment)
                    }
                    guard let chunk else {
                        finished = true
                        if let last = parser.finish() { queued = [last] }
                        continue
                    }
                    do {
                        queued = try parser.feed(chunk)
                    } catch {
                        throw UpstreamFailure(reason: .malformed, message: "event stream line too long", deployment: deployment)
                    }
                }
            }
        }
    }

    /// Runs `body`, failing with a `timeout(phase)` failure if it takes longer than `seconds`.
    public static func withTimeLimit<T: Sendable>(seconds: Double, phase: String, deployment: String,
                                                  _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        do {
            return try await Deadline.run(within: Deadline.seconds(seconds), body)
        } catch is DeadlineExceeded {
            throw UpstreamFailure(reason: .timeout(phase), message: "no \(phase) within \(format(seconds)) s", deployment: deployment)
        }
    }

    static func format(_ seconds: Double) -> String {
        seconds.rounded() == seconds ? String(Int(seconds)) : String(seconds)
    }

    /// Maps transport errors to failure reasons.
    public static func classify(_ error: any Error, deployment: String) -> UpstreamFailure {
        if let failure = error as? UpstreamFailure { return failure }
        if let ioError = error as? IOError {
            let detail = ioError.errnoCode == ECONNREFUSED ? "connection refused" : "I/O error \(ioError.errnoCode)"
            return UpstreamFailure(reason: .connection, message: detail, deployment: deployment)
        }
        if error is HTTPParserError {
            return UpstreamFailure(reason: .connection, message: "the connection broke mid-response", deployment: deployment)
        }
        if error is CancellationError {
            return UpstreamFailure(reason: .connection, message: "request cancelled", deployment: deployment)
        }
        if error is NIOTooManyBytesError {
            return UpstreamFailure(reason: .malformed, message: "response body too large", deployment: deployment)
        }
        return UpstreamFailure(reason: .connection, message: "connection failed (\(String(describing: type(of: error))))", deployment: deployment)
    }

    /// `Retry-After` (seconds or HTTP date) or `retry-after-ms`, in seconds.
    public static func retryAfter(_ headers: HTTPHeaders) -> Double? {
        if let milliseconds = headers.first(name: "retry-after-ms").flatMap(Double.init), milliseconds >= 0 {
            return milliseconds / 1000
        }
        guard let value = headers.first(name: "retry-after") else { return nil }
        if let seconds = Double(value.trimmingCharacters(in: .whitespaces)), seconds >= 0 { return seconds }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        if let date = formatter.date(from: value) { return max(0, date.timeIntervalSinceNow) }
        return nil
    }

    /// The upstream's error message from an OpenAI- or Anthropic-shaped error body, with secrets scrubbed.
    public static func upstreamMessage(_ body: ByteBuffer?, status: Int, apiKey: String?) -> String {
        var message = "upstream returned HTTP \(status)"
        if let body, let json = try? JSONParser.parse(body.readableBytesView),
           let text = json.objectValue?["error"]?.objectValue?["message"]?.stringValue ?? json.objectValue?["message"]?.stringValue {
            message += ": " + String(text.prefix(500))
        }
        return scrubSecrets(message, apiKey: apiKey)
    }

    /// Removes the configured key and anything shaped like a provider key from `text`.
    public static func scrubSecrets(_ text: String, apiKey: String?) -> String {
        var result = text
        if let apiKey, apiKey.count >= 4 { result = result.replacingOccurrences(of: apiKey, with: "[redacted]") }
        var output = ""
        var word = ""
        func flush() {
            let lower = word.lowercased()
            if (lower.hasPrefix("sk-") || lower.hasPrefix("sk_")) && word.count >= 12 { output += "[redacted]" } else { output += word }
            word = ""
        }
        for character in result {
            if character.isLetter || character.isNumber || character == "-" || character == "_" || character == "*" {
                word.append(character)
            } else {
                flush()
                output.append(character)
            }
        }
        flush()
        return output
    }
}

/// Joins a base URL and a path with exactly one slash.
public func joinURL(_ base: String, _ path: String) -> String {
    var trimmedBase = base
    while trimmedBase.hasSuffix("/") { trimmedBase.removeLast() }
    return path.hasPrefix("/") ? trimmedBase + path : trimmedBase + "/" + path
}
