/* The online metric modules and the set that feeds them: a shared frame history (ring),
 * per-module window scheduling, the modules themselves, resume state, the series
 * collector and series trends (see eval/metric.h, docs/eval.md). */
#include "eval/metric.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "eval/fd.h"
#include "eval/temporal.h"
#include "models/gauss.h"

#define MAX_SERIES (4 + FL_METRIC_GAPS_MAX)
#define NAME_LEN 48
#define UNIT_LEN 32
#define FRAME_ELEMS_MAX (INT64_C(1) << 31) /* C*H*W per frame; far above any latent/pixel frame */

/* Which options a module reads (fl_metric_opts_read records exactly these keys). */
enum { OPT_WINDOW = 1u, OPT_RANGE = 2u, OPT_SSIM = 4u, OPT_CUTOFF = 8u, OPT_GAPS = 16u };

typedef struct module module;
typedef struct module_vt {
    const char *name, *description;
    unsigned opts;
    int windowed;    /* has window() */
    int latent_only; /* refuses pixel frames */
    fl_status (*init)(module *md, fl_error *err);
    fl_status (*frame)(module *md, int64_t t, fl_error *err);           /* frame t is in the ring */
    fl_status (*window)(module *md, int64_t s, int len, fl_error *err); /* frames s .. s+len-1 */
    void (*fini)(module *md);
    fl_status (*save)(const module *md, fl_state *st, fl_error *err);
    fl_status (*restore)(module *md, const fl_state *st, fl_error *err);
} module_vt;

struct module {
    const module_vt *vt;
    fl_metrics *set;
    fl_metric_opts o; /* resolved: stride, min_frames and range filled in */
    int history;      /* frames of history the module reads, the current one included */
    int inited;
    size_t n_series;
    fl_series_info series[MAX_SERIES];
    char names[MAX_SERIES][NAME_LEN];
    char units[MAX_SERIES][UNIT_LEN];
    void *priv;
    size_t priv_size;
};

struct fl_metrics {
    const fl_allocator *alloc;
    fl_frame_format fmt;
    int c, h, w; /* planar frame shape in the ring (pixels: 3, H, W) */
    size_t frame_len;
    fl_denoiser *model;
    fl_metric_emit emit;
    module *mods;
    size_t n_mods;
    float *ring; /* ring_len planar frames; frame t lives in slot t % ring_len */
    int ring_len;
    int64_t first, next; /* first index fed and the next expected; -1 before any */
    int finished;
    const float **wptr; /* [wmax] frame pointers of the window being measured */
    int wmax;
};

/* ---- helpers ----------------------------------------------------------------------- */

static const float *frame_at(const fl_metrics *m, int64_t t)
{
    return m->ring + (size_t)(t % m->ring_len) * m->frame_len;
}

static const float *const *window_frames(fl_metrics *m, int64_t s, int len)
{
    for (int i = 0; i < len; i++)
        m->wptr[i] = frame_at(m, s + i);
    return m->wptr;
}

static int is_pixels(const module *md) { return md->set->fmt.kind == FL_FRAME_PIXELS; }
static const char *unit_value(const module *md) { return is_pixels(md) ? "8-bit level" : "latent"; }
static const char *unit_square(const module *md) { return is_pixels(md) ? "8-bit level^2" : "latent^2"; }

static size_t add_series(module *md, const char *name, const char *unit, const char *description,
                         fl_series_kind kind, int span, int stride)
{
    size_t i = md->n_series++;
    FL_ASSERT(i < MAX_SERIES);
    snprintf(md->names[i], NAME_LEN, "%s", name);
    snprintf(md->units[i], UNIT_LEN, "%s", unit);
    fl_series_info *s = &md->series[i];
    s->name = md->names[i];
    s->module = md->vt->name;
    s->unit = md->units[i];
    s->description = description;
    s->kind = kind;
    s->span = span;
    s->stride = stride;
    return i;
}

static fl_status emit(module *md, size_t series, int64_t index, double value, fl_error *err)
{
    const fl_metric_emit *e = &md->set->emit;
    return e->fn ? e->fn(e->ctx, &md->series[series], index, value, err) : FL_OK;
}

static void *priv_alloc(module *md, size_t size)
{
    md->priv = fl_calloc(md->set->alloc, 1, size);
    md->priv_size = md->priv ? size : 0;
    return md->priv;
}

static fl_status nomem(const module *md, fl_error *err)
{
    return fl_error_set(err, FL_E_NOMEM, "metric %s: out of memory", md->vt->name);
}

/* Mean absolute difference of the pairs inside frames s .. s+len-1, NaN for one frame. */
static double window_mae(fl_metrics *m, int64_t s, int len)
{
    if (len < 2)
        return NAN;
    double acc = 0.0;
    for (int i = 0; i + 1 < len; i++)
        acc += fl_frames_mae(frame_at(m, s + i), frame_at(m, s + i + 1), m->frame_len);
    return acc / (double)(len - 1);
}

/* ---- adjacent: MSE, PSNR, SSIM of each frame pair ---------------------------------- */

typedef struct adjacent_priv {
    fl_ssim ssim;
} adjacent_priv;

static fl_status adjacent_init(module *md, fl_error *err)
{
    adjacent_priv *p = priv_alloc(md, sizeof *p);
    if (!p)
        return nomem(md, err);
    fl_metrics *m = md->set;
    md->history = 2;
    add_series(md, "adjacent_mse", unit_square(md), "mean squared difference of frames t and t+1",
               FL_SERIES_FRAME, 2, 1);
    add_series(md, "adjacent_psnr", "dB",
               "PSNR of frame t+1 against frame t, 10 log10(R^2 / MSE), capped at 100", FL_SERIES_FRAME, 2,
               1);
    add_series(md, "adjacent_ssim", "1", "SSIM of frames t and t+1 (Gaussian window, per channel, averaged)",
               FL_SERIES_FRAME, 2, 1);
    return fl_ssim_init(&p->ssim, m->c, m->h, m->w, md->o.ssim_window, md->o.ssim_sigma, md->o.range,
                        m->alloc, err);
}

static fl_status adjacent_frame(module *md, int64_t t, fl_error *err)
{
    fl_metrics *m = md->set;
    if (t - 1 < m->first)
        return FL_OK;
    adjacent_priv *p = md->priv;
    const float *a = frame_at(m, t - 1), *b = frame_at(m, t);
    double mse = fl_frames_mse(a, b, m->frame_len);
    fl_status st;
    if ((st = emit(md, 0, t - 1, mse, err)) || (st = emit(md, 1, t - 1, fl_psnr(mse, md->o.range), err)) ||
        (st = emit(md, 2, t - 1, fl_ssim_frames(&p->ssim, a, b), err)))
        return st;
    return FL_OK;
}

static void adjacent_fini(module *md)
{
    adjacent_priv *p = md->priv;
    if (p)
        fl_ssim_free(&p->ssim);
}

/* ---- motion: mean absolute temporal difference ------------------------------------- */

static fl_status motion_init(module *md, fl_error *err)
{
    (void)err;
    md->history = 2;
    add_series(md, "motion", unit_value(md), "mean absolute difference of frames t and t+1 (motion amount)",
               FL_SERIES_FRAME, 2, 1);
    add_series(md, "motion_window", unit_value(md), "mean of motion over the frame pairs inside the window",
               FL_SERIES_WINDOW, md->o.window, md->o.stride);
    return FL_OK;
}

