/* folo perplexity: the perplexity of a text under a model and, with
 * --kl-base, how far the model's next-token distributions are from a base
 * model's (KL divergence, top-1 agreement, Δp): the quality figures of a
 * quantized model, defined as llama.cpp's `llama-perplexity` defines them so
 * the two engines' tables compare.
 *
 * The text (its last newline dropped, as llama-perplexity reads a file) is
 * tokenized without BOS and cut into consecutive chunks of --ctx tokens; a
 * tail shorter than a chunk is left out. Each chunk runs from an empty cache
 * (positions 0 .. ctx-1), and only its second half is scored: the logits at
 * positions ctx/2 .. ctx-2 against the tokens at ctx/2 + 1 .. ctx-1, so
 * every prediction scored has at least ctx/2 tokens of context. --batch
 * chunks go through one forward (one sequence each, side by side in the KV
 * pool), and the backend returns logit rows only for the scored positions.
 * With --kl-base both models run in this process, chunk batch by chunk
 * batch, so only one batch of logits per model is ever held. The scoring is
 * src/eval/perplexity.h's. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/single_seq.h"
#include "cli/cli.h"
#include "core/alloc.h"
#include "core/file.h"
#include "core/threadpool.h"
#include "core/timer.h"
#include "eval/perplexity.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

static const char k_cmd[] = "perplexity";
static const char k_usage[] =
    "usage: folo perplexity [-m DIR] --file F [--ctx N] [--batch N] [--chunks N]\n"
    "                       [--kl-base DIR] [--threads N] [--device cpu|cuda|auto]\n"
    "                       [--dtype auto|float32|bfloat16] [--json FILE]\n";
static const char k_help[] =
    "Perplexity of the text in F, as llama.cpp's llama-perplexity computes it: the text\n"
    "is cut into chunks of --ctx tokens, each run from an empty cache, and the second\n"
    "half of each chunk's predictions is scored. A running value per chunk goes to\n"
    "stderr, the final estimate to stdout.\n\n"
    "  -m, --model DIR    Hugging Face Qwen3 checkpoint directory (the model scored)\n"
    "                     (default: a synthetic Qwen3-0.6B-shaped model, made on first use)\n"
    "      --file F       the text (UTF-8)\n"
    "      --ctx N        tokens per chunk, at least 3 (default 512)\n"
    "      --batch N      chunks per forward (default: as many as make 512 tokens, at least 1)\n"
    "      --chunks N     score at most the first N chunks (default: all)\n"
    "      --kl-base DIR  a base model (the unquantized one) run on the same tokens: reports\n"
    "                     KL(base || model), top-1 agreement, delta p and both perplexities\n"
    "      --threads N    CPU threads (default: all cores)\n"
    "      --device D     cpu, cuda, or auto: cuda when built and a GPU is present (default)\n"
    "      --dtype T      the scored model's matmul inputs (the base runs with auto): with\n"
    "                     --kl-base the same DIR, the cost of bfloat16 on the cpu\n"
    "      --json FILE    every figure, machine-readable (keys: docs/perplexity.md)\n";

/* The tokens one forward aims for when --batch is not given. */
#define DEFAULT_BATCH_TOKENS 512

typedef struct ppl_options {
    const char *model;
    const char *file;
    const char *kl_base;
    const char *json_path;
    const char *device; /* "cpu", "cuda" or "auto" */
    folo_compute_dtype dtype; /* the scored model's; the base runs with auto */
    int ctx;            /* tokens per chunk */
    int batch;          /* chunks per forward; 0: DEFAULT_BATCH_TOKENS / ctx */
    int max_chunks;     /* 0: every whole chunk of the text */
    int n_threads;      /* 0: all cores */
} ppl_options;

