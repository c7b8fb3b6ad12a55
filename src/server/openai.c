/* OpenAI request parsing and response writing (see openai.h). */
#include "server/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/alloc.h"

/* Replaces each byte that does not start a valid UTF-8 character with '?',
 * in place. An error message may quote the client's bytes (Jansson's
 * "invalid UTF-8" and syntax errors do), and truncation may cut a character
 * in two; JSON strings must be valid UTF-8, so the error document could not
 * otherwise be written. */
static void scrub_utf8(char *s) {
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t used =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (used > 0) {
            i += (size_t)used;
        } else {
            s[i++] = '?';
        }
    }
}

int folo_oai_fail(folo_oai_error *err, int status, const char *param, const char *fmt, ...) {
    err->status = status;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    scrub_utf8(err->param);
    scrub_utf8(err->message);
    return -1;
}

static const char *error_type(int status) {
    switch (status) {
    case 401: return "AuthenticationError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 413: return "RequestTooLargeError";
    case 500: return "InternalServerError";
    case 503: return "ServiceUnavailableError";
    default: return "BadRequestError";
    }
}

char *folo_oai_error_json(const folo_oai_error *err) {
    json_t *inner = json_pack("{s:s, s:s, s:o, s:i}", "message", err->message, "type",
                              error_type(err->status), "param",
                              err->param[0] ? json_string(err->param) : json_null(), "code",
                              err->status);
    json_t *doc = json_pack("{s:o}", "error", inner);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return text;
}

/* ---- reading a request --------------------------------------------------- */

/* Each getter leaves *out alone when the field is absent or null. */
static int get_int(json_t *root, const char *key, long long lo, long long hi, int *out,
                   folo_oai_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v))
        return folo_oai_fail(err, 400, key, "%s must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return folo_oai_fail(err, 400, key, "%s must be in [%lld, %lld], got %lld", key, lo, hi,
                             (long long)x);
    *out = (int)x;
    return 0;
}

static int get_float(json_t *root, const char *key, double lo, double hi, bool lo_open,
                     float *out, folo_oai_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return folo_oai_fail(err, 400, key, "%s must be a number", key);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
        return folo_oai_fail(err, 400, key, "%s must be in %c%g, %g], got %g", key,
                             lo_open ? '(' : '[', lo, hi, x);
    *out = (float)x;
    return 0;
}

static int get_bool(json_t *root, const char *key, bool *out, folo_oai_error *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return folo_oai_fail(err, 400, key, "%s must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int parse_stop(json_t *root, folo_oai_request *r, folo_oai_error *err) {
    json_t *v = json_object_get(root, "stop");
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        r->stops[r->params.n_stop++] = json_string_value(v);
    } else if (json_is_array(v)) {
        if (json_array_size(v) > FOLO_OAI_MAX_STOPS)
            return folo_oai_fail(err, 400, "stop", "stop: at most %d strings", FOLO_OAI_MAX_STOPS);
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            if (!json_is_string(item) || json_string_length(item) == 0)
                return folo_oai_fail(err, 400, "stop", "stop[%zu] must be a non-empty string", i);
            r->stops[r->params.n_stop++] = json_string_value(item);
        }
    } else {
        return folo_oai_fail(err, 400, "stop", "stop must be a string or an array of strings");
    }
    r->params.stop = r->stops;
    return 0;
}

static int parse_stop_ids(json_t *root, folo_oai_request *r, folo_oai_error *err) {
    json_t *v = json_object_get(root, "stop_token_ids");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v) || json_array_size(v) > FOLO_OAI_MAX_STOP_IDS)
        return folo_oai_fail(err, 400, "stop_token_ids",
                             "stop_token_ids must be an array of at most %d token ids",
                             FOLO_OAI_MAX_STOP_IDS);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0 ||
            json_integer_value(item) > INT32_MAX)
            return folo_oai_fail(err, 400, "stop_token_ids",
                                 "stop_token_ids[%zu] must be a non-negative integer", i);
        r->stop_ids[r->params.n_stop_token_ids++] = (int32_t)json_integer_value(item);
    }
    r->params.stop_token_ids = r->stop_ids;
    return 0;
}

static int parse_stream(json_t *root, folo_oai_request *r, folo_oai_error *err) {
    if (get_bool(root, "stream", &r->stream, err) != 0) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (!so || json_is_null(so)) return 0;
    if (!json_is_object(so))
        return folo_oai_fail(err, 400, "stream_options", "stream_options must be an object");
    if (!r->stream)
        return folo_oai_fail(err, 400, "stream_options",
                             "stream_options is only allowed when stream is true");
    return get_bool(so, "include_usage", &r->include_usage, err);
}

