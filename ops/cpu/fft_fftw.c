/* FFT for the cpu backend through FFTW3: fftwf_* for c64 output, fftw_* for c128, one
 * batched in-place plan per call over an aligned contiguous buffer. */
#include "cpu_internal.h"

#include <fftw3.h>
#include <threads.h>

/* Batch items are transformed in chunks of about this many complex elements when the
 * output needs a scratch buffer, so scratch stays bounded (4 MiB of c128) whatever the
 * batch; a core larger than this is done one item at a time. */
#define FFTW_CHUNK_ELEMS ((int64_t)1 << 18)

/* FFTW's planner is process-global state inside the library and not thread-safe: two
 * backends planning from two threads would race. FFTW's own planner lock (threads
 * library, 3.3.5+) serialises plan creation and destruction; execution of distinct plans
 * is thread-safe already. Installing it is a one-time, process-wide act, hence the one
 * static in this file. */
static once_flag planner_lock_once = ONCE_FLAG_INIT;

static void install_planner_locks(void)
{
    fftw_make_planner_thread_safe();
    fftwf_make_planner_thread_safe();
}

/* A plan of either precision. */
typedef struct any_plan {
    fftw_plan d;
    fftwf_plan f;
} any_plan;

/* Plans `howmany` in-place transforms of the row-major core n[0..rank-1] laid out back to
 * back in buf. FFTW_ESTIMATE: planning neither reads nor writes buf, and is fast. The
 * guru64 interface takes ptrdiff_t sizes, so no dim or batch is truncated to int. */
static int plan_make(any_plan *p, int dbl, int rank, const int64_t *n, int64_t howmany, void *buf,
                     int sign)
{
    fftw_iodim64 dims[3], loop;
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        dims[i].n = (ptrdiff_t)n[i];
        dims[i].is = dims[i].os = (ptrdiff_t)s;
        s *= n[i];
    }
    loop.n = (ptrdiff_t)howmany;
    loop.is = loop.os = (ptrdiff_t)s;
    p->d = NULL;
    p->f = NULL;
    if (dbl)
        p->d = fftw_plan_guru64_dft(rank, dims, 1, &loop, (fftw_complex *)buf, (fftw_complex *)buf,
                                    sign, FFTW_ESTIMATE);
    else
        p->f = fftwf_plan_guru64_dft(rank, dims, 1, &loop, (fftwf_complex *)buf,
                                     (fftwf_complex *)buf, sign, FFTW_ESTIMATE);
    return p->d || p->f;
}

static void plan_execute(const any_plan *p)
{
    if (p->d)
        fftw_execute(p->d);
    else
        fftwf_execute(p->f);
}

static void plan_destroy(any_plan *p)
{
    if (p->d)
        fftw_destroy_plan(p->d);
    if (p->f)
        fftwf_destroy_plan(p->f);
    p->d = NULL;
    p->f = NULL;
}

/* Walks the lines of a tensor (every dim but the last, row-major) keeping the element
 * offset of the current line's start, without a division per line. */
typedef struct line_iter {
    const fl_tensor *t;
    int64_t idx[FL_MAX_DIMS];
    int64_t off;
} line_iter;

static void line_iter_init(line_iter *it, const fl_tensor *t, int64_t line)
{
    it->t = t;
    it->off = 0;
    for (int i = t->ndim - 2; i >= 0; i--) {
        it->idx[i] = line % t->shape[i];
        it->off += it->idx[i] * t->stride[i];
        line /= t->shape[i];
    }
}

static void line_iter_next(line_iter *it)
{
    const fl_tensor *t = it->t;
    for (int i = t->ndim - 2; i >= 0; i--) {
        it->off += t->stride[i];
        if (++it->idx[i] < t->shape[i])
            return;
        it->off -= it->idx[i] * t->stride[i];
        it->idx[i] = 0;
    }
}

/* Copies `nlines` lines of `in` from line `line0` into buf as interleaved complex of the
 * buffer's precision (which is in's: f32/c64 -> float, f64/c128 -> double); real input
 * gets imaginary part 0. */
static void gather(const fl_tensor *in, int64_t line0, int64_t nlines, void *buf)
{
    const char *src = fl_tensor_data(in);
    int64_t len = in->shape[in->ndim - 1], st = in->stride[in->ndim - 1];
    line_iter it;
    line_iter_init(&it, in, line0);
    for (int64_t l = 0; l < nlines; l++, line_iter_next(&it)) {
        int64_t o = it.off;
        switch (in->dtype) {
        case FL_F32: {
            const float *s = (const float *)src;
            float *d = (float *)buf + 2 * l * len;
            for (int64_t j = 0; j < len; j++) {
                d[2 * j] = s[o + j * st];
                d[2 * j + 1] = 0.0f;
            }
            break;
        }
        case FL_C64: {
            const float *s = (const float *)src;
            float *d = (float *)buf + 2 * l * len;
            for (int64_t j = 0; j < len; j++) {
                d[2 * j] = s[2 * (o + j * st)];
                d[2 * j + 1] = s[2 * (o + j * st) + 1];
            }
            break;
        }
        case FL_F64: {
            const double *s = (const double *)src;
            double *d = (double *)buf + 2 * l * len;
            for (int64_t j = 0; j < len; j++) {
                d[2 * j] = s[o + j * st];
                d[2 * j + 1] = 0.0;
            }
            break;
        }
        case FL_C128: {
            const double *s = (const double *)src;
            double *d = (double *)buf + 2 * l * len;
            for (int64_t j = 0; j < len; j++) {
                d[2 * j] = s[2 * (o + j * st)];
                d[2 * j + 1] = s[2 * (o + j * st) + 1];
            }
            break;
        }
        default:
            FL_ASSERT(!"fft: input dtype not f32/f64/c64/c128");
        }
    }
}

