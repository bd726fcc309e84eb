import Foundation
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisRouting
import Testing

/// End-to-end over real loopback sockets: client → gateway → mock upstream.
@Suite("Gateway proxying", .serialized)
struct GatewayProxyTests {
    static let chatBody = #"{"model":"gpt","messages":[{"role":"user","content":"Hello world"}],"seed":42,"frequency_penalty":0.5,"vendor_flag":{"x":1}}"#

    @Test("OpenAI chat: answer, request id and trace context reach the upstream, unknown fields pass through")
    func openAIChat() async throws {
        try await withMockUpstream { mock, port in
            // No health checks here: their probe would open a second upstream connection.
            try await withGateway(yaml: "routing: { health_check: { interval_seconds: 0 } }\nmodels:\n" + openAIModel("gpt", port: port)) { gateway in
                let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                let result = try await gateway.post("/v1/chat/completions", Self.chatBody,
                                                    headers: ["x-request-id": "req-abc.123", "traceparent": traceparent])
                #expect(result.status == 200)
                #expect(result.headers["x-request-id"] == "req-abc.123")
                #expect(result.headers["x-portcullis-deployment"] == "gpt/openai_compatible[0]")
                let message = result.json?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["message"]?.objectValue
                #expect(message?["content"] == "Mock reply to: Hello world")
                #expect(result.json?.objectValue?["usage"]?.objectValue?["total_tokens"] == 8)
                let received = try #require(try await mockRequests(port: port).last)
                #expect(received["request_id"] == "req-abc.123")
                let upstreamTrace = try #require(received["traceparent"]?.stringValue)
                #expect(upstreamTrace.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-"))
                #expect(!upstreamTrace.contains("00f067aa0ba902b7"), "the gateway opens its own span")
                #expect(received["authorization"] == "Bearer sk-test-key-123456")
                let body = try #require(received["body"]?.objectValue)
                #expect(body["model"] == "upstream-gpt")
                #expect(body["seed"] == 42)
                #expect(body["frequency_penalty"] == .double(0.5))
                #expect(body["vendor_flag"] == ["x": 1])
                for _ in 0..<3 { _ = try await gateway.post("/v1/chat/completions", Self.chatBody) }
                let ports = Set(try await mockRequests(port: port).compactMap { $0["client_port"]?.integerValue })
                #expect(ports.count == 1, "sequential calls reuse one upstream connection")
            }
        }
    }

