/* The engine on a tiny untied model (made here, so greedy continuations
 * vary from token to token).
 *
 * The oracle is batch invariance: a workload of random requests (random
 * prompt lengths, a shared prefix for some, random arrival steps, some
 * aborted mid-way, some with n > 1 at temperature 0) run together under
 * several configurations (token budgets small enough to chunk every
 * prefill, prefix caching on and off, block sizes, a pool small enough to
 * force preemption) and under each engine switch of docs/switches.md
 * (static batching, contiguous KV, naive attention, no chunked prefill,
 * and all four together: the seeds' M1) must give exactly the token ids
 * each request gets when it runs alone; so must seeded random sampling,
 * whose draws belong to each sequence. After every step the block pool's invariants hold; at the
 * end no block is in use. Also: aborts in prefill and in decode free
 * everything; prefix-cache hits on a shared system prompt; stop strings;
 * the engine thread with its callback; refusal of impossible requests.
 * Per switch: a static batch admits nobody until it has finished;
 * contiguous KV holds each sequence's whole length from its admission, so
 * fewer run at once; naive attention refuses a sequence whose score matrix
 * exceeds its budget; without chunked prefill a prompt longer than the
 * budget runs in one step. Logprobs and prompt logprobs (some requests of
 * the workload ask for them) equal those of the request alone, exactly;
 * text goes out whole tokens at a time beside their logprobs; max_queue
 * is exact under concurrent adders. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/log.h"
#include "engine/engine.h"
#include "model/make_model.h"
#include "tokenizer/tokenizer.h"

#define N_REQS 14
#define MAX_PROMPT 72
#define MAX_OUT 24
#define MAX_N 3
#define KV_BYTES_PER_TOKEN                                                                         \
    512 /* tiny preset: 2 (K, V) x 2 layers x 2 kv heads x 16 dims x 4 bytes */

static char g_model_dir[256];

typedef struct req_spec {
    int32_t prompt[MAX_PROMPT];
    int n_prompt;
    int max_tokens;
    int n;
    int arrive_step;
    int abort_step; /* -1: never */
    bool ignore_eos;
    bool seeded_random; /* temperature 0.9, top-p 0.9, seed: as batch-invariant as greedy */
    int logprobs;       /* < 0: none */
    int prompt_logprobs;
} req_spec;

typedef struct req_result {
    uint64_t id;
    bool added;
    int32_t tokens[MAX_N][MAX_OUT];
    int n_tokens[MAX_N];
    folo_finish_reason finish[MAX_N];
    folo_buf text[MAX_N];
    folo_sample_result lps[MAX_N][MAX_OUT];      /* the logprobs outputs listed */
    int n_lps[MAX_N];
    folo_sample_result prompt_lps[MAX_N][MAX_PROMPT];
    int n_prompt_lps[MAX_N];                     /* 0 until the prompt logprobs came */
} req_result;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static int rnd(int lo, int hi) { /* [lo, hi] */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int)((g_rng >> 33) % (uint64_t)(hi - lo + 1));
}

static void make_workload(req_spec *specs) {
    int32_t shared[40];
    for (int i = 0; i < 40; i++) shared[i] = rnd(100, 50000);
    for (int r = 0; r < N_REQS; r++) {
        req_spec *s = &specs[r];
        memset(s, 0, sizeof *s);
        s->n_prompt = rnd(1, MAX_PROMPT);
        int n_shared = r % 2 == 0 ? (s->n_prompt < 40 ? s->n_prompt : 40) : 0;
        for (int i = 0; i < s->n_prompt; i++)
            s->prompt[i] = i < n_shared ? shared[i] : rnd(100, 50000);
        s->max_tokens = rnd(1, MAX_OUT);
        s->n = r % 5 == 3 ? rnd(2, MAX_N) : 1;
        s->arrive_step = rnd(0, 12);
        s->abort_step = r % 6 == 1 ? s->arrive_step + rnd(0, 8) : -1;
        s->ignore_eos = r % 3 != 0;
        s->seeded_random = r % 4 == 2;
        s->logprobs = r % 4 == 1 ? r % 3 : -1;
        s->prompt_logprobs = r % 3 == 1 ? (r / 3) % 4 : -1;
    }
}

typedef struct engine_config {
    const char *name;
    int budget;
    int block_size;
    int n_blocks;
    int max_seqs;
    bool no_prefix_cache;
    folo_batching batching;
    folo_kv_layout kv_layout;
    folo_attention_kind attention;
    bool no_chunked_prefill;
    size_t naive_attention_bytes;
    folo_compute_dtype dtype;
} engine_config;

static folo_engine *make_engine(const engine_config *c) {
    folo_engine_options opt = {
        .model_dir = g_model_dir,
        .device = "cpu", /* its logits are bit-identical however a token is batched */
        .n_threads = 2,
        .block_size = c->block_size,
        /* a bf16 cache holds a token in half the bytes */
        .kv_memory_bytes = (size_t)c->n_blocks * c->block_size * KV_BYTES_PER_TOKEN /
                           (c->dtype == FOLO_COMPUTE_BFLOAT16 ? 2 : 1),
        .dtype = c->dtype,
        .max_num_batched_tokens = c->budget,
        .max_num_seqs = c->max_seqs,
        .disable_prefix_caching = c->no_prefix_cache,
        .batching = c->batching,
        .kv_layout = c->kv_layout,
        .attention = c->attention,
        .disable_chunked_prefill = c->no_chunked_prefill,
        .naive_attention_bytes = c->naive_attention_bytes,
    };
    folo_error err = {{0}};
    folo_engine *e = folo_engine_create(&opt, &err);
    CHECK_MSG(e != NULL, "%s: %s", c->name, err.message);
    CHECK(e == NULL || folo_engine_token_capacity(e) == c->n_blocks * c->block_size);
    return e;
}

