/* The Gaussian video testbed: posterior means in closed form per Fourier mode (docs/gauss.md).
 *
 * In short. With the orthonormal DFT, mode k of frame t follows the AR(1)
 *   X_{t+1}(k) = rho e^{-i theta_k} X_t(k) + sqrt(1 - rho^2) sqrt(P(k)) W_{t+1}(k),
 * so a window of n frames has, per mode, covariance Sigma = P D K D^* with
 * D = diag(e^{-i theta_k j}) and K_jl = rho^|j-l|; modes are independent (k and -k are
 * conjugates of each other). Noisy frames Y_j = a_j X_j + s_j E_j keep white noise under
 * the orthonormal DFT, so per mode
 *   E[X | Y] = Sigma A (A Sigma A + S)^-1 Y = D G(P) D^* Y,  G(P) = P K A (P A K A + S)^-1,
 * a real n x n matrix that depends on the mode only through P: un-rotate, apply G, rotate
 * back. Modes are grouped by |k|^2 (P is a function of it), so G is built once per group
 * per call. Exact levels: G by Cholesky of P A K A + S. One level (a, s) for every frame
 * (the mismatch modes): with K = U diag(lambda) U^T, G = U diag(P a lambda /
 * (P a^2 lambda + s^2)) U^T, one eigendecomposition of K per call. */
#include "models/gauss.h"

#include <fftw3.h>
/* after fftw3.h, so that fftw_complex stays double[2] */
#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

#include "core/alloc.h"

#define GAUSS_MAX_WINDOW 1024
#define GAUSS_MAX_CHANNELS 4096
#define GAUSS_MAX_SIDE 8192
#define GAUSS_MAX_BETA 64.0
#define TWO_PI 6.283185307179586476925286766559

/* FFTW's planner is global and not thread-safe; its own lock (as ops/cpu/fft_fftw.c
 * installs it, idempotently) serialises plan creation and destruction across models. */
static once_flag planner_lock_once = ONCE_FLAG_INIT;
static void install_planner_lock(void) { fftw_make_planner_thread_safe(); }

typedef struct gauss {
    fl_denoiser base; /* first: the engine sees an fl_denoiser */
    fl_gauss_opts o;
    int H, W, C, Wh;           /* Wh = W/2 + 1 columns of the half spectrum */
    int64_t HW, nh;            /* pixels; half-spectrum modes H * Wh */
    int64_t rstride, cstride;  /* per image in scratch: doubles, complex; multiples of 64 B */
    double *power;             /* [HW] P(k), FFT index order */
    double *hpow, *htheta;     /* [nh] P and theta of the half-spectrum modes */
    double *hcos, *hsin;       /* [nh] cos, sin of theta */
    int *group;                /* [nh] index into gpow, -1 where P == 0 */
    double *gpow;              /* [ngroups] distinct P > 0 */
    int ngroups;
    double *cs, *sn;           /* [nh * window] cos, sin of theta_m * j */
    fftw_plan r2c, c2r;        /* one H x W image, planned on 64-B aligned arrays */
} gauss;

static const fl_denoiser_vt gauss_vt;

/* ---- small helpers ------------------------------------------------------------------ */

static int signed_freq(int k, int n) { return k <= (n - 1) / 2 ? k : k - n; }

static int is_nyquist(int ky, int kx, int H, int W)
{
    return (H % 2 == 0 && ky == H / 2) || (W % 2 == 0 && kx == W / 2);
}

/* How many full-spectrum modes a half-spectrum column stands for: columns other than 0
 * and W/2 also stand for their mirror (-ky, W - kx), which has the same P, |k| and
 * statistics (the conjugate numbers). */
static double half_weight(int kx, int W) { return (kx == 0 || (W % 2 == 0 && kx == W / 2)) ? 1.0 : 2.0; }

static int64_t round_up8(int64_t n) { return (n + 7) / 8 * 8; }

static void *xalloc(size_t count, size_t size)
{
    size_t bytes;
    if (fl_mul_overflows(count ? count : 1, size, &bytes))
        return NULL;
    return fl_alloc_aligned(NULL, bytes, FL_ALIGN);
}

static void xfree(void *p, size_t count, size_t size) { fl_free(NULL, p, (count ? count : 1) * size); }

static double theta_of(const gauss *g, int ky_index, int kx_index)
{
    /* Phase in cycles first, reduced to [-1/2, 1/2], so large drifts keep full precision. */
    double cyc = (double)signed_freq(kx_index, g->W) * g->o.drift_x / g->W +
                 (double)signed_freq(ky_index, g->H) * g->o.drift_y / g->H;
    cyc -= nearbyint(cyc);
    return TWO_PI * cyc;
}

/* ---- options ---------------------------------------------------------------------- */

static const char *const mismatch_names[] = { "exact", "own", "mean" };

const char *fl_gauss_mismatch_name(int mismatch)
{
    return (mismatch >= 0 && mismatch < 3) ? mismatch_names[mismatch] : "?";
}

fl_status fl_gauss_mismatch_parse(const char *name, int *out, fl_error *err)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, mismatch_names[i]) == 0) {
            *out = i;
            return FL_OK;
        }
    return fl_error_set(err, FL_E_INVALID,
                        "gauss.mismatch: unknown value \"%s\"; accepted: exact, own, mean",
                        name ? name : "(null)");
}

void fl_gauss_opts_default(fl_gauss_opts *o)
{
    o->window = 16;
    o->channels = 3;
    o->height = 32;
    o->width = 32;
    o->rho = 0.95;
    o->drift_x = 0.5;
    o->drift_y = 0.25;
    o->k0 = 4.0;
    o->beta = 2.0;
    o->mismatch = FL_GAUSS_EXACT;
    o->param = FL_PARAM_EPS;
}

