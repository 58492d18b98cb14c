/* Reference dense linear algebra for the cpu-ref backend: cyclic complex Jacobi (eigh),
 * Cholesky, triangular solves and LU with partial pivoting, all in double complex, the
 * yardstick the LAPACK (and later CUDA) paths are checked against. */
#include "cpu_internal.h"

#include <complex.h>
#include <float.h>
#include <math.h>
#include <stdio.h>

/* Every dtype runs through the same double-complex code. For real inputs the imaginary
 * parts stay exactly zero (products and sums of (x, 0) are exact in their real part, the
 * Jacobi phase conj(a_pq)/|a_pq| is exactly ±1 and divisions go through cdiv below), so
 * the real path is bit for bit ordinary real arithmetic in double. */
typedef double _Complex cplx;

/* Jacobi stops when the off-diagonal Frobenius norm is below this fraction of ||A||_F
 * (which rotations preserve). Convergence is quadratic, so the sweep that gets under
 * 1e-8 usually lands far below this; the cap only guards NaN-free pathological input. */
#define JACOBI_TOL 1e-15
#define JACOBI_MAX_SWEEPS 60

/* ---------------------------------------------------------------- element access */

static cplx load_elem(fl_dtype t, const void *base, int64_t i)
{
    switch (t) {
    case FL_F32: return CMPLX(((const float *)base)[i], 0.0);
    case FL_F64: return CMPLX(((const double *)base)[i], 0.0);
    case FL_C64: return CMPLX(((const float *)base)[2 * i], ((const float *)base)[2 * i + 1]);
    case FL_C128: return CMPLX(((const double *)base)[2 * i], ((const double *)base)[2 * i + 1]);
    default: FL_ASSERT(!"linalg: dtype not f32/f64/c64/c128");
    }
    return 0.0;
}

/* Stores z (real dtypes: its real part) as element i. */
static void store_elem(fl_dtype t, void *base, int64_t i, cplx z)
{
    switch (t) {
    case FL_F32: ((float *)base)[i] = (float)creal(z); return;
    case FL_F64: ((double *)base)[i] = creal(z); return;
    case FL_C64:
        ((float *)base)[2 * i] = (float)creal(z);
        ((float *)base)[2 * i + 1] = (float)cimag(z);
        return;
    case FL_C128:
        ((double *)base)[2 * i] = creal(z);
        ((double *)base)[2 * i + 1] = cimag(z);
        return;
    default: FL_ASSERT(!"linalg: dtype not f32/f64/c64/c128");
    }
}

/* Batch item b of t (a [..., rows, cols] view of any strides) into dst, row-major. */
static void gather(const fl_tensor *t, int64_t b, cplx *dst)
{
    const void *base = fl_tensor_data(t);
    int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
    int64_t rs = t->stride[t->ndim - 2], cs = t->stride[t->ndim - 1];
    int64_t off = fl_cpu_batch_offset(t, 2, b);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            dst[i * cols + j] = load_elem(t->dtype, base, off + i * rs + j * cs);
}

static void scatter(fl_tensor *t, int64_t b, const cplx *src)
{
    void *base = fl_tensor_data(t);
    int64_t rows = t->shape[t->ndim - 2], cols = t->shape[t->ndim - 1];
    int64_t rs = t->stride[t->ndim - 2], cs = t->stride[t->ndim - 1];
    int64_t off = fl_cpu_batch_offset(t, 2, b);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            store_elem(t->dtype, base, off + i * rs + j * cs, src[i * cols + j]);
}

/* a / b; exact real division when b is real, so real inputs stay plain real arithmetic
 * (the C library's complex division rescales and need not return exactly a/b). */
static cplx cdiv(cplx a, cplx b)
{
    double br = creal(b), bi = cimag(b);
    if (bi == 0.0)
        return CMPLX(creal(a) / br, cimag(a) / br);
    /* Smith's algorithm: no overflow from squaring b */
    if (fabs(br) >= fabs(bi)) {
        double r = bi / br, d = br + bi * r;
        return CMPLX((creal(a) + cimag(a) * r) / d, (cimag(a) - creal(a) * r) / d);
    }
    double r = br / bi, d = br * r + bi;
    return CMPLX((creal(a) * r + cimag(a)) / d, (cimag(a) * r - creal(a)) / d);
}

