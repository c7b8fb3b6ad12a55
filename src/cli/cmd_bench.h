/* The modes of `folo bench` that live in their own files (cmd_bench.c
 * dispatches to them with argv starting at the mode's name), and the flag
 * parsing they share with it. */
#ifndef FOLO_CLI_CMD_BENCH_H
#define FOLO_CLI_CMD_BENCH_H

#include <getopt.h>
#include <jansson.h>

#include "bench/roofline.h"
#include "bench/stats.h"
#include "core/gpu_stats.h"
#include "folo.h"

int folo_cmd_bench_serve(int argc, char **argv);
int folo_cmd_bench_compare(int argc, char **argv);
int folo_cmd_bench_stages(int argc, char **argv);

/* The flags of the report every measuring mode shares: goodput SLOs, the
 * roofline's hardware profile, and the output files. Their getopt values
 * start at 900, below the engine's (1000) and above a command's own. */
typedef struct bench_report_flags {
    folo_bench_slo slo;        /* ms */
    const char *hardware;      /* roofline profile name; NULL: folo_bench_hardware_pick's */
    float bandwidth_gbs;       /* GB/s; 0: the profile's */
    float peak_tflops;         /* TFLOP/s; 0: the profile's */
    int devices;               /* of the seeds' estimate (1) */
    const char *json_path;
    const char *html_path;
} bench_report_flags;

enum {
    BENCH_OPT_GOODPUT = 900, BENCH_OPT_HARDWARE, BENCH_OPT_BANDWIDTH, BENCH_OPT_PEAK,
    BENCH_OPT_DEVICES, BENCH_OPT_JSON, BENCH_OPT_HTML, BENCH_OPT_SLO
};
#define BENCH_REPORT_LONG_OPTIONS                                       \
    {"goodput", required_argument, NULL, BENCH_OPT_GOODPUT},            \
    {"slo", required_argument, NULL, BENCH_OPT_SLO},                    \
    {"hardware", required_argument, NULL, BENCH_OPT_HARDWARE},          \
    {"bandwidth-gbs", required_argument, NULL, BENCH_OPT_BANDWIDTH},    \
    {"peak-tflops", required_argument, NULL, BENCH_OPT_PEAK},           \
    {"devices", required_argument, NULL, BENCH_OPT_DEVICES},            \
    {"json", required_argument, NULL, BENCH_OPT_JSON},                  \
    {"html", required_argument, NULL, BENCH_OPT_HTML}
#define BENCH_REPORT_HELP                                                                   \
    "      --goodput SLOS         SLOs in ms for request_goodput, e.g. ttft:200,tpot:50\n"    \
    "                             (any of ttft, tpot, e2el; may be repeated)\n"               \
    "      --slo NAME             the seeds' scenario SLO for goodput: chat (TTFT < 200 ms),\n" \
    "                             batch (< 1000 ms) or realtime (< 50 ms)\n"                  \
    "      --hardware NAME        roofline profile: a100, h100, h200, or cpu: this machine,\n" \
    "                             measured now (default: cpu, h100 for --device cuda)\n"      \
    "      --bandwidth-gbs X      memory bandwidth for the roofline, GB/s\n"                  \
    "                             (default: the profile's)\n"                                 \
    "      --peak-tflops X        peak dense TFLOP/s for the roofline (default: the profile's)\n" \
    "      --devices N            devices in the seeds' estimate of tokens/s (default 1)\n"   \
    "      --json FILE            write the summaries and raw per-request records\n"          \
    "      --html FILE            write a self-contained report with charts (inline SVG)\n"

/* The default case of a bench mode's getopt loop: parses c (with optarg)
 * into r when it is a report flag (0), else into e when it is an engine
 * flag (0); on a bad value or an unknown flag prints the error, returns 2. */
int bench_common_flag(const char *cmd, const char *usage, int c, char **argv,
                      bench_report_flags *r, folo_engine_options *e);

/* The roofline of r's flags for the model of fig, run on e's device. */
int bench_roofline(const bench_report_flags *r, const folo_engine_options *e,
                   const folo_bench_model_figures *fig, folo_bench_roofline *out,
                   folo_error *err);

/* Stops gpu (folo_gpu_sampler_start); where NVML gave figures, fills
 * *usage, adds them to out as "gpu" and prints them; false where it gave
 * none (no NVIDIA driver). */
bool bench_gpu_report(folo_gpu_sampler *gpu, json_t *out, folo_gpu_usage *usage);

/* `folo bench prefix` run for another mode (bench stages' side table): its
 * table on stdout, its JSON (the mode's whole document) into *out. */
typedef struct bench_prefix_spec {
    const char *model;                  /* checkpoint directory */
    const folo_engine_options *engine;  /* model_dir is set from model */
    const bench_report_flags *report;   /* goodput SLOs */
    const folo_bench_roofline *roof;    /* the roofline already measured */
    const int *ratios;                  /* [n_ratios] target hit ratios, % */
    int n_ratios;
    int input_len;                      /* tokens per prompt */
    int output_len;                     /* tokens per request */
    int num_prompts;                    /* measured requests per ratio */
    uint64_t seed;
} bench_prefix_spec;
int bench_prefix_table(const bench_prefix_spec *spec, json_t **out, folo_error *err);

/* Writes out to --json and --html when given. */
int bench_write_reports(const bench_report_flags *r, const json_t *out, folo_error *err);

/* Parses one item of a comma-separated list into slot `index`; returns 0,
 * or -1 after printing the error. */
typedef int (*bench_item_fn)(const char *item, int index, void *ctx);

/* Splits v ("1,2,inf") into at most max items for fn; *n their count.
 * Returns 0, or 2 after printing a usage error (empty item, too many). */
int bench_parse_list(const char *cmd, const char *usage, const char *flag, const char *v,
                     int max, bench_item_fn fn, void *ctx, int *n);

/* --dataset-name: random or sharegpt, into *out. Returns 0, or 2 after
 * the usage error. */
int bench_parse_dataset_name(const char *cmd, const char *usage, const char *v,
                             const char **out);
/* --dataset-name sharegpt needs --dataset-path, random takes none. Returns
 * 0, or 2 after the usage error. */
int bench_check_dataset(const char *cmd, const char *usage, const char *name, const char *path);

/* A request rate: a positive number of requests/s, or "inf" (INFINITY: all
 * at once). Returns 0, or -1 after printing the error naming flag. */
int bench_parse_rate(const char *cmd, const char *flag, const char *v, double *out);
/* "2", "0.5" or "inf". */
void bench_format_rate(char *buf, size_t cap, double rate);

/* --random-range-ratio: a number in [0, 1), kept in double precision so a
 * length's bounds are those Python computes for vLLM from the same text.
 * Returns 0, or 2 after printing the error. */
int bench_parse_range_ratio(const char *cmd, const char *v, double *out);
#define BENCH_RANGE_RATIO_HELP                                                              \
    "      --random-range-ratio R each length uniform in len * [1 - R, 1 + R], floor and ceil\n" \
    "                             of the ends as in vLLM's random dataset, 0 <= R < 1\n"     \
    "                             (default 0: every length exactly len)\n"

#endif
