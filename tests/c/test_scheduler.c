/* The scheduler with no model: a driver plays the engine (schedule, "run",
 * update, append a token to every sequence that got logits, finish those at
 * their length) and checks after every step the plan's limits and the
 * queues' and block pool's invariants (folo_sched_check). Covered: chunked
 * prefill within the budget, decodes never stalled by a long prefill,
 * preemption of the latest arrival with recompute, refusal of requests that
 * can never fit, prefix-cache hits at admission, forks sharing blocks with
 * copy-on-write; and the switches of docs/switches.md: static batching
 * admits nothing while a batch runs, contiguous KV reserves a sequence's
 * whole length at admission (so fewer sequences fit), no chunked prefill
 * never splits a prefill; prompt rows (prompt logprobs) within their own
 * budget and never served from the prefix cache. The tokens the held
 * blocks store (folo_sched_kv_tokens_stored) count a shared block once. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sched/scheduler.h"

typedef struct harness {
    folo_kv_pool *pool;
    folo_scheduler *s;
    folo_sched_options opt;
    int n_finished;
} harness;

static void harness_init(harness *h, int n_blocks, int block_size, int budget, int max_seqs,
                         bool prefix_caching) {
    memset(h, 0, sizeof *h);
    h->pool = folo_kv_pool_create(n_blocks, block_size, prefix_caching);
    h->opt = (folo_sched_options){
        .max_num_batched_tokens = budget, .max_num_seqs = max_seqs, .max_model_len = 1000,
        .max_prompt_rows = 16};
    folo_error err = {{0}};
    h->s = folo_sched_create(&h->opt, h->pool, &err);
    CHECK_MSG(h->s != NULL, "%s", err.message);
}

/* Recreates h's scheduler with the given switches. */
static void harness_switches(harness *h, bool static_batching, bool contiguous_kv,
                             bool no_chunked_prefill) {
    folo_sched_free(h->s);
    h->opt.static_batching = static_batching;
    h->opt.contiguous_kv = contiguous_kv;
    h->opt.no_chunked_prefill = no_chunked_prefill;
    folo_error err = {{0}};
    h->s = folo_sched_create(&h->opt, h->pool, &err);
    CHECK_MSG(h->s != NULL, "%s", err.message);
}

static void harness_free(harness *h) {
    folo_sched_free(h->s);
    folo_kv_pool_free(h->pool);
}

static void seq_make(folo_sched_seq *seq, int n_prompt, int max_tokens, int32_t base) {
    int32_t *ids = malloc((size_t)n_prompt * sizeof *ids);
    for (int i = 0; i < n_prompt; i++) ids[i] = base + i;
    folo_error err = {{0}};
    CHECK_MSG(folo_sched_seq_init(seq, ids, n_prompt, max_tokens, 1, &err) == 0, "%s", err.message);
    free(ids);
}

static void add(harness *h, folo_sched_seq *seq) {
    folo_error err = {{0}};
    CHECK_MSG(folo_sched_add(h->s, seq, &err) == 0, "%s", err.message);
}

/* One step; returns the plan (valid until the next step). */
static const folo_sched_plan *step(harness *h) {
    const folo_sched_plan *p = folo_sched_schedule(h->s);
    CHECK(p->n_tokens <= h->opt.max_num_batched_tokens +
                             (h->opt.no_chunked_prefill ? h->opt.max_model_len : 0));
    CHECK(p->n_entries <= h->opt.max_num_seqs);
    int sum = 0;
    for (int i = 0; i < p->n_entries; i++) {
        const folo_sched_entry *e = &p->entries[i];
        CHECK(e->n_tokens >= 1);
        CHECK(e->start == e->seq->n_computed);
        CHECK(e->wants_logits == (e->start + e->n_tokens == e->seq->n_tokens));
        CHECK(e->seq->state == FOLO_SEQ_RUNNING);
        sum += e->n_tokens;
    }
    CHECK(sum == p->n_tokens);
    /* Prompt rows: within the step's row budget, each entry's rows the
     * positions of its chunk that its sequence still wants scored. */
    int rows = 0;
    for (int i = 0; i < p->n_entries; i++) {
        const folo_sched_entry *e = &p->entries[i];
        const folo_sched_seq *seq = e->seq;
        int lo = e->start > seq->prompt_rows_from ? e->start : seq->prompt_rows_from;
        int hi = e->start + e->n_tokens < seq->n_prompt - 1 ? e->start + e->n_tokens
                                                           : seq->n_prompt - 1;
        CHECK(e->n_prompt_rows == (hi > lo ? hi - lo : 0));
        CHECK(e->n_prompt_rows == 0 || e->prompt_row_start == lo);
        rows += e->n_prompt_rows;
    }
    CHECK(rows == p->n_prompt_rows && rows <= h->opt.max_prompt_rows);
    folo_sched_update(h->s, p);
    for (int i = 0; i < p->n_entries; i++) {
        folo_sched_seq *seq = p->entries[i].seq;
        if (!p->entries[i].wants_logits) continue;
        /* A token that depends on the position only, as greedy decoding
         * would be independent of the batch. */
        folo_sched_seq_append(seq, 5000 + seq->n_tokens);
        if (seq->n_tokens == seq->cap_tokens) {
            folo_sched_finish(h->s, seq);
            h->n_finished++;
        }
    }
    folo_error err = {{0}};
    CHECK_MSG(folo_sched_check(h->s, &err) == 0, "%s", err.message);
    return p;
}

