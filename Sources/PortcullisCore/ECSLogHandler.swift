import Foundation
import Logging
import Synchronization

/// A swift-log handler writing one JSON object per line with Elastic Common Schema field names,
/// for ELK, Loki or Splunk forwarders (`log_format: json`; the executable bootstraps it).
///
/// Fields: `@timestamp` (UTC, milliseconds), `log.level`, `log.logger`, `message`, `service.name`,
/// `ecs.version`, then the metadata: the request id as `http.request.id`, the trace as `trace.id`,
/// the method, path, status and duration as `http.request.method`, `url.path`,
/// `http.response.status_code` and `event.duration` (nanoseconds, as ECS has it); anything else
/// under `portcullis.<key>`. The gateway never logs prompt or answer text, so neither does this.
public struct ECSLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let write: @Sendable ([UInt8]) -> Void

    /// - Parameter write: receives each line, newline included (default: standard error, one write per line).
    public init(label: String, level: Logger.Level = .info, write: @escaping @Sendable ([UInt8]) -> Void = ECSLogHandler.standardError) {
        self.label = label
        self.logLevel = level
        self.write = write
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Metadata keys the gateway uses, by their ECS field.
    static let fieldNames: [String: String] = [
        "request_id": "http.request.id", "trace_id": "trace.id", "span_id": "span.id", "method": "http.request.method",
        "path": "url.path", "status": "http.response.status_code", "principal": "user.name", "error": "error.message",
    ]

    public func log(event: LogEvent) {
        var object = JSONObject()
        object["@timestamp"] = .string(Self.timestamp(Date()))
        object["log.level"] = .string(event.level.rawValue)
        object["log.logger"] = .string(label)
        object["message"] = .string(event.message.description)
        object["service.name"] = "portcullis"
        object["ecs.version"] = "8.11.0"
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            let text = Self.flatten(value)
            switch key {
            case "status":
                object["http.response.status_code"] = Int64(text).map(JSONValue.integer) ?? .string(text)
            case "duration_ms":
                // ECS's event.duration is in nanoseconds.
                object["event.duration"] = Double(text).map { .integer(Int64(($0 * 1_000_000).rounded())) } ?? .string(text)
            case _ where Self.numericFields.contains(key):
                // Counts and amounts stay numbers, so a log pipeline can sum and chart them.
                object["portcullis.\(key)"] = Int64(text).map(JSONValue.integer) ?? Double(text).map(JSONValue.double) ?? .string(text)
            default:
                object[Self.fieldNames[key] ?? "portcullis.\(key)"] = .string(text)
            }
        }
        if event.message.description == "request" {
            object["event.kind"] = "event"
            object["event.category"] = "web"
            object["event.dataset"] = "portcullis.access"
        }
        var line = JSONWriter.bytes(.object(object))
        line.append(UInt8(ascii: "\n"))
        write(line)
    }

    /// The access log's members written as JSON numbers.
    static let numericFields: Set<String> = ["prompt_tokens", "completion_tokens", "cost_usd", "ttft_ms"]

    static func flatten(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        case .array, .dictionary: value.description
        }
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: TimeZone(identifier: "UTC")!))
    }

    private static let lock = Mutex(())

    /// Writes a line to standard error; lines of concurrent loggers never interleave.
    public static let standardError: @Sendable ([UInt8]) -> Void = { line in
        lock.withLock { _ in
            line.withUnsafeBufferPointer { buffer in
                var offset = 0
                while offset < buffer.count {
                    let written = Foundation.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                    if written <= 0 { break }
                    offset += written
                }
            }
        }
    }
}
