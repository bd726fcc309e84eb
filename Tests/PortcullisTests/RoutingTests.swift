import Logging
import NIOCore
import PortcullisCore
@testable import PortcullisProviders
import PortcullisRouting
import Synchronization
import Testing

@Suite("Circuit breaker and retry policy")
struct CircuitBreakerTests {
    @Test("opens after N failures in the window, probes once when cooled down, closes on success")
    func lifecycle() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 3, window: 10, cooldown: 5))
        breaker.recordFailure(now: 0)
        breaker.recordFailure(now: 1)
        #expect(breaker.stateName == "closed")
        breaker.recordFailure(now: 2)
        #expect(breaker.stateName == "open")
        let admitted1 = breaker.admit(now: 6.9)
        #expect(!admitted1)
        let admitted2 = breaker.admit(now: 7)
        #expect(admitted2)
        #expect(breaker.stateName == "half_open")
        let admitted3 = breaker.admit(now: 7.1)
        #expect(!admitted3, "only one probe while half-open")
        breaker.recordSuccess(now: 8)
        #expect(breaker.stateName == "closed")
        let admitted4 = breaker.admit(now: 8)
        #expect(admitted4)
    }

    @Test("failures outside the window do not count; a failed probe reopens")
    func windowAndFailedProbe() {
        var breaker = CircuitBreaker(configuration: .init(failureThreshold: 2, window: 10, cooldown: 5))
        breaker.recordFailure(now: 0)
        breaker.recordFailure(now: 11)
        #expect(breaker.stateName == "closed")
        breaker.recordFailure(now: 12)
        #expect(breaker.stateName == "open")
        let admitted5 = breaker.admit(now: 17)
        #expect(admitted5)
        breaker.recordFailure(now: 17.5)
        #expect(breaker.stateName == "open")
        #expect(!breaker.isAvailable(now: 22))
        #expect(breaker.isAvailable(now: 22.5))
    }

    @Test("backoff grows exponentially with jitter, is capped, and honours Retry-After up to a limit")
    func backoff() {
        let policy = RetryPolicy(retries: 5, initialBackoff: 0.1, maximumBackoff: 1, maximumRetryAfter: 10)
        #expect(policy.delay(beforeRetry: 0, retryAfter: nil, random: 0) == 0.05)
        #expect(policy.delay(beforeRetry: 0, retryAfter: nil, random: 1) == 0.1)
        #expect(policy.delay(beforeRetry: 2, retryAfter: nil, random: 1) == 0.4)
        #expect(policy.delay(beforeRetry: 10, retryAfter: nil, random: 1) == 1)
        #expect(policy.delay(beforeRetry: 0, retryAfter: 3, random: 0.5) == 3)
        #expect(policy.delay(beforeRetry: 0, retryAfter: 30, random: 0.5) == nil)
    }
}

/// A provider whose calls succeed or fail as a script says, for exercising routing without I/O.
final class ScriptedProvider: ProviderAdapter, Sendable {
    let outcomes: Mutex<[UpstreamFailure.Reason?]>
    let calls = Atomic<Int>(0)

    init(_ outcomes: [UpstreamFailure.Reason?]) {
        self.outcomes = Mutex(outcomes)
    }

    func next(_ target: DeploymentTarget) throws {
        calls.add(1, ordering: .relaxed)
        let outcome = outcomes.withLock { $0.isEmpty ? nil : $0.removeFirst() }
        if let reason = outcome { throw UpstreamFailure(reason: reason, message: "scripted", deployment: target.name) }
    }

