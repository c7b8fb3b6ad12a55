/* Requests and their output processing; the design is in request.h. */
#include "engine/request.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

void folo_request_free(folo_request *req) {
    if (!req) return;
    for (int k = 0; k < req->n; k++) {
        folo_request_seq *seq = &req->seqs[k];
        folo_sched_seq_free(&seq->s);
        folo_sampler_free(seq->sampler);
        folo_stop_matcher_free(seq->stop);
        folo_buf_free(&seq->decoded);
        folo_buf_free(&seq->unsent);
        folo_buf_free(&seq->text);
        free(seq->pending);
        free(seq->pending_bytes);
        free(seq->token_times);
    }
    free(req->prompt_lps);
    for (int i = 0; i < req->n_stops; i++) free(req->stops[i]);
    free(req->stops);
    free(req->stop_ids);
    free(req->seqs);
    free(req);
}

static int validate(const int32_t *ids, int n_ids, const folo_request_params *p, int vocab_size,
                    folo_error *err) {
    if (p->max_tokens < 0)
        return folo_fail(err, "max_tokens: must be positive (got %d)", p->max_tokens);
    if (p->n < 0) return folo_fail(err, "n: must be positive (got %d)", p->n);
    if (p->n_stop < 0 || (p->n_stop > 0 && !p->stop))
        return folo_fail(err, "stop: %d strings given without an array", p->n_stop);
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i]) return folo_fail(err, "stop[%d]: NULL", i);
    if (p->n_stop_token_ids < 0 || (p->n_stop_token_ids > 0 && !p->stop_token_ids))
        return folo_fail(err, "stop_token_ids: %d ids given without an array", p->n_stop_token_ids);
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] < 0 || p->stop_token_ids[i] >= vocab_size)
            return folo_fail(err, "stop_token_ids[%d]: %d outside the vocabulary [0, %d)", i,
                             p->stop_token_ids[i], vocab_size);
    if (folo_sampling_validate(&p->sampling, err) != 0) return -1;
    if (p->prompt_logprobs > FOLO_MAX_TOP_LOGPROBS)
        return folo_fail(err, "prompt_logprobs must be at most %d (got %d)", FOLO_MAX_TOP_LOGPROBS,
                         p->prompt_logprobs);
    if (!ids || n_ids < 1) return folo_fail(err, "prompt: empty (need at least one token)");
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= vocab_size)
            return folo_fail(err, "prompt: token %d is id %d, outside the vocabulary [0, %d)", i,
                             ids[i], vocab_size);
    return 0;
}

folo_request *folo_request_create(const int32_t *ids, int n_ids, const folo_request_params *p,
                                  const folo_tokenizer *tok, int vocab_size, double arrival_s,
                                  folo_error *err) {
    if (validate(ids, n_ids, p, vocab_size, err) != 0) return NULL;
    int max_tokens = p->max_tokens > 0 ? p->max_tokens : FOLO_DEFAULT_MAX_TOKENS;
    int n = p->n > 0 ? p->n : 1;
    folo_request *req = folo_calloc(1, sizeof *req);
    req->n = n;
    req->max_tokens = max_tokens;
    req->ignore_eos = p->ignore_eos;
    req->wants_logprobs = p->sampling.logprobs >= 0;
    req->prompt_logprobs = p->prompt_logprobs < 0 ? -1 : p->prompt_logprobs;
    if (req->prompt_logprobs >= 0) {
        req->prompt_lps = folo_calloc((size_t)n_ids, sizeof *req->prompt_lps);
        req->prompt_lps[0] = (folo_sample_result){.token = ids[0], .logprob = NAN};
    }
    req->n_stops = p->n_stop;
    req->stops = folo_calloc((size_t)p->n_stop + 1, sizeof *req->stops);
    for (int i = 0; i < p->n_stop; i++) req->stops[i] = folo_strdup(p->stop[i]);
    req->n_stop_ids = p->n_stop_token_ids;
    req->stop_ids = folo_calloc((size_t)p->n_stop_token_ids + 1, sizeof *req->stop_ids);
    if (p->n_stop_token_ids)
        memcpy(req->stop_ids, p->stop_token_ids, (size_t)p->n_stop_token_ids * sizeof(int32_t));
    req->seqs = folo_calloc((size_t)n, sizeof *req->seqs);
    for (int k = 0; k < n; k++) {
        folo_request_seq *seq = &req->seqs[k];
        seq->req = req;
        seq->index = k;
        folo_kv_seq_init(&seq->s.kv);
        folo_sampling_params sp = p->sampling;
        if (sp.has_seed) sp.seed += (uint64_t)k; /* seeded samples differ but repeat */
        seq->sampler = folo_sampler_create(&sp, vocab_size);
        if (!seq->sampler) {
            folo_request_free(req);
            folo_fail(err, "sampling: cannot allocate the sampler's scratch");
            return NULL;
        }
        folo_sampler_add_prompt(seq->sampler, ids, n_ids);
        folo_detokenizer_init(&seq->detok, tok, !p->include_special);
        seq->stop = folo_stop_matcher_create((const char *const *)req->stops, req->n_stops);
        seq->token_times = folo_calloc((size_t)max_tokens, sizeof(double));
        seq->metrics.arrival_s = arrival_s;
        seq->metrics.n_prompt_tokens = n_ids;
    }
    if (folo_sched_seq_init(&req->seqs[0].s, ids, n_ids, max_tokens, n, err) != 0) {
        folo_request_free(req);
        return NULL;
    }
    for (int k = 0; k < n; k++) req->seqs[k].s.user = &req->seqs[k];
    if (req->prompt_logprobs >= 0) req->seqs[0].s.prompt_rows_from = 0;
    return req;
}

