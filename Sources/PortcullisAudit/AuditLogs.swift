import Logging
import PortcullisStorage
import ServiceLifecycle

/// The audit library's logs over one store: guard decisions and admin actions (the
/// hash-chained request log of issue 16 joins them here).
public struct AuditLogs: Sendable {
    public let guardEvents: GuardEventLog
    public let adminActions: AdminActionLog

    /// Their tables, applied with the rest of the store's migrations.
    public static let migrations = AdminActionLog.migrations + GuardEventLog.migrations

    public init(store: any SQLStore, flushInterval: Double, logger: Logger) {
        guardEvents = GuardEventLog(store: store, interval: flushInterval, logger: logger)
        adminActions = AdminActionLog(store: store)
    }

    /// What must run as a service (the guard-event writer), started after the store.
    public var services: [any Service] { [guardEvents] }
}
