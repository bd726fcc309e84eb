import Foundation

/// Weights of the injection classifier: logistic regression over the presence of hashed features, trained by
/// `scripts/train_classifier.py` and shipped as the resource `injection-classifier.bin`.
///
/// File layout (little-endian): `PCYC`, version (u32 = 1), buckets (u32, a power of two),
/// window (u32, words), bias (f32), high threshold (f32), medium threshold (f32), then one f32
/// weight per bucket.
public struct ClassifierModel: Sendable {
    public let buckets: Int
    public let window: Int
    public let bias: Float
    /// At or above: a high-risk finding (blocked by the default policy).
    public let highThreshold: Double
    /// At or above (and below `highThreshold`): a medium finding — uncertain, flagged, and
    /// what makes the judge tier look.
    public let mediumThreshold: Double
    let weights: [Float]

    public init(data: Data) throws(ClassifierModelError) {
        let bytes = [UInt8](data)
        func u32(_ offset: Int) -> UInt32 {
            UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
        }
        func f32(_ offset: Int) -> Float { Float(bitPattern: u32(offset)) }
        guard bytes.count >= 28, bytes[0..<4].elementsEqual("PCYC".utf8) else { throw .notAModel }
        guard u32(4) == 1 else { throw .unsupportedVersion(Int(u32(4))) }
        let buckets = Int(u32(8))
        guard buckets > 0, buckets & (buckets - 1) == 0, buckets <= 1 << 24 else { throw .notAModel }
        guard bytes.count == 28 + buckets * 4 else { throw .truncated(expected: 28 + buckets * 4, found: bytes.count) }
        let window = Int(u32(12))
        guard window >= 2 else { throw .notAModel }
        self.buckets = buckets
        self.window = window
        bias = f32(16)
        highThreshold = Double(f32(20))
        mediumThreshold = Double(f32(24))
        weights = (0..<buckets).map { f32(28 + $0 * 4) }
    }

    /// The model shipped with the gateway.
    public static func bundled() throws -> ClassifierModel {
        guard let url = Bundle.module.url(forResource: "injection-classifier", withExtension: "bin") else {
            throw ClassifierModelError.missingResource
        }
        return try ClassifierModel(data: try Data(contentsOf: url))
    }

    /// The probability that `text` is an attack: the highest over windows of `window` words
    /// (half-overlapping), so that an attack inside a long document is not diluted by it.
    public func score(_ text: NormalizedText) -> Double {
        let z = logit(text)
        return z < -30 ? 0 : 1 / (1 + exp(-Double(z)))
    }

