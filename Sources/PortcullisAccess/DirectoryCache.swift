import Foundation
import PortcullisCore
import PortcullisStorage
import Synchronization

/// Users, teams and budgets held in process for the hot path: each entry is loaded once and
/// kept for `ttl` seconds, dropped at once when any replica announces a directory change.
/// When the database cannot be reached, the last copy read keeps serving.
public final class DirectoryCache: Sendable {
    private struct Entry: Sendable {
        var value: (any Sendable)?
        var loadedAt: Double
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var generation = 0
    }

    public let directory: Directory
    private let state = Mutex(State())
    private let ttl: Double
    private let health: DatabaseHealth

    public init(directory: Directory, health: DatabaseHealth, ttl: Double = 30) {
        self.directory = directory
        self.health = health
        self.ttl = ttl
    }

    /// Drops every cached entry (a change was announced, or announcements may have been missed).
    public func invalidate() {
        state.withLock { state in
            state.entries.removeAll()
            state.generation += 1
        }
    }

    private func cached<Value: Sendable>(_ key: String, load: () async throws -> Value?) async -> Value? {
        let now = ContinuousClock.uptime
        let (hit, generation) = state.withLock { state in (state.entries[key], state.generation) }
        if let hit, now - hit.loadedAt < ttl { return hit.value as? Value }
        do {
            let value = try await load()
            health.recordSuccess()
            state.withLock { state in
                if state.generation == generation { state.entries[key] = Entry(value: value, loadedAt: now) }
            }
            return value
        } catch {
            health.recordFailure()
            return hit?.value as? Value
        }
    }

    public func user(_ id: String) async -> UserRecord? {
        await cached("user:\(id)") { try await directory.user(id) }
    }

    public func team(_ id: String) async -> TeamRecord? {
        await cached("team:\(id)") { try await directory.team(id) }
    }

    public func budget(scope: BudgetScope, subject: String) async -> BudgetRecord? {
        await cached("budget:\(scope.rawValue):\(subject)") { try await directory.budget(scope: scope, subject: subject) }
    }
}

extension ContinuousClock {
    /// Seconds on the monotonic clock since the first call.
    static var uptime: Double {
        (ContinuousClock.now - origin).inSeconds
    }

    private static let origin = ContinuousClock.now
}
