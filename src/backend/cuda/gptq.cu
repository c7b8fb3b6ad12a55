/* GPTQ 4-bit linears on the GPU: y = x · Wᵀ with W held as the repacked
 * rows of model/gptq.h (4-bit codes, per row and group an f32 scale and
 * zero point), uploaded once as they are on the host.
 *
 * Two paths, by the number of token rows:
 * - up to FOLO_CUDA_GPTQ_GEMV_TOKENS (decode): a GEMV that reads each
 *   weight once from its 4 bits. One warp per output row; a lane takes one
 *   32-column block per step (one 16-byte load of codes), widens the codes
 *   to (code − zero) · scale in f32, the value the CPU kernels compute, and
 *   accumulates every token's dot product in f32; the warp's sums meet in
 *   shuffles, so the result does not depend on the launch. Decode reads a
 *   quarter of the bf16 bytes, which is what bounds it.
 * - more rows (prefill chunks, wide decode batches): the rows are
 *   dequantized to bf16 in chunks of at most FOLO_CUDA_GPTQ_DEQUANT_ELEMS
 *   weights into a scratch buffer, and each chunk is one cuBLAS GEMM, as the
 *   bf16 path runs it: arithmetic bounds these, and the extra pass over a
 *   chunk is small beside it.
 * Both take x in bf16 (the backend's matmul input format) and write f32
 * rows with a stride, so q, k and v (or gate and up) land side by side in
 * one output as the fused bf16 matmuls leave them. */
#include "backend/cuda/common.cuh"

extern "C" {
#include "model/gptq.h"
}

/* Warps (output rows) per GEMV block. */
#define GEMV_WARPS 4
/* Threads of the dequantization kernel. */
#define DEQUANT_THREADS 256
/* Alignment of the parts of one linear inside its device bytes. */
#define PART_ALIGN 256

static size_t part_offset(size_t *used, size_t bytes) {
    size_t offset = (*used + PART_ALIGN - 1) & ~(size_t)(PART_ALIGN - 1);
    *used = offset + bytes;
    return offset;
}

/* Offsets of codes, scales, zeros and g_idx in a linear's device bytes. */
static size_t layout(const folo_qlinear *l, size_t offsets[4]) {
    size_t used = 0, per_group = (size_t)l->n_rows * l->n_groups * sizeof(float);
    offsets[0] = part_offset(&used, (size_t)l->n_rows * l->row_bytes);
    offsets[1] = part_offset(&used, per_group);
    offsets[2] = part_offset(&used, per_group);
    offsets[3] = part_offset(&used, (size_t)l->K * sizeof(int32_t));
    return used;
}

extern "C" size_t folo_cuda_qlinear_bytes(const folo_qlinear *src) {
    size_t offsets[4];
    return layout(src, offsets) + PART_ALIGN; /* room to align the start */
}

