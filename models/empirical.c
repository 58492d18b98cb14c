/* The empirical-clip denoiser: posterior means over a clip dataset by one GEMM pass over
 * its frames per window (docs/empirical.md).
 *
 * In short. Clip i is frames c_i0 .. c_i,f-1 of the dataset; window frame j is
 * y_j = a_j x_j + s_j e_j. With v_j = s_j^2 + a_j^2 h^2 (h the bandwidth), the posterior
 * over clips is softmax_i of
 *   L_i = (1/tau) sum_j [ (a_j / v_j) y_j . c_ij - (a_j^2 / 2 v_j) |c_ij|^2 ] - penalty_i
 * (|y_j|^2 is the same for every clip and drops out). Every clip is a run of consecutive
 * dataset frames, c_ij = F[first_i + j], so all the dot products are one product
 * P = F Y^T of the [T, D] frame matrix with the [n, D] window: P[t, j] = F_t . y_j, and
 * L_i reads P[first_i + j, j]. Frames are centred (the dataset's mean frame subtracted,
 * and a_j times it from y_j) so the f32 products do not cancel. The x0 estimate
 * x0_j = sum_i w_i c_ij is a second product W^T F with W[t, j] = the weight of the clip
 * whose frame j is t, done sparsely when few weights are non-zero. */
#include "models/empirical.h"

#include <cblas.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMP_MAX_PROMPTS 65536
#define EMP_MAX_PROMPT_LEN 1024
#define EMP_MAX_WINDOW 256 /* per-frame coefficients live on the stack */
/* Smallest variance a frame's term is given: a clean frame (s = 0, h = 0) would divide by
 * zero; 1e-12 makes its term decide the clip outright, as the limit does. */
#define EMP_VMIN 1e-12
/* exp(logit - max) below this is taken as 0: the dropped mass is at most N * 1e-18 of the
 * total, far below f32 resolution, and it lets the x0 pass skip most clips. */
#define EMP_WMIN 1e-18

typedef struct empirical {
    fl_denoiser base; /* first: the engine sees an fl_denoiser */
    fl_empirical_opts o;
    char **prompts;   /* [nprompts] own copies */
    int f, D;         /* window, floats per frame (3 H W) */
    int64_t T, N;     /* frames, clips */
    float *F;         /* [T, D] frames in [-1, 1] minus mu, [C, H, W] order */
    float *mu;        /* [D] the mean frame */
    double *fnorm;    /* [T] |F_t|^2 */
    double *mdot;     /* [T] mu . F_t */
    uint8_t *raw;     /* [T, D] the frames as stored, [C, H, W] order (exact values) */
    double *rawnorm;  /* [T] |c_t|^2 of the exact values */
    double level[256]; /* byte -> b / 127.5 - 1 */
    int64_t *first;   /* [N] first frame of each clip */
    int32_t *fcap;    /* [T] caption id of each frame */
    int ncap;
    uint8_t *match;   /* [nprompts, ncap] 1: prompt p matches caption k */
} empirical;

static const fl_denoiser_vt empirical_vt;

static const char *const mismatch_names[] = { "exact", "own", "mean" };
static const char *const condition_names[] = { "hard", "soft", "off" };

const char *fl_empirical_mismatch_name(int m) { return m >= 0 && m < 3 ? mismatch_names[m] : "?"; }
const char *fl_empirical_condition_name(int c) { return c >= 0 && c < 3 ? condition_names[c] : "?"; }

void fl_empirical_opts_default(fl_empirical_opts *o)
{
    memset(o, 0, sizeof *o);
    o->window = 0;
    o->mismatch = FL_EMPIRICAL_EXACT;
    o->temperature = 1.0;
    o->bandwidth = 0.0;
    o->condition = FL_EMPIRICAL_COND_HARD;
    o->condition_weight = 8.0;
    o->param = FL_PARAM_EPS;
}

int fl_empirical_is(const fl_denoiser *d) { return d && d->vt == &empirical_vt; }

int64_t fl_empirical_nclips(const fl_denoiser *d)
{
    FL_ASSERT(fl_empirical_is(d));
    return ((const empirical *)d)->N;
}

