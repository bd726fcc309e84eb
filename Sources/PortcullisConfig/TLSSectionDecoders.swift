import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisTLS

/// The TLS settings of the file: the listener's (`server.tls`), each outgoing connection's
/// (a deployment's, `storage.redis_tls`), and the client certificates that authenticate.
extension ConfigurationLoader {
    /// `server.tls`: `certificate`, `private_key`, `client_auth` (none, optional, required),
    /// `client_ca_file`, `hsts` (false, or `max_age`, `include_subdomains`, `preload`).
    static func decodeServerTLS(_ tls: NodeReader) -> ServerTLSSettings? {
        guard tls.expectMapping(allowedKeys: ["certificate", "private_key", "client_auth", "client_ca_file", "hsts"]) else { return nil }
        let certificate = tls.requiredString("certificate")
        let key = tls.requiredString("private_key")
        guard let certificate, let key else { return nil }
        for (field, file) in [("certificate", certificate), ("private_key", key)] where !FileManager.default.isReadableFile(atPath: file) {
            tls.issue(field, "cannot read '\(file)'")
        }
        var settings = ServerTLSSettings(certificatePath: certificate, privateKeyPath: key)
        if let mode = tls.string("client_auth") {
            if let parsed = ServerTLSSettings.ClientAuthentication(rawValue: mode) { settings.clientAuthentication = parsed } else {
                tls.issue("client_auth", "must be none, optional or required; got '\(mode)'")
            }
        }
        settings.clientCAFile = readableFile(tls, "client_ca_file")
        if settings.clientAuthentication != .none && settings.clientCAFile == nil {
            tls.issue("client_ca_file", "is required when client_auth is \(settings.clientAuthentication.rawValue): it names the authorities whose client certificates are accepted")
        }
        if let hsts = tls.child("hsts") {
            if !hsts.isMapping {
                if tls.bool("hsts") == false { settings.strictTransportSecurity = nil }
            } else if hsts.expectMapping(allowedKeys: ["max_age", "include_subdomains", "preload"]) {
                var policy = StrictTransportSecurity()
                policy.maxAge = hsts.integer("max_age", in: 0...(2 * 31_536_000)) ?? policy.maxAge
                policy.includeSubdomains = hsts.bool("include_subdomains") ?? policy.includeSubdomains
                policy.preload = hsts.bool("preload") ?? policy.preload
                settings.strictTransportSecurity = policy
            }
        }
        return settings
    }

    /// An outgoing connection's TLS from `reader`'s keys (their names given, as a deployment
    /// prefixes them and `redis_tls` does not): the minimum version, CA file and client pair.
    static func decodeClientTLS(_ reader: NodeReader, into settings: inout ClientTLSSettings,
                                minimumVersionKey: String, caFileKey: String = "ca_file") {
        if let version = reader.string(minimumVersionKey) {
            if let parsed = TLSMinimumVersion(rawValue: version) { settings.minimumVersion = parsed } else {
                reader.issue(minimumVersionKey, "must be 1.2 or 1.3; got '\(version)'")
            }
        }
        settings.trustedCAFile = readableFile(reader, caFileKey) ?? settings.trustedCAFile
        settings.clientCertificateFile = readableFile(reader, "client_certificate")
        settings.clientKeyFile = readableFile(reader, "client_key")
        if (reader.string("client_certificate") == nil) != (reader.string("client_key") == nil) {
            reader.issue(reader.string("client_certificate") == nil ? "client_certificate" : "client_key",
                         "client_certificate and client_key go together (mTLS)")
        }
    }

    /// `auth.certificate_principals`: each `subject` with who it is (`user`, `team`, `role`),
    /// what it may use (`models`) and its limits (`rpm`, `tpm`, `concurrency`).
    static func decodeCertificatePrincipals(_ list: NodeReader) -> [CertificatePrincipalConfiguration] {
        var seen = Set<String>()
        return list.elements().compactMap { reader in
            guard reader.expectMapping(allowedKeys: ["subject", "user", "team", "role", "models", "rpm", "tpm", "concurrency"]),
                  let subject = reader.requiredString("subject") else { return nil }
            guard seen.insert(subject).inserted else {
                reader.issue("subject", "'\(subject)' is mapped twice")
                return nil
            }
            var principal = CertificatePrincipalConfiguration(subject: subject)
            principal.user = reader.string("user")
            principal.team = reader.string("team")
            if let role = reader.string("role") {
                if let parsed = Role(rawValue: role) { principal.role = parsed } else {
                    reader.issue("role", "unknown role '\(role)'; expected one of \(roleNames.joined(separator: ", "))")
                }
            }
            principal.models = reader.child("models")?.elements().compactMap { $0.scalarString() } ?? []
            principal.requestsPerMinute = reader.integer("rpm", in: 1...Int.max).map(Int64.init)
            principal.tokensPerMinute = reader.integer("tpm", in: 1...Int.max).map(Int64.init)
            principal.maximumConcurrency = reader.integer("concurrency", in: 1...Int.max).map(Int64.init)
            return principal
        }
    }

    private static func readableFile(_ reader: NodeReader, _ key: String) -> String? {
        guard let path = reader.string(key) else { return nil }
        guard FileManager.default.isReadableFile(atPath: path) else {
            reader.issue(key, "cannot read '\(path)'")
            return nil
        }
        return path
    }
}
