/* Online temporal metrics: a registry of network-free metric modules ("adjacent",
 * "flicker", "motion", "drift", "spectral", "oracle", "stats") fed frames in order, each
 * emitting named per-frame and per-window series through one callback; plus a series
 * collector and the start-end contrast / slope of a series (docs/eval.md). */
#ifndef FL_EVAL_METRIC_H
#define FL_EVAL_METRIC_H

#include <stddef.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/denoiser.h"
#include "core/state.h"
#include "core/status.h"
#include "core/tensor.h"

/* Ownership: an fl_metrics set owns its modules, frame history and series descriptions
 * (fl_series_info pointers live until fl_metrics_free); it borrows the denoiser (the
 * oracle's model) and the emit context, which must outlive it. Frames handed to put are
 * copied; the caller keeps them. A set is used by one thread at a time. Output depends
 * only on the frames and options: the same frames give bit-identical values whether fed
 * one by one, in chunks, or across a save/restore. */

/* ---- frames ------------------------------------------------------------------------ */

typedef enum fl_frame_kind {
    FL_FRAME_LATENT = 0, /* float32 [C, H, W] contiguous: latents (the engine's frame sink) */
    FL_FRAME_PIXELS = 1  /* uint8 [H, W, 3] contiguous: decoded RGB frames (channels = 3) */
} fl_frame_kind;

typedef struct fl_frame_format {
    fl_frame_kind kind;
    int channels, height, width;
} fl_frame_format;

/* ---- options ----------------------------------------------------------------------- */

#define FL_METRIC_GAPS_MAX 8

/* One struct for every module; each reads only its own fields (listed per module in
 * docs/eval.md and by fl_metric_opts_read). */
typedef struct fl_metric_opts {
    int window;                   /* 16: frames per window, 2..4096 */
    int stride;                   /* 0 (= window): frames between window starts, 0..4096 */
    int min_frames;               /* 0 (= half the window, at least 2): shortest trailing window
                          finish() still reports; 1..window otherwise */
    double range;                 /* 0 (= 1 for latents, 255 for pixels): data range R of PSNR, SSIM
                          and flicker */
    int ssim_window;              /* 11: odd Gaussian window of SSIM, 1..99 */
    double ssim_sigma;            /* 1.5 */
    double cutoff;                /* 0.25: spectral split, as a fraction of Nyquist, (0, 1] */
    int n_gaps;                   /* drift: frame gaps measured (0..FL_METRIC_GAPS_MAX) */
    int gaps[FL_METRIC_GAPS_MAX]; /* {1, 2, 4, 8, 16, 32}, each 1..4096 */
} fl_metric_opts;

void fl_metric_opts_default(fl_metric_opts *o);

/* Reads the options module `name` accepts from config table t (e.g. the table of
 * metrics[i]), recording defaults there; the error names the key path. An unknown module
 * name is FL_E_INVALID listing the known ones. o is filled with defaults first. */
fl_status fl_metric_opts_read(fl_cfg *t, const char *name, fl_metric_opts *o, fl_error *err);

/* The module names, NULL-terminated, and a one-line description of each (NULL when the
 * name is unknown). */
const char *const *fl_metric_names(void);
const char *fl_metric_describe(const char *name);

/* ---- series ------------------------------------------------------------------------ */

typedef enum fl_series_kind {
    FL_SERIES_FRAME = 0, /* one value per frame or frame pair: index = the (first) frame */
    FL_SERIES_WINDOW = 1 /* one value per window: index = the window's first frame */
} fl_series_kind;

typedef struct fl_series_info {
    const char *name;        /* "adjacent_psnr"; unique within a set */
    const char *module;      /* "adjacent" */
    const char *unit;        /* "dB", "1", "latent^2", "8-bit level", ... */
    const char *description; /* one line */
    fl_series_kind kind;
    int span;   /* frames each value depends on: 1, 2 (a pair), g + 1 (a gap), the window */
    int stride; /* frames between the indices of consecutive values */
} fl_series_info;

/* Receives every value. A non-OK status stops the put/finish that emitted it and is
 * passed back to its caller. fn NULL: values are computed and dropped. */
typedef struct fl_metric_emit {
    fl_status (*fn)(void *ctx, const fl_series_info *series, int64_t index, double value, fl_error *err);
    void *ctx;
} fl_metric_emit;

