/* cmocka suite for models/empirical: the GEMM posterior against a naive double-precision
 * reference in every mode, its limits (nearest clip at tiny noise, the conditioned mean at
 * huge noise), per-frame conditions, the mismatch modes, errors, and FIFO runs built from a
 * configuration whose frames follow the prompt. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/engine.h"
#include "core/experiment.h"
#include "data/clips.h"
#include "data/procgen.h"
#include "models/empirical.h"

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
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static void expect_ok(fl_status st, const fl_error *err, const char *what)
{
    if (st != FL_OK)
        fail_msg("%s: status %d: %s", what, (int)st, fl_error_msg(err));
}

/* The suite's dataset: 16x16, window 4, 8 videos (circle and square in red, green, blue,
 * yellow), 24 frames each: 192 frames, 168 clips. */
static fl_clips *tiny_data(void)
{
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    o.height = o.width = 16;
    o.window = 4;
    o.videos = 8;
    o.frames = 24;
    o.segment = 8;
    o.shapes = 2;
    o.colors = 4;
    fl_clips *c = NULL;
    fl_error err;
    expect_ok(fl_procgen_make(&o, &c, &err), &err, "procgen");
    return c;
}

static fl_denoiser *model(const fl_empirical_opts *o, const fl_clips *c)
{
    fl_denoiser *d = NULL;
    fl_error err;
    expect_ok(fl_empirical_new(o, c, &d, &err), &err, "fl_empirical_new");
    return d;
}

/* Model-space value of clip i, frame j, latent element k ([C, H, W] order), in [-1, 1]. */
static double clip_px(const fl_clips *c, int64_t i, int j, int k)
{
    int HW = c->height * c->width, ch = k / HW, p = k % HW;
    return c->frames[((size_t)(c->clip_first[i] + j) * HW + p) * 3 + ch] / 127.5 - 1.0;
}