/* Returns 0 to go on, -1 after printing --help, or 2 on a usage error. */
static int parse_args(int argc, char **argv, ppl_options *o) {
    enum {
        OPT_FILE = 256,
        OPT_CTX,
        OPT_BATCH,
        OPT_CHUNKS,
        OPT_KL_BASE,
        OPT_JSON,
        OPT_DTYPE,
        OPT_HELP
    };
    static const struct option longs[] = {
        {"model", required_argument, NULL, 'm'},
        {"file", required_argument, NULL, OPT_FILE},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"chunks", required_argument, NULL, OPT_CHUNKS},
        {"kl-base", required_argument, NULL, OPT_KL_BASE},
        {"threads", required_argument, NULL, CLI_OPT_THREADS},
        {"device", required_argument, NULL, CLI_OPT_DEVICE},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"json", required_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, OPT_HELP},
        {0, 0, 0, 0},
    };
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":m:", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case OPT_FILE: o->file = optarg; break;
        case OPT_KL_BASE: o->kl_base = optarg; break;
        case OPT_JSON: o->json_path = optarg; break;
        case OPT_CTX:
            if (cli_parse_int(k_cmd, "--ctx", optarg, 3, INT_MAX, &o->ctx)) return 2;
            break;
        case OPT_BATCH:
            if (cli_parse_int(k_cmd, "--batch", optarg, 1, 1 << 16, &o->batch)) return 2;
            break;
        case OPT_CHUNKS:
            if (cli_parse_int(k_cmd, "--chunks", optarg, 1, INT_MAX, &o->max_chunks)) return 2;
            break;
        case CLI_OPT_THREADS:
            if (cli_parse_int(k_cmd, "--threads", optarg, 1, 1024, &o->n_threads)) return 2;
            break;
        case CLI_OPT_DEVICE:
            if (cli_parse_device(k_cmd, optarg, &o->device)) return 2;
            break;
        case OPT_DTYPE:
            if (cli_parse_dtype(k_cmd, optarg, &o->dtype)) return 2;
            break;
        case OPT_HELP: printf("%s\n%s", k_usage, k_help); return -1;
        case ':':
            return cli_usage_error(k_cmd, k_usage, "option '%s' needs a value", argv[optind - 1]);
        default:
            return cli_usage_error(k_cmd, k_usage, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error(k_cmd, k_usage, "unexpected argument '%s'", argv[optind]);
    if (!o->file) return cli_usage_error(k_cmd, k_usage, "--file is required");
    return 0;
}

/* ---- the models --------------------------------------------------------------- */

/* One model of the comparison with what it needs to score a batch. */
typedef struct ppl_side {
    const char *flag;       /* "-m" or "--kl-base", for messages */
    char *dir;              /* owned */
    folo_model *model;
    folo_tokenizer *tok;
    int32_t *ids;           /* [n_ids] the text's tokens under this side's tokenizer */
    int n_ids;
    folo_backend *backend;
    float *logits;          /* [batch * scored, V] of the latest forward */
} ppl_side;

static void side_free(ppl_side *s) {
    folo_free_large(s->logits);
    folo_backend_destroy(s->backend);
    free(s->ids);
    folo_tokenizer_free(s->tok);
    folo_model_free(s->model);
    free(s->dir);
}

/* Loads the side's tokenizer and tokenizes the text (1 when the tokenizer
 * does not load, 2 when the text is not UTF-8; the message in err). */
static int side_tokenize(ppl_side *s, const char *file, const char *text, size_t len,
                         folo_error *err) {
    s->tok = folo_tokenizer_load(s->dir, err);
    if (!s->tok) return folo_fail_prefix(err, "%s %s", s->flag, s->dir), 1;
    if (folo_tokenizer_encode(s->tok, text, len, &s->ids, &s->n_ids, err) != 0)
        return folo_fail_prefix(err, "--file %s", file), 2;
    return 0;
}

/* Loads the side's model: 1 when it does not load or does not fit the
 * tokenizer, 2 when --ctx is beyond its context. */
