/* The in-process engine driver of the `folo bench` modes that run an engine
 * in this process (latency, throughput, prefix, memory, stages): it adds
 * token-id requests to an engine, steps the engine synchronously until they
 * finish, and collects what the modes report:
 *   - per request, a folo_bench_record from the engine's own timestamps,
 *     and, when asked, its output token ids (bench stages compares them
 *     across stages);
 *   - per step, the wall time around folo_engine_step, split by whether the
 *     step computed any prompt token (prefill) or only decodes;
 *   - the KV cache: the blocks held and the tokens they store
 *     (folo_engine_stats.kv_tokens_stored) at the fullest step, and both
 *     summed over the steps, whose ratio is the mean utilization.
 *
 * An open-loop workload (folo_bench_driver_run_timed) adds each request
 * when its send time has passed, between steps, and records as its arrival
 * the send time itself: a request that arrives while a step runs waits for
 * that step to end, exactly as it would on the engine's own thread, and
 * that wait is part of its TTFT. When nothing runs and the next request is
 * not due, the driver sleeps until it is.
 *
 * Requests are numbered in the order they are added; the engine must have
 * no requests of anyone else. Only the public API (folo.h) is used. */
#ifndef FOLO_BENCH_DRIVER_H
#define FOLO_BENCH_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "bench/stats.h"
#include "core/error.h"
#include "core/log.h"
#include "folo.h"

/* What the steps a driver ran did. Fields add up across drivers. */
typedef struct folo_bench_steps {
    int64_t n_prefill_steps;    /* steps computing any prompt token */
    int64_t n_decode_steps;     /* steps computing only decode tokens */
    double prefill_s;           /* s */
    double decode_s;            /* s */
    int peak_blocks_used;       /* KV blocks held at the fullest step (the last such) */
    int64_t peak_tokens_stored; /* tokens whose KV those blocks held then */
    double stored_token_steps;  /* sums over steps of the tokens stored ... */
    double held_token_steps;    /* ... and of the capacity of the blocks held (tokens) */
} folo_bench_steps;

/* dst += src: the counts and sums add, the peak is src's when at least
 * as full as dst's. */
void folo_bench_steps_add(folo_bench_steps *dst, const folo_bench_steps *src);

/* One request of a workload. */
typedef struct folo_bench_request {
    const int32_t *prompt;      /* [n_prompt] token ids */
    int n_prompt;
    int max_tokens;             /* generated exactly (ignore_eos) */
    double send_at_s;           /* s after the run starts (run_timed only) */
} folo_bench_request;

typedef struct folo_bench_driver {
    folo_engine *engine;        /* borrowed */
    int cap;                    /* requests it can take */
    folo_bench_record *records; /* [cap] borrowed; record i is filled when request i finishes */
    int32_t **output_ids;       /* [cap] owned arrays when outputs are kept, else NULL */
    int *n_output_ids;          /* [cap] */
    int *n_tokens;              /* [cap] output tokens of each request so far */
    double *arrival_s;          /* [cap] the arrival each record gets (0: the engine's) */
    uint64_t first_id;          /* the engine's id of request 0 */
    int n_added;
    int n_finished;
    folo_bench_steps steps;
    folo_progress *bar;         /* advanced per finished request, or NULL */
    int *n_done;                /* the bar's count (shared across drivers), or NULL */
} folo_bench_driver;

/* records[0..cap) receive the requests' figures; with keep_outputs each
 * request's output token ids are kept too; bar and n_done may be NULL. */
void folo_bench_driver_init(folo_bench_driver *d, folo_engine *engine, folo_bench_record *records,
                            int cap, bool keep_outputs, folo_progress *bar, int *n_done);
void folo_bench_driver_free(folo_bench_driver *d);

/* Adds one greedy ignore_eos request now; arrival_s > 0 replaces the
 * arrival its record gets (folo_now_s clock). */
int folo_bench_driver_add(folo_bench_driver *d, const folo_bench_request *r, double arrival_s,
                          folo_error *err);
/* One engine step, its figures recorded. */
int folo_bench_driver_step(folo_bench_driver *d, folo_error *err);
/* Steps until every request added has finished. */
int folo_bench_driver_finish(folo_bench_driver *d, folo_error *err);
/* The open loop above: requests[0..n) (send times ascending), added at
 * *t0_s (set to folo_now_s() at the start) + send_at_s each; returns when
 * all have finished. */
int folo_bench_driver_run_timed(folo_bench_driver *d, const folo_bench_request *requests, int n,
                                double *t0_s, folo_error *err);

#endif
