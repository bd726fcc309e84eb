import Foundation
import PortcullisAccess
import PortcullisCore
import PortcullisStorage
import Testing

@Suite("Virtual API keys on SQLite and PostgreSQL", .serialized)
struct APIKeyTests {
    static let pepper = Array("a test pepper that is long enough to key HMAC".utf8)

    static func withKeys<T: Sendable>(_ engine: Engine, _ body: @Sendable (APIKeyStore, any SQLStore) async throws -> T) async throws -> T {
        try await withStores(engine) { stores in
            try await MigrationRunner.migrate(stores[0], APIKeyStore.migrations)
            return try await body(try APIKeyStore(store: stores[0], pepper: pepper), stores[0])
        }
    }

    @Test("a key is shown once, stored only as a keyed hash, and authenticates", arguments: Engine.allCases)
    func issueAndAuthenticate(engine: Engine) async throws {
        try await Self.withKeys(engine) { keys, store in
            let issued = try await keys.create(NewAPIKey(name: "ci", userID: "u1", teamID: "t1", role: .developer, allowedModels: ["gpt-4o"],
                                                         requestsPerMinute: 120, metadata: ["purpose": "tests"]))
            #expect(issued.key.hasPrefix("pck_"))
            let expectedLength = 4 + 16 + 1 + 64
            #expect(issued.key.count == expectedLength)
            let secret = String(issued.key.split(separator: "_")[2])
            let rows = try await store.query("SELECT * FROM portcullis_api_keys", [])
            #expect(rows.count == 1)
            #expect(!rows[0].values.contains { $0.text?.contains(secret) == true }, "the secret is not stored")
            let record = try #require(try await keys.authenticate(issued.key))
            #expect(record.keyID == issued.record.keyID)
            #expect(record.role == .developer)
            #expect(record.allowedModels == ["gpt-4o"])
            #expect(record.requestsPerMinute == 120)
            #expect(record.metadata["purpose"] == "tests")
            #expect(record.expiresAt == record.createdAt + 90 * 24 * 3600, "default expiry is 90 days")
        }
    }

    @Test("wrong, malformed, foreign, expired and revoked keys are refused", arguments: Engine.allCases)
    func refusals(engine: Engine) async throws {
        try await Self.withKeys(engine) { keys, _ in
            let issued = try await keys.create(NewAPIKey(lifetime: 60))
            var tampered = Array(issued.key)
            tampered[tampered.count - 1] = tampered.last == "0" ? "1" : "0"
            #expect(try await keys.authenticate(String(tampered)) == nil)
            #expect(try await keys.authenticate("sk-not-ours") == nil)
            #expect(try await keys.authenticate("pck_zz_zz") == nil)
            #expect(try await keys.authenticate("pck_0123456789abcdef_" + String(repeating: "0", count: 64)) == nil)
            #expect(try await keys.authenticate(issued.key, now: Date().addingTimeInterval(61)) == nil, "expired")
            #expect(try await keys.revoke(keyID: issued.record.keyID))
            #expect(try await keys.authenticate(issued.key) == nil, "revoked at once")
            #expect(!(try await keys.revoke(keyID: issued.record.keyID)), "already revoked")
        }
    }

    @Test("rotation issues a new secret; the old one works until its grace period ends", arguments: Engine.allCases)
    func rotation(engine: Engine) async throws {
        try await Self.withKeys(engine) { keys, _ in
            let issued = try await keys.create(NewAPIKey(userID: "u1"))
            let now = Date()
            let rotated = try #require(try await keys.rotate(keyID: issued.record.keyID, grace: 300, now: now))
            #expect(rotated.key != issued.key)
            #expect(rotated.record.keyID == issued.record.keyID)
            #expect(try await keys.authenticate(rotated.key, now: now) != nil)
            #expect(try await keys.authenticate(issued.key, now: now.addingTimeInterval(299)) != nil, "old secret within grace")
            #expect(try await keys.authenticate(issued.key, now: now.addingTimeInterval(301)) == nil, "old secret after grace")
            #expect(try await keys.authenticate(rotated.key, now: now.addingTimeInterval(301)) != nil)
            #expect(try await keys.rotate(keyID: "0000000000000000", grace: 1) == nil)
        }
    }

    @Test("keys list by owner, newest first", arguments: Engine.allCases)
    func listing(engine: Engine) async throws {
        try await Self.withKeys(engine) { keys, _ in
            let start = Date()
            _ = try await keys.create(NewAPIKey(name: "a", userID: "alice", teamID: "red"), now: start)
            _ = try await keys.create(NewAPIKey(name: "b", userID: "alice", teamID: "blue"), now: start.addingTimeInterval(1))
            _ = try await keys.create(NewAPIKey(name: "c", userID: "bob", teamID: "red"), now: start.addingTimeInterval(2))
            #expect(try await keys.list(userID: "alice").map(\.name) == ["b", "a"])
            #expect(try await keys.list(teamID: "red").map(\.name) == ["c", "a"])
            #expect(try await keys.list(userID: "alice", teamID: "red").map(\.name) == ["a"])
            #expect(try await keys.list(limit: 2).map(\.name) == ["c", "b"])
        }
    }

    @Test("a short pepper is refused")
    func pepper() async throws {
        let store = try await SQLiteStore.open(path: nil, logger: testLogger)
        #expect(throws: SQLError.self) { try APIKeyStore(store: store, pepper: Array("short".utf8)) }
        await store.close()
    }
}
