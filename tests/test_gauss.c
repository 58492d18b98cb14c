/* cmocka suite for models/gauss: the spectral posterior against a brute-force dense
 * pixel-space solve (every mode, odd and even grids), the output parameterizations, the
 * exact sampler's moments, option validation, determinism and the interface's errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/gauss.h"

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

static double urand(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; } /* [0,1) */

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

static fl_denoiser *model(const fl_gauss_opts *o)
{
    fl_denoiser *d = NULL;
    fl_error err;
    expect_ok(fl_gauss_new(o, &d, &err), &err, "fl_gauss_new");
    return d;
}

static fl_tensor frames(int64_t n, int c, int h, int w)
{
    int64_t sh[4] = { n, c, h, w };
    fl_tensor t = FL_TENSOR_NULL;
    fl_error err;
    expect_ok(fl_tensor_empty(&t, FL_F32, 4, sh, NULL, &err), &err, "fl_tensor_empty");
    return t;
}

static float *fdata(const fl_tensor *t) { return fl_tensor_data(t); }

static void eval(fl_denoiser *d, const fl_tensor *x, const fl_level *lv, fl_tensor *out)
{
    fl_error err;
    expect_ok(fl_denoiser_eval(d, x, lv, NULL, out, NULL, &err), &err, "fl_denoiser_eval");
}

static void eval_exact(fl_denoiser *d, const fl_tensor *x, const fl_level *lv, fl_tensor *out)
{
    fl_error err;
    expect_ok(fl_denoiser_eval_exact(d, x, lv, NULL, out, NULL, &err), &err, "fl_denoiser_eval_exact");
}

static void fill_normal(fl_tensor *t, uint64_t *s, double scale)
{
    float *p = fdata(t);
    for (int64_t i = 0; i < fl_tensor_numel(t); i++)
        p[i] = (float)(scale * nrand(s));
}

/* ---- the truth, coded independently of the model ------------------------------------ */

static int sfreq(int k, int n) { return 2 * k < n ? k : k - n; } /* numpy fftfreq * n */

/* P(k) straight from the definition: (1 + |k|^2/k0^2)^-beta, 0 where 2k = N, mean 1. */
static void ref_power(int H, int W, double k0, double beta, double *P)
{
    double sum = 0.0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < W; kx++) {
            double fy = sfreq(ky, H), fx = sfreq(kx, W);
            int nyq = 2 * ky == H || 2 * kx == W;
            P[ky * W + kx] = nyq ? 0.0 : pow(1.0 + (fy * fy + fx * fx) / (k0 * k0), -beta);
            sum += P[ky * W + kx];
        }
    for (int i = 0; i < H * W; i++)
        P[i] *= H * W / sum;
}

/* Dense covariance of one channel of n frames in pixel space, index t * HW + y * W + x:
 *   Cov(x_t(p), x_s(q)) = (1/HW) sum_k P(k) rho^|t-s| cos(2 pi k.(p - q - v (t - s)) / N),
 * the sum over every mode with its signed frequency (P = 0 where the sign is ambiguous). */
static void dense_cov(int H, int W, int n, double rho, double vx, double vy, const double *P,
                      double *cov)
{
    int HW = H * W, D = n * HW;
    for (int t = 0; t < n; t++)
        for (int s = 0; s < n; s++)
            for (int p = 0; p < HW; p++)
                for (int q = 0; q < HW; q++) {
                    double dy = (p / W - q / W) - vy * (t - s), dx = (p % W - q % W) - vx * (t - s);
                    double acc = 0.0;
                    for (int ky = 0; ky < H; ky++)
                        for (int kx = 0; kx < W; kx++) {
                            double pk = P[ky * W + kx];
                            if (pk != 0.0)
                                acc += pk * cos(TWO_PI * (sfreq(ky, H) * dy / H + sfreq(kx, W) * dx / W));
                        }
                    cov[(t * HW + p) * D + s * HW + q] = acc * pow(rho, abs(t - s)) / HW;
                }
}

/* Projector onto the modes with P = 0 (the Nyquist lines), same for every frame. */
static void nyquist_projector(int H, int W, double *pi)
{
    int HW = H * W;
    for (int p = 0; p < HW; p++)
        for (int q = 0; q < HW; q++) {
            double acc = 0.0;
            for (int ky = 0; ky < H; ky++)
                for (int kx = 0; kx < W; kx++)
                    if (2 * ky == H || 2 * kx == W)
                        acc += cos(TWO_PI * (ky * (double)(p / W - q / W) / H + kx * (double)(p % W - q % W) / W));
            pi[p * HW + q] = acc / HW;
        }
}

/* x = a^-1 b by Gaussian elimination with partial pivoting (a, b destroyed). */
static void dense_solve(int n, double *a, double *b)
{
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r * n + c]) > fabs(a[piv * n + c]))
                piv = r;
        assert_true(a[piv * n + c] != 0.0);
        if (piv != c) {
            for (int k = 0; k < n; k++) {
                double t = a[c * n + k];
                a[c * n + k] = a[piv * n + k];
                a[piv * n + k] = t;
            }
            double t = b[c];
            b[c] = b[piv];
            b[piv] = t;
        }
        for (int r = c + 1; r < n; r++) {
            double f = a[r * n + c] / a[c * n + c];
            for (int k = c; k < n; k++)
                a[r * n + k] -= f * a[c * n + k];
            b[r] -= f * b[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        double s = b[r];
        for (int k = r + 1; k < n; k++)
            s -= a[r * n + k] * b[k];
        b[r] = s / a[r * n + r];
    }
}

/* Dense posterior mean of one channel: x0 = Sigma A (A Sigma A + S)^-1 y. On the Nyquist
 * modes Sigma is 0, so A Sigma A + S is singular there when a frame is clean; adding the
 * projector onto them (which Sigma annihilates) makes it invertible without changing
 * Sigma A (.)^-1 y. */
