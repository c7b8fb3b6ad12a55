/* Sampling: turns one row of logits into a token id, with vLLM's meanings.
 *
 * Order, as vLLM applies it: repetition penalty (over prompt and output
 * tokens: positive logits divided, negative multiplied), frequency and
 * presence penalties (over output tokens: logit -= frequency*count +
 * presence*[count > 0]), temperature (0 = greedy: the argmax, lowest id on
 * ties), min-p, top-k, top-p, then a draw from a per-sequence RNG seeded by
 * `seed` (same seed, same logits -> same token). Logprobs are those of the
 * raw model distribution (log_softmax of the unprocessed logits), as vLLM
 * returns by default.
 *
 * Who calls it: the engine's output processor, once per sequence per step,
 * with that sequence's row of logits. A sampler belongs to one sequence and
 * is not shared between threads. It owns per-sequence state only (RNG, the
 * set of seen tokens with output counts, and scratch sized to the vocabulary
 * for random sampling), so a call never allocates. */
#ifndef FOLO_SAMPLE_SAMPLER_H
#define FOLO_SAMPLE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

#define FOLO_MAX_TOP_LOGPROBS 20
/* Temperatures below this are greedy (vLLM's _SAMPLING_EPS). */
#define FOLO_SAMPLING_EPS 1e-5f

typedef struct folo_sampling_params {
    float temperature;         /* 0: greedy */
    int top_k;                 /* 0 or -1: off; keeps exactly k (ties: lower id) */
    float top_p;               /* (0, 1], 1: off */
    float min_p;               /* [0, 1], 0: off */
    float repetition_penalty;  /* > 0, 1: off */
    float presence_penalty;    /* [-2, 2] */
    float frequency_penalty;   /* [-2, 2] */
    uint64_t seed;
    bool has_seed;             /* false: seeded from the clock */
    int logprobs;              /* < 0: none; 0: chosen token only; n: plus top n (<= 20) */
} folo_sampling_params;

/* Neutral params: greedy, no penalties, no logprobs. */
folo_sampling_params folo_sampling_default(void);
/* Checks ranges; the error names the parameter. */
int folo_sampling_validate(const folo_sampling_params *p, folo_error *err);

typedef struct folo_logprob {
    int32_t token;
    float logprob;
} folo_logprob;

typedef struct folo_sample_result {
    int32_t token;
    float logprob;                              /* of token, when logprobs >= 0 */
    int32_t rank;                               /* of token, when logprobs >= 0: the tokens at
                                                   least as likely as it (1 = the most) */
    int n_top;                                  /* entries in top */
    folo_logprob top[FOLO_MAX_TOP_LOGPROBS];    /* highest first */
} folo_sample_result;

/* Per-sequence sampling state: RNG and token counts for the penalties. */
typedef struct folo_sampler folo_sampler;

/* p must have passed folo_sampling_validate. Random samplers preallocate
 * 8 * vocab_size bytes of scratch; NULL when that allocation fails. */
folo_sampler *folo_sampler_create(const folo_sampling_params *p, int vocab_size);
void folo_sampler_free(folo_sampler *s);
/* Records prompt tokens (repetition penalty) and output tokens (all penalties). */
void folo_sampler_add_prompt(folo_sampler *s, const int32_t *ids, int n);
void folo_sampler_add_output(folo_sampler *s, int32_t id);
/* Samples from logits [vocab_size]. The penalties are applied in place and
 * undone before returning, so logits read the same afterwards. Greedy calls
 * leave the RNG untouched; random calls draw one number from it. */
void folo_sampler_sample(folo_sampler *s, float *logits, folo_sample_result *out);
/* Whether sample needs the row's logits: false for greedy sampling without
 * penalties or logprobs, whose token is the row's argmax alone, which a
 * GPU backend computes on the device (folo_batch.argmax_only). */
bool folo_sampler_needs_logits(const folo_sampler *s);
/* For a sampler that needs no logits: the result sample would give, from
 * the row's argmax (lowest id among the largest logits). */
void folo_sampler_sample_argmax(folo_sampler *s, int32_t argmax, folo_sample_result *out);
/* The logprobs of token under log_softmax(logits [vocab_size]): its
 * logprob and rank, and the n_top (<= FOLO_MAX_TOP_LOGPROBS) most likely
 * tokens, highest first (ties: lower id). How the sampler reports them, and
 * how the engine scores prompt tokens. */
void folo_logprobs_fill(const float *logits, int vocab_size, int32_t token, int n_top,
                        folo_sample_result *out);
/* The lowest id holding the largest of logits [n] (0 when all are NaN): the
 * greedy pick. */
int32_t folo_argmax(const float *logits, int n);
/* The final distribution a sample call would draw from, written to
 * probs [vocab_size] (zeros for dropped tokens; one-hot for greedy), without
 * drawing. For tests and inspection; logits are restored as in sample. */
void folo_sampler_probs(folo_sampler *s, float *logits, float *probs);

#endif
