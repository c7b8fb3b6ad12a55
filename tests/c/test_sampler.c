/* Sampler tests: each processor on hand-made logits with known answers, the
 * whole chain against a plain double-precision reference written here from
 * the definitions (full sorts, no shortcuts), draw frequencies, seeding,
 * logprobs, validation, and a Qwen3-sized vocabulary. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "sample/sampler.h"

#define QWEN3_VOCAB 151936

/* A small deterministic generator for test data (not the sampler's RNG). */
static uint64_t test_rng_state = 12345;
static double test_uniform(void) {
    test_rng_state = test_rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(test_rng_state >> 11) * 0x1.0p-53;
}

static folo_sampling_params random_params(float temperature) {
    folo_sampling_params p = folo_sampling_default();
    p.temperature = temperature;
    p.has_seed = true;
    p.seed = 42;
    return p;
}

static void probs_of(const folo_sampling_params *p, float *logits, int n, float *probs) {
    folo_sampler *s = folo_sampler_create(p, n);
    folo_sampler_probs(s, logits, probs);
    folo_sampler_free(s);
}

static int count_nonzero(const float *probs, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += probs[i] > 0.0f;
    return k;
}

static int32_t sample_once(const folo_sampling_params *p, float *logits, int n) {
    folo_sampler *s = folo_sampler_create(p, n);
    folo_sample_result r;
    folo_sampler_sample(s, logits, &r);
    folo_sampler_free(s);
    return r.token;
}

/* ---- single processors ------------------------------------------------------- */

static void test_greedy(void) {
    folo_sampling_params p = folo_sampling_default();
    float logits[6] = {1.0f, 3.0f, -2.0f, 3.0f, 2.5f, 3.0f};
    CHECK(sample_once(&p, logits, 6) == 1); /* ties: lowest id */
    p.temperature = 1e-6f; /* below FOLO_SAMPLING_EPS: still greedy */
    CHECK(sample_once(&p, logits, 6) == 1);
    float negative[4] = {-5.0f, -1.0f, -3.0f, -1.0f};
    p.temperature = 0.0f;
    CHECK(sample_once(&p, negative, 4) == 1);
    float probs[6];
    probs_of(&p, logits, 6, probs);
    CHECK(probs[1] == 1.0f && count_nonzero(probs, 6) == 1);
}

/* Which samplers a device-side argmax can serve, and that its result is
 * the one sample gives: only greedy without penalties or logprobs. */
static void test_needs_logits(void) {
    float logits[6] = {1.0f, 3.0f, -2.0f, 3.0f, 2.5f, 3.0f};
    folo_sampling_params plain = folo_sampling_default();
    folo_sampler *s = folo_sampler_create(&plain, 6);
    CHECK(!folo_sampler_needs_logits(s));
    folo_sample_result from_row, from_argmax;
    folo_sampler_sample(s, logits, &from_row);
    folo_sampler_sample_argmax(s, folo_argmax(logits, 6), &from_argmax);
    CHECK(memcmp(&from_row, &from_argmax, sizeof from_row) == 0 && from_argmax.token == 1);
    folo_sampler_free(s);

    folo_sampling_params needs[4] = {random_params(0.7f), plain, plain, plain};
    needs[1].repetition_penalty = 1.1f;
    needs[2].presence_penalty = -0.5f;
    needs[3].logprobs = 0;
    for (int i = 0; i < 4; i++) {
        s = folo_sampler_create(&needs[i], 6);
        CHECK_MSG(folo_sampler_needs_logits(s), "params %d need the row", i);
        folo_sampler_free(s);
    }
    float nan_row[3] = {NAN, NAN, NAN};
    CHECK(folo_argmax(nan_row, 3) == 0);
}

static void test_temperature(void) {
    float logits[5] = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f};
    const float temps[3] = {0.3f, 1.0f, 2.5f};
    for (int t = 0; t < 3; t++) {
        folo_sampling_params p = random_params(temps[t]);
        float probs[5];
        probs_of(&p, logits, 5, probs);
        double z = 0.0, ref[5];
        for (int i = 0; i < 5; i++) z += exp(logits[i] / temps[t]);
        for (int i = 0; i < 5; i++) ref[i] = exp(logits[i] / temps[t]) / z;
        for (int i = 0; i < 5; i++) CHECK_NEAR(probs[i], ref[i], 1e-6);
    }
}

