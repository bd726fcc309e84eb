import Foundation
import Logging
import NIOCore
import NIOSSL
import PortcullisCore
import PortcullisTLS
import PostgresNIO
import ServiceLifecycle

/// PostgreSQL through PostgresNIO connection pools. `run()` keeps the pools alive; run it
/// as a service before issuing statements.
///
/// A multi-host URL (`postgres://user@primary:5432,standby:5432/db?target_session_attrs=read-write`)
/// gets a pool per host; statements go to the first host that answers — with `read-write`
/// (or `primary`), the first that is not in recovery — chosen before the first statement and
/// again after a statement finds its host unreachable or read-only, so the store follows a
/// promoted standby as libpq does.
public final class PostgresStore: SQLStore, Service {
    public let dialect = SQLDialect.postgres
    private let clients: [PostgresClient]
    /// Chooses among several hosts; nil with one.
    private let selector: PostgresHostSelector?
    private let logger: Logger
    /// How long an operation may take, waiting for a connection included: the pool waits for
    /// a connection indefinitely while the server is down, so the store gives up first.
    private let operationTimeout: Duration

    /// Reads `postgres://user[:password]@host[:port][,host[:port]…]/database[?sslmode=…&target_session_attrs=any|read-write]`.
    public init(url: String, minimumConnections: Int = 1, maximumConnections: Int = 16, operationTimeout: Double = 5, logger: Logger) throws {
        let targets = try Self.targets(url: url, minimumConnections: minimumConnections, maximumConnections: maximumConnections)
        self.operationTimeout = .milliseconds(Int64(operationTimeout * 1000))
        self.clients = targets.configurations.map { configuration in
            var configuration = configuration
            configuration.options.connectTimeout = min(.seconds(10), .milliseconds(Int64(operationTimeout * 1000)))
            // Several hosts: no pool keeps connections open to a host not in use (a down one would be redialled forever).
            if targets.configurations.count > 1 { configuration.options.minimumConnections = 0 }
            return PostgresClient(configuration: configuration, backgroundLogger: logger)
        }
        self.selector = clients.count > 1
            ? PostgresHostSelector(clients: clients, hosts: targets.configurations.map { "\($0.host ?? "?"):\($0.port ?? 5432)" },
                                   requiresWritable: targets.requiresWritable,
                                   probeTimeout: min(.seconds(2), .milliseconds(Int64(operationTimeout * 1000))), logger: logger)
            : nil
        self.logger = logger
    }

    /// The pool statements go to now.
    private func client() async -> PostgresClient {
        guard let selector else { return clients[0] }
        return await selector.client()
    }

    /// A driver error as a store error; with several hosts, an unreachable or read-only host makes the store choose again.
    private func failed(_ error: PSQLError) async -> SQLError {
        let failure = Self.sqlError(error)
        if failure.isUnavailable, let selector { await selector.chooseAgain() }
        return failure
    }

