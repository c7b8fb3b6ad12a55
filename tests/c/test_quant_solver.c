/* The quantizer's solver (src/quant/solver.h) on what the numpy GPTQ of
 * tests/python/test_quantize.py does not reach with random models:
 *   - a diagonal Hessian spreads no error, so GPTQ picks round-to-nearest's
 *     codes, grids and all;
 *   - a dead input column (H[i,i] = 0) is quantized as 0;
 *   - a Hessian that is not positive definite gets more dampening, 0.0015
 *     at a time, until it is, and one that never is fails naming the
 *     linear;
 *   - the grid's corner cases: a group without negative weights (asym:
 *     zero 0, raised to 1 for format "gptq"; sym: lo stays 0), an all-zero
 *     group ([-1, 1]);
 *   - the relative error with H = I is ‖W - Ŵ‖² / ‖W‖²;
 *   - a linear taller than one chunk of rows (solver.c: 32 MiB of doubles,
 *     4096 rows at K = 1024) gets, in every row, what that row gets alone,
 *     across the chunk boundary, with or without Ŵ kept;
 *   - a non-finite weight is an error naming the linear and the element;
 *   - with OpenBLAS, the thread count quantize's --threads sets is the one
 *     OpenBLAS then reports. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/dtype.h"
#include "core/log.h"
#include "quant/solver.h"
#include "test_random.h"

static folo_tensor f32_tensor(const float *w, int N, int K) {
    folo_tensor t = {.data = w, .dtype = FOLO_DTYPE_F32, .n_dims = 2, .shape = {N, K}};
    return t;
}

/* H [K, K] = 2/n Xᵀ X of n random rows, positive definite for n > K. */
static double *random_hessian(int K, int n) {
    double *H = calloc((size_t)K * K, sizeof *H);
    float *x = malloc(sizeof *x * (size_t)K);
    for (int r = 0; r < n; r++) {
        fill_random(x, (size_t)K, 1.0f);
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++) H[i * K + j] += 2.0 / n * x[i] * x[j];
    }
    free(x);
    return H;
}

static void test_diagonal_hessian_is_rtn(const folo_linalg *la) {
    int N = 16, K = 64;
    float *w = malloc(sizeof *w * (size_t)N * K);
    fill_random(w, (size_t)N * K, 0.1f);
    double *H = calloc((size_t)K * K, sizeof *H);
    for (int i = 0; i < K; i++) H[i * K + i] = 0.5 + (rng_float() + 1.0);
    folo_tensor t = f32_tensor(w, N, K);
    for (int sym = 0; sym < 2; sym++) {
        folo_quant_params p = {.method = FOLO_QUANT_GPTQ, .bits = 4, .group_size = 32, .sym = sym,
                               .damp = 0.01};
        folo_quant_result gptq, rtn;
        folo_error err = {{0}};
        CHECK(folo_quant_solve(&gptq, &p, &t, H, la, true, "diag", &err) == 0);
        p.method = FOLO_QUANT_RTN;
        CHECK(folo_quant_solve(&rtn, &p, &t, NULL, la, true, "diag", &err) == 0);
        CHECK(memcmp(gptq.codes, rtn.codes, (size_t)N * K) == 0);
        CHECK(memcmp(gptq.zeros, rtn.zeros, (size_t)2 * N) == 0);
        CHECK(memcmp(gptq.scales, rtn.scales, sizeof(uint16_t) * 2 * N) == 0);
        CHECK(gptq.g_idx[31] == 0 && gptq.g_idx[32] == 1);
        CHECK(isnan(rtn.rel_error) && gptq.rel_error > 0 && gptq.damp == 0.01);
        folo_quant_result_free(&gptq);
        folo_quant_result_free(&rtn);
    }
    free(w);
    free(H);
}

static void test_dead_column(const folo_linalg *la) {
    int N = 8, K = 32, dead = 5;
    float *w = malloc(sizeof *w * (size_t)N * K);
    fill_random(w, (size_t)N * K, 0.1f);
    double *H = random_hessian(K, 100);
    for (int i = 0; i < K; i++) H[dead * K + i] = H[i * K + dead] = 0.0;
    folo_tensor t = f32_tensor(w, N, K);
    for (int sym = 0; sym < 2; sym++) {
        folo_quant_params p = {.method = FOLO_QUANT_GPTQ, .bits = 4, .group_size = -1, .sym = sym,
                               .desc_act = true, .damp = 0.01};
        folo_quant_result r;
        folo_error err = {{0}};
        CHECK_MSG(folo_quant_solve(&r, &p, &t, H, la, true, "dead", &err) == 0, "%s",
                  err.message);
        for (int n = 0; n < N; n++) CHECK(r.dequant[n * K + dead] == 0.0f);
        /* act-order puts the dead column (H[i,i] set to 1, below the rest) last */
        CHECK(r.n_groups == 1 && r.g_idx[dead] == 0);
        folo_quant_result_free(&r);
    }
    free(w);
    free(H);
}

