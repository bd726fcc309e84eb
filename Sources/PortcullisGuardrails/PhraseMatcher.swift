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

    /// The trie of stems over UTF-8 bytes and the phrases, laid out in one flat table for the hot
    /// loop (`Layout` names the sections). The trie is a double array: node `n`'s child for
    /// `byte` is `base[n] + byte` when `check` there names `n` — one load and one compare per
    /// byte, whatever the fan-out (a Cyrillic lead byte has dozens of children, which a list of
    /// edges made a scan of dozens of compares). The root is node 0. Each node is one 16-byte
    /// record, `nodes[4n ..< 4n + 4]` = base, check, first hit, end of hits, so a step touches
    /// one cache line. The (phrase, slot) pairs satisfied by stems ending at `n` are
    /// `hitPhrases/hitSlots[first hit ..< end of hits]`; per phrase its gap and last slot.
    private let table: [Int32]
    /// The phrases it was built from.
    let phrases: [Phrase]
    private let layout: Layout
    private let ids: [Int]
    private let phraseCount: Int
    private let maximumSlots: Int

    private struct Layout: Sendable {
        var nodes = 0, hitPhrases = 0, hitSlots = 0, gaps = 0, lastSlots = 0
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
        var gaps: [Int32] = []
        var lastSlots: [Int32] = []
        var ids: [Int] = []
        var maximumSlots = 1
        for (index, phrase) in phrases.enumerated() {
            gaps.append(Int32(phrase.gap))
            lastSlots.append(Int32(phrase.slots.count - 1))
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
        var hitPhrases: [Int32] = []
        var hitSlots: [Int32] = []
        for (slot, hits) in hitsAt.enumerated() {
            records += [base[slot], check[slot], Int32(hitPhrases.count), Int32(hitPhrases.count + hits.count)]
            for hit in hits {
                hitPhrases.append(hit.phrase)
                hitSlots.append(hit.slot)
            }
        }
        var table: [Int32] = []
        var layout = Layout()
        func section(_ values: [Int32]) -> Int {
            defer { table += values }
            return table.count
        }
        layout.nodes = section(records)
        layout.hitPhrases = section(hitPhrases)
        layout.hitSlots = section(hitSlots)
        layout.gaps = section(gaps)
        layout.lastSlots = section(lastSlots)
        self.table = table
        self.layout = layout
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
        let width = maximumSlots
        let count = phraseCount * width
        var matches: [Match] = []
        // Per (phrase, slot): the latest word that completed the phrase up to that slot
        // (`reached`, the first `count` entries) and where that partial match began (`started`,
        // the next `count`); -1 for none. Then per phrase whether it was found (1).
        var state = [Int32](repeating: -1, count: 2 * count + phraseCount)
        var updates: [(index: Int, start: Int32)] = []
        let layout = layout
        bytes.withUnsafeBufferPointer { bytes in
            table.withUnsafeBufferPointer { table in
                state.withUnsafeMutableBufferPointer { state in
                    for (position, word) in words.enumerated() where !word.isEmpty {
                        let here = Int32(position)
                        // Read only what earlier words reached; write after, so that one word never
                        // fills two consecutive slots of a phrase.
                        updates.removeAll(keepingCapacity: true)
                        var offset = word.lowerBound
                        var node = 0
                        while true {
                            // The child for the next byte, or the end of the stems this word follows.
                            let base = Int(table[layout.nodes + 4 * node])
                            let next = base + Int(bytes[offset])
                            guard base >= 0, table[layout.nodes + 4 * next + 1] == Int32(node) else { break }
                            node = next
                            for hit in Int(table[layout.nodes + 4 * node + 2])..<Int(table[layout.nodes + 4 * node + 3]) {
                                let phraseIndex = Int(table[layout.hitPhrases + hit])
                                guard state[2 * count + phraseIndex] < 0 else { continue }
                                let slot = Int(table[layout.hitSlots + hit])
                                let index = phraseIndex * width + slot
                                let start: Int32
                                if slot == 0 {
                                    start = here
                                } else {
                                    let previous = state[index - 1]
                                    guard previous >= 0, here - previous - 1 <= table[layout.gaps + phraseIndex] else { continue }
                                    start = state[count + index - 1]
                                }
                                if Int32(slot) == table[layout.lastSlots + phraseIndex] {
                                    state[2 * count + phraseIndex] = 1
                                    matches.append(Match(phraseID: ids[phraseIndex], words: Int(start)..<(position + 1)))
                                } else {
                                    updates.append((index, start))
                                }
                            }
                            offset += 1
                            guard offset < word.upperBound else { break }
                        }
                        for (index, start) in updates {
                            state[index] = here
                            state[count + index] = start
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
