/// Translates between the canonical types and OpenAI's wire format, in both directions.
///
/// The canonical model is OpenAI-shaped, so this codec is also how the gateway reads
/// its own `/v1/chat/completions` ingress and writes OpenAI-compatible upstream bodies.
public enum OpenAIWire {
    // MARK: Chat requests

    private static let knownChatKeys: Set<String> = [
        "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
        "top_p", "n", "stop", "seed", "tools", "tool_choice", "parallel_tool_calls", "response_format",
        "logprobs", "top_logprobs", "user",
    ]
    private static let knownMessageKeys: Set<String> = ["role", "content", "name", "tool_calls", "tool_call_id", "refusal"]

    /// Reads a chat request body; errors name the offending parameter.
    public static func decodeChatRequest(_ value: JSONValue) throws(GatewayError) -> ChatRequest {
        guard let root = value.objectValue else {
            throw .invalidParameter("body", "The request body must be a JSON object, not \(value.typeName).")
        }
        let reader = FieldReader(root)
        let model = try reader.requiredString("model")
        guard let rawMessages = try reader.array("messages") else {
            throw .invalidParameter("messages", "'messages' is required.")
        }
        guard !rawMessages.isEmpty else {
            throw .invalidParameter("messages", "'messages' must contain at least one message.")
        }
        var messages: [ChatMessage] = []
        messages.reserveCapacity(rawMessages.count)
        for (index, raw) in rawMessages.enumerated() {
            messages.append(try decodeMessage(reader.element("messages", index, raw)))
        }
        var request = ChatRequest(model: model, messages: messages)
        request.stream = try reader.bool("stream") ?? false
        if let options = try reader.object("stream_options") {
            request.includeUsage = try FieldReader(options, path: "stream_options").bool("include_usage") ?? false
        }
        if let maxCompletion = try reader.integer("max_completion_tokens", in: 1...10_000_000) {
            request.maxTokens = Int(maxCompletion)
            request.usesMaxCompletionTokens = true
        } else if let maxTokens = try reader.integer("max_tokens", in: 1...10_000_000) {
            request.maxTokens = Int(maxTokens)
        }
        request.temperature = try reader.number("temperature", in: 0...2)
        request.topP = try reader.number("top_p", in: 0...1)
        request.n = try reader.integer("n", in: 1...128).map(Int.init)
        request.stop = try reader.stringOrStrings("stop")
        request.seed = try reader.integer("seed")
        if let tools = try reader.array("tools") {
            for (index, raw) in tools.enumerated() {
                request.tools.append(try decodeTool(reader.element("tools", index, raw)))
            }
        }
        if let choice = root["tool_choice"], !choice.isNull {
            request.toolChoice = try decodeToolChoice(choice)
        }
        request.parallelToolCalls = try reader.bool("parallel_tool_calls")
        if let format = try reader.object("response_format") {
            request.responseFormat = try decodeResponseFormat(FieldReader(format, path: "response_format"))
        }
        request.logprobs = try reader.bool("logprobs")
        request.topLogprobs = try reader.integer("top_logprobs", in: 0...20).map(Int.init)
        request.user = try reader.string("user")
        request.extra = reader.unknownMembers(known: knownChatKeys)
        return request
    }

    private static func decodeMessage(_ reader: FieldReader) throws(GatewayError) -> ChatMessage {
        let roleText = try reader.requiredString("role")
        guard let role = ChatRole(rawValue: roleText) else {
            throw .invalidParameter(reader.param("role"), "'\(reader.param("role"))' must be one of system, developer, user, assistant, tool; got '\(roleText)'.")
        }
        var message = ChatMessage(role: role, content: nil)
        if let content = reader.object["content"], !content.isNull {
            message.content = try decodeContent(content, param: reader.param("content"))
        } else if role != .assistant {
            throw .invalidParameter(reader.param("content"), "'\(reader.param("content"))' is required for \(role.rawValue) messages.")
        }
        message.name = try reader.string("name")
        message.toolCallID = try reader.string("tool_call_id")
        if role == .tool && message.toolCallID == nil {
            throw .invalidParameter(reader.param("tool_call_id"), "'\(reader.param("tool_call_id"))' is required for tool messages.")
        }
        message.refusal = try reader.string("refusal")
        if let calls = try reader.array("tool_calls") {
            for (index, raw) in calls.enumerated() {
                let callReader = try reader.element("tool_calls", index, raw)
                let id = try callReader.requiredString("id")
                guard let function = try callReader.object("function") else {
                    throw .invalidParameter(callReader.param("function"), "'\(callReader.param("function"))' is required.")
                }
                let functionReader = FieldReader(function, path: callReader.param("function"))
                message.toolCalls.append(ToolCall(id: id, name: try functionReader.requiredString("name"),
                                                  arguments: try functionReader.string("arguments") ?? "{}"))
            }
        }
        message.extra = reader.unknownMembers(known: knownMessageKeys)
        return message
    }

