import Crypto
import Foundation
import PortcullisCore
import PortcullisStorage
import Logging
import ServiceLifecycle
import Synchronization

/// One data key per data subject (envelope encryption): AES-256 keys, each stored wrapped by
/// the key-encryption key, that encrypt what the gateway keeps of that subject. Erasing a
/// subject destroys its key (crypto-shredding): what was encrypted under it can no longer be read.
///
/// A subject is named `user:<id>` or `key:<id>`; the table never holds the name, only its
/// HMAC under a secret of the gateway's own (itself wrapped by the key-encryption key), and a
/// random reference (`subject_ref`) that stored payloads carry instead of the subject.
public final class SubjectKeys: Sendable {
    public static let migrations: [Migration] = [
        Migration(version: 310, name: "data protection keys and payloads") { dialect in
            let blob = dialect == .postgres ? "BYTEA" : "BLOB"
            return [
                """
                CREATE TABLE portcullis_subject_keys (
                    subject_digest TEXT PRIMARY KEY, subject_ref TEXT NOT NULL UNIQUE, kek_version TEXT, wrapped \(blob),
                    created_at BIGINT NOT NULL, rewrapped_at BIGINT, erased_at BIGINT
                )
                """,
                "CREATE TABLE portcullis_protection_secrets (name TEXT PRIMARY KEY, kek_version TEXT NOT NULL, wrapped \(blob) NOT NULL, created_at BIGINT NOT NULL)",
                """
                CREATE TABLE audit_payloads (
                    audit_id TEXT PRIMARY KEY, request_id TEXT, subject_ref TEXT NOT NULL, team_id TEXT, created_at BIGINT NOT NULL, mode TEXT NOT NULL,
                    ciphertext \(blob) NOT NULL
                )
                """,
                "CREATE INDEX audit_payloads_subject ON audit_payloads (subject_ref, created_at)",
                "CREATE INDEX audit_payloads_created ON audit_payloads (created_at)",
            ]
        },
    ]

    /// A subject's key as the encrypting side needs it.
    public struct SubjectKey: Sendable {
        /// The pseudonymous reference stored beside what the key encrypts.
        public let ref: String
        public let key: SymmetricKey
    }

    /// What an erasure did.
    public struct Erasure: Sendable, Equatable {
        public let ref: String
        /// Unix microseconds.
        public let erasedAt: Int64
        /// Whether it had been erased before (erasure is idempotent).
        public let alreadyErased: Bool
    }

    public let service: any KeyEncryptionService
    private let store: any SQLStore
    private let digestKey = Mutex<SymmetricKey?>(nil)
    /// Unwrapped keys by subject and by reference, each with when it was unwrapped: kept at most
    /// `cacheSeconds` (an erasure also drops them at once on every replica, through the control
    /// bus; the limit bounds a replica that missed the message).
    private let cache = Mutex<(byName: [String: (SubjectKey, ContinuousClock.Instant)], byRef: [String: (SymmetricKey, ContinuousClock.Instant)])>(([:], [:]))
    let cacheSeconds: Double
    static let cacheLimit = 10_000

    public init(store: any SQLStore, service: any KeyEncryptionService, cacheSeconds: Double = 300) {
        self.store = store
        self.service = service
        self.cacheSeconds = cacheSeconds
    }

    /// Loads (or makes, on first start) the secret subject names are digested with.
    public func prepare() async throws {
        if digestKey.withLock({ $0 != nil }) { return }
        let name = "subject_digest"
        if let row = try await store.query("SELECT kek_version, wrapped FROM portcullis_protection_secrets WHERE name = $1", [.text(name)]).first {
            let wrapped = WrappedKey(version: row["kek_version"].text ?? "", ciphertext: row["wrapped"].blob ?? [])
            let bytes = try await service.unwrap(wrapped, context: "secret:" + name)
            digestKey.withLock { $0 = SymmetricKey(data: bytes) }
            return
        }
        let secret = SymmetricKey(size: .bits256)
        let wrapped = try await service.wrap(secret.bytes, context: "secret:" + name)
        try await store.execute("""
            INSERT INTO portcullis_protection_secrets (name, kek_version, wrapped, created_at) VALUES ($1, $2, $3, $4)
            ON CONFLICT (name) DO NOTHING
            """, [.text(name), .text(wrapped.version), .blob(wrapped.ciphertext), .integer(Self.now())])
        // Another replica may have made it first: the stored one is the one.
        try await prepare()
    }

    /// The subject's name as the table keys it: HMAC-SHA256 under the gateway's secret, hex.
    public func digest(_ subject: String) async throws -> String {
        if digestKey.withLock({ $0 == nil }) { try await prepare() }
        guard let key = digestKey.withLock({ $0 }) else { throw DataProtectionError.keyServiceUnavailable("the data-protection secret is not loaded") }
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        for byte in HMAC<SHA256>.authenticationCode(for: Array(subject.utf8), using: key) {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: hex, as: UTF8.self)
    }

