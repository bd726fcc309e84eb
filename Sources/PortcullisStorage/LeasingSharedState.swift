import Synchronization

/// Shared limits in Redis without a round trip per request: each replica leases room ahead —
/// part of a rate window, some concurrency slots, part of a budget — and admits locally while
/// its lease lasts. Redis counts a lease as used the moment it is granted, so every replica
/// together never admits more than a limit allows; what a lease costs is the other way: room
/// leased by one replica and not yet used is room the others cannot have, until it is used,
/// returned (after `lifetime` seconds) or its window ends.
///
/// How much to lease: a limit's `1/fraction` beyond the request's own cost, and never more than
/// a quarter of what the limit still has room for (decided inside Redis), so that leases shrink
/// as a limit fills and near it every admission is exact. A limit below `fraction` (ten requests
/// a minute, one concurrent request) is never leased ahead: it stays exact, one round trip each.
///
/// Spend is reported to Redis in batches by `flush` (a lease's reservation covers it until
/// then); a concurrency slot or budget lease still unused after `lifetime` is given back there.
public final class LeasingSharedState: SharedState {
    public let remote: RedisSharedState
    public let fraction: Int64
    public let lifetime: Double
    private let leases = Mutex(Leases())
    private let remoteCalls = Atomic<Int>(0)

    /// Admissions that went to Redis (the rest were decided from leases).
    public var remoteAdmissions: Int { remoteCalls.load(ordering: .relaxed) }

    private struct WindowLease {
        var index: Int64
        var limit: Int64
        var window: Double
        /// Room leased and not yet used in window `index`; negative when real tokens ran past it.
        var available: Int64
        /// The limit's room as last seen in Redis, less what was admitted here since (headers).
        var remaining: Int64
        var expiresAt: Double
    }

    private struct ReserveLease {
        var cap: Int64
        var ttl: Double
        /// Reserved in Redis on this replica's behalf.
        var leased: Int64
        /// Of that, held by requests in flight.
        var used: Int64
        /// Spent by settled requests and not yet reported (still counted as leased in Redis).
        var unreported: Int64
        var expiresAt: Double
    }

    private struct Leases {
        var windows: [String: WindowLease] = [:]
        var reserves: [String: ReserveLease] = [:]
        /// Keys with a lease-ahead request in flight from this replica.
        var renewing: Set<String> = []
    }

    public init(remote: RedisSharedState, fraction: Int64 = 16, lifetime: Double = 1) {
        self.remote = remote
        self.fraction = max(1, fraction)
        self.lifetime = lifetime
    }

    /// How far ahead to lease for `check` (0: exact).
    private func extra(_ check: LimitCheck) -> Int64 {
        switch check {
        case .window(_, _, let limit, _): limit / fraction
        case .reserve(_, _, let cap, _, _): cap / fraction
        }
    }

