import Foundation
import Hummingbird
import Instrumentation
import Logging
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import Tracing

/// One chat request's state through the stages: what is asked, by whom, and what each stage
/// decided for the ones after it (the grant, the guard policy, the placeholders to restore,
/// the output guards). Stages read and change it in order; nothing else carries their results.
struct ChatExchange: Sendable {
    var request: ChatRequest
    /// The request as the client sent it (less the gateway's own `cache` field): stage 8's key.
    let asked: ChatRequest
    /// What the request asks of the cache (`Cache-Control`, the body's `cache`).
    var cacheDirective = CacheDirective()
    let dialect: WireDialect
    let principal: Principal
    /// What an adapter needs to know about the incoming request (its id, trace and logger).
    let upstream: UpstreamContext
    /// Stage 5's admission: limits and budget held until settled or released.
    var grant: Grant?
    /// Stage 6's policy and the placeholders of tokenised personal data.
    var policy: GuardPolicy?
    var vault: PlaceholderVault?
    /// Stage 7's output guards for the answer (nil: none).
    var output: OutputInspector?
    /// What stage 14 records of the request (nil: not recorded).
    let audit: RequestAudit?
    /// Stage 4's residency rules for the caller: routing uses only deployments that satisfy them (nil: any).
    var residency: Residency?
    /// What the request's metrics record (nil: none).
    let measures: RequestMeasures?

    init(request: ChatRequest, dialect: WireDialect, principal: Principal, upstream: UpstreamContext, audit: RequestAudit? = nil,
         measures: RequestMeasures? = nil) {
        self.request = request
        self.asked = request
        self.dialect = dialect
        self.principal = principal
        self.upstream = upstream
        self.audit = audit
        self.measures = measures
    }

    var requestID: String { upstream.requestID }
    var logger: Logger { upstream.logger }
    /// The caller as the guards see it; their decisions also reach the request's audit record.
    var guardCaller: GuardCaller { principal.guardCaller(reportingTo: audit) }

    init(request: ChatRequest, dialect: WireDialect, context: GatewayRequestContext) {
        self.init(request: request, dialect: dialect, principal: context.principal, upstream: RequestPipeline.upstream(context), audit: context.audit,
                  measures: context.measures)
    }
}

/// Stage 4, authorise: may this credential use the model? (The route's permission ran as
/// middleware before the body was read.)
struct AuthoriseStage: Sendable {
    /// Where callers' traffic may be served (routing honours what `check` returns).
    var residency: [ResidencyRule] = []
    /// The routing table, to refuse here a caller no deployment may serve.
    var router: ModelRouter?

    /// The model allow-list; returns the residency rules that name the caller (nil: none).
    @discardableResult
    func check(model: String, principal: Principal, audit: RequestAudit? = nil, measures: RequestMeasures? = nil) throws -> Residency? {
        audit?.model(model)
        measures?.model(model)
        guard principal.mayUse(model: model) else {
            throw GatewayError(status: 403, kind: .permission, code: .modelNotAllowed,
                               message: "This credential may not use the model '\(GatewayError.echo(model))'.", param: "model")
        }
        guard !residency.isEmpty, let applying = Residency.of(residency, teamID: principal.teamID, keyID: principal.keyID, userID: principal.userID) else {
            return nil
        }
        if let refusal = router?.residencyRefusal(model: model, residency: applying) {
            throw refusal
        }
        return applying
    }
}

/// Stage 5, admission: rate limits, concurrency and the worst-case budget reservation, priced
/// at the model's most expensive deployment. Without governance (the benchmark's reference
/// core) it admits everything and holds nothing.
struct AdmissionStage: Sendable {
    let governance: Governance?
    let router: ModelRouter

    func admit(model: String, principal: Principal, bodySize: Int, maxTokens: Int?) async throws -> Grant? {
        guard let governance else { return nil }
        return try await governance.admit(principal, model: model, prices: router.groups[model]?.deployments.map(\.price) ?? [],
                                          promptBytes: bodySize, maxTokens: maxTokens)
    }
}

/// Stage 6, guard in: the caller's guard policy as a cascade; a block is the client's 400, and
/// personal data is redacted where the policy says so. Off: the request passes unchanged.
struct GuardInStage: Sendable {
    let guarding: InputGuarding?