    func chat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> ChatCompletion {
        try next(target)
        return ChatCompletion(id: target.name, created: 0, model: target.upstreamModel, choices: [], usage: nil)
    }
    func streamChat(_ request: ChatRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<ChatChunk> {
        try next(target)
        return EventStream(elements: [])
    }
    func completion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue { .null }
    func streamCompletion(_ request: CompletionRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> EventStream<JSONValue> {
        EventStream(elements: [])
    }
    func embeddings(_ request: EmbeddingRequest, target: DeploymentTarget, context: UpstreamContext) async throws -> JSONValue { .null }
    func checkHealth(target: DeploymentTarget, context: UpstreamContext) async throws {}
}

@Suite("Model router")
struct ModelRouterTests {
    static func deployment(_ name: String, _ provider: ScriptedProvider, weight: Double = 1, threshold: Int = 5) -> Deployment {
        Deployment(target: DeploymentTarget(name: name, provider: .openaiCompatible, upstreamModel: name, apiBase: "http://unused"),
                   adapter: provider, weight: weight, breaker: .init(failureThreshold: threshold, window: 60, cooldown: 60))
    }

    static func call(_ router: ModelRouter, _ model: String = "m") async throws -> Routed<ChatCompletion> {
        let request = ChatRequest(model: model, messages: [ChatMessage(role: .user, content: .text("x"))])
        let context = UpstreamContext(requestID: "r", logger: testLogger)
        return try await router.execute(model: model, logger: context.logger) { deployment in
            try await deployment.adapter.chat(request, target: deployment.target, context: context)
        }
    }

    static func instant(_ router: ModelRouter) -> ModelRouter {
        var router = router
        router.sleep = { _ in }
        return router
    }

    @Test("retries a retryable failure on another deployment of the group")
    func retriesElsewhere() async throws {
        let bad = ScriptedProvider([.status(503), .status(503), .status(503)])
        let good = ScriptedProvider([])
        let router = Self.instant(ModelRouter(groups: [ModelGroup(name: "m", deployments: [Self.deployment("bad", bad, weight: 1000), Self.deployment("good", good, weight: 0.001)])],
                                              retryPolicy: RetryPolicy(retries: 2)))
        let routed = try await Self.call(router)
        #expect(routed.deployment.name == "good")
        #expect(routed.attempts == 2)
    }

    @Test("does not retry a client error (400) and surfaces it")
    func noRetryOnClientError() async throws {
        let provider = ScriptedProvider([.status(400)])
        let router = Self.instant(ModelRouter(groups: [ModelGroup(name: "m", deployments: [Self.deployment("a", provider)])]))
        await #expect(throws: GatewayError.self) { try await Self.call(router) }
        #expect(provider.calls.load(ordering: .relaxed) == 1)
    }

    @Test("falls back to the next group when every attempt failed")
    func fallback() async throws {
        let primary = ScriptedProvider([.connection, .connection, .connection])
        let secondary = ScriptedProvider([])
        let router = Self.instant(ModelRouter(groups: [
            ModelGroup(name: "m", deployments: [Self.deployment("p", primary)], fallbacks: ["f"]),
            ModelGroup(name: "f", deployments: [Self.deployment("s", secondary)]),
        ], retryPolicy: RetryPolicy(retries: 2)))
        let routed = try await Self.call(router)
        #expect(routed.group == "f")
        #expect(routed.attempts == 4)
        #expect(primary.calls.load(ordering: .relaxed) == 3)
    }

    @Test("an open circuit keeps traffic off a deployment; 503 with a stable code when nothing is left")
    func openCircuit() async throws {
        let provider = ScriptedProvider(Array(repeating: .status(500), count: 10))
        let router = Self.instant(ModelRouter(groups: [ModelGroup(name: "m", deployments: [Self.deployment("a", provider, threshold: 2)])],
                                              retryPolicy: RetryPolicy(retries: 5)))
        do {
            _ = try await Self.call(router)
            Issue.record("expected failure")
        } catch let error as GatewayError {
            #expect(error.statusCode == 502)
        }
        #expect(provider.calls.load(ordering: .relaxed) == 2, "the circuit opened after two failures")
        do {
            _ = try await Self.call(router)
            Issue.record("expected failure")
        } catch let error as GatewayError {
            #expect(error.statusCode == 503)
            #expect(error.code == .noHealthyDeployment)
        }
        #expect(provider.calls.load(ordering: .relaxed) == 2)
    }

    @Test("panic routing: when health checks marked every deployment down, the one that failed longest ago is tried, and said to be")
    func panicRouting() async throws {
        let older = Self.deployment("older", ScriptedProvider([]))
        let newer = Self.deployment("newer", ScriptedProvider([]))
        older.setHealth(false)
        try await Task.sleep(nanoseconds: 5_000_000)
        newer.setHealth(false)
        let router = Self.instant(ModelRouter(groups: [ModelGroup(name: "m", deployments: [newer, older])]))
        let routed = try await Self.call(router)
        #expect(routed.panic && routed.deployment.name == "older", "\(routed.deployment.name)")
        #expect(older.panicSelections.load(ordering: .relaxed) == 1)

        // The panic choice fails: the next one down is tried, not the same one again.
        let failing = Self.deployment("failing", ScriptedProvider([.status(503)]))
        let other = Self.deployment("other", ScriptedProvider([]))
        failing.setHealth(false)
        try await Task.sleep(nanoseconds: 5_000_000)
        other.setHealth(false)
        let retrying = Self.instant(ModelRouter(groups: [ModelGroup(name: "m", deployments: [other, failing])], retryPolicy: RetryPolicy(retries: 2)))
        let second = try await Self.call(retrying)
        #expect(second.panic && second.deployment.name == "other" && second.attempts == 2)

        // Once one is healthy again, routing is ordinary.
        newer.setHealth(true)
        let healthy = try await Self.call(router)
        #expect(!healthy.panic && healthy.deployment.name == "newer")
    }

    @Test("unknown model: 404 listing what exists")
    func unknownModel() async throws {
        let router = ModelRouter(groups: [ModelGroup(name: "b", deployments: []), ModelGroup(name: "a", deployments: [])])
        do {
            _ = try await Self.call(router, "zzz")
            Issue.record("expected failure")
        } catch let error as GatewayError {
            #expect(error.statusCode == 404)
            #expect(error.message.contains("a, b"))
        }
    }

    @Test("weights divide traffic")
    func weights() async throws {
        let heavy = ScriptedProvider([])
        let light = ScriptedProvider([])
        let router = ModelRouter(groups: [ModelGroup(name: "m", deployments: [Self.deployment("h", heavy, weight: 9), Self.deployment("l", light, weight: 1)])])
        for _ in 0..<1000 { _ = try await Self.call(router) }
        let share = Double(heavy.calls.load(ordering: .relaxed)) / 1000
        #expect(share > 0.82 && share < 0.97, "heavy share \(share)")
    }
}

@Suite("Upstream connection state")
struct UpstreamConnectionStateTests {
    @Test("an idle connection is fresh within the idle timeout, stale after it, and fresh (never a trap) when another thread returned it after `now` was read")
    func idleFreshness() {
        let timeout = TimeAmount.seconds(55)
        #expect(UpstreamConnectionPool.isFresh(lastUsed: 1_000, now: 1_000 + 54_000_000_000, timeout: timeout))
        #expect(!UpstreamConnectionPool.isFresh(lastUsed: 1_000, now: 1_000 + 56_000_000_000, timeout: timeout))
        #expect(UpstreamConnectionPool.isFresh(lastUsed: 2_000_000, now: 1_000_000, timeout: timeout))
        #expect(UpstreamConnectionPool.isFresh(lastUsed: .max, now: 0, timeout: timeout))
    }

    @Test("an exchange goes idle → awaiting head → streaming → idle; a connection the upstream does not keep alive is closed and not reused")
    func exchangeLifecycle() {
        var state = UpstreamConnectionState<Int>()
        #expect(state.isIdle)
        let onClosedChannel = state.start(1, channelActive: false)
        #expect(!onClosedChannel, "a closed channel takes no exchange")
        let started = state.start(1, channelActive: true)
        let second = state.start(2, channelActive: true)
        #expect(started && !second, "one exchange at a time")
        #expect(state.bodyReceived() == nil, "no body before the head")
        let informational = state.headReceived(status: 100, keepAlive: true)
        #expect(informational == nil, "an informational head is skipped")
        let head = state.headReceived(status: 200, keepAlive: true)
        #expect(head == 1)
        #expect(state.bodyReceived() == 1)
        let end = state.endReceived(channelActive: true)
        #expect(end?.exchange == 1 && end?.reusable == true && end?.close == false)
        #expect(state.isIdle)

        let next = state.start(3, channelActive: true)
        _ = state.headReceived(status: 200, keepAlive: false)
        let closing = state.endReceived(channelActive: true)
        #expect(next && closing?.reusable == false && closing?.close == true)
    }

    @Test("a failure closes the connection and says whether the caller still waited for the head; a reader that leaves ends the exchange")
    func failures() {
        var waiting = UpstreamConnectionState<Int>()
        _ = waiting.start(1, channelActive: true)
        let failed = waiting.fail()
        #expect(failed?.exchange == 1 && failed?.awaitingHead == true)
        let reused = waiting.start(2, channelActive: true)
        #expect(!waiting.isIdle && !reused, "a failed connection is never used again")
        let again = waiting.fail()
        #expect(again == nil)

        var streaming = UpstreamConnectionState<Int>()
        _ = streaming.start(1, channelActive: true)
        _ = streaming.headReceived(status: 200, keepAlive: true)
        let streamFailure = streaming.fail()
        #expect(streamFailure?.awaitingHead == false)

        var leaving = UpstreamConnectionState<Int>()
        _ = leaving.start(1, channelActive: true)
        let early = leaving.readerWentAway()
        #expect(early == nil, "no reader before the head")
        _ = leaving.headReceived(status: 200, keepAlive: true)
        let left = leaving.readerWentAway()
        #expect(left == 1)
        let lateEnd = leaving.endReceived(channelActive: true)
        #expect(lateEnd == nil, "a late end after the reader left does nothing")

        var idle = UpstreamConnectionState<Int>()
        let idleFailure = idle.fail()
        #expect(idleFailure == nil && !idle.isIdle, "an idle connection that failed is closed")
    }
}