static const folo_sched_entry *entry_of(const folo_sched_plan *p, const folo_sched_seq *seq) {
    for (int i = 0; i < p->n_entries; i++)
        if (p->entries[i].seq == seq) return &p->entries[i];
    return NULL;
}

static void test_chunked_prefill(void) {
    harness h;
    harness_init(&h, 64, 4, 8, 4, false);
    folo_sched_seq a;
    seq_make(&a, 30, 3, 100);
    add(&h, &a);
    int chunks[] = {8, 8, 8, 6, 1, 1};
    for (int i = 0; i < 6; i++) {
        const folo_sched_plan *p = step(&h);
        CHECK(p->n_entries == 1);
        CHECK_MSG(p->n_entries == 1 && p->entries[0].n_tokens == chunks[i], "step %d: %d tokens",
                  i, p->n_entries ? p->entries[0].n_tokens : 0);
    }
    CHECK(a.state == FOLO_SEQ_FINISHED && a.n_tokens == 33);
    CHECK(step(&h)->n_entries == 0);
    folo_kv_stats st;
    folo_kv_stats_get(h.pool, &st);
    CHECK(st.n_used == 0);
    folo_sched_seq_free(&a);
    harness_free(&h);
}

static void test_decodes_during_long_prefill(void) {
    harness h;
    harness_init(&h, 128, 4, 8, 4, false);
    folo_sched_seq a, b;
    seq_make(&a, 3, 60, 100);
    seq_make(&b, 100, 2, 200);
    add(&h, &a);
    step(&h); /* a's prompt; a decodes from now on */
    add(&h, &b);
    int b_steps = 0;
    while (b.n_computed < b.n_prompt) {
        const folo_sched_plan *p = step(&h);
        const folo_sched_entry *ea = entry_of(p, &a), *eb = entry_of(p, &b);
        CHECK(ea && ea->n_tokens == 1);
        CHECK(eb && eb->n_tokens <= 7);
        b_steps++;
    }
    CHECK_MSG(b_steps == 15, "b prefilled in %d steps", b_steps); /* ceil(100 / 7) */
    while (a.state != FOLO_SEQ_FINISHED || b.state != FOLO_SEQ_FINISHED) step(&h);
    folo_sched_seq_free(&a);
    folo_sched_seq_free(&b);
    harness_free(&h);
}