static fl_status check_int(const char *key, int v, int lo, int hi, fl_error *err)
{
    if (v < lo || v > hi)
        return fl_error_set(err, FL_E_INVALID, "gauss.%s: expected an integer in [%d, %d], got %d",
                            key, lo, hi, v);
    return FL_OK;
}

static fl_status check_opts(const fl_gauss_opts *o, fl_error *err)
{
    fl_status st;
    if ((st = check_int("window", o->window, 1, GAUSS_MAX_WINDOW, err)) ||
        (st = check_int("channels", o->channels, 1, GAUSS_MAX_CHANNELS, err)) ||
        (st = check_int("height", o->height, 1, GAUSS_MAX_SIDE, err)) ||
        (st = check_int("width", o->width, 1, GAUSS_MAX_SIDE, err)))
        return st;
    if ((int64_t)o->channels * o->height * o->width > INT32_MAX)
        return fl_error_set(err, FL_E_INVALID,
                            "gauss: channels x height x width = %d x %d x %d is over 2^31 - 1 elements per frame",
                            o->channels, o->height, o->width);
    if (!(o->rho >= 0.0 && o->rho < 1.0))
        return fl_error_set(err, FL_E_INVALID, "gauss.rho: expected a number in [0, 1), got %g", o->rho);
    if (!isfinite(o->drift_x))
        return fl_error_set(err, FL_E_INVALID, "gauss.drift_x: expected a finite number, got %g", o->drift_x);
    if (!isfinite(o->drift_y))
        return fl_error_set(err, FL_E_INVALID, "gauss.drift_y: expected a finite number, got %g", o->drift_y);
    if (!(o->k0 > 0.0 && isfinite(o->k0)))
        return fl_error_set(err, FL_E_INVALID, "gauss.k0: expected a finite number > 0, got %g", o->k0);
    if (!(o->beta >= 0.0 && o->beta <= GAUSS_MAX_BETA))
        return fl_error_set(err, FL_E_INVALID, "gauss.beta: expected a number in [0, %g], got %g",
                            GAUSS_MAX_BETA, o->beta);
    if (o->mismatch < 0 || o->mismatch > 2)
        return fl_error_set(err, FL_E_INVALID,
                            "gauss.mismatch: expected exact, own or mean (%d, %d, %d), got %d",
                            FL_GAUSS_EXACT, FL_GAUSS_OWN, FL_GAUSS_MEAN, o->mismatch);
    if (o->param != FL_PARAM_EPS && o->param != FL_PARAM_X0 && o->param != FL_PARAM_V)
        return fl_error_set(err, FL_E_INVALID, "gauss.param: expected eps, x0 or v, got %s",
                            fl_param_name(o->param));
    return FL_OK;
}

/* ---- creation ----------------------------------------------------------------------- */

static void gauss_free(fl_denoiser *d)
{
    gauss *g = (gauss *)d;
    if (!g)
        return;
    size_t nh = (size_t)g->nh, win = (size_t)g->o.window;
    if (g->r2c || g->c2r) {
        call_once(&planner_lock_once, install_planner_lock);
        if (g->r2c)
            fftw_destroy_plan(g->r2c);
        if (g->c2r)
            fftw_destroy_plan(g->c2r);
    }
    xfree(g->power, (size_t)g->HW, sizeof(double));
    xfree(g->hpow, nh, sizeof(double));
    xfree(g->htheta, nh, sizeof(double));
    xfree(g->hcos, nh, sizeof(double));
    xfree(g->hsin, nh, sizeof(double));
    xfree(g->group, nh, sizeof(int));
    xfree(g->gpow, nh, sizeof(double));
    xfree(g->cs, nh * win, sizeof(double));
    xfree(g->sn, nh * win, sizeof(double));
    fl_free(NULL, g, sizeof *g);
}

static fl_status build_tables(gauss *g, fl_error *err)
{
    int H = g->H, W = g->W, Wh = g->Wh;
    size_t nh = (size_t)g->nh, win = (size_t)g->o.window;
    g->power = xalloc((size_t)g->HW, sizeof(double));
    g->hpow = xalloc(nh, sizeof(double));
    g->htheta = xalloc(nh, sizeof(double));
    g->hcos = xalloc(nh, sizeof(double));
    g->hsin = xalloc(nh, sizeof(double));
    g->group = xalloc(nh, sizeof(int));
    g->gpow = xalloc(nh, sizeof(double));
    g->cs = xalloc(nh * win, sizeof(double));
    g->sn = xalloc(nh * win, sizeof(double));
    if (!g->power || !g->hpow || !g->htheta || !g->hcos || !g->hsin || !g->group || !g->gpow || !g->cs || !g->sn)
        return fl_error_set(err, FL_E_NOMEM, "gauss: out of memory for the %dx%d spectrum tables", H, W);

    /* P(k) = c (1 + |k|^2/k0^2)^-beta with (1/HW) sum_k P = 1, 0 on the Nyquist lines. */
    double sum = 0.0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < W; kx++) {
            double fy = signed_freq(ky, H), fx = signed_freq(kx, W);
            double p = is_nyquist(ky, kx, H, W)
                           ? 0.0
                           : pow(1.0 + (fy * fy + fx * fx) / (g->o.k0 * g->o.k0), -g->o.beta);
            g->power[(int64_t)ky * W + kx] = p;
            sum += p;
        }
    if (!(sum > 0.0)) /* only the DC mode survives underflow, and it is never 0 */
        return fl_error_set(err, FL_E_NUMERIC, "gauss: the spectrum sums to %g", sum);
    for (int64_t i = 0; i < g->HW; i++)
        g->power[i] *= (double)g->HW / sum;

    /* Half-spectrum tables; groups keyed by the integer |k|^2 (P depends on nothing else). */
    int maxq = (H / 2) * (H / 2) + (W / 2) * (W / 2);
    int *qgroup = fl_alloc(NULL, (size_t)(maxq + 1) * sizeof(int));
    if (!qgroup)
        return fl_error_set(err, FL_E_NOMEM, "gauss: out of memory for the spectrum tables");
    for (int q = 0; q <= maxq; q++)
        qgroup[q] = -1;
    g->ngroups = 0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < Wh; kx++) {
            int64_t m = (int64_t)ky * Wh + kx;
            int fy = signed_freq(ky, H), fx = signed_freq(kx, W);
            int q = fy * fy + fx * fx;
            double p = g->power[(int64_t)ky * W + kx];
            g->hpow[m] = p;
            g->htheta[m] = theta_of(g, ky, kx);
            g->hcos[m] = cos(g->htheta[m]);
            g->hsin[m] = sin(g->htheta[m]);
            if (p > 0.0) {
                if (qgroup[q] < 0) {
                    qgroup[q] = g->ngroups;
                    g->gpow[g->ngroups++] = p;
                }
                g->group[m] = qgroup[q];
            } else {
                g->group[m] = -1;
            }
            for (size_t j = 0; j < win; j++) {
                /* cos/sin of theta * j from the phase in cycles, reduced before scaling. */
                double cyc = g->htheta[m] / TWO_PI * (double)j;
                cyc -= nearbyint(cyc);
                g->cs[(size_t)m * win + j] = cos(TWO_PI * cyc);
                g->sn[(size_t)m * win + j] = sin(TWO_PI * cyc);
            }
        }
    fl_free(NULL, qgroup, (size_t)(maxq + 1) * sizeof(int));
    return FL_OK;
}

