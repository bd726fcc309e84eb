import Foundation
import PortcullisAccess
import PortcullisConfig
import PortcullisCore
import PortcullisRedis
import Testing

@Suite("Identity, roles, limits and budgets through the gateway", .serialized)
struct AccessTests {
    @Test("the permission matrix: every role against every route", arguments: Engine.allCases)
    func permissionMatrix(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            var keys: [String: String] = [:]
            for role in ["user", "developer", "admin", "auditor"] {
                keys[role] = try await gateway.createKey(#""role":"\#(role)","user_id":"\#(role)-1","team_id":"t1""#).key
            }
            // (method, path, body, expected status per role: user, developer, admin, auditor)
            let matrix: [(HTTPMethodName, String, String?, [String: Int])] = [
                (.POST, "/v1/chat/completions", #"{"model":"demo","messages":[{"role":"user","content":"x"}]}"#,
                 ["user": 200, "developer": 200, "admin": 200, "auditor": 403]),
                (.POST, "/v1/embeddings", #"{"model":"demo","input":"x"}"#, ["user": 200, "developer": 200, "admin": 200, "auditor": 403]),
                (.POST, "/v1/messages", #"{"model":"demo","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                 ["user": 200, "developer": 200, "admin": 200, "auditor": 403]),
                (.GET, "/v1/models", nil, ["user": 200, "developer": 200, "admin": 200, "auditor": 200]),
                (.GET, "/admin/whoami", nil, ["user": 200, "developer": 200, "admin": 200, "auditor": 200]),
                (.POST, "/admin/keys", #"{"role":"user"}"#, ["user": 403, "developer": 201, "admin": 201, "auditor": 403]),
                (.POST, "/admin/keys", #"{"role":"admin"}"#, ["user": 403, "developer": 403, "admin": 201, "auditor": 403]),
                (.GET, "/admin/keys", nil, ["user": 403, "developer": 200, "admin": 200, "auditor": 200]),
                (.GET, "/admin/users", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 200]),
                (.POST, "/admin/users", #"{"user_id":"someone","role":"user"}"#, ["user": 403, "developer": 403, "admin": 201, "auditor": 403]),
                (.GET, "/admin/teams", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 200]),
                (.GET, "/admin/budgets", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 200]),
                (.POST, "/admin/budgets", #"{"scope":"team","subject":"t9","amount":5}"#, ["user": 403, "developer": 403, "admin": 201, "auditor": 403]),
                (.GET, "/admin/ip-rules", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 200]),
                (.GET, "/admin/usage", nil, ["user": 200, "developer": 200, "admin": 200, "auditor": 200]),
                (.GET, "/admin/usage?user_id=someone-else", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 200]),
                (.GET, "/admin/actions", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 200]),
                (.POST, "/admin/usage/flush", nil, ["user": 403, "developer": 403, "admin": 200, "auditor": 403]),
            ]
            for (method, path, body, expected) in matrix {
                for (role, status) in expected {
                    let result = try await gateway.call(method, path, key: keys[role], body: body)
                    #expect(result.status == status, "\(role) \(method) \(path): \(result.status) \(result.body)")
                    if status == 403 { #expect(result.errorCode == "permission_denied", "\(role) \(path): \(result.body)") }
                }
                let anonymous = try await gateway.call(method, path, key: nil, body: body)
                #expect(anonymous.status == 401, "no credential \(method) \(path): \(anonymous.status)")
                let wrong = try await gateway.call(method, path, key: "pck_0123456789abcdef_" + String(repeating: "0", count: 64), body: body)
                #expect(wrong.status == 401 && wrong.errorCode == "invalid_api_key", "bad key \(path): \(wrong.body)")
            }
            // A developer manages only their own keys.
            let developer = keys["developer"]!
            let others = try await gateway.createKey(#""role":"user","user_id":"someone-else""#)
            #expect(try await gateway.call(.POST, "/admin/keys/\(others.id)/revoke", key: developer).status == 404)
            #expect(try await gateway.call(.POST, "/admin/keys", key: developer, body: #"{"user_id":"someone-else"}"#).status == 403)
            let own = try await gateway.createKey(#""role":"user""#, as: developer)
            let listed = try await gateway.call(.GET, "/admin/keys", key: developer)
            let ids = listed.json?.objectValue?["data"]?.arrayValue?.compactMap { $0.objectValue?["key_id"]?.stringValue } ?? []
            #expect(ids.contains(own.id) && !ids.contains(others.id), "developer sees own keys only: \(ids)")
            #expect(try await gateway.call(.POST, "/admin/keys/\(own.id)/revoke", key: developer).status == 200)
            #expect(try await gateway.chat(key: own.key).status == 401, "revoked at once")
            // Every change is in the action log.
            let actions = try await gateway.call(.GET, "/admin/actions?limit=500", key: "test-master-key")
            let names = actions.json?.objectValue?["data"]?.arrayValue?.compactMap { $0.objectValue?["action"]?.stringValue } ?? []
            #expect(names.contains("key.create") && names.contains("key.revoke") && names.contains("user.create") && names.contains("budget.set"))
        }
    }

    @Test("a key limited to some models is refused others and does not see them listed", arguments: Engine.allCases)
    func modelAllowList(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            let key = try await gateway.createKey(#""models":["demo"]"#).key
            #expect(try await gateway.chat(key: key).status == 200)
            let refused = try await gateway.chat(key: key, model: "other")
            #expect(refused.status == 403 && refused.errorCode == "model_not_allowed")
            let models = try await gateway.call(.GET, "/v1/models", key: key)
            #expect(models.json?.objectValue?["data"]?.arrayValue?.compactMap { $0.objectValue?["id"]?.stringValue } == ["demo"])
        }
    }

    @Test("requests per minute: 429 with Retry-After and x-ratelimit headers once the key's limit is used", arguments: Engine.allCases)
    func requestsPerMinute(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            let key = try await gateway.createKey(#""rpm":3"#).key
            for index in 0..<3 {
                let result = try await gateway.chat(key: key)
                #expect(result.status == 200)
                #expect(result.headers["x-ratelimit-limit-requests"] == "3")
                #expect(result.headers["x-ratelimit-remaining-requests"] == String(2 - index))
            }
            let refused = try await gateway.chat(key: key)
            #expect(refused.status == 429 && refused.errorCode == "rate_limit_exceeded", "\(refused.body)")
            #expect(Int(refused.headers["retry-after"] ?? "") ?? 0 >= 1)
            #expect(refused.headers["x-ratelimit-remaining-requests"] == "0")
            // Another key is not affected.
            #expect(try await gateway.chat(key: try await gateway.createKey(#""rpm":3"#).key).status == 200)
        }
    }

    @Test("tokens per minute and concurrency are limits too", arguments: Engine.allCases)
    func tokensAndConcurrency(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            let key = try await gateway.createKey(#""tpm":200"#).key
            let long = String(repeating: "word ", count: 100)   // ~500 bytes ≈ 130 tokens counted up front
            #expect(try await gateway.chat(key: key, text: long).status == 200)
            let refused = try await gateway.chat(key: key, text: long)
            #expect(refused.status == 429 && refused.body.contains("tokens per minute"), "\(refused.body)")
            #expect(refused.headers["x-ratelimit-limit-tokens"] == "200")

            let slow = try await gateway.createKey(#""concurrency":1"#).key
            async let first = gateway.call(.POST, "/v1/chat/completions", key: slow,
                                           body: #"{"model":"demo","stream":true,"messages":[{"role":"user","content":"\#(long)"}]}"#)
            try await Task.sleep(nanoseconds: 20_000_000)
            _ = try await first
            #expect(try await gateway.chat(key: slow).status == 200, "the slot is free again after the stream ended")
        }
    }

    @Test("a budget caps spend: reservations refuse what could exceed it, spend is recorded per key and day", arguments: Engine.allCases)
    func budgetAndUsage(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            // 10 micro-units per output token, 1 per input token; cap 2000 micro-units.
            let (key, id) = try await gateway.createKey(#""budget":0.002,"budget_period":"day""#)
            var served = 0
            var refusal: HTTPResult?
            for _ in 0..<40 {
                let result = try await gateway.chat(key: key, extra: #","max_tokens":20"#)
                if result.status == 200 { served += 1 } else { refusal = result; break }
            }
            #expect(served > 0 && refusal != nil, "served \(served)")
            #expect(refusal?.status == 429 && refusal?.errorCode == "budget_exceeded", "\(refusal?.body ?? "")")
            #expect(try await gateway.call(.POST, "/admin/usage/flush", key: "test-master-key").status == 200)
            let usage = try await gateway.call(.GET, "/admin/usage?group_by=key_id,model,day&key_id=\(id)", key: "test-master-key")
            let row = usage.json?.objectValue?["data"]?.arrayValue?.first?.objectValue
            #expect(row?["requests"]?.integerValue == Int64(served), "\(usage.body)")
            #expect(row?["model"]?.stringValue == "demo" && row?["day"]?.stringValue == UsageDayOfToday.string)
            let spent = row?["cost_micros"]?.integerValue ?? 0
            #expect(spent > 0 && spent <= 2000, "spend \(spent) stays within the cap")
            let keyInfo = try await gateway.call(.GET, "/admin/keys/\(id)", key: "test-master-key")
            #expect(keyInfo.json?.objectValue?["last_used_at"]?.integerValue != nil, "last use written by the batch flush")
        }
    }

    @Test("a stream that crosses a hard budget ends cleanly with finish_reason length", arguments: Engine.allCases)
    func streamCutAtBudget(engine: Engine) async throws {
        let yaml = accessYAML + "\nlimits: { reserve_output_tokens: 4 }\n"
        try await withGateway(engine: engine, yaml: yaml) { gateway in
            let key = try await gateway.createKey(#""budget":0.0006"#).key
            let long = String(repeating: "lorem ipsum ", count: 16)
            let result = try await gateway.call(.POST, "/v1/chat/completions", key: key,
                                                body: #"{"model":"demo","stream":true,"messages":[{"role":"user","content":"\#(long)"}]}"#)
            #expect(result.status == 200)
            let events = result.sseData
            #expect(events.last == "[DONE]", "ended cleanly: \(events.suffix(2))")
            #expect(events.contains { $0.contains(#""finish_reason":"length""#) }, "\(events.suffix(3))")
            let text = events.compactMap { try? JSONParser.parse($0) }.compactMap {
                $0.objectValue?["choices"]?.arrayValue?.first?.objectValue?["delta"]?.objectValue?["content"]?.stringValue
            }.joined()
            #expect(text.count < 200, "cut before the whole answer: \(text.count) characters")
        }
    }

    @Test("rotation keeps the old secret for the grace period; a zero grace ends it at once", arguments: Engine.allCases)
    func rotation(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            let (old, id) = try await gateway.createKey("")
            #expect(try await gateway.chat(key: old).status == 200)
            let rotated = try await gateway.call(.POST, "/admin/keys/\(id)/rotate", key: "test-master-key", body: #"{"grace_seconds":3600}"#)
            let new = rotated.json?.objectValue?["key"]?.stringValue ?? ""
            #expect(rotated.status == 200 && new != old && new.hasPrefix("pck_\(id)_"))
            #expect(try await gateway.chat(key: old).status == 200, "old secret within grace")
            #expect(try await gateway.chat(key: new).status == 200)
            _ = try await gateway.call(.POST, "/admin/keys/\(id)/rotate", key: "test-master-key", body: #"{"grace_seconds":0}"#)
            #expect(try await gateway.chat(key: new).status == 401, "the previous secret ends with a zero grace")
        }
    }

    @Test("IP policy: deny lists, trusted proxies' X-Forwarded-For, dynamic rules and the admin allow list", arguments: Engine.allCases)
    func ipPolicy(engine: Engine) async throws {
        let yaml = accessYAML + """

            ip_policy:
              deny: [198.51.100.7]
              trusted_proxies: [127.0.0.1/32]
              admin_allow: [127.0.0.1, 10.0.0.0/8]
            """
        try await withGateway(engine: engine, yaml: yaml) { gateway in
            let master = "test-master-key"
            #expect(try await gateway.chat(key: master).status == 200)
            let forwarded = try await gateway.call(.POST, "/v1/chat/completions", key: master,
                                                   body: #"{"model":"demo","messages":[{"role":"user","content":"x"}]}"#,
                                                   headers: ["x-forwarded-for": "198.51.100.7"])
            #expect(forwarded.status == 403 && forwarded.errorCode == "ip_not_allowed")
            let spoofChain = try await gateway.call(.GET, "/v1/models", key: master, headers: ["x-forwarded-for": "198.51.100.7, 203.0.113.9"])
            #expect(spoofChain.status == 200, "the nearest untrusted hop is the client")
            #expect(try await gateway.call(.GET, "/admin/whoami", key: master, headers: ["x-forwarded-for": "203.0.113.9"]).status == 403,
                    "admin routes only from the admin allow list")
            #expect(try await gateway.call(.GET, "/admin/whoami", key: master, headers: ["x-forwarded-for": "10.1.2.3"]).status == 200)
            #expect(try await gateway.call(.GET, "/metrics", key: nil, headers: ["x-forwarded-for": "203.0.113.9"]).status == 403,
                    "metrics only from the admin allow list")
            let metrics = try await gateway.call(.GET, "/metrics", key: nil, headers: ["x-forwarded-for": "10.1.2.3"])
            #expect(metrics.status == 200 && metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(metrics.body.contains("# TYPE portcullis_database_up gauge\nportcullis_database_up 1\n"), "\(metrics.body)")
            let rule = try await gateway.call(.POST, "/admin/ip-rules", key: master, body: #"{"cidr":"203.0.113.0/24","action":"deny","note":"abuse"}"#)
            #expect(rule.status == 201)
            #expect(try await gateway.call(.GET, "/v1/models", key: master, headers: ["x-forwarded-for": "203.0.113.50"]).status == 403)
            let ruleID = rule.json?.objectValue?["id"]?.stringValue ?? ""
            #expect(try await gateway.call(.DELETE, "/admin/ip-rules/\(ruleID)", key: master).status == 200)
            #expect(try await gateway.call(.GET, "/v1/models", key: master, headers: ["x-forwarded-for": "203.0.113.50"]).status == 200)
            let invalid = try await gateway.call(.POST, "/admin/ip-rules", key: master, body: #"{"cidr":"300.1.1.1/8"}"#)
            #expect(invalid.status == 400 && invalid.json?.objectValue?["error"]?.objectValue?["param"]?.stringValue == "cidr")
        }
    }

    @Test("admin lists paginate with a cursor and refuse bad limits", arguments: Engine.allCases)
    func pagination(engine: Engine) async throws {
        try await withGateway(engine: engine, yaml: accessYAML) { gateway in
            for index in 0..<5 {
                #expect(try await gateway.call(.POST, "/admin/teams", key: "test-master-key", body: #"{"team_id":"team-\#(index)"}"#).status == 201)
            }
            var cursor: String? = nil
            var seen: [String] = []
            repeat {
                let page = try await gateway.call(.GET, "/admin/teams?limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""), key: "test-master-key")
                let object = page.json?.objectValue
                seen += object?["data"]?.arrayValue?.compactMap { $0.objectValue?["team_id"]?.stringValue } ?? []
                cursor = object?["next_cursor"]?.stringValue
            } while cursor != nil
            #expect(seen == (0..<5).map { "team-\($0)" })
            #expect(try await gateway.call(.GET, "/admin/teams?limit=0", key: "test-master-key").status == 400)
            let malformed = try await gateway.call(.POST, "/admin/teams", key: "test-master-key", body: "{not json")
            #expect(malformed.status == 400 && malformed.errorCode == "invalid_json")
        }
    }
}

enum UsageDayOfToday {
    static var string: String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd"
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.locale = Locale(identifier: "en_US_POSIX")
        return formatter.string(from: Date())
    }
}

@Suite("Budget periods")
struct BudgetPeriodTests {
    @Test("day and month bounds agree with Foundation's Gregorian calendar, leap years and year ends included")
    func boundsMatchCalendar() {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let formatter = DateFormatter()
        formatter.calendar = calendar
        formatter.timeZone = calendar.timeZone
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyy-MM-dd"
        var times: [Double] = [0, 951_782_400, 951_868_799, 1_709_164_800, 1_735_689_599, 1_735_689_600, 4_102_444_799]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 { times.append(Double.random(in: 0..<4_102_444_800, using: &generator)) }
        for time in times {
            let date = Date(timeIntervalSince1970: time)
            let dayStart = calendar.startOfDay(for: date)
            let monthStart = calendar.date(from: calendar.dateComponents([.year, .month], from: date))!
            let day = BudgetPeriod.day.bounds(at: time)
            let month = BudgetPeriod.month.bounds(at: time)
            #expect(day.startDay == formatter.string(from: dayStart) && day.end == calendar.date(byAdding: .day, value: 1, to: dayStart)!.timeIntervalSince1970,
                    "day of \(time)")
            #expect(month.startDay == formatter.string(from: monthStart)
                        && month.end == calendar.date(byAdding: .month, value: 1, to: monthStart)!.timeIntervalSince1970, "month of \(time)")
        }
    }
}
