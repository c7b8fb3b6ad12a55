/* Benchmark statistics: the serving metrics of DESIGN §7, with the names and
 * meanings of vLLM's `vllm bench serve` (benchmark_serving.py), so folo's
 * JSON results line up with vLLM's key for key.
 *
 * Input is one folo_bench_record per request: the engine's monotonic
 * timestamps (seconds) and token counts. From them, per request:
 *   TTFT  = first token - arrival                       (ms)
 *   TPOT  = (finish - first token) / (n_output - 1)     (ms; undefined for
 *           one output token, so such requests are left out of TPOT)
 *   ITL   = each gap between consecutive output tokens  (ms, n_output - 1 gaps)
 *   E2EL  = finish - arrival                            (ms)
 * and over a run of `duration_s` seconds, counting completed requests only:
 * request, output and total token throughput, and goodput, the completed
 * requests per second that met every SLO given (vLLM counts a one-token
 * request's TPOT as 0 there, and so does folo).
 *
 * Every distribution is summarized as vLLM does with numpy: mean, median,
 * population standard deviation (np.std) and percentiles with numpy's
 * default linear interpolation (np.percentile, method "linear"); an empty
 * distribution summarizes to zeros (vLLM's `np.mean(x or 0)`).
 *
 * The module computes and formats; it never runs the engine nor prints. */
#ifndef FOLO_BENCH_STATS_H
#define FOLO_BENCH_STATS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

/* The percentiles every distribution reports: p50, p90, p95, p99, p99.9. */
#define FOLO_BENCH_N_PERCENTILES 5
extern const double folo_bench_percentiles[FOLO_BENCH_N_PERCENTILES];

/* One request as the engine reported it (folo_request_metrics), or as an
 * HTTP client saw it: then arrival is the send, token times are the
 * arrivals of the stream's chunks (one per token on servers that stream
 * each token, as vLLM's bench assumes), the output count is the server's
 * usage figure, and the first scheduling is unknown (NAN). */
typedef struct folo_bench_record {
    bool ok;                  /* finished by stop or length (not error or abort) */
    int n_prompt_tokens;      /* tokens */
    int n_output_tokens;      /* tokens */
    int n_usage_prompt_tokens; /* the server's usage.prompt_tokens; 0 when not reported */
    double arrival_s;         /* s, folo_now_s clock */
    double first_scheduled_s; /* s; NAN when unknown */
    double first_token_s;     /* s */
    double finish_s;          /* s */
    double *token_times_s;    /* [n_token_times] s, owned (folo_bench_record_free) */
    int n_token_times;        /* times of the tokens (chunks) received */
    char error[128];          /* why a request failed ("" when ok) */
} folo_bench_record;

/* Copies n token times into r (token_times_s owned) and sets both
 * r->n_token_times and r->n_output_tokens to n. */
void folo_bench_record_set_times(folo_bench_record *r, const double *token_times_s, int n);
void folo_bench_record_free(folo_bench_record *r);

double folo_bench_ttft_ms(const folo_bench_record *r);  /* ms */
double folo_bench_e2el_ms(const folo_bench_record *r);  /* ms */
/* ms; false (and *tpot_ms untouched) when n_output_tokens < 2. */
bool folo_bench_tpot_ms(const folo_bench_record *r, double *tpot_ms);

/* Service-level objectives for goodput, in ms; <= 0 means "not given". */
typedef struct folo_bench_slo {
    double ttft_ms;
    double tpot_ms;
    double e2el_ms;
} folo_bench_slo;

/* Parses "ttft:200,tpot:50" (any of ttft, tpot, e2el, ms values > 0) into
 * slo, keeping the fields it does not name. */
int folo_bench_slo_parse(const char *spec, folo_bench_slo *slo, folo_error *err);
/* The seeds' scenario SLOs by name, set into slo's TTFT: chat (200 ms),
 * batch (1000 ms), realtime (50 ms). */
int folo_bench_slo_preset(const char *name, folo_bench_slo *slo, folo_error *err);

