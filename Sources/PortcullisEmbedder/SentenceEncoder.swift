import Foundation
import PortcullisCore
import PortcullisEmbedderAVX512
import PortcullisEmbedderBF16
import Synchronization

/// all-MiniLM-L6-v2 in process on the CPU: BERT's six-layer, 384-wide encoder over the
/// question's word pieces, mean-pooled and scaled to unit length, so that the dot product of
/// two embeddings is their cosine similarity. Weights are read once from the model directory
/// (`vocab.txt`, `model.safetensors`, as `scripts/fetch-embedder.sh` puts them there); an
/// embedding allocates only its own scratch buffers, so calls may run concurrently.
public final class SentenceEncoder: Sendable {
    /// Length of every embedding.
    public static let dimensions = 384
    /// Word pieces read per text, `[CLS]` and `[SEP]` included (the model's `max_seq_length`).
    public static let tokenLimit = 256

    static let width = 384, heads = 12, headWidth = 32, innerWidth = 1536, layerCount = 6, positions = 512

    /// Which matrix product the encoder runs on.
    public enum Kernel: String, Sendable, CaseIterable {
        /// Floats, eight lanes (AVX2 with FMA): the baseline.
        case avx2
        /// Floats, sixteen lanes (AVX-512F), weights in panels of 32.
        case avx512
        /// Weights and the products' inputs rounded to bfloat16, sums in floats (AVX512_BF16):
        /// twice the multiply-adds per instruction over half the bytes. The embeddings differ from
        /// the float kernels' by about 1e-3 in a cosine (`EmbedderTests` bounds it).
        case bfloat16

        /// The fastest kernel this CPU runs.
        public static var fastest: Kernel {
            if CPUFeatures.hasAVX512BF16 && portcullis_bf16_available() != 0 { return .bfloat16 }
            return CPUFeatures.hasAVX512 ? .avx512 : .avx2
        }

        /// Whether this CPU runs the kernel.
        public var isAvailable: Bool {
            switch self {
            case .avx2: CPUFeatures.missingForEmbedder == nil
            case .avx512: CPUFeatures.hasAVX512
            case .bfloat16: CPUFeatures.hasAVX512BF16 && portcullis_bf16_available() != 0
            }
        }
    }

    /// One weight matrix, packed for the kernel that multiplies by it: floats in panels (16 or
    /// 32 outputs) or bfloat16 pairs in panels of 32 (`portcullis_bf16_linear`'s layout).
    struct Weights {
        var floats: [Float] = []
        var pairs: [UInt32] = []

        init(_ matrix: [Float], inputs: Int, outputs: Int, kernel: Kernel) {
            switch kernel {
            case .avx2: floats = Kernels.pack(matrix, inputs: inputs, outputs: outputs, panel: 16)
            case .avx512: floats = Kernels.pack(matrix, inputs: inputs, outputs: outputs, panel: 32)
            case .bfloat16: pairs = Kernels.packPairs(matrix, inputs: inputs, outputs: outputs)
            }
        }
    }

    struct Layer {
        /// Query, key and value projections side by side: `384 × 1152` (as are the other weights, input-major before packing).
        var attention: Weights
        var attentionBias: [Float]
        var projection: Weights
        var projectionBias: [Float]
        var attentionNormScale: [Float]
        var attentionNormShift: [Float]
        var expand: Weights
        var expandBias: [Float]
        var contract: Weights
        var contractBias: [Float]
        var outputNormScale: [Float]
        var outputNormShift: [Float]
    }

    public let tokenizer: WordPieceTokenizer
    /// The kernel the matrix products run on.
    public let kernel: Kernel
    let vocabularySize: Int
    let words: [Float]
    let positions: [Float]
    let segment: [Float]
    let embeddingNormScale: [Float]
    let embeddingNormShift: [Float]
    let layers: [Layer]
    private let scratches = Mutex<[Scratch]>([])

