/* cmocka suite for eval/fd and eval/mmd and `fifolab fd`: closed-form Gaussians, an
 * independent long-double Denman-Beavers square root on random SPD pairs, the streaming
 * accumulator against two-pass sums (shards, offsets, strides), degenerate covariances,
 * HDF5 round trips and protocol checks, the unbiased MMD against its population value,
 * allocation failures, and the command line on files written here. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/cli.h"
#include "eval/fd.h"
#include "eval/mmd.h"

#define TWO_PI 6.283185307179586476925286766559

/* ---- helpers ------------------------------------------------------------------------ */

/* An independent generator for test inputs, so the code under test never decides how it
 * is itself exercised. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double urand(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; }

static double nrand(uint64_t *s)
{
    double u = urand(s) + 0x1.0p-54, v = urand(s);
    return sqrt(-2.0 * log(u)) * cos(TWO_PI * v);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static void expect_ok(fl_status st, const fl_error *err, const char *what)
{
    if (st != FL_OK)
        fail_msg("%s: status %d: %s", what, (int)st, fl_error_msg(err));
}

static void expect_msg(const fl_error *err, const char *needle)
{
    if (!strstr(err->msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, needle);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static fl_fd_protocol proto(int64_t d)
{
    fl_fd_protocol p;
    memset(&p, 0, sizeof p);
    snprintf(p.extractor, sizeof p.extractor, "test-features");
    snprintf(p.resize, sizeof p.resize, "none");
    p.clip_len = 16;
    p.dim = d;
    return p;
}

/* A random SPD matrix B B^T / d + shift I with eigenvalues spread by `spread` (B has
 * columns scaled geometrically), full storage. */
static void random_spd(uint64_t *s, int d, double spread, double shift, double *out)
{
    double *b = xcalloc((size_t)d * d, sizeof(double));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++)
            b[i * d + j] = nrand(s) * pow(spread, (double)j / (d > 1 ? d - 1 : 1));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double acc = 0.0;
            for (int k = 0; k < d; k++)
                acc += b[i * d + k] * b[j * d + k];
            out[i * d + j] = acc / d + (i == j ? shift : 0.0);
        }
    free(b);
}

/* ---- an independent square root: Denman-Beavers in long double ----------------------- */

typedef long double ld;

static void ld_matmul(int d, const ld *a, const ld *b, ld *c)
{
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            ld acc = 0;
            for (int k = 0; k < d; k++)
                acc += a[i * d + k] * b[k * d + j];
            c[i * d + j] = acc;
        }
}

/* Gauss-Jordan with partial pivoting; the matrices here are well conditioned. */
static void ld_inverse(int d, const ld *a, ld *inv)
{
    ld *m = xcalloc((size_t)d * 2 * d, sizeof(ld));
    for (int i = 0; i < d; i++) {
        for (int j = 0; j < d; j++)
            m[i * 2 * d + j] = a[i * d + j];
        m[i * 2 * d + d + i] = 1;
    }
    for (int c = 0; c < d; c++) {
        int p = c;
        for (int r = c + 1; r < d; r++)
            if (fabsl(m[r * 2 * d + c]) > fabsl(m[p * 2 * d + c]))
                p = r;
        for (int j = 0; j < 2 * d; j++) {
            ld t = m[c * 2 * d + j];
            m[c * 2 * d + j] = m[p * 2 * d + j];
            m[p * 2 * d + j] = t;
        }
        ld piv = m[c * 2 * d + c];
        assert_true(piv != 0);
        for (int j = 0; j < 2 * d; j++)
            m[c * 2 * d + j] /= piv;
        for (int r = 0; r < d; r++)
            if (r != c) {
                ld f = m[r * 2 * d + c];
                for (int j = 0; j < 2 * d; j++)
                    m[r * 2 * d + j] -= f * m[c * 2 * d + j];
            }
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++)
            inv[i * d + j] = m[i * 2 * d + d + j];
    free(m);
}

/* tr sqrt(S1 S2) from the non-symmetric product itself: Denman-Beavers iteration
 * Y <- (Y + Z^-1) / 2, Z <- (Z + Y^-1) / 2 from Y = M / c, Z = I (c = tr M / d), which
 * converges to sqrt(M / c) for M with positive real eigenvalues; nothing in it is shared
 * with the code under test. */
static double trace_sqrt_db(int d, const double *s1, const double *s2)
{
    size_t dd = (size_t)d * d;
    ld *a = xcalloc(dd, sizeof(ld)), *b = xcalloc(dd, sizeof(ld)), *y = xcalloc(dd, sizeof(ld));
    ld *z = xcalloc(dd, sizeof(ld)), *yi = xcalloc(dd, sizeof(ld)), *zi = xcalloc(dd, sizeof(ld));
    for (size_t i = 0; i < dd; i++) {
        a[i] = s1[i];
        b[i] = s2[i];
    }
    ld_matmul(d, a, b, y);
    ld c = 0;
    for (int i = 0; i < d; i++)
        c += y[i * d + i];
    c /= d;
    for (size_t i = 0; i < dd; i++)
        y[i] /= c;
    for (int i = 0; i < d; i++)
        z[i * d + i] = 1;
    for (int it = 0; it < 100; it++) {
        ld_inverse(d, y, yi);
        ld_inverse(d, z, zi);
        ld delta = 0, norm = 0;
        for (size_t i = 0; i < dd; i++) {
            ld ny = (y[i] + zi[i]) / 2;
            delta += (ny - y[i]) * (ny - y[i]);
            norm += ny * ny;
            y[i] = ny;
            z[i] = (z[i] + yi[i]) / 2;
        }
        if (delta <= 1e-36L * norm)
            break;
    }
    ld tr = 0;
    for (int i = 0; i < d; i++)
        tr += y[i * d + i];
    tr *= sqrtl(c);
    free(a), free(b), free(y), free(z), free(yi), free(zi);
    return (double)tr;
}

/* ---- closed forms ------------------------------------------------------------------- */

static fl_fd_result gauss_fd(int d, const double *m1, const double *s1, const double *m2, const double *s2)
{
    fl_fd_result r;
    fl_error err;
    expect_ok(fl_fd_gaussian(d, m1, s1, 0, m2, s2, 0, NULL, &r, &err), &err, "fl_fd_gaussian");
    return r;
}

/* Diagonal (commuting) covariances: FD = |dmu|^2 + sum (sqrt a_i - sqrt b_i)^2. */
static void test_closed_form_diagonal(void **state)
{
    (void)state;
    enum { D = 6 };
    double m1[D], m2[D], s1[D * D] = { 0 }, s2[D * D] = { 0 }, want = 0.0;
    for (int i = 0; i < D; i++) {
        m1[i] = 0.3 * i;
        m2[i] = -0.2 * i + 1.0;
        double a = 0.5 + i, b = 4.0 / (1 + i);
        s1[i * D + i] = a;
        s2[i * D + i] = b;
        want += (m1[i] - m2[i]) * (m1[i] - m2[i]) + (sqrt(a) - sqrt(b)) * (sqrt(a) - sqrt(b));
    }
    fl_fd_result r = gauss_fd(D, m1, s1, m2, s2);
    assert_true(rel(r.fd, want) < 1e-13);
    /* 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2 */
    double a1 = 2.0, v1 = 9.0, a2 = -1.0, v2 = 0.25;
    r = gauss_fd(1, &a1, &v1, &a2, &v2);
    assert_true(rel(r.fd, 9.0 + 2.5 * 2.5) < 1e-15);
    /* S2 = c^2 S1 (commuting, non-diagonal): FD = (1 - c)^2 tr S1 */
    uint64_t seed = 7;
    double t1[16], t2[16], z[4] = { 0 };
    random_spd(&seed, 4, 3.0, 0.5, t1);
    for (int i = 0; i < 16; i++)
        t2[i] = 2.25 * t1[i];
    r = gauss_fd(4, z, t1, z, t2);
    double tr = t1[0] + t1[5] + t1[10] + t1[15];
    assert_true(rel(r.fd, 0.25 * tr) < 1e-13);
}

