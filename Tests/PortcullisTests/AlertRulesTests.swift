import Foundation
import PortcullisConfig
import Testing

/// The repository's root, from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Runs `executable` with `arguments`, `input` on its standard input; its exit status and output.
func runTool(_ executable: String, _ arguments: [String], input: String = "") throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [executable] + arguments
    let stdin = Pipe(), stdout = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stdout
    try process.run()
    stdin.fileHandleForWriting.write(Data(input.utf8))
    try stdin.fileHandleForWriting.close()
    let output = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

@Suite("The Prometheus alert rules and /metrics agree")
struct AlertRulesTests {
    @Test("every metric the alert rules query is one a running gateway exposes, and /metrics passes promtool check metrics")
    func rulesQueryExposedMetrics() async throws {
        let rules = try String(contentsOf: repositoryRoot.appendingPathComponent("deploy/prometheus/portcullis-alerts.yml"), encoding: .utf8)
        // A histogram is queried by its series (`_bucket`); the family is what /metrics declares.
        let queried = Set(rules.matches(of: /portcullis_[a-z_]+/).map { match in
            String(match.output).replacing(/_(bucket|count|sum)$/, with: "")
        })
        #expect(queried.count >= 11, "\(queried)")
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let metrics = try await withScratchPostgresDatabase { database in
            var configuration = try TransportSecurityTests.tlsConfiguration(pki, yaml: """
            auth: { key_pepper: "alert-rules-pepper-0123456789abcdef-012" }
            storage: { database: "\(database)", redis: "\(try testRedisURL())/5", probe_interval_seconds: 0.2 }
            """)
            configuration.server.host = "127.0.0.1"
            return try await withGateway(configuration: configuration) { gateway in
                try await pki.withClients([nil]) { clients in
                    // Traffic first: request families appear once a request has been counted.
                    let chat = #"{"model":"demo","messages":[{"role":"user","content":"hello"}]}"#
                    let answer = try await fetch(clients[0], "https://127.0.0.1:\(gateway.port)/v1/chat/completions", method: .POST, body: chat)
                    #expect(answer.status == 200)
                    // And a probe: the database and Redis measurements follow its first round.
                    var text = ""
                    for _ in 0..<50 where !text.contains("# TYPE portcullis_database_replication_lag_bytes ") {
                        try await Task.sleep(for: .milliseconds(100))
                        text = try await fetch(clients[0], "https://127.0.0.1:\(gateway.port)/metrics").body
                    }
                    return text
                }
            }
        }
        for name in queried.sorted() {
            #expect(metrics.contains("# TYPE \(name) "), "the rules query \(name), which /metrics does not expose")
        }
        let lint = try runTool("promtool", ["check", "metrics"], input: metrics)
        #expect(lint.status == 0, "promtool check metrics: \(lint.output)")
    }
}
