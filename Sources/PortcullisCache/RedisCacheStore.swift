import NIOCore
import PortcullisRedis

/// The shared tier of the cache in Redis: one string per entry with Redis's own expiry, so
/// every replica sees what any stored and nothing outlives its lifetime.
public struct RedisCacheStore: SharedCacheStore {
    let client: RedisClient

    public init(client: RedisClient) {
        self.client = client
    }

    public func value(forKey key: String) async throws -> [UInt8]? {
        switch try await client.command(["GET", .string(key)]) {
        case .bulkString(let buffer?): return Array(buffer.readableBytesView)
        case .bulkString(nil): return nil
        case .error(let message): throw RedisCacheError(message: message)
        default: throw RedisCacheError(message: "GET answered with something other than a string")
        }
    }

    public func set(_ bytes: [UInt8], forKey key: String, ttlSeconds: Double) async throws {
        let milliseconds = max(1, Int64((ttlSeconds * 1000).rounded(.up)))
        if case .error(let message) = try await client.command(["SET", .string(key), .bytes(ByteBuffer(bytes: bytes)), "PX", .int(milliseconds)]) {
            throw RedisCacheError(message: message)
        }
    }

    public func add(_ member: String, toSet key: String, ttlSeconds: Double) async throws {
        let milliseconds = max(1, Int64((ttlSeconds * 1000).rounded(.up)))
        // NX gives a new set its lifetime, GT lengthens an older one's: it outlives every member's entry.
        let replies = try await client.pipeline([["SADD", .string(key), .string(member)], ["PEXPIRE", .string(key), .int(milliseconds), "NX"],
                                                 ["PEXPIRE", .string(key), .int(milliseconds), "GT"]])
        if let failure = replies.first(where: { if case .error = $0 { true } else { false } }), case .error(let message) = failure {
            throw RedisCacheError(message: message)
        }
    }

    public func members(ofSet key: String) async throws -> [String] {
        switch try await client.command(["SMEMBERS", .string(key)]) {
        case .array(let items?): return items.compactMap(\.string)
        case .array(nil): return []
        case .error(let message): throw RedisCacheError(message: message)
        default: throw RedisCacheError(message: "SMEMBERS answered with something other than an array")
        }
    }

    public func removeValue(forKey key: String) async throws {
        if case .error(let message) = try await client.command(["DEL", .string(key)]) { throw RedisCacheError(message: message) }
    }
}

/// Redis refused a cache command.
struct RedisCacheError: Error, CustomStringConvertible {
    let message: String
    var description: String { "Redis: \(message)" }
}