/* 2 x 2, not commuting: for 2 x 2 matrices with positive eigenvalues
 * tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), and det(S1 S2) = det S1 det S2. */
static void test_closed_form_2x2(void **state)
{
    (void)state;
    double z[2] = { 0, 0 };
    double s1[4] = { 2, 1, 1, 2 }, s2[4] = { 1, 0, 0, 3 };
    fl_fd_result r = gauss_fd(2, z, s1, z, s2);
    assert_true(rel(r.tr_sqrt, sqrt(14.0)) < 1e-15);
    assert_true(rel(r.fd, 8.0 - 2.0 * sqrt(14.0)) < 1e-14);
    uint64_t seed = 11;
    for (int k = 0; k < 200; k++) {
        double a[4], b[4], mu1[2] = { nrand(&seed), nrand(&seed) }, mu2[2] = { nrand(&seed), nrand(&seed) };
        random_spd(&seed, 2, 1.0 + 9.0 * urand(&seed), 0.01, a);
        random_spd(&seed, 2, 1.0 + 9.0 * urand(&seed), 0.01, b);
        double trm = a[0] * b[0] + a[1] * b[2] + a[2] * b[1] + a[3] * b[3];
        double det = (a[0] * a[3] - a[1] * a[2]) * (b[0] * b[3] - b[1] * b[2]);
        double ts = sqrt(trm + 2.0 * sqrt(det));
        double want = (mu1[0] - mu2[0]) * (mu1[0] - mu2[0]) + (mu1[1] - mu2[1]) * (mu1[1] - mu2[1]) + a[0] +
                      a[3] + b[0] + b[3] - 2.0 * ts;
        r = gauss_fd(2, mu1, a, mu2, b);
        if (rel(r.tr_sqrt, ts) > 1e-13 || fabs(r.fd - want) > 1e-12 * (a[0] + a[3] + b[0] + b[3]))
            fail_msg("case %d: tr sqrt %.17g vs %.17g, fd %.17g vs %.17g", k, r.tr_sqrt, ts, r.fd, want);
    }
}

/* Random SPD pairs of d = 2..48 with condition numbers up to ~1e4 against the
 * long-double Denman-Beavers root of the non-symmetric product. */
static void test_random_spd_against_denman_beavers(void **state)
{
    (void)state;
    uint64_t seed = 2024;
    double worst = 0.0;
    const int dims[] = { 2, 3, 5, 8, 13, 24, 48 };
    for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++)
        for (int rep = 0; rep < 3; rep++) {
            int d = dims[c];
            double *s1 = xcalloc((size_t)d * d, sizeof(double)), *s2 = xcalloc((size_t)d * d, sizeof(double));
            random_spd(&seed, d, rep == 0 ? 1.0 : rep == 1 ? 10.0 : 100.0, 1e-2, s1);
            random_spd(&seed, d, rep == 0 ? 3.0 : 30.0, 1e-2, s2);
            double want = trace_sqrt_db(d, s1, s2), got = 0.0;
            fl_error err;
            expect_ok(fl_fd_trace_sqrt_product(d, s1, s2, NULL, &got, &err), &err, "trace sqrt");
            double e = rel(got, want);
            worst = fmax(worst, e);
            if (e > 1e-10)
                fail_msg("d = %d rep %d: tr sqrt %.17g, Denman-Beavers %.17g (rel %.2e)", d, rep, got, want,
                         e);
            free(s1);
            free(s2);
        }
    printf("  tr sqrt(S1 S2) vs long-double Denman-Beavers: worst relative difference %.2e\n", worst);
}

/* Cyclic Jacobi in long double (eigenvalues into w, eigenvectors into the columns of v):
 * high relative accuracy for small eigenvalues, so a reference where Denman-Beavers'
 * inverses lose precision (condition numbers past 1e8). */
static void ld_jacobi(int n, ld *a, ld *v, ld *w)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            v[i * n + j] = i == j;
    for (int sweep = 0; sweep < 60; sweep++) {
        ld off = 0, tot = 0;
        for (int i = 0; i < n * n; i++)
            tot += a[i] * a[i];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                off += i != j ? a[i * n + j] * a[i * n + j] : 0;
        if (off <= 1e-38L * tot)
            break;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                ld apq = a[p * n + q];
                if (apq == 0)
                    continue;
                ld th = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                ld t = (th >= 0 ? 1 : -1) / (fabsl(th) + sqrtl(th * th + 1)), c = 1 / sqrtl(t * t + 1),
                   s = t * c;
                for (int k = 0; k < n; k++) {
                    ld x = a[k * n + p], y = a[k * n + q];
                    a[k * n + p] = c * x - s * y;
                    a[k * n + q] = s * x + c * y;
                }
                for (int k = 0; k < n; k++) {
                    ld x = a[p * n + k], y = a[q * n + k];
                    a[p * n + k] = c * x - s * y;
                    a[q * n + k] = s * x + c * y;
                }
                for (int k = 0; k < n; k++) {
                    ld x = v[k * n + p], y = v[k * n + q];
                    v[k * n + p] = c * x - s * y;
                    v[k * n + q] = s * x + c * y;
                }
            }
    }
    for (int i = 0; i < n; i++)
        w[i] = a[i * n + i];
}

/* tr sqrt(A S2 A), A = S1^(1/2), all in long double through Jacobi. */
static double trace_sqrt_jacobi(int d, const double *s1, const double *s2)
{
    size_t dd = (size_t)d * d;
    ld *a = xcalloc(dd, sizeof(ld)), *v = xcalloc(dd, sizeof(ld)), *w = xcalloc((size_t)d, sizeof(ld));
    ld *r = xcalloc(dd, sizeof(ld)), *t = xcalloc(dd, sizeof(ld)), *m = xcalloc(dd, sizeof(ld));
    for (size_t i = 0; i < dd; i++)
        a[i] = s1[i];
    ld_jacobi(d, a, v, w);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            ld acc = 0;
            for (int k = 0; k < d; k++)
                acc += v[i * d + k] * sqrtl(w[k] > 0 ? w[k] : 0) * v[j * d + k];
            r[i * d + j] = acc;
        }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            ld acc = 0;
            for (int k = 0; k < d; k++)
                acc += r[i * d + k] * s2[k * d + j];
            t[i * d + j] = acc;
        }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            ld acc = 0;
            for (int k = 0; k < d; k++)
                acc += t[i * d + k] * r[k * d + j];
            m[i * d + j] = acc;
        }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < i; j++)
            m[i * d + j] = m[j * d + i] = (m[i * d + j] + m[j * d + i]) / 2;
    ld_jacobi(d, m, v, w);
    ld tr = 0;
    for (int k = 0; k < d; k++)
        tr += w[k] > 0 ? sqrtl(w[k]) : 0;
    free(a), free(v), free(w), free(r), free(t), free(m);
    return (double)tr;
}

