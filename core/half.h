/* Bit-exact f16 / bf16 conversions as inline functions shared by host C (core/dtype.c)
 * and CUDA device code (ops/cuda/), so both sides round the same way by construction.
 * Plain C11 with no other includes: nvcc can compile it. */
#ifndef FL_HALF_H
#define FL_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define FL_HD __host__ __device__
#else
#define FL_HD
#endif

static inline FL_HD uint32_t fl_h_f32_bits(float x)
{
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
#endif
}

static inline FL_HD float fl_h_bits_f32(uint32_t u)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, 4);
    return x;
#endif
}

/* f32 -> IEEE binary16, round to nearest even; overflow to inf; NaN stays quiet NaN. */
static inline FL_HD uint16_t fl_h_f32_to_f16(float x)
{
    uint32_t u = fl_h_f32_bits(x);
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
        uint32_t bits = m >> shift; /* not "half": CUDA's headers typedef that name */
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (bits & 1)))
            bits++;
        return (uint16_t)(sign | bits); /* a carry into the exponent field is correct */
    }
    uint32_t h = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* may carry into the exponent, up to infinity: correct */
    return (uint16_t)(sign | h);
}

/* IEEE binary16 -> f32, exact. */
static inline FL_HD float fl_h_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f)
        return fl_h_bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (!man)
            return fl_h_bits_f32(sign);
        /* normalise the subnormal */
        int e = -1;
        do {
            man <<= 1;
            e++;
        } while (!(man & 0x400u));
        man &= 0x3ffu;
        return fl_h_bits_f32(sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13));
    }
    return fl_h_bits_f32(sign | ((exp - 15 + 127) << 23) | (man << 13));
}

/* f32 -> bfloat16, round to nearest even; NaN forced quiet so it cannot become inf. */
static inline FL_HD uint16_t fl_h_f32_to_bf16(float x)
{
    uint32_t u = fl_h_f32_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
        return (uint16_t)((u >> 16) | 0x40u); /* NaN: force quiet so truncation cannot make Inf */
    uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((u + rounding) >> 16);
}

static inline FL_HD float fl_h_bf16_to_f32(uint16_t b) { return fl_h_bits_f32((uint32_t)b << 16); }

/* double -> float rounded to odd (inexact results get an odd last bit). float has 13+
 * bits more than f16/bf16, so rounding this to nearest-even again is the correctly
 * rounded narrow value; a plain (float)v first would round some doubles onto a midpoint
 * and then tie them to even (double rounding). */
static inline FL_HD float fl_h_f64_to_f32_odd(double v)
{
    float f = (float)v;
    uint32_t u = fl_h_f32_bits(f);
    if ((double)f == v || v != v || (u & 0x7f800000u) == 0x7f800000u || (u & 1u))
        return f;
    int toward_zero = v > 0 ? (double)f > v : (double)f < v; /* |f| > |v| */
    return fl_h_bits_f32(toward_zero ? u - 1 : u + 1);            /* bits count magnitude */
}

#endif
