/* Paged causal attention with GQA over a flat batch that mixes prefill
 * chunks and decodes: every token is a query row with its own context
 * length (its position + 1) and its sequence's block table. No T × T score
 * matrix exists anywhere. Two kernels (kernels.h says which runs when):
 *
 * attention_decode_kernel, for decodes (FlashDecoding): one block per
 * (token, KV group, split of the context), DECODE_WARPS warps; the group's
 * query heads share every K and V row the block reads. A split is a range
 * of at least DECODE_SPLIT_MIN keys, so a long context at a small batch
 * still fills the GPU, and there are only as many as that needs. The warps take the split's keys
 * DECODE_KEYS at a time (their loads in flight together), each keeping its
 * own online softmax state (running max m, denominator l, output
 * accumulator o) in f32; a lane owns the head elements d = lane·E + e, read
 * as one vector load, so a key's score is one warp sum. The warps' states
 * merge through shared memory:
 *   m = max m_w,  out = Σ_w e^(m_w − m) · o_w / Σ_w e^(m_w − m) · l_w,
 * and, with several splits, the splits' states merge the same way in
 * attention_combine_kernel.
 *
 * attention_tiled_kernel, for prefill chunks (FlashAttention-2's loop): one
 * block per (tile of up to 64 query tokens of one sequence, query head),
 * 4 warps of 16 query rows. For each tile of TILE_KEYS keys the block
 * copies K and V into shared memory once; each warp computes its 16 × 64
 * scores S = Q·Kᵀ with mma.sync m16n8k16 (bf16 in, f32 accumulate), masks
 * the keys past each row's position, updates its rows' online softmax in
 * registers, and adds P·V with P (rounded to bf16) fed straight from the
 * score accumulators: the m16n8 accumulator layout of two adjacent key
 * columns is the m16k16 operand layout, so P never leaves registers.
 * Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, q = lane % 4):
 *   A (16 × 16, row): regs {row g, cols 2q..2q+1}, {row g+8, same},
 *                     {row g, cols 2q+8..}, {row g+8, cols 2q+8..}
 *   B (16 × 8, col):  regs {rows 2q..2q+1, col g}, {rows 2q+8.., col g}
 *   C (16 × 8):       c0,c1 at row g, cols 2q, 2q+1; c2,c3 at row g+8.
 * A quad's 4 lanes hold one row's columns, so row maxima and sums take two
 * shuffles. Shared rows are padded by 16 bytes so the 8 rows a B load
 * touches fall in different banks. */
#include <math.h>

#include "backend/cuda/common.cuh"

#define DECODE_WARPS 4
#define DECODE_KEYS 8       /* keys a warp has in flight */
#define DECODE_SPLIT_MIN 64 /* keys per split, at least */
#define DECODE_MAX_SPLITS 32
#define DECODE_TARGET_BLOCKS 1024 /* blocks a decode launch aims for (~8 per SM) */

/* x[0..E) = the E bf16 at p as f32; p is aligned to 2·E bytes. */
template <int E>
__device__ __forceinline__ void load_bf16(float (&x)[E], const __nv_bfloat16 *p) {
    if constexpr (E == 8) {
        uint4 v = *reinterpret_cast<const uint4 *>(p);
        const __nv_bfloat16 *h = reinterpret_cast<const __nv_bfloat16 *>(&v);
#pragma unroll
        for (int e = 0; e < 8; e++) x[e] = __bfloat162float(h[e]);
    } else if constexpr (E == 4) {
        uint2 v = *reinterpret_cast<const uint2 *>(p);
        const __nv_bfloat16 *h = reinterpret_cast<const __nv_bfloat16 *>(&v);
#pragma unroll
        for (int e = 0; e < 4; e++) x[e] = __bfloat162float(h[e]);
    } else if constexpr (E == 2) {
        __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162 *>(p);
        x[0] = __low2float(v), x[1] = __high2float(v);
    } else {
        x[0] = __bfloat162float(*p);
    }
}

/* A lane's E elements d = lane·E + e of the row at p (zeros past D). */
template <int E>
__device__ __forceinline__ void load_lane(float (&x)[E], const __nv_bfloat16 *p, int lane, int D) {
    if (D == 32 * E) {
        load_bf16<E>(x, p + lane * E);
    } else {
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane * E + e;
            x[e] = d < D ? __bfloat162float(p[d]) : 0.0f;
        }
    }
}

