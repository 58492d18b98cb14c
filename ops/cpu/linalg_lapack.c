/* Dense linear algebra of the cpu backend through LAPACKE: syevd/heevd, potrf, potrs and
 * gesv on each batch matrix, copied into column-major scratch taken from the backend's
 * allocator (the _work entry points, so LAPACKE itself allocates nothing). */
#include "cpu_internal.h"

#include <complex.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include <lapacke.h>

/* ---------------------------------------------------------------- scratch and copies */

/* Scratch block list: every buffer a call takes, freed together on every path. */
#define SCRATCH_MAX 6
typedef struct scratch {
    fl_backend *be;
    int count;
    void *ptr[SCRATCH_MAX];
    size_t bytes[SCRATCH_MAX];
} scratch;

static void *scratch_get(scratch *s, size_t count, size_t elem, const char *op, fl_error *err,
                         fl_status *st)
{
    size_t nb;
    FL_ASSERT(s->count < SCRATCH_MAX);
    if (fl_mul_overflows(count, elem, &nb)) {
        *st = fl_error_set(err, FL_E_NOMEM, "%s: scratch of %zu x %zu bytes is too large", op,
                           count, elem);
        return NULL;
    }
    void *p = fl_alloc(s->be->alloc, nb);
    if (!p) {
        *st = fl_error_set(err, FL_E_NOMEM, "%s: cannot allocate %zu bytes of scratch", op, nb);
        return NULL;
    }
    s->ptr[s->count] = p;
    s->bytes[s->count++] = nb;
    return p;
}

static void scratch_free(scratch *s)
{
    while (s->count > 0) {
        s->count--;
        fl_free(s->be->alloc, s->ptr[s->count], s->bytes[s->count]);
    }
}

/* LAPACK takes 32-bit sizes here (lapack_int); larger matrices are refused, not truncated. */
static fl_status check_dims(const char *op, int64_t n, int64_t k, fl_error *err)
{
    if (n > INT_MAX / 8 || k > INT_MAX / 8)
        return fl_error_set(err, FL_E_UNSUPPORTED,
                            "%s: LAPACK sizes are 32-bit here; n = %lld, k = %lld is too large", op,
                            (long long)n, (long long)k);
    return FL_OK;
}

/* Batch item b of t ([..., rows, cols], any strides) into dst column-major with leading
 * dimension ld, same dtype. Only the lower triangle when `lower`. */
static void gather_cm(const fl_tensor *t, int64_t b, void *dst, int64_t ld, int lower)
{
    size_t es = fl_dtype_size(t->dtype);
    const char *src = fl_tensor_data(t);
    int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
    int64_t rs = t->stride[t->ndim - 2], cs = t->stride[t->ndim - 1];
    int64_t off = fl_cpu_batch_offset(t, 2, b);
    char *d = dst;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = lower ? j : 0; i < rows; i++)
            memcpy(d + (size_t)(i + j * ld) * es, src + (size_t)(off + i * rs + j * cs) * es, es);
}

/* The inverse of gather_cm. With `lower`, the strict upper triangle is written as zeros. */
static void scatter_cm(fl_tensor *t, int64_t b, const void *src, int64_t ld, int lower)
{
    size_t es = fl_dtype_size(t->dtype);
    char *dst = fl_tensor_data(t);
    int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
    int64_t rs = t->stride[t->ndim - 2], cs = t->stride[t->ndim - 1];
    int64_t off = fl_cpu_batch_offset(t, 2, b);
    const char *s = src;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < rows; i++) {
            char *o = dst + (size_t)(off + i * rs + j * cs) * es;
            if (lower && i < j)
                memset(o, 0, es);
            else
                memcpy(o, s + (size_t)(i + j * ld) * es, es);
        }
}

/* Element (i, j) of a column-major scratch matrix as double complex, for checks. */
static double _Complex elem_cm(fl_dtype t, const void *m, int64_t ld, int64_t i, int64_t j)
{
    int64_t k = i + j * ld;
    switch (t) {
    case FL_F32: return ((const float *)m)[k];
    case FL_F64: return ((const double *)m)[k];
    case FL_C64: return ((const float _Complex *)m)[k];
    case FL_C128: return ((const double _Complex *)m)[k];
    default: FL_ASSERT(!"linalg: dtype not f32/f64/c64/c128");
    }
    return 0.0;
}

