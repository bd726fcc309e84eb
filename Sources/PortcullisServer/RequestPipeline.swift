import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import PortcullisTLS

/// The request's journey, in order, in one place: the stages of ARCHITECTURE.md as values.
///
/// Stages 1–2 (edge: request id, trace context, size limits, IP policy; identity: key or
/// token → principal) and the route's permission run as middleware before any handler here
/// (see `Gateway.makeRouter`). Then, for a chat request (`serveChat`):
///
///  3. decode     bounded body → typed canonical request (errors name the parameter)
///  4. authorise  the credential's model allow-list
///  5. admission  rate limits, concurrency, the worst-case budget reservation (released if anything later fails)
///  6. guard in   the caller's guard policy as a cascade; personal data redacted or tokenised
///  7. transform  enforced system prompt, canary, spotlighting of untrusted content
///  8. cache      the exact cache: a hit is answered here (whole or replayed as a stream); a miss is stored after stage 13
///  9. schedule   not built yet; its stage goes here
/// 10–11. route, provider: model group → deployment, retries, fallbacks, circuit breakers; adapter
/// 12. guard out  output guards on the answer (a stream's chunks as they pass), placeholders restored
/// 13. settle     usage and cost charged to the grant
/// 14. audit      the request's record durable before stage 10 sends anything (`AuditStage`,
///                called there); its outcome once the response is complete (`AuditMiddleware`)
///     respond    encoded for the client's dialect; streams forwarded event by event
///
/// A stage that is off (no governance, no guardrails) is still a value and does nothing.
public struct RequestPipeline: Sendable {
    public let router: ModelRouter
    /// Largest request body accepted, in bytes.
    public let maximumBodyBytes: Int
    /// The state of the database, Redis and the control bus, for readiness.
    public let dependencies: @Sendable () -> DependencyState

    let authorise: AuthoriseStage
    let admission: AdmissionStage
    let guardIn: GuardInStage
    let transform: TransformStage
    let cache: CacheStage
    let embeddingBatch: EmbeddingBatchStage
    let route: RouteStage
    let guardOut: GuardOutStage
    let settle = SettleStage()
    let audit: AuditStage
    let anomaly: AnomalyStage

    /// - Parameters:
    ///   - governance: limits, budgets and usage accounting; nil serves without them (benchmark reference).
    ///   - guarding: input and output guardrails; nil runs none.
    ///   - audit: the audit log that records requests; nil records none.
    ///   - cache: the exact cache, its settings and the calls in flight (by default: no exact cache, de-duplication as configured by default).
    ///   - anomalies: the anomaly detector and its restraints (nil: no anomaly detection); `anomalyActions` each policy's own action.
    public init(router: ModelRouter, maximumBodyBytes: Int, governance: Governance? = nil, guarding: InputGuarding? = nil,
                audit: AuditLogs? = nil, cache: CacheWiring = CacheWiring(), residency: [ResidencyRule] = [],
                anomalies: AnomalyWiring? = nil, anomalyActions: [String: AnomalyAction] = [:],
                dependencies: @escaping @Sendable () -> DependencyState = { DependencyState() }) {
        self.router = router
        anomaly = AnomalyStage(wiring: anomalies, events: audit?.guardEvents, policyActions: anomalyActions)
        authorise = AuthoriseStage(residency: residency, router: router)
        self.maximumBodyBytes = maximumBodyBytes
        self.dependencies = dependencies
        admission = AdmissionStage(governance: governance, router: router)
        guardIn = GuardInStage(guarding: guarding)
        transform = TransformStage(guarding: guarding)
        self.cache = CacheStage(wiring: cache, router: router)
        route = RouteStage(router: router)
        embeddingBatch = EmbeddingBatchStage(route: route, settings: cache.settings)
        guardOut = GuardOutStage(guarding: guarding)
        self.audit = AuditStage(audit: audit)
    }

    // MARK: A chat request's journey

