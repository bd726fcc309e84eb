import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A text as the detectors read it, prepared once per segment:
///
/// 1. invisible characters (zero-width, soft hyphen, word joiners, BOM) and bidirectional
///    controls are removed and counted;
/// 2. NFKC normalisation (full-width letters, ligatures, circled and styled letters become plain);
/// 3. lower case;
/// 4. words that mix Latin with Cyrillic or Greek letters have the look-alikes folded to one
///    script: to Latin ("іgnоre" with Cyrillic і and о reads "ignore"), or to Cyrillic when the
///    word holds a Cyrillic letter no Latin one imitates, or when the word could be either and
///    the text is mostly Cyrillic ("oтвeчaй" with Latin o, e, a reads "отвечай"); words in one
///    script are left alone, so Russian stays Russian;
/// 5. digits and `@`/`$` inside words are read as the letters they imitate, Latin ones in Latin
///    words ("1gn0re" → "ignore") and Cyrillic ones in Cyrillic words ("пр0мпт" → "промпт",
///    "б3з" → "без", "3абудь" → "забудь");
/// 6. letters spelled out one by one ("i g n o r e", "i.g.n.o.r.e", "с-и-с-т-е-м-а") are
///    joined, and a separator other than the run's usual one ends a word;
/// 7. base64 and hex runs that decode to text are decoded, so the guards can read them too.
public struct NormalizedText: Sendable, Equatable {
    /// Lower-cased, NFKC-normalised text without invisible characters (punctuation kept).
    public var lowered: String { String(decoding: loweredBytes, as: UTF8.self) }
    /// The words of `lowered` after look-alike, digit and spelling folds, as spans of `wordBytes`.
    public let wordRanges: [Range<Int>]
    /// The bytes the word spans point into.
    public let wordBytes: [UInt8]
    /// The words as strings (tests and tools; the detectors read the spans).
    public var words: [String] { wordRanges.map { String(decoding: wordBytes[$0], as: UTF8.self) } }
    /// Invisible characters removed.
    public let invisibleCharacters: Int
    /// Bidirectional control characters removed.
    public let bidiControls: Int
    /// Words that mixed Latin with Cyrillic or Greek letters.
    public let mixedScriptWords: Int
    /// Texts decoded from base64 or hex runs (printable UTF-8 only).
    public let decodedBlobs: [String]

    /// `lowered` as UTF-8 bytes, for marker searches.
    public let loweredBytes: [UInt8]

    /// An empty view (for text the guards do not read).
    public static let empty = NormalizedText("")

    /// The built-in phrase rules' matches in `words`, found on first use and kept: the
    /// injection rules and the moderation lexicon share one trie and one walk over the words.
    var builtInPhraseMatches: [PhraseMatcher.Match] {
        memo.matches.withLock { matches in
            if let matches { return matches }
            let found = BuiltInPhrases.compiled.matcher.matches(in: wordBytes, words: wordRanges)
            matches = found
            return found
        }
    }

    private let memo = Memo()

    /// What the guards work out once per text (a reference, so copies of the text share it).
    private final class Memo: Sendable {
        let matches = Mutex<[PhraseMatcher.Match]?>(nil)
    }

    /// Equal when what the guards read is equal; the memo of work done on it is not compared.
    public static func == (left: NormalizedText, right: NormalizedText) -> Bool {
        left.wordRanges == right.wordRanges && left.wordBytes == right.wordBytes && left.invisibleCharacters == right.invisibleCharacters
            && left.bidiControls == right.bidiControls && left.mixedScriptWords == right.mixedScriptWords
            && left.decodedBlobs == right.decodedBlobs && left.loweredBytes == right.loweredBytes
    }