static bool contains(const int32_t *ids, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* Queues the token just sampled (its decoded bytes counted as they come). */
static void pending_push(folo_request_seq *seq) {
    int done = seq->n_released, left = seq->n_pending - done;
    if (done > 0) {
        memmove(seq->pending, seq->pending + done, (size_t)left * sizeof *seq->pending);
        memmove(seq->pending_bytes, seq->pending_bytes + done,
                (size_t)left * sizeof *seq->pending_bytes);
    }
    seq->n_pending = left;
    seq->n_released = 0;
    if (seq->n_pending == seq->cap_pending) {
        seq->cap_pending = seq->cap_pending ? 2 * seq->cap_pending : 8;
        seq->pending = folo_realloc(seq->pending, (size_t)seq->cap_pending * sizeof *seq->pending);
        seq->pending_bytes = folo_realloc(seq->pending_bytes,
                                          (size_t)seq->cap_pending * sizeof *seq->pending_bytes);
    }
    seq->pending[seq->n_pending] = seq->sample;
    seq->pending_bytes[seq->n_pending++] = 0;
}

/* Moves to seq->text the text of the pending tokens whose text is wholly
 * released (all of them when finished), up to the last one with any text. */
static void release_whole_tokens(folo_request_seq *seq, bool finished) {
    size_t bytes = finished ? seq->unsent.len : 0, sum = 0;
    int n = finished ? seq->n_pending : 0;
    for (int i = 0; !finished && i < seq->n_pending; i++) {
        sum += seq->pending_bytes[i];
        if (sum > seq->unsent.len) break;
        if (seq->pending_bytes[i] > 0) {
            n = i + 1;
            bytes = sum;
        }
    }
    folo_buf_append(&seq->text, folo_buf_str(&seq->unsent), bytes);
    folo_buf_drop_front(&seq->unsent, bytes);
    seq->n_released = n;
}

folo_finish_reason folo_request_seq_push(folo_request_seq *seq, const folo_generation_config *gen,
                                         double now) {
    const folo_request *req = seq->req;
    folo_request_metrics *m = &seq->metrics;
    int32_t token = seq->sample.token;
    if (m->n_output_tokens == 0) m->first_token_s = now;
    seq->token_times[m->n_output_tokens++] = now;
    folo_sched_seq_append(&seq->s, token);
    folo_sampler_add_output(seq->sampler, token);
    pending_push(seq);
    size_t *bytes = &seq->pending_bytes[seq->n_pending - 1];

    folo_buf_clear(&seq->text);
    folo_buf_clear(&seq->decoded);
    folo_detokenizer_push(&seq->detok, token, &seq->decoded);
    *bytes += seq->decoded.len;
    int hit = folo_stop_matcher_feed(seq->stop, folo_buf_str(&seq->decoded), seq->decoded.len,
                                     &seq->unsent);
    folo_finish_reason reason = FOLO_FINISH_NONE;
    if ((!req->ignore_eos && contains(gen->eos_token_ids, gen->n_eos_token_ids, token)) ||
        contains(req->stop_ids, req->n_stop_ids, token) || hit >= 0)
        reason = FOLO_FINISH_STOP;
    else if (m->n_output_tokens >= req->max_tokens) /* prompt + max_tokens fit the context */
        reason = FOLO_FINISH_LENGTH;
    if (reason != FOLO_FINISH_NONE && hit < 0) {
        folo_buf_clear(&seq->decoded);
        folo_detokenizer_flush(&seq->detok, &seq->decoded);
        *bytes += seq->decoded.len;
        folo_stop_matcher_feed(seq->stop, folo_buf_str(&seq->decoded), seq->decoded.len,
                               &seq->unsent);
        folo_stop_matcher_flush(seq->stop, &seq->unsent);
    }
    release_whole_tokens(seq, reason != FOLO_FINISH_NONE);
    return reason;
}

void folo_request_seq_finish(folo_request_seq *seq, folo_finish_reason reason, double now) {
    seq->finish = reason;
    folo_request_metrics *m = &seq->metrics;
    m->finish_s = now;
    m->token_times_s = seq->token_times;
    m->n_preemptions = seq->s.n_preemptions;
    m->ttft_ms = m->n_output_tokens > 0 ? (m->first_token_s - m->arrival_s) * 1e3 : 0;
    m->tpot_ms = m->n_output_tokens > 1
                     ? (now - m->first_token_s) * 1e3 / (m->n_output_tokens - 1)
                     : 0;
    m->e2e_ms = (now - m->arrival_s) * 1e3;
}
