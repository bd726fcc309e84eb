import Foundation
import NIOCore
import PortcullisAccess
@testable import PortcullisCache
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisProviders
import PortcullisRedis
import PortcullisStorage
import Synchronization
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
        cache.removeAll { key, _ in key == "a" || key == "c" }
        #expect(cache.value(forKey: "d", now: 1) == 3)
        // By key or by value (a data subject's entries, on erasure), counting what went.
        let small = LocalCache<Int>(maximumBytes: 10_000)
        for (index, key) in ["a", "b", "c", "d"].enumerated() { small.set(index, forKey: key, bytes: 10, expires: 1000) }
        #expect(small.removeAll { key, value in key == "a" || value == 2 } == 2)
        #expect(small.value(forKey: "a", now: 1) == nil && small.value(forKey: "c", now: 1) == nil)
        #expect(small.value(forKey: "b", now: 1) == 1 && small.value(forKey: "d", now: 1) == 3)
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
        let applied = { (model: String, policy: String?) in cache.settings(model: model, policy: policy) }
        #expect(applied("fast", nil).exact == false && applied("fast", nil).ttlSeconds == 120)
        #expect(applied("slow", nil).exact == true && applied("slow", nil).ttlSeconds == 5)
        #expect(applied("fast", "finance").exact == true && applied("fast", "finance").ttlSeconds == 9, "a policy's override wins over its model's")
        #expect(!applied("fast", "finance").semantic, "no semantic cache unless cache.semantic is configured")
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: "cache: { scope: everyone }", environment: [:], source: "test")
        }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: "cache: { exact: true, tll_seconds: 5 }", environment: [:], source: "test")
        }
    }

    @Test("the savings ledger adds what two replicas saved in one row per day, team and mechanism", arguments: Engine.allCases)
    func savingsLedger(engine: Engine) async throws {
        try await withStores(engine, count: 2) { stores in
            try await MigrationRunner.migrate(stores[0], SavingsLedger.migrations)
            let first = SavingsLedger(store: stores[0], interval: 60, logger: testLogger)
            let second = SavingsLedger(store: stores[1], interval: 60, logger: testLogger)
            let day = Date(timeIntervalSince1970: 1_796_256_000 + 3600)   // 2026-12-03, 01:00 UTC
            for ledger in [first, second] {
                ledger.record(teamID: "red", mechanism: "exact", model: "m", inputTokens: 10, outputTokens: 20, costMicros: 1500, now: day)
                ledger.record(teamID: nil, mechanism: "dedup", model: "m", inputTokens: 1, outputTokens: 2, costMicros: 3, now: day)
                await ledger.flush()
            }
            first.record(teamID: "red", mechanism: "exact", model: "m", inputTokens: 10, outputTokens: 20, costMicros: 1500, now: day)
            await first.flush()
            let rows = try await first.totals(groupBy: ["day", "team_id", "mechanism"], teamID: nil, mechanism: nil, fromDay: "2026-12-01",
                                              toDay: "2026-12-31", limit: 10, offset: 0).compactMap(\.objectValue)
            #expect(rows.count == 2)
            let red = rows.first { $0["team_id"] == "red" }
            #expect(red?["requests"]?.integerValue == 3 && red?["saved_output_tokens"]?.integerValue == 60 && red?["saved_cost_usd"] == "0.004500")
            #expect(red?["day"] == "2026-12-03")
            #expect(rows.contains { $0["team_id"] == .null && $0["mechanism"] == "dedup" && $0["requests"]?.integerValue == 2 })
            let none = try await first.totals(groupBy: [], teamID: nil, mechanism: nil, fromDay: "2027-01-01", toDay: nil, limit: 10, offset: 0)
            #expect(none.isEmpty)
        }
    }

    // MARK: Through the gateway

    /// A cache whose Redis reads and writes may take 2 s: under a loaded CI the first command
    /// (which opens the connection) can exceed the 50 ms default, which is a local miss by design.
    static let patientRedisCache = "cache: { exact: true, redis_timeout_seconds: 2 }"

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
                let report = try await gateway.call(.GET, "/admin/savings", key: "test-master-key")
                let rows = report.json?.objectValue?["data"]?.arrayValue?.compactMap(\.objectValue) ?? []
                #expect(rows.count == 1, "\(report.body)")
                #expect(rows.first?["team_id"] == "t1" && rows.first?["mechanism"] == "exact" && rows.first?["requests"]?.integerValue == 1)
                #expect((rows.first?["saved_output_tokens"]?.integerValue ?? 0) > 0 && rows.first?["day"]?.stringValue?.count == 10)
                #expect(try await gateway.call(.GET, "/admin/savings?group_by=colour", key: "test-master-key").errorCode == "invalid_parameter")
                #expect(try await gateway.call(.GET, "/admin/savings", key: key).status == 403, "a user may not read the savings")

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
                #expect(text.contains(#"portcullis_cache_saved_tokens_total{model="m",mechanism="exact",type="output"}"#))
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

    @Test("a corrupt shared entry is dropped, counted and replaced by the fresh answer, never served")
    func corruptEntry() async throws {
        let namespace = UUID().uuidString
        try await withMockUpstream { _, mock in
            let redisURL = "\(try testRedisURL())/4"
            let storage = #"storage: { database: "sqlite::memory:", redis: "\#(redisURL)" }"#
            let body = #"{"model":"m","messages":[{"role":"user","content":"Where is the Hermitage?"}],"cache":{"namespace":"\#(namespace)"}}"#
            // The key the gateway will compute: the master key's tenant, the default policy, the request as decoded.
            var request = try OpenAIWire.decodeChatRequest(JSONParser.parse(body))
            _ = try CacheDirective.take(from: &request.extra, cacheControl: nil)
            let key = CacheKey(tenant: "master-key", namespace: namespace, policy: "default", request: request)
            let redis = RedisClient(configuration: try RedisConfiguration(url: redisURL))
            _ = try await redis.command(["SET", .string(ExactCache.sharedKey(key)), "{not an entry", "PX", "60000"])
            try await withGateway(yaml: Self.yaml(mock: mock, cache: Self.patientRedisCache, storage: storage)) { gateway in
                let answer = try await gateway.call(.POST, "/v1/chat/completions", key: "test-master-key", body: body)
                #expect(answer.status == 200 && answer.headers["x-portcullis-cache"] == "miss")
                #expect(try await Self.upstreamCalls(mock) == 1)
                let text = try await gateway.request(.GET, "/metrics").body
                #expect(text.contains(#"portcullis_cache_errors_total{reason="corrupt_entry"} 1"#))
                let stored = try await redis.command(["GET", .string(ExactCache.sharedKey(key))])
                guard case .bulkString(let buffer?) = stored else {
                    Issue.record("the fresh answer was not stored: \(stored)")
                    return
                }
                #expect(CachedAnswer.decode(Array(buffer.readableBytesView)) != nil, "the corrupt entry was replaced by a readable one")
            }
            await redis.shutdown()
        }
    }

    @Test("two gateway processes on one Redis share entries; with Redis unreachable the local cache still answers")
    func sharedAndDegraded() async throws {
        let namespace = UUID().uuidString
        try await withMockUpstream { _, mock in
            let storage = #"storage: { database: "sqlite::memory:", redis: "\#(try testRedisURL())/4" }"#
            let first = try await GatewayProcess(yaml: Self.yaml(mock: mock, cache: Self.patientRedisCache, storage: storage))
            defer { first.stop() }
            let second = try await GatewayProcess(yaml: Self.yaml(mock: mock, cache: Self.patientRedisCache, storage: storage))
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
                // An erasure cannot leave the subject's shared entries behind: it is refused, and nothing else is erased yet.
                #expect(try await gateway.call(.POST, "/admin/users", key: "test-master-key", body: #"{"user_id":"dora"}"#).status < 300)
                let refused = try await gateway.call(.POST, "/admin/subjects/user:dora/delete", key: "test-master-key")
                #expect(refused.status == 503 && refused.json?.objectValue?["error"]?.objectValue?["code"]?.stringValue == "cache_unavailable",
                        "\(refused.status) \(refused.body)")
                #expect(try await gateway.call(.GET, "/admin/subjects/user:dora/export", key: "test-master-key").json?.objectValue?["user"] != .null,
                        "the user is still there")
            }
        }
    }
}

