/* Benchmark statistics against hand-worked answers: numpy's percentiles
 * (values printed by numpy 2 for the same inputs), TPOT leaving out
 * one-token requests, ITL gaps, goodput under SLOs, throughputs and the
 * JSON key names vLLM uses. */
#include <jansson.h>
#include <stdlib.h>

#include "bench/stats.h"
#include "check.h"

#define TOL 1e-6

static void test_percentiles(void) {
    /* np.percentile(a, p) for a = [12, 3.5, 7.25, 100, 42, 8, 15.5]. */
    double a[] = {12.0, 3.5, 7.25, 100.0, 42.0, 8.0, 15.5};
    folo_bench_dist d;
    folo_bench_dist_compute(a, 7, &d);
    CHECK(d.n == 7);
    CHECK_NEAR(d.mean, 26.892857142857142, 1e-12);
    CHECK_NEAR(d.std, 32.10358712235206, 1e-12);  /* np.std: population */
    CHECK_NEAR(d.median, 12.0, 1e-12);
    CHECK_NEAR(d.p[0], 12.0, 1e-12);               /* p50 */
    CHECK_NEAR(d.p[1], 65.20000000000002, 1e-12);  /* p90 */
    CHECK_NEAR(d.p[2], 82.59999999999997, 1e-12);  /* p95 */
    CHECK_NEAR(d.p[3], 96.51999999999997, 1e-12);  /* p99 */
    CHECK_NEAR(d.p[4], 99.65200000000004, 1e-12);  /* p99.9 */
    CHECK_NEAR(folo_bench_percentile(a, 7, 0), 3.5, 0);
    CHECK_NEAR(folo_bench_percentile(a, 7, 100), 100.0, 0);

    double b[] = {4.0, 3.0, 2.0, 1.0};  /* even count: the median interpolates */
    folo_bench_dist_compute(b, 4, &d);
    CHECK_NEAR(d.median, 2.5, 1e-12);
    CHECK_NEAR(d.p[1], 3.7, 1e-12);
    CHECK_NEAR(d.p[2], 3.8499999999999996, 1e-12);
    CHECK_NEAR(d.p[3], 3.9699999999999998, 1e-12);
    CHECK_NEAR(d.p[4], 3.9970000000000003, 1e-12);
    CHECK_NEAR(d.std, 1.118033988749895, 1e-12);

    double one[] = {5.0};
    folo_bench_dist_compute(one, 1, &d);
    CHECK(d.mean == 5.0 && d.median == 5.0 && d.std == 0 && d.p[4] == 5.0);
    folo_bench_dist_compute(NULL, 0, &d);  /* empty: zeros, as vLLM's np.mean(x or 0) */
    CHECK(d.n == 0 && d.mean == 0 && d.p[3] == 0);
}

/* Four requests over a 2 s run:
 *   r0: arrival 10.00, tokens at 10.10 10.15 10.25 10.30, finish 10.30, 20 prompt
 *       -> TTFT 100, TPOT 200/3, ITL 50 100 50, E2EL 300
 *   r1: arrival 10.00, one token at 10.20, finish 10.20, 10 prompt
 *       -> TTFT 200, no TPOT, no ITL, E2EL 200
 *   r2: arrival 10.05, tokens at 10.35 10.45, finish 10.45, 30 prompt
 *       -> TTFT 300, TPOT 100, ITL 100, E2EL 400
 *   r3: failed (error), left out of everything but "failed". */
typedef struct fixture {
    folo_bench_record r[4];
} fixture;

static void fixture_init(fixture *f) {
    static const double t0[] = {10.10, 10.15, 10.25, 10.30}, t1[] = {10.20},
                        t2[] = {10.35, 10.45}, t3[] = {10.5, 10.6};
    memset(f, 0, sizeof *f);
    const double *times[] = {t0, t1, t2, t3};
    const int n[] = {4, 1, 2, 2}, prompt[] = {20, 10, 30, 5};
    const double arrival[] = {10.0, 10.0, 10.05, 10.0};
    for (int i = 0; i < 4; i++) {
        folo_bench_record *r = &f->r[i];
        r->ok = i != 3;
        r->n_prompt_tokens = prompt[i];
        r->arrival_s = arrival[i];
        r->first_scheduled_s = arrival[i];
        folo_bench_record_set_times(r, times[i], n[i]);
        r->first_token_s = times[i][0];
        r->finish_s = times[i][n[i] - 1];
    }
}

