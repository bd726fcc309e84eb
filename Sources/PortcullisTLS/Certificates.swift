import Foundation
import NIOCore
import NIOSSL
import SwiftASN1
import X509

/// One certificate the gateway serves, trusts or presents, and when it stops being valid.
public struct CertificateLifetime: Sendable, Equatable {
    /// What it is for: `server`, `client_ca`, or `<use>_ca` / `<use>_client` for an outgoing connection.
    public var role: String
    /// The PEM file it was read from.
    public var file: String
    /// Its subject, RFC 4514 style (`CN=…,O=…`).
    public var subject: String
    /// Seconds since 1970 after which it is no longer valid.
    public var notValidAfter: Int64

    /// Days until it expires from `now` (negative once it has).
    public func daysLeft(now: Date = Date()) -> Double {
        (Double(notValidAfter) - now.timeIntervalSince1970) / 86_400
    }
}

/// Reads certificates: their lifetimes, and the subject of a peer's.
public enum Certificates {
    /// Every certificate in each PEM file, labelled with its file's role. A file that cannot
    /// be read is left out (the setting that names it fails on its own, with its own error).
    public static func lifetimes(of files: [(role: String, path: String)]) -> [CertificateLifetime] {
        files.flatMap { role, path -> [CertificateLifetime] in
            guard let certificates = try? NIOSSLCertificate.fromPEMFile(path) else { return [] }
            return certificates.map { certificate in
                CertificateLifetime(role: role, file: path, subject: subject(of: certificate) ?? "",
                                    notValidAfter: Int64(certificate.notValidAfter))
            }
        }
    }

    /// The subject of `certificate` as `CN=…,OU=…,O=…` (most specific first), nil if it does not parse.
    public static func subject(of certificate: NIOSSLCertificate) -> String? {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return nil }
        return parsed.subject.description
    }
}

extension Certificates {
    /// The subject of the verified certificate the client of `channel` presented, if any. An
    /// HTTP/2 stream's channel has no TLS handler of its own: its connection (the parent) has.
    public static func peerSubject(of channel: any Channel) async -> String? {
        var current: (any Channel)? = channel
        while let candidate = current {
            do {
                // A channel without a TLS handler throws; one whose client sent no certificate answers nil.
                return try await candidate.nioSSL_peerCertificate().get().flatMap(subject(of:))
            } catch {
                current = candidate.parent
            }
        }
        return nil
    }
}
