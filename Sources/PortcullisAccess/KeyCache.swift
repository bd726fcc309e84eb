import Foundation
import PortcullisRedis
import ServiceLifecycle
import Synchronization

/// Validated keys held in process, so that the hot path does not touch the database.
///
/// Entries expire after `ttl` seconds; a revocation heard on the bus removes an entry at
/// once; losing the bus flushes everything (a revocation may have been missed).
public final class ValidatedKeyCache: Sendable {
    private struct Entry {
        var record: APIKeyRecord
        var expiresAt: ContinuousClock.Instant
    }

    private let entries = Mutex<[String: Entry]>([:])
    private let ttl: Duration
    /// Most entries kept; the oldest is dropped first when full.
    public let capacity: Int

    public init(ttl: Duration = .seconds(60), capacity: Int = 100_000) {
        self.ttl = ttl
        self.capacity = capacity
    }

    /// The cached record for the full key text, if still fresh (or, with `allowingStale`,
    /// whenever it was validated and not revoked since: the fail-open path while the database is down).
    public func record(for key: String, allowingStale: Bool = false) -> APIKeyRecord? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[key] else { return nil }
            guard allowingStale || entry.expiresAt > now else { return nil }
            return entry.record
        }
    }

    /// Remembers a record validated for `key`, never past the end of its secret's grace period.
    public func store(_ record: APIKeyRecord, for key: String, now: Double = Date().timeIntervalSince1970) {
        var expiry = ContinuousClock.now + ttl
        if let until = record.secretValidUntil {
            expiry = min(expiry, ContinuousClock.now + .milliseconds(Int64(max(0, (Double(until) - now) * 1000))))
        }
        entries.withLock { entries in
            if entries.count >= capacity, let oldest = entries.min(by: { $0.value.expiresAt < $1.value.expiresAt })?.key {
                entries[oldest] = nil
            }
            entries[key] = Entry(record: record, expiresAt: expiry)
        }
    }

    /// Forgets every entry of `keyID` (current and rotated secrets alike).
    public func invalidate(keyID: String) {
        entries.withLock { entries in entries = entries.filter { $0.value.record.keyID != keyID } }
    }

    /// Forgets everything.
    public func flush() {
        entries.withLock { $0.removeAll() }
    }

    /// Number of cached keys.
    public var count: Int { entries.withLock { $0.count } }
}

/// What replicas tell each other so that changes made on one take effect on all at once.
public enum ControlMessage: Sendable, Equatable {
    /// A key was revoked (or rotated past its grace): drop it from every cache.
    case keyRevoked(String)
    /// The dynamic IP rules changed: reload them.
    case ipRulesChanged
    /// Users, teams or budgets changed: drop cached copies.
    case directoryChanged
    /// A data subject was erased: drop every copy of its data key (by its reference).
    case subjectErased(String)
    /// A data subject was erased: drop the cache's copies of its entries (by their tag, `CacheKey.subjectTag`).
    case cacheErased(String)

    /// The wire form.
    public var text: String {
        switch self {
        case .keyRevoked(let id): return "revoke:\(id)"
        case .ipRulesChanged: return "ip-rules"
        case .directoryChanged: return "directory"
        case .subjectErased(let ref): return "erased:\(ref)"
        case .cacheErased(let tag): return "cache-erased:\(tag)"
        }
    }

    public init?(text: String) {
        if text.hasPrefix("revoke:") {
            self = .keyRevoked(String(text.dropFirst("revoke:".count)))
        } else if text == "ip-rules" {
            self = .ipRulesChanged
        } else if text == "directory" {
            self = .directoryChanged
        } else if text.hasPrefix("erased:") {
            self = .subjectErased(String(text.dropFirst("erased:".count)))
        } else if text.hasPrefix("cache-erased:") {
            self = .cacheErased(String(text.dropFirst("cache-erased:".count)))
        } else {
            return nil
        }
    }
}

