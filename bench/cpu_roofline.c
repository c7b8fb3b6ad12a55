/* The CPU's roofline and how close folo's kernels come to it.
 *
 * Measures, on 1 and on all threads (the thread pool the backend uses):
 *   - read bandwidth: a streaming sum over a buffer much larger than the
 *     caches (--mib, default 1024 MiB);
 *   - peak arithmetic from register-resident loops: f32 FMA (AVX2 and
 *     AVX-512) and the AVX512-BF16 dot product vdpbf16ps, when the CPU has
 *     them (FLOPs count a multiply-add as 2);
 *   - folo's matmul for each kernel table the CPU runs (kernels.h): the
 *     decode shape (one token against a bf16 weight matrix as large as the
 *     buffer above) as GB/s of weights, and the prefill shape (T tokens x
 *     [N, K] bf16) as GFLOP/s.
 * Prints a table, then one JSON line. Best of --repeat runs.
 *
 * usage: cpu_roofline [--mib N] [--repeat N] [--threads N] [--tokens T] */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/threadpool.h"
#include "core/timer.h"

/* Iterations of the register-resident peak loops, per thread. */
#define PEAK_ITERS 20000000L

/* ---- read bandwidth ------------------------------------------------------ */

typedef struct read_job {
    const uint64_t *buf; /* [n_words] */
    size_t n_words;
    uint64_t sums[64]; /* per thread, so the reads are not optimized away */
} read_job;

static void read_worker(void *ctx, int thread, int n_threads) {
    read_job *job = ctx;
    size_t begin, end;
    folo_split(job->n_words, 64, thread, n_threads, &begin, &end);
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = begin; i + 4 <= end; i += 4) {
        s0 += job->buf[i];
        s1 += job->buf[i + 1];
        s2 += job->buf[i + 2];
        s3 += job->buf[i + 3];
    }
    job->sums[thread] = s0 + s1 + s2 + s3;
}

/* ---- peak arithmetic ----------------------------------------------------- */

/* Each loop keeps 12 independent accumulators, more than FMA latency x
 * issue width, so it runs at the throughput of the instruction. */
__attribute__((target("avx2,fma"))) static float peak_fma256(long iters) {
    __m256 acc[12], a = _mm256_set1_ps(1.0000001f), b = _mm256_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float s = 0.0f;
    for (int i = 0; i < 12; i++) s += _mm256_cvtss_f32(acc[i]);
    return s;
}

__attribute__((target("avx512f"))) static float peak_fma512(long iters) {
    __m512 acc[12], a = _mm512_set1_ps(1.0000001f), b = _mm512_set1_ps(0.9999999f);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    float s = 0.0f;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
    return s;
}

__attribute__((target("avx512f,avx512bf16"))) static float peak_bf16dot(long iters) {
    __m512 acc[12];
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00);
    for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    float s = 0.0f;
    for (int i = 0; i < 12; i++) s += _mm512_reduce_add_ps(acc[i]);
    return s;
}

enum { PEAK_FMA256, PEAK_FMA512, PEAK_BF16DOT, PEAK_COUNT };
static const char *const k_peak_names[PEAK_COUNT] = {"f32 FMA (AVX2)", "f32 FMA (AVX-512)",
                                                     "vdpbf16ps (AVX512-BF16)"};
/* FLOPs per instruction: lanes x 2, and x 2 again for the bf16 pairs. */
static const double k_peak_flops[PEAK_COUNT] = {16.0, 32.0, 64.0};

typedef struct peak_job {
    int kind;
    float sink[64];
} peak_job;

static void peak_worker(void *ctx, int thread, int n_threads) {
    peak_job *job = ctx;
    switch (job->kind) {
    case PEAK_FMA256: job->sink[thread] = peak_fma256(PEAK_ITERS); break;
    case PEAK_FMA512: job->sink[thread] = peak_fma512(PEAK_ITERS); break;
    default: job->sink[thread] = peak_bf16dot(PEAK_ITERS); break;
    }
}

static int peak_supported(int kind) {
    __builtin_cpu_init();
    switch (kind) {
    case PEAK_FMA256: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case PEAK_FMA512: return __builtin_cpu_supports("avx512f");
    default: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    }
}

/* ---- folo's matmul --------------------------------------------------------- */

typedef struct matmul_job {
    const folo_cpu_kernels *k;
    float *y;       /* [T, N] */
    const float *x; /* [T, K] */
    const uint16_t *w; /* [N, K] bf16 */
    int T, K, N;
    float *rows_f32; /* [threads, scratch] */
    size_t scratch;  /* floats of rows_f32 per thread */
} matmul_job;

static void matmul_worker(void *ctx, int thread, int n_threads) {
    matmul_job *job = ctx;
    size_t begin, end;
    folo_split((size_t)job->N, FOLO_CPU_MATMUL_ROWS, thread, n_threads, &begin, &end);
    if (begin < end)
        job->k->matmul(job->y, (size_t)job->N, job->x, job->T, job->K, job->w, FOLO_DTYPE_BF16,
                       (int)begin, (int)end,
                       job->rows_f32 + (size_t)thread * job->scratch);
}

