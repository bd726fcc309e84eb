import NIOCore
import PortcullisCore

/// The deterministic answer the mock gives to one request, in each API's wire format.
struct MockScript {
    let api: MockUpstream.API
    let model: String
    let sequence: Int
    let pieces: [String]
    let toolName: String?
    let toolArguments: String
    let promptTokens: Int
    let finishedByLength: Bool
    let includeUsage: Bool
    /// The texts of an embeddings request, in order.
    let embeddingInputs: [String]

    init(request: JSONObject, api: MockUpstream.API, behaviour: MockBehaviour, sequence: Int, model: String) {
        self.api = api
        self.model = model
        self.sequence = sequence
        var prompt = ""
        switch api {
        case .openAIChat, .anthropic:
            let messages = request["messages"]?.arrayValue ?? []
            if let last = messages.last(where: { $0.objectValue?["role"]?.stringValue == "user" })?.objectValue?["content"] {
                prompt = MockScript.text(of: last)
            }
        case .openAICompletion:
            prompt = request["prompt"]?.stringValue ?? ""
        case .openAIEmbedding:
            prompt = ""
        }
        let input = request["input"]
        embeddingInputs = input?.stringValue.map { [$0] } ?? input?.arrayValue?.compactMap(\.stringValue) ?? []
        var system = ""
        if behaviour.echoSystem {
            switch api {
            case .openAIChat:
                system = (request["messages"]?.arrayValue ?? []).filter { $0.objectValue?["role"]?.stringValue == "system" }
                    .compactMap { $0.objectValue?["content"].map(MockScript.text(of:)) }.joined(separator: "\n")
            case .anthropic:
                system = request["system"].map(MockScript.text(of:)) ?? ""
            case .openAICompletion, .openAIEmbedding:
                break
            }
        }
        let reply = behaviour.echoSystem ? "My instructions say: \(system)" : behaviour.reply ?? "Mock reply to: \(prompt)"
        var pieces = reply.streamPieces
        if let size = behaviour.chunkCharacters {
            pieces = stride(from: 0, to: reply.count, by: size).map { start in
                String(reply.dropFirst(start).prefix(size))
            }
        }
        let limit = (request["max_tokens"] ?? request["max_completion_tokens"])?.integerValue.map { Int($0) }
        if let limit, pieces.count > limit {
            pieces = Array(pieces.prefix(limit))
            finishedByLength = true
        } else {
            finishedByLength = false
        }
        self.pieces = pieces
        let hasTools = !(request["tools"]?.arrayValue?.isEmpty ?? true)
        self.toolName = hasTools ? behaviour.toolName : nil
        self.toolArguments = behaviour.toolArguments
        self.promptTokens = behaviour.promptTokens ?? max(1, (prompt.utf8.count + 3) / 4)
        self.includeUsage = request["stream_options"]?.objectValue?["include_usage"]?.boolValue ?? false
    }

    static func text(of content: JSONValue) -> String {
        if let text = content.stringValue { return text }
        return (content.arrayValue ?? []).compactMap { $0.objectValue?["text"]?.stringValue }.joined()
    }

    var completionTokens: Int { toolName == nil ? pieces.count : 12 }
    var openAIFinish: String { toolName != nil ? "tool_calls" : (finishedByLength ? "length" : "stop") }
    var anthropicStop: String { toolName != nil ? "tool_use" : (finishedByLength ? "max_tokens" : "end_turn") }
    var text: String { pieces.joined() }

    var openAIUsage: JSONValue {
        ["prompt_tokens": .integer(Int64(promptTokens)), "completion_tokens": .integer(Int64(completionTokens)),
         "total_tokens": .integer(Int64(promptTokens + completionTokens))]
    }

    /// Tool arguments cut into fragments, as real streams deliver them.
    var argumentFragments: [String] {
        var fragments: [String] = []
        var current = ""
        for character in toolArguments {
            current.append(character)
            if current.count == 7 {
                fragments.append(current)
                current = ""
            }
        }
        if !current.isEmpty { fragments.append(current) }
        return fragments
    }

