/* The engine: the request lifecycle and the step loop (DESIGN §2), behind
 * include/folo.h; a request's own state and the processing of its tokens
 * are in request.c.
 *
 * It owns the requests (each with n sample streams), the scheduler and
 * block pool, the backend, and the step buffers: the flat batch arrays are
 * allocated at creation for max_num_batched_tokens tokens and max_num_seqs
 * sequences, the logits grow to the most rows a step has needed, and the
 * output records, queues and inbox only grow, so a step in steady state
 * allocates nothing.
 *
 * One step: take in the requests and aborts queued by other threads; plan
 * (scheduler); build one flat batch (token ids, positions, slots from the
 * block tables, per-sequence starts, lengths and tables, and a logit row
 * for every sequence whose chunk reaches its last token, then one for each
 * prompt position a request scoring its prompt wants); copy the
 * copy-on-write blocks; forward; register the computed blocks; then for
 * each logit row: fork the other samples off a request whose prompt has
 * just been computed (they share its blocks), sample (rows split across a
 * thread pool: at 256 sequences sampling over the vocabulary costs more
 * than everything else the engine does, bench/engine_overhead.c), reduce
 * each prompt row to its scored token's logprobs on the same threads (so
 * no row outlives its step), and process the token (folo_request_seq_push:
 * append, detokenize with stop-string hold-back, eos / stop token / stop
 * string / max_tokens checks, timestamps), and finish sequences, which
 * releases their blocks. Records of requests that finished stay alive
 * until the next step, so the outputs handed out can point into them.
 *
 * Threads: the engine thread (the caller of folo_engine_step, or the one
 * folo_engine_start creates) owns everything but the inbox and the stats
 * snapshot, which a mutex guards. Tokenizing, chat rendering and
 * validation of a new request happen on the adding thread, off the step
 * loop; detokenization stays in the loop because stop strings decide
 * whether a sequence runs another step. */
#include "engine/engine.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/device.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/threadpool.h"
#include "core/timer.h"
#include "engine/request.h"
#include "kv/kv_cache.h"
#include "sample/sampler.h"
#include "sched/scheduler.h"
#include "tokenizer/chat.h"

/* A growable array of pointers (requests) or ids. */
#define GROW(arr, n, cap)                                                      \
    do {                                                                       \
        if ((n) == (cap)) {                                                    \
            (cap) = (cap) ? 2 * (cap) : 16;                                    \
            (arr) = folo_realloc((arr), (size_t)(cap) * sizeof *(arr));        \
        }                                                                      \
    } while (0)

struct folo_engine {
    folo_model *owned_model;      /* set by folo_engine_create */
    folo_tokenizer *owned_tok;
    const folo_model *model;
    const folo_tokenizer *tok;
    folo_backend *backend;
    folo_kv_pool *pool;
    folo_scheduler *sched;
    folo_engine_options opt;      /* with defaults resolved */
    int vocab_size;               /* V */
    int block_size;               /* tokens per block */
    int n_blocks;

    /* the flat batch of a step */
    int32_t *token_ids;           /* [max_num_batched_tokens] */
    int32_t *positions;           /* [max_num_batched_tokens] */
    int32_t *slots;               /* [max_num_batched_tokens] block * block_size + offset */
    int32_t *seq_starts;          /* [max_num_seqs + 1] */
    int32_t *seq_lens;            /* [max_num_seqs] */
    int32_t *block_tables;        /* [max_num_seqs, max_blocks_per_seq] */
    int max_blocks_per_seq;       /* blocks of the longest possible sequence */
    int32_t *logit_rows;          /* [max_num_seqs + max_prompt_rows] flat token index of each
                                     logits row: the sampled rows, then the prompt rows */
    folo_request_seq **row_seqs;  /* [max_num_seqs] the sequence of each sampled row */
    uint8_t *argmax_only;         /* [max_num_seqs + max_prompt_rows] row r's samplers need
                                     only its argmax */
    int32_t *argmax;              /* [max_num_seqs + max_prompt_rows] the backend's argmax of
                                     those rows */
    int max_prompt_rows;          /* prompt rows a step may ask for (FOLO_PROMPT_LOGITS_BYTES) */
    folo_request **prompt_row_reqs;  /* [max_prompt_rows] the request of each prompt row */
    int32_t *prompt_row_tokens;   /* [max_prompt_rows] the prompt token each one scores */
    int n_prompt_rows;            /* prompt rows of this step */
    folo_request_seq **sampled;   /* [max_num_seqs] sequences that sample this step */
    int32_t *row_first;           /* [max_num_seqs + 1] each row's first entry in sampled */
    folo_pool *sample_pool;       /* threads that sample the rows */
    float *logits;                /* [cap_logit_rows, V]: sampled rows, then prompt rows */
    int cap_logit_rows;

    folo_output *outputs;         /* [n_outputs] of the last step */
    int n_outputs, cap_outputs;
    folo_request **live;        /* [n_live] taken in, not finished */
    int n_live, cap_live;
    folo_request **done;        /* [n_done] finished last step, freed at the next */
    int n_done, cap_done;
    char error_message[1024];     /* of the last failed forward, for its outputs */

    /* shared with adding threads, under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    folo_request **inbox;       /* [n_inbox] added, not yet taken in */
    int n_inbox, cap_inbox;
    uint64_t *aborts;             /* [n_aborts] ids to abort */
    int n_aborts, cap_aborts;
    uint64_t next_id;
    folo_engine_stats stats;      /* snapshot at the end of the last step */
    bool stop_requested;

    /* the engine's own copies of the inbox, swapped in at each step */
    folo_request **taken;
    int cap_taken;
    uint64_t *taken_aborts;
    int cap_taken_aborts;

    pthread_t thread;
    bool thread_running;
    folo_output_fn on_output;
    void *on_output_user;

