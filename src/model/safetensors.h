/* The safetensors format: 8-byte little-endian header length N, N bytes of
 * JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {...}}, then the data; offsets are relative to the end of
 * the header.
 *
 * The parser is a pure function of the bytes (it is fuzzed): it checks the
 * header length against the file size, the JSON, every dtype, that shapes
 * are non-negative and their byte size equals end - begin, that every range
 * lies inside the data section, and that no two ranges overlap. */
#ifndef FOLO_MODEL_SAFETENSORS_H
#define FOLO_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file.h"

#define FOLO_MAX_DIMS 4

typedef struct folo_st_tensor {
    char *name;                     /* owned */
    folo_dtype dtype;
    int n_dims;
    int64_t shape[FOLO_MAX_DIMS];
    size_t offset;                  /* from the start of the file, bytes */
    size_t bytes;
} folo_st_tensor;

typedef struct folo_st_header {
    folo_st_tensor *tensors;        /* [n_tensors], owned */
    int n_tensors;
} folo_st_header;

/* Parses and validates the header of a safetensors file held in
 * data[0..size). `path` only labels error messages. */
int folo_st_parse(folo_st_header *h, const uint8_t *data, size_t size, const char *path,
                  folo_error *err);
void folo_st_header_free(folo_st_header *h);

/* Writes a safetensors file; tensors[i].offset/bytes are ignored on input
 * (recomputed), data[i] points at tensors[i]'s bytes. Used by make-model and
 * tests. `metadata` may be NULL ({"format": "pt"} is written). */
int folo_st_write(const char *path, const folo_st_tensor *tensors, const void *const *data,
                  int n_tensors, folo_error *err);

#endif
