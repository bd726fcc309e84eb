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
///
/// De-duplication (`cache.dedup`, by default for requests with `temperature` 0 or a `seed`):
/// identical requests of one tenant in flight at the same time share one upstream call; a
/// stream is teed to each of them (a late joiner gets what was already sent, then the live
/// tail). Each is admitted, guarded, audited and answered on its own; one that joined is charged
/// nothing unless `charge_hits`, and says `x-portcullis-dedup: joined`.
struct CacheStage: Sendable {
    let wiring: CacheWiring
    let router: ModelRouter

    var cache: ExactCache? { wiring.exact }
    var settings: CacheConfiguration { wiring.settings }

    static let header = HTTPField.Name("x-portcullis-cache")!
    static let similarityHeader = HTTPField.Name("x-portcullis-cache-similarity")!
    static let dedupHeader = HTTPField.Name("x-portcullis-dedup")!

    /// What stage 8 decided for one request.
    struct Plan: Sendable {
        let key: CacheKey
        let ttlSeconds: Double
        /// Whether the exact cache is looked in for the request's model group and policy.
        let exact: Bool
        /// The semantic lookup, when the semantic cache applies to the request.
        let semantic: SemanticProbe?
        /// False when the request said `no-cache` or `no-store`.
        let lookup: Bool
        /// False when the request said `no-store`.
        let store: Bool
        /// Whether an identical request in flight may share its upstream call.
        let deduplicates: Bool
        /// The data subject whose request it is (`CacheKey.subjectTag` of `user:<id>`, else `key:<id>`), carried by what it stores.
        let subject: String?

        /// The header's value when the answer does not come from the cache (nil: no cache applies).
        var missOutcome: String? { exact || semantic != nil ? (lookup ? "miss" : "bypass") : nil }
    }

    /// The semantic side of a plan: the partition (everything but the last user turn, hashed
    /// with the tenant, namespace and policy), the question, the threshold, and the question's
    /// embedding once made (the lookup's, kept for storing the answer).
    final class SemanticProbe: Sendable {
        let partition: String
        let question: String
        let threshold: Double
        let vector = Mutex<[Float]?>(nil)

        init(partition: String, question: String, threshold: Double) {
            self.partition = partition
            self.question = question
            self.threshold = threshold
        }
    }

    /// An answer from the cache: exactly the request's (`similarity` nil) or a similar question's.
    struct Hit: Sendable {
        let routed: Routed<ChatCompletion>
        let similarity: Float?
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

    /// The plan for `exchange`, or nil when neither the exact cache nor de-duplication applies.
    /// A request whose policy plants a canary is never de-duplicated: each must carry its own.
    func plan(_ exchange: ChatExchange) -> Plan? {
        let applied = settings.settings(model: exchange.asked.model, policy: exchange.policy?.name)
        let exact = applied.exact && cache != nil
        let question = applied.semantic && cache != nil && wiring.semantic != nil ? Self.question(of: exchange.asked) : nil
        let deduplicates = settings.deduplication.applies(to: exchange.asked) && exchange.output?.context.canary == nil
        guard exact || question != nil || deduplicates else { return nil }
        let directive = exchange.cacheDirective
        let principal = exchange.principal
        let tenant = settings.scope == .team ? principal.teamID.map { "team:" + $0 } ?? principal.actor : principal.actor
        let key = CacheKey(tenant: tenant, namespace: directive.namespace, policy: exchange.policy?.name, request: exchange.asked)
        let probe = question.map { question in
            var rest = exchange.asked
            rest.messages[rest.messages.count - 1].content = .text("")
            let partition = CacheKey(tenant: tenant, namespace: directive.namespace, policy: exchange.policy?.name, request: rest).digest
            return SemanticProbe(partition: partition, question: question, threshold: applied.threshold)
        }
        let caches = exact || probe != nil
        return Plan(key: key, ttlSeconds: min(directive.ttlSeconds ?? applied.ttlSeconds, settings.maximumTTLSeconds), exact: exact,
                    semantic: probe, lookup: caches && !directive.skipLookup, store: caches && !directive.skipStore, deduplicates: deduplicates,
                    subject: (principal.userID.map { "user:" + $0 } ?? principal.keyID.map { "key:" + $0 }).map(CacheKey.subjectTag))
    }

