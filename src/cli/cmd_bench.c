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
 *               and steps that only decoded.
 *
 * Prompts are exactly input-len random token ids from the tokenizer's
 * ordinary vocabulary (no special tokens), drawn from --seed, all distinct
 * so the prefix cache never serves them; requests are greedy with
 * ignore_eos, so each one generates exactly output-len tokens. The engine is
 * stepped synchronously; every latency comes from the engine's own
 * per-request timestamps, and each step is timed around folo_engine_step to
 * split prefill from decode.
 *
 * Every report also states the roofline of DESIGN §9: a decode step must
 * read every weight once, so weight bytes / bandwidth (--bandwidth-gbs) is
 * the floor of one decode step, and the measured decode step is given as
 * a fraction of it (KV-cache reads, small at these lengths, are left out of
 * the floor, which makes the fraction a slight understatement). A table
 * goes to stdout, progress to stderr, and with --json the summaries and
 * every raw per-request record to a file. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/stats.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/dtype.h"
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
    "                             [options]\n";
static const char k_help[] =
    "Benchmarks the engine in this process with vLLM's serving metrics (TTFT, TPOT, ITL,\n"
    "E2EL, throughputs, goodput). Prompts are random token ids; every request generates\n"
    "exactly --output-len tokens (ignore_eos). A table goes to stdout, progress to stderr.\n\n"
    "  -m, --model DIR            Hugging Face Qwen3 checkpoint directory\n"
    "                             (default: a synthetic Qwen3-0.6B-shaped model, made on first "
    "use)\n"
    "      --input-len N          prompt tokens per request (default 32)\n"
    "      --output-len N         output tokens per request (default 128)\n"
    "      --batch-sizes LIST     latency: comma-separated batch sizes (default 1,2,4,8,16,32)\n"
    "      --iters N              latency: measured rounds per batch size (default 3)\n"
    "      --warmup N             latency: unmeasured rounds per batch size first (default 1)\n"
    "      --num-prompts N        throughput: requests submitted at once (default 100)\n"
    "      --seed N               seed of the synthetic prompts (default 0)\n"
    "      --goodput SLOS         SLOs in ms for request_goodput, e.g. ttft:200,tpot:50\n"
    "                             (any of ttft, tpot, e2el; may be repeated)\n"
    "      --bandwidth-gbs X      memory bandwidth of the machine for the roofline, GB/s\n"
    "                             (default 32, the CPU machines of DESIGN §9)\n"
    "      --json FILE            write the summaries and raw per-request records\n"
    CLI_ENGINE_HELP;

typedef enum bench_mode { MODE_LATENCY, MODE_THROUGHPUT } bench_mode;

typedef struct bench_options {
    bench_mode mode;
    const char *model;
    const char *json_path;
    int input_len;                       /* tokens */
    int output_len;                      /* tokens */
    int batch_sizes[MAX_BATCH_SIZES];    /* [n_batch_sizes] requests */
    int n_batch_sizes;
    int iters;
    int warmup;
    int num_prompts;
    uint64_t seed;
    float bandwidth_gbs;                 /* GB/s (1e9 bytes/s) */
    folo_bench_slo slo;                  /* ms */
    folo_engine_options engine;
} bench_options;

enum {
    OPT_INPUT_LEN = 256, OPT_OUTPUT_LEN, OPT_BATCH_SIZES, OPT_ITERS, OPT_WARMUP,
    OPT_NUM_PROMPTS, OPT_SEED, OPT_GOODPUT, OPT_BANDWIDTH, OPT_JSON, OPT_HELP
};