static int side_load_model(ppl_side *s, int ctx, folo_error *err) {
    s->model = folo_model_load(s->dir, err);
    if (!s->model) return folo_fail_prefix(err, "%s %s", s->flag, s->dir), 1;
    const folo_config *c = &s->model->config;
    int n_tok = folo_tokenizer_n_vocab(s->tok);
    if (n_tok > c->vocab_size)
        return folo_fail(err, "%s %s: the tokenizer has %d ids, more than the model's vocab_size "
                         "%d", s->flag, s->dir, n_tok, c->vocab_size), 1;
    if (ctx > c->max_position_embeddings)
        return folo_fail(err, "--ctx %d is larger than the context of %s %s "
                         "(max_position_embeddings %d)", ctx, s->flag, s->dir,
                         c->max_position_embeddings), 2;
    return 0;
}

/* The base must see the very tokens the model sees: the same tokenizer on
 * the text ... */
static int check_same_tokens(const ppl_side *m, const ppl_side *b, folo_error *err) {
    int tm = folo_tokenizer_n_vocab(m->tok), tb = folo_tokenizer_n_vocab(b->tok);
    if (tm != tb)
        return folo_fail(err, "the models' tokenizers differ: %d ids (-m %s) vs %d (--kl-base %s)",
                         tm, m->dir, tb, b->dir);
    int n = m->n_ids < b->n_ids ? m->n_ids : b->n_ids;
    for (int i = 0; i < n; i++)
        if (m->ids[i] != b->ids[i])
            return folo_fail(err, "the models' tokenizers differ on the text: token %d is %d "
                             "under -m %s and %d under --kl-base %s", i, m->ids[i], m->dir,
                             b->ids[i], b->dir);
    if (m->n_ids != b->n_ids)
        return folo_fail(err, "the models' tokenizers differ on the text: %d tokens under -m %s, "
                         "%d under --kl-base %s", m->n_ids, m->dir, b->n_ids, b->dir);
    return 0;
}

/* ... over the same vocabulary. */
static int check_same_vocabulary(const ppl_side *m, const ppl_side *b, folo_error *err) {
    int vm = m->model->config.vocab_size, vb = b->model->config.vocab_size;
    if (vm != vb)
        return folo_fail(err, "the models' vocabularies differ: vocab_size %d (-m %s) vs %d "
                         "(--kl-base %s)", vm, m->dir, vb, b->dir);
    return 0;
}

/* ---- chunk batches ------------------------------------------------------------------ */

/* Up to n_seqs chunks side by side: chunk s holds positions 0 .. ctx-1 in
 * its own blocks and asks for the logits of positions first .. ctx-2. The
 * metadata is the same for every batch; only the token ids move along the
 * text (consecutive chunks are consecutive tokens). */
typedef struct chunk_batch {
    int ctx, first, n_scored;  /* tokens per chunk, first scored position, scored per chunk */
    int32_t *positions;        /* [n_seqs * ctx] */
    int32_t *slots;            /* [n_seqs * ctx] */
    int32_t *seq_starts;       /* [n_seqs + 1] */
    int32_t *seq_lens;         /* [n_seqs] */
    int32_t *block_tables;     /* [n_seqs, blocks_per_seq] */
    int32_t *logit_rows;       /* [n_seqs * n_scored] */
    int blocks_per_seq;
    folo_batch batch;
} chunk_batch;

