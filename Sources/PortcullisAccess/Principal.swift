import PortcullisCore

/// Who is calling, once a credential has been checked: the identity every later stage
/// (authorisation, limits, budgets, audit) reads from the request context.
public struct Principal: Sendable, Equatable {
    /// How the caller proved who they are.
    public enum Credential: Sendable, Equatable {
        /// No credential: allowed only when the gateway runs without authentication (demo).
        case anonymous
        /// The bootstrap master key.
        case masterKey
        /// A virtual API key, by its public id.
        case apiKey(id: String)
        /// An OIDC bearer token from `issuer`.
        case token(issuer: String)
        /// A verified TLS client certificate with this subject.
        case certificate(subject: String)
    }

    public var credential: Credential
    /// The user id (key owner, or the token's subject).
    public var userID: String?
    public var teamID: String?
    public var role: Role
    /// Whether the caller authenticated with more than one factor.
    public var multiFactor: Bool
    /// Models this caller may use; empty means all.
    public var allowedModels: [String]
    /// The credential's own limits (keys carry them; tokens do not).
    public var requestsPerMinute: Int64?
    public var tokensPerMinute: Int64?
    public var maximumConcurrency: Int64?
    /// The key's own spend cap in micro-units of the price currency.
    public var budgetMicros: Int64?
    /// The keys that minted this key, issuer first: their budgets pay for its calls too.
    public var issuerChain: [String] = []
    /// When the credential stops working (unix seconds), if known.
    public var expiresAt: Int64?

    public init(credential: Credential, userID: String?, teamID: String?, role: Role, multiFactor: Bool, allowedModels: [String] = [],
                requestsPerMinute: Int64? = nil, tokensPerMinute: Int64? = nil, maximumConcurrency: Int64? = nil, budgetMicros: Int64? = nil) {
        self.credential = credential
        self.userID = userID
        self.teamID = teamID
        self.role = role
        self.multiFactor = multiFactor
        self.allowedModels = allowedModels
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
        self.maximumConcurrency = maximumConcurrency
        self.budgetMicros = budgetMicros
    }

    /// The principal of a virtual API key.
    public init(key: APIKeyRecord) {
        self.init(credential: .apiKey(id: key.keyID), userID: key.userID, teamID: key.teamID, role: key.role,
                  multiFactor: false, allowedModels: key.allowedModels, requestsPerMinute: key.requestsPerMinute,
                  tokensPerMinute: key.tokensPerMinute, maximumConcurrency: key.maximumConcurrency, budgetMicros: key.budgetMicros)
        self.issuerChain = key.issuerChain
        self.expiresAt = key.expiresAt
    }

    /// The master key's principal: an admin, treated as multi-factor (it is a bootstrap secret).
    public static let master = Principal(credential: .masterKey, userID: "master", teamID: nil, role: .admin, multiFactor: true)

    /// The caller of a gateway that requires no credentials.
    public static let anonymous = Principal(credential: .anonymous, userID: nil, teamID: nil, role: .user, multiFactor: false)

    /// The API key id, when the caller used one.
    public var keyID: String? {
        if case .apiKey(let id) = credential { return id }
        return nil
    }

    /// Whether the caller may use `model`.
    public func mayUse(model: String) -> Bool { allowedModels.isEmpty || allowedModels.contains(model) }

    /// A short description for logs and audit: never a secret.
    public var actor: String {
        switch credential {
        case .anonymous: return "anonymous"
        case .masterKey: return "master-key"
        case .apiKey(let id): return "key:\(id)"
        case .token(let issuer): return "token:\(issuer)#\(userID ?? "?")"
        case .certificate(let subject): return "certificate:\(subject)"
        }
    }
}
