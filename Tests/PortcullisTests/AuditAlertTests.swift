import Foundation
import Hummingbird
import HummingbirdTesting
import PortcullisAudit
import PortcullisCore
import Synchronization
import Testing

/// The alert rules as a state machine over records, and alerts delivered end to end to
/// Slack-, PagerDuty- and webhook-shaped receivers on a real socket.
@Suite("Audit alerts", .serialized)
struct AuditAlertTests {
    static let minute: Int64 = 60_000_000

    static func failedLogin(at time: Int64, from address: String = "10.0.0.7") -> JSONObject {
        ["id": .string("r\(time)"), "timestamp": .integer(time), "severity": "MEDIUM", "category": "authentication", "outcome": "failure",
         "details": ["source_address": .string(address), "presented_key_id": "abc123"]]
    }

    static func spend(_ micros: Int64, at time: Int64, key: String = "k1", team: String? = nil) -> JSONObject {
        var actor: JSONObject = ["role": "user"]
        if let team { actor["team_id"] = .string(team) }
        return ["id": .string("s\(time)"), "timestamp": .integer(time), "severity": "INFO", "category": "request", "outcome": "success",
                "actor_key_id": .string(key), "details": ["cost_micros": .integer(micros), "actor": .object(actor)]]
    }

    @Test("failed logins: the eleventh within a minute from one address (or against one key) fires; ten, or eleven spread out, do not")
    func failedLogins() {
        var evaluator = AlertEvaluator()
        var fired: [AuditAlert] = []
        for index in 0..<10 { fired += evaluator.observe(Self.failedLogin(at: 1_000_000_000 + Int64(index) * 1_000_000)) }
        #expect(fired.isEmpty)
        fired += evaluator.observe(Self.failedLogin(at: 1_000_000_000 + 10_000_000))
        #expect(Set(fired.map(\.subject)) == ["address 10.0.0.7", "key abc123"] && fired.allSatisfy { $0.rule == .failedLogins })
        var slow = AlertEvaluator()
        let none = (0..<11).flatMap { slow.observe(Self.failedLogin(at: Int64($0) * 10 * 1_000_000, from: "10.0.0.9")) }
        #expect(none.filter { $0.subject == "address 10.0.0.9" }.isEmpty, "eleven in 100 s is not eleven in a minute")
    }

    @Test("security incidents, compliance violations and cost spikes; alerts about alerts are never raised")
    func otherRules() {
        var evaluator = AlertEvaluator()
        let blocked: JSONObject = ["id": "b1", "timestamp": 5, "severity": "HIGH", "category": "request", "outcome": "blocked", "actor_key_id": "k9",
                                   "details": ["path": "/v1/chat/completions", "guard_findings": [["category": "prompt_injection", "action": "block"]]]]
        let incident = evaluator.observe(blocked)
        #expect(incident.map(\.rule) == [.securityIncident])
        var low = blocked
        low["severity"] = "LOW"
        let lowBlock = evaluator.observe(low)
        #expect(lowBlock.isEmpty, "a LOW block is no incident")
        let pii: JSONObject = ["id": "p1", "timestamp": 6, "severity": "MEDIUM", "category": "request", "outcome": "blocked",
                               "details": ["source_address": "10.1.1.1", "guard_findings": [["category": "pii", "action": "block"]]]]
        let personal = evaluator.observe(pii)
        #expect(personal.map(\.rule) == [.complianceViolation])
        let residency: JSONObject = ["id": "r1", "timestamp": 6, "severity": "HIGH", "category": "request", "outcome": "refused", "actor_key_id": "k7",
                                     "details": ["code": "residency_violation", "model": "eu-only", "status": 403]]
        let refused = evaluator.observe(residency)
        #expect(refused.map(\.rule) == [.complianceViolation] && refused.first?.subject == "key k7" && refused.first?.summary.contains("eu-only") == true)
        let lost: JSONObject = ["id": "g1", "timestamp": 7, "severity": "CRITICAL", "category": "audit", "action": "audit.gap", "outcome": "records_lost"]
        let gap = evaluator.observe(lost)
        #expect(gap.first?.severity == .critical)
        let alertRecord: JSONObject = ["id": "a1", "timestamp": 8, "severity": "HIGH", "category": "alert", "outcome": "blocked"]
        let aboutAlerts = evaluator.observe(alertRecord)
        #expect(aboutAlerts.isEmpty)

        // Ten minutes at one unit a minute, then a minute at two: the line (1.5 units) is crossed once.
        var costs = AlertEvaluator()
        var spikes: [AuditAlert] = []
        for minute in 0..<10 { spikes += costs.observe(Self.spend(1_000_000, at: Int64(minute) * Self.minute + 1, team: "research")) }
        #expect(spikes.isEmpty)
        spikes += costs.observe(Self.spend(1_000_000, at: 10 * Self.minute + 1, team: "research"))
        #expect(spikes.isEmpty, "the baseline is matched, not exceeded")
        spikes += costs.observe(Self.spend(700_000, at: 10 * Self.minute + 2, team: "research"))
        #expect(Set(spikes.map(\.subject)) == ["key k1", "team research"] && spikes.allSatisfy { $0.rule == .costSpike })
        let again = costs.observe(Self.spend(500_000, at: 10 * Self.minute + 3, team: "research"))
        #expect(again.isEmpty, "once per crossing")
    }

