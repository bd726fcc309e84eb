import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
@testable import PortcullisStorage
@testable import PortcullisTLS
import Testing

/// A throwaway PKI made with the system's openssl: a CA, a server certificate for 127.0.0.1 and
/// two client certificates signed by it.
struct TestPKI {
    let directory: URL
    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    static func make() throws -> TestPKI {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let script = """
        set -e
        cd '\(directory.path)'
        key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
        key ca.key
        openssl req -x509 -new -key ca.key -days 30 -subj '/O=Portcullis Test/CN=Test CA' -out ca.pem 2>/dev/null
        issue() { # name subject days extensions
          key "$1.key"
          openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
          printf '%s\\n' "$4" > "$1.ext"
          openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$3" -extfile "$1.ext" -out "$1.pem" 2>/dev/null
        }
        issue server '/CN=127.0.0.1' 20 'subjectAltName=IP:127.0.0.1,DNS:localhost'
        issue billing '/O=Example/CN=billing-svc' 10 'extendedKeyUsage=clientAuth'
        issue stranger '/O=Example/CN=stranger' 10 'extendedKeyUsage=clientAuth'
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "openssl could not make the test PKI")
        return TestPKI(directory: directory)
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }

    /// Runs `body` with clients presenting each of `presenting` (nil: none), shut down after.
    func withClients<T: Sendable>(_ presenting: [String?], _ body: ([HTTPClient]) async throws -> T) async throws -> T {
        let clients = try presenting.map { try client(presenting: $0) }
        do {
            let result = try await body(clients)
            for client in clients { try await client.shutdown() }
            return result
        } catch {
            for client in clients { try? await client.shutdown() }
            throw error
        }
    }

    /// An HTTPS client trusting this CA, presenting `client` (a name above) when given.
    func client(presenting client: String? = nil, maximumVersion: TLSVersion? = nil) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(path("ca.pem")))
        if let maximumVersion { tls.maximumTLSVersion = maximumVersion }
        if let client {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(path("\(client).pem")).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: path("\(client).key"), format: .pem))
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }
}

/// Sends one request over `client` and returns status, headers (lower-cased names) and body.
func fetch(_ client: HTTPClient, _ url: String, method: NIOHTTP1Method = .GET, body: String? = nil,
           headers: [String: String] = [:]) async throws -> HTTPResult {
    var request = HTTPClientRequest(url: url)
    request.method = method == .GET ? .GET : .POST
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await client.execute(request, timeout: .seconds(10))
    let bytes = try await response.body.collect(upTo: 1 << 20)
    var fields: [String: String] = [:]
    for header in response.headers { fields[header.name.lowercased()] = header.value }
    return HTTPResult(status: Int(response.status.code), headers: fields, body: String(buffer: bytes))
}

enum NIOHTTP1Method { case GET, POST }

@Suite("TLS: HSTS, resumption, versions, mTLS, certificate lifetimes", .serialized)
struct TransportSecurityTests {
    static let chat = #"{"model":"demo","messages":[{"role":"user","content":"hello"}]}"#

    static func tlsConfiguration(_ pki: TestPKI, yaml extra: String = "") throws -> GatewayConfiguration {
        var configuration = try ConfigurationLoader.parse(yaml: """
        server:
          tls: { certificate: "\(pki.path("server.pem"))", private_key: "\(pki.path("server.key"))" }
        \(extra)
        models:
          - name: demo
            deployments: [{ provider: demo }]
        """, environment: [:], source: "test")
        configuration.server.port = 0
        return configuration
    }

    @Test("every response over TLS carries Strict-Transport-Security, refusals and unknown routes included; plain HTTP never does")
    func strictTransportSecurity() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        try await withGateway(configuration: try Self.tlsConfiguration(pki)) { gateway in
            try await pki.withClients([nil]) { clients in
                let base = "https://127.0.0.1:\(gateway.port)"
                for path in ["/health/live", "/no/such/route", "/admin/keys"] {
                    let result = try await fetch(clients[0], base + path)
                    #expect(result.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains", "\(path) → \(result.status)")
                }
                let chat = try await fetch(clients[0], base + "/v1/chat/completions", method: .POST, body: Self.chat)
                #expect(chat.status == 200)
                #expect(chat.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains")
            }
        }
        var custom = try Self.tlsConfiguration(pki)
        custom.server.tls?.strictTransportSecurity = StrictTransportSecurity(maxAge: 600, includeSubdomains: false, preload: true)
        try await withGateway(configuration: custom) { gateway in
            let result = try await pki.withClients([nil]) { try await fetch($0[0], "https://127.0.0.1:\(gateway.port)/health/live") }
            #expect(result.headers["strict-transport-security"] == "max-age=600; preload")
        }
        try await withGateway(configuration: GatewayConfiguration(demo: true)) { gateway in
            let result = try await gateway.get("/health/live")
            #expect(result.status == 200)
            #expect(result.headers["strict-transport-security"] == nil)
        }
    }

    @Test("hsts: false in the file turns the header off; client_auth without client_ca_file is refused")
    func tlsConfigurationChecks() throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let off = try ConfigurationLoader.parse(yaml: """
        server: { tls: { certificate: "\(pki.path("server.pem"))", private_key: "\(pki.path("server.key"))", hsts: false } }
        models: [{ name: demo, deployments: [{ provider: demo }] }]
        """, environment: [:], source: "test")
        #expect(off.server.tls?.strictTransportSecurity == nil)
        #expect(throws: ConfigurationError.self) {
            _ = try ConfigurationLoader.parse(yaml: """
            server: { tls: { certificate: "\(pki.path("server.pem"))", private_key: "\(pki.path("server.key"))", client_auth: required } }
            models: [{ name: demo, deployments: [{ provider: demo }] }]
            """, environment: [:], source: "test")
        }
        #expect(throws: ConfigurationError.self) {
            _ = try ConfigurationLoader.parse(yaml: """
            models: [{ name: m, deployments: [{ provider: openai_compatible, model: m, api_base: "https://x", tls_min_version: "1.1" }] }]
            """, environment: [:], source: "test")
        }
    }

    @Test("a reconnecting client resumes its TLS 1.3 session from a ticket, and the metric counts full and resumed handshakes")
    func sessionResumption() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        try await withGateway(configuration: try Self.tlsConfiguration(pki)) { gateway in
            let session = pki.path("session.pem")
            let request = "GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            func connect(_ extra: [String]) throws -> String {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
                process.arguments = ["s_client", "-connect", "127.0.0.1:\(gateway.port)", "-tls1_3", "-CAfile", pki.path("ca.pem"),
                                     "-alpn", "http/1.1"] + extra
                let input = Pipe(), output = Pipe()
                process.standardInput = input
                process.standardOutput = output
                process.standardError = output
                try process.run()
                input.fileHandleForWriting.write(Data(request.utf8))
                let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                return text
            }
            let first = try connect(["-sess_out", session])
            #expect(first.contains("HTTP/1.1 200"), "\(first.suffix(400))")
            #expect(first.contains("New, TLSv1.3"))
            let second = try connect(["-sess_in", session])
            #expect(second.contains("Reused, TLSv1.3"), "\(second.prefix(600))")
            #expect(second.contains("HTTP/1.1 200"))

            let metrics = try await pki.withClients([nil]) { try await fetch($0[0], "https://127.0.0.1:\(gateway.port)/metrics").body }
            #expect(metrics.contains(#"portcullis_tls_handshakes_total{kind="resumed"} 1"#), "\(metrics)")
            // The two openssl connections' first, and the metrics client's own.
            #expect(metrics.contains(#"portcullis_tls_handshakes_total{kind="full"} 2"#))
        }
    }

    @Test("the ServerHello reader tells a resumed handshake from a full one, passes over a HelloRetryRequest, and ignores what is not TLS")
    func serverHelloReader() {
        func hello(random: [UInt8] = Array(repeating: 7, count: 32), extensions: [(UInt16, [UInt8])]) -> [UInt8] {
            var body: [UInt8] = [0x03, 0x03] + random + [0] + [0x13, 0x01, 0]
            let encoded = extensions.flatMap { type, data in [UInt8(type >> 8), UInt8(type & 0xFF), 0, UInt8(data.count)] + data }
            body += [UInt8(encoded.count >> 8), UInt8(encoded.count & 0xFF)] + encoded
            let message: [UInt8] = [2, 0, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
            return [22, 3, 3, UInt8(message.count >> 8), UInt8(message.count & 0xFF)] + message
        }
        let versions: (UInt16, [UInt8]) = (43, [3, 4]), keyShare: (UInt16, [UInt8]) = (51, [0, 29, 0, 2, 1, 2]), psk: (UInt16, [UInt8]) = (41, [0, 0])
        var reader = ServerHelloReader()
        #expect(reader.read(hello(extensions: [versions, keyShare])) == .decided(.full))
        reader = ServerHelloReader()
        #expect(reader.read(hello(extensions: [versions, keyShare, psk])) == .decided(.resumed))
        // Split in the middle: needs more, then decides.
        let whole = hello(extensions: [keyShare, psk, versions])
        reader = ServerHelloReader()
        #expect(reader.read(whole.prefix(20)) == .needMore)
        #expect(reader.read(whole.dropFirst(20)) == .decided(.resumed))
        // A HelloRetryRequest first: the verdict is the real ServerHello's.
        reader = ServerHelloReader()
        #expect(reader.read(hello(random: ServerHelloReader.helloRetryRandom, extensions: [versions]) + hello(extensions: [versions])) == .decided(.full))
        reader = ServerHelloReader()
        #expect(reader.read(Array("HTTP/1.1 200 OK\r\n\r\n".utf8)) == .unrecognised)
        reader = ServerHelloReader()
        #expect(reader.read([22, 3, 3, 0, 4, 1, 0, 0, 0]) == .unrecognised, "a handshake record that is not a ServerHello")
    }

    @Test("upstreams get TLS 1.3 by default: one that offers only TLS 1.2 is refused unless its deployment allows 1.2")
    func upstreamMinimumVersion() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        try await withMockUpstream(tls: (pki.path("server.pem"), pki.path("server.key")), maximumTLSVersion: .tlsv12) { mock, port in
            let yaml = """
            routing: { retries: 0, health_check: { interval_seconds: 0 } }
            models:
              - name: strict
                deployments: [{ provider: openai_compatible, model: m, api_base: "https://127.0.0.1:\(port)/v1", ca_file: "\(pki.path("ca.pem"))" }]
              - name: old
                deployments: [{ provider: openai_compatible, model: m, api_base: "https://127.0.0.1:\(port)/v1", ca_file: "\(pki.path("ca.pem"))",
                                tls_min_version: "1.2" }]
            """
            try await withGateway(yaml: yaml) { gateway in
                let refused = try await gateway.post("/v1/chat/completions", #"{"model":"strict","messages":[{"role":"user","content":"x"}]}"#)
                #expect(refused.status == 502)
                #expect(refused.errorCode == "upstream_connection_failed")
                let allowed = try await gateway.post("/v1/chat/completions", #"{"model":"old","messages":[{"role":"user","content":"over 1.2"}]}"#)
                #expect(allowed.status == 200)
                #expect(allowed.body.contains("Mock reply to: over 1.2"))
                #expect(mock.requests.count == 1)
            }
        }
    }

    @Test("mTLS to an upstream: a deployment presents its client certificate; without one the upstream refuses the handshake")
    func upstreamClientCertificate() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        try await withMockUpstream(tls: (pki.path("server.pem"), pki.path("server.key")), clientCAFile: pki.path("ca.pem")) { mock, port in
            let base = "https://127.0.0.1:\(port)/v1"
            let yaml = """
            routing: { retries: 0, health_check: { interval_seconds: 0 } }
            models:
              - name: meshed
                deployments: [{ provider: vllm, model: m, api_base: "\(base)", ca_file: "\(pki.path("ca.pem"))",
                                client_certificate: "\(pki.path("billing.pem"))", client_key: "\(pki.path("billing.key"))" }]
              - name: bare
                deployments: [{ provider: vllm, model: m, api_base: "\(base)", ca_file: "\(pki.path("ca.pem"))" }]
            """
            try await withGateway(yaml: yaml) { gateway in
                let meshed = try await gateway.post("/v1/chat/completions", #"{"model":"meshed","messages":[{"role":"user","content":"mtls"}]}"#)
                #expect(meshed.status == 200)
                #expect(meshed.body.contains("Mock reply to: mtls"))
                let bare = try await gateway.post("/v1/chat/completions", #"{"model":"bare","messages":[{"role":"user","content":"x"}]}"#)
                #expect(bare.status == 502)
                #expect(bare.errorCode == "upstream_connection_failed")
                #expect(mock.requests.count == 1)
            }
        }
    }

    @Test("client certificates on the listener: required refuses a client without one; a mapped subject is a principal, an unmapped one is not")
    func clientCertificatePrincipals() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let configuration = try Self.tlsConfiguration(pki, yaml: """
        auth:
          master_key: tls-master
          certificate_principals:
            - { subject: "CN=billing-svc,O=Example", team: billing, role: user, models: [demo], rpm: 1 }
        """)
        var required = configuration
        required.server.tls?.clientAuthentication = .required
        required.server.tls?.clientCAFile = pki.path("ca.pem")
        try await withGateway(configuration: required) { gateway in
            let base = "https://127.0.0.1:\(gateway.port)"
            try await pki.withClients(["billing", "stranger", nil]) { clients in
            let billing = clients[0], stranger = clients[1], none = clients[2]
            let served = try await fetch(billing, base + "/v1/chat/completions", method: .POST, body: Self.chat)
            #expect(served.status == 200, "\(served.body)")
            // Its own rpm of 1 holds, as a key's would.
            let limited = try await fetch(billing, base + "/v1/chat/completions", method: .POST, body: Self.chat)
            #expect(limited.status == 429)
            // A credential wins over the certificate.
            let keyed = try await fetch(billing, base + "/v1/chat/completions", method: .POST, body: Self.chat,
                                        headers: ["authorization": "Bearer tls-master"])
            #expect(keyed.status == 200)
            let unmapped = try await fetch(stranger, base + "/v1/chat/completions", method: .POST, body: Self.chat)
            #expect(unmapped.status == 401)
            await #expect(throws: (any Error).self) {
                _ = try await fetch(none, base + "/health/live")
            }
            let metrics = try await fetch(billing, base + "/metrics", headers: ["authorization": "Bearer tls-master"]).body
            #expect(metrics.contains(#"portcullis_tls_certificate_expiry_seconds{role="server",subject="CN=127.0.0.1""#), "\(metrics)")
            #expect(metrics.contains(#"role="client_ca",subject="CN=Test CA,O=Portcullis Test""#))
            }
        }
        var optional = configuration
        optional.server.tls?.clientAuthentication = .optional
        optional.server.tls?.clientCAFile = pki.path("ca.pem")
        try await withGateway(configuration: optional) { gateway in
            try await pki.withClients([nil]) { clients in
            let none = clients[0]
            let base = "https://127.0.0.1:\(gateway.port)"
            #expect(try await fetch(none, base + "/health/live").status == 200)
            #expect(try await fetch(none, base + "/v1/chat/completions", method: .POST, body: Self.chat).status == 401)
            let ready = try await fetch(none, base + "/health/ready")
            let certificates = ready.json?.objectValue?["certificates"]?.arrayValue ?? []
            let server = certificates.compactMap(\.objectValue).first { $0["role"]?.stringValue == "server" }
            let days = server?["days_left"]?.integerValue ?? -1
            #expect((18...20).contains(days), "the server certificate was issued for 20 days: \(ready.body)")
            }
        }
    }
}

@Suite("PostgreSQL TLS settings read from the URL as libpq reads them")
struct PostgresTLSSettingsTests {
    @Test("unknown sslmode, a bad minimum version or a lone sslcert are refused; weak settings are named for the start-up warning")
    func urlSettings() throws {
        let base = "postgres://u:p@127.0.0.1:5432/db"
        for query in ["sslmode=verify-everything", "sslmode=verify-full&ssl_min_protocol_version=TLSv1.1", "sslmode=require&sslcert=/tmp/c.pem"] {
            #expect(throws: SQLError.self, "\(query)") {
                _ = try PostgresStore.configuration(url: "\(base)?\(query)", minimumConnections: 1, maximumConnections: 1)
            }
        }
        for query in ["", "sslmode=disable", "sslmode=require", "sslmode=verify-full", "sslmode=verify-ca&ssl_min_protocol_version=TLSv1.2"] {
            _ = try PostgresStore.configuration(url: "\(base)?\(query)", minimumConnections: 1, maximumConnections: 1)
        }
        #expect(PostgresStore.tlsWeakness(url: base) == nil)
        #expect(PostgresStore.tlsWeakness(url: "\(base)?sslmode=verify-full") == nil)
        #expect(PostgresStore.tlsWeakness(url: "\(base)?sslmode=require")?.contains("does not verify") == true)
        #expect(PostgresStore.tlsWeakness(url: "\(base)?sslmode=require&sslrootcert=/tmp/ca.pem") == nil)
        #expect(PostgresStore.tlsWeakness(url: "\(base)?sslmode=verify-full&ssl_min_protocol_version=TLSv1.2")?.contains("TLS 1.2") == true)
        let files = PostgresStore.certificateFiles(url: "\(base)?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/c.pem&sslkey=/etc/c.key")
        #expect(files.map(\.role) == ["ca", "client"])
        #expect(files.map(\.path) == ["/etc/ca.pem", "/etc/c.pem"])
    }
}

/// The TLS folder of the PostgreSQL scripts/test.sh starts: `ca.pem` (a CA of the run's own),
/// a server certificate for the name `localhost` only (no IP address), and `client.pem`/`client.key` for the role `pgcert`,
/// which may log in only over TLS with that certificate.
func testPostgresTLSFolder() throws -> String {
    try #require(ProcessInfo.processInfo.environment["PORTCULLIS_TEST_POSTGRES_TLS"],
                 "PORTCULLIS_TEST_POSTGRES_TLS is not set: run the suite through scripts/test.sh")
}

@Suite("PostgreSQL over TLS, against the test server (TLS 1.3 only)")
struct PostgresOverTLSTests {
    /// The test server's URL with `user`, `host` and the query `query`.
    static func url(user: String = "postgres", host: String = "localhost", _ query: String) throws -> String {
        let base = try testPostgresURL()
        let port = base.split(separator: ":").last!.split(separator: "/").first!
        return "postgres://\(user)@\(host):\(port)/postgres?\(query)"
    }

    /// What the server says of this connection: whether it is TLS, its version and the user.
    static func session(_ url: String) async throws -> (ssl: Bool, version: String, user: String) {
        // Generous: the suites start together on two cores and the shared server is busiest then; a refused
        // handshake fails at once whatever the limit.
        let store = try PostgresStore(url: url, operationTimeout: 15, logger: testLogger)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await store.run() }
            defer { tasks.cancelAll() }
            let rows = try await store.query(
                "SELECT s.ssl::int AS ssl, coalesce(s.version, '') AS version, current_user::text AS who FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()", [])
            let row = try #require(rows.first)
            return (row["ssl"].integer == 1, row["version"].text ?? "", row["who"].text ?? "")
        }
    }

    @Test("verify-full with the CA file: the server sees TLS 1.3; plain connections stay plain")
    func verifiedConnection() async throws {
        let folder = try testPostgresTLSFolder()
        let verified = try await Self.session(try Self.url("sslmode=verify-full&sslrootcert=\(folder)/ca.pem"))
        #expect(verified.ssl && verified.version == "TLSv1.3", "\(verified)")
        let plain = try await Self.session(try Self.url("sslmode=disable"))
        #expect(!plain.ssl)
    }

    @Test("a certificate from another CA is refused, and verify-full refuses an address the certificate does not name while verify-ca accepts it")
    func verificationFailures() async throws {
        let folder = try testPostgresTLSFolder()
        let other = try TestPKI.make()
        defer { other.remove() }
        await #expect(throws: SQLError.self) {
            _ = try await Self.session(try Self.url("sslmode=verify-full&sslrootcert=\(other.path("ca.pem"))"))
        }
        await #expect(throws: SQLError.self) {
            _ = try await Self.session(try Self.url(host: "127.0.0.1", "sslmode=verify-full&sslrootcert=\(folder)/ca.pem"))
        }
        let chainOnly = try await Self.session(try Self.url(host: "127.0.0.1", "sslmode=verify-ca&sslrootcert=\(folder)/ca.pem"))
        #expect(chainOnly.ssl)
    }

    @Test("a client certificate logs in a role the server admits only by certificate")
    func clientCertificate() async throws {
        let folder = try testPostgresTLSFolder()
        let tls = "sslmode=verify-full&sslrootcert=\(folder)/ca.pem"
        let session = try await Self.session(try Self.url(user: "pgcert", "\(tls)&sslcert=\(folder)/client.pem&sslkey=\(folder)/client.key"))
        #expect(session.ssl && session.user == "pgcert", "\(session)")
        await #expect(throws: SQLError.self) {
            _ = try await Self.session(try Self.url(user: "pgcert", tls))
        }
    }

    @Test("a gateway whose database is PostgreSQL over verify-full migrates, serves, and lists the database CA's lifetime")
    func gatewayOverTLS() async throws {
        let folder = try testPostgresTLSFolder()
        try await withScratchPostgresDatabase { database in
            let yaml = """
            auth: { master_key: pg-tls-master, key_pepper: "a-pepper-of-at-least-thirty-two-bytes-for-tests" }
            storage: { database: "\(database.replacingOccurrences(of: "@127.0.0.1:", with: "@localhost:"))?sslmode=verify-full&sslrootcert=\(folder)/ca.pem" }
            models: [{ name: demo, deployments: [{ provider: demo }] }]
            """
            try await withGateway(yaml: yaml) { gateway in
                let key = try await gateway.request(.POST, "/admin/keys", body: #"{"role":"user"}"#,
                                                    headers: ["authorization": "Bearer pg-tls-master"])
                #expect(key.status == 201, "\(key.body)")
                let ready = try await gateway.get("/health/ready")
                #expect(ready.json?.objectValue?["database"]?.stringValue == "ok", "\(ready.body)")
                let certificates = ready.json?.objectValue?["certificates"]?.arrayValue?.compactMap(\.objectValue) ?? []
                let ca = certificates.first { $0["role"]?.stringValue == "database_ca" }
                #expect(ca?["subject"]?.stringValue == "CN=Portcullis test PostgreSQL CA", "\(ready.body)")
                #expect((28...30).contains(ca?["days_left"]?.integerValue ?? -1))
            }
            // What the gateway wrote went over TLS into that database.
            let store = try PostgresStore(url: database, logger: testLogger)
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await store.run() }
                defer { tasks.cancelAll() }
                let keys = try await store.query("SELECT count(*) AS n FROM portcullis_api_keys", [])
                #expect(keys.first?["n"].integer == 1)
            }
        }
    }
}