static fl_status motion_frame(module *md, int64_t t, fl_error *err)
{
    fl_metrics *m = md->set;
    if (t - 1 < m->first)
        return FL_OK;
    return emit(md, 0, t - 1, fl_frames_mae(frame_at(m, t - 1), frame_at(m, t), m->frame_len), err);
}

static fl_status motion_window(module *md, int64_t s, int len, fl_error *err)
{
    return emit(md, 1, s, window_mae(md->set, s, len), err);
}

/* ---- flicker: VBench temporal flickering, per window -------------------------------- */

static fl_status flicker_init(module *md, fl_error *err)
{
    (void)err;
    add_series(md, "flicker", "1",
               is_pixels(md)
                   ? "VBench temporal flickering (255 - mean |frame t+1 - frame t|) / 255 over the window"
                   : "1 - mean |frame t+1 - frame t| / R over the window (latent analogue of VBench flicker)",
               FL_SERIES_WINDOW, md->o.window, md->o.stride);
    return FL_OK;
}

static fl_status flicker_window(module *md, int64_t s, int len, fl_error *err)
{
    return emit(md, 0, s, 1.0 - window_mae(md->set, s, len) / md->o.range, err);
}

/* ---- drift: statistics against the first window, and distances at frame gaps -------- */

typedef struct drift_priv {
    int d;          /* feature dimension 2C: per-frame channel means and stds */
    int has_frame;  /* anchor frame (the first frame) held */
    int has_window; /* anchor window statistics held */
    float *frame;   /* [frame_len] */
    /* anchor window: a_len, then mean [C], std [C], feature mean [d], feature cov [d, d] */
    double *anchor;
    size_t anchor_len;
    /* scratch for the current window, same layout, and per-frame features [window, d] */
    double *cur, *feat;
} drift_priv;

static size_t drift_block(const fl_metrics *m, int d)
{
    return 1 + 2 * (size_t)m->c + (size_t)d + (size_t)d * d;
}

static fl_status drift_init(module *md, fl_error *err)
{
    fl_metrics *m = md->set;
    drift_priv *p = priv_alloc(md, sizeof *p);
    if (!p)
        return nomem(md, err);
    p->d = 2 * m->c;
    p->anchor_len = drift_block(m, p->d);
    p->frame = fl_alloc(m->alloc, m->frame_len * sizeof(float));
    p->anchor = fl_calloc(m->alloc, p->anchor_len, sizeof(double));
    p->cur = fl_calloc(m->alloc, p->anchor_len, sizeof(double));
    p->feat = fl_calloc(m->alloc, (size_t)md->o.window * (size_t)p->d, sizeof(double));
    if (!p->frame || !p->anchor || !p->cur || !p->feat)
        return nomem(md, err);
    int maxgap = 0;
    for (int i = 0; i < md->o.n_gaps; i++)
        maxgap = md->o.gaps[i] > maxgap ? md->o.gaps[i] : maxgap;
    md->history = md->o.window > maxgap + 1 ? md->o.window : maxgap + 1;
    add_series(md, "drift_anchor", unit_square(md), "mean squared difference of frame t from the first frame",
               FL_SERIES_FRAME, 1, 1);
    for (int i = 0; i < md->o.n_gaps; i++) {
        char name[NAME_LEN];
        snprintf(name, sizeof name, "drift_gap%d", md->o.gaps[i]);
        add_series(md, name, unit_square(md),
                   "mean squared difference of frames t and t+gap (gap in the name)", FL_SERIES_FRAME,
                   md->o.gaps[i] + 1, 1);
    }
    add_series(md, "drift_mean", unit_value(md),
               "RMS over channels of (window channel mean - first window's)", FL_SERIES_WINDOW, md->o.window,
               md->o.stride);
    add_series(md, "drift_std", unit_value(md), "RMS over channels of (window channel std - first window's)",
               FL_SERIES_WINDOW, md->o.window, md->o.stride);
    add_series(md, "drift_fd", unit_square(md),
               "Frechet distance of per-frame [channel means, channel stds] features, window vs first window",
               FL_SERIES_WINDOW, md->o.window, md->o.stride);
    return FL_OK;
}

static void drift_fini(module *md)
{
    drift_priv *p = md->priv;
    if (!p)
        return;
    const fl_allocator *al = md->set->alloc;
    fl_free(al, p->frame, md->set->frame_len * sizeof(float));
    fl_free(al, p->anchor, p->anchor_len * sizeof(double));
    fl_free(al, p->cur, p->anchor_len * sizeof(double));
    fl_free(al, p->feat, (size_t)md->o.window * (size_t)p->d * sizeof(double));
}

static fl_status drift_frame(module *md, int64_t t, fl_error *err)
{
    fl_metrics *m = md->set;
    drift_priv *p = md->priv;
    const float *x = frame_at(m, t);
    if (!p->has_frame) {
        memcpy(p->frame, x, m->frame_len * sizeof(float));
        p->has_frame = 1;
    }
    fl_status st = emit(md, 0, t, fl_frames_mse(p->frame, x, m->frame_len), err);
    for (int i = 0; !st && i < md->o.n_gaps; i++) {
        int64_t g = md->o.gaps[i];
        if (t - g >= m->first)
            st = emit(md, 1 + (size_t)i, t - g, fl_frames_mse(frame_at(m, t - g), x, m->frame_len), err);
    }
    return st;
}

/* Window statistics into blk (layout of drift_priv.anchor). */
static void drift_stats(module *md, int64_t s, int len, double *blk)
{
    fl_metrics *m = md->set;
    drift_priv *p = md->priv;
    int c = m->c, d = p->d;
    size_t hw = (size_t)m->h * (size_t)m->w;
    double *mean = blk + 1, *sd = mean + c, *fmu = sd + c, *fcov = fmu + d;
    blk[0] = len;
    for (int ch = 0; ch < c; ch++) {
        double acc = 0.0, acc2 = 0.0;
        for (int i = 0; i < len; i++) {
            const float *x = frame_at(m, s + i) + (size_t)ch * hw;
            double fm = 0.0, fv = 0.0;
            for (size_t k = 0; k < hw; k++)
                fm += x[k];
            fm /= (double)hw;
            for (size_t k = 0; k < hw; k++)
                fv += ((double)x[k] - fm) * ((double)x[k] - fm);
            p->feat[(size_t)i * d + ch] = fm;
            p->feat[(size_t)i * d + c + ch] = sqrt(fv / (double)hw);
            acc += fm;
        }
        mean[ch] = acc / (double)len;
        for (int i = 0; i < len; i++) {
            const float *x = frame_at(m, s + i) + (size_t)ch * hw;
            for (size_t k = 0; k < hw; k++)
                acc2 += ((double)x[k] - mean[ch]) * ((double)x[k] - mean[ch]);
        }
        sd[ch] = sqrt(acc2 / ((double)len * (double)hw));
    }
    for (int j = 0; j < d; j++) {
        double acc = 0.0;
        for (int i = 0; i < len; i++)
            acc += p->feat[(size_t)i * d + j];
        fmu[j] = acc / (double)len;
    }
    for (int j = 0; j < d; j++)
        for (int k = 0; k <= j; k++) {
            double acc = 0.0;
            for (int i = 0; i < len; i++)
                acc += (p->feat[(size_t)i * d + j] - fmu[j]) * (p->feat[(size_t)i * d + k] - fmu[k]);
            double v = len > 1 ? acc / (double)(len - 1) : NAN;
            fcov[(size_t)j * d + k] = fcov[(size_t)k * d + j] = v;
        }
}

