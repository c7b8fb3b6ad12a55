/* Seeded random numbers for the benchmarks (see random.h). */
#include "bench/random.h"

#include <math.h>

void folo_bench_rng_seed(folo_bench_rng *r, uint64_t seed, uint64_t stream) {
    r->state = seed ^ (stream * 0xd1b54a32d192ed03ull);
    folo_bench_rng_next(r);
}

uint64_t folo_bench_rng_next(folo_bench_rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double folo_bench_rng_uniform(folo_bench_rng *r) {
    return (double)(folo_bench_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t folo_bench_rng_below(folo_bench_rng *r, uint64_t n) {
    /* Rejects the top partial range so every value is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = folo_bench_rng_next(r);
    while (x >= limit);
    return x % n;
}

double folo_bench_rng_normal(folo_bench_rng *r) {
    double u = 1.0 - folo_bench_rng_uniform(r); /* (0, 1]: log(u) is finite */
    double v = folo_bench_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

double folo_bench_rng_gamma(folo_bench_rng *r, double shape, double scale) {
    if (shape < 1.0) {
        double u = 1.0 - folo_bench_rng_uniform(r);
        return folo_bench_rng_gamma(r, shape + 1.0, scale) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = folo_bench_rng_normal(r), v = 1.0 + c * x;
        if (v <= 0) continue;
        v = v * v * v;
        double u = 1.0 - folo_bench_rng_uniform(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v)) return d * v * scale;
    }
}

/* log P(X = k) for X ~ Poisson(mean). */
static double poisson_log_pmf(int64_t k, double mean) {
    return (double)k * log(mean) - mean - lgamma((double)k + 1.0);
}

int64_t folo_bench_rng_poisson(folo_bench_rng *r, double mean) {
    if (mean <= 0) return 0;
    /* Inversion that walks outwards from the mode, taking the larger of
     * the two next terms each time: the mass runs out after a few standard
     * deviations, whatever the mean. */
    double u = folo_bench_rng_uniform(r);
    int64_t mode = (int64_t)floor(mean), lo = mode, hi = mode;
    double acc = exp(poisson_log_pmf(mode, mean));
    double p_lo = lo > 0 ? exp(poisson_log_pmf(lo - 1, mean)) : 0;
    double p_hi = exp(poisson_log_pmf(hi + 1, mean));
    if (u < acc) return mode;
    for (;;) {
        if (p_lo <= 0 && p_hi <= 0) return mode; /* u beyond double precision */
        if (p_hi >= p_lo) {
            acc += p_hi;
            hi++;
            p_hi = exp(poisson_log_pmf(hi + 1, mean));
            if (u < acc) return hi;
        } else {
            acc += p_lo;
            lo--;
            p_lo = lo > 0 ? exp(poisson_log_pmf(lo - 1, mean)) : 0;
            if (u < acc) return lo;
        }
    }
}

void folo_bench_arrival_times(uint64_t seed, uint64_t stream, double rate, double burstiness,
                              int n, double *send_at_s) {
    folo_bench_rng rng;
    folo_bench_rng_seed(&rng, seed, stream);
    double t = 0;
    for (int i = 0; i < n; i++) {
        send_at_s[i] = t;
        if (isfinite(rate)) t += folo_bench_rng_gamma(&rng, burstiness, 1.0 / (rate * burstiness));
    }
}
