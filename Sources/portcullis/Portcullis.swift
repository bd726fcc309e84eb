import ArgumentParser
import Foundation
import Hummingbird
import Instrumentation
import Logging
import Metrics
import NIOCore
import NIOPosix
import OTel
import PortcullisAccess
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisRouting
import PortcullisServer
import Prometheus
import ServiceLifecycle
import UnixSignals

@main
struct Portcullis: AsyncParsableCommand {
    /// Runs Swift concurrency on NIO's event loops, so that a request's hops between the
    /// server, the handler and the upstream client stay on one thread instead of switching
    /// between two thread pools (measured with bench/run.sh; see bench/results).
    static func main() async {
        // One event loop per CPU this process may run on (taskset/cpuset), not per CPU of the machine:
        // extra loops on a pinned core only add context switches.
        if let threads = ProcessInfo.processInfo.environment["PORTCULLIS_EVENT_LOOP_THREADS"].flatMap(Int.init), threads > 0 {
            NIOSingletons.groupLoopCountSuggestion = threads
        } else if let allowed = allowedCPUCount() {
            NIOSingletons.groupLoopCountSuggestion = allowed
        }
        if ProcessInfo.processInfo.environment["PORTCULLIS_DEFAULT_EXECUTOR"] == nil {
            _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract: "An enterprise LLM gateway: one OpenAI- and Anthropic-compatible endpoint in front of every provider.",
        subcommands: [Serve.self, Config.self, KeysCommand.self, IPCommand.self, GuardCommand.self, AuditCommand.self, KMSCommand.self, ComplianceCommand.self, CacheCommand.self, MockUpstreamCommand.self],
        defaultSubcommand: Serve.self
    )
}

/// How many CPUs the process may use, from `Cpus_allowed_list` in /proc/self/status (e.g. "0", "0-3,6").
func allowedCPUCount() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { return nil }
    var count = 0
    for range in line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces).split(separator: ",") {
        let bounds = range.split(separator: "-").compactMap { Int($0) }
        if bounds.count == 2 { count += bounds[1] - bounds[0] + 1 } else if bounds.count == 1 { count += 1 }
    }
    return count > 0 ? count : nil
}

/// Sets up tracing once, for the whole process, when `tracing.endpoint` is set: OpenTelemetry
/// spans exported over OTLP/HTTP (protobuf) by swift-otel, sampled by trace id and following a
/// caller's decision; the `OTEL_*` environment variables override the file.
enum TracingSetup {
    static func bootstrap(_ tracing: GatewayConfiguration.Tracing, logger: Logger) throws -> (any Service)? {
        guard let url = tracing.tracesURL else { return nil }
        var otel = OTel.Configuration.default
        otel.serviceName = tracing.serviceName
        otel.logs.enabled = false
        otel.metrics.enabled = false
        otel.traces.enabled = true
        otel.traces.exporter = .otlp
        otel.traces.otlpExporter.endpoint = url
        otel.traces.otlpExporter.protocol = .httpProtobuf
        otel.traces.otlpExporter.headers = tracing.headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        otel.traces.otlpExporter.timeout = .milliseconds(Int64(tracing.exportTimeoutSeconds * 1000))
        otel.traces.sampler = .parentBasedTraceIDRatio(ratio: tracing.sampleRatio) ?? .parentBasedAlwaysOn
        otel.diagnosticLogger = .custom(logger)
        let backend = try OTel.makeTracingBackend(configuration: otel)
        InstrumentationSystem.bootstrap(backend.factory)
        logger.notice("tracing: spans go to \(url)", metadata: ["sample_ratio": .stringConvertible(tracing.sampleRatio)])
        return backend.service
    }
}

/// Sets up logging once, for the whole process (only the executable bootstraps).
enum LoggingSetup {
    static func bootstrap(level: String, format: LogFormat = .text) -> Logger {
        let threshold = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            switch format {
            case .json:
                return ECSLogHandler(label: label, level: threshold)
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = threshold
                return handler
            }
        }
        var logger = Logger(label: "portcullis")
        logger.logLevel = Logger.Level(rawValue: level) ?? .info
        return logger
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (the embedded default when no --config is given).")

    @Option(name: .shortAndLong, help: "YAML configuration file.")
    var config: String?

    @Option(help: "Override server.host.")
    var host: String?

    @Option(help: "Override server.port.")
    var port: Int?

