import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import PortcullisAccess
import PortcullisAudit
import PortcullisConfig
import PortcullisCore
import PortcullisGuardrails
import PortcullisProviders
import PortcullisRouting
import PortcullisStorage
import Synchronization

extension Gateway {
    /// What the start record says of the configuration: its digest and shape, never a secret or a URL.
    static func lifecycleDetails(_ configuration: GatewayConfiguration, governed: Bool) -> JSONObject {
        var hasher = SHA256()
        hasher.update(data: Array(String(reflecting: configuration).utf8))
        let digest = hasher.finalize().map { byte in String(byte, radix: 16).count == 1 ? "0" + String(byte, radix: 16) : String(byte, radix: 16) }.joined()
        var database = "sqlite"
        if case .postgres = StorageLocation(configuration.storage.database) { database = "postgres" }
        return [
            "configuration_sha256": .string(digest),
            "models": .array(configuration.models.map { .string($0.name) }),
            "deployments": .integer(Int64(configuration.models.reduce(0) { $0 + $1.deployments.count })),
            "database": .string(database), "redis": .bool(configuration.storage.redis != nil),
            "guardrails": .bool(configuration.guardrails.enabled), "oidc_issuers": .integer(Int64(configuration.auth.oidc.count)),
            "audit_fail_closed": .bool(configuration.audit.failClosed ?? (database == "postgres")), "governed": .bool(governed),
            "tls": .bool(configuration.server.tls != nil),
        ]
    }

    /// The key that signs audit checkpoints and where they are published (nil when no key is
    /// configured for PostgreSQL; the gateway says so).
    static func checkpointSigning(_ configuration: GatewayConfiguration, http: UpstreamHTTPClient,
                                  logger: Logger) throws -> (key: AuditSigningKey, publishers: [any CheckpointPublisher])? {
        var sqlitePath: String?
        var isMemory = false
        if case .sqlite(let path) = StorageLocation(configuration.storage.database) {
            sqlitePath = path
            isMemory = path == ":memory:"
        }
        let setup: AuditConfiguration.CheckpointSetup
        do {
            setup = try configuration.audit.checkpointSetup(sqlitePath: sqlitePath, isMemory: isMemory, create: true)
        } catch {
            throw ConfigurationError(source: "configuration", issues: [.init(path: "audit.signing_key_file", message: "\(error)")])
        }
        guard let key = setup.key else {
            logger.warning("audit checkpoints are off", metadata: ["reason": "\(setup.missingKeyReason ?? "no key")"])
            return nil
        }
        var publishers: [any CheckpointPublisher] = []
        if let directory = setup.directory { publishers.append(DirectoryCheckpointPublisher(directory: directory)) }
        if let bucket = configuration.audit.checkpointBucket {
            publishers.append(S3CheckpointPublisher(client: S3Client(http: http, endpoint: bucket.endpoint, region: bucket.region,
                                                                     accessKeyID: bucket.accessKeyID, secretAccessKey: bucket.secretAccessKey,
                                                                     logger: logger),
                                                    bucket: bucket.bucket, prefix: bucket.prefix, retentionDays: bucket.retentionDays))
        }
        return (key, publishers)
    }
}

extension Gateway {
    /// The key-encryption key of `kms`: the local key file (beside a SQLite database by default,
    /// made on first start; of the process for an in-memory one) or AWS KMS. Nil on PostgreSQL
    /// with neither configured — then no payload can be stored, which the configuration is refused for.
    public static func keyEncryptionService(_ configuration: GatewayConfiguration, http: UpstreamHTTPClient,
                                     logger: Logger) throws -> (any KeyEncryptionService)? {
        let kms = configuration.audit.kms
        switch kms.provider {
        case .aws(let aws):
            let target = DeploymentTarget(name: "kms", provider: .openaiCompatible, upstreamModel: "", apiBase: aws.url,
                                          timeouts: UpstreamTimeouts(connect: 3, firstByte: 5, total: 10, streamIdle: 5))
            let signer = SigV4(accessKeyID: aws.accessKeyID, secretAccessKey: aws.secretAccessKey, sessionToken: aws.sessionToken,
                               region: aws.region, service: "kms")
            return AWSKeyService(keyID: aws.keyID, transport: UpstreamJSONTransport(target: target, http: http, signer: signer, logger: logger))
        case .local:
            var sqlitePath: String?
            if case .sqlite(let path) = StorageLocation(configuration.storage.database) {
                if path == ":memory:" { return LocalKeyFile() }
                sqlitePath = path
            }
            guard let file = kms.localKeyFile(sqlitePath: sqlitePath) else {
                guard !configuration.audit.storesPayloads else {
                    throw ConfigurationError(source: "configuration", issues: [.init(
                        path: "kms", message: "audit.payloads stores payloads encrypted: with PostgreSQL set kms.key_file (one file shared by every replica) or kms.provider: aws")])
                }
                return nil
            }
            do {
                return try LocalKeyFile(path: file, create: true)
            } catch {
                throw ConfigurationError(source: "configuration", issues: [.init(path: "kms.key_file", message: "\(error)")])
            }
        }
    }
}

/// Publishes checkpoints to an S3 bucket, each object locked (compliance mode) for the retention.
struct S3CheckpointPublisher: CheckpointPublisher {
    let client: S3Client
    let bucket: String
    let prefix: String
    let retentionDays: Int

    var name: String { "s3 \(bucket)/\(prefix)" }

    func publish(chain: String, size: Int64, note: String) async throws {
        let until = retentionDays > 0 ? Date().addingTimeInterval(Double(retentionDays) * 86_400) : nil
        try await client.putObject(bucket: bucket, key: "\(prefix)\(chain)/\(size).checkpoint", body: Array(note.utf8), lockedUntil: until)
    }
}

/// Audit sinks' requests through the gateway's upstream client: any answer is returned with its status.
struct UpstreamSinkTransport: AuditSinkTransport {
    let http: UpstreamHTTPClient
    let logger: Logger

    func post(url: String, headers: [(String, String)], body: [UInt8]) async throws -> (status: Int, body: [UInt8]) {
        let target = DeploymentTarget(name: "audit-sink", provider: .openaiCompatible, upstreamModel: "", apiBase: url,
                                      timeouts: UpstreamTimeouts(connect: 5, firstByte: 15, total: 30, streamIdle: 15))
        do {
            let response = try await http.send(method: .POST, url: url, headers: headers, body: ByteBuffer(bytes: body), target: target,
                                               context: UpstreamContext(requestID: FastRandom.uuidString(), logger: logger))
            let answer = try await response.body.collect(upTo: 16 << 20)
            return (response.status, Array(answer.readableBytesView))
        } catch let failure as UpstreamFailure {
            if case .status(let status) = failure.reason { return (status, Array(failure.message.utf8)) }
            throw failure
        }
    }
}

/// One kept syslog connection per sink URL.
final class SyslogSenders: AuditSyslogTransport {
    private let senders = Mutex<[String: StreamSender]>([:])

    func send(url: String, caFile: String?, bytes: [UInt8]) async throws {
        let sender = try senders.withLock { senders in
            if let known = senders[url] { return known }
            let made = try StreamSender.make(url: url, caFile: caFile)
            senders[url] = made
            return made
        }
        try await sender.send(bytes)
    }
}