    private static func decodeContent(_ value: JSONValue, param: String) throws(GatewayError) -> MessageContent {
        if let text = value.stringValue { return .text(text) }
        guard let array = value.arrayValue else {
            throw .invalidParameter(param, "'\(param)' must be a string or an array of content parts, not \(value.typeName).")
        }
        var parts: [ContentPart] = []
        for (index, raw) in array.enumerated() {
            let partParam = "\(param)[\(index)]"
            guard let object = raw.objectValue else {
                throw .invalidParameter(partParam, "'\(partParam)' must be an object, not \(raw.typeName).")
            }
            let reader = FieldReader(object, path: partParam)
            let type = try reader.requiredString("type")
            switch type {
            case "text":
                parts.append(.text(try reader.requiredString("text")))
            case "image_url":
                guard let image = try reader.object("image_url") else {
                    throw .invalidParameter(reader.param("image_url"), "'\(reader.param("image_url"))' is required.")
                }
                let imageReader = FieldReader(image, path: reader.param("image_url"))
                parts.append(.image(url: try imageReader.requiredString("url"), detail: try imageReader.string("detail")))
            default:
                parts.append(.other(object))
            }
        }
        return .parts(parts)
    }

    private static func decodeTool(_ reader: FieldReader) throws(GatewayError) -> ToolDefinition {
        let type = try reader.string("type") ?? "function"
        guard type == "function" else {
            throw .invalidParameter(reader.param("type"), "Only tools of type 'function' are supported; got '\(type)'.")
        }
        guard let function = try reader.object("function") else {
            throw .invalidParameter(reader.param("function"), "'\(reader.param("function"))' is required.")
        }
        let functionReader = FieldReader(function, path: reader.param("function"))
        return ToolDefinition(name: try functionReader.requiredString("name"),
                              description: try functionReader.string("description"),
                              parameters: function["parameters"],
                              strict: try functionReader.bool("strict"))
    }

    private static func decodeToolChoice(_ value: JSONValue) throws(GatewayError) -> ToolChoice {
        switch value.stringValue {
        case "auto": return .auto
        case "none": return .none
        case "required": return .required
        case .some(let other):
            throw .invalidParameter("tool_choice", "'tool_choice' must be auto, none, required or a function; got '\(other)'.")
        case nil:
            guard let object = value.objectValue, let function = object["function"]?.objectValue,
                  let name = function["name"]?.stringValue else {
                throw .invalidParameter("tool_choice", "'tool_choice' must be auto, none, required or {\"type\":\"function\",\"function\":{\"name\":…}}.")
            }
            return .function(name)
        }
    }

    private static func decodeResponseFormat(_ reader: FieldReader) throws(GatewayError) -> ResponseFormat {
        let type = try reader.requiredString("type")
        switch type {
        case "text": return .text
        case "json_object": return .jsonObject
        case "json_schema":
            guard let schema = try reader.object("json_schema") else {
                throw .invalidParameter(reader.param("json_schema"), "'\(reader.param("json_schema"))' is required when type is json_schema.")
            }
            let schemaReader = FieldReader(schema, path: reader.param("json_schema"))
            return .jsonSchema(name: try schemaReader.requiredString("name"), schema: schema["schema"], original: schema)
        default:
            throw .invalidParameter(reader.param("type"), "'\(reader.param("type"))' must be text, json_object or json_schema; got '\(type)'.")
        }
    }

