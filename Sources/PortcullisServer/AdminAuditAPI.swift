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
