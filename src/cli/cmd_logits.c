/* folo logits: the raw logits of every position of a token list, for
 * differential tests against other implementations (tests/python/
 * test_logits.py compares them with transformers).
 *
 * The ids run as one sequence on the backend --device names (cpu, cuda, or
 * auto: CUDA when built and a GPU is present), whose KV pool holds just
 * that sequence; with --chunk N they are fed N at a time over several
 * forwards, so later chunks attend to the cache the earlier ones wrote (the
 * result must equal the one-shot run). The output file is little-endian
 * float32, row-major [n_ids, V], written chunk by chunk. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/device.h"
#include "backend/single_seq.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/log.h"
#include "core/timer.h"
#include "model/model.h"

static const char k_usage[] =
    "usage: folo logits [-m DIR] --ids ID,ID,... --out FILE [--threads N] [--chunk N]\n"
    "                   [--device cpu|cuda|auto] [--dtype auto|float32|bfloat16]\n"
    "                   [--no-weight-copy]\n";

static const char k_help[] =
    "Runs the token ids as one sequence and writes the logits of every position to FILE\n"
    "as little-endian float32, row-major [number of ids, vocab size].\n\n"
    "  -m, --model DIR    Hugging Face Qwen3 checkpoint directory\n"
    "                     (default: a synthetic Qwen3-0.6B-shaped model, made on first use)\n"
    "      --ids LIST     comma-separated token ids, e.g. 9707,11,1879\n"
    "      --out FILE     where to write the logits\n"
    "      --threads N    CPU threads (default: all cores)\n"
    "      --chunk N      feed the ids N at a time over several forwards (default: all at once)\n"
    "      --device D     cpu, cuda, or auto: cuda when built and a GPU is present (default)\n"
    CLI_DTYPE_HELP
    "      --no-weight-copy       cpu: read the weights from the file mapping, as stored\n"
    "                             (docs/switches.md)\n";

typedef struct logits_options {
    const char *model;
    const char *ids_text;
    const char *out_path;
    int n_threads; /* 0: all cores */
    int chunk;     /* 0: all ids in one forward */
    const char *device; /* "cpu", "cuda" or "auto" (the default) */
    folo_compute_dtype dtype;
    bool no_weight_copy;
} logits_options;

/* Parses "1,2,3" into a new array; -1 on a malformed list. */
static int parse_ids(const char *text, int32_t **ids_out, int *n_out) {
    int n = 1;
    for (const char *p = text; *p; p++) n += *p == ',';
    int32_t *ids = folo_calloc((size_t)n, sizeof *ids);
    const char *p = text;
    for (int i = 0; i < n; i++) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < INT32_MIN || v > INT32_MAX || (*end != ',' && *end != '\0')) {
            free(ids);
            return -1;
        }
        ids[i] = (int32_t)v;
        p = end + 1;
    }
    *ids_out = ids;
    *n_out = n;
    return 0;
}

/* Returns 0 to go on, -1 after printing --help (exit 0), or 2 on a usage error. */
static int parse_args(int argc, char **argv, logits_options *o) {
    enum {
        OPT_IDS = 256,
        OPT_OUT,
        OPT_THREADS,
        OPT_CHUNK,
        OPT_DEVICE,
        OPT_DTYPE,
        OPT_NO_WEIGHT_COPY,
        OPT_HELP
    };
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"ids", required_argument, NULL, OPT_IDS},
        {"out", required_argument, NULL, OPT_OUT},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"chunk", required_argument, NULL, OPT_CHUNK},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"no-weight-copy", no_argument, NULL, OPT_NO_WEIGHT_COPY},
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "m:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_IDS: o->ids_text = optarg; break;
        case OPT_OUT: o->out_path = optarg; break;
        case OPT_THREADS:
            if (cli_parse_int("logits", "--threads", optarg, 1, 1024, &o->n_threads)) return 2;
            break;
        case OPT_CHUNK:
            if (cli_parse_int("logits", "--chunk", optarg, 1, INT_MAX, &o->chunk)) return 2;
            break;
        case OPT_DEVICE:
            if (!folo_device_name_valid(optarg))
                return cli_usage_error("logits", k_usage,
                                       "invalid value '%s' for --device (expected cpu, cuda "
                                       "or auto)",
                                       optarg);
            o->device = optarg;
            break;
        case OPT_DTYPE:
            if (cli_parse_dtype("logits", optarg, &o->dtype)) return 2;
            break;
        case OPT_NO_WEIGHT_COPY: o->no_weight_copy = true; break;
        case OPT_HELP: printf("%s\n%s", k_usage, k_help); return -1;
        case '?':
            if (optopt)
                return cli_usage_error("logits", k_usage, "option -%c is unknown or needs a value",
                                       optopt);
            return cli_usage_error("logits", k_usage, "unknown option '%s' (or missing value)",
                                   argv[optind - 1]);
        default: return 2;
        }
    }
    if (optind < argc)
        return cli_usage_error("logits", k_usage, "unexpected argument '%s'", argv[optind]);
    if (!o->ids_text) return cli_usage_error("logits", k_usage, "--ids is required");
    if (!o->out_path) return cli_usage_error("logits", k_usage, "--out is required");
    return 0;
}

