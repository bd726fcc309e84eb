/// A per-deployment circuit breaker as a plain state machine (no I/O, time passed in).
///
/// closed → open after `failureThreshold` failures within `window` seconds;
/// open → half-open once `cooldown` seconds passed, admitting one probe;
/// half-open → closed on the probe's success, back to open on its failure.
public struct CircuitBreaker: Sendable, Equatable {
    /// Thresholds and timings, in seconds.
    public struct Configuration: Sendable, Equatable {
        public var failureThreshold: Int
        public var window: Double
        public var cooldown: Double

        public init(failureThreshold: Int = 5, window: Double = 60, cooldown: Double = 30) {
            self.failureThreshold = failureThreshold
            self.window = window
            self.cooldown = cooldown
        }
    }

    /// Where the breaker stands.
    public enum State: Sendable, Equatable {
        case closed(failures: [Double])
        case open(until: Double)
        case halfOpen(probeInFlight: Bool)
    }

    public let configuration: Configuration
    public private(set) var state: State = .closed(failures: [])

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// A short name of the state, for health reports and metrics.
    public var stateName: String {
        switch state {
        case .closed: return "closed"
        case .open: return "open"
        case .halfOpen: return "half_open"
        }
    }

    /// Whether a request could be sent now, without claiming the half-open probe.
    public func isAvailable(now: Double) -> Bool {
        switch state {
        case .closed: return true
        case .open(let until): return now >= until
        case .halfOpen(let probeInFlight): return !probeInFlight
        }
    }

    /// Claims permission to send one request now; in half-open only one probe is admitted.
    public mutating func admit(now: Double) -> Bool {
        switch state {
        case .closed:
            return true
        case .open(let until):
            guard now >= until else { return false }
            state = .halfOpen(probeInFlight: true)
            return true
        case .halfOpen(let probeInFlight):
            guard !probeInFlight else { return false }
            state = .halfOpen(probeInFlight: true)
            return true
        }
    }

    /// Records a success: the breaker closes and forgets past failures.
    public mutating func recordSuccess(now: Double) {
        state = .closed(failures: [])
    }

    /// Records a failure that counts against the deployment.
    public mutating func recordFailure(now: Double) {
        switch state {
        case .closed(var failures):
            failures.removeAll { $0 <= now - configuration.window }
            failures.append(now)
            if failures.count >= configuration.failureThreshold {
                state = .open(until: now + configuration.cooldown)
            } else {
                state = .closed(failures: failures)
            }
        case .halfOpen:
            state = .open(until: now + configuration.cooldown)
        case .open:
            state = .open(until: now + configuration.cooldown)
        }
    }

    /// Releases a half-open probe that ended without saying anything about health (e.g. a client error).
    public mutating func releaseProbe() {
        if case .halfOpen(true) = state { state = .halfOpen(probeInFlight: false) }
    }
}

/// Retry timing: exponential backoff with jitter, honouring `Retry-After` up to a cap.
public struct RetryPolicy: Sendable, Equatable {
    /// Extra attempts after the first, per model group.
    public var retries: Int
    /// First backoff, seconds.
    public var initialBackoff: Double
    /// Largest backoff, seconds.
    public var maximumBackoff: Double
    /// Longest `Retry-After` the gateway will wait for; a longer one moves on instead.
    public var maximumRetryAfter: Double

    public init(retries: Int = 2, initialBackoff: Double = 0.2, maximumBackoff: Double = 5, maximumRetryAfter: Double = 10) {
        self.retries = retries
        self.initialBackoff = initialBackoff
        self.maximumBackoff = maximumBackoff
        self.maximumRetryAfter = maximumRetryAfter
    }

    /// The wait before retry number `attempt` (0-based), given a unit random number for jitter.
    ///
    /// Returns nil when the upstream asked for a longer pause than `maximumRetryAfter`.
    public func delay(beforeRetry attempt: Int, retryAfter: Double?, random: Double) -> Double? {
        let exponential = min(maximumBackoff, initialBackoff * Double(1 << min(attempt, 20)))
        let jittered = exponential / 2 + exponential / 2 * min(max(random, 0), 1)
        guard let retryAfter else { return jittered }
        if retryAfter > maximumRetryAfter { return nil }
        return max(jittered, retryAfter)
    }
}
