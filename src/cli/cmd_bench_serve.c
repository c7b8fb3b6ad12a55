/* folo bench serve: an open-loop load generator against an OpenAI-compatible
 * server, with vLLM's `vllm bench serve` metrics and names.
 *
 * With --url it drives any server (folo, vLLM, llama.cpp's llama-server);
 * without, it starts folo's own server in this process on 127.0.0.1 and a
 * free port, over an engine built from the usual engine flags, so both
 * paths measure through the same client (src/bench/http.h): the numbers
 * include HTTP, JSON and SSE, as a user of the server sees them.
 *
 * The workload (src/bench/dataset.h) is made once, num-warmups + one set
 * of num-prompts per request rate, all drawn from --seed: the warm-ups and
 * every rate get prompts of their own, so a server's prefix cache cannot
 * serve one run's prompts to the next (a sweep over the same prompts
 * measured every rate after the first with its prompts already cached).
 * Each rate's set is sent with gamma-distributed gaps (--burstiness;
 * 1 = Poisson arrivals, inf = all at once), optionally capped at
 * --max-concurrency in flight. Warm-up requests go first, once, and are
 * left out of every figure. Prompt lengths are counted with the
 * local tokenizer (the served model's own in process; -m or --tokenizer
 * with --url), output lengths are what the server reports in its usage
 * chunk. In process, the report also states the roofline of this machine
 * (src/bench/roofline.h) and each rate's MFU; a remote server's hardware is
 * not known here. */
#include <arpa/inet.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/dataset.h"
#include "bench/html.h"
#include "bench/http.h"
#include "bench/random.h"
#include "bench/report.h"
#include "bench/roofline.h"
#include "bench/stats.h"
#include "cli/cli.h"
#include "cli/cmd_bench.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "folo.h"
#include "model/model.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

#define HELP_SHOWN 1
#define MAX_RATES 32
/* Seed streams of the arrival gaps, one per rate of the sweep; the dataset's
 * streams are below 100 (src/bench/dataset.c). */
#define STREAM_ARRIVALS 100

static const char k_cmd[] = "bench serve";
static const char k_usage[] =
    "usage: folo bench serve [--url URL] [-m DIR] [--dataset-name random|sharegpt]\n"
    "                        [--num-prompts N] [--request-rate R | --request-rates LIST]\n"
    "                        [--max-concurrency N] [options]\n";
static const char k_help[] =
    "Sends streaming completions to an OpenAI-compatible server at a request rate and\n"
    "reports vLLM's serving metrics (TTFT, TPOT, ITL, E2EL, throughputs, goodput).\n"
    "Without --url, folo's server runs in this process over the model of -m.\n\n"
    "  server\n"
    "      --url URL              base URL of a running server, e.g. http://127.0.0.1:8000\n"
    "      --endpoint PATH        completions endpoint (default /v1/completions)\n"
    "      --served-model-name NAME  the \"model\" sent (default: --url's first /v1/models id)\n"
    "  -m, --model DIR            Hugging Face Qwen3 checkpoint directory: the model served\n"
    "                             in process (default: a synthetic Qwen3-0.6B-shaped model);\n"
    "                             with --url only its tokenizer is used\n"
    "      --tokenizer DIR        tokenizer that counts prompt tokens with --url\n"
    "                             (default: -m's, else the repository's Qwen3 tokenizer)\n"
    "  workload\n"
    "      --dataset-name NAME    random (default) or sharegpt\n"
    "      --dataset-path FILE    ShareGPT-format JSON (sharegpt)\n"
    "      --num-prompts N        requests per rate (default 100)\n"
    "      --input-len N          random: prompt tokens (default 32)\n"
    "      --output-len N         random: output tokens; sharegpt: replaces the reference\n"
    "                             completion's length (default 128 for random)\n"
    BENCH_RANGE_RATIO_HELP
    "      --length-dist D        random: fixed (default), uniform (with --random-range-ratio)\n"
    "                             or poisson (mean --input-len / --output-len)\n"
    "      --ignore-eos           ask the server to generate exactly max_tokens tokens\n"
    "      --seed N               seed of every random choice (default 0)\n"
    "  load\n"
    "      --request-rate R       requests/s, or inf to send all at once (default inf)\n"
    "      --request-rates LIST   a sweep, e.g. 1,2,4,inf: one run per rate, each with\n"
    "                             prompts of its own (none served from another run's cache)\n"
    "      --burstiness B         gamma shape of the arrival gaps: 1 = Poisson (default),\n"
    "                             < 1 burstier, > 1 more regular\n"
    "      --max-concurrency N    requests in flight at most (default: no limit)\n"
    "      --num-warmups N        unmeasured requests sent first (default 0)\n"
    "  report (--hardware, --bandwidth-gbs, --peak-tflops, --devices: without --url)\n"
    BENCH_REPORT_HELP
    "  engine (without --url)\n"
    CLI_ENGINE_HELP;

