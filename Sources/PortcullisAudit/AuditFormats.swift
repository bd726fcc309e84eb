import Foundation
import PortcullisCore

/// The shapes audit records leave the gateway in: as the API shows them (JSON lines), Elastic
/// Common Schema (with its `gen_ai.*` fields), OCSF (API Activity and Authentication classes)
/// and ArcSight CEF. Each takes a record as `AuditReader` returns it.
public enum AuditFormat: String, Sendable, CaseIterable {
    case jsonl, ecs, ocsf, cef

    /// One record as one line (no newline at its end).
    public func line(_ record: JSONObject) -> String {
        switch self {
        case .jsonl: return JSONWriter.string(.object(record))
        case .ecs: return JSONWriter.string(.object(Self.ecs(record)))
        case .ocsf: return JSONWriter.string(.object(Self.ocsf(record)))
        case .cef: return Self.cef(record)
        }
    }

    /// The record as an object, for sinks that send JSON (CEF is sent as a string).
    public func object(_ record: JSONObject) -> JSONValue {
        switch self {
        case .jsonl: return .object(record)
        case .ecs: return .object(Self.ecs(record))
        case .ocsf: return .object(Self.ocsf(record))
        case .cef: return .string(Self.cef(record))
        }
    }

    // MARK: Fields every format reads

    struct Fields {
        let record: JSONObject
        var details: JSONObject { record["details"]?.objectValue ?? JSONObject() }
        var actor: JSONObject { details["actor"]?.objectValue ?? JSONObject() }
        func text(_ key: String) -> String? { record[key]?.stringValue }
        func detail(_ key: String) -> String? { details[key]?.stringValue }
        func number(_ key: String) -> Int64? { details[key]?.integerValue }
        var micros: Int64 { record["timestamp"]?.integerValue ?? 0 }
        var severity: String { text("severity") ?? "INFO" }
        var outcome: String { text("outcome") ?? "" }
        var succeeded: Bool { outcome == "success" || outcome == "pending" }
    }

