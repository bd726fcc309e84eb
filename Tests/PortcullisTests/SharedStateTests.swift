import Foundation
import NIOCore
import PortcullisRedis
import PortcullisStorage
import Testing

enum StateKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inProcess, redis
    var testDescription: String { rawValue }
}

/// Two "replicas" of shared state: for Redis, two clients (separate connection pools) on the test server.
func makeReplicas(_ kind: StateKind) throws -> [any SharedState] {
    switch kind {
    case .inProcess:
        let state = InProcessSharedState()
        return [state, state]
    case .redis:
        let configuration = try testRedisConfiguration()
        return [RedisSharedState(client: RedisClient(configuration: configuration)),
                RedisSharedState(client: RedisClient(configuration: configuration))]
    }
}

@Suite("Shared state: sliding windows and budget reservations")
struct SharedStateTests {
    @Test("the sliding-window arithmetic", arguments: [
        // previous, current, cost, limit, fraction → allowed, retryAfter
        (0, 9, 1, 10, 0.5, true, 0.0),
        (0, 10, 1, 10, 0.5, false, 30.0 + 6.0),
        (10, 0, 1, 10, 0.5, true, 0.0),
        (10, 5, 1, 10, 0.5, false, 6.0),
        (10, 0, 20, 10, 0.25, false, 45.0 + 60.0),
    ])
    func arithmetic(previous: Int64, current: Int64, cost: Int64, limit: Int64, fraction: Double, allowed: Bool, retryAfter: Double) {
        let estimate = Double(previous) * (1 - fraction) + Double(current)
        let admitted = estimate + Double(cost) <= Double(limit)
        #expect(admitted == allowed)
        let decision = SlidingWindow.decide(previous: previous, current: current, cost: cost, limit: limit, window: 60,
                                            fraction: fraction, admitted: admitted)
        #expect(abs(decision.retryAfter - retryAfter) < 1e-9, "\(decision)")
    }

    @Test("a window admits up to its limit, then refuses with Retry-After, and the old window decays", arguments: StateKind.allCases)
    func slidingWindow(kind: StateKind) async throws {
        let state = try makeReplicas(kind)[0]
        let key = "rl-\(UUID().uuidString)"
        let start = 6000.0  // a window boundary for a 60 s window
        var allowed = 0
        for second in 0..<15 {
            if try await state.consume(key: key, cost: 1, limit: 10, window: 60, now: start + Double(second)).allowed { allowed += 1 }
        }
        #expect(allowed == 10)
        let refused = try await state.consume(key: key, cost: 1, limit: 10, window: 60, now: start + 30)
        #expect(!refused.allowed)
        #expect(refused.remaining == 0)
        #expect(abs(refused.retryAfter - (30 + 6)) < 1e-6)
        // Half-way through the next window, half of the previous window still counts: five more fit.
        var later = 0
        for _ in 0..<8 {
            if try await state.consume(key: key, cost: 1, limit: 10, window: 60, now: start + 90).allowed { later += 1 }
        }
        #expect(later == 5)
    }

