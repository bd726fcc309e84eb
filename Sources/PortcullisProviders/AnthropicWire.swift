import Foundation
import PortcullisCore

/// Translates between the canonical model and Anthropic's Messages API, both directions:
/// Anthropic ingress (`POST /v1/messages`) and Anthropic as an upstream.
public enum AnthropicWire {
    /// The `anthropic-version` the gateway speaks.
    public static let apiVersion = "2023-06-01"

    private static let knownRequestKeys: Set<String> = [
        "model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p", "stream",
        "tools", "tool_choice", "metadata",
    ]

    // MARK: Ingress request (Anthropic → canonical)

    /// Reads a Messages API request body into the canonical model.
    public static func decodeRequest(_ value: JSONValue) throws(GatewayError) -> ChatRequest {
        guard let root = value.objectValue else {
            throw .invalidParameter("body", "The request body must be a JSON object, not \(value.typeName).")
        }
        let reader = FieldReader(root)
        let model = try reader.requiredString("model")
        guard let maxTokens = try reader.integer("max_tokens", in: 1...10_000_000) else {
            throw .invalidParameter("max_tokens", "'max_tokens' is required.")
        }
        guard let rawMessages = try reader.array("messages"), !rawMessages.isEmpty else {
            throw .invalidParameter("messages", "'messages' must contain at least one message.")
        }
        var messages: [ChatMessage] = []
        if let system = root["system"], !system.isNull {
            let text: String
            if let string = system.stringValue {
                text = string
            } else if let blocks = system.arrayValue {
                text = try blocks.enumerated().map { (index, block) throws(GatewayError) -> String in
                    guard let object = block.objectValue, let string = object["text"]?.stringValue else {
                        throw .invalidParameter("system[\(index)]", "'system[\(index)]' must be a text block.")
                    }
                    return string
                }.joined(separator: "\n")
            } else {
                throw .invalidParameter("system", "'system' must be a string or an array of text blocks, not \(system.typeName).")
            }
            messages.append(ChatMessage(role: .system, content: .text(text)))
        }
        for (index, raw) in rawMessages.enumerated() {
            let messageReader = try reader.element("messages", index, raw)
            messages.append(contentsOf: try decodeMessage(messageReader))
        }
        var request = ChatRequest(model: model, messages: messages)
        request.maxTokens = Int(maxTokens)
        request.stream = try reader.bool("stream") ?? false
        request.includeUsage = true
        request.stop = try reader.array("stop_sequences").map { array throws(GatewayError) -> [String] in
            try array.map { (element) throws(GatewayError) -> String in
                guard let text = element.stringValue else { throw .invalidParameter("stop_sequences", "'stop_sequences' must be strings.") }
                return text
            }
        }
        request.temperature = try reader.number("temperature", in: 0...1)
        request.topP = try reader.number("top_p", in: 0...1)
        if let tools = try reader.array("tools") {
            for (index, raw) in tools.enumerated() {
                let toolReader = try reader.element("tools", index, raw)
                request.tools.append(ToolDefinition(name: try toolReader.requiredString("name"),
                                                    description: try toolReader.string("description"),
                                                    parameters: toolReader.object["input_schema"]))
            }
        }
        if let choice = try reader.object("tool_choice") {
            let choiceReader = FieldReader(choice, path: "tool_choice")
            switch try choiceReader.requiredString("type") {
            case "auto": request.toolChoice = .auto
            case "any": request.toolChoice = .required
            case "none": request.toolChoice = ToolChoice.none
            case "tool": request.toolChoice = .function(try choiceReader.requiredString("name"))
            case let other: throw .invalidParameter("tool_choice.type", "'tool_choice.type' must be auto, any, tool or none; got '\(other)'.")
            }
            if try choiceReader.bool("disable_parallel_tool_use") == true { request.parallelToolCalls = false }
        }
        if let metadata = try reader.object("metadata") {
            request.user = metadata["user_id"]?.stringValue
        }
        request.anthropicExtra = reader.unknownMembers(known: knownRequestKeys)
        return request
    }

