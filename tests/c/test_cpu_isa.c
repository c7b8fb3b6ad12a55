/* Every SIMD kernel table this CPU runs (kernels.h: avx2, avx512, amx) against
 * the portable kernels, on random data and shapes with odd sizes and tails:
 *   - matmul for every weight dtype, on token counts on both sides of the
 *     register tile, the decode path and the token blocks, only inside the
 *     rows asked for, and a token alone bit-for-bit equal to its row in any
 *     batch (batch invariance within one table);
 *   - SiLU·up across the range where exp saturates;
 *   - grouped attention over shuffled block tables, each query of a group
 *     bit-for-bit equal to the query alone;
 * and the FOLO_CPU_ISA override. On a CPU without a SIMD table only the
 * override is checked. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "check.h"
#include "test_random.h"
#include "core/dtype.h"

/* ---- matmul ------------------------------------------------------------------- */

static void test_matmul_shape(const folo_cpu_kernels *k, folo_dtype dtype, int T, int K, int N) {
    float *x = malloc(sizeof(float) * T * K);        /* [T, K] */
    float *w_src = malloc(sizeof(float) * N * K);    /* [N, K] */
    float *w_stored = malloc(sizeof(float) * N * K); /* [N, K] as the kernels see it */
    void *w = malloc(sizeof(float) * N * K);         /* [N, K] in dtype */
    float *y = malloc(sizeof(float) * T * N);        /* [T, N] SIMD */
    float *y_ref = malloc(sizeof(float) * T * N);    /* [T, N] portable */
    float *y_one = malloc(sizeof(float) * N);        /* [1, N] */
    float *rows = malloc(sizeof(float) * k->matmul_scratch_floats(K));
    float *rows_ref = malloc(sizeof(float) * folo_cpu_matmul_scratch_floats(K));
    fill_random(x, (size_t)T * K, 1.0f);
    fill_random(w_src, (size_t)N * K, 0.5f);
    store_weights(dtype, w_src, w, w_stored, (size_t)N * K);

    /* Rows [lo, hi) only: the columns outside must stay untouched. */
    int lo = N > 2 ? 1 : 0, hi = N > 3 ? N - 1 : N;
    for (int i = 0; i < T * N; i++) y[i] = 12345.0f;
    k->matmul(y, (size_t)N, x, T, K, w, dtype, lo, hi, rows);
    folo_cpu_matmul(y_ref, (size_t)N, x, T, K, w, dtype, lo, hi, rows_ref);

    double worst = 0.0;
    int untouched = 1;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            float got = y[(size_t)t * N + n];
            if (n < lo || n >= hi) {
                untouched &= got == 12345.0f;
                continue;
            }
            /* Both sum in f32 in different orders: compare to the sum of
             * magnitudes, which bounds either one's rounding. */
            double mag = 0.0;
            for (int kk = 0; kk < K; kk++)
                mag += fabs((double)x[(size_t)t * K + kk] * w_stored[(size_t)n * K + kk]);
            double err = fabs((double)got - y_ref[(size_t)t * N + n]) / (mag + 1e-30);
            if (!(err <= worst)) worst = err;
        }
    }
    /* AMX multiplies each activation as two bf16 halves (kernels_amx.c),
     * exact to 2^-18 of it, on top of the f32 sums: a looser bound there. */
    double limit = strcmp(k->name, "amx") == 0 && dtype == FOLO_DTYPE_BF16 ? 1.0 / (1 << 17) : 2e-6;
    CHECK_MSG(worst <= limit, "%s matmul %s T=%d K=%d N=%d: relative difference %g from portable",
              k->name, folo_dtype_name(dtype), T, K, N, worst);
    CHECK_MSG(untouched, "%s matmul %s T=%d K=%d N=%d wrote outside its rows", k->name,
              folo_dtype_name(dtype), T, K, N);

    /* A token alone gives bit-for-bit the row it got inside the batch. */
    int same = 1;
    for (int t = 0; t < T; t++) {
        k->matmul(y_one, (size_t)N, x + (size_t)t * K, 1, K, w, dtype, lo, hi, rows);
        same &= memcmp(y_one + lo, y + (size_t)t * N + lo, sizeof(float) * (size_t)(hi - lo)) == 0;
    }
    CHECK_MSG(same, "%s matmul %s T=%d K=%d N=%d: a token alone differs from the batch", k->name,
              folo_dtype_name(dtype), T, K, N);
    free(x), free(w_src), free(w_stored), free(w), free(y), free(y_ref), free(y_one), free(rows),
        free(rows_ref);
}

