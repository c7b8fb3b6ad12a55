/* Benchmark statistics (see stats.h): per-request latencies, numpy-style
 * distribution summaries and vLLM's run-level figures. */
#include "bench/stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

const double folo_bench_percentiles[FOLO_BENCH_N_PERCENTILES] = {50, 90, 95, 99, 99.9};

/* ---- one request ----------------------------------------------------------- */

void folo_bench_record_set_times(folo_bench_record *r, const double *token_times_s, int n) {
    free(r->token_times_s);
    r->token_times_s = n > 0 ? folo_calloc((size_t)n, sizeof(double)) : NULL;
    if (n > 0) memcpy(r->token_times_s, token_times_s, (size_t)n * sizeof(double));
    r->n_token_times = r->n_output_tokens = n;
}

void folo_bench_record_free(folo_bench_record *r) {
    free(r->token_times_s);
    r->token_times_s = NULL;
}

double folo_bench_ttft_ms(const folo_bench_record *r) {
    return (r->first_token_s - r->arrival_s) * 1e3;
}

double folo_bench_e2el_ms(const folo_bench_record *r) {
    return (r->finish_s - r->arrival_s) * 1e3;
}

bool folo_bench_tpot_ms(const folo_bench_record *r, double *tpot_ms) {
    if (r->n_output_tokens < 2) return false;
    *tpot_ms = (r->finish_s - r->first_token_s) * 1e3 / (r->n_output_tokens - 1);
    return true;
}

/* ---- SLOs -------------------------------------------------------------------- */

int folo_bench_slo_parse(const char *spec, folo_bench_slo *slo, folo_error *err) {
    const char *p = spec;
    for (;;) {
        const char *colon = strchr(p, ':');
        if (!colon) return folo_fail(err, "'%s': expected NAME:MS pairs (ttft, tpot, e2el)", p);
        size_t name_len = (size_t)(colon - p);
        double *field = NULL;
        if (name_len == 4 && strncmp(p, "ttft", 4) == 0) field = &slo->ttft_ms;
        if (name_len == 4 && strncmp(p, "tpot", 4) == 0) field = &slo->tpot_ms;
        if (name_len == 4 && strncmp(p, "e2el", 4) == 0) field = &slo->e2el_ms;
        if (!field)
            return folo_fail(err, "unknown SLO '%.*s' (expected ttft, tpot or e2el)",
                             (int)name_len, p);
        char *end;
        double ms = strtod(colon + 1, &end);
        if (end == colon + 1 || (*end != ',' && *end != '\0') || !(ms > 0) || !isfinite(ms))
            return folo_fail(err, "SLO '%.*s' needs a positive number of ms", (int)name_len, p);
        *field = ms;
        if (*end == '\0') return 0;
        p = end + 1;
    }
}

int folo_bench_slo_preset(const char *name, folo_bench_slo *slo, folo_error *err) {
    static const struct {
        const char *name;
        double ttft_ms;
    } presets[] = {{"chat", 200}, {"batch", 1000}, {"realtime", 50}};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            slo->ttft_ms = presets[i].ttft_ms;
            return 0;
        }
    return folo_fail(err, "unknown SLO preset '%s' (chat, batch or realtime)", name);
}

const char *const folo_bench_ttft_band_names[FOLO_BENCH_N_TTFT_BANDS] = {"instant", "fast",
                                                                         "slow", "stalled"};

int folo_bench_ttft_band(double ttft_ms) {
    return ttft_ms < 100 ? 0 : ttft_ms < 300 ? 1 : ttft_ms <= 1000 ? 2 : 3;
}

bool folo_bench_slo_any(const folo_bench_slo *slo) {
    return slo && (slo->ttft_ms > 0 || slo->tpot_ms > 0 || slo->e2el_ms > 0);
}

/* Whether r met every SLO given (a one-token request's TPOT counts as 0). */
static bool meets_slo(const folo_bench_record *r, const folo_bench_slo *slo) {
    double tpot = 0;
    folo_bench_tpot_ms(r, &tpot);
    return (slo->ttft_ms <= 0 || folo_bench_ttft_ms(r) <= slo->ttft_ms) &&
           (slo->tpot_ms <= 0 || tpot <= slo->tpot_ms) &&
           (slo->e2el_ms <= 0 || folo_bench_e2el_ms(r) <= slo->e2el_ms);
}

/* ---- distributions ----------------------------------------------------------- */

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy's "linear" method: the value at fractional index (n - 1) * p / 100,
 * interpolated between its two neighbours as numpy's _lerp does. */
double folo_bench_percentile(const double *sorted, int n, double p) {
    if (n <= 0) return 0;
    double index = (n - 1) * (p / 100.0);
    int lo = (int)floor(index);
    if (lo >= n - 1) return sorted[n - 1];
    double t = index - lo, a = sorted[lo], b = sorted[lo + 1];
    return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;
}

