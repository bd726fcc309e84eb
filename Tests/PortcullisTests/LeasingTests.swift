import Foundation
import PortcullisRedis
import PortcullisStorage
import Testing

/// Two replicas leasing from the test Redis (separate clients, so separate connection pools).
private func leasingReplicas(fraction: Int64 = 16, lifetime: Double = 1) throws -> [LeasingSharedState] {
    let configuration = try testRedisConfiguration()
    return (0..<2).map { _ in
        LeasingSharedState(remote: RedisSharedState(client: RedisClient(configuration: configuration)), fraction: fraction, lifetime: lifetime)
    }
}

@Suite("Leased limits: replicas admit from leases of Redis room, never past a limit together")
struct LeasingTests {
    /// A time just after a window boundary, so that one fixed window holds the whole test.
    let now = (Date().timeIntervalSince1970 / 60).rounded(.down) * 60 + 0.5

    @Test("two replicas together admit exactly a window's limit, most of it without a round trip")
    func windowAcrossReplicas() async throws {
        let replicas = try leasingReplicas()
        let key = "lease-\(UUID().uuidString)"
        let check = LimitCheck.window(key: key, cost: 1, limit: 160, window: 60)
        var admitted = [0, 0]
        var refusedBoth = false
        var attempts = 0
        while !refusedBoth && attempts < 400 {
            var refused = 0
            for (index, replica) in replicas.enumerated() {
                attempts += 1
                if case .window(let decision) = try await replica.admit([check], affinity: key, now: now)[0], decision.allowed {
                    admitted[index] += 1
                } else {
                    refused += 1
                }
            }
            refusedBoth = refused == 2
        }
        // Leases are used up before anyone is refused for good, so nothing is stranded.
        #expect(admitted[0] + admitted[1] == 160, "\(admitted)")
        #expect(admitted[0] > 0 && admitted[1] > 0)
        let remote = replicas[0].remoteAdmissions + replicas[1].remoteAdmissions
        #expect(remote < 60, "\(remote) round trips for \(attempts) admissions")
        let client = try RedisClient(configuration: testRedisConfiguration())
        let index = Int64((now / 60).rounded(.down))
        let counted = try await client.command(["GET", .string("portcullis:rate:{\(key)}:\(index)")])
        #expect(counted.integer == 160, "Redis counted \(counted)")
        await client.shutdown()
    }

    @Test("a lease renewed while it still has room is not topped up: what a replica holds in Redis stays bounded")
    func renewalDoesNotGrowTheLease() async throws {
        let replica = try leasingReplicas(lifetime: 0.5)[0]
        let key = "lease-\(UUID().uuidString)"
        let check = LimitCheck.reserve(key: key, amount: 1, cap: 1600, ttl: 900, mustExist: false)
        // One slot held the whole time; every lifetime the lease expires and is renewed by the next admission.
        #expect(try await replica.admit([check], affinity: key, now: now) == [.reserve(true)])
        for step in 1...40 {
            let at = now + Double(step) * 0.6
            #expect(try await replica.admit([check], affinity: key, now: at) == [.reserve(true)])
            try await replica.settle([.settle(key: key, reserved: 1, actual: 0, ttl: 900)], affinity: key, now: at)
        }
        let held = try await replica.balance(key: key).reserved
        #expect(held <= 1 + 1600 / 16, "Redis holds \(held) for one slot in use: the lease grew with every renewal")
        try await replica.flush(now: .infinity)
    }

    @Test("many admissions at once on an exhausted lease: one leases ahead, the rest ask exactly, none is refused far below the limit")
    func concurrentRenewalIsSingleFlight() async throws {
        let replica = try leasingReplicas()[0]
        let key = "lease-\(UUID().uuidString)"
        let check = LimitCheck.reserve(key: key, amount: 1, cap: 100_000, ttl: 900, mustExist: false)
        let now = self.now
        for round in 0..<20 {
            // 64 slots taken at once and held, then given back: every round exhausts the lease.
            let outcomes = try await withThrowingTaskGroup(of: LimitOutcome.self) { group in
                for _ in 0..<64 { group.addTask { try await replica.admit([check], affinity: key, now: now + Double(round) * 0.01)[0] } }
                return try await group.reduce(into: [LimitOutcome]()) { $0.append($1) }
            }
            #expect(outcomes.allSatisfy { $0 == .reserve(true) }, "round \(round): \(outcomes.filter { $0 != .reserve(true) }.count) refused")
            for _ in 0..<64 { try await replica.settle([.settle(key: key, reserved: 1, actual: 0, ttl: 900)], affinity: key, now: now) }
        }
        let held = try await replica.balance(key: key).reserved
        #expect(held <= 64 + 2 * (100_000 / 16), "Redis holds \(held) slots for none in use")
        try await replica.flush(now: .infinity)
        #expect(try await replica.balance(key: key).reserved == 0, "everything goes back")
    }

