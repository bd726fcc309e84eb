import Foundation
import PortcullisCore
@testable import PortcullisStorage
import PostgresNIO
import Testing

@Suite("PostgreSQL multi-host URLs: a standby promoted is followed", .serialized)
struct PostgresFailoverTests {
    @Test("hosts separated by commas, target_session_attrs any, read-write or primary; anything else is refused")
    func parsing() throws {
        let targets = try PostgresStore.targets(url: "postgres://app:s3cret@pg-a:5433,pg-b,10.0.0.7:6432/llm?target_session_attrs=read-write",
                                                minimumConnections: 1, maximumConnections: 4)
        #expect(targets.requiresWritable)
        #expect(targets.configurations.map { "\($0.host ?? ""):\($0.port ?? 0)" } == ["pg-a:5433", "pg-b:5432", "10.0.0.7:6432"])
        #expect(targets.configurations.allSatisfy { $0.username == "app" && $0.password == "s3cret" && $0.database == "llm" })
        #expect(try PostgresStore.targets(url: "postgres://app@pg-a,pg-b/llm", minimumConnections: 1, maximumConnections: 4).requiresWritable == false)
        #expect(try PostgresStore.targets(url: "postgres://app@pg-a/llm?target_session_attrs=primary", minimumConnections: 1,
                                          maximumConnections: 4).requiresWritable)
        for url in ["postgres://app@pg-a,pg-b/llm?target_session_attrs=standby", "postgres://app@pg-a,,pg-b/llm",
                    "postgres://app@pg-a:99999/llm"] {
            #expect(throws: SQLError.self, "\(url)") { _ = try PostgresStore.targets(url: url, minimumConnections: 1, maximumConnections: 4) }
        }
    }

    @Test("with read-write, statements skip a standby listed first; when the primary dies and the standby is promoted, they follow it")
    func followsPromotion() async throws {
        let primary = try ScratchPostgres()
        let standby = try ScratchPostgres(standbyOf: primary)
        let store = try PostgresStore(url: "postgres://postgres@127.0.0.1:\(standby.port),127.0.0.1:\(primary.port)/postgres?target_session_attrs=read-write",
                                      operationTimeout: 3, logger: testLogger)
        let direct = try PostgresStore(url: standby.url, operationTimeout: 3, logger: testLogger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await store.run() }
            group.addTask { try await direct.run() }
            defer { group.cancelAll() }
            // The standby answers first in the URL's order, but it is in recovery: the write goes to the primary.
            _ = try await store.query("CREATE TABLE drill (n integer)", [])
            _ = try await store.query("INSERT INTO drill VALUES (1)", [])
            #expect(try await store.query("SELECT pg_is_in_recovery() AS standby", []).first?.values.first == .integer(0))
            #expect(try await eventually(seconds: 10) {
                (try? await direct.query("SELECT count(*) AS n FROM drill", []).first?.values.first) == .integer(1)
            }, "the row reached the standby")

            try primary.stop()
            try standby.promote()
            // The next statements find the old primary gone and choose again: the promoted standby takes the writes.
            #expect(try await eventually(seconds: 15) {
                (try? await store.query("INSERT INTO drill VALUES (2)", [])) != nil
            }, "writes resumed on the promoted standby")
            #expect(try await store.query("SELECT count(*) AS n FROM drill", []).first?.values.first == .integer(2))
            #expect(try await direct.query("SELECT pg_is_in_recovery() AS standby", []).first?.values.first == .integer(0))
        }
    }
}
