#include "PortcullisEmbedderBF16.h"

#if defined(__x86_64__)
#include <immintrin.h>

int portcullis_bf16_available(void) { return 1; }

__attribute__((target("avx512f,avx512bf16")))
void portcullis_bf16_convert(const float *source, size_t count, uint32_t *target) {
    for (size_t index = 0; index + 32 <= count; index += 32) {
        // The second operand fills the low sixteen elements: the pairs stay in order.
        __m512bh pairs = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(source + index + 16), _mm512_loadu_ps(source + index));
        _mm512_storeu_si512((void *)(target + index / 2), (__m512i)pairs);
    }
}

// e^x for x at most 0 (relative error about 2e-7): 2^k · p(r), r = x − k·ln 2, as the float kernels compute it.
__attribute__((target("avx512f"), always_inline))
static inline __m512 exponential(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    // Adding 1.5 · 2^23 rounds to an integer held in the low mantissa bits: k as a float and as bits.
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504f), magic);
    const __m512 k = _mm512_sub_ps(shifted, magic);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.69314575f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.4286068e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i integer = _mm512_sub_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x4B400000));
    const __m512i exponent = _mm512_slli_epi32(_mm512_add_epi32(integer, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(exponent));
}

// GELU, x · Φ(x) = x/2 · (1 + erf(x/√2)), erf by Abramowitz and Stegun 7.1.26 (absolute error
// below 1.5e-7), the formula of the float kernels' `Kernels.gelu`.
__attribute__((target("avx512f"), always_inline))
static inline __m512 gelu(__m512 x) {
    const __m512 scaled = _mm512_mul_ps(x, _mm512_set1_ps(0.70710677f));
    const __m512 magnitude = _mm512_abs_ps(scaled);
    const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(magnitude, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 polynomial = _mm512_set1_ps(1.061405429f);
    polynomial = _mm512_fmadd_ps(polynomial, t, _mm512_set1_ps(-1.453152027f));
    polynomial = _mm512_fmadd_ps(polynomial, t, _mm512_set1_ps(1.421413741f));
    polynomial = _mm512_fmadd_ps(polynomial, t, _mm512_set1_ps(-0.284496736f));
    polynomial = _mm512_fmadd_ps(polynomial, t, _mm512_set1_ps(0.254829592f));
    polynomial = _mm512_mul_ps(polynomial, t);
    const __m512 negativeSquare = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(magnitude, magnitude));
    const __m512 positive = _mm512_fnmadd_ps(polynomial, exponential(negativeSquare), _mm512_set1_ps(1.0f));
    const __mmask16 negative = _mm512_cmp_ps_mask(scaled, _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 erf = _mm512_mask_sub_ps(positive, negative, _mm512_setzero_ps(), positive);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

// One block of up to `width` rows (12, 8 or 4, a constant where it is inlined) by 32 outputs:
// 2 × `width` accumulators of the 32 vector registers. Rows past `count` repeat the last one;
// their sums are not stored.
__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline void block(const uint32_t *input, int rows, int row, int count, int width, int pairs, const uint32_t *panel, __m512 bias0,
                         __m512 bias1, int outputs, int column, float *output, int activation) {
    const uint32_t *source[12];
    __m512 low[12], high[12];
#pragma clang loop unroll(full)
    for (int offset = 0; offset < width; offset++) {
        const int which = offset < count ? row + offset : rows - 1;
        source[offset] = input + (size_t)which * (size_t)pairs;
        low[offset] = bias0;
        high[offset] = bias1;
    }
    const uint32_t *word = panel;
    for (int pair = 0; pair < pairs; pair++, word += 32) {
        const __m512bh weights0 = (__m512bh)_mm512_loadu_si512((const void *)word);
        const __m512bh weights1 = (__m512bh)_mm512_loadu_si512((const void *)(word + 16));
#pragma clang loop unroll(full)
        for (int offset = 0; offset < width; offset++) {
            const __m512bh value = (__m512bh)_mm512_set1_epi32((int)source[offset][pair]);
            low[offset] = _mm512_dpbf16_ps(low[offset], value, weights0);
            high[offset] = _mm512_dpbf16_ps(high[offset], value, weights1);
        }
    }
    for (int offset = 0; offset < count; offset++) {
        float *target = output + (size_t)(row + offset) * (size_t)outputs + column;
        if (activation == PORTCULLIS_BF16_GELU) {
            _mm512_storeu_ps(target, gelu(low[offset]));
            _mm512_storeu_ps(target + 16, gelu(high[offset]));
        } else {
            _mm512_storeu_ps(target, low[offset]);
            _mm512_storeu_ps(target + 16, high[offset]);
        }
    }
}

// Blocks of twelve rows (a tail of eight or fewer is a block of eight or four, so it costs less);
// the panel is the outer loop, so its words stay in cache while every block passes over them.
__attribute__((target("avx512f,avx512bf16")))
void portcullis_bf16_linear(const uint32_t *input, int rows, int inputs, const uint32_t *weights, const float *bias, int outputs,
                            float *output, int activation) {
    const int pairs = inputs / 2;
    for (int column = 0; column < outputs; column += 32) {
        const __m512 bias0 = _mm512_loadu_ps(bias + column), bias1 = _mm512_loadu_ps(bias + column + 16);
        const uint32_t *panel = weights + (size_t)column * (size_t)pairs;
        for (int row = 0; row < rows; row += 12) {
            const int count = rows - row < 12 ? rows - row : 12;
            if (count > 8) {
                block(input, rows, row, count, 12, pairs, panel, bias0, bias1, outputs, column, output, activation);
            } else if (count > 4) {
                block(input, rows, row, count, 8, pairs, panel, bias0, bias1, outputs, column, output, activation);
            } else {
                block(input, rows, row, count, 4, pairs, panel, bias0, bias1, outputs, column, output, activation);
            }
        }
    }
}

#else

int portcullis_bf16_available(void) { return 0; }
void portcullis_bf16_convert(const float *source, size_t count, uint32_t *target) { (void)source; (void)count; (void)target; }
void portcullis_bf16_linear(const uint32_t *input, int rows, int inputs, const uint32_t *weights, const float *bias, int outputs,
                            float *output, int activation) {
    (void)input; (void)rows; (void)inputs; (void)weights; (void)bias; (void)outputs; (void)output; (void)activation;
}

#endif