/* E: head elements per lane, ceil(D / 32) rounded up to 1, 2, 4 or 8.
 * G: query heads per block, sharing each K and V row read: all of a KV
 * group's (Hq / Hkv) when that is 2, 4 or 8, else 1. */
template <int E, int G>
__global__ void __launch_bounds__(32 * DECODE_WARPS)
    attention_decode_kernel(__nv_bfloat16 *out, float *partials, const float *qkv,
                            const __nv_bfloat16 *k_cache, const __nv_bfloat16 *v_cache,
                            const int32_t *block_tables, int max_blocks_per_seq,
                            const int32_t *token_seq, const int32_t *positions,
                            const int32_t *tokens, int Hq, int Hkv, int D, int block_size,
                            float scale, int split_keys) {
    __shared__ float warp_max[DECODE_WARPS][G], warp_denom[DECODE_WARPS][G];
    __shared__ float warp_out[DECODE_WARPS][G][32 * E];
    int blocks_per_token = Hq / G;
    int i = blockIdx.x / blocks_per_token, head0 = blockIdx.x % blocks_per_token * G;
    int t = tokens ? tokens[i] : i; /* the i-th token this launch serves */
    int split = blockIdx.y, n_splits = gridDim.y;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int kv_head = head0 / (Hq / Hkv);
    int n_ctx = positions[t] + 1;
    int k_begin = split * split_keys, k_end = min(n_ctx, k_begin + split_keys);
    const int32_t *table = block_tables + (size_t)token_seq[t] * max_blocks_per_seq;
    const float *q = qkv + (size_t)t * (Hq + 2 * Hkv) * D + (size_t)head0 * D; /* [G, D] */
    size_t slot_stride = (size_t)Hkv * D;

    float q_reg[G][E], o[G][E], m[G], l[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane * E + e;
            q_reg[g][e] = d < D ? q[g * D + d] * scale : 0.0f;
            o[g][e] = 0.0f;
        }
        m[g] = -INFINITY, l[g] = 0.0f;
    }

    for (int p0 = k_begin + warp * DECODE_KEYS; p0 < k_end; p0 += DECODE_WARPS * DECODE_KEYS) {
        float score[DECODE_KEYS][G];
        const __nv_bfloat16 *v_row[DECODE_KEYS];
#pragma unroll
        for (int j = 0; j < DECODE_KEYS; j++) {
            int p = p0 + j < k_end ? p0 + j : k_end - 1; /* past the end: repeat, then mask */
            size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
            size_t row = slot * slot_stride + (size_t)kv_head * D;
            float k[E];
            load_lane<E>(k, k_cache + row, lane, D);
#pragma unroll
            for (int g = 0; g < G; g++) {
                float partial = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) partial += q_reg[g][e] * k[e];
                score[j][g] = partial;
            }
            v_row[j] = v_cache + row;
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < DECODE_KEYS; j++) {
                score[j][g] = p0 + j < k_end ? folo_warp_sum(score[j][g]) : -INFINITY;
                tile_max = fmaxf(tile_max, score[j][g]);
            }
            float new_max = fmaxf(m[g], tile_max);
            float rescale = expf(m[g] - new_max); /* 0 on the first tile (m = -inf) */
            l[g] *= rescale;
#pragma unroll
            for (int e = 0; e < E; e++) o[g][e] *= rescale;
            m[g] = new_max;
        }
#pragma unroll
        for (int j = 0; j < DECODE_KEYS; j++) {
            float v[E];
            load_lane<E>(v, v_row[j], lane, D);
#pragma unroll
            for (int g = 0; g < G; g++) {
                float p = expf(score[j][g] - m[g]); /* 0 for masked keys */
                l[g] += p;
#pragma unroll
                for (int e = 0; e < E; e++) o[g][e] += p * v[e];
            }
        }
    }

