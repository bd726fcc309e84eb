import ArgumentParser
import Foundation
import Logging
import PortcullisAudit
import PortcullisConfig
import PortcullisProviders
import PortcullisServer

/// `portcullis kms …`: the key-encryption key that wraps every data subject's data key.
struct KMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kms", abstract: "Rotate the key-encryption key and re-wrap data keys.",
                                                    subcommands: [Rotate.self, Status.self])

    /// The configuration's key service and data keys over its database.
    static func withKeys<T: Sendable>(_ path: String?, _ body: @Sendable (SubjectKeys) async throws -> T) async throws -> T {
        let configuration = try path.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
        let http = UpstreamHTTPClient()
        guard let service = try Gateway.keyEncryptionService(configuration, http: http, logger: Logger(label: "portcullis.kms")) else {
            throw ValidationError("no key-encryption key is configured (kms.key_file or kms.provider: aws)")
        }
        return try await AuditCommand.withStore(configuration) { store in try await body(SubjectKeys(store: store, service: service)) }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new key-encryption key version current and re-wrap every data key under it (payloads are not re-encrypted).")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        func run() async throws {
            let (version, moved) = try await KMSCommand.withKeys(config) { keys in try await keys.rotate() }
            print("key-encryption key version \(version.id) is current; \(moved) data keys re-wrapped")
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The current key-encryption key version, its age, and how many data keys each version wraps.")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        func run() async throws {
            let (current, counts) = try await KMSCommand.withKeys(config) { keys in (try await keys.service.current(), try await keys.keysByVersion()) }
            let days = current.createdAt > 0 ? String(format: "%.1f", (Date().timeIntervalSince1970 - Double(current.createdAt)) / 86_400) : "unknown"
            print("current version \(current.id), \(days) days old")
            for (version, count) in counts.sorted(by: { $0.key < $1.key }) { print("version \(version): \(count) data keys") }
        }
    }
}
