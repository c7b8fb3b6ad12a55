/* The CPU kernels against naive double-precision twins, on random data and
 * shapes with odd sizes and tails: matmul for every weight dtype (and the
 * promise that a token's result does not depend on its batch), rmsnorm,
 * RoPE, SiLU·up, residual add, and the online-softmax paged attention
 * against attention with a materialized, causally masked score matrix over
 * a multi-sequence batch with shuffled (non-contiguous) block tables. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "check.h"
#include "test_random.h"
#include "core/dtype.h"

/* ---- matmul ------------------------------------------------------------------- */

static void test_matmul_shape(folo_dtype dtype, int T, int K, int N) {
    float *x = malloc(sizeof(float) * T * K);        /* [T, K] */
    float *w_src = malloc(sizeof(float) * N * K);    /* [N, K] */
    float *w_stored = malloc(sizeof(float) * N * K); /* [N, K] as the kernel sees it */
    void *w = malloc(sizeof(float) * N * K);         /* [N, K] in dtype */
    float *y = malloc(sizeof(float) * T * N);        /* [T, N] */
    float *y_one = malloc(sizeof(float) * N);        /* [1, N] */
    float *rows = malloc(sizeof(float) * folo_cpu_matmul_scratch_floats(K));
    fill_random(x, (size_t)T * K, 1.0f);
    fill_random(w_src, (size_t)N * K, 0.5f);
    store_weights(dtype, w_src, w, w_stored, (size_t)N * K);

    /* Rows [lo, hi) only: the columns outside must stay untouched. */
    int lo = N > 2 ? 1 : 0, hi = N > 3 ? N - 1 : N;
    for (int i = 0; i < T * N; i++) y[i] = 12345.0f;
    folo_cpu_matmul(y, (size_t)N, x, T, K, w, dtype, lo, hi, rows);

    double worst = 0.0;
    int untouched = 1;
    for (int t = 0; t < T; t++) {
        for (int n = 0; n < N; n++) {
            float got = y[(size_t)t * N + n];
            if (n < lo || n >= hi) {
                untouched &= got == 12345.0f;
                continue;
            }
            double ref = 0.0, mag = 0.0;
            for (int k = 0; k < K; k++) {
                double p = (double)x[(size_t)t * K + k] * w_stored[(size_t)n * K + k];
                ref += p;
                mag += fabs(p);
            }
            double err = fabs(got - ref) / (mag + 1e-30);
            if (err > worst) worst = err;
        }
    }
    CHECK_MSG(worst <= 2e-6, "matmul %s T=%d K=%d N=%d: relative error %g", folo_dtype_name(dtype),
              T, K, N, worst);
    CHECK_MSG(untouched, "matmul %s T=%d K=%d N=%d wrote outside its rows", folo_dtype_name(dtype),
              T, K, N);

    /* A token alone gives bit-for-bit the row it got inside the batch. */
    int same = 1;
    for (int t = 0; t < T; t++) {
        folo_cpu_matmul(y_one, (size_t)N, x + (size_t)t * K, 1, K, w, dtype, lo, hi, rows);
        same &= memcmp(y_one + lo, y + (size_t)t * N + lo, sizeof(float) * (size_t)(hi - lo)) == 0;
    }
    CHECK_MSG(same, "matmul %s T=%d K=%d N=%d: a token alone differs from the batch",
              folo_dtype_name(dtype), T, K, N);
    free(x), free(w_src), free(w_stored), free(w), free(y), free(y_one), free(rows);
}

static void test_matmul(void) {
    static const int shapes[][3] = {
        {1, 1, 1},    {1, 8, 4},   {2, 37, 9},   {3, 64, 13},
        {5, 131, 22}, {7, 200, 7}, {16, 96, 33}, {4, 1029, 6},
    };
    folo_dtype dtypes[] = {FOLO_DTYPE_F32, FOLO_DTYPE_BF16, FOLO_DTYPE_F16};
    for (size_t d = 0; d < 3; d++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            test_matmul_shape(dtypes[d], shapes[s][0], shapes[s][1], shapes[s][2]);
        for (int i = 0; i < 8; i++)
            test_matmul_shape(dtypes[d], 1 + rng_int(9), 1 + rng_int(300), 1 + rng_int(40));
    }
}

/* ---- rmsnorm, RoPE, elementwise ---------------------------------------------------- */

