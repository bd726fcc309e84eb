// The built-in embedder's matrix product for CPUs with AVX-512: this target alone is compiled
// for it (Skylake-SP and later, Zen 4), and the encoder calls it only when the CPU says it has
// `avx512f`; elsewhere it uses the AVX2 kernel of PortcullisEmbedder.

/// `output[t][o] = bias[o] + Σ_i input[t][i] · W[i][o]` for `rows` rows of `inputs` values,
/// the weights packed in panels of 32 outputs (each panel's `inputs` rows of 32 values one
/// after another). `outputs` must be a multiple of 32.
///
/// Blocks of eight rows by 32 outputs keep sixteen of the 32 vector registers as accumulators;
/// the panel is the outer loop, so it stays in cache while every row block passes over it.
public func wideLinear(_ input: UnsafePointer<Float>, rows: Int, inputs: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                       outputs: Int, into output: UnsafeMutablePointer<Float>) {
    #if arch(x86_64)
    typealias Vector = SIMD16<Float>
    precondition(outputs % 32 == 0, "outputs must be a multiple of 32")
    let stride = 32 * MemoryLayout<Float>.stride
    var column = 0
    while column < outputs {
        let bias0 = UnsafeRawPointer(bias + column).loadUnaligned(as: Vector.self)
        let bias1 = UnsafeRawPointer(bias + column + 16).loadUnaligned(as: Vector.self)
        var row = 0
        while row < rows {
            let count = min(8, rows - row)
            // Rows past the end repeat the last one; their sums are not stored.
            func source(_ offset: Int) -> UnsafePointer<Float> { input + min(row + offset, rows - 1) * inputs }
            let r0 = source(0), r1 = source(1), r2 = source(2), r3 = source(3), r4 = source(4), r5 = source(5), r6 = source(6), r7 = source(7)
            var a00 = bias0, a01 = bias1, a10 = bias0, a11 = bias1, a20 = bias0, a21 = bias1, a30 = bias0, a31 = bias1
            var a40 = bias0, a41 = bias1, a50 = bias0, a51 = bias1, a60 = bias0, a61 = bias1, a70 = bias0, a71 = bias1
            var w = UnsafeRawPointer(weights + column * inputs)
            for i in 0..<inputs {
                let w0 = w.loadUnaligned(as: Vector.self), w1 = w.loadUnaligned(fromByteOffset: 64, as: Vector.self)
                var b = Vector(repeating: r0[i]); a00.addProduct(b, w0); a01.addProduct(b, w1)
                b = Vector(repeating: r1[i]); a10.addProduct(b, w0); a11.addProduct(b, w1)
                b = Vector(repeating: r2[i]); a20.addProduct(b, w0); a21.addProduct(b, w1)
                b = Vector(repeating: r3[i]); a30.addProduct(b, w0); a31.addProduct(b, w1)
                b = Vector(repeating: r4[i]); a40.addProduct(b, w0); a41.addProduct(b, w1)
                b = Vector(repeating: r5[i]); a50.addProduct(b, w0); a51.addProduct(b, w1)
                b = Vector(repeating: r6[i]); a60.addProduct(b, w0); a61.addProduct(b, w1)
                b = Vector(repeating: r7[i]); a70.addProduct(b, w0); a71.addProduct(b, w1)
                w += stride
            }
            func store(_ offset: Int, _ low: Vector, _ high: Vector) {
                guard offset < count else { return }
                let target = UnsafeMutableRawPointer(output + (row + offset) * outputs + column)
                target.storeBytes(of: low, as: Vector.self)
                target.storeBytes(of: high, toByteOffset: 64, as: Vector.self)
            }
            store(0, a00, a01); store(1, a10, a11); store(2, a20, a21); store(3, a30, a31)
            store(4, a40, a41); store(5, a50, a51); store(6, a60, a61); store(7, a70, a71)
            row += 8
        }
        column += 32
    }
    #else
    preconditionFailure("the AVX-512 kernel exists on x86-64 only")
    #endif
}