static fl_status make_plans(gauss *g, fl_error *err)
{
    double *r = xalloc((size_t)g->rstride, sizeof(double));
    double *c = xalloc((size_t)g->cstride, 2 * sizeof(double));
    if (!r || !c) {
        xfree(r, (size_t)g->rstride, sizeof(double));
        xfree(c, (size_t)g->cstride, 2 * sizeof(double));
        return fl_error_set(err, FL_E_NOMEM, "gauss: out of memory for the FFT plans");
    }
    call_once(&planner_lock_once, install_planner_lock);
    /* FFTW_ESTIMATE neither reads nor writes the arrays; eval runs the plans on its own
     * scratch through the new-array interface, which needs the same (64-B) alignment. */
    g->r2c = fftw_plan_dft_r2c_2d(g->H, g->W, r, (fftw_complex *)c, FFTW_ESTIMATE);
    g->c2r = fftw_plan_dft_c2r_2d(g->H, g->W, (fftw_complex *)c, r, FFTW_ESTIMATE);
    xfree(r, (size_t)g->rstride, sizeof(double));
    xfree(c, (size_t)g->cstride, 2 * sizeof(double));
    if (!g->r2c || !g->c2r)
        return fl_error_set(err, FL_E_UNSUPPORTED, "gauss: FFTW could not plan a %dx%d transform",
                            g->H, g->W);
    return FL_OK;
}

fl_status fl_gauss_new(const fl_gauss_opts *o, fl_denoiser **out, fl_error *err)
{
    if (!o || !out)
        return fl_error_set(err, FL_E_INVALID, "gauss: options and output must not be NULL");
    *out = NULL;
    fl_status st = check_opts(o, err);
    if (st)
        return st;
    gauss *g = fl_alloc(NULL, sizeof *g);
    if (!g)
        return fl_error_set(err, FL_E_NOMEM, "gauss: out of memory");
    memset(g, 0, sizeof *g);
    g->base.vt = &gauss_vt;
    g->base.window = o->window;
    g->base.channels = o->channels;
    g->base.height = o->height;
    g->base.width = o->width;
    g->base.param = o->param;
    g->base.per_frame_t = 1;
    g->base.accepts_short = 1;
    g->o = *o;
    g->H = o->height;
    g->W = o->width;
    g->C = o->channels;
    g->Wh = o->width / 2 + 1;
    g->HW = (int64_t)g->H * g->W;
    g->nh = (int64_t)g->H * g->Wh;
    g->rstride = round_up8(g->HW);
    g->cstride = round_up8(g->nh); /* 4 complex = 64 B would do; 8 keeps it simple */
    if ((st = build_tables(g, err)) || (st = make_plans(g, err))) {
        gauss_free(&g->base);
        return st;
    }
    *out = &g->base;
    return FL_OK;
}

int fl_gauss_is(const fl_denoiser *d) { return d && d->vt == &gauss_vt; }

const fl_gauss_opts *fl_gauss_opts_of(const fl_denoiser *d)
{
    FL_ASSERT(fl_gauss_is(d));
    return &((const gauss *)d)->o;
}

const double *fl_gauss_power(const fl_denoiser *d)
{
    FL_ASSERT(fl_gauss_is(d));
    return ((const gauss *)d)->power;
}

double fl_gauss_phase(const fl_denoiser *d, int ky_index, int kx_index)
{
    FL_ASSERT(fl_gauss_is(d));
    const gauss *g = (const gauss *)d;
    FL_ASSERT(ky_index >= 0 && ky_index < g->H && kx_index >= 0 && kx_index < g->W);
    return theta_of(g, ky_index, kx_index);
}

/* ---- small dense linear algebra (n <= window, row-major, double) --------------------- */

/* In-place lower Cholesky of the symmetric positive definite a; 0 on success, else the
 * 1-based failing minor. */