    /// Stages 4–14 for a chat request of either dialect, and the response.
    func serveChat(_ request: ChatRequest, bodySize: Int, dialect: WireDialect, cacheControl: String?,
                   context: GatewayRequestContext) async throws -> Response {
        var asked = request
        let directive = try CacheStage.directive(&asked, cacheControl: cacheControl)                               // 3. decode: the gateway's own cache field
        var exchange = ChatExchange(request: asked, dialect: dialect, context: context)
        exchange.cacheDirective = directive
        exchange.residency = try authorise.check(model: request.model, principal: exchange.principal, audit: exchange.audit,    // 4. authorise
                                                 measures: exchange.measures)
        let principal = exchange.principal, observed = AnomalyStage.Observed(request.model, context: context)
        try anomaly.admit(observed)                                                                                 // 5. admission: anomalies first,
        do {
            exchange.grant = try await admission.admit(model: request.model, principal: principal,                  //    then limits and budget
                                                       bodySize: bodySize, maxTokens: request.maxTokens)
        } catch {
            anomaly.outcome(of: error, observed)
            throw error
        }
        do {
            try await guardIn.inspect(&exchange)                                                                    // 6. guard in
            transform.apply(&exchange)                                                                              // 7. transform
            let plan = cache.plan(exchange)                                                                         // 8. cache
            if let plan, let hit = await cache.lookup(plan, exchange: exchange) { return try await cache.respond(hit, exchange: exchange) }
            try await audit.preparePayload(exchange)                                                                // 14. audit: the payload's key
            try await audit.beforeUpstream(exchange.audit)                                                          //     and the record, durable first
            if exchange.request.stream {
                let (routed, joined) = try await cache.stream(plan) { [route, exchange] in try await route.streamChat(exchange) }   // 10–11. route, provider (8. or join the identical stream)
                let taps = guardOut.streamTaps(exchange)                                                            // 12. guard out, as chunks pass
                var meter = settle.meter(for: routed, grant: exchange.grant, audit: exchange.audit, measures: exchange.measures,                 // 13. settle when it ends
                                         tokens: anomaly.tokenObserver(observed, policy: exchange.policy?.name))
                if joined {                                                                                         // charged through the meter, if at all
                    await cache.joined(exchange, usage: nil, deployment: routed.deployment) {}
                    if !cache.settings.chargeHits { meter = nil }
                }
                var response = StreamResponses.chat(routed, exchange: exchange, meter: meter, outputGuard: taps.guard, restorer: taps.restorer,
                                                    collector: StreamCollector.joining(cache.collector(for: plan, routed: routed, joined: joined),  // 8. cache it once complete
                                                                                       AuditStage.answerCollector(exchange)))                  // 14. and keep its payload
                CacheStage.mark(&response, plan: plan, joined: joined, exchange: exchange)
                return response
            }
            let (answer, joined) = try await cache.answer(plan) { [route, exchange] in try await route.chat(exchange.request, exchange) }  // 10–11. (8. or join the identical call)
            var verdict = guardOut.review(answer, exchange, retried: false)                                         // 12. guard out
            if case .retry(let retry, let previous) = verdict {                                                     // once more, when the format asks
                verdict = guardOut.review(try await route.chat(retry, exchange).adding(usageOf: previous), exchange, retried: true)
            }
            guard case .deliver(let routed, let blocked) = verdict else { throw GatewayError.internalFailure }   // a retried answer is always delivered
            if joined {
                await cache.joined(exchange, usage: routed.value.usage, deployment: routed.deployment) {
                    await settle.settle(routed, grant: exchange.grant, audit: exchange.audit, measures: exchange.measures)
                }
            } else {
                await settle.settle(routed, grant: exchange.grant, audit: exchange.audit, measures: exchange.measures)                           // 13. settle
                anomaly.tokens(routed.value.usage, observed, policy: exchange.policy?.name)
                if let plan, blocked == nil { await cache.store(routed, plan: plan) }                               // 8. cache what the client gets
            }
            AuditStage.capture(answer: routed.value, exchange: exchange)                                            // 14. the payload's answer
            var response = Self.respond(routed, exchange: exchange, blocked: blocked)                               // respond
            CacheStage.mark(&response, plan: plan, joined: joined, exchange: exchange)
            return response
        } catch {
            await exchange.grant?.release()
            anomaly.outcome(of: error, observed, policy: exchange.policy?.name)
            throw error
        }
    }

    // MARK: Routes

    /// `POST /v1/chat/completions`.
    public func chatCompletions(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                                                    // 3. decode
        return try await serveChat(try OpenAIWire.decodeChatRequest(body.json), bodySize: body.size, dialect: .openAI,
                                   cacheControl: request.headers[.cacheControl], context: context)
    }

    /// `POST /v1/messages` (Anthropic Messages API), served by any provider.
    public func messages(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                                                    // 3. decode
        return try await serveChat(try AnthropicWire.decodeRequest(body.json), bodySize: body.size, dialect: .anthropic,
                                   cacheControl: request.headers[.cacheControl], context: context)
    }

