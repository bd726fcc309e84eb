/// The `audit` section of the configuration.
public struct AuditConfiguration: Sendable, Equatable {
    /// Whether API requests and authentication attempts are recorded (admin actions always
    /// are). Default true.
    public var enabled = true
    /// Whether a request whose record cannot be made durable is refused (`503
    /// audit_unavailable`) rather than served with its record kept in memory. Default: true with
    /// PostgreSQL, false with SQLite (the embedded default).
    public var failClosed: Bool?
    /// This replica's chain name. Default: the host name (the pod's name on Kubernetes), so
    /// that replicas never contend for one chain's head.
    public var chain: String?
    /// Most records kept in memory while the database is unreachable and the log fails open;
    /// past it the oldest are given up and the loss is recorded. Default 100000.
    public var backlogLimit = 100_000

    public init() {}
}