    @Test("a request id is generated when absent or unsafe, and always returned")
    func requestIDs() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            let generated = try await gateway.get("/v1/models")
            #expect(generated.headers["x-request-id"]?.count == 36)
            let unsafe = try await gateway.get("/v1/models", headers: ["x-request-id": "bad id\twith spaces"])
            #expect(unsafe.headers["x-request-id"] != "bad id\twith spaces")
            #expect(unsafe.headers["x-request-id"]?.count == 36)
        }
    }

    @Test("OpenAI stream through an OpenAI upstream arrives byte for byte, usage chunk only when asked")
    func openAIStreamBytes() async throws {
        try await withMockUpstream { mock, port in
            try await withGateway(yaml: "models:\n" + openAIModel("gpt", port: port)) { gateway in
                let withUsage = try await gateway.post("/v1/chat/completions",
                    #"{"model":"gpt","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi you"}]}"#)
                #expect(withUsage.status == 200)
                #expect(withUsage.headers["content-type"]?.hasPrefix("text/event-stream") == true)
                let prefix = #"{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"upstream-gpt","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#
                let expected = [
                    prefix + #"{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                    prefix + #"{"content":"Mock"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                    prefix + #"{"content":" reply"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                    prefix + #"{"content":" to:"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                    prefix + #"{"content":" Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                    prefix + #"{"content":" you"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
                    prefix + #"{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
                    #"{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","created":1700000000,"model":"upstream-gpt","system_fingerprint":"fp_mock","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":5,"total_tokens":7}}"#,
                    "[DONE]",
                ]
                #expect(withUsage.body == expected.map { "data: \($0)\n\n" }.joined())

                let withoutUsage = try await gateway.post("/v1/chat/completions",
                    #"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"Hi you"}]}"#)
                #expect(withoutUsage.sseData.count == 8)
                #expect(!withoutUsage.body.contains("usage"))
                #expect(withoutUsage.sseData.last == "[DONE]")
                let upstreamBody = try #require(try await mockRequests(port: port).last?["body"]?.objectValue)
                #expect(upstreamBody["stream_options"] == ["include_usage": true], "the gateway always asks upstream for usage")
            }
        }
    }

    @Test("Anthropic Messages ingress served by an OpenAI upstream: exact event sequence and usage")
    func anthropicIngressStream() async throws {
        try await withMockUpstream { mock, port in
            try await withGateway(yaml: "models:\n" + openAIModel("gpt", port: port)) { gateway in
                let result = try await gateway.post("/v1/messages",
                    #"{"model":"gpt","max_tokens":100,"stream":true,"system":"Be terse","messages":[{"role":"user","content":"Hi you"}]}"#,
                    headers: ["anthropic-version": "2023-06-01"])
                #expect(result.status == 200)
                #expect(result.sseEventNames == ["message_start", "content_block_start", "content_block_delta", "content_block_delta",
                                                 "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
                                                 "message_delta", "message_stop"])
                let text = result.sseData.compactMap { try? JSONParser.parse($0) }
                    .compactMap { $0.objectValue?["delta"]?.objectValue?["text"]?.stringValue }.joined()
                #expect(text == "Mock reply to: Hi you")
                let delta = try #require(result.sseData.compactMap { try? JSONParser.parse($0) }.first { $0.objectValue?["type"] == "message_delta" })
                #expect(delta.objectValue?["delta"]?.objectValue?["stop_reason"] == "end_turn")
                #expect(delta.objectValue?["usage"] == ["output_tokens": 5, "input_tokens": 2])
                let upstreamBody = try #require(try await mockRequests(port: port).last?["body"]?.objectValue)
                #expect(upstreamBody["messages"]?.arrayValue?.first == ["role": "system", "content": "Be terse"])
                #expect(upstreamBody["max_tokens"] == 100)
            }
        }
    }

    @Test("Anthropic Messages stream arrives byte for byte")
    func anthropicIngressBytes() async throws {
        try await withMockUpstream { mock, port in
            try await withGateway(yaml: "models:\n" + openAIModel("gpt", port: port)) { gateway in
                let result = try await gateway.post("/v1/messages",
                    #"{"model":"gpt","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Hi you"}]}"#)
                func delta(_ text: String) -> String {
                    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\(text)\"}}\n\n"
                }
                let expected = [
                    #"event: message_start\#ndata: {"type":"message_start","message":{"id":"msg_mock-1","type":"message","role":"assistant","model":"gpt","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}\#n\#n"#,
                    #"event: content_block_start\#ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\#n\#n"#,
                    delta("Mock"), delta(" reply"), delta(" to:"), delta(" Hi"), delta(" you"),
                    #"event: content_block_stop\#ndata: {"type":"content_block_stop","index":0}\#n\#n"#,
                    #"event: message_delta\#ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5,"input_tokens":2}}\#n\#n"#,
                    #"event: message_stop\#ndata: {"type":"message_stop"}\#n\#n"#,
                ].joined()
                #expect(result.body == expected)
            }
        }
    }

    static func anthropicModel(port: Int) -> String {
        """
          - name: claude
            deployments:
              - { provider: anthropic, model: claude-up, api_base: "http://127.0.0.1:\(port)", api_key: anthropic-secret-key }
        """
    }

    @Test("OpenAI ingress with tools served by an Anthropic upstream: tool call arguments, first and last chunks and usage survive")
    func toolsThroughAnthropicStream() async throws {
        var behaviour = MockBehaviour()
        behaviour.toolName = "get_weather"
        behaviour.promptTokens = 31
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: "models:\n" + Self.anthropicModel(port: port)) { gateway in
                let request = #"{"model":"claude","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Weather in Paris?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#
                let result = try await gateway.post("/v1/chat/completions", request)
                #expect(result.status == 200)
                let chunks = result.sseData.dropLast().compactMap { try? OpenAIWire.decodeChatChunk(JSONParser.parse($0)) }
                #expect(result.sseData.last == "[DONE]")
                #expect(chunks.first?.choices.first?.delta.role == .assistant)
                #expect(chunks.first?.id == "msg_mock_1")
                let calls = chunks.flatMap { $0.choices.flatMap(\.delta.toolCalls) }
                #expect(calls.first?.id == "toolu_mock_1")
                #expect(calls.first?.name == "get_weather")
                #expect(calls.compactMap(\.arguments).joined() == #"{"city":"Paris","unit":"celsius"}"#)
                #expect(chunks.compactMap { $0.choices.first?.finishReason }.last == .toolCalls)
                #expect(chunks.last?.usage == Usage(promptTokens: 31, completionTokens: 12))
                let received = try #require(try await mockRequests(port: port).last)
                #expect(received["path"] == "/v1/messages")
                #expect(received["api_key"] == "anthropic-secret-key")
                #expect(received["anthropic_version"] == "2023-06-01")
                let tools = received["body"]?.objectValue?["tools"]?.arrayValue
                #expect(tools?.first?.objectValue?["input_schema"] == ["type": "object", "properties": ["city": ["type": "string"]]])
            }
        }
    }

    @Test("Anthropic ingress with tools served by an Anthropic upstream, non-streamed")
    func anthropicToAnthropic() async throws {
        var behaviour = MockBehaviour()
        behaviour.toolName = "lookup"
        try await withMockUpstream(behaviour) { mock, port in
            try await withGateway(yaml: "models:\n" + Self.anthropicModel(port: port)) { gateway in
                let result = try await gateway.post("/v1/messages",
                    #"{"model":"claude","max_tokens":64,"messages":[{"role":"user","content":"find x"}],"tools":[{"name":"lookup","input_schema":{"type":"object"}}]}"#)
                #expect(result.status == 200)
                let object = try #require(result.json?.objectValue)
                #expect(object["type"] == "message")
                #expect(object["stop_reason"] == "tool_use")
                #expect(object["content"] == [["type": "tool_use", "id": "toolu_mock_1", "name": "lookup", "input": ["city": "Paris", "unit": "celsius"]]])
                #expect(object["usage"]?.objectValue?["output_tokens"] == 12)
            }
        }
    }

    @Test("Azure OpenAI: deployment URL, api-version and api-key header")
    func azure() async throws {
        try await withMockUpstream { mock, port in
            let yaml = """
            models:
              - name: gpt-azure
                deployments:
                  - { provider: azure, model: prod-gpt4o, api_base: "http://127.0.0.1:\(port)", api_version: "2024-10-21", api_key: azure-key-1 }
            """
            try await withGateway(yaml: yaml) { gateway in
                let result = try await gateway.post("/v1/chat/completions", #"{"model":"gpt-azure","messages":[{"role":"user","content":"x"}]}"#)
                #expect(result.status == 200)
                let received = try #require(try await mockRequests(port: port).last)
                #expect(received["path"] == "/openai/deployments/prod-gpt4o/chat/completions")
                #expect(received["query"] == "api-version=2024-10-21")
                #expect(received["api_key"] == "azure-key-1")
                #expect(received["authorization"] == .null)
            }
        }
    }

    @Test("completions and embeddings pass through; demo serves completions too")
    func completionsAndEmbeddings() async throws {
        try await withMockUpstream { mock, port in
            try await withGateway(yaml: "models:\n" + openAIModel("gpt", port: port) + "\n  - name: demo\n    deployments: [{ provider: demo }]") { gateway in
                let completion = try await gateway.post("/v1/completions", #"{"model":"gpt","prompt":"Say hi","max_tokens":2}"#)
                #expect(completion.status == 200)
                #expect(completion.json?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["text"] == "Mock reply")
                #expect(completion.json?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["finish_reason"] == "length")
                let streamed = try await gateway.post("/v1/completions", #"{"model":"gpt","prompt":"Say hi","stream":true}"#)
                #expect(streamed.sseData.last == "[DONE]")
                #expect(streamed.sseData.count == 7, "five text pieces, the finish chunk, [DONE]; no usage chunk unless asked")
                let embedding = try await gateway.post("/v1/embeddings", #"{"model":"gpt","input":"abc","encoding_format":"float"}"#)
                let vector = embedding.json?.objectValue?["data"]?.arrayValue?.first?.objectValue?["embedding"]?.arrayValue?.compactMap(\.doubleValue)
                #expect(vector == [3, 0.294, 0.5], "the mock's vector of \"abc\": its length, its byte sum over 1000, 0.5")
                let demo = try await gateway.post("/v1/completions", #"{"model":"demo","prompt":"Say hi"}"#)
                #expect(demo.json?.objectValue?["object"] == "text_completion")
                let demoEmbedding = try await gateway.post("/v1/embeddings", #"{"model":"demo","input":["a","b"],"dimensions":8}"#)
                #expect(demoEmbedding.json?.objectValue?["data"]?.arrayValue?.count == 2)
                #expect(demoEmbedding.json?.objectValue?["data"]?.arrayValue?.first?.objectValue?["embedding"]?.arrayValue?.count == 8)
            }
        }
    }

    @Test("models list and lookup")
    func models() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            let list = try await gateway.get("/v1/models")
            #expect(list.json?.objectValue?["data"]?.arrayValue?.compactMap { $0.objectValue?["id"]?.stringValue } == ["demo"])
            let one = try await gateway.get("/v1/models/demo")
            #expect(one.json?.objectValue?["object"] == "model")
            let missing = try await gateway.get("/v1/models/nope")
            #expect(missing.status == 404)
            #expect(missing.errorCode == "model_not_found")
        }
    }
}

extension GatewayConfiguration {
    /// The embedded default: one demo model.
    init(demo: Bool) {
        self.init()
        server.host = "127.0.0.1"
        server.port = 0
        models = [.init(name: "demo", deployments: [.init(provider: .demo, model: "demo")])]
    }
}
