/// Requests, tokens and concurrency allowed to one subject.
public struct RateLimits: Sendable, Equatable {
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var concurrency: Int64?

    public init(requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil, concurrency: Int64? = nil) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.concurrency = concurrency
    }

    /// These limits, with unset ones taken from `fallback`.
    public func over(_ fallback: RateLimits) -> RateLimits {
        RateLimits(requestsPerMinute: requestsPerMinute ?? fallback.requestsPerMinute, tokensPerMinute: tokensPerMinute ?? fallback.tokensPerMinute,
                   concurrency: concurrency ?? fallback.concurrency)
    }
}
