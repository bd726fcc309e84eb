import Foundation
import PortcullisAccess
@testable import PortcullisCache
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisRedis
import Testing

/// Stage 8's exact cache: what the key is made of, how entries are kept and replayed, and what
/// a client sees through a running gateway (hits, misses, controls, tenants, streams, Redis).
@Suite("Exact cache")
struct CacheTests {
    static func request(_ text: String = "What is the capital of France?", system: String? = nil) -> ChatRequest {
        var messages = [ChatMessage(role: .user, content: .text(text))]
        if let system { messages.insert(ChatMessage(role: .system, content: .text(system)), at: 0) }
        return ChatRequest(model: "m", messages: messages)
    }

    static func key(_ request: ChatRequest, tenant: String = "team:a", namespace: String = "", policy: String? = nil) -> CacheKey {
        CacheKey(tenant: tenant, namespace: namespace, policy: policy, request: request)
    }

    @Test("every part of the key separates entries; how the answer is delivered does not")
    func keyParts() {
        let base = Self.request()
        let baseKey = Self.key(base)
        #expect(baseKey.digest.count == 64)
        #expect(Self.key(base) == baseKey, "the key is deterministic")
        var variants: [String: ChatRequest] = [:]
        variants["question"] = Self.request("What is the capital of Germany?")
        variants["system prompt"] = Self.request(system: "Answer in French.")
        var changed = base
        changed.temperature = 0.7
        variants["temperature"] = changed
        changed = base
        changed.model = "other"
        variants["model group"] = changed
        changed = base
        changed.tools = [ToolDefinition(name: "weather", parameters: ["type": "object"])]
        variants["tools"] = changed
        changed = base
        changed.responseFormat = .jsonObject
        variants["response format"] = changed
        changed = base
        changed.maxTokens = 5
        variants["max tokens"] = changed
        changed = base
        changed.seed = 7
        variants["seed"] = changed
        changed = base
        changed.extra["top_k"] = 3
        variants["a passed-through parameter"] = changed
        changed = base
        changed.anthropicExtra["top_k"] = 3
        variants["an Anthropic-only parameter"] = changed
        for (part, variant) in variants {
            #expect(Self.key(variant) != baseKey, "a different \(part) must not share the entry")
        }
        #expect(Self.key(base, tenant: "team:b") != baseKey, "another tenant never shares an entry")
        #expect(Self.key(base, namespace: "n1") != baseKey)
        #expect(Self.key(base, policy: "strict") != baseKey)
        var delivered = base
        delivered.stream = true
        delivered.includeUsage = true
        delivered.user = "someone"
        #expect(Self.key(delivered) == baseKey, "streaming, usage option and user change delivery, not the answer")
        var reordered = base
        reordered.extra["b"] = 1
        reordered.extra["a"] = 2
        var ordered = base
        ordered.extra["a"] = 2
        ordered.extra["b"] = 1
        #expect(Self.key(reordered) == Self.key(ordered), "object keys are sorted in the canonical form")
    }

    @Test("the local store evicts the least recently used entries past its byte bound and drops expired ones")
    func localStore() {
        let cache = LocalCache<Int>(maximumBytes: 3 * (100 + 1 + 64))
        for (index, key) in ["a", "b", "c"].enumerated() { cache.set(index, forKey: key, bytes: 100, expires: 1000) }
        #expect(cache.value(forKey: "a", now: 1) == 0)   // a is now the most recent
        cache.set(3, forKey: "d", bytes: 100, expires: 1000)
        #expect(cache.value(forKey: "b", now: 1) == nil, "b was the least recently used")
        #expect(cache.value(forKey: "a", now: 1) == 0)
        #expect(cache.value(forKey: "c", now: 1) == 2)
        #expect(cache.value(forKey: "d", now: 1) == 3)
        #expect(cache.statistics.entries == 3)
        #expect(cache.statistics.evictions == 1)
        cache.set(9, forKey: "e", bytes: 100, expires: 5)
        #expect(cache.value(forKey: "e", now: 4) == 9)
        #expect(cache.value(forKey: "e", now: 5) == nil, "expired at its time")
        cache.set(1, forKey: "huge", bytes: 10_000, expires: 1000)
        #expect(cache.value(forKey: "huge", now: 1) == nil, "an entry larger than the whole bound is not kept")
        cache.removeAll { $0 == "a" || $0 == "c" }
        #expect(cache.value(forKey: "a", now: 1) == nil)
        #expect(cache.value(forKey: "d", now: 1) == 3)
    }