static void dense_posterior(int H, int W, int n, const double *cov, const double *nyq,
                            const double *a, const double *s, const double *y, double *x0)
{
    int HW = H * W, D = n * HW;
    double *m = xcalloc((size_t)D * D, sizeof(double)), *z = xcalloc((size_t)D, sizeof(double));
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < D; j++) {
            m[i * D + j] = a[i / HW] * cov[i * D + j] * a[j / HW];
            if (i / HW == j / HW)
                m[i * D + j] += nyq[(i % HW) * HW + j % HW];
        }
        m[i * D + i] += s[i / HW] * s[i / HW];
        z[i] = y[i];
    }
    dense_solve(D, m, z);
    for (int i = 0; i < D; i++) {
        double acc = 0.0;
        for (int j = 0; j < D; j++)
            acc += cov[i * D + j] * a[j / HW] * z[j];
        x0[i] = acc;
    }
    free(m);
    free(z);
}

/* max |got - want| over max |want|, printed and bounded. */
static void check_close(const char *what, const float *got, const double *want, int64_t n, double tol)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs(got[i] - want[i]));
        m = fmax(m, fabs(want[i]));
    }
    double r = e / fmax(m, 1e-300);
    if (!(r < tol))
        fail_msg("%s: max error %.3g relative to max %.3g = %.3g, must be < %.3g", what, e, m, r, tol);
}

/* ---- (1) brute force: the spectral posterior equals the dense pixel-space one ------- */

typedef struct bf_case {
    int C, H, W, n, window;
    double rho, vx, vy, k0, beta;
} bf_case;

/* Model output (x0 param) for the window against the dense solve, for every mode; and the
 * exact model's eps against (y - a x0) / s from the dense x0. */
static void brute_force_case(const bf_case *bc, uint64_t seed)
{
    int C = bc->C, H = bc->H, W = bc->W, n = bc->n, HW = H * W, D = n * HW;
    double *P = xcalloc((size_t)HW, sizeof(double)), *cov = xcalloc((size_t)D * D, sizeof(double));
    double *nyq = xcalloc((size_t)HW * HW, sizeof(double));
    ref_power(H, W, bc->k0, bc->beta, P);
    dense_cov(H, W, n, bc->rho, bc->vx, bc->vy, P, cov);
    nyquist_projector(H, W, nyq);

    /* Levels: random VP levels, one clean frame, one almost pure noise, one non-VP. */
    uint64_t s = seed;
    fl_level lv[8];
    double a[8], sg[8];
    for (int j = 0; j < n; j++) {
        double ab = 0.05 + 0.9 * urand(&s);
        a[j] = sqrt(ab);
        sg[j] = sqrt(1 - ab);
    }
    a[1 % n] = 1.0, sg[1 % n] = 0.0;
    if (n > 2)
        a[n - 1] = 0.02, sg[n - 1] = sqrt(1 - 0.0004);
    if (n > 3)
        a[0] = 0.7, sg[0] = 1.3;
    for (int j = 0; j < n; j++)
        lv[j] = (fl_level){ 100.0 * j, a[j], sg[j] };

    fl_tensor x = frames(n, C, H, W), out = frames(n, C, H, W);
    fill_normal(&x, &s, 1.0);
    double *y = xcalloc((size_t)D, sizeof(double)), *ref = xcalloc((size_t)n * C * HW, sizeof(double));
    double *x0c = xcalloc((size_t)D, sizeof(double));
    double *ua = xcalloc((size_t)n, sizeof(double)), *us = xcalloc((size_t)n, sizeof(double));
    char what[160];

    for (int mode = FL_GAUSS_EXACT; mode <= FL_GAUSS_MEAN; mode++) {
        fl_gauss_opts o;
        fl_gauss_opts_default(&o);
        o.window = bc->window, o.channels = C, o.height = H, o.width = W;
        o.rho = bc->rho, o.drift_x = bc->vx, o.drift_y = bc->vy, o.k0 = bc->k0, o.beta = bc->beta;
        o.mismatch = mode;
        o.param = FL_PARAM_X0;
        fl_denoiser *d = model(&o);
        eval(d, &x, lv, &out);

        double abar = 0.0;
        for (int j = 0; j < n; j++)
            abar += a[j] * a[j] / (a[j] * a[j] + sg[j] * sg[j]) / n;
        for (int c = 0; c < C; c++) {
            for (int j = 0; j < n; j++)
                for (int p = 0; p < HW; p++)
                    y[j * HW + p] = fdata(&x)[(j * C + c) * HW + p];
            if (mode == FL_GAUSS_EXACT) {
                dense_posterior(H, W, n, cov, nyq, a, sg, y, x0c);
                for (int j = 0; j < n; j++)
                    memcpy(ref + (j * C + c) * HW, x0c + j * HW, (size_t)HW * sizeof(double));
            } else if (mode == FL_GAUSS_MEAN) { /* every frame at abar_m, VP */
                for (int j = 0; j < n; j++)
                    ua[j] = sqrt(abar), us[j] = sqrt(1 - abar);
                dense_posterior(H, W, n, cov, nyq, ua, us, y, x0c);
                for (int j = 0; j < n; j++)
                    memcpy(ref + (j * C + c) * HW, x0c + j * HW, (size_t)HW * sizeof(double));
            } else { /* own: frame j from the posterior with every frame at frame j's level */
                for (int j = 0; j < n; j++) {
                    for (int l = 0; l < n; l++)
                        ua[l] = a[j], us[l] = sg[j];
                    dense_posterior(H, W, n, cov, nyq, ua, us, y, x0c);
                    memcpy(ref + (j * C + c) * HW, x0c + j * HW, (size_t)HW * sizeof(double));
                }
            }
        }
        snprintf(what, sizeof what, "%s x0, C=%d %dx%d n=%d of %d", fl_gauss_mismatch_name(mode), C, H,
                 W, n, bc->window);
        check_close(what, fdata(&out), ref, (int64_t)n * C * HW, 1e-6);

        if (mode == FL_GAUSS_EXACT) { /* eps in the same model family, from the dense x0 */
            fl_denoiser *de;
            o.param = FL_PARAM_EPS;
            de = model(&o);
            eval(de, &x, lv, &out);
            for (int j = 0; j < n; j++)
                for (int i = 0; i < C * HW; i++) {
                    int64_t e = (int64_t)j * C * HW + i;
                    ref[e] = sg[j] > 0 ? (fdata(&x)[e] - a[j] * ref[e]) / sg[j] : 0.0;
                }
            snprintf(what, sizeof what, "exact eps, C=%d %dx%d n=%d", C, H, W, n);
            check_close(what, fdata(&out), ref, (int64_t)n * C * HW, 1e-5);
            fl_denoiser_free(de);
        }
        fl_denoiser_free(d);
    }
    fl_tensor_release(&x);
    fl_tensor_release(&out);
    free(P), free(cov), free(nyq), free(y), free(ref), free(x0c), free(ua), free(us);
}

