import Foundation
import PortcullisAudit
import PortcullisCore
import PortcullisStorage
import Testing

/// The audit log's chain against real SQLite and PostgreSQL: records committed in groups,
/// and each kind of damage planted directly in the table found by the verifier.
@Suite("Audit chain: group commit and verification")
struct AuditChainTests {
    static func record(_ index: Int, severity: AuditRecord.Severity = .info) -> AuditRecord {
        AuditRecord(timestamp: 1_700_000_000_000_000 + Int64(index), severity: severity, category: "request", action: "chat.completions",
                    outcome: "success", requestID: "req-\(index)", actorKeyID: "k\(index % 3)",
                    details: ["status": .integer(200), "model": "m", "z": ["b": 1, "a": .string("é\u{1}\"")]])
    }

    @Test("the canonical encoding does not depend on the order details were written in")
    func canonicalOrder() {
        var first = Self.record(1), second = Self.record(1)
        first.details = ["a": 1, "b": ["y": 2, "x": 3]]
        second.details = ["b": ["x": 3, "y": 2], "a": 1]
        second.id = first.id
        #expect(first.canonical == second.canonical)
        var chain = AuditChain(name: "r1")
        let one = chain.link(first), two = chain.link(second)
        #expect(one.sequence == 1 && one.previousHash == AuditChain.genesis && two.previousHash == one.hash && two.sequence == 2)
        #expect(one.hash != two.hash, "the same record twice gets different links")
    }

