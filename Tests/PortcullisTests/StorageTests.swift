import Foundation
import Logging
import PortcullisStorage
import Testing

let exampleMigrations: [Migration] = [
    Migration(version: 1, name: "widgets") { dialect in
        ["CREATE TABLE widgets (id BIGINT PRIMARY KEY, name TEXT NOT NULL, price DOUBLE PRECISION, data \(dialect == .postgres ? "BYTEA" : "BLOB"))"]
    },
    Migration(version: 2, name: "widget index") { _ in ["CREATE INDEX widgets_name ON widgets (name)"] },
]

@Suite("SQL storage on SQLite and PostgreSQL", .serialized)
struct StorageTests {
    @Test("migrations apply once, in order, and are recorded", arguments: Engine.allCases)
    func migrations(engine: Engine) async throws {
        try await withStores(engine) { stores in
            let store = stores[0]
            let first = try await MigrationRunner.migrate(store, exampleMigrations)
            let again = try await MigrationRunner.migrate(store, exampleMigrations)
            let more = exampleMigrations + [Migration(version: 3, name: "colour") { _ in ["ALTER TABLE widgets ADD COLUMN colour TEXT"] }]
            let third = try await MigrationRunner.migrate(store, more)
            let recorded = try await MigrationRunner.appliedVersions(store)
            #expect(first == [1, 2])
            #expect(again == [])
            #expect(third == [3])
            #expect(recorded == [1, 2, 3])
        }
    }

