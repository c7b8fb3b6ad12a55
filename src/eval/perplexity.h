/* Scoring next-token predictions: perplexity, and the divergence of a model's
 * next-token distributions from a base model's, with the figures llama.cpp's
 * `llama-perplexity --kl-divergence` reports, so quantized models can be
 * compared across the two engines.
 *
 * The caller runs the forwards and hands over logit rows, each with the
 * token that actually follows (the target). Per row, in double precision
 * over the full vocabulary:
 *   nll      = -ln softmax(model)[target]
 *   nll_base = -ln softmax(base)[target]
 *   kl       = sum_i P_base(i) (ln P_base(i) - ln P_model(i))   (nats)
 *   delta_p  = P_model(target) - P_base(target)   (llama.cpp's "Δp": the
 *              probability of the text's next token, not of the argmax)
 *   same_top = the two argmaxes agree (the first maximum on ties)
 * Rows are scored on a thread pool; each row's figures are kept, and every
 * sum is taken over them in row order, so the results do not depend on the
 * thread count. Summaries follow llama.cpp's estimates: a mean's error is
 * sqrt((E[x^2] - E[x]^2) / (n - 1)), PPL = exp(mean nll) with error
 * PPL * that of the mean nll, the PPL ratio's error through the covariance
 * of the two NLLs, percentiles by numpy's linear interpolation. Unlike
 * llama.cpp, which stores the base's log-probabilities as 16-bit values and
 * skips those below e^-16, the KL here sums every term exactly.
 *
 * Used by `folo perplexity` (src/cli/cmd_perplexity.c); it never runs a
 * model nor prints. */
#ifndef FOLO_EVAL_PERPLEXITY_H
#define FOLO_EVAL_PERPLEXITY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/threadpool.h"

/* The figures of one scored position. */
typedef struct folo_ppl_position {
    double nll;       /* nats */
    double nll_base;  /* nats; 0 without a base */
    double kl;        /* nats; 0 without a base */
    double delta_p;   /* probability; 0 without a base */
    bool same_top;    /* false without a base */
} folo_ppl_position;

typedef struct folo_ppl {
    int vocab_size;
    bool has_base;
    int capacity;                 /* positions that fit */
    int n;                        /* positions scored so far */
    folo_ppl_position *positions; /* [capacity] */
    double *sorted;               /* [capacity] scratch for percentiles */
    double *exp_base;             /* [pool threads, vocab_size] exp(base logit - max) per thread */
    folo_pool *pool;              /* not owned */
    /* the rows of the current folo_ppl_add_rows call, for the workers */
    const float *job_logits, *job_base;
    const int32_t *job_targets;
    int job_rows;
} folo_ppl;

/* A summary of the positions scored so far. The base's figures are 0
 * without a base. Fractions and probabilities are in [0, 1]. */
typedef struct folo_ppl_summary {
    int n;                              /* positions */
    double nll_mean, nll_err;           /* nats */
    double ppl, ppl_err;                /* exp(nll_mean) */
    double nll_base_mean, nll_base_err; /* nats */
    double ppl_base, ppl_base_err;
    double ln_ppl_ratio, ln_ppl_ratio_err; /* nll_mean - nll_base_mean */
    double ppl_ratio, ppl_ratio_err;    /* PPL(model) / PPL(base) */
    double kl_mean, kl_err;             /* nats */
    /* Percentiles of the per-position KL: filled only when asked for. */
    double kl_median, kl_p90, kl_p95, kl_p99, kl_p999, kl_max; /* nats */
    double same_top, same_top_err;      /* fraction of positions */
    double delta_p_mean, delta_p_err;   /* probability */
    double delta_p_rms, delta_p_rms_err;
} folo_ppl_summary;

/* Room for `capacity` positions over a vocabulary of vocab_size; the pool
 * scores rows in parallel (it must outlive s). */
int folo_ppl_init(folo_ppl *s, int capacity, int vocab_size, bool has_base, folo_pool *pool,
                  folo_error *err);
void folo_ppl_free(folo_ppl *s);

/* Scores n_rows rows: logits [n_rows, vocab_size] of the model, base_logits
 * the same rows of the base (NULL exactly when there is no base), targets
 * [n_rows] the tokens that follow, each in [0, vocab_size). Fails when the
 * rows would pass capacity. */
int folo_ppl_add_rows(folo_ppl *s, const float *logits, const float *base_logits,
                      const int32_t *targets, int n_rows, folo_error *err);

/* Summarizes the positions so far; the KL percentiles (which sort) only
 * when `percentiles`. */
void folo_ppl_summarize(folo_ppl *s, bool percentiles, folo_ppl_summary *out);

#endif
