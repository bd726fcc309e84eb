import Foundation
import PortcullisCore
#if canImport(Glibc)
import Glibc
#endif

/// The patterns without check digits of their own: IBAN (mod 97), e-mail, IP addresses, secrets.
extension PIIDetector {
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

