/* cmocka suite for the small dense linear algebra (eigh, cholesky, cholesky_solve, solve)
 * of both CPU backends: closed forms, residual properties on random batches of every
 * dtype, LAPACK against the reference on strided / transposed / broadcast views, the
 * numeric errors, and allocation failures injected into every scratch allocation. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <complex.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"

typedef double _Complex cplx;

/* ---- tolerances ----------------------------------------------------------------------
 * Every check is a ratio in the style of LAPACK's own test suite: a residual divided by
 * (n * eps * the natural scale), where eps is the unit roundoff of the dtype's precision
 * (FLT_EPSILON for f32/c64, DBL_EPSILON for f64/c128), and the ratio must stay below
 * THRESH = 30, LAPACK's THRESH. A backward-stable algorithm gives ratios of order 1 (the
 * reference computes in double and only rounds its outputs, so its ratios are smaller
 * still); a wrong sign, index or stride gives ratios of 1/eps, so nothing is hidden.
 * Comparisons between two backends add both errors and, for forward errors, the
 * condition number: the random systems are built with cond(A) <= COND_MAX. */
#define THRESH 30.0
#define COND_MAX 3.0

static const char *const backend_names[] = { "cpu", "cpu-ref" };
static const fl_dtype all_dtypes[] = { FL_F32, FL_F64, FL_C64, FL_C128 };

static double eps_of(fl_dtype t) { return (t == FL_F32 || t == FL_C64) ? FLT_EPSILON : DBL_EPSILON; }

/* ---- helpers ------------------------------------------------------------------------ */

/* A small independent generator for test data and sizes. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double urand(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53 * 2.0 - 1.0; }
static int64_t irand(uint64_t *s, int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)(splitmix64(s) % (uint64_t)(hi - lo + 1));
}
static cplx crand(uint64_t *s, int complex_)
{
    double re = urand(s);
    return complex_ ? CMPLX(re, urand(s)) : CMPLX(re, 0.0);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static void expect_ok(fl_status st, const fl_error *err, const char *what, const char *be,
                      fl_dtype t)
{
    if (st != FL_OK)
        fail_msg("%s [%s, %s]: status %d: %s", what, be, fl_dtype_name(t), (int)st,
                 fl_error_msg(err));
}

static void check_ratio(const char *what, const char *be, fl_dtype t, int64_t n, double ratio,
                        double bound)
{
    if (!(ratio < bound))
        fail_msg("%s [%s, %s, n=%lld]: ratio %.4g must be < %.4g", what, be, fl_dtype_name(t),
                 (long long)n, ratio, bound);
}

static fl_backend *backend(const char *name, const fl_allocator *alloc)
{
    fl_backend *be = NULL;
    fl_error err;
    fl_status st = fl_backend_new(&be, name, 0, alloc, &err);
    if (st)
        fail_msg("fl_backend_new(%s): %s", name, fl_error_msg(&err));
    return be;
}

static fl_tensor mk(fl_dtype t, int ndim, const int64_t *shape)
{
    fl_tensor out = FL_TENSOR_NULL;
    fl_error err;
    if (fl_tensor_empty(&out, t, ndim, shape, NULL, &err))
        fail_msg("fl_tensor_empty: %s", fl_error_msg(&err));
    return out;
}

static fl_tensor mk3(fl_dtype t, int64_t b, int64_t r, int64_t c)
{
    int64_t sh[3] = { b, r, c };
    return mk(t, 3, sh);
}

static fl_tensor mk2(fl_dtype t, int64_t b, int64_t n)
{
    int64_t sh[2] = { b, n };
    return mk(t, 2, sh);
}

/* Element offset of batch item b (leading dims flattened row-major), independent of the
 * backends' own helper so a shared mistake cannot cancel out. */
static int64_t batch_off(const fl_tensor *t, int core, int64_t b)
{
    int64_t off = 0;
    for (int i = t->ndim - core - 1; i >= 0; i--) {
        off += (b % t->shape[i]) * t->stride[i];
        b /= t->shape[i];
    }
    return off;
}

static int64_t batch_of(const fl_tensor *t, int core)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim - core; i++)
        n *= t->shape[i];
    return n;
}

static cplx load(const fl_tensor *t, int64_t o)
{
    const void *d = fl_tensor_data(t);
    switch (t->dtype) {
    case FL_F32: return CMPLX(((const float *)d)[o], 0.0);
    case FL_F64: return CMPLX(((const double *)d)[o], 0.0);
    case FL_C64: return CMPLX(((const float *)d)[2 * o], ((const float *)d)[2 * o + 1]);
    case FL_C128: return CMPLX(((const double *)d)[2 * o], ((const double *)d)[2 * o + 1]);
    default: fail_msg("load: dtype %s", fl_dtype_name(t->dtype));
    }
    return 0;
}

static void store(fl_tensor *t, int64_t o, cplx z)
{
    void *d = fl_tensor_data(t);
    switch (t->dtype) {
    case FL_F32: ((float *)d)[o] = (float)creal(z); break;
    case FL_F64: ((double *)d)[o] = creal(z); break;
    case FL_C64:
        ((float *)d)[2 * o] = (float)creal(z);
        ((float *)d)[2 * o + 1] = (float)cimag(z);
        break;
    case FL_C128:
        ((double *)d)[2 * o] = creal(z);
        ((double *)d)[2 * o + 1] = cimag(z);
        break;
    default: fail_msg("store: dtype %s", fl_dtype_name(t->dtype));
    }
}

static int64_t mat_off(const fl_tensor *t, int64_t b, int64_t i, int64_t j)
{
    return batch_off(t, 2, b) + i * t->stride[t->ndim - 2] + j * t->stride[t->ndim - 1];
}

/* Matrix b of t into m (row-major rows x cols), and back. */
static void read_mat(const fl_tensor *t, int64_t b, cplx *m)
{
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            m[i * c + j] = load(t, mat_off(t, b, i, j));
}

static void write_mat(fl_tensor *t, int64_t b, const cplx *m)
{
    int64_t r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            store(t, mat_off(t, b, i, j), m[i * c + j]);
}

/* The Hermitian matrix a backend sees: the lower triangle of matrix b, mirrored, with the
 * diagonal's imaginary part dropped (the contract: only the lower triangle is read). */
static void read_herm(const fl_tensor *t, int64_t b, cplx *m)
{
    int64_t n = t->shape[t->ndim - 1];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            cplx z = load(t, mat_off(t, b, i, j));
            m[i * n + j] = i == j ? CMPLX(creal(z), 0.0) : z;
            m[j * n + i] = conj(m[i * n + j]);
        }
}

/* Writes the lower triangle of m into matrix b of t and NaN into its strict upper
 * triangle, so a backend that reads the upper triangle fails loudly. */
static void write_lower_nan_upper(fl_tensor *t, int64_t b, const cplx *m)
{
    int64_t n = t->shape[t->ndim - 1];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            store(t, mat_off(t, b, i, j), j <= i ? m[i * n + j] : CMPLX(NAN, NAN));
}

static double vec_at(const fl_tensor *t, int64_t b, int64_t i)
{
    return creal(load(t, batch_off(t, 1, b) + i * t->stride[t->ndim - 1]));
}

static double fro(const cplx *m, int64_t count)
{
    double s = 0;
    for (int64_t i = 0; i < count; i++)
        s += creal(m[i]) * creal(m[i]) + cimag(m[i]) * cimag(m[i]);
    return sqrt(s);
}