static void chunk_batch_init(chunk_batch *cb, int n_seqs, int ctx, int block_size) {
    memset(cb, 0, sizeof *cb);
    cb->ctx = ctx;
    cb->first = ctx / 2;
    cb->n_scored = ctx - 1 - cb->first;
    cb->blocks_per_seq = folo_single_seq_blocks(ctx, block_size);
    size_t n_tokens = (size_t)n_seqs * ctx;
    cb->positions = folo_calloc(n_tokens, sizeof(int32_t));
    cb->slots = folo_calloc(n_tokens, sizeof(int32_t));
    cb->seq_starts = folo_calloc((size_t)n_seqs + 1, sizeof(int32_t));
    cb->seq_lens = folo_calloc((size_t)n_seqs, sizeof(int32_t));
    cb->block_tables = folo_calloc((size_t)n_seqs * cb->blocks_per_seq, sizeof(int32_t));
    cb->logit_rows = folo_calloc((size_t)n_seqs * cb->n_scored, sizeof(int32_t));
    for (int s = 0; s < n_seqs; s++) {
        int first_block = s * cb->blocks_per_seq;
        for (int b = 0; b < cb->blocks_per_seq; b++)
            cb->block_tables[first_block + b] = first_block + b;
        for (int p = 0; p < ctx; p++) {
            cb->positions[s * ctx + p] = p;
            cb->slots[s * ctx + p] = first_block * block_size + p;
        }
        for (int j = 0; j < cb->n_scored; j++)
            cb->logit_rows[s * cb->n_scored + j] = s * ctx + cb->first + j;
        cb->seq_starts[s + 1] = (s + 1) * ctx;
        cb->seq_lens[s] = ctx;
    }
}

static void chunk_batch_free(chunk_batch *cb) {
    free(cb->positions);
    free(cb->slots);
    free(cb->seq_starts);
    free(cb->seq_lens);
    free(cb->block_tables);
    free(cb->logit_rows);
}

/* The batch of n_seqs chunks whose tokens start at ids. */
static const folo_batch *chunk_batch_at(chunk_batch *cb, const int32_t *ids, int n_seqs) {
    cb->batch = (folo_batch){
        .n_tokens = n_seqs * cb->ctx,
        .token_ids = ids,
        .positions = cb->positions,
        .slot_mapping = cb->slots,
        .n_seqs = n_seqs,
        .seq_starts = cb->seq_starts,
        .seq_lens = cb->seq_lens,
        .block_tables = cb->block_tables,
        .max_blocks_per_seq = cb->blocks_per_seq,
        .n_logit_rows = n_seqs * cb->n_scored,
        .logit_rows = cb->logit_rows,
    };
    return &cb->batch;
}

/* ---- output ------------------------------------------------------------------------ */

static void print_progress(int chunk, int n_chunks, const folo_ppl_summary *s, bool has_base) {
    fprintf(stderr, "perplexity: [%d/%d] PPL %.4f", chunk, n_chunks, s->ppl);
    if (has_base)
        fprintf(stderr, ", base %.4f, KL %.6f, same top %.2f %%", s->ppl_base, s->kl_mean,
                100 * s->same_top);
    fputc('\n', stderr);
}

static void print_summary(const folo_ppl_summary *s, bool has_base) {
    if (!has_base) {
        printf("Final estimate: PPL = %.4f +/- %.5f\n", s->ppl, s->ppl_err);
        return;
    }
    printf("PPL(model)           : %12.6f +/- %.6f\n", s->ppl, s->ppl_err);
    printf("PPL(base)            : %12.6f +/- %.6f\n", s->ppl_base, s->ppl_base_err);
    printf("PPL(model)/PPL(base) : %12.6f +/- %.6f\n", s->ppl_ratio, s->ppl_ratio_err);
    printf("Mean KLD             : %12.6f +/- %.6f\n", s->kl_mean, s->kl_err);
    printf("Median KLD           : %12.6f\n", s->kl_median);
    printf("90%% KLD              : %12.6f\n", s->kl_p90);
    printf("95%% KLD              : %12.6f\n", s->kl_p95);
    printf("99%% KLD              : %12.6f\n", s->kl_p99);
    printf("Maximum KLD          : %12.6f\n", s->kl_max);
    printf("Same top p           : %12.3f +/- %.3f %%\n", 100 * s->same_top,
           100 * s->same_top_err);
    printf("Mean delta p         : %12.3f +/- %.3f %%\n", 100 * s->delta_p_mean,
           100 * s->delta_p_err);
    printf("RMS delta p          : %12.3f +/- %.3f %%\n", 100 * s->delta_p_rms,
           100 * s->delta_p_rms_err);
}

