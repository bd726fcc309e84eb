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
        // On PostgreSQL rows can only be added: an UPDATE, DELETE or TRUNCATE by the gateway's
        // role fails. Retention deletes expired rows through its own path, which sets
        // `portcullis.audit_retention` for its transaction. (On SQLite the file is the gateway's
        // alone; the chain and the published checkpoints reveal any change to it.)
        Migration(version: 302, name: "audit logs append-only") { dialect in
            guard dialect == .postgres else { return [] }
            return [
                """
                CREATE FUNCTION portcullis_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$
                BEGIN
                    IF TG_OP = 'DELETE' AND current_setting('portcullis.audit_retention', true) = 'on' THEN
                        RETURN OLD;
                    END IF;
                    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
                END
                $body$
                """,
                "CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs FOR EACH ROW EXECUTE FUNCTION portcullis_audit_append_only()",
                "CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs FOR EACH STATEMENT EXECUTE FUNCTION portcullis_audit_append_only()",
            ]
        },
        // One index per severity worth a runbook, each of only its rows: a successful request's
        // records (INFO, the bulk) enter none, which on SQLite is a B-tree less per record on the
        // gateway's own core (measured ~1.7 µs of ~12 µs per row). `WHERE severity = 'CRITICAL'
        // ORDER BY timestamp DESC` reads its index in order in both engines; INFO filters scan the time index.
        Migration(version: 305, name: "audit logs severity indexes of their rows") { _ in
            ["DROP INDEX audit_logs_severity"] + AuditRecord.Severity.allCases.filter { $0 != .info }.map { severity in
                "CREATE INDEX audit_logs_\(severity.rawValue.lowercased()) ON audit_logs (timestamp) WHERE severity = '\(severity.rawValue)'"
            }
        },
    ]
}

/// Appends records to one chain with group commit: every record waiting when a write starts
/// goes into the same transaction, and `append` returns once its record is committed — so a
/// caller that awaits it knows the record is durable before it acts.
///
/// When the store refuses a batch: failing closed, the callers waiting on it get the error
/// (their requests are refused); failing open, they go on and their records wait in memory
/// (at most `backlogLimit`) to be written when the store answers again, together with a
/// record of the gap. Records submitted without waiting (outcomes) are kept either way.
public final class AuditWriter: Service, Sendable {
    /// How a waiting caller's record ended up.
    public enum Durability: Sendable, Equatable {
        /// Committed to the store.
        case committed
        /// Kept in memory to be written later (failing open while the store is unreachable).
        case buffered
    }

    private struct Waiting {
        var record: AuditRecord
        var continuation: CheckedContinuation<Durability, any Error>?
        /// Whether the caller acts only once the record is durable (failing closed, it is refused instead of kept).
        var gating: Bool
    }

    private struct Pending {
        var waiting: [Waiting] = []
        /// Records accepted but not yet committed because the store refused them, oldest first.
        var backlog: [AuditRecord] = []
        /// Records of the backlog given up because it was full, and when the gap began.
        var dropped = 0
        var gapStarted: Int64?
        var closed = false
        /// Set while the store refuses writes: batches do not wait on it again until the next retry.
        var failing = false
        var retryDue = false
        /// Submitted records waiting without anyone woken for them.
        var lingering = 0
    }

    public let chainName: String
    public let failClosed: Bool
    public let backlogLimit: Int
    private let store: any SQLStore
    private let logger: Logger
    private let state = Mutex(Pending())
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    private let lingerWake: AsyncStream<Void>.Continuation
    private let lingerWakes: AsyncStream<Void>

