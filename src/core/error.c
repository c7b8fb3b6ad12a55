#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int folo_fail(folo_error *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int folo_fail_prefix(folo_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Shift the old message right and put the prefix in front (truncating). */
    size_t n_prefix = strlen(prefix), n_old = strlen(err->message);
    size_t cap = sizeof err->message - 1;
    if (n_prefix + 2 > cap) n_prefix = cap - 2;
    if (n_prefix + 2 + n_old > cap) n_old = cap - n_prefix - 2;
    memmove(err->message + n_prefix + 2, err->message, n_old);
    memcpy(err->message, prefix, n_prefix);
    err->message[n_prefix] = ':';
    err->message[n_prefix + 1] = ' ';
    err->message[n_prefix + 2 + n_old] = '\0';
    return -1;
}

void folo_panic(const char *file, int line, const char *what) {
    fprintf(stderr, "folo: internal error at %s:%d: %s\n", file, line, what);
    abort();
}
