import PortcullisRedis
import Synchronization

/// Shared state in Redis: every decision is one Lua script, atomic on the server, so any
/// number of replicas share one limit and one budget. A whole admission (every window, slot
/// and budget of the key, user, team and model) is one script and one round trip; its keys
/// span several subjects, so it needs one Redis server (standalone, or the master Sentinel
/// names), which is what `RedisClient` talks to.
public final class RedisSharedState: SharedState {
    private let client: RedisClient
    private let prefix: String
    private let settleFailures = Atomic<Int>(0)

    /// Settlements the server refused or that were lost with their connection.
    public var failedSettlements: Int { settleFailures.load(ordering: .relaxed) }

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

    /// Every part of one settlement in one round trip: `a cost ttl` adds to a window (key: the
    /// current window; a negative cost gives room back to a window that still exists, down to
    /// zero at most), `s reserved actual ttl` settles a reservation that still exists.
    static let settleAllScript = RedisScript("""
        local k = 1
        local a = 1
        while a <= #ARGV do
          if ARGV[a] == 'a' then
            local cost = tonumber(ARGV[a + 1])
            if cost >= 0 then
              redis.call('INCRBY', KEYS[k], cost)
              redis.call('PEXPIRE', KEYS[k], ARGV[a + 2])
            elseif redis.call('EXISTS', KEYS[k]) == 1 then
              -- Room given back: never below zero, and nothing on a window Redis no longer has.
              if redis.call('INCRBY', KEYS[k], cost) < 0 then
                redis.call('SET', KEYS[k], 0, 'KEEPTTL')
              end
            end
            a = a + 3
          else
            if redis.call('EXISTS', KEYS[k]) == 1 then
              local reserved = tonumber(redis.call('HGET', KEYS[k], 'reserved') or '0')
              redis.call('HINCRBY', KEYS[k], 'reserved', -math.min(reserved, tonumber(ARGV[a + 1])))
              if ARGV[a + 2] ~= '0' then
                redis.call('HINCRBY', KEYS[k], 'spent', ARGV[a + 2])
              end
              redis.call('PEXPIRE', KEYS[k], ARGV[a + 3])
            end
            a = a + 4
          end
          k = k + 1
        end
        return 1
        """)

    /// Every check of one admission in one round trip, all or nothing, leasing room ahead
    /// (see `LeasingSharedState`; `admit` leases nothing ahead). ARGV holds one group
    /// per check, `w cost limit weight ttl extra` (keys: current and previous window) or
    /// `r amount cap ttl mustExist extra` (key: the entry); a cost of 0 (a lease already holds
    /// it) always passes. Each check that passes is granted its
    /// cost plus up to `extra`, never more than a quarter of the room left after the cost, so
    /// that replicas leasing at once leave each other room and leases shrink near a limit.
    /// Answers `{ok, …}` with `pass current previous grant` per window and `state grant` per
    /// reservation (`1 | 0 | -1`); applies the grants only when ok is 1.
    static let leaseScript = RedisScript("""
        local out = {0}
        local grants = {}
        local ok = 1
        local k = 1
        local a = 1
        while a <= #ARGV do
          local cost = tonumber(ARGV[a + 1])
          local extra = tonumber(ARGV[a + 5])
          if ARGV[a] == 'w' then
            local current = tonumber(redis.call('GET', KEYS[k]) or '0')
            local previous = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
            local room = tonumber(ARGV[a + 2]) - (previous * tonumber(ARGV[a + 3]) + current) - cost
            local pass = 1
            local grant = 0
            if room < 0 and cost > 0 then
              pass = 0
              ok = 0
            else
              grant = cost + math.max(0, math.min(extra, math.floor(room / 4)))
            end
            grants[#grants + 1] = grant
            out[#out + 1] = pass
            out[#out + 1] = current
            out[#out + 1] = previous
            out[#out + 1] = grant
            k = k + 2
          else
            local state = 1
            local grant = 0
            if ARGV[a + 4] == '1' and redis.call('EXISTS', KEYS[k]) == 0 then
              state = -1
            else
              local entry = redis.call('HMGET', KEYS[k], 'spent', 'reserved')
              local room = tonumber(ARGV[a + 2]) - tonumber(entry[1] or '0') - tonumber(entry[2] or '0') - cost
              if room < 0 and cost > 0 then
                state = 0
              else
                grant = cost + math.max(0, math.min(extra, math.floor(room / 4)))
              end
            end
            if state ~= 1 then
              ok = 0
            end
            grants[#grants + 1] = grant
            out[#out + 1] = state
            out[#out + 1] = grant
            k = k + 1
          end
          a = a + 6
        end
        if ok == 1 then
          k = 1
          a = 1
          local g = 1
          while a <= #ARGV do
            if ARGV[a] == 'w' then
              redis.call('INCRBY', KEYS[k], grants[g])
              redis.call('PEXPIRE', KEYS[k], ARGV[a + 4])
              k = k + 2
            else
              redis.call('HINCRBY', KEYS[k], 'reserved', grants[g])
              redis.call('PEXPIRE', KEYS[k], ARGV[a + 3])
              k = k + 1
            end
            g = g + 1
            a = a + 6
          end
        end
        out[1] = ok
        return out
        """)

    /// One check's answer to `lease`: the outcome as `admit` gives it, and how much was
    /// granted (the check's own cost included; 0 when it did not pass or nothing was applied).
    public struct LeaseAnswer: Sendable, Equatable {
        public var outcome: LimitOutcome
        public var granted: Int64
    }