    /// Loads the model from `directory`; throws `EmbedderError` naming what is missing or malformed.
    /// - Parameter kernel: the matrix product to run on (default: the fastest this CPU has; one it lacks is refused).
    public init(directory: URL, kernel: Kernel = .fastest) throws {
        guard kernel.isAvailable else { throw EmbedderError.invalidModel("this CPU cannot run the \(kernel.rawValue) kernel") }
        self.kernel = kernel
        let vocabularyURL = directory.appendingPathComponent("vocab.txt"), weightsURL = directory.appendingPathComponent("model.safetensors")
        for url in [vocabularyURL, weightsURL] where !FileManager.default.fileExists(atPath: url.path) {
            throw EmbedderError.missingModel("\(url.path) (scripts/fetch-embedder.sh puts the model in models/all-MiniLM-L6-v2)")
        }
        tokenizer = try WordPieceTokenizer(contentsOf: vocabularyURL)
        let file = try SafeTensors(contentsOf: weightsURL)
        let width = Self.width
        guard let vocabularyShape = file.entries["embeddings.word_embeddings.weight"]?.shape, vocabularyShape.count == 2,
              vocabularyShape[1] == width else { throw EmbedderError.invalidModel("embeddings.word_embeddings.weight is not 384 wide") }
        vocabularySize = vocabularyShape[0]
        words = try file.floats("embeddings.word_embeddings.weight", shape: [vocabularySize, width])
        positions = try file.floats("embeddings.position_embeddings.weight", shape: [Self.positions, width])
        segment = Array(try file.floats("embeddings.token_type_embeddings.weight", shape: [2, width]).prefix(width))
        embeddingNormScale = try file.floats("embeddings.LayerNorm.weight", shape: [width])
        embeddingNormShift = try file.floats("embeddings.LayerNorm.bias", shape: [width])
        layers = try (0..<Self.layerCount).map { index in
            let prefix = "encoder.layer.\(index)."
            let query = try file.transposed(prefix + "attention.self.query.weight", outputs: width, inputs: width)
            let key = try file.transposed(prefix + "attention.self.key.weight", outputs: width, inputs: width)
            let value = try file.transposed(prefix + "attention.self.value.weight", outputs: width, inputs: width)
            var attention = [Float](repeating: 0, count: width * 3 * width)
            for input in 0..<width {
                for output in 0..<width {
                    attention[input * 3 * width + output] = query[input * width + output]
                    attention[input * 3 * width + width + output] = key[input * width + output]
                    attention[input * 3 * width + 2 * width + output] = value[input * width + output]
                }
            }
            return Layer(
                attention: Weights(attention, inputs: width, outputs: 3 * width, kernel: kernel),
                attentionBias: try file.floats(prefix + "attention.self.query.bias", shape: [width])
                    + file.floats(prefix + "attention.self.key.bias", shape: [width]) + file.floats(prefix + "attention.self.value.bias", shape: [width]),
                projection: Weights(try file.transposed(prefix + "attention.output.dense.weight", outputs: width, inputs: width), inputs: width,
                                    outputs: width, kernel: kernel),
                projectionBias: try file.floats(prefix + "attention.output.dense.bias", shape: [width]),
                attentionNormScale: try file.floats(prefix + "attention.output.LayerNorm.weight", shape: [width]),
                attentionNormShift: try file.floats(prefix + "attention.output.LayerNorm.bias", shape: [width]),
                expand: Weights(try file.transposed(prefix + "intermediate.dense.weight", outputs: Self.innerWidth, inputs: width), inputs: width,
                                outputs: Self.innerWidth, kernel: kernel),
                expandBias: try file.floats(prefix + "intermediate.dense.bias", shape: [Self.innerWidth]),
                contract: Weights(try file.transposed(prefix + "output.dense.weight", outputs: width, inputs: Self.innerWidth),
                                  inputs: Self.innerWidth, outputs: width, kernel: kernel),
                contractBias: try file.floats(prefix + "output.dense.bias", shape: [width]),
                outputNormScale: try file.floats(prefix + "output.LayerNorm.weight", shape: [width]),
                outputNormShift: try file.floats(prefix + "output.LayerNorm.bias", shape: [width]))
        }
    }

    /// The unit-length embedding of `text` (its first `tokenLimit` word pieces).
    public func embed(_ text: String) -> [Float] {
        embed(tokens: tokenizer.encode(text, limit: Self.tokenLimit))
    }