/* Covariances with condition numbers 1e8..1e12 (FVD-like feature covariances reach 1e8:
 * D = 400 from N = 2048 samples), against the long-double Jacobi path: the FD keeps
 * 1e-9 of its scale even where tr S_a + tr S_b - 2 tr sqrt cancels most digits. */
static void test_ill_conditioned_against_jacobi(void **state)
{
    (void)state;
    uint64_t seed = 606;
    double worst_tr = 0.0, worst_fd = 0.0;
    const int dims[] = { 8, 24, 40 };
    for (size_t c = 0; c < sizeof dims / sizeof dims[0]; c++)
        for (int rep = 0; rep < 2; rep++) {
            int d = dims[c];
            double *s1 = xcalloc((size_t)d * d, sizeof(double)), *s2 = xcalloc((size_t)d * d, sizeof(double));
            double spread = rep ? 1e6 : 1e4; /* eigenvalues spread by spread^2 */
            random_spd(&seed, d, spread, 0.0, s1);
            random_spd(&seed, d, spread, 0.0, s2);
            double z[40] = { 0 };
            fl_fd_result r = gauss_fd(d, z, s1, z, s2);
            double want = trace_sqrt_jacobi(d, s1, s2), scale = 0.0;
            for (int j = 0; j < d; j++)
                scale += s1[j * d + j] + s2[j * d + j];
            double e_tr = rel(r.tr_sqrt, want), e_fd = fabs(r.fd - fmax(0.0, scale - 2.0 * want)) / scale;
            worst_tr = fmax(worst_tr, e_tr);
            worst_fd = fmax(worst_fd, e_fd);
            /* the problem itself is conditioned at about eps sqrt(cond) = 2e-10 for the
             * worst pairs here, so 1e-9 leaves room; the target is 1e-8 */
            if (e_tr > 1e-9 || e_fd > 1e-9)
                fail_msg("d = %d rep %d: tr sqrt %.17g vs %.17g (rel %.2e), FD error %.2e of tr S_a + tr S_b",
                         d, rep, r.tr_sqrt, want, e_tr, e_fd);
            free(s1);
            free(s2);
        }
    printf("  ill-conditioned vs long-double Jacobi: tr sqrt %.2e relative, FD %.2e of tr S_a + tr S_b\n",
           worst_tr, worst_fd);
}

/* ---- the accumulator ---------------------------------------------------------------- */

/* Two-pass mean and co-moment in long double: the reference for the streaming sums. */
static void two_pass(const double *x, int64_t n, int d, double *mean, double *m2)
{
    for (int j = 0; j < d; j++) {
        ld acc = 0;
        for (int64_t i = 0; i < n; i++)
            acc += x[i * d + j];
        mean[j] = (double)(acc / n);
    }
    for (int j = 0; j < d; j++)
        for (int k = 0; k < d; k++) {
            ld acc = 0, mj = 0, mk = 0;
            for (int64_t i = 0; i < n; i++) {
                mj += x[i * d + j];
                mk += x[i * d + k];
            }
            mj /= n;
            mk /= n;
            for (int64_t i = 0; i < n; i++)
                acc += ((ld)x[i * d + j] - mj) * ((ld)x[i * d + k] - mk);
            m2[j * d + k] = (double)acc;
        }
}

static double *random_features(uint64_t *s, int64_t n, int d, double offset, double scale)
{
    double *x = xcalloc((size_t)n * d, sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        double common = nrand(s);
        for (int j = 0; j < d; j++)
            x[i * d + j] = offset + scale * (nrand(s) + 0.5 * common * (j % 3)) + 0.1 * j;
    }
    return x;
}

static double max_rel_matrix(const double *a, const double *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / den;
}

/* Features with a common offset of 1e6 and unit spread: raw sums of squares would lose
 * 12 of 16 digits; the centred block updates must not. */
static void test_accumulator_against_two_pass(void **state)
{
    (void)state;
    uint64_t seed = 99;
    const int d = 7;
    const int64_t n = 1500; /* three blocks, the last one short */
    fl_error err;
    for (int k = 0; k < 2; k++) {
        double offset = k ? 1e6 : 0.0;
        double *x = random_features(&seed, n, d, offset, 1.0);
        fl_fd_protocol p = proto(d);
        fl_fd_stats *s = NULL;
        expect_ok(fl_fd_stats_new(&p, NULL, &s, &err), &err, "new");
        expect_ok(fl_fd_stats_add_f64(s, x, n, &err), &err, "add");
        double mean[7], m2[49], got[49];
        two_pass(x, n, d, mean, m2);
        fl_fd_stats_comoment(s, got);
        assert_int_equal(fl_fd_stats_count(s), n);
        double em = 0.0;
        for (int j = 0; j < d; j++)
            em = fmax(em, fabs(fl_fd_stats_mean(s)[j] - mean[j]) / fmax(1.0, fabs(mean[j])));
        double ec = max_rel_matrix(got, m2, 49);
        printf("  offset %g: mean error %.2e (relative to max(1, |mean|)), co-moment error %.2e\n", offset,
               em, ec);
        assert_true(em < 1e-15 * fmax(1.0, offset));
        assert_true(ec < (k ? 1e-9 : 1e-13));
        /* symmetric covariance, both estimators */
        double c1[49], c0[49];
        expect_ok(fl_fd_stats_cov(s, 1, c1, &err), &err, "cov");
        expect_ok(fl_fd_stats_cov(s, 0, c0, &err), &err, "cov0");
        for (int i = 0; i < 49; i++) {
            assert_true(c1[i] == c1[(i % 7) * 7 + i / 7]);
            assert_true(rel(c0[i] * (double)n, c1[i] * (double)(n - 1)) < 1e-14 || fabs(c0[i]) < 1e-300);
        }
        fl_fd_stats_free(s);
        free(x);
    }
}

