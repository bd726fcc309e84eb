import Foundation

/// The dense arithmetic of the encoder on row-major `Float` buffers, written for the SIMD
/// units of one core (the target is compiled for AVX2 with FMA on x86-64: eight lanes, and
/// the register blocking below fits its sixteen vector registers).
enum Kernels {
    typealias Vector = SIMD8<Float>

    /// `output[t][o] = bias[o] + Σ_i input[t][i] · W[i][o]` for `rows` rows of `inputs` values,
    /// the weights `W` packed by `pack` (panels of sixteen outputs). `outputs` must be a multiple of 16.
    ///
    /// Blocks of six rows by sixteen outputs keep twelve accumulators in registers; the
    /// outputs are the outer loop, so one panel (inputs × 64 bytes, contiguous, which the
    /// prefetcher streams) stays in cache while every row block passes over it, and each weight
    /// is read from memory once per call.
    static func linear(_ input: UnsafePointer<Float>, rows: Int, inputs: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                       outputs: Int, into output: UnsafeMutablePointer<Float>) {
        precondition(outputs % 16 == 0, "outputs must be a multiple of 16")
        let stride = 16 * MemoryLayout<Float>.stride
        var column = 0
        while column < outputs {
            let bias0 = UnsafeRawPointer(bias + column).loadUnaligned(as: Vector.self)
            let bias1 = UnsafeRawPointer(bias + column + 8).loadUnaligned(as: Vector.self)
            var row = 0
            while row < rows {
                let count = min(6, rows - row)
                // Rows past the end repeat the last one; their sums are not stored.
                let r0 = input + row * inputs, r1 = input + min(row + 1, rows - 1) * inputs, r2 = input + min(row + 2, rows - 1) * inputs
                let r3 = input + min(row + 3, rows - 1) * inputs, r4 = input + min(row + 4, rows - 1) * inputs, r5 = input + min(row + 5, rows - 1) * inputs
                var a00 = bias0, a01 = bias1, a10 = bias0, a11 = bias1, a20 = bias0, a21 = bias1
                var a30 = bias0, a31 = bias1, a40 = bias0, a41 = bias1, a50 = bias0, a51 = bias1
                var w = UnsafeRawPointer(weights + column * inputs)
                for i in 0..<inputs {
                    let w0 = w.loadUnaligned(as: Vector.self), w1 = w.loadUnaligned(fromByteOffset: 32, as: Vector.self)
                    var b = Vector(repeating: r0[i]); a00.addProduct(b, w0); a01.addProduct(b, w1)
                    b = Vector(repeating: r1[i]); a10.addProduct(b, w0); a11.addProduct(b, w1)
                    b = Vector(repeating: r2[i]); a20.addProduct(b, w0); a21.addProduct(b, w1)
                    b = Vector(repeating: r3[i]); a30.addProduct(b, w0); a31.addProduct(b, w1)
                    b = Vector(repeating: r4[i]); a40.addProduct(b, w0); a41.addProduct(b, w1)
                    b = Vector(repeating: r5[i]); a50.addProduct(b, w0); a51.addProduct(b, w1)
                    w += stride
                }
                func store(_ offset: Int, _ low: Vector, _ high: Vector) {
                    guard offset < count else { return }
                    let target = UnsafeMutableRawPointer(output + (row + offset) * outputs + column)
                    target.storeBytes(of: low, as: Vector.self)
                    target.storeBytes(of: high, toByteOffset: 32, as: Vector.self)
                }
                store(0, a00, a01); store(1, a10, a11); store(2, a20, a21); store(3, a30, a31); store(4, a40, a41); store(5, a50, a51)
                row += 6
            }
            column += 16
        }
    }

    /// `weights` (`inputs × outputs`, input-major) rearranged into panels of `panel` outputs
    /// (16 for `linear`, 32 for the AVX-512 kernel), each panel's `inputs` rows one after another.
    static func pack(_ weights: [Float], inputs: Int, outputs: Int, panel: Int = 16) -> [Float] {
        precondition(outputs % panel == 0 && weights.count == inputs * outputs)
        var packed = [Float](repeating: 0, count: weights.count)
        for block in 0..<(outputs / panel) {
            for input in 0..<inputs {
                for lane in 0..<panel { packed[block * inputs * panel + input * panel + lane] = weights[input * outputs + block * panel + lane] }
            }
        }
        return packed
    }

    /// `weights` (`inputs × outputs`, input-major) rounded to bfloat16 and packed for
    /// `portcullis_bf16_linear`: panels of 32 outputs, each `inputs / 2` words of 32 lanes, lane
    /// o of word k holding W[2k][o] in its low half and W[2k+1][o] in its high half.
    static func packPairs(_ weights: [Float], inputs: Int, outputs: Int) -> [UInt32] {
        precondition(outputs % 32 == 0 && inputs % 2 == 0 && weights.count == inputs * outputs)
        let pairs = inputs / 2
        var packed = [UInt32](repeating: 0, count: weights.count / 2)
        for block in 0..<(outputs / 32) {
            for pair in 0..<pairs {
                for lane in 0..<32 {
                    let output = block * 32 + lane
                    packed[(block * pairs + pair) * 32 + lane] = bfloat16(weights[2 * pair * outputs + output])
                        | bfloat16(weights[(2 * pair + 1) * outputs + output]) << 16
                }
            }
        }
        return packed
    }

