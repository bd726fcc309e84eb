import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle

/// How long what the gateway stores is kept (`audit.retention`): payloads 30 days (GDPR's
/// storage limitation), audit records 6 years (HIPAA), security logs — guard events and the
/// admin action list — 1 year (SOC 2 asks for 1–3). A team may keep its own, with recorded consent.
public struct RetentionConfiguration: Sendable, Equatable {
    public var payloadsDays = 30
    public var auditDays = 2190
    public var securityDays = 365
    /// Hours between runs of the retention service (0: only on demand). Default 1.
    public var intervalHours = 1.0

    public init() {}
}

/// A team's own retention, with who agreed to it, when and why.
public struct TeamRetention: Sendable, Equatable {
    public var teamID: String
    public var payloadsDays: Int?
    public var auditDays: Int?
    public var consentBy: String
    /// Unix seconds.
    public var consentAt: Int64
    public var consentReason: String

    public init(teamID: String, payloadsDays: Int?, auditDays: Int?, consentBy: String, consentAt: Int64, consentReason: String) {
        self.teamID = teamID
        self.payloadsDays = payloadsDays
        self.auditDays = auditDays
        self.consentBy = consentBy
        self.consentAt = consentAt
        self.consentReason = consentReason
    }

    public var json: JSONValue {
        ["team_id": .string(teamID), "payloads_days": payloadsDays.map { .integer(Int64($0)) } ?? .null,
         "audit_days": auditDays.map { .integer(Int64($0)) } ?? .null,
         "consent": ["by": .string(consentBy), "at": .integer(consentAt), "reason": .string(consentReason)]]
    }
}

/// Removes what has outlived its retention. Payloads and security logs row by row; the audit
/// chain only in whole segments that end at a stored checkpoint, whose head the verifier then
/// starts from — so `portcullis audit verify` keeps passing on what is retained.
public struct RetentionService: Service {
    public static let migrations: [Migration] = [
        Migration(version: 311, name: "team retention with consent") { _ in
            ["""
             CREATE TABLE portcullis_team_retention (
                 team_id TEXT PRIMARY KEY, payloads_days BIGINT, audit_days BIGINT, consent_by TEXT NOT NULL, consent_at BIGINT NOT NULL,
                 consent_reason TEXT NOT NULL
             )
             """]
        },
    ]

    /// What one run removed.
    public struct Outcome: Sendable {
        public var payloads = 0
        public var guardEvents = 0
        public var adminActions = 0
        /// Per chain: the records removed and the checkpoint size the chain now starts after.
        public var auditSegments: [String: (records: Int, through: Int64)] = [:]

        public var json: JSONObject {
            var segments = JSONObject()
            for (chain, segment) in auditSegments.sorted(by: { $0.key < $1.key }) {
                segments[chain] = ["records": .integer(Int64(segment.records)), "through_seq": .integer(segment.through)]
            }
            return ["payloads": .integer(Int64(payloads)), "guard_events": .integer(Int64(guardEvents)),
                    "admin_actions": .integer(Int64(adminActions)), "audit_segments": .object(segments)]
        }
    }

    let store: any SQLStore
    public let configuration: RetentionConfiguration
    let writer: AuditWriter?
    let logger: Logger

    public init(store: any SQLStore, configuration: RetentionConfiguration, writer: AuditWriter?, logger: Logger) {
        self.store = store
        self.configuration = configuration
        self.writer = writer
        self.logger = logger
    }

    // MARK: Team policies

    public func teamPolicies() async throws -> [TeamRetention] {
        try await store.query("SELECT * FROM portcullis_team_retention ORDER BY team_id", []).map { row in
            TeamRetention(teamID: row["team_id"].text ?? "", payloadsDays: row["payloads_days"].integer.map(Int.init),
                          auditDays: row["audit_days"].integer.map(Int.init), consentBy: row["consent_by"].text ?? "",
                          consentAt: row["consent_at"].integer ?? 0, consentReason: row["consent_reason"].text ?? "")
        }
    }

    public func setTeamPolicy(_ policy: TeamRetention) async throws {
        try await store.execute("""
            INSERT INTO portcullis_team_retention (team_id, payloads_days, audit_days, consent_by, consent_at, consent_reason) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (team_id) DO UPDATE SET payloads_days = $2, audit_days = $3, consent_by = $4, consent_at = $5, consent_reason = $6
            """, [.text(policy.teamID), policy.payloadsDays.map { .integer(Int64($0)) } ?? .null, policy.auditDays.map { .integer(Int64($0)) } ?? .null,
                  .text(policy.consentBy), .integer(policy.consentAt), .text(policy.consentReason)])
    }

