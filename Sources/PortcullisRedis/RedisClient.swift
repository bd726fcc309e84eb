import NIOCore
import NIOPosix
import NIOSSL
import PortcullisCore
import Synchronization

/// How to reach Redis: one server, or the master that Sentinel names.
public struct RedisConfiguration: Sendable, Equatable {
    /// The server, when not using Sentinel.
    public var endpoint: RedisEndpoint
    public var username: String?
    public var password: String?
    public var database: Int
    /// Connections in the pool; commands are pipelined, so a few serve many requests.
    public var poolSize: Int
    public var connectTimeout: TimeAmount
    /// Sentinels to ask for the master's address; empty for a plain server.
    public var sentinels: [RedisEndpoint]
    /// The master's name as Sentinel knows it.
    public var sentinelMasterName: String?

    public init(endpoint: RedisEndpoint, username: String? = nil, password: String? = nil, database: Int = 0, poolSize: Int = 4,
                connectTimeout: TimeAmount = .seconds(5), sentinels: [RedisEndpoint] = [], sentinelMasterName: String? = nil) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.poolSize = max(1, poolSize)
        self.connectTimeout = connectTimeout
        self.sentinels = sentinels
        self.sentinelMasterName = sentinelMasterName
    }

    /// Reads `redis://[user:password@]host[:port][/database]` (`rediss://` for TLS), or
    /// `redis-sentinel://[user:password@]host[:port],host[:port]…/master[/database]`
    /// (`rediss-sentinel://` for TLS): the sentinels to ask for the master named `master`
    /// (their port defaults to 26379), the credentials and database being the master's.
    public init(url: String) throws {
        let schemes: [(prefix: String, useTLS: Bool, sentinel: Bool)] = [
            ("rediss-sentinel://", true, true), ("redis-sentinel://", false, true), ("rediss://", true, false), ("redis://", false, false),
        ]
        guard let scheme = schemes.first(where: { url.hasPrefix($0.prefix) }) else {
            throw RedisError(.connection, "a Redis URL starts with redis://, rediss://, redis-sentinel:// or rediss-sentinel://")
        }
        var rest = url.dropFirst(scheme.prefix.count)
        var username: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let user = credentials[..<colon]
                username = user.isEmpty ? nil : String(user)
                password = String(credentials[credentials.index(after: colon)...]).removingPercentEncodingIfPossible
            } else {
                password = String(credentials).removingPercentEncodingIfPossible
            }
        }
        var path: [Substring] = []
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...].split(separator: "/", omittingEmptySubsequences: false)
            rest = rest[..<slash]
        }
        var masterName: String?
        if scheme.sentinel {
            guard let name = path.first, !name.isEmpty else {
                throw RedisError(.connection, "a redis-sentinel URL names the master after the sentinels: redis-sentinel://host:26379,host:26379/mymaster")
            }
            masterName = String(name)
            path.removeFirst()
        }
        var database = 0
        if let number = path.first, !number.isEmpty {
            guard path.count == 1, let value = Int(number), value >= 0 else { throw RedisError(.connection, "invalid database '\(number)' in Redis URL") }
            database = value
        }
        let defaultPort = scheme.sentinel ? 26379 : 6379
        let hosts = try rest.split(separator: ",", omittingEmptySubsequences: false).map { try Self.endpoint($0, defaultPort: defaultPort, useTLS: scheme.useTLS) }
        guard let first = hosts.first else { throw RedisError(.connection, "missing host in Redis URL") }
        guard scheme.sentinel || hosts.count == 1 else { throw RedisError(.connection, "only a redis-sentinel URL lists several hosts") }
        self.init(endpoint: first, username: username, password: password, database: database,
                  sentinels: scheme.sentinel ? hosts : [], sentinelMasterName: masterName)
    }

    /// `host[:port]` (IPv6 in brackets) as an endpoint.
    static func endpoint(_ text: Substring, defaultPort: Int, useTLS: Bool) throws -> RedisEndpoint {
        var host = String(text)
        var port = defaultPort
        if let colon = text.lastIndex(of: ":"), !text.hasPrefix("[") || text[..<colon].hasSuffix("]") {
            guard let number = Int(text[text.index(after: colon)...]) else { throw RedisError(.connection, "invalid port in Redis URL") }
            port = number
            host = String(text[..<colon])
        }
        host = host.trimmingCharacters(in: ["[", "]"])
        guard !host.isEmpty else { throw RedisError(.connection, "missing host in Redis URL") }
        return RedisEndpoint(host: host, port: port, useTLS: useTLS)
    }
}

extension String {
    fileprivate var removingPercentEncodingIfPossible: String {
        guard contains("%") else { return self }
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
               let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    fileprivate func trimmingCharacters(in set: Set<Character>) -> String {
        String(drop(while: { set.contains($0) }).reversed().drop(while: { set.contains($0) }).reversed())
    }
}

/// A pooled, pipelining Redis client: commands go round-robin over a few connections,
/// broken connections are replaced on next use, and Sentinel (when configured) names the master.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let tlsConfiguration: TLSConfiguration?
    private let slots: Mutex<[RedisConnection?]>
    private let next = Atomic<Int>(0)

