/* Quantizing one linear; see solver.h for the algorithm.
 *
 * Everything runs in double on row-major copies. Rows are independent in
 * GPTQ (each has its own grids and error feedback; only the permutation and
 * the factor U of the inverse Hessian are shared), so once U is found the
 * rows are quantized a chunk at a time: W0 [R, K] the chunk's weights as
 * stored, W [R, K] its working copy (columns in act-order), with R rows
 * chosen so that one such copy takes CHUNK_BYTES. Every decoder linear of
 * Qwen3-0.6B is one chunk; its 151936-row lm_head is 38, whose copies in
 * double (1.2 GB each) never exist whole. The inner loops run along rows,
 * and the large products (the lazy block update, and W·H and ΔW·H of the
 * error) are BLAS's dgemm. */
#include "quant/solver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/dtype.h"
#include "core/log.h"

#define BLOCK 128        /* columns of a lazy-batch block (the reference's blocksize) */
#define DAMP_STEP 0.0015 /* GPTQModel's damp_auto_increment */
#define CHUNK_BYTES (32u << 20) /* of a chunk's [R, K] doubles */

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
    double maxq = (double)((1 << p->bits) - 1);
    *scale = (hi - lo) / maxq;
    *zero = p->sym ? (maxq + 1) / 2 : rint(-lo / *scale);
    if (p->min_zero_one && *zero < 1.0) *zero = 1.0;
}

/* The code of w on a grid, and the value it stands for. */
static double quantize(double w, double scale, double zero, int bits, uint8_t *code) {
    double c = rint(w / scale) + zero, maxq = (double)((1 << bits) - 1);
    c = c < 0.0 ? 0.0 : c > maxq ? maxq : c;
    *code = (uint8_t)c;
    return scale * (c - zero);
}

/* ---- buffers -------------------------------------------------------------- */

typedef struct solve_state {
    int N, K, G, n_groups;
    int R;              /* rows a chunk holds at most */
    /* the whole linear */
    double *U;          /* [K, K] upper Cholesky factor of the damped H⁻¹ (GPTQ) */
    double *Hp;         /* [K, K] H with dead columns fixed, permuted (GPTQ) */
    int32_t *perm;      /* [K] permuted column j is column perm[j] (RTN: j) */
    double whw, dhd;    /* tr(W·H·Wᵀ) and tr(ΔW·H·ΔWᵀ) over the chunks so far */
    /* the current chunk: rows [n0, n0 + n) of the linear, n <= R */
    int n0, n;
    double *W0;         /* [n, K] the weights as stored */
    double *W;          /* [n, K] GPTQ's working copy, columns permuted; then ΔW = W0 - Ŵ */
    double *Y;          /* [n, K] W0·H, then ΔW·H */
    double *block;      /* [n, BLOCK] the current block of W, updated within the block (GPTQ) */
    double *err;        /* [n, BLOCK] the block's scaled errors (GPTQ) */
    double *scale;      /* [n_groups, n] */
    double *zero;       /* [n_groups, n] */
    uint8_t *codes_p;   /* [n, K] codes, columns permuted */
    float *dequant;     /* [n, K] Ŵ: the chunk's rows of the result's dequant, or dequant_own */
    float *dequant_own; /* [R, K] when the result keeps no dequant */
} solve_state;

static void state_free(solve_state *s) {
    folo_free_large(s->U);
    folo_free_large(s->Hp);
    folo_free_large(s->perm);
    folo_free_large(s->W0);
    folo_free_large(s->W);
    folo_free_large(s->Y);
    folo_free_large(s->block);
    folo_free_large(s->err);
    folo_free_large(s->scale);
    folo_free_large(s->zero);
    folo_free_large(s->codes_p);
    folo_free_large(s->dequant_own);
}

void folo_quant_result_free(folo_quant_result *r) {
    folo_free_large(r->codes);
    folo_free_large(r->zeros);
    folo_free_large(r->scales);
    folo_free_large(r->g_idx);
    folo_free_large(r->dequant);
    memset(r, 0, sizeof *r);
}

/* W0 = the chunk's rows of w in double; fails on a weight that is not
 * finite. */
