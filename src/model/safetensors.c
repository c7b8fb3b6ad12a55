/* Safetensors reading and writing; see safetensors.h for the format and the
 * checks. Every failure names the file and, where there is one, the tensor. */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"

/* ---------------------------------------------------------------- parsing */

int folo_st_tensor_bytes(folo_dtype dtype, int n_dims, const int64_t *shape, size_t *bytes) {
    size_t n = folo_dtype_size(dtype);
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0) return -1;
        uint64_t dim = (uint64_t)shape[d];
        if (dim != 0 && n > SIZE_MAX / dim) return -1;
        n *= (size_t)dim;
    }
    *bytes = n;
    return 0;
}

static void format_shape(char *out, size_t cap, int n_dims, const int64_t *shape) {
    size_t len = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < n_dims && len < cap; d++)
        len += (size_t)snprintf(out + len, cap - len, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (len < cap) snprintf(out + len, cap - len, "]");
}

/* Reads a JSON integer >= 0 into *out; -1 when it is not one. */
static int json_nonneg(const json_t *v, int64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int parse_tensor(folo_st_tensor *t, const char *name, const json_t *entry,
                        size_t data_bytes, size_t data_start, const char *path, folo_error *err) {
    if (!json_is_object(entry))
        return folo_fail(err, "%s: tensor '%s': header entry is not a JSON object", path, name);

    const json_t *dtype = json_object_get(entry, "dtype");
    if (!json_is_string(dtype))
        return folo_fail(err, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    if (folo_dtype_parse(json_string_value(dtype), &t->dtype) != 0)
        return folo_fail(err, "%s: tensor '%s': unknown dtype '%s' (supported: F32, F16, BF16, I32)",
                         path, name, json_string_value(dtype));

    const json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape))
        return folo_fail(err, "%s: tensor '%s': missing or non-array \"shape\"", path, name);
    size_t n_dims = json_array_size(shape);
    if (n_dims > FOLO_MAX_DIMS)
        return folo_fail(err, "%s: tensor '%s': shape has %zu dimensions (at most %d supported)",
                         path, name, n_dims, FOLO_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (size_t d = 0; d < n_dims; d++)
        if (json_nonneg(json_array_get(shape, d), &t->shape[d]) != 0)
            return folo_fail(err, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path,
                             name, d);

    const json_t *offsets = json_object_get(entry, "data_offsets");
    int64_t begin, end;
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        json_nonneg(json_array_get(offsets, 0), &begin) != 0 ||
        json_nonneg(json_array_get(offsets, 1), &end) != 0 || end < begin)
        return folo_fail(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end] with "
                         "0 <= begin <= end", path, name);

    char dims[160];
    format_shape(dims, sizeof dims, t->n_dims, t->shape);
    size_t bytes;
    if (folo_st_tensor_bytes(t->dtype, t->n_dims, t->shape, &bytes) != 0)
        return folo_fail(err, "%s: tensor '%s': shape %s is too large", path, name, dims);
    if ((uint64_t)(end - begin) != (uint64_t)bytes)
        return folo_fail(err, "%s: tensor '%s': shape %s of %s needs %zu bytes but data_offsets "
                         "[%lld, %lld] span %lld", path, name, dims, folo_dtype_name(t->dtype), bytes,
                         (long long)begin, (long long)end, (long long)(end - begin));
    if ((uint64_t)end > (uint64_t)data_bytes)
        return folo_fail(err, "%s: tensor '%s': data_offsets [%lld, %lld] lie outside the %zu-byte "
                         "data section (truncated file?)", path, name, (long long)begin,
                         (long long)end, data_bytes);
    t->offset = data_start + (size_t)begin;
    t->bytes = bytes;
    return 0;
}

typedef struct {
    size_t offset, bytes;
    int index;
} byte_range;

