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

    public init(store: any SQLStore, health: DatabaseHealth, redis: RedisClient?, sharedState: ResilientSharedState?, interval: Double) {
        self.store = store
        self.health = health
        self.redis = redis
        self.sharedState = sharedState
        self.interval = interval
    }

    public func run() async throws {
        let limit = Deadline.seconds(max(interval, 1))
        await Periodic.run(every: Deadline.seconds(interval)) {
            await withTaskGroup(of: Void.self) { group in
                // A probe that hangs is reported unreachable at its deadline, at once; the next
                // probe starts only after it has returned, so hung calls never pile up.
                group.addTask {
                    let answer = try? await Deadline.run(within: limit, onExpiry: { health.recordFailure() }) {
                        try await store.query("SELECT 1 AS ok", [])
                    }
                    if answer?.count == 1 { health.recordSuccess() } else { health.recordFailure() }
                }
                if let redis, let sharedState {
                    group.addTask {
                        let answer = try? await Deadline.run(within: limit, onExpiry: { sharedState.recordProbe(reachable: false) }) {
                            try await redis.command(["PING"])
                        }
                        sharedState.recordProbe(reachable: answer?.string == "PONG")
                    }
                }
            }
        }
    }
}