    /// The text of the request's last turn when it is the user's plain text (what the semantic
    /// cache embeds), else nil: a turn of parts (an image, a file) is never compared by its text alone.
    static func question(of request: ChatRequest) -> String? {
        guard let last = request.messages.last, last.role == .user, case .text(let text)? = last.content else { return nil }
        return text.isEmpty ? nil : text
    }

    /// The whole answer: from the identical call in flight when there is one (`joined`), else from `call`.
    func answer(_ plan: Plan?, _ call: @escaping @Sendable () async throws -> Routed<ChatCompletion>) async throws
        -> (routed: Routed<ChatCompletion>, joined: Bool) {
        guard let plan, plan.deduplicates else { return (try await call(), false) }
        let (routed, joined) = try await wiring.calls.value(for: plan.key.digest, call)
        return (routed, joined)
    }

    /// The stream: a reader of the identical one in flight when there is one (`joined`), else
    /// `open`'s, teed so that identical requests arriving before it ends can read it too.
    func stream(_ plan: Plan?, _ open: @escaping @Sendable () async throws -> Routed<PrimedStream<ChatChunk>>) async throws
        -> (routed: Routed<PrimedStream<ChatChunk>>, joined: Bool) {
        guard let plan, plan.deduplicates else { return (try await open(), false) }
        let streams = wiring.streams, key = plan.key.digest
        let (shared, joined) = try await streams.value(for: key, holdsUntilRetired: true) {
            let routed = try await open()
            let deployment = routed.deployment
            let tee = SharedStream(routed.value, failure: { error in
                guard let failure = error as? UpstreamFailure else { return error }
                deployment.record(failure)   // once for the call, not once per reader
                return ModelRouter.clientError(for: failure)
            }, onEnd: { streams.retire(key) })
            return Routed(value: tee, deployment: deployment, group: routed.group, attempts: routed.attempts, panic: routed.panic)
        }
        return (Routed(value: shared.value.reader(), deployment: shared.deployment, group: shared.group, attempts: shared.attempts,
                       panic: shared.panic), joined)
    }

    /// A request that joined another's call: charged nothing unless `charge_hits` (then `charge`
    /// runs), counted, audited and marked.
    func joined(_ exchange: ChatExchange, usage: Usage?, deployment: Deployment, charge: () async -> Void) async {
        exchange.audit?.cache("joined")
        exchange.measures.map { $0.metrics.recordDeduplicated(model: $0.modelLabel) }
        saved(exchange, mechanism: "dedup", usage: usage, deployment: deployment, model: exchange.asked.model)
        if settings.chargeHits { await charge() } else { await exchange.grant?.release() }
    }

    /// The cached answer for `plan`: the exact one, else (with the semantic cache) the answer
    /// of the most similar question of the same partition at or above the threshold. Nil on a
    /// miss, or when the answer's model group is no longer configured.
    func lookup(_ plan: Plan, exchange: ChatExchange) async -> Hit? {
        guard plan.lookup, let cache else { return nil }
        if plan.exact, let answer = await cache.answer(for: plan.key), let routed = routed(answer) { return Hit(routed: routed, similarity: nil) }
        guard let probe = plan.semantic, let semantic = wiring.semantic,
              let vector = await semantic.embed(probe.question, by: embedder(for: exchange)) else { return nil }
        probe.vector.withLock { $0 = vector }
        guard let match = semantic.match(vector, partition: probe.partition, threshold: probe.threshold, question: probe.question) else { return nil }
        guard let answer = await cache.answer(for: match.key), let routed = routed(answer) else {
            semantic.forget(match, partition: probe.partition)
            return nil
        }
        return Hit(routed: routed, similarity: match.similarity)
    }

    /// A cached answer with the deployment that produced it (or its group's first, after a reload removed it).
    private func routed(_ answer: CachedAnswer) -> Routed<ChatCompletion>? {
        guard let group = router.groups[answer.group],
              let deployment = group.deployments.first(where: { $0.name == answer.deployment }) ?? group.deployments.first else { return nil }
        return Routed(value: answer.completion, deployment: deployment, group: answer.group, attempts: 0)
    }

    /// Who embeds questions for the semantic cache: the built-in embedder, or the configured
    /// embedding model group through routing (with the request's id and logger).
    func embedder(for exchange: ChatExchange) -> (any QuestionEmbedder)? {
        guard let model = settings.semantic?.embeddingModel, model != CacheConfiguration.Semantic.builtin else { return nil }
        return GroupEmbedder(route: RouteStage(router: router), model: model, upstream: exchange.upstream)
    }

