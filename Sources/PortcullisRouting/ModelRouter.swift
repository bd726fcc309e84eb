import Foundation
import Logging
import PortcullisCore
import PortcullisProviders
import Synchronization

/// What a routed call returned, and who served it.
public struct Routed<Value> {
    public var value: Value
    /// The deployment that served the call.
    public var deployment: Deployment
    /// The model group that served it (differs from the requested one after a fallback).
    public var group: String
    /// How many upstream attempts it took.
    public var attempts: Int
    /// Whether it was served in panic: every deployment of its group was marked down by health
    /// checks, so the one that failed longest ago was tried anyway.
    public var panic = false

    public init(value: Value, deployment: Deployment, group: String, attempts: Int, panic: Bool = false) {
        self.value = value
        self.deployment = deployment
        self.group = group
        self.attempts = attempts
        self.panic = panic
    }
}

extension Routed: Sendable where Value: Sendable {}

/// Chooses deployments for a model, with weighted balancing, retries with backoff,
/// circuit breakers and fallback chains across groups.
public struct ModelRouter: Sendable {
    public let groups: [String: ModelGroup]
    public let retryPolicy: RetryPolicy
    /// Sleeps between retries; replaceable so that policies can be exercised without waiting.
    public var sleep: @Sendable (Double) async throws -> Void = { seconds in
        try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1_000_000_000))
    }

    public init(groups: [ModelGroup], retryPolicy: RetryPolicy = RetryPolicy()) {
        var byName: [String: ModelGroup] = [:]
        for group in groups { byName[group.name] = group }
        self.groups = byName
        self.retryPolicy = retryPolicy
    }

    /// Public model names, sorted.
    public var modelNames: [String] { groups.keys.sorted() }

    /// Every deployment of every group.
    public var allDeployments: [Deployment] { groups.values.flatMap(\.deployments) }

    /// Picks a deployment of `group` by weight among selectable ones, preferring those not yet
    /// tried. When none is selectable because health checks marked them all down, it panics
    /// (as Envoy's healthy-panic threshold does): the untried deployment that failed longest
    /// ago is tried anyway, so a gateway started a moment before its upstream, or a health
    /// check that fails while calls would succeed, does not refuse everything. Open circuits
    /// are not overridden: they have their own half-open probe.
    func choose(in group: ModelGroup, excluding tried: Set<ObjectIdentifier>, random: Double,
                residency: Residency? = nil) -> (deployment: Deployment, panic: Bool)? {
        let now = Deployment.now()
        let eligible = residency.map { residency in group.deployments.filter(residency.allows) } ?? group.deployments
        let selectable = eligible.filter { $0.isSelectable(now: now) && $0.weight > 0 }
        let fresh = selectable.filter { !tried.contains(ObjectIdentifier($0)) }
        var pool = fresh.isEmpty ? selectable : fresh
        while !pool.isEmpty {
            let total = pool.reduce(0) { $0 + $1.weight }
            var point = random * total
            var chosen = pool[pool.count - 1]
            for deployment in pool {
                if point < deployment.weight {
                    chosen = deployment
                    break
                }
                point -= deployment.weight
            }
            if chosen.admit(now: now) { return (chosen, false) }
            pool.removeAll { $0 === chosen }
        }
        guard selectable.isEmpty else { return nil }
        let candidates = eligible.filter { !$0.isHealthy && !tried.contains(ObjectIdentifier($0)) && $0.isPanicCandidate(now: now) }
        for deployment in candidates.sorted(by: { $0.lastFailureTime < $1.lastFailureTime }) where deployment.admit(now: now) {
            deployment.panicSelections.add(1, ordering: .relaxed)
            return (deployment, true)
        }
        return nil
    }

    /// Runs `operation` on a deployment of `model`, retrying and falling back as configured.
    ///
    /// `operation` must finish everything that may still fail over before returning
    /// (for streams: receiving the first event).
    /// With `residency`, only deployments that satisfy it are used, in every group of the
    /// chain; when none of them does, the request is refused (`403 residency_violation`).
    public func execute<Value>(model: String, logger: Logger, residency: Residency? = nil,
                               _ operation: (Deployment) async throws -> Value) async throws -> Routed<Value> {
        guard let primary = groups[model] else {
            throw GatewayError.modelNotFound(model, available: modelNames)
        }
        let chain = chain(of: primary)
        if let residency, let refusal = residencyRefusal(model: model, residency: residency) { throw refusal }
        var lastFailure: UpstreamFailure?
        var attempts = 0
        for group in chain {
            var tried = Set<ObjectIdentifier>()
            var attempt = 0
            while attempt <= retryPolicy.retries {
                guard let (deployment, panic) = choose(in: group, excluding: tried, random: FastRandom.unit(), residency: residency) else { break }
                tried.insert(ObjectIdentifier(deployment))
                attempts += 1
                do {
                    let value = try await operation(deployment)
                    deployment.recordSuccess()
                    if group.name != primary.name || attempts > 1 || panic {
                        logger.info(panic ? "routed in panic: every deployment was marked down" : "routed after failover",
                                    metadata: ["model": "\(model)", "group": "\(group.name)", "deployment": "\(deployment.name)",
                                               "attempts": "\(attempts)"])
                    }
                    return Routed(value: value, deployment: deployment, group: group.name, attempts: attempts, panic: panic)
                } catch let failure as UpstreamFailure {
                    deployment.record(failure)
                    lastFailure = failure
                    logger.warning("upstream attempt failed", metadata: ["deployment": "\(deployment.name)", "reason": "\(failure.reason)",
                                                                         "attempt": "\(attempts)"])
                    guard failure.isRetryable else { throw Self.clientError(for: failure) }
                    guard attempt < retryPolicy.retries else { break }
                    let nextIsSameDeployment = group.deployments.filter {
                        $0.isSelectable() && !tried.contains(ObjectIdentifier($0)) && residency?.allows($0) != false
                    }.isEmpty
                    let delay = retryPolicy.delay(beforeRetry: attempt, retryAfter: nextIsSameDeployment ? failure.retryAfter : nil,
                                                  random: FastRandom.unit())
                    guard let delay else { break }
                    try await sleep(delay)
                } catch {
                    deployment.releaseProbe()
                    throw error
                }
                attempt += 1
            }
        }
        if let lastFailure { throw Self.clientError(for: lastFailure, attempts: attempts) }
        throw GatewayError(status: 503, kind: .overloaded, code: .noHealthyDeployment,
                           message: "No healthy deployment is available for model '\(model)'"
                               + (primary.fallbacks.isEmpty ? "" : " or its fallbacks") + ": circuits are open or health checks fail.")
    }

    /// The group and its fallbacks, in the order they are tried.
    func chain(of primary: ModelGroup) -> [ModelGroup] {
        var chain = [primary]
        var seen: Set<String> = [primary.name]
        for name in primary.fallbacks where !seen.contains(name) {
            if let group = groups[name] {
                chain.append(group)
                seen.insert(name)
            }
        }
        return chain
    }

    /// The refusal (`403 residency_violation`) when no deployment of `model` or its fallbacks
    /// satisfies `residency`; nil when one does (or the model is unknown: that is its own error).
    public func residencyRefusal(model: String, residency: Residency) -> GatewayError? {
        guard let primary = groups[model], !chain(of: primary).contains(where: { $0.deployments.contains(where: residency.allows) }) else { return nil }
        return GatewayError(status: 403, kind: .permission, code: .residencyViolation,
                            message: "No deployment of model '\(GatewayError.echo(model))'" + (primary.fallbacks.isEmpty ? "" : " or its fallbacks")
                                + " satisfies the residency policy \(residency.names) ("
                                + residency.rules.map(\.requirement).joined(separator: "; ") + "); nothing was sent.")
    }

    /// The client-facing error for an upstream failure.
    public static func clientError(for failure: UpstreamFailure, attempts: Int = 1) -> GatewayError {
        let suffix = attempts > 1 ? " (after \(attempts) attempts)" : ""
        let base = "Deployment '\(failure.deployment)' failed: \(failure.message)\(suffix)."
        switch failure.reason {
        case .status(429):
            var headers: [String: String] = [:]
            if let retryAfter = failure.retryAfter { headers["retry-after"] = String(Int(retryAfter.rounded(.up))) }
            return GatewayError(status: 429, kind: .rateLimited, code: .upstreamRateLimited, message: base, headers: headers)
        case .status(401), .status(403):
            return GatewayError(status: 502, kind: .upstream, code: .upstreamAuthFailed,
                                message: "Deployment '\(failure.deployment)' rejected the gateway's credentials (check the configured API key).")
        case .status(let code) where code >= 400 && code < 500:
            return GatewayError(status: code, kind: code == 404 ? .notFound : .invalidRequest, code: .upstreamRejectedRequest, message: base)
        case .status(503), .status(529):
            return GatewayError(status: 503, kind: .overloaded, code: .upstreamUnavailable, message: base)
        case .status:
            return GatewayError(status: 502, kind: .upstream, code: .upstreamError, message: base)
        case .timeout:
            return GatewayError(status: 504, kind: .timeout, code: .upstreamTimeout, message: base)
        case .connection:
            return GatewayError(status: 502, kind: .upstream, code: .upstreamConnectionFailed, message: base)
        case .malformed:
            return GatewayError(status: 502, kind: .upstream, code: .upstreamMalformedResponse, message: base)
        }
    }
}
