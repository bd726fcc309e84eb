import ArgumentParser
import Foundation
import PortcullisCache
import PortcullisCore
import PortcullisEmbedder

/// `portcullis cache …`: measure the semantic cache offline.
struct CacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cache", abstract: "Measure the semantic cache offline.",
                                                    subcommands: [Evaluate.self, Benchmark.self])

    static func encoder(_ directory: String, kernel: SentenceEncoder.Kernel = .fastest) throws -> SentenceEncoder {
        if let missing = CPUFeatures.missingForEmbedder { throw ValidationError("this CPU lacks \(missing), which the built-in embedder needs") }
        do {
            return try SentenceEncoder(directory: URL(fileURLWithPath: directory), kernel: kernel)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    struct Evaluate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "eval",
            abstract: "Print the semantic cache's hit rate and wrong-hit rate per threshold over labelled question pairs, with the built-in embedder.",
            discussion: """
                Each line: {"cached": "...", "asked": "...", "same": true | false, "lang": "en", "kind": "paraphrase"}.
                A pair hits when the cosine similarity of its two questions reaches the threshold: a hit on a paraphrase
                (same: true) is a saved call, a hit on a look-alike (same: false) is a wrong answer.
                """)

        @Option(help: "The labelled pairs (JSON lines).") var dataset = "datasets/semantic-pairs.jsonl"
        @Option(help: "The built-in embedder's model directory.") var modelDirectory = "models/all-MiniLM-L6-v2"
        @Option(help: "Thresholds to report, comma-separated.") var thresholds = "0.80,0.85,0.90,0.92,0.94,0.95,0.96,0.97,0.98"
        @Flag(help: "List every pair with its similarity.") var verbose = false
        @Option(help: "The embedder's kernel: avx2, avx512, bfloat16 (default: the fastest this CPU runs, as the gateway does).") var kernel: String?

        func run() async throws {
            guard let contents = FileManager.default.contents(atPath: dataset).map({ String(decoding: $0, as: UTF8.self) }) else {
                throw ValidationError("cannot read \(dataset)")
            }
            let pairs: [SemanticEvaluation.Pair]
            do { pairs = try SemanticEvaluation.pairs(jsonLines: contents) } catch { throw ValidationError("\(dataset): \(error)") }
            let levels = thresholds.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !levels.isEmpty else { throw ValidationError("--thresholds: no number in '\(thresholds)'") }
            let chosen: SentenceEncoder.Kernel
            if let kernel {
                guard let named = SentenceEncoder.Kernel(rawValue: kernel) else { throw ValidationError("--kernel: one of avx2, avx512, bfloat16") }
                chosen = named
            } else {
                chosen = .fastest
            }
            let encoder = try CacheCommand.encoder(modelDirectory, kernel: chosen)
            print("embedder kernel: \(chosen.rawValue)")
            var latencies: [Double] = []
            let similarities = pairs.map { pair -> Float in
                let a = encoder.embed(pair.cached)
                let start = ContinuousClock.now
                let b = encoder.embed(pair.asked)
                latencies.append((ContinuousClock.now - start).inSeconds * 1000)
                return zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
            }
            let differences = pairs.map { QuestionDetails.difference($0.cached, $0.asked) }
            print("\(dataset): \(pairs.count) pairs (\(pairs.filter(\.same).count) paraphrases, \(pairs.filter { !$0.same }.count) look-alikes)")
            print("\nwhat the gateway serves: similarity at the threshold and no differing detail (numbers, negation, substituted word, direction)")
            print(SemanticEvaluation.report(pairs, similarities: similarities, admitted: differences.map { $0 == nil }, thresholds: levels), terminator: "")
            print("\nsimilarity alone, for comparison")
            print(SemanticEvaluation.report(pairs, similarities: similarities, thresholds: levels), terminator: "")
            print(String(format: "embedder: %.2f ms p50, %.2f ms p99 per question (%d questions)",
                         SemanticEvaluation.quantile(latencies, 0.5), SemanticEvaluation.quantile(latencies, 0.99), latencies.count))
            if verbose {
                for ((pair, similarity), difference) in zip(zip(pairs, similarities), differences) {
                    print(String(format: "%.4f  %@  %@  %@  %@  |  %@", similarity, pair.same ? "same" : "diff", pair.language,
                                 difference?.rawValue ?? "-", pair.cached, pair.asked))
                }
            }
        }
    }

    struct Benchmark: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench",
            abstract: "Time semantic lookups in an index of --entries questions, and the built-in embedder per question.",
            discussion: """
                Build with -c release and pin to one core (taskset -c 0). The index holds clustered unit vectors of the
                embedder's 384 dimensions; each lookup is checked against an exhaustive scan (recall). The reference is
                that exhaustive scan, timed in the same run.
                """)

        @Option(help: "Questions in the index.") var entries = 100_000
        @Option(help: "Timed lookups.") var queries = 2000
        @Option(help: "The built-in embedder's model directory (empty: skip the embedder).") var modelDirectory = "models/all-MiniLM-L6-v2"

        func run() async throws {
            let dimensions = SentenceEncoder.dimensions
            var random = SystemRandomNumberGenerator()
            func gaussian() -> Float {
                let u = Float.random(in: Float.ulpOfOne..<1, using: &random), v = Float.random(in: 0..<1, using: &random)
                return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * .pi * v)
            }
            func unit(_ vector: [Float]) -> [Float] {
                let norm = vector.reduce(0) { $0 + $1 * $1 }.squareRoot()
                return vector.map { $0 / norm }
            }
            // Questions come in topics: centres with questions scattered around them, as real ones are.
            let centres = (0..<max(1, entries / 50)).map { _ in unit((0..<dimensions).map { _ in gaussian() }) }
            func near(_ centre: [Float], spread: Float) -> [Float] { unit(zip(centre, (0..<dimensions).map { _ in gaussian() }).map { $0 + spread * $1 }) }
            var index = VectorIndex(dimensions: dimensions)
            let buildStart = ContinuousClock.now
            for number in 0..<entries { index.insert(near(centres[number % centres.count], spread: 0.05)) }
            let build = ContinuousClock.now - buildStart
            var lookups: [Double] = [], scans: [Double] = [], agreed = 0
            for number in 0..<queries {
                let query = near(centres[(number * 7919) % centres.count], spread: 0.05)
                let start = ContinuousClock.now
                let found = index.search(query, limit: 1).first
                lookups.append((ContinuousClock.now - start).inSeconds * 1000)
                if number < min(queries, 200) {
                    let scanStart = ContinuousClock.now
                    let exact = index.exhaustive(query, limit: 1).first
                    scans.append((ContinuousClock.now - scanStart).inSeconds * 1000)
                    if found?.node == exact?.node { agreed += 1 }
                }
            }
            print(String(format: "index: %d entries built in %.1f s; lookup %.3f ms p50, %.3f ms p99 (%d lookups); exhaustive scan %.3f ms p50; recall@1 %.1f%% (%d checked)",
                         entries, build.inSeconds, SemanticEvaluation.quantile(lookups, 0.5), SemanticEvaluation.quantile(lookups, 0.99), queries,
                         SemanticEvaluation.quantile(scans, 0.5), Double(agreed) * 100 / Double(max(1, scans.count)), scans.count))
            guard !modelDirectory.isEmpty else { return }
            let questions = ["What is the capital of France?", "How do I reset my password on the staging cluster?",
                             "Какая столица Франции?", "Как сбросить пароль в тестовом кластере?",
                             "Summarise the attached quarterly report in three bullet points for the board meeting tomorrow morning."]
            // Every kernel this CPU runs, timed in the same run; the fastest is what the gateway uses.
            var reference: [[Float]]?
            for kernel in SentenceEncoder.Kernel.allCases.filter(\.isAvailable) {
                let encoder = try CacheCommand.encoder(modelDirectory, kernel: kernel)
                let vectors = questions.map { encoder.embed($0) }
                var timings: [Double] = []
                for number in 0..<500 {
                    let start = ContinuousClock.now
                    _ = encoder.embed(questions[number % questions.count])
                    timings.append((ContinuousClock.now - start).inSeconds * 1000)
                }
                let pieces = questions.map { encoder.tokenizer.encode($0).count }
                let longest = pieces.indices.max { pieces[$0] < pieces[$1] }!
                let longestTimings = timings.indices.filter { $0 % questions.count == longest }.map { timings[$0] }
                var line = String(format: "embedder (%@%@): %.2f ms p50, %.2f ms p99 per question (%d questions of %d to %d word pieces; the longest: %.2f ms p50, %.2f ms p99)",
                                  kernel.rawValue, kernel == .fastest ? ", the gateway's" : "", SemanticEvaluation.quantile(timings, 0.5),
                                  SemanticEvaluation.quantile(timings, 0.99), timings.count, pieces.min()!, pieces.max()!,
                                  SemanticEvaluation.quantile(longestTimings, 0.5), SemanticEvaluation.quantile(longestTimings, 0.99))
                if let reference {
                    // How far the kernel's cosines between the questions are from the first (float) kernel's.
                    var worst: Float = 0
                    for row in questions.indices {
                        for column in questions.indices {
                            worst = max(worst, abs(Self.cosine(vectors[row], vectors[column]) - Self.cosine(reference[row], reference[column])))
                        }
                    }
                    line += String(format: "; cosines within %.1e of %@'s", worst, SentenceEncoder.Kernel.avx2.rawValue)
                } else {
                    reference = vectors
                }
                print(line)
            }
        }

        static func cosine(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
    }
}