    func inspect(_ exchange: inout ChatExchange) async throws {
        guard let guarding else { return }
        // Known before the check, so that a refusal is judged (anomalies) under the policy that applied.
        exchange.policy = guarding.policy(for: exchange.request, caller: exchange.guardCaller)
        let guarded = try await guarding.check(exchange.request, caller: exchange.guardCaller, requestID: exchange.requestID)
        exchange.request = guarded.request
        exchange.policy = guarded.policy
        exchange.vault = guarded.vault
    }
}

/// Stage 7, transform: the policy's enforced system prompt and canary, spotlighting of
/// untrusted content, and the output guards the answer will need.
struct TransformStage: Sendable {
    let guarding: InputGuarding?

    func apply(_ exchange: inout ChatExchange) {
        guard let guarding, let policy = exchange.policy else { return }
        let transformed = guarding.transform(InputGuarding.Guarded(request: exchange.request, policy: policy, vault: exchange.vault))
        exchange.request = transformed.request
        exchange.output = transformed.output
    }
}

/// Stages 10–11, route and provider: model group → deployment with retries, fallbacks and
/// circuit breakers; the adapter translates to the provider's wire format. A stream is primed
/// (its first event received) inside routing, so failover is possible until the client's first byte.
struct RouteStage: Sendable {
    let router: ModelRouter

    func chat(_ request: ChatRequest, _ exchange: ChatExchange) async throws -> Routed<ChatCompletion> {
        let upstream = exchange.upstream
        return try await call(model: request.model, logger: exchange.logger, measures: exchange.measures, residency: exchange.residency) { deployment in
            try await deployment.adapter.chat(request, target: deployment.target, context: upstream)
        }
    }

    func streamChat(_ exchange: ChatExchange) async throws -> Routed<PrimedStream<ChatChunk>> {
        let request = exchange.request, upstream = exchange.upstream
        return try await call(model: request.model, logger: exchange.logger, measures: exchange.measures, residency: exchange.residency) { deployment in
            try await Self.prime(deployment: deployment) {
                try await deployment.adapter.streamChat(request, target: deployment.target, context: upstream)
            }
        }
    }

    /// Any call by the model it names; each upstream attempt is timed into `measures` and its
    /// deployment's metrics, and, when the request is traced, recorded as a client span whose
    /// `traceparent` the attempt sends upstream. `operation` names the GenAI operation of those spans.
    func call<Value: Sendable>(model: String, logger: Logger, measures: RequestMeasures?, operation name: String = "chat",
                               residency: Residency? = nil, _ operation: (Deployment) async throws -> Value) async throws -> Routed<Value> {
        guard let measures else { return try await router.execute(model: model, logger: logger, residency: residency, operation) }
        let parent = InstrumentationContext.current   // the request's span, when tracing is on
        let routed = try await router.execute(model: model, logger: logger, residency: residency) { deployment in
            let start = ContinuousClock.now
            guard let parent else {
                do {
                    let value = try await operation(deployment)
                    Self.attempted(deployment, outcome: "success", since: start, measures)
                    return value
                } catch let failure as UpstreamFailure {
                    Self.attempted(deployment, outcome: failure.outcomeLabel, since: start, measures)
                    throw failure
                }
            }
            let span = Self.attemptSpan(deployment, operation: name, parent: parent)
            do {
                let value = try await UpstreamTrace.$traceparent.withValue(GenAI.traceparent(of: span.context, tracer: InstrumentationSystem.tracer)) {
                    try await operation(deployment)
                }
                Self.attempted(deployment, outcome: "success", since: start, measures)
                span.end()
                return value
            } catch let failure as UpstreamFailure {
                Self.attempted(deployment, outcome: failure.outcomeLabel, since: start, measures)
                span.attributes["error.type"] = failure.outcomeLabel
                if case .status(let code) = failure.reason { span.attributes["http.response.status_code"] = code }
                span.setStatus(SpanStatus(code: .error, message: failure.message))
                span.end()
                throw failure
            } catch {
                span.attributes["error.type"] = "\(type(of: error))"
                span.setStatus(SpanStatus(code: .error))
                span.end()
                throw error
            }
        }
        measures.metrics.recordRouting(model: measures.modelLabel, servedBy: routed.group, attempts: routed.attempts)
        return routed
    }

