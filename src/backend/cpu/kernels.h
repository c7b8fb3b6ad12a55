/* The CPU backend's kernels: the blocks of the Qwen3 forward pass (DESIGN §4)
 * in plain, portable C, all arithmetic in f32.
 *
 * Each kernel is single-threaded and works on the range it is given; the
 * backend (cpu_backend.c) splits ranges across its thread pool. Activations
 * are f32, row-major and contiguous; weights are used as stored (f32, f16 or
 * bf16, [out, in] row-major) and converted a few rows at a time, never as a
 * whole-model f32 copy.
 *
 * Summation order is part of the contract: every dot product of the matmul
 * sums in FOLO_CPU_LANES interleaved lanes (lane l takes elements k with
 * k % FOLO_CPU_LANES == l, in order) and then adds the lanes left to right,
 * whatever the number of tokens in the call. So a token's result does not
 * depend on which other tokens share its batch: greedy outputs are the same
 * however requests are batched or chunked.
 *
 * The KV cache of one layer is [n_slots, Hkv, D] f32 with
 * slot = block * block_size + offset; attention reads a sequence's context
 * through its block table. tests/c/test_cpu_kernels.c checks every kernel
 * against a naive double-precision twin. */
#ifndef FOLO_BACKEND_CPU_KERNELS_H
#define FOLO_BACKEND_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

/* Interleaved partial sums per dot product (see above). */
#define FOLO_CPU_LANES 8
/* Weight rows a matmul converts and consumes together. */
#define FOLO_CPU_MATMUL_ROWS 2
/* Keys scored together between two rescalings of the online softmax. */
#define FOLO_CPU_ATTN_TILE 32

/* out[i] = weight[i] * (x[i] / sqrt(mean(x²) + eps)) for i < n. out may be x. */
void folo_cpu_rmsnorm(float *out, const float *x, const float *weight, int n, float eps);

/* y[t, r] = Σ_k x[t, k] · w[r, k] for t < n_tokens and rows r in
 * [row_begin, row_end) of the weight w [n_rows, K] (dtype w_dtype).
 * x: [n_tokens, K]; y: row stride ldy floats, column r holds weight row r.
 * rows_f32: scratch of FOLO_CPU_MATMUL_ROWS * K floats (unused for f32). */
void folo_cpu_matmul(float *y, size_t ldy, const float *x, int n_tokens, int K, const void *w,
                     folo_dtype w_dtype, int row_begin, int row_end, float *rows_f32);

/* inv_freq[i] = 1 / theta^(2i / D) for i < D/2, rounded as transformers
 * rounds it (f32 exponent, f32 power, f32 division). */
void folo_cpu_rope_inv_freq(float *inv_freq, int head_dim, double theta);

/* cos/sin [D/2] of angle = pos · inv_freq[i], the product taken in f32. */
void folo_cpu_rope_cos_sin(float *cos_out, float *sin_out, int pos, const float *inv_freq,
                           int half_dim);

/* Rotate-half RoPE in place on vec [n_heads, D]: for i < D/2 the pair
 * (i, i + D/2) turns by the angle whose cos/sin are given ([D/2]). */
void folo_cpu_rope(float *vec, int n_heads, int head_dim, const float *cos_half,
                   const float *sin_half);

/* gate[i] = silu(gate[i]) · up[i], silu(g) = g / (1 + e^-g). */
void folo_cpu_silu_mul(float *gate, const float *up, size_t n);

/* x[i] += y[i] (the residual connection). */
void folo_cpu_add(float *x, const float *y, size_t n);

/* One query head of one token: out [D] = softmax(q·Kᵀ · scale) · V over the
 * n_ctx positions 0..n_ctx-1 of its sequence, kv head kv_head, read from the
 * layer's caches k_cache/v_cache [n_slots, n_kv_heads, D] through
 * block_table (position p lives in block block_table[p / block_size] at
 * offset p % block_size). Online softmax in f32: keys are scored a tile at a
 * time and the running maximum, denominator and output are rescaled per
 * tile, so no score row longer than FOLO_CPU_ATTN_TILE exists. n_ctx >= 1. */
void folo_cpu_attention(float *out, const float *q, const float *k_cache, const float *v_cache,
                        const int32_t *block_table, int n_ctx, int block_size, int n_kv_heads,
                        int kv_head, int head_dim, float scale);

#endif
