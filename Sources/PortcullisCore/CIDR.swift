#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An IP address as 16 bytes: IPv6 as is, IPv4 mapped into `::ffff:0:0/96`, so that one
/// comparison serves both families.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Parses dotted IPv4 or textual IPv6 (a `%zone` suffix and brackets are ignored).
    public init?(_ text: some StringProtocol) {
        var candidate = String(text)
        if candidate.hasPrefix("["), candidate.hasSuffix("]") { candidate = String(candidate.dropFirst().dropLast()) }
        if let zone = candidate.firstIndex(of: "%") { candidate = String(candidate[..<zone]) }
        var v4 = in_addr()
        if inet_pton(AF_INET, candidate, &v4) == 1 {
            let value = UInt32(bigEndian: v4.s_addr)
            bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF,
                     UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, candidate, &v6) == 1 else { return nil }
        bytes = withUnsafeBytes(of: &v6) { Array($0) }
    }

    /// Whether this is an IPv4 address (mapped).
    public var isIPv4: Bool { bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }

    public var description: String {
        if isIPv4 { return bytes[12...].map(String.init).joined(separator: ".") }
        return stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}

/// A block of addresses, `192.168.0.0/16` or `2001:db8::/32`; a bare address is a block of one.
public struct CIDR: Sendable, Hashable, CustomStringConvertible {
    public let network: IPAddress
    /// Prefix length over the 16-byte form (IPv4 prefixes are offset by 96).
    public let prefixLength: Int
    public let description: String

    public init?(_ text: some StringProtocol) {
        let trimmed = String(text).trimmingSpaces
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { return nil }
        let maximum = address.isIPv4 ? 32 : 128
        var length = maximum
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (0...maximum).contains(parsed) else { return nil }
            length = parsed
        }
        self.prefixLength = address.isIPv4 ? length + 96 : length
        self.network = address
        self.description = trimmed
    }

    /// Whether `address` lies in this block.
    public func contains(_ address: IPAddress) -> Bool {
        var remaining = prefixLength
        var index = 0
        while remaining > 0 {
            let bits = min(8, remaining)
            let mask: UInt8 = bits == 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if (network.bytes[index] & mask) != (address.bytes[index] & mask) { return false }
            remaining -= bits
            index += 1
        }
        return true
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var view = Substring(self)
        while view.first == " " { view = view.dropFirst() }
        while view.last == " " { view = view.dropLast() }
        return String(view)
    }
}
