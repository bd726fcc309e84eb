import PortcullisCore

/// The whole gateway configuration, decoded and validated once at start-up.
///
/// Every field has a documented default, so an empty file (or none) is a working gateway.
public struct GatewayConfiguration: Sendable, Equatable {
    /// Where and how the gateway listens.
    public struct Server: Sendable, Equatable {
        /// Interface to bind. Default `127.0.0.1`.
        public var host: String = "127.0.0.1"
        /// Port to bind; 0 picks a free one. Default 4000.
        public var port: Int = 4000
        /// Largest request body accepted, bytes. Default 10 MiB.
        public var maxBodyBytes: Int = 10 * 1024 * 1024
        /// TLS (1.3 only); plain HTTP when absent.
        public var tls: TLS?
        /// Offer HTTP/2 (negotiated by ALPN, so it needs TLS). Default true.
        public var http2: Bool = true
        /// Seconds to let in-flight requests finish on shutdown. Default 30.
        public var shutdownGraceSeconds: Double = 30
        /// Seconds from a connection's first byte to a complete request head. Default 10.
        public var headerTimeoutSeconds: Double = 10
        /// Seconds a request body may go without a byte. Default 30.
        public var bodyIdleTimeoutSeconds: Double = 30
        /// Seconds a kept-alive connection may wait for its next request. Default 75.
        public var keepAliveIdleTimeoutSeconds: Double = 75
        /// Client connections open at once; past it the oldest idle one is closed, else the new one refused. Default 10000.
        public var maximumConnections: Int = 10_000

        public init() {}
    }

    /// Certificate and key files in PEM.
    public struct TLS: Sendable, Equatable {
        public var certificatePath: String
        public var privateKeyPath: String

        public init(certificatePath: String, privateKeyPath: String) {
            self.certificatePath = certificatePath
            self.privateKeyPath = privateKeyPath
        }
    }

    /// Who may call the gateway, and how credentials are checked.
    public struct Auth: Sendable, Equatable {
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
        public var oidc: [OIDCIssuer] = []
        /// Roles whose callers must have used multi-factor authentication. Default `[admin]`.
        public var mfaRequiredRoles: [String] = ["admin"]

        public init(masterKey: String? = nil) { self.masterKey = masterKey }
    }

    /// One OpenID Connect issuer.
    public struct OIDCIssuer: Sendable, Equatable {
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
        public var roleMap: [String: String] = [:]
        /// Role given to a valid token that maps to none. Default `user`.
        public var defaultRole: String = "user"
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

    /// Where durable and shared state live.
    public struct Storage: Sendable, Equatable {
        /// `sqlite:PATH` (or a bare path) or `postgres://user:password@host:port/database`.
        /// Default `sqlite:portcullis.db`.
        public var database: String = "sqlite:portcullis.db"
        /// PostgreSQL connections per replica. Default 10.
        public var poolSize: Int = 10
        /// `redis://[:password@]host:port[/db]`, `rediss://` for TLS, or
        /// `redis-sentinel://host:port[,host:port]/master`. Absent: state lives in this process.
        public var redis: String?
        /// Seconds between batched usage and spend writes. Default 1.
        public var flushIntervalSeconds: Double = 1
        /// Seconds between checks that the database and Redis answer (readiness, metrics,
        /// and when to leave the fail-open and per-replica modes). Default 2.
        public var probeIntervalSeconds: Double = 2
        /// Seconds a database operation may take, waiting for a connection included, before
        /// it fails as unavailable. Default 5.
        public var timeoutSeconds: Double = 5
        /// With Redis: each replica leases a limit's 1/`leaseFraction` ahead and admits locally
        /// while the lease lasts (no round trip per request); 0 leases nothing (every admission
        /// exact, one round trip). Limits below it are always exact. Default 16.
        public var leaseFraction: Int = 16
        /// Seconds an unused lease is kept before it is given back. Default 1.
        public var leaseSeconds: Double = 1

