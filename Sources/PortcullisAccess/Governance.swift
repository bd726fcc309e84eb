import Foundation
import PortcullisCore
import ServiceLifecycle
import Synchronization

/// Limits, budgets and usage accounting around model calls.
public struct Governance: Sendable {
    public let admission: Admission
    public let recorder: UsageRecorder
    /// Output tokens assumed for a budget reservation when a request sets no `max_tokens`.
    public let reserveOutputTokens: Int
    /// Where settlements go that cannot run where they arose.
    public let settlements: SettlementQueue

    public init(admission: Admission, recorder: UsageRecorder, reserveOutputTokens: Int, settlements: SettlementQueue = SettlementQueue()) {
        self.admission = admission
        self.recorder = recorder
        self.reserveOutputTokens = reserveOutputTokens
        self.settlements = settlements
    }

    /// Admits a call (rate limits, concurrency, worst-case budget reservation) or throws the `429`.
    /// `prices`: those of the model's deployments; the reservation assumes the most expensive.
    public func admit(_ principal: Principal, model: String, prices: [TokenPrice], promptBytes: Int, maxTokens: Int?) async throws -> Grant {
        let inputPrice = prices.map(\.inputPerMillion).max() ?? 0
        let outputPrice = prices.map(\.outputPerMillion).max() ?? 0
        let promptTokens = max(1, Grant.estimatedTokens(characters: promptBytes))
        let outputTokens = Int64(maxTokens ?? reserveOutputTokens)
        let worstCase = Int64((Double(promptTokens) * inputPrice + Double(outputTokens) * outputPrice).rounded(.up))
        let ticket = try await admission.admit(principal, model: model, estimatedTokens: promptTokens, worstCaseMicros: worstCase)
        return Grant(governance: self, principal: principal, model: model, ticket: ticket, promptTokens: promptTokens,
                     inputPrice: inputPrice, outputPrice: outputPrice)
    }
}

/// One admitted call: settled exactly once with its real usage, or released if it failed.
public final class Grant: Sendable {
    public let governance: Governance
    public let principal: Principal
    public let model: String
    private let ticket: Mutex<AdmissionTicket>
    private let finished = Atomic<Bool>(false)
    public let promptTokens: Int64
    public let inputPrice: Double
    public let outputPrice: Double
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
    public var headers: [String: String] { ticket.withLock { $0.headers } }

    /// Whether a stream may go on to `outputTokens` output tokens: within the reservation, or
    /// after extending it; false when a budget has no room left (the stream must end).
    public func allowsOutput(tokens outputTokens: Int64) async -> Bool {
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

    /// Tokens assumed for `count` characters (or bytes) when a provider reports no usage: the one
    /// estimate of admission, streams and settlement, about four per token, rounded up.
    public static func estimatedTokens(characters count: Int) -> Int64 { Int64((count + 3) / 4) }

    /// Settles at the real usage (estimated from `outputCharacters` when the provider reported none).
    @discardableResult
    public func settle(usage: Usage?, price: TokenPrice, outputCharacters: Int = 0) async -> Settlement? {
        guard !finished.exchange(true, ordering: .relaxed) else { return nil }
        let prompt = usage.map { Int64($0.promptTokens) } ?? promptTokens
        let completion = usage.map { Int64($0.completionTokens) } ?? Self.estimatedTokens(characters: outputCharacters)
        let cost = Int64((Double(prompt) * price.inputPerMillion + Double(completion) * price.outputPerMillion).rounded(.up))
        governance.recorder.record(keyID: principal.keyID, userID: principal.userID, teamID: principal.teamID, model: model,
                                   promptTokens: prompt, completionTokens: completion, costMicros: cost)
        await governance.admission.settle(ticket.withLock { $0 }, totalTokens: prompt + completion, costMicros: cost)
        return Settlement(promptTokens: prompt, completionTokens: completion, costMicros: cost)
    }

    /// Releases everything without cost (the call failed before the provider charged).
    public func release() async {
        guard !finished.exchange(true, ordering: .relaxed) else { return }
        await governance.admission.release(ticket.withLock { $0 })
    }

    deinit {
        // Every path settles or releases; should one be missed, what it holds is still given back.
        guard !finished.load(ordering: .relaxed) else { return }
        let admission = governance.admission, ticket = ticket.withLock { $0 }
        governance.settlements.enqueue { await admission.release(ticket) }
    }
}

/// What a call was charged: its tokens (reported by the provider, or estimated) and cost.
public struct Settlement: Sendable, Equatable {
    public var promptTokens: Int64
    public var completionTokens: Int64
    /// Micro-units of the price currency.
    public var costMicros: Int64
}

/// Watches a streamed answer: counts its output, ends it cleanly when a hard budget would
/// be crossed, and settles the grant exactly once however the stream ends.
///
/// The response body normally calls `finish`. When it never runs (the client left before the
/// response head could be written) or stops without finishing, the meter's `deinit` hands the
/// settlement to the governance's `SettlementQueue`: a concurrency slot or budget reservation
/// is never left held until its TTL.
public final class StreamMeter: Sendable {
    private struct State {
        var characters = 0
        var usage: Usage?
    }

