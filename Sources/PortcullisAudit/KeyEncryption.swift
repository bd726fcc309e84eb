import Crypto
import Foundation
import PortcullisCore
import Synchronization

/// One generation of the key-encryption key.
public struct KeyVersion: Sendable, Equatable {
    /// The version's id, stored beside every data key it wraps.
    public var id: String
    /// Unix seconds when it became current.
    public var createdAt: Int64

    public init(id: String, createdAt: Int64) {
        self.id = id
        self.createdAt = createdAt
    }
}

/// A data key as stored: its bytes wrapped under one key-encryption key version.
public struct WrappedKey: Sendable, Equatable {
    public var version: String
    public var ciphertext: [UInt8]

    public init(version: String, ciphertext: [UInt8]) {
        self.version = version
        self.ciphertext = ciphertext
    }
}

/// Where the key-encryption key lives (envelope encryption): it wraps and unwraps data keys,
/// and never leaves the service. Older versions still unwrap what they wrapped until it is
/// re-wrapped under the current one.
public protocol KeyEncryptionService: Sendable {
    /// `local` or `aws`, as the configuration names it.
    var kind: String { get }
    /// The version new data keys are wrapped under.
    func current() async throws -> KeyVersion
    /// Wraps `key` under the current version; `context` is bound to it (the same must be given to unwrap).
    func wrap(_ key: [UInt8], context: String) async throws -> WrappedKey
    /// The data key, or an error naming why it cannot be had (unknown version, wrong context, unreachable service).
    func unwrap(_ wrapped: WrappedKey, context: String) async throws -> [UInt8]
    /// Makes a new version current and returns it; the older ones still unwrap.
    func rotate() async throws -> KeyVersion
}

/// Why stored data could not be encrypted or read; each names what it concerns.
public enum DataProtectionError: Error, Equatable, CustomStringConvertible {
    /// The key service did not answer or refused (with its reason).
    case keyServiceUnavailable(String)
    /// A wrapped key or a ciphertext that does not open under its key: corrupted, or the wrong key.
    case undecryptable(String)
    /// The data key of this subject was destroyed (the subject was erased).
    case erased(String)
    /// The key file cannot be read or written.
    case keyFile(String)

    public var description: String {
        switch self {
        case .keyServiceUnavailable(let reason): return "the key service is unavailable: \(reason)"
        case .undecryptable(let what): return "\(what) cannot be decrypted: it is corrupted or under another key"
        case .erased(let subject): return "the data key of \(subject) was destroyed when it was erased"
        case .keyFile(let reason): return reason
        }
    }
}

/// AES-256-GCM with the context as associated data: `0x01 ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
public enum Envelope {
    static let version: UInt8 = 1

    public static func seal(_ plaintext: [UInt8], key: SymmetricKey, context: String) throws -> [UInt8] {
        let box = try AES.GCM.seal(plaintext, using: key, authenticating: Array(context.utf8))
        guard let combined = box.combined else { throw DataProtectionError.undecryptable(context) }
        return [version] + Array(combined)
    }

    /// The plaintext; `DataProtectionError.undecryptable(what)` when the bytes are not a sealed box of this key and context.
    public static func open(_ sealed: [UInt8], key: SymmetricKey, context: String, what: String) throws -> [UInt8] {
        guard sealed.count >= 1 + 12 + 16, sealed[0] == version,
              let box = try? AES.GCM.SealedBox(combined: sealed.dropFirst()),
              let plaintext = try? AES.GCM.open(box, using: key, authenticating: Array(context.utf8)) else {
            throw DataProtectionError.undecryptable(what)
        }
        return Array(plaintext)
    }
}

/// The embedded default key-encryption key: a file of versions (mode 0600), made on first
/// start beside the database. Each line is `<version> <unix seconds> <base64 key>`; rotation
/// appends a line and rewrites the file in one rename.
public final class LocalKeyFile: KeyEncryptionService {
    /// The file (nil: a key of this process only, for an in-memory database).
    public let path: String?
    public var kind: String { "local" }
    private struct Version {
        var version: KeyVersion
        var key: SymmetricKey
    }
    private let versions: Mutex<[Version]>

