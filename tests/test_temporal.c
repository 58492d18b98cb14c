/* cmocka suite for eval/temporal and eval/metric: hand-computed videos (constant,
 * alternating, ramps) through every module, SSIM against a direct 2-D sum, the spectral
 * split of white noise against its bin count, drift, trends, the gauss oracle against
 * fl_gauss_stats, windows and series descriptions, online-in-chunks = offline =
 * save/restore, option reading from the config tree, errors and allocation failures. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/metric.h"
#include "eval/temporal.h"
#include "models/gauss.h"

#define TWO_PI 6.283185307179586476925286766559

/* ---- helpers ------------------------------------------------------------------------ */

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

/* A latent video [n, c, h, w] f32 filled by f(t, c, y, x). */
typedef double (*pixel_fn)(void *ctx, int t, int c, int y, int x);

static fl_tensor video(int n, int c, int h, int w, pixel_fn f, void *ctx)
{
    fl_tensor v = FL_TENSOR_NULL;
    fl_error err;
    int64_t shape[4] = { n, c, h, w };
    expect_ok(fl_tensor_empty(&v, FL_F32, 4, shape, NULL, &err), &err, "video");
    float *p = fl_tensor_data(&v);
    for (int t = 0; t < n; t++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    *p++ = (float)f(ctx, t, ch, y, x);
    return v;
}

/* Runs the named modules over a whole video (offline) and returns the log. */
static fl_series_log *run_metrics(const char *const *names, size_t n, const fl_metric_opts *opts,
                                  const fl_frame_format *fmt, fl_denoiser *model, const fl_tensor *frames,
                                  int64_t first)
{
    fl_metric_spec specs[16];
    for (size_t i = 0; i < n; i++) {
        specs[i].name = names[i];
        specs[i].opts = opts;
    }
    fl_error err;
    fl_series_log *log = NULL;
    fl_metrics *m = NULL;
    expect_ok(fl_series_log_new(NULL, &log, &err), &err, "log");
    fl_metric_emit e = fl_series_log_emit(log);
    expect_ok(fl_metrics_new(specs, n, fmt, model, &e, NULL, &m, &err), &err, "metrics new");
    expect_ok(fl_metrics_put_tensor(m, first, frames, &err), &err, "put");
    expect_ok(fl_metrics_finish(m, &err), &err, "finish");
    fl_metrics_free(m);
    return log;
}

static size_t series(const fl_series_log *log, const char *name, const int64_t **idx, const double **val)
{
    size_t n = 0;
    fl_error err;
    expect_ok(fl_series_log_get(log, name, idx, val, &n, &err), &err, name);
    return n;
}

/* Every value of a series equals want (within tol), and it has `count` values. */
static void expect_series(const fl_series_log *log, const char *name, size_t count, double want, double tol)
{
    const double *v;
    size_t n = series(log, name, NULL, &v);
    if (n != count)
        fail_msg("%s: %zu values, expected %zu", name, n, count);
    for (size_t i = 0; i < n; i++)
        if (!(fabs(v[i] - want) <= tol) && !(isnan(want) && isnan(v[i])))
            fail_msg("%s[%zu] = %.17g, expected %.17g", name, i, v[i], want);
}

static double const_fn(void *ctx, int t, int c, int y, int x)
{
    (void)t, (void)c, (void)y, (void)x;
    return *(double *)ctx;
}

/* ---- hand-computed videos ------------------------------------------------------------- */

static const char *const all_latent[] = { "adjacent", "flicker", "motion", "drift", "spectral", "stats" };

/* A constant video: no difference anywhere. */
static void test_constant_video(void **state)
{
    (void)state;
    double v = 0.3;
    fl_tensor x = video(40, 2, 12, 12, const_fn, &v);
    fl_frame_format fmt = { FL_FRAME_LATENT, 2, 12, 12 };
    fl_series_log *log = run_metrics(all_latent, 6, NULL, &fmt, NULL, &x, 0);
    expect_series(log, "adjacent_mse", 39, 0.0, 0.0);
    expect_series(log, "adjacent_psnr", 39, FL_PSNR_MAX, 0.0);
    expect_series(log, "adjacent_ssim", 39, 1.0, 0.0);
    expect_series(log, "motion", 39, 0.0, 0.0);
    /* windows at 0 and 16, and the trailing one at 32 (8 frames = min_frames) */
    expect_series(log, "motion_window", 3, 0.0, 0.0);
    expect_series(log, "flicker", 3, 1.0, 0.0);
    expect_series(log, "drift_anchor", 40, 0.0, 0.0);
    expect_series(log, "drift_gap1", 39, 0.0, 0.0);
    expect_series(log, "drift_gap32", 8, 0.0, 0.0);
    expect_series(log, "drift_mean", 3, 0.0, 0.0);
    expect_series(log, "drift_std", 3, 0.0, 1e-7); /* float 0.3 squared, minus the mean squared */
    expect_series(log, "drift_fd", 3, 0.0, 0.0);
    expect_series(log, "spectral_hf_spatial", 3, NAN, 0.0); /* no energy at all */
    expect_series(log, "frame_mean", 40, (double)(float)0.3, 1e-15);
    expect_series(log, "frame_std", 40, 0.0, 1e-7);
    fl_series_log_free(log);
    fl_tensor_release(&x);
}

static double alternate_fn(void *ctx, int t, int c, int y, int x)
{
    (void)ctx, (void)c, (void)y, (void)x;
    return t % 2 ? 0.5 : 0.0;
}

/* Frames alternating between 0 and 0.5: every pair differs by 0.5 everywhere. */
static void test_alternating_video(void **state)
{
    (void)state;
    fl_tensor x = video(32, 3, 11, 13, alternate_fn, NULL);
    fl_frame_format fmt = { FL_FRAME_LATENT, 3, 11, 13 };
    fl_series_log *log = run_metrics(all_latent, 6, NULL, &fmt, NULL, &x, 0);
    expect_series(log, "adjacent_mse", 31, 0.25, 0.0);
    expect_series(log, "adjacent_psnr", 31, 10.0 * log10(1.0 / 0.25), 1e-12);
    /* SSIM of two constant images: (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) (the C2 factor is 1) */
    expect_series(log, "adjacent_ssim", 31, 1e-4 / (0.25 + 1e-4), 1e-15);
    expect_series(log, "motion", 31, 0.5, 0.0);
    expect_series(log, "flicker", 2, 0.5, 0.0);
    expect_series(log, "drift_gap1", 31, 0.25, 0.0);
    expect_series(log, "drift_gap2", 30, 0.0, 0.0);
    /* the spectrum is all at the temporal Nyquist frequency, spatial DC */
    expect_series(log, "spectral_hf_temporal", 2, 1.0, 1e-12);
    expect_series(log, "spectral_hf_spatial", 2, 0.0, 1e-12);
    fl_series_log_free(log);
    fl_tensor_release(&x);
}

/* The pixel variant: uint8 [H, W, 3] frames, VBench's flicker formula exactly. */
static void test_pixel_frames(void **state)
{
    (void)state;
    enum { N = 20, H = 9, W = 10 };
    int64_t shape[4] = { N, H, W, 3 };
    fl_tensor x = FL_TENSOR_NULL;
    fl_error err;
    expect_ok(fl_tensor_empty(&x, FL_U8, 4, shape, NULL, &err), &err, "pixels");
    uint8_t *p = fl_tensor_data(&x);
    for (int t = 0; t < N; t++)
        for (int k = 0; k < H * W; k++) {
            /* R, G, B = 100 / 110 alternating, 20, 30: |difference| 10 in R only */
            p[(t * H * W + k) * 3 + 0] = (uint8_t)(t % 2 ? 110 : 100);
            p[(t * H * W + k) * 3 + 1] = 20;
            p[(t * H * W + k) * 3 + 2] = 30;
        }
    fl_frame_format fmt = { FL_FRAME_PIXELS, 3, H, W };
    const char *names[] = { "adjacent", "flicker", "stats", "spectral" };
    fl_metric_opts o;
    fl_metric_opts_default(&o);
    o.window = 10;
    fl_series_log *log = run_metrics(names, 4, &o, &fmt, NULL, &x, 0);
    double mae = 10.0 / 3.0, mse = 100.0 / 3.0;
    expect_series(log, "flicker", 2, (255.0 - mae) / 255.0, 1e-15);
    expect_series(log, "motion", 19, mae, 1e-15); /* brought along by adjacent/flicker */
    expect_series(log, "adjacent_mse", 19, mse, 1e-12);
    expect_series(log, "adjacent_psnr", 19, 10.0 * log10(255.0 * 255.0 / mse), 1e-12);
    const double *v;
    series(log, "frame_mean", NULL, &v);
    assert_true(fabs(v[0] - 50.0) < 1e-12 && fabs(v[1] - 160.0 / 3.0) < 1e-12);
    /* luma flips by 0.299 * 10 every frame: all temporal Nyquist */
    expect_series(log, "spectral_hf_temporal", 2, 1.0, 1e-9);
    fl_series_log_free(log);
    /* pixel frames have 3 channels; the oracle measures latents only */
    fl_metrics *m = NULL;
    fl_frame_format bad = { FL_FRAME_PIXELS, 4, H, W };
    fl_metric_spec spec = { "flicker", NULL };
    assert_int_equal(fl_metrics_new(&spec, 1, &bad, NULL, NULL, NULL, &m, &err), FL_E_SHAPE);
    expect_msg(&err, "RGB");
    fl_tensor_release(&x);
}

/* ---- SSIM against a direct 2-D window sum ---------------------------------------------- */

static double ssim_direct(const float *a, const float *b, int c, int h, int w, int win, double sigma,
                          double range)
{
    long double k2[99][99], sum = 0;
    int r = win / 2;
    for (int i = 0; i < win; i++)
        for (int j = 0; j < win; j++) {
            k2[i][j] = expl(-(long double)((i - r) * (i - r) + (j - r) * (j - r)) / (2.0L * sigma * sigma));
            sum += k2[i][j];
        }
    long double c1 = (0.01L * range) * (0.01L * range), c2 = (0.03L * range) * (0.03L * range), total = 0;
    for (int ch = 0; ch < c; ch++) {
        long double acc = 0;
        for (int y = 0; y + win <= h; y++)
            for (int x = 0; x + win <= w; x++) {
                long double ma = 0, mb = 0, saa = 0, sbb = 0, sab = 0;
                for (int i = 0; i < win; i++)
                    for (int j = 0; j < win; j++) {
                        long double g = k2[i][j] / sum;
                        long double va = a[(ch * h + y + i) * w + x + j],
                                    vb = b[(ch * h + y + i) * w + x + j];
                        ma += g * va;
                        mb += g * vb;
                        saa += g * va * va;
                        sbb += g * vb * vb;
                        sab += g * va * vb;
                    }
                acc += ((2 * ma * mb + c1) * (2 * (sab - ma * mb) + c2)) /
                       ((ma * ma + mb * mb + c1) * (saa - ma * ma + sbb - mb * mb + c2));
            }
        total += acc / ((h - win + 1) * (w - win + 1));
    }
    return (double)(total / c);
}

static void test_ssim_direct(void **state)
{
    (void)state;
    uint64_t seed = 1;
    const struct {
        int c, h, w;
        double range;
    } cases[] = { { 2, 20, 17, 1.0 }, { 1, 11, 11, 2.0 }, { 3, 6, 9, 1.0 }, { 1, 4, 4, 1.0 } };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int c = cases[k].c, h = cases[k].h, w = cases[k].w, n = c * h * w;
        float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
        assert_non_null(a);
        assert_non_null(b);
        for (int i = 0; i < n; i++) {
            a[i] = (float)nrand(&seed);
            b[i] = (float)(0.7 * a[i] + 0.5 * nrand(&seed) + 0.1);
        }
        fl_ssim s;
        fl_error err;
        expect_ok(fl_ssim_init(&s, c, h, w, 11, 1.5, cases[k].range, NULL, &err), &err, "ssim init");
        /* small frames: the largest odd window that fits, sigma scaled along */
        int fit = h < w ? h : w;
        fit -= fit % 2 == 0;
        int win = fit < 11 ? fit : 11;
        double sigma = 1.5 * win / 11.0;
        assert_int_equal(s.win, win);
        double got = fl_ssim_frames(&s, a, b), want = ssim_direct(a, b, c, h, w, win, sigma, cases[k].range);
        if (fabs(got - want) > 1e-12)
            fail_msg("case %zu: ssim %.17g, direct %.17g", k, got, want);
        assert_true(fl_ssim_frames(&s, a, a) == 1.0);
        fl_ssim_free(&s);
        free(a);
        free(b);
    }
    fl_ssim s;
    fl_error err;
    assert_int_equal(fl_ssim_init(&s, 1, 8, 8, 10, 1.5, 1.0, NULL, &err), FL_E_INVALID);
    expect_msg(&err, "odd");
    assert_true(fl_psnr(0.0, 1.0) == FL_PSNR_MAX && fl_psnr(1e-12, 1.0) == FL_PSNR_MAX);
    assert_true(fabs(fl_psnr(0.01, 1.0) - 20.0) < 1e-13);
}

