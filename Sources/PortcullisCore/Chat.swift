/// The role of a chat message author.
public enum ChatRole: String, Sendable, Equatable {
    case system, developer, user, assistant, tool
}

/// One part of a multi-part message.
public enum ContentPart: Sendable, Equatable {
    /// Plain text.
    case text(String)
    /// An image by URL (`https:` or a `data:` URL), with OpenAI's optional detail level.
    case image(url: String, detail: String?)
    /// A part type the gateway does not interpret; passed through to compatible upstreams.
    case other(JSONObject)
}

/// A message body: either a plain string or a list of parts.
public enum MessageContent: Sendable, Equatable {
    case text(String)
    case parts([ContentPart])

    /// All text in the content, parts joined without separators.
    public var text: String {
        switch self {
        case .text(let text): return text
        case .parts(let parts):
            var joined = ""
            for case .text(let text) in parts { joined += text }
            return joined
        }
    }
}

/// A function call requested by the model.
public struct ToolCall: Sendable, Equatable {
    public var id: String
    public var name: String
    /// The arguments as the model produced them: a JSON text, kept byte-for-byte.
    public var arguments: String

    public init(id: String, name: String, arguments: String) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }
}

/// One message of a conversation in the canonical form.
public struct ChatMessage: Sendable, Equatable {
    public var role: ChatRole
    public var content: MessageContent?
    public var name: String?
    public var toolCalls: [ToolCall]
    /// For `tool` messages: the call this answers.
    public var toolCallID: String?
    /// For assistant messages: a refusal text.
    public var refusal: String?
    /// Fields the gateway does not interpret, passed through to compatible upstreams.
    public var extra: JSONObject

    public init(role: ChatRole, content: MessageContent?, name: String? = nil, toolCalls: [ToolCall] = [],
                toolCallID: String? = nil, refusal: String? = nil, extra: JSONObject = JSONObject()) {
        self.role = role
        self.content = content
        self.name = name
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
        self.refusal = refusal
        self.extra = extra
    }
}

/// A tool the model may call.
public struct ToolDefinition: Sendable, Equatable {
    public var name: String
    public var description: String?
    /// JSON Schema of the arguments.
    public var parameters: JSONValue?
    public var strict: Bool?

    public init(name: String, description: String? = nil, parameters: JSONValue? = nil, strict: Bool? = nil) {
        self.name = name
        self.description = description
        self.parameters = parameters
        self.strict = strict
    }
}

/// How the model must choose among tools.
public enum ToolChoice: Sendable, Equatable {
    case auto, none, required
    case function(String)
}

/// The requested output format.
public enum ResponseFormat: Sendable, Equatable {
    case text
    case jsonObject
    /// A JSON schema, with its name and the original `json_schema` object for pass-through.
    case jsonSchema(name: String, schema: JSONValue?, original: JSONObject)
}

/// A chat request in the canonical (OpenAI-shaped) model every provider adapter translates from.
public struct ChatRequest: Sendable, Equatable {
    public var model: String
    public var messages: [ChatMessage]
    public var stream: Bool
    /// `stream_options.include_usage`.
    public var includeUsage: Bool
    public var maxTokens: Int?
    /// Whether the client spelled it `max_completion_tokens` (newer OpenAI models need that).
    public var usesMaxCompletionTokens: Bool
    public var temperature: Double?
    public var topP: Double?
    public var n: Int?
    public var stop: [String]?
    public var seed: Int64?
    public var tools: [ToolDefinition]
    public var toolChoice: ToolChoice?
    public var parallelToolCalls: Bool?
    public var responseFormat: ResponseFormat?
    public var logprobs: Bool?
    public var topLogprobs: Int?
    public var user: String?
    /// Top-level fields the gateway does not interpret, passed through to OpenAI-compatible upstreams.
    public var extra: JSONObject
    /// Fields from an Anthropic-dialect request the gateway does not interpret (`top_k`, `thinking`, …),
    /// passed through only to Anthropic upstreams.
    public var anthropicExtra: JSONObject

    public init(model: String, messages: [ChatMessage], stream: Bool = false, includeUsage: Bool = false,
                maxTokens: Int? = nil, temperature: Double? = nil) {
        self.model = model
        self.messages = messages
        self.stream = stream
        self.includeUsage = includeUsage
        self.maxTokens = maxTokens
        self.usesMaxCompletionTokens = false
        self.temperature = temperature
        self.topP = nil
        self.n = nil
        self.stop = nil
        self.seed = nil
        self.tools = []
        self.toolChoice = nil
        self.parallelToolCalls = nil
        self.responseFormat = nil
        self.logprobs = nil
        self.topLogprobs = nil
        self.user = nil
        self.extra = JSONObject()
        self.anthropicExtra = JSONObject()
    }
}

/// Token accounting for one request.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Provider-specific detail objects (`prompt_tokens_details`, cache counts, …), passed through.
    public var details: JSONObject

    public init(promptTokens: Int, completionTokens: Int, details: JSONObject = JSONObject()) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.details = details
    }

    public var totalTokens: Int { promptTokens + completionTokens }

    /// Input tokens the provider served from its prompt cache (`prompt_tokens_details.cached_tokens`;
    /// Anthropic's `cache_read_input_tokens` arrives translated to it), 0 when it reported none.
    public var cachedInputTokens: Int {
        Int(details["prompt_tokens_details"]?.objectValue?["cached_tokens"]?.integerValue ?? 0)
    }
}

/// Why generation stopped, in OpenAI's vocabulary.
public enum FinishReason: String, Sendable, Equatable {
    case stop
    case length
    case toolCalls = "tool_calls"
    case contentFilter = "content_filter"
}

