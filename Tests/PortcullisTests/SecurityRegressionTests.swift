import Foundation
import PortcullisAccess
import PortcullisConfig
import PortcullisCore
import Testing

/// Regression tests for the defects an outside test found (issue 14): each fails without its fix.
@Suite("Security regressions", .serialized)
struct SecurityRegressionTests {
    static let master = "test-master-key"

    /// A gateway with a master key and a slow-streaming mock model `m1` (and a demo `m2`).
    static func yaml(mockPort: Int, extra: String = "") -> String {
        """
        auth: { master_key: \(master) }
        storage: { flush_interval_seconds: 0.2 }
        routing: { health_check: { interval_seconds: 0 } }
        models:
        \(openAIModel("m1", port: mockPort, extra: ", price: { input_per_million: 1000, output_per_million: 1000 }"))
          - name: m2
            deployments: [{ provider: demo }]
        \(extra)
        """
    }

    /// A raw HTTP/1.1 request with a JSON body.
    static func rawRequest(_ path: String, key: String, body: String) -> String {
        "POST \(path) HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer \(key)\r\nContent-Type: application/json\r\n"
            + "anthropic-version: 2023-06-01\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    static let streams: [(path: String, body: String)] = [
        ("/v1/chat/completions", #"{"model":"m1","stream":true,"messages":[{"role":"user","content":"one two three four five six seven eight"}]}"#),
        ("/v1/messages", #"{"model":"m1","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"one two three four five six seven eight"}]}"#),
        ("/v1/completions", #"{"model":"m1","stream":true,"prompt":"one two three four five six seven eight"}"#),
    ]

    @Test("an aborted stream gives back its concurrency slot, whichever API, FIN or RST, before or after the first byte")
    func abortedStreamReleasesSlot() async throws {
        try await withMockUpstream { _, mockPort in
            // Slow enough that a client can leave before the first event or in the middle.
            try await configureMock(port: mockPort, #"{"tokens_per_second":20,"ttft_ms":300}"#)
            try await withGateway(yaml: Self.yaml(mockPort: mockPort)) { gateway in
                let key = try await gateway.createKey(#""concurrency":1"#, as: Self.master).key
                for (path, body) in Self.streams {
                    for (reset, afterFirstByte) in [(false, true), (true, true), (false, false), (true, false)] {
                        let connection = try await RawConnection.connect(port: gateway.port)
                        try await connection.send(Self.rawRequest(path, key: key, body: body))
                        if afterFirstByte {
                            #expect(try await connection.waitFor("data: "), "\(path): the stream started: \(connection.received.prefix(200))")
                        } else {
                            try await Task.sleep(nanoseconds: 100_000_000)   // admitted, waiting for the first event
                        }
                        await connection.close(reset: reset)
                        let freed = try await eventually(seconds: 5) {
                            try await gateway.chat(key: key, model: "m2").status == 200
                        }
                        #expect(freed, "\(path) reset=\(reset) afterFirstByte=\(afterFirstByte): the slot was given back")
                    }
                }
            }
        }
    }

    @Test("streams aborted after their finish chunk are recorded and their reservations settled, so the budget allows every call it can pay for")
    func abortedStreamSettlesBudget() async throws {
        try await withMockUpstream { _, mockPort in
            // Paced, so the usage chunk and the end of the stream come after the client left.
            try await configureMock(port: mockPort, #"{"tokens_per_second":20}"#)
            try await withGateway(yaml: Self.yaml(mockPort: mockPort)) { gateway in
                // A token costs 1,000 micro-units; a call reserves its worst case (~30 prompt and 50
                // output tokens, ~80,000) and spends ~6,000: a leaked reservation would leave
                // room for at most two of the calls below.
                let (key, id) = try await gateway.createKey(#""budget":0.2"#, as: Self.master)
                let body = #"{"model":"m1","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hello there"}]}"#
                for _ in 0..<5 {
                    let connection = try await RawConnection.connect(port: gateway.port)
                    try await connection.send(Self.rawRequest("/v1/chat/completions", key: key, body: body))
                    #expect(try await connection.waitFor(#""finish_reason":"stop""#))
                    await connection.close(reset: true)
                }
                #expect(try await eventually {
                    _ = try await gateway.call(.POST, "/admin/usage/flush", key: Self.master)
                    let usage = try await gateway.call(.GET, "/admin/usage?group_by=key_id&key_id=\(id)", key: Self.master)
                    return usage.json?.objectValue?["data"]?.arrayValue?.first?.objectValue?["requests"]?.integerValue == 5
                }, "every aborted stream has its usage recorded")
                // With every reservation settled at its real cost, more calls fit than the 4 that
                // held reservations would have allowed.
                var served = 0
                for _ in 0..<8 where try await gateway.chat(key: key, model: "m1", extra: #","max_tokens":50"#).status == 200 { served += 1 }
                #expect(served == 8, "served \(served) of 8 after the aborted streams")
            }
        }
    }

    @Test("a developer may not rotate, revoke or delete a key of a role it may not issue")
    func developerCannotTakeOverAdminKey() async throws {
        try await withGateway(configuration: try Self.demoConfiguration()) { gateway in
            let developer = try await gateway.createKey(#""role":"developer","user_id":"dave""#, as: Self.master).key
            let (_, adminID) = try await gateway.createKey(#""role":"admin","user_id":"dave""#, as: Self.master)
            let rotate = try await gateway.call(.POST, "/admin/keys/\(adminID)/rotate", key: developer)
            #expect(rotate.status == 403 && rotate.json?.objectValue?["key"] == nil, "\(rotate.body)")
            #expect(try await gateway.call(.POST, "/admin/keys/\(adminID)/revoke", key: developer).status == 403)
            #expect(try await gateway.call(.DELETE, "/admin/keys/\(adminID)", key: developer).status == 403)
            // Its own developer and user keys it still manages.
            let (_, ownID) = try await gateway.createKey(#""role":"user""#, as: developer)
            #expect(try await gateway.call(.POST, "/admin/keys/\(ownID)/rotate", key: developer).status == 200)
        }
    }

    @Test("a key a developer mints is bounded by the developer's models, limits, budget and expiry, and is revoked with it")
    func mintedKeysBoundedByIssuer() async throws {
        try await withGateway(configuration: try Self.demoConfiguration()) { gateway in
            let (developer, developerID) = try await gateway.createKey(
                #""role":"developer","user_id":"dave","models":["m2"],"rpm":100,"budget":0.002,"expires_in_days":2"#, as: Self.master)
            for (fields, param) in [(#""models":["m1"]"#, "models"), (#""rpm":100000000"#, "rpm"), (#""budget":5"#, "budget"),
                                    (#""concurrency":5,"tpm":1"#, "")] {
                let refused = try await gateway.call(.POST, "/admin/keys", key: developer, body: "{\(fields)}")
                if param.isEmpty {
                    #expect(refused.status == 201, "limits the developer has none of are the role's: \(refused.body)")
                } else {
                    #expect(refused.status == 403 && refused.errorCode == "exceeds_issuer_bounds", "\(fields): \(refused.body)")
                    #expect(refused.json?.objectValue?["error"]?.objectValue?["param"]?.stringValue == param)
                }
            }
            let minted = try await gateway.call(.POST, "/admin/keys", key: developer, body: #"{"expires_in_days":3650}"#)
            #expect(minted.status == 201, "\(minted.body)")
            let object = try #require(minted.json?.objectValue)
            let child = object["key"]?.stringValue ?? ""
            #expect(object["models"] == ["m2"], "models inherited")
            #expect(object["rpm"]?.integerValue == 100 && object["budget"]?.doubleValue == 0.002)
            #expect(object["issuer_key_id"]?.stringValue == developerID)
            let developerRecord = try await gateway.call(.GET, "/admin/keys/\(developerID)", key: Self.master).json?.objectValue
            let parentExpiry = try #require(developerRecord?["expires_at"]?.integerValue)
            #expect((object["expires_at"]?.integerValue ?? .max) <= parentExpiry, "no later than the issuer's expiry")
            #expect(try await gateway.chat(key: child, model: "m1").status == 403)

            // The child's spend comes out of the developer's budget too.
            var childServed = 0
            var childRefusal: HTTPResult?
            for _ in 0..<40 {
                let result = try await gateway.chat(key: child, model: "m2", extra: #","max_tokens":20"#)
                if result.status == 200 { childServed += 1 } else { childRefusal = result; break }
            }
            #expect(childServed > 0 && childRefusal?.errorCode == "budget_exceeded", "\(childServed) served, then \(childRefusal?.body ?? "")")
            let parent = try await gateway.chat(key: developer, model: "m2", extra: #","max_tokens":20"#)
            #expect(parent.status == 429 && parent.errorCode == "budget_exceeded", "the shared budget is spent: \(parent.body)")

            let revoked = try await gateway.call(.POST, "/admin/keys/\(developerID)/revoke", key: Self.master)
            #expect(revoked.json?.objectValue?["minted_keys_revoked"]?.arrayValue?.count == 2, "\(revoked.body)")
            #expect(try await gateway.chat(key: child, model: "m2").status == 401, "revoked with its issuer")
        }
    }

    @Test("a rotated secret stops at the end of its grace even while cached; a second rotation keeps the first one's grace")
    func rotatedSecretEndsWithGrace() async throws {
        var configuration = try Self.demoConfiguration()
        configuration.auth.keyCacheSeconds = 60
        try await withGateway(configuration: configuration) { gateway in
            let (old, id) = try await gateway.createKey("", as: Self.master)
            #expect(try await gateway.chat(key: old, model: "m2").status == 200)
            let rotated = try await gateway.call(.POST, "/admin/keys/\(id)/rotate", key: Self.master, body: #"{"grace_seconds":1}"#)
            let second = rotated.json?.objectValue?["key"]?.stringValue ?? ""
            #expect(try await gateway.chat(key: old, model: "m2").status == 200, "within its grace (and now cached)")
            try await Task.sleep(nanoseconds: 1_300_000_000)
            #expect(try await gateway.chat(key: old, model: "m2").status == 401, "the grace has ended although the cache entry is fresh")

            _ = try await gateway.call(.POST, "/admin/keys/\(id)/rotate", key: Self.master, body: #"{"grace_seconds":3600}"#)
            let third = try await gateway.call(.POST, "/admin/keys/\(id)/rotate", key: Self.master, body: #"{"grace_seconds":3600}"#)
            #expect(try await gateway.chat(key: second, model: "m2").status == 200, "the second secret keeps the grace it was given")
            #expect(try await gateway.chat(key: third.json?.objectValue?["key"]?.stringValue ?? "", model: "m2").status == 200)
        }
    }

    @Test("broken body framing is a 400 with a stable code, never a 500")
    func framingErrorsAre400() async throws {
        try await withGateway(configuration: try Self.demoConfiguration()) { gateway in
            let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer \(Self.master)\r\n"
            for chunkSize in ["ffffffffffffffffff", "-1"] {
                let connection = try await RawConnection.connect(port: gateway.port)
                try await connection.send(head + "Transfer-Encoding: chunked\r\n\r\n\(chunkSize)\r\nabc\r\n0\r\n\r\n")
                #expect(try await connection.waitFor("malformed_body"), "\(connection.received.prefix(300))")
                #expect(connection.status == 400, "chunk size \(chunkSize): \(connection.received.prefix(300))")
                await connection.close()
            }
            let connection = try await RawConnection.connect(port: gateway.port)
            try await connection.send(head + "Content-Length: 100\r\n\r\n{\"model\":")
            try await connection.finishWriting()
            #expect(try await connection.waitFor("malformed_body"), "\(connection.received.prefix(300))")
            #expect(connection.status == 400)
            await connection.close()
        }
    }

    @Test("a key sees only its models in errors, and echoed input is truncated")
    func modelErrorsDiscloseNothing() async throws {
        try await withGateway(configuration: try Self.demoConfiguration()) { gateway in
            let key = try await gateway.createKey(#""models":["m2"]"#, as: Self.master).key
            let missing = try await gateway.call(.GET, "/v1/models/m1", key: key)
            #expect(missing.status == 404 && missing.body.contains("Available models: m2."), "\(missing.body)")
            let huge = String(repeating: "x", count: 500_000)
            let echoed = try await gateway.call(.POST, "/v1/chat/completions", key: Self.master,
                                                body: #"{"model":"\#(huge)","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(echoed.errorCode == "model_not_found" && echoed.body.utf8.count < 1_000, "\(echoed.body.utf8.count) bytes")
        }
    }

    @Test("a request that can never fit a tokens-per-minute limit says so, without Retry-After")
    func neverFitsTokensPerMinute() async throws {
        try await withGateway(configuration: try Self.demoConfiguration()) { gateway in
            let key = try await gateway.createKey(#""tpm":50"#, as: Self.master).key
            let refused = try await gateway.chat(key: key, model: "m2", text: String(repeating: "word ", count: 100))
            #expect(refused.status == 429 && refused.errorCode == "request_exceeds_limit", "\(refused.body)")
            #expect(refused.headers["retry-after"] == nil && refused.body.contains("never fit"))
        }
    }

    @Test("an IP rule stops applying the moment it expires")
    func expiredIPRuleLiftedAtOnce() async throws {
        try await withGateway(configuration: try Self.demoConfiguration()) { gateway in
            let added = try await gateway.call(.POST, "/admin/ip-rules", key: Self.master,
                                               body: #"{"cidr":"127.0.0.1","action":"deny","expires_in_seconds":1}"#)
            #expect(added.status == 201)
            #expect(try await gateway.chat(key: Self.master, model: "m2").status == 403, "a one-second rule holds for at least a second")
            try await Task.sleep(nanoseconds: 2_100_000_000)
            #expect(try await gateway.chat(key: Self.master, model: "m2").status == 200, "lifted at its expiry, not at the next reload (30 s)")
        }
    }

    static func demoConfiguration() throws -> GatewayConfiguration {
        var configuration = try ConfigurationLoader.parse(yaml: """
            auth: { master_key: \(master) }
            routing: { health_check: { interval_seconds: 0 } }
            models:
              - name: m1
                deployments: [{ provider: demo }]
              - name: m2
                deployments: [{ provider: demo, price: { input_per_million: 1, output_per_million: 10 } }]
            """, environment: [:], source: "test")
        configuration.server.port = 0
        configuration.server.host = "127.0.0.1"
        return configuration
    }
}