    @Test("de-duplication by incident and a limit per minute")
    func throttle() {
        var throttle = AlertThrottle(dedupSeconds: 300, maximumPerMinute: 2)
        let alert = AuditAlert(rule: .failedLogins, severity: .high, subject: "address 1.2.3.4", summary: "", recordID: "r", timestamp: 0)
        let first = throttle.admit(alert, now: 0)
        let repeated = throttle.admit(alert, now: 10_000_000)
        let later = throttle.admit(alert, now: 301_000_000)
        var other = alert
        other.subject = "address 5.6.7.8"
        let second = throttle.admit(other, now: 302_000_000)
        other.subject = "address 9.9.9.9"
        let third = throttle.admit(other, now: 303_000_000)
        #expect(first && !repeated && later, "the same incident within five minutes is one alert")
        #expect(second && !third, "two a minute at most")
        #expect(throttle.suppressed == 2)
    }

    @Test("end to end: eleven bad keys from one address make one alert on Slack, PagerDuty and a webhook, itself audited")
    func delivered() async throws {
        let received = Mutex<[(path: String, body: JSONObject)]>([])
        let router = Router()
        for path in ["slack", "pagerduty", "hook"] {
            router.post(RouterPath(path)) { request, _ -> Response in
                let body = try await request.body.collect(upTo: 1 << 20)
                let object = (try? JSONParser.parse(body.readableBytesView))?.objectValue ?? [:]
                received.withLock { $0.append((path, object)) }
                return Response(status: path == "pagerduty" ? .accepted : .ok)
            }
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { receiver in
            let base = "http://127.0.0.1:\(receiver.port!)"
            let yaml = """
                auth: { master_key: alert-master }
                audit:
                  alerts:
                    destinations:
                      - { type: slack, url: "\(base)/slack" }
                      - { type: pagerduty, url: "\(base)/pagerduty", routing_key: R0UTING }
                      - { type: webhook, url: "\(base)/hook", token: hook-token }
                models:
                  - name: demo
                    deployments: [ { provider: demo } ]
                """
            try await withGateway(yaml: yaml) { gateway in
                for _ in 0..<12 { #expect(try await gateway.chat(key: "pck_deadbeef0000_" + String(repeating: "x", count: 43)).status == 401) }
                #expect(try await eventually(seconds: 5) { received.withLock { $0.count } >= 3 })
                try await Task.sleep(nanoseconds: 500_000_000)
                let calls = received.withLock { $0 }
                #expect(Set(calls.map(\.path)) == ["slack", "pagerduty", "hook"])
                let texts = calls.filter { $0.path == "slack" }.compactMap { $0.body["text"]?.stringValue }
                #expect(texts.count == 2, "one alert per incident: the address and the key, each once: \(texts)")
                #expect(texts.contains { $0.contains("address 127.0.0.1") } && texts.contains { $0.contains("key deadbeef0000") })
                #expect(calls.filter { $0.path == "hook" }.allSatisfy { $0.body["rule"]?.stringValue == "failed_logins" })
                let page = calls.first { $0.path == "pagerduty" }?.body
                #expect(page?["routing_key"]?.stringValue == "R0UTING" && page?["event_action"]?.stringValue == "trigger")
                #expect(page?["dedup_key"]?.stringValue?.hasPrefix("portcullis/failed_logins/") == true)
                #expect(page?["payload"]?.objectValue?["severity"]?.stringValue == "error")
                // The alerts' own records follow their delivery (their writes are batched): wait for both.
                #expect(try await eventually(seconds: 5) {
                    let records = try await gateway.call(.GET, "/admin/audit?category=alert", key: "alert-master")
                    let alerts = (records.json?.objectValue?["data"]?.arrayValue ?? []).compactMap(\.objectValue)
                    return alerts.count == 2 && alerts.allSatisfy { $0["action"]?.stringValue == "alert.failed_logins" && $0["outcome"]?.stringValue == "delivered" }
                })
            }
        }
    }
}
