import Foundation
import PortcullisCore
@testable import PortcullisEmbedder
import Synchronization
import Testing

/// The built-in embedder against a second implementation: `scripts/embedder-reference.py`
/// (Hugging Face's tokenizer and a NumPy encoder) wrote the token ids, leading dimensions and
/// cosines of a fixed set of English, Russian, accented, CJK, long and odd texts.
@Suite("Built-in embedder")
struct EmbedderTests {
    /// The model fetched by `scripts/fetch-embedder.sh` (which `scripts/test.sh` runs first).
    static let modelDirectory: URL = {
        if let path = ProcessInfo.processInfo.environment["PORTCULLIS_EMBEDDER_MODEL"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("models/all-MiniLM-L6-v2")
    }()

    static let encoder = Result { try SentenceEncoder(directory: modelDirectory) }

    struct Case {
        var text: String
        var ids: [Int32]
        var head: [Float]
    }

    static let reference: (cases: [Case], cosines: [[Float]]) = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Data/embedder-reference.json")
        let object = (try? JSONParser.parse(Data(contentsOf: url)))?.objectValue ?? JSONObject()
        let cases = (object["cases"]?.arrayValue ?? []).compactMap { value -> Case? in
            guard let item = value.objectValue, let text = item["text"]?.stringValue else { return nil }
            return Case(text: text, ids: (item["ids"]?.arrayValue ?? []).compactMap { $0.integerValue.map(Int32.init) },
                        head: (item["head"]?.arrayValue ?? []).compactMap { $0.doubleValue.map(Float.init) })
        }
        let cosines = (object["cosines"]?.arrayValue ?? []).map { ($0.arrayValue ?? []).compactMap { $0.doubleValue.map(Float.init) } }
        return (cases, cosines)
    }()

    @Test("word pieces match BERT's uncased tokenizer, Russian, accents, CJK, whitespace and truncation included")
    func tokens() throws {
        let encoder = try Self.encoder.get()
        #expect(Self.reference.cases.count == 16)
        for item in Self.reference.cases {
            #expect(encoder.tokenizer.encode(item.text) == item.ids, "\(item.text.prefix(40))")
        }
        // Truncated to the model's 256 pieces, [CLS] and [SEP] kept.
        let long = encoder.tokenizer.encode(String(repeating: "word ", count: 1000))
        #expect(long.count == 256 && long.first == encoder.tokenizer.classifier && long.last == encoder.tokenizer.separator)
        #expect(encoder.tokenizer.encode("") == [encoder.tokenizer.classifier, encoder.tokenizer.separator])
    }

    /// Every kernel this CPU runs (the AVX2 one always).
    static var kernels: [SentenceEncoder.Kernel] { SentenceEncoder.Kernel.allCases.filter(\.isAvailable) }

    @Test("embeddings and their cosines match the reference encoder, on each kernel this CPU can run", arguments: Self.kernels)
    func vectors(kernel: SentenceEncoder.Kernel) throws {
        let encoder = kernel == .fastest ? try Self.encoder.get() : try SentenceEncoder(directory: Self.modelDirectory, kernel: kernel)
        #expect(encoder.kernel == kernel)
        // The float kernels agree with the reference to rounding; bfloat16 rounds every product's inputs to 8 bits of
        // mantissa (measured here: cosines within 1.7e-3 of the reference's, float kernels within 1e-6).
        let tolerance: Float = kernel == .bfloat16 ? 3e-3 : 2e-4
        let vectors = Self.reference.cases.map { encoder.embed($0.text) }
        for (item, vector) in zip(Self.reference.cases, vectors) {
            #expect(vector.count == SentenceEncoder.dimensions)
            let norm = vector.reduce(0) { $0 + $1 * $1 }
            #expect(abs(norm - 1) < 1e-4)
            for (mine, theirs) in zip(vector.prefix(8), item.head) {
                #expect(abs(mine - theirs) < tolerance, "\(item.text.prefix(40)): \(mine) vs \(theirs)")
            }
        }
        for (row, expected) in Self.reference.cosines.enumerated() {
            for (column, cosine) in expected.enumerated() {
                let mine = zip(vectors[row], vectors[column]).reduce(0) { $0 + $1.0 * $1.1 }
                #expect(abs(mine - cosine) < tolerance, "cosine \(row),\(column): \(mine) vs \(cosine)")
            }
        }
        // What the semantic cache relies on: a paraphrase is closer than a look-alike with another name.
        let france = vectors[0], paraphrase = vectors[1], germany = vectors[2]
        let dot = { (a: [Float], b: [Float]) in zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }
        #expect(dot(france, paraphrase) > dot(france, germany))
    }

    @Test("embeddings made at once on several threads, of texts short and long, are the ones made one at a time (working buffers are reused, never shared)")
    func concurrent() throws {
        let encoder = try Self.encoder.get()
        let texts = Self.reference.cases.map(\.text)
        let alone = texts.map { encoder.embed($0) }
        let together = Mutex<[Int: [Float]]>([:])
        DispatchQueue.concurrentPerform(iterations: texts.count * 4) { number in
            let index = (number * 7) % texts.count
            let vector = encoder.embed(texts[index])
            together.withLock { found in
                if let earlier = found[index], earlier != vector { found[-1] = [] } else { found[index] = vector }
            }
        }
        let found = together.withLock { $0 }
        #expect(found[-1] == nil, "two threads' embeddings of one text differed")
        for (index, vector) in alone.enumerated() { #expect(found[index] == vector, "\(texts[index].prefix(40))") }
    }

    @Test("a missing or damaged model is a clear error, not a crash")
    func badModel() throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("portcullis-embedder-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect { try SentenceEncoder(directory: empty) } throws: { error in
            guard case .missingModel(let detail) = error as? EmbedderError else { return false }
            return detail.contains("vocab.txt") && detail.contains("fetch-embedder")
        }
        try FileManager.default.copyItem(at: Self.modelDirectory.appendingPathComponent("vocab.txt"), to: empty.appendingPathComponent("vocab.txt"))
        for damaged in [Data([1, 2, 3]), Data([0xFF, 0xFF, 0, 0, 0, 0, 0, 0]) + Data("{}".utf8), Data([2, 0, 0, 0, 0, 0, 0, 0]) + Data("{}".utf8)] {
            try damaged.write(to: empty.appendingPathComponent("model.safetensors"))
            #expect { try SentenceEncoder(directory: empty) } throws: { error in
                guard case .invalidModel = error as? EmbedderError else { return false }
                return true
            }
        }
    }
}
