import Foundation
import PortcullisCore
import Synchronization

/// What the audit log records of one API request, gathered while the stages decide: who
/// called, which model and deployment served, the stable code of a refusal, tokens, cost and
/// the guards' findings (category, risk, action, rule — never the matched text).
///
/// The request's first record carries `auditID` (the `x-portcullis-audit-id` header): the
/// record made durable before the upstream is called (`intent`), or, for a request that never
/// reached it, its outcome. Every record of the request shares its request id.
public final class RequestAudit: GuardEventSink, Sendable {
    /// How the caller authenticated, as the record names it.
    public struct Actor: Sendable, Equatable {
        public var keyID: String?
        public var userID: String?
        public var teamID: String?
        public var role: String
        /// `master_key`, `api_key`, `oidc` or `none`.
        public var method: String
        public var multiFactor: Bool

        public init(keyID: String?, userID: String?, teamID: String?, role: String, method: String, multiFactor: Bool) {
            self.keyID = keyID
            self.userID = userID
            self.teamID = teamID
            self.role = role
            self.method = method
            self.multiFactor = multiFactor
        }
    }

    struct Facts: Sendable {
        var sourceAddress: String?
        var actor: Actor?
        /// The credential's kind when authentication failed (`api_key`, `oidc`, …) and why.
        var failedMethod: String?
        var failure: String?
        /// The public id of a refused API key, when it is in the key's form (`pck_<id>_…`); never the secret.
        var presentedKeyID: String?
        var model: String?
        var deployment: String?
        var provider: String?
        var code: ErrorCode?
        var promptTokens: Int?
        var completionTokens: Int?
        var costMicros: Int64?
        var findings: [GuardEvent] = []
        var intentRecorded = false
        /// What stage 8 did: `hit`, `semantic-hit`, `miss`, `bypass` or `joined` (nil: caching does not apply).
        var cache: String?
        /// A semantic hit's similarity.
        var cacheSimilarity: Float?
        /// Where and how the request's payload is stored, and its two halves as captured.
        var payload: PayloadCapture?
        var payloadRequest: JSONValue?
        var payloadAnswer: JSONValue?
        /// The policy stores payloads but this one's key could not be had.
        var payloadNotStored = false
        /// The subject's data key the personal fields are sealed under (nil: written as they are).
        var sealing: SubjectKeys.SubjectKey?
        var sealingFailed = false
        /// The record names neither the caller's user nor its address (the subject's own erasure).
        var personalWithheld = false
    }

    public let auditID: String
    public let requestID: String
    public let traceID: String?
    public let method: String
    public let path: String
    /// Microseconds since 1970 when the request arrived.
    public let receivedAt: Int64
    let started: ContinuousClock.Instant
    private let facts = Mutex(Facts())

    public init(requestID: String, traceID: String?, method: String, path: String, sourceAddress: String?, now: Date = Date()) {
        self.receivedAt = Int64(now.timeIntervalSince1970 * 1_000_000)
        self.auditID = FastRandom.timeOrderedUUIDString(unixMilliseconds: UInt64(receivedAt / 1000))
        self.requestID = requestID
        self.traceID = traceID
        self.method = method
        self.path = path
        self.started = .now
        facts.withLock { $0.sourceAddress = sourceAddress }
    }

    // MARK: What the stages report

    /// Stage 1: the client's address as the IP policy judged it (behind a trusted proxy, the forwarded one).
    public func client(address: String) { facts.withLock { $0.sourceAddress = address } }

    /// Stage 2: who is calling.
    public func authenticated(_ actor: Actor) { facts.withLock { $0.actor = actor } }

    /// Stage 2: the credential was refused; `method` is the kind presented, `keyID` the public
    /// id of a refused API key (which the failed-logins alert counts by).
    public func authenticationFailed(method: String, reason: String, keyID: String? = nil) {
        facts.withLock {
            $0.failedMethod = method
            $0.failure = reason
            $0.presentedKeyID = keyID
        }
    }

    /// The model group asked for.
    public func model(_ model: String) { facts.withLock { $0.model = model } }

