import Foundation
import Hummingbird
import HTTPTypes
import PortcullisAccess
import PortcullisAudit
import NIOCore
import PortcullisRouting
import PortcullisStorage
import PortcullisTLS
import Prometheus
import Synchronization

/// Writes the Prometheus text exposition format (version 0.0.4).
struct PrometheusText {
    var text = ""

    /// One metric family: its help and type lines, then a sample per label set.
    mutating func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: [(String, String)], value: Double)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for sample in samples {
            text += name
            if !sample.labels.isEmpty {
                text += "{" + sample.labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
            }
            text += " " + Self.format(sample.value) + "\n"
        }
    }

    /// A family with one unlabelled sample.
    mutating func family(_ name: String, _ type: String, _ help: String, value: Double) {
        family(name, type, help, [([], value)])
    }

    static func escape(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}

/// `GET /metrics`: the registry's request, upstream and library metrics, then the state of the
/// gateway's dependencies, read at scrape time.
struct GatewayMetrics: Sendable {
    let access: AccessSystem
    let audit: AuditLogs
    /// The routing in force, and the reloads that put it there.
    let live: LiveRouting
    /// The registry of the request metrics and of libraries' swift-metrics, emitted first.
    let registry: PrometheusCollectorRegistry
    var connections: ConnectionGovernor? = nil
    /// The listener's handshakes (nil on plain HTTP).
    var handshakes: TLSHandshakeCounts? = nil
    var certificates: [CertificateLifetime] = []

    func exposition() -> String {
        var out = PrometheusText()
        out.text = registry.emitToString()
        out.family("portcullis_database_up", "gauge", "1 when the SQL store answered the last operation or probe, 0 while it is unreachable.",
                   value: access.health.isReachable ? 1 : 0)
        if let shared = access.sharedState {
            out.family("portcullis_redis_up", "gauge",
                       "1 while limits and budgets are shared through Redis, 0 while this replica enforces them alone.",
                       value: shared.isDegraded ? 0 : 1)
        }
        let measured = access.measurements.current
        if let latency = measured.databaseLatency {
            out.family("portcullis_database_latency_seconds", "gauge", "Round trip of the health probe's last database query.", value: latency)
        }
        if let lag = measured.replicationLagBytes {
            out.family("portcullis_database_replication_lag_bytes", "gauge",
                       "WAL bytes not yet replayed as this gateway's connection sees it: the farthest standby of a primary, or a standby's own gap.",
                       value: lag)
        }
        if let standbys = measured.standbys {
            out.family("portcullis_database_standbys", "gauge", "Standbys streaming from the primary the gateway writes to.", value: standbys)
        }
        if let latency = measured.redisLatency {
            out.family("portcullis_redis_latency_seconds", "gauge", "Round trip of the health probe's last Redis command (INFO memory).", value: latency)
        }
        if let used = measured.redisUsedMemory {
            out.family("portcullis_redis_memory_used_bytes", "gauge", "Memory Redis reports in use (INFO memory used_memory).", value: used)
        }
        if let maximum = measured.redisMaxMemory {
            out.family("portcullis_redis_memory_max_bytes", "gauge", "Redis's maxmemory (0: no limit).", value: maximum)
        }
        out.family("portcullis_control_bus_up", "gauge", "1 while this replica hears revocations and policy changes from the others.",
                   value: access.controlListener.isListening ? 1 : 0)
        out.family("portcullis_usage_pending_rows", "gauge", "Aggregated usage rows waiting for the next batched write.",
                   value: Double(access.recorder.pendingRows))
        out.family("portcullis_usage_flushes_total", "counter", "Batched usage writes that succeeded.", value: Double(access.recorder.flushCount))
        out.family("portcullis_usage_flush_failures_total", "counter", "Batched usage writes that failed and were kept for a retry.",
                   value: Double(access.recorder.failedFlushCount))
        out.family("portcullis_auth_stale_admissions_total", "counter",
                   "Requests admitted on a previously validated key while the database was unreachable (fail-open).",
                   value: Double(access.authenticator.staleAdmissionCount))
        out.family("portcullis_key_cache_entries", "gauge", "Validated API keys held in this process.", value: Double(access.authenticator.cache.count))
        out.family("portcullis_guard_decisions_total", "counter", "Guard findings by guard, category and the action the policy took.",
                   audit.guardEvents.counts.map { ([("guard", $0.key.guardName), ("category", $0.key.category), ("action", $0.key.action)],
                                                    Double($0.value)) })
        out.family("portcullis_audit_backlog_records", "gauge", "Audit records waiting in memory because the database refused them (failing open).",
                   value: Double(audit.writer.backlogCount))
        out.family("portcullis_audit_sink_records_total", "counter", "Audit records each sink delivered, refused (4xx, passed over) or failed to send.",
                   audit.exporters.flatMap { exporter -> [(labels: [(String, String)], value: Double)] in
                       let counts = exporter.counts, sink = exporter.configuration.name
                       return [([("sink", sink), ("result", "delivered")], Double(counts.delivered)),
                               ([("sink", sink), ("result", "refused")], Double(counts.rejected)),
                               ([("sink", sink), ("result", "failed_attempt")], Double(counts.failures))]
                   })
        let reloads = live.counts
        out.family("portcullis_config_reloads_total", "counter", "Configuration reloads (SIGHUP or a changed file) applied, and refused for an error.",
                   [([("outcome", "applied")], Double(reloads.applied)), ([("outcome", "failed")], Double(reloads.failed))])
        out.family("portcullis_config_last_reload_successful", "gauge",
                   "0 while the last reload attempt was refused (the gateway runs on the configuration before it), 1 otherwise.",
                   value: reloads.lastSucceeded ? 1 : 0)
        out.family("portcullis_config_last_reload_success_timestamp_seconds", "gauge",
                   "When the configuration in force was loaded (start-up or the last applied reload), Unix time.", value: reloads.lastSuccessTime)
        let deployments = live.current.router.allDeployments
        out.family("portcullis_deployment_up", "gauge", "1 when the deployment passed its last health check and its circuit admits requests.",
                   deployments.map { ([("deployment", $0.name)], $0.isSelectable() ? 1 : 0) })
        out.family("portcullis_circuit_open", "gauge", "1 while the deployment's circuit breaker is open or half open.",
                   deployments.map { ([("deployment", $0.name)], $0.circuitState == "closed" ? 0 : 1) })
        out.family("portcullis_panic_routed_total", "counter",
                   "Requests sent to a deployment although health checks had marked every deployment of its group down.",
                   deployments.map { ([("deployment", $0.name)], Double($0.panicSelections.load(ordering: .relaxed))) })
        if let connections {
            out.family("portcullis_connections_open", "gauge", "Client connections open now.", value: Double(connections.openCount))
            out.family("portcullis_connections_refused_total", "counter", "Connections refused at the connection cap with none idle to close.",
                       value: Double(connections.refused.load(ordering: .relaxed)))
            out.family("portcullis_connections_evicted_total", "counter", "Idle connections closed to make room under the connection cap.",
                       value: Double(connections.evicted.load(ordering: .relaxed)))
            out.family("portcullis_connection_timeouts_total", "counter", "Connections closed by a timeout, by which one.", [
                ([("timeout", "header")], Double(connections.headerTimeouts.load(ordering: .relaxed))),
                ([("timeout", "body_idle")], Double(connections.bodyTimeouts.load(ordering: .relaxed))),
                ([("timeout", "keep_alive_idle")], Double(connections.idleTimeouts.load(ordering: .relaxed))),
            ])
        }
        if let handshakes {
            out.family("portcullis_tls_handshakes_total", "counter", "TLS handshakes the listener completed, full or resumed from a session ticket.",
                       [([("kind", "full")], Double(handshakes.fullCount)), ([("kind", "resumed")], Double(handshakes.resumedCount))])
        }
        if !certificates.isEmpty {
            let now = Date()
            // Seconds, the base unit by Prometheus conventions (promtool refuses days); alerts divide by 86400.
            out.family("portcullis_tls_certificate_expiry_seconds", "gauge",
                       "Seconds until each certificate the gateway serves, trusts or presents expires (negative once it has).",
                       certificates.map { ([("role", $0.role), ("subject", $0.subject), ("file", $0.file)], (Double($0.notValidAfter) - now.timeIntervalSince1970).rounded()) })
        }
        out.family("portcullis_stream_client_disconnects_total", "counter", "Streams that ended because the client went away.",
                   value: Double(StreamDisconnects.count.load(ordering: .relaxed)))
        if let process = ProcessStats.read() {
            out.family("process_cpu_seconds_total", "counter", "User and system CPU time the process spent, in seconds.", value: process.cpuSeconds)
            out.family("process_resident_memory_bytes", "gauge", "Resident memory of the process, in bytes.", value: process.residentBytes)
            out.family("process_virtual_memory_bytes", "gauge", "Virtual memory of the process, in bytes.", value: process.virtualBytes)
            out.family("process_open_fds", "gauge", "File descriptors the process holds open.", value: process.openFileDescriptors)
            out.family("process_max_fds", "gauge", "The process's limit on open file descriptors.", value: process.maximumFileDescriptors)
            out.family("process_start_time_seconds", "gauge", "When the process started, in seconds since 1970.", value: process.startTime)
        }
        return out.text
    }

