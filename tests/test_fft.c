/* cmocka suite for the FFT op: closed forms and theorems on both CPU backends, round
 * trips, FFTW against the naive reference on random strided views, and allocation
 * failure injection. */
#ifndef _POSIX_C_SOURCE /* pthreads: TSan intercepts pthread_create, not thrd_create */
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "ops/ops.h"

#define TWO_PI 6.283185307179586476925286766559

/* Tolerances. Every check is relative: ||a - b|| / ||b|| over the whole tensor, or an
 * absolute error scaled by the size of the values involved.
 * - c128: an FFT's rounding error grows like eps * log N (FFTW) and at worst eps * N for a
 *   naive sum (the reference, typically eps * sqrt N); with eps = 1.1e-16 and N below a
 *   few thousand both stay under 1e-13, so 1e-12 leaves a margin of ~10 and still
 *   catches any wrong twiddle, sign or index (those give O(1) errors).
 * - c64: FFTW computes in float (eps = 6e-8): error ~ 6e-8 * log N ~ 1e-6 at worst for our
 *   sizes; the reference computes in double and only rounds the result. 1e-5. */
#define TOL64 1e-12
#define TOL32 1e-5

/* Marks output storage outside a view: a power of two, so exact in float and double. */
#define SENTINEL 0x1p100

/* ---- plumbing ------------------------------------------------------------------------ */

static const char *const backend_names[] = { "cpu-ref", "cpu" };
#define NBACKENDS 2

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static double urand(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-52 - 1.0; }
static int64_t irand(uint64_t *s, int64_t lo, int64_t hi) /* in [lo, hi] */
{
    return lo + (int64_t)(splitmix64(s) % (uint64_t)(hi - lo + 1));
}

static fl_backend *open_backend(const char *name, const fl_allocator *alloc)
{
    fl_backend *be = NULL;
    fl_error err;
    fl_status st = fl_backend_new(&be, name, 0, alloc, &err);
    if (st)
        fail_msg("backend %s: %s", name, fl_error_msg(&err));
    assert_non_null(be);
    return be;
}

static fl_tensor tensor_new(fl_dtype dt, int ndim, const int64_t *shape)
{
    fl_tensor t = FL_TENSOR_NULL;
    fl_error err;
    if (fl_tensor_empty(&t, dt, ndim, shape, NULL, &err))
        fail_msg("tensor: %s", fl_error_msg(&err));
    return t;
}

static int is_cplx(fl_dtype t) { return t == FL_C64 || t == FL_C128; }
static fl_dtype out_dtype(fl_dtype in) { return (in == FL_F32 || in == FL_C64) ? FL_C64 : FL_C128; }

static void get_c(const fl_tensor *t, const int64_t *idx, double *re, double *im)
{
    int64_t o = fl_tensor_offset_of(t, idx);
    const void *p = fl_tensor_data(t);
    switch (t->dtype) {
    case FL_F32: *re = ((const float *)p)[o]; *im = 0; break;
    case FL_F64: *re = ((const double *)p)[o]; *im = 0; break;
    case FL_C64: *re = ((const float *)p)[2 * o]; *im = ((const float *)p)[2 * o + 1]; break;
    case FL_C128: *re = ((const double *)p)[2 * o]; *im = ((const double *)p)[2 * o + 1]; break;
    default: fail_msg("get_c: dtype %s", fl_dtype_name(t->dtype));
    }
}

/* Sets element idx; real dtypes keep only re. */
static void set_c(fl_tensor *t, const int64_t *idx, double re, double im)
{
    int64_t o = fl_tensor_offset_of(t, idx);
    void *p = fl_tensor_data(t);
    switch (t->dtype) {
    case FL_F32: ((float *)p)[o] = (float)re; break;
    case FL_F64: ((double *)p)[o] = re; break;
    case FL_C64: ((float *)p)[2 * o] = (float)re; ((float *)p)[2 * o + 1] = (float)im; break;
    case FL_C128: ((double *)p)[2 * o] = re; ((double *)p)[2 * o + 1] = im; break;
    default: fail_msg("set_c: dtype %s", fl_dtype_name(t->dtype));
    }
}

/* Row-major odometer over a shape; returns 0 once every index has been visited. */
static int next_index(int ndim, const int64_t *shape, int64_t *idx)
{
    for (int i = ndim - 1; i >= 0; i--) {
        if (++idx[i] < shape[i])
            return 1;
        idx[i] = 0;
    }
    return 0;
}

/* Random values into every element of a view (complex: both parts). */
static void fill_random(fl_tensor *t, uint64_t *seed)
{
    int64_t idx[FL_MAX_DIMS] = { 0 };
    if (fl_tensor_numel(t) == 0)
        return;
    do
        set_c(t, idx, urand(seed), urand(seed));
    while (next_index(t->ndim, t->shape, idx));
}

