import Crypto
import Foundation
import PortcullisCore
import PortcullisStorage

/// What a caller may do; the permission matrix over routes builds on these.
public enum Role: String, Sendable, CaseIterable, Equatable {
    case user, developer, admin, auditor
}

/// A virtual API key as stored: never the secret, only its keyed hash.
public struct APIKeyRecord: Sendable, Equatable {
    /// The public identifier, the middle part of the key text.
    public var keyID: String
    public var name: String?
    public var userID: String?
    public var teamID: String?
    public var role: Role
    /// Models this key may call; empty means every model.
    public var allowedModels: [String]
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var maximumConcurrency: Int64?
    /// Spend cap in millionths of the price currency.
    public var budgetMicros: Int64?
    /// Unix seconds.
    public var expiresAt: Int64?
    public var createdAt: Int64
    public var revokedAt: Int64?
    public var metadata: JSONObject
    /// When the key was last used (unix seconds), as of the last usage flush.
    public var lastUsedAt: Int64?
    /// The keys that minted this one, its issuer first (empty for keys an admin issued): their
    /// budgets also pay for this key's calls.
    public var issuerChain: [String] = []
    /// Whether revoking the issuer revokes this key too.
    public var revokedWithIssuer = false
    /// When the secret that authenticated this record stops working (a rotated-out secret in
    /// its grace period); nil for the current secret. Not stored: set by `authenticate`.
    public var secretValidUntil: Int64?

    public init(keyID: String, name: String?, userID: String?, teamID: String?, role: Role, allowedModels: [String],
                requestsPerMinute: Int64?, tokensPerMinute: Int64?, maximumConcurrency: Int64?, budgetMicros: Int64?,
                expiresAt: Int64?, createdAt: Int64, revokedAt: Int64?, metadata: JSONObject) {
        self.keyID = keyID
        self.name = name
        self.userID = userID
        self.teamID = teamID
        self.role = role
        self.allowedModels = allowedModels
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maximumConcurrency = maximumConcurrency
        self.budgetMicros = budgetMicros
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.revokedAt = revokedAt
        self.metadata = metadata
    }
}

/// What to issue a new key with.
public struct NewAPIKey: Sendable {
    public var name: String?
    public var userID: String?
    public var teamID: String?
    public var role: Role
    public var allowedModels: [String]
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var maximumConcurrency: Int64?
    public var budgetMicros: Int64?
    /// Lifetime in seconds; nil uses the default of 90 days.
    public var lifetime: Double?
    /// The latest expiry allowed (unix seconds): the issuer's own, for a minted key.
    public var latestExpiry: Int64?
    /// The keys that mint this one, issuer first.
    public var issuerChain: [String] = []
    /// Whether revoking the issuer revokes this key too.
    public var revokedWithIssuer = false
    public var metadata: JSONObject

    public init(name: String? = nil, userID: String? = nil, teamID: String? = nil, role: Role = .user, allowedModels: [String] = [],
                requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil, maximumConcurrency: Int64? = nil,
                budgetMicros: Int64? = nil, lifetime: Double? = nil, metadata: JSONObject = JSONObject()) {
        self.name = name
        self.userID = userID
        self.teamID = teamID
        self.role = role
        self.allowedModels = allowedModels
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maximumConcurrency = maximumConcurrency
        self.budgetMicros = budgetMicros
        self.lifetime = lifetime
        self.metadata = metadata
    }
}

/// A key just issued or rotated: the only moment its full text exists outside the caller.
public struct IssuedAPIKey: Sendable {
    public var record: APIKeyRecord
    /// `pck_<id>_<secret>`: show once, never stored.
    public var key: String
}

/// Issues, authenticates, rotates and revokes virtual API keys in the SQL store.
///
/// Keys read `pck_<16 hex id>_<64 hex secret>`. The store keeps HMAC-SHA256(pepper, secret);
/// a leaked database does not reveal usable keys without the pepper.
public struct APIKeyStore: Sendable {
    /// The key text's recognisable prefix (secret scanners can match it).
    public static let prefix = "pck_"
    /// Lifetime of a key issued without one: 90 days.
    public static let defaultLifetime: Double = 90 * 24 * 3600

    private let store: any SQLStore
    private let pepper: SymmetricKey

    /// - Parameter pepper: the server secret keyed into every hash (at least 32 bytes).
    public init(store: any SQLStore, pepper: [UInt8]) throws {
        guard pepper.count >= 32 else { throw SQLError("the API key pepper must be at least 32 bytes") }
        self.store = store
        self.pepper = SymmetricKey(data: pepper)
    }

