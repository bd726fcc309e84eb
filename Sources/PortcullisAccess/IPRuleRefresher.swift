import PortcullisCore
import PortcullisRedis
import ServiceLifecycle

/// Reloads the dynamic IP rules when told they changed (or the bus was lost), and every 30 s
/// anyway, so that rules expire on time. A failed reload is retried after a second. With
/// Redis, it also reads the `blocked_ips` set twice a second, so that `SADD blocked_ips
/// ADDRESS` blocks an address on every replica within a second (kept as last read while
/// Redis is unreachable).
public struct IPRuleRefresher: Service {
    public let policy: IPPolicyEngine
    public let directory: Directory
    let redis: RedisClient?

    /// The Redis set of blocked addresses the incident runbook names.
    public static let blockedSet = "blocked_ips"

    public init(policy: IPPolicyEngine, directory: Directory, redis: RedisClient? = nil) {
        self.policy = policy
        self.directory = directory
        self.redis = redis
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in policy.staleSignals {
                        guard policy.takeStale() else { continue }
                        await reload()
                    }
                }
                group.addTask { await Periodic.run(every: .seconds(30)) { policy.markStale() } }
                if let redis {
                    group.addTask {
                        await Periodic.run(every: .milliseconds(500), startImmediately: true) {
                            guard let members = try? await redis.command(["SMEMBERS", .string(Self.blockedSet)]).array else { return }
                            policy.updateBlocked(members.compactMap(\.string))
                        }
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
    }

    private func reload() async {
        if let rules = try? await directory.ipRules() {
            policy.update(rules)
        } else {
            try? await Task.sleep(nanoseconds: 1_000_000_000)
            policy.markStale()
        }
    }
}

