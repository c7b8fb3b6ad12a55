/* The folo command: one function per subcommand, and the small helpers they
 * share for parsing flag values. Subcommands parse with getopt_long, print
 * their usage line on any bad flag or value, and return the process exit
 * code (0 success, 1 runtime failure, 2 usage error). */
#ifndef FOLO_CLI_CLI_H
#define FOLO_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "folo.h"

int folo_cmd_run(int argc, char **argv);
int folo_cmd_tokenize(int argc, char **argv);
int folo_cmd_logits(int argc, char **argv);
int folo_cmd_perplexity(int argc, char **argv);
int folo_cmd_make_model(int argc, char **argv);
int folo_cmd_template(int argc, char **argv);
int folo_cmd_generate(int argc, char **argv);
int folo_cmd_serve(int argc, char **argv);
int folo_cmd_bench(int argc, char **argv);
int folo_cmd_quantize(int argc, char **argv);

/* Value parsers: on failure print "folo <cmd>: invalid value 'v' for --flag
 * (expected ...)" to stderr and return -1. */
int cli_parse_int(const char *cmd, const char *flag, const char *v, long lo, long hi, int *out);
int cli_parse_u64(const char *cmd, const char *flag, const char *v, uint64_t *out);
int cli_parse_float(const char *cmd, const char *flag, const char *v, double lo, double hi,
                    float *out);
int cli_parse_double(const char *cmd, const char *flag, const char *v, double lo, double hi,
                     double *out);
/* A byte count: an integer with an optional K, M, G or T suffix (powers of
 * 1024, an optional trailing "iB" or "B"), e.g. 512M, 4GiB. */
int cli_parse_bytes(const char *cmd, const char *flag, const char *v, size_t *out);

/* A --device value: "cpu", "cuda" or "auto" (backend/device.h). */
int cli_parse_device(const char *cmd, const char *v, const char **out);

/* Prints "folo <cmd>: <message>" and the usage line, returns 2. */
int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The model directory to use: `flag_value` when given, else the default
 * synthetic model (qwen3-0.6b preset, bf16), created on first use under
 * $FOLO_CACHE_DIR, $XDG_CACHE_HOME/folo or ~/.cache/folo. Returns an owned
 * path or NULL after printing the error. */
char *cli_model_dir(const char *cmd, const char *flag_value);

/* A backend on `device` (cpu, cuda or auto) for the tools that drive one
 * directly, without the engine (logits, perplexity): a KV pool of n_seqs
 * sequences of up to seq_tokens tokens each, sequence s in blocks
 * [s * B, (s + 1) * B) with B = folo_single_seq_blocks(seq_tokens,
 * FOLO_DEFAULT_BLOCK_SIZE), and activation scratch for max_batch_tokens
 * tokens in one forward; no_weight_copy: the cpu backend's weights_in_place. */
folo_backend *cli_backend_create(const folo_model *model, const char *device,
                                 folo_compute_dtype dtype, int n_threads, int n_seqs,
                                 int seq_tokens, int max_batch_tokens, bool no_weight_copy,
                                 folo_error *err);

/* --dtype's values, indexed by folo_compute_dtype, NULL-terminated. */
extern const char *const cli_dtype_names[];

/* --dtype's value (one of cli_dtype_names) into *out; on a bad one prints
 * the error and returns -1. */
int cli_parse_dtype(const char *cmd, const char *v, folo_compute_dtype *out);
#define CLI_DTYPE_HELP                                                                     \
    "      --dtype T              float32: f32 matmul inputs and KV cache (the cpu's auto);\n"  \
    "                             bfloat16: both rounded to bf16, as llama.cpp and vLLM do\n"   \
    "                             (cuda's auto; on the cpu faster with AVX512-BF16); auto\n"    \
    "                             (default) (docs/performance.md)\n"

/* Directory with the Qwen3 tokenizer files shipped in the repository
 * ($FOLO_TOKENIZER_DIR overrides). */
const char *cli_tokenizer_dir(void);

/* The engine's flags, shared by the commands that create an engine
 * (generate, serve, bench): their getopt_long entries, their help text and
 * their parsing into folo_engine_options. Values start at 1000 so they never
 * meet a command's own option values. */
