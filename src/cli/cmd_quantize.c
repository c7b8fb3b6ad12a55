/* folo quantize: a float checkpoint to a 4-bit GPTQ one (src/quant/quantize.h
 * has the algorithm, docs/gptq.md the user's guide). Progress per layer on
 * stderr. A hidden flag, --dump-inputs DIR, writes the calibration windows
 * and every Hessian's input rows there for the tests' independent GPTQ
 * (tests/python/test_quantize.py); it is not in --help. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "quant/quantize.h"

static const char k_usage[] =
    "usage: folo quantize [-m DIR] --out DIR [--method gptq|rtn] [--calib FILE]\n"
    "                     [--bits 4] [--group-size N] [--sym|--asym] [--desc-act]\n"
    "                     [--static-groups] [--damp X]\n"
    "                     [--format gptq|gptq_v2] [--n-samples N] [--seq-len N] [--seed N]\n"
    "                     [--lm-head [int4|int8]] [--threads N]\n";

static const char k_help[] =
    "Quantizes every decoder linear of a float Qwen3 checkpoint to 4 bits and writes the\n"
    "GPTQ checkpoint layout GPTQModel writes (qweight, qzeros, f16 scales, g_idx; the\n"
    "embedding, norms and, without --lm-head, lm_head stay as they are), loadable by\n"
    "folo, vLLM and transformers.\n"
    "\n"
    "  -m, --model DIR      the float checkpoint (default: the synthetic Qwen3-0.6B-shaped\n"
    "                       model, made on first use)\n"
    "      --out DIR        where to write the quantized checkpoint (created)\n"
    "      --method M       gptq (default): GPTQ on calibration text; rtn: round-to-nearest\n"
    "                       on the same groups (the baseline; --calib optional, used only\n"
    "                       to report its errors)\n"
    "      --calib FILE     calibration text: a ShareGPT .json file (every turn's text) or\n"
    "                       any other file read as UTF-8 text\n"
    "      --n-samples N    calibration windows (default 128)\n"
    "      --seq-len N      tokens per window (default 512)\n"
    "      --seed N         picks the windows' offsets in the text (default 0)\n"
    "      --bits 4         bits per weight (only 4)\n"
    "      --group-size N   input columns sharing a scale and zero (default 128; -1: one\n"
    "                       group per row); must divide every linear's input size\n"
    "      --sym, --asym    symmetric grid, zero point 8 (default), or asymmetric\n"
    "      --desc-act       act-order: quantize columns by decreasing Hessian diagonal\n"
    "                       (GPTQ only; g_idx records each column's group)\n"
    "      --static-groups  find every group's grid before GPTQ's column loop, from the\n"
    "                       original columns, so that g_idx stays k / group size even\n"
    "                       with --desc-act (GPTQ only)\n"
    "      --damp X         dampening, a fraction of the Hessian's mean diagonal added to\n"
    "                       it, in (0, 1) (default 0.01)\n"
    "      --format F       gptq (default, stores zero - 1, the most widely loadable) or\n"
    "                       gptq_v2 (stores the zero; what GPTQModel 7 needs with --asym)\n"
    "      --lm-head [int4|int8]\n"
    "                       quantize lm_head too, on the final norm's output, to 4 bits like\n"
    "                       the linears (int4, the default) or to 8 (int8: a fifth of\n"
    "                       4-bit's error for twice its bytes); the embedding stays float and\n"
    "                       a tied head becomes untied\n"
    "      --threads N      CPU threads of the forward passes (default: all cores; BLAS\n"
    "                       runs its own, e.g. OPENBLAS_NUM_THREADS)\n"
    "  -h, --help           show this help\n";

typedef struct {
    folo_quantize_opts q;
    const char *model;
} quantize_args;

/* Returns 0 to go on, -1 after --help, or 2 on a usage error. */
static int parse_args(int argc, char **argv, quantize_args *a) {
    enum { OPT_OUT = 256, OPT_METHOD, OPT_CALIB, OPT_N_SAMPLES, OPT_SEQ_LEN, OPT_SEED, OPT_BITS,
           OPT_GROUP_SIZE, OPT_SYM, OPT_ASYM, OPT_DESC_ACT, OPT_STATIC_GROUPS, OPT_DAMP, OPT_FORMAT, OPT_LM_HEAD,
           OPT_THREADS, OPT_DUMP };
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"out", required_argument, NULL, OPT_OUT},
        {"method", required_argument, NULL, OPT_METHOD},
        {"calib", required_argument, NULL, OPT_CALIB},
        {"n-samples", required_argument, NULL, OPT_N_SAMPLES},
        {"seq-len", required_argument, NULL, OPT_SEQ_LEN},
        {"seed", required_argument, NULL, OPT_SEED},
        {"bits", required_argument, NULL, OPT_BITS},
        {"group-size", required_argument, NULL, OPT_GROUP_SIZE},
        {"sym", no_argument, NULL, OPT_SYM},
        {"asym", no_argument, NULL, OPT_ASYM},
        {"desc-act", no_argument, NULL, OPT_DESC_ACT},
        {"static-groups", no_argument, NULL, OPT_STATIC_GROUPS},
        {"damp", required_argument, NULL, OPT_DAMP},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"lm-head", optional_argument, NULL, OPT_LM_HEAD},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"dump-inputs", required_argument, NULL, OPT_DUMP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cmd = "quantize";
    folo_quantize_opts *q = &a->q;
    optind = 0;
    opterr = 0;
    int c, bits;
    while ((c = getopt_long(argc, argv, ":m:h", longs, NULL)) != -1) {
        int bad = 0;
        switch (c) {
        case 'm': a->model = optarg; break;
        case OPT_OUT: q->out_dir = optarg; break;
        case OPT_METHOD:
            if (strcmp(optarg, "gptq") == 0) q->params.method = FOLO_QUANT_GPTQ;
            else if (strcmp(optarg, "rtn") == 0) q->params.method = FOLO_QUANT_RTN;
            else
                return cli_usage_error(cmd, k_usage, "invalid value '%s' for --method (expected "
                                       "gptq or rtn)", optarg);
            break;
        case OPT_CALIB: q->calib_path = optarg; break;
        case OPT_N_SAMPLES:
            bad = cli_parse_int(cmd, "--n-samples", optarg, 1, 1 << 20, &q->n_samples);
            break;
        case OPT_SEQ_LEN:
            bad = cli_parse_int(cmd, "--seq-len", optarg, 1, 1 << 20, &q->seq_len);
            break;
        case OPT_SEED: bad = cli_parse_u64(cmd, "--seed", optarg, &q->seed); break;
        case OPT_BITS:
            bad = cli_parse_int(cmd, "--bits", optarg, 1, 64, &bits);
            if (!bad && bits != 4)
                return cli_usage_error(cmd, k_usage, "--bits %d: only 4-bit GPTQ is supported",
                                       bits);
            break;
        case OPT_GROUP_SIZE:
            bad = cli_parse_int(cmd, "--group-size", optarg, -1, 1 << 20, &q->params.group_size);
            if (!bad && q->params.group_size == 0)
                return cli_usage_error(cmd, k_usage, "invalid value '0' for --group-size "
                                       "(expected a positive size, or -1 for one group per row)");
            break;
        case OPT_SYM: q->params.sym = true; break;
        case OPT_ASYM: q->params.sym = false; break;
        case OPT_DESC_ACT: q->params.desc_act = true; break;
        case OPT_STATIC_GROUPS: q->params.static_groups = true; break;
        case OPT_DAMP:
            bad = cli_parse_double(cmd, "--damp", optarg, 0.0, 1.0, &q->params.damp);
            if (!bad && (q->params.damp <= 0.0 || q->params.damp >= 1.0))
                return cli_usage_error(cmd, k_usage, "invalid value '%s' for --damp (expected a "
                                       "number in (0, 1))", optarg);
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "gptq") == 0) q->format_v2 = false;
            else if (strcmp(optarg, "gptq_v2") == 0) q->format_v2 = true;
            else
                return cli_usage_error(cmd, k_usage, "invalid value '%s' for --format (expected "
                                       "gptq or gptq_v2)", optarg);
            break;
        case OPT_LM_HEAD: {
            /* "--lm-head int8" as well as "--lm-head=int8" */
            const char *kind = optarg;
            if (!kind && optind < argc &&
                (strcmp(argv[optind], "int4") == 0 || strcmp(argv[optind], "int8") == 0))
                kind = argv[optind++];
            if (!kind || strcmp(kind, "int4") == 0) q->lm_head_bits = 4;
            else if (strcmp(kind, "int8") == 0) q->lm_head_bits = 8;
            else
                return cli_usage_error(cmd, k_usage, "invalid value '%s' for --lm-head (expected "
                                       "int4 or int8)", kind);
            break;
        }
        case OPT_THREADS:
            bad = cli_parse_int(cmd, "--threads", optarg, 1, 1024, &q->n_threads);
            break;
        case OPT_DUMP: q->dump_dir = optarg; break;
        case 'h': printf("%s\n%s", k_usage, k_help); return -1;
        case ':': return cli_usage_error(cmd, k_usage, "%s needs a value", argv[optind - 1]);
        default: return cli_usage_error(cmd, k_usage, "unknown option '%s'", argv[optind - 1]);
        }
        if (bad) {
            fputs(k_usage, stderr);
            return 2;
        }
    }
    if (optind < argc)
        return cli_usage_error(cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (!q->out_dir) return cli_usage_error(cmd, k_usage, "--out is required");
    bool gptq = q->params.method == FOLO_QUANT_GPTQ;
    if (gptq && !q->calib_path)
        return cli_usage_error(cmd, k_usage, "--method gptq needs calibration text: --calib FILE");
    if (!gptq && q->params.desc_act)
        return cli_usage_error(cmd, k_usage, "--desc-act orders columns by GPTQ's Hessian; it "
                               "needs --method gptq");
    if (!gptq && q->params.static_groups)
        return cli_usage_error(cmd, k_usage, "--static-groups fixes GPTQ's grids before its "
                               "column loop; it needs --method gptq (round-to-nearest's grids "
                               "are static already)");
    return 0;
}

int folo_cmd_quantize(int argc, char **argv) {
    quantize_args a = {.q = {.params = {.method = FOLO_QUANT_GPTQ, .bits = 4, .group_size = 128,
                                        .sym = true, .damp = 0.01},
                             .n_samples = 128, .seq_len = 512}};
    int rc = parse_args(argc, argv, &a);
    if (rc != 0) return rc < 0 ? 0 : rc;
    char *dir = cli_model_dir("quantize", a.model);
    if (!dir) return 1;
    a.q.model_dir = dir;
    folo_error err = {{0}};
    rc = folo_quantize(&a.q, &err);
    if (rc != 0) fprintf(stderr, "folo quantize: %s\n", err.message);
    free(dir);
    return rc != 0 ? 1 : 0;
}
