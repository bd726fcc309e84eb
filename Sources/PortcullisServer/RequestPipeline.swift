import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting

/// The request's journey, in order, in one place.
///
/// Stages 1–2 (edge: request id, trace context, IP policy; identity: key or token) and the
/// route's permission run as middleware before any handler here — see `makeRouter`. Each
/// handler below then does, in order:
///
///  5. decode     bounded body → typed canonical request (errors name the parameter)
///  3–4.          the model allow list, then admission: rate limits, concurrency, the
///                worst-case budget reservation (released if anything later fails)
///  6. guard in   the caller's guard policy as a cascade (chat requests); 7. redact
///  8. transform  enforced system prompt, canary, spotlighting of untrusted content
/// 10. route      model group → deployment; retries, fallbacks, circuit breakers
/// 11. provider   the adapter translates canonical ⇄ provider wire format; a stream is
///                primed (first event received) inside routing, so failover is possible
///                until the client's first byte
/// 14. guard out  output guards on the answer (a stream is held back and inspected as it goes);
/// 12.            then tokenised placeholders are restored
/// 13. settle     usage and cost of the call (response headers, access log)
///     respond    encode for the client's dialect; streams are forwarded event by event
///
/// Stages still to come (cache, scheduling, audit) slot in
/// between these calls, in the order shown in ARCHITECTURE.md.
public struct RequestPipeline: Sendable {
    public let router: ModelRouter
    /// Largest request body accepted, in bytes.
    public let maximumBodyBytes: Int
    /// Limits, budgets and usage accounting; nil serves without them (benchmark reference).
    public let governance: Governance?
    /// Input guardrails; nil runs none.
    public let guarding: InputGuarding?
    /// The state of the database, Redis and the control bus, for readiness.
    public let dependencies: @Sendable () -> DependencyState

    public init(router: ModelRouter, maximumBodyBytes: Int, governance: Governance? = nil, guarding: InputGuarding? = nil,
                dependencies: @escaping @Sendable () -> DependencyState = { DependencyState() }) {
        self.router = router
        self.maximumBodyBytes = maximumBodyBytes
        self.governance = governance
        self.guarding = guarding
        self.dependencies = dependencies
    }

    // MARK: Routes

    /// `POST /v1/chat/completions`.
    public func chatCompletions(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                   // 5. decode
        let chat = try OpenAIWire.decodeChatRequest(body.json)
        return try await serveChat(chat, bodySize: body.size, dialect: .openAI, context: context)
    }

    /// `POST /v1/messages` (Anthropic Messages API), served by any provider.
    public func messages(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                   // 5. decode
        let chat = try AnthropicWire.decodeRequest(body.json)
        return try await serveChat(chat, bodySize: body.size, dialect: .anthropic, context: context)
    }

    /// `POST /v1/completions`.
    public func completions(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                   // 5. decode
        let decoded = try OpenAIWire.decodeCompletionRequest(body.json)
        let grant = try await admit(context, model: decoded.model, bodySize: body.size, maxTokens: decoded.maxTokens)   // 3–4. authorise, admit
        let upstream = upstreamContext(context)
        do {
            var completion = decoded
            var output: OutputInspector?
            if let guarding {                                                                                        // 6. guard in, 7. redact
                (completion, output) = try await guarding.check(decoded, caller: context.principal.guardCaller, requestID: context.requestID)
            }
            if completion.stream {
                let request = completion
                let routed = try await router.execute(model: request.model, logger: context.logger) { deployment in      // 10. route
                    try await Self.prime(deployment: deployment) {                                                       // 11. provider
                        try await deployment.adapter.streamCompletion(request, target: deployment.target, context: upstream)
                    }
                }
                let meter = grant.map { StreamMeter(grant: $0, price: routed.deployment.price) }                          // 13. settle at the end
                var response = StreamResponses.completion(routed, includeUsage: completion.includeUsage, meter: meter, logger: context.logger)
                Self.addLimitHeaders(grant, to: &response.headers)
                return response
            }
            let request = completion
            var routed = try await router.execute(model: request.model, logger: context.logger) { deployment in          // 10. route
                try await deployment.adapter.completion(request, target: deployment.target, context: upstream)          // 11. provider
            }
            if let output, let guarding {                                                                              // 12. guard out
                routed.value = guarding.review(completion: routed.value, inspector: output, model: request.model,
                                               caller: context.principal.guardCaller, requestID: context.requestID)
            }
            return await settleAndRespond(routed, grant: grant)                                                         // 13. settle
        } catch {
            await grant?.release()
            throw error
        }
    }