    /// The unit-length embedding of word-piece ids (`[CLS]` … `[SEP]`); ids outside the vocabulary read as `[UNK]`.
    public func embed(tokens: [Int32]) -> [Float] {
        let count = min(max(tokens.count, 1), Self.positions)
        let width = Self.width
        let scratch = takeScratch(rows: count)
        defer { returnScratch(scratch) }
        let h = scratch.hidden, projected = scratch.projected, context = scratch.context, attended = scratch.attended, inner = scratch.inner
        for (row, token) in tokens.prefix(count).enumerated() {
            let id = token >= 0 && Int(token) < vocabularySize ? Int(token) : Int(tokenizer.unknown)
            for column in 0..<width {
                h[row * width + column] = words[id * width + column] + positions[row * width + column] + segment[column]
            }
        }
        let product = Product(kernel: kernel, rounded: scratch.rounded)
        embeddingNormScale.withUnsafeBufferPointer { scale in
            embeddingNormShift.withUnsafeBufferPointer { shift in
                Kernels.addAndNormalize(h, residual: nil, rows: count, width: width, scale: scale.baseAddress!, shift: shift.baseAddress!)
            }
        }
        for layer in layers {
            Self.attend(h, layer: layer, rows: count, projected: projected, context: context, scores: scratch.scores, product: product)
            product(context, rows: count, inputs: width, weights: layer.projection, bias: layer.projectionBias, outputs: width, into: attended)
            Self.normalize(h, adding: attended, rows: count, scale: layer.attentionNormScale, shift: layer.attentionNormShift)
            product(h, rows: count, inputs: width, weights: layer.expand, bias: layer.expandBias, outputs: Self.innerWidth, into: inner, gelu: true)
            product(inner, rows: count, inputs: Self.innerWidth, weights: layer.contract, bias: layer.contractBias, outputs: width, into: attended)
            Self.normalize(h, adding: attended, rows: count, scale: layer.outputNormScale, shift: layer.outputNormShift)
        }
        // Mean over the tokens, then unit length.
        var pooled = [Float](repeating: 0, count: width)
        for row in 0..<count {
            for column in 0..<width { pooled[column] += h[row * width + column] }
        }
        var norm: Float = 0
        for column in 0..<width {
            pooled[column] /= Float(count)
            norm += pooled[column] * pooled[column]
        }
        let inverse = norm > 0 ? 1 / norm.squareRoot() : 0
        return pooled.map { $0 * inverse }
    }

    /// One embedding's working buffers, reused by later embeddings (no allocation, page fault or
    /// zero-filling per question): every buffer is written before it is read.
    // @unchecked: a scratch is used by one embedding at a time; it changes hands only through the
    // pool's lock (`scratches`), which is what makes handing it to another thread safe.
    final class Scratch: @unchecked Sendable {
        let rows: Int
        let memory: UnsafeMutableRawPointer
        let hidden, projected, context, attended, inner, scores: UnsafeMutablePointer<Float>
        /// The bfloat16 kernel's copy of a product's input (the widest is the inner layer's).
        let rounded: UnsafeMutablePointer<UInt32>

        init(rows: Int) {
            self.rows = rows
            let counts = [rows * width, rows * 3 * width, rows * width, rows * width, rows * innerWidth, rows, rows * innerWidth / 2]
            // Each buffer starts on a 64-byte line.
            let sizes = counts.map { ($0 * 4 + 63) / 64 * 64 }
            let block = UnsafeMutableRawPointer.allocate(byteCount: sizes.reduce(0, +), alignment: 64)
            memory = block
            var offsets: [Int] = [], offset = 0
            for size in sizes {
                offsets.append(offset)
                offset += size
            }
            let floats = zip(offsets, counts).map { (block + $0).bindMemory(to: Float.self, capacity: $1) }
            (hidden, projected, context, attended, inner, scores) = (floats[0], floats[1], floats[2], floats[3], floats[4], floats[5])
            rounded = (block + offsets[6]).bindMemory(to: UInt32.self, capacity: counts[6])
        }

        deinit { memory.deallocate() }
    }

    /// Scratch for `rows` rows: a kept one large enough, else a new one (rounded up to 64 rows).
    private func takeScratch(rows: Int) -> Scratch {
        scratches.withLock { kept in
            if let index = kept.firstIndex(where: { $0.rows >= rows }) { return kept.remove(at: index) }
            return nil
        } ?? Scratch(rows: (rows + 63) / 64 * 64)
    }

    /// Keeps `scratch` for the next embedding (a few at most: one per thread that embeds at once).
    private func returnScratch(_ scratch: Scratch) {
        scratches.withLock { kept in
            if kept.count < 4 { kept.append(scratch) }
        }
    }

