/* Seeded random inputs for the kernel tests: a splitmix64 stream (each test
 * program seeds it once at the start of main, so its inputs are the same on
 * every run) and weights stored in a given dtype. */
#ifndef FOLO_TESTS_TEST_RANDOM_H
#define FOLO_TESTS_TEST_RANDOM_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

static uint64_t rng_state;

static inline void rng_seed(uint64_t seed) { rng_state = seed; }

static inline uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float rng_float(void) {
    return (float)((double)(rng_next() >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

static inline int rng_int(int n) { return (int)(rng_next() % (uint64_t)n); }

static inline void fill_random(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_float();
}

/* Stores src [n] as dtype t into dst; returns the values as stored, in f32. */
static inline void store_weights(folo_dtype t, const float *src, void *dst, float *stored,
                                 size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (t == FOLO_DTYPE_F32)
            ((float *)dst)[i] = src[i];
        else if (t == FOLO_DTYPE_BF16)
            ((uint16_t *)dst)[i] = folo_f32_to_bf16(src[i]);
        else
            ((uint16_t *)dst)[i] = folo_f32_to_f16(src[i]);
    }
    folo_to_f32(t, dst, stored, n);
}

#endif