static int load_weights(solve_state *s, const folo_tensor *w, const char *name, folo_error *err) {
    size_t K = (size_t)s->K, elem = folo_dtype_size(w->dtype);
    float *row = folo_calloc(K, sizeof *row); /* [K] */
    int rc = 0;
    for (size_t i = 0; i < (size_t)s->n && rc == 0; i++) {
        size_t n = (size_t)s->n0 + i;
        folo_to_f32(w->dtype, (const char *)w->data + n * K * elem, row, K);
        for (size_t k = 0; k < K; k++) {
            if (!isfinite(row[k])) {
                rc = folo_fail(err, "%s: weight [%zu, %zu] is %g; only finite weights can be "
                               "quantized", name, n, k, (double)row[k]);
                break;
            }
            s->W0[i * K + k] = row[k];
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

/* Steps 1-2 of solver.h for H: dead columns, then the permutation and Hp. */
static void prepare_hessian(solve_state *s, const folo_quant_params *p, const double *H) {
    size_t K = (size_t)s->K;
    double *Hd = s->U; /* scratch: H with dead columns fixed, before permuting */
    memcpy(Hd, H, K * K * sizeof(double));
    for (size_t i = 0; i < K; i++) {
        s->perm[i] = (int32_t)i;
        if (Hd[i * K + i] == 0.0) Hd[i * K + i] = 1.0;
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
}

/* Steps 1-2 for the chunk's rows: W = W0 with dead columns zeroed, permuted. */
static void prepare_rows(solve_state *s, const double *H) {
    size_t n = (size_t)s->n, K = (size_t)s->K;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < K; j++) {
            size_t k = (size_t)s->perm[j];
            s->W[i * K + j] = H[k * K + k] == 0.0 ? 0.0 : s->W0[i * K + k];
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

/* Step 4-5 on the chunk's rows: codes_p in permuted order, scale and zero
 * by group (static groups: set before, by the original columns' groups). */
static void gptq_columns(solve_state *s, const folo_quant_params *p, const folo_linalg *la) {
    size_t n = (size_t)s->n, K = (size_t)s->K, G = (size_t)s->G;
    bool static_groups = p->static_groups && p->group_size > 0;
    for (size_t i1 = 0; i1 < K; i1 += BLOCK) {
        size_t i2 = i1 + BLOCK < K ? i1 + BLOCK : K, count = i2 - i1;
        for (size_t r = 0; r < n; r++)
            memcpy(s->block + r * BLOCK, s->W + r * K + i1, count * sizeof(double));
        for (size_t i = 0; i < count; i++) {
            size_t col = i1 + i, g = (static_groups ? (size_t)s->perm[col] : col) / G;
            if (p->group_size > 0 && !static_groups && col % G == 0)
                for (size_t r = 0; r < n; r++)
                    find_grid(s->W + r * K + col, (int)G, p, &s->scale[g * n + r],
                              &s->zero[g * n + r]);
            const double *u = s->U + col * K + i1; /* U[col, i1..i2) */
            double d = u[i];
            for (size_t r = 0; r < n; r++) {
                double *w = s->block + r * BLOCK;
                double q = quantize(w[i], s->scale[g * n + r], s->zero[g * n + r], p->bits,
                                    &s->codes_p[r * K + col]);
                double e = (w[i] - q) / d;
                s->err[r * BLOCK + i] = e;
                for (size_t j = i + 1; j < count; j++) w[j] -= e * u[j];
            }
        }
        if (i2 < K) /* W[:, i2:] -= err · U[i1:i2, i2:] */
            la->dgemm(FOLO_CBLAS_ROW_MAJOR, FOLO_CBLAS_NO_TRANS, FOLO_CBLAS_NO_TRANS, s->n,
                      (int)(K - i2), (int)count, -1.0, s->err, BLOCK, s->U + i1 * K + i2, s->K,
                      1.0, s->W + i2, s->K);
    }
}

/* ---- one chunk ------------------------------------------------------------ */

/* codes_p, scale and zero of the chunk's rows, by GPTQ or RTN. */
static void quantize_chunk(solve_state *s, const folo_quant_params *p, const double *H,
                           const folo_linalg *la) {
    size_t n = (size_t)s->n, K = (size_t)s->K, G = (size_t)s->G;
    bool gptq = p->method == FOLO_QUANT_GPTQ;
    if (!gptq || p->group_size < 0)
        /* RTN: every group's grid; GPTQ with one group per row: the row's,
         * found before anything changes W (the reference's order). */
        for (size_t g = 0; g < (size_t)s->n_groups; g++)
            for (size_t r = 0; r < n; r++)
                find_grid(s->W0 + r * K + g * G, s->G, p, &s->scale[g * n + r],
                          &s->zero[g * n + r]);
    if (gptq && p->static_groups && p->group_size > 0) {
        /* static groups: every group's grid first, on W with its dead
         * columns zeroed, in column order (the reference's order) */
        for (size_t r = 0; r < n; r++)
            for (size_t k = 0; k < K; k++)
                s->W[r * K + k] = H[k * K + k] == 0.0 ? 0.0 : s->W0[r * K + k];
        for (size_t g = 0; g < (size_t)s->n_groups; g++)
            for (size_t r = 0; r < n; r++)
                find_grid(s->W + r * K + g * G, s->G, p, &s->scale[g * n + r],
                          &s->zero[g * n + r]);
    }
    if (gptq) {
        prepare_rows(s, H);
        gptq_columns(s, p, la);
        return;
    }
    for (size_t r = 0; r < n; r++)
        for (size_t k = 0; k < K; k++) {
            size_t gi = k / G * n + r;
            quantize(s->W0[r * K + k], s->scale[gi], s->zero[gi], p->bits, &s->codes_p[r * K + k]);
        }
}

/* The chunk's rows of the result: codes back in column order, zeros and
 * f16 scales; and its dequantized rows. */
static void finish_chunk(folo_quant_result *r, solve_state *s) {
    size_t N = (size_t)s->N, K = (size_t)s->K, n = (size_t)s->n, n0 = (size_t)s->n0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *codes = r->codes + (n0 + i) * K;
        for (size_t j = 0; j < K; j++) codes[s->perm[j]] = s->codes_p[i * K + j];
    }
    for (size_t g = 0; g < (size_t)s->n_groups; g++)
        for (size_t i = 0; i < n; i++) {
            r->zeros[g * N + n0 + i] = (uint8_t)s->zero[g * n + i];
            r->scales[g * N + n0 + i] = folo_f32_to_f16((float)s->scale[g * n + i]);
        }
    s->dequant = r->dequant ? r->dequant + n0 * K : s->dequant_own;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < K; k++) {
            size_t gi = (size_t)r->g_idx[k] * N + n0 + i;
            s->dequant[i * K + k] = ((float)r->codes[(n0 + i) * K + k] - (float)r->zeros[gi]) *
                                    folo_f16_to_f32(r->scales[gi]);
        }
}

/* Adds the chunk's share of tr(W·H·Wᵀ) and tr(ΔW·H·ΔWᵀ). */
static void add_error(solve_state *s, const double *H, const folo_linalg *la) {
    size_t nK = (size_t)s->n * (size_t)s->K;
    la->dgemm(FOLO_CBLAS_ROW_MAJOR, FOLO_CBLAS_NO_TRANS, FOLO_CBLAS_NO_TRANS, s->n, s->K, s->K,
              1.0, s->W0, s->K, H, s->K, 0.0, s->Y, s->K);
    for (size_t i = 0; i < nK; i++) s->whw += s->W0[i] * s->Y[i];
    for (size_t i = 0; i < nK; i++) s->W[i] = s->W0[i] - (double)s->dequant[i];
    la->dgemm(FOLO_CBLAS_ROW_MAJOR, FOLO_CBLAS_NO_TRANS, FOLO_CBLAS_NO_TRANS, s->n, s->K, s->K,
              1.0, s->W, s->K, H, s->K, 0.0, s->Y, s->K);
    for (size_t i = 0; i < nK; i++) s->dhd += s->W[i] * s->Y[i];
}

/* ---- the whole linear ----------------------------------------------------- */

int folo_quant_solve(folo_quant_result *r, const folo_quant_params *p, const folo_tensor *w,
                     const double *H, const folo_linalg *la, bool keep_dequant, const char *name,
                     folo_error *err) {
    memset(r, 0, sizeof *r);
    solve_state s = {.N = (int)w->shape[0], .K = (int)w->shape[1]};
    s.G = p->group_size > 0 ? p->group_size : s.K;
    s.n_groups = s.K / s.G;
    FOLO_ASSERT(s.K % s.G == 0 && (H || p->method == FOLO_QUANT_RTN));
    FOLO_ASSERT(!p->desc_act || p->method == FOLO_QUANT_GPTQ);
    FOLO_ASSERT(!p->static_groups || p->method == FOLO_QUANT_GPTQ);
    size_t N = (size_t)s.N, K = (size_t)s.K, NG = (size_t)s.n_groups * N;
    size_t R = CHUNK_BYTES / sizeof(double) / K;
    R = R < 1 ? 1 : R > N ? N : R;
    s.R = (int)R;
    bool gptq = p->method == FOLO_QUANT_GPTQ;
    s.perm = folo_alloc_large(K * sizeof(int32_t));
    s.W0 = folo_alloc_large(R * K * sizeof(double));
    s.W = folo_alloc_large(R * K * sizeof(double));
    s.scale = folo_alloc_large((size_t)s.n_groups * R * sizeof(double));
    s.zero = folo_alloc_large((size_t)s.n_groups * R * sizeof(double));
    s.codes_p = folo_alloc_large(R * K);
    bool ok = s.perm && s.W0 && s.W && s.scale && s.zero && s.codes_p;
    if (gptq) {
        s.U = folo_alloc_large(K * K * sizeof(double));
        s.Hp = folo_alloc_large(K * K * sizeof(double));
        s.block = folo_alloc_large(R * BLOCK * sizeof(double));
        s.err = folo_alloc_large(R * BLOCK * sizeof(double));
        ok = ok && s.U && s.Hp && s.block && s.err;
    }
    if (H) {
        s.Y = folo_alloc_large(R * K * sizeof(double));
        ok = ok && s.Y;
    }
    r->N = s.N;
    r->bits = p->bits;
    r->K = s.K;
    r->n_groups = s.n_groups;
    r->rel_error = NAN;
    r->codes = folo_alloc_large(N * K);
    r->zeros = folo_alloc_large(NG);
    r->scales = folo_alloc_large(NG * sizeof(uint16_t));
    r->g_idx = folo_alloc_large(K * sizeof(int32_t));
    ok = ok && r->codes && r->zeros && r->scales && r->g_idx;
    if (keep_dequant) {
        r->dequant = folo_alloc_large(N * K * sizeof(float));
        ok = ok && r->dequant;
    } else {
        s.dequant_own = folo_alloc_large(R * K * sizeof(float));
        ok = ok && s.dequant_own;
    }
    int rc = ok ? 0 : folo_fail(err, "%s: cannot allocate the buffers to quantize a [%d, %d] "
                                "linear", name, s.N, s.K);
    if (rc == 0 && gptq) {
        prepare_hessian(&s, p, H);
        rc = factor(&s, p, la, name, &r->damp, err);
    } else if (rc == 0) {
        for (size_t k = 0; k < K; k++) s.perm[k] = (int32_t)k;
    }
    /* a column's group: by its place in the permuted order, or with static
     * groups by its own index */
    if (rc == 0)
        for (size_t j = 0; j < K; j++)
            r->g_idx[s.perm[j]] = (int32_t)((p->static_groups ? (size_t)s.perm[j] : j) / (size_t)s.G);
    for (s.n0 = 0; rc == 0 && s.n0 < s.N; s.n0 += s.n) {
        s.n = s.N - s.n0 < s.R ? s.N - s.n0 : s.R;
        rc = load_weights(&s, w, name, err);
        if (rc != 0) break;
        quantize_chunk(&s, p, H, la);
        finish_chunk(r, &s);
        if (H) add_error(&s, H, la);
    }
    if (rc == 0 && H) r->rel_error = s.whw > 0.0 ? s.dhd / s.whw : 0.0;
    state_free(&s);
    if (rc != 0) folo_quant_result_free(r);
    return rc;
}