/* The seeds' TTFT bands: instant < 100 ms, fast 100-300 ms, slow
 * 300-1000 ms, stalled > 1000 ms. */
enum { FOLO_BENCH_N_TTFT_BANDS = 4 };
extern const char *const folo_bench_ttft_band_names[FOLO_BENCH_N_TTFT_BANDS];
int folo_bench_ttft_band(double ttft_ms);
bool folo_bench_slo_any(const folo_bench_slo *slo);

/* One distribution's summary, in the unit of its values. */
typedef struct folo_bench_dist {
    int n;                                 /* values summarized */
    double mean;
    double median;
    double std;                            /* population (ddof = 0) */
    double p[FOLO_BENCH_N_PERCENTILES];    /* at folo_bench_percentiles */
} folo_bench_dist;

/* numpy's linear-interpolation percentile of sorted[0..n), p in [0, 100]. */
double folo_bench_percentile(const double *sorted, int n, double p);
/* Summarizes values[0..n) (sorted in place). */
void folo_bench_dist_compute(double *values, int n, folo_bench_dist *out);

/* vLLM's BenchmarkMetrics. */
typedef struct folo_bench_summary {
    int completed;                 /* requests finished ok */
    int failed;                    /* requests finished by error or abort */
    double duration_s;             /* s, wall time of the run */
    int64_t total_input_tokens;    /* tokens, completed requests */
    int64_t total_output_tokens;   /* tokens, completed requests */
    double request_throughput;     /* requests/s */
    bool has_goodput;              /* an SLO was given */
    double request_goodput;        /* requests/s meeting every SLO given */
    double output_throughput;      /* output tokens/s */
    double total_token_throughput; /* (input + output) tokens/s */
    folo_bench_dist ttft_ms;       /* ms */
    folo_bench_dist tpot_ms;       /* ms, requests with >= 2 output tokens */
    folo_bench_dist itl_ms;        /* ms, every gap of every request */
    folo_bench_dist e2el_ms;       /* ms */
    double max_output_tokens_per_s;  /* tokens in the busiest 1 s bucket */
    int max_concurrent_requests;     /* requests alive in the busiest 1 s bucket */
    int ttft_bands[FOLO_BENCH_N_TTFT_BANDS]; /* completed requests per TTFT band */
} folo_bench_summary;

/* slo may be NULL. The peaks are vLLM's: time from the first completed
 * request's arrival is cut into 1 s buckets; a bucket counts the tokens
 * whose time falls in it, and the completed requests whose [arrival,
 * finish] touches it. */
void folo_bench_summarize(const folo_bench_record *records, int n_records, double duration_s,
                          const folo_bench_slo *slo, folo_bench_summary *out);

/* The summary under vLLM's keys: completed, duration, total_input_tokens,
 * total_output_tokens, request_throughput, request_goodput (null without
 * SLOs), output_throughput, total_token_throughput, and for each of ttft,
 * tpot, itl, e2el: mean_X_ms, median_X_ms, std_X_ms, p50_X_ms, p90_X_ms,
 * p95_X_ms, p99_X_ms, p99.9_X_ms, max_output_tokens_per_s,
 * max_concurrent_requests. folo adds "failed" and "ttft_bands" ({band:
 * requests}). A new reference. */
json_t *folo_bench_summary_json(const folo_bench_summary *s);
/* The failed requests by error message: {"message": count}, vLLM's
 * "errors" of a run. A new reference. */
json_t *folo_bench_errors_json(const folo_bench_record *records, int n_records);
/* One request's raw record: prompt_tokens, output_tokens,
 * usage_prompt_tokens (null when not reported), ok, error (null when ok),
 * the timestamps (s; first_scheduled_s null when unknown), ttft_ms, tpot_ms (null for one token), e2el_ms and itl_ms (an array of
 * n_token_times - 1 gaps). A new reference. */
json_t *folo_bench_record_json(const folo_bench_record *r);

#endif