    @Option(help: "Override log_level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String?

    @Option(help: "Seconds between reads of the --config file to reload it when it changed (0: on SIGHUP only).")
    var configWatchSeconds: Double = 2

    @Flag(help: .hidden)   // the benchmark's reference: no limits, budgets or usage accounting; refused with credentials configured
    var referenceCore = false

    func run() async throws {
        let configuration: GatewayConfiguration
        do {
            configuration = try loadConfiguration()
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("portcullis: refusing to start: \(error.description)\n".utf8))
            throw ExitCode(2)
        }
        if referenceCore && (configuration.auth.masterKey != nil || !configuration.auth.oidc.isEmpty) {
            FileHandle.standardError.write(Data("portcullis: --reference-core is for benchmarks and refuses a configuration with credentials\n".utf8))
            throw ExitCode(2)
        }
        let logger = LoggingSetup.bootstrap(level: configuration.logLevel, format: configuration.logFormat)
        let models = configuration.models.map(\.name).joined(separator: ", ")
        let scheme = configuration.server.tls == nil ? "http" : "https"
        let host = configuration.server.host
        // One registry for the gateway's metrics and every library's swift-metrics: `/metrics` serves both.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        // Traces, when configured: bootstrapped before the gateway, which reads the tracer once.
        let tracing = try TracingSetup.bootstrap(configuration.tracing, logger: logger)
        let gateway = try await Gateway(configuration: configuration, logger: logger, governed: !referenceCore, metricsRegistry: registry)
        let app = try gateway.makeApplication(logger: logger) { channel in
            let port = channel.localAddress?.port ?? 0
            logger.notice("Portcullis listening on \(scheme)://\(host):\(port) — models: \(models)")
        }
        // The exporter first: a service group stops in reverse order, so spans of the last requests still go out.
        var services: [any Service] = (tracing.map { [$0] } ?? []) + [app]
        // Models, deployments, routing and guard policies reload on SIGHUP and when the file changes.
        if let config {
            let serve = self
            services.append(ConfigurationReloader(gateway: gateway, path: config, watchInterval: configWatchSeconds, logger: logger) {
                try serve.loadConfiguration()
            })
        }
        var lifecycle = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                  cancellationSignals: [.sigquit], logger: logger)
        // In-flight requests get `shutdown_grace_seconds` to finish; then the rest is cancelled.
        lifecycle.maximumGracefulShutdownDuration = .nanoseconds(Int64(configuration.server.shutdownGraceSeconds * 1_000_000_000))
        let group = ServiceGroup(configuration: lifecycle)
        // Every request's tasks (children of the service group's) run on the event loops, calls
        // between async functions without a round through the loop's queue (see EventLoopTaskExecutor).
        // PORTCULLIS_TASK_EXECUTOR=0 turns it off (to measure what it saves).
        let executor = ProcessInfo.processInfo.environment["PORTCULLIS_TASK_EXECUTOR"] == "0"
            ? nil : EventLoopTaskExecutor(group: MultiThreadedEventLoopGroup.singleton)
        try await withTaskExecutorPreference(executor) { try await group.run() }
        logger.notice("Portcullis stopped")
    }

    /// The --config file (or the embedded default) with the command line's overrides; a reload reads it the same way.
    func loadConfiguration() throws -> GatewayConfiguration {
        var configuration = try config.map { try ConfigurationLoader.load(path: $0) } ?? ConfigurationLoader.embeddedDefault()
        if let host { configuration.server.host = host }
        if let port { configuration.server.port = port }
        if let logLevel { configuration.logLevel = logLevel }
        return configuration
    }
}

struct Config: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Work with configuration files.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a configuration file; names the key and line of every error.")

        @Argument(help: "The YAML file to check.")
        var file: String

        func run() async throws {
            do {
                let configuration = try ConfigurationLoader.load(path: file)
                let deployments = configuration.models.reduce(0) { $0 + $1.deployments.count }
                print("\(file): OK — \(configuration.models.count) models, \(deployments) deployments")
            } catch let error as ConfigurationError {
                print(error.description)
                throw ExitCode(1)
            }
        }
    }
}

struct MockUpstreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-upstream",
        abstract: "Run a local OpenAI- and Anthropic-compatible upstream with controllable latency, errors, hangs and resets.",
        discussion: "Change behaviour at run time with POST /_mock/config (e.g. {\"fail_next\":3,\"error_status\":503}); read received request ids with GET /_mock/requests.")

    @Option(help: "Interface to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind.") var port = 9000
    @Option(help: "Delay before the response head, milliseconds.") var latencyMs: Double = 0
    @Option(help: "Delay before the first stream event, milliseconds.") var ttftMs: Double = 0
    @Option(help: "Stream pace (0 = all at once).") var tokensPerSecond: Double = 0
    @Option(help: "Share of requests answered with --error-status (0–1).") var errorRate: Double = 0
    @Option(help: "Status of injected errors.") var errorStatus = 500
    @Option(help: "Fixed reply text.") var reply: String?
    @Option(help: "Log level.") var logLevel = "warning"

    func run() async throws {
        let logger = LoggingSetup.bootstrap(level: logLevel)
        var behaviour = MockBehaviour()
        behaviour.latencyMilliseconds = latencyMs
        behaviour.timeToFirstTokenMilliseconds = ttftMs
        behaviour.tokensPerSecond = tokensPerSecond
        behaviour.errorRate = errorRate
        behaviour.errorStatus = errorStatus
        behaviour.reply = reply
        let mock = MockUpstream(behaviour: behaviour)
        let host = self.host
        let app = try mock.makeApplication(host: host, port: port, logger: logger) { channel in
            logger.notice("mock upstream listening on http://\(host):\(channel.localAddress?.port ?? 0)")
        }
        try await app.runService()
    }
}
