import PortcullisCore

/// Guardrails: which guards run for whom, and what each risk level does.
public struct GuardrailsConfiguration: Sendable, Equatable {
    /// One policy. The first whose filters all match a call applies; the built-in default otherwise.
    public struct Policy: Sendable, Equatable {
        public var name: String
        /// Empty: any.
        public var models: [String] = []
        public var teams: [String] = []
        public var roles: [String] = []
        public var keys: [String] = []
        /// Input guards by name. Default validation, images, injection_rules and injection_classifier.
        public var input: [String] = GuardPolicy.defaultInputGuards
        /// Action per risk level (block, redact, flag). Default block critical and high, flag the rest.
        public var actions: [RiskLevel: GuardAction] = [.critical: .block, .high: .block, .medium: .flag, .low: .flag]
        /// Input token limit (estimated). Default 4096.
        public var maxInputTokens: Int = 4096
        /// Messages per request. Default 256.
        public var maxMessages: Int = 256
        /// Characters per message. Default 100,000.
        public var maxMessageCharacters: Int = 100_000
        /// What the `pii` guard's findings do: mask, remove, hash (keyed pseudonym), tokenize (restored in the
        /// answer), block or flag. Default mask.
        public var pii: PersonalDataAction = .mask
        /// Output guards by name (pii, system_prompt_leak, moderation, format). Default none.
        public var output: [String] = []
        /// Whether an answer failing the `format` guard (not the JSON its request's
        /// `response_format` asked for) is asked for once more before it is withheld. Default true.
        public var formatRetry: Bool = true
        /// What the output `pii` guard does: mask, remove, block or flag. Default mask.
        public var outputPII: PersonalDataAction = .mask
        /// Bytes of a streamed answer held back for inspection. Default 64.
        public var streamHoldBack: Int = 64
        /// Whether a canary token is planted in the system prompt (leaks block). Default false.
        public var canary: Bool = false
        /// A system prompt put first in every request; clients cannot remove it.
        public var systemPrompt: String?
        /// Context isolation: delimit, datamark or base64; nil for none.
        public var spotlight: Spotlighting.Mode?
        /// Roles whose content is isolated. Default tool.
        public var spotlightRoles: [ChatRole] = [.tool]
        /// Whether `<document>…</document>` spans in user messages are isolated. Default true.
        public var spotlightDocuments: Bool = true

        /// What a sharp deviation of a key's or team's traffic does under this policy (nil: `guardrails.anomaly.action`).
        public var anomaly: AnomalyAction?

        public init(name: String) { self.name = name }
    }

    /// Whether guards run at all. Default true.
    public var enabled = true
    /// Policies in order; a built-in `default` applies when none matches.
    public var policies: [Policy] = []
    /// The policy for calls no other policy matches.
    public var defaultPolicy = Policy(name: "default")
    /// Key of keyed-hash pseudonyms (`pii: hash`), 32+ bytes; the same on every replica.
    public var pseudonymKey: String?

    /// A guard that asks a service: the LLM judge (a model group of this gateway, asked
    /// through its own routing) or OpenAI's moderations endpoint.
    public struct Remote: Sendable, Equatable {
        /// The judge's model group; the moderation model (default omni-moderation-latest).
        public var model: String?
        /// Moderations: the API base (default https://api.openai.com).
        public var apiBase: String?
        public var apiKey: String?
        /// Default 3000.
        public var timeoutMilliseconds = 3000
        /// What a failure or a late answer does: false (default) records it and lets the request on; true blocks.
        public var failClosed = false
        /// Asked only when a cheaper tier found something without blocking (default true), or on every request.
        public var onlyWhenUncertain = true
        /// Azure Content Safety: the API version (default 2024-09-01) and the severity (0–7) at which a
        /// category blocks (default 4; below it and above 0, medium risk).
        public var apiVersion: String?
        public var severity = 4
        /// Bedrock ApplyGuardrail: region, guardrail id and version (default DRAFT), and credentials
        /// (access key id in `api_key`).
        public var region: String?
        public var guardrailID: String?
        public var guardrailVersion = "DRAFT"
        public var secretAccessKey: String?
        public var sessionToken: String?

        public init() {}
    }

    /// Anomaly detection: thresholds and the default action.
    public var anomaly = AnomalySettings()

    /// What the `images` guard allows.
    public var images = ImageLimits()

    /// A BPE vocabulary in tiktoken's format (e.g. cl100k_base.tiktoken): input tokens are
    /// counted with it instead of estimated.
    public var tokenizer: String?
    /// `llm_judge`: the judge tier's settings (needed when a policy lists it).
    public var llmJudge: Remote?
    /// `openai_moderation`: the moderations adapter's settings (needed when a policy lists it).
    public var openAIModeration: Remote?
    /// `azure_content_safety`: text analysis and Prompt Shields (needed when a policy lists it).
    public var azureContentSafety: Remote?
    /// `bedrock_guardrail`: AWS Bedrock ApplyGuardrail, signed with SigV4 (needed when a policy lists it).
    public var bedrockGuardrail: Remote?

    public init() {}
}
