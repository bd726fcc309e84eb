import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisGuardrails

/// `portcullis guard …`: work with the guardrails offline.
struct GuardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "guard", abstract: "Work with the guardrails offline.",
                                                    subcommands: [Evaluate.self, Benchmark.self, RedTeamCommand.self])

    struct Evaluate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "eval",
            abstract: "Print detection and false-positive rates per category for a labelled JSON-lines set.",
            discussion: """
                Each line: {"text": "...", "label": "attack" | "benign", "category": "prompt_injection", "lang": "en"}.
                An attack counts as detected, and a benign text as a false positive, when the default policy blocks it.
                """)

        @Option(help: "The labelled set (JSON lines).")
        var dataset: String

        @Flag(help: "List every misjudged text with the deciding reason.")
        var verbose = false

        @Option(help: "Run only these guards (comma-separated, e.g. pii), counting any finding as detection; default: the default policy.")
        var guards: String?

        func run() async throws {
            guard let contents = FileManager.default.contents(atPath: dataset).map({ String(decoding: $0, as: UTF8.self) }) else {
                throw ValidationError("cannot read \(dataset)")
            }
            let examples: [GuardEvaluation.Example]
            do {
                examples = try GuardEvaluation.parse(contents)
            } catch {
                throw ValidationError("\(dataset): \(error)")
            }
            let policy = guards.map { list in
                GuardPolicy(name: "eval", inputGuards: list.split(separator: ",").map(String.init),
                            actions: [.critical: .block, .high: .block, .medium: .block, .low: .block], personalData: .block)
            } ?? GuardPolicy(name: "default")
            let evaluation = GuardEvaluation(cascade: GuardCascade.builtIn(), policy: policy)
            let report = await evaluation.run(examples)
            print("\(dataset): \(examples.count) examples")
            print(report.text, terminator: "")
            if verbose {
                for miss in report.misses {
                    print("\(miss.attack ? "MISSED" : "FALSE+")  \(miss.reason ?? "-")  \(miss.text.replacingOccurrences(of: "\n", with: "\\n"))")
                }
            }
        }
    }
}

