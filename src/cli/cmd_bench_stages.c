/* folo bench stages: the seed documents' milestone table M1 -> M7, measured
 * on this machine instead of estimated for an A100.
 *
 * One workload is made once and run once per stage, each stage on an engine
 * of its own whose optimizations are switched on cumulatively in the
 * seeds' order (the switches of docs/switches.md):
 *   M1  static batching, contiguous KV, naive attention, whole prefills,
 *       no prefix cache (the seeds' offline-inference baseline)
 *   M2  + continuous batching
 *   M3  + paged KV cache
 *   M4  + online-softmax (flash-style) attention
 *   M5  + chunked prefill
 *   M6  + prefix caching (folo's default engine)
 *   M7  M6 on a GPTQ 4-bit checkpoint of the same model (--gptq DIR only)
 * On CUDA naive attention does not exist (the backend refuses it), so M1-M3
 * keep the online kernel there and the report says so.
 *
 * The workload: --num-prompts requests (random token text of --input-len /
 * --output-len tokens, uniform within --random-range-ratio, or ShareGPT
 * conversations), a seeded share of them (--shared-prefix-ratio) starting
 * with one common system prompt of --shared-prefix-len tokens, sent at
 * --request-rate with Poisson gaps (gamma with --burstiness, as bench serve
 * sends them; inf: all at once). Every request is greedy with ignore_eos,
 * so every stage computes exactly the same tokens; the in-process driver
 * (src/bench/driver.h) adds each request when it is due and counts the
 * time it waits for a running step as part of its TTFT.
 *
 * Per stage: vLLM's summary (TTFT, TPOT, ITL, E2EL, throughputs, goodput,
 * the seeds' TTFT bands), the process's CPU time over wall time x threads
 * (or the GPU's busy share through NVML), memory split into weights, the
 * KV pool (allocated, and held at the fullest step) and the backend's
 * activation buffers, the KV cache's utilization (tokens stored / slots of
 * the blocks held, at the fullest step and over all steps), preemptions,
 * steps, the prefix cache's hit rate, and the speed-up against the first
 * stage run (output throughput and mean E2E latency); the seeds' A100
 * estimates are printed beside the measured values. The greedy outputs of
 * every stage but M7 must be identical (the engine is batch invariant under
 * every switch): a difference is reported as an error. M7's agreement with
 * them is a figure, not a check: its weights are not the same numbers.
 *
 * Side tables (--side-tables):
 *   chunk   the seeds' "chunk size vs decode-request latency / prefill
 *           throughput": 4 requests decoding while one long prompt
 *           (--chunk-prompt-len) is prefilled, on M5's engine with a token
 *           budget of each --chunk-sizes value (whole: no chunked
 *           prefill): the gaps between the decoding requests' tokens during
 *           the prefill, and the prefill's tokens/s;
 *   prefix  the seeds' "prefix hit rate vs TTFT", which `folo bench prefix`
 *           measures: it is run here on M6's engine (bench_prefix_table).
 *
 * Stdout gets the tables, stderr the progress, --json the document
 * (docs/bench-schema.json, mode "stages"), --html a report with charts. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/device.h"
#include "bench/dataset.h"
#include "bench/driver.h"
#include "bench/random.h"
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
#define N_STAGES 7
#define STAGE_GPTQ 6
#define MAX_LIST 32
/* The defaults that make the KV pool, not the seats, the limit a
 * contiguous reservation hits (the seeds' M1 -> M3 point), at the seeds'
 * batch of 8-16. */
#define DEFAULT_MAX_SEQS 16
#define DEFAULT_KV_BYTES ((size_t)1 << 30)
/* The chunk table's decoding requests: how many and their prompts, tokens. */
#define CHUNK_DECODERS 4
#define CHUNK_DECODER_PROMPT 32
#define CHUNK_MIN 16
/* Seed streams: the arrival gaps (as bench serve's first rate), which
 * requests carry the system prompt; the prompts' are below 100. */
#define STREAM_ARRIVALS 100
#define STREAM_SHARED 200

static const char k_cmd[] = "bench stages";
static const char k_usage[] =
    "usage: folo bench stages [-m DIR] [--gptq DIR] [--stages LIST] [--num-prompts N]\n"
    "                         [--request-rate R] [--shared-prefix-ratio X] [--side-tables S]\n"
    "                         [options]\n";
static const char k_help[] =
    "Runs one workload once per stage of the seed documents' milestones, switching the\n"
    "engine's optimizations on one by one (M1 all off: static batching, contiguous KV,\n"
    "naive attention, whole prefills, no prefix cache; M2 + continuous batching; M3 + paged\n"
    "KV; M4 + online attention; M5 + chunked prefill; M6 + prefix caching; M7 = M6 on a GPTQ\n"
    "4-bit checkpoint), and prints the seeds' table measured, beside their A100 estimates.\n"
    "Greedy outputs must be identical across M1-M6 (checked). docs/stages.md explains it.\n"
    "With the defaults, the 0.6B-shaped model takes about 10-20 minutes on a 2-core CPU for\n"
    "the six stages and both side tables (the seeds' scenario, 32 concurrent requests of ~512\n"
    "tokens at batch 8-16, is an A100's); --num-prompts 8 --side-tables none is a quick look.\n\n"
    "  -m, --model DIR            Hugging Face Qwen3 checkpoint directory\n"
    "                             (default: a synthetic Qwen3-0.6B-shaped model)\n"
    "      --gptq DIR             a GPTQ 4-bit checkpoint of the same model: adds M7\n"
    "      --stages LIST          the stages to run, e.g. M1,M4,M6 (default: M1-M6, and M7\n"
    "                             with --gptq); the first one run is the speed-up baseline\n"
    "  workload (every request greedy with ignore_eos: each stage computes the same tokens)\n"
    "      --num-prompts N        requests (default 32)\n"
    "      --dataset-name NAME    random (default) or sharegpt\n"
    "      --dataset-path FILE    ShareGPT-format JSON (sharegpt)\n"
    "      --input-len N          random: prompt tokens (default 256)\n"
    "      --output-len N         random: output tokens (default 64); sharegpt: replaces\n"
    "                             the reference completion's length\n"
    "      --random-range-ratio R each length uniform in len * [1 - R, 1 + R] (vLLM's\n"
    "                             bounds), 0 <= R < 1 (default 0.5: prompts of 128-384\n"
    "                             tokens, outputs of 32-96)\n"
    "      --shared-prefix-ratio X  share of the requests that start with one common system\n"
    "                             prompt, in [0, 1] (default 0.5)\n"
    "      --shared-prefix-len N  tokens of that system prompt (default 128)\n"
    "      --request-rate R       requests/s with Poisson arrivals, or inf: all at once\n"
    "                             (default 1: more than the CPU serves, so each stage runs\n"
    "                             saturated and its tokens/s is its capacity)\n"
    "      --burstiness B         gamma shape of the arrival gaps (default 1 = Poisson)\n"
    "      --seed N               seed of every random choice (default 0)\n"
    "  side tables\n"
    "      --side-tables S        none, chunk, prefix or all (default all)\n"
    "      --chunk-sizes LIST     chunk: token budgets, 'whole' for no chunked prefill\n"
    "                             (default 128,256,512,whole)\n"
    "      --chunk-prompt-len N   chunk: the long prompt prefilled beside 4 decoding requests\n"
    "                             (default 1024)\n"
    "      --prefix-hit-ratios LIST  prefix: % of each prompt shared (default 0,50,80,95)\n"
    "      --prefix-prompt-len N  prefix: prompt tokens (default 512)\n"
    "      --prefix-num-prompts N prefix: requests per ratio (default 8)\n"
    "  report\n"
    BENCH_REPORT_HELP
    "  engine (the switches --batching, --kv, --attention, --no-chunked-prefill and\n"
    "  --no-prefix-cache are each stage's own; --max-seqs defaults to 16 and --kv-memory\n"
    "  to 1G here, so a contiguous reservation runs out of KV before paging does)\n"
    CLI_ENGINE_HELP;

/* ---- the stages ---------------------------------------------------------------- */

/* The seeds' estimate of a stage on an A100 (SEED-TABLES.md). */
typedef struct seeds_row {
    double ttft_ms, tpot_ms;
    double tokens_per_s;      /* output tokens/s */
    double gpu_util_pct;
    double memory_gb;
    double speedup;           /* vs M1 */
    const char *ttft_note;    /* "*": decode requests under mixed scheduling; "**": 80%+ hits */
} seeds_row;