static int word_in(const char *word, const char *caption)
{
    size_t n = strlen(word);
    for (const char *p = caption; (p = strstr(p, word)); p++)
        if ((p == caption || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return 1;
    return 0;
}

typedef struct window {
    int n, D;
    fl_tensor x, out;
    fl_level lv[16];
    int32_t cond[16];
} window;

static void window_init(window *w, int n, const fl_clips *c)
{
    memset(w, 0, sizeof *w);
    w->n = n;
    w->D = 3 * c->height * c->width;
    int64_t shape[4] = { n, 3, c->height, c->width };
    fl_error err;
    expect_ok(fl_tensor_zeros(&w->x, FL_F32, 4, shape, NULL, &err), &err, "x");
    expect_ok(fl_tensor_zeros(&w->out, FL_F32, 4, shape, NULL, &err), &err, "out");
}

static void window_free(window *w)
{
    fl_tensor_release(&w->x);
    fl_tensor_release(&w->out);
}

static fl_level vp(double abar)
{
    fl_level l = { 0, sqrt(abar), sqrt(1 - abar) };
    return l;
}

/* x_j = a_j clip_i,j + s_j noise */
static void noisy_clip(window *w, const fl_clips *c, int64_t i, uint64_t *seed)
{
    float *x = fl_tensor_data(&w->x);
    for (int j = 0; j < w->n; j++)
        for (int k = 0; k < w->D; k++)
            x[(size_t)j * w->D + k] =
                (float)(w->lv[j].alpha * clip_px(c, i, j, k) + w->lv[j].sigma * nrand(seed));
}

/* The posterior by the definition, in double: distances clip by clip, no GEMM, no
 * centring, no dropped weights. prompts are single words. */
static void reference(const fl_clips *c, const fl_empirical_opts *o, const char *const *words,
                      const window *w, int mode, double tau, double *ref)
{
    int n = w->n, D = w->D;
    int64_t N = c->nclips;
    const float *x = fl_tensor_data(&w->x);
    double abar = 0;
    for (int j = 0; j < n; j++)
        abar += w->lv[j].alpha * w->lv[j].alpha /
                (w->lv[j].alpha * w->lv[j].alpha + w->lv[j].sigma * w->lv[j].sigma);
    abar /= n;
    double *lg = malloc((size_t)N * sizeof *lg), *pen = calloc((size_t)N, sizeof *pen);
    assert_non_null(lg);
    assert_non_null(pen);
    if (o->nprompts > 0 && o->condition != FL_EMPIRICAL_COND_OFF) {
        double least = 1e9;
        for (int64_t i = 0; i < N; i++) {
            int miss = 0;
            for (int l = 0; l < n; l++)
                miss += w->cond[l] >= 0 &&
                        !word_in(words[w->cond[l]],
                                 c->captions[c->frame_caption[c->clip_first[i] + l]]);
            pen[i] = miss;
            least = miss < least ? miss : least;
        }
        for (int64_t i = 0; i < N; i++)
            pen[i] = o->condition == FL_EMPIRICAL_COND_SOFT ? o->condition_weight * pen[i]
                     : pen[i] > least                        ? INFINITY
                                                             : 0;
    }
    for (int j = 0; j < n; j++) {
        /* the levels the posterior for output frame j assumes, frame by frame */
        double a[16], s[16];
        for (int l = 0; l < n; l++) {
            const fl_level *lv = mode == FL_EMPIRICAL_OWN ? &w->lv[j] : &w->lv[l];
            a[l] = mode == FL_EMPIRICAL_MEAN ? sqrt(abar) : lv->alpha;
            s[l] = mode == FL_EMPIRICAL_MEAN ? sqrt(1 - abar) : lv->sigma;
        }
        double m = -INFINITY;
        for (int64_t i = 0; i < N; i++) {
            double l2 = 0;
            for (int l = 0; l < n; l++) {
                double v = s[l] * s[l] + a[l] * a[l] * o->bandwidth * o->bandwidth, d2 = 0;
                v = v < 1e-12 ? 1e-12 : v;
                for (int k = 0; k < D; k++) {
                    double e = x[(size_t)l * D + k] - a[l] * clip_px(c, i, l, k);
                    d2 += e * e;
                }
                l2 += d2 / (2 * v);
            }
            lg[i] = pen[i] == INFINITY ? -INFINITY : -l2 / tau - pen[i];
            m = lg[i] > m ? lg[i] : m;
        }
        double z = 0;
        for (int64_t i = 0; i < N; i++)
            z += lg[i] = lg[i] == -INFINITY ? 0 : exp(lg[i] - m);
        double aj = a[j], sj = s[j], h2 = o->bandwidth * o->bandwidth;
        double v = sj * sj + aj * aj * h2;
        v = v < 1e-12 ? 1e-12 : v;
        double kj = aj * h2 / v;
        for (int k = 0; k < D; k++) {
            double mean = 0;
            for (int64_t i = 0; i < N; i++)
                if (lg[i] > 0)
                    mean += lg[i] / z * clip_px(c, i, j, k);
            double y = x[(size_t)j * D + k], x0 = (1 - aj * kj) * mean + kj * y;
            double eps = sj > 0 ? (y - aj * x0) / sj : 0;
            ref[(size_t)j * D + k] = o->param == FL_PARAM_X0  ? x0
                                     : o->param == FL_PARAM_V ? aj * eps - sj * x0
                                                              : eps;
        }
    }
    free(lg);
    free(pen);
}

static double max_diff(const window *w, const double *ref)
{
    const float *o = fl_tensor_data(&w->out);
    double m = 0;
    for (size_t k = 0; k < (size_t)w->n * w->D; k++)
        m = fabs(o[k] - ref[k]) > m ? fabs(o[k] - ref[k]) : m;
    return m;
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_gemm_matches_reference(void **state)
{
    (void)state;
    fl_clips *c = tiny_data();
    static const char *const words[] = { "red", "circle", "blue" };
    uint64_t seed = 7;
    window w;
    window_init(&w, 4, c);
    double *ref = malloc((size_t)4 * w.D * sizeof *ref);
    assert_non_null(ref);
    double worst = 0;
    int cases = 0;
    /* noise regimes: low (sparse x0 pass), middle, high (dense x0 pass); mixed levels */
    static const double lo[3] = { 0.97, 0.6, 0.02 }, hi[3] = { 0.995, 0.9, 0.2 };
    for (int regime = 0; regime < 3; regime++)
        for (int mode = 0; mode < 3; mode++)
            for (int variant = 0; variant < 4; variant++) {
                fl_empirical_opts o;
                fl_empirical_opts_default(&o);
                o.mismatch = mode;
                o.param = variant == 1 ? FL_PARAM_EPS : variant == 2 ? FL_PARAM_V : FL_PARAM_X0;
                if (variant >= 1) {
                    o.prompts = words;
                    o.nprompts = 3;
                    o.condition = variant == 3 ? FL_EMPIRICAL_COND_SOFT : FL_EMPIRICAL_COND_HARD;
                    o.condition_weight = 1.5;
                }
                if (variant == 2) {
                    o.temperature = 2.5;
                    o.bandwidth = 0.3;
                }
                fl_denoiser *d = model(&o, c);
                for (int j = 0; j < 4; j++) {
                    w.lv[j] = vp(lo[regime] + (hi[regime] - lo[regime]) * urand(&seed));
                    w.cond[j] = variant == 0 ? 0 : (int32_t)(splitmix64(&seed) % 4) - 1;
                }
                noisy_clip(&w, c, (int64_t)(splitmix64(&seed) % (uint64_t)c->nclips), &seed);
                fl_error err;
                expect_ok(fl_denoiser_eval(d, &w.x, w.lv, w.cond, &w.out, NULL, &err), &err, "eval");
                reference(c, &o, words, &w, mode, o.temperature, ref);
                double diff = max_diff(&w, ref);
                /* eps divides x0's rounding by sigma: compare on the x0 scale */
                double scale = 1.0;
                for (int j = 0; j < 4; j++)
                    if (o.param != FL_PARAM_X0 && w.lv[j].alpha / w.lv[j].sigma > scale)
                        scale = w.lv[j].alpha / w.lv[j].sigma;
                if (diff / scale > worst)
                    worst = diff / scale;
                if (diff / scale > 1e-5)
                    fail_msg("regime %d mode %d variant %d: max |gemm - reference| = %.3g (scale %.3g)",
                             regime, mode, variant, diff, scale);
                cases++;
                fl_denoiser_free(d);
            }
    printf("%d cases, worst |gemm - reference| on the x0 scale: %.2g\n", cases, worst);
    free(ref);
    window_free(&w);
    fl_clips_free(c);
}

static void test_nearest_clip_at_tiny_noise(void **state)
{
    (void)state;
    fl_clips *c = tiny_data();
    fl_empirical_opts o;
    fl_empirical_opts_default(&o);
    o.param = FL_PARAM_X0;
    fl_denoiser *d = model(&o, c);
    int64_t N = c->nclips;
    double *wt = malloc((size_t)N * sizeof *wt);
    assert_non_null(wt);
    uint64_t seed = 11;
    window w;
    window_init(&w, 4, c);
    for (int trial = 0; trial < 6; trial++) {
        int64_t i0 = (int64_t)(splitmix64(&seed) % (uint64_t)N);
        /* a clip moved off the data (0.1 per pixel) seen at a tiny level: the denoiser
         * must return the dataset clip nearest to it, found by brute force */
        for (int j = 0; j < 4; j++)
            w.lv[j] = vp(1 - 1e-8);
        float *x = fl_tensor_data(&w.x);
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < w.D; k++)
                x[(size_t)j * w.D + k] = (float)(clip_px(c, i0, j, k) + 0.1 * nrand(&seed));
        int64_t best = -1;
        double bd = INFINITY;
        for (int64_t i = 0; i < N; i++) {
            double d2 = 0;
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < w.D; k++) {
                    double e = x[(size_t)j * w.D + k] - w.lv[j].alpha * clip_px(c, i, j, k);
                    d2 += e * e;
                }
            if (d2 < bd) {
                bd = d2;
                best = i;
            }
        }
        fl_error err;
        expect_ok(fl_denoiser_eval(d, &w.x, w.lv, NULL, &w.out, NULL, &err), &err, "eval");
        const float *out = fl_tensor_data(&w.out);
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < w.D; k++)
                assert_true(fabs(out[(size_t)j * w.D + k] - clip_px(c, best, j, k)) < 1e-5);
        expect_ok(fl_empirical_weights(d, &w.x, w.lv, NULL, 0, wt, &err), &err, "weights");
        /* clips equal to the best one (a static sprite repeats frames) share its weight */
        double same = 0;
        for (int64_t i = 0; i < N; i++) {
            int eq = 1;
            for (int j = 0; j < 4 && eq; j++)
                for (int k = 0; k < w.D && eq; k++)
                    eq = clip_px(c, i, j, k) == clip_px(c, best, j, k);
            same += eq ? wt[i] : 0;
        }
        assert_true(same > 1 - 1e-9);
    }
    free(wt);
    window_free(&w);
    fl_denoiser_free(d);
    fl_clips_free(c);
}

