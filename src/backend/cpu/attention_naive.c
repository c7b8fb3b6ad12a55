/* The naive attention of attention_naive.h: three passes over a
 * materialized score matrix (scores, softmax, weighted sum of values). */
#include "backend/cpu/attention_naive.h"

#include <math.h>
#include <string.h>

#include "backend/cpu/attention_online.h"

void folo_cpu_attention_naive(float *out, size_t out_stride, const float *q, size_t q_stride,
                              const int32_t *positions, int n_queries, int n_ctx, float *scores,
                              const void *k_cache, const void *v_cache, folo_dtype kv_dtype,
                              const int32_t *block_table, int block_size, int n_kv_heads,
                              int kv_head, int head_dim, float scale) {
    float buf[FOLO_CPU_MAX_HEAD_DIM]; /* a bf16 row, widened */
    /* S = Q·Kᵀ·scale [n_queries, n_ctx], -inf where a query may not look. */
    for (int j = 0; j < n_ctx; j++) {
        size_t row = folo_cpu_cache_row(block_table, j, block_size, n_kv_heads, kv_head);
        const float *k = folo_cpu_kv_load(buf, k_cache, kv_dtype, row, block_size, head_dim, 0);
        for (int i = 0; i < n_queries; i++) {
            float *s = scores + (size_t)i * n_ctx + j;
            if (j > positions[i]) {
                *s = -INFINITY;
                continue;
            }
            const float *qi = q + (size_t)i * q_stride;
            float dot = 0.0f;
            for (int d = 0; d < head_dim; d++) dot += qi[d] * k[d];
            *s = dot * scale;
        }
    }
    /* P = softmax(S) row by row. */
    for (int i = 0; i < n_queries; i++) {
        float *row = scores + (size_t)i * n_ctx;
        float max = -INFINITY, sum = 0.0f;
        for (int j = 0; j < n_ctx; j++) max = row[j] > max ? row[j] : max;
        for (int j = 0; j < n_ctx; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        float inv = 1.0f / sum;
        /* bf16: P·V takes P rounded, as every product of that mode */
        for (int j = 0; j < n_ctx; j++)
            row[j] = kv_dtype == FOLO_DTYPE_BF16 ? folo_bf16_round(row[j] * inv) : row[j] * inv;
    }
    /* O = P·V. */
    for (int i = 0; i < n_queries; i++)
        memset(out + (size_t)i * out_stride, 0, (size_t)head_dim * sizeof(float));
    for (int j = 0; j < n_ctx; j++) {
        size_t row = folo_cpu_cache_row(block_table, j, block_size, n_kv_heads, kv_head);
        const float *v = folo_cpu_kv_load(buf, v_cache, kv_dtype, row, block_size, head_dim, 1);
        for (int i = 0; i < n_queries; i++) {
            float p = scores[(size_t)i * n_ctx + j];
            if (p == 0.0f) continue; /* masked (or underflowed): adds nothing */
            float *o = out + (size_t)i * out_stride;
            for (int d = 0; d < head_dim; d++) o[d] += p * v[d];
        }
    }
}