    static func completion(_ text: String, finish: FinishReason? = .stop) -> ChatCompletion {
        ChatCompletion(id: "chatcmpl-1", created: 1_700_000_000, model: "upstream-m",
                       choices: [ChatChoice(index: 0, message: ChatMessage(role: .assistant, content: .text(text)), finishReason: finish)],
                       usage: Usage(promptTokens: 12, completionTokens: 30))
    }

    @Test("only finished answers are cacheable; the stored form reads back and a damaged one is refused")
    func storedForm() throws {
        #expect(CachedAnswer.isCacheable(Self.completion("Paris.")))
        #expect(!CachedAnswer.isCacheable(Self.completion("Par", finish: .length)), "a truncated answer")
        #expect(!CachedAnswer.isCacheable(Self.completion("", finish: .contentFilter)), "a filtered answer")
        #expect(!CachedAnswer.isCacheable(Self.completion("", finish: .stop)), "an empty answer")
        var refused = Self.completion("")
        refused.choices[0].message.refusal = "I can't help with that."
        #expect(!CachedAnswer.isCacheable(refused), "a refusal")
        let answer = CachedAnswer(completion: Self.completion("Paris — столица Франции."), deployment: "d", group: "m", storedAt: 5,
                                  costMicros: 42, expiresAt: 65)
        let decoded = try #require(CachedAnswer.decode(answer.encoded()))
        #expect(decoded.encoded() == answer.encoded())
        #expect(decoded.completion.choices[0].message.content == answer.completion.choices[0].message.content)
        #expect(decoded.expiresAt == 65 && decoded.costMicros == 42 && decoded.deployment == "d")
        var damaged = answer.encoded()
        damaged.removeLast(10)
        #expect(CachedAnswer.decode(damaged) == nil)
        #expect(CachedAnswer.decode(Array(#"{"v":2}"#.utf8)) == nil, "another version's entry is not read")
    }

    @Test("a replayed stream has the usual shape and assembles back into the same answer, tool calls included")
    func replayShape() {
        let text = String(repeating: "Москва — столица России. ", count: 5)
        var completion = Self.completion(text)
        let chunks = CachedStream.chunks(of: completion)
        #expect(chunks.first?.choices.first?.delta.role == .assistant)
        #expect(chunks.count == 1 + (text.count - 1) / CachedStream.pieceLength + 1 + 1, "content pieces, the finish, the usage")
        #expect(chunks.last?.choices.isEmpty == true && chunks.last?.usage?.completionTokens == 30)
        #expect(chunks.dropLast().last?.choices.first?.finishReason == .stop)
        var assembler = StreamAssembler()
        for chunk in chunks { assembler.add(chunk) }
        #expect(assembler.completion == completion)

        completion.choices[0] = ChatChoice(index: 0, message: ChatMessage(role: .assistant, content: nil, toolCalls: [
            ToolCall(id: "call_1", name: "weather", arguments: #"{"city":"Paris"}"#),
        ]), finishReason: .toolCalls)
        var tools = StreamAssembler()
        for chunk in CachedStream.chunks(of: completion) { tools.add(chunk) }
        #expect(tools.completion.choices[0].message.toolCalls == completion.choices[0].message.toolCalls)
        #expect(tools.completion.choices[0].finishReason == .toolCalls)
    }

    @Test("the request's controls: Cache-Control and the body's cache object, refused with a stable code when malformed")
    func directive() throws {
        var extra = JSONObject()
        #expect(try CacheDirective.take(from: &extra, cacheControl: "no-cache") == CacheDirective(skipLookup: true))
        #expect(try CacheDirective.take(from: &extra, cacheControl: "max-age=0, no-store") == CacheDirective(skipLookup: true, skipStore: true))
        extra["cache"] = ["ttl": 30, "namespace": "eval-run", "no-cache": true]
        extra["top_k"] = 2
        #expect(try CacheDirective.take(from: &extra, cacheControl: nil)
            == CacheDirective(skipLookup: true, ttlSeconds: 30, namespace: "eval-run"))
        #expect(extra["cache"] == nil && extra["top_k"] == 2, "the gateway's field is taken out; the rest stays")
        for bad: JSONValue in ["yes", ["ttl": -5], ["ttl": "soon"], ["no-store": "true"], ["namespace": 3], ["colour": "blue"]] {
            extra["cache"] = bad
            #expect(throws: GatewayError.self) { try CacheDirective.take(from: &extra, cacheControl: nil) }
            do {
                _ = try CacheDirective.take(from: &extra, cacheControl: nil)
            } catch {
                #expect(error.code == .invalidParameter)
            }
        }
    }

