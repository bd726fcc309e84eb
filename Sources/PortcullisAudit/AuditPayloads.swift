import Crypto
import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// Whether prompts and answers are stored with their audit records, and how.
public enum PayloadMode: String, Sendable, CaseIterable {
    /// Nothing of the text is stored (the default).
    case none
    /// Stored after personal data is redacted from every text in it.
    case redacted
    /// Stored as the client sent it and as it got the answer.
    case full
}

/// What a request's payload will be stored under, settled before the upstream is called: the
/// subject's data key is at hand then, so a key service that is down is known before anything
/// is sent (and, failing closed, the request is refused instead).
public struct PayloadCapture: Sendable {
    public let mode: PayloadMode
    public let subjectKey: SubjectKeys.SubjectKey

    public init(mode: PayloadMode, subjectKey: SubjectKeys.SubjectKey) {
        self.mode = mode
        self.subjectKey = subjectKey
    }
}

/// `audit_payloads`: prompts and answers, each row AES-256-GCM under its subject's data key,
/// bound to its audit id and subject reference. Written in batches off the request path;
/// read back decrypted for the subject's export. Erasing the subject leaves its rows
/// unreadable; retention removes them.
public final class AuditPayloads: Service, Sendable {
    /// One decrypted row.
    public struct Stored: Sendable {
        public let auditID: String
        public let requestID: String?
        /// Unix microseconds.
        public let createdAt: Int64
        public let mode: String
        public let payload: JSONValue
    }

    private struct Pending {
        var rows: [[SQLValue]] = []
        var closed = false
    }

    public let keys: SubjectKeys
    private let store: any SQLStore
    private let logger: Logger
    private let pending = Mutex(Pending())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    /// Most rows waiting to be written; past it new ones are dropped and logged.
    static let pendingLimit = 10_000

    public init(store: any SQLStore, keys: SubjectKeys, logger: Logger) {
        self.store = store
        self.keys = keys
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    static func context(auditID: String, ref: String) -> String { "payload:\(auditID):\(ref)" }

    /// Encrypts `payload` and queues it for the next batch.
    public func submit(auditID: String, requestID: String?, teamID: String? = nil, capture: PayloadCapture, payload: JSONValue, at: Int64 = SubjectKeys.now()) {
        let plaintext = JSONWriter.bytes(payload)
        let sealed: [UInt8]
        do {
            sealed = try Envelope.seal(plaintext, key: capture.subjectKey.key, context: Self.context(auditID: auditID, ref: capture.subjectKey.ref))
        } catch {
            logger.error("payload not stored: it could not be encrypted", metadata: ["audit_id": "\(auditID)"])
            return
        }
        let row: [SQLValue] = [.text(auditID), requestID.map(SQLValue.text) ?? .null, .text(capture.subjectKey.ref), teamID.map(SQLValue.text) ?? .null,
                               .integer(at), .text(capture.mode.rawValue), .blob(sealed)]
        let accepted = pending.withLock { pending -> Bool in
            guard !pending.closed, pending.rows.count < Self.pendingLimit else { return false }
            pending.rows.append(row)
            return true
        }
        if accepted { wake.yield() } else { logger.error("payload not stored: the writer is stopped or behind", metadata: ["audit_id": "\(auditID)"]) }
    }

    /// Writes what is waiting; returns how many rows.
    @discardableResult
    public func flush() async -> Int {
        let rows = pending.withLock { pending -> [[SQLValue]] in
            defer { pending.rows.removeAll() }
            return pending.rows
        }
        guard !rows.isEmpty else { return 0 }
        do {
            try await store.executeMany("""
                INSERT INTO audit_payloads (audit_id, request_id, subject_ref, team_id, created_at, mode, ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (audit_id) DO NOTHING
                """, rows)
            return rows.count
        } catch {
            logger.error("payloads not stored: the database refused them", metadata: ["rows": "\(rows.count)", "error": "\(error)"])
            return 0
        }
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            for await _ in wakes { await flush() }
        } onGracefulShutdown: { [wake] in
            wake.finish()
        }
        pending.withLock { $0.closed = true }
        await flush()
    }

    /// The subject's payloads (by its reference), oldest first, decrypted; at most `limit`.
    /// A row that does not decrypt is an error naming it, never garbage.
    public func payloads(ref: String, limit: Int) async throws -> [Stored] {
        let rows = try await store.query("""
            SELECT audit_id, request_id, created_at, mode, ciphertext FROM audit_payloads WHERE subject_ref = $1 ORDER BY created_at LIMIT $2
            """, [.text(ref), .integer(Int64(limit))])
        guard !rows.isEmpty else { return [] }
        let key = try await keys.key(ref: ref)
        return try rows.map { row in
            let auditID = row["audit_id"].text ?? ""
            let plaintext = try Envelope.open(row["ciphertext"].blob ?? [], key: key, context: Self.context(auditID: auditID, ref: ref),
                                              what: "the payload of audit record \(auditID)")
            guard let payload = try? JSONParser.parse(plaintext) else { throw DataProtectionError.undecryptable("the payload of audit record \(auditID)") }
            return Stored(auditID: auditID, requestID: row["request_id"].text, createdAt: row["created_at"].integer ?? 0,
                          mode: row["mode"].text ?? "", payload: payload)
        }
    }

    /// How many rows `ref` has (readable or not).
    public func count(ref: String) async throws -> Int {
        Int(try await store.query("SELECT COUNT(*) AS rows FROM audit_payloads WHERE subject_ref = $1", [.text(ref)]).first?["rows"].integer ?? 0)
    }
}
