/* Token embedding lookup: one block per token copies its bf16 row of the
 * table into the f32 residual stream. */
#include "backend/cuda/common.cuh"

__global__ void embed_kernel(float *x, const __nv_bfloat16 *table, const int32_t *ids, int H) {
    int t = blockIdx.x;
    const __nv_bfloat16 *row = table + (size_t)ids[t] * H; /* [H] */
    for (int i = threadIdx.x; i < H; i += blockDim.x)
        x[(size_t)t * H + i] = folo_bf16_load(row + i);
}

int folo_cuda_embed(float *x, const uint16_t *table, const int32_t *ids, int n_tokens, int H,
                    cudaStream_t stream, folo_error *err) {
    if (n_tokens < 1) return 0;
    embed_kernel<<<n_tokens, FOLO_CUDA_ROW_THREADS, 0, stream>>>(x, (const __nv_bfloat16 *)table,
                                                                 ids, H);
    LAUNCH_CHECK();
    return 0;
}