static void fixture_free(fixture *f) {
    for (int i = 0; i < 4; i++) folo_bench_record_free(&f->r[i]);
}

static void test_requests(void) {
    fixture f;
    fixture_init(&f);
    double tpot = -1;
    CHECK_NEAR(folo_bench_ttft_ms(&f.r[0]), 100, TOL);
    CHECK(folo_bench_tpot_ms(&f.r[0], &tpot));
    CHECK_NEAR(tpot, 200.0 / 3, TOL);
    CHECK_NEAR(folo_bench_e2el_ms(&f.r[0]), 300, TOL);
    tpot = -1;
    CHECK(!folo_bench_tpot_ms(&f.r[1], &tpot));  /* one token: TPOT undefined */
    CHECK(tpot == -1);

    folo_bench_summary s;
    folo_bench_summarize(f.r, 4, 2.0, NULL, &s);
    CHECK(s.completed == 3 && s.failed == 1);
    CHECK(s.total_input_tokens == 60 && s.total_output_tokens == 7);
    CHECK_NEAR(s.duration_s, 2.0, 0);
    CHECK_NEAR(s.request_throughput, 1.5, 1e-12);     /* requests/s */
    CHECK_NEAR(s.output_throughput, 3.5, 1e-12);      /* tokens/s */
    CHECK_NEAR(s.total_token_throughput, 33.5, 1e-12);
    CHECK(!s.has_goodput);

    CHECK(s.ttft_ms.n == 3);  /* 100 200 300 */
    CHECK_NEAR(s.ttft_ms.mean, 200, TOL);
    CHECK_NEAR(s.ttft_ms.median, 200, TOL);
    CHECK_NEAR(s.ttft_ms.std, sqrt(20000.0 / 3), TOL);
    CHECK_NEAR(s.ttft_ms.p[1], 280, TOL);
    CHECK_NEAR(s.ttft_ms.p[3], 298, TOL);
    CHECK_NEAR(s.ttft_ms.p[4], 299.8, TOL);

    CHECK(s.tpot_ms.n == 2);  /* 66.67 and 100; r1 left out */
    CHECK_NEAR(s.tpot_ms.mean, (200.0 / 3 + 100) / 2, TOL);
    CHECK_NEAR(s.tpot_ms.p[2], 200.0 / 3 + 0.95 * (100 - 200.0 / 3), TOL);

    CHECK(s.itl_ms.n == 4);  /* 50 50 100 100 */
    CHECK_NEAR(s.itl_ms.mean, 75, TOL);
    CHECK_NEAR(s.itl_ms.median, 75, TOL);
    CHECK_NEAR(s.itl_ms.std, 25, TOL);
    CHECK_NEAR(s.itl_ms.p[1], 100, TOL);

    CHECK(s.e2el_ms.n == 3);  /* 200 300 400 */
    CHECK_NEAR(s.e2el_ms.mean, 300, TOL);
    CHECK_NEAR(s.e2el_ms.p[0], 300, TOL);
    fixture_free(&f);
}

static double goodput(const fixture *f, const char *spec) {
    folo_bench_slo slo = {0};
    folo_error err = {{0}};
    CHECK_MSG(folo_bench_slo_parse(spec, &slo, &err) == 0, "%s: %s", spec, err.message);
    folo_bench_summary s;
    folo_bench_summarize(f->r, 4, 2.0, &slo, &s);
    CHECK(s.has_goodput);
    return s.request_goodput;
}

