/* The scheduler with no model: a driver plays the engine (schedule, "run",
 * update, append a token to every sequence that got logits, finish those at
 * their length) and checks after every step the plan's limits and the
 * queues' and block pool's invariants (folo_sched_check). Covered: chunked
 * prefill within the budget, decodes never stalled by a long prefill,
 * preemption of the latest arrival with recompute, refusal of requests that
 * can never fit, prefix-cache hits at admission, forks sharing blocks with
 * copy-on-write. */
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
        .max_num_batched_tokens = budget, .max_num_seqs = max_seqs, .max_model_len = 1000};
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
    CHECK(p->n_tokens <= h->opt.max_num_batched_tokens);
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
    /* b computed its prompt: fork its second sample before either appends
     * (the driver's token is taken back). The partial block that receives
     * the next tokens is shared, so the first write copies it. */
    b.n_tokens = 10;
    child.user = &child;
    folo_sched_fork(h.s, &b, &child, 1);
    CHECK(child.user == &child && child.n_computed == b.n_computed && b.n_seats == 1);
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

int main(void) {
    test_chunked_prefill();
    test_decodes_during_long_prefill();
    test_preemption_picks_latest();
    test_rejects_impossible();
    test_prefix_hit_and_fork();
    return check_summary("test_scheduler");
}
