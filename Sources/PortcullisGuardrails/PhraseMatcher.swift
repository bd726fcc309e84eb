/// Finds phrases in a word sequence: a phrase is a list of slots, each slot a set of word
/// stems (a word matches a stem when it starts with it), with up to `gap` other words allowed
/// between consecutive slots. All stems live in one trie, so each word is looked up once,
/// in time proportional to its length, however many phrases there are.
public struct PhraseMatcher: Sendable {
    public struct Phrase: Sendable {
        public var slots: [[String]]
        public var gap: Int
        public var id: Int

        public init(id: Int, slots: [[String]], gap: Int) {
            self.id = id
            self.slots = slots
            self.gap = gap
        }
    }

    /// A trie node over UTF-8 bytes; few children each, so a linear scan beats hashing.
    private struct Node: Sendable {
        var childBytes: [UInt8] = []
        var childNodes: [Int32] = []
        /// Stem ids ending here.
        var stems: [Int32] = []

        func child(_ byte: UInt8) -> Int32? {
            for index in childBytes.indices where childBytes[index] == byte { return childNodes[index] }
            return nil
        }
    }

    private var nodes: [Node] = [Node()]
    /// The root's children by byte (-1: none): every word starts there.
    private var rootChildren = [Int32](repeating: -1, count: 256)
    /// For each stem id, the (phrase, slot) pairs it satisfies.
    private var stemSlots: [[(phrase: Int32, slot: Int16)]] = []
    private var phrases: [Phrase] = []
    private var stemIDs: [String: Int32] = [:]
    /// Per phrase: allowed gap, index of its last slot, its id (flat, for the hot loop).
    private var gaps: [Int] = []
    private var lastSlots: [Int] = []
    private var ids: [Int] = []
    private var maximumSlots = 1

    /// Slot lists in which a stem of several words ("set aside") becomes a run of one-word
    /// slots: the slots without such stems first, then one variant per multi-word stem.
    public static func expandingMultiWordStems(_ slots: [[String]]) -> [[[String]]] {
        let base = slots.map { $0.filter { !$0.contains(" ") } }
        var variants = [base]
        for (index, slot) in slots.enumerated() {
            for stem in slot where stem.contains(" ") {
                let words = stem.split(separator: " ").map { [String($0)] }
                variants.append(Array(base[..<index]) + words + Array(base[(index + 1)...]))
            }
        }
        return variants.filter { $0.allSatisfy { !$0.isEmpty } }
    }

    /// Compiles rules into one matcher: each rule's multi-word stems expanded into variants
    /// (the returned rules, indexed by a match's `phraseID`).
    static func compile<Rule: PhraseRule>(_ rules: [Rule]) -> (rules: [Rule], matcher: PhraseMatcher) {
        var expanded: [Rule] = []
        var phrases: [Phrase] = []
        for rule in rules {
            for slots in expandingMultiWordStems(rule.slots) {
                var variant = rule
                variant.slots = slots
                phrases.append(Phrase(id: expanded.count, slots: slots, gap: rule.gap))
                expanded.append(variant)
            }
        }
        return (expanded, PhraseMatcher(phrases: phrases))
    }

    public init(phrases: [Phrase]) {
        for (index, phrase) in phrases.enumerated() {
            self.phrases.append(phrase)
            gaps.append(phrase.gap)
            lastSlots.append(phrase.slots.count - 1)
            ids.append(phrase.id)
            maximumSlots = max(maximumSlots, phrase.slots.count)
            for (slot, stems) in phrase.slots.enumerated() {
                for stem in stems {
                    let id = insert(stem)
                    stemSlots[Int(id)].append((Int32(index), Int16(slot)))
                }
            }
        }
        for (byte, child) in zip(nodes[0].childBytes, nodes[0].childNodes) { rootChildren[Int(byte)] = child }
    }

    private mutating func insert(_ stem: String) -> Int32 {
        if let id = stemIDs[stem] { return id }
        var node = 0
        for byte in stem.utf8 {
            if let next = nodes[node].child(byte) {
                node = Int(next)
            } else {
                nodes.append(Node())
                nodes[node].childBytes.append(byte)
                nodes[node].childNodes.append(Int32(nodes.count - 1))
                node = nodes.count - 1
            }
        }
        let id = Int32(stemSlots.count)
        stemSlots.append([])
        nodes[node].stems.append(id)
        stemIDs[stem] = id
        return id
    }

    /// A match: the phrase and the word range it covers.
    public struct Match: Sendable, Equatable {
        public var phraseID: Int
        public var words: Range<Int>
    }

    /// Every phrase found in `words` (each phrase at most once, at its first occurrence).
    ///
    /// For each phrase and slot it keeps only the latest word that completed the phrase up to
    /// that slot (and where that partial match began): the latest is always the best candidate
    /// for the next slot's gap, so one flat array replaces any list of partial matches.
    public func matches(in words: [String]) -> [Match] {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        for word in words {
            ranges.append(bytes.count..<(bytes.count + word.utf8.count))
            bytes.append(contentsOf: word.utf8)
        }
        return matches(in: bytes, words: ranges)
    }

    /// Every phrase found in the words `words` (spans of `bytes`).
    public func matches(in bytes: [UInt8], words: [Range<Int>]) -> [Match] {
        let width = maximumSlots
        var reachedAt = [Int32](repeating: -1, count: phrases.count * width)
        var startedAt = [Int32](repeating: -1, count: phrases.count * width)
        var found = [Bool](repeating: false, count: phrases.count)
        var matches: [Match] = []
        var updates: [(index: Int, start: Int32)] = []
        for (position, word) in words.enumerated() {
            let here = Int32(position)
            // Read only what earlier words reached; write after, so that one word never fills
            // two consecutive slots of a phrase.
            updates.removeAll(keepingCapacity: true)
            var node = 0
            for (offset, byte) in bytes[word].enumerated() {
                let next = offset == 0 ? rootChildren[Int(byte)] : (nodes[node].child(byte) ?? -1)
                guard next >= 0 else { break }
                node = Int(next)
                for stem in nodes[node].stems {
                    for hit in stemSlots[Int(stem)] {
                        let phraseIndex = Int(hit.phrase)
                        guard !found[phraseIndex] else { continue }
                        let slot = Int(hit.slot)
                        let base = phraseIndex * width
                        let start: Int32
                        if slot == 0 {
                            start = here
                        } else {
                            let previous = reachedAt[base + slot - 1]
                            guard previous >= 0, previous < here, Int(here - previous) - 1 <= gaps[phraseIndex] else { continue }
                            start = startedAt[base + slot - 1]
                        }
                        if slot == lastSlots[phraseIndex] {
                            found[phraseIndex] = true
                            matches.append(Match(phraseID: ids[phraseIndex], words: Int(start)..<(position + 1)))
                        } else {
                            updates.append((base + slot, start))
                        }
                    }
                }
            }
            for (index, start) in updates {
                reachedAt[index] = here
                startedAt[index] = start
            }
        }
        return matches.sorted { $0.words.lowerBound < $1.words.lowerBound }
    }
}

/// A rule made of a phrase: slots of stems with a gap.
protocol PhraseRule: Sendable {
    var slots: [[String]] { get set }
    var gap: Int { get }
}