    public init(_ text: String) {
        // NFKC only when something it changes is present: the scan stops at the first scalar
        // NFKC may change, and starts again on a text in which only the stretches holding such
        // scalars were normalised.
        var source = text
        var scan = Scan()
        if !scan.run(source, stoppingForCompatibility: true) {
            source = Self.compatibilityNormalized(text)
            scan = Scan()
            scan.run(source, stoppingForCompatibility: false)
        }
        scan.finish()
        invisibleCharacters = scan.invisible
        bidiControls = scan.bidi
        mixedScriptWords = scan.mixedScriptWords
        if scan.hasSpelledOutRun { Self.joinSpelledOut(&scan) }
        loweredBytes = scan.lowered
        // Without folded words the word bytes are `lowered` itself (shared storage, no copy).
        wordBytes = scan.folds.isEmpty ? scan.lowered : scan.lowered + scan.folds
        wordRanges = scan.words
        decodedBlobs = Self.decodeBlobs(in: source)
    }

    /// One pass over the scalars: drops invisible and bidi characters, lower-cases into UTF-8
    /// bytes, and cuts words (with look-alike and digit folds) as it goes.
    private struct Scan {
        var lowered: [UInt8] = []
        /// Word spans; unfolded words point into `lowered`'s copy at the start of `wordBytes`,
        /// folded ones into bytes appended after it.
        var words: [Range<Int>] = []
        var folds: [UInt8] = []
        var invisible = 0
        var bidi = 0
        var mixedScriptWords = 0
        /// Whether four or more one-letter words came in a row ("i g n o r e"): only then is
        /// there anything to join.
        var hasSpelledOutRun = false
        /// Letters of the text's one-script words by script: a word mixing scripts that could be
        /// read in either is read in the script of the words around it.
        private var latinLetters = 0
        private var cyrillicLetters = 0
        private var wordLatinLetters = 0
        private var wordCyrillicLetters = 0
        /// Words mixing scripts, folded at the end, when the text's script is known.
        private var mixedWords: [(index: Int, range: Range<Int>)] = []
        private var singleLetterRun = 0
        // The word being read.
        private var wordStart = -1
        private var latin = false
        private var greekOrCyrillic = false
        private var cyrillic = false
        private var hasLetter = false
        private var hasLeet = false

        /// Reads `text`; false (and a partial scan) when `stoppingForCompatibility` and a scalar
        /// NFKC may change was met.
        @discardableResult
        mutating func run(_ text: String, stoppingForCompatibility: Bool) -> Bool {
            lowered.reserveCapacity(text.utf8.count + 16)
            words.reserveCapacity(text.utf8.count / 5)
            // ASCII bytes (most of most prompts) are taken straight from the UTF-8; anything else
            // as a scalar.
            var text = text
            return text.withUTF8 { utf8 in
                var index = 0
                while index < utf8.count {
                    let byte = utf8[index]
                    guard byte >= 0x80 else {
                        takeASCII(byte)
                        index += 1
                        continue
                    }
                    let (value, length) = NormalizedText.scalar(in: utf8, at: index)
                    if stoppingForCompatibility && NormalizedText.mayNeedCompatibilityMapping(value) { return false }
                    takeScalar(value)
                    index += length
                }
                return true
            }
        }

        /// Ends the last word and points folded words past `lowered`.
        mutating func finish() {
            finishWord()
            if !mixedWords.isEmpty { foldMixedWords() }
            if !folds.isEmpty { resolveFolds() }
        }

        /// An ASCII byte: lower-cased, cut into words as `take` does.
        @inline(__always)
        private mutating func takeASCII(_ byte: UInt8) {
            let lower = byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte
            switch lower {
            case 0x61...0x7A:
                if wordStart < 0 { wordStart = lowered.count }
                hasLetter = true
                latin = true
                wordLatinLetters += 1
            case 0x30...0x39, 0x40, 0x24:
                if wordStart < 0 { wordStart = lowered.count }
                hasLeet = true
            case 0x27:
                if wordStart < 0 { wordStart = lowered.count }
            default:
                if wordStart >= 0 { finishWord() }
            }
            lowered.append(lower)
        }