    @Test("a limit below the lease fraction stays exact: every admission asks Redis")
    func smallLimitIsExact() async throws {
        let replicas = try leasingReplicas()
        let key = "lease-\(UUID().uuidString)"
        let check = LimitCheck.window(key: key, cost: 1, limit: 10, window: 60)
        var admitted = 0
        for round in 0..<10 {
            for replica in replicas {
                if case .window(let decision) = try await replica.admit([check], affinity: "\(round)", now: now)[0], decision.allowed { admitted += 1 }
            }
        }
        #expect(admitted == 10)
        #expect(replicas[0].remoteAdmissions + replicas[1].remoteAdmissions == 20)
        #expect(replicas[0].leaseCount.windows == 0)
    }

    @Test("budget leases: spend reaches Redis in batches, no replica spends past the cap, and leases go back")
    func budgetAcrossReplicas() async throws {
        let replicas = try leasingReplicas()
        let key = "lease-budget-\(UUID().uuidString)"
        let cap: Int64 = 1_000_000
        let worst: Int64 = 30_000
        let actual: Int64 = 20_000
        #expect(try await replicas[0].seed(key: key, spent: 0, ttl: 3600))
        let check = LimitCheck.reserve(key: key, amount: worst, cap: cap, ttl: 3600, mustExist: true)
        var settled: Int64 = 0
        var refusedBoth = false
        var rounds = 0
        while !refusedBoth && rounds < 200 {
            rounds += 1
            var refused = 0
            for replica in replicas {
                if try await replica.admit([check], affinity: key, now: now) == [.reserve(true)] {
                    try await replica.settle([.settle(key: key, reserved: worst, actual: actual, ttl: 3600)], affinity: key, now: now)
                    settled += actual
                } else {
                    refused += 1
                }
                let balance = try await replica.balance(key: key)
                #expect(balance.spent + balance.reserved <= cap, "\(balance)")
            }
            refusedBoth = refused == 2
        }
        #expect(settled <= cap)
        // Each replica's unused lease and the room left in Redis are each less than one worst case.
        #expect(settled > cap - 3 * worst, "\(settled) of \(cap)")
        for replica in replicas { try await replica.flush(now: .infinity) }
        // The flush is sent without waiting for its reply: read until it has been applied.
        var balance = try await replicas[0].balance(key: key)
        for _ in 0..<50 where balance.spent != settled || balance.reserved != 0 {
            try await Task.sleep(for: .milliseconds(20))
            balance = try await replicas[0].balance(key: key)
        }
        #expect(balance.spent == settled && balance.reserved == 0, "\(balance), settled \(settled)")
        #expect(replicas[0].leaseCount.reserves == 0 && replicas[1].leaseCount.reserves == 0)
    }

    @Test("an unused lease goes back after its lifetime, and the other replica can use the room")
    func expiredLeaseReturns() async throws {
        let replicas = try leasingReplicas(lifetime: 1)
        let key = "lease-\(UUID().uuidString)"
        let check = LimitCheck.window(key: key, cost: 1, limit: 160, window: 60)
        _ = try await replicas[0].admit([check], affinity: key, now: now)   // leases 1 + 10 ahead
        var byOther = 0
        while case .window(let decision) = try await replicas[1].admit([check], affinity: key, now: now)[0], decision.allowed, byOther < 200 {
            byOther += 1
        }
        #expect(byOther + 1 < 160, "the first replica's lease is room the second could not have")
        try await replicas[0].flush(now: now + 0.5)   // within the lifetime: kept
        if case .window(let decision) = try await replicas[1].admit([check], affinity: key, now: now)[0] { #expect(!decision.allowed) }
        try await replicas[0].flush(now: now + 1.5)   // past it: given back
        var more = 0
        for _ in 0..<50 {
            try await Task.sleep(for: .milliseconds(10))
            if case .window(let decision) = try await replicas[1].admit([check], affinity: key, now: now + 1.5)[0], decision.allowed { more += 1 }
        }
        #expect(byOther + 1 + more == 160, "\(byOther) + 1 + \(more)")
    }
}
