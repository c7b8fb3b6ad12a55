/* The greedy pick on the device: one block per row of logits finds the
 * lowest id holding the row's largest value, as folo_argmax does on the
 * host (NaN never wins; a row of NaN gives 0), so a greedy step copies 4
 * bytes back instead of V floats. */
#include <limits.h>
#include <math.h>

#include "backend/cuda/common.cuh"

/* (value, id) pairs: b beats a when larger, or equal with a lower id. */
__device__ __forceinline__ void better(float &v, int &id, float v2, int id2) {
    if (v2 > v || (v2 == v && id2 < id)) v = v2, id = id2;
}

__global__ void argmax_kernel(int32_t *out, const float *logits, int V) {
    __shared__ float warp_v[32];
    __shared__ int warp_id[32];
    const float *row = logits + (size_t)blockIdx.x * V;
    float v = -INFINITY;
    int id = INT_MAX;
    for (int i = threadIdx.x; i < V; i += blockDim.x) better(v, id, row[i], i);
    for (int offset = 16; offset > 0; offset >>= 1)
        better(v, id, __shfl_xor_sync(0xffffffffu, v, offset),
               __shfl_xor_sync(0xffffffffu, id, offset));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) warp_v[warp] = v, warp_id[warp] = id;
    __syncthreads();
    if (warp != 0) return;
    v = lane < blockDim.x / 32 ? warp_v[lane] : -INFINITY;
    id = lane < blockDim.x / 32 ? warp_id[lane] : INT_MAX;
    for (int offset = 16; offset > 0; offset >>= 1)
        better(v, id, __shfl_xor_sync(0xffffffffu, v, offset),
               __shfl_xor_sync(0xffffffffu, id, offset));
    if (lane == 0) out[blockIdx.x] = id == INT_MAX ? 0 : id;
}

int folo_cuda_argmax(int32_t *out, const float *logits, int n_rows, int V, cudaStream_t stream,
                     folo_error *err) {
    if (n_rows < 1) return 0;
    argmax_kernel<<<n_rows, 1024, 0, stream>>>(out, logits, V);
    LAUNCH_CHECK();
    return 0;
}
