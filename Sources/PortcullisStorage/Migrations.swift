import Foundation

/// One schema change, with its SQL for each engine.
public struct Migration: Sendable {
    /// Applied in increasing order; never reused.
    public let version: Int
    public let name: String
    /// Statements to run, per dialect, in order.
    public let statements: @Sendable (SQLDialect) -> [String]

    public init(version: Int, name: String, statements: @escaping @Sendable (SQLDialect) -> [String]) {
        self.version = version
        self.name = name
        self.statements = statements
    }
}

/// Applies migrations once each, in order, each in its own transaction. On PostgreSQL an
/// advisory lock makes replicas that start together take turns, so each change runs once.
public enum MigrationRunner {
    static let advisoryLockKey: Int64 = 0x706F_7274_6375_6C6C

    /// Applies what `store` lacks; returns the versions applied now.
    @discardableResult
    public static func migrate(_ store: any SQLStore, _ migrations: [Migration]) async throws -> [Int] {
        let versions = migrations.map(\.version)
        guard Set(versions).count == versions.count else { throw SQLError("duplicate migration versions") }
        // Under the same lock as the migrations: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe
        // against another session creating the same table at the same moment.
        try await store.transaction { transaction in
            try await lockAgainstOtherReplicas(transaction)
            try await transaction.execute("""
                CREATE TABLE IF NOT EXISTS portcullis_schema_migrations (
                    version BIGINT PRIMARY KEY,
                    name TEXT NOT NULL,
                    applied_at BIGINT NOT NULL
                )
                """)
        }
        var applied: [Int] = []
        for migration in migrations.sorted(by: { $0.version < $1.version }) {
            let didApply = try await store.transaction { transaction in
                try await lockAgainstOtherReplicas(transaction)
                let existing = try await transaction.query("SELECT version FROM portcullis_schema_migrations WHERE version = $1",
                                                           [.integer(Int64(migration.version))])
                guard existing.isEmpty else { return false }
                for statement in migration.statements(transaction.dialect) {
                    try await transaction.execute(statement)
                }
                try await transaction.execute("INSERT INTO portcullis_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                                              [.integer(Int64(migration.version)), .text(migration.name),
                                               .integer(Int64(Date().timeIntervalSince1970))])
                return true
            }
            if didApply { applied.append(migration.version) }
        }
        return applied
    }

    /// On PostgreSQL, waits for other replicas' migration transactions (the lock ends with the transaction).
    private static func lockAgainstOtherReplicas(_ transaction: any SQLExecutor) async throws {
        if transaction.dialect == .postgres {
            try await transaction.execute("SELECT pg_advisory_xact_lock($1)", [.integer(advisoryLockKey)])
        }
    }

    /// The versions recorded as applied.
    public static func appliedVersions(_ store: any SQLStore) async throws -> [Int] {
        try await store.query("SELECT version FROM portcullis_schema_migrations ORDER BY version", []).compactMap { $0["version"].integer.map(Int.init) }
    }
}
