import Crypto
import PortcullisCore

/// The identity of a cached answer: SHA-256 over the tenant, the namespace, the guard policy
/// and the canonical request. Two requests share an entry only when all of these are equal:
/// the same tenant, the same model group, messages (system prompt included), tools and tool
/// choice, response format and sampling parameters. Whether the request streams, its usage
/// option and `user` are not part of it: they change how the answer is delivered, not the answer.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// 64 hexadecimal digits.
    public let digest: String

    public init(digest: String) {
        self.digest = digest
    }

    public var description: String { digest }

    /// The tag a data subject's entries carry (`user:<id>` or `key:<id>`): SHA-256 of the name,
    /// 32 hexadecimal digits, so that Redis and the replicas' messages never hold the name itself
    /// and erasure can find the subject's entries from its name alone.
    public static func subjectTag(_ subject: String) -> String {
        var hash = SHA256()
        hash.update(data: Array("portcullis-cache-subject-v1".utf8) + [0] + Array(subject.utf8))
        return String(hex(hash.finalize()).prefix(32))
    }

    /// The key of `request` (as decoded, before stage 6 changes it) for `tenant`.
    public init(tenant: String, namespace: String, policy: String?, request: ChatRequest) {
        var hash = SHA256()
        for part in ["portcullis-cache-v1", tenant, namespace, policy ?? ""] {
            hash.update(data: Array(part.utf8))
            hash.update(data: [0])
        }
        hash.update(data: Self.canonicalBytes(of: request))
        digest = Self.hex(hash.finalize())
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The request as one deterministic JSON text: the OpenAI wire form with object keys sorted,
    /// without the delivery fields, and with the Anthropic-only fields beside it.
    static func canonicalBytes(of request: ChatRequest) -> [UInt8] {
        var delivered = request
        delivered.stream = false
        delivered.includeUsage = false
        delivered.user = nil
        var object = OpenAIWire.encodeChatRequest(delivered, upstreamModel: request.model).objectValue ?? JSONObject()
        if !request.anthropicExtra.isEmpty { object["anthropic_extra"] = .object(request.anthropicExtra) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(512)
        JSONWriter.writeSortingKeys(.object(object), into: &bytes)
        return bytes
    }
}