static void test_matmul(const folo_cpu_kernels *k) {
    /* Token counts around the tiles (2 and 6 tokens) and around the last
     * count whose bf16 weights are widened in registers (12 in
     * kernels_avx512.c) rather than packed; K around the vector widths (8,
     * 16) and, with 3001, token blocks of fewer tokens than the batch.
     * Multiples of 32 in K take the AMX products (kernels_amx.c): 16 rows x
     * up to 16 tokens (one token without transposes), 32 rows x 2 x 16
     * tokens, and their tails in rows and tokens; 300 tokens at K = 32, and
     * 70 at K = 3072, span two blocks. */
    static const int shapes[][3] = {
        {1, 1, 1},    {1, 16, 4},  {2, 17, 9},   {3, 64, 13},  {5, 131, 22},
        {6, 200, 7},  {7, 15, 33}, {12, 96, 5},  {13, 1029, 6}, {37, 3001, 9},
        {1, 1029, 37}, {4, 7, 3},  {64, 33, 11},
        {1, 64, 130},  {16, 96, 70}, {40, 128, 67}, {33, 32, 100}, {300, 32, 35},
        {70, 3072, 19}, {5, 1024, 66},
    };
    folo_dtype dtypes[] = {FOLO_DTYPE_F32, FOLO_DTYPE_BF16, FOLO_DTYPE_F16};
    for (size_t d = 0; d < 3; d++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            test_matmul_shape(k, dtypes[d], shapes[s][0], shapes[s][1], shapes[s][2]);
        for (int i = 0; i < 10; i++)
            test_matmul_shape(k, dtypes[d], 1 + rng_int(20), 1 + rng_int(400), 1 + rng_int(40));
    }
}

/* ---- SiLU ------------------------------------------------------------------------ */

/* silu(g) · u against the portable kernel, on gates from -120 to 120 (exp
 * saturating both ways) and lengths with tails. */
static void test_silu(const folo_cpu_kernels *k) {
    size_t sizes[] = {1, 15, 16, 17, 1003};
    for (size_t s = 0; s < 5; s++) {
        size_t n = sizes[s];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n),
              *ref = malloc(sizeof(float) * n);
        fill_random(g, n, 12.0f);
        fill_random(u, n, 3.0f);
        g[0] = n > 1 ? -120.0f : 120.0f;
        memcpy(ref, g, sizeof(float) * n);
        folo_cpu_silu_mul(ref, u, n);
        k->silu_mul(g, u, n);
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            double err = fabs((double)g[i] - ref[i]) / (fabs((double)ref[i]) + 1e-6);
            if (!(err <= worst)) worst = err;
        }
        CHECK_MSG(worst <= 2e-6, "%s silu_mul n=%zu: relative difference %g from portable",
                  k->name, n, worst);
        free(g), free(u), free(ref);
    }
}

/* ---- grouped attention ------------------------------------------------------- */

/* One sequence of n_ctx positions in a pool with shuffled blocks; a group
 * of queries (heads x trailing tokens) against the portable kernel, and
 * each query against itself alone. */