/* "1,2,4" into o->batch_sizes. */
static int parse_batch_sizes(const char *v, bench_options *o) {
    char item[32];
    o->n_batch_sizes = 0;
    for (const char *p = v;;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof item || o->n_batch_sizes == MAX_BATCH_SIZES)
            return cli_usage_error(k_cmd, k_usage,
                                   "invalid value '%s' for --batch-sizes (expected up to %d "
                                   "comma-separated integers)",
                                   v, MAX_BATCH_SIZES);
        memcpy(item, p, len);
        item[len] = '\0';
        if (cli_parse_int(k_cmd, "--batch-sizes", item, 1, 1 << 16,
                          &o->batch_sizes[o->n_batch_sizes++]))
            return 2;
        if (p[len] == '\0') return 0;
        p += len + 1;
    }
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
        {"seed", required_argument, NULL, OPT_SEED},
        {"goodput", required_argument, NULL, OPT_GOODPUT},
        {"bandwidth-gbs", required_argument, NULL, OPT_BANDWIDTH},
        {"json", required_argument, NULL, OPT_JSON},
        CLI_ENGINE_LONG_OPTIONS,
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (argc >= 2) {
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        }
        return cli_usage_error(k_cmd, k_usage, "needs a mode: latency or throughput");
    }
    if (strcmp(argv[1], "latency") == 0)
        o->mode = MODE_LATENCY;
    else if (strcmp(argv[1], "throughput") == 0)
        o->mode = MODE_THROUGHPUT;
    else
        return cli_usage_error(k_cmd, k_usage, "unknown mode '%s' (expected latency or throughput)",
                               argv[1]);
    argc--, argv++;
    folo_engine_options *e = &o->engine;
    folo_error err = {{0}};
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
            if (parse_batch_sizes(optarg, o)) return 2;
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
        case OPT_SEED:
            if (cli_parse_u64(k_cmd, "--seed", optarg, &o->seed)) return 2;
            break;
        case OPT_GOODPUT:
            if (folo_bench_slo_parse(optarg, &o->slo, &err))
                return cli_usage_error(k_cmd, k_usage, "--goodput: %s", err.message);
            break;
        case OPT_BANDWIDTH:
            if (cli_parse_float(k_cmd, "--bandwidth-gbs", optarg, 1e-3, 1e6, &o->bandwidth_gbs))
                return 2;
            break;
        case OPT_JSON: o->json_path = optarg; break;
        case OPT_HELP:
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        default:
            if (cli_engine_flag(k_cmd, k_usage, c, argv, e) != 0) return 2;
            break;
        }
    }
    if (optind != argc)
        return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* ---- the model's figures: prompt vocabulary and the decode roofline -------- */

typedef struct bench_model {
    int n_prompt_vocab;         /* ids [0, n) are ordinary tokens of the model */
    size_t decode_bytes;        /* bytes of weights one decode step reads */
} bench_model;

static size_t tensor_bytes(const folo_tensor *t) {
    size_t n = folo_dtype_size(t->dtype);
    for (int d = 0; d < t->n_dims; d++) n *= (size_t)t->shape[d];
    return n;
}

/* A decode step reads every weight once, except the embedding table of
 * an untied model, of which it reads one row per token (DESIGN §9; a tied
 * table is read whole as the lm_head). */
static int inspect_model(const char *dir, bench_model *bm, folo_error *err) {
    folo_model *m = folo_model_load(dir, err);
    if (!m) return -1;
    bm->decode_bytes = m->weight_bytes;
    if (!m->config.tie_word_embeddings) bm->decode_bytes -= tensor_bytes(&m->embed);
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

/* Wall time of the steps, split by whether they carried prompt tokens. */
typedef struct step_split {
    int64_t n_prefill_steps;    /* steps computing any prompt token */
    int64_t n_decode_steps;     /* steps computing only decode tokens */
    double prefill_s;           /* s */
    double decode_s;            /* s */
} step_split;

typedef struct bench_run {
    const bench_options *o;
    folo_engine *engine;
    bench_model model;
    unsigned short rng[3];      /* nrand48 state of the prompts */
    int32_t *prompt;            /* [input_len] scratch */
} bench_run;

/* Submits n requests at once and steps until all finish; records[0..n)
 * receive their metrics, *split the step times, *duration_s the wall time
 * from the first submission to the last finish. */
static int run_batch(bench_run *b, int n, folo_bench_record *records, step_split *split,
                     double *duration_s, folo_progress *bar, int *n_done, folo_error *err) {
    folo_request_params params = folo_request_params_default();
    params.max_tokens = b->o->output_len;
    params.ignore_eos = true;
    uint64_t first_id = 0;
    double t0 = folo_now_s();
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < b->o->input_len; t++)
            b->prompt[t] = (int32_t)(nrand48(b->rng) % b->model.n_prompt_vocab);
        uint64_t id;
        if (folo_engine_add_tokens(b->engine, b->prompt, b->o->input_len, &params, &id, err))
            return folo_fail_prefix(err, "request %d", i);
        if (i == 0) first_id = id;
        FOLO_ASSERT(id == first_id + (uint64_t)i);
    }
    folo_engine_stats before, after;
    folo_engine_get_stats(b->engine, &before);
    while (folo_engine_has_unfinished(b->engine)) {
        const folo_output *outs;
        int n_outs;
        double step_t0 = folo_now_s();
        if (folo_engine_step(b->engine, &outs, &n_outs, err)) return -1;
        double step_s = folo_now_s() - step_t0;
        folo_engine_get_stats(b->engine, &after);
        int64_t scheduled = after.n_scheduled_tokens - before.n_scheduled_tokens;
        int64_t sampled = after.n_output_tokens - before.n_output_tokens;
        before = after;
        if (scheduled > sampled) {
            split->n_prefill_steps++;
            split->prefill_s += step_s;
        } else if (scheduled > 0) {
            split->n_decode_steps++;
            split->decode_s += step_s;
        }
        for (int i = 0; i < n_outs; i++) {
            const folo_output *out = &outs[i];
            if (out->finish_reason == FOLO_FINISH_NONE) continue;
            uint64_t index = out->request_id - first_id;
            FOLO_ASSERT(index < (uint64_t)n);
            const folo_request_metrics *m = out->metrics;
            folo_bench_record *r = &records[index];
            r->ok = out->finish_reason == FOLO_FINISH_STOP ||
                    out->finish_reason == FOLO_FINISH_LENGTH;
            r->n_prompt_tokens = m->n_prompt_tokens;
            r->arrival_s = m->arrival_s;
            r->first_scheduled_s = m->first_scheduled_s;
            r->first_token_s = m->first_token_s;
            r->finish_s = m->finish_s;
            folo_bench_record_set_times(r, m->token_times_s, m->n_output_tokens);
            folo_progress_update(bar, ++*n_done);
        }
    }
    *duration_s = folo_now_s() - t0;
    return 0;
}

