import NIOCore

/// A value in the Redis serialisation protocol (RESP2).
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    /// A bulk string; `nil` is RESP's null bulk string.
    case bulkString(ByteBuffer?)
    /// An array; `nil` is RESP's null array.
    case array([RESPValue]?)

    /// The value as text, for simple and bulk strings.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let buffer?): return String(buffer: buffer)
        default: return nil
        }
    }

    /// The value as an integer, for integers and numeric strings.
    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulkString(let buffer?): return Int64(String(buffer: buffer))
        case .simpleString(let text): return Int64(text)
        default: return nil
        }
    }

    /// The elements, for non-null arrays.
    public var array: [RESPValue]? {
        if case .array(let elements?) = self { return elements }
        return nil
    }

    /// Whether this is a null bulk string or null array.
    public var isNull: Bool {
        switch self {
        case .bulkString(nil), .array(nil): return true
        default: return false
        }
    }
}

/// Encodes commands as RESP arrays of bulk strings.
public enum RESPEncoder {
    /// Appends `arguments` as one command to `buffer`.
    public static func encodeCommand(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            switch argument {
            case .string(let text):
                buffer.writeString("$\(text.utf8.count)\r\n")
                buffer.writeString(text)
            case .bytes(let bytes):
                buffer.writeString("$\(bytes.readableBytes)\r\n")
                buffer.writeImmutableBuffer(bytes)
            }
            buffer.writeStaticString("\r\n")
        }
    }
}

/// One argument of a command.
public enum RESPArgument: Sendable, Equatable, ExpressibleByStringLiteral {
    case string(String)
    case bytes(ByteBuffer)

    public init(stringLiteral value: String) { self = .string(value) }

    /// An integer argument.
    public static func int(_ value: Int64) -> RESPArgument { .string(String(value)) }
    /// A floating-point argument.
    public static func double(_ value: Double) -> RESPArgument { .string(String(value)) }
}

/// Thrown for bytes that are not RESP.
public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: String
    public var description: String { "RESP protocol error: \(reason)" }
}

/// An incremental RESP2 parser: feed it buffers as they arrive, take complete values out.
///
/// A plain state machine without I/O. It bounds bulk string size and nesting depth so a
/// broken or hostile peer cannot make it allocate without limit.
public struct RESPParser: Sendable {
    /// Largest bulk string accepted.
    public var maximumBulkLength = 512 * 1024 * 1024
    /// Deepest array nesting accepted.
    public var maximumDepth = 32
    private var buffer = ByteBuffer()

    public init() {}

    /// Adds received bytes.
    public mutating func append(_ bytes: ByteBuffer) {
        var bytes = bytes
        if buffer.readableBytes == 0 {
            buffer = bytes
        } else {
            buffer.writeBuffer(&bytes)
        }
    }

    /// The next complete value, or nil when more bytes are needed.
    public mutating func next() throws -> RESPValue? {
        var cursor = buffer
        guard let value = try parseValue(&cursor, depth: 0) else { return nil }
        buffer = cursor
        if buffer.readableBytes == 0 { buffer.clear() } else if buffer.readerIndex > 64 * 1024 { buffer.discardReadBytes() }
        return value
    }

    private func readLine(_ cursor: inout ByteBuffer) throws -> String? {
        let view = cursor.readableBytesView
        guard let lineFeed = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > 64 * 1024 { throw RESPProtocolError(reason: "line longer than 64 KiB") }
            return nil
        }
        let length = lineFeed - view.startIndex
        guard length >= 1, view[lineFeed - 1] == UInt8(ascii: "\r") else { throw RESPProtocolError(reason: "line not ended by CRLF") }
        let line = cursor.readString(length: length - 1)
        cursor.moveReaderIndex(forwardBy: 2)
        return line
    }

    private func parseValue(_ cursor: inout ByteBuffer, depth: Int) throws -> RESPValue? {
        guard depth <= maximumDepth else { throw RESPProtocolError(reason: "nesting deeper than \(maximumDepth)") }
        guard let type = cursor.getInteger(at: cursor.readerIndex, as: UInt8.self) else { return nil }
        var probe = cursor
        probe.moveReaderIndex(forwardBy: 1)
        switch type {
        case UInt8(ascii: "+"):
            guard let line = try readLine(&probe) else { return nil }
            cursor = probe
            return .simpleString(line)
        case UInt8(ascii: "-"):
            guard let line = try readLine(&probe) else { return nil }
            cursor = probe
            return .error(line)
        case UInt8(ascii: ":"):
            guard let line = try readLine(&probe) else { return nil }
            guard let value = Int64(line) else { throw RESPProtocolError(reason: "invalid integer '\(line)'") }
            cursor = probe
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let line = try readLine(&probe) else { return nil }
            guard let length = Int(line), length >= -1, length <= maximumBulkLength else {
                throw RESPProtocolError(reason: "invalid bulk length '\(line)'")
            }
            if length == -1 {
                cursor = probe
                return .bulkString(nil)
            }
            guard probe.readableBytes >= length + 2 else { return nil }
            let bytes = probe.readSlice(length: length)!
            guard probe.readInteger(as: UInt16.self) == 0x0D0A else { throw RESPProtocolError(reason: "bulk string not ended by CRLF") }
            cursor = probe
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            guard let line = try readLine(&probe) else { return nil }
            guard let count = Int(line), count >= -1, count <= 16 * 1024 * 1024 else {
                throw RESPProtocolError(reason: "invalid array length '\(line)'")
            }
            if count == -1 {
                cursor = probe
                return .array(nil)
            }
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                guard let element = try parseValue(&probe, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            cursor = probe
            return .array(elements)
        default:
            throw RESPProtocolError(reason: "unknown type byte 0x\(String(type, radix: 16))")
        }
    }
}