typedef struct serve_options {
    const char *url;
    const char *endpoint;
    const char *served_name;
    const char *model;
    const char *tokenizer;
    const char *dataset_name;
    const char *dataset_path;
    int num_prompts;
    folo_bench_random_spec random;
    bool output_len_given;
    bool ignore_eos;
    uint64_t seed;
    double rates[MAX_RATES];           /* [n_rates] requests/s, INFINITY allowed */
    int n_rates;
    double burstiness;
    int max_concurrency;
    int num_warmups;
    bench_report_flags report;
    folo_engine_options engine;
} serve_options;

enum {
    OPT_URL = 256, OPT_ENDPOINT, OPT_NAME, OPT_TOKENIZER, OPT_DATASET, OPT_DATASET_PATH,
    OPT_NUM_PROMPTS, OPT_INPUT_LEN, OPT_OUTPUT_LEN, OPT_RANGE_RATIO, OPT_LENGTH_DIST,
    OPT_IGNORE_EOS, OPT_SEED, OPT_RATE, OPT_RATES, OPT_BURSTINESS, OPT_MAX_CONCURRENCY,
    OPT_WARMUPS, OPT_HELP
};

static int parse_rate_item(const char *item, int index, void *ctx) {
    return bench_parse_rate(k_cmd, "--request-rates", item, &((double *)ctx)[index]);
}