    private static func decodeMessage(_ reader: FieldReader) throws(GatewayError) -> [ChatMessage] {
        let roleText = try reader.requiredString("role")
        guard roleText == "user" || roleText == "assistant" else {
            throw .invalidParameter(reader.param("role"), "'\(reader.param("role"))' must be user or assistant; got '\(roleText)'.")
        }
        let role: ChatRole = roleText == "user" ? .user : .assistant
        guard let content = reader.object["content"], !content.isNull else {
            throw .invalidParameter(reader.param("content"), "'\(reader.param("content"))' is required.")
        }
        if let text = content.stringValue { return [ChatMessage(role: role, content: .text(text))] }
        guard let blocks = content.arrayValue else {
            throw .invalidParameter(reader.param("content"), "'\(reader.param("content"))' must be a string or an array of blocks.")
        }
        var toolResults: [ChatMessage] = []
        var parts: [ContentPart] = []
        var toolCalls: [ToolCall] = []
        for (index, raw) in blocks.enumerated() {
            let blockReader = try reader.element("content", index, raw)
            let type = try blockReader.requiredString("type")
            switch type {
            case "text":
                parts.append(.text(try blockReader.requiredString("text")))
            case "image":
                guard let source = try blockReader.object("source") else {
                    throw .invalidParameter(blockReader.param("source"), "'\(blockReader.param("source"))' is required.")
                }
                let sourceReader = FieldReader(source, path: blockReader.param("source"))
                switch try sourceReader.requiredString("type") {
                case "base64":
                    let mediaType = try sourceReader.requiredString("media_type")
                    let data = try sourceReader.requiredString("data")
                    parts.append(.image(url: "data:\(mediaType);base64,\(data)", detail: nil))
                case "url":
                    parts.append(.image(url: try sourceReader.requiredString("url"), detail: nil))
                case let other:
                    throw .invalidParameter(sourceReader.param("type"), "Image source type '\(other)' is not supported.")
                }
            case "tool_use":
                guard role == .assistant else {
                    throw .invalidParameter(blockReader.param("type"), "tool_use blocks belong in assistant messages.")
                }
                let input = blockReader.object["input"] ?? .object(JSONObject())
                toolCalls.append(ToolCall(id: try blockReader.requiredString("id"), name: try blockReader.requiredString("name"),
                                          arguments: JSONWriter.string(input)))
            case "tool_result":
                let id = try blockReader.requiredString("tool_use_id")
                var text = ""
                if let resultContent = blockReader.object["content"] {
                    if let string = resultContent.stringValue {
                        text = string
                    } else if let resultBlocks = resultContent.arrayValue {
                        text = resultBlocks.compactMap { $0.objectValue?["text"]?.stringValue }.joined(separator: "\n")
                    }
                }
                var message = ChatMessage(role: .tool, content: .text(text), toolCallID: id)
                if try blockReader.bool("is_error") == true { message.extra["is_error"] = true }
                toolResults.append(message)
            case "thinking", "redacted_thinking":
                continue
            default:
                parts.append(.other(blockReader.object))
            }
        }
        var result = toolResults
        if role == .assistant {
            let text = parts.compactMap { part -> String? in if case .text(let t) = part { return t } else { return nil } }.joined()
            if !text.isEmpty || toolCalls.isEmpty || !parts.isEmpty {
                result.append(ChatMessage(role: .assistant, content: text.isEmpty && !toolCalls.isEmpty ? nil : .text(text), toolCalls: toolCalls))
            } else {
                result.append(ChatMessage(role: .assistant, content: nil, toolCalls: toolCalls))
            }
        } else if !parts.isEmpty {
            let isPlainText = parts.count == 1 && { if case .text = parts[0] { return true } else { return false } }()
            result.append(ChatMessage(role: .user, content: isPlainText ? .text(parts[0].plainText ?? "") : .parts(parts)))
        }
        return result
    }

    // MARK: Egress request (canonical → Anthropic)

