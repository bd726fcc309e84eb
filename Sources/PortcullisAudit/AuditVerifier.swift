import PortcullisCore
import PortcullisStorage

/// Checks every chain in `audit_logs` from its first record: numbering without gaps or
/// repeats, each record's link to the one before, its hash over the stored canonical bytes,
/// and the filter columns against the record they were written from.
public enum AuditVerifier {
    public enum Damage: String, Sendable, Equatable {
        /// A record's content (or a column beside it) differs from what was hashed.
        case modified
        /// A record is missing from the sequence.
        case deleted
        /// A record is there that the chain never linked (a repeated or foreign sequence number, or a broken link).
        case inserted
        /// Records are out of their order.
        case reordered
    }

    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        public var chain: String
        public var sequence: Int64
        public var recordID: String
        public var damage: Damage
        public var detail: String

        public init(chain: String, sequence: Int64, recordID: String, damage: Damage, detail: String) {
            self.chain = chain
            self.sequence = sequence
            self.recordID = recordID
            self.damage = damage
            self.detail = detail
        }

        public var description: String { "chain \(chain), record \(sequence) (\(recordID)): \(damage.rawValue) — \(detail)" }
    }

    public struct Report: Sendable, Equatable {
        /// Records per chain that were read.
        public var records: [String: Int64]
        /// The first damage found in each damaged chain.
        public var damage: [Finding]
        public var isIntact: Bool { damage.isEmpty }
    }

    public static func verify(_ store: any SQLStore) async throws -> Report {
        let rows = try await store.query("SELECT * FROM audit_logs ORDER BY chain, seq, id", [])
        var report = Report(records: [:], damage: [])
        var chain: String?
        var expected: Int64 = 1
        var head = AuditChain.genesis
        var damaged = false
        for row in rows {
            let name = row["chain"].text ?? ""
            if name != chain {
                chain = name
                expected = 1
                head = AuditChain.genesis
                damaged = false
            }
            report.records[name, default: 0] += 1
            guard !damaged else { continue }
            let sequence = row["seq"].integer ?? -1
            let id = row["id"].text ?? ""
            let stored = row["record"].text ?? ""
            let previous = row["prev_hash"].text ?? ""
            let hash = row["hash"].text ?? ""
            func fail(_ damage: Damage, _ detail: String) {
                report.damage.append(Finding(chain: name, sequence: sequence, recordID: id, damage: damage, detail: detail))
                damaged = true
            }
            if sequence < expected {
                fail(.inserted, "sequence \(sequence) repeats")
            } else if sequence > expected {
                // Is this the record after a missing one, or one that belongs further on?
                fail(previous == head ? .reordered : .deleted, "expected record \(expected), found \(sequence)")
            } else if previous != head {
                fail(.inserted, "its link does not name the record before it")
            } else if AuditChain.hash(previous: previous, canonical: Array(stored.utf8)) != hash {
                fail(.modified, "its content does not match its hash")
            } else if let problem = columnMismatch(row, stored) {
                fail(.modified, "column \(problem) differs from the record")
            }
            head = hash
            expected = sequence + 1
        }
        return report
    }

    /// The first filter column that differs from the canonical record it was written from.
    static func columnMismatch(_ row: SQLRow, _ stored: String) -> String? {
        guard let record = (try? JSONParser.parse(stored))?.objectValue else { return "record" }
        if row["id"].text != record["id"]?.stringValue { return "id" }
        if row["timestamp"].integer != record["timestamp"]?.integerValue { return "timestamp" }
        for column in ["severity", "category", "action", "outcome", "request_id", "actor_key_id"] {
            if row[column].text != record[column]?.stringValue { return column }
        }
        return nil
    }
}