    /// Writes a chat request as an OpenAI-compatible upstream body, with `model` set to `upstreamModel`.
    public static func encodeChatRequest(_ request: ChatRequest, upstreamModel: String) -> JSONValue {
        var object = JSONObject()
        object["model"] = .string(upstreamModel)
        object["messages"] = .array(request.messages.map(encodeMessage))
        if request.stream {
            object["stream"] = true
            if request.includeUsage { object["stream_options"] = ["include_usage": true] }
        }
        if let maxTokens = request.maxTokens {
            object[request.usesMaxCompletionTokens ? "max_completion_tokens" : "max_tokens"] = .integer(Int64(maxTokens))
        }
        if let temperature = request.temperature { object["temperature"] = .double(temperature) }
        if let topP = request.topP { object["top_p"] = .double(topP) }
        if let n = request.n { object["n"] = .integer(Int64(n)) }
        if let stop = request.stop { object["stop"] = .array(stop.map(JSONValue.string)) }
        if let seed = request.seed { object["seed"] = .integer(seed) }
        if !request.tools.isEmpty { object["tools"] = .array(request.tools.map(encodeTool)) }
        if let choice = request.toolChoice { object["tool_choice"] = encodeToolChoice(choice) }
        if let parallel = request.parallelToolCalls { object["parallel_tool_calls"] = .bool(parallel) }
        if let format = request.responseFormat { object["response_format"] = encodeResponseFormat(format) }
        if let logprobs = request.logprobs { object["logprobs"] = .bool(logprobs) }
        if let top = request.topLogprobs { object["top_logprobs"] = .integer(Int64(top)) }
        if let user = request.user { object["user"] = .string(user) }
        object.merge(missingFrom: request.extra)
        return .object(object)
    }

    /// The wire form of one message.
    public static func encodeMessage(_ message: ChatMessage) -> JSONValue {
        var object = JSONObject()
        object["role"] = .string(message.role.rawValue)
        if let content = message.content {
            object["content"] = encodeContent(content)
        } else {
            object["content"] = .null
        }
        if let name = message.name { object["name"] = .string(name) }
        if !message.toolCalls.isEmpty {
            object["tool_calls"] = .array(message.toolCalls.map { call in
                ["id": .string(call.id), "type": "function",
                 "function": ["name": .string(call.name), "arguments": .string(call.arguments)]]
            })
        }
        if let id = message.toolCallID { object["tool_call_id"] = .string(id) }
        if let refusal = message.refusal { object["refusal"] = .string(refusal) }
        object.merge(missingFrom: message.extra)
        return .object(object)
    }

    private static func encodeContent(_ content: MessageContent) -> JSONValue {
        switch content {
        case .text(let text): return .string(text)
        case .parts(let parts):
            return .array(parts.map { part in
                switch part {
                case .text(let text): return ["type": "text", "text": .string(text)]
                case .image(let url, let detail):
                    var image: JSONObject = ["url": .string(url)]
                    if let detail { image["detail"] = .string(detail) }
                    return ["type": "image_url", "image_url": .object(image)]
                case .other(let object): return .object(object)
                }
            })
        }
    }

    private static func encodeTool(_ tool: ToolDefinition) -> JSONValue {
        var function: JSONObject = ["name": .string(tool.name)]
        if let description = tool.description { function["description"] = .string(description) }
        if let parameters = tool.parameters { function["parameters"] = parameters }
        if let strict = tool.strict { function["strict"] = .bool(strict) }
        return ["type": "function", "function": .object(function)]
    }

    private static func encodeToolChoice(_ choice: ToolChoice) -> JSONValue {
        switch choice {
        case .auto: return "auto"
        case .none: return "none"
        case .required: return "required"
        case .function(let name): return ["type": "function", "function": ["name": .string(name)]]
        }
    }

    private static func encodeResponseFormat(_ format: ResponseFormat) -> JSONValue {
        switch format {
        case .text: return ["type": "text"]
        case .jsonObject: return ["type": "json_object"]
        case .jsonSchema(_, _, let original): return ["type": "json_schema", "json_schema": .object(original)]
        }
    }

