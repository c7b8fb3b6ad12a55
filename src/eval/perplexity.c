/* Perplexity and KL divergence of logit rows (see perplexity.h). */
#include "eval/perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench/stats.h"
#include "core/alloc.h"
#include "sample/sampler.h"

int folo_ppl_init(folo_ppl *s, int capacity, int vocab_size, bool has_base, folo_pool *pool,
                  folo_error *err) {
    memset(s, 0, sizeof *s);
    s->vocab_size = vocab_size;
    s->has_base = has_base;
    s->capacity = capacity;
    s->pool = pool;
    s->positions = folo_calloc((size_t)capacity, sizeof *s->positions);
    s->sorted = folo_calloc((size_t)capacity, sizeof *s->sorted);
    if (has_base) {
        size_t bytes = (size_t)folo_pool_size(pool) * (size_t)vocab_size * sizeof(double);
        s->exp_base = folo_alloc_large(bytes);
        if (!s->exp_base) {
            folo_ppl_free(s);
            return folo_fail(err, "cannot allocate %zu bytes for the base's probabilities", bytes);
        }
    }
    return 0;
}

void folo_ppl_free(folo_ppl *s) {
    free(s->positions);
    free(s->sorted);
    folo_free_large(s->exp_base);
    memset(s, 0, sizeof *s);
}

/* One row's figures; exp_base [V] is the thread's scratch. Differences of
 * log-probabilities are formed as (logit - logsumexp) of each side, so two
 * identical rows give a KL of exactly 0. */
static void score_row(int V, const float *logits, const float *base, int32_t target,
                      double *exp_base, folo_ppl_position *out) {
    int32_t top = folo_argmax(logits, V);
    double max = logits[top], z = 0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - max);
    double lse = max + log(z);
    *out = (folo_ppl_position){.nll = lse - logits[target]};
    if (!base) return;

    int32_t top_base = folo_argmax(base, V);
    double max_base = base[top_base], z_base = 0;
    for (int i = 0; i < V; i++) {
        exp_base[i] = exp((double)base[i] - max_base);
        z_base += exp_base[i];
    }
    double lse_base = max_base + log(z_base);
    double kl = 0;
    for (int i = 0; i < V; i++)
        kl += exp_base[i] * (((double)base[i] - lse_base) - ((double)logits[i] - lse));
    out->kl = kl / z_base;
    out->nll_base = lse_base - base[target];
    out->delta_p = exp(-out->nll) - exp(-out->nll_base);
    out->same_top = top == top_base;
}

static void score_worker(void *ctx, int thread, int n_threads) {
    folo_ppl *s = ctx;
    size_t begin, end;
    folo_split((size_t)s->job_rows, 1, thread, n_threads, &begin, &end);
    size_t V = (size_t)s->vocab_size;
    double *exp_base = s->exp_base ? s->exp_base + (size_t)thread * V : NULL;
    for (size_t r = begin; r < end; r++)
        score_row(s->vocab_size, s->job_logits + r * V, s->job_base ? s->job_base + r * V : NULL,
                  s->job_targets[r], exp_base, &s->positions[(size_t)s->n + r]);
}

int folo_ppl_add_rows(folo_ppl *s, const float *logits, const float *base_logits,
                      const int32_t *targets, int n_rows, folo_error *err) {
    if (s->n + n_rows > s->capacity)
        return folo_fail(err, "%d more rows would pass the %d positions reserved", n_rows,
                         s->capacity);
    if ((base_logits != NULL) != s->has_base)
        return folo_fail(err, "base logits %s, but the scorer was made %s a base",
                         base_logits ? "given" : "missing", s->has_base ? "with" : "without");
    for (int r = 0; r < n_rows; r++)
        if (targets[r] < 0 || targets[r] >= s->vocab_size)
            return folo_fail(err, "target token %d (row %d) is outside the vocabulary [0, %d)",
                             targets[r], r, s->vocab_size);
    s->job_logits = logits;
    s->job_base = base_logits;
    s->job_targets = targets;
    s->job_rows = n_rows;
    folo_pool_run(s->pool, score_worker, s);
    s->n += n_rows;
    return 0;
}

