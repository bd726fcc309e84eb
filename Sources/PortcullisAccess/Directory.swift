import Foundation
import PortcullisCore
import PortcullisStorage

/// A person known to the gateway (keys and tokens name them by `userID`).
public struct UserRecord: Sendable, Equatable {
    public var userID: String
    public var email: String?
    public var role: Role
    public var teamID: String?
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var maximumConcurrency: Int64?
    public var metadata: JSONObject
    public var createdAt: Int64

    public init(userID: String, email: String? = nil, role: Role = .user, teamID: String? = nil, requestsPerMinute: Int64? = nil,
                tokensPerMinute: Int64? = nil, maximumConcurrency: Int64? = nil, metadata: JSONObject = JSONObject(), createdAt: Int64 = 0) {
        self.userID = userID
        self.email = email
        self.role = role
        self.teamID = teamID
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maximumConcurrency = maximumConcurrency
        self.metadata = metadata
        self.createdAt = createdAt
    }
}

/// A team: limits shared by all its members' requests.
public struct TeamRecord: Sendable, Equatable {
    public var teamID: String
    public var name: String?
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var maximumConcurrency: Int64?
    public var metadata: JSONObject
    public var createdAt: Int64

    public init(teamID: String, name: String? = nil, requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil,
                maximumConcurrency: Int64? = nil, metadata: JSONObject = JSONObject(), createdAt: Int64 = 0) {
        self.teamID = teamID
        self.name = name
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maximumConcurrency = maximumConcurrency
        self.metadata = metadata
        self.createdAt = createdAt
    }
}

/// Whose spend a budget caps.
public enum BudgetScope: String, Sendable, CaseIterable {
    case key, user, team
}

/// The span a budget resets over (UTC).
public enum BudgetPeriod: String, Sendable, CaseIterable {
    case day, month

    /// The UTC day (`YYYY-MM-DD`) the current period began, and when it ends (unix seconds).
    /// Plain civil-date arithmetic: this runs on every request that has a budget.
    public func bounds(at time: Double) -> (startDay: String, end: Double) {
        let days = Int64((time / 86_400).rounded(.down))
        switch self {
        case .day:
            return (UsageDay.string(days: days), Double(days + 1) * 86_400)
        case .month:
            let (year, month, _) = UsageDay.civil(days: days)
            let start = UsageDay.days(year: year, month: month, day: 1)
            let end = month == 12 ? UsageDay.days(year: year + 1, month: 1, day: 1) : UsageDay.days(year: year, month: month + 1, day: 1)
            return (UsageDay.string(days: start), Double(end) * 86_400)
        }
    }
}

/// A spend cap.
public struct BudgetRecord: Sendable, Equatable {
    public var scope: BudgetScope
    public var subject: String
    public var period: BudgetPeriod
    /// Cap in micro-units of the price currency (1 USD = 1,000,000).
    public var capMicros: Int64

    public init(scope: BudgetScope, subject: String, period: BudgetPeriod, capMicros: Int64) {
        self.scope = scope
        self.subject = subject
        self.period = period
        self.capMicros = capMicros
    }
}

/// An IP rule managed at run time (the configuration's lists are static).
public struct IPRuleRecord: Sendable, Equatable {
    public enum Action: String, Sendable { case allow, deny }
    public var ruleID: String
    public var cidr: String
    public var action: Action
    public var note: String?
    public var createdAt: Int64
    public var expiresAt: Int64?

