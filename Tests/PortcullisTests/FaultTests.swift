import Foundation
import PortcullisConfig
import PortcullisCore
import Synchronization
import Testing

@Suite("Faults: the database and Redis stopped and restarted under running gateways", .serialized, .timeLimit(.minutes(3)))
struct FaultTests {
    static let master = "fault-master-key"

    static func yaml(database: String, redis: String? = nil, failOpen: Bool = true, keyCacheSeconds: Double = 0.2) -> String {
        """
        auth: { master_key: \(master), key_pepper: "fault-tests-pepper-0123456789abcdef", key_cache_seconds: \(keyCacheSeconds), fail_open: \(failOpen) }
        storage: { database: "\(database)", \(redis.map { "redis: \"\($0)\", " } ?? "")flush_interval_seconds: 0.1, probe_interval_seconds: 0.1, timeout_seconds: 1 }
        routing: { health_check: { interval_seconds: 0 } }
        audit: { fail_closed: \(!failOpen) }
        models:
          - name: demo
            deployments: [{ provider: demo, price: { input_per_million: 1, output_per_million: 10 } }]
        """
    }

    @Test("PostgreSQL stopped: validated keys keep working (fail-open) or are refused (fail-closed), unknown ones get 503; restarted: no usage lost")
    func databaseStoppedAndRestarted() async throws {
        let postgres = try ScratchPostgres()
        try await withGateway(yaml: Self.yaml(database: postgres.url)) { open in
            try await withGateway(yaml: Self.yaml(database: postgres.url, failOpen: false)) { closed in
                let (key, id) = try await open.createKey("", as: Self.master)
                let closedKey = try await open.createKey("", as: Self.master).key
                for _ in 0..<3 { #expect(try await open.chat(key: key).status == 200) }
                #expect(try await closed.chat(key: closedKey).status == 200)
                #expect(try await eventually { try await open.recordedRequests(keyID: id, master: Self.master) == 3 })

                try postgres.stop()
                #expect(try await open.awaitReadiness("database", "unreachable"), "readiness tells the database is gone")
                #expect(try await open.request(.GET, "/health/ready").json?.objectValue?["status"]?.stringValue == "degraded")
                // The key's fresh cache entry (0.2 s) must have lapsed, or the first chats below are
                // plain cache hits rather than the stale admissions counted.
                try await Task.sleep(for: .milliseconds(400))
                #expect(try await open.metric("portcullis_database_up") == 0)
                for _ in 0..<5 {
                    let served = try await open.chat(key: key)
                    #expect(served.status == 200, "fail-open serves a validated key: \(served.body)")
                }
                #expect(try await open.metric("portcullis_auth_stale_admissions_total") ?? 0 >= 5)
                #expect(try await open.metric("portcullis_usage_pending_rows") == 1, "the outage's usage waits in the buffer")

                #expect(try await closed.awaitReadiness("database", "unreachable"))
                let refused = try await closed.chat(key: closedKey)
                #expect(refused.status == 503 && refused.errorCode == "credential_store_unavailable", "fail-closed: \(refused.body)")
                let unknown = try await open.chat(key: "pck_abcdefabcdef_" + String(repeating: "x", count: 43))
                #expect(unknown.status == 503 && unknown.errorCode == "credential_store_unavailable", "\(unknown.body)")
                let admin = try await open.call(.POST, "/admin/keys", key: Self.master, body: "{}")
                #expect(admin.status == 503 && admin.errorCode == "storage_unavailable", "\(admin.body)")

                try postgres.start()
                #expect(try await open.awaitReadiness("database", "ok"), "readiness recovers")
                #expect(try await open.awaitReadiness("status", "ready"))
                #expect(try await eventually { try await open.recordedRequests(keyID: id, master: Self.master) == 8 },
                        "the usage buffered during the outage was written")
                #expect(try await open.metric("portcullis_database_up") == 1)
                #expect(try await closed.awaitReadiness("database", "ok"))
                #expect(try await closed.chat(key: closedKey).status == 200, "fail-closed serves again once the database is back")
                #expect(try await open.call(.POST, "/admin/keys", key: Self.master, body: "{}").status == 201)
                // The audit log failed open: the outage's requests were served, and their records written after it, with the gap.
                #expect(try await eventually {
                    let gaps = try await open.call(.GET, "/admin/audit?category=audit", key: Self.master)
                    return gaps.json?.objectValue?["data"]?.arrayValue?.contains {
                        $0.objectValue?["action"]?.stringValue == "audit.gap" && ($0.objectValue?["details"]?.objectValue?["delayed_records"]?.integerValue ?? 0) >= 5
                    } == true
                }, "the gap and the delayed records are on the record")
            }
        }
    }

    @Test("Redis stopped: limits hold per replica and nothing fails; restarted: limits are shared again and revocations cross replicas")
    func redisStoppedAndRestarted() async throws {
        let redis = try ScratchRedis()
        let redisURL = "redis://127.0.0.1:\(redis.port)"
        try await Task.sleep(nanoseconds: 300_000_000)
        try await withScratchPostgresDatabase { database in
            // Keys stay cached for a minute: only the control bus can tell a replica of a revocation in time.
            let yaml = Self.yaml(database: database, redis: redisURL, keyCacheSeconds: 60)
            try await withGateway(yaml: yaml) { first in
                try await withGateway(yaml: yaml) { second in
                    #expect(try await first.awaitReadiness("status", "ready"))
                    #expect(try await second.awaitReadiness("status", "ready"))
                    // Shared: a limit of 4 holds across both replicas.
                    let shared = try await first.createKey(#""rpm":4"#, as: Self.master).key
                    var admitted = 0
                    for replica in [first, second, first, second, first, second] where try await replica.chat(key: shared).status == 200 {
                        admitted += 1
                    }
                    #expect(admitted == 4)
                    // A budget spent to its end before Redis goes away.
                    let (budgeted, budgetedID) = try await first.createKey(#""budget":0.001"#, as: Self.master)
                    var spent = 0
                    while spent < 50 {
                        guard try await first.chat(key: budgeted, extra: #","max_tokens":20"#).status == 200 else { break }
                        spent += 1
                    }
                    #expect(spent > 0 && spent < 50)
                    let served = Int64(spent)
                    #expect(try await eventually { try await first.recordedRequests(keyID: budgetedID, master: Self.master) == served })

                    redis.stop()
                    #expect(try await first.awaitReadiness("shared_state", "per-replica (Redis unreachable)"))
                    #expect(try await second.awaitReadiness("shared_state", "per-replica (Redis unreachable)"))
                    #expect(try await first.metric("portcullis_redis_up") == 0)
                    #expect(try await second.awaitReadiness("control_bus", "reconnecting"))
                    // Per replica: each enforces the limit of 3 on its own; nothing fails with a 5xx.
                    let local = try await first.createKey(#""rpm":3"#, as: Self.master).key
                    for replica in [first, second] {
                        var statuses: [Int] = []
                        for _ in 0..<4 { statuses.append(try await replica.chat(key: local).status) }
                        #expect(statuses == [200, 200, 200, 429], "\(statuses)")
                    }
                    let stillSpent = try await second.chat(key: budgeted, extra: #","max_tokens":20"#)
                    #expect(stillSpent.status == 429 && stillSpent.errorCode == "budget_exceeded", "the budget is seeded from the database")

                    try redis.start()
                    #expect(try await first.awaitReadiness("shared_state", "ok"))
                    #expect(try await second.awaitReadiness("shared_state", "ok"))
                    #expect(try await first.metric("portcullis_redis_up") == 1)
                    #expect(try await second.awaitReadiness("control_bus", "ok"), "resubscribed")
                    #expect(try await second.metric("portcullis_control_bus_up") == 1)
                    // Shared again (Redis came back empty): a limit of 2 holds across both.
                    let again = try await first.createKey(#""rpm":2"#, as: Self.master).key
                    let statuses = [try await first.chat(key: again).status, try await second.chat(key: again).status,
                                    try await first.chat(key: again).status]
                    #expect(statuses == [200, 200, 429], "\(statuses)")
                    let afterRestart = try await first.chat(key: budgeted, extra: #","max_tokens":20"#)
                    #expect(afterRestart.status == 429 && afterRestart.errorCode == "budget_exceeded", "no spend was forgotten")
                    // Revocations travel again once the replicas have resubscribed.
                    let (revoked, revokedID) = try await first.createKey("", as: Self.master)
                    let revokedKey = revoked
                    #expect(try await second.chat(key: revokedKey).status == 200)
                    #expect(try await first.call(.DELETE, "/admin/keys/\(revokedID)", key: Self.master).status == 200)
                    var refusedWithin: Duration?
                    let started = ContinuousClock.now
                    while ContinuousClock.now - started < .seconds(1) {
                        if try await second.chat(key: revokedKey).status == 401 { refusedWithin = ContinuousClock.now - started; break }
                        try await Task.sleep(nanoseconds: 20_000_000)
                    }
                    #expect(refusedWithin != nil, "the revocation reached the other replica within a second")
                }
            }
        }
    }
}