static fl_status drift_window(module *md, int64_t s, int len, fl_error *err)
{
    fl_metrics *m = md->set;
    drift_priv *p = md->priv;
    int c = m->c, d = p->d;
    drift_stats(md, s, len, p->cur);
    if (!p->has_window) {
        memcpy(p->anchor, p->cur, p->anchor_len * sizeof(double));
        p->has_window = 1;
    }
    const double *a = p->anchor, *b = p->cur;
    double dm = 0.0, ds = 0.0;
    for (int ch = 0; ch < c; ch++) {
        double e = b[1 + ch] - a[1 + ch], f = b[1 + c + ch] - a[1 + c + ch];
        dm += e * e;
        ds += f * f;
    }
    double fd = NAN;
    if (a[0] >= 2 && b[0] >= 2) {
        fl_fd_result r;
        const double *amu = a + 1 + 2 * c, *bmu = b + 1 + 2 * c;
        fl_status st =
            fl_fd_gaussian(d, bmu, bmu + d, (int64_t)b[0], amu, amu + d, (int64_t)a[0], m->alloc, &r, err);
        if (st)
            return fl_error_prefix(err, "metric drift: window at frame %" PRId64, s);
        fd = r.fd;
    }
    size_t w0 = 1 + (size_t)md->o.n_gaps;
    fl_status st;
    if ((st = emit(md, w0, s, sqrt(dm / c), err)) || (st = emit(md, w0 + 1, s, sqrt(ds / c), err)) ||
        (st = emit(md, w0 + 2, s, fd, err)))
        return st;
    return FL_OK;
}

static fl_status drift_save(const module *md, fl_state *st, fl_error *err)
{
    const drift_priv *p = md->priv;
    int64_t flags[2] = { p->has_frame, p->has_window };
    fl_status rc = fl_state_put(st, "metrics/drift/flags", FL_STATE_I64, flags, 2, err);
    if (!rc && p->has_frame)
        rc = fl_state_put(st, "metrics/drift/anchor_frame", FL_STATE_F32, p->frame,
                          (int64_t)md->set->frame_len, err);
    if (!rc && p->has_window)
        rc = fl_state_put(st, "metrics/drift/anchor_window", FL_STATE_F64, p->anchor, (int64_t)p->anchor_len,
                          err);
    return rc;
}

static fl_status drift_restore(module *md, const fl_state *st, fl_error *err)
{
    drift_priv *p = md->priv;
    int64_t flags[2];
    fl_status rc = fl_state_get(st, "metrics/drift/flags", FL_STATE_I64, flags, 2, err);
    if (!rc && flags[0])
        rc = fl_state_get(st, "metrics/drift/anchor_frame", FL_STATE_F32, p->frame,
                          (int64_t)md->set->frame_len, err);
    if (!rc && flags[1])
        rc = fl_state_get(st, "metrics/drift/anchor_window", FL_STATE_F64, p->anchor, (int64_t)p->anchor_len,
                          err);
    if (!rc) {
        p->has_frame = flags[0] != 0;
        p->has_window = flags[1] != 0;
    }
    return rc;
}

/* ---- spectral: high-frequency energy shares of each window -------------------------- */

typedef struct spectral_priv {
    fl_spectral *sp;
    float *grey; /* pixels: [window, H * W] luma frames */
    const float **gptr;
} spectral_priv;

static fl_status spectral_init(module *md, fl_error *err)
{
    fl_metrics *m = md->set;
    spectral_priv *p = priv_alloc(md, sizeof *p);
    if (!p)
        return nomem(md, err);
    md->history = 1;
    /* Pixels are measured on luma (BT.601), as spectral analyses of video usually are. */
    int ch = is_pixels(md) ? 1 : m->c;
    fl_status st = fl_spectral_new(ch, md->o.window, m->h, m->w, md->o.cutoff, m->alloc, &p->sp, err);
    if (st)
        return st;
    if (is_pixels(md)) {
        p->grey = fl_alloc(m->alloc, (size_t)md->o.window * (size_t)m->h * (size_t)m->w * sizeof(float));
        p->gptr = fl_alloc(m->alloc, (size_t)md->o.window * sizeof(float *));
        if (!p->grey || !p->gptr)
            return nomem(md, err);
    }
    add_series(md, "spectral_hf_spatial", "1",
               "share of the window's 3-D spectrum energy above the cutoff in spatial frequency",
               FL_SERIES_WINDOW, md->o.window, md->o.stride);
    add_series(md, "spectral_hf_temporal", "1",
               "share of the window's energy above the cutoff in temporal frequency", FL_SERIES_WINDOW,
               md->o.window, md->o.stride);
    add_series(md, "spectral_hf_st", "1",
               "share of the window's energy above the cutoff in space-time frequency", FL_SERIES_WINDOW,
               md->o.window, md->o.stride);
    return FL_OK;
}

static fl_status spectral_window(module *md, int64_t s, int len, fl_error *err)
{
    fl_metrics *m = md->set;
    spectral_priv *p = md->priv;
    const float *const *fr = window_frames(m, s, len);
    if (p->grey) {
        size_t hw = (size_t)m->h * (size_t)m->w;
        for (int i = 0; i < len; i++) {
            float *g = p->grey + (size_t)i * hw;
            for (size_t k = 0; k < hw; k++)
                g[k] = (float)(0.299 * fr[i][k] + 0.587 * fr[i][hw + k] + 0.114 * fr[i][2 * hw + k]);
            p->gptr[i] = g;
        }
        fr = p->gptr;
    }
    fl_spectral_split sp;
    fl_status st = fl_spectral_window(p->sp, fr, len, &sp, err);
    if (st)
        return fl_error_prefix(err, "metric spectral: window at frame %" PRId64, s);
    if ((st = emit(md, 0, s, sp.spatial, err)) || (st = emit(md, 1, s, sp.temporal, err)) ||
        (st = emit(md, 2, s, sp.spatiotemporal, err)))
        return st;
    return FL_OK;
}

static void spectral_fini(module *md)
{
    spectral_priv *p = md->priv;
    if (!p)
        return;
    const fl_allocator *al = md->set->alloc;
    fl_spectral_free(p->sp);
    fl_free(al, p->grey, (size_t)md->o.window * (size_t)md->set->h * (size_t)md->set->w * sizeof(float));
    fl_free(al, p->gptr, (size_t)md->o.window * sizeof(float *));
}

/* ---- oracle: the gauss testbed's spectrum and correlation against the truth --------- */

typedef struct oracle_priv {
    fl_tensor win;        /* [window, C, H, W] f32 */
    double *power, *corr; /* [H * W] per mode */
    const double *P;
    double sum_p, rho;
} oracle_priv;

