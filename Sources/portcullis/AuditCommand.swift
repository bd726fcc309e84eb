import ArgumentParser
import Foundation
import Logging
import PortcullisAudit
import PortcullisConfig
import PortcullisStorage

/// `portcullis audit …`: works on the audit log in the configured database.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "Verify the tamper-evident audit log.",
                                                    subcommands: [Verify.self, PublicKey.self, Export.self])

    /// Runs `body` with the store of `configuration`'s database, closed afterwards.
    static func withStore<T: Sendable>(_ configuration: GatewayConfiguration, _ body: @Sendable (any SQLStore) async throws -> T) async throws -> T {
        let logger = Logger(label: "portcullis.audit")
        guard let location = StorageLocation(configuration.storage.database) else {
            throw ValidationError("storage.database '\(configuration.storage.database)' is not a SQLite path or PostgreSQL URL")
        }
        switch location {
        case .sqlite(let path):
            let store = try await SQLiteStore.open(path: path, logger: logger)
            do {
                let result = try await body(store)
                await store.close()
                return result
            } catch {
                await store.close()
                throw error
            }
        case .postgres(let url):
            let store = try PostgresStore(url: url, maximumConnections: 1, logger: logger)
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                return try await body(store)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write audit records, oldest first, one per line: jsonl (as the API shows them), ecs, ocsf or cef.")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        @Option(help: "From this time (RFC 3339 or unix seconds), inclusive.")
        var from: String?

        @Option(help: "To this time (RFC 3339 or unix seconds), exclusive.")
        var to: String?

        @Option(help: "jsonl, ecs, ocsf or cef.")
        var format: String = "jsonl"

        func run() async throws {
            guard let shape = AuditFormat(rawValue: format) else { throw ValidationError("--format must be jsonl, ecs, ocsf or cef") }
            var filter = AuditFilter()
            for (name, text, keyPath) in [("--from", from, \AuditFilter.from), ("--to", to, \AuditFilter.to)] {
                guard let text else { continue }
                guard let micros = AuditFilter.microseconds(text) else { throw ValidationError("\(name) must be RFC 3339 or unix seconds") }
                filter[keyPath: keyPath] = micros
            }
            let configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
            let range = filter
            try await AuditCommand.withStore(configuration) { store in
                let reader = AuditReader(store: store)
                var offset = 0
                while true {
                    let page = try await reader.oldestFirst(range, limit: 1000, offset: offset)
                    for record in page { print(shape.line(record)) }
                    guard page.count == 1000 else { break }
                    offset += page.count
                }
            }
        }
    }

    /// The checkpoint key of `configuration` (read, never created) and the published checkpoints' directory.
    static func checkpointSetup(_ configuration: GatewayConfiguration) throws -> AuditConfiguration.CheckpointSetup {
        var sqlitePath: String?
        if case .sqlite(let path) = StorageLocation(configuration.storage.database) { sqlitePath = path }
        return try configuration.audit.checkpointSetup(sqlitePath: sqlitePath, isMemory: sqlitePath == ":memory:", create: false)
    }

    struct PublicKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "public-key", abstract: "Print the verifier key of the audit checkpoints (C2SP signed-note form: name+hash+key).")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        func run() async throws {
            let configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
            guard let key = try AuditCommand.checkpointSetup(configuration).key else {
                throw ValidationError("no audit signing key: set audit.signing_key_file")
            }
            print(key.publicKey.description)
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every chain of audit_logs; exits 0 when intact, 1 naming the first damaged record of each damaged chain.")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        @Option(name: .long, help: "The verifier key to check checkpoints with (default: the configured signing key's).")
        var publicKey: String?

        @Option(name: .long, parsing: .upToNextOption,
                help: "Published checkpoint files to check against (default: the latest of each chain in the configured directory).")
        var checkpoint: [String] = []

        func run() async throws {
            let configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
            let setup = try? AuditCommand.checkpointSetup(configuration)
            var key = setup?.key?.publicKey
            if let publicKey {
                guard let given = AuditVerifierKey(publicKey) else { throw ValidationError("--public-key is not a name+hash+key verifier key") }
                key = given
            }
            var notes: [String] = []
            if checkpoint.isEmpty {
                if let directory = setup?.directory { notes = Array(DirectoryCheckpointPublisher(directory: directory).latest().values) }
            } else {
                for path in checkpoint {
                    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read \(path)") }
                    notes.append(text)
                }
            }
            let published = notes, verifier = key
            let report = try await AuditCommand.withStore(configuration) { store in
                try await AuditVerifier.verify(store, checkpoints: published, key: verifier)
            }
            let total = report.records.values.reduce(0, +)
            if report.isIntact {
                print("audit log intact: \(total) records in \(report.records.count) chain(s); \(published.count) signed checkpoint(s) hold")
                return
            }
            print("audit log DAMAGED (\(total) records in \(report.records.count) chain(s) read):")
            for finding in report.damage { print("  " + finding.description) }
            throw ExitCode(1)
        }
    }
}
