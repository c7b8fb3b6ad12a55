/* Plain C dequantization of GPTQ 4- and 8-bit rows and the int4 table dispatch;
 * see kernels_int4.h. */
#include "backend/cpu/kernels_int4.h"

#include "core/dtype.h"

/* Weight k of row n: (code − zero) · scale of its group. */
static inline float weight(const folo_qlinear *l, size_t n, int k) {
    const uint8_t *codes = l->codes + n * l->row_bytes;
    int j = k % 32, g = l->g_idx[k];
    /* 4 bits: byte 2·(j % 8) + j / 16 of the block, high nibble when j / 8 is odd */
    float code = l->bits == 8 ? (float)codes[k]
                              : (float)(codes[k / 32 * 16 + 2 * (j % 8) + j / 16] >> (j / 8 % 2 * 4) &
                                        15);
    size_t at = n * (size_t)l->n_groups + (size_t)g;
    return (code - l->zeros[at]) * l->scales[at];
}

void folo_cpu_dequant_int4(float *rows, const folo_qlinear *l, int row_begin, int n_rows) {
    for (int r = 0; r < n_rows; r++)
        for (int k = 0; k < l->K; k++)
            rows[(size_t)r * l->K + k] = weight(l, (size_t)(row_begin + r), k);
}

void folo_cpu_dequant_int4_bf16(uint16_t *rows, const folo_qlinear *l, int row_begin,
                                int n_rows) {
    for (int r = 0; r < n_rows; r++)
        for (int k = 0; k < l->K; k++)
            rows[(size_t)r * l->K + k] = folo_f32_to_bf16(weight(l, (size_t)(row_begin + r), k));
}

static const folo_cpu_int4_kernels k_portable = {.dequant = folo_cpu_dequant_int4,
                                                 .gemv = NULL,
                                                 .dequant_bf16 = folo_cpu_dequant_int4_bf16,
                                                 .gemv_bf16 = NULL};

const folo_cpu_int4_kernels *folo_cpu_int4_kernels_for(const folo_cpu_kernels *k) {
#if defined(__x86_64__)
    /* The AVX512-BF16 and AMX tables' f32 matmul is AVX-512's, whose sums
     * the f32 GEMV keeps; AMX's matmul_bf16 sums in its tiles' order, which
     * no bf16 GEMV copies, so its decode takes dequant_bf16 panels. */
    if (k == folo_cpu_kernels_for(FOLO_CPU_ISA_AVX512BF16))
        return &folo_cpu_int4_kernels_avx512bf16;
    if (k == folo_cpu_kernels_for(FOLO_CPU_ISA_AVX512) ||
        k == folo_cpu_kernels_for(FOLO_CPU_ISA_AMX))
        return &folo_cpu_int4_kernels_avx512;
#endif
    return &k_portable;
}