/* Shards merged (and added in odd-sized pieces) equal one pass to round-off. */
static void test_merge_equals_one_pass(void **state)
{
    (void)state;
    uint64_t seed = 5;
    const int d = 9;
    const int64_t n = 1300, cuts[] = { 1, 513, 700 };
    double *x = random_features(&seed, n, d, 50.0, 2.0);
    double *y = random_features(&seed, 900, d, 49.0, 2.5);
    fl_fd_protocol p = proto(d);
    fl_error err;
    fl_fd_stats *one = NULL, *merged = NULL, *piece = NULL, *other = NULL;
    expect_ok(fl_fd_stats_new(&p, NULL, &one, &err), &err, "new");
    expect_ok(fl_fd_stats_new(&p, NULL, &merged, &err), &err, "new");
    expect_ok(fl_fd_stats_new(&p, NULL, &other, &err), &err, "new");
    expect_ok(fl_fd_stats_add_f64(one, x, n, &err), &err, "add");
    expect_ok(fl_fd_stats_add_f64(other, y, 900, &err), &err, "add");
    int64_t at = 0;
    for (size_t c = 0; c <= sizeof cuts / sizeof cuts[0]; c++) {
        int64_t len = c < sizeof cuts / sizeof cuts[0] ? cuts[c] : n - at;
        expect_ok(fl_fd_stats_new(&p, NULL, &piece, &err), &err, "new");
        /* each shard itself in two adds */
        expect_ok(fl_fd_stats_add_f64(piece, x + at * d, len / 2, &err), &err, "add");
        expect_ok(fl_fd_stats_add_f64(piece, x + (at + len / 2) * d, len - len / 2, &err), &err, "add");
        expect_ok(fl_fd_stats_merge(merged, piece, &err), &err, "merge");
        fl_fd_stats_free(piece);
        at += len;
    }
    assert_int_equal(fl_fd_stats_count(merged), n);
    double a[81], b[81];
    fl_fd_stats_comoment(one, a);
    fl_fd_stats_comoment(merged, b);
    double ec = max_rel_matrix(b, a, 81), em = 0.0;
    for (int j = 0; j < d; j++)
        em = fmax(em, rel(fl_fd_stats_mean(merged)[j], fl_fd_stats_mean(one)[j]));
    fl_fd_result r1, r2;
    expect_ok(fl_fd_distance(one, other, NULL, &r1, &err), &err, "fd");
    expect_ok(fl_fd_distance(merged, other, NULL, &r2, &err), &err, "fd");
    printf("  merge vs one pass: mean %.2e, co-moment %.2e, FD %.2e (relative)\n", em, ec, rel(r2.fd, r1.fd));
    assert_true(em < 1e-14);
    assert_true(ec < 1e-12);
    assert_true(rel(r2.fd, r1.fd) < 1e-10);
    /* merging an empty accumulator changes nothing */
    fl_fd_stats *empty = NULL;
    expect_ok(fl_fd_stats_new(&p, NULL, &empty, &err), &err, "new");
    expect_ok(fl_fd_stats_merge(merged, empty, &err), &err, "merge empty");
    assert_int_equal(fl_fd_stats_count(merged), n);
    fl_fd_stats_free(empty);
    fl_fd_stats_free(one);
    fl_fd_stats_free(merged);
    fl_fd_stats_free(other);
    free(x);
    free(y);
}

/* The distance from samples against a float64 computation done here: two-pass moments
 * and the Denman-Beavers trace. Also FD(A, A) = 0 and the tensor path with strides. */
static void test_distance_from_samples(void **state)
{
    (void)state;
    uint64_t seed = 31;
    const int d = 16;
    const int64_t n = 2000;
    double *x = random_features(&seed, n, d, 0.0, 1.0), *y = random_features(&seed, n, d, 0.2, 1.3);
    fl_fd_protocol p = proto(d);
    fl_error err;
    fl_fd_stats *a = NULL, *b = NULL;
    expect_ok(fl_fd_stats_new(&p, NULL, &a, &err), &err, "new");
    expect_ok(fl_fd_stats_new(&p, NULL, &b, &err), &err, "new");
    expect_ok(fl_fd_stats_add_f64(a, x, n, &err), &err, "add");
    /* b through a transposed tensor view: [n, d] values stored column-major */
    int64_t shape[2] = { d, n };
    fl_tensor t = FL_TENSOR_NULL, tt = FL_TENSOR_NULL;
    expect_ok(fl_tensor_empty(&t, FL_F64, 2, shape, NULL, &err), &err, "empty");
    double *td = fl_tensor_data(&t);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            td[j * n + i] = y[i * d + j];
    expect_ok(fl_tensor_transpose(&tt, &t, 0, 1, &err), &err, "transpose");
    expect_ok(fl_fd_stats_add(b, &tt, &err), &err, "add tensor");
    fl_tensor_release(&tt);
    fl_tensor_release(&t);
    fl_fd_result r;
    expect_ok(fl_fd_distance(a, b, NULL, &r, &err), &err, "fd");
    double ma[16], mb[16], ca[256], cb[256];
    two_pass(x, n, d, ma, ca);
    two_pass(y, n, d, mb, cb);
    double want = 0.0;
    for (int j = 0; j < d; j++) {
        want += (ma[j] - mb[j]) * (ma[j] - mb[j]);
        for (int k = 0; k < d; k++) {
            ca[j * d + k] /= (double)(n - 1);
            cb[j * d + k] /= (double)(n - 1);
        }
        want += ca[j * d + j] + cb[j * d + j];
    }
    want -= 2.0 * trace_sqrt_db(d, ca, cb);
    printf("  FD from samples: %.15g, independent float64/long double: %.15g (rel %.2e)\n", r.fd, want,
           rel(r.fd, want));
    assert_true(rel(r.fd, want) < 1e-8);
    assert_int_equal(r.n_a, n);
    assert_int_equal(r.ddof, 1);
    assert_int_equal(r.warnings, 0);
    /* FD(A, A): zero to round-off */
    expect_ok(fl_fd_distance(a, a, NULL, &r, &err), &err, "fd self");
    double tr = 0.0;
    for (int j = 0; j < d; j++)
        tr += ca[j * d + j];
    printf("  FD(A, A) = %.3e (tr S = %.3g)\n", r.fd, tr);
    assert_true(r.fd >= 0.0 && r.fd < 1e-10 * tr);
    fl_fd_stats_free(a);
    fl_fd_stats_free(b);
    free(x);
    free(y);
}

/* Rank-deficient covariances: finite and non-negative; closed form when one is zero. */
static void test_degenerate(void **state)
{
    (void)state;
    uint64_t seed = 3;
    const int d = 20;
    fl_error err;
    fl_fd_protocol p = proto(d);
    /* N = 5 < D: rank 4 */
    double *x = random_features(&seed, 5, d, 0.0, 1.0), *y = random_features(&seed, 7, d, 1.0, 1.0);
    fl_fd_stats *a = NULL, *b = NULL;
    expect_ok(fl_fd_stats_new(&p, NULL, &a, &err), &err, "new");
    expect_ok(fl_fd_stats_new(&p, NULL, &b, &err), &err, "new");
    expect_ok(fl_fd_stats_add_f64(a, x, 5, &err), &err, "add");
    expect_ok(fl_fd_stats_add_f64(b, y, 7, &err), &err, "add");
    fl_fd_result r;
    expect_ok(fl_fd_distance(a, b, NULL, &r, &err), &err, "fd");
    assert_true(isfinite(r.fd) && r.fd >= 0.0);
    assert_true((r.warnings & FL_FD_WARN_FEW_A) && (r.warnings & FL_FD_WARN_FEW_B));
    assert_non_null(strstr(r.warning, "fewer than 2 D = 40"));
    expect_ok(fl_fd_distance(a, a, NULL, &r, &err), &err, "fd self");
    double ca[400];
    expect_ok(fl_fd_stats_cov(a, 1, ca, &err), &err, "cov");
    double tr = 0.0;
    for (int j = 0; j < d; j++)
        tr += ca[j * d + j];
    printf("  rank-deficient FD(A, A) = %.3e (tr S = %.3g)\n", r.fd, tr);
    assert_true(r.fd >= 0.0 && r.fd < 1e-12 * tr);
    /* S1 = 0 exactly: FD = |dmu|^2 + tr S2 */
    double z[400] = { 0 }, mu1[20] = { 0 }, mu2[20], s2[400];
    random_spd(&seed, d, 5.0, 0.0, s2);
    double want = 0.0;
    for (int j = 0; j < d; j++) {
        mu2[j] = 0.1 * j;
        want += mu2[j] * mu2[j] + s2[j * d + j];
    }
    r = gauss_fd(d, mu1, z, mu2, s2);
    assert_true(rel(r.fd, want) < 1e-13);
    /* rank-one covariances pointing different ways */
    double u[20], v[20], ru[400], rv[400];
    for (int j = 0; j < d; j++) {
        u[j] = nrand(&seed);
        v[j] = nrand(&seed);
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            ru[i * d + j] = u[i] * u[j];
            rv[i * d + j] = v[i] * v[j];
        }
    /* tr sqrt(u u^T v v^T) = |u.v| */
    double uv = 0.0, uu = 0.0, vv = 0.0;
    for (int j = 0; j < d; j++) {
        uv += u[j] * v[j];
        uu += u[j] * u[j];
        vv += v[j] * v[j];
    }
    r = gauss_fd(d, mu1, ru, mu1, rv);
    assert_true(isfinite(r.fd) && r.fd >= 0.0);
    printf("  rank one: tr sqrt %.12g, |u.v| = %.12g\n", r.tr_sqrt, fabs(uv));
    /* exact to round-off: the singular values of A S2^(1/2) do not square the condition
     * number, where the eigenvalues of A S2 A gave 5e-8 here (fd.c) */
    assert_true(fabs(r.tr_sqrt - fabs(uv)) < 1e-12 * sqrt(uu * vv));
    fl_fd_stats_free(a);
    fl_fd_stats_free(b);
    free(x);
    free(y);
}

