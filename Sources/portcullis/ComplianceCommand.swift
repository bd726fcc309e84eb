import ArgumentParser
import Foundation
import Logging
import PortcullisAudit
import PortcullisConfig
import PortcullisProviders
import PortcullisCore
import PortcullisServer

/// `portcullis compliance report`: the compliance matrix with its evidence, from the configuration and the database.
struct ComplianceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "compliance", abstract: "Report on compliance controls with their evidence.",
                                                    subcommands: [Report.self])

    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each control's setting, measured evidence and result (exit 1 when one fails).")

        @Option(name: .shortAndLong, help: "The YAML configuration `serve` reads (default: the embedded default's database).")
        var config: String?

        @Option(help: "json or html.")
        var format: String = "json"

        func run() async throws {
            guard ["json", "html"].contains(format) else { throw ValidationError("--format must be json or html") }
            let configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
            let service = try Gateway.keyEncryptionService(configuration, http: UpstreamHTTPClient(), logger: Logger(label: "portcullis.compliance"))
            let verifier = try? AuditCommand.checkpointSetup(configuration).key?.publicKey
            let report = try await AuditCommand.withStore(configuration) { store in
                try await ComplianceReport.build(configuration: configuration, store: store, keys: service.map { SubjectKeys(store: store, service: $0) },
                                                 verifierKey: verifier)
            }
            print(format == "html" ? report.html : JSONWriter.string(report.json), terminator: format == "html" ? "" : "\n")
            if !report.passed { throw ExitCode(1) }
        }
    }
}
