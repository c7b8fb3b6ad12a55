/* Rendering of the Qwen3 chat format (see chat.h).
 *
 * This is the official Jinja template of tokenizer_config.json translated
 * statement by statement; the comments quote the template where its rule is
 * not obvious. Python string semantics are reproduced exactly: split()[-1]
 * is "after the last separator", split()[0] "before the first",
 * strip('\n') / lstrip('\n') / rstrip('\n') remove newlines only, and a
 * string is true when non-empty.
 *
 * Invariant: the output is a pure function of the messages and options;
 * nothing is allocated except in `out`. Callers: `folo run --chat`,
 * `folo template`, the HTTP server's chat endpoint. */
#include "tokenizer/chat.h"

#include <string.h>

typedef struct span {
    const char *data;
    size_t len;
} span;

static span span_of(const char *s) { return (span){s ? s : "", s ? strlen(s) : 0}; }

static span lstrip_nl(span s) {
    while (s.len > 0 && s.data[0] == '\n') s.data++, s.len--;
    return s;
}

static span rstrip_nl(span s) {
    while (s.len > 0 && s.data[s.len - 1] == '\n') s.len--;
    return s;
}

static bool starts_with(span s, const char *prefix) {
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.data, prefix, n) == 0;
}

static bool ends_with(span s, const char *suffix) {
    size_t n = strlen(suffix);
    return s.len >= n && memcmp(s.data + s.len - n, suffix, n) == 0;
}

/* Start of the last occurrence of needle in s, or NULL. */
static const char *find_last(span s, const char *needle) {
    size_t n = strlen(needle);
    const char *last = NULL;
    for (const char *p = s.data; (p = memmem(p, s.len - (size_t)(p - s.data), needle, n)) != NULL;
         p++)
        last = p;
    return last;
}

static void put(folo_buf *out, span s) { folo_buf_append(out, s.data, s.len); }

static bool role_is(const folo_chat_message *m, const char *role) {
    return strcmp(m->role, role) == 0;
}

/* The tools system block: the first system message's content (if any), then
 * every tool definition on its own line. */
static void render_tools(const folo_chat_message *messages, const folo_chat_options *opt,
                         folo_buf *out) {
    folo_buf_puts(out, "<|im_start|>system\n");
    if (role_is(&messages[0], "system")) {
        put(out, span_of(messages[0].content));
        folo_buf_puts(out, "\n\n");
    }
    folo_buf_puts(out, "# Tools\n\nYou may call one or more functions to assist with the user "
                       "query.\n\nYou are provided with function signatures within "
                       "<tools></tools> XML tags:\n<tools>");
    for (int i = 0; i < opt->n_tools; i++) {
        folo_buf_puts(out, "\n");
        folo_buf_puts(out, opt->tools_json[i]);
    }
    folo_buf_puts(out, "\n</tools>\n\nFor each function call, return a json object with "
                       "function name and arguments within <tool_call></tool_call> XML tags:\n"
                       "<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                       "<args-json-object>}\n</tool_call><|im_end|>\n");
}

/* ns.last_query_index: the last user message that is not a tool response
 * wrapped in <tool_response>...</tool_response>; the last index if none. */
static int last_query_index(const folo_chat_message *messages, int n) {
    for (int i = n - 1; i >= 0; i--) {
        span c = span_of(messages[i].content);
        if (role_is(&messages[i], "user") &&
            !(starts_with(c, "<tool_response>") && ends_with(c, "</tool_response>")))
            return i;
    }
    return n - 1;
}