    func completeResponse() -> JSONValue {
        switch api {
        case .anthropic:
            var content: [JSONValue] = []
            if let toolName {
                content.append(["type": "tool_use", "id": "toolu_mock_1", "name": .string(toolName),
                                "input": (try? JSONParser.parse(toolArguments)) ?? .object(JSONObject())])
            } else {
                content.append(["type": "text", "text": .string(text)])
            }
            return ["id": .string("msg_mock_\(sequence)"), "type": "message", "role": "assistant", "model": .string(model),
                    "content": .array(content), "stop_reason": .string(anthropicStop), "stop_sequence": .null,
                    "usage": ["input_tokens": .integer(Int64(promptTokens)), "output_tokens": .integer(Int64(completionTokens))]]
        case .openAICompletion:
            return ["id": .string("cmpl-mock-\(sequence)"), "object": "text_completion", "created": .integer(MockUpstream.created),
                    "model": .string(model),
                    "choices": [["text": .string(text), "index": 0, "logprobs": .null, "finish_reason": .string(openAIFinish)]],
                    "usage": openAIUsage]
        case .openAIChat, .openAIEmbedding:
            var message: JSONObject = ["role": "assistant", "content": toolName == nil ? .string(text) : .null, "refusal": .null]
            if let toolName {
                message["tool_calls"] = [["id": "call_mock_1", "type": "function",
                                          "function": ["name": .string(toolName), "arguments": .string(toolArguments)]]]
            }
            return ["id": .string("chatcmpl-mock-\(sequence)"), "object": "chat.completion", "created": .integer(MockUpstream.created),
                    "model": .string(model), "system_fingerprint": "fp_mock",
                    "choices": [["index": 0, "message": .object(message), "logprobs": .null, "finish_reason": .string(openAIFinish)]],
                    "usage": openAIUsage]
        }
    }

    /// One vector per input, made from the input (its length in bytes, the sum of its bytes
    /// modulo 1000 over 1000, then 0.5), so that a caller can tell its own vector.
    func embeddingResponse() -> JSONValue {
        let inputs = embeddingInputs.isEmpty ? [""] : embeddingInputs
        let data: [JSONValue] = inputs.enumerated().map { index, text in
            let bytes = Array(text.utf8)
            let vector: [JSONValue] = [.double(Double(bytes.count)), .double(Double(bytes.reduce(0) { $0 + Int($1) } % 1000) / 1000), .double(0.5)]
            return ["object": "embedding", "index": .integer(Int64(index)), "embedding": .array(vector)]
        }
        let tokens = Int64(inputs.reduce(0) { $0 + max(1, ($1.utf8.count + 3) / 4) })
        return ["object": "list", "model": .string(model), "data": .array(data),
                "usage": ["prompt_tokens": .integer(tokens), "total_tokens": .integer(tokens)]]
    }

    /// Whether an embeddings request holds an input the mock refuses (`REJECT-ME`), as a provider refuses one too long.
    var refusesEmbedding: Bool { embeddingInputs.contains { $0.contains("REJECT-ME") } }

    private func data(_ value: JSONValue) -> ByteBuffer {
        var buffer = ByteBuffer(string: "data: ")
        buffer.writeBytes(JSONWriter.bytes(value))
        buffer.writeString("\n\n")
        return buffer
    }

    private func event(_ name: String, _ value: JSONValue) -> ByteBuffer {
        var buffer = ByteBuffer(string: "event: \(name)\ndata: ")
        buffer.writeBytes(JSONWriter.bytes(value))
        buffer.writeString("\n\n")
        return buffer
    }

    func streamEvents() -> [ByteBuffer] {
        switch api {
        case .anthropic: return anthropicEvents()
        case .openAICompletion: return completionEvents()
        case .openAIChat, .openAIEmbedding: return chatEvents()
        }
    }

