import ServiceLifecycle

/// An operation that did not finish within its time limit.
public struct DeadlineExceeded: Error, Sendable, Equatable {
    /// The time limit that passed.
    public let limit: Duration

    public init(limit: Duration) {
        self.limit = limit
    }
}

/// The one way the gateway bounds an operation in time (upstream phases, database calls,
/// remote guards, health probes).
public enum Deadline {
    /// The result of `body`, or `DeadlineExceeded` once `limit` has passed.
    ///
    /// At the deadline `onExpiry` runs at once (a probe records the failure there) and `body`
    /// is cancelled; the call returns when `body` has, so no task outlives it. An operation that
    /// ignores cancellation therefore holds its caller, never a task nobody waits for.
    public static func run<T: Sendable>(within limit: Duration, onExpiry: @escaping @Sendable () -> Void = {},
                                        _ body: @Sendable () async throws -> T) async throws -> T {
        try await withoutActuallyEscaping(body) { body in
            try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await body() }
                group.addTask {
                    try await Task.sleep(for: limit)
                    onExpiry()
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let value = first else { throw DeadlineExceeded(limit: limit) }
                return value
            }
        }
    }

    /// A time limit of `seconds`.
    public static func seconds(_ seconds: Double) -> Duration { .nanoseconds(Int64(max(0, seconds) * 1_000_000_000)) }
}

/// The one loop of the gateway's periodic services (flushers, probes, health checks, refreshers).
public enum Periodic {
    /// Runs `tick` every `interval` until graceful shutdown or cancellation — after a first pause,
    /// or at once when `startImmediately` — then `final` once.
    ///
    /// A tick under way when shutdown begins is not cancelled half-way (a flush would otherwise
    /// fail and be repeated), and neither is `final`: each runs in a task of its own that the
    /// loop awaits, so none is left behind.
    public static func run(every interval: Duration, startImmediately: Bool = false, _ tick: @escaping @Sendable () async -> Void,
                           final: (@Sendable () async -> Void)? = nil) async {
        await cancelWhenGracefulShutdown {
            var first = true
            while !Task.isCancelled {
                if !(first && startImmediately) {
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { break }
                }
                first = false
                await Task { await tick() }.value
            }
        }
        if let final { await Task { await final() }.value }
    }
}

extension Duration {
    /// This duration in seconds, as a floating-point number (what metrics and logs report).
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
