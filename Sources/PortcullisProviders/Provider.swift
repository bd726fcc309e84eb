import Logging
import PortcullisCore
import PortcullisTLS

/// Per-phase time limits for one upstream call, in seconds.
public struct UpstreamTimeouts: Sendable, Equatable, Hashable {
    /// Establishing the connection (TCP and TLS).
    public var connect: Double
    /// Streams only: until the first event arrives (a non-streamed answer's first byte is the whole answer, so it is bound by `total`).
    public var firstByte: Double
    /// The whole call, streams included.
    public var total: Double
    /// Longest silence allowed between two reads of a response body.
    public var streamIdle: Double

    public init(connect: Double = 5, firstByte: Double = 60, total: Double = 600, streamIdle: Double = 60) {
        self.connect = connect
        self.firstByte = firstByte
        self.total = total
        self.streamIdle = streamIdle
    }
}

/// Everything an adapter needs to call one deployment.
public struct DeploymentTarget: Sendable {
    /// A stable, secret-free name for logs and errors, e.g. `gpt-4o/openai[0]`.
    public var name: String
    public var provider: ProviderKind
    /// The model name the upstream expects (for Azure: the deployment name).
    public var upstreamModel: String
    /// Base URL without trailing slash.
    public var apiBase: String
    public var apiKey: String?
    /// Azure's `api-version`.
    public var apiVersion: String?
    /// Extra headers sent on every call.
    public var headers: [String: String]
    public var timeouts: UpstreamTimeouts
    /// Anthropic needs `max_tokens`; used when the client gives none.
    public var defaultMaxTokens: Int
    /// How an https `apiBase` is reached: TLS 1.3 unless allowed 1.2, the CAs trusted, an mTLS client certificate.
    public var tls: ClientTLSSettings

    public init(name: String, provider: ProviderKind, upstreamModel: String, apiBase: String, apiKey: String? = nil,
                apiVersion: String? = nil, headers: [String: String] = [:], timeouts: UpstreamTimeouts = UpstreamTimeouts(),
                defaultMaxTokens: Int = 4096, tls: ClientTLSSettings = ClientTLSSettings()) {
        self.name = name
        self.provider = provider
        self.upstreamModel = upstreamModel
        self.apiBase = apiBase
        self.apiKey = apiKey
        self.apiVersion = apiVersion
        self.headers = headers
        self.timeouts = timeouts
        self.defaultMaxTokens = defaultMaxTokens
        self.tls = tls
    }
}

/// The `traceparent` of the upstream attempt under way, set while tracing records each attempt
/// as a span of its own; it takes the place of `UpstreamContext.traceparent` for that attempt.
public enum UpstreamTrace {
    @TaskLocal public static var traceparent: String?
}

/// Request-scoped facts sent upstream: identity for correlation, trace context, the logger.
public struct UpstreamContext: Sendable {
    public var requestID: String
    /// W3C `traceparent` to send upstream (already a child of the incoming one).
    public var traceparent: String?
    public var logger: Logger

    public init(requestID: String, traceparent: String? = nil, logger: Logger) {
        self.requestID = requestID
        self.traceparent = traceparent
        self.logger = logger
    }
}

/// Why an upstream call failed, classified for retry decisions.
public struct UpstreamFailure: Error, Sendable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// The upstream answered with a non-success status.
        case status(Int)
        /// A time limit passed; names the phase.
        case timeout(String)
        /// Connecting failed or the connection broke.
        case connection
        /// The upstream answered with something that does not follow its API.
        case malformed
    }

    public var reason: Reason
    /// Secret-free explanation (the upstream's own error message where it gave one).
    public var message: String
    /// Seconds the upstream asked us to wait (`Retry-After`).
    public var retryAfter: Double?
    /// The deployment that failed.
    public var deployment: String

    public init(reason: Reason, message: String, retryAfter: Double? = nil, deployment: String) {
        self.reason = reason
        self.message = message
        self.retryAfter = retryAfter
        self.deployment = deployment
    }

    /// Whether another attempt (here or elsewhere) may succeed: 408, 409, 429, 5xx, timeouts and broken connections.
    public var isRetryable: Bool {
        switch reason {
        case .status(let code): return code == 408 || code == 409 || code == 429 || code >= 500
        case .timeout, .connection, .malformed: return true
        }
    }

    /// Whether the failure says something about the deployment's health (counts toward its circuit breaker).
    public var countsAgainstDeployment: Bool {
        switch reason {
        case .status(let code): return code == 429 || code >= 500
        case .timeout, .connection, .malformed: return true
        }
    }

    public var description: String { "\(deployment): \(reason) \(message)" }
}

/// Translates canonical requests to one provider's wire format and back, streams included.
public protocol ProviderAdapter: Sendable {
    /// A non-streamed chat completion.
    func chat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> ChatCompletion
    /// A streamed chat completion, as canonical chunks.
    func streamChat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<ChatChunk>
    /// A legacy text completion, as an OpenAI `text_completion` object.
    func completion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue
    /// A streamed legacy completion, as OpenAI `text_completion` chunk objects.
    func streamCompletion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<JSONValue>
    /// Embeddings, as an OpenAI `list` object.
    func embeddings(_ request: EmbeddingRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue
    /// A cheap probe that the deployment answers; throws if not.
    func checkHealth(target: DeploymentTarget, context: UpstreamContext) async throws
}
