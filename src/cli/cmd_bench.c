/* folo bench: benchmarks of the engine in this process, reported with the
 * serving metrics of DESIGN §7 under vLLM's names (src/bench/stats.h).
 *
 *   latency     for each batch size, `iters` rounds of that many synthetic
 *               requests submitted at once (after `warmup` unmeasured
 *               rounds): TTFT, TPOT, ITL and E2E distributions per batch
 *               size, like `vllm bench latency` swept over batch sizes;
 *   throughput  `num-prompts` synthetic requests submitted at once: output,
 *               total and request throughput, peak KV usage, and the time
 *               split between steps that carried prompt tokens (prefill)
 *               and steps that only decoded; with --random-range-ratio each
 *               request's prompt and output lengths are drawn as `bench
 *               serve`'s random dataset draws them (src/bench/dataset.h),
 *               e.g. the nano-vllm workload of lengths uniform in 100-1024;
 *   prefix      for each target hit ratio h, `num-prompts` requests sent one
 *               at a time whose first h% of tokens are one shared prefix
 *               (cached by an unmeasured request first): the prefix-cache
 *               hit rate the engine measured (prefix_hit_tokens /
 *               prefix_queried_tokens) and TTFT, against h = 0.
 *   memory      for each sequence length and batch size, one batch of
 *               that many requests of that length: weights, the KV pool,
 *               the KV blocks held at the fullest step and the tokens they
 *               stored (utilization), what a contiguous max-length
 *               allocation per sequence would take instead, and the
 *               process's peak RSS over the batch (VmHWM, reset before it).
 * (serve and compare live in cmd_bench_serve.c and cmd_bench_compare.c.)
 *
 * Prompts are exactly input-len random token ids from the tokenizer's
 * ordinary vocabulary (no special tokens), drawn from --seed, all distinct
 * so the prefix cache never serves them (but for prefix's shared part); requests are greedy with
 * ignore_eos, so each one generates exactly output-len tokens (or the
 * lengths drawn for it). The engine is
 * stepped synchronously; every latency comes from the engine's own
 * per-request timestamps, and each step is timed around folo_engine_step to
 * split prefill from decode.
 *
 * Every report also states the roofline of DESIGN §9 (src/bench/roofline.h)
 * for a hardware profile (--hardware: this CPU measured on the spot, or a
 * built-in GPU): a decode step must read every weight once, so weight
 * bytes / bandwidth is the floor of one decode step, and the measured
 * decode step is given as a fraction of it, the MBU (KV-cache reads, small
 * at these lengths, are left out of the floor, which makes the fraction a
 * slight understatement); a token costs 2 x params FLOPs, so FLOPs / peak
 * is the floor per prefill token, and the run's token throughput is given
 * as a fraction of the peak, the MFU, with the seeds' estimate of tokens/s
 * on each built-in GPU at that MFU. A table
 * goes to stdout, progress to stderr, and with --json the summaries and
 * every raw per-request record to a file. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "bench/dataset.h"
#include "bench/driver.h"
#include "bench/html.h"
#include "bench/report.h"
#include "bench/roofline.h"
#include "bench/stats.h"
#include "cli/cli.h"
#include "cli/cmd_bench.h"
#include "core/alloc.h"
#include "core/gpu_stats.h"
#include "core/log.h"
#include "core/timer.h"
#include "folo.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define HELP_SHOWN 1
#define MAX_BATCH_SIZES 32

static const char k_cmd[] = "bench";
static const char k_usage[] =
    "usage: folo bench latency [-m DIR] [--input-len N] [--output-len N] [--batch-sizes LIST]\n"
    "                          [--iters N] [--warmup N] [options]\n"
    "       folo bench throughput [-m DIR] [--num-prompts N] [--input-len N] [--output-len N]\n"
    "                             [--random-range-ratio R] [options]\n"
    "       folo bench prefix [-m DIR] [--prefix-hit-ratios LIST] [--num-prompts N] [options]\n"
    "       folo bench memory [-m DIR] [--batch-sizes LIST] [--seq-lens LIST] [options]\n"
    "       folo bench serve [--url URL] [options]   (folo bench serve --help)\n"
    "       folo bench stages [--gptq DIR] [--stages LIST] [options]   (folo bench stages "
    "--help)\n"
    "       folo bench compare A.json B.json [...]\n";
static const char k_help[] =
    "Benchmarks the engine in this process with vLLM's serving metrics (TTFT, TPOT, ITL,\n"
    "E2EL, throughputs, goodput). Prompts are random token ids; every request generates\n"
    "exactly --output-len tokens (ignore_eos). A table goes to stdout, progress to stderr.\n\n"
    "  -m, --model DIR            Hugging Face Qwen3 checkpoint directory\n"
    "                             (default: a synthetic Qwen3-0.6B-shaped model, made on first "
    "use)\n"
    "      --input-len N          prompt tokens per request (default 32)\n"
    "      --output-len N         output tokens per request (default 128)\n"
    "      --batch-sizes LIST     latency: comma-separated batch sizes (default 1,2,4,8,16,32);\n"
    "                             memory: (default 1,4,16)\n"
    "      --seq-lens LIST        memory: prompt + output tokens per sequence\n"
    "                             (default 128,512,1024; --output-len defaults to 16)\n"
    "      --iters N              latency: measured rounds per batch size (default 3)\n"
    "      --warmup N             latency: unmeasured rounds per batch size first (default 1)\n"
    "      --num-prompts N        throughput: requests submitted at once (default 100);\n"
    "                             prefix: requests per hit ratio, one at a time (default 16)\n"
    BENCH_RANGE_RATIO_HELP
    "                             throughput only: each request's lengths, drawn from --seed\n"
    "                             as bench serve's random dataset draws them; --input-len 562\n"
    "                             --output-len 562 --random-range-ratio 0.822 is the nano-vllm\n"
    "                             workload (prompts and outputs uniform in 100-1024 tokens)\n"
    "      --prefix-hit-ratios LIST  prefix: % of each prompt shared (default 0,50,80,95);\n"
    "                             prefix's defaults: --input-len 512 --output-len 4\n"
    "      --seed N               seed of the synthetic prompts (default 0)\n"
    BENCH_REPORT_HELP
    CLI_ENGINE_HELP;

typedef enum bench_mode { MODE_LATENCY, MODE_THROUGHPUT, MODE_PREFIX, MODE_MEMORY } bench_mode;
static const char *const k_mode_names[] = {"latency", "throughput", "prefix", "memory"};

typedef struct bench_options {
    bench_mode mode;
    const char *model;
    int input_len;                       /* tokens */
    int output_len;                      /* tokens */
    int batch_sizes[MAX_BATCH_SIZES];    /* [n_batch_sizes] requests */
    int n_batch_sizes;
    int prefix_ratios[MAX_BATCH_SIZES];  /* [n_prefix_ratios] % */
    int n_prefix_ratios;
    int seq_lens[MAX_BATCH_SIZES];       /* [n_seq_lens] tokens */
    int n_seq_lens;
    bool batch_sizes_given;
    int iters;
    int warmup;
    int num_prompts;
    double range_ratio;                  /* throughput: [0, 1) */
    uint64_t seed;
    bench_report_flags report;
    folo_engine_options engine;
} bench_options;

