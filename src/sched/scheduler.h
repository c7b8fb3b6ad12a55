/* The scheduler (DESIGN §6): which sequences run in the next step, and how
 * many of their tokens.
 *
 * It owns two queues of sequences, waiting (admission order, preempted ones
 * at the front) and running (sorted by arrival, so its tail is always the
 * most recently arrived), and one reusable step plan. A sequence is a run of
 * token ids (prompt, then outputs) of which the first n_computed have their
 * K and V in the cache; every step computes the next tokens of some
 * sequences, so a prefill chunk and a decode are the same thing: a decode is
 * a sequence with one uncomputed token (the one sampled last step). Per
 * step, within a budget of max_num_batched_tokens and at most max_num_seqs
 * sequences:
 *   1. running sequences that are decoding get their one token each;
 *   2. running sequences still in prefill get the largest chunk that fits;
 *   3. waiting sequences are admitted in order (unless this step already
 *      preempted): a prefix-cache match skips their cached leading blocks
 *      (at least one token is always left to compute, for the logits), and
 *      their remaining tokens are cut to the budget left (chunked prefill).
 *      Admission stops at the first sequence that does not fit.
 * When the pool cannot supply blocks for a running sequence, the most
 * recently arrived running sequence is preempted: its blocks are released,
 * its computed count reset, and it goes to the front of waiting to be
 * recomputed (its prompt and outputs so far); a plan entry it already had
 * this step is withdrawn. A sequence that could never fit (its prompt plus
 * max_tokens beyond the pool or the model's context) is refused by
 * folo_sched_add, so nothing waits forever.
 *
 * Switches (folo_sched_options; docs/switches.md), each the seeds' baseline
 * for one optimization:
 *   - static_batching: waiting sequences are admitted only when nothing
 *     runs; then in order while seats and blocks last (each reserves the
 *     blocks of its whole uncomputed prompt), whatever the token budget,
 *     which only paces their prefill over the next steps. Nothing more is
 *     admitted until every member has finished (a preempted member waits
 *     for the next batch).
 *   - contiguous_kv: a sequence's block table covers cap_tokens (prompt +
 *     max_tokens) from its admission, as an engine without paging reserves
 *     a sequence's whole possible length; the engine turns prefix caching
 *     off with it (a reservation is private by nature).
 *   - no_chunked_prefill: a prefill (a prompt, or prompt and outputs when
 *     recomputed) is planned whole or not at all. The first prefill of a
 *     step is planned whole even beyond the budget left (the step grows
 *     for it, by at most max_model_len), so a prompt longer than
 *     max_num_batched_tokens still runs; later ones wait for room.
 *
 * Prompt rows: a sequence whose prompt tokens are scored (prompt logprobs)
 * needs the logit row of every prompt position up to the last but one,
 * each computed by this sequence's own forward. So, as vLLM does for a
 * request with prompt logprobs, its prefix-cache match never covers a
 * position still to be scored (from position 0: no lookup at all; after a
 * preemption only the positions already scored may come from the cache);
 * its own blocks are still registered for others. And the rows a step
 * asks for are a budget of their own (max_prompt_rows, which bounds the
 * logits the step's forward writes): its chunks are cut so their rows fit
 * what is left; with no_chunked_prefill a prefill whose rows do not fit
 * waits for a step that has them (a prompt whose rows could never fit
 * must be refused before it is added).
 *
 * Seats: a request with n samples is admitted as one sequence holding n
 * seats of max_num_seqs; once its prompt is computed the engine forks the
 * other samples off it (folo_sched_fork), each taking one of those seats.
 *
 * Who calls it: the engine, once per step (schedule, run the forward,
 * update, then append sampled tokens and finish sequences), and tests with
 * no model. It speaks only tokens and blocks, never tensors; it never
 * samples or detokenizes. Not thread-safe: the engine thread owns it. */
#ifndef FOLO_SCHED_SCHEDULER_H
#define FOLO_SCHED_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "kv/kv_cache.h"

typedef enum folo_seq_state {
    FOLO_SEQ_NEW = 0,     /* initialized, not yet added */
    FOLO_SEQ_WAITING,
    FOLO_SEQ_RUNNING,
    FOLO_SEQ_FINISHED,
} folo_seq_state;

/* One sequence: embedded by its owner (the engine's sample stream), which
 * the scheduler reaches through `user`. */
typedef struct folo_sched_seq {
    int32_t *tokens;      /* [cap_tokens] token ids: prompt, then outputs */
    int n_tokens;         /* prompt + outputs so far */
    int n_prompt;
    int cap_tokens;       /* n_prompt + max_tokens: the most it may hold */
    int n_computed;       /* leading tokens whose K/V are in the cache */
    int n_seats;          /* seats of max_num_seqs held (n for a parent still to fork) */
    uint64_t arrival;     /* admission order, set by folo_sched_add (forks share it) */
    int sample;           /* order among forks of one arrival (0 = the parent) */
    folo_seq_state state;
    folo_kv_seq kv;
    int n_preemptions;    /* times this sequence was preempted */
    int n_cached_tokens;  /* tokens served by the prefix cache at its last admission */
    void *user;           /* the owner's object */
    int plan_index;       /* its entry in this step's plan, -1 when none (private) */
    int prompt_rows_from; /* prompt logprobs: positions [prompt_rows_from, n_prompt - 1)
                             still want a logit row each (the row of position p scores
                             prompt token p + 1); n_prompt - 1 (the value
                             folo_sched_seq_init sets) when none do. See "Prompt rows". */
} folo_sched_seq;

