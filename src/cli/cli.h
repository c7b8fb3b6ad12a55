/* The folo command: one function per subcommand, and the small helpers they
 * share for parsing flag values. Subcommands parse with getopt_long, print
 * their usage line on any bad flag or value, and return the process exit
 * code (0 success, 1 runtime failure, 2 usage error). */
#ifndef FOLO_CLI_CLI_H
#define FOLO_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int folo_cmd_run(int argc, char **argv);
int folo_cmd_tokenize(int argc, char **argv);
int folo_cmd_logits(int argc, char **argv);
int folo_cmd_make_model(int argc, char **argv);
int folo_cmd_template(int argc, char **argv);
int folo_cmd_generate(int argc, char **argv);
int folo_cmd_serve(int argc, char **argv);
int folo_cmd_bench(int argc, char **argv);

/* Value parsers: on failure print "folo <cmd>: invalid value 'v' for --flag
 * (expected ...)" to stderr and return -1. */
int cli_parse_int(const char *cmd, const char *flag, const char *v, long lo, long hi, int *out);
int cli_parse_u64(const char *cmd, const char *flag, const char *v, uint64_t *out);
int cli_parse_float(const char *cmd, const char *flag, const char *v, double lo, double hi,
                    float *out);
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

/* Directory with the Qwen3 tokenizer files shipped in the repository
 * ($FOLO_TOKENIZER_DIR overrides). */
const char *cli_tokenizer_dir(void);

#endif