        public init() {}
    }

    /// Rate limits and budgets.
    public struct Limits: Sendable, Equatable {
        /// Per-role defaults, applied to a caller of that role unless the key, user or team sets its own.
        /// Users 120 req/min, developers 300, admins 1200, auditors 60.
        public var roles: [String: RateLimits] = [
            "user": RateLimits(requestsPerMinute: 120, tokensPerMinute: 200_000, concurrency: 20),
            "developer": RateLimits(requestsPerMinute: 300, tokensPerMinute: 1_000_000, concurrency: 50),
            "admin": RateLimits(requestsPerMinute: 1200, tokensPerMinute: 5_000_000, concurrency: 200),
            "auditor": RateLimits(requestsPerMinute: 60, tokensPerMinute: 0, concurrency: 10),
        ]
        /// Limits per public model, across all callers.
        public var models: [String: RateLimits] = [:]
        /// Output tokens assumed for a budget reservation when the request sets no `max_tokens`. Default 4096.
        public var reserveOutputTokens: Int = 4096

        public init() {}
    }

    /// Which client addresses may call.
    public struct IPPolicy: Sendable, Equatable {
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

    /// Per-phase upstream time limits, seconds.
    public struct Timeouts: Sendable, Equatable {
        public var connect: Double = 5
        public var firstByte: Double = 60
        public var total: Double = 600
        public var streamIdle: Double = 60

        public init() {}
    }

    /// Retries, backoff, circuit breakers and health checks.
    public struct Routing: Sendable, Equatable {
        /// Extra attempts per model group after the first. Default 2.
        public var retries: Int = 2
        /// First backoff, milliseconds. Default 200.
        public var initialBackoffMilliseconds: Double = 200
        /// Largest backoff, milliseconds. Default 5000.
        public var maximumBackoffMilliseconds: Double = 5000
        /// Longest `Retry-After` honoured before moving on, seconds. Default 10.
        public var maximumRetryAfterSeconds: Double = 10
        /// Failures within the window that open a deployment's circuit. Default 5.
        public var circuitFailureThreshold: Int = 5
        /// Window for counting failures, seconds. Default 60.
        public var circuitWindowSeconds: Double = 60
        /// How long a circuit stays open before a probe, seconds. Default 30.
        public var circuitCooldownSeconds: Double = 30
        /// Seconds between active health checks; 0 disables them. Default 30.
        public var healthCheckIntervalSeconds: Double = 30
        /// Time limit of one health probe, seconds. Default 5.
        public var healthCheckTimeoutSeconds: Double = 5
        /// Default upstream timeouts; a deployment may override each.
        public var timeouts = Timeouts()

        public init() {}
    }

    /// One upstream deployment of a model group.
    public struct Deployment: Sendable, Equatable {
        public var provider: String
        /// The model name upstream (for Azure, the deployment name).
        public var model: String
        public var apiBase: String?
        public var apiKey: String?
        public var apiVersion: String?
        /// Relative share of traffic among the group's healthy deployments. Default 1.
        public var weight: Double = 1
        /// Price per one million input tokens. Default 0.
        public var inputPricePerMillion: Double = 0
        /// Price per one million output tokens. Default 0.
        public var outputPricePerMillion: Double = 0
        /// Extra headers sent upstream.
        public var headers: [String: String] = [:]
        /// Overrides of the routing timeouts.
        public var timeouts: Timeouts
        /// `max_tokens` sent to providers that require it when the client gives none. Default 4096.
        public var defaultMaxTokens: Int = 4096
        /// Demo provider only: streamed tokens per second (0 = unthrottled).
        public var tokensPerSecond: Double = 0
        /// PEM file of certificate authorities trusted for an https `api_base` (internal PKI). Default: the system's.
        public var caFile: String?

        public init(provider: String, model: String, timeouts: Timeouts = Timeouts()) {
            self.provider = provider
            self.model = model
            self.timeouts = timeouts
        }
    }

