/* dtype table and bit-exact f16/bf16 conversions (no reliance on compiler _Float16). */
#include "dtype.h"

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

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t fl_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t exp = (u >> 23) & 0xffu;
    uint32_t man = u & 0x7fffffu;
    if (exp == 0xff) /* Inf or NaN; keep NaN quiet and non-zero */
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        /* subnormal or zero in f16: shift the full significand, round to nearest even */
        if (e < -10)
            return sign;
        uint32_t m = man | 0x800000u;
        unsigned shift = (unsigned)(14 - e);
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half); /* a carry into the exponent field is correct */
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* may carry into the exponent, up to infinity: correct */
    return (uint16_t)(sign | h);
}

float fl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (!man)
            return bits_f32(sign);
        /* normalise the subnormal */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        man &= 0x3ffu;
        return bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13));
    }
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

uint16_t fl_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
        return (uint16_t)((u >> 16) | 0x40u); /* NaN: force quiet so truncation cannot make Inf */
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((u + rounding) >> 16);
}

float fl_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

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

/* double -> float rounded to odd (inexact results get an odd last bit). float has 13+
 * bits more than f16/bf16, so rounding this to nearest-even again is the correctly
 * rounded narrow value; a plain (float)v first would round some doubles onto a midpoint
 * and then tie them to even (double rounding). */
static float f64_to_f32_odd(double v)
{
    float f = (float)v;
    uint32_t u = f32_bits(f);
    if ((double)f == v || v != v || (u & 0x7f800000u) == 0x7f800000u || (u & 1u))
        return f;
    int toward_zero = v > 0 ? (double)f > v : (double)f < v; /* |f| > |v| */
    return bits_f32(toward_zero ? u - 1 : u + 1);            /* bits count magnitude */
}

void fl_dtype_store(fl_dtype t, void *base, size_t i, double v)
{
    switch (t) {
    case FL_F32: ((float *)base)[i] = (float)v; break;
    case FL_F64: ((double *)base)[i] = v; break;
    case FL_F16: ((uint16_t *)base)[i] = fl_f32_to_f16(f64_to_f32_odd(v)); break;
    case FL_BF16: ((uint16_t *)base)[i] = fl_f32_to_bf16(f64_to_f32_odd(v)); break;
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
