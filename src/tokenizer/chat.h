/* The Qwen3 chat format (ChatML), written as C code that renders byte for
 * byte what the official Jinja template in tokenizer_config.json renders
 * through transformers' apply_chat_template: system / user / assistant /
 * tool roles, grouping of consecutive tool messages into one user turn,
 * <think> handling of earlier assistant turns (reasoning kept only after
 * the last real user query), assistant tool calls, the tools system block,
 * add_generation_prompt and the enable_thinking switch.
 *
 * chat.c renders; chat_json.c reads OpenAI-style JSON messages (for
 * `folo template`, `folo run --chat` and the HTTP server) into the structs
 * below, writing JSON values the way the template's `tojson` filter does
 * (Python's json.dumps with ensure_ascii=False). */
#ifndef FOLO_TOKENIZER_CHAT_H
#define FOLO_TOKENIZER_CHAT_H

#include <stdbool.h>

#include "core/buf.h"
#include "core/error.h"

typedef struct folo_tool_call {
    const char *name;
    const char *arguments_json;   /* rendered verbatim: a string argument as given, an
                                     object as `tojson` writes it */
} folo_tool_call;

typedef struct folo_chat_message {
    const char *role;             /* "system", "user", "assistant", "tool" */
    const char *content;          /* never NULL ("" when empty) */
    const char *reasoning_content;/* NULL when absent */
    const folo_tool_call *tool_calls; /* [n_tool_calls], assistant only */
    int n_tool_calls;
} folo_chat_message;

typedef struct folo_chat_options {
    bool add_generation_prompt;   /* end with "<|im_start|>assistant\n" */
    bool enable_thinking;         /* false: the assistant turn opens with an empty <think> block */
    const char *const *tools_json;/* [n_tools] tool definitions as `tojson` writes them
                                     (folo_chat_conversation.tools_json); NULL when none */
    int n_tools;
} folo_chat_options;

/* Appends the rendered conversation to out. Errors (unknown role, empty
 * list) name the message index. */
int folo_chat_render(const folo_chat_message *messages, int n_messages,
                     const folo_chat_options *opt, folo_buf *out, folo_error *err);

/* A conversation read from JSON. It owns everything its messages point
 * to; free it with folo_chat_conversation_free. */
typedef struct folo_chat_conversation {
    folo_chat_message *messages;  /* [n_messages] */
    int n_messages;
    char **tools_json;            /* [n_tools] the "tools" definitions, as `tojson` writes them */
    int n_tools;
    int add_generation_prompt;    /* the document's field: 1, 0, or -1 when absent */
    int enable_thinking;          /* the document's field (or chat_template_kwargs'): 1, 0, -1 */
    /* private */
    folo_tool_call *tool_calls;   /* storage of every message's tool calls */
    char **owned;                 /* [n_owned] strings written by the parser */
    int n_owned;
    void *json_root;              /* the parsed document, which message strings point into */
} folo_chat_conversation;

/* Reads an OpenAI-style conversation: either a messages array, or an object
 * with "messages" and optionally "tools", "add_generation_prompt",
 * "enable_thinking" and "chat_template_kwargs": {"enable_thinking": ...}
 * (other keys, such as a request's "model", are ignored). A message has
 * "role" (string), "content" (string or null), optionally
 * "reasoning_content" (or "thinking" / "reasoning", as transformers
 * accepts) and "tool_calls": [{"function": {"name": ..., "arguments":
 * string or object}}]. Wrong types fail with an error naming the message
 * index and field, e.g. "messages[2].tool_calls[0].function.name must be a
 * string"; after a failure *out holds nothing to free. */
int folo_chat_parse_json(const char *json_text, folo_chat_conversation *out, folo_error *err);
struct json_t;
/* The same from an already parsed document (the server's request body). */
int folo_chat_from_json(struct json_t *root, folo_chat_conversation *out, folo_error *err);
void folo_chat_conversation_free(folo_chat_conversation *conv);

/* Appends v as Python's json.dumps(v, ensure_ascii=False) writes it, which
 * is what the template's `tojson` filter produces. */
void folo_chat_write_json(const struct json_t *v, folo_buf *out);

#endif
