import Foundation
import Logging
import PortcullisCore
import PortcullisRedis
import PortcullisStorage
import PortcullisTLS
import ServiceLifecycle
import Synchronization

/// Identity, authorisation, limits and accounting, assembled from their configuration: the SQL
/// store (migrated, with the tables of other libraries that share it), the shared state
/// (Redis or in-process), the control bus and the caches.
public struct AccessSystem: Sendable {
    public let store: any SQLStore
    public let keys: APIKeyStore
    public let directory: Directory
    public let directoryCache: DirectoryCache
    public let authenticator: Authenticator
    public let admission: Admission
    public let recorder: UsageRecorder
    public let ipPolicy: IPPolicyEngine
    public let bus: any ControlBus
    public let health: DatabaseHealth
    /// What the health probe measured of the database and Redis (latency, memory, replication lag).
    public let measurements: DependencyMeasurements
    public let sharedState: ResilientSharedState?
    public let rotationGrace: Double
    /// Whether keys a developer mints are revoked with the developer's key.
    public let revokeMintedKeysWithIssuer: Bool
    public let controlListener: ControlListener
    /// Long-lived parts to run as services, in start order (stopped in reverse).
    public let services: [any Service]
    /// The Redis client of the shared state (nil: none configured), for other libraries' shared tiers.
    public let redis: RedisClient?
    /// Told, on every replica, of each data subject erased (its data key's reference), so that
    /// no copy of the key outlives the erasure anywhere.
    public let erasures: SubjectErasures

    /// Opens storage, applies migrations (this library's and `migrations`) and wires the parts together.
    /// - Parameter fetcher: how OIDC discovery documents and JWKS are fetched, given an issuer's CA file.
    public static func make(auth: AuthConfiguration, storage: StorageConfiguration, limits: LimitsConfiguration, ipPolicy policy: IPPolicyConfiguration,
                            migrations others: [Migration], fetcher: (_ caFile: String?) -> JSONFetcher,
                            logger: Logger) async throws -> AccessSystem {
        var services: [any Service] = []
        let store: any SQLStore
        var pepper: [UInt8]
        let initialRules: [IPRuleRecord]
        let migrations = APIKeyStore.migrations + Directory.migrations + others
        guard let location = StorageLocation(storage.database) else {
            throw SQLError("storage.database '\(storage.database)' is not a SQLite path or PostgreSQL URL")
        }
        switch location {
        case .sqlite(let path):
            let memory = path == ":memory:"
            let sqlite = try await SQLiteStore.open(path: memory ? nil : path, logger: logger)
            do {
                try await MigrationRunner.migrate(sqlite, migrations)
                initialRules = try await Directory(store: sqlite).ipRules()
            } catch {
                await sqlite.close()   // a refused start must not leave the connection open
                throw error
            }
            store = sqlite
            if let configured = auth.keyPepper {
                pepper = Array(configured.utf8)
            } else if memory {
                pepper = (0..<32).map { _ in UInt8.random(in: 0...255) }
            } else {
                pepper = try Self.localPepper(beside: path)
            }
            services.append(StoreCloser(store: sqlite))
        case .postgres(let url):
            // Migrate with a short-lived pool of its own: the main pool runs as a service.
            let migrator = try PostgresStore(url: url, minimumConnections: 1, maximumConnections: 1,
                                             operationTimeout: max(storage.timeoutSeconds, 120), logger: logger)
            // (The main pool cannot answer before the service group runs it, so the first IP rules come from here too.)
            initialRules = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await migrator.run() }
                defer { group.cancelAll() }
                try await MigrationRunner.migrate(migrator, migrations)
                return try await Directory(store: migrator).ipRules()
            }
            let postgres = try PostgresStore(url: url, minimumConnections: 1, maximumConnections: storage.poolSize,
                                             operationTimeout: storage.timeoutSeconds, logger: logger)
            store = postgres
            services.append(postgres)
            guard let configured = auth.keyPepper else { throw SQLError("auth.key_pepper is required with PostgreSQL") }
            pepper = Array(configured.utf8)
        }
        let keys = try APIKeyStore(store: store, pepper: pepper)
        pepper = []
        let directory = Directory(store: store)
        let health = DatabaseHealth()
        let directoryCache = DirectoryCache(directory: directory, health: health)
        let recorder = UsageRecorder(directory: directory, keys: keys, health: health, interval: storage.flushIntervalSeconds,
                                     logger: logger)
        var redis: RedisClient?
        var resilient: ResilientSharedState?
        var leaseFlusher: LeaseFlusher?
        let bus: any ControlBus
        let state: any SharedState
        if let url = storage.redis {
            let endpoint = try RedisConfiguration(url: url)
            let client = RedisClient(configuration: endpoint, tlsConfiguration: endpoint.endpoint.useTLS ? try storage.redisTLS.configuration() : nil)
            redis = client
            let remote = RedisSharedState(client: client)
            let primary: any SharedState
            if storage.leaseFraction > 0 {
                let leasing = LeasingSharedState(remote: remote, fraction: Int64(storage.leaseFraction),
                                                 lifetime: storage.leaseSeconds)
                leaseFlusher = LeaseFlusher(state: leasing, interval: min(0.1, storage.leaseSeconds / 2))
                primary = leasing
            } else {
                primary = remote
            }
            let shared = ResilientSharedState(primary: primary)
            resilient = shared
            state = shared
            bus = RedisControlBus(client: client)
        } else {
            state = InProcessSharedState()
            bus = InProcessControlBus()
        }
        let cache = ValidatedKeyCache(ttl: .milliseconds(Int64(auth.keyCacheSeconds * 1000)))
        let issuers = auth.oidc.map { settings in
            IssuerKeys(policy: IssuerPolicy(issuer: settings.issuer, audiences: settings.audiences, algorithms: settings.algorithms,
                                            roleClaims: settings.roleClaims, roleMap: settings.roleMap,
                                            defaultRole: settings.defaultRole, teamClaim: settings.teamClaim,
                                            userClaim: settings.userClaim, maximumLifetime: settings.maximumLifetimeSeconds,
                                            leeway: settings.leewaySeconds, mfaMethods: settings.mfaMethods, mfaContexts: settings.mfaContexts),
                       jwksURL: settings.jwksURL, fetch: fetcher(settings.caFile))
        }
        let required = auth.required ?? (auth.masterKey != nil || !auth.oidc.isEmpty || !auth.certificatePrincipals.isEmpty)
        let authenticator = Authenticator(masterKey: auth.masterKey, keys: keys, cache: cache, tokens: TokenVerifier(issuers: issuers),
                                          health: health, recorder: recorder, isRequired: required, failOpen: auth.failOpen,
                                          mfaRequiredRoles: Set(auth.mfaRequiredRoles), certificatePrincipals: auth.certificatePrincipals)
        let admission = Admission(state: state, directory: directoryCache, recorder: recorder, roleLimits: limits.roles,
                                  modelLimits: limits.models)
        let ipPolicy = IPPolicyEngine(allow: policy.allow, deny: policy.deny, adminAllow: policy.adminAllow, trustedProxies: policy.trustedProxies)
        ipPolicy.update(initialRules)
        services.append(recorder)
        let erasures = SubjectErasures()
        let controlListener = ControlListener(bus: bus, cache: cache,
                                        onMessage: { message in
                                            switch message {
                                            case .keyRevoked: break
                                            case .directoryChanged: directoryCache.invalidate()
                                            case .ipRulesChanged: ipPolicy.markStale()
                                            case .subjectErased(let ref): erasures.notify(ref)
                                            case .cacheErased(let tag): erasures.notifyCache(tag)
                                            }
                                        },
                                        onLost: {
                                            directoryCache.invalidate()
                                            ipPolicy.markStale()
                                        })
        services.append(controlListener)
        services.append(IPRuleRefresher(policy: ipPolicy, directory: directory, redis: redis))
        let measurements = DependencyMeasurements()
        services.append(HealthProbe(store: store, health: health, redis: redis, sharedState: resilient,
                                    interval: storage.probeIntervalSeconds, measurements: measurements))
        if let redis { services.append(RedisCloser(client: redis)) }
        // After the closer: services shut down in reverse order, so leases go back before Redis closes.
        if let leaseFlusher { services.append(leaseFlusher) }
        return AccessSystem(store: store, keys: keys, directory: directory, directoryCache: directoryCache, authenticator: authenticator,
                            admission: admission, recorder: recorder, ipPolicy: ipPolicy, bus: bus, health: health, measurements: measurements, sharedState: resilient,
                            rotationGrace: auth.rotationGraceSeconds,
                            revokeMintedKeysWithIssuer: auth.revokeMintedKeysWithIssuer, controlListener: controlListener,
                            services: services,
                            redis: redis, erasures: erasures)
    }

    /// The database, Redis and control bus as readiness and metrics report them.
    public var dependencyState: DependencyState {
        DependencyState(databaseReachable: health.isReachable, sharedStateDegraded: sharedState?.isDegraded ?? false,
                        controlBusListening: controlListener.isListening)
    }

    /// The pepper of an embedded (SQLite) deployment: generated once, kept in a `0600` file beside the database.
    static func localPepper(beside databasePath: String) throws -> [UInt8] {
        let path = databasePath + ".pepper"
        if let data = FileManager.default.contents(atPath: path), data.count >= 32 { return Array(data) }
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let created = FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
        guard created else { throw SQLError("cannot write the key pepper file \(path)") }
        return bytes
    }
}

