import Foundation
import NIOPosix
import PortcullisCore
import PortcullisEmbedder
import Synchronization

/// Turns a question into a unit-length vector for the semantic cache.
public protocol QuestionEmbedder: Sendable {
    /// The embedding of `text`, scaled to unit length; throws when it cannot be had.
    func embed(_ text: String) async throws -> [Float]
}

/// all-MiniLM-L6-v2 in process: the embedding runs on NIO's blocking thread pool, never on
/// the event loop that holds the request (one question takes a few milliseconds of one core).
public final class BuiltinEmbedder: QuestionEmbedder {
    public let encoder: SentenceEncoder
    private let pool: NIOThreadPool

    /// Loads the model from `directory`; throws `EmbedderError` when it is missing or damaged,
    /// or when this CPU lacks the vector instructions the encoder is compiled for.
    public init(directory: URL, pool: NIOThreadPool = .singleton) throws {
        if let missing = CPUFeatures.missingForEmbedder {
            throw EmbedderError.invalidModel("this CPU lacks \(missing), which the built-in embedder needs; use an embedding model group instead")
        }
        encoder = try Self.loaded(directory)
        self.pool = pool
    }

    /// Encoders already loaded, by directory: a restart of the gateway in one process (tests, a
    /// reload that rebuilds the cache) reads the 90 MB of weights once.
    private static let encoders = Mutex<[String: SentenceEncoder]>([:])

    private static func loaded(_ directory: URL) throws -> SentenceEncoder {
        let path = directory.standardizedFileURL.path
        if let encoder = encoders.withLock({ $0[path] }) { return encoder }
        let encoder = try SentenceEncoder(directory: directory)
        encoders.withLock { $0[path] = encoder }
        return encoder
    }

    public func embed(_ text: String) async throws -> [Float] {
        let encoder = self.encoder
        return try await pool.runIfActive { encoder.embed(text) }
    }
}

/// The semantic cache's memory of questions: for each partition (tenant, namespace, policy
/// and the request without its last user turn, hashed), a vector index of the questions
/// whose answers the exact cache holds, each pointing at its answer's key. A lookup embeds the
/// asked question (bounded by `timeout`: slower is a miss) and takes the most similar question
/// of the same partition at or above the threshold; questions of other tenants, system prompts,
/// tools or parameters are in other partitions and can never match.
public final class SemanticCache: Sendable {
    /// A remembered question close enough to the asked one.
    public struct Match: Sendable, Equatable {
        /// The key of the remembered question's answer in the exact cache.
        public var key: CacheKey
        public var similarity: Float
        /// Where it is in its partition (to forget it when its answer has gone).
        public var node: Int32
    }

    /// Why a lookup found nothing to compare.
    public enum Failure: String, Error, Sendable {
        case timeout
        case embedder
        case busy
    }

    struct Partition {
        var index: VectorIndex
        var keys: [CacheKey] = []
        /// Each node's question, for the detail check.
        var questions: [String] = []
        /// Each node's data subject (`CacheKey.subjectTag`), for erasure.
        var subjects: [String?] = []
        var forgotten = Set<Int32>()
        var lastUsed: UInt64 = 0

        /// A fresh partition of the nodes in `range` that are not forgotten and that `keep` accepts.
        func rebuilt(keeping range: Range<Int>, _ keep: (Int) -> Bool) -> Partition {
            var rebuilt = Partition(index: VectorIndex(dimensions: index.dimensions), lastUsed: lastUsed)
            for node in range where !forgotten.contains(Int32(node)) && keep(node) {
                rebuilt.index.insert(Array(index.vector(Int32(node))))
                rebuilt.keys.append(keys[node])
                rebuilt.questions.append(questions[node])
                rebuilt.subjects.append(subjects[node])
            }
            return rebuilt
        }
    }

    struct State {
        var partitions: [String: Partition] = [:]
        var entries = 0
        var clock: UInt64 = 0
    }

    /// The built-in embedder (nil: questions are embedded by a model group, passed to `embed`).
    public let embedder: (any QuestionEmbedder)?
    public let timeout: Duration
    public let maximumEntries: Int
    /// Embeddings running at once at most; past it a lookup is a miss rather than a queue.
    public let maximumPending: Int
    private let state = Mutex(State())
    private let pending = Atomic<Int>(0)
    /// Told of each embedding that failed or timed out.
    let observe: @Sendable (Failure) -> Void

    public init(embedder: (any QuestionEmbedder)?, timeoutSeconds: Double = 0.2,
                maximumEntries: Int = 100_000, maximumPending: Int = 64, observe: @escaping @Sendable (Failure) -> Void = { _ in }) {
        self.embedder = embedder
        self.timeout = .milliseconds(Int64((timeoutSeconds * 1000).rounded()))
        self.maximumEntries = max(1, maximumEntries)
        self.maximumPending = max(1, maximumPending)
        self.observe = observe
    }

    /// Questions remembered, over all partitions.
    public var count: Int { state.withLock { $0.entries } }

    /// The embedding of `question` by `embedder` (default the built-in one), or nil (counted)
    /// when it failed, was too slow, is saturated or gave a vector of another length.
    public func embed(_ question: String, by given: (any QuestionEmbedder)? = nil) async -> [Float]? {
        guard let embedder = given ?? self.embedder else {
            observe(.embedder)
            return nil
        }
        guard pending.add(1, ordering: .relaxed).newValue <= maximumPending else {
            pending.subtract(1, ordering: .relaxed)
            observe(.busy)
            return nil
        }
        let outcome = await race(embedder, question)
        switch outcome {
        case .success(let vector): return vector
        case .failure(let failure):
            observe(failure)
            return nil
        }
    }

