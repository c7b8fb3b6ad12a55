/* Element-wise helpers of the AVX-512 kernel files (kernels_avx512.c,
 * kernels_avx512bf16.c): bf16 widened to f32 and a vector e^x, written
 * once so that SiLU and both attention kernels compute the same values.
 * Include only from files compiled with AVX-512 flags. */
#ifndef FOLO_BACKEND_CPU_MATH_AVX512_H
#define FOLO_BACKEND_CPU_MATH_AVX512_H

#include <immintrin.h>

/* 16 bf16 as f32, exactly. */
static inline __m512 bf16x16_to_f32(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* e^x for 16 lanes within ~2 ulp of expf: x = n ln2 + r with |r| <= ln2/2
 * (ln2 split in two for an exact product), e^r by Cephes' degree-6
 * polynomial, and 2^n applied by scalef, which saturates to +inf and
 * flushes to +0 without a range check. -inf gives +0; NaN stays NaN. */
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* e^-104 is 0 in f32 */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

#endif
