import PortcullisCore

/// The `cache` section: which answers are kept and served again, for how long, and whose.
///
/// Off by default. A model group (`models[].cache`) or a guard policy (`guardrails.policies[].cache`)
/// can override `exact` and the time to live; a policy's override wins over its model's.
public struct CacheConfiguration: Sendable, Equatable {
    /// Whose entries a request may see: its team's (a key without a team: its own), or always its key's own.
    public enum Scope: String, Sendable, Equatable, CaseIterable {
        case team
        case key
    }

    /// Which identical requests in flight at once share one upstream call.
    public enum Deduplication: String, Sendable, Equatable, CaseIterable {
        /// Those whose answer is meant to be reproducible: `temperature` 0 or a fixed `seed`.
        case deterministic
        /// Every identical request.
        case always
        case off

        /// Whether `request` may share another's call.
        public func applies(to request: ChatRequest) -> Bool {
            switch self {
            case .deterministic: request.temperature == 0 || request.seed != nil
            case .always: true
            case .off: false
            }
        }
    }

    /// What a model group or a guard policy changes for its requests.
    public struct Override: Sendable, Equatable {
        /// Whether exact caching is on for them (nil: as the level above).
        public var exact: Bool?
        /// Seconds an entry lives (nil: as the level above).
        public var ttlSeconds: Double?

        public init(exact: Bool? = nil, ttlSeconds: Double? = nil) {
            self.exact = exact
            self.ttlSeconds = ttlSeconds
        }
    }

    /// Exact caching for every model group unless overridden. Default false.
    public var exact = false
    /// Seconds an entry lives unless the model group, policy or request says otherwise. Default 3600.
    public var ttlSeconds: Double = 3600
    /// Longest time to live a request may ask for (`cache.ttl`). Default 86400.
    public var maximumTTLSeconds: Double = 86_400
    /// Bytes the in-process cache may hold (least recently used entries go first). Default 64 MiB.
    public var maximumBytes = 64 << 20
    /// Largest answer kept, in bytes of its stored form; larger ones are not cached. Default 1 MiB.
    public var maximumEntryBytes = 1 << 20
    /// Whose entries a request may see. Default `team`.
    public var scope: Scope = .team
    /// Time limit of one shared-cache (Redis) read or write; past it the local cache answers. Default 0.05 s.
    public var redisTimeoutSeconds: Double = 0.05
    /// Whether a cache hit (or a request that joined another's call) is charged to budgets as if
    /// it had been served. Default false: they cost nothing.
    public var chargeHits = false
    /// Seconds single-input embedding requests wait to be sent together (0: never batched). Default 0.01.
    public var embeddingBatchWindowSeconds = 0.01
    /// Inputs in one batched embedding call at most. Default 64.
    public var embeddingBatchMaximumInputs = 64
    /// In-flight de-duplication. Default `deterministic`.
    public var deduplication: Deduplication = .deterministic
    /// Overrides by model group name.
    public var models: [String: Override] = [:]
    /// Overrides by guard policy name.
    public var policies: [String: Override] = [:]

    public init() {}

    /// What applies to a request for `model` under guard policy `policy`: whether exact caching is on and the entry's lifetime.
    public func settings(model: String, policy: String?) -> (exact: Bool, ttlSeconds: Double) {
        var exact = self.exact, ttl = ttlSeconds
        for override in [models[model], policy.flatMap { policies[$0] }] {
            guard let override else { continue }
            exact = override.exact ?? exact
            ttl = override.ttlSeconds ?? ttl
        }
        return (exact, ttl)
    }

    /// Whether any model group or policy can have exact caching on.
    public var mayCache: Bool {
        exact || models.values.contains { $0.exact == true } || policies.values.contains { $0.exact == true }
    }
}
