import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// Guard decisions: counted for `/metrics` (by guard, category and action, never by caller)
/// and written to the store in batches, for the audit trail and `/admin/guard-events`.
public final class GuardEventLog: GuardEventSink, Service, Sendable {
    public struct CounterKey: Hashable, Sendable {
        public var guardName: String
        public var category: String
        public var action: String
    }

    private let pending = Mutex<[GuardEvent]>([])
    private let counters = Mutex<[CounterKey: Int]>([:])
    private let store: any SQLStore
    private let interval: Double
    private let logger: Logger
    /// Most events kept in memory while the store is unreachable; the oldest go first.
    static let capacity = 100_000

    public init(store: any SQLStore, interval: Double, logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    public static let migrations: [Migration] = [
        Migration(version: 201, name: "guard events") { dialect in
            [
                """
                CREATE TABLE portcullis_guard_events (
                    event_id \(dialect == .postgres ? "BIGSERIAL" : "INTEGER") PRIMARY KEY \(dialect == .postgres ? "" : "AUTOINCREMENT"),
                    at BIGINT NOT NULL, request_id TEXT NOT NULL, policy TEXT NOT NULL, guard TEXT NOT NULL, category TEXT NOT NULL,
                    risk TEXT NOT NULL, score DOUBLE PRECISION NOT NULL, action TEXT NOT NULL, reason TEXT NOT NULL, model TEXT NOT NULL,
                    key_id TEXT, user_id TEXT, team_id TEXT
                )
                """,
                "CREATE INDEX portcullis_guard_events_at ON portcullis_guard_events (at)",
            ]
        },
    ]

    public func record(_ events: [GuardEvent]) {
        guard !events.isEmpty else { return }
        counters.withLock { counters in
            for event in events { counters[CounterKey(guardName: event.guardName, category: event.category, action: event.action), default: 0] += 1 }
        }
        pending.withLock { pending in
            pending.append(contentsOf: events)
            if pending.count > Self.capacity { pending.removeFirst(pending.count - Self.capacity) }
        }
    }

    /// Decisions so far, by guard, category and action.
    public var counts: [(key: CounterKey, value: Int)] { counters.withLock { $0.sorted { ($0.key.guardName, $0.key.category, $0.key.action) < ($1.key.guardName, $1.key.category, $1.key.action) } } }

    /// Writes pending events; on failure keeps them for the next attempt.
    public func flush() async {
        let taken = pending.withLock { pending in defer { pending.removeAll() }; return pending }
        guard !taken.isEmpty else { return }
        do {
            try await store.transaction { transaction in
                for event in taken {
                    try await transaction.execute("""
                        INSERT INTO portcullis_guard_events (at, request_id, policy, guard, category, risk, score, action, reason, model, key_id, user_id, team_id)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                        """, [.integer(event.at), .text(event.requestID), .text(event.policy), .text(event.guardName), .text(event.category),
                              .text(event.risk), .double(event.score), .text(event.action), .text(event.reason), .text(event.model),
                              event.keyID.map(SQLValue.text) ?? .null, event.userID.map(SQLValue.text) ?? .null,
                              event.teamID.map(SQLValue.text) ?? .null])
                }
            }
        } catch {
            logger.warning("guard event flush failed; keeping \(taken.count) events", metadata: ["error": "\(error)"])
            pending.withLock { pending in pending.insert(contentsOf: taken, at: 0) }
        }
    }

    /// Stored events, newest first.
    public func list(limit: Int, offset: Int) async throws -> [JSONValue] {
        try await store.query("SELECT * FROM portcullis_guard_events ORDER BY event_id DESC LIMIT $1 OFFSET $2",
                              [.integer(Int64(limit)), .integer(Int64(offset))]).map { row in
            var object: JSONObject = [:]
            for column in ["request_id", "policy", "guard", "category", "risk", "action", "reason", "model", "key_id", "user_id", "team_id"] {
                object[column] = row[column].text.map(JSONValue.string) ?? .null
            }
            object["at"] = .integer(row["at"].integer ?? 0)
            object["score"] = .double(row["score"].double ?? 0)
            return .object(object)
        }
    }

    public func run() async throws {
        await Periodic.run(every: Deadline.seconds(interval), { await self.flush() }, final: { await self.flush() })
    }
}