    public init(store: any SQLStore, chain: String, failClosed: Bool = false, backlogLimit: Int = 100_000, logger: Logger) {
        self.store = store
        self.chainName = chain
        self.failClosed = failClosed
        self.backlogLimit = max(1, backlogLimit)
        self.logger = logger
        (wakes, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        (lingerWakes, lingerWake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Waits until `record` is committed (or kept for later); throws when the writer has
    /// stopped, or when the store refused a `gating` record (one its caller acts on only once
    /// durable) and the writer fails closed. A record that does not gate is kept either way.
    @discardableResult
    public func append(_ record: AuditRecord, gating: Bool = true) async throws -> Durability {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Durability, any Error>) in
            let accepted = state.withLock { state -> Bool in
                guard !state.closed else { return false }
                state.waiting.append(Waiting(record: record, continuation: continuation, gating: gating))
                return true
            }
            if accepted { wake.yield() } else { continuation.resume(throwing: AuditUnavailable()) }
        }
    }

    /// Queues `record` without waiting for it (an outcome, after the request has acted). It is
    /// written with the next batch a waiting caller starts, or within `lingerLimit`: records
    /// nobody waits on do not make commits of their own while requests keep the writer busy.
    public func submit(_ record: AuditRecord) {
        let (accepted, first) = state.withLock { state -> (Bool, Bool) in
            guard !state.closed else { return (false, false) }
            state.waiting.append(Waiting(record: record, continuation: nil, gating: false))
            state.lingering += 1
            return (true, state.lingering == 1)
        }
        guard accepted else {
            logger.error("audit record after the writer stopped", metadata: ["action": "\(record.action)"])
            return
        }
        if first { lingerWake.yield() }
    }

    /// Longest a submitted record waits for a batch to join before it is written on its own.
    public static let lingerLimit: Duration = .milliseconds(50)

    /// Records waiting in memory for the store (the backlog of an outage).
    public var backlogCount: Int { state.withLock { $0.backlog.count } }

    /// Writes one batch of what is waiting (the backlog first); returns how many records it committed.
    @discardableResult
    public func writePending() async -> Int {
        let taken = state.withLock { state -> (batch: [Waiting], backlog: [AuditRecord], dropped: Int, gapStarted: Int64?, skip: Bool)? in
            guard !state.waiting.isEmpty || !state.backlog.isEmpty else { return nil }
            defer {
                state.waiting.removeAll()
                state.lingering = 0
            }
            // A retry that falls due with nothing to write stays due for the next record.
            let skip = state.failing && !state.retryDue
            if !skip { state.retryDue = false }
            return (state.waiting, state.backlog, state.dropped, state.gapStarted, skip)
        }
        guard let (batch, backlog, dropped, gapStarted, skip) = taken else { return 0 }
        if skip {
            // The store failed a moment ago: no request waits on it again before the next retry.
            fail(batch, AuditUnavailable(cause: "the database refused the last write"), logged: false)
            return 0
        }
        var records = backlog
        if let gapStarted, !backlog.isEmpty || dropped > 0 {
            // The outage itself is on the record, before what it delayed.
            records.insert(Self.gapRecord(since: gapStarted, delayed: backlog.count, dropped: dropped), at: 0)
        }
        records += batch.map(\.record)
        do {
            try await commit(records)
            let written = backlog.count
            state.withLock { state in
                state.failing = false
                state.backlog.removeFirst(min(written, state.backlog.count))
                state.dropped -= dropped
                if state.backlog.isEmpty && state.dropped == 0 { state.gapStarted = nil }
            }
            if written > 0 { logger.notice("audit backlog written", metadata: ["records": "\(written)", "dropped": "\(dropped)"]) }
            for waiting in batch { waiting.continuation?.resume(returning: .committed) }
            return records.count
        } catch {
            fail(batch, error, logged: true)
            return 0
        }
    }

    /// What did not commit: failing closed, the callers waiting on a gating record get the
    /// error; everything else joins the backlog (the oldest given up past its limit).
    private func fail(_ batch: [Waiting], _ error: any Error, logged: Bool) {
        let failClosed = self.failClosed, limit = backlogLimit
        let (refused, kept) = state.withLock { state -> ([Waiting], [Waiting]) in
            state.failing = true
            state.gapStarted = state.gapStarted ?? Self.now()
            let refused = failClosed ? batch.filter(\.gating) : []
            let kept = failClosed ? batch.filter { !$0.gating } : batch
            state.backlog += kept.map(\.record)
            if state.backlog.count > limit {
                let excess = state.backlog.count - limit
                state.backlog.removeFirst(excess)
                state.dropped += excess
            }
            return (refused, kept)
        }
        if logged { logger.error("audit write failed", metadata: ["records": "\(batch.count)", "error": "\(error)"]) }
        for waiting in refused { waiting.continuation?.resume(throwing: AuditUnavailable(cause: "\(error)")) }
        for waiting in kept { waiting.continuation?.resume(returning: .buffered) }
    }

    /// Links `records` after the chain's stored head and inserts them, in one transaction.
    ///
    /// The head is read inside the transaction, under a lock of the chain (PostgreSQL: an
    /// advisory lock for the transaction; SQLite: its single writer), so that two processes
    /// given one chain name still extend it as one line, in turn.
    ///
    /// SQLite has one writer, this process: the head committed last is kept, and the rows go
    /// through the store's kept statement in one job (`executeMany`) without reading it. Should
    /// another process have moved it on, the insert meets the unique sequence, the kept head is
    /// dropped and the next batch reads it.
    private func commit(_ records: [AuditRecord]) async throws {
        let name = chainName
        let encoded = records.map { ($0, $0.canonical) }
        do {
            if store.dialect == .sqlite, let known = head.withLock({ $0 }) {
                var chain = known
                let rows = encoded.map { Self.row($0.0, canonical: $0.1, chain: &chain) }
                try await store.executeMany(Self.insertStatements[1], rows)
                head.withLock { $0 = chain }
                return
            }
            let advanced = try await store.transaction { transaction in
                if transaction.dialect == .postgres {
                    _ = try await transaction.query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS chain_lock",
                                                    [.text("portcullis.audit_logs." + name)])
                }
                var chain = AuditChain(name: name)
                let rows = try await transaction.query("SELECT seq, hash FROM audit_logs WHERE chain = $1 ORDER BY seq DESC LIMIT 1", [.text(name)])
                if let row = rows.first, let sequence = row["seq"].integer, let hash = row["hash"].text {
                    chain = AuditChain(name: name, nextSequence: sequence + 1, head: hash)
                }
                try await Self.insert(encoded, into: transaction, chain: &chain)
                return chain
            }
            if store.dialect == .sqlite { head.withLock { $0 = advanced } }
        } catch {
            head.withLock { $0 = nil }
            throw error
        }
    }

