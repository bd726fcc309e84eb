import Foundation
import Logging
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisConfig
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import Synchronization

/// The part of the gateway a configuration reload replaces — model groups with their
/// deployments, routing, and guard policies — held as one value and swapped whole, so a request
/// sees either the old configuration or the new one, never half of each.
///
/// A request takes the snapshot once, when its handler starts, and keeps it to the end: a stream
/// begun before a reload finishes on the deployments and guards it began with.
public final class LiveRouting: Sendable {
    /// What is in force.
    public final class Snapshot: Sendable {
        /// The configuration in force: the start-up one with the reloadable sections of the last reload.
        public let configuration: GatewayConfiguration
        public let router: ModelRouter
        public let pipeline: RequestPipeline

        init(configuration: GatewayConfiguration, router: ModelRouter, pipeline: RequestPipeline) {
            self.configuration = configuration
            self.router = router
            self.pipeline = pipeline
        }
    }

    /// Reloads so far, for `/metrics`.
    public struct Counts: Sendable, Equatable {
        public var applied = 0
        public var failed = 0
        /// Whether the last attempt was applied (true before any).
        public var lastSucceeded = true
        /// When the configuration in force was loaded (start-up or the last applied reload), Unix seconds.
        public var lastSuccessTime: Double
    }

    private let state: Mutex<Snapshot>
    private let counters: Mutex<Counts>
    /// One reload at a time (a SIGHUP and the file watch may coincide); requests never wait on it.
    let reloading = Mutex(())

    init(_ snapshot: Snapshot) {
        state = Mutex(snapshot)
        counters = Mutex(Counts(lastSuccessTime: Date().timeIntervalSince1970))
    }

    /// The snapshot in force now.
    public var current: Snapshot { state.withLock { $0 } }

    public var counts: Counts { counters.withLock { $0 } }

    func replace(with snapshot: Snapshot) {
        state.withLock { $0 = snapshot }
        counters.withLock { counts in
            counts.applied += 1
            counts.lastSucceeded = true
            counts.lastSuccessTime = Date().timeIntervalSince1970
        }
    }

    func recordFailure() {
        counters.withLock { counts in
            counts.failed += 1
            counts.lastSucceeded = false
        }
    }
}

/// What a reload changed.
public struct ReloadReport: Sendable, Equatable {
    /// Model groups new in this configuration, removed from it, or configured differently.
    public var added: [String] = []
    public var removed: [String] = []
    public var changed: [String] = []
    /// Deployments kept as they were, circuit and health included.
    public var keptDeployments = 0
    /// Whether the guardrails section changed.
    public var guardrailsChanged = false
    /// Whether retries, backoff, breakers or timeouts changed.
    public var routingChanged = false
    /// Sections that differ from the running configuration but apply only at a restart (not applied).
    public var needRestart: [String] = []
}

/// Builds the reloadable part of the gateway from a configuration; the parts that outlive a
/// reload (upstream client and adapters, governance, audit) are given once.
struct PipelineFactory: Sendable {
    let client: UpstreamHTTPClient
    let openAI: OpenAIAdapter
    let anthropic: AnthropicAdapter
    let logger: Logger

    init(client: UpstreamHTTPClient, logger: Logger) {
        self.client = client
        self.openAI = OpenAIAdapter(http: client)
        self.anthropic = AnthropicAdapter(http: client)
        self.logger = logger
    }

    /// Everything a configuration can be refused for, built before anything starts.
    struct Prepared: Sendable {
        let router: ModelRouter
        let tokenizer: BPETokenizer?
        let remoteGuards: [any InputGuard]
    }

    /// The router (keeping `previous`'s unchanged deployments), the tokenizer and the remote guards;
    /// throws `ConfigurationError` naming the key when one cannot be built.
    func prepare(_ configuration: GatewayConfiguration, keeping previous: ModelRouter? = nil) throws -> Prepared {
        let openAI = self.openAI, anthropic = self.anthropic
        let router = ModelRouter(models: configuration.models, routing: configuration.routing, keeping: previous) { kind, settings in
            switch kind {
            case .anthropic: anthropic
            case .demo: DemoProvider(tokensPerSecond: settings.tokensPerSecond)
            case .openai, .openaiCompatible, .vllm, .ollama, .azure: openAI
            }
        }
        let guardrails = configuration.guardrails
        let policies = guardrails.policies + [guardrails.defaultPolicy]
        if guardrails.enabled, policies.contains(where: { $0.input.contains("injection_classifier") }), case .failure(let error) = ClassifierGuard.shipped {
            throw ConfigurationError(source: "configuration", issues: [.init(path: "guardrails",
                                                                            message: "the injection_classifier guard cannot load its model: \(error)")])
        }
        var tokenizer: BPETokenizer?
        if let path = guardrails.tokenizer {
            do {
                tokenizer = try BPETokenizer(path: path)
            } catch {
                throw ConfigurationError(source: "configuration", issues: [.init(path: "guardrails.tokenizer", message: "\(path): \(error)")])
            }
        }
        let remote = try RemoteGuards.make(guardrails, router: router, http: client, logger: logger)
        return Prepared(router: router, tokenizer: tokenizer, remoteGuards: remote)
    }

