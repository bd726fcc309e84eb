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
        let hashes = Self.featureHashes(text, mask: UInt32(buckets - 1))
        let half = window / 2
        // Windows start every half window, and the last one ends at the last word. Cut into blocks
        // of half a window, window k is blocks k and k + 1, so each block is read once: its
        // distinct features' weights, and separately those of them the block before lacked.
        let blocks = count > window && window % 2 == 0 ? (count - window) / half + 2 : 0
        // `seen[bucket]`: the stamp of the last block (or window) that counted the bucket; stamps
        // count up from 1, and when they run out the array is cleared and they start again.
        var best = -Float.infinity
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: buckets) { seen in
            seen.initialize(repeating: 0)
            weights.withUnsafeBufferPointer { weights in
                hashes.features.withUnsafeBufferPointer { features in
                    var stamp: UInt16 = 0
                    func positions(ofBlock block: Int) -> Range<Int> { hashes.firstOfWord[block * half]..<hashes.firstOfWord[(block + 1) * half] }
                    var previousSum: Float = 0
                    for block in 0..<blocks {
                        if stamp >= UInt16.max - 1 {
                            // Start the stamps again, the block before keeping its mark.
                            seen.update(repeating: 0)
                            for position in positions(ofBlock: block - 1) { seen[Int(features[position])] = 1 }
                            stamp = 1
                        }
                        stamp += 1
                        var sum: Float = 0
                        var new: Float = 0
                        for position in positions(ofBlock: block) {
                            let bucket = Int(features[position])
                            let last = seen[bucket]
                            guard last != stamp else { continue }
                            seen[bucket] = stamp
                            sum += weights[bucket]
                            if last != stamp - 1 { new += weights[bucket] }
                        }
                        if block > 0 { best = max(best, bias + previousSum + new) }
                        previousSum = sum
                    }
                    /// One window read as a whole, with a stamp of its own.
                    func whole(from start: Int) -> Float {
                        if stamp == UInt16.max {
                            seen.update(repeating: 0)
                            stamp = 0
                        }
                        stamp += 1
                        var sum = bias
                        for position in hashes.firstOfWord[start]..<hashes.firstOfWord[min(start + window, count)] {
                            let bucket = Int(features[position])
                            if seen[bucket] != stamp {
                                seen[bucket] = stamp
                                sum += weights[bucket]
                            }
                        }
                        return sum
                    }
                    if blocks > 0 {
                        // The last window, when it does not start on a block.
                        let lastStart = count - window
                        if lastStart % half != 0 { best = max(best, whole(from: lastStart)) }
                    } else {
                        // The text fits one window, or an odd window cannot be cut in halves.
                        for start in windowStarts(count) { best = max(best, whole(from: start)) }
                    }
                }
            }
        }
        return best
    }

    /// Where the windows over `count` words start: every half window, and the last one ends at
    /// the last word (one window from 0 when the text fits it).
    func windowStarts(_ count: Int) -> [Int] {
        guard count > window else { return [0] }
        var starts = Array(stride(from: 0, through: count - window, by: max(1, window / 2)))
        if starts.last != count - window { starts.append(count - window) }
        return starts
    }

    /// `logit` the plain way: every window read whole into a set (for checking the block sums).
    public func logitReadingEachWindow(_ text: NormalizedText) -> Float {
        let count = text.wordRanges.count
        guard count > 0 else { return bias }
        let hashes = Self.featureHashes(text, mask: UInt32(buckets - 1))
        return windowStarts(count).map { start in
            let buckets = Set(hashes.features[hashes.firstOfWord[start]..<hashes.firstOfWord[min(start + window, count)]])
            return buckets.reduce(bias) { $0 + weights[Int($1)] }
        }.max() ?? bias
    }

    /// Every word's features (its own, its pair with the word before, its character grams) as
    /// bucket numbers, flat, with where each word's begin. A word met again reuses the features
    /// computed the first time (most words of a long text are repeats): a small open-addressed
    /// table keyed by the word's hash, confirmed by its bytes.
    static func featureHashes(_ text: NormalizedText, mask: UInt32) -> (features: [UInt32], firstOfWord: [Int]) {
        let count = text.wordRanges.count
        var features: [UInt32] = []
        features.reserveCapacity(count * 10)
        var firstOfWord = [Int](repeating: 0, count: count + 1)
        var capacity = 16
        while capacity < count && capacity < 1 << 16 { capacity <<= 1 }
        // Per table slot: the word's hash, its first occurrence (word index + 1; 0 = empty), the
        // FNV state of its pair prefix, and where its own features sit in `features`.
        var slotHash = [UInt32](repeating: 0, count: capacity)
        var slotWord = [Int32](repeating: 0, count: capacity)
        var slotPairState = [UInt32](repeating: 0, count: capacity)
        var slotFeatures = [Int32](repeating: 0, count: capacity)
        var filled = 0
        text.wordBytes.withUnsafeBufferPointer { bytes in
            text.wordRanges.withUnsafeBufferPointer { words in
                var previousPairState: UInt32?
                for index in 0..<count {
                    let range = words[index]
                    firstOfWord[index] = features.count
                    let wordHash = Self.hash(prefix: Self.wordPrefix, bytes, range)
                    // Find the word, or the empty slot where it belongs.
                    var slot = Int(wordHash) & (capacity - 1)
                    var known = -1
                    while slotWord[slot] != 0 {
                        if slotHash[slot] == wordHash {
                            let other = words[Int(slotWord[slot]) - 1]
                            if other.count == range.count, memcmp(bytes.baseAddress! + other.lowerBound, bytes.baseAddress! + range.lowerBound,
                                                                  range.count) == 0 {
                                known = slot
                                break
                            }
                        }
                        slot = (slot + 1) & (capacity - 1)
                    }
                    features.append(wordHash & mask)
                    if let previousPairState { features.append(Self.mix(previousPairState, bytes, range) & mask) }
                    let pairState: UInt32
                    if known >= 0 {
                        // The grams follow the word's own feature at its first occurrence; their
                        // count is the span up to the next word's first feature (less its pair).
                        pairState = slotPairState[known]
                        let first = Int(slotFeatures[known])
                        let wordIndex = Int(slotWord[known]) - 1
                        let firstGram = first + (wordIndex > 0 ? 2 : 1)
                        let end = firstOfWord[wordIndex + 1]
                        for position in firstGram..<end { features.append(features[position]) }
                    } else {
                        pairState = Self.mix(Self.hash(prefix: Self.pairPrefix, bytes, range), 0x20)
                        let first = firstOfWord[index]
                        Self.characterGrams(bytes, range) { features.append($0 & mask) }
                        if filled * 4 < capacity * 3 {   // a full table stops learning words, the features stay right
                            slotHash[slot] = wordHash
                            slotWord[slot] = Int32(index + 1)
                            slotPairState[slot] = pairState
                            slotFeatures[slot] = Int32(first)
                            filled += 1
                        }
                    }
                    previousPairState = pairState
                }
            }
        }
        firstOfWord[count] = features.count
        return (features, firstOfWord)
    }

    /// The hashes of the character 4-grams of the word padded with `<` and `>` (the whole
    /// padded word when it has four characters or fewer), counted in Unicode scalars.
    private static func characterGrams(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ emit: (UInt32) -> Void) {
        // ASCII words (most words): scalars are bytes; the padded word's 4-byte windows.
        if range.count >= 3, !bytes[range].contains(where: { $0 >= 0x80 }) {
            let low = range.lowerBound
            let high = range.upperBound
            emit(mix(mix(mix(mix(gramPrefix, 0x3C), bytes[low]), bytes[low + 1]), bytes[low + 2]))
            var first = low
            while first + 3 < high {
                emit(mix(mix(mix(mix(gramPrefix, bytes[first]), bytes[first + 1]), bytes[first + 2]), bytes[first + 3]))
                first += 1
            }
            emit(mix(mix(mix(mix(gramPrefix, bytes[high - 3]), bytes[high - 2]), bytes[high - 1]), 0x3E))
            return
        }
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
