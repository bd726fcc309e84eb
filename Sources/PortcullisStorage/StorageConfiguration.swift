import PortcullisCore
import PortcullisTLS

/// Where durable and shared state live.
public struct StorageConfiguration: Sendable, Equatable {
    /// `sqlite:PATH` (or a bare path) or `postgres://user:password@host:port/database`.
    /// Default `sqlite:portcullis.db`.
    public var database: String = "sqlite:portcullis.db"
    /// PostgreSQL connections per replica. Default 10.
    public var poolSize: Int = 10
    /// `redis://[:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `redis-sentinel://host:port[,host:port]/master`. Absent: state lives in this process.
    public var redis: String?
    /// TLS for `rediss://` (`redis_tls`: `ca_file`, `client_certificate`, `client_key`,
    /// `min_version`). Default TLS 1.3 against the system's roots. PostgreSQL's TLS is set in
    /// its URL as libpq's is (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `ssl_min_protocol_version`).
    public var redisTLS = ClientTLSSettings()
    /// Seconds between batched usage and spend writes. Default 1.
    public var flushIntervalSeconds: Double = 1
    /// Seconds between checks that the database and Redis answer (readiness, metrics,
    /// and when to leave the fail-open and per-replica modes). Default 2.
    public var probeIntervalSeconds: Double = 2
    /// Seconds a database operation may take, waiting for a connection included, before
    /// it fails as unavailable. Default 5.
    public var timeoutSeconds: Double = 5
    /// With Redis: each replica leases a limit's 1/`leaseFraction` ahead and admits locally
    /// while the lease lasts (no round trip per request); 0 leases nothing (every admission
    /// exact, one round trip). Limits below it are always exact. Default 16.
    public var leaseFraction: Int = 16
    /// Seconds an unused lease is kept before it is given back. Default 1.
    public var leaseSeconds: Double = 1

    public init() {}
}

/// Which database a `storage.database` setting names.
public enum StorageLocation: Sendable, Equatable {
    /// A SQLite file.
    case sqlite(path: String)
    /// A PostgreSQL URL.
    case postgres(url: String)

    /// Parses `sqlite:PATH`, `sqlite://PATH`, a bare path, or `postgres://…` / `postgresql://…`.
    public init?(_ text: String) {
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            self = .postgres(url: text)
        } else if text.hasPrefix("sqlite://") {
            let path = String(text.dropFirst("sqlite://".count))
            guard !path.isEmpty else { return nil }
            self = .sqlite(path: path)
        } else if text.hasPrefix("sqlite:") {
            let path = String(text.dropFirst("sqlite:".count))
            guard !path.isEmpty else { return nil }
            self = .sqlite(path: path)
        } else if !text.isEmpty, !text.contains("://") {
            self = .sqlite(path: text)
        } else {
            return nil
        }
    }
}
