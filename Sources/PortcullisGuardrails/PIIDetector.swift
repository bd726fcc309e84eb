import Foundation
import PortcullisCore
#if canImport(Glibc)
import Glibc
#endif

/// Kinds of personal data and secrets the PII detector finds.
public enum PIIKind: String, Sendable, CaseIterable {
    case email, phone
    case paymentCard = "payment_card"
    case iban
    case ipAddress = "ip_address"
    case usSSN = "us_ssn"
    case russianINN = "ru_inn"
    case russianSNILS = "ru_snils"
    case russianOGRN = "ru_ogrn"
    case russianPassport = "ru_passport"
    case bankAccount = "bank_account"
    case secret

    /// Secrets are their own guard category; everything else is PII.
    public var category: GuardCategory { self == .secret ? .secret : .pii }
}

/// One identifier found in a text: where (UTF-8 offsets), of what kind, and why (the check it passed).
public struct PIIMatch: Sendable, Equatable {
    public var kind: PIIKind
    public var range: Range<Int>
    public var check: String
}

/// Finds personal identifiers and secrets with validators, not bare patterns: a card number
/// must pass Luhn, an IBAN mod-97, an INN, SNILS or OGRN its own check digits, an SSN the
/// issuing rules, a Russian passport a region code and form year, a Russian bank account its
/// check key against a BIK in the same text (or its balance-account and currency structure
/// next to the word "account"); numbers that fail their check are left alone.
public enum PIIDetector {
    /// Every identifier in `text`, in order, without overlaps (the first, longest wins).
    public static func find(in text: String) -> [PIIMatch] {
        let bytes = Array(text.utf8)
        var matches = find(bytes: bytes)
        // The same detectors read through disguises (no-break and zero-width spaces, line
        // breaks or dots between digit groups, full-width forms); spans map back to the text.
        guard let folded = FoldedText(bytes) else { return matches }
        for match in find(bytes: folded.bytes) {
            let range = folded.original(match.range)
            guard !matches.contains(where: { $0.range.overlaps(range) }) else { continue }
            matches.append(PIIMatch(kind: match.kind, range: range, check: match.check + ", disguised"))
        }
        matches.sort { $0.range.lowerBound < $1.range.lowerBound }
        return matches
    }

    static func find(bytes: [UInt8]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        matches += secrets(bytes)
        // A detector whose every match needs a byte the text lacks is not run (memchr is fast),
        // and those that need digits visit only where a run of digits starts.
        if contains(UInt8(ascii: "@"), in: bytes) { matches += emails(bytes) }
        let digitRuns = digitRunStarts(bytes)
        if !digitRuns.isEmpty {
            matches += numbers(bytes, digitRuns: digitRuns)
            matches += ibans(bytes, digitRuns: digitRuns)
            if contains(UInt8(ascii: "."), in: bytes) { matches += ipv4(bytes, digitRuns: digitRuns) }
        }
        if contains(UInt8(ascii: ":"), in: bytes) { matches += ipv6(bytes) }
        matches.sort { ($0.range.lowerBound, -$0.range.count) < ($1.range.lowerBound, -$1.range.count) }
        var kept: [PIIMatch] = []
        for match in matches where kept.last.map({ $0.range.upperBound <= match.range.lowerBound }) ?? true { kept.append(match) }
        return kept
    }

    // MARK: character classes

