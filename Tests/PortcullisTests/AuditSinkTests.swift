import Foundation
import Hummingbird
import HummingbirdTesting
import PortcullisAudit
import PortcullisCore
import Synchronization
import Testing

/// A SIEM of the test's own on a real socket: a webhook, Splunk's HEC and Elasticsearch's bulk
/// API, which can be down (503) and which refuses any record of a request id starting "poison".
final class SIEMReceiver: Sendable {
    private struct State {
        var up = false
        var webhook: [JSONObject] = []
        var splunk: [JSONObject] = []
        var elastic: [String: JSONObject] = [:]
        var splunkToken: String?
    }

    private let state = Mutex(State())

    func setUp(_ up: Bool) { state.withLock { $0.up = up } }
    var webhookIDs: [String] { state.withLock { $0.webhook.compactMap { $0["id"]?.stringValue } } }
    var webhookRecords: [JSONObject] { state.withLock { $0.webhook } }
    var splunkIDs: [String] { state.withLock { $0.splunk.compactMap { $0["event"]?.objectValue?["id"]?.stringValue } } }
    var elasticDocuments: [String: JSONObject] { state.withLock { $0.elastic } }
    var splunkToken: String? { state.withLock { $0.splunkToken } }

    static func poisoned(_ record: JSONObject?) -> Bool {
        (record?["request_id"]?.stringValue ?? record?["portcullis"]?.objectValue?["audit"]?.objectValue?["request_id"]?.stringValue ?? "").hasPrefix("poison")
    }

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.post("hook") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 << 20)
            guard self.state.withLock({ $0.up }) else { return Response(status: .serviceUnavailable) }
            let records = (try? JSONParser.parse(body.readableBytesView))?.arrayValue?.compactMap(\.objectValue) ?? []
            if records.contains(where: Self.poisoned) { return Response(status: .badRequest) }
            self.state.withLock { $0.webhook += records }
            return Response(status: .ok)
        }
        router.post("services/collector/event") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 << 20)
            guard self.state.withLock({ $0.up }) else { return Response(status: .serviceUnavailable) }
            let events = String(buffer: body).split(separator: "\n").compactMap { (try? JSONParser.parse(String($0)))?.objectValue }
            if events.contains(where: { Self.poisoned($0["event"]?.objectValue) }) { return Response(status: .badRequest) }
            self.state.withLock {
                $0.splunk += events
                $0.splunkToken = request.headers[.authorization]
            }
            return Response(status: .ok)
        }
        router.post("_bulk") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 64 << 20)
            guard self.state.withLock({ $0.up }) else { return Response(status: .serviceUnavailable) }
            let lines = String(buffer: body).split(separator: "\n").compactMap { (try? JSONParser.parse(String($0)))?.objectValue }
            var items: [JSONValue] = []
            var errors = false
            for pair in stride(from: 0, to: lines.count - 1, by: 2) {
                let id = lines[pair]["create"]?.objectValue?["_id"]?.stringValue ?? ""
                let document = lines[pair + 1]
                let status: Int64
                if Self.poisoned(document) {
                    status = 400
                } else {
                    status = self.state.withLock { state in
                        if state.elastic[id] != nil { return 409 }
                        state.elastic[id] = document
                        return 201
                    }
                }
                if status == 400 { errors = true }
                items.append(["create": ["_id": .string(id), "status": .integer(status)]])
            }
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: JSONWriter.buffer(["errors": .bool(errors), "items": .array(items)])))
        }
        return router
    }
}