#pragma unroll
    for (int g = 0; g < G; g++) {
        if (lane == 0) {
            warp_max[warp][g] = m[g];
            warp_denom[warp][g] = l[g];
        }
#pragma unroll
        for (int e = 0; e < E; e++) warp_out[warp][g][lane * E + e] = o[g][e];
    }
    __syncthreads();
    /* Warp w merges query heads head0 + w, head0 + w + DECODE_WARPS, ... */
    for (int g = warp; g < G; g += DECODE_WARPS) {
        float block_max = -INFINITY;
        for (int w = 0; w < DECODE_WARPS; w++) block_max = fmaxf(block_max, warp_max[w][g]);
        float denom = 0.0f, weight[DECODE_WARPS];
        for (int w = 0; w < DECODE_WARPS; w++) {
            /* A warp that saw no key has m = -inf and weight 0. */
            weight[w] = warp_max[w][g] == -INFINITY ? 0.0f : expf(warp_max[w][g] - block_max);
            denom += weight[w] * warp_denom[w][g];
        }
        size_t row = (size_t)t * Hq + head0 + g; /* (token, head) */
        float *part =
            partials + (((size_t)i * Hq + head0 + g) * n_splits + split) * (size_t)(D + 2);
        if (n_splits > 1 && lane == 0) part[0] = block_max, part[1] = denom;
        float inv_denom = 1.0f / denom;
        for (int d = lane; d < D; d += 32) {
            float sum = 0.0f;
            for (int w = 0; w < DECODE_WARPS; w++) sum += weight[w] * warp_out[w][g][d];
            if (n_splits == 1)
                out[row * D + d] = __float2bfloat16(sum * inv_denom);
            else /* this split's share, unnormalized: (max, denominator, Σ e^(s − max)·v) */
                part[2 + d] = sum;
        }
    }
}

/* out[(t, head)] from its n_splits shares, merged as the warps' are:
 * m = max m_s, out = Σ_s e^(m_s − m)·o_s / Σ_s e^(m_s − m)·l_s. One block
 * per (served token, head), a thread per element. */
__global__ void attention_combine_kernel(__nv_bfloat16 *out, const float *partials,
                                         const int32_t *tokens, int Hq, int n_splits, int D) {
    int i = blockIdx.x / Hq, head = blockIdx.x % Hq;
    size_t row = (size_t)(tokens ? tokens[i] : i) * Hq + head;
    const float *part = partials + (size_t)blockIdx.x * n_splits * (D + 2);
    float m = -INFINITY;
    for (int s = 0; s < n_splits; s++) m = fmaxf(m, part[s * (D + 2)]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float num = 0.0f, denom = 0.0f;
        for (int s = 0; s < n_splits; s++) {
            const float *p = part + s * (D + 2);
            float w = p[0] == -INFINITY ? 0.0f : expf(p[0] - m); /* an empty split adds 0 */
            num += w * p[2 + d];
            denom += w * p[1];
        }
        out[row * D + d] = __float2bfloat16(num / denom);
    }
}

/* ---- the tiled (tensor-core) kernel ---------------------------------------- */

#define TILE_WARPS (FOLO_CUDA_ATTN_TILE_ROWS / 16)
#define TILE_KEYS 64

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x = lo in the low half */
    return *reinterpret_cast<uint32_t *>(&v);
}

