import PortcullisCore
import Synchronization

/// Restores placeholders in streamed chat chunks, one restorer per choice and one per tool
/// call's arguments; held-back tails go out with the choice's finishing chunk.
public final class ChunkRestorer: Sendable {
    private let vault: PlaceholderVault
    private let restorers = Mutex<[Int: StreamRestorer]>([:])
    /// Tool calls' argument restorers by choice, then call index.
    private let toolRestorers = Mutex<[Int: [Int: StreamRestorer]]>([:])

    public init(vault: PlaceholderVault) {
        self.vault = vault
    }

    public func restore(_ chunk: ChatChunk) -> ChatChunk {
        var chunk = chunk
        restorers.withLock { restorers in
            for position in chunk.choices.indices {
                let index = chunk.choices[position].index
                var restorer = restorers[index] ?? StreamRestorer(vault: vault)
                let delta = chunk.choices[position].delta.content
                var text = restorer.feed(delta ?? "")
                if chunk.choices[position].finishReason != nil { text += restorer.flush() }
                restorers[index] = restorer
                if delta != nil || !text.isEmpty { chunk.choices[position].delta.content = text }
            }
        }
        toolRestorers.withLock { restorers in
            for position in chunk.choices.indices {
                let choice = chunk.choices[position].index
                var calls = restorers[choice] ?? [:]
                for delta in chunk.choices[position].delta.toolCalls.indices {
                    let call = chunk.choices[position].delta.toolCalls[delta]
                    guard let fragment = call.arguments else { continue }
                    var restorer = calls[call.index] ?? StreamRestorer(vault: vault)
                    chunk.choices[position].delta.toolCalls[delta].arguments = restorer.feed(fragment)
                    calls[call.index] = restorer
                }
                if chunk.choices[position].finishReason != nil {
                    for (index, var restorer) in calls.sorted(by: { $0.key < $1.key }) {
                        let tail = restorer.flush()
                        if !tail.isEmpty { chunk.choices[position].delta.toolCalls.append(ToolCallDelta(index: index, arguments: tail)) }
                    }
                    calls = [:]
                }
                restorers[choice] = calls
            }
        }
        return chunk
    }
}

/// Output guards on a streamed chat answer, one `StreamOutputGuard` per choice: text is
/// released only once inspected; a block throws the stream's terminal error (and the rest of
/// the answer is never read). Findings are recorded when the stream ends or is blocked.
public final class ChunkGuard: Sendable {
    private let inspector: OutputInspector
    /// One guard per choice's text and per tool call's arguments.
    private let guards = Mutex<[StreamKey: StreamOutputGuard]>([:])
    struct StreamKey: Hashable {
        var choice: Int
        /// The tool call's index; nil for the text.
        var call: Int?
    }
    private let record: @Sendable ([(finding: GuardFinding, action: GuardAction)]) -> Void
    /// The JSON the request asked for, when the policy's `format` guard checks streams: each
    /// choice's text is kept and checked when the choice finishes (no retry: the text is out).
    private let format: ResponseFormat?
    private let delivered = Mutex<[Int: String]>([:])

    public init(inspector: OutputInspector, format: ResponseFormat? = nil,
         record: @escaping @Sendable ([(finding: GuardFinding, action: GuardAction)]) -> Void) {
        self.inspector = inspector
        self.record = record
        switch format {
        case .jsonObject?, .jsonSchema?: self.format = inspector.policy.output.guards.contains("format") ? format : nil
        case .text?, nil: self.format = nil
        }
    }

