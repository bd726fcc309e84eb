/// Every stable error code a client can see, in one place: clients match on these strings,
/// so a case is never renamed or reused for another meaning. The README's error table lists each.
public enum ErrorCode: String, Sendable, CaseIterable {
    /// 400: The body is not JSON; the message gives line, column and byte offset.
    case invalidJson = "invalid_json"
    /// 400: A field is missing or malformed; `param` names it.
    case invalidParameter = "invalid_parameter"
    /// 400: The request is invalid in a way no other code names.
    case badRequest = "bad_request"
    /// 400: The body cannot be read: broken chunked framing, or fewer bytes than its Content-Length.
    case malformedBody = "malformed_body"
    /// 400: The model cannot do this (e.g. `n > 1` on Anthropic).
    case unsupportedOperation = "unsupported_operation"
    /// 400: An input guard of the caller's policy blocked the request.
    case guardrailBlocked = "guardrail_blocked"
    /// 405: The route does not take this method.
    case methodNotAllowed = "method_not_allowed"
    /// 401: A credential is required and missing, or the key is wrong, expired or revoked.
    case invalidApiKey = "invalid_api_key"
    /// 401: An OIDC token failed verification.
    case invalidToken = "invalid_token"
    /// 403: The caller's role may not do this.
    case permissionDenied = "permission_denied"
    /// 403: The credential may not use the model.
    case modelNotAllowed = "model_not_allowed"
    /// 403: The role needs multi-factor authentication.
    case mfaRequired = "mfa_required"
    /// 403: The client address is refused by the IP policy.
    case ipNotAllowed = "ip_not_allowed"
    /// 403: A key minted by a developer would have more than the developer's own credential.
    case exceedsIssuerBounds = "exceeds_issuer_bounds"
    /// 404: Admin API: no such record.
    case notFound = "not_found"
    /// 404: Admin API: no such key, or not one the caller may see.
    case keyNotFound = "key_not_found"
    /// 404: Admin API: no such user.
    case userNotFound = "user_not_found"
    /// 404: Admin API: no such team.
    case teamNotFound = "team_not_found"
    /// 404: No such model group.
    case modelNotFound = "model_not_found"
    /// 404: No such route.
    case routeNotFound = "route_not_found"
    /// 409: The key is revoked and cannot be rotated.
    case keyRevoked = "key_revoked"
    /// 413: The body is over the configured limit.
    case requestTooLarge = "request_too_large"
    /// 429: A requests, tokens or concurrency limit is reached; `Retry-After` says when to retry.
    case rateLimitExceeded = "rate_limit_exceeded"
    /// 429: The request alone needs more tokens than a tokens-per-minute limit allows.
    case requestExceedsLimit = "request_exceeds_limit"
    /// 429: A budget has no room for the request's worst case.
    case budgetExceeded = "budget_exceeded"
    /// 429: The upstream kept answering 429.
    case upstreamRateLimited = "upstream_rate_limited"
    /// 400: The upstream refused the request itself (its 4xx status is kept).
    case upstreamRejectedRequest = "upstream_rejected_request"
    /// 502: The upstream failed after retries.
    case upstreamError = "upstream_error"
    /// 502: The upstream could not be reached.
    case upstreamConnectionFailed = "upstream_connection_failed"
    /// 502: The upstream's answer could not be read.
    case upstreamMalformedResponse = "upstream_malformed_response"
    /// 502: The upstream rejected the gateway's credentials.
    case upstreamAuthFailed = "upstream_auth_failed"
    /// 500: An unexpected failure; logged, nothing internal exposed.
    case internalError = "internal_error"
    /// 500: The shared state answered an admission out of order.
    case admissionMismatch = "admission_mismatch"
    /// 503: The upstream is overloaded.
    case upstreamUnavailable = "upstream_unavailable"
    /// 503: Every circuit of the model group (and its fallbacks) is open.
    case noHealthyDeployment = "no_healthy_deployment"
    /// 503: API keys cannot be checked: the database is unreachable.
    case credentialStoreUnavailable = "credential_store_unavailable"
    /// 503: The gateway's database is unreachable.
    case storageUnavailable = "storage_unavailable"
    /// 503: The audit log cannot record the request and `audit.fail_closed` is on: nothing was sent upstream.
    case auditUnavailable = "audit_unavailable"
    /// 503: The request's payload must be stored encrypted, its data key cannot be had from the
    /// key service, and `kms.fail_closed` is on: nothing was sent upstream.
    case keyServiceUnavailable = "kms_unavailable"
    /// 503: A data subject's erasure could not remove its entries from the shared cache (Redis unreachable); nothing else was erased yet.
    case cacheUnavailable = "cache_unavailable"
    /// 429: The key's or team's traffic deviated sharply from its baseline and the policy throttles it for the cool-down (`Retry-After`).
    case anomalyThrottled = "anomaly_throttled"
    /// 403: The key's or team's traffic deviated sharply from its baseline and the policy blocks it for the cool-down (`Retry-After`).
    case anomalyBlocked = "anomaly_blocked"
    /// 403: No deployment of the model (or its fallbacks) satisfies the residency or BAA rules that apply to the caller; nothing was sent.
    case residencyViolation = "residency_violation"
    /// 500: A stored payload does not decrypt under its key (corrupted, or another key); the message names its audit record.
    case payloadUnreadable = "payload_unreadable"
    /// 504: A time limit passed; the message names the phase.
    case upstreamTimeout = "upstream_timeout"
}

extension ErrorCode {
    /// The refusals of a rate limit, token limit or budget: what the limit-refusal metric and the
    /// admin API's violators count.
    public static let limitRefusals: Set<String> = [rateLimitExceeded.rawValue, requestExceedsLimit.rawValue, budgetExceeded.rawValue]
}