    /// The embedding against the clock: whichever ends first answers. An embedding past its
    /// time runs on (a thread-pool job cannot be stopped) and still counts as pending until it
    /// ends, so that slow embeddings cannot pile up beyond `maximumPending`.
    private func race(_ embedder: any QuestionEmbedder, _ question: String) async -> Result<[Float], Failure> {
        let timeout = self.timeout
        return await withCheckedContinuation { (continuation: CheckedContinuation<Result<[Float], Failure>, Never>) in
            let answer = Mutex<CheckedContinuation<Result<[Float], Failure>, Never>?>(continuation)
            let resume = { @Sendable (result: Result<[Float], Failure>) in
                answer.withLock { waiting -> CheckedContinuation<Result<[Float], Failure>, Never>? in
                    defer { waiting = nil }
                    return waiting
                }?.resume(returning: result)
            }
            let clock = Task {
                try? await Task.sleep(for: timeout)
                if !Task.isCancelled { resume(.failure(.timeout)) }
            }
            Task {
                let result: Result<[Float], Failure>
                do {
                    let vector = try await embedder.embed(question)
                    result = !vector.isEmpty && vector.allSatisfy(\.isFinite) ? .success(vector) : .failure(.embedder)
                } catch {
                    result = .failure(.embedder)
                }
                clock.cancel()
                self.pending.subtract(1, ordering: .relaxed)
                resume(result)
            }
        }
    }

    /// The remembered question of `partition` most similar to `vector`, when at least
    /// `threshold` similar and, when `question` (the asked text) is given, differing from it in
    /// wording only (`QuestionDetails`).
    public func match(_ vector: [Float], partition: String, threshold: Double, question: String? = nil) -> Match? {
        state.withLock { state in
            state.clock += 1
            guard var entry = state.partitions[partition] else { return nil }
            entry.lastUsed = state.clock
            defer { state.partitions[partition] = entry }
            for found in entry.index.search(vector, limit: 4) where !entry.forgotten.contains(found.node) {
                guard Double(found.similarity) >= threshold else { return nil }
                let node = Int(found.node)
                if let question, QuestionDetails.difference(entry.questions[node], question) != nil { continue }
                return Match(key: entry.keys[node], similarity: found.similarity, node: found.node)
            }
            return nil
        }
    }

    /// Remembers that the answer under `key` answers `question` (embedded as `vector`) in
    /// `partition`, asked by the data subject `subject` (`CacheKey.subjectTag`).
    public func remember(_ vector: [Float], question: String, partition: String, key: CacheKey, subject: String? = nil) {
        guard !vector.isEmpty else { return }
        state.withLock { state in
            state.clock += 1
            var entry = state.partitions.removeValue(forKey: partition) ?? Partition(index: VectorIndex(dimensions: vector.count))
            // A partition's questions share one embedder; a vector of another length (the embedder changed) starts it afresh.
            if entry.index.dimensions != vector.count {
                state.entries -= entry.keys.count
                entry = Partition(index: VectorIndex(dimensions: vector.count))
            }
            // The same question asked again (its answer stored again) is not a second node.
            if let nearest = entry.index.search(vector, limit: 1).first, nearest.similarity > 0.9999, !entry.forgotten.contains(nearest.node),
               entry.questions[Int(nearest.node)] == question {
                entry.keys[Int(nearest.node)] = key
                entry.subjects[Int(nearest.node)] = subject
            } else {
                entry.index.insert(vector)
                entry.keys.append(key)
                entry.questions.append(question)
                entry.subjects.append(subject)
                state.entries += 1
            }
            entry.lastUsed = state.clock
            state.partitions[partition] = entry
            Self.evict(&state, keeping: partition, limit: maximumEntries)
        }
    }

    /// Forgets one question whose answer is no longer in the exact cache.
    public func forget(_ match: Match, partition: String) {
        state.withLock { state in
            guard var entry = state.partitions[partition], Int(match.node) < entry.keys.count, entry.keys[Int(match.node)] == match.key else { return }
            entry.forgotten.insert(match.node)
            state.partitions[partition] = entry
        }
    }

    /// Past `limit` questions: whole partitions least recently used first, then, when one
    /// partition alone is too large, it is rebuilt from its newer half.
    private static func evict(_ state: inout State, keeping partition: String, limit: Int) {
        while state.entries > limit {
            let oldest = state.partitions.filter { $0.key != partition }.min { $0.value.lastUsed < $1.value.lastUsed }
            if let oldest {
                state.entries -= oldest.value.keys.count
                state.partitions[oldest.key] = nil
                continue
            }
            guard let entry = state.partitions[partition] else { return }
            let rebuilt = entry.rebuilt(keeping: (entry.keys.count - entry.keys.count / 2)..<entry.keys.count) { _ in true }
            state.entries -= entry.keys.count - rebuilt.keys.count
            state.partitions[partition] = rebuilt
        }
    }

    /// Forgets every question the data subject `subject` (`CacheKey.subjectTag`) asked: their
    /// partitions are rebuilt without them, so neither the text nor the vector stays in memory.
    /// Returns how many went.
    @discardableResult
    public func erase(subject: String) -> Int {
        state.withLock { state in
            var removed = 0
            for (name, entry) in state.partitions where entry.subjects.contains(subject) {
                let rebuilt = entry.rebuilt(keeping: 0..<entry.keys.count) { entry.subjects[$0] != subject }
                removed += entry.keys.count - rebuilt.keys.count
                state.entries -= entry.keys.count - rebuilt.keys.count
                state.partitions[name] = rebuilt.keys.isEmpty ? nil : rebuilt
            }
            return removed
        }
    }
}