/* c (r x k) = a (r x n) @ b (n x k); op_a = 1: a^H (a stored n x r). */
static void matmul(cplx *c, const cplx *a, const cplx *b, int64_t r, int64_t n, int64_t k, int op_a)
{
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < k; j++) {
            cplx s = 0;
            for (int64_t p = 0; p < n; p++)
                s += (op_a ? conj(a[p * r + i]) : a[i * n + p]) * b[p * k + j];
            c[i * k + j] = s;
        }
}

/* Random Hermitian n x n (real symmetric for real dtypes), entries U(-1, 1). */
static void rand_herm(uint64_t *s, cplx *m, int64_t n, int complex_)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            cplx z = crand(s, complex_ && i != j);
            m[i * n + j] = z;
            m[j * n + i] = conj(z);
        }
}

/* Random Hermitian positive definite A = B B^H / n + I: eigenvalues in [1, ~2.4] (the
 * largest singular value of an n x n U(-1,1) matrix is about 2 sqrt(n/3)), so
 * cond(A) < COND_MAX. */
static void rand_spd(uint64_t *s, cplx *m, int64_t n, int complex_)
{
    cplx *bm = xcalloc((size_t)(n * n), sizeof *bm);
    for (int64_t i = 0; i < n * n; i++)
        bm[i] = crand(s, complex_);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            cplx acc = 0;
            for (int64_t p = 0; p < n; p++)
                acc += bm[i * n + p] * conj(bm[j * n + p]);
            m[i * n + j] = acc / (double)n + (i == j ? 1.0 : 0.0);
        }
    for (int64_t i = 0; i < n; i++)
        m[i * n + i] = creal(m[i * n + i]);
    free(bm);
}

/* Random general A = P (E / sqrt(n) + 3 I) with E U(-1,1) and P a random row permutation
 * (so partial pivoting has work to do): singular values in about [1.8, 4.2], cond < 3. */
static void rand_general(uint64_t *s, cplx *m, int64_t n, int complex_)
{
    cplx *t = xcalloc((size_t)(n * n), sizeof *t);
    int64_t *perm = xcalloc((size_t)n, sizeof *perm);
    for (int64_t i = 0; i < n * n; i++)
        t[i] = crand(s, complex_) / sqrt((double)n);
    for (int64_t i = 0; i < n; i++) {
        t[i * n + i] += 3.0;
        perm[i] = i;
    }
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = irand(s, 0, i), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int64_t i = 0; i < n; i++)
        memcpy(&m[i * n], &t[perm[i] * n], (size_t)n * sizeof *m);
    free(perm);
    free(t);
}

/* ---- property checks on results (read back through the views) ---------------------- */

/* w ascending, ||A V - V W|| / (||A|| n eps) and ||V^H V - I|| / (n eps) below THRESH. */
static void check_eigh(const char *bn, const fl_tensor *a, const fl_tensor *w, const fl_tensor *v)
{
    fl_dtype t = a->dtype;
    int64_t n = a->shape[a->ndim - 1], batch = batch_of(a, 2);
    double eps = eps_of(t);
    cplx *am = xcalloc((size_t)(n * n), sizeof *am), *vm = xcalloc((size_t)(n * n), sizeof *vm);
    cplx *r = xcalloc((size_t)(n * n), sizeof *r);
    for (int64_t b = 0; b < batch; b++) {
        read_herm(a, b, am);
        for (int64_t i = 0; i + 1 < n; i++)
            if (!(vec_at(w, b, i) <= vec_at(w, b, i + 1)))
                fail_msg("eigh [%s, %s]: w not ascending at %lld: %.17g > %.17g", bn,
                         fl_dtype_name(t), (long long)i, vec_at(w, b, i), vec_at(w, b, i + 1));
        if (!v)
            continue;
        read_mat(v, b, vm);
        matmul(r, am, vm, n, n, n, 0);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                r[i * n + j] -= vm[i * n + j] * vec_at(w, b, j);
        double anorm = fro(am, n * n);
        check_ratio("eigh ||AV - VW||", bn, t, n, fro(r, n * n) / (anorm * (double)n * eps), THRESH);
        matmul(r, vm, vm, n, n, n, 1);
        for (int64_t i = 0; i < n; i++)
            r[i * n + i] -= 1.0;
        check_ratio("eigh ||V^H V - I||", bn, t, n, fro(r, n * n) / ((double)n * eps), THRESH);
    }
    free(r);
    free(vm);
    free(am);
}

/* l lower with a real positive diagonal and exact zeros above; ||L L^H - A|| small. */
static void check_cholesky(const char *bn, const fl_tensor *a, const fl_tensor *l)
{
    fl_dtype t = a->dtype;
    int64_t n = a->shape[a->ndim - 1], batch = batch_of(a, 2);
    cplx *am = xcalloc((size_t)(n * n), sizeof *am), *lm = xcalloc((size_t)(n * n), sizeof *lm);
    cplx *r = xcalloc((size_t)(n * n), sizeof *r);
    for (int64_t b = 0; b < batch; b++) {
        read_herm(a, b, am);
        read_mat(l, b, lm);
        for (int64_t i = 0; i < n; i++) {
            if (!(creal(lm[i * n + i]) > 0) || cimag(lm[i * n + i]) != 0)
                fail_msg("cholesky [%s, %s]: L(%lld,%lld) = %g%+gi is not real positive", bn,
                         fl_dtype_name(t), (long long)i, (long long)i, creal(lm[i * n + i]),
                         cimag(lm[i * n + i]));
            for (int64_t j = i + 1; j < n; j++)
                if (lm[i * n + j] != 0)
                    fail_msg("cholesky [%s, %s]: upper L(%lld,%lld) is not zero", bn,
                             fl_dtype_name(t), (long long)i, (long long)j);
        }
        /* r = L L^H - A */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++) {
                cplx s = 0;
                for (int64_t p = 0; p < n; p++)
                    s += lm[i * n + p] * conj(lm[j * n + p]);
                r[i * n + j] = s - am[i * n + j];
            }
        check_ratio("cholesky ||LL^H - A||", bn, t, n,
                    fro(r, n * n) / (fro(am, n * n) * (double)n * eps_of(t)), THRESH);
    }
    free(r);
    free(lm);
    free(am);
}

/* ||A X - B|| / (||A|| ||X|| n eps), the normwise backward error; `herm` reads A as the
 * Hermitian completion of its lower triangle (cholesky_solve), else as a full matrix. */
static void check_solve(const char *what, const char *bn, const fl_tensor *a, int herm,
                        const fl_tensor *bt, const fl_tensor *x)
{
    fl_dtype t = a->dtype;
    int64_t n = a->shape[a->ndim - 1], k = bt->shape[bt->ndim - 1], batch = batch_of(a, 2);
    cplx *am = xcalloc((size_t)(n * n), sizeof *am);
    cplx *bm = xcalloc((size_t)(n * k), sizeof *bm), *xm = xcalloc((size_t)(n * k), sizeof *xm);
    cplx *r = xcalloc((size_t)(n * k), sizeof *r);
    for (int64_t b = 0; b < batch; b++) {
        if (herm)
            read_herm(a, b, am);
        else
            read_mat(a, b, am);
        read_mat(bt, b, bm);
        read_mat(x, b, xm);
        matmul(r, am, xm, n, n, k, 0);
        for (int64_t i = 0; i < n * k; i++)
            r[i] -= bm[i];
        double scale = fro(am, n * n) * fro(xm, n * k) * (double)n * eps_of(t);
        check_ratio(what, bn, t, n, fro(r, n * k) / scale, THRESH);
    }
    free(r);
    free(xm);
    free(bm);
    free(am);
}