    /// The request pipeline over a prepared configuration.
    func assemble(_ prepared: Prepared, configuration: GatewayConfiguration, governance: Governance?, audit: AuditLogs, cache: CacheWiring,
                  anomalies: AnomalyWiring,
                  dependencies: @escaping @Sendable () -> DependencyState) -> LiveRouting.Snapshot {
        let guardrails = configuration.guardrails
        let guarding = guardrails.enabled && governance != nil
            ? InputGuarding(policies: guardrails.policies.map { $0.settings(tokenizer: prepared.tokenizer) },
                            fallback: guardrails.defaultPolicy.settings(tokenizer: prepared.tokenizer), events: audit.guardEvents,
                            remote: prepared.remoteGuards, images: guardrails.images, pseudonymKey: Array((guardrails.pseudonymKey ?? "").utf8)) : nil
        let pipeline = RequestPipeline(router: prepared.router, maximumBodyBytes: configuration.server.maxBodyBytes, governance: governance,
                                       guarding: guarding, audit: audit, cache: cache.with(settings: configuration.cache), residency: configuration.residency,
                                       anomalies: guarding == nil || !guardrails.anomaly.enabled ? nil : anomalies,
                                       anomalyActions: Dictionary(([guardrails.defaultPolicy] + guardrails.policies).compactMap { policy in
                                           policy.anomaly.map { (policy.name, $0) } }, uniquingKeysWith: { first, _ in first }),
                                       dependencies: dependencies)
        return LiveRouting.Snapshot(configuration: configuration, router: prepared.router, pipeline: pipeline)
    }
}

extension Gateway {
    /// Applies `configuration`'s models, deployments, routing and guard policies to the running
    /// gateway without closing a connection; requests already under way finish on what they began with.
    ///
    /// Nothing is applied when any part cannot be built: the error (a `ConfigurationError` naming
    /// each key) is thrown, the running configuration stays, and the failure is counted. Other
    /// sections (server, auth, storage, limits, IP policy, audit, logging, the health-check
    /// interval and timeout) take effect at a restart: the report lists the ones that differ.
    @discardableResult
    public func reload(_ configuration: GatewayConfiguration) throws -> ReloadReport {
        try live.reloading.withLock { _ in
            let running = live.current
            let prepared: PipelineFactory.Prepared
            do {
                prepared = try factory.prepare(configuration, keeping: running.router)
            } catch {
                live.recordFailure()
                throw error
            }
            var effective = running.configuration
            effective.models = configuration.models
            effective.guardrails = configuration.guardrails
            let bounds = (effective.cache.maximumBytes, effective.cache.maximumEntryBytes, effective.cache.redisTimeoutSeconds)
            effective.cache = configuration.cache
            // The cache's store was sized at start-up and stays: its entries outlive a reload.
            (effective.cache.maximumBytes, effective.cache.maximumEntryBytes, effective.cache.redisTimeoutSeconds) = bounds
            let (interval, timeout) = (effective.routing.healthCheckIntervalSeconds, effective.routing.healthCheckTimeoutSeconds)
            effective.routing = configuration.routing
            effective.routing.healthCheckIntervalSeconds = interval   // the health checker runs on its start-up settings
            effective.routing.healthCheckTimeoutSeconds = timeout
            let snapshot = factory.assemble(prepared, configuration: effective, governance: governance, audit: audit, cache: cache, anomalies: anomalies,
                                            dependencies: { [access] in access.dependencyState })
            requestMetrics.addModels(configuration.models.map(\.name))
            live.replace(with: snapshot)
            Self.warnAboutWeakTLS(effective, logger: factory.logger)
            return Self.report(from: running, to: snapshot, requested: configuration)
        }
    }

    /// What of the semantic cache only a restart changes (nil: off).
    static func semanticSetup(_ semantic: CacheConfiguration.Semantic?) -> [String]? {
        semantic.map { [$0.embeddingModel, $0.modelDirectory, "\($0.timeoutSeconds)", "\($0.maximumEntries)"] }
    }

    static func report(from running: LiveRouting.Snapshot, to applied: LiveRouting.Snapshot, requested: GatewayConfiguration) -> ReloadReport {
        var report = ReloadReport()
        let old = Dictionary(running.configuration.models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let new = Dictionary(requested.models.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        report.added = new.keys.filter { old[$0] == nil }.sorted()
        report.removed = old.keys.filter { new[$0] == nil }.sorted()
        report.changed = new.keys.filter { old[$0] != nil && old[$0] != new[$0] }.sorted()
        let before = Set(running.router.allDeployments.map(ObjectIdentifier.init))
        report.keptDeployments = applied.router.allDeployments.filter { before.contains(ObjectIdentifier($0)) }.count
        report.guardrailsChanged = running.configuration.guardrails != requested.guardrails
        report.routingChanged = running.configuration.routing != applied.configuration.routing
        let start = running.configuration
        let sections: [(String, Bool)] = [
            ("server", start.server != requested.server), ("auth", start.auth != requested.auth), ("storage", start.storage != requested.storage),
            ("limits", start.limits != requested.limits), ("ip_policy", start.ipPolicy != requested.ipPolicy), ("audit", start.audit != requested.audit),
            ("tracing", start.tracing != requested.tracing),
            // A cache off at start has no store to switch on; the store's bounds were set at start.
            ("cache", (!start.cache.mayCache && requested.cache.mayCache) || start.cache.maximumBytes != requested.cache.maximumBytes
                || start.cache.maximumEntryBytes != requested.cache.maximumEntryBytes
                || start.cache.redisTimeoutSeconds != requested.cache.redisTimeoutSeconds
                // The semantic cache's embedder and bounds are set at start; its threshold and overrides reload.
                || Self.semanticSetup(start.cache.semantic) != Self.semanticSetup(requested.cache.semantic)),
            ("log_level", start.logLevel != requested.logLevel), ("log_format", start.logFormat != requested.logFormat),
            ("routing.health_check", start.routing.healthCheckIntervalSeconds != requested.routing.healthCheckIntervalSeconds
                || start.routing.healthCheckTimeoutSeconds != requested.routing.healthCheckTimeoutSeconds),
        ]
        report.needRestart = sections.filter(\.1).map(\.0)
        return report
    }
}
