/* The CUDA backend's kernels, callable from C: one launch function per
 * kernel family, each on device pointers and a stream, each returning 0 or
 * -1 with err filled (a failed launch names file and line). The backend
 * (cuda_backend.cu) strings them into the forward pass of DESIGN §4;
 * tests/gpu/test_cuda_backend.c checks each against its plain-C twin in
 * backend/cpu/kernels.h.
 *
 * Number formats: the residual stream and every matmul output are f32;
 * matmul inputs (normed activations, the SiLU product, the attention output)
 * and weights are bf16, stored as raw uint16_t; norm weights, RoPE
 * frequencies and all reductions and softmax arithmetic are f32. The KV cache
 * of one layer is [n_slots, Hkv, D] bf16, slot = block * block_size + offset
 * (the CPU backend keeps each block's heads apart, [block, Hkv, block_size,
 * D]; the tests convert between the two).
 *
 * Limit the launchers check: head_dim even and at most
 * FOLO_CUDA_MAX_HEAD_DIM. */
#ifndef FOLO_BACKEND_CUDA_KERNELS_H
#define FOLO_BACKEND_CUDA_KERNELS_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define FOLO_CUDA_MAX_HEAD_DIM 256

/* ---- embed.cu ---- */

/* x[t, :] = f32(table[ids[t], :]) for t < n_tokens; table [V, H] bf16. */
int folo_cuda_embed(float *x, const uint16_t *table, const int32_t *ids, int n_tokens, int H,
                    cudaStream_t stream, folo_error *err);

/* ---- norm.cu ---- */

/* out[r, :] = bf16(weight ⊙ v / sqrt(mean(v²) + eps)) for r < n_rows, where
 * src = r, or rows[r] when rows is not NULL, and v = x[src, :] (x [*, H]),
 * plus residual[src, :] when residual is not NULL: the residual connection
 * fused with the next norm. Without rows the sum is stored back into x;
 * with rows (the final norm of the logit rows) x is left as it was, since
 * nothing reads it afterwards. out: [n_rows, H] bf16. */
int folo_cuda_rmsnorm(uint16_t *out, float *x, const float *residual, const int32_t *rows,
                      int n_rows, const float *weight, int H, float eps, cudaStream_t stream,
                      folo_error *err);

/* ---- rope.cu ---- */

/* For every token t of qkv [T, (Hq + 2·Hkv)·D] f32 (q heads, then k heads,
 * then v heads, as the fused QKV matmul writes them): each q head gets
 * rmsnorm with q_norm [D] then rotate-half RoPE at positions[t], in place;
 * each k head the same with k_norm, written to k_cache[slot_mapping[t]] as
 * bf16; each v head is written to v_cache[slot_mapping[t]] as bf16.
 * inv_freq [D/2] as folo_cpu_rope_inv_freq computes it. */
int folo_cuda_qk_norm_rope_cache(float *qkv, uint16_t *k_cache, uint16_t *v_cache,
                                 const float *q_norm, const float *k_norm, const float *inv_freq,
                                 const int32_t *positions, const int32_t *slot_mapping,
                                 int n_tokens, int Hq, int Hkv, int D, float eps,
                                 cudaStream_t stream, folo_error *err);

/* ---- attention.cu ---- */

/* (token, head, split) shares the decode kernel may leave in partials. */
#define FOLO_CUDA_ATTN_PARTIALS 16384

/* Query rows of one tile of the prefill kernel (4 warps of 16). */
#define FOLO_CUDA_ATTN_TILE_ROWS 64

/* Causal paged attention of every token of a flat batch: for token t of
 * sequence token_seq[t], each query head j (read from qkv's q part, row
 * stride (Hq + 2·Hkv)·D) attends positions 0..positions[t] of kv head
 * j / (Hq / Hkv), read through the sequence's row of block_tables
 * [n_seqs, max_blocks_per_seq]. Online softmax in f32 with scale
 * 1/sqrt(D); no score matrix is stored. out: [T, Hq·D] bf16.
 *
 * Two kernels share the batch's tokens:
 * - tiles (n_tiles of them, from folo_cuda_attention_tiles): each a run of
 *   up to FOLO_CUDA_ATTN_TILE_ROWS query tokens of one sequence, one thread
 *   block per query head running Q·Kᵀ and P·V on the tensor cores (bf16
 *   in, f32 accumulate; Q and P rounded to bf16), reading each key once per
 *   tile: prefill chunks. D must be a multiple of 16, at most 128
 *   (folo_cuda_attention_tiled_ok).
 * - decode_tokens (n_decode of them; NULL: tokens 0..n_decode-1): each
 *   token's heads of a KV group together, the context split over blocks by
 *   range (max_ctx, a bound on every served token's position + 1, sets the
 *   split) in f32, merged through partials [FOLO_CUDA_ATTN_PARTIALS, D + 2]:
 *   decodes. */