    // MARK: Chat responses

    /// Reads an upstream chat completion.
    public static func decodeChatCompletion(_ value: JSONValue) throws(GatewayError) -> ChatCompletion {
        guard let root = value.objectValue else { throw malformedUpstream("chat completion is not an object") }
        let reader = FieldReader(root)
        var choices: [ChatChoice] = []
        for (index, raw) in (try reader.array("choices") ?? []).enumerated() {
            guard let choice = raw.objectValue else { throw malformedUpstream("choice is not an object") }
            let choiceReader = FieldReader(choice, path: "choices[\(index)]")
            let messageObject = try choiceReader.object("message") ?? JSONObject()
            var message = ChatMessage(role: .assistant, content: nil)
            let messageReader = FieldReader(messageObject, path: "message")
            if let text = try messageReader.string("content") { message.content = .text(text) }
            message.refusal = try messageReader.string("refusal")
            for raw in try messageReader.array("tool_calls") ?? [] {
                guard let call = raw.objectValue, let function = call["function"]?.objectValue else { continue }
                message.toolCalls.append(ToolCall(id: call["id"]?.stringValue ?? "",
                                                  name: function["name"]?.stringValue ?? "",
                                                  arguments: function["arguments"]?.stringValue ?? ""))
            }
            message.extra = messageReader.unknownMembers(known: ["role", "content", "refusal", "tool_calls"])
            choices.append(ChatChoice(
                index: Int(try choiceReader.integer("index") ?? Int64(index)),
                message: message,
                finishReason: (try choiceReader.string("finish_reason")).flatMap(FinishReason.init(rawValue:)),
                logprobs: choice["logprobs"].flatMap { $0.isNull ? nil : $0 }))
        }
        return ChatCompletion(
            id: try reader.string("id") ?? "",
            created: try reader.integer("created") ?? 0,
            model: try reader.string("model") ?? "",
            choices: choices,
            usage: try decodeUsage(root["usage"]),
            systemFingerprint: try reader.string("system_fingerprint"),
            extra: reader.unknownMembers(known: ["id", "object", "created", "model", "choices", "usage", "system_fingerprint"]))
    }

    /// Reads OpenAI `usage`.
    public static func decodeUsage(_ value: JSONValue?) throws(GatewayError) -> Usage? {
        guard let object = value?.objectValue else { return nil }
        let reader = FieldReader(object, path: "usage")
        return Usage(promptTokens: Int(try reader.integer("prompt_tokens") ?? 0),
                     completionTokens: Int(try reader.integer("completion_tokens") ?? 0),
                     details: reader.unknownMembers(known: ["prompt_tokens", "completion_tokens", "total_tokens"]))
    }

    /// Writes OpenAI `usage`.
    public static func encodeUsage(_ usage: Usage) -> JSONValue {
        var object: JSONObject = [
            "prompt_tokens": .integer(Int64(usage.promptTokens)),
            "completion_tokens": .integer(Int64(usage.completionTokens)),
            "total_tokens": .integer(Int64(usage.totalTokens)),
        ]
        object.merge(missingFrom: usage.details)
        return .object(object)
    }

    /// Writes a chat completion as clients of `/v1/chat/completions` expect it.
    public static func encodeChatCompletion(_ completion: ChatCompletion) -> JSONValue {
        var object: JSONObject = [
            "id": .string(completion.id),
            "object": "chat.completion",
            "created": .integer(completion.created),
            "model": .string(completion.model),
        ]
        object["choices"] = .array(completion.choices.map { choice in
            var message: JSONObject = ["role": "assistant"]
            message["content"] = choice.message.content.map { .string($0.text) } ?? .null
            message["refusal"] = choice.message.refusal.map(JSONValue.string) ?? .null
            if !choice.message.toolCalls.isEmpty {
                message["tool_calls"] = .array(choice.message.toolCalls.map { call in
                    ["id": .string(call.id), "type": "function",
                     "function": ["name": .string(call.name), "arguments": .string(call.arguments)]]
                })
            }
            message.merge(missingFrom: choice.message.extra)
            return [
                "index": .integer(Int64(choice.index)),
                "message": .object(message),
                "logprobs": choice.logprobs ?? .null,
                "finish_reason": choice.finishReason.map { .string($0.rawValue) } ?? .null,
            ]
        })
        if let usage = completion.usage { object["usage"] = encodeUsage(usage) }
        if let fingerprint = completion.systemFingerprint { object["system_fingerprint"] = .string(fingerprint) }
        object.merge(missingFrom: completion.extra)
        return .object(object)
    }

