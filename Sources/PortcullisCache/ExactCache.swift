import Foundation
import PortcullisCore
import Synchronization

/// One answer kept by the cache, with what served it (for the routing headers and the savings).
public struct CachedAnswer: Sendable, Equatable {
    public var completion: ChatCompletion
    /// The deployment and model group that produced it.
    public var deployment: String
    public var group: String
    /// When it was stored (seconds since 1970).
    public var storedAt: Double
    /// What the call that produced it cost, in micro-dollars: what each hit saves.
    public var costMicros: Int64
    /// When it stops being served (seconds since 1970); set by `ExactCache.store`.
    public var expiresAt: Double
    /// The data subject whose request produced it, as `CacheKey.subjectTag` (nil: none known):
    /// erasing the subject removes the entry.
    public var subject: String?

    public init(completion: ChatCompletion, deployment: String, group: String, storedAt: Double, costMicros: Int64,
                expiresAt: Double = .infinity, subject: String? = nil) {
        self.completion = completion
        self.deployment = deployment
        self.group = group
        self.storedAt = storedAt
        self.costMicros = costMicros
        self.expiresAt = expiresAt
        self.subject = subject
    }

    /// The stored form (also what the shared cache holds).
    public func encoded() -> [UInt8] {
        var object: JSONObject = ["v": 1, "deployment": .string(deployment), "group": .string(group), "stored_at": .double(storedAt),
                                  "expires_at": .double(expiresAt), "cost_micros": .integer(costMicros), "answer": OpenAIWire.encodeChatCompletion(completion)]
        if let subject { object["subject"] = .string(subject) }
        return JSONWriter.bytes(.object(object))
    }

    /// The answer in `bytes`, or nil when they are not one this version wrote (a corrupt entry).
    public static func decode(_ bytes: [UInt8]) -> CachedAnswer? {
        guard let value = try? JSONParser.parse(bytes[...]), let object = value.objectValue, object["v"]?.integerValue == 1,
              let deployment = object["deployment"]?.stringValue, let group = object["group"]?.stringValue,
              let storedAt = object["stored_at"]?.doubleValue, let expiresAt = object["expires_at"]?.doubleValue, let cost = object["cost_micros"]?.integerValue,
              let answer = object["answer"], let completion = try? OpenAIWire.decodeChatCompletion(answer), !completion.choices.isEmpty
        else { return nil }
        return CachedAnswer(completion: completion, deployment: deployment, group: group, storedAt: storedAt, costMicros: cost,
                            expiresAt: expiresAt, subject: object["subject"]?.stringValue)
    }

    /// Whether an answer may be kept: every choice finished normally (`stop` or `tool_calls`)
    /// and none is empty. Truncated (`length`), filtered and refused answers are never cached.
    public static func isCacheable(_ completion: ChatCompletion) -> Bool {
        !completion.choices.isEmpty && completion.choices.allSatisfy { choice in
            guard choice.finishReason == .stop || choice.finishReason == .toolCalls else { return false }
            if let refusal = choice.message.refusal, !refusal.isEmpty { return false }
            return !(choice.message.content?.text ?? "").isEmpty || !choice.message.toolCalls.isEmpty
        }
    }
}

/// The shared tier of the cache (Redis when configured): every replica reads what any wrote.
public protocol SharedCacheStore: Sendable {
    func value(forKey key: String) async throws -> [UInt8]?
    func set(_ bytes: [UInt8], forKey key: String, ttlSeconds: Double) async throws
    func removeValue(forKey key: String) async throws
    /// Adds `member` to the set under `key`, which lives at least `ttlSeconds` from now.
    func add(_ member: String, toSet key: String, ttlSeconds: Double) async throws
    /// The members of the set under `key` (empty when there is none).
    func members(ofSet key: String) async throws -> [String]
}

/// The exact cache: an in-process LRU in front of an optional shared tier.
///
/// The shared tier is optional in every sense: a read or write that fails or takes longer than
/// its time limit is a local miss (or a local-only write), never a failed request, and after a
/// failure the tier is left alone for a second. An entry that cannot be decoded is dropped
/// from both tiers and counted.
public final class ExactCache: Sendable {
    /// Something that went wrong, told to the observer (for the metrics).
    public enum Event: String, Sendable {
        case corruptEntry = "corrupt_entry"
        case sharedFailure = "redis"
    }

    let local: LocalCache<CachedAnswer>
    let observe: @Sendable (Event) -> Void
    let shared: (any SharedCacheStore)?
    let sharedTimeout: Duration
    let maximumEntryBytes: Int
    private let sharedPausedUntil = Mutex<Double>(0)