/* d[0..3] += A · B for one m16n8k16 bf16 product. */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Max and sum over the 4 lanes of a quad (the lanes holding one row). */
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D> /* head dim, a multiple of 16 */
__global__ void __launch_bounds__(32 * TILE_WARPS)
    attention_tiled_kernel(__nv_bfloat16 *out, const float *qkv, const uint16_t *k_cache,
                           const uint16_t *v_cache, const int32_t *block_tables,
                           int max_blocks_per_seq, const int32_t *token_seq,
                           const int32_t *positions, const int32_t *tiles, int Hq, int Hkv,
                           int block_size, float scale_log2) {
    constexpr int ROW = D + 8; /* shared row, padded by 16 bytes */
    __shared__ __align__(16) uint16_t k_s[TILE_KEYS * ROW];
    __shared__ __align__(16) uint16_t v_s[TILE_KEYS * ROW];
    int t0 = tiles[2 * blockIdx.x], n_rows = tiles[2 * blockIdx.x + 1];
    int head = blockIdx.y, kv_head = head / (Hq / Hkv);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
    const int32_t *table = block_tables + (size_t)token_seq[t0] * max_blocks_per_seq;
    int n_ctx = 0; /* keys any row of the tile sees */
    for (int r = 0; r < n_rows; r++) n_ctx = max(n_ctx, positions[t0 + r] + 1);

    /* This lane's two rows, their positions (-1: padding, sees nothing). */
    int row0 = warp * 16 + g, row1 = row0 + 8;
    int pos0 = row0 < n_rows ? positions[t0 + row0] : -1;
    int pos1 = row1 < n_rows ? positions[t0 + row1] : -1;
    bool warp_active = warp * 16 < n_rows;

    /* Q as A fragments, bf16, for the D / 16 steps over the head. */
    size_t q_stride = (size_t)(Hq + 2 * Hkv) * D;
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        int c = kk * 16 + 2 * q;
        float2 a = {0, 0}, b = {0, 0}, e = {0, 0}, f = {0, 0};
        if (pos0 >= 0) {
            const float *src = qkv + (size_t)(t0 + row0) * q_stride + (size_t)head * D;
            a = *reinterpret_cast<const float2 *>(src + c);
            e = *reinterpret_cast<const float2 *>(src + c + 8);
        }
        if (pos1 >= 0) {
            const float *src = qkv + (size_t)(t0 + row1) * q_stride + (size_t)head * D;
            b = *reinterpret_cast<const float2 *>(src + c);
            f = *reinterpret_cast<const float2 *>(src + c + 8);
        }
        qf[kk][0] = pack_bf16x2(a.x, a.y);
        qf[kk][1] = pack_bf16x2(b.x, b.y);
        qf[kk][2] = pack_bf16x2(e.x, e.y);
        qf[kk][3] = pack_bf16x2(f.x, f.y);
    }

    float o[D / 8][4];
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f; /* l: this lane's part */

    size_t slot_stride = (size_t)Hkv * D;
    constexpr int CHUNKS = D / 8; /* 16-byte pieces of a row */
    for (int k0 = 0; k0 < n_ctx; k0 += TILE_KEYS) {
        __syncthreads(); /* every warp is done with the previous tile */
        for (int i = threadIdx.x; i < TILE_KEYS * CHUNKS; i += 32 * TILE_WARPS) {
            int key = i / CHUNKS, chunk = i % CHUNKS, p = k0 + key;
            uint4 kv = {0, 0, 0, 0}, vv = {0, 0, 0, 0}; /* past the end: zeros, not garbage */
            if (p < n_ctx) {
                size_t slot = (size_t)table[p / block_size] * block_size + p % block_size;
                size_t at = slot * slot_stride + (size_t)kv_head * D + (size_t)chunk * 8;
                kv = *reinterpret_cast<const uint4 *>(k_cache + at);
                vv = *reinterpret_cast<const uint4 *>(v_cache + at);
            }
            *reinterpret_cast<uint4 *>(&k_s[key * ROW + chunk * 8]) = kv;
            *reinterpret_cast<uint4 *>(&v_s[key * ROW + chunk * 8]) = vv;
        }
        __syncthreads();
        if (!warp_active) continue;

        /* S = Q·Kᵀ for this warp's 16 rows and the tile's keys. */
        float sc[TILE_KEYS / 8][4];
#pragma unroll
        for (int nt = 0; nt < TILE_KEYS / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
            const uint16_t *krow = &k_s[(nt * 8 + g) * ROW + 2 * q];
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(krow + kk * 16);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(krow + kk * 16 + 8);
                mma_bf16(sc[nt], qf[kk], b0, b1);
            }
        }
        /* Scale into log2 units, mask, and the rows' new maxima. */
        float tmax0 = -INFINITY, tmax1 = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < TILE_KEYS / 8; nt++) {
            int key = k0 + nt * 8 + 2 * q;
            sc[nt][0] = key <= pos0 ? sc[nt][0] * scale_log2 : -INFINITY;
            sc[nt][1] = key + 1 <= pos0 ? sc[nt][1] * scale_log2 : -INFINITY;
            sc[nt][2] = key <= pos1 ? sc[nt][2] * scale_log2 : -INFINITY;
            sc[nt][3] = key + 1 <= pos1 ? sc[nt][3] * scale_log2 : -INFINITY;
            tmax0 = fmaxf(tmax0, fmaxf(sc[nt][0], sc[nt][1]));
            tmax1 = fmaxf(tmax1, fmaxf(sc[nt][2], sc[nt][3]));
        }
        float new0 = fmaxf(m0, quad_max(tmax0)), new1 = fmaxf(m1, quad_max(tmax1));
        /* A row that has seen no key yet keeps base 0: e^(-inf - 0) = 0, no NaN. */
        float base0 = new0 == -INFINITY ? 0.0f : new0, base1 = new1 == -INFINITY ? 0.0f : new1;
        float rescale0 = exp2f(m0 - base0), rescale1 = exp2f(m1 - base1);
        m0 = new0, m1 = new1;
        l0 *= rescale0, l1 *= rescale1;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o[dt][0] *= rescale0, o[dt][1] *= rescale0;
            o[dt][2] *= rescale1, o[dt][3] *= rescale1;
        }
        /* P = 2^(S - m), then O += P·V, 16 keys per step. */