/* ---- ramps, drift and trends ---------------------------------------------------------- */

static double ramp_fn(void *ctx, int t, int c, int y, int x)
{
    (void)c, (void)y, (void)x;
    return *(double *)ctx * t;
}

/* Frame t = c t everywhere: the window mean moves by c per frame, the std stays. */
static void test_ramp(void **state)
{
    (void)state;
    double c = 0.01;
    fl_tensor x = video(320, 2, 8, 8, ramp_fn, &c);
    fl_frame_format fmt = { FL_FRAME_LATENT, 2, 8, 8 };
    const char *names[] = { "drift", "motion" };
    fl_series_log *log = run_metrics(names, 2, NULL, &fmt, NULL, &x, 0);
    const int64_t *idx;
    const double *v;
    size_t n = series(log, "drift_mean", &idx, &v);
    assert_int_equal(n, 20);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(idx[i], (int64_t)(16 * i));
        assert_true(fabs(v[i] - c * 16.0 * (double)i) < 1e-6 * (1 + i));
    }
    expect_series(log, "drift_std", 20, 0.0, 1e-6);
    expect_series(log, "motion", 319, c, 1e-6);
    n = series(log, "drift_gap4", &idx, &v);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(v[i] - 16 * c * c) < 1e-7);
    fl_series_trend tr;
    fl_error err;
    series(log, "drift_mean", &idx, &v);
    expect_ok(fl_series_trend_of(idx, v, 20, 0.15, &tr, &err), &err, "trend");
    /* k = 3 windows: start = c (0 + 16 + 32) / 3, end = c 16 (17 + 18 + 19) / 3 */
    assert_int_equal(tr.k, 3);
    assert_true(fabs(tr.start - 16 * c) < 1e-6 && fabs(tr.end - 288 * c) < 1e-6);
    assert_true(fabs(tr.contrast - 272 * c) < 1e-6);
    assert_true(fabs(tr.slope - c) < 1e-7);
    fl_series_log_free(log);
    fl_tensor_release(&x);
}

