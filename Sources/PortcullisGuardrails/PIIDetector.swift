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

    // MARK: IBAN

    static let ibanLengths: [String: Int] = [
        "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18,
        "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
        "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
        "UA": 29, "KZ": 20, "AE": 23, "SA": 24, "IL": 23, "BY": 28, "AZ": 28, "GE": 22, "MD": 24, "RS": 22, "ME": 22, "AL": 28,
    ]

    /// Two capital letters, two check digits, then the country's length of letters and digits
    /// (grouped by spaces or not), passing mod-97.
    ///
    /// An IBAN's check digits follow its two country letters, so it starts two bytes before
    /// the start of a run of digits.
    static func ibans(_ bytes: [UInt8], digitRuns: [Int]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        var index = 0
        for run in digitRuns where run >= 2 && run - 2 >= index {
            index = run - 2
            guard index + 15 <= bytes.count else { break }
            guard isUpper(bytes[index]), isUpper(bytes[index + 1]), isDigit(bytes[index + 2]), isDigit(bytes[index + 3]),
                  startsCleanly(bytes, index),
                  let length = ibanLengths[String(decoding: bytes[index..<(index + 2)], as: UTF8.self)] else {
                index += 1
                continue
            }
            var characters: [UInt8] = []
            var cursor = index
            var end = index
            while cursor < bytes.count, characters.count < length {
                if isDigit(bytes[cursor]) || isUpper(bytes[cursor]) {
                    characters.append(bytes[cursor])
                    end = cursor + 1
                } else if bytes[cursor] != UInt8(ascii: " ") || cursor + 1 >= bytes.count || !isAlphanumeric(bytes[cursor + 1]) {
                    break
                }
                cursor += 1
            }
            if characters.count == length, endsCleanly(bytes, end), mod97(characters) {
                matches.append(PIIMatch(kind: .iban, range: index..<end, check: "mod-97"))
                index = end
            } else {
                index += 1
            }
        }
        return matches
    }

    /// ISO 13616: move the first four characters to the end, letters to 10–35, remainder 1 mod 97.
    public static func mod97(_ characters: [UInt8]) -> Bool {
        var remainder = 0
        for byte in characters[4...] + characters[..<4] {
            if isDigit(byte) {
                remainder = (remainder * 10 + Int(byte - 0x30)) % 97
            } else if isUpper(byte) {
                remainder = (remainder * 100 + Int(byte - 0x41 + 10)) % 97
            } else {
                return false
            }
        }
        return remainder == 1
    }

    // MARK: e-mail

    static func emails(_ bytes: [UInt8]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        func isLocal(_ byte: UInt8) -> Bool { isAlphanumeric(byte) || ".!#$%&'*+/=?^_`{|}~-".utf8.contains(byte) }
        func isDomain(_ byte: UInt8) -> Bool { isAlphanumeric(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") }
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "@") else {
                index += 1
                continue
            }
            var start = index
            while start > 0 && isLocal(bytes[start - 1]) { start -= 1 }
            var end = index + 1
            while end < bytes.count && isDomain(bytes[end]) { end += 1 }
            while end > index + 1 && bytes[end - 1] == UInt8(ascii: ".") { end -= 1 }   // a sentence's full stop
            let domain = bytes[(index + 1)..<end]
            if start < index, let dot = domain.lastIndex(of: UInt8(ascii: ".")), end - dot > 2,
               domain[(dot + 1)...].allSatisfy({ isUpper($0) || isLower($0) }), domain.first.map(isAlphanumeric) == true {
                matches.append(PIIMatch(kind: .email, range: start..<end, check: "address syntax"))
            }
            index = end
        }
        return matches
    }

    // MARK: IPv4

    static func ipv4(_ bytes: [UInt8], digitRuns: [Int]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        var index = 0
        for run in digitRuns where run >= index {
            index = run
            guard isDigit(bytes[index]), startsCleanly(bytes, index) || bytes[index - 1] == UInt8(ascii: "/") else {
                index += 1
                continue
            }
            var end = index
            while end < bytes.count && (isDigit(bytes[end]) || bytes[end] == UInt8(ascii: ".")) { end += 1 }
            while end > index && bytes[end - 1] == UInt8(ascii: ".") { end -= 1 }
            guard bytes[index..<end].reduce(0, { $0 + ($1 == UInt8(ascii: ".") ? 1 : 0) }) == 3 else {
                index = max(end, index + 1)
                continue
            }
            let candidate = String(decoding: bytes[index..<end], as: UTF8.self)
            let parts = candidate.split(separator: ".", omittingEmptySubsequences: false)
            if parts.count == 4, endsCleanly(bytes, end), parts.allSatisfy({ !$0.isEmpty && $0.count <= 3 && (Int($0) ?? 256) <= 255 }),
               IPAddress(candidate) != nil {
                matches.append(PIIMatch(kind: .ipAddress, range: index..<end, check: "dotted quad"))
            }
            index = max(end, index + 1)
        }
        return matches
    }

    // MARK: IPv6

    /// Hex groups joined by colons: the full eight groups, or a `::` compression with a digit
    /// in it ("fe80::1"; not "std::map" or "a::b"), that parse as an IPv6 address.
    static func ipv6(_ bytes: [UInt8]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        func isHex(_ byte: UInt8) -> Bool { isDigit(byte) || (0x61...0x66).contains(byte) || (0x41...0x46).contains(byte) }
        var index = 0
        // Only a run of hex digits, colons and dots that holds a colon can be an address: from
        // each colon (memchr) back to where its run starts, then byte by byte past the colon.
        var colon = -1
        while index < bytes.count {
            if index > colon {
                let found = bytes.withUnsafeBytes { buffer in
                    memchr(buffer.baseAddress! + index, Int32(UInt8(ascii: ":")), buffer.count - index).map { buffer.baseAddress!.distance(to: UnsafeRawPointer($0)) }
                }
                guard let found else { break }
                colon = found
                var start = found
                while start > index, isHex(bytes[start - 1]) || bytes[start - 1] == UInt8(ascii: ":") || bytes[start - 1] == UInt8(ascii: ".") { start -= 1 }
                index = start
            }
            guard isHex(bytes[index]) || bytes[index] == UInt8(ascii: ":"), startsCleanly(bytes, index),
                  index == 0 || bytes[index - 1] != UInt8(ascii: ":") else {
                index += 1
                continue
            }
            var end = index
            var colons = 0
            while end < bytes.count, isHex(bytes[end]) || bytes[end] == UInt8(ascii: ":") || bytes[end] == UInt8(ascii: ".") {
                if bytes[end] == UInt8(ascii: ":") { colons += 1 }
                end += 1
            }
            while end > index, bytes[end - 1] == UInt8(ascii: ".") || (bytes[end - 1] == UInt8(ascii: ":") && !(end - 2 >= index && bytes[end - 2] == UInt8(ascii: ":"))) {
                if bytes[end - 1] == UInt8(ascii: ":") { colons -= 1 }
                end -= 1
            }
            if colons >= 2, endsCleanly(bytes, end) {
                let candidate = bytes[index..<end]
                let compressed = candidate.indices.dropLast().contains { candidate[$0] == UInt8(ascii: ":") && candidate[$0 + 1] == UInt8(ascii: ":") }
                if colons == 7 || (compressed && candidate.contains(where: isDigit) && candidate.count >= 3),
                   IPAddress(String(decoding: candidate, as: UTF8.self)) != nil {
                    matches.append(PIIMatch(kind: .ipAddress, range: index..<end, check: "IPv6 address"))
                }
            }
            index = max(end, index + 1)
        }
        return matches
    }

    // MARK: secrets

    /// Prefixes of well-known credential formats, with the characters and length that follow.
    static let secretFormats: [(prefix: String, minimum: Int, name: String)] = [
        ("AKIA", 16, "AWS access key id"), ("ASIA", 16, "AWS temporary access key id"),
        ("ghp_", 36, "GitHub token"), ("gho_", 36, "GitHub token"), ("ghs_", 36, "GitHub token"), ("github_pat_", 40, "GitHub token"),
        ("sk-proj-", 32, "OpenAI key"), ("sk-ant-", 32, "Anthropic key"), ("sk_live_", 24, "Stripe key"), ("rk_live_", 24, "Stripe key"),
        ("xoxb-", 20, "Slack token"), ("xoxp-", 20, "Slack token"), ("AIza", 35, "Google API key"), ("glpat-", 20, "GitLab token"),
        ("pck_", 60, "Portcullis key"),
    ]

    static func secrets(_ bytes: [UInt8]) -> [PIIMatch] {
        var matches: [PIIMatch] = []
        func isTokenByte(_ byte: UInt8) -> Bool { isAlphanumeric(byte) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") }
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "-"), bytes[index...].starts(with: "-----BEGIN ".utf8) {
                let header = bytes[index..<min(bytes.count, index + 60)]
                if String(decoding: header, as: UTF8.self).contains("PRIVATE KEY-----") {
                    var end = index + 11
                    let footer = Array("-----END ".utf8)
                    while end < bytes.count && !bytes[end...].starts(with: footer) { end += 1 }
                    while end < bytes.count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
                    matches.append(PIIMatch(kind: .secret, range: index..<end, check: "private key block"))
                    index = end
                    continue
                }
            }
            guard isTokenByte(bytes[index]), startsCleanly(bytes, index) || bytes[index - 1] == UInt8(ascii: "-") else {
                index += 1
                continue
            }
            var end = index
            while end < bytes.count && (isTokenByte(bytes[end]) || bytes[end] == UInt8(ascii: ".")) { end += 1 }
            let token = bytes[index..<end]
            guard token.count >= 20 else {   // every format below is longer
                index = max(end, index + 1)
                continue
            }
            if let format = secretFormats.first(where: { token.starts(with: $0.prefix.utf8) && token.count - $0.prefix.utf8.count >= $0.minimum }) {
                matches.append(PIIMatch(kind: .secret, range: index..<end, check: format.name))
            } else if token.starts(with: "eyJ".utf8), token.split(separator: UInt8(ascii: ".")).count == 3, token.count >= 30 {
                matches.append(PIIMatch(kind: .secret, range: index..<end, check: "JSON Web Token"))
            }
            index = max(end, index + 1)
        }
        return matches
    }
}