/* Writes n floats as little-endian bytes, whatever the host's byte order. */
static int write_f32_le(FILE *f, const float *x, size_t n) {
    const uint32_t one = 1;
    uint8_t first_byte;
    memcpy(&first_byte, &one, 1);
    if (first_byte == 1) return fwrite(x, sizeof(float), n, f) == n ? 0 : -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        if (fwrite(le, 1, 4, f) != 4) return -1;
    }
    return 0;
}

/* Runs ids through a fresh backend on o->device and streams the logits to o->out_path. */
static int run_logits(const logits_options *o, const folo_model *model, const int32_t *ids,
                      int n_ids, folo_error *err) {
    const folo_config *c = &model->config;
    if (n_ids > c->max_position_embeddings)
        return folo_fail(err, "%d ids exceed the model's max_position_embeddings (%d)", n_ids,
                         c->max_position_embeddings);
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return folo_fail(err, "id %d (position %d) is outside the vocabulary [0, %d)", ids[i],
                             i, c->vocab_size);

    int chunk = o->chunk > 0 && o->chunk < n_ids ? o->chunk : n_ids;
    folo_backend *backend =
        cli_backend_create(model, o->device, o->dtype, o->n_threads, 1, n_ids, chunk,
                           o->no_weight_copy, err);
    if (!backend) return -1;
    float *logits =
        folo_alloc_large((size_t)chunk * c->vocab_size * sizeof(float)); /* [chunk, V] */
    FILE *out = fopen(o->out_path, "wb");
    int rc = 0;
    if (!logits) {
        rc = folo_fail(err, "cannot allocate %zu bytes of logits",
                       (size_t)chunk * c->vocab_size * sizeof(float));
    } else if (!out) {
        rc = folo_fail(err, "%s: %s", o->out_path, strerror(errno));
    } else {
        folo_single_seq seq;
        folo_single_seq_init(&seq, n_ids, backend->kv_block_size);
        double start_s = folo_now_s();
        int n_forwards = 0;
        for (int first = 0; first < n_ids && rc == 0; first += chunk) {
            int n = n_ids - first < chunk ? n_ids - first : chunk;
            const folo_batch *batch = folo_single_seq_step(&seq, ids + first, n, true);
            rc = folo_backend_forward(backend, batch, logits, err);
            if (rc == 0 && write_f32_le(out, logits, (size_t)n * c->vocab_size) != 0)
                rc = folo_fail(err, "%s: write failed: %s", o->out_path, strerror(errno));
            folo_single_seq_commit(&seq);
            n_forwards++;
        }
        double elapsed_s = folo_now_s() - start_s;
        folo_single_seq_free(&seq);
        if (rc == 0)
            folo_log(FOLO_LOG_INFO,
                     "logits: %d tokens in %d forward(s) on %s, %.3f s (%.1f tokens/s)", n_ids,
                     n_forwards, backend->name, elapsed_s, n_ids / elapsed_s);
    }
    if (out && fclose(out) != 0 && rc == 0)
        rc = folo_fail(err, "%s: %s", o->out_path, strerror(errno));
    folo_free_large(logits);
    folo_backend_destroy(backend);
    return rc;
}

int folo_cmd_logits(int argc, char **argv) {
    logits_options o = {.device = "auto"};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc < 0 ? 0 : rc;
    int32_t *ids;
    int n_ids;
    if (parse_ids(o.ids_text, &ids, &n_ids) != 0)
        return cli_usage_error("logits", k_usage,
                               "invalid value '%s' for --ids (expected comma-separated integers)",
                               o.ids_text);
    char *dir = cli_model_dir("logits", o.model);
    if (!dir) {
        free(ids);
        return 1;
    }
    folo_error err = {{0}};
    folo_model *model = folo_model_load(dir, &err);
    rc = model ? run_logits(&o, model, ids, n_ids, &err) : -1;
    if (rc != 0) fprintf(stderr, "folo logits: %s\n", err.message);
    folo_model_free(model);
    free(dir);
    free(ids);
    return rc != 0 ? 1 : 0;
}
