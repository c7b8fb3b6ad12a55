/* Files: read-only memory maps (weights stay in the page cache, never copied)
 * and whole-file reads for small text files (JSON configs). */
#ifndef FOLO_CORE_FILE_H
#define FOLO_CORE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct folo_mapped_file {
    char *path;          /* owned copy, for error messages */
    const uint8_t *data; /* [size] bytes, read-only; NULL for an empty file */
    size_t size;         /* bytes */
} folo_mapped_file;

int folo_file_map(folo_mapped_file *f, const char *path, folo_error *err);
void folo_file_unmap(folo_mapped_file *f);

/* Reads a whole file into a NUL-terminated buffer (caller frees). */
char *folo_file_read(const char *path, size_t *size_out, folo_error *err);
int folo_file_write(const char *path, const void *data, size_t bytes, folo_error *err);
int folo_file_exists(const char *path);

/* Joins dir and name with one '/' (caller frees). */
char *folo_path_join(const char *dir, const char *name);
/* mkdir -p */
int folo_mkdir_p(const char *path, folo_error *err);

#endif