static folo_request_params params_of(const req_spec *s, int n) {
    folo_request_params p = folo_request_params_default();
    p.max_tokens = s->max_tokens;
    p.n = n;
    p.ignore_eos = s->ignore_eos;
    p.sampling.logprobs = s->logprobs;
    p.prompt_logprobs = s->prompt_logprobs;
    if (s->seeded_random) {
        p.sampling.temperature = 0.9f;
        p.sampling.top_p = 0.9f;
        p.sampling.seed = (uint64_t)s->n_prompt;
        p.sampling.has_seed = true;
    }
    return p;
}

static req_result *find(req_result *res, int n, uint64_t id) {
    for (int i = 0; i < n; i++)
        if (res[i].added && res[i].id == id) return &res[i];
    return NULL;
}

static void record(req_result *res, int n_res, const folo_output *o) {
    req_result *r = find(res, n_res, o->request_id);
    CHECK(r != NULL);
    if (!r) return;
    int k = o->sample_index;
    CHECK(r->finish[k] == FOLO_FINISH_NONE);
    for (int i = 0; i < o->n_token_ids; i++) {
        CHECK(r->n_tokens[k] < MAX_OUT);
        if (r->n_tokens[k] < MAX_OUT) r->tokens[k][r->n_tokens[k]++] = o->token_ids[i];
    }
    CHECK(o->n_all_token_ids == r->n_tokens[k]);
    for (int i = 0; i < o->n_logprobs; i++) {
        CHECK(r->n_lps[k] < r->n_tokens[k]); /* a token's logprobs come once it was sampled */
        if (r->n_lps[k] < MAX_OUT) r->lps[k][r->n_lps[k]++] = o->logprobs[i];
    }
    CHECK((o->logprobs != NULL) == (o->n_logprobs > 0));
    if (o->prompt_logprobs) {
        /* With the first token, once. */
        CHECK(r->n_tokens[k] == 1 && o->n_token_ids == 1 && r->n_prompt_lps[k] == 0);
        CHECK(o->n_prompt_tokens <= MAX_PROMPT);
        for (int i = 0; i < o->n_prompt_tokens && i < MAX_PROMPT; i++)
            r->prompt_lps[k][i] = o->prompt_logprobs[i];
        r->n_prompt_lps[k] = o->n_prompt_tokens;
    }
    folo_buf_append(&r->text[k], o->text, o->text_len);
    r->finish[k] = o->finish_reason;
    if (o->finish_reason != FOLO_FINISH_NONE) {
        CHECK(o->metrics != NULL);
        if (o->metrics && r->n_tokens[k] > 0) {
            CHECK(o->metrics->first_token_s >= o->metrics->first_scheduled_s);
            CHECK(o->metrics->first_scheduled_s >= o->metrics->arrival_s);
            CHECK(o->metrics->finish_s >= o->metrics->first_token_s);
            CHECK(o->metrics->n_output_tokens == r->n_tokens[k]);
        }
    }
}

static bool same_logprobs(const folo_sample_result *a, const folo_sample_result *b) {
    bool same = a->token == b->token && a->rank == b->rank && a->n_top == b->n_top &&
                (a->logprob == b->logprob || (isnan(a->logprob) && isnan(b->logprob)));
    for (int i = 0; same && i < a->n_top; i++)
        same = a->top[i].token == b->top[i].token && a->top[i].logprob == b->top[i].logprob;
    return same;
}

/* The logprobs of sample k of got equal those of sample 0 of want (the
 * request alone) for its n tokens (all of them: not aborted), and its
 * prompt logprobs theirs, exactly: the CPU backend's logits of a token do
 * not depend on its batch, chunk or cached prefix. */
static void check_logprobs(const req_spec *spec, const req_result *got, int k,
                           const req_result *want, int n, bool all, const char *name, int r) {
    if (spec->logprobs >= 0) {
        CHECK_MSG(got->n_lps[k] <= n && (!all || got->n_lps[k] == n),
                  "%s: request %d.%d: %d logprobs for %d tokens", name, r, k, got->n_lps[k], n);
        bool same = true;
        for (int i = 0; i < got->n_lps[k]; i++)
            same = same && got->lps[k][i].token == got->tokens[k][i] &&
                   got->lps[k][i].n_top == spec->logprobs &&
                   same_logprobs(&got->lps[k][i], &want->lps[0][i]);
        CHECK_MSG(same, "%s: request %d.%d: logprobs differ from the request alone", name, r, k);
    } else {
        CHECK(got->n_lps[k] == 0);
    }
    if (spec->prompt_logprobs < 0 || n == 0) {
        CHECK(got->n_prompt_lps[k] == 0);
        return;
    }
    CHECK_MSG(got->n_prompt_lps[k] == spec->n_prompt, "%s: request %d.%d: %d prompt logprobs",
              name, r, k, got->n_prompt_lps[k]);
    bool same = want->n_prompt_lps[0] == spec->n_prompt && isnan(got->prompt_lps[k][0].logprob);
    for (int i = 0; same && i < got->n_prompt_lps[k]; i++)
        same = got->prompt_lps[k][i].token == spec->prompt[i] &&
               got->prompt_lps[k][i].n_top == (i ? spec->prompt_logprobs : 0) &&
               same_logprobs(&got->prompt_lps[k][i], &want->prompt_lps[0][i]);
    CHECK_MSG(same, "%s: request %d.%d: prompt logprobs differ from the request alone", name, r,
              k);
}

static void results_free(req_result *res, int n) {
    for (int i = 0; i < n; i++)
        for (int k = 0; k < MAX_N; k++) folo_buf_free(&res[i].text[k]);
}

static void check_step(folo_engine *e, const char *name, int step) {
    folo_error err = {{0}};
    CHECK_MSG(folo_engine_check(e, &err) == 0, "%s step %d: %s", name, step, err.message);
}

static void step_and_record(folo_engine *e, req_result *res, int n_res) {
    const folo_output *outs;
    int n_outs;
    folo_error err = {{0}};
    CHECK_MSG(folo_engine_step(e, &outs, &n_outs, &err) == 0, "%s", err.message);
    for (int i = 0; i < n_outs; i++) record(res, n_res, &outs[i]);
}

