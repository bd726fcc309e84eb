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

// One block of up to `width` rows (8 or 4, a constant where it is inlined) by 32 outputs:
// 2 × `width` accumulators of the 32 vector registers. Rows past `count` repeat the last one;
// their sums are not stored.
__attribute__((target("avx512f,avx512bf16"), always_inline))
static inline void block(const uint32_t *input, int rows, int row, int count, int width, int pairs, const uint32_t *panel, __m512 bias0,
                         __m512 bias1, int outputs, int column, float *output) {
    const uint32_t *source[8];
    __m512 low[8], high[8];
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
        _mm512_storeu_ps(target, low[offset]);
        _mm512_storeu_ps(target + 16, high[offset]);
    }
}

// Blocks of eight rows (a last one of four or fewer is a block of four, so a short tail costs
// half); the panel is the outer loop, so its words stay in cache while every block passes over them.
__attribute__((target("avx512f,avx512bf16")))
void portcullis_bf16_linear(const uint32_t *input, int rows, int inputs, const uint32_t *weights, const float *bias, int outputs,
                            float *output) {
    const int pairs = inputs / 2;
    for (int column = 0; column < outputs; column += 32) {
        const __m512 bias0 = _mm512_loadu_ps(bias + column), bias1 = _mm512_loadu_ps(bias + column + 16);
        const uint32_t *panel = weights + (size_t)column * (size_t)pairs;
        for (int row = 0; row < rows; row += 8) {
            const int count = rows - row < 8 ? rows - row : 8;
            if (count > 4) {
                block(input, rows, row, count, 8, pairs, panel, bias0, bias1, outputs, column, output);
            } else {
                block(input, rows, row, count, 4, pairs, panel, bias0, bias1, outputs, column, output);
            }
        }
    }
}

#else

int portcullis_bf16_available(void) { return 0; }
void portcullis_bf16_convert(const float *source, size_t count, uint32_t *target) { (void)source; (void)count; (void)target; }
void portcullis_bf16_linear(const uint32_t *input, int rows, int inputs, const uint32_t *weights, const float *bias, int outputs,
                            float *output) {
    (void)input; (void)rows; (void)inputs; (void)weights; (void)bias; (void)outputs; (void)output;
}

#endif
