import NIOSSL

/// The oldest TLS version a connection may negotiate.
public enum TLSMinimumVersion: String, Sendable, Hashable, CaseIterable {
    case tls12 = "1.2"
    case tls13 = "1.3"

    var nio: TLSVersion { self == .tls12 ? .tlsv12 : .tlsv13 }
}

/// How the gateway speaks TLS as a client: to an upstream, to PostgreSQL, to Redis or to a SIEM.
/// TLS 1.3 unless a deployment allows 1.2; the peer is verified against `trustedCAFile` (or the
/// system's roots), and a client certificate is presented when one is set (mTLS).
public struct ClientTLSSettings: Sendable, Hashable {
    /// The oldest version accepted. Default 1.3.
    public var minimumVersion: TLSMinimumVersion = .tls13
    /// PEM certificates trusted for the peer; the system's roots when nil.
    public var trustedCAFile: String?
    /// PEM certificate (chain) and key presented to the peer, for mTLS.
    public var clientCertificateFile: String?
    public var clientKeyFile: String?
    /// Whether the peer's name must match its certificate (false: the chain alone, as PostgreSQL's `verify-ca`).
    public var verifiesHostname: Bool = true
    /// Whether the peer's certificate is checked at all (false only for PostgreSQL's `sslmode=require` without a CA, as libpq does).
    public var verifiesPeer: Bool = true

    public init(minimumVersion: TLSMinimumVersion = .tls13, trustedCAFile: String? = nil,
                clientCertificateFile: String? = nil, clientKeyFile: String? = nil) {
        self.minimumVersion = minimumVersion
        self.trustedCAFile = trustedCAFile
        self.clientCertificateFile = clientCertificateFile
        self.clientKeyFile = clientKeyFile
    }

    /// The certificate files these settings read, each with the role it plays (for expiry metrics).
    public var certificateFiles: [(role: String, path: String)] {
        [("ca", trustedCAFile), ("client", clientCertificateFile)].compactMap { role, path in path.map { (role, $0) } }
    }

    /// The NIOSSL configuration, offering `applicationProtocols` by ALPN.
    public func configuration(applicationProtocols: [String] = []) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = minimumVersion.nio
        tls.applicationProtocols = applicationProtocols
        if let trustedCAFile {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(trustedCAFile))
            } catch {
                throw TLSSettingsError("cannot read the trusted CA file '\(trustedCAFile)'")
            }
        }
        if !verifiesPeer {
            tls.certificateVerification = .none
        } else if !verifiesHostname {
            tls.certificateVerification = .noHostnameVerification
        }
        if let clientCertificateFile, let clientKeyFile {
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(clientCertificateFile).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: clientKeyFile, format: .pem))
            } catch {
                throw TLSSettingsError("cannot read the client certificate '\(clientCertificateFile)' or its key '\(clientKeyFile)'")
            }
        }
        return tls
    }
}

/// A TLS setting that cannot be used (an unreadable file, a key that does not load).
public struct TLSSettingsError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