/* ||a - b|| / ||b|| over two same-shape views (b must not be all zero). */
static double rel_err(const fl_tensor *a, const fl_tensor *b)
{
    assert_true(fl_tensor_same_shape(a, b));
    int64_t idx[FL_MAX_DIMS] = { 0 };
    double num = 0, den = 0;
    do {
        double ar, ai, br, bi;
        get_c(a, idx, &ar, &ai);
        get_c(b, idx, &br, &bi);
        num += (ar - br) * (ar - br) + (ai - bi) * (ai - bi);
        den += br * br + bi * bi;
    } while (next_index(a->ndim, a->shape, idx));
    assert_true(den > 0);
    return sqrt(num / den);
}

static void run(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, int inverse)
{
    fl_error err;
    fl_status st = inverse ? fl_ifft(be, out, in, ndims, &err) : fl_fft(be, out, in, ndims, &err);
    if (st)
        fail_msg("%s %s: %s", fl_backend_name(be), inverse ? "ifft" : "fft", fl_error_msg(&err));
}

static double tol_for(fl_dtype t) { return out_dtype(t) == FL_C64 ? TOL32 : TOL64; }

/* Checks out against an expected value function over the whole tensor, with absolute
 * tolerance tol * scale. */
typedef void (*expect_fn)(const int64_t *idx, int ndim, const int64_t *shape, const void *ctx,
                          double *re, double *im);

static void check_expect(const fl_tensor *out, expect_fn f, const void *ctx, double tol,
                         const char *what)
{
    int64_t idx[FL_MAX_DIMS] = { 0 };
    do {
        double r, i, er, ei;
        get_c(out, idx, &r, &i);
        f(idx, out->ndim, out->shape, ctx, &er, &ei);
        double e = hypot(r - er, i - ei);
        if (!(e <= tol))
            fail_msg("%s: at flat index [%lld %lld %lld %lld %lld] got (%g, %g), want (%g, %g)",
                     what, (long long)idx[0], (long long)idx[1], (long long)idx[2],
                     (long long)idx[3], (long long)idx[4], r, i, er, ei);
    } while (next_index(out->ndim, out->shape, idx));
}

/* ---- closed forms -------------------------------------------------------------------- */

static void expect_const(const int64_t *idx, int ndim, const int64_t *shape, const void *ctx,
                         double *re, double *im)
{
    (void)idx, (void)ndim, (void)shape;
    *re = *(const double *)ctx;
    *im = 0;
}

/* delta at the origin -> all ones (forward), all 1/N (inverse); 1-D, 2-D, 3-D; real and
 * complex input, both precisions. */
static void test_delta(void **state)
{
    (void)state;
    static const int64_t shapes[3][3] = { { 7, 0, 0 }, { 5, 6, 0 }, { 3, 4, 5 } };
    static const fl_dtype dts[4] = { FL_F32, FL_F64, FL_C64, FL_C128 };
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (int nd = 1; nd <= 3; nd++)
            for (int d = 0; d < 4; d++)
                for (int inv = 0; inv < 2; inv++) {
                    fl_tensor x = tensor_new(dts[d], nd, shapes[nd - 1]);
                    fl_tensor y = tensor_new(out_dtype(dts[d]), nd, shapes[nd - 1]);
                    memset(x.storage->data, 0, x.storage->nbytes);
                    int64_t zero[3] = { 0, 0, 0 };
                    set_c(&x, zero, 1.0, 0.0);
                    run(be, &y, &x, nd, inv);
                    double want = inv ? 1.0 / (double)fl_tensor_numel(&x) : 1.0;
                    check_expect(&y, expect_const, &want, tol_for(dts[d]), "delta");
                    fl_tensor_release(&x);
                    fl_tensor_release(&y);
                }
        fl_backend_free(be);
    }
}

typedef struct wave {
    int ndim;
    int64_t k[3];
    double amp; /* expected peak */
} wave;

static void expect_peak(const int64_t *idx, int ndim, const int64_t *shape, const void *ctx,
                        double *re, double *im)
{
    (void)shape;
    const wave *w = ctx;
    int at = 1;
    for (int i = 0; i < ndim; i++)
        at &= idx[i] == w->k[i];
    *re = at ? w->amp : 0;
    *im = 0;
}

/* exp(+2πi k·n/N) -> N at bin k and 0 elsewhere (forward); exp(-2πi k·n/N) -> 1 at bin k
 * (inverse). In 1-D, 2-D and 3-D on non-power-of-two sizes, both dtypes. The phase is
 * reduced in integers, so the input itself is accurate to eps. */