static void test_top_k(void) {
    float logits[8] = {0.1f, 2.0f, -1.0f, 1.5f, 3.0f, 0.0f, 1.0f, 2.5f};
    folo_sampling_params p = random_params(1.0f);
    p.top_k = 3;
    float probs[8];
    probs_of(&p, logits, 8, probs);
    CHECK(count_nonzero(probs, 8) == 3);
    CHECK(probs[4] > 0 && probs[7] > 0 && probs[1] > 0);
    double z = exp(3.0) + exp(2.5) + exp(2.0);
    CHECK_NEAR(probs[4], exp(3.0) / z, 1e-6);
    CHECK_NEAR(probs[1], exp(2.0) / z, 1e-6);

    /* Exactly k even among ties; the lower ids win. */
    float flat[6] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    p.top_k = 2;
    probs_of(&p, flat, 6, probs);
    CHECK(count_nonzero(probs, 6) == 2 && probs[0] > 0 && probs[1] > 0);
    CHECK_NEAR(probs[0], 0.5, 1e-7);

    /* 0, -1 and k >= V are all "off". */
    const int off[3] = {0, -1, 8};
    for (int i = 0; i < 3; i++) {
        p.top_k = off[i];
        probs_of(&p, logits, 8, probs);
        CHECK(count_nonzero(probs, 8) == 8);
    }
}

/* logits = log of a known distribution, ids shuffled. */
static const float nucleus_probs[6] = {0.1f, 0.5f, 0.05f, 0.2f, 0.1f, 0.05f};

