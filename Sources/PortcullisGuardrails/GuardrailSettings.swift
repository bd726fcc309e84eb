import PortcullisCore

extension GuardrailsConfiguration.Policy {
    /// This policy as the guard library takes it: its rules and its validation limits.
    public func settings(tokenizer: BPETokenizer?) -> InputGuarding.PolicySettings {
        let policy = GuardPolicy(name: name, models: Set(models), teams: Set(teams), roles: Set(roles), keys: Set(keys), inputGuards: input,
                                 actions: actions, personalData: pii,
                                 output: OutputPolicy(guards: output, personalData: outputPII,
                                                      holdBack: streamHoldBack, canary: canary, formatRetry: formatRetry),
                                 enforcedSystemPrompt: systemPrompt,
                                 spotlight: spotlight.map { Spotlighting(mode: $0, roles: Set(spotlightRoles), markedDocuments: spotlightDocuments) })
        let validation = ValidationGuard(maximumTokens: maxInputTokens, maximumMessages: maxMessages,
                                         maximumMessageCharacters: maxMessageCharacters, tokenizer: tokenizer)
        return InputGuarding.PolicySettings(policy: policy, validation: validation)
    }
}