static void test_plane_wave(void **state)
{
    (void)state;
    static const int64_t shapes[3][3] = { { 12, 0, 0 }, { 6, 10, 0 }, { 5, 3, 7 } };
    static const int64_t ks[3][3] = { { 5, 0, 0 }, { 1, 7, 0 }, { 4, 0, 2 } };
    static const fl_dtype dts[2] = { FL_C64, FL_C128 };
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (int nd = 1; nd <= 3; nd++)
            for (int d = 0; d < 2; d++)
                for (int inv = 0; inv < 2; inv++) {
                    const int64_t *sh = shapes[nd - 1];
                    fl_tensor x = tensor_new(dts[d], nd, sh);
                    fl_tensor y = tensor_new(dts[d], nd, sh);
                    int64_t idx[3] = { 0, 0, 0 }, n = fl_tensor_numel(&x);
                    do {
                        /* phase k·n/N as an exact fraction of the full turn per dim */
                        double ph = 0;
                        for (int i = 0; i < nd; i++)
                            ph += (double)((ks[nd - 1][i] * idx[i]) % sh[i]) / (double)sh[i];
                        double s = inv ? -1.0 : 1.0;
                        set_c(&x, idx, cos(TWO_PI * ph), s * sin(TWO_PI * ph));
                    } while (next_index(nd, sh, idx));
                    run(be, &y, &x, nd, inv);
                    wave w = { nd, { ks[nd - 1][0], ks[nd - 1][1], ks[nd - 1][2] },
                               inv ? 1.0 : (double)n };
                    /* absolute tolerance scaled by the peak height (N forward, 1 inverse) */
                    double scale = inv ? 1.0 : (double)n;
                    check_expect(&y, expect_peak, &w, tol_for(dts[d]) * scale, "plane wave");
                    fl_tensor_release(&x);
                    fl_tensor_release(&y);
                }
        fl_backend_free(be);
    }
}

typedef struct cosine {
    int64_t n, k;
    double amp;
} cosine;

static void expect_cosine(const int64_t *idx, int ndim, const int64_t *shape, const void *ctx,
                          double *re, double *im)
{
    (void)ndim, (void)shape;
    const cosine *c = ctx;
    int64_t j = idx[ndim - 1];
    *re = (j == c->k || j == c->n - c->k) ? c->amp : 0;
    *im = 0;
}

/* A real cosine cos(2π k n/N) has exactly two bins, k and N-k, of height N/2; batched
 * over 3 rows that all carry the same cosine. Real f32/f64 input (promoted). */
static void test_real_cosine(void **state)
{
    (void)state;
    static const fl_dtype dts[2] = { FL_F32, FL_F64 };
    const int64_t N = 15, K = 4, shape[2] = { 3, 15 };
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (int d = 0; d < 2; d++) {
            fl_tensor x = tensor_new(dts[d], 2, shape);
            fl_tensor y = tensor_new(out_dtype(dts[d]), 2, shape);
            int64_t idx[2] = { 0, 0 };
            do
                set_c(&x, idx, cos(TWO_PI * (double)((K * idx[1]) % N) / (double)N), 0);
            while (next_index(2, shape, idx));
            run(be, &y, &x, 1, 0);
            cosine c = { N, K, N / 2.0 };
            check_expect(&y, expect_cosine, &c, tol_for(dts[d]) * (double)N, "cosine");
            fl_tensor_release(&x);
            fl_tensor_release(&y);
        }
        fl_backend_free(be);
    }
}

/* A delta at position m transforms to exp(-2πi k·m/N): this pins the sign convention
 * (forward uses the minus sign) independently of any other check. */
typedef struct shifted {
    int ndim;
    int64_t m[3];
    int inverse;
} shifted;

static void expect_shifted_delta(const int64_t *idx, int ndim, const int64_t *shape,
                                 const void *ctx, double *re, double *im)
{
    const shifted *s = ctx;
    double ph = 0, n = 1;
    for (int i = 0; i < ndim; i++) {
        ph += (double)((idx[i] * s->m[i]) % shape[i]) / (double)shape[i];
        n *= (double)shape[i];
    }
    double sg = s->inverse ? 1.0 : -1.0, sc = s->inverse ? 1.0 / n : 1.0;
    *re = sc * cos(TWO_PI * ph);
    *im = sc * sg * sin(TWO_PI * ph);
}

static void test_sign_convention(void **state)
{
    (void)state;
    const int64_t shape[3] = { 4, 5, 6 };
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (int inv = 0; inv < 2; inv++) {
            fl_tensor x = tensor_new(FL_C128, 3, shape);
            fl_tensor y = tensor_new(FL_C128, 3, shape);
            memset(x.storage->data, 0, x.storage->nbytes);
            shifted s = { 3, { 1, 2, 5 }, inv };
            set_c(&x, s.m, 1.0, 0.0);
            run(be, &y, &x, 3, inv);
            check_expect(&y, expect_shifted_delta, &s, TOL64, "shifted delta");
            fl_tensor_release(&x);
            fl_tensor_release(&y);
        }
        fl_backend_free(be);
    }
}

/* ---- theorems on random data --------------------------------------------------------- */

static double sumsq(const fl_tensor *t)
{
    int64_t idx[FL_MAX_DIMS] = { 0 };
    double s = 0;
    do {
        double r, i;
        get_c(t, idx, &r, &i);
        s += r * r + i * i;
    } while (next_index(t->ndim, t->shape, idx));
    return s;
}

