import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import PortcullisAccess
import PortcullisConfig
import PortcullisCore
import PortcullisMockUpstream
import PortcullisRedis
import PortcullisServer
import PortcullisStorage
import ServiceLifecycle
import Testing

/// A logger for tests: quiet unless PORTCULLIS_TEST_LOG is set.
let testLogger: Logger = {
    var logger = Logger(label: "portcullis-tests")
    logger.logLevel = ProcessInfo.processInfo.environment["PORTCULLIS_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// Runs a mock upstream on a free loopback port for the duration of `body`.
func withMockUpstream<T: Sendable>(_ behaviour: MockBehaviour = MockBehaviour(), tls: (certificatePath: String, keyPath: String)? = nil,
                                   maximumTLSVersion: TLSVersion? = nil, clientCAFile: String? = nil,
                                   _ body: @Sendable (MockUpstream, Int) async throws -> T) async throws -> T {
    let mock = MockUpstream(behaviour: behaviour)
    let app = try mock.makeApplication(host: "127.0.0.1", port: 0, logger: testLogger, tls: tls, maximumTLSVersion: maximumTLSVersion,
                                       clientCAFile: clientCAFile)
    return try await app.test(.live) { client in
        try await body(mock, client.port!)
    }
}

/// Runs the gateway built from `yaml` (with `${MOCK}` etc. interpolated from `environment`) and passes a client.
func withGateway<T: Sendable>(yaml: String, environment: [String: String] = [:],
                              _ body: @Sendable (GatewayClient) async throws -> T) async throws -> T {
    var configuration = try ConfigurationLoader.parse(yaml: yaml, environment: environment, source: "test")
    configuration.server.port = 0
    configuration.server.host = "127.0.0.1"
    return try await withGateway(configuration: configuration, body)
}

/// Runs the gateway built from `configuration` and passes a client.
func withGateway<T: Sendable>(configuration: GatewayConfiguration, logger: Logger = testLogger,
                              _ body: @Sendable (GatewayClient) async throws -> T) async throws -> T {
    var configuration = configuration
    if configuration.storage.database == GatewayConfiguration.Storage().database {
        configuration.storage.database = "sqlite::memory:"   // never a file in the working directory
    }
    let app = try await buildApplication(configuration: configuration, logger: logger)
    return try await app.test(.live) { client in
        try await body(GatewayClient(port: client.port!))
    }
}

/// A response as a test sees it.
struct HTTPResult: Sendable {
    var status: Int
    var headers: [String: String]
    var body: String

    var json: JSONValue? { try? JSONParser.parse(body) }

    /// `error.code` of an OpenAI envelope, or of an Anthropic one.
    var errorCode: String? { json?.objectValue?["error"]?.objectValue?["code"]?.stringValue }

    /// The `data:` payloads of an SSE body.
    var sseData: [String] {
        body.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
    }

    /// The `event:` names of an SSE body.
    var sseEventNames: [String] {
        body.components(separatedBy: "\n").filter { $0.hasPrefix("event: ") }.map { String($0.dropFirst(7)) }
    }
}

/// A plain HTTP client for the gateway over real loopback sockets.
struct GatewayClient: Sendable {
    let port: Int
    /// Whether requests may use up to 100 connections at once (the shared client keeps 8 per host).
    var wide = false

    /// A client for tests that need many requests in flight to one gateway at the same time.
    static let wideClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(30), concurrentHTTP1ConnectionsPerHostSoftLimit: 100)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    var baseURL: String { "http://127.0.0.1:\(port)" }

    func request(_ method: HTTPMethodName = .POST, _ path: String, body: String? = nil, headers: [String: String] = [:],
                 timeout: Int64 = 30) async throws -> HTTPResult {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method.nio
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.body = .bytes(ByteBuffer(string: body))
            if headers["content-type"] == nil { request.headers.add(name: "content-type", value: "application/json") }
        }
        let response = try await (wide ? Self.wideClient : HTTPClient.shared).execute(request, timeout: .seconds(timeout))
        let bytes = try await response.body.collect(upTo: 64 << 20)
        var fields: [String: String] = [:]
        for header in response.headers { fields[header.name.lowercased()] = header.value }
        return HTTPResult(status: Int(response.status.code), headers: fields, body: String(buffer: bytes))
    }

    func post(_ path: String, _ body: String, headers: [String: String] = [:]) async throws -> HTTPResult {
        try await request(.POST, path, body: body, headers: headers)
    }

    func get(_ path: String, headers: [String: String] = [:]) async throws -> HTTPResult {
        try await request(.GET, path, headers: headers)
    }
}

enum HTTPMethodName: Sendable {
    case GET, POST, PUT, DELETE

    var nio: NIOHTTP1.HTTPMethod {
        switch self {
        case .GET: return .GET
        case .POST: return .POST
        case .PUT: return .PUT
        case .DELETE: return .DELETE
        }
    }
}

/// Reads what a mock upstream received.
func mockRequests(port: Int) async throws -> [JSONObject] {
    let result = try await GatewayClient(port: port).get("/_mock/requests")
    return result.json?.arrayValue?.compactMap(\.objectValue) ?? []
}

/// Changes a running mock's behaviour.
func configureMock(port: Int, _ settings: String) async throws {
    let result = try await GatewayClient(port: port).post("/_mock/config", settings)
    #expect(result.status == 200, "mock config refused: \(result.body)")
}

