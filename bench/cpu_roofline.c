/* The CPU's roofline and how close folo's kernels come to it.
 *
 * Measures, on 1 and on all threads (the thread pool the backend uses):
 *   - read bandwidth: a streaming sum over a buffer much larger than the
 *     caches (--mib, default 1024 MiB), in huge pages where the kernel has
 *     them (folo_alloc_large), as the CPU backend holds its weights; with
 *     --file, the same sum over that file's read-only mapping (a model's
 *     safetensors: where the weights lie with --no-weight-copy);
 *   - peak arithmetic from register-resident loops: f32 FMA (AVX2 and
 *     AVX-512) and the AVX512-BF16 dot product vdpbf16ps, when the CPU has
 *     them (FLOPs count a multiply-add as 2);
 *     (these two loops live in src/bench/cpu_peak.c, shared with `folo
 *     bench`'s measured "cpu" hardware profile)
 *   - folo's matmul for each kernel table the CPU runs (kernels.h), its
 *     matmul_bf16 (--dtype bfloat16) where a SIMD table has one, and its
 *     matmul_bf16_panels (the same on the backend's copy as row panels)
 *     where it has that: the decode shape (one token against a bf16 weight
 *     matrix as large as the buffer above) as GB/s of weights, and the
 *     prefill shape (T tokens x [N, K] bf16) as GFLOP/s.
 * Prints a table, then one JSON line. Best of --repeat runs.
 *
 * usage: cpu_roofline [--mib N] [--repeat N] [--threads N] [--tokens T] [--file PATH] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "bench/cpu_peak.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/file.h"
#include "core/threadpool.h"
#include "core/timer.h"

/* Iterations of the register-resident peak loops, per thread. */
#define PEAK_ITERS 20000000L

/* ---- folo's matmul --------------------------------------------------------- */

typedef void (*matmul_fn)(float *y, size_t ldy, const float *x, int n_tokens, int K,
                          const void *w, folo_dtype w_dtype, int row_begin, int row_end,
                          float *rows_f32);

typedef struct matmul_job {
    matmul_fn matmul; /* a table's matmul, matmul_bf16 or matmul_bf16_panels */
    float *y;       /* [T, N] */
    const float *x; /* [T, K] */
    const void *w;  /* [N, K] bf16, or its row panels */
    int T, K, N;
    int granule;    /* rows a thread's share is a multiple of */
    float *rows_f32; /* [threads, scratch] */
    size_t scratch;  /* floats of rows_f32 per thread */
} matmul_job;

static void matmul_worker(void *ctx, int thread, int n_threads) {
    matmul_job *job = ctx;
    size_t begin, end;
    folo_split((size_t)job->N, (size_t)job->granule, thread, n_threads, &begin, &end);
    if (begin < end)
        job->matmul(job->y, (size_t)job->N, job->x, job->T, job->K, job->w, FOLO_DTYPE_BF16,
                       (int)begin, (int)end,
                       job->rows_f32 + (size_t)thread * job->scratch);
}