static void test_damping(const folo_linalg *la) {
    int N = 8, K = 8;
    float *w = malloc(sizeof *w * (size_t)N * K);
    fill_random(w, (size_t)N * K, 0.1f);
    double *H = calloc((size_t)K * K, sizeof *H);
    for (int i = 0; i < K; i++) H[i * K + i] = 1.0;
    /* eigenvalues 1 ± 1.02: positive definite once damp exceeds 0.02 */
    H[0 * K + 1] = H[1 * K + 0] = 1.02;
    folo_tensor t = f32_tensor(w, N, K);
    folo_quant_params p = {.method = FOLO_QUANT_GPTQ, .bits = 4, .group_size = 8, .sym = true,
                           .damp = 0.01};
    folo_quant_result r;
    folo_error err = {{0}};
    CHECK_MSG(folo_quant_solve(&r, &p, &t, H, la, true, "damped", &err) == 0, "%s", err.message);
    CHECK_MSG(r.damp > 0.02 && r.damp < 0.02 + 0.0015, "damp %g", r.damp);
    folo_quant_result_free(&r);
    H[0 * K + 1] = H[1 * K + 0] = 3.0; /* an eigenvalue of -2: no damp below 1 helps */
    CHECK(folo_quant_solve(&r, &p, &t, H, la, true, "model.layers.3.mlp.up_proj", &err) != 0);
    CHECK(strstr(err.message, "model.layers.3.mlp.up_proj: the Hessian is not positive "
                              "definite") != NULL);
    free(w);
    free(H);
}

static void test_grid_corners(void) {
    int N = 8, K = 8;
    float w[8 * 8] = {0};
    for (int k = 0; k < K; k++) w[0 * K + k] = 0.1f * (float)(k + 1); /* row 0: 0.1 .. 0.8 */
    for (int n = 2; n < N; n++)
        for (int k = 0; k < K; k++) w[n * K + k] = 0.05f * (float)(k - 3 * (n % 3));
    /* row 1 stays all zero */
    folo_tensor t = f32_tensor(w, N, K);
    folo_quant_params p = {.method = FOLO_QUANT_RTN, .bits = 4, .group_size = 8, .sym = false};
    folo_quant_result r;
    folo_error err = {{0}};
    CHECK(folo_quant_solve(&r, &p, &t, NULL, NULL, true, "corners", &err) == 0);
    CHECK(r.zeros[0] == 0 && r.codes[0 * K + 7] == 15);
    CHECK(r.zeros[1] == 8 && r.scales[1] == folo_f32_to_f16(2.0f / 15.0f));
    folo_quant_result_free(&r);
    p.min_zero_one = true; /* format "gptq" */
    CHECK(folo_quant_solve(&r, &p, &t, NULL, NULL, true, "corners", &err) == 0);
    CHECK(r.zeros[0] == 1 && r.codes[0 * K + 7] == 15 && r.dequant[0 * K + 7] < 0.8f * 0.95f);
    folo_quant_result_free(&r);
    p.sym = true; /* no negative weight: lo stays 0, so only codes 8..15 serve row 0 */
    CHECK(folo_quant_solve(&r, &p, &t, NULL, NULL, true, "corners", &err) == 0);
    CHECK(r.zeros[0] == 8 && r.codes[0 * K + 7] == 15 && r.codes[0 * K + 0] == 10);
    CHECK(r.scales[0] == folo_f32_to_f16(0.8f / 15.0f));
    folo_quant_result_free(&r);
    p.bits = 8; /* an int8 head's grid: maxq 255, symmetric zero 128 */
    CHECK(folo_quant_solve(&r, &p, &t, NULL, NULL, true, "corners", &err) == 0);
    CHECK(r.bits == 8 && r.zeros[0] == 128 && r.codes[0 * K + 7] == 255);
    CHECK(r.codes[0 * K + 0] == 160); /* round(0.1 / (0.8 / 255)) + 128 */
    CHECK(r.scales[0] == folo_f32_to_f16(0.8f / 255.0f));
    folo_quant_result_free(&r);
    p.sym = false;
    CHECK(folo_quant_solve(&r, &p, &t, NULL, NULL, true, "corners", &err) == 0);
    CHECK(r.zeros[0] == 1 && r.codes[0 * K + 7] == 255 && r.zeros[1] == 128);
    folo_quant_result_free(&r);
}

