/* The online-softmax attention loop over a paged cache, written once for
 * the portable kernels (kernels.c) and their AVX2 twins (kernels_avx2.c),
 * which differ only in the two vector operations they pass in: a dot
 * product and y = y · scale + a · x. The loop (DESIGN §4 step 5, without a
 * score matrix) takes the context in tiles of FOLO_CPU_ATTN_TILE keys:
 * scores of the tile, then the running maximum, denominator and weighted
 * sum of values rescaled once per tile, then one axpy per key; the first
 * key of a tile carries the tile's rescaling, so out is read and written
 * once per key. A bf16 cache's rows are gathered and widened (exactly)
 * into a row of f32 (folo_cpu_kv_load) before the same operations, and
 * each probability is rounded to bf16 before it multiplies a value (the
 * denominator sums them unrounded). Each including file gets its own
 * static copy, inlined with its operations. */
#ifndef FOLO_BACKEND_CPU_ATTENTION_ONLINE_H
#define FOLO_BACKEND_CPU_ATTENTION_ONLINE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "core/dtype.h"

typedef float (*folo_attn_dot_fn)(const float *a, const float *b, int n);
/* y[d] = y[d] · scale + a · x[d] for d < n. */
typedef void (*folo_attn_scale_axpy_fn)(float *y, float scale, float a, const float *x, int n);

/* out [head_dim] = softmax(q · Kᵀ · scale) · V over positions 0..n_ctx-1
 * of kv head kv_head, K and V read through block_table in the CPU cache
 * layout of kernels.h. */
static inline void folo_attention_online(float *out, const float *q, const void *k_cache,
                                         const void *v_cache, folo_dtype kv_dtype,
                                         const int32_t *block_table, int n_ctx, int block_size,
                                         int n_kv_heads, int kv_head, int head_dim, float scale,
                                         folo_attn_dot_fn dot, folo_attn_scale_axpy_fn scale_axpy) {
    float running_max = -INFINITY;                    /* max score seen so far */
    float denom = 0.0f;                               /* Σ e^(score - running_max) so far */
    memset(out, 0, (size_t)head_dim * sizeof(float)); /* Σ e^(score - running_max) · v */

    for (int p0 = 0; p0 < n_ctx; p0 += FOLO_CPU_ATTN_TILE) {
        int n = n_ctx - p0 < FOLO_CPU_ATTN_TILE ? n_ctx - p0 : FOLO_CPU_ATTN_TILE;
        float score[FOLO_CPU_ATTN_TILE];  /* [n] */
        size_t rows[FOLO_CPU_ATTN_TILE];  /* [n] cache rows of the tile's positions */
        float buf[FOLO_CPU_MAX_HEAD_DIM]; /* a bf16 row, widened */
        float tile_max = -INFINITY;
        for (int j = 0; j < n; j++) {
            int pos = p0 + j;
            rows[j] = folo_cpu_cache_row(block_table, pos, block_size, n_kv_heads, kv_head);
            const float *k =
                folo_cpu_kv_load(buf, k_cache, kv_dtype, rows[j], block_size, head_dim, 0);
            score[j] = dot(q, k, head_dim) * scale;
            if (score[j] > tile_max) tile_max = score[j];
        }
        float new_max = tile_max > running_max ? tile_max : running_max;
        float rescale = expf(running_max - new_max); /* 0 on the first tile */
        denom *= rescale;
        for (int j = 0; j < n; j++) {
            float p = expf(score[j] - new_max);
            denom += p;
            /* bf16: P·V takes p rounded, as every product of that mode */
            if (kv_dtype == FOLO_DTYPE_BF16) p = folo_bf16_round(p);
            const float *v =
                folo_cpu_kv_load(buf, v_cache, kv_dtype, rows[j], block_size, head_dim, 1);
            scale_axpy(out, j == 0 ? rescale : 1.0f, p, v, head_dim);
        }
        running_max = new_max;
    }
    float inv_denom = 1.0f / denom;
    for (int d = 0; d < head_dim; d++) out[d] *= inv_denom;
}

#endif
