/* The benchmark's random numbers against their distributions' moments:
 * gamma gaps (mean shape * scale, variance shape * scale^2, for shapes on
 * both sides of 1, as --burstiness sets them), Poisson counts (mean =
 * variance, and P(0) = e^-mean for a small mean; a large mean that would
 * underflow a naive inversion), uniform integers within range, and the same
 * sequence for the same seed. Fixed seeds make every figure exact to
 * repeat; tolerances are 5 standard errors of the sample mean. */
#include <math.h>
#include <stdlib.h>

#include "bench/random.h"
#include "check.h"

#define N 200000

static void moments(const double *x, int n, double *mean, double *var) {
    double s = 0, sq = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) sq += (x[i] - *mean) * (x[i] - *mean);
    *var = sq / n;
}

static void test_gamma(double shape, double scale) {
    folo_bench_rng r;
    folo_bench_rng_seed(&r, 42, 1);
    double *x = malloc(N * sizeof *x);
    int negative = 0;
    for (int i = 0; i < N; i++) {
        x[i] = folo_bench_rng_gamma(&r, shape, scale);
        negative += x[i] < 0;
    }
    double mean, var;
    moments(x, N, &mean, &var);
    double want_mean = shape * scale, want_var = shape * scale * scale;
    CHECK(negative == 0);
    CHECK_MSG(fabs(mean - want_mean) <= 5 * sqrt(want_var / N), "gamma(%g, %g) mean %g", shape,
              scale, mean);
    /* The variance's standard error needs the fourth moment: (6/k + 2) var^2 / N. */
    CHECK_MSG(fabs(var - want_var) <= 5 * want_var * sqrt((6 / shape + 2) / N),
              "gamma(%g, %g) variance %g", shape, scale, var);
    free(x);
}

static void test_poisson(double lambda) {
    folo_bench_rng r;
    folo_bench_rng_seed(&r, 7, 2);
    double *x = malloc(N * sizeof *x);
    int zeros = 0;
    for (int i = 0; i < N; i++) {
        int64_t k = folo_bench_rng_poisson(&r, lambda);
        zeros += k == 0;
        x[i] = (double)k;
    }
    double mean, var;
    moments(x, N, &mean, &var);
    CHECK_MSG(fabs(mean - lambda) <= 5 * sqrt(lambda / N), "poisson(%g) mean %g", lambda, mean);
    CHECK_MSG(fabs(var - lambda) <= 5 * lambda * sqrt((1 / lambda + 2) / N),
              "poisson(%g) variance %g", lambda, var);
    double p0 = exp(-lambda);
    CHECK_MSG(fabs(zeros / (double)N - p0) <= 5 * sqrt(p0 * (1 - p0) / N) + 1e-12,
              "poisson(%g) P(0) %g", lambda, zeros / (double)N);
    free(x);
}

static void test_uniform_and_seed(void) {
    folo_bench_rng a, b, c;
    folo_bench_rng_seed(&a, 3, 1);
    folo_bench_rng_seed(&b, 3, 1);
    folo_bench_rng_seed(&c, 3, 2);
    int same = 1, differ = 0, counts[7] = {0}, out_of_range = 0;
    for (int i = 0; i < N; i++) {
        uint64_t x = folo_bench_rng_next(&a);
        same &= x == folo_bench_rng_next(&b);
        differ += x != folo_bench_rng_next(&c);
    }
    for (int i = 0; i < N; i++) {
        uint64_t k = folo_bench_rng_below(&a, 7);
        if (k < 7) counts[k]++; else out_of_range++;
        double u = folo_bench_rng_uniform(&a);
        out_of_range += u < 0 || u >= 1;
    }
    CHECK(same);                 /* a seed and stream repeat exactly */
    CHECK(differ > N - 10);      /* another stream is another sequence */
    CHECK(out_of_range == 0);
    for (int k = 0; k < 7; k++)  /* binomial(N, 1/7): sd ~ 156 */
        CHECK_MSG(fabs(counts[k] - N / 7.0) <= 5 * sqrt(N * (1 / 7.0) * (6 / 7.0)),
                  "value %d drawn %d times", k, counts[k]);
}

int main(void) {
    test_gamma(1.0, 0.25);   /* Poisson arrivals at 4 requests/s */
    test_gamma(0.3, 1.0);    /* bursty: shape < 1 takes the boost path */
    test_gamma(4.0, 0.05);   /* regular */
    test_poisson(3.5);
    test_poisson(900);       /* e^-900 underflows a double */
    test_uniform_and_seed();
    return check_summary("test_bench_random");
}
