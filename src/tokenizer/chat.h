/* The Qwen3 chat format (ChatML), written as C code that renders byte for
 * byte what the official Jinja template in tokenizer_config.json renders
 * through transformers' apply_chat_template: system / user / assistant /
 * tool roles, grouping of consecutive tool messages into one user turn,
 * <think> handling of earlier assistant turns (reasoning kept only after
 * the last real user query), assistant tool calls, add_generation_prompt
 * and the enable_thinking switch. */
#ifndef FOLO_TOKENIZER_CHAT_H
#define FOLO_TOKENIZER_CHAT_H

#include <stdbool.h>

#include "core/buf.h"
#include "core/error.h"

typedef struct folo_tool_call {
    const char *name;
    const char *arguments_json;   /* rendered verbatim (a JSON string argument) */
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
} folo_chat_options;

/* Appends the rendered conversation to out. Errors (unknown role, empty
 * list) name the message index. */
int folo_chat_render(const folo_chat_message *messages, int n_messages,
                     const folo_chat_options *opt, folo_buf *out, folo_error *err);

#endif