enum {
    OPT_INPUT_LEN = 256, OPT_OUTPUT_LEN, OPT_BATCH_SIZES, OPT_ITERS, OPT_WARMUP,
    OPT_NUM_PROMPTS, OPT_PREFIX_RATIOS, OPT_SEQ_LENS, OPT_RANGE_RATIO, OPT_SEED, OPT_HELP
};

int bench_parse_list(const char *cmd, const char *usage, const char *flag, const char *v,
                     int max, bench_item_fn fn, void *ctx, int *n) {
    char item[32];
    *n = 0;
    for (const char *p = v;;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item || *n == max)
            return cli_usage_error(cmd, usage,
                                   "invalid value '%s' for %s (expected up to %d "
                                   "comma-separated values)",
                                   v, flag, max);
        memcpy(item, p, len);
        item[len] = '\0';
        if (fn(item, (*n)++, ctx)) return 2;
        if (p[len] == '\0') return 0;
        p += len + 1;
    }
}

int bench_parse_range_ratio(const char *cmd, const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= 0 && x < 1)) {
        fprintf(stderr,
                "folo %s: invalid value '%s' for --random-range-ratio (expected a number in "
                "[0, 1))\n",
                cmd, v);
        return 2;
    }
    *out = x;
    return 0;
}

int bench_parse_rate(const char *cmd, const char *flag, const char *v, double *out) {
    if (strcmp(v, "inf") == 0) {
        *out = INFINITY;
        return 0;
    }
    float f;
    if (cli_parse_float(cmd, flag, v, 1e-6, 1e9, &f)) return -1;
    *out = f;
    return 0;
}

void bench_format_rate(char *buf, size_t cap, double rate) {
    if (isfinite(rate))
        snprintf(buf, cap, "%g", rate);
    else
        snprintf(buf, cap, "inf");
}

int bench_parse_dataset_name(const char *cmd, const char *usage, const char *v,
                             const char **out) {
    if (strcmp(v, "random") != 0 && strcmp(v, "sharegpt") != 0)
        return cli_usage_error(cmd, usage,
                               "invalid value '%s' for --dataset-name (expected random or "
                               "sharegpt)",
                               v);
    *out = v;
    return 0;
}

int bench_check_dataset(const char *cmd, const char *usage, const char *name, const char *path) {
    bool sharegpt = strcmp(name, "sharegpt") == 0;
    if (sharegpt && !path)
        return cli_usage_error(cmd, usage, "--dataset-name sharegpt needs --dataset-path");
    if (!sharegpt && path)
        return cli_usage_error(cmd, usage, "--dataset-path needs --dataset-name sharegpt");
    return 0;
}

int bench_common_flag(const char *cmd, const char *usage, int c, char **argv,
                      bench_report_flags *r, folo_engine_options *e) {
    folo_error err = {{0}};
    switch (c) {
    case BENCH_OPT_GOODPUT:
        if (folo_bench_slo_parse(optarg, &r->slo, &err))
            return cli_usage_error(cmd, usage, "--goodput: %s", err.message);
        return 0;
    case BENCH_OPT_SLO:
        if (folo_bench_slo_preset(optarg, &r->slo, &err))
            return cli_usage_error(cmd, usage, "--slo: %s", err.message);
        return 0;
    case BENCH_OPT_HARDWARE: r->hardware = optarg; return 0;
    case BENCH_OPT_BANDWIDTH:
        return cli_parse_float(cmd, "--bandwidth-gbs", optarg, 1e-3, 1e6, &r->bandwidth_gbs) ? 2
                                                                                              : 0;
    case BENCH_OPT_PEAK:
        return cli_parse_float(cmd, "--peak-tflops", optarg, 1e-6, 1e6, &r->peak_tflops) ? 2 : 0;
    case BENCH_OPT_DEVICES:
        return cli_parse_int(cmd, "--devices", optarg, 1, 1 << 16, &r->devices) ? 2 : 0;
    case BENCH_OPT_JSON: r->json_path = optarg; return 0;
    case BENCH_OPT_HTML: r->html_path = optarg; return 0;
    default: return cli_engine_flag(cmd, usage, c, argv, e) ? 2 : 0;
    }
}

int bench_roofline(const bench_report_flags *r, const folo_engine_options *e,
                   const folo_bench_model_figures *fig, folo_bench_roofline *out,
                   folo_error *err) {
    out->model = *fig;
    out->devices = r->devices;
    /* the CPU's float32 default multiplies f32 inputs */
    bool bf16_inputs = e->dtype == FOLO_COMPUTE_BFLOAT16;
    return folo_bench_hardware_pick(r->hardware, e->device, e->n_threads, bf16_inputs,
                                    r->bandwidth_gbs, r->peak_tflops, &out->hw, err);
}