static int cholesky(int n, double *a)
{
    for (int j = 0; j < n; j++) {
        double d = a[j * n + j];
        for (int k = 0; k < j; k++)
            d -= a[j * n + k] * a[j * n + k];
        if (!(d > 0.0))
            return j + 1;
        d = sqrt(d);
        a[j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = a[i * n + j];
            for (int k = 0; k < j; k++)
                s -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = s / d;
        }
    }
    return 0;
}

/* x = (L L^T)^-1 x. */
static void cholesky_solve(int n, const double *l, double *x)
{
    for (int i = 0; i < n; i++) {
        double s = x[i];
        for (int k = 0; k < i; k++)
            s -= l[i * n + k] * x[k];
        x[i] = s / l[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = x[i];
        for (int k = i + 1; k < n; k++)
            s -= l[k * n + i] * x[k];
        x[i] = s / l[i * n + i];
    }
}

/* Cyclic Jacobi: a (symmetric, destroyed) = V diag(w) V^T, eigenvector m in column m. */
static void jacobi_eigen(int n, double *a, double *v, double *w)
{
    for (int i = 0; i < n * n; i++)
        v[i] = 0.0;
    for (int i = 0; i < n; i++)
        v[i * n + i] = 1.0;
    double total = 0.0;
    for (int i = 0; i < n * n; i++)
        total += a[i] * a[i];
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0.0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                off += 2.0 * a[p * n + q] * a[p * n + q];
        if (off <= 1e-32 * total)
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (apq == 0.0)
                    continue;
                double th = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                double t = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q of a and v */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q of a */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                a[p * n + q] = a[q * n + p] = 0.0;
            }
    }
    for (int i = 0; i < n; i++)
        w[i] = a[i * n + i];
}

/* ---- evaluation --------------------------------------------------------------------- */

/* G(P) for every group into gm [ngroups][n][n]. pa/ps: the levels the posterior assumes;
 * exact (uniform == 0): frame j at (pa[j], ps[j]) jointly; uniform: row j from the
 * posterior with every frame at (pa[j], ps[j]). work: 3 n^2 + n doubles. */
static fl_status build_gains(const gauss *g, int n, const double *pa, const double *ps, int uniform,
                             double *gm, double *work, fl_error *err)
{
    double *k = work, *m = work + n * n, *u = work + 2 * n * n, *lam = work + 3 * n * n;
    for (int j = 0; j < n; j++)
        for (int l = 0; l < n; l++)
            k[j * n + l] = pow(g->o.rho, abs(j - l));
    if (uniform) {
        memcpy(m, k, (size_t)n * n * sizeof(double));
        jacobi_eigen(n, m, u, lam);
        for (int gi = 0; gi < g->ngroups; gi++) {
            double p = g->gpow[gi], *gg = gm + (size_t)gi * n * n;
            for (int j = 0; j < n; j++) {
                double a = pa[j], s2 = ps[j] * ps[j];
                double *f = m; /* m is free again: the gain per eigenvalue, for row j */
                for (int e = 0; e < n; e++)
                    f[e] = p * a * lam[e] / (p * a * a * lam[e] + s2);
                for (int l = 0; l < n; l++) {
                    double acc = 0.0;
                    for (int e = 0; e < n; e++)
                        acc += u[j * n + e] * f[e] * u[l * n + e];
                    gg[j * n + l] = acc;
                }
            }
        }
        return FL_OK;
    }
    for (int gi = 0; gi < g->ngroups; gi++) {
        double p = g->gpow[gi], *gg = gm + (size_t)gi * n * n;
        for (int j = 0; j < n; j++)
            for (int l = 0; l <= j; l++)
                m[j * n + l] = p * pa[j] * pa[l] * k[j * n + l] + (j == l ? ps[j] * ps[j] : 0.0);
        int bad = cholesky(n, m);
        if (bad)
            return fl_error_set(err, FL_E_NUMERIC,
                                "gauss: P A K A + S is not positive definite (P = %g, minor %d)", p, bad);
        /* G^T = M^-1 (P A K): row j of G is M^-1 times column j of P A K. */
        for (int j = 0; j < n; j++) {
            double *z = gg + j * n;
            for (int l = 0; l < n; l++)
                z[l] = p * pa[l] * k[l * n + j];
            cholesky_solve(n, m, z);
        }
    }
    return FL_OK;
}