static int parse_args(int argc, char **argv, serve_options *o) {
    static const struct option longs[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"endpoint", required_argument, NULL, OPT_ENDPOINT},
        {"served-model-name", required_argument, NULL, OPT_NAME},
        {"model", required_argument, NULL, 'm'},
        {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
        {"dataset-name", required_argument, NULL, OPT_DATASET},
        {"dataset-path", required_argument, NULL, OPT_DATASET_PATH},
        {"num-prompts", required_argument, NULL, OPT_NUM_PROMPTS},
        {"input-len", required_argument, NULL, OPT_INPUT_LEN},
        {"output-len", required_argument, NULL, OPT_OUTPUT_LEN},
        {"random-range-ratio", required_argument, NULL, OPT_RANGE_RATIO},
        {"length-dist", required_argument, NULL, OPT_LENGTH_DIST},
        {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"request-rate", required_argument, NULL, OPT_RATE},
        {"request-rates", required_argument, NULL, OPT_RATES},
        {"burstiness", required_argument, NULL, OPT_BURSTINESS},
        {"max-concurrency", required_argument, NULL, OPT_MAX_CONCURRENCY},
        {"num-warmups", required_argument, NULL, OPT_WARMUPS},
        BENCH_REPORT_LONG_OPTIONS,
        CLI_ENGINE_LONG_OPTIONS,
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    float f;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:", longs, NULL)) != -1) {
        switch (c) {
        case OPT_URL: o->url = optarg; break;
        case OPT_ENDPOINT:
            if (optarg[0] != '/')
                return cli_usage_error(k_cmd, k_usage,
                                       "invalid value '%s' for --endpoint (expected a path "
                                       "starting with /)",
                                       optarg);
            o->endpoint = optarg;
            break;
        case OPT_NAME: o->served_name = optarg; break;
        case 'm': o->model = optarg; break;
        case OPT_TOKENIZER: o->tokenizer = optarg; break;
        case OPT_DATASET:
            if (bench_parse_dataset_name(k_cmd, k_usage, optarg, &o->dataset_name)) return 2;
            break;
        case OPT_DATASET_PATH: o->dataset_path = optarg; break;
        case OPT_NUM_PROMPTS:
            if (cli_parse_int(k_cmd, "--num-prompts", optarg, 1, 1 << 24, &o->num_prompts))
                return 2;
            break;
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
        case OPT_LENGTH_DIST:
            if (strcmp(optarg, "fixed") == 0)
                o->random.dist = FOLO_BENCH_LENGTHS_FIXED;
            else if (strcmp(optarg, "uniform") == 0)
                o->random.dist = FOLO_BENCH_LENGTHS_UNIFORM;
            else if (strcmp(optarg, "poisson") == 0)
                o->random.dist = FOLO_BENCH_LENGTHS_POISSON;
            else
                return cli_usage_error(k_cmd, k_usage,
                                       "invalid value '%s' for --length-dist (expected fixed, "
                                       "uniform or poisson)",
                                       optarg);
            break;
        case OPT_IGNORE_EOS: o->ignore_eos = true; break;
        case OPT_SEED:
            if (cli_parse_u64(k_cmd, "--seed", optarg, &o->seed)) return 2;
            break;
        case OPT_RATE:
            o->n_rates = 1;
            if (bench_parse_rate(k_cmd, "--request-rate", optarg, &o->rates[0])) return 2;
            break;
        case OPT_RATES:
            if (bench_parse_list(k_cmd, k_usage, "--request-rates", optarg, MAX_RATES,
                                 parse_rate_item, o->rates, &o->n_rates))
                return 2;
            break;
        case OPT_BURSTINESS:
            if (cli_parse_float(k_cmd, "--burstiness", optarg, 1e-3, 1e6, &f)) return 2;
            o->burstiness = f;
            break;
        case OPT_MAX_CONCURRENCY:
            if (cli_parse_int(k_cmd, "--max-concurrency", optarg, 1, 1 << 20,
                              &o->max_concurrency))
                return 2;
            break;
        case OPT_WARMUPS:
            if (cli_parse_int(k_cmd, "--num-warmups", optarg, 0, 1 << 20, &o->num_warmups))
                return 2;
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
    if (bench_check_dataset(k_cmd, k_usage, o->dataset_name, o->dataset_path)) return 2;
    if (o->random.range_ratio > 0 && o->random.dist == FOLO_BENCH_LENGTHS_FIXED)
        o->random.dist = FOLO_BENCH_LENGTHS_UNIFORM;
    if (o->url && o->url[0] == '\0')
        return cli_usage_error(k_cmd, k_usage, "--url must not be empty");
    const bench_report_flags *r = &o->report;
    if (o->url && (r->hardware || r->bandwidth_gbs > 0 || r->peak_tflops > 0 || r->devices != 1))
        return cli_usage_error(k_cmd, k_usage,
                               "--hardware, --bandwidth-gbs, --peak-tflops and --devices "
                               "describe this machine: they apply without --url only");
    return 0;
}

/* ---- the server in this process --------------------------------------------- */

/* A TCP port of 127.0.0.1 nobody listens on now: the kernel's pick for
 * port 0. Another process could take it before the server binds it; the
 * server's start then fails with a clear error. */
static int free_port(int *port, folo_error *err) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return folo_fail(err, "cannot open a socket to find a free port");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int rc = bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
                     getsockname(fd, (struct sockaddr *)&addr, &len) == 0
                 ? 0
                 : folo_fail(err, "cannot find a free port on 127.0.0.1");
    close(fd);
    *port = ntohs(addr.sin_port);
    return rc;
}

/* ---- the run ----------------------------------------------------------------- */

typedef struct serve_run {
    const serve_options *o;
    folo_bench_http_options http;
    folo_bench_prompt *prompts;   /* [n_prompts]: the warm-ups', then each rate's */
    int n_prompts;                /* num_warmups + n_rates x num_prompts */
    double *send_at_s;            /* [num_prompts] */
    folo_bench_roofline roof;     /* in process only */
    bool has_roof;
} serve_run;

static void print_summary(const char *rate, const folo_bench_summary *s, int n) {
    printf("request rate %s/s: %d of %d completed in %.3f s", rate, s->completed, n,
           s->duration_s);
    if (s->failed) printf(" (%d failed)", s->failed);
    printf("\n  requests/s %.3f | output tokens/s %.1f (peak %.0f) | total tokens/s %.1f | "
           "peak concurrency %d\n",
           s->request_throughput, s->output_throughput, s->max_output_tokens_per_s,
           s->total_token_throughput, s->max_concurrent_requests);
    printf("  input tokens %lld | output tokens %lld", (long long)s->total_input_tokens,
           (long long)s->total_output_tokens);
    if (s->has_goodput) printf(" | goodput %.3f requests/s", s->request_goodput);
    printf("\n");
}

static int send_warmups(serve_run *b, folo_error *err) {
    const serve_options *o = b->o;
    int n = o->num_warmups;
    folo_bench_prompt *prompts = folo_calloc((size_t)n, sizeof *prompts);
    double *send_at = folo_calloc((size_t)n, sizeof *send_at);
    for (int i = 0; i < n; i++) prompts[i] = b->prompts[i];
    folo_bench_record *records = folo_calloc((size_t)n, sizeof *records);
    folo_progress bar;
    folo_progress_begin(&bar, "warmup", n);
    double duration_s;
    int rc = folo_bench_http_run(&b->http, prompts, send_at, n, records, &duration_s, &bar, err);
    folo_progress_end(&bar);
    for (int i = 0; i < n && rc == 0; i++)
        if (!records[i].ok)
            rc = folo_fail(err, "warm-up request %d failed: %s", i, records[i].error);
    folo_bench_records_free(records, n);
    free(send_at);
    free(prompts);
    return rc;
}

/* One rate of the sweep: its summary into *s and its JSON into results. */
static int run_rate(serve_run *b, int k, json_t *results, folo_bench_summary *s,
                    folo_error *err) {
    const serve_options *o = b->o;
    int n = o->num_prompts;
    double rate = o->rates[k];
    folo_bench_arrival_times(o->seed, STREAM_ARRIVALS + (uint64_t)k, rate, o->burstiness, n,
                             b->send_at_s);
    folo_bench_record *records = folo_calloc((size_t)n, sizeof *records);
    char rate_text[32], label[64];
    bench_format_rate(rate_text, sizeof rate_text, rate);
    snprintf(label, sizeof label, "serve at %s requests/s", rate_text);
    folo_progress bar;
    folo_progress_begin(&bar, label, n);
    double duration_s = 0;
    const folo_bench_prompt *prompts = b->prompts + o->num_warmups + (size_t)k * n;
    int rc = folo_bench_http_run(&b->http, prompts, b->send_at_s, n, records, &duration_s,
                                 &bar, err);
    folo_progress_end(&bar);
    if (rc != 0) {
        folo_bench_records_free(records, n);
        return -1;
    }
    folo_bench_summarize(records, n, duration_s, &o->report.slo, s);
    print_summary(rate_text, s, n);
    if (b->has_roof) folo_bench_roofline_print_mfu(&b->roof, "  ", s);
    folo_bench_print_dist_header("");
    folo_bench_print_dists("", s);
    json_t *entry = json_object();
    json_object_set_new(entry, "request_rate",
                        isfinite(rate) ? json_real(rate) : json_string("inf"));
    json_object_set_new(entry, "summary", folo_bench_summary_json(s));
    if (b->has_roof) folo_bench_roofline_json(&b->roof, s, entry);
    json_object_set_new(entry, "errors", folo_bench_errors_json(records, n));
    json_object_set_new(entry, "requests", folo_bench_records_json(records, n));
    json_array_append_new(results, entry);
    folo_bench_records_free(records, n);
    return 0;
}

/* The sweep's table: where latency breaks as the offered rate grows. The
 * achieved share is the request throughput over the offered rate: it
 * follows the offered rate (within the arrivals' sampling noise, less the
 * ramp-down of the last requests) until the server saturates. */
static void print_sweep(const serve_options *o, const folo_bench_summary *sums) {
    printf("\nrequest-rate sweep (ms)\n%8s %9s %9s %10s %10s %10s %10s %10s %10s %10s\n",
           "rate", "req/s", "achieved", "out tok/s", "mean TTFT", "p99 TTFT", "mean TPOT",
           "p99 TPOT", "p99 ITL", "mean E2EL");
    for (int k = 0; k < o->n_rates; k++) {
        const folo_bench_summary *s = &sums[k];
        char rate[32], achieved[32];
        bench_format_rate(rate, sizeof rate, o->rates[k]);
        if (isfinite(o->rates[k]))
            snprintf(achieved, sizeof achieved, "%.1f%%",
                     100 * s->request_throughput / o->rates[k]);
        else
            snprintf(achieved, sizeof achieved, "-");
        printf("%8s %9.3f %9s %10.1f %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n", rate,
               s->request_throughput, achieved, s->output_throughput, s->ttft_ms.mean,
               s->ttft_ms.p[3], s->tpot_ms.mean, s->tpot_ms.p[3], s->itl_ms.p[3],
               s->e2el_ms.mean);
    }
}

static json_t *header_json(const serve_run *b, const char *url) {
    const serve_options *o = b->o;
    json_t *j = json_object();
    json_object_set_new(j, "mode", json_string("serve"));
    json_object_set_new(j, "url", json_string(url));
    json_object_set_new(j, "in_process", json_boolean(o->url == NULL));
    json_object_set_new(j, "served_model_name", json_string(b->http.model));
    json_object_set_new(j, "model", o->model ? json_string(o->model) : json_null());
    json_object_set_new(j, "dataset_name", json_string(o->dataset_name));
    json_object_set_new(j, "dataset_path",
                        o->dataset_path ? json_string(o->dataset_path) : json_null());
    json_object_set_new(j, "num_prompts", json_integer(o->num_prompts));
    json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
    json_object_set_new(j, "burstiness", json_real(o->burstiness));
    json_object_set_new(j, "max_concurrency",
                        o->max_concurrency ? json_integer(o->max_concurrency) : json_null());
    json_object_set_new(j, "num_warmups", json_integer(o->num_warmups));
    json_object_set_new(j, "ignore_eos", json_boolean(o->ignore_eos));
    if (b->has_roof) folo_bench_roofline_header_json(&b->roof, j);
    return j;
}

static int make_prompts(const serve_options *o, const char *tokenizer_dir, int n,
                        folo_bench_prompt *prompts, folo_error *err) {
    folo_tokenizer *tok = folo_tokenizer_load(tokenizer_dir, err);
    if (!tok) return -1;
    int rc = strcmp(o->dataset_name, "sharegpt") == 0
                 ? folo_bench_sharegpt(o->dataset_path, tok, n,
                                       o->output_len_given ? o->random.output_len : 0, o->seed,
                                       prompts, err)
                 : folo_bench_random_prompts(tok, &o->random, n, o->seed, prompts,
                                             err);
    folo_tokenizer_free(tok);
    return rc;
}

/* Runs the warm-ups and the sweep against base_url. */
static int run_client(serve_run *b, const char *base_url, folo_error *err) {
    const serve_options *o = b->o;
    folo_buf url = {0};
    folo_buf_printf(&url, "%s%s", base_url, o->endpoint);
    b->http.url = folo_buf_str(&url);
    b->http.max_concurrency = o->max_concurrency;
    b->http.ignore_eos = o->ignore_eos;
    char rate0[32];
    bench_format_rate(rate0, sizeof rate0, o->rates[0]);
    printf("folo bench serve: %d %s requests to %s (model \"%s\"), burstiness %g, %s\n",
           o->num_prompts, o->dataset_name, b->http.url, b->http.model, o->burstiness,
           o->max_concurrency ? "concurrency capped" : "no concurrency cap");
    if (b->has_roof) folo_bench_roofline_print(&b->roof);
    int rc = o->num_warmups > 0 ? send_warmups(b, err) : 0;
    json_t *out = header_json(b, b->http.url);
    json_t *results = json_array();
    json_object_set_new(out, "results", results);
    folo_bench_summary *sums = folo_calloc((size_t)o->n_rates, sizeof *sums);
    for (int k = 0; k < o->n_rates && rc == 0; k++) rc = run_rate(b, k, results, &sums[k], err);
    if (rc == 0 && o->n_rates > 1) print_sweep(o, sums);
    if (rc == 0) rc = bench_write_reports(&o->report, out, err);
    free(sums);
    json_decref(out);
    folo_buf_free(&url);
    return rc;
}

/* Starts folo's server over the engine of -m on a free port, runs the
 * client against it, stops it. */
static int run_in_process(serve_run *b, const char *model_dir, folo_error *err) {
    const serve_options *o = b->o;
    folo_model *m = folo_model_load(model_dir, err);
    if (!m) return -1;
    folo_bench_model_figures fig;
    folo_bench_model_figures_of(m, &fig);
    folo_model_free(m);
    if (bench_roofline(&o->report, &o->engine, &fig, &b->roof, err)) return -1;
    b->has_roof = true;
    int port = 0;
    if (free_port(&port, err)) return -1;
    folo_engine_options eo = b->o->engine;
    eo.model_dir = model_dir;
    folo_engine *engine = folo_engine_create(&eo, err);
    if (!engine) return -1;
    /* A client gone mid-stream must not kill the process while the server
     * writes to its socket. */
    signal(SIGPIPE, SIG_IGN);
    /* No queue limit (the engine's max_queue is 0): the benchmark measures
     * the queueing, it must not be turned away by it. */
    folo_server_options so = {.host = "127.0.0.1", .port = port, .model_name = b->http.model,
                              .max_body_bytes = FOLO_SERVER_MAX_BODY_BYTES};
    folo_server *server = folo_server_start(engine, &so, err);
    int rc = -1;
    if (server) {
        char base[64];
        snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
        rc = run_client(b, base, err);
        folo_server_stop(server);
    }
    folo_engine_destroy(engine);
    return rc;
}

int folo_cmd_bench_serve(int argc, char **argv) {
    serve_options o = {
        .endpoint = "/v1/completions", .dataset_name = "random", .num_prompts = 100,
        .random = {.input_len = 32, .output_len = 128}, .rates = {INFINITY}, .n_rates = 1,
        .burstiness = 1, .report = {.devices = 1},
    };
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc == HELP_SHOWN ? 0 : rc;
    char *model_dir = NULL, *listed_name = NULL;
    if (!o.url || o.model) {
        model_dir = cli_model_dir(k_cmd, o.model);
        if (!model_dir) return 1;
    }
    const char *tokenizer_dir = o.tokenizer ? o.tokenizer
                                : model_dir ? model_dir
                                            : cli_tokenizer_dir();
    serve_run b = {.o = &o};
    b.n_prompts = o.num_warmups + o.n_rates * o.num_prompts;
    b.prompts = folo_calloc((size_t)b.n_prompts, sizeof *b.prompts);
    b.send_at_s = folo_calloc((size_t)o.num_prompts, sizeof *b.send_at_s);
    folo_error err = {{0}};
    bool have_prompts = make_prompts(&o, tokenizer_dir, b.n_prompts, b.prompts, &err) == 0;
    rc = have_prompts ? 0 : -1;
    if (rc == 0) {
        if (o.url) {
            char *base = folo_strdup(o.url);
            size_t len = strlen(base);
            while (len > 0 && base[len - 1] == '/') base[--len] = '\0';
            b.http.model = o.served_name;
            if (!b.http.model) b.http.model = listed_name = folo_bench_http_first_model(base, &err);
            rc = b.http.model ? run_client(&b, base, &err) : -1;
            free(base);
        } else {
            b.http.model = o.served_name ? o.served_name : "folo-bench";
            rc = run_in_process(&b, model_dir, &err);
        }
    }
    if (rc != 0) fprintf(stderr, "folo bench serve: %s\n", err.message);
    if (have_prompts) folo_bench_prompts_free(b.prompts, b.n_prompts);
    free(b.prompts);
    free(b.send_at_s);
    free(listed_name);
    free(model_dir);
    return rc == 0 ? 0 : 1;
}
