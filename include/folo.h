/* folo: the engine API (libfolo), in the spirit of vLLM's LLMEngine and
 * llama.h.
 *
 * An engine owns a model, its tokenizer, a backend with its paged KV cache,
 * and the scheduler; it serves many requests at once by continuous batching
 * (DESIGN §2): every folo_engine_step schedules the running and waiting
 * requests within a token budget, runs ONE forward over all of them (decodes
 * and prefill chunks together), samples, and reports what each request
 * gained as folo_output records.
 *
 *     folo_engine_options opt = {.model_dir = "Qwen3-0.6B"};
 *     folo_engine *e = folo_engine_create(&opt, &err);
 *     folo_request_params p = folo_engine_default_params(e);
 *     folo_engine_add_text(e, "Hello", &p, &id, &err);
 *     while (folo_engine_has_unfinished(e)) {
 *         folo_engine_step(e, &outs, &n_outs, &err);
 *         for (int i = 0; i < n_outs; i++) fwrite(outs[i].text, 1, outs[i].text_len, stdout);
 *     }
 *     folo_engine_destroy(e);
 *
 * Two ways to drive it:
 *   - synchronously: the caller calls folo_engine_step in a loop; the
 *     outputs it returns stay valid until the next step;
 *   - on its own thread: folo_engine_start runs the step loop and hands
 *     every output to a callback on that thread (copy what you keep; return
 *     quickly, the next step waits for you); folo_engine_stop ends it.
 * folo_engine_add_* and folo_engine_abort are thread-safe in both modes:
 * they tokenize and validate on the caller's thread and queue the request;
 * the engine takes it in at its next step. Errors are values: functions
 * that can fail return 0 or -1 and fill a folo_error naming the parameter.
 *
 * Greedy outputs do not depend on batching, chunking, prefix caching,
 * preemption or the switches below (tests/c/test_engine.c). Times are
 * seconds of the monotonic clock (folo_now_s); metrics follow DESIGN §7. */
#ifndef FOLO_H
#define FOLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* folo's version, as `folo --version` prints it. */
#define FOLO_VERSION "0.1.0"