    @discardableResult
    public func removeTeamPolicy(_ teamID: String) async throws -> Bool {
        !(try await store.query("DELETE FROM portcullis_team_retention WHERE team_id = $1 RETURNING team_id", [.text(teamID)]).isEmpty)
    }

    // MARK: Running

    static func cutoff(days: Int, now: Date) -> Int64 { Int64((now.timeIntervalSince1970 - Double(days) * 86_400) * 1_000_000) }

    /// One pass: everything older than its retention at `now` is removed; the pass is itself an audit record when it removed anything.
    @discardableResult
    public func run(now: Date = Date()) async throws -> Outcome {
        var outcome = Outcome()
        let teams = try await teamPolicies()
        // Payloads: each team's own rows by its days, everyone else's by the default.
        let custom = teams.filter { $0.payloadsDays != nil }
        for team in custom {
            outcome.payloads += try await store.query("DELETE FROM audit_payloads WHERE team_id = $1 AND created_at < $2 RETURNING audit_id",
                                                      [.text(team.teamID), .integer(Self.cutoff(days: team.payloadsDays!, now: now))]).count
        }
        var binds: [SQLValue] = [.integer(Self.cutoff(days: configuration.payloadsDays, now: now))]
        var exempt = ""
        if !custom.isEmpty {
            exempt = " AND (team_id IS NULL OR team_id NOT IN (" + custom.indices.map { "$\($0 + 2)" }.joined(separator: ", ") + "))"
            binds += custom.map { .text($0.teamID) }
        }
        outcome.payloads += try await store.query("DELETE FROM audit_payloads WHERE created_at < $1\(exempt) RETURNING audit_id", binds).count
        // Security logs: guard events and the admin action list (both stamped in unix seconds).
        let security = Int64(now.timeIntervalSince1970 - Double(configuration.securityDays) * 86_400)
        outcome.guardEvents = try await store.query("DELETE FROM portcullis_guard_events WHERE at < $1 RETURNING at", [.integer(security)]).count
        outcome.adminActions = try await store.query("DELETE FROM portcullis_admin_actions WHERE at < $1 RETURNING at", [.integer(security)]).count
        // The audit chain: kept as long as the longest retention any team was given.
        let auditDays = max(configuration.auditDays, teams.compactMap(\.auditDays).max() ?? 0)
        let auditCutoff = Self.cutoff(days: auditDays, now: now)
        for chain in try await store.query("SELECT DISTINCT chain FROM audit_logs", []).compactMap({ $0["chain"].text }) {
            if let segment = try await pruneChain(chain, before: auditCutoff) { outcome.auditSegments[chain] = segment }
        }
        if outcome.payloads + outcome.guardEvents + outcome.adminActions > 0 || !outcome.auditSegments.isEmpty {
            logger.notice("retention removed expired data", metadata: ["outcome": "\(JSONWriter.string(.object(outcome.json)))"])
            writer?.submit(AuditRecord(timestamp: Int64(now.timeIntervalSince1970 * 1_000_000), severity: .info, category: "retention",
                                       action: "retention.prune", outcome: "success", details: outcome.json))
        }
        return outcome
    }

    /// Removes the chain's records up to its newest checkpoint whose last record is older than
    /// `before` (nil: no such checkpoint, nothing removed).
    func pruneChain(_ chain: String, before: Int64) async throws -> (records: Int, through: Int64)? {
        let candidates = try await store.query("""
            SELECT c.size AS size FROM audit_checkpoints c JOIN audit_logs l ON l.chain = c.chain AND l.seq = c.size
            WHERE c.chain = $1 AND l.timestamp < $2 ORDER BY c.size DESC LIMIT 1
            """, [.text(chain), .integer(before)])
        guard let through = candidates.first?["size"].integer else { return nil }
        let removed = try await store.transaction { transaction -> Int in
            if transaction.dialect == .postgres {
                // The append-only trigger lets this transaction's deletes through, and only these.
                _ = try await transaction.query("SELECT set_config('portcullis.audit_retention', 'on', true) AS set", [])
            }
            return try await transaction.query("DELETE FROM audit_logs WHERE chain = $1 AND seq <= $2 RETURNING seq", [.text(chain), .integer(through)]).count
        }
        return removed > 0 ? (removed, through) : nil
    }

    public func run() async throws {
        guard configuration.intervalHours > 0 else { return }
        await Periodic.run(every: .seconds(configuration.intervalHours * 3600)) {
            do {
                try await run(now: Date())
            } catch {
                logger.error("retention pass failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