    /// Keeps the answer the client got, when it may be kept; with the semantic cache, also
    /// remembers its question (embedded by the lookup, or now by the built-in embedder when the
    /// request skipped the lookup).
    func store(_ routed: Routed<ChatCompletion>, plan: Plan) async {
        guard plan.store, let cache, CachedAnswer.isCacheable(routed.value) else { return }
        let cost = routed.value.usage.map { Int64((routed.deployment.price.cost(of: $0) * 1_000_000).rounded()) } ?? 0
        await cache.store(CachedAnswer(completion: routed.value, deployment: routed.deployment.name, group: routed.group,
                                       storedAt: Date().timeIntervalSince1970, costMicros: cost, subject: plan.subject), for: plan.key,
                          ttlSeconds: plan.ttlSeconds)
        guard let probe = plan.semantic, let semantic = wiring.semantic else { return }
        var vector = probe.vector.withLock { $0 }
        if vector == nil, semantic.embedder != nil { vector = await semantic.embed(probe.question) }
        if let vector {
            semantic.remember(vector, question: probe.question, partition: probe.partition, key: plan.key, subject: plan.subject)
            wiring.sharing?.publish(vector, question: probe.question, partition: probe.partition, key: plan.key, subject: plan.subject)
        }
    }

    /// The collector a streamed answer passes through on a miss, stored when the stream completes.
    func collector(for plan: Plan?, routed: Routed<PrimedStream<ChatChunk>>, joined: Bool) -> StreamCollector? {
        guard let plan, plan.store, cache != nil, !joined else { return nil }
        let deployment = routed.deployment, group = routed.group, attempts = routed.attempts
        return StreamCollector { completion in
            await store(Routed(value: completion, deployment: deployment, group: group, attempts: attempts), plan: plan)
        }
    }

    /// A hit as the client's answer: whole or replayed as a stream, with `x-portcullis-cache: hit`
    /// (or `semantic-hit` and the similarity) and a cost of nothing charged.
    func respond(_ found: Hit, exchange: ChatExchange) async throws -> Response {
        let hit = found.routed
        let outcome = found.similarity == nil ? "hit" : "semantic-hit"
        exchange.audit?.cache(outcome, similarity: found.similarity)
        exchange.measures.map { $0.metrics.recordCacheLookup(model: $0.modelLabel, outcome: found.similarity == nil ? "hit" : "semantic_hit") }
        saved(exchange, mechanism: found.similarity == nil ? "exact" : "semantic", usage: hit.value.usage, deployment: hit.deployment, model: hit.group)
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
            let replay = Routed(value: primed, deployment: hit.deployment, group: hit.group, attempts: 0)
            response = StreamResponses.chat(replay, exchange: exchange, meter: nil, outputGuard: nil, restorer: nil, collector: nil)
        } else {
            response = RequestPipeline.respond(hit, exchange: exchange, blocked: nil)
            response.headers[HTTPField.Name("x-portcullis-cost")!] = DecimalText.format(0, places: 8)
        }
        response.headers[Self.header] = outcome
        if let similarity = found.similarity { response.headers[Self.similarityHeader] = DecimalText.format(Double(similarity), places: 4) }
        return response
    }

    /// What a request answered without its own upstream call saved: to the metrics and the ledger.
    func saved(_ exchange: ChatExchange, mechanism: String, usage: Usage?, deployment: Deployment, model: String) {
        let input = Int64(usage?.promptTokens ?? 0), output = Int64(usage?.completionTokens ?? 0)
        let cost = Int64(((usage.map { deployment.price.cost(of: $0) } ?? 0) * 1_000_000).rounded())
        if let measures = exchange.measures {
            measures.metrics.recordCacheSavings(model: measures.modelLabel, mechanism: mechanism, input: input, output: output, costMicros: cost)
        }
        wiring.savings?.record(teamID: exchange.principal.teamID, mechanism: mechanism, model: model, inputTokens: input, outputTokens: output,
                               costMicros: cost)
    }

    /// Says what stage 8 did for an answer that did not come from the cache.
    static func mark(_ response: inout Response, plan: Plan?, joined: Bool, exchange: ChatExchange) {
        if joined { response.headers[dedupHeader] = "joined" }
        guard let outcome = plan?.missOutcome else { return }
        response.headers[header] = outcome
        if !joined { exchange.audit?.cache(outcome) }
        if let measures = exchange.measures { measures.metrics.recordCacheLookup(model: measures.modelLabel, outcome: outcome) }
    }
}