    public init(configuration: RedisConfiguration, tlsConfiguration: TLSConfiguration? = nil) {
        self.configuration = configuration
        self.tlsConfiguration = tlsConfiguration
        self.slots = Mutex(Array(repeating: nil, count: configuration.poolSize))
    }

    /// The master's address: the configured endpoint, or the first Sentinel's answer.
    public func resolveMaster() async throws -> RedisEndpoint {
        guard let name = configuration.sentinelMasterName, !configuration.sentinels.isEmpty else { return configuration.endpoint }
        var problems: [String] = []
        for sentinel in configuration.sentinels {
            do {
                let connection = try await RedisConnection.connect(to: sentinel, tlsConfiguration: tlsConfiguration,
                                                                   connectTimeout: configuration.connectTimeout)
                let answer = await Result(catching: { try await connection.command(["SENTINEL", "get-master-addr-by-name", .string(name)]) })
                await connection.close()
                let reply = try answer.get()
                guard let parts = reply.array, parts.count == 2, let host = parts[0].string, let port = parts[1].integer else {
                    problems.append("\(sentinel.host):\(sentinel.port) does not know '\(name)'")
                    continue
                }
                return RedisEndpoint(host: host, port: Int(port), useTLS: configuration.endpoint.useTLS)
            } catch {
                problems.append("\(sentinel.host):\(sentinel.port): \(error)")
            }
        }
        throw RedisError(.connection, "no Sentinel named a master for '\(name)': " + problems.joined(separator: "; "))
    }

    private func openConnection(onMessage: (@Sendable (RedisMessage) -> Void)? = nil,
                                onClose: (@Sendable (RedisError) -> Void)? = nil) async throws -> RedisConnection {
        let master = try await resolveMaster()
        return try await RedisConnection.connect(to: master, username: configuration.username, password: configuration.password,
                                                 database: configuration.database, tlsConfiguration: tlsConfiguration,
                                                 connectTimeout: configuration.connectTimeout, onMessage: onMessage, onClose: onClose)
    }

    /// A live pooled connection, opening one in its slot when needed: the next in turn, or,
    /// given an affinity, always the same one for it (commands with one affinity then reach
    /// the server in the order they were written).
    func connection(affinity: String? = nil) async throws -> RedisConnection {
        let turn = affinity.map { $0.hashValue & Int.max } ?? next.wrappingAdd(1, ordering: .relaxed).oldValue
        let index = turn % configuration.poolSize
        if let existing = slots.withLock({ $0[index] }), existing.isActive { return existing }
        let fresh = try await openConnection()
        let (kept, spare) = slots.withLock { slots -> (RedisConnection, RedisConnection?) in
            if let current = slots[index], current.isActive { return (current, fresh) }
            slots[index] = fresh
            return (fresh, nil)
        }
        if let spare { await spare.close() }
        return kept
    }

    /// Sends one command; error replies are thrown.
    @discardableResult
    public func command(_ arguments: [RESPArgument]) async throws -> RESPValue {
        try await connection().command(arguments)
    }

    /// Sends several commands in one write on one connection; replies (error replies included) in order.
    public func pipeline(_ commands: [[RESPArgument]]) async throws -> [RESPValue] {
        try await connection().pipeline(commands)
    }

