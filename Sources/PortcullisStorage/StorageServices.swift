import Foundation
import PortcullisCore
import PortcullisRedis
import ServiceLifecycle
import Synchronization

/// Whether the SQL store answered lately; `/health/ready` and the metrics read it.
public final class DatabaseHealth: Sendable {
    private let failingSince = Mutex<Double?>(nil)

    public init() {}

    public func recordFailure(now: Double = Date().timeIntervalSince1970) {
        failingSince.withLock { if $0 == nil { $0 = now } }
    }

    public func recordSuccess() {
        failingSince.withLock { $0 = nil }
    }

    /// Whether the last operation reached the database.
    public var isReachable: Bool { failingSince.withLock { $0 == nil } }
}

/// What the health probe last measured of the database and Redis, for `/metrics`.
public final class DependencyMeasurements: Sendable {
    public struct Values: Sendable, Equatable {
        /// Round trip of the last database probe, in seconds (nil before the first answer).
        public var databaseLatency: Double?
        /// Bytes of WAL not yet replayed: on a primary the farthest standby behind it, on a
        /// standby its own; nil on SQLite, or when the role may not read it.
        public var replicationLagBytes: Double?
        /// Standbys streaming from this primary (nil on SQLite).
        public var standbys: Double?
        /// Round trip of the last Redis probe (`INFO memory`), in seconds.
        public var redisLatency: Double?
        /// Redis's `used_memory` and `maxmemory` (0: no limit), in bytes, from `INFO memory`.
        public var redisUsedMemory: Double?
        public var redisMaxMemory: Double?
    }
    private let values = Mutex(Values())
    /// False once the server refused the replication query (a role without the functions).
    let replicationReadable = Atomic<Bool>(true)

    public init() {}

    public var current: Values { values.withLock { $0 } }
    func update(_ change: (inout Values) -> Void) { values.withLock { change(&$0) } }
}

/// Closes the SQLite store after everything that writes to it has stopped.
public struct StoreCloser: Service {
    public let store: any SQLStore

    public init(store: any SQLStore) {
        self.store = store
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await store.close()
    }
}

/// Closes the Redis pool at shutdown.
public struct RedisCloser: Service {
    public let client: RedisClient

    public init(client: RedisClient) {
        self.client = client
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await client.shutdown()
    }
}

/// Reports leased spend and gives back expired leases every `interval`; at shutdown gives
/// back every lease, so that a stopped replica holds no room.
public struct LeaseFlusher: Service {
    public let state: LeasingSharedState
    public let interval: Double

    public init(state: LeasingSharedState, interval: Double) {
        self.state = state
        self.interval = interval
    }

    public func run() async throws {
        await Periodic.run(every: Deadline.seconds(interval), { try? await state.flush(now: Date().timeIntervalSince1970) },
                           final: { try? await state.flush(now: .infinity) })
    }
}

/// Checks every `interval` that the database and Redis answer, so that readiness and metrics
/// tell the truth without traffic, and so that fail-open and per-replica modes are entered
/// without a request waiting on a dead server, and left as soon as it answers again.
public struct HealthProbe: Service {
    public let store: any SQLStore
    public let health: DatabaseHealth
    public let redis: RedisClient?
    public let sharedState: ResilientSharedState?
    public let interval: Double
    public let measurements: DependencyMeasurements

    public init(store: any SQLStore, health: DatabaseHealth, redis: RedisClient?, sharedState: ResilientSharedState?, interval: Double,
                measurements: DependencyMeasurements = DependencyMeasurements()) {
        self.store = store
        self.health = health
        self.redis = redis
        self.sharedState = sharedState
        self.interval = interval
        self.measurements = measurements
    }

    /// PostgreSQL's replication lag as this connection sees it: a primary's farthest standby
    /// (bytes between its WAL and the standby's replay), or a standby's own replay gap.
    static let replicationQuery = """
        SELECT 1 AS ok,
               CASE WHEN pg_is_in_recovery()
                    THEN coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)
                    ELSE coalesce((SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)) FROM pg_stat_replication), 0)
               END::bigint AS lag_bytes,
               (SELECT count(*) FROM pg_stat_replication)::bigint AS standbys
        """

    /// `used_memory` and `maxmemory` from the text `INFO memory` answers.
    static func memory(fromInfo info: String) -> (used: Double?, maximum: Double?) {
        var used: Double?, maximum: Double?
        for line in info.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("used_memory:") { used = Double(line.dropFirst("used_memory:".count)) }
            if line.hasPrefix("maxmemory:") { maximum = Double(line.dropFirst("maxmemory:".count)) }
        }
        return (used, maximum)
    }

    public func run() async throws {
        let limit = Deadline.seconds(max(interval, 1))
        await Periodic.run(every: Deadline.seconds(interval)) {
            await withTaskGroup(of: Void.self) { group in
                // A probe that hangs is reported unreachable at its deadline, at once; the next
                // probe starts only after it has returned, so hung calls never pile up.
                group.addTask {
                    // One query a tick, as before the replication figures: on PostgreSQL it reads them too.
                    let readsReplication = store.dialect == .postgres && measurements.replicationReadable.load(ordering: .relaxed)
                    let start = ContinuousClock.now
                    let answer: Result<[SQLRow], any Error>
                    do {
                        answer = .success(try await Deadline.run(within: limit, onExpiry: { health.recordFailure() }) {
                            try await store.query(readsReplication ? Self.replicationQuery : "SELECT 1 AS ok", [])
                        })
                    } catch {
                        answer = .failure(error)
                    }
                    let latency = (ContinuousClock.now - start).inSeconds
                    switch answer {
                    case .success(let rows) where rows.count == 1:
                        health.recordSuccess()
                        measurements.update {
                            $0.databaseLatency = latency
                            $0.replicationLagBytes = readsReplication ? rows[0]["lag_bytes"].double : nil
                            $0.standbys = readsReplication ? rows[0]["standbys"].double : nil
                        }
                    case .failure(let error as SQLError) where readsReplication && !error.isUnavailable:
                        // The server answered but refused the replication functions: it is up; probe plainly from now on.
                        health.recordSuccess()
                        measurements.replicationReadable.store(false, ordering: .relaxed)
                    default:
                        health.recordFailure()
                    }
                }
                if let redis, let sharedState {
                    group.addTask {
                        // One command a tick, as with PING before: INFO memory answers only from a live server.
                        let start = ContinuousClock.now
                        let answer = try? await Deadline.run(within: limit, onExpiry: { sharedState.recordProbe(reachable: false) }) {
                            try await redis.command(["INFO", "memory"])
                        }
                        let latency = (ContinuousClock.now - start).inSeconds
                        let memory = Self.memory(fromInfo: answer?.string ?? "")
                        sharedState.recordProbe(reachable: memory.used != nil)
                        guard memory.used != nil else { return }
                        measurements.update {
                            $0.redisLatency = latency
                            $0.redisUsedMemory = memory.used
                            $0.redisMaxMemory = memory.maximum
                        }
                    }
                }
            }
        }
    }
}
