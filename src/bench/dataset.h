/* Benchmark workloads: the prompts a run sends and the output length each
 * one asks for, as vLLM's bench datasets make them (--dataset-name).
 *
 *   sharegpt  conversations in ShareGPT format (a JSON array of objects
 *             whose "conversations" array holds {"from", "value"} turns),
 *             sampled as vLLM's sample_sharegpt_requests does: entries with
 *             fewer than two turns are skipped, the rest shuffled with the
 *             seed; each pair (first turn = prompt, second turn = reference
 *             completion, whose token count is the output length unless a
 *             fixed one is given) is kept unless its prompt has fewer than
 *             4 or more than 1024 tokens, its completion fewer than 4, or
 *             both more than 2048; the first n kept pairs are the workload.
 *             The shuffle is folo's generator, not Python's, so the same
 *             seed picks other conversations than vLLM does.
 *   random    text of exactly input_len tokens per prompt: words drawn from
 *             the tokenizer's vocabulary of single tokens " <letters>",
 *             which the pre-tokenizer splits at each space and each of
 *             which encodes back to its one token, so the count is exact
 *             (and checked by encoding the prompt); lengths are fixed,
 *             uniform in [floor(len * (1 - ratio)), ceil(len * (1 + ratio))]
 *             (vLLM's --random-range-ratio; the low end at least 1), or
 *             Poisson with mean len.
 * Every random choice comes from the seed (src/bench/random.h). */
#ifndef FOLO_BENCH_DATASET_H
#define FOLO_BENCH_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

/* A ShareGPT file's conversations, parsed and checked: every entry has a
 * "conversations" array and every turn a string "value" (an error names
 * the file, the entry and the turn). Also the calibration text of `folo
 * quantize` (src/quant/calib.h). */
typedef struct folo_sharegpt {
    size_t n_conversations;
    size_t *first_turn;  /* [n_conversations + 1]: conversation i's turns are
                            texts[first_turn[i] .. first_turn[i + 1]) */
    const char **texts;  /* [first_turn[n_conversations]] each turn's "value", in the file's
                            order, owned by root */
    struct json_t *root; /* the parsed file */
} folo_sharegpt;

int folo_sharegpt_load(folo_sharegpt *s, const char *path, folo_error *err);
void folo_sharegpt_free(folo_sharegpt *s);

typedef struct folo_bench_prompt {
    char *text;        /* owned, NUL-terminated */
    int prompt_len;    /* tokens of text */
    int output_len;    /* tokens to ask for (max_tokens) */
} folo_bench_prompt;

typedef enum folo_bench_length_dist {
    FOLO_BENCH_LENGTHS_FIXED,
    FOLO_BENCH_LENGTHS_UNIFORM,  /* len * (1 +- range_ratio) */
    FOLO_BENCH_LENGTHS_POISSON,  /* mean len */
} folo_bench_length_dist;

typedef struct folo_bench_random_spec {
    int input_len;                 /* tokens */
    int output_len;                /* tokens */
    folo_bench_length_dist dist;
    double range_ratio;            /* [0, 1), uniform only */
} folo_bench_random_spec;

/* n prompts into out[0..n) (folo_bench_prompts_free); output_len > 0
 * replaces every completion's length. On error nothing is left to free. */
int folo_bench_sharegpt(const char *path, const folo_tokenizer *tok, int n, int output_len,
                        uint64_t seed, folo_bench_prompt *out, folo_error *err);
int folo_bench_random_prompts(const folo_tokenizer *tok, const folo_bench_random_spec *spec,
                              int n, uint64_t seed, folo_bench_prompt *out, folo_error *err);
void folo_bench_prompts_free(folo_bench_prompt *prompts, int n);

/* Drawn lengths are capped here, tokens. */
#define FOLO_BENCH_MAX_LEN (1 << 24)

/* The range [*lo, *hi] a uniform length around len (>= 1) is drawn from,
 * for range_ratio in [0, 1). */
void folo_bench_length_bounds(int len, double range_ratio, int *lo, int *hi);
/* The prompt and output lengths of the n prompts folo_bench_random_prompts
 * makes for spec and seed, into input_lens[0..n) and output_lens[0..n),
 * without the prompts: `folo bench throughput` draws its workload's
 * lengths here, and tests/gpu/bench_transformers.py repeats the draw. */
void folo_bench_random_lengths(const folo_bench_random_spec *spec, int n, uint64_t seed,
                               int *input_lens, int *output_lens);

#endif
