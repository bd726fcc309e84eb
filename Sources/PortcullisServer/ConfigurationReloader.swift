import Foundation
import Logging
import PortcullisConfig
import PortcullisCore
import PortcullisTLS
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Reloads the configuration file on SIGHUP and when its contents change (read every
/// `watchInterval`; comparing contents, not modification times, also catches a Kubernetes
/// ConfigMap's symlink swap). See `Gateway.reload` for what a reload applies.
///
/// A file that cannot be read, parsed or built is refused: every error is logged with its key
/// path and line, the running configuration stays, and `portcullis_config_reloads_total{outcome="failed"}`
/// counts it. The watch retries only when the contents change again; SIGHUP always retries.
public struct ConfigurationReloader: Service {
    let gateway: Gateway
    let path: String
    /// Reads and validates the file (the executable's command-line overrides applied).
    let load: @Sendable () throws -> GatewayConfiguration
    /// Seconds between reads of the file; 0 watches nothing (SIGHUP only).
    let watchInterval: Double
    /// Whether SIGHUP triggers a reload.
    let trapsHangup: Bool
    let logger: Logger

    public init(gateway: Gateway, path: String, watchInterval: Double = 2, trapsHangup: Bool = true, logger: Logger,
                load: @escaping @Sendable () throws -> GatewayConfiguration) {
        self.gateway = gateway
        self.path = path
        self.load = load
        self.watchInterval = watchInterval
        self.trapsHangup = trapsHangup
        self.logger = logger
    }

    public func run() async throws {
        let seen = FileContents(FileManager.default.contents(atPath: path))
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                if trapsHangup {
                    group.addTask {
                        for await _ in await UnixSignalsSequence(trapping: .sighup) {
                            seen.update(FileManager.default.contents(atPath: path))
                            reload(trigger: "SIGHUP")
                        }
                    }
                }
                if watchInterval > 0 {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: Deadline.seconds(watchInterval))
                            if Task.isCancelled { break }
                            if seen.update(FileManager.default.contents(atPath: path)) { reload(trigger: "file changed") }
                        }
                    }
                }
                await group.waitForAll()
            }
        }
    }

    /// Loads the file and applies it; logs what changed or every error found.
    @discardableResult
    public func reload(trigger: String) -> ReloadReport? {
        let configuration: GatewayConfiguration, report: ReloadReport
        do {
            configuration = try load()
        } catch {
            gateway.live.recordFailure()   // `Gateway.reload` counts the failures after this point
            logRefusal(error, trigger: trigger)
            return nil
        }
        do {
            report = try gateway.reload(configuration)
        } catch {
            logRefusal(error, trigger: trigger)
            return nil
        }
        var metadata: Logger.Metadata = [
            "trigger": .string(trigger), "file": .string(path),
            "models": .string(configuration.models.map(\.name).joined(separator: ",")),
            "kept_deployments": .stringConvertible(report.keptDeployments),
        ]
        if !report.added.isEmpty { metadata["added"] = .string(report.added.joined(separator: ",")) }
        if !report.removed.isEmpty { metadata["removed"] = .string(report.removed.joined(separator: ",")) }
        if !report.changed.isEmpty { metadata["changed"] = .string(report.changed.joined(separator: ",")) }
        if report.guardrailsChanged { metadata["guardrails"] = "changed" }
        if report.routingChanged { metadata["routing"] = "changed" }
        logger.notice("configuration reloaded", metadata: metadata)
        for section in report.needRestart {
            logger.warning("configuration changed where a reload cannot apply it: restart to apply",
                           metadata: ["key": .string(section), "file": .string(path)])
        }
        return report
    }

    /// Every error of a refused reload, each with its key path and line.
    private func logRefusal(_ error: any Error, trigger: String) {
        if let error = error as? ConfigurationError {
            for issue in error.issues {
                var metadata: Logger.Metadata = ["trigger": .string(trigger), "file": .string(path), "key": .string(issue.path),
                                                 "error": .string(issue.message)]
                if let line = issue.line { metadata["line"] = .stringConvertible(line) }
                logger.error("configuration reload refused; the running configuration stays", metadata: metadata)
            }
        } else {
            logger.error("configuration reload refused; the running configuration stays",
                         metadata: ["trigger": .string(trigger), "file": .string(path), "error": .string("\(error)")])
        }
    }
}

/// The file's last seen contents.
private final class FileContents: Sendable {
    private let contents: Mutex<Data?>

    init(_ initial: Data?) { contents = Mutex(initial) }

    /// Records `data`; true when it differs from what was seen.
    @discardableResult
    func update(_ data: Data?) -> Bool {
        contents.withLock { seen in
            guard seen != data else { return false }
            seen = data
            return true
        }
    }
}

extension ConfigurationReloader: CustomStringConvertible {
    /// The service group logs its services by description: the path only, never the configuration's secrets.
    public var description: String { "ConfigurationReloader(\(path))" }
}

/// Reads the listener's certificate and key again when their files change (checked every
/// `interval` seconds) or on SIGHUP, so a rotated certificate needs no restart and drops no connection.
struct CertificateWatcher: Service {
    let certificate: ServingCertificate
    var interval: Double = 5
    let logger: Logger

    func check(force: Bool) {
        do {
            if try certificate.reload(force: force) {
                logger.notice("serving certificate reloaded", metadata: ["certificate": "\(certificate.certificatePath)"])
            }
        } catch {
            logger.error("serving certificate not reloaded: the previous one stays in service", metadata: ["error": "\(error)"])
        }
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) { check(force: true) }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: Deadline.seconds(interval))
                        if Task.isCancelled { break }
                        check(force: false)
                    }
                }
                await group.waitForAll()
            }
        }
    }
}
