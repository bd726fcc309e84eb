import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
import Synchronization

/// The embedded default: one SQLite file (or memory), statements serialised through one connection.
///
/// SQLite allows one writer at a time anyway; serialising here keeps a transaction's
/// statements from interleaving with others on the shared connection.
public final class SQLiteStore: SQLStore {
    public let dialect = SQLDialect.sqlite
    private let connection: SQLiteConnection
    private let threadPool: NIOThreadPool
    private let lock = AsyncLock()
    /// The file, or nil in memory (where a second connection would see another database).
    private let path: String?
    /// The connection of `executeMany`, opened on its first use.
    private let batch = Mutex<SQLiteBatchConnection?>(nil)
    private let batchOpening = AsyncLock()

    private init(connection: SQLiteConnection, threadPool: NIOThreadPool, path: String?) {
        self.connection = connection
        self.threadPool = threadPool
        self.path = path
    }

    /// Opens (creating if needed) the database at `path`, or an in-memory one for `nil`.
    public static func open(path: String?, logger: Logger) async throws -> SQLiteStore {
        // A thread of its own: a statement waiting on SQLite's busy handler must not starve
        // another connection's statements of a shared pool's threads.
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(storage: path.map { .file(path: $0) } ?? .memory, threadPool: threadPool,
                                                         logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
        } catch {
            try? await threadPool.shutdownGracefully()
            throw SQLError("cannot open SQLite database \(path ?? ":memory:"): \(error)")
        }
        let store = SQLiteStore(connection: connection, threadPool: threadPool, path: path)
        // The busy timeout first: switching to WAL needs a lock another connection may hold.
        try await store.execute("PRAGMA busy_timeout = 5000")
        try await store.execute("PRAGMA journal_mode = WAL")
        // Every commit reaches the disk before it returns: the audit log's "durable before it acts".
        try await store.execute("PRAGMA synchronous = FULL")
        // Statement journals (a multi-row insert inside a transaction keeps one) in memory, not in a temporary file.
        try await store.execute("PRAGMA temp_store = MEMORY")
        try await store.execute("PRAGMA foreign_keys = ON")
        return store
    }

    public func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        try await lock.withLock { try await self.run(sql, binds) }
    }

    public func transaction<Result: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> Result) async throws -> Result {
        try await lock.withLock {
            _ = try await self.run("BEGIN IMMEDIATE", [])
            do {
                let result = try await body(LockedExecutor(store: self))
                _ = try await self.run("COMMIT", [])
                return result
            } catch {
                _ = try? await self.run("ROLLBACK", [])
                throw error
            }
        }
    }

    /// Many rows through one kept statement in one job on a connection of their own (a file's
    /// store), or in a transaction on this connection (in memory).
    public func executeMany(_ sql: String, _ rows: [[SQLValue]]) async throws {
        guard !rows.isEmpty else { return }
        guard let path else { return try await executeManyInTransaction(sql, rows) }
        let connection: SQLiteBatchConnection
        if let open = batch.withLock({ $0 }) { connection = open } else { connection = try await batchConnection(path) }
        try await connection.executeMany(sql, rows)
        // The rows are freed here, on the caller's thread, not by the job on SQLite's: freeing
        // another thread's allocations cost that thread more than its inserts (seen in `perf`).
        withExtendedLifetime(rows) {}
    }

    private func batchConnection(_ path: String) async throws -> SQLiteBatchConnection {
        try await batchOpening.withLock {
            if let open = batch.withLock({ $0 }) { return open }
            let opened = try await SQLiteBatchConnection.open(path: path)
            batch.withLock { $0 = opened }
            return opened
        }
    }

    /// Closes the database; required before the store is released.
    public func close() async {
        if let batch = batch.withLock({ connection in defer { connection = nil }; return connection }) { await batch.close() }
        try? await connection.close()
        try? await threadPool.shutdownGracefully()
    }

    /// Runs a statement; the caller holds the lock.
    fileprivate func run(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        let collector = RowCollector()
        do {
            try await connection.query(Self.numberedPlaceholders(sql), binds.map(Self.sqliteData)) { row in
                collector.append(row)
            }
        } catch {
            throw SQLError("\(error)")
        }
        return collector.rows
    }

    /// Rewrites `$N` placeholders to SQLite's positional `?N`, leaving string literals and
    /// identifiers alone. Statements are few and repeated, so each is rewritten once and kept
    /// (at most 512 of them).
    static func numberedPlaceholders(_ sql: String) -> String {
        if let known = rewritten.withLock({ $0[sql] }) { return known }
        let output = rewrite(sql)
        rewritten.withLock { cache in
            if cache.count >= 512 { cache.removeAll(keepingCapacity: true) }
            cache[sql] = output
        }
        return output
    }

    private static let rewritten = Mutex<[String: String]>([:])

    static func rewrite(_ sql: String) -> String {
        var output: [UInt8] = []
        output.reserveCapacity(sql.utf8.count)
        var quote: UInt8?
        var previous: UInt8?
        for byte in sql.utf8 {
            if let open = quote {
                if byte == open { quote = nil }
                output.append(byte)
            } else if byte == UInt8(ascii: "'") || byte == UInt8(ascii: "\"") {
                quote = byte
                output.append(byte)
            } else if byte == UInt8(ascii: "$"), previous.map({ !Self.isWordByte($0) }) ?? true {
                output.append(UInt8(ascii: "?"))
            } else {
                output.append(byte)
            }
            previous = byte
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Letters, digits, `_` and any byte of a multi-byte character (which are letters to SQL).
    private static func isWordByte(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || byte == UInt8(ascii: "_") || byte >= 0x80
    }

    static func sqliteData(_ value: SQLValue) -> SQLiteData {
        switch value {
        case .null: return .null
        case .integer(let integer): return .integer(Int(integer))
        case .double(let double): return .float(double)
        case .text(let text): return .text(text)
        case .blob(let bytes): return .blob(ByteBuffer(bytes: bytes))
        }
    }

    static func value(_ data: SQLiteData) -> SQLValue {
        switch data {
        case .null: return .null
        case .integer(let integer): return .integer(Int64(integer))
        case .float(let double): return .double(double)
        case .text(let text): return .text(text)
        case .blob(let buffer): return .blob(Array(buffer.readableBytesView))
        }
    }
}

/// Statements inside a transaction: the transaction already holds the store's lock.
private struct LockedExecutor: SQLExecutor {
    let store: SQLiteStore
    var dialect: SQLDialect { .sqlite }

    func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        try await store.run(sql, binds)
    }
}

/// Gathers rows from SQLiteNIO's per-row callback, which runs on its thread pool one row at a time.
private final class RowCollector: Sendable {
    private let storage = Mutex<[SQLRow]>([])

    func append(_ row: SQLiteRow) {
        let converted = SQLRow(columns: row.columns.map(\.name), values: row.columns.map { SQLiteStore.value($0.data) })
        storage.withLock { $0.append(converted) }
    }

    var rows: [SQLRow] { storage.withLock { $0 } }
}

/// A FIFO lock for async code: at most one holder at a time, waiters resume in order.
final class AsyncLock: Sendable {
    private struct State {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func withLock<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state -> Bool in
                if state.locked {
                    state.waiters.append(continuation)
                    return false
                }
                state.locked = true
                return true
            }
            if acquired { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.locked = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