    /// The head last committed (SQLite only); nil until known.
    private let head = Mutex<AuditChain?>(nil)

    /// The 13 binds of one row, linking `record` into `chain`.
    private static func row(_ record: AuditRecord, canonical: [UInt8], chain: inout AuditChain) -> [SQLValue] {
        let link = chain.link(record, canonical: canonical)
        return [.text(record.id), .text(chain.name), .integer(link.sequence), .integer(record.timestamp), .text(record.severity.rawValue),
                .text(record.category), .text(record.action), .text(record.outcome),
                record.requestID.map(SQLValue.text) ?? .null, record.actorKeyID.map(SQLValue.text) ?? .null,
                .text(String(decoding: canonical, as: UTF8.self)), .text(link.previousHash), .text(link.hash)]
    }

    /// Many-row statements of up to 64 rows (PostgreSQL parses one per batch, not one per record).
    private static func insert(_ encoded: [(AuditRecord, [UInt8])], into transaction: any SQLExecutor, chain: inout AuditChain) async throws {
        var start = 0
        while start < encoded.count {
            let part = encoded[start..<min(start + Self.rowsPerStatement, encoded.count)]
            var binds: [SQLValue] = []
            binds.reserveCapacity(part.count * 13)
            for (record, canonical) in part { binds += row(record, canonical: canonical, chain: &chain) }
            try await transaction.execute(Self.insertStatements[part.count], binds)
            start += part.count
        }
    }

    static let rowsPerStatement = 64
    /// The statement for each number of rows, built once.
    static let insertStatements = (0...rowsPerStatement).map(insertStatement(rows:))