    /// `POST /v1/embeddings`.
    public func embeddings(_ request: Request, context: GatewayRequestContext) async throws -> Response {
        let body = try await decodeBody(request)                                   // 5. decode
        let embedding = try OpenAIWire.decodeEmbeddingRequest(body.json)
        let grant = try await admit(context, model: embedding.model, bodySize: body.size, maxTokens: 0)                   // 3–4. authorise, admit
        let upstream = upstreamContext(context)
        do {
            let routed = try await router.execute(model: embedding.model, logger: context.logger) { deployment in        // 10. route
                try await deployment.adapter.embeddings(embedding, target: deployment.target, context: upstream)        // 11. provider
            }
            return await settleAndRespond(routed, grant: grant)                                                         // 13. settle
        } catch {
            await grant?.release()
            throw error
        }
    }

    // MARK: Chat, both dialects

    private func serveChat(_ request: ChatRequest, bodySize: Int, dialect: WireDialect, context: GatewayRequestContext) async throws -> Response {
        let grant = try await admit(context, model: request.model, bodySize: bodySize, maxTokens: request.maxTokens)  // 3–4. authorise, admit
        let upstream = upstreamContext(context)
        do {
            let guarded = try await guarding?.check(request, caller: context.principal.guardCaller, requestID: context.requestID)   // 6. guard in, 7. redact
            let chat = guarded?.request ?? request
            let restorer = guarded?.vault.map(ChunkRestorer.init)
            let caller = context.principal.guardCaller, requestID = context.requestID, guarding = self.guarding
            let outputGuard = guarded?.output.map { inspector in
                ChunkGuard(inspector: inspector, format: chat.responseFormat) { found in
                    guarding?.record(findings: found, policy: inspector.policy.name, model: chat.model, caller: caller, requestID: requestID)
                }
            }
            if chat.stream {
                let routed = try await router.execute(model: chat.model, logger: context.logger) { deployment in         // 10. route
                    try await Self.prime(deployment: deployment) {                                                       // 11. provider
                        try await deployment.adapter.streamChat(chat, target: deployment.target, context: upstream)
                    }
                }
                let meter = grant.map { StreamMeter(grant: $0, price: routed.deployment.price) }                                                    // 13. settle at the end
                var response: Response
                switch dialect {                                                                                         // respond
                case .openAI:
                    response = StreamResponses.openAIChat(routed, includeUsage: chat.includeUsage, meter: meter, restorer: restorer,
                                                          outputGuard: outputGuard, logger: context.logger)
                case .anthropic:
                    response = StreamResponses.anthropicChat(routed, model: chat.model, meter: meter, restorer: restorer,
                                                             outputGuard: outputGuard, logger: context.logger)
                }
                Self.addLimitHeaders(grant, to: &response.headers)
                return response
            }
            var routed = try await router.execute(model: chat.model, logger: context.logger) { deployment in             // 10. route
                try await deployment.adapter.chat(chat, target: deployment.target, context: upstream)                   // 11. provider
            }
            var blockedCategory: GuardCategory?
            if let inspector = guarded?.output, let guarding, inspector.policy.output.guards.contains("format") {         // 14. format
                (routed, blockedCategory) = try await enforceFormat(routed, request: chat, inspector: inspector, guarding: guarding,
                                                                    context: context, upstream: upstream)
            }
            if let inspector = guarded?.output, let guarding {                                                             // 14. guard out
                let reviewed = guarding.review(routed.value, inspector: inspector, caller: context.principal.guardCaller, requestID: context.requestID)
                routed.value = reviewed.completion
                blockedCategory = reviewed.blocked ?? blockedCategory
            }
            if let vault = guarded?.vault { routed.value = vault.restore(routed.value) }                                 // 12. restore placeholders
            var characters = 0
            for choice in routed.value.choices { characters += choice.message.content?.text.count ?? 0 }
            await grant?.settle(usage: routed.value.usage, price: routed.deployment.price,                               // 13. settle
                                estimatedOutputTokens: Int64(characters / 4))
            var response: Response
            switch dialect {                                                                                             // respond
            case .openAI:
                response = jsonResponse(OpenAIWire.encodeChatCompletion(routed.value), routed: routed, usage: routed.value.usage, grant: grant)
            case .anthropic:
                let model = routed.value.model.isEmpty ? chat.model : routed.value.model
                response = jsonResponse(AnthropicWire.encodeResponse(routed.value, model: model), routed: routed, usage: routed.value.usage, grant: grant)
            }
            if let blockedCategory { response.headers[HTTPField.Name("x-portcullis-guard-category")!] = blockedCategory.rawValue }
            return response
        } catch {
            await grant?.release()
            throw error
        }
    }

