import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import PortcullisAccess
import PortcullisAudit
import PortcullisCore
import PortcullisStorage
import PortcullisTLS

/// Accepts or generates `x-request-id`, starts or continues the W3C trace, and returns the id on every response.
public struct RequestIdentityMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext

    public init() {}

    /// Whether a client-supplied id is safe to log and echo: 1–128 visible ASCII characters without separators.
    static func isAcceptable(_ id: String) -> Bool {
        guard !id.isEmpty, id.utf8.count <= 128 else { return false }
        return id.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
        }
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let incoming = request.headers[HTTPField.Name("x-request-id")!]
        // Generated ids are time-ordered (UUID version 7): they sort by arrival, and indexes on them grow at one end.
        let requestID = incoming.flatMap { Self.isAcceptable($0) ? $0 : nil }
            ?? FastRandom.timeOrderedUUIDString(unixMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000))
        context.requestID = requestID
        context.trace = TraceContext.continuing(request.headers[HTTPField.Name("traceparent")!])
        context.dialect = WireDialect.of(path: request.uri.path)
        context.logger[metadataKey: "request_id"] = .string(requestID)
        if let trace = context.trace { context.logger[metadataKey: "trace_id"] = .string(trace.traceID) }
        var response = try await next(request, context)
        response.headers[HTTPField.Name("x-request-id")!] = requestID
        return response
    }
}

/// Sends `Strict-Transport-Security` on every response of a TLS listener (added only there, and
/// outside the error envelope, so refusals carry it too).
public struct StrictTransportMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let header: String

    public init(header: String) {
        self.header = header
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.strictTransportSecurity] = header
        return response
    }
}

/// Renders every error as the client's expected envelope; unknown errors become a logged 500 that reveals nothing.
public struct ErrorEnvelopeMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            let gatewayError = Self.gatewayError(for: error, path: request.uri.path)
            context.audit?.failed(code: gatewayError.code)
            context.measures?.failed(gatewayError)
            if gatewayError.statusCode >= 500 && gatewayError.code == GatewayError.internalFailure.code {
                context.logger.error("unhandled error", metadata: ["error": "\(String(reflecting: error))"])
            }
            return gatewayError.response(dialect: context.dialect, requestID: context.requestID)
        }
    }

    /// Maps any error to the client-facing one.
    static func gatewayError(for error: any Error, path: String) -> GatewayError {
        if let gatewayError = error as? GatewayError { return gatewayError }
        if let storeError = error as? SQLError, storeError.isUnavailable {
            return GatewayError(status: 503, kind: .overloaded, code: .storageUnavailable,
                                message: "The gateway's database cannot be reached right now; try again shortly.", headers: ["Retry-After": "5"])
        }
        if error is HTTPParserError { return .malformedBody }
        if let httpError = error as? HTTPError {
            switch httpError.status.code {
            case 404:
                return GatewayError(status: 404, kind: .notFound, code: .routeNotFound, message: "There is no route for '\(path)'.")
            case 405:
                return GatewayError(status: 405, kind: .invalidRequest, code: .methodNotAllowed, message: "This method is not allowed on '\(path)'.")
            case 413:
                return GatewayError(status: 413, kind: .requestTooLarge, code: .requestTooLarge, message: "The request body is too large.")
            case 400..<500:
                return GatewayError(status: Int(httpError.status.code), kind: .invalidRequest, code: .badRequest,
                                    message: httpError.body ?? "The request is invalid.")
            default:
                return .internalFailure
            }
        }
        return .internalFailure
    }

}