/* Fields that ask for what this server does not do yet are refused rather
 * than silently ignored. */
static int refuse_unsupported(json_t *root, folo_oai_kind kind, folo_oai_error *err) {
    static const char *const k_fields[] = {"suffix", "best_of", "tools", "response_format",
                                           "echo", NULL};
    for (int i = 0; k_fields[i]; i++) {
        json_t *v = json_object_get(root, k_fields[i]);
        if (!v || json_is_null(v) || json_is_false(v)) continue;
        if (strcmp(k_fields[i], "best_of") == 0 && json_is_integer(v) &&
            json_integer_value(v) == 1)
            continue;
        if (strcmp(k_fields[i], "echo") == 0 && kind == FOLO_OAI_COMPLETION) continue;
        return folo_oai_fail(err, 400, k_fields[i], "%s is not supported by this server",
                             k_fields[i]);
    }
    return 0;
}

/* Parses body into *root, which must be a JSON object (*root is set even
 * then, for the caller to free). */
static int load_object(const char *body, size_t body_len, json_t **root, folo_oai_error *err) {
    json_error_t jerr;
    *root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return folo_oai_fail(err, 400, NULL, "invalid JSON body: %s (line %d, column %d)",
                             jerr.text, jerr.line, jerr.column);
    if (!json_is_object(*root))
        return folo_oai_fail(err, 400, NULL, "the request body must be a JSON object");
    return 0;
}

static int get_model(json_t *root, const char **out, folo_oai_error *err) {
    json_t *model = json_object_get(root, "model");
    if (!model || json_is_null(model)) return 0;
    if (!json_is_string(model)) return folo_oai_fail(err, 400, "model", "model must be a string");
    *out = json_string_value(model);
    return 0;
}

/* A prompt string: not empty, no NUL. */
static int check_prompt_text(json_t *prompt, folo_oai_error *err) {
    if (json_string_length(prompt) == 0)
        return folo_oai_fail(err, 400, "prompt", "prompt must not be empty");
    if (strlen(json_string_value(prompt)) != json_string_length(prompt))
        return folo_oai_fail(err, 400, "prompt", "prompt must not contain NUL characters");
    return 0;
}

/* The "prompt" string of /tokenize: required. */
static int get_prompt(json_t *root, const char **out, folo_oai_error *err) {
    json_t *prompt = json_object_get(root, "prompt");
    if (!prompt) return folo_oai_fail(err, 400, "prompt", "prompt is required");
    if (!json_is_string(prompt))
        return folo_oai_fail(err, 400, "prompt", "prompt must be a string");
    if (check_prompt_text(prompt, err) != 0) return -1;
    *out = json_string_value(prompt);
    return 0;
}

/* An array of token ids in [0, vocab_size); *ids is allocated. */
static int get_token_ids(json_t *v, const char *param, int vocab_size, int32_t **ids, int *n_ids,
                         folo_oai_error *err) {
    if (!json_is_array(v))
        return folo_oai_fail(err, 400, param, "%s must be an array of token ids", param);
    size_t n = json_array_size(v);
    *ids = folo_calloc(n ? n : 1, sizeof **ids);
    *n_ids = (int)n;
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item) {
        if (!json_is_integer(item) || json_integer_value(item) < 0 ||
            json_integer_value(item) >= vocab_size)
            return folo_oai_fail(err, 400, param, "%s[%zu] must be a token id in [0, %d)", param,
                                 i, vocab_size);
        (*ids)[i] = (int32_t)json_integer_value(item);
    }
    return 0;
}

/* Completions' "prompt": a string, a list of strings, a list of token ids,
 * or a list of lists of token ids (OpenAI's four forms). */