        /// A scalar beyond ASCII: invisible and bidi controls dropped and counted, the rest lower-cased.
        private mutating func takeScalar(_ value: UInt32) {
            switch value {
            case 0x200B...0x200D, 0x2060...0x2064, 0xFEFF, 0x00AD, 0x180E, 0x034F:
                invisible += 1
                return
            case 0x202A...0x202E, 0x2066...0x2069, 0x200E, 0x200F, 0x061C:
                bidi += 1
                return
            default:
                break
            }
            if let lower = NormalizedText.fastLowercase(value) {
                take(lower)
            } else if let scalar = Unicode.Scalar(value) {
                for mapped in scalar.properties.lowercaseMapping.unicodeScalars { take(mapped.value) }
            }
        }

        /// `lowered` followed by the folded words' bytes (spans into folds are shifted past `lowered`).
        var wordBytes: [UInt8] { lowered + folds }

        @inline(__always)
        private mutating func take(_ value: UInt32) {
            let isLetter = NormalizedText.isLetter(value)
            let isDigit = value >= 0x30 && value <= 0x39
            if isLetter || isDigit || value == 0x40 || value == 0x24 || value == 0x27 {
                if wordStart < 0 { wordStart = lowered.count }
                if isLetter {
                    hasLetter = true
                    switch value {
                    case 0x61...0x7A, 0xDF...0x24F:
                        latin = true
                        wordLatinLetters += 1
                    case 0x400...0x52F:
                        greekOrCyrillic = true
                        cyrillic = true
                        wordCyrillicLetters += 1
                    case 0x370...0x3FF: greekOrCyrillic = true
                    default: break
                    }
                } else if value != 0x27 {
                    hasLeet = true
                }
            } else {
                finishWord()
            }
            append(value)
        }

        @inline(__always)
        private mutating func append(_ value: UInt32) {
            switch value {
            case 0..<0x80:
                lowered.append(UInt8(value))
            case 0x80..<0x800:
                lowered.append(UInt8(0xC0 | (value >> 6)))
                lowered.append(UInt8(0x80 | (value & 0x3F)))
            case 0x800..<0x10000:
                lowered.append(UInt8(0xE0 | (value >> 12)))
                lowered.append(UInt8(0x80 | ((value >> 6) & 0x3F)))
                lowered.append(UInt8(0x80 | (value & 0x3F)))
            default:
                lowered.append(UInt8(0xF0 | (value >> 18)))
                lowered.append(UInt8(0x80 | ((value >> 12) & 0x3F)))
                lowered.append(UInt8(0x80 | ((value >> 6) & 0x3F)))
                lowered.append(UInt8(0x80 | (value & 0x3F)))
            }
        }

        private mutating func finishWord() {
            defer {
                wordStart = -1
                latin = false
                greekOrCyrillic = false
                cyrillic = false
                hasLetter = false
                hasLeet = false
                wordLatinLetters = 0
                wordCyrillicLetters = 0
            }
            guard wordStart >= 0 else { return }
            // `@`, `$` and `'` at the edges are not part of the word ("$5", "me@", "'quoted'").
            var low = wordStart
            var high = lowered.count
            func isEdgeSymbol(_ byte: UInt8) -> Bool { byte == 0x40 || byte == 0x24 || byte == 0x27 }
            while low < high && isEdgeSymbol(lowered[low]) { low += 1 }
            while high > low && isEdgeSymbol(lowered[high - 1]) { high -= 1 }
            guard low < high else { return }
            if !(latin && greekOrCyrillic) {
                latinLetters += wordLatinLetters
                cyrillicLetters += wordCyrillicLetters
            }
            if latin && greekOrCyrillic {
                mixedScriptWords += 1
                mixedWords.append((words.count, low..<high))
                words.append(low..<high)   // replaced by its fold in `finish`
            } else if hasLetter && hasLeet {
                if cyrillic {
                    appendFold(NormalizedText.utf8(NormalizedText.cyrillicDigitsFolded(NormalizedText.scalars(lowered[low..<high]))))
                } else {
                    var folded = Array(lowered[low..<high])
                    NormalizedText.foldLatinDigits(&folded)
                    appendFold(folded)
                }
            } else {
                words.append(low..<high)
                if high - low == 1 || (high - low == 2 && lowered[low] & 0xE0 == 0xC0) {
                    singleLetterRun += 1
                    if singleLetterRun >= 4 { hasSpelledOutRun = true }
                    return
                }
            }
            singleLetterRun = 0
        }

