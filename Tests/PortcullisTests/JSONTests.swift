import Foundation
import PortcullisCore
import Testing

@Suite("JSON parser and writer")
struct JSONTests {
    @Test("writes integers digit for digit, the extremes included", arguments: [Int64.min, -1_000_000_007, -1, 0, 7, 10, 1_796_188_513_838_253, Int64.max])
    func integers(number: Int64) {
        var output: [UInt8] = []
        JSONWriter.writeInteger(number, into: &output)
        #expect(String(decoding: output, as: UTF8.self) == String(number))
        #expect(JSONWriter.string(.array([.integer(number), .double(Double(number % 1_000_000))])) == "[\(number),\(number % 1_000_000).0]")
    }

    @Test("round-trips a document, keeping key order and number kinds")
    func roundTrip() throws {
        let text = #"{"z":1,"a":[true,false,null,-0.5,1e-05,"x\"y\\z\n\u00e9\ud83d\ude00"],"m":{"k":12345678901234}}"#
        let value = try JSONParser.parse(text)
        #expect(value.objectValue?.keys == ["z", "a", "m"])
        #expect(value.objectValue?["m"]?.objectValue?["k"] == .integer(12_345_678_901_234))
        let again = try JSONParser.parse(JSONWriter.string(value))
        #expect(again == value)
        #expect(value.objectValue?["a"]?.arrayValue?[5] == .string("x\"y\\z\né😀"))
    }

    @Test("reports line and column of the first error", arguments: [
        ("{\"a\": 1,\n  \"b\": }", 2, 8),
        ("[1, 2", 1, 6),
        ("{\"a\" 1}", 1, 6),
        ("", 1, 1),
        ("{\"a\":1} x", 1, 9),
        ("[01]", 1, 2),
    ])
    func errorPositions(text: String, line: Int, column: Int) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
        do {
            _ = try JSONParser.parse(text)
        } catch {
            #expect(error.line == line, "\(error)")
            #expect(error.column == column, "\(error)")
        }
    }

    @Test("refuses nesting deeper than the limit instead of overflowing the stack")
    func depthLimit() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: Never.self) { try JSONParser.parse(fine) }
    }

    @Test("refuses invalid UTF-8, lone surrogates and control characters in strings")
    func invalidStrings() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\ud800""#) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse("\"a\u{01}b\"") }
        #expect(throws: JSONParseError.self) { try JSONParser.parse(#""\x""#) }
    }

    @Test("survives arbitrary bytes")
    func fuzz() {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("{}[]\":,0123456789.eE+-tfnrule\\ \n\u{7f}".utf8) + [0xC3, 0xFF, 0x00]
        var parsed = 0
        for _ in 0..<5000 {
            let length = Int.random(in: 0..<40, using: &generator)
            let bytes = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            if (try? JSONParser.parse(bytes)) != nil { parsed += 1 }
        }
        #expect(parsed < 5000)
    }

    @Test("writes floats with a decimal point and escapes control characters")
    func writerDetails() {
        #expect(JSONWriter.string(["t": .double(1), "u": .double(0.7), "s": .string("a\u{1}b")]) == #"{"t":1.0,"u":0.7,"s":"a\u0001b"}"#)
    }
}

@Suite("Identifiers")
struct IdentifierTests {
    @Test("random ids are distinct version-4 UUIDs; hex ids have the asked length")
    func identifiers() {
        let ids = (0..<10_000).map { _ in FastRandom.uuidString() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(100) {
            let parts = id.split(separator: "-")
            #expect(parts.map(\.count) == [8, 4, 4, 4, 12])
            #expect(parts[2].first == "4")
            #expect("89ab".contains(parts[3].first!))
        }
        #expect(FastRandom.hex(bytes: 16).count == 32)
        #expect(FastRandom.hex(bytes: 3).count == 6)
        let units = (0..<10_000).map { _ in FastRandom.unit() }
        #expect(units.allSatisfy { $0 >= 0 && $0 < 1 })
        #expect(abs(units.reduce(0, +) / 10_000 - 0.5) < 0.02)
    }

    @Test("audit record ids are version-7 UUIDs: the time first, so later ids sort after earlier ones")
    func timeOrdered() {
        let early = FastRandom.timeOrderedUUIDString(unixMilliseconds: 1_796_179_244_000)
        let later = FastRandom.timeOrderedUUIDString(unixMilliseconds: 1_796_179_244_001)
        #expect(early < later)
        #expect(early.hasPrefix("01a234a0-33e0-7"), "48 bits of milliseconds, then version 7: \(early)")
        let parts = later.split(separator: "-")
        #expect(parts.map(\.count) == [8, 4, 4, 4, 12] && "89ab".contains(parts[3].first!))
        let same = (0..<1000).map { _ in FastRandom.timeOrderedUUIDString(unixMilliseconds: 7) }
        #expect(Set(same).count == 1000, "74 random bits tell ids of one millisecond apart")
    }
}

@Suite("Fixed-point decimal text")
struct DecimalTextTests {
    @Test("writes what String(format:) writes for the values a gateway handles, without Foundation's formatter")
    func matchesFormat() {
        var generator = SystemRandomNumberGenerator()
        var values: [Double] = [0, 1, -1, 0.5, 0.000000005, 0.000000015, 1.5e-9, 123.456789012, -0.0000000049, 99999.999999999, 1e6, 3.25e-5]
        for _ in 0..<2000 { values.append(Double.random(in: -1000...1000, using: &generator) / Double([1, 10, 1000, 1e6][Int.random(in: 0...3, using: &generator)])) }
        for value in values {
            for places in [0, 2, 6, 8] {
                // Ties exactly at a half can round either way in the C library's binary view; compare away from them.
                let scaled = abs(value) * pow(10, Double(places))
                if abs(scaled - scaled.rounded(.down) - 0.5) < 1e-6 { continue }
                #expect(DecimalText.format(value, places: places) == String(format: "%.\(places)f", value), "\(value) at \(places)")
            }
        }
        #expect(DecimalText.format(.infinity, places: 2) == "inf" && DecimalText.format(.nan, places: 2) == "nan")
        #expect(DecimalText.format(2e19, places: 8).hasSuffix(".00000000"), "huge values do not trap")
        #expect(DecimalText.format(-0.000000001, places: 8) == "-0.00000000" && DecimalText.format(1234.5, places: 0) == "1235")
    }
}
