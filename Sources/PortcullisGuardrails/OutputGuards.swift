import PortcullisCore

/// What the output guards know about the request whose answer they read.
public struct OutputContext: Sendable {
    /// The system and developer instructions the upstream was given (enforced prompt included).
    public var systemPrompt: String
    /// The canary token planted in the system prompt, when the policy plants one.
    public var canary: String?

    public init(systemPrompt: String = "", canary: String? = nil) {
        self.systemPrompt = systemPrompt
        self.canary = canary
    }
}

/// The output side of a policy: which guards read answers and what they do.
public struct OutputPolicy: Sendable {
    /// Output guards by name: `pii` (personal data and secrets leaking), `system_prompt_leak`
    /// (the canary, or a verbatim run of the system prompt), `moderation` (toxic answers),
    /// `format` (a whole answer is the JSON its request's `response_format` asked for).
    public var guards: [String]
    /// What is done with personal data and secrets found in answers (`mask`, `remove`, `block`
    /// or `flag`; the reversible actions make no sense for answers and mask instead).
    public var personalData: PersonalDataAction
    /// How much of a streamed answer (UTF-8 bytes) is held back so that a span can be
    /// inspected whole before any of it is delivered. An unfinished run without whitespace
    /// (a token, a key) is held back whole, up to `maximumHeldRun`.
    public var holdBack: Int
    /// Whether a canary token is planted in the system prompt.
    public var canary: Bool
    /// Whether an answer failing the `format` guard is asked for once more.
    public var formatRetry: Bool

    public static let maximumHeldRun = 16_384

    public init(guards: [String] = [], personalData: PersonalDataAction = .mask, holdBack: Int = 64, canary: Bool = false,
                formatRetry: Bool = true) {
        self.guards = guards
        self.personalData = personalData
        self.holdBack = max(16, holdBack)
        self.canary = canary
        self.formatRetry = formatRetry
    }

    public var isEmpty: Bool { guards.isEmpty }

    /// What this policy does about a finding on an answer: leaks of the system prompt block,
    /// personal data as configured, the rest by risk through `actions`.
    func action(for finding: GuardFinding, policy: GuardPolicy) -> GuardAction {
        switch finding.category {
        case .systemPromptLeak: return .block
        case .pii, .secret:
            switch personalData {
            case .flag: return .flag
            case .block: return .block
            case .mask, .remove, .hash, .tokenize: return .redact
            }
        default: return policy.action(for: finding.risk)
        }
    }
}

/// Reads answers: finds what must not reach the client, in a whole answer or a streamed window.
public struct OutputInspector: Sendable {
    public let policy: GuardPolicy
    public let context: OutputContext
    private let promptShingles: Set<[UInt8]>
    private let moderation: ModerationGuard?

    /// Words in a verbatim run of the system prompt that count as a leak.
    public static let leakRunWords = 8

    /// - Parameter moderation: pass one instance for every request: its rule trie is built once.
    public init(policy: GuardPolicy, context: OutputContext, moderation: ModerationGuard? = nil) {
        self.policy = policy
        self.context = context
        self.promptShingles = policy.output.guards.contains("system_prompt_leak")
            ? Self.shingles(of: context.systemPrompt) : []
        self.moderation = policy.output.guards.contains("moderation") ? moderation ?? ModerationGuard() : nil
    }

    /// Findings in `text` (spans are UTF-8 offsets into it), each with what the policy does about it.
    public func inspect(_ text: String) -> [(finding: GuardFinding, action: GuardAction)] {
        var findings: [GuardFinding] = []
        let guards = policy.output.guards
        if guards.contains("pii") {
            for match in PIIDetector.find(in: text) {
                findings.append(GuardFinding(guardName: "output_pii", category: match.kind.category, risk: match.kind == .secret ? .high : .medium,
                                             score: 0.95, reason: "\(match.kind.rawValue) (\(match.check))", span: match.range))
            }
        }
        if guards.contains("system_prompt_leak") {
            if let canary = context.canary, let range = Self.find(Array(canary.utf8), in: Array(text.utf8)) {
                findings.append(GuardFinding(guardName: "system_prompt_leak", category: .systemPromptLeak, risk: .critical, score: 1,
                                             reason: "canary token from the system prompt", span: range))
            }
            if !promptShingles.isEmpty, let range = verbatimRun(in: text) {
                findings.append(GuardFinding(guardName: "system_prompt_leak", category: .systemPromptLeak, risk: .high, score: 0.9,
                                             reason: "\(Self.leakRunWords)+ words verbatim from the system prompt", span: range))
            }
        }
        if let moderation {
            findings += moderation.inspect(text: text).map { finding in
                var finding = finding
                finding.guardName = "output_moderation"
                return finding
            }
        }
        return findings.map { ($0, policy.output.action(for: $0, policy: policy)) }
    }