static fl_status gauss_run(gauss *g, const fl_tensor *x, const fl_level *levels, int mode,
                           fl_tensor *out, fl_arena *scratch, fl_error *err)
{
    if (fl_tensor_device(x).kind != FL_DEVICE_CPU || fl_tensor_device(out).kind != FL_DEVICE_CPU)
        return fl_error_set(err, FL_E_DEVICE, "gauss: window and output must be on the CPU");
    int n = (int)x->shape[0], C = g->C, win = g->o.window;
    int64_t HW = g->HW, nh = g->nh;
    size_t nimg = (size_t)n * (size_t)C;
    size_t rcount = nimg * (size_t)g->rstride, ccount = nimg * (size_t)g->cstride * 2;
    size_t gcount = (size_t)g->ngroups * (size_t)n * (size_t)n, wcount = 3 * (size_t)n * n + 6 * (size_t)n;
    double *rbuf = fl_arena_array(scratch, rcount, sizeof(double), 0);
    double *cbuf = fl_arena_array(scratch, ccount, sizeof(double), 0);
    double *gm = fl_arena_array(scratch, gcount, sizeof(double), 0);
    double *work = fl_arena_array(scratch, wcount, sizeof(double), 0);
    if (!rbuf || !cbuf || !gm || !work)
        return fl_error_set(err, FL_E_NOMEM, "gauss: out of memory for a window of %d frames", n);
    fl_status st = FL_OK;
    /* The levels the posterior assumes (own: per frame, each frame's row from its own
     * uniform-level posterior; mean: the pretend level), which are also the levels the
     * emitted eps / v are expressed in. */
    double *pa = work + 3 * (size_t)n * n + n, *ps = pa + n, *yr = ps + n, *yi = yr + n, *zr = yi + n;
    double *zi = work; /* reuses the gain scratch once the gains are built */
    if (mode == FL_GAUSS_MEAN) {
        double abar = 0.0;
        for (int j = 0; j < n; j++) {
            double a2 = levels[j].alpha * levels[j].alpha, s2 = levels[j].sigma * levels[j].sigma;
            abar += a2 / (a2 + s2);
        }
        abar /= n;
        if (abar > 1.0)
            abar = 1.0;
        for (int j = 0; j < n; j++) {
            pa[j] = sqrt(abar);
            ps[j] = sqrt(1.0 - abar);
        }
    } else {
        for (int j = 0; j < n; j++) {
            pa[j] = levels[j].alpha;
            ps[j] = levels[j].sigma;
        }
    }
    if ((st = build_gains(g, n, pa, ps, mode != FL_GAUSS_EXACT, gm, work, err)))
        return st;

    /* Forward transforms (unnormalised: the map is linear, so one 1/HW at the end). */
    const float *xs = fl_tensor_data(x);
    for (size_t i = 0; i < nimg; i++) {
        double *r = rbuf + i * (size_t)g->rstride;
        const float *src = xs + i * (size_t)HW;
        for (int64_t p = 0; p < HW; p++)
            r[p] = src[p];
        fftw_execute_dft_r2c(g->r2c, r, (fftw_complex *)(cbuf + 2 * i * (size_t)g->cstride));
    }

    /* Per mode: un-rotate, apply G(P), rotate back. */
    for (int64_t mi = 0; mi < nh; mi++) {
        int gi = g->group[mi];
        const double *cs = g->cs + mi * win, *sn = g->sn + mi * win;
        const double *gg = gm + (size_t)(gi < 0 ? 0 : gi) * n * n;
        for (int c = 0; c < C; c++) {
            double *base = cbuf + 2 * ((size_t)c * (size_t)g->cstride + (size_t)mi);
            size_t step = 2 * (size_t)C * (size_t)g->cstride; /* from frame j to j + 1 */
            if (gi < 0) {
                for (int j = 0; j < n; j++)
                    base[j * step] = base[j * step + 1] = 0.0;
                continue;
            }
            for (int j = 0; j < n; j++) {
                double re = base[j * step], im = base[j * step + 1];
                yr[j] = re * cs[j] - im * sn[j];
                yi[j] = re * sn[j] + im * cs[j];
            }
            for (int j = 0; j < n; j++) {
                double ar = 0.0, ai = 0.0;
                const double *row = gg + (size_t)j * n;
                for (int l = 0; l < n; l++) {
                    ar += row[l] * yr[l];
                    ai += row[l] * yi[l];
                }
                zr[j] = ar;
                zi[j] = ai;
            }
            for (int j = 0; j < n; j++) {
                base[j * step] = zr[j] * cs[j] + zi[j] * sn[j];
                base[j * step + 1] = zi[j] * cs[j] - zr[j] * sn[j];
            }
        }
    }

    /* Back to pixels and into the model's parameterization, in double until the store.
     * own/mean emit eps with the level they pretend the frame is at (pa, ps). */
    float *os = fl_tensor_data(out);
    double inv = 1.0 / (double)HW;
    for (size_t i = 0; i < nimg; i++) {
        int j = (int)(i / (size_t)C);
        double *r = rbuf + i * (size_t)g->rstride;
        fftw_execute_dft_c2r(g->c2r, (fftw_complex *)(cbuf + 2 * i * (size_t)g->cstride), r);
        const float *y = xs + i * (size_t)HW;
        float *dst = os + i * (size_t)HW;
        double a = pa[j], s = ps[j];
        switch (g->o.param) {
        case FL_PARAM_X0:
            for (int64_t p = 0; p < HW; p++)
                dst[p] = (float)(r[p] * inv);
            break;
        case FL_PARAM_V:
            for (int64_t p = 0; p < HW; p++) {
                double x0 = r[p] * inv, eps = s > 0.0 ? (y[p] - a * x0) / s : 0.0;
                dst[p] = (float)(a * eps - s * x0);
            }
            break;
        default: /* FL_PARAM_EPS */
            for (int64_t p = 0; p < HW; p++)
                dst[p] = s > 0.0 ? (float)((y[p] - a * (r[p] * inv)) / s) : 0.0f;
            break;
        }
    }
    return st;
}

static fl_status gauss_eval(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                            const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err)
{
    (void)cond;
    gauss *g = (gauss *)d;
    return gauss_run(g, x, levels, g->o.mismatch, out, scratch, err);
}

static fl_status gauss_eval_exact(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                                  const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err)
{
    (void)cond;
    return gauss_run((gauss *)d, x, levels, FL_GAUSS_EXACT, out, scratch, err);
}

static const fl_denoiser_vt gauss_vt = { "gauss", gauss_eval, gauss_eval_exact, gauss_free };

/* ---- sampling ----------------------------------------------------------------------- */

static fl_status check_frames(const gauss *g, const fl_tensor *t, const char *what, int64_t min_n,
                              fl_error *err)
{
    if (t->dtype != FL_F32)
        return fl_error_set(err, FL_E_DTYPE, "gauss: %s must be f32", what);
    if (!t->storage || fl_tensor_device(t).kind != FL_DEVICE_CPU)
        return fl_error_set(err, FL_E_DEVICE, "gauss: %s must be a CPU tensor", what);
    if (t->ndim != 4 || t->shape[0] < min_n || t->shape[1] != g->C || t->shape[2] != g->H ||
        t->shape[3] != g->W) {
        char buf[96];
        return fl_error_set(err, FL_E_SHAPE, "gauss: %s is %s, expected [N >= %lld, %d, %d, %d]", what,
                            fl_tensor_describe(t, buf, sizeof buf), (long long)min_n, g->C, g->H, g->W);
    }
    return FL_OK;
}