    public init(maximumBytes: Int, maximumEntryBytes: Int, shared: (any SharedCacheStore)?, sharedTimeoutSeconds: Double,
                observe: @escaping @Sendable (Event) -> Void = { _ in }) {
        local = LocalCache(maximumBytes: maximumBytes)
        self.observe = observe
        self.shared = shared
        self.sharedTimeout = Deadline.seconds(sharedTimeoutSeconds)
        self.maximumEntryBytes = maximumEntryBytes
    }

    public convenience init(_ configuration: CacheConfiguration, shared: (any SharedCacheStore)?,
                            observe: @escaping @Sendable (Event) -> Void = { _ in }) {
        self.init(maximumBytes: configuration.maximumBytes, maximumEntryBytes: configuration.maximumEntryBytes, shared: shared,
                  sharedTimeoutSeconds: configuration.redisTimeoutSeconds, observe: observe)
    }

    /// The answer under `key`, from this process or the shared tier (which then fills the local one).
    public func answer(for key: CacheKey, now: Double = Date().timeIntervalSince1970) async -> CachedAnswer? {
        if let hit = local.value(forKey: key.digest, now: now) { return hit }
        guard let shared, sharedAvailable(now: now) else { return nil }
        let bytes: [UInt8]?
        do {
            bytes = try await Deadline.run(within: sharedTimeout) { try await shared.value(forKey: Self.sharedKey(key)) }
        } catch {
            sharedFailed(now: now)
            return nil
        }
        guard let bytes else { return nil }
        guard let answer = CachedAnswer.decode(bytes) else {
            observe(.corruptEntry)
            try? await Deadline.run(within: sharedTimeout) { try await shared.removeValue(forKey: Self.sharedKey(key)) }
            return nil
        }
        guard answer.expiresAt > now else { return nil }
        local.set(answer, forKey: key.digest, bytes: bytes.count, expires: answer.expiresAt)
        return answer
    }

    /// Keeps `answer` under `key` for `ttlSeconds` in both tiers; false when it is too large to keep.
    @discardableResult
    public func store(_ answer: CachedAnswer, for key: CacheKey, ttlSeconds: Double, now: Double = Date().timeIntervalSince1970) async -> Bool {
        var answer = answer
        answer.expiresAt = now + ttlSeconds
        let bytes = answer.encoded()
        guard bytes.count <= maximumEntryBytes else { return false }
        local.set(answer, forKey: key.digest, bytes: bytes.count, expires: answer.expiresAt)
        guard let shared, sharedAvailable(now: now) else { return true }
        let subject = answer.subject
        do {
            try await Deadline.run(within: sharedTimeout) {
                try await shared.set(bytes, forKey: Self.sharedKey(key), ttlSeconds: ttlSeconds)
                // The subject's index of entries, so that erasure finds them on every replica's behalf.
                if let subject { try await shared.add(key.digest, toSet: Self.subjectSetKey(subject), ttlSeconds: ttlSeconds) }
            }
        } catch {
            sharedFailed(now: now)
        }
        return true
    }

    /// Removes the entries a data subject's requests produced (`CacheKey.subjectTag`) from this
    /// process and from the shared tier; returns how many this process held and
    /// how many the shared tier held. Throws when the shared tier cannot be reached, so that
    /// an erasure does not report itself done while copies remain.
    public func erase(subject: String) async throws -> (local: Int, shared: Int) {
        let local = eraseLocally(subject: subject)
        guard let shared else { return (local, 0) }
        let removed = try await Deadline.run(within: .seconds(30)) { () async throws -> Int in
            let setKey = Self.subjectSetKey(subject)
            let digests = try await shared.members(ofSet: setKey)
            for digest in digests { try await shared.removeValue(forKey: Self.sharedKey(CacheKey(digest: digest))) }
            try await shared.removeValue(forKey: setKey)
            return digests.count
        }
        return (local, removed)
    }

    /// Removes this process's entries of a data subject (another replica erased the shared ones); returns how many went.
    @discardableResult
    public func eraseLocally(subject: String) -> Int {
        local.removeAll { _, answer in answer.subject == subject }
    }

    static func sharedKey(_ key: CacheKey) -> String { "portcullis:cache:v1:" + key.digest }

    static func subjectSetKey(_ subject: String) -> String { "portcullis:cache:v1:subject:" + subject }

    private func sharedAvailable(now: Double) -> Bool { sharedPausedUntil.withLock { $0 <= now } }

    private func sharedFailed(now: Double) {
        observe(.sharedFailure)
        sharedPausedUntil.withLock { $0 = now + 1 }
    }
}