    /// A span where `leakRunWords` consecutive words of the answer appear in the system prompt.
    func verbatimRun(in text: String) -> Range<Int>? {
        let words = Self.words(of: text)
        guard words.count >= Self.leakRunWords else { return nil }
        for start in 0...(words.count - Self.leakRunWords) {
            let window = words[start..<(start + Self.leakRunWords)]
            if promptShingles.contains(Self.key(window.map(\.word))) {
                return window.first!.range.lowerBound..<window.last!.range.upperBound
            }
        }
        return nil
    }

    /// Lower-cased alphanumeric words (ASCII folded; other letters kept as they are) with their byte ranges.
    static func words(of text: String) -> [(word: [UInt8], range: Range<Int>)] {
        var words: [(word: [UInt8], range: Range<Int>)] = []
        var current: [UInt8] = []
        var start = 0
        for (offset, byte) in text.utf8.enumerated() {
            let isWord = byte >= 0x80 || PIIDetector.isAlphanumeric(byte)
            if isWord {
                if current.isEmpty { start = offset }
                current.append(PIIDetector.isUpper(byte) ? byte + 32 : byte)
            } else if !current.isEmpty {
                words.append((current, start..<offset))
                current = []
            }
        }
        if !current.isEmpty { words.append((current, start..<(start + current.count))) }
        return words
    }

    static func key(_ words: [[UInt8]]) -> [UInt8] { Array(words.joined(separator: [0x20])) }

