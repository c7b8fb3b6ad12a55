#include "core/dtype.h"

#include <math.h>

static const struct {
    const char *name;
    size_t size;
} k_types[FOLO_DTYPE_COUNT] = {
    [FOLO_DTYPE_F32] = {"F32", 4},
    [FOLO_DTYPE_F16] = {"F16", 2},
    [FOLO_DTYPE_BF16] = {"BF16", 2},
    [FOLO_DTYPE_I32] = {"I32", 4},
};

size_t folo_dtype_size(folo_dtype t) { return k_types[t].size; }
const char *folo_dtype_name(folo_dtype t) { return k_types[t].name; }

int folo_dtype_parse(const char *name, folo_dtype *out) {
    for (int t = 0; t < FOLO_DTYPE_COUNT; t++) {
        if (strcmp(name, k_types[t].name) == 0) {
            *out = (folo_dtype)t;
            return 0;
        }
    }
    return -1;
}

float folo_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t folo_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00;
    if (a < 6.103515625e-05f) /* subnormal: multiples of 2^-24, nearest-even */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    uint32_t ua;
    memcpy(&ua, &a, sizeof ua);
    uint32_t exp = (ua >> 23) - 112, mant = ua & 0x7fffff;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

void folo_to_f32(folo_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case FOLO_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); break;
    case FOLO_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = folo_bf16_to_f32(s[i]);
        break;
    }
    case FOLO_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = folo_f16_to_f32(s[i]);
        break;
    }
    case FOLO_DTYPE_I32: {
        const int32_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i];
        break;
    }
    default: break;
    }
}