/* ---- a set of metric modules ------------------------------------------------------- */

typedef struct fl_metric_spec {
    const char *name;           /* a registered module name */
    const fl_metric_opts *opts; /* NULL: defaults */
} fl_metric_spec;

typedef struct fl_metrics fl_metrics;

/* Creates the modules named in specs (no name twice) for frames of format fmt. A
 * consistency module ("adjacent", "flicker") brings "motion" along when it is not named
 * (consistency rewards frozen video; motion says whether it is), with the window options
 * of the first one. model: the denoiser the frames come from, needed by "oracle" (which
 * takes a gauss model of the same frame shape only); may be NULL otherwise. emit may be
 * NULL (nothing emitted). alloc NULL = default. Errors name the module and option. */
fl_status fl_metrics_new(const fl_metric_spec *specs, size_t n_specs, const fl_frame_format *fmt,
                         fl_denoiser *model, const fl_metric_emit *emit, const fl_allocator *alloc,
                         fl_metrics **out, fl_error *err);
void fl_metrics_free(fl_metrics *m); /* m may be NULL */

/* Every series the set can emit, in emission order within a frame (modules in set order),
 * so a writer can create its datasets before the first frame. */
size_t fl_metrics_series_count(const fl_metrics *m);
const fl_series_info *fl_metrics_series(const fl_metrics *m, size_t i);

/* Feeds frame `index` (fmt layout). The first put may carry any index >= 0; each later
 * one must carry the next index (FL_E_INVALID otherwise, naming both). Emits the
 * per-frame values it completes and every window that ends at this frame. After any
 * other error (an emit that failed, out of memory) the set's output is incomplete: free
 * it. */
fl_status fl_metrics_put(fl_metrics *m, int64_t index, const void *frame, fl_error *err);
/* Offline: feeds frames [N, C, H, W] f32 (latents) or [N, H, W, 3] u8 (pixels) on the
 * CPU, any strides, as indices first_index .. first_index + N - 1. */
fl_status fl_metrics_put_tensor(fl_metrics *m, int64_t first_index, const fl_tensor *frames, fl_error *err);
/* Emits the trailing windows that hold at least min_frames frames (shorter windows are
 * computed at their own length). Afterwards put is refused; a second finish does nothing. */
fl_status fl_metrics_finish(fl_metrics *m, fl_error *err);

/* Resume: save puts the history the modules still need and their anchors into st under
 * "metrics/..."; restore, on a set freshly made with the same specs and format, continues
 * exactly where the saved one stood. A state of another configuration is FL_E_INVALID
 * naming the entry. */
fl_status fl_metrics_save(const fl_metrics *m, fl_state *st, fl_error *err);
fl_status fl_metrics_restore(fl_metrics *m, const fl_state *st, fl_error *err);

/* ---- a collector of series (offline use, tests) ------------------------------------ */

typedef struct fl_series_log fl_series_log;
fl_status fl_series_log_new(const fl_allocator *alloc, fl_series_log **out, fl_error *err);
void fl_series_log_free(fl_series_log *l); /* l may be NULL */
/* An emit that appends every value to l (l must outlive the set using it). */
fl_metric_emit fl_series_log_emit(fl_series_log *l);
size_t fl_series_log_count(const fl_series_log *l); /* series seen so far */
const char *fl_series_log_name(const fl_series_log *l, size_t i);
/* The values of series `name` in emission order (pointers owned by l, valid until the
 * next append); FL_E_INVALID when l has no such series. */
fl_status fl_series_log_get(const fl_series_log *l, const char *name, const int64_t **index,
                            const double **value, size_t *n, fl_error *err);

/* ---- trend of a series ------------------------------------------------------------- */

/* Start-end contrast (FramePack's Delta_drift, signed) and least-squares slope:
 * k = max(1, round(frac * n)) of the n finite values (NaN and inf are skipped);
 * start = mean of the first k, end = mean of the last k, contrast = end - start;
 * slope = least-squares slope of value against index (per frame; NaN when fewer than two
 * distinct indices). index NULL: 0, 1, 2, ...; frac <= 0: 0.15. */
typedef struct fl_series_trend {
    double start, end, contrast, slope;
    size_t n, k;
} fl_series_trend;

fl_status fl_series_trend_of(const int64_t *index, const double *value, size_t n, double frac,
                             fl_series_trend *out, fl_error *err);

#endif
