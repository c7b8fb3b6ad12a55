/* The Prometheus metrics of `folo serve` (GET /metrics): vLLM's names and
 * meanings with the prefix `folo:` and the label `model_name`, plus the
 * process_* figures of prometheus_client, in the text exposition format
 * 0.0.4.
 *
 * Pure bookkeeping: the server feeds every finished sample stream
 * (folo_metrics_observe_finished) and every step's token count
 * (folo_metrics_observe_step), and renders the document with the engine's
 * stats snapshot (gauges and cache/preemption counters), the process
 * figures and the GPUs' memory and utilization (core/gpu_stats.h: gauges
 * labelled gpu, absent without NVML rather than zeros). No locking here:
 * the caller serializes. As in vLLM's parallel sampling, each of a
 * request's n samples counts as one request. */
#ifndef FOLO_SERVER_METRICS_H
#define FOLO_SERVER_METRICS_H

#include <stdint.h>

#include "core/buf.h"
#include "core/gpu_stats.h"
#include "folo.h"

/* The most bucket bounds a histogram has (+Inf not counted). */
#define FOLO_METRICS_MAX_BOUNDS 24

typedef enum folo_metrics_histogram {
    FOLO_H_TTFT,              /* time_to_first_token_seconds: first token - arrival */
    FOLO_H_ITL,               /* inter_token_latency_seconds: each gap between tokens */
    FOLO_H_TPOT,              /* request_time_per_output_token_seconds (2+ tokens) */
    FOLO_H_E2E,               /* e2e_request_latency_seconds: finish - arrival */
    FOLO_H_QUEUE,             /* request_queue_time_seconds: first scheduled - arrival */
    FOLO_H_PREFILL,           /* request_prefill_time_seconds: first token - first scheduled */
    FOLO_H_DECODE,            /* request_decode_time_seconds: last token - first token */
    FOLO_H_PROMPT_TOKENS,     /* request_prompt_tokens */
    FOLO_H_GENERATION_TOKENS, /* request_generation_tokens */
    FOLO_H_ITERATION_TOKENS,  /* iteration_tokens_total: tokens computed per step */
    FOLO_H_COUNT
} folo_metrics_histogram;

typedef struct folo_histogram {
    const double *bounds;                       /* [n_bounds] ascending upper bounds */
    int n_bounds;
    uint64_t counts[FOLO_METRICS_MAX_BOUNDS + 1]; /* per bucket, not cumulative; last: +Inf */
    uint64_t count;
    double sum;
} folo_histogram;

typedef struct folo_metrics {
    folo_histogram h[FOLO_H_COUNT];
    int64_t prompt_tokens;      /* prompt tokens of the finished samples */
    int64_t generation_tokens;  /* output tokens of the finished samples */
    int64_t success[FOLO_FINISH_ERROR + 1]; /* finished samples by reason */
} folo_metrics;

/* What prometheus_client's process collector reports, read from /proc. */
typedef struct folo_process_stats {
    double resident_bytes;
    double virtual_bytes;
    double start_time_s;   /* seconds since the Unix epoch */
    double cpu_s;          /* user + system */
    int open_fds;
    int max_fds;
} folo_process_stats;

void folo_metrics_init(folo_metrics *m);
/* One finished sample stream: its metrics (folo_output.metrics) and why it
 * ended. */
void folo_metrics_observe_finished(folo_metrics *m, const folo_request_metrics *rm,
                                   folo_finish_reason reason);
void folo_metrics_observe_step(folo_metrics *m, int n_tokens);
/* Appends the whole exposition to out. ps may be NULL (no process_*);
 * gpus[n_gpus] are the devices sampled now (none: no GPU gauges). */
void folo_metrics_render(const folo_metrics *m, const char *model_name,
                         const folo_engine_stats *st, const folo_process_stats *ps,
                         const folo_gpu_sample *gpus, int n_gpus, folo_buf *out);
/* Fills out from /proc/self; returns -1 when it cannot be read. */
int folo_process_stats_read(folo_process_stats *out);

#endif