/* What a run was, beside its figures, for the JSON file. */
typedef struct ppl_run {
    const char *model_dir, *base_dir, *device;
    int n_text_tokens, n_chunks, batch;
    double seconds;
    const double *chunk_ppl; /* [n_chunks] running PPL after each chunk */
} ppl_run;

static int write_json(FILE *f, const ppl_options *o, const ppl_run *r, const chunk_batch *cb,
                      const folo_ppl_summary *s, folo_error *err) {
    json_t *root = json_object();
    json_t *chunk_ppl = json_array();
    for (int i = 0; i < r->n_chunks; i++)
        json_array_append_new(chunk_ppl, json_real(r->chunk_ppl[i]));
    json_object_set_new(root, "model", json_string(r->model_dir));
    json_object_set_new(root, "kl_base", r->base_dir ? json_string(r->base_dir) : json_null());
    json_object_set_new(root, "file", json_string(o->file));
    json_object_set_new(root, "device", json_string(r->device));
    json_object_set_new(root, "dtype", json_string(cli_dtype_names[o->dtype]));
    json_object_set_new(root, "n_text_tokens", json_integer(r->n_text_tokens));
    json_object_set_new(root, "ctx", json_integer(cb->ctx));
    json_object_set_new(root, "n_chunks", json_integer(r->n_chunks));
    json_object_set_new(root, "batch", json_integer(r->batch));
    json_object_set_new(root, "first_scored_position", json_integer(cb->first));
    json_object_set_new(root, "scored_per_chunk", json_integer(cb->n_scored));
    json_object_set_new(root, "n_scored", json_integer(s->n));
    json_object_set_new(root, "seconds", json_real(r->seconds));
    json_object_set_new(root, "nll_mean", json_real(s->nll_mean));
    json_object_set_new(root, "nll_err", json_real(s->nll_err));
    json_object_set_new(root, "ppl", json_real(s->ppl));
    json_object_set_new(root, "ppl_err", json_real(s->ppl_err));
    json_object_set_new(root, "chunk_ppl", chunk_ppl);
    if (r->base_dir) {
        const struct {
            const char *key;
            double value;
        } figures[] = {
            {"nll_base_mean", s->nll_base_mean}, {"nll_base_err", s->nll_base_err},
            {"ppl_base", s->ppl_base}, {"ppl_base_err", s->ppl_base_err},
            {"ppl_ratio", s->ppl_ratio}, {"ppl_ratio_err", s->ppl_ratio_err},
            {"ln_ppl_ratio", s->ln_ppl_ratio}, {"ln_ppl_ratio_err", s->ln_ppl_ratio_err},
            {"kl_mean", s->kl_mean}, {"kl_err", s->kl_err}, {"kl_median", s->kl_median},
            {"kl_p90", s->kl_p90}, {"kl_p95", s->kl_p95}, {"kl_p99", s->kl_p99},
            {"kl_p99_9", s->kl_p999}, {"kl_max", s->kl_max},
            {"same_top_pct", 100 * s->same_top}, {"same_top_err_pct", 100 * s->same_top_err},
            {"delta_p_mean_pct", 100 * s->delta_p_mean},
            {"delta_p_err_pct", 100 * s->delta_p_err},
            {"delta_p_rms_pct", 100 * s->delta_p_rms},
            {"delta_p_rms_err_pct", 100 * s->delta_p_rms_err},
        };
        for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
            json_object_set_new(root, figures[i].key, json_real(figures[i].value));
    }
    int rc = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) == 0 &&
                     fputc('\n', f) != EOF
                 ? 0
                 : folo_fail(err, "--json %s: write failed: %s", o->json_path, strerror(errno));
    json_decref(root);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------ */

/* Runs the text's chunks through every side, `batch` chunks a forward, and
 * scores them into stats, with the running PPL after each chunk in
 * chunk_ppl [n_chunks] and on stderr. */
