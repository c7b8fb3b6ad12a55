/* Helpers shared by the subcommands: flag value parsing, usage errors, and
 * the default model (a synthetic 0.6B-shaped checkpoint made on first use). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "backend/single_seq.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/file.h"

int cli_parse_int(const char *cmd, const char *flag, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "folo %s: invalid value '%s' for %s (expected an integer in [%ld, %ld])\n",
                cmd, v, flag, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int cli_parse_u64(const char *cmd, const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-') {
        fprintf(stderr, "folo %s: invalid value '%s' for %s (expected a non-negative integer)\n",
                cmd, v, flag);
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}

int cli_parse_double(const char *cmd, const char *flag, const char *v, double lo, double hi,
                     double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "folo %s: invalid value '%s' for %s (expected a number in [%g, %g])\n",
                cmd, v, flag, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int cli_parse_float(const char *cmd, const char *flag, const char *v, double lo, double hi,
                    float *out) {
    double x;
    if (cli_parse_double(cmd, flag, v, lo, hi, &x) != 0) return -1;
    *out = (float)x;
    return 0;
}

int cli_parse_bytes(const char *cmd, const char *flag, const char *v, size_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    int shift = 0;
    const char *units = "KMGT";
    const char *unit = *end ? strchr(units, *end) : NULL;
    if (unit) {
        shift = 10 * (int)(unit - units + 1);
        end++;
        if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0) end += strlen(end);
    }
    if (errno || end == v || *end || v[0] == '-' || x == 0 ||
        (shift && x > (SIZE_MAX >> shift))) {
        fprintf(stderr,
                "folo %s: invalid value '%s' for %s (expected a positive byte count such as "
                "268435456, 256M or 4G)\n",
                cmd, v, flag);
        return -1;
    }
    *out = (size_t)x << shift;
    return 0;
}

int cli_parse_device(const char *cmd, const char *v, const char **out) {
    if (!folo_device_name_valid(v)) {
        fprintf(stderr, "folo %s: invalid value '%s' for --device (expected cpu, cuda or auto)\n",
                cmd, v);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "folo %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

folo_backend *cli_backend_create(const folo_model *model, const char *device,
                                 folo_compute_dtype dtype, int n_threads, int n_seqs,
                                 int seq_tokens, int max_batch_tokens, bool no_weight_copy,
                                 folo_error *err) {
    folo_backend_options bo = {.n_threads = n_threads,
                               .dtype = dtype,
                               .kv_block_size = FOLO_DEFAULT_BLOCK_SIZE,
                               .max_batch_tokens = max_batch_tokens,
                               .weights_in_place = no_weight_copy};
    bo.kv_n_blocks = n_seqs * folo_single_seq_blocks(seq_tokens, bo.kv_block_size);
    return folo_backend_create(device, model, &bo, err);
}

const char *cli_tokenizer_dir(void) {
    const char *env = getenv("FOLO_TOKENIZER_DIR");
    return env && *env ? env : FOLO_SOURCE_DIR "/models/qwen3-tokenizer";
}

static char *cache_dir(void) {
    const char *env = getenv("FOLO_CACHE_DIR");
    if (env && *env) return folo_strdup(env);
    env = getenv("XDG_CACHE_HOME");
    if (env && *env) return folo_path_join(env, "folo");
    env = getenv("HOME");
    char *home_cache = folo_path_join(env && *env ? env : "/tmp", ".cache");
    char *dir = folo_path_join(home_cache, "folo");
    free(home_cache);
    return dir;
}

char *cli_model_dir(const char *cmd, const char *flag_value) {
    if (flag_value) return folo_strdup(flag_value);
    char *cache = cache_dir();
    char *dir = folo_path_join(cache, "models/qwen3-0.6b-synthetic");
    free(cache);
    char *config = folo_path_join(dir, "config.json");
    int exists = folo_file_exists(config);
    free(config);
    if (exists) return dir;
    fprintf(stderr, "folo %s: no -m given; creating the default synthetic model in %s\n", cmd, dir);
    char *argv[] = {"make-model", "--preset", "qwen3-0.6b", "--dtype", "bf16", "--out", dir, NULL};
    if (folo_cmd_make_model(7, argv) != 0) {
        free(dir);
        return NULL;
    }
    return dir;
}

/* A switch's value: the index of v in names (NULL-terminated, the default
 * first). */