static void test_rmsnorm(void) {
    int sizes[] = {1, 7, 64, 1023};
    for (size_t s = 0; s < 4; s++) {
        int n = sizes[s];
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n),
              *out = malloc(sizeof(float) * n);
        fill_random(x, (size_t)n, 3.0f);
        fill_random(w, (size_t)n, 2.0f);
        folo_cpu_rmsnorm(out, x, w, n, 1e-6f);
        double ss = 0.0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        double inv = 1.0 / sqrt(ss / n + 1e-6);
        double worst = 0.0;
        for (int i = 0; i < n; i++) {
            double ref = w[i] * x[i] * inv;
            double err = fabs(out[i] - ref) / (fabs(ref) + 1e-6);
            if (err > worst) worst = err;
        }
        CHECK_MSG(worst <= 1e-6, "rmsnorm n=%d: relative error %g", n, worst);
        /* In place gives the same. */
        folo_cpu_rmsnorm(x, x, w, n, 1e-6f);
        CHECK(memcmp(x, out, sizeof(float) * n) == 0);
        free(x), free(w), free(out);
    }
}

static void test_rope(void) {
    int dims[] = {2, 10, 64, 128};
    int positions[] = {0, 1, 17, 1000, 40959};
    for (size_t d = 0; d < 4; d++) {
        int D = dims[d], half = D / 2, n_heads = 3;
        float inv_freq[64], cos_half[64], sin_half[64];
        folo_cpu_rope_inv_freq(inv_freq, D, 1e6);
        double worst_freq = 0.0;
        for (int i = 0; i < half; i++) {
            double ref = 1.0 / pow(1e6, 2.0 * i / D);
            double err = fabs(inv_freq[i] - ref) / ref;
            if (err > worst_freq) worst_freq = err;
        }
        /* The f32 exponent alone moves theta^e by up to ln(theta)·e·2^-24. */
        CHECK_MSG(worst_freq <= 1.5e-6, "rope inv_freq D=%d: relative error %g", D, worst_freq);
        for (size_t p = 0; p < 5; p++) {
            int pos = positions[p];
            float vec[3 * 128], orig[3 * 128];
            fill_random(orig, (size_t)n_heads * D, 2.0f);
            memcpy(vec, orig, sizeof(float) * n_heads * D);
            folo_cpu_rope_cos_sin(cos_half, sin_half, pos, inv_freq, half);
            folo_cpu_rope(vec, n_heads, D, cos_half, sin_half);
            double worst = 0.0;
            for (int h = 0; h < n_heads; h++) {
                for (int i = 0; i < half; i++) {
                    /* The angle is the f32 product (as transformers rounds it);
                     * its cos/sin and the rotation are exact here. */
                    double angle = (double)((float)pos * inv_freq[i]);
                    double a = orig[h * D + i], b = orig[h * D + i + half];
                    double r0 = a * cos(angle) - b * sin(angle);
                    double r1 = b * cos(angle) + a * sin(angle);
                    double e0 = fabs(vec[h * D + i] - r0), e1 = fabs(vec[h * D + i + half] - r1);
                    if (e0 > worst) worst = e0;
                    if (e1 > worst) worst = e1;
                }
            }
            CHECK_MSG(worst <= 2e-6, "rope D=%d pos=%d: error %g", D, pos, worst);
        }
    }
}

static void test_elementwise(void) {
    size_t n = 1003;
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n),
          *g0 = malloc(sizeof(float) * n);
    fill_random(g, n, 12.0f);
    fill_random(u, n, 3.0f);
    memcpy(g0, g, sizeof(float) * n);
    folo_cpu_silu_mul(g, u, n);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double ref = g0[i] / (1.0 + exp(-(double)g0[i])) * u[i];
        double err = fabs(g[i] - ref) / (fabs(ref) + 1e-6);
        if (err > worst) worst = err;
    }
    CHECK_MSG(worst <= 1e-6, "silu_mul: relative error %g", worst);

    memcpy(g, g0, sizeof(float) * n);
    folo_cpu_add(g, u, n);
    int exact = 1;
    for (size_t i = 0; i < n; i++) exact &= g[i] == g0[i] + u[i];
    CHECK(exact);
    free(g), free(u), free(g0);
}

/* ---- paged attention -------------------------------------------------------------------- */

/* Row of position p, kv head kvh in a layer's cache [n_blocks, Hkv,
 * block_size, D]. */
static size_t kv_row(const int32_t *table, int p, int block_size, int Hkv, int kvh) {
    return ((size_t)table[p / block_size] * Hkv + kvh) * block_size + p % block_size;
}

/* Three sequences share a pool whose blocks are handed out in a shuffled
 * order; each has a few new query tokens at the end of its context (one
 * decoding, two in prefill). Every (query, head) is compared with softmax
 * over a materialized score row, in double. */