/// Stage 8's in-flight de-duplication: identical requests at the same time share one upstream call.
@Suite("In-flight de-duplication")
struct DeduplicationTests {
    final class Counter: Sendable {
        let value = Mutex(0)
        func increment() -> Int { value.withLock { $0 += 1; return $0 } }
        var count: Int { value.withLock { $0 } }
    }

    @Test("concurrent callers of one key share one run and its result, a failure included; a later caller runs anew")
    func sharedCalls() async throws {
        let calls = InFlight<Int>()
        let runs = Counter()
        let results = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await calls.value(for: "k") {
                        try await Task.sleep(for: .milliseconds(200))
                        return runs.increment()
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(runs.count == 1)
        #expect(results.allSatisfy { $0.0 == 1 })
        #expect(results.filter(\.1).count == 49, "all but the first joined")
        #expect(calls.count == 0, "the entry left once its value was ready")
        #expect(try await calls.value(for: "k") { runs.increment() } == (2, false))

        struct Refused: Error {}
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<5 {
                group.addTask {
                    do {
                        _ = try await calls.value(for: "bad") {
                            try await Task.sleep(for: .milliseconds(100))
                            throw Refused()
                        }
                        return false
                    } catch {
                        return error is Refused
                    }
                }
            }
            return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
        }
        #expect(failures == 5)
    }