    /* folo_engine_set_step_hook: told the tokens of every step (engine thread) */
    folo_step_fn step_hook;
    void *step_hook_user;

    /* counters behind the stats (engine thread) */
    int kv_peak_used;
    int64_t n_steps, n_scheduled_tokens, n_output_tokens, n_finished_requests;
    double schedule_s, prepare_s, forward_s, sample_s, output_s;
};

const char *folo_finish_reason_name(folo_finish_reason reason) {
    switch (reason) {
    case FOLO_FINISH_STOP: return "stop";
    case FOLO_FINISH_LENGTH: return "length";
    case FOLO_FINISH_ABORT: return "abort";
    case FOLO_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

folo_request_params folo_request_params_default(void) {
    return (folo_request_params){.sampling = folo_sampling_default(),
                                 .max_tokens = FOLO_DEFAULT_MAX_TOKENS,
                                 .n = 1,
                                 .prompt_logprobs = -1};
}

folo_request_params folo_engine_default_params(const folo_engine *e) {
    folo_request_params p = folo_request_params_default();
    const folo_generation_config *gen = &e->model->generation;
    if (gen->do_sample) {
        p.sampling.temperature = gen->temperature;
        p.sampling.top_p = gen->top_p;
        p.sampling.top_k = gen->top_k;
        p.sampling.min_p = gen->min_p;
        p.sampling.repetition_penalty = gen->repetition_penalty;
    }
    return p;
}

int folo_engine_token_capacity(const folo_engine *e) { return e->n_blocks * e->block_size; }

void folo_engine_set_step_hook(folo_engine *e, folo_step_fn fn, void *user) {
    e->step_hook = fn;
    e->step_hook_user = user;
}

/* ---- requests ------------------------------------------------------------ */

/* Queues req (owned from here on), or refuses it while max_queue requests
 * wait: the count and the add under one lock (FOLO_ERR_QUEUE_FULL). */
static int enqueue(folo_engine *e, folo_request *req, uint64_t *request_id, folo_error *err) {
    pthread_mutex_lock(&e->lock);
    if (e->opt.max_queue > 0 && e->stats.n_waiting >= e->opt.max_queue) {
        int waiting = e->stats.n_waiting;
        pthread_mutex_unlock(&e->lock);
        folo_request_free(req);
        folo_fail(err, "max_queue: %d requests wait for the engine, the most it queues (%d)",
                  waiting, e->opt.max_queue);
        return FOLO_ERR_QUEUE_FULL;
    }
    req->id = e->next_id++;
    GROW(e->inbox, e->n_inbox, e->cap_inbox);
    e->inbox[e->n_inbox++] = req;
    /* Waiting from now until the next step's stats count it in the
     * scheduler. Adding n_inbox when stats are read is not enough: a step's
     * take_inbox empties the inbox before the scheduler holds the request. */
    e->stats.n_waiting++;
    if (request_id) *request_id = req->id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    return 0;
}

/* Naive attention materializes a score matrix of up to T x T floats per
 * head for a sequence of T = prompt + max_tokens tokens (a chunk's queries
 * times its context; recomputation after preemption can make it the whole
 * sequence): refuse what the budget cannot hold. */
static int naive_attention_admissible(const folo_engine *e, int n_prompt, int max_tokens,
                                      folo_error *err) {
    if (e->opt.attention != FOLO_ATTENTION_NAIVE) return 0;
    int64_t T = (int64_t)n_prompt + max_tokens;
    double bytes = (double)T * (double)T * sizeof(float), mib = 1 << 20;
    if (bytes <= (double)e->opt.naive_attention_bytes) return 0;
    return folo_fail(err,
                     "request: prompt (%d tokens) + max_tokens (%d) = %lld tokens need a %lldx%lld "
                     "attention score matrix (%.1f MiB per head), beyond the naive attention "
                     "budget of %.1f MiB; use the default attention or shorten the request",
                     n_prompt, max_tokens, (long long)T, (long long)T, (long long)T, bytes / mib,
                     (double)e->opt.naive_attention_bytes / mib);
}

/* Without chunked prefill a scored prompt's rows all come in one step,
 * which computes at most max_prompt_rows of them. */
static int prompt_rows_admissible(const folo_engine *e, int n_prompt, int prompt_logprobs,
                                  folo_error *err) {
    if (prompt_logprobs < 0 || !e->opt.disable_chunked_prefill ||
        n_prompt - 1 <= e->max_prompt_rows)
        return 0;
    return folo_fail(err,
                     "prompt_logprobs: a prompt of %d tokens needs %d logit rows in one step "
                     "with chunked prefill off; a step computes at most %d (%zu MiB)",
                     n_prompt, n_prompt - 1, e->max_prompt_rows, FOLO_PROMPT_LOGITS_BYTES >> 20);
}

static int add_ids(folo_engine *e, const int32_t *ids, int n_ids, const folo_request_params *params,
                   double arrival_s, uint64_t *request_id, folo_error *err) {
    folo_request_params defaults = folo_request_params_default();
    folo_request *req = folo_request_create(ids, n_ids, params ? params : &defaults, e->tok,
                                            e->vocab_size, arrival_s, err);
    if (!req) return -1;
    if (folo_sched_admissible(e->sched, n_ids, req->max_tokens, req->n, err) != 0 ||
        naive_attention_admissible(e, n_ids, req->max_tokens, err) != 0 ||
        prompt_rows_admissible(e, n_ids, req->prompt_logprobs, err) != 0) {
        folo_request_free(req);
        return -1;
    }
    return enqueue(e, req, request_id, err);
}

int folo_engine_add_tokens(folo_engine *e, const int32_t *ids, int n_ids,
                           const folo_request_params *params, uint64_t *request_id,
                           folo_error *err) {
    return add_ids(e, ids, n_ids, params, folo_now_s(), request_id, err);
}

typedef int (*tokenize_fn)(const folo_engine *e, const char *input, int32_t **ids, int *n_ids,
                           folo_error *err);

/* Tokenizes input (text or a messages document) and adds it; arrival is
 * taken before tokenizing. */
static int add_tokenized(folo_engine *e, tokenize_fn tokenize, const char *input,
                         const folo_request_params *params, uint64_t *request_id,
                         folo_error *err) {
    double arrival_s = folo_now_s();
    int32_t *ids = NULL;
    int n_ids = 0;
    if (tokenize(e, input, &ids, &n_ids, err) != 0) return -1;
    int rc = add_ids(e, ids, n_ids, params, arrival_s, request_id, err);
    free(ids);
    return rc;
}

int folo_engine_add_text(folo_engine *e, const char *text, const folo_request_params *params,
                         uint64_t *request_id, folo_error *err) {
    return add_tokenized(e, folo_engine_tokenize_text, text, params, request_id, err);
}

int folo_engine_add_chat(folo_engine *e, const char *messages_json,
                         const folo_request_params *params, uint64_t *request_id,
                         folo_error *err) {
    return add_tokenized(e, folo_engine_tokenize_chat, messages_json, params, request_id, err);
}

/* ---- the tokenizer, for callers ------------------------------------------ */

int folo_engine_tokenize_text(const folo_engine *e, const char *text, int32_t **ids,
                              int *n_ids, folo_error *err) {
    if (!text) return folo_fail(err, "prompt: NULL text");
    if (folo_tokenizer_encode(e->tok, text, strlen(text), ids, n_ids, err) != 0)
        return folo_fail_prefix(err, "prompt");
    return 0;
}

int folo_engine_tokenize_chat(const folo_engine *e, const char *messages_json, int32_t **ids,
                              int *n_ids, folo_error *err) {
    if (!messages_json) return folo_fail(err, "messages: NULL");
    folo_chat_conversation conv;
    if (folo_chat_parse_json(messages_json, &conv, err) != 0) return -1;
    folo_chat_options copt = {
        .add_generation_prompt = conv.add_generation_prompt != 0,
        .enable_thinking = conv.enable_thinking != 0,
        .tools_json = (const char *const *)conv.tools_json,
        .n_tools = conv.n_tools,
    };
    folo_buf rendered = {0};
    int rc = folo_chat_render(conv.messages, conv.n_messages, &copt, &rendered, err);
    folo_chat_conversation_free(&conv);
    if (rc == 0) rc = folo_engine_tokenize_text(e, folo_buf_str(&rendered), ids, n_ids, err);
    folo_buf_free(&rendered);
    return rc;
}

char *folo_engine_detokenize(const folo_engine *e, const int32_t *ids, int n_ids,
                             bool skip_special) {
    folo_buf out = {0};
    folo_tokenizer_decode(e->tok, ids, n_ids, skip_special, &out);
    return out.data ? out.data : folo_strdup("");
}

int folo_engine_vocab_size(const folo_engine *e) { return e->vocab_size; }

int folo_engine_max_model_len(const folo_engine *e) { return e->opt.max_model_len; }

void folo_engine_abort(folo_engine *e, uint64_t request_id) {
    pthread_mutex_lock(&e->lock);
    GROW(e->aborts, e->n_aborts, e->cap_aborts);
    e->aborts[e->n_aborts++] = request_id;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
}

/* ---- outputs and finishing ----------------------------------------------- */

static void emit(folo_engine *e, folo_request_seq *seq, bool with_token) {
    GROW(e->outputs, e->n_outputs, e->cap_outputs);
    const folo_request *req = seq->req;
    int n_out = seq->metrics.n_output_tokens;
    int n_released = with_token ? seq->n_released : 0;
    e->outputs[e->n_outputs++] = (folo_output){
        .request_id = req->id,
        .sample_index = seq->index,
        .token_ids = with_token ? &seq->sample.token : NULL,
        .n_token_ids = with_token ? 1 : 0,
        .logprobs = req->wants_logprobs && n_released > 0 ? seq->pending : NULL,
        .n_logprobs = req->wants_logprobs ? n_released : 0,
        .prompt_logprobs = with_token && n_out == 1 ? req->prompt_lps : NULL,
        .text = folo_buf_str(&seq->text),
        .text_len = seq->text.len,
        .all_token_ids = seq->s.tokens ? seq->s.tokens + seq->s.n_prompt : NULL,
        .n_all_token_ids = n_out,
        .n_prompt_tokens = seq->metrics.n_prompt_tokens,
        .finish_reason = seq->finish,
        .error_message = seq->finish == FOLO_FINISH_ERROR ? e->error_message : NULL,
        .metrics = seq->finish != FOLO_FINISH_NONE ? &seq->metrics : NULL,
    };
}

static void live_remove(folo_engine *e, folo_request *req) {
    for (int i = 0; i < e->n_live; i++)
        if (e->live[i] == req) {
            e->live[i] = e->live[--e->n_live];
            GROW(e->done, e->n_done, e->cap_done);
            e->done[e->n_done++] = req;
            e->n_finished_requests++;
            return;
        }
    FOLO_ASSERT(!"finished request not live");
}

/* Ends one sample stream: releases its blocks, completes its metrics. */
static void finish_seq(folo_engine *e, folo_request_seq *seq, folo_finish_reason reason,
                       double now) {
    if (seq->started) folo_sched_finish(e->sched, &seq->s);
    folo_request_seq_finish(seq, reason, now);
    folo_request *req = seq->req;
    if (++req->n_finished == req->n) live_remove(e, req);
}

/* Finishes every unfinished sample of req with reason, one output each. */
static void finish_request(folo_engine *e, folo_request *req, folo_finish_reason reason) {
    double now = folo_now_s();
    for (int k = 0; k < req->n; k++) {
        folo_request_seq *seq = &req->seqs[k];
        if (seq->finish != FOLO_FINISH_NONE) continue;
        folo_buf_clear(&seq->text);
        finish_seq(e, seq, reason, now);
        emit(e, seq, false);
    }
}

/* Output processing of the token seq sampled this step. */
static void process_token(folo_engine *e, folo_request_seq *seq, double now) {
    folo_finish_reason reason = folo_request_seq_push(seq, &e->model->generation, now);
    if (reason != FOLO_FINISH_NONE) finish_seq(e, seq, reason, now);
    emit(e, seq, true);
}

/* ---- the step ------------------------------------------------------------ */

static folo_request *live_find(folo_engine *e, uint64_t id) {
    for (int i = 0; i < e->n_live; i++)
        if (e->live[i]->id == id) return e->live[i];
    return NULL;
}

/* Takes in the requests and aborts other threads queued. */
static void take_inbox(folo_engine *e) {
    pthread_mutex_lock(&e->lock);
    folo_request **reqs = e->inbox;
    int n_reqs = e->n_inbox, cap_reqs = e->cap_inbox;
    e->inbox = e->taken, e->cap_inbox = e->cap_taken, e->n_inbox = 0;
    e->taken = reqs, e->cap_taken = cap_reqs;
    uint64_t *ids = e->aborts;
    int n_ids = e->n_aborts, cap_ids = e->cap_aborts;
    e->aborts = e->taken_aborts, e->cap_aborts = e->cap_taken_aborts, e->n_aborts = 0;
    e->taken_aborts = ids, e->cap_taken_aborts = cap_ids;
    e->stats.n_unfinished_requests = e->n_live + n_reqs;
    pthread_mutex_unlock(&e->lock);

    for (int i = 0; i < n_reqs; i++) {
        folo_request *req = reqs[i];
        GROW(e->live, e->n_live, e->cap_live);
        e->live[e->n_live++] = req;
        folo_error err = {{0}};
        if (folo_sched_add(e->sched, &req->seqs[0].s, &err) != 0) {
            snprintf(e->error_message, sizeof e->error_message, "%s", err.message);
            finish_request(e, req, FOLO_FINISH_ERROR);
            continue;
        }
        req->seqs[0].started = true;
    }
    for (int i = 0; i < n_ids; i++) {
        folo_request *req = live_find(e, ids[i]);
        if (req) finish_request(e, req, FOLO_FINISH_ABORT);
    }
}

/* Fills the flat batch from the plan; returns the number of sampled logit
 * rows (e->n_prompt_rows prompt rows follow them). */
static int prepare_batch(folo_engine *e, const folo_sched_plan *plan, folo_batch *batch) {
    int bs = e->block_size, stride = 1;
    for (int i = 0; i < plan->n_entries; i++)
        if (plan->entries[i].seq->kv.n_blocks > stride) stride = plan->entries[i].seq->kv.n_blocks;
    int t = 0, rows = 0;
    double now = folo_now_s();
    for (int i = 0; i < plan->n_entries; i++) {
        const folo_sched_entry *en = &plan->entries[i];
        const folo_sched_seq *s = en->seq;
        folo_request_seq *seq = s->user;
        if (seq->metrics.first_scheduled_s == 0) {
            seq->metrics.first_scheduled_s = now;
            seq->metrics.n_cached_tokens = s->n_cached_tokens;
        }
        e->seq_starts[i] = t;
        for (int p = en->start; p < en->start + en->n_tokens; p++, t++) {
            e->token_ids[t] = s->tokens[p];
            e->positions[t] = p;
            e->slots[t] = s->kv.blocks[p / bs] * bs + p % bs;
        }
        e->seq_lens[i] = en->start + en->n_tokens;
        memcpy(e->block_tables + (size_t)i * stride, s->kv.blocks,
               (size_t)s->kv.n_blocks * sizeof(int32_t));
        if (en->wants_logits) {
            /* A request's n samples share its params, so the first decides. */
            e->argmax_only[rows] = !folo_sampler_needs_logits(seq->sampler);
            e->logit_rows[rows] = t - 1;
            e->row_seqs[rows++] = seq;
        }
    }
    e->seq_starts[plan->n_entries] = t;
    /* The prompt rows after the sampled ones: the row of position p scores
     * prompt token p + 1. */
    int n_prompt = 0;
    for (int i = 0; i < plan->n_entries; i++) {
        const folo_sched_entry *en = &plan->entries[i];
        for (int p = en->prompt_row_start; p < en->prompt_row_start + en->n_prompt_rows; p++) {
            e->logit_rows[rows + n_prompt] = e->seq_starts[i] + (p - en->start);
            e->argmax_only[rows + n_prompt] = 0;
            e->prompt_row_reqs[n_prompt] = ((folo_request_seq *)en->seq->user)->req;
            e->prompt_row_tokens[n_prompt++] = p + 1;
        }
    }
    e->n_prompt_rows = n_prompt;
    *batch = (folo_batch){
        .n_tokens = t,
        .token_ids = e->token_ids,
        .positions = e->positions,
        .slot_mapping = e->slots,
        .n_seqs = plan->n_entries,
        .seq_starts = e->seq_starts,
        .seq_lens = e->seq_lens,
        .block_tables = e->block_tables,
        .max_blocks_per_seq = stride,
        .n_logit_rows = rows + n_prompt,
        .logit_rows = e->logit_rows,
        .argmax_only = e->argmax_only,
        .argmax = e->argmax,
    };
    if (rows + n_prompt > e->cap_logit_rows) {
        folo_free_large(e->logits);
        e->cap_logit_rows = rows + n_prompt;
        e->logits = folo_alloc_large((size_t)e->cap_logit_rows * e->vocab_size * sizeof(float));
        FOLO_ASSERT(e->logits != NULL);
    }
    return rows;
}

/* Forks the other samples off each request whose prompt was just computed,
 * then lists the sequences that sample from each logit row:
 * sampled[row_first[r] .. row_first[r + 1]). Returns how many. */
static int list_samplers(folo_engine *e, int n_rows) {
    int n_sampled = 0;
    for (int r = 0; r < n_rows; r++) {
        folo_request_seq *seq = e->row_seqs[r];
        folo_request *req = seq->req;
        e->row_first[r] = n_sampled;
        if (req->n > 1 && !req->forked) {
            req->forked = true;
            for (int k = 1; k < req->n; k++) {
                folo_request_seq *child = &req->seqs[k];
                folo_sched_fork(e->sched, &seq->s, &child->s, k);
                child->started = true;
                child->metrics.first_scheduled_s = seq->metrics.first_scheduled_s;
                child->metrics.n_cached_tokens = seq->metrics.n_cached_tokens;
                e->sampled[n_sampled++] = child;
            }
        }
        e->sampled[n_sampled++] = seq;
    }
    e->row_first[n_rows] = n_sampled;
    return n_sampled;
}

/* Rows are independent (each sampler belongs to one sequence, each prompt
 * row fills its own entry of its request's prompt logprobs), so threads
 * split them; the samples of one row stay on one thread, because a sampler
 * applies its penalties to the row in place. */
typedef struct sample_job {
    folo_engine *e;
    int n_rows;
} sample_job;

static void sample_worker(void *ctx, int thread, int n_threads) {
    const sample_job *job = ctx;
    folo_engine *e = job->e;
    for (int r = thread; r < job->n_rows; r += n_threads) {
        float *row = e->logits + (size_t)r * e->vocab_size; /* [V] */
        for (int i = e->row_first[r]; i < e->row_first[r + 1]; i++) {
            folo_request_seq *seq = e->sampled[i];
            if (e->argmax_only[r])
                folo_sampler_sample_argmax(seq->sampler, e->argmax[r], &seq->sample);
            else
                folo_sampler_sample(seq->sampler, row, &seq->sample);
        }
    }
    for (int r = thread; r < e->n_prompt_rows; r += n_threads) {
        const float *row = e->logits + (size_t)(job->n_rows + r) * e->vocab_size; /* [V] */
        folo_request *req = e->prompt_row_reqs[r];
        int32_t i = e->prompt_row_tokens[r];
        folo_logprobs_fill(row, e->vocab_size, req->seqs[0].s.tokens[i], req->prompt_logprobs,
                           &req->prompt_lps[i]);
    }
}

static int sample_rows(folo_engine *e, int n_rows) {
    int n_sampled = list_samplers(e, n_rows);
    sample_job job = {.e = e, .n_rows = n_rows};
    if (n_rows + e->n_prompt_rows > 1)
        folo_pool_run(e->sample_pool, sample_worker, &job);
    else
        sample_worker(&job, 0, 1);
    return n_sampled;
}

static void update_stats(folo_engine *e) {
    folo_kv_stats kv;
    folo_kv_stats_get(e->pool, &kv);
    int64_t stored = folo_sched_kv_tokens_stored(e->sched);
    if (kv.n_used > e->kv_peak_used) e->kv_peak_used = kv.n_used;
    pthread_mutex_lock(&e->lock);
    folo_engine_stats *st = &e->stats;
    /* Requests added since this step took the inbox wait too. */
    st->n_waiting = folo_sched_n_waiting(e->sched) + e->n_inbox;
    st->n_running = folo_sched_n_running(e->sched);
    st->n_unfinished_requests = e->n_live;
    st->kv_block_size = e->block_size;
    st->kv_blocks_total = kv.n_blocks;
    st->kv_blocks_used = kv.n_used;
    st->kv_blocks_cached = kv.n_cached;
    st->kv_blocks_peak_used = e->kv_peak_used;
    st->kv_tokens_stored = stored;
    st->kv_usage = kv.n_blocks ? (double)kv.n_used / kv.n_blocks : 0;
    st->prefix_queried_tokens = kv.queried_tokens;
    st->prefix_hit_tokens = kv.hit_tokens;
    st->n_preemptions = folo_sched_n_preemptions(e->sched);
    st->n_steps = e->n_steps;
    st->n_scheduled_tokens = e->n_scheduled_tokens;
    st->n_output_tokens = e->n_output_tokens;
    st->n_finished_requests = e->n_finished_requests;
    st->schedule_s = e->schedule_s;
    st->prepare_s = e->prepare_s;
    st->forward_s = e->forward_s;
    st->sample_s = e->sample_s;
    st->output_s = e->output_s;
    st->weight_bytes = e->model->weight_bytes;
    st->kv_pool_bytes = e->backend->kv_bytes;
    st->activation_bytes = e->backend->scratch_bytes;
    pthread_mutex_unlock(&e->lock);
}

static void run_plan(folo_engine *e, const folo_sched_plan *plan, double t0) {
    double t1 = folo_now_s();
    folo_batch batch;
    int n_rows = prepare_batch(e, plan, &batch);
    double t2 = folo_now_s();
    folo_error err = {{0}};
    int rc = folo_backend_copy_blocks(e->backend, plan->copies, plan->n_copies, &err);
    if (rc == 0) rc = folo_backend_forward(e->backend, &batch, e->logits, &err);
    double t3 = folo_now_s();
    e->n_steps++;
    e->schedule_s += t1 - t0;
    e->prepare_s += t2 - t1;
    e->forward_s += t3 - t2;
    if (rc != 0) {
        /* The step's sequences end with the error; the engine goes on. */
        snprintf(e->error_message, sizeof e->error_message, "%s", err.message);
        folo_log(FOLO_LOG_WARN, "engine: forward failed: %s", err.message);
        for (int i = 0; i < plan->n_entries; i++) {
            folo_request_seq *seq = plan->entries[i].seq->user;
            if (seq->finish == FOLO_FINISH_NONE) finish_request(e, seq->req, FOLO_FINISH_ERROR);
        }
        return;
    }
    e->n_scheduled_tokens += batch.n_tokens;
    if (e->step_hook) e->step_hook(e->step_hook_user, batch.n_tokens);
    folo_sched_update(e->sched, plan);
    int n_sampled = sample_rows(e, n_rows);
    double t4 = folo_now_s();
    for (int i = 0; i < n_sampled; i++) process_token(e, e->sampled[i], t4);
    e->n_output_tokens += n_sampled;
    e->sample_s += t4 - t3;
    e->output_s += folo_now_s() - t4;
}

int folo_engine_step(folo_engine *e, const folo_output **outputs, int *n_outputs,
                     folo_error *err) {
    for (int i = 0; i < e->n_done; i++) folo_request_free(e->done[i]);
    e->n_done = 0;
    e->n_outputs = 0;
    double t0 = folo_now_s();
    take_inbox(e);
    const folo_sched_plan *plan = folo_sched_schedule(e->sched);
    if (plan->n_entries > 0) run_plan(e, plan, t0);
    update_stats(e);
    *outputs = e->outputs;
    *n_outputs = e->n_outputs;
    return 0;
}

int folo_engine_check(folo_engine *e, folo_error *err) { return folo_sched_check(e->sched, err); }

bool folo_engine_has_unfinished(folo_engine *e) {
    pthread_mutex_lock(&e->lock);
    bool busy = e->n_inbox > 0 || e->n_aborts > 0 || e->stats.n_unfinished_requests > 0;
    pthread_mutex_unlock(&e->lock);
    return busy;
}

void folo_engine_get_stats(folo_engine *e, folo_engine_stats *out) {
    pthread_mutex_lock(&e->lock);
    *out = e->stats;
    pthread_mutex_unlock(&e->lock);
}

/* ---- the engine thread --------------------------------------------------- */

static void *engine_main(void *arg) {
    folo_engine *e = arg;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        while (!e->stop_requested && e->n_inbox == 0 && e->n_aborts == 0 &&
               e->stats.n_unfinished_requests == 0)
            pthread_cond_wait(&e->wake, &e->lock);
        if (e->stop_requested) break;
        pthread_mutex_unlock(&e->lock);
        const folo_output *outs;
        int n_outs;
        folo_error err = {{0}};
        folo_engine_step(e, &outs, &n_outs, &err);
        for (int i = 0; i < n_outs; i++) e->on_output(e->on_output_user, &outs[i]);
        pthread_mutex_lock(&e->lock);
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

int folo_engine_start(folo_engine *e, folo_output_fn on_output, void *user, folo_error *err) {
    if (!on_output) return folo_fail(err, "on_output: NULL callback");
    if (e->thread_running) return folo_fail(err, "engine: already started");
    e->on_output = on_output;
    e->on_output_user = user;
    e->stop_requested = false;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
        return folo_fail(err, "engine: cannot create the engine thread");
    e->thread_running = true;
    return 0;
}

void folo_engine_stop(folo_engine *e) {
    if (!e->thread_running) return;
    pthread_mutex_lock(&e->lock);
    e->stop_requested = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    e->thread_running = false;
}

/* ---- creation ------------------------------------------------------------ */

/* Checks the switches of docs/switches.md and fills in what they imply. */
static int switches_resolve(folo_engine_options *o, folo_error *err) {
    if ((unsigned)o->batching > FOLO_BATCHING_STATIC)
        return folo_fail(err, "batching: unknown mode %d (continuous or static)", (int)o->batching);
    if ((unsigned)o->kv_layout > FOLO_KV_CONTIGUOUS)
        return folo_fail(err, "kv_layout: unknown layout %d (paged or contiguous)",
                         (int)o->kv_layout);
    if ((unsigned)o->attention > FOLO_ATTENTION_NAIVE)
        return folo_fail(err, "attention: unknown kind %d (online or naive)", (int)o->attention);
    if (o->naive_attention_bytes == 0)
        o->naive_attention_bytes = FOLO_DEFAULT_NAIVE_ATTENTION_BYTES;
    /* A contiguous reservation is private: nothing to share a prefix with. */
    if (o->kv_layout == FOLO_KV_CONTIGUOUS) o->disable_prefix_caching = true;
    return 0;
}

folo_engine *folo_engine_create_from(const folo_model *model, const folo_tokenizer *tok,
                                     folo_backend *backend, const folo_engine_options *opt,
                                     folo_error *err) {
    const folo_config *c = &model->config;
    folo_engine_options o = *opt;
    if (o.max_num_batched_tokens <= 0) o.max_num_batched_tokens = FOLO_DEFAULT_MAX_BATCHED_TOKENS;
    if (o.max_num_seqs <= 0) o.max_num_seqs = FOLO_DEFAULT_MAX_NUM_SEQS;
    if (o.max_model_len <= 0) o.max_model_len = c->max_position_embeddings;
    if (o.max_model_len > c->max_position_embeddings) {
        folo_fail(err, "max_model_len: %d exceeds the model's max_position_embeddings (%d)",
                  o.max_model_len, c->max_position_embeddings);
        folo_backend_destroy(backend);
        return NULL;
    }
    if (switches_resolve(&o, err) != 0) {
        folo_backend_destroy(backend);
        return NULL;
    }
    folo_engine *e = folo_calloc(1, sizeof *e);
    e->model = model;
    e->tok = tok;
    e->backend = backend;
    e->vocab_size = c->vocab_size;
    e->block_size = backend->kv_block_size;
    e->n_blocks = backend->kv_n_blocks;
    /* Within the token budget too, unless a whole prefill may overrun it. */
    size_t rows = FOLO_PROMPT_LOGITS_BYTES / ((size_t)e->vocab_size * sizeof(float));
    if (!o.disable_chunked_prefill && rows > (size_t)o.max_num_batched_tokens)
        rows = (size_t)o.max_num_batched_tokens;
    e->max_prompt_rows = rows > 0 ? (int)rows : 1;
    o.block_size = e->block_size;
    e->opt = o;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->wake, NULL);
    e->pool = folo_kv_pool_create(e->n_blocks, e->block_size, !o.disable_prefix_caching);
    folo_sched_options so = {.max_num_batched_tokens = o.max_num_batched_tokens,
                             .max_num_seqs = o.max_num_seqs,
                             .max_model_len = o.max_model_len,
                             .static_batching = o.batching == FOLO_BATCHING_STATIC,
                             .contiguous_kv = o.kv_layout == FOLO_KV_CONTIGUOUS,
                             .no_chunked_prefill = o.disable_chunked_prefill,
                             .max_prompt_rows = e->max_prompt_rows};
    e->sched = folo_sched_create(&so, e->pool, err);
    if (!e->sched) {
        folo_engine_destroy(e);
        return NULL;
    }
    int max_blocks = (o.max_model_len + e->block_size - 1) / e->block_size;
    e->max_blocks_per_seq = max_blocks < e->n_blocks ? max_blocks : e->n_blocks;
    /* Without chunking a step's first prefill may overrun the budget by a
     * whole sequence (scheduler.h). */
    size_t T = (size_t)o.max_num_batched_tokens +
               (o.disable_chunked_prefill ? (size_t)o.max_model_len : 0),
           S = (size_t)o.max_num_seqs, R = (size_t)e->max_prompt_rows;
    e->token_ids = folo_calloc(T, sizeof(int32_t));
    e->positions = folo_calloc(T, sizeof(int32_t));
    e->slots = folo_calloc(T, sizeof(int32_t));
    e->seq_starts = folo_calloc(S + 1, sizeof(int32_t));
    e->seq_lens = folo_calloc(S, sizeof(int32_t));
    e->block_tables = folo_calloc(S * (size_t)e->max_blocks_per_seq, sizeof(int32_t));
    e->logit_rows = folo_calloc(S + R, sizeof(int32_t));
    e->row_seqs = folo_calloc(S, sizeof *e->row_seqs);
    e->argmax_only = folo_calloc(S + R, sizeof *e->argmax_only);
    e->argmax = folo_calloc(S + R, sizeof *e->argmax);
    e->prompt_row_reqs = folo_calloc(R, sizeof *e->prompt_row_reqs);
    e->prompt_row_tokens = folo_calloc(R, sizeof *e->prompt_row_tokens);
    e->sampled = folo_calloc(S, sizeof *e->sampled);
    e->row_first = folo_calloc(S + 1, sizeof(int32_t));
    e->sample_pool = folo_pool_create(o.n_threads);
    update_stats(e);
    char weights[128] = "";
    if (backend->weight_copy_bytes > 0)
        snprintf(weights, sizeof weights, "; weights copied into huge pages%s (%.2f GB in %.2f s)",
                 backend->weight_panels ? ", bf16 as row panels" : "",
                 (double)backend->weight_copy_bytes / 1e9, backend->weight_copy_s);
    folo_log(FOLO_LOG_INFO,
             "engine: KV cache %d blocks x %d tokens = %d tokens (%.1f MiB, %s backend); "
             "max_num_batched_tokens %d, max_num_seqs %d, max_model_len %d, prefix caching %s; "
             "%s batching, %s KV, %s attention, chunked prefill %s, %s matmul inputs%s",
             e->n_blocks, e->block_size, folo_engine_token_capacity(e),
             (double)backend->kv_bytes / (1 << 20), backend->name, o.max_num_batched_tokens,
             o.max_num_seqs, o.max_model_len, o.disable_prefix_caching ? "off" : "on",
             o.batching == FOLO_BATCHING_STATIC ? "static" : "continuous",
             o.kv_layout == FOLO_KV_CONTIGUOUS ? "contiguous" : "paged",
             o.attention == FOLO_ATTENTION_NAIVE ? "naive" : "online",
             o.disable_chunked_prefill ? "off" : "on",
             strcmp(backend->name, "cuda") == 0 || o.dtype == FOLO_COMPUTE_BFLOAT16 ? "bfloat16"
                                                                                   : "float32",
             weights);
    return e;
}

/* KV bytes per token on a device: K and V of every layer, in the element
 * type its backend stores (bf16 on CUDA and with dtype bfloat16, else f32). */
static size_t kv_bytes_per_token(const folo_config *c, const char *device,
                                 folo_compute_dtype dtype) {
    size_t element = strcmp(device, "cuda") == 0 || dtype == FOLO_COMPUTE_BFLOAT16 ? 2 : 4;
    return (size_t)2 * c->n_layers * c->n_kv_heads * c->head_dim * element;
}

/* The default pool: FOLO_DEFAULT_KV_BYTES, within half the RAM less the
 * weights, and no more than max_num_seqs full-length sequences need. */
static size_t default_kv_bytes(const folo_model *m, const folo_engine_options *o,
                               const char *device) {
    long pages = sysconf(_SC_PHYS_PAGES), page_bytes = sysconf(_SC_PAGESIZE);
    size_t ram = pages > 0 && page_bytes > 0 ? (size_t)pages * (size_t)page_bytes : 0;
    size_t bytes = FOLO_DEFAULT_KV_BYTES;
    size_t half = ram / 2 > m->weight_bytes ? ram / 2 - m->weight_bytes : 0;
    if (half < bytes) bytes = half;
    int seqs = o->max_num_seqs > 0 ? o->max_num_seqs : FOLO_DEFAULT_MAX_NUM_SEQS;
    int len = o->max_model_len > 0 ? o->max_model_len : m->config.max_position_embeddings;
    size_t needed = (size_t)seqs * (size_t)len * kv_bytes_per_token(&m->config, device, o->dtype);
    return needed < bytes ? needed : bytes;
}

folo_engine *folo_engine_create(const folo_engine_options *opt, folo_error *err) {
    if (!opt || !opt->model_dir) {
        folo_fail(err, "model_dir: no model directory given");
        return NULL;
    }
    if (opt->block_size < 0) {
        folo_fail(err, "block_size: must be positive (got %d)", opt->block_size);
        return NULL;
    }
    folo_model *model = folo_model_load(opt->model_dir, err);
    if (!model) return NULL;
    folo_tokenizer *tok = folo_tokenizer_load(opt->model_dir, err);
    if (!tok) {
        folo_model_free(model);
        return NULL;
    }
    const char *device = !opt->device || strcmp(opt->device, "auto") == 0
                             ? folo_device_resolve_auto()
                             : opt->device;
    int block_size = opt->block_size > 0 ? opt->block_size : FOLO_DEFAULT_BLOCK_SIZE;
    size_t kv_bytes =
        opt->kv_memory_bytes ? opt->kv_memory_bytes : default_kv_bytes(model, opt, device);
    size_t block_bytes =
        kv_bytes_per_token(&model->config, device, opt->dtype) * (size_t)block_size;
    size_t n_blocks = kv_bytes / block_bytes;
    /* On the GPU, without --kv-memory, the backend sizes the pool itself
     * from the memory it finds (folo_backend_options.gpu_memory_utilization). */
    bool plan_on_device = strcmp(device, "cuda") == 0 && opt->kv_memory_bytes == 0;
    double util = opt->gpu_memory_utilization > 0 ? opt->gpu_memory_utilization
                                                  : FOLO_DEFAULT_GPU_MEMORY_UTILIZATION;
    if (plan_on_device) n_blocks = 0;
    folo_backend *backend = NULL;
    if (opt->gpu_memory_utilization < 0 || opt->gpu_memory_utilization > 1) {
        folo_fail(err, "gpu_memory_utilization: %g is outside (0, 1]",
                  opt->gpu_memory_utilization);
    } else if (!plan_on_device && (n_blocks < 1 || n_blocks > INT32_MAX / (size_t)block_size)) {
        folo_fail(err, "kv_memory_bytes: %zu bytes make %zu blocks of %d tokens (%zu bytes each)",
                  kv_bytes, n_blocks, block_size, block_bytes);
    } else {
        size_t naive_bytes = opt->naive_attention_bytes ? opt->naive_attention_bytes
                                                        : FOLO_DEFAULT_NAIVE_ATTENTION_BYTES;
        folo_backend_options bo = {.n_threads = opt->n_threads,
                                   .kv_block_size = block_size,
                                   .kv_n_blocks = (int)n_blocks,
                                   .naive_attention = opt->attention == FOLO_ATTENTION_NAIVE,
                                   .naive_attention_bytes = naive_bytes,
                                   .eager = opt->enforce_eager,
                                   .weights_in_place = opt->no_weight_copy,
                                   .dtype = opt->dtype,
                                   .gpu_memory_utilization = plan_on_device ? util : 0,
                                   .max_seqs = opt->max_num_seqs > 0 ? opt->max_num_seqs
                                                                     : FOLO_DEFAULT_MAX_NUM_SEQS,
                                   .max_batch_tokens = opt->max_num_batched_tokens > 0
                                                           ? opt->max_num_batched_tokens
                                                           : FOLO_DEFAULT_MAX_BATCHED_TOKENS};
        backend = folo_backend_create(device, model, &bo, err);
    }
    folo_engine *e = backend ? folo_engine_create_from(model, tok, backend, opt, err) : NULL;
    if (!e) {
        folo_tokenizer_free(tok);
        folo_model_free(model);
        return NULL;
    }
    e->owned_model = model;
    e->owned_tok = tok;
    return e;
}

void folo_engine_destroy(folo_engine *e) {
    if (!e) return;
    folo_engine_stop(e);
    for (int i = 0; i < e->n_live; i++) {
        folo_request *req = e->live[i];
        for (int k = 0; k < req->n; k++)
            if (req->seqs[k].started && req->seqs[k].finish == FOLO_FINISH_NONE)
                folo_sched_finish(e->sched, &req->seqs[k].s);
        folo_request_free(req);
    }
    for (int i = 0; i < e->n_done; i++) folo_request_free(e->done[i]);
    for (int i = 0; i < e->n_inbox; i++) folo_request_free(e->inbox[i]);
    free(e->live);
    free(e->done);
    free(e->inbox);
    free(e->aborts);
    free(e->taken);
    free(e->taken_aborts);
    free(e->outputs);
    folo_sched_free(e->sched);
    folo_kv_pool_free(e->pool);
    folo_backend_destroy(e->backend);
    free(e->token_ids);
    free(e->positions);
    free(e->slots);
    free(e->seq_starts);
    free(e->seq_lens);
    free(e->block_tables);
    free(e->logit_rows);
    free(e->row_seqs);
    free(e->argmax_only);
    free(e->argmax);
    free(e->prompt_row_reqs);
    free(e->prompt_row_tokens);
    free(e->sampled);
    free(e->row_first);
    folo_pool_destroy(e->sample_pool);
    folo_free_large(e->logits);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    folo_tokenizer_free(e->owned_tok);
    folo_model_free(e->owned_model);
    free(e);
}
