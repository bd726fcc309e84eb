import Foundation
import PortcullisAudit
import PortcullisRouting

/// The `audit` section: request auditing, the checkpoint key and cadence, sinks and alerts.
extension ConfigurationLoader {
    static func decodeAudit(_ audit: NodeReader, into settings: inout GatewayConfiguration.Audit) {
        guard audit.expectMapping(allowedKeys: ["enabled", "fail_closed", "chain", "backlog_limit", "origin", "signing_key_file", "checkpoints",
                                                "sinks", "alerts", "payloads", "retention"]) else { return }
        decodeCheckpoints(audit, into: &settings)
        settings.enabled = audit.bool("enabled") ?? settings.enabled
        settings.failClosed = audit.bool("fail_closed") ?? settings.failClosed
        if let chain = audit.string("chain") {
            if chain.isEmpty || chain.utf8.count > 128 || chain.contains(where: { $0.isWhitespace || $0.isNewline }) {
                audit.issue("chain", "must be 1–128 characters without spaces")
            } else {
                settings.chain = chain
            }
        }
        settings.backlogLimit = audit.integer("backlog_limit", in: 1...10_000_000) ?? settings.backlogLimit
        if let mode = decodePayloadMode(audit) { settings.payloads = mode }
        if let retention = audit.child("retention"),
           retention.expectMapping(allowedKeys: ["payloads_days", "audit_days", "security_days", "interval_hours"]) {
            settings.retention.payloadsDays = retention.integer("payloads_days", in: 1...36_500) ?? settings.retention.payloadsDays
            settings.retention.auditDays = retention.integer("audit_days", in: 1...36_500) ?? settings.retention.auditDays
            settings.retention.securityDays = retention.integer("security_days", in: 365...1095) ?? settings.retention.securityDays
            settings.retention.intervalHours = retention.number("interval_hours", in: 0...720) ?? settings.retention.intervalHours
        }
    }

    /// `payloads: none | redacted | full` of `reader`.
    static func decodePayloadMode(_ reader: NodeReader) -> PayloadMode? {
        guard let text = reader.string("payloads") else { return nil }
        guard let mode = PayloadMode(rawValue: text) else {
            reader.issue("payloads", "must be one of none, redacted, full; got '\(text)'")
            return nil
        }
        return mode
    }

    /// The payload choices of guard policies and the top-level `kms` section.
    static func decodeDataProtection(_ root: NodeReader, into settings: inout GatewayConfiguration.Audit) {
        decodePayloadOverrides(root, into: &settings)
        if let kms = root.child("kms") { decodeKMS(kms, into: &settings.kms) }
    }

    /// `residency: [{ name, teams, keys, users, regions, baa }]`: each rule names callers and what
    /// a deployment must be to serve them.
    static func decodeResidency(_ reader: NodeReader) -> [ResidencyRule] {
        guard reader.isSequence else {
            reader.issue(nil, "must be a list of rules { name, teams, keys, users, regions, baa }")
            return []
        }
        var rules: [ResidencyRule] = []
        for element in reader.elements() {
            guard element.expectMapping(allowedKeys: ["name", "teams", "keys", "users", "regions", "baa"]), let name = element.requiredString("name") else { continue }
            func strings(_ key: String) -> Set<String> { Set(element.child(key)?.elements().compactMap { $0.scalarString() } ?? []) }
            var rule = ResidencyRule(name: name)
            rule.teams = strings("teams")
            rule.keys = strings("keys")
            rule.users = strings("users")
            rule.regions = strings("regions")
            rule.requireBAA = element.bool("baa") ?? false
            if rule.teams.isEmpty && rule.keys.isEmpty && rule.users.isEmpty { element.issue("teams", "a rule names at least one team, key or user") }
            if rule.regions.isEmpty && !rule.requireBAA { element.issue("regions", "a rule requires regions, baa: true, or both") }
            rules.append(rule)
        }
        return rules
    }