static void test_trend(void **state)
{
    (void)state;
    double v[20];
    for (int i = 0; i < 20; i++)
        v[i] = i;
    fl_series_trend tr;
    fl_error err;
    expect_ok(fl_series_trend_of(NULL, v, 20, 0.0, &tr, &err), &err, "trend");
    assert_int_equal(tr.n, 20);
    assert_int_equal(tr.k, 3);
    assert_true(tr.start == 1.0 && tr.end == 18.0 && tr.contrast == 17.0);
    assert_true(fabs(tr.slope - 1.0) < 1e-15);
    /* indices: slope per frame; NaN skipped */
    int64_t idx[5] = { 0, 16, 32, 48, 64 };
    double w[5] = { 1.0, NAN, 5.0, 7.0, 9.0 };
    expect_ok(fl_series_trend_of(idx, w, 5, 0.5, &tr, &err), &err, "trend nan");
    assert_int_equal(tr.n, 4);
    assert_int_equal(tr.k, 2);
    assert_true(tr.start == 3.0 && tr.end == 8.0);
    /* least squares through (0,1) (32,5) (48,7) (64,9): exactly 1/8 per frame */
    assert_true(fabs(tr.slope - 0.125) < 1e-15);
    expect_ok(fl_series_trend_of(NULL, v, 1, 0.15, &tr, &err), &err, "one value");
    assert_true(isnan(tr.slope) && tr.contrast == 0.0);
    double bad[2] = { NAN, INFINITY };
    assert_int_equal(fl_series_trend_of(NULL, bad, 2, 0.15, &tr, &err), FL_E_INVALID);
    expect_msg(&err, "no finite value");
}