fl_status fl_gauss_sample(const fl_denoiser *d, const fl_rng *rng, fl_rng_addr addr,
                          int64_t n_frames, fl_tensor *out, fl_error *err)
{
    if (!fl_gauss_is(d))
        return fl_error_set(err, FL_E_INVALID, "gauss sample: the denoiser is not a gauss model");
    const gauss *g = (const gauss *)d;
    if (!rng)
        return fl_error_set(err, FL_E_INVALID, "gauss sample: rng must not be NULL");
    if (n_frames < 1)
        return fl_error_set(err, FL_E_RANGE, "gauss sample: n_frames must be >= 1, got %lld",
                            (long long)n_frames);
    if ((uint64_t)addr.frame + (uint64_t)(n_frames - 1) > UINT32_MAX)
        return fl_error_set(err, FL_E_RANGE,
                            "gauss sample: %lld frames from frame address %u run past 2^32 - 1",
                            (long long)n_frames, addr.frame);
    fl_status st = check_frames(g, out, "sample output", 1, err);
    if (st)
        return st;
    if (out->shape[0] != n_frames || !fl_tensor_is_contiguous(out))
        return fl_error_set(err, FL_E_SHAPE, "gauss sample: output must be contiguous with %lld frames",
                            (long long)n_frames);
    int C = g->C;
    int64_t HW = g->HW, nh = g->nh;
    size_t xcount = 2 * (size_t)C * (size_t)g->cstride, wcount = 2 * (size_t)g->cstride;
    double *xs = xalloc(xcount, sizeof(double)); /* the state X_t, per channel */
    double *ws = xalloc(wcount, sizeof(double));
    double *r = xalloc((size_t)g->rstride, sizeof(double));
    if (!xs || !ws || !r) {
        st = fl_error_set(err, FL_E_NOMEM, "gauss sample: out of memory");
        goto done;
    }
    double rho = g->o.rho, innov = sqrt(1.0 - rho * rho), scale = 1.0 / sqrt((double)HW);
    float *dst = fl_tensor_data(out);
    for (int64_t t = 0; t < n_frames; t++) {
        fl_rng_addr a = { addr.stream, addr.frame + (uint32_t)t, addr.step };
        for (int c = 0; c < C; c++) {
            double *x = xs + 2 * (size_t)c * (size_t)g->cstride;
            fl_rng_normal_f64(rng, a, (uint64_t)c * (uint64_t)HW, (size_t)HW, r);
            fftw_execute_dft_r2c(g->r2c, r, (fftw_complex *)ws);
            for (int64_t m = 0; m < nh; m++) {
                double sp = sqrt(g->hpow[m]) * scale; /* orthonormal W times sqrt(P) */
                double wr = ws[2 * m] * sp, wi = ws[2 * m + 1] * sp;
                if (t == 0) {
                    x[2 * m] = wr;
                    x[2 * m + 1] = wi;
                } else {
                    double c0 = g->hcos[m], s0 = g->hsin[m];
                    double xr = x[2 * m], xi = x[2 * m + 1];
                    x[2 * m] = rho * (xr * c0 + xi * s0) + innov * wr;
                    x[2 * m + 1] = rho * (xi * c0 - xr * s0) + innov * wi;
                }
                ws[2 * m] = x[2 * m]; /* c2r destroys its input: transform a copy */
                ws[2 * m + 1] = x[2 * m + 1];
            }
            fftw_execute_dft_c2r(g->c2r, (fftw_complex *)ws, r);
            float *f = dst + ((size_t)t * (size_t)C + (size_t)c) * (size_t)HW;
            for (int64_t p = 0; p < HW; p++)
                f[p] = (float)(r[p] * scale);
        }
    }
done:
    xfree(xs, xcount, sizeof(double));
    xfree(ws, wcount, sizeof(double));
    xfree(r, (size_t)g->rstride, sizeof(double));
    return st;
}

/* ---- statistics --------------------------------------------------------------------- */

/* Per half-spectrum mode, summed over channels: pw = sum_t |X_t|^2 (all N frames);
 * over t < N-1: num = sum Re(X_{t+1} conj X_t e^{i theta}), numr = the same without the
 * phase, den = sum (|X_t|^2 + |X_{t+1}|^2)/2. acc is [4][nh]. */
