import PortcullisCore

/// How the mock upstream behaves; changeable at run time through `POST /_mock/config`.
public struct MockBehaviour: Sendable, Equatable {
    /// Delay before the response head, milliseconds.
    public var latencyMilliseconds: Double = 0
    /// Delay before the first stream event, milliseconds.
    public var timeToFirstTokenMilliseconds: Double = 0
    /// Stream pace; 0 sends every event at once.
    public var tokensPerSecond: Double = 0
    /// Share of requests (0–1) answered with `errorStatus`.
    public var errorRate: Double = 0
    /// The next N requests fail with `errorStatus`, then behaviour returns to normal.
    public var failNext: Int = 0
    /// Status for injected errors. Default 500.
    public var errorStatus: Int = 500
    /// `Retry-After` seconds sent with injected errors.
    public var retryAfterSeconds: Double?
    /// Never answer (until the client gives up).
    public var hang: Bool = false
    /// Break the connection in the middle of the response body.
    public var resetConnection: Bool = false
    /// For streams: break the connection after this many events.
    public var failAfterEvents: Int?
    /// Fixed reply text; default echoes the last user message.
    public var reply: String?
    /// Replies for the next requests, one each, in order; then `reply` again.
    public var replies: [String] = []
    /// When set, the model answers with a call to this tool.
    public var toolName: String?
    /// Arguments of that tool call (a JSON text).
    public var toolArguments: String = "{\"city\":\"Paris\",\"unit\":\"celsius\"}"
    /// Prompt tokens reported in usage; default estimates from the prompt.
    public var promptTokens: Int?
    /// Stream the reply in pieces of this many characters (splitting words) instead of word by word.
    public var chunkCharacters: Int?
    /// Answer with the request's system prompt (a model that leaks its instructions).
    public var echoSystem = false

    public init() {}

    /// Applies the members of a `/_mock/config` body; unknown keys are errors.
    public mutating func apply(_ object: JSONObject) throws(GatewayError) {
        let reader = FieldReader(object)
        let known: Set<String> = ["latency_ms", "ttft_ms", "tokens_per_second", "error_rate", "fail_next", "error_status",
                                  "retry_after", "hang", "reset", "fail_after_events", "reply", "tool_name", "tool_arguments",
                                  "prompt_tokens", "chunk_chars", "echo_system", "replies", "reset_all"]
        if let unknown = object.keys.first(where: { !known.contains($0) }) {
            throw .invalidParameter(unknown, "unknown mock setting '\(unknown)'")
        }
        if try reader.bool("reset_all") == true { self = MockBehaviour() }
        if let value = try reader.number("latency_ms", in: 0...3_600_000) { latencyMilliseconds = value }
        if let value = try reader.number("ttft_ms", in: 0...3_600_000) { timeToFirstTokenMilliseconds = value }
        if let value = try reader.number("tokens_per_second", in: 0...10_000_000) { tokensPerSecond = value }
        if let value = try reader.number("error_rate", in: 0...1) { errorRate = value }
        if let value = try reader.integer("fail_next", in: 0...1_000_000) { failNext = Int(value) }
        if let value = try reader.integer("error_status", in: 100...599) { errorStatus = Int(value) }
        if object["retry_after"] != nil { retryAfterSeconds = try reader.number("retry_after", in: 0...86_400) }
        if let value = try reader.bool("hang") { hang = value }
        if let value = try reader.bool("reset") { resetConnection = value }
        if object["fail_after_events"] != nil { failAfterEvents = try reader.integer("fail_after_events", in: 0...1_000_000).map(Int.init) }
        if object["reply"] != nil { reply = try reader.string("reply") }
        if let list = object["replies"] {
            guard let items = list.arrayValue, items.allSatisfy({ $0.stringValue != nil }) else {
                throw .invalidParameter("replies", "replies must be a list of strings")
            }
            replies = items.compactMap(\.stringValue)
        }
        if object["tool_name"] != nil { toolName = try reader.string("tool_name") }
        if let value = try reader.string("tool_arguments") { toolArguments = value }
        if let value = try reader.bool("echo_system") { echoSystem = value }
        if object["chunk_chars"] != nil { chunkCharacters = try reader.integer("chunk_chars", in: 1...1_000_000).map(Int.init) }
        if object["prompt_tokens"] != nil { promptTokens = try reader.integer("prompt_tokens", in: 0...100_000_000).map(Int.init) }
    }
}

/// What the mock upstream received, for tests and rehearsals to inspect.
public struct RecordedRequest: Sendable {
    public var path: String
    public var query: String?
    public var requestID: String?
    public var traceparent: String?
    public var authorization: String?
    public var apiKeyHeader: String?
    public var anthropicVersion: String?
    public var body: JSONValue?
    /// The TCP port the request came from: equal ports mean a reused connection.
    public var clientPort: Int?

    public var json: JSONValue {
        [
            "path": .string(path),
            "query": query.map(JSONValue.string) ?? .null,
            "request_id": requestID.map(JSONValue.string) ?? .null,
            "traceparent": traceparent.map(JSONValue.string) ?? .null,
            "authorization": authorization.map(JSONValue.string) ?? .null,
            "api_key": apiKeyHeader.map(JSONValue.string) ?? .null,
            "anthropic_version": anthropicVersion.map(JSONValue.string) ?? .null,
            "body": body ?? .null,
            "client_port": clientPort.map { .integer(Int64($0)) } ?? .null,
        ]
    }
}