/* |z|^2 without the overflow-safe hypot (values here are matrix entries, not extremes). */
static double abs2(cplx z) { return creal(z) * creal(z) + cimag(z) * cimag(z); }

/* Scratch of `count` complex numbers from the backend's allocator. */
static cplx *scratch_new(fl_backend *be, int64_t count, size_t *bytes, const char *op,
                         fl_error *err, fl_status *st)
{
    size_t nb;
    if (count < 0 || fl_mul_overflows((size_t)count, sizeof(cplx), &nb)) {
        *st = fl_error_set(err, FL_E_NOMEM, "%s: scratch of %lld elements is too large", op,
                           (long long)count);
        return NULL;
    }
    cplx *p = fl_alloc(be->alloc, nb);
    if (!p) {
        *st = fl_error_set(err, FL_E_NOMEM, "%s: cannot allocate %zu bytes of scratch", op, nb);
        return NULL;
    }
    *bytes = nb;
    *st = FL_OK;
    return p;
}

/* ---------------------------------------------------------------- eigh */

/* One unitary Jacobi rotation U acting on rows/columns p < q of the Hermitian a (n x n,
 * row-major, full storage), accumulated into v: a <- U^H a U, v <- v U, making a_pq = 0.
 * With a_pq = r e^{iφ}, U = diag(1, e^{-iφ}) R where R = [[c, s], [-s, c]] is the real
 * Jacobi rotation of the real symmetric [[a_pp, r], [r, a_qq]] (Numerical Recipes 11.1,
 * whose choice of the smaller angle keeps the rotation close to the identity). */
static void jacobi_rotate(cplx *a, cplx *v, int64_t n, int64_t p, int64_t q)
{
    cplx apq = a[p * n + q];
    double r = cabs(apq);
    cplx e = cdiv(conj(apq), CMPLX(r, 0.0)); /* e^{-iφ} */
    double app = creal(a[p * n + p]), aqq = creal(a[q * n + q]);
    double theta = 0.5 * (aqq - app) / r, t;
    if (fabs(theta) > 1e150) /* theta^2 would overflow; t ~ 1 / (2 theta) */
        t = 0.5 / theta;
    else
        t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
    double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
    cplx se = s * e, ce = c * e;
    /* columns: a <- a U */
    for (int64_t k = 0; k < n; k++) {
        cplx akp = a[k * n + p], akq = a[k * n + q];
        a[k * n + p] = c * akp - se * akq;
        a[k * n + q] = s * akp + ce * akq;
    }
    /* rows: a <- U^H a */
    cplx sec = conj(se), cec = conj(ce);
    for (int64_t k = 0; k < n; k++) {
        cplx apk = a[p * n + k], aqk = a[q * n + k];
        a[p * n + k] = c * apk - sec * aqk;
        a[q * n + k] = s * apk + cec * aqk;
    }
    /* the 2x2 block in closed form: exact zeros off the diagonal, real diagonal */
    a[p * n + p] = app - t * r;
    a[q * n + q] = aqq + t * r;
    a[p * n + q] = a[q * n + p] = 0.0;
    if (v) {
        for (int64_t k = 0; k < n; k++) {
            cplx vkp = v[k * n + p], vkq = v[k * n + q];
            v[k * n + p] = c * vkp - se * vkq;
            v[k * n + q] = s * vkp + ce * vkq;
        }
    }
}

/* Diagonalises the Hermitian a in place (its diagonal ends up holding the eigenvalues,
 * unsorted); v (may be NULL) receives the eigenvectors in columns. */
