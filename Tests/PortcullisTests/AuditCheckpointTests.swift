import Foundation
import Logging
import PortcullisAudit
import PortcullisCore
import PortcullisProviders
@testable import PortcullisServer
import PortcullisStorage
import Testing

/// Signed checkpoints (C2SP signed notes over tlog-checkpoint bodies): made by the service,
/// published to a directory and to an S3 bucket with Object Lock (a real local S3 server), and
/// what the verifier finds with them that the chain alone cannot: a cut-off tail and a chain
/// rewritten consistently from some record on.
@Suite("Audit checkpoints: signed, published, checked", .serialized)
struct AuditCheckpointTests {
    static func record(_ index: Int) -> AuditRecord {
        AuditRecord(timestamp: 1_700_000_000_000_000 + Int64(index), severity: .info, category: "request", action: "request.complete",
                    outcome: "success", requestID: "req-\(index)", details: ["n": .integer(Int64(index))])
    }

    @Test("a signed note verifies with its key and with no other; its body is origin, size and head")
    func signedNote() throws {
        let key = AuditSigningKey.ephemeral(name: "portcullis.audit")
        let checkpoint = AuditCheckpoint(origin: "portcullis.audit/replica-a", size: 42, head: String(repeating: "ab", count: 32))
        let note = try key.sign(checkpoint.body)
        let lines = note.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[0] == "portcullis.audit/replica-a" && lines[1] == "42" && lines[3] == "" && lines[4].hasPrefix("\u{2014} portcullis.audit "))
        #expect(key.publicKey.verifiedBody(of: note) == checkpoint.body)
        #expect(AuditCheckpoint(body: checkpoint.body) == checkpoint)
        let text = key.publicKey.description
        #expect(AuditVerifierKey(text) == key.publicKey, "the printed verifier key reads back: \(text)")
        #expect(AuditVerifierKey(text.replacingOccurrences(of: "portcullis.audit+", with: "other+")) == nil, "a key hash that does not match its name is refused")
        let stranger = AuditSigningKey.ephemeral(name: "portcullis.audit")
        #expect(stranger.publicKey.verifiedBody(of: note) == nil)
        #expect(key.publicKey.verifiedBody(of: note.replacingOccurrences(of: "\n42\n", with: "\n43\n")) == nil, "a changed size breaks the signature")
    }

    @Test("checkpoints are signed every N records, published, and reveal a truncated tail and a consistently rewritten chain")
    func truncationAndRewrite() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-checkpoints-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        try await withStores(.sqlite) { stores in
            let store = stores[0]
            try await MigrationRunner.migrate(store, AuditLogs.migrations)
            let writer = AuditWriter(store: store, chain: "replica-a", logger: testLogger)
            let key = AuditSigningKey.ephemeral(name: "portcullis.audit")
            let directory = DirectoryCheckpointPublisher(directory: folder.path)
            let service = CheckpointService(store: store, chain: "replica-a", origin: "portcullis.audit", key: key, publishers: [directory],
                                            everyRecords: 5, everySeconds: 3600, logger: testLogger)
            for index in 1...4 { writer.submit(Self.record(index)) }
            await writer.writePending()
            #expect(try await service.checkpoint() == nil, "four records are not yet five")
            for index in 5...8 { writer.submit(Self.record(index)) }
            await writer.writePending()
            let made = try #require(try await service.checkpoint())
            #expect(made.size == 8 && made.origin == "portcullis.audit/replica-a")
            let published = try #require(directory.latest()["replica-a"])
            #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("replica-a/8.checkpoint").path))
            let stored = try await store.query("SELECT size, note FROM audit_checkpoints WHERE chain = 'replica-a'", [])
            #expect(stored.count == 1 && stored.first?["note"].text == published)

            #expect(try await AuditVerifier.verify(store, checkpoints: [published], key: key.publicKey).isIntact)
            // A checkpoint signed by another key is not believed.
            let forged = try AuditSigningKey.ephemeral(name: "portcullis.audit").sign(made.body)
            #expect(try await AuditVerifier.verify(store, checkpoints: [forged], key: key.publicKey).damage.first?.damage == .forgedCheckpoint)

            // The tail cut off: the chain alone still looks whole; the checkpoint does not agree.
            try await store.execute("DELETE FROM audit_logs WHERE seq > 6", [])
            #expect(try await AuditVerifier.verify(store).isIntact, "without the checkpoint a truncation is invisible")
            let truncated = try await AuditVerifier.verify(store, checkpoints: [published], key: key.publicKey)
            #expect(truncated.damage.first?.damage == .truncated && truncated.damage.first?.sequence == 7, "\(truncated.damage)")

            // Records 5 and 6 replaced by forged ones, and the chain re-linked after them: every link holds, the head does not.
            try await store.execute("DELETE FROM audit_logs WHERE seq >= 5", [])
            var chain = AuditChain(name: "replica-a", nextSequence: 5,
                                   head: try await store.query("SELECT hash FROM audit_logs WHERE seq = 4", [])[0]["hash"].text ?? "")
            for index in 5...8 {
                var record = Self.record(index)
                if index == 5 { record.outcome = "failure" }
                let link = chain.link(record)
                try await store.execute("""
                    INSERT INTO audit_logs (id, chain, seq, timestamp, severity, category, action, outcome, request_id, actor_key_id, record, prev_hash, hash)
                    VALUES ($1, 'replica-a', $2, $3, 'INFO', 'request', 'request.complete', $4, $5, NULL, $6, $7, $8)
                    """, [.text(record.id), .integer(link.sequence), .integer(record.timestamp), .text(record.outcome), .text(record.requestID ?? ""),
                          .text(String(decoding: record.canonical, as: UTF8.self)), .text(link.previousHash), .text(link.hash)])
            }
            #expect(try await AuditVerifier.verify(store).isIntact, "a consistent rewrite passes the chain check")
            let rewritten = try await AuditVerifier.verify(store, checkpoints: [published], key: key.publicKey)
            #expect(rewritten.damage.first?.damage == .modified && rewritten.damage.first?.sequence == 8, "\(rewritten.damage)")
        }
    }

    @Test("checkpoints reach an S3 bucket with Object Lock (a local S3 server): locked in compliance mode for the retention")
    func s3() async throws {
        try await withMotoServer { endpoint in
            let http = UpstreamHTTPClient()
            let client = S3Client(http: http, endpoint: endpoint, region: "us-east-1", accessKeyID: "test", secretAccessKey: "test", logger: testLogger)
            try await client.createBucket("audit-checkpoints", objectLock: true)
            let publisher = S3CheckpointPublisher(client: client, bucket: "audit-checkpoints", prefix: "portcullis-audit/", retentionDays: 30)
            let key = AuditSigningKey.ephemeral(name: "portcullis.audit")
            let note = try key.sign(AuditCheckpoint(origin: "portcullis.audit/replica-a", size: 3, head: String(repeating: "0f", count: 32)).body)
            try await publisher.publish(chain: "replica-a", size: 3, note: note)
            let object = try await client.getObject(bucket: "audit-checkpoints", key: "portcullis-audit/replica-a/3.checkpoint")
            #expect(String(decoding: object.body, as: UTF8.self) == note)
            let headers = Dictionary(object.headers, uniquingKeysWith: { first, _ in first })
            #expect(headers["x-amz-object-lock-mode"] == "COMPLIANCE", "\(object.headers)")
            let until = headers["x-amz-object-lock-retain-until-date"].flatMap { ISO8601DateFormatter().date(from: String($0.prefix(19)) + "Z") }
            #expect(until.map { $0.timeIntervalSinceNow > 29 * 86_400 } == true, "locked for the retention: \(String(describing: headers["x-amz-object-lock-retain-until-date"]))")
            await http.shutdown()
        }
    }
}
