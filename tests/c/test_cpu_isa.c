/* Every SIMD kernel table this CPU runs (kernels.h: avx2, avx512,
 * avx512bf16, amx) against the portable kernels, on random data and shapes
 * with odd sizes and tails:
 *   - matmul for every weight dtype, and matmul_bf16 (bf16-rounded
 *     activations) and matmul_bf16_panels (the same on row panels) where
 *     the table has them, on token counts on both sides of the register
 *     tile, the decode path and the token blocks, only inside the rows
 *     asked for, and a token alone bit-for-bit equal to its row in any
 *     batch (batch invariance within one table);
 *   - SiLU·up across the range where exp saturates; RMSNorm;
 *   - grouped attention (queries over one or more kv heads) over shuffled
 *     block tables, with f32 and bf16 caches, each query of a group
 *     bit-for-bit equal to the query alone;
 * and the FOLO_CPU_ISA override. On a CPU without a SIMD table only the
 * override is checked. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "check.h"
#include "test_random.h"
#include "core/dtype.h"

/* ---- matmul ------------------------------------------------------------------- */

typedef void (*matmul_fn)(float *y, size_t ldy, const float *x, int n_tokens, int K,
                          const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                          float *rows_f32);

typedef enum matmul_kind { MATMUL, MATMUL_BF16, MATMUL_BF16_PANELS } matmul_kind;

/* MATMUL_BF16: matmul_bf16 (activations rounded to bf16) against
 * folo_cpu_matmul_bf16; MATMUL_BF16_PANELS: matmul_bf16_panels on the
 * weights packed by folo_cpu_bf16_pack_panels, against the same; MATMUL:
 * matmul against folo_cpu_matmul. */
static void test_matmul_shape(const folo_cpu_kernels *k, folo_dtype dtype, int T, int K, int N,
                              matmul_kind kind) {
    static const char *const names[] = {"matmul", "matmul_bf16", "matmul_bf16_panels"};
    bool bf16x = kind != MATMUL;
    matmul_fn simd = kind == MATMUL_BF16_PANELS ? k->matmul_bf16_panels
                     : bf16x                    ? k->matmul_bf16
                                                : k->matmul;
    matmul_fn portable = bf16x ? folo_cpu_matmul_bf16 : folo_cpu_matmul;
    const char *name = names[kind];
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
    void *panels = NULL; /* [panels of N rows] what the SIMD kernel reads */
    if (kind == MATMUL_BF16_PANELS) {
        panels = malloc(folo_cpu_bf16_panels_bytes(N, K));
        folo_cpu_bf16_pack_panels(panels, w, N, K);
    }
    const void *w_simd = panels ? panels : w;

    /* Rows [lo, hi) only: the columns outside must stay untouched. Panels
     * start where a panel does. */
    int lo = kind == MATMUL_BF16_PANELS ? (N > FOLO_CPU_PANEL_ROWS + 8 ? FOLO_CPU_PANEL_ROWS : 0)
                                        : (N > 2 ? 1 : 0);
    int hi = N > 3 ? N - 1 : N;
    for (int i = 0; i < T * N; i++) y[i] = 12345.0f;
    simd(y, (size_t)N, x, T, K, w_simd, dtype, lo, hi, rows);
    portable(y_ref, (size_t)N, x, T, K, w, dtype, lo, hi, rows_ref);

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
            for (int kk = 0; kk < K; kk++) {
                float xk = x[(size_t)t * K + kk];
                if (bf16x) xk = folo_bf16_round(xk);
                mag += fabs((double)xk * w_stored[(size_t)n * K + kk]);
            }
            double err = fabs((double)got - y_ref[(size_t)t * N + n]) / (mag + 1e-30);
            if (!(err <= worst)) worst = err;
        }
    }
    /* AMX multiplies each activation as two bf16 halves (kernels_amx.c),
     * exact to 2^-18 of it, on top of the f32 sums: a looser bound there. */
    double limit = !bf16x && strcmp(k->name, "amx") == 0 && dtype == FOLO_DTYPE_BF16
                       ? 1.0 / (1 << 17)
                       : 2e-6;
    CHECK_MSG(worst <= limit, "%s %s %s T=%d K=%d N=%d: relative difference %g from portable",
              k->name, name, folo_dtype_name(dtype), T, K, N, worst);
    CHECK_MSG(untouched, "%s %s %s T=%d K=%d N=%d wrote outside its rows", k->name, name,
              folo_dtype_name(dtype), T, K, N);

    /* A token alone gives bit-for-bit the row it got inside the batch. */
    int same = 1;
    for (int t = 0; t < T; t++) {
        simd(y_one, (size_t)N, x + (size_t)t * K, 1, K, w_simd, dtype, lo, hi, rows);
        same &= memcmp(y_one + lo, y + (size_t)t * N + lo, sizeof(float) * (size_t)(hi - lo)) == 0;
    }
    CHECK_MSG(same, "%s %s %s T=%d K=%d N=%d: a token alone differs from the batch", k->name,
              name, folo_dtype_name(dtype), T, K, N);
    free(x), free(w_src), free(w_stored), free(w), free(y), free(y_ref), free(y_one), free(rows),
        free(rows_ref), free(panels);
}

