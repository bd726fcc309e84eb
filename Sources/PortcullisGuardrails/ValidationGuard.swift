/// A fast token count without a vocabulary: BPE vocabularies of current models spend about
/// one token per Latin word of up to 7 letters and one more per 6 letters beyond, one per
/// 2–3 letters of Cyrillic, Greek and other alphabetic scripts, one per CJK character, one
/// per 3 digits and one per punctuation mark or symbol; whitespace joins the token after it.
/// Within about ±15% of cl100k/o200k counts on ordinary prose, and never far below on
/// adversarial text (a run of symbols counts one token each).
public enum TokenEstimate {
    /// Per byte: 1 for an ASCII letter, 2 for a digit, 0 for anything else (non-ASCII bytes too).
    private static let asciiKinds: [UInt8] = (0..<256).map { byte in
        switch byte {
        case 0x41...0x5A, 0x61...0x7A: 1
        case 0x30...0x39: 2
        default: 0
        }
    }

    public static func count(_ text: String) -> Int {
        let asciiKinds = Self.asciiKinds
        var tokens = 0
        var run = 0
        var runKind = 0   // 1 ASCII letters, 2 digits, 3 other letters
        @inline(__always) func close() {
            switch runKind {
            case 1: tokens += run <= 7 ? 1 : 1 + (run - 2) / 6
            case 2: tokens += (run + 2) / 3
            case 3: tokens += max(1, (run + 2) / 3)
            default: break
            }
            run = 0
            runKind = 0
        }
        var text = text
        text.withUTF8 { utf8 in
            var index = 0
            while index < utf8.count {
                let byte = utf8[index]
                // ASCII letters and digits a run at a time in one tight loop; anything else a
                // scalar at a time.
                if byte < 0x80 {
                    let kind = Int(asciiKinds[Int(byte)])
                    if kind != 0 {
                        if kind != runKind { close() }
                        runKind = kind
                        var end = index + 1
                        while end < utf8.count && asciiKinds[Int(utf8[end])] == kind { end += 1 }
                        run += end - index
                        index = end
                        continue
                    }
                }
                let (value, length) = NormalizedText.scalar(in: utf8, at: index)
                index += length
                let kind: Int
                if (value >= 0x61 && value <= 0x7A) || (value >= 0x41 && value <= 0x5A) {
                    kind = 1
                } else if value >= 0x30 && value <= 0x39 {
                    kind = 2
                } else if value < 0x80 {
                    close()
                    if value > 0x20 { tokens += 1 }   // punctuation and symbols; whitespace joins the next token
                    continue
                } else if (value >= 0x4E00 && value <= 0x9FFF) || (value >= 0x3040 && value <= 0x30FF) || (value >= 0xAC00 && value <= 0xD7AF) {
                    close()
                    tokens += 1
                    continue
                } else if NormalizedText.isLetter(value) {
                    kind = 3
                } else {
                    close()
                    if !(value == 0xA0 || (value >= 0x2000 && value <= 0x200B) || value == 0x3000 || value == 0x202F) { tokens += 1 }
                    continue
                }
                if kind != runKind { close() }
                runKind = kind
                run += 1
            }
        }
        close()
        return tokens
    }
}

/// Limits on the shape of the input: estimated tokens, messages, characters per message.
/// Its findings are limits, not judgements: they block whatever the policy's risk actions say.
public struct ValidationGuard: InputGuard {
    public let name = "validation"
    public let tier = GuardTier.validation
    public let maximumTokens: Int
    public let maximumMessages: Int
    public let maximumMessageCharacters: Int
    /// Counts tokens when configured; the estimate otherwise.
    public let tokenizer: BPETokenizer?

    public init(maximumTokens: Int = 4096, maximumMessages: Int = 256, maximumMessageCharacters: Int = 100_000, tokenizer: BPETokenizer? = nil) {
        self.tokenizer = tokenizer
        self.maximumTokens = maximumTokens
        self.maximumMessages = maximumMessages
        self.maximumMessageCharacters = maximumMessageCharacters
    }

    public func inspect(_ input: GuardInput) async -> [GuardFinding] {
        var findings: [GuardFinding] = []
        let messages = Set(input.segments.compactMap(\.messageIndex)).count
        if messages > maximumMessages {
            findings.append(GuardFinding(guardName: name, category: .invalidInput, risk: .high, score: 1,
                                         reason: "\(messages) messages, more than the \(maximumMessages) allowed"))
        }
        var tokens = 0
        for (index, segment) in input.segments.enumerated() {
            // UTF-8 length bounds the character count from above; count characters only past it.
            let characters = segment.text.utf8.count > maximumMessageCharacters ? segment.text.unicodeScalars.count : 0
            if characters > maximumMessageCharacters {
                findings.append(GuardFinding(guardName: name, category: .invalidInput, risk: .high, score: 1,
                                             reason: "a message of \(characters) characters, more than the \(maximumMessageCharacters) allowed",
                                             segment: index))
            }
            tokens += tokenizer?.count(segment.text) ?? TokenEstimate.count(segment.text)
        }
        if tokens > maximumTokens {
            findings.append(GuardFinding(guardName: name, category: .invalidInput, risk: .high, score: 1,
                                         reason: "\(tokenizer == nil ? "about " : "")\(tokens) input tokens, more than the \(maximumTokens) allowed"))
        }
        return findings
    }
}