    /// `INSERT INTO audit_logs … VALUES (…), (…)` for `rows` records of 13 columns.
    static func insertStatement(rows: Int) -> String {
        var sql = "INSERT INTO audit_logs (id, chain, seq, timestamp, severity, category, action, outcome, request_id, actor_key_id, record, prev_hash, hash) VALUES "
        for row in 0..<rows {
            if row > 0 { sql += ", " }
            sql += "(" + (1...13).map { "$\(row * 13 + $0)" }.joined(separator: ", ") + ")"
        }
        return sql
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    /// The record of an outage: since when records waited, how many were written late and how many were lost.
    static func gapRecord(since: Int64, delayed: Int, dropped: Int) -> AuditRecord {
        AuditRecord(timestamp: now(), severity: dropped > 0 ? .critical : .high, category: "audit", action: "audit.gap",
                    outcome: dropped > 0 ? "records_lost" : "records_delayed",
                    details: ["since": .integer(since), "delayed_records": .integer(Int64(delayed)), "lost_records": .integer(Int64(dropped))])
    }

    /// Written first when the writer starts (the gateway's start and configuration), and last when it stops.
    public var lifecycle: (start: AuditRecord, stop: AuditRecord)? {
        get { lifecycleRecords.withLock { $0 } }
        set { lifecycleRecords.withLock { $0 = newValue } }
    }
    private let lifecycleRecords = Mutex<(start: AuditRecord, stop: AuditRecord)?>(nil)

    public func run() async throws {
        if let start = lifecycle?.start { submit(start) }
        await withDiscardingTaskGroup { group in
            group.addTask {
                // While the store fails, try it again four times a second, new records or not.
                await Periodic.run(every: .milliseconds(250)) { [self] in
                    let due = state.withLock { state in
                        if state.failing || !state.backlog.isEmpty { state.retryDue = true }
                        return state.retryDue
                    }
                    if due { wake.yield() }
                }
            }
            group.addTask { [lingerWakes, wake] in
                // Submitted records that no batch took along are written once they have waited their limit.
                for await _ in lingerWakes {
                    try? await Task.sleep(for: Self.lingerLimit)
                    wake.yield()
                }
            }
            await withGracefulShutdownHandler {
                for await _ in wakes { await writePending() }
            } onGracefulShutdown: { [wake, lingerWake] in
                wake.finish()
                lingerWake.finish()
            }
        }
        if var stop = lifecycle?.stop {
            stop.timestamp = Self.now()
            submit(stop)
        }
        // Stopped: what is still waiting is written, later appends are refused.
        state.withLock { $0.closed = true }
        while await writePending() > 0 {}
    }
}

/// The audit log cannot take a record (its writer stopped or the store refused it).
public struct AuditUnavailable: Error, CustomStringConvertible {
    public var cause: String?
    public init(cause: String? = nil) { self.cause = cause }
    public var description: String { "the audit log is not accepting records" + (cause.map { ": \($0)" } ?? "") }
}

/// Which records `/admin/audit` and `audit export` read: every filter optional, combined with AND.
public struct AuditFilter: Sendable, Equatable {
    /// Microseconds since 1970, inclusive / exclusive.
    public var from: Int64?
    public var to: Int64?
    public var severity: AuditRecord.Severity?
    public var category: String?
    /// The actor's key id (as `/admin/keys` shows it).
    public var actorKeyID: String?
    public var requestID: String?

    public init(from: Int64? = nil, to: Int64? = nil, severity: AuditRecord.Severity? = nil, category: String? = nil,
                actorKeyID: String? = nil, requestID: String? = nil) {
        self.from = from
        self.to = to
        self.severity = severity
        self.category = category
        self.actorKeyID = actorKeyID
        self.requestID = requestID
    }
}

extension AuditFilter {
    /// Microseconds since 1970 of an RFC 3339 time (`2026-12-01T10:00:00Z`, fractions allowed) or of unix seconds.
    public static func microseconds(_ text: String) -> Int64? {
        if let seconds = Double(text), seconds.isFinite, abs(seconds) < 1e11 { return Int64(seconds * 1_000_000) }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1_000_000) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).map { Int64($0.timeIntervalSince1970 * 1_000_000) }
    }
}

/// Reads `audit_logs` for operators: newest first, as the API shows records.
public struct AuditReader: Sendable {
    let store: any SQLStore
    /// Opens records' sealed personal fields (nil: they are shown sealed).
    let keys: SubjectKeys?

    public init(store: any SQLStore, keys: SubjectKeys? = nil) {
        self.store = store
        self.keys = keys
    }

    /// Records matching `filter`, newest first, as the API shows them.
    public func list(_ filter: AuditFilter, limit: Int, offset: Int) async throws -> [JSONValue] {
        await shown(try await page(filter, order: "timestamp DESC, chain, seq DESC", limit: limit, offset: offset)).map(JSONValue.object)
    }

    /// Records matching `filter`, oldest first, in pages (`export`).
    public func oldestFirst(_ filter: AuditFilter, limit: Int, offset: Int) async throws -> [JSONObject] {
        await shown(try await page(filter, order: "timestamp, chain, seq", limit: limit, offset: offset))
    }

    /// Rows as the API shows them, with their personal fields opened where their subject's key exists.
    func shown(_ rows: some Sequence<SQLRow>) async -> [JSONObject] {
        var records: [JSONObject] = []
        for row in rows {
            guard let object = Self.object(row).objectValue else { continue }
            records.append(await PersonalFields.open(object, keys: keys))
        }
        return records
    }

