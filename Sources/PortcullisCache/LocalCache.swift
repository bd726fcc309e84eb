import Synchronization

/// A least-recently-used map bounded by the bytes of its values, with a lifetime per entry.
///
/// One lock around short synchronous sections; the list is kept in arrays (slots reused) so
/// that a lookup allocates nothing.
public final class LocalCache<Value: Sendable>: Sendable {
    private struct Slot {
        var key: String
        var value: Value?
        var bytes: Int
        var expires: Double
        var newer: Int
        var older: Int
    }

    private struct State {
        var index: [String: Int] = [:]
        var slots: [Slot] = []
        var free: [Int] = []
        /// Most and least recently used slots (-1: none).
        var newest = -1
        var oldest = -1
        var bytes = 0
        var evictions = 0

        mutating func unlink(_ slot: Int) {
            let (newer, older) = (slots[slot].newer, slots[slot].older)
            if newer >= 0 { slots[newer].older = older } else { newest = older }
            if older >= 0 { slots[older].newer = newer } else { oldest = newer }
            slots[slot].newer = -1
            slots[slot].older = -1
        }

        mutating func pushNewest(_ slot: Int) {
            slots[slot].older = newest
            slots[slot].newer = -1
            if newest >= 0 { slots[newest].newer = slot }
            newest = slot
            if oldest < 0 { oldest = slot }
        }

        mutating func remove(_ slot: Int) {
            unlink(slot)
            index.removeValue(forKey: slots[slot].key)
            bytes -= slots[slot].bytes
            slots[slot].value = nil
            slots[slot].key = ""
            free.append(slot)
        }
    }

    /// Entries whose bytes (as given to `set`) sum to more than this are evicted, oldest use first.
    public let maximumBytes: Int
    private let state = Mutex(State())

    public init(maximumBytes: Int) {
        self.maximumBytes = maximumBytes
    }

    /// The value under `key` if it has not expired at `now` (seconds); marks it recently used.
    public func value(forKey key: String, now: Double) -> Value? {
        state.withLock { state in
            guard let slot = state.index[key] else { return nil }
            guard state.slots[slot].expires > now else {
                state.remove(slot)
                return nil
            }
            state.unlink(slot)
            state.pushNewest(slot)
            return state.slots[slot].value
        }
    }

    /// Keeps `value` under `key` until `expires`; `bytes` is what it counts against the bound.
    /// A value larger than the whole bound is not kept.
    public func set(_ value: Value, forKey key: String, bytes: Int, expires: Double) {
        let bytes = bytes + key.utf8.count + 64
        guard bytes <= maximumBytes else { return }
        state.withLock { state in
            if let existing = state.index[key] { state.remove(existing) }
            let slot: Int
            let entry = Slot(key: key, value: value, bytes: bytes, expires: expires, newer: -1, older: -1)
            if let reused = state.free.popLast() {
                slot = reused
                state.slots[slot] = entry
            } else {
                slot = state.slots.count
                state.slots.append(entry)
            }
            state.index[key] = slot
            state.pushNewest(slot)
            state.bytes += bytes
            while state.bytes > maximumBytes, state.oldest >= 0, state.oldest != slot {
                state.remove(state.oldest)
                state.evictions += 1
            }
        }
    }

    /// Removes the entry under `key`, if any.
    public func removeValue(forKey key: String) {
        state.withLock { state in
            if let slot = state.index[key] { state.remove(slot) }
        }
    }

    /// Removes every entry whose key and value satisfy `predicate` (a data subject's, on
    /// erasure); returns how many went.
    @discardableResult
    public func removeAll(where predicate: (String, Value) -> Bool) -> Int {
        state.withLock { state in
            var removed = 0
            for (key, slot) in state.index {
                guard let value = state.slots[slot].value, predicate(key, value) else { continue }
                state.remove(slot)
                removed += 1
            }
            return removed
        }
    }

    /// Entries held, the bytes they count and how many were evicted for room.
    public var statistics: (entries: Int, bytes: Int, evictions: Int) {
        state.withLock { ($0.index.count, $0.bytes, $0.evictions) }
    }
}
