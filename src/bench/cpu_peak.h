/* The local CPU's roofline, measured on the spot: read bandwidth from a
 * streaming sum over a buffer much larger than the caches, and peak
 * arithmetic from register-resident loops of one instruction kind (f32
 * FMA on AVX2 and AVX-512, the AVX512-BF16 dot product vdpbf16ps, the AMX
 * tile product tdpbf16ps), each keeping more independent accumulators than
 * latency x issue width (12 registers, or 4 tiles), so it runs at the
 * instruction's throughput. FLOPs count a multiply-add as 2.
 * Shared by `folo bench` (its hardware profile "cpu") and
 * bench/cpu_roofline. x86-64 only: elsewhere no peak kind is supported. */
#ifndef FOLO_BENCH_CPU_PEAK_H
#define FOLO_BENCH_CPU_PEAK_H

#include <stdbool.h>
#include <stddef.h>

#include "core/threadpool.h"

typedef enum folo_bench_peak_kind {
    FOLO_BENCH_PEAK_FMA256,
    FOLO_BENCH_PEAK_FMA512,
    FOLO_BENCH_PEAK_BF16DOT,
    FOLO_BENCH_PEAK_TILE,
    FOLO_BENCH_PEAK_COUNT
} folo_bench_peak_kind;

extern const char *const folo_bench_peak_names[FOLO_BENCH_PEAK_COUNT];

bool folo_bench_peak_supported(folo_bench_peak_kind kind);

/* Best seconds of `repeat` runs of fn over the pool. */
double folo_bench_best_of(folo_pool *pool, folo_pool_fn fn, void *ctx, int repeat);

/* GB/s (1e9 bytes/s) reading buf[0..bytes) on every thread of the pool,
 * best of repeat. */
double folo_bench_read_gbs(folo_pool *pool, const void *buf, size_t bytes, int repeat);

/* GFLOP/s of `iters` iterations of kind's loop on every thread of the pool,
 * best of repeat; kind must be supported. */
double folo_bench_peak_gflops(folo_pool *pool, folo_bench_peak_kind kind, long iters,
                              int repeat);

#endif