        /// A folded word: its bytes go to `folds`, its span is marked (negative) until the end,
        /// when `lowered`'s length is known.
        mutating func appendFold(_ bytes: [UInt8]) {
            words.append(foldSpan(bytes))
        }

        private mutating func foldSpan(_ bytes: [UInt8]) -> Range<Int> {
            let start = folds.count
            folds.append(contentsOf: bytes)
            return -(start + 1)..<(-(start + 1) + bytes.count)
        }

        /// Folds each word that mixes scripts to one of them. A word's own letters decide when
        /// they can: a Cyrillic letter no Latin one imitates says Cyrillic, a Latin letter no
        /// lower-case Cyrillic one imitates ("h", "n", "r": only capitals or italics do) says
        /// Latin. A word with both or neither goes with the text: the script of its one-script
        /// words, or, when it has none, of the mixed words that decided; else Latin. Digits are
        /// then read in the chosen script.
        private mutating func foldMixedWords() {
            var own: [Bool?] = []
            own.reserveCapacity(mixedWords.count)
            var scalarsOfWords: [[UInt32]] = []
            scalarsOfWords.reserveCapacity(mixedWords.count)
            var votes = 0
            for (_, range) in mixedWords {
                let scalars = NormalizedText.scalars(lowered[range])
                let decided = NormalizedText.ownScriptIsCyrillic(scalars)
                if let decided { votes += decided ? 1 : -1 }
                own.append(decided)
                scalarsOfWords.append(scalars)
            }
            let textIsCyrillic = cyrillicLetters != latinLetters ? cyrillicLetters > latinLetters : votes > 0
            for (position, (index, _)) in mixedWords.enumerated() {
                let scalars = scalarsOfWords[position]
                let anyCyrillic = scalars.contains { $0 >= 0x400 && $0 <= 0x52F }
                words[index] = foldSpan(NormalizedText.folded(scalars, toCyrillic: own[position] ?? (anyCyrillic && textIsCyrillic)))
            }
        }

        /// Whether the text's one-script words are mostly Cyrillic.
        var oneScriptWordsAreCyrillic: Bool { cyrillicLetters > latinLetters }

        /// Makes the folded spans point past `lowered` in `wordBytes`.
        mutating func resolveFolds() {
            let offset = lowered.count
            for index in words.indices where words[index].lowerBound < 0 {
                let start = -words[index].lowerBound - 1
                words[index] = (offset + start)..<(offset + start + words[index].count)
            }
        }
    }

    /// Whether `lowered` contains `needle` (UTF-8 bytes).
    public func contains(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= loweredBytes.count else { return needle.isEmpty }
        // memchr finds candidates for the needle's least common byte, memcmp confirms (memmem is
        // not exposed to Swift here): anchoring on ":" or "<" rather than a common letter keeps
        // the candidates few.
        var anchor = 0
        for index in needle.indices where Self.byteFrequency[Int(needle[index])] < Self.byteFrequency[Int(needle[anchor])] { anchor = index }
        return loweredBytes.withUnsafeBytes { haystack in
            needle.withUnsafeBytes { pattern in
                guard let base = haystack.baseAddress, let first = pattern.baseAddress else { return false }
                // The anchor byte can sit from `anchor` to `last + anchor`.
                let last = haystack.count - pattern.count
                var offset = anchor
                while offset <= last + anchor {
                    guard let hit = memchr(base + offset, Int32(pattern[anchor]), last + anchor - offset + 1) else { return false }
                    let position = base.distance(to: UnsafeRawPointer(hit))
                    if memcmp(base + position - anchor, first, pattern.count) == 0 { return true }
                    offset = position + 1
                }
                return false
            }
        }
    }

