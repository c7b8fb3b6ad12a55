/* The CPU kernels of GPTQ 4-bit linears (model/gptq.h's repacked layout):
 *   - dequant: rows of a linear to f32, which the backend then multiplies
 *     with the float matmul of its kernel table (kernels.h) — the prefill
 *     and batched path, one panel of rows at a time in per-thread scratch
 *     that stays in L2, so the weight stream from memory is the 4-bit codes;
 *   - gemv (SIMD tables only): decode, at most FOLO_CPU_INT4_GEMV_TOKENS
 *     tokens, the weights dequantized in registers and fed straight to the
 *     FMAs, giving the same bits as dequant followed by the float matmul;
 *   - dequant_bf16: rows to bf16, the f32 value rounded to nearest even,
 *     which `--dtype bfloat16` multiplies with its matmul_bf16 (`vdpbf16ps`,
 *     or AMX tiles): a 4-bit model then computes exactly what its twin with
 *     bf16 weights does;
 *   - gemv_bf16 (the AVX512-BF16 table only): decode under bfloat16, the
 *     same bits as dequant_bf16 followed by matmul_bf16.
 *
 * Why widen to f32 rather than multiply in int8 (VNNI, activations
 * quantized per group): a row becomes exactly the f32 weight a dequantized
 * checkpoint holds, (code − zero) · scale with one rounding, so the float
 * matmul's summation order and its batch invariance carry over unchanged,
 * and a 4-bit model's logits are bit for bit those of its dequantized f32
 * twin (tests/python/test_gptq.py checks that); int8 activations would add
 * their own rounding. docs/gptq.md has the measurements.
 *
 * One ISA per process, as kernels.h asks: the table follows the float
 * kernel table's ISA. tests/c/test_int4_kernels.c checks every table
 * against a dequantization straight from the stored GPTQ tensors, and the
 * GEMV against dequant + the float matmul, bit for bit. */
#ifndef FOLO_BACKEND_CPU_KERNELS_INT4_H
#define FOLO_BACKEND_CPU_KERNELS_INT4_H

#include "backend/cpu/kernels.h"
#include "model/gptq.h"

/* Most tokens a gemv call takes (the float matmul's decode tile). */
#define FOLO_CPU_INT4_GEMV_TOKENS 6

typedef struct folo_cpu_int4_kernels {
    /* rows [n_rows, K] = W[row_begin, row_begin + n_rows) of l in f32. */
    void (*dequant)(float *rows, const folo_qlinear *l, int row_begin, int n_rows);
    /* y[t, r] = x_t · W_r for t < n_tokens <= FOLO_CPU_INT4_GEMV_TOKENS and
     * rows r in [row_begin, row_end); x [n_tokens, K], y row stride ldy. The
     * same bits as dequant + this ISA's float matmul. NULL: use those. */
    void (*gemv)(float *y, size_t ldy, const float *x, int n_tokens, const folo_qlinear *l,
                 int row_begin, int row_end);
    /* rows [n_rows, K] of bf16 = dequant's values rounded to nearest even
     * (folo_f32_to_bf16). */
    void (*dequant_bf16)(uint16_t *rows, const folo_qlinear *l, int row_begin, int n_rows);
    /* gemv's twin for bfloat16: the same bits as dequant_bf16 + this ISA's
     * matmul_bf16. scratch: the float table's matmul scratch for K
     * (matmul_scratch_floats floats). NULL: use those two. */
    void (*gemv_bf16)(float *y, size_t ldy, const float *x, int n_tokens, const folo_qlinear *l,
                      int row_begin, int row_end, float *scratch);
} folo_cpu_int4_kernels;

/* The plain C dequantizations. */
void folo_cpu_dequant_int4(float *rows, const folo_qlinear *l, int row_begin, int n_rows);
void folo_cpu_dequant_int4_bf16(uint16_t *rows, const folo_qlinear *l, int row_begin,
                                int n_rows);

/* The table of the ISA of float table k. */
const folo_cpu_int4_kernels *folo_cpu_int4_kernels_for(const folo_cpu_kernels *k);

/* x86-64 only (kernels_int4_avx512.c, kernels_int4_avx512bf16.c); reach
 * them through the function above. */
extern const folo_cpu_int4_kernels folo_cpu_int4_kernels_avx512;
extern const folo_cpu_int4_kernels folo_cpu_int4_kernels_avx512bf16;

#endif