    /// One page of the rows `filter` selects, in `order` (a fixed clause, never input).
    private func page(_ filter: AuditFilter, order: String, limit: Int, offset: Int) async throws -> [SQLRow] {
        var conditions: [String] = []
        var binds: [SQLValue] = []
        func add(_ column: String, _ comparison: String, _ value: SQLValue) {
            binds.append(value)
            conditions.append("\(column) \(comparison) $\(binds.count)")
        }
        if let from = filter.from { add("timestamp", ">=", .integer(from)) }
        if let to = filter.to { add("timestamp", "<", .integer(to)) }
        if let severity = filter.severity { add("severity", "=", .text(severity.rawValue)) }
        if let category = filter.category { add("category", "=", .text(category)) }
        if let key = filter.actorKeyID { add("actor_key_id", "=", .text(key)) }
        if let request = filter.requestID { add("request_id", "=", .text(request)) }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        binds += [.integer(Int64(limit)), .integer(Int64(offset))]
        return try await store.query("SELECT * FROM audit_logs \(whereClause) ORDER BY \(order) LIMIT $\(binds.count - 1) OFFSET $\(binds.count)", binds)
    }

    /// The records of `chain` after sequence number `after`, in order (a sink's next batch).
    public func chain(_ chain: String, after: Int64, limit: Int) async throws -> [(sequence: Int64, record: JSONObject)] {
        await shown(try await store.query("SELECT * FROM audit_logs WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                                          [.text(chain), .integer(after), .integer(Int64(limit))])).compactMap { record in
            guard let sequence = record["seq"]?.integerValue else { return nil }
            return (sequence, record)
        }
    }

    /// The records of a data subject, oldest first, at most `limit`: those whose actor is one
    /// of `keyIDs`, and, for a user, those that name `userID` as the actor's user. (A scan of
    /// the table: exports are rare, and the request path keeps no index for them.)
    public func subjectRecords(keyIDs: [String], userID: String?, ref: String? = nil, limit: Int) async throws -> (records: [JSONValue], truncated: Bool) {
        var conditions: [String] = []
        var binds: [SQLValue] = []
        if let ref {
            binds.append(.text("%\"\(PersonalFields.referenceMember)\":\"" + ref + "\"%"))
            conditions.append("record LIKE $\(binds.count)")
        }
        if !keyIDs.isEmpty {
            conditions.append("actor_key_id IN (" + keyIDs.indices.map { "$\($0 + 1)" }.joined(separator: ", ") + ")")
            binds += keyIDs.map(SQLValue.text)
        }
        if let userID {
            let quoted = JSONWriter.string(.string(userID))
            let escaped = quoted.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%").replacingOccurrences(of: "_", with: "\\_")
            binds.append(.text("%\"user_id\":" + escaped + "%"))
            conditions.append("record LIKE $\(binds.count) ESCAPE '\\'")
        }
        guard !conditions.isEmpty else { return ([], false) }
        binds.append(.integer(Int64(limit + 1)))
        let rows = try await store.query("SELECT * FROM audit_logs WHERE \(conditions.joined(separator: " OR ")) ORDER BY timestamp, chain, seq LIMIT $\(binds.count)", binds)
        let records = await shown(rows.prefix(limit)).filter { record in
            // The LIKE reads the whole record: keep only those whose actor is the subject.
            guard let userID, let details = record["details"]?.objectValue else { return true }
            let actor = details["actor"]?.objectValue
            return keyIDs.contains(actor?["key_id"]?.stringValue ?? "") || actor?["user_id"]?.stringValue == userID
                || keyIDs.contains(record["actor_key_id"]?.stringValue ?? "")
                || (ref != nil && details[PersonalFields.referenceMember]?.stringValue == ref)
        }
        return (records.map(JSONValue.object), rows.count > limit)
    }

    /// One record by its id, or nil.
    public func record(id: String) async throws -> JSONValue? {
        await shown(try await store.query("SELECT * FROM audit_logs WHERE id = $1", [.text(id)])).first.map(JSONValue.object)
    }

    static func object(_ row: SQLRow) -> JSONValue {
        let record = (try? JSONParser.parse(row["record"].text ?? "{}"))?.objectValue ?? JSONObject()
        var object = JSONObject()
        object["id"] = .string(row["id"].text ?? "")
        object["timestamp"] = .integer(row["timestamp"].integer ?? 0)
        for column in ["severity", "category", "action", "outcome", "request_id", "actor_key_id"] {
            object[column] = row[column].text.map(JSONValue.string) ?? .null
        }
        object["details"] = record["details"] ?? .object(JSONObject())
        object["chain"] = .string(row["chain"].text ?? "")
        object["seq"] = .integer(row["seq"].integer ?? 0)
        object["hash"] = .string(row["hash"].text ?? "")
        object["prev_hash"] = .string(row["prev_hash"].text ?? "")
        return .object(object)
    }
}
