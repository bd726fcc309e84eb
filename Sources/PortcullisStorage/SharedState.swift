import PortcullisCore
import Synchronization

/// The outcome of asking a sliding-window limiter for room.
public struct WindowDecision: Sendable, Equatable {
    /// Whether the cost was admitted (and counted).
    public var allowed: Bool
    /// The window's estimated count after this decision.
    public var count: Double
    /// Room left in the window.
    public var remaining: Int64
    /// Seconds until the cost would fit, when refused; 0 when allowed.
    public var retryAfter: Double
    /// Seconds until the current fixed window rolls over.
    public var resetAfter: Double
}

/// One check of an admission, decided together with the others by `SharedState.admit`.
public enum LimitCheck: Sendable, Equatable {
    /// `cost` units under a sliding window of `limit` per `window` seconds.
    case window(key: String, cost: Int64, limit: Int64, window: Double)
    /// A reservation of `amount` against `cap`; when `mustExist`, an entry not there yet is
    /// answered `nil` (the caller seeds it from the durable record and asks again).
    case reserve(key: String, amount: Int64, cap: Int64, ttl: Double, mustExist: Bool)

    /// The key checked.
    public var key: String {
        switch self {
        case .window(let key, _, _, _), .reserve(let key, _, _, _, _): key
        }
    }

    /// What the check asks for: the window's cost, or the reservation's amount.
    public var cost: Int64 {
        switch self {
        case .window(_, let cost, _, _), .reserve(_, let cost, _, _, _): cost
        }
    }
}

/// How one check of an admission came out on its own.
public enum LimitOutcome: Sendable, Equatable {
    case window(WindowDecision)
    /// True reserved (or would have), false no room, nil no entry yet.
    case reserve(Bool?)

    var passes: Bool {
        switch self {
        case .window(let decision): decision.allowed
        case .reserve(let reserved): reserved == true
        }
    }
}

/// One part of settling a request, done together with the others by `SharedState.settle(_:now:)`.
public enum LimitSettlement: Sendable, Equatable {
    /// Adds `cost` to the current fixed window of `key` without a limit (real tokens beyond the estimate).
    case add(key: String, cost: Int64, window: Double)
    /// Releases `reserved` and records `actual` as spent, as `SharedState.settle(key:reserved:actual:ttl:)`.
    case settle(key: String, reserved: Int64, actual: Int64, ttl: Double)
}

/// State that every replica must see the same way: sliding-window counters for rate
/// limits and reservations against caps for budgets.
///
/// The in-process implementation serves one process; the Redis implementation makes the
/// same decisions across replicas, each operation atomic on the server.
public protocol SharedState: Sendable {
    /// Admits `cost` units under `key` if the sliding-window estimate stays within `limit` per `window` seconds.
    func consume(key: String, cost: Int64, limit: Int64, window: Double, now: Double) async throws -> WindowDecision
    /// Reserves `amount` under `key` if spent + reserved + amount stays within `cap`; true when reserved.
    func reserve(key: String, amount: Int64, cap: Int64, ttl: Double) async throws -> Bool
    /// Creates `key` with `spent` already spent, unless it exists; true when it created it.
    @discardableResult
    func seed(key: String, spent: Int64, ttl: Double) async throws -> Bool
    /// Releases a reservation of `reserved` and records `actual` as spent (nothing when the
    /// entry is gone: the durable record seeds it again).
    func settle(key: String, reserved: Int64, actual: Int64, ttl: Double) async throws
    /// Spent and reserved amounts under `key`.
    func balance(key: String) async throws -> (spent: Int64, reserved: Int64)
    /// Decides every check of one admission at once, all or nothing: each outcome says how its
    /// check came out on its own, and the checks are applied (windows counted, reservations
    /// made) only when every one of them passes.
    ///
    /// - Parameter affinity: names who is admitted (the key or user): admissions and
    ///   settlements with one affinity are applied in the order they were made.
    func admit(_ checks: [LimitCheck], affinity: String, now: Double) async throws -> [LimitOutcome]
    /// Settles every part at once. Returns once the settlement is applied or, for a remote
    /// store, queued for it: an admission made afterwards with the same affinity sees it.
    func settle(_ settlements: [LimitSettlement], affinity: String, now: Double) async throws
}