static void test_brute_force_posterior(void **state)
{
    (void)state;
    static const bf_case cases[] = {
        { 2, 3, 5, 4, 4, 0.80, 0.37, -0.81, 1.5, 1.3 },  /* odd x odd: no Nyquist line */
        { 1, 4, 6, 3, 3, 0.95, 0.50, 0.25, 2.0, 2.0 },   /* even x even */
        { 2, 4, 5, 4, 6, 0.60, -1.30, 0.70, 1.0, 0.7 },  /* even x odd, short window */
        { 1, 5, 4, 3, 3, 0.00, 2.25, -0.4, 3.0, 3.0 },   /* rho = 0: frames independent */
        { 1, 1, 7, 4, 4, 0.90, 0.45, 0.00, 2.0, 1.0 },   /* one row */
        { 2, 2, 2, 3, 3, 0.70, 0.30, 0.20, 1.0, 1.0 },   /* only the DC mode survives */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        brute_force_case(&cases[i], 1000 + i);
}

/* ---- (2) parameterizations ---------------------------------------------------------- */

/* For each mode, the eps / x0 / v models agree: eps = (y - a' x0) / s', v = a' eps - s' x0
 * with the level the model pretends the frame is at (own: the frame's; mean: abar_m). */
static void test_parameterizations_agree(void **state)
{
    (void)state;
    int n = 5, C = 2, H = 6, W = 7;
    uint64_t s = 7;
    fl_level lv[5];
    for (int j = 0; j < n; j++) {
        double ab = 0.1 + 0.8 * urand(&s);
        lv[j] = (fl_level){ j, sqrt(ab), sqrt(1 - ab) };
    }
    lv[2] = fl_level_clean();
    fl_tensor x = frames(n, C, H, W), o_eps = frames(n, C, H, W), o_x0 = frames(n, C, H, W),
              o_v = frames(n, C, H, W);
    fill_normal(&x, &s, 1.0);
    for (int mode = FL_GAUSS_EXACT; mode <= FL_GAUSS_MEAN; mode++) {
        fl_gauss_opts o;
        fl_gauss_opts_default(&o);
        o.window = n, o.channels = C, o.height = H, o.width = W, o.mismatch = mode;
        fl_denoiser *d[3];
        fl_tensor *outs[3] = { &o_eps, &o_x0, &o_v };
        fl_param ps[3] = { FL_PARAM_EPS, FL_PARAM_X0, FL_PARAM_V };
        for (int i = 0; i < 3; i++) {
            o.param = ps[i];
            d[i] = model(&o);
            assert_int_equal(d[i]->param, ps[i]);
            eval(d[i], &x, lv, outs[i]);
        }
        double abar = 0.0;
        for (int j = 0; j < n; j++)
            abar += lv[j].alpha * lv[j].alpha / (lv[j].alpha * lv[j].alpha + lv[j].sigma * lv[j].sigma) / n;
        double e_eps = 0.0, e_v = 0.0;
        for (int j = 0; j < n; j++) {
            double a = mode == FL_GAUSS_MEAN ? sqrt(abar) : lv[j].alpha;
            double sg = mode == FL_GAUSS_MEAN ? sqrt(1 - abar) : lv[j].sigma;
            for (int i = 0; i < C * H * W; i++) {
                int64_t e = (int64_t)j * C * H * W + i;
                double y = fdata(&x)[e], x0 = fdata(&o_x0)[e], eps = fdata(&o_eps)[e];
                double want = sg > 0 ? (y - a * x0) / sg : 0.0;
                e_eps = fmax(e_eps, fabs(eps - want) / (1.0 + fabs(want)));
                e_v = fmax(e_v, fabs(fdata(&o_v)[e] - (a * eps - sg * x0)) / (1.0 + fabs(a * eps - sg * x0)));
            }
        }
        if (!(e_eps < 1e-5 && e_v < 1e-5))
            fail_msg("%s: eps vs x0 error %.3g, v error %.3g (bound 1e-5)", fl_gauss_mismatch_name(mode),
                     e_eps, e_v);
        for (int i = 0; i < 3; i++)
            fl_denoiser_free(d[i]);
    }
    fl_tensor_release(&x), fl_tensor_release(&o_eps), fl_tensor_release(&o_x0), fl_tensor_release(&o_v);
}

/* With one level for the whole window the three modes are the same posterior (different
 * code paths: Cholesky vs eigendecomposition), and eval_exact of a mismatch model is the
 * exact model's eval. */
static void test_modes_agree_on_uniform_levels(void **state)
{
    (void)state;
    int n = 8, C = 3, H = 8, W = 8;
    uint64_t s = 11;
    fl_level lv[8];
    for (int j = 0; j < n; j++)
        lv[j] = (fl_level){ 500, sqrt(0.3), sqrt(0.7) };
    fl_tensor x = frames(n, C, H, W), ref = frames(n, C, H, W), out = frames(n, C, H, W);
    fill_normal(&x, &s, 1.0);
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.window = n, o.channels = C, o.height = H, o.width = W;
    fl_denoiser *ex = model(&o);
    eval(ex, &x, lv, &ref);
    double *want = xcalloc((size_t)fl_tensor_numel(&x), sizeof(double));
    for (int64_t i = 0; i < fl_tensor_numel(&x); i++)
        want[i] = fdata(&ref)[i];
    for (int mode = FL_GAUSS_OWN; mode <= FL_GAUSS_MEAN; mode++) {
        o.mismatch = mode;
        fl_denoiser *d = model(&o);
        eval(d, &x, lv, &out);
        check_close(fl_gauss_mismatch_name(mode), fdata(&out), want, fl_tensor_numel(&x), 1e-5);
        /* Non-uniform levels: eval_exact of the mismatch model == eval of the exact one. */
        fl_level mixed[8];
        for (int j = 0; j < n; j++)
            mixed[j] = (fl_level){ j, sqrt((j + 1) / 9.0), sqrt(1 - (j + 1) / 9.0) };
        eval(ex, &x, mixed, &ref);
        eval_exact(d, &x, mixed, &out);
        assert_memory_equal(fdata(&ref), fdata(&out), fl_tensor_nbytes(&out));
        eval(d, &x, mixed, &out);
        double diff = 0.0;
        for (int64_t i = 0; i < fl_tensor_numel(&x); i++)
            diff = fmax(diff, fabs(fdata(&out)[i] - fdata(&ref)[i]));
        assert_true(diff > 1e-3); /* and the mismatch really differs on mixed levels */
        fl_denoiser_free(d);
    }
    free(want);
    fl_denoiser_free(ex);
    fl_tensor_release(&x), fl_tensor_release(&ref), fl_tensor_release(&out);
}

/* Limits: clean frames of a sample come back as they are (the sample is band-limited
 * like the prior); a clean frame at alpha = 0.5 comes back as y / 0.5; pure noise
 * (alpha = 0) gives x0 = 0, so eps = y / sigma. */
static void test_clean_and_pure_noise_limits(void **state)
{
    (void)state;
    int n = 4, C = 2, H = 6, W = 8;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.window = n, o.channels = C, o.height = H, o.width = W, o.param = FL_PARAM_X0;
    fl_denoiser *d = model(&o);
    fl_rng rng;
    fl_rng_init(&rng, 5);
    fl_tensor x = frames(n, C, H, W), out = frames(n, C, H, W);
    fl_error err;
    expect_ok(fl_gauss_sample(d, &rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 0, 0 }, n, &x, &err), &err,
              "sample");
    double *want = xcalloc((size_t)fl_tensor_numel(&x), sizeof(double));
    fl_level lv[4];
    for (int j = 0; j < n; j++)
        lv[j] = fl_level_clean();
    eval(d, &x, lv, &out);
    for (int64_t i = 0; i < fl_tensor_numel(&x); i++)
        want[i] = fdata(&x)[i];
    check_close("all clean", fdata(&out), want, fl_tensor_numel(&x), 1e-5);
    for (int j = 0; j < n; j++)
        lv[j] = (fl_level){ 0, 0.5, 0.0 };
    eval(d, &x, lv, &out);
    for (int64_t i = 0; i < fl_tensor_numel(&x); i++)
        want[i] = 2.0 * fdata(&x)[i];
    check_close("clean at alpha 0.5", fdata(&out), want, fl_tensor_numel(&x), 1e-5);
    fl_denoiser_free(d);

    o.param = FL_PARAM_EPS;
    d = model(&o);
    for (int j = 0; j < n; j++)
        lv[j] = (fl_level){ 999, 0.0, 2.0 };
    eval(d, &x, lv, &out);
    for (int64_t i = 0; i < fl_tensor_numel(&x); i++)
        want[i] = fdata(&x)[i] / 2.0;
    check_close("pure noise eps", fdata(&out), want, fl_tensor_numel(&x), 1e-6);
    fl_denoiser_free(d);
    free(want);
    fl_tensor_release(&x), fl_tensor_release(&out);
}

