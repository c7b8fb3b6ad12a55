/* The Hessian of GPTQ's layer objective ‖W·X - Ŵ·X‖² for one input of a
 * layer: H = 2/n · Σ x·xᵀ over the n calibration rows x [K] that reach it,
 * as the reference (GPTQModel's GPTQ.add_batch) accumulates it, but in
 * double: each product of two f32 inputs is exact in double, and only the
 * sums round. Linears that share an input (q/k/v, gate/up) share one.
 *
 * Rows are staged in double and folded into the upper triangle with BLAS's
 * dsyrk a chunk at a time (a few MiB of rows), so the calls are large and
 * few; folo_hessian_finish scales the sum and fills in the lower triangle. */
#ifndef FOLO_QUANT_HESSIAN_H
#define FOLO_QUANT_HESSIAN_H

#include <stdint.h>

#include "core/error.h"
#include "quant/linalg.h"

typedef struct folo_hessian {
    int K;                 /* inputs of the linear(s) */
    int64_t n_rows;        /* rows added so far */
    double *h;             /* [K, K]: Σ x·xᵀ (upper triangle) until finished, then the
                              symmetric 2/n · Σ x·xᵀ */
    double *stage;         /* [stage_rows, K] rows not yet folded in */
    int n_staged;
    int stage_rows;
    const folo_linalg *la;
} folo_hessian;

int folo_hessian_init(folo_hessian *h, int K, const folo_linalg *la, folo_error *err);
/* Adds the rows x [n_rows, K]. */
void folo_hessian_add(folo_hessian *h, const float *x, int n_rows);
/* Folds in the staged rows, scales by 2/n (n > 0) and symmetrizes. */
void folo_hessian_finish(folo_hessian *h);
/* Back to an empty sum over K inputs, keeping the memory. */
void folo_hessian_reset(folo_hessian *h);
void folo_hessian_free(folo_hessian *h);

#endif