static int parse_choice(const char *cmd, const char *flag, const char *v,
                        const char *const *names, int *out) {
    for (int i = 0; names[i]; i++)
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            return 0;
        }
    fprintf(stderr, "folo %s: invalid value '%s' for %s (expected ", cmd, v, flag);
    for (int i = 0; names[i]; i++)
        fprintf(stderr, "%s%s", i == 0 ? "" : names[i + 1] ? ", " : " or ", names[i]);
    fprintf(stderr, ")\n");
    return -1;
}

const char *const cli_dtype_names[] = {"auto", "float32", "bfloat16", NULL};

int cli_parse_dtype(const char *cmd, const char *v, folo_compute_dtype *out) {
    int choice = 0;
    if (parse_choice(cmd, "--dtype", v, cli_dtype_names, &choice) != 0) return -1;
    *out = (folo_compute_dtype)choice;
    return 0;
}

int cli_engine_flag(const char *cmd, const char *usage, int c, char **argv,
                    folo_engine_options *e) {
    static const char *const batching[] = {"continuous", "static", NULL};
    static const char *const kv[] = {"paged", "contiguous", NULL};
    static const char *const attention[] = {"online", "naive", NULL};
    int choice = 0;
    const char *arg = optarg;
    int bad;
    switch (c) {
    case CLI_OPT_MAX_BATCHED:
        bad = cli_parse_int(cmd, "--max-batched-tokens", arg, 1, 1 << 20,
                            &e->max_num_batched_tokens);
        break;
    case CLI_OPT_MAX_SEQS:
        bad = cli_parse_int(cmd, "--max-seqs", arg, 1, 1 << 16, &e->max_num_seqs);
        break;
    case CLI_OPT_KV_MEMORY:
        bad = cli_parse_bytes(cmd, "--kv-memory", arg, &e->kv_memory_bytes);
        break;
    case CLI_OPT_BLOCK_SIZE:
        bad = cli_parse_int(cmd, "--block-size", arg, 1, 1024, &e->block_size);
        break;
    case CLI_OPT_NO_PREFIX_CACHE:
        e->disable_prefix_caching = true;
        bad = 0;
        break;
    case CLI_OPT_THREADS:
        bad = cli_parse_int(cmd, "--threads", arg, 1, 1024, &e->n_threads);
        break;
    case CLI_OPT_DEVICE: bad = cli_parse_device(cmd, arg, &e->device); break;
    case CLI_OPT_BATCHING:
        bad = parse_choice(cmd, "--batching", arg, batching, &choice);
        e->batching = choice ? FOLO_BATCHING_STATIC : FOLO_BATCHING_CONTINUOUS;
        break;
    case CLI_OPT_KV:
        bad = parse_choice(cmd, "--kv", arg, kv, &choice);
        e->kv_layout = choice ? FOLO_KV_CONTIGUOUS : FOLO_KV_PAGED;
        break;
    case CLI_OPT_ATTENTION:
        bad = parse_choice(cmd, "--attention", arg, attention, &choice);
        e->attention = choice ? FOLO_ATTENTION_NAIVE : FOLO_ATTENTION_ONLINE;
        break;
    case CLI_OPT_NO_CHUNKED_PREFILL:
        e->disable_chunked_prefill = true;
        bad = 0;
        break;
    case CLI_OPT_ENFORCE_EAGER:
        e->enforce_eager = true;
        bad = 0;
        break;
    case CLI_OPT_NO_WEIGHT_COPY:
        e->no_weight_copy = true;
        bad = 0;
        break;
    case CLI_OPT_DTYPE:
        bad = cli_parse_dtype(cmd, arg, &e->dtype);
        break;
    case CLI_OPT_GPU_MEMORY:
        bad = cli_parse_double(cmd, "--gpu-memory-utilization", arg, 0.01, 1.0,
                               &e->gpu_memory_utilization);
        break;
    default:
        return cli_usage_error(cmd, usage, "unknown option '%s' (or missing value)",
                               argv[optind - 1]);
    }
    return bad ? 2 : 0;
}