typedef struct stage_def {
    const char *name;
    const char *adds;         /* what the stage switches on */
    seeds_row seeds;
} stage_def;

static const stage_def k_stages[N_STAGES] = {
    {"M1", "static batches, contiguous KV, naive attention", {100, 20, 2000, 40, 6, 1.0, ""}},
    {"M2", "+ continuous batching", {100, 8, 8000, 70, 6, 4.0, ""}},
    {"M3", "+ paged KV cache", {100, 8, 12000, 70, 3, 6.0, ""}},
    {"M4", "+ flash (online-softmax) attention", {70, 6, 18000, 75, 2, 9.0, ""}},
    {"M5", "+ chunked prefill", {40, 6, 18000, 80, 2, 9.0, "*"}},
    {"M6", "+ prefix caching", {10, 6, 18000, 80, 2, 9.0, "**"}},
    {"M7", "+ GPTQ 4-bit weights", {10, 5, 22000, 85, 1, 11.0, "**"}},
};

/* The seeds' chunk-size table: decode-request latency and prefill
 * throughput (in words) per chunk of 128, 256, 512 and the whole prompt. */
typedef struct seeds_chunk {
    int chunk;                /* tokens; 0 = whole */
    double decode_ms;
    const char *prefill;
} seeds_chunk;
static const seeds_chunk k_seeds_chunks[] = {
    {128, 40, "low"}, {256, 80, "medium"}, {512, 150, "high"}, {0, 500, "highest"}};

/* The seeds' prefix table: TTFT gain at a hit rate, %. */
static const int k_seeds_prefix_ratio[] = {0, 50, 80, 95};
static const double k_seeds_prefix_gain[] = {1, 2, 5, 10};

typedef struct stages_options {
    const char *model;
    const char *gptq;
    bool run[N_STAGES];
    bool stages_given;
    const char *dataset_name;
    const char *dataset_path;
    int num_prompts;
    folo_bench_random_spec random;
    bool output_len_given;
    double shared_ratio;          /* [0, 1] */
    int shared_len;               /* tokens */
    double rate;                  /* requests/s, INFINITY allowed */
    double burstiness;
    uint64_t seed;
    bool chunk_table, prefix_table;
    int chunk_sizes[MAX_LIST];    /* [n_chunk_sizes] tokens, 0 = whole */
    int n_chunk_sizes;
    int chunk_prompt_len;
    int prefix_ratios[MAX_LIST];  /* [n_prefix_ratios] % */
    int n_prefix_ratios;
    int prefix_prompt_len;
    int prefix_num_prompts;
    bench_report_flags report;
    folo_engine_options engine;
} stages_options;

enum {
    OPT_GPTQ = 256, OPT_STAGES, OPT_NUM_PROMPTS, OPT_DATASET, OPT_DATASET_PATH, OPT_INPUT_LEN,
    OPT_OUTPUT_LEN, OPT_RANGE_RATIO, OPT_SHARED_RATIO, OPT_SHARED_LEN, OPT_RATE, OPT_BURSTINESS,
    OPT_SEED, OPT_SIDE_TABLES, OPT_CHUNK_SIZES, OPT_CHUNK_PROMPT_LEN, OPT_PREFIX_RATIOS,
    OPT_PREFIX_PROMPT_LEN, OPT_PREFIX_NUM_PROMPTS, OPT_HELP
};

static int parse_stage_item(const char *item, int index, void *ctx) {
    stages_options *o = ctx;
    for (int k = 0; k < N_STAGES; k++)
        if (strcasecmp(item, k_stages[k].name) == 0) {
            o->run[k] = true;
            return 0;
        }
    fprintf(stderr, "folo %s: invalid value '%s' for --stages (expected M1 to M7)\n", k_cmd,
            item);
    return -1;
}

static int parse_chunk_item(const char *item, int index, void *ctx) {
    int *sizes = ctx;
    if (strcmp(item, "whole") == 0) {
        sizes[index] = 0;
        return 0;
    }
    char *end;
    long v = strtol(item, &end, 10);
    if (*end || end == item || v < CHUNK_MIN || v > (1 << 20)) {
        fprintf(stderr,
                "folo %s: invalid value '%s' for --chunk-sizes (expected whole or a token "
                "budget of at least %d)\n",
                k_cmd, item, CHUNK_MIN);
        return -1;
    }
    sizes[index] = (int)v;
    return 0;
}

static int parse_ratio_item(const char *item, int index, void *ctx) {
    return cli_parse_int(k_cmd, "--prefix-hit-ratios", item, 0, 100, &((int *)ctx)[index]);
}

static int parse_args(int argc, char **argv, stages_options *o) {
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"gptq", required_argument, NULL, OPT_GPTQ},
        {"stages", required_argument, NULL, OPT_STAGES},
        {"num-prompts", required_argument, NULL, OPT_NUM_PROMPTS},
        {"dataset-name", required_argument, NULL, OPT_DATASET},
        {"dataset-path", required_argument, NULL, OPT_DATASET_PATH},
        {"input-len", required_argument, NULL, OPT_INPUT_LEN},
        {"output-len", required_argument, NULL, OPT_OUTPUT_LEN},
        {"random-range-ratio", required_argument, NULL, OPT_RANGE_RATIO},
        {"shared-prefix-ratio", required_argument, NULL, OPT_SHARED_RATIO},
        {"shared-prefix-len", required_argument, NULL, OPT_SHARED_LEN},
        {"request-rate", required_argument, NULL, OPT_RATE},
        {"burstiness", required_argument, NULL, OPT_BURSTINESS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"side-tables", required_argument, NULL, OPT_SIDE_TABLES},
        {"chunk-sizes", required_argument, NULL, OPT_CHUNK_SIZES},
        {"chunk-prompt-len", required_argument, NULL, OPT_CHUNK_PROMPT_LEN},
        {"prefix-hit-ratios", required_argument, NULL, OPT_PREFIX_RATIOS},
        {"prefix-prompt-len", required_argument, NULL, OPT_PREFIX_PROMPT_LEN},
        {"prefix-num-prompts", required_argument, NULL, OPT_PREFIX_NUM_PROMPTS},
        BENCH_REPORT_LONG_OPTIONS,
        CLI_ENGINE_LONG_OPTIONS,
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    float f;
    int n;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_GPTQ: o->gptq = optarg; break;
        case OPT_STAGES:
            memset(o->run, 0, sizeof o->run);
            if (bench_parse_list(k_cmd, k_usage, "--stages", optarg, N_STAGES, parse_stage_item,
                                 o, &n))
                return 2;
            o->stages_given = true;
            break;
        case OPT_NUM_PROMPTS:
            if (cli_parse_int(k_cmd, "--num-prompts", optarg, 1, 1 << 20, &o->num_prompts))
                return 2;
            break;
        case OPT_DATASET:
            if (bench_parse_dataset_name(k_cmd, k_usage, optarg, &o->dataset_name)) return 2;
            break;
        case OPT_DATASET_PATH: o->dataset_path = optarg; break;
        case OPT_INPUT_LEN:
            if (cli_parse_int(k_cmd, "--input-len", optarg, 1, 1 << 20, &o->random.input_len))
                return 2;
            break;
        case OPT_OUTPUT_LEN:
            if (cli_parse_int(k_cmd, "--output-len", optarg, 1, 1 << 20, &o->random.output_len))
                return 2;
            o->output_len_given = true;
            break;
        case OPT_RANGE_RATIO:
            if (bench_parse_range_ratio(k_cmd, optarg, &o->random.range_ratio)) return 2;
            break;
        case OPT_SHARED_RATIO:
            if (cli_parse_float(k_cmd, "--shared-prefix-ratio", optarg, 0, 1, &f)) return 2;
            o->shared_ratio = f;
            break;
        case OPT_SHARED_LEN:
            if (cli_parse_int(k_cmd, "--shared-prefix-len", optarg, 1, 1 << 20, &o->shared_len))
                return 2;
            break;
        case OPT_RATE:
            if (bench_parse_rate(k_cmd, "--request-rate", optarg, &o->rate)) return 2;
            break;
        case OPT_BURSTINESS:
            if (cli_parse_float(k_cmd, "--burstiness", optarg, 1e-3, 1e6, &f)) return 2;
            o->burstiness = f;
            break;
        case OPT_SEED:
            if (cli_parse_u64(k_cmd, "--seed", optarg, &o->seed)) return 2;
            break;
        case OPT_SIDE_TABLES:
            if (strcmp(optarg, "none") != 0 && strcmp(optarg, "chunk") != 0 &&
                strcmp(optarg, "prefix") != 0 && strcmp(optarg, "all") != 0)
                return cli_usage_error(k_cmd, k_usage,
                                       "invalid value '%s' for --side-tables (expected none, "
                                       "chunk, prefix or all)",
                                       optarg);
            o->chunk_table = strcmp(optarg, "chunk") == 0 || strcmp(optarg, "all") == 0;
            o->prefix_table = strcmp(optarg, "prefix") == 0 || strcmp(optarg, "all") == 0;
            break;
        case OPT_CHUNK_SIZES:
            if (bench_parse_list(k_cmd, k_usage, "--chunk-sizes", optarg, MAX_LIST,
                                 parse_chunk_item, o->chunk_sizes, &o->n_chunk_sizes))
                return 2;
            break;
        case OPT_CHUNK_PROMPT_LEN:
            if (cli_parse_int(k_cmd, "--chunk-prompt-len", optarg, 1, 1 << 20,
                              &o->chunk_prompt_len))
                return 2;
            break;
        case OPT_PREFIX_RATIOS:
            if (bench_parse_list(k_cmd, k_usage, "--prefix-hit-ratios", optarg, MAX_LIST,
                                 parse_ratio_item, o->prefix_ratios, &o->n_prefix_ratios))
                return 2;
            break;
        case OPT_PREFIX_PROMPT_LEN:
            if (cli_parse_int(k_cmd, "--prefix-prompt-len", optarg, 1, 1 << 20,
                              &o->prefix_prompt_len))
                return 2;
            break;
        case OPT_PREFIX_NUM_PROMPTS:
            if (cli_parse_int(k_cmd, "--prefix-num-prompts", optarg, 1, 1 << 20,
                              &o->prefix_num_prompts))
                return 2;
            break;
        case OPT_HELP:
            printf("%s\n%s", k_usage, k_help);
            return HELP_SHOWN;
        case CLI_OPT_BATCHING:
        case CLI_OPT_KV:
        case CLI_OPT_ATTENTION:
        case CLI_OPT_NO_CHUNKED_PREFILL:
        case CLI_OPT_NO_PREFIX_CACHE:
            return cli_usage_error(k_cmd, k_usage,
                                   "%s is set by each stage (M1 switches every optimization "
                                   "off, each later stage one more on)",
                                   c == CLI_OPT_BATCHING      ? "--batching"
                                   : c == CLI_OPT_KV          ? "--kv"
                                   : c == CLI_OPT_ATTENTION   ? "--attention"
                                   : c == CLI_OPT_NO_CHUNKED_PREFILL ? "--no-chunked-prefill"
                                                               : "--no-prefix-cache");
        default:
            if (bench_common_flag(k_cmd, k_usage, c, argv, &o->report, &o->engine)) return 2;
            break;
        }
    }
    if (optind != argc)
        return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (bench_check_dataset(k_cmd, k_usage, o->dataset_name, o->dataset_path)) return 2;
    if (o->stages_given && o->run[STAGE_GPTQ] && !o->gptq)
        return cli_usage_error(k_cmd, k_usage, "--stages M7 needs --gptq DIR");
    if (o->stages_given && !o->run[STAGE_GPTQ] && o->gptq)
        return cli_usage_error(k_cmd, k_usage,
                               "--gptq is M7's checkpoint, and --stages leaves M7 out");
    if (!o->stages_given) o->run[STAGE_GPTQ] = o->gptq != NULL;
    if (o->random.range_ratio > 0) o->random.dist = FOLO_BENCH_LENGTHS_UNIFORM;
    return 0;
}

