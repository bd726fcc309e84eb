import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import Logging
import NIOCore
import PortcullisCore
import Synchronization

/// A local stand-in for OpenAI and Anthropic with controllable latency, pacing, errors,
/// hangs and connection resets. Tests and benchmarks use it; operators rehearse failover with it.
public final class MockUpstream: Sendable {
    private struct State {
        var behaviour: MockBehaviour
        var requests: [RecordedRequest] = []
        var counter = 0
    }

    private let state: Mutex<State>
    /// `created` timestamp in every response, fixed so streams are byte-for-byte repeatable.
    public static let created: Int64 = 1_700_000_000

    public init(behaviour: MockBehaviour = MockBehaviour()) {
        self.state = Mutex(State(behaviour: behaviour))
    }

    /// The current behaviour.
    public var behaviour: MockBehaviour { state.withLock { $0.behaviour } }

    /// Replaces the behaviour.
    public func setBehaviour(_ behaviour: MockBehaviour) { state.withLock { $0.behaviour = behaviour } }

    /// Requests received so far.
    public var requests: [RecordedRequest] { state.withLock { $0.requests } }

    /// Forgets recorded requests.
    public func clearRequests() { state.withLock { $0.requests.removeAll() } }

    /// Records a request and decides, under one lock, whether it gets an injected error.
    private func admit(_ record: RecordedRequest) -> (MockBehaviour, injectError: Bool, sequence: Int) {
        state.withLock { state in
            state.requests.append(record)
            if state.requests.count > 10_000 { state.requests.removeFirst(state.requests.count - 10_000) }
            state.counter += 1
            var inject = false
            var behaviour = state.behaviour
            if !state.behaviour.replies.isEmpty {
                behaviour.reply = state.behaviour.replies.removeFirst()
                behaviour.replies = []
            }
            if state.behaviour.failNext > 0 {
                state.behaviour.failNext -= 1
                inject = true
            } else if state.behaviour.errorRate > 0, Double.random(in: 0..<1) < state.behaviour.errorRate {
                inject = true
            }
            return (behaviour, inject, state.counter)
        }
    }

    /// The mock's HTTP routes.
    public func makeRouter() -> Router<MockRequestContext> {
        let router = Router(context: MockRequestContext.self)
        router.post("/v1/chat/completions") { request, context in try await self.handle(request, context, api: .openAIChat) }
        router.post("/v1/completions") { request, context in try await self.handle(request, context, api: .openAICompletion) }
        router.post("/v1/embeddings") { request, context in try await self.handle(request, context, api: .openAIEmbedding) }
        router.post("/v1/moderations") { request, context in try await self.handle(request, context, service: .openAIModeration) }
        router.post("/contentsafety/text:shieldPrompt") { request, context in try await self.handle(request, context, service: .azureShield) }
        router.post("/contentsafety/text:analyze") { request, context in try await self.handle(request, context, service: .azureAnalyze) }
        router.post("/contentsafety/image:analyze") { request, context in try await self.handle(request, context, service: .azureImage) }
        router.post("/guardrail/{id}/version/{version}/apply") { request, context in
            try await self.handle(request, context, service: .bedrockGuardrail)
        }
        router.post("/v1/messages") { request, context in try await self.handle(request, context, api: .anthropic) }
        router.post("/openai/deployments/{deployment}/chat/completions") { request, context in
            try await self.handle(request, context, api: .openAIChat)
        }
        router.post("/openai/deployments/{deployment}/embeddings") { request, context in
            try await self.handle(request, context, api: .openAIEmbedding)
        }
        router.get("/v1/models") { _, _ in try self.models() }
        router.get("/openai/models") { _, _ in try self.models() }
        router.get("/_mock/requests") { _, _ in
            Self.json(.array(self.requests.map(\.json)))
        }
        router.delete("/_mock/requests") { _, _ in
            self.clearRequests()
            return Response(status: .noContent)
        }
        router.post("/_mock/config") { request, _ in
            let buffer = try await request.body.collect(upTo: 1 << 20)
            guard let object = (try? JSONParser.parse(buffer.readableBytesView))?.objectValue else {
                return Self.json(["error": "body must be a JSON object"], status: .badRequest)
            }
            var behaviour = self.behaviour
            do {
                try behaviour.apply(object)
            } catch let error as GatewayError {
                return Self.json(["error": .string(error.message)], status: .badRequest)
            }
            self.setBehaviour(behaviour)
            return Self.json(["ok": true])
        }
        return router
    }

