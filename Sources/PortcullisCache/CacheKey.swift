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

    /// The key of `request` (as decoded, before stage 6 changes it) for `tenant`.
    public init(tenant: String, namespace: String, policy: String?, request: ChatRequest) {
        var hash = SHA256()
        for part in ["portcullis-cache-v1", tenant, namespace, policy ?? ""] {
            hash.update(data: Array(part.utf8))
            hash.update(data: [0])
        }
        hash.update(data: Self.canonicalBytes(of: request))
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in hash.finalize() {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0F)])
        }
        digest = String(decoding: text, as: UTF8.self)
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
