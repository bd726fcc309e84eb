import Foundation
import PortcullisCore
import PortcullisProviders
import Synchronization

/// One upstream deployment with its live state: circuit breaker and health.
public final class Deployment: Sendable {
    public let target: DeploymentTarget
    public let adapter: any ProviderAdapter
    public let weight: Double
    public let price: TokenPrice
    /// The configuration it was built from (nil when built directly): a reload keeps a deployment
    /// whose configuration did not change, with its circuit and health.
    public let settings: DeploymentConfiguration?
    private let breaker: Mutex<CircuitBreaker>
    private let healthy = Atomic<Bool>(true)
    /// When the deployment last failed (a health check or a call that counts), wall-clock seconds; 0: never.
    private let lastFailure = Mutex<Double>(0)
    /// Requests sent here in panic: every deployment of the group was marked down.
    public let panicSelections = Atomic<Int>(0)

    public init(target: DeploymentTarget, adapter: any ProviderAdapter, weight: Double = 1, price: TokenPrice = TokenPrice(),
                breaker: CircuitBreaker.Configuration = CircuitBreaker.Configuration(), settings: DeploymentConfiguration? = nil) {
        self.target = target
        self.adapter = adapter
        self.weight = max(weight, 0)
        self.price = price
        self.settings = settings
        self.breaker = Mutex(CircuitBreaker(configuration: breaker))
    }

    /// Its circuit breaker's thresholds.
    public var breakerConfiguration: CircuitBreaker.Configuration { breaker.withLock { $0.configuration } }

    /// The deployment's secret-free name.
    public var name: String { target.name }
    /// Where it processes data (nil: not stated, which satisfies no region rule).
    public var region: String? { settings?.region }
    /// Whether it is covered by a business associate agreement.
    public var baa: Bool { settings?.baa ?? false }

    /// Wall-clock seconds, the time base of circuit breakers.
    public static func now() -> Double { Date().timeIntervalSince1970 }

    /// Whether the last health check passed (true until one fails).
    public var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    /// The circuit breaker's state: closed, open or half_open.
    public var circuitState: String { breaker.withLock { $0.stateName } }

    /// Whether routing may consider this deployment now.
    public func isSelectable(now: Double = Deployment.now()) -> Bool {
        isHealthy && breaker.withLock { $0.isAvailable(now: now) }
    }

    /// When the deployment last failed (0: never).
    public var lastFailureTime: Double { lastFailure.withLock { $0 } }

    /// Whether panic routing may send a request here although a health check failed: its
    /// circuit admits requests (an open circuit keeps traffic off until its own probe).
    func isPanicCandidate(now: Double) -> Bool {
        weight > 0 && breaker.withLock { $0.isAvailable(now: now) }
    }

    /// Claims the right to send one request (the single half-open probe, when half-open).
    public func admit(now: Double = Deployment.now()) -> Bool {
        breaker.withLock { $0.admit(now: now) }
    }

    /// Records a successful call.
    public func recordSuccess() {
        breaker.withLock { $0.recordSuccess(now: Deployment.now()) }
    }

    /// Records a failed call; only failures that speak about the deployment count.
    public func record(_ failure: UpstreamFailure) {
        breaker.withLock { breaker in
            if failure.countsAgainstDeployment {
                breaker.recordFailure(now: Deployment.now())
                lastFailure.withLock { $0 = Deployment.now() }
            } else {
                breaker.releaseProbe()
            }
        }
    }

    /// Releases a claimed probe after an outcome that says nothing about health.
    public func releaseProbe() {
        breaker.withLock { $0.releaseProbe() }
    }

    /// Sets the health-check outcome.
    public func setHealth(_ isHealthy: Bool) {
        if !isHealthy { lastFailure.withLock { $0 = Deployment.now() } }
        healthy.store(isHealthy, ordering: .relaxed)
    }
}

/// A public model name and the deployments that can serve it.
public struct ModelGroup: Sendable {
    public var name: String
    public var deployments: [Deployment]
    /// Groups to try, in order, when every deployment here failed.
    public var fallbacks: [String]
    /// Unix time the group was configured, for `/v1/models`.
    public var created: Int64
    /// Who `/v1/models` says owns the model.
    public var ownedBy: String

    public init(name: String, deployments: [Deployment], fallbacks: [String] = [], created: Int64 = 0, ownedBy: String = "portcullis") {
        self.name = name
        self.deployments = deployments
        self.fallbacks = fallbacks
        self.created = created
        self.ownedBy = ownedBy
    }
}
