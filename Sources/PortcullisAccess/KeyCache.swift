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

    /// The cached record for the full key text, if still fresh.
    public func record(for key: String) -> APIKeyRecord? {
        let now = ContinuousClock.now
        return entries.withLock { entries in
            guard let entry = entries[key] else { return nil }
            guard entry.expiresAt > now else {
                entries[key] = nil
                return nil
            }
            return entry.record
        }
    }

    /// Remembers a record validated for `key`.
    public func store(_ record: APIKeyRecord, for key: String) {
        let expiry = ContinuousClock.now + ttl
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

/// Carries revocations to every replica.
public protocol RevocationBus: Sendable {
    /// Tells every replica (this one included) that `keyID` is revoked.
    func announce(keyID: String) async throws
    /// Calls `onRevocation` with each announced key id until the task is cancelled; throws
    /// when the bus is lost (revocations may then have been missed).
    func listen(_ onRevocation: @escaping @Sendable (String) -> Void) async throws
}

/// Revocations over Redis pub/sub: every replica subscribes to one channel.
public struct RedisRevocationBus: RevocationBus {
    public let client: RedisClient
    public let channel: String

    public init(client: RedisClient, channel: String = "portcullis:revocations") {
        self.client = client
        self.channel = channel
    }

    public func announce(keyID: String) async throws {
        try await client.publish(keyID, to: channel)
    }

    public func listen(_ onRevocation: @escaping @Sendable (String) -> Void) async throws {
        let subscription = try await client.subscribe(to: [channel])
        do {
            for try await message in subscription.messages { onRevocation(message.text) }
        } catch {
            await subscription.close()
            throw error
        }
        await subscription.close()
        if !Task.isCancelled { throw RedisError(.connection, "the revocation subscription ended") }
    }
}

/// Revocations within one process (the embedded default).
public final class InProcessRevocationBus: RevocationBus {
    private let listeners = Mutex<[UInt64: @Sendable (String) -> Void]>([:])
    private let nextListener = Atomic<UInt64>(0)

    public init() {}

    public func announce(keyID: String) async throws {
        for listener in listeners.withLock({ Array($0.values) }) { listener(keyID) }
    }

    public func listen(_ onRevocation: @escaping @Sendable (String) -> Void) async throws {
        let id = nextListener.wrappingAdd(1, ordering: .relaxed).newValue
        listeners.withLock { $0[id] = onRevocation }
        defer { listeners.withLock { $0[id] = nil } }
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 3_600_000_000_000)
        }
    }
}

/// Keeps a replica's key cache in step with revocations announced anywhere: invalidates
/// revoked keys as they are heard and, whenever the bus was lost, flushes the cache before
/// listening again.
public struct RevocationListener: Service {
    public let bus: any RevocationBus
    public let cache: ValidatedKeyCache
    /// Pause before listening again after losing the bus, seconds.
    public let retryDelay: Double

    public init(bus: any RevocationBus, cache: ValidatedKeyCache, retryDelay: Double = 0.5) {
        self.bus = bus
        self.cache = cache
        self.retryDelay = retryDelay
    }

    public func run() async throws {
        let cache = self.cache
        try await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await bus.listen { cache.invalidate(keyID: $0) }
                } catch {
                    cache.flush()
                }
                try? await Task.sleep(nanoseconds: UInt64(retryDelay * 1_000_000_000))
            }
        }
    }
}
