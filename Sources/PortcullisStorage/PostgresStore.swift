import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle

/// PostgreSQL through a PostgresNIO connection pool. `run()` keeps the pool alive; run it
/// as a service before issuing statements.
public final class PostgresStore: SQLStore, Service {
    public let dialect = SQLDialect.postgres
    private let client: PostgresClient
    private let logger: Logger

    /// Reads `postgres://user[:password]@host[:port]/database[?sslmode=disable|require]`.
    public init(url: String, minimumConnections: Int = 1, maximumConnections: Int = 16, logger: Logger) throws {
        let configuration = try Self.configuration(url: url, minimumConnections: minimumConnections, maximumConnections: maximumConnections)
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
    }

    static func configuration(url: String, minimumConnections: Int, maximumConnections: Int) throws -> PostgresClient.Configuration {
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
        var host = String(location)
        var port = 5432
        if let colon = location.lastIndex(of: ":") {
            guard let number = Int(location[location.index(after: colon)...]) else { throw SQLError("invalid port in the PostgreSQL URL") }
            port = number
            host = String(location[..<colon])
        }
        let requireTLS = query.split(separator: "&").contains { $0 == "sslmode=require" || $0 == "sslmode=verify-full" }
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database,
            tls: requireTLS ? .require(.makeClientConfiguration()) : .disable)
        configuration.options.minimumConnections = minimumConnections
        configuration.options.maximumConnections = max(minimumConnections, maximumConnections)
        return configuration
    }

    public func run() async throws {
        await client.run()
    }

    public func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow] {
        do {
            return try await Self.rows(client.query(Self.postgresQuery(sql, binds), logger: logger))
        } catch let error as PSQLError {
            throw SQLError(error.serverInfo?[.message] ?? "\(error.code)")
        }
    }

    public func transaction<Result: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> Result) async throws -> Result {
        do {
            return try await client.withTransaction(logger: logger) { connection in
                try await body(PostgresConnectionExecutor(connection: connection, logger: logger))
            }
        } catch let error as PSQLError {
            throw SQLError(error.serverInfo?[.message] ?? "\(error.code)")
        } catch let error as PostgresTransactionError {
            if let closureError = error.closureError { throw closureError }
            throw SQLError("transaction failed: \(error)")
        }
    }

    public func close() async {}

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
            throw SQLError(error.serverInfo?[.message] ?? "\(error.code)")
        }
    }
}
