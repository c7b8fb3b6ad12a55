/* Element types of tensors and the conversions between them. bf16 and f16
 * are stored as raw uint16_t; arithmetic always happens in f32. */
#ifndef FOLO_CORE_DTYPE_H
#define FOLO_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum folo_dtype {
    FOLO_DTYPE_F32 = 0,
    FOLO_DTYPE_F16,
    FOLO_DTYPE_BF16,
    FOLO_DTYPE_I32,
    FOLO_DTYPE_COUNT
} folo_dtype;

/* Bytes per element. */
size_t folo_dtype_size(folo_dtype t);
/* Safetensors spelling: "F32", "F16", "BF16", "I32". */
const char *folo_dtype_name(folo_dtype t);
/* Parses a safetensors dtype name; returns -1 when unknown. */
int folo_dtype_parse(const char *name, folo_dtype *out);

static inline float folo_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as PyTorch does; NaN stays NaN. */
static inline uint16_t folo_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* f rounded to the nearest bf16 value (to nearest even), kept as f32: what
 * `--dtype bfloat16` does to every product's inputs. */
static inline float folo_bf16_round(float f) { return folo_bf16_to_f32(folo_f32_to_bf16(f)); }

float folo_f16_to_f32(uint16_t h);
uint16_t folo_f32_to_f16(float f);

/* Converts n elements of type t at src (element offset 0) to f32. */
void folo_to_f32(folo_dtype t, const void *src, float *dst, size_t n);

#endif