    @Test("many rows through one statement commit together, every kind of value intact, or none when one row fails", arguments: Engine.allCases)
    func executeMany(engine: Engine) async throws {
        try await withStores(engine) { stores in
            let store = stores[0]
            try await MigrationRunner.migrate(store, exampleMigrations)
            let insert = "INSERT INTO widgets (id, name, price, data) VALUES ($1, $2, $3, $4)"
            var rows: [[SQLValue]] = (1...300).map { [.integer(Int64($0)), .text("widget \($0) «ключ»"), .double(Double($0) / 4), .blob([0, UInt8($0 % 256), 255])] }
            rows.append([.integer(301), .text(""), .null, .null])
            try await store.executeMany(insert, rows)
            // A second batch reuses the kept statement.
            try await store.executeMany(insert, [[.integer(302), .text("again"), .double(-1.5), .blob([])]])
            let read = try await store.query("SELECT id, name, price, data FROM widgets ORDER BY id", [])
            #expect(read.count == 302)
            #expect(read[6]["name"].text == "widget 7 «ключ»" && read[6]["price"].double == 1.75 && read[6]["data"].blob == [0, 7, 255])
            #expect(read[300]["name"].text == "" && read[300]["price"].isNull && read[300]["data"].isNull, "empty text stays text, not NULL")
            #expect(read[301]["price"].double == -1.5)
            // A duplicate key in the middle of a batch: nothing of that batch is kept, and the store goes on.
            await #expect(throws: SQLError.self) {
                try await store.executeMany(insert, [[.integer(400), .text("new"), .null, .null], [.integer(7), .text("duplicate"), .null, .null]])
            }
            #expect(try await store.query("SELECT COUNT(*) AS n FROM widgets", [])[0]["n"].integer == 302)
            try await store.executeMany(insert, [[.integer(400), .text("new"), .null, .null]])
            #expect(try await store.query("SELECT name FROM widgets WHERE id = 400", [])[0]["name"].text == "new")
        }
    }

    @Test("replicas that migrate at the same moment apply each change once", arguments: Engine.allCases)
    func concurrentMigrations(engine: Engine) async throws {
        try await withStores(engine, count: 4) { stores in
            let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
                for store in stores { group.addTask { try await MigrationRunner.migrate(store, exampleMigrations) } }
                return try await group.reduce(into: [Int]()) { $0 += $1 }
            }
            #expect(applied.sorted() == [1, 2])
        }
    }

    @Test("values round-trip through binds, hostile text included", arguments: Engine.allCases)
    func roundTrip(engine: Engine) async throws {
        try await withStores(engine) { stores in
            let store = stores[0]
            try await MigrationRunner.migrate(store, exampleMigrations)
            let hostile = "x'); DROP TABLE widgets; -- é 😀"
            try await store.execute("INSERT INTO widgets (id, name, price, data) VALUES ($1, $2, $3, $4)",
                                    [.integer(7), .text(hostile), .double(2.5), .blob([0, 1, 255])])
            try await store.execute("INSERT INTO widgets (id, name, price, data) VALUES ($1, $2, $3, $4)", [.integer(8), .text("plain"), .null, .null])
            let rows = try await store.query("SELECT id, name, price, data FROM widgets WHERE id >= $1 ORDER BY id", [.integer(7)])
            #expect(rows.count == 2)
            #expect(rows[0]["id"] == .integer(7))
            #expect(rows[0]["name"] == .text(hostile))
            #expect(rows[0]["price"] == .double(2.5))
            #expect(rows[0]["data"] == .blob([0, 1, 255]))
            #expect(rows[1]["price"].isNull)
            #expect(rows[1]["data"].isNull)
            let reversed = try await store.query("SELECT name FROM widgets WHERE id = $2 OR name = $1", [.text("nothing"), .integer(8)])
            #expect(reversed.map { $0["name"] } == [.text("plain")])
        }
    }

    @Test("a transaction commits together or rolls back together", arguments: Engine.allCases)
    func transactions(engine: Engine) async throws {
        struct Abort: Error {}
        try await withStores(engine) { stores in
            let store = stores[0]
            try await MigrationRunner.migrate(store, exampleMigrations)
            try await store.transaction { transaction in
                try await transaction.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(1), .text("a")])
                try await transaction.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(2), .text("b")])
            }
            await #expect(throws: Abort.self) {
                try await store.transaction { transaction in
                    try await transaction.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(3), .text("c")])
                    throw Abort()
                }
            }
            await #expect(throws: SQLError.self) {
                try await store.transaction { transaction in
                    try await transaction.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(4), .text("d")])
                    try await transaction.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(1), .text("duplicate")])
                }
            }
            let ids = try await store.query("SELECT id FROM widgets ORDER BY id", []).map { $0["id"] }
            #expect(ids == [.integer(1), .integer(2)])
        }
    }

    @Test("concurrent writers each land exactly once", arguments: Engine.allCases)
    func concurrentWriters(engine: Engine) async throws {
        try await withStores(engine) { stores in
            let store = stores[0]
            try await MigrationRunner.migrate(store, exampleMigrations)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for id in 0..<100 {
                    group.addTask {
                        try await store.transaction { transaction in
                            try await transaction.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(Int64(id)), .text("w\(id)")])
                        }
                    }
                }
                try await group.waitForAll()
            }
            let count = try await store.query("SELECT COUNT(*) AS n FROM widgets", [])
            #expect(count.first?["n"].integer == 100)
        }
    }

    @Test("SQLite keeps its data in the file across reopening")
    func sqlitePersistence() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-\(UUID().uuidString).sqlite").path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let first = try await SQLiteStore.open(path: path, logger: testLogger)
        try await MigrationRunner.migrate(first, exampleMigrations)
        try await first.execute("INSERT INTO widgets (id, name) VALUES ($1, $2)", [.integer(1), .text("kept")])
        await first.close()
        let second = try await SQLiteStore.open(path: path, logger: testLogger)
        #expect(try await second.query("SELECT name FROM widgets", []).first?["name"] == .text("kept"))
        #expect(try await MigrationRunner.migrate(second, exampleMigrations) == [])
        await second.close()
    }

    @Test("bad SQL is an error, not a crash", arguments: Engine.allCases)
    func badSQL(engine: Engine) async throws {
        try await withStores(engine) { stores in
            await #expect(throws: SQLError.self) { try await stores[0].execute("SELEKT 1") }
            await #expect(throws: SQLError.self) { try await stores[0].execute("SELECT * FROM missing_table") }
        }
    }
}