static void test_top_p(void) {
    float logits[6];
    for (int i = 0; i < 6; i++) logits[i] = logf(nucleus_probs[i]);
    folo_sampling_params p = random_params(1.0f);
    float probs[6];
    /* Sorted: 0.5 (id 1), 0.2 (id 3), 0.1 (id 0), 0.1 (id 4), 0.05 (id 2), 0.05 (id 5). */
    struct { float top_p; int kept; } cases[] = {
        {0.3f, 1}, {0.65f, 2}, {0.75f, 3}, {0.85f, 4}, {0.92f, 5}, {0.99f, 6}, {1.0f, 6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        p.top_p = cases[c].top_p;
        probs_of(&p, logits, 6, probs);
        CHECK_MSG(count_nonzero(probs, 6) == cases[c].kept, "top_p %g kept %d", (double)cases[c].top_p,
                  count_nonzero(probs, 6));
    }
    /* 0.75 keeps ids 1, 3 and the lower-id 0.1 (id 0), renormalised. */
    p.top_p = 0.75f;
    probs_of(&p, logits, 6, probs);
    CHECK(probs[1] > 0 && probs[3] > 0 && probs[0] > 0 && probs[4] == 0.0f);
    CHECK_NEAR(probs[1], 0.5 / 0.8, 1e-6);
    CHECK_NEAR(probs[0], 0.1 / 0.8, 1e-6);
    /* A tiny top_p still keeps one token. */
    p.top_p = 1e-6f;
    probs_of(&p, logits, 6, probs);
    CHECK(count_nonzero(probs, 6) == 1 && probs[1] == 1.0f);
}

static void test_min_p(void) {
    float logits[5] = {logf(0.06f), logf(0.5f), logf(0.04f), logf(0.3f), logf(0.1f)};
    folo_sampling_params p = random_params(1.0f);
    p.min_p = 0.15f; /* threshold 0.075: keeps 0.5, 0.3, 0.1 */
    float probs[5];
    probs_of(&p, logits, 5, probs);
    CHECK(count_nonzero(probs, 5) == 3 && probs[0] == 0.0f && probs[2] == 0.0f);
    CHECK_NEAR(probs[1], 0.5 / 0.9, 1e-6);
    CHECK_NEAR(probs[4], 0.1 / 0.9, 1e-6);
    p.min_p = 1.0f; /* only the most likely */
    probs_of(&p, logits, 5, probs);
    CHECK(count_nonzero(probs, 5) == 1 && probs[1] == 1.0f);
}

static void check_softmax_of(const float *probs, const double *expect_logits, int n) {
    double z = 0.0;
    for (int i = 0; i < n; i++) z += exp(expect_logits[i]);
    for (int i = 0; i < n; i++) CHECK_NEAR(probs[i], exp(expect_logits[i]) / z, 1e-6);
}

static void test_repetition_penalty(void) {
    float logits[6] = {2.0f, -2.0f, 1.0f, -1.0f, 0.5f, 3.0f};
    float copy[6];
    memcpy(copy, logits, sizeof logits);
    folo_sampling_params p = random_params(1.0f);
    p.repetition_penalty = 2.0f;
    folo_sampler *s = folo_sampler_create(&p, 6);
    const int32_t prompt[3] = {0, 1, 0};
    folo_sampler_add_prompt(s, prompt, 3);
    folo_sampler_add_output(s, 2);
    folo_sampler_add_output(s, 3);
    folo_sampler_add_output(s, 2);
    float probs[6];
    folo_sampler_probs(s, logits, probs);
    /* Seen: 0, 1 (prompt) and 2, 3 (output), once each whatever the count. */
    const double expect[6] = {1.0, -4.0, 0.5, -2.0, 0.5, 3.0};
    check_softmax_of(probs, expect, 6);
    CHECK(memcmp(logits, copy, sizeof logits) == 0); /* restored */
    folo_sampler_free(s);

    /* Greedy follows the penalised logits: 1 (3.0) beats 0 (4.0 / 1.5). */
    float peak[3] = {4.0f, 3.0f, 0.0f};
    p = folo_sampling_default();
    p.repetition_penalty = 1.5f;
    s = folo_sampler_create(&p, 3);
    const int32_t seen[1] = {0};
    folo_sampler_add_prompt(s, seen, 1);
    folo_sample_result r;
    folo_sampler_sample(s, peak, &r);
    CHECK(r.token == 1 && peak[0] == 4.0f);
    folo_sampler_free(s);
}

static void test_presence_frequency(void) {
    float logits[5] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    folo_sampling_params p = random_params(1.0f);
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    folo_sampler *s = folo_sampler_create(&p, 5);
    const int32_t prompt[2] = {0, 4};
    folo_sampler_add_prompt(s, prompt, 2); /* prompt tokens: not penalised here */
    folo_sampler_add_output(s, 1);
    folo_sampler_add_output(s, 1);
    folo_sampler_add_output(s, 2);
    folo_sampler_add_output(s, 4);
    folo_sampler_add_output(s, 1);
    float probs[5];
    folo_sampler_probs(s, logits, probs);
    const double expect[5] = {1.0, 1.0 - 1.5 - 0.25, 1.0 - 0.5 - 0.25, 1.0, 1.0 - 0.5 - 0.25};
    check_softmax_of(probs, expect, 5);
    folo_sampler_free(s);

    /* Negative penalties encourage repetition. */
    p.frequency_penalty = -1.0f;
    p.presence_penalty = 0.0f;
    p.temperature = 0.0f;
    s = folo_sampler_create(&p, 5);
    folo_sampler_add_output(s, 3);
    folo_sample_result r;
    folo_sampler_sample(s, logits, &r);
    CHECK(r.token == 3);
    folo_sampler_free(s);
}

/* ---- the whole chain against a reference ------------------------------------ */

typedef struct { double value; int id; } ranked;

static int by_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->value != y->value) return x->value > y->value ? -1 : 1;
    return x->id - y->id;
}

/* vLLM's order, step by step, in double: penalties, softmax(l / T), min-p
 * mask, top-k of the survivors, renormalise, top-p on the sorted survivors. */