static void jacobi_eigh(cplx *a, cplx *v, int64_t n)
{
    double fro2 = 0.0;
    for (int64_t i = 0; i < n * n; i++)
        fro2 += abs2(a[i]);
    double stop2 = (JACOBI_TOL * JACOBI_TOL) * fro2;
    if (v)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                v[i * n + j] = i == j ? 1.0 : 0.0;
    for (int sweep = 0; sweep < JACOBI_MAX_SWEEPS; sweep++) {
        double off2 = 0.0;
        for (int64_t p = 0; p < n; p++)
            for (int64_t q = p + 1; q < n; q++)
                off2 += 2.0 * abs2(a[p * n + q]);
        if (!(off2 > stop2)) /* also ends on NaN, which callers exclude anyway */
            break;
        int rotated = 0;
        for (int64_t p = 0; p < n; p++) {
            for (int64_t q = p + 1; q < n; q++) {
                double r = cabs(a[p * n + q]);
                if (r == 0.0)
                    continue;
                double dp = fabs(creal(a[p * n + p])), dq = fabs(creal(a[q * n + q]));
                /* after a few sweeps, an entry that cannot change either diagonal entry
                 * even when magnified 100x is dropped (Numerical Recipes' rule): it
                 * guarantees termination when rounding stalls the norm test */
                if (sweep > 3 && dp + 100.0 * r == dp && dq + 100.0 * r == dq) {
                    a[p * n + q] = a[q * n + p] = 0.0;
                    continue;
                }
                jacobi_rotate(a, v, n, p, q);
                rotated = 1;
            }
        }
        if (!rotated)
            break;
    }
}

fl_status fl_cpu_ref_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err)
{
    int64_t n = a->shape[a->ndim - 1], batch = fl_cpu_batch_count(a, 2);
    if (batch == 0 || n == 0)
        return FL_OK;
    fl_status st = FL_OK;
    size_t abytes = 0, vbytes = 0;
    cplx *m = scratch_new(be, n * n, &abytes, "eigh", err, &st);
    if (!m)
        return st;
    cplx *vec = NULL;
    if (v && !(vec = scratch_new(be, n * n, &vbytes, "eigh", err, &st))) {
        fl_free(be->alloc, m, abytes);
        return st;
    }
    fl_dtype wt = w->dtype;
    void *wbase = fl_tensor_data(w);
    int64_t ws = w->stride[w->ndim - 1];
    for (int64_t b = 0; b < batch; b++) {
        gather(a, b, m);
        /* only the lower triangle is read: mirror it, drop the diagonal's imaginary part */
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j <= i; j++) {
                if (!isfinite(creal(m[i * n + j])) || !isfinite(cimag(m[i * n + j]))) {
                    st = fl_error_set(err, FL_E_NUMERIC,
                                      "eigh: matrix %lld of the batch has a non-finite entry at "
                                      "(%lld, %lld) of its lower triangle",
                                      (long long)b, (long long)i, (long long)j);
                    goto done;
                }
                m[j * n + i] = conj(m[i * n + j]);
            }
            m[i * n + i] = creal(m[i * n + i]);
        }
        jacobi_eigh(m, vec, n);
        /* ascending: selection sort on the diagonal, carrying eigenvector columns along */
        for (int64_t i = 0; i < n; i++) {
            int64_t k = i;
            for (int64_t j = i + 1; j < n; j++)
                if (creal(m[j * n + j]) < creal(m[k * n + k]))
                    k = j;
            if (k == i)
                continue;
            cplx tmp = m[i * n + i];
            m[i * n + i] = m[k * n + k];
            m[k * n + k] = tmp;
            if (vec)
                for (int64_t r = 0; r < n; r++) {
                    tmp = vec[r * n + i];
                    vec[r * n + i] = vec[r * n + k];
                    vec[r * n + k] = tmp;
                }
        }
        int64_t woff = fl_cpu_batch_offset(w, 1, b);
        for (int64_t i = 0; i < n; i++)
            store_elem(wt, wbase, woff + i * ws, creal(m[i * n + i]));
        if (vec)
            scatter(v, b, vec);
    }
done:
    fl_free(be->alloc, vec, vbytes);
    fl_free(be->alloc, m, abytes);
    return st;
}

/* ---------------------------------------------------------------- Cholesky */

