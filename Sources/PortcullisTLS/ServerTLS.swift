import Foundation
import NIOCore
import NIOSSL
import Synchronization

/// The listener's TLS: TLS 1.3 only, with the serving certificate, optional or required client
/// certificates, and the HSTS header every response over it carries.
///
/// Session resumption: BoringSSL issues TLS 1.3 session tickets by default, under ticket keys it
/// generates itself and rotates every two days, still accepting the previous key (a ticket
/// lives at most two days). swift-nio-ssl exposes neither the key nor the cache size, so they
/// are not settings; the handshake metric shows whether clients resume.
public struct ServerTLSSettings: Sendable, Equatable {
    /// Whether clients present certificates.
    public enum ClientAuthentication: String, Sendable, Equatable, CaseIterable {
        /// None asked for.
        case none
        /// Asked for and verified when presented; a client without one still connects.
        case optional
        /// A verified certificate is needed to connect.
        case required
    }

    public var certificatePath: String
    public var privateKeyPath: String
    /// Default none.
    public var clientAuthentication: ClientAuthentication = .none
    /// PEM certificates of the authorities whose client certificates are accepted.
    public var clientCAFile: String?
    /// The `Strict-Transport-Security` header; nil sends none. Default a year with subdomains.
    public var strictTransportSecurity: StrictTransportSecurity? = StrictTransportSecurity()

    public init(certificatePath: String, privateKeyPath: String) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
    }

    /// The certificate files the listener reads, each with its role (for expiry metrics).
    public var certificateFiles: [(role: String, path: String)] {
        [("server", certificatePath)] + (clientCAFile.map { [("client_ca", $0)] } ?? [])
    }

    /// The NIOSSL server configuration.
    public func configuration() throws -> TLSConfiguration {
        let chain: [NIOSSLCertificateSource]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) }
            key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        } catch {
            throw TLSSettingsError("cannot read the serving certificate '\(certificatePath)' or its key '\(privateKeyPath)'")
        }
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv13
        switch clientAuthentication {
        case .none:
            tls.certificateVerification = .none
        case .optional, .required:
            tls.certificateVerification = clientAuthentication == .required ? .noHostnameVerification : .optionalVerification
            if let clientCAFile {
                do {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCAFile))
                } catch {
                    throw TLSSettingsError("cannot read the client CA file '\(clientCAFile)'")
                }
            }
            tls.sendCANameList = true
        }
        return tls
    }
}

/// RFC 6797's header: browsers and clients that honour it never try plain HTTP for the host again.
public struct StrictTransportSecurity: Sendable, Equatable {
    /// Seconds the policy holds. Default 31536000 (a year).
    public var maxAge: Int = 31_536_000
    /// Default true.
    public var includeSubdomains: Bool = true
    /// Asks to be put on browsers' preload lists. Default false.
    public var preload: Bool = false

    public init(maxAge: Int = 31_536_000, includeSubdomains: Bool = true, preload: Bool = false) {
        self.maxAge = maxAge
        self.includeSubdomains = includeSubdomains
        self.preload = preload
    }

    /// The header's value, e.g. `max-age=31536000; includeSubDomains`.
    public var headerValue: String {
        "max-age=\(maxAge)" + (includeSubdomains ? "; includeSubDomains" : "") + (preload ? "; preload" : "")
    }
}

/// The listener's certificate and key as last read from their files. Every TLS handshake takes
/// the current pair (through NIOSSL's per-hello callback), so a renewed certificate — a 90-day
/// rotation, cert-manager writing a new secret — serves new connections at once while open
/// connections keep the session they negotiated. A pair that does not load (a half-written
/// file) keeps the previous one in service and says why.
public final class ServingCertificate: Sendable {
    public let certificatePath: String
    public let privateKeyPath: String
    private struct Loaded {
        var chain: [NIOSSLCertificateSource]
        var key: NIOSSLPrivateKeySource
        var stamp: [Date?]
    }
    private let loaded: Mutex<Loaded>

    public init(certificatePath: String, privateKeyPath: String) throws {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        loaded = Mutex(try Self.load(certificatePath, privateKeyPath))
    }

    private static func modified(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    private static func load(_ certificatePath: String, _ privateKeyPath: String) throws -> Loaded {
        let stamp = [modified(certificatePath), modified(privateKeyPath)]
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { NIOSSLCertificateSource.certificate($0) }
            let key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
            guard !chain.isEmpty else { throw TLSSettingsError("no certificate in '\(certificatePath)'") }
            return Loaded(chain: chain, key: .privateKey(key), stamp: stamp)
        } catch {
            throw TLSSettingsError("cannot read the serving certificate '\(certificatePath)' or its key '\(privateKeyPath)'")
        }
    }

    /// Reads the files again when they changed (or always with `force`); true when a new pair
    /// is in service. Throws when the files changed but do not load (the old pair stays).
    @discardableResult
    public func reload(force: Bool = false) throws -> Bool {
        let stamp = [Self.modified(certificatePath), Self.modified(privateKeyPath)]
        guard force || loaded.withLock({ $0.stamp != stamp }) else { return false }
        let fresh = try Self.load(certificatePath, privateKeyPath)
        loaded.withLock { $0 = fresh }
        return true
    }

    /// `configuration` serving the current pair on every handshake.
    public func serving(_ configuration: TLSConfiguration) -> TLSConfiguration {
        var tls = configuration
        tls.sslContextCallback = { [self] _, promise in
            let current = loaded.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = current.chain
            override.privateKey = current.key
            promise.succeed(override)
        }
        return tls
    }
}
