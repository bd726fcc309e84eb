import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import PortcullisConfig
import PortcullisCore
import PortcullisProviders
import PortcullisRouting
import ServiceLifecycle

/// Builds the gateway application from a validated configuration. `main` and the tests both use it.
///
/// - Parameters:
///   - configuration: the validated configuration.
///   - logger: the application logger (bootstrapped by the executable).
///   - onServerRunning: called with the bound channel once the server listens (tests read the port).
public func buildApplication(
    configuration: GatewayConfiguration,
    logger: Logger,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    let gateway = try Gateway(configuration: configuration, logger: logger)
    return try gateway.makeApplication(logger: logger, onServerRunning: onServerRunning)
}

/// The assembled gateway: routing table, upstream client and request pipeline.
public struct Gateway: Sendable {
    public let configuration: GatewayConfiguration
    public let modelRouter: ModelRouter
    public let upstreamClient: UpstreamHTTPClient
    public let pipeline: RequestPipeline
    public let healthChecker: HealthChecker

    public init(configuration: GatewayConfiguration, logger: Logger) throws {
        self.configuration = configuration
        let client = UpstreamHTTPClient()
        self.upstreamClient = client
        let routing = configuration.routing
        let breaker = CircuitBreaker.Configuration(failureThreshold: routing.circuitFailureThreshold,
                                                   window: routing.circuitWindowSeconds, cooldown: routing.circuitCooldownSeconds)
        let created = Int64(Date().timeIntervalSince1970)
        let openAI = OpenAIAdapter(http: client)
        let anthropic = AnthropicAdapter(http: client)
        var groups: [ModelGroup] = []
        for model in configuration.models {
            var deployments: [Deployment] = []
            for (index, settings) in model.deployments.enumerated() {
                guard let kind = ProviderKind(rawValue: settings.provider) else {
                    throw ConfigurationError(source: "configuration", issues: [.init(path: "models.\(model.name).deployments[\(index)].provider",
                                                                                     message: "unknown provider '\(settings.provider)'")])
                }
                let adapter: any ProviderAdapter
                switch kind {
                case .anthropic: adapter = anthropic
                case .demo: adapter = DemoProvider(tokensPerSecond: settings.tokensPerSecond)
                case .openai, .openaiCompatible, .vllm, .ollama, .azure: adapter = openAI
                }
                let timeouts = UpstreamTimeouts(connect: settings.timeouts.connect, firstByte: settings.timeouts.firstByte,
                                                total: settings.timeouts.total, streamIdle: settings.timeouts.streamIdle)
                let target = DeploymentTarget(
                    name: "\(model.name)/\(kind.rawValue)[\(index)]", provider: kind, upstreamModel: settings.model,
                    apiBase: settings.apiBase ?? kind.defaultAPIBase ?? "", apiKey: settings.apiKey, apiVersion: settings.apiVersion,
                    headers: settings.headers, timeouts: timeouts, defaultMaxTokens: settings.defaultMaxTokens,
                    trustedCAFile: settings.caFile)
                deployments.append(Deployment(target: target, adapter: adapter, weight: settings.weight,
                                              price: TokenPrice(inputPerMillion: settings.inputPricePerMillion,
                                                                outputPerMillion: settings.outputPricePerMillion),
                                              breaker: breaker))
            }
            let owner = model.deployments.first.map { $0.provider == "demo" ? "portcullis" : $0.provider } ?? "portcullis"
            groups.append(ModelGroup(name: model.name, deployments: deployments, fallbacks: model.fallbacks, created: created, ownedBy: owner))
        }
        let policy = RetryPolicy(retries: routing.retries, initialBackoff: routing.initialBackoffMilliseconds / 1000,
                                 maximumBackoff: routing.maximumBackoffMilliseconds / 1000, maximumRetryAfter: routing.maximumRetryAfterSeconds)
        self.modelRouter = ModelRouter(groups: groups, retryPolicy: policy)
        self.pipeline = RequestPipeline(router: modelRouter, maximumBodyBytes: configuration.server.maxBodyBytes)
        self.healthChecker = HealthChecker(deployments: modelRouter.allDeployments, interval: routing.healthCheckIntervalSeconds,
                                           probeTimeout: routing.healthCheckTimeoutSeconds, logger: logger)
    }

    /// The HTTP routes with their middleware, outermost first.
    public func makeRouter() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        router.addMiddleware {
            RequestIdentityMiddleware()      // 1. edge: request id, trace context
            AccessLogMiddleware()
            ErrorEnvelopeMiddleware()        //    every refusal in the client's envelope
        }
        let pipeline = self.pipeline
        router.get("/health/live") { _, _ in RequestPipeline.json(["status": "ok"]) }
        router.get("/health/ready") { _, _ in pipeline.readiness() }

        let api = router.group()
        if let masterKey = configuration.auth.masterKey {
            api.addMiddleware { MasterKeyMiddleware(masterKey: masterKey) }   // 2. identity
        }
        for prefix in ["/v1", ""] {
            api.post("\(prefix)/chat/completions") { request, context in try await pipeline.chatCompletions(request, context: context) }
            api.post("\(prefix)/completions") { request, context in try await pipeline.completions(request, context: context) }
            api.post("\(prefix)/embeddings") { request, context in try await pipeline.embeddings(request, context: context) }
            api.post("\(prefix)/messages") { request, context in try await pipeline.messages(request, context: context) }
            api.get("\(prefix)/models") { _, _ in pipeline.listModels() }
            api.get("\(prefix)/models/{id}") { _, context in try pipeline.model(context.parameters.require("id")) }
        }
        return router
    }

    /// The server channel: plain HTTP/1.1, or TLS 1.3 with HTTP/2 offered by ALPN.
    public func makeServerBuilder() throws -> HTTPServerBuilder {
        guard let tls = configuration.server.tls else { return .http1() }
        let certificates = try NIOSSLCertificate.fromPEMFile(tls.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: tls.privateKeyPath, format: .pem)
        var tlsConfiguration = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(key))
        tlsConfiguration.minimumTLSVersion = .tlsv13
        if configuration.server.http2 {
            return try .http2Upgrade(tlsConfiguration: tlsConfiguration)
        }
        return try .tls(.http1(), tlsConfiguration: tlsConfiguration)
    }

    /// The application with its services (health checks, upstream pool), ready to run.
    public func makeApplication(logger: Logger, onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        Application(
            router: makeRouter(),
            server: try makeServerBuilder(),
            configuration: .init(address: .hostname(configuration.server.host, port: configuration.server.port), serverName: "Portcullis"),
            services: [UpstreamClientService(client: upstreamClient), healthChecker],
            onServerRunning: onServerRunning,
            logger: logger
        )
    }
}

/// Closes the upstream connection pools after the server stopped taking requests.
///
/// Listed before the server among the application's services, so the service group,
/// which stops services in reverse order, stops it only after in-flight requests finished.
struct UpstreamClientService: Service {
    let client: UpstreamHTTPClient

    func run() async throws {
        try? await gracefulShutdown()
        await client.shutdown()
    }
}
