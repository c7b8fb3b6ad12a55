/* folo make-model: writes a synthetic Qwen3 checkpoint (random weights, the
 * real tokenizer) in the Hugging Face layout; see model/make_model.h. Also
 * called in-process by cli_model_dir to create the default model. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "model/make_model.h"

static const char k_usage[] =
    "usage: folo make-model --preset tiny|qwen3-0.6b --out DIR [--dtype bf16|f16|f32]\n"
    "                       [--seed N] [--shards N] [--untied] [--tokenizer DIR]\n";

static const char k_help[] =
    "Writes a Hugging Face-layout Qwen3 checkpoint with random weights and the real\n"
    "Qwen3 tokenizer: config.json, generation_config.json, model.safetensors (or\n"
    "shards with model.safetensors.index.json) and the tokenizer files.\n"
    "\n"
    "  --preset NAME    tiny (H=64, 2 layers, real vocabulary) or qwen3-0.6b\n"
    "  --out DIR        output directory (created; its model files are replaced)\n"
    "  --dtype T        bf16 (default), f16 or f32\n"
    "  --seed N         random seed (default 0); the same seed writes the same bytes\n"
    "  --shards N       split the weights over N files (default 1)\n"
    "  --untied         store a separate lm_head.weight (tie_word_embeddings false)\n"
    "  --tokenizer DIR  where tokenizer.json and tokenizer_config.json come from\n"
    "                   (default: the repository's models/qwen3-tokenizer)\n"
    "  -h, --help       show this help\n";

static int parse_dtype(const char *v, folo_dtype *out) {
    if (strcmp(v, "bf16") == 0) *out = FOLO_DTYPE_BF16;
    else if (strcmp(v, "f16") == 0) *out = FOLO_DTYPE_F16;
    else if (strcmp(v, "f32") == 0) *out = FOLO_DTYPE_F32;
    else return -1;
    return 0;
}

int folo_cmd_make_model(int argc, char **argv) {
    static const struct option options[] = {
        {"preset", required_argument, NULL, 'p'}, {"out", required_argument, NULL, 'o'},
        {"dtype", required_argument, NULL, 'd'},  {"seed", required_argument, NULL, 's'},
        {"shards", required_argument, NULL, 'n'}, {"untied", no_argument, NULL, 'u'},
        {"tokenizer", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    folo_make_model_opts o = {.dtype = FOLO_DTYPE_BF16, .n_shards = 1,
                              .tokenizer_dir = cli_tokenizer_dir()};
    const char *cmd = "make-model";
    optind = 0; /* also called in-process, after another getopt loop */
    int c;
    while ((c = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (!folo_make_model_has_preset(optarg))
                return cli_usage_error(cmd, k_usage, "unknown preset '%s' (expected tiny or qwen3-0.6b)",
                                       optarg);
            o.preset = optarg;
            break;
        case 'o': o.out_dir = optarg; break;
        case 'd':
            if (parse_dtype(optarg, &o.dtype) != 0)
                return cli_usage_error(cmd, k_usage, "invalid value '%s' for --dtype (expected bf16, "
                                       "f16 or f32)", optarg);
            break;
        case 's':
            if (cli_parse_u64(cmd, "--seed", optarg, &o.seed) != 0) {
                fputs(k_usage, stderr);
                return 2;
            }
            break;
        case 'n':
            if (cli_parse_int(cmd, "--shards", optarg, 1, 99999, &o.n_shards) != 0) {
                fputs(k_usage, stderr);
                return 2;
            }
            break;
        case 'u': o.untied = true; break;
        case 't': o.tokenizer_dir = optarg; break;
        case 'h': fputs(k_usage, stdout); fputs("\n", stdout); fputs(k_help, stdout); return 0;
        case ':': return cli_usage_error(cmd, k_usage, "%s needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, k_usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (!o.preset) return cli_usage_error(cmd, k_usage, "--preset is required");
    if (!o.out_dir) return cli_usage_error(cmd, k_usage, "--out is required");

    folo_error err;
    if (folo_make_model(&o, &err) != 0) {
        fprintf(stderr, "folo make-model: %s\n", err.message);
        return 1;
    }
    return 0;
}