    /// Trace ids of sampled requests by latency bucket (served to an OpenMetrics scrape).
    var exemplars: RequestExemplars? = nil

    /// Prometheus text, or OpenMetrics with exemplars when the scraper's `Accept` asks for it.
    func response(accept: String? = nil) -> Response {
        var headers = HTTPFields()
        if let exemplars, let accept, accept.contains("application/openmetrics-text") {
            headers[.contentType] = OpenMetricsText.contentType
            return Response(status: .ok, headers: headers,
                            body: .init(byteBuffer: ByteBuffer(string: OpenMetricsText.convert(exposition(), exemplars: exemplars))))
        }
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: exposition())))
    }
}

/// The process's CPU time, memory and file descriptors, read from /proc at scrape time
/// (the names Prometheus's client libraries use, so standard dashboards work). Nil off Linux.
struct ProcessStats {
    var cpuSeconds: Double
    var residentBytes: Double
    var virtualBytes: Double
    var openFileDescriptors: Double
    var maximumFileDescriptors: Double
    var startTime: Double

    static func read() -> ProcessStats? {
        #if os(Linux)
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let closing = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name, which may itself hold spaces: state is field 3, so index 0 here.
        let fields = stat[stat.index(after: closing)...].split(separator: " ")
        guard fields.count > 22, let user = Double(fields[11]), let system = Double(fields[12]), let started = Double(fields[19]),
              let virtual = Double(fields[20]), let resident = Double(fields[21]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK))), page = Double(sysconf(Int32(_SC_PAGESIZE)))
        let bootTime = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("btime ") }
            .flatMap { Double($0.dropFirst(6)) } ?? 0
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return ProcessStats(cpuSeconds: (user + system) / ticks, residentBytes: resident * page, virtualBytes: virtual,
                            openFileDescriptors: Double(open), maximumFileDescriptors: Double(limit.rlim_cur),
                            startTime: bootTime + started / ticks)
        #else
        return nil
        #endif
    }
}