    /// Stage 14 for the answer's shape: when the request's `response_format` asks for JSON (or
    /// JSON valid against a schema), each choice is checked; a failing answer is asked for once
    /// more (the policy's `format_retry`) with the problem named, and withheld
    /// (`finish_reason: content_filter`) if it still fails. Both calls are settled.
    private func enforceFormat(_ routed: Routed<ChatCompletion>, request: ChatRequest, inspector: OutputInspector, guarding: InputGuarding,
                               context: GatewayRequestContext, upstream: UpstreamContext) async throws
        -> (Routed<ChatCompletion>, GuardCategory?) {
        func problems(_ completion: ChatCompletion) -> [(index: Int, problem: String)] {
            completion.choices.indices.compactMap { index in
                let message = completion.choices[index].message
                guard message.toolCalls.isEmpty else { return nil }   // a tool call is not the answer
                return FormatCheck.problem(in: message.content?.text ?? "", format: request.responseFormat).map { (index, $0) }
            }
        }
        func finding(_ problem: String) -> GuardFinding {
            GuardFinding(guardName: "format", category: .format, risk: .medium, score: 1, reason: problem)
        }
        var routed = routed
        var failing = problems(routed.value)
        guard let first = failing.first else { return (routed, nil) }
        let policy = inspector.policy.name
        if inspector.policy.output.formatRetry {
            guarding.record(findings: [(finding(first.problem), .flag)], policy: policy, model: request.model,
                                   caller: context.principal.guardCaller, requestID: context.requestID)
            var retry = request
            retry.messages.append(ChatMessage(role: .assistant, content: .text(routed.value.choices[first.index].message.content?.text ?? "")))
            retry.messages.append(ChatMessage(role: .user, content: .text(
                "Your previous reply was not accepted: \(first.problem). Reply again with only the JSON that was asked for: no other text, no code fences.")))
            let previousUsage = routed.value.usage
            routed = try await router.execute(model: retry.model, logger: context.logger) { deployment in
                try await deployment.adapter.chat(retry, target: deployment.target, context: upstream)
            }
            if let earlier = previousUsage {
                let later = routed.value.usage ?? Usage(promptTokens: 0, completionTokens: 0)
                routed.value.usage = Usage(promptTokens: earlier.promptTokens + later.promptTokens,
                                           completionTokens: earlier.completionTokens + later.completionTokens, details: later.details)
            }
            failing = problems(routed.value)
        }
        guard !failing.isEmpty else { return (routed, nil) }
        for (index, _) in failing {
            routed.value.choices[index].message.content = nil
            routed.value.choices[index].finishReason = .contentFilter
        }
        guarding.record(findings: failing.map { (finding($0.problem), .block) }, policy: policy, model: request.model,
                               caller: context.principal.guardCaller, requestID: context.requestID)
        return (routed, .format)
    }