static void reference_probs(const folo_sampling_params *p, const float *raw, int n, const int32_t *prompt,
                            int n_prompt, const int32_t *output, int n_output, double *probs) {
    double *l = calloc((size_t)n, sizeof *l);
    int *count = calloc((size_t)n, sizeof *count);
    char *seen = calloc((size_t)n, 1);
    ranked *order = calloc((size_t)n, sizeof *order);
    for (int i = 0; i < n_prompt; i++) seen[prompt[i]] = 1;
    for (int i = 0; i < n_output; i++) seen[output[i]] = 1, count[output[i]]++;
    for (int i = 0; i < n; i++) {
        float v = raw[i];
        if (seen[i]) v = v > 0 ? v / p->repetition_penalty : v * p->repetition_penalty;
        if (count[i]) v -= p->frequency_penalty * (float)count[i] + p->presence_penalty;
        l[i] = v;
    }
    double max_l = -INFINITY, z = 0.0;
    for (int i = 0; i < n; i++) max_l = fmax(max_l, l[i]);
    for (int i = 0; i < n; i++) z += exp((l[i] - max_l) / p->temperature);
    for (int i = 0; i < n; i++) probs[i] = exp((l[i] - max_l) / p->temperature) / z;
    double max_p = 0.0;
    for (int i = 0; i < n; i++) max_p = fmax(max_p, probs[i]);
    for (int i = 0; i < n; i++)
        if (probs[i] < p->min_p * max_p) probs[i] = 0.0;
    int n_alive = 0;
    for (int i = 0; i < n; i++)
        if (probs[i] > 0) order[n_alive++] = (ranked){l[i], i};
    qsort(order, (size_t)n_alive, sizeof *order, by_rank);
    if (p->top_k > 0 && p->top_k < n_alive) {
        for (int j = p->top_k; j < n_alive; j++) probs[order[j].id] = 0.0;
        n_alive = p->top_k;
    }
    double sum = 0.0;
    for (int j = 0; j < n_alive; j++) sum += probs[order[j].id];
    for (int j = 0; j < n_alive; j++) probs[order[j].id] /= sum;
    double cum = 0.0;
    int j = 0;
    for (; j < n_alive; j++) {
        cum += probs[order[j].id];
        if (cum >= p->top_p) break;
    }
    for (int k = j + 1; k < n_alive; k++) probs[order[k].id] = 0.0;
    sum = 0.0;
    for (int k = 0; k < n; k++) sum += probs[k];
    for (int k = 0; k < n; k++) probs[k] /= sum;
    free(l);
    free(count);
    free(seen);
    free(order);
}

static void test_chain_against_reference(void) {
    enum { N = 300, CASES = 200 };
    float logits[N], probs[N];
    double ref[N];
    int32_t prompt[20], output[30];
    int mismatches = 0;
    for (int c = 0; c < CASES; c++) {
        folo_sampling_params p = random_params(0.2f + 1.8f * (float)test_uniform());
        p.top_k = test_uniform() < 0.5 ? 1 + (int)(test_uniform() * 60) : 0;
        p.top_p = test_uniform() < 0.6 ? 0.05f + 0.9f * (float)test_uniform() : 1.0f;
        p.min_p = test_uniform() < 0.4 ? 0.2f * (float)test_uniform() : 0.0f;
        p.repetition_penalty = test_uniform() < 0.5 ? 0.5f + 1.5f * (float)test_uniform() : 1.0f;
        p.frequency_penalty = test_uniform() < 0.5 ? -2.0f + 4.0f * (float)test_uniform() : 0.0f;
        p.presence_penalty = test_uniform() < 0.5 ? -2.0f + 4.0f * (float)test_uniform() : 0.0f;
        for (int i = 0; i < N; i++) logits[i] = (float)(6.0 * test_uniform() - 3.0);
        int n_prompt = (int)(test_uniform() * 20), n_output = (int)(test_uniform() * 30);
        for (int i = 0; i < n_prompt; i++) prompt[i] = (int32_t)(test_uniform() * N);
        for (int i = 0; i < n_output; i++) output[i] = (int32_t)(test_uniform() * 40); /* repeats */
        folo_sampler *s = folo_sampler_create(&p, N);
        folo_sampler_add_prompt(s, prompt, n_prompt);
        for (int i = 0; i < n_output; i++) folo_sampler_add_output(s, output[i]);
        folo_sampler_probs(s, logits, probs);
        folo_sampler_free(s);
        reference_probs(&p, logits, N, prompt, n_prompt, output, n_output, ref);
        bool same = true;
        for (int i = 0; i < N; i++) same = same && fabs(probs[i] - ref[i]) <= 1e-5;
        if (!same) {
            mismatches++;
            fprintf(stderr, "case %d: T=%g k=%d p=%g min_p=%g rep=%g freq=%g pres=%g\n", c,
                    (double)p.temperature, p.top_k, (double)p.top_p, (double)p.min_p,
                    (double)p.repetition_penalty, (double)p.frequency_penalty, (double)p.presence_penalty);
        }
    }
    CHECK(mismatches == 0);
}

