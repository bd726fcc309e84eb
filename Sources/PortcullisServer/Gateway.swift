import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdHTTP2
import HummingbirdTLS
import Instrumentation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisConfig
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import PortcullisStorage
import PortcullisTLS
import Prometheus
import ServiceLifecycle
import Tracing

/// Builds the gateway application from a validated configuration. `main` and the tests both use it.
///
/// - Parameters:
///   - configuration: the validated configuration.
///   - logger: the application logger (bootstrapped by the executable).
///   - governed: false serves without limits, budgets or usage accounting (the benchmark's reference).
///   - metricsRegistry: where the gateway's metrics live and `/metrics` reads from; the executable
///     bootstraps swift-metrics over the same registry, so libraries' metrics are served too.
///   - onServerRunning: called with the bound channel once the server listens (tests read the port).
public func buildApplication(
    configuration: GatewayConfiguration,
    logger: Logger,
    governed: Bool = true,
    metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> some ApplicationProtocol {
    let gateway = try await Gateway(configuration: configuration, logger: logger, governed: governed, metricsRegistry: metricsRegistry)
    return try gateway.makeApplication(logger: logger, onServerRunning: onServerRunning)
}

/// The assembled gateway: routing table, upstream client and request pipeline.
public struct Gateway: Sendable {
    /// The configuration it started with (a reload's models, routing and guardrails are in `live`).
    public let configuration: GatewayConfiguration
    /// The models, routing and guard policies in force, which a reload replaces.
    public let live: LiveRouting
    public let upstreamClient: UpstreamHTTPClient
    public let healthChecker: HealthChecker
    public let access: AccessSystem
    /// Guard decisions and admin actions.
    public let audit: AuditLogs
    /// Client connections: how many are open, what the timeouts closed.
    public let connections: ConnectionGovernor
    /// The listener's TLS handshakes, full and resumed.
    public let handshakes = TLSHandshakeCounts()
    /// Every certificate the gateway serves, trusts or presents, with its expiry (as read at start).
    public let certificates: [CertificateLifetime]
    /// The listener's certificate and key, read again when their files change (nil without TLS).
    public let servingCertificate: ServingCertificate?
    /// Requests, upstream attempts, tokens and security decisions, in the registry `/metrics` serves.
    public let requestMetrics: RequestMetrics
    /// Limits, budgets and usage accounting (nil for the benchmark's reference), kept across reloads.
    let governance: Governance?
    /// The exact cache's entries (in process, and in Redis when configured) and the calls in flight, kept across reloads.
    let cache: CacheWiring
    /// The anomaly detector's baselines and restraints, which outlive a reload (its thresholds are read at start-up).
    let anomalies: AnomalyWiring
    /// Builds the reloadable part.
    let factory: PipelineFactory

    /// The routing table in force.
    public var modelRouter: ModelRouter { live.current.router }
    /// The request pipeline in force.
    public var pipeline: RequestPipeline { live.current.pipeline }

    /// - Parameters:
    ///   - governed: false serves without limits, budgets or usage accounting (the benchmark's reference).
    ///   - metricsRegistry: where the metrics live (`/metrics` emits it).
    public init(configuration: GatewayConfiguration, logger: Logger, governed: Bool = true,
                metricsRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) async throws {
        self.configuration = configuration
        self.requestMetrics = RequestMetrics(registry: metricsRegistry, models: configuration.models.map(\.name))
        let client = UpstreamHTTPClient()
        self.upstreamClient = client
        let factory = PipelineFactory(client: client, logger: logger)
        self.factory = factory
        // Everything that can refuse the configuration comes before the access system, which must be shut down once started.
        let prepared = try factory.prepare(configuration)
        let signing = try Self.checkpointSigning(configuration, http: client, logger: logger)
        let keyService = try Self.keyEncryptionService(configuration, http: client, logger: logger)
        let semanticMetrics = requestMetrics
        let semantic = try configuration.cache.semantic.map { settings in
            try Self.semanticCache(settings, observe: { semanticMetrics.recordCacheError(reason: "semantic_" + $0.rawValue) })
        }
        let access = try await AccessSystem.make(auth: configuration.auth, storage: configuration.storage, limits: configuration.limits,
                                                 ipPolicy: configuration.ipPolicy, migrations: AuditLogs.migrations + SavingsLedger.migrations,
                                                 fetcher: { caFile in Self.fetcher(http: client, caFile: caFile, logger: logger) }, logger: logger)
        self.access = access
        let audit = AuditLogs(store: access.store, flushInterval: configuration.storage.flushIntervalSeconds,
                              configuration: governed ? configuration.audit : Self.unaudited(configuration.audit),
                              signing: signing, sinkTransport: UpstreamSinkTransport(http: client, logger: logger),
                              syslogTransport: SyslogSenders(), subjectKeys: keyService.map { SubjectKeys(store: access.store, service: $0) },
                              logger: logger)
        if let keys = audit.payloads?.keys { access.erasures.add { ref in keys.forget(ref: ref) } }
        audit.recordLifecycle(configuration: Self.lifecycleDetails(configuration, governed: governed))
        self.audit = audit
        let governance = governed ? Governance(admission: access.admission, recorder: access.recorder,
                                               reserveOutputTokens: configuration.limits.reserveOutputTokens) : nil
        self.governance = governance
        let metrics = requestMetrics
        let exact = configuration.cache.mayCache
            ? ExactCache(configuration.cache, shared: access.redis.map(RedisCacheStore.init), observe: { metrics.recordCacheError(reason: $0.rawValue) })
            : nil
        let savings = SavingsLedger(store: access.store, interval: configuration.storage.flushIntervalSeconds, logger: logger)
        let sharing = semantic.flatMap { semantic in access.redis.map { SemanticSharing(client: $0, cache: semantic, logger: logger) } }
        let cache = CacheWiring(exact: exact, semantic: semantic, sharing: sharing, settings: configuration.cache, savings: savings)
        self.cache = cache
        access.erasures.addCache { tag in cache.eraseLocally(tag: tag) }
        let anomalies = AnomalyWiring(settings: configuration.guardrails.anomaly)
        self.anomalies = anomalies
        let live = LiveRouting(factory.assemble(prepared, configuration: configuration, governance: governance, audit: audit, cache: cache,
                                                anomalies: anomalies,
                                                dependencies: { [access] in access.dependencyState }))
        self.live = live
        let server = configuration.server
        self.connections = ConnectionGovernor(limits: ConnectionLimits(
            headerTimeout: server.headerTimeoutSeconds, bodyIdleTimeout: server.bodyIdleTimeoutSeconds,
            keepAliveIdleTimeout: server.keepAliveIdleTimeoutSeconds, maximumConnections: server.maximumConnections))
        self.healthChecker = HealthChecker(deployments: { live.current.router.allDeployments }, interval: configuration.routing.healthCheckIntervalSeconds,
                                           probeTimeout: configuration.routing.healthCheckTimeoutSeconds, logger: logger)
        self.certificates = Certificates.lifetimes(of: Self.certificateFiles(configuration))
        self.servingCertificate = try configuration.server.tls.map { try ServingCertificate(certificatePath: $0.certificatePath, privateKeyPath: $0.privateKeyPath) }
        Self.warnAboutWeakTLS(configuration, logger: logger)
    }

    /// The semantic cache of `settings`: with the built-in embedder loaded from its model
    /// directory, or embedding through a configured model group.
    static func semanticCache(_ settings: CacheConfiguration.Semantic, observe: @escaping @Sendable (SemanticCache.Failure) -> Void) throws -> SemanticCache {
        var embedder: (any QuestionEmbedder)?
        if settings.embeddingModel == CacheConfiguration.Semantic.builtin {
            do {
                embedder = try BuiltinEmbedder(directory: URL(fileURLWithPath: settings.modelDirectory))
            } catch {
                throw ConfigurationError(source: "cache.semantic", issues: [ConfigurationIssue(path: "cache.semantic.model_directory", message: "\(error)")])
            }
        }
        return SemanticCache(embedder: embedder, timeoutSeconds: settings.timeoutSeconds, maximumEntries: settings.maximumEntries, observe: observe)
    }

    /// The HTTP routes with their middleware, outermost first.
    public func makeRouter() -> Router<GatewayRequestContext> {
        let router = Router(context: GatewayRequestContext.self)
        // Outermost, and only on a TLS listener: plain HTTP has no layer for it.
        if let hsts = configuration.server.tls?.strictTransportSecurity { router.add(middleware: StrictTransportMiddleware(header: hsts.headerValue)) }
        // One typed chain either way: without tracing the request path has no tracing layer at all.
        if configuration.tracing.isEnabled {
            router.addMiddleware {
                RequestIdentityMiddleware()      // 1. edge: request id, trace context
                RequestMetricsMiddleware(metrics: requestMetrics)
                RequestTracingMiddleware(tracer: InstrumentationSystem.tracer)   //    a span per request (`tracing.endpoint`)
                AccessLogMiddleware()
                AuditMiddleware(audit: audit)    // 14. audit: the outcome of every API and admin request
                ErrorEnvelopeMiddleware()        //    every refusal in the client's envelope
            }
        } else {
            router.addMiddleware {
                RequestIdentityMiddleware()      // 1. edge: request id, trace context
                RequestMetricsMiddleware(metrics: requestMetrics)
                AccessLogMiddleware()
                AuditMiddleware(audit: audit)    // 14. audit: the outcome of every API and admin request
                ErrorEnvelopeMiddleware()        //    every refusal in the client's envelope
            }
        }
        // Each handler takes the pipeline in force when it starts (a reload swaps it; see `LiveRouting`).
        let live = self.live
        router.get("/health/live") { _, _ in RequestPipeline.json(["status": "ok"]) }
        let certificates = self.certificates
        router.get("/health/ready") { _, _ in live.current.pipeline.readiness(certificates: certificates) }

        let ipPolicy = access.ipPolicy
        let authenticator = access.authenticator
        var metrics = GatewayMetrics(access: access, audit: audit, live: live, registry: requestMetrics.registry, connections: connections,
                                     handshakes: configuration.server.tls == nil ? nil : handshakes, certificates: certificates)
        // Exemplars name traces: only with tracing on is there one to link to.
        if configuration.tracing.isEnabled { metrics.exemplars = requestMetrics.exemplars }
        // Operational data: from the addresses allowed on admin routes, without a credential (Prometheus scrapes).
        router.group().add(middleware: IPPolicyMiddleware(policy: ipPolicy, adminRoutes: true)).get("/metrics") { [metrics] request, _ in
            metrics.response(accept: request.headers[.accept])
        }
        let api = router.group()
        api.addMiddleware {
            IPPolicyMiddleware(policy: ipPolicy, adminRoutes: false)                // 1b. client address
            AuthenticationMiddleware(authenticator: authenticator)                   // 2. identity
        }
        for prefix in ["/v1", ""] {
            let models = api.group(RouterPath(prefix.isEmpty ? "" : prefix)).add(middleware: PermissionMiddleware(.callModels))   // 3. authorise
            models.post("chat/completions") { request, context in try await live.current.pipeline.chatCompletions(request, context: context) }
            models.post("completions") { request, context in try await live.current.pipeline.completions(request, context: context) }
            models.post("embeddings") { request, context in try await live.current.pipeline.embeddings(request, context: context) }
            models.post("messages") { request, context in try await live.current.pipeline.messages(request, context: context) }
            let listing = api.group(RouterPath(prefix.isEmpty ? "" : prefix)).add(middleware: PermissionMiddleware(.listModels))
            listing.get("models") { _, context in live.current.pipeline.listModels(for: context.principal) }
            listing.get("models/{id}") { _, context in try live.current.pipeline.model(context.parameters.require("id"), for: context.principal) }
        }
        let admin = router.group("admin")
        admin.addMiddleware {
            IPPolicyMiddleware(policy: ipPolicy, adminRoutes: true)
            AuthenticationMiddleware(authenticator: authenticator)
        }
        AdminAPI(access: access, audit: audit, savings: cache.savings).register(on: admin)
        // The data subject's own: export and erasure of what the gateway holds about the caller.
        let user = router.group("user")
        user.addMiddleware {
            IPPolicyMiddleware(policy: ipPolicy, adminRoutes: false)
            AuthenticationMiddleware(authenticator: authenticator)
        }
        DataSubjectAPI(access: access, audit: audit, cache: cache, signingKey: audit.signingKey, configuration: configuration)
            .register(user: user, admin: admin)
        return router
    }

    /// The server channel: plain HTTP/1.1, or TLS 1.3 with HTTP/2 offered by ALPN; either way
    /// bounded by `connections` (a connection cap and header, body and idle timeouts).
    public func makeServerBuilder() throws -> HTTPServerBuilder {
        let governor = connections
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [ConnectionTimeoutHandler(governor: governor)])
        guard let tls = configuration.server.tls else {
            return HTTPServerBuilder { responder in
                GovernedChildChannel(base: HTTP1Channel(responder: responder, configuration: http1), governor: governor, handshakes: nil)
            }
        }
        // Each handshake serves the pair the certificate watcher last read (renewals without a restart).
        let base = try tls.configuration()
        let tlsConfiguration = servingCertificate.map { $0.serving(base) } ?? base
        let handshakes = self.handshakes
        if configuration.server.http2 {
            // HTTP/2 closes a connection with no open stream after the keep-alive idle time; its
            // streams, like HTTP/1.1 requests, carry the header and body timeouts.
            let http2 = HTTP2ChannelConfiguration(idleTimeout: .nanoseconds(Int64(governor.limits.keepAliveIdleTimeout * 1_000_000_000)),
                                                  streamConfiguration: http1)
            return HTTPServerBuilder { responder in
                GovernedChildChannel(base: try HTTP2UpgradeChannel(tlsConfiguration: tlsConfiguration, configuration: http2, responder: responder),
                                     governor: governor, handshakes: handshakes)
            }
        }
        return HTTPServerBuilder { responder in
            GovernedChildChannel(base: try TLSChannel(HTTP1Channel(responder: responder, configuration: http1), tlsConfiguration: tlsConfiguration),
                                 governor: governor, handshakes: handshakes)
        }
    }

    /// The application with its services (health checks, upstream pool), ready to run.
    public func makeApplication(logger: Logger, onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        var services: [any Service] = [UpstreamClientService(client: upstreamClient)] + access.services + audit.services
        if let savings = cache.savings { services.append(savings) }   // stops before the store closes
        if let sharing = cache.sharing { services.append(sharing) }   // stops before Redis closes: its last questions are sent
        // After the access services, so it stops before them: what it drains still reaches Redis and the recorder.
        if let settlements = governance?.settlements { services.append(settlements) }
        services.append(healthChecker)
        if let servingCertificate { services.append(CertificateWatcher(certificate: servingCertificate, logger: logger)) }
        return Application(
            router: makeRouter(),
            server: try makeServerBuilder(),
            configuration: .init(address: .hostname(configuration.server.host, port: configuration.server.port), serverName: "Portcullis"),
            services: services,
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

extension Gateway {
    /// The certificate files of the listener, each deployment, Redis and PostgreSQL, by role.
    static func certificateFiles(_ configuration: GatewayConfiguration) -> [(role: String, path: String)] {
        var files = configuration.server.tls?.certificateFiles ?? []
        for model in configuration.models {
            for deployment in model.deployments {
                files += deployment.tls.certificateFiles.map { ("upstream_\($0.role)", $0.path) }
            }
        }
        if configuration.storage.redis?.hasPrefix("rediss") == true {
            files += configuration.storage.redisTLS.certificateFiles.map { ("redis_\($0.role)", $0.path) }
        }
        if case .postgres(let url) = StorageLocation(configuration.storage.database) {
            files += PostgresStore.certificateFiles(url: url).map { ("database_\($0.role)", $0.path) }
        }
        var seen = Set<String>()
        return files.filter { seen.insert("\($0.role) \($0.path)").inserted }
    }

    /// Says at start-up where a connection accepts less than TLS 1.3 or does not verify its peer.
    static func warnAboutWeakTLS(_ configuration: GatewayConfiguration, logger: Logger) {
        for model in configuration.models {
            for deployment in model.deployments where deployment.tls.minimumVersion == .tls12 && deployment.apiBase?.hasPrefix("https://") != false {
                logger.warning("a deployment accepts TLS 1.2", metadata: ["model": .string(model.name), "provider": .string(deployment.provider.rawValue),
                                                                         "api_base": .string(deployment.apiBase ?? deployment.provider.defaultAPIBase ?? "")])
            }
        }
        if configuration.storage.redis?.hasPrefix("rediss") == true, configuration.storage.redisTLS.minimumVersion == .tls12 {
            logger.warning("Redis accepts TLS 1.2 (storage.redis_tls.min_version)")
        }
        if case .postgres(let url) = StorageLocation(configuration.storage.database), let weakness = PostgresStore.tlsWeakness(url: url) {
            logger.warning("PostgreSQL: \(weakness)")
        }
    }

    /// The benchmark's reference core records no requests (admin actions still are).
    static func unaudited(_ configuration: AuditConfiguration) -> AuditConfiguration {
        var configuration = configuration
        configuration.enabled = false
        return configuration
    }

    /// Fetches JSON documents (OIDC discovery, JWKS) with the gateway's HTTP client.
    static func fetcher(http: UpstreamHTTPClient, caFile: String?, logger: Logger) -> JSONFetcher {
        { url in
            let target = DeploymentTarget(name: "oidc", provider: .openaiCompatible, upstreamModel: "", apiBase: url,
                                          timeouts: UpstreamTimeouts(connect: 5, firstByte: 10, total: 10, streamIdle: 10),
                                          tls: ClientTLSSettings(trustedCAFile: caFile))
            return try await http.sendJSON(method: .GET, url: url, headers: [("accept", "application/json")], body: nil, target: target,
                                           context: UpstreamContext(requestID: FastRandom.uuidString(), logger: logger))
        }
    }
}
