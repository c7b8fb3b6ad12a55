/* What every `folo bench` mode reports the same way: the rows of the
 * latency table on stdout, the JSON of a run's records, and the JSON file. */
#ifndef FOLO_BENCH_REPORT_H
#define FOLO_BENCH_REPORT_H

#include <jansson.h>

#include "bench/stats.h"
#include "core/error.h"

/* The header of the rows below: label columns, then mean, median, p90,
 * p95, p99 (ms). */
void folo_bench_print_dist_header(const char *first_column);
/* One row: "<label> <name> mean median p90 p95 p99". */
void folo_bench_print_dist_row(const char *label, const char *name, const folo_bench_dist *d);
/* The four rows of a summary: TTFT, TPOT, ITL, E2E, labelled on the first. */
void folo_bench_print_dists(const char *label, const folo_bench_summary *s);

/* The label of one entry of a run's "results" (docs/bench-schema.json):
 * "batch 4" (latency), "rate 2" or "rate inf" (serve), "hit 50%" (prefix),
 * "stage M3" (stages), "all" for anything else (a throughput run, a vLLM
 * result file). */
void folo_bench_entry_label(const json_t *entry, char *buf, size_t cap);

/* An array of folo_bench_record_json. A new reference. */
json_t *folo_bench_records_json(const folo_bench_record *records, int n);
/* Frees each record and the array. */
void folo_bench_records_free(folo_bench_record *records, int n);

/* Writes j, indented, keys in insertion order; the error names flag. */
int folo_bench_write_json(const char *path, const json_t *j, folo_error *err);

#endif
