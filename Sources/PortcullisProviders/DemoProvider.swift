import Foundation
import PortcullisCore

/// The built-in `demo` model: deterministic answers computed in-process, so a newcomer can
/// try the gateway (streaming, tools, embeddings) with no provider account.
public struct DemoProvider: ChatBackedCompletions {
    /// Pace of streamed tokens; 0 streams as fast as the client reads.
    public var tokensPerSecond: Double

    public init(tokensPerSecond: Double = 0) {
        self.tokensPerSecond = tokensPerSecond
    }

    /// A rough token count: one per four bytes of text, at least one per message.
    public static func estimateTokens(_ texts: [String]) -> Int {
        texts.reduce(0) { $0 + max(1, ($1.utf8.count + 3) / 4) }
    }

    private struct Answer {
        var pieces: [String]
        var toolCall: ToolCall?
        var promptTokens: Int
    }

    private func answer(_ request: ChatRequest, context: UpstreamContext) -> Answer {
        let lastUser = request.messages.last(where: { $0.role == .user })?.content?.text ?? ""
        let promptTokens = Self.estimateTokens(request.messages.map { $0.content?.text ?? "" })
        var wantsTool: ToolDefinition?
        switch request.toolChoice {
        case .required: wantsTool = request.tools.first
        case .function(let name): wantsTool = request.tools.first(where: { $0.name == name })
        default: break
        }
        if let tool = wantsTool, request.messages.last?.role != .tool {
            let arguments = JSONWriter.string(["input": .string(lastUser)])
            return Answer(pieces: [], toolCall: ToolCall(id: "call_demo_0", name: tool.name, arguments: arguments), promptTokens: promptTokens)
        }
        let quoted = lastUser.count > 200 ? String(lastUser.prefix(200)) + "…" : lastUser
        let text: String
        if request.messages.last?.role == .tool {
            text = "The demo model received the tool result: \(request.messages.last?.content?.text.prefix(200) ?? "")"
        } else {
            text = "Hello from the Portcullis demo model. You said: \(quoted)"
        }
        var pieces = text.streamPieces
        if let maxTokens = request.maxTokens, pieces.count > maxTokens { pieces = Array(pieces.prefix(maxTokens)) }
        return Answer(pieces: pieces, toolCall: nil, promptTokens: promptTokens)
    }

    private func identifier(_ context: UpstreamContext) -> String {
        "chatcmpl-demo-" + String(context.requestID.filter { $0.isLetter || $0.isNumber }.prefix(32))
    }

    private func finishReason(_ answer: Answer, _ request: ChatRequest) -> FinishReason {
        if answer.toolCall != nil { return .toolCalls }
        if let maxTokens = request.maxTokens, answer.pieces.count >= maxTokens { return .length }
        return .stop
    }

    public func chat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> ChatCompletion {
        let answer = answer(request, context: context)
        let message = ChatMessage(role: .assistant, content: answer.toolCall == nil ? .text(answer.pieces.joined()) : nil,
                                  toolCalls: answer.toolCall.map { [$0] } ?? [])
        let count = max(1, request.n ?? 1)
        let choices = (0..<count).map { ChatChoice(index: $0, message: message, finishReason: finishReason(answer, request)) }
        let completionTokens = answer.toolCall == nil ? answer.pieces.count : 8
        return ChatCompletion(id: identifier(context), created: Int64(Date().timeIntervalSince1970), model: target.upstreamModel,
                              choices: choices, usage: Usage(promptTokens: answer.promptTokens, completionTokens: completionTokens * count),
                              systemFingerprint: "fp_portcullis_demo")
    }

    public func streamChat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<ChatChunk> {
        let answer = answer(request, context: context)
        let id = identifier(context)
        let created = Int64(Date().timeIntervalSince1970)
        let model = target.upstreamModel
        func chunk(_ delta: ChunkDelta, finish: FinishReason? = nil) -> ChatChunk {
            ChatChunk(id: id, created: created, model: model, choices: [ChunkChoice(index: 0, delta: delta, finishReason: finish)],
                      systemFingerprint: "fp_portcullis_demo")
        }
        var chunks: [ChatChunk] = [chunk(ChunkDelta(role: .assistant, content: ""))]
        if let call = answer.toolCall {
            chunks.append(chunk(ChunkDelta(toolCalls: [ToolCallDelta(index: 0, id: call.id, name: call.name, arguments: "")])))
            let middle = call.arguments.index(call.arguments.startIndex, offsetBy: call.arguments.count / 2)
            chunks.append(chunk(ChunkDelta(toolCalls: [ToolCallDelta(index: 0, arguments: String(call.arguments[..<middle]))])))
            chunks.append(chunk(ChunkDelta(toolCalls: [ToolCallDelta(index: 0, arguments: String(call.arguments[middle...]))])))
        } else {
            chunks.append(contentsOf: answer.pieces.map { chunk(ChunkDelta(content: $0)) })
        }
        chunks.append(chunk(ChunkDelta(), finish: finishReason(answer, request)))
        let completionTokens = answer.toolCall == nil ? answer.pieces.count : 8
        chunks.append(ChatChunk(id: id, created: created, model: model, choices: [],
                                usage: Usage(promptTokens: answer.promptTokens, completionTokens: completionTokens),
                                systemFingerprint: "fp_portcullis_demo"))
        let allChunks = chunks
        let delay = tokensPerSecond > 0 ? UInt64(1_000_000_000 / tokensPerSecond) : 0
        return EventStream {
            var remaining = allChunks[...]
            var first = true
            return {
                guard let next = remaining.popFirst() else { return nil }
                if delay > 0 && !first { try await Task.sleep(nanoseconds: delay) }
                first = false
                return next
            }
        }
    }

    public func embeddings(_ request: EmbeddingRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue {
        guard let texts = request.inputTexts else {
            throw GatewayError.unsupported("The demo model embeds strings only, not token arrays.", param: "input")
        }
        let dimensions = Int(request.extra["dimensions"]?.integerValue ?? 64)
        guard (1...4096).contains(dimensions) else {
            throw GatewayError.invalidParameter("dimensions", "'dimensions' must be between 1 and 4096.")
        }
        let data: [JSONValue] = texts.enumerated().map { index, text in
            ["object": "embedding", "index": .integer(Int64(index)),
             "embedding": .array(Self.embedding(of: text, dimensions: dimensions).map(JSONValue.double))]
        }
        let tokens = Int64(Self.estimateTokens(texts))
        return ["object": "list", "data": .array(data), "model": .string(target.upstreamModel),
                "usage": ["prompt_tokens": .integer(tokens), "total_tokens": .integer(tokens)]]
    }

    public func checkHealth(target: DeploymentTarget, context: UpstreamContext) async throws {}

    /// A deterministic unit vector derived from the text's bytes (FNV-1a per dimension).
    public static func embedding(of text: String, dimensions: Int) -> [Double] {
        var vector = [Double](repeating: 0, count: dimensions)
        for dimension in 0..<dimensions {
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ UInt64(dimension &* 0x9E37_79B9)
            for byte in text.utf8 {
                hash ^= UInt64(byte)
                hash = hash &* 0x100_0000_01b3
            }
            vector[dimension] = Double(Int64(bitPattern: hash) % 10_000) / 10_000
        }
        let norm = vector.reduce(0) { $0 + $1 * $1 }.squareRoot()
        guard norm > 0 else { return vector }
        return vector.map { ($0 / norm * 1_000_000).rounded() / 1_000_000 }
    }
}