/* ---- closed forms ------------------------------------------------------------------- */

static void run_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a)
{
    fl_error err;
    expect_ok(fl_eigh(be, w, v, a, &err), &err, "eigh", fl_backend_name(be), a->dtype);
}

/* |w_i - want_i| <= THRESH n eps max|want| and the projector of each eigenvector matches
 * the known one within the Davis-Kahan bound THRESH n eps ||A|| / gap. */
static void check_known_eigh(fl_backend *be, fl_dtype t, int64_t n, const cplx *m, const double *want,
                             const cplx *vecs /* columns, normalised, or NULL */)
{
    const char *bn = fl_backend_name(be);
    fl_tensor a = mk3(t, 1, n, n), w = mk2(fl_dtype_real_of(t), 1, n), v = mk3(t, 1, n, n);
    write_lower_nan_upper(&a, 0, m);
    run_eigh(be, &w, &v, &a);
    check_eigh(bn, &a, &w, &v);
    double scale = 0, eps = eps_of(t);
    for (int64_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(want[i]));
    for (int64_t i = 0; i < n; i++)
        check_ratio("eigh known eigenvalue", bn, t, n,
                    fabs(vec_at(&w, 0, i) - want[i]) / (scale * (double)n * eps), THRESH);
    if (vecs) {
        for (int64_t i = 0; i < n; i++) {
            double gap = INFINITY;
            if (i > 0)
                gap = fmin(gap, want[i] - want[i - 1]);
            if (i + 1 < n)
                gap = fmin(gap, want[i + 1] - want[i]);
            /* sin(angle) = ||v - (u^H v) u|| / ||v|| for the known unit u (not
             * sqrt(1 - |u^H v|^2), which turns an O(eps) norm error into sqrt(eps)) */
            cplx dot = 0;
            double vn = 0, rn = 0;
            for (int64_t r = 0; r < n; r++) {
                cplx z = load(&v, mat_off(&v, 0, r, i));
                dot += conj(vecs[r * n + i]) * z;
                vn += creal(z * conj(z));
            }
            for (int64_t r = 0; r < n; r++) {
                cplx z = load(&v, mat_off(&v, 0, r, i)) - dot * vecs[r * n + i];
                rn += creal(z * conj(z));
            }
            double sine = sqrt(rn / vn);
            double bound = THRESH * (double)n * eps * scale / gap;
            if (!(sine <= bound))
                fail_msg("eigh [%s, %s]: eigenvector %lld: sin(angle) %.3g > %.3g", bn,
                         fl_dtype_name(t), (long long)i, sine, bound);
        }
    }
    fl_tensor_release(&a);
    fl_tensor_release(&w);
    fl_tensor_release(&v);
}

static void test_eigh_closed_forms(void **state)
{
    (void)state;
    for (size_t bi = 0; bi < 2; bi++) {
        fl_backend *be = backend(backend_names[bi], NULL);
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti];
            /* diagonal: the eigenvalues are the entries, eigenvectors unit vectors */
            {
                const double d[4] = { 3, -1, 2, 0.5 };
                const double want[4] = { -1, 0.5, 2, 3 };
                const int64_t at[4] = { 1, 3, 2, 0 };
                cplx m[16] = { 0 }, u[16] = { 0 };
                for (int i = 0; i < 4; i++) {
                    m[i * 4 + i] = d[i];
                    u[at[i] * 4 + i] = 1.0;
                }
                check_known_eigh(be, t, 4, m, want, u);
            }
            /* [[a, b], [b, a]]: a -+ b with (1, -1)/sqrt2 and (1, 1)/sqrt2 */
            {
                cplx m[4] = { 1.5, -2.0, -2.0, 1.5 };
                const double want[2] = { -0.5, 3.5 };
                double h = sqrt(0.5);
                /* b = -2: A (1, 1) = -0.5 (1, 1), A (1, -1) = 3.5 (1, -1) */
                cplx u[4] = { h, h, h, -h };
                check_known_eigh(be, t, 2, m, want, u);
            }
            /* tridiagonal Toeplitz tridiag(-1, 2, -1), n = 10: eigenvalues
             * 2 - 2 cos(k pi / (n + 1)), eigenvectors sin(j k pi / (n + 1)) */
            {
                enum { N = 10 };
                cplx m[N * N] = { 0 }, u[N * N];
                double want[N];
                const double pi = 3.14159265358979323846;
                for (int i = 0; i < N; i++) {
                    m[i * N + i] = 2.0;
                    if (i + 1 < N)
                        m[(i + 1) * N + i] = m[i * N + i + 1] = -1.0;
                }
                for (int k = 1; k <= N; k++) {
                    want[k - 1] = 2.0 - 2.0 * cos(k * pi / (N + 1));
                    for (int j = 1; j <= N; j++)
                        u[(j - 1) * N + (k - 1)] = sin(j * k * pi / (N + 1)) * sqrt(2.0 / (N + 1));
                }
                check_known_eigh(be, t, N, m, want, u);
            }
            /* all ones, n = 6: eigenvalue 0 five times and 6 once; the repeated one has
             * no defined vectors, so only residual and orthogonality are checked */
            {
                enum { N = 6 };
                cplx m[N * N];
                const double want[N] = { 0, 0, 0, 0, 0, 6 };
                for (int i = 0; i < N * N; i++)
                    m[i] = 1.0;
                check_known_eigh(be, t, N, m, want, NULL);
            }
            if (fl_dtype_is_complex(t)) {
                /* [[2, 1-i], [1+i, 3]]: trace 5, det 6 - 2 = 4, eigenvalues 1 and 4 */
                cplx m[4] = { 2, CMPLX(1, -1), CMPLX(1, 1), 3 };
                const double want[2] = { 1, 4 };
                /* (A - I) u = 0: u = (1-i, -1)/sqrt3; (A - 4I) u = 0: u = (1-i, 2)/sqrt6 */
                double s3 = sqrt(3.0), s6 = sqrt(6.0);
                cplx u[4] = { CMPLX(1, -1) / s3, CMPLX(1, -1) / s6, -1.0 / s3, 2.0 / s6 };
                check_known_eigh(be, t, 2, m, want, u);
                /* Pauli y: [[0, -i], [i, 0]], eigenvalues -1, +1 */
                cplx py[4] = { 0, CMPLX(0, -1), CMPLX(0, 1), 0 };
                const double wy[2] = { -1, 1 };
                double h = sqrt(0.5);
                cplx uy[4] = { h, h, CMPLX(0, -h), CMPLX(0, h) };
                check_known_eigh(be, t, 2, py, wy, uy);
            }
        }
        fl_backend_free(be);
    }
}

