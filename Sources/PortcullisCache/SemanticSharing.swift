import Foundation
import Logging
import NIOCore
import PortcullisCore
import PortcullisRedis
import ServiceLifecycle
import Synchronization

/// Shares the semantic cache's questions between replicas through one Redis stream
/// (`portcullis:semantic:v1`, capped near the cache's bound): each remembered question is
/// appended with its partition, its answer's key, its text (for the detail check) and its vector, and every replica reads what
/// the others appended into its own index, from the start of the stream when it starts. The
/// answers themselves are in the exact cache's shared tier. Redis unreachable: questions wait
/// in a bounded outbox and the local index goes on answering.
public final class SemanticSharing: Service, Sendable {
    public static let streamKey = "portcullis:semantic:v1"

    struct Pending: Sendable {
        var vector: [Float]
        var question: String
        var partition: String
        var key: CacheKey
        var subject: String?
    }

    struct State {
        var outbox: [Pending] = []
        /// The id of the last stream entry read.
        var cursor = "0"
    }

    let client: RedisClient
    let cache: SemanticCache
    /// This replica's name in the stream, so that it skips what it appended itself.
    let origin: String
    let interval: Duration
    let logger: Logger
    private let state = Mutex(State())
    static let outboxLimit = 10_000
    static let batch = 500

    public init(client: RedisClient, cache: SemanticCache, interval: Duration = .milliseconds(250), logger: Logger) {
        self.client = client
        self.cache = cache
        self.origin = FastRandom.hex(bytes: 8)
        self.interval = interval
        self.logger = logger
    }

    /// Queues a question the local cache just remembered, for the next exchange with Redis.
    public func publish(_ vector: [Float], question: String, partition: String, key: CacheKey, subject: String? = nil) {
        state.withLock { state in
            if state.outbox.count >= Self.outboxLimit { state.outbox.removeFirst() }
            state.outbox.append(Pending(vector: vector, question: question, partition: partition, key: key, subject: subject))
        }
    }

    /// Removes the data subject's questions (`CacheKey.subjectTag`) from the stream, so that no
    /// replica reads them again, and from what waits to be sent; returns how many entries of the
    /// stream went. Throws when Redis cannot be read or written.
    public func erase(subject: String) async throws -> Int {
        state.withLock { $0.outbox.removeAll { $0.subject == subject } }
        var start = "-", removed = 0
        // Pages over the whole stream (capped near the cache's bound).
        while true {
            let reply = try await client.command(["XRANGE", .string(Self.streamKey), .string(start), "+", "COUNT", .int(Int64(Self.batch))])
            if case .error(let message) = reply { throw SemanticSharingError(message: message) }
            let page = Self.items(of: reply)
            let ids = page.filter { $0.subject == subject }.map(\.id)
            if !ids.isEmpty {
                let answer = try await client.command([.string("XDEL"), .string(Self.streamKey)] + ids.map { RESPArgument.string($0) })
                if case .error(let message) = answer { throw SemanticSharingError(message: message) }
                removed += ids.count
            }
            guard page.count == Self.batch, let last = page.last else { return removed }
            start = "(" + last.id
        }
    }

    public func run() async throws {
        await Periodic.run(every: interval, startImmediately: true, { [self] in await exchange() }, final: { [self] in await send() })
    }

    /// Sends what is queued, then reads what the other replicas appended.
    func exchange() async {
        await send()
        await receive()
    }