    public func apply(_ chunk: ChatChunk) throws(GatewayError) -> ChatChunk {
        var chunk = chunk
        var blocked: GuardFinding?
        guards.withLock { guards in
            for position in chunk.choices.indices {
                let index = chunk.choices[position].index
                let finishing = chunk.choices[position].finishReason != nil
                /// Feeds `delta` to the guard of `key` (ending it when the choice finishes): what may be delivered now.
                func pass(_ delta: String?, key: StreamKey, json: Bool) -> String {
                    var streamGuard = guards[key] ?? StreamOutputGuard(inspector: inspector, json: json)
                    var text = ""
                    var step = streamGuard.feed(delta ?? "")
                    if case .release(let released) = step, finishing {
                        text = released
                        step = streamGuard.finish()
                    }
                    switch step {
                    case .release(let released): text += released
                    case .block(let finding): blocked = blocked ?? finding
                    }
                    guards[key] = streamGuard
                    return text
                }
                let delta = chunk.choices[position].delta.content
                let text = pass(delta, key: StreamKey(choice: index, call: nil), json: false)
                if delta != nil || !text.isEmpty { chunk.choices[position].delta.content = text }
                // Tool calls' arguments stream in fragments of JSON: each call is held back and
                // inspected like text, and whatever is still held when the choice ends goes out
                // with the finishing chunk.
                var calls = Set<Int>()
                for call in chunk.choices[position].delta.toolCalls.indices {
                    let callIndex = chunk.choices[position].delta.toolCalls[call].index
                    calls.insert(callIndex)
                    let fragment = chunk.choices[position].delta.toolCalls[call].arguments
                    let released = pass(fragment, key: StreamKey(choice: index, call: callIndex), json: true)
                    if fragment != nil || !released.isEmpty { chunk.choices[position].delta.toolCalls[call].arguments = released }
                }
                if finishing {
                    let held = guards.keys.compactMap { $0.choice == index ? $0.call : nil }.filter { !calls.contains($0) }.sorted()
                    for call in held {
                        let rest = pass(nil, key: StreamKey(choice: index, call: call), json: true)
                        if !rest.isEmpty { chunk.choices[position].delta.toolCalls.append(ToolCallDelta(index: call, arguments: rest)) }
                    }
                }
            }
        }
        if let blocked {
            finish()
            throw GatewayError(status: 400, kind: .invalidRequest, code: .guardrailBlocked,
                               message: "The answer was stopped by the \(blocked.category.rawValue) output guardrail (\(blocked.risk) risk, "
                                   + "policy '\(inspector.policy.name)').")
        }
        if let format, let problem = checkFormat(chunk, format) {
            let finding = GuardFinding(guardName: "format", category: .format, risk: .medium, score: 1, reason: problem)
            record([(finding, .block)])
            finish()
            throw GatewayError(status: 400, kind: .invalidRequest, code: .guardrailBlocked,
                               message: "The answer is not the JSON the request's response_format asked for: \(problem).")
        }
        return chunk
    }

    /// Keeps each choice's delivered text; when a choice finishes (not with a tool call), its
    /// whole text is checked.
    private func checkFormat(_ chunk: ChatChunk, _ format: ResponseFormat) -> String? {
        delivered.withLock { delivered in
            for choice in chunk.choices {
                delivered[choice.index, default: ""] += choice.delta.content ?? ""
                if let reason = choice.finishReason, reason != .toolCalls,
                   let problem = FormatCheck.problem(in: delivered[choice.index] ?? "", format: format) {
                    return problem
                }
            }
            return nil
        }
    }

    /// Records every choice's findings, once.
    public func finish() {
        let found = guards.withLock { guards in
            defer { guards.removeAll() }
            return guards.values.flatMap(\.findings)
        }
        record(found)
    }
}

extension PlaceholderVault {
    /// A completion with the placeholders in its messages turned back into the originals.
    public func restore(_ completion: ChatCompletion) -> ChatCompletion {
        var completion = completion
        for index in completion.choices.indices {
            if case .text(let text)? = completion.choices[index].message.content {
                completion.choices[index].message.content = .text(restore(text))
            }
            for call in completion.choices[index].message.toolCalls.indices {
                completion.choices[index].message.toolCalls[call].arguments = restore(completion.choices[index].message.toolCalls[call].arguments)
            }
        }
        return completion
    }
}
