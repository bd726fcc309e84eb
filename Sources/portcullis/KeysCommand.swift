import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import PortcullisCore
import PortcullisProviders

/// `portcullis keys …`: manages virtual API keys through a running gateway's admin API.
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Create, list, rotate and revoke API keys on a running gateway.",
        subcommands: [Create.self, List.self, Rotate.self, Revoke.self])

    struct Connection: ParsableArguments {
        @Option(help: "The gateway's base URL (default: $PORTCULLIS_URL or http://127.0.0.1:4000).")
        var url: String?

        @Option(help: "An admin or developer credential (default: $PORTCULLIS_API_KEY, then $PORTCULLIS_MASTER_KEY).")
        var key: String?

        /// Calls the admin API; prints the gateway's error and exits 1 when it refuses.
        func call(_ method: HTTPMethod, _ path: String, body: JSONValue? = nil) async throws -> JSONValue {
            let environment = ProcessInfo.processInfo.environment
            let base = url ?? environment["PORTCULLIS_URL"] ?? "http://127.0.0.1:4000"
            guard let credential = key ?? environment["PORTCULLIS_API_KEY"] ?? environment["PORTCULLIS_MASTER_KEY"] else {
                throw ValidationError("no credential: pass --key or set PORTCULLIS_API_KEY")
            }
            let client = UpstreamHTTPClient()
            defer { Task { await client.shutdown() } }
            let target = DeploymentTarget(name: "gateway", provider: .openaiCompatible, upstreamModel: "", apiBase: base, apiKey: credential)
            do {
                return try await client.sendJSON(method: method, url: joinURL(base, path), headers: [("authorization", "Bearer \(credential)")],
                                                 body: body ?? (method == .POST ? .object(JSONObject()) : nil), target: target,
                                                 context: UpstreamContext(requestID: FastRandom.uuidString(), logger: Logger(label: "portcullis.keys")))
            } catch let failure as UpstreamFailure {
                FileHandle.standardError.write(Data("portcullis keys: \(failure.message)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a key; its secret is printed once.")
        @OptionGroup var connection: Connection
        @Option(help: "A label.") var name: String?
        @Option(help: "user, developer, admin or auditor.") var role: String = "user"
        @Option(help: "Owner user id.") var user: String?
        @Option(help: "Team id.") var team: String?
        @Option(help: "Allowed model (repeat for several; none means all).") var model: [String] = []
        @Option(help: "Requests per minute.") var rpm: Int?
        @Option(help: "Tokens per minute.") var tpm: Int?
        @Option(help: "Concurrent requests.") var concurrency: Int?
        @Option(help: "Spend cap in the price currency.") var budget: Double?
        @Option(help: "day or month.") var budgetPeriod: String?
        @Option(help: "Lifetime in days (default 90).") var expiresInDays: Double?

        func run() async throws {
            var body = JSONObject()
            body["role"] = .string(role)
            if let name { body["name"] = .string(name) }
            if let user { body["user_id"] = .string(user) }
            if let team { body["team_id"] = .string(team) }
            if !model.isEmpty { body["models"] = .array(model.map(JSONValue.string)) }
            if let rpm { body["rpm"] = .integer(Int64(rpm)) }
            if let tpm { body["tpm"] = .integer(Int64(tpm)) }
            if let concurrency { body["concurrency"] = .integer(Int64(concurrency)) }
            if let budget { body["budget"] = .double(budget) }
            if let budgetPeriod { body["budget_period"] = .string(budgetPeriod) }
            if let expiresInDays { body["expires_in_days"] = .double(expiresInDays) }
            let created = try await connection.call(.POST, "/admin/keys", body: .object(body))
            print(JSONWriter.string(created))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List keys (one JSON object per line).")
        @OptionGroup var connection: Connection
        @Option(help: "Only this user's keys.") var user: String?

        func run() async throws {
            var cursor: String?
            repeat {
                var path = "/admin/keys?limit=200"
                if let user { path += "&user_id=\(user.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? user)" }
                if let cursor { path += "&cursor=\(cursor)" }
                let page = try await connection.call(.GET, path)
                for key in page.objectValue?["data"]?.arrayValue ?? [] { print(JSONWriter.string(key)) }
                cursor = page.objectValue?["next_cursor"]?.stringValue
            } while cursor != nil
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a new secret; the old one works for the grace period.")
        @OptionGroup var connection: Connection
        @Argument(help: "The key id.") var keyID: String
        @Option(help: "Seconds the old secret keeps working (default: the gateway's).") var grace: Double?

        func run() async throws {
            let body: JSONValue = grace.map { ["grace_seconds": .double($0)] } ?? .object(JSONObject())
            print(JSONWriter.string(try await connection.call(.POST, "/admin/keys/\(keyID)/rotate", body: body)))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key at once, on every replica.")
        @OptionGroup var connection: Connection
        @Argument(help: "The key id.") var keyID: String

        func run() async throws {
            print(JSONWriter.string(try await connection.call(.POST, "/admin/keys/\(keyID)/revoke")))
        }
    }
}