/// Where a request presents its credential: `Authorization: Bearer`, `x-api-key` or `api-key`.
enum PresentedCredential {
    static func from(_ headers: HTTPFields) -> String? {
        if let authorization = headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                var token = parts[1]
                while let first = token.first, first == " " || first == "\t" { token = token.dropFirst() }
                while let last = token.last, last == " " || last == "\t" { token = token.dropLast() }
                return String(token)
            }
        }
        return headers[HTTPField.Name("x-api-key")!] ?? headers[HTTPField.Name("api-key")!]
    }

    /// The public id in an API key's text (`pck_<id>_<secret>`), for the record of a refused one.
    static func keyID(of presented: String?) -> String? {
        guard let presented, presented.hasPrefix(APIKeyStore.prefix) else { return nil }
        let parts = presented.dropFirst(APIKeyStore.prefix.count).split(separator: "_", maxSplits: 1)
        guard parts.count == 2, (1...64).contains(parts[0].count), parts[0].allSatisfy({ $0.isLetter || $0.isNumber }) else { return nil }
        return String(parts[0])
    }

    /// What kind of credential `presented` looks like, for the record of a refused one.
    static func method(of presented: String?) -> String {
        guard let presented, !presented.isEmpty else { return "none" }
        if presented.hasPrefix(APIKeyStore.prefix) { return "api_key" }
        return TokenVerifier.looksLikeToken(presented) ? "oidc" : "unrecognised"
    }
}

/// Stage 14 around every API and admin request: opens the request's audit record, returns
/// its id in `x-portcullis-audit-id`, and writes its outcome once the response is complete (a
/// stream's when it ends). Probe routes (`/health/*`, `/metrics`) are not recorded.
public struct AuditMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let audit: AuditLogs

    public init(audit: AuditLogs) {
        self.audit = audit
    }

    static let auditIDField = HTTPField.Name("x-portcullis-audit-id")!

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard audit.recordsRequests, !path.hasPrefix("/health/"), path != "/metrics" else { return try await next(request, context) }
        var context = context
        let trail = RequestAudit(requestID: context.requestID, traceID: context.trace?.traceID, method: request.method.rawValue, path: path,
                                 sourceAddress: context.peerAddress?.ipAddress)
        context.audit = trail
        var response = try await next(request, context)
        response.headers[Self.auditIDField] = trail.auditID
        let status = Int(response.status.code), audit = self.audit
        if response.body.contentLength == nil {
            // A stream: its outcome (tokens, cost, findings of the output guards) once the last byte is out.
            let body = response.body
            response.body = ResponseBody { writer in
                do {
                    try await body.write(writer)
                } catch {
                    await audit.recordOutcome(trail, status: status)
                    throw error
                }
                await audit.recordOutcome(trail, status: status)
            }
        } else {
            await audit.recordOutcome(trail, status: status)
        }
        return response
    }
}

/// One log line per request once its response is complete (a stream's when it ends): method,
/// path, status and duration; with the request's measures (inside `RequestMetricsMiddleware`)
/// also its model group, deployment, stable code, tokens, cost and a stream's time to first
/// token. Never prompt or answer text.
public struct AccessLogMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext

    public init() {}

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        var response = try await next(request, context)
        let method = request.method.rawValue, path = request.uri.path, status = Int(response.status.code)
        let logger = context.logger, measures = context.measures
        guard response.body.contentLength == nil else {
            Self.log(logger, method: method, path: path, status: status, start: start, firstByte: nil, measures: measures)
            return response
        }
        let head = ContinuousClock.now, body = response.body
        response.body = ResponseBody { writer in
            defer { Self.log(logger, method: method, path: path, status: status, start: start, firstByte: head, measures: measures) }
            try await body.write(writer)
        }
        return response
    }

    static func log(_ logger: Logger, method: String, path: String, status: Int, start: ContinuousClock.Instant,
                    firstByte: ContinuousClock.Instant?, measures: RequestMeasures?) {
        guard logger.logLevel <= .info else { return }
        var metadata: Logger.Metadata = [
            "method": .string(method), "path": .string(path), "status": .stringConvertible(status),
            "duration_ms": .string(DecimalText.format(milliseconds(ContinuousClock.now - start), places: 2)),
        ]
        if let firstByte { metadata["ttft_ms"] = .string(DecimalText.format(milliseconds(firstByte - start), places: 2)) }
        if let facts = measures?.snapshot {
            if let model = facts.model { metadata["model"] = .string(model) }
            if let deployment = facts.deployment { metadata["deployment"] = .string(deployment) }
            if let code = facts.code { metadata["code"] = .string(code) }
            if facts.inputTokens > 0 || facts.outputTokens > 0 {
                metadata["prompt_tokens"] = .stringConvertible(facts.inputTokens)
                metadata["completion_tokens"] = .stringConvertible(facts.outputTokens)
            }
            if facts.costMicros > 0 { metadata["cost_usd"] = .string(DecimalText.format(Double(facts.costMicros) / 1_000_000, places: 6)) }
        }
        logger.info("request", metadata: metadata)
    }

    static func milliseconds(_ duration: Duration) -> Double {
        duration.inSeconds * 1000
    }
}

