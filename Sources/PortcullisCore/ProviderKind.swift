/// The upstream wire formats the gateway speaks.
public enum ProviderKind: String, Sendable, CaseIterable {
    /// api.openai.com.
    case openai
    /// Any server speaking OpenAI's API at a custom `api_base` (vLLM, LM Studio, …).
    case openaiCompatible = "openai_compatible"
    /// vLLM's OpenAI-compatible server.
    case vllm
    /// Ollama's OpenAI-compatible endpoint.
    case ollama
    /// Azure OpenAI deployments.
    case azure
    /// Anthropic's Messages API.
    case anthropic
    /// The built-in deterministic demo model; never leaves the process.
    case demo

    /// The base URL used when the configuration gives none.
    public var defaultAPIBase: String? {
        switch self {
        case .openai: return "https://api.openai.com/v1"
        case .anthropic: return "https://api.anthropic.com"
        case .ollama: return "http://127.0.0.1:11434/v1"
        case .vllm: return "http://127.0.0.1:8000/v1"
        case .openaiCompatible, .azure, .demo: return nil
        }
    }
}
