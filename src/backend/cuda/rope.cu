/* Per-head q/k RMSNorm, rotate-half RoPE and the KV-cache write, fused: the
 * fused QKV matmul's output is read once, q is normed and rotated in place
 * for attention, and k (normed and rotated) and v go straight to the token's
 * cache slot as bf16.
 *
 * One warp per head: a lane holds the pairs (i, i + D/2) for
 * i = lane, lane + 32, ... (at most FOLO_CUDA_MAX_HEAD_DIM / 64 of them, in
 * registers), so the norm's sum and the rotation need no shared memory.
 * The angle pos · inv_freq[i] is taken in f32 and its cosine and sine with
 * the accurate cosf/sinf, as the CPU backend and transformers do. */
#include "backend/cuda/common.cuh"

#define HEADS_PER_BLOCK 4
#define MAX_PAIRS_PER_LANE (FOLO_CUDA_MAX_HEAD_DIM / 64)

__global__ void qk_norm_rope_cache_kernel(float *qkv, __nv_bfloat16 *k_cache,
                                          __nv_bfloat16 *v_cache, const float *q_norm,
                                          const float *k_norm, const float *inv_freq,
                                          const int32_t *positions, const int32_t *slot_mapping,
                                          int Hq, int Hkv, int D, float eps) {
    int t = blockIdx.x;
    int head = blockIdx.y * HEADS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    int n_heads = Hq + 2 * Hkv;
    if (head >= n_heads) return;
    float *src = qkv + (size_t)t * n_heads * D + (size_t)head * D; /* [D] */
    size_t slot_base = (size_t)slot_mapping[t] * Hkv * D;          /* slot's [Hkv, D] */

    if (head >= Hq + Hkv) {
        __nv_bfloat16 *dst = v_cache + slot_base + (size_t)(head - Hq - Hkv) * D;
        for (int d = lane; d < D; d += 32) dst[d] = __float2bfloat16(src[d]);
        return;
    }

    int half = D / 2;
    float a[MAX_PAIRS_PER_LANE], b[MAX_PAIRS_PER_LANE];
    float sum_sq = 0.0f;
#pragma unroll
    for (int e = 0; e < MAX_PAIRS_PER_LANE; e++) {
        int i = lane + 32 * e;
        a[e] = i < half ? src[i] : 0.0f;
        b[e] = i < half ? src[i + half] : 0.0f;
        sum_sq += a[e] * a[e] + b[e] * b[e];
    }
    float inv_rms = 1.0f / sqrtf(folo_warp_sum(sum_sq) / (float)D + eps);
    const float *w = head < Hq ? q_norm : k_norm;
    float pos = (float)positions[t];
    __nv_bfloat16 *k_dst = head >= Hq ? k_cache + slot_base + (size_t)(head - Hq) * D : NULL;
#pragma unroll
    for (int e = 0; e < MAX_PAIRS_PER_LANE; e++) {
        int i = lane + 32 * e;
        if (i >= half) break;
        float x0 = w[i] * (a[e] * inv_rms), x1 = w[i + half] * (b[e] * inv_rms);
        float angle = pos * inv_freq[i];
        float c = cosf(angle), s = sinf(angle);
        float r0 = x0 * c - x1 * s, r1 = x1 * c + x0 * s;
        if (head < Hq) {
            src[i] = r0;
            src[i + half] = r1;
        } else {
            k_dst[i] = __float2bfloat16(r0);
            k_dst[i + half] = __float2bfloat16(r1);
        }
    }
}

int folo_cuda_qk_norm_rope_cache(float *qkv, uint16_t *k_cache, uint16_t *v_cache,
                                 const float *q_norm, const float *k_norm, const float *inv_freq,
                                 const int32_t *positions, const int32_t *slot_mapping,
                                 int n_tokens, int Hq, int Hkv, int D, float eps,
                                 cudaStream_t stream, folo_error *err) {
    if (D % 2 != 0 || D > FOLO_CUDA_MAX_HEAD_DIM)
        return folo_fail(err, "cuda rope: head_dim %d must be even and at most %d", D,
                         FOLO_CUDA_MAX_HEAD_DIM);
    if (n_tokens < 1) return 0;
    dim3 grid((unsigned)n_tokens, (unsigned)folo_cuda_div_up(Hq + 2 * Hkv, HEADS_PER_BLOCK));
    qk_norm_rope_cache_kernel<<<grid, 32 * HEADS_PER_BLOCK, 0, stream>>>(
        qkv, (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache, q_norm, k_norm, inv_freq,
        positions, slot_mapping, Hq, Hkv, D, eps);
    LAUNCH_CHECK();
    return 0;
}
