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