    /// The subject's data key, made (and stored wrapped) when it has none or was erased before.
    ///
    /// Requests that miss the cache for one subject at once share one read (or creation): the
    /// first fetches, the others wait for its answer, so a busy subject whose key expired from
    /// the cache costs the database and the key service one call, not one per request.
    public func key(for subject: String) async throws -> SubjectKey {
        while true {
            if let cached = cached(subject: subject) { return cached }
            // A key service that just failed is not asked again for a moment: requests keep flowing.
            if let until = unavailable.withLock({ $0 }), ContinuousClock.now < until.0 { throw DataProtectionError.keyServiceUnavailable(until.1) }
            let leads = inFlight.withLock { fetching -> Bool in
                guard fetching[subject] == nil else { return false }
                fetching[subject] = []
                return true
            }
            if leads {
                let result: Result<SubjectKey?, any Error>
                do {
                    result = .success(try await makeOrRead(subject))
                } catch DataProtectionError.keyServiceUnavailable(let reason) {
                    unavailable.withLock { $0 = (.now + .seconds(Self.retryAfterFailureSeconds), reason) }
                    result = .failure(DataProtectionError.keyServiceUnavailable(reason))
                } catch {
                    result = .failure(error)
                }
                for waiter in inFlight.withLock({ $0.removeValue(forKey: subject) ?? [] }) { waiter.resume(with: result) }
                guard let key = try result.get() else { continue }
                return key
            }
            let joined: SubjectKey? = try await withCheckedThrowingContinuation { continuation in
                let waiting = inFlight.withLock { fetching -> Bool in
                    guard fetching[subject] != nil else { return false }
                    fetching[subject]!.append(continuation)
                    return true
                }
                if !waiting { continuation.resume(returning: nil) }   // the fetch ended meanwhile: look again
            }
            if let joined { return joined }
        }
    }

    /// Fetches under way, by subject, with who waits for each.
    private let inFlight = Mutex<[String: [CheckedContinuation<SubjectKey?, any Error>]]>([:])

    /// Seconds a failed key service is left alone before it is asked again.
    static let retryAfterFailureSeconds = 5.0
    private let unavailable = Mutex<(ContinuousClock.Instant, String)?>(nil)

    private func makeOrRead(_ subject: String) async throws -> SubjectKey {
        let digest = try await digest(subject)
        for _ in 0..<3 {
            let row = try await store.query("SELECT subject_ref, kek_version, wrapped FROM portcullis_subject_keys WHERE subject_digest = $1",
                                            [.text(digest)]).first
            if let row, let ref = row["subject_ref"].text, let bytes = row["wrapped"].blob {
                let key = SymmetricKey(data: try await service.unwrap(WrappedKey(version: row["kek_version"].text ?? "", ciphertext: bytes),
                                                                      context: "subject:" + ref))
                return remember(SubjectKey(ref: ref, key: key), subject: subject)
            }
            // None yet, or destroyed by an erasure: a new key under a new reference. Two replicas
            // racing both write conditionally and read back the one that won.
            let ref = FastRandom.hex(bytes: 16)
            let key = SymmetricKey(size: .bits256)
            let wrapped = try await service.wrap(key.bytes, context: "subject:" + ref)
            let binds: [SQLValue] = [.text(digest), .text(ref), .text(wrapped.version), .blob(wrapped.ciphertext), .integer(Self.now())]
            if row == nil {
                try await store.execute("""
                    INSERT INTO portcullis_subject_keys (subject_digest, subject_ref, kek_version, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (subject_digest) DO NOTHING
                    """, binds)
            } else {
                try await store.execute("""
                    UPDATE portcullis_subject_keys SET subject_ref = $2, kek_version = $3, wrapped = $4, created_at = $5, rewrapped_at = NULL, erased_at = NULL
                    WHERE subject_digest = $1 AND wrapped IS NULL
                    """, binds)
            }
        }
        throw DataProtectionError.keyServiceUnavailable("the data key of a subject could not be stored")
    }

    /// The key stored under `ref`; `.erased` once its subject was erased.
    public func key(ref: String) async throws -> SymmetricKey {
        if let cached = cache.withLock({ $0.byRef[ref] }), ContinuousClock.now - cached.1 < .seconds(cacheSeconds) { return cached.0 }
        guard let row = try await store.query("SELECT kek_version, wrapped FROM portcullis_subject_keys WHERE subject_ref = $1", [.text(ref)]).first,
              let bytes = row["wrapped"].blob else {
            throw DataProtectionError.erased("subject \(ref)")
        }
        let key = SymmetricKey(data: try await service.unwrap(WrappedKey(version: row["kek_version"].text ?? "", ciphertext: bytes), context: "subject:" + ref))
        cache.withLock { cache in
            if cache.byRef.count >= Self.cacheLimit { cache.byRef.removeAll() }
            cache.byRef[ref] = (key, .now)
        }
        return key
    }