    /// The table this store needs.
    public static let migrations: [Migration] = [
        Migration(version: 100, name: "api keys") { _ in
            [
                """
                CREATE TABLE portcullis_api_keys (
                    key_id TEXT PRIMARY KEY,
                    secret_hash TEXT NOT NULL,
                    previous_secret_hash TEXT,
                    previous_valid_until BIGINT,
                    name TEXT,
                    user_id TEXT,
                    team_id TEXT,
                    role TEXT NOT NULL,
                    allowed_models TEXT NOT NULL,
                    rpm_limit BIGINT,
                    tpm_limit BIGINT,
                    concurrency_limit BIGINT,
                    budget_micros BIGINT,
                    expires_at BIGINT,
                    created_at BIGINT NOT NULL,
                    revoked_at BIGINT,
                    metadata TEXT NOT NULL
                )
                """,
                "CREATE INDEX portcullis_api_keys_user ON portcullis_api_keys (user_id)",
                "CREATE INDEX portcullis_api_keys_team ON portcullis_api_keys (team_id)",
            ]
        },
        Migration(version: 101, name: "api key last use") { _ in
            ["ALTER TABLE portcullis_api_keys ADD COLUMN last_used_at BIGINT"]
        },
        Migration(version: 110, name: "api key issuers and rotated secrets") { _ in
            [
                "ALTER TABLE portcullis_api_keys ADD COLUMN issuer_key_id TEXT",
                "ALTER TABLE portcullis_api_keys ADD COLUMN issuer_chain TEXT",
                "ALTER TABLE portcullis_api_keys ADD COLUMN revoke_with_issuer BIGINT",
                // Rotated-out secrets still in their grace period: [{"hash": …, "until": …}, …].
                "ALTER TABLE portcullis_api_keys ADD COLUMN previous_secrets TEXT",
                "CREATE INDEX portcullis_api_keys_issuer ON portcullis_api_keys (issuer_key_id)",
            ]
        },
    ]