static void test_mean_at_huge_noise(void **state)
{
    (void)state;
    fl_clips *c = tiny_data();
    static const char *const words[] = { "red", "square" };
    fl_empirical_opts o;
    fl_empirical_opts_default(&o);
    o.param = FL_PARAM_X0;
    o.prompts = words;
    o.nprompts = 2;
    fl_denoiser *d = model(&o, c);
    uint64_t seed = 3;
    window w;
    window_init(&w, 4, c);
    for (int j = 0; j < 4; j++)
        w.lv[j] = vp(1e-12);
    noisy_clip(&w, c, 5, &seed);
    for (int pass = 0; pass < 3; pass++) {
        /* pass 0: no prompt (every clip), 1: "red" on every frame, 2: "square" */
        const char *word = pass == 1 ? "red" : pass == 2 ? "square" : NULL;
        for (int j = 0; j < 4; j++)
            w.cond[j] = pass - 1;
        fl_error err;
        expect_ok(fl_denoiser_eval(d, &w.x, w.lv, w.cond, &w.out, NULL, &err), &err, "eval");
        const float *out = fl_tensor_data(&w.out);
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < w.D; k += 7) {
                double mean = 0;
                int cnt = 0;
                for (int64_t i = 0; i < c->nclips; i++) {
                    int ok = 1;
                    for (int l = 0; l < 4 && word; l++)
                        ok &= word_in(word, c->captions[c->frame_caption[c->clip_first[i] + l]]);
                    if (ok) {
                        mean += clip_px(c, i, j, k);
                        cnt++;
                    }
                }
                assert_true(cnt > 0);
                assert_true(fabs(out[(size_t)j * w.D + k] - mean / cnt) < 1e-4);
            }
    }
    window_free(&w);
    fl_denoiser_free(d);
    fl_clips_free(c);
}