void folo_bench_dist_compute(double *values, int n, folo_bench_dist *out) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return;
    qsort(values, (size_t)n, sizeof(double), compare_double);
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) sum += values[i];
    out->n = n;
    out->mean = sum / n;
    for (int i = 0; i < n; i++) sq += (values[i] - out->mean) * (values[i] - out->mean);
    out->std = sqrt(sq / n);
    out->median = folo_bench_percentile(values, n, 50);
    for (int k = 0; k < FOLO_BENCH_N_PERCENTILES; k++)
        out->p[k] = folo_bench_percentile(values, n, folo_bench_percentiles[k]);
}

/* ---- the run ----------------------------------------------------------------- */

/* vLLM's max_output_tokens_per_s and max_concurrent_requests (stats.h). */
static void peaks(const folo_bench_record *records, int n_records, folo_bench_summary *out) {
    double t0 = INFINITY, t1 = -INFINITY;
    for (int i = 0; i < n_records; i++) {
        if (!records[i].ok) continue;
        t0 = fmin(t0, records[i].arrival_s);
        t1 = fmax(t1, records[i].finish_s);
    }
    if (!(t1 >= t0)) return;
    size_t n_buckets = (size_t)ceil(t1 - t0) + 1;
    int *tokens = folo_calloc(n_buckets, sizeof(int));
    int *alive = folo_calloc(n_buckets, sizeof(int));
    for (int i = 0; i < n_records; i++) {
        const folo_bench_record *r = &records[i];
        if (!r->ok) continue;
        for (int t = 0; t < r->n_token_times; t++) {
            size_t b = (size_t)(r->token_times_s[t] - t0);
            if (b < n_buckets) tokens[b]++;
        }
        for (size_t b = (size_t)(r->arrival_s - t0); b <= (size_t)(r->finish_s - t0); b++)
            alive[b]++;
    }
    for (size_t b = 0; b < n_buckets; b++) {
        out->max_output_tokens_per_s = fmax(out->max_output_tokens_per_s, tokens[b]);
        if (alive[b] > out->max_concurrent_requests) out->max_concurrent_requests = alive[b];
    }
    free(tokens);
    free(alive);
}

void folo_bench_summarize(const folo_bench_record *records, int n_records, double duration_s,
                          const folo_bench_slo *slo, folo_bench_summary *out) {
    memset(out, 0, sizeof *out);
    out->duration_s = duration_s;
    out->has_goodput = folo_bench_slo_any(slo);
    size_t n_gaps = 0;
    for (int i = 0; i < n_records; i++)
        if (records[i].ok && records[i].n_token_times > 1)
            n_gaps += (size_t)records[i].n_token_times - 1;
    size_t n_req = n_records > 0 ? (size_t)n_records : 1;
    double *ttft = folo_calloc(n_req, sizeof(double));  /* [completed] ms */
    double *tpot = folo_calloc(n_req, sizeof(double));  /* [requests with >= 2 tokens] ms */
    double *e2el = folo_calloc(n_req, sizeof(double));  /* [completed] ms */
    double *itl = folo_calloc(n_gaps ? n_gaps : 1, sizeof(double)); /* [n_gaps] ms */
    int n_tpot = 0, n_good = 0;
    size_t k_gap = 0;
    for (int i = 0; i < n_records; i++) {
        const folo_bench_record *r = &records[i];
        if (!r->ok) {
            out->failed++;
            continue;
        }
        ttft[out->completed] = folo_bench_ttft_ms(r);
        out->ttft_bands[folo_bench_ttft_band(ttft[out->completed])]++;
        e2el[out->completed] = folo_bench_e2el_ms(r);
        out->completed++;
        if (folo_bench_tpot_ms(r, &tpot[n_tpot])) n_tpot++;
        for (int t = 1; t < r->n_token_times; t++)
            itl[k_gap++] = (r->token_times_s[t] - r->token_times_s[t - 1]) * 1e3;
        out->total_input_tokens += r->n_prompt_tokens;
        out->total_output_tokens += r->n_output_tokens;
        if (out->has_goodput && meets_slo(r, slo)) n_good++;
    }
    folo_bench_dist_compute(ttft, out->completed, &out->ttft_ms);
    folo_bench_dist_compute(tpot, n_tpot, &out->tpot_ms);
    folo_bench_dist_compute(itl, (int)n_gaps, &out->itl_ms);
    folo_bench_dist_compute(e2el, out->completed, &out->e2el_ms);
    free(ttft);
    free(tpot);
    free(e2el);
    free(itl);
    peaks(records, n_records, out);
    if (duration_s > 0) {
        out->request_throughput = out->completed / duration_s;
        out->request_goodput = n_good / duration_s;
        out->output_throughput = (double)out->total_output_tokens / duration_s;
        out->total_token_throughput =
            (double)(out->total_input_tokens + out->total_output_tokens) / duration_s;
    }
}

