import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle

/// One alert: which rule fired, about whom, and the record that made it fire.
public struct AuditAlert: Sendable, Equatable {
    public enum Rule: String, Sendable, CaseIterable {
        /// A guard blocked a request at CRITICAL or HIGH risk.
        case securityIncident = "security_incident"
        /// More failed logins within a minute from one address (or against one key) than allowed.
        case failedLogins = "failed_logins"
        /// Personal data or secrets blocked, or audit records lost.
        case complianceViolation = "compliance_violation"
        /// A key's or team's spend in the last minute over the ratio of its baseline.
        case costSpike = "cost_spike"
    }

    public var rule: Rule
    public var severity: AuditRecord.Severity
    /// Whom it is about: `address 10.0.0.7`, `key k_abc`, `team research`.
    public var subject: String
    public var summary: String
    /// The record that made the rule fire.
    public var recordID: String
    /// Microseconds since 1970 of that record.
    public var timestamp: Int64

    public init(rule: Rule, severity: AuditRecord.Severity, subject: String, summary: String, recordID: String, timestamp: Int64) {
        self.rule = rule
        self.severity = severity
        self.subject = subject
        self.summary = summary
        self.recordID = recordID
        self.timestamp = timestamp
    }

    /// Alerts with one key are one incident: de-duplicated, and one PagerDuty incident.
    public var dedupKey: String { "portcullis/\(rule.rawValue)/\(subject)" }
}

/// The alert rules as a state machine over audit records, without I/O: `observe` takes the
/// records in order and returns the alerts they raise (before de-duplication).
public struct AlertEvaluator: Sendable {
    public struct Settings: Sendable, Equatable {
        /// Failed logins per minute from one address or against one key above which an alert fires. Default 10.
        public var failedLoginsPerMinute = 10
        /// A spend of more than this times the baseline per minute is a spike. Default 1.5 (150%).
        public var costSpikeRatio = 1.5
        /// Minutes of history the baseline is the mean of. Default 60.
        public var baselineMinutes = 60
        /// Minutes with spend a baseline needs before spikes are judged. Default 5.
        public var minimumHistoryMinutes = 5

        public init() {}
    }

    public let settings: Settings
    /// Failure times (µs) per address and per key, within the last minute.
    private var failures: [String: [Int64]] = [:]
    /// Spend (micro-units) per subject per minute (minute number since 1970).
    private var spend: [String: [Int64: Int64]] = [:]

    public init(settings: Settings = Settings()) {
        self.settings = settings
    }