/* A workspace size from a query (returned as a floating-point value in work[0]) raised to
 * the documented minimum, so a rounded-down float cannot under-size it. */
static lapack_int work_size(double queried, lapack_int minimum)
{
    double q = ceil(queried * (1.0 + 1e-6));
    lapack_int v = q < (double)INT_MAX ? (lapack_int)q : INT_MAX;
    return v > minimum ? v : minimum;
}

static fl_status lapack_bad_arg(const char *op, const char *routine, lapack_int info, fl_error *err)
{
    /* a negative info names an argument we passed badly: a bug here, reported not hidden */
    return fl_error_set(err, FL_E_INVALID, "%s: LAPACKE %s rejected argument %d", op, routine,
                        (int)-info);
}

/* ---------------------------------------------------------------- eigh */

fl_status fl_cpu_lapack_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err)
{
    int64_t n64 = a->shape[a->ndim - 1], batch = fl_cpu_batch_count(a, 2);
    if (batch == 0 || n64 == 0)
        return FL_OK;
    fl_status st = check_dims("eigh", n64, 0, err);
    if (st)
        return st;
    lapack_int n = (lapack_int)n64, info = 0;
    fl_dtype dt = a->dtype, rt = fl_dtype_real_of(dt);
    int cplx = fl_dtype_is_complex(dt), single = dt == FL_F32 || dt == FL_C64;
    char jobz = v ? 'V' : 'N';
    size_t es = fl_dtype_size(dt), rs = fl_dtype_size(rt);
    scratch s = { .be = be };

    void *m = scratch_get(&s, (size_t)n * (size_t)n, es, "eigh", err, &st);
    void *wv = m ? scratch_get(&s, (size_t)n, rs, "eigh", err, &st) : NULL;
    if (!wv)
        goto done;

    /* workspace query: work (dtype), rwork (real, heevd only), iwork */
    double _Complex wq = 0;
    double rq = 0;
    lapack_int iq = 0, lwork, lrwork = 0, liwork;
    {
        float fw[2] = { 0, 0 }, frw = 0;
        double dw[2] = { 0, 0 }, drw = 0;
        switch (dt) {
        case FL_F32:
            info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv, fw, -1, &iq, -1);
            wq = fw[0];
            break;
        case FL_F64:
            info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv, dw, -1, &iq, -1);
            wq = dw[0];
            break;
        case FL_C64:
            info = LAPACKE_cheevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv,
                                       (float _Complex *)fw, -1, &frw, -1, &iq, -1);
            wq = fw[0];
            rq = frw;
            break;
        default:
            info = LAPACKE_zheevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv,
                                       (double _Complex *)dw, -1, &drw, -1, &iq, -1);
            wq = dw[0];
            rq = drw;
            break;
        }
    }
    if (info) {
        st = lapack_bad_arg("eigh", cplx ? "heevd (query)" : "syevd (query)", info, err);
        goto done;
    }
    /* documented minima (LAPACK ?syevd / ?heevd, n > 1) */
    if (v) {
        lwork = cplx ? 2 * n + n * n : 1 + 6 * n + 2 * n * n;
        lrwork = cplx ? 1 + 5 * n + 2 * n * n : 0;
        liwork = 3 + 5 * n;
    } else {
        lwork = cplx ? n + 1 : 2 * n + 1;
        lrwork = cplx ? n : 0;
        liwork = 1;
    }
    lwork = work_size(creal(wq), lwork);
    lrwork = cplx ? work_size(rq, lrwork) : 0;
    liwork = iq > liwork ? iq : liwork;

    void *work = scratch_get(&s, (size_t)lwork, es, "eigh", err, &st);
    void *rwork = work && cplx ? scratch_get(&s, (size_t)lrwork, rs, "eigh", err, &st) : work;
    lapack_int *iwork = rwork ? scratch_get(&s, (size_t)liwork, sizeof(lapack_int), "eigh", err, &st)
                              : NULL;
    if (!iwork)
        goto done;

    void *wbase = fl_tensor_data(w);
    int64_t wstride = w->stride[w->ndim - 1];
    for (int64_t b = 0; b < batch; b++) {
        gather_cm(a, b, m, n, 1);
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = j; i < n; i++) {
                double _Complex z = elem_cm(dt, m, n, i, j);
                if (!isfinite(creal(z)) || !isfinite(cimag(z))) {
                    st = fl_error_set(err, FL_E_NUMERIC,
                                      "eigh: matrix %lld of the batch has a non-finite entry at "
                                      "(%lld, %lld) of its lower triangle",
                                      (long long)b, (long long)i, (long long)j);
                    goto done;
                }
            }
        const char *routine;
        switch (dt) {
        case FL_F32:
            routine = "ssyevd";
            info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv, work, lwork, iwork,
                                       liwork);
            break;
        case FL_F64:
            routine = "dsyevd";
            info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv, work, lwork, iwork,
                                       liwork);
            break;
        case FL_C64:
            routine = "cheevd";
            info = LAPACKE_cheevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv, work, lwork, rwork,
                                       lrwork, iwork, liwork);
            break;
        default:
            routine = "zheevd";
            info = LAPACKE_zheevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, m, n, wv, work, lwork, rwork,
                                       lrwork, iwork, liwork);
            break;
        }
        if (info < 0) {
            st = lapack_bad_arg("eigh", routine, info, err);
            goto done;
        }
        if (info > 0) {
            st = fl_error_set(err, FL_E_NUMERIC,
                              "eigh: matrix %lld of the batch: %s failed to converge (info %d)",
                              (long long)b, routine, (int)info);
            goto done;
        }
        int64_t woff = fl_cpu_batch_offset(w, 1, b);
        for (int64_t i = 0; i < n; i++) {
            if (single)
                ((float *)wbase)[woff + i * wstride] = ((const float *)wv)[i];
            else
                ((double *)wbase)[woff + i * wstride] = ((const double *)wv)[i];
        }
        if (v)
            scatter_cm(v, b, m, n, 0);
    }