static void test_per_frame_conditions(void **state)
{
    (void)state;
    fl_clips *c = tiny_data();
    static const char *const words[] = { "circle", "red", "green" };
    fl_empirical_opts o;
    fl_empirical_opts_default(&o);
    o.prompts = words;
    o.nprompts = 3;
    fl_denoiser *d = model(&o, c);
    int64_t N = c->nclips;
    double *wt = malloc((size_t)N * sizeof *wt);
    assert_non_null(wt);
    uint64_t seed = 5;
    window w;
    window_init(&w, 4, c);
    /* a moderately noisy green square clip, conditioned frame by frame: frames 0, 1 on
     * "circle", frames 2, 3 on "red": only red circles can take weight */
    int64_t green_square = -1;
    for (int64_t i = 0; i < N && green_square < 0; i++)
        if (word_in("green", c->captions[c->clip_caption[i]]) && word_in("square", c->captions[c->clip_caption[i]]))
            green_square = i;
    assert_true(green_square >= 0);
    for (int j = 0; j < 4; j++)
        w.lv[j] = vp(0.5);
    noisy_clip(&w, c, green_square, &seed);
    int32_t conds[3][4] = { { 0, 0, 1, 1 }, { 2, 2, 2, 2 }, { -1, -1, -1, 1 } };
    for (int cs = 0; cs < 3; cs++) {
        memcpy(w.cond, conds[cs], sizeof conds[cs]);
        fl_error err;
        expect_ok(fl_empirical_weights(d, &w.x, w.lv, w.cond, 0, wt, &err), &err, "weights");
        double outside = 0, total = 0;
        for (int64_t i = 0; i < N; i++) {
            int ok = 1;
            for (int l = 0; l < 4; l++)
                ok &= w.cond[l] < 0 ||
                      word_in(words[w.cond[l]], c->captions[c->frame_caption[c->clip_first[i] + l]]);
            if (!ok)
                outside += wt[i];
            total += wt[i];
        }
        assert_true(fabs(total - 1) < 1e-12);
        assert_true(outside == 0.0);
    }
    /* soft: clips off the prompts keep weight, lowered */
    fl_denoiser_free(d);
    o.condition = FL_EMPIRICAL_COND_SOFT;
    o.condition_weight = 2.0;
    d = model(&o, c);
    memcpy(w.cond, conds[0], sizeof conds[0]);
    fl_error err;
    expect_ok(fl_empirical_weights(d, &w.x, w.lv, w.cond, 0, wt, &err), &err, "soft weights");
    assert_true(wt[green_square] > 0);
    /* out-of-range condition */
    w.cond[2] = 3;
    fl_status st = fl_denoiser_eval(d, &w.x, w.lv, w.cond, &w.out, NULL, &err);
    assert_int_equal(st, FL_E_RANGE);
    assert_non_null(strstr(fl_error_msg(&err), "frame 2"));
    fl_denoiser_free(d);
    /* a prompt that matches nothing is refused at creation, by name */
    static const char *const bad[] = { "red", "purple hexagon" };
    o.prompts = bad;
    o.nprompts = 2;
    d = NULL;
    st = fl_empirical_new(&o, c, &d, &err);
    assert_int_equal(st, FL_E_INVALID);
    assert_null(d);
    assert_non_null(strstr(fl_error_msg(&err), "prompts[2]"));
    assert_non_null(strstr(fl_error_msg(&err), "purple hexagon"));
    free(wt);
    window_free(&w);
    fl_clips_free(c);
}

