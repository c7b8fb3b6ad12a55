/* Plain C dequantization of GPTQ 4-bit rows and the int4 table dispatch;
 * see kernels_int4.h. */
#include "backend/cpu/kernels_int4.h"

void folo_cpu_dequant_int4(float *rows, const folo_qlinear *l, int row_begin, int n_rows) {
    int K = l->K, n_groups = l->n_groups;
    for (int r = 0; r < n_rows; r++) {
        size_t n = (size_t)(row_begin + r);
        const uint8_t *codes = l->codes + n * l->row_bytes;
        const float *scales = l->scales + n * (size_t)n_groups;
        const float *zeros = l->zeros + n * (size_t)n_groups;
        float *out = rows + (size_t)r * K;
        for (int k = 0; k < K; k++) {
            int j = k % 32, g = l->g_idx[k];
            uint8_t byte = codes[k / 32 * 16 + j % 16];
            float code = (float)(j < 16 ? byte & 15 : byte >> 4);
            out[k] = (code - zeros[g]) * scales[g];
        }
    }
}

static const folo_cpu_int4_kernels k_portable = {.dequant = folo_cpu_dequant_int4, .gemv = NULL};

const folo_cpu_int4_kernels *folo_cpu_int4_kernels_for(const folo_cpu_kernels *k) {
#if defined(__x86_64__)
    /* The AVX512-BF16 and AMX tables' f32 matmul is AVX-512's, whose sums
     * the GEMV keeps. */
    if (k == folo_cpu_kernels_for(FOLO_CPU_ISA_AVX512) ||
        k == folo_cpu_kernels_for(FOLO_CPU_ISA_AVX512BF16) ||
        k == folo_cpu_kernels_for(FOLO_CPU_ISA_AMX))
        return &folo_cpu_int4_kernels_avx512;
#endif
    return &k_portable;
}