/* ---- draws -------------------------------------------------------------------------- */

static void test_draw_frequencies(void) {
    enum { N = 10, DRAWS = 200000 };
    float logits[N] = {0.0f, 1.0f, 0.5f, -0.5f, 2.0f, 1.5f, -3.0f, 0.2f, 1.2f, -1.0f};
    folo_sampling_params p = random_params(0.9f);
    p.top_k = 8;
    p.top_p = 0.97f;
    folo_sampler *s = folo_sampler_create(&p, N);
    float probs[N];
    folo_sampler_probs(s, logits, probs);
    int counts[N] = {0};
    for (int i = 0; i < DRAWS; i++) {
        folo_sample_result r;
        folo_sampler_sample(s, logits, &r);
        counts[r.token]++;
    }
    folo_sampler_free(s);
    double chi2 = 0.0;
    int df = -1;
    for (int i = 0; i < N; i++) {
        if (probs[i] == 0.0f) {
            CHECK(counts[i] == 0); /* dropped tokens are never drawn */
            continue;
        }
        double expect = probs[i] * DRAWS;
        chi2 += (counts[i] - expect) * (counts[i] - expect) / expect;
        df++;
    }
    CHECK(df >= 4);
    /* Far beyond the 99.9th percentile of chi-square with df <= 9 (27.9). */
    CHECK_MSG(chi2 < 40.0, "chi2 %g with %d degrees of freedom", chi2, df);
}

static void draw_sequence(const folo_sampling_params *p, float *logits, int n, int32_t *tokens, int count) {
    folo_sampler *s = folo_sampler_create(p, n);
    for (int i = 0; i < count; i++) {
        folo_sample_result r;
        folo_sampler_sample(s, logits, &r);
        tokens[i] = r.token;
    }
    folo_sampler_free(s);
}

static void test_seeding(void) {
    enum { N = 1000, COUNT = 64 };
    float *logits = malloc(N * sizeof *logits);
    for (int i = 0; i < N; i++) logits[i] = (float)test_uniform();
    int32_t a[COUNT], b[COUNT], c[COUNT];
    folo_sampling_params p = random_params(1.0f);
    p.seed = 7;
    draw_sequence(&p, logits, N, a, COUNT);
    draw_sequence(&p, logits, N, b, COUNT);
    CHECK(memcmp(a, b, sizeof a) == 0);
    p.seed = 8;
    draw_sequence(&p, logits, N, c, COUNT);
    CHECK(memcmp(a, c, sizeof a) != 0);
    p.has_seed = false; /* clock and counter: two samplers differ */
    draw_sequence(&p, logits, N, b, COUNT);
    draw_sequence(&p, logits, N, c, COUNT);
    CHECK(memcmp(b, c, sizeof b) != 0);
    free(logits);
}

/* ---- logprobs ----------------------------------------------------------------------- */

static void test_logprobs(void) {
    float logits[7] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, -4.0f, 0.5f};
    double z = 0.0;
    for (int i = 0; i < 7; i++) z += exp(logits[i]);
    /* Penalties and temperature change the draw, not the reported logprobs. */
    folo_sampling_params p = random_params(0.5f);
    p.repetition_penalty = 1.3f;
    p.frequency_penalty = 0.4f;
    p.top_k = 3;
    p.logprobs = 4;
    folo_sampler *s = folo_sampler_create(&p, 7);
    folo_sampler_add_output(s, 1);
    folo_sample_result r;
    folo_sampler_sample(s, logits, &r);
    CHECK_NEAR(r.logprob, logits[r.token] - log(z), 1e-5);
    CHECK(r.n_top == 4);
    const int32_t order[4] = {1, 3, 4, 0}; /* ties by lower id: 1 before 3, 0 before 6 */
    for (int i = 0; i < 4 && i < r.n_top; i++) {
        CHECK(r.top[i].token == order[i]);
        CHECK_NEAR(r.top[i].logprob, logits[order[i]] - log(z), 1e-5);
    }
    folo_sampler_free(s);

    p = folo_sampling_default();
    p.logprobs = 0; /* the chosen token only */
    s = folo_sampler_create(&p, 7);
    folo_sampler_sample(s, logits, &r);
    CHECK(r.token == 1 && r.n_top == 0);
    CHECK_NEAR(r.logprob, 2.0 - log(z), 1e-5);
    folo_sampler_free(s);

    p.logprobs = -1;
    s = folo_sampler_create(&p, 7);
    folo_sampler_sample(s, logits, &r);
    CHECK(r.n_top == 0 && r.logprob == 0.0f);
    folo_sampler_free(s);
}