    /// How common each byte is in lower-cased prose (English letter frequencies, spaces, and
    /// the lead and continuation bytes of Cyrillic); rough, for choosing a search anchor.
    static let byteFrequency: [UInt8] = (0..<256).map { byte in
        let letters: [Character: UInt8] = ["e": 90, "t": 80, "a": 75, "o": 74, "i": 70, "n": 69, "s": 63, "h": 60, "r": 59, "d": 42,
                                           "l": 40, "c": 28, "u": 27, "m": 24, "w": 23, "f": 22, "g": 20, "y": 19, "p": 19, "b": 15,
                                           "v": 10, "k": 8, "j": 2, "x": 2, "q": 1, "z": 1]
        switch byte {
        case 0x20, 0xD0, 0xD1: return 100
        case 0x80...0xBF: return 30
        case 0x2E, 0x2C: return 15
        case 0x0A: return 10
        case 0x30...0x39: return 5
        case 0x61...0x7A: return letters[Character(Unicode.Scalar(UInt8(byte)))] ?? 1
        default: return 1
        }
    }

    // MARK: words

    /// Cyrillic and Greek letters that look like Latin ones (lower case).
    static let confusables: [UInt32: Unicode.Scalar] = [
        0x430: "a", 0x435: "e", 0x43E: "o", 0x440: "p", 0x441: "c", 0x443: "y", 0x445: "x", 0x43A: "k", 0x43C: "m",
        0x442: "t", 0x432: "b", 0x43D: "h", 0x456: "i", 0x458: "j", 0x455: "s", 0x501: "d", 0x4CF: "l", 0x44C: "b",
        0x3B1: "a", 0x3BF: "o", 0x3C1: "p", 0x3B5: "e", 0x3B9: "i", 0x3BA: "k", 0x3BD: "v", 0x3C4: "t", 0x3C5: "u",
        0x3C7: "x", 0x3B2: "b", 0x3B7: "n",
    ]

    /// Latin letters that look like Cyrillic ones (lower case: the capitals' look-alikes too,
    /// "B" → "в", "H" → "н").
    static let latinToCyrillic: [UInt32: UInt32] = [
        0x61: 0x430, 0x62: 0x432, 0x63: 0x441, 0x65: 0x435, 0x68: 0x43D, 0x69: 0x438, 0x6B: 0x43A, 0x6D: 0x43C, 0x6E: 0x43F,
        0x6F: 0x43E, 0x70: 0x440, 0x72: 0x433, 0x74: 0x442, 0x75: 0x438, 0x78: 0x445, 0x79: 0x443, 0xEB: 0x451,
    ]

    /// What a word's own letters say of its script: nil when they do not decide (both kinds
    /// of telling letter, or neither), true for Cyrillic, false for Latin (and for a word with
    /// no Cyrillic letter).
    static func ownScriptIsCyrillic(_ scalars: [UInt32]) -> Bool? {
        var onlyCyrillic = false, onlyLatin = false, anyCyrillic = false
        for value in scalars {
            if value >= 0x400 && value <= 0x52F {
                anyCyrillic = true
                if confusables[value] == nil { onlyCyrillic = true }
            } else if (value >= 0x61 && value <= 0x7A) || (value >= 0xDF && value <= 0x24F) {
                if !latinLowercaseLookalikes.contains(value) { onlyLatin = true }
            }
        }
        guard anyCyrillic else { return false }
        return onlyCyrillic != onlyLatin ? onlyCyrillic : nil
    }