    static func rfc3339(micros: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(micros) / 1_000_000))
    }

    /// 1 (INFO) to 5 (CRITICAL), the OCSF severity_id scale.
    static func level(_ severity: String) -> Int64 {
        switch severity {
        case "CRITICAL": 5
        case "HIGH": 4
        case "MEDIUM": 3
        case "LOW": 2
        default: 1
        }
    }

    // MARK: Elastic Common Schema

    static func ecs(_ record: JSONObject) -> JSONObject {
        let fields = Fields(record: record)
        var event: JSONObject = ["kind": "event", "dataset": "portcullis.audit", "module": "portcullis"]
        event.append(newKey: "id", .string(fields.text("id") ?? ""))
        event.append(newKey: "action", .string(fields.text("action") ?? ""))
        event.append(newKey: "category", .array([.string(fields.text("category") == "authentication" ? "authentication" : fields.text("category") == "admin" ? "configuration" : "web")]))
        event.append(newKey: "outcome", .string(fields.outcome == "pending" ? "unknown" : fields.succeeded ? "success" : "failure"))
        event.append(newKey: "severity", .integer(level(fields.severity)))
        if let latency = fields.number("latency_us") { event.append(newKey: "duration", .integer(latency * 1000)) }
        if let code = fields.detail("code") { event.append(newKey: "reason", .string(code)) }
        var document: JSONObject = ["@timestamp": .string(rfc3339(micros: fields.micros)), "event": .object(event),
                                    "log": ["level": .string(fields.severity.lowercased())]]
        if let trace = fields.detail("trace_id") { document.append(newKey: "trace", ["id": .string(trace)]) }
        if let source = fields.detail("source_address") { document.append(newKey: "source", ["ip": .string(source)]) }
        var user = JSONObject()
        if let id = fields.actor["user_id"]?.stringValue { user.append(newKey: "id", .string(id)) }
        if let role = fields.actor["role"]?.stringValue { user.append(newKey: "roles", [.string(role)]) }
        if let team = fields.actor["team_id"]?.stringValue { user.append(newKey: "group", ["id": .string(team)]) }
        if !user.isEmpty { document.append(newKey: "user", .object(user)) }
        if let method = fields.detail("method") {
            var http: JSONObject = ["request": ["method": .string(method)]]
            if let status = fields.number("status") { http.append(newKey: "response", ["status_code": .integer(status)]) }
            document.append(newKey: "http", .object(http))
        }
        if let path = fields.detail("path") { document.append(newKey: "url", ["path": .string(path)]) }
        var genAI = JSONObject()
        if let model = fields.detail("model") { genAI.append(newKey: "request", ["model": .string(model)]) }
        if let provider = fields.detail("provider") { genAI.append(newKey: "system", .string(provider)) }
        var usage = JSONObject()
        if let input = fields.number("prompt_tokens") { usage.append(newKey: "input_tokens", .integer(input)) }
        if let output = fields.number("completion_tokens") { usage.append(newKey: "output_tokens", .integer(output)) }
        if !usage.isEmpty { genAI.append(newKey: "usage", .object(usage)) }
        if !genAI.isEmpty { genAI.append(newKey: "operation", ["name": "chat"]); document.append(newKey: "gen_ai", .object(genAI)) }
        document.append(newKey: "portcullis", ["audit": .object(record)])
        return document
    }

    // MARK: OCSF

    static func ocsf(_ record: JSONObject) -> JSONObject {
        let fields = Fields(record: record)
        let authentication = fields.text("category") == "authentication"
        // Authentication (3002) for credential checks, API Activity (6003) for everything else.
        let classUID: Int64 = authentication ? 3002 : 6003
        let activity: Int64 = authentication ? 1 : (fields.detail("method") == "GET" ? 2 : 1)
        var object: JSONObject = [
            "class_uid": .integer(classUID), "category_uid": .integer(authentication ? 3 : 6), "activity_id": .integer(activity),
            "type_uid": .integer(classUID * 100 + activity), "time": .integer(fields.micros / 1000),
            "severity_id": .integer(level(fields.severity)), "severity": .string(fields.severity.capitalized),
            "status_id": .integer(fields.outcome == "pending" ? 0 : fields.succeeded ? 1 : 2), "status": .string(fields.outcome),
        ]
        object.append(newKey: "metadata", ["version": "1.1.0", "uid": .string(fields.text("id") ?? ""),
                                           "product": ["name": "Portcullis", "vendor_name": "Portcullis"],
                                           "correlation_uid": .string(fields.text("request_id") ?? "")])
        var user = JSONObject()
        if let id = fields.actor["user_id"]?.stringValue { user.append(newKey: "uid", .string(id)) }
        if let key = fields.text("actor_key_id") { user.append(newKey: "credential_uid", .string(key)) }
        if let role = fields.actor["role"]?.stringValue { user.append(newKey: "type", .string(role)) }
        object.append(newKey: "actor", ["user": .object(user)])
        if let source = fields.detail("source_address") { object.append(newKey: "src_endpoint", ["ip": .string(source)]) }
        object.append(newKey: "api", ["operation": .string(fields.text("action") ?? "")])
        if let method = fields.detail("method") {
            object.append(newKey: "http_request", ["http_method": .string(method), "url": ["path": .string(fields.detail("path") ?? "")]])
        }
        if let status = fields.number("status") { object.append(newKey: "http_response", ["code": .integer(status)]) }
        if let code = fields.detail("code") { object.append(newKey: "status_detail", .string(code)) }
        object.append(newKey: "unmapped", .object(record))
        return object
    }

    // MARK: CEF

    static func cef(_ record: JSONObject) -> String {
        let fields = Fields(record: record)
        let severity: Int64 = [1: 1, 2: 3, 3: 5, 4: 8, 5: 10][level(fields.severity)] ?? 1
        var extensions: [(String, String)] = [("rt", String(fields.micros / 1000)), ("externalId", fields.text("id") ?? ""),
                                              ("outcome", fields.outcome), ("cat", fields.text("category") ?? "")]
        if let request = fields.text("request_id") { extensions.append(("cs1Label", "requestId")); extensions.append(("cs1", request)) }
        if let key = fields.text("actor_key_id") { extensions.append(("suid", key)) }
        if let user = fields.actor["user_id"]?.stringValue { extensions.append(("suser", user)) }
        if let source = fields.detail("source_address") { extensions.append(("src", source)) }
        if let method = fields.detail("method") { extensions.append(("requestMethod", method)) }
        if let path = fields.detail("path") { extensions.append(("request", path)) }
        if let model = fields.detail("model") { extensions.append(("cs2Label", "model")); extensions.append(("cs2", model)) }
        if let status = fields.number("status") { extensions.append(("cn1Label", "status")); extensions.append(("cn1", String(status))) }
        if let code = fields.detail("code") { extensions.append(("reason", code)) }
        let action = fields.text("action") ?? ""
        let header = ["CEF:0", "Portcullis", "Portcullis Gateway", "1.0", header(action), header("\(fields.text("category") ?? "") \(action) \(fields.outcome)"),
                      String(severity)].joined(separator: "|")
        return header + "|" + extensions.map { "\($0.0)=\(extensionValue($0.1))" }.joined(separator: " ")
    }

    /// CEF header fields escape `\` and `|`; line breaks become spaces.
    static func header(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "|", with: "\\|")
            .replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
    }

    /// CEF extension values escape `\` and `=`, and line breaks as `\r`, `\n`.
    static func extensionValue(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "=", with: "\\=")
            .replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n")
    }
}