int bench_write_reports(const bench_report_flags *r, const json_t *out, folo_error *err) {
    if (r->json_path && folo_bench_write_json(r->json_path, out, err)) return -1;
    if (r->html_path && folo_bench_html_write(r->html_path, out, err)) return -1;
    return 0;
}

typedef struct int_list {
    const char *flag;
    long lo, hi;
    int *out;
} int_list;

static int parse_int_item(const char *item, int index, void *ctx) {
    const int_list *l = ctx;
    return cli_parse_int(k_cmd, l->flag, item, l->lo, l->hi, &l->out[index]);
}

/* "1,2,4" into out[0..*n), each in [lo, hi]. */
static int parse_int_list(const char *flag, const char *v, long lo, long hi, int *out, int *n) {
    int_list l = {flag, lo, hi, out};
    return bench_parse_list(k_cmd, k_usage, flag, v, MAX_BATCH_SIZES, parse_int_item, &l, n);
}

static int parse_args(int argc, char **argv, bench_options *o) {
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"input-len", required_argument, NULL, OPT_INPUT_LEN},
        {"output-len", required_argument, NULL, OPT_OUTPUT_LEN},
        {"batch-sizes", required_argument, NULL, OPT_BATCH_SIZES},
        {"iters", required_argument, NULL, OPT_ITERS},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"num-prompts", required_argument, NULL, OPT_NUM_PROMPTS},
        {"prefix-hit-ratios", required_argument, NULL, OPT_PREFIX_RATIOS},
        {"seq-lens", required_argument, NULL, OPT_SEQ_LENS},
        {"random-range-ratio", required_argument, NULL, OPT_RANGE_RATIO},
        {"seed", required_argument, NULL, OPT_SEED},
        BENCH_REPORT_LONG_OPTIONS,
        CLI_ENGINE_LONG_OPTIONS,
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc >= 2) {
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        }
        return cli_usage_error(k_cmd, k_usage,
                               "needs a mode: latency, throughput, prefix, memory, serve, "
                               "stages or compare");
    }
    if (strcmp(argv[1], "latency") == 0)
        o->mode = MODE_LATENCY;
    else if (strcmp(argv[1], "throughput") == 0)
        o->mode = MODE_THROUGHPUT;
    else if (strcmp(argv[1], "prefix") == 0)
        o->mode = MODE_PREFIX;
    else if (strcmp(argv[1], "memory") == 0)
        o->mode = MODE_MEMORY;
    else
        return cli_usage_error(k_cmd, k_usage,
                               "unknown mode '%s' (expected latency, throughput, prefix, "
                               "memory, serve, stages or compare)",
                               argv[1]);
    argc--, argv++;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_INPUT_LEN:
            if (cli_parse_int(k_cmd, "--input-len", optarg, 1, 1 << 20, &o->input_len)) return 2;
            break;
        case OPT_OUTPUT_LEN:
            if (cli_parse_int(k_cmd, "--output-len", optarg, 1, 1 << 20, &o->output_len)) return 2;
            break;
        case OPT_BATCH_SIZES:
            if (parse_int_list("--batch-sizes", optarg, 1, 1 << 16, o->batch_sizes,
                               &o->n_batch_sizes))
                return 2;
            o->batch_sizes_given = true;
            break;
        case OPT_SEQ_LENS:
            if (parse_int_list("--seq-lens", optarg, 2, 1 << 20, o->seq_lens, &o->n_seq_lens))
                return 2;
            break;
        case OPT_PREFIX_RATIOS:
            if (parse_int_list("--prefix-hit-ratios", optarg, 0, 100, o->prefix_ratios,
                               &o->n_prefix_ratios))
                return 2;
            break;
        case OPT_ITERS:
            if (cli_parse_int(k_cmd, "--iters", optarg, 1, 1 << 20, &o->iters)) return 2;
            break;
        case OPT_WARMUP:
            if (cli_parse_int(k_cmd, "--warmup", optarg, 0, 1 << 20, &o->warmup)) return 2;
            break;
        case OPT_NUM_PROMPTS:
            if (cli_parse_int(k_cmd, "--num-prompts", optarg, 1, 1 << 24, &o->num_prompts))
                return 2;
            break;
        case OPT_RANGE_RATIO:
            if (bench_parse_range_ratio(k_cmd, optarg, &o->range_ratio)) return 2;
            break;
        case OPT_SEED:
            if (cli_parse_u64(k_cmd, "--seed", optarg, &o->seed)) return 2;
            break;
        case OPT_HELP:
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        default:
            if (bench_common_flag(k_cmd, k_usage, c, argv, &o->report, &o->engine)) return 2;
            break;
        }
    }
    if (optind != argc)
        return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (o->range_ratio > 0 && o->mode != MODE_THROUGHPUT)
        return cli_usage_error(k_cmd, k_usage, "--random-range-ratio applies to bench "
                                               "throughput only");
    return 0;
}

/* ---- the model's figures: prompt vocabulary and the decode roofline -------- */

typedef struct bench_model {
    int n_prompt_vocab;         /* ids [0, n) are ordinary tokens of the model */
} bench_model;

/* The prompt vocabulary into bm, the roofline's figures into fig. */
static int inspect_model(const char *dir, bench_model *bm, folo_bench_model_figures *fig,
                         folo_error *err) {
    folo_model *m = folo_model_load(dir, err);
    if (!m) return -1;
    folo_bench_model_figures_of(m, fig);
    int vocab = m->config.vocab_size;
    folo_model_free(m);
    folo_tokenizer *tok = folo_tokenizer_load(dir, err);
    if (!tok) return -1;
    int n = 0;
    size_t n_bytes;
    while (n < vocab && !folo_tokenizer_is_special(tok, n) &&
           folo_tokenizer_token_bytes(tok, n, &n_bytes))
        n++;
    folo_tokenizer_free(tok);
    if (n == 0) return folo_fail(err, "%s: the tokenizer has no ordinary tokens", dir);
    bm->n_prompt_vocab = n;
    return 0;
}

/* ---- running one batch ------------------------------------------------------ */

