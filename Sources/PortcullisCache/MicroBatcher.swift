import Synchronization

/// Gathers items submitted under one key within a short window (or until a batch is full) and
/// runs them as one call, whose results are handed back item by item (embedding micro-batching:
/// single-input requests to one model group become one upstream call).
///
/// The first item of a batch waits at most `window`; a full batch goes at once. The call runs in
/// a task of its own (it belongs to every caller of the batch, not to the first), and a failing
/// item fails only its own caller: `run` returns one result per item.
public final class MicroBatcher<Key: Hashable & Sendable, Item: Sendable, Output: Sendable>: Sendable {
    public typealias Run = @Sendable (Key, [Item]) async -> [Result<Output, any Error>]

    struct Pending {
        var items: [Item] = []
        var continuations: [CheckedContinuation<Output, any Error>] = []
        var generation = 0
    }

    struct State {
        var batches: [Key: Pending] = [:]
        /// Numbers each batch, so that a window's timer never sends a later batch of its key early.
        var generations = 0
    }

    private let state = Mutex(State())
    let window: Duration
    let maximumItems: Int
    private let run: Run

    public init(window: Duration, maximumItems: Int, run: @escaping Run) {
        self.window = window
        self.maximumItems = max(1, maximumItems)
        self.run = run
    }

    /// The output for `item`, from the batch it joins under `key`.
    public func submit(_ item: Item, key: Key) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let (full, startTimer, generation): (Pending?, Bool, Int) = state.withLock { state in
                var batch = state.batches[key] ?? Pending()
                let first = batch.items.isEmpty
                if first {
                    state.generations += 1
                    batch.generation = state.generations
                }
                batch.items.append(item)
                batch.continuations.append(continuation)
                if batch.items.count >= maximumItems {
                    state.batches.removeValue(forKey: key)
                    return (batch, false, batch.generation)
                }
                state.batches[key] = batch
                return (nil, first, batch.generation)
            }
            if let full {
                dispatch(full, key: key)
            } else if startTimer {
                Task {
                    try? await Task.sleep(for: window)
                    let due: Pending? = state.withLock { state in
                        guard let batch = state.batches[key], batch.generation == generation else { return nil }   // already sent full
                        state.batches.removeValue(forKey: key)
                        return batch
                    }
                    if let due { await execute(due, key: key) }
                }
            }
        }
    }

    private func dispatch(_ batch: Pending, key: Key) {
        Task { await execute(batch, key: key) }
    }

    private func execute(_ batch: Pending, key: Key) async {
        let results = await run(key, batch.items)
        for (index, continuation) in batch.continuations.enumerated() {
            if index < results.count {
                continuation.resume(with: results[index])
            } else {
                continuation.resume(throwing: MissingBatchResult())
            }
        }
    }
}

/// The batch call returned fewer results than it was given items.
public struct MissingBatchResult: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the batched call returned no result for this item" }
}
