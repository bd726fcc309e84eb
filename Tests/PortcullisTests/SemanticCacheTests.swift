import Foundation
import PortcullisAccess
@testable import PortcullisCache
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisRedis
import Synchronization
import Testing

/// Stage 8's semantic cache: the vector index, the memory of questions per partition, and
/// what a client sees through a running gateway with the built-in embedder and with an
/// embedding model group.
// Serialized: the index test builds a graph on a cooperative thread for seconds, which would
// hold up the time-limit test's clock beside it on a two-core machine.
@Suite("Semantic cache", .serialized)
struct SemanticCacheTests {
    /// Unit vectors in `dimensions`, from a seeded generator, clustered around `centres` topics.
    static func clustered(_ count: Int, dimensions: Int = 64, centres: Int = 20, spread: Float = 0.3, seed: UInt64 = 7) -> [[Float]] {
        var state = seed
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000
        }
        func unit(_ vector: [Float]) -> [Float] {
            let norm = vector.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return vector.map { $0 / norm }
        }
        let topics = (0..<centres).map { _ in unit((0..<dimensions).map { _ in next() }) }
        return (0..<count).map { index in unit(zip(topics[index % centres], (0..<dimensions).map { _ in next() }).map { $0 + spread * $1 }) }
    }

    @Test("the graph finds what an exhaustive scan finds (recall), and an empty or mismatched index finds nothing")
    func index() {
        var index = VectorIndex(dimensions: 32)
        #expect(index.search(Self.clustered(1, dimensions: 32)[0]).isEmpty)
        let vectors = Self.clustered(800, dimensions: 32)
        for vector in vectors { index.insert(vector) }
        #expect(index.count == 800)
        let queries = Self.clustered(100, dimensions: 32, seed: 99)
        let agreed = queries.filter { query in index.search(query, limit: 1).first?.node == index.exhaustive(query, limit: 1).first?.node }.count
        #expect(agreed >= 95, "recall@1 \(agreed)/100")
        // A stored vector finds itself, with similarity 1.
        let found = index.search(vectors[567], limit: 1).first
        #expect(found?.node == 567 && abs((found?.similarity ?? 0) - 1) < 1e-5)
        #expect(index.search([1, 0, 0]).isEmpty, "a query of another length matches nothing")
    }

    /// Embeds by a fixed table; unknown texts fail; `delay` slows every call.
    struct TableEmbedder: QuestionEmbedder {
        let table: [String: [Float]]
        var delay: Duration = .zero

        func embed(_ text: String) async throws -> [Float] {
            if delay > .zero { try await Task.sleep(for: delay) }
            guard let vector = table[text] else { throw CancellationError() }
            return vector
        }
    }

    @Test("partitions never mix, the threshold holds, a forgotten question stops matching, and the bound forgets the least recently used")
    func memory() async throws {
        let vectors = Self.clustered(4, dimensions: 8, centres: 4, spread: 0)
        let failures = Mutex<[SemanticCache.Failure]>([])
        let cache = SemanticCache(embedder: TableEmbedder(table: ["a": vectors[0], "b": vectors[1]]), timeoutSeconds: 0.2, maximumEntries: 3,
                                  observe: { failure in failures.withLock { $0.append(failure) } })
        let a = try #require(await cache.embed("a"))
        cache.remember(a, question: "a", partition: "team:red", key: CacheKey(digest: "answer-a"))
        #expect(cache.match(a, partition: "team:red", threshold: 0.95)?.key == CacheKey(digest: "answer-a"))
        #expect(cache.match(a, partition: "team:blue", threshold: 0.95) == nil, "another partition never matches")
        let b = try #require(await cache.embed("b"))
        #expect(cache.match(b, partition: "team:red", threshold: 0.95) == nil, "a different question is below the threshold")
        // The same question stored again is one entry, pointing at the newer answer.
        cache.remember(a, question: "a", partition: "team:red", key: CacheKey(digest: "answer-a2"))
        #expect(cache.count == 1 && cache.match(a, partition: "team:red", threshold: 0.95)?.key == CacheKey(digest: "answer-a2"))
        let match = try #require(cache.match(a, partition: "team:red", threshold: 0.95))
        cache.forget(match, partition: "team:red")
        #expect(cache.match(a, partition: "team:red", threshold: 0.95) == nil)
        // Bounded: past three questions the least recently used partition goes.
        cache.remember(vectors[2], question: "2", partition: "old", key: CacheKey(digest: "2"))
        cache.remember(vectors[3], question: "3", partition: "new", key: CacheKey(digest: "3"))
        _ = cache.match(vectors[2], partition: "old", threshold: 0.9)
        cache.remember(vectors[1], question: "1", partition: "newest", key: CacheKey(digest: "1"))
        #expect(cache.count <= 3)
        #expect(cache.match(vectors[2], partition: "old", threshold: 0.9) != nil, "the recently used partition stays")
        #expect(cache.match(vectors[3], partition: "new", threshold: 0.9) == nil || cache.match(a, partition: "team:red", threshold: 0.9) == nil)

        // An embedder that fails or is too slow is a miss, counted.
        #expect(await cache.embed("unknown") == nil)
        let slow = SemanticCache(embedder: TableEmbedder(table: ["a": vectors[0]], delay: .seconds(5)), timeoutSeconds: 0.05,
                                 observe: { failure in failures.withLock { $0.append(failure) } })
        let started = ContinuousClock.now
        let slowVector = await slow.embed("a")
        #expect(slowVector == nil)
        #expect(ContinuousClock.now - started < .seconds(2.5), "the time limit bounds the wait")
        #expect(failures.withLock { $0 } == [.embedder, .timeout])
    }

    @Test("the detail check: numbers, negations, substituted words and direction make a different question; added wording does not")
    func details() {
        let differ: [(String, String, QuestionDetails.Difference)] = [
            ("Scale the deployment to 3 replicas.", "Scale the deployment to 5 replicas.", .number),
            ("Restart two pods in staging.", "Restart four pods in staging.", .number),
            ("Перезапусти два пода.", "Перезапусти три пода.", .number),
            ("Is port 22 open?", "Is port 22 not open?", .negation),
            ("Does the backup include logs?", "Doesn't the backup include logs?", .negation),
            ("Можно ли удалять логи?", "Нельзя ли удалять логи?", .negation),
            ("What is the latency of Frankfurt?", "What is the latency of Warsaw?", .substitution),
            ("How do I mount a volume?", "How do I unmount a volume?", .substitution),
            ("Какой лимит у тарифа Старт?", "Какой лимит у тарифа Бизнес?", .substitution),
            ("Migrate the database from MySQL to PostgreSQL.", "Migrate the database from PostgreSQL to MySQL.", .direction),
            ("Go лучше, чем Java?", "Java лучше, чем Go?", .direction),
        ]
        for (cached, asked, expected) in differ {
            #expect(QuestionDetails.difference(cached, asked) == expected, "\(cached) | \(asked)")
        }
        let same = [
            ("How do I mount a volume?", "How can I mount a volume?"),
            ("What is the latency of Frankfurt?", "What's the latency of Frankfurt, please?"),
            ("Show the pods in staging.", "Can you show me the pods in staging?"),
            ("Какой лимит у тарифа Старт?", "Подскажи, какой лимит у тарифа «Старт»?"),
            ("Как в Kubernetes перезапустить под?", "Как перезапустить под в Kubernetes?"),
            ("Where is the status page?", "Where can I find the status page?"),
        ]
        for (cached, asked) in same {
            #expect(QuestionDetails.difference(cached, asked) == nil, "\(cached) | \(asked)")
        }
    }

    // MARK: Through the gateway

    static var modelDirectory: String { EmbedderTests.modelDirectory.path }

    static func yaml(mock: Int, cache: String) -> String {
        """
        auth: { master_key: test-master-key }
        storage: { database: "sqlite::memory:" }
        \(cache)
        models:
        \(openAIModel("m", port: mock))
        \(openAIModel("embed", port: mock))
        """
    }

    static func builtin(threshold: Double = 0.95, exact: Bool = true) -> String {
        "cache: { exact: \(exact), semantic: { embedding_model: builtin, threshold: \(threshold), model_directory: \"\(modelDirectory)\" } }"
    }

    @Test("a paraphrase is answered from the cache with its similarity; a look-alike, another team or another system prompt is not")
    func paraphrase() async throws {
        try await withMockUpstream { _, mock in
            try await withGateway(yaml: Self.yaml(mock: mock, cache: Self.builtin())) { gateway in
                let key = try await gateway.createKey(#""role":"user","team_id":"ops""#).key
                let first = try await gateway.chat(key: key, model: "m", text: "How do I restart nginx?")
                #expect(first.status == 200 && first.headers["x-portcullis-cache"] == "miss")
                let similar = try await gateway.chat(key: key, model: "m", text: "How can I restart nginx?")
                #expect(similar.status == 200)
                #expect(similar.headers["x-portcullis-cache"] == "semantic-hit")
                let similarity = Double(similar.headers["x-portcullis-cache-similarity"] ?? "") ?? 0
                #expect(similarity >= 0.95 && similarity <= 1, "\(similar.headers["x-portcullis-cache-similarity"] ?? "none")")
                #expect(similar.json?.objectValue?["choices"] == first.json?.objectValue?["choices"], "the cached answer of the first question")
                #expect(similar.headers["x-portcullis-cost"] == "0.00000000")
                #expect(try await CacheTests.upstreamCalls(mock) == 1)
                let audited = try await gateway.call(.GET, "/admin/audit/\(similar.headers["x-portcullis-audit-id"] ?? "none")", key: "test-master-key")
                let details = audited.json?.objectValue?["details"]?.objectValue
                #expect(details?["cache"]?.stringValue == "semantic-hit" && (details?["cache_similarity"]?.doubleValue ?? 0) >= 0.95, "\(audited.body)")

                // A look-alike (another verb) is asked upstream.
                let stop = try await gateway.chat(key: key, model: "m", text: "How do I stop nginx?")
                #expect(stop.headers["x-portcullis-cache"] == "miss")
                #expect(stop.json?.objectValue?["choices"] != first.json?.objectValue?["choices"])
                // Another team, the same paraphrase: never another tenant's answer.
                let other = try await gateway.createKey(#""role":"user","team_id":"finance""#).key
                #expect(try await gateway.chat(key: other, model: "m", text: "How can I restart nginx?").headers["x-portcullis-cache"] == "miss")
                // Another system prompt: another partition.
                let system = try await gateway.call(.POST, "/v1/chat/completions", key: key, body: #"""
                    {"model":"m","messages":[{"role":"system","content":"Answer in French."},{"role":"user","content":"How can I restart nginx?"}]}
                    """#)
                #expect(system.headers["x-portcullis-cache"] == "miss")
                // A turn of parts (text beside an image) is never matched by its text alone.
                let parts = try await gateway.call(.POST, "/v1/chat/completions", key: key, body: #"""
                    {"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"How can I restart nginx?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}
                    """#)
                #expect(parts.headers["x-portcullis-cache"] == "miss", "\(parts.status) \(parts.body)")
                // Another temperature: another partition.
                let warmer = try await gateway.chat(key: key, model: "m", text: "How can I restart nginx?", extra: #","temperature":1.2"#)
                #expect(warmer.headers["x-portcullis-cache"] == "miss")
                #expect(try await CacheTests.upstreamCalls(mock) == 6)

                // A streamed paraphrase is replayed as a stream.
                let streamed = try await gateway.call(.POST, "/v1/chat/completions", key: key,
                                                      body: #"{"model":"m","stream":true,"messages":[{"role":"user","content":"How could I restart nginx?"}]}"#)
                #expect(streamed.headers["x-portcullis-cache"] == "semantic-hit", "\(streamed.headers["x-portcullis-cache-similarity"] ?? "-")")
                #expect(streamed.sseData.last == "[DONE]")
                #expect(try await CacheTests.upstreamCalls(mock) == 6)

                let metrics = try await gateway.request(.GET, "/metrics").body
                #expect(metrics.contains(#"portcullis_cache_lookups_total{model="m",outcome="semantic_hit"} 2"#))
                #expect(metrics.contains(#"portcullis_cache_saved_tokens_total{model="m",mechanism="semantic",type="output"}"#))
                let report = try await gateway.call(.GET, "/admin/savings?mechanism=semantic&group_by=mechanism", key: "test-master-key")
                let rows = report.json?.objectValue?["data"]?.arrayValue?.compactMap(\.objectValue) ?? []
                #expect(rows.count == 1 && rows.first?["requests"]?.integerValue == 2, "\(report.body)")
            }
        }
    }

    @Test("embedding through a model group: the same question hits at similarity 1; an unreachable embedder is a miss, never an error")
    func modelGroup() async throws {
        try await withMockUpstream { _, mock in
            let cache = "cache: { exact: false, semantic: { embedding_model: embed, threshold: 0.99, timeout_ms: 2000 } }"
            try await withGateway(yaml: Self.yaml(mock: mock, cache: cache)) { gateway in
                let first = try await gateway.chat(key: "test-master-key", model: "m", text: "Where is the staging runbook?")
                #expect(first.headers["x-portcullis-cache"] == "miss")
                let again = try await gateway.chat(key: "test-master-key", model: "m", text: "Where is the staging runbook?")
                #expect(again.headers["x-portcullis-cache"] == "semantic-hit", "exact off: found by its embedding")
                #expect(again.headers["x-portcullis-cache-similarity"] == "1.0000")
                let embeddings = try await EmbeddingBatchTests.embeddingCalls(mock)
                #expect(embeddings.count == 2, "one embedding per lookup, reused to store the answer")
            }
            // The embedding group points at a closed port: the lookup misses, the request is answered.
            let closed = """
                auth: { master_key: test-master-key }
                storage: { database: "sqlite::memory:" }
                cache: { semantic: { embedding_model: embed } }
                routing: { health_check: { interval_seconds: 0 } }
                models:
                \(openAIModel("m", port: mock))
                \(openAIModel("embed", port: 1))
                """
            try await withGateway(yaml: closed) { gateway in
                let answer = try await gateway.chat(key: "test-master-key", model: "m", text: "Still answered?")
                #expect(answer.status == 200 && answer.headers["x-portcullis-cache"] == "miss")
                let metrics = try await gateway.request(.GET, "/metrics").body
                #expect(metrics.contains(#"portcullis_cache_errors_total{reason="semantic_embedder"}"#)
                        || metrics.contains(#"portcullis_cache_errors_total{reason="semantic_timeout"}"#), "counted")
            }
        }
    }

    @Test("two replicas on one Redis: a question one of them answered is a semantic hit on the other")
    func shared() async throws {
        let namespace = UUID().uuidString
        try await withMockUpstream { _, mock in
            let storage = #"storage: { database: "sqlite::memory:", redis: "\#(try testRedisURL())/5" }"#
            let cache = "cache: { exact: true, redis_timeout_seconds: 2, semantic: { model_directory: \"\(Self.modelDirectory)\" } }"
            let yaml = Self.yaml(mock: mock, cache: cache).replacingOccurrences(of: #"storage: { database: "sqlite::memory:" }"#, with: storage)
            let body = #","cache":{"namespace":"\#(namespace)"}"#
            try await withGateway(yaml: yaml) { first in
                try await withGateway(yaml: yaml) { second in
                    let asked = try await first.chat(key: "test-master-key", model: "m", text: "How do I rotate the TLS certificate?", extra: body)
                    #expect(asked.headers["x-portcullis-cache"] == "miss", "\(asked.status) \(asked.body)")
                    // The replicas exchange questions with Redis every 250 ms; 2 s leaves room for a loaded CI.
                    try await Task.sleep(for: .seconds(2))
                    let shared = try await second.chat(key: "test-master-key", model: "m", text: "How can I rotate the TLS certificate?", extra: body)
                    #expect(shared.headers["x-portcullis-cache"] == "semantic-hit", "the other replica learnt the question through Redis")
                    #expect(try await CacheTests.upstreamCalls(mock) == 1)
                    #expect(shared.json?.objectValue?["choices"] == asked.json?.objectValue?["choices"], "the first replica's answer, from Redis")
                }
            }
        }
    }

    @Test("erasing a data subject removes its cached answers and questions: from both replicas' memory, from Redis and from the shared stream; its team's other entries stay")
    func erasure() async throws {
        let namespace = UUID().uuidString, team = "t-erase-" + FastRandom.hex(bytes: 4)
        let ann = "ann-" + FastRandom.hex(bytes: 4), bob = "bob-" + FastRandom.hex(bytes: 4)
        try await withMockUpstream { _, mock in
            let redisURL = "\(try testRedisURL())/7"
            let storage = #"storage: { database: "sqlite::memory:", redis: "\#(redisURL)" }"#
            // A generous embedding time limit: under a loaded two-core CI a question embedded past the 200 ms default is not remembered (a miss, by design), and Bob's would be missing from the stream.
            let cache = "cache: { exact: true, redis_timeout_seconds: 2, semantic: { model_directory: \"\(Self.modelDirectory)\", timeout_ms: 5000 } }"
            let yaml = Self.yaml(mock: mock, cache: cache).replacingOccurrences(of: #"storage: { database: "sqlite::memory:" }"#, with: storage)
            let body = #","cache":{"namespace":"\#(namespace)"}"#
            let redis = RedisClient(configuration: try RedisConfiguration(url: redisURL))
            let outcome = await Result(catching: { try await withGateway(yaml: yaml) { first in
                try await withGateway(yaml: yaml) { second in
                    // The two replicas share the database only through Redis here, so each knows the users it is told of.
                    for gateway in [first, second] {
                        for user in [ann, bob] {
                            #expect(try await gateway.call(.POST, "/admin/users", key: "test-master-key", body: #"{"user_id":"\#(user)","team_id":"\#(team)"}"#).status < 300)
                        }
                    }
                    let annKey = try await first.createKey(#""role":"user","user_id":"\#(ann)","team_id":"\#(team)""#).key
                    let bobOnFirst = try await first.createKey(#""role":"user","user_id":"\#(bob)","team_id":"\#(team)""#).key
                    let annOnSecond = try await second.createKey(#""role":"user","user_id":"\#(ann)","team_id":"\#(team)""#).key
                    let bobOnSecond = try await second.createKey(#""role":"user","user_id":"\#(bob)","team_id":"\#(team)""#).key
                    let q1 = "Which port does the staging database listen on?", q2 = "How many replicas does the billing service run?"
                    let q3 = "How do I rotate the signing key of the audit log?", paraphrase = "How can I rotate the signing key of the audit log?"
                    let q4 = "Who approves production firewall changes?"
                    func ask(_ gateway: GatewayClient, _ key: String, _ text: String) async throws -> String? {
                        let answer = try await gateway.chat(key: key, model: "m", text: text, extra: body)
                        #expect(answer.status == 200, "\(answer.body)")
                        return answer.headers["x-portcullis-cache"]
                    }
                    // Ann's questions, each held by both replicas (one stored it, the other filled its memory from Redis on Bob's hit).
                    #expect(try await ask(first, annKey, q1) == "miss")
                    #expect(try await ask(second, bobOnSecond, q1) == "hit")
                    #expect(try await ask(second, annOnSecond, q4) == "miss")
                    #expect(try await ask(first, bobOnFirst, q4) == "hit")
                    #expect(try await ask(first, annKey, q3) == "miss")
                    #expect(try await ask(second, bobOnSecond, q2) == "miss")   // Bob's own
                    try await Task.sleep(for: .seconds(2))   // the replicas exchange questions every 250 ms
                    #expect(try await ask(second, bobOnSecond, paraphrase) == "semantic-hit", "the second replica learnt Ann's question")
                    #expect(try await CacheTests.upstreamCalls(mock) == 4)
                    let annTag = CacheKey.subjectTag("user:" + ann), bobTag = CacheKey.subjectTag("user:" + bob)
                    let shared = try await Self.streamEntries(redis, subjects: [annTag, bobTag])
                    let annsShared = shared.filter { $0.subject == annTag }.map(\.question)
                    #expect(annsShared.sorted() == [q1, q3, q4].sorted(), "the stream holds Ann's questions under her tag: \(annsShared)")
                    let bobsShared = shared.filter { $0.subject == bobTag }.map(\.question)

                    let erased = try await first.call(.POST, "/admin/subjects/user:\(ann)/delete", key: "test-master-key")
                    #expect(erased.status == 200, "\(erased.body)")
                    // Here: three answers and three questions in memory; in Redis: three answers and three questions in the stream.
                    #expect((erased.json?.objectValue?["cache_entries_removed"]?.integerValue ?? 0) >= 9, "\(erased.body)")
                    try await Task.sleep(for: .seconds(1))   // the other replica hears of it through Redis
                    #expect(try await ask(second, bobOnSecond, paraphrase) == "miss", "the second replica forgot Ann's question")
                    #expect(try await ask(first, bobOnFirst, q1) == "miss", "gone from this replica and from Redis")
                    #expect(try await ask(second, bobOnSecond, q4) == "miss", "gone from the other replica's memory too")
                    #expect(try await ask(second, bobOnSecond, q2) == "hit", "Bob's own entry stays")
                    #expect(try await CacheTests.upstreamCalls(mock) == 7)
                    let members = try await redis.command(["SMEMBERS", .string("portcullis:cache:v1:subject:" + annTag)])
                    #expect(members.array?.isEmpty ?? true, "\(members)")
                    let remaining = try await Self.streamEntries(redis, subjects: [annTag, bobTag])
                    // Nothing of Ann's (q3 only she asked; Bob's later questions may be shared under his own tag by now).
                    #expect(!remaining.contains { $0.subject == annTag || $0.question == q3 }, "\(remaining)")
                    let bobsRemaining = remaining.filter { $0.subject == bobTag }.map(\.question)
                    #expect(bobsShared.allSatisfy(bobsRemaining.contains), "Bob's shared questions stay: before \(bobsShared), after \(bobsRemaining)")
                }
            } })
            await redis.shutdown()
            try outcome.get()
        }
    }

    /// The shared stream's entries of the given subjects' questions (earlier runs' are there too, under other users' tags).
    static func streamEntries(_ redis: RedisClient, subjects: Set<String>) async throws -> [(question: String, subject: String?)] {
        let reply = try await redis.command(["XRANGE", .string(SemanticSharing.streamKey), "-", "+"])
        return SemanticSharing.items(of: reply).compactMap { item in
            guard let question = item.fields["question"]?.string, let subject = item.subject, subjects.contains(subject) else { return nil }
            return (question, subject)
        }
    }

    @Test("configuration: an unknown embedding group or a missing model directory refuses to start with the reason")
    func configuration() async throws {
        #expect {
            try ConfigurationLoader.parse(yaml: """
                cache: { semantic: { embedding_model: nowhere } }
                models: [{ name: m, deployments: [{ provider: demo, model: demo }] }]
                """, environment: [:], source: "test")
        } throws: { "\($0)".contains("cache.semantic.embedding_model") }
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: "cache: { semantic: { threshold: 2 } }\nmodels: [{ name: m, deployments: [{ provider: demo, model: demo }] }]",
                                          environment: [:], source: "test")
        }
        let parsed = try ConfigurationLoader.parse(yaml: """
            cache: { semantic: { threshold: 0.9, timeout_ms: 150, max_entries: 5000 } }
            models: [{ name: m, cache: { semantic: false }, deployments: [{ provider: demo, model: demo }] }, { name: n, cache: { threshold: 0.97 }, deployments: [{ provider: demo, model: demo }] }]
            """, environment: [:], source: "test")
        #expect(parsed.cache.semantic?.timeoutSeconds == 0.15 && parsed.cache.semantic?.maximumEntries == 5000)
        #expect(!parsed.cache.settings(model: "m", policy: nil).semantic, "a model group can turn it off")
        #expect(parsed.cache.settings(model: "n", policy: nil).threshold == 0.97 && parsed.cache.settings(model: "x", policy: nil).threshold == 0.9)
        var missing = try ConfigurationLoader.parse(yaml: """
            storage: { database: "sqlite::memory:" }
            cache: { semantic: { model_directory: /nonexistent/model } }
            models: [{ name: m, deployments: [{ provider: demo, model: demo }] }]
            """, environment: [:], source: "test")
        missing.server.port = 0
        await #expect { try await withGateway(configuration: missing) { _ in } } throws: { error in
            "\(error)".contains("cache.semantic.model_directory") && "\(error)".contains("fetch-embedder")
        }
    }
}