typedef struct bench_run {
    const bench_options *o;
    folo_bench_roofline roof;   /* the hardware's ceilings against the model */
    folo_engine *engine;
    bench_model model;
    unsigned short rng[3];      /* nrand48 state of the prompts */
    int32_t *prompt;            /* [input_len] scratch */
    int32_t *shared;            /* [input_len] the prefix mode's shared tokens */
} bench_run;

/* Each request's own prompt and output lengths, tokens. */
typedef struct bench_lengths {
    int *input;                 /* [n] */
    int *output;                /* [n] */
} bench_lengths;

static void draw_tokens(bench_run *b, int32_t *dst, int n) {
    for (int t = 0; t < n; t++) dst[t] = (int32_t)(nrand48(b->rng) % b->model.n_prompt_vocab);
}

/* Submits n requests of input_len prompt tokens at once and steps until
 * all finish; each prompt is b->shared's first n_shared tokens and then
 * random ones; with `lens` (and no shared tokens), request i has
 * lens->input[i] prompt tokens and asks for lens->output[i];
 * records[0..n) receive their metrics, *split adds the steps' figures,
 * *duration_s gets the wall time from the first submission to the last
 * finish. */
static int run_batch(bench_run *b, int n, int input_len, int n_shared, const bench_lengths *lens,
                     folo_bench_record *records, folo_bench_steps *split, double *duration_s,
                     folo_progress *bar, int *n_done, folo_error *err) {
    folo_bench_driver d;
    folo_bench_driver_init(&d, b->engine, records, n, false, bar, n_done);
    double t0 = folo_now_s();
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        folo_bench_request r = {.prompt = b->prompt, .n_prompt = input_len,
                                .max_tokens = b->o->output_len};
        if (lens) {
            r.n_prompt = lens->input[i];
            r.max_tokens = lens->output[i];
        }
        memcpy(b->prompt, b->shared, (size_t)n_shared * sizeof(int32_t));
        draw_tokens(b, b->prompt + n_shared, r.n_prompt - n_shared);
        rc = folo_bench_driver_add(&d, &r, 0, err);
    }
    if (rc == 0) rc = folo_bench_driver_finish(&d, err);
    *duration_s = folo_now_s() - t0;
    folo_bench_steps_add(split, &d.steps);
    folo_bench_driver_free(&d);
    return rc;
}

/* ---- reporting ------------------------------------------------------------- */

/* The decode figures of a split: mean step (ms), achieved weight bandwidth
 * (GB/s) and the floor as a fraction of the measured step. */
static void decode_figures(const bench_run *b, const folo_bench_steps *s, double *step_ms,
                           double *gbs, double *fraction) {
    *step_ms = *gbs = *fraction = 0;
    if (s->n_decode_steps == 0 || s->decode_s <= 0) return;
    double step_s = s->decode_s / (double)s->n_decode_steps;
    *step_ms = step_s * 1e3;
    *gbs = (double)b->roof.model.decode_bytes / step_s / 1e9;
    *fraction = folo_bench_mbu(&b->roof.hw, (double)b->roof.model.decode_bytes, step_s);
}

/* Ends a line with the decode step against the roofline. */
static void print_decode(const bench_run *b, const folo_bench_steps *s) {
    double step_ms, gbs, fraction;
    decode_figures(b, s, &step_ms, &gbs, &fraction);
    if (s->n_decode_steps == 0) {
        printf("no decode-only steps\n");
        return;
    }
    printf("decode step %.3f ms = %.2f GB/s of weights, MBU %.1f%% of %.1f GB/s\n", step_ms,
           gbs, 100 * fraction, b->roof.hw.bandwidth_gbs);
}

static void add_split_json(json_t *o, const bench_run *b, const folo_bench_steps *s) {
    double step_ms, gbs, fraction;
    decode_figures(b, s, &step_ms, &gbs, &fraction);
    json_object_set_new(o, "prefill_steps", json_integer(s->n_prefill_steps));
    json_object_set_new(o, "prefill_s", json_real(s->prefill_s));
    json_object_set_new(o, "decode_steps", json_integer(s->n_decode_steps));
    json_object_set_new(o, "decode_s", json_real(s->decode_s));
    json_object_set_new(o, "decode_step_ms", json_real(step_ms));
    json_object_set_new(o, "decode_weight_gbs", json_real(gbs));
    json_object_set_new(o, "roofline_fraction", json_real(fraction));
    json_object_set_new(o, "mbu", json_real(fraction));
}

static json_t *header_json(const bench_run *b, const char *mode) {
    const bench_options *o = b->o;
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string(mode));
    json_object_set_new(j, "model", json_string(o->model));
    json_object_set_new(j, "input_len", json_integer(o->input_len));
    json_object_set_new(j, "output_len", json_integer(o->output_len));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    folo_bench_roofline_header_json(&b->roof, j);
    return j;
}

/* ---- the modes ----------------------------------------------------------- */

