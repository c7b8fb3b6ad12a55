/* Tokens as `vdpbf16ps` reads them (kernels_avx512bf16.c's matmul_bf16,
 * kernels_int4_avx512bf16.c's GEMV): each row rounded to bf16 by the one
 * instruction both use, so that the two give the same bits. Include only
 * from files compiled with AVX512-BF16 flags. */
#ifndef FOLO_BACKEND_CPU_BF16_AVX512_H
#define FOLO_BACKEND_CPU_BF16_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#include "backend/cpu/lanes_avx512.h"

#define PAIRS 32 /* bf16 elements of a register */

/* K rounded up to whole registers: a rounded token row's length. */
static inline int bf16_padded(int K) { return (K + PAIRS - 1) / PAIRS * PAIRS; }

/* xb [n_tokens, bf16_padded(K)] = x [n_tokens, K] rounded to bf16, +0 beyond K. */
static inline void bf16_round_tokens(uint16_t *xb, const float *x, int n_tokens, int K) {
    int Kp = bf16_padded(K);
    for (int t = 0; t < n_tokens; t++, xb += Kp, x += K) {
        for (int k = 0; k < Kp; k += PAIRS) {
            __m512 a = _mm512_maskz_loadu_ps(lanes_below(K - k), x + k);
            __m512 b = _mm512_maskz_loadu_ps(lanes_below(K - k - 16), x + k + 16);
            /* cvtne2ps: the second operand fills the low 16 elements */
            _mm512_storeu_si512(xb + k, (__m512i)_mm512_cvtne2ps_pbh(b, a));
        }
    }
}

#endif
