/* The local CPU's roofline, measured on the spot (see cpu_peak.h). */
#include "bench/cpu_peak.h"

#include <stdint.h>

#include "backend/cpu/kernels.h"
#include "core/timer.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

const char *const folo_bench_peak_names[FOLO_BENCH_PEAK_COUNT] = {
    "f32 FMA (AVX2)", "f32 FMA (AVX-512)", "vdpbf16ps (AVX512-BF16)", "tdpbf16ps (AMX-BF16)"};
/* FLOPs per instruction: lanes x 2, and x 2 again for the bf16 pairs; a
 * tile product is 16 x 16 x 32 multiply-adds. */
static const double k_peak_flops[FOLO_BENCH_PEAK_COUNT] = {16.0, 32.0, 64.0, 16384.0};
/* A tile product takes ~16 cycles where the vector loops take ~0.5: its loop
 * runs this many times fewer iterations, for about the same time. */
static const long k_iter_div[FOLO_BENCH_PEAK_COUNT] = {1, 1, 1, 32};

double folo_bench_best_of(folo_pool *pool, folo_pool_fn fn, void *ctx, int repeat) {
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double t0 = folo_now_s();
        folo_pool_run(pool, fn, ctx);
        double dt = folo_now_s() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

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
    job->sums[thread % 64] = s0 + s1 + s2 + s3;
}

double folo_bench_read_gbs(folo_pool *pool, const void *buf, size_t bytes, int repeat) {
    read_job job = {.buf = buf, .n_words = bytes / 8};
    return (double)bytes / folo_bench_best_of(pool, read_worker, &job, repeat) / 1e9;
}

/* ---- peak arithmetic ----------------------------------------------------- */

#if defined(__x86_64__)
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

/* Four tile accumulators, three products each per iteration (12 in all);
 * the tile state is granted by folo_cpu_kernels_for (kernels.c). */
__attribute__((target("amx-tile,amx-bf16"))) static float peak_tile(long iters) {
    struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg = {.palette = 1};
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    static const uint16_t zeros[16 * 32] = {0}; /* +0 bf16: the sums stay finite */
    float c[16 * 16];
    __asm__ __volatile__("" : : "r"(&cfg) : "memory"); /* see kernels_amx.c's configure */
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, zeros, 64);
    _tile_loadd(5, zeros, 64);
    _tile_loadd(6, zeros, 64);
    _tile_loadd(7, zeros, 64);
    for (long it = 0; it < iters; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_dpbf16ps(0, 5, 7);
        _tile_dpbf16ps(1, 5, 6);
        _tile_dpbf16ps(2, 4, 7);
        _tile_dpbf16ps(3, 4, 6);
        _tile_dpbf16ps(0, 4, 7);
        _tile_dpbf16ps(1, 5, 7);
        _tile_dpbf16ps(2, 4, 6);
        _tile_dpbf16ps(3, 5, 6);
    }
    _tile_stored(0, c, 64);
    _tile_release();
    return c[0];
}
#endif

bool folo_bench_peak_supported(folo_bench_peak_kind kind) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    switch (kind) {
    case FOLO_BENCH_PEAK_FMA256:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case FOLO_BENCH_PEAK_FMA512: return __builtin_cpu_supports("avx512f");
    case FOLO_BENCH_PEAK_BF16DOT:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
    case FOLO_BENCH_PEAK_TILE: return folo_cpu_kernels_for(FOLO_CPU_ISA_AMX) != NULL;
    default: return false;
    }
#else
    (void)kind;
    return false;
#endif
}

typedef struct peak_job {
    folo_bench_peak_kind kind;
    long iters;
    float sink[64]; /* per thread, so the loops are not optimized away */
} peak_job;

static void peak_worker(void *ctx, int thread, int n_threads) {
    peak_job *job = ctx;
    float s = 0;
    (void)n_threads;
#if defined(__x86_64__)
    switch (job->kind) {
    case FOLO_BENCH_PEAK_FMA256: s = peak_fma256(job->iters); break;
    case FOLO_BENCH_PEAK_FMA512: s = peak_fma512(job->iters); break;
    case FOLO_BENCH_PEAK_TILE: s = peak_tile(job->iters); break;
    default: s = peak_bf16dot(job->iters); break;
    }
#endif
    job->sink[thread % 64] = s;
}

double folo_bench_peak_gflops(folo_pool *pool, folo_bench_peak_kind kind, long iters,
                              int repeat) {
    peak_job job = {.kind = kind, .iters = iters / k_iter_div[kind]};
    double s = folo_bench_best_of(pool, peak_worker, &job, repeat);
    iters = job.iters;
    return (double)iters * 12 * k_peak_flops[kind] * folo_pool_size(pool) / s / 1e9;
}
