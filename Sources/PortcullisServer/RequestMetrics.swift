import Foundation
import Hummingbird
import PortcullisCore
import PortcullisProviders
import Prometheus
import Synchronization

/// The gateway's request, upstream, token and security metrics, in the Prometheus registry that
/// `/metrics` serves (the executable also bootstraps swift-metrics over that registry, so
/// libraries' own metrics join in).
///
/// Labels are bounded: route templates, configured model groups and deployments, provider
/// kinds, status classes, stable error codes, roles and credential methods — never a key,
/// user or request id. A model a request names that is not configured is `other`.
///
/// The handles of a label set are made on first use and cached here, so recording is one
/// dictionary lookup under a short lock plus the handle's own update (swift-prometheus's
/// counters and gauges are atomics; its histograms take an uncontended lock).
public final class RequestMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// The model groups ever configured (a reload adds its new ones; none is dropped, so a label's series carries on).
    private let models: Mutex<Set<String>>

    /// Request latency buckets, 5 ms to 120 s: fine enough for p50/p95/p99 at every scale.
    static let latencyBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                                           1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120]
    /// The gateway's own time, 50 µs to 1 s.
    static let overheadBuckets: [Double] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]

    // Every family's name and help, once: swift-prometheus refuses one name with two help texts.
    static func family(_ name: String, unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "portcullis", metricName: name, unitName: unit, helpText: help)
    }
    static var requestsTotalFamily: MetricNameDescriptor {
        family("requests", unit: "total", "Requests served, by route template, model group, status class, stable error code (none on success) and role.")
    }
    static var tokensTotalFamily: MetricNameDescriptor {
        family("tokens", unit: "total", "Tokens of settled calls by model group, deployment, provider and type (input, output, cached input).")
    }
    static var upstreamAttemptsTotalFamily: MetricNameDescriptor {
        family("upstream_attempts", unit: "total", "Upstream attempts by deployment, provider and outcome (success, status_4xx, status_5xx, status_429, timeout, connection, malformed).")
    }
    static var streamsInFlightFamily: MetricNameDescriptor {
        family("streams_in_flight", unit: "", "Streamed answers being sent now.")
    }
    static var requestsInFlightFamily: MetricNameDescriptor {
        family("requests_in_flight", unit: "", "Requests being served now, by route template.")
    }
    static var requestDurationSecondsFamily: MetricNameDescriptor {
        family("request_duration", unit: "seconds", "Time from the request's arrival to its last response byte (a stream's end), by route template and model group.")
    }
    static var gatewayOverheadSecondsFamily: MetricNameDescriptor {
        family("gateway_overhead", unit: "seconds", "Time the gateway added to a request that reached an upstream: time to the response head less upstream time.")
    }
    static var timeToFirstTokenSecondsFamily: MetricNameDescriptor {
        family("time_to_first_token", unit: "seconds", "Time from a streamed request's arrival to its first event from the upstream, by model group.")
    }
    static var costUsdTotalFamily: MetricNameDescriptor {
        family("cost_usd", unit: "total", "Cost of settled calls at the deployments' configured prices, in US dollars.")
    }
    static var upstreamDurationSecondsFamily: MetricNameDescriptor {
        family("upstream_duration", unit: "seconds", "Upstream attempt time by deployment: to the whole answer, or to a stream's first event.")
    }
    static var retriesTotalFamily: MetricNameDescriptor {
        family("retries", unit: "total", "Upstream attempts beyond the first, by requested model group.")
    }
    static var fallbacksTotalFamily: MetricNameDescriptor {
        family("fallbacks", unit: "total", "Calls a fallback model group served, by requested group and the group that served.")
    }
    static var authenticationAttemptsTotalFamily: MetricNameDescriptor {
        family("authentication_attempts", unit: "total", "Authentication attempts by credential method and outcome (success or the refusal's stable code).")
    }
    static var limitRefusalsTotalFamily: MetricNameDescriptor {
        family("limit_refusals", unit: "total", "Requests refused by a rate limit, concurrency limit or budget, by code, scope (key, user, team, global, model) and role.")
    }

    static var cacheLookupsTotalFamily: MetricNameDescriptor {
        family("cache_lookups", unit: "total", "Chat requests the exact cache applied to, by model group and outcome (hit, miss, bypass).")
    }
    static var cacheSavedTokensTotalFamily: MetricNameDescriptor {
        family("cache_saved_tokens", unit: "total", "Tokens not sent to a provider because the cache answered or a request joined an identical call in flight, by model group, mechanism (exact, dedup) and type (input, output).")
    }
    static var cacheSavedCostUsdTotalFamily: MetricNameDescriptor {
        family("cache_saved_cost_usd", unit: "total", "What the calls the cache answered or de-duplicated cost when made, in US dollars, by model group and mechanism (exact, dedup).")
    }
    static var deduplicatedTotalFamily: MetricNameDescriptor {
        family("deduplicated_requests", unit: "total", "Requests that joined an identical upstream call already in flight instead of making their own, by model group.")
    }
    static var cacheErrorsTotalFamily: MetricNameDescriptor {
        family("cache_errors", unit: "total", "Cache entries dropped as corrupt, shared-cache (Redis) reads or writes that failed or timed out, and semantic-cache embeddings that failed, timed out or found the embedder saturated, by reason.")
    }

    struct RequestKey: Hashable {
        var route: String, model: String, statusClass: String, code: String, role: String
    }
    struct RouteKey: Hashable {
        var route: String, model: String
    }
    struct DeploymentKey: Hashable {
        var model: String, deployment: String, provider: String
    }
    struct AttemptKey: Hashable {
        var deployment: String, provider: String, outcome: String
    }
    struct PairKey: Hashable {
        var first: String, second: String
    }
    struct RefusalKey: Hashable {
        var code: String, scope: String, role: String
    }
    struct TokenCounters {
        var input: Counter, output: Counter, cached: Counter, cost: Counter
    }
    struct SavingCounters {
        var input: Counter, output: Counter, cost: Counter
    }

    private struct Handles {
        var requests: [RequestKey: Counter] = [:]
        var durations: [RouteKey: ValueHistogram] = [:]
        var overheads: [String: ValueHistogram] = [:]
        var inFlight: [String: Gauge] = [:]
        var firstTokens: [String: ValueHistogram] = [:]
        var tokens: [DeploymentKey: TokenCounters] = [:]
        var attempts: [AttemptKey: Counter] = [:]
        var upstreamDurations: [PairKey: ValueHistogram] = [:]
        var retries: [String: Counter] = [:]
        var fallbacks: [PairKey: Counter] = [:]
        var authentications: [PairKey: Counter] = [:]
        var refusals: [RefusalKey: Counter] = [:]
        var cacheLookups: [PairKey: Counter] = [:]
        var cacheSavings: [PairKey: SavingCounters] = [:]
        var deduplicated: [String: Counter] = [:]
        var cacheErrors: [String: Counter] = [:]
    }
    private let handles = Mutex(Handles())
    /// Trace ids of sampled requests by duration bucket, for an OpenMetrics scrape.
    let exemplars = RequestExemplars(bounds: RequestMetrics.latencyBuckets)
    let streamsInFlight: Gauge

    /// - Parameters:
    ///   - registry: where the metrics live (one per gateway, so tests never share counts).
    ///   - models: the configured model groups; any other model is labelled `other`.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), models: [String]) {
        self.registry = registry
        self.models = Mutex(Set(models))
        streamsInFlight = registry.makeGauge(descriptor: Self.streamsInFlightFamily)
    }

    static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"]

    /// `2xx` for 200…299, and so on (no string built per request).
    static func statusClass(_ status: Int) -> String {
        statusClasses.indices.contains(status / 100 - 1) ? statusClasses[status / 100 - 1] : "other"
    }

    /// Labels the model groups a reload configured with their own names from now on.
    public func addModels(_ names: [String]) {
        models.withLock { $0.formUnion(names) }
    }

    /// Whether `model` is a configured model group (labelled with its name).
    func isConfigured(_ model: String) -> Bool {
        models.withLock { $0.contains(model) }
    }

    /// The label for a model a request named.
    func modelLabel(_ model: String?) -> String {
        guard let model else { return "none" }
        return isConfigured(model) ? model : "other"
    }

    /// A cached handle: found under the lock, or made (registration has its own lock) and kept.
    private func handle<Key: Hashable & Sendable, Value: Sendable>(_ path: WritableKeyPath<Handles, [Key: Value]>, _ key: Key, make: () -> Value) -> Value {
        if let found = handles.withLock({ $0[keyPath: path][key] }) { return found }
        let made = make()
        return handles.withLock { handles in
            if let raced = handles[keyPath: path][key] { return raced }
            handles[keyPath: path][key] = made
            return made
        }
    }

    // MARK: Requests

    /// The in-flight gauge of `route`.
    func inFlight(route: String) -> Gauge {
        handle(\.inFlight, route) {
            registry.makeGauge(descriptor: Self.requestsInFlightFamily, labels: [("route", route)])
        }
    }

    /// One finished request: counted by outcome, its duration observed.
    func recordRequest(route: String, model: String, status: Int, code: String, role: String, seconds: Double, traceID: String? = nil) {
        let key = RequestKey(route: route, model: model, statusClass: Self.statusClass(status), code: code, role: role)
        handle(\.requests, key) {
            registry.makeCounter(descriptor: Self.requestsTotalFamily,
                                 labels: [("route", key.route), ("model", key.model), ("status_class", key.statusClass),
                                          ("code", key.code), ("role", key.role)])
        }.increment()
        let routeKey = RouteKey(route: route, model: model)
        handle(\.durations, routeKey) {
            registry.makeValueHistogram(descriptor: Self.requestDurationSecondsFamily, labels: [("route", route), ("model", model)],
                                        buckets: Self.latencyBuckets)
        }.record(seconds)
        if let traceID { exemplars.record(route: route, model: model, seconds: seconds, traceID: traceID) }
    }

    /// The gateway's own time for a request that reached an upstream: time to its response head less the upstream's.
    func recordOverhead(route: String, seconds: Double) {
        handle(\.overheads, route) {
            registry.makeValueHistogram(descriptor: Self.gatewayOverheadSecondsFamily, labels: [("route", route)], buckets: Self.overheadBuckets)
        }.record(max(0, seconds))
    }

    /// A stream's time to its first token (its head goes out with the upstream's first event).
    func recordFirstToken(model: String, seconds: Double) {
        handle(\.firstTokens, model) {
            registry.makeValueHistogram(descriptor: Self.timeToFirstTokenSecondsFamily, labels: [("model", model)], buckets: Self.latencyBuckets)
        }.record(seconds)
    }

    /// Tokens and cost of a settled call.
    func recordUsage(model: String, deployment: String, provider: String, input: Int64, output: Int64, cached: Int64, costMicros: Int64) {
        let key = DeploymentKey(model: model, deployment: deployment, provider: provider)
        let counters = handle(\.tokens, key) {
            let labels = [("model", model), ("deployment", deployment), ("provider", provider)]
            return TokenCounters(
                input: registry.makeCounter(descriptor: Self.tokensTotalFamily, labels: labels + [("type", "input")]),
                output: registry.makeCounter(descriptor: Self.tokensTotalFamily, labels: labels + [("type", "output")]),
                cached: registry.makeCounter(descriptor: Self.tokensTotalFamily, labels: labels + [("type", "cached")]),
                cost: registry.makeCounter(descriptor: Self.costUsdTotalFamily, labels: labels))
        }
        if input > 0 { counters.input.increment(by: input) }
        if output > 0 { counters.output.increment(by: output) }
        if cached > 0 { counters.cached.increment(by: cached) }
        if costMicros > 0 { counters.cost.increment(by: Double(costMicros) / 1_000_000) }
    }

    // MARK: Routing

    /// One upstream attempt: its outcome counted, its duration observed (a stream's to its first event).
    func recordAttempt(deployment: String, provider: String, outcome: String, seconds: Double) {
        handle(\.attempts, AttemptKey(deployment: deployment, provider: provider, outcome: outcome)) {
            registry.makeCounter(descriptor: Self.upstreamAttemptsTotalFamily,
                                 labels: [("deployment", deployment), ("provider", provider), ("outcome", outcome)])
        }.increment()
        handle(\.upstreamDurations, PairKey(first: deployment, second: provider)) {
            registry.makeValueHistogram(descriptor: Self.upstreamDurationSecondsFamily, labels: [("deployment", deployment), ("provider", provider)],
                                        buckets: Self.latencyBuckets)
        }.record(seconds)
    }

    /// Retries and a fallback of a routed call.
    func recordRouting(model: String, servedBy group: String, attempts: Int) {
        if attempts > 1 {
            handle(\.retries, model) {
                registry.makeCounter(descriptor: Self.retriesTotalFamily, labels: [("model", model)])
            }.increment(by: Int64(attempts - 1))
        }
        if group != model, isConfigured(group) {
            handle(\.fallbacks, PairKey(first: model, second: group)) {
                registry.makeCounter(descriptor: Self.fallbacksTotalFamily, labels: [("model", model), ("fallback", group)])
            }.increment()
        }
    }

    // MARK: Cache

    /// One chat request stage 8 applied to: `hit`, `miss` or `bypass`.
    func recordCacheLookup(model: String, outcome: String) {
        handle(\.cacheLookups, PairKey(first: model, second: outcome)) {
            registry.makeCounter(descriptor: Self.cacheLookupsTotalFamily, labels: [("model", model), ("outcome", outcome)])
        }.increment()
    }

    /// What one hit saved: the tokens and cost of the call that first produced the answer.
    func recordCacheSavings(model: String, mechanism: String, input: Int64, output: Int64, costMicros: Int64) {
        let counters = handle(\.cacheSavings, PairKey(first: model, second: mechanism)) {
            let labels = [("model", model), ("mechanism", mechanism)]
            return SavingCounters(input: registry.makeCounter(descriptor: Self.cacheSavedTokensTotalFamily, labels: labels + [("type", "input")]),
                                  output: registry.makeCounter(descriptor: Self.cacheSavedTokensTotalFamily, labels: labels + [("type", "output")]),
                                  cost: registry.makeCounter(descriptor: Self.cacheSavedCostUsdTotalFamily, labels: labels))
        }
        if input > 0 { counters.input.increment(by: input) }
        if output > 0 { counters.output.increment(by: output) }
        if costMicros > 0 { counters.cost.increment(by: Double(costMicros) / 1_000_000) }
    }

    /// A request that joined an identical call in flight.
    func recordDeduplicated(model: String) {
        handle(\.deduplicated, model) {
            registry.makeCounter(descriptor: Self.deduplicatedTotalFamily, labels: [("model", model)])
        }.increment()
    }

    /// A corrupt entry dropped (`corrupt_entry`) or a shared-cache operation that failed (`redis`).
    func recordCacheError(reason: String) {
        handle(\.cacheErrors, reason) {
            registry.makeCounter(descriptor: Self.cacheErrorsTotalFamily, labels: [("reason", reason)])
        }.increment()
    }

    // MARK: Security

    /// One authentication: its credential method (api_key, oidc, master_key, client_certificate, none, unrecognised) and outcome.
    func recordAuthentication(method: String, outcome: String) {
        handle(\.authentications, PairKey(first: method, second: outcome)) {
            registry.makeCounter(descriptor: Self.authenticationAttemptsTotalFamily, labels: [("method", method), ("outcome", outcome)])
        }.increment()
    }

    /// One refusal by a rate limit, concurrency limit or budget.
    func recordLimitRefusal(code: String, scope: String, role: String) {
        handle(\.refusals, RefusalKey(code: code, scope: scope, role: role)) {
            registry.makeCounter(descriptor: Self.limitRefusalsTotalFamily, labels: [("code", code), ("scope", scope), ("role", role)])
        }.increment()
    }
}

