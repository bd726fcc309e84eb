import Synchronization

/// Shared state that survives the loss of its shared store: while the primary (Redis) is
/// unreachable, decisions fall back to this replica's own state (limits hold per replica
/// instead of across replicas); the primary is tried again after `retryInterval` and used
/// as soon as it answers.
public final class ResilientSharedState: SharedState {
    private let primary: any SharedState
    private let fallback: any SharedState
    private let retryInterval: Double
    private let clock: @Sendable () -> Double
    /// When the primary last failed (clock seconds), nil while it is healthy.
    private let failedAt = Mutex<Double?>(nil)

    public init(primary: any SharedState, fallback: any SharedState = InProcessSharedState(), retryInterval: Double = 1,
                clock: @escaping @Sendable () -> Double = InProcessSharedState.uptimeSeconds) {
        self.primary = primary
        self.fallback = fallback
        self.retryInterval = retryInterval
        self.clock = clock
    }

    /// Whether decisions are currently made per replica because the primary is unreachable.
    public var isDegraded: Bool { failedAt.withLock { $0 != nil } }

    /// Takes the outcome of a health probe of the primary: a failure switches to per-replica
    /// decisions at once (no request waits on an unreachable primary), a success returns to it.
    public func recordProbe(reachable: Bool) {
        let now = clock()
        failedAt.withLock { failed in
            if reachable {
                failed = nil
            } else if failed == nil {
                failed = now
            }
        }
    }

    private func run<T>(_ operation: (any SharedState) async throws -> T) async throws -> T {
        let now = clock()
        let usePrimary = failedAt.withLock { failed in failed.map { now - $0 >= retryInterval } ?? true }
        guard usePrimary else { return try await operation(fallback) }
        do {
            let result = try await operation(primary)
            failedAt.withLock { $0 = nil }
            return result
        } catch {
            failedAt.withLock { $0 = now }
            return try await operation(fallback)
        }
    }

    public func consume(key: String, cost: Int64, limit: Int64, window: Double, now: Double) async throws -> WindowDecision {
        try await run { try await $0.consume(key: key, cost: cost, limit: limit, window: window, now: now) }
    }

    public func reserve(key: String, amount: Int64, cap: Int64, ttl: Double) async throws -> Bool {
        try await run { try await $0.reserve(key: key, amount: amount, cap: cap, ttl: ttl) }
    }

    public func seed(key: String, spent: Int64, ttl: Double) async throws -> Bool {
        try await run { try await $0.seed(key: key, spent: spent, ttl: ttl) }
    }

    public func settle(key: String, reserved: Int64, actual: Int64, ttl: Double) async throws {
        try await run { try await $0.settle(key: key, reserved: reserved, actual: actual, ttl: ttl) }
    }

    public func admit(_ checks: [LimitCheck], affinity: String, now: Double) async throws -> [LimitOutcome] {
        try await run { try await $0.admit(checks, affinity: affinity, now: now) }
    }

    public func settle(_ settlements: [LimitSettlement], affinity: String, now: Double) async throws {
        try await run { try await $0.settle(settlements, affinity: affinity, now: now) }
    }

    public func balance(key: String) async throws -> (spent: Int64, reserved: Int64) {
        try await run { try await $0.balance(key: key) }
    }
}
