/* The self-contained HTML report of a `folo bench` run (--html FILE): one
 * file, no scripts, no external resources, charts drawn as inline SVG.
 *
 * It is made from the same JSON document the run writes with --json (see
 * docs/bench-schema.json), so every mode gets the same treatment:
 *   - the run's parameters and, per batch size or request rate, the
 *     summary table (vLLM's figures);
 *   - the TTFT and ITL distributions of every batch size or rate, as a
 *     histogram (of the first) and as CDFs (all on one chart);
 *   - for a sweep (batch sizes, request rates, prefix hit ratios), output
 *     and total token throughput, and mean and p99 TTFT, TPOT and E2EL,
 *     against the swept value (for rates: where latency breaks);
 *   - for the stages mode, bars per stage of the throughputs, the mean
 *     latencies and the KV cache's utilization, and its side tables;
 *   - the roofline figures the run recorded (in the parameters);
 *   - for the memory mode, which has no latencies, its table of figures. */
#ifndef FOLO_BENCH_HTML_H
#define FOLO_BENCH_HTML_H

#include <jansson.h>

#include "core/error.h"

int folo_bench_html_write(const char *path, const json_t *run, folo_error *err);

#endif