    /// A client span for one upstream attempt (the conventions' `{operation} {model}` name); it
    /// covers the whole answer, or a stream up to its first event.
    static func attemptSpan(_ deployment: Deployment, operation: String, parent: InstrumentationContext) -> any Span {
        let target = deployment.target
        let span = InstrumentationSystem.tracer.startSpan("\(operation) \(target.upstreamModel)", context: parent, ofKind: .client)
        span.attributes["gen_ai.operation.name"] = operation
        span.attributes["gen_ai.provider.name"] = GenAI.providerName(target.provider)
        span.attributes["gen_ai.request.model"] = target.upstreamModel
        span.attributes["portcullis.deployment"] = target.name
        if !target.apiBase.isEmpty { span.attributes["server.address"] = GenAI.host(of: target.apiBase) }
        return span
    }

    static func attempted(_ deployment: Deployment, outcome: String, since start: ContinuousClock.Instant, _ measures: RequestMeasures) {
        let seconds = RequestMetricsMiddleware.seconds(since: start)
        measures.attempted(seconds: seconds)
        measures.metrics.recordAttempt(deployment: deployment.name, provider: deployment.target.provider.rawValue, outcome: outcome, seconds: seconds)
    }

    /// Opens a stream and receives its first event within the deployment's first-byte limit;
    /// a stream that ends before any event counts as a failed attempt.
    static func prime<Element: Sendable>(deployment: Deployment,
                                         _ open: @escaping @Sendable () async throws -> EventStream<Element>) async throws -> PrimedStream<Element> {
        let name = deployment.name
        do {
            return try await UpstreamHTTPClient.withTimeLimit(seconds: deployment.target.timeouts.firstByte, phase: "first byte", deployment: name) {
                guard let primed = try await PrimedStream.prime(try await open()) else {
                    throw UpstreamFailure(reason: .malformed, message: "the stream ended before its first event", deployment: name)
                }
                return primed
            }
        } catch let error as UpstreamFailure {
            throw error
        } catch let error as GatewayError {
            throw error
        } catch {
            throw UpstreamHTTPClient.classify(error, deployment: deployment.name)
        }
    }
}

/// Stage 12, guard out: the policy's output guards on the answer, then the tokenised
/// placeholders restored. For a whole answer it returns what to do: deliver it, or ask once
/// more when it is not the JSON `response_format` asked for (the policy's `format_retry`).
/// For a stream it gives the chunk guard and restorer to apply as chunks pass.
struct GuardOutStage: Sendable {
    let guarding: InputGuarding?

    enum Verdict {
        /// The answer to send, and the category of any block applied to it.
        case deliver(Routed<ChatCompletion>, blocked: GuardCategory?)
        /// Ask again with this request; the answer so far is `previous` (its usage counts too).
        case retry(ChatRequest, previous: Routed<ChatCompletion>)
    }

    func review(_ routed: Routed<ChatCompletion>, _ exchange: ChatExchange, retried: Bool) -> Verdict {
        var routed = routed
        var blocked: GuardCategory?
        if let guarding, let inspector = exchange.output {
            if inspector.policy.output.guards.contains("format") {
                let failing = Self.formatProblems(routed.value, format: exchange.request.responseFormat)
                if let first = failing.first {
                    let caller = exchange.guardCaller, model = exchange.request.model
                    if inspector.policy.output.formatRetry && !retried {
                        guarding.record(findings: [(Self.finding(first.problem), .flag)], policy: inspector.policy.name, model: model,
                                        caller: caller, requestID: exchange.requestID)
                        var retry = exchange.request
                        retry.messages.append(ChatMessage(role: .assistant, content: .text(routed.value.choices[first.index].message.content?.text ?? "")))
                        retry.messages.append(ChatMessage(role: .user, content: .text(
                            "Your previous reply was not accepted: \(first.problem). Reply again with only the JSON that was asked for: no other text, no code fences.")))
                        return .retry(retry, previous: routed)
                    }
                    for (index, _) in failing {
                        routed.value.choices[index].message.content = nil
                        routed.value.choices[index].finishReason = .contentFilter
                    }
                    guarding.record(findings: failing.map { (Self.finding($0.problem), .block) }, policy: inspector.policy.name, model: model,
                                    caller: caller, requestID: exchange.requestID)
                    blocked = .format
                }
            }
            let reviewed = guarding.review(routed.value, inspector: inspector, caller: exchange.guardCaller, requestID: exchange.requestID)
            routed.value = reviewed.completion
            blocked = reviewed.blocked ?? blocked
        }
        if let vault = exchange.vault { routed.value = vault.restore(routed.value) }
        return .deliver(routed, blocked: blocked)
    }