    /// Writes a canonical request as a Messages API body for an Anthropic upstream.
    public static func encodeRequest(_ request: ChatRequest, upstreamModel: String, defaultMaxTokens: Int) throws(GatewayError) -> JSONValue {
        if let n = request.n, n > 1 {
            throw .unsupported("Anthropic models return one choice; 'n' greater than 1 is not supported.", param: "n")
        }
        var systemTexts: [String] = []
        var messages: [JSONValue] = []
        var pendingRole: String?
        var pendingBlocks: [JSONValue] = []
        func flush() {
            if let role = pendingRole, !pendingBlocks.isEmpty {
                messages.append(["role": .string(role), "content": .array(pendingBlocks)])
            }
            pendingRole = nil
            pendingBlocks = []
        }
        func append(role: String, blocks: [JSONValue]) {
            if pendingRole != role { flush() }
            pendingRole = role
            pendingBlocks.append(contentsOf: blocks)
        }
        for message in request.messages {
            switch message.role {
            case .system, .developer:
                if let text = message.content?.text, !text.isEmpty { systemTexts.append(text) }
            case .user:
                append(role: "user", blocks: contentBlocks(message.content))
            case .assistant:
                var blocks: [JSONValue] = []
                if let text = message.content?.text, !text.isEmpty { blocks.append(["type": "text", "text": .string(text)]) }
                for call in message.toolCalls {
                    let input = (try? JSONParser.parse(call.arguments)).flatMap { $0.objectValue.map(JSONValue.object) } ?? .object(JSONObject())
                    blocks.append(["type": "tool_use", "id": .string(call.id), "name": .string(call.name), "input": input])
                }
                if blocks.isEmpty { blocks.append(["type": "text", "text": ""]) }
                append(role: "assistant", blocks: blocks)
            case .tool:
                var block: JSONObject = ["type": "tool_result", "tool_use_id": .string(message.toolCallID ?? ""),
                                         "content": .string(message.content?.text ?? "")]
                if message.extra["is_error"] == true { block["is_error"] = true }
                append(role: "user", blocks: [.object(block)])
            }
        }
        flush()
        if case .jsonObject = request.responseFormat {
            systemTexts.append("Respond with a single valid JSON object and nothing else.")
        } else if case .jsonSchema(let name, let schema, _) = request.responseFormat {
            let schemaText = schema.map(JSONWriter.string) ?? "{}"
            systemTexts.append("Respond with a single valid JSON value named \(name) that conforms to this JSON Schema, and nothing else: \(schemaText)")
        }
        var body: JSONObject = ["model": .string(upstreamModel)]
        if !systemTexts.isEmpty { body["system"] = .string(systemTexts.joined(separator: "\n\n")) }
        body["messages"] = .array(messages)
        body["max_tokens"] = .integer(Int64(request.maxTokens ?? defaultMaxTokens))
        if let stop = request.stop, !stop.isEmpty { body["stop_sequences"] = .array(stop.map(JSONValue.string)) }
        if let temperature = request.temperature { body["temperature"] = .double(min(temperature, 1)) }
        if let topP = request.topP { body["top_p"] = .double(topP) }
        if request.stream { body["stream"] = true }
        if !request.tools.isEmpty {
            body["tools"] = .array(request.tools.map { tool in
                var object: JSONObject = ["name": .string(tool.name)]
                if let description = tool.description { object["description"] = .string(description) }
                object["input_schema"] = tool.parameters ?? ["type": "object", "properties": .object(JSONObject())]
                return .object(object)
            })
        }
        if let choice = request.toolChoice, !request.tools.isEmpty {
            var object: JSONObject
            switch choice {
            case .auto: object = ["type": "auto"]
            case .none: object = ["type": "none"]
            case .required: object = ["type": "any"]
            case .function(let name): object = ["type": "tool", "name": .string(name)]
            }
            if request.parallelToolCalls == false, choice != .none { object["disable_parallel_tool_use"] = true }
            body["tool_choice"] = .object(object)
        } else if request.parallelToolCalls == false, !request.tools.isEmpty {
            body["tool_choice"] = ["type": "auto", "disable_parallel_tool_use": true]
        }
        if let user = request.user { body["metadata"] = ["user_id": .string(user)] }
        body.merge(missingFrom: request.anthropicExtra)
        return .object(body)
    }

    private static func contentBlocks(_ content: MessageContent?) -> [JSONValue] {
        switch content {
        case nil: return [["type": "text", "text": ""]]
        case .text(let text): return [["type": "text", "text": .string(text)]]
        case .parts(let parts):
            return parts.map { part -> JSONValue in
                switch part {
                case .text(let text): return ["type": "text", "text": .string(text)]
                case .image(let url, _):
                    if url.hasPrefix("data:"), let comma = url.firstIndex(of: ",") {
                        let header = url[url.index(url.startIndex, offsetBy: 5)..<comma]
                        let mediaType = header.split(separator: ";").first.map(String.init) ?? "image/png"
                        return ["type": "image", "source": ["type": "base64", "media_type": .string(mediaType),
                                                            "data": .string(String(url[url.index(after: comma)...]))]]
                    }
                    return ["type": "image", "source": ["type": "url", "url": .string(url)]]
                case .other(let object): return .object(object)
                }
            }
        }
    }

    // MARK: Responses

    /// Maps an Anthropic `stop_reason` to OpenAI's `finish_reason`.
    public static func finishReason(_ stopReason: String?) -> FinishReason? {
        switch stopReason {
        case nil: return nil
        case "max_tokens": return .length
        case "tool_use": return .toolCalls
        case "refusal": return .contentFilter
        default: return .stop
        }
    }