/* The n listed {T, K, N} shapes, then 10 random ones of up to 20 tokens,
 * K up to 400 and N up to max_rows. */
static void test_matmul_shapes(const folo_cpu_kernels *k, folo_dtype dtype,
                               const int (*shapes)[3], size_t n, int max_rows,
                               matmul_kind kind) {
    for (size_t s = 0; s < n; s++)
        test_matmul_shape(k, dtype, shapes[s][0], shapes[s][1], shapes[s][2], kind);
    for (int i = 0; i < 10; i++)
        test_matmul_shape(k, dtype, 1 + rng_int(20), 1 + rng_int(400), 1 + rng_int(max_rows),
                          kind);
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
    for (size_t d = 0; d < 3; d++)
        test_matmul_shapes(k, dtypes[d], shapes, sizeof shapes / sizeof shapes[0], 40, MATMUL);
    /* matmul_bf16 on bf16 weights, the only ones the backend gives it
     * (kernels_avx512bf16.c: 32-element pairs, so K around 32 and 64 too);
     * a 512-token call spans two token blocks at K = 1024. */
    if (!k->matmul_bf16) return;
    static const int bf16_shapes[][3] = {{1, 31, 5}, {2, 32, 9}, {6, 33, 13}, {7, 64, 4},
                                         {13, 95, 22}, {1, 1024, 37}, {40, 1029, 9},
                                         {512, 1024, 6}, {97, 3072, 5}};
    test_matmul_shapes(k, FOLO_DTYPE_BF16, bf16_shapes, sizeof bf16_shapes / sizeof bf16_shapes[0],
                       40, MATMUL_BF16);
    /* matmul_bf16_panels (kernels_avx512bf16.c: 8-token tiles of 32-row
     * panels): token counts around 8, rows around a panel and in partial
     * panels, odd K (a half pair), K = 40 (the packer's last block of
     * pairs short in whole panels), the 4096-byte single-token prefetch, a
     * 300-token call over two token blocks at K = 1029. */
    if (!k->matmul_bf16_panels) return;
    static const int panel_shapes[][3] = {{1, 1, 1},     {1, 31, 5},    {2, 32, 32},
                                          {7, 33, 33},   {8, 64, 40},   {9, 95, 64},
                                          {16, 96, 70},  {17, 1024, 37}, {1, 3072, 100},
                                          {300, 1029, 41}, {97, 3072, 5}, {5, 40, 64}};
    test_matmul_shapes(k, FOLO_DTYPE_BF16, panel_shapes,
                       sizeof panel_shapes / sizeof panel_shapes[0], 80, MATMUL_BF16_PANELS);
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

/* RMSNorm in place and out of place, every length class of a register:
 * the double sum of squares makes the scale portable's to the last bit
 * here (a rounding tie between the two sums is all but impossible), so
 * the outputs must be equal. */
static void test_rmsnorm(const folo_cpu_kernels *k) {
    int sizes[] = {1, 15, 16, 17, 128, 1003, 1024};
    for (int s = 0; s < 7; s++) {
        int n = sizes[s];
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n),
              *out = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n);
        fill_random(x, (size_t)n, 30.0f);
        fill_random(w, (size_t)n, 2.0f);
        folo_cpu_rmsnorm(ref, x, w, n, 1e-6f);
        k->rmsnorm(out, x, w, n, 1e-6f);
        CHECK_MSG(memcmp(out, ref, sizeof(float) * n) == 0, "%s rmsnorm n=%d differs from portable",
                  k->name, n);
        k->rmsnorm(x, x, w, n, 1e-6f);
        CHECK_MSG(memcmp(x, ref, sizeof(float) * n) == 0, "%s rmsnorm n=%d in place differs",
                  k->name, n);
        free(x), free(w), free(out), free(ref);
    }
}