int main(int argc, char **argv) {
    size_t mib = 1024;
    int repeat = 3, max_threads = 0, prefill_tokens = 512;
    const char *file = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mib")) mib = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) max_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) prefill_tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--file")) file = argv[i + 1];
        else {
            fprintf(stderr, "usage: cpu_roofline [--mib N] [--repeat N] [--threads N] [--tokens T] "
                            "[--file PATH]\n");
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
    for (int p = 0; p < 2; p++) gbs[p] = folo_bench_read_gbs(pools[p], buf, bytes, repeat);
    printf("%-40s %8.1f GB/s %6.1f GB/s\n", "read bandwidth", gbs[0], gbs[1]);
    jn += snprintf(json + jn, sizeof json - jn, ",\"read_gbs\":[%.2f,%.2f]", gbs[0], gbs[1]);
    if (file) {
        folo_mapped_file f;
        folo_error err = {{0}};
        if (folo_file_map(&f, file, &err) != 0) {
            fprintf(stderr, "cpu_roofline: %s\n", err.message);
            return 1;
        }
        for (int p = 0; p < 2; p++)
            gbs[p] = folo_bench_read_gbs(pools[p], f.data, f.size & ~(size_t)63, repeat);
        printf("%-40s %8.1f GB/s %6.1f GB/s\n", "read bandwidth, file mapping", gbs[0], gbs[1]);
        jn += snprintf(json + jn, sizeof json - jn, ",\"read_file_gbs\":[%.2f,%.2f]", gbs[0],
                       gbs[1]);
        folo_file_unmap(&f);
    }

    for (int kind = 0; kind < FOLO_BENCH_PEAK_COUNT; kind++) {
        if (!folo_bench_peak_supported(kind)) continue;
        double gf[2];
        for (int p = 0; p < 2; p++)
            gf[p] = folo_bench_peak_gflops(pools[p], kind, PEAK_ITERS, repeat);
        printf("%-40s %6.0f GFLOP/s %6.0f GFLOP/s\n", folo_bench_peak_names[kind], gf[0], gf[1]);
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
    /* Each table's matmul, then its matmul_bf16 (variant 1) and
     * matmul_bf16_panels (variant 2, on a packed copy of the buffer); the
     * portable one, a token at a time, is a reference, not a contender. */
    static const char *const variants[] = {"", " bf16-activations", " bf16 panels"};
    static const char *const keys[] = {"", "_bf16", "_bf16_panels"};
    for (int run = 0; run < 3 * FOLO_CPU_ISA_COUNT; run++) {
        int isa = run / 3, variant = run % 3;
        const folo_cpu_kernels *k = folo_cpu_kernels_for((folo_cpu_isa)isa);
        matmul_fn fn = !k              ? NULL
                       : variant == 1 ? k->matmul_bf16
                       : variant == 2 ? k->matmul_bf16_panels
                                      : k->matmul;
        if (!fn || (variant > 0 && isa == FOLO_CPU_ISA_PORTABLE)) continue;
        void *panels = NULL;
        if (variant == 2) {
            panels = folo_alloc_large(folo_cpu_bf16_panels_bytes(N_decode, K));
            if (!panels) {
                fprintf(stderr, "cpu_roofline: no memory for the row panels; skipped\n");
                continue;
            }
            folo_cpu_bf16_pack_panels(panels, buf, N_decode, K);
        }
        size_t scratch = k->matmul_scratch_floats(K);
        float *rows_f32 = folo_alloc_large((size_t)n_all * scratch * sizeof(float));
        matmul_job mj = {.matmul = fn, .y = y, .x = x, .w = panels ? panels : (void *)buf,
                         .T = 1, .K = K, .N = N_decode,
                         .granule = panels ? FOLO_CPU_PANEL_ROWS : FOLO_CPU_MATMUL_ROWS,
                         .rows_f32 = rows_f32, .scratch = scratch};
        double r[2], g[2];
        for (int p = 0; p < 2; p++)
            r[p] = (double)N_decode * K * 2 /
                   folo_bench_best_of(pools[p], matmul_worker, &mj, repeat) / 1e9;
        mj.T = prefill_tokens;
        mj.N = prefill_N;
        double flops = 2.0 * prefill_tokens * K * prefill_N;
        for (int p = 0; p < 2; p++)
            g[p] = flops / folo_bench_best_of(pools[p], matmul_worker, &mj, repeat) / 1e9;
        char name[40], label[96];
        snprintf(name, sizeof name, "%s%s", k->name, variants[variant]);
        snprintf(label, sizeof label, "matmul %s decode (bf16 weights)", name);
        printf("%-40s %8.1f GB/s %6.1f GB/s\n", label, r[0], r[1]);
        snprintf(label, sizeof label, "matmul %s %d x [%d, %d]", name, prefill_tokens,
                 prefill_N, K);
        printf("%-40s %6.0f GFLOP/s %6.0f GFLOP/s\n", label, g[0], g[1]);
        jn += snprintf(json + jn, sizeof json - jn,
                       ",\"%s%s\":{\"decode_gbs\":[%.2f,%.2f],\"prefill_gflops\":[%.1f,%.1f]}",
                       k->name, keys[variant], r[0], r[1], g[0], g[1]);
        folo_free_large(rows_f32);
        folo_free_large(panels);
    }
    printf("%s}\n", json);
    folo_free_large(x);
    folo_free_large(y);
    folo_free_large(buf);
    folo_pool_destroy(one);
    folo_pool_destroy(all);
    return 0;
}