    /// `POST /v1/completions`: the same stages, the prompt strings guarded as user messages.
    public func completions(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                                                    // 3. decode
        var completion = try OpenAIWire.decodeCompletionRequest(body.json)
        let principal = context.principal, caller = principal.guardCaller(reportingTo: context.audit)
        let residency = try authorise.check(model: completion.model, principal: principal, audit: context.audit, measures: context.measures)    // 4. authorise
        let observed = AnomalyStage.Observed(completion.model, context: context)
        try anomaly.admit(observed)                                                                                 // 5. admission: anomalies first,
        let grant: Grant?
        do {
            grant = try await admission.admit(model: completion.model, principal: principal, bodySize: body.size,  //    then limits and budget
                                              maxTokens: completion.maxTokens)
        } catch {
            anomaly.outcome(of: error, observed)
            throw error
        }
        do {
            var output: OutputInspector?
            if let guarding = guardIn.guarding {                                                                    // 6–7. guard in, transform
                (completion, output) = try await guarding.check(completion, caller: caller, requestID: context.requestID)
            }
            try await audit.beforeUpstream(context.audit)                                                           // 14. audit: durable first
            let request = completion, upstream = Self.upstream(context)
            if request.stream {
                let routed = try await route.call(model: request.model, logger: context.logger, measures: context.measures,
                                                 operation: "text_completion", residency: residency) { deployment in    // 10–11. route, provider
                    try await RouteStage.prime(deployment: deployment) {
                        try await deployment.adapter.streamCompletion(request, target: deployment.target, context: upstream)
                    }
                }
                let meter = settle.meter(for: routed, grant: grant, audit: context.audit, measures: context.measures, tokens: anomaly.tokenObserver(observed))
                var response = StreamResponses.completion(routed, includeUsage: request.includeUsage, meter: meter, logger: context.logger)
                Self.addLimitHeaders(grant, to: &response.headers)
                return response
            }
            var routed = try await route.call(model: request.model, logger: context.logger, measures: context.measures,
                                               operation: "text_completion", residency: residency) { deployment in        // 10–11. route, provider
                try await deployment.adapter.completion(request, target: deployment.target, context: upstream)
            }
            routed.value = guardOut.review(completion: routed.value, output: output, model: request.model,         // 12. guard out
                                           caller: caller, requestID: context.requestID)
            let usage = await settle.settle(json: routed, grant: grant, audit: context.audit, measures: context.measures)                       // 13. settle
            anomaly.tokens(usage, observed)
            return Self.jsonResponse(routed.value, routed: routed, usage: usage, grant: grant)
        } catch {
            await grant?.release()
            anomaly.outcome(of: error, observed)
            throw error
        }
    }

    /// `POST /v1/embeddings`.
    public func embeddings(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                                                    // 3. decode
        let embedding = try OpenAIWire.decodeEmbeddingRequest(body.json)
        let residency = try authorise.check(model: embedding.model, principal: context.principal, audit: context.audit,   // 4. authorise
                                            measures: context.measures)
        let observed = AnomalyStage.Observed(embedding.model, context: context)
        try anomaly.admit(observed)                                                                                 // 5. admission: anomalies first,
        let grant: Grant?
        do {
            grant = try await admission.admit(model: embedding.model, principal: context.principal, bodySize: body.size, maxTokens: 0)
        } catch {
            anomaly.outcome(of: error, observed)
            throw error
        }
        do {
            try await audit.beforeUpstream(context.audit)                                                           // 14. audit: durable first
            let routed = try await embeddingBatch.embed(embedding, upstream: Self.upstream(context), measures: context.measures,  // 8. batched,
                                                        route: route, residency: residency)                                                                    // 10–11. route, provider
            let usage = await settle.settle(json: routed, grant: grant, audit: context.audit, measures: context.measures)                       // 13. settle
            anomaly.tokens(usage, observed)
            return Self.jsonResponse(routed.value, routed: routed, usage: usage, grant: grant)
        } catch {
            await grant?.release()
            anomaly.outcome(of: error, observed)
            throw error
        }
    }

    // MARK: Responses

    /// A whole chat answer in the client's dialect, with the routing, usage and limit headers.
    static func respond(_ routed: Routed<ChatCompletion>, exchange: ChatExchange, blocked: GuardCategory?) -> Response {
        let body: JSONValue
        switch exchange.dialect {
        case .openAI:
            body = OpenAIWire.encodeChatCompletion(routed.value)
        case .anthropic:
            body = AnthropicWire.encodeResponse(routed.value, model: routed.value.model.isEmpty ? exchange.request.model : routed.value.model)
        }
        var response = jsonResponse(body, routed: routed, usage: routed.value.usage, grant: exchange.grant)
        if let blocked { response.headers[HTTPField.Name("x-portcullis-guard-category")!] = blocked.rawValue }
        return response
    }

