/* Seeded random numbers for the benchmarks: one generator per purpose
 * (prompts, lengths, arrival gaps, dataset shuffle), each from --seed, so a
 * run is repeated exactly by repeating its flags.
 *
 * The generator is splitmix64 (Steele, Lea and Flood 2014): 64 bits of
 * state, every seed valid, good enough for sampling workloads. On top:
 * uniform doubles, normals (Box-Muller), gamma variates (Marsaglia and
 * Tsang 2000; shape < 1 through the boost x * U^(1/shape)) for the
 * arrival gaps of vLLM's bench (shape = burstiness, scale = 1 / (rate *
 * burstiness): mean gap 1/rate, coefficient of variation
 * 1/sqrt(burstiness); shape 1 is Poisson arrivals), and Poisson counts
 * (inversion from the mode outwards, in log space so large means do not
 * underflow). */
#ifndef FOLO_BENCH_RANDOM_H
#define FOLO_BENCH_RANDOM_H

#include <stdint.h>

typedef struct folo_bench_rng {
    uint64_t state;
} folo_bench_rng;

/* A generator for one purpose: seed and stream give independent sequences. */
void folo_bench_rng_seed(folo_bench_rng *r, uint64_t seed, uint64_t stream);
uint64_t folo_bench_rng_next(folo_bench_rng *r);
/* Uniform in [0, 1). */
double folo_bench_rng_uniform(folo_bench_rng *r);
/* Uniform integer in [0, n), n > 0. */
uint64_t folo_bench_rng_below(folo_bench_rng *r, uint64_t n);
double folo_bench_rng_normal(folo_bench_rng *r);
/* Gamma(shape, scale), shape > 0, scale > 0: mean shape * scale. */
double folo_bench_rng_gamma(folo_bench_rng *r, double shape, double scale);
/* Poisson(mean), mean >= 0. */
int64_t folo_bench_rng_poisson(folo_bench_rng *r, double mean);

/* Send times (s from the start) of n requests offered at `rate` requests/s,
 * with the gaps of vLLM's get_request: gamma(shape = burstiness, scale =
 * 1 / (rate * burstiness)), drawn from stream `stream` of seed; the first at
 * 0, and all at 0 when rate is infinite. */
void folo_bench_arrival_times(uint64_t seed, uint64_t stream, double rate, double burstiness,
                              int n, double *send_at_s);

#endif
