import Foundation
import PortcullisCore
import PortcullisProviders
import PortcullisTLS

/// Retries, backoff, circuit breakers and health checks.
public struct RoutingConfiguration: Sendable, Equatable {
    /// Extra attempts per model group after the first. Default 2.
    public var retries: Int = 2
    /// First backoff, milliseconds. Default 200.
    public var initialBackoffMilliseconds: Double = 200
    /// Largest backoff, milliseconds. Default 5000.
    public var maximumBackoffMilliseconds: Double = 5000
    /// Longest `Retry-After` honoured before moving on, seconds. Default 10.
    public var maximumRetryAfterSeconds: Double = 10
    /// Failures within the window that open a deployment's circuit. Default 5.
    public var circuitFailureThreshold: Int = 5
    /// Window for counting failures, seconds. Default 60.
    public var circuitWindowSeconds: Double = 60
    /// How long a circuit stays open before a probe, seconds. Default 30.
    public var circuitCooldownSeconds: Double = 30
    /// Seconds between active health checks; 0 disables them. Default 30.
    public var healthCheckIntervalSeconds: Double = 30
    /// Time limit of one health probe, seconds. Default 5.
    public var healthCheckTimeoutSeconds: Double = 5
    /// Default upstream timeouts; a deployment may override each.
    public var timeouts = UpstreamTimeoutsConfiguration()

    public init() {}
}

/// Per-phase upstream time limits, seconds.
public struct UpstreamTimeoutsConfiguration: Sendable, Equatable {
    public var connect: Double = 5
    public var firstByte: Double = 60
    public var total: Double = 600
    public var streamIdle: Double = 60

    public init() {}
}

/// A public model name and how it is served.
public struct ModelConfiguration: Sendable, Equatable {
    public var name: String
    public var deployments: [DeploymentConfiguration]
    /// Model groups to try, in order, when every deployment here failed.
    public var fallbacks: [String] = []

    public init(name: String, deployments: [DeploymentConfiguration], fallbacks: [String] = []) {
        self.name = name
        self.deployments = deployments
        self.fallbacks = fallbacks
    }
}

/// One upstream deployment of a model group.
public struct DeploymentConfiguration: Sendable, Equatable {
    public var provider: ProviderKind
    /// The model name upstream (for Azure, the deployment name).
    public var model: String
    public var apiBase: String?
    public var apiKey: String?
    public var apiVersion: String?
    /// Relative share of traffic among the group's healthy deployments. Default 1.
    public var weight: Double = 1
    /// Price per one million input tokens. Default 0.
    public var inputPricePerMillion: Double = 0
    /// Price per one million output tokens. Default 0.
    public var outputPricePerMillion: Double = 0
    /// Extra headers sent upstream.
    public var headers: [String: String] = [:]
    /// Overrides of the routing timeouts.
    public var timeouts: UpstreamTimeoutsConfiguration
    /// `max_tokens` sent to providers that require it when the client gives none. Default 4096.
    public var defaultMaxTokens: Int = 4096
    /// Demo provider only: streamed tokens per second (0 = unthrottled).
    public var tokensPerSecond: Double = 0
    /// TLS to an https `api_base`: `tls_min_version` (default 1.3), `ca_file` (internal PKI; default the
    /// system's roots), `client_certificate` and `client_key` (mTLS).
    public var tls = ClientTLSSettings()
    /// Where the deployment processes data (`ru-central1`, `eu-west-1`, …), for residency rules. Default none.
    public var region: String?
    /// Whether the provider signed a business associate agreement (HIPAA) for it. Default false.
    public var baa = false

    public init(provider: ProviderKind, model: String, timeouts: UpstreamTimeoutsConfiguration = UpstreamTimeoutsConfiguration()) {
        self.provider = provider
        self.model = model
        self.timeouts = timeouts
    }
}

