import Foundation
import Logging
import NIOCore
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
        if let moderation = configuration.openAIModeration {
            let service = target("openai_moderation", moderation, base: moderation.apiBase ?? "https://api.openai.com",
                                 model: moderation.model ?? "omni-moderation-latest", key: moderation.apiKey)
            guards.append(remote("openai_moderation", moderation, failureCategory: .moderation) { input in
                try await OpenAIModeration.findings(for: input, target: service, http: http, logger: logger)
            })
        }
        if let azure = configuration.azureContentSafety, let endpoint = azure.apiBase, let key = azure.apiKey {
            let adapter = AzureContentSafety(target: target("azure_content_safety", azure, base: endpoint), key: key,
                                             apiVersion: azure.apiVersion ?? "2024-09-01", severity: azure.severity)
            guards.append(remote("azure_content_safety", azure) { input in try await adapter.findings(for: input, http: http, logger: logger) })
        }
        if let bedrock = configuration.bedrockGuardrail, let region = bedrock.region, let id = bedrock.guardrailID,
           let keyID = bedrock.apiKey, let secret = bedrock.secretAccessKey {
            let base = bedrock.apiBase ?? "https://bedrock-runtime.\(region).amazonaws.com"
            let adapter = BedrockGuardrail(target: target("bedrock_guardrail", bedrock, base: base), guardrailID: id, version: bedrock.guardrailVersion,
                                           signer: SigV4(accessKeyID: keyID, secretAccessKey: secret, sessionToken: bedrock.sessionToken,
                                                         region: region, service: "bedrock"))
            guards.append(remote("bedrock_guardrail", bedrock) { input in try await adapter.findings(for: input, http: http, logger: logger) })
        }
        return guards
    }
}

/// Azure AI Content Safety: Prompt Shields (`text:shieldPrompt`: the user's text as
/// `userPrompt`, tool results and other untrusted text as `documents`) and text analysis
/// (`text:analyze`, each untrusted segment in pieces of at most 10,000 characters, four
/// severity levels), asked together. An attack is a high-risk prompt-injection finding; a
/// category at or above the configured severity a high-risk moderation finding, below it a
/// medium one.
struct AzureContentSafety {
    let target: DeploymentTarget
    let key: String
    let apiVersion: String
    let severity: Int

    func findings(for input: GuardInput, http: UpstreamHTTPClient, logger: Logger) async throws -> [GuardFinding] {
        let untrusted = input.segments.indices.filter { !input.segments[$0].isTrusted }
        guard !untrusted.isEmpty else { return [] }
        let user = untrusted.filter { input.segments[$0].role == .user }
        let documents = untrusted.filter { input.segments[$0].role != .user }
        let headers = [("content-type", "application/json"), ("ocp-apim-subscription-key", key)]
        let context = UpstreamContext(requestID: "content-safety-" + FastRandom.hex(bytes: 8), logger: logger)
        let shieldBody: JSONValue = .object([
            "userPrompt": .string(user.map { input.segments[$0].text }.joined(separator: "\n\n")),
            "documents": .array(documents.map { .string(input.segments[$0].text) }),
        ])
        async let shield = http.sendJSON(url: joinURL(target.apiBase, "/contentsafety/text:shieldPrompt?api-version=\(apiVersion)"),
                                         headers: headers, body: shieldBody, target: target, context: context)
        var analyses: [(segment: Int, answer: JSONValue)] = []
        for segment in untrusted {
            let text = input.segments[segment].text
            var start = text.startIndex
            while start < text.endIndex {
                let end = text.index(start, offsetBy: 10_000, limitedBy: text.endIndex) ?? text.endIndex
                let body: JSONValue = .object(["text": .string(String(text[start..<end])),
                                               "categories": .array(["Hate", "SelfHarm", "Sexual", "Violence"].map(JSONValue.string)),
                                               "outputType": "FourSeverityLevels"])
                let answer = try await http.sendJSON(url: joinURL(target.apiBase, "/contentsafety/text:analyze?api-version=\(apiVersion)"),
                                                     headers: headers, body: body, target: target, context: context)
                analyses.append((segment, answer))
                start = end
            }
        }
        var findings: [GuardFinding] = []
        let shielded = try await shield
        guard let shieldObject = shielded.objectValue, shieldObject["userPromptAnalysis"] != nil || shieldObject["documentsAnalysis"] != nil else {
            throw UpstreamFailure(reason: .malformed, message: "shieldPrompt answer without analyses", deployment: target.name)
        }
        if shieldObject["userPromptAnalysis"]?.objectValue?["attackDetected"]?.boolValue == true {
            findings.append(GuardFinding(guardName: "azure_content_safety", category: .promptInjection, risk: .high, score: 1,
                                         reason: "Azure Prompt Shields: user prompt attack", segment: user.first))
        }
        for (index, analysis) in (shieldObject["documentsAnalysis"]?.arrayValue ?? []).enumerated()
            where analysis.objectValue?["attackDetected"]?.boolValue == true {
            findings.append(GuardFinding(guardName: "azure_content_safety", category: .promptInjection, risk: .high, score: 1,
                                         reason: "Azure Prompt Shields: document attack", segment: documents.indices.contains(index) ? documents[index] : nil))
        }
        for (segment, answer) in analyses {
            guard let categories = answer.objectValue?["categoriesAnalysis"]?.arrayValue else {
                throw UpstreamFailure(reason: .malformed, message: "text:analyze answer without categoriesAnalysis", deployment: target.name)
            }
            for category in categories.compactMap(\.objectValue) {
                let level = Int(category["severity"]?.integerValue ?? 0)
                guard level > 0, let name = category["category"]?.stringValue else { continue }
                findings.append(GuardFinding(guardName: "azure_content_safety", category: .moderation, risk: level >= severity ? .high : .medium,
                                             score: Double(level) / 7, reason: "Azure Content Safety: \(name) severity \(level)", segment: segment))
            }
        }
        return findings
    }
}