    static func contains(_ byte: UInt8, in bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in buffer.baseAddress.map { memchr($0, Int32(byte), buffer.count) != nil } ?? false }
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    /// Where each run of digits starts: every number, IBAN and IPv4 address has one at or just
    /// after its own start, so those detectors visit these places instead of every byte.
    static func digitRunStarts(_ bytes: [UInt8]) -> [Int] {
        var starts: [Int] = []
        bytes.withUnsafeBufferPointer { bytes in
            var previousWasDigit = false
            for index in bytes.indices {
                let isDigit = bytes[index] &- 0x30 < 10
                if isDigit && !previousWasDigit { starts.append(index) }
                previousWasDigit = isDigit
            }
        }
        return starts
    }
    static func isUpper(_ byte: UInt8) -> Bool { byte >= 0x41 && byte <= 0x5A }
    static func isLower(_ byte: UInt8) -> Bool { byte >= 0x61 && byte <= 0x7A }
    static func isAlphanumeric(_ byte: UInt8) -> Bool { isDigit(byte) || isUpper(byte) || isLower(byte) }
    /// Whether the byte before `index` does not continue a word (so a match starts cleanly).
    static func startsCleanly(_ bytes: [UInt8], _ index: Int) -> Bool { index == 0 || !isAlphanumeric(bytes[index - 1]) }
    static func endsCleanly(_ bytes: [UInt8], _ index: Int) -> Bool { index >= bytes.count || !isAlphanumeric(bytes[index]) }

    // MARK: numbers: cards, phones, SSN, INN, SNILS, OGRN

