import Foundation
import PortcullisAudit
import PortcullisCore
import Testing

/// `/admin/limits/violators`: the callers limits refused most, from the audit log's outcomes.
@Suite("Limit violators: a top-N in the admin API, not a metric label")
struct LimitViolatorsTests {
    static let master = "test-master-key"
    static let yaml = """
        auth: { master_key: \(master) }
        routing: { health_check: { interval_seconds: 0 } }
        models:
          - name: demo
            deployments: [ { provider: demo, model: demo } ]
        """

    @Test("The key refused most comes first, with its codes; by user, top and bad parameters; users may not read it")
    func topRefusedCallers() async throws {
        try await withGateway(yaml: Self.yaml) { gateway in
            let (noisy, noisyID) = try await gateway.createKey(#""rpm":1,"user_id":"alice""#, as: Self.master)
            let (quiet, quietID) = try await gateway.createKey(#""rpm":1,"user_id":"bob""#, as: Self.master)
            let (calm, _) = try await gateway.createKey(#""user_id":"carol""#, as: Self.master)
            var statuses: [Int] = []
            for _ in 0..<4 { statuses.append(try await gateway.chat(key: noisy).status) }
            for _ in 0..<2 { statuses.append(try await gateway.chat(key: quiet).status) }
            statuses.append(try await gateway.chat(key: calm).status)
            #expect(statuses == [200, 429, 429, 429, 200, 429, 200], "\(statuses)")

            @Sendable func violators() async throws -> [JSONObject] {
                let response = try await gateway.call(.GET, "/admin/limits/violators", key: Self.master)
                return (response.json?.objectValue?["data"]?.arrayValue ?? []).compactMap(\.objectValue)
            }
            #expect(try await eventually { try await violators().first?["refusals"]?.integerValue == 3 }, "the outcomes were written")
            let listed = try await violators()
            #expect(listed.map { $0["key_id"]?.stringValue } == [noisyID, quietID])
            #expect(listed.map { $0["refusals"]?.integerValue } == [3, 1])
            #expect(listed.first?["by_code"]?.objectValue?["rate_limit_exceeded"]?.integerValue == 3)
            #expect((listed.first?["last_refused_at"]?.integerValue ?? 0) > 0)

            let byUser = try await gateway.call(.GET, "/admin/limits/violators?by=user&top=1", key: Self.master)
            let users = (byUser.json?.objectValue?["data"]?.arrayValue ?? []).compactMap(\.objectValue)
            #expect(users.count == 1 && users.first?["user_id"]?.stringValue == "alice", "\(byUser.body)")
            #expect(byUser.json?.objectValue?["by"]?.stringValue == "user")

            // A window before the refusals holds none.
            let earlier = try await gateway.call(.GET, "/admin/limits/violators?from=1000000000&to=1000003600", key: Self.master)
            #expect(earlier.status == 200 && earlier.json?.objectValue?["data"]?.arrayValue?.isEmpty == true, "\(earlier.body)")

            let badGrouping = try await gateway.call(.GET, "/admin/limits/violators?by=request_id", key: Self.master)
            #expect(badGrouping.status == 400 && badGrouping.errorCode == "invalid_parameter", "\(badGrouping.body)")
            let badTop = try await gateway.call(.GET, "/admin/limits/violators?top=0", key: Self.master)
            #expect(badTop.status == 400 && badTop.errorCode == "invalid_parameter", "\(badTop.body)")
            let asUser = try await gateway.call(.GET, "/admin/limits/violators", key: calm)
            #expect(asUser.status == 403 && asUser.errorCode == "permission_denied", "\(asUser.body)")
        }
    }

    @Test("Counting: only limit codes, grouped by the chosen member, ties broken by the latest refusal")
    func counting() {
        func outcome(_ time: Int64, _ code: String, key: String, team: String? = nil) -> (timestamp: Int64, details: JSONObject) {
            var actor: JSONObject = ["key_id": .string(key)]
            if let team { actor["team_id"] = .string(team) }
            return (time, ["code": .string(code), "actor": .object(actor)])
        }
        let outcomes = [outcome(9, "budget_exceeded", key: "k2", team: "t1"), outcome(8, "rate_limit_exceeded", key: "k1", team: "t1"),
                        outcome(7, "permission_denied", key: "k3"), outcome(6, "permission_denied", key: "k3"),
                        outcome(5, "rate_limit_exceeded", key: "k2"), outcome(4, "request_exceeds_limit", key: "k1")]
        let byKey = LimitViolators(outcomes: outcomes, by: .key, top: 10, truncated: false)
        #expect(byKey.entries.map(\.subject) == ["k2", "k1"], "k3's refusals are not limit refusals; k2 was refused last")
        #expect(byKey.entries.first?.byCode == ["budget_exceeded": 1, "rate_limit_exceeded": 1])
        #expect(byKey.entries.first?.lastRefusedAt == 9)
        #expect(byKey.scanned == 6)
        let byTeam = LimitViolators(outcomes: outcomes, by: .team, top: 10, truncated: false)
        #expect(byTeam.entries.map(\.subject) == ["t1"] && byTeam.entries.first?.refusals == 2)
        #expect(LimitViolators(outcomes: outcomes, by: .key, top: 1, truncated: true).entries.count == 1)
    }
}
