import Foundation
import HummingbirdTesting
import PortcullisConfig
import PortcullisCore
import PortcullisStorage
@testable import PortcullisServer
import Testing

@Suite("Connection timeouts and cap", .serialized)
struct ConnectionGuardTests {
    @Test("the timeout state machine arms the header, body and idle timers at the right moments")
    func stateMachine() {
        var state = ConnectionTimeoutState()
        #expect(ConnectionTimeoutState.opening == .arm(.header))
        #expect(state.bytesArrived() == .none, "bytes of the first head: the header timer already runs")
        #expect(state.headReceived() == .arm(.bodyIdle))
        #expect(state.bodyReceived() == .arm(.bodyIdle), "each body part restarts the body timer")
        #expect(state.requestEnded() == .disarm, "no timer while the answer is written, however long a stream runs")
        #expect(state.responseEnded() == .arm(.keepAliveIdle))
        #expect(state.phase == .idle)
        #expect(state.bytesArrived() == .arm(.header), "a next head that trickles in is held to the header timeout")
        #expect(state.bytesArrived() == .none)
        #expect(state.headReceived() == .arm(.bodyIdle))
        // An early answer (a refusal before the body ended): the body is still drained under its timer.
        #expect(state.responseEnded() == .none)
        #expect(state.phase == .drainingBody)
        #expect(state.bodyReceived() == .arm(.bodyIdle))
        #expect(state.requestEnded() == .arm(.keepAliveIdle))
    }

    static let yaml = """
        auth: { master_key: test-master-key }
        server: { max_connections: 3, timeouts: { header_seconds: 1.5, body_idle_seconds: 0.5, keep_alive_idle_seconds: 4 } }
        routing: { health_check: { interval_seconds: 0 } }
        models:
          - name: demo
            deployments: [{ provider: demo }]
        """

    @Test("a partial head, a short body and an idle connection are closed on time; past the cap the oldest idle goes, else the new one is refused")
    func timeoutsAndCap() async throws {
        var configuration = try ConfigurationLoader.parse(yaml: Self.yaml, environment: [:], source: "test")
        configuration.server.port = 0
        configuration.server.host = "127.0.0.1"
        configuration.storage.database = "sqlite::memory:"
        let assembled = try await Gateway(configuration: configuration, logger: testLogger, governed: true)
        let governor = assembled.connections
        try await assembled.makeApplication(logger: testLogger).test(.live) { client in
            let gateway = GatewayClient(port: client.port!)
            // Three connections sending a partial head fill the cap; a fourth is refused with a 503.
            // (The header timeout is long enough that a loaded machine still reaches the fourth before it.)
            var partial: [RawConnection] = []
            for _ in 0..<3 {
                let connection = try await RawConnection.connect(port: gateway.port)
                try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")
                partial.append(connection)
            }
            // Until the gateway has read a partial head, that connection counts as one that sent
            // nothing and would be evicted to admit the fourth (seen while the whole suite ran in parallel).
            for _ in 0..<250 where governor.activeCount < 3 { try await Task.sleep(nanoseconds: 4_000_000) }
            #expect(governor.activeCount == 3, "the three partial heads were read")
            let fourth = try await RawConnection.connect(port: gateway.port)
            #expect(try await fourth.waitForClose(seconds: 2) && fourth.status == 503, "refused at the cap: \(fourth.received)")
            // The header timeout closes the partial heads with a 408.
            for connection in partial {
                #expect(try await connection.waitForClose(seconds: 3), "closed by the header timeout")
                #expect(connection.status == 408, "\(connection.received)")
            }

            // A body shorter than its Content-Length, from a valid caller, is closed by the body timeout.
            let short = try await RawConnection.connect(port: gateway.port)
            try await short.send("POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer test-master-key\r\n"
                                 + "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\":\"demo\"")
            #expect(try await short.waitForClose(seconds: 2) && short.status == 408, "\(short.received)")

            // A kept-alive connection waits its idle time; a next head that trickles in gets only the header timeout.
            let idle = try await RawConnection.connect(port: gateway.port)
            let trickle = try await RawConnection.connect(port: gateway.port)
            for connection in [idle, trickle] {
                try await connection.send("GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
                #expect(try await connection.waitFor("\"ok\""))
            }
            try await trickle.send("GET /health/live HTTP/1.1\r\n")
            #expect(try await trickle.waitForClose(seconds: 2.5), "the partial second head is held to the header timeout")
            #expect(!idle.isClosedByPeer, "an idle connection is kept within its idle time")

            // At the cap with an idle connection among them, the idle one makes room.
            let busy1 = try await RawConnection.connect(port: gateway.port)
            try await busy1.send("GET /health/live HTTP/1.1\r\n")
            let busy2 = try await RawConnection.connect(port: gateway.port)
            try await busy2.send("GET /health/live HTTP/1.1\r\n")
            try await Task.sleep(nanoseconds: 50_000_000)
            let newcomer = try await RawConnection.connect(port: gateway.port)
            try await newcomer.send("GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
            #expect(try await newcomer.waitFor("\"ok\""), "admitted by closing the idle connection: \(newcomer.received)")
            #expect(try await idle.waitForClose(seconds: 1), "the idle connection was the one closed")
            for connection in [busy1, busy2] { await connection.close() }
            // Left idle, the newcomer is closed once its idle time (4 s) has passed.
            let idleStart = Date()
            #expect(try await newcomer.waitForClose(seconds: 6))
            #expect(Date().timeIntervalSince(idleStart) > 3.5, "not before its idle time")

            func sample(_ name: String) async throws -> Double? { try await gateway.metric(name) }
            #expect(try await sample(#"portcullis_connection_timeouts_total{timeout="header"}"#) == 4)
            #expect(try await sample(#"portcullis_connection_timeouts_total{timeout="body_idle"}"#) == 1)
            #expect(try await sample("portcullis_connections_refused_total") == 1)
            #expect(try await sample(#"portcullis_connection_timeouts_total{timeout="keep_alive_idle"}"#) == 1)
            // The idle one above, and the test client's connection that sent nothing before the cap was reached.
            #expect((try await sample("portcullis_connections_evicted_total") ?? 0) >= 1)
        }
    }

    @Test("the timeouts and the cap are read from the configuration with their defaults, and bad values are refused with their key")
    func configuration() throws {
        let defaults = GatewayConfiguration.Server()
        #expect(defaults.headerTimeoutSeconds == 10 && defaults.bodyIdleTimeoutSeconds == 30 && defaults.keepAliveIdleTimeoutSeconds == 75)
        #expect(defaults.maximumConnections == 10_000)
        let parsed = try ConfigurationLoader.parse(yaml: Self.yaml, environment: [:], source: "test")
        #expect(parsed.server.maximumConnections == 3 && parsed.server.headerTimeoutSeconds == 1.5 && parsed.server.keepAliveIdleTimeoutSeconds == 4)
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.parse(yaml: "server: { timeouts: { header_seconds: 0 } }\nmodels: [{ name: d, deployments: [{ provider: demo }] }]",
                                          environment: [:], source: "test")
        }
    }
}
