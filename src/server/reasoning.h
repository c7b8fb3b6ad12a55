/* `folo serve --reasoning-parser qwen3`: splits a chat answer's text into
 * reasoning_content (the thinking between <think> and </think>) and content,
 * as vLLM's Qwen3ReasoningParser does:
 *   - with thinking on (the default), text up to </think> is reasoning and
 *     the rest content; a <think> the model writes itself (Qwen3 up to the
 *     2507 release) is dropped; an answer cut short before </think> is all
 *     reasoning;
 *   - with chat_template_kwargs.enable_thinking false (the template closes
 *     an empty think block in the prompt), everything is content.
 * Works on a stream of deltas: a tail that could be the start of a tag
 * split across tokens is held back until the next delta tells. Pure. */
#ifndef FOLO_SERVER_REASONING_H
#define FOLO_SERVER_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

typedef struct folo_reasoning {
    bool thinking;     /* enable_thinking: text starts as reasoning */
    bool opened;       /* a leading <think> was dropped */
    bool closed;       /* </think> seen (or thinking off): the rest is content */
    folo_buf held;     /* text that may begin a tag */
} folo_reasoning;

void folo_reasoning_init(folo_reasoning *r, bool thinking);
/* Splits the next delta, appending to reasoning and content; last flushes
 * what was held (the answer ended). */
void folo_reasoning_feed(folo_reasoning *r, const char *text, size_t len, bool last,
                         folo_buf *reasoning, folo_buf *content);
void folo_reasoning_free(folo_reasoning *r);

#endif
