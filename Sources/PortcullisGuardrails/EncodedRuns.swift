import Foundation

extension NormalizedText {
    // MARK: blobs

    /// Base64 (standard or URL-safe) runs of 16+ characters and hex runs of 16+ digits that
    /// decode to mostly printable UTF-8.
    static func decodeBlobs(in text: String) -> [String] {
        var blobs: [String] = []
        var text = text
        text.withUTF8 { bytes in
            var start = 0
            var index = 0
            while index < bytes.count {
                guard isBlobByte[Int(bytes[index])] else {
                    if index - start >= 16, blobs.count < 16 {
                        let run = Array(bytes[start..<index])
                        if let decoded = decodeHex(run) ?? decodeBase64(run), isMostlyText(decoded) { blobs.append(decoded) }
                    }
                    index += 1
                    start = index
                    continue
                }
                index += 1
            }
            if bytes.count - start >= 16, blobs.count < 16 {
                let run = Array(bytes[start...])
                if let decoded = decodeHex(run) ?? decodeBase64(run), isMostlyText(decoded) { blobs.append(decoded) }
            }
        }
        return blobs
    }

    /// The bytes of base64 (standard and URL-safe, with padding) and hex runs.
    private static let isBlobByte: [Bool] = (0..<256).map { byte in
        switch UInt8(byte) {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "="): true
        default: false
        }
    }

    private static func decodeHex(_ run: [UInt8]) -> String? {
        guard run.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(run.count / 2)
        var high: UInt8?
        for byte in run {
            let value: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let pending = high {
                bytes.append(pending << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// Standard or URL-safe base64 (padding optional). A run that is a plain word — letters
    /// only and shorter than 24 — is not tried.
    private static func decodeBase64(_ run: [UInt8]) -> String? {
        let hasUpper = run.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }
        let hasLower = run.contains { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }
        let hasOther = run.contains { !(($0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z"))) }
        guard hasUpper && hasLower && (hasOther || run.count >= 24) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(run.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in run {
            let value: UInt32
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(byte - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(byte - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(byte - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"), UInt8(ascii: "-"): value = 62
            case UInt8(ascii: "/"), UInt8(ascii: "_"): value = 63
            case UInt8(ascii: "="): continue
            default: return nil
            }
            accumulator = accumulator << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8((accumulator >> UInt32(bits)) & 0xFF))
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func isMostlyText(_ text: String) -> Bool {
        var printable = 0
        var total = 0
        for scalar in text.unicodeScalars {
            total += 1
            if scalar.properties.isAlphabetic || scalar == " " || scalar.properties.generalCategory == .otherPunctuation
                || (scalar.value >= 0x20 && scalar.value < 0x7F) {
                printable += 1
            }
        }
        return total >= 8 && printable * 10 >= total * 9
    }
}

/// The built-in injection rules and moderation lexicon, compiled together once.
enum BuiltInPhrases {
    static let compiled = PhraseMatcher.compile(InjectionRuleSet.rules, ModerationGuard.rules)
}
