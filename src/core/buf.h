/* A growable byte buffer, always NUL-terminated: the one string builder used
 * for rendered chats, decoded text and JSON output. */
#ifndef FOLO_CORE_BUF_H
#define FOLO_CORE_BUF_H

#include <stddef.h>

typedef struct folo_buf {
    char *data;   /* [len + 1], NUL-terminated; NULL until the first append */
    size_t len;   /* bytes, excluding the NUL */
    size_t cap;
} folo_buf;

void folo_buf_append(folo_buf *b, const void *bytes, size_t n);
void folo_buf_puts(folo_buf *b, const char *s);
void folo_buf_printf(folo_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void folo_buf_clear(folo_buf *b); /* len = 0, keeps the memory */
/* Removes the first n (<= len) bytes, keeping the rest. */
void folo_buf_drop_front(folo_buf *b, size_t n);
void folo_buf_free(folo_buf *b);
/* Returns the data (never NULL; "" when empty). */
const char *folo_buf_str(const folo_buf *b);

#endif
