import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import PortcullisRouting
import PortcullisStorage
import PortcullisTLS
import Yams

/// One decoder per section of the file: each reads its keys, records what is wrong and keeps
/// the default where a value is missing or refused.
extension ConfigurationLoader {
    static func decode(_ root: NodeReader, into configuration: inout GatewayConfiguration) {
        guard root.expectMapping(allowedKeys: ["server", "auth", "storage", "limits", "ip_policy", "routing", "models", "log_level", "log_format",
                                               "guardrails", "audit", "tracing", "cache", "kms", "residency"]) else { return }
        if let server = root.child("server"), server.expectMapping(allowedKeys: ["host", "port", "max_body_bytes", "tls", "http2", "shutdown_grace_seconds",
                                                                                   "timeouts", "max_connections"]) {
            configuration.server.host = server.string("host") ?? configuration.server.host
            configuration.server.port = server.integer("port", in: 0...65535) ?? configuration.server.port
            configuration.server.maxBodyBytes = server.integer("max_body_bytes", in: 1024...1_073_741_824) ?? configuration.server.maxBodyBytes
            configuration.server.http2 = server.bool("http2") ?? configuration.server.http2
            configuration.server.shutdownGraceSeconds = server.number("shutdown_grace_seconds", in: 0...3600) ?? configuration.server.shutdownGraceSeconds
            configuration.server.maximumConnections = server.integer("max_connections", in: 1...1_000_000) ?? configuration.server.maximumConnections
            if let timeouts = server.child("timeouts"), timeouts.expectMapping(allowedKeys: ["header_seconds", "body_idle_seconds", "keep_alive_idle_seconds"]) {
                configuration.server.headerTimeoutSeconds = timeouts.number("header_seconds", in: 0.1...3600) ?? configuration.server.headerTimeoutSeconds
                configuration.server.bodyIdleTimeoutSeconds = timeouts.number("body_idle_seconds", in: 0.1...3600) ?? configuration.server.bodyIdleTimeoutSeconds
                configuration.server.keepAliveIdleTimeoutSeconds = timeouts.number("keep_alive_idle_seconds", in: 0.1...86_400)
                    ?? configuration.server.keepAliveIdleTimeoutSeconds
            }
            if let tls = server.child("tls") { configuration.server.tls = decodeServerTLS(tls) }
        }
        if let auth = root.child("auth") { decodeAuth(auth, into: &configuration.auth) }
        if let storage = root.child("storage"), storage.expectMapping(allowedKeys: ["database", "pool_size", "redis", "flush_interval_seconds",
                                                                                        "probe_interval_seconds", "timeout_seconds", "lease_fraction",
                                                                                        "lease_seconds", "redis_tls"]) {
            if let tls = storage.child("redis_tls"), tls.expectMapping(allowedKeys: ["min_version", "ca_file", "client_certificate", "client_key"]) {
                decodeClientTLS(tls, into: &configuration.storage.redisTLS, minimumVersionKey: "min_version")
            }
            if let database = storage.string("database") {
                if StorageLocation(database) == nil {
                    storage.issue("database", "must be sqlite:PATH, a file path, or a postgres:// URL; got '\(database)'")
                } else {
                    configuration.storage.database = database
                }
            }
            configuration.storage.poolSize = storage.integer("pool_size", in: 1...200) ?? configuration.storage.poolSize
            if let redis = storage.string("redis") {
                let schemes = ["redis://", "rediss://", "redis-sentinel://", "rediss-sentinel://"]
                if redis.isEmpty {
                    configuration.storage.redis = nil
                } else if schemes.contains(where: redis.hasPrefix) {
                    configuration.storage.redis = redis
                } else {
                    storage.issue("redis", "must start with redis://, rediss:// or redis-sentinel://")
                }
            }
            configuration.storage.flushIntervalSeconds = storage.number("flush_interval_seconds", in: 0.01...3600) ?? configuration.storage.flushIntervalSeconds
            configuration.storage.probeIntervalSeconds = storage.number("probe_interval_seconds", in: 0.05...300) ?? configuration.storage.probeIntervalSeconds
            configuration.storage.timeoutSeconds = storage.number("timeout_seconds", in: 0.1...600) ?? configuration.storage.timeoutSeconds
            configuration.storage.leaseFraction = storage.integer("lease_fraction", in: 0...1_000_000) ?? configuration.storage.leaseFraction
            configuration.storage.leaseSeconds = storage.number("lease_seconds", in: 0.05...60) ?? configuration.storage.leaseSeconds
        }
        if let limits = root.child("limits") { decodeLimits(limits, into: &configuration.limits) }
        if let guardrails = root.child("guardrails") { decodeGuardrails(guardrails, into: &configuration.guardrails) }
        if let policy = root.child("ip_policy"), policy.expectMapping(allowedKeys: ["allow", "deny", "admin_allow", "trusted_proxies"]) {
            configuration.ipPolicy.allow = cidrList(policy, "allow")
            configuration.ipPolicy.deny = cidrList(policy, "deny")
            configuration.ipPolicy.adminAllow = cidrList(policy, "admin_allow")
            configuration.ipPolicy.trustedProxies = cidrList(policy, "trusted_proxies")
        }
        if let routing = root.child("routing") {
            decodeRouting(routing, into: &configuration.routing)
        }
        if let audit = root.child("audit") { decodeAudit(audit, into: &configuration.audit) }
        if let tracing = root.child("tracing") { decodeTracing(tracing, into: &configuration.tracing) }
        if let cache = root.child("cache") { decodeCache(cache, into: &configuration.cache) }
        decodeCacheOverrides(root, into: &configuration.cache)
        decodeDataProtection(root, into: &configuration.audit)
        if let rules = root.child("residency") { configuration.residency = decodeResidency(rules) }
        if let level = root.string("log_level") {
            if ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) {
                configuration.logLevel = level
            } else {
                root.issue("log_level", "must be one of trace, debug, info, notice, warning, error, critical; got '\(level)'")
            }
        }
        if let format = root.string("log_format") {
            if let parsed = LogFormat(rawValue: format) {
                configuration.logFormat = parsed
            } else {
                root.issue("log_format", "must be text or json; got '\(format)'")
            }
        }
        if let models = root.child("models") {
            configuration.models = models.elements().compactMap { decodeModel($0, routing: configuration.routing) }
        }
    }

    static let roleNames = Role.allCases.map(\.rawValue)

    static func decodeTracing(_ reader: NodeReader, into tracing: inout GatewayConfiguration.Tracing) {
        guard reader.expectMapping(allowedKeys: ["endpoint", "sample_ratio", "service_name", "headers", "export_timeout_seconds"]) else { return }
        if let endpoint = reader.string("endpoint"), !endpoint.isEmpty {
            if endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") {
                tracing.endpoint = endpoint
            } else {
                reader.issue("endpoint", "must be the collector's http:// or https:// OTLP/HTTP address; got '\(endpoint)'")
            }
        }
        tracing.sampleRatio = reader.number("sample_ratio", in: 0...1) ?? tracing.sampleRatio
        if let name = reader.string("service_name") {
            if name.isEmpty { reader.issue("service_name", "must not be empty") } else { tracing.serviceName = name }
        }
        if let headers = reader.child("headers"), headers.expectMapping(allowedKeys: nil) {
            for key in headers.keys { tracing.headers[key] = headers.string(key) ?? "" }
        }
        tracing.exportTimeoutSeconds = reader.number("export_timeout_seconds", in: 0.1...300) ?? tracing.exportTimeoutSeconds
    }

    static func decodeAuth(_ auth: NodeReader, into settings: inout GatewayConfiguration.Auth) {
        guard auth.expectMapping(allowedKeys: ["master_key", "required", "key_pepper", "key_cache_seconds", "rotation_grace_seconds",
                                               "revoke_minted_keys_with_issuer", "fail_open", "oidc", "mfa_required_roles",
                                               "certificate_principals"]) else { return }
        if let key = auth.string("master_key") { settings.masterKey = key.isEmpty ? nil : key }
        settings.required = auth.bool("required") ?? settings.required
        if let pepper = auth.string("key_pepper"), !pepper.isEmpty {
            if pepper.utf8.count < 32 { auth.issue("key_pepper", "must be at least 32 bytes") } else { settings.keyPepper = pepper }
        }
        settings.keyCacheSeconds = auth.number("key_cache_seconds", in: 0...3600) ?? settings.keyCacheSeconds
        settings.rotationGraceSeconds = auth.number("rotation_grace_seconds", in: 0...(90 * 86_400)) ?? settings.rotationGraceSeconds
        settings.failOpen = auth.bool("fail_open") ?? settings.failOpen
        settings.revokeMintedKeysWithIssuer = auth.bool("revoke_minted_keys_with_issuer") ?? settings.revokeMintedKeysWithIssuer
        if let roles = auth.child("mfa_required_roles") {
            settings.mfaRequiredRoles = roleList(roles)
        }
        if let issuers = auth.child("oidc") {
            settings.oidc = issuers.elements().compactMap(decodeIssuer)
        }
        if let principals = auth.child("certificate_principals") { settings.certificatePrincipals = decodeCertificatePrincipals(principals) }
    }

    static func roleList(_ reader: NodeReader) -> [Role] {
        reader.elements().compactMap { element in
            guard let name = element.scalarString() else { return nil }
            guard let role = Role(rawValue: name) else {
                element.issue(nil, "unknown role '\(name)'; expected one of \(roleNames.joined(separator: ", "))")
                return nil
            }
            return role
        }
    }

    static func decodeIssuer(_ reader: NodeReader) -> GatewayConfiguration.OIDCIssuer? {
        guard reader.expectMapping(allowedKeys: ["issuer", "audience", "jwks_url", "algorithms", "role_claims", "role_map", "default_role",
                                                 "team_claim", "user_claim", "max_token_lifetime_seconds", "leeway_seconds",
                                                 "mfa_amr", "mfa_acr", "ca_file"]) else { return nil }
        let issuer = reader.requiredString("issuer") ?? ""
        var audiences: [String] = []
        if let audience = reader.child("audience") {
            audiences = audience.isSequence ? audience.elements().compactMap { $0.scalarString() } : [audience.scalarString()].compactMap { $0 }
        }
        if audiences.isEmpty { reader.issue("audience", "is required: the audience (client id) tokens must be issued for") }
        var settings = GatewayConfiguration.OIDCIssuer(issuer: issuer, audiences: audiences)
        if let url = reader.string("jwks_url") {
            if url.hasPrefix("http://") || url.hasPrefix("https://") { settings.jwksURL = url } else { reader.issue("jwks_url", "must be an http(s) URL") }
        }
        if let algorithms = reader.child("algorithms") {
            let allowed = ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
            settings.algorithms = algorithms.elements().compactMap { element in
                guard let name = element.scalarString() else { return nil }
                guard allowed.contains(name) else {
                    element.issue(nil, "unsupported algorithm '\(name)'; expected some of \(allowed.joined(separator: ", ")) (HMAC and none are never accepted)")
                    return nil
                }
                return name
            }
        }
        if let claims = reader.child("role_claims") { settings.roleClaims = claims.elements().compactMap { $0.scalarString() } }
        if let map = reader.child("role_map"), map.expectMapping(allowedKeys: nil) {
            for key in map.keys {
                guard let name = map.string(key) else { continue }
                if let role = Role(rawValue: name) { settings.roleMap[key] = role } else { map.issue(key, "unknown role '\(name)'") }
            }
        }
        if let name = reader.string("default_role") {
            if let role = Role(rawValue: name) { settings.defaultRole = role } else { reader.issue("default_role", "unknown role '\(name)'") }
        }
        settings.teamClaim = reader.string("team_claim") ?? settings.teamClaim
        settings.userClaim = reader.string("user_claim") ?? settings.userClaim
        settings.maximumLifetimeSeconds = reader.number("max_token_lifetime_seconds", in: 3600...86_400) ?? settings.maximumLifetimeSeconds
        settings.leewaySeconds = reader.number("leeway_seconds", in: 0...300) ?? settings.leewaySeconds
        if let methods = reader.child("mfa_amr") { settings.mfaMethods = methods.elements().compactMap { $0.scalarString() } }
        if let contexts = reader.child("mfa_acr") { settings.mfaContexts = contexts.elements().compactMap { $0.scalarString() } }
        if let caFile = reader.string("ca_file") {
            if FileManager.default.isReadableFile(atPath: caFile) { settings.caFile = caFile } else { reader.issue("ca_file", "cannot read '\(caFile)'") }
        }
        return settings
    }

    static func decodeRateLimits(_ reader: NodeReader) -> RateLimits? {
        guard reader.expectMapping(allowedKeys: ["rpm", "tpm", "concurrency"]) else { return nil }
        return RateLimits(requestsPerMinute: reader.integer("rpm", in: 0...100_000_000).map(Int64.init),
                                               tokensPerMinute: reader.integer("tpm", in: 0...Int(Int32.max)).map(Int64.init),
                                               concurrency: reader.integer("concurrency", in: 0...1_000_000).map(Int64.init))
    }

    static func decodeLimits(_ reader: NodeReader, into limits: inout GatewayConfiguration.Limits) {
        guard reader.expectMapping(allowedKeys: ["roles", "models", "reserve_output_tokens"]) else { return }
        if let roles = reader.child("roles"), roles.expectMapping(allowedKeys: Set(roleNames)) {
            for name in roles.keys {
                guard let role = Role(rawValue: name), let child = roles.child(name), let parsed = decodeRateLimits(child) else { continue }
                let base = limits.roles[role] ?? .init()
                limits.roles[role] = .init(requestsPerMinute: parsed.requestsPerMinute ?? base.requestsPerMinute,
                                           tokensPerMinute: parsed.tokensPerMinute ?? base.tokensPerMinute,
                                           concurrency: parsed.concurrency ?? base.concurrency)
            }
        }
        if let models = reader.child("models"), models.expectMapping(allowedKeys: nil) {
            for model in models.keys {
                if let child = models.child(model), let parsed = decodeRateLimits(child) { limits.models[model] = parsed }
            }
        }
        limits.reserveOutputTokens = reader.integer("reserve_output_tokens", in: 1...10_000_000) ?? limits.reserveOutputTokens
    }

    /// Input guards that exist, for validating policies.
    static let inputGuardNames: Set<String> = ["validation", "images", "injection_rules", "injection_classifier", "pii", "moderation", "llm_judge",
                                                "openai_moderation", "azure_content_safety", "bedrock_guardrail"]
    /// Output guards that exist.
    static let outputGuardNames: Set<String> = ["pii", "system_prompt_leak", "moderation", "format"]

    static func decodeGuardrails(_ reader: NodeReader, into guardrails: inout GatewayConfiguration.Guardrails) {
        guard reader.expectMapping(allowedKeys: ["enabled", "policies", "default", "pseudonym_key", "llm_judge", "openai_moderation",
                                                 "azure_content_safety", "bedrock_guardrail", "tokenizer", "images", "anomaly"]) else { return }
        if let anomaly = reader.child("anomaly") { decodeAnomaly(anomaly, into: &guardrails.anomaly) }
        guardrails.tokenizer = reader.string("tokenizer")
        if let images = reader.child("images") { decodeImageLimits(images, into: &guardrails.images) }
        guardrails.llmJudge = reader.child("llm_judge").map { decodeRemoteGuard($0, needsModel: true) }
        guardrails.openAIModeration = reader.child("openai_moderation").map { decodeRemoteGuard($0, needsModel: false) }
        guardrails.azureContentSafety = reader.child("azure_content_safety").map { child in
            let remote = decodeRemoteGuard(child, needsModel: false)
            if remote.apiBase == nil { child.issue("api_base", "Azure Content Safety needs its endpoint (api_base)") }
            if remote.apiKey == nil { child.issue("api_key", "Azure Content Safety needs a key (api_key)") }
            return remote
        }
        guardrails.bedrockGuardrail = reader.child("bedrock_guardrail").map { child in
            let remote = decodeRemoteGuard(child, needsModel: false)
            for (key, value) in [("region", remote.region), ("guardrail_id", remote.guardrailID), ("api_key", remote.apiKey),
                                 ("secret_access_key", remote.secretAccessKey)] where value == nil {
                child.issue(key, "Bedrock ApplyGuardrail needs \(key)")
            }
            return remote
        }
        guardrails.enabled = reader.bool("enabled") ?? guardrails.enabled
        guardrails.pseudonymKey = reader.string("pseudonym_key")
        if let base = reader.child("default") {
            guardrails.defaultPolicy = decodeGuardPolicy(base, name: "default", base: guardrails.defaultPolicy)
        }
        if let list = reader.child("policies") {
            var names: Set<String> = []
            for element in list.elements() {
                guard let name = element.string("name") else {
                    element.issue(nil, "a policy needs a name")
                    continue
                }
                if !names.insert(name).inserted { element.issue("name", "duplicate policy '\(name)'") }
                guardrails.policies.append(decodeGuardPolicy(element, name: name, base: guardrails.defaultPolicy))
            }
        }
        let all = [guardrails.defaultPolicy] + guardrails.policies
        if guardrails.llmJudge == nil, all.contains(where: { $0.input.contains("llm_judge") }) {
            reader.issue("llm_judge", "a policy lists the llm_judge guard: configure guardrails.llm_judge with the judge's model")
        }
        for (name, configured) in [("azure_content_safety", guardrails.azureContentSafety != nil),
                                   ("bedrock_guardrail", guardrails.bedrockGuardrail != nil)]
            where !configured && all.contains(where: { $0.input.contains(name) }) {
            reader.issue(name, "a policy lists the \(name) guard: configure guardrails.\(name)")
        }
        if guardrails.openAIModeration == nil, all.contains(where: { $0.input.contains("openai_moderation") }) {
            reader.issue("openai_moderation", "a policy lists the openai_moderation guard: configure guardrails.openai_moderation")
        }
        let hashing = ([guardrails.defaultPolicy] + guardrails.policies).contains { $0.pii == .hash && $0.input.contains("pii") }
        if hashing && (guardrails.pseudonymKey?.utf8.count ?? 0) < 32 {
            reader.issue("pseudonym_key", "a policy hashes personal data (pii: hash): set a pseudonym_key of 32 or more bytes")
        }
    }

    static func decodeAnomaly(_ reader: NodeReader, into settings: inout AnomalySettings) {
        guard reader.expectMapping(allowedKeys: ["enabled", "factor", "min_requests", "min_tokens", "min_refusals", "min_guard_hits", "action",
                                                 "cooldown_seconds"]) else { return }
        settings.enabled = reader.bool("enabled") ?? settings.enabled
        settings.factor = reader.number("factor", in: 1.5...1000) ?? settings.factor
        for (key, measure) in [("min_requests", AnomalyDetector.Measure.requests), ("min_tokens", .tokens), ("min_refusals", .refusals),
                               ("min_guard_hits", .guardHits)] {
            if let minimum = reader.number(key, in: 1...1_000_000_000) { settings.minimums[measure] = minimum }
        }
        if let action = decodeAnomalyAction(reader, "action") { settings.action = action }
        settings.cooldownSeconds = reader.number("cooldown_seconds", in: 1...86_400) ?? settings.cooldownSeconds
    }

    static func decodeAnomalyAction(_ reader: NodeReader, _ key: String) -> AnomalyAction? {
        guard let name = reader.string(key) else { return nil }
        guard let action = AnomalyAction(rawValue: name) else {
            reader.issue(key, "must be flag, throttle or block; got '\(name)'")
            return nil
        }
        return action
    }

    static func decodeImageLimits(_ reader: NodeReader, into limits: inout ImageLimits) {
        guard reader.expectMapping(allowedKeys: ["max_bytes", "max_pixels", "max_side", "formats", "allowed_hosts"]) else { return }
        limits.maximumBytes = reader.integer("max_bytes", in: 1...1_073_741_824) ?? limits.maximumBytes
        limits.maximumPixels = reader.integer("max_pixels", in: 1...1_000_000_000) ?? limits.maximumPixels
        limits.maximumSide = reader.integer("max_side", in: 1...1_000_000) ?? limits.maximumSide
        if let formats = reader.stringList("formats") {
            var chosen: Set<ImageFormat> = []
            for name in formats {
                if let format = ImageFormat(rawValue: name) { chosen.insert(format) } else {
                    reader.issue("formats", "unknown image format '\(name)' (png, jpeg, gif, webp)")
                }
            }
            limits.formats = chosen
        }
        if let hosts = reader.stringList("allowed_hosts") { limits.allowedHosts = hosts }
    }

    static func decodeRemoteGuard(_ reader: NodeReader, needsModel: Bool) -> GatewayConfiguration.Guardrails.Remote {
        var remote = GatewayConfiguration.Guardrails.Remote()
        guard reader.expectMapping(allowedKeys: ["model", "api_base", "api_key", "timeout_ms", "on_error", "when", "api_version", "severity",
                                                 "region", "guardrail_id", "guardrail_version", "secret_access_key",
                                                 "session_token"]) else { return remote }
        remote.apiVersion = reader.string("api_version")
        remote.severity = reader.integer("severity", in: 1...7) ?? remote.severity
        remote.region = reader.string("region")
        remote.guardrailID = reader.string("guardrail_id")
        remote.guardrailVersion = reader.string("guardrail_version") ?? remote.guardrailVersion
        remote.secretAccessKey = reader.string("secret_access_key")
        remote.sessionToken = reader.string("session_token")
        remote.model = reader.string("model")
        if needsModel && remote.model == nil { reader.issue("model", "the judge needs a model (a model group of this gateway)") }
        remote.apiBase = reader.string("api_base")
        remote.apiKey = reader.string("api_key")
        remote.timeoutMilliseconds = reader.integer("timeout_ms", in: 10...120_000) ?? remote.timeoutMilliseconds
        if let onError = reader.string("on_error") {
            switch onError {
            case "allow": remote.failClosed = false
            case "block": remote.failClosed = true
            default: reader.issue("on_error", "must be allow (fail open) or block (fail closed); got '\(onError)'")
            }
        }
        if let when = reader.string("when") {
            switch when {
            case "uncertain": remote.onlyWhenUncertain = true
            case "always": remote.onlyWhenUncertain = false
            default: reader.issue("when", "must be uncertain or always; got '\(when)'")
            }
        }
        return remote
    }

    static func decodeGuardPolicy(_ reader: NodeReader, name: String,
                                          base: GatewayConfiguration.Guardrails.Policy) -> GatewayConfiguration.Guardrails.Policy {
        var policy = base
        policy.name = name
        guard reader.expectMapping(allowedKeys: ["name", "models", "teams", "roles", "keys", "input", "actions", "max_input_tokens",
                                                 "max_messages", "max_message_characters", "pii", "output", "output_pii",
                                                 "stream_hold_back", "canary", "system_prompt", "spotlight", "format_retry", "cache",
                                                 "payloads", "anomaly"]) else { return policy }
        if let action = decodeAnomalyAction(reader, "anomaly") { policy.anomaly = action }
        if let pii = reader.string("pii") {
            if let action = PersonalDataAction(rawValue: pii) { policy.pii = action } else {
                reader.issue("pii", "must be mask, remove, hash, tokenize, block or flag; got '\(pii)'")
            }
        }
        let strings = reader.stringList
        policy.models = strings("models") ?? []
        policy.teams = strings("teams") ?? []
        policy.keys = strings("keys") ?? []
        if let roles = strings("roles") {
            for role in roles where !roleNames.contains(role) { reader.issue("roles", "unknown role '\(role)' (\(roleNames.sorted().joined(separator: ", ")))") }
            policy.roles = roles
        }
        if let input = strings("input") {
            for guardName in input where !inputGuardNames.contains(guardName) {
                reader.issue("input", "unknown guard '\(guardName)' (\(inputGuardNames.sorted().joined(separator: ", ")))")
            }
            policy.input = input
        }
        if let actions = reader.child("actions"), actions.expectMapping(allowedKeys: ["critical", "high", "medium", "low"]) {
            for level in actions.keys {
                guard let name = actions.string(level), let risk = RiskLevel(name: level) else { continue }
                guard let action = GuardAction(rawValue: name) else {
                    actions.issue(level, "must be block, redact or flag; got '\(name)'")
                    continue
                }
                policy.actions[risk] = action
            }
        }
        policy.maxInputTokens = reader.integer("max_input_tokens", in: 1...10_000_000) ?? policy.maxInputTokens
        policy.maxMessages = reader.integer("max_messages", in: 1...100_000) ?? policy.maxMessages
        policy.maxMessageCharacters = reader.integer("max_message_characters", in: 1...100_000_000) ?? policy.maxMessageCharacters
        if let output = strings("output") {
            for guardName in output where !outputGuardNames.contains(guardName) {
                reader.issue("output", "unknown output guard '\(guardName)' (\(outputGuardNames.sorted().joined(separator: ", ")))")
            }
            policy.output = output
        }
        if let outputPII = reader.string("output_pii") {
            if let action = PersonalDataAction(rawValue: outputPII), [.mask, .remove, .block, .flag].contains(action) {
                policy.outputPII = action
            } else {
                reader.issue("output_pii", "must be mask, remove, block or flag; got '\(outputPII)'")
            }
        }
        policy.streamHoldBack = reader.integer("stream_hold_back", in: 16...65_536) ?? policy.streamHoldBack
        policy.canary = reader.bool("canary") ?? policy.canary
        policy.formatRetry = reader.bool("format_retry") ?? policy.formatRetry
        if policy.canary && !policy.output.contains("system_prompt_leak") {
            reader.issue("canary", "a canary is only checked by the system_prompt_leak output guard: add it to output")
        }
        if let prompt = reader.string("system_prompt") { policy.systemPrompt = prompt.isEmpty ? nil : prompt }
        if let spotlight = reader.child("spotlight") {
            var mode: String?
            if let scalar = spotlight.scalarString() {
                mode = scalar
            } else if spotlight.expectMapping(allowedKeys: ["mode", "roles", "documents"]) {
                mode = spotlight.string("mode")
                if mode == nil { spotlight.issue("mode", "required: delimit, datamark or base64") }
                if let roles = spotlight.child("roles").map({ $0.elements().compactMap { $0.scalarString() } }) {
                    var isolated: [ChatRole] = []
                    for name in roles {
                        if let role = ChatRole(rawValue: name), [.tool, .user, .assistant].contains(role) {
                            isolated.append(role)
                        } else {
                            spotlight.issue("roles", "must be tool, user or assistant; got '\(name)'")
                        }
                    }
                    policy.spotlightRoles = isolated
                }
                policy.spotlightDocuments = spotlight.bool("documents") ?? policy.spotlightDocuments
            }
            if let mode {
                if let parsed = Spotlighting.Mode(rawValue: mode) {
                    policy.spotlight = parsed
                } else {
                    reader.issue("spotlight", "must be delimit, datamark or base64; got '\(mode)'")
                }
            }
        }
        return policy
    }

    static func cidrList(_ reader: NodeReader, _ key: String) -> [String] {
        guard let list = reader.child(key) else { return [] }
        return list.elements().compactMap { element in
            guard let text = element.scalarString() else { return nil }
            guard CIDR(text) != nil else {
                element.issue(nil, "'\(text)' is not an IPv4 or IPv6 address or CIDR block")
                return nil
            }
            return text
        }
    }

    static func decodeRouting(_ reader: NodeReader, into routing: inout GatewayConfiguration.Routing) {
        guard reader.expectMapping(allowedKeys: ["retries", "backoff", "max_retry_after_seconds", "circuit_breaker", "health_check", "timeouts"]) else { return }
        routing.retries = reader.integer("retries", in: 0...10) ?? routing.retries
        routing.maximumRetryAfterSeconds = reader.number("max_retry_after_seconds", in: 0...600) ?? routing.maximumRetryAfterSeconds
        if let backoff = reader.child("backoff"), backoff.expectMapping(allowedKeys: ["initial_ms", "max_ms"]) {
            routing.initialBackoffMilliseconds = backoff.number("initial_ms", in: 0...60_000) ?? routing.initialBackoffMilliseconds
            routing.maximumBackoffMilliseconds = backoff.number("max_ms", in: 0...600_000) ?? routing.maximumBackoffMilliseconds
        }
        if let breaker = reader.child("circuit_breaker"), breaker.expectMapping(allowedKeys: ["failure_threshold", "window_seconds", "cooldown_seconds"]) {
            routing.circuitFailureThreshold = breaker.integer("failure_threshold", in: 1...1000) ?? routing.circuitFailureThreshold
            routing.circuitWindowSeconds = breaker.number("window_seconds", in: 0.001...86_400) ?? routing.circuitWindowSeconds
            routing.circuitCooldownSeconds = breaker.number("cooldown_seconds", in: 0...86_400) ?? routing.circuitCooldownSeconds
        }
        if let health = reader.child("health_check"), health.expectMapping(allowedKeys: ["interval_seconds", "timeout_seconds"]) {
            routing.healthCheckIntervalSeconds = health.number("interval_seconds", in: 0...86_400) ?? routing.healthCheckIntervalSeconds
            routing.healthCheckTimeoutSeconds = health.number("timeout_seconds", in: 0.001...600) ?? routing.healthCheckTimeoutSeconds
        }
        if let timeouts = reader.child("timeouts") {
            decodeTimeouts(timeouts, into: &routing.timeouts)
        }
    }

    static func decodeTimeouts(_ reader: NodeReader, into timeouts: inout GatewayConfiguration.Timeouts) {
        guard reader.expectMapping(allowedKeys: ["connect_seconds", "first_byte_seconds", "total_seconds", "stream_idle_seconds"]) else { return }
        timeouts.connect = reader.number("connect_seconds", in: 0.001...600) ?? timeouts.connect
        timeouts.firstByte = reader.number("first_byte_seconds", in: 0.001...3600) ?? timeouts.firstByte
        timeouts.total = reader.number("total_seconds", in: 0.001...86_400) ?? timeouts.total
        timeouts.streamIdle = reader.number("stream_idle_seconds", in: 0.001...3600) ?? timeouts.streamIdle
    }

    static func decodeModel(_ reader: NodeReader, routing: GatewayConfiguration.Routing) -> GatewayConfiguration.Model? {
        guard reader.expectMapping(allowedKeys: ["name", "deployments", "fallbacks", "cache"]) else { return nil }
        let name = reader.requiredString("name") ?? ""
        var deployments: [GatewayConfiguration.Deployment] = []
        if let list = reader.child("deployments") {
            deployments = list.elements().compactMap { decodeDeployment($0, routing: routing) }
            if list.isSequence && list.elements().isEmpty { reader.issue("deployments", "a model needs at least one deployment") }
        } else {
            reader.issue("deployments", "is required: a model needs at least one deployment")
        }
        let fallbacks = reader.child("fallbacks")?.elements().compactMap { $0.scalarString() } ?? []
        return .init(name: name, deployments: deployments, fallbacks: fallbacks)
    }

    private static let providerNames = ProviderKind.allCases.map(\.rawValue)

    static func decodeDeployment(_ reader: NodeReader, routing: GatewayConfiguration.Routing) -> GatewayConfiguration.Deployment? {
        guard reader.expectMapping(allowedKeys: ["provider", "model", "api_base", "api_key", "api_version", "weight", "price",
                                                 "headers", "timeouts", "default_max_tokens", "tokens_per_second", "ca_file",
                                                 "tls_min_version", "client_certificate", "client_key", "region", "baa"]) else { return nil }
        let name = reader.requiredString("provider") ?? ""
        let provider = ProviderKind(rawValue: name)
        if provider == nil && !name.isEmpty {
            reader.issue("provider", "unknown provider '\(name)'; expected one of \(providerNames.joined(separator: ", "))"
                + (suggestion(for: name, among: providerNames).map { " (did you mean '\($0)'?)" } ?? ""))
        }
        let model = provider == .demo ? (reader.string("model") ?? "demo") : (reader.requiredString("model") ?? "")
        // Without a known provider the rest is still read, so that one run reports every problem.
        var deployment = GatewayConfiguration.Deployment(provider: provider ?? .openaiCompatible, model: model, timeouts: routing.timeouts)
        deployment.apiBase = reader.string("api_base")
        if let base = deployment.apiBase, !(base.hasPrefix("http://") || base.hasPrefix("https://")) {
            reader.issue("api_base", "must be an http:// or https:// URL; got '\(base)'")
        }
        deployment.apiKey = reader.string("api_key")
        decodeClientTLS(reader, into: &deployment.tls, minimumVersionKey: "tls_min_version")
        deployment.apiVersion = reader.string("api_version")
        deployment.weight = reader.number("weight", in: 0...1_000_000) ?? 1
        deployment.defaultMaxTokens = reader.integer("default_max_tokens", in: 1...10_000_000) ?? 4096
        deployment.tokensPerSecond = reader.number("tokens_per_second", in: 0...1_000_000) ?? 0
        deployment.region = reader.string("region")
        deployment.baa = reader.bool("baa") ?? false
        if let price = reader.child("price"), price.expectMapping(allowedKeys: ["input_per_million", "output_per_million"]) {
            deployment.inputPricePerMillion = price.number("input_per_million", in: 0...1_000_000) ?? 0
            deployment.outputPricePerMillion = price.number("output_per_million", in: 0...1_000_000) ?? 0
        }
        if let headers = reader.child("headers"), headers.expectMapping(allowedKeys: nil) {
            for key in headers.keys { deployment.headers[key] = headers.string(key) ?? "" }
        }
        if let timeouts = reader.child("timeouts") { decodeTimeouts(timeouts, into: &deployment.timeouts) }
        guard let provider else { return nil }
        if [.openaiCompatible, .azure].contains(provider), deployment.apiBase == nil {
            reader.issue("api_base", "is required for provider '\(provider.rawValue)'")
        }
        return deployment
    }
}