enum {
    CLI_OPT_MAX_BATCHED = 1000, CLI_OPT_MAX_SEQS, CLI_OPT_KV_MEMORY, CLI_OPT_BLOCK_SIZE,
    CLI_OPT_NO_PREFIX_CACHE, CLI_OPT_THREADS, CLI_OPT_DEVICE, CLI_OPT_BATCHING, CLI_OPT_KV,
    CLI_OPT_ATTENTION, CLI_OPT_NO_CHUNKED_PREFILL, CLI_OPT_ENFORCE_EAGER, CLI_OPT_GPU_MEMORY,
    CLI_OPT_DTYPE, CLI_OPT_NO_WEIGHT_COPY
};
#define CLI_ENGINE_LONG_OPTIONS                                                   \
    {"max-batched-tokens", required_argument, NULL, CLI_OPT_MAX_BATCHED},         \
    {"max-seqs", required_argument, NULL, CLI_OPT_MAX_SEQS},                      \
    {"kv-memory", required_argument, NULL, CLI_OPT_KV_MEMORY},                    \
    {"block-size", required_argument, NULL, CLI_OPT_BLOCK_SIZE},                  \
    {"no-prefix-cache", no_argument, NULL, CLI_OPT_NO_PREFIX_CACHE},              \
    {"threads", required_argument, NULL, CLI_OPT_THREADS},                        \
    {"device", required_argument, NULL, CLI_OPT_DEVICE},                          \
    {"dtype", required_argument, NULL, CLI_OPT_DTYPE},                            \
    {"batching", required_argument, NULL, CLI_OPT_BATCHING},                      \
    {"kv", required_argument, NULL, CLI_OPT_KV},                                  \
    {"attention", required_argument, NULL, CLI_OPT_ATTENTION},                    \
    {"no-chunked-prefill", no_argument, NULL, CLI_OPT_NO_CHUNKED_PREFILL},        \
    {"enforce-eager", no_argument, NULL, CLI_OPT_ENFORCE_EAGER},                  \
    {"no-weight-copy", no_argument, NULL, CLI_OPT_NO_WEIGHT_COPY},                \
    {"gpu-memory-utilization", required_argument, NULL, CLI_OPT_GPU_MEMORY}
#define CLI_ENGINE_HELP                                                                              \
    "      --max-batched-tokens N token budget of one engine step (default 512)\n"                  \
    "      --max-seqs N           sequences running at once (default 256)\n"                        \
    "      --kv-memory BYTES      KV cache size, e.g. 2G (default: min(4 GiB, RAM/2 - weights);\n"  \
    "                             on a GPU, what --gpu-memory-utilization leaves)\n"              \
    "      --gpu-memory-utilization X  share of the GPU's memory to hold, (0, 1] (default 0.9)\n"  \
    "      --block-size N         tokens per KV block (default 16)\n"                               \
    "      --no-prefix-cache      do not reuse the KV blocks of shared prompt prefixes\n"           \
    "      --threads N            CPU threads (default: all cores)\n"                               \
    "      --device D             cpu, cuda, or auto: cuda when built and a GPU is present (default)\n" \
    CLI_DTYPE_HELP                                                                               \
    "  Switches that turn an optimization off, to measure it (docs/switches.md):\n"           \
    "      --batching MODE        continuous (default), or static: a batch runs to\n"             \
    "                             completion before the next is admitted\n"                       \
    "      --kv LAYOUT            paged (default), or contiguous: prompt + max_tokens\n"          \
    "                             reserved per sequence up front (no prefix cache)\n"             \
    "      --attention KIND       online (default), or naive: each head's score matrix\n"         \
    "                             materialized (cpu; sequences up to 4096 tokens)\n"              \
    "      --no-chunked-prefill   prefill every prompt in one step, never split across steps\n"  \
    "      --enforce-eager        cuda: launch every kernel each step, no CUDA graphs\n"         \
    "      --no-weight-copy       cpu: read the weights from the file mapping, no copy in\n"     \
    "                             huge pages (less memory, slower decode)\n"

/* The default case of a command's getopt_long loop: parses c (with optarg)
 * into e when it is an engine flag and returns 0; otherwise, or on a bad
 * value, prints the error (an unknown option with the usage line) and
 * returns 2. */
int cli_engine_flag(const char *cmd, const char *usage, int c, char **argv,
                    folo_engine_options *e);

#endif
