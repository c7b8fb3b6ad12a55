/* Accumulating a layer input's Hessian; see hessian.h. */
#include "quant/hessian.h"

#include <string.h>

#include "core/alloc.h"

/* Bytes of rows staged before one dsyrk folds them in. */
#define STAGE_BYTES (16u << 20)

int folo_hessian_init(folo_hessian *h, int K, const folo_linalg *la, folo_error *err) {
    memset(h, 0, sizeof *h);
    h->K = K;
    h->la = la;
    h->stage_rows = (int)(STAGE_BYTES / sizeof(double) / (size_t)K);
    if (h->stage_rows < 64) h->stage_rows = 64;
    h->h = folo_alloc_large((size_t)K * K * sizeof(double));
    h->stage = folo_alloc_large((size_t)h->stage_rows * K * sizeof(double));
    if (!h->h || !h->stage) {
        folo_hessian_free(h);
        return folo_fail(err, "cannot allocate a %d x %d Hessian (%zu bytes)", K, K,
                         (size_t)K * K * sizeof(double));
    }
    return 0;
}

static void fold(folo_hessian *h) {
    if (h->n_staged == 0) return;
    h->la->dsyrk(FOLO_CBLAS_ROW_MAJOR, FOLO_CBLAS_UPPER, FOLO_CBLAS_TRANS, h->K, h->n_staged, 1.0,
                 h->stage, h->K, 1.0, h->h, h->K);
    h->n_staged = 0;
}

void folo_hessian_add(folo_hessian *h, const float *x, int n_rows) {
    size_t K = (size_t)h->K;
    for (int r = 0; r < n_rows; r++) {
        if (h->n_staged == h->stage_rows) fold(h);
        double *row = h->stage + (size_t)h->n_staged++ * K;
        for (size_t k = 0; k < K; k++) row[k] = x[(size_t)r * K + k];
    }
    h->n_rows += n_rows;
}

void folo_hessian_finish(folo_hessian *h) {
    fold(h);
    size_t K = (size_t)h->K;
    double scale = h->n_rows > 0 ? 2.0 / (double)h->n_rows : 0.0;
    for (size_t i = 0; i < K; i++)
        for (size_t j = i; j < K; j++) {
            double v = h->h[i * K + j] * scale;
            h->h[i * K + j] = v;
            h->h[j * K + i] = v;
        }
}

void folo_hessian_reset(folo_hessian *h) {
    memset(h->h, 0, (size_t)h->K * h->K * sizeof(double));
    h->n_rows = 0;
    h->n_staged = 0;
}

void folo_hessian_free(folo_hessian *h) {
    folo_free_large(h->h);
    folo_free_large(h->stage);
    memset(h, 0, sizeof *h);
}
