/* Quantizing one linear; see solver.h for the algorithm.
 *
 * Everything runs in double on row-major copies: W0 [N, K] the weights as
 * stored, W [N, K] the working copy (columns in act-order), U [K, K] the
 * factor. Rows are independent in GPTQ (each has its own grids and error
 * feedback; only U is shared), so the inner loops run along rows, and the
 * two large products (the lazy block update and the error's ΔW·H) are
 * BLAS's dgemm. */
#include "quant/solver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/log.h"

#define MAXQ 15          /* 2^bits - 1 */
#define BLOCK 128        /* columns of a lazy-batch block (the reference's blocksize) */
#define DAMP_STEP 0.0015 /* GPTQModel's damp_auto_increment */

/* ---- the grid ------------------------------------------------------------- */

/* scale and zero of the values x[0..n) (solver.h). */
static void find_grid(const double *x, int n, const folo_quant_params *p, double *scale,
                      double *zero) {
    double lo = 0.0, hi = 0.0;
    for (int i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (p->sym) {
        hi = -lo > hi ? -lo : hi;
        if (lo < 0) lo = -hi;
    }
    if (lo == 0.0 && hi == 0.0) {
        lo = -1.0;
        hi = 1.0;
    }
    *scale = (hi - lo) / MAXQ;
    *zero = p->sym ? (MAXQ + 1) / 2 : rint(-lo / *scale);
    if (p->min_zero_one && *zero < 1.0) *zero = 1.0;
}

/* The code of w on a grid, and the value it stands for. */
static double quantize(double w, double scale, double zero, uint8_t *code) {
    double c = rint(w / scale) + zero;
    c = c < 0.0 ? 0.0 : c > MAXQ ? MAXQ : c;
    *code = (uint8_t)c;
    return scale * (c - zero);
}

/* ---- buffers -------------------------------------------------------------- */

typedef struct solve_state {
    int N, K, G, n_groups;
    double *W0;        /* [N, K] the weights as stored */
    double *W;         /* [N, K] GPTQ's working copy, columns permuted */
    double *U;         /* [K, K] upper Cholesky factor of the damped H⁻¹ (upper triangle) */
    double *Hp;        /* [K, K] H with dead columns fixed, permuted */
    double *block;     /* [N, BLOCK] the current block of W, updated within the block */
    double *err;       /* [N, BLOCK] the block's scaled errors */
    double *scale;     /* [n_groups, N] */
    double *zero;      /* [n_groups, N] */
    uint8_t *codes_p;  /* [N, K] codes, columns permuted */
    int32_t *perm;     /* [K] permuted column j is column perm[j] */
} solve_state;

static void state_free(solve_state *s) {
    folo_free_large(s->W0);
    folo_free_large(s->W);
    folo_free_large(s->U);
    folo_free_large(s->Hp);
    folo_free_large(s->block);
    folo_free_large(s->err);
    folo_free_large(s->scale);
    folo_free_large(s->zero);
    folo_free_large(s->codes_p);
    folo_free_large(s->perm);
}

void folo_quant_result_free(folo_quant_result *r) {
    folo_free_large(r->codes);
    folo_free_large(r->zeros);
    folo_free_large(r->scales);
    folo_free_large(r->g_idx);
    folo_free_large(r->dequant);
    memset(r, 0, sizeof *r);
}

/* W0 = w in double; fails on a weight that is not finite. */
static int load_weights(solve_state *s, const folo_tensor *w, const char *name, folo_error *err) {
    size_t K = (size_t)s->K, elem = folo_dtype_size(w->dtype);
    float *row = folo_calloc(K, sizeof *row); /* [K] */
    int rc = 0;
    for (int n = 0; n < s->N && rc == 0; n++) {
        folo_to_f32(w->dtype, (const char *)w->data + n * K * elem, row, K);
        for (size_t k = 0; k < K; k++) {
            if (!isfinite(row[k])) {
                rc = folo_fail(err, "%s: weight [%d, %zu] is %g; only finite weights can be "
                               "quantized", name, n, k, (double)row[k]);
                break;
            }
            s->W0[n * K + k] = row[k];
        }
    }
    free(row);
    return rc;
}

/* ---- GPTQ ----------------------------------------------------------------- */

typedef struct {
    double key;    /* H[i,i] */
    int32_t index; /* i */
} diag_entry;

/* Decreasing key, ties by increasing index (a stable order). */
static int compare_desc(const void *a, const void *b) {
    const diag_entry *x = a, *y = b;
    if (x->key != y->key) return x->key > y->key ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Steps 1-2 of solver.h: dead columns, then the permutation of W and H. */
static void prepare(solve_state *s, const folo_quant_params *p, const double *H) {
    size_t N = (size_t)s->N, K = (size_t)s->K;
    double *Hd = s->U; /* scratch: H with dead columns fixed, before permuting */
    memcpy(Hd, H, K * K * sizeof(double));
    memcpy(s->W, s->W0, N * K * sizeof(double));
    for (size_t i = 0; i < K; i++) {
        s->perm[i] = (int32_t)i;
        if (Hd[i * K + i] != 0.0) continue;
        Hd[i * K + i] = 1.0;
        for (size_t n = 0; n < N; n++) s->W[n * K + i] = 0.0;
    }
    if (p->desc_act) {
        diag_entry *diag = folo_calloc(K, sizeof *diag);
        for (size_t i = 0; i < K; i++) diag[i] = (diag_entry){Hd[i * K + i], (int32_t)i};
        qsort(diag, K, sizeof *diag, compare_desc);
        for (size_t i = 0; i < K; i++) s->perm[i] = diag[i].index;
        free(diag);
    }
    for (size_t i = 0; i < K; i++)
        for (size_t j = 0; j < K; j++) s->Hp[i * K + j] = Hd[(size_t)s->perm[i] * K + s->perm[j]];
    if (p->desc_act) {
        double *row = folo_calloc(K, sizeof *row);
        for (size_t n = 0; n < N; n++) {
            for (size_t j = 0; j < K; j++) row[j] = s->W[n * K + s->perm[j]];
            memcpy(s->W + n * K, row, K * sizeof(double));
        }
        free(row);
    }
}

/* U = the upper Cholesky factor of (Hp + damp · mean(diag Hp) · I)⁻¹: 0, a
 * positive LAPACK info when the damped H is not positive definite, or a
 * negative one when LAPACK itself failed. */
static int inverse_cholesky(solve_state *s, double damp, const folo_linalg *la) {
    size_t K = (size_t)s->K;
    double mean = 0.0;
    for (size_t i = 0; i < K; i++) mean += s->Hp[i * K + i];
    mean /= (double)K;
    memcpy(s->U, s->Hp, K * K * sizeof(double));
    for (size_t i = 0; i < K; i++) s->U[i * K + i] += damp * mean;
    int info = la->dpotrf(FOLO_LAPACK_ROW_MAJOR, 'L', s->K, s->U, s->K);
    if (info == 0) info = la->dpotri(FOLO_LAPACK_ROW_MAJOR, 'L', s->K, s->U, s->K);
    if (info != 0) return info;
    for (size_t i = 0; i < K; i++)
        for (size_t j = i + 1; j < K; j++) s->U[i * K + j] = s->U[j * K + i];
    return la->dpotrf(FOLO_LAPACK_ROW_MAJOR, 'U', s->K, s->U, s->K);
}

/* Step 3: damp, growing it while H stays singular. */
static int factor(solve_state *s, const folo_quant_params *p, const folo_linalg *la,
                  const char *name, double *damp_out, folo_error *err) {
    for (double damp = p->damp; damp < 1.0; damp += DAMP_STEP) {
        int info = inverse_cholesky(s, damp, la);
        if (info < 0)
            return folo_fail(err, "%s: LAPACK failed (info %d) on the %d x %d Hessian", name, info,
                             s->K, s->K);
        if (info > 0) continue;
        if (damp != p->damp)
            folo_log(FOLO_LOG_WARN, "%s: the Hessian is positive definite only with damp %.4f "
                     "(asked %.4f)", name, damp, p->damp);
        *damp_out = damp;
        return 0;
    }
    return folo_fail(err, "%s: the Hessian is not positive definite even with damp near 1; "
                     "calibrate with more samples", name);
}

/* Step 4-5: the column loop. codes_p, scale and zero in permuted order. */
static void gptq_columns(solve_state *s, const folo_quant_params *p, const folo_linalg *la) {
    size_t N = (size_t)s->N, K = (size_t)s->K, G = (size_t)s->G;
    for (size_t i1 = 0; i1 < K; i1 += BLOCK) {
        size_t i2 = i1 + BLOCK < K ? i1 + BLOCK : K, count = i2 - i1;
        for (size_t n = 0; n < N; n++)
            memcpy(s->block + n * BLOCK, s->W + n * K + i1, count * sizeof(double));
        for (size_t i = 0; i < count; i++) {
            size_t col = i1 + i, g = col / G;
            if (p->group_size > 0 && col % G == 0)
                for (size_t n = 0; n < N; n++)
                    find_grid(s->W + n * K + col, (int)G, p, &s->scale[g * N + n],
                              &s->zero[g * N + n]);
            const double *u = s->U + col * K + i1; /* U[col, i1..i2) */
            double d = u[i];
            for (size_t n = 0; n < N; n++) {
                double *w = s->block + n * BLOCK;
                double q = quantize(w[i], s->scale[g * N + n], s->zero[g * N + n],
                                    &s->codes_p[n * K + col]);
                double e = (w[i] - q) / d;
                s->err[n * BLOCK + i] = e;
                for (size_t j = i + 1; j < count; j++) w[j] -= e * u[j];
            }
        }
        if (i2 < K) /* W[:, i2:] -= err · U[i1:i2, i2:] */
            la->dgemm(FOLO_CBLAS_ROW_MAJOR, FOLO_CBLAS_NO_TRANS, FOLO_CBLAS_NO_TRANS, s->N,
                      (int)(K - i2), (int)count, -1.0, s->err, BLOCK, s->U + i1 * K + i2, s->K,
                      1.0, s->W + i2, s->K);
    }
}

/* ---- results -------------------------------------------------------------- */

/* Codes and g_idx back in column order, zeros and f16 scales, dequant. */
static void finish(folo_quant_result *r, const solve_state *s) {
    size_t N = (size_t)s->N, K = (size_t)s->K;
    for (size_t j = 0; j < K; j++) {
        size_t k = (size_t)s->perm[j];
        r->g_idx[k] = (int32_t)(j / (size_t)s->G);
        for (size_t n = 0; n < N; n++) r->codes[n * K + k] = s->codes_p[n * K + j];
    }
    for (size_t i = 0; i < (size_t)s->n_groups * N; i++) {
        r->zeros[i] = (uint8_t)s->zero[i];
        r->scales[i] = folo_f32_to_f16((float)s->scale[i]);
    }
    for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < K; k++) {
            size_t gi = (size_t)r->g_idx[k] * N + n;
            r->dequant[n * K + k] = ((float)r->codes[n * K + k] - (float)r->zeros[gi]) *
                                    folo_f16_to_f32(r->scales[gi]);
        }
}

/* tr(ΔW·H·ΔWᵀ) / tr(W·H·Wᵀ), both rows of M = [W0; W0 - Ŵ] through one
 * product M·H. */
static int relative_error(folo_quant_result *r, const solve_state *s, const double *H,
                          const folo_linalg *la, const char *name, folo_error *err) {
    size_t N = (size_t)s->N, K = (size_t)s->K;
    double *M = folo_alloc_large(2 * N * K * sizeof(double)); /* [2N, K] */
    double *Y = folo_alloc_large(2 * N * K * sizeof(double)); /* [2N, K] = M·H */
    if (!M || !Y) {
        folo_free_large(M);
        folo_free_large(Y);
        return folo_fail(err, "%s: cannot allocate %zu bytes to measure the error", name,
                         4 * N * K * sizeof(double));
    }
    memcpy(M, s->W0, N * K * sizeof(double));
    for (size_t i = 0; i < N * K; i++) M[N * K + i] = s->W0[i] - (double)r->dequant[i];
    la->dgemm(FOLO_CBLAS_ROW_MAJOR, FOLO_CBLAS_NO_TRANS, FOLO_CBLAS_NO_TRANS, (int)(2 * N),
              s->K, s->K, 1.0, M, s->K, H, s->K, 0.0, Y, s->K);
    double whw = 0.0, dhd = 0.0;
    for (size_t i = 0; i < N * K; i++) {
        whw += M[i] * Y[i];
        dhd += M[N * K + i] * Y[N * K + i];
    }
    r->rel_error = whw > 0.0 ? dhd / whw : 0.0;
    folo_free_large(M);
    folo_free_large(Y);
    return 0;
}

int folo_quant_solve(folo_quant_result *r, const folo_quant_params *p, const folo_tensor *w,
                     const double *H, const folo_linalg *la, const char *name, folo_error *err) {
    memset(r, 0, sizeof *r);
    solve_state s = {.N = (int)w->shape[0], .K = (int)w->shape[1]};
    s.G = p->group_size > 0 ? p->group_size : s.K;
    s.n_groups = s.K / s.G;
    FOLO_ASSERT(s.K % s.G == 0 && (H || p->method == FOLO_QUANT_RTN));
    FOLO_ASSERT(!p->desc_act || p->method == FOLO_QUANT_GPTQ);
    size_t N = (size_t)s.N, K = (size_t)s.K, NG = (size_t)s.n_groups * N;
    bool gptq = p->method == FOLO_QUANT_GPTQ;
    s.W0 = folo_alloc_large(N * K * sizeof(double));
    s.W = folo_alloc_large(N * K * sizeof(double));
    s.scale = folo_alloc_large(NG * sizeof(double));
    s.zero = folo_alloc_large(NG * sizeof(double));
    s.codes_p = folo_alloc_large(N * K);
    s.perm = folo_alloc_large(K * sizeof(int32_t));
    if (gptq) {
        s.U = folo_alloc_large(K * K * sizeof(double));
        s.Hp = folo_alloc_large(K * K * sizeof(double));
        s.block = folo_alloc_large(N * BLOCK * sizeof(double));
        s.err = folo_alloc_large(N * BLOCK * sizeof(double));
    }
    r->N = s.N;
    r->K = s.K;
    r->n_groups = s.n_groups;
    r->rel_error = NAN;
    r->codes = folo_alloc_large(N * K);
    r->zeros = folo_alloc_large(NG);
    r->scales = folo_alloc_large(NG * sizeof(uint16_t));
    r->g_idx = folo_alloc_large(K * sizeof(int32_t));
    r->dequant = folo_alloc_large(N * K * sizeof(float));
    int rc = 0;
    if (!s.W0 || !s.W || !s.scale || !s.zero || !s.codes_p || !s.perm ||
        (gptq && (!s.U || !s.Hp || !s.block || !s.err)) || !r->codes || !r->zeros ||
        !r->scales || !r->g_idx || !r->dequant)
        rc = folo_fail(err, "%s: cannot allocate the buffers to quantize a [%d, %d] linear", name,
                       s.N, s.K);
    if (rc == 0) rc = load_weights(&s, w, name, err);
    if (rc == 0 && (!gptq || p->group_size < 0))
        /* RTN: every group's grid; GPTQ with one group per row: the row's,
         * found before anything changes W (the reference's order). */
        for (size_t g = 0; g < (size_t)s.n_groups; g++)
            for (size_t n = 0; n < N; n++)
                find_grid(s.W0 + n * K + g * (size_t)s.G, s.G, p, &s.scale[g * N + n],
                          &s.zero[g * N + n]);
    if (rc == 0 && gptq) {
        prepare(&s, p, H);
        rc = factor(&s, p, la, name, &r->damp, err);
        if (rc == 0) gptq_columns(&s, p, la);
    } else if (rc == 0) {
        for (size_t n = 0; n < N; n++)
            for (size_t k = 0; k < K; k++) {
                size_t gi = k / (size_t)s.G * N + n;
                quantize(s.W0[n * K + k], s.scale[gi], s.zero[gi], &s.codes_p[n * K + k]);
            }
        for (size_t k = 0; k < K; k++) s.perm[k] = (int32_t)k;
    }
    if (rc == 0) finish(r, &s);
    if (rc == 0 && H) rc = relative_error(r, &s, H, la, name, err);
    state_free(&s);
    if (rc != 0) folo_quant_result_free(r);
    return rc;
}