static void test_preemption_picks_latest(void) {
    /* 10 blocks of 4 tokens; four sequences of 7 prompt + 12 outputs (5
     * blocks each): they cannot all grow, so the latest arrivals yield. */
    harness h;
    harness_init(&h, 10, 4, 64, 8, true);
    folo_sched_seq seqs[4];
    for (int i = 0; i < 4; i++) {
        seq_make(&seqs[i], 7, 12, 1000 * (i + 1));
        add(&h, &seqs[i]);
    }
    int preemptions = 0, steps = 0;
    while (h.n_finished < 4 && steps < 500) {
        int was_running[4];
        for (int i = 0; i < 4; i++) was_running[i] = seqs[i].state == FOLO_SEQ_RUNNING;
        int before[4];
        for (int i = 0; i < 4; i++) before[i] = seqs[i].n_preemptions;
        const folo_sched_plan *p = step(&h);
        steps++;
        for (int i = 0; i < 4; i++) {
            if (seqs[i].n_preemptions == before[i]) continue;
            preemptions++;
            CHECK(was_running[i]);
            CHECK(seqs[i].state == FOLO_SEQ_WAITING && seqs[i].n_computed == 0);
            /* Every sequence still running arrived before the victim. */
            for (int j = 0; j < 4; j++)
                if (seqs[j].state == FOLO_SEQ_RUNNING) CHECK(seqs[j].arrival < seqs[i].arrival);
        }
        (void)p;
    }
    CHECK(h.n_finished == 4);
    CHECK(preemptions > 0);
    CHECK(folo_sched_n_preemptions(h.s) == preemptions);
    /* Whatever the preemptions, each sequence's tokens are its own chain. */
    for (int i = 0; i < 4; i++)
        for (int t = 7; t < 19; t++) CHECK(seqs[i].tokens[t] == 5000 + t);
    folo_kv_stats st;
    folo_kv_stats_get(h.pool, &st);
    CHECK(st.n_used == 0);
    for (int i = 0; i < 4; i++) folo_sched_seq_free(&seqs[i]);
    harness_free(&h);
}

static void test_rejects_impossible(void) {
    harness h;
    harness_init(&h, 8, 4, 16, 2, true);
    folo_error err = {{0}};
    folo_sched_seq big, longer, wide, fits;
    seq_make(&big, 20, 13, 1);     /* 33 tokens: 9 blocks of a pool of 8 */
    CHECK(folo_sched_add(h.s, &big, &err) != 0);
    CHECK_MSG(strstr(err.message, "KV blocks") != NULL, "%s", err.message);
    h.opt.max_model_len = 1000;
    seq_make(&longer, 10, 995, 1); /* beyond the context of 1000 */
    CHECK(folo_sched_add(h.s, &longer, &err) != 0);
    CHECK_MSG(strstr(err.message, "context") != NULL, "%s", err.message);
    CHECK(folo_sched_seq_init(&wide, (int32_t[]){1, 2}, 2, 4, 3, &err) == 0);
    CHECK(folo_sched_add(h.s, &wide, &err) != 0); /* 3 samples, 2 seats */
    CHECK_MSG(strstr(err.message, "max_num_seqs") != NULL, "%s", err.message);
    CHECK(folo_sched_seq_init(&fits, NULL, 0, 4, 1, &err) != 0);
    seq_make(&fits, 20, 12, 1);    /* exactly 8 blocks */
    add(&h, &fits);
    while (fits.state != FOLO_SEQ_FINISHED) step(&h);
    folo_sched_seq_free(&big);
    folo_sched_seq_free(&longer);
    folo_sched_seq_free(&wide);
    folo_sched_seq_free(&fits);
    harness_free(&h);
}

