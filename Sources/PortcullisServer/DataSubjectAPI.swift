import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import PortcullisAccess
import PortcullisAudit
import PortcullisCache
import PortcullisConfig
import PortcullisCore

/// The data subject's rights (GDPR articles 15 and 17): `GET /user/data/export` and
/// `POST /user/data/delete` for the calling principal, `/admin/subjects/{subject}/export|delete`
/// for any subject. A subject is `user:<id>` or `key:<id>`.
struct DataSubjectAPI: Sendable {
    let access: AccessSystem
    let audit: AuditLogs
    /// The answer caches, whose entries of an erased subject go too.
    let cache: CacheWiring
    /// Signs erasure receipts (the audit checkpoint key; nil: receipts go unsigned, and say so).
    let signingKey: AuditSigningKey?
    /// The configuration in force when the router was made, for the compliance report.
    let configuration: GatewayConfiguration

    /// Most audit records and payloads one export returns.
    static let exportLimit = 10_000

    func register(user: RouterGroup<GatewayRequestContext>, admin: RouterGroup<GatewayRequestContext>) {
        user.get("data/export") { _, context in
            try await export(try Self.subject(of: context.principal))
        }
        user.post("data/delete") { _, context in
            try await erase(try Self.subject(of: context.principal), context: context)
        }
        admin.get("subjects/{subject}/export") { _, context in
            try context.principal.require(.readAdministration)
            return try await export(try Self.parse(context.parameters.require("subject")))
        }
        admin.post("subjects/{subject}/delete") { _, context in
            try context.principal.require(.writeAdministration)
            return try await erase(try Self.parse(context.parameters.require("subject")), context: context)
        }
        // Retention: the defaults, each team's own with its consent, and a pass on demand.
        admin.get("retention") { _, context in
            try context.principal.require(.readAdministration)
            let defaults = audit.retention.configuration
            return AdminAPI.json(["payloads_days": .integer(Int64(defaults.payloadsDays)), "audit_days": .integer(Int64(defaults.auditDays)),
                                  "security_days": .integer(Int64(defaults.securityDays)),
                                  "teams": .array(try await audit.retention.teamPolicies().map(\.json))])
        }
        admin.put("teams/{id}/retention") { request, context in try await setTeamRetention(request, context) }
        admin.delete("teams/{id}/retention") { _, context in
            try context.principal.require(.writeAdministration)
            let team = try context.parameters.require("id")
            guard try await audit.retention.removeTeamPolicy(team) else {
                throw GatewayError(status: 404, kind: .notFound, code: .notFound, message: "Team '\(GatewayError.echo(team))' has no retention of its own.")
            }
            try await audit.recordAdminAction(actor: context.principal.actor, actorKeyID: context.principal.keyID, action: "retention.team.delete",
                                              target: team, details: [:], requestID: context.requestID)
            return AdminAPI.json(["team_id": .string(team), "deleted": true])
        }
        admin.get("compliance/report") { request, context in
            try context.principal.require(.readAdministration)
            let report = try await ComplianceReport.build(configuration: configuration, store: access.store, keys: audit.payloads?.keys,
                                                          verifierKey: signingKey?.publicKey)
            let wantsHTML = request.uri.queryParameters["format"] == "html"
                || (request.uri.queryParameters["format"] == nil && request.headers[.accept]?.contains("text/html") == true)
            guard wantsHTML else { return AdminAPI.json(report.json) }
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: report.html)))
        }
        admin.post("retention/run") { _, context in
            try context.principal.require(.writeAdministration)
            return AdminAPI.json(.object(try await audit.retention.run().json))
        }
    }

    /// `PUT /admin/teams/{id}/retention {payloads_days, audit_days, consent: {by, reason}}`: a
    /// team's own retention, refused without the consent it rests on (who agreed and why); when
    /// it was given is the time of the call. Recorded as an admin action with the consent.
    func setTeamRetention(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try context.principal.require(.writeAdministration)
        let team = try context.parameters.require("id")
        guard try await access.directory.team(team) != nil else {
            throw GatewayError(status: 404, kind: .notFound, code: .notFound, message: "There is no team '\(GatewayError.echo(team))'.")
        }
        let body = try await AdminAPI.body(request)
        func days(_ name: String) throws -> Int? {
            guard let value = body[name], value != .null else { return nil }
            guard let number = value.integerValue, (1...36_500).contains(number) else {
                throw GatewayError.invalidParameter(name, "\(name) must be a whole number of days, 1–36500")
            }
            return Int(number)
        }
        let payloads = try days("payloads_days"), auditDays = try days("audit_days")
        guard payloads != nil || auditDays != nil else {
            throw GatewayError.invalidParameter("payloads_days", "give payloads_days, audit_days or both")
        }
        guard let consent = body["consent"]?.objectValue, let by = consent["by"]?.stringValue, !by.isEmpty,
              let reason = consent["reason"]?.stringValue, !reason.isEmpty else {
            throw GatewayError.invalidParameter("consent", "a team's own retention needs consent: {\"by\": who agreed, \"reason\": what for}")
        }
        let policy = TeamRetention(teamID: team, payloadsDays: payloads, auditDays: auditDays, consentBy: by,
                                   consentAt: Int64(Date().timeIntervalSince1970), consentReason: reason)
        try await audit.retention.setTeamPolicy(policy)
        try await audit.recordAdminAction(actor: context.principal.actor, actorKeyID: context.principal.keyID, action: "retention.team.set",
                                          target: team, details: policy.json.objectValue ?? [:], requestID: context.requestID)
        return AdminAPI.json(policy.json)
    }

    /// A subject as the routes name it.
    enum Subject: Sendable, Equatable {
        case user(String)
        case key(String)

        var name: String {
            switch self {
            case .user(let id): return "user:" + id
            case .key(let id): return "key:" + id
            }
        }
    }

    static func parse(_ text: String) throws -> Subject {
        if text.hasPrefix("user:"), text.count > 5 { return .user(String(text.dropFirst(5))) }
        if text.hasPrefix("key:"), text.count > 4 { return .key(String(text.dropFirst(4))) }
        throw GatewayError.invalidParameter("subject", "a subject is user:<user id> or key:<key id>")
    }

    /// The caller as a subject: its user, else its key.
    static func subject(of principal: Principal) throws -> Subject {
        if let user = principal.userID, principal.credential != .masterKey { return .user(user) }
        if let key = principal.keyID { return .key(key) }
        throw GatewayError(status: 400, kind: .invalidRequest, code: .unsupportedOperation,
                           message: "This credential is not a data subject: export and erasure are for users and API keys.")
    }

    // MARK: Export

    func export(_ subject: Subject) async throws -> Response {
        let held = try await holdings(subject)
        var document: JSONObject = ["object": "subject.export", "subject": .string(subject.name),
                                    "exported_at": .integer(Int64(Date().timeIntervalSince1970))]
        document["user"] = held.user.map(AdminAPI.userObject) ?? .null
        document["keys"] = .array(held.keys.map { .object(AdminAPI.keyObject($0)) })
        var filters: [String: String] = [:]
        switch subject {
        case .user(let id): filters["user_id"] = id
        case .key(let id): filters["key_id"] = id
        }
        document["usage"] = .array(try await access.directory.usage(groupBy: ["day", "key_id", "model"], filters: filters, fromDay: nil, toDay: nil,
                                                                    limit: Self.exportLimit, offset: 0))
        let records = try await audit.reader.subjectRecords(keyIDs: held.keyIDs, userID: held.userID, ref: held.ref, limit: Self.exportLimit)
        document["audit_records"] = .array(records.records)
        document["audit_records_truncated"] = .bool(records.truncated)
        var payloads: [JSONValue] = []
        if let store = audit.payloads, let found = try await subjectKey(subject, store.keys), found.erasedAt == nil {
            do {
                payloads = try await store.payloads(ref: found.ref, limit: Self.exportLimit).map { stored in
                    ["audit_id": .string(stored.auditID), "request_id": stored.requestID.map(JSONValue.string) ?? .null,
                     "created_at": .integer(stored.createdAt), "mode": .string(stored.mode), "payload": stored.payload]
                }
            } catch let failure as DataProtectionError {
                throw Self.gatewayError(failure)
            }
        }
        document["payloads"] = .array(payloads)
        if let erasedAt = held.erasedAt { document["erased_at"] = .integer(erasedAt / 1_000_000) }
        guard held.exists else { throw Self.unknown(subject) }
        return AdminAPI.json(.object(document))
    }

    // MARK: Erasure

    /// Crypto-shreds the subject: its data key destroyed (its payloads unreadable), its keys
    /// revoked without name, user or metadata, its user removed, its usage rows re-labelled with
    /// its pseudonym. The erasure is an audit record, and the caller gets a signed receipt.
    func erase(_ subject: Subject, context: GatewayRequestContext) async throws -> Response {
        // The record of this request must not name the subject (nor make it a new key).
        if case .user(let id) = subject, context.principal.userID == id { context.audit?.withholdPersonalFields() }
        if case .key(let id) = subject, context.principal.keyID == id { context.audit?.withholdPersonalFields() }
        let held = try await holdings(subject)
        guard held.exists else { throw Self.unknown(subject) }
        // First the cached copies of its answers and questions: when Redis cannot be reached, nothing else is done yet.
        let cacheRemoved: Int
        do {
            cacheRemoved = try await cache.erase(subject: subject.name)
        } catch {
            throw GatewayError(status: 503, kind: .overloaded, code: .cacheUnavailable,
                               message: "The shared cache cannot be reached to remove this subject's entries (\(error)); nothing was erased. Try again shortly.",
                               headers: ["Retry-After": "5"])
        }
        try? await access.bus.publish(.cacheErased(CacheKey.subjectTag(subject.name)))   // every replica drops its copies
        var erasure: SubjectKeys.Erasure?
        var shredded = 0
        if let store = audit.payloads {
            do {
                erasure = try await store.keys.erase(subject: subject.name)
                if let ref = erasure?.ref {
                    shredded = try await store.count(ref: ref)
                    try? await access.bus.publish(.subjectErased(ref))   // every replica drops its copy of the key
                }
            } catch let failure as DataProtectionError {
                throw Self.gatewayError(failure)
            }
        }
        let now = Int64(Date().timeIntervalSince1970)
        let pseudonym = "erased:" + (erasure?.ref ?? FastRandom.hex(bytes: 16))
        for key in held.keys {
            try await access.keys.forgetOwner(keyID: key.keyID)
            access.authenticator.cache.invalidate(keyID: key.keyID)
            try? await access.bus.publish(.keyRevoked(key.keyID))
        }
        var userDeleted = false
        if let user = held.user {
            userDeleted = try await access.directory.deleteUser(user.userID)
            try? await access.bus.publish(.directoryChanged)
        }
        await access.recorder.flush()   // usage still in memory would be written under the subject's name after the relabelling
        let relabelled = try await access.directory.relabelUsage(userID: held.userID, keyIDs: held.keyIDs, as: pseudonym)
        // What the subject's audit records now show: sealed ones are pseudonymised by the key's
        // destruction; any written while the key service was down still name the subject.
        let records = try await audit.reader.subjectRecords(keyIDs: held.keyIDs, userID: held.userID, ref: erasure?.ref, limit: Self.exportLimit).records
        let sealed = records.filter { $0.objectValue?["details"]?.objectValue?[PersonalFields.sealedMember] != nil }.count
        let unsealed = records.filter { $0.objectValue?["details"]?.objectValue?["personal_sealed"]?.boolValue == false }.count
        let alreadyErased = erasure?.alreadyErased ?? (held.keys.isEmpty && held.user == nil)
        let details: JSONObject = [
            "actor": .string(context.principal.actor), "already_erased": .bool(alreadyErased), "keys_forgotten": .integer(Int64(held.keys.count)),
            "cache_entries_removed": .integer(Int64(cacheRemoved)),
            "payloads_shredded": .integer(Int64(shredded)), "pseudonym": .string(pseudonym),
            "records_pseudonymised": .integer(Int64(sealed)), "records_not_pseudonymised": .integer(Int64(unsealed)),
            "usage_rows_relabelled": .integer(Int64(relabelled)), "user_deleted": .bool(userDeleted),
        ]
        let record = AuditRecord(timestamp: now * 1_000_000, severity: .medium, category: "privacy", action: "subject.erase", outcome: "success",
                                 requestID: context.requestID, actorKeyID: context.principal.keyID,
                                 details: details)
        try await audit.writer.append(record)
        let formatter = ISO8601DateFormatter()
        let body = """
            portcullis erasure receipt
            subject: \(subject.name)
            pseudonym: \(pseudonym)
            erased_at: \(formatter.string(from: Date(timeIntervalSince1970: Double((erasure?.erasedAt ?? now * 1_000_000) / 1_000_000))))
            payloads_shredded: \(shredded)
            cache_entries_removed: \(cacheRemoved)
            audit_records_pseudonymised: \(sealed)
            audit_records_not_pseudonymised: \(unsealed)
            keys_forgotten: \(held.keys.count)
            user_deleted: \(userDeleted)
            audit_record: \(record.id)

            """
        var answer: JSONObject = ["object": "subject.erasure", "subject": .string(subject.name), "pseudonym": .string(pseudonym),
                                  "already_erased": .bool(alreadyErased), "payloads_shredded": .integer(Int64(shredded)),
                                  "cache_entries_removed": .integer(Int64(cacheRemoved)),
                                  "keys_forgotten": .integer(Int64(held.keys.count)), "user_deleted": .bool(userDeleted),
                                  "records_pseudonymised": .integer(Int64(sealed)), "records_not_pseudonymised": .integer(Int64(unsealed)),
                                  "audit_id": .string(record.id)]
        if let signingKey {
            answer["receipt"] = .string(try signingKey.sign(body))
            answer["public_key"] = .string(signingKey.publicKey.description)
        } else {
            answer["receipt"] = .string(body)
            answer["receipt_unsigned"] = "no audit signing key is configured (audit.signing_key_file)"
        }
        return AdminAPI.json(.object(answer))
    }

    // MARK: What the gateway holds

    struct Holdings {
        var user: UserRecord?
        var userID: String?
        var keys: [APIKeyRecord] = []
        var keyIDs: [String] = []
        var erasedAt: Int64?
        /// The reference of its data key (its sealed records name it).
        var ref: String?
        var hasDataKey = false
        var hasRecords = false
        var exists: Bool { user != nil || !keys.isEmpty || hasDataKey || hasRecords }
    }

    func holdings(_ subject: Subject) async throws -> Holdings {
        var held = Holdings()
        switch subject {
        case .user(let id):
            held.userID = id
            held.user = try await access.directory.user(id)
            held.keys = try await access.keys.list(userID: id, limit: Self.exportLimit)
        case .key(let id):
            if let key = try await access.keys.get(keyID: id) { held.keys = [key] }
        }
        held.keyIDs = held.keys.map(\.keyID)
        if case .key(let id) = subject, held.keyIDs.isEmpty { held.keyIDs = [id] }
        if let store = audit.payloads, let found = try await subjectKey(subject, store.keys) {
            held.hasDataKey = true
            held.erasedAt = found.erasedAt
            held.ref = found.ref
        }
        held.hasRecords = !(try await audit.reader.subjectRecords(keyIDs: held.keyIDs, userID: held.userID, ref: held.ref, limit: 1).records.isEmpty)
        return held
    }

    /// The subject's data-key reference (nil: it never had one); a key service that cannot be
    /// reached is the client's 503 `kms_unavailable`.
    private func subjectKey(_ subject: Subject, _ keys: SubjectKeys) async throws -> (ref: String, erasedAt: Int64?)? {
        do {
            return try await keys.lookup(subject: subject.name)
        } catch let failure as DataProtectionError {
            throw Self.gatewayError(failure)
        }
    }

    static func unknown(_ subject: Subject) -> GatewayError {
        GatewayError(status: 404, kind: .notFound, code: .notFound,
                     message: "The gateway holds nothing about the data subject '\(GatewayError.echo(subject.name))'.")
    }

    static func gatewayError(_ failure: DataProtectionError) -> GatewayError {
        switch failure {
        case .keyServiceUnavailable:
            return GatewayError(status: 503, kind: .overloaded, code: .keyServiceUnavailable,
                                message: "The key service cannot unwrap this subject's data key right now (\(failure)). Try again shortly.",
                                headers: ["Retry-After": "5"])
        case .undecryptable, .erased, .keyFile:
            return GatewayError(status: 500, kind: .internalError, code: .payloadUnreadable, message: "A stored payload cannot be read: \(failure).")
        }
    }
}
