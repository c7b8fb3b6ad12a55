/* The OpenAI wire format of `folo serve`: request bodies of
 * /v1/completions and /v1/chat/completions read into folo_request_params,
 * and the response, stream chunk and error documents written back, in the
 * shapes vLLM's OpenAI-compatible server uses.
 *
 * Pure functions over Jansson documents: no sockets, no threads, no engine
 * (server.c owns those). A parse failure is a value carrying the HTTP
 * status, the OpenAI error type and the offending parameter; unknown
 * fields are ignored, wrong types and out-of-range values are refused. */
#ifndef FOLO_SERVER_OPENAI_H
#define FOLO_SERVER_OPENAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "folo.h"

#define FOLO_OAI_MAX_STOPS 16
#define FOLO_OAI_MAX_STOP_IDS 64
#define FOLO_OAI_MAX_N 128
/* Prompts of one completions request, and choices (prompts x n) at most. */
#define FOLO_OAI_MAX_PROMPTS 128
#define FOLO_OAI_MAX_CHOICES 1024

typedef enum folo_oai_kind { FOLO_OAI_COMPLETION, FOLO_OAI_CHAT } folo_oai_kind;

/* An error as the API reports it: {"error": {message, type, param, code}}. */
typedef struct folo_oai_error {
    int status;           /* HTTP status: 400, 404, 405, 413, 500 */
    char param[64];       /* the request field at fault; "" when none */
    char message[1024];
} folo_oai_error;

/* One prompt of a completions request: text, or token ids. */
typedef struct folo_oai_prompt {
    const char *text;    /* NULL for token ids */
    int32_t *ids;        /* [n_ids], owned, when text is NULL */
    int n_ids;
} folo_oai_prompt;

/* A parsed request. Its strings point into root; free with
 * folo_oai_request_free. */
typedef struct folo_oai_request {
    folo_oai_kind kind;
    json_t *root;                 /* the body, owned */
    const char *model;            /* NULL when absent */
    folo_oai_prompt *prompts;     /* [n_prompts] FOLO_OAI_COMPLETION: a string, a list of
                                     strings, token ids or a list of token-id lists */
    int n_prompts;
    bool echo;                    /* completions: the prompt comes before the text */
    bool echo_only;               /* echo with max_tokens 0: the prompt alone, scored (one
                                     token is generated, as vLLM does, and not returned) */
    int prompt_logprobs;          /* vLLM's prompt_logprobs field; < 0: absent */
    bool stream;
    bool include_usage;           /* stream_options.include_usage */
    bool max_tokens_given;        /* max_tokens or max_completion_tokens was set */
    bool enable_thinking;         /* chat_template_kwargs.enable_thinking (true) */
    folo_request_params params;   /* stop and stop_token_ids point into the arrays below */
    const char *stops[FOLO_OAI_MAX_STOPS];
    int32_t stop_ids[FOLO_OAI_MAX_STOP_IDS];
} folo_oai_request;

/* Reads body [body_len] bytes; params start from defaults (the model's
 * generation_config); token ids must be below vocab_size. Chat messages
 * are only checked to be an array here: the engine's chat reader
 * (tokenizer/chat.h) validates them when the request is added. Logprobs:
 * completions' integer `logprobs` and chat's `logprobs: true` with
 * `top_logprobs` set params.sampling.logprobs (at most
 * FOLO_MAX_TOP_LOGPROBS). The prompt is scored (params.prompt_logprobs)
 * for vLLM's `prompt_logprobs` field (0..20, not with stream, as vLLM),
 * and for completions' echo with logprobs, whose logprobs then list the
 * prompt's tokens first (vLLM's precedence: the field's top count when
 * both are given, params.prompt_logprobs the larger). `max_tokens: 0` is
 * allowed only with echo (echo_only). */
int folo_oai_parse(folo_oai_kind kind, const char *body, size_t body_len, int vocab_size,
                   const folo_request_params *defaults, folo_oai_request *out,
                   folo_oai_error *err);
void folo_oai_request_free(folo_oai_request *r);

/* POST /tokenize, as vLLM reads it: {"prompt": text} or {"messages": [...]}
 * (the whole body then goes to folo_engine_tokenize_chat, which reads
 * add_generation_prompt, default true, and chat_template_kwargs);
 * add_special_tokens is accepted (Qwen3 adds no special tokens). */