#pragma unroll
        for (int j = 0; j < TILE_KEYS / 16; j++) {
            float p[2][4];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                p[h][0] = exp2f(sc[2 * j + h][0] - base0);
                p[h][1] = exp2f(sc[2 * j + h][1] - base0);
                p[h][2] = exp2f(sc[2 * j + h][2] - base1);
                p[h][3] = exp2f(sc[2 * j + h][3] - base1);
                l0 += p[h][0] + p[h][1];
                l1 += p[h][2] + p[h][3];
            }
            uint32_t pa[4] = {pack_bf16x2(p[0][0], p[0][1]), pack_bf16x2(p[0][2], p[0][3]),
                              pack_bf16x2(p[1][0], p[1][1]), pack_bf16x2(p[1][2], p[1][3])};
            const uint16_t *vrow = &v_s[(j * 16 + 2 * q) * ROW + g];
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) {
                const uint16_t *v = vrow + dt * 8;
                uint32_t b0 = (uint32_t)v[0] | (uint32_t)v[ROW] << 16;
                uint32_t b1 = (uint32_t)v[8 * ROW] | (uint32_t)v[9 * ROW] << 16;
                mma_bf16(o[dt], pa, b0, b1);
            }
        }
    }
    if (!warp_active) return;

    float inv0 = pos0 >= 0 ? 1.0f / quad_sum(l0) : 0.0f;
    float inv1 = pos1 >= 0 ? 1.0f / quad_sum(l1) : 0.0f;
    size_t out_stride = (size_t)Hq * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        int d = dt * 8 + 2 * q;
        if (pos0 >= 0)
            *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)(t0 + row0) * out_stride +
                                                (size_t)head * D + d) =
                __floats2bfloat162_rn(o[dt][0] * inv0, o[dt][1] * inv0);
        if (pos1 >= 0)
            *reinterpret_cast<__nv_bfloat162 *>(out + (size_t)(t0 + row1) * out_stride +
                                                (size_t)head * D + d) =
                __floats2bfloat162_rn(o[dt][2] * inv1, o[dt][3] * inv1);
    }
}

int folo_cuda_attention_tiled_ok(int D) {
    return D >= 16 && D <= 128 && D % 16 == 0;
}

int folo_cuda_attention_max_tiles(int n_tokens, int n_seqs) {
    return n_tokens / FOLO_CUDA_ATTN_TILE_ROWS + n_seqs;
}

int folo_cuda_attention_tiles(const int32_t *seq_starts, int n_seqs, int min_rows, int32_t *tiles,
                              int32_t *decode_tokens, int *n_decode) {
    int n = 0;
    *n_decode = 0;
    for (int s = 0; s < n_seqs; s++) {
        if (seq_starts[s + 1] - seq_starts[s] < min_rows) {
            for (int t = seq_starts[s]; t < seq_starts[s + 1]; t++) decode_tokens[(*n_decode)++] = t;
            continue;
        }
        for (int t = seq_starts[s]; t < seq_starts[s + 1]; t += FOLO_CUDA_ATTN_TILE_ROWS) {
            int left = seq_starts[s + 1] - t;
            tiles[2 * n] = t;
            tiles[2 * n + 1] = left < FOLO_CUDA_ATTN_TILE_ROWS ? left : FOLO_CUDA_ATTN_TILE_ROWS;
            n++;
        }
    }
    return n;
}

template <int D>
static void launch_tiled(dim3 grid, cudaStream_t stream, __nv_bfloat16 *out, const float *qkv,
                         const uint16_t *k, const uint16_t *v, const int32_t *block_tables,
                         int max_blocks_per_seq, const int32_t *token_seq,
                         const int32_t *positions, const int32_t *tiles, int Hq, int Hkv,
                         int block_size, float scale_log2) {
    attention_tiled_kernel<D><<<grid, 32 * TILE_WARPS, 0, stream>>>(
        out, qkv, k, v, block_tables, max_blocks_per_seq, token_seq, positions, tiles, Hq, Hkv,
        block_size, scale_log2);
}

