/// The rule tier against prompt injection and jailbreaks: multilingual phrase rules over the
/// normalised words, markers of forged roles and delimiters, invisible and mixed-script
/// obfuscation, and the same rules again over base64/hex blobs decoded from the text.
///
/// Text from the caller's own system or developer messages is not inspected (it is the
/// policy, not an attack on it).
public struct InjectionGuard: InputGuard {
    public let name = "injection_rules"
    public let tier = GuardTier.rules
    /// The built-in rules, each multi-word stem expanded (indexed by a match's phrase id).
    private var rules: [InjectionRule] { BuiltInPhrases.compiled.first }

    /// Literal markers of chat templates and role headers that user text has no business carrying.
    static let roleMarkers: [(marker: String, reason: String)] = [
        ("<|im_start|>", "chat template marker"), ("<|im_end|>", "chat template marker"), ("<|system|>", "chat template marker"),
        ("<|assistant|>", "chat template marker"), ("<|user|>", "chat template marker"), ("<|endoftext|>", "chat template marker"),
        ("<|begin_of_text|>", "chat template marker"), ("<|start_header_id|>", "chat template marker"), ("<|eot_id|>", "chat template marker"),
        ("[inst]", "instruction delimiter"), ("[/inst]", "instruction delimiter"), ("<<sys>>", "system delimiter"), ("<</sys>>", "system delimiter"),
        ("</system>", "system tag"), ("<system>", "system tag"), ("<system_prompt>", "system tag"), ("</instructions>", "system tag"),
        ("### system:", "role header"), ("### instruction:", "role header"), ("###system", "role header"), ("[system]", "role header"),
        ("\nsystem:", "role header"), ("\n\nhuman:", "role header"), ("\n\nassistant:", "role header"), ("[system message]", "role header"),
        ("--- end of user input", "end-of-input forgery"), ("end of user input", "end-of-input forgery"),
        ("=== system override", "system override"), ("[admin override]", "system override"), ("system override", "system override"),
        ("new instructions:", "instruction header"), ("new instructions :", "instruction header"),
        ("nouvelles instructions :", "instruction header"), ("nouvelles instructions:", "instruction header"),
        ("nuevas instrucciones:", "instruction header"), ("neue anweisungen:", "instruction header"),
        ("новые инструкции:", "instruction header"), ("новые указания:", "instruction header"),
    ]

    static let roleMarkerBytes: [(marker: [UInt8], reason: String)] = roleMarkers.map { (Array($0.marker.utf8), $0.reason) }

    /// Words of texts that talk about attacks rather than make them; a phrase in quotes in
    /// such a text counts one risk level lower.
    static let discussionWords = ["attacker", "attackers", "injection", "detect", "defend", "example", "security training", "jailbreaks",
                                  "phishing awareness", "red team", "злоумышленник", "инъекци", "angreifer", "attaquant", "atacante"]
    static let discussionWordBytes = discussionWords.map { Array($0.utf8) }
    static let quoteScalars: Set<UInt32> = [0x27, 0x22, 0xAB, 0xBB, 0x201C, 0x201D, 0x201E, 0x2018, 0x2019]

    /// Whether the text quotes something: a quotation mark that is not an apostrophe inside a
    /// word (a letter on both sides). Only the bytes that can begin a quotation mark (`'`, `"`,
    /// and the lead bytes of «», “”„‘’) are looked at closely.
    public static func hasQuotation(_ text: NormalizedText) -> Bool {
        text.loweredBytes.withUnsafeBufferPointer { bytes in
            func scalar(at index: Int) -> (value: UInt32, length: Int) { NormalizedText.scalar(in: bytes, at: index) }
            for index in bytes.indices {
                let byte = bytes[index]
                guard byte == 0x27 || byte == 0x22 || byte == 0xC2 || byte == 0xE2 else { continue }
                let (value, length) = scalar(at: index)
                guard quoteScalars.contains(value) else { continue }
                // The scalar before: back over continuation bytes to its first byte.
                var previousStart = index - 1
                while previousStart > 0 && bytes[previousStart] & 0xC0 == 0x80 { previousStart -= 1 }
                let letterBefore = previousStart >= 0 && NormalizedText.isLetter(scalar(at: previousStart).value)
                let letterAfter = index + length < bytes.count && NormalizedText.isLetter(scalar(at: index + length).value)
                if !(letterBefore && letterAfter) { return true }
            }
            return false
        }
    }

    /// Compiles the shared rules now (once per process), not on the first request.
    public init() {
        _ = BuiltInPhrases.compiled
    }

    /// Reversible disguises of a text that the rules read through.
    enum Transform: String {
        case reversed, rot13