/* ---- reporting ------------------------------------------------------------- */

/* Seconds one decode step takes at the bandwidth floor. */
static double floor_step_s(const bench_run *b) {
    return (double)b->model.decode_bytes / (b->o->bandwidth_gbs * 1e9);
}

static void print_roofline_header(const bench_run *b) {
    double floor_s = floor_step_s(b);
    printf("roofline: a decode step reads %.3f GB of weights; at %.1f GB/s it takes >= %.3f ms "
           "(batch-1 decode <= %.1f tokens/s)\n",
           b->model.decode_bytes / 1e9, b->o->bandwidth_gbs, floor_s * 1e3, 1.0 / floor_s);
}

/* The decode figures of a split: mean step (ms), achieved weight bandwidth
 * (GB/s) and the floor as a fraction of the measured step. */
static void decode_figures(const bench_run *b, const step_split *s, double *step_ms,
                           double *gbs, double *fraction) {
    *step_ms = *gbs = *fraction = 0;
    if (s->n_decode_steps == 0 || s->decode_s <= 0) return;
    double step_s = s->decode_s / (double)s->n_decode_steps;
    *step_ms = step_s * 1e3;
    *gbs = (double)b->model.decode_bytes / step_s / 1e9;
    *fraction = floor_step_s(b) / step_s;
}

/* Ends a line with the decode step against the roofline. */
static void print_decode(const bench_run *b, const step_split *s) {
    double step_ms, gbs, fraction;
    decode_figures(b, s, &step_ms, &gbs, &fraction);
    if (s->n_decode_steps == 0) {
        printf("no decode-only steps\n");
        return;
    }
    printf("decode step %.3f ms = %.2f GB/s of weights, %.1f%% of the %.1f GB/s floor\n",
           step_ms, gbs, 100 * fraction, b->o->bandwidth_gbs);
}

static void add_split_json(json_t *o, const bench_run *b, const step_split *s) {
    double step_ms, gbs, fraction;
    decode_figures(b, s, &step_ms, &gbs, &fraction);
    json_object_set_new(o, "prefill_steps", json_integer(s->n_prefill_steps));
    json_object_set_new(o, "prefill_s", json_real(s->prefill_s));
    json_object_set_new(o, "decode_steps", json_integer(s->n_decode_steps));
    json_object_set_new(o, "decode_s", json_real(s->decode_s));
    json_object_set_new(o, "decode_step_ms", json_real(step_ms));
    json_object_set_new(o, "decode_weight_gbs", json_real(gbs));
    json_object_set_new(o, "roofline_fraction", json_real(fraction));
}

static json_t *records_json(const folo_bench_record *records, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, folo_bench_record_json(&records[i]));
    return a;
}