/* ---- JSON -------------------------------------------------------------------- */

/* vLLM's key for a percentile: "99" for 99, "99.9" for 99.9. */
static void percentile_key(char *key, size_t cap, double p, const char *metric) {
    if (p == floor(p))
        snprintf(key, cap, "p%d_%s_ms", (int)p, metric);
    else
        snprintf(key, cap, "p%g_%s_ms", p, metric);
}

static void dist_json(json_t *o, const char *metric, const folo_bench_dist *d) {
    char key[64];
    snprintf(key, sizeof key, "mean_%s_ms", metric);
    json_object_set_new(o, key, json_real(d->mean));
    snprintf(key, sizeof key, "median_%s_ms", metric);
    json_object_set_new(o, key, json_real(d->median));
    snprintf(key, sizeof key, "std_%s_ms", metric);
    json_object_set_new(o, key, json_real(d->std));
    for (int k = 0; k < FOLO_BENCH_N_PERCENTILES; k++) {
        percentile_key(key, sizeof key, folo_bench_percentiles[k], metric);
        json_object_set_new(o, key, json_real(d->p[k]));
    }
}

json_t *folo_bench_summary_json(const folo_bench_summary *s) {
    json_t *o = json_object();
    json_object_set_new(o, "completed", json_integer(s->completed));
    json_object_set_new(o, "failed", json_integer(s->failed));
    json_object_set_new(o, "duration", json_real(s->duration_s));
    json_object_set_new(o, "total_input_tokens", json_integer(s->total_input_tokens));
    json_object_set_new(o, "total_output_tokens", json_integer(s->total_output_tokens));
    json_object_set_new(o, "request_throughput", json_real(s->request_throughput));
    json_object_set_new(o, "request_goodput",
                        s->has_goodput ? json_real(s->request_goodput) : json_null());
    json_object_set_new(o, "output_throughput", json_real(s->output_throughput));
    json_object_set_new(o, "total_token_throughput", json_real(s->total_token_throughput));
    dist_json(o, "ttft", &s->ttft_ms);
    dist_json(o, "tpot", &s->tpot_ms);
    dist_json(o, "itl", &s->itl_ms);
    dist_json(o, "e2el", &s->e2el_ms);
    json_object_set_new(o, "max_output_tokens_per_s", json_real(s->max_output_tokens_per_s));
    json_object_set_new(o, "max_concurrent_requests", json_integer(s->max_concurrent_requests));
    json_t *bands = json_object();
    for (int b = 0; b < FOLO_BENCH_N_TTFT_BANDS; b++)
        json_object_set_new(bands, folo_bench_ttft_band_names[b], json_integer(s->ttft_bands[b]));
    json_object_set_new(o, "ttft_bands", bands);
    return o;
}

json_t *folo_bench_errors_json(const folo_bench_record *records, int n_records) {
    json_t *o = json_object();
    for (int i = 0; i < n_records; i++) {
        if (records[i].ok) continue;
        const char *why = records[i].error[0] ? records[i].error : "unknown";
        json_t *count = json_object_get(o, why);
        json_object_set_new(o, why, json_integer(count ? json_integer_value(count) + 1 : 1));
    }
    return o;
}

json_t *folo_bench_record_json(const folo_bench_record *r) {
    json_t *o = json_object();
    json_object_set_new(o, "ok", json_boolean(r->ok));
    json_object_set_new(o, "error", r->ok ? json_null() : json_string(r->error));
    json_object_set_new(o, "prompt_tokens", json_integer(r->n_prompt_tokens));
    json_object_set_new(o, "output_tokens", json_integer(r->n_output_tokens));
    json_object_set_new(o, "usage_prompt_tokens", r->n_usage_prompt_tokens > 0
                                                      ? json_integer(r->n_usage_prompt_tokens)
                                                      : json_null());
    json_object_set_new(o, "arrival_s", json_real(r->arrival_s));
    json_object_set_new(o, "first_scheduled_s", isnan(r->first_scheduled_s)
                                                    ? json_null()
                                                    : json_real(r->first_scheduled_s));
    json_object_set_new(o, "first_token_s", json_real(r->first_token_s));
    json_object_set_new(o, "finish_s", json_real(r->finish_s));
    json_object_set_new(o, "ttft_ms", json_real(folo_bench_ttft_ms(r)));
    double tpot;
    json_object_set_new(o, "tpot_ms",
                        folo_bench_tpot_ms(r, &tpot) ? json_real(tpot) : json_null());
    json_object_set_new(o, "e2el_ms", json_real(folo_bench_e2el_ms(r)));
    json_t *itl = json_array();
    for (int t = 1; t < r->n_token_times; t++)
        json_array_append_new(itl,
                              json_real((r->token_times_s[t] - r->token_times_s[t - 1]) * 1e3));
    json_object_set_new(o, "itl_ms", itl);
    return o;
}
