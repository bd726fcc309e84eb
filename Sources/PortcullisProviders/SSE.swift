import NIOCore

/// One server-sent event.
public struct SSEEvent: Sendable, Equatable {
    /// The `event:` field, if any.
    public var event: String?
    /// The `data:` lines joined with newlines.
    public var data: String

    public init(event: String? = nil, data: String) {
        self.event = event
        self.data = data
    }
}

/// An incremental `text/event-stream` parser: feed it bytes as they arrive, get whole events back.
///
/// Accepts `\n`, `\r\n` and `\r` line endings, ignores comments and unknown fields,
/// and refuses a single line longer than `maximumLineLength` rather than buffering without bound.
public struct SSEParser: Sendable {
    /// Longest line accepted, in bytes.
    public var maximumLineLength: Int
    private var line: [UInt8] = []
    private var eventName: String?
    private var dataLines: [String] = []
    private var hasData = false
    private var lastWasCarriageReturn = false

    /// Thrown when a line is longer than the limit.
    public struct LineTooLong: Error {}

    public init(maximumLineLength: Int = 8 * 1024 * 1024) {
        self.maximumLineLength = maximumLineLength
    }

    /// Consumes `bytes` and returns the events they complete.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws -> [SSEEvent] {
        var events: [SSEEvent] = []
        for byte in bytes {
            if byte == 0x0A {
                if lastWasCarriageReturn {
                    lastWasCarriageReturn = false
                    continue
                }
                endLine(into: &events)
            } else if byte == 0x0D {
                lastWasCarriageReturn = true
                endLine(into: &events)
                continue
            } else {
                line.append(byte)
                if line.count > maximumLineLength { throw LineTooLong() }
            }
            lastWasCarriageReturn = false
        }
        return events
    }

    /// Consumes a buffer.
    public mutating func feed(_ buffer: ByteBuffer) throws -> [SSEEvent] {
        try feed(buffer.readableBytesView)
    }

    /// Flushes an event left without its closing blank line when the stream ended.
    public mutating func finish() -> SSEEvent? {
        var events: [SSEEvent] = []
        if !line.isEmpty { endLine(into: &events) }
        endLine(into: &events)
        return events.first
    }

    private mutating func endLine(into events: inout [SSEEvent]) {
        if line.isEmpty {
            if hasData {
                events.append(SSEEvent(event: eventName, data: dataLines.joined(separator: "\n")))
            }
            eventName = nil
            dataLines.removeAll(keepingCapacity: true)
            hasData = false
            return
        }
        defer { line.removeAll(keepingCapacity: true) }
        if line[0] == UInt8(ascii: ":") { return }
        let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
        let field = String(decoding: line[..<colon], as: UTF8.self)
        var valueStart = colon < line.endIndex ? colon + 1 : colon
        if valueStart < line.endIndex, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
        let value = String(decoding: line[valueStart...], as: UTF8.self)
        switch field {
        case "data":
            dataLines.append(value)
            hasData = true
        case "event":
            eventName = value
        default:
            break
        }
    }
}

/// Writes server-sent events.
public enum SSEWriter {
    /// `data: <json>\n\n`.
    public static func data(_ json: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(json.count + 8)
        buffer.writeStaticString("data: ")
        buffer.writeBytes(json)
        buffer.writeStaticString("\n\n")
        return buffer
    }

    /// `event: <name>\ndata: <json>\n\n`.
    public static func event(_ name: String, _ json: [UInt8]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(json.count + name.utf8.count + 16)
        buffer.writeStaticString("event: ")
        buffer.writeString(name)
        buffer.writeStaticString("\ndata: ")
        buffer.writeBytes(json)
        buffer.writeStaticString("\n\n")
        return buffer
    }

    /// The OpenAI stream terminator `data: [DONE]\n\n`.
    public static var done: ByteBuffer { ByteBuffer(staticString: "data: [DONE]\n\n") }
}