static fl_status accumulate(const gauss *g, const fl_tensor *frames, double *acc, fl_error *err)
{
    int C = g->C, H = g->H, W = g->W;
    int64_t N = frames->shape[0], nh = g->nh;
    double *pw = acc, *num = acc + nh, *numr = acc + 2 * nh, *den = acc + 3 * nh;
    size_t pcount = 2 * (size_t)C * (size_t)g->cstride, ccount = 2 * (size_t)g->cstride;
    double *prev = xalloc(pcount, sizeof(double));
    double *cur = xalloc(ccount, sizeof(double));
    double *r = xalloc((size_t)g->rstride, sizeof(double));
    fl_status st = FL_OK;
    if (!prev || !cur || !r) {
        st = fl_error_set(err, FL_E_NOMEM, "gauss stats: out of memory");
        goto done;
    }
    memset(acc, 0, 4 * (size_t)nh * sizeof(double));
    double scale = 1.0 / sqrt((double)g->HW);
    const float *base = fl_tensor_data(frames);
    for (int64_t t = 0; t < N; t++)
        for (int c = 0; c < C; c++) {
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    r[y * W + x] = base[t * frames->stride[0] + c * frames->stride[1] +
                                        y * frames->stride[2] + x * frames->stride[3]];
            fftw_execute_dft_r2c(g->r2c, r, (fftw_complex *)cur);
            double *pv = prev + 2 * (size_t)c * (size_t)g->cstride;
            for (int64_t m = 0; m < nh; m++) {
                double xr = cur[2 * m] * scale, xi = cur[2 * m + 1] * scale;
                double p2 = xr * xr + xi * xi;
                pw[m] += p2;
                if (t > 0) {
                    double qr = pv[2 * m], qi = pv[2 * m + 1];
                    double rr = xr * qr + xi * qi, ri = xi * qr - xr * qi; /* X_{t+1} conj X_t */
                    numr[m] += rr;
                    num[m] += rr * g->hcos[m] - ri * g->hsin[m];
                    den[m] += 0.5 * (p2 + qr * qr + qi * qi);
                }
                pv[2 * m] = xr;
                pv[2 * m + 1] = xi;
            }
        }
done:
    xfree(prev, pcount, sizeof(double));
    xfree(cur, ccount, sizeof(double));
    xfree(r, (size_t)g->rstride, sizeof(double));
    return st;
}

/* g(r) = sum_{t,s < N} r^|t-s|. */
static double lag_sum(int64_t N, double r)
{
    double s = (double)N, rd = 1.0;
    for (int64_t d = 1; d < N; d++) {
        rd *= r;
        if (rd == 0.0)
            break;
        s += 2.0 * (double)(N - d) * rd;
    }
    return s;
}

/* Var(sum_{t=0}^{N-2} f_t) for one mode of one channel of the true process, where
 * f_t = Re(c X_{t+1} conj X_t) - (r/2)(|X_t|^2 + |X_{t+1}|^2): the delta-method variance of
 * a lag-1 correlation estimator num/den about r. Isserlis' theorem from the autocovariance
 * gamma(h) = E[X_{t+h} conj X_t] = P rho^|h| e^{-i theta h}: a complex mode is circular
 * (E[X X] = 0), a real one (k = -k) is not and has the extra pairing. Cov(f_t, f_s)
 * depends on h = t - s only (and is even in h) and decays like rho^2|h|, so the sum stops
 * once that is negligible. gamma(h-1..h+1) slides along h by one complex product. */
typedef struct qterm {
    double complex a;
    int oa, ob; /* a X_{t+oa} conj X_{t+ob} */
} qterm;

static double quad_var(int real, double P, double rho, double cth, double sth, double complex c,
                       double r, int64_t N)
{
    const qterm q[3] = { { c, 1, 0 }, { -0.5 * r, 0, 0 }, { -0.5 * r, 1, 1 } };
    double complex step = real ? rho : rho * CMPLX(cth, -sth); /* gamma(h+1) = gamma(h) step */
    double complex gw[3] = { real ? P * rho : P * rho * CMPLX(cth, sth), P, P * step };
    int64_t L = N - 1;
    double var = 0.0;
    for (int64_t h = 0; h < L; h++) {
        double ch = 0.0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                /* gamma(h + d) = gw[d + 1]; gamma(-h + d) = conj gamma(h - d); |d| <= 1 */
                if (real) {
                    double g1 = creal(gw[1 + q[i].oa - q[j].oa]), g2 = creal(gw[1 + q[i].ob - q[j].ob]);
                    double g3 = creal(gw[1 + q[i].oa - q[j].ob]), g4 = creal(gw[1 + q[i].ob - q[j].oa]);
                    ch += creal(q[i].a) * creal(q[j].a) * (g1 * g2 + g3 * g4);
                } else {
                    double complex uv = gw[1 + q[i].oa - q[j].ob] * conj(gw[1 - q[j].oa + q[i].ob]);
                    double complex ucv = gw[1 + q[i].oa - q[j].oa] * conj(gw[1 - q[j].ob + q[i].ob]);
                    ch += 0.5 * creal(q[i].a * q[j].a * uv + q[i].a * conj(q[j].a) * ucv);
                }
            }
        var += (h == 0 ? 1.0 : 2.0) * (double)(L - h) * ch;
        if (h >= 2 && cabs(gw[0]) < 1e-10 * P) /* rho^2(h-1) < 1e-20: the rest is negligible */
            break;
        gw[0] = gw[1];
        gw[1] = gw[2];
        gw[2] = gw[2] * step;
    }
    return var;
}

static fl_status stats_begin(const fl_denoiser *d, const fl_tensor *frames, const char *who,
                             double **acc, fl_error *err)
{
    *acc = NULL;
    if (!fl_gauss_is(d))
        return fl_error_set(err, FL_E_INVALID, "%s: the denoiser is not a gauss model", who);
    const gauss *g = (const gauss *)d;
    fl_status st = check_frames(g, frames, "frames", 2, err);
    if (st)
        return st;
    *acc = xalloc(4 * (size_t)g->nh, sizeof(double));
    if (!*acc)
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", who);
    if ((st = accumulate(g, frames, *acc, err))) {
        xfree(*acc, 4 * (size_t)g->nh, sizeof(double));
        *acc = NULL;
    }
    return st;
}

