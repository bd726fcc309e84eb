import PortcullisRedis

/// Shared state in Redis: every decision is one Lua script, atomic on the server, so any
/// number of replicas share one limit and one budget. Keys carry a `{…}` hash tag so that a
/// script's keys land in one Redis Cluster slot.
public final class RedisSharedState: SharedState {
    private let client: RedisClient
    private let prefix: String

    public init(client: RedisClient, prefix: String = "portcullis") {
        self.client = client
        self.prefix = prefix
    }

    static let consumeScript = RedisScript("""
        local current = tonumber(redis.call('GET', KEYS[1]) or '0')
        local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
        local cost = tonumber(ARGV[1])
        local limit = tonumber(ARGV[2])
        local weight = tonumber(ARGV[3])
        if previous * weight + current + cost > limit then
          return {0, current, previous}
        end
        redis.call('INCRBY', KEYS[1], cost)
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        return {1, current, previous}
        """)

    /// Reserves ARGV[1] under cap ARGV[2] (TTL ARGV[3] ms); 1 when reserved, 0 when refused.
    private static let reserveBody = """
        local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
        local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
        local amount = tonumber(ARGV[1])
        if spent + reserved + amount > tonumber(ARGV[2]) then
          return 0
        end
        redis.call('HINCRBY', KEYS[1], 'reserved', amount)
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        return 1
        """

    static let reserveScript = RedisScript(reserveBody)

    /// The same, answering -1 without reserving when the entry does not exist yet.
    static let reserveKnownScript = RedisScript("if redis.call('EXISTS', KEYS[1]) == 0 then\n  return -1\nend\n" + reserveBody)

    static let seedScript = RedisScript("""
        if redis.call('EXISTS', KEYS[1]) == 1 then
          return 0
        end
        redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return 1
        """)

    static let settleScript = RedisScript("""
        if redis.call('EXISTS', KEYS[1]) == 0 then
          return 0
        end
        local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
        local release = math.min(reserved, tonumber(ARGV[1]))
        redis.call('HINCRBY', KEYS[1], 'reserved', -release)
        redis.call('HINCRBY', KEYS[1], 'spent', tonumber(ARGV[2]))
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        return 1
        """)

    private func milliseconds(_ seconds: Double) -> RESPArgument {
        .int(max(1, Int64((seconds * 1000).rounded(.up))))
    }

    public func consume(key: String, cost: Int64, limit: Int64, window: Double, now: Double) async throws -> WindowDecision {
        let (index, fraction) = SlidingWindow.position(now: now, window: window)
        let base = "\(prefix):rate:{\(key)}"
        let reply = try await client.evaluate(Self.consumeScript, keys: ["\(base):\(index)", "\(base):\(index - 1)"],
                                              arguments: [.int(cost), .int(limit), .double(1 - fraction), milliseconds(2 * window)])
        guard let values = reply.array, values.count == 3, let admitted = values[0].integer, let current = values[1].integer,
              let previous = values[2].integer else {
            throw RedisError(.unexpectedReply, "rate script answered \(reply)")
        }
        return SlidingWindow.decide(previous: previous, current: current, cost: cost, limit: limit, window: window,
                                    fraction: fraction, admitted: admitted == 1)
    }

    public func reserve(key: String, amount: Int64, cap: Int64, ttl: Double) async throws -> Bool {
        let reply = try await client.evaluate(Self.reserveScript, keys: ["\(prefix):budget:{\(key)}"],
                                              arguments: [.int(amount), .int(cap), milliseconds(ttl)])
        return reply.integer == 1
    }

    public func reserveIfKnown(key: String, amount: Int64, cap: Int64, ttl: Double) async throws -> Bool? {
        let reply = try await client.evaluate(Self.reserveKnownScript, keys: ["\(prefix):budget:{\(key)}"],
                                              arguments: [.int(amount), .int(cap), milliseconds(ttl)])
        switch reply.integer {
        case -1: return nil
        case 1: return true
        default: return false
        }
    }

    public func seed(key: String, spent: Int64, ttl: Double) async throws -> Bool {
        let reply = try await client.evaluate(Self.seedScript, keys: ["\(prefix):budget:{\(key)}"], arguments: [.int(spent), milliseconds(ttl)])
        return reply.integer == 1
    }

    public func settle(key: String, reserved: Int64, actual: Int64, ttl: Double) async throws {
        _ = try await client.evaluate(Self.settleScript, keys: ["\(prefix):budget:{\(key)}"],
                                      arguments: [.int(reserved), .int(actual), milliseconds(ttl)])
    }

    public func balance(key: String) async throws -> (spent: Int64, reserved: Int64) {
        let reply = try await client.command(["HMGET", .string("\(prefix):budget:{\(key)}"), "spent", "reserved"])
        let values = reply.array ?? []
        return (values.first?.integer ?? 0, values.dropFirst().first?.integer ?? 0)
    }
}