    /// The score before the logistic function: the highest window's bias plus the weights of
    /// the distinct features in it (presence, not counts: a word repeated a hundred times
    /// weighs what it weighs once).
    public func logit(_ text: NormalizedText) -> Float {
        let count = text.wordRanges.count
        guard count > 0 else { return bias }
        // Every word's features (its own, its pair with the word before, its character grams), flat.
        var hashes: [Int] = []
        hashes.reserveCapacity(count * 10)
        var firstHash = [Int](repeating: 0, count: count + 1)
        let mask = UInt32(buckets - 1)
        text.wordBytes.withUnsafeBufferPointer { bytes in
            var previous: Range<Int>?
            for (index, range) in text.wordRanges.enumerated() {
                firstHash[index] = hashes.count
                hashes.append(Int(Self.hash(prefix: Self.wordPrefix, bytes, range) & mask))
                if let previous {
                    var hash = Self.hash(prefix: Self.pairPrefix, bytes, previous)
                    hash = Self.mix(hash, 0x20)
                    hash = Self.mix(hash, bytes, range)
                    hashes.append(Int(hash & mask))
                }
                Self.characterGrams(bytes, range) { hashes.append(Int($0 & mask)) }
                previous = range
            }
            firstHash[count] = hashes.count
        }
        var starts = [0]
        if count > window {
            starts = Array(stride(from: 0, through: count - window, by: window / 2))
            if starts.last != count - window { starts.append(count - window) }
        }
        // A feature counts once per window: `seen[bucket]` holds the last window (numbered from 1)
        // that counted it.
        var best = -Float.infinity
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: buckets) { seen in
            seen.initialize(repeating: 0)
            weights.withUnsafeBufferPointer { weights in
                hashes.withUnsafeBufferPointer { hashes in
                    var stamp: UInt16 = 0
                    for start in starts {
                        if stamp == UInt16.max {
                            seen.update(repeating: 0)
                            stamp = 0
                        }
                        stamp += 1
                        var sum = bias
                        for position in firstHash[start]..<firstHash[min(start + window, count)] {
                            let bucket = hashes[position]
                            if seen[bucket] != stamp {
                                seen[bucket] = stamp
                                sum += weights[bucket]
                            }
                        }
                        best = max(best, sum)
                    }
                }
            }
        }
        return best
    }

    /// The hashes of the character 4-grams of the word padded with `<` and `>` (the whole
    /// padded word when it has four characters or fewer), counted in Unicode scalars.
    private static func characterGrams(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ emit: (UInt32) -> Void) {
        // Where each scalar of the padded word starts: `<` is -1 and `>` is range.upperBound
        // (virtual positions); the word's scalars start at bytes that are not continuations.
        withUnsafeTemporaryAllocation(of: Int.self, capacity: range.count + 3) { starts in
            var scalars = 0
            starts[scalars] = -1
            scalars += 1
            for offset in range where bytes[offset] & 0xC0 != 0x80 {
                starts[scalars] = offset
                scalars += 1
            }
            starts[scalars] = range.upperBound
            scalars += 1
            starts[scalars] = range.upperBound + 1   // the end of `>`
            @inline(__always) func mixScalar(_ hash: UInt32, _ i: Int) -> UInt32 {
                let low = starts[i]
                if low < 0 { return mix(hash, 0x3C) }
                if low == range.upperBound { return mix(hash, 0x3E) }
                return mix(hash, bytes, low..<starts[i + 1])
            }
            if scalars <= 4 {
                var hash = gramPrefix
                for i in 0..<scalars { hash = mixScalar(hash, i) }
                emit(hash)
                return
            }
            for first in 0...(scalars - 4) {
                var hash = gramPrefix
                hash = mixScalar(hash, first)
                hash = mixScalar(hash, first + 1)
                hash = mixScalar(hash, first + 2)
                hash = mixScalar(hash, first + 3)
                emit(hash)
            }
        }
    }

    // FNV-1a (32 bit), the trainer's hash. Features are hashed as "w|word", "b|previous word",
    // "c|gram".
    static let offsetBasis: UInt32 = 0x811C_9DC5
    static let wordPrefix = mix(mix(offsetBasis, 0x77), 0x7C)
    static let pairPrefix = mix(mix(offsetBasis, 0x62), 0x7C)
    static let gramPrefix = mix(mix(offsetBasis, 0x63), 0x7C)

    @inline(__always) static func mix(_ hash: UInt32, _ byte: UInt8) -> UInt32 { (hash ^ UInt32(byte)) &* 0x0100_0193 }

    @inline(__always) static func mix(_ hash: UInt32, _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> UInt32 {
        var hash = hash
        for offset in range { hash = mix(hash, bytes[offset]) }
        return hash
    }

    @inline(__always) static func hash(prefix: UInt32, _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> UInt32 {
        mix(prefix, bytes, range)
    }
}

public enum ClassifierModelError: Error, CustomStringConvertible {
    case missingResource
    case notAModel
    case unsupportedVersion(Int)
    case truncated(expected: Int, found: Int)

    public var description: String {
        switch self {
        case .missingResource: "the injection classifier's weights are not in the bundle"
        case .notAModel: "not an injection classifier model (bad header)"
        case .unsupportedVersion(let version): "classifier model version \(version) is not supported"
        case .truncated(let expected, let found): "classifier model is \(found) bytes, expected \(expected)"
        }
    }
}

/// The classifier tier against prompt injection and jailbreaks: asked when the rule tier did
/// not block. A score at or above the model's high threshold is a high-risk finding; between
/// the medium and high thresholds a medium one (uncertain: flagged by default, and what
/// makes an LLM-judge tier look).
public struct ClassifierGuard: InputGuard {
    public let name = "injection_classifier"
    public let tier = GuardTier.classifier
    public let model: ClassifierModel

    public init(model: ClassifierModel) {
        self.model = model
    }

    /// The tier with the shipped model, loaded once (an error if the resource is missing or damaged).
    public static let shipped: Result<ClassifierGuard, any Error> = Result { ClassifierGuard(model: try ClassifierModel.bundled()) }

    public func inspect(_ input: GuardInput) async -> [GuardFinding] {
        input.findingsInUntrusted { inspect($0, segment: $1) }
    }

    public func inspect(_ text: NormalizedText, segment: Int? = nil) -> [GuardFinding] {
        let score = model.score(text)
        let risk: RiskLevel
        if score >= model.highThreshold {
            risk = .high
        } else if score >= model.mediumThreshold {
            risk = .medium
        } else {
            return []
        }
        return [GuardFinding(guardName: name, category: .promptInjection, risk: risk, score: score,
                             reason: "classifier score \(Int((score * 100).rounded()))%", segment: segment)]
    }
}