    /// The guard and restorer a stream's chunks pass through (nil: none needed).
    func streamTaps(_ exchange: ChatExchange) -> (guard: ChunkGuard?, restorer: ChunkRestorer?) {
        let restorer = exchange.vault.map(ChunkRestorer.init)
        guard let guarding, let inspector = exchange.output else { return (nil, restorer) }
        let caller = exchange.guardCaller, requestID = exchange.requestID, model = exchange.request.model
        let chunkGuard = ChunkGuard(inspector: inspector, format: exchange.request.responseFormat) { found in
            guarding.record(findings: found, policy: inspector.policy.name, model: model, caller: caller, requestID: requestID)
        }
        return (chunkGuard, restorer)
    }

    /// Stage 12 for a whole legacy completion: each choice's `text` inspected.
    func review(completion answer: JSONValue, output: OutputInspector?, model: String, caller: GuardCaller, requestID: String) -> JSONValue {
        guard let guarding, let output else { return answer }
        return guarding.review(completion: answer, inspector: output, model: model, caller: caller, requestID: requestID)
    }

    /// The choices that are not the JSON (or schema-valid JSON) `format` asks for; tool calls are not answers.
    static func formatProblems(_ completion: ChatCompletion, format: ResponseFormat?) -> [(index: Int, problem: String)] {
        completion.choices.indices.compactMap { index in
            let message = completion.choices[index].message
            guard message.toolCalls.isEmpty else { return nil }
            return FormatCheck.problem(in: message.content?.text ?? "", format: format).map { (index, $0) }
        }
    }

    static func finding(_ problem: String) -> GuardFinding {
        GuardFinding(guardName: "format", category: .format, risk: .medium, score: 1, reason: problem)
    }
}

/// Stage 13, settle: the call's real usage and cost charged to the grant (estimated from the
/// answer's characters when the provider reported none), and told to the request's audit
/// record; a stream settles through its meter when it ends, however it ends.
struct SettleStage: Sendable {
    func settle(_ routed: Routed<ChatCompletion>, grant: Grant?, audit: RequestAudit?, measures: RequestMeasures?) async {
        audit?.served(deployment: routed.deployment.name, provider: routed.deployment.target.provider.rawValue)
        let usage = routed.value.usage
        guard let grant else { return Self.report(usage, of: routed, to: measures) }
        let characters = routed.value.choices.reduce(0) { $0 + ($1.message.content?.text.count ?? 0) }
        let settlement = await grant.settle(usage: usage, price: routed.deployment.price, outputCharacters: characters)
        Self.report(settlement, to: audit)
        Self.report(settlement, cached: usage?.cachedInputTokens ?? 0, of: routed.deployment, to: measures)
    }

    /// For an answer passed through as JSON: settled at the usage it reports, returned for the headers.
    func settle(json routed: Routed<JSONValue>, grant: Grant?, audit: RequestAudit?, measures: RequestMeasures?) async -> Usage? {
        audit?.served(deployment: routed.deployment.name, provider: routed.deployment.target.provider.rawValue)
        let usage = try? OpenAIWire.decodeUsage(routed.value.objectValue?["usage"])
        guard let grant else {
            Self.report(usage, of: routed, to: measures)
            return usage
        }
        let settlement = await grant.settle(usage: usage, price: routed.deployment.price)
        Self.report(settlement, to: audit)
        Self.report(settlement, cached: usage?.cachedInputTokens ?? 0, of: routed.deployment, to: measures)
        return usage
    }