static fl_status oracle_init(module *md, fl_error *err)
{
    fl_metrics *m = md->set;
    fl_denoiser *d = m->model;
    if (!d || !fl_gauss_is(d))
        return fl_error_set(err, FL_E_INVALID,
                            "metric oracle: needs the gauss model (the only one with a known truth), got %s",
                            d ? d->vt->name : "no model");
    if (d->channels != m->c || d->height != m->h || d->width != m->w)
        return fl_error_set(err, FL_E_SHAPE,
                            "metric oracle: frames are [%d, %d, %d], the model's [%d, %d, %d]", m->c, m->h,
                            m->w, d->channels, d->height, d->width);
    oracle_priv *p = priv_alloc(md, sizeof *p);
    if (!p)
        return nomem(md, err);
    size_t hw = (size_t)m->h * (size_t)m->w;
    int64_t shape[4] = { md->o.window, m->c, m->h, m->w };
    fl_status st = fl_tensor_empty(&p->win, FL_F32, 4, shape, m->alloc, err);
    if (st)
        return st;
    p->power = fl_alloc(m->alloc, hw * sizeof(double));
    p->corr = fl_alloc(m->alloc, hw * sizeof(double));
    if (!p->power || !p->corr)
        return nomem(md, err);
    p->P = fl_gauss_power(d);
    p->rho = fl_gauss_opts_of(d)->rho;
    for (size_t k = 0; k < hw; k++)
        p->sum_p += p->P[k];
    md->history = 1;
    int W = md->o.window, S = md->o.stride;
    add_series(md, "oracle_power_ratio", "1",
               "total power of the window over the true total (1 for the true process)", FL_SERIES_WINDOW, W,
               S);
    add_series(md, "oracle_power_ratio_high", "1",
               "the same over the high half of the spatial frequencies (blur lowers it)", FL_SERIES_WINDOW, W,
               S);
    add_series(md, "oracle_power_err", "1",
               "sum over modes |power - P| / sum P: error of the per-mode power spectrum", FL_SERIES_WINDOW,
               W, S);
    add_series(md, "oracle_corr", "1", "drift-compensated lag-1 correlation (rho for the true process)",
               FL_SERIES_WINDOW, W, S);
    add_series(md, "oracle_corr_err", "1", "oracle_corr - rho", FL_SERIES_WINDOW, W, S);
    add_series(md, "oracle_corr_mode_err", "1",
               "power-weighted mean over modes of |per-mode lag-1 correlation - rho|", FL_SERIES_WINDOW, W,
               S);
    return FL_OK;
}

static fl_status oracle_window(module *md, int64_t s, int len, fl_error *err)
{
    fl_metrics *m = md->set;
    oracle_priv *p = md->priv;
    double v[6] = { NAN, NAN, NAN, NAN, NAN, NAN };
    if (len >= 2) {
        float *dst = fl_tensor_data(&p->win);
        for (int i = 0; i < len; i++)
            memcpy(dst + (size_t)i * m->frame_len, frame_at(m, s + i), m->frame_len * sizeof(float));
        fl_tensor view = FL_TENSOR_NULL;
        fl_gauss_stats_result gs;
        fl_status st = fl_tensor_narrow(&view, &p->win, 0, 0, len, err);
        if (!st)
            st = fl_gauss_stats(m->model, &view, &gs, err);
        if (!st)
            st = fl_gauss_mode_stats(m->model, &view, p->power, p->corr, err);
        fl_tensor_release(&view);
        if (st)
            return fl_error_prefix(err, "metric oracle: window at frame %" PRId64, s);
        size_t hw = (size_t)m->h * (size_t)m->w;
        double perr = 0.0, cerr = 0.0;
        for (size_t k = 0; k < hw; k++) {
            perr += fabs(p->power[k] - p->P[k]);
            if (p->P[k] > 0.0)
                cerr += p->P[k] * fabs(p->corr[k] - p->rho);
        }
        v[0] = gs.power_ratio;
        v[1] = gs.power_ratio_high;
        v[2] = perr / p->sum_p;
        v[3] = gs.corr_lag1;
        v[4] = gs.corr_lag1 - p->rho;
        v[5] = cerr / p->sum_p;
    }
    for (size_t i = 0; i < 6; i++) {
        fl_status st = emit(md, i, s, v[i], err);
        if (st)
            return st;
    }
    return FL_OK;
}

static void oracle_fini(module *md)
{
    oracle_priv *p = md->priv;
    if (!p)
        return;
    size_t hw = (size_t)md->set->h * (size_t)md->set->w;
    fl_tensor_release(&p->win);
    fl_free(md->set->alloc, p->power, hw * sizeof(double));
    fl_free(md->set->alloc, p->corr, hw * sizeof(double));
}

/* ---- stats: per-frame mean and standard deviation ----------------------------------- */

static fl_status stats_init(module *md, fl_error *err)
{
    (void)err;
    md->history = 1;
    add_series(md, "frame_mean", unit_value(md), "mean of every element of frame t", FL_SERIES_FRAME, 1, 1);
    add_series(md, "frame_std", unit_value(md), "standard deviation of every element of frame t",
               FL_SERIES_FRAME, 1, 1);
    return FL_OK;
}

static fl_status stats_frame(module *md, int64_t t, fl_error *err)
{
    fl_metrics *m = md->set;
    const float *x = frame_at(m, t);
    double mean = 0.0, var = 0.0;
    for (size_t i = 0; i < m->frame_len; i++)
        mean += x[i];
    mean /= (double)m->frame_len;
    for (size_t i = 0; i < m->frame_len; i++)
        var += ((double)x[i] - mean) * ((double)x[i] - mean);
    fl_status st = emit(md, 0, t, mean, err);
    return st ? st : emit(md, 1, t, sqrt(var / (double)m->frame_len), err);
}

/* ---- registry ---------------------------------------------------------------------- */

static const module_vt adjacent_vt = { "adjacent",
                                       "adjacent-frame MSE, PSNR and SSIM",
                                       OPT_RANGE | OPT_SSIM,
                                       0,
                                       0,
                                       adjacent_init,
                                       adjacent_frame,
                                       NULL,
                                       adjacent_fini,
                                       NULL,
                                       NULL };
static const module_vt flicker_vt = { "flicker",
                                      "VBench temporal flickering score per window",
                                      OPT_WINDOW | OPT_RANGE,
                                      1,
                                      0,
                                      flicker_init,
                                      NULL,
                                      flicker_window,
                                      NULL,
                                      NULL,
                                      NULL };
static const module_vt motion_vt = { "motion",
                                     "motion amount: mean absolute temporal difference",
                                     OPT_WINDOW,
                                     1,
                                     0,
                                     motion_init,
                                     motion_frame,
                                     motion_window,
                                     NULL,
                                     NULL,
                                     NULL };
static const module_vt drift_vt = {
    "drift",
    "anchor drift: window statistics against the first window, distances at frame gaps",
    OPT_WINDOW | OPT_GAPS,
    1,
    0,
    drift_init,
    drift_frame,
    drift_window,
    drift_fini,
    drift_save,
    drift_restore
};
static const module_vt spectral_vt = { "spectral",
                                       "spatial / temporal high-frequency energy shares (3-D FFT)",
                                       OPT_WINDOW | OPT_CUTOFF,
                                       1,
                                       0,
                                       spectral_init,
                                       NULL,
                                       spectral_window,
                                       spectral_fini,
                                       NULL,
                                       NULL };