    /// The deployment that answered.
    public func served(deployment: String, provider: String) {
        facts.withLock {
            $0.deployment = deployment
            $0.provider = provider
        }
    }

    /// Usage and cost as settled.
    public func settled(promptTokens: Int?, completionTokens: Int?, costMicros: Int64?) {
        facts.withLock {
            $0.promptTokens = promptTokens
            $0.completionTokens = completionTokens
            $0.costMicros = costMicros
        }
    }

    /// The stable code of the request's refusal or failure.
    public func failed(code: ErrorCode) { facts.withLock { $0.code = code } }

    /// Stage 8: whether the answer came from the cache (`hit`, or `semantic-hit` with its
    /// similarity), was looked for (`miss`) or not (`bypass`), or joined another call (`joined`).
    public func cache(_ outcome: String, similarity: Float? = nil) {
        facts.withLock {
            $0.cache = outcome
            $0.cacheSimilarity = similarity
        }
    }

    /// The data subject the request's payload belongs to: `user:<id>` for a caller that is a
    /// user, else `key:<id>` (nil before authentication, and for anonymous callers).
    public var subject: String? {
        facts.withLock { facts in
            guard let actor = facts.actor, !facts.personalWithheld else { return nil }
            return actor.userID.map { "user:" + $0 } ?? actor.keyID.map { "key:" + $0 }
        }
    }

    /// The caller's team (nil before authentication, or without one).
    public var teamID: String? { facts.withLock { $0.actor?.teamID } }

    /// The payload is stored (stage 14, before the upstream): `request` as it will be kept.
    public func capture(_ capture: PayloadCapture, request: JSONValue) {
        facts.withLock {
            $0.payload = capture
            $0.payloadRequest = request
        }
    }

    /// From now on the record's personal fields (user id, address) are sealed under `key`.
    public func seal(with key: SubjectKeys.SubjectKey) { facts.withLock { $0.sealing = key } }

    /// The records of this request keep no personal field at all: it erases its own subject,
    /// whose key must not be made again for the record of its erasure.
    public func withholdPersonalFields() { facts.withLock { $0.personalWithheld = true } }

    /// The subject's key could not be had: the personal fields are written as they are, and the record says so.
    public func sealingFailed() { facts.withLock { $0.sealingFailed = true } }

    /// Whether the personal fields are sealed.
    public var isSealed: Bool { facts.withLock { $0.sealing != nil } }

    /// The payload should have been stored but its key could not be had.
    public func payloadNotStored() { facts.withLock { $0.payloadNotStored = true } }

    /// The answer as the client got it (for a stream, assembled once it completed).
    public func capture(answer: JSONValue) { facts.withLock { $0.payloadAnswer = answer } }

    /// How the payload is kept (nil: it is not).
    public var payloadMode: PayloadMode? { facts.withLock { $0.payload?.mode } }

    /// What is stored once the request is over: its capture and `{request, answer}` (nil: nothing).
    func payloadToStore() -> (PayloadCapture, JSONValue)? {
        facts.withLock { facts in
            guard let capture = facts.payload, let request = facts.payloadRequest else { return nil }
            var payload: JSONObject = ["request": request]
            if let answer = facts.payloadAnswer { payload["answer"] = answer }
            return (capture, .object(payload))
        }
    }

    /// Guard decisions about this request (the request's own copy; the guard-event log keeps its own).
    public func record(_ events: [GuardEvent]) {
        guard !events.isEmpty else { return }
        facts.withLock { $0.findings += events }
    }

    /// Whether the record before the upstream call was made (then the outcome is a record of its own).
    public var intentRecorded: Bool { facts.withLock { $0.intentRecorded } }

    // MARK: Records

    /// The record made durable before the upstream is called.
    public func intent() -> AuditRecord {
        let facts = self.facts.withLock { facts -> Facts in
            facts.intentRecorded = true
            return facts
        }
        return AuditRecord(id: auditID, timestamp: Int64(Date().timeIntervalSince1970 * 1_000_000), severity: .info, category: "request",
                           action: "request.forward", outcome: "pending", requestID: requestID, actorKeyID: facts.actor?.keyID,
                           details: details(facts, ending: nil))
    }

