import Foundation
import PortcullisAudit
import PortcullisConfig
import PortcullisCore
import PortcullisAccess
import PortcullisRouting
import PortcullisStorage
import PortcullisTLS

/// The evidence an auditor asks for, one row per line of the compliance matrix (GDPR, HIPAA,
/// SOC 2): the configured setting, what was measured now, and whether it passes.
/// `portcullis compliance report` and `GET /admin/compliance/report` build the same one.
public struct ComplianceReport: Sendable {
    public struct Row: Sendable {
        public var control: String
        /// The frameworks that ask for it.
        public var frameworks: String
        public var setting: String
        public var evidence: [String]
        public var passed: Bool
    }

    public var generatedAt: Date
    public var rows: [Row]

    public var passed: Bool { rows.allSatisfy(\.passed) }

    /// Builds the report from the configuration and what the database holds now (the audit
    /// chain is verified in full, so on a large log this takes as long as `audit verify`).
    public static func build(configuration: GatewayConfiguration, store: any SQLStore, keys: SubjectKeys?,
                             verifierKey: AuditVerifierKey?, now: Date = Date()) async throws -> ComplianceReport {
        var rows: [Row] = []
        let audit = configuration.audit
        let nowSeconds = Int64(now.timeIntervalSince1970)

        // Encryption at rest: the key-encryption key, its age against the rotation policy, data keys under it.
        var atRest: [String] = []
        var atRestPassed = false
        if let keys {
            do {
                let current = try await keys.service.current()
                let ageDays = current.createdAt > 0 ? Double(nowSeconds - current.createdAt) / 86_400 : nil
                let byVersion = try await keys.keysByVersion()
                let stale = byVersion.filter { $0.key != current.id }.values.reduce(0, +)
                atRest.append("key-encryption key: \(keys.service.kind), version \(current.id)"
                    + (ageDays.map { String(format: ", %.0f days old", $0) } ?? ", age unknown"))
                atRest.append("data keys: \(byVersion.values.reduce(0, +)) under the current version, \(stale) under older ones")
                atRest.append("payloads stored: \(audit.payloads.rawValue) (AES-256-GCM under the subject's data key); the user id and address of an authenticated caller's request records sealed under it")
                let withinPolicy = audit.kms.rotationDays == 0 || (ageDays ?? .infinity) <= Double(audit.kms.rotationDays)
                if !withinPolicy { atRest.append("the key is older than the rotation policy of \(audit.kms.rotationDays) days") }
                atRestPassed = withinPolicy && stale == 0
            } catch {
                atRest.append("the key service did not answer: \(error)")
            }
        } else {
            atRest.append("no key-encryption key is configured (kms): payloads cannot be stored and personal fields are not sealed")
        }
        rows.append(Row(control: "Encryption at rest", frameworks: "GDPR art. 32, HIPAA §164.312(a)(2)(iv), SOC 2 CC6.1",
                        setting: "kms.provider \(keys?.service.kind ?? "none"), rotation every \(audit.kms.rotationDays) days",
                        evidence: atRest, passed: atRestPassed))

        // Encryption in transit: the listener, and every upstream off this host.
        var transit: [String] = []
        let plain = configuration.models.flatMap { model in model.deployments.compactMap { deployment -> String? in
            guard let base = deployment.apiBase, base.hasPrefix("http://"), !Self.isLoopback(base) else { return nil }
            return "\(model.name) → \(base)"
        } }
        if let tls = configuration.server.tls {
            transit.append("listener: TLS 1.3 only (TLS 1.2 and older refused), client certificates \(tls.clientAuthentication.rawValue)")
        } else {
            transit.append("listener: plain HTTP (server.tls is not set)")
        }
        transit.append(plain.isEmpty ? "upstreams: none in plain HTTP off this host" : "upstreams in plain HTTP: " + plain.joined(separator: ", "))
        let database = configuration.storage.database
        if database.hasPrefix("postgres") {
            transit.append(database.contains("sslmode=verify-full") || database.contains("sslmode=verify-ca")
                           ? "database: TLS with the server verified" : "database: no verified TLS in its URL (sslmode)")
        }
        rows.append(Row(control: "Encryption in transit", frameworks: "GDPR art. 32, HIPAA §164.312(e)(1), SOC 2 CC6.7",
                        setting: configuration.server.tls == nil ? "server.tls not set" : "server.tls set",
                        evidence: transit, passed: configuration.server.tls != nil && plain.isEmpty))

        // Access controls: authentication required, roles that need MFA, API keys left unrotated.
        let required = configuration.auth.required ?? (configuration.auth.masterKey != nil || !configuration.auth.oidc.isEmpty)
        let mfa = configuration.auth.mfaRequiredRoles.map(\.rawValue).sorted()
        let cutoff = nowSeconds - 90 * 86_400
        let old = try await store.query("""
            SELECT COUNT(*) AS keys FROM portcullis_api_keys WHERE revoked_at IS NULL AND created_at < $1 AND previous_valid_until IS NULL
            """, [.integer(cutoff)]).first?["keys"].integer ?? 0
        rows.append(Row(control: "Access controls", frameworks: "HIPAA §164.312(a)(1), (d), SOC 2 CC6.1–CC6.3",
                        setting: "auth \(required ? "required" : "not required"); MFA for \(mfa.isEmpty ? "no role" : mfa.joined(separator: ", "))",
                        evidence: ["roles that require MFA: \(mfa.isEmpty ? "none" : mfa.joined(separator: ", "))",
                                   "active API keys older than 90 days and never rotated: \(old)"],
                        passed: required && mfa.contains("admin") && old == 0))

        // Audit logging: the chain verified now, its coverage, checkpoints, SIEM delivery.
        let report = try await AuditVerifier.verify(store, key: verifierKey)
        var logging = ["verification now: " + (report.isIntact ? "intact" : "DAMAGED — " + report.damage.map(\.description).joined(separator: "; ")),
                       "records: " + (report.records.isEmpty ? "none" : report.records.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))]
        if !report.retainedFrom.isEmpty {
            logging.append("retained from checkpoints: " + report.retainedFrom.sorted { $0.key < $1.key }.map { "\($0.key) after \($0.value)" }.joined(separator: ", "))
        }
        let checkpoints = try await store.query("SELECT chain, MAX(size) AS size, MAX(created_at) AS at FROM audit_checkpoints GROUP BY chain", [])
        logging.append("signed checkpoints: " + (checkpoints.isEmpty ? "none" : checkpoints.map { "\($0["chain"].text ?? "") at \($0["size"].integer ?? 0)" }.joined(separator: ", ")))
        for sink in audit.sinks {
            let cursors = try await store.query("SELECT chain, seq FROM audit_sink_cursors WHERE sink = $1", [.text(sink.name)])
            var lagRecords: Int64 = 0
            var oldestPending: Int64?
            for chain in report.records.keys {
                let delivered = cursors.first { $0["chain"].text == chain }?["seq"].integer ?? 0
                let pending = try await store.query("SELECT COUNT(*) AS records, MIN(timestamp) AS oldest FROM audit_logs WHERE chain = $1 AND seq > $2",
                                                    [.text(chain), .integer(delivered)]).first
                lagRecords += pending?["records"].integer ?? 0
                if let oldest = pending?["oldest"].integer { oldestPending = min(oldestPending ?? oldest, oldest) }
            }
            let lag = oldestPending.map { String(format: "%.0f s", now.timeIntervalSince1970 - Double($0) / 1_000_000) } ?? "0 s"
            logging.append("SIEM \(sink.name) (\(sink.kind.rawValue)): \(lagRecords) records not yet delivered, delivery lag \(lag)")
        }
        rows.append(Row(control: "Audit logging", frameworks: "HIPAA §164.312(b), SOC 2 CC7.2, GDPR art. 30",
                        setting: "audit \(audit.enabled ? "on" : "off"), fail_closed \(audit.failClosed.map(String.init) ?? "default"), \(audit.sinks.count) sinks",
                        evidence: logging, passed: audit.enabled && report.isIntact && !checkpoints.isEmpty))