/* ---- the workload ----------------------------------------------------------------- */

typedef struct workload {
    folo_bench_request *requests;  /* [n], send times ascending */
    int32_t **ids;                 /* [n] owned prompts (requests[i].prompt) */
    bool *shared;                  /* [n] starts with the system prompt */
    int n;
    int n_shared;
} workload;

static void workload_free(workload *w) {
    for (int i = 0; i < w->n; i++) free(w->ids[i]);
    free(w->ids);
    free(w->requests);
    free(w->shared);
}

/* Prompts of a dataset (folo_bench_sharegpt or folo_bench_random_prompts),
 * tokenized: ids[i] (owned) of n_ids[i] tokens, max_tokens[i]. */
static int dataset_ids(const stages_options *o, const folo_tokenizer *tok, bool sharegpt,
                       const folo_bench_random_spec *spec, int n, uint64_t seed, int32_t **ids,
                       int *n_ids, int *max_tokens, folo_error *err) {
    folo_bench_prompt *prompts = folo_calloc((size_t)n, sizeof *prompts);
    int rc = sharegpt ? folo_bench_sharegpt(o->dataset_path, tok, n,
                                            o->output_len_given ? spec->output_len : 0, seed,
                                            prompts, err)
                      : folo_bench_random_prompts(tok, spec, n, seed, prompts, err);
    if (rc != 0) {
        free(prompts);
        return -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        rc = folo_tokenizer_encode(tok, prompts[i].text, strlen(prompts[i].text), &ids[i],
                                   &n_ids[i], err);
        max_tokens[i] = prompts[i].output_len;
    }
    folo_bench_prompts_free(prompts, n);
    free(prompts);
    return rc;
}

