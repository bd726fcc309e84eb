import Synchronization

/// Identical requests in flight at the same time share one upstream call (stage 8's
/// de-duplication): the first caller's operation runs once, in a task of its own that belongs
/// to no single request, and every caller that joins before it ends gets its result.
///
/// The shared task is cancelled only when every caller waiting for it has been cancelled. An
/// entry leaves the registry when its value is ready, or, with `holdsUntilRetired`, when its
/// owner calls `retire` (a shared stream, which late joiners may still read from).
public final class InFlight<Value: Sendable>: Sendable {
    final class Call: Sendable {
        struct State {
            var result: Result<Value, any Error>?
            var continuations: [CheckedContinuation<Value, any Error>] = []
            var waiters = 1
            var task: Task<Void, Never>?
        }
        let state = Mutex(State())

        func wait() async throws -> Value {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let ready: Result<Value, any Error>? = state.withLock { state in
                        if let result = state.result { return result }
                        state.continuations.append(continuation)
                        return nil
                    }
                    if let ready { continuation.resume(with: ready) }
                }
            } onCancel: {
                let task: Task<Void, Never>? = state.withLock { state in
                    state.waiters -= 1
                    return state.waiters == 0 ? state.task : nil
                }
                task?.cancel()
            }
        }

        func complete(_ result: Result<Value, any Error>) {
            let waiting = state.withLock { state in
                state.result = result
                defer { state.continuations = [] }
                return state.continuations
            }
            for continuation in waiting { continuation.resume(with: result) }
        }
    }

    private let calls = Mutex<[String: Call]>([:])

    public init() {}

    /// The value of the call under `key`: joined when one is in flight, otherwise started with
    /// `operation`. `joined` says which.
    public func value(for key: String, holdsUntilRetired: Bool = false,
                      _ operation: @escaping @Sendable () async throws -> Value) async throws -> (value: Value, joined: Bool) {
        let (call, joined): (Call, Bool) = calls.withLock { calls in
            if let existing = calls[key] {
                existing.state.withLock { $0.waiters += 1 }
                return (existing, true)
            }
            let call = Call()
            calls[key] = call
            return (call, false)
        }
        if !joined {
            let task = Task {
                let result: Result<Value, any Error>
                do {
                    result = .success(try await operation())
                } catch {
                    result = .failure(error)
                }
                var failed = false
                if case .failure = result { failed = true }
                if !holdsUntilRetired || failed { self.retire(key, call) }
                call.complete(result)
            }
            call.state.withLock { $0.task = task }
        }
        return (try await call.wait(), joined)
    }

    /// Removes the entry under `key` (if it is still the one the caller joined): later callers start anew.
    public func retire(_ key: String) {
        calls.withLock { _ = $0.removeValue(forKey: key) }
    }

    private func retire(_ key: String, _ call: Call) {
        calls.withLock { calls in
            if calls[key] === call { calls.removeValue(forKey: key) }
        }
    }

    /// Calls in flight now.
    public var count: Int { calls.withLock { $0.count } }
}
