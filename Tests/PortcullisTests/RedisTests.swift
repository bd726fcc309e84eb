import Foundation
import NIOCore
@testable import PortcullisRedis
import Testing

@Suite("RESP codec")
struct RESPCodecTests {
    static let wire = "+OK\r\n-ERR bad thing\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*3\r\n:1\r\n$0\r\n\r\n*1\r\n+x\r\n"
    static let values: [RESPValue] = [
        .simpleString("OK"), .error("ERR bad thing"), .integer(42), .bulkString(ByteBuffer(string: "hello")), .bulkString(nil),
        .array(nil), .array([.integer(1), .bulkString(ByteBuffer()), .array([.simpleString("x")])]),
    ]

    @Test("parses the same values however the bytes are split")
    func splitAnywhere() throws {
        let bytes = Array(Self.wire.utf8)
        for split in 0...bytes.count {
            var parser = RESPParser()
            var values: [RESPValue] = []
            parser.append(ByteBuffer(bytes: bytes[..<split]))
            while let value = try parser.next() { values.append(value) }
            parser.append(ByteBuffer(bytes: bytes[split...]))
            while let value = try parser.next() { values.append(value) }
            #expect(values == Self.values, "split at \(split)")
        }
    }

    @Test("refuses bytes that are not RESP", arguments: ["?x\r\n", "$abc\r\n", ":12a\r\n", "$3\r\nabcde", "+no carriage\n"])
    func refuses(text: String) {
        #expect(throws: RESPProtocolError.self) {
            var parser = RESPParser()
            parser.append(ByteBuffer(string: text))
            while try parser.next() != nil {}
        }
    }

    @Test("bounds nesting and bulk sizes")
    func bounds() {
        #expect(throws: RESPProtocolError.self) {
            var parser = RESPParser()
            parser.append(ByteBuffer(string: String(repeating: "*1\r\n", count: 100)))
            _ = try parser.next()
        }
        #expect(throws: RESPProtocolError.self) {
            var parser = RESPParser()
            parser.append(ByteBuffer(string: "$99999999999\r\n"))
            _ = try parser.next()
        }
    }

    @Test("encodes commands as arrays of bulk strings")
    func encode() {
        var buffer = ByteBuffer()
        RESPEncoder.encodeCommand(["SET", "k", .bytes(ByteBuffer(string: "välue"))], into: &buffer)
        #expect(String(buffer: buffer) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nvälue\r\n")
    }

    @Test("names scripts with SHA-1 like Redis does")
    func sha1() {
        #expect(SHA1.hex([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hex(Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(SHA1.hex(Array(String(repeating: "a", count: 1000).utf8)) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }

    @Test("reads Redis URLs")
    func urls() throws {
        let plain = try RedisConfiguration(url: "redis://127.0.0.1:26379")
        #expect(plain.endpoint == RedisEndpoint(host: "127.0.0.1", port: 26379))
        let full = try RedisConfiguration(url: "rediss://app:s%40cret@cache.internal:6380/2")
        #expect(full.endpoint == RedisEndpoint(host: "cache.internal", port: 6380, useTLS: true))
        #expect(full.username == "app")
        #expect(full.password == "s@cret")
        #expect(full.database == 2)
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "http://x") }
        let watched = try RedisConfiguration(url: "redis-sentinel://:pw@10.0.0.1:26380,sentinel-b,[::1]:26381/mymaster/3")
        #expect(watched.sentinels == [RedisEndpoint(host: "10.0.0.1", port: 26380), RedisEndpoint(host: "sentinel-b", port: 26379),
                                      RedisEndpoint(host: "::1", port: 26381)])
        #expect(watched.sentinelMasterName == "mymaster" && watched.database == 3 && watched.password == "pw")
        let secure = try RedisConfiguration(url: "rediss-sentinel://s1:26379/cache")
        #expect(secure.sentinels.allSatisfy(\.useTLS) && secure.sentinelMasterName == "cache" && secure.database == 0)
        for bad in ["redis-sentinel://s1:26379", "redis-sentinel://s1:26379/", "redis://a:1,b:2", "redis-sentinel://s1/m/x", "redis-sentinel://s1:port/m"] {
            #expect(throws: RedisError.self, "\(bad)") { try RedisConfiguration(url: bad) }
        }
    }
}

@Suite("Redis client against a real server", .serialized)
struct RedisClientTests {
    let prefix = "portcullis-test:\(UUID().uuidString):"

    @Test("commands, error replies and a thousand pipelined increments")
    func commandsAndPipelining() async throws {
        let client = RedisClient(configuration: try testRedisConfiguration())
        try await client.command(["SET", .string(prefix + "k"), "v1"])
        #expect(try await client.command(["GET", .string(prefix + "k")]).string == "v1")
        #expect(try await client.command(["GET", .string(prefix + "missing")]).isNull)
        await #expect(throws: RedisError.self) { try await client.command(["INCR", .string(prefix + "k")]) }
        let replies = try await client.pipeline(Array(repeating: ["INCR", .string(prefix + "n")], count: 1000))
        #expect(replies.map(\.integer) == (1...1000).map { Int64($0) })
        async let a = client.command(["INCRBY", .string(prefix + "c"), "5"])
        async let b = client.command(["INCRBY", .string(prefix + "c"), "7"])
        _ = try await (a, b)
        #expect(try await client.command(["GET", .string(prefix + "c")]).integer == 12)
        await client.shutdown()
    }

