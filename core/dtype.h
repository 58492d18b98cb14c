/* Element types: f32 (and f64) for compute, f16/bf16 for storage, complex for spectra,
 * integers for indices and checkpoints; and the exact f16/bf16 conversions. */
#ifndef FL_DTYPE_H
#define FL_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum fl_dtype {
    FL_F32 = 0,
    FL_F64,
    FL_F16,
    FL_BF16,
    FL_C64,  /* complex float: interleaved (re, im) f32 pairs, as C99 float _Complex */
    FL_C128, /* complex double */
    FL_I32,
    FL_I64,
    FL_U8,
    FL_DTYPE_COUNT
} fl_dtype;

size_t fl_dtype_size(fl_dtype t);          /* bytes per element; 0 for an invalid value */
const char *fl_dtype_name(fl_dtype t);     /* "f32", "bf16", ... or "invalid" */
int fl_dtype_from_name(const char *name, fl_dtype *out); /* 0 on success, -1 if unknown */
int fl_dtype_is_float(fl_dtype t);         /* f32, f64, f16, bf16 */
int fl_dtype_is_complex(fl_dtype t);
fl_dtype fl_dtype_real_of(fl_dtype t);     /* c64 -> f32, c128 -> f64, others unchanged */

/* IEEE binary16 and bfloat16 conversions. Narrowing rounds to nearest, ties to even;
 * overflow goes to infinity, NaN stays NaN (quiet, sign kept), subnormals are exact
 * where representable. Widening is exact. */
uint16_t fl_f32_to_f16(float x);
float fl_f16_to_f32(uint16_t h);
uint16_t fl_f32_to_bf16(float x);
float fl_bf16_to_f32(uint16_t b);

/* Bulk conversions (n elements, contiguous). */
void fl_f32_to_f16_n(const float *src, uint16_t *dst, size_t n);
void fl_f16_to_f32_n(const uint16_t *src, float *dst, size_t n);
void fl_f32_to_bf16_n(const float *src, uint16_t *dst, size_t n);
void fl_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n);

/* Element i of a buffer of type t, as double (complex: the real part), and the inverse
 * (complex: imaginary part set to 0). For generic reference code, not hot loops. */
double fl_dtype_load(fl_dtype t, const void *base, size_t i);
void fl_dtype_store(fl_dtype t, void *base, size_t i, double v);

#endif