/* Each request alone (n = 1), one after another, on a roomy engine with
 * the given attention. */
static void run_alone(const req_spec *specs, req_result *ref, folo_attention_kind attention,
                      folo_compute_dtype dtype) {
    engine_config c = {"alone", 4096, 16, 256, 8, .no_prefix_cache = true,
                       .attention = attention, .dtype = dtype};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    for (int r = 0; r < N_REQS; r++) {
        folo_request_params p = params_of(&specs[r], 1);
        folo_error err = {{0}};
        CHECK_MSG(folo_engine_add_tokens(e, specs[r].prompt, specs[r].n_prompt, &p, &ref[r].id,
                                         &err) == 0,
                  "%s", err.message);
        ref[r].added = true;
        while (folo_engine_has_unfinished(e)) step_and_record(e, ref, N_REQS);
        CHECK(ref[r].finish[0] == FOLO_FINISH_STOP || ref[r].finish[0] == FOLO_FINISH_LENGTH);
    }
    folo_engine_destroy(e);
}

static void run_together(const engine_config *c, const req_spec *specs, const req_result *ref) {
    folo_engine *e = make_engine(c);
    if (!e) return;
    req_result res[N_REQS];
    memset(res, 0, sizeof res);
    bool aborted[N_REQS] = {false};
    for (int step = 0; step < 2000; step++) {
        for (int r = 0; r < N_REQS; r++) {
            if (specs[r].arrive_step == step) {
                folo_request_params p = params_of(&specs[r], specs[r].n);
                folo_error err = {{0}};
                CHECK_MSG(folo_engine_add_tokens(e, specs[r].prompt, specs[r].n_prompt, &p,
                                                 &res[r].id, &err) == 0,
                          "%s", err.message);
                res[r].added = true;
            }
            if (specs[r].abort_step == step) {
                folo_engine_abort(e, res[r].id);
                aborted[r] = true;
            }
        }
        if (step > 12 && !folo_engine_has_unfinished(e)) break;
        step_and_record(e, res, N_REQS);
        check_step(e, c->name, step);
    }
    for (int r = 0; r < N_REQS; r++) {
        for (int k = 0; k < specs[r].n; k++) {
            folo_finish_reason f = res[r].finish[k];
            CHECK_MSG(f != FOLO_FINISH_NONE && f != FOLO_FINISH_ERROR, "%s: request %d.%d: %d",
                      c->name, r, k, (int)f);
            int n = res[r].n_tokens[k];
            if (f == FOLO_FINISH_ABORT) {
                CHECK(aborted[r]);
                CHECK(n <= ref[r].n_tokens[0]);
            } else {
                CHECK_MSG(n == ref[r].n_tokens[0] && f == ref[r].finish[0],
                          "%s: request %d.%d: %d tokens (%d alone)", c->name, r, k, n,
                          ref[r].n_tokens[0]);
            }
            bool same = n <= ref[r].n_tokens[0] && memcmp(res[r].tokens[k], ref[r].tokens[0],
                                                          (size_t)n * sizeof(int32_t)) == 0;
            CHECK_MSG(same, "%s: request %d.%d: tokens differ from the request alone", c->name, r,
                      k);
            if (same)
                check_logprobs(&specs[r], &res[r], k, &ref[r], n, f != FOLO_FINISH_ABORT, c->name,
                               r);
            if (f != FOLO_FINISH_ABORT)
                CHECK_STR(folo_buf_str(&res[r].text[k]), folo_buf_str(&ref[r].text[0]));
        }
    }
    folo_engine_stats st;
    folo_engine_get_stats(e, &st);
    CHECK_MSG(st.kv_blocks_used == 0, "%s: %d blocks still used", c->name, st.kv_blocks_used);
    CHECK(st.n_running == 0 && st.n_waiting == 0 && st.n_unfinished_requests == 0);
    printf(
        "%-22s steps %4lld  preemptions %3lld  prefix hits %4lld/%lld tokens  peak blocks %d/%d\n",
        c->name, (long long)st.n_steps, (long long)st.n_preemptions,
        (long long)st.prefix_hit_tokens, (long long)st.prefix_queried_tokens,
        st.kv_blocks_peak_used, st.kv_blocks_total);
    if (c->n_blocks <= 12) CHECK_MSG(st.n_preemptions > 0, "%s: no preemption", c->name);
    results_free(res, N_REQS);
    folo_engine_destroy(e);
}

