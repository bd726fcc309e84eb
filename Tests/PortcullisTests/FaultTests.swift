import Foundation
import PortcullisConfig
import PortcullisCore
import Synchronization
import Testing

/// A PostgreSQL server of a test's own (initdb in a scratch folder, on a free loopback port),
/// so that the test can stop and start it under a running gateway. Removed when dropped.
final class ScratchPostgres: Sendable {
    let folder: String
    let port: Int
    let binaries: String
    var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres" }

    init() throws {
        let initdb = try #require(try FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")
            .sorted { $0.compare($1, options: .numeric) == .orderedAscending }
            .map { "/usr/lib/postgresql/\($0)/bin" }
            .last { FileManager.default.isExecutableFile(atPath: "\($0)/initdb") }, "PostgreSQL's initdb is not installed")
        binaries = initdb
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-pg-\(UUID().uuidString)").path
        port = try freeLoopbackPort()
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        if getuid() == 0 { try Self.run(["/usr/bin/chown", "postgres:postgres", folder]) }
        try Self.run(asPostgres(["\(binaries)/initdb", "-D", "\(folder)/data", "-U", "postgres", "-A", "trust", "--no-sync"]))
        try start()
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

    /// Runs a command to its end, output discarded, with no descriptor of this process but
    /// 0–2 (posix_spawn and waitpid: Foundation's Process can miss the exit of a command that
    /// leaves a daemon behind).
    static func run(_ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // Nothing else of this process may leak into the command (pg_ctl leaves a daemon behind):
        // an inherited socket or pipe end would outlive its owner here and stall whoever waits for its end.
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        let addCloseFrom = try #require(dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np"),
                                        "glibc 2.34 or later is needed (posix_spawn_file_actions_addclosefrom_np)")
        _ = unsafeBitCast(addCloseFrom, to: AddCloseFrom.self)(&actions, 3)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard spawned == 0 else { throw TestFailure("cannot run \(arguments[0]): error \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else { throw TestFailure("\(arguments.joined(separator: " ")) exited with status \(status)") }
    }

    deinit {
        try? stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// A redis-server of a test's own on a free loopback port, to stop and start at will.
final class ScratchRedis: Sendable {
    let port: Int
    private let process = Mutex<Process?>(nil)

    init() throws {
        port = try freeLoopbackPort()
        try start()
    }

    func start() throws {
        let started = try startRedisServer(port: port)
        process.withLock { $0 = started }
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients).
    func stop() {
        guard let running = process.withLock({ process in defer { process = nil }; return process }) else { return }
        kill(running.processIdentifier, SIGKILL)
        running.waitUntilExit()
    }

    deinit { stop() }
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

@Suite("Faults: the database and Redis stopped and restarted under running gateways", .serialized)
struct FaultTests {
    static let master = "fault-master-key"

    static func yaml(database: String, redis: String? = nil, failOpen: Bool = true, keyCacheSeconds: Double = 0.2) -> String {
        """
        auth: { master_key: \(master), key_pepper: "fault-tests-pepper-0123456789abcdef", key_cache_seconds: \(keyCacheSeconds), fail_open: \(failOpen) }
        storage: { database: "\(database)", \(redis.map { "redis: \"\($0)\", " } ?? "")flush_interval_seconds: 0.1, probe_interval_seconds: 0.1, timeout_seconds: 1 }
        routing: { health_check: { interval_seconds: 0 } }
        models:
          - name: demo
            deployments: [{ provider: demo, price: { input_per_million: 1, output_per_million: 10 } }]
        """
    }

    @Test("PostgreSQL stopped: validated keys keep working (fail-open) or are refused (fail-closed), unknown ones get 503; restarted: no usage lost")
    func databaseStoppedAndRestarted() async throws {
        let postgres = try ScratchPostgres()
        try await withGateway(yaml: Self.yaml(database: postgres.url)) { open in
            try await withGateway(yaml: Self.yaml(database: postgres.url, failOpen: false)) { closed in
                let (key, id) = try await open.createKey("", as: Self.master)
                let closedKey = try await open.createKey("", as: Self.master).key
                for _ in 0..<3 { #expect(try await open.chat(key: key).status == 200) }
                #expect(try await closed.chat(key: closedKey).status == 200)
                #expect(try await eventually { try await open.recordedRequests(keyID: id, master: Self.master) == 3 })

                try postgres.stop()
                #expect(try await open.awaitReadiness("database", "unreachable"), "readiness tells the database is gone")
                #expect(try await open.request(.GET, "/health/ready").json?.objectValue?["status"]?.stringValue == "degraded")
                #expect(try await open.metric("portcullis_database_up") == 0)
                for _ in 0..<5 {
                    let served = try await open.chat(key: key)
                    #expect(served.status == 200, "fail-open serves a validated key: \(served.body)")
                }
                #expect(try await open.metric("portcullis_auth_stale_admissions_total") ?? 0 >= 5)
                #expect(try await open.metric("portcullis_usage_pending_rows") == 1, "the outage's usage waits in the buffer")

                #expect(try await closed.awaitReadiness("database", "unreachable"))
                let refused = try await closed.chat(key: closedKey)
                #expect(refused.status == 503 && refused.errorCode == "credential_store_unavailable", "fail-closed: \(refused.body)")
                let unknown = try await open.chat(key: "pck_abcdefabcdef_" + String(repeating: "x", count: 43))
                #expect(unknown.status == 503 && unknown.errorCode == "credential_store_unavailable", "\(unknown.body)")
                let admin = try await open.call(.POST, "/admin/keys", key: Self.master, body: "{}")
                #expect(admin.status == 503 && admin.errorCode == "storage_unavailable", "\(admin.body)")

                try postgres.start()
                #expect(try await open.awaitReadiness("database", "ok"), "readiness recovers")
                #expect(try await open.awaitReadiness("status", "ready"))
                #expect(try await eventually { try await open.recordedRequests(keyID: id, master: Self.master) == 8 },
                        "the usage buffered during the outage was written")
                #expect(try await open.metric("portcullis_database_up") == 1)
                #expect(try await closed.awaitReadiness("database", "ok"))
                #expect(try await closed.chat(key: closedKey).status == 200, "fail-closed serves again once the database is back")
                #expect(try await open.call(.POST, "/admin/keys", key: Self.master, body: "{}").status == 201)
            }
        }
    }

    @Test("Redis stopped: limits hold per replica and nothing fails; restarted: limits are shared again and revocations cross replicas")
    func redisStoppedAndRestarted() async throws {
        let redis = try ScratchRedis()
        let redisURL = "redis://127.0.0.1:\(redis.port)"
        try await Task.sleep(nanoseconds: 300_000_000)
        try await withScratchPostgresDatabase { database in
            // Keys stay cached for a minute: only the control bus can tell a replica of a revocation in time.
            let yaml = Self.yaml(database: database, redis: redisURL, keyCacheSeconds: 60)
            try await withGateway(yaml: yaml) { first in
                try await withGateway(yaml: yaml) { second in
                    #expect(try await first.awaitReadiness("status", "ready"))
                    #expect(try await second.awaitReadiness("status", "ready"))
                    // Shared: a limit of 4 holds across both replicas.
                    let shared = try await first.createKey(#""rpm":4"#, as: Self.master).key
                    var admitted = 0
                    for replica in [first, second, first, second, first, second] where try await replica.chat(key: shared).status == 200 {
                        admitted += 1
                    }
                    #expect(admitted == 4)
                    // A budget spent to its end before Redis goes away.
                    let (budgeted, budgetedID) = try await first.createKey(#""budget":0.001"#, as: Self.master)
                    var spent = 0
                    while spent < 50 {
                        guard try await first.chat(key: budgeted, extra: #","max_tokens":20"#).status == 200 else { break }
                        spent += 1
                    }
                    #expect(spent > 0 && spent < 50)
                    let served = Int64(spent)
                    #expect(try await eventually { try await first.recordedRequests(keyID: budgetedID, master: Self.master) == served })

                    redis.stop()
                    #expect(try await first.awaitReadiness("shared_state", "per-replica (Redis unreachable)"))
                    #expect(try await second.awaitReadiness("shared_state", "per-replica (Redis unreachable)"))
                    #expect(try await first.metric("portcullis_redis_up") == 0)
                    #expect(try await second.awaitReadiness("control_bus", "reconnecting"))
                    // Per replica: each enforces the limit of 3 on its own; nothing fails with a 5xx.
                    let local = try await first.createKey(#""rpm":3"#, as: Self.master).key
                    for replica in [first, second] {
                        var statuses: [Int] = []
                        for _ in 0..<4 { statuses.append(try await replica.chat(key: local).status) }
                        #expect(statuses == [200, 200, 200, 429], "\(statuses)")
                    }
                    let stillSpent = try await second.chat(key: budgeted, extra: #","max_tokens":20"#)
                    #expect(stillSpent.status == 429 && stillSpent.errorCode == "budget_exceeded", "the budget is seeded from the database")

                    try redis.start()
                    #expect(try await first.awaitReadiness("shared_state", "ok"))
                    #expect(try await second.awaitReadiness("shared_state", "ok"))
                    #expect(try await first.metric("portcullis_redis_up") == 1)
                    #expect(try await second.awaitReadiness("control_bus", "ok"), "resubscribed")
                    #expect(try await second.metric("portcullis_control_bus_up") == 1)
                    // Shared again (Redis came back empty): a limit of 2 holds across both.
                    let again = try await first.createKey(#""rpm":2"#, as: Self.master).key
                    let statuses = [try await first.chat(key: again).status, try await second.chat(key: again).status,
                                    try await first.chat(key: again).status]
                    #expect(statuses == [200, 200, 429], "\(statuses)")
                    let afterRestart = try await first.chat(key: budgeted, extra: #","max_tokens":20"#)
                    #expect(afterRestart.status == 429 && afterRestart.errorCode == "budget_exceeded", "no spend was forgotten")
                    // Revocations travel again once the replicas have resubscribed.
                    let (revoked, revokedID) = try await first.createKey("", as: Self.master)
                    let revokedKey = revoked
                    #expect(try await second.chat(key: revokedKey).status == 200)
                    #expect(try await first.call(.DELETE, "/admin/keys/\(revokedID)", key: Self.master).status == 200)
                    var refusedWithin: Duration?
                    let started = ContinuousClock.now
                    while ContinuousClock.now - started < .seconds(1) {
                        if try await second.chat(key: revokedKey).status == 401 { refusedWithin = ContinuousClock.now - started; break }
                        try await Task.sleep(nanoseconds: 20_000_000)
                    }
                    #expect(refusedWithin != nil, "the revocation reached the other replica within a second")
                }
            }
        }
    }
}
