/// A value bound into, or read out of, a SQL statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])

    /// The value as an integer (booleans read as 0/1).
    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .double(let value): return Int64(exactly: value)
        case .text(let value): return Int64(value)
        default: return nil
        }
    }

    /// The value as a floating-point number.
    public var double: Double? {
        switch self {
        case .double(let value): return value
        case .integer(let value): return Double(value)
        case .text(let value): return Double(value)
        default: return nil
        }
    }

    /// The value as text.
    public var text: String? {
        if case .text(let value) = self { return value }
        return nil
    }

    /// The value as bytes.
    public var blob: [UInt8]? {
        if case .blob(let value) = self { return value }
        return nil
    }

    public var isNull: Bool { self == .null }
}

/// One result row: columns by name, in order.
public struct SQLRow: Sendable, Equatable {
    public let columns: [String]
    public let values: [SQLValue]

    public init(columns: [String], values: [SQLValue]) {
        self.columns = columns
        self.values = values
    }

    /// The value of the column `name` (`.null` when absent).
    public subscript(_ name: String) -> SQLValue {
        guard let index = columns.firstIndex(of: name) else { return .null }
        return values[index]
    }
}

/// Which SQL engine a store speaks; statements that differ per engine switch on it.
public enum SQLDialect: String, Sendable {
    case sqlite
    case postgres
}

/// Runs SQL with bound parameters (`$1`, `$2`, … in both dialects). Statements are never
/// built by concatenating values: every value travels as a bind.
public protocol SQLExecutor: Sendable {
    var dialect: SQLDialect { get }
    /// Runs one statement and returns its rows.
    func query(_ sql: String, _ binds: [SQLValue]) async throws -> [SQLRow]
}

extension SQLExecutor {
    /// Runs one statement, ignoring rows.
    public func execute(_ sql: String, _ binds: [SQLValue] = []) async throws {
        _ = try await query(sql, binds)
    }
}

/// A database: statements, and transactions whose statements commit or roll back together.
public protocol SQLStore: SQLExecutor {
    /// Runs `body` in one transaction; a thrown error rolls it back.
    func transaction<Result: Sendable>(_ body: @Sendable (any SQLExecutor) async throws -> Result) async throws -> Result
    /// Runs `sql` once for each row of binds, all in one transaction (an append of many rows).
    func executeMany(_ sql: String, _ rows: [[SQLValue]]) async throws
    /// Closes connections.
    func close() async
}

extension SQLStore {
    public func executeMany(_ sql: String, _ rows: [[SQLValue]]) async throws {
        try await executeManyInTransaction(sql, rows)
    }

    /// `executeMany` as one transaction of one statement per row (what a store without a faster way does).
    public func executeManyInTransaction(_ sql: String, _ rows: [[SQLValue]]) async throws {
        guard !rows.isEmpty else { return }
        try await transaction { transaction in
            for row in rows { try await transaction.execute(sql, row) }
        }
    }
}

/// A database failure, with the engine's message.
public struct SQLError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// Whether the database could not be reached (as opposed to refusing the statement):
    /// a client sees a retryable 503 rather than an internal error.
    public var isUnavailable: Bool

    public init(_ message: String, isUnavailable: Bool = false) {
        self.message = message
        self.isUnavailable = isUnavailable
    }

    public var description: String { "SQL error: \(message)" }
}

/// A `WHERE` clause built from optional conditions, each value bound in order (`$1`, `$2`, …),
/// and the binds that go with it (never values spliced into the SQL).
public struct SQLFilter: Sendable {
    public private(set) var binds: [SQLValue] = []
    private var conditions: [String] = []

    public init() {}

    /// Adds `column comparison value`.
    public mutating func add(_ column: String, _ comparison: String, _ value: SQLValue) {
        conditions.append("\(column) \(comparison) \(bind(value))")
    }

    /// Adds `column = value`.
    public mutating func add(_ column: String, _ value: SQLValue) {
        add(column, "=", value)
    }

    /// Binds one more value (a LIMIT, say) and returns its placeholder.
    public mutating func bind(_ value: SQLValue) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    /// `WHERE a AND b …`, or nothing without conditions.
    public var clause: String { conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ") }
}
