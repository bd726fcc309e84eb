import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisTLS
import Testing

/// Real TLS 1.3 with HTTP/2 negotiated by ALPN, on loopback.
@Suite("TLS and HTTP/2", .serialized)
struct TLSTests {
    /// Makes a self-signed certificate for 127.0.0.1 with the system's openssl.
    static func makeCertificate() throws -> (directory: URL, certificate: String, key: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                             "-keyout", key, "-out", certificate]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "openssl failed")
        return (directory, certificate, key)
    }

    static func client(trusting certificate: String, maximumVersion: TLSVersion? = nil) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificate))
        if let maximumVersion { tls.maximumTLSVersion = maximumVersion }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.httpVersion = .automatic
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    @Test("serves HTTPS with TLS 1.3 and HTTP/2, streams included; refuses TLS 1.2 clients")
    func tlsAndHTTP2() async throws {
        let files = try Self.makeCertificate()
        defer { try? FileManager.default.removeItem(at: files.directory) }
        var configuration = GatewayConfiguration(demo: true)
        configuration.server.tls = .init(certificatePath: files.certificate, privateKeyPath: files.key)
        try await withGateway(configuration: configuration) { gateway in
            let client = try Self.client(trusting: files.certificate)
            let oldClient = try Self.client(trusting: files.certificate, maximumVersion: .tlsv12)
            var request = HTTPClientRequest(url: "https://127.0.0.1:\(gateway.port)/v1/chat/completions")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: #"{"model":"demo","stream":true,"messages":[{"role":"user","content":"over h2"}]}"#))
            let response = try await client.execute(request, timeout: .seconds(10))
            #expect(response.status == .ok)
            #expect(response.version == .http2)
            let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
            #expect(body.hasSuffix("data: [DONE]\n\n"))
            #expect(body.contains("over"))

            await #expect(throws: (any Error).self) {
                _ = try await oldClient.execute(HTTPClientRequest(url: "https://127.0.0.1:\(gateway.port)/health/live"), timeout: .seconds(5))
            }
            try await client.shutdown()
            try await oldClient.shutdown()
        }
    }

    @Test("a renewed certificate written over the files serves new connections within seconds, without a restart, while an open connection keeps working")
    func certificateRotation() async throws {
        let first = try Self.makeCertificate(), second = try Self.makeCertificate()
        defer {
            try? FileManager.default.removeItem(at: first.directory)
            try? FileManager.default.removeItem(at: second.directory)
        }
        // The gateway reads a copy; the first pair stays beside it for the clients that trust it.
        let served = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-served-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: served) }
        let certificate = served.appendingPathComponent("cert.pem").path, key = served.appendingPathComponent("key.pem").path
        try FileManager.default.copyItem(atPath: first.certificate, toPath: certificate)
        try FileManager.default.copyItem(atPath: first.key, toPath: key)
        var configuration = GatewayConfiguration(demo: true)
        configuration.server.tls = .init(certificatePath: certificate, privateKeyPath: key)
        configuration.server.http2 = false
        try await withGateway(configuration: configuration) { gateway in
            let url = "https://127.0.0.1:\(gateway.port)/health/live"
            let open = try Self.client(trusting: first.certificate)
            #expect(try await open.execute(HTTPClientRequest(url: url), timeout: .seconds(5)).status == .ok)
            // Renewal: the new pair replaces the files (as cert-manager or certbot write them).
            try Data(contentsOf: URL(fileURLWithPath: second.key)).write(to: URL(fileURLWithPath: key), options: .atomic)
            try Data(contentsOf: URL(fileURLWithPath: second.certificate)).write(to: URL(fileURLWithPath: certificate), options: .atomic)
            let renewed = try Self.client(trusting: second.certificate)
            #expect(try await eventually(seconds: 15) {
                (try? await renewed.execute(HTTPClientRequest(url: url), timeout: .seconds(5)))?.status == .ok
            }, "a client that trusts only the new certificate connects")
            // The connection opened under the old certificate was not dropped.
            #expect(try await open.execute(HTTPClientRequest(url: url), timeout: .seconds(5)).status == .ok)
            let stale = try Self.client(trusting: first.certificate)
            await #expect(throws: (any Error).self, "a new handshake no longer presents the old certificate") {
                _ = try await stale.execute(HTTPClientRequest(url: url), timeout: .seconds(5))
            }
            // A half-written file does not take the listener down: the renewed pair stays in service.
            try "-----BEGIN CERTIFICATE-----\nnot a certificate".write(toFile: certificate, atomically: true, encoding: .utf8)
            try await Task.sleep(for: .seconds(6))
            let again = try Self.client(trusting: second.certificate)
            #expect(try await again.execute(HTTPClientRequest(url: url), timeout: .seconds(5)).status == .ok)
            for client in [open, renewed, stale, again] { try await client.shutdown() }
        }
    }

    @Test("reaches an https upstream trusted through ca_file, keeps the connection alive, and refuses one it cannot verify")
    func httpsUpstream() async throws {
        let files = try Self.makeCertificate()
        defer { try? FileManager.default.removeItem(at: files.directory) }
        try await withMockUpstream(tls: (files.certificate, files.key)) { mock, port in
            let yaml = """
            routing: { retries: 0, health_check: { interval_seconds: 0 } }
            models:
              - name: trusted
                deployments:
                  - { provider: openai_compatible, model: m, api_base: "https://127.0.0.1:\(port)/v1", ca_file: "\(files.certificate)" }
              - name: untrusted
                deployments:
                  - { provider: openai_compatible, model: m, api_base: "https://127.0.0.1:\(port)/v1" }
            """
            try await withGateway(yaml: yaml) { gateway in
                for _ in 0..<3 {
                    let result = try await gateway.post("/v1/chat/completions", #"{"model":"trusted","messages":[{"role":"user","content":"over tls"}]}"#)
                    #expect(result.status == 200)
                    #expect(result.body.contains("Mock reply to: over tls"))
                }
                let streamed = try await gateway.post("/v1/chat/completions",
                    #"{"model":"trusted","stream":true,"messages":[{"role":"user","content":"over tls"}]}"#)
                #expect(streamed.sseData.last == "[DONE]")
                let refused = try await gateway.post("/v1/chat/completions", #"{"model":"untrusted","messages":[{"role":"user","content":"x"}]}"#)
                #expect(refused.status == 502)
                #expect(refused.errorCode == "upstream_connection_failed")
                #expect(mock.requests.count == 4, "three calls and one stream; the refused handshake never reached the handler")
                #expect(Set(mock.requests.compactMap(\.clientPort)).count == 1, "one kept-alive TLS connection served every call")
            }
        }
    }
}