/* Sums of x, x^2 over n values, to llama.cpp's mean and its error. */
typedef struct moments {
    double mean, err;
} moments;

static moments moments_of(double sum, double sum2, int n) {
    moments m = {0, 0};
    if (n < 1) return m;
    m.mean = sum / n;
    double var = sum2 / n - m.mean * m.mean;
    m.err = var > 0 && n > 1 ? sqrt(var / (n - 1)) : 0;
    return m;
}

void folo_ppl_summarize(folo_ppl *s, bool percentiles, folo_ppl_summary *out) {
    memset(out, 0, sizeof *out);
    int n = s->n;
    out->n = n;
    if (n == 0) return;
    double nll = 0, nll2 = 0, nllb = 0, nllb2 = 0, cross = 0, kl = 0, kl2 = 0;
    double dp = 0, dp2 = 0, dp4 = 0;
    int same = 0;
    for (int i = 0; i < n; i++) {
        const folo_ppl_position *p = &s->positions[i];
        nll += p->nll, nll2 += p->nll * p->nll;
        nllb += p->nll_base, nllb2 += p->nll_base * p->nll_base;
        cross += p->nll * p->nll_base;
        kl += p->kl, kl2 += p->kl * p->kl;
        double d2 = p->delta_p * p->delta_p;
        dp += p->delta_p, dp2 += d2, dp4 += d2 * d2;
        same += p->same_top;
    }
    moments m = moments_of(nll, nll2, n);
    out->nll_mean = m.mean, out->nll_err = m.err;
    out->ppl = exp(m.mean);
    out->ppl_err = out->ppl * m.err;
    if (!s->has_base) return;

    moments b = moments_of(nllb, nllb2, n);
    out->nll_base_mean = b.mean, out->nll_base_err = b.err;
    out->ppl_base = exp(b.mean);
    out->ppl_base_err = out->ppl_base * b.err;
    double cov = n > 1 ? (cross / n - m.mean * b.mean) / (n - 1) : 0;
    double ratio_var = m.err * m.err + b.err * b.err - 2 * cov;
    out->ln_ppl_ratio = m.mean - b.mean;
    out->ln_ppl_ratio_err = ratio_var > 0 ? sqrt(ratio_var) : 0;
    out->ppl_ratio = exp(out->ln_ppl_ratio);
    out->ppl_ratio_err = out->ppl_ratio * out->ln_ppl_ratio_err;

    moments k = moments_of(kl, kl2, n);
    out->kl_mean = k.mean, out->kl_err = k.err;
    out->same_top = (double)same / n;
    out->same_top_err = n > 1 ? sqrt(out->same_top * (1 - out->same_top) / (n - 1)) : 0;
    moments d = moments_of(dp, dp2, n);
    out->delta_p_mean = d.mean, out->delta_p_err = d.err;
    moments d2 = moments_of(dp2, dp4, n);
    out->delta_p_rms = sqrt(d2.mean);
    out->delta_p_rms_err = out->delta_p_rms > 0 ? 0.5 / out->delta_p_rms * d2.err : 0;

    if (!percentiles) return;
    for (int i = 0; i < n; i++) s->sorted[i] = s->positions[i].kl;
    folo_bench_dist dist; /* p at folo_bench_percentiles: 50, 90, 95, 99, 99.9 */
    folo_bench_dist_compute(s->sorted, n, &dist); /* sorts s->sorted */
    out->kl_median = dist.median;
    out->kl_p90 = dist.p[1];
    out->kl_p95 = dist.p[2];
    out->kl_p99 = dist.p[3];
    out->kl_p999 = dist.p[4];
    out->kl_max = s->sorted[n - 1];
}