    /// The meter that settles a stream when it ends; `tokens` is told the tokens it was charged
    /// (the anomaly detection's token measure).
    func meter<Value>(for routed: Routed<Value>, grant: Grant?, audit: RequestAudit?, measures: RequestMeasures?,
                      tokens: (@Sendable (Int64) -> Void)? = nil) -> StreamMeter? {
        audit?.served(deployment: routed.deployment.name, provider: routed.deployment.target.provider.rawValue)
        let deployment = routed.deployment
        return grant.map {
            StreamMeter(grant: $0, price: deployment.price) { settlement in
                Self.report(settlement, to: audit)
                Self.report(settlement, cached: 0, of: deployment, to: measures)
                tokens?(settlement.promptTokens + settlement.completionTokens)
            }
        }
    }

    static func report(_ settlement: Settlement?, to audit: RequestAudit?) {
        guard let settlement, let audit else { return }
        audit.settled(promptTokens: Int(settlement.promptTokens), completionTokens: Int(settlement.completionTokens), costMicros: settlement.costMicros)
    }

    /// The settled tokens and cost, to the metrics.
    static func report(_ settlement: Settlement?, cached: Int, of deployment: Deployment, to measures: RequestMeasures?) {
        guard let settlement, let measures else { return }
        measures.settled(deployment: deployment.name, provider: deployment.target.provider.rawValue,
                         input: settlement.promptTokens, output: settlement.completionTokens, cached: Int64(cached), costMicros: settlement.costMicros)
    }

    /// Without governance nothing is charged; the usage the provider reported is still counted.
    static func report<Value>(_ usage: Usage?, of routed: Routed<Value>, to measures: RequestMeasures?) {
        guard let usage, let measures else { return }
        measures.settled(deployment: routed.deployment.name, provider: routed.deployment.target.provider.rawValue,
                         input: Int64(usage.promptTokens), output: Int64(usage.completionTokens), cached: Int64(usage.cachedInputTokens), costMicros: 0)
    }
}

/// Stage 14, audit: the request's record is made durable before stage 10 sends anything
/// upstream (failing closed, a record that cannot be written refuses the request); its outcome
/// follows from `AuditMiddleware` once the response is complete. Off: nothing is recorded.
struct AuditStage: Sendable {
    let audit: AuditLogs?

    func beforeUpstream(_ trail: RequestAudit?) async throws {
        guard let audit, let trail else { return }
        try await audit.recordIntent(trail)
    }

    /// When the caller's policy stores payloads: the subject's data key now (a key service
    /// that is down refuses the request here when failing closed), and the request as kept —
    /// as the client sent it (`full`), or as the provider will get it with personal data
    /// redacted (`redacted`).
    func preparePayload(_ exchange: ChatExchange) async throws {
        guard let audit, let trail = exchange.audit else { return }
        try await audit.preparePayload(trail, policy: exchange.policy?.name) { mode in
            mode == .redacted
                ? PIIDetector.redactingStrings(in: OpenAIWire.encodeChatRequest(exchange.request, upstreamModel: exchange.request.model))
                : OpenAIWire.encodeChatRequest(exchange.asked, upstreamModel: exchange.asked.model)
        }
    }

    /// The answer as the client got it, kept with the payload (redacted as its mode says).
    static func capture(answer: ChatCompletion, exchange: ChatExchange) {
        guard let trail = exchange.audit, let mode = trail.payloadMode else { return }
        let encoded = OpenAIWire.encodeChatCompletion(answer)
        trail.capture(answer: mode == .redacted ? PIIDetector.redactingStrings(in: encoded) : encoded)
    }

    /// Assembles a streamed answer for the payload (nil when no payload is kept).
    static func answerCollector(_ exchange: ChatExchange) -> StreamCollector? {
        guard exchange.audit?.payloadMode != nil else { return nil }
        return StreamCollector { completion in capture(answer: completion, exchange: exchange) }
    }
}

extension Routed where Value == ChatCompletion {
    /// This answer with `earlier`'s usage added: both calls are charged.
    func adding(usageOf earlier: Routed<ChatCompletion>) -> Routed<ChatCompletion> {
        guard let first = earlier.value.usage else { return self }
        var routed = self
        let later = value.usage ?? Usage(promptTokens: 0, completionTokens: 0)
        routed.value.usage = Usage(promptTokens: first.promptTokens + later.promptTokens,
                                   completionTokens: first.completionTokens + later.completionTokens, details: later.details)
        return routed
    }
}