    public mutating func observe(_ record: JSONObject) -> [AuditAlert] {
        let category = record["category"]?.stringValue ?? ""
        guard category != "alert" else { return [] }
        let details = record["details"]?.objectValue ?? JSONObject()
        let id = record["id"]?.stringValue ?? ""
        let time = record["timestamp"]?.integerValue ?? 0
        let severity = AuditRecord.Severity(rawValue: record["severity"]?.stringValue ?? "") ?? .info
        let outcome = record["outcome"]?.stringValue ?? ""
        var alerts: [AuditAlert] = []
        func alert(_ rule: AuditAlert.Rule, _ severity: AuditRecord.Severity, _ subject: String, _ summary: String) {
            alerts.append(AuditAlert(rule: rule, severity: severity, subject: subject, summary: summary, recordID: id, timestamp: time))
        }
        let source = details["source_address"]?.stringValue
        let actor = details["actor"]?.objectValue ?? JSONObject()
        let key = record["actor_key_id"]?.stringValue
        let findings = details["guard_findings"]?.arrayValue?.compactMap(\.objectValue) ?? []

        if outcome == "blocked" && (severity == .critical || severity == .high) {
            let categories = Set(findings.compactMap { $0["category"]?.stringValue }).sorted().joined(separator: ", ")
            alert(.securityIncident, severity, key.map { "key \($0)" } ?? source.map { "address \($0)" } ?? "unknown caller",
                  "\(severity.rawValue) guard block (\(categories)) on \(details["path"]?.stringValue ?? "a request")")
        }
        if category == "authentication" && outcome == "failure" {
            for subject in [source.map { "address \($0)" }, details["presented_key_id"]?.stringValue.map { "key \($0)" }].compactMap({ $0 }) {
                var times = failures[subject, default: []].filter { $0 > time - 60_000_000 }
                times.append(time)
                failures[subject] = times
                if times.count > settings.failedLoginsPerMinute {
                    alert(.failedLogins, .high, subject, "\(times.count) failed logins within a minute from \(subject)")
                }
            }
        }
        let sensitive = findings.filter { ["pii", "secrets"].contains($0["category"]?.stringValue ?? "") && $0["action"]?.stringValue == "block" }
        if !sensitive.isEmpty {
            alert(.complianceViolation, .high, key.map { "key \($0)" } ?? source.map { "address \($0)" } ?? "unknown caller",
                  "personal data or secrets blocked on \(details["path"]?.stringValue ?? "a request")")
        }
        if details["code"]?.stringValue == ErrorCode.residencyViolation.rawValue {
            alert(.complianceViolation, .high, key.map { "key \($0)" } ?? source.map { "address \($0)" } ?? "unknown caller",
                  "no deployment satisfies the caller's residency rules for model \(details["model"]?.stringValue ?? "?"); the request was refused")
        }
        if category == "audit" && outcome == "records_lost" {
            alert(.complianceViolation, .critical, "audit log", "audit records were lost while the database was unreachable")
        }
        if let cost = details["cost_micros"]?.integerValue, cost > 0 {
            let minute = time / 60_000_000
            for subject in [key.map { "key \($0)" }, actor["team_id"]?.stringValue.map { "team \($0)" }].compactMap({ $0 }) {
                var minutes = spend[subject, default: [:]]
                minutes[minute, default: 0] += cost
                minutes = minutes.filter { $0.key > minute - Int64(settings.baselineMinutes) - 1 }
                spend[subject] = minutes
                let history = minutes.filter { $0.key < minute }
                guard history.count >= settings.minimumHistoryMinutes else { continue }
                let first = history.keys.min() ?? minute
                let baseline = Double(history.values.reduce(0, +)) / Double(max(1, minute - first))
                let now = Double(minutes[minute] ?? 0)
                // Fires once as the minute crosses the line, not on every request after.
                if now > settings.costSpikeRatio * baseline && Double(now - Double(cost)) <= settings.costSpikeRatio * baseline {
                    alert(.costSpike, .medium, subject, "\(subject) spent \(DecimalText.format(now / 1_000_000, places: 6)) this minute "
                          + "against a baseline of \(DecimalText.format(baseline / 1_000_000, places: 6)) per minute")
                }
            }
        }
        return alerts
    }
}

/// De-duplication and rate limiting: one alert per incident (`dedupKey`) per `dedupSeconds`,
/// and at most `maximumPerMinute` alerts in any minute; what it holds back it counts.
public struct AlertThrottle: Sendable {
    public var dedupSeconds: Double
    public var maximumPerMinute: Int
    private var lastSent: [String: Int64] = [:]
    private var sent: [Int64] = []
    public private(set) var suppressed = 0

    public init(dedupSeconds: Double = 300, maximumPerMinute: Int = 30) {
        self.dedupSeconds = dedupSeconds
        self.maximumPerMinute = maximumPerMinute
    }

    /// Whether `alert` goes out (and, if so, it is counted against the limits).
    public mutating func admit(_ alert: AuditAlert, now: Int64) -> Bool {
        if let last = lastSent[alert.dedupKey], Double(now - last) < dedupSeconds * 1_000_000 {
            suppressed += 1
            return false
        }
        sent = sent.filter { $0 > now - 60_000_000 }
        guard sent.count < maximumPerMinute else {
            suppressed += 1
            return false
        }
        sent.append(now)
        lastSent[alert.dedupKey] = now
        return true
    }
}