static int by_offset(const void *a, const void *b) {
    const byte_range *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Reports the first pair of non-empty tensors whose byte ranges overlap. */
static int check_overlaps(const folo_st_header *h, const char *path, folo_error *err) {
    byte_range *ranges = folo_calloc((size_t)h->n_tensors + 1, sizeof *ranges);
    int n = 0;
    for (int i = 0; i < h->n_tensors; i++)
        if (h->tensors[i].bytes > 0)
            ranges[n++] = (byte_range){h->tensors[i].offset, h->tensors[i].bytes, i};
    qsort(ranges, (size_t)n, sizeof *ranges, by_offset);
    int rc = 0;
    for (int k = 1; k < n && rc == 0; k++)
        if (ranges[k].offset < ranges[k - 1].offset + ranges[k - 1].bytes)
            rc = folo_fail(err, "%s: tensors '%s' and '%s' have overlapping data_offsets", path,
                           h->tensors[ranges[k - 1].index].name, h->tensors[ranges[k].index].name);
    free(ranges);
    return rc;
}

int folo_st_parse(folo_st_header *h, const uint8_t *data, size_t size, const char *path,
                  folo_error *err) {
    memset(h, 0, sizeof *h);
    if (size < 8)
        return folo_fail(err, "%s: file too short for a safetensors header (%zu bytes)", path, size);
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; i--) header_bytes = header_bytes << 8 | data[i];
    if (header_bytes > size - 8)
        return folo_fail(err, "%s: header length %llu runs past the end of the file (%zu bytes)",
                         path, (unsigned long long)header_bytes, size);
    if (header_bytes > FOLO_ST_MAX_HEADER_BYTES)
        return folo_fail(err, "%s: header length %llu exceeds the %u-byte limit", path,
                         (unsigned long long)header_bytes, FOLO_ST_MAX_HEADER_BYTES);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)data + 8, (size_t)header_bytes,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return folo_fail(err, "%s: header is not valid JSON: %s (byte %d)", path, jerr.text,
                         jerr.position);
    if (!json_is_object(root)) {
        json_decref(root);
        return folo_fail(err, "%s: header is not a JSON object", path);
    }

    size_t data_start = 8 + (size_t)header_bytes, data_bytes = size - data_start;
    h->tensors = folo_calloc(json_object_size(root) + 1, sizeof *h->tensors);
    int rc = 0;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(value)) {
                rc = folo_fail(err, "%s: \"__metadata__\" is not a JSON object", path);
                break;
            }
            continue;
        }
        folo_st_tensor *t = &h->tensors[h->n_tensors];
        rc = parse_tensor(t, key, value, data_bytes, data_start, path, err);
        if (rc != 0) break;
        t->name = folo_strdup(key);
        h->n_tensors++;
    }
    json_decref(root);
    if (rc == 0) rc = check_overlaps(h, path, err);
    if (rc != 0) folo_st_header_free(h);
    return rc;
}

void folo_st_header_free(folo_st_header *h) {
    for (int i = 0; i < h->n_tensors; i++) free(h->tensors[i].name);
    free(h->tensors);
    memset(h, 0, sizeof *h);
}

const folo_st_tensor *folo_st_find(const folo_st_header *h, const char *name) {
    for (int i = 0; i < h->n_tensors; i++)
        if (strcmp(h->tensors[i].name, name) == 0) return &h->tensors[i];
    return NULL;
}

/* ---------------------------------------------------------------- writing */

static int pwrite_all(int fd, const void *data, size_t bytes, size_t offset) {
    const uint8_t *p = data;
    while (bytes > 0) {
        ssize_t put = pwrite(fd, p, bytes, (off_t)offset);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return -1;
        p += put;
        bytes -= (size_t)put;
        offset += (size_t)put;
    }
    return 0;
}

