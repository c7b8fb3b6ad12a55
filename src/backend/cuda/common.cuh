/* What every CUDA file of the backend shares: the C headers it includes (with
 * C linkage), the checks that turn a failed CUDA or cuBLAS call into a
 * folo_error naming file and line, bf16 conversions, warp and block sums.
 *
 * Errors are values here too: CUDA_CHECK and CUBLAS_CHECK return -1 from the
 * enclosing function (which must take a `folo_error *err`) after filling the
 * message; a kernel launch is followed by LAUNCH_CHECK, which catches a bad
 * configuration at once (faults inside a kernel surface at the next
 * synchronizing call, which is checked too). */
#ifndef FOLO_BACKEND_CUDA_COMMON_CUH
#define FOLO_BACKEND_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* core/error.h spells C11's _Noreturn, which C++ writes as an attribute;
 * it is included here first so every .cu file sees it through this. */
#define _Noreturn [[noreturn]]
extern "C" {
#include "backend/cuda/kernels.h"
#include "core/error.h"
}
#undef _Noreturn

#define CUDA_CHECK(call)                                                                           \
    do {                                                                                           \
        cudaError_t cuda_check_rc_ = (call);                                                       \
        if (cuda_check_rc_ != cudaSuccess)                                                         \
            return folo_fail(err, "cuda: %s:%d: %s: %s", __FILE__, __LINE__, #call,                \
                             cudaGetErrorString(cuda_check_rc_));                                  \
    } while (0)

#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t cublas_check_rc_ = (call);                                                  \
        if (cublas_check_rc_ != CUBLAS_STATUS_SUCCESS)                                             \
            return folo_fail(err, "cublas: %s:%d: %s: %s", __FILE__, __LINE__, #call,              \
                             cublasGetStatusString(cublas_check_rc_));                             \
    } while (0)

/* After every <<<...>>>: a launch error (bad grid, too much shared memory). */
#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

/* Threads of the row-wise kernels (norms, embedding, elementwise). */
#define FOLO_CUDA_ROW_THREADS 256

static inline int folo_cuda_div_up(long long n, long long d) {
    return (int)((n + d - 1) / d);
}

__device__ __forceinline__ float folo_bf16_load(const __nv_bfloat16 *p) {
    return __bfloat162float(*p);
}

__device__ __forceinline__ float folo_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* Σ v over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the sum. `shared` holds 32 floats; reusable after return. */
__device__ __forceinline__ float folo_block_sum(float v, float *shared) {
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = folo_warp_sum(v);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    float total = lane < n_warps ? shared[lane] : 0.0f;
    total = folo_warp_sum(total);
    __syncthreads();
    return total;
}

#endif