    public func admit(_ checks: [LimitCheck], affinity: String, now: Double) async throws -> [LimitOutcome] {
        if let outcomes = leases.withLock({ Self.admitLocally(checks, leases: &$0, now: now) }) { return outcomes }
        // What the leases still hold is taken first and Redis asked only for the rest, so that a
        // replica's own leftover and the room left in Redis add up (a request that fits both
        // together is not refused). Taken now, given back if Redis refuses.
        let taken = leases.withLock { leases in checks.map { Self.take($0, from: &leases, now: now) } }
        let asked = zip(checks, taken).map { check, taken in
            switch check {
            case .window(let key, let cost, let limit, let window): LimitCheck.window(key: key, cost: cost - taken, limit: limit, window: window)
            case .reserve(let key, let amount, let cap, let ttl, let mustExist):
                LimitCheck.reserve(key: key, amount: amount - taken, cap: cap, ttl: ttl, mustExist: mustExist)
            }
        }
        // A check the lease still covered (the round trip is for another check, or the lease's
        // lifetime ran out) asks for nothing more: topping up a lease with room left would grow
        // what this replica holds in Redis with every renewal, until the limit refused everyone.
        // Only one admission at a time leases ahead for a key: when a lease runs out under load,
        // every admission in flight would otherwise ask at once, each granted a quarter of the
        // room left, until the limit had none and refused requests far below it. The others
        // ask for their own cost only (exact), while that one lease is on its way.
        let leasing = leases.withLock { leases in
            zip(checks, taken).map { check, taken -> Bool in
                guard taken < check.cost, extra(check) > 0, !leases.renewing.contains(check.key) else { return false }
                leases.renewing.insert(check.key)
                return true
            }
        }
        defer {
            leases.withLock { leases in for (check, renews) in zip(checks, leasing) where renews { leases.renewing.remove(check.key) } }
        }
        let extras = zip(checks, leasing).map { check, renews in renews ? extra(check) : 0 }
        remoteCalls.add(1, ordering: .relaxed)
        let answers: [RedisSharedState.LeaseAnswer]
        do {
            answers = try await remote.lease(asked, extras: extras, affinity: affinity, now: now)
        } catch {
            leases.withLock { leases in for (check, taken) in zip(checks, taken) { Self.giveBack(taken, for: check, to: &leases) } }
            throw error
        }
        let outcomes = answers.map(\.outcome)
        guard outcomes.allSatisfy(\.passes) else {
            leases.withLock { leases in
                for (check, (taken, outcome)) in zip(checks, zip(taken, outcomes)) {
                    // An entry Redis no longer has (restarted, or expired) takes its leases with it:
                    // they must not count next to the spend it will be seeded with.
                    if case .reserve(nil) = outcome {
                        leases.reserves[check.key] = nil
                    } else {
                        Self.giveBack(taken, for: check, to: &leases)
                    }
                }
            }
            return outcomes
        }
        var returns: [RedisSharedState.LeaseReturn] = []
        leases.withLock { leases in
            for ((check, answer), extra) in zip(zip(asked, answers), extras) {
                switch (check, answer.outcome) {
                case (.window(let key, let cost, let limit, let window), .window(let decision)):
                    // An exact check (nothing leased ahead) keeps no lease: Redis holds its count.
                    // (One asked while another admission's lease request was in flight joins that lease.)
                    guard extra > 0 || leases.windows[key] != nil || leases.renewing.contains(key) else { continue }
                    let index = SlidingWindow.position(now: now, window: window).index
                    var lease = WindowLease(index: index, limit: limit, window: window, available: 0, remaining: decision.remaining,
                                            expiresAt: now + lifetime)
                    if let old = leases.windows[key] {
                        if old.index == index && old.limit == limit {
                            lease.available = old.available
                        } else if old.available > 0 && old.index >= index - 1 {
                            returns.append(.window(key: key, index: old.index, delta: -old.available, window: old.window))
                        }
                    }
                    lease.available += answer.granted - cost
                    leases.windows[key] = lease
                case (.reserve(let key, let amount, let cap, let ttl, _), .reserve):
                    // Exact (nothing leased ahead): the reservation is the request's own, and its
                    // settlement goes straight to Redis.
                    guard extra > 0 || leases.reserves[key] != nil || leases.renewing.contains(key) else { continue }
                    var lease = leases.reserves[key] ?? ReserveLease(cap: cap, ttl: ttl, leased: 0, used: 0, unreported: 0, expiresAt: 0)
                    lease.cap = cap
                    lease.ttl = ttl
                    lease.leased += answer.granted
                    lease.used += amount
                    lease.expiresAt = now + lifetime
                    leases.reserves[key] = lease
                default:
                    break
                }
            }
        }
        try? await remote.giveBack(returns, affinity: affinity)
        return outcomes
    }

    /// Takes what a lease for `check` still holds, up to the check's cost (0 without a lease
    /// for the same window and limit, or the same cap).
    private static func take(_ check: LimitCheck, from leases: inout Leases, now: Double) -> Int64 {
        switch check {
        case .window(let key, let cost, let limit, let window):
            guard var lease = leases.windows[key], lease.limit == limit, lease.available > 0,
                  lease.index == SlidingWindow.position(now: now, window: window).index else { return 0 }
            let taken = min(lease.available, cost)
            lease.available -= taken
            leases.windows[key] = lease
            return taken
        case .reserve(let key, let amount, let cap, _, _):
            guard var lease = leases.reserves[key], lease.cap == cap, lease.leased > lease.used else { return 0 }
            let taken = min(lease.leased - lease.used, amount)
            lease.used += taken
            leases.reserves[key] = lease
            return taken
        }
    }

    private static func giveBack(_ taken: Int64, for check: LimitCheck, to leases: inout Leases) {
        guard taken > 0 else { return }
        switch check {
        case .window(let key, _, _, _): leases.windows[key]?.available += taken
        case .reserve(let key, _, _, _, _): leases.reserves[key]?.used -= taken
        }
    }

    /// The outcomes when every check fits a live lease (and the checks applied to the leases);
    /// nil when any does not, with nothing applied.
    private static func admitLocally(_ checks: [LimitCheck], leases: inout Leases, now: Double) -> [LimitOutcome]? {
        for check in checks {
            switch check {
            case .window(let key, let cost, let limit, let window):
                guard let lease = leases.windows[key], lease.limit == limit, now < lease.expiresAt, lease.available >= cost,
                      lease.index == SlidingWindow.position(now: now, window: window).index else { return nil }
            case .reserve(let key, let amount, let cap, _, _):
                guard let lease = leases.reserves[key], lease.cap == cap, now < lease.expiresAt, lease.leased - lease.used >= amount else {
                    return nil
                }
            }
        }
        var outcomes: [LimitOutcome] = []
        for check in checks {
            switch check {
            case .window(let key, let cost, let limit, let window):
                leases.windows[key]!.available -= cost
                leases.windows[key]!.remaining = max(0, leases.windows[key]!.remaining - cost)
                let remaining = leases.windows[key]!.remaining
                let fraction = SlidingWindow.position(now: now, window: window).fraction
                outcomes.append(.window(WindowDecision(allowed: true, count: Double(limit - remaining), remaining: remaining, retryAfter: 0,
                                                       resetAfter: (1 - fraction) * window)))
            case .reserve(let key, let amount, _, _, _):
                leases.reserves[key]!.used += amount
                outcomes.append(.reserve(true))
            }
        }
        return outcomes
    }