static int parse_prompts(json_t *root, int vocab_size, folo_oai_request *r,
                         folo_oai_error *err) {
    static const char k_forms[] =
        "prompt must be a string, a list of strings, a list of token ids or a list of such lists";
    json_t *prompt = json_object_get(root, "prompt");
    if (!prompt) return folo_oai_fail(err, 400, "prompt", "prompt is required");
    bool list = json_is_array(prompt);
    if (!list && !json_is_string(prompt)) return folo_oai_fail(err, 400, "prompt", k_forms);
    size_t n = list ? json_array_size(prompt) : 1;
    if (n == 0) return folo_oai_fail(err, 400, "prompt", "prompt must not be empty");
    json_t *first = list ? json_array_get(prompt, 0) : prompt;
    if (list && json_is_integer(first)) n = 1; /* one prompt of token ids */
    if (n > FOLO_OAI_MAX_PROMPTS)
        return folo_oai_fail(err, 400, "prompt", "prompt: at most %d prompts",
                             FOLO_OAI_MAX_PROMPTS);
    r->prompts = folo_calloc(n, sizeof *r->prompts);
    r->n_prompts = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *p = !list || json_is_integer(first) ? prompt : json_array_get(prompt, i);
        folo_oai_prompt *out = &r->prompts[i];
        if (json_is_string(p) && json_is_string(first)) {
            if (check_prompt_text(p, err) != 0) return -1;
            out->text = json_string_value(p);
        } else if (json_is_array(p) && !json_is_string(first)) {
            if (json_array_size(p) == 0)
                return folo_oai_fail(err, 400, "prompt", "prompt must not be empty");
            if (get_token_ids(p, "prompt", vocab_size, &out->ids, &out->n_ids, err) != 0)
                return -1;
        } else {
            return folo_oai_fail(err, 400, "prompt", k_forms);
        }
    }
    return 0;
}

/* completions: "logprobs": N; chat: "logprobs": true with "top_logprobs": N. */
static int parse_logprobs(json_t *root, folo_oai_kind kind, folo_sampling_params *sp,
                          folo_oai_error *err) {
    sp->logprobs = -1;
    if (kind == FOLO_OAI_COMPLETION)
        return get_int(root, "logprobs", 0, FOLO_MAX_TOP_LOGPROBS, &sp->logprobs, err);
    bool wanted = false;
    int top = -1;
    if (get_bool(root, "logprobs", &wanted, err) != 0 ||
        get_int(root, "top_logprobs", 0, FOLO_MAX_TOP_LOGPROBS, &top, err) != 0)
        return -1;
    if (top >= 0 && !wanted)
        return folo_oai_fail(err, 400, "top_logprobs",
                             "top_logprobs needs logprobs to be true");
    if (wanted) sp->logprobs = top > 0 ? top : 0;
    return 0;
}

