import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders

extension GuardCommand {
    /// `portcullis guard redteam`: the red-team exercise against a running gateway.
    struct RedTeamCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "redteam",
            abstract: "Send an attack suite, as written and in disguises, through a running gateway and report what got through.",
            discussion: """
                Every attack of the set (lines labelled "attack" of a guard-eval JSON-lines file; default the repository's
                datasets/injection.jsonl) goes as a chat request in each mutation: plain, base64, homoglyphs, leetspeak,
                spaced, roleplay, story, translation, split (across two messages) and tool_result (inside a tool's answer).
                A 400 guardrail_blocked answer is blocked; a 2xx got through; anything else is an error. The report gives
                the blocked share per mutation and per category and lists what got through. The gateway's limits apply:
                use a key whose limits allow the suite (attacks x mutations requests).
                """)

        @Option(help: "The gateway's base URL (or PORTCULLIS_URL).") var url: String?
        @Option(help: "The credential (or PORTCULLIS_API_KEY, PORTCULLIS_MASTER_KEY).") var key: String?
        @Option(help: "The model group to ask.") var model = "demo"
        @Option(help: "The attacks (JSON lines, as guard eval reads them).") var dataset = "datasets/injection.jsonl"
        @Option(help: "Mutations to run, comma-separated (default: all).") var mutations: String?
        @Option(help: "At most this many attacks (0: all).") var limit = 0
        @Option(help: "Requests in flight at once.") var concurrency = 8
        @Option(help: "Attacks that got through to list per mutation.") var show = 3
        @Option(help: "text or json.") var format = "text"
        @Option(help: "Exit 1 when fewer than this share of the answered attacks were blocked (0-1).") var failUnder: Double?

        func run() async throws {
            let environment = ProcessInfo.processInfo.environment
            let base = url ?? environment["PORTCULLIS_URL"] ?? "http://127.0.0.1:4000"
            let credential = key ?? environment["PORTCULLIS_API_KEY"] ?? environment["PORTCULLIS_MASTER_KEY"]
            guard let contents = FileManager.default.contents(atPath: dataset).map({ String(decoding: $0, as: UTF8.self) }) else {
                throw ValidationError("cannot read \(dataset)")
            }
            var attacks: [GuardEvaluation.Example]
            do { attacks = try GuardEvaluation.parse(contents).filter(\.isAttack) } catch { throw ValidationError("\(dataset): \(error)") }
            guard !attacks.isEmpty else { throw ValidationError("\(dataset) holds no line labelled attack") }
            if limit > 0 { attacks = Array(attacks.prefix(limit)) }
            var chosen = RedTeam.Mutation.allCases
            if let mutations {
                chosen = try mutations.split(separator: ",").map { name in
                    guard let mutation = RedTeam.Mutation(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                        throw ValidationError("unknown mutation '\(name)'; known: \(RedTeam.Mutation.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    return mutation
                }
            }
            guard format == "text" || format == "json" else { throw ValidationError("--format: text or json") }

            let client = UpstreamHTTPClient()
            let target = DeploymentTarget(name: "gateway", provider: .openaiCompatible, upstreamModel: "", apiBase: base, apiKey: credential)
            let endpoint = joinURL(base, "/v1/chat/completions")
            let headers: [(String, String)] = credential.map { [("authorization", "Bearer \($0)")] } ?? []
            let logger = Logger(label: "portcullis.redteam")
            let trials = await RedTeam.run(attacks, mutations: chosen, model: model, concurrency: concurrency) { body in
                do {
                    _ = try await client.sendJSON(method: .POST, url: endpoint, headers: headers, body: body, target: target,
                                                  context: UpstreamContext(requestID: FastRandom.uuidString(), logger: logger))
                    return (200, "")
                } catch let failure as UpstreamFailure {
                    if case .status(let status) = failure.reason { return (status, failure.message) }
                    return (0, failure.message)
                } catch {
                    return (0, "\(error)")
                }
            }
            await client.shutdown()
            let report = RedTeam.Report(trials)
            if format == "json" {
                print(JSONWriter.string(report.json))
            } else {
                print("red team: \(attacks.count) attacks x \(chosen.count) mutations against \(endpoint), model \(model)\n")
                print(report.text(examples: show), terminator: "")
            }
            if report.total.blocked + report.total.through == 0 {
                FileHandle.standardError.write(Data("portcullis guard redteam: no request was answered (\(report.errors.first?.detail ?? "?"))\n".utf8))
                throw ExitCode(2)
            }
            if let failUnder, report.total.blockedRate < failUnder { throw ExitCode(1) }
        }
    }
}