#include "core/error.h"
#include "sample/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Token budget of one step when none is given. On the CPU a prefill token
 * of Qwen3-0.6B costs ~0.9 GFLOP, so 512 tokens are ~2 s of compute on the
 * 2-core machines here: large enough that the matmuls reuse each weight row
 * across hundreds of tokens (arithmetic-bound, not bandwidth-bound), small
 * enough that decodes sharing the step are not stalled for the 8+ s a
 * 2048-token chunk would take (nano-vllm's 16384 is a GPU figure). */
#define FOLO_DEFAULT_MAX_BATCHED_TOKENS 512
#define FOLO_DEFAULT_MAX_NUM_SEQS 256
#define FOLO_DEFAULT_BLOCK_SIZE 16
/* Default KV pool: this much at most (vLLM's CPU backend reserves 4 GiB,
 * VLLM_CPU_KVCACHE_SPACE), and no more than half the machine's RAM minus the
 * weights. */
#define FOLO_DEFAULT_KV_BYTES ((size_t)4 << 30)
/* On a GPU without kv_memory_bytes: the share of the device's memory folo
 * may hold (weights, activations and the rest to the KV cache), as vLLM's
 * --gpu-memory-utilization. */
#define FOLO_DEFAULT_GPU_MEMORY_UTILIZATION 0.9
/* max_tokens of a request that gives none (vLLM's SamplingParams default). */
#define FOLO_DEFAULT_MAX_TOKENS 16
/* Largest score matrix of one attention head that --attention naive may
 * materialize: a sequence of T tokens needs T x T floats, so 64 MiB admits
 * T <= 4096 (docs/switches.md). */
#define FOLO_DEFAULT_NAIVE_ATTENTION_BYTES ((size_t)64 << 20)

/* The engine switches (docs/switches.md): each default is the optimized
 * path; the alternatives reproduce the seeds' baselines so a benchmark can
 * measure what each optimization buys. Greedy outputs are the same under
 * every combination. */
typedef enum folo_batching {
    FOLO_BATCHING_CONTINUOUS = 0, /* admit new requests at every step */
    FOLO_BATCHING_STATIC,         /* form a batch, run it to completion, then the next */
} folo_batching;

typedef enum folo_kv_layout {
    FOLO_KV_PAGED = 0,            /* blocks taken as tokens arrive */
    FOLO_KV_CONTIGUOUS,           /* prompt + max_tokens reserved at admission; no prefix cache */
} folo_kv_layout;

typedef enum folo_attention_kind {
    FOLO_ATTENTION_ONLINE = 0,    /* online softmax over the paged blocks, no score matrix */
    FOLO_ATTENTION_NAIVE,         /* materialized [queries x context] scores per head (CPU only) */
} folo_attention_kind;

/* What the matmuls of bf16 weights multiply them with (vLLM's --dtype):
 * the CPU keeps activations f32 by default (exact against transformers in
 * f32); bfloat16 rounds them to bf16 first, as the CUDA backend always
 * does, which an AVX512-BF16 CPU multiplies at twice the rate. */
typedef enum folo_compute_dtype {
    FOLO_COMPUTE_AUTO = 0,        /* float32 on the CPU, bfloat16 on cuda */
    FOLO_COMPUTE_FLOAT32,         /* f32 activations (cpu only) */
    FOLO_COMPUTE_BFLOAT16,        /* bf16-rounded activations, f32 sums */
} folo_compute_dtype;

typedef struct folo_engine folo_engine;

/* Zero means "the default" for every field. */
typedef struct folo_engine_options {
    const char *model_dir;        /* Hugging Face Qwen3 checkpoint directory (required) */
    const char *device;           /* "cpu", "cuda" or "auto" (NULL): cuda when built and present */
    int n_threads;                /* backend threads; <= 0: every online CPU */
    int block_size;               /* tokens per KV block (16) */
    size_t kv_memory_bytes;       /* bytes of the KV pool (see FOLO_DEFAULT_KV_BYTES) */
    int max_num_batched_tokens;   /* token budget per step (FOLO_DEFAULT_MAX_BATCHED_TOKENS) */
    int max_num_seqs;             /* sequences running at once (256) */
    int max_model_len;            /* context per sequence (the model's max_position_embeddings) */
    bool disable_prefix_caching;  /* prefix caching is on unless this is set */
    folo_batching batching;       /* continuous (default) or static */
    folo_kv_layout kv_layout;     /* paged (default) or contiguous */
    folo_attention_kind attention;/* online (default) or naive */
    size_t naive_attention_bytes; /* score-matrix budget of naive attention
                                     (FOLO_DEFAULT_NAIVE_ATTENTION_BYTES) */
    bool disable_chunked_prefill; /* prefills are never split across steps */
    bool enforce_eager;           /* cuda: no CUDA graphs, every kernel launched each step */
    bool no_weight_copy;          /* cpu: read the weights in the file mapping (page cache,
                                     shared) instead of a private copy in huge pages */
    folo_compute_dtype dtype;     /* matmul inputs: auto (default), float32 or bfloat16 */
    double gpu_memory_utilization;/* cuda without kv_memory_bytes: (0, 1], 0 for
                                     FOLO_DEFAULT_GPU_MEMORY_UTILIZATION */
    int max_queue;                /* > 0: folo_engine_add_* refuse a request with
                                     FOLO_ERR_QUEUE_FULL while this many wait (see there) */
} folo_engine_options;

/* What to generate for one request. */
typedef struct folo_request_params {
    folo_sampling_params sampling;  /* temperature 0 = greedy; logprobs >= 0 reports them */
    int max_tokens;                 /* output tokens at most; 0: FOLO_DEFAULT_MAX_TOKENS */
    int n;                          /* parallel samples sharing the prompt's blocks; 0: 1 */
    const char *const *stop;        /* [n_stop] stop strings (not emitted); copied */
    int n_stop;
    const int32_t *stop_token_ids;  /* [n_stop_token_ids] ids that end a sample; copied */
    int n_stop_token_ids;
    bool ignore_eos;                /* keep going past the model's eos ids */
    bool include_special;           /* keep special tokens in the text (skipped by default) */
    int prompt_logprobs;            /* score the prompt, as vLLM's prompt_logprobs: < 0 (the
                                       default): no; 0: each prompt token's own logprob; k:
                                       plus the top k (<= FOLO_MAX_TOP_LOGPROBS) */
} folo_request_params;

typedef enum folo_finish_reason {
    FOLO_FINISH_NONE = 0,  /* still running */
    FOLO_FINISH_STOP,      /* eos, a stop token id or a stop string */
    FOLO_FINISH_LENGTH,    /* max_tokens or the context */
    FOLO_FINISH_ABORT,     /* folo_engine_abort */
    FOLO_FINISH_ERROR,     /* the forward failed; error_message says why */
} folo_finish_reason;

/* "stop", "length", "abort", "error", or NULL for NONE. */
const char *folo_finish_reason_name(folo_finish_reason reason);

/* DESIGN §7 timestamps (folo_now_s seconds) and derived latencies of one
 * sample stream, complete when it finishes. */
typedef struct folo_request_metrics {
    double arrival_s;             /* folo_engine_add_* was called */
    double first_scheduled_s;     /* first step that computed any of its tokens */
    double first_token_s;         /* its first output token was sampled (0: none) */
    double finish_s;
    const double *token_times_s;  /* [n_output_tokens] when each output token was sampled */
    int n_prompt_tokens;
    int n_cached_tokens;          /* prompt tokens served by the prefix cache (first admission) */
    int n_output_tokens;
    int n_preemptions;
    double ttft_ms;               /* first token - arrival */
    double tpot_ms;               /* (finish - first token) / (n_output_tokens - 1); 0 for < 2 */
    double e2e_ms;                /* finish - arrival */
} folo_request_metrics;

/* What one sample stream of a request gained in a step. Pointers stay
 * valid until the next folo_engine_step (or the callback returns).
 *
 * Text goes out whole tokens at a time: `text` is the text of the tokens
 * `logprobs` lists, in order. A token's text that could begin a stop
 * string is held back, and a token with no text of its own (the first
 * bytes of a character, a skipped special token) waits for the next one
 * with text; they go out together in a later output, or in the last one
 * (after a stop string its text ends before the stop). So the logprobs of
 * a stream of outputs describe exactly the text beside them, and a
 * sample's outputs together list every token it sampled. */
typedef struct folo_output {
    uint64_t request_id;
    int sample_index;                   /* 0 .. n-1 */
    const int32_t *token_ids;           /* [n_token_ids] sampled this step (0 or 1) */
    int n_token_ids;
    const folo_sample_result *logprobs; /* [n_logprobs] when params asked for logprobs, else
                                           NULL: the tokens whose text `text` is */
    int n_logprobs;
    const folo_sample_result
        *prompt_logprobs;               /* [n_prompt_tokens] with params.prompt_logprobs >= 0,
                                           on the output of the sample's first token (else
                                           NULL): entry i is prompt token i given those
                                           before it; entry 0 has none (logprob NAN) */
    const char *text;                   /* new text, NUL-terminated */
    size_t text_len;
    const int32_t *all_token_ids;       /* [n_all_token_ids] every output token so far */
    int n_all_token_ids;
    int n_prompt_tokens;
    folo_finish_reason finish_reason;   /* NONE until the last output of this sample */
    const char *error_message;          /* FOLO_FINISH_ERROR only */
    const folo_request_metrics *metrics;/* when finished, else NULL */
} folo_output;

typedef struct folo_engine_stats {
    int n_waiting;                /* sequences queued (preempted ones included), and
                                     requests added since the last step */
    int n_running;                /* sequences holding blocks */
    int n_unfinished_requests;    /* added and not yet finished, queued ones included */
    int kv_block_size;            /* tokens per block */
    int kv_blocks_total;
    int kv_blocks_used;           /* held by sequences */
    int kv_blocks_cached;         /* free but holding a reusable prefix */
    int kv_blocks_peak_used;      /* the most ever held at once */
    int64_t kv_tokens_stored;     /* tokens whose K/V the used blocks hold (a shared block
                                     counted once): / (used x block size) is the pool's
                                     utilization */
    double kv_usage;              /* used / total */
    int64_t prefix_queried_tokens;/* prompt tokens looked up in the prefix cache */
    int64_t prefix_hit_tokens;    /* of those, served from it */
    int64_t n_preemptions;
    int64_t n_steps;              /* steps that ran a forward */
    int64_t n_scheduled_tokens;   /* tokens computed by forwards (prefill and decode) */
    int64_t n_output_tokens;      /* tokens sampled */
    int64_t n_finished_requests;
    double schedule_s;            /* seconds spent in each phase of the steps, summed */
    double prepare_s;             /* building the flat batch */
    double forward_s;             /* backend copy_blocks + forward */
    double sample_s;              /* sampling the logit rows */
    double output_s;              /* stop checks, detokenization, outputs */
    size_t weight_bytes;          /* the model's weights (GPTQ linears as repacked) */
    size_t kv_pool_bytes;         /* the KV pool, allocated at creation */
    size_t activation_bytes;      /* the backend's activation buffers, at their peak so far */
} folo_engine_stats;

/* Loads the model and tokenizer, sizes the KV pool and logs its token
 * capacity. */
folo_engine *folo_engine_create(const folo_engine_options *opt, folo_error *err);
/* Stops the thread if started; frees everything, unfinished requests too. */
void folo_engine_destroy(folo_engine *e);

/* Neutral params (greedy, FOLO_DEFAULT_MAX_TOKENS, n = 1). */
folo_request_params folo_request_params_default(void);
/* The same with the model's generation_config.json sampling defaults, as
 * vLLM and transformers apply them. */
folo_request_params folo_engine_default_params(const folo_engine *e);

/* With opt.max_queue > 0, add refuses a request with this status (err
 * says why) while max_queue requests wait: added and not yet running
 * (preempted sequences included). The count and the add are one step under
 * the engine's lock, so concurrent adders never overshoot; only a
 * preemption, which the engine never refuses, can push the queue past it. */
#define FOLO_ERR_QUEUE_FULL (-2)
/* The most logits (bytes of float rows) one step computes for prompt
 * logprobs: 64 MiB, 110 rows of Qwen3's 151936 tokens. */
#define FOLO_PROMPT_LOGITS_BYTES ((size_t)64 << 20)

/* Add a request: token ids, text (tokenized as is, no chat format), or an
 * OpenAI-style messages JSON array or object (folo_chat_parse_json;
 * rendered with the generation prompt; enable_thinking from the document,
 * default on). Refuses requests that could never fit (prompt + max_tokens
 * beyond the KV pool or the context). *request_id receives the id used by
 * outputs and folo_engine_abort. Thread-safe. Returns 0, -1 with err, or
 * FOLO_ERR_QUEUE_FULL.
 *
 * Prompt logprobs: every prompt position's logit row is computed by the
 * request's own prefill, so, as vLLM does, such a request takes no blocks
 * from the prefix cache (it still leaves its own there for others). Each
 * row is reduced to the scored token's logprob, rank and top k within the
 * step that computes it, and the rows one step computes for this are
 * bounded (FOLO_PROMPT_LOGITS_BYTES): prompt chunks are cut to fit. */
int folo_engine_add_tokens(folo_engine *e, const int32_t *ids, int n_ids,
                           const folo_request_params *params, uint64_t *request_id,
                           folo_error *err);
int folo_engine_add_text(folo_engine *e, const char *text, const folo_request_params *params,
                         uint64_t *request_id, folo_error *err);
int folo_engine_add_chat(folo_engine *e, const char *messages_json,
                         const folo_request_params *params, uint64_t *request_id,
                         folo_error *err);
/* Aborts a request wherever it is (queued, in prefill, decoding): its
 * blocks are freed at the next step, which reports it finished with
 * FOLO_FINISH_ABORT. Unknown or finished ids are ignored. Thread-safe. */
void folo_engine_abort(folo_engine *e, uint64_t request_id);

/* One step; *outputs receives [*n_outputs] records (valid until the next
 * step). Returns -1 only when the engine cannot go on; a failed forward
 * instead finishes the requests it carried with FOLO_FINISH_ERROR. Not
 * while the engine thread runs. */
int folo_engine_step(folo_engine *e, const folo_output **outputs, int *n_outputs,
                     folo_error *err);
/* Whether any request is queued or unfinished. */
bool folo_engine_has_unfinished(folo_engine *e);

/* Runs the step loop on a new thread, calling on_output(user, out) there
 * for every output; idle when there is nothing to do. */
typedef void (*folo_output_fn)(void *user, const folo_output *out);
int folo_engine_start(folo_engine *e, folo_output_fn on_output, void *user, folo_error *err);
/* Ends the thread after its current step (unfinished requests stay). */
void folo_engine_stop(folo_engine *e);

/* A consistent snapshot (taken at the end of the last step). Thread-safe. */
void folo_engine_get_stats(folo_engine *e, folo_engine_stats *out);
/* Tokens the KV pool holds (blocks x block size). */
int folo_engine_token_capacity(const folo_engine *e);

/* The engine's tokenizer, for callers that need what a request would see
 * (a server's /tokenize, the text of a logprob's token). Thread-safe.
 * tokenize_text encodes as folo_engine_add_text does (special tokens
 * written in the text are recognized); tokenize_chat renders and encodes
 * as folo_engine_add_chat does. *ids is allocated; the caller frees it. */
int folo_engine_tokenize_text(const folo_engine *e, const char *text, int32_t **ids,
                              int *n_ids, folo_error *err);
int folo_engine_tokenize_chat(const folo_engine *e, const char *messages_json, int32_t **ids,
                              int *n_ids, folo_error *err);
/* The text of ids (allocated, NUL-terminated; invalid UTF-8 becomes
 * U+FFFD); special tokens are dropped when skip_special. Ids must be below
 * folo_engine_vocab_size. */
char *folo_engine_detokenize(const folo_engine *e, const int32_t *ids, int n_ids,
                             bool skip_special);
int folo_engine_vocab_size(const folo_engine *e);
/* Tokens one sequence may hold (prompt and output). */
int folo_engine_max_model_len(const folo_engine *e);

/* Calls fn(user, n_tokens) after every step that ran a forward, with the
 * tokens it computed (prefill chunks and decodes together): the step-size
 * distribution behind a serving metric such as iteration_tokens_total. Runs
 * on the stepping thread; set it before folo_engine_start. */
typedef void (*folo_step_fn)(void *user, int n_tokens);
void folo_engine_set_step_hook(folo_engine *e, folo_step_fn fn, void *user);

#ifdef __cplusplus
}
#endif

#endif