typedef struct folo_oai_tokenize {
    json_t *root;         /* owned */
    const char *model;    /* NULL when absent */
    const char *prompt;   /* when !chat */
    bool chat;
} folo_oai_tokenize;
int folo_oai_parse_tokenize(const char *body, size_t body_len, folo_oai_tokenize *out,
                            folo_oai_error *err);

/* POST /detokenize: {"tokens": [ids below vocab_size]}. */
typedef struct folo_oai_detokenize {
    json_t *root;         /* owned */
    const char *model;
    int32_t *ids;         /* [n_ids], owned */
    int n_ids;
} folo_oai_detokenize;
int folo_oai_parse_detokenize(const char *body, size_t body_len, int vocab_size,
                              folo_oai_detokenize *out, folo_oai_error *err);
void folo_oai_detokenize_free(folo_oai_detokenize *d);

/* Fills err and returns -1, so a failure reads `return folo_oai_fail(...)`. */
int folo_oai_fail(folo_oai_error *err, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The error document of err (compact JSON, owned by the caller). */
char *folo_oai_error_json(const folo_oai_error *err);

/* "stop", "length", "abort", or NULL while running ("error" reads "abort":
 * the client sees a cut-short answer; the server logs why). */
const char *folo_oai_finish_name(folo_finish_reason reason);

/* The text of a choice or of a stream delta: the content and, in a chat
 * served with a reasoning parser (reasoning not NULL), the reasoning apart. */
typedef struct folo_oai_text {
    const char *text;
    size_t text_len;
    const char *reasoning;
    size_t reasoning_len;
} folo_oai_text;

/* One choice of a whole (non-streamed) response. */
typedef struct folo_oai_choice {
    folo_oai_text text;
    json_t *logprobs;     /* folo_oai_logprobs, stolen; NULL: null */
    json_t *prompt_logprobs; /* folo_oai_prompt_logprobs, stolen; NULL: left out. A chat
                                response carries choice 0's at its top level, as vLLM (its
                                choices share one prompt); the others' must be NULL */
    folo_finish_reason finish;
} folo_oai_choice;

/* One token with its logprob and the top alternatives, as text. */
typedef struct folo_oai_token {
    int32_t id;
    const char *text;
    bool none;            /* no logprob: the prompt's first token (null in the legacy shape) */
    float logprob;
    int32_t rank;         /* of id among all tokens (1 = the most likely) */
    int n_top;
    int32_t top_id[FOLO_MAX_TOP_LOGPROBS];
    const char *top_text[FOLO_MAX_TOP_LOGPROBS];
    float top_logprob[FOLO_MAX_TOP_LOGPROBS];
} folo_oai_token;

/* The "logprobs" member for [n] tokens: chat's {"content": [{token,
 * logprob, bytes, top_logprobs}]}, or completions' {tokens, token_logprobs,
 * top_logprobs, text_offset}, whose offsets (in characters, as Python
 * counts them) start at *text_offset and advance it past each token's
 * text. */
json_t *folo_oai_logprobs(folo_oai_kind kind, const folo_oai_token *tokens, int n,
                          size_t *text_offset);
/* vLLM's "prompt_logprobs" for a prompt's [n] tokens: null for the first,
 * then per token {"<id>": {logprob, rank, decoded_token}} for the token
 * itself and its top alternatives (ranks 1..k). */
json_t *folo_oai_prompt_logprobs(const folo_oai_token *tokens, int n);

typedef struct folo_oai_usage {
    int prompt_tokens;
    int completion_tokens;
} folo_oai_usage;

/* The whole response: "text_completion" or "chat.completion". */
json_t *folo_oai_response(folo_oai_kind kind, const char *id, int64_t created, const char *model,
                          const folo_oai_choice *choices, int n_choices,
                          const folo_oai_usage *usage);
/* One stream chunk for one choice: its new text (may be empty), the
 * logprobs of its tokens (stolen; NULL: null) and its finish reason
 * (FOLO_FINISH_NONE while running). A chat stream's first chunk of a
 * choice carries role "assistant" (first = true). include_usage adds
 * "usage": null, as OpenAI does on every chunk but the last. */
json_t *folo_oai_chunk(folo_oai_kind kind, const char *id, int64_t created, const char *model,
                       int index, const folo_oai_text *text, json_t *logprobs,
                       folo_finish_reason finish, bool first, bool include_usage);
/* The final usage chunk of stream_options.include_usage (empty choices). */
json_t *folo_oai_usage_chunk(folo_oai_kind kind, const char *id, int64_t created,
                             const char *model, const folo_oai_usage *usage);

#endif
