/* libFuzzer target for the server's request parsing (server/openai.c) and
 * its reasoning parser (server/reasoning.c).
 *
 * The first byte picks what the rest is: 'c' a /v1/completions body, 'h' a
 * /v1/chat/completions body, 't' a /tokenize body, 'd' a /detokenize body,
 * 'r' model output for the Qwen3 reasoning parser (any other byte: by its
 * value modulo 5). A body must either be refused with an error that has a
 * status, a message and a well-formed JSON document, or be accepted with
 * every field in range, and the response written from it must be JSON.
 * The reasoning parser must split the text the same way whole and one byte
 * at a time, losing nothing but the tags. ASan and UBSan watch the rest.
 * Built by fuzz/CMakeLists.txt and run by scripts/fuzz.sh. */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"
#include "server/reasoning.h"

#define VOCAB 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(const folo_oai_error *err) {
    if (err->status < 400 || err->status > 599 || err->message[0] == '\0') abort();
    char *text = folo_oai_error_json(err);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    if (!doc) abort();
    json_decref(doc);
    free(text);
}

static void check_generate(folo_oai_kind kind, const char *body, size_t len) {
    folo_request_params defaults = {.sampling = folo_sampling_default(), .max_tokens = 16,
                                    .n = 1, .prompt_logprobs = -1};
    folo_oai_request r;
    folo_oai_error err;
    if (folo_oai_parse(kind, body, len, VOCAB, &defaults, &r, &err) != 0) {
        check_error(&err);
        folo_oai_request_free(&r);
        return;
    }
    const folo_request_params *p = &r.params;
    if (p->max_tokens < 1 || p->n < 1 || p->n > FOLO_OAI_MAX_N ||
        p->n_stop > FOLO_OAI_MAX_STOPS || p->n_stop_token_ids > FOLO_OAI_MAX_STOP_IDS ||
        p->sampling.logprobs > FOLO_MAX_TOP_LOGPROBS ||
        p->prompt_logprobs > FOLO_MAX_TOP_LOGPROBS || (r.echo_only && !r.echo) ||
        (r.prompt_logprobs >= 0 && r.stream))
        abort();
    if (kind == FOLO_OAI_COMPLETION &&
        (r.n_prompts < 1 || r.n_prompts > FOLO_OAI_MAX_PROMPTS ||
         r.n_prompts * p->n > FOLO_OAI_MAX_CHOICES))
        abort();
    for (int i = 0; i < r.n_prompts; i++) {
        const folo_oai_prompt *pr = &r.prompts[i];
        if (pr->text ? pr->text[0] == '\0' : pr->n_ids < 1) abort();
        for (int j = 0; !pr->text && j < pr->n_ids; j++)
            if (pr->ids[j] < 0 || pr->ids[j] >= VOCAB) abort();
    }
    /* Answer with the first prompt (or stop string) as the text. */
    const char *text = r.n_prompts && r.prompts[0].text ? r.prompts[0].text
                       : p->n_stop                     ? p->stop[0]
                                                       : "";
    folo_oai_choice choice = {.text = {.text = text, .text_len = strlen(text)},
                              .finish = FOLO_FINISH_STOP};
    folo_oai_usage usage = {1, 1};
    json_t *doc = folo_oai_response(kind, "id", 0, "model", &choice, 1, &usage);
    char *out = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (!out) abort();
    free(out);
    json_decref(doc);
    folo_oai_request_free(&r);
}

static void check_tokenize(const char *body, size_t len) {
    folo_oai_tokenize t;
    folo_oai_error err;
    if (folo_oai_parse_tokenize(body, len, &t, &err) != 0) check_error(&err);
    else if (!t.chat && (!t.prompt || t.prompt[0] == '\0')) abort();
    json_decref(t.root);
}

static void check_detokenize(const char *body, size_t len) {
    folo_oai_detokenize d;
    folo_oai_error err;
    if (folo_oai_parse_detokenize(body, len, VOCAB, &d, &err) != 0) check_error(&err);
    for (int i = 0; d.ids && i < d.n_ids; i++)
        if (d.ids[i] < 0 || d.ids[i] >= VOCAB) abort();
    folo_oai_detokenize_free(&d);
}

static void split(const char *text, size_t len, bool thinking, size_t step, folo_buf *reasoning,
                  folo_buf *content) {
    folo_reasoning r;
    folo_reasoning_init(&r, thinking);
    for (size_t at = 0; at <= len; at += step) {
        size_t n = len - at < step ? len - at : step;
        folo_reasoning_feed(&r, text + at, n, at + step > len, reasoning, content);
    }
    folo_reasoning_free(&r);
}

static void check_reasoning(const char *text, size_t len) {
    bool thinking = len > 0 && (text[0] & 1);
    folo_buf r1 = {0}, c1 = {0}, r2 = {0}, c2 = {0};
    split(text, len, thinking, len + 1, &r1, &c1);
    split(text, len, thinking, 1, &r2, &c2);
    if (r1.len != r2.len || c1.len != c2.len || r1.len + c1.len > len ||
        memcmp(folo_buf_str(&r1), folo_buf_str(&r2), r1.len) != 0 ||
        memcmp(folo_buf_str(&c1), folo_buf_str(&c2), c1.len) != 0)
        abort();
    folo_buf_free(&r1);
    folo_buf_free(&c1);
    folo_buf_free(&r2);
    folo_buf_free(&c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    static const char k_modes[] = "chtdr";
    const char *mode = memchr(k_modes, data[0], 5);
    switch (mode ? mode - k_modes : data[0] % 5) {
    case 0: check_generate(FOLO_OAI_COMPLETION, body, len); break;
    case 1: check_generate(FOLO_OAI_CHAT, body, len); break;
    case 2: check_tokenize(body, len); break;
    case 3: check_detokenize(body, len); break;
    default: check_reasoning(body, len); break;
    }
    return 0;
}