static void test_relative_error(const folo_linalg *la) {
    int N = 8, K = 16;
    float *w = malloc(sizeof *w * (size_t)N * K);
    fill_random(w, (size_t)N * K, 0.1f);
    double *H = calloc((size_t)K * K, sizeof *H);
    for (int i = 0; i < K; i++) H[i * K + i] = 1.0;
    folo_tensor t = f32_tensor(w, N, K);
    folo_quant_params p = {.method = FOLO_QUANT_RTN, .bits = 4, .group_size = -1, .sym = false};
    folo_quant_result r;
    folo_error err = {{0}};
    CHECK(folo_quant_solve(&r, &p, &t, H, la, true, "error", &err) == 0);
    double num = 0, den = 0;
    for (int i = 0; i < N * K; i++) {
        num += ((double)w[i] - r.dequant[i]) * ((double)w[i] - r.dequant[i]);
        den += (double)w[i] * w[i];
    }
    CHECK_NEAR(r.rel_error, num / den, 1e-12 * (num / den));
    folo_quant_result_free(&r);
    w[1 * K + 2] = NAN;
    CHECK(folo_quant_solve(&r, &p, &t, H, la, true, "model.layers.0.self_attn.v_proj", &err) !=
          0);
    CHECK_STR(err.message, "model.layers.0.self_attn.v_proj: weight [1, 2] is nan; only finite "
                           "weights can be quantized");
    free(w);
    free(H);
}

static void test_chunks_are_rows_alone(const folo_linalg *la) {
    int N = 4100, K = 1024, first = 4090; /* rows 4090..4099 straddle row 4096 */
    float *w = malloc(sizeof *w * (size_t)N * K);
    fill_random(w, (size_t)N * K, 0.1f);
    double *H = random_hessian(K, 64); /* singular: the damping makes it definite */
    folo_quant_params p = {.method = FOLO_QUANT_GPTQ, .bits = 4, .group_size = 128, .sym = false,
                           .desc_act = true, .damp = 0.01};
    folo_tensor all = f32_tensor(w, N, K), tail = f32_tensor(w + (size_t)first * K, N - first, K);
    folo_quant_result r, alone;
    folo_error err = {{0}};
    CHECK_MSG(folo_quant_solve(&r, &p, &all, H, la, false, "all", &err) == 0, "%s", err.message);
    CHECK_MSG(folo_quant_solve(&alone, &p, &tail, H, la, true, "tail", &err) == 0, "%s",
              err.message);
    CHECK(r.dequant == NULL && alone.dequant != NULL && r.rel_error > 0);
    CHECK(memcmp(r.g_idx, alone.g_idx, sizeof(int32_t) * (size_t)K) == 0);
    CHECK(memcmp(r.codes + (size_t)first * K, alone.codes, (size_t)(N - first) * K) == 0);
    for (int g = 0; g < K / 128; g++) {
        size_t at = (size_t)g * N + first, at_alone = (size_t)g * (N - first);
        CHECK(memcmp(r.zeros + at, alone.zeros + at_alone, (size_t)(N - first)) == 0);
        CHECK(memcmp(r.scales + at, alone.scales + at_alone,
                     sizeof(uint16_t) * (size_t)(N - first)) == 0);
    }
    folo_quant_result_free(&r);
    folo_quant_result_free(&alone);
    free(w);
    free(H);
}

/* When the BLAS is OpenBLAS, set_threads is its openblas_set_num_threads:
 * what it sets, OpenBLAS's own openblas_get_num_threads reads back. */
static void test_set_threads(const folo_linalg *la) {
    const char *path = getenv("FOLO_BLAS_LIBRARY");
    void *blas = dlopen(path && path[0] ? path : "libblas.so.3", RTLD_NOW | RTLD_NOLOAD);
    int (*get)(void) = blas ? (int (*)(void))dlsym(blas, "openblas_get_num_threads") : NULL;
    if (!get) {
        fprintf(stderr, "test_quant_solver: the BLAS is not OpenBLAS; set_threads not checked\n");
        CHECK(la->set_threads == NULL);
    } else {
        CHECK(la->set_threads != NULL);
        int was = get();
        la->set_threads(1);
        CHECK(get() == 1);
        la->set_threads(was);
        CHECK(get() == was);
    }
    if (blas) dlclose(blas);
}

int main(void) {
    rng_seed(14);
    folo_log_set_level(FOLO_LOG_ERROR);
    folo_error err = {{0}};
    const folo_linalg *la = folo_linalg_get(&err);
    CHECK_MSG(la != NULL, "%s", err.message);
    if (la) {
        test_diagonal_hessian_is_rtn(la);
        test_dead_column(la);
        test_chunks_are_rows_alone(la);
        test_damping(la);
        test_relative_error(la);
        test_set_threads(la);
    }
    test_grid_corners();
    return check_summary("test_quant_solver");
}