    /// The bfloat16 nearest to a finite `value` (ties to even), in the low 16 bits.
    static func bfloat16(_ value: Float) -> UInt32 {
        let bits = value.bitPattern
        return (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16
    }

    /// The dot product of two `count`-long vectors (`count` a multiple of 8).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var sum = Vector()
        var index = 0
        while index < count {
            sum.addProduct(UnsafeRawPointer(a + index).loadUnaligned(as: Vector.self), UnsafeRawPointer(b + index).loadUnaligned(as: Vector.self))
            index += 8
        }
        return sum.sum()
    }

    /// `row = layerNorm(row + residual)` in place for each of `rows` rows of `width` values
    /// (`width` a multiple of 8), with the learnt scale and shift.
    static func addAndNormalize(_ rowsBuffer: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>?, rows: Int, width: Int,
                                scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, epsilon: Float = 1e-12) {
        for row in 0..<rows {
            let values = rowsBuffer + row * width
            if let residual {
                let added = residual + row * width
                var index = 0
                while index < width {
                    let sum = UnsafeRawPointer(values + index).loadUnaligned(as: Vector.self) + UnsafeRawPointer(added + index).loadUnaligned(as: Vector.self)
                    UnsafeMutableRawPointer(values + index).storeBytes(of: sum, as: Vector.self)
                    index += 8
                }
            }
            var total = Vector()
            var index = 0
            while index < width {
                total += UnsafeRawPointer(values + index).loadUnaligned(as: Vector.self)
                index += 8
            }
            let mean = total.sum() / Float(width)
            var squares = Vector()
            index = 0
            while index < width {
                let centred = UnsafeRawPointer(values + index).loadUnaligned(as: Vector.self) - mean
                squares.addProduct(centred, centred)
                index += 8
            }
            let inverse = 1 / (squares.sum() / Float(width) + epsilon).squareRoot()
            index = 0
            while index < width {
                let centred = UnsafeRawPointer(values + index).loadUnaligned(as: Vector.self) - mean
                let scaled = centred * inverse * UnsafeRawPointer(scale + index).loadUnaligned(as: Vector.self)
                    + UnsafeRawPointer(shift + index).loadUnaligned(as: Vector.self)
                UnsafeMutableRawPointer(values + index).storeBytes(of: scaled, as: Vector.self)
                index += 8
            }
        }
    }

    /// GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`, in place, eight values at a time; erf is
    /// Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7) over a polynomial exp.
    static func gelu(_ values: UnsafeMutablePointer<Float>, count: Int) {
        var index = 0
        while index + 8 <= count {
            let x = UnsafeRawPointer(values + index).loadUnaligned(as: Vector.self)
            UnsafeMutableRawPointer(values + index).storeBytes(of: 0.5 * x * (1 + errorFunction(x * 0.707_106_77)), as: Vector.self)
            index += 8
        }
        while index < count {
            let x = values[index]
            values[index] = 0.5 * x * (1 + Foundation.erf(x * 0.707_106_77))
            index += 1
        }
    }

    /// erf of eight values (Abramowitz and Stegun 7.1.26, odd-symmetric).
    @inline(__always)
    static func errorFunction(_ x: Vector) -> Vector {
        let magnitude = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.327_591_1 * magnitude)
        var polynomial = Vector(repeating: 1.061_405_429)
        polynomial = polynomial * t - 1.453_152_027
        polynomial = polynomial * t + 1.421_413_741
        polynomial = polynomial * t - 0.284_496_736
        polynomial = polynomial * t + 0.254_829_592
        polynomial *= t
        let positive = 1 - polynomial * exponential(-(magnitude * magnitude))
        return positive.replacing(with: -positive, where: x .< 0)
    }

    /// e^x of eight values at most 0 (relative error about 2e-7): 2^k · p(r) with r = x − k·ln 2, |r| ≤ ln 2 / 2.
    @inline(__always)
    static func exponential(_ x: Vector) -> Vector {
        let clamped = pointwiseMax(x, Vector(repeating: -87))
        // Adding 1.5 · 2^23 rounds to an integer held in the low mantissa bits: k as a float and as bits, without a conversion.
        let shifted = clamped * 1.442_695_04 + 12_582_912
        let k = shifted - 12_582_912
        let r = clamped - k * 0.693_145_75 - k * 1.428_606_8e-6
        var p = Vector(repeating: 1.0 / 720)
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let exponent = (integer &+ 127) &<< 23
        return p * unsafeBitCast(exponent, to: Vector.self)
    }

    /// Softmax of one row in place, eight values at a time (`exponential`; the row's largest
    /// value is subtracted first, so every argument is at most 0).
    static func softmax(_ values: UnsafeMutablePointer<Float>, count: Int) {
        var largest = -Float.infinity
        for index in 0..<count { largest = max(largest, values[index]) }
        var total: Float = 0
        var index = 0
        while index + 8 <= count {
            let value = exponential(UnsafeRawPointer(values + index).loadUnaligned(as: Vector.self) - largest)
            UnsafeMutableRawPointer(values + index).storeBytes(of: value, as: Vector.self)
            total += value.sum()
            index += 8
        }
        while index < count {
            let value = Foundation.exp(values[index] - largest)
            values[index] = value
            total += value
            index += 1
        }
        let inverse = 1 / total
        for index in 0..<count { values[index] *= inverse }
    }
}