    @Test("configuration: the section, model and policy overrides, and the key that is wrong")
    func configuration() throws {
        let configuration = try ConfigurationLoader.parse(yaml: """
            cache: { exact: true, ttl_seconds: 120, scope: key, max_bytes: 1048576 }
            models:
              - name: fast
                cache: { exact: false }
                deployments: [ { provider: demo } ]
              - name: slow
                cache: { ttl_seconds: 5 }
                deployments: [ { provider: demo } ]
            guardrails:
              policies:
                - name: finance
                  cache: { exact: true, ttl_seconds: 9 }
            """, environment: [:], source: "test")
        let cache = configuration.cache
        #expect(cache.scope == .key && cache.maximumBytes == 1_048_576)
        #expect(cache.settings(model: "fast", policy: nil) == (false, 120))
        #expect(cache.settings(model: "slow", policy: nil) == (true, 5))
        #expect(cache.settings(model: "fast", policy: "finance") == (true, 9), "a policy's override wins over its model's")
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: "cache: { scope: everyone }", environment: [:], source: "test")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: "cache: { exact: true, tll_seconds: 5 }", environment: [:], source: "test")
        }
    }

    // MARK: Through the gateway

    static func yaml(mock: Int, cache: String = "cache: { exact: true }", storage: String = #"storage: { database: "sqlite::memory:" }"#) -> String {
        """
        auth: { master_key: test-master-key }
        \(storage)
        \(cache)
        models:
        \(openAIModel("m", port: mock))
        """
    }

    static func upstreamCalls(_ port: Int) async throws -> Int {
        try await mockRequests(port: port).filter { $0["path"]?.stringValue == "/v1/chat/completions" }.count
    }

    @Test("a repeated question is answered from the cache: one upstream call, the same answer, nothing charged")
    func hitAndMiss() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock)) { gateway in
                let key = try await gateway.createKey(#""role":"user","team_id":"t1","budget":10"#).key
                let first = try await gateway.chat(key: key, model: "m", text: "What is the capital of France?")
                #expect(first.status == 200)
                #expect(first.headers["x-portcullis-cache"] == "miss")
                let second = try await gateway.chat(key: key, model: "m", text: "What is the capital of France?")
                #expect(second.status == 200)
                #expect(second.headers["x-portcullis-cache"] == "hit")
                #expect(second.headers["x-portcullis-cost"] == "0.00000000")
                #expect(second.headers["x-portcullis-attempts"] == "0")
                #expect(second.json?.objectValue?["choices"] == first.json?.objectValue?["choices"])
                #expect(try await Self.upstreamCalls(mock) == 1)
                let audited = try await gateway.call(.GET, "/admin/audit/\(second.headers["x-portcullis-audit-id"] ?? "none")", key: "test-master-key")
                #expect(audited.json?.objectValue?["details"]?.objectValue?["cache"]?.stringValue == "hit", "the hit is audited: \(audited.body)")
                #expect(audited.json?.objectValue?["details"]?.objectValue?["deployment"] == nil, "no deployment served it")

                // Each part of the request that changes the answer is a miss.
                let warmer = try await gateway.chat(key: key, model: "m", text: "What is the capital of France?", extra: #","temperature":0.9"#)
                #expect(warmer.headers["x-portcullis-cache"] == "miss")
                let system = try await gateway.call(.POST, "/v1/chat/completions", key: key, body: #"""
                    {"model":"m","messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"What is the capital of France?"}]}
                    """#)
                #expect(system.headers["x-portcullis-cache"] == "miss")
                #expect(try await Self.upstreamCalls(mock) == 3)

                // Controls: no-cache looks nothing up (but stores), no-store neither reads nor writes.
                let fresh = try await gateway.call(.POST, "/v1/chat/completions", key: key,
                                                   body: #"{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}]}"#,
                                                   headers: ["cache-control": "no-cache"])
                #expect(fresh.headers["x-portcullis-cache"] == "bypass")
                let unstored = try await gateway.chat(key: key, model: "m", text: "Never keep this", extra: #","cache":{"no-store":true}"#)
                #expect(unstored.headers["x-portcullis-cache"] == "bypass")
                let again = try await gateway.chat(key: key, model: "m", text: "Never keep this")
                #expect(again.headers["x-portcullis-cache"] == "miss", "a no-store answer was not kept")
                #expect(try await Self.upstreamCalls(mock) == 6)
                let upstreamBodies = try await mockRequests(port: mock).compactMap { $0["body"]?.objectValue }
                #expect(upstreamBodies.allSatisfy { $0["cache"] == nil }, "the gateway's cache field never reaches the provider")
                let malformed = try await gateway.chat(key: key, model: "m", text: "x", extra: #","cache":{"ttl":"later"}"#)
                #expect(malformed.status == 400 && malformed.errorCode == "invalid_parameter")

                let text = try await gateway.request(.GET, "/metrics").body
                #expect(text.contains(#"portcullis_cache_lookups_total{model="m",outcome="hit"} 1"#))
                #expect(text.contains(#"portcullis_cache_saved_tokens_total{model="m",type="output"}"#))
            }
        }
    }

    @Test("tenants never share an entry: another team misses, a key of the same team hits; scope key keeps each key apart")
    func tenants() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock)) { gateway in
                let alice = try await gateway.createKey(#""role":"user","team_id":"red""#).key
                let bob = try await gateway.createKey(#""role":"user","team_id":"blue""#).key
                let carol = try await gateway.createKey(#""role":"user","team_id":"red""#).key
                #expect(try await gateway.chat(key: alice, model: "m", text: "Our quarterly numbers?").headers["x-portcullis-cache"] == "miss")
                #expect(try await gateway.chat(key: bob, model: "m", text: "Our quarterly numbers?").headers["x-portcullis-cache"] == "miss")
                #expect(try await gateway.chat(key: carol, model: "m", text: "Our quarterly numbers?").headers["x-portcullis-cache"] == "hit")
                #expect(try await Self.upstreamCalls(mock) == 2)
            }
            try await withGateway(yaml: Self.yaml(mock: mock, cache: "cache: { exact: true, scope: key }")) { gateway in
                let alice = try await gateway.createKey(#""role":"user","team_id":"red""#).key
                let carol = try await gateway.createKey(#""role":"user","team_id":"red""#).key
                #expect(try await gateway.chat(key: alice, model: "m", text: "Per key").headers["x-portcullis-cache"] == "miss")
                #expect(try await gateway.chat(key: carol, model: "m", text: "Per key").headers["x-portcullis-cache"] == "miss")
                #expect(try await gateway.chat(key: alice, model: "m", text: "Per key").headers["x-portcullis-cache"] == "hit")
            }
        }
    }

    @Test("truncated answers and upstream errors are not cached")
    func notCached() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock)) { gateway in
                let cut = try await gateway.chat(key: "test-master-key", model: "m", text: "Tell me a long story", extra: #","max_tokens":2"#)
                #expect(cut.status == 200)
                #expect(cut.json?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["finish_reason"] == "length")
                let cutAgain = try await gateway.chat(key: "test-master-key", model: "m", text: "Tell me a long story", extra: #","max_tokens":2"#)
                #expect(cutAgain.headers["x-portcullis-cache"] == "miss")
                try await configureMock(port: mock, #"{"fail_next": 10, "error_status": 400}"#)
                let failed = try await gateway.chat(key: "test-master-key", model: "m", text: "Will fail")
                #expect(failed.status == 400)
                try await configureMock(port: mock, #"{"fail_next": 0}"#)
                let later = try await gateway.chat(key: "test-master-key", model: "m", text: "Will fail")
                #expect(later.status == 200 && later.headers["x-portcullis-cache"] == "miss")
            }
        }
    }

    @Test("a streamed answer is stored when it completes and replayed with the same event shape in both dialects")
    func streams() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock)) { gateway in
                let openAI = #"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":200,"messages":[{"role":"user","content":"Stream me"}]}"#
                let live = try await gateway.call(.POST, "/v1/chat/completions", key: "test-master-key", body: openAI)
                #expect(live.status == 200 && live.headers["x-portcullis-cache"] == "miss")
                let replay = try await gateway.call(.POST, "/v1/chat/completions", key: "test-master-key", body: openAI)
                #expect(replay.headers["x-portcullis-cache"] == "hit")
                #expect(try await Self.upstreamCalls(mock) == 1)
                func text(_ result: HTTPResult) -> String {
                    result.sseData.compactMap { try? JSONParser.parse($0) }.compactMap {
                        $0.objectValue?["choices"]?.arrayValue?.first?.objectValue?["delta"]?.objectValue?["content"]?.stringValue
                    }.joined()
                }
                func shape(_ result: HTTPResult) -> [String] {
                    result.sseData.map { data in
                        guard let object = (try? JSONParser.parse(data))?.objectValue else { return data }
                        if object["choices"]?.arrayValue?.isEmpty == true { return "usage" }
                        let choice = object["choices"]?.arrayValue?.first?.objectValue
                        if choice?["finish_reason"]?.stringValue != nil { return "finish" }
                        return choice?["delta"]?.objectValue?["role"] != nil ? "role" : "content"
                    }
                }
                #expect(!text(live).isEmpty && text(replay) == text(live))
                #expect(shape(replay).first == "role" && Array(shape(replay).suffix(3)) == ["finish", "usage", "[DONE]"])
                #expect(Array(shape(live).suffix(3)) == ["finish", "usage", "[DONE]"])

                // The same question in the Anthropic dialect, streamed: answered from the same entry, as Anthropic events.
                let anthropic = #"{"model":"m","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"Stream me"}]}"#
                let messages = try await gateway.call(.POST, "/v1/messages", key: "test-master-key", body: anthropic)
                #expect(messages.headers["x-portcullis-cache"] == "hit")
                #expect(messages.sseEventNames.first == "message_start" && messages.sseEventNames.last == "message_stop")
                #expect(messages.sseEventNames.contains("content_block_delta"))
                let whole = try await gateway.call(.POST, "/v1/messages", key: "test-master-key",
                                                   body: #"{"model":"m","max_tokens":200,"messages":[{"role":"user","content":"Stream me"}]}"#)
                #expect(whole.headers["x-portcullis-cache"] == "hit")
                let content = whole.json?.objectValue?["content"]?.arrayValue?.first?.objectValue?["text"]?.stringValue
                #expect(content == text(live))
                #expect(try await Self.upstreamCalls(mock) == 1)
            }
        }
    }

    @Test("two gateway processes on one Redis share entries; with Redis unreachable the local cache still answers")
    func sharedAndDegraded() async throws {
        let namespace = UUID().uuidString
        try await withMockUpstream { _, mock in
            let storage = #"storage: { database: "sqlite::memory:", redis: "\#(try testRedisURL())/4" }"#
            let first = try await GatewayProcess(yaml: Self.yaml(mock: mock, storage: storage))
            defer { first.stop() }
            let second = try await GatewayProcess(yaml: Self.yaml(mock: mock, storage: storage))
            defer { second.stop() }
            let body = #","cache":{"namespace":"\#(namespace)"}"#
            let stored = try await first.client.chat(key: "test-master-key", model: "m", text: "Which city hosts the 2028 Olympic Games?", extra: body)
            #expect(stored.headers["x-portcullis-cache"] == "miss", "\(stored.status) \(stored.body) \(first.log)")
            #expect(try await second.client.chat(key: "test-master-key", model: "m", text: "Which city hosts the 2028 Olympic Games?", extra: body).headers["x-portcullis-cache"] == "hit")
            #expect(try await Self.upstreamCalls(mock) == 1)

            let deadRedis = try freeLoopbackPort()
            let unreachable = #"storage: { database: "sqlite::memory:", redis: "redis://127.0.0.1:\#(deadRedis)" }"#
            try await withGateway(yaml: Self.yaml(mock: mock, storage: unreachable)) { gateway in
                let miss = try await gateway.chat(key: "test-master-key", model: "m", text: "Redis is down", extra: body)
                #expect(miss.status == 200 && miss.headers["x-portcullis-cache"] == "miss")
                let hit = try await gateway.chat(key: "test-master-key", model: "m", text: "Redis is down", extra: body)
                #expect(hit.status == 200 && hit.headers["x-portcullis-cache"] == "hit")
                let text = try await gateway.request(.GET, "/metrics").body
                #expect(text.contains(#"portcullis_cache_errors_total{reason="redis"}"#))
            }
        }
    }
}
