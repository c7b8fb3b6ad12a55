/* Random GPTQ linears for the kernel tests: the four stored tensors of
 * model/gptq.h (random codes and zeros, positive f16 scales, contiguous or
 * act-order g_idx) and their dequantization written straight from the
 * stored layout, the reference the CPU int4 kernels (test_int4_kernels.c)
 * and the CUDA GPTQ matmul (tests/gpu/test_cuda_backend.c) are held to.
 * Draws from test_random.h's stream. */
#ifndef FOLO_TESTS_GPTQ_RANDOM_H
#define FOLO_TESTS_GPTQ_RANDOM_H

#include <stdint.h>
#include <stdlib.h>

#include "core/dtype.h"
#include "model/gptq.h"
#include "test_random.h"

/* The stored tensors of one random [N, K] linear. */
typedef struct {
    int N, K, G, n_groups;
    int bits;          /* 4 or 8 */
    uint32_t *qweight; /* [K / per, N], per = 32 / bits codes a word */
    uint32_t *qzeros;  /* [n_groups, N / per] */
    uint16_t *scales;  /* [n_groups, N] f16 */
    int32_t *g_idx;    /* [K] */
    folo_tensor parts[FOLO_GPTQ_PARTS];
} stored_linear;

static inline folo_tensor part(const void *data, folo_dtype dtype, int64_t d0, int64_t d1) {
    folo_tensor t = {.data = data, .dtype = dtype, .n_dims = d1 ? 2 : 1, .shape = {d0, d1}};
    return t;
}

static inline void make_linear_bits(stored_linear *s, int N, int K, int group_size,
                                    int act_order, int bits) {
    int per = 32 / bits;
    s->N = N, s->K = K, s->G = group_size < 0 ? K : group_size, s->n_groups = K / s->G;
    s->bits = bits;
    s->qweight = calloc((size_t)K / per * N, sizeof *s->qweight);
    s->qzeros = calloc((size_t)s->n_groups * N / per, sizeof *s->qzeros);
    s->scales = malloc(sizeof *s->scales * (size_t)s->n_groups * N);
    s->g_idx = malloc(sizeof *s->g_idx * (size_t)K);
    for (int i = 0; i < K / per * N; i++) s->qweight[i] = (uint32_t)rng_next();
    for (int i = 0; i < s->n_groups * N / per; i++) s->qzeros[i] = (uint32_t)rng_next();
    for (int i = 0; i < s->n_groups * N; i++)
        s->scales[i] = folo_f32_to_f16(0.001f + 0.05f * (rng_float() + 1.0f));
    for (int k = 0; k < K; k++) s->g_idx[k] = k / s->G;
    /* Act-order: the columns' groups shuffled, each group keeping G columns. */
    for (int k = K - 1; act_order && k > 0; k--) {
        int j = rng_int(k + 1);
        int32_t t = s->g_idx[k];
        s->g_idx[k] = s->g_idx[j], s->g_idx[j] = t;
    }
    s->parts[FOLO_GPTQ_QWEIGHT] = part(s->qweight, FOLO_DTYPE_I32, K / per, N);
    s->parts[FOLO_GPTQ_QZEROS] = part(s->qzeros, FOLO_DTYPE_I32, s->n_groups, N / per);
    s->parts[FOLO_GPTQ_SCALES] = part(s->scales, FOLO_DTYPE_F16, s->n_groups, N);
    s->parts[FOLO_GPTQ_G_IDX] = part(s->g_idx, FOLO_DTYPE_I32, K, 0);
}

static inline void make_linear(stored_linear *s, int N, int K, int group_size, int act_order) {
    make_linear_bits(s, N, K, group_size, act_order, 4);
}

static inline void free_linear(stored_linear *s) {
    free(s->qweight);
    free(s->qzeros);
    free(s->scales);
    free(s->g_idx);
}

/* W [N, K] from the stored tensors, as gptq.h defines it. */
static inline void dequant_stored(float *w, const stored_linear *s, int zeros_minus_one) {
    for (int n = 0; n < s->N; n++) {
        for (int k = 0; k < s->K; k++) {
            int g = s->g_idx[k];
            int b = s->bits, per = 32 / b;
            unsigned mask = (1u << b) - 1u;
            unsigned code = (s->qweight[(k / per) * s->N + n] >> (b * (k % per))) & mask;
            unsigned zero = (s->qzeros[g * (s->N / per) + n / per] >> (b * (n % per))) & mask;
            zero += zeros_minus_one ? 1u : 0u;
            float scale = folo_f16_to_f32(s->scales[g * s->N + n]);
            w[(size_t)n * s->K + k] = ((float)code - (float)zero) * scale;
        }
    }
}

#endif