static void test_errors(void **state)
{
    (void)state;
    fl_error err;
    fl_fd_protocol p = proto(3);
    fl_fd_stats *s = NULL, *t = NULL;
    p.dim = 0;
    assert_int_equal(fl_fd_stats_new(&p, NULL, &s, &err), FL_E_RANGE);
    expect_msg(&err, "dim must be in [1,");
    p.dim = 3;
    expect_ok(fl_fd_stats_new(&p, NULL, &s, &err), &err, "new");
    double rows[6] = { 1, 2, 3, 4, NAN, 6 };
    assert_int_equal(fl_fd_stats_add_f64(s, rows, 2, &err), FL_E_NUMERIC);
    expect_msg(&err, "row 1, column 1 is not finite");
    assert_int_equal(fl_fd_stats_count(s), 0); /* nothing added */
    rows[4] = 5;
    expect_ok(fl_fd_stats_add_f64(s, rows, 1, &err), &err, "add one");
    /* one sample: no covariance */
    fl_fd_result r;
    assert_int_equal(fl_fd_distance(s, s, NULL, &r, &err), FL_E_INVALID);
    expect_msg(&err, "set a has 1 samples");
    fl_fd_opts o0 = { 0 };
    expect_ok(fl_fd_distance(s, s, &o0, &r, &err), &err, "ddof 0 with one sample");
    fl_fd_opts o2 = { 2 };
    assert_int_equal(fl_fd_distance(s, s, &o2, &r, &err), FL_E_INVALID);
    /* wrong tensors */
    int64_t shape[2] = { 2, 4 };
    fl_tensor x = FL_TENSOR_NULL;
    expect_ok(fl_tensor_zeros(&x, FL_F32, 2, shape, NULL, &err), &err, "zeros");
    assert_int_equal(fl_fd_stats_add(s, &x, &err), FL_E_SHAPE);
    expect_msg(&err, "expected 3 features per row");
    fl_tensor_release(&x);
    expect_ok(fl_tensor_zeros(&x, FL_I32, 2, shape, NULL, &err), &err, "zeros");
    assert_int_equal(fl_fd_stats_add(s, &x, &err), FL_E_DTYPE);
    fl_tensor_release(&x);
    /* protocols that differ are refused, naming the field */
    fl_fd_protocol q = p;
    snprintf(q.extractor, sizeof q.extractor, "other-net");
    expect_ok(fl_fd_stats_new(&q, NULL, &t, &err), &err, "new");
    assert_int_equal(fl_fd_stats_merge(s, t, &err), FL_E_INVALID);
    expect_msg(&err, "'extractor' differs");
    expect_msg(&err, "\"other-net\"");
    assert_int_equal(fl_fd_distance(s, t, &o0, &r, &err), FL_E_INVALID);
    expect_msg(&err, "'extractor'");
    fl_fd_stats_free(t);
    q = p;
    q.clip_len = 8;
    expect_ok(fl_fd_stats_new(&q, NULL, &t, &err), &err, "new");
    assert_int_equal(fl_fd_stats_merge(s, t, &err), FL_E_INVALID);
    expect_msg(&err, "'clip_len' differs");
    fl_fd_stats_free(t);
    q = p;
    snprintf(q.resize, sizeof q.resize, "bilinear-224");
    expect_ok(fl_fd_stats_new(&q, NULL, &t, &err), &err, "new");
    assert_int_equal(fl_fd_distance(s, t, &o0, &r, &err), FL_E_INVALID);
    expect_msg(&err, "'resize' differs");
    fl_fd_stats_free(t);
    /* non-finite covariance into the Gaussian form */
    double mu[1] = { 0 }, bad[1] = { INFINITY }, one[1] = { 1 };
    assert_int_equal(fl_fd_gaussian(1, mu, bad, 0, mu, one, 0, NULL, &r, &err), FL_E_NUMERIC);
    expect_msg(&err, "covariance a");
    fl_fd_stats_free(s);
}

/* The protocol's sample count is checked by the distance. */
static void test_sample_count_warning(void **state)
{
    (void)state;
    uint64_t seed = 8;
    fl_fd_protocol p = proto(2);
    p.samples = 100;
    fl_error err;
    fl_fd_stats *a = NULL, *b = NULL;
    double *x = random_features(&seed, 100, 2, 0, 1), *y = random_features(&seed, 90, 2, 0, 1);
    expect_ok(fl_fd_stats_new(&p, NULL, &a, &err), &err, "new");
    expect_ok(fl_fd_stats_new(&p, NULL, &b, &err), &err, "new");
    expect_ok(fl_fd_stats_add_f64(a, x, 100, &err), &err, "add");
    expect_ok(fl_fd_stats_add_f64(b, y, 90, &err), &err, "add");
    fl_fd_result r;
    expect_ok(fl_fd_distance(a, b, NULL, &r, &err), &err, "fd");
    assert_int_equal(r.warnings, FL_FD_WARN_SAMPLES);
    assert_non_null(strstr(r.warning, "fixes 100 samples per set, a has 100 and b 90"));
    fl_fd_stats_free(a);
    fl_fd_stats_free(b);
    free(x);
    free(y);
}