    private let state = Mutex(State())
    private let finished = Atomic<Bool>(false)
    public let grant: Grant
    public let price: TokenPrice
    /// Told what the stream was charged once it is settled (the request's audit record).
    let onSettle: (@Sendable (Settlement) -> Void)?

    public init(grant: Grant, price: TokenPrice, onSettle: (@Sendable (Settlement) -> Void)? = nil) {
        self.grant = grant
        self.price = price
        self.onSettle = onSettle
    }

    /// Counts `characters` of output (and the usage the provider reported, if any); false when
    /// the stream must stop before them.
    public func admit(characters: Int, usage: Usage?) async -> Bool {
        let total = state.withLock { state in
            state.characters += characters
            if let usage { state.usage = usage }
            return state.characters
        }
        guard characters > 0 else { return true }
        return await grant.allowsOutput(tokens: Grant.estimatedTokens(characters: total))
    }

    /// Counts a chat chunk's text and tool-call arguments.
    public func admit(_ chunk: ChatChunk) async -> Bool {
        let characters = chunk.choices.reduce(0) { sum, choice in
            sum + (choice.delta.content?.count ?? 0) + choice.delta.toolCalls.reduce(0) { $0 + ($1.arguments?.count ?? 0) }
        }
        return await admit(characters: characters, usage: chunk.usage)
    }

    /// Settles the grant with what was streamed.
    public func finish() async {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await Self.settle(grant, state.withLock { ($0.usage, $0.characters) }, price: price, onSettle: onSettle)
    }

    private static func settle(_ grant: Grant, _ counted: (usage: Usage?, characters: Int), price: TokenPrice,
                               onSettle: (@Sendable (Settlement) -> Void)?) async {
        if let settlement = await grant.settle(usage: counted.usage, price: price, outputCharacters: counted.characters) { onSettle?(settlement) }
    }

    deinit {
        guard !finished.load(ordering: .acquiring) else { return }
        let grant = self.grant, price = self.price, onSettle = self.onSettle
        let counted = state.withLock { ($0.usage, $0.characters) }
        grant.governance.settlements.enqueue { await Self.settle(grant, counted, price: price, onSettle: onSettle) }
    }
}

/// Runs settlements that could not run where they arose (a stream whose body was dropped):
/// a `Service`, so the work is part of the application's lifecycle and is drained, not lost,
/// when the gateway shuts down.
public final class SettlementQueue: Service, Sendable {
    public typealias Job = @Sendable () async -> Void
    private let jobs: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation
    private let pending = Atomic<Int>(0)

    public init() {
        (jobs, continuation) = AsyncStream.makeStream(of: Job.self)
    }

    /// Queues `job`; it runs soon, on the queue's service task.
    public func enqueue(_ job: @escaping Job) {
        pending.add(1, ordering: .relaxed)
        continuation.yield(job)
    }

    /// Jobs queued and not finished yet.
    public var pendingCount: Int { pending.load(ordering: .relaxed) }

    public func run() async throws {
        let continuation = self.continuation
        await withGracefulShutdownHandler {
            for await job in jobs {
                await job()
                pending.subtract(1, ordering: .relaxed)
            }
        } onGracefulShutdown: {
            // Ends the sequence after the jobs already queued: they still run.
            continuation.finish()
        }
    }
}