    @Test("two replicas under concurrent load admit exactly the limit between them", arguments: StateKind.allCases)
    func limitAcrossReplicas(kind: StateKind) async throws {
        let replicas = try makeReplicas(kind)
        let key = "rl-\(UUID().uuidString)"
        let now = Date().timeIntervalSince1970
        let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<200 {
                let replica = replicas[index % 2]
                group.addTask { try await replica.consume(key: key, cost: 1, limit: 37, window: 3600, now: now).allowed }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(admitted == 37)
    }

    @Test("budget reservations never exceed the cap across replicas; settling frees the difference", arguments: StateKind.allCases)
    func budgets(kind: StateKind) async throws {
        let replicas = try makeReplicas(kind)
        let key = "budget-\(UUID().uuidString)"
        let reserved = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<100 {
                let replica = replicas[index % 2]
                group.addTask { try await replica.reserve(key: key, amount: 30, cap: 1000, ttl: 3600) }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(reserved == 33, "33 × 30 = 990 ≤ 1000 < 34 × 30")
        var balance = try await replicas[0].balance(key: key)
        #expect(balance.spent == 0 && balance.reserved == 990)
        for _ in 0..<33 { try await replicas[1].settle(key: key, reserved: 30, actual: 10, ttl: 3600) }
        balance = try await replicas[0].balance(key: key)
        #expect(balance.spent == 330 && balance.reserved == 0)
        #expect(try await replicas[0].reserve(key: key, amount: 670, cap: 1000, ttl: 3600))
        #expect(!(try await replicas[1].reserve(key: key, amount: 1, cap: 1000, ttl: 3600)))
    }

    @Test("an admission's checks are decided together: all applied, or none", arguments: StateKind.allCases)
    func admissionAllOrNothing(kind: StateKind) async throws {
        let replicas = try makeReplicas(kind)
        let id = UUID().uuidString
        let now = 6000.0
        let checks: [LimitCheck] = [
            .window(key: "\(id):rpm", cost: 1, limit: 5, window: 60),
            .window(key: "\(id):tpm", cost: 40, limit: 100, window: 60),
            .reserve(key: "\(id):slots", amount: 1, cap: 2, ttl: 900, mustExist: false),
            .reserve(key: "\(id):budget", amount: 300, cap: 1000, ttl: 3600, mustExist: true),
        ]
        // The budget is not known yet: nothing is applied, and the budget answers nil.
        var outcomes = try await replicas[0].admit(checks, affinity: id, now: now)
        #expect(outcomes.count == 4)
        #expect(outcomes[3] == .reserve(nil))
        #expect(try await replicas[1].balance(key: "\(id):slots") == (0, 0))
        #expect(try await replicas[0].seed(key: "\(id):budget", spent: 100, ttl: 3600))

        // Two admissions pass; the third is refused by the token window (120 + 40 > 100 is
        // already false at the third) — and then holds nothing anywhere.
        for replica in replicas {
            outcomes = try await replica.admit(checks, affinity: id, now: now)
            #expect(outcomes.allSatisfy { if case .window(let decision) = $0 { decision.allowed } else { $0 == .reserve(true) } }, "\(outcomes)")
        }
        outcomes = try await replicas[0].admit(checks, affinity: id, now: now)
        guard case .window(let requests) = outcomes[0], case .window(let tokens) = outcomes[1] else {
            Issue.record("windows answered \(outcomes)")
            return
        }
        #expect(requests.allowed && requests.remaining == 2, "the request window alone had room: \(requests)")
        #expect(!tokens.allowed && tokens.retryAfter > 0)
        #expect(outcomes[2] == .reserve(false), "both slots are taken")
        #expect(outcomes[3] == .reserve(true), "100 + 600 + 300 ≤ 1000")
        #expect(try await replicas[1].balance(key: "\(id):slots") == (0, 2))
        #expect(try await replicas[1].balance(key: "\(id):budget") == (100, 600))
        // The refused admission counted no request: three more fit the limit of five.
        var admitted = 0
        for _ in 0..<4 where try await replicas[1].consume(key: "\(id):rpm", cost: 1, limit: 5, window: 60, now: now).allowed { admitted += 1 }
        #expect(admitted == 3)

        // Settling both in one call frees the slots, spends the real cost and adds real tokens.
        let settlement: [LimitSettlement] = [
            .add(key: "\(id):tpm", cost: 15, window: 60),
            .settle(key: "\(id):budget", reserved: 300, actual: 120, ttl: 3600),
            .settle(key: "\(id):slots", reserved: 1, actual: 0, ttl: 900),
        ]
        try await replicas[0].settle(settlement, affinity: id, now: now)
        try await replicas[1].settle(settlement, affinity: id, now: now)
        // A settlement is written, not awaited: other readers see it a moment later.
        let replica = replicas[0]
        #expect(try await eventually(seconds: 2) {
            let (slots, budget) = (try await replica.balance(key: "\(id):slots"), try await replica.balance(key: "\(id):budget"))
            return slots == (0, 0) && budget == (340, 0)
        })
        let tokensNow = try await replicas[0].consume(key: "\(id):tpm", cost: 0, limit: 1000, window: 60, now: now)
        #expect(tokensNow.count == 110, "80 admitted + 2 × 15 settled")
        // Settling what no longer exists is a no-op, not an error.
        try await replicas[1].settle([.settle(key: "\(id):gone", reserved: 5, actual: 5, ttl: 60)], affinity: id, now: now)
        #expect(try await eventually(seconds: 2) { try await replica.balance(key: "\(id):gone") == (0, 0) })
    }

    @Test("a settled slot is free for the caller's next admission at once: a sequential caller with one slot is never refused",
          arguments: StateKind.allCases)
    func settlementOrderedBeforeNextAdmission(kind: StateKind) async throws {
        // On a server that has not seen the settlement script yet (a fresh or restarted Redis),
        // the script must be loaded ahead of the settlement in the same queue, or the first
        // settlement lands after the next admission.
        let state = try makeReplicas(kind)[0]
        let id = UUID().uuidString
        let slot: [LimitCheck] = [.reserve(key: "\(id):concurrency", amount: 1, cap: 1, ttl: 900, mustExist: false)]
        var refused = 0
        for _ in 0..<300 {
            let outcomes = try await state.admit(slot, affinity: id, now: 6000)
            if outcomes != [.reserve(true)] { refused += 1; continue }
            try await state.settle([.settle(key: "\(id):concurrency", reserved: 1, actual: 0, ttl: 900)], affinity: id, now: 6000)
        }
        #expect(refused == 0)
    }
}

/// Starts a throwaway redis-server on `port` (killed with SIGKILL: this process blocks SIGTERM for its children).
func startRedisServer(port: Int) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}

@Suite("Shared state when Redis goes away", .serialized)
struct ResilientSharedStateTests {
    @Test("falls back to per-replica limits while Redis is down and returns to it when it is back")
    func fallbackAndRecovery() async throws {
        let port = Int.random(in: 28000..<29000)
        let client = RedisClient(configuration: RedisConfiguration(endpoint: RedisEndpoint(host: "127.0.0.1", port: port),
                                                                   connectTimeout: .milliseconds(200)))
        let state = ResilientSharedState(primary: RedisSharedState(client: client), retryInterval: 0.2)
        let key = "rl-\(UUID().uuidString)"
        let now = Date().timeIntervalSince1970

        // Redis is down: decisions still come, from this replica's own counters.
        var allowed = 0
        for _ in 0..<5 where try await state.consume(key: key, cost: 1, limit: 3, window: 3600, now: now).allowed { allowed += 1 }
        #expect(allowed == 3)
        #expect(state.isDegraded)

        // Redis comes up: after the retry interval the shared counters are used again (a fresh window there).
        let server = try startRedisServer(port: port)
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        var recovered = false
        for _ in 0..<50 where !recovered {
            try await Task.sleep(nanoseconds: 100_000_000)
            let decision = try await state.consume(key: key, cost: 1, limit: 3, window: 3600, now: now)
            recovered = decision.allowed && !state.isDegraded
        }
        #expect(recovered)
        let direct = RedisClient(configuration: RedisConfiguration(endpoint: RedisEndpoint(host: "127.0.0.1", port: port)))
        let keys = try await direct.command(["KEYS", .string("portcullis:rate:{\(key)}:*")])
        #expect(keys.array?.count == 1, "the decision after recovery was counted in Redis")
        await direct.shutdown()
        await client.shutdown()
    }
}