    /// Runs `body`, or fails with an unavailable error once the operation timeout has passed.
    private func bounded<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        do {
            return try await Deadline.run(within: operationTimeout, body)
        } catch let exceeded as DeadlineExceeded {
            throw SQLError("the database did not answer within \(exceeded.limit)", isUnavailable: true)
        }
    }

    /// The pool configuration of a URL's first host.
    static func configuration(url: String, minimumConnections: Int, maximumConnections: Int) throws -> PostgresClient.Configuration {
        try targets(url: url, minimumConnections: minimumConnections, maximumConnections: maximumConnections).configurations[0]
    }

    /// A pool configuration per host of a URL (`host[:port]` separated by commas, as libpq reads
    /// them), and whether `target_session_attrs` asks for a writable one.
    static func targets(url: String, minimumConnections: Int,
                        maximumConnections: Int) throws -> (configurations: [PostgresClient.Configuration], requiresWritable: Bool) {
        var rest: Substring
        if url.hasPrefix("postgres://") {
            rest = url.dropFirst(11)
        } else if url.hasPrefix("postgresql://") {
            rest = url.dropFirst(13)
        } else {
            throw SQLError("a PostgreSQL URL starts with postgres:// or postgresql://")
        }
        var query = ""
        if let mark = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: mark)...])
            rest = rest[..<mark]
        }
        guard let at = rest.lastIndex(of: "@") else { throw SQLError("the PostgreSQL URL needs user@host") }
        let credentials = rest[..<at]
        var location = rest[rest.index(after: at)...]
        let user: String
        var password: String?
        if let colon = credentials.firstIndex(of: ":") {
            user = String(credentials[..<colon])
            password = String(credentials[credentials.index(after: colon)...]).removingPercentEncoding ?? ""
        } else {
            user = String(credentials)
        }
        var database: String?
        if let slash = location.firstIndex(of: "/") {
            database = String(location[location.index(after: slash)...])
            location = location[..<slash]
        }
        let requiresWritable: Bool
        switch parameters(query: Substring(query))["target_session_attrs"] {
        case nil, "any": requiresWritable = false
        case "read-write", "primary": requiresWritable = true
        case let other?:
            throw SQLError("target_session_attrs must be any, read-write or primary (the gateway writes); got '\(other)'")
        }
        let tls = try tls(query: query)
        var configurations: [PostgresClient.Configuration] = []
        for hostPort in location.split(separator: ",", omittingEmptySubsequences: false) {
            var host = String(hostPort)
            var port = 5432
            if let colon = hostPort.lastIndex(of: ":") {
                guard let number = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(number) else {
                    throw SQLError("invalid port in the PostgreSQL URL")
                }
                port = number
                host = String(hostPort[..<colon])
            }
            guard !host.isEmpty else { throw SQLError("the PostgreSQL URL has an empty host") }
            var configuration = PostgresClient.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
            configuration.options.minimumConnections = minimumConnections
            configuration.options.maximumConnections = max(minimumConnections, maximumConnections)
            configurations.append(configuration)
        }
        return (configurations, requiresWritable)
    }

    /// The TLS of a URL's query, as libpq reads it: `sslmode` (`disable`, the default here, then
    /// `allow`/`prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert` (a CA file; with it
    /// `require` verifies the chain as `verify-ca` does), `sslcert` and `sslkey` (a client
    /// certificate), and `ssl_min_protocol_version` (`TLSv1.3` by default, `TLSv1.2` allowed).
    static func tls(query: String) throws -> PostgresClient.Configuration.TLS {
        let parameters = Self.parameters(query: Substring(query))
        let mode = parameters["sslmode"] ?? "disable"
        var settings = ClientTLSSettings(trustedCAFile: parameters["sslrootcert"], clientCertificateFile: parameters["sslcert"],
                                         clientKeyFile: parameters["sslkey"])
        switch parameters["ssl_min_protocol_version"] {
        case nil, "TLSv1.3": settings.minimumVersion = .tls13
        case "TLSv1.2": settings.minimumVersion = .tls12
        case let other?: throw SQLError("ssl_min_protocol_version must be TLSv1.2 or TLSv1.3; got '\(other)'")
        }
        if (settings.clientCertificateFile == nil) != (settings.clientKeyFile == nil) {
            throw SQLError("sslcert and sslkey go together")
        }
        switch mode {
        case "disable":
            return .disable
        case "allow", "prefer", "require":
            settings.verifiesHostname = false
            settings.verifiesPeer = settings.trustedCAFile != nil
        case "verify-ca":
            settings.verifiesHostname = false
        case "verify-full":
            break
        default:
            throw SQLError("sslmode must be disable, allow, prefer, require, verify-ca or verify-full; got '\(mode)'")
        }
        let configuration: TLSConfiguration
        do {
            configuration = try settings.configuration()
        } catch let error as TLSSettingsError {
            throw SQLError("PostgreSQL TLS: \(error.description)")
        }
        return mode == "require" || mode.hasPrefix("verify") ? .require(configuration) : .prefer(configuration)
    }

    static func parameters(query: Substring) -> [String: String] {
        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            parameters[String(parts[0])] = String(parts[1]).removingPercentEncoding ?? String(parts[1])
        }
        return parameters
    }

    static func parameters(url: String) -> [String: String] {
        guard let mark = url.firstIndex(of: "?") else { return [:] }
        return parameters(query: url[url.index(after: mark)...])
    }

    /// The certificate files a URL names (`sslrootcert`, `sslcert`), by role.
    public static func certificateFiles(url: String) -> [(role: String, path: String)] {
        let parameters = parameters(url: url)
        return [("ca", parameters["sslrootcert"]), ("client", parameters["sslcert"])].compactMap { role, path in path.map { (role, $0) } }
    }

    /// What a URL's TLS leaves open, said at start-up: TLS 1.2, or a server certificate not verified.
    public static func tlsWeakness(url: String) -> String? {
        let parameters = parameters(url: url)
        let mode = parameters["sslmode"] ?? "disable"
        if mode == "disable" { return nil }
        if ["allow", "prefer", "require"].contains(mode) && parameters["sslrootcert"] == nil {
            return "sslmode=\(mode) without sslrootcert does not verify the server's certificate; use verify-full"
        }
        return parameters["ssl_min_protocol_version"] == "TLSv1.2" ? "TLS 1.2 is accepted (ssl_min_protocol_version)" : nil
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            for client in clients { group.addTask { await client.run() } }
        }
    }

    public func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        let query = try Self.postgresQuery(sql, binds)
        let client = await client()
        do {
            return try await bounded { [logger] in try await Self.rows(client.query(query, logger: logger)) }
        } catch let error as PSQLError {
            throw await failed(error)
        } catch let error as SQLError where error.isUnavailable {
            if let selector { await selector.chooseAgain() }
            throw error
        }
    }

    public func transaction<Result: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> Result) async throws -> Result {
        let client = await client()
        do {
            return try await bounded { [logger] in
                try await client.withTransaction(logger: logger) { connection in
                    try await body(PostgresConnectionExecutor(connection: connection, logger: logger))
                }
            }
        } catch let error as PSQLError {
            throw await failed(error)
        } catch let error as PostgresTransactionError {
            if let closureError = error.closureError {
                if let failure = closureError as? SQLError, failure.isUnavailable, let selector { await selector.chooseAgain() }
                throw closureError
            }
            if let driverError = (error.beginError ?? error.commitError) as? PSQLError { throw await failed(driverError) }
            throw SQLError("transaction failed: \(error)")
        } catch let error as SQLError where error.isUnavailable {
            if let selector { await selector.chooseAgain() }
            throw error
        }
    }

    public func close() async {}

    /// A driver error as a store error; no server message, a connection-class SQLSTATE (08…,
    /// or the server shutting down or starting), or a read-only server (25006: a standby, or a
    /// primary being demoted) means the database was not reached for this statement.
    static func sqlError(_ error: PSQLError) -> SQLError {
        guard let message = error.serverInfo?[.message] else { return SQLError("\(error.code)", isUnavailable: true) }
        let state = error.serverInfo?[.sqlState] ?? ""
        return SQLError(message, isUnavailable: state.hasPrefix("08") || ["57P01", "57P02", "57P03", "25006"].contains(state))
    }

    static func postgresQuery(_ sql: String, _ binds: [SQLValue]) throws -> PostgresQuery {
        var bindings = PostgresBindings(capacity: binds.count)
        for value in binds {
            switch value {
            case .null: bindings.appendNull()
            case .integer(let integer): bindings.append(integer)
            case .double(let double): bindings.append(double)
            case .text(let text): bindings.append(text)
            case .blob(let bytes): bindings.append(ByteBuffer(bytes: bytes))
            }
        }
        return PostgresQuery(unsafeSQL: sql, binds: bindings)
    }

    static func rows(_ sequence: PostgresRowSequence) async throws -> [SQLRow] {
        var rows: [SQLRow] = []
        for try await row in sequence {
            var columns: [String] = []
            var values: [SQLValue] = []
            for cell in row {
                columns.append(cell.columnName)
                values.append(try value(cell))
            }
            rows.append(SQLRow(columns: columns, values: values))
        }
        return rows
    }

    static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard cell.bytes != nil else { return .null }
        switch cell.dataType {
        case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
        case .float4, .float8: return .double(try cell.decode(Double.self))
        case .bool: return .integer(try cell.decode(Bool.self) ? 1 : 0)
        case .bytea: return .blob(Array(try cell.decode(ByteBuffer.self).readableBytesView))
        default: return .text(try cell.decode(String.self))
        }
    }
}