static void test_attention_case(int block_size, int Hq, int Hkv, int D, float q_scale) {
    enum { N_SEQS = 3 };
    int seq_lens[N_SEQS] = {1 + rng_int(3), 33 + rng_int(20), 70 + rng_int(40)};
    int n_new[N_SEQS] = {1, 5, 9};
    int max_blocks = 0, used_blocks = 0;
    for (int s = 0; s < N_SEQS; s++) {
        int nb = (seq_lens[s] + block_size - 1) / block_size;
        if (nb > max_blocks) max_blocks = nb;
        used_blocks += nb;
        if (n_new[s] > seq_lens[s]) n_new[s] = seq_lens[s];
    }
    int n_blocks = used_blocks + 5; /* spare blocks hold junk nobody may read */
    int *perm = malloc(sizeof(int) * n_blocks);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = rng_int(i + 1), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    int32_t *tables =
        calloc((size_t)N_SEQS * max_blocks, sizeof(int32_t)); /* [N_SEQS, max_blocks] */
    int next = 0;
    for (int s = 0; s < N_SEQS; s++)
        for (int blk = 0; blk < (seq_lens[s] + block_size - 1) / block_size; blk++)
            tables[s * max_blocks + blk] = perm[next++];

    size_t cache_floats = (size_t)n_blocks * Hkv * block_size * D;
    float *k_cache = malloc(sizeof(float) * cache_floats); /* [n_blocks, Hkv, block_size, D] */
    float *v_cache = malloc(sizeof(float) * cache_floats); /* [n_blocks, Hkv, block_size, D] */
    fill_random(k_cache, cache_floats, 1.0f);
    fill_random(v_cache, cache_floats, 1.0f);
    float scale = 1.0f / sqrtf((float)D);
    int group = Hq / Hkv;

    double worst = 0.0;
    for (int s = 0; s < N_SEQS; s++) {
        int len = seq_lens[s], first = len - n_new[s];
        const int32_t *table = tables + s * max_blocks;
        float *q = malloc(sizeof(float) * n_new[s] * Hq * D);    /* [n_new, Hq, D] */
        float *out = malloc(sizeof(float) * n_new[s] * Hq * D);  /* [n_new, Hq, D] */
        double *score = malloc(sizeof(double) * n_new[s] * len); /* [n_new, len] */
        fill_random(q, (size_t)n_new[s] * Hq * D, q_scale);
        for (int head = 0; head < Hq; head++) {
            int kvh = head / group;
            for (int i = 0; i < n_new[s]; i++) {
                size_t off = ((size_t)i * Hq + head) * D;
                folo_cpu_attention(out + off, q + off, k_cache, v_cache, FOLO_DTYPE_F32, table,
                                   first + i + 1,
                                   block_size, Hkv, kvh, D, scale);
            }
            /* The naive twin: scores for every (query, key), masked causally. */
            for (int i = 0; i < n_new[s]; i++) {
                for (int p = 0; p < len; p++) {
                    const float *k = k_cache + kv_row(table, p, block_size, Hkv, kvh) * D;
                    double dot = 0.0;
                    for (int d = 0; d < D; d++)
                        dot += (double)q[((size_t)i * Hq + head) * D + d] * k[d];
                    score[(size_t)i * len + p] = p <= first + i ? dot * scale : -INFINITY;
                }
            }
            for (int i = 0; i < n_new[s]; i++) {
                double *row = score + (size_t)i * len, mx = -INFINITY, sum = 0.0;
                for (int p = 0; p < len; p++) mx = row[p] > mx ? row[p] : mx;
                for (int p = 0; p < len; p++) sum += row[p] = exp(row[p] - mx);
                for (int d = 0; d < D; d++) {
                    double ref = 0.0;
                    for (int p = 0; p < len; p++) {
                        size_t r = kv_row(table, p, block_size, Hkv, kvh);
                        ref += row[p] / sum * v_cache[r * D + d];
                    }
                    double err = fabs(out[((size_t)i * Hq + head) * D + d] - ref);
                    if (err > worst) worst = err;
                }
            }
        }
        free(q), free(out), free(score);
    }
    /* f32 scores carry an error proportional to their size, and softmax
     * passes it on: the bound grows with q_scale. */
    CHECK_MSG(worst <= 1e-6 * (1.0 + q_scale),
              "attention bs=%d Hq=%d Hkv=%d D=%d q_scale=%g: error %g", block_size, Hq, Hkv, D,
              q_scale, worst);
    free(perm), free(tables), free(k_cache), free(v_cache);
}

static void test_attention(void) {
    test_attention_case(4, 6, 2, 20, 1.0f);
    test_attention_case(16, 4, 4, 64, 1.0f);
    test_attention_case(5, 8, 1, 13, 1.0f);
    /* Large scores: the online softmax must rescale without overflow. */
    test_attention_case(3, 4, 2, 32, 40.0f);
}

int main(void) {
    rng_seed(0x9e3779b97f4a7c15ull);
    test_matmul();
    test_rmsnorm();
    test_rope();
    test_elementwise();
    test_attention();
    return check_summary("test_cpu_kernels");
}
