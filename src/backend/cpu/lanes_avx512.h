/* The lane mask of a 16-float tail, shared by the AVX-512 kernel headers
 * (bf16_avx512.h, kernels_int4_avx512.h). Include only from files compiled
 * with AVX-512 flags. */
#ifndef FOLO_BACKEND_CPU_LANES_AVX512_H
#define FOLO_BACKEND_CPU_LANES_AVX512_H

#include <immintrin.h>

/* The first n of 16 lanes, n clamped to 0..16. */
static inline __mmask16 lanes_below(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

#endif
