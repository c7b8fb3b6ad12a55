/* Errors are values.
 *
 * A function that can fail returns 0 on success and -1 on failure, and fills
 * the caller's folo_error with one line that names what was wrong (the file,
 * the tensor, the field, the flag). The message is printed once, at the edge
 * (CLI, server), never deep inside. abort() is kept for broken invariants. */
#ifndef FOLO_CORE_ERROR_H
#define FOLO_CORE_ERROR_H

#include <stddef.h>

typedef struct folo_error {
    char message[1024];
} folo_error;

/* Formats the message into err (when err is not NULL) and returns -1, so a
 * failure reads `return folo_fail(err, "config.json: %s ...", ...);`. */
int folo_fail(folo_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (adds context on the way out). */
int folo_fail_prefix(folo_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* For broken invariants only: prints file, line and message, then aborts. */
#define FOLO_ASSERT(cond)                                                     \
    do {                                                                      \
        if (!(cond)) folo_panic(__FILE__, __LINE__, #cond);                   \
    } while (0)
_Noreturn void folo_panic(const char *file, int line, const char *what);

#endif
