/* dtype table and bit-exact f16/bf16 conversions (no reliance on compiler _Float16). */
#include "dtype.h"
#include "half.h"

#include <complex.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[FL_DTYPE_COUNT] = {
    [FL_F32] = { "f32", 4 },  [FL_F64] = { "f64", 8 },   [FL_F16] = { "f16", 2 },
    [FL_BF16] = { "bf16", 2 }, [FL_C64] = { "c64", 8 },  [FL_C128] = { "c128", 16 },
    [FL_I32] = { "i32", 4 },  [FL_I64] = { "i64", 8 },   [FL_U8] = { "u8", 1 },
};

static int valid(fl_dtype t) { return (unsigned)t < FL_DTYPE_COUNT; }

size_t fl_dtype_size(fl_dtype t) { return valid(t) ? dtype_table[t].size : 0; }
const char *fl_dtype_name(fl_dtype t) { return valid(t) ? dtype_table[t].name : "invalid"; }

int fl_dtype_from_name(const char *name, fl_dtype *out)
{
    for (int i = 0; i < FL_DTYPE_COUNT; i++)
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (fl_dtype)i;
            return 0;
        }
    return -1;
}

int fl_dtype_is_float(fl_dtype t) { return t == FL_F32 || t == FL_F64 || t == FL_F16 || t == FL_BF16; }
int fl_dtype_is_complex(fl_dtype t) { return t == FL_C64 || t == FL_C128; }
fl_dtype fl_dtype_real_of(fl_dtype t) { return t == FL_C64 ? FL_F32 : t == FL_C128 ? FL_F64 : t; }

uint16_t fl_f32_to_f16(float x) { return fl_h_f32_to_f16(x); }
float fl_f16_to_f32(uint16_t h) { return fl_h_f16_to_f32(h); }
uint16_t fl_f32_to_bf16(float x) { return fl_h_f32_to_bf16(x); }
float fl_bf16_to_f32(uint16_t b) { return fl_h_bf16_to_f32(b); }
void fl_f32_to_f16_n(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = fl_f32_to_f16(src[i]);
}

void fl_f16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = fl_f16_to_f32(src[i]);
}

void fl_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = fl_f32_to_bf16(src[i]);
}

void fl_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = fl_bf16_to_f32(src[i]);
}

double fl_dtype_load(fl_dtype t, const void *base, size_t i)
{
    switch (t) {
    case FL_F32: return ((const float *)base)[i];
    case FL_F64: return ((const double *)base)[i];
    case FL_F16: return fl_f16_to_f32(((const uint16_t *)base)[i]);
    case FL_BF16: return fl_bf16_to_f32(((const uint16_t *)base)[i]);
    case FL_C64: return ((const float *)base)[2 * i];
    case FL_C128: return ((const double *)base)[2 * i];
    case FL_I32: return ((const int32_t *)base)[i];
    case FL_I64: return (double)((const int64_t *)base)[i];
    case FL_U8: return ((const uint8_t *)base)[i];
    case FL_DTYPE_COUNT: break;
    }
    return 0.0;
}

void fl_dtype_store(fl_dtype t, void *base, size_t i, double v)
{
    switch (t) {
    case FL_F32: ((float *)base)[i] = (float)v; break;
    case FL_F64: ((double *)base)[i] = v; break;
    case FL_F16: ((uint16_t *)base)[i] = fl_f32_to_f16(fl_h_f64_to_f32_odd(v)); break;
    case FL_BF16: ((uint16_t *)base)[i] = fl_f32_to_bf16(fl_h_f64_to_f32_odd(v)); break;
    case FL_C64:
        ((float *)base)[2 * i] = (float)v;
        ((float *)base)[2 * i + 1] = 0.0f;
        break;
    case FL_C128:
        ((double *)base)[2 * i] = v;
        ((double *)base)[2 * i + 1] = 0.0;
        break;
    case FL_I32: ((int32_t *)base)[i] = (int32_t)v; break;
    case FL_I64: ((int64_t *)base)[i] = (int64_t)v; break;
    case FL_U8: ((uint8_t *)base)[i] = (uint8_t)v; break;
    case FL_DTYPE_COUNT: break;
    }
}