static void test_attention_case(const folo_cpu_kernels *k, int block_size, int Hkv, int D,
                                int n_ctx, int n_queries, float q_scale) {
    int n_blocks = (n_ctx + block_size - 1) / block_size + 3;
    int32_t *table = malloc(sizeof(int32_t) * n_blocks); /* [n_blocks] shuffled */
    for (int i = 0; i < n_blocks; i++) table[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = rng_int(i + 1);
        int32_t tmp = table[i];
        table[i] = table[j], table[j] = tmp;
    }
    size_t cache_floats = (size_t)n_blocks * Hkv * block_size * D;
    float *k_cache = malloc(sizeof(float) * cache_floats); /* [n_blocks, Hkv, block_size, D] */
    float *v_cache = malloc(sizeof(float) * cache_floats); /* [n_blocks, Hkv, block_size, D] */
    fill_random(k_cache, cache_floats, 1.0f);
    fill_random(v_cache, cache_floats, 1.0f);
    float *q_buf = malloc(sizeof(float) * n_queries * D);     /* [n_queries, D] */
    float *out_buf = malloc(sizeof(float) * n_queries * D);   /* [n_queries, D] */
    float *ref_buf = malloc(sizeof(float) * n_queries * D);   /* [n_queries, D] */
    float *alone = malloc(sizeof(float) * D);                 /* [D] */
    fill_random(q_buf, (size_t)n_queries * D, q_scale);
    float *out[FOLO_CPU_ATTN_QUERIES];
    const float *q[FOLO_CPU_ATTN_QUERIES];
    int ctx[FOLO_CPU_ATTN_QUERIES];
    for (int i = 0; i < n_queries; i++) {
        out[i] = out_buf + (size_t)i * D;
        q[i] = q_buf + (size_t)i * D;
        /* Two heads per token; tokens count back from the last position. */
        ctx[i] = n_ctx - (n_queries - 1 - i) / 2;
        if (ctx[i] < 1) ctx[i] = 1;
    }
    int kv_head = Hkv - 1;
    float scale = 1.0f / sqrtf((float)D);
    k->attention_group(out, q, ctx, n_queries, k_cache, v_cache, table, block_size, Hkv, kv_head,
                       D, scale);
    double worst = 0.0;
    int same = 1;
    for (int i = 0; i < n_queries; i++) {
        folo_cpu_attention(ref_buf + (size_t)i * D, q[i], k_cache, v_cache, table, ctx[i],
                           block_size, Hkv, kv_head, D, scale);
        for (int d = 0; d < D; d++) {
            double err = fabs((double)out[i][d] - ref_buf[(size_t)i * D + d]);
            if (!(err <= worst)) worst = err;
        }
        float *one[1] = {alone};
        k->attention_group(one, &q[i], &ctx[i], 1, k_cache, v_cache, table, block_size, Hkv,
                           kv_head, D, scale);
        same &= memcmp(alone, out[i], sizeof(float) * D) == 0;
    }
    CHECK_MSG(worst <= 2e-6 * (1.0 + q_scale),
              "%s attention bs=%d Hkv=%d D=%d ctx=%d queries=%d: difference %g from portable",
              k->name, block_size, Hkv, D, n_ctx, n_queries, worst);
    CHECK_MSG(same, "%s attention bs=%d D=%d ctx=%d queries=%d: a query alone differs", k->name,
              block_size, D, n_ctx, n_queries);
    free(table), free(k_cache), free(v_cache), free(q_buf), free(out_buf), free(ref_buf),
        free(alone);
}

static void test_attention(const folo_cpu_kernels *k) {
    test_attention_case(k, 4, 2, 20, 1, 1, 1.0f);
    test_attention_case(k, 16, 8, 128, 300, 32, 1.0f);
    test_attention_case(k, 5, 1, 13, 77, 7, 1.0f);
    test_attention_case(k, 3, 2, 33, 64, 4, 1.0f);
    test_attention_case(k, 16, 4, 64, 33, 2, 1.0f);
    /* Large scores: the online softmax must rescale without overflow. */
    test_attention_case(k, 7, 2, 32, 150, 9, 40.0f);
    for (int i = 0; i < 6; i++)
        test_attention_case(k, 1 + rng_int(16), 1 + rng_int(4), 1 + rng_int(200),
                            1 + rng_int(200), 1 + rng_int(FOLO_CPU_ATTN_QUERIES), 1.0f);
}

/* ---- selection ----------------------------------------------------------------- */

static void test_select(void) {
    folo_error err = {{0}};
    setenv("FOLO_CPU_ISA", "portable", 1);
    const folo_cpu_kernels *k = folo_cpu_kernels_select(&err);
    CHECK(k && strcmp(k->name, "portable") == 0);
    setenv("FOLO_CPU_ISA", "sse9", 1);
    CHECK(folo_cpu_kernels_select(&err) == NULL);
    CHECK_MSG(strstr(err.message, "FOLO_CPU_ISA") != NULL, "%s", err.message);
    unsetenv("FOLO_CPU_ISA");
    k = folo_cpu_kernels_select(&err);
    CHECK(k != NULL);
    /* With no override the widest table the CPU runs is chosen. */
    for (int isa = FOLO_CPU_ISA_COUNT - 1; isa >= 0; isa--) {
        const folo_cpu_kernels *best = folo_cpu_kernels_for((folo_cpu_isa)isa);
        if (best) {
            CHECK_MSG(k == best, "selected %s, widest available %s", k ? k->name : "none",
                      best->name);
            break;
        }
    }
}

int main(void) {
    rng_seed(0x2545f4914f6cdd1dull);
    for (int isa = FOLO_CPU_ISA_PORTABLE + 1; isa < FOLO_CPU_ISA_COUNT; isa++) {
        const folo_cpu_kernels *k = folo_cpu_kernels_for((folo_cpu_isa)isa);
        if (!k) continue;
        test_matmul(k);
        test_silu(k);
        test_attention(k);
    }
    test_select();
    return check_summary("test_cpu_isa");
}
