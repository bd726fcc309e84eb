import Foundation

extension NormalizedText {
    // MARK: case and letters, fast for the scripts the rules read

    /// The scalar whose UTF-8 starts at `index` of valid UTF-8 (a String's), and its length in
    /// bytes: the lead byte says how many continuation bytes follow.
    @inline(__always)
    static func scalar(in utf8: UnsafeBufferPointer<UInt8>, at index: Int) -> (value: UInt32, length: Int) {
        let byte = utf8[index]
        var value: UInt32
        var length: Int
        switch byte {
        case 0..<0x80: return (UInt32(byte), 1)
        case 0xC0..<0xE0: (value, length) = (UInt32(byte & 0x1F), 2)
        case 0xE0..<0xF0: (value, length) = (UInt32(byte & 0x0F), 3)
        default: (value, length) = (UInt32(byte & 0x07), 4)
        }
        for offset in 1..<length { value = value << 6 | UInt32(utf8[index + offset] & 0x3F) }
        return (value, length)
    }

    /// Whether NFKC may change `value` or the scalar before it: ranges known to be stable
    /// (ASCII, Latin, Greek, Cyrillic, Hebrew and Arabic letters, CJK, kana, Hangul syllables,
    /// dashes and quotes) answer at once; anything else by its Unicode properties. Invisible
    /// and bidi controls are not asked about: the scan drops them itself.
    @inline(__always)
    public static func mayNeedCompatibilityMapping(_ value: UInt32) -> Bool {
        switch value {
        case 0x00...0x7F, 0xA1...0xA7, 0xA9, 0xAB, 0xAC, 0xAE, 0xB0, 0xB1, 0xB6, 0xB7, 0xBB, 0xBF,
             0xC0...0x131, 0x134...0x13E, 0x141...0x148, 0x14A...0x17E, 0x180...0x1C3, 0x1CD...0x1F0, 0x1F4...0x24F,
             0x386, 0x388...0x3CE, 0x400...0x52F, 0x5D0...0x5EA, 0x621...0x64A,
             0x2010, 0x2012...0x2016, 0x2018...0x2023, 0x3041...0x3096, 0x30A1...0x30FA, 0x4E00...0x9FFF, 0xAC00...0xD7A3:
            false
        case 0x200B...0x200F, 0x2060...0x2064, 0xFEFF, 0x00AD, 0x180E, 0x034F, 0x202A...0x202E, 0x2066...0x2069, 0x061C:
            false
        default:
            changesUnderCompatibilityNormalization(value)
        }
    }

    /// Whether NFKC changes `value`, or may join it to the scalar before: it folds under
    /// NFKC_Casefold (which includes NFKC), it is a combining mark, or it is one of the starters
    /// that canonical composition joins to what precedes them (Hangul vowel and final jamo, a
    /// few Indic vowel signs).
    static func changesUnderCompatibilityNormalization(_ value: UInt32) -> Bool {
        guard let scalar = Unicode.Scalar(value) else { return false }
        let properties = scalar.properties
        return properties.changesWhenNFKCCaseFolded || properties.canonicalCombiningClass != .notReordered
            || (0x1161...0x11C2).contains(value) || composingStarters.contains(value)
    }

    /// Starters (combining class 0) that canonical composition joins to the scalar before them,
    /// besides the Hangul jamo.
    private static let composingStarters: Set<UInt32> = [
        0x9BE, 0x9D7, 0xB3E, 0xB56, 0xB57, 0xBBE, 0xBD7, 0xCC2, 0xCD5, 0xCD6, 0xD3E, 0xD57, 0xDCF, 0xDDF, 0x102E, 0x1B35,
        0x11127, 0x1133E, 0x11357, 0x114B0, 0x114BA, 0x114BD, 0x115AF, 0x11930,
    ]

    /// `text` with NFKC applied to each stretch of non-ASCII scalars that holds a scalar NFKC
    /// may change, together with the ASCII character before it (which a combining mark may
    /// join). NFKC never joins anything to a following ASCII character, so a text cut before
    /// ASCII characters normalises piece by piece to the same result as whole, and the rest of
    /// the text is copied as it is.
    public static func compatibilityNormalized(_ text: String) -> String {
        var text = text
        return text.withUTF8 { utf8 in
            var output: [UInt8] = []
            output.reserveCapacity(utf8.count + 16)
            var copied = 0
            var index = 0
            while index < utf8.count {
                guard utf8[index] >= 0x80 else {
                    index += 1
                    continue
                }
                let runStart = index
                var changes = false
                while index < utf8.count && utf8[index] >= 0x80 {
                    let (value, length) = scalar(in: utf8, at: index)
                    if !changes && mayNeedCompatibilityMapping(value) { changes = true }
                    index += length
                }
                guard changes else { continue }
                let pieceStart = runStart > copied ? runStart - 1 : runStart
                output.append(contentsOf: utf8[copied..<pieceStart])
                let piece = String(decoding: UnsafeBufferPointer(rebasing: utf8[pieceStart..<index]), as: UTF8.self)
                output.append(contentsOf: piece.precomposedStringWithCompatibilityMapping.utf8)
                copied = index
            }
            output.append(contentsOf: utf8[copied...])
            return String(decoding: output, as: UTF8.self)
        }
    }

    /// The lower-case of `value` for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic
    /// capitals (and the value itself for their small letters and other characters of those
    /// blocks); nil where Unicode's full mapping is needed.
    @inline(__always)
    static func fastLowercase(_ value: UInt32) -> UInt32? {
        switch value {
        case 0x41...0x5A, 0xC0...0xD6, 0xD8...0xDE, 0x391...0x3A1, 0x3A3...0x3AB, 0x410...0x42F: value + 0x20
        case 0x400...0x40F: value + 0x50
        case 0x100...0x137, 0x14A...0x177, 0x460...0x481, 0x48A...0x4BF, 0x4D0...0x52F: value | 1
        case 0x00...0x40, 0x5B...0xBF, 0xDF...0xFF, 0x3AC...0x3CE, 0x430...0x45F, 0x2010...0x2027: value
        default: nil
        }
    }

    /// Whether `value` is a letter; range checks for the common scripts, Unicode properties otherwise.
    @inline(__always)
    static func isLetter(_ value: UInt32) -> Bool {
        switch value {
        case 0x61...0x7A, 0x41...0x5A, 0xC0...0xD6, 0xD8...0xF6, 0xF8...0x24F, 0x386...0x3CE, 0x400...0x481, 0x48A...0x52F: true
        case 0x00...0xBF, 0x2000...0x206F: false
        default: Unicode.Scalar(value)?.properties.isAlphabetic ?? false
        }
    }
}