static void test_goodput(void) {
    fixture f;
    fixture_init(&f);
    CHECK_NEAR(goodput(&f, "ttft:250"), 1.0, 1e-12);           /* r0, r1 */
    CHECK_NEAR(goodput(&f, "tpot:70"), 1.0, 1e-12);            /* r0, r1 (TPOT 0) */
    CHECK_NEAR(goodput(&f, "ttft:150,tpot:70"), 0.5, 1e-12);   /* r0 only */
    CHECK_NEAR(goodput(&f, "e2el:250"), 0.5, 1e-12);           /* r1 only */
    CHECK_NEAR(goodput(&f, "ttft:1000,tpot:1000,e2el:1000"), 1.5, 1e-12);
    CHECK_NEAR(goodput(&f, "ttft:10"), 0.0, 1e-12);

    const char *bad[] = {"ttft", "foo:1", "ttft:-1", "ttft:abc", "ttft:1,", "ttft:5x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        folo_bench_slo slo = {0};
        folo_error err = {{0}};
        CHECK_MSG(folo_bench_slo_parse(bad[i], &slo, &err) == -1 && err.message[0],
                  "'%s' accepted", bad[i]);
    }
    fixture_free(&f);
}

static void test_json(void) {
    fixture f;
    fixture_init(&f);
    folo_bench_summary s;
    folo_bench_summarize(f.r, 4, 2.0, NULL, &s);
    json_t *o = folo_bench_summary_json(&s);
    static const char *const keys[] = {
        "completed", "duration", "total_input_tokens", "total_output_tokens",
        "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
        "mean_ttft_ms", "median_ttft_ms", "std_ttft_ms", "p50_ttft_ms", "p90_ttft_ms",
        "p95_ttft_ms", "p99_ttft_ms", "p99.9_ttft_ms", "mean_tpot_ms", "p99_tpot_ms",
        "mean_itl_ms", "p99.9_itl_ms", "median_e2el_ms", "p99_e2el_ms", NULL,
    };
    for (int i = 0; keys[i]; i++) CHECK_MSG(json_object_get(o, keys[i]), "missing %s", keys[i]);
    CHECK(json_is_null(json_object_get(o, "request_goodput")));
    CHECK(json_integer_value(json_object_get(o, "completed")) == 3);
    CHECK_NEAR(json_real_value(json_object_get(o, "p90_ttft_ms")), 280, TOL);
    json_decref(o);

    json_t *r1 = folo_bench_record_json(&f.r[1]);
    CHECK(json_is_null(json_object_get(r1, "tpot_ms")));
    CHECK(json_array_size(json_object_get(r1, "itl_ms")) == 0);
    json_decref(r1);
    json_t *r0 = folo_bench_record_json(&f.r[0]);
    json_t *itl = json_object_get(r0, "itl_ms");
    CHECK(json_array_size(itl) == 3);
    CHECK_NEAR(json_real_value(json_array_get(itl, 1)), 100, TOL);
    CHECK_NEAR(json_real_value(json_object_get(r0, "ttft_ms")), 100, TOL);
    json_decref(r0);

    /* TTFT bands: every completed request in the band of its TTFT. */
    int want[FOLO_BENCH_N_TTFT_BANDS] = {0};
    for (int i = 0; i < 4; i++)
        if (f.r[i].ok) want[folo_bench_ttft_band(folo_bench_ttft_ms(&f.r[i]))]++;
    CHECK(want[1] >= 1); /* r0's 100 ms is fast, not instant */
    o = folo_bench_summary_json(&s);
    json_t *bands = json_object_get(o, "ttft_bands");
    for (int b = 0; b < FOLO_BENCH_N_TTFT_BANDS; b++)
        CHECK_MSG(json_integer_value(json_object_get(bands, folo_bench_ttft_band_names[b])) ==
                      want[b] && s.ttft_bands[b] == want[b],
                  "band %s", folo_bench_ttft_band_names[b]);
    json_decref(o);
    fixture_free(&f);
}

