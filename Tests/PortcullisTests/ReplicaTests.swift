import Foundation
import PortcullisCore
import Testing

@Suite("Two gateway processes sharing PostgreSQL and Redis", .serialized)
struct ReplicaTests {
    static func yaml() throws -> String {
        """
        auth: { master_key: replica-master-key, key_pepper: "replica-pepper-0123456789abcdef-0123456789" }
        storage: { database: "\(try testPostgresURL())", redis: "\(try testRedisURL())", flush_interval_seconds: 0.2 }
        routing: { health_check: { interval_seconds: 0 } }
        models:
          - name: demo
            deployments: [{ provider: demo, price: { input_per_million: 1, output_per_million: 10 } }]
        """
    }

    @Test("a rate limit and a budget hold across both; a revocation on one is refused on the other within a second")
    func sharedLimits() async throws {
        let yaml = try Self.yaml()
        let first = try await GatewayProcess(yaml: yaml)
        defer { first.stop() }
        let second = try await GatewayProcess(yaml: yaml)
        defer { second.stop() }
        let master = "replica-master-key"
        let (a, b) = (first.client, second.client)

        // One limit of 10 requests a minute, whichever replica serves.
        let limited = try await a.createKey(#""rpm":10"#, as: master).key
        var admitted = 0
        for index in 0..<20 where try await (index % 2 == 0 ? a : b).chat(key: limited).status == 200 { admitted += 1 }
        #expect(admitted == 10, "admitted \(admitted) of 20 across two replicas")

        // One budget: concurrent requests on both replicas stay within one request's worst case over the cap.
        let (budgeted, budgetedID) = try await a.createKey(#""budget":0.002,"budget_period":"day""#, as: master)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    let client = worker % 2 == 0 ? a : b
                    for _ in 0..<10 { _ = try await client.chat(key: budgeted, extra: #","max_tokens":20"#) }
                }
            }
            try await group.waitForAll()
        }
        for client in [a, b] { #expect(try await client.call(.POST, "/admin/usage/flush", key: master).status == 200) }
        let usage = try await b.call(.GET, "/admin/usage?group_by=key_id&key_id=\(budgetedID)", key: master)
        let spent = usage.json?.objectValue?["data"]?.arrayValue?.first?.objectValue?["cost_micros"]?.integerValue ?? -1
        let worstCase: Int64 = 300   // ≈ 90 prompt bytes / 4 × 1 + 20 output tokens × 10
        #expect(spent > 0 && spent <= 2000 + worstCase, "spent \(spent) micro-units against a cap of 2000")

        // A revocation on the first replica reaches the second, which had the key cached.
        let (revoked, revokedID) = try await a.createKey("", as: master)
        #expect(try await b.chat(key: revoked).status == 200)
        #expect(try await a.call(.POST, "/admin/keys/\(revokedID)/revoke", key: master).status == 200)
        let started = ContinuousClock.now
        var refused = false
        while ContinuousClock.now - started < .seconds(3) {
            if try await b.chat(key: revoked).status == 401 { refused = true; break }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        let elapsed = ContinuousClock.now - started
        #expect(refused && elapsed < .seconds(1), "refused on the other replica after \(elapsed)")
    }
}