static void test_batch_invariance(void) {
    req_spec specs[N_REQS];
    make_workload(specs);
    /* Naive attention rounds differently from the online kernel, so seeded
     * random draws may part from the default path's; it is batch-invariant
     * on its own (each query's row is summed in one order), so its
     * reference is its own run alone, whose greedy outputs must equal the
     * default path's. */
    req_result ref[N_REQS], ref_naive[N_REQS], ref_bf16[N_REQS];
    memset(ref, 0, sizeof ref);
    memset(ref_naive, 0, sizeof ref_naive);
    memset(ref_bf16, 0, sizeof ref_bf16);
    run_alone(specs, ref, FOLO_ATTENTION_ONLINE, FOLO_COMPUTE_AUTO);
    run_alone(specs, ref_naive, FOLO_ATTENTION_NAIVE, FOLO_COMPUTE_AUTO);
    run_alone(specs, ref_bf16, FOLO_ATTENTION_ONLINE, FOLO_COMPUTE_BFLOAT16);
    for (int r = 0; r < N_REQS; r++) {
        if (specs[r].seeded_random) continue;
        int n = ref[r].n_tokens[0];
        CHECK_MSG(ref_naive[r].n_tokens[0] == n &&
                      memcmp(ref_naive[r].tokens[0], ref[r].tokens[0],
                             (size_t)n * sizeof(int32_t)) == 0,
                  "request %d: greedy tokens differ with naive attention", r);
    }
    static const engine_config configs[] = {
        {"large budget, cache", 2048, 16, 256, 64, .no_prefix_cache = false},
        {"budget 7, cache", 7, 16, 256, 64, .no_prefix_cache = false},
        {"budget 16, no cache", 16, 16, 256, 64, .no_prefix_cache = true},
        {"block 4, budget 5", 5, 4, 1024, 64, .no_prefix_cache = false},
        {"small pool, budget 64", 64, 16, 10, 64, .no_prefix_cache = false},
        {"small pool, no cache", 13, 16, 12, 4, .no_prefix_cache = true},
        {"block 4, tiny pool", 9, 4, 28, 8, .no_prefix_cache = false},
        {"static, budget 16", 16, 16, 256, 8, .batching = FOLO_BATCHING_STATIC},
        {"static, pool 16", 64, 16, 16, 64, .batching = FOLO_BATCHING_STATIC},
        {"contiguous, budget 7", 7, 16, 256, 64, .kv_layout = FOLO_KV_CONTIGUOUS},
        {"contiguous, pool 24", 64, 4, 24 * 4, 64, .kv_layout = FOLO_KV_CONTIGUOUS},
        {"naive, budget 7", 7, 16, 256, 64, .attention = FOLO_ATTENTION_NAIVE},
        {"no chunking, budget 7", 7, 16, 256, 64, .no_chunked_prefill = true},
        {"no chunking, pool 10", 16, 16, 10, 64, .no_chunked_prefill = true},
        {"M1: all four", 64, 16, 64, 8, .batching = FOLO_BATCHING_STATIC,
         .kv_layout = FOLO_KV_CONTIGUOUS, .attention = FOLO_ATTENTION_NAIVE,
         .no_chunked_prefill = true},
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++)
        run_together(&configs[i], specs,
                     configs[i].attention == FOLO_ATTENTION_NAIVE ? ref_naive : ref);
    /* --dtype bfloat16 (a bf16 KV cache; the tiny model's f32 weights keep
     * f32 matmuls): batch-invariant against its own runs alone, through
     * chunking, prefix hits, copy-on-write of shared blocks and preemption. */
    static const engine_config bf16_configs[] = {
        {"bf16, budget 7, cache", 7, 16, 256, 64, .dtype = FOLO_COMPUTE_BFLOAT16},
        {"bf16, block 32, budget 5", 5, 32, 1024, 64, .dtype = FOLO_COMPUTE_BFLOAT16},
        {"bf16, small pool", 64, 16, 10, 64, .dtype = FOLO_COMPUTE_BFLOAT16},
    };
    for (size_t i = 0; i < sizeof bf16_configs / sizeof bf16_configs[0]; i++)
        run_together(&bf16_configs[i], specs, ref_bf16);
    results_free(ref, N_REQS);
    results_free(ref_naive, N_REQS);
    results_free(ref_bf16, N_REQS);
}

/* Aborting a request in prefill and one in decode frees all their blocks. */
static void test_abort_frees(void) {
    engine_config c = {"abort", 16, 16, 64, 8, .no_prefix_cache = false};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    int32_t prompt[200];
    for (int i = 0; i < 200; i++) prompt[i] = 1000 + i;
    folo_request_params p = folo_request_params_default();
    p.max_tokens = 50;
    p.ignore_eos = true;
    req_result res[2];
    memset(res, 0, sizeof res);
    folo_error err = {{0}};
    CHECK(folo_engine_add_tokens(e, prompt + 100, 5, &p, &res[1].id, &err) == 0);
    CHECK(folo_engine_add_tokens(e, prompt, 200, &p, &res[0].id, &err) == 0);
    res[0].added = res[1].added = true;
    /* Added but not yet stepped: both count as waiting (serve's --max-queue
     * reads this between steps). */
    folo_engine_stats before;
    folo_engine_get_stats(e, &before);
    CHECK_MSG(before.n_waiting == 2, "%d waiting before the first step", before.n_waiting);
    for (int i = 0; i < 4; i++) step_and_record(e, res, 2);
    CHECK(res[0].n_tokens[0] == 0);          /* still in prefill */
    CHECK(res[1].n_tokens[0] >= 2);          /* decoding */
    folo_engine_abort(e, res[0].id);
    folo_engine_abort(e, res[1].id);
    step_and_record(e, res, 2);
    check_step(e, "abort", 0);
    CHECK(res[0].finish[0] == FOLO_FINISH_ABORT && res[1].finish[0] == FOLO_FINISH_ABORT);
    folo_engine_stats st;
    folo_engine_get_stats(e, &st);
    CHECK(st.kv_blocks_used == 0);
    CHECK(!folo_engine_has_unfinished(e));
    folo_engine_abort(e, res[0].id); /* already finished: ignored */
    step_and_record(e, res, 2);
    results_free(res, 2);
    folo_engine_destroy(e);
}

/* A shared system prompt: requests arriving after the first one's prefill
 * reuse its full blocks. */
static void test_prefix_hits(void) {
    engine_config c = {"prefix", 512, 16, 128, 16, .no_prefix_cache = false};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    int32_t prompt[69];
    for (int i = 0; i < 64; i++) prompt[i] = 2000 + i;
    folo_request_params p = folo_request_params_default();
    p.max_tokens = 3;
    req_result res[6];
    memset(res, 0, sizeof res);
    folo_error err = {{0}};
    for (int r = 0; r < 6; r++) {
        for (int i = 64; i < 69; i++) prompt[i] = 9000 + 10 * r + i;
        CHECK(folo_engine_add_tokens(e, prompt, 69, &p, &res[r].id, &err) == 0);
        res[r].added = true;
        if (r == 0)
            while (folo_engine_has_unfinished(e)) step_and_record(e, res, 6);
    }
    while (folo_engine_has_unfinished(e)) step_and_record(e, res, 6);
    folo_engine_stats st;
    folo_engine_get_stats(e, &st);
    CHECK_MSG(st.prefix_hit_tokens == 5 * 64, "%lld hit tokens", (long long)st.prefix_hit_tokens);
    CHECK(st.prefix_queried_tokens == 6 * 69);
    results_free(res, 6);
    folo_engine_destroy(e);
}