/* ---- (3) the spectrum and the sampler ----------------------------------------------- */

/* P matches the definition (normalised, 0 on Nyquist lines, even in k); theta is odd in
 * k and equals 2 pi (kx vx / W + ky vy / H) with signed frequencies. */
static void test_power_and_phase(void **state)
{
    (void)state;
    int sizes[][2] = { { 32, 32 }, { 5, 7 }, { 6, 9 }, { 1, 1 }, { 2, 2 } };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int H = sizes[i][0], W = sizes[i][1];
        fl_gauss_opts o;
        fl_gauss_opts_default(&o);
        o.height = H, o.width = W, o.drift_x = 0.3, o.drift_y = -0.7;
        fl_denoiser *d = model(&o);
        const double *P = fl_gauss_power(d);
        double *want = xcalloc((size_t)H * W, sizeof(double)), sum = 0.0;
        ref_power(H, W, o.k0, o.beta, want);
        for (int ky = 0; ky < H; ky++)
            for (int kx = 0; kx < W; kx++) {
                int k = ky * W + kx, mk = ((H - ky) % H) * W + (W - kx) % W;
                sum += P[k];
                assert_true(fabs(P[k] - want[k]) <= 1e-12 * want[k]);
                assert_true(P[k] == P[mk]);
                if (2 * ky == H || 2 * kx == W)
                    assert_true(P[k] == 0.0);
                double th = fl_gauss_phase(d, ky, kx);
                double tw = TWO_PI * (sfreq(kx, W) * 0.3 / W + sfreq(ky, H) * -0.7 / H);
                assert_true(fabs(remainder(th - tw, TWO_PI)) < 1e-12);
                if (!(2 * ky == H || 2 * kx == W))
                    assert_true(fabs(remainder(th + fl_gauss_phase(d, (H - ky) % H, (W - kx) % W), TWO_PI)) < 1e-12);
            }
        assert_true(fabs(sum / (H * W) - 1.0) < 1e-12);
        free(want);
        fl_denoiser_free(d);
    }
}