static json_t *header_json(const bench_run *b, const char *mode) {
    const bench_options *o = b->o;
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string(mode));
    json_object_set_new(j, "model", json_string(o->model));
    json_object_set_new(j, "input_len", json_integer(o->input_len));
    json_object_set_new(j, "output_len", json_integer(o->output_len));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(j, "bandwidth_gbs", json_real(o->bandwidth_gbs));
    json_object_set_new(j, "decode_weight_bytes", json_integer((json_int_t)b->model.decode_bytes));
    json_object_set_new(j, "decode_floor_ms", json_real(floor_step_s(b) * 1e3));
    return j;
}

static int write_json(const char *path, json_t *j, folo_error *err) {
    if (json_dump_file(j, path, JSON_INDENT(1) | JSON_PRESERVE_ORDER) != 0)
        return folo_fail(err, "--json: cannot write %s", path);
    return 0;
}

static void print_dist_row(const char *batch, const char *name, const folo_bench_dist *d) {
    printf("%6s  %-5s %10.3f %10.3f %10.3f %10.3f %10.3f\n", batch, name, d->mean, d->median,
           d->p[1], d->p[2], d->p[3]);
}

/* ---- the modes ----------------------------------------------------------- */

static void free_records(folo_bench_record *records, int n) {
    for (int i = 0; i < n; i++) folo_bench_record_free(&records[i]);
    free(records);
}

static int bench_latency(bench_run *b, json_t *out, folo_error *err) {
    const bench_options *o = b->o;
    printf("folo bench latency: %d prompt + %d output tokens per request, %d measured "
           "round(s) per batch size after %d warmup\n",
           o->input_len, o->output_len, o->iters, o->warmup);
    print_roofline_header(b);
    printf("%6s  %-5s %10s %10s %10s %10s %10s   (ms)\n", "batch", "", "mean", "median", "p90",
           "p95", "p99");
    json_t *results = json_array();
    json_object_set_new(out, "iters", json_integer(o->iters));
    json_object_set_new(out, "warmup", json_integer(o->warmup));
    json_object_set_new(out, "results", results);
    for (int k = 0; k < o->n_batch_sizes; k++) {
        int bs = o->batch_sizes[k], rounds = o->warmup + o->iters;
        int n_measured = bs * o->iters;
        folo_bench_record *records = folo_calloc((size_t)n_measured, sizeof *records);
        folo_bench_record *scratch = folo_calloc((size_t)bs, sizeof *scratch);
        step_split split = {0};
        double duration_s = 0;
        char label[64];
        snprintf(label, sizeof label, "latency batch %d", bs);
        folo_progress bar;
        folo_progress_begin(&bar, label, (double)bs * rounds);
        int n_done = 0, rc = 0;
        for (int r = 0; r < rounds && rc == 0; r++) {
            bool measured = r >= o->warmup;
            folo_bench_record *dst = measured ? records + (size_t)(r - o->warmup) * bs : scratch;
            step_split round_split = {0};
            double round_s = 0;
            rc = run_batch(b, bs, dst, &round_split, &round_s, &bar, &n_done, err);
            if (!measured) continue;
            duration_s += round_s;
            split.n_prefill_steps += round_split.n_prefill_steps;
            split.n_decode_steps += round_split.n_decode_steps;
            split.prefill_s += round_split.prefill_s;
            split.decode_s += round_split.decode_s;
        }
        folo_progress_end(&bar);
        free_records(scratch, bs);
        if (rc != 0) {
            free_records(records, n_measured);
            return folo_fail_prefix(err, "batch size %d", bs);
        }
        folo_bench_summary s;
        folo_bench_summarize(records, n_measured, duration_s, &o->slo, &s);
        char batch[16];
        snprintf(batch, sizeof batch, "%d", bs);
        print_dist_row(batch, "TTFT", &s.ttft_ms);
        print_dist_row("", "TPOT", &s.tpot_ms);
        print_dist_row("", "ITL", &s.itl_ms);
        print_dist_row("", "E2E", &s.e2el_ms);
        printf("%6s  output %.1f tokens/s | %.2f requests/s | ", "", s.output_throughput,
               s.request_throughput);
        print_decode(b, &split);
        if (s.failed) printf("%6s  %d request(s) failed\n", "", s.failed);
        json_t *entry = json_object();
        json_object_set_new(entry, "batch_size", json_integer(bs));
        json_object_set_new(entry, "summary", folo_bench_summary_json(&s));
        add_split_json(entry, b, &split);
        json_object_set_new(entry, "requests", records_json(records, n_measured));
        json_array_append_new(results, entry);
        free_records(records, n_measured);
    }
    return 0;
}

