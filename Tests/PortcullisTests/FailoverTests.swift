import Foundation
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisRouting
import Testing

/// Retries, fallbacks, circuit breakers and timeouts against misbehaving mock upstreams.
@Suite("Failover", .serialized)
struct FailoverTests {
    static let chat = #"{"model":"gpt","messages":[{"role":"user","content":"ping"}]}"#
    static let streamChat = #"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"one two three four five"}]}"#
    static let fastRouting = """
    routing:
      retries: 2
      backoff: { initial_ms: 10, max_ms: 50 }
      health_check: { interval_seconds: 0 }
      circuit_breaker: { failure_threshold: 50 }
    """

    @Test("retries 5xx with backoff until the upstream recovers; every attempt carries the same request id")
    func retriesUntilSuccess() async throws {
        var behaviour = MockBehaviour()
        behaviour.failNext = 2
        behaviour.errorStatus = 503
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: Self.fastRouting + "\nmodels:\n" + openAIModel("gpt", port: port)) { gateway in
                let result = try await gateway.post("/v1/chat/completions", Self.chat, headers: ["x-request-id": "retry-me"])
                #expect(result.status == 200)
                #expect(result.headers["x-portcullis-attempts"] == "3")
                let ids = try await mockRequests(port: port).compactMap { $0["request_id"]?.stringValue }
                #expect(ids == ["retry-me", "retry-me", "retry-me"])
            }
        }
    }

    @Test("honours Retry-After on 429 before retrying the same deployment")
    func retryAfter() async throws {
        var behaviour = MockBehaviour()
        behaviour.failNext = 1
        behaviour.errorStatus = 429
        behaviour.retryAfterSeconds = 1
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: Self.fastRouting + "\nmodels:\n" + openAIModel("gpt", port: port)) { gateway in
                let started = ContinuousClock.now
                let result = try await gateway.post("/v1/chat/completions", Self.chat)
                let waited = ContinuousClock.now - started
                #expect(result.status == 200)
                #expect(waited >= .milliseconds(950), "waited \(waited)")
            }
        }
    }

    @Test("after retries are exhausted: 502 in the client's envelope naming the deployment, no secrets")
    func exhausted() async throws {
        var behaviour = MockBehaviour()
        behaviour.errorRate = 1
        behaviour.errorStatus = 500
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: Self.fastRouting + "\nmodels:\n" + openAIModel("gpt", port: port)) { gateway in
                let openAI = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(openAI.status == 502)
                #expect(openAI.errorCode == "upstream_error")
                #expect(openAI.json?.objectValue?["error"]?.objectValue?["type"] == "api_error")
                #expect(openAI.body.contains("gpt/openai_compatible[0]"))
                #expect(openAI.body.contains("after 3 attempts"))
                #expect(!openAI.body.contains("sk-test-key"))
                let anthropic = try await gateway.post("/v1/messages", #"{"model":"gpt","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#)
                #expect(anthropic.status == 502)
                #expect(anthropic.json?.objectValue?["type"] == "error")
                #expect(anthropic.json?.objectValue?["error"]?.objectValue?["type"] == "api_error")
                #expect(try await mockRequests(port: port).count == 6)
            }
        }
    }

    @Test("falls back across model groups when the primary provider is down (OpenAI → Anthropic)")
    func fallbackChain() async throws {
        var down = MockBehaviour()
        down.errorRate = 1
        down.errorStatus = 503
        try await withMockUpstream(down) { _, primaryPort in
            try await withMockUpstream { _, backupPort in
                let yaml = Self.fastRouting + """

                models:
                  - name: gpt
                    deployments:
                      - { provider: openai_compatible, model: gpt-up, api_base: "http://127.0.0.1:\(primaryPort)/v1" }
                    fallbacks: [claude]
                  - name: claude
                    deployments:
                      - { provider: anthropic, model: claude-up, api_base: "http://127.0.0.1:\(backupPort)" }
                """
                try await withGateway(yaml: yaml) { gateway in
                    let result = try await gateway.post("/v1/chat/completions", Self.chat)
                    #expect(result.status == 200)
                    #expect(result.headers["x-portcullis-model-group"] == "claude")
                    #expect(result.headers["x-portcullis-attempts"] == "4")
                    let streamed = try await gateway.post("/v1/chat/completions", Self.streamChat)
                    #expect(streamed.status == 200)
                    #expect(streamed.headers["x-portcullis-model-group"] == "claude")
                    #expect(streamed.sseData.last == "[DONE]")
                    #expect(try await mockRequests(port: backupPort).map { $0["path"] } == ["/v1/messages", "/v1/messages"])
                }
            }
        }
    }

    @Test("a circuit opens after repeated failures, keeps traffic away, then recovers through a half-open probe")
    func circuitOpensAndRecovers() async throws {
        var behaviour = MockBehaviour()
        behaviour.errorRate = 1
        try await withMockUpstream(behaviour) { mock, port in
            let yaml = """
            routing:
              retries: 0
              health_check: { interval_seconds: 0 }
              circuit_breaker: { failure_threshold: 3, window_seconds: 60, cooldown_seconds: 1 }
            models:
            """ + "\n" + openAIModel("gpt", port: port)
            try await withGateway(yaml: yaml) { gateway in
                for _ in 0..<3 {
                    #expect(try await gateway.post("/v1/chat/completions", Self.chat).status == 502)
                }
                let refused = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(refused.status == 503)
                #expect(refused.errorCode == "no_healthy_deployment")
                #expect(try await mockRequests(port: port).count == 3, "the open circuit sent nothing upstream")
                let ready = try await gateway.get("/health/ready")
                #expect(ready.status == 503)
                try await configureMock(port: port, #"{"error_rate":0}"#)
                try await Task.sleep(nanoseconds: 1_100_000_000)
                let probe = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(probe.status == 200)
                #expect(try await gateway.get("/health/ready").status == 200)
                #expect(try await gateway.post("/v1/chat/completions", Self.chat).status == 200)
            }
        }
    }

    @Test("a stream that fails before its first byte fails over; after its first byte it ends with a terminal error event")
    func streamFailures() async throws {
        var behaviour = MockBehaviour()
        behaviour.failNext = 1
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: Self.fastRouting + "\nmodels:\n" + openAIModel("gpt", port: port)) { gateway in
                let recovered = try await gateway.post("/v1/chat/completions", Self.streamChat)
                #expect(recovered.status == 200)
                #expect(recovered.headers["x-portcullis-attempts"] == "2")
                #expect(recovered.sseData.last == "[DONE]")

                try await configureMock(port: port, #"{"fail_after_events":3}"#)
                let broken = try await gateway.post("/v1/chat/completions", Self.streamChat)
                #expect(broken.status == 200)
                let data = broken.sseData
                // The mock sends three events and then breaks the connection; how many of the three
                // arrive before the break is up to the kernel, but each one that does is forwarded.
                #expect((2...4).contains(data.count), "forwarded events then one error event: \(data)")
                #expect(data.dropLast().allSatisfy { $0.contains("chat.completion.chunk") })
                #expect(!data.contains("[DONE]"))
                let error = try #require(try? JSONParser.parse(data.last!))
                #expect(error.objectValue?["error"]?.objectValue?["code"] == "upstream_connection_failed")
                #expect(try await mockRequests(port: port).count == 3, "no retry once the client has bytes")

                let anthropic = try await gateway.post("/v1/messages",
                    #"{"model":"gpt","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"one two three four five"}]}"#)
                #expect(anthropic.sseEventNames.first == "message_start")
                #expect(anthropic.sseEventNames.last == "error")
                #expect(!anthropic.sseEventNames.contains("message_stop"))
            }
        }
    }

    @Test("time limits: a slow answer hits the total limit, a stream without a first event hits the first-byte limit, both 504")
    func timeLimits() async throws {
        var behaviour = MockBehaviour()
        behaviour.latencyMilliseconds = 2000
        try await withMockUpstream(behaviour) { mock, port in
            let yaml = """
            routing: { retries: 1, backoff: { initial_ms: 1, max_ms: 1 }, health_check: { interval_seconds: 0 }, timeouts: { total_seconds: 0.3 } }
            models:
            """ + "\n" + openAIModel("gpt", port: port)
            try await withGateway(yaml: yaml) { gateway in
                let result = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(result.status == 504)
                #expect(result.errorCode == "upstream_timeout")
                #expect(try await mockRequests(port: port).count == 2, "a timeout is retried")
            }
        }
        behaviour = MockBehaviour()
        behaviour.timeToFirstTokenMilliseconds = 2000
        try await withMockUpstream(behaviour) { mock, port in
            let yaml = """
            routing: { retries: 0, health_check: { interval_seconds: 0 }, timeouts: { first_byte_seconds: 0.3 } }
            models:
            """ + "\n" + openAIModel("gpt", port: port)
            try await withGateway(yaml: yaml) { gateway in
                let result = try await gateway.post("/v1/chat/completions", Self.streamChat)
                #expect(result.status == 504)
                #expect(result.errorCode == "upstream_timeout")
                #expect(result.body.contains("no first byte within 0.3 s"))
            }
        }
    }

    @Test("idle-stream timeout ends a silent stream with a terminal error")
    func idleTimeout() async throws {
        var behaviour = MockBehaviour()
        behaviour.tokensPerSecond = 1
        try await withMockUpstream(behaviour) { mock, port in
            let yaml = """
            routing: { retries: 0, health_check: { interval_seconds: 0 }, timeouts: { stream_idle_seconds: 0.4 } }
            models:
            """ + "\n" + openAIModel("gpt", port: port)
            try await withGateway(yaml: yaml) { gateway in
                let result = try await gateway.post("/v1/chat/completions", Self.streamChat)
                #expect(result.status == 200)
                let error = try #require(result.sseData.last.flatMap { try? JSONParser.parse($0) })
                #expect(error.objectValue?["error"]?.objectValue?["code"] == "upstream_timeout")
            }
        }
    }

    @Test("connection reset and a dead port are retried, then reported as 502")
    func connectionFailures() async throws {
        var behaviour = MockBehaviour()
        behaviour.resetConnection = true
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: Self.fastRouting + "\nmodels:\n" + openAIModel("gpt", port: port) + "\n" + openAIModel("dead", port: 1)) { gateway in
                let reset = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(reset.status == 502)
                #expect(try await mockRequests(port: port).count == 3)
                let dead = try await gateway.post("/v1/chat/completions", #"{"model":"dead","messages":[{"role":"user","content":"x"}]}"#)
                #expect(dead.status == 502)
                #expect(dead.errorCode == "upstream_connection_failed")
            }
        }
    }

    @Test("health checks mark a dead deployment and readiness follows")
    func healthChecks() async throws {
        let yaml = """
        routing: { health_check: { interval_seconds: 0.2, timeout_seconds: 0.5 } }
        models:
        """ + "\n" + openAIModel("dead", port: 1)
        try await withGateway(yaml: yaml) { gateway in
            #expect(try await gateway.get("/health/live").status == 200)
            var ready = try await gateway.get("/health/ready")
            for _ in 0..<30 where ready.status == 200 {
                try await Task.sleep(nanoseconds: 100_000_000)
                ready = try await gateway.get("/health/ready")
            }
            #expect(ready.status == 503)
            #expect(ready.json?.objectValue?["healthy_deployments"] == 0)
            // Every deployment is marked down, so the request is tried anyway (panic) and fails for real.
            let refused = try await gateway.post("/v1/chat/completions", #"{"model":"dead","messages":[{"role":"user","content":"x"}]}"#)
            #expect(refused.status == 502 && refused.errorCode == "upstream_connection_failed", "\(refused.body)")
        }
    }

    @Test("a gateway started before its only upstream serves it at once (panic routing), and says so in a header and a metric")
    func panicRoutingAfterEarlyStart() async throws {
        let port = try freeLoopbackPort()
        let yaml = "routing: { retries: 0, health_check: { interval_seconds: 30, timeout_seconds: 0.5 } }\nmodels:\n" + openAIModel("gpt", port: port)
        try await withGateway(yaml: yaml) { gateway in
            var ready = try await gateway.get("/health/ready")
            for _ in 0..<50 where ready.status == 200 {
                try await Task.sleep(nanoseconds: 100_000_000)
                ready = try await gateway.get("/health/ready")
            }
            #expect(ready.status == 503, "the first health check found nothing listening")
            try await withMockUpstream(onPort: port) { _ in
                let served = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(served.status == 200, "\(served.body)")
                #expect(served.headers["x-portcullis-panic-routing"] == "true")
                let metrics = try await gateway.get("/metrics").body
                #expect(metrics.contains(#"portcullis_panic_routed_total{deployment="gpt/openai_compatible[0]"} 1"#), "\(metrics)")
            }
        }
    }

    @Test("an upstream restart does not fail requests: closed pooled connections are not reused")
    func upstreamRestart() async throws {
        let port = try freeLoopbackPort()
        try await withGateway(yaml: Self.fastRouting + "\nmodels:\n" + openAIModel("gpt", port: port)) { gateway in
            try await withMockUpstream(onPort: port) { _ in
                let first = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(first.status == 200, "\(first.body)")
            }
            try await withMockUpstream(onPort: port) { mock in
                let result = try await gateway.post("/v1/chat/completions", Self.chat)
                #expect(result.status == 200)
                #expect(result.headers["x-portcullis-attempts"] == "1")
                #expect(mock.requests.count == 1)
            }
        }
    }
}
