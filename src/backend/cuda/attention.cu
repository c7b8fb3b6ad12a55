/* Paged causal attention with GQA over a flat batch that mixes prefill
 * chunks and decodes: every token is a query row with its own context
 * length (its position + 1) and its sequence's block table, so the same
 * kernel serves both, and no T × T score matrix exists.
 *
 * One block per (token, query head), ATTN_WARPS warps. The warps split the
 * context key by key (warp w takes keys w, w + ATTN_WARPS, ...), each
 * keeping its own online softmax state (running max m, denominator l,
 * output accumulator o) in f32; a lane owns the head elements
 * d = lane + 32·e, so a key's score is one warp sum. Keys are taken
 * ATTN_KEYS at a time so their loads are in flight together. At the end the
 * warps' states are merged through shared memory:
 *   m = max m_w,  out = Σ_w e^(m_w − m) · o_w / Σ_w e^(m_w − m) · l_w.
 *
 * This is the simple, correct first version (FlashDecoding-style splitting
 * across blocks and tensor-core tiles for prefill come later): K and V rows
 * are re-read by every query head of a KV group, from L2. */
#include <math.h>

#include "backend/cuda/common.cuh"

#define ATTN_WARPS 4
#define ATTN_KEYS 4

template <int E> /* head elements per lane: ceil(D / 32) rounded up to 1, 2, 4 or 8 */
__global__ void __launch_bounds__(32 * ATTN_WARPS)
    attention_kernel(__nv_bfloat16 *out, const float *qkv, const __nv_bfloat16 *k_cache,
                     const __nv_bfloat16 *v_cache, const int32_t *block_tables,
                     int max_blocks_per_seq, const int32_t *token_seq, const int32_t *positions,
                     int Hq, int Hkv, int D, int block_size, float scale) {
    __shared__ float warp_max[ATTN_WARPS], warp_denom[ATTN_WARPS];
    __shared__ float warp_out[ATTN_WARPS][32 * E];
    int t = blockIdx.x / Hq, head = blockIdx.x % Hq;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int kv_head = head / (Hq / Hkv);
    int n_ctx = positions[t] + 1;
    const int32_t *table = block_tables + (size_t)token_seq[t] * max_blocks_per_seq;
    const float *q = qkv + (size_t)t * (Hq + 2 * Hkv) * D + (size_t)head * D; /* [D] */
    size_t slot_stride = (size_t)Hkv * D;

    float q_reg[E], o[E];
#pragma unroll
    for (int e = 0; e < E; e++) {
        int d = lane + 32 * e;
        q_reg[e] = d < D ? q[d] * scale : 0.0f;
        o[e] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    for (int p0 = warp * ATTN_KEYS; p0 < n_ctx; p0 += ATTN_WARPS * ATTN_KEYS) {
        float score[ATTN_KEYS];
        size_t row[ATTN_KEYS];
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            int p = p0 + j < n_ctx ? p0 + j : n_ctx - 1; /* past the end: repeat, then mask */
            size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
            row[j] = slot * slot_stride + (size_t)kv_head * D;
            float partial = 0.0f;
#pragma unroll
            for (int e = 0; e < E; e++) {
                int d = lane + 32 * e;
                if (d < D) partial += q_reg[e] * __bfloat162float(k_cache[row[j] + d]);
            }
            score[j] = partial;
        }
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            score[j] = p0 + j < n_ctx ? folo_warp_sum(score[j]) : -INFINITY;
            tile_max = fmaxf(tile_max, score[j]);
        }
        float new_max = fmaxf(m, tile_max);
        float rescale = expf(m - new_max); /* 0 on the first tile (m = -inf) */
        l *= rescale;
#pragma unroll
        for (int e = 0; e < E; e++) o[e] *= rescale;
#pragma unroll
        for (int j = 0; j < ATTN_KEYS; j++) {
            float p = expf(score[j] - new_max); /* 0 for masked keys */
            l += p;
#pragma unroll
            for (int e = 0; e < E; e++) {
                int d = lane + 32 * e;
                if (d < D) o[e] += p * __bfloat162float(v_cache[row[j] + d]);
            }
        }
        m = new_max;
    }

    if (lane == 0) {
        warp_max[warp] = m;
        warp_denom[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < E; e++) warp_out[warp][lane + 32 * e] = o[e];
    __syncthreads();
    if (warp != 0) return;
    float block_max = -INFINITY;
    for (int w = 0; w < ATTN_WARPS; w++) block_max = fmaxf(block_max, warp_max[w]);
    float denom = 0.0f, weight[ATTN_WARPS];
    for (int w = 0; w < ATTN_WARPS; w++) {
        /* A warp that saw no key has m = -inf and weight 0. */
        weight[w] = warp_max[w] == -INFINITY ? 0.0f : expf(warp_max[w] - block_max);
        denom += weight[w] * warp_denom[w];
    }
    float inv_denom = 1.0f / denom;
    __nv_bfloat16 *dst = out + (size_t)t * Hq * D + (size_t)head * D;
#pragma unroll
    for (int e = 0; e < E; e++) {
        int d = lane + 32 * e;
        if (d >= D) continue;
        float sum = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w++) sum += weight[w] * warp_out[w][d];
        dst[d] = __float2bfloat16(sum * inv_denom);
    }
}

int folo_cuda_attention(uint16_t *out, const float *qkv, const uint16_t *k_cache,
                        const uint16_t *v_cache, const int32_t *block_tables,
                        int max_blocks_per_seq, const int32_t *token_seq, const int32_t *positions,
                        int n_tokens, int Hq, int Hkv, int D, int block_size, cudaStream_t stream,
                        folo_error *err) {
    if (D < 1 || D > FOLO_CUDA_MAX_HEAD_DIM || Hkv < 1 || Hq % Hkv != 0)
        return folo_fail(err,
                         "cuda attention: unsupported heads (head_dim %d of at most %d, %d query "
                         "heads over %d kv heads)",
                         D, FOLO_CUDA_MAX_HEAD_DIM, Hq, Hkv);
    if (n_tokens < 1) return 0;
    float scale = 1.0f / sqrtf((float)D);
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    const __nv_bfloat16 *k = (const __nv_bfloat16 *)k_cache, *v = (const __nv_bfloat16 *)v_cache;
    unsigned blocks = (unsigned)n_tokens * (unsigned)Hq;
    int threads = 32 * ATTN_WARPS;
    if (D <= 32)
        attention_kernel<1>
            <<<blocks, threads, 0, stream>>>(o, qkv, k, v, block_tables, max_blocks_per_seq,
                                             token_seq, positions, Hq, Hkv, D, block_size, scale);
    else if (D <= 64)
        attention_kernel<2>
            <<<blocks, threads, 0, stream>>>(o, qkv, k, v, block_tables, max_blocks_per_seq,
                                             token_seq, positions, Hq, Hkv, D, block_size, scale);
    else if (D <= 128)
        attention_kernel<4>
            <<<blocks, threads, 0, stream>>>(o, qkv, k, v, block_tables, max_blocks_per_seq,
                                             token_seq, positions, Hq, Hkv, D, block_size, scale);
    else
        attention_kernel<8>
            <<<blocks, threads, 0, stream>>>(o, qkv, k, v, block_tables, max_blocks_per_seq,
                                             token_seq, positions, Hq, Hkv, D, block_size, scale);
    LAUNCH_CHECK();
    return 0;
}