/// What readiness reports of the gateway's dependencies. A degraded gateway still serves
/// (fail-open keys, per-replica limits) but says so.
public struct DependencyState: Sendable {
    public var databaseReachable = true
    public var sharedStateDegraded = false
    public var controlBusListening = true

    public init(databaseReachable: Bool = true, sharedStateDegraded: Bool = false, controlBusListening: Bool = true) {
        self.databaseReachable = databaseReachable
        self.sharedStateDegraded = sharedStateDegraded
        self.controlBusListening = controlBusListening
    }

    public var isHealthy: Bool { databaseReachable && !sharedStateDegraded && controlBusListening }
}

/// Who must forget a data subject's key when it is erased (the audit library's data keys).
public final class SubjectErasures: Sendable {
    private let listeners = Mutex<[@Sendable (String) -> Void]>([])
    private let cacheListeners = Mutex<[@Sendable (String) -> Void]>([])

    public init() {}

    /// Told the reference of each erased subject's data key.
    public func add(_ listener: @escaping @Sendable (String) -> Void) { listeners.withLock { $0.append(listener) } }

    /// Told the cache tag of each erased subject (`CacheKey.subjectTag`).
    public func addCache(_ listener: @escaping @Sendable (String) -> Void) { cacheListeners.withLock { $0.append(listener) } }

    func notify(_ ref: String) {
        for listener in listeners.withLock({ $0 }) { listener(ref) }
    }

    func notifyCache(_ tag: String) {
        for listener in cacheListeners.withLock({ $0 }) { listener(tag) }
    }
}
