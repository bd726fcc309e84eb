import Foundation
import PortcullisConfig
import PortcullisCore
import PortcullisProviders
import PortcullisRouting
import PortcullisServer
import Testing

@Suite("Configuration hot reload", .serialized)
struct ReloadTests {
    static let guardsOff = "guardrails: { default: { input: [validation] } }\n"
    static let masking = "guardrails: { default: { input: [validation, pii], pii: mask } }\n"

    static func models(_ names: [String], tokensPerSecond: Int = 0) -> String {
        "models:\n" + names.map { "  - { name: \($0), deployments: [{ provider: demo, tokens_per_second: \(tokensPerSecond) }] }\n" }.joined()
    }

    /// `/v1/models` ids.
    static func modelIDs(_ client: GatewayClient) async throws -> [String] {
        let listed = try await client.get("/v1/models")
        return (listed.json?.objectValue?["data"]?.arrayValue ?? []).compactMap { $0.objectValue?["id"]?.stringValue }.sorted()
    }

    /// A sample of `/metrics` whose line starts with `prefix` (labels included).
    static func sample(_ client: GatewayClient, _ prefix: String) async throws -> Double? {
        let text = try await client.get("/metrics").body
        for line in text.split(separator: "\n") where line.hasPrefix(prefix + " ") {
            return Double(line.dropFirst(prefix.count + 1))
        }
        return nil
    }

    static func write(_ yaml: String, to file: URL) throws {
        // Written beside the file and renamed over it, as an editor or a ConfigMap update does: never half a file.
        let staging = file.appendingPathExtension("new")
        try yaml.write(to: staging, atomically: false, encoding: .utf8)
        guard rename(staging.path, file.path) == 0 else { throw TestFailure("rename \(staging.path): errno \(errno)") }
    }