static void test_cholesky_and_solve_closed_forms(void **state)
{
    (void)state;
    fl_error err;
    for (size_t bi = 0; bi < 2; bi++) {
        fl_backend *be = backend(backend_names[bi], NULL);
        const char *bn = backend_names[bi];
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti];
            double eps = eps_of(t);
            /* [[4, 12, -16], [12, 37, -43], [-16, -43, 98]] = L L^T, L = [[2], [6, 1],
             * [-8, 5, 3]]: every step is exact in binary floating point */
            cplx am[9] = { 4, 12, -16, 12, 37, -43, -16, -43, 98 };
            cplx lw[9] = { 2, 0, 0, 6, 1, 0, -8, 5, 3 };
            fl_tensor a = mk3(t, 1, 3, 3), l = mk3(t, 1, 3, 3);
            write_lower_nan_upper(&a, 0, am);
            expect_ok(fl_cholesky(be, &l, &a, &err), &err, "cholesky", bn, t);
            cplx got[9];
            read_mat(&l, 0, got);
            for (int i = 0; i < 9; i++)
                if (!(cabs(got[i] - lw[i]) <= 4 * eps * 8))
                    fail_msg("cholesky [%s, %s]: L[%d] = %g, want %g", bn, fl_dtype_name(t), i,
                             creal(got[i]), creal(lw[i]));
            /* cholesky_solve with that factor: A x = A (1, 2, 3)^T */
            {
                cplx xw[3] = { 1, 2, 3 }, bv[3];
                matmul(bv, am, xw, 3, 3, 1, 0);
                fl_tensor b = mk3(t, 1, 3, 1), x = mk3(t, 1, 3, 1);
                write_mat(&b, 0, bv);
                expect_ok(fl_cholesky_solve(be, &x, &l, &b, &err), &err, "cholesky_solve", bn, t);
                read_mat(&x, 0, got);
                /* forward error <= cond(A) * backward error: |dx| <= THRESH n eps cond(A)
                 * |x| with cond(A) = 6.6e3 (2-norm) and |x| < 4 */
                for (int i = 0; i < 3; i++)
                    if (!(cabs(got[i] - xw[i]) <= THRESH * 3 * eps * 6.6e3 * 4))
                        fail_msg("cholesky_solve [%s, %s]: x[%d] = %.9g, want %g", bn,
                                 fl_dtype_name(t), i, creal(got[i]), creal(xw[i]));
                fl_tensor_release(&b);
                fl_tensor_release(&x);
            }
            fl_tensor_release(&a);
            fl_tensor_release(&l);
            if (fl_dtype_is_complex(t)) {
                /* L = [[2, 0], [i, 1]]: A = L L^H = [[4, -2i], [2i, 2]] */
                cplx ac[4] = { 4, CMPLX(0, -2), CMPLX(0, 2), 2 };
                cplx lc[4] = { 2, 0, CMPLX(0, 1), 1 };
                a = mk3(t, 1, 2, 2);
                l = mk3(t, 1, 2, 2);
                write_lower_nan_upper(&a, 0, ac);
                expect_ok(fl_cholesky(be, &l, &a, &err), &err, "cholesky", bn, t);
                read_mat(&l, 0, got);
                for (int i = 0; i < 4; i++)
                    if (!(cabs(got[i] - lc[i]) <= 4 * eps))
                        fail_msg("cholesky [%s, %s]: complex L[%d] = %g%+gi", bn, fl_dtype_name(t),
                                 i, creal(got[i]), cimag(got[i]));
                fl_tensor_release(&a);
                fl_tensor_release(&l);
            }
            /* [[2, 1, 1], [1, 3, 2], [1, 0, 0]] x = (4, 5, 6): x = (6, 15, -23); a complex
             * one: [[1+i, 2], [3, -i]] x = (1+3i, 4): x = (1, i) */
            {
                int cx = fl_dtype_is_complex(t);
                int64_t n = cx ? 2 : 3;
                cplx ag[9] = { 2, 1, 1, 1, 3, 2, 1, 0, 0 }, bg[3] = { 4, 5, 6 }, xg[3] = { 6, 15, -23 };
                cplx agc[4] = { CMPLX(1, 1), 2, 3, CMPLX(0, -1) }, bgc[2] = { CMPLX(1, 3), 4 },
                     xgc[2] = { 1, CMPLX(0, 1) };
                fl_tensor a2 = mk3(t, 1, n, n), b = mk3(t, 1, n, 1), x = mk3(t, 1, n, 1);
                write_mat(&a2, 0, cx ? agc : ag);
                write_mat(&b, 0, cx ? bgc : bg);
                expect_ok(fl_solve(be, &x, &a2, &b, &err), &err, "solve", bn, t);
                read_mat(&x, 0, got);
                const cplx *want = cx ? xgc : xg;
                /* as above, with cond = 30.1 (real) and 2.78 (complex), |x| < 28 */
                for (int64_t i = 0; i < n; i++)
                    if (!(cabs(got[i] - want[i]) <= THRESH * (double)n * eps * 30.1 * 28))
                        fail_msg("solve [%s, %s]: x[%lld] = %.9g%+.9gi", bn, fl_dtype_name(t),
                                 (long long)i, creal(got[i]), cimag(got[i]));
                fl_tensor_release(&a2);
                fl_tensor_release(&b);
                fl_tensor_release(&x);
            }
        }
        fl_backend_free(be);
    }
}

/* ---- random properties -------------------------------------------------------------- */

static void test_random_properties(void **state)
{
    (void)state;
    uint64_t seed = 0x5EED1234;
    fl_error err;
    for (size_t bi = 0; bi < 2; bi++) {
        fl_backend *be = backend(backend_names[bi], NULL);
        const char *bn = backend_names[bi];
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti], rt = fl_dtype_real_of(t);
            int cx = fl_dtype_is_complex(t);
            for (int trial = 0; trial < 16; trial++) {
                int64_t n = trial == 0 ? 1 : irand(&seed, 1, 24), batch = irand(&seed, 1, 4);
                int64_t k = irand(&seed, 1, 3);
                cplx *m = xcalloc((size_t)(n * n), sizeof *m);
                cplx *rhs = xcalloc((size_t)(n * k), sizeof *rhs);

                /* eigh, with vectors and values only */
                fl_tensor a = mk3(t, batch, n, n), w = mk2(rt, batch, n), v = mk3(t, batch, n, n);
                fl_tensor w2 = mk2(rt, batch, n);
                for (int64_t b = 0; b < batch; b++) {
                    rand_herm(&seed, m, n, cx);
                    write_lower_nan_upper(&a, b, m);
                }
                run_eigh(be, &w, &v, &a);
                check_eigh(bn, &a, &w, &v);
                run_eigh(be, &w2, NULL, &a);
                check_eigh(bn, &a, &w2, NULL);
                for (int64_t b = 0; b < batch; b++) {
                    read_herm(&a, b, m);
                    double an = fro(m, n * n);
                    for (int64_t i = 0; i < n; i++)
                        check_ratio("eigh values-only vs vectors", bn, t, n,
                                    fabs(vec_at(&w, b, i) - vec_at(&w2, b, i)) /
                                        (an * (double)n * eps_of(t)),
                                    2 * THRESH);
                }

                /* cholesky, then cholesky_solve with its factor */
                fl_tensor l = mk3(t, batch, n, n), bt = mk3(t, batch, n, k), x = mk3(t, batch, n, k);
                for (int64_t b = 0; b < batch; b++) {
                    rand_spd(&seed, m, n, cx);
                    write_lower_nan_upper(&a, b, m);
                    for (int64_t i = 0; i < n * k; i++)
                        rhs[i] = crand(&seed, cx);
                    write_mat(&bt, b, rhs);
                }
                expect_ok(fl_cholesky(be, &l, &a, &err), &err, "cholesky", bn, t);
                check_cholesky(bn, &a, &l);
                /* cholesky_solve reads only l's lower triangle */
                for (int64_t b = 0; b < batch; b++) {
                    read_mat(&l, b, m);
                    write_lower_nan_upper(&l, b, m);
                }
                expect_ok(fl_cholesky_solve(be, &x, &l, &bt, &err), &err, "cholesky_solve", bn, t);
                check_solve("cholesky_solve ||AX - B||", bn, &a, 1, &bt, &x);

                /* solve */
                for (int64_t b = 0; b < batch; b++) {
                    rand_general(&seed, m, n, cx);
                    write_mat(&a, b, m);
                }
                expect_ok(fl_solve(be, &x, &a, &bt, &err), &err, "solve", bn, t);
                check_solve("solve ||AX - B||", bn, &a, 0, &bt, &x);

                fl_tensor_release(&a);
                fl_tensor_release(&w);
                fl_tensor_release(&w2);
                fl_tensor_release(&v);
                fl_tensor_release(&l);
                fl_tensor_release(&bt);
                fl_tensor_release(&x);
                free(rhs);
                free(m);
            }
        }
        fl_backend_free(be);
    }
}

