/* OpenAI-style JSON -> folo_chat_conversation (see chat.h).
 *
 * What it owns: the checking of every field's type (errors name the message
 * index and field), and the Python-compatible JSON writer that stands in
 * for the template's `tojson` filter (json.dumps with ensure_ascii=False:
 * ", " and ": " separators, keys in document order, non-ASCII written as
 * is, floats in Python's shortest repr).
 *
 * Invariant: a parsed conversation keeps a reference on the Jansson
 * document, so message strings point into it without copies; strings the
 * parser writes (tool arguments and tool definitions) are owned and freed
 * by folo_chat_conversation_free. Callers: `folo template`, `folo run
 * --chat`, the HTTP server. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "tokenizer/chat.h"

/* ----------------------------------------------- Python-style JSON dump --- */

static void write_string(const char *s, size_t n, folo_buf *out) {
    folo_buf_puts(out, "\"");
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char hex[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(hex, sizeof hex, "\\u%04x", c);
                esc = hex;
            }
        }
        if (!esc) continue;
        folo_buf_append(out, s + run, i - run);
        folo_buf_puts(out, esc);
        run = i + 1;
    }
    folo_buf_append(out, s + run, n - run);
    folo_buf_puts(out, "\"");
}

/* Python's repr(float): the shortest digits that read back to x, written
 * positionally when the decimal exponent is in [-4, 16), else as
 * d.ddde±XX. */
static void write_float(double x, folo_buf *out) {
    if (x == 0) {
        folo_buf_puts(out, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    char sci[40];
    for (int precision = 0; precision < 17; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision, x);
        if (strtod(sci, NULL) == x) break;
    }
    /* sci is [-]d[.ddd]e±XX */
    const char *p = sci;
    if (*p == '-') folo_buf_puts(out, "-"), p++;
    char digits[24];
    int n_digits = 0;
    for (; *p != 'e'; p++)
        if (*p != '.') digits[n_digits++] = *p;
    while (n_digits > 1 && digits[n_digits - 1] == '0') n_digits--;
    int point = atoi(p + 1) + 1; /* digits are 0.DDD x 10^point */
    if (point > -4 && point <= 16) {
        if (point <= 0) {
            folo_buf_puts(out, "0.");
            for (int i = 0; i < -point; i++) folo_buf_puts(out, "0");
            folo_buf_append(out, digits, (size_t)n_digits);
        } else if (point >= n_digits) {
            folo_buf_append(out, digits, (size_t)n_digits);
            for (int i = n_digits; i < point; i++) folo_buf_puts(out, "0");
            folo_buf_puts(out, ".0");
        } else {
            folo_buf_append(out, digits, (size_t)point);
            folo_buf_puts(out, ".");
            folo_buf_append(out, digits + point, (size_t)(n_digits - point));
        }
    } else {
        folo_buf_append(out, digits, 1);
        if (n_digits > 1) {
            folo_buf_puts(out, ".");
            folo_buf_append(out, digits + 1, (size_t)(n_digits - 1));
        }
        folo_buf_printf(out, "e%c%02d", point - 1 < 0 ? '-' : '+', abs(point - 1));
    }
}

void folo_chat_write_json(const json_t *v, folo_buf *out) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        folo_buf_puts(out, "{");
        const char *key;
        json_t *item;
        bool first = true;
        json_object_foreach((json_t *)v, key, item) {
            if (!first) folo_buf_puts(out, ", ");
            first = false;
            write_string(key, strlen(key), out);
            folo_buf_puts(out, ": ");
            folo_chat_write_json(item, out);
        }
        folo_buf_puts(out, "}");
        break;
    }
    case JSON_ARRAY: {
        folo_buf_puts(out, "[");
        size_t i;
        json_t *item;
        json_array_foreach((json_t *)v, i, item) {
            if (i) folo_buf_puts(out, ", ");
            folo_chat_write_json(item, out);
        }
        folo_buf_puts(out, "]");
        break;
    }
    case JSON_STRING: write_string(json_string_value(v), json_string_length(v), out); break;
    case JSON_INTEGER: folo_buf_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
    case JSON_REAL: write_float(json_real_value(v), out); break;
    case JSON_TRUE: folo_buf_puts(out, "true"); break;
    case JSON_FALSE: folo_buf_puts(out, "false"); break;
    case JSON_NULL: folo_buf_puts(out, "null"); break;
    }
}