done:
    scratch_free(&s);
    return st;
}

/* ---------------------------------------------------------------- Cholesky */

static lapack_int potrf(fl_dtype dt, lapack_int n, void *m)
{
    switch (dt) {
    case FL_F32: return LAPACKE_spotrf_work(LAPACK_COL_MAJOR, 'L', n, m, n);
    case FL_F64: return LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', n, m, n);
    case FL_C64: return LAPACKE_cpotrf_work(LAPACK_COL_MAJOR, 'L', n, m, n);
    default: return LAPACKE_zpotrf_work(LAPACK_COL_MAJOR, 'L', n, m, n);
    }
}

fl_status fl_cpu_lapack_cholesky(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err)
{
    int64_t n64 = a->shape[a->ndim - 1], batch = fl_cpu_batch_count(a, 2);
    if (batch == 0 || n64 == 0)
        return FL_OK;
    fl_status st = check_dims("cholesky", n64, 0, err);
    if (st)
        return st;
    lapack_int n = (lapack_int)n64;
    scratch s = { .be = be };
    void *m = scratch_get(&s, (size_t)n * (size_t)n, fl_dtype_size(a->dtype), "cholesky", err, &st);
    if (!m)
        goto done;
    for (int64_t b = 0; b < batch; b++) {
        gather_cm(a, b, m, n, 1);
        lapack_int info = potrf(a->dtype, n, m);
        if (info < 0) {
            st = lapack_bad_arg("cholesky", "potrf", info, err);
            break;
        }
        /* OpenBLAS's potrf tests a pivot with `<= 0`, which a NaN passes, and carries on:
         * a NaN pivot flows down the diagonal, so the first NaN on it is the first failing
         * minor, exactly as reference LAPACK and the cpu-ref backend report it */
        for (lapack_int j = 0; info == 0 && j < n; j++)
            if (isnan(creal(elem_cm(a->dtype, m, n, j, j))))
                info = j + 1;
        if (info > 0) {
            st = fl_error_set(err, FL_E_NUMERIC,
                              "cholesky: matrix %lld of the batch is not positive definite "
                              "(leading minor %d)",
                              (long long)b, (int)info);
            break;
        }
        scatter_cm(l, b, m, n, 1);
    }
done:
    scratch_free(&s);
    return st;
}

/* ---------------------------------------------------------------- solves */

