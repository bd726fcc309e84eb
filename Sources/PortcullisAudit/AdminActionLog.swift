import Foundation
import PortcullisCore
import PortcullisStorage

/// Who did what to which object through the admin API (keys, users, teams, IP rules, budgets):
/// one row per action, read back by `/admin/actions`.
public struct AdminActionLog: Sendable {
    public let store: any SQLStore

    public init(store: any SQLStore) {
        self.store = store
    }

    public static let migrations: [Migration] = [
        Migration(version: 105, name: "admin actions") { dialect in
            let id = dialect == .postgres ? "BIGSERIAL PRIMARY KEY" : "INTEGER PRIMARY KEY AUTOINCREMENT"
            return ["""
                CREATE TABLE portcullis_admin_actions (
                    id \(id), at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
                    details TEXT NOT NULL, request_id TEXT
                )
                """]
        },
    ]

    /// Records one administrative action (who, what, on what).
    public func record(actor: String, action: String, target: String, details: JSONObject = JSONObject(), requestID: String?,
                       now: Double = Date().timeIntervalSince1970) async throws {
        try await store.execute("INSERT INTO portcullis_admin_actions (at, actor, action, target, details, request_id) VALUES ($1, $2, $3, $4, $5, $6)",
                                [.integer(Int64(now)), .text(actor), .text(action), .text(target), .text(JSONWriter.string(.object(details))),
                                 requestID.map(SQLValue.text) ?? .null])
    }

    /// Admin actions, newest first.
    public func list(limit: Int, offset: Int) async throws -> [JSONValue] {
        try await store.query("SELECT * FROM portcullis_admin_actions ORDER BY id DESC LIMIT $1 OFFSET $2",
                              [.integer(Int64(limit)), .integer(Int64(offset))]).map { row in
            let details = (try? JSONParser.parse(row["details"].text ?? "{}"))?.objectValue ?? JSONObject()
            return ["at": .integer(row["at"].integer ?? 0), "actor": .string(row["actor"].text ?? ""), "action": .string(row["action"].text ?? ""),
                    "target": .string(row["target"].text ?? ""), "details": .object(details),
                    "request_id": row["request_id"].text.map(JSONValue.string) ?? .null]
        }
    }
}
