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

    /// The trie of stems over UTF-8 bytes, a double array: node `n`'s child for `byte` is
    /// `base[n] + byte` when `check` there names `n` — one load and one compare per byte, whatever
    /// the fan-out (a Cyrillic lead byte has dozens of children, which a list of edges made a
    /// scan of dozens of compares). The root is node 0. Each node is one 16-byte record,
    /// `nodes[4n ..< 4n + 4]` = base, check, first hit, end of hits, so a step touches one cache
    /// line; the (phrase, slot) pairs satisfied by stems ending at `n` are
    /// `hits[first hit ..< end of hits]`.
    private let nodes: [Int32]
    /// Each a (phrase, slot) pair with what the hot loop needs of its phrase, in one record.
    private let hits: [Hit]
    /// The phrases it was built from.
    let phrases: [Phrase]
    private let ids: [Int]
    private let phraseCount: Int
    private let maximumSlots: Int

    /// A stem's place in a phrase: `state` is the (phrase, slot) pair's number
    /// (`phrase * maximumSlots + slot`).
    private struct Hit: Sendable {
        var state: Int32
        var phrase: Int32
        var slot: Int32
        var gap: Int16
        var isLast: Bool
    }

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

    /// Compiles two rule sets into one matcher, so that one walk over a text's words serves
    /// both: the first set's phrases have ids `0 ..< first.count`, the second's follow.
    static func compile<First: PhraseRule, Second: PhraseRule>(_ first: [First], _ second: [Second])
        -> (first: [First], second: [Second], matcher: PhraseMatcher) {
        let (firstRules, firstMatcher) = compile(first)
        let (secondRules, secondMatcher) = compile(second)
        let phrases = firstMatcher.phrases + secondMatcher.phrases.map { Phrase(id: $0.id + firstRules.count, slots: $0.slots, gap: $0.gap) }
        return (firstRules, secondRules, PhraseMatcher(phrases: phrases))
    }

    public init(phrases: [Phrase]) {
        self.phrases = phrases
        // Built as nodes with child lists, then laid out flat.
        var children: [[(byte: UInt8, node: Int32)]] = [[]]
        var nodeHits: [[(phrase: Int32, slot: Int32)]] = [[]]
        var stemNodes: [String: Int] = [:]
        func insert(_ stem: String) -> Int {
            if let node = stemNodes[stem] { return node }
            var node = 0
            for byte in stem.utf8 {
                if let next = children[node].first(where: { $0.byte == byte }) {
                    node = Int(next.node)
                } else {
                    children.append([])
                    nodeHits.append([])
                    children[node].append((byte, Int32(children.count - 1)))
                    node = children.count - 1
                }
            }
            stemNodes[stem] = node
            return node
        }
        var ids: [Int] = []
        var maximumSlots = 1
        for (index, phrase) in phrases.enumerated() {
            ids.append(phrase.id)
            maximumSlots = max(maximumSlots, phrase.slots.count)
            for (slot, stems) in phrase.slots.enumerated() {
                for stem in stems { nodeHits[insert(stem)].append((Int32(index), Int32(slot))) }
            }
        }
        // Double-array placement, breadth first: each node's children go where the slots
        // `base + byte` are all free (first fit). Slot 0 is the root; -1 marks a free slot or a
        // node without children.
        var slotOf = [Int](repeating: -1, count: children.count)
        slotOf[0] = 0
        var base: [Int32] = [-1]
        var check: [Int32] = [-1]
        var used: [Bool] = [true]
        var firstFree = 1
        var queue = [0]
        var head = 0
        while head < queue.count {
            let node = queue[head]
            head += 1
            let edges = children[node].sorted { $0.byte < $1.byte }
            guard let lowest = edges.first?.byte else { continue }
            var candidate = max(1, firstFree - Int(lowest))
            while edges.contains(where: { candidate + Int($0.byte) < used.count && used[candidate + Int($0.byte)] }) { candidate += 1 }
            let needed = candidate + Int(edges.last!.byte) + 1
            if needed > used.count {
                used += [Bool](repeating: false, count: needed - used.count)
                base += [Int32](repeating: -1, count: needed - base.count)
                check += [Int32](repeating: -1, count: needed - check.count)
            }
            base[slotOf[node]] = Int32(candidate)
            for edge in edges {
                let slot = candidate + Int(edge.byte)
                used[slot] = true
                check[slot] = Int32(slotOf[node])
                slotOf[Int(edge.node)] = slot
                queue.append(Int(edge.node))
            }
            while firstFree < used.count && used[firstFree] { firstFree += 1 }
        }
        // Room for any byte past the last base, so that a lookup never leaves the arrays.
        base += [Int32](repeating: -1, count: 256)
        check += [Int32](repeating: -1, count: 256)
        var hitsAt = [[(phrase: Int32, slot: Int32)]](repeating: [], count: base.count)
        for node in children.indices { hitsAt[slotOf[node]] = nodeHits[node] }
        var records: [Int32] = []
        records.reserveCapacity(4 * base.count)
        var hits: [Hit] = []
        for (slot, nodeHits) in hitsAt.enumerated() {
            records += [base[slot], check[slot], Int32(hits.count), Int32(hits.count + nodeHits.count)]
            for hit in nodeHits {
                let phrase = phrases[Int(hit.phrase)]
                hits.append(Hit(state: hit.phrase * Int32(maximumSlots) + hit.slot, phrase: hit.phrase, slot: hit.slot,
                                gap: Int16(clamping: phrase.gap), isLast: Int(hit.slot) == phrase.slots.count - 1))
            }
        }
        nodes = records
        self.hits = hits
        self.ids = ids
        self.maximumSlots = maximumSlots
        phraseCount = phrases.count
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
        var matches: [Match] = []
        // Per (phrase, slot): the latest word that completed the phrase up to that slot and where
        // that partial match began, side by side (`state[2 * pair]`, `state[2 * pair + 1]`); -1 for none.
        var state = [Int32](repeating: -1, count: 2 * phraseCount * maximumSlots)
        var found = [Bool](repeating: false, count: phraseCount)
        var updates: [(pair: Int, start: Int32)] = []
        bytes.withUnsafeBufferPointer { bytes in
            nodes.withUnsafeBufferPointer { nodes in
                hits.withUnsafeBufferPointer { hits in
                    state.withUnsafeMutableBufferPointer { state in
                        for (position, word) in words.enumerated() {
                            let here = Int32(position)
                            // Read only what earlier words reached; write after, so that one word never
                            // fills two consecutive slots of a phrase.
                            var offset = word.lowerBound
                            var node = 0
                            while offset < word.upperBound {
                                // The child for the next byte, or the end of the stems this word follows.
                                let base = Int(nodes[4 * node])
                                let next = base + Int(bytes[offset])
                                guard base >= 0, nodes[4 * next + 1] == Int32(node) else { break }
                                node = next
                                offset += 1
                                for hitIndex in Int(nodes[4 * node + 2])..<Int(nodes[4 * node + 3]) {
                                    let hit = hits[hitIndex]
                                    let pair = Int(hit.state)
                                    let start: Int32
                                    if hit.slot == 0 {
                                        start = here
                                    } else {
                                        let previous = state[2 * pair - 2]
                                        guard previous >= 0, here - previous - 1 <= Int32(hit.gap) else { continue }
                                        start = state[2 * pair - 1]
                                    }
                                    if hit.isLast {
                                        guard !found[Int(hit.phrase)] else { continue }
                                        found[Int(hit.phrase)] = true
                                        matches.append(Match(phraseID: ids[Int(hit.phrase)], words: Int(start)..<(position + 1)))
                                    } else {
                                        updates.append((pair, start))
                                    }
                                }
                            }
                            guard !updates.isEmpty else { continue }
                            for (pair, start) in updates {
                                state[2 * pair] = here
                                state[2 * pair + 1] = start
                            }
                            updates.removeAll(keepingCapacity: true)
                        }
                    }
                }
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
