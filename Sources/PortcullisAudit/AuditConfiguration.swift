/// The `audit` section of the configuration.
public struct AuditConfiguration: Sendable, Equatable {
    /// Whether API requests and authentication attempts are recorded (admin actions always
    /// are). Default true.
    public var enabled = true
    /// Whether a request whose record cannot be made durable is refused (`503
    /// audit_unavailable`) rather than served with its record kept in memory. Default: true with
    /// PostgreSQL, false with SQLite (the embedded default).
    public var failClosed: Bool?
    /// This replica's chain name. Default: the host name (the pod's name on Kubernetes), so
    /// that replicas never contend for one chain's head.
    public var chain: String?
    /// Most records kept in memory while the database is unreachable and the log fails open;
    /// past it the oldest are given up and the loss is recorded. Default 100000.
    public var backlogLimit = 100_000
    /// Names the log in checkpoints (`<origin>/<chain>` is a checkpoint's first line) and the
    /// signing key. Default `portcullis.audit`.
    public var origin = "portcullis.audit"
    /// The Ed25519 seed (base64, 32 bytes) that signs checkpoints. Default: with SQLite,
    /// `<database>.audit-key` beside the database, created on first start (mode 0600); with
    /// PostgreSQL none, and then no checkpoints are signed (the gateway says so at start).
    public var signingKeyFile: String?
    /// A checkpoint every this many records… Default 1000.
    public var checkpointEveryRecords = 1000
    /// …or every this many seconds when the chain grew. Default 60.
    public var checkpointEverySeconds = 60.0
    /// Where checkpoints are published as files (`<chain>/latest`, `<chain>/<size>.checkpoint`).
    /// Default: with SQLite, `<database>.checkpoints` beside the database; with PostgreSQL none.
    public var checkpointDirectory: String?
    /// An S3 bucket (with Object Lock) that checkpoints are also published to.
    public var checkpointBucket: S3Bucket?
    /// SIEMs this replica's chain is exported to continuously.
    public var sinks: [AuditSinkConfiguration] = []
    /// Real-time alert rules and where alerts go (none: no alerts).
    public var alerts = AlertConfiguration()
    /// Whether prompts and answers are stored with their audit records (encrypted under the
    /// subject's data key). Default `none`.
    public var payloads = PayloadMode.none
    /// What a guard policy chooses instead (`guardrails.policies[].payloads`), by policy name.
    public var payloadsByPolicy: [String: PayloadMode] = [:]
    /// How long payloads, audit records and security logs are kept.
    public var retention = RetentionConfiguration()
    /// Where the key-encryption key lives (top-level `kms` section).
    public var kms = KMSConfiguration()

    /// The payload mode for a request under guard policy `policy`.
    public func payloadMode(policy: String?) -> PayloadMode {
        policy.flatMap { payloadsByPolicy[$0] } ?? payloads
    }

    /// Whether any request can have its payload stored.
    public var storesPayloads: Bool { payloads != .none || payloadsByPolicy.values.contains { $0 != .none } }

    /// An S3-compatible bucket and the credentials to write to it.
    public struct S3Bucket: Sendable, Equatable {
        public var bucket: String
        /// Object key prefix. Default `portcullis-audit/`.
        public var prefix = "portcullis-audit/"
        public var region = "us-east-1"
        /// Default `https://s3.<region>.amazonaws.com`; a local S3-compatible server otherwise.
        public var endpoint: String?
        public var accessKeyID: String
        public var secretAccessKey: String
        /// Days each checkpoint is locked (Object Lock, compliance mode). Default 365; 0 sends no lock.
        public var retentionDays = 365

        public init(bucket: String, accessKeyID: String, secretAccessKey: String) {
            self.bucket = bucket
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
        }
    }

    public init() {}
}

extension AuditConfiguration {
    /// Where checkpoints are signed and published for a store at `databasePath` (a SQLite
    /// file; nil for PostgreSQL or memory): the configured key file, else one beside the SQLite
    /// file (created on first use); the configured directory, else one beside the SQLite file.
    public struct CheckpointSetup: Sendable {
        public var key: AuditSigningKey?
        public var directory: String?
        /// Why there is no key, to say at start.
        public var missingKeyReason: String?
    }

    /// - Parameter create: whether a missing default key file is made (serving) or not (verifying).
    public func checkpointSetup(sqlitePath: String?, isMemory: Bool, create: Bool) throws -> CheckpointSetup {
        var setup = CheckpointSetup(key: nil, directory: checkpointDirectory)
        if let file = signingKeyFile {
            setup.key = try AuditSigningKey.load(path: file, name: origin, create: false)
        } else if isMemory {
            // An in-memory database lives as long as the process: so does its key.
            setup.key = AuditSigningKey.ephemeral(name: origin)
        } else if let sqlitePath {
            setup.key = try AuditSigningKey.load(path: sqlitePath + ".audit-key", name: origin, create: create)
        } else {
            setup.missingKeyReason = "no audit.signing_key_file is configured: checkpoints are not signed"
        }
        if setup.directory == nil, let sqlitePath, !isMemory { setup.directory = sqlitePath + ".checkpoints" }
        return setup
    }
}

/// The `kms` section: the key-encryption key that wraps every data key.
public struct KMSConfiguration: Sendable, Equatable {
    public enum Provider: Sendable, Equatable {
        /// A key file (mode 0600). Default path: `<database>.kek` beside a SQLite file.
        case local(keyFile: String?)
        /// AWS KMS (or a compatible endpoint): a symmetric key by id, ARN or alias.
        case aws(AWS)
    }

    public struct AWS: Sendable, Equatable {
        public var keyID: String
        public var region = "us-east-1"
        /// Default `https://kms.<region>.amazonaws.com`.
        public var endpoint: String?
        public var accessKeyID: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(keyID: String, accessKeyID: String, secretAccessKey: String) {
            self.keyID = keyID
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
        }

        public var url: String { endpoint ?? "https://kms.\(region).amazonaws.com" }
    }

    public var provider = Provider.local(keyFile: nil)
    /// Whether a request whose payload needs a data key the key service cannot give is
    /// refused (`503 kms_unavailable`) rather than served without storing its payload. Default false.
    public var failClosed = false
    /// Days the key-encryption key stays current before it is rotated (and every data key
    /// re-wrapped). Default 90; 0 rotates only on demand (`portcullis kms rotate`).
    public var rotationDays = 90

    public init() {}

    /// The local key file for a store at `sqlitePath` (nil for PostgreSQL or memory).
    public func localKeyFile(sqlitePath: String?) -> String? {
        guard case .local(let file) = provider else { return nil }
        return file ?? sqlitePath.map { $0 + ".kek" }
    }
}
