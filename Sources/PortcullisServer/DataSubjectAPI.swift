import Foundation
import Hummingbird
import PortcullisAccess
import PortcullisAudit
import PortcullisCore

/// The data subject's rights (GDPR articles 15 and 17): `GET /user/data/export` and
/// `POST /user/data/delete` for the calling principal, `/admin/subjects/{subject}/export|delete`
/// for any subject. A subject is `user:<id>` or `key:<id>`.
struct DataSubjectAPI: Sendable {
    let access: AccessSystem
    let audit: AuditLogs
    /// Signs erasure receipts (the audit checkpoint key; nil: receipts go unsigned, and say so).
    let signingKey: AuditSigningKey?

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
        let records = try await audit.reader.subjectRecords(keyIDs: held.keyIDs, userID: held.userID, limit: Self.exportLimit)
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
        let held = try await holdings(subject)
        guard held.exists else { throw Self.unknown(subject) }
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
        let relabelled = try await access.directory.relabelUsage(userID: held.userID, keyIDs: held.keyIDs, as: pseudonym)
        let alreadyErased = erasure?.alreadyErased ?? (held.keys.isEmpty && held.user == nil)
        let details: JSONObject = [
            "actor": .string(context.principal.actor), "already_erased": .bool(alreadyErased), "keys_forgotten": .integer(Int64(held.keys.count)),
            "payloads_shredded": .integer(Int64(shredded)), "pseudonym": .string(pseudonym),
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
            keys_forgotten: \(held.keys.count)
            user_deleted: \(userDeleted)
            audit_record: \(record.id)

            """
        var answer: JSONObject = ["object": "subject.erasure", "subject": .string(subject.name), "pseudonym": .string(pseudonym),
                                  "already_erased": .bool(alreadyErased), "payloads_shredded": .integer(Int64(shredded)),
                                  "keys_forgotten": .integer(Int64(held.keys.count)), "user_deleted": .bool(userDeleted),
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
        }
        held.hasRecords = !(try await audit.reader.subjectRecords(keyIDs: held.keyIDs, userID: held.userID, limit: 1).records.isEmpty)
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