    @Test("records appended at once commit together; the chain continues across writers; damage is found and named", arguments: Engine.allCases)
    func verify(engine: Engine) async throws {
        try await withStores(engine) { stores in
            let store = stores[0]
            try await MigrationRunner.migrate(store, AuditTable.migrations)
            let writer = AuditWriter(store: store, chain: "replica-a", logger: testLogger)
            // Appends waiting together go out as one batch, and each returns once committed; the
            // second batch extends the head the first one left (on SQLite through the kept statement).
            for batch in [1...12, 13...20] {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in batch { group.addTask { try await writer.append(Self.record(index)) } }
                    try await Task.sleep(nanoseconds: 50_000_000)
                    #expect(await writer.writePending() == batch.count)
                    try await group.waitForAll()
                }
            }
            // A second writer on the same chain (a restart) continues it from the stored head.
            let restarted = AuditWriter(store: store, chain: "replica-a", logger: testLogger)
            async let appended = restarted.append(Self.record(21, severity: .critical))
            try await Task.sleep(nanoseconds: 20_000_000)
            await restarted.writePending()
            _ = try await appended
            let other = AuditWriter(store: store, chain: "replica-b", logger: testLogger)
            async let foreign = other.append(Self.record(99))
            try await Task.sleep(nanoseconds: 20_000_000)
            await other.writePending()
            _ = try await foreign

            var report = try await AuditVerifier.verify(store)
            #expect(report.isIntact, "\(report.damage)")
            #expect(report.records == ["replica-a": 21, "replica-b": 1])
            let critical = try await store.query("SELECT * FROM audit_logs WHERE severity='CRITICAL' ORDER BY timestamp DESC LIMIT 100", [])
            #expect(critical.count == 1 && critical.first?["request_id"].text == "req-21", "the runbook query works as written")
            // …and reads the index of critical records, in order, rather than the whole table.
            let plan: String
            if store.dialect == .sqlite {
                plan = try await store.query("EXPLAIN QUERY PLAN SELECT * FROM audit_logs WHERE severity='CRITICAL' ORDER BY timestamp DESC LIMIT 100", [])
                    .compactMap { $0["detail"].text }.joined(separator: "; ")
                #expect(!plan.contains("TEMP B-TREE"), "no sort: \(plan)")
            } else {
                plan = try await store.transaction { transaction in
                    try await transaction.execute("SET LOCAL enable_seqscan = off", [])
                    return try await transaction.query("EXPLAIN SELECT * FROM audit_logs WHERE severity='CRITICAL' ORDER BY timestamp DESC LIMIT 100", [])
                        .compactMap { $0["QUERY PLAN"].text }.joined(separator: "; ")
                }
            }
            #expect(plan.contains("audit_logs_critical"), "\(plan)")

            if store.dialect == .postgres {
                // The gateway's role can only add rows…
                await #expect(throws: (any Error).self) { try await store.execute("UPDATE audit_logs SET outcome = 'failure' WHERE seq = 3", []) }
                await #expect(throws: (any Error).self) { try await store.execute("DELETE FROM audit_logs WHERE seq = 3", []) }
                await #expect(throws: (any Error).self) { try await store.execute("TRUNCATE audit_logs", []) }
                #expect(try await store.query("SELECT COUNT(*) AS n FROM audit_logs", [])[0]["n"].integer == 22)
                // …except through the retention path, which deletes (and only deletes) in its own transaction.
                try await store.transaction { transaction in
                    try await transaction.execute("SELECT set_config('portcullis.audit_retention', 'on', true)", [])
                    try await transaction.execute("DELETE FROM audit_logs WHERE chain = 'replica-b'", [])
                }
                #expect(try await store.query("SELECT COUNT(*) AS n FROM audit_logs", [])[0]["n"].integer == 21)
                // The table's owner can still switch the guard off; the chain below still finds what it then changes.
                try await store.execute("ALTER TABLE audit_logs DISABLE TRIGGER USER", [])
            }

            // A field changed inside a record.
            try await store.execute("UPDATE audit_logs SET record = REPLACE(record, '\"success\"', '\"failure\"') WHERE chain = 'replica-a' AND seq = 7", [])
            report = try await AuditVerifier.verify(store)
            #expect(report.damage == [AuditVerifier.Finding(chain: "replica-a", sequence: 7, recordID: report.damage.first?.recordID ?? "",
                                                            damage: .modified, detail: "its content does not match its hash")])
            try await store.execute("UPDATE audit_logs SET record = REPLACE(record, '\"failure\"', '\"success\"') WHERE chain = 'replica-a' AND seq = 7", [])
            #expect(try await AuditVerifier.verify(store).isIntact, "put back, the chain is whole again")

            // A filter column changed beside an intact record.
            try await store.execute("UPDATE audit_logs SET severity = 'LOW' WHERE chain = 'replica-a' AND seq = 21", [])
            report = try await AuditVerifier.verify(store)
            #expect(report.damage.first?.damage == .modified && report.damage.first?.sequence == 21 && report.damage.first?.detail.contains("severity") == true)
            try await store.execute("UPDATE audit_logs SET severity = 'CRITICAL' WHERE chain = 'replica-a' AND seq = 21", [])

            // A record deleted.
            let deleted = try await store.query("SELECT * FROM audit_logs WHERE chain = 'replica-a' AND seq = 12", [])[0]
            try await store.execute("DELETE FROM audit_logs WHERE chain = 'replica-a' AND seq = 12", [])
            report = try await AuditVerifier.verify(store)
            #expect(report.damage.first?.damage == .deleted && report.damage.first?.sequence == 13, "\(report.damage)")
            #expect(report.damage.count == 1, "any other chain is untouched")

            // Put back under another number: a record the chain never linked there.
            try await store.execute("""
                INSERT INTO audit_logs (id, chain, seq, timestamp, severity, category, action, outcome, request_id, actor_key_id, record, prev_hash, hash)
                VALUES ($1, 'replica-a', 30, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                """, [.text(deleted["id"].text ?? ""), deleted["timestamp"], deleted["severity"], deleted["category"], deleted["action"],
                      deleted["outcome"], deleted["request_id"], deleted["actor_key_id"], deleted["record"], deleted["prev_hash"], deleted["hash"]])
            try await store.execute("UPDATE audit_logs SET seq = 12 WHERE chain = 'replica-a' AND seq = 30", [])
            #expect(try await AuditVerifier.verify(store).isIntact, "restored in place, whole again")
            // An invented record inserted between two real ones.
            try await store.execute("UPDATE audit_logs SET seq = seq + 100 WHERE chain = 'replica-a' AND seq >= 15", [])
            try await store.execute("UPDATE audit_logs SET seq = seq - 99 WHERE chain = 'replica-a' AND seq >= 115", [])
            let forged = Self.record(500)
            try await store.execute("""
                INSERT INTO audit_logs (id, chain, seq, timestamp, severity, category, action, outcome, request_id, actor_key_id, record, prev_hash, hash)
                VALUES ($1, 'replica-a', 15, 0, 'INFO', 'request', 'x', 'success', NULL, NULL, $2, $3, $4)
                """, [.text(forged.id), .text(String(decoding: forged.canonical, as: UTF8.self)), .text(AuditChain.genesis),
                      .text(AuditChain.hash(previous: AuditChain.genesis, canonical: forged.canonical))])
            report = try await AuditVerifier.verify(store)
            #expect(report.damage.first?.damage == .inserted && report.damage.first?.sequence == 15, "\(report.damage)")
        }
    }
}