@Suite("Audit sinks: continuous export, at least once, through an outage", .serialized)
struct AuditSinkTests {
    @Test("a sink with a pseudonym key gets keyed pseudonyms for key, user and team ids and addresses, the same one each time; an operator reading the log sees them as they are")
    func pseudonymisedSink() async throws {
        let receiver = SIEMReceiver()
        receiver.setUp(true)
        let app = Application(router: receiver.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { siem in
            let yaml = """
                auth: { master_key: sink-master }
                audit:
                  sinks:
                    - { name: hook, type: webhook, url: "http://127.0.0.1:\(siem.port!)/hook", pseudonym_key: "a-sink-secret-0123456789" }
                models:
                  - name: demo
                    deployments: [ { provider: demo } ]
                """
            try await withGateway(yaml: yaml) { gateway in
                _ = try await gateway.call(.POST, "/admin/teams", key: "sink-master", body: #"{"team_id":"blue-team"}"#)
                let zoe = try await gateway.createKey(#""role":"user","user_id":"zoe-the-user","team_id":"blue-team""#, as: "sink-master")
                #expect(try await gateway.chat(key: zoe.key).status == 200)
                #expect(try await eventually(seconds: 10) {
                    receiver.webhookRecords.filter { $0["action"]?.stringValue?.hasPrefix("request.") == true && $0["actor_key_id"] != .null }.count >= 2
                })
                let sent = receiver.webhookRecords.filter { $0["action"]?.stringValue?.hasPrefix("request.") == true && $0["actor_key_id"] != .null }
                let text = JSONWriter.string(.array(sent.map(JSONValue.object)))
                #expect(!text.contains("zoe-the-user") && !text.contains(zoe.id) && !text.contains("blue-team") && !text.contains("127.0.0.1"), "\(text)")
                let pseudonyms = Set(sent.compactMap { $0["actor_key_id"]?.stringValue })
                #expect(pseudonyms.count == 1 && pseudonyms.first?.hasPrefix("ps_") == true, "one key, one pseudonym: \(pseudonyms)")
                #expect(Set(sent.compactMap { $0["details"]?.objectValue?["actor"]?.objectValue?["user_id"]?.stringValue }).count == 1)
                let listed = try await gateway.call(.GET, "/admin/audit?actor=\(zoe.id)", key: "sink-master")
                #expect(listed.body.contains("zoe-the-user"), "the log itself keeps the identifiers for its operators")
            }
        }
    }

    @Test("a SIEM outage slows no request; when it answers again the backlog arrives at the webhook, Splunk HEC and Elasticsearch; a refused record holds back no other")
    func outageAndRecovery() async throws {
        let receiver = SIEMReceiver()
        let app = Application(router: receiver.router(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { siem in
            let base = "http://127.0.0.1:\(siem.port!)"
            let yaml = """
                auth: { master_key: sink-master }
                audit:
                  sinks:
                    - { name: hook, type: webhook, url: "\(base)/hook", batch_size: 4 }
                    - { name: splunk, type: splunk_hec, url: "\(base)", token: hec-token }
                    - { name: elastic, type: elasticsearch, url: "\(base)", index: audit }
                models:
                  - name: demo
                    deployments: [ { provider: demo } ]
                """
            try await withGateway(yaml: yaml) { gateway in
                // The SIEM is down: requests are served as usual.
                let started = ContinuousClock.now
                for _ in 0..<5 { #expect(try await gateway.chat(key: "sink-master").status == 200) }
                let poisoned = try await gateway.call(.POST, "/v1/chat/completions", key: "sink-master",
                                                      body: #"{"model":"demo","messages":[{"role":"user","content":"hi"}]}"#,
                                                      headers: ["x-request-id": "poison-1"])
                #expect(poisoned.status == 200)
                for _ in 0..<3 { #expect(try await gateway.chat(key: "sink-master").status == 200) }
                #expect(ContinuousClock.now - started < .seconds(5), "an unreachable SIEM holds no request")
                try await Task.sleep(nanoseconds: 300_000_000)
                #expect(receiver.webhookIDs.isEmpty && receiver.elasticDocuments.isEmpty)

                // It answers again: everything but the refused records arrives, in order, once at least.
                receiver.setUp(true)
                let listed = try await gateway.call(.GET, "/admin/audit?limit=500", key: "sink-master")
                let records = (listed.json?.objectValue?["data"]?.arrayValue ?? []).compactMap(\.objectValue)
                let expected = Set(records.filter { !SIEMReceiver.poisoned($0) }.compactMap { $0["id"]?.stringValue })
                let refused = Set(records.filter(SIEMReceiver.poisoned).compactMap { $0["id"]?.stringValue })
                #expect(expected.count >= 16 && refused.count == 2, "eight chats of two records each, and the poisoned request's two")
                #expect(try await eventually(seconds: 20) {
                    expected.isSubset(of: Set(receiver.webhookIDs)) && expected.isSubset(of: Set(receiver.splunkIDs))
                        && expected.isSubset(of: Set(receiver.elasticDocuments.keys))
                }, "webhook \(receiver.webhookIDs.count), splunk \(receiver.splunkIDs.count), elastic \(receiver.elasticDocuments.count) of \(expected.count)")
                for delivered in [Set(receiver.webhookIDs), Set(receiver.splunkIDs), Set(receiver.elasticDocuments.keys)] {
                    #expect(delivered.isDisjoint(with: refused), "the refused records were passed over")
                }
                #expect(receiver.splunkToken == "Splunk hec-token")
                let metrics = try await gateway.request(.GET, "/metrics").body
                #expect(metrics.contains(#"portcullis_audit_sink_records_total{sink="hook",result="refused"} 2"#), "the refused records are counted")
                #expect(metrics.contains("portcullis_audit_backlog_records 0"))
                let document = receiver.elasticDocuments[expected.first ?? ""]
                #expect(document?["@timestamp"]?.stringValue != nil && document?["event"]?.objectValue?["dataset"]?.stringValue == "portcullis.audit",
                        "Elasticsearch gets ECS")
                let webhookOrder = receiver.webhookIDs.filter(expected.contains)
                let chainOrder = records.sorted { ($0["seq"]?.integerValue ?? 0) < ($1["seq"]?.integerValue ?? 0) }.compactMap { $0["id"]?.stringValue }
                #expect(webhookOrder == chainOrder.filter(webhookOrder.contains), "records arrive in the chain's order")
            }
        }
    }
}

@Suite("Audit sinks: syslog RFC 5424 over TCP and TLS to a real rsyslog")
struct AuditSyslogTests {
    @Test("records reach rsyslog over TCP and TLS as RFC 5424 messages, also those written while it was down")
    func syslog() async throws {
        let (directory, certificate, key) = try TLSTests.makeCertificate()
        defer { try? FileManager.default.removeItem(at: directory) }
        let rsyslog = try ScratchRsyslog(certificate: certificate, key: key)
        defer { rsyslog.stop() }
        let yaml = """
            auth: { master_key: syslog-master }
            audit:
              sinks:
                - { name: tcp, type: syslog, url: "tcp://127.0.0.1:\(rsyslog.tcpPort)", format: jsonl }
                - { name: tls, type: syslog, url: "tls://127.0.0.1:\(rsyslog.tlsPort)", ca_file: "\(certificate)", format: cef }
            models:
              - name: demo
                deployments: [ { provider: demo } ]
            """
        try await withGateway(yaml: yaml) { gateway in
            // Written while the syslog server is down…
            let early = try await gateway.chat(key: "syslog-master")
            #expect(early.status == 200)
            try await rsyslog.start()
            // …and after it came up.
            let late = try await gateway.chat(key: "syslog-master")
            #expect(late.status == 200)
            let ids = [early, late].compactMap { $0.headers["x-request-id"] }
            // The sinks retry with a pause that doubles from 1 s: allow for a few rounds on a loaded machine.
            #expect(try await eventually(seconds: 40) {
                let lines = rsyslog.lines
                return ids.allSatisfy { id in lines.contains { $0.hasPrefix("tcp ") && $0.contains(id) } && lines.contains { $0.hasPrefix("tls ") && $0.contains(id) } }
            }, "received: \(rsyslog.lines.count) lines")
            let lines = rsyslog.lines
            let plain = try #require(lines.first { $0.hasPrefix("tcp portcullis request.forward ") && $0.contains(ids[0]) })
            #expect(plain.contains("[portcullis@32473 id=\"") && plain.contains("category=\"request\""), "\(plain)")
            let message = try #require(plain.range(of: "] {").map { String(plain[plain.index(before: $0.upperBound)...]) })
            #expect((try? JSONParser.parse(message))?.objectValue?["request_id"]?.stringValue == ids[0], "the message is the record as JSON")
            #expect(lines.contains { $0.hasPrefix("tls portcullis request.complete ") && $0.contains("CEF:0|Portcullis|") }, "TLS carries CEF here")
        }
    }
}