static int bench_latency(bench_run *b, json_t *out, folo_error *err) {
    const bench_options *o = b->o;
    printf("folo bench latency: %d prompt + %d output tokens per request, %d measured "
           "round(s) per batch size after %d warmup\n",
           o->input_len, o->output_len, o->iters, o->warmup);
    folo_bench_roofline_print(&b->roof);
    folo_bench_print_dist_header("batch");
    json_t *results = json_array();
    json_object_set_new(out, "iters", json_integer(o->iters));
    json_object_set_new(out, "warmup", json_integer(o->warmup));
    json_object_set_new(out, "results", results);
    for (int k = 0; k < o->n_batch_sizes; k++) {
        int bs = o->batch_sizes[k], rounds = o->warmup + o->iters;
        int n_measured = bs * o->iters;
        folo_bench_record *records = folo_calloc((size_t)n_measured, sizeof *records);
        folo_bench_record *scratch = folo_calloc((size_t)bs, sizeof *scratch);
        folo_bench_steps split = {0};
        double duration_s = 0;
        char label[64];
        snprintf(label, sizeof label, "latency batch %d", bs);
        folo_progress bar;
        folo_progress_begin(&bar, label, (double)bs * rounds);
        int n_done = 0, rc = 0;
        for (int r = 0; r < rounds && rc == 0; r++) {
            bool measured = r >= o->warmup;
            folo_bench_record *dst = measured ? records + (size_t)(r - o->warmup) * bs : scratch;
            folo_bench_steps round_split = {0};
            double round_s = 0;
            rc = run_batch(b, bs, o->input_len, 0, NULL, dst, &round_split, &round_s, &bar,
                           &n_done, err);
            if (!measured) continue;
            duration_s += round_s;
            folo_bench_steps_add(&split, &round_split);
        }
        folo_progress_end(&bar);
        folo_bench_records_free(scratch, bs);
        if (rc != 0) {
            folo_bench_records_free(records, n_measured);
            return folo_fail_prefix(err, "batch size %d", bs);
        }
        folo_bench_summary s;
        folo_bench_summarize(records, n_measured, duration_s, &o->report.slo, &s);
        char batch[16];
        snprintf(batch, sizeof batch, "%d", bs);
        folo_bench_print_dists(batch, &s);
        printf("%8s  output %.1f tokens/s | %.2f requests/s | ", "", s.output_throughput,
               s.request_throughput);
        print_decode(b, &split);
        folo_bench_roofline_print_mfu(&b->roof, "          ", &s);
        if (s.failed) printf("%8s  %d request(s) failed\n", "", s.failed);
        json_t *entry = json_object();
        json_object_set_new(entry, "batch_size", json_integer(bs));
        json_object_set_new(entry, "summary", folo_bench_summary_json(&s));
        add_split_json(entry, b, &split);
        folo_bench_roofline_json(&b->roof, &s, entry);
        json_object_set_new(entry, "requests", folo_bench_records_json(records, n_measured));
        json_array_append_new(results, entry);
        folo_bench_records_free(records, n_measured);
    }
    return 0;
}

/* The lengths bench_throughput draws for its requests: --input-len and
 * --output-len each, or uniform around them with --random-range-ratio. */
static folo_bench_random_spec throughput_spec(const bench_options *o) {
    return (folo_bench_random_spec){
        .input_len = o->input_len,
        .output_len = o->output_len,
        .dist = o->range_ratio > 0 ? FOLO_BENCH_LENGTHS_UNIFORM : FOLO_BENCH_LENGTHS_FIXED,
        .range_ratio = o->range_ratio,
    };
}

static int bench_throughput(bench_run *b, json_t *out, folo_error *err) {
    const bench_options *o = b->o;
    int n = o->num_prompts;
    folo_bench_random_spec spec = throughput_spec(o);
    bench_lengths lens = {folo_calloc((size_t)n, sizeof(int)), folo_calloc((size_t)n, sizeof(int))};
    folo_bench_random_lengths(&spec, n, o->seed, lens.input, lens.output);
    folo_bench_record *records = folo_calloc((size_t)n, sizeof *records);
    folo_bench_steps split = {0};
    double duration_s = 0;
    folo_progress bar;
    folo_progress_begin(&bar, "throughput", n);
    int n_done = 0;
    int rc = run_batch(b, n, o->input_len, 0, &lens, records, &split, &duration_s, &bar, &n_done,
                       err);
    folo_progress_end(&bar);
    free(lens.input);
    free(lens.output);
    if (rc != 0) {
        folo_bench_records_free(records, n);
        return -1;
    }
    folo_bench_summary s;
    folo_bench_summarize(records, n, duration_s, &o->report.slo, &s);
    folo_engine_stats st;
    folo_engine_get_stats(b->engine, &st);
    double peak_kv = st.kv_blocks_total ? (double)st.kv_blocks_peak_used / st.kv_blocks_total : 0;
    int in_lo, in_hi, out_lo, out_hi;
    folo_bench_length_bounds(o->input_len, o->range_ratio, &in_lo, &in_hi);
    folo_bench_length_bounds(o->output_len, o->range_ratio, &out_lo, &out_hi);
    if (o->range_ratio > 0)
        printf("folo bench throughput: %d requests of %d-%d prompt + %d-%d output tokens "
               "(uniform, --random-range-ratio %g), submitted at once\n",
               n, in_lo, in_hi, out_lo, out_hi, o->range_ratio);
    else
        printf("folo bench throughput: %d requests of %d prompt + %d output tokens, submitted "
               "at once\n",
               n, o->input_len, o->output_len);
    folo_bench_roofline_print(&b->roof);
    printf("  completed          %d of %d in %.3f s\n", s.completed, n, s.duration_s);
    printf("  tokens             %lld prompt + %lld output\n", (long long)s.total_input_tokens,
           (long long)s.total_output_tokens);
    printf("  requests/s         %.3f\n", s.request_throughput);
    printf("  output tokens/s    %.1f\n", s.output_throughput);
    printf("  total tokens/s     %.1f\n", s.total_token_throughput);
    if (s.has_goodput) printf("  goodput            %.3f requests/s\n", s.request_goodput);
    printf("  peak KV usage      %d of %d blocks (%.1f%%)\n", st.kv_blocks_peak_used,
           st.kv_blocks_total, 100 * peak_kv);
    printf("  prefill            %lld steps, %.3f s\n", (long long)split.n_prefill_steps,
           split.prefill_s);
    printf("  decode             %lld steps, %.3f s, ", (long long)split.n_decode_steps,
           split.decode_s);
    print_decode(b, &split);
    folo_bench_roofline_print_mfu(&b->roof, "  ", &s);
    printf("  engine phases (s)  schedule %.3f | prepare %.3f | forward %.3f | sample %.3f | "
           "output %.3f\n",
           st.schedule_s, st.prepare_s, st.forward_s, st.sample_s, st.output_s);
    folo_bench_print_dist_header("");
    folo_bench_print_dists("", &s);

    json_object_set_new(out, "num_prompts", json_integer(n));
    json_object_set_new(out, "random_range_ratio", json_real(o->range_ratio));
    json_object_set_new(out, "input_len_range", json_pack("[i, i]", in_lo, in_hi));
    json_object_set_new(out, "output_len_range", json_pack("[i, i]", out_lo, out_hi));
    json_object_set_new(out, "summary", folo_bench_summary_json(&s));
    json_object_set_new(out, "peak_kv_usage", json_real(peak_kv));
    json_object_set_new(out, "kv_blocks_peak_used", json_integer(st.kv_blocks_peak_used));
    json_object_set_new(out, "kv_blocks_total", json_integer(st.kv_blocks_total));
    add_split_json(out, b, &split);
    folo_bench_roofline_json(&b->roof, &s, out);
    json_object_set_new(out, "engine_phases_s",
                        json_pack("{s:f, s:f, s:f, s:f, s:f}", "schedule", st.schedule_s,
                                  "prepare", st.prepare_s, "forward", st.forward_s, "sample",
                                  st.sample_s, "output", st.output_s));
    json_object_set_new(out, "requests", folo_bench_records_json(records, n));
    folo_bench_records_free(records, n);
    return 0;
}