/* ---- grouped attention ------------------------------------------------------- */

/* One sequence of n_ctx positions in a pool with shuffled blocks; a group
 * of queries (heads x trailing tokens) against the portable kernel, and
 * each query against itself alone; a bf16 cache (kv_dtype) also portable's
 * result on it against an f32 cache of the same values, which differs only
 * by the rounding of the probabilities. */
static void test_attention_case(const folo_cpu_kernels *k, int block_size, int Hkv, int D,
                                int n_ctx, int n_queries, float q_scale, folo_dtype kv_dtype) {
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
    /* the same values as a bf16 cache, in its layout; the f32 copy rounded */
    uint16_t *k_bf16 = malloc(sizeof(uint16_t) * cache_floats);
    uint16_t *v_bf16 = malloc(sizeof(uint16_t) * cache_floats);
    for (size_t i = 0; i < cache_floats && kv_dtype == FOLO_DTYPE_BF16; i++) {
        k_cache[i] = folo_bf16_round(k_cache[i]);
        v_cache[i] = folo_bf16_round(v_cache[i]);
    }
    for (size_t row = 0; row * D < cache_floats && kv_dtype == FOLO_DTYPE_BF16; row++)
        folo_cpu_kv_store(k_bf16, v_bf16, FOLO_DTYPE_BF16, row, block_size, D,
                          k_cache + row * D, v_cache + row * D);
    const void *kc = kv_dtype == FOLO_DTYPE_BF16 ? (const void *)k_bf16 : k_cache;
    const void *vc = kv_dtype == FOLO_DTYPE_BF16 ? (const void *)v_bf16 : v_cache;
    float *q_buf = malloc(sizeof(float) * n_queries * D);     /* [n_queries, D] */
    float *out_buf = malloc(sizeof(float) * n_queries * D);   /* [n_queries, D] */
    float *ref_buf = malloc(sizeof(float) * n_queries * D);   /* [n_queries, D] */
    float *alone = malloc(sizeof(float) * D);                 /* [D] */
    fill_random(q_buf, (size_t)n_queries * D, q_scale);
    for (int i = 0; i < n_queries * D && kv_dtype == FOLO_DTYPE_BF16; i++)
        q_buf[i] = folo_bf16_round(q_buf[i]); /* as the backend rounds q */
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
    /* The queries in runs over n_heads kv heads, from the last one down. */
    int kv_head[FOLO_CPU_ATTN_QUERIES], n_heads = 1 + rng_int(Hkv);
    for (int i = 0; i < n_queries; i++) kv_head[i] = Hkv - 1 - i * n_heads / n_queries;
    float scale = 1.0f / sqrtf((float)D);
    k->attention_group(out, q, ctx, n_queries, kc, vc, kv_dtype, table, block_size, Hkv, kv_head,
                       D, scale);
    double worst = 0.0;
    int same = 1;
    double widened = 0.0; /* bf16 cache against its f32 copy, in units of max |v| */
    for (int i = 0; i < n_queries; i++) {
        folo_cpu_attention(ref_buf + (size_t)i * D, q[i], kc, vc, kv_dtype, table, ctx[i],
                           block_size, Hkv, kv_head[i], D, scale);
        if (kv_dtype == FOLO_DTYPE_BF16) {
            folo_cpu_attention(alone, q[i], k_cache, v_cache, FOLO_DTYPE_F32, table, ctx[i],
                               block_size, Hkv, kv_head[i], D, scale);
            for (int d = 0; d < D; d++) {
                double err = fabs((double)alone[d] - ref_buf[(size_t)i * D + d]);
                if (!(err <= widened)) widened = err;
            }
        }
        for (int d = 0; d < D; d++) {
            double err = fabs((double)out[i][d] - ref_buf[(size_t)i * D + d]);
            if (!(err <= worst)) worst = err;
        }
        float *one[1] = {alone};
        k->attention_group(one, &q[i], &ctx[i], 1, kc, vc, kv_dtype, table, block_size, Hkv,
                           &kv_head[i], D, scale);
        same &= memcmp(alone, out[i], sizeof(float) * D) == 0;
    }
    const char *kv = folo_dtype_name(kv_dtype);
    CHECK_MSG(worst <= 2e-6 * (1.0 + q_scale),
              "%s attention %s bs=%d Hkv=%d (%d read) D=%d ctx=%d queries=%d: difference %g from "
              "portable", k->name, kv, block_size, Hkv, n_heads, D, n_ctx, n_queries, worst);
    CHECK_MSG(same, "%s attention %s bs=%d D=%d ctx=%d queries=%d: a query alone differs",
              k->name, kv, block_size, D, n_ctx, n_queries);
    /* The bf16 path's only other rounding is P's, 2^-9 of each weight:
     * the output moves by at most that share of the largest value (1). */
    CHECK_MSG(widened <= 0x1p-9 + 1e-6, "portable attention bs=%d D=%d ctx=%d: a bf16 cache differs "
              "from its widened f32 copy by %g", block_size, D, n_ctx, widened);
    free(table), free(k_cache), free(v_cache), free(k_bf16), free(v_bf16), free(q_buf),
        free(out_buf), free(ref_buf), free(alone);
}

