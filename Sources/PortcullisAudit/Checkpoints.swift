import Crypto
import Foundation
import PortcullisCore

/// A signed statement of a chain's length and head, in the C2SP tlog-checkpoint format:
/// the origin line, the size in decimal, the head as base64, each ending in a newline, then a
/// C2SP signed note's blank line and signature line. The "root hash" line carries the chain's
/// head (the SHA-256 of its last record), which commits to every record before it.
public struct AuditCheckpoint: Sendable, Equatable {
    /// `<origin>/<chain>`: names the log and the chain.
    public var origin: String
    /// Records in the chain (the sequence number of the last one).
    public var size: Int64
    /// The last record's hash, 64 lowercase hex digits.
    public var head: String

    public init(origin: String, size: Int64, head: String) {
        self.origin = origin
        self.size = size
        self.head = head
    }

    /// The checkpoint's text (the signed note's body).
    public var body: String {
        "\(origin)\n\(size)\n\(Data(AuditCheckpoint.bytes(hex: head)).base64EncodedString())\n"
    }

    /// Parses a body; nil when it is not three lines of origin, size and a 32-byte base64 hash.
    public init?(body: String) {
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 4, lines.last == "", let size = Int64(lines[1]), size >= 0,
              let hash = Data(base64Encoded: String(lines[2])), hash.count == 32 else { return nil }
        self.init(origin: String(lines[0]), size: size, head: hash.map { String($0, radix: 16).leftPadded(to: 2) }.joined())
    }

    static func bytes(hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            guard let h = nibble(high), let l = nibble(low) else { return [] }
            bytes.append(h << 4 | l)
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

/// The Ed25519 key that signs checkpoints, and C2SP signed notes made and checked with it.
public struct AuditSigningKey: Sendable {
    /// The key's name in signature lines and in the verifier key.
    public let name: String
    let key: Curve25519.Signing.PrivateKey

    public init(name: String, seed: [UInt8]) throws {
        self.init(name: name, key: try Curve25519.Signing.PrivateKey(rawRepresentation: seed))
    }

    init(name: String, key: Curve25519.Signing.PrivateKey) {
        self.name = name
        self.key = key
    }

    /// A new key from the system's secure generator, for a database that lives only as long as the process.
    public static func ephemeral(name: String) -> AuditSigningKey {
        AuditSigningKey(name: name, key: Curve25519.Signing.PrivateKey())
    }

    public var publicKey: AuditVerifierKey { AuditVerifierKey(name: name, publicKey: Array(key.publicKey.rawRepresentation)) }

    /// `body` followed by the blank line and this key's signature line.
    public func sign(_ body: String) throws -> String {
        let signature = try key.signature(for: Array(body.utf8))
        let blob = publicKey.keyHash + Array(signature)
        return body + "\n\u{2014} \(name) \(Data(blob).base64EncodedString())\n"
    }

    /// Reads the key file (the 32-byte seed in base64), or creates it (mode 0600) when `create` and it is missing.
    public static func load(path: String, name: String, create: Bool) throws -> AuditSigningKey {
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            guard let seed = Data(base64Encoded: text.trimmingCharacters(in: .whitespacesAndNewlines)), seed.count == 32 else {
                throw AuditKeyError(message: "\(path) does not hold a base64 Ed25519 seed of 32 bytes")
            }
            return try AuditSigningKey(name: name, seed: Array(seed))
        }
        guard create else { throw AuditKeyError(message: "cannot read the audit signing key \(path)") }
        let seed = Array(Curve25519.Signing.PrivateKey().rawRepresentation)
        let created = FileManager.default.createFile(atPath: path, contents: Data((Data(seed).base64EncodedString() + "\n").utf8),
                                                     attributes: [.posixPermissions: 0o600])
        guard created else { throw AuditKeyError(message: "cannot create the audit signing key \(path)") }
        return try AuditSigningKey(name: name, seed: seed)
    }
}

/// The public half, as C2SP signed-note verifier keys write it: `<name>+<hash>+<base64(0x01 ‖ key)>`.
public struct AuditVerifierKey: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let publicKey: [UInt8]

    public init(name: String, publicKey: [UInt8]) {
        self.name = name
        self.publicKey = publicKey
    }

    /// Parses `<name>+<8 hex digits>+<base64>`; nil when malformed or the hash does not match.
    public init?(_ text: String) {
        // The key data is base64, which may itself hold '+': only the first two separate.
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let data = Data(base64Encoded: String(parts[2])), data.count == 33, data.first == 0x01 else { return nil }
        self.init(name: String(parts[0]), publicKey: Array(data.dropFirst()))
        guard parts[1] == keyHash.map({ String($0, radix: 16).leftPadded(to: 2) }).joined() else { return nil }
    }

    /// The first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ key): the key's id in signature lines.
    var keyHash: [UInt8] {
        var hasher = SHA256()
        hasher.update(data: Array((name + "\n").utf8) + [0x01] + publicKey)
        return Array(hasher.finalize().prefix(4))
    }

    public var description: String {
        "\(name)+\(keyHash.map { String($0, radix: 16).leftPadded(to: 2) }.joined())+\(Data([0x01] + publicKey).base64EncodedString())"
    }

    /// The note's body when one of its signatures is this key's and valid; nil otherwise.
    public func verifiedBody(of note: String) -> String? {
        guard let split = note.range(of: "\n\n", options: .backwards) else { return nil }
        let body = String(note[..<split.lowerBound]) + "\n"
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return nil }
        for line in note[split.upperBound...].split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 3, fields[0] == "\u{2014}", fields[1] == name, let blob = Data(base64Encoded: String(fields[2])),
                  blob.count == 68, Array(blob.prefix(4)) == keyHash else { continue }
            if key.isValidSignature(blob.dropFirst(4), for: Array(body.utf8)) { return body }
        }
        return nil
    }
}

public struct AuditKeyError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
