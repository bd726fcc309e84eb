import Crypto
import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// How a sink's HTTP requests are sent (the gateway's upstream client, injected).
public protocol AuditSinkTransport: Sendable {
    /// POSTs `body` to `url`; returns the answer's status and body, whatever the status.
    /// Throws only when no answer came (connection refused, timeout).
    func post(url: String, headers: [(String, String)], body: [UInt8]) async throws -> (status: Int, body: [UInt8])
}

/// How syslog frames are written (a kept TCP or TLS connection per URL, injected).
public protocol AuditSyslogTransport: Sendable {
    func send(url: String, caFile: String?, bytes: [UInt8]) async throws
}

/// One continuous export of this replica's chain to a SIEM.
public struct AuditSinkConfiguration: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// `POST url` with a JSON array of records.
        case webhook
        /// Splunk HTTP Event Collector: `POST url/services/collector/event`, `Authorization: Splunk <token>`.
        case splunkHEC = "splunk_hec"
        /// Elasticsearch `POST url/_bulk`, one `create` per record (its id the record's, so a resend is not a duplicate).
        case elasticsearch
        /// Syslog (RFC 5424) over TCP (`tcp://host:port`, RFC 6587 octet counting) or TLS (`tls://host:port`, RFC 5425).
        case syslog
    }

    /// Names the sink's cursor; unique among sinks.
    public var name: String
    public var kind: Kind
    public var url: String
    /// Bearer token (webhook), HEC token (Splunk) or API key (Elasticsearch `ApiKey`).
    public var token: String?
    /// Elasticsearch index. Default `portcullis-audit`.
    public var index = "portcullis-audit"
    /// The records' shape. Default: ECS for Elasticsearch, JSON lines otherwise.
    public var format: AuditFormat
    /// Most records per request. Default 200.
    public var batchSize = 200
    /// Syslog over TLS: the PEM certificates to trust instead of the system's roots.
    public var caFile: String?
    /// When set, identifiers (key ids, user ids, team ids, addresses) leave for this sink only
    /// as `ps_` + HMAC-SHA256 under this key (its first 16 bytes, hex): stable per sink, so a
    /// SIEM still correlates, but not reversible without the key.
    public var pseudonymKey: String?

    public init(name: String, kind: Kind, url: String, token: String? = nil, format: AuditFormat? = nil) {
        self.name = name
        self.kind = kind
        self.url = url
        self.token = token
        self.format = format ?? (kind == .elasticsearch ? .ecs : .jsonl)
    }
}

/// Sends this replica's chain to one sink, at least once and in order, from a cursor kept in
/// the database (`audit_sink_cursors`), so that a restart resumes where delivery stopped.
///
/// A sink that is down or answers 429/5xx holds only its own export: the batch is tried again
/// with a growing pause (up to 30 s), while requests go on; when it answers again the backlog
/// follows. A 4xx refuses the records, not the sink: the batch is split until the refused
/// record is alone, which is logged, counted and passed over so that the others still go.
public final class AuditSinkExporter: Service, Sendable {
    public let configuration: AuditSinkConfiguration
    let chain: String
    let store: any SQLStore
    let reader: AuditReader
    let transport: any AuditSinkTransport
    let syslog: (any AuditSyslogTransport)?
    let logger: Logger
    let idlePause: Duration
    private let counters = Mutex((delivered: 0, rejected: 0, failures: 0))

    public init(configuration: AuditSinkConfiguration, chain: String, store: any SQLStore, transport: any AuditSinkTransport,
                syslog: (any AuditSyslogTransport)? = nil, idlePause: Duration = .milliseconds(500), keys: SubjectKeys? = nil, logger: Logger) {
        self.syslog = syslog
        self.configuration = configuration
        self.chain = chain
        self.store = store
        self.reader = AuditReader(store: store, keys: keys)
        self.transport = transport
        self.idlePause = idlePause
        self.logger = logger
    }

    public static let migrations: [Migration] = [
        Migration(version: 304, name: "audit sink cursors") { _ in
            ["CREATE TABLE audit_sink_cursors (sink TEXT NOT NULL, chain TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (sink, chain))"]
        },
    ]

    /// Records delivered, records refused (4xx) and failed attempts so far.
    public var counts: (delivered: Int, rejected: Int, failures: Int) { counters.withLock { $0 } }

    /// The last sequence number delivered (0 before the first).
    public func cursor() async throws -> Int64 {
        try await store.query("SELECT seq FROM audit_sink_cursors WHERE sink = $1 AND chain = $2", [.text(configuration.name), .text(chain)])
            .first?["seq"].integer ?? 0
    }

    func save(cursor: Int64) async throws {
        try await store.execute("""
            INSERT INTO audit_sink_cursors (sink, chain, seq) VALUES ($1, $2, $3)
            ON CONFLICT (sink, chain) DO UPDATE SET seq = excluded.seq
            """, [.text(configuration.name), .text(chain), .integer(cursor)])
    }

    /// What one attempt at a batch came to.
    enum Delivery: Equatable {
        case delivered
        /// The sink refused these records (by index in the batch); the rest were taken.
        case refused([Int])
        /// Try again later.
        case retry(String)
    }

