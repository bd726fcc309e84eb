/// Which guards run for whom, and what each risk level does.
public struct GuardPolicy: Sendable {
    public var name: String
    /// Empty: any. A request matches when every non-empty list contains its value.
    public var models: Set<String>
    public var teams: Set<String>
    public var roles: Set<String>
    public var keys: Set<String>
    /// Input guards in this policy, by name.
    public var inputGuards: [String]
    /// What each risk level does.
    public var actions: [RiskLevel: GuardAction]
    /// What is done with personal data and secrets the `pii` guard finds.
    public var personalData: PersonalDataAction
    /// Guards on the answer.
    public var output: OutputPolicy
    /// A system prompt put first in every request, which clients cannot remove.
    public var enforcedSystemPrompt: String?
    /// Context isolation for untrusted content (tool results, marked documents).
    public var spotlight: Spotlighting?

    /// The input guards of a policy that names none.
    public static let defaultInputGuards = ["validation", "images", "injection_rules", "injection_classifier"]

    public static let defaultActions: [RiskLevel: GuardAction] = [.critical: .block, .high: .block, .medium: .flag, .low: .flag]

    public init(name: String, models: Set<String> = [], teams: Set<String> = [], roles: Set<String> = [], keys: Set<String> = [],
                inputGuards: [String] = GuardPolicy.defaultInputGuards, actions: [RiskLevel: GuardAction] = GuardPolicy.defaultActions,
                personalData: PersonalDataAction = .mask, output: OutputPolicy = OutputPolicy(), enforcedSystemPrompt: String? = nil,
                spotlight: Spotlighting? = nil) {
        self.name = name
        self.models = models
        self.teams = teams
        self.roles = roles
        self.keys = keys
        self.inputGuards = inputGuards
        self.actions = actions
        self.personalData = personalData
        self.output = output
        self.enforcedSystemPrompt = enforcedSystemPrompt
        self.spotlight = spotlight
    }

    /// Whether this policy applies to a call.
    public func matches(model: String, team: String?, role: String, key: String?) -> Bool {
        (models.isEmpty || models.contains(model))
            && (teams.isEmpty || team.map(teams.contains) == true)
            && (roles.isEmpty || roles.contains(role))
            && (keys.isEmpty || key.map(keys.contains) == true)
    }

    public func action(for risk: RiskLevel) -> GuardAction { actions[risk] ?? .flag }

    /// What this policy does about `finding`: input limits always block; the rest by risk.
    public func action(for finding: GuardFinding) -> GuardAction {
        switch finding.category {
        case .invalidInput: return .block
        case .pii, .secret:
            switch personalData {
            case .flag: return .flag
            case .block: return .block
            case .mask, .remove, .hash, .tokenize: return .redact
            }
        default: return action(for: finding.risk)
        }
    }
}

/// The result of running a policy's guards: the strongest action and everything found.
public struct GuardOutcome: Sendable {
    public var policy: String
    /// nil: nothing was found.
    public var action: GuardAction?
    public var findings: [GuardFinding]
    /// What the policy does about each finding (parallel to `findings`).
    public var findingActions: [GuardAction]
    /// The finding that decided a block (the highest risk, then the highest score).
    public var decisive: GuardFinding?

    public var isBlocked: Bool { action == .block }
}

/// Runs guards as a cascade: cheaper tiers first; once a tier's findings block, costlier
/// tiers are not asked, and those that only settle doubts are asked only when an earlier tier
/// found something it only flagged.
public struct GuardCascade: Sendable {
    private let guards: [String: any InputGuard]

    public init(guards: [any InputGuard]) {
        var byName: [String: any InputGuard] = [:]
        for guardrail in guards { byName[guardrail.name] = guardrail }
        self.guards = byName
    }

    /// Names of the guards this cascade knows.
    public var guardNames: [String] { guards.keys.sorted() }

    public func run(_ input: GuardInput, policy: GuardPolicy) async -> GuardOutcome {
        let selected = policy.inputGuards.compactMap { guards[$0] }.sorted { $0.tier < $1.tier }
        var findings: [GuardFinding] = []
        var index = 0
        while index < selected.count {
            let tier = selected[index].tier
            while index < selected.count && selected[index].tier == tier {
                // A costly tier looks only where the cheaper ones were unsure: something was found and
                // only flagged (a redaction of personal data is a decision, not a doubt).
                if !selected[index].onlyWhenUncertain || findings.contains(where: { policy.action(for: $0) == .flag }) {
                    findings += await selected[index].inspect(input)
                }
                index += 1
            }
            if findings.contains(where: { policy.action(for: $0) == .block }) { break }
        }
        let actions = findings.map { policy.action(for: $0) }
        let decisive = findings.max { ($0.risk, $0.score) < ($1.risk, $1.score) }
        return GuardOutcome(policy: policy.name, action: actions.max(), findings: findings, findingActions: actions, decisive: decisive)
    }
}

extension GuardCascade {
    /// The built-in local guards: validation, the image checks, the injection rules, the
    /// injection classifier (the shipped model), PII and moderation; a policy runs those it lists.
    /// - Parameter injection: pass one instance to every policy's cascade: its rule trie is built once.
    public static func builtIn(validation: ValidationGuard = ValidationGuard(), images: ImageGuard = ImageGuard(),
                               injection: InjectionGuard = InjectionGuard(), moderation: ModerationGuard = ModerationGuard(),
                               classifier: ClassifierGuard? = try? ClassifierGuard.shipped.get(),
                               external: [any InputGuard] = []) -> GuardCascade {
        var guards: [any InputGuard] = [validation, images, injection, PIIGuard(), moderation]
        if let classifier { guards.append(classifier) }
        guards += external
        return GuardCascade(guards: guards)
    }
}

/// What happens to personal data and secrets found in a request.
public enum PersonalDataAction: String, Sendable, CaseIterable {
    /// Replaced by a placeholder naming the kind, `[EMAIL]`.
    case mask
    /// Removed.
    case remove
    /// Replaced by a keyed-hash pseudonym, `[EMAIL:3f9a0c1d2e4b]`: the same value gives the same pseudonym.
    case hash
    /// Replaced by a placeholder (`[EMAIL_1]`) that is turned back into the original in the
    /// answer, streams included: the upstream never sees the value, the client does.
    case tokenize
    /// The request is refused.
    case block
    /// Recorded only.
    case flag
}