static void empirical_free(fl_denoiser *d)
{
    empirical *e = (empirical *)d;
    if (!e)
        return;
    if (e->prompts)
        for (int p = 0; p < e->o.nprompts; p++)
            free(e->prompts[p]);
    free(e->prompts);
    free(e->F);
    free(e->mu);
    free(e->fnorm);
    free(e->mdot);
    free(e->raw);
    free(e->rawnorm);
    free(e->first);
    free(e->fcap);
    free(e->match);
    free(e);
}

/* ---- prompts ------------------------------------------------------------------------ */

/* The next word of s (a run of letters and digits, lower-cased into w, at most wsize - 1
 * bytes), skipping articles; returns the rest of s, or NULL when there is no word left. */
static const char *next_word(const char *s, char *w, size_t wsize)
{
    for (;;) {
        while (*s && !isalnum((unsigned char)*s))
            s++;
        if (!*s)
            return NULL;
        size_t n = 0;
        while (*s && isalnum((unsigned char)*s)) {
            if (n + 1 < wsize)
                w[n++] = (char)tolower((unsigned char)*s);
            s++;
        }
        w[n] = '\0';
        if (strcmp(w, "a") && strcmp(w, "an") && strcmp(w, "the"))
            return s;
    }
}

/* A prompt matches a caption when every word of the prompt (articles aside, any case) is
 * a word of the caption: "red circle" matches "a red circle moving left"; "" matches all. */
static int prompt_matches(const char *prompt, const char *caption)
{
    char w[128], cw[128];
    const char *p = prompt;
    while ((p = next_word(p, w, sizeof w))) {
        int found = 0;
        const char *c = caption;
        while (!found && (c = next_word(c, cw, sizeof cw)))
            found = !strcmp(w, cw);
        if (!found)
            return 0;
    }
    return 1;
}

/* ---- creation ----------------------------------------------------------------------- */

static fl_status check_opts(const fl_empirical_opts *o, const fl_clips *data, fl_error *err)
{
    if (!data)
        return fl_error_set(err, FL_E_INVALID, "empirical: no dataset");
    if (o->window != 0 && o->window != data->window)
        return fl_error_set(err, FL_E_INVALID,
                            "empirical.window: %d, but the dataset's clips have %d frames (make a "
                            "dataset with `fifolab data make --window %d`, or leave window unset)",
                            o->window, data->window, o->window);
    if (o->mismatch < 0 || o->mismatch > 2)
        return fl_error_set(err, FL_E_INVALID, "empirical.mismatch: unknown mode %d; accepted: exact, own, mean",
                            o->mismatch);
    if (!(o->temperature >= 1e-3 && o->temperature <= 1e6))
        return fl_error_set(err, FL_E_INVALID, "empirical.temperature: expected a number in [0.001, 1e6], got %g",
                            o->temperature);
    if (!(o->bandwidth >= 0 && o->bandwidth <= 100))
        return fl_error_set(err, FL_E_INVALID, "empirical.bandwidth: expected a number in [0, 100], got %g",
                            o->bandwidth);
    if (o->condition < 0 || o->condition > 2)
        return fl_error_set(err, FL_E_INVALID, "empirical.condition: unknown mode %d; accepted: hard, soft, off",
                            o->condition);
    if (!(o->condition_weight >= 0 && o->condition_weight <= 1e9))
        return fl_error_set(err, FL_E_INVALID,
                            "empirical.condition_weight: expected a number in [0, 1e9], got %g",
                            o->condition_weight);
    if (o->param != FL_PARAM_EPS && o->param != FL_PARAM_X0 && o->param != FL_PARAM_V)
        return fl_error_set(err, FL_E_INVALID, "empirical.param: %s is not supported; accepted: eps, x0, v",
                            fl_param_name(o->param));
    if (o->nprompts < 0 || o->nprompts > EMP_MAX_PROMPTS || (o->nprompts > 0 && !o->prompts))
        return fl_error_set(err, FL_E_INVALID, "empirical.prompts: %d prompts (0..%d, with a list)",
                            o->nprompts, EMP_MAX_PROMPTS);
    for (int p = 0; p < o->nprompts; p++)
        if (!o->prompts[p] || strlen(o->prompts[p]) > EMP_MAX_PROMPT_LEN)
            return fl_error_set(err, FL_E_INVALID, "empirical.prompts[%d]: %s", p + 1,
                                o->prompts[p] ? "over 1024 bytes" : "missing");
    if (data->window > EMP_MAX_WINDOW)
        return fl_error_set(err, FL_E_RANGE, "empirical: the dataset's window %d is over %d frames",
                            data->window, EMP_MAX_WINDOW);
    if (data->nframes > INT32_MAX / 2 || data->nclips > INT32_MAX / 2)
        return fl_error_set(err, FL_E_RANGE, "empirical: %lld frames / %lld clips are too many",
                            (long long)data->nframes, (long long)data->nclips);
    if ((int64_t)data->height * data->width * 3 > INT32_MAX / 2)
        return fl_error_set(err, FL_E_RANGE, "empirical: frames of %dx%d are too large",
                            data->height, data->width);
    return FL_OK;
}