extension ModelRouter {
    /// The router of `models` as configured: each deployment with its adapter (from `adapter`,
    /// one per provider kind), target, weight, price and circuit breaker; retries and backoff
    /// from `routing`. A deployment of `previous` (the router a reload replaces) with the same name,
    /// configuration and breaker thresholds is kept as it is, with its circuit, health and counters.
    public init(models: [ModelConfiguration], routing: RoutingConfiguration, keeping previous: ModelRouter? = nil,
                adapter: (ProviderKind, DeploymentConfiguration) -> any ProviderAdapter) {
        let breaker = CircuitBreaker.Configuration(failureThreshold: routing.circuitFailureThreshold,
                                                   window: routing.circuitWindowSeconds, cooldown: routing.circuitCooldownSeconds)
        let created = Int64(Date().timeIntervalSince1970)
        var kept: [String: Deployment] = [:]
        for deployment in previous?.allDeployments ?? [] where deployment.breakerConfiguration == breaker { kept[deployment.name] = deployment }
        let groups = models.map { model in
            let deployments = model.deployments.enumerated().map { index, settings in
                let timeouts = UpstreamTimeouts(connect: settings.timeouts.connect, firstByte: settings.timeouts.firstByte,
                                                total: settings.timeouts.total, streamIdle: settings.timeouts.streamIdle)
                let kind = settings.provider
                let name = "\(model.name)/\(kind.rawValue)[\(index)]"
                if let unchanged = kept[name], unchanged.settings == settings { return unchanged }
                let target = DeploymentTarget(
                    name: name, provider: kind, upstreamModel: settings.model,
                    apiBase: settings.apiBase ?? kind.defaultAPIBase ?? "", apiKey: settings.apiKey, apiVersion: settings.apiVersion,
                    headers: settings.headers, timeouts: timeouts, defaultMaxTokens: settings.defaultMaxTokens,
                    tls: settings.tls)
                return Deployment(target: target, adapter: adapter(kind, settings), weight: settings.weight,
                                  price: TokenPrice(inputPerMillion: settings.inputPricePerMillion, outputPerMillion: settings.outputPricePerMillion),
                                  breaker: breaker, settings: settings)
            }
            let owner = model.deployments.first.map { $0.provider == .demo ? "portcullis" : $0.provider.rawValue } ?? "portcullis"
            let since = previous?.groups[model.name]?.created ?? created
            return ModelGroup(name: model.name, deployments: deployments, fallbacks: model.fallbacks, created: since, ownedBy: owner)
        }
        let policy = RetryPolicy(retries: routing.retries, initialBackoff: routing.initialBackoffMilliseconds / 1000,
                                 maximumBackoff: routing.maximumBackoffMilliseconds / 1000, maximumRetryAfter: routing.maximumRetryAfterSeconds)
        self.init(groups: groups, retryPolicy: policy)
    }
}

/// Where a caller's traffic may go (data residency, e.g. Russia's 152-FZ, and HIPAA's BAA): a
/// rule names callers (teams, keys, users) and what a deployment must be for them — in one of
/// `regions`, and under a BAA when `requireBAA`. Routing, fallbacks included, only uses
/// deployments that satisfy every rule that names the caller.
public struct ResidencyRule: Sendable, Equatable {
    public var name: String
    public var teams: Set<String> = []
    public var keys: Set<String> = []
    public var users: Set<String> = []
    /// Empty: any region.
    public var regions: Set<String> = []
    public var requireBAA = false

    public init(name: String) {
        self.name = name
    }

    /// Whether the rule names this caller.
    public func applies(teamID: String?, keyID: String?, userID: String?) -> Bool {
        teamID.map(teams.contains) == true || keyID.map(keys.contains) == true || userID.map(users.contains) == true
    }

    /// Whether `deployment` may serve callers the rule names.
    public func allows(_ deployment: Deployment) -> Bool {
        (regions.isEmpty || deployment.region.map(regions.contains) == true) && (!requireBAA || deployment.baa)
    }

    /// What a deployment must be, in words.
    public var requirement: String {
        var parts: [String] = []
        if !regions.isEmpty { parts.append("in region " + regions.sorted().joined(separator: " or ")) }
        if requireBAA { parts.append("under a BAA") }
        return parts.joined(separator: ", ")
    }
}

/// The residency rules that apply to one request (every one must be satisfied).
public struct Residency: Sendable, Equatable {
    public var rules: [ResidencyRule]

    public init(rules: [ResidencyRule]) {
        self.rules = rules
    }

    /// The rules of `all` that name the caller; nil when none does.
    public static func of(_ all: [ResidencyRule], teamID: String?, keyID: String?, userID: String?) -> Residency? {
        let applying = all.filter { $0.applies(teamID: teamID, keyID: keyID, userID: userID) }
        return applying.isEmpty ? nil : Residency(rules: applying)
    }

    public func allows(_ deployment: Deployment) -> Bool { rules.allSatisfy { $0.allows(deployment) } }

    public var names: String { rules.map(\.name).joined(separator: ", ") }
}
