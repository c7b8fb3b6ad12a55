/* The scheduler: queues, the step plan, admission and preemption. The
 * policy is described in scheduler.h; this file keeps two invariants while
 * it plans: running stays sorted by (arrival, sample), so the victim of a
 * preemption is always running's last element, and every sequence's
 * plan_index names its entry in the current plan (or is -1), so a
 * preempted sequence's entry can be withdrawn and its tokens returned to
 * the budget. */
#include "sched/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

struct folo_scheduler {
    folo_sched_options opt;
    folo_kv_pool *pool;            /* borrowed */
    int block_size;                /* tokens per block */
    int n_blocks;                  /* blocks in the pool */
    folo_sched_seq **waiting;      /* [n_waiting], index 0 is the front */
    int n_waiting, cap_waiting;
    folo_sched_seq **running;      /* [n_running], sorted by (arrival, sample) */
    int n_running;
    int running_seats;             /* sum of n_seats over running <= max_num_seqs */
    folo_sched_plan plan;          /* entries [max_num_seqs], copies [max_num_seqs + 1] */
    int budget;                    /* tokens left while planning (< 0 once a whole prefill
                                      overran it, no_chunked_prefill) */
    int rows_left;                 /* prompt rows left while planning */
    bool grown;                    /* this step planned a prefill beyond the budget left */
    uint64_t next_arrival;
    int64_t n_preemptions;
    uint8_t *block_seen;           /* [n_blocks] folo_sched_kv_tokens_stored's marks, all 0
                                      between calls */
};

/* ---- sequences ----------------------------------------------------------- */

