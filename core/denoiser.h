/* The denoiser interface: evaluate a window of latent frames, each at its own noise level. */
#ifndef FL_DENOISER_H
#define FL_DENOISER_H

#include <stdint.h>

#include "core/arena.h"
#include "core/status.h"
#include "core/tensor.h"

/* What a model outputs for a noisy frame x = alpha * x0 + sigma * eps:
 *   eps   the noise eps
 *   x0    the clean frame x0
 *   v     alpha * eps - sigma * x0   (variance-preserving levels only: alpha^2 + sigma^2 = 1)
 *   flow  eps - x0                    (rectified-flow velocity, for alpha = 1 - sigma) */
typedef enum fl_param { FL_PARAM_EPS = 0, FL_PARAM_X0 = 1, FL_PARAM_V = 2, FL_PARAM_FLOW = 3 } fl_param;

const char *fl_param_name(fl_param p); /* "eps", "x0", "v", "flow"; "?" otherwise */
/* Parses a name above; FL_E_INVALID naming the value and the accepted names otherwise. */
fl_status fl_param_parse(const char *name, fl_param *out, fl_error *err);

/* One frame's noise level: the frame is x = alpha * x0 + sigma * eps, eps ~ N(0, I).
 * t is what the model is conditioned on: the DDPM timestep (0 .. T-1), or 1000 * sigma for
 * flow matching. {t = 0, alpha = 1, sigma = 0} is a clean frame (fl_level_clean). */
typedef struct fl_level {
    double t, alpha, sigma;
} fl_level;

static inline fl_level fl_level_clean(void)
{
    fl_level lv = { 0.0, 1.0, 0.0 };
    return lv;
}

/* A denoiser. Implementations embed this struct as their first member and fill every field
 * at creation. The engine owns the denoiser and calls vt->free once.
 *
 * eval(d, x, levels, cond, out): x is [n, C, H, W] f32 (contiguous, CPU unless the model says
 * otherwise), 1 <= n <= window (n < window only when accepts_short is set); levels[j] and
 * cond[j] belong to frame j. Writes the model output in d->param to out (same shape, caller
 * allocated, never aliasing x). x, levels and cond are read-only and stay owned by the caller.
 * eval must be a pure function of its inputs (no hidden state that changes between calls), so
 * windows may be evaluated in any order or on any process.
 *
 * scratch (never NULL here) is per-call scratch memory: eval may take what it needs from it
 * with fl_arena_alloc and does not give it back; the caller resets it (the engine once per
 * iteration, so steady state allocates nothing). It is valid only during the call.
 *
 * eval_exact: the output an ideal model would give (the exact posterior), for oracle metrics
 * such as the per-position noise-prediction error. NULL when the model cannot know it. */
typedef struct fl_denoiser fl_denoiser;
typedef struct fl_denoiser_vt {
    const char *name;
    fl_status (*eval)(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                      const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err);
    fl_status (*eval_exact)(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                            const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err);
    void (*free)(fl_denoiser *d);
} fl_denoiser_vt;

struct fl_denoiser {
    const fl_denoiser_vt *vt;
    int window;                   /* native window length f */
    int channels, height, width;  /* latent frame shape C, H, W */
    fl_param param;               /* what eval returns */
    int per_frame_t;              /* 1: frames of one window may carry different levels */
    int accepts_short;            /* 1: eval takes n < window frames */
};

/* Checks x/out shapes and the level values against d, then calls d->vt->eval; messages name
 * the tensor or frame at fault. scratch may be NULL: the call then uses an arena of its own,
 * freed before it returns (reentrant; what tests and one-off callers want). */
fl_status fl_denoiser_eval(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                           const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err);
/* The same for eval_exact; FL_E_UNSUPPORTED naming the model when it has none. */
fl_status fl_denoiser_eval_exact(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                                 const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err);
void fl_denoiser_free(fl_denoiser *d); /* d may be NULL */

#endif
