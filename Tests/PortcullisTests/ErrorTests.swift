import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PortcullisAccess
import PortcullisConfig
import PortcullisCore
import PortcullisServer
import Testing

/// Bad input gets a clear error in the client's envelope, with a stable code; the gateway never crashes.
@Suite("Errors and access", .serialized)
struct ErrorTests {
    @Test("every stable code in the catalog is documented in the README's error table, and no two share a string")
    func codeCatalogIsDocumented() throws {
        let readme = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../README.md").standardized, encoding: .utf8)
        let table = readme.components(separatedBy: "### Errors").dropFirst().first?.components(separatedBy: "\n## ").first ?? ""
        for code in ErrorCode.allCases {
            #expect(table.contains("`\(code.rawValue)`"), "\(code.rawValue) is missing from the README's error table")
        }
        #expect(Set(ErrorCode.allCases.map(\.rawValue)).count == ErrorCode.allCases.count)
    }

    @Test("a GatewayError renders itself: thrown from any Hummingbird route it is its status, headers and the dialect's envelope")
    func errorsRenderThemselves() async throws {
        let router = Router()
        let refusal = GatewayError(status: 429, kind: .rateLimited, code: .rateLimitExceeded, message: "Slow down.", headers: ["Retry-After": "7"])
        router.post("/v1/chat/completions") { _, _ -> String in throw refusal }
        router.post("/v1/messages") { _, _ -> String in throw refusal }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/v1/chat/completions", method: .post) { response in
                #expect(response.status == .tooManyRequests && response.headers[HTTPField.Name("Retry-After")!] == "7")
                let body = String(buffer: response.body)
                #expect(body.contains(#""code":"rate_limit_exceeded""#) && body.contains(#""message":"Slow down.""#), "\(body)")
            }
            try await client.execute(uri: "/v1/messages", method: .post, headers: [HTTPField.Name("x-request-id")!: "req-7"]) { response in
                let body = String(buffer: response.body)
                #expect(response.status == .tooManyRequests && body.contains(#""type":"error""#) && body.contains("rate_limit_error")
                        && body.contains(#""request_id":"req-7""#), "\(body)")
            }
        }
    }

    @Test("malformed JSON: 400 saying where, in each dialect's envelope")
    func malformedJSON() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            let openAI = try await gateway.post("/v1/chat/completions", "{\"model\": \"demo\",\n \"messages\": [}")
            #expect(openAI.status == 400)
            #expect(openAI.errorCode == "invalid_json")
            #expect(openAI.json?.objectValue?["error"]?.objectValue?["type"] == "invalid_request_error")
            #expect(openAI.body.contains("line 2, column 15"))
            let anthropic = try await gateway.post("/v1/messages", "nope")
            #expect(anthropic.status == 400)
            #expect(anthropic.json?.objectValue?["type"] == "error")
            #expect(anthropic.json?.objectValue?["error"]?.objectValue?["type"] == "invalid_request_error")
            #expect(anthropic.errorCode == "invalid_json")
        }
    }

    @Test("invalid parameters name the parameter")
    func invalidParameters() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            let result = try await gateway.post("/v1/chat/completions", #"{"model":"demo","messages":[{"role":"user","content":"x"}],"n":"two"}"#)
            #expect(result.status == 400)
            #expect(result.json?.objectValue?["error"]?.objectValue?["param"] == "n")
            #expect(result.errorCode == "invalid_parameter")
        }
    }

    @Test("unknown model: 404 listing the models that exist")
    func unknownModel() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            let result = try await gateway.post("/v1/chat/completions", #"{"model":"gpt-5","messages":[{"role":"user","content":"x"}]}"#)
            #expect(result.status == 404)
            #expect(result.errorCode == "model_not_found")
            #expect(result.body.contains("Available models: demo"))
            let anthropic = try await gateway.post("/v1/messages", #"{"model":"gpt-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#)
            #expect(anthropic.json?.objectValue?["error"]?.objectValue?["type"] == "not_found_error")
        }
    }

    @Test("a body over the limit: 413, whether declared or streamed")
    func bodyTooLarge() async throws {
        var configuration = GatewayConfiguration(demo: true)
        configuration.server.maxBodyBytes = 2048
        try await withGateway(configuration: configuration) { gateway in
            let big = #"{"model":"demo","messages":[{"role":"user","content":""# + String(repeating: "a", count: 5000) + #""}]}"#
            let result = try await gateway.post("/v1/chat/completions", big)
            #expect(result.status == 413)
            #expect(result.errorCode == "request_too_large")
            let anthropic = try await gateway.post("/v1/messages", big)
            #expect(anthropic.json?.objectValue?["error"]?.objectValue?["type"] == "request_too_large")
        }
    }

    @Test("with a master key: missing or wrong key is 401 in the right envelope; Bearer and x-api-key both work")
    func masterKey() async throws {
        var configuration = GatewayConfiguration(demo: true)
        configuration.auth.masterKey = "pk-master-secret"
        try await withGateway(configuration: configuration) { gateway in
            let body = #"{"model":"demo","messages":[{"role":"user","content":"x"}]}"#
            let missing = try await gateway.post("/v1/chat/completions", body)
            #expect(missing.status == 401)
            #expect(missing.errorCode == "invalid_api_key")
            let wrong = try await gateway.post("/v1/chat/completions", body, headers: ["authorization": "Bearer pk-master-secreT"])
            #expect(wrong.status == 401)
            let anthropic = try await gateway.post("/v1/messages", #"{"model":"demo","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                                                   headers: ["x-api-key": "nope"])
            #expect(anthropic.status == 401)
            #expect(anthropic.json?.objectValue?["error"]?.objectValue?["type"] == "authentication_error")
            #expect(try await gateway.post("/v1/chat/completions", body, headers: ["authorization": "Bearer pk-master-secret"]).status == 200)
            #expect(try await gateway.post("/v1/messages", #"{"model":"demo","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
                                           headers: ["x-api-key": "pk-master-secret"]).status == 200)
            #expect(try await gateway.get("/health/live").status == 200, "health stays open for probes")
            #expect(try await gateway.get("/v1/models").status == 401)
        }
    }

    @Test("unknown routes and methods get envelopes too")
    func unknownRoutes() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            let missing = try await gateway.get("/v1/nothing-here")
            #expect(missing.status == 404)
            #expect(missing.errorCode == "route_not_found")
        }
    }

    @Test("random and hostile bodies never crash the gateway: every answer is a 4xx envelope")
    func hostileInput() async throws {
        try await withGateway(configuration: .init(demo: true)) { gateway in
            var generator = SystemRandomNumberGenerator()
            let fragments = ["{", "}", "[", "]", "\"model\"", ":", ",", "\"demo\"", "\"messages\"", "null", "1e999", "\"\\ud800\"",
                             "{\"role\":\"user\",\"content\":", "\u{0}", "\u{FEFF}", "true", "-", "\"tools\"", "[{\"type\":1}]"]
            for round in 0..<150 {
                let body = (0..<Int.random(in: 0..<12, using: &generator)).map { _ in fragments.randomElement(using: &generator)! }.joined()
                for path in ["/v1/chat/completions", "/v1/messages", "/v1/completions", "/v1/embeddings"] {
                    let result = try await gateway.post(path, body)
                    #expect(result.status == 200 || (400..<500).contains(result.status), "round \(round) \(path) \(body) → \(result.status)")
                    if result.status != 200 { #expect(result.errorCode != nil, "no stable code for \(body)") }
                }
            }
            let deep = String(repeating: "[", count: 50_000)
            #expect(try await gateway.post("/v1/chat/completions", deep).status == 400)
            #expect(try await gateway.get("/health/live").status == 200)
        }
    }
}