/* A bf16 cache only on tables with a bfloat16 mode (the backend gives it
 * to no other). */
/* f32: any block size and head_dim, tails everywhere; bf16 (on tables
 * with a bfloat16 mode): what the backend allows it, block sizes multiples
 * of 16 and an even head_dim, with tails of registers, tiles and blocks. */
static void test_attention(const folo_cpu_kernels *k) {
    static const struct {
        int block_size, n_kv_heads, head_dim, n_ctx, n_queries;
        float q_scale; /* 40: large scores, which the online softmax must rescale */
    } cases[2][6] = {
        {{4, 2, 20, 1, 1, 1}, {16, 8, 128, 300, 32, 1}, {5, 1, 13, 77, 7, 1},
         {3, 2, 33, 64, 4, 1}, {16, 4, 64, 33, 2, 1}, {7, 2, 32, 150, 9, 40}},
        {{16, 2, 20, 1, 1, 1}, {16, 8, 128, 300, 32, 1}, {32, 1, 14, 77, 7, 1},
         {48, 2, 34, 64, 4, 1}, {16, 4, 64, 33, 2, 1}, {16, 2, 32, 150, 9, 40}},
    };
    folo_dtype kv_dtypes[2] = {FOLO_DTYPE_F32, FOLO_DTYPE_BF16};
    for (int t = 0; t < (k->matmul_bf16 ? 2 : 1); t++) {
        for (int c = 0; c < 6; c++)
            test_attention_case(k, cases[t][c].block_size, cases[t][c].n_kv_heads,
                                cases[t][c].head_dim, cases[t][c].n_ctx, cases[t][c].n_queries,
                                cases[t][c].q_scale, kv_dtypes[t]);
        for (int i = 0; i < 6; i++) {
            int block_size = 1 + rng_int(16), head_dim = 1 + rng_int(200);
            if (kv_dtypes[t] == FOLO_DTYPE_BF16)
                block_size *= FOLO_CPU_KV_BF16_BLOCK, head_dim = 2 * (1 + rng_int(100));
            test_attention_case(k, block_size, 1 + rng_int(4), head_dim, 1 + rng_int(200),
                                1 + rng_int(FOLO_CPU_ATTN_QUERIES), 1.0f, kv_dtypes[t]);
        }
    }
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
        test_rmsnorm(k);
        test_attention(k);
    }
    test_select();
    return check_summary("test_cpu_isa");
}