/* Parseval per batch item summed: sum |X|^2 = N sum |x|^2, for every backend and dtype. */
static void test_parseval(void **state)
{
    (void)state;
    static const fl_dtype dts[4] = { FL_F32, FL_F64, FL_C64, FL_C128 };
    const int64_t shape[4] = { 2, 7, 9, 4 };
    uint64_t seed = 11;
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (int d = 0; d < 4; d++)
            for (int nd = 1; nd <= 3; nd++) {
                fl_tensor x = tensor_new(dts[d], 4, shape);
                fl_tensor y = tensor_new(out_dtype(dts[d]), 4, shape);
                fill_random(&x, &seed);
                run(be, &y, &x, nd, 0);
                double n = 1;
                for (int i = 4 - nd; i < 4; i++)
                    n *= (double)shape[i];
                double lhs = sumsq(&y), rhs = n * sumsq(&x);
                assert_true(fabs(lhs - rhs) <= tol_for(dts[d]) * rhs);
                fl_tensor_release(&x);
                fl_tensor_release(&y);
            }
        fl_backend_free(be);
    }
}

/* fft(a x + b y) = a fft(x) + b fft(y) with complex a, b. */
static void test_linearity(void **state)
{
    (void)state;
    const int64_t shape[3] = { 3, 11, 6 };
    const double ar = 0.75, ai = -1.5, br = -2.0, bi = 0.25;
    uint64_t seed = 12;
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        fl_tensor x = tensor_new(FL_C128, 3, shape), y = tensor_new(FL_C128, 3, shape);
        fl_tensor z = tensor_new(FL_C128, 3, shape), fx = tensor_new(FL_C128, 3, shape);
        fl_tensor fy = tensor_new(FL_C128, 3, shape), fz = tensor_new(FL_C128, 3, shape);
        fill_random(&x, &seed);
        fill_random(&y, &seed);
        int64_t idx[3] = { 0, 0, 0 };
        do {
            double xr, xi, yr, yi;
            get_c(&x, idx, &xr, &xi);
            get_c(&y, idx, &yr, &yi);
            set_c(&z, idx, ar * xr - ai * xi + br * yr - bi * yi, ar * xi + ai * xr + br * yi + bi * yr);
        } while (next_index(3, shape, idx));
        run(be, &fx, &x, 2, 0);
        run(be, &fy, &y, 2, 0);
        run(be, &fz, &z, 2, 0);
        do { /* fx := a fx + b fy */
            double xr, xi, yr, yi;
            get_c(&fx, idx, &xr, &xi);
            get_c(&fy, idx, &yr, &yi);
            set_c(&fx, idx, ar * xr - ai * xi + br * yr - bi * yi, ar * xi + ai * xr + br * yi + bi * yr);
        } while (next_index(3, shape, idx));
        assert_true(rel_err(&fx, &fz) <= TOL64);
        fl_tensor_release(&x), fl_tensor_release(&y), fl_tensor_release(&z);
        fl_tensor_release(&fx), fl_tensor_release(&fy), fl_tensor_release(&fz);
        fl_backend_free(be);
    }
}

/* Circular shift by m in each transformed dim multiplies bin k by exp(-2πi k·m/N). */
static void test_shift_theorem(void **state)
{
    (void)state;
    const int64_t shape[3] = { 2, 9, 10 }, m[2] = { 4, 7 };
    uint64_t seed = 13;
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        fl_tensor x = tensor_new(FL_C128, 3, shape), xs = tensor_new(FL_C128, 3, shape);
        fl_tensor fx = tensor_new(FL_C128, 3, shape), fxs = tensor_new(FL_C128, 3, shape);
        fill_random(&x, &seed);
        int64_t idx[3] = { 0, 0, 0 };
        do { /* xs[n] = x[n - m] */
            int64_t src[3] = { idx[0], (idx[1] - m[0] + shape[1]) % shape[1],
                               (idx[2] - m[1] + shape[2]) % shape[2] };
            double r, i;
            get_c(&x, src, &r, &i);
            set_c(&xs, idx, r, i);
        } while (next_index(3, shape, idx));
        run(be, &fx, &x, 2, 0);
        run(be, &fxs, &xs, 2, 0);
        do { /* fx := fx * exp(-2πi k·m/N) */
            double ph = (double)((idx[1] * m[0]) % shape[1]) / (double)shape[1] +
                        (double)((idx[2] * m[1]) % shape[2]) / (double)shape[2];
            double c = cos(TWO_PI * ph), s = -sin(TWO_PI * ph), r, i;
            get_c(&fx, idx, &r, &i);
            set_c(&fx, idx, r * c - i * s, r * s + i * c);
        } while (next_index(3, shape, idx));
        assert_true(rel_err(&fx, &fxs) <= TOL64);
        fl_tensor_release(&x), fl_tensor_release(&xs);
        fl_tensor_release(&fx), fl_tensor_release(&fxs);
        fl_backend_free(be);
    }
}