    /// A public model name and how it is served.
    public struct Model: Sendable, Equatable {
        public var name: String
        public var deployments: [Deployment]
        /// Model groups to try, in order, when every deployment here failed.
        public var fallbacks: [String] = []

        public init(name: String, deployments: [Deployment], fallbacks: [String] = []) {
            self.name = name
            self.deployments = deployments
            self.fallbacks = fallbacks
        }
    }

    /// Guardrails: which guards run for whom, and what each risk level does.
    public struct Guardrails: Sendable, Equatable {
        /// One policy. The first whose filters all match a call applies; the built-in default otherwise.
        public struct Policy: Sendable, Equatable {
            public var name: String
            /// Empty: any.
            public var models: [String] = []
            public var teams: [String] = []
            public var roles: [String] = []
            public var keys: [String] = []
            /// Input guards by name. Default validation, injection_rules and injection_classifier.
            public var input: [String] = ["validation", "injection_rules", "injection_classifier"]
            /// Action per risk level (block, redact, flag). Default block critical and high, flag the rest.
            public var actions: [String: String] = ["critical": "block", "high": "block", "medium": "flag", "low": "flag"]
            /// Input token limit (estimated). Default 4096.
            public var maxInputTokens: Int = 4096
            /// Messages per request. Default 256.
            public var maxMessages: Int = 256
            /// Characters per message. Default 100,000.
            public var maxMessageCharacters: Int = 100_000
            /// What the `pii` guard's findings do: mask, remove, hash (keyed pseudonym), tokenize (restored in the
            /// answer), block or flag. Default mask.
            public var pii: String = "mask"
            /// Output guards by name (pii, system_prompt_leak, moderation, format). Default none.
            public var output: [String] = []
            /// Whether an answer failing the `format` guard (not the JSON its request's
            /// `response_format` asked for) is asked for once more before it is withheld. Default true.
            public var formatRetry: Bool = true
            /// What the output `pii` guard does: mask, remove, block or flag. Default mask.
            public var outputPII: String = "mask"
            /// Bytes of a streamed answer held back for inspection. Default 64.
            public var streamHoldBack: Int = 64
            /// Whether a canary token is planted in the system prompt (leaks block). Default false.
            public var canary: Bool = false
            /// A system prompt put first in every request; clients cannot remove it.
            public var systemPrompt: String?
            /// Context isolation: delimit, datamark or base64; nil for none.
            public var spotlight: String?
            /// Roles whose content is isolated. Default tool.
            public var spotlightRoles: [String] = ["tool"]
            /// Whether `<document>…</document>` spans in user messages are isolated. Default true.
            public var spotlightDocuments: Bool = true

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

    public var server = Server()
    public var auth = Auth()
    public var guardrails = Guardrails()
    public var storage = Storage()
    public var limits = Limits()
    public var ipPolicy = IPPolicy()
    public var routing = Routing()
    public var models: [Model] = []
    /// Log level: trace, debug, info, notice, warning, error, critical. Default info.
    public var logLevel: String = "info"

    public init() {}
}

/// Which database a `storage.database` setting names.
public enum StorageLocation: Sendable, Equatable {
    /// A SQLite file.
    case sqlite(path: String)
    /// A PostgreSQL URL.
    case postgres(url: String)

    /// Parses `sqlite:PATH`, `sqlite://PATH`, a bare path, or `postgres://…` / `postgresql://…`.
    public init?(_ text: String) {
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(url: text)
        } else if text.hasPrefix("sqlite://") {
            let path = String(text.dropFirst("sqlite://".count))
            guard !path.isEmpty else { return nil }
            self = .sqlite(path: path)
        } else if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else { return nil }
            self = .sqlite(path: path)
        } else if !text.isEmpty, !text.contains("://") {
            self = .sqlite(path: text)
        } else {
            return nil
        }
    }
}
