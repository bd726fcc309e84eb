import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// What the cost layer saved, by day, team, mechanism (`exact`, `dedup`) and model group: kept
/// in memory, added to `portcullis_cache_savings` in the store every flush interval (and at
/// shutdown), and read back summed for `GET /admin/savings`.
public final class SavingsLedger: Service, Sendable {
    public struct Entry: Hashable, Sendable {
        public var day: String
        public var teamID: String
        public var mechanism: String
        public var model: String
    }

    public struct Amount: Sendable, Equatable {
        public var requests: Int64 = 0
        public var inputTokens: Int64 = 0
        public var outputTokens: Int64 = 0
        public var costMicros: Int64 = 0
    }

    public static let migrations = [
        Migration(version: 400, name: "cache savings") { _ in
            [
                """
                CREATE TABLE portcullis_cache_savings (
                    day TEXT NOT NULL, team_id TEXT NOT NULL, mechanism TEXT NOT NULL, model TEXT NOT NULL,
                    requests BIGINT NOT NULL, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, cost_micros BIGINT NOT NULL,
                    PRIMARY KEY (day, team_id, mechanism, model)
                )
                """,
            ]
        },
    ]

    let store: any SQLStore
    let interval: Duration
    let logger: Logger
    private let pending = Mutex<[Entry: Amount]>([:])

    public init(store: any SQLStore, interval: Double, logger: Logger) {
        self.store = store
        self.interval = Deadline.seconds(interval)
        self.logger = logger
    }

    /// One request the cost layer answered without its own upstream call.
    public func record(teamID: String?, mechanism: String, model: String, inputTokens: Int64, outputTokens: Int64, costMicros: Int64,
                       now: Date = Date()) {
        let entry = Entry(day: Self.day(of: now), teamID: teamID ?? "", mechanism: mechanism, model: model)
        pending.withLock { pending in
            var amount = pending[entry] ?? Amount()
            amount.requests += 1
            amount.inputTokens += inputTokens
            amount.outputTokens += outputTokens
            amount.costMicros += costMicros
            pending[entry] = amount
        }
    }

    /// Adds what is pending to the store; what cannot be written stays pending for the next flush.
    public func flush() async {
        let batch = pending.withLock { pending in
            defer { pending = [:] }
            return pending
        }
        guard !batch.isEmpty else { return }
        do {
            try await store.executeMany("""
                INSERT INTO portcullis_cache_savings (day, team_id, mechanism, model, requests, input_tokens, output_tokens, cost_micros)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (day, team_id, mechanism, model) DO UPDATE SET requests = portcullis_cache_savings.requests + excluded.requests,
                    input_tokens = portcullis_cache_savings.input_tokens + excluded.input_tokens,
                    output_tokens = portcullis_cache_savings.output_tokens + excluded.output_tokens,
                    cost_micros = portcullis_cache_savings.cost_micros + excluded.cost_micros
                """, batch.map { entry, amount in
                    [.text(entry.day), .text(entry.teamID), .text(entry.mechanism), .text(entry.model), .integer(amount.requests),
                     .integer(amount.inputTokens), .integer(amount.outputTokens), .integer(amount.costMicros)]
                })
        } catch {
            logger.warning("cache savings not written yet; kept for the next flush", metadata: ["error": "\(error)"])
            pending.withLock { pending in
                for (entry, amount) in batch {
                    var merged = pending[entry] ?? Amount()
                    merged.requests += amount.requests
                    merged.inputTokens += amount.inputTokens
                    merged.outputTokens += amount.outputTokens
                    merged.costMicros += amount.costMicros
                    pending[entry] = merged
                }
            }
        }
    }

    public func run() async throws {
        await Periodic.run(every: interval, { await self.flush() }, final: { await self.flush() })
    }

    /// The savings summed over `dimensions` (any of day, team_id, mechanism, model), days `from`…`to` included.
    public func totals(groupBy dimensions: [String], teamID: String?, mechanism: String?, fromDay: String?, toDay: String?,
                       limit: Int, offset: Int) async throws -> [JSONValue] {
        let allowed = ["day", "team_id", "mechanism", "model"]
        let columns = dimensions.filter(allowed.contains)
        var conditions: [String] = []
        var binds: [SQLValue] = []
        func bind(_ clause: String, _ value: String) {
            binds.append(.text(value))
            conditions.append(clause.replacingOccurrences(of: "?", with: "$\(binds.count)"))
        }
        if let teamID { bind("team_id = ?", teamID) }
        if let mechanism { bind("mechanism = ?", mechanism) }
        if let fromDay { bind("day >= ?", fromDay) }
        if let toDay { bind("day <= ?", toDay) }
        let selected = columns.isEmpty ? "" : columns.joined(separator: ", ") + ", "
        let grouped = columns.isEmpty ? "" : " GROUP BY " + columns.joined(separator: ", ") + " ORDER BY " + columns.joined(separator: ", ")
        // PostgreSQL's SUM of BIGINT is NUMERIC: cast back so both engines answer integers.
        let sql = "SELECT \(selected)CAST(SUM(requests) AS BIGINT) AS requests, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, "
            + "CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM portcullis_cache_savings"
            + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND ")) + grouped
            + " LIMIT \(max(1, limit)) OFFSET \(max(0, offset))"
        return try await store.query(sql, binds).compactMap { row in
            guard let requests = row["requests"].integer, requests > 0 else { return nil }   // SUM over no rows is NULL
            var object = JSONObject()
            for column in columns {
                let value = row[column].text ?? ""
                object[column] = column == "team_id" && value.isEmpty ? .null : .string(value)
            }
            object["requests"] = .integer(requests)
            object["saved_input_tokens"] = .integer(row["input_tokens"].integer ?? 0)
            object["saved_output_tokens"] = .integer(row["output_tokens"].integer ?? 0)
            object["saved_cost_usd"] = .string(DecimalText.format(Double(row["cost_micros"].integer ?? 0) / 1_000_000, places: 6))
            return .object(object)
        }
    }

    static func day(of date: Date) -> String { UsageDay.string(date.timeIntervalSince1970) }
}
