/* Stop strings over streamed text, with hold-back.
 *
 * A request may name stop strings (OpenAI `stop`); generation ends when the
 * decoded output contains one, and the output ends just before it (the stop
 * string itself is never emitted). Text arrives chunk by chunk (the newly
 * decoded text of each step), and a stop string may be split over several
 * chunks, so text that could still be the beginning of a stop string is held
 * back until it is known not to be one; everything else is released at once.
 *
 * Rules (they make the result independent of how the text was chunked):
 *   - a stop fires as soon as some stop string is complete: the occurrence
 *     that ends first in the text wins, and among those ending at the same
 *     byte, the one starting first (the longer one);
 *   - the held text is at most the longest stop string minus one byte: the
 *     longest suffix of the unreleased text that is a proper prefix of some
 *     stop string;
 *   - empty stop strings are ignored; with none, every chunk passes through.
 * Stop strings and chunks are UTF-8 bytes; a stop string that is valid UTF-8
 * begins with a lead byte, so held and released text split on character
 * boundaries whenever the chunks do.
 *
 * Who calls it: the engine's output processor (and `folo run`), one matcher
 * per request, fed each step's decoded text; flush once at the end. */
#ifndef FOLO_ENGINE_STOP_H
#define FOLO_ENGINE_STOP_H

#include <stddef.h>

#include "core/buf.h"

typedef struct folo_stop_matcher folo_stop_matcher;

/* Copies the n_stops strings (NUL-terminated); stops may be NULL when
 * n_stops is 0. */
folo_stop_matcher *folo_stop_matcher_create(const char *const *stops, int n_stops);
void folo_stop_matcher_free(folo_stop_matcher *m);

/* Feeds n_bytes of newly decoded text and appends to `out` the text that is
 * now safe to emit. Returns the index (into the create list) of the stop
 * string that just completed, or -1 while none has; once one has, `out`
 * ends just before it, and later feeds and flushes append nothing. */
int folo_stop_matcher_feed(folo_stop_matcher *m, const char *text, size_t n_bytes, folo_buf *out);

/* End of stream: appends the held-back text to `out` (nothing after a stop). */
void folo_stop_matcher_flush(folo_stop_matcher *m, folo_buf *out);

/* The index of the stop string that fired, or -1. */
int folo_stop_matcher_stopped(const folo_stop_matcher *m);

#endif
