import Foundation
import NIOCore
import PortcullisCore

/// Turns an Anthropic upstream event stream into canonical chunks (Anthropic → OpenAI shape).
///
/// A plain state machine: feed it one event at a time, it returns the chunks to emit.
public struct AnthropicStreamDecoder: Sendable {
    private var id = ""
    private var model = ""
    private let created = Int64(Date().timeIntervalSince1970)
    private var inputUsage: JSONObject?
    private var outputTokens = 0
    private var toolIndexByBlock: [Int: Int] = [:]
    private var nextToolIndex = 0
    private var finish: FinishReason?
    private let deployment: String

    public init(deployment: String) {
        self.deployment = deployment
    }

    private func chunk(_ delta: ChunkDelta, finish: FinishReason? = nil) -> ChatChunk {
        ChatChunk(id: id, created: created, model: model, choices: [ChunkChoice(index: 0, delta: delta, finishReason: finish)])
    }

    /// The chunks one upstream event produces.
    public mutating func decode(_ event: SSEEvent) throws -> [ChatChunk] {
        guard let json = try? JSONParser.parse(event.data), let object = json.objectValue else {
            throw UpstreamFailure(reason: .malformed, message: "stream event is not a JSON object", deployment: deployment)
        }
        let type = object["type"]?.stringValue ?? event.event ?? ""
        switch type {
        case "message_start":
            let message = object["message"]?.objectValue
            id = message?["id"]?.stringValue ?? ""
            model = message?["model"]?.stringValue ?? ""
            inputUsage = message?["usage"]?.objectValue
            outputTokens = Int(inputUsage?["output_tokens"]?.integerValue ?? 0)
            return [chunk(ChunkDelta(role: .assistant, content: ""))]
        case "content_block_start":
            let index = Int(object["index"]?.integerValue ?? 0)
            guard let block = object["content_block"]?.objectValue else { return [] }
            switch block["type"]?.stringValue {
            case "tool_use":
                let toolIndex = nextToolIndex
                nextToolIndex += 1
                toolIndexByBlock[index] = toolIndex
                return [chunk(ChunkDelta(toolCalls: [ToolCallDelta(index: toolIndex, id: block["id"]?.stringValue,
                                                                   name: block["name"]?.stringValue, arguments: "")]))]
            case "text":
                if let text = block["text"]?.stringValue, !text.isEmpty { return [chunk(ChunkDelta(content: text))] }
                return []
            default:
                return []
            }
        case "content_block_delta":
            let index = Int(object["index"]?.integerValue ?? 0)
            guard let delta = object["delta"]?.objectValue else { return [] }
            switch delta["type"]?.stringValue {
            case "text_delta":
                return [chunk(ChunkDelta(content: delta["text"]?.stringValue ?? ""))]
            case "input_json_delta":
                guard let toolIndex = toolIndexByBlock[index] else { return [] }
                return [chunk(ChunkDelta(toolCalls: [ToolCallDelta(index: toolIndex, arguments: delta["partial_json"]?.stringValue ?? "")]))]
            default:
                return []
            }
        case "message_delta":
            if let usage = object["usage"]?.objectValue {
                if let output = usage["output_tokens"]?.integerValue { outputTokens = Int(output) }
                if usage["input_tokens"] != nil {
                    var merged = inputUsage ?? JSONObject()
                    for (key, value) in usage where key != "output_tokens" { merged[key] = value }
                    inputUsage = merged
                }
            }
            finish = AnthropicWire.finishReason(object["delta"]?.objectValue?["stop_reason"]?.stringValue)
            return [chunk(ChunkDelta(), finish: finish ?? .stop)]
        case "message_stop":
            var usage = AnthropicWire.decodeUsage(inputUsage)
            usage.completionTokens = outputTokens
            return [ChatChunk(id: id, created: created, model: model, choices: [], usage: usage)]
        case "error":
            let message = object["error"]?.objectValue?["message"]?.stringValue ?? "upstream reported an error mid-stream"
            let errorType = object["error"]?.objectValue?["type"]?.stringValue
            throw UpstreamFailure(reason: .status(errorType == "overloaded_error" ? 529 : 500),
                                  message: UpstreamHTTPClient.scrubSecrets(message, apiKey: nil), deployment: deployment)
        default:
            return []
        }
    }
}