/* Scoring a given token (the engine's prompt logprobs): its logprob and
 * rank against a plain double-precision twin, over a vocabulary whose tail
 * is not a multiple of 8, with ties counted in the rank. */
static void test_logprobs_fill(void) {
    enum { V = 1003 };
    float logits[V];
    /* Steps of 0.01 in [-10, 10): many ties. */
    for (int i = 0; i < V; i++) logits[i] = (float)(int)(test_uniform() * 2000) / 100.0f - 10.0f;
    logits[V - 1] = 12.0f; /* the argmax, in the tail */
    logits[17] = logits[500] = 3.25f;
    double m = 12.0, z = 0.0;
    for (int i = 0; i < V; i++) z += exp((double)logits[i] - m);
    for (int t = 0; t < 3; t++) {
        int32_t token = (int32_t[]){17, 500, V - 1}[t];
        folo_sample_result r;
        folo_logprobs_fill(logits, V, token, 5, &r);
        int rank = 0;
        for (int i = 0; i < V; i++) rank += logits[i] >= logits[token];
        CHECK(r.token == token);
        CHECK_NEAR(r.logprob, (double)logits[token] - m - log(z), 1e-5);
        CHECK_MSG(r.rank == rank, "token %d: rank %d, expected %d", token, r.rank, rank);
        CHECK(r.n_top == 5 && r.top[0].token == V - 1);
        CHECK_NEAR(r.top[0].logprob, -log(z), 1e-5);
        for (int i = 1; i < r.n_top; i++) CHECK(r.top[i].logprob <= r.top[i - 1].logprob);
    }
    folo_sample_result r;
    folo_logprobs_fill(logits, V, V - 1, 0, &r);
    CHECK(r.rank == 1 && r.n_top == 0);
}

/* ---- validation --------------------------------------------------------------------- */

static void expect_invalid(folo_sampling_params p, const char *name) {
    folo_error err = {{0}};
    CHECK_MSG(folo_sampling_validate(&p, &err) == -1, "%s accepted", name);
    CHECK_MSG(strstr(err.message, name) != NULL, "'%s' does not name %s", err.message, name);
}

static void test_validation(void) {
    folo_sampling_params d = folo_sampling_default();
    folo_error err = {{0}};
    CHECK(folo_sampling_validate(&d, &err) == 0);
    folo_sampling_params ok = d;
    ok.top_k = -1;
    ok.temperature = 0.7f;
    ok.top_p = 1.0f;
    ok.min_p = 1.0f;
    ok.presence_penalty = -2.0f;
    ok.frequency_penalty = 2.0f;
    ok.logprobs = FOLO_MAX_TOP_LOGPROBS;
    CHECK(folo_sampling_validate(&ok, &err) == 0);

    folo_sampling_params p = d;
    p.temperature = -0.1f;
    expect_invalid(p, "temperature");
    p.temperature = NAN;
    expect_invalid(p, "temperature");
    p = d;
    p.top_p = 0.0f;
    expect_invalid(p, "top_p");
    p.top_p = 1.01f;
    expect_invalid(p, "top_p");
    p = d;
    p.top_k = -2;
    expect_invalid(p, "top_k");
    p = d;
    p.min_p = -0.01f;
    expect_invalid(p, "min_p");
    p.min_p = 1.5f;
    expect_invalid(p, "min_p");
    p = d;
    p.repetition_penalty = 0.0f;
    expect_invalid(p, "repetition_penalty");
    p = d;
    p.presence_penalty = 2.5f;
    expect_invalid(p, "presence_penalty");
    p = d;
    p.frequency_penalty = -2.5f;
    expect_invalid(p, "frequency_penalty");
    p = d;
    p.logprobs = FOLO_MAX_TOP_LOGPROBS + 1;
    expect_invalid(p, "logprobs");
}