/* Stop strings cut the text before them; the text equals the decoded ids. */
static void test_stop_string(void) {
    engine_config c = {"stop", 512, 16, 64, 8, .no_prefix_cache = false};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    folo_request_params p = folo_request_params_default();
    p.max_tokens = 20;
    p.ignore_eos = true;
    req_result res[2];
    memset(res, 0, sizeof res);
    folo_error err = {{0}};
    CHECK_MSG(folo_engine_add_text(e, "Once upon a time", &p, &res[0].id, &err) == 0, "%s",
              err.message);
    res[0].added = true;
    while (folo_engine_has_unfinished(e)) step_and_record(e, res, 1);
    const char *full = folo_buf_str(&res[0].text[0]);
    size_t len = strlen(full);
    CHECK(len > 6);
    char stop[4] = {0};
    if (len > 6) memcpy(stop, full + len / 2, 3);
    const char *stops[] = {stop};
    p.stop = stops;
    p.n_stop = 1;
    CHECK(folo_engine_add_text(e, "Once upon a time", &p, &res[1].id, &err) == 0);
    res[1].added = true;
    while (folo_engine_has_unfinished(e)) step_and_record(e, res, 2);
    const char *cut = folo_buf_str(&res[1].text[0]);
    size_t at = (size_t)(strstr(full, stop) - full);
    CHECK(strlen(cut) == at && strncmp(cut, full, at) == 0);
    CHECK(res[1].finish[0] == FOLO_FINISH_STOP);
    results_free(res, 2);
    folo_engine_destroy(e);
}

/* The engine thread: requests added from here, outputs by callback. */
typedef struct thread_sink {
    pthread_mutex_t lock;
    pthread_cond_t done;
    req_result res[N_REQS];
    int n_finished;
} thread_sink;

static void on_output(void *user, const folo_output *o) {
    thread_sink *sink = user;
    pthread_mutex_lock(&sink->lock);
    record(sink->res, N_REQS, o);
    if (o->finish_reason != FOLO_FINISH_NONE) sink->n_finished++;
    pthread_cond_signal(&sink->done);
    pthread_mutex_unlock(&sink->lock);
}

static void test_engine_thread(void) {
    req_spec specs[N_REQS];
    make_workload(specs);
    req_result ref[N_REQS];
    memset(ref, 0, sizeof ref);
    run_alone(specs, ref, FOLO_ATTENTION_ONLINE, FOLO_COMPUTE_AUTO);
    engine_config c = {"thread", 32, 16, 256, 64, .no_prefix_cache = false};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    thread_sink sink;
    memset(&sink, 0, sizeof sink);
    pthread_mutex_init(&sink.lock, NULL);
    pthread_cond_init(&sink.done, NULL);
    folo_error err = {{0}};
    CHECK(folo_engine_start(e, on_output, &sink, &err) == 0);
    int expected = 0;
    for (int r = 0; r < N_REQS; r++) {
        folo_request_params p = params_of(&specs[r], specs[r].n);
        pthread_mutex_lock(&sink.lock); /* the id must be known before its outputs */
        CHECK(folo_engine_add_tokens(e, specs[r].prompt, specs[r].n_prompt, &p, &sink.res[r].id,
                                     &err) == 0);
        sink.res[r].added = true;
        pthread_mutex_unlock(&sink.lock);
        expected += specs[r].n;
        if (r % 4 == 0) usleep(2000);
    }
    pthread_mutex_lock(&sink.lock);
    while (sink.n_finished < expected) pthread_cond_wait(&sink.done, &sink.lock);
    pthread_mutex_unlock(&sink.lock);
    folo_engine_stop(e);
    for (int r = 0; r < N_REQS; r++)
        for (int k = 0; k < specs[r].n; k++) {
            CHECK(sink.res[r].n_tokens[k] == ref[r].n_tokens[0]);
            CHECK(memcmp(sink.res[r].tokens[k], ref[r].tokens[0],
                         (size_t)ref[r].n_tokens[0] * sizeof(int32_t)) == 0);
        }
    folo_engine_stats st;
    folo_engine_get_stats(e, &st);
    CHECK(st.kv_blocks_used == 0);
    folo_engine_destroy(e);
    results_free(sink.res, N_REQS);
    results_free(ref, N_REQS);
    pthread_mutex_destroy(&sink.lock);
    pthread_cond_destroy(&sink.done);
}

static void test_rejections(void) {
    engine_config c = {"reject", 64, 16, 8, 4, .no_prefix_cache = false};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    folo_request_params p = folo_request_params_default();
    int32_t prompt[100] = {0};
    uint64_t id;
    folo_error err = {{0}};
    p.max_tokens = 40; /* 100 + 40 tokens: 9 blocks, the pool has 8 */
    CHECK(folo_engine_add_tokens(e, prompt, 100, &p, &id, &err) != 0);
    CHECK_MSG(strstr(err.message, "KV blocks") != NULL, "%s", err.message);
    p.max_tokens = 4;
    int32_t bad = 1 << 30;
    CHECK(folo_engine_add_tokens(e, &bad, 1, &p, &id, &err) != 0);
    CHECK_MSG(strstr(err.message, "vocabulary") != NULL, "%s", err.message);
    CHECK(folo_engine_add_tokens(e, prompt, 0, &p, &id, &err) != 0);
    p.sampling.top_p = 2;
    CHECK(folo_engine_add_tokens(e, prompt, 4, &p, &id, &err) != 0);
    CHECK_MSG(strstr(err.message, "top_p") != NULL, "%s", err.message);
    p = folo_request_params_default();
    p.n = 5;
    CHECK(folo_engine_add_tokens(e, prompt, 4, &p, &id, &err) != 0);
    CHECK(folo_engine_add_chat(e, "[{\"role\": 3}]", &p, &id, &err) != 0);
    CHECK(!folo_engine_has_unfinished(e));
    folo_engine_destroy(e);
    folo_engine_options unknown = {.model_dir = g_model_dir, .device = "cpu", .n_threads = 1,
                                   .kv_memory_bytes = 1 << 20, .batching = (folo_batching)7};
    CHECK(folo_engine_create(&unknown, &err) == NULL);
    CHECK_MSG(strstr(err.message, "batching") != NULL, "%s", err.message);
    folo_engine_options share = {.model_dir = g_model_dir, .device = "cpu", .n_threads = 1,
                                 .kv_memory_bytes = 1 << 20, .gpu_memory_utilization = 1.5};
    CHECK(folo_engine_create(&share, &err) == NULL);
    CHECK_MSG(strstr(err.message, "gpu_memory_utilization: 1.5 is outside (0, 1]") != NULL, "%s",
              err.message);
}