/* -------------------------------------------------------------- reading --- */

static const char *type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static char *own(folo_chat_conversation *conv, folo_buf *text) {
    conv->owned = folo_realloc(conv->owned, (size_t)(conv->n_owned + 1) * sizeof *conv->owned);
    if (!text->data) folo_buf_append(text, "", 0);
    conv->owned[conv->n_owned++] = text->data;
    *text = (folo_buf){0};
    return conv->owned[conv->n_owned - 1];
}

/* A string field that may be absent or null (*out = NULL then). */
static int optional_string(const json_t *msg, const char *key, const char **out, int index,
                           folo_error *err) {
    json_t *v = json_object_get(msg, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return folo_fail(err, "messages[%d].%s must be a string or null, not %s", index, key,
                         type_name(v));
    *out = json_string_value(v);
    return 0;
}

static int read_tool_call(folo_chat_conversation *conv, const json_t *call, int index, size_t k,
                          folo_tool_call *out, folo_error *err) {
    if (!json_is_object(call))
        return folo_fail(err, "messages[%d].tool_calls[%zu] must be an object, not %s", index, k,
                         type_name(call));
    /* {%- if tool_call.function %}{%- set tool_call = tool_call.function %} */
    const json_t *fn = json_object_get(call, "function");
    const char *prefix = ".function";
    if (fn && !json_is_null(fn) && !json_is_object(fn))
        return folo_fail(err, "messages[%d].tool_calls[%zu].function must be an object, not %s",
                         index, k, type_name(fn));
    if (!fn || json_is_null(fn) || json_object_size(fn) == 0) {
        fn = call;
        prefix = "";
    }
    const json_t *name = json_object_get(fn, "name");
    if (!json_is_string(name))
        return folo_fail(err, "messages[%d].tool_calls[%zu]%s.name must be a string", index, k,
                         prefix);
    const json_t *args = json_object_get(fn, "arguments");
    if (!json_is_string(args) && !json_is_object(args))
        return folo_fail(err, "messages[%d].tool_calls[%zu]%s.arguments must be a string or an "
                              "object, not %s", index, k, prefix,
                         args ? type_name(args) : "missing");
    out->name = json_string_value(name);
    if (json_is_string(args)) {
        out->arguments_json = json_string_value(args);
    } else {
        folo_buf text = {0};
        folo_chat_write_json(args, &text);
        out->arguments_json = own(conv, &text);
    }
    return 0;
}

/* First non-null of reasoning_content, thinking, reasoning (transformers
 * aliases the older names to reasoning_content before rendering). */
static int read_reasoning(const json_t *msg, int index, const char **out, folo_error *err) {
    static const char *const k_names[] = {"reasoning_content", "thinking", "reasoning"};
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++) {
        if (optional_string(msg, k_names[i], out, index, err)) return -1;
        if (*out) return 0;
    }
    return 0;
}

static int read_message(folo_chat_conversation *conv, const json_t *msg, int index,
                        size_t *next_call, folo_error *err) {
    folo_chat_message *m = &conv->messages[index];
    if (!json_is_object(msg))
        return folo_fail(err, "messages[%d] must be an object, not %s", index, type_name(msg));
    json_t *role = json_object_get(msg, "role");
    if (!json_is_string(role)) return folo_fail(err, "messages[%d].role must be a string", index);
    m->role = json_string_value(role);
    if (optional_string(msg, "content", &m->content, index, err) ||
        read_reasoning(msg, index, &m->reasoning_content, err))
        return -1;
    if (!m->content) m->content = "";
    json_t *calls = json_object_get(msg, "tool_calls");
    if (!calls || json_is_null(calls)) return 0;
    if (!json_is_array(calls))
        return folo_fail(err, "messages[%d].tool_calls must be an array, not %s", index,
                         type_name(calls));
    m->tool_calls = conv->tool_calls + *next_call;
    size_t k;
    json_t *call;
    json_array_foreach(calls, k, call) {
        if (read_tool_call(conv, call, index, k, &conv->tool_calls[*next_call], err)) return -1;
        (*next_call)++;
        m->n_tool_calls++;
    }
    return 0;
}