    static func shingles(of prompt: String) -> Set<[UInt8]> {
        let words = Self.words(of: prompt).map(\.word)
        guard words.count >= leakRunWords else { return [] }
        var shingles = Set<[UInt8]>()
        for start in 0...(words.count - leakRunWords) { shingles.insert(key(Array(words[start..<(start + leakRunWords)]))) }
        return shingles
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Range<Int>? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return start..<(start + needle.count) }
        }
        return nil
    }

    /// The replacement for a redacted span of `kind` in an answer. In a JSON text (tool-call
    /// arguments) a span outside a string — a card number written as a number — becomes a string
    /// (or `null` when removed), so that the arguments stay JSON.
    static func replacement(_ finding: GuardFinding, action: PersonalDataAction, json: JSONStringTracker? = nil) -> String {
        let label = "[" + finding.reason.prefix { $0 != " " }.uppercased() + "]"
        guard let json, !json.inString else { return action == .remove ? "" : label }
        return action == .remove ? "null" : "\"" + label + "\""
    }

    /// What to do with a whole answer.
    public enum Verdict: Sendable, Equatable {
        /// Deliver `text` (redacted where needed).
        case deliver(String)
        /// Withhold the answer.
        case block(GuardFinding)
    }

    /// Inspects a whole answer: blocked, or delivered with redactions; every finding is returned for the record.
    /// - Parameter json: the text is JSON (a tool call's arguments), and redactions keep it JSON.
    public func review(_ text: String, json: Bool = false) -> (verdict: Verdict, findings: [(finding: GuardFinding, action: GuardAction)]) {
        let findings = inspect(text)
        if let block = findings.filter({ $0.action == .block }).max(by: { ($0.finding.risk, $0.finding.score) < ($1.finding.risk, $1.finding.score) }) {
            return (.block(block.finding), findings)
        }
        return (.deliver(redact(text, findings: findings, json: json)), findings)
    }

    func redact(_ text: String, findings: [(finding: GuardFinding, action: GuardAction)], json: Bool) -> String {
        var bytes = Array(text.utf8)
        let replacements = Self.replacements(findings, in: bytes, within: 0..<bytes.count, json: json ? JSONStringTracker() : nil,
                                             action: policy.output.personalData)
        guard !replacements.isEmpty else { return text }
        for (span, text) in replacements.reversed() { bytes.replaceSubrange(span, with: text) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// What replaces each span to redact that lies within `range` of `bytes`, front to back (apply
    /// them from the end, so that earlier offsets stay valid); a span overlapping the one before it
    /// is left to that one. In JSON (`json` is the reader's state at `range`'s start) each knows
    /// whether it starts inside a string.
    static func replacements(_ findings: [(finding: GuardFinding, action: GuardAction)], in bytes: [UInt8], within range: Range<Int>,
                             json: JSONStringTracker?, action: PersonalDataAction) -> [(span: Range<Int>, text: [UInt8])] {
        let spans = findings.filter { $0.action == .redact }.compactMap { entry in entry.finding.span.map { (entry.finding, $0) } }
            .filter { range.contains($0.1.lowerBound) && $0.1.upperBound <= range.upperBound }
            .sorted { $0.1.lowerBound < $1.1.lowerBound }
        var replacements: [(span: Range<Int>, text: [UInt8])] = []
        var tracker = json
        var scanned = range.lowerBound
        for (finding, span) in spans where span.lowerBound >= (replacements.last?.span.upperBound ?? range.lowerBound) {
            tracker?.advance(over: bytes[scanned..<span.lowerBound])
            scanned = span.lowerBound
            replacements.append((span, Array(replacement(finding, action: action, json: tracker).utf8)))
        }
        return replacements
    }
}

/// Whether the next byte of a JSON text is inside a string: as much of a JSON reader as it takes
/// to replace a value in tool-call arguments without breaking them.
public struct JSONStringTracker: Sendable {
    public private(set) var inString = false
    private var escaped = false

    public init() {}

    public mutating func advance(over bytes: some Sequence<UInt8>) {
        for byte in bytes {
            if escaped {
                escaped = false
            } else if inString && byte == 0x5C {
                escaped = true
            } else if byte == 0x22 {
                inString.toggle()
            }
        }
    }
}

/// Output guards on one streamed text (one choice): text is held back by the policy's window
/// and inspected before it is released, so that a blocked or redacted span never reaches the
/// client, even when it arrives split across chunks.
public struct StreamOutputGuard: Sendable {
    private let inspector: OutputInspector
    /// Bytes received and not yet released.
    private var pending: [UInt8] = []
    /// The tail of what was released, for context (a span may start in it only if it is longer
    /// than the window; such a span can no longer be redacted, but can still block).
    private var released: [UInt8] = []
    /// Findings already recorded, by reason and absolute offset, so that a span is recorded once.
    private var seen: Set<String> = []
    private var offset = 0
    /// For a JSON text (tool-call arguments): where everything released so far left off.
    private var json: JSONStringTracker?
    public private(set) var findings: [(finding: GuardFinding, action: GuardAction)] = []

    /// - Parameter json: the stream is a JSON text (a tool call's arguments), and redactions keep it JSON.
    public init(inspector: OutputInspector, json: Bool = false) {
        self.inspector = inspector
        self.json = json ? JSONStringTracker() : nil
    }

    public enum Step: Sendable, Equatable {
        case release(String)
        case block(GuardFinding)
    }

    /// Takes the next delta; what may be delivered now, or the block.
    public mutating func feed(_ delta: String) -> Step {
        pending += delta.utf8
        return step(final: false)
    }

    /// Ends the stream: inspects and releases everything still held.
    public mutating func finish() -> Step {
        step(final: true)
    }

    private mutating func step(final: Bool) -> Step {
        guard !pending.isEmpty else { return .release("") }
        let context = released.count
        // Deltas arrive as whole characters and cuts never split one, so the window is valid UTF-8.
        let window = released + pending
        let found = inspector.inspect(String(decoding: window, as: UTF8.self))
        var redactions: [(finding: GuardFinding, action: GuardAction)] = []
        for entry in found {
            let span = entry.finding.span ?? 0..<window.count
            let identity = "\(entry.finding.reason)@\(offset - context + span.lowerBound)"
            if entry.action == .block { return recordAndBlock(entry, identity: identity) }
            // A span that may still grow (it touches the end of what has arrived) is decided later.
            if !final && span.upperBound >= window.count { continue }
            if !seen.contains(identity) {
                seen.insert(identity)
                findings.append(entry)
            }
            if entry.action == .redact, span.lowerBound >= context { redactions.append(entry) }
        }
        var cut = final ? window.count : releasePoint(window, context: context)
        // Never release part of a span that is still undecided at the end.
        for entry in found where !final {
            if let span = entry.finding.span, span.upperBound >= window.count { cut = min(cut, span.lowerBound) }
        }
        // Never release part of a span to be redacted: the cut moves back to its start.
        for entry in redactions.sorted(by: { $0.finding.span!.lowerBound > $1.finding.span!.lowerBound }) {
            if let span = entry.finding.span, span.lowerBound < cut, cut < span.upperBound { cut = span.lowerBound }
        }
        cut = max(cut, context)
        var out = Array(window[context..<cut])
        // Redact spans wholly inside what is released now (offsets relative to `context`), from the end.
        let replacements = OutputInspector.replacements(redactions, in: window, within: context..<cut, json: json,
                                                        action: inspector.policy.output.personalData)
        for (span, text) in replacements.reversed() {
            out.replaceSubrange((span.lowerBound - context)..<(span.upperBound - context), with: text)
        }
        json?.advance(over: window[context..<cut])
        pending = Array(window[cut...])
        offset += cut - context
        released = Array((released + window[context..<cut]).suffix(max(inspector.policy.output.holdBack, 256)))
        return .release(String(decoding: out, as: UTF8.self))
    }

    private mutating func recordAndBlock(_ entry: (finding: GuardFinding, action: GuardAction), identity: String) -> Step {
        if !seen.contains(identity) {
            seen.insert(identity)
            findings.append(entry)
        }
        pending = []
        return .block(entry.finding)
    }

    /// How much of `window` may be released: all but the hold-back window, never inside an
    /// unfinished run without whitespace (up to `maximumHeldRun`), never inside a UTF-8 character.
    private func releasePoint(_ window: [UInt8], context: Int) -> Int {
        var cut = window.count - inspector.policy.output.holdBack
        var runStart = window.count
        while runStart > context, !Self.isSpace(window[runStart - 1]) { runStart -= 1 }
        if window.count - runStart <= OutputPolicy.maximumHeldRun { cut = min(cut, runStart) }
        let numberStart = Self.numberStart(window, context: context, runStart: runStart)
        if window.count - numberStart <= OutputPolicy.maximumHeldRun { cut = min(cut, numberStart) }
        // A number whose groups are joined by disguised spaces (no-break, zero-width, line
        // breaks, dots) or written in full-width digits is held back as one too.
        if let folded = FoldedText(window) {
            let foldedContext = folded.folded(position: context)
            var foldedRun = folded.bytes.count
            while foldedRun > foldedContext, !Self.isSpace(folded.bytes[foldedRun - 1]) { foldedRun -= 1 }
            let start = folded.original(position: Self.numberStart(folded.bytes, context: foldedContext, runStart: foldedRun))
            if window.count - start <= OutputPolicy.maximumHeldRun { cut = min(cut, max(start, context)) }
        }
        if cut <= context { return context }
        while cut > context, cut < window.count, window[cut] & 0xC0 == 0x80 { cut -= 1 }
        return cut
    }

    /// Where a number that may still be growing begins: groups holding digits, joined by single
    /// spaces ("4111 1111 1111 1", "+7 912 345-67-", "DE89 3704 0044") are held back together,
    /// so that a card, phone or IBAN written with spaces is inspected whole, however small the
    /// window. `runStart` is where the unfinished run at the end (possibly empty) begins.
    static func numberStart(_ window: [UInt8], context: Int, runStart: Int) -> Int {
        func isNumberByte(_ byte: UInt8) -> Bool {
            PIIDetector.isAlphanumeric(byte) || byte == 0x2B || byte == 0x28 || byte == 0x29 || byte == 0x2D || byte == 0x2E || byte == 0x2F
        }
        func hasDigit(_ bytes: ArraySlice<UInt8>) -> Bool { bytes.contains { $0 >= 0x30 && $0 <= 0x39 } }
        let trailing = window[runStart...]
        guard trailing.allSatisfy(isNumberByte), trailing.isEmpty || hasDigit(trailing) else { return runStart }
        var start = runStart
        while start - 2 >= context, window[start - 1] == 0x20, isNumberByte(window[start - 2]) {
            var groupStart = start - 2
            while groupStart > context, isNumberByte(window[groupStart - 1]) { groupStart -= 1 }
            guard hasDigit(window[groupStart..<(start - 1)]) else { break }
            start = groupStart
        }
        return start
    }

    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x09 || byte == 0x0D }
}