/* Writes `nlines` lines of buf, divided by div, into out (c64 or c128) from line line0.
 * The division happens in double either way, so a c64 result is rounded once. */
static void scatter(fl_tensor *out, int64_t line0, int64_t nlines, const void *buf, double div)
{
    char *dst = fl_tensor_data(out);
    int64_t len = out->shape[out->ndim - 1], st = out->stride[out->ndim - 1];
    line_iter it;
    line_iter_init(&it, out, line0);
    for (int64_t l = 0; l < nlines; l++, line_iter_next(&it)) {
        int64_t o = it.off;
        if (out->dtype == FL_C64) {
            const float *s = (const float *)buf + 2 * l * len;
            float *d = (float *)dst;
            for (int64_t j = 0; j < len; j++) {
                d[2 * (o + j * st)] = (float)((double)s[2 * j] / div);
                d[2 * (o + j * st) + 1] = (float)((double)s[2 * j + 1] / div);
            }
        } else {
            const double *s = (const double *)buf + 2 * l * len;
            double *d = (double *)dst;
            for (int64_t j = 0; j < len; j++) {
                d[2 * (o + j * st)] = s[2 * j] / div;
                d[2 * (o + j * st) + 1] = s[2 * j + 1] / div;
            }
        }
    }
}

/* buf[0..2n) /= div, in buf's precision's storage (computed in double). */
static void scale_inplace(void *buf, int dbl, int64_t n, double div)
{
    if (dbl) {
        double *d = buf;
        for (int64_t i = 0; i < 2 * n; i++)
            d[i] /= div;
    } else {
        float *f = buf;
        for (int64_t i = 0; i < 2 * n; i++)
            f[i] = (float)((double)f[i] / div);
    }
}

static fl_status plan_failed(fl_backend *be, const fl_tensor *out, int ndims, fl_error *err)
{
    char d[96];
    return fl_error_set(err, FL_E_UNSUPPORTED, "%s: fftw cannot plan a %d-d transform of %s",
                        be->vt->name, ndims, fl_tensor_describe(out, d, sizeof d));
}

fl_status fl_cpu_fftw_fft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims,
                          int inverse, fl_error *err)
{
    FL_ASSERT(ndims >= 1 && ndims <= 3 && ndims <= out->ndim);
    FL_ASSERT(out->dtype == FL_C64 || out->dtype == FL_C128);
    int dbl = out->dtype == FL_C128;
    FL_ASSERT(fl_dtype_real_of(in->dtype) == (dbl ? FL_F64 : FL_F32));
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    call_once(&planner_lock_once, install_planner_locks);

    int64_t n[3], core = 1;
    for (int i = 0; i < ndims; i++) {
        n[i] = out->shape[out->ndim - ndims + i];
        core *= n[i];
    }
    int64_t batch = fl_cpu_batch_count(out, ndims);
    int64_t lines_per_item = core / out->shape[out->ndim - 1];
    int sign = inverse ? FFTW_BACKWARD : FFTW_FORWARD;
    double div = inverse ? (double)core : 1.0;
    any_plan plan;

    if (fl_tensor_is_contiguous(out)) {
        /* The output itself is the work array: no scratch, no second copy. Planning on
         * the real array lets FFTW see its actual alignment (a view's offset may leave it
         * less aligned than an allocation, which FFTW then simply plans for). */
        void *buf = fl_tensor_data(out);
        if (!plan_make(&plan, dbl, ndims, n, batch, buf, sign))
            return plan_failed(be, out, ndims, err);
        gather(in, 0, batch * lines_per_item, buf);
        plan_execute(&plan);
        plan_destroy(&plan);
        if (inverse)
            scale_inplace(buf, dbl, batch * core, div);
        return FL_OK;
    }

    /* Strided output: transform chunks of whole batch items in aligned scratch. */
    int64_t chunk = FFTW_CHUNK_ELEMS / core;
    if (chunk < 1)
        chunk = 1;
    if (chunk > batch)
        chunk = batch;
    size_t elems, bytes;
    if (fl_mul_overflows((size_t)chunk, (size_t)core, &elems) ||
        fl_mul_overflows(elems, dbl ? 2 * sizeof(double) : 2 * sizeof(float), &bytes))
        return fl_error_set(err, FL_E_NOMEM, "%s: fft scratch for a core of %lld elements overflows",
                            be->vt->name, (long long)core);
    void *buf = fl_alloc(be->alloc, bytes); /* FL_ALIGN (64) bytes: enough for FFTW's SIMD */
    if (!buf)
        return fl_error_set(err, FL_E_NOMEM, "%s: fft: cannot allocate %zu bytes of scratch",
                            be->vt->name, bytes);
    if (!plan_make(&plan, dbl, ndims, n, chunk, buf, sign)) {
        fl_free(be->alloc, buf, bytes);
        return plan_failed(be, out, ndims, err);
    }
    any_plan tail = { NULL, NULL }; /* for the last, shorter chunk */
    fl_status st = FL_OK;
    for (int64_t b0 = 0; b0 < batch; b0 += chunk) {
        int64_t cnt = batch - b0 < chunk ? batch - b0 : chunk;
        const any_plan *p = &plan;
        if (cnt < chunk) {
            if (!plan_make(&tail, dbl, ndims, n, cnt, buf, sign)) {
                st = plan_failed(be, out, ndims, err);
                break;
            }
            p = &tail;
        }
        gather(in, b0 * lines_per_item, cnt * lines_per_item, buf);
        plan_execute(p);
        scatter(out, b0 * lines_per_item, cnt * lines_per_item, buf, div);
    }
    plan_destroy(&tail);
    plan_destroy(&plan);
    fl_free(be->alloc, buf, bytes);
    return st;
}
