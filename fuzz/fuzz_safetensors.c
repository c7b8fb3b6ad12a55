/* libFuzzer target for the safetensors header parser (model/safetensors.c).
 *
 * Any byte string must either be rejected with a message or yield a table
 * whose every range lies inside the input, with no two non-empty ranges
 * overlapping; ASan and UBSan watch the parser itself, and every accepted
 * tensor's bytes are read so an out-of-range offset cannot go unnoticed.
 * Built by fuzz/CMakeLists.txt and run by scripts/fuzz.sh. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    folo_st_header h;
    folo_error err;
    if (folo_st_parse(&h, data, size, "fuzz.safetensors", &err) != 0) return 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < h.n_tensors; i++) {
        const folo_st_tensor *t = &h.tensors[i];
        if (t->offset > size || t->bytes > size - t->offset) abort();
        for (size_t b = 0; b < t->bytes; b++) sink ^= data[t->offset + b];
        for (int j = 0; j < i; j++) {
            const folo_st_tensor *u = &h.tensors[j];
            if (t->bytes && u->bytes && t->offset < u->offset + u->bytes &&
                u->offset < t->offset + t->bytes)
                abort();
        }
        if (folo_st_find(&h, t->name) == NULL) abort();
    }
    (void)sink;
    folo_st_header_free(&h);
    return 0;
}
