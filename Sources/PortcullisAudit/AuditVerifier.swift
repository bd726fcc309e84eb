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
        /// The chain ends before the last signed checkpoint's size: records were cut off its end.
        case truncated
        /// A checkpoint's signature does not verify with the key given.
        case forgedCheckpoint = "forged checkpoint"
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
        /// Per chain whose oldest records retention removed: the checkpoint size it starts after.
        public var retainedFrom: [String: Int64] = [:]
        /// The first damage found in each damaged chain.
        public var damage: [Finding]
        public var isIntact: Bool { damage.isEmpty }
    }

    /// Verifies every chain; with `checkpoints` (signed notes, e.g. the latest published one of
    /// each chain) and the `key` that signed them, also that no chain was cut short of or
    /// rewritten since its checkpoint.
    public static func verify(_ store: any SQLStore, checkpoints: [String] = [], key: AuditVerifierKey? = nil) async throws -> Report {
        let rows = try await store.query("SELECT * FROM audit_logs ORDER BY chain, seq, id", [])
        var report = Report(records: [:], damage: [])
        // The largest checkpoint of each chain, by the chain named in its origin.
        var signed: [String: AuditCheckpoint] = [:]
        for note in checkpoints {
            guard let key, let body = key.verifiedBody(of: note), let checkpoint = AuditCheckpoint(body: body) else {
                let origin = note.split(separator: "\n").first.map(String.init) ?? ""
                report.damage.append(Finding(chain: origin, sequence: 0, recordID: "", damage: .forgedCheckpoint,
                                             detail: key == nil ? "no verifier key to check it with" : "its signature does not verify with \(key!.name)"))
                continue
            }
            let chain = checkpoint.origin.split(separator: "/").last.map(String.init) ?? checkpoint.origin
            if checkpoint.size > signed[chain]?.size ?? -1 { signed[chain] = checkpoint }
        }
        // Stored checkpoints: where a chain whose oldest segment retention removed starts again.
        var stored: [String: [Int64: (head: String, note: String)]] = [:]
        // (A store of the chain alone, without the checkpoint table, has no anchors.)
        for row in (try? await store.query("SELECT chain, size, head, note FROM audit_checkpoints", [])) ?? [] {
            guard let chain = row["chain"].text, let size = row["size"].integer else { continue }
            stored[chain, default: [:]][size] = (row["head"].text ?? "", row["note"].text ?? "")
        }
        var hashes: [String: (sequence: Int64, hash: String)] = [:]
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
                // Retention removes whole segments ending at a checkpoint: the chain goes on from its head
                // (whose signature must verify when a key is given).
                let first = row["seq"].integer ?? 1
                if first > 1, let anchor = stored[name]?[first - 1],
                   key == nil || key!.verifiedBody(of: anchor.note).flatMap(AuditCheckpoint.init(body:))?.head == anchor.head {
                    expected = first
                    head = anchor.head
                    report.retainedFrom[name] = first - 1
                }
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
            if !damaged { hashes[name] = (sequence, hash) }
            if let checkpoint = signed[name], checkpoint.size == sequence, checkpoint.head != hash, !damaged {
                fail(.modified, "the chain up to here was rewritten: its head differs from the signed checkpoint of size \(checkpoint.size)")
            }
        }
        for (chain, checkpoint) in signed.sorted(by: { $0.key < $1.key }) where !report.damage.contains(where: { $0.chain == chain }) {
            let last = hashes[chain]?.sequence ?? 0
            if last < checkpoint.size {
                report.damage.append(Finding(chain: chain, sequence: last + 1, recordID: "", damage: .truncated,
                                             detail: "the chain ends at record \(last); the signed checkpoint covers \(checkpoint.size)"))
            }
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