    /// The request's outcome once the response is complete (for a stream, when it ended).
    public func outcome(status: Int, now: Date = Date()) -> AuditRecord {
        let facts = self.facts.withLock { $0 }
        let elapsed = ContinuousClock.now - started
        let latency = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
        let authenticationFailed = facts.failure != nil
        let blocked = facts.code == .guardrailBlocked
        return AuditRecord(id: facts.intentRecorded ? nil : auditID, timestamp: Int64(now.timeIntervalSince1970 * 1_000_000),
                           severity: Self.severity(status: status, code: facts.code, findings: facts.findings),
                           category: authenticationFailed ? "authentication" : "request",
                           action: authenticationFailed ? "authenticate" : "request.complete",
                           outcome: authenticationFailed ? "failure" : blocked ? "blocked" : status < 400 ? "success" : status < 500 ? "refused" : "failed",
                           requestID: requestID, actorKeyID: facts.actor?.keyID, details: details(facts, ending: (status, latency)))
    }

    /// A record's details: what every record of the request names, and for its outcome
    /// (`ending`: status and latency in µs) the status, code, usage, findings and, for a refused
    /// credential, its kind and reason. Members are appended in key order, each once, so the
    /// canonical encoding writes them as they are.
    private func details(_ facts: Facts, ending: (status: Int, latency: Int64)?) -> JSONObject {
        var details = JSONObject()
        let failed = ending != nil && facts.failure != nil
        if let actor = facts.actor {
            var object = JSONObject()
            object.append(newKey: "auth_method", .string(actor.method))
            if let key = actor.keyID { object.append(newKey: "key_id", .string(key)) }
            object.append(newKey: "mfa", .bool(actor.multiFactor))
            object.append(newKey: "role", .string(actor.role))
            if let team = actor.teamID { object.append(newKey: "team_id", .string(AuditRecord.bounded(team))) }
            if let user = actor.userID, !facts.personalWithheld {
                if facts.sealing != nil { object.append(newKey: "user_sealed", true) } else { object.append(newKey: "user_id", .string(AuditRecord.bounded(user))) }
            }
            details.append(newKey: "actor", .object(object))
        }
        if failed { details.append(newKey: "auth_method", .string(facts.failedMethod ?? "none")) }
        if ending != nil {
            if let cache = facts.cache { details.append(newKey: "cache", .string(cache)) }
            if let similarity = facts.cacheSimilarity {
                details.append(newKey: "cache_similarity", .double((Double(similarity) * 10_000).rounded() / 10_000))
            }
            if let code = facts.code { details.append(newKey: "code", .string(code.rawValue)) }
            if let completion = facts.completionTokens { details.append(newKey: "completion_tokens", .integer(Int64(completion))) }
            if let cost = facts.costMicros { details.append(newKey: "cost_micros", .integer(cost)) }
        }
        if let deployment = facts.deployment { details.append(newKey: "deployment", .string(AuditRecord.bounded(deployment))) }
        if let ending {
            if !facts.findings.isEmpty {
                details.append(newKey: "guard_findings", .array(facts.findings.map { event in
                    ["action": .string(event.action), "category": .string(event.category), "guard": .string(event.guardName),
                     "policy": .string(AuditRecord.bounded(event.policy)), "risk": .string(event.risk)]
                }))
            }
            if facts.intentRecorded { details.append(newKey: "intent_id", .string(auditID)) }
            details.append(newKey: "latency_us", .integer(ending.latency))
        }
        details.append(newKey: "method", .string(method))
        if let model = facts.model { details.append(newKey: "model", .string(AuditRecord.bounded(model))) }
        details.append(newKey: "path", .string(AuditRecord.bounded(path)))
        if ending != nil, let payload = facts.payload { details.append(newKey: "payload", .string(payload.mode.rawValue)) }
        if ending != nil, facts.payloadNotStored { details.append(newKey: "payload", "not_stored") }
        if facts.sealingFailed && facts.sealing == nil { details.append(newKey: "personal_sealed", false) }
        if let key = facts.sealing, let sealed = sealedPersonalFields(facts, key: key) {
            details.append(newKey: PersonalFields.sealedMember, .string(sealed))
        }
        if failed, let key = facts.presentedKeyID { details.append(newKey: "presented_key_id", .string(AuditRecord.bounded(key))) }
        if ending != nil, let prompt = facts.promptTokens { details.append(newKey: "prompt_tokens", .integer(Int64(prompt))) }
        if let provider = facts.provider { details.append(newKey: "provider", .string(provider)) }
        if failed { details.append(newKey: "reason", .string(AuditRecord.bounded(facts.failure ?? ""))) }
        details.append(newKey: "received_at", .integer(receivedAt))
        if facts.sealing == nil, !facts.personalWithheld, let source = facts.sourceAddress { details.append(newKey: "source_address", .string(AuditRecord.bounded(source))) }
        if let ending { details.append(newKey: "status", .integer(Int64(ending.status))) } else { details.append(newKey: "stage", "before upstream") }
        if let key = facts.sealing { details.append(newKey: PersonalFields.referenceMember, .string(key.ref)) }
        if let traceID { details.append(newKey: "trace_id", .string(traceID)) }
        return details
    }

