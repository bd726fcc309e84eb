import Foundation
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

/// Anomaly detection around a chat request (issue 20, item 4): its key's and its team's
/// requests, tokens, refusals and guard blocks are compared with their own recent baselines
/// (`AnomalyDetector`); a sharp deviation is a guard event (guard `anomaly`, category
/// `anomaly`) with its risk and, per policy, a flag, a throttle (`429 anomaly_throttled`) or a
/// block (`403 anomaly_blocked`) of that key or team for the cool-down. Off: no wiring, no-op.
struct AnomalyStage: Sendable {
    let wiring: AnomalyWiring?
    let events: (any GuardEventSink)?
    /// Each policy's own action (`guardrails.policies[].anomaly`).
    let policyActions: [String: AnomalyAction]

    static func subjects(of principal: Principal) -> [String] {
        [principal.keyID.map { "key:" + $0 }, principal.teamID.map { "team:" + $0 }].compactMap { $0 }
    }

    /// Before admission: refuses a restrained principal; counts the request.
    func admit(_ principal: Principal, model: String, requestID: String) throws(GatewayError) {
        guard let wiring else { return }
        let now = Date().timeIntervalSince1970
        let subjects = Self.subjects(of: principal)
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
        observe(principal, .requests, amount: 1, policy: nil, model: model, requestID: requestID)
    }

    /// After the request's outcome: a limit refusal, a guard block, or the tokens it used.
    func outcome(of error: any Error, _ principal: Principal, policy: String?, model: String, requestID: String) {
        guard wiring != nil, let failure = error as? GatewayError else { return }
        if failure.code == .guardrailBlocked {
            observe(principal, .guardHits, amount: 1, policy: policy, model: model, requestID: requestID)
        } else if ErrorCode.limitRefusals.contains(failure.code.rawValue) {
            observe(principal, .refusals, amount: 1, policy: policy, model: model, requestID: requestID)
        }
    }

    func tokens(_ usage: Usage?, _ principal: Principal, policy: String?, model: String, requestID: String) {
        guard wiring != nil, let usage else { return }
        observe(principal, .tokens, amount: Double(usage.promptTokens + usage.completionTokens), policy: policy, model: model, requestID: requestID)
    }

    private func observe(_ principal: Principal, _ measure: AnomalyDetector.Measure, amount: Double, policy: String?, model: String, requestID: String) {
        guard let wiring else { return }
        let now = Date().timeIntervalSince1970
        for subject in Self.subjects(of: principal) {
            guard let deviation = wiring.detector.observe(subject, measure, amount: amount, now: now) else { continue }
            let action = policy.flatMap { policyActions[$0] } ?? wiring.detector.settings.action
            if action != .flag { wiring.restrain(subject, action, seconds: wiring.detector.settings.cooldownSeconds, now: now) }
            events?.record([GuardEvent(at: Int64(now), requestID: requestID, policy: policy ?? "default", guardName: "anomaly", category: "anomaly",
                                       risk: deviation.risk.description, score: min(1, deviation.count / max(1, deviation.baseline * 100)),
                                       action: action.rawValue, reason: deviation.reason, model: model, keyID: principal.keyID,
                                       userID: principal.userID, teamID: principal.teamID)])
        }
    }
}