    /// `guardrails.policies[].payloads`: what a policy stores of its requests.
    static func decodePayloadOverrides(_ root: NodeReader, into settings: inout GatewayConfiguration.Audit) {
        guard let policies = root.child("guardrails")?.child("policies"), policies.isSequence else { return }
        for policy in policies.elements() {
            guard let name = policy.string("name"), let mode = decodePayloadMode(policy) else { continue }
            settings.payloadsByPolicy[name] = mode
        }
    }

    /// The `kms` section: `{ provider: local, key_file }` or `{ provider: aws, key_id, region,
    /// endpoint, access_key_id, secret_access_key, session_token }`, with `fail_closed` and `rotation_days`.
    static func decodeKMS(_ kms: NodeReader, into settings: inout KMSConfiguration) {
        guard kms.expectMapping(allowedKeys: ["provider", "key_file", "key_id", "region", "endpoint", "access_key_id", "secret_access_key",
                                              "session_token", "fail_closed", "rotation_days"]) else { return }
        settings.failClosed = kms.bool("fail_closed") ?? settings.failClosed
        settings.rotationDays = kms.integer("rotation_days", in: 0...3650) ?? settings.rotationDays
        switch kms.string("provider") ?? "local" {
        case "local":
            settings.provider = .local(keyFile: kms.string("key_file"))
        case "aws":
            guard let keyID = kms.requiredString("key_id"), let access = kms.requiredString("access_key_id"),
                  let secret = kms.requiredString("secret_access_key") else { return }
            var aws = KMSConfiguration.AWS(keyID: keyID, accessKeyID: access, secretAccessKey: secret)
            aws.region = kms.string("region") ?? aws.region
            if let endpoint = kms.string("endpoint") {
                if endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") { aws.endpoint = endpoint } else {
                    kms.issue("endpoint", "must be an http:// or https:// URL")
                }
            }
            aws.sessionToken = kms.string("session_token")
            settings.provider = .aws(aws)
        case let other:
            kms.issue("provider", "must be local or aws; got '\(other)'")
        }
    }

    static func decodeSinks(_ audit: NodeReader, into settings: inout GatewayConfiguration.Audit) {
        guard let sinks = audit.child("sinks") else { return }
        var names: Set<String> = []
        for sink in sinks.elements() {
            guard sink.expectMapping(allowedKeys: ["name", "type", "url", "token", "index", "format", "batch_size", "ca_file", "pseudonym_key"]) else { continue }
            let kinds = AuditSinkConfiguration.Kind.allCases.map(\.rawValue)
            guard let name = sink.requiredString("name"), let type = sink.requiredString("type"), let url = sink.requiredString("url") else { continue }
            guard let kind = AuditSinkConfiguration.Kind(rawValue: type) else {
                sink.issue("type", "must be one of \(kinds.joined(separator: ", ")); got '\(type)'")
                continue
            }
            if kind == .syslog {
                guard url.hasPrefix("tcp://") || url.hasPrefix("tls://") else {
                    sink.issue("url", "must be tcp://host:port or tls://host:port for syslog")
                    continue
                }
            } else if !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                sink.issue("url", "must be an http:// or https:// URL")
                continue
            }
            if !names.insert(name).inserted { sink.issue("name", "'\(name)' names another sink too") }
            var format: AuditFormat?
            if let text = sink.string("format") {
                format = AuditFormat(rawValue: text)
                if format == nil { sink.issue("format", "must be one of jsonl, ecs, ocsf, cef; got '\(text)'") }
            }
            var configuration = AuditSinkConfiguration(name: name, kind: kind, url: url, token: sink.string("token"), format: format)
            configuration.index = sink.string("index") ?? configuration.index
            configuration.batchSize = sink.integer("batch_size", in: 1...10_000) ?? configuration.batchSize
            if let key = sink.string("pseudonym_key") {
                if key.utf8.count < 16 { sink.issue("pseudonym_key", "must be at least 16 characters (a secret: use ${ENV})") } else { configuration.pseudonymKey = key }
            }
            if let caFile = sink.string("ca_file") {
                if FileManager.default.isReadableFile(atPath: caFile) { configuration.caFile = caFile } else { sink.issue("ca_file", "cannot read '\(caFile)'") }
            }
            settings.sinks.append(configuration)
        }
    }

    static func decodeAlerts(_ audit: NodeReader, into settings: inout GatewayConfiguration.Audit) {
        guard let alerts = audit.child("alerts"), alerts.expectMapping(allowedKeys: ["failed_logins_per_minute", "cost_spike_ratio", "baseline_minutes",
                                                                                   "dedup_seconds", "max_per_minute", "destinations"]) else { return }
        var configuration = settings.alerts
        configuration.rules.failedLoginsPerMinute = alerts.integer("failed_logins_per_minute", in: 1...1_000_000) ?? configuration.rules.failedLoginsPerMinute
        configuration.rules.costSpikeRatio = alerts.number("cost_spike_ratio", in: 1...1000) ?? configuration.rules.costSpikeRatio
        configuration.rules.baselineMinutes = alerts.integer("baseline_minutes", in: 5...10_080) ?? configuration.rules.baselineMinutes
        configuration.dedupSeconds = alerts.number("dedup_seconds", in: 0...86_400) ?? configuration.dedupSeconds
        configuration.maximumPerMinute = alerts.integer("max_per_minute", in: 1...10_000) ?? configuration.maximumPerMinute
        for destination in alerts.child("destinations")?.elements() ?? [] {
            guard destination.expectMapping(allowedKeys: ["type", "url", "token", "routing_key"]), let type = destination.requiredString("type") else { continue }
            guard let kind = AlertDestination.Kind(rawValue: type) else {
                destination.issue("type", "must be one of slack, pagerduty, webhook; got '\(type)'")
                continue
            }
            let url = destination.string("url") ?? (kind == .pagerduty ? AlertDestination.pagerDutyEvents : nil)
            guard let url else {
                destination.issue("url", "is required")
                continue
            }
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                destination.issue("url", "must be an http:// or https:// URL")
                continue
            }
            let token = kind == .pagerduty ? destination.requiredString("routing_key") : destination.string("token")
            if kind == .pagerduty && token == nil { continue }
            configuration.destinations.append(AlertDestination(kind: kind, url: url, token: token))
        }
        settings.alerts = configuration
    }

    static func decodeCheckpoints(_ audit: NodeReader, into settings: inout GatewayConfiguration.Audit) {
        decodeSinks(audit, into: &settings)
        decodeAlerts(audit, into: &settings)
        if let origin = audit.string("origin") {
            if origin.isEmpty || origin.utf8.count > 200 || origin.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "+" }) {
                audit.issue("origin", "must be 1–200 characters without spaces or '+'")
            } else {
                settings.origin = origin
            }
        }
        settings.signingKeyFile = audit.string("signing_key_file") ?? settings.signingKeyFile
        guard let checkpoints = audit.child("checkpoints"),
              checkpoints.expectMapping(allowedKeys: ["every_records", "every_seconds", "directory", "s3"]) else { return }
        settings.checkpointEveryRecords = checkpoints.integer("every_records", in: 1...10_000_000) ?? settings.checkpointEveryRecords
        settings.checkpointEverySeconds = checkpoints.number("every_seconds", in: 0.1...86_400) ?? settings.checkpointEverySeconds
        settings.checkpointDirectory = checkpoints.string("directory") ?? settings.checkpointDirectory
        if let s3 = checkpoints.child("s3"), s3.expectMapping(allowedKeys: ["bucket", "prefix", "region", "endpoint", "access_key_id",
                                                                             "secret_access_key", "retention_days"]) {
            let bucket = s3.requiredString("bucket"), key = s3.requiredString("access_key_id"), secret = s3.requiredString("secret_access_key")
            if let bucket, let key, let secret {
                var target = GatewayConfiguration.Audit.S3Bucket(bucket: bucket, accessKeyID: key, secretAccessKey: secret)
                target.prefix = s3.string("prefix") ?? target.prefix
                target.region = s3.string("region") ?? target.region
                if let endpoint = s3.string("endpoint") {
                    if endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") { target.endpoint = endpoint } else {
                        s3.issue("endpoint", "must be an http:// or https:// URL")
                    }
                }
                target.retentionDays = s3.integer("retention_days", in: 0...36_500) ?? target.retentionDays
                settings.checkpointBucket = target
            }
        }
    }
}