/* In-place lower Cholesky factor of the Hermitian m (lower triangle read, n x n row-major):
 * the left-looking column algorithm of LAPACK's potf2. Returns 0, or the 1-based order of
 * the first leading minor that is not positive definite (LAPACK's info), as potrf does:
 * a pivot that is <= 0 or NaN. The upper triangle is set to zero. */
static int64_t cholesky_inplace(cplx *m, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        double d = creal(m[j * n + j]);
        for (int64_t k = 0; k < j; k++)
            d -= abs2(m[j * n + k]);
        if (!(d > 0.0))
            return j + 1;
        d = sqrt(d);
        m[j * n + j] = d;
        for (int64_t i = j + 1; i < n; i++) {
            cplx s = m[i * n + j];
            for (int64_t k = 0; k < j; k++)
                s -= m[i * n + k] * conj(m[j * n + k]);
            m[i * n + j] = CMPLX(creal(s) / d, cimag(s) / d);
        }
        for (int64_t i = 0; i < j; i++)
            m[i * n + j] = 0.0;
    }
    return 0;
}

fl_status fl_cpu_ref_cholesky(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err)
{
    int64_t n = a->shape[a->ndim - 1], batch = fl_cpu_batch_count(a, 2);
    if (batch == 0 || n == 0)
        return FL_OK;
    fl_status st = FL_OK;
    size_t bytes = 0;
    cplx *m = scratch_new(be, n * n, &bytes, "cholesky", err, &st);
    if (!m)
        return st;
    for (int64_t b = 0; b < batch; b++) {
        gather(a, b, m);
        int64_t info = cholesky_inplace(m, n);
        if (info) {
            st = fl_error_set(err, FL_E_NUMERIC,
                              "cholesky: matrix %lld of the batch is not positive definite "
                              "(leading minor %lld)",
                              (long long)b, (long long)info);
            break;
        }
        scatter(l, b, m);
    }
    fl_free(be->alloc, m, bytes);
    return st;
}

/* ---------------------------------------------------------------- solves */

/* x (n x k row-major) <- (L L^H)^-1 x with L the lower triangle of lm (n x n). */
static void cholesky_solve_inplace(const cplx *lm, cplx *x, int64_t n, int64_t k)
{
    for (int64_t c = 0; c < k; c++) {
        /* L y = x */
        for (int64_t i = 0; i < n; i++) {
            cplx s = x[i * k + c];
            for (int64_t j = 0; j < i; j++)
                s -= lm[i * n + j] * x[j * k + c];
            x[i * k + c] = cdiv(s, lm[i * n + i]);
        }
        /* L^H x = y */
        for (int64_t i = n - 1; i >= 0; i--) {
            cplx s = x[i * k + c];
            for (int64_t j = i + 1; j < n; j++)
                s -= conj(lm[j * n + i]) * x[j * k + c];
            x[i * k + c] = cdiv(s, conj(lm[i * n + i]));
        }
    }
}

fl_status fl_cpu_ref_cholesky_solve(fl_backend *be, fl_tensor *x, const fl_tensor *l,
                                    const fl_tensor *b, fl_error *err)
{
    int64_t n = l->shape[l->ndim - 1], k = b->shape[b->ndim - 1];
    int64_t batch = fl_cpu_batch_count(l, 2);
    if (batch == 0 || n == 0 || k == 0)
        return FL_OK;
    fl_status st = FL_OK;
    size_t lbytes = 0, xbytes = 0;
    cplx *lm = scratch_new(be, n * n, &lbytes, "cholesky_solve", err, &st);
    if (!lm)
        return st;
    cplx *xm = scratch_new(be, n * k, &xbytes, "cholesky_solve", err, &st);
    if (!xm) {
        fl_free(be->alloc, lm, lbytes);
        return st;
    }
    for (int64_t bi = 0; bi < batch; bi++) {
        gather(l, bi, lm);
        for (int64_t i = 0; i < n; i++) {
            if (lm[i * n + i] == 0.0) {
                st = fl_error_set(err, FL_E_NUMERIC,
                                  "cholesky_solve: matrix %lld of the batch has a zero on the "
                                  "diagonal of l (row %lld); l is not a Cholesky factor",
                                  (long long)bi, (long long)i);
                goto done;
            }
        }
        gather(b, bi, xm);
        cholesky_solve_inplace(lm, xm, n, k);
        scatter(x, bi, xm);
    }
done:
    fl_free(be->alloc, xm, xbytes);
    fl_free(be->alloc, lm, lbytes);
    return st;
}

