import PortcullisCore

/// A cached answer replayed as a stream, and a streamed answer assembled for the cache.
public enum CachedStream {
    /// Characters of content per replayed chunk.
    static let pieceLength = 48

    /// The canonical chunks that deliver `completion` as a stream of the usual shape: per choice
    /// a first chunk with the role, content in pieces, each tool call, then a chunk with the
    /// finish reason; last, the usage chunk (the dialect's framing shows it only when asked).
    public static func chunks(of completion: ChatCompletion) -> [ChatChunk] {
        var chunks: [ChatChunk] = []
        func chunk(_ choice: ChunkChoice) -> ChatChunk {
            ChatChunk(id: completion.id, created: completion.created, model: completion.model, choices: [choice],
                      systemFingerprint: completion.systemFingerprint)
        }
        for choice in completion.choices {
            let text = choice.message.content?.text ?? ""
            var pieces = text.isEmpty ? [] : pieces(of: text)
            chunks.append(chunk(ChunkChoice(index: choice.index, delta: ChunkDelta(role: .assistant, content: pieces.isEmpty ? "" : pieces.removeFirst()))))
            for piece in pieces { chunks.append(chunk(ChunkChoice(index: choice.index, delta: ChunkDelta(content: piece)))) }
            for (position, call) in choice.message.toolCalls.enumerated() {
                chunks.append(chunk(ChunkChoice(index: choice.index, delta: ChunkDelta(toolCalls: [
                    ToolCallDelta(index: position, id: call.id, name: call.name, arguments: call.arguments),
                ]))))
            }
            chunks.append(chunk(ChunkChoice(index: choice.index, delta: ChunkDelta(), finishReason: choice.finishReason ?? .stop)))
        }
        if let usage = completion.usage {
            chunks.append(ChatChunk(id: completion.id, created: completion.created, model: completion.model, choices: [], usage: usage,
                                    systemFingerprint: completion.systemFingerprint))
        }
        return chunks
    }

    static func pieces(of text: String) -> [String] {
        var pieces: [String] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            let end = rest.index(rest.startIndex, offsetBy: pieceLength, limitedBy: rest.endIndex) ?? rest.endIndex
            pieces.append(String(rest[..<end]))
            rest = rest[end...]
        }
        return pieces
    }
}

/// Builds the whole answer of a stream from its canonical chunks as they pass, so that a
/// streamed answer can be cached like a whole one.
public struct StreamAssembler: Sendable {
    private struct Choice {
        var content = ""
        var refusal = ""
        var calls: [(id: String, name: String, arguments: String)] = []
        var finishReason: FinishReason?
    }

    private var id = ""
    private var created: Int64 = 0
    private var model = ""
    private var fingerprint: String?
    private var choices: [Int: Choice] = [:]
    private var usage: Usage?

    public init() {}

    public mutating func add(_ chunk: ChatChunk) {
        if id.isEmpty {
            id = chunk.id
            created = chunk.created
            model = chunk.model
        }
        fingerprint = chunk.systemFingerprint ?? fingerprint
        if let usage = chunk.usage { self.usage = usage }
        for part in chunk.choices {
            var choice = choices[part.index] ?? Choice()
            if let content = part.delta.content { choice.content += content }
            if let refusal = part.delta.refusal { choice.refusal += refusal }
            for delta in part.delta.toolCalls {
                while choice.calls.count <= delta.index { choice.calls.append(("", "", "")) }
                if let id = delta.id { choice.calls[delta.index].id = id }
                if let name = delta.name { choice.calls[delta.index].name += name }
                if let arguments = delta.arguments { choice.calls[delta.index].arguments += arguments }
            }
            if let reason = part.finishReason { choice.finishReason = reason }
            choices[part.index] = choice
        }
    }

    /// The answer the chunks made.
    public var completion: ChatCompletion {
        let assembled = choices.keys.sorted().map { index -> ChatChoice in
            let choice = choices[index]!
            let message = ChatMessage(role: .assistant, content: choice.content.isEmpty && !choice.calls.isEmpty ? nil : .text(choice.content),
                                      toolCalls: choice.calls.map { ToolCall(id: $0.id, name: $0.name, arguments: $0.arguments) },
                                      refusal: choice.refusal.isEmpty ? nil : choice.refusal)
            return ChatChoice(index: index, message: message, finishReason: choice.finishReason)
        }
        return ChatCompletion(id: id, created: created, model: model, choices: assembled, usage: usage, systemFingerprint: fingerprint)
    }
}