/* A long sample: total, low- and high-band power, drift-compensated lag-1 correlation,
 * the raw correlation and the mean all within 5 standard errors (the stats' own SE
 * formulas, docs/gauss.md); each mode's power within 6 SE of P(k) and its correlation
 * within 6 SE of rho. Then two wrong videos are told apart: a frozen video gives
 * sum P cos(theta) / sum P instead of rho, white noise gives 0 and power off. */
static void test_sample_statistics(void **state)
{
    (void)state;
    int N = 20000, C = 2, H = 8, W = 8, HW = H * W;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.channels = C, o.height = H, o.width = W, o.rho = 0.9, o.drift_x = 0.7, o.drift_y = -0.3;
    o.k0 = 2.0, o.beta = 1.5;
    fl_denoiser *d = model(&o);
    fl_rng rng;
    fl_rng_init(&rng, 2024);
    fl_tensor x = frames(N, C, H, W);
    fl_error err;
    expect_ok(fl_gauss_sample(d, &rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 0, 0 }, N, &x, &err), &err,
              "sample");
    fl_gauss_stats_result st;
    expect_ok(fl_gauss_stats(d, &x, &st, &err), &err, "stats");
    print_message("power %.4f (se %.4f) low %.4f high %.4f corr %.4f (rho %.2f, se %.4f) raw %.4f "
                  "(true %.4f, se %.4f) mean %.4f (se %.4f)\n",
                  st.power_ratio, st.power_ratio_se, st.power_ratio_low, st.power_ratio_high, st.corr_lag1,
                  o.rho, st.corr_lag1_se, st.corr_lag1_raw, st.corr_lag1_raw_true, st.corr_lag1_raw_se, st.mean,
                  st.mean_se);
    assert_int_equal(st.frames, N);
    assert_true(fabs(st.power_ratio - 1) < 5 * st.power_ratio_se);
    assert_true(fabs(st.power_ratio_low - 1) < 5 * st.power_ratio_low_se);
    assert_true(fabs(st.power_ratio_high - 1) < 5 * st.power_ratio_high_se);
    assert_true(fabs(st.corr_lag1 - o.rho) < 5 * st.corr_lag1_se);
    assert_true(fabs(st.corr_lag1_raw - st.corr_lag1_raw_true) < 5 * st.corr_lag1_raw_se);
    assert_true(fabs(st.mean) < 5 * st.mean_se);
    assert_true(st.corr_lag1_raw_true < o.rho - 0.05); /* the drift matters at this size */

    double *pw = xcalloc((size_t)HW, sizeof(double)), *cr = xcalloc((size_t)HW, sizeof(double));
    expect_ok(fl_gauss_mode_stats(d, &x, pw, cr, &err), &err, "mode stats");
    const double *P = fl_gauss_power(d);
    double g = 0.0; /* sum_{t,s} rho^(2|t-s|) */
    for (int t = -(N - 1); t < N; t++)
        g += (N - abs(t)) * pow(o.rho * o.rho, abs(t));
    double worst_p = 0.0, worst_c = 0.0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < W; kx++) {
            int k = ky * W + kx, self = ((2 * ky) % H == 0) && ((2 * kx) % W == 0);
            if (P[k] == 0.0) {
                assert_true(pw[k] < 1e-12); /* band-limited, up to the f32 rounding of the frames */
                continue;
            }
            double se_p = P[k] * sqrt((self ? 2.0 : 1.0) * g / C) / N;
            double se_c = sqrt((1 - o.rho * o.rho) / ((N - 1.0) * C * (self ? 1.0 : 2.0)));
            worst_p = fmax(worst_p, fabs(pw[k] - P[k]) / se_p);
            worst_c = fmax(worst_c, fabs(cr[k] - o.rho) / se_c);
        }
    print_message("per mode: worst power deviation %.2f se, worst correlation deviation %.2f se\n",
                  worst_p, worst_c);
    assert_true(worst_p < 6.0);
    assert_true(worst_c < 6.0);

    /* A frozen video (frame 0 repeated): correlation = sum |X|^2 cos(theta) / sum |X|^2. */
    fl_tensor fr = frames(N, C, H, W);
    for (int t = 0; t < N; t++)
        memcpy(fdata(&fr) + (size_t)t * C * HW, fdata(&x), (size_t)C * HW * sizeof(float));
    fl_gauss_stats_result sf;
    expect_ok(fl_gauss_stats(d, &fr, &sf, &err), &err, "stats frozen");
    expect_ok(fl_gauss_mode_stats(d, &fr, pw, NULL, &err), &err, "mode stats frozen");
    double num = 0.0, den = 0.0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < W; kx++) {
            num += pw[ky * W + kx] * cos(fl_gauss_phase(d, ky, kx));
            den += pw[ky * W + kx];
        }
    assert_true(fabs(sf.corr_lag1 - num / den) < 1e-9);
    assert_true(fabs(sf.corr_lag1_raw - 1.0) < 1e-9);
    assert_true(fabs(sf.corr_lag1 - o.rho) > 10 * st.corr_lag1_se);

    /* White noise: no correlation, a flat spectrum (high band over-powered against low). */
    uint64_t s = 3;
    fill_normal(&fr, &s, 1.0);
    expect_ok(fl_gauss_stats(d, &fr, &sf, &err), &err, "stats noise");
    assert_true(fabs(sf.corr_lag1) < 5.0 / sqrt((double)N * C * HW));
    print_message("white noise: corr %.4f, power low %.3f high %.3f\n", sf.corr_lag1, sf.power_ratio_low,
                  sf.power_ratio_high);
    assert_true(sf.power_ratio_high > 1.5 * sf.power_ratio_low);
    free(pw), free(cr);
    fl_tensor_release(&fr);
    fl_tensor_release(&x);
    fl_denoiser_free(d);
}

