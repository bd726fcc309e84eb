import Foundation

/// An approximate nearest-neighbour index over unit vectors (similarity is the dot product, the
/// cosine): a hierarchical navigable small-world graph. Each vector is a node on layer 0 and,
/// with geometrically falling odds, on the layers above; a search descends greedily from the
/// top layer's entry point and widens to `searchBreadth` candidates on layer 0. Insertion links
/// a node to the nearest nodes that are not already better reached through each other, so the
/// graph stays navigable across clusters.
///
/// A value type without locks: its owner serialises inserts and may search a copy.
public struct VectorIndex: Sendable {
    public let dimensions: Int
    /// Links per node on the upper layers (twice as many on layer 0).
    public let links: Int
    public let buildBreadth: Int
    public var searchBreadth: Int

    private var vectors: [Float] = []
    /// For each node, its neighbours on each of its layers.
    private var neighbours: [[[Int32]]] = []
    private var entryPoint: Int32 = -1
    private var topLayer = -1
    private var random: UInt64

    public var count: Int { neighbours.count }

    public init(dimensions: Int, links: Int = 16, buildBreadth: Int = 100, searchBreadth: Int = 64, seed: UInt64 = 0x5EED) {
        precondition(dimensions > 0 && links >= 2)
        self.dimensions = dimensions
        self.links = links
        self.buildBreadth = max(buildBreadth, links)
        self.searchBreadth = searchBreadth
        self.random = seed | 1
    }

    /// The stored vector of `node`.
    public func vector(_ node: Int32) -> ArraySlice<Float> {
        vectors[Int(node) * dimensions..<(Int(node) + 1) * dimensions]
    }

    /// Adds `vector` (of `dimensions` values, unit length) and returns its node number (insertion order from 0).
    @discardableResult
    public mutating func insert(_ vector: [Float]) -> Int32 {
        precondition(vector.count == dimensions, "vector of \(vector.count) values in an index of \(dimensions)")
        let node = Int32(neighbours.count)
        let layer = randomLayer()
        vectors += vector
        neighbours.append(Array(repeating: [], count: layer + 1))
        guard entryPoint >= 0 else {
            entryPoint = node
            topLayer = layer
            return node
        }
        var entry = entryPoint
        var level = topLayer
        while level > layer {
            entry = greedy(vector, from: entry, layer: level)
            level -= 1
        }
        var entries = [entry]
        for level in stride(from: min(layer, topLayer), through: 0, by: -1) {
            let found = searchLayer(vector, entries: entries, breadth: buildBreadth, layer: level)
            let chosen = diverse(found, limit: links)
            neighbours[Int(node)][level] = chosen.map(\.node)
            let limit = level == 0 ? 2 * links : links
            for neighbour in chosen {
                var list = neighbours[Int(neighbour.node)][level]
                list.append(node)
                if list.count > limit {
                    // Over its bound, a node keeps its nearest links (the new node's diverse choice
                    // already spread the graph; re-choosing here would cost a square of its links).
                    let base = self.vector(neighbour.node)
                    let scored = list.map { Candidate(node: $0, similarity: similarity(base, self.vector($0))) }
                    list = scored.sorted { $0.similarity > $1.similarity }.prefix(limit).map(\.node)
                }
                neighbours[Int(neighbour.node)][level] = list
            }
            entries = found.map(\.node)
        }
        if layer > topLayer {
            topLayer = layer
            entryPoint = node
        }
        return node
    }

    /// The `limit` nodes most similar to `query`, most similar first.
    public func search(_ query: [Float], limit: Int = 1) -> [(node: Int32, similarity: Float)] {
        guard entryPoint >= 0, query.count == dimensions else { return [] }
        var entry = entryPoint
        var level = topLayer
        while level > 0 {
            entry = greedy(query, from: entry, layer: level)
            level -= 1
        }
        return searchLayer(query, entries: [entry], breadth: max(searchBreadth, limit), layer: 0).prefix(limit).map { ($0.node, $0.similarity) }
    }

    /// Every node by similarity to `query` (exact, for checking the graph's recall).
    public func exhaustive(_ query: [Float], limit: Int = 1) -> [(node: Int32, similarity: Float)] {
        (0..<Int32(count)).map { ($0, similarity(query[...], vector($0))) }.sorted { $0.1 > $1.1 }.prefix(limit).map { $0 }
    }

    struct Candidate {
        var node: Int32
        var similarity: Float
    }