/// Statements on the connection a transaction holds.
private struct PostgresConnectionExecutor: SQLExecutor {
    let connection: PostgresConnection
    let logger: Logger
    var dialect: SQLDialect { .postgres }

    func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        do {
            return try await PostgresStore.rows(connection.query(PostgresStore.postgresQuery(sql, binds), logger: logger))
        } catch let error as PSQLError {
            throw PostgresStore.sqlError(error)
        }
    }
}

/// Which host of a multi-host URL statements go to: the first, in the URL's order, that answers
/// (and, when a writable one is required, is not in recovery). Chosen before the first statement,
/// and again — at most once a second — after a statement found its host unreachable or read-only.
actor PostgresHostSelector {
    private let clients: [PostgresClient]
    private let hosts: [String]
    private let requiresWritable: Bool
    private let probeTimeout: Duration
    private let logger: Logger
    private var active: Int?
    private var chosenAt: ContinuousClock.Instant?
    /// The choice under way, which concurrent callers wait for instead of probing again.
    private var choosing: Task<Int?, Never>?

    init(clients: [PostgresClient], hosts: [String], requiresWritable: Bool, probeTimeout: Duration, logger: Logger) {
        self.clients = clients
        self.hosts = hosts
        self.requiresWritable = requiresWritable
        self.probeTimeout = probeTimeout
        self.logger = logger
    }

    /// The pool in use (choosing one first, the first time).
    func client() async -> PostgresClient {
        if let active { return clients[active] }
        return clients[await choose() ?? 0]
    }

    /// Chooses again after a failure, unless a choice was made within the last second.
    func chooseAgain() async {
        if let chosenAt, ContinuousClock.now - chosenAt < .seconds(1) { return }
        _ = await choose()
    }

    private func choose() async -> Int? {
        if let choosing { return await choosing.value }
        let clients = self.clients, requiresWritable = self.requiresWritable, timeout = self.probeTimeout, logger = self.logger
        let task = Task<Int?, Never> {
            for (index, client) in clients.enumerated()
                where await Self.isUsable(client, requiresWritable: requiresWritable, timeout: timeout, logger: logger) {
                return index
            }
            return nil
        }
        choosing = task
        let chosen = await task.value
        choosing = nil
        chosenAt = .now
        if let chosen, chosen != active {
            logger.notice("PostgreSQL: statements go to \(hosts[chosen])", metadata: ["previous": .string(active.map { hosts[$0] } ?? "none")])
            active = chosen
        } else if chosen == nil {
            logger.warning("PostgreSQL: no host of the URL is usable", metadata: ["hosts": .string(hosts.joined(separator: ","))])
        }
        return chosen ?? active
    }

    /// Whether a host answers within `timeout` (and is a primary, when that is required).
    static func isUsable(_ client: PostgresClient, requiresWritable: Bool, timeout: Duration, logger: Logger) async -> Bool {
        do {
            return try await Deadline.run(within: timeout) {
                let rows = try await PostgresStore.rows(client.query("SELECT pg_is_in_recovery() AS standby", logger: logger))
                guard requiresWritable else { return true }
                return rows.first?.values.first == .integer(0)
            }
        } catch {
            return false
        }
    }
}
