import AsyncHTTPClient
import Foundation
import PortcullisConfig
import PortcullisCore
import Synchronization
import Testing

@Suite("OpenTelemetry traces over OTLP/HTTP", .serialized)
struct TracingTests {
    /// Spans the receiver decoded so far.
    static func spans(_ port: Int) async throws -> [JSONObject] {
        try await GatewayClient(port: port).get("/spans").json?.arrayValue?.compactMap(\.objectValue) ?? []
    }

    static func attribute(_ span: JSONObject, _ name: String) -> JSONValue? {
        span["attributes"]?.objectValue?[name]
    }

    @Test("a span per request continues the caller's trace; each upstream attempt is a child span whose traceparent goes upstream; GenAI attributes; sampling follows the caller")
    func spansPerRequestAndAttempt() async throws {
        try await withOTLPReceiver { otlp in
            try await withMockUpstream { mock, port in
                let yaml = """
                    tracing: { endpoint: "http://127.0.0.1:\(otlp)", sample_ratio: 1, service_name: portcullis-test }
                    routing: { health_check: { interval_seconds: 0 }, backoff: { initial_ms: 10, max_ms: 20 } }
                    models:
                    \(openAIModel("gpt", port: port))
                    """
                // The batch processor's delay from the standard environment variable: the file's settings are overridable.
                let gateway = try await GatewayProcess(yaml: yaml, logLevel: "info", environment: ["OTEL_BSP_SCHEDULE_DELAY": "100"])
                defer { gateway.stop() }
                let client = gateway.client
                let caller = (trace: "4bf92f3577b34da6a3ce929d0e0e4736", span: "00f067aa0ba902b7")

                // The first attempt fails with a 503, the retry answers.
                try await configureMock(port: port, #"{"fail_next":1,"error_status":503}"#)
                let answered = try await client.post("/v1/chat/completions", #"{"model":"gpt","messages":[{"role":"user","content":"Hello"}]}"#,
                                                     headers: ["traceparent": "00-\(caller.trace)-\(caller.span)-01"])
                #expect(answered.status == 200, "\(answered.body)")
                let upstreamTraces = try await mockRequests(port: port).compactMap { $0["traceparent"]?.stringValue }

                // A stream, with no caller trace: a new trace, its span ending with the stream.
                let streamed = try await client.post("/v1/chat/completions",
                                                      #"{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Stream"}]}"#)
                #expect(streamed.status == 200 && streamed.sseData.last == "[DONE]")
                // A caller that did not sample: nothing is recorded, and the decision goes upstream.
                let unsampled = "0af7651916cd43dd8448eb211c80319c"
                #expect(try await client.post("/v1/chat/completions", #"{"model":"gpt","messages":[{"role":"user","content":"Quiet"}]}"#,
                                              headers: ["traceparent": "00-\(unsampled)-b7ad6b7169203331-00"]).status == 200)
                let quietUpstream = try await mockRequests(port: port).last?["traceparent"]?.stringValue
                // A refusal is traced with its stable code.
                let missing = try await client.post("/v1/chat/completions", #"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#)
                #expect(missing.status == 404)

                let arrived = try await eventually(seconds: 15) {
                    let spans = try await Self.spans(otlp)
                    return spans.filter { $0["kind"]?.integerValue == 2 }.count >= 3 && spans.filter { $0["kind"]?.integerValue == 3 }.count >= 3
                }
                let spans = try await Self.spans(otlp)
                #expect(arrived, "spans received: \(spans)")

                // The first request: a server span in the caller's trace, two attempt spans under it.
                let server = try #require(spans.first { $0["trace_id"]?.stringValue == caller.trace && $0["kind"]?.integerValue == 2 })
                #expect(server["parent_span_id"]?.stringValue == caller.span)
                #expect(server["name"]?.stringValue == "POST /v1/chat/completions")
                #expect(Self.attribute(server, "gen_ai.operation.name") == "chat")
                #expect(Self.attribute(server, "gen_ai.request.model") == "gpt")
                #expect(Self.attribute(server, "http.response.status_code")?.integerValue == 200)
                #expect(Self.attribute(server, "gen_ai.usage.input_tokens")?.integerValue ?? 0 > 0)
                #expect(Self.attribute(server, "gen_ai.usage.output_tokens")?.integerValue ?? 0 > 0)
                #expect(server["resource"]?.objectValue?["service.name"] == "portcullis-test")
                let serverID = try #require(server["span_id"]?.stringValue)
                let attempts = spans.filter { $0["trace_id"]?.stringValue == caller.trace && $0["kind"]?.integerValue == 3 }
                    .sorted { ($0["start"]?.integerValue ?? 0) < ($1["start"]?.integerValue ?? 0) }
                #expect(attempts.count == 2, "\(attempts)")
                #expect(attempts.allSatisfy { $0["parent_span_id"]?.stringValue == serverID })
                #expect(attempts.allSatisfy { $0["name"] == "chat upstream-gpt" && Self.attribute($0, "gen_ai.provider.name") == "openai_compatible" })
                #expect(attempts.first.map { Self.attribute($0, "error.type") == "status_5xx" && $0["status"]?.integerValue == 2 } == true)
                #expect(attempts.last.map { Self.attribute($0, "error.type") == nil && $0["status"]?.integerValue != 2 } == true)
                // Each attempt sent its own span upstream.
                let attemptIDs = attempts.compactMap { $0["span_id"]?.stringValue }
                #expect(upstreamTraces == attemptIDs.map { "00-\(caller.trace)-\($0)-01" }, "\(upstreamTraces) vs \(attemptIDs)")

                // The stream's span: a new trace, tokens counted, ended after its attempt.
                let stream = try #require(spans.first {
                    $0["kind"]?.integerValue == 2 && $0["trace_id"]?.stringValue != caller.trace && Self.attribute($0, "gen_ai.request.model") == "gpt"
                        && $0["parent_span_id"]?.stringValue == ""
                })
                #expect(Self.attribute(stream, "gen_ai.usage.output_tokens")?.integerValue ?? 0 > 0)
                let streamAttempt = try #require(spans.first { $0["trace_id"] == stream["trace_id"] && $0["kind"]?.integerValue == 3 })
                #expect((stream["end"]?.integerValue ?? 0) >= (streamAttempt["end"]?.integerValue ?? .max))
                // Its access log line carries the span's trace, the one the gateway started.
                let streamTrace = try #require(stream["trace_id"]?.stringValue)
                #expect(gateway.log.split(separator: "\n").contains { $0.contains("trace_id=\(streamTrace)") && $0.contains("status=200") },
                        "\(gateway.log.suffix(2000))")

                // Not sampled by the caller: no span, and the upstream is told so.
                #expect(!spans.contains { $0["trace_id"]?.stringValue == unsampled })
                #expect(quietUpstream?.hasPrefix("00-\(unsampled)-") == true && quietUpstream?.hasSuffix("-00") == true, "\(quietUpstream ?? "none")")

                // The refusal.
                let refused = try #require(spans.first { Self.attribute($0, "gen_ai.request.model") == "nope" })
                #expect(Self.attribute(refused, "error.type") == "model_not_found")
                #expect(Self.attribute(refused, "http.response.status_code")?.integerValue == 404)
                _ = mock
            }
        }
    }

    @Test("a Prometheus with exemplar storage reads the OpenMetrics scrape: latency buckets carry the trace ids of sampled requests")
    func exemplars() async throws {
        try await withOTLPReceiver { otlp in
            let yaml = """
                tracing: { endpoint: "http://127.0.0.1:\(otlp)" }
                models: [{ name: demo, deployments: [{ provider: demo }] }]
                """
            let gateway = try await GatewayProcess(yaml: yaml, environment: ["OTEL_BSP_SCHEDULE_DELAY": "100"])
            defer { gateway.stop() }
            let client = gateway.client
            // The scrape a Prometheus asks for: OpenMetrics, ending in # EOF.
            let scraped = try await client.request(.GET, "/metrics", headers: ["accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"])
            #expect(scraped.headers["content-type"]?.hasPrefix("application/openmetrics-text") == true)
            #expect(scraped.body.hasSuffix("# EOF\n") && !scraped.body.contains(" untyped\n"))
            #expect(try await client.get("/metrics").headers["content-type"]?.hasPrefix("text/plain") == true)

            let prometheus = try PrometheusServer.start(scraping: "127.0.0.1:\(client.port)", caFile: nil, features: ["exemplar-storage"])
            defer { prometheus.stop() }
            let sampled = "5bf92f3577b34da6a3ce929d0e0e4736"
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            defer { _ = http.shutdown() }
            let found = Mutex<[String]>([])
            let seen = try await eventually(seconds: 30) {
                _ = try await client.post("/v1/chat/completions", #"{"model":"demo","messages":[{"role":"user","content":"hi"}]}"#,
                                          headers: ["traceparent": "00-\(sampled)-00f067aa0ba902b7-01"])
                let series = try await prometheus.exemplars(#"portcullis_request_duration_seconds_bucket{model="demo"}"#, seconds: 60, client: http) ?? []
                let ids = series.flatMap { $0.objectValue?["exemplars"]?.arrayValue ?? [] }
                    .compactMap { $0.objectValue?["labels"]?.objectValue?["trace_id"]?.stringValue }
                found.withLock { $0 = ids }
                return ids.contains(sampled)
            }
            #expect(seen, "exemplars: \(found.withLock { $0 }); prometheus log: \(prometheus.log.suffix(1500))")
            // The rest of the scrape parsed as well: the counters are there.
            let counted = try await prometheus.query(#"portcullis_requests_total{model="demo"}"#, client: http) ?? []
            #expect(!counted.isEmpty)
        }
    }

    @Test("tracing settings: an endpoint turns it on, /v1/traces is appended to a base address, and a bad value names its key")
    func settings() throws {
        let base = "models: [{ name: demo, deployments: [{ provider: demo }] }]\n"
        #expect(try ConfigurationLoader.parse(yaml: base, environment: [:], source: "test").tracing.isEnabled == false)
        let on = try ConfigurationLoader.parse(yaml: base + "tracing: { endpoint: \"http://collector:4318\", sample_ratio: 0.25 }",
                                               environment: [:], source: "test").tracing
        #expect(on.tracesURL == "http://collector:4318/v1/traces")
        #expect(on.sampleRatio == 0.25)
        let exact = try ConfigurationLoader.parse(yaml: base + "tracing: { endpoint: \"https://otel.example/v1/traces\" }", environment: [:], source: "test")
        #expect(exact.tracing.tracesURL == "https://otel.example/v1/traces")
        #expect {
            _ = try ConfigurationLoader.parse(yaml: base + "tracing: { endpoint: collector:4318, sample_ratio: 2 }", environment: [:], source: "test")
        } throws: { error in
            let paths = (error as? ConfigurationError)?.issues.map(\.path) ?? []
            return paths.contains("tracing.endpoint") && paths.contains("tracing.sample_ratio")
        }
    }
}
