import Foundation
import PortcullisCore

/// How well the semantic cache tells a paraphrase (whose cached answer fits) from a look-alike
/// (whose does not), over a labelled set of question pairs: at each threshold, the share of
/// paraphrases that would hit and the share of look-alikes that would be wrongly answered.
public enum SemanticEvaluation {
    /// One labelled pair: the question whose answer is cached, the one asked, and whether that answer fits.
    public struct Pair: Sendable, Equatable {
        public var cached: String
        public var asked: String
        public var same: Bool
        public var language: String
        /// `paraphrase`, or how the look-alike differs: `entity`, `number`, `negation`, `antonym`, `order`, `name`, `time`.
        public var kind: String
    }

    /// Counts at one threshold, for one language or all.
    public struct Counts: Sendable, Equatable {
        public var paraphrases = 0
        public var hits = 0
        public var lookAlikes = 0
        public var wrongHits = 0

        /// Paraphrases answered from the cache.
        public var hitRate: Double { paraphrases == 0 ? 0 : Double(hits) / Double(paraphrases) }
        /// Look-alikes answered from the cache (each a wrong answer).
        public var wrongHitRate: Double { lookAlikes == 0 ? 0 : Double(wrongHits) / Double(lookAlikes) }
    }

    /// Pairs from JSON lines: `{"cached": "...", "asked": "...", "same": true, "lang": "en", "kind": "paraphrase"}`.
    public static func pairs(jsonLines text: String) throws -> [Pair] {
        try text.split(separator: "\n").enumerated().compactMap { number, line in
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
            guard let object = (try? JSONParser.parse(String(line)))?.objectValue, let cached = object["cached"]?.stringValue,
                  let asked = object["asked"]?.stringValue, case .bool(let same)? = object["same"] else {
                throw EvaluationError(line: number + 1)
            }
            return Pair(cached: cached, asked: asked, same: same, language: object["lang"]?.stringValue ?? "-",
                        kind: object["kind"]?.stringValue ?? (same ? "paraphrase" : "-"))
        }
    }

    public struct EvaluationError: Error, CustomStringConvertible {
        public var line: Int
        public var description: String { "line \(line): expected {\"cached\": text, \"asked\": text, \"same\": bool, \"lang\": text}" }
    }

    /// The counts at `threshold` of pairs whose cosine similarities are `similarities` (same order), by language and (key "all") overall.
    /// `admitted[i]` false: pair i can never hit (the detail check refused it); nil admits every pair.
    public static func counts(_ pairs: [Pair], similarities: [Float], admitted: [Bool]? = nil, threshold: Double) -> [String: Counts] {
        var result: [String: Counts] = [:]
        for (index, (pair, similarity)) in zip(pairs, similarities).enumerated() {
            let hit = Double(similarity) >= threshold && (admitted?[index] ?? true)
            for key in ["all", pair.language] {
                var counts = result[key] ?? Counts()
                if pair.same {
                    counts.paraphrases += 1
                    if hit { counts.hits += 1 }
                } else {
                    counts.lookAlikes += 1
                    if hit { counts.wrongHits += 1 }
                }
                result[key] = counts
            }
        }
        return result
    }

    /// A table: per threshold, hit rate and wrong-hit rate overall and per language.
    public static func report(_ pairs: [Pair], similarities: [Float], admitted: [Bool]? = nil, thresholds: [Double]) -> String {
        let languages = Array(Set(pairs.map(\.language))).sorted()
        var text = "threshold  " + (["all"] + languages).map { $0.padding(toLength: 26, withPad: " ", startingAt: 0) }.joined() + "\n"
        text += "           " + String(repeating: "hit rate  wrong-hit rate    ", count: languages.count + 1) + "\n"
        for threshold in thresholds {
            let counts = Self.counts(pairs, similarities: similarities, admitted: admitted, threshold: threshold)
            var line = String(format: "%.2f       ", threshold)
            for key in ["all"] + languages {
                let c = counts[key] ?? Counts()
                line += String(format: "%5.1f%%   %5.1f%% (%d/%d)", c.hitRate * 100, c.wrongHitRate * 100, c.wrongHits, c.lookAlikes)
                    .padding(toLength: 26, withPad: " ", startingAt: 0)
            }
            text += line + "\n"
        }
        return text
    }

    /// The value at `quantile` (0…1) of `values`.
    public static func quantile(_ values: [Double], _ quantile: Double) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * quantile).rounded(.up)))]
    }
}