int folo_cuda_attention(uint16_t *out, const float *qkv, const uint16_t *k_cache,
                        const uint16_t *v_cache, const int32_t *block_tables,
                        int max_blocks_per_seq, const int32_t *token_seq, const int32_t *positions,
                        int max_ctx, const int32_t *tiles, int n_tiles,
                        const int32_t *decode_tokens, int n_decode, float *partials, int Hq,
                        int Hkv, int D, int block_size, cudaStream_t stream, folo_error *err);

/* Whether the tiled kernel takes head dimension D. */
int folo_cuda_attention_tiled_ok(int D);

/* Splits a batch's sequences (seq_starts [n_seqs + 1], as folo_batch has
 * them) between the kernels: those of at least min_rows tokens into tiles
 * of at most FOLO_CUDA_ATTN_TILE_ROWS (tiles[2i] a tile's first token,
 * tiles[2i + 1] its count), the other tokens into decode_tokens
 * [*n_decode]. tiles holds folo_cuda_attention_max_tiles(n_tokens, n_seqs)
 * pairs, decode_tokens n_tokens; returns the number of tiles. */
int folo_cuda_attention_tiles(const int32_t *seq_starts, int n_seqs, int min_rows, int32_t *tiles,
                              int32_t *decode_tokens, int *n_decode);
int folo_cuda_attention_max_tiles(int n_tokens, int n_seqs);

/* ---- argmax.cu ---- */

/* out[r] = the lowest id holding the largest of logits[r, :] (logits
 * [n_rows, V] f32), as folo_argmax computes it on the host. */
int folo_cuda_argmax(int32_t *out, const float *logits, int n_rows, int V, cudaStream_t stream,
                     folo_error *err);

/* ---- activation.cu ---- */

/* out[t, i] = bf16(silu(g) · u) with g = gate_up[t, i], u = gate_up[t, I + i];
 * gate_up [T, 2I] f32 (the fused gate/up matmul's output), out [T, I]. */
int folo_cuda_silu_mul(uint16_t *out, const float *gate_up, int n_tokens, int I,
                       cudaStream_t stream, folo_error *err);

/* ---- gemm.cu ---- */

/* y[T, N] (f32) = x[T, K] · wᵀ with x bf16 and w [N, K] bf16 row-major,
 * accumulated in f32 (cuBLAS, on the handle's stream). */
int folo_cuda_gemm(cublasHandle_t cublas, float *y, const uint16_t *x, const uint16_t *w,
                   int n_tokens, int N, int K, folo_error *err);

/* ---- gptq.cu ---- */

struct folo_qlinear;

/* A GPTQ linear W [N, K] on the device, in the repacked row layout of
 * model/gptq.h (codes [N, row_bytes], scales and zeros [N, n_groups] f32,
 * g_idx [K]); K a multiple of 8. */
typedef struct folo_cuda_qlinear {
    int N, K, group_size, n_groups;
    int block_groups; /* every 32-column block lies in one group (g_idx[k] = k / G, G % 32 = 0) */
    size_t row_bytes;
    const uint8_t *codes;
    const float *scales;
    const float *zeros;
    const int32_t *g_idx;
} folo_cuda_qlinear;

/* Token rows up to which a GPTQ matmul is a GEMV on the 4-bit codes. */
#define FOLO_CUDA_GPTQ_GEMV_TOKENS 8
/* Weights dequantized to bf16 per GEMM of a wider GPTQ matmul: the size of
 * its scratch buffer, in elements. */
#define FOLO_CUDA_GPTQ_DEQUANT_ELEMS ((size_t)16 << 20)

/* Device bytes folo_cuda_qlinear_upload needs for src (with alignment). */
size_t folo_cuda_qlinear_bytes(const struct folo_qlinear *src);

/* Copies the host linear src into device (folo_cuda_qlinear_bytes(src)
 * bytes) and points *dst at it. */
int folo_cuda_qlinear_upload(folo_cuda_qlinear *dst, void *device, const struct folo_qlinear *src,
                             folo_error *err);

/* y[t, n] (f32, row stride ldy >= N) = Σ_k x[t, k] · W[n, k] for t <
 * n_tokens, x [n_tokens, K] bf16. More than FOLO_CUDA_GPTQ_GEMV_TOKENS rows
 * need dequant, a device buffer of FOLO_CUDA_GPTQ_DEQUANT_ELEMS bf16 (W is
 * then rounded to bf16 and multiplied by cuBLAS on the handle's stream,
 * which must be `stream`); fewer run the GEMV in f32 and may pass NULL. */
int folo_cuda_gptq_matmul(cublasHandle_t cublas, float *y, int ldy, const uint16_t *x,
                          int n_tokens, const folo_cuda_qlinear *w, uint16_t *dequant,
                          cudaStream_t stream, folo_error *err);

#endif
