/* The one horizontal reduction of the AVX-512 matmuls (kernels_avx512.c)
 * and the GPTQ GEMV (kernels_int4_avx512.c). Both must sum a dot product's
 * 16 partial lanes in the same fixed order, so that a (token, row) result
 * has the same bits whichever kernel computes it (batch invariance across
 * decode and prefill); sharing the function makes that a fact rather than
 * a promise. Include only from files compiled with AVX-512 flags. */
#ifndef FOLO_BACKEND_CPU_REDUCE_AVX512_H
#define FOLO_BACKEND_CPU_REDUCE_AVX512_H

#include <immintrin.h>

/* [Σa, Σb, Σc, Σd], each register summed over its own 16 lanes by one fixed
 * tree ((q0 + q2) + (q1 + q3) over its 4-lane quarters, then
 * (l0 + l2) + (l1 + l3)): a result never depends on the other registers,
 * and the shuffles are shared, a quarter of four separate reductions. */
static inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
    /* quarter j: register j's (q0 + q2) + (q1 + q3) */
    __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));
    q = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(2, 3, 0, 1)));
    __m512i lane0_of_quarters = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(lane0_of_quarters, q));
}

#endif