/* Adds n requests of prompt lengths n_prompt[i] (ids from 3000 + 100 i)
 * and max_tokens max_tokens[i], ignoring eos. */
static void add_plain(folo_engine *e, req_result *res, int n, const int *n_prompt,
                      const int *max_tokens) {
    for (int r = 0; r < n; r++) {
        int32_t prompt[256];
        for (int i = 0; i < n_prompt[r]; i++) prompt[i] = 3000 + 100 * r + i;
        folo_request_params p = folo_request_params_default();
        p.max_tokens = max_tokens[r];
        p.ignore_eos = true;
        folo_error err = {{0}};
        CHECK_MSG(folo_engine_add_tokens(e, prompt, n_prompt[r], &p, &res[r].id, &err) == 0, "%s",
                  err.message);
        res[r].added = true;
    }
}

/* Static batching: with two seats, the third request gets no token until
 * both members of the first batch have finished, though one finishes
 * early. */
static void test_static_engine(void) {
    engine_config c = {"static", 64, 16, 64, 2, .batching = FOLO_BATCHING_STATIC};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    req_result res[3];
    memset(res, 0, sizeof res);
    add_plain(e, res, 3, (int[]){10, 12, 9}, (int[]){2, 8, 3});
    int step = 0;
    while (folo_engine_has_unfinished(e) && step < 100) {
        step_and_record(e, res, 3);
        step++;
        bool batch_done =
            res[0].finish[0] != FOLO_FINISH_NONE && res[1].finish[0] != FOLO_FINISH_NONE;
        CHECK_MSG(batch_done || res[2].n_tokens[0] == 0, "step %d: the third request ran early",
                  step);
        folo_engine_stats st;
        folo_engine_get_stats(e, &st);
        CHECK(st.n_running + st.n_waiting + (int)st.n_finished_requests == 3);
        if (!batch_done) CHECK(st.n_waiting == 1);
    }
    CHECK(res[2].n_tokens[0] == 3 && step == 8 + 3);
    results_free(res, 3);
    folo_engine_destroy(e);
}

/* Contiguous KV: four requests of 2 blocks each (10 + 22 tokens) in a pool
 * of 7: paged, all four start at once (a block each) and preempt as they
 * grow; contiguous, three start with their 6 blocks reserved and never
 * preempt. Both give the same tokens. */
static void test_contiguous_engine(void) {
    req_result res[2][4];
    memset(res, 0, sizeof res);
    for (int contiguous = 0; contiguous < 2; contiguous++) {
        engine_config c = {"contiguous", 64, 16, 7, 8,
                           .kv_layout = contiguous ? FOLO_KV_CONTIGUOUS : FOLO_KV_PAGED};
        folo_engine *e = make_engine(&c);
        if (!e) return;
        add_plain(e, res[contiguous], 4, (int[]){10, 10, 10, 10}, (int[]){22, 22, 22, 22});
        int peak_running = 0;
        for (int step = 0; folo_engine_has_unfinished(e) && step < 500; step++) {
            step_and_record(e, res[contiguous], 4);
            folo_engine_stats st;
            folo_engine_get_stats(e, &st);
            if (st.n_running > peak_running) peak_running = st.n_running;
            if (step == 0) {
                CHECK_MSG(st.kv_blocks_used == (contiguous ? 6 : 4), "contiguous %d: %d blocks",
                          contiguous, st.kv_blocks_used);
                CHECK(st.n_running == (contiguous ? 3 : 4));
            }
            if (contiguous) CHECK(st.kv_blocks_used == 2 * st.n_running);
        }
        folo_engine_stats st;
        folo_engine_get_stats(e, &st);
        CHECK_MSG(peak_running == (contiguous ? 3 : 4), "contiguous %d: peak %d running",
                  contiguous, peak_running);
        CHECK(contiguous ? st.n_preemptions == 0 : st.n_preemptions > 0);
        CHECK(st.prefix_queried_tokens == 0 || !contiguous); /* no prefix cache with it */
        folo_engine_destroy(e);
    }
    for (int r = 0; r < 4; r++) {
        CHECK(res[0][r].n_tokens[0] == 22 && res[1][r].n_tokens[0] == 22);
        CHECK(memcmp(res[0][r].tokens[0], res[1][r].tokens[0], 22 * sizeof(int32_t)) == 0);
    }
    for (int k = 0; k < 2; k++) results_free(res[k], 4);
}

/* Naive attention refuses a sequence whose T x T score matrix exceeds its
 * budget, naming the length and the budget; the default attention takes it. */