/* ifft(fft(x)) = x, sizes with primes and non-powers of two, 1-D to 3-D, batched. */
static void test_round_trip(void **state)
{
    (void)state;
    static const struct { int ndim, nd; int64_t shape[4]; } cases[] = {
        { 1, 1, { 1 } },          { 1, 1, { 5 } },         { 2, 1, { 3, 7 } },
        { 1, 1, { 12 } },         { 1, 1, { 16 } },        { 1, 1, { 97 } },
        { 2, 2, { 5, 7 } },       { 3, 2, { 2, 12, 16 } }, { 3, 3, { 9, 10, 6 } },
        { 4, 3, { 2, 5, 7, 3 } }, { 3, 3, { 1, 1, 1 } },   { 3, 2, { 4, 1, 13 } },
    };
    static const fl_dtype dts[2] = { FL_C64, FL_C128 };
    uint64_t seed = 14;
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
            for (int d = 0; d < 2; d++) {
                fl_tensor x = tensor_new(dts[d], cases[c].ndim, cases[c].shape);
                fl_tensor f = tensor_new(dts[d], cases[c].ndim, cases[c].shape);
                fl_tensor r = tensor_new(dts[d], cases[c].ndim, cases[c].shape);
                fill_random(&x, &seed);
                run(be, &f, &x, cases[c].nd, 0);
                run(be, &r, &f, cases[c].nd, 1);
                double e = rel_err(&r, &x);
                if (!(e <= tol_for(dts[d])))
                    fail_msg("%s round trip case %zu %s: rel err %g", backend_names[b], c,
                             fl_dtype_name(dts[d]), e);
                fl_tensor_release(&x), fl_tensor_release(&f), fl_tensor_release(&r);
            }
        fl_backend_free(be);
    }
}

/* ---- FFTW against the reference on random strided views ------------------------------ */

/* A view of logical shape `shape` over a larger fresh storage: dims permuted in memory,
 * some dims stepped (step 2 or 3, random start), and, for inputs, some batch dims
 * broadcast (stride 0). Every storage element is set: random for inputs, a sentinel for
 * outputs. Returns the view; *base receives the owning tensor. */