static void test_mismatch_modes(void **state)
{
    (void)state;
    fl_clips *c = tiny_data();
    fl_denoiser *d[3];
    for (int m = 0; m < 3; m++) {
        fl_empirical_opts o;
        fl_empirical_opts_default(&o);
        o.mismatch = m;
        d[m] = model(&o, c);
    }
    uint64_t seed = 9;
    window w, w2;
    window_init(&w, 4, c);
    window_init(&w2, 4, c);
    fl_error err;
    /* one level for the whole window: the three modes agree */
    for (int j = 0; j < 4; j++)
        w.lv[j] = vp(0.4);
    noisy_clip(&w, c, 17, &seed);
    expect_ok(fl_denoiser_eval(d[0], &w.x, w.lv, NULL, &w.out, NULL, &err), &err, "exact");
    for (int m = 1; m < 3; m++) {
        expect_ok(fl_denoiser_eval(d[m], &w.x, w.lv, NULL, &w2.out, NULL, &err), &err, "mode");
        const float *a = fl_tensor_data(&w.out), *b = fl_tensor_data(&w2.out);
        for (int k = 0; k < 4 * w.D; k++)
            assert_true(fabs(a[k] - b[k]) < 1e-5);
    }
    /* mixed levels: own frame j = the exact output of the window with every frame at j's
     * level, frame j; eval_exact of any mode = eval of the exact model */
    for (int j = 0; j < 4; j++)
        w.lv[j] = vp(0.2 + 0.2 * j);
    noisy_clip(&w, c, 40, &seed);
    expect_ok(fl_denoiser_eval(d[1], &w.x, w.lv, NULL, &w.out, NULL, &err), &err, "own");
    const float *own = fl_tensor_data(&w.out);
    memcpy(fl_tensor_data(&w2.x), fl_tensor_data(&w.x), (size_t)4 * w.D * sizeof(float));
    for (int j = 0; j < 4; j++) {
        for (int l = 0; l < 4; l++)
            w2.lv[l] = w.lv[j];
        expect_ok(fl_denoiser_eval(d[0], &w2.x, w2.lv, NULL, &w2.out, NULL, &err), &err, "exact at j");
        const float *ex = fl_tensor_data(&w2.out);
        for (int k = 0; k < w.D; k++)
            assert_true(fabs(own[(size_t)j * w.D + k] - ex[(size_t)j * w.D + k]) < 1e-5);
    }
    expect_ok(fl_denoiser_eval(d[0], &w.x, w.lv, NULL, &w2.out, NULL, &err), &err, "exact");
    double differ = 0;
    for (int m = 1; m < 3; m++) {
        expect_ok(fl_denoiser_eval_exact(d[m], &w.x, w.lv, NULL, &w.out, NULL, &err), &err, "eval_exact");
        assert_memory_equal(fl_tensor_data(&w.out), fl_tensor_data(&w2.out), (size_t)4 * w.D * sizeof(float));
        expect_ok(fl_denoiser_eval(d[m], &w.x, w.lv, NULL, &w.out, NULL, &err), &err, "eval");
        const float *a = fl_tensor_data(&w.out), *b = fl_tensor_data(&w2.out);
        for (int k = 0; k < 4 * w.D; k++)
            differ = fabs(a[k] - b[k]) > differ ? fabs(a[k] - b[k]) : differ;
    }
    assert_true(differ > 1e-3); /* the mismatch modes are not the exact posterior */
    /* a short window matches the clips' first frames; clean frames are accepted */
    window ws;
    window_init(&ws, 2, c);
    ws.lv[0] = fl_level_clean();
    ws.lv[1] = vp(0.3);
    noisy_clip(&ws, c, 3, &seed);
    expect_ok(fl_denoiser_eval(d[0], &ws.x, ws.lv, NULL, &ws.out, NULL, &err), &err, "short");
    window_free(&ws);
    for (int m = 0; m < 3; m++)
        fl_denoiser_free(d[m]);
    window_free(&w);
    window_free(&w2);
    fl_clips_free(c);
}