    /// The subject's reference and whether its key still exists (nil: the subject never had a key).
    public func lookup(subject: String) async throws -> (ref: String, erasedAt: Int64?)? {
        let digest = try await digest(subject)
        guard let row = try await store.query("SELECT subject_ref, erased_at FROM portcullis_subject_keys WHERE subject_digest = $1", [.text(digest)]).first,
              let ref = row["subject_ref"].text else { return nil }
        return (ref, row["erased_at"].integer)
    }

    /// Destroys the subject's key in the database and in this process (nil: it never had one).
    /// Other replicas drop their copy within `cacheSeconds`, or at once through `forget(ref:)`.
    public func erase(subject: String, now: Int64 = SubjectKeys.now()) async throws -> Erasure? {
        let digest = try await digest(subject)
        guard let row = try await store.query("SELECT subject_ref, wrapped, erased_at FROM portcullis_subject_keys WHERE subject_digest = $1",
                                              [.text(digest)]).first, let ref = row["subject_ref"].text else { return nil }
        forget(ref: ref)
        cache.withLock { _ = $0.byName.removeValue(forKey: subject) }
        if row["wrapped"].blob == nil, let erasedAt = row["erased_at"].integer {
            return Erasure(ref: ref, erasedAt: erasedAt, alreadyErased: true)
        }
        try await store.execute("UPDATE portcullis_subject_keys SET wrapped = NULL, kek_version = NULL, erased_at = $2 WHERE subject_digest = $1",
                                [.text(digest), .integer(now)])
        return Erasure(ref: ref, erasedAt: now, alreadyErased: false)
    }

    /// Drops the unwrapped key of `ref` from this process (another replica erased its subject).
    public func forget(ref: String) {
        cache.withLock { cache in
            cache.byRef.removeValue(forKey: ref)
            cache.byName = cache.byName.filter { $0.value.0.ref != ref }
        }
    }

    /// Re-wraps every stored data key and secret that is not under the current version (after
    /// a rotation), without touching what they encrypt; returns how many it re-wrapped.
    public func rewrap() async throws -> Int {
        let current = try await service.current()
        var count = 0
        for (table, column, prefix) in [("portcullis_protection_secrets", "name", "secret:"), ("portcullis_subject_keys", "subject_ref", "subject:")] {
            let rows = try await store.query("SELECT \(column) AS owner, kek_version, wrapped FROM \(table) WHERE wrapped IS NOT NULL AND kek_version <> $1",
                                             [.text(current.id)])
            for row in rows {
                guard let owner = row["owner"].text, let old = row["kek_version"].text, let bytes = row["wrapped"].blob else { continue }
                let key = try await service.unwrap(WrappedKey(version: old, ciphertext: bytes), context: prefix + owner)
                let wrapped = try await service.wrap(key, context: prefix + owner)
                let stamp = table == "portcullis_subject_keys" ? ", rewrapped_at = $5" : ""
                var binds: [SQLValue] = [.text(owner), .text(old), .text(wrapped.version), .blob(wrapped.ciphertext)]
                if !stamp.isEmpty { binds.append(.integer(Self.now())) }
                try await store.execute("UPDATE \(table) SET kek_version = $3, wrapped = $4\(stamp) WHERE \(column) = $1 AND kek_version = $2", binds)
                count += 1
            }
        }
        return count
    }

    /// How many data keys each key-encryption key version wraps (destroyed keys not counted).
    public func keysByVersion() async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await store.query("SELECT kek_version, COUNT(*) AS keys FROM portcullis_subject_keys WHERE wrapped IS NOT NULL GROUP BY kek_version", []) {
            counts[row["kek_version"].text ?? "", default: 0] += Int(row["keys"].integer ?? 0)
        }
        return counts
    }

    private func cached(subject: String) -> SubjectKey? {
        cache.withLock { cache in
            guard let entry = cache.byName[subject], ContinuousClock.now - entry.1 < .seconds(cacheSeconds) else { return nil }
            return entry.0
        }
    }

    private func remember(_ key: SubjectKey, subject: String) -> SubjectKey {
        cache.withLock { cache in
            if cache.byName.count >= Self.cacheLimit { cache.byName.removeAll() }
            cache.byName[subject] = (key, .now)
            if cache.byRef.count >= Self.cacheLimit { cache.byRef.removeAll() }
            cache.byRef[key.ref] = (key.key, .now)
        }
        return key
    }

    /// Unix microseconds.
    public static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }
}