static fl_tensor random_view(fl_dtype dt, int ndim, const int64_t *shape, int nbatch, int is_input,
                             uint64_t *seed, fl_tensor *base)
{
    int perm[FL_MAX_DIMS], bcast[FL_MAX_DIMS];
    int64_t want[FL_MAX_DIMS], bshape[FL_MAX_DIMS], step[FL_MAX_DIMS], start[FL_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        perm[i] = i;
        bcast[i] = is_input && i < nbatch && shape[i] > 1 && irand(seed, 0, 2) == 0;
        want[i] = bcast[i] ? 1 : shape[i];
    }
    for (int i = ndim - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)irand(seed, 0, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* view dim i = base dim perm[i]; base dim perm[i] holds want[i] * step + slack */
    for (int i = 0; i < ndim; i++) {
        step[i] = irand(seed, 1, 3);
        start[i] = irand(seed, 0, 1);
        bshape[perm[i]] = start[i] + want[i] * step[i];
    }
    *base = tensor_new(dt, ndim, bshape);
    size_t nreal = base->storage->nbytes / (dt == FL_F32 || dt == FL_C64 ? 4 : 8);
    for (size_t k = 0; k < nreal; k++) {
        double v = is_input ? urand(seed) : SENTINEL;
        if (dt == FL_F32 || dt == FL_C64)
            ((float *)base->storage->data)[k] = (float)v;
        else
            ((double *)base->storage->data)[k] = v;
    }
    fl_error err;
    fl_tensor v = FL_TENSOR_NULL;
    fl_tensor_retain(&v, base);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(fl_tensor_slice(&v, &v, perm[i], start[i], INT64_MAX, step[i], &err), FL_OK);
    assert_int_equal(fl_tensor_permute(&v, &v, perm, &err), FL_OK);
    for (int i = 0; i < ndim; i++)
        if (v.shape[i] != want[i]) /* slicing to the end may leave one extra */
            assert_int_equal(fl_tensor_narrow(&v, &v, i, 0, want[i], &err), FL_OK);
    if (is_input)
        assert_int_equal(fl_tensor_expand(&v, &v, ndim, shape, &err), FL_OK);
    return v;
}

/* Elements of base that are not reached by view still hold the sentinel. */
static void check_untouched(const fl_tensor *base, const fl_tensor *view)
{
    int64_t n = fl_tensor_numel(base);
    char *hit = calloc((size_t)n, 1);
    assert_non_null(hit);
    int64_t idx[FL_MAX_DIMS] = { 0 };
    int64_t off0 = view->offset - base->offset;
    do
        hit[off0 + fl_tensor_offset_of(view, idx)] = 1;
    while (next_index(view->ndim, view->shape, idx));
    int cplx = is_cplx(base->dtype), dbl = base->dtype == FL_C128;
    for (int64_t k = 0; k < n; k++) {
        if (hit[k])
            continue;
        for (int p = 0; p <= cplx; p++) {
            double v = dbl ? ((double *)base->storage->data)[2 * k + p]
                           : ((float *)base->storage->data)[2 * k + p];
            if (v != SENTINEL)
                fail_msg("element %lld of the output's storage, outside the view, was written",
                         (long long)k);
        }
    }
    free(hit);
}

/* A contiguous copy of a view. */
static fl_tensor contiguous_copy(const fl_tensor *v)
{
    fl_tensor c = tensor_new(v->dtype, v->ndim, v->shape);
    int64_t idx[FL_MAX_DIMS] = { 0 };
    do {
        double r, i;
        get_c(v, idx, &r, &i);
        set_c(&c, idx, r, i);
    } while (next_index(v->ndim, v->shape, idx));
    return c;
}

static void test_fftw_vs_reference(void **state)
{
    (void)state;
    static const fl_dtype dts[4] = { FL_F32, FL_F64, FL_C64, FL_C128 };
    fl_backend *ref = open_backend("cpu-ref", NULL), *fw = open_backend("cpu", NULL);
    uint64_t seed = 15;
    for (int it = 0; it < 240; it++) {
        fl_dtype dt = dts[it % 4], odt = out_dtype(dt);
        int ndim = (int)irand(&seed, 1, 5);
        int nd = (int)irand(&seed, 1, ndim < 3 ? ndim : 3);
        int nbatch = ndim - nd;
        int64_t shape[FL_MAX_DIMS];
        for (int i = 0; i < ndim; i++)
            shape[i] = i < nbatch ? irand(&seed, 1, 4) : irand(&seed, 1, nd == 3 ? 8 : 13);
        int inverse = (int)irand(&seed, 0, 1);

        fl_tensor in_base, out_base;
        fl_tensor in = random_view(dt, ndim, shape, nbatch, 1, &seed, &in_base);
        fl_tensor out = random_view(odt, ndim, shape, nbatch, 0, &seed, &out_base);
        fl_tensor want = tensor_new(odt, ndim, shape);  /* reference, contiguous out */
        fl_tensor got_c = tensor_new(odt, ndim, shape); /* fftw, contiguous out */
        fl_tensor in_c = contiguous_copy(&in);
        fl_tensor got_cc = tensor_new(odt, ndim, shape); /* fftw, contiguous in and out */

        run(ref, &want, &in, nd, inverse);
        run(fw, &out, &in, nd, inverse);
        run(fw, &got_c, &in, nd, inverse);
        run(fw, &got_cc, &in_c, nd, inverse);
        double tol = tol_for(dt);
        double e1 = rel_err(&out, &want), e2 = rel_err(&got_c, &want), e3 = rel_err(&got_cc, &want);
        if (!(e1 <= tol && e2 <= tol && e3 <= tol)) {
            char d[96];
            fail_msg("case %d: %s ndims %d %s: rel err strided %g contiguous %g copy %g (tol %g)",
                     it, fl_tensor_describe(&in, d, sizeof d), nd, inverse ? "ifft" : "fft", e1,
                     e2, e3, tol);
        }
        check_untouched(&out_base, &out);

        /* the reference through the same strided output gives bit-identical results */
        if (odt == FL_C64)
            for (size_t k = 0; k < out_base.storage->nbytes / 4; k++)
                ((float *)out_base.storage->data)[k] = SENTINEL;
        else
            for (size_t k = 0; k < out_base.storage->nbytes / 8; k++)
                ((double *)out_base.storage->data)[k] = SENTINEL;
        run(ref, &out, &in, nd, inverse);
        assert_true(rel_err(&out, &want) == 0.0);
        check_untouched(&out_base, &out);

        fl_tensor_release(&in), fl_tensor_release(&in_base);
        fl_tensor_release(&out), fl_tensor_release(&out_base);
        fl_tensor_release(&want), fl_tensor_release(&got_c);
        fl_tensor_release(&in_c), fl_tensor_release(&got_cc);
    }
    fl_backend_free(ref);
    fl_backend_free(fw);
}

/* A prime length well past the small cases: the reference's integer phase reduction
 * keeps it at FFTW's accuracy (a rotated twiddle recurrence would drift ~ eps * N). */
static void test_long_prime(void **state)
{
    (void)state;
    const int64_t shape[1] = { 1009 };
    uint64_t seed = 16;
    fl_backend *ref = open_backend("cpu-ref", NULL), *fw = open_backend("cpu", NULL);
    fl_tensor x = tensor_new(FL_C128, 1, shape), a = tensor_new(FL_C128, 1, shape);
    fl_tensor b = tensor_new(FL_C128, 1, shape);
    fill_random(&x, &seed);
    run(ref, &a, &x, 1, 0);
    run(fw, &b, &x, 1, 0);
    assert_true(rel_err(&a, &b) <= 1e-13);
    fl_tensor_release(&x), fl_tensor_release(&a), fl_tensor_release(&b);
    fl_backend_free(ref);
    fl_backend_free(fw);
}

/* FFTW's scratch path in several chunks (batch * core above its chunk size, with a
 * shorter last chunk) and with a core larger than a chunk: same values as the in-place
 * contiguous path, and the round trip closes. */
static void test_fftw_chunks(void **state)
{
    (void)state;
    static const struct { int64_t shape[3]; } cases[] = { { { 70, 64, 64 } }, { { 2, 513, 520 } } };
    fl_backend *fw = open_backend("cpu", NULL);
    uint64_t seed = 17;
    fl_error err;
    for (int c = 0; c < 2; c++) {
        const int64_t *sh = cases[c].shape;
        int64_t big[3] = { sh[0], sh[1], sh[2] + 1 };
        fl_tensor x = tensor_new(FL_C64, 3, sh), a = tensor_new(FL_C64, 3, sh);
        fl_tensor bbase = tensor_new(FL_C64, 3, big), b = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_narrow(&b, &bbase, 2, 1, sh[2], &err), FL_OK);
        assert_false(fl_tensor_is_contiguous(&b));
        fill_random(&x, &seed);
        run(fw, &a, &x, 2, 0);
        run(fw, &b, &x, 2, 0);
        assert_true(rel_err(&b, &a) <= TOL32);
        run(fw, &a, &b, 2, 1);
        assert_true(rel_err(&a, &x) <= TOL32);
        fl_tensor_release(&x), fl_tensor_release(&a), fl_tensor_release(&b), fl_tensor_release(&bbase);
    }
    fl_backend_free(fw);
}

