import Foundation
import Synchronization

/// What a principal's sharp deviation from its own baseline does (`guardrails.anomaly.action`,
/// or a policy's `anomaly`).
public enum AnomalyAction: String, Sendable, CaseIterable {
    /// A guard event only.
    case flag
    /// The principal's requests are refused with `429 anomaly_throttled` for the cool-down.
    case throttle
    /// The principal's requests are refused with `403 anomaly_blocked` for the cool-down.
    case block
}

/// `guardrails.anomaly`: the thresholds of the anomaly detector.
public struct AnomalySettings: Sendable, Equatable {
    /// Off: nothing is counted. Default on.
    public var enabled = true
    /// How many times its baseline a principal's minute must reach to deviate. Default 10.
    public var factor: Double = 10
    /// The least count in a minute that can deviate, per measure (so a quiet principal's few
    /// requests never do). Defaults: 120 requests, 50,000 tokens, 20 refusals, 5 guard blocks.
    public var minimums: [AnomalyDetector.Measure: Double] = [.requests: 120, .tokens: 50_000, .refusals: 20, .guardHits: 5]
    /// What a deviation does where the policy does not say. Default flag.
    public var action: AnomalyAction = .flag
    /// How long a throttle or block lasts. Default 60 s.
    public var cooldownSeconds: Double = 60

    public init() {}
}

/// Compares each principal's (each key's and each team's) traffic with its own recent past:
/// per measure, the count of the current minute against an exponentially weighted baseline of
/// its earlier minutes (each minute weighs 10% against the rest, so about the last ten minutes
/// count). A minute deviates once its count reaches both the measure's minimum and `factor`
/// times the baseline; it is reported once per minute, principal and measure. One lock, short
/// sections; per replica (each replica judges the traffic it serves).
public final class AnomalyDetector: Sendable {
    /// What is counted.
    public enum Measure: String, Sendable, CaseIterable {
        case requests
        case tokens
        /// Requests that limits or budgets refused.
        case refusals
        /// Requests that a guardrail blocked.
        case guardHits = "guard_hits"
    }

    /// A minute that deviated.
    public struct Deviation: Sendable, Equatable {
        public var subject: String
        public var measure: Measure
        public var count: Double
        public var baseline: Double
        /// Medium at the threshold; high at three times it, and for guard blocks and refusals.
        public var risk: RiskLevel

        /// Words for the guard event (ids and numbers only).
        public var reason: String {
            String(format: "%@: %.0f %@ in a minute against a baseline of %.1f", subject, count, measure.rawValue, baseline)
        }
    }

    struct Series {
        var minute: Int64
        var count: Double = 0
        /// The weighted sum of past minutes and the sum of their weights: their ratio is the
        /// baseline, unbiased from the first minute on (a plain average starting at zero would
        /// call a new principal's second ordinary minute a deviation).
        var weighted: Double = 0
        var weights: Double = 0
        var reported = false
        var baseline: Double { weights > 0 ? weighted / weights : 0 }

        mutating func fold(_ count: Double) {
            weighted = weighted * (1 - AnomalyDetector.weight) + count * AnomalyDetector.weight
            weights = weights * (1 - AnomalyDetector.weight) + AnomalyDetector.weight
        }
    }

    public let settings: AnomalySettings
    private let state = Mutex<[String: Series]>([:])
    /// Principals followed at most (the least recently seen are forgotten past it).
    static let capacity = 100_000
    static let weight = 0.1

    public init(settings: AnomalySettings = AnomalySettings()) {
        self.settings = settings
    }

    /// Adds `amount` to `subject`'s `measure` at `now` (seconds); returns the deviation when
    /// this makes the minute deviate for the first time.
    public func observe(_ subject: String, _ measure: Measure, amount: Double = 1, now: Double = Date().timeIntervalSince1970) -> Deviation? {
        guard settings.enabled, amount > 0 else { return nil }
        let minute = Int64(now / 60)
        let key = subject + "\u{0}" + measure.rawValue
        let minimum = settings.minimums[measure] ?? 1
        return state.withLock { series in
            if series.count >= Self.capacity && series[key] == nil {
                // Past the bound: forget every series whose minute is over (they are baselines of the quiet).
                series = series.filter { $0.value.minute >= minute }
            }
            var current = series[key] ?? Series(minute: minute)
            if current.minute < minute {
                // Each past minute folds into the baseline; minutes without traffic fold in as zeros.
                let gap = min(minute - current.minute, 60)
                current.fold(current.count)
                for _ in 1..<max(1, gap) { current.fold(0) }
                current.minute = minute
                current.count = 0
                current.reported = false
            }
            current.count += amount
            defer { series[key] = current }
            let threshold = max(minimum, settings.factor * current.baseline)
            guard !current.reported, current.count >= threshold else { return nil }
            current.reported = true
            let severe = current.count >= 3 * threshold || measure == .guardHits || measure == .refusals
            return Deviation(subject: subject, measure: measure, count: current.count, baseline: current.baseline, risk: severe ? .high : .medium)
        }
    }
}