    func hash(_ secret: Substring) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: Array(secret.utf8), using: pepper)
        return code.map { String(format: "%02x", $0) }.joined()
    }

    static func randomHex(bytes: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    /// Splits key text into id and secret; nil when it is not a Portcullis key.
    static func parse(_ text: String) -> (id: Substring, secret: Substring)? {
        guard text.hasPrefix(prefix) else { return nil }
        let parts = text.dropFirst(prefix.count).split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 16, parts[1].count == 64,
              parts.allSatisfy({ $0.allSatisfy(\.isHexDigit) }) else { return nil }
        return (parts[0], parts[1])
    }

    /// Issues a key.
    public func create(_ spec: NewAPIKey, now: Date = Date()) async throws -> IssuedAPIKey {
        let keyID = Self.randomHex(bytes: 8)
        let secret = Self.randomHex(bytes: 32)
        let created = Int64(now.timeIntervalSince1970)
        let expires = min(created + Int64(spec.lifetime ?? Self.defaultLifetime), spec.latestExpiry ?? .max)
        var record = APIKeyRecord(keyID: keyID, name: spec.name, userID: spec.userID, teamID: spec.teamID, role: spec.role,
                                  allowedModels: spec.allowedModels, requestsPerMinute: spec.requestsPerMinute,
                                  tokensPerMinute: spec.tokensPerMinute, maximumConcurrency: spec.maximumConcurrency,
                                  budgetMicros: spec.budgetMicros, expiresAt: expires, createdAt: created, revokedAt: nil, metadata: spec.metadata)
        record.issuerChain = spec.issuerChain
        record.revokedWithIssuer = spec.revokedWithIssuer
        try await store.execute("""
            INSERT INTO portcullis_api_keys (key_id, secret_hash, name, user_id, team_id, role, allowed_models, rpm_limit, tpm_limit,
                concurrency_limit, budget_micros, expires_at, created_at, metadata, issuer_key_id, issuer_chain, revoke_with_issuer)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
            """, [.text(keyID), .text(hash(Substring(secret))), Self.optional(spec.name), Self.optional(spec.userID),
                  Self.optional(spec.teamID), .text(spec.role.rawValue),
                  .text(JSONWriter.string(.array(spec.allowedModels.map(JSONValue.string)))),
                  Self.optional(spec.requestsPerMinute), Self.optional(spec.tokensPerMinute), Self.optional(spec.maximumConcurrency),
                  Self.optional(spec.budgetMicros), .integer(expires), .integer(created), .text(JSONWriter.string(.object(spec.metadata))),
                  Self.optional(spec.issuerChain.first), .text(JSONWriter.string(.array(spec.issuerChain.map(JSONValue.string)))),
                  .integer(spec.revokedWithIssuer ? 1 : 0)])
        return IssuedAPIKey(record: record, key: "\(Self.prefix)\(keyID)_\(secret)")
    }

    /// The key's record when `text` is a valid, unexpired, unrevoked key (its current secret,
    /// or a rotated-out one within its grace period, which `secretValidUntil` then gives); nil otherwise.
    public func authenticate(_ text: String, now: Date = Date()) async throws -> APIKeyRecord? {
        guard let (id, secret) = Self.parse(text) else { return nil }
        let rows = try await store.query("SELECT * FROM portcullis_api_keys WHERE key_id = $1", [.text(String(id))])
        guard let row = rows.first else { return nil }
        let presented = Array(hash(secret).utf8)
        let nowSeconds = Int64(now.timeIntervalSince1970)
        var validUntil: Int64?
        if !Self.constantTimeEquals(presented, Array((row["secret_hash"].text ?? "").utf8)) {
            guard let until = Self.previousSecrets(row).first(where: { nowSeconds < $0.until && Self.constantTimeEquals(presented, Array($0.hash.utf8)) })?.until
            else { return nil }
            validUntil = until
        }
        var record = Self.record(row)
        if record.revokedAt != nil { return nil }
        if let expires = record.expiresAt, nowSeconds >= expires { return nil }
        record.secretValidUntil = validUntil
        return record
    }

    /// Rotated-out secrets of a row with the end of their grace (the list, and the single
    /// previous secret that keys rotated before the list existed have).
    static func previousSecrets(_ row: SQLRow) -> [(hash: String, until: Int64)] {
        var secrets: [(hash: String, until: Int64)] = []
        if let text = row["previous_secrets"].text, let list = (try? JSONParser.parse(text))?.arrayValue {
            for entry in list {
                guard let object = entry.objectValue, let hash = object["hash"]?.stringValue, let until = object["until"]?.integerValue else { continue }
                secrets.append((hash, until))
            }
        }
        if let hash = row["previous_secret_hash"].text, let until = row["previous_valid_until"].integer, !secrets.contains(where: { $0.hash == hash }) {
            secrets.append((hash, until))
        }
        return secrets
    }

    /// Issues a new secret for the key; the current one keeps working for `grace` seconds, and
    /// secrets rotated out earlier keep the grace they were given.
    public func rotate(keyID: String, grace: Double, now: Date = Date()) async throws -> IssuedAPIKey? {
        let secret = Self.randomHex(bytes: 32)
        let nowSeconds = Int64(now.timeIntervalSince1970)
        let until = Int64(now.timeIntervalSince1970 + grace)
        let newHash = hash(Substring(secret))
        let row: SQLRow? = try await store.transaction { transaction in
            let rows = try await transaction.query("SELECT * FROM portcullis_api_keys WHERE key_id = $1 AND revoked_at IS NULL", [.text(keyID)])
            guard let current = rows.first else { return nil }
            var previous = Self.previousSecrets(current).filter { $0.until > nowSeconds }
            if let currentHash = current["secret_hash"].text, until > nowSeconds { previous.append((currentHash, until)) }
            let list = JSONValue.array(previous.map { ["hash": .string($0.hash), "until": .integer($0.until)] })
            try await transaction.execute("""
                UPDATE portcullis_api_keys SET previous_secret_hash = NULL, previous_valid_until = NULL, previous_secrets = $2, secret_hash = $3
                WHERE key_id = $1
                """, [.text(keyID), .text(JSONWriter.string(list)), .text(newHash)])
            return current
        }
        guard let row else { return nil }
        return IssuedAPIKey(record: Self.record(row), key: "\(Self.prefix)\(keyID)_\(secret)")
    }

    /// Revokes the key at once; true when it existed and was active.
    @discardableResult
    public func revoke(keyID: String, now: Date = Date()) async throws -> Bool {
        let rows = try await store.query("UPDATE portcullis_api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL RETURNING key_id",
                                         [.text(keyID), .integer(Int64(now.timeIntervalSince1970))])
        return !rows.isEmpty
    }

    /// The key's owner erased (a data subject's erasure): the key is revoked and keeps no name,
    /// user or metadata; its id stays, as audit records name it. True when the key existed.
    @discardableResult
    public func forgetOwner(keyID: String, now: Date = Date()) async throws -> Bool {
        let rows = try await store.query("""
            UPDATE portcullis_api_keys SET revoked_at = COALESCE(revoked_at, $2), name = NULL, user_id = NULL, metadata = '{}' WHERE key_id = $1 RETURNING key_id
            """, [.text(keyID), .integer(Int64(now.timeIntervalSince1970))])
        return !rows.isEmpty
    }

    /// Revokes, at once, the active keys minted by `keyID` (and those minted by them, in turn)
    /// that are revoked with their issuer; returns their ids.
    public func revokeMinted(by keyID: String, now: Date = Date()) async throws -> [String] {
        var revoked: [String] = []
        var issuers = [keyID]
        while let issuer = issuers.popLast() {
            let rows = try await store.query("""
                UPDATE portcullis_api_keys SET revoked_at = $2 WHERE issuer_key_id = $1 AND revoke_with_issuer = 1 AND revoked_at IS NULL RETURNING key_id
                """, [.text(issuer), .integer(Int64(now.timeIntervalSince1970))])
            let ids = rows.compactMap { $0["key_id"].text }
            revoked += ids
            issuers += ids
        }
        return revoked
    }

    /// The key `keyID`, active or not.
    public func get(keyID: String) async throws -> APIKeyRecord? {
        try await store.query("SELECT * FROM portcullis_api_keys WHERE key_id = $1", [.text(keyID)]).first.map(Self.record)
    }

    /// Records when keys were last used: one statement per flush, never one per request.
    public func recordLastUsed(_ times: [String: Int64]) async throws {
        guard !times.isEmpty else { return }
        try await store.transaction { transaction in
            for (keyID, time) in times.sorted(by: { $0.key < $1.key }) {
                try await transaction.execute("""
                    UPDATE portcullis_api_keys SET last_used_at = $2 WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)
                    """, [.text(keyID), .integer(time)])
            }
        }
    }

    /// Keys, newest first, optionally of one user or team.
    public func list(userID: String? = nil, teamID: String? = nil, limit: Int = 100, offset: Int = 0) async throws -> [APIKeyRecord] {
        var filter = SQLFilter()
        if let userID { filter.add("user_id", .text(userID)) }
        if let teamID { filter.add("team_id", .text(teamID)) }
        let whereClause = filter.clause
        let limitBind = filter.bind(.integer(Int64(limit)))
        let offsetBind = filter.bind(.integer(Int64(offset)))
        return try await store.query("""
            SELECT * FROM portcullis_api_keys \(whereClause) ORDER BY created_at DESC, key_id LIMIT \(limitBind) OFFSET \(offsetBind)
            """, filter.binds).map(Self.record)
    }

    static func optional(_ value: String?) -> SQLValue { value.map(SQLValue.text) ?? .null }
    static func optional(_ value: Int64?) -> SQLValue { value.map(SQLValue.integer) ?? .null }

    static func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }

    static func record(_ row: SQLRow) -> APIKeyRecord {
        let models = (try? JSONParser.parse(row["allowed_models"].text ?? "[]"))?.arrayValue?.compactMap(\.stringValue) ?? []
        let metadata = (try? JSONParser.parse(row["metadata"].text ?? "{}"))?.objectValue ?? JSONObject()
        var result = APIKeyRecord(keyID: row["key_id"].text ?? "", name: row["name"].text, userID: row["user_id"].text,
                            teamID: row["team_id"].text, role: Role(rawValue: row["role"].text ?? "") ?? .user, allowedModels: models,
                            requestsPerMinute: row["rpm_limit"].integer, tokensPerMinute: row["tpm_limit"].integer,
                            maximumConcurrency: row["concurrency_limit"].integer, budgetMicros: row["budget_micros"].integer,
                            expiresAt: row["expires_at"].integer, createdAt: row["created_at"].integer ?? 0,
                            revokedAt: row["revoked_at"].integer, metadata: metadata)
        result.lastUsedAt = row["last_used_at"].integer
        result.issuerChain = (try? JSONParser.parse(row["issuer_chain"].text ?? "[]"))?.arrayValue?.compactMap(\.stringValue) ?? []
        result.revokedWithIssuer = row["revoke_with_issuer"].integer == 1
        return result
    }
}
