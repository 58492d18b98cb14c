/* Reference DFT for the cpu-ref backend: separable naive DFT in double precision, the
 * yardstick FFTW (and later cuFFT) is checked against. */
#include "cpu_internal.h"

#include <math.h>

/* 2π to double precision (M_PI is not in strict C11). */
#define FFT_TWO_PI 6.283185307179586476925286766559

/* One transformed dim: its length, its stride inside the contiguous core (the product
 * of the later transformed dims) and its twiddle table. */
typedef struct dft_dim {
    int64_t n, stride;
    double *w; /* w[2j], w[2j+1] = cos, ∓sin of 2πj/n: exp(∓2πij/n) */
} dft_dim;

/* Twiddles from the integer phase j = (k*m) mod n, so the angle handed to cos/sin is
 * always in [0, 2π) and computed from an exact integer: no accumulated rotation error,
 * accuracy that does not decay with n. */
static void fill_twiddles(double *w, int64_t n, int inverse)
{
    double sgn = inverse ? 1.0 : -1.0;
    for (int64_t j = 0; j < n; j++) {
        double theta = FFT_TWO_PI * (double)j / (double)n;
        w[2 * j] = cos(theta);
        w[2 * j + 1] = sgn * sin(theta);
    }
}

/* Reads element i of an f32/f64/c64/c128 buffer as a complex (re, im). */
static void load_complex(fl_dtype t, const void *base, int64_t i, double *re, double *im)
{
    switch (t) {
    case FL_F32:
        *re = ((const float *)base)[i];
        *im = 0.0;
        return;
    case FL_F64:
        *re = ((const double *)base)[i];
        *im = 0.0;
        return;
    case FL_C64:
        *re = ((const float *)base)[2 * i];
        *im = ((const float *)base)[2 * i + 1];
        return;
    case FL_C128:
        *re = ((const double *)base)[2 * i];
        *im = ((const double *)base)[2 * i + 1];
        return;
    default:
        /* ops.c admits only the four dtypes above */
        FL_ASSERT(!"fft: input dtype not f32/f64/c64/c128");
    }
}

/* Copies batch item b of `in` (its last ndims dims) into buf, row-major complex. */
static void gather_item(const fl_tensor *in, int ndims, int64_t b, double *buf)
{
    const void *base = fl_tensor_data(in);
    int64_t line_len = in->shape[in->ndim - 1], line_stride = in->stride[in->ndim - 1];
    int64_t lines = 1;
    for (int i = in->ndim - ndims; i < in->ndim - 1; i++)
        lines *= in->shape[i];
    for (int64_t l = 0; l < lines; l++) {
        /* batch item b, line l of the core: line index b*lines + l over all dims but the last */
        int64_t off = fl_cpu_batch_offset(in, 1, b * lines + l);
        for (int64_t j = 0; j < line_len; j++, buf += 2)
            load_complex(in->dtype, base, off + j * line_stride, &buf[0], &buf[1]);
    }
}

/* Writes buf / div into batch item b of out (c64 or c128). */
static void scatter_item(fl_tensor *out, int ndims, int64_t b, const double *buf, double div)
{
    void *base = fl_tensor_data(out);
    int64_t line_len = out->shape[out->ndim - 1], line_stride = out->stride[out->ndim - 1];
    int64_t lines = 1;
    for (int i = out->ndim - ndims; i < out->ndim - 1; i++)
        lines *= out->shape[i];
    for (int64_t l = 0; l < lines; l++) {
        int64_t off = fl_cpu_batch_offset(out, 1, b * lines + l);
        for (int64_t j = 0; j < line_len; j++, buf += 2) {
            int64_t e = off + j * line_stride;
            if (out->dtype == FL_C64) {
                ((float *)base)[2 * e] = (float)(buf[0] / div);
                ((float *)base)[2 * e + 1] = (float)(buf[1] / div);
            } else {
                ((double *)base)[2 * e] = buf[0] / div;
                ((double *)base)[2 * e + 1] = buf[1] / div;
            }
        }
    }
}

/* In-place DFT of the contiguous core `buf` (core elements) along one dim, line by line
 * through the scratch `line`. The phase index (k*m) mod n is stepped by k and wrapped, an
 * exact integer recurrence. Complex products are written out by hand: C's `*` on
 * _Complex calls __muldc3 for its inf/nan rules, an order of magnitude slower. */
static void dft_along(double *buf, int64_t core, const dft_dim *d, double *line)
{
    int64_t n = d->n, s = d->stride;
    int64_t outer = core / (n * s);
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < s; i++) {
            double *p = buf + 2 * (o * n * s + i);
            for (int64_t m = 0; m < n; m++) {
                line[2 * m] = p[2 * m * s];
                line[2 * m + 1] = p[2 * m * s + 1];
            }
            for (int64_t k = 0; k < n; k++) {
                double re = 0.0, im = 0.0;
                int64_t j = 0;
                for (int64_t m = 0; m < n; m++) {
                    double xr = line[2 * m], xi = line[2 * m + 1];
                    double wr = d->w[2 * j], wi = d->w[2 * j + 1];
                    re += xr * wr - xi * wi;
                    im += xr * wi + xi * wr;
                    j += k;
                    if (j >= n)
                        j -= n;
                }
                p[2 * k * s] = re;
                p[2 * k * s + 1] = im;
            }
        }
    }
}

fl_status fl_cpu_ref_fft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims,
                         int inverse, fl_error *err)
{
    FL_ASSERT(ndims >= 1 && ndims <= 3 && ndims <= in->ndim);
    if (fl_tensor_numel(out) == 0)
        return FL_OK;

    dft_dim dims[3];
    int64_t core = 1, maxn = 0, sumn = 0;
    for (int i = ndims - 1; i >= 0; i--) {
        int64_t n = in->shape[in->ndim - ndims + i];
        dims[i].n = n;
        dims[i].stride = core;
        core *= n;
        sumn += n;
        if (n > maxn)
            maxn = n;
    }

    /* One block: the core of one batch item, every twiddle table, one line. */
    size_t doubles, bytes;
    if (fl_mul_overflows((size_t)(core + sumn + maxn), 2, &doubles) ||
        fl_mul_overflows(doubles, sizeof(double), &bytes))
        return fl_error_set(err, FL_E_NOMEM, "%s: fft scratch for a core of %lld elements overflows",
                            be->vt->name, (long long)core);
    double *block = fl_alloc(be->alloc, bytes);
    if (!block)
        return fl_error_set(err, FL_E_NOMEM, "%s: fft: cannot allocate %zu bytes of scratch",
                            be->vt->name, bytes);
    double *buf = block, *tw = block + 2 * core;
    for (int i = 0; i < ndims; i++) {
        dims[i].w = tw;
        fill_twiddles(tw, dims[i].n, inverse);
        tw += 2 * dims[i].n;
    }
    double *line = tw;

    /* The inverse divides by N once, at the end, in double (a division, not a product
     * with a rounded 1/N). */
    double div = inverse ? (double)core : 1.0;
    int64_t batch = fl_cpu_batch_count(in, ndims);
    for (int64_t b = 0; b < batch; b++) {
        /* A whole item is read before any of it is written, so `out` may even be the
         * identical view of `in`. */
        gather_item(in, ndims, b, buf);
        for (int i = 0; i < ndims; i++)
            dft_along(buf, core, &dims[i], line);
        scatter_item(out, ndims, b, buf, div);
    }
    fl_free(be->alloc, block, bytes);
    return FL_OK;
}