    private func greedy(_ query: [Float], from start: Int32, layer: Int) -> Int32 {
        var current = start
        var best = similarity(query[...], vector(start))
        var improved = true
        while improved {
            improved = false
            for neighbour in neighbours[Int(current)][layer] {
                let score = similarity(query[...], vector(neighbour))
                if score > best {
                    best = score
                    current = neighbour
                    improved = true
                }
            }
        }
        return current
    }

    /// The best `breadth` nodes reachable on `layer` from `entries`, most similar first.
    private func searchLayer(_ query: [Float], entries: [Int32], breadth: Int, layer: Int) -> [Candidate] {
        var visited = Set<Int32>(minimumCapacity: breadth * 8)
        var frontier = Heap<Candidate>(by: { $0.similarity > $1.similarity })   // best first
        var kept = Heap<Candidate>(by: { $0.similarity < $1.similarity })       // worst first
        for entry in entries where visited.insert(entry).inserted {
            let candidate = Candidate(node: entry, similarity: similarity(query[...], vector(entry)))
            frontier.push(candidate)
            kept.push(candidate)
            if kept.count > breadth { kept.pop() }
        }
        while let next = frontier.pop() {
            if kept.count >= breadth, let worst = kept.top, next.similarity < worst.similarity { break }
            for neighbour in neighbours[Int(next.node)][layer] where visited.insert(neighbour).inserted {
                let score = similarity(query[...], vector(neighbour))
                if kept.count < breadth || score > kept.top!.similarity {
                    let candidate = Candidate(node: neighbour, similarity: score)
                    frontier.push(candidate)
                    kept.push(candidate)
                    if kept.count > breadth { kept.pop() }
                }
            }
        }
        return kept.elements.sorted { $0.similarity > $1.similarity }
    }

    /// From candidates sorted most similar first, those not closer to an already chosen one
    /// than to the query (the neighbourhood heuristic), topped up with the nearest rest.
    private func diverse(_ sorted: [Candidate], limit: Int) -> [Candidate] {
        var chosen: [Candidate] = []
        var skipped: [Candidate] = []
        for candidate in sorted {
            guard chosen.count < limit else { break }
            let vector = self.vector(candidate.node)
            if chosen.allSatisfy({ similarity(vector, self.vector($0.node)) < candidate.similarity }) {
                chosen.append(candidate)
            } else {
                skipped.append(candidate)
            }
        }
        for candidate in skipped where chosen.count < limit { chosen.append(candidate) }
        return chosen
    }

    private mutating func randomLayer() -> Int {
        // xorshift64*; the layer is ⌊−ln(u) / ln(links)⌋, capped.
        random ^= random >> 12
        random ^= random << 25
        random ^= random >> 27
        let bits = (random &* 2_685_821_657_736_338_717) >> 11
        let uniform = (Double(bits) + 1) / Double(1 << 53)
        return min(16, Int(-Foundation.log(uniform) / Foundation.log(Double(links))))
    }

    @inline(__always)
    func similarity(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Float {
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in Self.dot(a.baseAddress!, b.baseAddress!, count: dimensions) }
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var low = SIMD4<Float>(), high = SIMD4<Float>()
        var index = 0
        while index + 8 <= count {
            low += UnsafeRawPointer(a + index).loadUnaligned(as: SIMD4<Float>.self) * UnsafeRawPointer(b + index).loadUnaligned(as: SIMD4<Float>.self)
            high += UnsafeRawPointer(a + index + 4).loadUnaligned(as: SIMD4<Float>.self)
                * UnsafeRawPointer(b + index + 4).loadUnaligned(as: SIMD4<Float>.self)
            index += 8
        }
        var sum = (low + high).sum()
        while index < count {
            sum += a[index] * b[index]
            index += 1
        }
        return sum
    }
}

/// A binary heap ordered by `precedes` (the top is the element that precedes all others).
struct Heap<Element> {
    private(set) var elements: [Element] = []
    let precedes: (Element, Element) -> Bool

    init(by precedes: @escaping (Element, Element) -> Bool) {
        self.precedes = precedes
    }

    var count: Int { elements.count }
    var top: Element? { elements.first }

    mutating func push(_ element: Element) {
        elements.append(element)
        var child = elements.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard precedes(elements[child], elements[parent]) else { break }
            elements.swapAt(child, parent)
            child = parent
        }
    }

    @discardableResult
    mutating func pop() -> Element? {
        guard !elements.isEmpty else { return nil }
        elements.swapAt(0, elements.count - 1)
        let top = elements.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var first = parent
            if left < elements.count, precedes(elements[left], elements[first]) { first = left }
            if right < elements.count, precedes(elements[right], elements[first]) { first = right }
            guard first != parent else { break }
            elements.swapAt(parent, first)
            parent = first
        }
        return top
    }
}