/// Stage 2, identity: turns the presented credential into the context's principal, or refuses.
public struct AuthenticationMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let authenticator: Authenticator

    public init(authenticator: Authenticator) {
        self.authenticator = authenticator
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let presented = PresentedCredential.from(request.headers)
        // A mapped client certificate stands in for a credential only when none is presented.
        let subject = (presented ?? "").isEmpty && authenticator.acceptsCertificates ? await Certificates.peerSubject(of: context.channel) : nil
        do {
            context.principal = try await authenticator.authenticate(presented, certificateSubject: subject)
        } catch let error as GatewayError {
            context.audit?.authenticationFailed(method: PresentedCredential.method(of: presented), reason: error.message,
                                                keyID: PresentedCredential.keyID(of: presented))
            context.measures?.metrics.recordAuthentication(method: PresentedCredential.method(of: presented), outcome: error.code.rawValue)
            throw error
        }
        let actor = context.principal.auditActor
        context.audit?.authenticated(actor)
        if let measures = context.measures {
            measures.role(actor.role)
            measures.metrics.recordAuthentication(method: actor.method, outcome: "success")
        }
        context.logger[metadataKey: "principal"] = .string(context.principal.actor)
        return try await next(request, context)
    }
}

/// Stage 1b: refuses client addresses the IP policy does not allow (admin routes may be narrower).
public struct IPPolicyMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let policy: IPPolicyEngine
    let adminRoutes: Bool

    public init(policy: IPPolicyEngine, adminRoutes: Bool) {
        self.policy = policy
        self.adminRoutes = adminRoutes
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let peer = context.peerAddress?.ipAddress.flatMap { IPAddress($0) }
        let client = policy.clientAddress(peer: peer, forwardedFor: request.headers[HTTPField.Name("x-forwarded-for")!])
        if let client { context.audit?.client(address: client.description) }
        if let refusal = policy.check(client, admin: adminRoutes) { throw refusal }
        return try await next(request, context)
    }
}

/// Stage 3, authorisation: the route's permission must be granted to the caller's role.
public struct PermissionMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let permission: Permission

    public init(_ permission: Permission) {
        self.permission = permission
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        try context.principal.require(permission)
        return try await next(request, context)
    }
}

/// A gateway error renders itself: the status, its headers and the envelope of the client's
/// dialect (read from the context when it is the gateway's, else from the path).
extension GatewayError: HTTPResponseError {
    public var status: HTTPResponse.Status { .init(code: statusCode) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        if let context = context as? GatewayRequestContext { return response(dialect: context.dialect, requestID: context.requestID) }
        return response(dialect: .of(path: request.uri.path), requestID: request.headers[HTTPField.Name("x-request-id")!])
    }

    /// The response for this error in `dialect`.
    public func response(dialect: WireDialect, requestID: String?) -> Response {
        var fields = HTTPFields()
        fields[.contentType] = "application/json"
        for (name, value) in headers {
            if let fieldName = HTTPField.Name(name) { fields[fieldName] = value }
        }
        let body = JSONWriter.buffer(envelope(for: dialect, requestID: requestID))
        return Response(status: status, headers: fields, body: .init(byteBuffer: body))
    }
}
