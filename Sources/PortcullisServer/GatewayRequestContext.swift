import Foundation
import Hummingbird
import Logging
import NIOCore
import PortcullisAccess
import PortcullisAudit
import PortcullisCore
import PortcullisGuardrails

/// W3C trace context of one request: the incoming trace (or a new one) and our own span.
public struct TraceContext: Sendable, Equatable {
    /// 32 lowercase hex digits.
    public var traceID: String
    /// The caller's span (16 hex digits), if the caller sent a `traceparent`.
    public var parentSpanID: String?
    /// The span the gateway opens for this request; upstream calls are its children.
    public var spanID: String
    /// Trace flags (2 hex digits).
    public var flags: String

    /// The `traceparent` header to send upstream.
    public var traceparent: String { "00-\(traceID)-\(spanID)-\(flags)" }

    /// Parses an incoming `traceparent`, or starts a new trace when it is absent or invalid.
    public static func continuing(_ header: String?) -> TraceContext {
        if let header {
            let fields = header.trimmingCharacters(in: .whitespaces).lowercased().split(separator: "-", omittingEmptySubsequences: false)
            if fields.count >= 4, fields[0].count == 2, fields[0] != "ff", fields[1].count == 32, fields[2].count == 16, fields[3].count == 2,
               fields.allSatisfy({ $0.allSatisfy(\.isHexDigit) }),
               fields[1] != String(repeating: "0", count: 32), fields[2] != String(repeating: "0", count: 16) {
                return TraceContext(traceID: String(fields[1]), parentSpanID: String(fields[2]), spanID: FastRandom.hex(bytes: 8), flags: String(fields[3]))
            }
        }
        return TraceContext(traceID: FastRandom.hex(bytes: 16), parentSpanID: nil, spanID: FastRandom.hex(bytes: 8), flags: "01")
    }
}

/// Which client API a route speaks; decides error envelopes and stream framing.
extension WireDialect {
    /// The dialect of a request path: Anthropic for `/v1/messages`, OpenAI otherwise.
    public static func of(path: String) -> WireDialect {
        path.hasPrefix("/v1/messages") || path.hasPrefix("/messages") ? .anthropic : .openAI
    }
}

/// The typed per-request context: identity, trace and dialect live in fields, never in string-keyed bags.
public struct GatewayRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The request id: the client's `x-request-id` when acceptable, otherwise generated.
    public var requestID: String = ""
    /// The W3C trace of this request.
    public var trace: TraceContext?
    /// The client API this request speaks.
    public var dialect: WireDialect = .openAI
    /// Who is calling: set by the authentication middleware before any handler runs.
    public var principal: Principal = .anonymous
    /// The TCP peer (the client, or the proxy in front of it).
    public let peerAddress: SocketAddress?
    /// The connection (an HTTP/2 stream's channel, whose parent is the connection): where a client certificate is read.
    public let channel: any Channel
    /// What the audit log will record of this request (nil on probe routes, or with request auditing off).
    public var audit: RequestAudit?
    /// What this request's metrics will record (nil on probe routes).
    public var measures: RequestMeasures?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.peerAddress = source.channel.remoteAddress
        self.channel = source.channel
    }

    /// The gateway reads bodies itself with its own limit.
    public var maxUploadSize: Int { Int.max }
}

extension Principal {
    /// The caller as guard policies select by it and guard events record it; `requestLog`
    /// (the request's audit record) is told of the decisions too.
    func guardCaller(reportingTo requestLog: RequestAudit? = nil) -> GuardCaller {
        GuardCaller(keyID: keyID, userID: userID, teamID: teamID, role: role.rawValue, requestLog: requestLog)
    }

    /// The caller as the audit record names it.
    var auditActor: RequestAudit.Actor {
        let method = switch credential {
        case .anonymous: "none"
        case .masterKey: "master_key"
        case .apiKey: "api_key"
        case .token: "oidc"
        case .certificate: "client_certificate"
        }
        return RequestAudit.Actor(keyID: keyID, userID: userID, teamID: teamID, role: role.rawValue, method: method, multiFactor: multiFactor)
    }
}
