import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisCore
import PortcullisGuardrails
import PortcullisRouting
import PortcullisStorage
import PortcullisTLS

/// The whole gateway configuration, decoded and validated once at start-up.
///
/// Every field has a documented default, so an empty file (or none) is a working gateway.
public struct GatewayConfiguration: Sendable, Equatable {
    /// Where and how the gateway listens.
    public struct Server: Sendable, Equatable {
        /// Interface to bind. Default `127.0.0.1`.
        public var host: String = "127.0.0.1"
        /// Port to bind; 0 picks a free one. Default 4000.
        public var port: Int = 4000
        /// Largest request body accepted, bytes. Default 10 MiB.
        public var maxBodyBytes: Int = 10 * 1024 * 1024
        /// TLS (1.3 only); plain HTTP when absent.
        public var tls: TLS?
        /// Offer HTTP/2 (negotiated by ALPN, so it needs TLS). Default true.
        public var http2: Bool = true
        /// Seconds to let in-flight requests finish on shutdown. Default 30.
        public var shutdownGraceSeconds: Double = 30
        /// Seconds from a connection's first byte to a complete request head. Default 10.
        public var headerTimeoutSeconds: Double = 10
        /// Seconds a request body may go without a byte. Default 30.
        public var bodyIdleTimeoutSeconds: Double = 30
        /// Seconds a kept-alive connection may wait for its next request. Default 75.
        public var keepAliveIdleTimeoutSeconds: Double = 75
        /// Client connections open at once; past it the oldest idle one is closed, else the new one refused. Default 10000.
        public var maximumConnections: Int = 10_000

        public init() {}
    }

    /// The listener's certificate and key files in PEM, client certificates and HSTS.
    public typealias TLS = ServerTLSSettings

    // Each library owns the configuration of its part; this is the whole file's shape.
    public typealias Auth = AuthConfiguration
    public typealias OIDCIssuer = OIDCIssuerConfiguration
    public typealias Storage = StorageConfiguration
    public typealias Limits = LimitsConfiguration
    public typealias IPPolicy = IPPolicyConfiguration
    public typealias Timeouts = UpstreamTimeoutsConfiguration
    public typealias Routing = RoutingConfiguration
    public typealias Deployment = DeploymentConfiguration
    public typealias Model = ModelConfiguration
    public typealias Guardrails = GuardrailsConfiguration
    public typealias Audit = AuditConfiguration
    public typealias Cache = CacheConfiguration

    /// OpenTelemetry traces, exported over OTLP/HTTP (protobuf). Off unless `endpoint` is set.
    /// The standard `OTEL_*` environment variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SERVICE_NAME`, …) override these once tracing is on.
    public struct Tracing: Sendable, Equatable {
        /// The collector's OTLP/HTTP address (`http://otel-collector:4318`); spans go to its
        /// `/v1/traces` unless the URL already names that path. Default none: tracing off.
        public var endpoint: String?
        /// Fraction of new traces recorded, 0–1; a caller's `traceparent` decision is followed. Default 1.
        public var sampleRatio: Double = 1
        /// `service.name` of every span. Default `portcullis`.
        public var serviceName: String = "portcullis"
        /// Headers sent with each export (a collector's token, say).
        public var headers: [String: String] = [:]
        /// Seconds an export may take before it is abandoned. Default 10.
        public var exportTimeoutSeconds: Double = 10

        public init() {}

        /// Whether spans are recorded and exported.
        public var isEnabled: Bool { endpoint != nil }

        /// The URL spans are posted to.
        public var tracesURL: String? {
            guard let endpoint else { return nil }
            if endpoint.hasSuffix("/v1/traces") { return endpoint }
            return endpoint.hasSuffix("/") ? endpoint + "v1/traces" : endpoint + "/v1/traces"
        }
    }

    public var server = Server()
    public var auth = Auth()
    public var guardrails = Guardrails()
    public var storage = Storage()
    public var limits = Limits()
    public var ipPolicy = IPPolicy()
    public var routing = Routing()
    public var models: [Model] = []
    /// Where each caller's traffic may be served (`residency`): regions and BAA by team, key or user.
    public var residency: [ResidencyRule] = []
    public var audit = Audit()
    public var tracing = Tracing()
    /// Exact caching of answers (off by default).
    public var cache = Cache()
    /// Log level: trace, debug, info, notice, warning, error, critical. Default info.
    public var logLevel: String = "info"
    /// `text` (the default: one readable line per event) or `json` (one Elastic Common Schema
    /// object per line, for log forwarders).
    public var logFormat: LogFormat = .text

    public init() {}
}

/// How the executable writes its log.
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}
