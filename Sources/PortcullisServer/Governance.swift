import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisRouting
import Synchronization

/// Limits, budgets and usage accounting around model calls.
public struct Governance: Sendable {
    public let admission: Admission
    public let recorder: UsageRecorder
    /// Output tokens assumed for a budget reservation when a request sets no `max_tokens`.
    public let reserveOutputTokens: Int

    public init(admission: Admission, recorder: UsageRecorder, reserveOutputTokens: Int) {
        self.admission = admission
        self.recorder = recorder
        self.reserveOutputTokens = reserveOutputTokens
    }

    /// Admits a call (rate limits, concurrency, worst-case budget reservation) or throws the `429`.
    func admit(_ principal: Principal, model: String, group: ModelGroup?, promptBytes: Int, maxTokens: Int?) async throws -> Grant {
        // Prices of the most expensive deployment of the group: the reservation is a worst case.
        let inputPrice = group?.deployments.map(\.price.inputPerMillion).max() ?? 0
        let outputPrice = group?.deployments.map(\.price.outputPerMillion).max() ?? 0
        let promptTokens = Int64(max(1, promptBytes / 4))
        let outputTokens = Int64(maxTokens ?? reserveOutputTokens)
        let worstCase = Int64((Double(promptTokens) * inputPrice + Double(outputTokens) * outputPrice).rounded(.up))
        let ticket = try await admission.admit(principal, model: model, estimatedTokens: promptTokens, worstCaseMicros: worstCase)
        return Grant(governance: self, principal: principal, model: model, ticket: ticket, promptTokens: promptTokens,
                     inputPrice: inputPrice, outputPrice: outputPrice)
    }
}

/// One admitted call: settled exactly once with its real usage, or released if it failed.
final class Grant: Sendable {
    let governance: Governance
    let principal: Principal
    let model: String
    private let ticket: Mutex<AdmissionTicket>
    private let finished = Atomic<Bool>(false)
    let promptTokens: Int64
    let inputPrice: Double
    let outputPrice: Double
    /// Output tokens reserved for beyond which a stream must extend its reservation.
    private let coveredOutputTokens: Mutex<Int64>

    init(governance: Governance, principal: Principal, model: String, ticket: AdmissionTicket, promptTokens: Int64, inputPrice: Double, outputPrice: Double) {
        self.governance = governance
        self.principal = principal
        self.model = model
        self.ticket = Mutex(ticket)
        self.promptTokens = promptTokens
        self.inputPrice = inputPrice
        self.outputPrice = outputPrice
        let reservedForOutput = outputPrice > 0 ? Int64((Double(ticket.reservedMicros) - Double(promptTokens) * inputPrice) / outputPrice) : .max
        self.coveredOutputTokens = Mutex(reservedForOutput)
    }

    /// `x-ratelimit-*` headers for the response.
    var headers: [String: String] { ticket.withLock { $0.headers } }

    /// Whether a stream may go on to `outputTokens` output tokens: within the reservation, or
    /// after extending it; false when a budget has no room left (the stream must end).
    func allowsOutput(tokens outputTokens: Int64) async -> Bool {
        guard outputTokens > coveredOutputTokens.withLock({ $0 }) else { return true }
        var current = ticket.withLock { $0 }
        guard current.hasBudget else { return true }
        let step: Int64 = 256
        let additional = Int64((Double(step) * outputPrice).rounded(.up))
        guard await governance.admission.extend(&current, additional: additional) else { return false }
        let extended = current
        ticket.withLock { $0 = extended }
        coveredOutputTokens.withLock { $0 += step }
        return true
    }

    /// Settles at the real usage (estimated from `estimatedOutputTokens` when the provider reported none).
    func settle(usage: Usage?, price: TokenPrice, estimatedOutputTokens: Int64 = 0) async {
        guard !finished.exchange(true, ordering: .relaxed) else { return }
        let prompt = usage.map { Int64($0.promptTokens) } ?? promptTokens
        let completion = usage.map { Int64($0.completionTokens) } ?? estimatedOutputTokens
        let cost = Int64((Double(prompt) * price.inputPerMillion + Double(completion) * price.outputPerMillion).rounded(.up))
        governance.recorder.record(keyID: principal.keyID, userID: principal.userID, teamID: principal.teamID, model: model,
                                   promptTokens: prompt, completionTokens: completion, costMicros: cost)
        await governance.admission.settle(ticket.withLock { $0 }, totalTokens: prompt + completion, costMicros: cost)
    }

    /// Releases everything without cost (the call failed before the provider charged).
    func release() async {
        guard !finished.exchange(true, ordering: .relaxed) else { return }
        await governance.admission.release(ticket.withLock { $0 })
    }
}

/// Watches a streamed chat answer: counts its output, ends it cleanly when a hard budget
/// would be crossed, and settles the grant when it ends.
final class ChatStreamMeter: Sendable {
    private struct State {
        var characters = 0
        var usage: Usage?
    }

    private let state = Mutex(State())
    let grant: Grant?

    init(grant: Grant?) {
        self.grant = grant
    }

    /// Counts `chunk`; false when the stream must stop before it.
    func admit(_ chunk: ChatChunk) async -> Bool {
        let characters = chunk.choices.reduce(0) { sum, choice in
            sum + (choice.delta.content?.count ?? 0) + choice.delta.toolCalls.reduce(0) { $0 + ($1.arguments?.count ?? 0) }
        }
        let total = state.withLock { state in
            state.characters += characters
            if let usage = chunk.usage { state.usage = usage }
            return state.characters
        }
        guard let grant, characters > 0 else { return true }
        return await grant.allowsOutput(tokens: Int64(total / 4))
    }

    /// Settles the grant with what was streamed.
    func finish(price: TokenPrice) async {
        let (usage, characters) = state.withLock { ($0.usage, $0.characters) }
        await grant?.settle(usage: usage, price: price, estimatedOutputTokens: Int64((characters + 3) / 4))
    }
}
