import PortcullisCore
import ServiceLifecycle

/// Reloads the dynamic IP rules when told they changed (or the bus was lost), and every 30 s
/// anyway, so that rules expire on time. A failed reload is retried after a second.
public struct IPRuleRefresher: Service {
    public let policy: IPPolicyEngine
    public let directory: Directory

    public init(policy: IPPolicyEngine, directory: Directory) {
        self.policy = policy
        self.directory = directory
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

