/* The safetensors format: 8-byte little-endian header length N, N bytes of
 * JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {...}}, then the data; offsets are relative to the end of
 * the header.
 *
 * The parser is a pure function of the bytes (it is fuzzed): it checks the
 * header length against the file size, the JSON, every dtype, that shapes
 * are non-negative and their byte size equals end - begin, that every range
 * lies inside the data section, and that no two ranges overlap. Gaps between
 * ranges are allowed (the reference writer leaves none, but they are
 * harmless). Tensors keep the order of the header.
 *
 * The writer streams: it lays out and writes the header first, then takes
 * each tensor's bytes in any order and from any thread (pwrite at the
 * tensor's offset), so a 0.6B-parameter checkpoint is never held in memory. */
#ifndef FOLO_MODEL_SAFETENSORS_H
#define FOLO_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"

#define FOLO_MAX_DIMS 4
/* The reference implementation's limit on the JSON header, bytes. */
#define FOLO_ST_MAX_HEADER_BYTES 100000000u

typedef struct folo_st_tensor {
    char *name;                     /* owned by a parsed header; borrowed by the writer */
    folo_dtype dtype;
    int n_dims;
    int64_t shape[FOLO_MAX_DIMS];
    size_t offset;                  /* from the start of the file, bytes */
    size_t bytes;
} folo_st_tensor;

typedef struct folo_st_header {
    folo_st_tensor *tensors;        /* [n_tensors], owned, in header order */
    int n_tensors;
} folo_st_header;

/* Parses and validates the header of a safetensors file held in
 * data[0..size). `path` only labels error messages. */
int folo_st_parse(folo_st_header *h, const uint8_t *data, size_t size, const char *path,
                  folo_error *err);
void folo_st_header_free(folo_st_header *h);
/* The tensor called `name`, or NULL. */
const folo_st_tensor *folo_st_find(const folo_st_header *h, const char *name);

/* Bytes of a tensor of this dtype and shape; -1 when the size overflows. */
int folo_st_tensor_bytes(folo_dtype dtype, int n_dims, const int64_t *shape, size_t *bytes);

/* A safetensors file being written. */
typedef struct folo_st_writer {
    char *path;                     /* owned, for messages */
    int fd;
    folo_st_tensor *tensors;        /* [n_tensors], offset/bytes filled in; names borrowed */
    int n_tensors;
    size_t file_bytes;              /* header + data */
} folo_st_writer;

/* Creates `path` and writes the header for `tensors` (their offset/bytes are
 * ignored on input and recomputed in w->tensors, in the given order); the
 * metadata written is {"format": "pt"}, as PyTorch's writer does. */
int folo_st_writer_open(folo_st_writer *w, const char *path, const folo_st_tensor *tensors,
                        int n_tensors, folo_error *err);
/* Writes `bytes` bytes of tensor i starting `byte_offset` bytes into it.
 * Thread-safe for disjoint ranges. */
int folo_st_writer_put(folo_st_writer *w, int i, size_t byte_offset, const void *data,
                       size_t bytes, folo_error *err);
/* Closes the file; reports a failed close (the data may not have reached
 * the disk). Always releases w. */
int folo_st_writer_close(folo_st_writer *w, folo_error *err);

/* Writes a whole safetensors file; data[i] points at tensors[i]'s bytes. */
int folo_st_write(const char *path, const folo_st_tensor *tensors, const void *const *data,
                  int n_tensors, folo_error *err);

#endif