    @Test("a shared stream gives a late reader everything from the first event; the last reader leaving cancels the pull")
    func sharedStream() async throws {
        let pulled = Counter()
        let (source, feed) = AsyncStream.makeStream(of: Int.self)
        let stream = EventStream<Int> {
            var iterator = source.makeAsyncIterator()
            return {
                let next = await iterator.next()
                if next != nil { _ = pulled.increment() }
                return next
            }
        }
        feed.yield(0)
        let primed = try #require(try await PrimedStream.prime(stream))
        let ended = Counter()
        let shared = SharedStream(primed, onEnd: { _ = ended.increment() })
        feed.yield(1)
        feed.yield(2)
        var early = shared.reader().takeRestAndFirst()
        #expect(early.first == 0 && pulled.count >= 1)
        #expect(try await early.rest.next() == 1)
        #expect(try await early.rest.next() == 2)
        feed.yield(3)
        var late = shared.reader().takeRestAndFirst()   // joins after three events
        #expect(late.first == 0)
        var seen: [Int] = []
        for _ in 0..<3 { seen.append(try await late.rest.next() ?? -1) }
        #expect(seen == [1, 2, 3], "the late reader gets what was already sent, then the tail")
        feed.yield(4)
        #expect(try await early.rest.next() == 3)
        #expect(try await early.rest.next() == 4)
        #expect(try await late.rest.next() == 4)
        feed.finish()
        #expect(try await early.rest.next() == nil)
        #expect(try await eventually(seconds: 2) { ended.count == 1 })

        // Abandoned: once every reader is gone, the pull stops without waiting for the source.
        let (silent, voice) = AsyncStream.makeStream(of: Int.self)
        voice.yield(9)
        let quiet = EventStream<Int> {
            var iterator = silent.makeAsyncIterator()
            return { await iterator.next() }
        }
        let abandonedEnd = Counter()
        let lonely = SharedStream(try #require(try await PrimedStream.prime(quiet)), onEnd: { _ = abandonedEnd.increment() })
        do {
            let reader = lonely.reader()
            #expect(reader.first == 9)
        }
        #expect(try await eventually(seconds: 5) { abandonedEnd.count == 1 }, "the source never ended: the pull was cancelled")
        #expect(lonely.progress.finished)
    }

    static func yaml(mock: Int, dedup: String = "deterministic") -> String {
        """
        auth: { master_key: test-master-key }
        storage: { database: "sqlite::memory:" }
        cache: { dedup: \(dedup) }
        models:
        \(openAIModel("m", port: mock))
        """
    }

    static func concurrently(_ count: Int, _ gateway: GatewayClient, body: String) async throws -> [HTTPResult] {
        let client = EmbeddingBatchTests.wide(gateway)
        return try await withThrowingTaskGroup(of: HTTPResult.self) { group in
            for _ in 0..<count {
                group.addTask { try await client.call(.POST, "/v1/chat/completions", key: "test-master-key", body: body) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    @Test("50 identical deterministic requests at once: one upstream call and 50 full answers, streamed and not")
    func fifty() async throws {
        try await withMockUpstream { _, mock in
            try await configureMock(port: mock, #"{"latency_ms": 1500}"#)   // long enough that all 50 arrive while the first is in flight
            try await withGateway(yaml: Self.yaml(mock: mock)) { gateway in
                try await EmbeddingBatchTests.warm(EmbeddingBatchTests.wide(gateway), connections: 50)
                let whole = #"{"model":"m","temperature":0,"messages":[{"role":"user","content":"Name three rivers of Siberia"}]}"#
                let answers = try await Self.concurrently(50, gateway, body: whole)
                #expect(answers.allSatisfy { $0.status == 200 })
                let texts = Set(answers.compactMap { $0.json?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["message"]?.objectValue?["content"]?.stringValue })
                #expect(texts.count == 1 && texts.first?.isEmpty == false, "every client got the whole answer")
                #expect(answers.filter { $0.headers["x-portcullis-dedup"] == "joined" }.count == 49,
                        "\(answers.filter { $0.headers["x-portcullis-dedup"] == nil }.map { "\($0.headers)" })")
                #expect(try await CacheTests.upstreamCalls(mock) == 1)

                try await configureMock(port: mock, #"{"latency_ms": 0, "ttft_ms": 1000, "tokens_per_second": 20}"#)
                let streamed = #"{"model":"m","seed":11,"stream":true,"messages":[{"role":"user","content":"Name three rivers of Siberia"}]}"#
                let streams = try await Self.concurrently(50, gateway, body: streamed)
                #expect(streams.allSatisfy { $0.status == 200 && $0.sseData.last == "[DONE]" })
                let contents = Set(streams.map { stream in
                    stream.sseData.compactMap { try? JSONParser.parse($0) }.compactMap {
                        $0.objectValue?["choices"]?.arrayValue?.first?.objectValue?["delta"]?.objectValue?["content"]?.stringValue
                    }.joined()
                })
                #expect(contents.count == 1 && contents.first?.isEmpty == false, "every stream carried the whole answer")
                #expect(try await CacheTests.upstreamCalls(mock) == 2)
                let text = try await gateway.request(.GET, "/metrics").body
                #expect(text.contains(#"portcullis_deduplicated_requests_total{model="m"} 98"#))
                let report = try await gateway.call(.GET, "/admin/savings?group_by=mechanism&mechanism=dedup", key: "test-master-key")
                #expect(report.json?.objectValue?["data"]?.arrayValue?.first?.objectValue?["requests"]?.integerValue == 98, "\(report.body)")
            }
        }
    }

    @Test("not de-duplicated: sampled requests under deterministic, and anything with dedup off")
    func notShared() async throws {
        try await withMockUpstream { _, mock in
            try await configureMock(port: mock, #"{"latency_ms": 300}"#)
            try await withGateway(yaml: Self.yaml(mock: mock)) { gateway in
                let sampled = #"{"model":"m","temperature":0.8,"messages":[{"role":"user","content":"Write a haiku"}]}"#
                let answers = try await Self.concurrently(5, gateway, body: sampled)
                #expect(answers.allSatisfy { $0.status == 200 && $0.headers["x-portcullis-dedup"] == nil })
                #expect(try await CacheTests.upstreamCalls(mock) == 5)
            }
        }
        try await withMockUpstream { _, mock in
            try await configureMock(port: mock, #"{"latency_ms": 300}"#)
            try await withGateway(yaml: Self.yaml(mock: mock, dedup: "off")) { gateway in
                let deterministic = #"{"model":"m","temperature":0,"messages":[{"role":"user","content":"Write a haiku"}]}"#
                _ = try await Self.concurrently(5, gateway, body: deterministic)
                #expect(try await CacheTests.upstreamCalls(mock) == 5)
            }
        }
    }
}

extension PrimedStream {
    /// The first event and an iterator over the rest, for a test to read by hand.
    func takeRestAndFirst() -> (first: Element, rest: EventStream<Element>.Iterator) {
        (first, takeRest()!)
    }
}

/// Stage 8 for embeddings: concurrent single-input requests become one upstream call.
@Suite("Embedding micro-batching")
struct EmbeddingBatchTests {
    static func embed(_ client: GatewayClient, _ text: String) async throws -> HTTPResult {
        try await client.call(.POST, "/v1/embeddings", key: "test-master-key", body: #"{"model":"e","input":"\#(text)","encoding_format":"float"}"#)
    }

    static func yaml(mock: Int, batch: String) -> String {
        """
        auth: { master_key: test-master-key }
        storage: { database: "sqlite::memory:" }
        cache: { embedding_batch: \(batch) }
        models:
        \(openAIModel("e", port: mock))
        """
    }

    /// `gateway` on a client that keeps up to 100 requests in flight.
    static func wide(_ gateway: GatewayClient) -> GatewayClient {
        var wide = gateway
        wide.wide = true
        return wide
    }

    /// Opens `count` kept-alive connections first, so that the requests that follow arrive together
    /// (under a loaded CI, opening them was slower than the batching window).
    static func warm(_ client: GatewayClient, connections count: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<count { group.addTask { _ = try await client.call(.GET, "/v1/models", key: "test-master-key") } }
            try await group.waitForAll()
        }
    }

    /// Each of `texts` embedded at the same time, with its answer.
    static func embedAll(_ client: GatewayClient, _ texts: [String]) async throws -> [(text: String, answer: HTTPResult)] {
        try await withThrowingTaskGroup(of: (String, HTTPResult).self) { group in
            for text in texts { group.addTask { (text, try await Self.embed(client, text)) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    static func embeddingCalls(_ port: Int) async throws -> [JSONObject] {
        try await mockRequests(port: port).filter { $0["path"]?.stringValue == "/v1/embeddings" }
    }

    @Test("64 concurrent embeddings: a few upstream calls, each client its own vector and its share of the usage")
    func sixtyFour() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock, batch: "{ window_ms: 100, max_inputs: 64 }")) { gateway in
                let client = Self.wide(gateway)
                try await Self.warm(client, connections: 64)
                let texts = (0..<64).map { "document number \($0) " + String(repeating: "x", count: $0) }
                for (text, answer) in try await Self.embedAll(client, texts) {
                    #expect(answer.status == 200)
                    let data = answer.json?.objectValue?["data"]?.arrayValue ?? []
                    #expect(data.count == 1 && data.first?.objectValue?["index"]?.integerValue == 0)
                    let vector = data.first?.objectValue?["embedding"]?.arrayValue?.compactMap(\.doubleValue) ?? []
                    #expect(vector.first == Double(text.utf8.count), "the client got the vector of its own input")
                    #expect((answer.json?.objectValue?["usage"]?.objectValue?["prompt_tokens"]?.integerValue ?? 0) > 0)
                }
                let calls = try await Self.embeddingCalls(mock)
                #expect(calls.count <= 16, "64 inputs in a bounded number of calls, not 64: \(calls.count)")
                #expect(calls.contains { ($0["body"]?.objectValue?["input"]?.arrayValue?.count ?? 0) > 1 })
                #expect(calls.allSatisfy { $0["body"]?.objectValue?["encoding_format"] == "float" }, "the options go with the batch")
                let inputs = calls.reduce(0) { $0 + ($1["body"]?.objectValue?["input"]?.arrayValue?.count ?? 1) }
                #expect(inputs == 64)
            }
        }
    }

    @Test("a refused input fails only its own request; a lone request waits the window and goes alone; window 0 batches nothing")
    func refusedInput() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock, batch: "{ window_ms: 100, max_inputs: 4 }")) { gateway in
                let client = Self.wide(gateway)
                try await Self.warm(client, connections: 4)
                let texts = ["good one", "REJECT-ME please", "good two", "good three"]
                let answers = Dictionary(try await Self.embedAll(client, texts), uniquingKeysWith: { first, _ in first })
                #expect(answers["REJECT-ME please"]?.status == 400)
                #expect(answers["REJECT-ME please"]?.errorCode == "upstream_rejected_request")
                for text in ["good one", "good two", "good three"] {
                    #expect(answers[text]?.status == 200, "\(text): \(answers[text]?.body ?? "")")
                }
                let calls = try await Self.embeddingCalls(mock)
                func inputs(_ call: JSONObject) -> [String] {
                    let input = call["body"]?.objectValue?["input"]
                    return input?.stringValue.map { [$0] } ?? input?.arrayValue?.compactMap(\.stringValue) ?? []
                }
                #expect(calls.contains { inputs($0).count > 1 && inputs($0).contains("REJECT-ME please") },
                        "the refused input went in a batch with others first: \(calls.map(inputs))")
                #expect(calls.filter { inputs($0) == ["REJECT-ME please"] }.count == 1, "then alone, once")
                let lone = try await Self.embed(gateway, "alone")
                #expect(lone.status == 200)
            }
            try await withGateway(yaml: Self.yaml(mock: mock, batch: "{ window_ms: 0 }")) { gateway in
                let client = Self.wide(gateway)
                let before = try await Self.embeddingCalls(mock).count
                _ = try await withThrowingTaskGroup(of: HTTPResult.self) { group in
                    for index in 0..<6 { group.addTask { try await Self.embed(client, "unbatched \(index)") } }
                    return try await group.reduce(into: 0) { count, _ in count += 1 }
                }
                #expect(try await Self.embeddingCalls(mock).count - before == 6)
            }
        }
    }
}