extern "C" int folo_cuda_qlinear_upload(folo_cuda_qlinear *dst, void *device, const folo_qlinear *src,
                                        folo_error *err) {
    size_t offsets[4];
    layout(src, offsets);
    uintptr_t start = ((uintptr_t)device + PART_ALIGN - 1) & ~(uintptr_t)(PART_ALIGN - 1);
    char *base = (char *)start;
    size_t per_group = (size_t)src->n_rows * src->n_groups * sizeof(float);
    CUDA_CHECK(cudaMemcpy(base + offsets[0], src->codes, (size_t)src->n_rows * src->row_bytes,
                          cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(base + offsets[1], src->scales, per_group, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(base + offsets[2], src->zeros, per_group, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(base + offsets[3], src->g_idx, (size_t)src->K * sizeof(int32_t),
                          cudaMemcpyHostToDevice));
    dst->N = src->n_rows;
    dst->K = src->K;
    dst->group_size = src->group_size;
    dst->n_groups = src->n_groups;
    /* A 32-column block then lies in one group. */
    dst->block_groups = src->contiguous_groups && src->group_size % 32 == 0;
    dst->row_bytes = src->row_bytes;
    dst->codes = (const uint8_t *)(base + offsets[0]);
    dst->scales = (const float *)(base + offsets[1]);
    dst->zeros = (const float *)(base + offsets[2]);
    dst->g_idx = (const int32_t *)(base + offsets[3]);
    return 0;
}

/* The 4-bit code of column j (0..31) of a 32-column block held in words
 * w[0..3] (16 bytes, gptq.h): byte 2·(j % 8) + j / 16, the high nibble
 * when j / 8 is odd. */
__device__ __forceinline__ unsigned block_code(const uint32_t w[4], int j) {
    int byte = 2 * (j & 7) + (j >> 4);
    return (w[byte >> 2] >> (8 * (byte & 3) + 4 * ((j >> 3) & 1))) & 15u;
}

/* W[n, k] as gptq.h defines it: the subtraction exact, one f32 rounding. */
__device__ __forceinline__ float weight(unsigned code, float zero, float scale) {
    return __fmul_rn((float)code - zero, scale);
}

template <int T, bool BLOCK_GROUPS>
__global__ void gptq_gemv_kernel(float *__restrict__ y, int ldy, const __nv_bfloat16 *__restrict__ x,
                                 folo_cuda_qlinear w) {
    int n = blockIdx.x * GEMV_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= w.N) return;
    const uint8_t *row = w.codes + (size_t)n * w.row_bytes;
    const float *scales = w.scales + (size_t)n * w.n_groups;
    const float *zeros = w.zeros + (size_t)n * w.n_groups;
    float acc[T];
#pragma unroll
    for (int t = 0; t < T; t++) acc[t] = 0.0f;
    int n_blocks = (w.K + 31) / 32;
    for (int blk = lane; blk < n_blocks; blk += 32) {
        uint4 packed = __ldg((const uint4 *)(row + (size_t)16 * blk));
        uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
        int k0 = 32 * blk;
        float block_scale = 0.0f, block_zero = 0.0f;
        if (BLOCK_GROUPS) {
            int g = k0 / w.group_size;
            block_scale = __ldg(scales + g);
            block_zero = __ldg(zeros + g);
        }
        /* Eight columns at a time: one 16-byte load of x per token. K is a
         * multiple of 8, so a chunk is all inside or all past the end. */
#pragma unroll
        for (int c = 0; c < 4; c++) {
            int k = k0 + 8 * c;
            if (k >= w.K) break;
            float wv[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                unsigned code = block_code(words, 8 * c + j);
                if (BLOCK_GROUPS) {
                    wv[j] = weight(code, block_zero, block_scale);
                } else {
                    int g = __ldg(w.g_idx + k + j);
                    wv[j] = weight(code, __ldg(zeros + g), __ldg(scales + g));
                }
            }
#pragma unroll
            for (int t = 0; t < T; t++) {
                uint4 xv = __ldg((const uint4 *)(x + (size_t)t * w.K + k));
                const __nv_bfloat16 *xb = (const __nv_bfloat16 *)&xv;
#pragma unroll
                for (int j = 0; j < 8; j++) acc[t] = fmaf(wv[j], __bfloat162float(xb[j]), acc[t]);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        float sum = folo_warp_sum(acc[t]);
        if (lane == 0) y[(size_t)t * ldy + n] = sum;
    }
}

template <int T>
static void launch_gemv(float *y, int ldy, const __nv_bfloat16 *x, const folo_cuda_qlinear *w,
                        cudaStream_t stream) {
    dim3 grid(folo_cuda_div_up(w->N, GEMV_WARPS));
    if (w->block_groups)
        gptq_gemv_kernel<T, true><<<grid, 32 * GEMV_WARPS, 0, stream>>>(y, ldy, x, *w);
    else
        gptq_gemv_kernel<T, false><<<grid, 32 * GEMV_WARPS, 0, stream>>>(y, ldy, x, *w);
}

/* out[r, k] = bf16(W[first_row + r, k]) for r < n_rows: one thread per
 * (row, 32-column block). */
__global__ void gptq_dequant_kernel(__nv_bfloat16 *__restrict__ out, folo_cuda_qlinear w,
                                    int first_row, int n_rows) {
    int n_blocks = (w.K + 31) / 32;
    long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= (long long)n_rows * n_blocks) return;
    int r = (int)(item / n_blocks), blk = (int)(item % n_blocks), n = first_row + r;
    uint4 packed = __ldg((const uint4 *)(w.codes + (size_t)n * w.row_bytes + (size_t)16 * blk));
    uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
    const float *scales = w.scales + (size_t)n * w.n_groups;
    const float *zeros = w.zeros + (size_t)n * w.n_groups;
    __nv_bfloat16 *dst = out + (size_t)r * w.K;
    for (int j = 0; j < 32; j++) {
        int k = 32 * blk + j;
        if (k >= w.K) break;
        int g = __ldg(w.g_idx + k);
        dst[k] = __float2bfloat16(weight(block_code(words, j), __ldg(zeros + g), __ldg(scales + g)));
    }
}

extern "C" int folo_cuda_gptq_matmul(cublasHandle_t cublas, float *y, int ldy, const uint16_t *x,
                                     int n_tokens, const folo_cuda_qlinear *w, uint16_t *dequant,
                                     cudaStream_t stream, folo_error *err) {
    if (n_tokens < 1) return 0;
    if (w->K % 8 != 0 || ldy < w->N)
        return folo_fail(err, "gptq matmul: K %d is not a multiple of 8, or the output stride "
                              "%d is narrower than its %d rows", w->K, ldy, w->N);
    const __nv_bfloat16 *xb = (const __nv_bfloat16 *)x;
    if (n_tokens <= FOLO_CUDA_GPTQ_GEMV_TOKENS) {
        switch (n_tokens) {
        case 1: launch_gemv<1>(y, ldy, xb, w, stream); break;
        case 2: launch_gemv<2>(y, ldy, xb, w, stream); break;
        case 3: launch_gemv<3>(y, ldy, xb, w, stream); break;
        case 4: launch_gemv<4>(y, ldy, xb, w, stream); break;
        case 5: launch_gemv<5>(y, ldy, xb, w, stream); break;
        case 6: launch_gemv<6>(y, ldy, xb, w, stream); break;
        case 7: launch_gemv<7>(y, ldy, xb, w, stream); break;
        default: launch_gemv<8>(y, ldy, xb, w, stream); break;
        }
        LAUNCH_CHECK();
        return 0;
    }
    if (!dequant)
        return folo_fail(err, "gptq matmul: %d token rows need the dequantization buffer",
                         n_tokens);
    int chunk_rows = (int)(FOLO_CUDA_GPTQ_DEQUANT_ELEMS / (size_t)w->K);
    if (chunk_rows < 1)
        return folo_fail(err, "gptq matmul: a row of %d inputs exceeds the dequantization "
                              "buffer", w->K);
    int n_blocks = (w->K + 31) / 32;
    const float alpha = 1.0f, beta = 0.0f;
    for (int first = 0; first < w->N; first += chunk_rows) {
        int rows = w->N - first < chunk_rows ? w->N - first : chunk_rows;
        long long items = (long long)rows * n_blocks;
        gptq_dequant_kernel<<<folo_cuda_div_up(items, DEQUANT_THREADS), DEQUANT_THREADS, 0,
                              stream>>>((__nv_bfloat16 *)dequant, *w, first, rows);
        LAUNCH_CHECK();
        /* Column-major yᵀ chunk (rows × T, leading dimension ldy) = Wchunk · xᵀ. */
        CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, rows, n_tokens, w->K, &alpha,
                                  dequant, CUDA_R_16BF, w->K, x, CUDA_R_16BF, w->K, &beta,
                                  y + first, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    }
    return 0;
}