    /// Runs of digits joined by single spaces, dashes, dots or brackets (as people write
    /// numbers), each tried against the number kinds.
    ///
    /// A number starts at a digit that starts cleanly, or at the "+" or "(" just before one:
    /// `digitRuns` (from `digitRunStarts`) gives each place to try, and a place inside a number
    /// already read is skipped.
    static func numbers(_ bytes: [UInt8], digitRuns: [Int]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        var candidates: [Int] = []
        candidates.reserveCapacity(digitRuns.count + 4)
        for start in digitRuns {
            if start > 0 && (bytes[start - 1] == UInt8(ascii: "+") || bytes[start - 1] == UInt8(ascii: "(")) { candidates.append(start - 1) }
            candidates.append(start)
        }
        var index = 0
        for candidate in candidates where candidate >= index {
            index = candidate
            let plus = bytes[index] == UInt8(ascii: "+") && index + 1 < bytes.count && isDigit(bytes[index + 1])
            guard (isDigit(bytes[index]) || plus || bytes[index] == UInt8(ascii: "(")), startsCleanly(bytes, index) else {
                index += 1
                continue
            }
            var end = index
            var digits: [UInt8] = []
            var groups: [Int] = [0]
            var cursor = plus ? index + 1 : index
            while cursor < bytes.count {
                let byte = bytes[cursor]
                if isDigit(byte) {
                    digits.append(byte - 0x30)
                    groups[groups.count - 1] += 1
                    cursor += 1
                    end = cursor
                } else if byte == 0xE2, cursor + 3 < bytes.count, bytes[cursor + 1] == 0x84, bytes[cursor + 2] == 0x96,
                          groups.count > 1 || digits.count == 4, isDigit(bytes[cursor + 3]) || (bytes[cursor + 3] == UInt8(ascii: " ")
                            && cursor + 4 < bytes.count && isDigit(bytes[cursor + 4])) {
                    // "серия 45 08 № 123456": the number sign between a series and its number.
                    if groups[groups.count - 1] > 0 { groups.append(0) }
                    cursor += bytes[cursor + 3] == UInt8(ascii: " ") ? 4 : 3
                } else if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "(") || byte == UInt8(ascii: ")"),
                          cursor + 1 < bytes.count, isDigit(bytes[cursor + 1]) || bytes[cursor + 1] == UInt8(ascii: "(")
                            || (byte == UInt8(ascii: ")") && bytes[cursor + 1] == UInt8(ascii: " "))
                            || (byte == UInt8(ascii: " ") && bytes[(cursor + 1)...].starts(with: [0xE2, 0x84, 0x96])) {
                    if groups[groups.count - 1] > 0 { groups.append(0) }
                    cursor += 1
                } else {
                    break
                }
                if digits.count > 20 { break }
            }
            guard !digits.isEmpty, endsCleanly(bytes, end), digits.count <= 20 else {
                index = max(cursor, index + 1)
                continue
            }
            let range = index..<end
            // A dot right after the run makes it part of a version, date or address: not an identifier.
            let dotted = end < bytes.count && bytes[end] == UInt8(ascii: ".") && end + 1 < bytes.count && isDigit(bytes[end + 1])
            if !dotted, let kind = classify(digits: digits, plus: plus, groups: groups.filter { $0 > 0 }, text: bytes[range],
                                            context: Context(bytes: bytes, start: index)) {
                matches.append(PIIMatch(kind: kind.0, range: range, check: kind.1))
            }
            index = max(end, index + 1)
        }
        return matches
    }

    /// The text around a number, for the kinds that have no check digits of their own.
    struct Context {
        let bytes: [UInt8]
        let start: Int

        /// Whether one of `words` (lower-case) ends within 64 bytes before the number.
        func preceded(by words: [[UInt8]]) -> Bool {
            let window = bytes[max(0, start - 64)..<start].map { isUpper($0) ? $0 + 0x20 : $0 }
            let lowered = lowercasedCyrillic(window)
            return words.contains { word in lowered.count >= word.count && (0...(lowered.count - word.count)).contains { lowered[$0..<($0 + word.count)].elementsEqual(word) } }
        }

        /// Cyrillic capitals (U+0410–U+042F, two bytes) lowered, so that "Паспорт" reads "паспорт".
        private func lowercasedCyrillic(_ bytes: [UInt8]) -> [UInt8] {
            var out = bytes
            var index = 0
            while index + 1 < out.count {
                if out[index] == 0xD0, (0x90...0xAF).contains(out[index + 1]) {
                    if out[index + 1] < 0xA0 { out[index + 1] += 0x20 } else { out[index] = 0xD1; out[index + 1] -= 0x20 }
                    index += 2
                } else {
                    index += 1
                }
            }
            return out
        }
    }

    static let passportWords = ["паспорт", "серия", "серии", "passport"].map { Array($0.utf8) }
    static let accountWords = ["р/с", "р/сч", "расчётный счёт", "расчетный счет", "счёт", "счет", "счета", "account", "acct"].map { Array($0.utf8) }

    static func classify(digits: [UInt8], plus: Bool, groups: [Int], text: ArraySlice<UInt8>, context: Context) -> (PIIKind, String)? {
        let count = digits.count
        if count == 20 {
            if let check = bankAccount(digits, in: context) { return (.bankAccount, check) }
            return nil
        }
        // Written in groups of four, a number is read as a card or not at all.
        let cardShaped = groups.count >= 3 && groups.dropLast().allSatisfy { $0 == 4 } && (1...4).contains(groups.last ?? 0)
        if (12...19).contains(count), luhn(digits), cardPrefix(digits) { return (.paymentCard, "Luhn") }
        if cardShaped { return nil }
        let snilsShaped = groups == [3, 3, 3, 2]
        if count == 11, !snilsShaped, digits[0] == 7 || digits[0] == 8, [3, 4, 8, 9].contains(digits[1]), plus || groups.count > 1 || digits[0] == 8 {
            return (.phone, "Russian number (+7/8)")
        }
        if plus, (8...15).contains(count) { return (.phone, "E.164") }
        if count == 9, ssn(digits), text.contains(UInt8(ascii: "-")) { return (.usSSN, "SSN issuing rules") }
        if count == 11, snils(digits) { return (.russianSNILS, "SNILS check number") }
        if count == 10 || count == 12, groups != [2, 2, 6], inn(digits) { return (.russianINN, "INN check digits") }
        if count == 13 || count == 15, ogrn(digits) { return (.russianOGRN, "OGRN check digit") }
        // A passport has no check digit: its shape (series 2+2 or 4, number 6), a real region
        // code and form year, and for an ungrouped number the word nearby.
        if count == 10, russianPassportSeries(digits),
           groups == [2, 2, 6] || (groups == [4, 6] || groups == [10]) && context.preceded(by: passportWords) {
            return (.russianPassport, "passport series region and year")
        }
        return nil
    }

    /// First-level OKATO region codes, the first two digits of a passport series.
    static let okatoRegions: Set<Int> = [1, 3, 4, 5, 7, 8, 10, 11, 12, 14, 15, 17, 18, 19, 20, 22, 24, 25, 26, 27, 28, 29, 30, 32, 33, 34, 35,
                                         36, 37, 38, 40, 41, 42, 44, 45, 46, 47, 49, 50, 52, 53, 54, 56, 57, 58, 60, 61, 63, 64, 65, 66, 67,
                                         68, 69, 70, 71, 73, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94,
                                         95, 96, 97, 98, 99]

    /// A Russian passport series: a region code, then the two-digit year the form was printed
    /// (the current forms date from 1997).
    public static func russianPassportSeries(_ digits: [UInt8]) -> Bool {
        guard digits.count >= 4 else { return false }
        let region = Int(digits[0]) * 10 + Int(digits[1])
        let year = Int(digits[2]) * 10 + Int(digits[3])
        return okatoRegions.contains(region) && (year >= 97 || year <= currentYearInCentury)
    }

    static let currentYearInCentury: Int = {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        return Int(parts.tm_year) % 100
    }()

    /// A Russian bank account (20 digits): when the text carries a BIK (nine digits starting
    /// with 04), the check key against it — the BIK's last three digits, then the account,
    /// weighed 7-1-3, sum divisible by 10; without a BIK, a balance account of the first-order
    /// lists, a currency code and the word "account" just before it.
    static func bankAccount(_ digits: [UInt8], in context: Context) -> String? {
        guard digits.count == 20 else { return nil }
        let biks = biks(context.bytes)
        if !biks.isEmpty {
            return biks.contains { accountKey(digits, bik: $0) } ? "account check key with BIK" : nil
        }
        let balance = digits[0..<5].reduce(0) { $0 * 10 + Int($1) }
        let currency = digits[5..<8].reduce(0) { $0 * 10 + Int($1) }
        let balanceLists = (30101...30233).contains(balance) || (40101...40823).contains(balance) || (42001...42614).contains(balance)
            || (45201...45509).contains(balance)
        if balanceLists, [810, 643, 840, 978, 156, 826, 756, 398, 933].contains(currency), context.preceded(by: accountWords) {
            return "balance account, currency and the word account"
        }
        return nil
    }

    public static func accountKey(_ account: [UInt8], bik: [UInt8]) -> Bool {
        guard account.count == 20, bik.count == 9 else { return false }
        let weights = [7, 1, 3]
        let digits = Array(bik[6..<9]) + account
        let sum = digits.enumerated().reduce(0) { $0 + weights[$1.offset % 3] * Int($1.element) % 10 }
        return sum % 10 == 0
    }

    /// Nine-digit runs starting with 04 (BIKs of Russian banks), as digits.
    static func biks(_ bytes: [UInt8]) -> [[UInt8]] {
        var found: [[UInt8]] = []
        var index = 0
        while index + 9 <= bytes.count {
            if bytes[index] == 0x30, bytes[index + 1] == 0x34, startsCleanly(bytes, index), endsCleanly(bytes, index + 9),
               bytes[index..<(index + 9)].allSatisfy(isDigit) {
                found.append(bytes[index..<(index + 9)].map { $0 - 0x30 })
                index += 9
            } else {
                index += 1
            }
        }
        return found
    }

    /// The Luhn check (payment cards).
    public static func luhn(_ digits: [UInt8]) -> Bool {
        var sum = 0
        for (position, digit) in digits.reversed().enumerated() {
            var value = Int(digit)
            if position % 2 == 1 {
                value *= 2
                if value > 9 { value -= 9 }
            }
            sum += value
        }
        return sum % 10 == 0
    }

    /// Issuer prefixes of the card networks (Visa, Mastercard, Amex, Discover, JCB, UnionPay, Mir, Maestro).
    static func cardPrefix(_ digits: [UInt8]) -> Bool {
        let two = Int(digits[0]) * 10 + Int(digits[1])
        let four = two * 100 + Int(digits[2]) * 10 + Int(digits[3])
        let count = digits.count
        switch digits[0] {
        case 4: return count == 13 || count == 16 || count == 19
        case 5: return (51...55).contains(two) ? count == 16 : ((two == 50 || (56...58).contains(two)) && count >= 16)
        case 2: return ((2221...2720).contains(four) || (2200...2204).contains(four)) && count == 16
        case 3: return ((two == 34 || two == 37) && count == 15) || ((two == 36 || two == 38 || two == 30) && count == 14)
            || (two == 35 && count >= 16)
        case 6: return [60, 62, 64, 65, 63, 67].contains(two) && count >= 16
        default: return false
        }
    }

    /// US SSN: area not 000, 666 or 900–999; group not 00; serial not 0000.
    static func ssn(_ digits: [UInt8]) -> Bool {
        let area = Int(digits[0]) * 100 + Int(digits[1]) * 10 + Int(digits[2])
        let group = Int(digits[3]) * 10 + Int(digits[4])
        let serial = digits[5...].reduce(0) { $0 * 10 + Int($1) }
        return area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
    }

    /// Russian INN: 10 digits (organisations) with one check digit, 12 (individuals) with two.
    public static func inn(_ digits: [UInt8]) -> Bool {
        func check(_ weights: [Int]) -> UInt8 {
            let sum = zip(weights, digits).reduce(0) { $0 + $1.0 * Int($1.1) }
            return UInt8(sum % 11 % 10)
        }
        switch digits.count {
        case 10: return check([2, 4, 10, 3, 5, 9, 4, 6, 8]) == digits[9]
        case 12:
            return check([7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) == digits[10] && check([3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) == digits[11]
        default: return false
        }
    }

    /// Russian SNILS: 9 digits and a two-digit check number (defined for numbers above 001-001-998).
    public static func snils(_ digits: [UInt8]) -> Bool {
        guard digits.count == 11 else { return false }
        let number = digits[0..<9].reduce(0) { $0 * 10 + Int($1) }
        guard number > 1_001_998 else { return false }
        var sum = 0
        for (index, digit) in digits[0..<9].enumerated() { sum += Int(digit) * (9 - index) }
        let control = sum < 100 ? sum : (sum == 100 || sum == 101 ? 0 : (sum % 101 == 100 ? 0 : sum % 101))
        return control == Int(digits[9]) * 10 + Int(digits[10])
    }

    /// Russian OGRN (13 digits, mod 11) and OGRNIP (15 digits, mod 13); first digit 1, 2, 3 or 5.
    public static func ogrn(_ digits: [UInt8]) -> Bool {
        guard [1, 2, 3, 5].contains(digits.first ?? 0) else { return false }
        let body = digits.dropLast()
        let divisor = digits.count == 13 ? 11 : (digits.count == 15 ? 13 : 0)
        guard divisor > 0 else { return false }
        var remainder = 0
        for digit in body { remainder = (remainder * 10 + Int(digit)) % divisor }
        return remainder % 10 == Int(digits.last!)
    }
}

extension PIIDetector {
    /// `text` with every identifier found in it replaced by `[<kind>]` (`[email]`, `[ru_inn]`, …).
    public static func redacted(_ text: String) -> String {
        let matches = find(in: text)
        guard !matches.isEmpty else { return text }
        let bytes = Array(text.utf8)
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count)
        var position = 0
        for match in matches.sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) where match.range.lowerBound >= position {
            result += bytes[position..<match.range.lowerBound]
            result += Array("[\(match.kind.rawValue)]".utf8)
            position = min(match.range.upperBound, bytes.count)
        }
        result += bytes[position...]
        return String(decoding: result, as: UTF8.self)
    }

    /// `value` with every string in it (at any depth) `redacted`.
    public static func redactingStrings(in value: JSONValue) -> JSONValue {
        switch value {
        case .string(let text): return .string(redacted(text))
        case .array(let elements): return .array(elements.map(redactingStrings(in:)))
        case .object(let object):
            var copy = JSONObject()
            for (key, member) in object { copy[key] = redactingStrings(in: member) }
            return .object(copy)
        default: return value
        }
    }
}
