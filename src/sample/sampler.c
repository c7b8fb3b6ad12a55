/* Sampler: one row of logits in, one token (and optional logprobs) out.
 *
 * What it owns: per-sequence state, namely an xoshiro256** RNG, the set of
 * tokens seen so far (prompt and output) with how often each appeared in the
 * output, and candidate scratch of vocab_size entries for random sampling.
 * All of it is allocated at create or in add_prompt/add_output, never in a
 * sample call.
 *
 * How a random call runs (V = vocab size, n = survivors):
 *   1. Penalties touch only the seen tokens (O(seen)), in place; their raw
 *      logits are saved and put back at the end.
 *   2. Temperature, min-p and top-k all keep an upper set of the order
 *      "higher logit, then lower id", so they commute with each other; only
 *      top-p must come last because it looks at the renormalised survivors.
 *      With top-k on, one pass over V keeps the best k in a heap of k
 *      (O(V log k)), and exp runs on those k only. Otherwise one vectorized
 *      pass computes q = exp((logit - max) / T) for every token.
 *   3. Min-p keeps q >= min_p (q is already the probability relative to the
 *      most likely token), compacting the survivors without branches.
 *   4. Top-p first drops every q below a bound that no nucleus member can be
 *      under (see build_candidates), then finds the nucleus with a weighted
 *      quickselect: partition around a pivot, and recurse into the better
 *      side or take it whole, by comparing its mass with the mass still
 *      needed. Expected O(n); the vocabulary is never sorted.
 *   5. One uniform draw against the unnormalised survivors. Plain
 *      temperature sampling skips the compaction and draws from all V.
 * Measured at V = 151936 on one Xeon core (-O2, SSE2 code): greedy ~30 us,
 * top-k 20 + top-p ~0.1 ms, plain temperature ~0.3 ms; logprobs add ~0.4 ms
 * (an exp over the raw row).
 * Greedy (temperature < FOLO_SAMPLING_EPS) is an argmax after penalties;
 * min-p, top-k and top-p never remove the argmax, so they are skipped.
 *
 * Invariants: seen_ids holds distinct ids in [0, vocab_size); slots maps each
 * to its index and is at most half full; out_counts[i] > 0 exactly for ids
 * that appeared in the output. The order among tied tokens is always by id,
 * so results do not depend on scan order. */
#include "sample/sampler.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"

struct folo_sampler {
    folo_sampling_params params;
    int vocab_size;
    uint64_t rng[4];        /* xoshiro256** state */

    /* Tokens seen in the prompt or output, each once, in first-seen order. */
    int32_t *seen_ids;      /* [cap_seen], n_seen used */
    int32_t *out_counts;    /* [cap_seen] occurrences in the output */
    float *saved_logits;    /* [cap_seen] raw logits while penalties are applied */
    int n_seen, cap_seen;
    int32_t *slots;         /* [n_slots] index into seen_ids, -1 empty */
    int n_slots;            /* power of two, >= 2 * n_seen */

    /* Random sampling only (NULL for greedy samplers). */
    int32_t *cand_ids;      /* [vocab_size] surviving token ids */
    float *cand_vals;       /* [vocab_size] logit while selecting top-k, then q */
};

/* ---- parameters ------------------------------------------------------------ */

folo_sampling_params folo_sampling_default(void) {
    folo_sampling_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repetition_penalty = 1.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.has_seed = false;
    p.logprobs = -1;
    return p;
}