/* Many independent short samples (one per addr.step): the empirical covariance of
 * (frame, channel, pixel) matches the dense formula entry by entry within 5 standard
 * errors (se_ij = sqrt((S_ii S_jj + S_ij^2) / M) for Gaussian data), channels included
 * (cross-channel covariance 0). This pins the drift direction: content moves by +v. */
static void test_sample_dense_covariance(void **state)
{
    (void)state;
    int n = 3, C = 2, H = 3, W = 4, HW = H * W, D = n * C * HW, M = 20000;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.channels = C, o.height = H, o.width = W, o.rho = 0.7, o.drift_x = 0.6, o.drift_y = -0.45;
    o.k0 = 1.0, o.beta = 1.0;
    fl_denoiser *d = model(&o);
    double *P = xcalloc((size_t)HW, sizeof(double)), *cov = xcalloc((size_t)n * HW * n * HW, sizeof(double));
    ref_power(H, W, o.k0, o.beta, P);
    dense_cov(H, W, n, o.rho, o.drift_x, o.drift_y, P, cov);
    double *emp = xcalloc((size_t)D * D, sizeof(double));
    fl_rng rng;
    fl_rng_init(&rng, 77);
    fl_tensor x = frames(n, C, H, W);
    fl_error err;
    for (int m = 0; m < M; m++) {
        expect_ok(fl_gauss_sample(d, &rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 5, (uint32_t)m }, n, &x, &err),
                  &err, "sample");
        const float *v = fdata(&x);
        for (int i = 0; i < D; i++)
            for (int j = 0; j <= i; j++)
                emp[i * D + j] += (double)v[i] * v[j];
    }
    double worst = 0.0;
    for (int i = 0; i < D; i++)
        for (int j = 0; j <= i; j++) {
            /* element (t, c, p) of the sample <-> row t * HW + p of channel c's covariance */
            int ti = i / (C * HW), ci = (i / HW) % C, pi = i % HW;
            int tj = j / (C * HW), cj = (j / HW) % C, pj = j % HW;
            int DC = n * HW;
            double want = ci == cj ? cov[(ti * HW + pi) * DC + tj * HW + pj] : 0.0;
            double sii = cov[(ti * HW + pi) * DC + ti * HW + pi], sjj = cov[(tj * HW + pj) * DC + tj * HW + pj];
            double se = sqrt((sii * sjj + want * want) / M);
            worst = fmax(worst, fabs(emp[i * D + j] / M - want) / se);
        }
    print_message("dense covariance: worst entry deviation %.2f se over %d entries\n", worst, D * (D + 1) / 2);
    assert_true(worst < 5.0);
    free(P), free(cov), free(emp);
    fl_tensor_release(&x);
    fl_denoiser_free(d);
}

/* The sample is addressed, not ordered: a longer sample from the same addr extends a
 * shorter one bit for bit; another step or seed gives other numbers; errors are named. */
static void test_sample_addressing(void **state)
{
    (void)state;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.height = 8, o.width = 6;
    fl_denoiser *d = model(&o);
    fl_rng rng;
    fl_rng_init(&rng, 9);
    fl_tensor a = frames(10, 3, 8, 6), b = frames(4, 3, 8, 6);
    fl_error err;
    fl_rng_addr ad = { FL_RNG_STREAM_MODEL, 100, 7 };
    expect_ok(fl_gauss_sample(d, &rng, ad, 10, &a, &err), &err, "sample 10");
    expect_ok(fl_gauss_sample(d, &rng, ad, 4, &b, &err), &err, "sample 4");
    assert_memory_equal(fdata(&a), fdata(&b), fl_tensor_nbytes(&b));
    ad.step = 8;
    expect_ok(fl_gauss_sample(d, &rng, ad, 4, &b, &err), &err, "sample other step");
    assert_memory_not_equal(fdata(&a), fdata(&b), fl_tensor_nbytes(&b));

    assert_int_equal(fl_gauss_sample(d, &rng, ad, 5, &b, &err), FL_E_SHAPE);
    ad.frame = UINT32_MAX - 2;
    assert_int_equal(fl_gauss_sample(d, &rng, ad, 4, &b, &err), FL_E_RANGE);
    assert_non_null(strstr(fl_error_msg(&err), "frame address"));
    fl_tensor one = frames(1, 3, 8, 6);
    fl_gauss_stats_result st;
    assert_int_equal(fl_gauss_stats(d, &one, &st, &err), FL_E_SHAPE);
    assert_non_null(strstr(fl_error_msg(&err), "N >= 2"));
    fl_tensor_release(&a), fl_tensor_release(&b), fl_tensor_release(&one);
    fl_denoiser_free(d);
}

/* ---- (4) options -------------------------------------------------------------------- */