/* Best seconds of `repeat` runs of fn over the pool. */
static double best_of(folo_pool *pool, folo_pool_fn fn, void *ctx, int repeat) {
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double t0 = folo_now_s();
        folo_pool_run(pool, fn, ctx);
        double dt = folo_now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    size_t mib = 1024;
    int repeat = 3, max_threads = 0, prefill_tokens = 512;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mib")) mib = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) max_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) prefill_tokens = atoi(argv[i + 1]);
        else {
            fprintf(stderr,
                    "usage: cpu_roofline [--mib N] [--repeat N] [--threads N] [--tokens T]\n");
            return 2;
        }
    }
    folo_pool *all = folo_pool_create(max_threads);
    folo_pool *one = folo_pool_create(1);
    int n_all = folo_pool_size(all);
    folo_pool *pools[2] = {one, all};
    size_t bytes = mib << 20;
    uint16_t *buf = folo_alloc_large(bytes);
    if (!buf) {
        fprintf(stderr, "cpu_roofline: cannot allocate %zu MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < bytes / 2; i++)
        buf[i] = folo_f32_to_bf16((float)(i % 17) * 0.01f - 0.08f);

    printf("%-40s %10s %10s\n", "measure", "1 thread", "all");
    char json[4096];
    int jn = snprintf(json, sizeof json, "{\"threads\":%d", n_all);

    double gbs[2];
    read_job rj = {.buf = (const uint64_t *)buf, .n_words = bytes / 8};
    for (int p = 0; p < 2; p++) gbs[p] = bytes / best_of(pools[p], read_worker, &rj, repeat) / 1e9;
    printf("%-40s %8.1f GB/s %6.1f GB/s\n", "read bandwidth", gbs[0], gbs[1]);
    jn += snprintf(json + jn, sizeof json - jn, ",\"read_gbs\":[%.2f,%.2f]", gbs[0], gbs[1]);

    for (int kind = 0; kind < PEAK_COUNT; kind++) {
        if (!peak_supported(kind)) continue;
        peak_job pj = {.kind = kind};
        double gf[2];
        for (int p = 0; p < 2; p++) {
            double s = best_of(pools[p], peak_worker, &pj, repeat);
            gf[p] = (double)PEAK_ITERS * 12 * k_peak_flops[kind] * folo_pool_size(pools[p]) / s /
                    1e9;
        }
        printf("%-40s %6.0f GFLOP/s %6.0f GFLOP/s\n", k_peak_names[kind], gf[0], gf[1]);
        jn += snprintf(json + jn, sizeof json - jn, ",\"peak_gflops_%d\":[%.1f,%.1f]", kind, gf[0],
                       gf[1]);
    }

    /* Decode: one token against the whole buffer as a [N, 1024] matrix. */
    int K = 1024, N_decode = (int)(bytes / 2 / (size_t)K);
    int prefill_N = 3072;
    float *x = folo_alloc_large((size_t)prefill_tokens * K * sizeof(float));
    float *y = folo_alloc_large((size_t)(N_decode > prefill_tokens * prefill_N
                                             ? N_decode
                                             : prefill_tokens * prefill_N) *
                                sizeof(float));
    for (size_t i = 0; i < (size_t)prefill_tokens * K; i++) x[i] = (float)(i % 13) * 0.1f - 0.6f;
    for (int isa = 0; isa < FOLO_CPU_ISA_COUNT; isa++) {
        const folo_cpu_kernels *k = folo_cpu_kernels_for((folo_cpu_isa)isa);
        if (!k) continue;
        size_t scratch = k->matmul_scratch_floats(K);
        float *rows_f32 = folo_alloc_large((size_t)n_all * scratch * sizeof(float));
        matmul_job mj = {.k = k, .y = y, .x = x, .w = buf, .T = 1, .K = K, .N = N_decode,
                         .rows_f32 = rows_f32, .scratch = scratch};
        double r[2], g[2];
        for (int p = 0; p < 2; p++)
            r[p] = (double)N_decode * K * 2 / best_of(pools[p], matmul_worker, &mj, repeat) / 1e9;
        mj.T = prefill_tokens;
        mj.N = prefill_N;
        double flops = 2.0 * prefill_tokens * K * prefill_N;
        for (int p = 0; p < 2; p++)
            g[p] = flops / best_of(pools[p], matmul_worker, &mj, repeat) / 1e9;
        char label[64];
        snprintf(label, sizeof label, "matmul %s decode (bf16 weights)", k->name);
        printf("%-40s %8.1f GB/s %6.1f GB/s\n", label, r[0], r[1]);
        snprintf(label, sizeof label, "matmul %s %d x [%d, %d]", k->name, prefill_tokens,
                 prefill_N, K);
        printf("%-40s %6.0f GFLOP/s %6.0f GFLOP/s\n", label, g[0], g[1]);
        jn += snprintf(json + jn, sizeof json - jn,
                       ",\"%s\":{\"decode_gbs\":[%.2f,%.2f],\"prefill_gflops\":[%.1f,%.1f]}",
                       k->name, r[0], r[1], g[0], g[1]);
        folo_free_large(rows_f32);
    }
    printf("%s}\n", json);
    folo_free_large(x);
    folo_free_large(y);
    folo_free_large(buf);
    folo_pool_destroy(one);
    folo_pool_destroy(all);
    return 0;
}