    // MARK: Stream chunks

    /// Reads one upstream `chat.completion.chunk`.
    public static func decodeChatChunk(_ value: JSONValue) throws(GatewayError) -> ChatChunk {
        guard let root = value.objectValue else { throw malformedUpstream("stream chunk is not an object") }
        let reader = FieldReader(root)
        var choices: [ChunkChoice] = []
        for raw in try reader.array("choices") ?? [] {
            guard let choice = raw.objectValue else { throw malformedUpstream("stream choice is not an object") }
            let choiceReader = FieldReader(choice)
            let deltaObject = try choiceReader.object("delta") ?? JSONObject()
            let deltaReader = FieldReader(deltaObject)
            var delta = ChunkDelta()
            delta.role = (try deltaReader.string("role")).flatMap(ChatRole.init(rawValue:))
            delta.content = try deltaReader.string("content")
            delta.refusal = try deltaReader.string("refusal")
            for (position, rawCall) in (try deltaReader.array("tool_calls") ?? []).enumerated() {
                guard let call = rawCall.objectValue else { continue }
                let function = call["function"]?.objectValue
                delta.toolCalls.append(ToolCallDelta(
                    index: call["index"]?.integerValue.map { Int($0) } ?? position,
                    id: call["id"]?.stringValue,
                    name: function?["name"]?.stringValue,
                    arguments: function?["arguments"]?.stringValue))
            }
            choices.append(ChunkChoice(
                index: Int(try choiceReader.integer("index") ?? 0),
                delta: delta,
                finishReason: (try choiceReader.string("finish_reason")).flatMap(FinishReason.init(rawValue:)),
                logprobs: choice["logprobs"].flatMap { $0.isNull ? nil : $0 }))
        }
        return ChatChunk(id: try reader.string("id") ?? "", created: try reader.integer("created") ?? 0,
                         model: try reader.string("model") ?? "", choices: choices,
                         usage: try decodeUsage(root["usage"]), systemFingerprint: try reader.string("system_fingerprint"))
    }

    /// Writes one chunk as a `chat.completion.chunk` object.
    public static func encodeChatChunk(_ chunk: ChatChunk, includeUsageField: Bool) -> JSONValue {
        var object: JSONObject = [
            "id": .string(chunk.id),
            "object": "chat.completion.chunk",
            "created": .integer(chunk.created),
            "model": .string(chunk.model),
        ]
        if let fingerprint = chunk.systemFingerprint { object["system_fingerprint"] = .string(fingerprint) }
        object["choices"] = .array(chunk.choices.map { choice in
            var delta = JSONObject()
            if let role = choice.delta.role { delta["role"] = .string(role.rawValue) }
            if let content = choice.delta.content { delta["content"] = .string(content) }
            if let refusal = choice.delta.refusal { delta["refusal"] = .string(refusal) }
            if !choice.delta.toolCalls.isEmpty {
                delta["tool_calls"] = .array(choice.delta.toolCalls.map { call in
                    var entry: JSONObject = ["index": .integer(Int64(call.index))]
                    if let id = call.id { entry["id"] = .string(id); entry["type"] = "function" }
                    var function = JSONObject()
                    if let name = call.name { function["name"] = .string(name) }
                    if let arguments = call.arguments { function["arguments"] = .string(arguments) }
                    entry["function"] = .object(function)
                    return .object(entry)
                })
            }
            return [
                "index": .integer(Int64(choice.index)),
                "delta": .object(delta),
                "logprobs": choice.logprobs ?? .null,
                "finish_reason": choice.finishReason.map { .string($0.rawValue) } ?? .null,
            ]
        })
        if includeUsageField { object["usage"] = chunk.usage.map(encodeUsage) ?? .null }
        return .object(object)
    }
}