/* ---- LAPACK against the reference, on views ----------------------------------------- */

enum layout {
    L_CONTIG,    /* plain [B, r, c] */
    L_STEPPED,   /* every 2nd row and 3rd column of a [B, 2r+1, 3c+2] buffer, offset (1, 2) */
    L_TRANSPOSE, /* transpose(1, 2) of a [B, c, r] buffer: column-major matrices */
    L_BATCHPERM, /* permute (1, 0, 2) of an [r, B, c] buffer: batch stride smaller than rows */
    L_BROADCAST, /* expand of [1, r, c] to [B, r, c] (stride-0 batch): inputs only */
    L_COUNT
};

static const char *const layout_names[] = { "contiguous", "stepped", "transposed", "batch-permuted",
                                            "broadcast" };

#define SENTINEL 7.25

/* A [B, r, c] view of the given layout over a fresh buffer filled with SENTINEL. *base
 * holds the buffer (one reference), *view the view (another). */
static void make_view(fl_dtype t, int64_t bsz, int64_t r, int64_t c, enum layout lay,
                      fl_tensor *base, fl_tensor *view)
{
    fl_error err;
    fl_status st = FL_OK;
    switch (lay) {
    case L_CONTIG:
        *base = mk3(t, bsz, r, c);
        fl_tensor_retain(view, base);
        break;
    case L_STEPPED: {
        *base = mk3(t, bsz, 2 * r + 1, 3 * c + 2);
        fl_tensor_retain(view, base);
        if ((st = fl_tensor_slice(view, view, 1, 1, 1 + 2 * r, 2, &err)) == FL_OK)
            st = fl_tensor_slice(view, view, 2, 2, 2 + 3 * c, 3, &err);
        break;
    }
    case L_TRANSPOSE:
        *base = mk3(t, bsz, c, r);
        fl_tensor_retain(view, base);
        st = fl_tensor_transpose(view, view, 1, 2, &err);
        break;
    case L_BATCHPERM: {
        static const int perm[3] = { 1, 0, 2 };
        *base = mk3(t, r, bsz, c);
        fl_tensor_retain(view, base);
        st = fl_tensor_permute(view, view, perm, &err);
        break;
    }
    case L_BROADCAST: {
        int64_t sh[3] = { bsz, r, c };
        *base = mk3(t, 1, r, c);
        fl_tensor_retain(view, base);
        st = fl_tensor_expand(view, view, 3, sh, &err);
        break;
    }
    default: fail_msg("layout %d", (int)lay);
    }
    if (st)
        fail_msg("make_view(%s): %s", layout_names[lay], fl_error_msg(&err));
    int64_t count = fl_tensor_numel(base);
    for (int64_t i = 0; i < count; i++)
        store(base, i, SENTINEL);
    assert_int_equal(view->shape[0], bsz);
    assert_int_equal(view->shape[1], r);
    assert_int_equal(view->shape[2], c);
}

/* A [B, n] vector view: contiguous, every 2nd of [B, 2n + 1] from 1, or transposed [n, B]. */
static void make_vec_view(fl_dtype t, int64_t bsz, int64_t n, int lay, fl_tensor *base, fl_tensor *view)
{
    fl_error err;
    fl_status st = FL_OK;
    if (lay == 0) {
        *base = mk2(t, bsz, n);
        fl_tensor_retain(view, base);
    } else if (lay == 1) {
        *base = mk2(t, bsz, 2 * n + 1);
        fl_tensor_retain(view, base);
        st = fl_tensor_slice(view, view, 1, 1, 1 + 2 * n, 2, &err);
    } else {
        *base = mk2(t, n, bsz);
        fl_tensor_retain(view, base);
        st = fl_tensor_transpose(view, view, 0, 1, &err);
    }
    if (st)
        fail_msg("make_vec_view: %s", fl_error_msg(&err));
    for (int64_t i = 0; i < fl_tensor_numel(base); i++)
        store(base, i, SENTINEL);
}

/* After the results were read: overwrite the view with SENTINEL, then the whole buffer
 * must be SENTINEL, i.e. the backend wrote nothing outside the view. */
static void check_no_stray_writes(const char *what, const char *bn, fl_tensor *base, fl_tensor *view,
                                  int core)
{
    int64_t batch = batch_of(view, core);
    int64_t r = core == 2 ? view->shape[view->ndim - 2] : 1, c = view->shape[view->ndim - 1];
    int64_t rs = core == 2 ? view->stride[view->ndim - 2] : 0, cs = view->stride[view->ndim - 1];
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++)
                store(view, batch_off(view, core, b) + i * rs + j * cs, SENTINEL);
    for (int64_t i = 0; i < fl_tensor_numel(base); i++)
        if (load(base, i) != SENTINEL)
            fail_msg("%s [%s, %s]: wrote outside the output view at element %lld", what, bn,
                     fl_dtype_name(base->dtype), (long long)i);
}

static void release2(fl_tensor *a, fl_tensor *b)
{
    fl_tensor_release(a);
    fl_tensor_release(b);
}

/* Fills the input view with `batch` matrices from gen (one shared matrix when broadcast). */
typedef void (*gen_fn)(uint64_t *s, cplx *m, int64_t n, int complex_);

static void fill_input(uint64_t *seed, fl_tensor *view, enum layout lay, gen_fn gen, int herm_lower)
{
    int64_t n = view->shape[1], batch = view->shape[0];
    int cx = fl_dtype_is_complex(view->dtype);
    cplx *m = xcalloc((size_t)(n * n), sizeof *m);
    for (int64_t b = 0; b < (lay == L_BROADCAST ? 1 : batch); b++) {
        gen(seed, m, n, cx);
        if (herm_lower)
            write_lower_nan_upper(view, b, m);
        else
            write_mat(view, b, m);
    }
    free(m);
}

