import ArgumentParser
import Foundation
import Logging
import PortcullisAudit
import PortcullisConfig
import PortcullisStorage

/// `portcullis audit …`: works on the audit log in the configured database.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Verify the tamper-evident audit log.",
                                                    subcommands: [Verify.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every chain of audit_logs; exits 0 when intact, 1 naming the first damaged record of each damaged chain.")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        func run() async throws {
            let configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
            let logger = Logger(label: "portcullis.audit")
            guard let location = StorageLocation(configuration.storage.database) else {
                throw ValidationError("storage.database '\(configuration.storage.database)' is not a SQLite path or PostgreSQL URL")
            }
            let report: AuditVerifier.Report
            switch location {
            case .sqlite(let path):
                let store = try await SQLiteStore.open(path: path, logger: logger)
                do {
                    report = try await AuditVerifier.verify(store)
                } catch {
                    await store.close()
                    throw error
                }
                await store.close()
            case .postgres(let url):
                let store = try PostgresStore(url: url, maximumConnections: 1, logger: logger)
                report = try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await store.run() }
                    defer { group.cancelAll() }
                    return try await AuditVerifier.verify(store)
                }
            }
            let total = report.records.values.reduce(0, +)
            if report.isIntact {
                print("audit log intact: \(total) records in \(report.records.count) chain(s)")
                return
            }
            print("audit log DAMAGED (\(total) records in \(report.records.count) chain(s) read):")
            for finding in report.damage { print("  " + finding.description) }
            throw ExitCode(1)
        }
    }
}