        func apply(to text: String) -> String {
            switch self {
            case .reversed:
                var scalars = String.UnicodeScalarView()
                scalars.append(contentsOf: text.unicodeScalars.reversed())
                return String(scalars)
            case .rot13:
                var bytes = Array(text.utf8)
                for index in bytes.indices {
                    let byte = bytes[index]
                    if byte >= 0x61 && byte <= 0x7A { bytes[index] = (byte - 0x61 + 13) % 26 + 0x61 }
                    if byte >= 0x41 && byte <= 0x5A { bytes[index] = (byte - 0x41 + 13) % 26 + 0x41 }
                }
                return String(decoding: bytes, as: UTF8.self)
            }
        }
    }

    /// Words of the attacks' vocabulary as each disguise writes them (lower case). Few, and
    /// each with a byte rare in ordinary text ('z', 'q', 'j', 'k', 'p'), so that looking for
    /// them in a long prompt costs little.
    static let transformCues: [(Transform, [[UInt8]])] = [
        (.reversed, ["erongi", "tpmorp", "snoitcurtsni", "kaerbliaj", "йуриронги"].map { Array($0.utf8) }),
        (.rot13, ["vtaber", "flfgrz", "cebzcg", "qvfertneq", "wnvyoernx"].map { Array($0.utf8) }),
    ]

    public func inspect(_ input: GuardInput) async -> [GuardFinding] {
        input.findingsInUntrusted { inspect($0, segment: $1) }
    }

    /// Findings on one normalised text.
    public func inspect(_ text: NormalizedText, segment: Int? = nil) -> [GuardFinding] {
        var findings = phraseFindings(text, segment: segment)
        if !findings.isEmpty, Self.hasQuotation(text), Self.discussionWordBytes.contains(where: text.contains) {
            for index in findings.indices where findings[index].risk < .critical {
                findings[index].risk = RiskLevel(rawValue: findings[index].risk.rawValue - 1) ?? .low
                findings[index].reason += ", quoted in a discussion"
            }
        }
        for (marker, reason) in Self.roleMarkerBytes where text.contains(marker) {
            findings.append(GuardFinding(guardName: name, category: .promptInjection, risk: .high, score: 0.85,
                                         reason: "\(reason) in untrusted text", segment: segment))
            break
        }
        if text.bidiControls > 0 {
            findings.append(GuardFinding(guardName: name, category: .encoding, risk: .medium, score: 0.6,
                                         reason: "bidirectional control characters", segment: segment))
        }
        if text.invisibleCharacters >= 3 {
            findings.append(GuardFinding(guardName: name, category: .encoding, risk: .low, score: 0.4,
                                         reason: "invisible characters", segment: segment))
        }
        if text.mixedScriptWords >= 2 {
            findings.append(GuardFinding(guardName: name, category: .encoding, risk: .low, score: 0.4,
                                         reason: "words mixing Latin with Cyrillic or Greek look-alikes", segment: segment))
        }
        let obfuscated = text.invisibleCharacters > 0 || text.mixedScriptWords > 0
        for blob in text.decodedBlobs {
            let inner = NormalizedText(blob)
            for finding in phraseFindings(inner, segment: segment) where finding.category != .encoding {
                var raised = finding
                raised.risk = .critical
                raised.reason = "encoded: " + finding.reason
                findings.append(raised)
            }
        }
        // Text written backwards or in rot13 is read again decoded, when a word of the attacks'
        // vocabulary shows it is (the cue keeps the second walk off ordinary text).
        for (transform, cues) in Self.transformCues where cues.contains(where: text.contains) {
            let decoded = NormalizedText(transform.apply(to: text.lowered))
            for finding in phraseFindings(decoded, segment: segment) where finding.category != .encoding {
                var raised = finding
                raised.risk = .critical
                raised.reason = "\(transform.rawValue): " + finding.reason
                findings.append(raised)
            }
        }
        // Rules found through obfuscation are more certain, not less.
        if obfuscated {
            for index in findings.indices where findings[index].category != .encoding && findings[index].risk < .critical {
                findings[index].risk = RiskLevel(rawValue: findings[index].risk.rawValue + 1) ?? .critical
            }
        }
        return findings
    }

    private func phraseFindings(_ text: NormalizedText, segment: Int?) -> [GuardFinding] {
        var findings: [GuardFinding] = []
        var seen: Set<String> = []
        let rules = rules
        for match in text.builtInPhraseMatches where match.phraseID < rules.count {
            let rule = rules[match.phraseID]
            let reason = "\(rule.category.rawValue) rule \(rule.name)"
            guard seen.insert(reason).inserted else { continue }
            findings.append(GuardFinding(guardName: name, category: rule.category, risk: rule.risk, score: rule.score, reason: reason,
                                         segment: segment))
        }
        // Two different medium rules of the attack families together are a high-risk finding.
        let mediums = findings.filter { $0.risk == .medium }
        if mediums.count >= 2, !findings.contains(where: { $0.risk >= .high }) {
            findings.append(GuardFinding(guardName: name, category: mediums[0].category, risk: .high, score: 0.8,
                                         reason: "several attack patterns together", segment: segment))
        }
        return findings
    }
}