extension GuardCommand {
    /// `portcullis guard bench`: the local tiers on a long prompt, timed per call.
    struct Benchmark: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench",
            abstract: "Time the local guard tiers (validation, normalisation, injection rules, classifier, PII, moderation) on a prompt of about --tokens tokens.",
            discussion: "Build with -c release and pin to one core (taskset -c 0). The reference is lower-casing the same text.")

        @Option(help: "Approximate prompt size in tokens.") var tokens = 4000
        @Option(help: "Timed calls.") var iterations = 2000
        @Option(help: "Build the prompt from this file's lines instead of the built-in sentences (repeated until --tokens; JSON lines use their \"text\").")
        var promptFile: String?

        func run() async throws {
            // Varied prose in five languages with near-misses and numbers that fail their checks, no attack and no
            // identifier: every rule and validator is tried, none ends the scan early.
            let sentences = [
                "Please summarise the quarterly report and ignore case when sorting the appendix tables. ",
                "Пожалуйста, проверь договор и перечисли правила оплаты, не забудь про сроки. ",
                "Bitte fasse das Protokoll zusammen und zeig mir die Systemanforderungen des Servers. ",
                "Merci de relire le document et de donner les instructions de montage du bureau. ",
                "Por favor revisa el informe y dime las reglas del ajedrez para el enroque. ",
                "The previous draft had 1234 rows; show the new instructions for the onboarding checklist. ",
                "Order 4111 1111 1111 1112 shipped on 2024-05-17 to desk 7707083894, version 1.2.3 of the form. ",
            ]
            let lines = try promptFile.map(Self.lines(from:)) ?? sentences
            var prompt = ""
            var index = 0
            while TokenEstimate.count(prompt) < tokens {
                prompt += lines[index % lines.count]
                index += 1
            }
            let request = ChatRequest(model: "bench", messages: [ChatMessage(role: .system, content: .text("You are a helpful assistant.")),
                                                                 ChatMessage(role: .user, content: .text(prompt))])
            let cascade = GuardCascade.builtIn(validation: ValidationGuard(maximumTokens: tokens * 2))
            let policy = GuardPolicy(name: "bench", inputGuards: ["validation", "injection_rules", "injection_classifier", "pii", "moderation"])
            let warm = await cascade.run(GuardInput(request: request), policy: policy)
            guard !warm.isBlocked else { throw ValidationError("the benchmark prompt was blocked: \(warm.findings.map(\.reason))") }

            var guarded: [Double] = []
            var reference: [Double] = []
            let clock = ContinuousClock()
            for _ in 0..<iterations {
                let start = clock.now
                _ = await cascade.run(GuardInput(request: request), policy: policy)
                guarded.append(Self.microseconds(clock.now - start))
                let referenceStart = clock.now
                let lowered = prompt.lowercased()
                reference.append(Self.microseconds(clock.now - referenceStart))
                if lowered.isEmpty { print("") }
            }
            // Where the time goes: each step alone, median of a few hundred calls.
            var normalise: [Double] = []
            var estimate: [Double] = []
            var rules: [Double] = []
            var personal: [Double] = []
            var moderating: [Double] = []
            var classifying: [Double] = []
            let classifier = try ClassifierGuard.shipped.get()
            let injection = InjectionGuard()
            let moderation = ModerationGuard()
            for _ in 0..<min(iterations, 300) {
                // Each round reads a fresh normalised text, as each request does: the rules walk
                // its words for the injection rules and the moderation lexicon at once, and
                // moderation then reads what that walk found.
                var start = clock.now
                let normalized = NormalizedText(prompt)
                normalise.append(Self.microseconds(clock.now - start))
                start = clock.now
                _ = TokenEstimate.count(prompt)
                estimate.append(Self.microseconds(clock.now - start))
                start = clock.now
                _ = injection.inspect(normalized)
                rules.append(Self.microseconds(clock.now - start))
                start = clock.now
                _ = PIIDetector.find(in: prompt)
                personal.append(Self.microseconds(clock.now - start))
                var moderationInput = GuardInput(segments: [])
                moderationInput.segments = [GuardSegment(role: .user, messageIndex: 0, text: prompt)]
                moderationInput.normalized = [normalized]
                start = clock.now
                _ = await moderation.inspect(moderationInput)
                moderating.append(Self.microseconds(clock.now - start))
                start = clock.now
                _ = classifier.inspect(normalized)
                classifying.append(Self.microseconds(clock.now - start))
            }
            let (g50, g99) = Self.percentiles(guarded)
            let (r50, r99) = Self.percentiles(reference)
            print("prompt: \(TokenEstimate.count(prompt)) estimated tokens, \(prompt.utf8.count) bytes; \(iterations) calls")
            print(String(format: "local tiers (validation + normalisation + rules + classifier + PII + moderation): p50 %.0f us, p99 %.0f us (ceiling 1000 us)", g50, g99))
            print(String(format: "reference (lowercased copy of the prompt):        p50 %.0f us, p99 %.0f us", r50, r99))
            print(String(format: "ratio p99 guarded / reference: %.1f", g99 / max(r99, 1)))
            print(String(format: "p50 by step: normalisation %.0f us, token estimate %.0f us, rules (+ moderation's phrase walk) %.0f us, classifier %.0f us, PII %.0f us, moderation %.0f us",
                         Self.percentiles(normalise).0, Self.percentiles(estimate).0, Self.percentiles(rules).0,
                         Self.percentiles(classifying).0, Self.percentiles(personal).0, Self.percentiles(moderating).0))
        }

        /// A file's lines, each ending in a space; a JSON line contributes its `text`.
        static func lines(from path: String) throws -> [String] {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line -> String? in
                if line.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] {
                    return (object["text"] as? String).map { $0 + " " }
                }
                return line.isEmpty ? nil : line + " "
            }
            guard !lines.isEmpty else { throw ValidationError("\(path) has no text") }
            return lines
        }

        static func microseconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
        }

        static func percentiles(_ values: [Double]) -> (Double, Double) {
            let sorted = values.sorted()
            return (sorted[sorted.count / 2], sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))])
        }
    }
}