static void compare_eigh(fl_dtype t, const fl_tensor *a, const fl_tensor *w0, const fl_tensor *v0,
                         const fl_tensor *w1, const fl_tensor *v1, const char *lay)
{
    int64_t n = a->shape[2], batch = a->shape[0];
    double eps = eps_of(t);
    cplx *am = xcalloc((size_t)(n * n), sizeof *am);
    for (int64_t b = 0; b < batch; b++) {
        read_herm(a, b, am);
        double an = fro(am, n * n);
        for (int64_t i = 0; i < n; i++)
            check_ratio(lay, "eigh w: cpu vs cpu-ref", t, n,
                        fabs(vec_at(w0, b, i) - vec_at(w1, b, i)) / (an * (double)n * eps),
                        2 * THRESH);
        /* projectors v v^H: each backend's vector is within THRESH n eps ||A|| / gap of
         * the exact one (Davis-Kahan), ||P0 - P1||_F <= sqrt2 (sin0 + sin1) */
        for (int64_t i = 0; i < n; i++) {
            double gap = INFINITY, wi = vec_at(w1, b, i);
            if (i > 0)
                gap = fmin(gap, wi - vec_at(w1, b, i - 1));
            if (i + 1 < n)
                gap = fmin(gap, vec_at(w1, b, i + 1) - wi);
            double bound = sqrt(2.0) * 2 * THRESH * (double)n * eps * an / gap;
            if (!(bound < 0.5))
                continue; /* nearly degenerate pair: the vectors are not determined */
            double d2 = 0;
            for (int64_t r = 0; r < n; r++)
                for (int64_t c = 0; c < n; c++) {
                    cplx p0 = load(v0, mat_off(v0, b, r, i)) * conj(load(v0, mat_off(v0, b, c, i)));
                    cplx p1 = load(v1, mat_off(v1, b, r, i)) * conj(load(v1, mat_off(v1, b, c, i)));
                    d2 += creal((p0 - p1) * conj(p0 - p1));
                }
            if (!(sqrt(d2) <= bound))
                fail_msg("eigh [%s, %s, n=%lld]: projector %lld differs by %.3g > %.3g", lay,
                         fl_dtype_name(t), (long long)n, (long long)i, sqrt(d2), bound);
        }
    }
    free(am);
}

/* ||X0 - X1||_F / (||X1||_F n eps) < bound, matrix by matrix. */
static void compare_mats(const char *what, const char *lay, fl_dtype t, const fl_tensor *x0,
                         const fl_tensor *x1, double bound)
{
    int64_t r = x0->shape[1], c = x0->shape[2], batch = x0->shape[0];
    cplx *m0 = xcalloc((size_t)(r * c), sizeof *m0), *m1 = xcalloc((size_t)(r * c), sizeof *m1);
    for (int64_t b = 0; b < batch; b++) {
        read_mat(x0, b, m0);
        read_mat(x1, b, m1);
        double n1 = fro(m1, r * c);
        for (int64_t i = 0; i < r * c; i++)
            m0[i] -= m1[i];
        check_ratio(what, lay, t, r, fro(m0, r * c) / (n1 * (double)r * eps_of(t)), bound);
    }
    free(m1);
    free(m0);
}

static void test_backends_agree_on_views(void **state)
{
    (void)state;
    uint64_t seed = 0xC0FFEE;
    fl_error err;
    fl_backend *bes[2] = { backend("cpu", NULL), backend("cpu-ref", NULL) };
    /* forward errors of two backward-stable results on systems with cond < COND_MAX */
    const double fwd = 2 * THRESH * COND_MAX;
    for (size_t ti = 0; ti < 4; ti++) {
        fl_dtype t = all_dtypes[ti], rt = fl_dtype_real_of(t);
        for (int lin = 0; lin < L_COUNT; lin++) {
            int lout = lin == L_BROADCAST ? L_STEPPED : (lin + 1) % L_BROADCAST;
            int wlay = lin % 3;
            int64_t n = irand(&seed, 1, 16), k = irand(&seed, 1, 3);
            int64_t batch = lin == L_BROADCAST ? 3 : irand(&seed, 1, 4);
            char lay[96];
            snprintf(lay, sizeof lay, "in %s, out %s", layout_names[lin], layout_names[lout]);
            fl_tensor ab, a, wb[2], w[2], vb[2], v[2], lb[2], l[2], bb, bv, xb[2], x[2];

            /* eigh */
            make_view(t, batch, n, n, (enum layout)lin, &ab, &a);
            fill_input(&seed, &a, (enum layout)lin, rand_herm, 1);
            size_t in_bytes = fl_tensor_nbytes(&ab);
            unsigned char *snap = xcalloc(in_bytes, 1);
            memcpy(snap, fl_tensor_data(&ab), in_bytes);
            for (int e = 0; e < 2; e++) {
                make_vec_view(rt, batch, n, wlay, &wb[e], &w[e]);
                make_view(t, batch, n, n, (enum layout)lout, &vb[e], &v[e]);
                run_eigh(bes[e], &w[e], &v[e], &a);
                check_eigh(backend_names[e], &a, &w[e], &v[e]);
            }
            compare_eigh(t, &a, &w[0], &v[0], &w[1], &v[1], lay);
            if (lin == L_BROADCAST) /* every batch item saw the same matrix */
                for (int64_t b = 1; b < batch; b++)
                    for (int64_t i = 0; i < n; i++)
                        if (vec_at(&w[1], b, i) != vec_at(&w[1], 0, i))
                            fail_msg("eigh broadcast: item %lld differs", (long long)b);
            if (memcmp(snap, fl_tensor_data(&ab), in_bytes) != 0)
                fail_msg("eigh [%s, %s]: the input was modified", lay, fl_dtype_name(t));
            for (int e = 0; e < 2; e++) {
                check_no_stray_writes("eigh w", backend_names[e], &wb[e], &w[e], 1);
                check_no_stray_writes("eigh v", backend_names[e], &vb[e], &v[e], 2);
                release2(&wb[e], &w[e]);
                release2(&vb[e], &v[e]);
            }

            /* cholesky */
            fill_input(&seed, &a, (enum layout)lin, rand_spd, 1);
            memcpy(snap, fl_tensor_data(&ab), in_bytes);
            for (int e = 0; e < 2; e++) {
                make_view(t, batch, n, n, (enum layout)lout, &lb[e], &l[e]);
                expect_ok(fl_cholesky(bes[e], &l[e], &a, &err), &err, "cholesky", lay, t);
                check_cholesky(backend_names[e], &a, &l[e]);
            }
            compare_mats("cholesky L: cpu vs cpu-ref", lay, t, &l[0], &l[1], fwd);
            if (memcmp(snap, fl_tensor_data(&ab), in_bytes) != 0)
                fail_msg("cholesky [%s, %s]: the input was modified", lay, fl_dtype_name(t));

            /* cholesky_solve: l (the reference factor) and b in the input layout */
            fl_tensor lib, li;
            make_view(t, batch, n, n, (enum layout)lin, &lib, &li);
            make_view(t, batch, n, k, (enum layout)lin, &bb, &bv);
            {
                cplx *m = xcalloc((size_t)(n * (n > k ? n : k)), sizeof *m);
                for (int64_t b = 0; b < (lin == L_BROADCAST ? 1 : batch); b++) {
                    read_mat(&l[1], b, m);
                    write_lower_nan_upper(&li, b, m);
                    for (int64_t i = 0; i < n * k; i++)
                        m[i] = crand(&seed, fl_dtype_is_complex(t));
                    write_mat(&bv, b, m);
                }
                free(m);
            }
            for (int e = 0; e < 2; e++) {
                check_no_stray_writes("cholesky l", backend_names[e], &lb[e], &l[e], 2);
                release2(&lb[e], &l[e]);
                make_view(t, batch, n, k, (enum layout)lout, &xb[e], &x[e]);
                expect_ok(fl_cholesky_solve(bes[e], &x[e], &li, &bv, &err), &err, "cholesky_solve",
                          lay, t);
                check_solve("cholesky_solve ||AX - B||", backend_names[e], &a, 1, &bv, &x[e]);
            }
            compare_mats("cholesky_solve x: cpu vs cpu-ref", lay, t, &x[0], &x[1], fwd);
            for (int e = 0; e < 2; e++) {
                check_no_stray_writes("cholesky_solve x", backend_names[e], &xb[e], &x[e], 2);
                release2(&xb[e], &x[e]);
            }
            release2(&lib, &li);

            /* solve */
            fill_input(&seed, &a, (enum layout)lin, rand_general, 0);
            for (int e = 0; e < 2; e++) {
                make_view(t, batch, n, k, (enum layout)lout, &xb[e], &x[e]);
                expect_ok(fl_solve(bes[e], &x[e], &a, &bv, &err), &err, "solve", lay, t);
                check_solve("solve ||AX - B||", backend_names[e], &a, 0, &bv, &x[e]);
            }
            compare_mats("solve x: cpu vs cpu-ref", lay, t, &x[0], &x[1], fwd);
            for (int e = 0; e < 2; e++) {
                check_no_stray_writes("solve x", backend_names[e], &xb[e], &x[e], 2);
                release2(&xb[e], &x[e]);
            }
            release2(&bb, &bv);
            release2(&ab, &a);
            free(snap);
        }
    }
    fl_backend_free(bes[0]);
    fl_backend_free(bes[1]);
}