static void test_naive_budget(void) {
    for (int naive = 0; naive < 2; naive++) {
        engine_config c = {"naive budget", 64, 16, 64, 4,
                           .attention = naive ? FOLO_ATTENTION_NAIVE : FOLO_ATTENTION_ONLINE,
                           .naive_attention_bytes = 64 * 64 * sizeof(float)};
        folo_engine *e = make_engine(&c);
        if (!e) return;
        int32_t prompt[50] = {0};
        folo_request_params p = folo_request_params_default();
        uint64_t id;
        folo_error err = {{0}};
        p.max_tokens = 14; /* 64 tokens: exactly the budget */
        CHECK_MSG(folo_engine_add_tokens(e, prompt, 50, &p, &id, &err) == 0, "%s", err.message);
        p.max_tokens = 15;
        int rc = folo_engine_add_tokens(e, prompt, 50, &p, &id, &err);
        CHECK(naive ? rc != 0 : rc == 0);
        if (naive)
            CHECK_MSG(strstr(err.message, "65 tokens") && strstr(err.message, "65x65") &&
                          strstr(err.message, "budget of 0.0 MiB"),
                      "%s", err.message);
        while (folo_engine_has_unfinished(e)) {
            const folo_output *outs;
            int n_outs;
            CHECK(folo_engine_step(e, &outs, &n_outs, &err) == 0);
        }
        folo_engine_destroy(e);
    }
}

static void record_step(void *user, int n_tokens) {
    int *sizes = user;
    if (sizes[0] < 63) sizes[++sizes[0]] = n_tokens;
}

/* Without chunked prefill, a 100-token prompt under a budget of 16 runs in
 * one step beside the decode of a running request; with it, in chunks of
 * at most 16. The tokens are the same. */
static void test_no_chunk_engine(void) {
    req_result res[2][2];
    memset(res, 0, sizeof res);
    for (int whole = 0; whole < 2; whole++) {
        engine_config c = {"no chunking", 16, 16, 64, 4, .no_chunked_prefill = whole};
        folo_engine *e = make_engine(&c);
        if (!e) return;
        int sizes[64] = {0}; /* [0]: count, then each step's tokens */
        folo_engine_set_step_hook(e, record_step, sizes);
        add_plain(e, res[whole], 1, (int[]){5}, (int[]){20});
        step_and_record(e, res[whole], 2);
        add_plain(e, res[whole] + 1, 1, (int[]){100}, (int[]){3});
        while (folo_engine_has_unfinished(e)) step_and_record(e, res[whole], 2);
        int largest = 0;
        for (int i = 1; i <= sizes[0]; i++) largest = sizes[i] > largest ? sizes[i] : largest;
        CHECK_MSG(largest == (whole ? 101 : 16), "whole %d: largest step %d tokens", whole,
                  largest);
        folo_engine_destroy(e);
    }
    for (int r = 0; r < 2; r++) {
        CHECK(res[1][r].n_tokens[0] == res[0][r].n_tokens[0]);
        CHECK(memcmp(res[0][r].tokens[0], res[1][r].tokens[0],
                     (size_t)res[0][r].n_tokens[0] * sizeof(int32_t)) == 0);
    }
    for (int k = 0; k < 2; k++) results_free(res[k], 2);
}

/* max_queue: 8 threads add 10 requests each at once to an engine that does
 * not step, so every accepted request waits: exactly max_queue are
 * accepted, every other add fails with FOLO_ERR_QUEUE_FULL (an exact count,
 * not a racy check before the add). Once a step admits them the queue has
 * room again. */
#define QUEUE_THREADS 8
#define QUEUE_ADDS 10
typedef struct queue_adder {
    folo_engine *e;
    pthread_barrier_t *start;
    int n_added, n_full, n_other;
    folo_error last_full;
} queue_adder;

static void *add_many(void *arg) {
    queue_adder *a = arg;
    folo_request_params p = folo_request_params_default();
    p.max_tokens = 2;
    int32_t prompt[3] = {1000, 1001, 1002};
    pthread_barrier_wait(a->start);
    for (int i = 0; i < QUEUE_ADDS; i++) {
        uint64_t id;
        folo_error err = {{0}};
        int rc = folo_engine_add_tokens(a->e, prompt, 3, &p, &id, &err);
        if (rc == 0) {
            a->n_added++;
        } else if (rc == FOLO_ERR_QUEUE_FULL) {
            a->n_full++;
            a->last_full = err;
        } else {
            a->n_other++;
        }
    }
    return NULL;
}

static void test_queue_limit(void) {
    folo_engine_options opt = {.model_dir = g_model_dir, .device = "cpu", .n_threads = 1,
                               .kv_memory_bytes = 64 * 16 * KV_BYTES_PER_TOKEN, .max_queue = 5};
    folo_error err = {{0}};
    folo_engine *e = folo_engine_create(&opt, &err);
    CHECK_MSG(e != NULL, "%s", err.message);
    if (!e) return;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, QUEUE_THREADS);
    pthread_t threads[QUEUE_THREADS];
    queue_adder adders[QUEUE_THREADS];
    for (int t = 0; t < QUEUE_THREADS; t++) {
        adders[t] = (queue_adder){.e = e, .start = &start};
        pthread_create(&threads[t], NULL, add_many, &adders[t]);
    }
    int added = 0, full = 0, other = 0;
    for (int t = 0; t < QUEUE_THREADS; t++) {
        pthread_join(threads[t], NULL);
        added += adders[t].n_added;
        full += adders[t].n_full;
        other += adders[t].n_other;
    }
    pthread_barrier_destroy(&start);
    CHECK_MSG(added == 5 && full == QUEUE_THREADS * QUEUE_ADDS - 5 && other == 0,
              "%d added, %d refused as full, %d failed otherwise", added, full, other);
    CHECK_MSG(strstr(adders[0].last_full.message, "max_queue") != NULL, "%s",
              adders[0].last_full.message);
    folo_engine_stats st;
    folo_engine_get_stats(e, &st);
    CHECK(st.n_waiting == 5);
    const folo_output *outs;
    int n_outs;
    CHECK(folo_engine_step(e, &outs, &n_outs, &err) == 0);
    folo_engine_get_stats(e, &st);
    CHECK_MSG(st.n_waiting == 0 && st.n_running == 5, "%d waiting, %d running", st.n_waiting,
              st.n_running);
    queue_adder more = {.e = e};
    pthread_barrier_t one;
    pthread_barrier_init(&one, NULL, 1);
    more.start = &one;
    add_many(&more);
    pthread_barrier_destroy(&one);
    CHECK(more.n_added == 5 && more.n_full == QUEUE_ADDS - 5);
    while (folo_engine_has_unfinished(e)) CHECK(folo_engine_step(e, &outs, &n_outs, &err) == 0);
    folo_engine_destroy(e);
}