typedef struct noise_ctx {
    uint64_t seed;
    double drift; /* mean added per frame */
} noise_ctx;

static double noise_fn(void *ctx, int t, int c, int y, int x)
{
    (void)c, (void)y, (void)x;
    noise_ctx *n = ctx;
    return nrand(&n->seed) + n->drift * t;
}

/* A video whose mean creeps up drifts away from its first window; a stationary one does not. */
static void test_drift_grows(void **state)
{
    (void)state;
    fl_frame_format fmt = { FL_FRAME_LATENT, 3, 12, 12 };
    const char *names[] = { "drift" };
    double last[2];
    for (int k = 0; k < 2; k++) {
        noise_ctx nc = { 100 + (uint64_t)k, k ? 0.01 : 0.0 };
        fl_tensor x = video(160, 3, 12, 12, noise_fn, &nc);
        fl_series_log *log = run_metrics(names, 1, NULL, &fmt, NULL, &x, 0);
        const int64_t *idx;
        const double *v;
        size_t n = series(log, "drift_mean", &idx, &v);
        assert_int_equal(n, 10);
        fl_series_trend tr;
        fl_error err;
        expect_ok(fl_series_trend_of(idx, v, n, 0.15, &tr, &err), &err, "trend");
        last[k] = v[n - 1];
        if (k) {
            assert_true(fabs(tr.slope - 0.01) < 0.002); /* the mean's own slope */
            const double *fd;
            series(log, "drift_fd", NULL, &fd);
            assert_true(fd[9] > 10.0 * fd[1]);
        } else
            assert_true(fabs(tr.slope) < 2e-4);
        const double *anchor;
        n = series(log, "drift_anchor", NULL, &anchor);
        assert_true(anchor[0] == 0.0 && anchor[159] > 1.5);
        fl_series_log_free(log);
        fl_tensor_release(&x);
    }
    assert_true(last[1] > 1.2 && last[0] < 0.02);
}

/* ---- spectral ------------------------------------------------------------------------- */

static void test_spectral_white_vs_smooth(void **state)
{
    (void)state;
    enum { C = 2, H = 32, W = 32, N = 64 };
    fl_frame_format fmt = { FL_FRAME_LATENT, C, H, W };
    const char *names[] = { "spectral" };
    noise_ctx nc = { 9, 0.0 };
    fl_tensor x = video(N, C, H, W, noise_fn, &nc);
    fl_series_log *log = run_metrics(names, 1, NULL, &fmt, NULL, &x, 0);
    fl_spectral_split want;
    fl_spectral_white(16, H, W, 0.25, &want);
    printf("  white noise, bin shares: spatial %.4f, temporal %.4f, space-time %.4f\n", want.spatial,
           want.temporal, want.spatiotemporal);
    /* 32768 bins per window: the share has a standard deviation of about 0.4% */
    expect_series(log, "spectral_hf_spatial", 4, want.spatial, 0.01);
    expect_series(log, "spectral_hf_temporal", 4, want.temporal, 0.02);
    expect_series(log, "spectral_hf_st", 4, want.spatiotemporal, 0.01);
    /* the continuous values the bin counts approach: 1 - pi/64 outside the disc, and
     * 11 of 16 temporal bins beyond a quarter of Nyquist */
    assert_true(fabs(want.spatial - (1.0 - 3.14159265358979 / 64.0)) < 0.01);
    assert_true(fabs(want.temporal - 11.0 * W * H / (16.0 * W * H - 1.0)) < 1e-12);
    fl_series_log_free(log);
    fl_tensor_release(&x);
    /* a smooth, slowly changing video (the gauss testbed's own samples) has much less */
    fl_gauss_opts go;
    fl_gauss_opts_default(&go);
    go.channels = C;
    go.height = H;
    go.width = W;
    fl_denoiser *d = NULL;
    fl_error err;
    expect_ok(fl_gauss_new(&go, &d, &err), &err, "gauss");
    int64_t shape[4] = { N, C, H, W };
    expect_ok(fl_tensor_empty(&x, FL_F32, 4, shape, NULL, &err), &err, "empty");
    fl_rng rng;
    fl_rng_init(&rng, 3);
    expect_ok(fl_gauss_sample(d, &rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 0, 0 }, N, &x, &err), &err,
              "sample");
    log = run_metrics(names, 1, NULL, &fmt, NULL, &x, 0);
    const double *sp, *tp;
    series(log, "spectral_hf_spatial", NULL, &sp);
    series(log, "spectral_hf_temporal", NULL, &tp);
    printf("  gauss sample: spatial %.4f, temporal %.4f\n", sp[0], tp[0]);
    for (int i = 0; i < 4; i++)
        assert_true(sp[i] < 0.6 * want.spatial && tp[i] < 0.3 * want.temporal);
    fl_series_log_free(log);
    fl_tensor_release(&x);
    fl_denoiser_free(d);
}

/* Plane waves pin the frequency scale: bin k of an axis of length N sits at k / (N / 2)
 * of Nyquist, so a cutoff just below or just above that value flips the share 1 <-> 0. */
