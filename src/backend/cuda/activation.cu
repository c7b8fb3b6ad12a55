/* SiLU-gated product of the MLP, reading the fused gate/up matmul's output
 * and writing the bf16 input of the down projection. */
#include "backend/cuda/common.cuh"

__global__ void silu_mul_kernel(__nv_bfloat16 *out, const float *gate_up, int n_tokens, int I) {
    size_t n = (size_t)n_tokens * I;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t t = idx / I, i = idx % I;
        float g = gate_up[t * 2 * I + i], u = gate_up[t * 2 * I + I + i];
        out[idx] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
    }
}

int folo_cuda_silu_mul(uint16_t *out, const float *gate_up, int n_tokens, int I,
                       cudaStream_t stream, folo_error *err) {
    if (n_tokens < 1) return 0;
    long long n = (long long)n_tokens * I;
    int blocks = folo_cuda_div_up(n, FOLO_CUDA_ROW_THREADS);
    if (blocks > 65535) blocks = 65535;
    silu_mul_kernel<<<blocks, FOLO_CUDA_ROW_THREADS, 0, stream>>>((__nv_bfloat16 *)out, gate_up,
                                                                  n_tokens, I);
    LAUNCH_CHECK();
    return 0;
}
