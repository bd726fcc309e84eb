import Foundation
import Logging
import PortcullisCore
import PortcullisRedis
import PortcullisStorage
import Synchronization
import Testing

enum Engine: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// The PostgreSQL that scripts/test.sh starts; a test never skips when it is absent: it fails.
func testPostgresURL() throws -> String {
    try #require(ProcessInfo.processInfo.environment["PORTCULLIS_TEST_POSTGRES_URL"],
                 "PORTCULLIS_TEST_POSTGRES_URL is not set: run the suite through scripts/test.sh")
}

/// Runs `body` with `count` stores on one fresh database of `engine`, then removes the database.
func withStores<T: Sendable>(_ engine: Engine, count: Int = 1, _ body: @Sendable ([any SQLStore]) async throws -> T) async throws -> T {
    switch engine {
    case .sqlite:
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-\(UUID().uuidString).sqlite").path
        defer {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        var stores: [any SQLStore] = []
        for _ in 0..<count { stores.append(try await SQLiteStore.open(path: path, logger: testLogger)) }
        let opened = stores
        let outcome: Result<T, any Error>
        do {
            outcome = .success(try await body(opened))
        } catch {
            outcome = .failure(error)
        }
        for store in stores { await store.close() }
        return try outcome.get()
    case .postgres:
        // 15 s per operation: in the fresh-clone run every suite starts at once on two cores and the shared server can take more than 5 s to answer a 300-row insert.
        return try await withScratchPostgresDatabase { databaseURL in
            let stores = try (0..<count).map { _ in try PostgresStore(url: databaseURL, operationTimeout: 15, logger: testLogger) }
            return try await withThrowingTaskGroup(of: Void.self) { storeTasks in
                for store in stores { storeTasks.addTask { try await store.run() } }
                defer { storeTasks.cancelAll() }
                return try await body(stores)
            }
        }
    }
}

/// Runs `body` with the URL of a fresh database on the test PostgreSQL, dropped afterwards (also on failure).
func withScratchPostgresDatabase<T: Sendable>(_ body: @Sendable (String) async throws -> T) async throws -> T {
    let baseURL = try testPostgresURL()
    let database = "portcullis_test_\(UInt32.random(in: 0...UInt32.max))"
    let admin = try PostgresStore(url: baseURL, logger: testLogger)
    return try await withThrowingTaskGroup(of: Void.self) { adminTasks in
        adminTasks.addTask { try await admin.run() }
        defer { adminTasks.cancelAll() }
        try await admin.execute("CREATE DATABASE \(database)")
        let withoutQuery = baseURL.split(separator: "?", maxSplits: 1)[0]
        let databaseURL = String(withoutQuery[..<withoutQuery.lastIndex(of: "/")!] + "/\(database)")
        let outcome: Result<T, any Error>
        do {
            outcome = .success(try await body(databaseURL))
        } catch {
            outcome = .failure(error)
        }
        try await admin.execute("DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
        return try outcome.get()
    }
}

/// The Redis that scripts/test.sh starts; a test never skips when it is absent: it fails.
func testRedisURL() throws -> String {
    try #require(ProcessInfo.processInfo.environment["PORTCULLIS_TEST_REDIS_URL"],
                 "PORTCULLIS_TEST_REDIS_URL is not set: run the suite through scripts/test.sh")
}

func testRedisConfiguration() throws -> RedisConfiguration {
    try RedisConfiguration(url: testRedisURL())
}

/// A PostgreSQL server of a test's own (initdb in a scratch folder, on a free loopback port),
/// so that the test can stop and start it under a running gateway. Removed when dropped.
final class ScratchPostgres: Sendable {
    let folder: String
    let port: Int
    let binaries: String
    var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres" }

    /// A new cluster; with `primary`, a streaming standby of that one (pg_basebackup -R), in recovery until promoted.
    init(standbyOf primary: ScratchPostgres? = nil) throws {
        let initdb = try #require(try FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")
            .sorted { $0.compare($1, options: .numeric) == .orderedAscending }
            .map { "/usr/lib/postgresql/\($0)/bin" }
            .last { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") }, "PostgreSQL's initdb is not installed")
        binaries = initdb
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-pg-\(UUID().uuidString)").path
        port = try freeLoopbackPort()
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        if getuid() == 0 { try Self.run(["/usr/bin/chown", "postgres:postgres", folder]) }
        if let primary {
            try Self.run(asPostgres(["\(binaries)/pg_basebackup", "-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres",
                                     "-D", "\(folder)/data", "-R", "-X", "stream", "--no-sync"]))
        } else {
            try Self.run(asPostgres(["\(binaries)/initdb", "-D", "\(folder)/data", "-U", "postgres", "-A", "trust", "--no-sync"]))
        }
        try start()
    }

    /// Ends recovery: the standby becomes a primary.
    func promote() throws {
        try Self.run(asPostgres(["\(binaries)/pg_ctl", "-D", "\(folder)/data", "-w", "promote"]))
    }

    private func asPostgres(_ arguments: [String]) -> [String] {
        getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] + arguments : arguments
    }

    func start() throws {
        try Self.run(asPostgres(["\(binaries)/pg_ctl", "-D", "\(folder)/data", "-l", "\(folder)/log", "-w", "-o",
                                 "-p \(port) -k \(folder) -c listen_addresses=127.0.0.1 -c fsync=off", "start"]))
    }

    func stop() throws {
        try Self.run(asPostgres(["\(binaries)/pg_ctl", "-D", "\(folder)/data", "-m", "immediate", "-w", "stop"]))
    }

    /// Runs a command to its end (`spawnQuietly`, then waitpid).
    static func run(_ arguments: [String]) throws {
        let pid = try spawnQuietly(arguments)
        let status = awaitExit(pid)
        guard status == 0 else { throw TestFailure("\(arguments.joined(separator: " ")) exited with status \(status)") }
    }

    deinit {
        try? stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// A redis-server of a test's own on a free loopback port, to stop and start at will. Started
/// with posix_spawn and reaped with waitpid, not Foundation's Process, whose `waitUntilExit` was
/// suspected in a fault-test stall in CI (nothing of the test process was printed before its limit).
final class ScratchRedis: Sendable {
    let port: Int
    private let pid = Mutex<pid_t?>(nil)

    init() throws {
        port = try freeLoopbackPort()
        try start()
    }

    func start() throws {
        let started = try spawnQuietly(["/usr/bin/redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        pid.withLock { $0 = started }
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients).
    func stop() {
        guard let running = pid.withLock({ pid in defer { pid = nil }; return pid }) else { return }
        kill(running, SIGKILL)
        _ = awaitExit(running)
    }

    deinit { stop() }
}

/// Starts a command with its output discarded and no descriptor of this process but 0–2
/// (posix_spawn: an inherited socket or pipe end would outlive its owner in a daemon the command
/// leaves behind, such as pg_ctl's server, and stall whoever waits for its end).
func spawnQuietly(_ arguments: [String]) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    let addCloseFrom = try #require(dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np"),
                                    "glibc 2.34 or later is needed (posix_spawn_file_actions_addclosefrom_np)")
    _ = unsafeBitCast(addCloseFrom, to: AddCloseFrom.self)(&actions, 3)
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
    guard spawned == 0 else { throw TestFailure("cannot run \(arguments[0]): error \(spawned)") }
    return pid
}

/// Waits for a spawned process's end; its wait status.
@discardableResult
func awaitExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    return status
}

/// A `portcullis serve` process built from this package, killed (SIGKILL) when dropped.
final class GatewayProcess: Sendable {
    let process: Process
    let client: GatewayClient
    /// The `--config` file, which a test may rewrite to exercise a reload.
    let configurationFile: URL
    /// Where the process's standard error (its log) goes.
    let logFile: URL

    /// Starts the binary with `yaml` on a free port and waits until it answers.
    init(yaml: String, logLevel: String = "error", arguments: [String] = [], environment: [String: String] = [:]) async throws {
        let port = try freeLoopbackPort()
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let binary = directory.appendingPathComponent("portcullis").path
        let name = "portcullis-replica-\(UUID().uuidString)"
        let configuration = FileManager.default.temporaryDirectory.appendingPathComponent(name + ".yaml")
        try yaml.write(to: configuration, atomically: true, encoding: .utf8)
        let logFile = FileManager.default.temporaryDirectory.appendingPathComponent(name + ".log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", configuration.path, "--port", String(port), "--log-level", logLevel] + arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, given in given } }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: logFile)
        try process.run()
        self.process = process
        self.configurationFile = configuration
        self.logFile = logFile
        self.client = GatewayClient(port: port)
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(30) {
            if let health = try? await client.request(.GET, "/health/live", timeout: 1), health.status == 200 { return }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        stop()
        throw TestFailure("the gateway process on port \(port) did not start: \(log)")
    }

    /// What the process has logged so far.
    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { if process.isRunning { stop() } }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A local S3-compatible server (moto's, from PyPI, which scripts/test.sh installs) on a free
/// loopback port for the duration of `body`; a test fails, never skips, when it is absent.
func withMotoServer<T: Sendable>(_ body: @Sendable (String) async throws -> T) async throws -> T {
    let port = try freeLoopbackPort()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [ProcessInfo.processInfo.environment["PORTCULLIS_TEST_MOTO"] ?? "moto_server", "-H", "127.0.0.1", "-p", String(port)]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    defer {
        kill(process.processIdentifier, SIGKILL)   // moto's server does not stop on SIGTERM
        process.waitUntilExit()
    }
    let endpoint = "http://127.0.0.1:\(port)"
    let started = ContinuousClock.now
    while true {
        if !process.isRunning { throw TestFailure("moto_server is not installed or did not start (pip install 'moto[server]')") }
        if let answer = try? await GatewayClient(port: port).request(.GET, "/", timeout: 1), answer.status < 500 { break }
        if ContinuousClock.now - started > .seconds(30) { throw TestFailure("moto_server did not answer on \(endpoint)") }
        try await Task.sleep(nanoseconds: 200_000_000)
    }
    return try await body(endpoint)
}

/// An rsyslogd of a test's own (Debian's, which scripts/test.sh installs with its OpenSSL
/// driver): RFC 5424 over plain TCP on `tcpPort` and over TLS (the given certificate) on
/// `tlsPort`, every message written to `output` as `input app-name msgid structured-data msg`.
final class ScratchRsyslog: Sendable {
    let tcpPort: Int
    let tlsPort: Int
    let folder: String
    var output: String { folder + "/received.log" }
    private let process = Mutex<Process?>(nil)

    init(certificate: String, key: String) throws {
        // Below the ephemeral range: while rsyslog is down, no other test's listener can be given these ports.
        tcpPort = try Self.freePortBelowEphemeralRange()
        tlsPort = try Self.freePortBelowEphemeralRange()
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-rsyslog-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let configuration = """
            global(workDirectory="\(folder)" DefaultNetstreamDriverCAFile="\(certificate)" DefaultNetstreamDriverCertFile="\(certificate)" DefaultNetstreamDriverKeyFile="\(key)")
            module(load="imtcp" MaxSessions="100")
            input(type="imtcp" address="127.0.0.1" port="\(tcpPort)" name="tcp")
            input(type="imtcp" address="127.0.0.1" port="\(tlsPort)" name="tls" streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
            template(name="received" type="string" string="%inputname% %app-name% %msgid% %structured-data% %msg%\\n")
            *.* action(type="omfile" file="\(folder)/received.log" template="received")
            """
        try configuration.write(toFile: folder + "/rsyslog.conf", atomically: true, encoding: .utf8)
    }

    func start() async throws {
        let running = Process()
        running.executableURL = URL(fileURLWithPath: "/usr/sbin/rsyslogd")
        running.arguments = ["-n", "-f", folder + "/rsyslog.conf", "-i", folder + "/rsyslogd.pid"]
        running.standardOutput = FileHandle.nullDevice
        running.standardError = FileHandle.nullDevice
        do { try running.run() } catch { throw TestFailure("rsyslogd is not installed (apt-get install rsyslog rsyslog-openssl): \(error)") }
        process.withLock { $0 = running }
        let started = ContinuousClock.now
        while !((try? RawSocket.canConnect(port: tcpPort)) ?? false) || !((try? RawSocket.canConnect(port: tlsPort)) ?? false) {
            if !running.isRunning { throw TestFailure("rsyslogd exited at start") }
            if ContinuousClock.now - started > .seconds(10) { throw TestFailure("rsyslogd did not listen") }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    /// A loopback port in 21000–28999 (below Linux's ephemeral range) that nothing listens on now.
    static func freePortBelowEphemeralRange() throws -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 21_000..<29_000)
            if !((try? RawSocket.canConnect(port: port)) ?? true) { return port }
        }
        throw TestFailure("no free port below the ephemeral range")
    }

    /// The lines received so far.
    var lines: [String] { ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }

    func stop() {
        guard let running = process.withLock({ process in defer { process = nil }; return process }) else { return }
        kill(running.processIdentifier, SIGKILL)
        running.waitUntilExit()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

enum RawSocket {
    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    static func canConnect(port: Int) throws -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// The test OTLP/HTTP trace receiver (`scripts/otlp-receiver.py`, which decodes the protobuf with
/// PyPI's opentelemetry-proto, installed by scripts/test.sh) on a free loopback port for the
/// duration of `body`; `body` gets its port. A test fails, never skips, when it cannot start.
func withOTLPReceiver<T: Sendable>(_ body: @Sendable (Int) async throws -> T) async throws -> T {
    let port = try freeLoopbackPort()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    let python = ProcessInfo.processInfo.environment["PORTCULLIS_TEST_PYTHON"] ?? "python3"
    process.arguments = [python, repositoryRoot.appendingPathComponent("scripts/otlp-receiver.py").path, String(port)]
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    defer {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
    let started = ContinuousClock.now
    while true {
        if !process.isRunning { throw TestFailure("the OTLP receiver did not start (pip install opentelemetry-proto; see its error above)") }
        if let answer = try? await GatewayClient(port: port).request(.GET, "/spans", timeout: 1), answer.status == 200 { break }
        if ContinuousClock.now - started > .seconds(30) { throw TestFailure("the OTLP receiver did not answer on port \(port)") }
        try await Task.sleep(nanoseconds: 100_000_000)
    }
    return try await body(port)
}