static const module_vt oracle_vt = {
    "oracle",    "gauss testbed: power spectrum and lag-1 correlation against the truth",
    OPT_WINDOW,  1,
    1,           oracle_init,
    NULL,        oracle_window,
    oracle_fini, NULL,
    NULL
};
static const module_vt stats_vt = {
    "stats", "per-frame mean and standard deviation", 0, 0, 0, stats_init, stats_frame, NULL, NULL, NULL, NULL
};

static const module_vt *const registry[] = { &adjacent_vt, &flicker_vt, &motion_vt, &drift_vt,
                                             &spectral_vt, &oracle_vt,  &stats_vt };
static const char *const registry_names[] = { "adjacent", "flicker", "motion", "drift",
                                              "spectral", "oracle",  "stats",  NULL };
#define N_REGISTRY (sizeof registry / sizeof registry[0])

static const module_vt *find_vt(const char *name)
{
    for (size_t i = 0; i < N_REGISTRY; i++)
        if (name && strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

const char *const *fl_metric_names(void) { return registry_names; }

const char *fl_metric_describe(const char *name)
{
    const module_vt *vt = find_vt(name);
    return vt ? vt->description : NULL;
}

static fl_status unknown_module(const char *name, fl_error *err)
{
    char list[256] = "";
    for (size_t i = 0; i < N_REGISTRY; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", registry[i]->name);
    return fl_error_set(err, FL_E_INVALID, "metrics: unknown module \"%s\"; accepted: %s",
                        name ? name : "(null)", list);
}

/* ---- options ----------------------------------------------------------------------- */

void fl_metric_opts_default(fl_metric_opts *o)
{
    static const int gaps[] = { 1, 2, 4, 8, 16, 32 };
    memset(o, 0, sizeof *o);
    o->window = 16;
    o->ssim_window = 11;
    o->ssim_sigma = 1.5;
    o->cutoff = 0.25;
    o->n_gaps = (int)(sizeof gaps / sizeof gaps[0]);
    memcpy(o->gaps, gaps, sizeof gaps);
}

static fl_status opts_check(const char *mod, unsigned mask, const fl_metric_opts *o, fl_error *err)
{
    if (mask & OPT_WINDOW) {
        if (o->window < 2 || o->window > 4096)
            return fl_error_set(err, FL_E_RANGE, "%s.window: expected an integer in [2, 4096], got %d", mod,
                                o->window);
        if (o->stride < 0 || o->stride > 4096)
            return fl_error_set(err, FL_E_RANGE, "%s.stride: expected an integer in [0, 4096], got %d", mod,
                                o->stride);
        if (o->min_frames < 0 || o->min_frames > o->window)
            return fl_error_set(err, FL_E_RANGE,
                                "%s.min_frames: expected an integer in [0, window = %d], got %d", mod,
                                o->window, o->min_frames);
    }
    if ((mask & OPT_RANGE) && !(o->range >= 0.0 && isfinite(o->range)))
        return fl_error_set(err, FL_E_RANGE,
                            "%s.range: expected a finite number >= 0 (0: the default), got %g", mod,
                            o->range);
    if (mask & OPT_SSIM) {
        if (o->ssim_window < 1 || o->ssim_window > 99 || o->ssim_window % 2 == 0)
            return fl_error_set(err, FL_E_RANGE, "%s.ssim_window: expected an odd integer in [1, 99], got %d",
                                mod, o->ssim_window);
        if (!(o->ssim_sigma > 0.0 && o->ssim_sigma <= 100.0))
            return fl_error_set(err, FL_E_RANGE, "%s.ssim_sigma: expected a number in (0, 100], got %g", mod,
                                o->ssim_sigma);
    }
    if ((mask & OPT_CUTOFF) && !(o->cutoff > 0.0 && o->cutoff <= 1.0))
        return fl_error_set(err, FL_E_RANGE, "%s.cutoff: expected a number in (0, 1] (of Nyquist), got %g",
                            mod, o->cutoff);
    if (mask & OPT_GAPS) {
        if (o->n_gaps < 0 || o->n_gaps > FL_METRIC_GAPS_MAX)
            return fl_error_set(err, FL_E_RANGE, "%s.gaps: expected 0 to %d gaps, got %d", mod,
                                FL_METRIC_GAPS_MAX, o->n_gaps);
        for (int i = 0; i < o->n_gaps; i++) {
            if (o->gaps[i] < 1 || o->gaps[i] > 4096)
                return fl_error_set(err, FL_E_RANGE, "%s.gaps[%d]: expected an integer in [1, 4096], got %d",
                                    mod, i + 1, o->gaps[i]);
            for (int j = 0; j < i; j++)
                if (o->gaps[j] == o->gaps[i])
                    return fl_error_set(err, FL_E_INVALID, "%s.gaps: %d appears twice", mod, o->gaps[i]);
        }
    }
    return FL_OK;
}

fl_status fl_metric_opts_read(fl_cfg *t, const char *name, fl_metric_opts *o, fl_error *err)
{
    fl_metric_opts_default(o);
    const module_vt *vt = find_vt(name);
    if (!vt)
        return unknown_module(name, err);
    fl_metric_opts r = *o;
    long v;
    double x;
    fl_status st;
    if (vt->opts & OPT_WINDOW) {
        if ((st = fl_cfg_int(t, "window", 16, 2, 4096, &v, err)))
            return st;
        r.window = (int)v;
        if ((st = fl_cfg_int(t, "stride", 0, 0, 4096, &v, err)))
            return st;
        r.stride = (int)v;
        if ((st = fl_cfg_int(t, "min_frames", 0, 0, 4096, &v, err)))
            return st;
        r.min_frames = (int)v;
        if (r.min_frames > r.window)
            return fl_cfg_error(t, "min_frames", err, FL_E_RANGE, "expected at most window = %d, got %d",
                                r.window, r.min_frames);
    }
    if (vt->opts & OPT_RANGE) {
        if ((st = fl_cfg_num(t, "range", 0.0, 0.0, HUGE_VAL, &x, err)))
            return st;
        r.range = x;
    }
    if (vt->opts & OPT_SSIM) {
        if ((st = fl_cfg_int(t, "ssim_window", 11, 1, 99, &v, err)))
            return st;
        if (v % 2 == 0)
            return fl_cfg_error(t, "ssim_window", err, FL_E_RANGE, "expected an odd integer, got %ld", v);
        r.ssim_window = (int)v;
        if ((st = fl_cfg_num(t, "ssim_sigma", 1.5, 1e-6, 100.0, &x, err)))
            return st;
        r.ssim_sigma = x;
    }
    if (vt->opts & OPT_CUTOFF) {
        if ((st = fl_cfg_num(t, "cutoff", 0.25, 1e-6, 1.0, &x, err)))
            return st;
        r.cutoff = x;
    }
    if (vt->opts & OPT_GAPS) {
        double def[FL_METRIC_GAPS_MAX], got[FL_METRIC_GAPS_MAX];
        int n = 0;
        for (int i = 0; i < o->n_gaps; i++)
            def[i] = o->gaps[i];
        if ((st = fl_cfg_nums(t, "gaps", def, o->n_gaps, 1, FL_METRIC_GAPS_MAX, 1, 4096, got, &n, err)))
            return st;
        r.n_gaps = n;
        for (int i = 0; i < n; i++) {
            if (got[i] != floor(got[i]))
                return fl_cfg_error(t, "gaps", err, FL_E_INVALID, "expected integers, got %g", got[i]);
            r.gaps[i] = (int)got[i];
        }
    }
    if ((st = opts_check(name, vt->opts, &r, err)))
        return st;
    *o = r;
    return FL_OK;
}

/* ---- the set ----------------------------------------------------------------------- */

void fl_metrics_free(fl_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_mods; i++) {
        module *md = &m->mods[i];
        if (md->vt && md->vt->fini && md->inited)
            md->vt->fini(md);
        fl_free(m->alloc, md->priv, md->priv_size);
    }
    fl_free(m->alloc, m->mods, m->n_mods * sizeof(module));
    fl_free(m->alloc, m->ring, (size_t)m->ring_len * m->frame_len * sizeof(float));
    fl_free(m->alloc, m->wptr, (size_t)m->wmax * sizeof(float *));
    fl_free(m->alloc, m, sizeof *m);
}

fl_status fl_metrics_new(const fl_metric_spec *specs, size_t n_specs, const fl_frame_format *fmt,
                         fl_denoiser *model, const fl_metric_emit *emit_to, const fl_allocator *alloc,
                         fl_metrics **out, fl_error *err)
{
    *out = NULL;
    if (fmt->kind != FL_FRAME_LATENT && fmt->kind != FL_FRAME_PIXELS)
        return fl_error_set(err, FL_E_INVALID, "metrics: unknown frame kind %d", (int)fmt->kind);
    if (fmt->channels < 1 || fmt->height < 1 || fmt->width < 1 ||
        (int64_t)fmt->channels * fmt->height * fmt->width > FRAME_ELEMS_MAX)
        return fl_error_set(err, FL_E_SHAPE, "metrics: frame shape [%d, %d, %d] is empty or too large",
                            fmt->channels, fmt->height, fmt->width);
    if (fmt->kind == FL_FRAME_PIXELS && fmt->channels != 3)
        return fl_error_set(err, FL_E_SHAPE, "metrics: pixel frames are [H, W, 3] RGB, got %d channels",
                            fmt->channels);
    /* Resolve the module list first: unknown and repeated names, and whether motion comes
     * along with a consistency module. */
    const module_vt *auto_motion = NULL;
    const fl_metric_opts *motion_opts = NULL;
    int have_motion = 0;
    for (size_t i = 0; i < n_specs; i++) {
        const module_vt *vt = find_vt(specs[i].name);
        if (!vt)
            return unknown_module(specs[i].name, err);
        for (size_t j = 0; j < i; j++)
            if (strcmp(specs[j].name, specs[i].name) == 0)
                return fl_error_set(err, FL_E_INVALID, "metrics: module \"%s\" named twice", specs[i].name);
        if (vt == &motion_vt)
            have_motion = 1;
        if (vt == &adjacent_vt || vt == &flicker_vt)
            auto_motion = &motion_vt;
        if (vt == &flicker_vt && !motion_opts)
            motion_opts = specs[i].opts;
    }
    if (have_motion)
        auto_motion = NULL;
    fl_metrics *m = fl_calloc(alloc, 1, sizeof *m);
    if (!m)
        return fl_error_set(err, FL_E_NOMEM, "metrics: out of memory");
    m->alloc = alloc;
    m->fmt = *fmt;
    m->c = fmt->channels;
    m->h = fmt->height;
    m->w = fmt->width;
    m->frame_len = (size_t)m->c * (size_t)m->h * (size_t)m->w;
    m->model = model;
    if (emit_to)
        m->emit = *emit_to;
    m->first = m->next = -1;
    m->n_mods = n_specs + (auto_motion ? 1 : 0);
    m->mods = fl_calloc(alloc, m->n_mods ? m->n_mods : 1, sizeof(module));
    fl_status st = FL_OK;
    if (!m->mods) {
        m->n_mods = 0;
        st = fl_error_set(err, FL_E_NOMEM, "metrics: out of memory");
        goto fail;
    }
    m->ring_len = 1;
    for (size_t i = 0; i < m->n_mods; i++) {
        module *md = &m->mods[i];
        const fl_metric_opts *given = i < n_specs ? specs[i].opts : motion_opts;
        md->vt = i < n_specs ? find_vt(specs[i].name) : auto_motion;
        md->set = m;
        if (given)
            md->o = *given;
        else
            fl_metric_opts_default(&md->o);
        if ((st = opts_check(md->vt->name, md->vt->opts, &md->o, err)))
            goto fail;
        if (!(md->vt->opts & OPT_WINDOW)) /* modules without windows keep the defaults' */
            md->o.window = 16;
        if (md->o.stride == 0)
            md->o.stride = md->o.window;
        if (md->o.min_frames == 0)
            md->o.min_frames = md->o.window / 2 > 2 ? md->o.window / 2 : 2;
        if (md->o.range == 0.0)
            md->o.range = fmt->kind == FL_FRAME_PIXELS ? 255.0 : 1.0;
        if (md->vt->latent_only && fmt->kind != FL_FRAME_LATENT) {
            st = fl_error_set(err, FL_E_INVALID, "metric %s: measures latent frames only", md->vt->name);
            goto fail;
        }
        md->history = md->vt->windowed ? md->o.window : 1;
        st = md->vt->init(md, err);
        md->inited = 1;
        if (st)
            goto fail;
        if (md->vt->windowed && md->history < md->o.window)
            md->history = md->o.window;
        if (md->history > m->ring_len)
            m->ring_len = md->history;
        if (md->vt->windowed && md->o.window > m->wmax)
            m->wmax = md->o.window;
    }
    if (!m->wmax)
        m->wmax = 1;
    m->ring = fl_alloc(alloc, (size_t)m->ring_len * m->frame_len * sizeof(float));
    m->wptr = fl_alloc(alloc, (size_t)m->wmax * sizeof(float *));
    if (!m->ring || !m->wptr) {
        st = fl_error_set(err, FL_E_NOMEM, "metrics: out of memory for %d frames of history", m->ring_len);
        goto fail;
    }
    *out = m;
    return FL_OK;
fail:
    fl_metrics_free(m);
    return st;
}

size_t fl_metrics_series_count(const fl_metrics *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->n_mods; i++)
        n += m->mods[i].n_series;
    return n;
}

const fl_series_info *fl_metrics_series(const fl_metrics *m, size_t i)
{
    for (size_t k = 0; k < m->n_mods; k++) {
        if (i < m->mods[k].n_series)
            return &m->mods[k].series[i];
        i -= m->mods[k].n_series;
    }
    return NULL;
}

static void to_planar(const fl_metrics *m, const void *frame, float *dst)
{
    if (m->fmt.kind == FL_FRAME_LATENT) {
        memcpy(dst, frame, m->frame_len * sizeof(float));
        return;
    }
    const uint8_t *px = frame;
    size_t hw = (size_t)m->h * (size_t)m->w;
    for (size_t k = 0; k < hw; k++)
        for (int c = 0; c < 3; c++)
            dst[(size_t)c * hw + k] = px[k * 3 + (size_t)c];
}

fl_status fl_metrics_put(fl_metrics *m, int64_t index, const void *frame, fl_error *err)
{
    if (m->finished)
        return fl_error_set(err, FL_E_INVALID, "metrics: frame %" PRId64 " arrived after finish", index);
    if (m->next < 0 ? index < 0 : index != m->next)
        return fl_error_set(err, FL_E_INVALID,
                            m->next < 0 ? "metrics: frame index %" PRId64 " < 0"
                                        : "metrics: frame %" PRId64 " arrived, expected %" PRId64
                                          " (frames come in order, one by one)",
                            index, m->next);
    if (m->next < 0)
        m->first = index;
    to_planar(m, frame, m->ring + (size_t)(index % m->ring_len) * m->frame_len);
    m->next = index + 1;
    for (size_t i = 0; i < m->n_mods; i++) {
        module *md = &m->mods[i];
        fl_status st;
        if (md->vt->frame && (st = md->vt->frame(md, index, err)))
            return st;
        if (md->vt->window) {
            int64_t s = index - md->o.window + 1;
            if (s >= m->first && (s - m->first) % md->o.stride == 0 &&
                (st = md->vt->window(md, s, md->o.window, err)))
                return st;
        }
    }
    return FL_OK;
}

fl_status fl_metrics_put_tensor(fl_metrics *m, int64_t first_index, const fl_tensor *frames, fl_error *err)
{
    char buf[64];
    int lat = m->fmt.kind == FL_FRAME_LATENT;
    int64_t want[3] = { lat ? m->c : m->h, lat ? m->h : m->w, lat ? m->w : 3 };
    if (fl_tensor_device(frames).kind != FL_DEVICE_CPU || frames->ndim != 4 ||
        frames->dtype != (lat ? FL_F32 : FL_U8) || frames->shape[1] != want[0] ||
        frames->shape[2] != want[1] || frames->shape[3] != want[2])
        return fl_error_set(
            err, FL_E_SHAPE,
            "metrics: frames must be [N, %" PRId64 ", %" PRId64 ", %" PRId64 "] %s on the cpu, got %s",
            want[0], want[1], want[2], lat ? "f32" : "u8", fl_tensor_describe(frames, buf, sizeof buf));
    size_t esz = lat ? sizeof(float) : 1;
    void *tmp = fl_alloc(m->alloc, m->frame_len * esz);
    if (!tmp)
        return fl_error_set(err, FL_E_NOMEM, "metrics: out of memory");
    fl_status st = FL_OK;
    const char *base = fl_tensor_data(frames);
    for (int64_t n = 0; n < frames->shape[0] && !st; n++) {
        size_t k = 0;
        for (int64_t i = 0; i < frames->shape[1]; i++)
            for (int64_t j = 0; j < frames->shape[2]; j++)
                for (int64_t l = 0; l < frames->shape[3]; l++, k++) {
                    int64_t o = n * frames->stride[0] + i * frames->stride[1] + j * frames->stride[2] +
                                l * frames->stride[3];
                    memcpy((char *)tmp + k * esz, base + o * (int64_t)esz, esz);
                }
        st = fl_metrics_put(m, first_index + n, tmp, err);
    }
    fl_free(m->alloc, tmp, m->frame_len * esz);
    return st;
}

fl_status fl_metrics_finish(fl_metrics *m, fl_error *err)
{
    if (m->finished)
        return FL_OK;
    m->finished = 1;
    if (m->first < 0)
        return FL_OK;
    int64_t last = m->next - 1;
    for (size_t i = 0; i < m->n_mods; i++) {
        module *md = &m->mods[i];
        if (!md->vt->window)
            continue;
        int64_t W = md->o.window, S = md->o.stride;
        /* The first start whose window did not complete: s + W - 1 > last. */
        int64_t lo = last - W + 2 - m->first, k = lo <= 0 ? 0 : (lo + S - 1) / S;
        for (int64_t s = m->first + k * S; s <= last; s += S) {
            int64_t len = last - s + 1;
            fl_status st;
            if (len >= md->o.min_frames && (st = md->vt->window(md, s, (int)len, err)))
                return st;
        }
    }
    return FL_OK;
}

/* ---- resume ------------------------------------------------------------------------ */

/* The configuration a state belongs to, as text: modules in order with the options that
 * shape their history and windows, and the frame format. */
static void signature(const fl_metrics *m, char *buf, size_t cap)
{
    size_t len = (size_t)snprintf(buf, cap, "%d:%dx%dx%d", (int)m->fmt.kind, m->c, m->h, m->w);
    for (size_t i = 0; i < m->n_mods && len < cap; i++) {
        const module *md = &m->mods[i];
        len += (size_t)snprintf(buf + len, cap - len, ";%s/w%d/s%d/m%d/r%.17g/g", md->vt->name, md->o.window,
                                md->o.stride, md->o.min_frames, md->o.range);
        for (int k = 0; k < md->o.n_gaps && len < cap && md->vt == &drift_vt; k++)
            len += (size_t)snprintf(buf + len, cap - len, "%s%d", k ? "," : "", md->o.gaps[k]);
    }
}

fl_status fl_metrics_save(const fl_metrics *m, fl_state *st, fl_error *err)
{
    char sig[1024];
    signature(m, sig, sizeof sig);
    int64_t head[4] = { m->first, m->next, (int64_t)m->frame_len, m->ring_len };
    fl_status rc = fl_state_put(st, "metrics/config", FL_STATE_U8, sig, (int64_t)strlen(sig), err);
    if (!rc)
        rc = fl_state_put(st, "metrics/head", FL_STATE_I64, head, 4, err);
    if (rc)
        return rc;
    if (m->first >= 0) {
        int64_t have = m->next - m->first < m->ring_len ? m->next - m->first : m->ring_len;
        size_t bytes = (size_t)have * m->frame_len * sizeof(float);
        float *buf = fl_alloc(m->alloc, bytes);
        if (!buf)
            return fl_error_set(err, FL_E_NOMEM, "metrics save: out of memory");
        for (int64_t i = 0; i < have; i++)
            memcpy(buf + (size_t)i * m->frame_len, frame_at(m, m->next - have + i),
                   m->frame_len * sizeof(float));
        rc = fl_state_put(st, "metrics/history", FL_STATE_F32, buf, have * (int64_t)m->frame_len, err);
        fl_free(m->alloc, buf, bytes);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < m->n_mods; i++)
        if (m->mods[i].vt->save && (rc = m->mods[i].vt->save(&m->mods[i], st, err)))
            return rc;
    return FL_OK;
}

fl_status fl_metrics_restore(fl_metrics *m, const fl_state *st, fl_error *err)
{
    if (m->first >= 0 || m->finished)
        return fl_error_set(err, FL_E_INVALID, "metrics restore: the set has already been fed frames");
    char sig[1024];
    signature(m, sig, sizeof sig);
    fl_state_type type;
    int64_t count = 0;
    const void *saved = fl_state_find(st, "metrics/config", &type, &count);
    if (!saved || type != FL_STATE_U8 || count != (int64_t)strlen(sig) ||
        memcmp(saved, sig, strlen(sig)) != 0)
        return fl_error_set(err, FL_E_INVALID, "state: metrics/config: %s%.*s%s, this set is \"%s\"",
                            saved ? "saved for \"" : "missing", saved ? (int)count : 0,
                            saved ? (const char *)saved : "", saved ? "\"" : "", sig);
    int64_t head[4];
    fl_status rc = fl_state_get(st, "metrics/head", FL_STATE_I64, head, 4, err);
    if (rc)
        return rc;
    if (head[2] != (int64_t)m->frame_len || head[3] != m->ring_len || (head[0] >= 0) != (head[1] > head[0]))
        return fl_error_set(err, FL_E_INVALID,
                            "state: metrics/head: saved for frames of %" PRId64 " values and %" PRId64
                            " frames of history, this set has %zu and %d",
                            head[2], head[3], m->frame_len, m->ring_len);
    if (head[0] >= 0) {
        int64_t have = head[1] - head[0] < m->ring_len ? head[1] - head[0] : m->ring_len;
        size_t bytes = (size_t)have * m->frame_len * sizeof(float);
        float *buf = fl_alloc(m->alloc, bytes);
        if (!buf)
            return fl_error_set(err, FL_E_NOMEM, "metrics restore: out of memory");
        rc = fl_state_get(st, "metrics/history", FL_STATE_F32, buf, have * (int64_t)m->frame_len, err);
        if (!rc)
            for (int64_t i = 0; i < have; i++) {
                int64_t t = head[1] - have + i;
                memcpy(m->ring + (size_t)(t % m->ring_len) * m->frame_len, buf + (size_t)i * m->frame_len,
                       m->frame_len * sizeof(float));
            }
        fl_free(m->alloc, buf, bytes);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < m->n_mods; i++)
        if (m->mods[i].vt->restore && (rc = m->mods[i].vt->restore(&m->mods[i], st, err)))
            return rc;
    m->first = head[0];
    m->next = head[0] >= 0 ? head[1] : -1;
    return FL_OK;
}

/* ---- series log -------------------------------------------------------------------- */

typedef struct log_series {
    char name[NAME_LEN];
    int64_t *index;
    double *value;
    size_t n, cap;
} log_series;

struct fl_series_log {
    const fl_allocator *alloc;
    log_series *s;
    size_t n, cap;
};

fl_status fl_series_log_new(const fl_allocator *alloc, fl_series_log **out, fl_error *err)
{
    *out = fl_calloc(alloc, 1, sizeof **out);
    if (!*out)
        return fl_error_set(err, FL_E_NOMEM, "series log: out of memory");
    (*out)->alloc = alloc;
    return FL_OK;
}

void fl_series_log_free(fl_series_log *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++) {
        fl_free(l->alloc, l->s[i].index, l->s[i].cap * sizeof(int64_t));
        fl_free(l->alloc, l->s[i].value, l->s[i].cap * sizeof(double));
    }
    fl_free(l->alloc, l->s, l->cap * sizeof(log_series));
    fl_free(l->alloc, l, sizeof *l);
}