/* Copies prompt[0..n_prompt) into a new token array with room for
 * max_tokens outputs; n_seats >= 1. Fails (naming the parameter) on an
 * empty prompt or a non-positive count. */
int folo_sched_seq_init(folo_sched_seq *seq, const int32_t *prompt, int n_prompt, int max_tokens,
                        int n_seats, folo_error *err);
/* Frees the token and block arrays (its blocks must have been released:
 * finished or never admitted). */
void folo_sched_seq_free(folo_sched_seq *seq);
/* Appends a sampled token (n_tokens < cap_tokens). */
void folo_sched_seq_append(folo_sched_seq *seq, int32_t token);

/* One sequence's share of a step: tokens[start, start + n_tokens). */
typedef struct folo_sched_entry {
    folo_sched_seq *seq;
    int start;            /* == seq->n_computed when planned */
    int n_tokens;         /* >= 1 */
    bool wants_logits;    /* the chunk reaches seq->n_tokens: sample after it */
    int copy_index;       /* its copy-on-write pair in the plan's copies, or -1 */
    int prompt_row_start; /* positions [prompt_row_start, + n_prompt_rows) of the chunk */
    int n_prompt_rows;    /* want a logit row for the prompt logprobs (0: none) */
} folo_sched_entry;

/* The plan of one step; owned by the scheduler, valid until the next
 * folo_sched_schedule. */
typedef struct folo_sched_plan {
    folo_sched_entry *entries;  /* [n_entries] in batch order */
    int n_entries;
    int n_tokens;               /* sum of the entries' n_tokens: <= max_num_batched_tokens,
                                   or + max_model_len with no_chunked_prefill */
    int n_prompt_rows;          /* sum of the entries' n_prompt_rows: <= max_prompt_rows */
    folo_kv_copy *copies;       /* [n_copies] blocks to copy before the forward */
    int n_copies;
    int n_preempted;            /* preemptions made while planning */
} folo_sched_plan;

typedef struct folo_sched_options {
    int max_num_batched_tokens; /* token budget of one step, >= 1 */
    int max_num_seqs;           /* sequences (seats) running at once, >= 1 */
    int max_model_len;          /* context limit of one sequence, tokens, >= 1 */
    bool static_batching;       /* admit only when nothing runs (see above) */
    bool contiguous_kv;         /* reserve cap_tokens of blocks at admission */
    bool no_chunked_prefill;    /* never split a prefill across steps */
    int max_prompt_rows;        /* prompt rows one step may ask for, >= 1 (see above) */
} folo_sched_options;

typedef struct folo_scheduler folo_scheduler;

/* pool is borrowed and must outlive the scheduler. */
folo_scheduler *folo_sched_create(const folo_sched_options *opt, folo_kv_pool *pool,
                                  folo_error *err);
/* Frees the queues (not the sequences, which belong to their owners). */
void folo_sched_free(folo_scheduler *s);

/* Whether a request of n_prompt tokens, max_tokens outputs and n_seats
 * samples could ever run: 0, or -1 with an error saying why and by how
 * much. Reads only what is fixed at creation, so any thread may call it. */
int folo_sched_admissible(const folo_scheduler *s, int n_prompt, int max_tokens, int n_seats,
                          folo_error *err);
/* Queues a new sequence at the back of waiting, or refuses one that could
 * never run (folo_sched_admissible). */
int folo_sched_add(folo_scheduler *s, folo_sched_seq *seq, folo_error *err);
/* After parent's prompt is computed (a plan entry with wants_logits was
 * updated): initializes child (its `user` kept) as a copy of parent sharing
 * all its blocks, moves one of parent's seats to it and puts it in running
 * as fork number `sample` (1 .. n-1) of parent's arrival. */
void folo_sched_fork(folo_scheduler *s, folo_sched_seq *parent, folo_sched_seq *child, int sample);

/* Plans the next step (an empty plan when nothing can run). */
const folo_sched_plan *folo_sched_schedule(folo_scheduler *s);
/* After the forward ran the plan: advances each entry's n_computed and
 * registers newly full blocks with the prefix cache. */
void folo_sched_update(folo_scheduler *s, const folo_sched_plan *plan);
/* Removes seq from its queue (finished, aborted or failed) and releases its
 * blocks. Not between schedule and update. */
void folo_sched_finish(folo_scheduler *s, folo_sched_seq *seq);

int folo_sched_n_waiting(const folo_scheduler *s);
int folo_sched_n_running(const folo_scheduler *s);
/* Total preemptions since creation. */
int64_t folo_sched_n_preemptions(const folo_scheduler *s);
/* Tokens whose K and V the blocks of running sequences hold: each block
 * counted once however many sequences share it (a block shared through the
 * prefix cache is full; forks share blocks with equal computed counts), so
 * against the blocks held it is the KV cache's utilization. Waiting
 * sequences hold no blocks. Not between schedule and update. */
int64_t folo_sched_kv_tokens_stored(folo_scheduler *s);
folo_kv_pool *folo_sched_pool(folo_scheduler *s);

/* Checks the queues (states, running order, seats within max_num_seqs,
 * computed counts in range, waiting sequences holding no blocks) and the
 * block pool's invariants over every queued sequence (folo_kv_check). */
int folo_sched_check(const folo_scheduler *s, folo_error *err);

#endif