static void test_prefix_hit_and_fork(void) {
    harness h;
    harness_init(&h, 32, 4, 64, 4, true);
    folo_sched_seq a, b, child;
    seq_make(&a, 12, 2, 300);
    add(&h, &a);
    step(&h);
    /* b's prompt is a's first 10 tokens: it ends inside a block. */
    int32_t ids[10];
    for (int i = 0; i < 10; i++) ids[i] = 300 + i;
    folo_error err = {{0}};
    CHECK(folo_sched_seq_init(&b, ids, 10, 2, 2, &err) == 0);
    add(&h, &b);
    const folo_sched_plan *p = step(&h);
    const folo_sched_entry *eb = entry_of(p, &b);
    /* 10 tokens, at most 9 from the cache: two blocks of 4. */
    CHECK(b.n_cached_tokens == 8);
    CHECK(eb && eb->start == 8 && eb->n_tokens == 2);
    folo_kv_stats st;
    folo_kv_stats_get(h.pool, &st);
    CHECK(st.hit_tokens == 8);
    /* a finished in that step (12 + 2 tokens): b's 10 computed tokens are
     * all the blocks store, two of its blocks the cached ones of a. */
    CHECK_MSG(folo_sched_kv_tokens_stored(h.s) == 10, "%lld stored",
              (long long)folo_sched_kv_tokens_stored(h.s));
    /* b computed its prompt: fork its second sample before either appends
     * (the driver's token is taken back). The partial block that receives
     * the next tokens is shared, so the first write copies it. */
    b.n_tokens = 10;
    child.user = &child;
    folo_sched_fork(h.s, &b, &child, 1);
    CHECK(child.user == &child && child.n_computed == b.n_computed && b.n_seats == 1);
    /* The fork shares all three blocks: their tokens count once. */
    CHECK(folo_sched_kv_tokens_stored(h.s) == 10);
    folo_sched_seq_append(&b, 7);
    folo_sched_seq_append(&child, 8);
    CHECK_MSG(folo_sched_check(h.s, &err) == 0, "%s", err.message);
    p = folo_sched_schedule(h.s);
    CHECK(p->n_entries == 2);
    CHECK_MSG(p->n_copies == 1, "%d copies", p->n_copies);
    for (int i = 0; i < p->n_copies; i++) CHECK(p->copies[i].src != p->copies[i].dst);
    folo_sched_update(h.s, p);
    CHECK(b.kv.blocks[2] != child.kv.blocks[2]);
    CHECK(b.kv.blocks[0] == child.kv.blocks[0]);
    /* Two shared full blocks (8 tokens), then 3 tokens in each private copy. */
    CHECK(folo_sched_kv_tokens_stored(h.s) == 8 + 3 + 3);
    CHECK_MSG(folo_sched_check(h.s, &err) == 0, "%s", err.message);
    folo_sched_finish(h.s, &a);
    folo_sched_finish(h.s, &b);
    folo_sched_finish(h.s, &child);
    folo_kv_stats_get(h.pool, &st);
    CHECK(st.n_used == 0);
    folo_sched_seq_free(&a);
    folo_sched_seq_free(&b);
    folo_sched_seq_free(&child);
    harness_free(&h);
}

/* Static batching: the first batch is whatever seats and blocks allow,
 * whatever the budget (its prefill is paced by the budget); nothing joins
 * until every member has finished, however early some finish. */
static void test_static_batching(void) {
    harness h;
    harness_init(&h, 64, 4, 8, 3, false);
    harness_switches(&h, true, false, false);
    folo_sched_seq seqs[5];
    int max_tokens[5] = {2, 9, 4, 3, 1};
    for (int i = 0; i < 5; i++) {
        seq_make(&seqs[i], 6, max_tokens[i], 100 * (i + 1));
        add(&h, &seqs[i]);
    }
    const folo_sched_plan *p = step(&h);
    /* Three seats: a's whole prompt and b's first 2 tokens fit the budget of
     * 8; c is admitted with no tokens yet, its prompt's blocks reserved. */
    CHECK(p->n_entries == 2 && p->n_tokens == 8);
    for (int i = 0; i < 3; i++) CHECK(seqs[i].state == FOLO_SEQ_RUNNING);
    CHECK(seqs[2].n_computed == 0 && seqs[2].kv.n_blocks == 2);
    CHECK(seqs[3].state == FOLO_SEQ_WAITING && seqs[4].state == FOLO_SEQ_WAITING);
    int steps = 1, batch_end = -1;
    while (h.n_finished < 5 && steps < 100) {
        bool first_batch_running = false;
        for (int i = 0; i < 3; i++) first_batch_running |= seqs[i].state == FOLO_SEQ_RUNNING;
        if (!first_batch_running && batch_end < 0) batch_end = steps;
        /* Nothing joins while a member of the first batch runs. */
        for (int i = 3; i < 5; i++)
            CHECK_MSG(!first_batch_running || seqs[i].state == FOLO_SEQ_WAITING,
                      "step %d: sequence %d admitted while the batch runs", steps, i);
        step(&h);
        steps++;
    }
    CHECK(h.n_finished == 5);
    /* b (9 outputs) bounds the first batch; d and e then run together. */
    CHECK_MSG(batch_end == 10, "first batch ended after %d steps", batch_end);
    CHECK_MSG(steps == batch_end + 3, "%d steps", steps);
    for (int i = 0; i < 5; i++) folo_sched_seq_free(&seqs[i]);
    harness_free(&h);
}

/* Contiguous KV: admission reserves ceil((prompt + max_tokens) / block)
 * blocks, so in the pool that holds all five paged sequences' prompts only
 * three fit at once; they then run without ever needing a block, so without
 * preemption. */