        // Data minimisation.
        let pseudonymised = audit.sinks.filter { $0.pseudonymKey != nil }.count
        rows.append(Row(control: "Data minimisation", frameworks: "GDPR art. 5(1)(c), art. 25",
                        setting: "payloads \(audit.payloads.rawValue)" + (audit.payloadsByPolicy.isEmpty ? "" : "; by policy " + audit.payloadsByPolicy.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.rawValue)" }.joined(separator: ", ")),
                        evidence: ["no prompt or answer text in the application log above debug",
                                   "sinks receiving pseudonyms: \(pseudonymised) of \(audit.sinks.count)",
                                   "payloads kept \(audit.retention.payloadsDays) days"],
                        passed: audit.payloads != .full || audit.retention.payloadsDays <= 30))

        // Rights of the data subject.
        let erasures = try await store.query("SELECT COUNT(*) AS n FROM audit_logs WHERE category = 'privacy' AND action = 'subject.erase'", []).first?["n"].integer ?? 0
        rows.append(Row(control: "Right to erasure", frameworks: "GDPR art. 17",
                        setting: "POST /user/data/delete, POST /admin/subjects/{subject}/delete",
                        evidence: [keys == nil ? "no key service: payloads and sealed fields cannot be crypto-shredded" : "crypto-shredding of the subject's data key, signed receipts",
                                   "erasures recorded: \(erasures)"],
                        passed: keys != nil))
        rows.append(Row(control: "Right of access", frameworks: "GDPR art. 15, HIPAA §164.524",
                        setting: "GET /user/data/export, GET /admin/subjects/{subject}/export",
                        evidence: ["keys (no secrets), usage, audit records and decrypted payloads as one JSON document"], passed: true))

