import ArgumentParser
import Foundation
import NIOHTTP1
import PortcullisCore

/// `portcullis ip …`: blocks and unblocks client addresses on a running gateway (every replica).
struct IPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ip", abstract: "Block or unblock client addresses on every replica of a running gateway.",
        subcommands: [Block.self, Unblock.self])

    struct Block: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refuse an address or CIDR block (403 ip_not_allowed), at once, on every replica.")
        @OptionGroup var connection: KeysCommand.Connection
        @Argument(help: "An IPv4 or IPv6 address, or a CIDR block.") var address: String
        @Option(name: .customLong("for"), help: "How long: 90s, 15m, 12h, 7d (default: until unblocked).") var duration: String?
        @Option(help: "Why, for the record.") var note: String?

        func run() async throws {
            var body: JSONObject = ["cidr": .string(address), "action": "deny"]
            if let duration {
                guard let seconds = IPCommand.seconds(duration) else { throw ValidationError("--for must look like 90s, 15m, 12h or 7d") }
                body["expires_in_seconds"] = .integer(seconds)
            }
            if let note { body["note"] = .string(note) }
            print(JSONWriter.string(try await connection.call(.POST, "/admin/ip-rules", body: .object(body))))
        }
    }

    struct Unblock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove an IP rule by its id (as `block` printed it).")
        @OptionGroup var connection: KeysCommand.Connection
        @Argument(help: "The rule id.") var rule: String

        func run() async throws {
            _ = try await connection.call(.DELETE, "/admin/ip-rules/\(PercentEncoding.encode(rule))")
            print("removed \(rule)")
        }
    }

    /// Seconds of `90s`, `15m`, `12h`, `7d` or a bare number of seconds.
    static func seconds(_ text: String) -> Int64? {
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let unit = text.last, let factor = units[unit], let value = Int64(text.dropLast()), value > 0 { return value * factor }
        return Int64(text).flatMap { $0 > 0 ? $0 : nil }
    }
}