    private func send() async {
        let queued = state.withLock { state -> [Pending] in
            defer { state.outbox.removeAll() }
            return state.outbox
        }
        guard !queued.isEmpty else { return }
        let cap = Int64(max(1, cache.maximumEntries))
        let commands: [[RESPArgument]] = queued.map { item in
            var bytes = ByteBuffer()
            bytes.reserveCapacity(item.vector.count * 4)
            for value in item.vector { bytes.writeInteger(value.bitPattern, endianness: .little) }
            var command: [RESPArgument] = ["XADD", .string(Self.streamKey), "MAXLEN", "~", .int(cap), "*", "origin", .string(origin),
                                           "partition", .string(item.partition), "key", .string(item.key.digest), "question", .string(item.question),
                                           "vector", .bytes(bytes)]
            if let subject = item.subject { command += ["subject", .string(subject)] }
            return command
        }
        do {
            let replies = try await client.pipeline(commands)
            if let failure = replies.first(where: { if case .error = $0 { true } else { false } }) {
                logger.warning("semantic cache: Redis refused a shared question", metadata: ["reply": "\(failure)"])
            }
        } catch {
            // Unreachable: keep them for the next round (the newest, within the outbox's bound).
            state.withLock { state in
                state.outbox = Array((queued + state.outbox).suffix(Self.outboxLimit))
            }
            logger.debug("semantic cache: Redis unreachable, questions kept to share later", metadata: ["error": "\(error)"])
        }
    }

    private func receive() async {
        // Pages until the stream is read to its end (a replica starting reads the backlog at once).
        for _ in 0..<100 {
            let cursor = state.withLock { $0.cursor }
            let reply: RESPValue
            do {
                reply = try await client.command(["XREAD", "COUNT", .int(Int64(Self.batch)), "STREAMS", .string(Self.streamKey), .string(cursor)])
            } catch {
                return
            }
            let entries = Self.entries(of: reply)
            guard let last = entries.last else { return }
            for entry in entries where entry.origin != origin {
                cache.remember(entry.vector, question: entry.question, partition: entry.partition, key: entry.key, subject: entry.subject)
            }
            state.withLock { $0.cursor = last.id }
            if entries.count < Self.batch { return }
        }
    }

    struct Entry {
        var id: String
        var origin: String
        var partition: String
        var key: CacheKey
        var question: String
        var vector: [Float]
        var subject: String?
    }

    /// The entries of an XREAD reply (`[[stream, [[id, [field, value, …]], …]]]`); malformed ones are skipped.
    static func entries(of reply: RESPValue) -> [Entry] {
        guard case .array(let streams?) = reply, case .array(let stream?)? = streams.first, stream.count == 2 else { return [] }
        return items(of: stream[1]).compactMap { item -> Entry? in
            let values = item.fields
            guard let origin = values["origin"]?.string, let partition = values["partition"]?.string, let key = values["key"]?.string,
                  let question = values["question"]?.string,
                  case .bulkString(var bytes?)? = values["vector"], bytes.readableBytes % 4 == 0, bytes.readableBytes > 0 else { return nil }
            var vector: [Float] = []
            vector.reserveCapacity(bytes.readableBytes / 4)
            while let bits = bytes.readInteger(endianness: .little, as: UInt32.self) { vector.append(Float(bitPattern: bits)) }
            guard vector.allSatisfy(\.isFinite) else { return nil }
            return Entry(id: item.id, origin: origin, partition: partition, key: CacheKey(digest: key), question: question, vector: vector,
                         subject: item.subject)
        }
    }

    /// One stream entry as Redis lists it: its id and its fields.
    struct Item {
        var id: String
        var fields: [String: RESPValue]
        var subject: String? { fields["subject"]?.string }
    }

    /// The entries of a list of them (`[[id, [field, value, …]], …]`, as XRANGE answers and each stream of XREAD holds).
    static func items(of reply: RESPValue) -> [Item] {
        guard case .array(let items?) = reply else { return [] }
        return items.compactMap { item -> Item? in
            guard case .array(let parts?) = item, parts.count == 2, let id = parts[0].string, case .array(let fields?) = parts[1] else { return nil }
            var values: [String: RESPValue] = [:]
            var index = 0
            while index + 1 < fields.count {
                if let name = fields[index].string { values[name] = fields[index + 1] }
                index += 2
            }
            return Item(id: id, fields: values)
        }
    }
}

/// Redis refused a command of the semantic cache's stream.
struct SemanticSharingError: Error, CustomStringConvertible {
    let message: String
    var description: String { "Redis: \(message)" }
}