    @Test("SIGHUP applies new models and guard policies without dropping a stream; a bad file is refused with its key and counted")
    func reloadsOnHangup() async throws {
        let gateway = try await GatewayProcess(yaml: Self.guardsOff + Self.models(["alpha"], tokensPerSecond: 8), logLevel: "notice",
                                               arguments: ["--config-watch-seconds", "0"])
        defer { gateway.stop() }
        let client = gateway.client
        #expect(try await Self.modelIDs(client) == ["alpha"])
        #expect(try await Self.sample(client, #"portcullis_config_last_reload_successful"#) == 1)

        // A stream on `alpha` begins (the demo model answers at 8 tokens a second: about two seconds)…
        let stream = Task {
            try await client.post("/v1/chat/completions", #"{"model":"alpha","stream":true,"messages":[{"role":"user","content":"keep going"}]}"#)
        }
        try await Task.sleep(nanoseconds: 300_000_000)

        // …and the configuration drops `alpha` for `beta` and masks personal data: SIGHUP applies it.
        try Self.write(Self.masking + Self.models(["beta"]), to: gateway.configurationFile)
        // With the watch off, nothing changes until the signal.
        try await Task.sleep(nanoseconds: 500_000_000)
        #expect(try await Self.modelIDs(client) == ["alpha"])
        kill(gateway.process.processIdentifier, SIGHUP)
        #expect(try await eventually(seconds: 10) { try await Self.modelIDs(client) == ["beta"] })
        #expect(gateway.process.isRunning, "SIGHUP must not stop the gateway")
        let masked = try await client.post("/v1/chat/completions",
                                           #"{"model":"beta","messages":[{"role":"user","content":"mail ivan@example.ru"}]}"#)
        #expect(masked.status == 200, "\(masked.body)")
        #expect(!masked.body.contains("ivan@example.ru"), "the reloaded policy masks the address: \(masked.body)")
        let gone = try await client.post("/v1/chat/completions", #"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(gone.status == 404 && gone.errorCode == "model_not_found", "\(gone.status) \(gone.body)")

        // The stream begun before the reload finished on the deployment it began with.
        let streamed = try await stream.value
        #expect(streamed.status == 200)
        #expect(streamed.sseData.last == "[DONE]", "\(streamed.body.suffix(300))")
        let text = streamed.sseData.dropLast().compactMap { chunk in
            (try? JSONParser.parse(chunk))?.objectValue?["choices"]?.arrayValue?.first?.objectValue?["delta"]?.objectValue?["content"]?.stringValue
        }.joined()
        #expect(text.hasSuffix("You said: keep going"), "\(text)")
        #expect(try await Self.sample(client, #"portcullis_config_reloads_total{outcome="applied"}"#) == 1)
        #expect(gateway.log.contains("configuration reloaded"), "\(gateway.log)")

        // A file that does not validate: refused with its key path and line, counted, and the running configuration stays.
        try Self.write(Self.guardsOff + "models:\n  - { name: gamma, deployments: [{ provider: nosuch }] }\n", to: gateway.configurationFile)
        kill(gateway.process.processIdentifier, SIGHUP)
        #expect(try await eventually(seconds: 10) {
            try await Self.sample(client, #"portcullis_config_reloads_total{outcome="failed"}"#) == 1
        })
        #expect(try await Self.sample(client, "portcullis_config_last_reload_successful") == 0)
        let log = gateway.log
        #expect(log.contains("configuration reload refused") && log.contains("models[0].deployments[0].provider") && log.contains("line=3"),
                "\(log)")
        #expect(try await Self.modelIDs(client) == ["beta"])
        #expect(try await client.post("/v1/chat/completions", #"{"model":"beta","messages":[{"role":"user","content":"hi"}]}"#).status == 200)
    }

    @Test("a changed file is reloaded by the watch alone; one that cannot be built is refused, and restart-only sections are named, not applied")
    func reloadsOnChange() async throws {
        let gateway = try await GatewayProcess(yaml: Self.masking + Self.models(["beta"]), logLevel: "notice",
                                               arguments: ["--config-watch-seconds", "0.2"])
        defer { gateway.stop() }
        let client = gateway.client

        // A file that parses but cannot be built (a tokenizer that is not there) is refused the same way.
        try Self.write("guardrails: { tokenizer: /nonexistent/tokenizer.json }\n" + Self.models(["gamma"]), to: gateway.configurationFile)
        #expect(try await eventually(seconds: 10) {
            try await Self.sample(client, #"portcullis_config_reloads_total{outcome="failed"}"#) == 1
        })
        #expect(gateway.log.contains("key=guardrails.tokenizer"), "\(gateway.log)")
        #expect(try await Self.modelIDs(client) == ["beta"])
        let masked = try await client.post("/v1/chat/completions", #"{"model":"beta","messages":[{"role":"user","content":"mail ivan@example.ru"}]}"#)
        #expect(masked.status == 200 && !masked.body.contains("ivan@example.ru"), "the running policy still masks: \(masked.body)")

        // A good file, seen by the watch alone; and a section that needs a restart is named, not applied.
        try Self.write(Self.guardsOff + "server: { max_body_bytes: 4096 }\n" + Self.models(["beta", "gamma"]), to: gateway.configurationFile)
        #expect(try await eventually(seconds: 10) { try await Self.modelIDs(client) == ["beta", "gamma"] })
        #expect(try await Self.sample(client, "portcullis_config_last_reload_successful") == 1)
        #expect(try await eventually(seconds: 5) { gateway.log.contains("key=server") }, "\(gateway.log)")
        let plain = try await client.post("/v1/chat/completions", #"{"model":"gamma","messages":[{"role":"user","content":"mail ivan@example.ru"}]}"#)
        #expect(plain.body.contains("ivan@example.ru"), "the masking policy is gone: \(plain.body)")
        #expect(try await Self.sample(client, #"portcullis_config_reloads_total{outcome="applied"}"#) == 1)
        // The restart-only change was not applied: the running body limit is still the default.
        let large = try await client.post("/v1/chat/completions",
                                          #"{"model":"gamma","messages":[{"role":"user","content":"\#(String(repeating: "a", count: 8000))"}]}"#)
        #expect(large.status == 200, "\(large.status) \(large.body.prefix(300))")
    }

    @Test("a reload keeps an unchanged deployment as it was, its open circuit included, and replaces a changed one")
    func keepsUnchangedDeployments() throws {
        let adapter: @Sendable (ProviderKind, DeploymentConfiguration) -> any ProviderAdapter = { _, settings in
            DemoProvider(tokensPerSecond: settings.tokensPerSecond)
        }
        var first = GatewayConfiguration()
        first.models = [.init(name: "a", deployments: [.init(provider: .demo, model: "demo")]),
                        .init(name: "b", deployments: [.init(provider: .demo, model: "demo")])]
        let before = ModelRouter(models: first.models, routing: first.routing, adapter: adapter)
        let kept = try #require(before.groups["a"]?.deployments.first)
        for _ in 0..<20 { kept.record(UpstreamFailure(reason: .status(503), message: "down", deployment: kept.name)) }
        #expect(kept.circuitState == "open")

        var second = first
        second.models[1].deployments[0].tokensPerSecond = 50
        let after = ModelRouter(models: second.models, routing: second.routing, keeping: before, adapter: adapter)
        #expect(after.groups["a"]?.deployments.first === kept, "unchanged: the same deployment, circuit and health")
        #expect(after.groups["a"]?.deployments.first?.circuitState == "open")
        #expect(after.groups["b"]?.deployments.first !== before.groups["b"]?.deployments.first, "changed: a new deployment")
        #expect(after.groups["b"]?.deployments.first?.circuitState == "closed")

        var routing = second.routing
        routing.circuitFailureThreshold += 1
        let rebuilt = ModelRouter(models: second.models, routing: routing, keeping: after, adapter: adapter)
        #expect(rebuilt.groups["a"]?.deployments.first !== kept, "a new breaker configuration builds new deployments")
    }
}
