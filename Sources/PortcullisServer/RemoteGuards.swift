import Foundation
import Logging
import PortcullisConfig
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting

/// The cascade's costly tiers, built from the configuration: the LLM judge (a model of this
/// gateway, asked through its own routing, retries and fallbacks) and the external services
/// (Guardrails' adapters, each over its own `UpstreamJSONTransport`).
enum RemoteGuards {
    static func make(_ configuration: GatewayConfiguration.Guardrails, router: ModelRouter, http: UpstreamHTTPClient,
                     logger: Logger) throws -> [any InputGuard] {
        typealias Settings = GatewayConfiguration.Guardrails.Remote
        /// The guard with the settings' deadline, failure mode and when it is asked.
        func remote(_ name: String, _ settings: Settings, failureCategory: GuardCategory = .promptInjection,
                    ask: @escaping @Sendable (GuardInput) async throws -> [GuardFinding]) -> RemoteGuard {
            RemoteGuard(name: name, onlyWhenUncertain: settings.onlyWhenUncertain, timeout: .milliseconds(settings.timeoutMilliseconds),
                        failClosed: settings.failClosed, failureCategory: failureCategory, ask: ask)
        }
        /// Where a service is called, with the settings' deadline for the whole exchange.
        func target(_ name: String, _ settings: Settings, base: String, model: String = "", key: String? = nil) -> DeploymentTarget {
            let seconds = Double(settings.timeoutMilliseconds) / 1000
            return DeploymentTarget(name: name, provider: .openaiCompatible, upstreamModel: model, apiBase: base, apiKey: key,
                                    timeouts: UpstreamTimeouts(connect: 5, firstByte: seconds, total: seconds))
        }
        var guards: [any InputGuard] = []
        if let judge = configuration.llmJudge, let model = judge.model {
            guard router.groups[model] != nil else {
                throw ConfigurationError(source: "configuration", issues: [.init(path: "guardrails.llm_judge.model",
                                                                                 message: "no model group named '\(model)'")])
            }
            guards.append(remote("llm_judge", judge) { input in
                let request = JudgePrompt.request(model: model, input: input, id: FastRandom.hex(bytes: 6))
                let context = UpstreamContext(requestID: "judge-" + FastRandom.hex(bytes: 8), logger: logger)
                let answer = try await router.execute(model: model, logger: logger) { deployment in
                    try await deployment.adapter.chat(request, target: deployment.target, context: context)
                }
                return try JudgePrompt.findings(from: answer.value.choices.first?.message.content?.text ?? "")
            })
        }
        func transport(_ name: String, _ settings: Settings, base: String, signer: SigV4? = nil) -> UpstreamJSONTransport {
            UpstreamJSONTransport(target: target(name, settings, base: base), http: http, signer: signer, logger: logger)
        }
        if let moderation = configuration.openAIModeration {
            let adapter = OpenAIModeration(transport: transport("openai_moderation", moderation, base: moderation.apiBase ?? "https://api.openai.com"),
                                           model: moderation.model ?? "omni-moderation-latest", apiKey: moderation.apiKey)
            guards.append(remote("openai_moderation", moderation, failureCategory: .moderation) { input in try await adapter.findings(for: input) })
        }
        if let azure = configuration.azureContentSafety, let endpoint = azure.apiBase, let key = azure.apiKey {
            let adapter = AzureContentSafety(transport: transport("azure_content_safety", azure, base: endpoint), key: key,
                                             apiVersion: azure.apiVersion ?? "2024-09-01", severity: azure.severity)
            guards.append(remote("azure_content_safety", azure) { input in try await adapter.findings(for: input) })
        }
        if let bedrock = configuration.bedrockGuardrail, let region = bedrock.region, let id = bedrock.guardrailID,
           let keyID = bedrock.apiKey, let secret = bedrock.secretAccessKey {
            let signer = SigV4(accessKeyID: keyID, secretAccessKey: secret, sessionToken: bedrock.sessionToken, region: region, service: "bedrock")
            let base = bedrock.apiBase ?? "https://bedrock-runtime.\(region).amazonaws.com"
            let adapter = BedrockGuardrail(transport: transport("bedrock_guardrail", bedrock, base: base, signer: signer),
                                           guardrailID: id, version: bedrock.guardrailVersion)
            guards.append(remote("bedrock_guardrail", bedrock) { input in try await adapter.findings(for: input) })
        }
        return guards
    }
}