/* LAPACK's pivot measure for complex: |re| + |im| (icamax / izamax); |x| for real. */
static double cabs1(cplx z) { return fabs(creal(z)) + fabs(cimag(z)); }

/* Solves m x = x in place by LU with partial pivoting (getf2 order: pivot on the largest
 * |re| + |im| in the column, first one on ties). Returns 0, or the 1-based column whose
 * pivot is exactly zero (LAPACK's getrf info); nothing but an exact zero counts as
 * singular, so an ill-conditioned matrix gives a large, inaccurate x, as in LAPACK. */
static int64_t lu_solve_inplace(cplx *m, cplx *x, int64_t n, int64_t k)
{
    for (int64_t j = 0; j < n; j++) {
        int64_t p = j;
        double best = cabs1(m[j * n + j]);
        for (int64_t i = j + 1; i < n; i++) {
            double v = cabs1(m[i * n + j]);
            if (v > best) {
                best = v;
                p = i;
            }
        }
        if (m[p * n + j] == 0.0)
            return j + 1;
        if (p != j) {
            for (int64_t c = 0; c < n; c++) {
                cplx t = m[j * n + c];
                m[j * n + c] = m[p * n + c];
                m[p * n + c] = t;
            }
            for (int64_t c = 0; c < k; c++) {
                cplx t = x[j * k + c];
                x[j * k + c] = x[p * k + c];
                x[p * k + c] = t;
            }
        }
        cplx piv = m[j * n + j];
        for (int64_t i = j + 1; i < n; i++) {
            cplx f = cdiv(m[i * n + j], piv);
            if (f == 0.0)
                continue;
            m[i * n + j] = f;
            for (int64_t c = j + 1; c < n; c++)
                m[i * n + c] -= f * m[j * n + c];
            for (int64_t c = 0; c < k; c++)
                x[i * k + c] -= f * x[j * k + c];
        }
    }
    /* back substitution with U */
    for (int64_t c = 0; c < k; c++) {
        for (int64_t i = n - 1; i >= 0; i--) {
            cplx s = x[i * k + c];
            for (int64_t j = i + 1; j < n; j++)
                s -= m[i * n + j] * x[j * k + c];
            x[i * k + c] = cdiv(s, m[i * n + i]);
        }
    }
    return 0;
}

fl_status fl_cpu_ref_solve(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b,
                           fl_error *err)
{
    int64_t n = a->shape[a->ndim - 1], k = b->shape[b->ndim - 1];
    int64_t batch = fl_cpu_batch_count(a, 2);
    if (batch == 0 || n == 0)
        return FL_OK;
    fl_status st = FL_OK;
    size_t abytes = 0, xbytes = 0;
    cplx *m = scratch_new(be, n * n, &abytes, "solve", err, &st);
    if (!m)
        return st;
    cplx *xm = scratch_new(be, n * k, &xbytes, "solve", err, &st);
    if (!xm) {
        fl_free(be->alloc, m, abytes);
        return st;
    }
    for (int64_t bi = 0; bi < batch; bi++) {
        gather(a, bi, m);
        gather(b, bi, xm);
        int64_t info = lu_solve_inplace(m, xm, n, k);
        if (info) {
            st = fl_error_set(err, FL_E_NUMERIC,
                              "solve: matrix %lld of the batch is singular (U(%lld, %lld) is "
                              "exactly zero)",
                              (long long)bi, (long long)(info - 1), (long long)(info - 1));
            break;
        }
        scatter(x, bi, xm);
    }
    fl_free(be->alloc, xm, xbytes);
    fl_free(be->alloc, m, abytes);
    return st;
}