static int bench_throughput(bench_run *b, json_t *out, folo_error *err) {
    const bench_options *o = b->o;
    int n = o->num_prompts;
    folo_bench_record *records = folo_calloc((size_t)n, sizeof *records);
    step_split split = {0};
    double duration_s = 0;
    folo_progress bar;
    folo_progress_begin(&bar, "throughput", n);
    int n_done = 0;
    int rc = run_batch(b, n, records, &split, &duration_s, &bar, &n_done, err);
    folo_progress_end(&bar);
    if (rc != 0) {
        free_records(records, n);
        return -1;
    }
    folo_bench_summary s;
    folo_bench_summarize(records, n, duration_s, &o->slo, &s);
    folo_engine_stats st;
    folo_engine_get_stats(b->engine, &st);
    double peak_kv = st.kv_blocks_total ? (double)st.kv_blocks_peak_used / st.kv_blocks_total : 0;
    printf("folo bench throughput: %d requests of %d prompt + %d output tokens, submitted at "
           "once\n",
           n, o->input_len, o->output_len);
    print_roofline_header(b);
    printf("  completed          %d of %d in %.3f s\n", s.completed, n, s.duration_s);
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
    printf("  engine phases (s)  schedule %.3f | prepare %.3f | forward %.3f | sample %.3f | "
           "output %.3f\n",
           st.schedule_s, st.prepare_s, st.forward_s, st.sample_s, st.output_s);
    printf("%6s  %-5s %10s %10s %10s %10s %10s   (ms)\n", "", "", "mean", "median", "p90", "p95",
           "p99");
    print_dist_row("", "TTFT", &s.ttft_ms);
    print_dist_row("", "TPOT", &s.tpot_ms);
    print_dist_row("", "ITL", &s.itl_ms);
    print_dist_row("", "E2E", &s.e2el_ms);

    json_object_set_new(out, "num_prompts", json_integer(n));
    json_object_set_new(out, "summary", folo_bench_summary_json(&s));
    json_object_set_new(out, "peak_kv_usage", json_real(peak_kv));
    json_object_set_new(out, "kv_blocks_peak_used", json_integer(st.kv_blocks_peak_used));
    json_object_set_new(out, "kv_blocks_total", json_integer(st.kv_blocks_total));
    add_split_json(out, b, &split);
    json_object_set_new(out, "engine_phases_s",
                        json_pack("{s:f, s:f, s:f, s:f, s:f}", "schedule", st.schedule_s,
                                  "prepare", st.prepare_s, "forward", st.forward_s, "sample",
                                  st.sample_s, "output", st.output_s));
    json_object_set_new(out, "requests", records_json(records, n));
    free_records(records, n);
    return 0;
}

static int run(const bench_options *o, folo_error *err) {
    bench_run b = {.o = o};
    if (inspect_model(o->model, &b.model, err)) return -1;
    b.rng[0] = (unsigned short)o->seed;
    b.rng[1] = (unsigned short)(o->seed >> 16);
    b.rng[2] = (unsigned short)(o->seed >> 32);
    folo_engine_options eo = o->engine;
    eo.model_dir = o->model;
    b.engine = folo_engine_create(&eo, err);
    if (!b.engine) return -1;
    b.prompt = folo_calloc((size_t)o->input_len, sizeof(int32_t));
    const char *mode = o->mode == MODE_LATENCY ? "latency" : "throughput";
    json_t *out = header_json(&b, mode);
    int rc = o->mode == MODE_LATENCY ? bench_latency(&b, out, err)
                                     : bench_throughput(&b, out, err);
    if (rc == 0 && o->json_path) rc = write_json(o->json_path, out, err);
    json_decref(out);
    free(b.prompt);
    folo_engine_destroy(b.engine);
    return rc;
}

int folo_cmd_bench(int argc, char **argv) {
    bench_options o = {
        .input_len = 32, .output_len = 128, .batch_sizes = {1, 2, 4, 8, 16, 32},
        .n_batch_sizes = 6, .iters = 3, .warmup = 1, .num_prompts = 100, .bandwidth_gbs = 32,
    };
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    char *dir = cli_model_dir(k_cmd, o.model);
    if (!dir) return 1;
    o.model = dir;
    folo_error err = {{0}};
    rc = run(&o, &err);
    if (rc != 0) fprintf(stderr, "folo bench: %s\n", err.message);
    free(dir);
    return rc == 0 ? 0 : 1;
}