static void test_spectral_plane_waves(void **state)
{
    (void)state;
    const struct {
        int t, h, w, kt, ky, kx;
    } cases[] = {
        { 8, 32, 32, 0, 0, 5 }, { 9, 31, 32, 2, 0, 0 }, { 6, 31, 20, 0, 5, 3 }, { 16, 8, 8, 8, 0, 0 }
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        int T = cases[k].t, H = cases[k].h, W = cases[k].w;
        float *buf = malloc((size_t)T * H * W * sizeof(float));
        const float *fr[16];
        assert_non_null(buf);
        for (int t = 0; t < T; t++) {
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    buf[(t * H + y) * W + x] =
                        (float)cos(TWO_PI * ((double)cases[k].kt * t / T + (double)cases[k].ky * y / H +
                                             (double)cases[k].kx * x / W));
            fr[t] = buf + (size_t)t * H * W;
        }
        double ft = cases[k].kt / (T / 2.0), fs = hypot(cases[k].ky / (H / 2.0), cases[k].kx / (W / 2.0));
        double fst = hypot(ft, fs);
        for (int side = -1; side <= 1; side += 2) {
            double f[3] = { fs, ft, fst };
            for (int which = 0; which < 3; which++) {
                if (f[which] == 0.0)
                    continue;
                double cut = f[which] * (1.0 + side * 0.01); /* side -1: just below (high), +1: above (low) */
                if (cut > 1.0)
                    continue;
                fl_spectral *sp = NULL;
                fl_spectral_split r;
                fl_error err;
                expect_ok(fl_spectral_new(1, T, H, W, cut, NULL, &sp, &err), &err, "spectral");
                expect_ok(fl_spectral_window(sp, fr, T, &r, &err), &err, "window");
                double got = which == 0 ? r.spatial : which == 1 ? r.temporal : r.spatiotemporal;
                double want = side < 0 ? 1.0 : 0.0;
                if (fabs(got - want) > 1e-9)
                    fail_msg("case %zu, share %d, cutoff %.4f: %.12g, expected %g", k, which, cut, got, want);
                fl_spectral_free(sp);
            }
        }
        free(buf);
    }
}

/* ---- the gauss oracle ------------------------------------------------------------------ */

static void test_oracle(void **state)
{
    (void)state;
    enum { C = 2, H = 16, W = 16, N = 64 };
    fl_gauss_opts go;
    fl_gauss_opts_default(&go);
    go.channels = C;
    go.height = H;
    go.width = W;
    go.rho = 0.9;
    fl_denoiser *d = NULL;
    fl_error err;
    expect_ok(fl_gauss_new(&go, &d, &err), &err, "gauss");
    int64_t shape[4] = { N, C, H, W };
    fl_tensor x = FL_TENSOR_NULL;
    expect_ok(fl_tensor_empty(&x, FL_F32, 4, shape, NULL, &err), &err, "empty");
    fl_rng rng;
    fl_rng_init(&rng, 21);
    expect_ok(fl_gauss_sample(d, &rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 0, 0 }, N, &x, &err), &err,
              "sample");
    fl_frame_format fmt = { FL_FRAME_LATENT, C, H, W };
    const char *names[] = { "oracle" };
    fl_series_log *log = run_metrics(names, 1, NULL, &fmt, d, &x, 0);
    const double *pr, *co, *ce, *pe;
    assert_int_equal(series(log, "oracle_power_ratio", NULL, &pr), 4);
    series(log, "oracle_corr", NULL, &co);
    series(log, "oracle_corr_err", NULL, &ce);
    series(log, "oracle_power_err", NULL, &pe);
    for (int w = 0; w < 4; w++) {
        /* the module's values are fl_gauss_stats of the window, bit for bit */
        fl_tensor win = FL_TENSOR_NULL;
        fl_gauss_stats_result gs;
        expect_ok(fl_tensor_narrow(&win, &x, 0, 16 * w, 16, &err), &err, "narrow");
        expect_ok(fl_gauss_stats(d, &win, &gs, &err), &err, "stats");
        fl_tensor_release(&win);
        assert_true(pr[w] == gs.power_ratio && co[w] == gs.corr_lag1 && ce[w] == gs.corr_lag1 - 0.9);
        /* and, the frames being the true process, near the truth */
        assert_true(fabs(pr[w] - 1.0) < 5.0 * gs.power_ratio_se);
        assert_true(fabs(co[w] - 0.9) < 5.0 * gs.corr_lag1_se);
    }
    double true_err = pe[0];
    fl_series_log_free(log);
    /* a frozen video (frame 0 repeated) has the right spectrum but the wrong dynamics */
    float *p = fl_tensor_data(&x);
    for (int t = 1; t < N; t++)
        memcpy(p + (size_t)t * C * H * W, p, (size_t)C * H * W * sizeof(float));
    log = run_metrics(names, 1, NULL, &fmt, d, &x, 0);
    series(log, "oracle_corr_mode_err", NULL, &ce);
    series(log, "oracle_corr", NULL, &co);
    printf("  oracle: true process power error %.3f; frozen video corr %.3f (rho 0.9), mode error %.3f\n",
           true_err, co[0], ce[0]);
    assert_true(ce[0] > 0.1 && fabs(co[0] - 0.9) > 0.05);
    fl_series_log_free(log);
    /* the oracle needs the gauss model of the same shape */
    fl_metric_spec spec = { "oracle", NULL };
    fl_metrics *m = NULL;
    assert_int_equal(fl_metrics_new(&spec, 1, &fmt, NULL, NULL, NULL, &m, &err), FL_E_INVALID);
    expect_msg(&err, "needs the gauss model");
    fl_frame_format other = { FL_FRAME_LATENT, C, H, W + 1 };
    assert_int_equal(fl_metrics_new(&spec, 1, &other, d, NULL, NULL, &m, &err), FL_E_SHAPE);
    expect_msg(&err, "the model's [2, 16, 16]");
    fl_frame_format px = { FL_FRAME_PIXELS, 3, H, W };
    assert_int_equal(fl_metrics_new(&spec, 1, &px, d, NULL, NULL, &m, &err), FL_E_INVALID);
    expect_msg(&err, "latent frames only");
    fl_tensor_release(&x);
    fl_denoiser_free(d);
}