    public func settle(_ settlements: [LimitSettlement], affinity: String, now: Double) async throws {
        var remaining: [LimitSettlement] = []
        var returns: [RedisSharedState.LeaseReturn] = []
        leases.withLock { leases in
            for settlement in settlements {
                switch settlement {
                case .add(let key, let cost, let window):
                    guard var lease = leases.windows[key], lease.index == SlidingWindow.position(now: now, window: window).index else {
                        remaining.append(settlement)
                        continue
                    }
                    // Real tokens beyond the estimate come out of the lease; past it, Redis is told
                    // at once, so that its count never falls short of what was admitted.
                    lease.available -= cost
                    lease.remaining = max(0, lease.remaining - cost)
                    if lease.available < 0 {
                        returns.append(.window(key: key, index: lease.index, delta: -lease.available, window: window))
                        lease.available = 0
                    }
                    leases.windows[key] = lease
                case .settle(let key, let reserved, let actual, let ttl):
                    guard var lease = leases.reserves[key] else {
                        remaining.append(settlement)
                        continue
                    }
                    lease.used -= reserved
                    lease.leased -= actual
                    lease.unreported += actual
                    lease.ttl = ttl
                    leases.reserves[key] = lease
                }
            }
        }
        if !returns.isEmpty { try await remote.giveBack(returns, affinity: affinity) }
        if !remaining.isEmpty { try await remote.settle(remaining, affinity: affinity, now: now) }
    }

    /// Reports spend and gives back leases past their lifetime (windows: also those whose
    /// window ended). Called periodically; `now: .infinity` gives everything back (shutdown).
    public func flush(now: Double) async throws {
        let returns = leases.withLock { leases in
            var returns: [RedisSharedState.LeaseReturn] = []
            for (key, lease) in leases.reserves {
                var lease = lease
                var release = lease.unreported
                let spent = lease.unreported
                lease.unreported = 0
                if now >= lease.expiresAt {
                    release += max(0, lease.leased - lease.used)
                    lease.leased = min(lease.leased, lease.used)
                }
                if release > 0 || spent > 0 { returns.append(.budget(key: key, release: release, spent: spent, ttl: lease.ttl)) }
                leases.reserves[key] = lease.used <= 0 && now >= lease.expiresAt ? nil : lease
            }
            for (key, lease) in leases.windows {
                let current = now.isFinite ? SlidingWindow.position(now: now, window: lease.window).index : Int64.max
                guard now >= lease.expiresAt || lease.index < current else { continue }
                if lease.available > 0 && (current == Int64.max || lease.index >= current - 1) {
                    returns.append(.window(key: key, index: lease.index, delta: -lease.available, window: lease.window))
                }
                leases.windows[key] = nil
            }
            return returns
        }
        // Confirmed: at shutdown the process exits next, and a reader after a flush must see it.
        try await remote.giveBack(returns, affinity: "leases", confirmed: true)
    }

    /// Leases held now (tests, metrics): windows and reservations.
    public var leaseCount: (windows: Int, reserves: Int) { leases.withLock { ($0.windows.count, $0.reserves.count) } }

    // The single operations are rare (admin reads, seeding): straight to Redis.

    public func consume(key: String, cost: Int64, limit: Int64, window: Double, now: Double) async throws -> WindowDecision {
        try await remote.consume(key: key, cost: cost, limit: limit, window: window, now: now)
    }

    public func reserve(key: String, amount: Int64, cap: Int64, ttl: Double) async throws -> Bool {
        try await remote.reserve(key: key, amount: amount, cap: cap, ttl: ttl)
    }

    public func seed(key: String, spent: Int64, ttl: Double) async throws -> Bool {
        try await remote.seed(key: key, spent: spent, ttl: ttl)
    }

    public func settle(key: String, reserved: Int64, actual: Int64, ttl: Double) async throws {
        try await remote.settle(key: key, reserved: reserved, actual: actual, ttl: ttl)
    }

    public func balance(key: String) async throws -> (spent: Int64, reserved: Int64) {
        try await remote.balance(key: key)
    }
}