/// What one request's stages tell its metrics; read once the response is complete.
public final class RequestMeasures: Sendable {
    struct Facts {
        var model: String?
        var role = "anonymous"
        var code: String?
        var scope: String?
        var upstreamSeconds: Double = 0
        var reachedUpstream = false
        var deployment: String?
        var inputTokens: Int64 = 0
        var outputTokens: Int64 = 0
        var costMicros: Int64 = 0
        /// The trace of the request's span, when tracing recorded (sampled) it.
        var traceID: String?
    }
    private let facts = Mutex(Facts())
    let metrics: RequestMetrics

    init(metrics: RequestMetrics) {
        self.metrics = metrics
    }

    var snapshot: Facts { facts.withLock { $0 } }

    func model(_ model: String) { facts.withLock { $0.model = model } }
    func role(_ role: String) { facts.withLock { $0.role = role } }
    /// The request's span was sampled: its trace id is the duration's exemplar.
    func traced(_ traceID: String) { facts.withLock { $0.traceID = traceID } }
    /// A refusal's code and, for limits and budgets, what it counted against.
    func failed(_ error: GatewayError) {
        facts.withLock {
            $0.code = error.code.rawValue
            $0.scope = error.scope
        }
    }

    /// An upstream attempt of this request ended.
    func attempted(seconds: Double) {
        facts.withLock {
            $0.upstreamSeconds += seconds
            $0.reachedUpstream = true
        }
    }