static int score_text(ppl_side *sides, int n_sides, chunk_batch *cb, int n_chunks, int batch,
                      folo_ppl *stats, double *chunk_ppl, folo_error *err) {
    size_t V = (size_t)sides[0].model->config.vocab_size;
    const int32_t *ids = sides[0].ids;
    for (int first_chunk = 0; first_chunk < n_chunks; first_chunk += batch) {
        int n_seqs = n_chunks - first_chunk < batch ? n_chunks - first_chunk : batch;
        const folo_batch *fb = chunk_batch_at(cb, ids + (size_t)first_chunk * cb->ctx, n_seqs);
        for (int i = 0; i < n_sides; i++)
            if (folo_backend_forward(sides[i].backend, fb, sides[i].logits, err) != 0)
                return folo_fail_prefix(err, "%s %s", sides[i].flag, sides[i].dir);
        for (int s = 0; s < n_seqs; s++) {
            int chunk = first_chunk + s;
            size_t row = (size_t)s * cb->n_scored;
            const int32_t *targets = ids + (size_t)chunk * cb->ctx + cb->first + 1;
            if (folo_ppl_add_rows(stats, sides[0].logits + row * V,
                                  n_sides > 1 ? sides[1].logits + row * V : NULL, targets,
                                  cb->n_scored, err) != 0)
                return -1;
            folo_ppl_summary running;
            folo_ppl_summarize(stats, false, &running);
            chunk_ppl[chunk] = running.ppl;
            print_progress(chunk + 1, n_chunks, &running, n_sides > 1);
        }
    }
    return 0;
}

/* Everything after parsing. Returns the exit code: 0, 1 (a failure while
 * running) or 2 (bad input), with the message in err (empty when it was
 * printed already). */