static void test_contiguous_kv(void) {
    for (int contiguous = 0; contiguous < 2; contiguous++) {
        harness h;
        harness_init(&h, 16, 4, 64, 8, false);
        harness_switches(&h, false, contiguous, false);
        folo_sched_seq seqs[5];
        for (int i = 0; i < 5; i++) {
            seq_make(&seqs[i], 5, 14, 100 * (i + 1)); /* 19 tokens: 5 blocks */
            add(&h, &seqs[i]);
        }
        step(&h);
        int running = 0;
        for (int i = 0; i < 5; i++) {
            if (seqs[i].state != FOLO_SEQ_RUNNING) continue;
            running++;
            int want = contiguous ? 5 : 2; /* ceil(19 / 4), or the prompt's ceil(5 / 4) */
            CHECK_MSG(seqs[i].kv.n_blocks == want, "contiguous %d: sequence %d holds %d blocks",
                      contiguous, i, seqs[i].kv.n_blocks);
        }
        CHECK_MSG(running == (contiguous ? 3 : 5), "contiguous %d: %d running", contiguous,
                  running);
        /* Every running prompt is computed: 5 tokens each, in 5 reserved
         * blocks (a quarter of their 20 slots) or in 2 paged ones. */
        folo_kv_stats st;
        folo_kv_stats_get(h.pool, &st);
        CHECK(folo_sched_kv_tokens_stored(h.s) == 5 * running);
        CHECK(st.n_used == running * (contiguous ? 5 : 2));
        int max_running = running;
        while (h.n_finished < 5) {
            step(&h);
            int n = folo_sched_n_running(h.s);
            if (n > max_running) max_running = n;
            if (contiguous)
                for (int i = 0; i < 5; i++)
                    if (seqs[i].state == FOLO_SEQ_RUNNING) CHECK(seqs[i].kv.n_blocks == 5);
        }
        CHECK(max_running == (contiguous ? 3 : 5));
        if (contiguous) CHECK(folo_sched_n_preemptions(h.s) == 0);
        else CHECK(folo_sched_n_preemptions(h.s) > 0); /* 5 x 5 blocks > 16 */
        for (int i = 0; i < 5; i++)
            for (int t = 5; t < 19; t++) CHECK(seqs[i].tokens[t] == 5000 + t);
        for (int i = 0; i < 5; i++) folo_sched_seq_free(&seqs[i]);
        harness_free(&h);
    }
}

/* No chunked prefill: every plan entry reaches its sequence's last token;
 * a prompt longer than the budget runs whole as the step's first prefill,
 * beside the decodes, and the next prompt waits for a step with room. */
static void test_no_chunked_prefill(void) {
    harness h;
    harness_init(&h, 128, 4, 8, 4, false);
    harness_switches(&h, false, false, true);
    folo_sched_seq a, b, c;
    seq_make(&a, 3, 20, 100);
    seq_make(&b, 30, 2, 200);
    seq_make(&c, 5, 2, 300);
    add(&h, &a);
    step(&h); /* a's prompt; a decodes from now on */
    add(&h, &b);
    add(&h, &c);
    const folo_sched_plan *p = step(&h);
    const folo_sched_entry *ea = entry_of(p, &a), *eb = entry_of(p, &b);
    CHECK(ea && ea->n_tokens == 1);
    CHECK(eb && eb->start == 0 && eb->n_tokens == 30);
    CHECK(entry_of(p, &c) == NULL && c.state == FOLO_SEQ_WAITING);
    CHECK(p->n_tokens == 31);
    p = step(&h);
    const folo_sched_entry *ec = entry_of(p, &c);
    CHECK(ec && ec->start == 0 && ec->n_tokens == 5);
    while (h.n_finished < 3) {
        p = step(&h);
        for (int i = 0; i < p->n_entries; i++) CHECK(p->entries[i].wants_logits);
    }
    folo_sched_seq_free(&a);
    folo_sched_seq_free(&b);
    folo_sched_seq_free(&c);
    harness_free(&h);
}

/* Prompt rows (prompt logprobs): a sequence scoring its prompt takes no
 * cached blocks and is not even looked up (as vLLM), its chunks are cut to
 * the step's row budget (16 here) shared with another scorer, and every
 * prompt position but the last gets its row exactly once, across a
 * preemption too; after it, the positions already scored may come from
 * the cache. With no_chunked_prefill a prefill whose rows do not fit waits. */