/* Grows an array of n used entries from cap to ncap (entries of size esz). */
static int grow(const fl_allocator *al, void **p, size_t n, size_t cap, size_t ncap, size_t esz)
{
    void *q = fl_alloc(al, ncap * esz);
    if (!q)
        return -1;
    if (n)
        memcpy(q, *p, n * esz);
    fl_free(al, *p, cap * esz);
    *p = q;
    return 0;
}

static fl_status log_emit(void *ctx, const fl_series_info *info, int64_t index, double value, fl_error *err)
{
    fl_series_log *l = ctx;
    log_series *s = NULL;
    for (size_t i = 0; i < l->n && !s; i++)
        if (strcmp(l->s[i].name, info->name) == 0)
            s = &l->s[i];
    if (!s) {
        if (l->n == l->cap) {
            size_t nc = l->cap ? 2 * l->cap : 16;
            if (grow(l->alloc, (void **)&l->s, l->n, l->cap, nc, sizeof(log_series)))
                return fl_error_set(err, FL_E_NOMEM, "series log: out of memory");
            l->cap = nc;
        }
        s = &l->s[l->n++];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", info->name);
    }
    if (s->n == s->cap) {
        /* Both arrays or neither: they share one capacity. */
        size_t nc = s->cap ? 2 * s->cap : 64;
        int64_t *ni = fl_alloc(l->alloc, nc * sizeof(int64_t));
        double *nv = fl_alloc(l->alloc, nc * sizeof(double));
        if (!ni || !nv) {
            fl_free(l->alloc, ni, nc * sizeof(int64_t));
            fl_free(l->alloc, nv, nc * sizeof(double));
            return fl_error_set(err, FL_E_NOMEM, "series log: out of memory");
        }
        if (s->n) {
            memcpy(ni, s->index, s->n * sizeof(int64_t));
            memcpy(nv, s->value, s->n * sizeof(double));
        }
        fl_free(l->alloc, s->index, s->cap * sizeof(int64_t));
        fl_free(l->alloc, s->value, s->cap * sizeof(double));
        s->index = ni;
        s->value = nv;
        s->cap = nc;
    }
    s->index[s->n] = index;
    s->value[s->n] = value;
    s->n++;
    return FL_OK;
}

