import Crypto
import PortcullisCore

/// One audit event: who did what, with what outcome. The first columns are what operators
/// filter on; `details` holds the rest (actor, route, model, status, tokens, guard findings —
/// never matched text).
public struct AuditRecord: Sendable, Equatable {
    public enum Severity: String, Sendable, CaseIterable {
        case critical = "CRITICAL", high = "HIGH", medium = "MEDIUM", low = "LOW", info = "INFO"
    }

    public var id: String
    /// Microseconds since 1970.
    public var timestamp: Int64
    public var severity: Severity
    /// `request`, `authentication`, `admin`, `guard`, `key`, `configuration`, `lifecycle`.
    public var category: String
    public var action: String
    public var outcome: String
    public var requestID: String?
    public var actorKeyID: String?
    public var details: JSONObject

    public init(id: String = FastRandom.uuidString(), timestamp: Int64, severity: Severity, category: String, action: String, outcome: String,
                requestID: String? = nil, actorKeyID: String? = nil, details: JSONObject = JSONObject()) {
        self.id = id
        self.timestamp = timestamp
        self.severity = severity
        self.category = category
        self.action = action
        self.outcome = outcome
        self.requestID = requestID
        self.actorKeyID = actorKeyID
        self.details = details
    }

    /// The canonical encoding the chain hashes: one JSON object, fields in a fixed order,
    /// `details` keys sorted (recursively), so that equal records give equal bytes.
    public var canonical: [UInt8] {
        let fields: [(String, JSONValue)] = [
            ("id", .string(id)), ("timestamp", .integer(timestamp)), ("severity", .string(severity.rawValue)),
            ("category", .string(category)), ("action", .string(action)), ("outcome", .string(outcome)),
            ("request_id", requestID.map(JSONValue.string) ?? .null), ("actor_key_id", actorKeyID.map(JSONValue.string) ?? .null),
            ("details", Self.sorted(.object(details))),
        ]
        var object = JSONObject()
        for (key, value) in fields { object[key] = value }
        return JSONWriter.bytes(.object(object))
    }

    static func sorted(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object):
            var out = JSONObject()
            for key in object.keys.sorted() { out[key] = sorted(object[key] ?? .null) }
            return .object(out)
        case .array(let items):
            return .array(items.map(sorted))
        default:
            return value
        }
    }
}

/// The hash chain of one writer, as a state machine without I/O: each record is linked to
/// the one before it by `hash = SHA-256(previous hash ‖ canonical record)`, numbered without
/// gaps. A modified, deleted, inserted or reordered record breaks the chain from there on.
public struct AuditChain: Sendable, Equatable {
    /// The chain's name (one per replica, so that replicas never contend for its head).
    public let name: String
    /// The sequence number the next record gets (the first is 1).
    public private(set) var nextSequence: Int64
    /// The hash of the last record (64 zero digits before the first).
    public private(set) var head: String

    public static let genesis = String(repeating: "0", count: 64)

    public init(name: String, nextSequence: Int64 = 1, head: String = AuditChain.genesis) {
        self.name = name
        self.nextSequence = nextSequence
        self.head = head
    }

    public struct Link: Sendable, Equatable {
        public var sequence: Int64
        public var previousHash: String
        public var hash: String
    }

    /// Links `record` after the head and advances.
    public mutating func link(_ record: AuditRecord) -> Link {
        link(record, canonical: record.canonical)
    }

    /// Links `record`, whose canonical encoding is `canonical`, after the head and advances.
    public mutating func link(_ record: AuditRecord, canonical: [UInt8]) -> Link {
        let hash = Self.hash(previous: head, canonical: canonical)
        let link = Link(sequence: nextSequence, previousHash: head, hash: hash)
        nextSequence += 1
        head = hash
        return link
    }

    public static func hash(previous: String, canonical: [UInt8]) -> String {
        var hasher = SHA256()
        hasher.update(data: Array(previous.utf8))
        hasher.update(data: canonical)
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in hasher.finalize() { out += [digits[Int(byte >> 4)], digits[Int(byte & 15)]] }
        return String(decoding: out, as: UTF8.self)
    }
}