    /// A word's look-alikes folded to one script, then its digits read in it.
    static func folded(_ scalars: [UInt32], toCyrillic: Bool) -> [UInt8] {
        if toCyrillic {
            return utf8(cyrillicDigitsFolded(scalars.map { latinToCyrillic[$0] ?? $0 }))
        }
        var bytes = utf8(scalars.map { confusables[$0]?.value ?? $0 })
        foldLatinDigits(&bytes)
        return bytes
    }

    /// The Latin letters a lower-case Cyrillic letter imitates (а с е о р х у і ё): in a word
    /// mixing scripts, any other Latin letter ("h", "n", "r", which only capitals or italics
    /// imitate) says the word is Latin.
    static let latinLowercaseLookalikes: Set<UInt32> = [0x61, 0x63, 0x65, 0x6F, 0x70, 0x78, 0x79, 0x69, 0xEB]

    /// Digits and `@`/`$` in a Latin word as the letters they imitate ("1gn0re" → "ignore").
    static func foldLatinDigits(_ bytes: inout [UInt8]) {
        for index in bytes.indices {
            switch bytes[index] {
            case 0x30: bytes[index] = 0x6F   // 0 → o
            case 0x31: bytes[index] = 0x69   // 1 → i
            case 0x33: bytes[index] = 0x65   // 3 → e
            case 0x34, 0x40: bytes[index] = 0x61   // 4, @ → a
            case 0x35, 0x24: bytes[index] = 0x73   // 5, $ → s
            case 0x37: bytes[index] = 0x74   // 7 → t
            default: break
            }
        }
    }

    /// Digits and `@` in a Cyrillic word as the letters they imitate: 0 → о, 6 → б, 9 → я,
    /// 1 → и, @ → а; 4 → ч first in a word ("4то"), else а ("пр4вил4"); 3 → з first in a word or
    /// beside a vowel ("3абудь", "ра3решено"), е last or between consonants ("вс3", "сист3ма").
    static func cyrillicDigitsFolded(_ scalars: [UInt32]) -> [UInt32] {
        func isConsonant(_ value: UInt32) -> Bool {
            guard (value >= 0x430 && value <= 0x44F) || value == 0x451 else { return false }
            switch value {
            case 0x430, 0x435, 0x451, 0x438, 0x43E, 0x443, 0x44B, 0x44D, 0x44E, 0x44F: return false
            default: return true
            }
        }
        var out = scalars
        for index in out.indices {
            switch out[index] {
            case 0x30: out[index] = 0x43E
            case 0x36: out[index] = 0x431
            case 0x39: out[index] = 0x44F
            case 0x31: out[index] = 0x438
            case 0x40: out[index] = 0x430
            case 0x34: out[index] = index == 0 ? 0x447 : 0x430
            case 0x33:
                if index == 0 {
                    out[index] = 0x437
                } else if index == out.count - 1 || (isConsonant(out[index - 1]) && isConsonant(out[index + 1])) {
                    out[index] = 0x435
                } else {
                    out[index] = 0x437
                }
            default: break
            }
        }
        return out
    }

    static func scalars(_ bytes: ArraySlice<UInt8>) -> [UInt32] {
        String(decoding: bytes, as: UTF8.self).unicodeScalars.map(\.value)
    }

    static func utf8(_ scalars: [UInt32]) -> [UInt8] {
        var view = String.UnicodeScalarView()
        for value in scalars { if let scalar = Unicode.Scalar(value) { view.append(scalar) } }
        return Array(String(view).utf8)
    }

