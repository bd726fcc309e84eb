import Foundation
import Hummingbird
import PortcullisAccess
import PortcullisAudit
import PortcullisCore

/// `/admin/audit`: the tamper-evident audit log, for admins and auditors.
extension AdminAPI {
    func registerAudit(on group: RouterGroup<GatewayRequestContext>) {
        group.get("audit") { request, context in
            let filter = try Self.auditFilter(request.uri.queryParameters)
            return try await list(request, context) { try await audit.reader.list(filter, limit: $0, offset: $1) }
        }
        group.get("audit/{id}") { _, context in
            try context.principal.require(.readAdministration)
            let id = try context.parameters.require("id")
            guard let record = try await audit.reader.record(id: id) else {
                throw GatewayError(status: 404, kind: .notFound, code: .notFound, message: "There is no audit record '\(GatewayError.echo(id))'.")
            }
            return Self.json(record)
        }
        group.get("limits/violators") { request, context in try await limitViolators(request, context) }
    }

    /// `/admin/limits/violators?by=key|user|team&top=N&from=&to=`: who limits refused most (default: keys, top 10, the last hour).
    func limitViolators(_ request: Request, _ context: GatewayRequestContext) async throws -> Response {
        try context.principal.require(.readAdministration)
        guard audit.recordsRequests else {
            throw GatewayError(status: 409, kind: .invalidRequest, code: .unsupportedOperation,
                               message: "Limit violators are read from the audit log's request records, and the audit log is off.")
        }
        let query = request.uri.queryParameters
        let byText = query["by"].map(String.init) ?? "key"
        guard let grouping = LimitViolators.Grouping(rawValue: byText) else { throw GatewayError.invalidParameter("by", "by must be one of key, user, team") }
        var top = 10
        if let text = query["top"] {
            guard let value = Int(text), (1...100).contains(value) else { throw GatewayError.invalidParameter("top", "top must be 1–100") }
            top = value
        }
        let filter = try Self.auditFilter(query)
        let to = filter.to ?? Int64(Date().timeIntervalSince1970 * 1_000_000) + 1
        let from = filter.from ?? to - 3_600_000_000
        let violators = try await audit.reader.limitViolators(from: from, to: to, by: grouping, top: top)
        let data: [JSONValue] = violators.entries.map { entry in
            var codes = JSONObject()
            for (code, count) in entry.byCode.sorted(by: { $0.key < $1.key }) { codes[code] = .integer(Int64(count)) }
            return [grouping.member: .string(entry.subject), "refusals": .integer(Int64(entry.refusals)), "by_code": .object(codes),
                    "last_refused_at": .integer(entry.lastRefusedAt)]
        }
        return Self.json(["object": "list", "by": .string(grouping.rawValue), "from": .integer(from), "to": .integer(to),
                          "scanned": .integer(Int64(violators.scanned)), "truncated": .bool(violators.truncated), "data": .array(data)])
    }

    /// `from` and `to` (RFC 3339 or unix seconds), `severity`, `category`, `actor` (a key id) and `request_id`.
    static func auditFilter(_ query: Parameters) throws -> AuditFilter {
        var filter = AuditFilter()
        for (name, keyPath) in [("from", \AuditFilter.from), ("to", \AuditFilter.to)] {
            guard let text = query[Substring(name)].map(String.init) else { continue }
            guard let micros = AuditFilter.microseconds(text) else {
                throw GatewayError.invalidParameter(name, "\(name) must be an RFC 3339 time (2026-12-01T10:00:00Z) or unix seconds")
            }
            filter[keyPath: keyPath] = micros
        }
        if let severity = query["severity"].map(String.init) {
            guard let level = AuditRecord.Severity(rawValue: severity.uppercased()) else {
                throw GatewayError.invalidParameter("severity", "severity must be one of CRITICAL, HIGH, MEDIUM, LOW, INFO")
            }
            filter.severity = level
        }
        filter.category = query["category"].map(String.init)
        filter.actorKeyID = query["actor"].map(String.init)
        filter.requestID = query["request_id"].map(String.init)
        return filter
    }
}
