import Foundation
import PortcullisCore
#if canImport(Glibc)
import Glibc
#endif

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
