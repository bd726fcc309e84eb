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

    public func removeValue(forKey key: String) async throws {
        if case .error(let message) = try await client.command(["DEL", .string(key)]) { throw RedisCacheError(message: message) }
    }
}

/// Redis refused a cache command.
struct RedisCacheError: Error, CustomStringConvertible {
    let message: String
    var description: String { "Redis: \(message)" }
}
