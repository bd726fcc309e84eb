import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// Where signed checkpoints are published outside the database, so that a rewrite of the
/// database cannot rewrite them too.
public protocol CheckpointPublisher: Sendable {
    /// A short name for logs (`directory /var/…`, `s3 bucket/prefix`).
    var name: String { get }
    func publish(chain: String, size: Int64, note: String) async throws
}

/// Publishes into a directory: `<chain>/<size>.checkpoint` for each, and `<chain>/latest`
/// replaced atomically with the newest. The verifier reads `latest` back.
public struct DirectoryCheckpointPublisher: CheckpointPublisher {
    public let directory: String
    public var name: String { "directory \(directory)" }

    public init(directory: String) {
        self.directory = directory
    }

    public func publish(chain: String, size: Int64, note: String) async throws {
        let folder = URL(fileURLWithPath: directory).appendingPathComponent(Self.safe(chain))
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let data = Data(note.utf8)
        try data.write(to: folder.appendingPathComponent("\(size).checkpoint"), options: .atomic)
        try data.write(to: folder.appendingPathComponent("latest"), options: .atomic)
    }

    /// The newest published checkpoint note of every chain.
    public func latest() -> [String: String] {
        var notes: [String: String] = [:]
        let root = URL(fileURLWithPath: directory)
        for chain in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            if let note = try? String(contentsOf: root.appendingPathComponent(chain).appendingPathComponent("latest"), encoding: .utf8) {
                notes[chain] = note
            }
        }
        return notes
    }

    /// A chain name as one path component.
    static func safe(_ chain: String) -> String {
        String(chain.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
    }
}

/// Signs this replica's chain every `everyRecords` records or `everySeconds` seconds (when it
/// grew), stores the note in `audit_checkpoints` and hands it to each publisher. A publisher
/// that fails is tried again with the next checkpoint; the others are not held up.
public final class CheckpointService: Service, Sendable {
    public let chain: String
    public let origin: String
    let key: AuditSigningKey
    let store: any SQLStore
    let publishers: [any CheckpointPublisher]
    let everyRecords: Int64
    let everySeconds: Double
    let logger: Logger

    public init(store: any SQLStore, chain: String, origin: String, key: AuditSigningKey, publishers: [any CheckpointPublisher],
                everyRecords: Int64, everySeconds: Double, logger: Logger) {
        self.store = store
        self.chain = chain
        self.origin = origin
        self.key = key
        self.publishers = publishers
        self.everyRecords = max(1, everyRecords)
        self.everySeconds = max(0.1, everySeconds)
        self.logger = logger
    }

    public static let migrations: [Migration] = [
        Migration(version: 303, name: "audit checkpoints") { _ in
            ["CREATE TABLE audit_checkpoints (chain TEXT NOT NULL, size BIGINT NOT NULL, head TEXT NOT NULL, note TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (chain, size))"]
        },
    ]

    /// Signs and publishes a checkpoint of the chain's head when it grew by `everyRecords` since
    /// the last one (`lastSize`, default the last stored), or grew at all and `everySeconds`
    /// passed since `lastTime`, or grew at all and `force`. Returns the checkpoint made, if any.
    @discardableResult
    public func checkpoint(force: Bool = false, lastSize: Int64? = nil, lastTime: Date = Date()) async throws -> AuditCheckpoint? {
        let heads = try await store.query("SELECT seq, hash FROM audit_logs WHERE chain = $1 ORDER BY seq DESC LIMIT 1", [.text(chain)])
        guard let row = heads.first, let size = row["seq"].integer, let head = row["hash"].text else { return nil }
        let previous: Int64
        if let lastSize {
            previous = lastSize
        } else {
            let rows = try await store.query("SELECT MAX(size) AS size FROM audit_checkpoints WHERE chain = $1", [.text(chain)])
            previous = rows.first?["size"].integer ?? 0
        }
        let due = size - previous >= everyRecords || (size > previous && Date().timeIntervalSince(lastTime) >= everySeconds)
        guard size > previous && (due || force) else { return nil }
        let checkpoint = AuditCheckpoint(origin: "\(origin)/\(chain)", size: size, head: head)
        let note = try key.sign(checkpoint.body)
        try await store.execute("INSERT INTO audit_checkpoints (chain, size, head, note, created_at) VALUES ($1, $2, $3, $4, $5)",
                                [.text(chain), .integer(size), .text(head), .text(note), .integer(Int64(Date().timeIntervalSince1970))])
        for publisher in publishers {
            do {
                try await publisher.publish(chain: chain, size: size, note: note)
            } catch {
                logger.error("audit checkpoint not published", metadata: ["publisher": "\(publisher.name)", "size": "\(size)", "error": "\(error)"])
            }
        }
        return checkpoint
    }

    public func run() async throws {
        let state = CheckpointProgress()
        await Periodic.run(every: .seconds(min(1, everySeconds)), { [self] in
            do {
                if let made = try await checkpoint(lastSize: state.size, lastTime: state.time) { state.advance(to: made.size) }
                else if state.size == nil { state.size = try await lastStoredSize() }
            } catch {
                logger.warning("audit checkpoint failed", metadata: ["error": "\(error)"])
            }
        }, final: { [self] in
            // A last checkpoint at shutdown: the tail written since the previous one is covered too.
            do { try await checkpoint(force: true, lastSize: state.size) } catch {
                logger.warning("final audit checkpoint failed", metadata: ["error": "\(error)"])
            }
        })
    }

    func lastStoredSize() async throws -> Int64 {
        try await store.query("SELECT MAX(size) AS size FROM audit_checkpoints WHERE chain = $1", [.text(chain)]).first?["size"].integer ?? 0
    }
}

/// The service's memory of its last checkpoint, kept between ticks.
final class CheckpointProgress: Sendable {
    private let state = Mutex<(size: Int64?, time: Date)>((nil, Date()))

    var size: Int64? {
        get { state.withLock { $0.size } }
        set { state.withLock { $0.size = newValue } }
    }

    var time: Date { state.withLock { $0.time } }

    func advance(to size: Int64) {
        state.withLock { $0 = (size, Date()) }
    }
}