/// The sliding-window arithmetic both implementations share: the previous fixed window's
/// count, weighted by how much of it still overlaps the sliding window, plus the current one.
public enum SlidingWindow {
    /// The fixed window `now` falls in, and how far into it (0..<1).
    public static func position(now: Double, window: Double) -> (index: Int64, fraction: Double) {
        let index = Int64((now / window).rounded(.down))
        return (index, (now - Double(index) * window) / window)
    }

    /// The decision for counts `previous` and `current` (before adding `cost`).
    public static func decide(previous: Int64, current: Int64, cost: Int64, limit: Int64, window: Double, fraction: Double,
                              admitted: Bool) -> WindowDecision {
        let weight = 1 - fraction
        let before = Double(previous) * weight + Double(current)
        let after = admitted ? before + Double(cost) : before
        let resetAfter = (1 - fraction) * window
        var retryAfter = 0.0
        if !admitted {
            if cost > limit {
                retryAfter = resetAfter + window
            } else if current + cost > limit {
                // No room left in this window: in the next one this window's count decays
                // from full weight; wait until it has decayed enough.
                let weightNeeded = min(1, Double(limit - cost) / Double(current))
                retryAfter = resetAfter + (1 - weightNeeded) * window
            } else {
                // Room appears as the previous window's weight decays.
                let weightNeeded = Double(limit - current - cost) / Double(previous)
                retryAfter = max(0, (weight - weightNeeded) * window)
            }
        }
        return WindowDecision(allowed: admitted, count: after, remaining: max(0, Int64((Double(limit) - after).rounded(.down))),
                              retryAfter: retryAfter, resetAfter: resetAfter)
    }
}

/// One process's shared state: exact, lock-protected, entries expire.
public final class InProcessSharedState: SharedState {
    private struct Counter {
        var value: Int64
        var expiresAt: Double
    }

    private struct Budget {
        var spent: Int64 = 0
        var reserved: Int64 = 0
        var expiresAt: Double = 0
    }

    private struct State {
        var counters: [String: Counter] = [:]
        var budgets: [String: Budget] = [:]
        var operations = 0
    }

    private let state = Mutex(State())
    private let clock: @Sendable () -> Double

    /// - Parameter clock: seconds since some epoch, for expiry; the wall clock by default.
    public init(clock: @escaping @Sendable () -> Double = InProcessSharedState.uptimeSeconds) {
        self.clock = clock
    }

    public func consume(key: String, cost: Int64, limit: Int64, window: Double, now: Double) async throws -> WindowDecision {
        let (index, fraction) = SlidingWindow.position(now: now, window: window)
        let currentKey = "\(key):\(index)"
        let previousKey = "\(key):\(index - 1)"
        let wall = clock()
        return state.withLock { state in
            state.operations += 1
            if state.operations % 1024 == 0 { state.counters = state.counters.filter { $0.value.expiresAt > wall } }
            let current = state.counters[currentKey].flatMap { $0.expiresAt > wall ? $0.value : nil } ?? 0
            let previous = state.counters[previousKey].flatMap { $0.expiresAt > wall ? $0.value : nil } ?? 0
            let estimate = Double(previous) * (1 - fraction) + Double(current)
            let admitted = estimate + Double(cost) <= Double(limit)
            if admitted { state.counters[currentKey] = Counter(value: current + cost, expiresAt: wall + 2 * window) }
            return SlidingWindow.decide(previous: previous, current: current, cost: cost, limit: limit, window: window,
                                        fraction: fraction, admitted: admitted)
        }
    }

