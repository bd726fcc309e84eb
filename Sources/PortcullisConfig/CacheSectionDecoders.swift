import PortcullisCache

/// The `cache` section, and the `cache` overrides of model groups and guard policies.
extension ConfigurationLoader {
    static func decodeCache(_ reader: NodeReader, into cache: inout GatewayConfiguration.Cache) {
        guard reader.expectMapping(allowedKeys: ["exact", "ttl_seconds", "maximum_ttl_seconds", "max_bytes", "max_entry_bytes", "scope",
                                                 "redis_timeout_seconds", "charge_hits", "dedup", "embedding_batch", "semantic"]) else { return }
        cache.exact = reader.bool("exact") ?? cache.exact
        cache.ttlSeconds = reader.number("ttl_seconds", in: 1...31_536_000) ?? cache.ttlSeconds
        cache.maximumTTLSeconds = reader.number("maximum_ttl_seconds", in: 1...31_536_000) ?? cache.maximumTTLSeconds
        cache.maximumBytes = reader.integer("max_bytes", in: 1024...68_719_476_736) ?? cache.maximumBytes
        cache.maximumEntryBytes = reader.integer("max_entry_bytes", in: 256...1_073_741_824) ?? cache.maximumEntryBytes
        cache.redisTimeoutSeconds = reader.number("redis_timeout_seconds", in: 0.001...10) ?? cache.redisTimeoutSeconds
        cache.chargeHits = reader.bool("charge_hits") ?? cache.chargeHits
        if let scope = reader.string("scope") {
            if let parsed = GatewayConfiguration.Cache.Scope(rawValue: scope) {
                cache.scope = parsed
            } else {
                reader.issue("scope", "must be team or key; got '\(scope)'")
            }
        }
        if let batch = reader.child("embedding_batch"), batch.expectMapping(allowedKeys: ["window_ms", "max_inputs"]) {
            if let window = batch.number("window_ms", in: 0...100) { cache.embeddingBatchWindowSeconds = window / 1000 }
            cache.embeddingBatchMaximumInputs = batch.integer("max_inputs", in: 1...2048) ?? cache.embeddingBatchMaximumInputs
        }
        if let dedup = reader.string("dedup") {
            if let parsed = GatewayConfiguration.Cache.Deduplication(rawValue: dedup) {
                cache.deduplication = parsed
            } else {
                reader.issue("dedup", "must be deterministic, always or off; got '\(dedup)'")
            }
        }
        if let semantic = reader.child("semantic") { cache.semantic = decodeSemantic(semantic) }
        if cache.maximumEntryBytes > cache.maximumBytes {
            reader.issue("max_entry_bytes", "must not exceed max_bytes (\(cache.maximumBytes))")
        }
    }

    /// `models[].cache` and `guardrails.policies[].cache`: `{ exact, ttl_seconds }` for that group or policy.
    static func decodeCacheOverrides(_ root: NodeReader, into cache: inout GatewayConfiguration.Cache) {
        if let models = root.child("models"), models.isSequence {
            for model in models.elements() {
                guard let name = model.string("name"), let reader = model.child("cache") else { continue }
                if let override = decodeCacheOverride(reader) { cache.models[name] = override }
            }
        }
        if let policies = root.child("guardrails")?.child("policies"), policies.isSequence {
            for policy in policies.elements() {
                guard let name = policy.string("name"), let reader = policy.child("cache") else { continue }
                if let override = decodeCacheOverride(reader) { cache.policies[name] = override }
            }
        }
    }

    static func decodeCacheOverride(_ reader: NodeReader) -> GatewayConfiguration.Cache.Override? {
        guard reader.expectMapping(allowedKeys: ["exact", "ttl_seconds", "semantic", "threshold"]) else { return nil }
        return .init(exact: reader.bool("exact"), ttlSeconds: reader.number("ttl_seconds", in: 1...31_536_000), semantic: reader.bool("semantic"),
                     threshold: reader.number("threshold", in: 0.5...1))
    }

    /// `cache.semantic`: `{ embedding_model, threshold, model_directory, timeout_ms, max_entries }`.
    static func decodeSemantic(_ reader: NodeReader) -> GatewayConfiguration.Cache.Semantic? {
        guard reader.expectMapping(allowedKeys: ["embedding_model", "threshold", "model_directory", "timeout_ms", "max_entries"]) else { return nil }
        var semantic = GatewayConfiguration.Cache.Semantic()
        if let model = reader.string("embedding_model") {
            if model.isEmpty { reader.issue("embedding_model", "must be builtin or the name of an embedding model group") } else { semantic.embeddingModel = model }
        }
        semantic.threshold = reader.number("threshold", in: 0.5...1) ?? semantic.threshold
        semantic.modelDirectory = reader.string("model_directory") ?? semantic.modelDirectory
        if let timeout = reader.number("timeout_ms", in: 1...10_000) { semantic.timeoutSeconds = timeout / 1000 }
        semantic.maximumEntries = reader.integer("max_entries", in: 1...10_000_000) ?? semantic.maximumEntries
        return semantic
    }
}