/* Two batch dims, the second broadcast: [2, 3, n, n] from [2, 1, n, n]. */
static void test_multi_batch_dims(void **state)
{
    (void)state;
    uint64_t seed = 42;
    fl_error err;
    const int64_t n = 5;
    for (size_t bi = 0; bi < 2; bi++) {
        fl_backend *be = backend(backend_names[bi], NULL);
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti];
            int64_t s_small[4] = { 2, 1, n, n }, s_big[4] = { 2, 3, n, n }, s_w[3] = { 2, 3, n };
            fl_tensor base = mk(t, 4, s_small), a = FL_TENSOR_NULL;
            fl_tensor_retain(&a, &base);
            expect_ok(fl_tensor_expand(&a, &a, 4, s_big, &err), &err, "expand", "", t);
            cplx m[25], got[25];
            for (int64_t b = 0; b < 2; b++) {
                rand_spd(&seed, m, n, fl_dtype_is_complex(t));
                write_mat(&base, b, m);
            }
            fl_tensor w = mk(fl_dtype_real_of(t), 3, s_w), v = mk(t, 4, s_big), l = mk(t, 4, s_big);
            run_eigh(be, &w, &v, &a);
            check_eigh(backend_names[bi], &a, &w, &v);
            expect_ok(fl_cholesky(be, &l, &a, &err), &err, "cholesky", backend_names[bi], t);
            check_cholesky(backend_names[bi], &a, &l);
            /* item (i, j) must be the factor of base item i */
            for (int64_t b = 0; b < 6; b++) {
                read_mat(&l, b, got);
                read_mat(&l, (b / 3) * 3, m);
                if (memcmp(got, m, sizeof got) != 0)
                    fail_msg("multi-batch [%s, %s]: item %lld differs from item %lld",
                             backend_names[bi], fl_dtype_name(t), (long long)b, (long long)(b / 3) * 3);
            }
            fl_tensor_release(&w);
            fl_tensor_release(&v);
            fl_tensor_release(&l);
            release2(&base, &a);
        }
        fl_backend_free(be);
    }
}

/* ---- numeric errors ------------------------------------------------------------------ */

static void expect_numeric(fl_status st, const fl_error *err, const char *bn, fl_dtype t,
                           const char *const *needles)
{
    if (st != FL_E_NUMERIC)
        fail_msg("[%s, %s]: status %d (%s), want FL_E_NUMERIC", bn, fl_dtype_name(t), (int)st,
                 fl_error_msg(err));
    for (; *needles; needles++)
        if (!strstr(err->msg, *needles))
            fail_msg("[%s, %s]: message \"%s\" lacks \"%s\"", bn, fl_dtype_name(t), err->msg,
                     *needles);
}

static void test_numeric_errors(void **state)
{
    (void)state;
    uint64_t seed = 7;
    for (size_t bi = 0; bi < 2; bi++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, -1);
        fl_backend *be = backend(backend_names[bi], &fa.iface);
        const char *bn = backend_names[bi];
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti];
            int cx = fl_dtype_is_complex(t);
            fl_error err;
            fl_error_clear(&err);
            enum { N = 5, B = 4 };
            cplx m[N * N];

            /* not positive definite: item 2 is the identity with -1 at (3, 3) */
            fl_tensor a = mk3(t, B, N, N), l = mk3(t, B, N, N);
            for (int64_t b = 0; b < B; b++) {
                rand_spd(&seed, m, N, cx);
                if (b == 2) {
                    memset(m, 0, sizeof m);
                    for (int i = 0; i < N; i++)
                        m[i * N + i] = i == 3 ? -1.0 : 1.0;
                }
                write_lower_nan_upper(&a, b, m);
            }
            size_t live = fa.live_blocks;
            const char *const chol_needles[] = { "cholesky: matrix 2 of the batch",
                                                 "not positive definite", "(leading minor 4)",
                                                 NULL };
            expect_numeric(fl_cholesky(be, &l, &a, &err), &err, bn, t, chol_needles);
            assert_int_equal(fa.live_blocks, live);
            /* a zero first item fails at its first minor */
            memset(m, 0, sizeof m);
            write_mat(&a, 0, m);
            const char *const chol0[] = { "matrix 0 of the batch", "(leading minor 1)", NULL };
            expect_numeric(fl_cholesky(be, &l, &a, &err), &err, bn, t, chol0);
            assert_int_equal(fa.live_blocks, live);
            /* a NaN on the diagonal of item 1 is not positive definite either (potrf) */
            rand_spd(&seed, m, N, cx);
            write_mat(&a, 0, m);
            m[2 * N + 2] = NAN;
            write_mat(&a, 1, m);
            const char *const cholnan[] = { "matrix 1 of the batch", "(leading minor 3)", NULL };
            expect_numeric(fl_cholesky(be, &l, &a, &err), &err, bn, t, cholnan);

            /* eigh on a non-finite lower triangle */
            {
                fl_tensor w = mk2(fl_dtype_real_of(t), B, N);
                for (int64_t b = 0; b < B; b++) {
                    rand_herm(&seed, m, N, cx);
                    if (b == 3)
                        m[4 * N + 1] = INFINITY;
                    write_lower_nan_upper(&a, b, m);
                }
                const char *const eig_needles[] = { "eigh: matrix 3 of the batch", "non-finite",
                                                    NULL };
                expect_numeric(fl_eigh(be, &w, NULL, &a, &err), &err, bn, t, eig_needles);
                assert_int_equal(fa.live_blocks, live);
                fl_tensor_release(&w);
            }

            /* singular: item 1 has a zero column 2 (exactly zero pivot in column 2) */
            {
                fl_tensor bt = mk3(t, B, N, 2), x = mk3(t, B, N, 2);
                cplx rhs[N * 2];
                for (int64_t b = 0; b < B; b++) {
                    rand_general(&seed, m, N, cx);
                    if (b == 1)
                        for (int i = 0; i < N; i++)
                            m[i * N + 2] = 0;
                    write_mat(&a, b, m);
                    for (int i = 0; i < N * 2; i++)
                        rhs[i] = crand(&seed, cx);
                    write_mat(&bt, b, rhs);
                }
                const char *const sing[] = { "solve: matrix 1 of the batch", "singular", "U(2, 2)",
                                             NULL };
                expect_numeric(fl_solve(be, &x, &a, &bt, &err), &err, bn, t, sing);
                assert_int_equal(fa.live_blocks, live);
                /* a zero row instead: some pivot is exactly zero */
                rand_general(&seed, m, N, cx);
                for (int j = 0; j < N; j++)
                    m[3 * N + j] = 0;
                write_mat(&a, 1, m);
                const char *const sing2[] = { "matrix 1 of the batch", "singular", NULL };
                expect_numeric(fl_solve(be, &x, &a, &bt, &err), &err, bn, t, sing2);
                /* and a zero matrix */
                memset(m, 0, sizeof m);
                write_mat(&a, 0, m);
                const char *const sing3[] = { "matrix 0 of the batch", "U(0, 0)", NULL };
                expect_numeric(fl_solve(be, &x, &a, &bt, &err), &err, bn, t, sing3);

                /* cholesky_solve refuses a factor with a zero on its diagonal */
                for (int64_t b = 0; b < B; b++) {
                    memset(m, 0, sizeof m);
                    for (int i = 0; i < N; i++)
                        m[i * N + i] = (b == 2 && i == 4) ? 0.0 : 1.0;
                    write_mat(&l, b, m);
                }
                const char *const cs[] = { "cholesky_solve: matrix 2 of the batch", "row 4", NULL };
                expect_numeric(fl_cholesky_solve(be, &x, &l, &bt, &err), &err, bn, t, cs);
                assert_int_equal(fa.live_blocks, live);
                release2(&bt, &x);
            }
            release2(&a, &l);
        }
        fl_backend_free(be);
        assert_int_equal(fa.live_blocks, 0);
    }
}