static size_t count_tool_calls(const json_t *messages) {
    size_t n = 0, i;
    json_t *msg;
    json_array_foreach((json_t *)messages, i, msg) {
        json_t *calls = json_object_get(msg, "tool_calls");
        if (json_is_array(calls)) n += json_array_size(calls);
    }
    return n;
}

static int read_flag(const json_t *obj, const char *key, int *out, const char *where,
                     folo_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v))
        return folo_fail(err, "%s%s must be a boolean, not %s", where, key, type_name(v));
    *out = json_is_true(v);
    return 0;
}

static int read_options(folo_chat_conversation *conv, const json_t *root, folo_error *err) {
    if (read_flag(root, "add_generation_prompt", &conv->add_generation_prompt, "", err) ||
        read_flag(root, "enable_thinking", &conv->enable_thinking, "", err))
        return -1;
    json_t *kwargs = json_object_get(root, "chat_template_kwargs");
    if (kwargs && !json_is_null(kwargs)) {
        if (!json_is_object(kwargs))
            return folo_fail(err, "chat_template_kwargs must be an object, not %s",
                             type_name(kwargs));
        if (conv->enable_thinking < 0 &&
            read_flag(kwargs, "enable_thinking", &conv->enable_thinking, "chat_template_kwargs.",
                      err))
            return -1;
    }
    json_t *tools = json_object_get(root, "tools");
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return folo_fail(err, "tools must be an array, not %s", type_name(tools));
    conv->tools_json = folo_calloc(json_array_size(tools) + 1, sizeof *conv->tools_json);
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool) {
        if (!json_is_object(tool))
            return folo_fail(err, "tools[%zu] must be an object, not %s", i, type_name(tool));
        folo_buf text = {0};
        folo_chat_write_json(tool, &text);
        if (!text.data) folo_buf_append(&text, "", 0);
        conv->tools_json[conv->n_tools++] = text.data;
    }
    return 0;
}

int folo_chat_from_json(json_t *root, folo_chat_conversation *out, folo_error *err) {
    memset(out, 0, sizeof *out);
    out->add_generation_prompt = -1;
    out->enable_thinking = -1;
    out->json_root = json_incref(root);
    json_t *messages = root;
    if (json_is_object(root)) {
        messages = json_object_get(root, "messages");
        if (!messages) {
            folo_chat_conversation_free(out);
            return folo_fail(err, "the object has no \"messages\"");
        }
        if (read_options(out, root, err)) {
            folo_chat_conversation_free(out);
            return -1;
        }
    }
    if (!json_is_array(messages)) {
        folo_fail(err, "messages must be an array, not %s", type_name(messages));
        folo_chat_conversation_free(out);
        return -1;
    }
    size_t n = json_array_size(messages);
    if (n == 0 || n > (size_t)INT32_MAX / 2) {
        folo_chat_conversation_free(out);
        return folo_fail(err, "messages must hold at least one message");
    }
    out->messages = folo_calloc(n, sizeof *out->messages);
    out->tool_calls = folo_calloc(count_tool_calls(messages) + 1, sizeof *out->tool_calls);
    size_t next_call = 0;
    for (size_t i = 0; i < n; i++) {
        out->n_messages++;
        if (read_message(out, json_array_get(messages, i), (int)i, &next_call, err)) {
            folo_chat_conversation_free(out);
            return -1;
        }
    }
    return 0;
}

int folo_chat_parse_json(const char *json_text, folo_chat_conversation *out, folo_error *err) {
    json_error_t jerr;
    json_t *root = json_loads(json_text, JSON_DECODE_ANY, &jerr);
    if (!root) {
        memset(out, 0, sizeof *out);
        return folo_fail(err, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    }
    int rc = folo_chat_from_json(root, out, err);
    json_decref(root);
    return rc;
}

void folo_chat_conversation_free(folo_chat_conversation *conv) {
    free(conv->messages);
    for (int i = 0; i < conv->n_tools; i++) free(conv->tools_json[i]);
    free(conv->tools_json);
    free(conv->tool_calls);
    for (int i = 0; i < conv->n_owned; i++) free(conv->owned[i]);
    free(conv->owned);
    json_decref(conv->json_root);
    memset(conv, 0, sizeof *conv);
}
