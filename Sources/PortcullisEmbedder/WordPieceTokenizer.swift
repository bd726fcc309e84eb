import Foundation

/// BERT's uncased tokenizer as all-MiniLM-L6-v2 was trained with: the text is cleaned (control
/// characters dropped, every kind of whitespace made a space), CJK ideographs are set apart,
/// accents are stripped (canonical decomposition without its non-spacing marks) and letters
/// lower-cased; then it is split at whitespace and around each punctuation character, and
/// each word is cut into the longest vocabulary pieces from its start (`##` marking a
/// continuation), or is `[UNK]` when it cannot be.
public struct WordPieceTokenizer: Sendable {
    let vocabulary: [String: Int32]
    public let classifier: Int32
    public let separator: Int32
    public let unknown: Int32
    /// Longer words are `[UNK]` whole.
    static let longestWord = 100

    /// - Parameter vocabulary: the lines of `vocab.txt`, one piece per line; a piece's id is its line number from 0.
    public init(vocabulary lines: [Substring]) throws {
        var vocabulary: [String: Int32] = [:]
        vocabulary.reserveCapacity(lines.count)
        for (index, line) in lines.enumerated() where !line.isEmpty && vocabulary[String(line)] == nil {
            vocabulary[String(line)] = Int32(index)
        }
        guard let classifier = vocabulary["[CLS]"], let separator = vocabulary["[SEP]"], let unknown = vocabulary["[UNK]"] else {
            throw EmbedderError.invalidModel("the vocabulary has no [CLS], [SEP] or [UNK]")
        }
        self.vocabulary = vocabulary
        self.classifier = classifier
        self.separator = separator
        self.unknown = unknown
    }

    public init(contentsOf url: URL) throws {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw EmbedderError.missingModel(url.path) }
        try self.init(vocabulary: text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 })
    }

    /// The ids of `text`: `[CLS]`, at most `limit - 2` pieces, `[SEP]`.
    public func encode(_ text: String, limit: Int = 256) -> [Int32] {
        var ids: [Int32] = [classifier]
        let room = max(0, limit - 2)
        words: for word in Self.words(of: Self.normalized(text)) {
            for id in pieces(of: word) {
                guard ids.count - 1 < room else { break words }
                ids.append(id)
            }
        }
        ids.append(separator)
        return ids
    }

    /// The vocabulary pieces of one word, or `[UNK]`.
    func pieces(of word: [Unicode.Scalar]) -> [Int32] {
        guard word.count <= Self.longestWord else { return [unknown] }
        var result: [Int32] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int32?
            while start < end {
                var candidate = start > 0 ? "##" : ""
                candidate.unicodeScalars.append(contentsOf: word[start..<end])
                if let id = vocabulary[candidate] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let found else { return [unknown] }
            result.append(found)
            start = end
        }
        return result
    }

    /// The cleaned, accent-stripped, lower-cased text, CJK ideographs spaced apart.
    static func normalized(_ text: String) -> String {
        var cleaned = String.UnicodeScalarView()
        var ascii = true
        for scalar in text.unicodeScalars {
            if scalar.value == 0 || scalar.value == 0xFFFD || isControl(scalar) { continue }
            if isWhitespace(scalar) {
                cleaned.append(" ")
            } else if isIdeograph(scalar) {
                cleaned.append(" ")
                cleaned.append(scalar)
                cleaned.append(" ")
                ascii = false
            } else {
                cleaned.append(scalar)
                if !scalar.isASCII { ascii = false }
            }
        }
        let string = String(cleaned)
        if ascii { return string.lowercased() }
        var stripped = String.UnicodeScalarView()
        for scalar in string.decomposedStringWithCanonicalMapping.unicodeScalars where scalar.properties.generalCategory != .nonspacingMark {
            stripped.append(scalar)
        }
        return String(stripped).lowercased()
    }

    /// Words split at whitespace, each punctuation character a word of its own.
    static func words(of text: String) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        for scalar in text.unicodeScalars {
            if scalar.properties.isWhitespace {
                if !current.isEmpty { words.append(current); current = [] }
            } else if isPunctuation(scalar) {
                if !current.isEmpty { words.append(current); current = [] }
                words.append([scalar])
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" || scalar.properties.isWhitespace
    }

    /// Control and other invisible characters (tab, newline and carriage return count as whitespace instead).
    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == "\t" || scalar == "\n" || scalar == "\r" { return false }
        switch scalar.properties.generalCategory {
        case .control, .format, .unassigned, .privateUse, .surrogate: return true
        default: return false
        }
    }

    /// ASCII punctuation and symbols (`$`, `+`, `<`, `^`, `|`, …) and every Unicode punctuation category.
    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if (33...47).contains(value) || (58...64).contains(value) || (91...96).contains(value) || (123...126).contains(value) { return true }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    /// The CJK ideograph blocks BERT sets apart.
    static func isIdeograph(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F, 0x2B820...0x2CEAF, 0xF900...0xFAFF,
             0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }
}