    public init(ruleID: String, cidr: String, action: Action, note: String?, createdAt: Int64, expiresAt: Int64?) {
        self.ruleID = ruleID
        self.cidr = cidr
        self.action = action
        self.note = note
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

/// Usage and spend for one day, key, user, team and model.
public struct UsageRow: Sendable, Equatable {
    public var day: String
    public var keyID: String
    public var userID: String
    public var teamID: String
    public var model: String
    public var requests: Int64
    public var promptTokens: Int64
    public var completionTokens: Int64
    public var costMicros: Int64

    public init(day: String, keyID: String, userID: String, teamID: String, model: String, requests: Int64, promptTokens: Int64,
                completionTokens: Int64, costMicros: Int64) {
        self.day = day
        self.keyID = keyID
        self.userID = userID
        self.teamID = teamID
        self.model = model
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.costMicros = costMicros
    }
}

/// Users, teams, budgets, IP rules, usage and the admin action log in the SQL store.
public struct Directory: Sendable {
    public let store: any SQLStore

    public init(store: any SQLStore) {
        self.store = store
    }

    /// The tables this directory needs.
    public static let migrations: [Migration] = [
        Migration(version: 102, name: "users and teams") { _ in
            [
                """
                CREATE TABLE portcullis_users (
                    user_id TEXT PRIMARY KEY, email TEXT, role TEXT NOT NULL, team_id TEXT,
                    rpm_limit BIGINT, tpm_limit BIGINT, concurrency_limit BIGINT, metadata TEXT NOT NULL, created_at BIGINT NOT NULL
                )
                """,
                """
                CREATE TABLE portcullis_teams (
                    team_id TEXT PRIMARY KEY, name TEXT,
                    rpm_limit BIGINT, tpm_limit BIGINT, concurrency_limit BIGINT, metadata TEXT NOT NULL, created_at BIGINT NOT NULL
                )
                """,
            ]
        },
        Migration(version: 103, name: "budgets") { _ in
            ["""
             CREATE TABLE portcullis_budgets (
                 scope TEXT NOT NULL, subject TEXT NOT NULL, period TEXT NOT NULL, cap_micros BIGINT NOT NULL, created_at BIGINT NOT NULL,
                 PRIMARY KEY (scope, subject)
             )
             """]
        },
        Migration(version: 104, name: "ip rules") { _ in
            ["""
             CREATE TABLE portcullis_ip_rules (
                 rule_id TEXT PRIMARY KEY, cidr TEXT NOT NULL, action TEXT NOT NULL, note TEXT, created_at BIGINT NOT NULL, expires_at BIGINT
             )
             """]
        },
        Migration(version: 106, name: "daily usage") { _ in
            [
                """
                CREATE TABLE portcullis_usage_daily (
                    day TEXT NOT NULL, key_id TEXT NOT NULL, user_id TEXT NOT NULL, team_id TEXT NOT NULL, model TEXT NOT NULL,
                    requests BIGINT NOT NULL, prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cost_micros BIGINT NOT NULL,
                    PRIMARY KEY (day, key_id, user_id, team_id, model)
                )
                """,
                "CREATE INDEX portcullis_usage_user ON portcullis_usage_daily (user_id, day)",
                "CREATE INDEX portcullis_usage_team ON portcullis_usage_daily (team_id, day)",
                "CREATE INDEX portcullis_usage_key ON portcullis_usage_daily (key_id, day)",
            ]
        },
        // A usage batch is written once: a flush retried after its commit's answer was lost
        // (the primary died, a failover) finds its id and adds nothing twice.
        Migration(version: 107, name: "usage batch ids") { _ in
            ["CREATE TABLE portcullis_usage_batches (batch_id TEXT PRIMARY KEY, written_at BIGINT NOT NULL)",
             "CREATE INDEX portcullis_usage_batches_written ON portcullis_usage_batches (written_at)"]
        },
    ]

    static func optional(_ value: String?) -> SQLValue { value.map(SQLValue.text) ?? .null }
    static func optional(_ value: Int64?) -> SQLValue { value.map(SQLValue.integer) ?? .null }
    static func object(_ text: String?) -> JSONObject { (try? JSONParser.parse(text ?? "{}"))?.objectValue ?? JSONObject() }

    // MARK: Users

    public func upsertUser(_ user: UserRecord) async throws {
        try await store.execute("""
            INSERT INTO portcullis_users (user_id, email, role, team_id, rpm_limit, tpm_limit, concurrency_limit, metadata, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, role = excluded.role, team_id = excluded.team_id,
                rpm_limit = excluded.rpm_limit, tpm_limit = excluded.tpm_limit, concurrency_limit = excluded.concurrency_limit,
                metadata = excluded.metadata
            """, [.text(user.userID), Self.optional(user.email), .text(user.role.rawValue), Self.optional(user.teamID),
                  Self.optional(user.requestsPerMinute), Self.optional(user.tokensPerMinute), Self.optional(user.maximumConcurrency),
                  .text(JSONWriter.string(.object(user.metadata))), .integer(user.createdAt)])
    }

    public func user(_ userID: String) async throws -> UserRecord? {
        try await store.query("SELECT * FROM portcullis_users WHERE user_id = $1", [.text(userID)]).first.map(Self.user)
    }

    public func users(limit: Int, offset: Int) async throws -> [UserRecord] {
        try await store.query("SELECT * FROM portcullis_users ORDER BY user_id LIMIT $1 OFFSET $2",
                              [.integer(Int64(limit)), .integer(Int64(offset))]).map(Self.user)
    }

    @discardableResult
    public func deleteUser(_ userID: String) async throws -> Bool {
        !(try await store.query("DELETE FROM portcullis_users WHERE user_id = $1 RETURNING user_id", [.text(userID)]).isEmpty)
    }

    static func user(_ row: SQLRow) -> UserRecord {
        UserRecord(userID: row["user_id"].text ?? "", email: row["email"].text, role: Role(rawValue: row["role"].text ?? "") ?? .user,
                   teamID: row["team_id"].text, requestsPerMinute: row["rpm_limit"].integer, tokensPerMinute: row["tpm_limit"].integer,
                   maximumConcurrency: row["concurrency_limit"].integer, metadata: object(row["metadata"].text),
                   createdAt: row["created_at"].integer ?? 0)
    }

    // MARK: Teams

    public func upsertTeam(_ team: TeamRecord) async throws {
        try await store.execute("""
            INSERT INTO portcullis_teams (team_id, name, rpm_limit, tpm_limit, concurrency_limit, metadata, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (team_id) DO UPDATE SET name = excluded.name, rpm_limit = excluded.rpm_limit, tpm_limit = excluded.tpm_limit,
                concurrency_limit = excluded.concurrency_limit, metadata = excluded.metadata
            """, [.text(team.teamID), Self.optional(team.name), Self.optional(team.requestsPerMinute), Self.optional(team.tokensPerMinute),
                  Self.optional(team.maximumConcurrency), .text(JSONWriter.string(.object(team.metadata))), .integer(team.createdAt)])
    }

    public func team(_ teamID: String) async throws -> TeamRecord? {
        try await store.query("SELECT * FROM portcullis_teams WHERE team_id = $1", [.text(teamID)]).first.map(Self.team)
    }

    public func teams(limit: Int, offset: Int) async throws -> [TeamRecord] {
        try await store.query("SELECT * FROM portcullis_teams ORDER BY team_id LIMIT $1 OFFSET $2",
                              [.integer(Int64(limit)), .integer(Int64(offset))]).map(Self.team)
    }

    @discardableResult
    public func deleteTeam(_ teamID: String) async throws -> Bool {
        !(try await store.query("DELETE FROM portcullis_teams WHERE team_id = $1 RETURNING team_id", [.text(teamID)]).isEmpty)
    }

    static func team(_ row: SQLRow) -> TeamRecord {
        TeamRecord(teamID: row["team_id"].text ?? "", name: row["name"].text, requestsPerMinute: row["rpm_limit"].integer,
                   tokensPerMinute: row["tpm_limit"].integer, maximumConcurrency: row["concurrency_limit"].integer,
                   metadata: object(row["metadata"].text), createdAt: row["created_at"].integer ?? 0)
    }

    // MARK: Budgets

    public func setBudget(_ budget: BudgetRecord, now: Double = Date().timeIntervalSince1970) async throws {
        try await store.execute("""
            INSERT INTO portcullis_budgets (scope, subject, period, cap_micros, created_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (scope, subject) DO UPDATE SET period = excluded.period, cap_micros = excluded.cap_micros
            """, [.text(budget.scope.rawValue), .text(budget.subject), .text(budget.period.rawValue), .integer(budget.capMicros),
                  .integer(Int64(now))])
    }

    public func budget(scope: BudgetScope, subject: String) async throws -> BudgetRecord? {
        try await store.query("SELECT * FROM portcullis_budgets WHERE scope = $1 AND subject = $2", [.text(scope.rawValue), .text(subject)])
            .first.flatMap(Self.budget)
    }

    public func budgets(limit: Int, offset: Int) async throws -> [BudgetRecord] {
        try await store.query("SELECT * FROM portcullis_budgets ORDER BY scope, subject LIMIT $1 OFFSET $2",
                              [.integer(Int64(limit)), .integer(Int64(offset))]).compactMap(Self.budget)
    }

    @discardableResult
    public func deleteBudget(scope: BudgetScope, subject: String) async throws -> Bool {
        !(try await store.query("DELETE FROM portcullis_budgets WHERE scope = $1 AND subject = $2 RETURNING subject",
                                [.text(scope.rawValue), .text(subject)]).isEmpty)
    }

    static func budget(_ row: SQLRow) -> BudgetRecord? {
        guard let scope = BudgetScope(rawValue: row["scope"].text ?? ""), let period = BudgetPeriod(rawValue: row["period"].text ?? "") else { return nil }
        return BudgetRecord(scope: scope, subject: row["subject"].text ?? "", period: period, capMicros: row["cap_micros"].integer ?? 0)
    }

    /// Spend recorded (flushed) for a subject since `startDay`, in micro-units.
    public func spend(scope: BudgetScope, subject: String, sinceDay startDay: String) async throws -> Int64 {
        let column = switch scope {
        case .key: "key_id"
        case .user: "user_id"
        case .team: "team_id"
        }
        if scope == .key {
            // A key's budget also pays for the keys it minted (theirs, in turn, for their own).
            let rows = try await store.query("""
                SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS spent FROM portcullis_usage_daily
                WHERE (key_id = $1 OR key_id IN (SELECT key_id FROM portcullis_api_keys WHERE issuer_chain LIKE $3)) AND day >= $2
                """, [.text(subject), .text(startDay), .text("%\"\(subject)\"%")])
            return rows.first?["spent"].integer ?? 0
        }
        let rows = try await store.query("SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS spent FROM portcullis_usage_daily WHERE \(column) = $1 AND day >= $2",
                                         [.text(subject), .text(startDay)])
        return rows.first?["spent"].integer ?? 0
    }

    // MARK: IP rules

    public func addIPRule(_ rule: IPRuleRecord) async throws {
        try await store.execute("INSERT INTO portcullis_ip_rules (rule_id, cidr, action, note, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
                                [.text(rule.ruleID), .text(rule.cidr), .text(rule.action.rawValue), Self.optional(rule.note),
                                 .integer(rule.createdAt), Self.optional(rule.expiresAt)])
    }

    public func ipRules() async throws -> [IPRuleRecord] {
        try await store.query("SELECT * FROM portcullis_ip_rules ORDER BY created_at, rule_id", []).compactMap { row in
            guard let action = IPRuleRecord.Action(rawValue: row["action"].text ?? "") else { return nil }
            return IPRuleRecord(ruleID: row["rule_id"].text ?? "", cidr: row["cidr"].text ?? "", action: action, note: row["note"].text,
                                createdAt: row["created_at"].integer ?? 0, expiresAt: row["expires_at"].integer)
        }
    }

    @discardableResult
    public func deleteIPRule(_ ruleID: String) async throws -> Bool {
        !(try await store.query("DELETE FROM portcullis_ip_rules WHERE rule_id = $1 RETURNING rule_id", [.text(ruleID)]).isEmpty)
    }

    // MARK: Usage

    /// Adds a batch of aggregated usage rows in one transaction, once: a batch whose id was
    /// already written (a retry after its commit's answer was lost) adds nothing. Batch ids are
    /// kept for a day.
    public func addUsage(_ rows: [UsageRow], batchID: String) async throws {
        guard !rows.isEmpty else { return }
        let now = Int64(Date().timeIntervalSince1970)
        try await store.transaction { transaction in
            let claimed = try await transaction.query("""
                INSERT INTO portcullis_usage_batches (batch_id, written_at) VALUES ($1, $2)
                ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id
                """, [.text(batchID), .integer(now)])
            guard !claimed.isEmpty else { return }
            try await transaction.execute("DELETE FROM portcullis_usage_batches WHERE written_at < $1", [.integer(now - 86_400)])
            for row in rows {
                try await transaction.execute("""
                    INSERT INTO portcullis_usage_daily (day, key_id, user_id, team_id, model, requests, prompt_tokens, completion_tokens, cost_micros)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                    ON CONFLICT (day, key_id, user_id, team_id, model) DO UPDATE SET
                        requests = portcullis_usage_daily.requests + excluded.requests,
                        prompt_tokens = portcullis_usage_daily.prompt_tokens + excluded.prompt_tokens,
                        completion_tokens = portcullis_usage_daily.completion_tokens + excluded.completion_tokens,
                        cost_micros = portcullis_usage_daily.cost_micros + excluded.cost_micros
                    """, [.text(row.day), .text(row.keyID), .text(row.userID), .text(row.teamID), .text(row.model), .integer(row.requests),
                          .integer(row.promptTokens), .integer(row.completionTokens), .integer(row.costMicros)])
            }
        }
    }

    /// A data subject's usage rows keep their counts but no longer name it: its user id
    /// becomes `pseudonym`, its key ids `pseudonym/key1`, `pseudonym/key2`, …. Returns how many rows changed.
    public func relabelUsage(userID: String?, keyIDs: [String], as pseudonym: String) async throws -> Int {
        var changed = 0
        if let userID {
            changed += try await store.query("UPDATE portcullis_usage_daily SET user_id = $2 WHERE user_id = $1 RETURNING day",
                                             [.text(userID), .text(pseudonym)]).count
        }
        // One pseudonym per key: the rows of two keys stay two rows (the day, key, user, team and model are the row's key).
        for (index, keyID) in keyIDs.enumerated() {
            changed += try await store.query("UPDATE portcullis_usage_daily SET key_id = $2 WHERE key_id = $1 RETURNING day",
                                             [.text(keyID), .text("\(pseudonym)/key\(index + 1)")]).count
        }
        return changed
    }

    /// Usage summed by the chosen dimensions (`day`, `key_id`, `user_id`, `team_id`, `model`),
    /// filtered by any of them and a day range.
    public func usage(groupBy: [String], filters: [String: String], fromDay: String?, toDay: String?, limit: Int, offset: Int) async throws -> [JSONValue] {
        let dimensions = ["day", "key_id", "user_id", "team_id", "model"]
        let groups = groupBy.filter(dimensions.contains)
        var filter = SQLFilter()
        for dimension in dimensions where dimension != "day" {
            if let value = filters[dimension] { filter.add(dimension, .text(value)) }
        }
        if let fromDay { filter.add("day", ">=", .text(fromDay)) }
        if let toDay { filter.add("day", "<=", .text(toDay)) }
        let whereClause = filter.clause
        let limitBind = filter.bind(.integer(Int64(limit)))
        let offsetBind = filter.bind(.integer(Int64(offset)))
        let selected = groups.isEmpty ? "" : groups.joined(separator: ", ") + ", "
        let grouping = groups.isEmpty ? "" : "GROUP BY " + groups.joined(separator: ", ") + " ORDER BY " + groups.joined(separator: ", ")
        let rows = try await store.query("""
            SELECT \(selected)CAST(SUM(requests) AS BIGINT) AS requests, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens,
                   CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, CAST(SUM(cost_micros) AS BIGINT) AS cost_micros
            FROM portcullis_usage_daily \(whereClause) \(grouping) LIMIT \(limitBind) OFFSET \(offsetBind)
            """, filter.binds)
        return rows.compactMap { row in
            guard row["requests"].integer != nil else { return nil }
            var object = JSONObject()
            for group in groups { object[group] = .string(row[group].text ?? "") }
            object["requests"] = .integer(row["requests"].integer ?? 0)
            object["prompt_tokens"] = .integer(row["prompt_tokens"].integer ?? 0)
            object["completion_tokens"] = .integer(row["completion_tokens"].integer ?? 0)
            let micros = row["cost_micros"].integer ?? 0
            object["cost_micros"] = .integer(micros)
            object["cost"] = .double(Double(micros) / 1_000_000)
            return .object(object)
        }
    }
}
