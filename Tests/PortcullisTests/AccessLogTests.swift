import Foundation
import Logging
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import Synchronization
import Testing

/// Lines an `ECSLogHandler` wrote, kept for a test.
final class CapturedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ bytes: [UInt8]) { lines.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) } }

    /// The access-log entries (message "request") as JSON objects.
    var accessEntries: [JSONObject] {
        all.compactMap { try? JSONParser.parse($0).objectValue }.filter { $0["message"]?.stringValue == "request" }
    }
}

@Suite("Access log and ECS JSON logging")
struct AccessLogTests {
    @Test("ECS fields: timestamp, level, message, trace and request ids, HTTP fields; other metadata under portcullis.*")
    func ecsFields() throws {
        let captured = CapturedLines()
        var logger = Logger(label: "portcullis") { ECSLogHandler(label: $0, write: captured.append) }
        logger[metadataKey: "request_id"] = "req-1"
        logger.info("request", metadata: ["trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "method": "POST", "path": "/v1/chat/completions",
                                          "status": "200", "duration_ms": "12.50", "model": "gpt"])
        logger.debug("below the threshold")
        let lines = captured.all
        #expect(lines.count == 1 && lines[0].hasSuffix("\n") && !lines[0].dropLast().contains("\n"))
        let entry = try #require(try JSONParser.parse(lines[0]).objectValue)
        #expect(entry.keys.first == "@timestamp")
        let stamp = entry["@timestamp"]?.stringValue ?? ""
        #expect(stamp.hasSuffix("Z") && stamp.count == 24, "\(stamp)")
        #expect(entry["log.level"]?.stringValue == "info" && entry["message"]?.stringValue == "request")
        #expect(entry["trace.id"]?.stringValue == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(entry["http.request.id"]?.stringValue == "req-1")
        #expect(entry["http.request.method"]?.stringValue == "POST" && entry["url.path"]?.stringValue == "/v1/chat/completions")
        #expect(entry["http.response.status_code"]?.integerValue == 200)
        #expect(entry["event.duration"]?.integerValue == 12_500_000)
        #expect(entry["event.dataset"]?.stringValue == "portcullis.access")
        #expect(entry["portcullis.model"]?.stringValue == "gpt")
    }

    @Test("log_format is text by default, json on request, and anything else is refused with its key")
    func logFormatSetting() throws {
        let base = "models: [{ name: demo, deployments: [{ provider: demo }] }]\n"
        #expect(try ConfigurationLoader.parse(yaml: base, environment: [:], source: "test").logFormat == .text)
        #expect(try ConfigurationLoader.parse(yaml: base + "log_format: json", environment: [:], source: "test").logFormat == .json)
        #expect {
            _ = try ConfigurationLoader.parse(yaml: base + "log_format: xml", environment: [:], source: "test")
        } throws: { error in
            "\(error)".contains("log_format: must be text or json; got 'xml'")
        }
    }

    @Test("a stream's access entry is written when it ends, with model, deployment, tokens, cost and time to first token; never the prompt")
    func accessEntryAtStreamEnd() async throws {
        let captured = CapturedLines()
        let logger = Logger(label: "portcullis") { ECSLogHandler(label: $0, level: .info, write: captured.append) }
        var behaviour = MockBehaviour()
        behaviour.tokensPerSecond = 40   // a stream that takes a while: its entry must wait for the end
        try await withMockUpstream(behaviour) { _, port in
            let configuration = try ConfigurationLoader.parse(yaml: """
            server: { port: 0, host: 127.0.0.1 }
            routing: { health_check: { interval_seconds: 0 } }
            models:
              - name: gpt
                deployments: [{ provider: openai_compatible, model: up, api_base: "http://127.0.0.1:\(port)/v1", price: { input_per_million: 1000, output_per_million: 2000 } }]
            """, environment: [:], source: "test")
            try await withGateway(configuration: configuration, logger: logger) { gateway in
                let secret = "the secret prompt words alpha beta gamma"
                let stream = #"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"\#(secret)"}]}"#
                let result = try await gateway.post("/v1/chat/completions", stream, headers: ["traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
                #expect(result.status == 200 && result.body.contains("[DONE]"))
                #expect(try await gateway.post("/v1/chat/completions", #"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#).status == 404)
                // The entry follows the stream's last byte; give the writer a moment.
                try await Task.sleep(for: .milliseconds(200))
                let entries = captured.accessEntries
                let streamed = try #require(entries.first { $0["url.path"]?.stringValue == "/v1/chat/completions" && $0["http.response.status_code"]?.integerValue == 200 })
                #expect(streamed["portcullis.model"]?.stringValue == "gpt")
                #expect(streamed["portcullis.deployment"]?.stringValue?.hasPrefix("gpt/") == true)
                // Counts and amounts are JSON numbers, not strings.
                #expect(streamed["portcullis.prompt_tokens"]?.integerValue ?? 0 > 0, "\(String(describing: streamed["portcullis.prompt_tokens"]))")
                #expect(streamed["portcullis.completion_tokens"]?.integerValue ?? 0 > 0)
                #expect(streamed["portcullis.cost_usd"]?.doubleValue ?? 0 > 0)
                let ttft = streamed["portcullis.ttft_ms"]?.doubleValue ?? -1
                let total = Double(streamed["event.duration"]?.integerValue ?? 0) / 1_000_000
                #expect(ttft >= 0 && total > ttft + 50, "the entry timed the whole stream (\(total) ms), after its first token (\(ttft) ms)")
                #expect(streamed["trace.id"]?.stringValue == "4bf92f3577b34da6a3ce929d0e0e4736")
                let refused = try #require(entries.first { $0["http.response.status_code"]?.integerValue == 404 })
                #expect(refused["portcullis.code"]?.stringValue == "model_not_found")
                #expect(!captured.all.joined().contains("alpha beta gamma"), "no prompt text in the log")
            }
        }
    }
}