/* ---- a Qwen3-sized vocabulary --------------------------------------------------- */

static void test_large_vocab(void) {
    float *logits = malloc(QWEN3_VOCAB * sizeof *logits);
    float *probs = malloc(QWEN3_VOCAB * sizeof *probs);
    for (int i = 0; i < QWEN3_VOCAB; i++) logits[i] = (float)(8.0 * test_uniform() - 4.0);
    logits[151645] = 9.0f;
    logits[17] = 8.5f;

    folo_sampling_params p = folo_sampling_default();
    p.logprobs = 20;
    CHECK(sample_once(&p, logits, QWEN3_VOCAB) == 151645);

    /* top-k 20, top-p 0.95: every draw among the 20 best. */
    p = random_params(0.8f);
    p.top_k = 20;
    p.top_p = 0.95f;
    p.logprobs = 20;
    folo_sampler *s = folo_sampler_create(&p, QWEN3_VOCAB);
    folo_sample_result r;
    bool in_top = true;
    for (int i = 0; i < 50; i++) {
        folo_sampler_sample(s, logits, &r);
        bool found = false;
        for (int j = 0; j < r.n_top; j++) found = found || r.top[j].token == r.token;
        in_top = in_top && found;
    }
    CHECK(in_top && r.n_top == 20 && r.top[0].token == 151645 && r.top[1].token == 17);
    folo_sampler_probs(s, logits, probs);
    int kept = count_nonzero(probs, QWEN3_VOCAB);
    CHECK(kept >= 1 && kept <= 20);
    folo_sampler_free(s);

    /* Plain temperature: a distribution over the whole vocabulary. */
    p = random_params(1.0f);
    s = folo_sampler_create(&p, QWEN3_VOCAB);
    folo_sampler_probs(s, logits, probs);
    double sum = 0.0;
    for (int i = 0; i < QWEN3_VOCAB; i++) sum += probs[i];
    CHECK_NEAR(sum, 1.0, 1e-4);
    CHECK(count_nonzero(probs, QWEN3_VOCAB) == QWEN3_VOCAB);
    folo_sampler_sample(s, logits, &r);
    CHECK(r.token >= 0 && r.token < QWEN3_VOCAB);
    folo_sampler_free(s);

    /* Top-p alone over a near-flat distribution: the quickselect path on a
     * large candidate set, checked by the mass it keeps. */
    p = random_params(1.0f);
    p.top_p = 0.5f;
    s = folo_sampler_create(&p, QWEN3_VOCAB);
    folo_sampler_probs(s, logits, probs);
    folo_sampler_free(s);
    p.top_p = 1.0f;
    float *full = malloc(QWEN3_VOCAB * sizeof *full);
    probs_of(&p, logits, QWEN3_VOCAB, full);
    double kept_mass = 0.0, min_kept = 1.0, max_dropped = 0.0;
    for (int i = 0; i < QWEN3_VOCAB; i++) {
        if (probs[i] > 0) {
            kept_mass += full[i];
            min_kept = fmin(min_kept, full[i]);
        } else {
            max_dropped = fmax(max_dropped, full[i]);
        }
    }
    CHECK(kept_mass >= 0.5 && kept_mass - min_kept < 0.5); /* reaches 0.5, and minimally */
    CHECK(max_dropped <= min_kept);
    free(full);
    free(logits);
    free(probs);
}

int main(void) {
    test_greedy();
    test_needs_logits();
    test_temperature();
    test_top_k();
    test_top_p();
    test_min_p();
    test_repetition_penalty();
    test_presence_frequency();
    test_chain_against_reference();
    test_draw_frequencies();
    test_seeding();
    test_logprobs();
    test_logprobs_fill();
    test_validation();
    test_large_vocab();
    return check_summary("test_sampler");
}