/// Personal data and secrets in untrusted input, found by `PIIDetector`. Secrets are high
/// risk, personal identifiers medium: the policy decides whether they block or are flagged.
public struct PIIGuard: InputGuard {
    public let name = "pii"
    public let tier = GuardTier.rules

    public init() {}

    public func inspect(_ input: GuardInput) async -> [GuardFinding] {
        var findings: [GuardFinding] = []
        for (index, segment) in input.segments.enumerated() where !segment.isTrusted {
            for match in PIIDetector.find(in: segment.text) {
                findings.append(GuardFinding(guardName: name, category: match.kind.category, risk: match.kind == .secret ? .high : .medium,
                                             score: 0.95, reason: "\(match.kind.rawValue) (\(match.check))", span: match.range, segment: index))
            }
        }
        return findings
    }
}

/// A text with the disguises of identifiers undone, byte for byte mapped to the original:
/// no-break, thin and ideographic spaces and line breaks become spaces, zero-width characters
/// and soft hyphens are dropped, a dot between digit groups of four ("4111.1111") becomes a
/// space, and full-width forms become ASCII. Nil when the text has none that touch a letter or digit.
public struct FoldedText: Sendable {
    /// The folded UTF-8.
    public let bytes: [UInt8]
    /// For each folded byte, where its character starts and ends in the original.
    private let starts: [Int]
    private let ends: [Int]