    static func addLimitHeaders(_ grant: Grant?, to headers: inout HTTPFields) {
        guard let grant else { return }
        for (name, value) in grant.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
    }

    // MARK: Stages

    /// Stage 3, decode: reads the body within the size limit and parses it; says where JSON is malformed.
    func decodeBody(_ request: Request) async throws -> (json: JSONValue, size: Int) {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > maximumBodyBytes {
            throw GatewayError.bodyTooLarge(limit: maximumBodyBytes)
        }
        let buffer = try await Self.collectBody(request, limit: maximumBodyBytes)
        do {
            return (try JSONParser.parse(buffer.readableBytesView), buffer.readableBytes)
        } catch {
            throw GatewayError.invalidJSON(error)
        }
    }

    /// The whole body within `limit` bytes. A body that cannot be read (a malformed chunk size,
    /// fewer bytes than its `Content-Length` before the client half-closed) is the client's
    /// error, a 400 with a stable code, never a 500.
    static func collectBody(_ request: Request, limit: Int) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw GatewayError.bodyTooLarge(limit: limit)
        } catch let error as GatewayError {
            throw error
        } catch {
            throw GatewayError.malformedBody
        }
    }

    /// What an adapter needs to know about the incoming request.
    static func upstream(_ context: GatewayRequestContext) -> UpstreamContext {
        UpstreamContext(requestID: context.requestID, traceparent: context.trace?.traceparent, logger: context.logger)
    }

    /// The JSON body plus routing, usage and limit headers.
    static func jsonResponse<Value>(_ value: JSONValue, routed: Routed<Value>, usage: Usage?, grant: Grant?) -> Response {
        var headers = HTTPFields()
        Self.addLimitHeaders(grant, to: &headers)
        headers[.contentType] = "application/json"
        RoutingHeaders.add(to: &headers, routed)
        if let usage {
            headers[HTTPField.Name("x-portcullis-cost")!] = DecimalText.format(routed.deployment.price.cost(of: usage), places: 8)
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: JSONWriter.buffer(value)))
    }

    // MARK: Models and health

    /// `GET /v1/models`.
    public func listModels(for principal: Principal) -> Response {
        let data = router.modelNames.filter(principal.mayUse(model:)).compactMap { router.groups[$0] }.map(modelObject)
        return Self.json(["object": "list", "data": .array(data)])
    }

    /// `GET /v1/models/{id}`.
    public func model(_ id: String, for principal: Principal) throws -> Response {
        guard let group = router.groups[id], principal.mayUse(model: id) else {
            throw GatewayError.modelNotFound(id, available: router.modelNames.filter(principal.mayUse(model:)))   // never the models it may not use
        }
        return Self.json(modelObject(group))
    }

    private func modelObject(_ group: ModelGroup) -> JSONValue {
        ["id": .string(group.name), "object": "model", "created": .integer(group.created), "owned_by": .string(group.ownedBy)]
    }

    /// `GET /health/ready`: ready when configuration is loaded and a deployment is healthy with its circuit not open.
    public func readiness(certificates: [CertificateLifetime] = []) -> Response {
        let deployments = router.allDeployments
        let selectable = deployments.filter { $0.isSelectable() }.count
        let state = dependencies()
        var body: JSONValue = ["status": selectable > 0 ? (state.isHealthy ? "ready" : "degraded") : "unavailable",
                               "healthy_deployments": .integer(Int64(selectable)), "deployments": .integer(Int64(deployments.count)),
                               "database": state.databaseReachable ? "ok" : "unreachable",
                               "shared_state": state.sharedStateDegraded ? "per-replica (Redis unreachable)" : "ok",
                               "control_bus": state.controlBusListening ? "ok" : "reconnecting"]
        if !certificates.isEmpty, case .object(var fields) = body {
            let now = Date()
            fields["certificates"] = .array(certificates.map { certificate in
                ["role": .string(certificate.role), "subject": .string(certificate.subject),
                 "days_left": .integer(Int64(certificate.daysLeft(now: now).rounded(.down)))]
            })
            body = .object(fields)
        }
        var response = Self.json(body)
        if selectable == 0 { response.status = .serviceUnavailable }
        return response
    }

    static func json(_ value: JSONValue) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: JSONWriter.buffer(value)))
    }
}
