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
        /// Whether the semantic cache is on for them, when it is configured (nil: as the level above).
        public var semantic: Bool?
        /// Their similarity threshold for a semantic hit (nil: as the level above).
        public var threshold: Double?

        public init(exact: Bool? = nil, ttlSeconds: Double? = nil, semantic: Bool? = nil, threshold: Double? = nil) {
            self.exact = exact
            self.ttlSeconds = ttlSeconds
            self.semantic = semantic
            self.threshold = threshold
        }
    }

    /// The semantic cache (`cache.semantic`): the last user turn is embedded and an answer
    /// cached for a question at least `threshold` similar is served, when everything else in
    /// the request (tenant, namespace, policy, model group, system prompt, earlier turns, tools,
    /// parameters) is exactly the same.
    public struct Semantic: Sendable, Equatable {
        /// The value of `embeddingModel` that names the in-process embedder.
        public static let builtin = "builtin"
        /// `builtin` (all-MiniLM-L6-v2 in process, on the CPU) or the name of an embedding model
        /// group, called through routing. Default `builtin`.
        public var embeddingModel = Semantic.builtin
        /// Least cosine similarity of a hit. Default 0.95.
        public var threshold = 0.95
        /// Where the built-in embedder's model is (`scripts/fetch-embedder.sh` puts it there). Default `models/all-MiniLM-L6-v2`.
        public var modelDirectory = "models/all-MiniLM-L6-v2"
        /// Longest an embedding may take; past it the request is a miss. Default 0.2 s.
        public var timeoutSeconds = 0.2
        /// Questions remembered in process at most (per replica); past it the least recently used
        /// partitions, then the oldest questions of a partition, are forgotten. Default 100000.
        public var maximumEntries = 100_000

        public init() {}
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
    /// The semantic cache; nil (the default): off.
    public var semantic: Semantic?
    /// Overrides by model group name.
    public var models: [String: Override] = [:]
    /// Overrides by guard policy name.
    public var policies: [String: Override] = [:]

    public init() {}

    /// What applies to a request for `model` under guard policy `policy`: whether exact
    /// caching is on, the entry's lifetime, and the semantic threshold (nil: no semantic lookup).
    public func settings(model: String, policy: String?) -> Applied {
        var applied = Applied(exact: exact, ttlSeconds: ttlSeconds, semantic: semantic != nil, threshold: semantic?.threshold ?? 1)
        for override in [models[model], policy.flatMap { policies[$0] }] {
            guard let override else { continue }
            applied.exact = override.exact ?? applied.exact
            applied.ttlSeconds = override.ttlSeconds ?? applied.ttlSeconds
            if semantic != nil { applied.semantic = override.semantic ?? applied.semantic }
            applied.threshold = override.threshold ?? applied.threshold
        }
        return applied
    }

    /// What applies to one request.
    public struct Applied: Sendable, Equatable {
        public var exact: Bool
        public var ttlSeconds: Double
        /// Whether the semantic cache is looked in (it is configured and not turned off for the group or policy).
        public var semantic: Bool
        public var threshold: Double
    }

    /// Whether any model group or policy can have exact or semantic caching on.
    public var mayCache: Bool {
        exact || semantic != nil || models.values.contains { $0.exact == true } || policies.values.contains { $0.exact == true }
    }
}