static fl_status build_prompts(empirical *e, const fl_empirical_opts *o, const fl_clips *data,
                               fl_error *err)
{
    int P = o->nprompts, K = data->ncaptions;
    e->ncap = K;
    if (P == 0)
        return FL_OK;
    e->prompts = calloc((size_t)P, sizeof *e->prompts);
    e->match = calloc((size_t)P * (size_t)K, 1);
    int *seen = calloc((size_t)K, sizeof *seen);
    fl_status st = FL_OK;
    if (!e->prompts || !e->match || !seen) {
        st = fl_error_set(err, FL_E_NOMEM, "empirical: out of memory for %d prompts", P);
        goto done;
    }
    for (int64_t t = 0; t < e->T; t++)
        seen[e->fcap[t]] = 1;
    for (int p = 0; p < P; p++) {
        if (!(e->prompts[p] = strdup(o->prompts[p]))) {
            st = fl_error_set(err, FL_E_NOMEM, "empirical: out of memory for prompts");
            goto done;
        }
        int any = 0;
        for (int k = 0; k < K; k++) {
            e->match[(size_t)p * K + k] = (uint8_t)prompt_matches(o->prompts[p], data->captions[k]);
            any |= e->match[(size_t)p * K + k] && seen[k];
        }
        if (!any && o->condition != FL_EMPIRICAL_COND_OFF) {
            st = fl_error_set(err, FL_E_INVALID,
                              "empirical.prompts[%d]: \"%s\" matches no frame of the dataset "
                              "(captions are like \"%s\"; a prompt matches a caption holding "
                              "each of its words)",
                              p + 1, o->prompts[p], data->captions[e->fcap[0]]);
            goto done;
        }
    }
done:
    free(seen);
    return st;
}