static int run(const ppl_options *o, folo_error *err) {
    size_t len = 0;
    char *text = folo_file_read(o->file, &len, err);
    if (!text) return folo_fail_prefix(err, "--file"), 2;
    if (len > 0 && text[len - 1] == '\n') len--; /* as llama-perplexity reads a file */
    if (len == 0) {
        free(text);
        return folo_fail(err, "--file %s is empty", o->file), 2;
    }

    /* Opened before the long run, so a bad path fails at once. */
    FILE *json = NULL;
    if (o->json_path && !(json = fopen(o->json_path, "w"))) {
        free(text);
        return folo_fail(err, "--json %s: %s", o->json_path, strerror(errno)), 2;
    }
    ppl_side sides[2] = {{.flag = "-m"}, {.flag = "--kl-base"}};
    int n_sides = o->kl_base ? 2 : 1;
    sides[0].dir = cli_model_dir(k_cmd, o->model);
    if (!sides[0].dir) {
        if (json) fclose(json);
        free(text);
        return 1;
    }
    if (o->kl_base) sides[1].dir = folo_strdup(o->kl_base);
    int code = 1;
    chunk_batch cb = {0};
    folo_ppl stats = {0};
    folo_pool *pool = NULL;
    double *chunk_ppl = NULL;
    for (int i = 0; i < n_sides; i++)
        if ((code = side_tokenize(&sides[i], o->file, text, len, err)) != 0) goto done;
    code = 1;
    if (n_sides > 1 && check_same_tokens(&sides[0], &sides[1], err) != 0) goto done;
    for (int i = 0; i < n_sides; i++)
        if ((code = side_load_model(&sides[i], o->ctx, err)) != 0) goto done;
    code = 1;
    if (n_sides > 1 && check_same_vocabulary(&sides[0], &sides[1], err) != 0) goto done;
    int n_ids = sides[0].n_ids;
    if (n_ids < o->ctx) {
        code = 2;
        folo_fail(err, "--file %s has %d tokens; one chunk of --ctx %d needs at least %d",
                  o->file, n_ids, o->ctx, o->ctx);
        goto done;
    }

    int n_chunks = n_ids / o->ctx;
    if (o->max_chunks > 0 && o->max_chunks < n_chunks) n_chunks = o->max_chunks;
    int batch = o->batch > 0 ? o->batch : DEFAULT_BATCH_TOKENS / o->ctx;
    if (batch < 1) batch = 1;
    if (batch > n_chunks) batch = n_chunks;

    chunk_batch_init(&cb, batch, o->ctx, FOLO_DEFAULT_BLOCK_SIZE);
    size_t V = (size_t)sides[0].model->config.vocab_size;
    size_t logit_bytes = (size_t)batch * cb.n_scored * V * sizeof(float);
    for (int i = 0; i < n_sides; i++) {
        sides[i].backend =
            cli_backend_create(sides[i].model, o->device, i == 0 ? o->dtype : FOLO_COMPUTE_AUTO,
                               o->n_threads, batch, o->ctx, batch * o->ctx, false, err);
        if (!sides[i].backend) {
            folo_fail_prefix(err, "%s %s", sides[i].flag, sides[i].dir);
            goto done;
        }
        sides[i].logits = folo_alloc_large(logit_bytes);
        if (!sides[i].logits) {
            folo_fail(err, "cannot allocate %zu bytes of logits (lower --batch)", logit_bytes);
            goto done;
        }
    }
    pool = folo_pool_create(o->n_threads);
    if (folo_ppl_init(&stats, n_chunks * cb.n_scored, (int)V, n_sides > 1, pool, err) != 0)
        goto done;
    chunk_ppl = folo_calloc((size_t)n_chunks, sizeof(double));

    fprintf(stderr,
            "perplexity: %d tokens, %d chunk(s) of %d; the predictions at positions %d..%d of "
            "each are scored (%d a chunk); %d chunk(s) a forward on %s%s\n",
            n_ids, n_chunks, o->ctx, cb.first, o->ctx - 2, cb.n_scored, batch,
            sides[0].backend->name, n_sides > 1 ? ", with the base" : "");
    double start_s = folo_now_s();
    if (score_text(sides, n_sides, &cb, n_chunks, batch, &stats, chunk_ppl, err) != 0)
        goto done;
    double seconds = folo_now_s() - start_s;
    fprintf(stderr, "perplexity: %d tokens in %.2f s (%.1f tokens/s%s)\n", n_chunks * o->ctx,
            seconds, n_chunks * o->ctx / seconds, n_sides > 1 ? " through both models" : "");

    folo_ppl_summary summary;
    folo_ppl_summarize(&stats, true, &summary);
    print_summary(&summary, n_sides > 1);
    if (json) {
        ppl_run r = {.model_dir = sides[0].dir, .base_dir = n_sides > 1 ? sides[1].dir : NULL,
                     .device = sides[0].backend->name, .n_text_tokens = n_ids,
                     .n_chunks = n_chunks, .batch = batch, .seconds = seconds,
                     .chunk_ppl = chunk_ppl};
        if (write_json(json, o, &r, &cb, &summary, err) != 0) goto done;
    }
    code = 0;
done:
    if (json && fclose(json) != 0 && code == 0) {
        code = 1;
        folo_fail(err, "--json %s: %s", o->json_path, strerror(errno));
    }
    if (json && code != 0) remove(o->json_path); /* no half-written figures */
    free(chunk_ppl);
    folo_ppl_free(&stats);
    folo_pool_destroy(pool);
    chunk_batch_free(&cb);
    for (int i = 0; i < n_sides; i++) side_free(&sides[i]);
    free(text);
    return code;
}

int folo_cmd_perplexity(int argc, char **argv) {
    ppl_options o = {.device = "auto", .ctx = 512};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc < 0 ? 0 : rc;
    folo_error err = {{0}};
    rc = run(&o, &err);
    if (rc != 0 && err.message[0]) fprintf(stderr, "folo %s: %s\n", k_cmd, err.message);
    return rc;
}