static void render_assistant(const folo_chat_message *m, bool is_last, bool after_last_query,
                             folo_buf *out) {
    span content = span_of(m->content), reasoning = {"", 0};
    if (m->reasoning_content) {
        reasoning = span_of(m->reasoning_content);
    } else if (find_last(content, "</think>")) {
        /* content = content.split('</think>')[-1].lstrip('\n')
         * reasoning = content.split('</think>')[0].rstrip('\n')
         *                    .split('<think>')[-1].lstrip('\n') */
        span whole = content;
        const char *last_close = find_last(whole, "</think>");
        content = lstrip_nl((span){last_close + 8, whole.len - (size_t)(last_close - whole.data) - 8});
        const char *first_close = memmem(whole.data, whole.len, "</think>", 8);
        reasoning = rstrip_nl((span){whole.data, (size_t)(first_close - whole.data)});
        const char *open = find_last(reasoning, "<think>");
        if (open) reasoning = (span){open + 7, reasoning.len - (size_t)(open - reasoning.data) - 7};
        reasoning = lstrip_nl(reasoning);
    }
    folo_buf_puts(out, "<|im_start|>assistant\n");
    /* {%- if loop.last or (not loop.last and reasoning_content) %} */
    if (after_last_query && (is_last || reasoning.len > 0)) {
        folo_buf_puts(out, "<think>\n");
        put(out, lstrip_nl(rstrip_nl(reasoning)));
        folo_buf_puts(out, "\n</think>\n\n");
        put(out, lstrip_nl(content));
    } else {
        put(out, content);
    }
    for (int i = 0; i < m->n_tool_calls; i++) {
        /* {%- if (loop.first and content) or (not loop.first) %} */
        if (i > 0 || content.len > 0) folo_buf_puts(out, "\n");
        folo_buf_puts(out, "<tool_call>\n{\"name\": \"");
        put(out, span_of(m->tool_calls[i].name));
        folo_buf_puts(out, "\", \"arguments\": ");
        put(out, span_of(m->tool_calls[i].arguments_json));
        folo_buf_puts(out, "}\n</tool_call>");
    }
    folo_buf_puts(out, "<|im_end|>\n");
}

int folo_chat_render(const folo_chat_message *messages, int n_messages,
                     const folo_chat_options *opt, folo_buf *out, folo_error *err) {
    if (n_messages <= 0) return folo_fail(err, "the conversation has no messages");
    for (int i = 0; i < n_messages; i++) {
        const char *role = messages[i].role;
        if (!role) return folo_fail(err, "messages[%d] has no role", i);
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") &&
            strcmp(role, "tool"))
            return folo_fail(err, "messages[%d]: unknown role '%s' (expected system, user, "
                                  "assistant or tool)", i, role);
    }
    if (opt->n_tools > 0) {
        render_tools(messages, opt, out);
    } else if (role_is(&messages[0], "system")) {
        folo_buf_puts(out, "<|im_start|>system\n");
        put(out, span_of(messages[0].content));
        folo_buf_puts(out, "<|im_end|>\n");
    }
    int last_query = last_query_index(messages, n_messages);
    for (int i = 0; i < n_messages; i++) {
        const folo_chat_message *m = &messages[i];
        bool is_last = i == n_messages - 1;
        if (role_is(m, "user") || (role_is(m, "system") && i > 0)) {
            folo_buf_puts(out, "<|im_start|>");
            folo_buf_puts(out, m->role);
            folo_buf_puts(out, "\n");
            put(out, span_of(m->content));
            folo_buf_puts(out, "<|im_end|>\n");
        } else if (role_is(m, "assistant")) {
            render_assistant(m, is_last, i > last_query, out);
        } else if (role_is(m, "tool")) {
            /* Consecutive tool results share one user turn. */
            if (i == 0 || !role_is(&messages[i - 1], "tool")) folo_buf_puts(out, "<|im_start|>user");
            folo_buf_puts(out, "\n<tool_response>\n");
            put(out, span_of(m->content));
            folo_buf_puts(out, "\n</tool_response>");
            if (is_last || !role_is(&messages[i + 1], "tool")) folo_buf_puts(out, "<|im_end|>\n");
        }
    }
    if (opt->add_generation_prompt) {
        folo_buf_puts(out, "<|im_start|>assistant\n");
        if (!opt->enable_thinking) folo_buf_puts(out, "<think>\n\n</think>\n\n");
    }
    if (!out->data) folo_buf_append(out, "", 0);
    return 0;
}