/* out may be the identical view of in (the vtable entry supports it; ops.c may or may not
 * admit it): the result equals the out-of-place one. */
static void test_in_place_entry(void **state)
{
    (void)state;
    const int64_t shape[3] = { 3, 6, 5 };
    uint64_t seed = 18;
    for (int b = 0; b < NBACKENDS; b++) {
        fl_backend *be = open_backend(backend_names[b], NULL);
        for (int strided = 0; strided < 2; strided++) {
            fl_tensor base = tensor_new(FL_C128, 3, shape), x = FL_TENSOR_NULL;
            fl_error err;
            int perm[3] = { 0, 2, 1 };
            assert_int_equal(fl_tensor_permute(&x, &base, perm, &err), FL_OK);
            if (!strided) {
                fl_tensor_release(&x);
                fl_tensor_retain(&x, &base);
            }
            fill_random(&x, &seed);
            fl_tensor want = tensor_new(FL_C128, 3, x.shape);
            run(be, &want, &x, 2, 0);
            assert_int_equal(be->vt->fft(be, &x, &x, 2, 0, &err), FL_OK);
            assert_true(rel_err(&x, &want) <= 1e-14);
            fl_tensor_release(&x), fl_tensor_release(&base), fl_tensor_release(&want);
        }
        fl_backend_free(be);
    }
}

/* Zero-size tensors: nothing to do, nothing allocated, FL_OK. */
static void test_empty(void **state)
{
    (void)state;
    const int64_t shape[3] = { 0, 4, 5 }, shape2[2] = { 3, 0 };
    for (int b = 0; b < NBACKENDS; b++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, -1);
        fl_backend *be = open_backend(backend_names[b], &fa.iface);
        size_t before = fa.total_allocs;
        fl_tensor x = tensor_new(FL_C64, 3, shape), y = tensor_new(FL_C64, 3, shape);
        run(be, &y, &x, 2, 0);
        fl_tensor x2 = tensor_new(FL_F64, 2, shape2), y2 = tensor_new(FL_C128, 2, shape2);
        run(be, &y2, &x2, 1, 1);
        assert_int_equal(fa.total_allocs, before);
        fl_tensor_release(&x), fl_tensor_release(&y), fl_tensor_release(&x2), fl_tensor_release(&y2);
        fl_backend_free(be);
    }
}

/* Every allocation the FFT makes through the backend's allocator is made to fail in turn:
 * each failure is FL_E_NOMEM and leaves no block behind, and the first success is right. */
static void test_alloc_failures(void **state)
{
    (void)state;
    const int64_t shape[3] = { 3, 5, 6 };
    uint64_t seed = 19;
    for (int b = 0; b < NBACKENDS; b++)
        for (int strided = 0; strided < 2; strided++) {
            fl_faultalloc fa;
            fl_faultalloc_init(&fa, NULL, -1);
            fl_backend *be = open_backend(backend_names[b], &fa.iface);
            fl_backend *ref = open_backend("cpu-ref", NULL);
            fl_tensor x = tensor_new(FL_F32, 3, shape), want = tensor_new(FL_C64, 3, shape);
            fill_random(&x, &seed);
            run(ref, &want, &x, 2, 0);
            /* strided: a [3, 5, 6] window of a [3, 5, 7] tensor */
            int64_t big[3] = { 3, 5, 7 };
            fl_tensor ybase = tensor_new(FL_C64, 3, strided ? big : shape), y = FL_TENSOR_NULL;
            fl_error err;
            assert_int_equal(fl_tensor_narrow(&y, &ybase, 2, strided, 6, &err), FL_OK);
            assert_true(fl_tensor_is_contiguous(&y) == !strided);
            size_t live = fa.live_blocks;
            long k;
            int failed = 0;
            for (k = 0; k < 100; k++) {
                fa.fail_after = k;
                fl_status st = fl_fft(be, &y, &x, 2, &err);
                fa.fail_after = -1;
                assert_int_equal(fa.live_blocks, live);
                if (st == FL_OK)
                    break;
                assert_int_equal(st, FL_E_NOMEM);
                assert_int_equal(err.code, FL_E_NOMEM);
                assert_non_null(strstr(err.msg, fl_backend_name(be)));
                failed++;
            }
            assert_true(k < 100);
            assert_true(rel_err(&y, &want) <= TOL32);
            /* the reference always needs scratch; FFTW only for a strided output */
            if (b == 0 || strided)
                assert_true(failed > 0);
            else
                assert_int_equal(failed, 0);
            fl_tensor_release(&x), fl_tensor_release(&want);
            fl_tensor_release(&y), fl_tensor_release(&ybase);
            fl_backend_free(ref);
            fl_backend_free(be);
        }
}

