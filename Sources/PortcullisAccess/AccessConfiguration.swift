import PortcullisCore

/// Who may call the gateway, and how credentials are checked.
public struct AuthConfiguration: Sendable, Equatable {
    /// The bootstrap credential: acts as an admin (with MFA) on every route.
    /// Default: the `PORTCULLIS_MASTER_KEY` environment variable.
    public var masterKey: String?
    /// Whether every model and admin route requires a credential. Default: true when a
    /// master key, an OIDC issuer or any API key exists; the embedded default with none of
    /// them serves the demo anonymously.
    public var required: Bool?
    /// Secret (32+ bytes) keyed into every stored API key hash. Default: the
    /// `PORTCULLIS_KEY_PEPPER` environment variable; with SQLite and none set, one is
    /// generated once and kept in a `0600` file beside the database.
    public var keyPepper: String?
    /// Seconds a validated key stays cached in process. Default 60.
    public var keyCacheSeconds: Double = 60
    /// Seconds a rotated key's old secret keeps working. Default 86400 (one day).
    public var rotationGraceSeconds: Double = 86_400
    /// Whether revoking a developer's key also revokes the keys minted with it. Default true.
    public var revokeMintedKeysWithIssuer: Bool = true
    /// When the database cannot be reached: `true` keeps serving credentials validated
    /// before (from the cache), `false` refuses every key until it returns. Default true.
    public var failOpen: Bool = true
    /// OIDC issuers whose bearer tokens are accepted.
    public var oidc: [OIDCIssuerConfiguration] = []
    /// Roles whose callers must have used multi-factor authentication. Default `[admin]`.
    public var mfaRequiredRoles: [Role] = [.admin]
    /// Client certificate subjects that authenticate as a principal (service-to-service callers,
    /// with `server.tls.client_auth`). Default none.
    public var certificatePrincipals: [CertificatePrincipalConfiguration] = []

    public init(masterKey: String? = nil) { self.masterKey = masterKey }
}

/// A verified client certificate's subject, and who it makes the caller: a principal like a
/// key's, with its own models and limits. A certificate is one factor (what the caller holds).
public struct CertificatePrincipalConfiguration: Sendable, Equatable {
    /// The subject as `CN=…,OU=…,O=…`, most specific first (RFC 4514), compared exactly.
    public var subject: String
    public var user: String?
    public var team: String?
    /// Default `user`.
    public var role: Role = .user
    /// Models it may use; empty means all.
    public var models: [String] = []
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var maximumConcurrency: Int64?

    public init(subject: String) { self.subject = subject }

    /// The principal a request with this certificate acts as.
    public var principal: Principal {
        Principal(credential: .certificate(subject: subject), userID: user ?? subject, teamID: team, role: role, multiFactor: false,
                  allowedModels: models, requestsPerMinute: requestsPerMinute, tokensPerMinute: tokensPerMinute,
                  maximumConcurrency: maximumConcurrency)
    }
}

/// One OpenID Connect issuer.
public struct OIDCIssuerConfiguration: Sendable, Equatable {
    /// The `iss` tokens must carry; the discovery document lives under it.
    public var issuer: String
    /// Accepted `aud` values (one must match).
    public var audiences: [String]
    /// JWKS location; default: `jwks_uri` from `<issuer>/.well-known/openid-configuration`.
    public var jwksURL: String?
    /// Accepted signature algorithms. Default RS256, ES256, EdDSA.
    public var algorithms: [String] = ["RS256", "ES256", "EdDSA"]
    /// Claim paths (dotted) searched for role names, in order.
    public var roleClaims: [String] = ["realm_access.roles", "roles", "groups"]
    /// Claim value → role; a claim value equal to a role name maps to it by default.
    public var roleMap: [String: Role] = [:]
    /// Role given to a valid token that maps to none. Default `user`.
    public var defaultRole: Role = .user
    /// Claim path of the team. Default `team`.
    public var teamClaim: String = "team"
    /// Claim path of the user id. Default `sub`.
    public var userClaim: String = "sub"
    /// Longest accepted token lifetime (`exp - iat`), seconds, 1–24 h. Default 3600.
    public var maximumLifetimeSeconds: Double = 3600
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, seconds. Default 30.
    public var leewaySeconds: Double = 30
    /// `amr` values that prove multi-factor authentication.
    public var mfaMethods: [String] = ["mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "pin"]
    /// `acr` values that prove multi-factor authentication.
    public var mfaContexts: [String] = []
    /// PEM file of authorities trusted for the issuer's https endpoints. Default: the system's.
    public var caFile: String?

    public init(issuer: String, audiences: [String]) {
        self.issuer = issuer
        self.audiences = audiences
    }
}

/// Rate limits and budgets.
public struct LimitsConfiguration: Sendable, Equatable {
    /// Per-role defaults, applied to a caller of that role unless the key, user or team sets its own.
    /// Users 120 req/min, developers 300, admins 1200, auditors 60.
    public var roles: [Role: RateLimits] = [
        .user: RateLimits(requestsPerMinute: 120, tokensPerMinute: 200_000, concurrency: 20),
        .developer: RateLimits(requestsPerMinute: 300, tokensPerMinute: 1_000_000, concurrency: 50),
        .admin: RateLimits(requestsPerMinute: 1200, tokensPerMinute: 5_000_000, concurrency: 200),
        .auditor: RateLimits(requestsPerMinute: 60, tokensPerMinute: 0, concurrency: 10),
    ]
    /// Limits per public model, across all callers.
    public var models: [String: RateLimits] = [:]
    /// Output tokens assumed for a budget reservation when the request sets no `max_tokens`. Default 4096.
    public var reserveOutputTokens: Int = 4096

    public init() {}
}

/// Which client addresses may call.
public struct IPPolicyConfiguration: Sendable, Equatable {
    /// When not empty, only these CIDRs may call.
    public var allow: [String] = []
    /// These CIDRs may never call (checked before `allow`).
    public var deny: [String] = []
    /// When not empty, only these CIDRs may call `/admin` routes.
    public var adminAllow: [String] = []
    /// Peers whose `X-Forwarded-For` is believed.
    public var trustedProxies: [String] = []

    public init() {}
}
