/// Fixed-point decimal text without Foundation's `String(format:)`, which costs several
/// microseconds per call on Linux (it goes through CoreFoundation): measured at 3–5% of the
/// CPU of a whole request when every answer carried one (the cost header).
public enum DecimalText {
    /// `value` with exactly `places` digits after the point (0–12), as `String(format:
    /// "%.<places>f")` writes it for the values a gateway handles (|value| below 9e6 at 12
    /// places, far more at fewer), except that an exact binary tie rounds away from zero where
    /// printf rounds it to even. Larger magnitudes, infinities and NaN take a slower path that
    /// never traps.
    public static func format(_ value: Double, places: Int) -> String {
        let places = max(0, min(12, places))
        var scale: Double = 1
        for _ in 0..<places { scale *= 10 }
        let scaled = (abs(value) * scale).rounded(.toNearestOrAwayFromZero)
        guard value.isFinite, scaled < 9.0e18 else { return slow(value, places: places) }
        var units = UInt64(scaled)
        var digits: [UInt8] = []
        digits.reserveCapacity(24)
        var written = 0
        repeat {
            if written == places && places > 0 { digits.append(UInt8(ascii: ".")) }
            digits.append(UInt8(ascii: "0") + UInt8(units % 10))
            units /= 10
            written += 1
        } while units > 0 || written <= places
        if value.sign == .minus { digits.append(UInt8(ascii: "-")) }   // as printf: "-0.00" for a negative value that rounds to zero
        return String(decoding: digits.reversed(), as: UTF8.self)
    }

    private static func slow(_ value: Double, places: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
        // Beyond 9e18 units the digits past the point are below a Double's precision anyway.
        let fraction = places > 0 ? "." + String(repeating: "0", count: places) : ""
        if abs(value) < 9.0e18 { return String(Int64(value.rounded(.toNearestOrAwayFromZero))) + fraction }
        return "\(value.rounded())" + fraction
    }
}
