/* folo bench compare: runs of `folo bench ... --json` side by side.
 *
 * Each file is a list of summaries under labels (folo_bench_entry_label):
 * a latency run's batch sizes ("batch 4"), a serve run's request rates
 * ("rate inf"), a prefix run's hit ratios ("hit 50%"), a stages run's
 * stages ("stage M3"), a throughput run's single summary ("all"). For
 * every label of the first file, a table gives the headline figures of
 * each file that has the same label, and each one's ratio to the first
 * file's (so "0.50x" on a latency is half the first run's, on a throughput
 * half its speed). Summaries are
 * read by vLLM's key names (src/bench/stats.h), so the JSON of `vllm bench
 * serve --save-result` compares too: a file whose top level is a summary is
 * one run labelled "all". */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "bench/report.h"
#include "cli/cli.h"
#include "cli/cmd_bench.h"

static const char k_cmd[] = "bench compare";
static const char k_usage[] = "usage: folo bench compare A.json B.json [...]\n";
static const char k_help[] =
    "Prints the runs' summaries side by side, matched by batch size (latency), request\n"
    "rate (serve), hit ratio (prefix), stage (stages) or as one table (throughput, or a\n"
    "`vllm bench serve --save-result` file),\n"
    "each figure with its ratio to the first file's.\n";

#define MAX_FILES 16

/* The figures compared: vLLM's summary keys. */
static const char *const k_keys[] = {
    "completed", "request_throughput", "output_throughput", "total_token_throughput",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms",
    "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms", "mean_e2el_ms",
    "p99_e2el_ms",
};

/* The run's summary under label, or NULL. */
static const json_t *find_summary(const json_t *run, const char *label) {
    const json_t *results = json_object_get(run, "results");
    if (!json_is_array(results)) {
        const json_t *s = json_object_get(run, "summary");
        if (!s) s = run;  /* a vLLM result file: the summary keys at the top */
        return strcmp(label, "all") == 0 ? s : NULL;
    }
    size_t i;
    const json_t *entry;
    json_array_foreach(results, i, entry) {
        char buf[64];
        folo_bench_entry_label(entry, buf, sizeof buf);
        if (strcmp(buf, label) == 0) return json_object_get(entry, "summary");
    }
    return NULL;
}

static void print_table(json_t *const *runs, char **paths, int n, const char *label) {
    printf("\n%s\n%-24s", label, "");
    for (int j = 0; j < n; j++) {  /* the path's end: the part that tells runs apart */
        size_t len = strlen(paths[j]);
        printf(" %22s", paths[j] + (len > 22 ? len - 22 : 0));
    }
    printf("\n");
    const json_t *sums[MAX_FILES];
    for (int j = 0; j < n; j++) sums[j] = find_summary(runs[j], label);
    for (size_t k = 0; k < sizeof k_keys / sizeof k_keys[0]; k++) {
        const json_t *base = json_object_get(sums[0], k_keys[k]);
        if (!json_is_number(base)) continue;
        double b = json_number_value(base);
        printf("%-24s %22.3f", k_keys[k], b);
        for (int j = 1; j < n; j++) {
            const json_t *v = sums[j] ? json_object_get(sums[j], k_keys[k]) : NULL;
            if (!json_is_number(v)) {
                printf(" %22s", "-");
                continue;
            }
            double x = json_number_value(v);
            char cell[64];
            if (b != 0)
                snprintf(cell, sizeof cell, "%.3f (%.2fx)", x, x / b);
            else
                snprintf(cell, sizeof cell, "%.3f", x);
            printf(" %22s", cell);
        }
        printf("\n");
    }
}

int folo_cmd_bench_compare(int argc, char **argv) {
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("%s\n%s", k_usage, k_help);
        return 0;
    }
    int n = argc - 1;
    if (n < 2 || n > MAX_FILES)
        return cli_usage_error(k_cmd, k_usage, "needs 2 to %d JSON files, got %d", MAX_FILES, n);
    json_t *runs[MAX_FILES] = {0};
    int rc = 0;
    for (int j = 0; j < n && rc == 0; j++) {
        json_error_t jerr;
        runs[j] = json_load_file(argv[1 + j], 0, &jerr);
        if (!runs[j]) {
            fprintf(stderr, "folo bench compare: %s: not valid JSON (line %d: %s)\n", argv[1 + j],
                    jerr.line, jerr.text);
            rc = 1;
        } else if (!json_is_object(runs[j])) {
            fprintf(stderr, "folo bench compare: %s: expected a JSON object\n", argv[1 + j]);
            rc = 1;
        }
    }
    if (rc == 0) {
        const json_t *results = json_object_get(runs[0], "results");
        printf("folo bench compare: ratios are to %s\n", argv[1]);
        if (json_is_array(results)) {
            size_t i;
            const json_t *entry;
            json_array_foreach(results, i, entry) {
                char label[64];
                folo_bench_entry_label(entry, label, sizeof label);
                print_table(runs, argv + 1, n, label);
            }
        } else {
            print_table(runs, argv + 1, n, "all");
        }
    }
    for (int j = 0; j < n; j++) json_decref(runs[j]);
    return rc;
}
