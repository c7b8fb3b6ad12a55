/* The matmuls: y = x · wᵀ through cuBLAS with bf16 operands and f32
 * accumulation and output (tensor cores on sm_80 and later).
 *
 * Row-major y [T, N] is column-major yᵀ (N × T), so cuBLAS computes
 * yᵀ = w · xᵀ: A = w seen column-major as K × N and transposed, B = x seen
 * column-major as K × T, not transposed (the "TN" layout cuBLAS favours). */
#include "backend/cuda/common.cuh"

int folo_cuda_gemm(cublasHandle_t cublas, float *y, const uint16_t *x, const uint16_t *w,
                   int n_tokens, int N, int K, folo_error *err) {
    if (n_tokens < 1) return 0;
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, n_tokens, K, &alpha, w,
                              CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta, y, CUDA_R_32F, N,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}