    public init?(_ raw: [UInt8]) {
        guard Self.hasDisguise(raw) else { return nil }   // the common case allocates nothing
        var bytes: [UInt8] = []
        var starts: [Int] = []
        var ends: [Int] = []
        bytes.reserveCapacity(raw.count)
        starts.reserveCapacity(raw.count)
        ends.reserveCapacity(raw.count)
        func emit(_ byte: UInt8, from start: Int, to end: Int) {
            bytes.append(byte)
            starts.append(start)
            ends.append(end)
        }
        var index = 0
        while index < raw.count {
            let byte = raw[index]
            if byte < 0x80 {
                let separator = byte == 0x0A || byte == 0x0D || byte == 0x09 || (byte == 0x2E && Self.isGroupDot(raw, index))
                emit(separator ? 0x20 : byte, from: index, to: index + 1)
                index += 1
                continue
            }
            let (value, length) = raw.withUnsafeBufferPointer { NormalizedText.scalar(in: $0, at: index) }
            let end = index + length
            switch Self.disguise(value) {
            case .space: emit(0x20, from: index, to: end)
            case .invisible: break
            case .fullWidth: emit(UInt8(value - 0xFF01 + 0x21), from: index, to: end)
            case nil: for offset in index..<end { emit(raw[offset], from: offset, to: offset + 1) }
            }
            index = end
        }
        self.bytes = bytes
        self.starts = starts
        self.ends = ends
    }