    public func admit(_ checks: [LimitCheck], affinity: String, now: Double) async throws -> [LimitOutcome] {
        let wall = clock()
        return state.withLock { state in
            state.operations += 1
            if state.operations % 1024 == 0 { state.counters = state.counters.filter { $0.value.expiresAt > wall } }
            var outcomes: [LimitOutcome] = []
            outcomes.reserveCapacity(checks.count)
            for check in checks {
                switch check {
                case .window(let key, let cost, let limit, let window):
                    let (index, fraction) = SlidingWindow.position(now: now, window: window)
                    let current = state.counters["\(key):\(index)"].flatMap { $0.expiresAt > wall ? $0.value : nil } ?? 0
                    let previous = state.counters["\(key):\(index - 1)"].flatMap { $0.expiresAt > wall ? $0.value : nil } ?? 0
                    let passes = Double(previous) * (1 - fraction) + Double(current) + Double(cost) <= Double(limit)
                    outcomes.append(.window(SlidingWindow.decide(previous: previous, current: current, cost: cost, limit: limit,
                                                                 window: window, fraction: fraction, admitted: passes)))
                case .reserve(let key, let amount, let cap, _, let mustExist):
                    let entry = state.budgets[key].flatMap { $0.expiresAt > wall ? $0 : nil }
                    if entry == nil && mustExist {
                        outcomes.append(.reserve(nil))
                    } else {
                        let budget = entry ?? Budget()
                        outcomes.append(.reserve(budget.spent + budget.reserved + amount <= cap))
                    }
                }
            }
            guard outcomes.allSatisfy(\.passes) else { return outcomes }
            for check in checks {
                switch check {
                case .window(let key, let cost, _, let window):
                    let counterKey = "\(key):\(SlidingWindow.position(now: now, window: window).index)"
                    let current = state.counters[counterKey].flatMap { $0.expiresAt > wall ? $0.value : nil } ?? 0
                    state.counters[counterKey] = Counter(value: current + cost, expiresAt: wall + 2 * window)
                case .reserve(let key, let amount, _, let ttl, _):
                    var entry = state.budgets[key].flatMap { $0.expiresAt > wall ? $0 : nil } ?? Budget()
                    entry.reserved += amount
                    entry.expiresAt = wall + ttl
                    state.budgets[key] = entry
                }
            }
            return outcomes
        }
    }

    public func settle(_ settlements: [LimitSettlement], affinity: String, now: Double) async throws {
        let wall = clock()
        state.withLock { state in
            for settlement in settlements {
                switch settlement {
                case .add(let key, let cost, let window):
                    let counterKey = "\(key):\(SlidingWindow.position(now: now, window: window).index)"
                    let current = state.counters[counterKey].flatMap { $0.expiresAt > wall ? $0.value : nil } ?? 0
                    state.counters[counterKey] = Counter(value: current + cost, expiresAt: wall + 2 * window)
                case .settle(let key, let reserved, let actual, let ttl):
                    guard var entry = state.budgets[key].flatMap({ $0.expiresAt > wall ? $0 : nil }) else { continue }
                    entry.reserved = max(0, entry.reserved - reserved)
                    entry.spent += actual
                    entry.expiresAt = wall + ttl
                    state.budgets[key] = entry
                }
            }
        }
    }

    public func reserve(key: String, amount: Int64, cap: Int64, ttl: Double) async throws -> Bool {
        let wall = clock()
        return state.withLock { state in
            var entry = state.budgets[key].flatMap { $0.expiresAt > wall ? $0 : nil } ?? Budget()
            guard entry.spent + entry.reserved + amount <= cap else { return false }
            entry.reserved += amount
            entry.expiresAt = wall + ttl
            state.budgets[key] = entry
            return true
        }
    }

    public func seed(key: String, spent: Int64, ttl: Double) async throws -> Bool {
        let wall = clock()
        return state.withLock { state in
            if let entry = state.budgets[key], entry.expiresAt > wall { return false }
            state.budgets[key] = Budget(spent: spent, reserved: 0, expiresAt: wall + ttl)
            return true
        }
    }

    public func settle(key: String, reserved: Int64, actual: Int64, ttl: Double) async throws {
        let wall = clock()
        state.withLock { state in
            guard var entry = state.budgets[key].flatMap({ $0.expiresAt > wall ? $0 : nil }) else { return }
            entry.reserved = max(0, entry.reserved - reserved)
            entry.spent += actual
            entry.expiresAt = wall + ttl
            state.budgets[key] = entry
        }
    }

    public func balance(key: String) async throws -> (spent: Int64, reserved: Int64) {
        let wall = clock()
        return state.withLock { state in
            guard let entry = state.budgets[key], entry.expiresAt > wall else { return (0, 0) }
            return (entry.spent, entry.reserved)
        }
    }
}

extension InProcessSharedState {
    private static let processStart = ContinuousClock.now

    /// Seconds since this process first asked, on a monotonic clock: the default expiry clock.
    public static func uptimeSeconds() -> Double {
        (ContinuousClock.now - processStart).inSeconds
    }
}