/// A one-deployment OpenAI-compatible model group pointing at a mock.
func openAIModel(_ name: String, port: Int, extra: String = "") -> String {
    """
      - name: \(name)
        deployments:
          - { provider: openai_compatible, model: upstream-\(name), api_base: "http://127.0.0.1:\(port)/v1", api_key: sk-test-key-123456\(extra) }
    """
}

/// A loopback port that was free a moment ago.
func freeLoopbackPort() throws -> Int {
    let socket = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
    let port = socket.localAddress!.port!
    try socket.close().wait()
    return port
}

/// Runs a mock upstream on exactly `port` (the live test framework always picks its own) until `body` returns.
func withMockUpstream<T: Sendable>(onPort port: Int, _ body: @Sendable (MockUpstream) async throws -> T) async throws -> T {
    let mock = MockUpstream()
    let (started, signal) = AsyncStream.makeStream(of: Void.self)
    let app = try mock.makeApplication(host: "127.0.0.1", port: port, logger: testLogger) { _ in signal.yield() }
    let group = ServiceGroup(configuration: .init(services: [app], logger: testLogger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var iterator = started.makeAsyncIterator()
        _ = await iterator.next()
        do {
            let result = try await body(mock)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await group.triggerGracefulShutdown()
            throw error
        }
    }
}

/// A gateway with a master key and the demo model, priced so that budgets bite.
let accessYAML = """
    auth: { master_key: test-master-key }
    storage: { flush_interval_seconds: 0.2 }
    routing: { health_check: { interval_seconds: 0 } }
    models:
      - name: demo
        deployments: [{ provider: demo, price: { input_per_million: 1, output_per_million: 10 } }]
      - name: other
        deployments: [{ provider: demo }]
    """

/// Runs the gateway of `yaml` on `engine`: the embedded default (SQLite in memory, in-process
/// shared state), or production's shape (a fresh PostgreSQL database and Redis, database 7,
/// flushed first; this suite is serialised, so it is the only user of that database).
func withGateway<T: Sendable>(engine: Engine, yaml: String, _ body: @Sendable (GatewayClient) async throws -> T) async throws -> T {
    var configuration = try ConfigurationLoader.parse(yaml: yaml, environment: [:], source: "test")
    configuration.server.port = 0
    configuration.server.host = "127.0.0.1"
    switch engine {
    case .sqlite:
        return try await withGateway(configuration: configuration, body)
    case .postgres:
        let redisURL = try testRedisURL() + "/7"
        let redis = RedisClient(configuration: try RedisConfiguration(url: redisURL))
        _ = try await redis.command(["FLUSHDB"])
        await redis.shutdown()
        let base = configuration
        return try await withScratchPostgresDatabase { databaseURL in
            var configuration = base
            configuration.storage.database = databaseURL
            configuration.storage.redis = redisURL
            configuration.auth.keyPepper = "access-tests-pepper-0123456789abcdef"
            return try await withGateway(configuration: configuration, body)
        }
    }
}

extension GatewayClient {
    func call(_ method: HTTPMethodName, _ path: String, key: String?, body: String? = nil, headers: [String: String] = [:]) async throws -> HTTPResult {
        var headers = headers
        if let key { headers["authorization"] = "Bearer \(key)" }
        return try await request(method, path, body: body ?? (method == .POST ? "{}" : nil), headers: headers)
    }

    /// Creates a key through the admin API with the master key; returns its text and id.
    func createKey(_ fields: String, as key: String = "test-master-key") async throws -> (key: String, id: String) {
        let result = try await call(.POST, "/admin/keys", key: key, body: "{\(fields)}")
        #expect(result.status == 201, "key creation refused: \(result.body)")
        let object = result.json?.objectValue
        return (object?["key"]?.stringValue ?? "", object?["key_id"]?.stringValue ?? "")
    }

    func chat(key: String?, model: String = "demo", text: String = "hi", extra: String = "") async throws -> HTTPResult {
        try await call(.POST, "/v1/chat/completions", key: key,
                       body: #"{"model":"\#(model)","messages":[{"role":"user","content":"\#(text)"}]\#(extra)}"#)
    }
}

/// Whether `condition` holds within `seconds`, polled every 50 ms.
func eventually(seconds: Double = 10, _ condition: @Sendable () async throws -> Bool) async throws -> Bool {
    let started = ContinuousClock.now
    repeat {
        if try await condition() { return true }
        try await Task.sleep(nanoseconds: 50_000_000)
    } while ContinuousClock.now - started < .seconds(seconds)
    return false
}

extension GatewayClient {
    /// Polls `/health/ready` until `field` reads `value` (at most `seconds`); whether it did.
    func awaitReadiness(_ field: String, _ value: String, seconds: Double = 10) async throws -> Bool {
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(seconds) {
            let ready = try await request(.GET, "/health/ready")
            if ready.json?.objectValue?[field]?.stringValue == value { return true }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        return false
    }

    /// The value of an unlabelled sample on `/metrics`.
    func metric(_ name: String) async throws -> Double? {
        let text = try await request(.GET, "/metrics").body
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1))
        }
        return nil
    }

    /// Requests of `key_id` recorded in the usage table (after a flush of the buffer).
    func recordedRequests(keyID: String, master: String) async throws -> Int64? {
        let flushed = try await call(.POST, "/admin/usage/flush", key: master)
        guard flushed.status == 200 else { return nil }
        let usage = try await call(.GET, "/admin/usage?group_by=key_id&key_id=\(keyID)", key: master)
        return usage.json?.objectValue?["data"]?.arrayValue?.first?.objectValue?["requests"]?.integerValue
    }
}