    private enum Disguise { case space, invisible, fullWidth }

    private static func disguise(_ value: UInt32) -> Disguise? {
        switch value {
        case 0xA0, 0x2000...0x200A, 0x202F, 0x205F, 0x3000: return .space
        case 0x200B...0x200D, 0x2060, 0xFEFF, 0xAD: return .invisible
        case 0xFF01...0xFF5E: return .fullWidth
        default: return nil
        }
    }

    /// A dot between digit groups of four ("4111.1111"), not a decimal point or an address.
    private static func isGroupDot(_ raw: [UInt8], _ index: Int) -> Bool {
        index >= 4 && index + 1 < raw.count && PIIDetector.isDigit(raw[index + 1]) && raw[(index - 4)..<index].allSatisfy(PIIDetector.isDigit)
            && (index == 4 || !PIIDetector.isDigit(raw[index - 5]))
    }

    /// Whether folding would change what the detectors see: a separator between two digits
    /// (a line break, a group dot, a no-break or zero-width space), an invisible character
    /// inside a word, or any full-width form.
    private static func hasDisguise(_ raw: [UInt8]) -> Bool {
        raw.withUnsafeBufferPointer { bytes in
            func digitAt(_ position: Int) -> Bool {
                guard position < bytes.count else { return false }
                return PIIDetector.isDigit(bytes[position]) || (position + 2 < bytes.count && bytes[position] == 0xEF && bytes[position + 1] == 0xBC
                                                                && bytes[position + 2] >= 0x90 && bytes[position + 2] <= 0x99)
            }
            var index = 0
            while index < bytes.count {
                // Most bytes cannot begin a disguise: one table look-up each.
                guard isTrigger[Int(bytes[index])] else {
                    index += 1
                    continue
                }
                let byte = bytes[index]
                if byte < 0x80 {
                    if byte == 0x2E {
                        if isGroupDot(raw, index) { return true }
                    } else if index > 0 && digitAt(index - 1) && digitAt(index + 1) {
                        return true   // a line break or tab between digits
                    }
                    index += 1
                    continue
                }
                let (value, length) = NormalizedText.scalar(in: bytes, at: index)
                switch disguise(value) {
                case .fullWidth?: return true
                case .space?: if index > 0 && digitAt(index - 1) && digitAt(index + length) { return true }
                case .invisible?:
                    if index > 0 && PIIDetector.isAlphanumeric(bytes[index - 1]) && index + length < bytes.count
                        && PIIDetector.isAlphanumeric(bytes[index + length]) { return true }
                case nil: break
                }
                index += length
            }
            return false
        }
    }

    /// Bytes that can begin a disguise: line breaks, tabs, dots, and the lead bytes of
    /// no-break, thin, ideographic and zero-width spaces, the soft hyphen and full-width forms.
    private static let isTrigger: [Bool] = (0..<256).map { [0x0A, 0x0D, 0x09, 0x2E, 0xC2, 0xE2, 0xE3, 0xEF].contains($0) }

    /// The original byte range of a range of folded bytes.
    public func original(_ range: Range<Int>) -> Range<Int> {
        guard !range.isEmpty else { return original(position: range.lowerBound)..<original(position: range.lowerBound) }
        return starts[range.lowerBound]..<ends[range.upperBound - 1]
    }

    /// The original offset of a folded position (its end for the position past the last byte).
    public func original(position: Int) -> Int {
        position < starts.count ? starts[position] : (ends.last ?? 0)
    }

    /// The first folded position at or after original offset `offset`.
    public func folded(position offset: Int) -> Int {
        var low = 0, high = starts.count
        while low < high {
            let middle = (low + high) / 2
            if starts[middle] < offset { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