fl_status fl_empirical_new(const fl_empirical_opts *o, const fl_clips *data, fl_denoiser **out,
                           fl_error *err)
{
    *out = NULL;
    fl_status st = check_opts(o, data, err);
    if (st)
        return st;
    empirical *e = calloc(1, sizeof *e);
    if (!e)
        return fl_error_set(err, FL_E_NOMEM, "empirical: out of memory");
    e->o = *o;
    e->o.prompts = NULL; /* the caller's list is borrowed only for the call */
    e->o.window = data->window;
    e->f = data->window;
    for (int b = 0; b < 256; b++)
        e->level[b] = b / 127.5 - 1.0;
    e->D = 3 * data->height * data->width;
    e->T = data->nframes;
    e->N = data->nclips;
    size_t D = (size_t)e->D, T = (size_t)e->T, HW = (size_t)data->height * data->width;
    e->F = malloc(T * D * sizeof *e->F);
    e->mu = malloc(D * sizeof *e->mu);
    e->fnorm = malloc(T * sizeof *e->fnorm);
    e->mdot = malloc(T * sizeof *e->mdot);
    e->raw = malloc(T * D);
    e->rawnorm = malloc(T * sizeof *e->rawnorm);
    e->first = malloc((size_t)e->N * sizeof *e->first);
    e->fcap = malloc(T * sizeof *e->fcap);
    double *acc = calloc(D, sizeof *acc);
    if (!e->F || !e->mu || !e->fnorm || !e->mdot || !e->raw || !e->rawnorm || !e->first || !e->fcap || !acc) {
        free(acc);
        empirical_free(&e->base);
        return fl_error_set(err, FL_E_NOMEM, "empirical: out of memory for %lld frames of %dx%d",
                            (long long)T, data->height, data->width);
    }
    /* [H, W, 3] bytes -> [3, H, W] in [-1, 1], the latent layout of the window */
    for (size_t t = 0; t < T; t++) {
        const uint8_t *src = data->frames + t * D;
        float *dst = e->F + t * D;
        uint8_t *rdst = e->raw + t * D;
        double rn = 0.0;
        for (size_t p = 0; p < HW; p++)
            for (size_t c = 0; c < 3; c++) {
                float v = (float)src[p * 3 + c] / 127.5f - 1.0f;
                double vd = src[p * 3 + c] / 127.5 - 1.0;
                dst[c * HW + p] = v;
                rdst[c * HW + p] = src[p * 3 + c];
                acc[c * HW + p] += v;
                rn += vd * vd;
            }
        e->rawnorm[t] = rn;
    }
    for (size_t k = 0; k < D; k++)
        e->mu[k] = (float)(acc[k] / (double)T);
    free(acc);
    for (size_t t = 0; t < T; t++) {
        float *row = e->F + t * D;
        double s = 0.0, m = 0.0;
        for (size_t k = 0; k < D; k++) {
            row[k] -= e->mu[k];
            s += (double)row[k] * row[k];
            m += (double)row[k] * e->mu[k];
        }
        e->fnorm[t] = s;
        e->mdot[t] = m;
    }
    memcpy(e->first, data->clip_first, (size_t)e->N * sizeof *e->first);
    memcpy(e->fcap, data->frame_caption, T * sizeof *e->fcap);
    if ((st = build_prompts(e, o, data, err))) {
        empirical_free(&e->base);
        return st;
    }
    e->base.vt = &empirical_vt;
    e->base.window = e->f;
    e->base.channels = 3;
    e->base.height = data->height;
    e->base.width = data->width;
    e->base.param = o->param;
    e->base.per_frame_t = 1;
    e->base.accepts_short = 1;
    *out = &e->base;
    return FL_OK;
}

/* ---- evaluation --------------------------------------------------------------------- */

/* Scratch of one call, from the caller's arena (nothing is kept between calls: eval is pure
 * and reentrant). */
typedef struct scratch {
    float *yc, *P, *Wt, *x0;
    double *logit, *pen, *dots; /* [nw, N], [N], [N, n] */
    uint8_t *cand;              /* [N] */
} scratch;

/* Logits from the dot products (s->dots), the frame norms and the penalties (s->pen, +inf:
 * excluded), into s->logit [nw, N]. In terms of the centred frames c' = c - mu,
 *   y_l . c - (a/2) |c|^2 = (y_l - a mu) . c' - (a/2) |c'|^2 + (terms equal for every clip),
 * with a the level the posterior assumes for frame l. dots hold (y_l - pa_l mu) . c'; own
 * assumes a_j for every frame, so it adds (pa_l - a_j) mu . c' (mdot). */
static void compute_logits(const empirical *e, scratch *s, int n, int nw, const double *pa,
                           const double *var, double itau, int raw)
{
    int64_t N = e->N;
    const double *fn = raw ? e->rawnorm : e->fnorm;
    for (int64_t i = 0; i < N; i++) {
        const double *d = s->dots + (size_t)i * n;
        int64_t t0 = e->first[i];
        if (s->pen[i] == INFINITY) {
            for (int v = 0; v < nw; v++)
                s->logit[(size_t)v * N + i] = -INFINITY;
            continue;
        }
        if (nw == 1) {
            double l = 0.0;
            for (int j = 0; j < n; j++)
                l += pa[j] / var[j] * d[j] - 0.5 * pa[j] * pa[j] / var[j] * fn[t0 + j];
            s->logit[i] = itau * l - s->pen[i];
            continue;
        }
        double cross = 0.0, amd = 0.0, md = 0.0, norm = 0.0;
        for (int l = 0; l < n; l++) {
            cross += d[l];
            if (!raw) {
                amd += pa[l] * e->mdot[t0 + l];
                md += e->mdot[t0 + l];
            }
            norm += fn[t0 + l];
        }
        for (int j = 0; j < n; j++)
            s->logit[(size_t)j * N + i] =
                itau * (pa[j] / var[j] * (cross + amd - pa[j] * md) -
                        0.5 * pa[j] * pa[j] / var[j] * norm) -
                s->pen[i];
    }
}

