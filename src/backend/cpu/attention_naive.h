/* Naive attention: the seeds' M1 baseline, kept as a real alternative code
 * path (--attention naive, docs/switches.md) so a benchmark can measure
 * what the default online-softmax kernel (kernels.h) buys.
 *
 * It materializes, per query head, the whole score matrix of a run of
 * queries against their sequence's context, as a textbook
 * softmax(Q·Kᵀ / √D)·V does, masked to be causal; memory grows with
 * queries × context, which is why the backend bounds it. The KV cache is
 * read through the block table exactly as kernels.h lays it out. All
 * arithmetic is f32, summed in plain order, so results match the online
 * kernel to f32 rounding, not bit for bit. */
#ifndef FOLO_BACKEND_CPU_ATTENTION_NAIVE_H
#define FOLO_BACKEND_CPU_ATTENTION_NAIVE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

/* Query head `head` (of kv head kv_head) for n_queries tokens of one
 * sequence: query i reads q + i·q_stride [D], sees positions
 * 0..positions[i] and writes out + i·out_stride [D]. scores: scratch of
 * n_queries · n_ctx floats, n_ctx > every positions[i]; k_cache and v_cache
 * are one layer's [n_blocks, n_kv_heads, block_size, D] of kv_dtype (f32 or
 * bf16, as kernels.h). */
void folo_cpu_attention_naive(float *out, size_t out_stride, const float *q, size_t q_stride,
                              const int32_t *positions, int n_queries, int n_ctx, float *scores,
                              const void *k_cache, const void *v_cache, folo_dtype kv_dtype,
                              const int32_t *block_table, int block_size, int n_kv_heads,
                              int kv_head, int head_dim, float scale);

#endif
