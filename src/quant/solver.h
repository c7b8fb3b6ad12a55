/* Quantizing one linear to 4 bits (8 for an int8 lm_head): GPTQ, or
 * round-to-nearest (RTN) on the same groups, the baseline GPTQ is measured
 * against. Below, maxq = 2^bits − 1: 15 at 4 bits, 255 at 8.
 *
 * The grid (the reference's Quantizer.find_params, min/max, no MSE search):
 * per output row and group of G input columns, lo = min(0, min w) and
 * hi = max(0, max w); symmetric: hi = max(-lo, hi) and, when lo < 0,
 * lo = -hi; lo = hi = 0 becomes [-1, 1]; scale = (hi - lo) / maxq;
 * zero = (maxq + 1) / 2 (symmetric) or round(-lo / scale) (asymmetric),
 * raised to 1 when the checkpoint format is "gptq", which stores zero - 1
 * in `bits` bits. A weight w becomes code = clamp(round(w / scale) + zero,
 * 0, maxq) (round half to
 * even, as torch.round), worth scale · (code - zero). The scale is stored
 * as f16 (rounded to f32 first, the reference's precision), and the
 * dequantized weight, the one folo and transformers compute from the
 * written tensors, is (code - zero) · scale16 in f32.
 *
 * GPTQ (Frantar et al. 2022, as GPTQModel's GPTQ.quantize runs it, in
 * double rather than f32), given the layer input's Hessian H [K, K]:
 *   1. a column i with H[i,i] == 0 (no calibration signal) gets H[i,i] = 1
 *      and W[:, i] = 0 (with one group per row, the grid is found first,
 *      on the untouched W);
 *   2. act-order (desc_act): the columns are permuted by decreasing H[i,i]
 *      (a stable sort: ties keep column order; torch's argsort is not
 *      stable, so ties are the one place the order may differ);
 *   3. damp · mean(diag H) is added to the diagonal; U is the upper
 *      Cholesky factor of H⁻¹ (LAPACK: dpotrf, dpotri, dpotrf); when H is
 *      still not positive definite, damp grows by 0.0015 and the
 *      factorization is retried (GPTQModel's damp_auto_increment), up to 1;
 *   4. the columns are quantized in order, in blocks of 128: column i's
 *      error err = (w - q) / U[i,i] is spread over the block's later
 *      columns at once (W[:, j] -= err · U[i,j]), and over the columns
 *      after the block in one product when the block ends ("lazy batch");
 *   5. by default groups are not static: a group's grid is found when its
 *      first column is reached, from W as the earlier blocks left it (not
 *      the updates of the current block, exactly as the reference reads W
 *      rather than its block copy), over the group's columns in the
 *      permuted order; so with act-order group g holds the g-th G columns
 *      of the permutation and g_idx[k] is the group of column k
 *      (non-monotonic). With static_groups every group's grid is found
 *      before step 2, over columns gG .. gG + G - 1 of W with its dead
 *      columns zeroed, and column k (wherever act-order puts it) uses
 *      group k / G: g_idx[k] = k / G, act-order or not.
 * RTN takes the grid of each group of the original W and rounds, with
 * g_idx[k] = k / G; act-order needs a Hessian, so RTN has none.
 *
 * The error reported, ‖(W - Ŵ)·X‖² / ‖W·X‖² over the calibration rows, is
 * tr(ΔW·H·ΔWᵀ) / tr(W·H·Wᵀ) with the Hessian as accumulated (before the
 * changes above) and Ŵ the dequantized weights. */
#ifndef FOLO_QUANT_SOLVER_H
#define FOLO_QUANT_SOLVER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "model/model.h"
#include "quant/linalg.h"

typedef enum folo_quant_method { FOLO_QUANT_GPTQ, FOLO_QUANT_RTN } folo_quant_method;

typedef struct folo_quant_params {
    folo_quant_method method;
    int bits;              /* 4, or 8 (an int8 lm_head) */
    int group_size;        /* G input columns per group, or -1: one group per row */
    bool sym;
    bool desc_act;         /* act-order (GPTQ only) */
    bool static_groups;    /* every group's grid before the column loop (GPTQ only) */
    bool min_zero_one;     /* format "gptq": zero points are at least 1 */
    double damp;           /* damp_percent, in (0, 1) */
} folo_quant_params;

/* A quantized linear W [N, K], in the order of the stored layout
 * (model/gptq.h packs it). */
typedef struct folo_quant_result {
    int N, K, n_groups;
    int bits;              /* the params' */
    uint8_t *codes;        /* [N, K] 0..maxq */
    uint8_t *zeros;        /* [n_groups, N] true zero points, 0..maxq */
    uint16_t *scales;      /* [n_groups, N] f16 */
    int32_t *g_idx;        /* [K] group of each input column */
    float *dequant;        /* [N, K] (code - zero) · scale, f32; NULL unless kept */
    double rel_error;      /* ‖ΔW·X‖² / ‖W·X‖²; NaN without a Hessian */
    double damp;           /* the damp that made H positive definite (GPTQ) */
} folo_quant_result;

/* Quantizes the float tensor w [N, K] (`name` labels errors and warnings).
 * H: the symmetric Hessian [K, K] of its input (hessian.h); required by
 * GPTQ, optional for RTN (then no error is measured). keep_dequant: fill
 * r->dequant, for a caller that runs later steps on Ŵ; without it only a
 * chunk of Ŵ's rows exists at a time (what a 151936-row lm_head needs).
 * Besides the result (N·K bytes of codes, and Ŵ when kept), the solver
 * holds two [K, K] doubles and about 4 × 32 MiB for a chunk of rows. */
int folo_quant_solve(folo_quant_result *r, const folo_quant_params *p, const folo_tensor *w,
                     const double *H, const folo_linalg *la, bool keep_dequant, const char *name,
                     folo_error *err);
void folo_quant_result_free(folo_quant_result *r);

#endif
