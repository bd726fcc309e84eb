import PortcullisAccess
import PortcullisCore
import PortcullisGuardrails
import PortcullisRouting
import PortcullisStorage
import PortcullisGuardrails

extension GatewayConfiguration.Guardrails.Policy {
    /// This policy as the guard library takes it: its rules and its validation limits.
    public func settings(tokenizer: BPETokenizer?) -> InputGuarding.PolicySettings {
        var risks: [RiskLevel: GuardAction] = [:]
        for (level, action) in actions {
            if let risk = RiskLevel(name: level), let parsed = GuardAction(rawValue: action) { risks[risk] = parsed }
        }
        let policy = GuardPolicy(name: name, models: Set(models), teams: Set(teams), roles: Set(roles), keys: Set(keys), inputGuards: input,
                                 actions: risks, personalData: PersonalDataAction(rawValue: pii) ?? .mask,
                                 output: OutputPolicy(guards: output, personalData: PersonalDataAction(rawValue: outputPII) ?? .mask,
                                                      holdBack: streamHoldBack, canary: canary, formatRetry: formatRetry),
                                 enforcedSystemPrompt: systemPrompt,
                                 spotlight: spotlight.flatMap(Spotlighting.Mode.init(rawValue:)).map { mode in
                                     Spotlighting(mode: mode, roles: Set(spotlightRoles.compactMap(ChatRole.init(rawValue:))),
                                                  markedDocuments: spotlightDocuments)
                                 })
        let validation = ValidationGuard(maximumTokens: maxInputTokens, maximumMessages: maxMessages,
                                         maximumMessageCharacters: maxMessageCharacters, tokenizer: tokenizer)
        return InputGuarding.PolicySettings(policy: policy, validation: validation)
    }
}