/* ---- windows, series descriptions ------------------------------------------------------ */

static void test_windows_and_series(void **state)
{
    (void)state;
    double v = 1.0;
    fl_frame_format fmt = { FL_FRAME_LATENT, 1, 8, 8 };
    fl_error err;
    /* 38 frames: the trailing window at 32 has 6 < 8 frames and is dropped */
    fl_tensor x = video(38, 1, 8, 8, const_fn, &v);
    const char *names[] = { "flicker" };
    fl_series_log *log = run_metrics(names, 1, NULL, &fmt, NULL, &x, 0);
    const int64_t *idx;
    assert_int_equal(series(log, "flicker", &idx, NULL), 2);
    assert_true(idx[0] == 0 && idx[1] == 16);
    fl_series_log_free(log);
    /* overlapping windows, stride 6, first frame 5, min_frames 3 */
    fl_metric_opts o;
    fl_metric_opts_default(&o);
    o.window = 8;
    o.stride = 6;
    o.min_frames = 3;
    log = run_metrics(names, 1, &o, &fmt, NULL, &x, 5);
    size_t n = series(log, "flicker", &idx, NULL);
    /* frames 5..42: starts 5, 11, ..., 35 complete (35 + 7 = 42), then 41 with 2 < 3 */
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(idx[i], 5 + 6 * (int64_t)i);
    fl_series_log_free(log);
    fl_tensor_release(&x);
    /* the descriptions, and motion coming along with a consistency module exactly once */
    fl_metric_spec specs[2] = { { "adjacent", NULL }, { "drift", &o } };
    fl_metrics *m = NULL;
    expect_ok(fl_metrics_new(specs, 2, &fmt, NULL, NULL, NULL, &m, &err), &err, "new");
    size_t count = fl_metrics_series_count(m), motion = 0;
    for (size_t i = 0; i < count; i++) {
        const fl_series_info *s = fl_metrics_series(m, i);
        assert_non_null(s->name);
        assert_non_null(s->description);
        motion += strcmp(s->module, "motion") == 0;
        if (!strcmp(s->name, "adjacent_psnr"))
            assert_true(!strcmp(s->unit, "dB") && s->kind == FL_SERIES_FRAME && s->span == 2 &&
                        s->stride == 1);
        if (!strcmp(s->name, "drift_mean"))
            assert_true(s->kind == FL_SERIES_WINDOW && s->span == 8 && s->stride == 6 &&
                        !strcmp(s->unit, "latent"));
        if (!strcmp(s->name, "drift_gap16"))
            assert_true(s->span == 17 && !strcmp(s->unit, "latent^2"));
        if (!strcmp(s->name, "motion_window"))
            assert_true(s->span == 16); /* adjacent has no window: motion's own default */
    }
    assert_int_equal(motion, 2);
    assert_int_equal(count, 3 + 2 + 1 + 6 + 3);
    assert_null(fl_metrics_series(m, count));
    fl_metrics_free(m);
    /* the registry */
    const char *const *all = fl_metric_names();
    size_t k = 0;
    for (; all[k]; k++)
        assert_non_null(fl_metric_describe(all[k]));
    assert_int_equal(k, 7);
    assert_null(fl_metric_describe("nope"));
}

/* ---- online = offline = resumed -------------------------------------------------------- */

static int logs_equal(const fl_series_log *a, const fl_series_log *b)
{
    if (fl_series_log_count(a) != fl_series_log_count(b))
        return 0;
    for (size_t i = 0; i < fl_series_log_count(a); i++) {
        const char *name = fl_series_log_name(a, i);
        const int64_t *ia, *ib;
        const double *va, *vb;
        size_t na = series(a, name, &ia, &va), nb = series(b, name, &ib, &vb);
        if (na != nb || memcmp(ia, ib, na * sizeof *ia) || memcmp(va, vb, na * sizeof *va)) {
            printf("  series %s differs\n", name);
            return 0;
        }
    }
    return 1;
}

