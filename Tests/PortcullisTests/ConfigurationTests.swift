import PortcullisAccess
import PortcullisConfig
import PortcullisCore
import PortcullisRouting
import PortcullisStorage
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    static let example = """
    server: { host: 0.0.0.0, port: 4000 }
    routing:
      retries: 3
      circuit_breaker: { failure_threshold: 4, cooldown_seconds: 10 }
      health_check: { interval_seconds: 15 }
    models:
      - name: gpt-4o                      # what clients ask for
        deployments:
          - { provider: openai, model: gpt-4o, api_key: "${OPENAI_API_KEY}", weight: 3, price: { input_per_million: 2.5, output_per_million: 10 } }
          - { provider: azure, model: gpt-4o, api_base: "https://x.openai.azure.com",
              api_version: "2024-10-21", api_key: "${AZURE_KEY}", weight: 1 }
        fallbacks: [claude-sonnet]
      - name: claude-sonnet
        deployments:
          - { provider: anthropic, model: claude-sonnet-4-5, api_key: "${ANTHROPIC_API_KEY:-none}" }
      - name: local-llama
        deployments:
          - { provider: openai_compatible, model: llama-3.1-8b, api_base: "http://vllm:8000/v1", timeouts: { first_byte_seconds: 2 } }
    """

    @Test("reads the documented example with secrets from the environment")
    func example() throws {
        let configuration = try ConfigurationLoader.parse(yaml: Self.example, environment: ["OPENAI_API_KEY": "sk-1", "AZURE_KEY": "az-2"])
        #expect(configuration.server.host == "0.0.0.0")
        #expect(configuration.routing.retries == 3)
        #expect(configuration.routing.circuitFailureThreshold == 4)
        #expect(configuration.models.map(\.name) == ["gpt-4o", "claude-sonnet", "local-llama"])
        #expect(configuration.models[0].deployments[0].apiKey == "sk-1")
        #expect(configuration.models[0].deployments[0].outputPricePerMillion == 10)
        #expect(configuration.models[0].deployments[1].apiKey == "az-2")
        #expect(configuration.models[1].deployments[0].apiKey == "none")
        #expect(configuration.models[2].deployments[0].timeouts.firstByte == 2)
        #expect(configuration.models[2].deployments[0].timeouts.total == 600)
        #expect(configuration.models[0].fallbacks == ["claude-sonnet"])
    }

    @Test("reports every problem with its key path and line")
    func errors() throws {
        let yaml = """
        server:
          port: 99999
        models:
          - name: a
            deployments:
              - provider: opnai
                model: x
                api_key: "${ALSO_MISSING}"
              - provider: azure
                model: y
            fallbacks: [nowhere]
          - name: b
            deployments:
              - { provider: openai, model: z, api_key: "${MISSING_KEY}", wieght: 2 }
          - name: a
            deployments: [{ provider: demo }]
        """
        do {
            _ = try ConfigurationLoader.parse(yaml: yaml, environment: [:])
            Issue.record("accepted an invalid configuration")
        } catch let error as ConfigurationError {
            let byPath = Dictionary(error.issues.map { ($0.path, $0) }, uniquingKeysWith: { first, _ in first })
            #expect(byPath["server.port"]?.line == 2)
            #expect(byPath["models[0].deployments[0].provider"]?.line == 6)
            #expect(byPath["models[0].deployments[0].provider"]?.message.contains("did you mean 'openai'") == true)
            #expect(byPath["models[0].deployments[1].api_base"] != nil)
            #expect(byPath["models[0].deployments[0].api_key"]?.message.contains("ALSO_MISSING") == true,
                    "the rest of a deployment with an unknown provider is still read")
            #expect(byPath["models[0].fallbacks[0]"]?.line == 11)
            #expect(byPath["models[1].deployments[0].api_key"]?.message.contains("MISSING_KEY") == true)
            #expect(byPath["models[1].deployments[0].api_key"]?.line == 14)
            #expect(byPath["models[1].deployments[0].wieght"]?.message.contains("did you mean 'weight'") == true)
            #expect(error.description.contains("line 6"))
            #expect(byPath["models[2].name"]?.line == 15, "duplicate names point at the second one")
        }
    }

    @Test("lease settings: defaults, 0 turns leasing off, out-of-range values are refused with their key")
    func leaseSettings() throws {
        let models = "models:\n  - name: a\n    deployments: [{ provider: demo }]\n"
        let defaults = try ConfigurationLoader.parse(yaml: models, environment: [:])
        #expect(defaults.storage.leaseFraction == 16 && defaults.storage.leaseSeconds == 1)
        let off = try ConfigurationLoader.parse(yaml: "storage: { lease_fraction: 0, lease_seconds: 2.5 }\n" + models, environment: [:])
        #expect(off.storage.leaseFraction == 0 && off.storage.leaseSeconds == 2.5)
        do {
            _ = try ConfigurationLoader.parse(yaml: "storage: { lease_fraction: -1, lease_seconds: 0 }\n" + models, environment: [:])
            Issue.record("accepted a negative lease fraction")
        } catch let error as ConfigurationError {
            let paths = Set(error.issues.map(\.path))
            #expect(paths.contains("storage.lease_fraction") && paths.contains("storage.lease_seconds"), "\(paths)")
        }
    }

    @Test("YAML syntax errors carry the line")
    func syntax() {
        do {
            _ = try ConfigurationLoader.parse(yaml: "models:\n  - name: [unclosed\n", environment: [:])
            Issue.record("accepted broken YAML")
        } catch let error as ConfigurationError {
            #expect(error.issues.first?.line != nil)
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("the embedded default serves the demo model and adds providers whose keys are set")
    func embeddedDefault() {
        let bare = ConfigurationLoader.embeddedDefault(environment: [:])
        #expect(bare.models.map(\.name) == ["demo"])
        #expect(bare.server.port == 4000)
        #expect(bare.server.host == "127.0.0.1")
        #expect(bare.auth.masterKey == nil)
        let withKeys = ConfigurationLoader.embeddedDefault(environment: [
            "OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "a", "AZURE_OPENAI_API_KEY": "z",
            "AZURE_OPENAI_ENDPOINT": "https://e.openai.azure.com", "AZURE_OPENAI_DEPLOYMENTS": "prod-gpt4o", "PORTCULLIS_MASTER_KEY": "mk",
        ])
        let names = Set(withKeys.models.map(\.name))
        #expect(names.isSuperset(of: ["demo", "gpt-4o", "claude-sonnet-4-5", "prod-gpt4o"]))
        #expect(withKeys.auth.masterKey == "mk")
    }
}