static int parse_body(folo_oai_request *r, int vocab_size, folo_oai_error *err) {
    json_t *root = r->root;
    if (get_model(root, &r->model, err) != 0) return -1;
    if (r->kind == FOLO_OAI_COMPLETION) {
        if (parse_prompts(root, vocab_size, r, err) != 0 ||
            get_bool(root, "echo", &r->echo, err) != 0)
            return -1;
    } else {
        json_t *messages = json_object_get(root, "messages");
        if (!messages) return folo_oai_fail(err, 400, "messages", "messages is required");
        if (!json_is_array(messages) || json_array_size(messages) == 0)
            return folo_oai_fail(err, 400, "messages", "messages must be a non-empty array");
    }
    folo_request_params *p = &r->params;
    folo_sampling_params *sp = &p->sampling;
    r->prompt_logprobs = -1;
    /* max_tokens 0 scores the prompt (echo only; checked below). */
    int min_tokens = r->kind == FOLO_OAI_COMPLETION ? 0 : 1;
    if (get_int(root, "max_tokens", min_tokens, 1 << 24, &p->max_tokens, err) ||
        get_int(root, "prompt_logprobs", 0, FOLO_MAX_TOP_LOGPROBS, &r->prompt_logprobs, err) ||
        (r->kind == FOLO_OAI_CHAT &&
         get_int(root, "max_completion_tokens", 1, 1 << 24, &p->max_tokens, err)) ||
        get_int(root, "n", 1, FOLO_OAI_MAX_N, &p->n, err) ||
        get_int(root, "top_k", -1, 1 << 24, &sp->top_k, err) ||
        get_float(root, "temperature", 0, 100, false, &sp->temperature, err) ||
        get_float(root, "top_p", 0, 1, true, &sp->top_p, err) ||
        get_float(root, "min_p", 0, 1, false, &sp->min_p, err) ||
        get_float(root, "presence_penalty", -2, 2, false, &sp->presence_penalty, err) ||
        get_float(root, "frequency_penalty", -2, 2, false, &sp->frequency_penalty, err) ||
        get_float(root, "repetition_penalty", 0, 100, true, &sp->repetition_penalty, err) ||
        get_bool(root, "ignore_eos", &p->ignore_eos, err) || parse_stop(root, r, err) ||
        parse_stop_ids(root, r, err) || parse_stream(root, r, err) ||
        parse_logprobs(root, r->kind, sp, err) || refuse_unsupported(root, r->kind, err))
        return -1;
    if (r->prompt_logprobs > 0 && r->stream)
        return folo_oai_fail(err, 400, "prompt_logprobs",
                             "prompt_logprobs above 0 are not available when stream is true");
    if (r->stream) r->prompt_logprobs = -1; /* 0: accepted and left out, as vLLM does */
    if (p->max_tokens == 0) {
        if (!r->echo)
            return folo_oai_fail(err, 400, "max_tokens",
                                 "max_tokens: 0 is only allowed with echo (scoring the prompt)");
        r->echo_only = true;
        p->max_tokens = 1; /* generated and dropped, as vLLM does */
    }
    p->prompt_logprobs = r->prompt_logprobs;
    if (r->echo && sp->logprobs > p->prompt_logprobs) p->prompt_logprobs = sp->logprobs;
    if ((p->n > 0 ? p->n : 1) * (r->n_prompts > 0 ? r->n_prompts : 1) > FOLO_OAI_MAX_CHOICES)
        return folo_oai_fail(err, 400, "n", "prompts x n must be at most %d",
                             FOLO_OAI_MAX_CHOICES);
    r->max_tokens_given = (json_object_get(root, "max_tokens") &&
                           !json_is_null(json_object_get(root, "max_tokens"))) ||
                          (r->kind == FOLO_OAI_CHAT &&
                           json_object_get(root, "max_completion_tokens") &&
                           !json_is_null(json_object_get(root, "max_completion_tokens")));
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed))
            return folo_oai_fail(err, 400, "seed", "seed must be an integer");
        sp->seed = (uint64_t)json_integer_value(seed);
        sp->has_seed = true;
    }
    json_t *kwargs = json_object_get(root, "chat_template_kwargs");
    r->enable_thinking = true;
    if (kwargs && !json_is_null(kwargs)) {
        if (!json_is_object(kwargs))
            return folo_oai_fail(err, 400, "chat_template_kwargs",
                                 "chat_template_kwargs must be an object");
        if (get_bool(kwargs, "enable_thinking", &r->enable_thinking, err) != 0) return -1;
    }
    folo_error serr = {{0}};
    if (folo_sampling_validate(sp, &serr) != 0)
        return folo_oai_fail(err, 400, NULL, "%s", serr.message);
    return 0;
}

int folo_oai_parse(folo_oai_kind kind, const char *body, size_t body_len, int vocab_size,
                   const folo_request_params *defaults, folo_oai_request *out,
                   folo_oai_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->params = *defaults;
    out->params.stop = NULL;
    out->params.n_stop = 0;
    out->params.stop_token_ids = NULL;
    out->params.n_stop_token_ids = 0;
    if (load_object(body, body_len, &out->root, err) != 0) return -1;
    return parse_body(out, vocab_size, err);
}

void folo_oai_request_free(folo_oai_request *r) {
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i].ids);
    free(r->prompts);
    json_decref(r->root);
    r->prompts = NULL;
    r->n_prompts = 0;
    r->root = NULL;
}

/* ---- /tokenize and /detokenize ------------------------------------------- */

int folo_oai_parse_tokenize(const char *body, size_t body_len, folo_oai_tokenize *out,
                            folo_oai_error *err) {
    memset(out, 0, sizeof *out);
    if (load_object(body, body_len, &out->root, err) != 0 ||
        get_model(out->root, &out->model, err) != 0)
        return -1;
    bool flag = false;
    if (get_bool(out->root, "add_special_tokens", &flag, err) != 0 ||
        get_bool(out->root, "add_generation_prompt", &flag, err) != 0)
        return -1;
    json_t *messages = json_object_get(out->root, "messages");
    if (messages && !json_is_null(messages)) {
        if (!json_is_array(messages) || json_array_size(messages) == 0)
            return folo_oai_fail(err, 400, "messages", "messages must be a non-empty array");
        out->chat = true;
        return 0;
    }
    return get_prompt(out->root, &out->prompt, err);
}