/// AWS Bedrock ApplyGuardrail (`POST /guardrail/{id}/version/{version}/apply`, source INPUT,
/// every untrusted segment a text block), signed with SigV4 for the `bedrock` service. When
/// the guardrail intervenes, each blocked assessment (content filters — a prompt attack is a
/// prompt-injection finding, the rest moderation —, denied topics, words, sensitive
/// information) is a high-risk finding.
struct BedrockGuardrail {
    let target: DeploymentTarget
    let guardrailID: String
    let version: String
    let signer: SigV4

    func findings(for input: GuardInput, http: UpstreamHTTPClient, logger: Logger) async throws -> [GuardFinding] {
        let untrusted = input.segments.indices.filter { !input.segments[$0].isTrusted }
        guard !untrusted.isEmpty else { return [] }
        let body: JSONValue = .object([
            "source": "INPUT",
            "content": .array(untrusted.map { .object(["text": .object(["text": .string(input.segments[$0].text)])]) }),
        ])
        let bytes = Array(JSONWriter.buffer(body).readableBytesView)
        let path = "/guardrail/\(SigV4.encode(guardrailID))/version/\(SigV4.encode(version))/apply"
        let url = joinURL(target.apiBase, path)
        guard let host = URLComponents(string: url).flatMap({ components in
            components.host.map { host in components.port.map { "\(host):\($0)" } ?? host }
        }) else {
            throw UpstreamFailure(reason: .malformed, message: "bedrock_guardrail api_base has no host", deployment: target.name)
        }
        let signedPath = URLComponents(string: url)?.percentEncodedPath ?? path
        var headers = [("content-type", "application/json"), ("host", host)]
        headers += signer.sign(method: "POST", path: signedPath, query: "", headers: headers, body: bytes, date: Date())
        let context = UpstreamContext(requestID: "bedrock-guardrail-" + FastRandom.hex(bytes: 8), logger: logger)
        let answer = try await http.sendJSON(url: url, headers: headers.filter { $0.0 != "host" }, body: body, target: target, context: context)
        guard let object = answer.objectValue, let action = object["action"]?.stringValue else {
            throw UpstreamFailure(reason: .malformed, message: "ApplyGuardrail answer without action", deployment: target.name)
        }
        guard action == "GUARDRAIL_INTERVENED" else { return [] }
        var findings: [GuardFinding] = []
        func add(_ category: GuardCategory, _ reason: String) {
            findings.append(GuardFinding(guardName: "bedrock_guardrail", category: category, risk: .high, score: 1, reason: "Bedrock guardrail: " + reason))
        }
        for assessment in object["assessments"]?.arrayValue?.compactMap(\.objectValue) ?? [] {
            for filter in assessment["contentPolicy"]?.objectValue?["filters"]?.arrayValue?.compactMap(\.objectValue) ?? []
                where filter["action"]?.stringValue == "BLOCKED" {
                let type = filter["type"]?.stringValue ?? "content"
                add(type == "PROMPT_ATTACK" ? .promptInjection : .moderation, type.lowercased())
            }
            for topic in assessment["topicPolicy"]?.objectValue?["topics"]?.arrayValue?.compactMap(\.objectValue) ?? []
                where topic["action"]?.stringValue == "BLOCKED" {
                add(.moderation, "denied topic \(topic["name"]?.stringValue ?? "")")
            }
            for key in ["customWords", "managedWordLists"] {
                for word in assessment["wordPolicy"]?.objectValue?[key]?.arrayValue?.compactMap(\.objectValue) ?? []
                    where word["action"]?.stringValue == "BLOCKED" {
                    add(.moderation, "blocked word")
                }
            }
            for key in ["piiEntities", "regexes"] {
                for entity in assessment["sensitiveInformationPolicy"]?.objectValue?[key]?.arrayValue?.compactMap(\.objectValue) ?? []
                    where ["BLOCKED", "ANONYMIZED"].contains(entity["action"]?.stringValue ?? "") {
                    add(.pii, "sensitive information \(entity["type"]?.stringValue ?? entity["name"]?.stringValue ?? "")")
                }
            }
        }
        if findings.isEmpty { add(.moderation, "intervened") }
        return findings
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