extension SymmetricKey {
    var bytes: [UInt8] { withUnsafeBytes { Array($0) } }
}

extension SubjectKeys {
    /// A new key-encryption key version, then every data key re-wrapped under it (the
    /// payloads they encrypt are not touched). Returns the new version and how many keys moved.
    public func rotate() async throws -> (version: KeyVersion, rewrapped: Int) {
        let version = try await service.rotate()
        return (version, try await rewrap())
    }
}

/// Rotates the key-encryption key when its current version is older than the policy
/// (`kms.rotation_days`), checked hourly, and re-wraps data keys left under older versions
/// (a rotation another process made).
public struct KeyRotationService: Service {
    let keys: SubjectKeys
    let rotationDays: Int
    let logger: Logger

    public init(keys: SubjectKeys, rotationDays: Int, logger: Logger) {
        self.keys = keys
        self.rotationDays = rotationDays
        self.logger = logger
    }

    /// One check: rotates when due; returns whether it rotated.
    @discardableResult
    public func check(now: Date = Date()) async throws -> Bool {
        if let file = keys.service as? LocalKeyFile { try file.reload() }
        let current = try await keys.service.current()
        if rotationDays > 0, Double(current.createdAt) + Double(rotationDays) * 86_400 <= now.timeIntervalSince1970 {
            let (version, moved) = try await keys.rotate()
            logger.notice("key-encryption key rotated", metadata: ["version": "\(version.id)", "data_keys_rewrapped": "\(moved)"])
            return true
        }
        let moved = try await keys.rewrap()
        if moved > 0 { logger.notice("data keys re-wrapped under the current key-encryption key", metadata: ["data_keys": "\(moved)"]) }
        return false
    }

    public func run() async throws {
        await Periodic.run(every: .seconds(3600)) {
            do {
                try await check()
            } catch {
                logger.error("key rotation check failed", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// A record's personal fields (the caller's user id and address) sealed under its subject's
/// data key: the chain hashes the ciphertext, so erasing the subject (destroying the key)
/// pseudonymises every record of it without changing one byte of the chain.
public enum PersonalFields {
    /// The details member holding the sealed fields, and the one naming the subject's reference.
    public static let sealedMember = "personal"
    public static let referenceMember = "subject_ref"
    /// What a reader shows in place of the fields once the subject was erased.
    public static let erased = "erased"

    static func context(ref: String, requestID: String?) -> String { "personal:\(ref):\(requestID ?? "")" }

    /// `fields` (sorted JSON) sealed under `key`, base64.
    public static func seal(_ fields: JSONObject, key: SubjectKeys.SubjectKey, requestID: String?) -> String? {
        var bytes: [UInt8] = []
        JSONWriter.writeSortingKeys(.object(fields), into: &bytes)
        guard let sealed = try? Envelope.seal(bytes, key: key.key, context: context(ref: key.ref, requestID: requestID)) else { return nil }
        return Data(sealed).base64EncodedString()
    }

    /// `record` (as the API shows it) with its sealed fields opened into its details: the
    /// actor's `user_id` and `source_address`. Once the subject is erased they are gone, the
    /// details say `personal: erased` and the actor's user is its pseudonym `erased:<ref>`.
    public static func open(_ record: JSONObject, keys: SubjectKeys?) async -> JSONObject {
        guard var details = record["details"]?.objectValue, let sealed = details[sealedMember]?.stringValue,
              let ref = details[referenceMember]?.stringValue else { return record }
        var opened: JSONObject?
        var erasedSubject = false
        if let keys, let bytes = Data(base64Encoded: sealed) {
            do {
                let key = try await keys.key(ref: ref)
                let plaintext = try Envelope.open(Array(bytes), key: key, context: context(ref: ref, requestID: record["request_id"]?.stringValue),
                                                  what: "the personal fields of audit record \(record["id"]?.stringValue ?? "")")
                opened = (try? JSONParser.parse(plaintext))?.objectValue
            } catch DataProtectionError.erased {
                erasedSubject = true
            } catch {}
        }
        var result = record
        if let opened {
            details[sealedMember] = nil
            if let address = opened["source_address"] { details["source_address"] = address }
            if let user = opened["user_id"], var actor = details["actor"]?.objectValue {
                actor["user_id"] = user
                details["actor"] = .object(actor)
            }
        } else if erasedSubject {
            details[sealedMember] = .string(erased)
            if var actor = details["actor"]?.objectValue, actor["user_sealed"] != nil {
                actor["user_sealed"] = nil
                actor["user_id"] = .string("erased:" + ref)
                details["actor"] = .object(actor)
            }
        }
        if opened != nil, var actor = details["actor"]?.objectValue, actor["user_sealed"] != nil {
            actor["user_sealed"] = nil
            details["actor"] = .object(actor)
        }
        result["details"] = .object(details)
        return result
    }
}
