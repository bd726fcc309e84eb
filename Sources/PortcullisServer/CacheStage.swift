import Foundation
import HTTPTypes
import Hummingbird
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import Synchronization

/// Stage 8, cache: the exact cache for a chat request. The key is the tenant (team, else the
/// credential), the request's namespace and guard policy, and the canonical request as the client
/// sent it; the lookup runs after stages 6–7, so a prompt the guards now refuse is refused even
/// when an answer is cached. A hit is served in the client's dialect (a stream is replayed with the
/// usual event shape) and costs nothing unless `charge_hits`; a miss stores the answer the client
/// got, unless it was refused, blocked, filtered or cut at `length`. Off: no plan, nothing happens.
struct CacheStage: Sendable {
    let cache: ExactCache?
    let settings: CacheConfiguration
    let router: ModelRouter

    static let header = HTTPField.Name("x-portcullis-cache")!

    /// What stage 8 decided for one request.
    struct Plan: Sendable {
        let key: CacheKey
        let ttlSeconds: Double
        /// False when the request said `no-cache` or `no-store`.
        let lookup: Bool
        /// False when the request said `no-store`.
        let store: Bool

        /// The header's value when the answer does not come from the cache.
        var missOutcome: String { lookup ? "miss" : "bypass" }
    }

    /// The gateway's own `cache` field and `Cache-Control`, taken before the request is guarded
    /// or sent anywhere (a provider would refuse the unknown field). Read even with caching off,
    /// so that a malformed one is always the client's 400.
    static func directive(_ request: inout ChatRequest, cacheControl: String?) throws(GatewayError) -> CacheDirective {
        var directive = try CacheDirective.take(from: &request.extra, cacheControl: cacheControl)
        if request.anthropicExtra["cache"] != nil {
            let anthropic = try CacheDirective.take(from: &request.anthropicExtra, cacheControl: nil)
            directive.skipLookup = directive.skipLookup || anthropic.skipLookup
            directive.skipStore = directive.skipStore || anthropic.skipStore
            directive.ttlSeconds = anthropic.ttlSeconds ?? directive.ttlSeconds
            if !anthropic.namespace.isEmpty { directive.namespace = anthropic.namespace }
        }
        return directive
    }

    /// The plan for `exchange`, or nil when exact caching is off for its model group and policy.
    func plan(_ exchange: ChatExchange) -> Plan? {
        guard cache != nil, settings.mayCache else { return nil }
        let applied = settings.settings(model: exchange.asked.model, policy: exchange.policy?.name)
        guard applied.exact else { return nil }
        let directive = exchange.cacheDirective
        let principal = exchange.principal
        let tenant = settings.scope == .team ? principal.teamID.map { "team:" + $0 } ?? principal.actor : principal.actor
        let key = CacheKey(tenant: tenant, namespace: directive.namespace, policy: exchange.policy?.name, request: exchange.asked)
        return Plan(key: key, ttlSeconds: min(directive.ttlSeconds ?? applied.ttlSeconds, settings.maximumTTLSeconds),
                    lookup: !directive.skipLookup, store: !directive.skipStore)
    }

    /// The cached answer for `plan` with the deployment that produced it (or its group's first,
    /// after a reload removed it); nil on a miss or a group no longer configured.
    func lookup(_ plan: Plan) async -> Routed<ChatCompletion>? {
        guard plan.lookup, let cache, let answer = await cache.answer(for: plan.key), let group = router.groups[answer.group],
              let deployment = group.deployments.first(where: { $0.name == answer.deployment }) ?? group.deployments.first else { return nil }
        return Routed(value: answer.completion, deployment: deployment, group: answer.group, attempts: 0)
    }

    /// Keeps the answer the client got, when it may be kept.
    func store(_ routed: Routed<ChatCompletion>, plan: Plan) async {
        guard plan.store, let cache, CachedAnswer.isCacheable(routed.value) else { return }
        let cost = routed.value.usage.map { Int64((routed.deployment.price.cost(of: $0) * 1_000_000).rounded()) } ?? 0
        await cache.store(CachedAnswer(completion: routed.value, deployment: routed.deployment.name, group: routed.group,
                                       storedAt: Date().timeIntervalSince1970, costMicros: cost), for: plan.key, ttlSeconds: plan.ttlSeconds)
    }

    /// The collector a streamed answer passes through on a miss, stored when the stream completes.
    func collector(for plan: Plan?, routed: Routed<PrimedStream<ChatChunk>>) -> StreamCollector? {
        guard let plan, plan.store, cache != nil else { return nil }
        let deployment = routed.deployment, group = routed.group, attempts = routed.attempts
        return StreamCollector { completion in
            await store(Routed(value: completion, deployment: deployment, group: group, attempts: attempts), plan: plan)
        }
    }

    /// A hit as the client's answer: whole or replayed as a stream, with `x-portcullis-cache: hit`
    /// and a cost of nothing charged.
    func respond(_ hit: Routed<ChatCompletion>, exchange: ChatExchange) async throws -> Response {
        exchange.audit?.cache("hit")
        if let measures = exchange.measures {
            measures.metrics.recordCacheLookup(model: measures.modelLabel, outcome: "hit")
            let usage = hit.value.usage
            let cost = usage.map { hit.deployment.price.cost(of: $0) } ?? 0
            measures.metrics.recordCacheSavings(model: measures.modelLabel, input: Int64(usage?.promptTokens ?? 0),
                                                output: Int64(usage?.completionTokens ?? 0), costMicros: Int64((cost * 1_000_000).rounded()))
        }
        if settings.chargeHits {
            await SettleStage().settle(hit, grant: exchange.grant, audit: exchange.audit, measures: nil)
        } else {
            await exchange.grant?.release()
        }
        var response: Response
        if exchange.request.stream {
            guard let primed = try await PrimedStream.prime(EventStream(elements: CachedStream.chunks(of: hit.value))) else {
                throw GatewayError.internalFailure
            }
            var replay = Routed(value: primed, deployment: hit.deployment, group: hit.group, attempts: 0)
            replay.panic = false
            response = StreamResponses.chat(replay, exchange: exchange, meter: nil, outputGuard: nil, restorer: nil, collector: nil)
        } else {
            response = RequestPipeline.respond(hit, exchange: exchange, blocked: nil)
            response.headers[HTTPField.Name("x-portcullis-cost")!] = DecimalText.format(0, places: 8)
        }
        response.headers[Self.header] = "hit"
        return response
    }

    /// Says what stage 8 did for an answer that did not come from the cache.
    static func mark(_ response: inout Response, plan: Plan?, exchange: ChatExchange) {
        guard let plan else { return }
        response.headers[header] = plan.missOutcome
        exchange.audit?.cache(plan.missOutcome)
        if let measures = exchange.measures { measures.metrics.recordCacheLookup(model: measures.modelLabel, outcome: plan.missOutcome) }
    }
}

/// Assembles a streamed answer as its chunks reach the client and, when the stream completes,
/// hands the whole answer on (to the cache).
final class StreamCollector: Sendable {
    private let assembler = Mutex(StreamAssembler())
    private let completed: @Sendable (ChatCompletion) async -> Void

    init(completed: @escaping @Sendable (ChatCompletion) async -> Void) {
        self.completed = completed
    }

    func add(_ chunk: ChatChunk) { assembler.withLock { $0.add(chunk) } }

    /// The stream reached its end normally.
    func finish() async { await completed(assembler.withLock { $0.completion }) }
}