int folo_cuda_attention(uint16_t *out, const float *qkv, const uint16_t *k_cache,
                        const uint16_t *v_cache, const int32_t *block_tables,
                        int max_blocks_per_seq, const int32_t *token_seq, const int32_t *positions,
                        int max_ctx, const int32_t *tiles, int n_tiles,
                        const int32_t *decode_tokens, int n_decode, float *partials, int Hq,
                        int Hkv, int D, int block_size, cudaStream_t stream, folo_error *err) {
    if (D < 1 || D > FOLO_CUDA_MAX_HEAD_DIM || Hkv < 1 || Hq % Hkv != 0)
        return folo_fail(err,
                         "cuda attention: unsupported heads (head_dim %d of at most %d, %d query "
                         "heads over %d kv heads)",
                         D, FOLO_CUDA_MAX_HEAD_DIM, Hq, Hkv);
    float scale = 1.0f / sqrtf((float)D);
    __nv_bfloat16 *o = (__nv_bfloat16 *)out;
    if (n_tiles > 0) {
        if (!folo_cuda_attention_tiled_ok(D))
            return folo_fail(err, "cuda attention: the tiled kernel takes head_dim 16..128 in "
                                  "steps of 16 (got %d)", D);
        dim3 grid((unsigned)n_tiles, (unsigned)Hq);
        float scale_log2 = scale * 1.4426950408889634f; /* e^x = 2^(x·log2 e) */
        const uint16_t *k = k_cache, *v = v_cache;
        switch (D) {
#define TILED_CASE(d)                                                                              \
    case d:                                                                                        \
        launch_tiled<d>(grid, stream, o, qkv, k, v, block_tables, max_blocks_per_seq, token_seq,  \
                        positions, tiles, Hq, Hkv, block_size, scale_log2);                        \
        break;
            TILED_CASE(16) TILED_CASE(32) TILED_CASE(48) TILED_CASE(64)
            TILED_CASE(80) TILED_CASE(96) TILED_CASE(112) TILED_CASE(128)
#undef TILED_CASE
        }
        LAUNCH_CHECK();
    }
    if (n_decode < 1) return 0;
    const __nv_bfloat16 *k = (const __nv_bfloat16 *)k_cache, *v = (const __nv_bfloat16 *)v_cache;
    /* Query heads per block: the whole KV group when the kernel has that
     * size, so each K and V row is read once for all of them. */
    int group = Hq / Hkv, G = group == 2 || group == 4 || group == 8 ? group : 1;
    long long heads = (long long)n_decode * Hq, blocks = heads / G;
    /* Splits: enough for about DECODE_TARGET_BLOCKS blocks, each of at least
     * DECODE_SPLIT_MIN keys, as many as the partials buffer holds. */
    int n_splits = folo_cuda_div_up(max_ctx, DECODE_SPLIT_MIN);
    if (n_splits > folo_cuda_div_up(DECODE_TARGET_BLOCKS, blocks))
        n_splits = folo_cuda_div_up(DECODE_TARGET_BLOCKS, blocks);
    if (n_splits > DECODE_MAX_SPLITS) n_splits = DECODE_MAX_SPLITS;
    if (heads * n_splits > FOLO_CUDA_ATTN_PARTIALS) n_splits = (int)(FOLO_CUDA_ATTN_PARTIALS / heads);
    if (n_splits < 1) n_splits = 1;
    int step = DECODE_WARPS * DECODE_KEYS;
    int split_keys = folo_cuda_div_up(folo_cuda_div_up(max_ctx, n_splits), step) * step;
    dim3 grid((unsigned)blocks, (unsigned)n_splits);
    int threads = 32 * DECODE_WARPS;
#define DECODE_LAUNCH(e, g)                                                                        \
    attention_decode_kernel<e, g><<<grid, threads, 0, stream>>>(                                   \
        o, partials, qkv, k, v, block_tables, max_blocks_per_seq, token_seq, positions,            \
        decode_tokens, Hq, Hkv, D, block_size, scale, split_keys)
#define DECODE_CASE(e)                                                                             \
    switch (G) {                                                                                   \
    case 2: DECODE_LAUNCH(e, 2); break;                                                            \
    case 4: DECODE_LAUNCH(e, 4); break;                                                            \
    case 8: DECODE_LAUNCH(e, 8); break;                                                            \
    default: DECODE_LAUNCH(e, 1); break;                                                           \
    }
    if (D <= 32) {
        DECODE_CASE(1)
    } else if (D <= 64) {
        DECODE_CASE(2)
    } else if (D <= 128) {
        DECODE_CASE(4)
    } else {
        DECODE_CASE(8)
    }
#undef DECODE_CASE
#undef DECODE_LAUNCH
    LAUNCH_CHECK();
    if (n_splits > 1) {
        attention_combine_kernel<<<(unsigned)heads, D < 128 ? D : 128, 0, stream>>>(
            o, partials, decode_tokens, Hq, n_splits, D);
    }
    LAUNCH_CHECK();
    return 0;
}