static void test_online_equals_offline(void **state)
{
    (void)state;
    enum { C = 2, H = 16, W = 16, N = 57 };
    fl_gauss_opts go;
    fl_gauss_opts_default(&go);
    go.channels = C;
    go.height = H;
    go.width = W;
    fl_denoiser *d = NULL;
    fl_error err;
    expect_ok(fl_gauss_new(&go, &d, &err), &err, "gauss");
    noise_ctx nc = { 5, 0.003 };
    fl_tensor x = video(N, C, H, W, noise_fn, &nc);
    fl_frame_format fmt = { FL_FRAME_LATENT, C, H, W };
    const char *names[] = { "adjacent", "flicker", "motion", "drift", "spectral", "oracle", "stats" };
    fl_metric_opts o;
    fl_metric_opts_default(&o);
    o.stride = 5; /* overlapping windows */
    fl_metric_spec specs[7];
    for (int i = 0; i < 7; i++) {
        specs[i].name = names[i];
        specs[i].opts = &o;
    }
    fl_series_log *offline = run_metrics(names, 7, &o, &fmt, d, &x, 0);
    /* online: frames one by one, in uneven chunks */
    fl_series_log *online = NULL, *resumed = NULL;
    expect_ok(fl_series_log_new(NULL, &online, &err), &err, "log");
    fl_metric_emit e = fl_series_log_emit(online);
    fl_metrics *m = NULL;
    expect_ok(fl_metrics_new(specs, 7, &fmt, d, &e, NULL, &m, &err), &err, "new");
    const int chunks[] = { 1, 3, 7, 2, 16, 5, 23 };
    int at = 0;
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        fl_tensor part = FL_TENSOR_NULL;
        expect_ok(fl_tensor_narrow(&part, &x, 0, at, chunks[c], &err), &err, "narrow");
        if (chunks[c] == 1)
            expect_ok(fl_metrics_put(m, at, fl_tensor_data(&part), &err), &err, "put");
        else
            expect_ok(fl_metrics_put_tensor(m, at, &part, &err), &err, "put chunk");
        fl_tensor_release(&part);
        at += chunks[c];
    }
    assert_int_equal(at, N);
    expect_ok(fl_metrics_finish(m, &err), &err, "finish");
    expect_ok(fl_metrics_finish(m, &err), &err, "finish twice"); /* no-op */
    assert_int_equal(fl_metrics_put(m, N, fl_tensor_data(&x), &err), FL_E_INVALID);
    expect_msg(&err, "after finish");
    fl_metrics_free(m);
    assert_true(logs_equal(offline, online));
    /* resumed: 29 frames, save, a fresh set restores and takes the rest */
    expect_ok(fl_series_log_new(NULL, &resumed, &err), &err, "log");
    e = fl_series_log_emit(resumed);
    fl_state *st = fl_state_new();
    assert_non_null(st);
    fl_tensor part = FL_TENSOR_NULL;
    expect_ok(fl_metrics_new(specs, 7, &fmt, d, &e, NULL, &m, &err), &err, "new");
    expect_ok(fl_tensor_narrow(&part, &x, 0, 0, 29, &err), &err, "narrow");
    expect_ok(fl_metrics_put_tensor(m, 0, &part, &err), &err, "put");
    fl_tensor_release(&part);
    expect_ok(fl_metrics_save(m, st, &err), &err, "save");
    fl_metrics_free(m);
    expect_ok(fl_metrics_new(specs, 7, &fmt, d, &e, NULL, &m, &err), &err, "new");
    expect_ok(fl_metrics_restore(m, st, &err), &err, "restore");
    expect_ok(fl_tensor_narrow(&part, &x, 0, 29, N - 29, &err), &err, "narrow");
    expect_ok(fl_metrics_put_tensor(m, 29, &part, &err), &err, "put rest");
    fl_tensor_release(&part);
    expect_ok(fl_metrics_finish(m, &err), &err, "finish");
    fl_metrics_free(m);
    assert_true(logs_equal(offline, resumed));
    /* a state from another configuration is refused */
    fl_frame_format small = { FL_FRAME_LATENT, C, H, W - 1 };
    fl_metric_spec drift = { "drift", NULL };
    expect_ok(fl_metrics_new(&drift, 1, &small, NULL, NULL, NULL, &m, &err), &err, "new");
    assert_int_equal(fl_metrics_restore(m, st, &err), FL_E_INVALID);
    expect_msg(&err, "state: metrics/config: saved for \"0:2x16x16;adjacent/");
    fl_metrics_free(m);
    fl_state_free(st);
    fl_series_log_free(offline);
    fl_series_log_free(online);
    fl_series_log_free(resumed);
    fl_tensor_release(&x);
    fl_denoiser_free(d);
}

/* ---- options, errors, failures --------------------------------------------------------- */

static void test_opts_from_config(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    assert_non_null(root);
    fl_error err;
    expect_ok(fl_cfg_set(root, "m.window", "8", &err), &err, "set");
    expect_ok(fl_cfg_set(root, "m.gaps", "{1, 3}", &err), &err, "set");
    fl_metric_opts o;
    fl_cfg *t = NULL;
    expect_ok(fl_cfg_table(root, "m", &t, &err), &err, "table"); /* as a metrics list reader would */
    expect_ok(fl_metric_opts_read(t, "drift", &o, &err), &err, "read");
    assert_int_equal(o.window, 8);
    assert_int_equal(o.n_gaps, 2);
    assert_true(o.gaps[0] == 1 && o.gaps[1] == 3);
    expect_ok(fl_cfg_check_unused(root, &err), &err, "unused");
    /* a key drift does not take is reported by the tree's unused-key check */
    expect_ok(fl_cfg_set(root, "m.cutoff", "0.3", &err), &err, "set");
    expect_ok(fl_metric_opts_read(t, "drift", &o, &err), &err, "read");
    assert_int_equal(fl_cfg_check_unused(root, &err), FL_E_INVALID);
    expect_msg(&err, "m.cutoff: unknown key");
    fl_cfg_free(root);
    root = fl_cfg_new(NULL);
    expect_ok(fl_cfg_set(root, "m.window", "1", &err), &err, "set");
    assert_int_equal(fl_metric_opts_read(fl_cfg_lookup(root, "m"), "spectral", &o, &err), FL_E_RANGE);
    expect_msg(&err, "m.window: expected an integer in [2, 4096], got 1");
    fl_cfg_free(root);
    root = fl_cfg_new(NULL);
    expect_ok(fl_cfg_set(root, "m.ssim_window", "8", &err), &err, "set");
    assert_int_equal(fl_metric_opts_read(fl_cfg_lookup(root, "m"), "adjacent", &o, &err), FL_E_RANGE);
    expect_msg(&err, "m.ssim_window: expected an odd integer");
    assert_int_equal(fl_metric_opts_read(fl_cfg_lookup(root, "m"), "flickr", &o, &err), FL_E_INVALID);
    expect_msg(&err, "unknown module \"flickr\"; accepted: adjacent,");
    fl_cfg_free(root);
}