    /// Self-attention of one layer: the query, key and value projections of every row, then
    /// for each head and row the softmax of its scaled scores against every row, mixing the values.
    private static func attend(_ hidden: UnsafePointer<Float>, layer: Layer, rows: Int, projected: UnsafeMutablePointer<Float>,
                               context: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>, product: Product) {
        let width = Self.width, stride = 3 * width
        product(hidden, rows: rows, inputs: width, weights: layer.attention, bias: layer.attentionBias, outputs: stride, into: projected)
        let scale = 1 / Float(headWidth).squareRoot()
        for head in 0..<heads {
            let offset = head * headWidth
            for row in 0..<rows {
                let query = projected + row * stride + offset
                for other in 0..<rows {
                    scores[other] = Kernels.dot(query, projected + other * stride + width + offset, count: headWidth) * scale
                }
                Kernels.softmax(scores, count: rows)
                var low = Kernels.Vector(), high = Kernels.Vector(), third = Kernels.Vector(), fourth = Kernels.Vector()
                for other in 0..<rows {
                    let value = UnsafeRawPointer(projected + other * stride + 2 * width + offset)
                    let weight = Kernels.Vector(repeating: scores[other])
                    low.addProduct(weight, value.loadUnaligned(as: Kernels.Vector.self))
                    high.addProduct(weight, value.loadUnaligned(fromByteOffset: 32, as: Kernels.Vector.self))
                    third.addProduct(weight, value.loadUnaligned(fromByteOffset: 64, as: Kernels.Vector.self))
                    fourth.addProduct(weight, value.loadUnaligned(fromByteOffset: 96, as: Kernels.Vector.self))
                }
                let target = UnsafeMutableRawPointer(context + row * width + offset)
                target.storeBytes(of: low, as: Kernels.Vector.self)
                target.storeBytes(of: high, toByteOffset: 32, as: Kernels.Vector.self)
                target.storeBytes(of: third, toByteOffset: 64, as: Kernels.Vector.self)
                target.storeBytes(of: fourth, toByteOffset: 96, as: Kernels.Vector.self)
            }
        }
    }

    /// The matrix product of one embedding on the encoder's kernel (with the bfloat16 kernel's scratch row buffer).
    struct Product {
        let kernel: Kernel
        let rounded: UnsafeMutablePointer<UInt32>?

        /// `output = input · weights + bias`, through GELU when `gelu`.
        func callAsFunction(_ input: UnsafePointer<Float>, rows: Int, inputs: Int, weights: Weights, bias: [Float], outputs: Int,
                            into output: UnsafeMutablePointer<Float>, gelu: Bool = false) {
            bias.withUnsafeBufferPointer { bias in
                switch kernel {
                case .avx2:
                    weights.floats.withUnsafeBufferPointer {
                        Kernels.linear(input, rows: rows, inputs: inputs, weights: $0.baseAddress!, bias: bias.baseAddress!, outputs: outputs, into: output)
                    }
                    if gelu { Kernels.gelu(output, count: rows * outputs) }
                case .avx512:
                    weights.floats.withUnsafeBufferPointer {
                        wideLinear(input, rows: rows, inputs: inputs, weights: $0.baseAddress!, bias: bias.baseAddress!, outputs: outputs, into: output)
                    }
                    if gelu { Kernels.gelu(output, count: rows * outputs) }
                case .bfloat16:
                    guard let rounded else { preconditionFailure("the bfloat16 kernel needs its scratch buffer") }
                    portcullis_bf16_convert(input, rows * inputs, rounded)
                    weights.pairs.withUnsafeBufferPointer {
                        portcullis_bf16_linear(rounded, Int32(rows), Int32(inputs), $0.baseAddress!, bias.baseAddress!, Int32(outputs), output,
                                               gelu ? PORTCULLIS_BF16_GELU : 0)
                    }
                }
            }
        }
    }

    private static func normalize(_ hidden: UnsafeMutablePointer<Float>, adding residual: UnsafeMutablePointer<Float>, rows: Int, scale: [Float], shift: [Float]) {
        scale.withUnsafeBufferPointer { scale in
            shift.withUnsafeBufferPointer { shift in
                Kernels.addAndNormalize(hidden, residual: residual, rows: rows, width: width, scale: scale.baseAddress!, shift: shift.baseAddress!)
            }
        }
    }
}