        // BAA and residency.
        let deployments = configuration.models.flatMap(\.deployments)
        let covered = deployments.filter(\.baa).count
        var residency: [String] = ["deployments under a BAA: \(covered) of \(deployments.count)"]
        var unsatisfiable: [String] = []
        for rule in configuration.residency {
            let satisfying = deployments.filter { deployment in
                (rule.regions.isEmpty || deployment.region.map(rule.regions.contains) == true) && (!rule.requireBAA || deployment.baa)
            }.count
            residency.append("rule \(rule.name) (\(rule.requirement)): \(satisfying) deployments satisfy it")
            if satisfying == 0 { unsatisfiable.append(rule.name) }
        }
        let violations = try await store.query("""
            SELECT COUNT(*) AS n FROM audit_logs WHERE category = 'request' AND outcome = 'refused' AND timestamp >= $1 AND record LIKE '%"code":"residency_violation"%'
            """, [.integer((nowSeconds - 30 * 86_400) * 1_000_000)]).first?["n"].integer ?? 0
        residency.append("residency refusals in the last 30 days: \(violations)")
        rows.append(Row(control: "BAA and residency", frameworks: "HIPAA §164.308(b), 152-FZ art. 18(5), GDPR ch. V",
                        setting: "\(configuration.residency.count) residency rules", evidence: residency, passed: unsatisfiable.isEmpty))

        // Retention.
        let teams = (try? await store.query("SELECT COUNT(*) AS n FROM portcullis_team_retention", []).first?["n"].integer) ?? 0
        let lastPass = try await store.query("SELECT MAX(timestamp) AS at FROM audit_logs WHERE category = 'retention'", []).first?["at"].integer
        let retention = audit.retention
        rows.append(Row(control: "Retention", frameworks: "GDPR art. 5(1)(e), HIPAA §164.316(b)(2), SOC 2 CC7.4",
                        setting: "payloads \(retention.payloadsDays) d, audit records \(retention.auditDays) d, security logs \(retention.securityDays) d",
                        evidence: ["teams with their own retention (consent recorded): \(teams)",
                                   "retention service every \(retention.intervalHours) h; last pass that removed data: "
                                       + (lastPass.map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double($0) / 1_000_000)) } ?? "none yet")],
                        passed: retention.intervalHours > 0 && retention.auditDays >= 2190 && (365...1095).contains(retention.securityDays)))

        // Incident response.
        let alerts = audit.alerts
        rows.append(Row(control: "Incident response", frameworks: "HIPAA §164.308(a)(6), SOC 2 CC7.3–CC7.5",
                        setting: "\(alerts.destinations.count) alert destinations",
                        evidence: ["rules: security incident, failed logins over \(alerts.rules.failedLoginsPerMinute)/min, compliance violation, cost spike over \(Int(alerts.rules.costSpikeRatio * 100))% of baseline",
                                   "address blocking: /admin/ip-rules, portcullis ip block" + (configuration.storage.redis == nil ? "" : ", Redis blocked_ips on every replica")],
                        passed: !alerts.destinations.isEmpty))
        return ComplianceReport(generatedAt: now, rows: rows)
    }

    static func isLoopback(_ url: String) -> Bool {
        guard let host = URLComponents(string: url)?.host else { return false }
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    public var json: JSONValue {
        ["object": "compliance.report", "generated_at": .string(ISO8601DateFormatter().string(from: generatedAt)), "passed": .bool(passed),
         "controls": .array(rows.map { row in
             ["control": .string(row.control), "frameworks": .string(row.frameworks), "setting": .string(row.setting),
              "evidence": .array(row.evidence.map(JSONValue.string)), "result": .string(row.passed ? "pass" : "fail")]
         })]
    }

    /// A page a person reads: one table, pass and fail marked.
    public var html: String {
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
                .replacingOccurrences(of: "\"", with: "&quot;")
        }
        let stamp = ISO8601DateFormatter().string(from: generatedAt)
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>Portcullis compliance report</title>
            <style>body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24}table{border-collapse:collapse;width:100%}
            th,td{border:1px solid #d0d7de;padding:.5rem;vertical-align:top;text-align:left}th{background:#f6f8fa}
            .pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}ul{margin:0;padding-left:1.2rem}small{color:#57606a}</style></head>
            <body><h1>Portcullis compliance report</h1>
            <p>Generated \(stamp). Overall: <span class="\(passed ? "pass" : "fail")">\(passed ? "every control passes" : "\(rows.filter { !$0.passed }.count) of \(rows.count) controls fail")</span></p>
            <table><thead><tr><th>Control</th><th>Setting</th><th>Evidence</th><th>Result</th></tr></thead><tbody>

            """
        for row in rows {
            page += "<tr><td>\(escape(row.control))<br><small>\(escape(row.frameworks))</small></td><td>\(escape(row.setting))</td><td><ul>"
            page += row.evidence.map { "<li>\(escape($0))</li>" }.joined()
            page += "</ul></td><td class=\"\(row.passed ? "pass" : "fail")\">\(row.passed ? "pass" : "fail")</td></tr>\n"
        }
        return page + "</tbody></table></body></html>\n"
    }
}