int folo_st_writer_open(folo_st_writer *w, const char *path, const folo_st_tensor *tensors,
                        int n_tensors, folo_error *err) {
    memset(w, 0, sizeof *w);
    w->fd = -1;
    json_t *root = json_object();
    json_t *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    size_t begin = 0;
    w->tensors = folo_calloc((size_t)n_tensors + 1, sizeof *w->tensors);
    for (int i = 0; i < n_tensors; i++) {
        folo_st_tensor *t = &w->tensors[i];
        *t = tensors[i];
        const char *bad = folo_st_tensor_bytes(t->dtype, t->n_dims, t->shape, &t->bytes) != 0
                              ? "is too large"
                          : json_object_get(root, t->name) ? "appears twice (or is reserved)"
                                                           : NULL;
        if (!bad) {
            json_t *shape = json_array();
            for (int d = 0; d < t->n_dims; d++)
                json_array_append_new(shape, json_integer(t->shape[d]));
            json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", folo_dtype_name(t->dtype),
                                      "shape", shape, "data_offsets", (json_int_t)begin,
                                      (json_int_t)(begin + t->bytes));
            if (json_object_set_new(root, t->name, entry) != 0) bad = "is not valid UTF-8";
        }
        if (bad) {
            folo_fail(err, "%s: tensor '%s' %s", path, t->name, bad);
            json_decref(root);
            free(w->tensors);
            w->tensors = NULL;
            return -1;
        }
        t->offset = begin; /* relative to the data section until the header size is known */
        begin += t->bytes;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    /* Spaces pad the header so the data section starts 8-byte aligned, as
     * the reference writer does. */
    size_t text_bytes = strlen(text), header_bytes = (text_bytes + 7) / 8 * 8;
    uint8_t *head = folo_calloc(8 + header_bytes, 1);
    for (int i = 0; i < 8; i++) head[i] = (uint8_t)((uint64_t)header_bytes >> (8 * i));
    memcpy(head + 8, text, text_bytes);
    memset(head + 8 + text_bytes, ' ', header_bytes - text_bytes);
    free(text);
    for (int i = 0; i < n_tensors; i++) w->tensors[i].offset += 8 + header_bytes;
    w->n_tensors = n_tensors;
    w->file_bytes = 8 + header_bytes + begin;

    w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (w->fd < 0)
        rc = folo_fail(err, "%s: cannot create: %s", path, strerror(errno));
    else if (pwrite_all(w->fd, head, 8 + header_bytes, 0) != 0 ||
             ftruncate(w->fd, (off_t)w->file_bytes) != 0)
        rc = folo_fail(err, "%s: write error: %s", path, strerror(errno));
    free(head);
    w->path = folo_strdup(path);
    if (rc != 0) folo_st_writer_close(w, NULL);
    return rc;
}

int folo_st_writer_put(folo_st_writer *w, int i, size_t byte_offset, const void *data,
                       size_t bytes, folo_error *err) {
    const folo_st_tensor *t = &w->tensors[i];
    FOLO_ASSERT(byte_offset <= t->bytes && bytes <= t->bytes - byte_offset);
    if (pwrite_all(w->fd, data, bytes, t->offset + byte_offset) != 0)
        return folo_fail(err, "%s: writing tensor '%s': %s", w->path, t->name, strerror(errno));
    return 0;
}

int folo_st_writer_close(folo_st_writer *w, folo_error *err) {
    int rc = 0;
    if (w->fd >= 0 && close(w->fd) != 0)
        rc = folo_fail(err, "%s: write error on close: %s", w->path, strerror(errno));
    free(w->path);
    free(w->tensors);
    memset(w, 0, sizeof *w);
    w->fd = -1;
    return rc;
}

int folo_st_write(const char *path, const folo_st_tensor *tensors, const void *const *data,
                  int n_tensors, folo_error *err) {
    folo_st_writer w;
    if (folo_st_writer_open(&w, path, tensors, n_tensors, err) != 0) return -1;
    for (int i = 0; i < n_tensors; i++) {
        if (folo_st_writer_put(&w, i, 0, data[i], w.tensors[i].bytes, err) != 0) {
            folo_st_writer_close(&w, NULL);
            return -1;
        }
    }
    return folo_st_writer_close(&w, err);
}