static void expect_bad(void (*mutate)(fl_gauss_opts *), const char *needle)
{
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    mutate(&o);
    static fl_denoiser sentinel;
    fl_denoiser *d = &sentinel; /* must be reset to NULL on failure */
    fl_error err;
    fl_status st = fl_gauss_new(&o, &d, &err);
    if (st != FL_E_INVALID || !strstr(fl_error_msg(&err), needle))
        fail_msg("expected FL_E_INVALID with \"%s\", got %d: %s", needle, (int)st, fl_error_msg(&err));
    assert_null(d);
}

static void bad_window(fl_gauss_opts *o) { o->window = 0; }
static void bad_channels(fl_gauss_opts *o) { o->channels = -3; }
static void bad_height(fl_gauss_opts *o) { o->height = 0; }
static void bad_width(fl_gauss_opts *o) { o->width = 100000; }
static void bad_rho(fl_gauss_opts *o) { o->rho = 1.0; }
static void bad_rho_neg(fl_gauss_opts *o) { o->rho = -0.1; }
static void bad_rho_nan(fl_gauss_opts *o) { o->rho = NAN; }
static void bad_drift_x(fl_gauss_opts *o) { o->drift_x = INFINITY; }
static void bad_drift_y(fl_gauss_opts *o) { o->drift_y = NAN; }
static void bad_k0(fl_gauss_opts *o) { o->k0 = 0.0; }
static void bad_beta(fl_gauss_opts *o) { o->beta = -1.0; }
static void bad_mismatch(fl_gauss_opts *o) { o->mismatch = 3; }
static void bad_param(fl_gauss_opts *o) { o->param = FL_PARAM_FLOW; }
static void bad_size(fl_gauss_opts *o) { o->channels = 4096, o->height = 8192, o->width = 8192; }

static void test_option_validation(void **state)
{
    (void)state;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    assert_int_equal(o.window, 16);
    assert_int_equal(o.channels, 3);
    assert_int_equal(o.height, 32);
    assert_int_equal(o.width, 32);
    assert_true(o.rho == 0.95 && o.drift_x == 0.5 && o.drift_y == 0.25 && o.k0 == 4.0 && o.beta == 2.0);
    assert_int_equal(o.mismatch, FL_GAUSS_EXACT);
    assert_int_equal(o.param, FL_PARAM_EPS);

    expect_bad(bad_window, "gauss.window: expected an integer in [1, ");
    expect_bad(bad_channels, "gauss.channels: expected an integer in [1, 4096], got -3");
    expect_bad(bad_height, "gauss.height");
    expect_bad(bad_width, "gauss.width: expected an integer in [1, 8192], got 100000");
    expect_bad(bad_rho, "gauss.rho: expected a number in [0, 1), got 1");
    expect_bad(bad_rho_neg, "gauss.rho: expected a number in [0, 1), got -0.1");
    expect_bad(bad_rho_nan, "gauss.rho");
    expect_bad(bad_drift_x, "gauss.drift_x: expected a finite number, got inf");
    expect_bad(bad_drift_y, "gauss.drift_y");
    expect_bad(bad_k0, "gauss.k0: expected a finite number > 0, got 0");
    expect_bad(bad_beta, "gauss.beta: expected a number in [0, 64], got -1");
    expect_bad(bad_mismatch, "gauss.mismatch");
    expect_bad(bad_param, "gauss.param: expected eps, x0 or v, got flow");
    expect_bad(bad_size, "elements per frame");

    int m = -1;
    fl_error err;
    for (int i = 0; i < 3; i++) {
        expect_ok(fl_gauss_mismatch_parse(fl_gauss_mismatch_name(i), &m, &err), &err, "parse");
        assert_int_equal(m, i);
    }
    assert_string_equal(fl_gauss_mismatch_name(FL_GAUSS_OWN), "own");
    assert_string_equal(fl_gauss_mismatch_name(7), "?");
    assert_int_equal(fl_gauss_mismatch_parse("lookahead", &m, &err), FL_E_INVALID);
    assert_non_null(strstr(fl_error_msg(&err), "\"lookahead\"; accepted: exact, own, mean"));

    fl_gauss_opts_default(&o);
    fl_denoiser *d = model(&o);
    assert_true(fl_gauss_is(d));
    assert_string_equal(d->vt->name, "gauss");
    assert_int_equal(d->window, 16);
    assert_int_equal(d->channels, 3);
    assert_int_equal(d->per_frame_t, 1);
    assert_int_equal(d->accepts_short, 1);
    assert_true(fl_gauss_opts_of(d)->rho == 0.95);
    fl_denoiser_free(d);
    fl_denoiser_free(NULL);
}

/* ---- (5) determinism, threads, interface errors ------------------------------------- */

typedef struct job {
    fl_denoiser *d;
    const fl_tensor *x;
    const fl_level *lv;
    fl_tensor out;
    int reps;
    fl_status st;
} job;

static void *run_job(void *p)
{
    job *j = p;
    fl_error err;
    for (int r = 0; r < j->reps && j->st == FL_OK; r++)
        j->st = fl_denoiser_eval(j->d, j->x, j->lv, NULL, &j->out, NULL, &err);
    return NULL;
}

/* Two windows evaluated A, B and B, A give identical bits, and so does a repeat; four
 * threads evaluating concurrently on one model give the same bits as a single thread. */
