import Foundation
import Logging
import PortcullisCore
import PortcullisStorage
import ServiceLifecycle
import Synchronization

/// Where alerts go.
public struct AlertDestination: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// A Slack incoming webhook (`{"text": …}`).
        case slack
        /// PagerDuty Events API v2 (`trigger` with the alert's dedup key).
        case pagerduty
        /// A generic webhook: the alert as JSON, with an optional bearer token.
        case webhook
    }

    public var kind: Kind
    public var url: String
    /// PagerDuty's routing key, or the webhook's bearer token.
    public var token: String?

    public init(kind: Kind, url: String, token: String? = nil) {
        self.kind = kind
        self.url = url
        self.token = token
    }

    /// PagerDuty's public endpoint.
    public static let pagerDutyEvents = "https://events.pagerduty.com/v2/enqueue"
}

/// The `audit.alerts` section.
public struct AlertConfiguration: Sendable, Equatable {
    public var rules = AlertEvaluator.Settings()
    /// One alert per incident per this many seconds. Default 300.
    public var dedupSeconds = 300.0
    /// At most this many alerts in any minute. Default 30.
    public var maximumPerMinute = 30
    public var destinations: [AlertDestination] = []

    public init() {}
}

/// Reads this replica's chain as it grows (within half a second), applies the alert rules,
/// and sends what passes de-duplication and the rate limit to every destination; each alert
/// is itself an audit record (`alert` / `alert.<rule>`, outcome `delivered` or `failed`).
public final class AlertService: Service, Sendable {
    let configuration: AlertConfiguration
    let chain: String
    let store: any SQLStore
    let reader: AuditReader
    let writer: AuditWriter
    let transport: any AuditSinkTransport
    let logger: Logger
    private let state: Mutex<(evaluator: AlertEvaluator, throttle: AlertThrottle)>

    public init(configuration: AlertConfiguration, chain: String, store: any SQLStore, writer: AuditWriter,
                transport: any AuditSinkTransport, keys: SubjectKeys? = nil, logger: Logger) {
        self.configuration = configuration
        self.chain = chain
        self.store = store
        self.reader = AuditReader(store: store, keys: keys)
        self.writer = writer
        self.transport = transport
        self.logger = logger
        state = Mutex((AlertEvaluator(settings: configuration.rules),
                       AlertThrottle(dedupSeconds: configuration.dedupSeconds, maximumPerMinute: configuration.maximumPerMinute)))
    }

    /// Reads the records after `after` and acts on them; returns the last sequence number read.
    public func process(after: Int64) async -> Int64 {
        guard let batch = try? await reader.chain(chain, after: after, limit: 500), let last = batch.last?.sequence else { return after }
        for (_, record) in batch {
            let admitted = state.withLock { state -> [AuditAlert] in
                state.evaluator.observe(record).filter { state.throttle.admit($0, now: Int64(Date().timeIntervalSince1970 * 1_000_000)) }
            }
            for alert in admitted { await send(alert) }
        }
        return last
    }

    func send(_ alert: AuditAlert) async {
        var outcomes: [JSONValue] = []
        var delivered = false
        for destination in configuration.destinations {
            let (url, headers, body) = Self.request(alert, to: destination)
            var status: Int?
            for attempt in 0..<3 {
                if let answer = try? await transport.post(url: url, headers: headers, body: body), (200..<300).contains(answer.status) {
                    status = answer.status
                    break
                }
                try? await Task.sleep(nanoseconds: UInt64(200_000_000 << attempt))
            }
            if status != nil { delivered = true }
            outcomes.append(["destination": .string(destination.kind.rawValue), "delivered": .bool(status != nil)])
            if status == nil { logger.error("alert not delivered", metadata: ["destination": "\(destination.kind.rawValue)", "rule": "\(alert.rule.rawValue)"]) }
        }
        writer.submit(AuditRecord(timestamp: Int64(Date().timeIntervalSince1970 * 1_000_000), severity: alert.severity, category: "alert",
                                  action: "alert.\(alert.rule.rawValue)", outcome: delivered ? "delivered" : "failed",
                                  details: ["subject": .string(alert.subject), "summary": .string(alert.summary), "dedup_key": .string(alert.dedupKey),
                                            "record_id": .string(alert.recordID), "destinations": .array(outcomes)]))
    }

    /// The request for `alert` in `destination`'s protocol.
    static func request(_ alert: AuditAlert, to destination: AlertDestination) -> (String, [(String, String)], [UInt8]) {
        let json = [("content-type", "application/json")]
        switch destination.kind {
        case .slack:
            return (destination.url, json, JSONWriter.bytes(["text": .string("[\(alert.severity.rawValue)] Portcullis \(alert.rule.rawValue): \(alert.summary)")]))
        case .pagerduty:
            let severity = switch alert.severity {
            case .critical: "critical"
            case .high: "error"
            case .medium: "warning"
            default: "info"
            }
            let body: JSONValue = ["routing_key": .string(destination.token ?? ""), "event_action": "trigger", "dedup_key": .string(alert.dedupKey),
                                   "payload": ["summary": .string(alert.summary), "source": "portcullis", "severity": .string(severity),
                                               "timestamp": .string(AuditFormat.rfc3339(micros: alert.timestamp)), "component": "gateway",
                                               "group": .string(alert.rule.rawValue),
                                               "custom_details": ["subject": .string(alert.subject), "record_id": .string(alert.recordID)]]]
            return (destination.url, json, JSONWriter.bytes(body))
        case .webhook:
            var headers = json
            if let token = destination.token { headers.append(("authorization", "Bearer \(token)")) }
            return (destination.url, headers, JSONWriter.bytes(["rule": .string(alert.rule.rawValue), "severity": .string(alert.severity.rawValue),
                                                                "subject": .string(alert.subject), "summary": .string(alert.summary),
                                                                "dedup_key": .string(alert.dedupKey), "record_id": .string(alert.recordID),
                                                                "timestamp": .integer(alert.timestamp)]))
        }
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [self] in
            // Alerts are about what happens from now on: the chain before the start is history.
            var cursor = (try? await store.query("SELECT MAX(seq) AS seq FROM audit_logs WHERE chain = $1", [.text(chain)]).first?["seq"].integer) ?? 0
            while !Task.isCancelled {
                let next = await process(after: cursor)
                if next == cursor { try? await Task.sleep(for: .milliseconds(250)) }
                cursor = next
            }
        }
    }
}