int folo_oai_parse_detokenize(const char *body, size_t body_len, int vocab_size,
                              folo_oai_detokenize *out, folo_oai_error *err) {
    memset(out, 0, sizeof *out);
    if (load_object(body, body_len, &out->root, err) != 0 ||
        get_model(out->root, &out->model, err) != 0)
        return -1;
    json_t *tokens = json_object_get(out->root, "tokens");
    if (!tokens) return folo_oai_fail(err, 400, "tokens", "tokens is required");
    return get_token_ids(tokens, "tokens", vocab_size, &out->ids, &out->n_ids, err);
}

void folo_oai_detokenize_free(folo_oai_detokenize *d) {
    json_decref(d->root);
    free(d->ids);
    d->root = NULL;
    d->ids = NULL;
}

/* ---- writing responses --------------------------------------------------- */

const char *folo_oai_finish_name(folo_finish_reason reason) {
    switch (reason) {
    case FOLO_FINISH_NONE: return NULL;
    case FOLO_FINISH_STOP: return "stop";
    case FOLO_FINISH_LENGTH: return "length";
    case FOLO_FINISH_ABORT:
    case FOLO_FINISH_ERROR: return "abort";
    }
    return NULL;
}

static json_t *finish_json(folo_finish_reason reason) {
    const char *name = folo_oai_finish_name(reason);
    return name ? json_string(name) : json_null();
}

/* Text from the engine is valid UTF-8 (its decoder holds back partial
 * characters); an invalid string still never makes a NULL member. */
static json_t *text_json(const char *text, size_t len) {
    json_t *s = json_stringn(text, len);
    return s ? s : json_string("");
}

static json_t *usage_json(const folo_oai_usage *u) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", u->prompt_tokens, "completion_tokens",
                     u->completion_tokens, "total_tokens",
                     u->prompt_tokens + u->completion_tokens);
}

static json_t *envelope(const char *id, const char *object, int64_t created, const char *model) {
    return json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", object, "created",
                     (json_int_t)created, "model", model);
}

json_t *folo_oai_response(folo_oai_kind kind, const char *id, int64_t created, const char *model,
                          const folo_oai_choice *choices, int n_choices,
                          const folo_oai_usage *usage) {
    bool chat = kind == FOLO_OAI_CHAT;
    json_t *doc = envelope(id, chat ? "chat.completion" : "text_completion", created, model);
    json_t *arr = json_array();
    for (int i = 0; i < n_choices; i++) {
        const folo_oai_choice *c = &choices[i];
        json_t *choice = json_pack("{s:i}", "index", i);
        const folo_oai_text *t = &c->text;
        if (chat) {
            json_t *message = json_pack("{s:s}", "role", "assistant");
            /* With a reasoning parser, an empty part is null, as in vLLM. */
            if (t->reasoning)
                json_object_set_new(message, "reasoning_content",
                                    t->reasoning_len ? text_json(t->reasoning, t->reasoning_len)
                                                     : json_null());
            json_object_set_new(message, "content",
                                t->reasoning && t->text_len == 0
                                    ? json_null()
                                    : text_json(t->text, t->text_len));
            json_object_set_new(choice, "message", message);
        } else {
            json_object_set_new(choice, "text", text_json(t->text, t->text_len));
        }
        json_object_set_new(choice, "logprobs", c->logprobs ? c->logprobs : json_null());
        json_object_set_new(choice, "finish_reason", finish_json(c->finish));
        if (c->prompt_logprobs && !chat)
            json_object_set_new(choice, "prompt_logprobs", c->prompt_logprobs);
        json_array_append_new(arr, choice);
    }
    json_object_set_new(doc, "choices", arr);
    json_object_set_new(doc, "usage", usage_json(usage));
    if (chat && n_choices > 0 && choices[0].prompt_logprobs)
        json_object_set_new(doc, "prompt_logprobs", choices[0].prompt_logprobs);
    return doc;
}