    /// Sends the next batch after the cursor; returns how many records it moved the cursor past,
    /// or nil when the sink must be tried again later.
    public func exportNext() async throws -> Int? {
        let after = try await cursor()
        let batch = try await reader.chain(chain, after: after, limit: configuration.batchSize)
        guard let last = batch.last?.sequence else { return 0 }
        let pseudonyms = configuration.pseudonymKey.map { Pseudonymizer(key: $0) }
        switch await deliver(batch.map { pseudonyms?.apply(to: $0.record) ?? $0.record }) {
        case .retry(let reason):
            counters.withLock { $0.failures += 1 }
            logger.warning("audit sink unavailable; will retry", metadata: ["sink": "\(configuration.name)", "reason": "\(reason)"])
            return nil
        case .refused(let indices):
            let refused = try await refuse(batch, indices)
            try await save(cursor: last)
            counters.withLock { $0.delivered += batch.count - refused; $0.rejected += refused }
            return batch.count
        case .delivered:
            break
        }
        try await save(cursor: last)
        counters.withLock { $0.delivered += batch.count }
        return batch.count
    }

    /// Splits a refused batch until each refused record is alone: those are passed over, the
    /// others sent. Returns how many were passed over.
    private func refuse(_ batch: [(sequence: Int64, record: JSONObject)], _ indices: [Int]) async throws -> Int {
        var refused = Set(indices)
        if indices.isEmpty, batch.count > 1 {
            // The whole batch was refused: find the records it was refused for, half by half.
            var pending = [batch[...]]
            while let part = pending.popLast() {
                switch await deliver(part.map(\.record)) {
                case .delivered: continue
                case .retry(let reason): throw AuditSinkRetry(reason: reason)
                case .refused(let inner) where part.count == 1 || !inner.isEmpty:
                    let base = part.startIndex
                    for index in (inner.isEmpty ? Array(0..<part.count) : inner) { refused.insert(base + index) }
                case .refused:
                    let middle = part.startIndex + part.count / 2
                    pending.append(part[middle...])
                    pending.append(part[..<middle])
                }
            }
        } else if indices.isEmpty {
            refused = [0]
        }
        for index in refused.sorted() {
            logger.error("audit sink refused a record; passed over", metadata: ["sink": "\(configuration.name)", "seq": "\(batch[index].sequence)"])
        }
        return refused.count
    }

    /// One request with `records`, and what the answer means.
    func deliver(_ records: [JSONObject]) async -> Delivery {
        if configuration.kind == .syslog {
            guard let syslog else { return .retry("no syslog transport") }
            var frames: [UInt8] = []
            for record in records { frames += AuditSyslog.frame(AuditSyslog.message(record, format: configuration.format, hostname: chain)) }
            do {
                try await syslog.send(url: configuration.url, caFile: configuration.caFile, bytes: frames)
                return .delivered
            } catch {
                return .retry("\(error)")
            }
        }
        let (url, headers, body) = request(records)
        let answer: (status: Int, body: [UInt8])
        do {
            answer = try await transport.post(url: url, headers: headers, body: body)
        } catch {
            return .retry("\(error)")
        }
        switch answer.status {
        case 200..<300:
            guard configuration.kind == .elasticsearch else { return .delivered }
            return Self.bulkOutcome(answer.body)
        case 408, 429, 500...:
            return .retry("status \(answer.status)")
        default:
            return .refused([])
        }
    }

    /// The request for `records` in the sink's protocol.
    func request(_ records: [JSONObject]) -> (url: String, headers: [(String, String)], body: [UInt8]) {
        let format = configuration.format
        var base = configuration.url
        while base.hasSuffix("/") { base.removeLast() }
        switch configuration.kind {
        case .webhook:
            var headers = [("content-type", "application/json")]
            if let token = configuration.token { headers.append(("authorization", "Bearer \(token)")) }
            return (base, headers, JSONWriter.bytes(.array(records.map(format.object))))
        case .splunkHEC:
            var body: [UInt8] = []
            for record in records {
                let seconds = Double(record["timestamp"]?.integerValue ?? 0) / 1_000_000
                JSONWriter.write(["time": .double(seconds), "source": "portcullis", "sourcetype": "portcullis:audit", "event": format.object(record)],
                                 into: &body)
                body.append(0x0A)
            }
            return (base + "/services/collector/event", [("authorization", "Splunk \(configuration.token ?? "")"), ("content-type", "application/json")], body)
        case .elasticsearch:
            var body: [UInt8] = []
            for record in records {
                JSONWriter.write(["create": ["_index": .string(configuration.index), "_id": .string(record["id"]?.stringValue ?? "")]], into: &body)
                body.append(0x0A)
                JSONWriter.write(format.object(record), into: &body)
                body.append(0x0A)
            }
            var headers = [("content-type", "application/x-ndjson")]
            if let token = configuration.token { headers.append(("authorization", "ApiKey \(token)")) }
            return (base + "/_bulk", headers, body)
        case .syslog:
            return (base, [], [])
        }
    }