static void test_deterministic_and_order_free(void **state)
{
    (void)state;
    int C = 3, H = 16, W = 12;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.window = 8, o.channels = C, o.height = H, o.width = W, o.mismatch = FL_GAUSS_OWN;
    fl_denoiser *d = model(&o);
    uint64_t s = 21;
    fl_tensor xa = frames(8, C, H, W), xb = frames(5, C, H, W);
    fl_tensor a1 = frames(8, C, H, W), a2 = frames(8, C, H, W), b1 = frames(5, C, H, W), b2 = frames(5, C, H, W);
    fill_normal(&xa, &s, 1.0);
    fill_normal(&xb, &s, 1.0);
    fl_level la[8], lb[5];
    for (int j = 0; j < 8; j++)
        la[j] = (fl_level){ j, sqrt((j + 0.5) / 8), sqrt(1 - (j + 0.5) / 8) };
    for (int j = 0; j < 5; j++)
        lb[j] = (fl_level){ j, sqrt((j + 0.2) / 5.5), sqrt(1 - (j + 0.2) / 5.5) };
    eval(d, &xa, la, &a1);
    eval(d, &xb, lb, &b1);
    eval_exact(d, &xa, la, &a2); /* interleaved calls of the other entry change nothing */
    eval(d, &xb, lb, &b2);
    eval(d, &xa, la, &a2);
    assert_memory_equal(fdata(&a1), fdata(&a2), fl_tensor_nbytes(&a1));
    assert_memory_equal(fdata(&b1), fdata(&b2), fl_tensor_nbytes(&b1));

    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){ d, i % 2 ? &xb : &xa, i % 2 ? lb : la, frames(i % 2 ? 5 : 8, C, H, W), 5, FL_OK };
        assert_int_equal(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].st, FL_OK);
        const fl_tensor *want = i % 2 ? &b1 : &a1;
        assert_memory_equal(fdata(&jobs[i].out), fdata(want), fl_tensor_nbytes(want));
        fl_tensor_release(&jobs[i].out);
    }
    fl_tensor_release(&xa), fl_tensor_release(&xb), fl_tensor_release(&a1), fl_tensor_release(&a2);
    fl_tensor_release(&b1), fl_tensor_release(&b2);
    fl_denoiser_free(d);
}

static void expect_eval_error(fl_denoiser *d, const fl_tensor *x, const fl_level *lv, fl_tensor *out,
                              fl_status code, const char *needle)
{
    fl_error err;
    fl_status st = fl_denoiser_eval(d, x, lv, NULL, out, NULL, &err);
    if (st != code || !strstr(fl_error_msg(&err), needle))
        fail_msg("expected status %d with \"%s\", got %d: %s", (int)code, needle, (int)st, fl_error_msg(&err));
}

/* fl_denoiser_eval refuses what the model cannot take, naming it: too many frames, the
 * wrong frame shape, f64, an aliased output, a bad level; one frame (short) is fine. */
static void test_interface_errors(void **state)
{
    (void)state;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.window = 4, o.channels = 2, o.height = 6, o.width = 5;
    fl_denoiser *d = model(&o);
    fl_level lv[5];
    for (int j = 0; j < 5; j++)
        lv[j] = (fl_level){ j, 0.6, 0.8 };
    fl_tensor x5 = frames(5, 2, 6, 5), o5 = frames(5, 2, 6, 5);
    fl_tensor xc = frames(2, 3, 6, 5), oc = frames(2, 3, 6, 5);
    fl_tensor x1 = frames(1, 2, 6, 5), o1 = frames(1, 2, 6, 5);
    uint64_t s = 1;
    fill_normal(&x5, &s, 1.0);
    fill_normal(&x1, &s, 1.0);
    expect_eval_error(d, &x5, lv, &o5, FL_E_SHAPE, "window of 5 frames, the model takes 1 to 4");
    expect_eval_error(d, &xc, lv, &oc, FL_E_SHAPE, "3x6x5, the model takes 2x6x5");
    expect_eval_error(d, &x1, lv, &x1, FL_E_INVALID, "must not alias");
    int64_t sh[4] = { 1, 2, 6, 5 };
    fl_tensor xd = FL_TENSOR_NULL;
    fl_error err;
    expect_ok(fl_tensor_zeros(&xd, FL_F64, 4, sh, NULL, &err), &err, "zeros");
    expect_eval_error(d, &xd, lv, &o1, FL_E_DTYPE, "f32");
    fl_level bad = { 0, 0.0, 0.0 };
    expect_eval_error(d, &x1, &bad, &o1, FL_E_RANGE, "frame 0 has an invalid noise level");
    eval(d, &x1, lv, &o1); /* one frame of a four-frame window */
    for (int i = 0; i < 60; i++)
        assert_true(isfinite(fdata(&o1)[i]));

    fl_gauss_stats_result st;
    fl_denoiser not_gauss = *d; /* same fields, other vtable */
    fl_denoiser_vt vt = *d->vt;
    not_gauss.vt = &vt;
    assert_false(fl_gauss_is(&not_gauss));
    assert_int_equal(fl_gauss_stats(&not_gauss, &x5, &st, &err), FL_E_INVALID);
    assert_non_null(strstr(fl_error_msg(&err), "not a gauss model"));
    assert_int_equal(fl_gauss_stats(d, &xd, &st, &err), FL_E_DTYPE);

    fl_tensor_release(&x5), fl_tensor_release(&o5), fl_tensor_release(&xc), fl_tensor_release(&oc);
    fl_tensor_release(&x1), fl_tensor_release(&o1), fl_tensor_release(&xd);
    fl_denoiser_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_brute_force_posterior),
        cmocka_unit_test(test_parameterizations_agree),
        cmocka_unit_test(test_modes_agree_on_uniform_levels),
        cmocka_unit_test(test_clean_and_pure_noise_limits),
        cmocka_unit_test(test_power_and_phase),
        cmocka_unit_test(test_sample_statistics),
        cmocka_unit_test(test_sample_dense_covariance),
        cmocka_unit_test(test_sample_addressing),
        cmocka_unit_test(test_option_validation),
        cmocka_unit_test(test_deterministic_and_order_free),
        cmocka_unit_test(test_interface_errors),
    };
    return cmocka_run_group_tests_name("gauss", tests, NULL, NULL);
}