    var modelLabel: String { metrics.modelLabel(snapshot.model) }

    /// A settled call's tokens and cost: kept for the access log, counted in the metrics.
    func settled(deployment: String, provider: String, input: Int64, output: Int64, cached: Int64, costMicros: Int64) {
        facts.withLock {
            $0.deployment = deployment
            $0.inputTokens += input
            $0.outputTokens += output
            $0.costMicros += costMicros
        }
        metrics.recordUsage(model: modelLabel, deployment: deployment, provider: provider, input: input, output: output, cached: cached,
                            costMicros: costMicros)
    }
}

/// Counts and times every API and admin request (probes are not counted) once its response
/// is complete — a stream's when its last byte is out, however it ends — and keeps the
/// in-flight gauges. The stages tell the request's `RequestMeasures` what they decided.
public struct RequestMetricsMiddleware: RouterMiddleware {
    public typealias Context = GatewayRequestContext
    let metrics: RequestMetrics

    public init(metrics: RequestMetrics) {
        self.metrics = metrics
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard !path.hasPrefix("/health/"), path != "/metrics" else { return try await next(request, context) }
        let start = ContinuousClock.now
        // The router resolved the route before any middleware ran.
        let route = context.endpointPath ?? "unmatched"
        let metrics = self.metrics, measures = RequestMeasures(metrics: metrics)
        var context = context
        context.measures = measures
        let inFlight = metrics.inFlight(route: route)
        inFlight.increment()
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            // The error envelope answers every refusal; this is what escaped it.
            inFlight.decrement()
            Self.finish(measures, route: route, status: 500, start: start)
            throw error
        }
        let status = Int(response.status.code)
        let facts = measures.snapshot, head = Self.seconds(since: start)
        if facts.reachedUpstream { metrics.recordOverhead(route: route, seconds: head - facts.upstreamSeconds) }
        guard response.body.contentLength == nil, facts.reachedUpstream else {
            inFlight.decrement()
            Self.finish(measures, route: route, status: status, start: start)
            return response
        }
        // A stream: its head went out with the upstream's first event.
        metrics.recordFirstToken(model: metrics.modelLabel(facts.model), seconds: head)
        metrics.streamsInFlight.increment()
        let body = response.body
        response.body = ResponseBody { writer in
            defer {
                metrics.streamsInFlight.decrement()
                inFlight.decrement()
                Self.finish(measures, route: route, status: status, start: start)
            }
            try await body.write(writer)
        }
        return response
    }

    static func finish(_ measures: RequestMeasures, route: String, status: Int, start: ContinuousClock.Instant) {
        let facts = measures.snapshot, metrics = measures.metrics
        let code = facts.code ?? (status >= 400 ? "unclassified" : "none")
        metrics.recordRequest(route: route, model: metrics.modelLabel(facts.model), status: status, code: code, role: facts.role,
                              seconds: seconds(since: start), traceID: facts.traceID)
        if ErrorCode.limitRefusals.contains(code) { metrics.recordLimitRefusal(code: code, scope: facts.scope ?? "unknown", role: facts.role) }
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        (ContinuousClock.now - start).inSeconds
    }
}

extension UpstreamFailure {
    /// The failure as a bounded metric label.
    var outcomeLabel: String {
        switch reason {
        case .status(429): "status_429"
        case .status(let code): code >= 500 ? "status_5xx" : "status_4xx"
        case .timeout: "timeout"
        case .connection: "connection"
        case .malformed: "malformed"
        }
    }
}