/* ---- allocation failures --------------------------------------------------------------- */

typedef struct fault_case {
    fl_tensor a, spd, l, b, x, w, v;
} fault_case;

static fl_status fault_op(fl_backend *be, fault_case *c, int op, fl_error *err)
{
    switch (op) {
    case 0: return fl_eigh(be, &c->w, &c->v, &c->a, err);
    case 1: return fl_eigh(be, &c->w, NULL, &c->a, err);
    case 2: return fl_cholesky(be, &c->l, &c->spd, err);
    case 3: return fl_cholesky_solve(be, &c->x, &c->l, &c->b, err);
    default: return fl_solve(be, &c->x, &c->a, &c->b, err);
    }
}

static void test_allocation_failures(void **state)
{
    (void)state;
    static const char *const op_names[] = { "eigh", "eigh (values only)", "cholesky",
                                            "cholesky_solve", "solve" };
    uint64_t seed = 99;
    for (size_t bi = 0; bi < 2; bi++) {
        const char *bn = backend_names[bi];
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti];
            int cx = fl_dtype_is_complex(t);
            const int64_t n = 6, batch = 2, k = 2;
            fault_case c;
            c.a = mk3(t, batch, n, n);
            c.spd = mk3(t, batch, n, n);
            c.l = mk3(t, batch, n, n);
            c.b = mk3(t, batch, n, k);
            c.x = mk3(t, batch, n, k);
            c.w = mk2(fl_dtype_real_of(t), batch, n);
            c.v = mk3(t, batch, n, n);
            cplx m[36], rhs[12];
            for (int64_t b = 0; b < batch; b++) {
                rand_general(&seed, m, n, cx); /* eigh reads its lower triangle: fine too */
                write_mat(&c.a, b, m);
                rand_spd(&seed, m, n, cx);
                write_mat(&c.spd, b, m);
                for (int i = 0; i < n * k; i++)
                    rhs[i] = crand(&seed, cx);
                write_mat(&c.b, b, rhs);
            }
            fl_faultalloc fa;
            fl_faultalloc_init(&fa, NULL, -1);
            fl_backend *be = backend(bn, &fa.iface);
            for (int op = 0; op < 5; op++) {
                long fail_after = 0;
                for (;; fail_after++) {
                    fl_error err;
                    fl_error_clear(&err);
                    size_t live = fa.live_blocks, fails = fa.failures;
                    fa.fail_after = fail_after;
                    fl_status st = fault_op(be, &c, op, &err);
                    fa.fail_after = -1;
                    if (fa.live_blocks != live)
                        fail_msg("%s [%s, %s], fail_after %ld: %zu live blocks after, %zu before",
                                 op_names[op], bn, fl_dtype_name(t), fail_after, fa.live_blocks, live);
                    if (st == FL_OK) {
                        /* success only once the injected failure is no longer reached */
                        assert_int_equal(fa.failures, fails);
                        break;
                    }
                    if (st != FL_E_NOMEM)
                        fail_msg("%s [%s, %s], fail_after %ld: status %d (%s), want FL_E_NOMEM",
                                 op_names[op], bn, fl_dtype_name(t), fail_after, (int)st,
                                 fl_error_msg(&err));
                    assert_true(fa.failures > fails);
                    assert_true(strlen(err.msg) > 0);
                    assert_true(fail_after < 64);
                }
                /* every op takes its scratch from the backend's allocator */
                if (fail_after < 1)
                    fail_msg("%s [%s, %s]: no allocation went through the backend allocator",
                             op_names[op], bn, fl_dtype_name(t));
            }
            /* and the results after all that are right */
            check_eigh(bn, &c.a, &c.w, &c.v);
            check_cholesky(bn, &c.spd, &c.l);
            check_solve("solve after faults", bn, &c.a, 0, &c.b, &c.x);
            fl_backend_free(be);
            assert_int_equal(fa.live_blocks, 0);
            fl_tensor_release(&c.a);
            fl_tensor_release(&c.spd);
            fl_tensor_release(&c.l);
            fl_tensor_release(&c.b);
            fl_tensor_release(&c.x);
            fl_tensor_release(&c.w);
            fl_tensor_release(&c.v);
        }
    }
}

/* ---- edge sizes ---------------------------------------------------------------------- */

/* Empty batches and 0 x 0 matrices are no-ops that succeed. */
static void test_empty(void **state)
{
    (void)state;
    fl_error err;
    for (size_t bi = 0; bi < 2; bi++) {
        fl_backend *be = backend(backend_names[bi], NULL);
        for (size_t ti = 0; ti < 4; ti++) {
            fl_dtype t = all_dtypes[ti];
            for (int z = 0; z < 2; z++) {
                int64_t batch = z ? 0 : 2, n = z ? 3 : 0;
                fl_tensor a = mk3(t, batch, n, n), l = mk3(t, batch, n, n), v = mk3(t, batch, n, n);
                fl_tensor w = mk2(fl_dtype_real_of(t), batch, n);
                fl_tensor b = mk3(t, batch, n, 2), x = mk3(t, batch, n, 2);
                expect_ok(fl_eigh(be, &w, &v, &a, &err), &err, "eigh empty", backend_names[bi], t);
                expect_ok(fl_cholesky(be, &l, &a, &err), &err, "cholesky empty", backend_names[bi], t);
                expect_ok(fl_cholesky_solve(be, &x, &l, &b, &err), &err, "cholesky_solve empty",
                          backend_names[bi], t);
                expect_ok(fl_solve(be, &x, &a, &b, &err), &err, "solve empty", backend_names[bi], t);
                release2(&a, &l);
                release2(&v, &w);
                release2(&b, &x);
            }
        }
        fl_backend_free(be);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eigh_closed_forms),
        cmocka_unit_test(test_cholesky_and_solve_closed_forms),
        cmocka_unit_test(test_random_properties),
        cmocka_unit_test(test_backends_agree_on_views),
        cmocka_unit_test(test_multi_batch_dims),
        cmocka_unit_test(test_numeric_errors),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests_name("linalg", tests, NULL, NULL);
}
