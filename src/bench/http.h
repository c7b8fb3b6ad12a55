/* The HTTP client of `folo bench serve`: an open-loop load generator over
 * the OpenAI streaming completions API, on libcurl's multi interface.
 *
 * One thread drives every stream: each request is added to the multi handle
 * at its scheduled send time (or, with a concurrency limit, when a slot
 * frees after that time, as vLLM's semaphore does), and the write callback
 * stamps every chunk with folo_now_s() as its bytes arrive. The request is
 * vLLM's: {"model", "prompt", "max_tokens", "stream": true,
 * "stream_options": {"include_usage": true}} (plus "ignore_eos": true when
 * asked), so the SSE events are text chunks and a last usage chunk. As in
 * vLLM's bench, every event carrying choices is one token: TTFT runs from
 * the send to the first such event, ITL is the gap between consecutive
 * ones, and the output token count is the usage chunk's completion_tokens
 * (the number of events when a server sends no usage). The end of a
 * request is the arrival of its "data: [DONE]". OPENAI_API_KEY, when set,
 * is sent as a bearer token. */
#ifndef FOLO_BENCH_HTTP_H
#define FOLO_BENCH_HTTP_H

#include <stdbool.h>

#include "bench/dataset.h"
#include "bench/stats.h"
#include "core/error.h"
#include "core/log.h"

typedef struct folo_bench_http_options {
    const char *url;       /* the endpoint, e.g. http://127.0.0.1:8000/v1/completions */
    const char *model;     /* the "model" of every request */
    int max_concurrency;   /* requests in flight at most; 0 = no limit */
    bool ignore_eos;
} folo_bench_http_options;

/* Sends prompts[i] at send_at_s[i] seconds (non-decreasing) after the start
 * and fills records[i] (fresh, folo_bench_record_free them); a failed
 * request is a record with ok false and its error, not an error of the
 * run. *duration_s is the time from the start to the last request's end;
 * bar (may be NULL) advances by one per finished request. Returns -1 only
 * when libcurl itself cannot run. */
int folo_bench_http_run(const folo_bench_http_options *o, const folo_bench_prompt *prompts,
                        const double *send_at_s, int n, folo_bench_record *records,
                        double *duration_s, folo_progress *bar, folo_error *err);

/* The id of the first model base_url's GET /v1/models lists, owned; NULL
 * with err set when the server cannot be reached or lists none. */
char *folo_bench_http_first_model(const char *base_url, folo_error *err);

#endif