static fl_status failing_emit(void *ctx, const fl_series_info *s, int64_t index, double value, fl_error *err)
{
    (void)s, (void)value;
    int *budget = ctx;
    if ((*budget)-- <= 0)
        return fl_error_set(err, FL_E_IO, "writer: disk full at frame %lld", (long long)index);
    return FL_OK;
}

static void test_errors(void **state)
{
    (void)state;
    fl_frame_format fmt = { FL_FRAME_LATENT, 1, 4, 4 };
    fl_error err;
    fl_metrics *m = NULL;
    fl_metric_spec specs[2] = { { "drift", NULL }, { "drift", NULL } };
    assert_int_equal(fl_metrics_new(specs, 2, &fmt, NULL, NULL, NULL, &m, &err), FL_E_INVALID);
    expect_msg(&err, "module \"drift\" named twice");
    specs[0].name = "warp";
    assert_int_equal(fl_metrics_new(specs, 1, &fmt, NULL, NULL, NULL, &m, &err), FL_E_INVALID);
    expect_msg(&err, "unknown module \"warp\"");
    fl_metric_opts o;
    fl_metric_opts_default(&o);
    o.window = 1;
    specs[0].name = "drift";
    specs[0].opts = &o;
    assert_int_equal(fl_metrics_new(specs, 1, &fmt, NULL, NULL, NULL, &m, &err), FL_E_RANGE);
    expect_msg(&err, "drift.window: expected an integer in [2, 4096], got 1");
    fl_metric_opts_default(&o);
    o.gaps[1] = 1;
    assert_int_equal(fl_metrics_new(specs, 1, &fmt, NULL, NULL, NULL, &m, &err), FL_E_INVALID);
    expect_msg(&err, "drift.gaps: 1 appears twice");
    fl_frame_format empty = { FL_FRAME_LATENT, 0, 4, 4 };
    assert_int_equal(fl_metrics_new(specs, 1, &empty, NULL, NULL, NULL, &m, &err), FL_E_SHAPE);
    /* order of frames */
    specs[0].opts = NULL;
    int budget = 1000;
    fl_metric_emit e = { failing_emit, &budget };
    expect_ok(fl_metrics_new(specs, 1, &fmt, NULL, &e, NULL, &m, &err), &err, "new");
    float frame[16] = { 0 };
    assert_int_equal(fl_metrics_put(m, -1, frame, &err), FL_E_INVALID);
    expect_ok(fl_metrics_put(m, 7, frame, &err), &err, "put 7");
    assert_int_equal(fl_metrics_put(m, 9, frame, &err), FL_E_INVALID);
    expect_msg(&err, "frame 9 arrived, expected 8");
    /* the writer's error comes back through put */
    budget = 0;
    assert_int_equal(fl_metrics_put(m, 8, frame, &err), FL_E_IO);
    expect_msg(&err, "disk full at frame 8");
    fl_metrics_free(m);
    /* wrong tensors for the offline feed */
    expect_ok(fl_metrics_new(specs, 1, &fmt, NULL, NULL, NULL, &m, &err), &err, "new");
    int64_t shape[4] = { 2, 1, 4, 5 };
    fl_tensor t = FL_TENSOR_NULL;
    expect_ok(fl_tensor_zeros(&t, FL_F32, 4, shape, NULL, &err), &err, "zeros");
    assert_int_equal(fl_metrics_put_tensor(m, 0, &t, &err), FL_E_SHAPE);
    expect_msg(&err, "frames must be [N, 1, 4, 4] f32");
    fl_tensor_release(&t);
    fl_metrics_free(m);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    double v = 0.5;
    fl_tensor x = video(20, 2, 8, 8, const_fn, &v);
    fl_frame_format fmt = { FL_FRAME_LATENT, 2, 8, 8 };
    const char *names[] = { "adjacent", "flicker", "drift", "spectral", "stats" };
    fl_metric_spec specs[5];
    for (int i = 0; i < 5; i++) {
        specs[i].name = names[i];
        specs[i].opts = NULL;
    }
    int succeeded = 0;
    for (long k = 0; k < 400 && !succeeded; k++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, k);
        fl_error err;
        fl_metrics *m = NULL;
        fl_series_log *log = NULL;
        fl_status st = fl_series_log_new(&fa.iface, &log, &err);
        fl_metric_emit e = { NULL, NULL };
        if (!st) {
            e = fl_series_log_emit(log);
            st = fl_metrics_new(specs, 5, &fmt, NULL, &e, &fa.iface, &m, &err);
        }
        if (!st)
            st = fl_metrics_put_tensor(m, 0, &x, &err);
        if (!st)
            st = fl_metrics_finish(m, &err);
        if (st)
            assert_int_equal(st, FL_E_NOMEM);
        else
            succeeded = 1;
        fl_metrics_free(m);
        fl_series_log_free(log);
        if (fa.live_blocks != 0)
            fail_msg("fail_after %ld: %zu blocks left", k, fa.live_blocks);
    }
    assert_true(succeeded);
    fl_tensor_release(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_video),
        cmocka_unit_test(test_alternating_video),
        cmocka_unit_test(test_pixel_frames),
        cmocka_unit_test(test_ssim_direct),
        cmocka_unit_test(test_ramp),
        cmocka_unit_test(test_trend),
        cmocka_unit_test(test_drift_grows),
        cmocka_unit_test(test_spectral_white_vs_smooth),
        cmocka_unit_test(test_spectral_plane_waves),
        cmocka_unit_test(test_oracle),
        cmocka_unit_test(test_windows_and_series),
        cmocka_unit_test(test_online_equals_offline),
        cmocka_unit_test(test_opts_from_config),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
