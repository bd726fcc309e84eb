import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// Collects usage and spend in memory, aggregated by day, key, user, team and model, and
/// writes it in one transaction every flush interval — never a row update per request.
/// A flush that fails keeps its rows and retries; the final flush runs at shutdown.
public final class UsageRecorder: Service, Sendable {
    struct Dimensions: Hashable {
        var day: String
        var keyID: String
        var userID: String
        var teamID: String
        var model: String
    }

    struct Totals {
        var requests: Int64 = 0
        var promptTokens: Int64 = 0
        var completionTokens: Int64 = 0
        var costMicros: Int64 = 0
    }

    private struct Buffer {
        var usage: [Dimensions: Totals] = [:]
        var lastUsed: [String: Int64] = [:]
    }

    private let buffer = Mutex(Buffer())
    private let directory: Directory
    private let keys: APIKeyStore
    private let health: DatabaseHealth
    private let interval: Double
    private let logger: Logger
    /// Flushes done (successful), for tests and metrics.
    private let flushes = Atomic<Int>(0)
    /// Flushes that failed (their rows were kept for the next one).
    private let failedFlushes = Atomic<Int>(0)

    public init(directory: Directory, keys: APIKeyStore, health: DatabaseHealth, interval: Double, logger: Logger) {
        self.directory = directory
        self.keys = keys
        self.health = health
        self.interval = interval
        self.logger = logger
    }

    /// Adds one request's usage.
    public func record(keyID: String?, userID: String?, teamID: String?, model: String, promptTokens: Int64, completionTokens: Int64,
                       costMicros: Int64, now: Double = Date().timeIntervalSince1970) {
        let dimensions = Dimensions(day: UsageDay.string(now), keyID: keyID ?? "", userID: userID ?? "", teamID: teamID ?? "", model: model)
        buffer.withLock { buffer in
            var totals = buffer.usage[dimensions] ?? Totals()
            totals.requests += 1
            totals.promptTokens += promptTokens
            totals.completionTokens += completionTokens
            totals.costMicros += costMicros
            buffer.usage[dimensions] = totals
        }
    }

    /// Notes that a key was used now; written with the next flush.
    public func touch(keyID: String, now: Int64) {
        buffer.withLock { buffer in
            if (buffer.lastUsed[keyID] ?? 0) < now { buffer.lastUsed[keyID] = now }
        }
    }

    /// Spend not yet flushed for a subject since `startDay` (budget seeding adds it to the stored spend).
    public func pendingSpend(scope: BudgetScope, subject: String, sinceDay startDay: String) -> Int64 {
        buffer.withLock { buffer in
            buffer.usage.reduce(0) { sum, entry in
                let matches = switch scope {
                case .key: entry.key.keyID == subject
                case .user: entry.key.userID == subject
                case .team: entry.key.teamID == subject
                }
                return matches && entry.key.day >= startDay ? sum + entry.value.costMicros : sum
            }
        }
    }

    /// Number of successful flushes so far.
    public var flushCount: Int { flushes.load(ordering: .relaxed) }

    /// Number of failed flushes so far.
    public var failedFlushCount: Int { failedFlushes.load(ordering: .relaxed) }

    /// Aggregated usage rows waiting for the next flush.
    public var pendingRows: Int { buffer.withLock { $0.usage.count } }

    /// Writes what has been collected; on failure puts it back for the next attempt. While the
    /// database is known to be down it is not tried: the rows wait for the health probe to see it back.
    public func flush() async {
        guard health.isReachable else { return }
        let taken = buffer.withLock { buffer in
            let taken = buffer
            buffer = Buffer()
            return taken
        }
        guard !taken.usage.isEmpty || !taken.lastUsed.isEmpty else { return }
        let rows = taken.usage.map { dimensions, totals in
            UsageRow(day: dimensions.day, keyID: dimensions.keyID, userID: dimensions.userID, teamID: dimensions.teamID, model: dimensions.model,
                     requests: totals.requests, promptTokens: totals.promptTokens, completionTokens: totals.completionTokens,
                     costMicros: totals.costMicros)
        }.sorted { ($0.day, $0.keyID, $0.userID, $0.teamID, $0.model) < ($1.day, $1.keyID, $1.userID, $1.teamID, $1.model) }
        do {
            try await directory.addUsage(rows)
            try await keys.recordLastUsed(taken.lastUsed)
            health.recordSuccess()
            flushes.add(1, ordering: .relaxed)
        } catch {
            if (error as? SQLError)?.isUnavailable ?? false { health.recordFailure() }
            failedFlushes.add(1, ordering: .relaxed)
            logger.warning("usage flush failed; keeping \(rows.count) rows for the next attempt", metadata: ["error": "\(error)"])
            buffer.withLock { buffer in
                for (dimensions, totals) in taken.usage {
                    var merged = buffer.usage[dimensions] ?? Totals()
                    merged.requests += totals.requests
                    merged.promptTokens += totals.promptTokens
                    merged.completionTokens += totals.completionTokens
                    merged.costMicros += totals.costMicros
                    buffer.usage[dimensions] = merged
                }
                for (key, time) in taken.lastUsed where (buffer.lastUsed[key] ?? 0) < time { buffer.lastUsed[key] = time }
            }
        }
    }

    public func run() async throws {
        // Every interval, then once more at shutdown so that the last interval's rows are written.
        await Periodic.run(every: Deadline.seconds(interval), { await self.flush() }, final: { await self.flush() })
    }
}