/* Every allocation of new/add/merge/distance/save/load failing in turn. */
static void test_allocation_failures(void **state)
{
    (void)state;
    uint64_t seed = 77;
    const int d = 5;
    double *x = random_features(&seed, 600, d, 1.0, 1.0);
    fl_fd_protocol p = proto(d);
    int succeeded = 0;
    for (long k = 0; k < 200 && !succeeded; k++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, k);
        fl_error err;
        fl_fd_stats *a = NULL, *b = NULL;
        fl_fd_result r;
        fl_status st = fl_fd_stats_new(&p, &fa.iface, &a, &err);
        if (!st)
            st = fl_fd_stats_new(&p, &fa.iface, &b, &err);
        if (!st)
            st = fl_fd_stats_add_f64(a, x, 600, &err);
        if (!st)
            st = fl_fd_stats_add_f64(b, x, 300, &err);
        if (!st)
            st = fl_fd_stats_merge(b, a, &err);
        if (!st)
            st = fl_fd_distance(a, b, NULL, &r, &err);
        fl_mmd_result mr;
        if (!st)
            st = fl_mmd(x, 300, x + 300 * d, 300, d, NULL, &fa.iface, &mr, &err);
        if (st) {
            assert_int_equal(st, FL_E_NOMEM);
            expect_msg(&err, "out of memory");
        } else
            succeeded = 1;
        fl_fd_stats_free(a);
        fl_fd_stats_free(b);
        assert_int_equal(fa.live_blocks, 0);
    }
    assert_true(succeeded);
    free(x);
}

/* ---- HDF5 ---------------------------------------------------------------------------- */

static char tmpdir[64];

static void path_in_tmp(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static void test_save_load_round_trip(void **state)
{
    (void)state;
    uint64_t seed = 12;
    const int d = 6;
    double *x = random_features(&seed, 777, d, 3.0, 1.0);
    fl_fd_protocol p = proto(d);
    p.samples = 777;
    fl_error err;
    fl_fd_stats *s = NULL, *t = NULL;
    expect_ok(fl_fd_stats_new(&p, NULL, &s, &err), &err, "new");
    expect_ok(fl_fd_stats_add_f64(s, x, 777, &err), &err, "add");
    char path[128];
    path_in_tmp(path, sizeof path, "stats.h5");
    expect_ok(fl_fd_stats_save_file(s, path, "/stats/real", &err), &err, "save");
    /* saving again replaces the group; a second group lives beside it */
    expect_ok(fl_fd_stats_save_file(s, path, "/stats/real", &err), &err, "save again");
    expect_ok(fl_fd_stats_save_file(s, path, "/stats/copy", &err), &err, "save copy");
    expect_ok(fl_fd_stats_load_file(path, "/stats/real", &p, NULL, &t, &err), &err, "load");
    assert_int_equal(fl_fd_stats_count(t), 777);
    assert_memory_equal(fl_fd_stats_mean(t), fl_fd_stats_mean(s), d * sizeof(double));
    double a[36], b[36];
    fl_fd_stats_comoment(s, a);
    fl_fd_stats_comoment(t, b);
    assert_memory_equal(a, b, sizeof a);
    const fl_fd_protocol *q = fl_fd_stats_protocol(t);
    assert_string_equal(q->extractor, "test-features");
    assert_string_equal(q->resize, "none");
    assert_int_equal(q->clip_len, 16);
    assert_int_equal(q->samples, 777);
    fl_fd_stats_free(t);
    /* an expected protocol that differs is refused, naming the field */
    fl_fd_protocol other = p;
    other.clip_len = 32;
    assert_int_equal(fl_fd_stats_load_file(path, "/stats/real", &other, NULL, &t, &err), FL_E_INVALID);
    expect_msg(&err, "'clip_len' differs");
    assert_null(t);
    assert_int_equal(fl_fd_stats_load_file(path, "/stats/none", NULL, NULL, &t, &err), FL_E_FORMAT);
    expect_msg(&err, "/stats/none: no such group");
    char missing[128];
    path_in_tmp(missing, sizeof missing, "missing.h5");
    assert_int_equal(fl_fd_stats_load_file(missing, "/x", NULL, NULL, &t, &err), FL_E_IO);
    expect_msg(&err, "missing.h5: cannot open");
    /* h5py reads what we wrote (when Debian's python3-h5py is installed) */
    if (access("/usr/bin/python3", X_OK) == 0 &&
        system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c \"import h5py, numpy as np, sys\n"
                 "g = h5py.File('%s', 'r')['/stats/real']\n"
                 "c = g['comoment'][:] / (g.attrs['count'] - 1)\n"
                 "ok = g.attrs['format'] == 'fifolab.fd_stats' and g.attrs['extractor'] == 'test-features' "
                 "and g['mean'].shape == (6,) and np.allclose(g['cov'][:], c, rtol=1e-15, atol=0) "
                 "and g.attrs['dim'] == 6 and g.attrs['clip_len'] == 16\n"
                 "sys.exit(0 if ok else 1)\"",
                 path);
        assert_int_equal(system(cmd), 0);
    }
    fl_fd_stats_free(s);
    free(x);
}