    @Test("Lua scripts run by SHA, loaded on first use")
    func scripts() async throws {
        let client = RedisClient(configuration: try testRedisConfiguration())
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1]) .. ':' .. \(Int.random(in: 0..<1_000_000))")
        let first = try await client.evaluate(script, keys: [prefix + "s"], arguments: ["3"])
        #expect(first.string?.hasPrefix("3:") == true)
        let second = try await client.evaluate(script, keys: [prefix + "s"], arguments: ["4"])
        #expect(second.string?.hasPrefix("7:") == true)
        await client.shutdown()
    }

    @Test("publish reaches a subscriber; the subscription ends when its connection is lost")
    func pubSub() async throws {
        let client = RedisClient(configuration: try testRedisConfiguration())
        let channel = prefix + "revocations"
        let subscription = try await client.subscribe(to: [channel])
        var received = subscription.messages.makeAsyncIterator()
        #expect(try await client.publish("key-1", to: channel) == 1)
        #expect(try await client.publish("key-2", to: channel) == 1)
        #expect(try await received.next()?.text == "key-1")
        #expect(try await received.next()?.text == "key-2")
        let list = try #require(try await client.command(["CLIENT", "LIST", "TYPE", "pubsub"]).string)
        let line = try #require(list.split(separator: "\n").first { $0.contains("name=\(subscription.clientName) ") })
        let id = try #require(line.split(separator: " ").first { $0.hasPrefix("id=") }?.dropFirst(3))
        try await client.command(["CLIENT", "KILL", "ID", .string(String(id))])
        await #expect(throws: (any Error).self) { _ = try await received.next() }
        await subscription.close()
        await client.shutdown()
    }

    @Test("a killed connection is replaced on the next command")
    func reconnects() async throws {
        var configuration = try testRedisConfiguration()
        configuration.poolSize = 1
        let client = RedisClient(configuration: configuration)
        try await client.command(["SET", .string(prefix + "r"), "1"])
        let id = try #require(try await client.command(["CLIENT", "ID"]).integer)
        let other = RedisClient(configuration: try testRedisConfiguration())
        try await other.command(["CLIENT", "KILL", "ID", .int(id)])
        await other.shutdown()
        var answered = false
        for _ in 0..<3 where !answered {
            if (try? await client.command(["GET", .string(prefix + "r")]))?.string == "1" { answered = true }
        }
        #expect(answered)
        await client.shutdown()
    }

    @Test("AUTH with a username and password; a wrong password is refused")
    func authentication() async throws {
        let admin = RedisClient(configuration: try testRedisConfiguration())
        let user = "portcullis-\(Int.random(in: 0..<1_000_000))"
        try await admin.command(["ACL", "SETUSER", .string(user), "on", ">s3cret", "~*", "+@all"])
        var good = try testRedisConfiguration()
        good.username = user
        good.password = "s3cret"
        let authenticated = RedisClient(configuration: good)
        #expect(try await authenticated.command(["ACL", "WHOAMI"]).string == user)
        var bad = good
        bad.password = "wrong"
        let refused = RedisClient(configuration: bad)
        await #expect(throws: RedisError.self) { try await refused.command(["PING"]) }
        try await admin.command(["ACL", "DELUSER", .string(user)])
        await authenticated.shutdown()
        await refused.shutdown()
        await admin.shutdown()
    }

    @Test("Sentinel names the master the client then uses")
    func sentinel() async throws {
        let base = try testRedisConfiguration()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-sentinel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let sentinelPort = Int.random(in: 27000..<28000)
        let configuration = directory.appendingPathComponent("sentinel.conf")
        try "port \(sentinelPort)\nbind 127.0.0.1\ndir \(directory.path)\nsentinel monitor portcullis-master \(base.endpoint.host) \(base.endpoint.port) 1\n"
            .write(to: configuration, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["redis-server", configuration.path, "--sentinel"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // SIGKILL: the test process blocks SIGTERM (signal handling for graceful shutdown) and children inherit the mask.
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        var viaSentinel = base
        viaSentinel.endpoint = RedisEndpoint(host: "127.0.0.1", port: 1)
        viaSentinel.sentinels = [RedisEndpoint(host: "127.0.0.1", port: 2), RedisEndpoint(host: "127.0.0.1", port: sentinelPort)]
        viaSentinel.sentinelMasterName = "portcullis-master"
        let client = RedisClient(configuration: viaSentinel)
        var master: RedisEndpoint?
        for _ in 0..<50 where master == nil {
            master = try? await client.resolveMaster()
            if master == nil { try await Task.sleep(nanoseconds: 100_000_000) }
        }
        #expect(master == RedisEndpoint(host: base.endpoint.host, port: base.endpoint.port))
        try await client.command(["SET", .string(prefix + "via-sentinel"), "yes"])
        let direct = RedisClient(configuration: base)
        #expect(try await direct.command(["GET", .string(prefix + "via-sentinel")]).string == "yes")
        await direct.shutdown()
        await client.shutdown()
    }
}

