import Foundation
import PortcullisCore

/// Measures a guard cascade on a labelled set: one JSON object per line with `text`,
/// `label` (`attack` or `benign`, or for PII sets `pii`/`clean`), and optionally `category`
/// and `lang`. An attack counts as detected when the policy blocks it; a benign text counts
/// as a false positive when the policy blocks it.
public struct GuardEvaluation: Sendable {
    public struct Example: Sendable {
        public var text: String
        public var isAttack: Bool
        public var category: String
        public var language: String
    }

    public struct Tally: Sendable, Equatable {
        public var total = 0
        public var blocked = 0
        public var rate: Double { total == 0 ? 0 : Double(blocked) / Double(total) }
    }

    public struct Report: Sendable {
        /// Attacks per labelled category (and "all").
        public var detection: [String: Tally] = [:]
        /// Benign texts per category when the set names one (look-alikes of an identifier), else per language (and "all").
        public var falsePositives: [String: Tally] = [:]
        /// Texts that were misjudged, for tuning: (expected attack?, text, decisive reason).
        public var misses: [(attack: Bool, text: String, reason: String?)] = []

        /// A table for people.
        public var text: String {
            var out = "detection (attacks blocked)\n"
            for (name, tally) in detection.sorted(by: { $0.key < $1.key }) {
                out += "  \(name.padding(toLength: 26, withPad: " ", startingAt: 0)) \(percent(tally.rate)) (\(tally.blocked)/\(tally.total))\n"
            }
            out += "false positives (benign blocked)\n"
            for (name, tally) in falsePositives.sorted(by: { $0.key < $1.key }) {
                out += "  \(name.padding(toLength: 26, withPad: " ", startingAt: 0)) \(percent(tally.rate)) (\(tally.blocked)/\(tally.total))\n"
            }
            return out
        }

        private func percent(_ rate: Double) -> String {
            let tenths = Int((rate * 1000).rounded())
            let text = "\(tenths / 10).\(tenths % 10)%"
            return String(repeating: " ", count: max(0, 6 - text.count)) + text
        }
    }

    /// Reads a JSON-lines set; a malformed line is an error naming its number.
    public static func parse(_ contents: String) throws -> [Example] {
        var examples: [Example] = []
        for (index, line) in contents.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingPrefix(while: \.isWhitespace)
            guard !trimmed.isEmpty else { continue }
            let object: JSONObject
            do {
                guard let parsed = try JSONParser.parse(String(trimmed)).objectValue else { throw GuardDatasetError(line: index + 1, "not an object") }
                object = parsed
            } catch let error as GuardDatasetError {
                throw error
            } catch {
                throw GuardDatasetError(line: index + 1, "\(error)")
            }
            guard let text = object["text"]?.stringValue else { throw GuardDatasetError(line: index + 1, "no \"text\"") }
            guard let label = object["label"]?.stringValue, ["attack", "benign", "pii", "clean"].contains(label) else {
                throw GuardDatasetError(line: index + 1, "\"label\" must be attack, benign, pii or clean")
            }
            let isAttack = label == "attack" || label == "pii"
            examples.append(Example(text: text, isAttack: isAttack, category: object["category"]?.stringValue ?? (isAttack ? label : "none"),
                                    language: object["lang"]?.stringValue ?? "unknown"))
        }
        return examples
    }

    public let cascade: GuardCascade
    public let policy: GuardPolicy

    public init(cascade: GuardCascade, policy: GuardPolicy) {
        self.cascade = cascade
        self.policy = policy
    }

    public func run(_ examples: [Example]) async -> Report {
        var report = Report()
        for example in examples {
            let outcome = await cascade.run(GuardInput(text: example.text), policy: policy)
            let blocked = outcome.isBlocked
            if example.isAttack {
                for key in [example.category, "all"] {
                    report.detection[key, default: Tally()].total += 1
                    if blocked { report.detection[key, default: Tally()].blocked += 1 }
                }
                if !blocked { report.misses.append((true, example.text, outcome.decisive?.reason)) }
            } else {
                for key in [example.category == "none" ? example.language : example.category, "all"] {
                    report.falsePositives[key, default: Tally()].total += 1
                    if blocked { report.falsePositives[key, default: Tally()].blocked += 1 }
                }
                if blocked { report.misses.append((false, example.text, outcome.decisive?.reason)) }
            }
        }
        return report
    }
}

/// A line of a labelled set that cannot be read.
public struct GuardDatasetError: Error, CustomStringConvertible {
    public let line: Int
    public let reason: String

    init(line: Int, _ reason: String) {
        self.line = line
        self.reason = reason
    }

    public var description: String { "line \(line): \(reason)" }
}