/* The run's requests: prompts, which carry the system prompt, send times. */
static int make_workload(const stages_options *o, const char *model_dir, workload *w,
                         folo_error *err) {
    folo_tokenizer *tok = folo_tokenizer_load(model_dir, err);
    if (!tok) return -1;
    int n = o->num_prompts;
    w->n = n;
    w->requests = folo_calloc((size_t)n, sizeof *w->requests);
    w->ids = folo_calloc((size_t)n, sizeof *w->ids);
    w->shared = folo_calloc((size_t)n, sizeof *w->shared);
    int32_t **own = folo_calloc((size_t)n, sizeof *own), *system = NULL;
    int *n_own = folo_calloc((size_t)n, sizeof *n_own), n_system = 0, max_tokens;
    int *outputs = folo_calloc((size_t)n, sizeof *outputs);
    bool sharegpt = strcmp(o->dataset_name, "sharegpt") == 0;
    int rc = dataset_ids(o, tok, sharegpt, &o->random, n, o->seed, own, n_own, outputs, err);
    /* The system prompt: random text of its own seed, so it is none of the
     * requests' own prompts. */
    folo_bench_random_spec system_spec = {.input_len = o->shared_len, .output_len = 1};
    if (rc == 0)
        rc = dataset_ids(o, tok, false, &system_spec, 1, o->seed + 1, &system, &n_system,
                         &max_tokens, err);
    if (rc == 0) {
        /* Exactly round(ratio x n) requests, picked by a seeded shuffle. */
        int *order = folo_calloc((size_t)n, sizeof *order);
        for (int i = 0; i < n; i++) order[i] = i;
        folo_bench_rng rng;
        folo_bench_rng_seed(&rng, o->seed, STREAM_SHARED);
        for (int i = n - 1; i > 0; i--) {
            int j = (int)folo_bench_rng_below(&rng, (uint64_t)i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        w->n_shared = (int)lround(o->shared_ratio * n);
        for (int i = 0; i < w->n_shared; i++) w->shared[order[i]] = true;
        free(order);
        double *send_at = folo_calloc((size_t)n, sizeof *send_at);
        folo_bench_arrival_times(o->seed, STREAM_ARRIVALS, o->rate, o->burstiness, n, send_at);
        for (int i = 0; i < n; i++) {
            int n_prefix = w->shared[i] ? n_system : 0, len = n_prefix + n_own[i];
            w->ids[i] = folo_calloc((size_t)len, sizeof(int32_t));
            memcpy(w->ids[i], system, (size_t)n_prefix * sizeof(int32_t));
            memcpy(w->ids[i] + n_prefix, own[i], (size_t)n_own[i] * sizeof(int32_t));
            w->requests[i] = (folo_bench_request){.prompt = w->ids[i], .n_prompt = len,
                                                  .max_tokens = outputs[i],
                                                  .send_at_s = send_at[i]};
        }
        free(send_at);
    }
    for (int i = 0; i < n; i++) free(own[i]);
    free(own);
    free(n_own);
    free(outputs);
    free(system);
    folo_tokenizer_free(tok);
    if (rc != 0) workload_free(w);
    return rc;
}

/* ---- one stage ------------------------------------------------------------------------ */

/* The engine options of stage k (0-based), on top of the user's. */
static folo_engine_options stage_engine(const stages_options *o, int k, bool cuda) {
    folo_engine_options e = o->engine;
    e.model_dir = k == STAGE_GPTQ ? o->gptq : o->model;
    e.batching = k >= 1 ? FOLO_BATCHING_CONTINUOUS : FOLO_BATCHING_STATIC;
    e.kv_layout = k >= 2 ? FOLO_KV_PAGED : FOLO_KV_CONTIGUOUS;
    e.attention = k >= 3 || cuda ? FOLO_ATTENTION_ONLINE : FOLO_ATTENTION_NAIVE;
    e.disable_chunked_prefill = k < 4;
    e.disable_prefix_caching = k < 5;
    return e;
}

/* What a stage measured. */
typedef struct stage_result {
    int k;                        /* stage index */
    folo_bench_record *records;   /* [n] owned */
    folo_bench_summary s;
    folo_bench_steps steps;
    folo_engine_stats st;         /* after the run */
    json_t *engine;               /* the engine's options as run (engine_json) */
    int64_t prefix_queried, prefix_hit;
    double cpu_s;                 /* process CPU time over the run, s */
    int threads;
    bool has_gpu;
    folo_gpu_usage gpu;
    size_t block_bytes;           /* bytes of one KV block */
    double kv_util_peak, kv_util_mean;
    double busy;                  /* CPU time / (wall x threads), or the GPU's busy share */
    int32_t **outputs;            /* [n] output ids (owned) */
    int *n_outputs;               /* [n] */
} stage_result;

static void stage_result_free(stage_result *r, int n) {
    if (r->outputs)
        for (int i = 0; i < n; i++) free(r->outputs[i]);
    free(r->outputs);
    free(r->n_outputs);
    if (r->records) folo_bench_records_free(r->records, n);
    json_decref(r->engine);
}

static double cpu_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int threads_of(const folo_engine_options *e) {
    return e->n_threads > 0 ? e->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
}

static json_t *engine_json(const folo_engine_options *e, bool gptq, const folo_engine_stats *st,
                           const char *device) {
    json_t *j = json_object();
    json_object_set_new(j, "model", json_string(e->model_dir));
    json_object_set_new(j, "gptq", json_boolean(gptq));
    json_object_set_new(j, "batching", json_string(e->batching == FOLO_BATCHING_STATIC
                                                        ? "static" : "continuous"));
    json_object_set_new(j, "kv", json_string(e->kv_layout == FOLO_KV_CONTIGUOUS ? "contiguous"
                                                                                : "paged"));
    json_object_set_new(j, "attention", json_string(e->attention == FOLO_ATTENTION_NAIVE
                                                         ? "naive" : "online"));
    json_object_set_new(j, "chunked_prefill", json_boolean(!e->disable_chunked_prefill));
    json_object_set_new(j, "prefix_cache", json_boolean(!e->disable_prefix_caching));
    json_object_set_new(j, "max_num_batched_tokens",
                        json_integer(e->max_num_batched_tokens > 0
                                         ? e->max_num_batched_tokens
                                         : FOLO_DEFAULT_MAX_BATCHED_TOKENS));
    json_object_set_new(j, "max_num_seqs", json_integer(e->max_num_seqs));
    json_object_set_new(j, "kv_pool_bytes", json_integer((json_int_t)st->kv_pool_bytes));
    json_object_set_new(j, "kv_block_size", json_integer(st->kv_block_size));
    json_object_set_new(j, "device", json_string(device));
    json_object_set_new(j, "threads", json_integer(threads_of(e)));
    return j;
}

/* Runs the workload on stage k's engine, options eo, into r. */
static int run_stage(const stages_options *o, int k, const folo_engine_options *eo,
                     const workload *w, const char *device, stage_result *r, folo_error *err) {
    folo_engine *engine = folo_engine_create(eo, err);
    if (!engine) return -1;
    int n = w->n;
    r->k = k;
    r->records = folo_calloc((size_t)n, sizeof *r->records);
    char label[96];
    snprintf(label, sizeof label, "stage %s (%s)", k_stages[k].name, k_stages[k].adds);
    folo_progress bar;
    folo_progress_begin(&bar, label, n);
    int n_done = 0;
    folo_bench_driver d;
    folo_bench_driver_init(&d, engine, r->records, n, true, &bar, &n_done);
    folo_gpu_sampler *gpu = folo_gpu_sampler_start(0, 100);
    double cpu0 = cpu_time_s(), t0;
    int rc = folo_bench_driver_run_timed(&d, w->requests, n, &t0, err);
    double duration_s = folo_now_s() - t0;
    r->cpu_s = cpu_time_s() - cpu0;
    folo_error gpu_err = {{0}};
    r->has_gpu = folo_gpu_sampler_stop(gpu, &r->gpu, &gpu_err) == 0 &&
                 r->gpu.n_utilization_samples > 0;
    folo_progress_end(&bar);
    /* A fresh engine: its counters are this run's. */
    folo_engine_get_stats(engine, &r->st);
    folo_bench_summarize(r->records, n, duration_s, &o->report.slo, &r->s);
    r->steps = d.steps;
    r->prefix_queried = r->st.prefix_queried_tokens;
    r->prefix_hit = r->st.prefix_hit_tokens;
    r->threads = threads_of(eo);
    r->busy = r->has_gpu ? r->gpu.mean_gpu_util_pct / 100 : r->cpu_s / (duration_s * r->threads);
    r->block_bytes = r->st.kv_blocks_total ? r->st.kv_pool_bytes / (size_t)r->st.kv_blocks_total
                                           : 0;
    double held = (double)r->steps.peak_blocks_used * r->st.kv_block_size;
    r->kv_util_peak = held > 0 ? r->steps.peak_tokens_stored / held : 0;
    r->kv_util_mean = r->steps.held_token_steps > 0
                          ? r->steps.stored_token_steps / r->steps.held_token_steps
                          : 0;
    r->outputs = d.output_ids;
    r->n_outputs = d.n_output_ids;
    d.output_ids = NULL;
    d.n_output_ids = NULL;
    r->engine = engine_json(eo, k == STAGE_GPTQ, &r->st, device);
    for (int i = 0; i < n && rc == 0; i++)
        if (!r->records[i].ok) rc = folo_fail(err, "request %d: %s", i, r->records[i].error);
    folo_bench_driver_free(&d);
    folo_engine_destroy(engine);
    return rc;
}

/* ---- greedy outputs --------------------------------------------------------------- */

/* Output tokens of r equal to ref's at the same position, of all ref's;
 * *first_diff the first request that differs (-1: none) and *at_token the
 * token where it does. */
static double compare_outputs(const stage_result *ref, const stage_result *r, int n,
                              int *first_diff, int *at_token) {
    int64_t equal = 0, total = 0;
    *first_diff = -1;
    for (int i = 0; i < n; i++) {
        int len = ref->n_outputs[i], other = r->n_outputs[i];
        int shorter = len < other ? len : other, t = 0;
        while (t < shorter && ref->outputs[i][t] == r->outputs[i][t]) t++;
        for (int k = t; k < shorter; k++) equal += ref->outputs[i][k] == r->outputs[i][k];
        equal += t;
        total += len;
        if (*first_diff < 0 && (t < shorter || len != other)) {
            *first_diff = i;
            *at_token = t;
        }
    }
    return total > 0 ? (double)equal / (double)total : 1;
}

/* ---- the tables ------------------------------------------------------------------- */

static double mib(double bytes) { return bytes / 1048576.0; }

/* A stage's peak memory: weights + the KV blocks held at the fullest step
 * + the activation buffers, bytes. */
static double peak_bytes(const stage_result *r) {
    return (double)r->st.weight_bytes + (double)r->steps.peak_blocks_used * r->block_bytes +
           (double)r->st.activation_bytes;
}

static void seeds_tokens(char *buf, size_t cap, double tokens_per_s) {
    snprintf(buf, cap, "%gK", tokens_per_s / 1000);
}

static void print_tables(const stage_result *res, int n_res, const char *util_name) {
    const stage_result *base = &res[0];
    const char *base_name = k_stages[base->k].name;
    char head[32];
    snprintf(head, sizeof head, "vs %s", base_name);
    printf("\nthe seeds' table, measured (their A100 estimate in parentheses)\n");
    printf("%-5s %18s %16s %17s %14s %18s %16s\n", "stage", "mean TTFT ms", "mean TPOT ms",
           "out tok/s", util_name, "peak memory MiB", head);
    for (int i = 0; i < n_res; i++) {
        const stage_result *r = &res[i];
        const seeds_row *e = &k_stages[r->k].seeds;
        char ttft[48], tpot[48], tps[48], util[48], mem[48], vs[48], tok[16];
        seeds_tokens(tok, sizeof tok, e->tokens_per_s);
        snprintf(ttft, sizeof ttft, "%.1f (%g%s)", r->s.ttft_ms.mean, e->ttft_ms, e->ttft_note);
        snprintf(tpot, sizeof tpot, "%.1f (%g)", r->s.tpot_ms.mean, e->tpot_ms);
        snprintf(tps, sizeof tps, "%.1f (%s)", r->s.output_throughput, tok);
        snprintf(util, sizeof util, "%.0f%% (%g%%)", 100 * r->busy, e->gpu_util_pct);
        snprintf(mem, sizeof mem, "%.0f (%g GB)", mib(peak_bytes(r)), e->memory_gb);
        double speedup = base->s.output_throughput > 0
                             ? r->s.output_throughput / base->s.output_throughput
                             : 0;
        snprintf(vs, sizeof vs, "%.2fx (%.1fx)", speedup,
                 e->speedup / k_stages[base->k].seeds.speedup);
        printf("%-5s %18s %16s %17s %14s %18s %16s\n", k_stages[r->k].name, ttft, tpot, tps,
               util, mem, vs);
    }
    printf("(* decode requests under mixed scheduling; ** at 80%%+ prefix-cache hits; memory: "
           "weights + KV blocks held at the fullest step + activation buffers; vs: output "
           "tokens/s against %s's)\n",
           base_name);

    printf("\nlatency (ms)\n%-5s %10s %10s %10s %10s %10s %10s %10s %10s %9s\n", "stage",
           "TTFT mean", "median", "p99", "TPOT mean", "median", "p99", "E2E mean", "p99", head);
    for (int i = 0; i < n_res; i++) {
        const folo_bench_summary *s = &res[i].s;
        double e2e = s->e2el_ms.mean > 0 ? base->s.e2el_ms.mean / s->e2el_ms.mean : 0;
        printf("%-5s %10.1f %10.1f %10.1f %10.2f %10.2f %10.2f %10.1f %10.1f %8.2fx\n",
               k_stages[res[i].k].name, s->ttft_ms.mean, s->ttft_ms.median, s->ttft_ms.p[3],
               s->tpot_ms.mean, s->tpot_ms.median, s->tpot_ms.p[3], s->e2el_ms.mean,
               s->e2el_ms.p[3], e2e);
    }
    printf("\nthroughput and memory\n%-5s %9s %9s %7s %8s %8s %8s %8s %7s %8s %7s %7s %6s %8s\n",
           "stage", "out tok/s", "tot tok/s", "req/s", "goodput", "weights", "KV pool",
           "KV peak", "activ", "KV util", "mean", "preempt", "steps", "prefix");
    printf("%-5s %9s %9s %7s %8s %8s %8s %8s %7s %8s %7s %7s %6s %8s\n", "", "", "", "",
           "req/s", "MiB", "MiB", "MiB", "MiB", "peak", "", "", "", "hits");
    for (int i = 0; i < n_res; i++) {
        const stage_result *r = &res[i];
        const folo_bench_summary *s = &r->s;
        char goodput[16];
        if (s->has_goodput)
            snprintf(goodput, sizeof goodput, "%.3f", s->request_goodput);
        else
            snprintf(goodput, sizeof goodput, "-");
        double hit = r->prefix_queried > 0 ? (double)r->prefix_hit / r->prefix_queried : 0;
        printf("%-5s %9.1f %9.1f %7.3f %8s %8.0f %8.0f %8.1f %7.1f %7.1f%% %6.1f%% %7lld "
               "%6lld %7.1f%%\n",
               k_stages[r->k].name, s->output_throughput, s->total_token_throughput,
               s->request_throughput, goodput, mib((double)r->st.weight_bytes),
               mib((double)r->st.kv_pool_bytes),
               mib((double)r->steps.peak_blocks_used * r->block_bytes),
               mib((double)r->st.activation_bytes), 100 * r->kv_util_peak, 100 * r->kv_util_mean,
               (long long)r->st.n_preemptions, (long long)r->st.n_steps, 100 * hit);
    }
    printf("(KV peak: blocks held at the fullest step; KV util: tokens stored / slots of the "
           "blocks held, at that step and over every step; prefix hits: prompt tokens served "
           "from the cache / looked up)\n");
    printf("\nTTFT bands (< 100, 100-300, 300-1000, > 1000 ms)\n");
    for (int i = 0; i < n_res; i++) {
        const folo_bench_summary *s = &res[i].s;
        printf("%-5s", k_stages[res[i].k].name);
        for (int b = 0; b < FOLO_BENCH_N_TTFT_BANDS; b++)
            printf(" %s %3.0f%%", folo_bench_ttft_band_names[b],
                   s->completed ? 100.0 * s->ttft_bands[b] / s->completed : 0.0);
        printf("\n");
    }
}

/* ---- JSON ------------------------------------------------------------------------- */

static json_t *stage_json(const stage_result *r, const stage_result *base,
                          const folo_bench_roofline *roof, const stage_result *ref,
                          double agreement, bool match, int n) {
    const seeds_row *e = &k_stages[r->k].seeds;
    json_t *j = json_object();
    json_object_set_new(j, "stage", json_string(k_stages[r->k].name));
    json_object_set_new(j, "adds", json_string(k_stages[r->k].adds));
    json_object_set(j, "engine_options", r->engine);
    json_object_set_new(j, "summary", folo_bench_summary_json(&r->s));
    json_object_set_new(
        j, "speedup_output_throughput",
        json_real(base->s.output_throughput > 0 ? r->s.output_throughput / base->s.output_throughput
                                                : 0));
    json_object_set_new(j, "speedup_e2el", json_real(r->s.e2el_ms.mean > 0
                                                         ? base->s.e2el_ms.mean / r->s.e2el_ms.mean
                                                         : 0));
    json_object_set_new(j, "cpu_time_s", json_real(r->cpu_s));
    json_object_set_new(j, "threads", json_integer(r->threads));
    json_object_set_new(j, "cpu_utilization",
                        r->has_gpu ? json_null() : json_real(r->busy));
    if (r->has_gpu) {
        json_t *g = json_object();
        json_object_set_new(g, "name", json_string(r->gpu.name));
        json_object_set_new(g, "memory_total_bytes",
                            json_integer((json_int_t)r->gpu.memory_total_bytes));
        json_object_set_new(g, "peak_memory_used_bytes",
                            json_integer((json_int_t)r->gpu.peak_memory_used_bytes));
        json_object_set_new(g, "mean_gpu_utilization_pct", json_real(r->gpu.mean_gpu_util_pct));
        json_object_set_new(j, "gpu", g);
    }
    json_t *m = json_object();
    json_object_set_new(m, "weight_bytes", json_integer((json_int_t)r->st.weight_bytes));
    json_object_set_new(m, "kv_pool_bytes", json_integer((json_int_t)r->st.kv_pool_bytes));
    json_object_set_new(m, "kv_peak_used_bytes",
                        json_integer((json_int_t)r->steps.peak_blocks_used *
                                     (json_int_t)r->block_bytes));
    json_object_set_new(m, "activation_bytes", json_integer((json_int_t)r->st.activation_bytes));
    json_object_set_new(m, "peak_bytes", json_integer((json_int_t)peak_bytes(r)));
    json_object_set_new(j, "memory", m);
    json_object_set_new(j, "kv_block_size", json_integer(r->st.kv_block_size));
    json_object_set_new(j, "kv_blocks_total", json_integer(r->st.kv_blocks_total));
    json_object_set_new(j, "kv_blocks_held_at_peak", json_integer(r->steps.peak_blocks_used));
    json_object_set_new(j, "kv_tokens_stored_at_peak", json_integer(r->steps.peak_tokens_stored));
    json_object_set_new(j, "kv_utilization_peak", json_real(r->kv_util_peak));
    json_object_set_new(j, "kv_utilization_mean", json_real(r->kv_util_mean));
    json_object_set_new(j, "preemptions", json_integer(r->st.n_preemptions));
    json_object_set_new(j, "steps", json_integer(r->st.n_steps));
    json_object_set_new(j, "prefill_steps", json_integer(r->steps.n_prefill_steps));
    json_object_set_new(j, "decode_steps", json_integer(r->steps.n_decode_steps));
    json_object_set_new(j, "prefix_queried_tokens", json_integer(r->prefix_queried));
    json_object_set_new(j, "prefix_hit_tokens", json_integer(r->prefix_hit));
    json_object_set_new(j, "prefix_hit_rate",
                        json_real(r->prefix_queried > 0
                                      ? (double)r->prefix_hit / (double)r->prefix_queried
                                      : 0));
    json_t *seeds = json_object();
    json_object_set_new(seeds, "ttft_ms", json_real(e->ttft_ms));
    json_object_set_new(seeds, "tpot_ms", json_real(e->tpot_ms));
    json_object_set_new(seeds, "output_tokens_per_s", json_real(e->tokens_per_s));
    json_object_set_new(seeds, "gpu_utilization_pct", json_real(e->gpu_util_pct));
    json_object_set_new(seeds, "memory_gb", json_real(e->memory_gb));
    json_object_set_new(seeds, "speedup", json_real(e->speedup));
    json_object_set_new(j, "seeds_estimate", seeds);
    json_object_set_new(j, "reference_stage",
                        ref && ref != r ? json_string(k_stages[ref->k].name) : json_null());
    json_object_set_new(j, "outputs_match_reference",
                        ref && ref != r ? json_boolean(match) : json_null());
    json_object_set_new(j, "output_token_agreement",
                        ref && ref != r ? json_real(agreement) : json_null());
    json_t *outs = json_array();
    for (int i = 0; i < n; i++) {
        json_t *ids = json_array();
        for (int t = 0; t < r->n_outputs[i]; t++)
            json_array_append_new(ids, json_integer(r->outputs[i][t]));
        json_array_append_new(outs, ids);
    }
    json_object_set_new(j, "output_token_ids", outs);
    folo_bench_roofline_json(roof, &r->s, j);
    json_object_set_new(j, "requests", folo_bench_records_json(r->records, n));
    return j;
}

static json_t *workload_json(const workload *w) {
    json_t *a = json_array();
    for (int i = 0; i < w->n; i++) {
        const folo_bench_request *r = &w->requests[i];
        json_t *ids = json_array();
        for (int t = 0; t < r->n_prompt; t++)
            json_array_append_new(ids, json_integer(r->prompt[t]));
        json_t *e = json_object();
        json_object_set_new(e, "prompt_token_ids", ids);
        json_object_set_new(e, "max_tokens", json_integer(r->max_tokens));
        json_object_set_new(e, "send_at_s", json_real(r->send_at_s));
        json_object_set_new(e, "shared_prefix", json_boolean(w->shared[i]));
        json_array_append_new(a, e);
    }
    return a;
}

/* ---- side table: chunk size ---------------------------------------------------------- */

/* One chunk size's figures. */
typedef struct chunk_row {
    int chunk;                    /* tokens, 0 = whole */
    int budget;                   /* the engine's max_num_batched_tokens */
    double ttft_ms;               /* the long prompt's */
    double prefill_tokens_per_s;  /* its tokens / (first token - first scheduled) */
    double itl_mean_ms, itl_max_ms; /* decoding requests' gaps ending during the prefill */
    int n_gaps;
    double tpot_mean_ms;          /* the decoding requests' */
} chunk_row;

/* The decoding requests' token gaps that end in (arrival, first token] of
 * the long prompt (records[CHUNK_DECODERS]). */
static void chunk_figures(const folo_bench_record *records, int long_len, chunk_row *row) {
    const folo_bench_record *lp = &records[CHUNK_DECODERS];
    row->ttft_ms = folo_bench_ttft_ms(lp);
    double prefill_s = lp->first_token_s - lp->first_scheduled_s;
    row->prefill_tokens_per_s = prefill_s > 0 ? long_len / prefill_s : 0;
    double sum = 0, tpot_sum = 0, tpot;
    row->itl_max_ms = 0;
    row->n_gaps = 0;
    for (int i = 0; i < CHUNK_DECODERS; i++) {
        const folo_bench_record *r = &records[i];
        for (int t = 1; t < r->n_token_times; t++) {
            double end = r->token_times_s[t];
            if (end <= lp->arrival_s || end > lp->first_token_s) continue;
            double gap_ms = (end - r->token_times_s[t - 1]) * 1e3;
            sum += gap_ms;
            row->n_gaps++;
            if (gap_ms > row->itl_max_ms) row->itl_max_ms = gap_ms;
        }
        if (folo_bench_tpot_ms(r, &tpot)) tpot_sum += tpot;
    }
    row->itl_mean_ms = row->n_gaps ? sum / row->n_gaps : 0;
    row->tpot_mean_ms = tpot_sum / CHUNK_DECODERS;
}

/* CHUNK_DECODERS requests decode (each has 2 tokens) before the long
 * prompt is added; all run to the end. */
static int chunk_run(const folo_engine_options *eo, const folo_bench_request *reqs,
                     chunk_row *row, folo_error *err) {
    folo_engine *engine = folo_engine_create(eo, err);
    if (!engine) return -1;
    enum { N = CHUNK_DECODERS + 1 };
    folo_bench_record records[N];
    memset(records, 0, sizeof records);
    folo_bench_driver d;
    folo_bench_driver_init(&d, engine, records, N, false, NULL, NULL);
    int rc = 0;
    for (int i = 0; i < CHUNK_DECODERS && rc == 0; i++)
        rc = folo_bench_driver_add(&d, &reqs[i], 0, err);
    for (bool warm = false; rc == 0 && !warm;) {
        rc = folo_bench_driver_step(&d, err);
        warm = true;
        for (int i = 0; i < CHUNK_DECODERS; i++) warm = warm && d.n_tokens[i] >= 2;
    }
    if (rc == 0 && d.n_finished > 0)
        rc = folo_fail(err, "a decoding request finished before the long prompt came");
    if (rc == 0) rc = folo_bench_driver_add(&d, &reqs[CHUNK_DECODERS], 0, err);
    if (rc == 0) rc = folo_bench_driver_finish(&d, err);
    for (int i = 0; i < N && rc == 0; i++)
        if (!records[i].ok) rc = folo_fail(err, "request %d: %s", i, records[i].error);
    if (rc == 0) chunk_figures(records, reqs[CHUNK_DECODERS].n_prompt, row);
    for (int i = 0; i < N; i++) folo_bench_record_free(&records[i]);
    folo_bench_driver_free(&d);
    folo_engine_destroy(engine);
    return rc;
}

static const seeds_chunk *seeds_of_chunk(int chunk) {
    for (size_t i = 0; i < sizeof k_seeds_chunks / sizeof k_seeds_chunks[0]; i++)
        if (k_seeds_chunks[i].chunk == chunk) return &k_seeds_chunks[i];
    return NULL;
}

static int chunk_table(const stages_options *o, const char *device, json_t **out,
                       folo_error *err) {
    /* Decodes go first in a step, so a chunk gets the budget less them:
     * the decoding requests must outlast their own staggered prefills and
     * then the long prefill, at the smallest budget. */
    int smallest = 0;
    for (int i = 0; i < o->n_chunk_sizes; i++)
        if (o->chunk_sizes[i] > 0 && (smallest == 0 || o->chunk_sizes[i] < smallest))
            smallest = o->chunk_sizes[i];
    int per_step = smallest - CHUNK_DECODERS;
    int steps = smallest ? (o->chunk_prompt_len + per_step - 1) / per_step : 1;
    /* Whole prefills: at worst one decoding request's prompt a step. */
    int warm = 2 + (smallest ? (CHUNK_DECODERS * CHUNK_DECODER_PROMPT + per_step - 1) / per_step
                             : CHUNK_DECODERS);
    int decode_max = 8 + warm + steps;
    folo_bench_random_spec dec = {.input_len = CHUNK_DECODER_PROMPT, .output_len = decode_max};
    folo_bench_random_spec lng = {.input_len = o->chunk_prompt_len, .output_len = 1};
    int32_t *ids[CHUNK_DECODERS + 1] = {0};
    int n_ids[CHUNK_DECODERS + 1], max_tokens[CHUNK_DECODERS + 1];
    folo_tokenizer *tok = folo_tokenizer_load(o->model, err);
    if (!tok) return -1;
    int rc = dataset_ids(o, tok, false, &dec, CHUNK_DECODERS, o->seed + 2, ids, n_ids, max_tokens,
                         err);
    if (rc == 0)
        rc = dataset_ids(o, tok, false, &lng, 1, o->seed + 3, &ids[CHUNK_DECODERS],
                         &n_ids[CHUNK_DECODERS], &max_tokens[CHUNK_DECODERS], err);
    folo_tokenizer_free(tok);
    folo_bench_request reqs[CHUNK_DECODERS + 1];
    for (int i = 0; i <= CHUNK_DECODERS; i++)
        reqs[i] = (folo_bench_request){.prompt = ids[i], .n_prompt = n_ids[i],
                                       .max_tokens = max_tokens[i]};
    json_t *results = json_array();
    chunk_row *rows = folo_calloc((size_t)o->n_chunk_sizes, sizeof *rows);
    folo_progress bar;
    folo_progress_begin(&bar, "chunk-size table", o->n_chunk_sizes);
    for (int i = 0; i < o->n_chunk_sizes && rc == 0; i++) {
        folo_engine_options eo = stage_engine(o, 4, strcmp(device, "cuda") == 0);
        rows[i].chunk = o->chunk_sizes[i];
        if (rows[i].chunk > 0)
            eo.max_num_batched_tokens = rows[i].chunk;
        else
            eo.disable_chunked_prefill = true;
        rows[i].budget = eo.max_num_batched_tokens > 0 ? eo.max_num_batched_tokens
                                                       : FOLO_DEFAULT_MAX_BATCHED_TOKENS;
        rc = chunk_run(&eo, reqs, &rows[i], err);
        if (rc != 0) folo_fail_prefix(err, "chunk-size table, chunk %d", rows[i].chunk);
        folo_progress_update(&bar, i + 1);
    }
    folo_progress_end(&bar);
    if (rc == 0) {
        printf("\nchunk size vs decode latency and prefill throughput: %d requests decoding while "
               "a %d-token prompt is prefilled (M5's engine; the seeds' A100 estimate of the "
               "decode latency and prefill throughput in parentheses)\n",
               CHUNK_DECODERS, o->chunk_prompt_len);
        printf("%7s %16s %14s %22s %20s %15s\n", "chunk", "prompt TTFT ms", "prefill tok/s",
               "decode ITL mean ms", "decode ITL max ms", "decode TPOT ms");
        for (int i = 0; i < o->n_chunk_sizes; i++) {
            const chunk_row *r = &rows[i];
            const seeds_chunk *sc = seeds_of_chunk(r->chunk);
            char name[16], tps[48], itl[48];
            if (r->chunk > 0)
                snprintf(name, sizeof name, "%d", r->chunk);
            else
                snprintf(name, sizeof name, "whole");
            snprintf(tps, sizeof tps, sc ? "%.1f (%s)" : "%.1f", r->prefill_tokens_per_s,
                     sc ? sc->prefill : "");
            snprintf(itl, sizeof itl, sc ? "%.1f (%g)" : "%.1f", r->itl_mean_ms,
                     sc ? sc->decode_ms : 0);
            printf("%7s %16.1f %14s %22s %20.1f %15.1f\n", name, r->ttft_ms, tps, itl,
                   r->itl_max_ms, r->tpot_mean_ms);
            json_t *e = json_object();
            json_object_set_new(e, "chunk_size", r->chunk > 0 ? json_integer(r->chunk)
                                                              : json_string("whole"));
            json_object_set_new(e, "max_num_batched_tokens", json_integer(r->budget));
            json_object_set_new(e, "chunked_prefill", json_boolean(r->chunk > 0));
            json_object_set_new(e, "prompt_ttft_ms", json_real(r->ttft_ms));
            json_object_set_new(e, "prefill_tokens_per_s", json_real(r->prefill_tokens_per_s));
            json_object_set_new(e, "decode_itl_during_prefill_mean_ms", json_real(r->itl_mean_ms));
            json_object_set_new(e, "decode_itl_during_prefill_max_ms", json_real(r->itl_max_ms));
            json_object_set_new(e, "decode_gaps_during_prefill", json_integer(r->n_gaps));
            json_object_set_new(e, "decode_tpot_mean_ms", json_real(r->tpot_mean_ms));
            json_object_set_new(e, "seeds_decode_ms", sc ? json_real(sc->decode_ms) : json_null());
            json_object_set_new(e, "seeds_prefill_throughput",
                                sc ? json_string(sc->prefill) : json_null());
            json_array_append_new(results, e);
        }
        printf("(decode ITL: the gaps between the decoding requests' tokens that end while the "
               "prompt is prefilled; prefill tok/s: its tokens / (first token - first "
               "scheduled))\n");
        *out = json_object();
        json_object_set_new(*out, "prompt_len", json_integer(o->chunk_prompt_len));
        json_object_set_new(*out, "decode_requests", json_integer(CHUNK_DECODERS));
        json_object_set_new(*out, "decode_prompt_len", json_integer(CHUNK_DECODER_PROMPT));
        json_object_set_new(*out, "decode_max_tokens", json_integer(decode_max));
        json_object_set_new(*out, "results", results);
    } else {
        json_decref(results);
    }
    free(rows);
    for (int i = 0; i <= CHUNK_DECODERS; i++) free(ids[i]);
    return rc;
}

/* ---- side table: prefix hit rate -------------------------------------------------------- */

static int prefix_table(const stages_options *o, const folo_bench_roofline *roof,
                        const char *device, json_t **out, folo_error *err) {
    folo_engine_options eo = stage_engine(o, 5, strcmp(device, "cuda") == 0);
    bench_prefix_spec spec = {
        .model = o->model, .engine = &eo, .report = &o->report, .roof = roof,
        .ratios = o->prefix_ratios, .n_ratios = o->n_prefix_ratios,
        .input_len = o->prefix_prompt_len, .output_len = 4,
        .num_prompts = o->prefix_num_prompts, .seed = o->seed,
    };
    printf("\nprefix hit rate vs TTFT (M6's engine, as `folo bench prefix` measures it)\n");
    if (bench_prefix_table(&spec, out, err)) return folo_fail_prefix(err, "prefix table");
    json_t *gains = json_object();
    printf("(the seeds' A100 estimate of the TTFT gain:");
    for (size_t i = 0; i < sizeof k_seeds_prefix_ratio / sizeof k_seeds_prefix_ratio[0]; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", k_seeds_prefix_ratio[i]);
        json_object_set_new(gains, key, json_real(k_seeds_prefix_gain[i]));
        printf(" %d%% %gx", k_seeds_prefix_ratio[i], k_seeds_prefix_gain[i]);
    }
    printf("; 1000-token prompt: 200 ms -> 40 ms at 80%%)\n");
    json_object_set_new(*out, "seeds_ttft_gain", gains);
    return 0;
}

/* ---- the run ------------------------------------------------------------------------ */

/* The roofline figures of a model, after checking it loads (and, for
 * M7, that it is a GPTQ checkpoint). */
static int model_figures(const char *dir, bool gptq, folo_bench_model_figures *fig,
                         folo_config *config, folo_error *err) {
    folo_model *m = folo_model_load(dir, err);
    if (!m) return -1;
    folo_bench_model_figures_of(m, fig);
    *config = m->config;
    bool quantized = m->n_qlinears > 0;
    folo_model_free(m);
    if (gptq && !quantized)
        return folo_fail(err, "%s: not a GPTQ checkpoint (no quantization_config with "
                              "quant_method gptq): M7 runs a GPTQ 4-bit checkpoint of the model",
                         dir);
    return 0;
}

/* M7 must be the same model quantized: same shapes and vocabulary. */
static int check_same_model(const folo_config *a, const folo_config *b, const char *gptq,
                            folo_error *err) {
    const char *names[] = {"hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads", "num_key_value_heads", "head_dim",
                           "vocab_size"};
    int va[] = {a->hidden_size, a->intermediate_size, a->n_layers, a->n_heads, a->n_kv_heads,
                a->head_dim, a->vocab_size};
    int vb[] = {b->hidden_size, b->intermediate_size, b->n_layers, b->n_heads, b->n_kv_heads,
                b->head_dim, b->vocab_size};
    for (size_t i = 0; i < sizeof va / sizeof va[0]; i++)
        if (va[i] != vb[i])
            return folo_fail(err, "--gptq %s: %s %d differs from the model's %d: M7 needs a GPTQ "
                                  "checkpoint of the same model",
                             gptq, names[i], vb[i], va[i]);
    return 0;
}

static json_t *header_json(const stages_options *o, const workload *w,
                           const folo_bench_roofline *roof) {
    json_t *j = json_object();
    char rate[32];
    bench_format_rate(rate, sizeof rate, o->rate);
    json_object_set_new(j, "mode", json_string("stages"));
    json_object_set_new(j, "model", json_string(o->model));
    json_object_set_new(j, "gptq_model", o->gptq ? json_string(o->gptq) : json_null());
    json_object_set_new(j, "dataset_name", json_string(o->dataset_name));
    json_object_set_new(j, "dataset_path",
                        o->dataset_path ? json_string(o->dataset_path) : json_null());
    json_object_set_new(j, "num_prompts", json_integer(o->num_prompts));
    json_object_set_new(j, "input_len", json_integer(o->random.input_len));
    json_object_set_new(j, "output_len", json_integer(o->random.output_len));
    json_object_set_new(j, "random_range_ratio", json_real(o->random.range_ratio));
    json_object_set_new(j, "shared_prefix_ratio", json_real(o->shared_ratio));
    json_object_set_new(j, "shared_prefix_len", json_integer(o->shared_len));
    json_object_set_new(j, "shared_prefix_requests", json_integer(w->n_shared));
    json_object_set_new(j, "request_rate",
                        isfinite(o->rate) ? json_real(o->rate) : json_string("inf"));
    json_object_set_new(j, "burstiness", json_real(o->burstiness));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(j, "ignore_eos", json_true());
    folo_bench_roofline_header_json(roof, j);
    return j;
}

static int run(const stages_options *o, folo_error *err) {
    const char *device = o->engine.device && strcmp(o->engine.device, "auto") != 0
                             ? o->engine.device
                             : folo_device_resolve_auto();
    bool cuda = strcmp(device, "cuda") == 0;
    folo_bench_model_figures fig, gptq_fig;
    folo_config config, gptq_config;
    folo_bench_roofline roof, gptq_roof;
    if (model_figures(o->model, false, &fig, &config, err) ||
        bench_roofline(&o->report, &o->engine, &fig, &roof, err))
        return -1;
    gptq_roof = roof;
    if (o->run[STAGE_GPTQ]) {
        if (model_figures(o->gptq, true, &gptq_fig, &gptq_config, err))
            return folo_fail_prefix(err, "--gptq");
        if (check_same_model(&config, &gptq_config, o->gptq, err)) return -1;
        gptq_roof.model = gptq_fig;
    }
    workload w = {0};
    if (make_workload(o, o->model, &w, err)) return -1;
    int n_run = 0;
    for (int k = 0; k < N_STAGES; k++) n_run += o->run[k];
    char rate[32];
    bench_format_rate(rate, sizeof rate, o->rate);
    int64_t in_tokens = 0, out_tokens = 0;
    for (int i = 0; i < w.n; i++) {
        in_tokens += w.requests[i].n_prompt;
        out_tokens += w.requests[i].max_tokens;
    }
    printf("folo bench stages: %d %s requests (%lld prompt + %lld output tokens, greedy, "
           "ignore_eos), %d of them behind a shared %d-token system prompt, sent at %s "
           "requests/s (burstiness %g); %d stage(s), each on an engine of its own\n",
           w.n, o->dataset_name, (long long)in_tokens, (long long)out_tokens, w.n_shared,
           o->shared_len, rate, o->burstiness, n_run);
    folo_bench_roofline_print(&roof);
    for (int k = 0; k < N_STAGES; k++)
        if (o->run[k]) printf("  %s  %s\n", k_stages[k].name, k_stages[k].adds);
    if (cuda)
        printf("  (cuda: naive attention is CPU-only, so M1-M3 use the online kernel here and M4 "
               "adds nothing)\n");

    stage_result *res = folo_calloc(N_STAGES, sizeof *res);
    int n_res = 0, rc = 0;
    for (int k = 0; k < N_STAGES && rc == 0; k++) {
        if (!o->run[k]) continue;
        folo_engine_options eo = stage_engine(o, k, cuda);
        rc = run_stage(o, k, &eo, &w, device, &res[n_res], err);
        n_res++;
        if (rc != 0) folo_fail_prefix(err, "stage %s", k_stages[k].name);
    }
    json_t *out = header_json(o, &w, &roof);
    /* The reference of the greedy outputs: the first stage on the model
     * itself (M7's weights differ). */
    const stage_result *ref = NULL;
    for (int i = 0; i < n_res && rc == 0 && !ref; i++)
        if (res[i].k != STAGE_GPTQ) ref = &res[i];
    bool identical = true;
    char mismatch[256] = "";
    if (rc == 0) {
        print_tables(res, n_res, cuda ? "GPU busy" : "CPU util");
        json_t *stages = json_array(), *results = json_array();
        for (int i = 0; i < n_res; i++) {
            const stage_result *r = &res[i];
            double agreement = 1;
            int first = -1, at = 0;
            const stage_result *against = ref ? ref : &res[i];
            agreement = compare_outputs(against, r, w.n, &first, &at);
            bool match = first < 0;
            if (!match && r->k != STAGE_GPTQ && identical) {
                identical = false;
                snprintf(mismatch, sizeof mismatch,
                         "stage %s: request %d's greedy output differs from %s's at output "
                         "token %d; every stage must compute the same tokens "
                         "(docs/switches.md)",
                         k_stages[r->k].name, first, k_stages[against->k].name, at);
            }
            json_array_append_new(stages, json_string(k_stages[r->k].name));
            json_array_append_new(results,
                                  stage_json(r, &res[0], r->k == STAGE_GPTQ ? &gptq_roof : &roof,
                                             ref, agreement, match, w.n));
            if (r->k == STAGE_GPTQ && ref)
                printf("%s's greedy outputs against %s's: %.1f%% of the tokens equal, %s\n",
                       k_stages[r->k].name, k_stages[ref->k].name, 100 * agreement,
                       match ? "every request identical" : "not identical (other weights)");
        }
        if (ref)
            printf("greedy outputs %s across the stages on the model itself (%d requests)\n",
                   identical ? "identical" : "DIFFER", w.n);
        json_object_set_new(out, "stages", stages);
        json_object_set_new(out, "baseline_stage", json_string(k_stages[res[0].k].name));
        json_object_set_new(out, "outputs_identical", json_boolean(identical));
        json_object_set_new(out, "workload", workload_json(&w));
        json_object_set_new(out, "results", results);
    }
    json_t *chunk = NULL, *prefix = NULL;
    if (rc == 0 && o->chunk_table) rc = chunk_table(o, device, &chunk, err);
    if (rc == 0 && o->prefix_table) rc = prefix_table(o, &roof, device, &prefix, err);
    json_object_set_new(out, "chunk_table", chunk ? chunk : json_null());
    json_object_set_new(out, "prefix_table", prefix ? prefix : json_null());
    if (rc == 0) rc = bench_write_reports(&o->report, out, err);
    if (rc == 0 && !identical) rc = folo_fail(err, "%s", mismatch);
    json_decref(out);
    for (int i = 0; i < n_res; i++) stage_result_free(&res[i], w.n);
    free(res);
    workload_free(&w);
    return rc;
}

int folo_cmd_bench_stages(int argc, char **argv) {
    stages_options o = {
        .run = {true, true, true, true, true, true, false},
        .dataset_name = "random", .num_prompts = 32,
        .random = {.input_len = 256, .output_len = 64, .dist = FOLO_BENCH_LENGTHS_UNIFORM,
                   .range_ratio = 0.5},
        .shared_ratio = 0.5, .shared_len = 128, .rate = 1, .burstiness = 1,
        .chunk_table = true, .prefix_table = true,
        .chunk_sizes = {128, 256, 512, 0}, .n_chunk_sizes = 4, .chunk_prompt_len = 1024,
        .prefix_ratios = {0, 50, 80, 95}, .n_prefix_ratios = 4, .prefix_prompt_len = 512,
        .prefix_num_prompts = 8, .report = {.devices = 1},
    };
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    if (o.engine.max_num_seqs == 0) o.engine.max_num_seqs = DEFAULT_MAX_SEQS;
    if (o.engine.kv_memory_bytes == 0) o.engine.kv_memory_bytes = DEFAULT_KV_BYTES;
    char *dir = cli_model_dir(k_cmd, o.model);
    if (!dir) return 1;
    o.model = dir;
    folo_error err = {{0}};
    rc = run(&o, &err);
    if (rc != 0) fprintf(stderr, "folo bench stages: %s\n", err.message);
    free(dir);
    return rc == 0 ? 0 : 1;
}