/* Statistics written by someone else: mean, cov and an integer count only. */
static void test_load_foreign_stats(void **state)
{
    (void)state;
    char path[128];
    path_in_tmp(path, sizeof path, "foreign.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t g = H5Gcreate2(f, "ref", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    double mean[2] = { 1.0, -2.0 }, cov[4] = { 2.0, 0.5, 0.5, 1.0 };
    hsize_t d1[1] = { 2 }, d2[2] = { 2, 2 };
    hid_t sp = H5Screate_simple(1, d1, NULL);
    hid_t ds = H5Dcreate2(g, "mean", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, mean);
    H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate_simple(2, d2, NULL);
    ds = H5Dcreate2(g, "cov", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, cov);
    H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate(H5S_SCALAR);
    int32_t count = 101;
    hid_t at = H5Acreate2(g, "count", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(at, H5T_NATIVE_INT32, &count);
    H5Aclose(at);
    /* a fixed-length string attribute, as some writers make */
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, 4);
    at = H5Acreate2(g, "resize", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(at, st, "none");
    H5Aclose(at);
    H5Tclose(st);
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
    fl_error err;
    fl_fd_stats *s = NULL;
    expect_ok(fl_fd_stats_load_file(path, "ref", NULL, NULL, &s, &err), &err, "load foreign");
    assert_int_equal(fl_fd_stats_count(s), 101);
    assert_string_equal(fl_fd_stats_protocol(s)->resize, "none");
    assert_string_equal(fl_fd_stats_protocol(s)->extractor, "");
    double c[4];
    expect_ok(fl_fd_stats_cov(s, 1, c, &err), &err, "cov");
    for (int i = 0; i < 4; i++)
        assert_true(rel(c[i], cov[i]) < 1e-15);
    assert_true(fl_fd_stats_mean(s)[1] == -2.0);
    fl_fd_stats_free(s);
}

/* ---- MMD ----------------------------------------------------------------------------- */

/* E k(x, y) for x ~ N(m1, S1), y ~ N(m2, S2) independent, k = (x.y / d + 1)^3, from the
 * Gaussian moments: E(x.y) = a, E(x.y)^2 = a^2 + s + m1'S2 m1 + tr(S1 S2),
 * E(x.y)^3 = a^3 + 3 a s + 3 [a (m1'S2 m1 + tr(S1 S2)) + 2 m2'S1 S2 m1], with a = m1.m2,
 * s = m2'S1 m2 (S diagonal here). */
static double expected_kernel(int d, const double *m1, const double *v1, const double *m2, const double *v2)
{
    double a = 0, s = 0, q = 0, tr = 0, c = 0;
    for (int i = 0; i < d; i++) {
        a += m1[i] * m2[i];
        s += m2[i] * v1[i] * m2[i];
        q += m1[i] * v2[i] * m1[i];
        tr += v1[i] * v2[i];
        c += m2[i] * v1[i] * v2[i] * m1[i];
    }
    double e1 = a, e2 = a * a + s + q + tr, e3 = a * a * a + 3 * a * s + 3 * (a * (q + tr) + 2 * c);
    double dd = d;
    return e3 / (dd * dd * dd) + 3 * e2 / (dd * dd) + 3 * e1 / dd + 1;
}

static void sample_gauss(uint64_t *s, int n, int d, const double *m, const double *v, double *x)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            x[i * d + j] = m[j] + sqrt(v[j]) * nrand(s);
}

/* Unbiased: over many independent draws the estimates average to the population MMD^2,
 * 0 for one distribution (so some estimates are negative), positive for a shift. */
static void test_mmd_unbiased(void **state)
{
    (void)state;
    enum { D = 3, N = 60, M = 45, K = 300 };
    double m0[D] = { 0.2, -0.1, 0.0 }, v0[D] = { 1.0, 0.5, 2.0 };
    double m1[D] = { 0.7, -0.1, 0.3 }, v1[D] = { 1.2, 0.5, 1.5 };
    double pop_same = 0.0;
    double pop_shift = expected_kernel(D, m0, v0, m0, v0) + expected_kernel(D, m1, v1, m1, v1) -
                       2.0 * expected_kernel(D, m0, v0, m1, v1);
    uint64_t seed = 4242;
    double *x = xcalloc(N * D, sizeof(double)), *y = xcalloc(M * D, sizeof(double));
    double sum[2] = { 0, 0 }, sum2[2] = { 0, 0 };
    int negative = 0;
    for (int k = 0; k < K; k++)
        for (int c = 0; c < 2; c++) {
            sample_gauss(&seed, N, D, m0, v0, x);
            sample_gauss(&seed, M, D, c ? m1 : m0, c ? v1 : v0, y);
            fl_mmd_result r;
            fl_error err;
            expect_ok(fl_mmd(x, N, y, M, D, NULL, NULL, &r, &err), &err, "mmd");
            sum[c] += r.mmd2;
            sum2[c] += r.mmd2 * r.mmd2;
            negative += c == 0 && r.mmd2 < 0;
        }
    for (int c = 0; c < 2; c++) {
        double mean = sum[c] / K, sd = sqrt(sum2[c] / K - mean * mean), se = sd / sqrt((double)K);
        double pop = c ? pop_shift : pop_same;
        printf("  MMD^2 %s: mean of %d estimates %.5f +- %.5f (population %.5f)\n", c ? "shifted" : "same", K,
               mean, se, pop);
        assert_true(fabs(mean - pop) < 4.0 * se);
    }
    assert_true(pop_shift > 0.05);
    assert_true(negative > K / 10); /* the biased estimator would never go below 0 */
    free(x);
    free(y);
}

/* Whole-set value against a direct double sum; subsets are deterministic and spread. */
static void test_mmd_direct_and_subsets(void **state)
{
    (void)state;
    enum { D = 4, N = 300, M = 280 };
    uint64_t seed = 17;
    double m0[D] = { 0 }, m1[D] = { 0.3, 0, 0, 0 }, v[D] = { 1, 1, 1, 1 };
    double *x = xcalloc(N * D, sizeof(double)), *y = xcalloc(M * D, sizeof(double));
    sample_gauss(&seed, N, D, m0, v, x);
    sample_gauss(&seed, M, D, m1, v, y);
    ld kxx = 0, kyy = 0, kxy = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i != j) {
                ld dot = 0;
                for (int k = 0; k < D; k++)
                    dot += (ld)x[i * D + k] * x[j * D + k];
                ld t = dot / D + 1;
                kxx += t * t * t;
            }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++)
            if (i != j) {
                ld dot = 0;
                for (int k = 0; k < D; k++)
                    dot += (ld)y[i * D + k] * y[j * D + k];
                ld t = dot / D + 1;
                kyy += t * t * t;
            }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < M; j++) {
            ld dot = 0;
            for (int k = 0; k < D; k++)
                dot += (ld)x[i * D + k] * y[j * D + k];
            ld t = dot / D + 1;
            kxy += t * t * t;
        }
    double want = (double)(kxx / ((ld)N * (N - 1)) + kyy / ((ld)M * (M - 1)) - 2 * kxy / ((ld)N * M));
    fl_mmd_result r, r2;
    fl_error err;
    expect_ok(fl_mmd(x, N, y, M, D, NULL, NULL, &r, &err), &err, "mmd");
    printf("  MMD^2 whole sets %.15g, direct long-double sum %.15g\n", r.mmd2, want);
    assert_true(fabs(r.mmd2 - want) < 1e-12 * 8.0); /* kernel values are O(1..10) */
    assert_int_equal(r.subsets, 0);
    fl_mmd_opts o = { 20, 100, 5 };
    expect_ok(fl_mmd(x, N, y, M, D, &o, NULL, &r, &err), &err, "mmd subsets");
    expect_ok(fl_mmd(x, N, y, M, D, &o, NULL, &r2, &err), &err, "mmd subsets again");
    assert_true(r.mmd2 == r2.mmd2 && r.std == r2.std);
    assert_int_equal(r.subsets, 20);
    assert_int_equal(r.subset_size, 100);
    assert_true(r.std > 0.0 && fabs(r.mmd2 - want) < 4.0 * r.std);
    o.seed = 6;
    expect_ok(fl_mmd(x, N, y, M, D, &o, NULL, &r2, &err), &err, "mmd other seed");
    assert_true(r.mmd2 != r2.mmd2);
    /* errors */
    o.subset_size = 500;
    assert_int_equal(fl_mmd(x, N, y, M, D, &o, NULL, &r, &err), FL_E_RANGE);
    expect_msg(&err, "subset_size must be in [2, 280]");
    assert_int_equal(fl_mmd(x, 1, y, M, D, NULL, NULL, &r, &err), FL_E_INVALID);
    expect_msg(&err, "set a has 1 samples");
    y[5] = NAN;
    assert_int_equal(fl_mmd(x, N, y, M, D, NULL, NULL, &r, &err), FL_E_NUMERIC);
    expect_msg(&err, "set b, row 1, column 1");
    free(x);
    free(y);
}

/* ---- the command line ---------------------------------------------------------------- */