json_t *folo_oai_chunk(folo_oai_kind kind, const char *id, int64_t created, const char *model,
                       int index, const folo_oai_text *text, json_t *logprobs,
                       folo_finish_reason finish, bool first, bool include_usage) {
    bool chat = kind == FOLO_OAI_CHAT;
    json_t *doc = envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
    json_t *choice = json_pack("{s:i}", "index", index);
    if (chat) {
        json_t *delta = json_object();
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (text->reasoning_len > 0)
            json_object_set_new(delta, "reasoning_content",
                                text_json(text->reasoning, text->reasoning_len));
        if (text->text_len > 0 ||
            (text->reasoning_len == 0 && (first || finish == FOLO_FINISH_NONE)))
            json_object_set_new(delta, "content", text_json(text->text, text->text_len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", text_json(text->text, text->text_len));
    }
    json_object_set_new(choice, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(choice, "finish_reason", finish_json(finish));
    json_object_set_new(doc, "choices", json_pack("[o]", choice));
    if (include_usage) json_object_set_new(doc, "usage", json_null());
    return doc;
}

/* A logprob as JSON: -inf (a token top-k or top-p ruled out) cannot be
 * written, so it reads -9999.0, as vLLM writes it. */
static json_t *logprob_json(float lp) { return json_real(isfinite(lp) ? lp : -9999.0); }

/* The UTF-8 bytes of a token's text, as chat logprobs list them. */
static json_t *bytes_json(const char *text) {
    json_t *arr = json_array();
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        json_array_append_new(arr, json_integer(*p));
    return arr;
}

static json_t *chat_token(const char *text, float lp) {
    return json_pack("{s:o, s:o, s:o}", "token", text_json(text, strlen(text)), "logprob",
                     logprob_json(lp), "bytes", bytes_json(text));
}

/* Characters of UTF-8 text (the bytes that do not continue a character). */
static size_t utf8_chars(const char *text) {
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) n += (*p & 0xC0) != 0x80;
    return n;
}

json_t *folo_oai_logprobs(folo_oai_kind kind, const folo_oai_token *tokens, int n,
                          size_t *text_offset) {
    if (kind == FOLO_OAI_CHAT) {
        json_t *content = json_array();
        for (int i = 0; i < n; i++) {
            const folo_oai_token *t = &tokens[i];
            json_t *entry = chat_token(t->text, t->logprob), *top = json_array();
            for (int j = 0; j < t->n_top; j++)
                json_array_append_new(top, chat_token(t->top_text[j], t->top_logprob[j]));
            json_object_set_new(entry, "top_logprobs", top);
            json_array_append_new(content, entry);
        }
        return json_pack("{s:o}", "content", content);
    }
    json_t *texts = json_array(), *lps = json_array(), *tops = json_array(),
           *offsets = json_array();
    for (int i = 0; i < n; i++) {
        const folo_oai_token *t = &tokens[i];
        json_array_append_new(texts, text_json(t->text, strlen(t->text)));
        json_array_append_new(lps, t->none ? json_null() : logprob_json(t->logprob));
        /* The sampled token and the top ones, by text, as vLLM lists them. */
        json_t *top = t->none ? json_null() : json_object();
        if (!t->none) json_object_set_new(top, t->text, logprob_json(t->logprob));
        for (int j = 0; !t->none && j < t->n_top; j++)
            json_object_set_new(top, t->top_text[j], logprob_json(t->top_logprob[j]));
        json_array_append_new(tops, top);
        json_array_append_new(offsets, json_integer((json_int_t)*text_offset));
        *text_offset += utf8_chars(t->text);
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", texts, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offsets);
}

static json_t *ranked_json(float lp, int32_t rank, const char *text) {
    return json_pack("{s:o, s:i, s:o}", "logprob", logprob_json(lp), "rank", (int)rank,
                     "decoded_token", text_json(text, strlen(text)));
}

json_t *folo_oai_prompt_logprobs(const folo_oai_token *tokens, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        const folo_oai_token *t = &tokens[i];
        if (t->none) {
            json_array_append_new(arr, json_null());
            continue;
        }
        /* The token, then the top ones; a top one that is the token itself
         * takes its place with its top rank, as vLLM builds the dict. */
        json_t *entry = json_object();
        char key[16];
        snprintf(key, sizeof key, "%d", (int)t->id);
        json_object_set_new(entry, key, ranked_json(t->logprob, t->rank, t->text));
        for (int j = 0; j < t->n_top; j++) {
            snprintf(key, sizeof key, "%d", (int)t->top_id[j]);
            json_object_set_new(entry, key, ranked_json(t->top_logprob[j], j + 1, t->top_text[j]));
        }
        json_array_append_new(arr, entry);
    }
    return arr;
}

json_t *folo_oai_usage_chunk(folo_oai_kind kind, const char *id, int64_t created,
                             const char *model, const folo_oai_usage *usage) {
    bool chat = kind == FOLO_OAI_CHAT;
    json_t *doc = envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
    json_object_set_new(doc, "choices", json_array());
    json_object_set_new(doc, "usage", usage_json(usage));
    return doc;
}