/* The seeds' bands and scenario SLOs. */
static void test_bands_and_presets(void) {
    static const struct {
        double ms;
        int band;
    } cases[] = {{0, 0}, {99.999, 0}, {100, 1}, {299.9, 1}, {300, 2}, {1000, 2}, {1000.1, 3}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(folo_bench_ttft_band(cases[i].ms) == cases[i].band, "%g ms", cases[i].ms);
    static const struct {
        const char *name;
        double ttft_ms;
    } presets[] = {{"chat", 200}, {"batch", 1000}, {"realtime", 50}};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        folo_bench_slo slo = {.tpot_ms = 40};
        folo_error err = {{0}};
        CHECK(folo_bench_slo_preset(presets[i].name, &slo, &err) == 0);
        CHECK(slo.ttft_ms == presets[i].ttft_ms && slo.tpot_ms == 40); /* other SLOs kept */
    }
    folo_bench_slo slo = {0};
    folo_error err = {{0}};
    CHECK(folo_bench_slo_preset("interactive", &slo, &err) == -1);
    CHECK_MSG(strstr(err.message, "unknown SLO preset 'interactive'") != NULL, "%s", err.message);
}

/* vLLM's peaks over 1 s buckets from the first arrival, and a record as the
 * HTTP client makes it: fewer chunks than the usage's output tokens (a
 * token whose text the server held back), so ITL has one gap per pair of
 * chunks while TPOT and the token totals use the usage count. */
static void test_peaks_and_chunks(void) {
    folo_bench_record r[4];
    memset(r, 0, sizeof r);
    const double t0[] = {0.2, 0.5, 0.9, 1.3}, t1[] = {1.1, 1.2, 2.4}, t3[] = {2.5};
    const double *times[] = {t0, t1, t0, t3};
    const int n[] = {4, 3, 4, 1};
    const double arrival[] = {0.0, 0.5, 0.0, 1.9};
    for (int i = 0; i < 4; i++) {
        r[i].ok = i != 2;  /* r2 failed: out of every figure */
        r[i].arrival_s = arrival[i];
        r[i].first_scheduled_s = NAN;
        folo_bench_record_set_times(&r[i], times[i], n[i]);
        r[i].first_token_s = times[i][0];
        r[i].finish_s = times[i][n[i] - 1];
    }
    r[1].n_output_tokens = 5;  /* the usage count; 3 chunks arrived */
    folo_bench_summary s;
    folo_bench_summarize(r, 4, 2.5, NULL, &s);
    /* tokens per bucket [0,1) [1,2) [2,3): 3, 3, 2 */
    CHECK_NEAR(s.max_output_tokens_per_s, 3, 0);
    /* alive: r0 in 0-1, r1 in 0-2, r3 in 1-2: 2, 3, 2 */
    CHECK(s.max_concurrent_requests == 3);
    CHECK(s.total_output_tokens == 4 + 5 + 1);
    CHECK(s.itl_ms.n == 3 + 2);
    double tpot;
    CHECK(folo_bench_tpot_ms(&r[1], &tpot));
    CHECK_NEAR(tpot, (2.4 - 1.1) * 1e3 / 4, TOL);
    json_t *j = folo_bench_record_json(&r[1]);
    CHECK(json_is_null(json_object_get(j, "first_scheduled_s")));
    CHECK(json_array_size(json_object_get(j, "itl_ms")) == 2);
    CHECK(json_integer_value(json_object_get(j, "output_tokens")) == 5);
    CHECK(json_is_null(json_object_get(j, "error")));
    json_decref(j);
    snprintf(r[2].error, sizeof r[2].error, "HTTP 503: busy");
    j = folo_bench_errors_json(r, 4);
    CHECK(json_object_size(j) == 1 &&
          json_integer_value(json_object_get(j, "HTTP 503: busy")) == 1);
    json_decref(j);
    j = folo_bench_summary_json(&s);
    CHECK(json_integer_value(json_object_get(j, "max_concurrent_requests")) == 3);
    CHECK_NEAR(json_real_value(json_object_get(j, "max_output_tokens_per_s")), 3, 0);
    json_decref(j);
    for (int i = 0; i < 4; i++) folo_bench_record_free(&r[i]);
}

int main(void) {
    test_bands_and_presets();
    test_percentiles();
    test_requests();
    test_goodput();
    test_json();
    test_peaks_and_chunks();
    return check_summary("test_bench_stats");
}
