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
    /// `audit_logs` as operators read it.
    public let reader: AuditReader
    /// Whether API requests and authentication attempts are recorded (admin actions always are).
    public let recordsRequests: Bool
    private let logger: Logger

    /// Their tables, applied with the rest of the store's migrations.
    public static let migrations = AdminActionLog.migrations + GuardEventLog.migrations + AuditTable.migrations + CheckpointService.migrations
        + AuditSinkExporter.migrations + SubjectKeys.migrations + RetentionService.migrations

    /// - Parameters:
    ///   - configuration: the `audit` section; an unset `fail_closed` fails closed on PostgreSQL.
    ///   - signing: the checkpoint key and where checkpoints are published; nil signs none.
    ///   - sinkTransport: how the configured sinks are sent to; nil exports to none.
    public init(store: any SQLStore, flushInterval: Double, configuration: AuditConfiguration = AuditConfiguration(),
                signing: (key: AuditSigningKey, publishers: [any CheckpointPublisher])? = nil, sinkTransport: (any AuditSinkTransport)? = nil,
                syslogTransport: (any AuditSyslogTransport)? = nil, subjectKeys: SubjectKeys? = nil, logger: Logger) {
        guardEvents = GuardEventLog(store: store, interval: flushInterval, logger: logger)
        adminActions = AdminActionLog(store: store)
        let chain = configuration.chain ?? ProcessInfo.processInfo.hostName
        let writer = AuditWriter(store: store, chain: chain,
                                 failClosed: configuration.failClosed ?? (store.dialect == .postgres), backlogLimit: configuration.backlogLimit, logger: logger)
        self.writer = writer
        exporters = sinkTransport.map { transport in
            configuration.sinks.map {
                AuditSinkExporter(configuration: $0, chain: chain, store: store, transport: transport, syslog: syslogTransport, keys: subjectKeys,
                                  logger: logger)
            }
        } ?? []
        alerts = sinkTransport.flatMap { transport in
            configuration.alerts.destinations.isEmpty ? nil
                : AlertService(configuration: configuration.alerts, chain: chain, store: store, writer: writer, transport: transport,
                               keys: subjectKeys, logger: logger)
        }
        checkpoints = signing.map {
            CheckpointService(store: store, chain: chain, origin: configuration.origin, key: $0.key, publishers: $0.publishers,
                              everyRecords: Int64(configuration.checkpointEveryRecords), everySeconds: configuration.checkpointEverySeconds, logger: logger)
        }
        reader = AuditReader(store: store, keys: subjectKeys)
        recordsRequests = configuration.enabled
        payloads = subjectKeys.map { AuditPayloads(store: store, keys: $0, logger: logger) }
        payloadSettings = configuration
        signingKey = signing?.key
        retention = RetentionService(store: store, configuration: configuration.retention, writer: writer, logger: logger)
        self.logger = logger
    }

    /// Records the gateway's start, with what describes its configuration (never a secret),
    /// and its stop when the writer shuts down.
    public func recordLifecycle(configuration details: JSONObject) {
        let now = AuditWriter.now()
        writer.lifecycle = (
            AuditRecord(timestamp: now, severity: .info, category: "lifecycle", action: "gateway.start", outcome: "success", details: details),
            AuditRecord(timestamp: now, severity: .info, category: "lifecycle", action: "gateway.stop", outcome: "success",
                        details: ["configuration_sha256": details["configuration_sha256"] ?? .null])
        )
    }

    /// Stage 14, before the upstream: the request's record, durable before anything is sent.
    /// Failing closed, a record the store refused is the client's `503 audit_unavailable`.
    public func recordIntent(_ request: RequestAudit) async throws {
        guard recordsRequests else { return }
        await sealPersonalFields(request)
        do {
            try await writer.append(request.intent())
        } catch {
            logger.error("request refused: its audit record cannot be written", metadata: ["error": "\(error)"])
            throw GatewayError(status: 503, kind: .overloaded, code: .auditUnavailable,
                               message: "The gateway cannot record this request in its audit log right now; nothing was sent. Try again shortly.",
                               headers: ["Retry-After": "5"])
        }
    }

    /// Removes what outlived its retention (payloads, security logs, whole audit segments).
    public let retention: RetentionService

    /// The key that signs checkpoints and erasure receipts (nil: none configured).
    public let signingKey: AuditSigningKey?

    /// Prompts and answers kept encrypted with their records (nil: no key service is set up).
    public let payloads: AuditPayloads?
    private let payloadSettings: AuditConfiguration

    /// The request's personal fields (its caller's user id and address) are sealed under the
    /// subject's data key, so that erasing the subject pseudonymises its records. A key that
    /// cannot be had leaves them as they are (the record says `personal_sealed: false`).
    private func sealPersonalFields(_ request: RequestAudit) async {
        guard let keys = payloads?.keys, !request.isSealed, let subject = request.subject else { return }
        do {
            request.seal(with: try await keys.key(for: subject))
        } catch {
            logger.error("personal fields of an audit record not sealed: no data key", metadata: ["error": "\(error)"])
            request.sealingFailed()
        }
    }

    /// Stage 14, before the upstream: when the request's policy stores payloads, the subject's
    /// data key is fetched now and `request()` (the request as it will be kept) captured. A key
    /// service that cannot give the key refuses the request when `kms.fail_closed`
    /// (`503 kms_unavailable`, nothing sent); otherwise the request goes on and its payload is
    /// not stored (its outcome record says `payload: not_stored`).
    public func preparePayload(_ request: RequestAudit, policy: String?, capture: (PayloadMode) -> JSONValue) async throws {
        guard recordsRequests, let payloads else { return }
        let mode = payloadSettings.payloadMode(policy: policy)
        guard mode != .none, let subject = request.subject else { return }
        do {
            let key = try await payloads.keys.key(for: subject)
            request.seal(with: key)
            request.capture(PayloadCapture(mode: mode, subjectKey: key), request: capture(mode))
        } catch {
            logger.error("payload key unavailable", metadata: ["error": "\(error)", "fail_closed": "\(payloadSettings.kms.failClosed)"])
            request.payloadNotStored()
            guard payloadSettings.kms.failClosed else { return }
            throw GatewayError(status: 503, kind: .overloaded, code: .keyServiceUnavailable,
                               message: "The gateway cannot get the key that encrypts this request's stored payload right now; nothing was sent. Try again shortly.",
                               headers: ["Retry-After": "5"])
        }
    }

    /// Stage 14, after the response: the request's outcome. A request that never reached the
    /// upstream has this as its only record, committed before the client sees the answer
    /// (its id is the one in `x-portcullis-audit-id`); otherwise it follows without waiting.
    public func recordOutcome(_ request: RequestAudit, status: Int) async {
        guard recordsRequests else { return }
        if !request.intentRecorded { await sealPersonalFields(request) }
        let record = request.outcome(status: status)
        if let payloads, let (capture, payload) = request.payloadToStore() {
            payloads.submit(auditID: request.auditID, requestID: request.requestID, teamID: request.teamID, capture: capture, payload: payload)
        }
        if request.intentRecorded {
            writer.submit(record)
            return
        }
        do {
            try await writer.append(record, gating: false)
        } catch {
            logger.error("audit outcome not recorded", metadata: ["error": "\(error)"])
        }
    }

    /// Signs and publishes this replica's chain (nil without a signing key).
    public let checkpoints: CheckpointService?

    /// What must run as services, started after the store (stopped before it); the
    /// checkpoints stop last, so that their final one covers what the writer flushed.
    public var services: [any Service] {
        let rotation: [any Service] = payloads.map { [KeyRotationService(keys: $0.keys, rotationDays: payloadSettings.kms.rotationDays, logger: logger)] } ?? []
        return (checkpoints.map { [$0] } ?? []) + exporters + (alerts.map { [$0] } ?? []) + (payloads.map { [$0] } ?? []) + rotation + [retention, guardEvents, writer]
    }

    /// The alert rules over this replica's chain (nil without destinations).
    public let alerts: AlertService?

    /// One continuous export per configured sink.
    public let exporters: [AuditSinkExporter]

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