    /// The caller's user id and address sealed under `key`, once per request: its records share
    /// the ciphertext (the same fields, the same context), so the outcome costs no second seal.
    private func sealedPersonalFields(_ facts: Facts, key: SubjectKeys.SubjectKey) -> String? {
        var personal = JSONObject()
        if let source = facts.sourceAddress { personal.append(newKey: "source_address", .string(AuditRecord.bounded(source))) }
        if let user = facts.actor?.userID { personal.append(newKey: "user_id", .string(AuditRecord.bounded(user))) }
        guard !personal.isEmpty else { return nil }
        return sealed.withLock { sealed in
            if let known = sealed, known.fields == personal, known.ref == key.ref { return known.text }
            guard let text = PersonalFields.seal(personal, key: key, requestID: requestID) else { return nil }
            sealed = (personal, key.ref, text)
            return text
        }
    }
    private let sealed = Mutex<(fields: JSONObject, ref: String, text: String)?>(nil)

    /// How much an operator should care: a guard block by its highest blocking risk, refused
    /// credentials and addresses MEDIUM, other refusals LOW, gateway or upstream failures MEDIUM
    /// (an audit or internal failure HIGH), everything else INFO.
    static func severity(status: Int, code: ErrorCode?, findings: [GuardEvent]) -> AuditRecord.Severity {
        if code == .guardrailBlocked {
            let risks = findings.filter { $0.action == "block" }.map(\.risk)
            if risks.contains("critical") { return .critical }
            if risks.contains("high") { return .high }
            if risks.contains("medium") { return .medium }
            return risks.isEmpty ? .high : .low
        }
        if code == .residencyViolation { return .high }
        switch status {
        case ..<400: return findings.contains { $0.risk == "critical" || $0.risk == "high" } ? .low : .info
        case 401, 403: return .medium
        case 400..<500: return .low
        default:
            return code == .auditUnavailable || code == .internalError ? .high : .medium
        }
    }
}

extension AuditRecord {
    /// Longest text kept in one field of a record; a longer one is cut with a marker saying how much was cut.
    public static let fieldLimit = 1024

    /// `text` cut to `fieldLimit` bytes (on a character boundary) with a marker, so that no
    /// field can swell a record; escaping of control characters is the JSON writer's.
    public static func bounded(_ text: String) -> String {
        guard text.utf8.count > fieldLimit else { return text }
        var kept = Substring(text).prefix(fieldLimit)
        while kept.utf8.count > fieldLimit { kept = kept.dropLast() }
        return kept + "…[truncated \(text.utf8.count - kept.utf8.count) bytes]"
    }
}
