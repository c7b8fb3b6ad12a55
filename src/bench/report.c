/* What every `folo bench` mode reports the same way (see report.h). */
#include "bench/report.h"

#include <stdio.h>
#include <stdlib.h>

void folo_bench_print_dist_header(const char *first_column) {
    printf("%8s  %-5s %10s %10s %10s %10s %10s   (ms)\n", first_column, "", "mean", "median",
           "p90", "p95", "p99");
}

void folo_bench_print_dist_row(const char *label, const char *name, const folo_bench_dist *d) {
    printf("%8s  %-5s %10.3f %10.3f %10.3f %10.3f %10.3f\n", label, name, d->mean, d->median,
           d->p[1], d->p[2], d->p[3]);
}

void folo_bench_print_dists(const char *label, const folo_bench_summary *s) {
    folo_bench_print_dist_row(label, "TTFT", &s->ttft_ms);
    folo_bench_print_dist_row("", "TPOT", &s->tpot_ms);
    folo_bench_print_dist_row("", "ITL", &s->itl_ms);
    folo_bench_print_dist_row("", "E2E", &s->e2el_ms);
    /* The seeds' TTFT bands, as shares of the completed requests. */
    printf("%8s  TTFT bands:", "");
    for (int b = 0; b < FOLO_BENCH_N_TTFT_BANDS; b++)
        printf(" %s %.0f%%", folo_bench_ttft_band_names[b],
               s->completed ? 100.0 * s->ttft_bands[b] / s->completed : 0.0);
    printf("  (< 100, 100-300, 300-1000, > 1000 ms)\n");
}

void folo_bench_entry_label(const json_t *entry, char *buf, size_t cap) {
    const json_t *bs = json_object_get(entry, "batch_size");
    const json_t *rate = json_object_get(entry, "request_rate");
    const json_t *hit = json_object_get(entry, "target_hit_ratio");
    const json_t *stage = json_object_get(entry, "stage");
    if (json_is_string(stage))
        snprintf(buf, cap, "stage %s", json_string_value(stage));
    else if (json_is_integer(bs))
        snprintf(buf, cap, "batch %lld", (long long)json_integer_value(bs));
    else if (json_is_string(rate))
        snprintf(buf, cap, "rate %s", json_string_value(rate));
    else if (json_is_number(rate))
        snprintf(buf, cap, "rate %g", json_number_value(rate));
    else if (json_is_number(hit))
        snprintf(buf, cap, "hit %g%%", 100 * json_number_value(hit));
    else
        snprintf(buf, cap, "all");
}

json_t *folo_bench_records_json(const folo_bench_record *records, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, folo_bench_record_json(&records[i]));
    return a;
}

void folo_bench_records_free(folo_bench_record *records, int n) {
    for (int i = 0; i < n; i++) folo_bench_record_free(&records[i]);
    free(records);
}

int folo_bench_write_json(const char *path, const json_t *j, folo_error *err) {
    if (json_dump_file(j, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0)
        return folo_fail(err, "--json: cannot write %s", path);
    return 0;
}