static int bench_prefix(bench_run *b, json_t *out, folo_error *err) {
    const bench_options *o = b->o;
    int n = o->num_prompts;
    printf("folo bench prefix: %d request(s) of %d prompt + %d output tokens per hit ratio, "
           "one at a time, after one unmeasured request that caches the shared prefix\n",
           n, o->input_len, o->output_len);
    folo_bench_roofline_print(&b->roof);
    printf("%7s %8s %9s %10s %10s %10s %10s %9s\n", "target", "prefix", "hit rate", "mean TTFT",
           "p50 TTFT", "p99 TTFT", "mean E2E", "TTFT gain");
    json_t *results = json_array();
    json_object_set_new(out, "num_prompts", json_integer(n));
    json_object_set_new(out, "results", results);
    double base_ttft = 0;
    for (int k = 0; k < o->n_prefix_ratios; k++) {
        int ratio = o->prefix_ratios[k];
        int n_shared = (int)lround(ratio / 100.0 * o->input_len);
        draw_tokens(b, b->shared, n_shared);
        folo_bench_record *records = folo_calloc((size_t)n + 1, sizeof *records);
        char label[64];
        snprintf(label, sizeof label, "prefix %d%%", ratio);
        folo_progress bar;
        folo_progress_begin(&bar, label, n + 1);
        int n_done = 0, rc = 0;
        folo_bench_steps split = {0};
        double duration_s = 0, one_s;
        /* The unmeasured first request leaves the shared blocks cached. */
        rc = run_batch(b, 1, o->input_len, n_shared, NULL, &records[n], &split, &one_s, &bar, &n_done,
                       err);
        folo_engine_stats before, after;
        folo_engine_get_stats(b->engine, &before);
        for (int i = 0; i < n && rc == 0; i++) {
            rc = run_batch(b, 1, o->input_len, n_shared, NULL, &records[i], &split, &one_s, &bar,
                           &n_done, err);
            duration_s += one_s;
        }
        folo_progress_end(&bar);
        folo_engine_get_stats(b->engine, &after);
        if (rc != 0) {
            folo_bench_records_free(records, n + 1);
            return folo_fail_prefix(err, "hit ratio %d%%", ratio);
        }
        int64_t queried = after.prefix_queried_tokens - before.prefix_queried_tokens;
        int64_t hit = after.prefix_hit_tokens - before.prefix_hit_tokens;
        double hit_rate = queried > 0 ? (double)hit / queried : 0;
        folo_bench_summary s;
        folo_bench_summarize(records, n, duration_s, &o->report.slo, &s);
        if (k == 0) base_ttft = s.ttft_ms.mean;
        double gain = s.ttft_ms.mean > 0 ? base_ttft / s.ttft_ms.mean : 0;
        printf("%6d%% %8d %8.1f%% %10.3f %10.3f %10.3f %10.3f %8.2fx\n", ratio, n_shared,
               100 * hit_rate, s.ttft_ms.mean, s.ttft_ms.median, s.ttft_ms.p[3], s.e2el_ms.mean,
               gain);
        json_t *entry = json_object();
        json_object_set_new(entry, "target_hit_ratio", json_real(ratio / 100.0));
        json_object_set_new(entry, "shared_prefix_tokens", json_integer(n_shared));
        json_object_set_new(entry, "prefix_queried_tokens", json_integer(queried));
        json_object_set_new(entry, "prefix_hit_tokens", json_integer(hit));
        json_object_set_new(entry, "hit_rate", json_real(hit_rate));
        json_object_set_new(entry, "mean_ttft_ratio_to_first", json_real(gain));
        folo_bench_roofline_json(&b->roof, &s, entry);
        json_object_set_new(entry, "summary", folo_bench_summary_json(&s));
        json_object_set_new(entry, "requests", folo_bench_records_json(records, n));
        json_array_append_new(results, entry);
        folo_bench_records_free(records, n + 1);
    }
    printf("(hit rate: prompt tokens served from the prefix cache / tokens looked up; the cache "
           "shares whole %d-token blocks only; TTFT gain: first row's mean TTFT / this row's)\n",
           o->engine.block_size > 0 ? o->engine.block_size : 16);
    return 0;
}

/* kB of the process's peak resident set since the last reset (VmHWM), or
 * of its current one (VmRSS). */
static long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    size_t len = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, len) == 0 && line[len] == ':') kb = atol(line + len + 1);
    if (f) fclose(f);
    return kb;
}

/* Starts a new peak RSS: writing 5 to clear_refs resets VmHWM to the
 * current RSS (Linux 4.0+); where that is refused the peak is the
 * process's own since start, and the report says so. */