    /// Maps OpenAI's `finish_reason` to an Anthropic `stop_reason`.
    public static func stopReason(_ finish: FinishReason?) -> String? {
        switch finish {
        case nil: return nil
        case .stop: return "end_turn"
        case .length: return "max_tokens"
        case .toolCalls: return "tool_use"
        case .contentFilter: return "refusal"
        }
    }

    /// Reads Anthropic `usage` into canonical usage (prompt tokens include cached ones, as OpenAI counts them).
    public static func decodeUsage(_ object: JSONObject?) -> Usage {
        let input = Int(object?["input_tokens"]?.integerValue ?? 0)
        let output = Int(object?["output_tokens"]?.integerValue ?? 0)
        let cacheRead = Int(object?["cache_read_input_tokens"]?.integerValue ?? 0)
        let cacheCreation = Int(object?["cache_creation_input_tokens"]?.integerValue ?? 0)
        var details = JSONObject()
        if cacheRead > 0 || cacheCreation > 0 {
            details["prompt_tokens_details"] = ["cached_tokens": .integer(Int64(cacheRead))]
        }
        return Usage(promptTokens: input + cacheRead + cacheCreation, completionTokens: output, details: details)
    }

    /// Writes canonical usage as Anthropic `usage`.
    public static func encodeUsage(_ usage: Usage) -> JSONObject {
        let cached = Int(usage.details["prompt_tokens_details"]?.objectValue?["cached_tokens"]?.integerValue ?? 0)
        var object: JSONObject = ["input_tokens": .integer(Int64(usage.promptTokens - cached)),
                                  "output_tokens": .integer(Int64(usage.completionTokens))]
        if cached > 0 { object["cache_read_input_tokens"] = .integer(Int64(cached)) }
        return object
    }

    /// Reads an upstream Messages API response.
    public static func decodeResponse(_ value: JSONValue) throws(GatewayError) -> ChatCompletion {
        guard let root = value.objectValue else { throw OpenAIWire.malformedUpstream("message is not an object") }
        var text = ""
        var calls: [ToolCall] = []
        for block in root["content"]?.arrayValue ?? [] {
            guard let object = block.objectValue else { continue }
            switch object["type"]?.stringValue {
            case "text": text += object["text"]?.stringValue ?? ""
            case "tool_use":
                calls.append(ToolCall(id: object["id"]?.stringValue ?? "", name: object["name"]?.stringValue ?? "",
                                      arguments: JSONWriter.string(object["input"] ?? .object(JSONObject()))))
            default: continue
            }
        }
        let message = ChatMessage(role: .assistant, content: text.isEmpty && !calls.isEmpty ? nil : .text(text), toolCalls: calls)
        return ChatCompletion(
            id: root["id"]?.stringValue ?? "",
            created: Int64(Date().timeIntervalSince1970),
            model: root["model"]?.stringValue ?? "",
            choices: [ChatChoice(index: 0, message: message, finishReason: finishReason(root["stop_reason"]?.stringValue))],
            usage: decodeUsage(root["usage"]?.objectValue))
    }

    /// Writes a canonical completion as a Messages API response for Anthropic clients.
    public static func encodeResponse(_ completion: ChatCompletion, model: String) -> JSONValue {
        let choice = completion.choices.first
        var blocks: [JSONValue] = []
        let text = choice?.message.content?.text ?? ""
        if !text.isEmpty || (choice?.message.toolCalls.isEmpty ?? true) {
            blocks.append(["type": "text", "text": .string(text)])
        }
        for call in choice?.message.toolCalls ?? [] {
            let input = (try? JSONParser.parse(call.arguments)) ?? .object(JSONObject())
            blocks.append(["type": "tool_use", "id": .string(call.id), "name": .string(call.name), "input": input])
        }
        return [
            "id": .string(messageID(completion.id)),
            "type": "message",
            "role": "assistant",
            "model": .string(model),
            "content": .array(blocks),
            "stop_reason": stopReason(choice?.finishReason).map(JSONValue.string) ?? .null,
            "stop_sequence": .null,
            "usage": .object(encodeUsage(completion.usage ?? Usage(promptTokens: 0, completionTokens: 0))),
        ]
    }

    /// An Anthropic-style message id for a canonical id.
    public static func messageID(_ id: String) -> String {
        id.hasPrefix("msg_") ? id : "msg_" + id.replacingOccurrences(of: "chatcmpl-", with: "")
    }
}

extension ContentPart {
    fileprivate var plainText: String? {
        if case .text(let text) = self { return text }
        return nil
    }
}
