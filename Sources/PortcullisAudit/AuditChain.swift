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

    /// - Parameter id: default a time-ordered UUID (version 7) of `timestamp`.
    public init(id: String? = nil, timestamp: Int64, severity: Severity, category: String, action: String, outcome: String,
                requestID: String? = nil, actorKeyID: String? = nil, details: JSONObject = JSONObject()) {
        self.id = id ?? FastRandom.timeOrderedUUIDString(unixMilliseconds: UInt64(max(0, timestamp / 1000)))
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
        var output: [UInt8] = []
        output.reserveCapacity(768)
        func field(_ name: String, first: Bool = false) {
            if !first { output.append(UInt8(ascii: ",")) }
            JSONWriter.writeString(name, into: &output)
            output.append(UInt8(ascii: ":"))
        }
        func text(_ value: String?) {
            if let value { JSONWriter.writeString(value, into: &output) } else { output.append(contentsOf: Array("null".utf8)) }
        }
        output.append(UInt8(ascii: "{"))
        field("id", first: true); text(id)
        field("timestamp"); JSONWriter.writeInteger(timestamp, into: &output)
        field("severity"); text(severity.rawValue)
        field("category"); text(category)
        field("action"); text(action)
        field("outcome"); text(outcome)
        field("request_id"); text(requestID)
        field("actor_key_id"); text(actorKeyID)
        field("details"); JSONWriter.writeSortingKeys(.object(details), into: &output)
        output.append(UInt8(ascii: "}"))
        return output
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
