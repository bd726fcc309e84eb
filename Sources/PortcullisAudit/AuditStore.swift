import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// The `audit_logs` table: one row per record, its filter columns beside the canonical
/// record and its link in the writer's chain.
public enum AuditTable {
    public static let migrations: [Migration] = [
        Migration(version: 301, name: "audit logs") { _ in
            [
                """
                CREATE TABLE audit_logs (
                    id TEXT PRIMARY KEY, chain TEXT NOT NULL, seq BIGINT NOT NULL, timestamp BIGINT NOT NULL, severity TEXT NOT NULL,
                    category TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, request_id TEXT, actor_key_id TEXT,
                    record TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL, UNIQUE (chain, seq)
                )
                """,
                "CREATE INDEX audit_logs_timestamp ON audit_logs (timestamp)",
                "CREATE INDEX audit_logs_severity ON audit_logs (severity, timestamp)",
                "CREATE INDEX audit_logs_request ON audit_logs (request_id)",
            ]
        },
    ]
}

/// Appends records to one chain with group commit: every record waiting when a write starts
/// goes into the same transaction, and `append` returns once its record is committed — so a
/// caller that awaits it knows the record is durable before it acts.
public final class AuditWriter: Service, Sendable {
    private struct Pending {
        var records: [(AuditRecord, CheckedContinuation<Void, any Error>)] = []
        var chain: AuditChain?
        var closed = false
    }

    public let chainName: String
    private let store: any SQLStore
    private let logger: Logger
    private let state = Mutex(Pending())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>

    public init(store: any SQLStore, chain: String, logger: Logger) {
        self.store = store
        self.chainName = chain
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Waits until `record` is committed; throws when the store refused the batch or the writer stopped.
    public func append(_ record: AuditRecord) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let accepted = state.withLock { state -> Bool in
                guard !state.closed else { return false }
                state.records.append((record, continuation))
                return true
            }
            if accepted { wake.yield() } else { continuation.resume(throwing: AuditUnavailable()) }
        }
    }

    /// Writes one batch of what is waiting; returns how many records it committed.
    @discardableResult
    public func writePending() async -> Int {
        let (batch, known) = state.withLock { state in
            defer { state.records.removeAll() }
            return (state.records, state.chain)
        }
        guard !batch.isEmpty else { return 0 }
        do {
            var chain: AuditChain
            if let known { chain = known } else { chain = try await loadHead() }
            var linked: [(AuditRecord, AuditChain.Link, [UInt8])] = []
            for (record, _) in batch {
                let canonical = record.canonical
                linked.append((record, chain.link(record), canonical))
            }
            let name = chainName, rows = linked
            try await store.transaction { transaction in
                for (record, link, canonical) in rows {
                    try await transaction.execute("""
                        INSERT INTO audit_logs (id, chain, seq, timestamp, severity, category, action, outcome, request_id, actor_key_id,
                                                record, prev_hash, hash)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                        """, [.text(record.id), .text(name), .integer(link.sequence), .integer(record.timestamp), .text(record.severity.rawValue),
                              .text(record.category), .text(record.action), .text(record.outcome),
                              record.requestID.map(SQLValue.text) ?? .null, record.actorKeyID.map(SQLValue.text) ?? .null,
                              .text(String(decoding: canonical, as: UTF8.self)), .text(link.previousHash), .text(link.hash)])
                }
            }
            let advanced = chain
            state.withLock { $0.chain = advanced }
            for (_, continuation) in batch { continuation.resume() }
            return batch.count
        } catch {
            // The head is read again from the store next time: what did not commit is not in the chain.
            state.withLock { $0.chain = nil }
            logger.error("audit write failed", metadata: ["records": "\(batch.count)", "error": "\(error)"])
            for (_, continuation) in batch { continuation.resume(throwing: error) }
            return 0
        }
    }

    /// The chain's head as stored (a new chain when it has no records).
    private func loadHead() async throws -> AuditChain {
        let rows = try await store.query("SELECT seq, hash FROM audit_logs WHERE chain = $1 ORDER BY seq DESC LIMIT 1", [.text(chainName)])
        guard let row = rows.first, let sequence = row["seq"].integer, let hash = row["hash"].text else { return AuditChain(name: chainName) }
        return AuditChain(name: chainName, nextSequence: sequence + 1, head: hash)
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            for await _ in wakes { await writePending() }
        } onGracefulShutdown: { [wake] in
            wake.finish()
        }
        // Stopped: what is still waiting is written, later appends are refused.
        state.withLock { $0.closed = true }
        while await writePending() > 0 {}
    }
}

/// The audit log cannot take a record (its writer stopped or the store refused it).
public struct AuditUnavailable: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the audit log is not accepting records" }
}