/* Turns logits l[N] (masked entries -inf) into weights in place; returns how many are
 * non-zero. */
static int64_t softmax(double *l, int64_t N)
{
    double m = -INFINITY;
    for (int64_t i = 0; i < N; i++)
        if (l[i] > m)
            m = l[i];
    double z = 0.0;
    int64_t nnz = 0;
    for (int64_t i = 0; i < N; i++) {
        double w = l[i] == -INFINITY ? 0.0 : exp(l[i] - m);
        if (w < EMP_WMIN)
            w = 0.0;
        l[i] = w;
        z += w;
        nnz += w > 0.0;
    }
    for (int64_t i = 0; i < N; i++)
        l[i] /= z;
    return nnz;
}

/* The posterior for window x. mode / tau as eval uses them. With out == NULL only the
 * weights for output frame wframe are computed, into wout [N]. */
static fl_status run(empirical *e, const fl_tensor *x, const fl_level *levels, const int32_t *cond,
                     int mode, double tau, float *out, int wframe, double *wout, fl_arena *arena,
                     fl_error *err)
{
    if (fl_tensor_device(x).kind != FL_DEVICE_CPU)
        return fl_error_set(err, FL_E_DEVICE, "empirical: window must be on the CPU");
    int n = (int)x->shape[0], D = e->D;
    int64_t T = e->T, N = e->N;
    int P = e->o.nprompts;
    int conditioned = P > 0 && cond && e->o.condition != FL_EMPIRICAL_COND_OFF;
    if (P > 0 && cond)
        for (int j = 0; j < n; j++)
            if (cond[j] >= P)
                return fl_error_set(err, FL_E_RANGE,
                                    "empirical: frame %d has condition %d, but the model has %d prompt%s",
                                    j, (int)cond[j], P, P == 1 ? "" : "s");
    int per_frame = mode == FL_EMPIRICAL_OWN; /* one weight vector per output frame */
    int nw = per_frame ? n : 1;
    double pa[EMP_MAX_WINDOW], ps[EMP_MAX_WINDOW], var[EMP_MAX_WINDOW];
    if (mode == FL_EMPIRICAL_MEAN) {
        double abar = 0.0;
        for (int j = 0; j < n; j++) {
            double a2 = levels[j].alpha * levels[j].alpha, s2 = levels[j].sigma * levels[j].sigma;
            abar += a2 / (a2 + s2);
        }
        abar = abar / n > 1.0 ? 1.0 : abar / n;
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
    double h2 = e->o.bandwidth * e->o.bandwidth;
    for (int j = 0; j < n; j++) {
        var[j] = ps[j] * ps[j] + pa[j] * pa[j] * h2;
        if (var[j] < EMP_VMIN)
            var[j] = EMP_VMIN;
    }
    scratch s = { 0 };
    s.yc = fl_arena_array(arena, (size_t)n * D, sizeof *s.yc, 0);
    s.P = fl_arena_array(arena, (size_t)T * n, sizeof *s.P, 0);
    s.logit = fl_arena_array(arena, (size_t)nw * N, sizeof *s.logit, 0);
    s.pen = fl_arena_array(arena, (size_t)N, sizeof *s.pen, 1);
    s.dots = fl_arena_array(arena, (size_t)N * n, sizeof *s.dots, 0);
    s.cand = fl_arena_array(arena, (size_t)N, 1, 0);
    if (out) {
        s.Wt = fl_arena_array(arena, (size_t)T * n, sizeof *s.Wt, 1);
        s.x0 = fl_arena_array(arena, (size_t)n * D, sizeof *s.x0, 1);
    }
    if (!s.yc || !s.P || !s.logit || !s.pen || !s.dots || !s.cand || (out && (!s.Wt || !s.x0)))
        return fl_error_set(err, FL_E_NOMEM, "empirical: out of memory for a window of %d frames", n);
    /* Centre the window as the frames are centred: y_j - a_j mu. */
    const float *xs = fl_tensor_data(x);
    for (int j = 0; j < n; j++)
        for (int k = 0; k < D; k++)
            s.yc[(size_t)j * D + k] = xs[(size_t)j * D + k] - (float)pa[j] * e->mu[k];
    /* The one pass over the dataset: P[t, j] = F_t . yc_j. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, n, D, 1.0f, e->F, D, s.yc, D,
                0.0f, s.P, n);

    /* Conditions: unmatched frames per clip; HARD keeps the clips with the fewest. */
    if (conditioned) {
        double least = INFINITY;
        for (int64_t i = 0; i < N; i++) {
            const int32_t *fc = e->fcap + e->first[i];
            int miss = 0;
            for (int j = 0; j < n; j++)
                miss += cond[j] >= 0 && !e->match[(size_t)cond[j] * e->ncap + fc[j]];
            s.pen[i] = miss;
            if (miss < least)
                least = miss;
        }
        for (int64_t i = 0; i < N; i++)
            s.pen[i] = e->o.condition == FL_EMPIRICAL_COND_SOFT ? e->o.condition_weight * s.pen[i]
                       : s.pen[i] > least                        ? INFINITY
                                                                 : 0.0;
    }
    /* Every clip's dot products, dots[i, l] = F[first_i + l] . yc_l, read from P; the
     * clips that end up with weight are refined in double below. */
    for (int64_t i = 0; i < N; i++)
        for (int l = 0; l < n; l++)
            s.dots[(size_t)i * n + l] = s.P[(size_t)(e->first[i] + l) * n + l];
    compute_logits(e, &s, n, nw, pa, var, 1.0 / tau, 0);
    int64_t nnz = 0;
    for (int v = 0; v < nw; v++)
        nnz += softmax(s.logit + (size_t)v * N, N) * (per_frame ? 1 : n);
    int64_t ncand = 0;
    for (int64_t i = 0; i < N; i++) {
        int keep = 0;
        for (int v = 0; v < nw && !keep; v++)
            keep = s.logit[(size_t)v * N + i] > 0.0;
        s.cand[i] = (uint8_t)keep;
        ncand += keep;
    }
    /* At low noise a logit is a / v ~ 1 / s^2 times a dot product, so the f32 rounding of
     * the product, of the centred frames and of y - a mu moves weights between near clips
     * by more than f32 resolution. There few clips have weight: theirs are recomputed in
     * double from the stored bytes (uncentred, exact), the rest stay excluded. At high
     * noise a / v is small and the f32 product is already accurate. */
    double coef = 0.0;
    for (int j = 0; j < n; j++)
        coef = pa[j] / var[j] > coef ? pa[j] / var[j] : coef;
    /* The refinement costs ncand / T of the product at a fraction of its speed: always
     * when few clips are left, up to a quarter of them when the logits are sensitive. */
    if (ncand * 16 <= N || (ncand * 4 <= N && coef / tau > 1.0)) {
        for (int64_t i = 0; i < N; i++) {
            if (!s.cand[i]) {
                s.pen[i] = INFINITY; /* weight below EMP_WMIN already: stays 0 */
                continue;
            }
            for (int l = 0; l < n; l++) {
                const uint8_t *a = e->raw + (size_t)(e->first[i] + l) * D;
                const float *b = xs + (size_t)l * D;
                /* four sums: independent chains the CPU can overlap */
                double acc[4] = { 0.0, 0.0, 0.0, 0.0 };
                int k = 0;
                for (; k + 4 <= D; k += 4)
                    for (int q = 0; q < 4; q++)
                        acc[q] += e->level[a[k + q]] * b[k + q];
                for (; k < D; k++)
                    acc[0] += e->level[a[k]] * b[k];
                s.dots[(size_t)i * n + l] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            }
        }
        compute_logits(e, &s, n, nw, pa, var, 1.0 / tau, 1);
        nnz = 0;
        for (int v = 0; v < nw; v++)
            nnz += softmax(s.logit + (size_t)v * N, N) * (per_frame ? 1 : n);
    }
    if (!out) {
        memcpy(wout, s.logit + (size_t)(per_frame ? wframe : 0) * N, (size_t)N * sizeof *wout);
        return FL_OK;
    }

    /* x0 (centred): sum_i w_i F[first_i + j]. Few non-zero weights (low noise): add those
     * frames directly; otherwise the transposed product W^T F, the same size as the first. */
    if (nnz * 4 < T * n) {
        for (int j = 0; j < n; j++) {
            const double *w = s.logit + (size_t)(per_frame ? j : 0) * N;
            float *dst = s.x0 + (size_t)j * D;
            for (int64_t i = 0; i < N; i++) {
                if (w[i] == 0.0)
                    continue;
                float wi = (float)w[i];
                const float *src = e->F + (size_t)(e->first[i] + j) * D;
                for (int k = 0; k < D; k++)
                    dst[k] += wi * src[k];
            }
        }
    } else {
        for (int j = 0; j < n; j++) {
            const double *w = s.logit + (size_t)(per_frame ? j : 0) * N;
            for (int64_t i = 0; i < N; i++)
                s.Wt[(size_t)(e->first[i] + j) * n + j] += (float)w[i];
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, D, (int)T, 1.0f, s.Wt, n, e->F, D,
                    0.0f, s.x0, D);
    }

    /* Un-centre, the bandwidth's shrink towards y, and the output parameterization (in the
     * level the emulated network believes the frame is at). */
    float *os = out;
    for (int j = 0; j < n; j++) {
        double a = pa[j], sg = ps[j], kj = a * h2 / var[j], keep = 1.0 - a * kj;
        const float *y = xs + (size_t)j * D;
        const float *xc = s.x0 + (size_t)j * D;
        float *dst = os + (size_t)j * D;
        for (int k = 0; k < D; k++) {
            double x0 = keep * ((double)xc[k] + e->mu[k]) + kj * y[k];
            double eps = sg > 0.0 ? (y[k] - a * x0) / sg : 0.0;
            dst[k] = (float)(e->o.param == FL_PARAM_X0  ? x0
                             : e->o.param == FL_PARAM_V ? a * eps - sg * x0
                                                        : eps);
        }
    }
    return FL_OK;
}

static fl_status empirical_eval(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                                const int32_t *cond, fl_tensor *out, fl_arena *arena, fl_error *err)
{
    empirical *e = (empirical *)d;
    if (fl_tensor_device(out).kind != FL_DEVICE_CPU)
        return fl_error_set(err, FL_E_DEVICE, "empirical: output must be on the CPU");
    return run(e, x, levels, cond, e->o.mismatch, e->o.temperature, fl_tensor_data(out), 0, NULL,
               arena, err);
}

static fl_status empirical_eval_exact(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                                      const int32_t *cond, fl_tensor *out, fl_arena *arena,
                                      fl_error *err)
{
    if (fl_tensor_device(out).kind != FL_DEVICE_CPU)
        return fl_error_set(err, FL_E_DEVICE, "empirical: output must be on the CPU");
    return run((empirical *)d, x, levels, cond, FL_EMPIRICAL_EXACT, 1.0, fl_tensor_data(out), 0,
               NULL, arena, err);
}

static const fl_denoiser_vt empirical_vt = { "empirical", empirical_eval, empirical_eval_exact,
                                             empirical_free };

fl_status fl_empirical_weights(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                               const int32_t *cond, int frame, double *w, fl_error *err)
{
    if (!fl_empirical_is(d))
        return fl_error_set(err, FL_E_INVALID, "empirical weights: not an empirical model");
    /* the interface's own checks on x and the levels, with a scratch output of x's shape */
    if (!x || x->ndim != 4 || frame < 0 || frame >= x->shape[0])
        return fl_error_set(err, FL_E_INVALID, "empirical weights: frame %d is not in the window", frame);
    fl_tensor tmp = FL_TENSOR_NULL;
    fl_status st = fl_tensor_empty(&tmp, FL_F32, 4, x->shape, NULL, err);
    if (!st)
        st = fl_denoiser_eval(d, x, levels, cond, &tmp, NULL, err); /* validates the window */
    fl_tensor_release(&tmp);
    if (st)
        return st;
    empirical *e = (empirical *)d;
    fl_arena arena;
    fl_arena_init(&arena, NULL, 0);
    st = run(e, x, levels, cond, e->o.mismatch, e->o.temperature, NULL, frame, w, &arena, err);
    fl_arena_free(&arena);
    return st;
}