fl_metric_emit fl_series_log_emit(fl_series_log *l)
{
    fl_metric_emit e = { log_emit, l };
    return e;
}

size_t fl_series_log_count(const fl_series_log *l) { return l->n; }

const char *fl_series_log_name(const fl_series_log *l, size_t i) { return i < l->n ? l->s[i].name : NULL; }

fl_status fl_series_log_get(const fl_series_log *l, const char *name, const int64_t **index,
                            const double **value, size_t *n, fl_error *err)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->s[i].name, name) == 0) {
            if (index)
                *index = l->s[i].index;
            if (value)
                *value = l->s[i].value;
            if (n)
                *n = l->s[i].n;
            return FL_OK;
        }
    return fl_error_set(err, FL_E_INVALID, "series log: no series \"%s\"", name);
}

/* ---- trend ------------------------------------------------------------------------- */

fl_status fl_series_trend_of(const int64_t *index, const double *value, size_t n, double frac,
                             fl_series_trend *out, fl_error *err)
{
    out->start = out->end = out->contrast = out->slope = NAN;
    out->n = out->k = 0;
    if (!(frac > 0.0))
        frac = 0.15;
    if (frac > 1.0)
        return fl_error_set(err, FL_E_RANGE, "trend: fraction must be in (0, 1], got %g", frac);
    size_t used = 0;
    double mx = 0.0, my = 0.0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(value[i])) {
            used++;
            mx += index ? (double)index[i] : (double)i;
            my += value[i];
        }
    if (used == 0)
        return fl_error_set(err, FL_E_INVALID, "trend: the series has no finite value (of %zu)", n);
    mx /= (double)used;
    my /= (double)used;
    size_t k = (size_t)floor(frac * (double)used + 0.5);
    if (k < 1)
        k = 1;
    double sxx = 0.0, sxy = 0.0, head = 0.0, tail = 0.0;
    size_t seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(value[i]))
            continue;
        double dx = (index ? (double)index[i] : (double)i) - mx;
        sxx += dx * dx;
        sxy += dx * (value[i] - my);
        if (seen < k)
            head += value[i];
        if (seen >= used - k)
            tail += value[i];
        seen++;
    }
    out->n = used;
    out->k = k;
    out->start = head / (double)k;
    out->end = tail / (double)k;
    out->contrast = out->end - out->start;
    out->slope = sxx > 0.0 ? sxy / sxx : NAN;
    return FL_OK;
}
