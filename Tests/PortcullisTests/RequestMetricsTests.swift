import Foundation
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
@testable import PortcullisStorage
import Testing

/// The value of a sample in a Prometheus exposition: the sum over every series of `name`
/// whose labels include `labels` (nil: no such series).
func sample(_ exposition: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
    var total: Double?
    for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        let series = line[..<space]
        let seriesName = series.firstIndex(of: "{").map { series[..<$0] } ?? series
        guard seriesName == name else { continue }
        var found: [String: String] = [:]
        if let open = series.firstIndex(of: "{") {
            for pair in series[series.index(after: open)..<series.index(before: series.endIndex)].split(separator: "\",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                found[String(parts[0])] = parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        guard labels.allSatisfy({ found[$0.key] == $0.value }) else { continue }
        total = (total ?? 0) + value
    }
    return total
}

@Suite("Request metrics on /metrics")
struct RequestMetricsTests {
    static let master = ["authorization": "Bearer metrics-master"]

    @Test("requests by outcome, durations, upstream attempts, retries, a fallback, a stream's first token, tokens, refusals and authentication; promtool accepts the page")
    func requestMetrics() async throws {
        var failing = MockBehaviour()
        failing.errorRate = 1
        failing.errorStatus = 503
        try await withMockUpstream(failing) { _, failingPort in
            try await withMockUpstream { _, healthyPort in
                let yaml = """
                auth: { master_key: metrics-master }
                routing:
                  retries: 1
                  backoff: { initial_ms: 5, max_ms: 10 }
                  health_check: { interval_seconds: 0 }
                  circuit_breaker: { failure_threshold: 50 }
                limits: { models: { capped: { rpm: 2 } } }
                models:
                  - name: gpt
                    deployments: [{ provider: openai_compatible, model: up, api_base: "http://127.0.0.1:\(failingPort)/v1" }]
                    fallbacks: [backup]
                  - name: backup
                    deployments: [{ provider: openai_compatible, model: up, api_base: "http://127.0.0.1:\(healthyPort)/v1" }]
                  - name: capped
                    deployments: [{ provider: demo }]
                """
                try await withGateway(yaml: yaml) { gateway in
                    let chat = #"{"model":"gpt","messages":[{"role":"user","content":"ping"}]}"#
                    #expect(try await gateway.post("/v1/chat/completions", chat, headers: Self.master).status == 200)
                    let stream = #"{"model":"backup","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#
                    let streamed = try await gateway.post("/v1/chat/completions", stream, headers: Self.master)
                    #expect(streamed.status == 200 && streamed.body.contains("[DONE]"))
                    let unknown = #"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#
                    #expect(try await gateway.post("/v1/chat/completions", unknown, headers: Self.master).status == 404)
                    #expect(try await gateway.post("/v1/chat/completions", chat, headers: ["authorization": "Bearer pck_bogus_secret"]).status == 401)
                    let capped = #"{"model":"capped","messages":[{"role":"user","content":"x"}]}"#
                    var statuses: [Int] = []
                    for _ in 0..<3 { statuses.append(try await gateway.post("/v1/chat/completions", capped, headers: Self.master).status) }
                    #expect(statuses == [200, 200, 429])
                    #expect(try await gateway.get("/health/ready").status == 200)

                    let text = try await gateway.get("/metrics").body
                    let route = "/v1/chat/completions"
                    #expect(sample(text, "portcullis_requests_total", ["route": route, "model": "gpt", "status_class": "2xx", "code": "none", "role": "admin"]) == 1)
                    #expect(sample(text, "portcullis_requests_total", ["route": route, "model": "other", "status_class": "4xx", "code": "model_not_found"]) == 1)
                    #expect(sample(text, "portcullis_requests_total", ["route": route, "status_class": "4xx", "code": "invalid_api_key", "role": "anonymous"]) == 1)
                    #expect(sample(text, "portcullis_requests_total", ["model": "capped", "code": "rate_limit_exceeded"]) == 1)
                    #expect(sample(text, "portcullis_requests_total", ["route": "/health/ready"]) == nil, "probes are not counted")
                    #expect(sample(text, "portcullis_limit_refusals_total", ["code": "rate_limit_exceeded", "scope": "model", "role": "admin"]) == 1)
                    #expect(sample(text, "portcullis_authentication_attempts_total", ["method": "api_key", "outcome": "invalid_api_key"]) == 1)
                    #expect(sample(text, "portcullis_authentication_attempts_total", ["method": "master_key", "outcome": "success"]) == 6)
                    // gpt: two failed attempts (the first and its retry), then its fallback served.
                    #expect(sample(text, "portcullis_upstream_attempts_total", ["outcome": "status_5xx"]) == 2)
                    #expect(sample(text, "portcullis_upstream_attempts_total", ["outcome": "success"]) == 4)
                    #expect(sample(text, "portcullis_retries_total", ["model": "gpt"]) == 2)
                    #expect(sample(text, "portcullis_fallbacks_total", ["model": "gpt", "fallback": "backup"]) == 1)
                    #expect(sample(text, "portcullis_request_duration_seconds_count", ["route": route, "model": "gpt"]) == 1)
                    #expect(sample(text, "portcullis_request_duration_seconds_bucket", ["route": route, "model": "gpt", "le": "120.0"]) == 1)
                    #expect(sample(text, "portcullis_time_to_first_token_seconds_count", ["model": "backup"]) == 1)
                    #expect(sample(text, "portcullis_gateway_overhead_seconds_count") == 4, "every request that reached an upstream")
                    #expect(sample(text, "portcullis_streams_in_flight") == 0, "the stream ended")
                    #expect(sample(text, "portcullis_requests_in_flight", ["route": route]) == 0)
                    #expect((sample(text, "portcullis_tokens_total", ["model": "gpt", "type": "input"]) ?? 0) > 0)
                    #expect((sample(text, "portcullis_tokens_total", ["model": "backup", "type": "output"]) ?? 0) > 0, "the stream's tokens, settled at its end")
                    #expect((sample(text, "process_resident_memory_bytes") ?? 0) > 1_000_000)
                    #expect((sample(text, "process_open_fds") ?? 0) > 3 && (sample(text, "process_cpu_seconds_total") ?? 0) > 0)
                    let started = sample(text, "process_start_time_seconds") ?? 0
                    #expect(abs(started - Date().timeIntervalSince1970) < 3600, "the test process started within the hour: \(started)")
                    #expect(!text.contains("metrics-master") && !text.contains("pck_bogus"), "no credential in a label")
                    let lint = try runTool("promtool", ["check", "metrics"], input: text)
                    #expect(lint.status == 0, "promtool check metrics: \(lint.output)")
                }
            }
        }
    }
}

@Suite("Dependency measurements on /metrics")
struct DependencyMetricsTests {
    @Test("INFO memory is read for used_memory and maxmemory")
    func redisInfo() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:268435456\r\nmaxmemory_policy:noeviction\r\n"
        let memory = HealthProbe.memory(fromInfo: info)
        #expect(memory.used == 1_048_576 && memory.maximum == 268_435_456)
        #expect(HealthProbe.memory(fromInfo: "").used == nil)
    }

    @Test("with PostgreSQL and Redis: database and Redis latency, Redis memory, standbys and replication lag are measured by the probe")
    func probeMeasurements() async throws {
        let yaml = """
        storage: { probe_interval_seconds: 0.2 }
        models: [{ name: demo, deployments: [{ provider: demo }] }]
        """
        try await withGateway(engine: .postgres, yaml: yaml) { gateway in
            var text = ""
            for _ in 0..<50 where sample(text, "portcullis_redis_memory_used_bytes") == nil || sample(text, "portcullis_database_standbys") == nil {
                try await Task.sleep(for: .milliseconds(100))
                text = try await gateway.get("/metrics").body
            }
            let databaseLatency = try #require(sample(text, "portcullis_database_latency_seconds"))
            #expect(databaseLatency > 0 && databaseLatency < 5)
            let redisLatency = try #require(sample(text, "portcullis_redis_latency_seconds"))
            #expect(redisLatency > 0 && redisLatency < 5)
            #expect((sample(text, "portcullis_redis_memory_used_bytes") ?? 0) > 100_000, "a running Redis uses some memory")
            #expect(sample(text, "portcullis_redis_memory_max_bytes") == 0, "the test Redis has no maxmemory")
            // The test server has no standby: none streaming, nothing behind.
            #expect(sample(text, "portcullis_database_standbys") == 0)
            #expect(sample(text, "portcullis_database_replication_lag_bytes") == 0)
            let lint = try runTool("promtool", ["check", "metrics"], input: text)
            #expect(lint.status == 0, "promtool check metrics: \(lint.output)")
        }
    }
}
