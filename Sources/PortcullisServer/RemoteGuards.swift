import Logging
import PortcullisConfig
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting

/// The cascade's costly tiers, built from the configuration: the LLM judge (a model of this
/// gateway, asked through its own routing, retries and fallbacks) and OpenAI's moderations
/// endpoint.
enum RemoteGuards {
    static func make(_ configuration: GatewayConfiguration.Guardrails, router: ModelRouter, http: UpstreamHTTPClient,
                     logger: Logger) throws -> [any InputGuard] {
        var guards: [any InputGuard] = []
        if let judge = configuration.llmJudge, let model = judge.model {
            guard router.groups[model] != nil else {
                throw ConfigurationError(source: "configuration", issues: [.init(path: "guardrails.llm_judge.model",
                                                                                 message: "no model group named '\(model)'")])
            }
            guards.append(RemoteGuard(name: "llm_judge", onlyWhenUncertain: judge.onlyWhenUncertain,
                                      timeout: .milliseconds(judge.timeoutMilliseconds), failClosed: judge.failClosed) { input in
                let request = JudgePrompt.request(model: model, input: input, id: FastRandom.hex(bytes: 6))
                let context = UpstreamContext(requestID: "judge-" + FastRandom.hex(bytes: 8), logger: logger)
                let answer = try await router.execute(model: model, logger: logger) { deployment in
                    try await deployment.adapter.chat(request, target: deployment.target, context: context)
                }
                return try JudgePrompt.findings(from: answer.value.choices.first?.message.content?.text ?? "")
            })
        }
        if let moderation = configuration.openAIModeration {
            let target = DeploymentTarget(name: "openai_moderation", provider: .openai, upstreamModel: moderation.model ?? "omni-moderation-latest",
                                          apiBase: moderation.apiBase ?? "https://api.openai.com", apiKey: moderation.apiKey,
                                          timeouts: UpstreamTimeouts(connect: 5, firstByte: Double(moderation.timeoutMilliseconds) / 1000,
                                                                     total: Double(moderation.timeoutMilliseconds) / 1000))
            guards.append(RemoteGuard(name: "openai_moderation", onlyWhenUncertain: moderation.onlyWhenUncertain,
                                      timeout: .milliseconds(moderation.timeoutMilliseconds), failClosed: moderation.failClosed,
                                      failureCategory: .moderation) { input in
                try await OpenAIModeration.findings(for: input, target: target, http: http, logger: logger)
            })
        }
        return guards
    }
}

/// OpenAI's moderations API (`POST /v1/moderations`): every untrusted segment in one call
/// (`input` as a list); a flagged result becomes a moderation finding per flagged category,
/// high risk at a category score of 0.8 or more, medium below.
enum OpenAIModeration {
    static func findings(for input: GuardInput, target: DeploymentTarget, http: UpstreamHTTPClient, logger: Logger) async throws -> [GuardFinding] {
        let indices = input.segments.indices.filter { !input.segments[$0].isTrusted }
        guard !indices.isEmpty else { return [] }
        let body: JSONValue = .object(["model": .string(target.upstreamModel),
                                       "input": .array(indices.map { .string(input.segments[$0].text) })])
        var headers: [(String, String)] = [("content-type", "application/json")]
        if let key = target.apiKey { headers.append(("authorization", "Bearer \(key)")) }
        let context = UpstreamContext(requestID: "moderation-" + FastRandom.hex(bytes: 8), logger: logger)
        let response = try await http.sendJSON(url: joinURL(target.apiBase, "/v1/moderations"), headers: headers, body: body,
                                               target: target, context: context)
        guard let results = response.objectValue?["results"]?.arrayValue, results.count == indices.count else {
            throw UpstreamFailure(reason: .malformed, message: "moderations answer without one result per input", deployment: target.name)
        }
        var findings: [GuardFinding] = []
        for (segment, result) in zip(indices, results) {
            guard let object = result.objectValue, object["flagged"]?.boolValue == true else { continue }
            let categories = object["categories"]?.objectValue ?? JSONObject()
            let scores = object["category_scores"]?.objectValue ?? JSONObject()
            for (name, flagged) in categories where flagged.boolValue == true {
                let score = scores[name]?.doubleValue ?? 1
                findings.append(GuardFinding(guardName: "openai_moderation", category: .moderation, risk: score >= 0.8 ? .high : .medium,
                                             score: score, reason: "OpenAI moderation: \(name)", segment: segment))
            }
        }
        return findings
    }
}
