/* OpenAI request parsing and response writing (see openai.h). */
#include "server/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int folo_oai_fail(folo_oai_error *err, int status, const char *param, const char *fmt, ...) {
    err->status = status;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *error_type(int status) {
    switch (status) {
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 413: return "RequestTooLargeError";
    case 500: return "InternalServerError";
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
static int refuse_unsupported(json_t *root, folo_oai_error *err) {
    static const char *const k_fields[] = {"logprobs", "top_logprobs", "echo", "suffix",
                                           "best_of", "tools", "response_format", NULL};
    for (int i = 0; k_fields[i]; i++) {
        json_t *v = json_object_get(root, k_fields[i]);
        if (!v || json_is_null(v) || json_is_false(v)) continue;
        if (strcmp(k_fields[i], "best_of") == 0 && json_is_integer(v) &&
            json_integer_value(v) == 1)
            continue;
        return folo_oai_fail(err, 400, k_fields[i], "%s is not supported by this server",
                             k_fields[i]);
    }
    return 0;
}

static int parse_body(folo_oai_request *r, folo_oai_error *err) {
    json_t *root = r->root;
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model))
            return folo_oai_fail(err, 400, "model", "model must be a string");
        r->model = json_string_value(model);
    }
    if (r->kind == FOLO_OAI_COMPLETION) {
        json_t *prompt = json_object_get(root, "prompt");
        if (!prompt) return folo_oai_fail(err, 400, "prompt", "prompt is required");
        if (!json_is_string(prompt))
            return folo_oai_fail(err, 400, "prompt", "prompt must be a string");
        if (json_string_length(prompt) == 0)
            return folo_oai_fail(err, 400, "prompt", "prompt must not be empty");
        if (strlen(json_string_value(prompt)) != json_string_length(prompt))
            return folo_oai_fail(err, 400, "prompt", "prompt must not contain NUL characters");
        r->prompt = json_string_value(prompt);
    } else {
        json_t *messages = json_object_get(root, "messages");
        if (!messages) return folo_oai_fail(err, 400, "messages", "messages is required");
        if (!json_is_array(messages) || json_array_size(messages) == 0)
            return folo_oai_fail(err, 400, "messages", "messages must be a non-empty array");
    }
    folo_request_params *p = &r->params;
    folo_sampling_params *sp = &p->sampling;
    if (get_int(root, "max_tokens", 1, 1 << 24, &p->max_tokens, err) ||
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
        refuse_unsupported(root, err))
        return -1;
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
    if (kwargs && !json_is_null(kwargs)) {
        bool thinking = true;
        if (!json_is_object(kwargs))
            return folo_oai_fail(err, 400, "chat_template_kwargs",
                                 "chat_template_kwargs must be an object");
        if (get_bool(kwargs, "enable_thinking", &thinking, err) != 0) return -1;
    }
    folo_error serr = {{0}};
    if (folo_sampling_validate(sp, &serr) != 0)
        return folo_oai_fail(err, 400, NULL, "%s", serr.message);
    return 0;
}

int folo_oai_parse(folo_oai_kind kind, const char *body, size_t body_len,
                   const folo_request_params *defaults, folo_oai_request *out,
                   folo_oai_error *err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->params = *defaults;
    out->params.stop = NULL;
    out->params.n_stop = 0;
    out->params.stop_token_ids = NULL;
    out->params.n_stop_token_ids = 0;
    json_error_t jerr;
    out->root = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!out->root)
        return folo_oai_fail(err, 400, NULL, "invalid JSON body: %s (line %d, column %d)",
                             jerr.text, jerr.line, jerr.column);
    if (!json_is_object(out->root))
        return folo_oai_fail(err, 400, NULL, "the request body must be a JSON object");
    return parse_body(out, err);
}

void folo_oai_request_free(folo_oai_request *r) {
    json_decref(r->root);
    r->root = NULL;
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
        json_t *text = text_json(c->text, c->text_len);
        if (chat)
            json_object_set_new(choice, "message",
                                json_pack("{s:s, s:o}", "role", "assistant", "content", text));
        else
            json_object_set_new(choice, "text", text);
        json_object_set_new(choice, "logprobs", json_null());
        json_object_set_new(choice, "finish_reason", finish_json(c->finish));
        json_array_append_new(arr, choice);
    }
    json_object_set_new(doc, "choices", arr);
    json_object_set_new(doc, "usage", usage_json(usage));
    return doc;
}

json_t *folo_oai_chunk(folo_oai_kind kind, const char *id, int64_t created, const char *model,
                       int index, const char *text, size_t text_len, folo_finish_reason finish,
                       bool first, bool include_usage) {
    bool chat = kind == FOLO_OAI_CHAT;
    json_t *doc = envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
    json_t *choice = json_pack("{s:i}", "index", index);
    if (chat) {
        json_t *delta = json_object();
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (text_len > 0 || first || finish == FOLO_FINISH_NONE)
            json_object_set_new(delta, "content", text_json(text, text_len));
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set_new(choice, "text", text_json(text, text_len));
    }
    json_object_set_new(choice, "logprobs", json_null());
    json_object_set_new(choice, "finish_reason", finish_json(finish));
    json_object_set_new(doc, "choices", json_pack("[o]", choice));
    if (include_usage) json_object_set_new(doc, "usage", json_null());
    return doc;
}

json_t *folo_oai_usage_chunk(folo_oai_kind kind, const char *id, int64_t created,
                             const char *model, const folo_oai_usage *usage) {
    bool chat = kind == FOLO_OAI_CHAT;
    json_t *doc = envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, model);
    json_object_set_new(doc, "choices", json_array());
    json_object_set_new(doc, "usage", usage_json(usage));
    return doc;
}
