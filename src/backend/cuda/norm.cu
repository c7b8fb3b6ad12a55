/* RMSNorm, alone or fused with the residual add that precedes it (as
 * vLLM's fused_add_rms_norm): one block per row, the mean of squares summed
 * in f32 across the block, the normed row written as bf16 for the next
 * matmul. The row is read twice (sum, then scale); the second read hits L1/L2. */
#include "backend/cuda/common.cuh"

__global__ void rmsnorm_kernel(__nv_bfloat16 *out, float *x, const float *residual,
                               const int32_t *rows, const float *weight, int H, float eps) {
    __shared__ float partial[32];
    int r = blockIdx.x;
    size_t src = (size_t)(rows ? rows[r] : r) * H;
    float sum_sq = 0.0f;
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        float v = x[src + i];
        if (residual) {
            v += residual[src + i];
            if (!rows) x[src + i] = v;
        }
        sum_sq += v * v;
    }
    float inv_rms = 1.0f / sqrtf(folo_block_sum(sum_sq, partial) / (float)H + eps);
    for (int i = threadIdx.x; i < H; i += blockDim.x) {
        /* Without rows, x already holds the sum (this thread stored it). */
        float v = x[src + i];
        if (residual && rows) v += residual[src + i];
        out[(size_t)r * H + i] = __float2bfloat16(weight[i] * (v * inv_rms));
    }
}

int folo_cuda_rmsnorm(uint16_t *out, float *x, const float *residual, const int32_t *rows,
                      int n_rows, const float *weight, int H, float eps, cudaStream_t stream,
                      folo_error *err) {
    if (n_rows < 1) return 0;
    rmsnorm_kernel<<<n_rows, FOLO_CUDA_ROW_THREADS, 0, stream>>>((__nv_bfloat16 *)out, x, residual,
                                                                 rows, weight, H, eps);
    LAUNCH_CHECK();
    return 0;
}
