import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisStorage
import Synchronization
import Testing

/// A real store whose next transaction commits and then reports the connection lost, as a
/// primary that dies between its commit and the answer does.
final class AnswerLosingStore: SQLStore {
    let store: any SQLStore
    private let losesNextAnswer = Mutex(false)
    var dialect: SQLDialect { store.dialect }

    init(_ store: any SQLStore) { self.store = store }

    func loseNextAnswer() { losesNextAnswer.withLock { $0 = true } }

    func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] { try await store.query(sql, binds) }

    func transaction<Result: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> Result) async throws -> Result {
        let result = try await store.transaction(body)
        if losesNextAnswer.withLock({ lost in defer { lost = false }; return lost }) {
            throw SQLError("the connection closed before the commit's answer", isUnavailable: true)
        }
        return result
    }

    func close() async { await store.close() }
}

@Suite("Usage batches: written once, whatever the connection does", .serialized)
struct UsageBatchTests {
    static func requests(_ directory: Directory, key: String) async throws -> Int64? {
        try await directory.usage(groupBy: ["key_id"], filters: ["key_id": key], fromDay: nil, toDay: nil, limit: 10, offset: 0)
            .first?.objectValue?["requests"]?.integerValue
    }

    @Test("a flush whose commit's answer was lost is retried as the same batch: counted once; rows recorded meanwhile go in the next one",
          arguments: [Engine.sqlite, .postgres])
    func retriedBatchCountsOnce(engine: Engine) async throws {
        try await withStores(engine) { stores in
            let inner = stores[0]
            try await MigrationRunner.migrate(inner, APIKeyStore.migrations + Directory.migrations)
            let store = AnswerLosingStore(inner)
            let directory = Directory(store: store)
            let health = DatabaseHealth()
            let recorder = UsageRecorder(directory: directory, keys: try APIKeyStore(store: store, pepper: Array(repeating: 7, count: 32)),
                                         health: health, interval: 60, logger: testLogger)
            for _ in 0..<5 { recorder.record(keyID: "k1", userID: nil, teamID: nil, model: "m", promptTokens: 3, completionTokens: 4, costMicros: 10) }
            store.loseNextAnswer()
            await recorder.flush()
            #expect(recorder.failedFlushCount == 1)
            #expect(try await Self.requests(directory, key: "k1") == 5, "the commit went through")
            // Meanwhile two more requests; the database answers again.
            for _ in 0..<2 { recorder.record(keyID: "k1", userID: nil, teamID: nil, model: "m", promptTokens: 3, completionTokens: 4, costMicros: 10) }
            health.recordSuccess()
            await recorder.flush()   // the lost batch again: already written, adds nothing
            await recorder.flush()   // the two
            #expect(try await Self.requests(directory, key: "k1") == 7)
            #expect(recorder.pendingRows == 0)
        }
    }
}