    /// Builds a runnable mock server; with `tls`, it serves HTTPS (HTTP/1.1) with that certificate
    /// and key, up to `maximumTLSVersion` (an old provider), requiring client certificates issued
    /// by `clientCAFile` when given (an mTLS mesh).
    public func makeApplication(host: String, port: Int, logger: Logger, tls: (certificatePath: String, keyPath: String)? = nil,
                                maximumTLSVersion: TLSVersion? = nil, clientCAFile: String? = nil,
                                onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        var server: HTTPServerBuilder = .http1()
        if let tls {
            let certificates = try NIOSSLCertificate.fromPEMFile(tls.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: tls.keyPath, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(key))
            configuration.maximumTLSVersion = maximumTLSVersion
            if let clientCAFile {
                configuration.certificateVerification = .noHostnameVerification
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAFile))
            }
            server = try .tls(.http1(), tlsConfiguration: configuration)
        }
        return Application(router: makeRouter(), server: server,
                           configuration: .init(address: .hostname(host, port: port), serverName: "portcullis-mock"),
                           onServerRunning: onServerRunning, logger: logger)
    }

    enum API {
        case openAIChat, openAICompletion, openAIEmbedding, anthropic
    }

    /// The guard services the mock imitates (they answer from the request alone, not from a script).
    enum Service {
        case openAIModeration, azureShield, azureAnalyze, azureImage, bedrockGuardrail
    }

    /// What the mock's image moderation "sees" in an image: its bytes read as text (so a test
    /// image with a lexicon word in a metadata chunk counts as violent, and any other does not).
    static func imageText(base64: String) -> String {
        let data = Data(base64Encoded: base64, options: .ignoreUnknownCharacters) ?? Data()
        return String(decoding: data, as: UTF8.self).lowercased()
    }

    /// The text of an image URL: a data URL's bytes, else nothing.
    static func imageText(url: String) -> String {
        guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ",") else { return "" }
        return imageText(base64: String(url[url.index(after: comma)...]))
    }

    /// Phrases the mock's Prompt Shields and Bedrock prompt-attack filter treat as attacks.
    static let attackPhrases = ["ignore all previous instructions", "ignore previous instructions", "disregard your rules"]

    /// `text:shieldPrompt` in Azure's shape.
    private static func azureShield(_ object: JSONObject) -> Response {
        func attack(_ text: String?) -> Bool { attackPhrases.contains { text?.lowercased().contains($0) ?? false } }
        let documents = object["documents"]?.arrayValue ?? []
        return json(["userPromptAnalysis": ["attackDetected": .bool(attack(object["userPrompt"]?.stringValue))],
                     "documentsAnalysis": .array(documents.map { ["attackDetected": .bool(attack($0.stringValue))] })])
    }

    /// `text:analyze` in Azure's shape (four severity levels: 0, 2, 4, 6).
    private static func azureAnalyze(_ object: JSONObject) -> Response {
        let text = object["text"]?.stringValue?.lowercased() ?? ""
        let names: [String: String] = ["hate": "Hate", "harassment": "Hate", "violence": "Violence", "self-harm": "SelfHarm"]
        var severities: [String: Int64] = ["Hate": 0, "SelfHarm": 0, "Sexual": 0, "Violence": 0]
        for hit in moderationLexicon where text.contains(hit.word) {
            if let name = names[hit.category] { severities[name] = hit.score > 0.9 ? 6 : 2 }
        }
        let analysis: [JSONValue] = ["Hate", "SelfHarm", "Sexual", "Violence"].map { ["category": .string($0), "severity": .integer(severities[$0]!)] }
        return json(["blocklistsMatch": [], "categoriesAnalysis": .array(analysis)])
    }

    /// ApplyGuardrail in Bedrock's shape; refuses a request without a SigV4 Authorization header.
    private static func bedrockGuardrail(_ object: JSONObject, authorization: String?) -> Response {
        guard let authorization, authorization.hasPrefix("AWS4-HMAC-SHA256 Credential="), authorization.contains("Signature=") else {
            return json(["message": "Missing Authentication Token"], status: .forbidden)
        }
        let texts = (object["content"]?.arrayValue ?? []).compactMap { block -> String? in
            if let image = block.objectValue?["image"]?.objectValue?["source"]?.objectValue?["bytes"]?.stringValue { return imageText(base64: image) }
            return block.objectValue?["text"]?.objectValue?["text"]?.stringValue.map { $0.lowercased() }
        }
        var filters: [JSONValue] = []
        if texts.contains(where: { text in attackPhrases.contains { text.contains($0) } }) {
            filters.append(["type": "PROMPT_ATTACK", "confidence": "HIGH", "action": "BLOCKED"])
        }
        if texts.contains(where: { text in moderationLexicon.contains { text.contains($0.word) } }) {
            filters.append(["type": "VIOLENCE", "confidence": "HIGH", "action": "BLOCKED"])
        }
        let intervened = !filters.isEmpty
        return json(["action": .string(intervened ? "GUARDRAIL_INTERVENED" : "NONE"),
                     "outputs": intervened ? [["text": "Sorry, the model cannot answer this question."]] : [],
                     "assessments": intervened ? [["contentPolicy": ["filters": .array(filters)]]] : [],
                     "usage": ["contentPolicyUnits": .integer(Int64(texts.count))]])
    }

    /// Words the mock's moderation endpoint flags, with the category it reports.
    static let moderationLexicon: [(word: String, category: String, score: Double)] = [
        ("massacre", "violence", 0.97), ("vermin", "hate", 0.91), ("worthless idiot", "harassment", 0.86), ("cut myself", "self-harm", 0.95),
    ]

    /// `POST /v1/moderations` in OpenAI's shape: one result per input (a list of multi-modal parts is one), with every category of
    /// the schema present (false and a low score unless the lexicon finds it).
    private static func moderation(_ object: JSONObject) -> Response {
        var inputs = object["input"]?.arrayValue?.compactMap(\.stringValue) ?? object["input"]?.stringValue.map { [$0] } ?? []
        // A list of multi-modal parts is one input: its texts and images together.
        if let parts = object["input"]?.arrayValue?.compactMap(\.objectValue), !parts.isEmpty {
            inputs = [parts.map { part in
                part["text"]?.stringValue ?? part["image_url"]?.objectValue?["url"]?.stringValue.map(imageText(url:)) ?? ""
            }.joined(separator: "\n")]
        }
        let categories = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent", "self-harm",
                          "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence", "violence/graphic"]
        let results: [JSONValue] = inputs.map { text in
            let lowered = text.lowercased()
            let hits = moderationLexicon.filter { lowered.contains($0.word) }
            var flags = JSONObject()
            var scores = JSONObject()
            for category in categories {
                let hit = hits.first { $0.category == category }
                flags[category] = .bool(hit != nil)
                scores[category] = .double(hit?.score ?? 0.0001)
            }
            return ["flagged": .bool(!hits.isEmpty), "categories": .object(flags), "category_scores": .object(scores)]
        }
        return json(["id": .string("modr-mock"), "model": .string(object["model"]?.stringValue ?? "omni-moderation-latest"),
                     "results": .array(results)])
    }

    private func models() throws -> Response {
        Self.json(["object": "list", "data": [["id": "mock-model", "object": "model", "created": .integer(Self.created), "owned_by": "mock"]],
                   "has_more": false])
    }

    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, extraHeaders: HTTPFields = HTTPFields()) -> Response {
        var headers = extraHeaders
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: JSONWriter.buffer(value)))
    }

    private static func sleep(milliseconds: Double) async throws {
        if milliseconds > 0 { try await Task.sleep(nanoseconds: UInt64(milliseconds * 1_000_000)) }
    }

    /// A request read, recorded and past the injected latency and errors: its JSON object, or
    /// the response already decided.
    private enum Received {
        case answered(Response)
        case body(JSONObject, MockBehaviour, sequence: Int, record: RecordedRequest)
    }

    private func handle(_ request: Request, _ context: MockRequestContext, service: Service) async throws -> Response {
        switch try await receive(request, context, anthropicErrors: false) {
        case .answered(let response): return response
        case .body(let object, _, _, let record):
            switch service {
            case .openAIModeration: return Self.moderation(object)
            case .azureShield: return Self.azureShield(object)
            case .azureAnalyze: return Self.azureAnalyze(object)
            case .azureImage: return Self.azureAnalyze(["text": .string(Self.imageText(base64: object["image"]?.objectValue?["content"]?.stringValue ?? ""))])
            case .bedrockGuardrail: return Self.bedrockGuardrail(object, authorization: record.authorization)
            }
        }
    }

    private func receive(_ request: Request, _ context: MockRequestContext, anthropicErrors: Bool) async throws -> Received {
        let buffer = try await request.body.collect(upTo: 64 << 20)
        let body = try? JSONParser.parse(buffer.readableBytesView)
        let record = RecordedRequest(
            path: request.uri.path,
            query: request.uri.query,
            requestID: request.headers[HTTPField.Name("x-request-id")!],
            traceparent: request.headers[HTTPField.Name("traceparent")!],
            authorization: request.headers[.authorization],
            apiKeyHeader: request.headers[HTTPField.Name("x-api-key")!] ?? request.headers[HTTPField.Name("api-key")!]
                ?? request.headers[HTTPField.Name("ocp-apim-subscription-key")!],
            anthropicVersion: request.headers[HTTPField.Name("anthropic-version")!],
            body: body,
            clientPort: context.clientPort)
        let (behaviour, injectError, sequence) = admit(record)
        if behaviour.hang {
            try await Task.sleep(nanoseconds: 3_600_000_000_000)
        }
        try await Self.sleep(milliseconds: behaviour.latencyMilliseconds)
        if injectError {
            var headers = HTTPFields()
            if let retryAfter = behaviour.retryAfterSeconds { headers[.retryAfter] = String(Int(retryAfter.rounded(.up))) }
            let envelope: JSONValue = anthropicErrors
                ? ["type": "error", "error": ["type": behaviour.errorStatus == 429 ? "rate_limit_error" : "api_error",
                                              "message": .string("mock injected error \(behaviour.errorStatus)")]]
                : ["error": ["message": .string("mock injected error \(behaviour.errorStatus)"), "type": "server_error", "param": .null, "code": .null]]
            return .answered(Self.json(envelope, status: .init(code: behaviour.errorStatus), extraHeaders: headers))
        }
        guard let object = body?.objectValue else {
            return .answered(Self.json(["error": ["message": "mock: body is not a JSON object", "type": "invalid_request_error"]], status: .badRequest))
        }
        return .body(object, behaviour, sequence: sequence, record: record)
    }

    private func handle(_ request: Request, _ context: MockRequestContext, api: API) async throws -> Response {
        let object: JSONObject, behaviour: MockBehaviour, sequence: Int
        switch try await receive(request, context, anthropicErrors: api == .anthropic) {
        case .answered(let response): return response
        case .body(let received, let receivedBehaviour, let receivedSequence, _):
            (object, behaviour, sequence) = (received, receivedBehaviour, receivedSequence)
        }
        let stream = object["stream"]?.boolValue ?? false
        let model = object["model"]?.stringValue ?? "mock-model"
        let script = MockScript(request: object, api: api, behaviour: behaviour, sequence: sequence, model: model)
        if behaviour.resetConnection {
            return Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: "{\"id\":\"partial"))
                throw MockConnectionReset()
            })
        }
        switch api {
        case .openAIEmbedding:
            if script.refusesEmbedding {
                return Self.json(["error": ["message": "This input cannot be embedded.", "type": "invalid_request_error", "code": "invalid_input"]],
                                 status: .badRequest)
            }
            return Self.json(script.embeddingResponse())
        case .openAIChat, .openAICompletion, .anthropic:
            guard stream else { return Self.json(script.completeResponse()) }
            let events = script.streamEvents()
            let pause = behaviour.tokensPerSecond > 0 ? 1000 / behaviour.tokensPerSecond : 0
            let ttft = behaviour.timeToFirstTokenMilliseconds
            let failAfter = behaviour.failAfterEvents
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                try await Self.sleep(milliseconds: ttft)
                for (index, event) in events.enumerated() {
                    if let failAfter, index >= failAfter {
                        // Give the events already written a moment to leave before the connection breaks.
                        try await Self.sleep(milliseconds: 50)
                        throw MockConnectionReset()
                    }
                    if index > 0 { try await Self.sleep(milliseconds: pause) }
                    try await writer.write(event)
                }
                try await writer.finish(nil)
            })
        }
    }
}

/// The mock's request context: remembers the client's port so tests can see connection reuse.
public struct MockRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The TCP port the request came from.
    public let clientPort: Int?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.clientPort = source.channel.remoteAddress?.port
    }
}

/// Thrown inside a response body to break the connection on purpose.
struct MockConnectionReset: Error {}