    /// `admit`, granting each check up to `extras[i]` more than it costs (see `leaseScript`).
    public func lease(_ checks: [LimitCheck], extras: [Int64], affinity: String, now: Double) async throws -> [LeaseAnswer] {
        var keys: [String] = []
        var arguments: [RESPArgument] = []
        var fractions: [Double] = []
        for (check, extra) in zip(checks, extras) {
            switch check {
            case .window(let key, let cost, let limit, let window):
                let (index, fraction) = SlidingWindow.position(now: now, window: window)
                keys += ["\(windowKey(key)):\(index)", "\(windowKey(key)):\(index - 1)"]
                arguments += ["w", .int(cost), .int(limit), .double(1 - fraction), milliseconds(2 * window), .int(extra)]
                fractions.append(fraction)
            case .reserve(let key, let amount, let cap, let ttl, let mustExist):
                keys.append(budgetKey(key))
                arguments += ["r", .int(amount), .int(cap), milliseconds(ttl), mustExist ? "1" : "0", .int(extra)]
            }
        }
        let reply = try await client.evaluate(Self.leaseScript, keys: keys, arguments: arguments, affinity: affinity)
        guard let values = reply.array, let ok = values.first?.integer else {
            throw RedisError(.unexpectedReply, "lease script answered \(reply)")
        }
        var answers: [LeaseAnswer] = []
        var position = 1
        var windows = 0
        func next() throws -> Int64 {
            guard position < values.count, let value = values[position].integer else { throw RedisError(.unexpectedReply, "lease script answered \(reply)") }
            position += 1
            return value
        }
        for check in checks {
            switch check {
            case .window(_, let cost, let limit, let window):
                let passes = try next() == 1
                let current = try next()
                let previous = try next()
                let grant = try next()
                let decision = SlidingWindow.decide(previous: previous, current: current, cost: cost, limit: limit, window: window,
                                                    fraction: fractions[windows], admitted: passes)
                answers.append(LeaseAnswer(outcome: .window(decision), granted: ok == 1 ? grant : 0))
                windows += 1
            case .reserve:
                let state = try next()
                let grant = try next()
                answers.append(LeaseAnswer(outcome: .reserve(state == 1 ? true : (state == 0 ? false : nil)), granted: ok == 1 ? grant : 0))
            }
        }
        return answers
    }

    /// What a replica gives back or reports of its leases, in one script without waiting for
    /// the reply: `window(key, index, delta)` adds `delta` (negative: unused room returned) to
    /// fixed window `index`; `budget(key, release, spent)` releases `release` of the reservation
    /// and records `spent` (nothing when the entry is gone). `confirmed` waits for Redis to
    /// have applied them (periodic flushes and shutdown: a caller may read or exit next);
    /// otherwise the request path does not wait for the reply.
    public enum LeaseReturn: Sendable, Equatable {
        case window(key: String, index: Int64, delta: Int64, window: Double)
        case budget(key: String, release: Int64, spent: Int64, ttl: Double)
    }

    public func giveBack(_ returns: [LeaseReturn], affinity: String, confirmed: Bool = false) async throws {
        guard !returns.isEmpty else { return }
        var keys: [String] = []
        var arguments: [RESPArgument] = []
        for item in returns {
            switch item {
            case .window(let key, let index, let delta, let window):
                keys.append("\(windowKey(key)):\(index)")
                arguments += ["a", .int(delta), milliseconds(2 * window)]
            case .budget(let key, let release, let spent, let ttl):
                keys.append(budgetKey(key))
                arguments += ["s", .int(release), .int(spent), milliseconds(ttl)]
            }
        }
        if confirmed {
            _ = try await client.evaluate(Self.settleAllScript, keys: keys, arguments: arguments, affinity: affinity)
            return
        }
        try await client.evaluateWithoutReply(Self.settleAllScript, keys: keys, arguments: arguments, affinity: affinity) { [self] _ in
            settleFailures.add(1, ordering: .relaxed)
        }
    }

    private func windowKey(_ key: String) -> String { "\(prefix):rate:{\(key)}" }
    private func budgetKey(_ key: String) -> String { "\(prefix):budget:{\(key)}" }

    /// Every check of one admission in one round trip, all or nothing: `lease` with nothing
    /// leased ahead.
    public func admit(_ checks: [LimitCheck], affinity: String, now: Double) async throws -> [LimitOutcome] {
        try await lease(checks, extras: Array(repeating: 0, count: checks.count), affinity: affinity, now: now).map(\.outcome)
    }

    public func settle(_ settlements: [LimitSettlement], affinity: String, now: Double) async throws {
        guard !settlements.isEmpty else { return }
        var keys: [String] = []
        var arguments: [RESPArgument] = []
        for settlement in settlements {
            switch settlement {
            case .add(let key, let cost, let window):
                keys.append("\(windowKey(key)):\(SlidingWindow.position(now: now, window: window).index)")
                arguments += ["a", .int(cost), milliseconds(2 * window)]
            case .settle(let key, let reserved, let actual, let ttl):
                keys.append(budgetKey(key))
                arguments += ["s", .int(reserved), .int(actual), milliseconds(ttl)]
            }
        }
        // Not waiting for the reply saves a round trip per request; the connection chosen by
        // the affinity carries the next admission after this settlement (a freed concurrency
        // slot is free for the caller's next request). Spend is recorded durably elsewhere, so
        // a settlement lost with its connection only leaves a reservation to expire.
        try await client.evaluateWithoutReply(Self.settleAllScript, keys: keys, arguments: arguments, affinity: affinity) { [self] _ in
            settleFailures.add(1, ordering: .relaxed)
        }
    }

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