static void test_prompt_rows(void) {
    harness h;
    harness_init(&h, 64, 4, 64, 4, true);
    folo_sched_seq a, b, c;
    seq_make(&a, 40, 1, 100);
    add(&h, &a);
    while (h.n_finished < 1) step(&h); /* a's blocks are now cached */
    folo_kv_stats st0, st;
    folo_kv_stats_get(h.pool, &st0);
    seq_make(&b, 40, 1, 100); /* the same prompt, scored */
    seq_make(&c, 20, 1, 500); /* another scorer */
    b.prompt_rows_from = c.prompt_rows_from = 0;
    add(&h, &b);
    add(&h, &c);
    int b_rows = 0, c_rows = 0, steps = 0;
    while (h.n_finished < 3) {
        const folo_sched_plan *p = step(&h);
        const folo_sched_entry *eb = entry_of(p, &b), *ec = entry_of(p, &c);
        if (eb) b_rows += eb->n_prompt_rows;
        if (ec) c_rows += ec->n_prompt_rows;
        if (steps == 0) {
            CHECK(b.n_cached_tokens == 0);
            CHECK_MSG(eb && eb->n_tokens == 16 && eb->n_prompt_rows == 16 && !ec,
                      "b: %d tokens, %d rows; c planned: %d", eb ? eb->n_tokens : 0,
                      eb ? eb->n_prompt_rows : 0, ec != NULL);
        }
        steps++;
    }
    CHECK_MSG(b_rows == 39 && c_rows == 19, "rows: b %d, c %d", b_rows, c_rows);
    folo_kv_stats_get(h.pool, &st);
    CHECK(st.hit_tokens == st0.hit_tokens);
    CHECK_MSG(st.queried_tokens == st0.queried_tokens, "queried %lld, then %lld",
              (long long)st0.queried_tokens, (long long)st.queried_tokens);
    CHECK(b.prompt_rows_from == 39 && c.prompt_rows_from == 19);
    folo_sched_seq_free(&a);
    folo_sched_seq_free(&b);
    folo_sched_seq_free(&c);

    /* Preempted after two chunks (rows 0..31 scored): its recompute may
     * take 32 tokens (8 blocks) from the cache, and scores 32..38 only. */
    seq_make(&a, 40, 1, 100);
    a.prompt_rows_from = 0;
    add(&h, &a);
    step(&h);
    step(&h);
    CHECK(a.prompt_rows_from == 32 && a.n_computed == 32);
    folo_sched_finish(h.s, &a); /* stands for a preemption: blocks released, recomputed */
    folo_sched_seq a2;
    seq_make(&a2, 40, 1, 100);
    a2.prompt_rows_from = 32;
    add(&h, &a2);
    const folo_sched_plan *p = step(&h);
    const folo_sched_entry *e = entry_of(p, &a2);
    CHECK_MSG(a2.n_cached_tokens == 32, "%d cached", a2.n_cached_tokens);
    CHECK(e && e->start == 32 && e->prompt_row_start == 32 && e->n_prompt_rows == 7);
    while (h.n_finished < 4) step(&h);
    folo_sched_seq_free(&a);
    folo_sched_seq_free(&a2);

    /* Without chunking: 10 rows fit the budget of 16 with a 12-row prompt
     * waiting for the next step. */
    harness_switches(&h, false, false, true);
    seq_make(&b, 11, 1, 700);
    seq_make(&c, 13, 1, 900);
    b.prompt_rows_from = c.prompt_rows_from = 0;
    add(&h, &b);
    add(&h, &c);
    p = step(&h);
    CHECK(entry_of(p, &b) && entry_of(p, &b)->n_prompt_rows == 10 && !entry_of(p, &c));
    p = step(&h);
    CHECK(entry_of(p, &c) && entry_of(p, &c)->n_prompt_rows == 12);
    while (h.n_finished < 6) step(&h);
    folo_sched_seq_free(&b);
    folo_sched_seq_free(&c);
    harness_free(&h);
}

int main(void) {
    test_chunked_prefill();
    test_decodes_during_long_prefill();
    test_preemption_picks_latest();
    test_rejects_impossible();
    test_prefix_hit_and_fork();
    test_static_batching();
    test_contiguous_kv();
    test_no_chunked_prefill();
    test_prompt_rows();
    return check_summary("test_scheduler");
}