int folo_sched_seq_init(folo_sched_seq *seq, const int32_t *prompt, int n_prompt, int max_tokens,
                        int n_seats, folo_error *err) {
    memset(seq, 0, sizeof *seq);
    if (n_prompt < 1 || !prompt) return folo_fail(err, "prompt: empty (need at least one token)");
    if (max_tokens < 1)
        return folo_fail(err, "max_tokens: must be at least 1 (got %d)", max_tokens);
    if (n_seats < 1) return folo_fail(err, "n: must be at least 1 (got %d)", n_seats);
    if ((int64_t)n_prompt + max_tokens > INT32_MAX / 2)
        return folo_fail(err, "max_tokens: %d tokens after a %d-token prompt overflow", max_tokens,
                         n_prompt);
    seq->cap_tokens = n_prompt + max_tokens;
    seq->tokens = folo_calloc((size_t)seq->cap_tokens, sizeof(int32_t));
    memcpy(seq->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    seq->n_tokens = seq->n_prompt = n_prompt;
    seq->n_seats = n_seats;
    seq->plan_index = -1;
    seq->prompt_rows_from = n_prompt - 1;
    folo_kv_seq_init(&seq->kv);
    return 0;
}

void folo_sched_seq_free(folo_sched_seq *seq) {
    free(seq->tokens);
    seq->tokens = NULL;
    folo_kv_seq_free(&seq->kv);
}

void folo_sched_seq_append(folo_sched_seq *seq, int32_t token) {
    FOLO_ASSERT(seq->n_tokens < seq->cap_tokens);
    seq->tokens[seq->n_tokens++] = token;
}

/* ---- queues -------------------------------------------------------------- */

static bool runs_before(const folo_sched_seq *a, const folo_sched_seq *b) {
    return a->arrival < b->arrival || (a->arrival == b->arrival && a->sample < b->sample);
}

static void running_insert(folo_scheduler *s, folo_sched_seq *seq) {
    int i = s->n_running;
    while (i > 0 && runs_before(seq, s->running[i - 1])) i--;
    memmove(s->running + i + 1, s->running + i, (size_t)(s->n_running - i) * sizeof *s->running);
    s->running[i] = seq;
    s->n_running++;
    s->running_seats += seq->n_seats;
    seq->state = FOLO_SEQ_RUNNING;
}

static void queue_remove(folo_sched_seq **queue, int *n, folo_sched_seq *seq) {
    for (int i = 0; i < *n; i++) {
        if (queue[i] != seq) continue;
        memmove(queue + i, queue + i + 1, (size_t)(*n - i - 1) * sizeof *queue);
        (*n)--;
        return;
    }
    FOLO_ASSERT(!"sequence missing from its queue");
}

static void waiting_reserve(folo_scheduler *s) {
    if (s->n_waiting < s->cap_waiting) return;
    s->cap_waiting = s->cap_waiting ? 2 * s->cap_waiting : 64;
    s->waiting = folo_realloc(s->waiting, (size_t)s->cap_waiting * sizeof *s->waiting);
}

static void waiting_push_front(folo_scheduler *s, folo_sched_seq *seq) {
    waiting_reserve(s);
    memmove(s->waiting + 1, s->waiting, (size_t)s->n_waiting * sizeof *s->waiting);
    s->waiting[0] = seq;
    s->n_waiting++;
    seq->state = FOLO_SEQ_WAITING;
}

/* ---- creation ------------------------------------------------------------ */

folo_scheduler *folo_sched_create(const folo_sched_options *opt, folo_kv_pool *pool,
                                  folo_error *err) {
    if (opt->max_num_batched_tokens < 1) {
        folo_fail(err, "max_num_batched_tokens: must be at least 1 (got %d)",
                  opt->max_num_batched_tokens);
        return NULL;
    }
    if (opt->max_num_seqs < 1) {
        folo_fail(err, "max_num_seqs: must be at least 1 (got %d)", opt->max_num_seqs);
        return NULL;
    }
    if (opt->max_model_len < 1) {
        folo_fail(err, "max_model_len: must be at least 1 (got %d)", opt->max_model_len);
        return NULL;
    }
    if (opt->max_prompt_rows < 1) {
        folo_fail(err, "max_prompt_rows: must be at least 1 (got %d)", opt->max_prompt_rows);
        return NULL;
    }
    folo_scheduler *s = folo_calloc(1, sizeof *s);
    s->opt = *opt;
    s->pool = pool;
    s->block_size = folo_kv_block_size(pool);
    folo_kv_stats st;
    folo_kv_stats_get(pool, &st);
    s->n_blocks = st.n_blocks;
    s->running = folo_calloc((size_t)opt->max_num_seqs, sizeof *s->running);
    s->plan.entries = folo_calloc((size_t)opt->max_num_seqs, sizeof *s->plan.entries);
    s->plan.copies = folo_calloc((size_t)opt->max_num_seqs + 1, sizeof *s->plan.copies);
    s->block_seen = folo_calloc((size_t)s->n_blocks, sizeof *s->block_seen);
    return s;
}

void folo_sched_free(folo_scheduler *s) {
    if (!s) return;
    free(s->waiting);
    free(s->running);
    free(s->plan.entries);
    free(s->plan.copies);
    free(s->block_seen);
    free(s);
}

int folo_sched_admissible(const folo_scheduler *s, int n_prompt, int max_tokens, int n_seats,
                          folo_error *err) {
    int64_t total = (int64_t)n_prompt + max_tokens;
    if (total > s->opt.max_model_len)
        return folo_fail(err,
                         "request: prompt (%d tokens) + max_tokens (%d) = %lld tokens exceeds the "
                         "model's context of %d tokens",
                         n_prompt, max_tokens, (long long)total, s->opt.max_model_len);
    int64_t blocks = (total + s->block_size - 1) / s->block_size;
    if (blocks > s->n_blocks)
        return folo_fail(
            err,
            "request: prompt (%d tokens) + max_tokens (%d) needs %lld KV blocks; the "
            "pool has %d blocks (%lld tokens); raise the KV memory or lower max_tokens",
            n_prompt, max_tokens, (long long)blocks, s->n_blocks,
            (long long)s->n_blocks * s->block_size);
    if (n_seats > s->opt.max_num_seqs)
        return folo_fail(err, "n: %d samples exceed max_num_seqs (%d)", n_seats,
                         s->opt.max_num_seqs);
    return 0;
}

int folo_sched_add(folo_scheduler *s, folo_sched_seq *seq, folo_error *err) {
    if (seq->state != FOLO_SEQ_NEW) return folo_fail(err, "sequence: already added");
    if (folo_sched_admissible(s, seq->n_prompt, seq->cap_tokens - seq->n_prompt, seq->n_seats,
                              err) != 0)
        return -1;
    seq->arrival = s->next_arrival++;
    seq->sample = 0;
    seq->plan_index = -1;
    waiting_reserve(s);
    s->waiting[s->n_waiting++] = seq;
    seq->state = FOLO_SEQ_WAITING;
    return 0;
}

void folo_sched_fork(folo_scheduler *s, folo_sched_seq *parent, folo_sched_seq *child, int sample) {
    FOLO_ASSERT(parent->state == FOLO_SEQ_RUNNING && parent->n_seats > 1);
    void *user = child->user;
    memset(child, 0, sizeof *child);
    child->user = user;
    child->cap_tokens = parent->cap_tokens;
    child->tokens = folo_calloc((size_t)child->cap_tokens, sizeof(int32_t));
    memcpy(child->tokens, parent->tokens, (size_t)parent->n_tokens * sizeof(int32_t));
    child->n_tokens = parent->n_tokens;
    child->n_prompt = parent->n_prompt;
    child->n_computed = parent->n_computed;
    child->n_cached_tokens = parent->n_cached_tokens;
    child->arrival = parent->arrival;
    child->sample = sample;
    child->plan_index = -1;
    child->prompt_rows_from = parent->n_prompt - 1; /* forked once the prompt is computed */
    child->n_seats = 1;
    folo_kv_seq_init(&child->kv);
    folo_kv_fork(s->pool, &parent->kv, &child->kv);
    parent->n_seats--;
    s->running_seats--; /* the seat moves with the child, re-added by running_insert */
    running_insert(s, child);
}

void folo_sched_finish(folo_scheduler *s, folo_sched_seq *seq) {
    if (seq->state == FOLO_SEQ_RUNNING) {
        queue_remove(s->running, &s->n_running, seq);
        s->running_seats -= seq->n_seats;
    } else if (seq->state == FOLO_SEQ_WAITING) {
        queue_remove(s->waiting, &s->n_waiting, seq);
    }
    folo_kv_release(s->pool, &seq->kv);
    seq->plan_index = -1;
    seq->state = FOLO_SEQ_FINISHED;
}

/* ---- planning ------------------------------------------------------------ */

static void plan_withdraw(folo_scheduler *s, folo_sched_seq *seq) {
    folo_sched_plan *p = &s->plan;
    int k = seq->plan_index;
    folo_sched_entry *e = &p->entries[k];
    s->budget += e->n_tokens;
    p->n_tokens -= e->n_tokens;
    s->rows_left += e->n_prompt_rows;
    p->n_prompt_rows -= e->n_prompt_rows;
    if (e->copy_index >= 0) {
        int last = p->n_copies - 1;
        if (e->copy_index != last) {
            p->copies[e->copy_index] = p->copies[last];
            for (int i = 0; i < p->n_entries; i++)
                if (p->entries[i].copy_index == last) p->entries[i].copy_index = e->copy_index;
        }
        p->n_copies--;
    }
    memmove(p->entries + k, p->entries + k + 1, (size_t)(p->n_entries - k - 1) * sizeof *e);
    p->n_entries--;
    for (int i = k; i < p->n_entries; i++) p->entries[i].seq->plan_index = i;
    seq->plan_index = -1;
}

/* Preempts running's last (most recently arrived) sequence. */
static folo_sched_seq *preempt_latest(folo_scheduler *s) {
    folo_sched_seq *victim = s->running[--s->n_running];
    s->running_seats -= victim->n_seats;
    if (victim->plan_index >= 0) plan_withdraw(s, victim);
    folo_kv_release(s->pool, &victim->kv);
    victim->n_computed = 0;
    victim->n_preemptions++;
    s->n_preemptions++;
    s->plan.n_preempted++;
    waiting_push_front(s, victim);
    return victim;
}

/* Tokens seq's block table must cover before n more of its tokens are
 * computed: those, or with contiguous KV its whole possible length. */
static int table_tokens(const folo_scheduler *s, const folo_sched_seq *seq, int n) {
    return s->opt.contiguous_kv ? seq->cap_tokens : seq->n_computed + n;
}

static bool reserve(folo_scheduler *s, folo_sched_seq *seq, int n_total) {
    folo_sched_plan *p = &s->plan;
    return folo_kv_allocate(s->pool, &seq->kv, n_total, seq->n_computed, p->copies,
                            &p->n_copies) == 0;
}

static int min_int(int a, int b) { return a < b ? a : b; }
static int max_int(int a, int b) { return a > b ? a : b; }

/* The first position of seq's next chunk that wants a prompt row, and how
 * many of its next n tokens do. */
static int rows_start(const folo_sched_seq *seq) {
    return max_int(seq->n_computed, seq->prompt_rows_from);
}
static int rows_of(const folo_sched_seq *seq, int n) {
    return max_int(0, min_int(seq->n_computed + n, seq->n_prompt - 1) - rows_start(seq));
}

/* Adds seq's plan entry for its next n tokens (its blocks are reserved;
 * copies_before: the plan's copies before that reservation). */
static void plan_add(folo_scheduler *s, folo_sched_seq *seq, int n, int copies_before) {
    folo_sched_plan *p = &s->plan;
    if (n > s->budget) s->grown = true;
    int rows = rows_of(seq, n);
    seq->plan_index = p->n_entries;
    p->entries[p->n_entries++] = (folo_sched_entry){
        .seq = seq,
        .start = seq->n_computed,
        .n_tokens = n,
        .wants_logits = seq->n_computed + n == seq->n_tokens,
        .copy_index = p->n_copies > copies_before ? copies_before : -1,
        .prompt_row_start = rows_start(seq),
        .n_prompt_rows = rows,
    };
    p->n_tokens += n;
    s->budget -= n;
    p->n_prompt_rows += rows;
    s->rows_left -= rows;
}

/* Tries to get blocks for n more tokens of seq; adds its plan entry. */
static bool plan_try(folo_scheduler *s, folo_sched_seq *seq, int n) {
    int copies_before = s->plan.n_copies;
    if (!reserve(s, seq, table_tokens(s, seq, n))) return false;
    plan_add(s, seq, n, copies_before);
    return true;
}

/* Plans n tokens of a running sequence, preempting the latest arrivals
 * until its blocks fit; false when it was itself preempted. */
static bool plan_running(folo_scheduler *s, folo_sched_seq *seq, int n) {
    while (!plan_try(s, seq, n))
        if (preempt_latest(s) == seq) return false;
    return true;
}

/* Whether another prefill may be planned this step. */
static bool prefill_room(const folo_scheduler *s) {
    return s->budget > 0 || (s->opt.no_chunked_prefill && !s->grown);
}

/* Tokens of seq's prefill (`remaining` uncomputed tokens) to plan now:
 * the chunk the budget and the prompt rows left allow, or with
 * no_chunked_prefill all of them or none (the step's first prefill may
 * overrun the token budget, never the rows). */
static int prefill_chunk(const folo_scheduler *s, const folo_sched_seq *seq, int remaining) {
    if (s->opt.no_chunked_prefill)
        return (remaining <= s->budget || !s->grown) && rows_of(seq, remaining) <= s->rows_left
                   ? remaining
                   : 0;
    int n = min_int(remaining, s->budget);
    if (rows_of(seq, n) > s->rows_left) n = rows_start(seq) - seq->n_computed + s->rows_left;
    return n;
}

/* Admits waiting sequences in order while budget, seats and blocks last;
 * with static batching only when nothing runs, and then regardless of the
 * budget (a member that gets no tokens this step prefills in the next). */
static void admit_waiting(folo_scheduler *s) {
    bool batch = s->opt.static_batching;
    if (batch && s->n_running > 0) return;
    while (s->n_waiting > 0 && (batch || prefill_room(s))) {
        folo_sched_seq *seq = s->waiting[0];
        if (s->running_seats + seq->n_seats > s->opt.max_num_seqs) break;
        /* At least the last token is computed, so its logits exist; so is
         * every prompt position still to be scored (see "Prompt rows"). */
        int limit = seq->n_tokens - 1;
        bool scoring = seq->prompt_rows_from < seq->n_prompt - 1;
        if (scoring) limit = min_int(limit, seq->prompt_rows_from);
        int cached = scoring && limit == 0 ? 0
                                           : folo_kv_match_prefix(s->pool, &seq->kv, seq->tokens,
                                                                  seq->n_tokens, limit);
        seq->n_computed = cached;
        int remaining = seq->n_tokens - cached;
        int n = prefill_room(s) ? prefill_chunk(s, seq, remaining) : 0;
        int copies_before = s->plan.n_copies;
        if ((n <= 0 && !batch) || !reserve(s, seq, table_tokens(s, seq, batch ? remaining : n))) {
            folo_kv_release(s->pool, &seq->kv);
            seq->n_computed = 0;
            break;
        }
        if (n > 0) plan_add(s, seq, n, copies_before);
        seq->n_cached_tokens = cached;
        memmove(s->waiting, s->waiting + 1, (size_t)(s->n_waiting - 1) * sizeof *s->waiting);
        s->n_waiting--;
        running_insert(s, seq);
    }
}

const folo_sched_plan *folo_sched_schedule(folo_scheduler *s) {
    folo_sched_plan *p = &s->plan;
    p->n_entries = p->n_tokens = p->n_copies = p->n_preempted = p->n_prompt_rows = 0;
    s->budget = s->opt.max_num_batched_tokens;
    s->rows_left = s->opt.max_prompt_rows;
    s->grown = false;
    for (int i = 0; i < s->n_running; i++) s->running[i]->plan_index = -1;
    /* Decodes first, so a long prefill never stalls them; then prefill chunks. */
    for (int pass = 0; pass < 2; pass++) {
        bool decodes = pass == 0;
        for (int i = 0; i < s->n_running && (decodes ? s->budget > 0 : prefill_room(s)); i++) {
            folo_sched_seq *seq = s->running[i];
            int remaining = seq->n_tokens - seq->n_computed;
            if (seq->plan_index >= 0 || (remaining == 1) != decodes) continue;
            int n = decodes ? 1 : prefill_chunk(s, seq, remaining);
            if (n > 0) plan_running(s, seq, n);
        }
    }
    if (p->n_preempted == 0) admit_waiting(s);
    return p;
}

void folo_sched_update(folo_scheduler *s, const folo_sched_plan *plan) {
    for (int i = 0; i < plan->n_entries; i++) {
        const folo_sched_entry *en = &plan->entries[i];
        folo_sched_seq *seq = en->seq;
        seq->n_computed += en->n_tokens;
        seq->plan_index = -1;
        if (en->n_prompt_rows > 0) seq->prompt_rows_from = en->prompt_row_start + en->n_prompt_rows;
        folo_kv_commit(s->pool, &seq->kv, seq->tokens, seq->n_computed);
    }
}

/* ---- queries and checks -------------------------------------------------- */

int folo_sched_n_waiting(const folo_scheduler *s) { return s->n_waiting; }
int folo_sched_n_running(const folo_scheduler *s) { return s->n_running; }
int64_t folo_sched_n_preemptions(const folo_scheduler *s) { return s->n_preemptions; }

int64_t folo_sched_kv_tokens_stored(folo_scheduler *s) {
    int64_t stored = 0;
    for (int i = 0; i < s->n_running; i++) {
        const folo_sched_seq *seq = s->running[i];
        for (int k = 0; k < seq->kv.n_blocks; k++) {
            int32_t block = seq->kv.blocks[k];
            if (s->block_seen[block]) continue;
            s->block_seen[block] = 1;
            int filled = seq->n_computed - k * s->block_size;
            stored += filled < 0 ? 0 : filled > s->block_size ? s->block_size : filled;
        }
    }
    for (int i = 0; i < s->n_running; i++)
        for (int k = 0; k < s->running[i]->kv.n_blocks; k++)
            s->block_seen[s->running[i]->kv.blocks[k]] = 0;
    return stored;
}
folo_kv_pool *folo_sched_pool(folo_scheduler *s) { return s->pool; }

static int check_seq(const folo_scheduler *s, const folo_sched_seq *seq, folo_seq_state state,
                     folo_error *err) {
    if (seq->state != state)
        return folo_fail(err, "sequence %llu.%d: state %d in queue of state %d",
                         (unsigned long long)seq->arrival, seq->sample, (int)seq->state,
                         (int)state);
    if (seq->n_computed < 0 || seq->n_computed > seq->n_tokens || seq->n_tokens > seq->cap_tokens)
        return folo_fail(err, "sequence %llu.%d: computed %d, tokens %d, capacity %d",
                         (unsigned long long)seq->arrival, seq->sample, seq->n_computed,
                         seq->n_tokens, seq->cap_tokens);
    if (state == FOLO_SEQ_WAITING && (seq->kv.n_blocks != 0 || seq->n_computed != 0))
        return folo_fail(err, "waiting sequence %llu.%d holds %d blocks, %d computed tokens",
                         (unsigned long long)seq->arrival, seq->sample, seq->kv.n_blocks,
                         seq->n_computed);
    if ((int64_t)seq->kv.n_blocks * s->block_size < seq->n_computed)
        return folo_fail(err, "sequence %llu.%d: %d blocks for %d computed tokens",
                         (unsigned long long)seq->arrival, seq->sample, seq->kv.n_blocks,
                         seq->n_computed);
    return 0;
}

int folo_sched_check(const folo_scheduler *s, folo_error *err) {
    int seats = 0;
    for (int i = 0; i < s->n_running; i++) {
        if (check_seq(s, s->running[i], FOLO_SEQ_RUNNING, err) != 0) return -1;
        if (i > 0 && !runs_before(s->running[i - 1], s->running[i]))
            return folo_fail(err, "running queue out of arrival order at %d", i);
        seats += s->running[i]->n_seats;
    }
    if (seats != s->running_seats || seats > s->opt.max_num_seqs)
        return folo_fail(err, "running seats %d (counted %d), max_num_seqs %d", s->running_seats,
                         seats, s->opt.max_num_seqs);
    for (int i = 0; i < s->n_waiting; i++)
        if (check_seq(s, s->waiting[i], FOLO_SEQ_WAITING, err) != 0) return -1;
    int n = s->n_running + s->n_waiting;
    const folo_kv_seq **seqs = folo_calloc((size_t)n + 1, sizeof *seqs);
    for (int i = 0; i < s->n_running; i++) seqs[i] = &s->running[i]->kv;
    for (int i = 0; i < s->n_waiting; i++) seqs[s->n_running + i] = &s->waiting[i]->kv;
    int rc = folo_kv_check(s->pool, seqs, n, err);
    free(seqs);
    return rc;
}
