import Logging
import PortcullisCore
import PortcullisProviders
import ServiceLifecycle

/// Probes every remote deployment on an interval and marks it healthy or not.
public struct HealthChecker: Service {
    /// The deployments to probe, read at each round (a reload may change them).
    private let currentDeployments: @Sendable () -> [Deployment]
    /// Seconds between rounds.
    public let interval: Double
    /// Time limit for one probe, seconds.
    public let probeTimeout: Double
    private let logger: Logger

    public init(deployments: [Deployment], interval: Double = 30, probeTimeout: Double = 5, logger: Logger) {
        self.init(deployments: { deployments }, interval: interval, probeTimeout: probeTimeout, logger: logger)
    }

    /// - Parameter deployments: read at every round, so deployments a reload adds are probed from the next one.
    public init(deployments: @escaping @Sendable () -> [Deployment], interval: Double = 30, probeTimeout: Double = 5, logger: Logger) {
        self.currentDeployments = deployments
        self.interval = interval
        self.probeTimeout = probeTimeout
        self.logger = logger
    }

    /// The remote deployments (the demo model has nothing to probe).
    public var deployments: [Deployment] { currentDeployments().filter { $0.target.provider != .demo } }

    /// Probes every deployment once, concurrently.
    public func checkAll() async {
        await withTaskGroup(of: Void.self) { group in
            for deployment in deployments {
                group.addTask { await self.check(deployment) }
            }
        }
    }

    private func check(_ deployment: Deployment) async {
        var target = deployment.target
        target.timeouts.firstByte = min(target.timeouts.firstByte, probeTimeout)
        target.timeouts.total = min(target.timeouts.total, probeTimeout)
        let context = UpstreamContext(requestID: "health-check", logger: logger)
        do {
            try await deployment.adapter.checkHealth(target: target, context: context)
            if !deployment.isHealthy { logger.info("deployment healthy again", metadata: ["deployment": "\(deployment.name)"]) }
            deployment.setHealth(true)
        } catch {
            let reason = (error as? UpstreamFailure)?.message ?? "\(type(of: error))"
            if deployment.isHealthy {
                logger.warning("deployment failed its health check", metadata: ["deployment": "\(deployment.name)", "reason": "\(reason)"])
            }
            deployment.setHealth(false)
        }
    }

    public func run() async throws {
        guard interval > 0 else {
            try? await gracefulShutdown()
            return
        }
        await Periodic.run(every: Deadline.seconds(interval), startImmediately: true) { await checkAll() }
    }
}
