import Synchronization

/// A process-wide, lock-free pseudo-random generator (SplitMix64 over an atomic counter),
/// seeded once from the system.
///
/// For identifiers that must be unique and unpredictable enough for correlation (request,
/// trace and span ids) and for load-balancing choices — not for secrets. It replaces one
/// system call (or, for Foundation's `UUID`, a file open) per value on the request path.
public enum FastRandom {
    private static let state: Atomic<UInt64> = {
        var system = SystemRandomNumberGenerator()
        return Atomic(system.next())
    }()

    /// The next 64 random bits.
    public static func next() -> UInt64 {
        let seed = state.wrappingAdd(0x9E37_79B9_7F4A_7C15, ordering: .relaxed).newValue
        var z = seed
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in [0, 1).
    public static func unit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// `bytes` random bytes as lowercase hex.
    public static func hex(bytes: Int) -> String {
        var output = [UInt8]()
        output.reserveCapacity(bytes * 2)
        var remaining = bytes
        while remaining > 0 {
            var word = next()
            for _ in 0..<min(8, remaining) {
                let byte = UInt8(truncatingIfNeeded: word)
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0x0F)])
                word >>= 8
            }
            remaining -= 8
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// A version-7 UUID (RFC 9562): the unix time in milliseconds, then random bits, in its
    /// canonical lowercase text form. Ids made later sort after earlier ones, so an index on
    /// them grows at its end instead of at random pages.
    public static func timeOrderedUUIDString(unixMilliseconds: UInt64) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<6 { bytes[index] = UInt8(truncatingIfNeeded: unixMilliseconds >> (8 * (5 - UInt64(index)))) }
        let random = next(), more = next()
        for index in 6..<14 { bytes[index] = UInt8(truncatingIfNeeded: random >> (8 * UInt64(index - 6))) }
        bytes[14] = UInt8(truncatingIfNeeded: more)
        bytes[15] = UInt8(truncatingIfNeeded: more >> 8)
        bytes[6] = 0x70 | (bytes[6] & 0x0F)
        bytes[8] = 0x80 | (bytes[8] & 0x3F)
        var output = [UInt8]()
        output.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { output.append(UInt8(ascii: "-")) }
            output.append(hexDigits[Int(byte >> 4)])
            output.append(hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// A random version-4 UUID in its canonical lowercase text form.
    public static func uuidString() -> String {
        var hex = Array(hex(bytes: 16).utf8)
        hex[12] = UInt8(ascii: "4")
        hex[16] = hexDigits[Int(8 | (hex[16] & 0x3))]
        var output = [UInt8]()
        output.reserveCapacity(36)
        for (index, digit) in hex.enumerated() {
            if index == 8 || index == 12 || index == 16 || index == 20 { output.append(UInt8(ascii: "-")) }
            output.append(digit)
        }
        return String(decoding: output, as: UTF8.self)
    }
}