    /// Joins runs of four or more one-letter words ("i g n o r e" → "ignore").
    private static func joinSpelledOut(_ scan: inout Scan) {
        let bytes = scan.wordBytes
        // Digits count as letters here ("r 3 v 3 a l"); a spelled-out word is joined only when
        // it has more letters than digits ("А = 5, Б = 7" stays as it is).
        func isSingleLetter(_ range: Range<Int>) -> Bool {
            switch range.count {
            case 1:
                let byte = bytes[range.lowerBound]
                return isLetter(UInt32(byte)) || (byte >= 0x30 && byte <= 0x39)
            case 2:
                let lead = bytes[range.lowerBound]
                guard lead & 0xE0 == 0xC0 else { return false }
                return isLetter(UInt32(lead & 0x1F) << 6 | UInt32(bytes[range.lowerBound + 1] & 0x3F))
            default:
                return false   // three- and four-byte letters spelled out one by one are not looked for
            }
        }
        var result: [Range<Int>] = []
        result.reserveCapacity(scan.words.count)
        var run: [Range<Int>] = []
        var joined = false
        let loweredCount = scan.lowered.count
        func flush(_ scan: inout Scan) {
            if run.count >= 4 {
                // A gap between two letters unlike the run's usual one ("i g n o r e   a l l",
                // "с-и-с-т-е-м-н-ы-й п-р-о-м-п-т") is a word boundary: each spelled-out word
                // becomes a word of its own.
                func gap(_ position: Int) -> ArraySlice<UInt8> {
                    guard run[position].upperBound <= loweredCount, run[position - 1].upperBound <= loweredCount,
                          run[position - 1].upperBound <= run[position].lowerBound else { return [] }
                    return bytes[run[position - 1].upperBound..<run[position].lowerBound]
                }
                var counts: [ArraySlice<UInt8>: Int] = [:]
                for position in 1..<run.count { counts[gap(position), default: 0] += 1 }
                // The commonest gap; of two as common, the shorter, then the lower bytes (a fixed choice).
                let usual = counts.max { left, right in
                    if left.value != right.value { return left.value < right.value }
                    if left.key.count != right.key.count { return left.key.count > right.key.count }
                    return right.key.lexicographicallyPrecedes(left.key)
                }?.key ?? []
                var segment: [Range<Int>] = []
                func join(_ scan: inout Scan) {
                    defer { segment.removeAll(keepingCapacity: true) }
                    let digits = segment.count { $0.count == 1 && bytes[$0.lowerBound] >= 0x30 && bytes[$0.lowerBound] <= 0x39 }
                    guard segment.count >= 2, segment.count - digits > digits else {
                        result.append(contentsOf: segment)
                        return
                    }
                    var letters: [UInt8] = []
                    for range in segment { letters.append(contentsOf: bytes[range]) }
                    let scalars = NormalizedText.scalars(letters[...])
                    let latin = scalars.contains { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0xDF && $0 <= 0x24F) }
                    let cyrillic = scalars.contains { $0 >= 0x400 && $0 <= 0x52F }
                    let greek = scalars.contains { $0 >= 0x370 && $0 <= 0x3FF }
                    if latin && (cyrillic || greek) {
                        scan.appendFold(NormalizedText.folded(scalars, toCyrillic: NormalizedText.ownScriptIsCyrillic(scalars)
                                                                  ?? (cyrillic && scan.oneScriptWordsAreCyrillic)))
                    } else if digits > 0 {
                        scan.appendFold(NormalizedText.folded(scalars, toCyrillic: cyrillic))
                    } else {
                        scan.appendFold(letters)
                    }
                    result.append(scan.words.removeLast())
                    joined = true
                }
                for (position, range) in run.enumerated() {
                    if position > 0, !segment.isEmpty, !usual.isEmpty, gap(position) != usual, !gap(position).isEmpty { join(&scan) }
                    segment.append(range)
                }
                join(&scan)
            } else {
                result.append(contentsOf: run)
            }
            run.removeAll(keepingCapacity: true)
        }
        for range in scan.words {
            if range.count <= 2 && isSingleLetter(range) {
                run.append(range)
            } else {
                flush(&scan)
                result.append(range)
            }
        }
        flush(&scan)
        scan.words = result
        if joined { scan.resolveFolds() }
    }
}
