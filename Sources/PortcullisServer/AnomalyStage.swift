import Foundation
import PortcullisAudit
import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import Synchronization

/// What outlives a configuration reload of the anomaly detection: the detector's baselines and
/// the principals under a throttle or block.
public final class AnomalyWiring: Sendable {
    let detector: AnomalyDetector
    private let restraints = Mutex<[String: (action: AnomalyAction, until: Double)]>([:])

    public init(settings: AnomalySettings) {
        detector = AnomalyDetector(settings: settings)
    }

    func restrain(_ subject: String, _ action: AnomalyAction, seconds: Double, now: Double) {
        restraints.withLock { $0[subject] = (action, now + seconds) }
    }

    /// The strongest restraint in force on any of `subjects`, with the seconds it has left.
    func restraint(on subjects: [String], now: Double) -> (action: AnomalyAction, remaining: Double)? {
        restraints.withLock { restraints in
            var found: (action: AnomalyAction, remaining: Double)?
            for subject in subjects {
                guard let restraint = restraints[subject] else { continue }
                if restraint.until <= now {
                    restraints[subject] = nil
                    continue
                }
                if found == nil || restraint.action == .block { found = (restraint.action, restraint.until - now) }
            }
            return found
        }
    }
}

/// Anomaly detection around a request (chat, completion or embedding; issue 20, item 4): its
/// key's and its team's requests, tokens, refusals and guard blocks are compared with their own
/// recent baselines (`AnomalyDetector`); a sharp deviation is a guard event (guard `anomaly`,
/// category `anomaly`) in the guard-event log and on the request's audit record, with its risk
/// and, per policy, a flag, a throttle (`429 anomaly_throttled`) or a block (`403
/// anomaly_blocked`) of that key or team for the cool-down. Off: no wiring, no-op.
struct AnomalyStage: Sendable {
    let wiring: AnomalyWiring?
    let events: (any GuardEventSink)?
    /// Each policy's own action (`guardrails.policies[].anomaly`).
    let policyActions: [String: AnomalyAction]

    /// Whose request is observed, and where its findings are recorded.
    struct Observed: Sendable {
        let principal: Principal
        let model: String
        let requestID: String
        let audit: RequestAudit?

        init(_ principal: Principal, model: String, requestID: String, audit: RequestAudit?) {
            self.principal = principal
            self.model = model
            self.requestID = requestID
            self.audit = audit
        }

        init(_ model: String, context: GatewayRequestContext) {
            self.init(context.principal, model: model, requestID: context.requestID, audit: context.audit)
        }
    }

    static func subjects(of principal: Principal) -> [String] {
        [principal.keyID.map { "key:" + $0 }, principal.teamID.map { "team:" + $0 }].compactMap { $0 }
    }

    /// Before admission: refuses a restrained principal; counts the request.
    func admit(_ observed: Observed) throws(GatewayError) {
        guard let wiring else { return }
        let now = Date().timeIntervalSince1970
        let subjects = Self.subjects(of: observed.principal)
        if let (action, remaining) = wiring.restraint(on: subjects, now: now) {
            let retry = String(Int(remaining.rounded(.up)))
            if action == .block {
                throw GatewayError(status: 403, kind: .permission, code: .anomalyBlocked,
                                   message: "Requests of this key or team are blocked for \(retry) s: their traffic deviated sharply from its baseline.",
                                   headers: ["Retry-After": retry])
            }
            throw GatewayError(status: 429, kind: .rateLimited, code: .anomalyThrottled,
                               message: "Requests of this key or team are throttled for \(retry) s: their traffic deviated sharply from its baseline.",
                               headers: ["Retry-After": retry])
        }
        observe(observed, .requests, amount: 1, policy: nil)
    }

    /// After the request's outcome: a limit refusal, a guard block, or the tokens it used.
    func outcome(of error: any Error, _ observed: Observed, policy: String? = nil) {
        guard wiring != nil, let failure = error as? GatewayError else { return }
        if failure.code == .guardrailBlocked {
            observe(observed, .guardHits, amount: 1, policy: policy)
        } else if ErrorCode.limitRefusals.contains(failure.code.rawValue) {
            observe(observed, .refusals, amount: 1, policy: policy)
        }
    }

    func tokens(_ usage: Usage?, _ observed: Observed, policy: String? = nil) {
        guard let usage else { return }
        tokens(Int64(usage.promptTokens + usage.completionTokens), observed, policy: policy)
    }

    func tokens(_ count: Int64, _ observed: Observed, policy: String? = nil) {
        guard wiring != nil else { return }
        observe(observed, .tokens, amount: Double(count), policy: policy)
    }

    /// For a stream, whose tokens are known when its meter settles it.
    func tokenObserver(_ observed: Observed, policy: String? = nil) -> (@Sendable (Int64) -> Void)? {
        guard wiring != nil else { return nil }
        return { [self] count in tokens(count, observed, policy: policy) }
    }

    private func observe(_ observed: Observed, _ measure: AnomalyDetector.Measure, amount: Double, policy: String?) {
        guard let wiring else { return }
        let now = Date().timeIntervalSince1970
        let principal = observed.principal
        for subject in Self.subjects(of: principal) {
            guard let deviation = wiring.detector.observe(subject, measure, amount: amount, now: now) else { continue }
            let action = policy.flatMap { policyActions[$0] } ?? wiring.detector.settings.action
            if action != .flag { wiring.restrain(subject, action, seconds: wiring.detector.settings.cooldownSeconds, now: now) }
            let event = GuardEvent(at: Int64(now), requestID: observed.requestID, policy: policy ?? "default", guardName: "anomaly", category: "anomaly",
                                   risk: deviation.risk.description, score: min(1, deviation.count / max(1, deviation.baseline * 100)),
                                   action: action.rawValue, reason: deviation.reason, model: observed.model, keyID: principal.keyID,
                                   userID: principal.userID, teamID: principal.teamID)
            events?.record([event])
            observed.audit?.record([event])
        }
    }
}