    private func chatChunk(_ delta: JSONValue, finish: String? = nil) -> JSONValue {
        var chunk: JSONObject = ["id": .string("chatcmpl-mock-\(sequence)"), "object": "chat.completion.chunk",
                                 "created": .integer(MockUpstream.created), "model": .string(model), "system_fingerprint": "fp_mock",
                                 "choices": [["index": 0, "delta": delta, "logprobs": .null, "finish_reason": finish.map(JSONValue.string) ?? .null]]]
        if includeUsage { chunk["usage"] = .null }
        return .object(chunk)
    }

    private func chatEvents() -> [ByteBuffer] {
        var events = [data(chatChunk(["role": "assistant", "content": "", "refusal": .null]))]
        if let toolName {
            events.append(data(chatChunk(["tool_calls": [["index": 0, "id": "call_mock_1", "type": "function",
                                                          "function": ["name": .string(toolName), "arguments": ""]]]])))
            for fragment in argumentFragments {
                events.append(data(chatChunk(["tool_calls": [["index": 0, "function": ["arguments": .string(fragment)]]]])))
            }
        } else {
            for piece in pieces { events.append(data(chatChunk(["content": .string(piece)]))) }
        }
        events.append(data(chatChunk(.object(JSONObject()), finish: openAIFinish)))
        if includeUsage {
            events.append(data(["id": .string("chatcmpl-mock-\(sequence)"), "object": "chat.completion.chunk",
                                "created": .integer(MockUpstream.created), "model": .string(model), "system_fingerprint": "fp_mock",
                                "choices": [], "usage": openAIUsage]))
        }
        events.append(ByteBuffer(string: "data: [DONE]\n\n"))
        return events
    }

    private func completionEvents() -> [ByteBuffer] {
        func chunk(_ text: String, finish: String?) -> JSONValue {
            ["id": .string("cmpl-mock-\(sequence)"), "object": "text_completion", "created": .integer(MockUpstream.created),
             "model": .string(model), "choices": [["text": .string(text), "index": 0, "logprobs": .null,
                                                   "finish_reason": finish.map(JSONValue.string) ?? .null]]]
        }
        var events = pieces.map { data(chunk($0, finish: nil)) }
        events.append(data(chunk("", finish: openAIFinish)))
        if includeUsage {
            events.append(data(["id": .string("cmpl-mock-\(sequence)"), "object": "text_completion", "created": .integer(MockUpstream.created),
                                "model": .string(model), "choices": [], "usage": openAIUsage]))
        }
        events.append(ByteBuffer(string: "data: [DONE]\n\n"))
        return events
    }

    private func anthropicEvents() -> [ByteBuffer] {
        var events: [ByteBuffer] = [
            event("message_start", ["type": "message_start", "message": [
                "id": .string("msg_mock_\(sequence)"), "type": "message", "role": "assistant", "model": .string(model), "content": [],
                "stop_reason": .null, "stop_sequence": .null,
                "usage": ["input_tokens": .integer(Int64(promptTokens)), "output_tokens": 1]]]),
            event("ping", ["type": "ping"]),
        ]
        if let toolName {
            events.append(event("content_block_start", ["type": "content_block_start", "index": 0,
                                                        "content_block": ["type": "tool_use", "id": "toolu_mock_1", "name": .string(toolName), "input": [:]]]))
            for fragment in argumentFragments {
                events.append(event("content_block_delta", ["type": "content_block_delta", "index": 0,
                                                            "delta": ["type": "input_json_delta", "partial_json": .string(fragment)]]))
            }
        } else {
            events.append(event("content_block_start", ["type": "content_block_start", "index": 0, "content_block": ["type": "text", "text": ""]]))
            for piece in pieces {
                events.append(event("content_block_delta", ["type": "content_block_delta", "index": 0,
                                                            "delta": ["type": "text_delta", "text": .string(piece)]]))
            }
        }
        events.append(event("content_block_stop", ["type": "content_block_stop", "index": 0]))
        events.append(event("message_delta", ["type": "message_delta", "delta": ["stop_reason": .string(anthropicStop), "stop_sequence": .null],
                                              "usage": ["output_tokens": .integer(Int64(completionTokens))]]))
        events.append(event("message_stop", ["type": "message_stop"]))
        return events
    }
}