/// What stage 8 works with, kept across reloads: the exact cache's store (nil: off), its
/// settings, and the calls and streams in flight that identical requests may join.
public struct CacheWiring: Sendable {
    let exact: ExactCache?
    /// The semantic cache's memory of questions (nil: off).
    let semantic: SemanticCache?
    /// How its questions reach the other replicas (nil: without Redis, or off).
    let sharing: SemanticSharing?
    let settings: CacheConfiguration
    let calls: InFlight<Routed<ChatCompletion>>
    let streams: InFlight<Routed<SharedStream<ChatChunk>>>
    /// Where what was saved is summed for `/admin/savings` (nil: not kept).
    let savings: SavingsLedger?

    public init(exact: ExactCache? = nil, semantic: SemanticCache? = nil, sharing: SemanticSharing? = nil,
                settings: CacheConfiguration = CacheConfiguration(), savings: SavingsLedger? = nil) {
        self.init(exact: exact, semantic: semantic, sharing: sharing, settings: settings, calls: InFlight(), streams: InFlight(), savings: savings)
    }

    init(exact: ExactCache?, semantic: SemanticCache?, sharing: SemanticSharing?, settings: CacheConfiguration, calls: InFlight<Routed<ChatCompletion>>,
         streams: InFlight<Routed<SharedStream<ChatChunk>>>, savings: SavingsLedger?) {
        self.exact = exact
        self.semantic = semantic
        self.sharing = sharing
        self.settings = settings
        self.calls = calls
        self.streams = streams
        self.savings = savings
    }

    /// The same store and calls in flight under new settings (a reload).
    func with(settings: CacheConfiguration) -> CacheWiring {
        CacheWiring(exact: exact, semantic: semantic, sharing: sharing, settings: settings, calls: calls, streams: streams, savings: savings)
    }

    /// Removes what the caches hold of the data subject `subject` (`user:<id>` or `key:<id>`):
    /// answers its requests produced, here and in Redis, and the questions it asked, here and in
    /// the shared stream. The other replicas drop their copies on the `cacheErased` message the
    /// caller publishes. Returns the entries removed; throws when Redis cannot be reached.
    func erase(subject: String) async throws -> Int {
        let tag = CacheKey.subjectTag(subject)
        var removed = eraseLocally(tag: tag)
        if let exact { removed += try await exact.erase(subject: tag).shared }
        if let sharing { removed += try await sharing.erase(subject: tag) }
        return removed
    }

    /// This replica's copies of a subject's entries (by `CacheKey.subjectTag`), on another replica's erasure.
    @discardableResult
    func eraseLocally(tag: String) -> Int {
        (exact?.eraseLocally(subject: tag) ?? 0) + (semantic?.erase(subject: tag) ?? 0)
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

    /// One collector that hands the answer to both (nil when neither is wanted).
    static func joining(_ first: StreamCollector?, _ second: StreamCollector?) -> StreamCollector? {
        guard let first, let second else { return first ?? second }
        return StreamCollector { completion in
            await first.completed(completion)
            await second.completed(completion)
        }
    }

    func add(_ chunk: ChatChunk) { assembler.withLock { $0.add(chunk) } }

    /// The stream reached its end normally.
    func finish() async { await completed(assembler.withLock { $0.completion }) }
}

/// Embeds a question through an embedding model group (routing, retries and fallbacks as for a
/// client's request; not charged to the caller), its vector scaled to unit length.
struct GroupEmbedder: QuestionEmbedder {
    let route: RouteStage
    let model: String
    let upstream: UpstreamContext

    func embed(_ text: String) async throws -> [Float] {
        let routed = try await EmbeddingBatchStage.single(EmbeddingRequest(model: model, input: .string(text), extra: JSONObject()), upstream: upstream,
                                                          measures: nil, route: route)
        guard let values = routed.value.objectValue?["data"]?.arrayValue?.first?.objectValue?["embedding"]?.arrayValue else {
            throw GatewayError.internalFailure
        }
        let vector = values.compactMap { $0.doubleValue.map(Float.init) }
        let norm = vector.reduce(0) { $0 + $1 * $1 }.squareRoot()
        guard vector.count == values.count, norm > 0, norm.isFinite else { throw GatewayError.internalFailure }
        return vector.map { $0 / norm }
    }
}