/* Several threads, each with its own "cpu" backend, plan and run transforms of many
 * different sizes at once. FFTW's planner is global to the library; without the planner
 * lock fft_fftw.c installs, concurrent planning corrupts it (crashes or wrong values). */
#define CONC_THREADS 4
#define CONC_SIZES 24

typedef struct conc_job {
    int id;
    const fl_tensor *in;   /* CONC_SIZES inputs, shared read-only */
    const fl_tensor *want; /* their transforms, computed beforehand on one thread */
    int bad;               /* cases that failed or came out wrong */
} conc_job;

/* rel_err for two same-shape c128 tensors without cmocka calls: cmocka's assertions
 * longjmp and must not run off the main thread. */
static double rel_err_c128(const fl_tensor *a, const fl_tensor *b)
{
    int64_t idx[FL_MAX_DIMS] = { 0 };
    double num = 0, den = 0;
    const double *pa = fl_tensor_data(a), *pb = fl_tensor_data(b);
    do {
        int64_t oa = 2 * fl_tensor_offset_of(a, idx), ob = 2 * fl_tensor_offset_of(b, idx);
        num += (pa[oa] - pb[ob]) * (pa[oa] - pb[ob]) + (pa[oa + 1] - pb[ob + 1]) * (pa[oa + 1] - pb[ob + 1]);
        den += pb[ob] * pb[ob] + pb[ob + 1] * pb[ob + 1];
    } while (next_index(a->ndim, a->shape, idx));
    return sqrt(num / den);
}

static void *conc_worker(void *arg)
{
    conc_job *job = arg;
    fl_backend *be = NULL;
    if (fl_backend_new(&be, "cpu", 0, NULL, NULL)) {
        job->bad = CONC_SIZES;
        return NULL;
    }
    for (int rep = 0; rep < 3; rep++)
        for (int c = 0; c < CONC_SIZES; c++) {
            int k = (c + job->id * 5) % CONC_SIZES; /* threads start on different sizes */
            fl_tensor y = FL_TENSOR_NULL;
            if (fl_tensor_empty(&y, FL_C128, 2, job->in[k].shape, NULL, NULL) ||
                fl_fft(be, &y, &job->in[k], 2, NULL) ||
                !(rel_err_c128(&y, &job->want[k]) <= TOL64))
                job->bad++;
            fl_tensor_release(&y);
        }
    fl_backend_free(be);
    return NULL;
}

static void test_concurrent_planning(void **state)
{
    (void)state;
    fl_tensor in[CONC_SIZES], want[CONC_SIZES];
    fl_backend *ref = open_backend("cpu", NULL);
    uint64_t seed = 20;
    for (int c = 0; c < CONC_SIZES; c++) {
        int64_t shape[2] = { 3 + c % 7, 5 + c };
        in[c] = tensor_new(FL_C128, 2, shape);
        want[c] = tensor_new(FL_C128, 2, shape);
        fill_random(&in[c], &seed);
        run(ref, &want[c], &in[c], 2, 0);
    }
    fl_backend_free(ref);
    conc_job jobs[CONC_THREADS];
    pthread_t th[CONC_THREADS];
    for (int t = 0; t < CONC_THREADS; t++) {
        jobs[t] = (conc_job){ t, in, want, 0 };
        assert_int_equal(pthread_create(&th[t], NULL, conc_worker, &jobs[t]), 0);
    }
    for (int t = 0; t < CONC_THREADS; t++)
        assert_int_equal(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < CONC_THREADS; t++)
        assert_int_equal(jobs[t].bad, 0);
    for (int c = 0; c < CONC_SIZES; c++)
        fl_tensor_release(&in[c]), fl_tensor_release(&want[c]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta),
        cmocka_unit_test(test_plane_wave),
        cmocka_unit_test(test_real_cosine),
        cmocka_unit_test(test_sign_convention),
        cmocka_unit_test(test_parseval),
        cmocka_unit_test(test_linearity),
        cmocka_unit_test(test_shift_theorem),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_fftw_vs_reference),
        cmocka_unit_test(test_long_prime),
        cmocka_unit_test(test_fftw_chunks),
        cmocka_unit_test(test_in_place_entry),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_concurrent_planning),
    };
    return cmocka_run_group_tests_name("fft", tests, NULL, NULL);
}