fl_status fl_gauss_stats(const fl_denoiser *d, const fl_tensor *frames, fl_gauss_stats_result *st,
                         fl_error *err)
{
    double *acc;
    fl_status s = stats_begin(d, frames, "gauss stats", &acc, err);
    if (s)
        return s;
    const gauss *g = (const gauss *)d;
    int H = g->H, W = g->W, Wh = g->Wh, C = g->C;
    int64_t N = frames->shape[0], nh = g->nh;
    double *pw = acc, *num = acc + nh, *numr = acc + 2 * nh, *den = acc + 3 * nh;

    /* The split radius: half the largest |k| with P > 0. */
    double rmax = 0.0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < W; kx++)
            if (g->power[ky * W + kx] > 0.0) {
                double fy = signed_freq(ky, H), fx = signed_freq(kx, W);
                rmax = fmax(rmax, sqrt(fy * fy + fx * fx));
            }
    double split = 0.5 * rmax;

    /* Full-spectrum sums from the half spectrum (half_weight); per band: sum P, sum P^2,
     * sum of the empirical mean powers. */
    double sp[2] = { 0, 0 }, sp2[2] = { 0, 0 }, emp[2] = { 0, 0 };
    double snum = 0, snumr = 0, sden = 0, spcos = 0;
    double rho = g->o.rho;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < Wh; kx++) {
            int64_t m = (int64_t)ky * Wh + kx;
            spcos += half_weight(kx, W) * g->hpow[m] * g->hcos[m];
        }
    double sumP_all = 0.0;
    for (int64_t i = 0; i < g->HW; i++)
        sumP_all += g->power[i];
    double rraw = rho * spcos / sumP_all, vcomp = 0.0, vraw = 0.0;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < Wh; kx++) {
            int64_t m = (int64_t)ky * Wh + kx;
            double w = half_weight(kx, W);
            double fy = signed_freq(ky, H), fx = signed_freq(kx, W);
            int band = sqrt(fy * fy + fx * fx) <= split ? 0 : 1;
            double p = g->hpow[m];
            sp[band] += w * p;
            sp2[band] += w * p * p;
            emp[band] += w * pw[m] / ((double)N * C);
            snum += w * num[m];
            snumr += w * numr[m];
            sden += w * den[m];
            if (p > 0.0) {
                /* Modes k and -k carry the same numbers: a pair adds 2^2 times one mode's
                 * variance, spread over its w/2-weighted half-spectrum entries. */
                int self = (2 * ky) % H == 0 && (2 * kx) % W == 0;
                double mult = w * (self ? 1.0 : 2.0);
                double ct = g->hcos[m], stt = g->hsin[m];
                vcomp += mult * quad_var(self, p, rho, ct, stt, CMPLX(ct, stt), rho, N);
                vraw += mult * quad_var(self, p, rho, ct, stt, 1.0, rraw, N);
            }
        }
    double sumP = sp[0] + sp[1], sumP2 = sp2[0] + sp2[1];
    double gp = lag_sum(N, rho * rho) / ((double)N * N * C); /* variance factor of a power mean */
    memset(st, 0, sizeof *st);
    st->frames = N;
    st->power_ratio = (emp[0] + emp[1]) / sumP;
    st->power_ratio_low = sp[0] > 0 ? emp[0] / sp[0] : 0.0;
    st->power_ratio_high = sp[1] > 0 ? emp[1] / sp[1] : 0.0;
    st->corr_lag1 = sden > 0 ? snum / sden : 0.0;
    st->corr_lag1_raw = sden > 0 ? snumr / sden : 0.0;
    /* The frame mean is the DC mode: X_t(0) / sqrt(HW), averaged over t and c. */
    double dc = 0.0;
    {
        const float *b = fl_tensor_data(frames);
        for (int64_t t = 0; t < N; t++)
            for (int c = 0; c < C; c++)
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        dc += b[t * frames->stride[0] + c * frames->stride[1] + y * frames->stride[2] +
                                x * frames->stride[3]];
    }
    st->mean = dc / ((double)N * C * g->HW);
    st->radius_split = split;
    st->corr_lag1_raw_true = rraw;
    st->power_ratio_se = sqrt(2.0 * gp * sumP2) / sumP;
    st->power_ratio_low_se = sp[0] > 0 ? sqrt(2.0 * gp * sp2[0]) / sp[0] : 0.0;
    st->power_ratio_high_se = sp[1] > 0 ? sqrt(2.0 * gp * sp2[1]) / sp[1] : 0.0;
    /* channels are independent copies: variance x C over a mean denominator x C */
    st->corr_lag1_se = sqrt(vcomp * C) / ((double)(N - 1) * C * sumP);
    st->corr_lag1_raw_se = sqrt(vraw * C) / ((double)(N - 1) * C * sumP);
    st->mean_se = sqrt(g->power[0] * lag_sum(N, rho) / ((double)N * N * C * g->HW));
    xfree(acc, 4 * (size_t)nh, sizeof(double));
    return FL_OK;
}

fl_status fl_gauss_mode_stats(const fl_denoiser *d, const fl_tensor *frames, double *power,
                              double *corr, fl_error *err)
{
    double *acc;
    fl_status s = stats_begin(d, frames, "gauss mode stats", &acc, err);
    if (s)
        return s;
    const gauss *g = (const gauss *)d;
    int H = g->H, W = g->W, Wh = g->Wh;
    int64_t N = frames->shape[0], nh = g->nh;
    double *pw = acc, *num = acc + nh, *den = acc + 3 * nh;
    for (int ky = 0; ky < H; ky++)
        for (int kx = 0; kx < W; kx++) {
            /* Columns past W/2 are the conjugate mirrors of (-ky, W - kx). */
            int64_t m = kx < Wh ? (int64_t)ky * Wh + kx : (int64_t)((H - ky) % H) * Wh + (W - kx);
            if (power)
                power[ky * W + kx] = pw[m] / ((double)N * g->C);
            if (corr)
                corr[ky * W + kx] = den[m] > 0 ? num[m] / den[m] : 0.0;
        }
    xfree(acc, 4 * (size_t)nh, sizeof(double));
    return FL_OK;
}
