import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisRedis
import Testing

@Suite("Validated-key cache and revocation broadcast", .serialized)
struct RevocationTests {
    static func record(_ id: String) -> APIKeyRecord {
        APIKeyRecord(keyID: id, name: nil, userID: "u", teamID: nil, role: .user, allowedModels: [], requestsPerMinute: nil,
                     tokensPerMinute: nil, maximumConcurrency: nil, budgetMicros: nil, expiresAt: nil, createdAt: 0, revokedAt: nil,
                     metadata: JSONObject())
    }

    @Test("the cache serves fresh entries, expires old ones, drops revoked ones and stays within capacity")
    func cache() async throws {
        let cache = ValidatedKeyCache(ttl: .milliseconds(200), capacity: 3)
        cache.store(Self.record("a"), for: "pck_a_1")
        cache.store(Self.record("a"), for: "pck_a_2")
        cache.store(Self.record("b"), for: "pck_b_1")
        #expect(cache.record(for: "pck_a_1")?.keyID == "a")
        cache.invalidate(keyID: "a")
        #expect(cache.record(for: "pck_a_1") == nil)
        #expect(cache.record(for: "pck_a_2") == nil, "every secret of the key goes")
        #expect(cache.record(for: "pck_b_1")?.keyID == "b")
        for index in 0..<10 { cache.store(Self.record("k\(index)"), for: "pck_k_\(index)") }
        #expect(cache.count == 3)
        try await Task.sleep(nanoseconds: 250_000_000)
        #expect(cache.record(for: "pck_k_9") == nil, "expired")
    }

    /// Two replicas' caches, each with its own bus client and listener; a revocation announced on one reaches both.
    static func propagation(buses: [any ControlBus]) async throws -> Duration {
        let caches = buses.map { _ in ValidatedKeyCache() }
        let listeners = zip(buses, caches).map { ControlListener(bus: $0, cache: $1) }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for listener in listeners {
                group.addTask { try await listener.run() }
            }
            defer { group.cancelAll() }
            #expect(try await eventually { listeners.allSatisfy(\.isListening) }, "the listeners subscribed")
            for cache in caches { cache.store(Self.record("revoked-key"), for: "pck_revoked") }
            let started = ContinuousClock.now
            try await buses[0].publish(.keyRevoked("revoked-key"))
            while caches.contains(where: { $0.record(for: "pck_revoked") != nil }) {
                guard ContinuousClock.now - started < .seconds(5) else { break }
                try await Task.sleep(nanoseconds: 5_000_000)
            }
            #expect(caches.allSatisfy { $0.record(for: "pck_revoked") == nil })
            return ContinuousClock.now - started
        }
    }

    @Test("a revocation on one replica empties every replica's cache within a second (Redis pub/sub)")
    func redisPropagation() async throws {
        let configuration = try testRedisConfiguration()
        let channel = "portcullis-test-revocations-\(UUID().uuidString)"
        let buses: [any ControlBus] = [RedisControlBus(client: RedisClient(configuration: configuration), channel: channel),
                                          RedisControlBus(client: RedisClient(configuration: configuration), channel: channel)]
        let elapsed = try await Self.propagation(buses: buses)
        #expect(elapsed < .seconds(1), "took \(elapsed)")
    }

    @Test("in one process, the in-process bus does the same")
    func inProcessPropagation() async throws {
        let bus = InProcessControlBus()
        let elapsed = try await Self.propagation(buses: [bus, bus])
        #expect(elapsed < .seconds(1), "took \(elapsed)")
    }
}