    /// A key that lives as long as the process (an in-memory database lives no longer).
    public init() {
        path = nil
        versions = Mutex([Version(version: KeyVersion(id: "1", createdAt: Int64(Date().timeIntervalSince1970)), key: SymmetricKey(size: .bits256))])
    }

    /// Reads the file, or creates it with a first version when `create` and it is missing.
    public init(path: String, create: Bool) throws {
        self.path = path
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            versions = Mutex(try Self.parse(text, path: path))
            return
        }
        guard create else { throw DataProtectionError.keyFile("cannot read the key-encryption key file \(path)") }
        let first = Version(version: KeyVersion(id: "1", createdAt: Int64(Date().timeIntervalSince1970)), key: SymmetricKey(size: .bits256))
        try Self.write([first], to: path)
        versions = Mutex([first])
    }

    private static func parse(_ text: String, path: String) throws -> [Version] {
        var read: [Version] = []
        for (index, line) in text.split(separator: "\n").enumerated() {
            let fields = line.split(separator: " ")
            guard fields.count == 3, let created = Int64(fields[1]), let bytes = Data(base64Encoded: String(fields[2])), bytes.count == 32 else {
                throw DataProtectionError.keyFile("\(path) line \(index + 1) is not '<version> <unix seconds> <base64 32-byte key>'")
            }
            read.append(Version(version: KeyVersion(id: String(fields[0]), createdAt: created), key: SymmetricKey(data: bytes)))
        }
        guard !read.isEmpty else { throw DataProtectionError.keyFile("\(path) holds no key") }
        return read
    }

    /// Reads the file again (another process, `portcullis kms rotate`, may have added a version).
    public func reload() throws {
        guard let path else { return }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw DataProtectionError.keyFile("cannot read the key-encryption key file \(path)")
        }
        let read = try Self.parse(text, path: path)
        versions.withLock { $0 = read }
    }

    public func current() async throws -> KeyVersion { versions.withLock { $0[$0.count - 1].version } }

    public func wrap(_ key: [UInt8], context: String) async throws -> WrappedKey {
        let newest = versions.withLock { $0[$0.count - 1] }
        return WrappedKey(version: newest.version.id, ciphertext: try Envelope.seal(key, key: newest.key, context: "kek:" + context))
    }

    public func unwrap(_ wrapped: WrappedKey, context: String) async throws -> [UInt8] {
        if versions.withLock({ !$0.contains { $0.version.id == wrapped.version } }) { try? reload() }
        guard let version = versions.withLock({ $0.first { $0.version.id == wrapped.version } }) else {
            throw DataProtectionError.undecryptable("the data key of \(context) (its key-encryption key version \(wrapped.version) is not in \(path ?? "memory"))")
        }
        return try Envelope.open(wrapped.ciphertext, key: version.key, context: "kek:" + context, what: "the data key of \(context)")
    }

    public func rotate() async throws -> KeyVersion {
        let known = versions.withLock { $0 }
        let next = (known.compactMap { Int($0.version.id) }.max() ?? 0) + 1
        let added = Version(version: KeyVersion(id: String(next), createdAt: Int64(Date().timeIntervalSince1970)), key: SymmetricKey(size: .bits256))
        if let path { try Self.write(known + [added], to: path) }
        versions.withLock { $0.append(added) }
        return added.version
    }

    private static func write(_ versions: [Version], to path: String) throws {
        let text = versions.map { version in
            "\(version.version.id) \(version.version.createdAt) \(version.key.withUnsafeBytes { Data($0).base64EncodedString() })\n"
        }.joined()
        let temporary = path + ".new"
        unlink(temporary)
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw DataProtectionError.keyFile("cannot write the key-encryption key file \(temporary)")
        }
        guard rename(temporary, path) == 0 else {
            throw DataProtectionError.keyFile("cannot replace the key-encryption key file \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// AWS KMS (or a compatible service) holding the key-encryption key: data keys are wrapped
/// with `Encrypt` and unwrapped with `Decrypt`, the context bound as encryption context. A
/// version is a generation of the key's material: rotation is `RotateKeyOnDemand`, and the
/// current version is one more than the rotations `ListKeyRotations` reports. The transport
/// carries the endpoint, credentials and SigV4 signing for the `kms` service.
public final class AWSKeyService: KeyEncryptionService {
    public let keyID: String
    private let transport: any JSONTransport
    private let known = Mutex<KeyVersion?>(nil)
    public var kind: String { "aws" }

    public init(keyID: String, transport: any JSONTransport) {
        self.keyID = keyID
        self.transport = transport
    }

    public func current() async throws -> KeyVersion {
        if let known = known.withLock({ $0 }) { return known }
        var rotations: [JSONValue] = []
        var marker: String?
        repeat {
            var body: JSONObject = ["KeyId": .string(keyID)]
            if let marker { body["Marker"] = .string(marker) }
            let page = try await call("ListKeyRotations", body)
            rotations += page["Rotations"]?.arrayValue ?? []
            marker = page["Truncated"]?.boolValue == true ? page["NextMarker"]?.stringValue : nil
        } while marker != nil
        let newest = rotations.compactMap { $0.objectValue?["RotationDate"]?.doubleValue }.max()
        let version = KeyVersion(id: String(rotations.count + 1), createdAt: Int64(newest ?? 0))
        known.withLock { $0 = version }
        return version
    }

    public func wrap(_ key: [UInt8], context: String) async throws -> WrappedKey {
        let version = try await current()
        let answer = try await call("Encrypt", ["KeyId": .string(keyID), "Plaintext": .string(Data(key).base64EncodedString()),
                                                "EncryptionContext": ["portcullis": .string(context)]])
        guard let blob = answer["CiphertextBlob"]?.stringValue.flatMap({ Data(base64Encoded: $0) }) else {
            throw DataProtectionError.keyServiceUnavailable("AWS KMS Encrypt answered without a CiphertextBlob")
        }
        return WrappedKey(version: version.id, ciphertext: Array(blob))
    }

    public func unwrap(_ wrapped: WrappedKey, context: String) async throws -> [UInt8] {
        let answer: JSONObject
        do {
            answer = try await call("Decrypt", ["KeyId": .string(keyID), "CiphertextBlob": .string(Data(wrapped.ciphertext).base64EncodedString()),
                                                "EncryptionContext": ["portcullis": .string(context)]])
        } catch DataProtectionError.keyServiceUnavailable(let reason) where reason.contains("InvalidCiphertext") || reason.contains("AccessDenied") {
            throw DataProtectionError.undecryptable("the data key of \(context)")
        }
        guard let plaintext = answer["Plaintext"]?.stringValue.flatMap({ Data(base64Encoded: $0) }) else {
            throw DataProtectionError.undecryptable("the data key of \(context)")
        }
        return Array(plaintext)
    }

    public func rotate() async throws -> KeyVersion {
        _ = try await call("RotateKeyOnDemand", ["KeyId": .string(keyID)])
        known.withLock { $0 = nil }
        return try await current()
    }

    private func call(_ action: String, _ body: JSONObject) async throws -> JSONObject {
        let answer: JSONValue
        do {
            answer = try await transport.post(path: "/", headers: [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "TrentService." + action)],
                                              body: .object(body), requestID: "kms-" + FastRandom.hex(bytes: 8))
        } catch {
            throw DataProtectionError.keyServiceUnavailable("AWS KMS \(action): \(error)")
        }
        guard let object = answer.objectValue else { throw DataProtectionError.keyServiceUnavailable("AWS KMS \(action) did not answer an object") }
        return object
    }
}
