/* A request inside the engine, and the output processing of its tokens.
 *
 * A request owns n sample streams (folo_request_seq). Each stream embeds
 * the scheduler's view of it (folo_sched_seq: token ids, computed count,
 * block table) and owns what turns its sampled tokens into output: its
 * sampler (RNG, penalty counts), streaming detokenizer, stop-string matcher,
 * the text released by its last token, and its DESIGN §7 timestamps.
 * Stream 0 is created with the prompt and holds all n scheduler seats; the
 * others are forked off it by the engine once the prompt is computed.
 *
 * Text goes out a token at a time: the text of an output is the whole text
 * of the tokens it reports (their logprobs, when asked), never part of
 * one. A token whose text the stop matcher still holds back, or whose
 * text is empty (bytes of a character the next token completes, a special
 * token skipped), stays pending and goes out with the next token whose
 * text is released, or when the sample finishes (after a stop string:
 * with the text before it). A stream of outputs thus carries logprobs
 * that describe exactly the text beside them.
 *
 * Who calls it: the engine only. folo_request_create runs on the thread
 * that adds the request (validation and allocation stay off the step
 * loop); everything else on the engine thread. It never schedules or
 * touches the block pool: the engine does that with the embedded sched
 * seqs. */
#ifndef FOLO_ENGINE_REQUEST_H
#define FOLO_ENGINE_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "engine/stop.h"
#include "folo.h"
#include "model/config.h"
#include "sched/scheduler.h"
#include "tokenizer/tokenizer.h"

typedef struct folo_request folo_request;

/* One sample stream of a request. */
typedef struct folo_request_seq {
    folo_sched_seq s;             /* s.user == this; s.tokens holds prompt + outputs */
    folo_request *req;
    int index;                    /* sample index in the request */
    bool started;                 /* given to the scheduler (added, or forked) */
    folo_sampler *sampler;
    folo_detokenizer detok;
    folo_stop_matcher *stop;
    folo_buf decoded;             /* scratch: bytes the last token completed */
    folo_buf unsent;              /* text the stop matcher released that ends inside a
                                     pending token */
    folo_buf text;                /* text this step's output carries */
    folo_sample_result sample;    /* the token sampled this step, with its logprobs */
    folo_sample_result *pending;  /* [cap_pending] tokens whose text has not gone out, oldest
                                     first; the first n_released go out with this step's
                                     output (the rest later) */
    size_t *pending_bytes;        /* [cap_pending] each one's decoded bytes */
    int n_pending, n_released, cap_pending;
    double *token_times;          /* [max_tokens] seconds, when each output token was sampled */
    folo_request_metrics metrics;
    folo_finish_reason finish;
} folo_request_seq;

struct folo_request {
    uint64_t id;                  /* set by the engine when queued */
    int n;                        /* samples */
    int max_tokens;
    bool ignore_eos;
    bool forked;                  /* samples 1..n-1 were forked off sample 0 */
    bool wants_logprobs;
    int prompt_logprobs;          /* top alternatives per prompt token; < 0: not scored */
    folo_sample_result *prompt_lps; /* [n_prompt] when scored: entry i is prompt token i
                                       given those before it (entry 0: logprob NAN) */
    char **stops;                 /* [n_stops] owned copies */
    int n_stops;
    int32_t *stop_ids;            /* [n_stop_ids] */
    int n_stop_ids;
    folo_request_seq *seqs;       /* [n] */
    int n_finished;               /* samples finished */
};

/* Validates params (naming the field) and the prompt ids against the
 * vocabulary, resolves the defaults (max_tokens, n), and builds the request
 * with every stream's sampler (a seeded sample k draws from seed + k),
 * detokenizer and stop matcher; stream 0 holds the prompt, and with prompt
 * logprobs wants every prompt position's row (prompt_rows_from = 0). */
folo_request *folo_request_create(const int32_t *ids, int n_ids, const folo_request_params *p,
                                  const folo_tokenizer *tok, int vocab_size, double arrival_s,
                                  folo_error *err);
void folo_request_free(folo_request *req);

/* Output processing of the token in seq->sample: timestamps, append,
 * incremental detokenization through the stop matcher, then the checks in
 * vLLM's order (eos unless ignore_eos, stop token ids, stop strings,
 * max_tokens). On a finish the held-back text is flushed (not after a stop
 * string). Then seq->text is the text of the tokens released now:
 * pending[0 .. n_released). Returns the finish reason, NONE to go on. */
folo_finish_reason folo_request_seq_push(folo_request_seq *seq, const folo_generation_config *gen,
                                         double now);

/* Marks seq finished and completes its metrics (TTFT, TPOT, E2E). */
void folo_request_seq_finish(folo_request_seq *seq, folo_finish_reason reason, double now);

#endif
