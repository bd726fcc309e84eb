import Foundation
import PortcullisCore

/// An external guard service answered something this adapter cannot read.
public struct RemoteGuardError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Azure AI Content Safety: Prompt Shields (`text:shieldPrompt`: the user's text as
/// `userPrompt`, tool results and other untrusted text as `documents`) and text analysis
/// (`text:analyze`, each untrusted segment in pieces of at most 10,000 characters, four
/// severity levels), asked together, and image analysis (`image:analyze`) of each inline
/// image. An attack is a high-risk prompt-injection finding; a
/// category at or above the configured severity a high-risk moderation finding, below it a
/// medium one.
public struct AzureContentSafety: Sendable {
    public let transport: any JSONTransport
    public let key: String
    public let apiVersion: String
    public let severity: Int

    public init(transport: any JSONTransport, key: String, apiVersion: String, severity: Int) {
        self.transport = transport
        self.key = key
        self.apiVersion = apiVersion
        self.severity = severity
    }

    public func findings(for input: GuardInput) async throws -> [GuardFinding] {
        let untrusted = input.segments.indices.filter { !input.segments[$0].isTrusted }
        var findings = try await imageFindings(input.images)
        guard !untrusted.isEmpty else { return findings }
        let user = untrusted.filter { input.segments[$0].role == .user }
        let documents = untrusted.filter { input.segments[$0].role != .user }
        let headers = [("content-type", "application/json"), ("ocp-apim-subscription-key", key)]
        let requestID = "content-safety-" + FastRandom.hex(bytes: 8)
        let shieldBody: JSONValue = .object([
            "userPrompt": .string(user.map { input.segments[$0].text }.joined(separator: "\n\n")),
            "documents": .array(documents.map { .string(input.segments[$0].text) }),
        ])
        async let shield = transport.post(path: "/contentsafety/text:shieldPrompt?api-version=\(apiVersion)", headers: headers,
                                          body: shieldBody, requestID: requestID)
        var analyses: [(segment: Int, answer: JSONValue)] = []
        for segment in untrusted {
            let text = input.segments[segment].text
            var start = text.startIndex
            while start < text.endIndex {
                let end = text.index(start, offsetBy: 10_000, limitedBy: text.endIndex) ?? text.endIndex
                let body: JSONValue = .object(["text": .string(String(text[start..<end])),
                                               "categories": .array(["Hate", "SelfHarm", "Sexual", "Violence"].map(JSONValue.string)),
                                               "outputType": "FourSeverityLevels"])
                let answer = try await transport.post(path: "/contentsafety/text:analyze?api-version=\(apiVersion)", headers: headers,
                                                      body: body, requestID: requestID)
                analyses.append((segment, answer))
                start = end
            }
        }
        let shielded = try await shield
        guard let shieldObject = shielded.objectValue, shieldObject["userPromptAnalysis"] != nil || shieldObject["documentsAnalysis"] != nil else {
            throw RemoteGuardError("shieldPrompt answer without analyses")
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
            findings += try categoryFindings(answer, what: "text:analyze", subject: "", segment: segment)
        }
        return findings
    }

    /// `image:analyze` for each inline image (Azure takes the bytes, base64, in `image.content`).
    private func imageFindings(_ images: [GuardImage]) async throws -> [GuardFinding] {
        var findings: [GuardFinding] = []
        for image in images {
            guard let inline = image.inline else { continue }
            let answer = try await transport.post(path: "/contentsafety/image:analyze?api-version=\(apiVersion)",
                                                  headers: [("content-type", "application/json"), ("ocp-apim-subscription-key", key)],
                                                  body: ["image": ["content": .string(String(inline.base64))]],
                                                  requestID: "content-safety-" + FastRandom.hex(bytes: 8))
            findings += try categoryFindings(answer, what: "image:analyze", subject: " (image \(image.position + 1))", segment: nil)
        }
        return findings
    }

    /// The findings of one analysis: each category above severity 0, high risk from `severity` up.
    private func categoryFindings(_ answer: JSONValue, what: String, subject: String, segment: Int?) throws -> [GuardFinding] {
        guard let categories = answer.objectValue?["categoriesAnalysis"]?.arrayValue else {
            throw RemoteGuardError("\(what) answer without categoriesAnalysis")
        }
        return categories.compactMap(\.objectValue).compactMap { category in
            let level = Int(category["severity"]?.integerValue ?? 0)
            guard level > 0, let name = category["category"]?.stringValue else { return nil }
            return GuardFinding(guardName: "azure_content_safety", category: .moderation, risk: level >= severity ? .high : .medium,
                                score: Double(level) / 7, reason: "Azure Content Safety\(subject): \(name) severity \(level)", segment: segment)
        }
    }
}

/// AWS Bedrock ApplyGuardrail (`POST /guardrail/{id}/version/{version}/apply`, source INPUT,
/// every untrusted segment a text block, every inline PNG or JPEG image an image block), signed with SigV4 for the `bedrock` service. When
/// the guardrail intervenes, each blocked assessment (content filters — a prompt attack is a
/// prompt-injection finding, the rest moderation —, denied topics, words, sensitive
/// information) is a high-risk finding.
public struct BedrockGuardrail: Sendable {
    /// Signs with SigV4 for the `bedrock` service.
    public let transport: any JSONTransport
    public let guardrailID: String
    public let version: String

    public init(transport: any JSONTransport, guardrailID: String, version: String) {
        self.transport = transport
        self.guardrailID = guardrailID
        self.version = version
    }

    public func findings(for input: GuardInput) async throws -> [GuardFinding] {
        let untrusted = input.segments.indices.filter { !input.segments[$0].isTrusted }
        // Inline PNG and JPEG images go as image blocks (the two formats ApplyGuardrail reads).
        let images: [JSONValue] = input.images.compactMap { image in
            guard let inline = image.inline, let format = ImageFormat(mediaType: inline.mediaType), format == .png || format == .jpeg else { return nil }
            return ["image": ["format": .string(format.rawValue), "source": ["bytes": .string(String(inline.base64))]]]
        }
        guard !untrusted.isEmpty || !images.isEmpty else { return [] }
        let body: JSONValue = .object([
            "source": "INPUT",
            "content": .array(untrusted.map { .object(["text": .object(["text": .string(input.segments[$0].text)])]) } + images),
        ])
        let path = "/guardrail/\(PercentEncoding.encode(guardrailID))/version/\(PercentEncoding.encode(version))/apply"
        let answer = try await transport.post(path: path, headers: [("content-type", "application/json")], body: body,
                                              requestID: "bedrock-guardrail-" + FastRandom.hex(bytes: 8))
        guard let object = answer.objectValue, let action = object["action"]?.stringValue else {
            throw RemoteGuardError("ApplyGuardrail answer without action")
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
/// (`input` as a list), and with an omni model each image part in a call of its own; a flagged
/// result becomes a moderation finding per flagged category, high risk at a category score of
/// 0.8 or more, medium below.
public struct OpenAIModeration: Sendable {
    public let transport: any JSONTransport
    public let model: String
    /// Sent as a bearer token when set.
    public let apiKey: String?

    public init(transport: any JSONTransport, model: String, apiKey: String?) {
        self.transport = transport
        self.model = model
        self.apiKey = apiKey
    }

    public func findings(for input: GuardInput) async throws -> [GuardFinding] {
        let indices = input.segments.indices.filter { !input.segments[$0].isTrusted }
        var findings: [GuardFinding] = []
        if !indices.isEmpty {
            let results = try await moderate(.array(indices.map { .string(input.segments[$0].text) }), expecting: indices.count)
            for (segment, result) in zip(indices, results) { findings += Self.findings(result, subject: "", segment: segment) }
        }
        // Images go one at a time as a multi-modal input (the omni models read them; the text-only ones refuse them).
        if model.hasPrefix("omni-") {
            for image in input.images {
                let part: JSONValue = ["type": "image_url", "image_url": ["url": .string(image.url)]]
                let results = try await moderate([part], expecting: 1)
                findings += Self.findings(results[0], subject: " (image \(image.position + 1))", segment: nil)
            }
        }
        return findings
    }

    private func moderate(_ input: JSONValue, expecting count: Int) async throws -> [JSONValue] {
        var headers: [(String, String)] = [("content-type", "application/json")]
        if let apiKey { headers.append(("authorization", "Bearer \(apiKey)")) }
        let response = try await transport.post(path: "/v1/moderations", headers: headers, body: ["model": .string(model), "input": input],
                                                requestID: "moderation-" + FastRandom.hex(bytes: 8))
        guard let results = response.objectValue?["results"]?.arrayValue, results.count == count else {
            throw RemoteGuardError("moderations answer without one result per input")
        }
        return results
    }

    /// A flagged result's findings: one per flagged category, high risk at a score of 0.8 or more.
    private static func findings(_ result: JSONValue, subject: String, segment: Int?) -> [GuardFinding] {
        guard let object = result.objectValue, object["flagged"]?.boolValue == true else { return [] }
        let scores = object["category_scores"]?.objectValue ?? JSONObject()
        return (object["categories"]?.objectValue ?? JSONObject()).filter { $0.value.boolValue == true }.map { name, _ in
            let score = scores[name]?.doubleValue ?? 1
            return GuardFinding(guardName: "openai_moderation", category: .moderation, risk: score >= 0.8 ? .high : .medium,
                                score: score, reason: "OpenAI moderation\(subject): \(name)", segment: segment)
        }
    }
}
