// The built-in embedder's matrix product in bfloat16 for CPUs with AVX512_BF16 (Zen 4,
// Cooper Lake, Sapphire Rapids): VDPBF16PS multiplies pairs of bfloat16 values and adds
// both products to a float accumulator, twice the multiply-adds of a float FMA per
// instruction over half the bytes of weights. Swift cannot name that instruction, so these
// two functions are C; the encoder calls them only when the CPU reports `avx512_bf16`.
#ifndef PORTCULLIS_EMBEDDER_BF16_H
#define PORTCULLIS_EMBEDDER_BF16_H

#include <stdint.h>
#include <stddef.h>

/// Whether this build holds the bfloat16 kernel (x86-64 only); the CPU must still be asked.
int portcullis_bf16_available(void);

/// `count` floats (a multiple of 32) rounded to bfloat16 (nearest, ties to even), two to a
/// 32-bit word in order: element 2k in the low half of word k, element 2k+1 in the high half.
void portcullis_bf16_convert(const float *source, size_t count, uint32_t *target);

/// `output[t][o] = bias[o] + Σ_i input[t][i] · W[i][o]` for `rows` rows of `inputs` values
/// (as `portcullis_bf16_convert` wrote them), with float sums. The weights are panels of 32
/// outputs, each panel `inputs / 2` words of 32 lanes, lane o of word k holding
/// W[2k][o] (low half) and W[2k+1][o] (high half). `outputs` must be a multiple of 32 and
/// `inputs` a multiple of 2. With `activation` PORTCULLIS_BF16_GELU, each sum passes through
/// GELU before it is stored (0: stored as it is).
void portcullis_bf16_linear(const uint32_t *input, int rows, int inputs, const uint32_t *weights, const float *bias, int outputs,
                            float *output, int activation);

/// `portcullis_bf16_linear`'s activation: GELU (erf form).
#define PORTCULLIS_BF16_GELU 1

#endif