/// One choice of a non-streamed chat completion.
public struct ChatChoice: Sendable, Equatable {
    public var index: Int
    public var message: ChatMessage
    public var finishReason: FinishReason?
    public var logprobs: JSONValue?

    public init(index: Int, message: ChatMessage, finishReason: FinishReason?, logprobs: JSONValue? = nil) {
        self.index = index
        self.message = message
        self.finishReason = finishReason
        self.logprobs = logprobs
    }
}

/// A complete (non-streamed) chat answer.
public struct ChatCompletion: Sendable, Equatable {
    public var id: String
    public var created: Int64
    public var model: String
    public var choices: [ChatChoice]
    public var usage: Usage?
    public var systemFingerprint: String?
    /// Top-level fields not interpreted, passed through (e.g. `service_tier`).
    public var extra: JSONObject

    public init(id: String, created: Int64, model: String, choices: [ChatChoice], usage: Usage?,
                systemFingerprint: String? = nil, extra: JSONObject = JSONObject()) {
        self.id = id
        self.created = created
        self.model = model
        self.choices = choices
        self.usage = usage
        self.systemFingerprint = systemFingerprint
        self.extra = extra
    }
}

/// An incremental piece of a tool call inside a stream.
public struct ToolCallDelta: Sendable, Equatable {
    /// Position of the call among the message's tool calls.
    public var index: Int
    public var id: String?
    public var name: String?
    /// A fragment of the arguments' JSON text.
    public var arguments: String?

    public init(index: Int, id: String? = nil, name: String? = nil, arguments: String? = nil) {
        self.index = index
        self.id = id
        self.name = name
        self.arguments = arguments
    }
}

/// The change a chunk carries for one choice.
public struct ChunkDelta: Sendable, Equatable {
    public var role: ChatRole?
    public var content: String?
    public var refusal: String?
    public var toolCalls: [ToolCallDelta]

    public init(role: ChatRole? = nil, content: String? = nil, refusal: String? = nil, toolCalls: [ToolCallDelta] = []) {
        self.role = role
        self.content = content
        self.refusal = refusal
        self.toolCalls = toolCalls
    }
}

/// One choice's part of a stream chunk.
public struct ChunkChoice: Sendable, Equatable {
    public var index: Int
    public var delta: ChunkDelta
    public var finishReason: FinishReason?
    public var logprobs: JSONValue?

    public init(index: Int, delta: ChunkDelta, finishReason: FinishReason? = nil, logprobs: JSONValue? = nil) {
        self.index = index
        self.delta = delta
        self.finishReason = finishReason
        self.logprobs = logprobs
    }
}

/// One event of a streamed chat answer in the canonical form (OpenAI's `chat.completion.chunk`).
public struct ChatChunk: Sendable, Equatable {
    public var id: String
    public var created: Int64
    public var model: String
    public var choices: [ChunkChoice]
    /// Set on the final usage chunk (whose `choices` is empty) when usage was asked for.
    public var usage: Usage?
    public var systemFingerprint: String?

    public init(id: String, created: Int64, model: String, choices: [ChunkChoice], usage: Usage? = nil, systemFingerprint: String? = nil) {
        self.id = id
        self.created = created
        self.model = model
        self.choices = choices
        self.usage = usage
        self.systemFingerprint = systemFingerprint
    }
}

/// A legacy text-completion request (`/v1/completions`).
public struct CompletionRequest: Sendable, Equatable {
    public var model: String
    /// The prompt: a string, or an array of strings or token arrays.
    public var prompt: JSONValue
    public var stream: Bool
    public var includeUsage: Bool
    public var maxTokens: Int?
    public var temperature: Double?
    public var stop: [String]?
    /// Every other field, passed through to compatible upstreams.
    public var extra: JSONObject

    public init(model: String, prompt: JSONValue, stream: Bool = false, includeUsage: Bool = false, maxTokens: Int? = nil,
                temperature: Double? = nil, stop: [String]? = nil, extra: JSONObject = JSONObject()) {
        self.model = model
        self.prompt = prompt
        self.stream = stream
        self.includeUsage = includeUsage
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.stop = stop
        self.extra = extra
    }

    /// The prompt as one text when it is a single string (or one-element string array).
    public var singlePromptText: String? {
        if let text = prompt.stringValue { return text }
        if let array = prompt.arrayValue, array.count == 1, let text = array[0].stringValue { return text }
        return nil
    }
}

/// An embeddings request (`/v1/embeddings`).
public struct EmbeddingRequest: Sendable, Equatable {
    public var model: String
    /// A string, an array of strings, or token arrays.
    public var input: JSONValue
    /// Every other field (`encoding_format`, `dimensions`, `user`, …), passed through.
    public var extra: JSONObject

    public init(model: String, input: JSONValue, extra: JSONObject = JSONObject()) {
        self.model = model
        self.input = input
        self.extra = extra
    }

    /// The inputs as texts, when they are strings.
    public var inputTexts: [String]? {
        if let text = input.stringValue { return [text] }
        guard let array = input.arrayValue else { return nil }
        var texts: [String] = []
        for element in array {
            guard let text = element.stringValue else { return nil }
            texts.append(text)
        }
        return texts
    }
}

extension String {
    /// The text cut before each space, the way local models stream it: "a b c" → ["a", " b", " c"].
    public var streamPieces: [String] {
        var pieces: [String] = []
        var current = ""
        for character in self {
            if character == " ", !current.isEmpty {
                pieces.append(current)
                current = ""
            }
            current.append(character)
        }
        if !current.isEmpty { pieces.append(current) }
        return pieces
    }
}