    /// Runs a Lua script by its SHA, loading it first if the server does not know it.
    ///
    /// - Parameter affinity: commands with the same affinity go over the same connection, in order.
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [RESPArgument], affinity: String? = nil) async throws -> RESPValue {
        let connection = try await connection(affinity: affinity)
        let tail: [RESPArgument] = [.int(Int64(keys.count))] + keys.map(RESPArgument.string) + arguments
        let reply = try await connection.send(["EVALSHA", .string(script.sha1)] + tail)
        if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
            return try await connection.command(["EVAL", .string(script.source)] + tail)
        }
        if case .error(let message) = reply { throw RedisError(.reply, message) }
        return reply
    }

    /// Runs a Lua script without waiting for its reply: returns once the command is queued on
    /// the connection for `affinity`, so that a later command with that affinity is applied
    /// after it. An error reply goes to `onError`; a server that lost the script (restarted)
    /// gets its source then, after which the order with later commands is no longer assured.
    public func evaluateWithoutReply(_ script: RedisScript, keys: [String], arguments: [RESPArgument], affinity: String,
                                     onError: @escaping @Sendable (any Error) -> Void) async throws {
        let connection = try await connection(affinity: affinity)
        let tail: [RESPArgument] = [.int(Int64(keys.count))] + keys.map(RESPArgument.string) + arguments
        // Load the script ahead of its first use on this connection, in the same queue: a
        // NOSCRIPT answer would be retried later, after commands that must come after it.
        if connection.needsLoading(script.sha1) {
            connection.queue(["SCRIPT", "LOAD", .string(script.source)]).whenFailure { onError($0) }
        }
        let reply = connection.queue(["EVALSHA", .string(script.sha1)] + tail)
        reply.whenComplete { result in
            switch result {
            case .failure(let error): onError(error)
            case .success(.error(let message)) where message.hasPrefix("NOSCRIPT"):
                Task {
                    do { _ = try await connection.command(["EVAL", .string(script.source)] + tail) } catch { onError(error) }
                }
            case .success(.error(let message)): onError(RedisError(.reply, message))
            case .success: break
            }
        }
    }

    /// Publishes `message` on `channel`; returns how many subscribers received it.
    @discardableResult
    public func publish(_ message: String, to channel: String) async throws -> Int64 {
        try await command(["PUBLISH", .string(channel), .string(message)]).integer ?? 0
    }

    /// Subscribes to `channels` on a dedicated connection.
    ///
    /// The subscription's stream ends with an error when the connection is lost; callers
    /// that must not miss broadcasts subscribe again and reconcile.
    public func subscribe(to channels: [String]) async throws -> RedisSubscription {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: RedisMessage.self)
        let connection = try await openConnection(
            onMessage: { continuation.yield($0) },
            onClose: { continuation.finish(throwing: $0) })
        let name = "portcullis-subscriber-\(UInt64.random(in: 0...UInt64.max))"
        do {
            let replies = try await connection.pipeline([["CLIENT", "SETNAME", .string(name)], ["SUBSCRIBE"] + channels.map(RESPArgument.string)])
            for reply in replies { if case .error(let message) = reply { throw RedisError(.reply, message) } }
            // SUBSCRIBE answers once per channel; the first confirmation arrived, the rest are consumed by the handler.
        } catch {
            await connection.close()
            throw error
        }
        return RedisSubscription(connection: connection, messages: stream, clientName: name)
    }

    /// Closes every pooled connection.
    public func shutdown() async {
        let all = slots.withLock { slots -> [RedisConnection] in
            let open = slots.compactMap { $0 }
            slots = Array(repeating: nil, count: slots.count)
            return open
        }
        for connection in all { await connection.close() }
    }
}

/// Messages on subscribed channels, until `close()` or until the connection is lost.
public struct RedisSubscription: Sendable {
    let connection: RedisConnection
    /// The messages, in order of arrival.
    public let messages: AsyncThrowingStream<RedisMessage, any Error>
    /// The connection's name on the server (`CLIENT LIST`), for operators and tests.
    public let clientName: String

    /// Ends the subscription.
    public func close() async {
        await connection.close()
    }
}

/// A Lua script with its SHA-1, for `EVALSHA`.
public struct RedisScript: Sendable {
    public let source: String
    public let sha1: String

    public init(_ source: String) {
        self.source = source
        self.sha1 = SHA1.hex(Array(source.utf8))
    }
}

/// SHA-1, only to name Lua scripts the way Redis does (not for security).
enum SHA1 {
    static func hex(_ message: [UInt8]) -> String {
        var h0: UInt32 = 0x6745_2301, h1: UInt32 = 0xEFCD_AB89, h2: UInt32 = 0x98BA_DCFE, h3: UInt32 = 0x1032_5476, h4: UInt32 = 0xC3D2_E1F0
        var data = message
        let bitLength = UInt64(message.count) * 8
        data.append(0x80)
        while data.count % 64 != 56 { data.append(0) }
        for shift in stride(from: 56, through: 0, by: -8) { data.append(UInt8(truncatingIfNeeded: bitLength >> UInt64(shift))) }
        var words = [UInt32](repeating: 0, count: 80)
        for chunk in stride(from: 0, to: data.count, by: 64) {
            for index in 0..<16 {
                let base = chunk + index * 4
                words[index] = UInt32(data[base]) << 24 | UInt32(data[base + 1]) << 16 | UInt32(data[base + 2]) << 8 | UInt32(data[base + 3])
            }
            for index in 16..<80 {
                let value = words[index - 3] ^ words[index - 8] ^ words[index - 14] ^ words[index - 16]
                words[index] = value << 1 | value >> 31
            }
            var a = h0, b = h1, c = h2, d = h3, e = h4
            for index in 0..<80 {
                let (f, k): (UInt32, UInt32)
                switch index {
                case 0..<20: (f, k) = ((b & c) | (~b & d), 0x5A82_7999)
                case 20..<40: (f, k) = (b ^ c ^ d, 0x6ED9_EBA1)
                case 40..<60: (f, k) = ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC)
                default: (f, k) = (b ^ c ^ d, 0xCA62_C1D6)
                }
                let temp = (a << 5 | a >> 27) &+ f &+ e &+ k &+ words[index]
                e = d
                d = c
                c = b << 30 | b >> 2
                b = a
                a = temp
            }
            h0 = h0 &+ a
            h1 = h1 &+ b
            h2 = h2 &+ c
            h3 = h3 &+ d
            h4 = h4 &+ e
        }
        return [h0, h1, h2, h3, h4].map { word in
            let text = String(word, radix: 16)
            return String(repeating: "0", count: 8 - text.count) + text
        }.joined()
    }
}