static void write_matrix(const char *path, const char *name, int64_t rows, int64_t cols, const double *data,
                         int f32, const char *extractor)
{
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    hsize_t dims[2] = { (hsize_t)rows, (hsize_t)cols };
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t ds =
        H5Dcreate2(f, name, f32 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(ds >= 0);
    assert_true(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    if (extractor) {
        hid_t t = H5Tcopy(H5T_C_S1), s1 = H5Screate(H5S_SCALAR);
        H5Tset_size(t, H5T_VARIABLE);
        hid_t at = H5Acreate2(ds, "extractor", t, s1, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(at, t, &extractor);
        H5Aclose(at);
        H5Sclose(s1);
        H5Tclose(t);
    }
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
}

static char cli_out[8192], cli_err[8192];

/* Runs fl_cmd_fd with stdout and stderr captured into cli_out / cli_err. */
static int run_cli(int argc, const char **argv)
{
    fflush(stdout);
    fflush(stderr);
    FILE *fo = tmpfile(), *fe = tmpfile();
    assert_non_null(fo);
    assert_non_null(fe);
    int so = dup(1), se = dup(2);
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    int rc = fl_cmd_fd(argc, (char **)argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    rewind(fo);
    rewind(fe);
    size_t n = fread(cli_out, 1, sizeof cli_out - 1, fo);
    cli_out[n] = '\0';
    n = fread(cli_err, 1, sizeof cli_err - 1, fe);
    cli_err[n] = '\0';
    fclose(fo);
    fclose(fe);
    return rc;
}

static void expect_cli(int want, const char *out_needle, const char *err_needle, int argc, const char **argv)
{
    int rc = run_cli(argc, argv);
    if (rc != want)
        fail_msg("fifolab fd %s %s: exit %d, expected %d\nstdout: %s\nstderr: %s", argc > 1 ? argv[1] : "",
                 argc > 2 ? argv[2] : "", rc, want, cli_out, cli_err);
    if (out_needle && !strstr(cli_out, out_needle))
        fail_msg("stdout lacks \"%s\":\n%s", out_needle, cli_out);
    if (err_needle && !strstr(cli_err, err_needle))
        fail_msg("stderr lacks \"%s\":\n%s", err_needle, cli_err);
}

static void test_cli(void **state)
{
    (void)state;
    uint64_t seed = 55;
    const int d = 4;
    double *x = random_features(&seed, 400, d, 0.0, 1.0), *y = random_features(&seed, 300, d, 0.5, 1.2);
    char path[128], other[128], spec_a[160], spec_b[160], spec[160];
    path_in_tmp(path, sizeof path, "feat.h5");
    path_in_tmp(other, sizeof other, "feat2.h5");
    remove(path);
    remove(other);
    write_matrix(path, "real", 400, d, x, 1, NULL);
    write_matrix(path, "fake", 300, d, y, 0, NULL);
    write_matrix(path, "few", 5, d, y, 0, NULL);
    write_matrix(path, "wide", 10, d + 1, y, 0, NULL);
    write_matrix(other, "tagged", 300, d, y, 0, "i3d");
    snprintf(spec_a, sizeof spec_a, "%s:/real", path);
    snprintf(spec_b, sizeof spec_b, "%s:/fake", path);

    /* the printed distance is the library's on the same (float32-rounded) values */
    fl_fd_protocol p = proto(d);
    p.extractor[0] = p.resize[0] = '\0';
    p.clip_len = 0;
    fl_error err;
    fl_fd_stats *a = NULL, *b = NULL;
    float *xf = xcalloc(400 * d, sizeof(float));
    for (int i = 0; i < 400 * d; i++)
        xf[i] = (float)x[i];
    expect_ok(fl_fd_stats_new(&p, NULL, &a, &err), &err, "new");
    expect_ok(fl_fd_stats_new(&p, NULL, &b, &err), &err, "new");
    expect_ok(fl_fd_stats_add_f32(a, xf, 400, &err), &err, "add");
    expect_ok(fl_fd_stats_add_f64(b, y, 300, &err), &err, "add");
    fl_fd_result r;
    expect_ok(fl_fd_distance(a, b, NULL, &r, &err), &err, "fd");
    char want[64];
    snprintf(want, sizeof want, "fd     %.10g\n", r.fd);
    const char *args[] = { "fd", spec_a, spec_b, NULL, NULL, NULL, NULL, NULL };
    expect_cli(0, want, NULL, 3, args);
    assert_non_null(strstr(cli_out, "400 x 4 float32"));
    assert_non_null(strstr(cli_out, "300 x 4 float64"));
    assert_string_equal(cli_err, "");

    /* stats saved by the library stand in for a dataset */
    expect_ok(fl_fd_stats_save_file(a, other, "/stats/real", &err), &err, "save");
    snprintf(spec, sizeof spec, "%s:/stats/real", other);
    args[1] = spec;
    expect_cli(0, want, NULL, 3, args);
    assert_non_null(strstr(cli_out, "400 samples, D = 4 (FD statistics)"));
    args[1] = spec_a;

    /* --mmd */
    fl_mmd_result mr;
    double *xd = xcalloc(400 * d, sizeof(double));
    for (int i = 0; i < 400 * d; i++)
        xd[i] = xf[i];
    expect_ok(fl_mmd(xd, 400, y, 300, d, NULL, NULL, &mr, &err), &err, "mmd");
    snprintf(want, sizeof want, "mmd2   %.10g", mr.mmd2);
    args[3] = "--mmd";
    expect_cli(0, want, NULL, 4, args);
    args[4] = "--subsets";
    args[5] = "5";
    expect_cli(0, "over 5 subsets of 300", NULL, 6, args);
    args[1] = spec;
    expect_cli(1, NULL, "--mmd needs feature vectors", 4, args);
    args[1] = spec_a;

    /* warnings, mismatches and bad inputs: one line naming the input */
    snprintf(spec, sizeof spec, "%s:/few", path);
    args[2] = spec;
    expect_cli(0, "fd ", "warning: b has 5 samples for dimension 4", 3, args);
    snprintf(spec, sizeof spec, "%s:/wide", path);
    expect_cli(1, NULL, "dimensions differ", 3, args);
    snprintf(spec, sizeof spec, "%s:/tagged", other);
    expect_cli(1, NULL, "'extractor' differs", 3, args);
    snprintf(spec, sizeof spec, "%s:/nothing", path);
    expect_cli(1, NULL, ":/nothing: no such dataset or group", 3, args);
    snprintf(spec, sizeof spec, "%s/none.h5:/x", tmpdir);
    expect_cli(1, NULL, "none.h5: cannot open", 3, args);
    snprintf(spec, sizeof spec, "%s:/stats", other); /* a plain group */
    expect_cli(1, NULL, "neither a dataset nor a group of FD statistics", 3, args);

    /* usage */
    args[2] = spec_b;
    expect_cli(2, NULL, "usage: fifolab fd", 2, args);
    args[3] = "--frobnicate";
    expect_cli(2, NULL, "unknown option '--frobnicate'", 4, args);
    args[3] = "--ddof";
    args[4] = "2";
    expect_cli(2, NULL, "--ddof: expected 0 or 1", 5, args);
    args[3] = "--subsets";
    args[4] = "x";
    expect_cli(2, NULL, "--subsets: expected an integer", 5, args);
    args[2] = "nocolon";
    expect_cli(2, NULL, "'nocolon': expected FILE:/DATASET", 3, args);
    args[1] = "--help";
    expect_cli(0, "usage: fifolab fd", NULL, 2, args);

    fl_fd_stats_free(a);
    fl_fd_stats_free(b);
    free(x);
    free(y);
    free(xf);
    free(xd);
}

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/fl_test_fd_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    const char *names[] = { "stats.h5", "foreign.h5", "feat.h5", "feat2.h5" };
    char p[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_in_tmp(p, sizeof p, names[i]);
        remove(p);
    }
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_form_diagonal),
        cmocka_unit_test(test_closed_form_2x2),
        cmocka_unit_test(test_random_spd_against_denman_beavers),
        cmocka_unit_test(test_ill_conditioned_against_jacobi),
        cmocka_unit_test(test_accumulator_against_two_pass),
        cmocka_unit_test(test_merge_equals_one_pass),
        cmocka_unit_test(test_distance_from_samples),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_sample_count_warning),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_load_foreign_stats),
        cmocka_unit_test(test_mmd_unbiased),
        cmocka_unit_test(test_mmd_direct_and_subsets),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