/// Turns canonical chunks into Anthropic Messages stream events for `/v1/messages` clients.
///
/// Emits `message_start`, then `content_block_start`/`_delta`/`_stop` per text or tool
/// block, then `message_delta` with the stop reason and usage, then `message_stop`.
public struct AnthropicStreamEncoder: Sendable {
    private let model: String
    private var started = false
    private var openBlock: (index: Int, isTool: Bool, toolIndex: Int)?
    private var nextBlockIndex = 0
    private var blockByTool: [Int: Int] = [:]
    private var stopReason: String?
    private var usage: Usage?

    public init(model: String) {
        self.model = model
    }

    private func event(_ name: String, _ payload: JSONValue) -> ByteBuffer {
        SSEWriter.event(name, JSONWriter.bytes(payload))
    }

    private mutating func closeBlock(into output: inout [ByteBuffer]) {
        if let block = openBlock {
            output.append(event("content_block_stop", ["type": "content_block_stop", "index": .integer(Int64(block.index))]))
            openBlock = nil
        }
    }

    private mutating func start(_ chunk: ChatChunk, into output: inout [ByteBuffer]) {
        guard !started else { return }
        started = true
        let message: JSONValue = [
            "id": .string(AnthropicWire.messageID(chunk.id)), "type": "message", "role": "assistant",
            "model": .string(model), "content": [], "stop_reason": .null, "stop_sequence": .null,
            "usage": ["input_tokens": .integer(Int64(chunk.usage?.promptTokens ?? 0)), "output_tokens": 0],
        ]
        output.append(event("message_start", ["type": "message_start", "message": message]))
    }

    /// The events one chunk produces.
    public mutating func encode(_ chunk: ChatChunk) -> [ByteBuffer] {
        var output: [ByteBuffer] = []
        start(chunk, into: &output)
        if let usage = chunk.usage { self.usage = usage }
        for choice in chunk.choices where choice.index == 0 {
            if let text = choice.delta.content, !text.isEmpty {
                if openBlock == nil || openBlock!.isTool {
                    closeBlock(into: &output)
                    let index = nextBlockIndex
                    nextBlockIndex += 1
                    openBlock = (index, false, -1)
                    output.append(event("content_block_start", ["type": "content_block_start", "index": .integer(Int64(index)),
                                                                "content_block": ["type": "text", "text": ""]]))
                }
                output.append(event("content_block_delta", ["type": "content_block_delta", "index": .integer(Int64(openBlock!.index)),
                                                            "delta": ["type": "text_delta", "text": .string(text)]]))
            }
            for call in choice.delta.toolCalls {
                if blockByTool[call.index] == nil {
                    closeBlock(into: &output)
                    let index = nextBlockIndex
                    nextBlockIndex += 1
                    blockByTool[call.index] = index
                    openBlock = (index, true, call.index)
                    output.append(event("content_block_start", [
                        "type": "content_block_start", "index": .integer(Int64(index)),
                        "content_block": ["type": "tool_use", "id": .string(call.id ?? "toolu_\(index)"),
                                          "name": .string(call.name ?? ""), "input": .object(JSONObject())],
                    ]))
                }
                if let arguments = call.arguments, !arguments.isEmpty, let index = blockByTool[call.index] {
                    output.append(event("content_block_delta", ["type": "content_block_delta", "index": .integer(Int64(index)),
                                                                "delta": ["type": "input_json_delta", "partial_json": .string(arguments)]]))
                }
            }
            if let finish = choice.finishReason {
                stopReason = AnthropicWire.stopReason(finish)
            }
        }
        return output
    }

    /// The closing events once the canonical stream ended.
    public mutating func finish() -> [ByteBuffer] {
        var output: [ByteBuffer] = []
        if !started {
            start(ChatChunk(id: "", created: 0, model: model, choices: []), into: &output)
        }
        closeBlock(into: &output)
        var usageObject: JSONObject = ["output_tokens": .integer(Int64(usage?.completionTokens ?? 0))]
        if let usage {
            for (key, value) in AnthropicWire.encodeUsage(usage) where key != "output_tokens" { usageObject[key] = value }
        }
        output.append(event("message_delta", [
            "type": "message_delta",
            "delta": ["stop_reason": .string(stopReason ?? "end_turn"), "stop_sequence": .null],
            "usage": .object(usageObject),
        ]))
        output.append(event("message_stop", ["type": "message_stop"]))
        return output
    }

    /// A terminal `error` event for a stream that failed after it started.
    public static func errorEvent(_ error: GatewayError) -> ByteBuffer {
        SSEWriter.event("error", JSONWriter.bytes(["type": "error", "error": ["type": .string(error.kind.anthropicType),
                                                                             "message": .string(error.message),
                                                                             "code": .string(error.code.rawValue)]]))
    }
}