/* Text goes out whole tokens at a time beside their logprobs: with a stop
 * string that never completes but whose first byte recurs in the text,
 * text is held back; every output's text is still exactly the text of the
 * tokens whose logprobs it lists, and the whole text is that of the run
 * without stop strings. A stop string that fires cuts the text before it,
 * and the last output lists every remaining token. */
static void collect_aligned(folo_engine *e, req_result *res, int *n_multi, int *n_misaligned) {
    while (folo_engine_has_unfinished(e)) {
        const folo_output *outs;
        int n_outs;
        folo_error err = {{0}};
        CHECK(folo_engine_step(e, &outs, &n_outs, &err) == 0);
        for (int i = 0; i < n_outs; i++) {
            const folo_output *o = &outs[i];
            record(res, 1, o);
            if (o->n_logprobs > 1) (*n_multi)++;
            if (o->finish_reason != FOLO_FINISH_NONE) continue;
            CHECK((o->text_len > 0) == (o->n_logprobs > 0));
            int32_t ids[MAX_OUT];
            for (int k = 0; k < o->n_logprobs; k++) ids[k] = o->logprobs[k].token;
            char *want = folo_engine_detokenize(e, ids, o->n_logprobs, true);
            if (strcmp(want, o->text) != 0) (*n_misaligned)++;
            free(want);
        }
    }
}

static void test_text_aligned_with_logprobs(void) {
    engine_config c = {"aligned", 512, 16, 64, 8, .no_prefix_cache = false};
    folo_engine *e = make_engine(&c);
    if (!e) return;
    folo_request_params p = folo_request_params_default();
    p.max_tokens = MAX_OUT;
    p.ignore_eos = true;
    p.sampling.logprobs = 1;
    req_result plain, held, cut;
    memset(&plain, 0, sizeof plain);
    memset(&held, 0, sizeof held);
    memset(&cut, 0, sizeof cut);
    folo_error err = {{0}};
    int n_multi = 0, n_misaligned = 0;
    CHECK(folo_engine_add_text(e, "Once upon a time", &p, &plain.id, &err) == 0);
    plain.added = true;
    collect_aligned(e, &plain, &n_multi, &n_misaligned);
    const char *full = folo_buf_str(&plain.text[0]);
    size_t len = strlen(full);
    CHECK(len > 8 && n_misaligned == 0);
    /* The most frequent byte of the text, then a byte never generated. */
    int counts[256] = {0}, best = 0;
    for (size_t i = 0; i < len; i++) counts[(unsigned char)full[i]]++;
    for (int b = 1; b < 256; b++) best = counts[b] > counts[best] ? b : best;
    char never[3] = {(char)best, '\x01', 0};
    const char *stops[] = {never};
    p.stop = stops;
    p.n_stop = 1;
    CHECK(folo_engine_add_text(e, "Once upon a time", &p, &held.id, &err) == 0);
    held.added = true;
    n_multi = 0;
    collect_aligned(e, &held, &n_multi, &n_misaligned);
    CHECK_STR(folo_buf_str(&held.text[0]), full);
    CHECK_MSG(n_misaligned == 0, "%d outputs' text is not their tokens' text", n_misaligned);
    CHECK_MSG(n_multi > 0, "no text was held back (most frequent byte 0x%02x)", best);
    CHECK(held.n_lps[0] == MAX_OUT);
    for (int i = 0; i < held.n_lps[0]; i++) CHECK(held.lps[0][i].token == plain.tokens[0][i]);

    char stop[4] = {0};
    memcpy(stop, full + len / 2, 3);
    stops[0] = stop;
    CHECK(folo_engine_add_text(e, "Once upon a time", &p, &cut.id, &err) == 0);
    cut.added = true;
    collect_aligned(e, &cut, &n_multi, &n_misaligned);
    size_t at = (size_t)(strstr(full, stop) - full);
    CHECK(strlen(folo_buf_str(&cut.text[0])) == at);
    CHECK(cut.finish[0] == FOLO_FINISH_STOP && cut.n_lps[0] == cut.n_tokens[0]);
    CHECK(n_misaligned == 0);
    results_free(&plain, 1);
    results_free(&held, 1);
    results_free(&cut, 1);
    folo_engine_destroy(e);
}

static int make_untied_model(void) {
    snprintf(g_model_dir, sizeof g_model_dir, "/tmp/folo-test-engine-XXXXXX");
    if (!mkdtemp(g_model_dir)) return -1;
    const char *tok_dir = getenv("FOLO_TOKENIZER_DIR");
    folo_make_model_opts o = {
        .preset = "tiny",
        .dtype = FOLO_DTYPE_F32,
        .seed = 11,
        .n_shards = 1,
        .untied = true,
        .tokenizer_dir = tok_dir ? tok_dir : "models/qwen3-tokenizer",
        .out_dir = g_model_dir,
        .n_threads = 2,
    };
    folo_error err = {{0}};
    if (folo_make_model(&o, &err) != 0) {
        fprintf(stderr, "make model: %s\n", err.message);
        return -1;
    }
    return 0;
}

int main(void) {
    folo_log_set_level(FOLO_LOG_WARN);
    if (make_untied_model() != 0) return 1;
    test_batch_invariance();
    test_abort_frees();
    test_prefix_hits();
    test_stop_string();
    test_engine_thread();
    test_rejections();
    test_static_engine();
    test_contiguous_engine();
    test_naive_budget();
    test_no_chunk_engine();
    test_queue_limit();
    test_text_aligned_with_logprobs();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_model_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_model_dir);
    return check_summary("test_engine");
}