static bool reset_peak_rss(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

static int bench_memory(bench_run *b, json_t *out, folo_error *err) {
    const bench_options *o = b->o;
    const char *device = o->engine.device && strcmp(o->engine.device, "auto") != 0
                             ? o->engine.device
                             : folo_device_resolve_auto();
    /* The engine's KV element: f32 on the CPU, bf16 on CUDA (engine.c). */
    size_t token_bytes = b->roof.model.kv_values_per_token * (strcmp(device, "cuda") == 0 ? 2 : 4);
    folo_engine_stats st;
    folo_engine_get_stats(b->engine, &st);
    size_t block_bytes = token_bytes * (size_t)st.kv_block_size;
    int max_len = folo_engine_max_model_len(b->engine);
    printf("folo bench memory: weights %.1f MiB | KV pool %d blocks x %d tokens = %.1f MiB "
           "(%zu bytes/token, %s) | max_model_len %d | RSS now %.1f MiB\n",
           b->roof.model.weight_bytes / 1048576.0, st.kv_blocks_total, st.kv_block_size,
           (double)st.kv_blocks_total * block_bytes / 1048576.0, token_bytes, device, max_len,
           status_kb("VmRSS") / 1024.0);
    printf("%7s %6s %9s %9s %8s %8s %9s %11s %10s %12s\n", "seq", "batch", "KV blocks",
           "KV MiB", "tokens", "KV util", "mean util", "contig MiB", "contig use",
           "peak RSS MiB");
    json_t *results = json_array();
    json_object_set_new(out, "weight_bytes", json_integer((json_int_t)b->roof.model.weight_bytes));
    json_object_set_new(out, "kv_bytes_per_token", json_integer((json_int_t)token_bytes));
    json_object_set_new(out, "kv_block_size", json_integer(st.kv_block_size));
    json_object_set_new(out, "kv_blocks_total", json_integer(st.kv_blocks_total));
    json_object_set_new(out, "kv_pool_bytes",
                        json_integer((json_int_t)((size_t)st.kv_blocks_total * block_bytes)));
    json_object_set_new(out, "max_model_len", json_integer(max_len));
    json_object_set_new(out, "results", results);
    bool peak_reset = true;
    for (int i = 0; i < o->n_seq_lens; i++) {
        for (int k = 0; k < o->n_batch_sizes; k++) {
            int len = o->seq_lens[i], bs = o->batch_sizes[k], input_len = len - o->output_len;
            folo_bench_record *records = folo_calloc((size_t)bs, sizeof *records);
            folo_bench_steps split = {0};
            double duration_s;
            char label[64];
            snprintf(label, sizeof label, "memory seq %d batch %d", len, bs);
            folo_progress bar;
            folo_progress_begin(&bar, label, bs);
            int n_done = 0;
            folo_engine_get_stats(b->engine, &st);
            int64_t preemptions = st.n_preemptions;
            peak_reset = reset_peak_rss() && peak_reset;
            int rc = run_batch(b, bs, input_len, 0, NULL, records, &split, &duration_s, &bar, &n_done,
                               err);
            folo_progress_end(&bar);
            long peak_kb = status_kb("VmHWM");
            folo_bench_records_free(records, bs);
            if (rc != 0) return folo_fail_prefix(err, "sequence length %d, batch size %d", len, bs);
            folo_engine_get_stats(b->engine, &st);
            double held = (double)split.peak_blocks_used * st.kv_block_size;
            double util = held > 0 ? split.peak_tokens_stored / held : 0;
            double mean_util =
                split.held_token_steps > 0 ? split.stored_token_steps / split.held_token_steps : 0;
            /* A contiguous layout reserves max_model_len tokens per sequence. */
            double contig_tokens = (double)bs * max_len;
            double contig_use = split.peak_tokens_stored / contig_tokens;
            printf("%7d %6d %9d %9.2f %8lld %7.1f%% %8.1f%% %11.1f %9.2f%% %12.1f%s\n", len, bs,
                   split.peak_blocks_used, split.peak_blocks_used * (double)block_bytes / 1048576.0,
                   (long long)split.peak_tokens_stored, 100 * util, 100 * mean_util,
                   contig_tokens * token_bytes / 1048576.0, 100 * contig_use, peak_kb / 1024.0,
                   st.n_preemptions > preemptions ? "  (preempted)" : "");
            json_t *e = json_object();
            json_object_set_new(e, "seq_len", json_integer(len));
            json_object_set_new(e, "batch_size", json_integer(bs));
            json_object_set_new(e, "kv_blocks_held", json_integer(split.peak_blocks_used));
            json_object_set_new(e, "kv_bytes_held",
                                json_integer((json_int_t)split.peak_blocks_used *
                                             (json_int_t)block_bytes));
            json_object_set_new(e, "kv_tokens_stored", json_integer(split.peak_tokens_stored));
            json_object_set_new(e, "kv_utilization", json_real(util));
            json_object_set_new(e, "kv_utilization_mean", json_real(mean_util));
            json_object_set_new(e, "contiguous_bytes",
                                json_integer((json_int_t)(contig_tokens * token_bytes)));
            json_object_set_new(e, "contiguous_utilization", json_real(contig_use));
            json_object_set_new(e, "peak_rss_bytes", json_integer((json_int_t)peak_kb * 1024));
            json_object_set_new(e, "preemptions", json_integer(st.n_preemptions - preemptions));
            json_array_append_new(results, e);
        }
    }
    json_object_set_new(out, "peak_rss_per_batch", json_boolean(peak_reset));
    printf("(KV util: tokens stored / capacity of the blocks held, at the fullest step; mean "
           "util: the same over every step; contig: "
           "a max_model_len reservation per sequence and the share of it used; peak RSS %s)\n",
           peak_reset ? "over each batch" : "since the process started (clear_refs refused)");
    return 0;
}

bool bench_gpu_report(folo_gpu_sampler *gpu, json_t *out, folo_gpu_usage *usage) {
    folo_error gpu_err = {{0}};
    if (folo_gpu_sampler_stop(gpu, usage, &gpu_err) != 0) return false;
    json_t *g = json_object();
    json_object_set_new(g, "name", json_string(usage->name));
    json_object_set_new(g, "memory_total_bytes", json_integer((json_int_t)usage->memory_total_bytes));
    json_object_set_new(g, "peak_memory_used_bytes",
                        json_integer((json_int_t)usage->peak_memory_used_bytes));
    if (usage->n_utilization_samples > 0)
        json_object_set_new(g, "mean_gpu_utilization_pct", json_real(usage->mean_gpu_util_pct));
    json_object_set_new(out, "gpu", g);
    printf("  GPU %s: peak memory %.2f of %.2f GB", usage->name,
           (double)usage->peak_memory_used_bytes / 1e9, (double)usage->memory_total_bytes / 1e9);
    if (usage->n_utilization_samples > 0)
        printf(", busy %.0f%% of the run (NVML: a kernel was running)", usage->mean_gpu_util_pct);
    printf("\n");
    return true;
}

/* Runs o's mode on an engine of its own and returns its JSON in *out (a
 * new reference, NULL on failure); roof, when given, is the roofline to
 * state instead of o->report's. */
static int run_mode(const bench_options *o, const folo_bench_roofline *roof, json_t **out,
                    folo_error *err) {
    *out = NULL;
    bench_run b = {.o = o};
    folo_bench_model_figures fig;
    if (inspect_model(o->model, &b.model, &fig, err)) return -1;
    if (roof)
        b.roof = *roof;
    else if (bench_roofline(&o->report, &o->engine, &fig, &b.roof, err))
        return -1;
    b.rng[0] = (unsigned short)o->seed;
    b.rng[1] = (unsigned short)(o->seed >> 16);
    b.rng[2] = (unsigned short)(o->seed >> 32);
    folo_engine_options eo = o->engine;
    eo.model_dir = o->model;
    b.engine = folo_engine_create(&eo, err);
    if (!b.engine) return -1;
    int lo, longest;
    folo_bench_length_bounds(o->input_len, o->range_ratio, &lo, &longest);
    for (int i = 0; i < o->n_seq_lens; i++)
        if (o->seq_lens[i] > longest) longest = o->seq_lens[i];
    b.prompt = folo_calloc((size_t)longest, sizeof(int32_t));
    b.shared = folo_calloc((size_t)o->input_len, sizeof(int32_t));
    json_t *j = header_json(&b, k_mode_names[o->mode]);
    /* The GPU's memory and busy time over the run, read through NVML every
     * 100 ms (nothing where there is no NVIDIA driver). */
    folo_gpu_sampler *gpu = folo_gpu_sampler_start(0, 100);
    int rc = o->mode == MODE_LATENCY      ? bench_latency(&b, j, err)
             : o->mode == MODE_THROUGHPUT ? bench_throughput(&b, j, err)
             : o->mode == MODE_PREFIX     ? bench_prefix(&b, j, err)
                                          : bench_memory(&b, j, err);
    folo_gpu_usage usage;
    bench_gpu_report(gpu, j, &usage);
    free(b.prompt);
    free(b.shared);
    folo_engine_destroy(b.engine);
    if (rc == 0)
        *out = j;
    else
        json_decref(j);
    return rc;
}

int bench_prefix_table(const bench_prefix_spec *spec, json_t **out, folo_error *err) {
    bench_options o = {
        .mode = MODE_PREFIX, .model = spec->model, .input_len = spec->input_len,
        .output_len = spec->output_len, .num_prompts = spec->num_prompts, .seed = spec->seed,
        .report = *spec->report, .engine = *spec->engine,
    };
    FOLO_ASSERT(spec->n_ratios <= MAX_BATCH_SIZES);
    memcpy(o.prefix_ratios, spec->ratios, (size_t)spec->n_ratios * sizeof *spec->ratios);
    o.n_prefix_ratios = spec->n_ratios;
    return run_mode(&o, spec->roof, out, err);
}

static int run(const bench_options *o, folo_error *err) {
    json_t *out;
    int rc = run_mode(o, NULL, &out, err);
    if (rc == 0) rc = bench_write_reports(&o->report, out, err);
    json_decref(out);
    return rc;
}

int folo_cmd_bench(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) return folo_cmd_bench_serve(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "compare") == 0 || strcmp(argv[1], "--compare") == 0))
        return folo_cmd_bench_compare(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "stages") == 0)
        return folo_cmd_bench_stages(argc - 1, argv + 1);
    bench_options o = {
        .batch_sizes = {1, 2, 4, 8, 16, 32}, .n_batch_sizes = 6, .prefix_ratios = {0, 50, 80, 95},
        .n_prefix_ratios = 4, .iters = 3, .warmup = 1, .report = {.devices = 1},
    };
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    /* Flags left at 0 take the mode's defaults: prefix wants long prompts
     * (where the cache matters) and few outputs (TTFT is its figure). */
    bool prefix = o.mode == MODE_PREFIX, memory = o.mode == MODE_MEMORY;
    if (!o.input_len) o.input_len = prefix ? 512 : 32;
    if (!o.output_len) o.output_len = prefix ? 4 : memory ? 16 : 128;
    if (!o.num_prompts) o.num_prompts = prefix ? 16 : 100;
    if (memory && !o.batch_sizes_given) {
        static const int sizes[] = {1, 4, 16};
        memcpy(o.batch_sizes, sizes, sizeof sizes);
        o.n_batch_sizes = 3;
    }
    if (memory && !o.n_seq_lens) {
        static const int lens[] = {128, 512, 1024};
        memcpy(o.seq_lens, lens, sizeof lens);
        o.n_seq_lens = 3;
    }
    for (int i = 0; memory && i < o.n_seq_lens; i++)
        if (o.seq_lens[i] <= o.output_len)
            return cli_usage_error(k_cmd, k_usage,
                                   "--seq-lens %d leaves no prompt token before %d output tokens",
                                   o.seq_lens[i], o.output_len);
    char *dir = cli_model_dir(k_cmd, o.model);
    if (!dir) return 1;
    o.model = dir;
    folo_error err = {{0}};
    rc = run(&o, &err);
    if (rc != 0) fprintf(stderr, "folo bench: %s\n", err.message);
    free(dir);
    return rc == 0 ? 0 : 1;
}