    /// Stage 13 for a passed-through JSON answer: settle at the usage it reports, then respond.
    private func settleAndRespond(_ routed: Routed<JSONValue>, grant: Grant?) async -> Response {
        let usage = try? OpenAIWire.decodeUsage(routed.value.objectValue?["usage"])
        await grant?.settle(usage: usage, price: routed.deployment.price)
        return jsonResponse(routed.value, routed: routed, usage: usage, grant: grant)
    }

    /// Stages 3–4: may this caller use the model, and is there room under its limits and budgets?
    func admit(_ context: GatewayRequestContext, model: String, bodySize: Int, maxTokens: Int?) async throws -> Grant? {
        let principal = context.principal
        guard principal.mayUse(model: model) else {
            throw GatewayError(status: 403, kind: .permission, code: .modelNotAllowed,
                               message: "This credential may not use the model '\(GatewayError.echo(model))'.", param: "model")
        }
        guard let governance else { return nil }
        return try await governance.admit(principal, model: model, prices: router.groups[model]?.deployments.map(\.price) ?? [], promptBytes: bodySize, maxTokens: maxTokens)
    }

    static func addLimitHeaders(_ grant: Grant?, to headers: inout HTTPFields) {
        guard let grant else { return }
        for (name, value) in grant.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
    }

    // MARK: Stages

    /// Stage 5: reads the body within the size limit and parses it; says where JSON is malformed.
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
    private func upstreamContext(_ context: GatewayRequestContext) -> UpstreamContext {
        UpstreamContext(requestID: context.requestID, traceparent: context.trace?.traceparent, logger: context.logger)
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

    /// Stage 13 and the response: the JSON body plus routing and usage headers.
    private func jsonResponse<Value>(_ value: JSONValue, routed: Routed<Value>, usage: Usage?, grant: Grant?) -> Response {
        var headers = HTTPFields()
        Self.addLimitHeaders(grant, to: &headers)
        headers[.contentType] = "application/json"
        RoutingHeaders.add(to: &headers, routed)
        if let usage {
            headers[HTTPField.Name("x-portcullis-cost")!] = String(format: "%.8f", routed.deployment.price.cost(of: usage))
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
    public func readiness() -> Response {
        let deployments = router.allDeployments
        let selectable = deployments.filter { $0.isSelectable() }.count
        let state = dependencies()
        let body: JSONValue = ["status": selectable > 0 ? (state.isHealthy ? "ready" : "degraded") : "unavailable",
                               "healthy_deployments": .integer(Int64(selectable)), "deployments": .integer(Int64(deployments.count)),
                               "database": state.databaseReachable ? "ok" : "unreachable",
                               "shared_state": state.sharedStateDegraded ? "per-replica (Redis unreachable)" : "ok",
                               "control_bus": state.controlBusListening ? "ok" : "reconnecting"]
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

/// What readiness reports of the gateway's dependencies. A degraded gateway still serves
/// (fail-open keys, per-replica limits) but says so.
public struct DependencyState: Sendable {
    public var databaseReachable = true
    public var sharedStateDegraded = false
    public var controlBusListening = true

    public init(databaseReachable: Bool = true, sharedStateDegraded: Bool = false, controlBusListening: Bool = true) {
        self.databaseReachable = databaseReachable
        self.sharedStateDegraded = sharedStateDegraded
        self.controlBusListening = controlBusListening
    }

    public var isHealthy: Bool { databaseReachable && !sharedStateDegraded && controlBusListening }
}