int folo_sampling_validate(const folo_sampling_params *p, folo_error *err) {
    /* Written as !(in range) so that NaN fails every check. */
    if (!(p->temperature >= 0.0f && isfinite(p->temperature)))
        return folo_fail(err, "temperature must be >= 0 and finite (got %g)", (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return folo_fail(err, "top_p must be in (0, 1] (got %g)", (double)p->top_p);
    if (p->top_k < -1)
        return folo_fail(err, "top_k must be -1 (off), 0 (off) or positive (got %d)", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return folo_fail(err, "min_p must be in [0, 1] (got %g)", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f && isfinite(p->repetition_penalty)))
        return folo_fail(err, "repetition_penalty must be > 0 and finite (got %g)",
                         (double)p->repetition_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return folo_fail(err, "presence_penalty must be in [-2, 2] (got %g)", (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return folo_fail(err, "frequency_penalty must be in [-2, 2] (got %g)", (double)p->frequency_penalty);
    if (p->logprobs > FOLO_MAX_TOP_LOGPROBS)
        return folo_fail(err, "logprobs must be at most %d (got %d)", FOLO_MAX_TOP_LOGPROBS, p->logprobs);
    return 0;
}

static bool is_greedy(const folo_sampling_params *p) { return p->temperature < FOLO_SAMPLING_EPS; }

/* ---- RNG: xoshiro256**, seeded through splitmix64 --------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t st[4]) {
    uint64_t result = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t st[4]) { return (double)(rng_next(st) >> 11) * 0x1.0p-53; }

/* Unseeded samplers differ by wall-clock time and by a process-wide counter,
 * so two created in the same nanosecond still get different streams. */
static uint64_t unseeded_seed(void) {
    static atomic_uint_fast64_t counter;
    uint64_t n = (uint64_t)atomic_fetch_add(&counter, 1);
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    return splitmix64(&x) ^ (n * 0xd1b54a32d192ed03ull);
}

/* ---- seen tokens: ids with output counts, and a map id -> index ------------- */

static uint32_t slot_hash(int32_t id) { return (uint32_t)id * 2654435761u; }

static int seen_find(const folo_sampler *s, int32_t id) {
    if (s->n_slots == 0) return -1;
    uint32_t mask = (uint32_t)s->n_slots - 1;
    for (uint32_t h = slot_hash(id) & mask;; h = (h + 1) & mask) {
        int32_t idx = s->slots[h];
        if (idx < 0) return -1;
        if (s->seen_ids[idx] == id) return idx;
    }
}

static void slots_insert(folo_sampler *s, int32_t idx) {
    uint32_t mask = (uint32_t)s->n_slots - 1;
    uint32_t h = slot_hash(s->seen_ids[idx]) & mask;
    while (s->slots[h] >= 0) h = (h + 1) & mask;
    s->slots[h] = idx;
}

static int seen_add(folo_sampler *s, int32_t id) {
    FOLO_ASSERT(id >= 0 && id < s->vocab_size);
    int idx = seen_find(s, id);
    if (idx >= 0) return idx;
    if (s->n_seen == s->cap_seen) {
        int cap = s->cap_seen ? s->cap_seen * 2 : 64;
        s->seen_ids = folo_realloc(s->seen_ids, (size_t)cap * sizeof *s->seen_ids);
        s->out_counts = folo_realloc(s->out_counts, (size_t)cap * sizeof *s->out_counts);
        s->saved_logits = folo_realloc(s->saved_logits, (size_t)cap * sizeof *s->saved_logits);
        s->cap_seen = cap;
    }
    if (2 * (s->n_seen + 1) > s->n_slots) {
        s->n_slots = s->n_slots ? s->n_slots * 2 : 128;
        s->slots = folo_realloc(s->slots, (size_t)s->n_slots * sizeof *s->slots);
        memset(s->slots, 0xff, (size_t)s->n_slots * sizeof *s->slots);
        for (int i = 0; i < s->n_seen; i++) slots_insert(s, i);
    }
    idx = s->n_seen++;
    s->seen_ids[idx] = id;
    s->out_counts[idx] = 0;
    slots_insert(s, idx);
    return idx;
}

/* ---- lifecycle ----------------------------------------------------------------- */

folo_sampler *folo_sampler_create(const folo_sampling_params *p, int vocab_size) {
    FOLO_ASSERT(vocab_size > 0);
    folo_sampler *s = folo_calloc(1, sizeof *s);
    s->params = *p;
    s->vocab_size = vocab_size;
    uint64_t x = p->has_seed ? p->seed : unseeded_seed();
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    if (!is_greedy(p)) {
        s->cand_ids = folo_alloc_large((size_t)vocab_size * sizeof *s->cand_ids);
        s->cand_vals = folo_alloc_large((size_t)vocab_size * sizeof *s->cand_vals);
        if (!s->cand_ids || !s->cand_vals) {
            folo_sampler_free(s);
            return NULL;
        }
    }
    return s;
}

void folo_sampler_free(folo_sampler *s) {
    if (!s) return;
    free(s->seen_ids);
    free(s->out_counts);
    free(s->saved_logits);
    free(s->slots);
    folo_free_large(s->cand_ids);
    folo_free_large(s->cand_vals);
    free(s);
}

void folo_sampler_add_prompt(folo_sampler *s, const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) seen_add(s, ids[i]);
}

void folo_sampler_add_output(folo_sampler *s, int32_t id) {
    int idx = seen_add(s, id); /* may grow out_counts: index it afterwards */
    s->out_counts[idx]++;
}

/* ---- penalties ----------------------------------------------------------------- */

static bool has_penalties(const folo_sampling_params *p) {
    return p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}

/* Repetition over prompt and output tokens, then frequency and presence over
 * output tokens; the raw values are kept in saved_logits. */
static void apply_penalties(folo_sampler *s, float *logits) {
    const folo_sampling_params *p = &s->params;
    float rep = p->repetition_penalty;
    for (int i = 0; i < s->n_seen; i++) {
        int32_t id = s->seen_ids[i];
        float l = logits[id];
        s->saved_logits[i] = l;
        if (rep != 1.0f) l = l > 0.0f ? l / rep : l * rep;
        int32_t count = s->out_counts[i];
        if (count > 0) l -= p->frequency_penalty * (float)count + p->presence_penalty;
        logits[id] = l;
    }
}

static void restore_logits(const folo_sampler *s, float *logits) {
    for (int i = 0; i < s->n_seen; i++) logits[s->seen_ids[i]] = s->saved_logits[i];
}

/* ---- selection helpers ------------------------------------------------------- */

/* The one order among tokens: higher value first, ties by lower id. */
static bool ranks_above(float va, int32_t ia, float vb, int32_t ib) {
    return va > vb || (va == vb && ia < ib);
}

static void swap_pair(int32_t *ids, float *vals, int a, int b) {
    int32_t ti = ids[a];
    ids[a] = ids[b];
    ids[b] = ti;
    float tv = vals[a];
    vals[a] = vals[b];
    vals[b] = tv;
}

/* A heap whose root is the lowest-ranked entry (the one to evict). */
static void heap_sift_up(int32_t *ids, float *vals, int i) {
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!ranks_above(vals[parent], ids[parent], vals[i], ids[i])) break;
        swap_pair(ids, vals, i, parent);
        i = parent;
    }
}

static void heap_sift_down(int32_t *ids, float *vals, int n, int i) {
    for (;;) {
        int worst = i, left = 2 * i + 1, right = left + 1;
        if (left < n && ranks_above(vals[worst], ids[worst], vals[left], ids[left])) worst = left;
        if (right < n && ranks_above(vals[worst], ids[worst], vals[right], ids[right])) worst = right;
        if (worst == i) return;
        swap_pair(ids, vals, i, worst);
        i = worst;
    }
}

/* The best k of logits [n_vocab] (NaN skipped) into ids/vals [k], unordered;
 * returns how many were kept (< k only when fewer than k are not NaN). One
 * pass in id order: a later token with an equal logit ranks lower, so only a
 * strictly larger logit displaces the root. */
static int select_top_k(const float *logits, int n_vocab, int k, int32_t *ids, float *vals) {
    int n = 0;
    for (int id = 0; id < n_vocab; id++) {
        float l = logits[id];
        if (n < k) {
            if (isnan(l)) continue;
            ids[n] = id;
            vals[n] = l;
            heap_sift_up(ids, vals, n);
            n++;
        } else if (l > vals[0]) {
            ids[0] = id;
            vals[0] = l;
            heap_sift_down(ids, vals, n, 0);
        }
    }
    return n;
}

static void sort_desc(int32_t *ids, float *vals, int n) {
    for (int i = 1; i < n; i++) {
        int32_t id = ids[i];
        float v = vals[i];
        int j = i;
        while (j > 0 && ranks_above(v, id, vals[j - 1], ids[j - 1])) {
            ids[j] = ids[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        ids[j] = id;
        vals[j] = v;
    }
}

/* Index in [lo, hi) of the median of the first, middle and last entries. */
static int median_of_three(const int32_t *ids, const float *vals, int lo, int hi) {
    int a = lo, b = lo + (hi - lo) / 2, c = hi - 1;
    if (ranks_above(vals[a], ids[a], vals[b], ids[b])) { int t = a; a = b; b = t; }
    if (ranks_above(vals[b], ids[b], vals[c], ids[c])) b = c;
    if (ranks_above(vals[a], ids[a], vals[b], ids[b])) b = a;
    return b;
}

/* Top-p: reorders (ids, probs) [n] so that [0, m) is the nucleus, the
 * smallest best-ranked set whose mass reaches `target`; returns m (>= 1 for
 * n >= 1). Weighted quickselect: every entry left of lo is already in the
 * nucleus, [lo, hi) is undecided, and target is the mass still missing. */
static int select_nucleus(int32_t *ids, float *probs, int n, double target) {
    int lo = 0, hi = n;
    while (hi - lo > 16) {
        swap_pair(ids, probs, median_of_three(ids, probs, lo, hi), hi - 1);
        float pv = probs[hi - 1];
        int32_t pid = ids[hi - 1];
        int store = lo;
        double better_mass = 0.0;
        for (int i = lo; i < hi - 1; i++) {
            if (ranks_above(probs[i], ids[i], pv, pid)) {
                better_mass += probs[i];
                swap_pair(ids, probs, i, store++);
            }
        }
        swap_pair(ids, probs, store, hi - 1);
        if (better_mass >= target) {
            hi = store;
        } else {
            target -= better_mass;
            if ((double)pv >= target) return store + 1;
            target -= pv;
            lo = store + 1;
        }
    }
    sort_desc(ids + lo, probs + lo, hi - lo);
    for (int i = lo; i < hi; i++) {
        target -= probs[i];
        if (target <= 0.0) return i + 1;
    }
    return hi; /* rounding left the target unreached: keep the whole range */
}

/* ---- vocabulary-wide passes ----------------------------------------------------- */

/* Largest value (NaN ignored; -inf when there is none). Eight independent
 * maxima so the loop is not one long dependency chain. */
static float max_value(const float *x, int n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    }
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    for (int j = 1; j < 8; j++) m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

int32_t folo_argmax(const float *logits, int n) {
    float m = max_value(logits, n);
    for (int id = 0; id < n; id++) {
        if (logits[id] == m) return id;
    }
    return 0;
}

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(x) for x <= 0, within 1e-7 relative, written without branches or
 * float comparisons so that loops over it vectorize at -O2 (a float compare
 * may trap, which keeps GCC from if-converting it). x = k ln2 + r with
 * |r| <= ln2/2; e^r by its Taylor series to r^7 (truncation under 1e-8);
 * 2^k through the exponent bits. |x| >= 87, -inf and NaN give 0, which drops
 * the token: its probability is under 1e-37 of the most likely one. */
static inline float exp_nonpos(float x) {
    uint32_t bits = float_bits(x);
    uint32_t in_range = 0u - (uint32_t)((bits & 0x7fffffffu) < 0x42ae0000u); /* |x| < 87 */
    float xc = bits_float((bits & in_range) | (float_bits(-87.0f) & ~in_range));
    int32_t k = (int32_t)(xc * 1.44269504f - 0.5f);
    float r = xc - (float)k * 0.693145752f - (float)k * 1.42860677e-6f; /* ln2 in two parts */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    float two_k = bits_float((uint32_t)(k + 127) << 23);
    return bits_float(float_bits(p * two_k) & in_range);
}

/* out[i] = exp((x[i] - shift) * scale) for n entries; blocks of 8 so the
 * compiler vectorizes the body (x and out must not overlap). */
static void exp_shifted(const float *restrict x, float shift, float scale, float *restrict out, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) out[i + j] = exp_nonpos((x[i + j] - shift) * scale);
    }
    for (; i < n; i++) out[i] = exp_nonpos((x[i] - shift) * scale);
}

/* Sum in double; eight running sums so the additions do not form one long
 * dependency chain (and vectorize). */
static double sum_values(const float *x, int n) {
    double sums[8] = {0.0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) sums[j] += x[i + j];
    }
    for (; i < n; i++) sums[0] += x[i];
    double sum = 0.0;
    for (int j = 0; j < 8; j++) sum += sums[j];
    return sum;
}

/* Keeps the entries with vals >= threshold, in order, without branches,
 * writing their ids to dst_ids (src_ids NULL: the ids are the positions);
 * returns how many. */
static int compact(const int32_t *src_ids, int32_t *dst_ids, float *vals, int n, float threshold) {
    int kept = 0;
    if (src_ids) {
        for (int i = 0; i < n; i++) {
            float v = vals[i];
            dst_ids[kept] = src_ids[i];
            vals[kept] = v;
            kept += v >= threshold;
        }
    } else {
        for (int i = 0; i < n; i++) {
            float v = vals[i];
            dst_ids[kept] = i;
            vals[kept] = v;
            kept += v >= threshold;
        }
    }
    return kept;
}

/* ---- the processed distribution -------------------------------------------- */

/* What the processors leave: n unnormalised probabilities q (relative to the
 * most likely token) in cand_vals, their ids in cand_ids, or, when ids is
 * NULL, the ids are the positions (nothing was filtered; zeros included). */
typedef struct candidates {
    const int32_t *ids;  /* [n], or NULL */
    const float *q;      /* [n] */
    int n;               /* 0: no finite logit (the caller takes the argmax) */
    double total;        /* sum of q */
} candidates;

static int32_t candidate_id(const candidates *c, int i) { return c->ids ? c->ids[i] : i; }

/* Temperature, min-p, top-k and top-p on penalised logits. */
static candidates build_candidates(folo_sampler *s, const float *logits) {
    const folo_sampling_params *p = &s->params;
    int32_t *ids = s->cand_ids;
    float *vals = s->cand_vals;
    float inv_t = 1.0f / p->temperature;
    const int32_t *kept_ids;
    int n;
    if (p->top_k > 0 && p->top_k < s->vocab_size) {
        n = select_top_k(logits, s->vocab_size, p->top_k, ids, vals);
        float max_l = max_value(vals, n);
        for (int i = 0; i < n; i++) vals[i] = exp_nonpos((vals[i] - max_l) * inv_t);
        /* Min-p keeps q >= min_p; q == 0 (underflow) goes in the same pass. */
        n = compact(ids, ids, vals, n, p->min_p > 0.0f ? p->min_p : FLT_MIN);
        kept_ids = ids;
    } else {
        n = s->vocab_size;
        exp_shifted(logits, max_value(logits, n), inv_t, vals, n);
        kept_ids = NULL;
        if (p->min_p > 0.0f) {
            n = compact(NULL, ids, vals, n, p->min_p);
            kept_ids = ids;
        }
    }
    double sum = sum_values(vals, n);
    if (p->top_p < 1.0f && n > 1) {
        double target = (double)p->top_p * sum;
        /* Every token outside the nucleus has q below t = (1 - top_p) sum / n:
         * were the nucleus's last token below t, so would all after it be,
         * and their mass would be under (1 - top_p) sum, so the nucleus would
         * not need that token. Dropping q < t (with a margin for rounding)
         * leaves a small set on peaked distributions. */
        float t = (float)(0.999 * (1.0 - (double)p->top_p) * sum / n);
        n = compact(kept_ids, ids, vals, n, t > FLT_MIN ? t : FLT_MIN);
        kept_ids = ids;
        n = select_nucleus(ids, vals, n, target);
        sum = sum_values(vals, n);
    }
    candidates c = {.ids = kept_ids, .q = vals, .n = sum > 0.0 ? n : 0, .total = sum};
    return c;
}

/* One uniform draw against the candidates' mass. The walk skips whole
 * blocks of 8 by their sum and looks inside only the block that holds the
 * draw; a token with q == 0 can never be where the running sum passes u. */
static int32_t draw(folo_sampler *s, const candidates *c) {
    const float *q = c->q;
    double u = rng_uniform(s->rng) * c->total, acc = 0.0;
    int i = 0;
    for (; i + 8 <= c->n; i += 8) {
        float block = ((q[i] + q[i + 1]) + (q[i + 2] + q[i + 3])) + ((q[i + 4] + q[i + 5]) + (q[i + 6] + q[i + 7]));
        if (u < acc + block) break;
        acc += block;
    }
    for (; i < c->n; i++) {
        acc += q[i];
        if (u < acc) return candidate_id(c, i);
    }
    /* Rounding left u at or past the end: the last token that has mass. */
    for (i = c->n - 1; i > 0 && !(q[i] > 0.0f); i--) {}
    return candidate_id(c, i);
}

/* ---- logprobs of the raw distribution -------------------------------------- */

void folo_logprobs_fill(const float *logits, int vocab_size, int32_t token, int n_top,
                        folo_sample_result *out) {
    float max_l = max_value(logits, vocab_size);
    /* exp of blocks of 8 logits, each block added to 8 running sums; the
     * same pass counts the tokens at least as likely as `token`. */
    float own = logits[token];
    double sums[8] = {0.0};
    int ge[8] = {0};
    int id = 0;
    for (; id + 8 <= vocab_size; id += 8) {
        float e[8];
        exp_shifted(logits + id, max_l, 1.0f, e, 8);
        for (int j = 0; j < 8; j++) {
            sums[j] += e[j];
            ge[j] += logits[id + j] >= own;
        }
    }
    for (; id < vocab_size; id++) {
        sums[0] += exp_nonpos(logits[id] - max_l);
        ge[0] += logits[id] >= own;
    }
    double sum = 0.0;
    int rank = 0;
    for (int j = 0; j < 8; j++) {
        sum += sums[j];
        rank += ge[j];
    }
    float log_sum = (float)log(sum);
    out->token = token;
    out->logprob = (own - max_l) - log_sum;
    out->rank = rank;
    out->n_top = 0;
    if (n_top <= 0) return;
    int32_t ids[FOLO_MAX_TOP_LOGPROBS];
    float vals[FOLO_MAX_TOP_LOGPROBS];
    n_top = select_top_k(logits, vocab_size, n_top, ids, vals);
    sort_desc(ids, vals, n_top);
    for (int i = 0; i < n_top; i++) {
        out->top[i].token = ids[i];
        out->top[i].logprob = (vals[i] - max_l) - log_sum;
    }
    out->n_top = n_top;
}

/* ---- public calls ----------------------------------------------------------------- */

void folo_sampler_sample(folo_sampler *s, float *logits, folo_sample_result *out) {
    memset(out, 0, sizeof *out);
    bool penalised = has_penalties(&s->params) && s->n_seen > 0;
    if (penalised) apply_penalties(s, logits);
    int32_t token;
    if (is_greedy(&s->params)) {
        token = folo_argmax(logits, s->vocab_size);
    } else {
        candidates c = build_candidates(s, logits);
        token = c.n > 0 ? draw(s, &c) : folo_argmax(logits, s->vocab_size);
    }
    if (penalised) restore_logits(s, logits);
    out->token = token;
    if (s->params.logprobs >= 0)
        folo_logprobs_fill(logits, s->vocab_size, token, s->params.logprobs, out);
}

bool folo_sampler_needs_logits(const folo_sampler *s) {
    return !is_greedy(&s->params) || has_penalties(&s->params) || s->params.logprobs >= 0;
}

void folo_sampler_sample_argmax(folo_sampler *s, int32_t argmax, folo_sample_result *out) {
    FOLO_ASSERT(!folo_sampler_needs_logits(s));
    memset(out, 0, sizeof *out);
    out->token = argmax;
}

void folo_sampler_probs(folo_sampler *s, float *logits, float *probs) {
    memset(probs, 0, (size_t)s->vocab_size * sizeof *probs);
    bool penalised = has_penalties(&s->params) && s->n_seen > 0;
    if (penalised) apply_penalties(s, logits);
    candidates c = {.n = 0};
    if (!is_greedy(&s->params)) c = build_candidates(s, logits);
    if (c.n > 0) {
        for (int i = 0; i < c.n; i++) probs[candidate_id(&c, i)] = (float)(c.q[i] / c.total);
    } else {
        probs[folo_argmax(logits, s->vocab_size)] = 1.0f;
    }
    if (penalised) restore_logits(s, logits);
}
