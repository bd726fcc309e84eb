import PortcullisCore
import PortcullisStorage

/// Who was refused by a rate limit, token limit or budget most often in a time window: the
/// admin API's top-N, read from the audit log's request outcomes (shared by every replica, kept
/// as long as the audit log is), so no per-caller label ever reaches the metrics.
public struct LimitViolators: Sendable {
    /// Whose refusals are counted together.
    public enum Grouping: String, Sendable, CaseIterable {
        case key, user, team

        /// The actor member of a record's details that names the caller (and the API's field for it).
        public var member: String {
            switch self {
            case .key: "key_id"
            case .user: "user_id"
            case .team: "team_id"
            }
        }
    }

    /// One caller's refusals in the window.
    public struct Entry: Sendable, Equatable {
        public let subject: String
        public var refusals: Int
        public var byCode: [String: Int]
        /// Microseconds since 1970.
        public var lastRefusedAt: Int64
    }

    /// The newest refused outcomes read at most; a window holding more says so (`truncated`).
    public static let scanLimit = 100_000

    public let entries: [Entry]
    /// Refused request outcomes read (limit refusals or not).
    public let scanned: Int
    public let truncated: Bool

    /// The `top` callers by refusals (ties: the latest refused first), from the outcomes given newest first.
    public init(outcomes: [(timestamp: Int64, details: JSONObject)], by grouping: Grouping, top: Int, truncated: Bool) {
        var counts: [String: Entry] = [:]
        for (timestamp, details) in outcomes {
            guard let code = details["code"]?.stringValue, ErrorCode.limitRefusals.contains(code),
                  let subject = details["actor"]?.objectValue?[grouping.member]?.stringValue else { continue }
            var entry = counts[subject] ?? Entry(subject: subject, refusals: 0, byCode: [:], lastRefusedAt: timestamp)
            entry.refusals += 1
            entry.byCode[code, default: 0] += 1
            entry.lastRefusedAt = max(entry.lastRefusedAt, timestamp)
            counts[subject] = entry
        }
        entries = Array(counts.values.sorted { ($0.refusals, $0.lastRefusedAt, $1.subject) > ($1.refusals, $1.lastRefusedAt, $0.subject) }.prefix(top))
        scanned = outcomes.count
        self.truncated = truncated
    }
}

extension AuditReader {
    /// The top callers refused by a limit between `from` and `to` (microseconds since 1970).
    public func limitViolators(from: Int64, to: Int64, by grouping: LimitViolators.Grouping, top: Int) async throws -> LimitViolators {
        let rows = try await store.query(
            """
            SELECT timestamp, record FROM audit_logs
            WHERE category = 'request' AND action = 'request.complete' AND outcome = 'refused' AND timestamp >= $1 AND timestamp < $2
            ORDER BY timestamp DESC LIMIT $3
            """, [.integer(from), .integer(to), .integer(Int64(LimitViolators.scanLimit + 1))])
        var outcomes: [(timestamp: Int64, details: JSONObject)] = []
        for row in rows.prefix(LimitViolators.scanLimit) {
            guard let timestamp = row["timestamp"].integer, let text = row["record"].text,
                  let record = (try? JSONParser.parse(text))?.objectValue else { continue }
            // A sealed user is opened (or, once erased, is its pseudonym).
            let shown = record["details"]?.objectValue?[PersonalFields.sealedMember] == nil ? record : await PersonalFields.open(record, keys: keys)
            if let details = shown["details"]?.objectValue { outcomes.append((timestamp, details)) }
        }
        return LimitViolators(outcomes: outcomes, by: grouping, top: top, truncated: rows.count > LimitViolators.scanLimit)
    }
}