fl_status fl_cpu_lapack_cholesky_solve(fl_backend *be, fl_tensor *x, const fl_tensor *l,
                                       const fl_tensor *b, fl_error *err)
{
    int64_t n64 = l->shape[l->ndim - 1], k64 = b->shape[b->ndim - 1];
    int64_t batch = fl_cpu_batch_count(l, 2);
    if (batch == 0 || n64 == 0 || k64 == 0)
        return FL_OK;
    fl_status st = check_dims("cholesky_solve", n64, k64, err);
    if (st)
        return st;
    lapack_int n = (lapack_int)n64, k = (lapack_int)k64;
    fl_dtype dt = l->dtype;
    size_t es = fl_dtype_size(dt);
    scratch s = { .be = be };
    void *lm = scratch_get(&s, (size_t)n * (size_t)n, es, "cholesky_solve", err, &st);
    void *xm = lm ? scratch_get(&s, (size_t)n * (size_t)k, es, "cholesky_solve", err, &st) : NULL;
    if (!xm)
        goto done;
    for (int64_t bi = 0; bi < batch; bi++) {
        gather_cm(l, bi, lm, n, 1);
        for (int64_t i = 0; i < n; i++)
            if (elem_cm(dt, lm, n, i, i) == 0.0) {
                /* potrs would divide by it: refuse, as the reference does */
                st = fl_error_set(err, FL_E_NUMERIC,
                                  "cholesky_solve: matrix %lld of the batch has a zero on the "
                                  "diagonal of l (row %lld); l is not a Cholesky factor",
                                  (long long)bi, (long long)i);
                goto done;
            }
        gather_cm(b, bi, xm, n, 0);
        lapack_int info;
        switch (dt) {
        case FL_F32: info = LAPACKE_spotrs_work(LAPACK_COL_MAJOR, 'L', n, k, lm, n, xm, n); break;
        case FL_F64: info = LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', n, k, lm, n, xm, n); break;
        case FL_C64: info = LAPACKE_cpotrs_work(LAPACK_COL_MAJOR, 'L', n, k, lm, n, xm, n); break;
        default: info = LAPACKE_zpotrs_work(LAPACK_COL_MAJOR, 'L', n, k, lm, n, xm, n); break;
        }
        if (info) {
            st = lapack_bad_arg("cholesky_solve", "potrs", info, err);
            goto done;
        }
        scatter_cm(x, bi, xm, n, 0);
    }
done:
    scratch_free(&s);
    return st;
}

fl_status fl_cpu_lapack_solve(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b,
                              fl_error *err)
{
    int64_t n64 = a->shape[a->ndim - 1], k64 = b->shape[b->ndim - 1];
    int64_t batch = fl_cpu_batch_count(a, 2);
    if (batch == 0 || n64 == 0)
        return FL_OK;
    fl_status st = check_dims("solve", n64, k64, err);
    if (st)
        return st;
    lapack_int n = (lapack_int)n64, k = (lapack_int)k64;
    fl_dtype dt = a->dtype;
    size_t es = fl_dtype_size(dt);
    scratch s = { .be = be };
    void *m = scratch_get(&s, (size_t)n * (size_t)n, es, "solve", err, &st);
    void *xm = m ? scratch_get(&s, (size_t)n * (size_t)k, es, "solve", err, &st) : NULL;
    lapack_int *ipiv = xm ? scratch_get(&s, (size_t)n, sizeof(lapack_int), "solve", err, &st) : NULL;
    if (!ipiv)
        goto done;
    for (int64_t bi = 0; bi < batch; bi++) {
        gather_cm(a, bi, m, n, 0);
        gather_cm(b, bi, xm, n, 0);
        lapack_int info;
        switch (dt) {
        case FL_F32: info = LAPACKE_sgesv_work(LAPACK_COL_MAJOR, n, k, m, n, ipiv, xm, n); break;
        case FL_F64: info = LAPACKE_dgesv_work(LAPACK_COL_MAJOR, n, k, m, n, ipiv, xm, n); break;
        case FL_C64: info = LAPACKE_cgesv_work(LAPACK_COL_MAJOR, n, k, m, n, ipiv, xm, n); break;
        default: info = LAPACKE_zgesv_work(LAPACK_COL_MAJOR, n, k, m, n, ipiv, xm, n); break;
        }
        if (info < 0) {
            st = lapack_bad_arg("solve", "gesv", info, err);
            goto done;
        }
        if (info > 0) {
            /* getrf's info: U(info, info) (1-based) is exactly zero */
            st = fl_error_set(err, FL_E_NUMERIC,
                              "solve: matrix %lld of the batch is singular (U(%d, %d) is exactly "
                              "zero)",
                              (long long)bi, (int)info - 1, (int)info - 1);
            goto done;
        }
        if (k)
            scatter_cm(x, bi, xm, n, 0);
    }
done:
    scratch_free(&s);
    return st;
}