    /// An Elasticsearch bulk answer: items already there (409) count as delivered; 429/5xx items
    /// retry the batch (the ids make the resend harmless); other refused items are passed over.
    static func bulkOutcome(_ body: [UInt8]) -> Delivery {
        guard let answer = (try? JSONParser.parse(body))?.objectValue else { return .retry("unreadable bulk answer") }
        guard answer["errors"]?.boolValue == true else { return .delivered }
        var refused: [Int] = []
        for (index, item) in (answer["items"]?.arrayValue ?? []).enumerated() {
            let result = item.objectValue?.entries.first?.value.objectValue
            let status = result?["status"]?.integerValue ?? 500
            if status == 409 || (200..<300).contains(status) { continue }
            if status == 429 || status >= 500 { return .retry("bulk item status \(status)") }
            refused.append(index)
        }
        return refused.isEmpty ? .delivered : .refused(refused)
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            var pause: Duration = .seconds(1)
            while !Task.isCancelled {
                do {
                    if let moved = try await exportNext() {
                        pause = .seconds(1)
                        if moved == 0 { try? await Task.sleep(for: idlePause) }
                        continue
                    }
                } catch let retry as AuditSinkRetry {
                    logger.warning("audit sink unavailable; will retry", metadata: ["sink": "\(configuration.name)", "reason": "\(retry.reason)"])
                } catch {
                    logger.warning("audit sink export failed", metadata: ["sink": "\(configuration.name)", "error": "\(error)"])
                }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(30))
            }
        }
    }
}

struct AuditSinkRetry: Error {
    var reason: String
}

/// Audit records as syslog messages (RFC 5424): facility 13 (log audit), the record's severity
/// as the syslog severity, the action as MSGID, the filter fields as structured data, and the
/// record (in the sink's format) as the message.
public enum AuditSyslog {
    public static func message(_ record: JSONObject, format: AuditFormat, hostname: String) -> String {
        let severity: Int = switch record["severity"]?.stringValue ?? "INFO" {
        case "CRITICAL": 2
        case "HIGH": 3
        case "MEDIUM": 4
        case "LOW": 5
        default: 6
        }
        let time = AuditFormat.rfc3339(micros: record["timestamp"]?.integerValue ?? 0)
        var data = "[portcullis@32473"
        for field in ["id", "category", "outcome", "request_id", "actor_key_id"] {
            guard let value = record[field]?.stringValue else { continue }
            data += " \(field)=\"\(parameter(value))\""
        }
        data += "]"
        let action = header(record["action"]?.stringValue ?? "-", limit: 32)
        return "<\(13 * 8 + severity)>1 \(time) \(header(hostname, limit: 255)) portcullis - \(action) \(data) \(format.line(record))"
    }

    /// RFC 6587 octet counting: the message's length in bytes, a space, the message.
    public static func frame(_ message: String) -> [UInt8] {
        let bytes = Array(message.utf8)
        return Array("\(bytes.count) ".utf8) + bytes
    }

    /// A header field: printable ASCII without spaces, at most `limit` characters, `-` when empty.
    static func header(_ text: String, limit: Int) -> String {
        let kept = String(text.unicodeScalars.filter { $0.value > 32 && $0.value < 127 }.prefix(limit).map(Character.init))
        return kept.isEmpty ? "-" : kept
    }

    /// A structured-data value escapes `"`, `\\` and `]`.
    static func parameter(_ text: String) -> String {
        var out = ""
        for character in text {
            if character == "\"" || character == "\\" || character == "]" { out.append("\\") }
            out.append(character)
        }
        return out
    }
}

/// Replaces a record's identifiers with keyed pseudonyms (data minimisation per sink): the
/// actor's key, user and team ids, the refused key id, the source address and `actor_key_id`.
public struct Pseudonymizer: Sendable {
    let key: SymmetricKey

    public init(key: String) {
        self.key = SymmetricKey(data: Array(key.utf8))
    }

    public func pseudonym(_ value: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = Array("ps_".utf8)
        for byte in HMAC<SHA256>.authenticationCode(for: Array(value.utf8), using: key).prefix(16) {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func apply(to record: JSONObject) -> JSONObject {
        var record = record
        func replace(_ value: JSONValue?) -> JSONValue? { value?.stringValue.map { .string(pseudonym($0)) } ?? value }
        if record["actor_key_id"]?.stringValue != nil { record["actor_key_id"] = replace(record["actor_key_id"]) }
        guard var details = record["details"]?.objectValue else { return record }
        for member in ["source_address", "presented_key_id"] where details[member]?.stringValue != nil { details[member] = replace(details[member]) }
        if var actor = details["actor"]?.objectValue {
            for member in ["key_id", "user_id", "team_id"] where actor[member]?.stringValue != nil { actor[member] = replace(actor[member]) }
            details["actor"] = .object(actor)
        } else if details["actor"]?.stringValue != nil {
            details["actor"] = replace(details["actor"])   // an admin action's actor
        }
        record["details"] = .object(details)
        return record
    }
}
