import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle

/// The audit library's logs over one store: the hash-chained audit log (`audit_logs`), guard
/// decisions and admin actions.
public struct AuditLogs: Sendable {
    public let guardEvents: GuardEventLog
    public let adminActions: AdminActionLog
    /// This replica's chain of `audit_logs`.
    public let writer: AuditWriter

    /// Their tables, applied with the rest of the store's migrations.
    public static let migrations = AdminActionLog.migrations + GuardEventLog.migrations + AuditTable.migrations

    /// - Parameter chain: this replica's chain name (default: the host name, which is the pod's on Kubernetes).
    public init(store: any SQLStore, flushInterval: Double, chain: String = ProcessInfo.processInfo.hostName, logger: Logger) {
        guardEvents = GuardEventLog(store: store, interval: flushInterval, logger: logger)
        adminActions = AdminActionLog(store: store)
        writer = AuditWriter(store: store, chain: chain, logger: logger)
    }

    /// What must run as services, started after the store (stopped before it).
    public var services: [any Service] { [guardEvents, writer] }

    /// Records an admin action in both logs: the readable list (`/admin/actions`) and the chain,
    /// returning once the chained record is committed.
    public func recordAdminAction(actor: String, actorKeyID: String?, action: String, target: String, details: JSONObject,
                                  requestID: String?) async throws {
        let now = Date().timeIntervalSince1970
        try await adminActions.record(actor: actor, action: action, target: target, details: details, requestID: requestID, now: now)
        var chained = details
        chained["actor"] = .string(actor)
        chained["target"] = .string(target)
        try await writer.append(AuditRecord(timestamp: Int64(now * 1_000_000), severity: .medium, category: "admin", action: action,
                                            outcome: "success", requestID: requestID, actorKeyID: actorKeyID, details: chained))
    }
}