/// Carries control messages (revocations, rule changes) to every replica.
public protocol ControlBus: Sendable {
    /// Tells every replica, this one included.
    func publish(_ message: ControlMessage) async throws
    /// Calls `onReady` once subscribed, then `onMessage` with each message until the task is
    /// cancelled; throws when the bus is lost (messages may then have been missed).
    func listen(onReady: @escaping @Sendable () -> Void, _ onMessage: @escaping @Sendable (ControlMessage) -> Void) async throws
}

/// Control messages over Redis pub/sub: every replica subscribes to one channel.
public struct RedisControlBus: ControlBus {
    public let client: RedisClient
    public let channel: String

    public init(client: RedisClient, channel: String = "portcullis:control") {
        self.client = client
        self.channel = channel
    }

    public func publish(_ message: ControlMessage) async throws {
        try await client.publish(message.text, to: channel)
    }

    public func listen(onReady: @escaping @Sendable () -> Void, _ onMessage: @escaping @Sendable (ControlMessage) -> Void) async throws {
        let subscription = try await client.subscribe(to: [channel])
        onReady()
        do {
            for try await message in subscription.messages {
                if let parsed = ControlMessage(text: message.text) { onMessage(parsed) }
            }
        } catch {
            await subscription.close()
            throw error
        }
        await subscription.close()
        if !Task.isCancelled { throw RedisError(.connection, "the control subscription ended") }
    }
}

/// Control messages within one process (the embedded default).
public final class InProcessControlBus: ControlBus {
    private let listeners = Mutex<[UInt64: @Sendable (ControlMessage) -> Void]>([:])
    private let nextListener = Atomic<UInt64>(0)

    public init() {}

    public func publish(_ message: ControlMessage) async throws {
        for listener in listeners.withLock({ Array($0.values) }) { listener(message) }
    }

    public func listen(onReady: @escaping @Sendable () -> Void, _ onMessage: @escaping @Sendable (ControlMessage) -> Void) async throws {
        let id = nextListener.wrappingAdd(1, ordering: .relaxed).newValue
        listeners.withLock { $0[id] = onMessage }
        onReady()
        defer { listeners.withLock { $0[id] = nil } }
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 3_600_000_000_000)
        }
    }
}

/// Keeps a replica in step with messages published anywhere: revoked keys leave the cache
/// as they are heard; whenever the bus was lost, `onLost` runs (the key cache is flushed, a
/// revocation may have been missed) before listening again.
public struct ControlListener: Service {
    public let bus: any ControlBus
    public let cache: ValidatedKeyCache
    public let onMessage: @Sendable (ControlMessage) -> Void
    public let onLost: @Sendable () -> Void
    /// Pause before listening again after losing the bus, seconds.
    public let retryDelay: Double
    private let listening = ListeningFlag()

    /// Whether the listener is subscribed now (readiness and metrics report it).
    public var isListening: Bool { listening.value.load(ordering: .relaxed) }

    public init(bus: any ControlBus, cache: ValidatedKeyCache, retryDelay: Double = 0.5,
                onMessage: @escaping @Sendable (ControlMessage) -> Void = { _ in }, onLost: @escaping @Sendable () -> Void = {}) {
        self.bus = bus
        self.cache = cache
        self.retryDelay = retryDelay
        self.onMessage = onMessage
        self.onLost = onLost
    }

    public func run() async throws {
        let cache = self.cache
        let onMessage = self.onMessage
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await bus.listen(onReady: { [listening] in listening.value.store(true, ordering: .relaxed) }) { message in
                        if case .keyRevoked(let id) = message { cache.invalidate(keyID: id) }
                        onMessage(message)
                    }
                } catch {
                    cache.flush()
                    onLost()
                }
                listening.value.store(false, ordering: .relaxed)
                try? await Task.sleep(nanoseconds: UInt64(retryDelay * 1_000_000_000))
            }
        }
    }
}

/// A flag shared by a listener's copies.
final class ListeningFlag: Sendable {
    let value = Atomic<Bool>(false)
}
