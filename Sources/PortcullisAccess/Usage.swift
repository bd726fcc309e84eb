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

    /// A batch taken from the buffer and not yet known to be written, with the id it is written under.
    struct PendingBatch: Sendable {
        var id: String
        var rows: [UsageRow]
    }
    private struct Buffer {
        var usage: [Dimensions: Totals] = [:]
        var lastUsed: [String: Int64] = [:]
        /// Retried, under the same id, until a write of it succeeds.
        var unwritten: PendingBatch?
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
    public var pendingRows: Int { buffer.withLock { $0.usage.count + ($0.unwritten?.rows.count ?? 0) } }

    /// Writes what has been collected; on failure keeps it, as the same batch, for the next
    /// attempt. While the database is known to be down it is not tried: the rows wait for the
    /// health probe to see it back.
    ///
    /// A batch has an id the database records with it, so a batch whose commit succeeded but
    /// whose answer was lost (the primary died at that moment) is not counted twice when retried;
    /// rows collected meanwhile go in the next batch.
    public func flush() async {
        guard health.isReachable else { return }
        let (batch, lastUsed) = buffer.withLock { buffer -> (PendingBatch?, [String: Int64]) in
            if buffer.unwritten == nil, !buffer.usage.isEmpty {
                let rows = buffer.usage.map { dimensions, totals in
                    UsageRow(day: dimensions.day, keyID: dimensions.keyID, userID: dimensions.userID, teamID: dimensions.teamID,
                             model: dimensions.model, requests: totals.requests, promptTokens: totals.promptTokens,
                             completionTokens: totals.completionTokens, costMicros: totals.costMicros)
                }.sorted { ($0.day, $0.keyID, $0.userID, $0.teamID, $0.model) < ($1.day, $1.keyID, $1.userID, $1.teamID, $1.model) }
                buffer.unwritten = PendingBatch(id: FastRandom.hex(bytes: 16), rows: rows)
                buffer.usage = [:]
            }
            let lastUsed = buffer.lastUsed
            buffer.lastUsed = [:]
            return (buffer.unwritten, lastUsed)
        }
        guard batch != nil || !lastUsed.isEmpty else { return }
        do {
            if let batch {
                try await directory.addUsage(batch.rows, batchID: batch.id)
                buffer.withLock { if $0.unwritten?.id == batch.id { $0.unwritten = nil } }
            }
            try await keys.recordLastUsed(lastUsed)
            health.recordSuccess()
            flushes.add(1, ordering: .relaxed)
        } catch {
            if (error as? SQLError)?.isUnavailable ?? false { health.recordFailure() }
            failedFlushes.add(1, ordering: .relaxed)
            logger.warning("usage flush failed; keeping the batch for the next attempt", metadata: ["error": "\(error)"])
            buffer.withLock { buffer in
                for (key, time) in lastUsed where (buffer.lastUsed[key] ?? 0) < time { buffer.lastUsed[key] = time }
            }
        }
    }

    public func run() async throws {
        // Every interval, then once more at shutdown so that the last interval's rows are written.
        await Periodic.run(every: Deadline.seconds(interval), { await self.flush() }, final: { await self.flush() })
    }
}