static void test_options(void **state)
{
    (void)state;
    fl_clips *c = tiny_data();
    static const struct {
        int field;
        double value;
        const char *key;
    } cases[] = {
        { 0, 8, "empirical.window" },        { 1, 0, "empirical.temperature" },
        { 2, -1, "empirical.bandwidth" },    { 3, 7, "empirical.condition" },
        { 4, -2, "empirical.condition_weight" }, { 5, 3, "empirical.param" },
        { 6, 5, "empirical.mismatch" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fl_empirical_opts o;
        fl_empirical_opts_default(&o);
        switch (cases[i].field) {
        case 0: o.window = (int)cases[i].value; break;
        case 1: o.temperature = cases[i].value; break;
        case 2: o.bandwidth = cases[i].value; break;
        case 3: o.condition = (int)cases[i].value; break;
        case 4: o.condition_weight = cases[i].value; break;
        case 5: o.param = (fl_param)(int)cases[i].value; break;
        default: o.mismatch = (int)cases[i].value; break;
        }
        fl_denoiser *d = NULL;
        fl_error err;
        assert_int_equal(fl_empirical_new(&o, c, &d, &err), FL_E_INVALID);
        assert_null(d);
        if (!strstr(fl_error_msg(&err), cases[i].key))
            fail_msg("case %zu: \"%s\" does not name %s", i, fl_error_msg(&err), cases[i].key);
    }
    assert_string_equal(fl_empirical_mismatch_name(FL_EMPIRICAL_OWN), "own");
    assert_string_equal(fl_empirical_condition_name(FL_EMPIRICAL_COND_SOFT), "soft");
    fl_clips_free(c);
}

/* ---- FIFO runs through the experiment builder ---------------------------------------- */

typedef struct tally {
    int frames, hits, target;
} tally;

/* The sprite colour of an emitted frame: chroma of its saturated pixels, nearest palette
 * colour (as tests/test_procgen.c measures the generator's frames). */
static int frame_color(const float *f, int H, int W)
{
    int HW = H * W, n = 0;
    double chroma[3] = { 0, 0, 0 };
    for (int p = 0; p < HW; p++) {
        double v[3], mx = -1, mn = 256;
        for (int c = 0; c < 3; c++) {
            v[c] = (f[c * HW + p] + 1.0) * 127.5;
            mx = v[c] > mx ? v[c] : mx;
            mn = v[c] < mn ? v[c] : mn;
        }
        if (mx - mn < 90)
            continue;
        for (int c = 0; c < 3; c++)
            chroma[c] += (v[c] - mn) / (mx - mn);
        n++;
    }
    if (n == 0)
        return -1;
    int best = -1;
    double bd = 1e9;
    for (int k = 0; k < 4; k++) {
        uint8_t rgb[3];
        fl_procgen_color_rgb(k, rgb);
        int mx = rgb[0] > rgb[1] ? (rgb[0] > rgb[2] ? rgb[0] : rgb[2]) : (rgb[1] > rgb[2] ? rgb[1] : rgb[2]);
        int mn = rgb[0] < rgb[1] ? (rgb[0] < rgb[2] ? rgb[0] : rgb[2]) : (rgb[1] < rgb[2] ? rgb[1] : rgb[2]);
        double d = 0;
        for (int c = 0; c < 3; c++) {
            double e = chroma[c] / n - (double)(rgb[c] - mn) / (mx - mn);
            d += e * e;
        }
        if (d < bd) {
            bd = d;
            best = k;
        }
    }
    return best;
}

static fl_status put_frame(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    (void)index;
    (void)cond;
    (void)err;
    tally *t = ctx;
    t->frames++;
    t->hits += frame_color(frame, 16, 16) == t->target;
    return FL_OK;
}

static void run_fifo(const char *path, const char *prompt, int target, const char *mismatch)
{
    fl_cfg *cfg = fl_cfg_new(NULL);
    assert_non_null(cfg);
    fl_error err;
    char prompts[64];
    snprintf(prompts, sizeof prompts, "{\"%s\"}", prompt);
    expect_ok(fl_cfg_set(cfg, "model", "empirical", &err), &err, "model");
    expect_ok(fl_cfg_set(cfg, "model.dataset", path, &err), &err, "dataset");
    expect_ok(fl_cfg_set(cfg, "model.prompts", prompts, &err), &err, "prompts");
    expect_ok(fl_cfg_set(cfg, "model.mismatch", mismatch, &err), &err, "mismatch");
    expect_ok(fl_cfg_set(cfg, "frames", "24", &err), &err, "frames");
    fl_experiment ex;
    expect_ok(fl_experiment_build(cfg, &ex, &err), &err, "fl_experiment_build");
    assert_int_equal(ex.model->window, 4);
    tally t = { 0, 0, target };
    fl_frame_sink sink = { put_frame, &t };
    expect_ok(fl_engine_run(ex.scheduler, ex.model, &sink, NULL, NULL, &err), &err, "engine");
    printf("fifo %s, prompt \"%s\": %d of %d frames show it\n", mismatch, prompt, t.hits, t.frames);
    assert_int_equal(t.frames, 24);
    assert_true(t.hits >= 22);
    fl_experiment_free(&ex);
    fl_cfg_free(cfg);
}

static void test_fifo_follows_prompt(void **state)
{
    (void)state;
    char dir[] = "/tmp/fl_empirical_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/clips.h5", dir);
    /* the missing file is an error that names it and the command that makes it */
    fl_cfg *cfg = fl_cfg_new(NULL);
    assert_non_null(cfg);
    fl_error err;
    expect_ok(fl_cfg_set(cfg, "model", "empirical", &err), &err, "model");
    expect_ok(fl_cfg_set(cfg, "model.dataset", path, &err), &err, "dataset");
    fl_experiment ex;
    assert_int_equal(fl_experiment_build(cfg, &ex, &err), FL_E_IO);
    assert_non_null(strstr(fl_error_msg(&err), "model.dataset"));
    assert_non_null(strstr(fl_error_msg(&err), "fifolab data make --out"));
    assert_non_null(strstr(fl_error_msg(&err), path));
    fl_cfg_free(cfg);

    fl_clips *c = tiny_data();
    expect_ok(fl_clips_write(c, path, &err), &err, "write");
    fl_clips_free(c);
    run_fifo(path, "red", 0, "exact");
    run_fifo(path, "blue", 2, "exact");
    run_fifo(path, "yellow square", 3, "own");
    remove(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_matches_reference),
        cmocka_unit_test(test_nearest_clip_at_tiny_noise),
        cmocka_unit_test(test_mean_at_huge_noise),
        cmocka_unit_test(test_per_frame_conditions),
        cmocka_unit_test(test_mismatch_modes),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_fifo_follows_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
