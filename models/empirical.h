/* The empirical-clip denoiser (`empirical`): the exact posterior mean of the empirical
 * distribution of a clip dataset for a window whose frames have their own noise levels
 * and their own prompts, computed with one GEMM pass over the dataset's frames; plus the
 * mismatch modes of the Gaussian testbed. See docs/empirical.md. */
#ifndef FL_EMPIRICAL_H
#define FL_EMPIRICAL_H

#include <stdint.h>

#include "core/denoiser.h"
#include "core/status.h"
#include "core/tensor.h"
#include "data/clips.h"

/* How eval answers (same meaning and values as FL_GAUSS_EXACT / OWN / MEAN):
 *   EXACT  the joint posterior over clips, each frame at its own level;
 *   OWN    frame j from the posterior with every frame of the window at frame j's level;
 *   MEAN   every frame from the posterior with all frames at one VP level,
 *          abar_m = mean_j a_j^2 / (a_j^2 + s_j^2). */
enum { FL_EMPIRICAL_EXACT = 0, FL_EMPIRICAL_OWN = 1, FL_EMPIRICAL_MEAN = 2 };
/* How a frame's prompt acts on the clips (docs/empirical.md "Conditions"):
 *   HARD  only the clips with the fewest frames whose caption the frame's prompt does not
 *         match (0 when some clip matches every frame);
 *   SOFT  every clip, its logit lowered by condition_weight per unmatched frame;
 *   OFF   prompts ignored. */
enum { FL_EMPIRICAL_COND_HARD = 0, FL_EMPIRICAL_COND_SOFT = 1, FL_EMPIRICAL_COND_OFF = 2 };

/* Options. fl_empirical_opts_default fills the defaults shown; fl_empirical_new validates
 * every field and names the one at fault ("empirical.temperature: ..."). */
typedef struct fl_empirical_opts {
    int window;              /* 0: the dataset's f (otherwise it must equal it) */
    int mismatch;            /* FL_EMPIRICAL_EXACT */
    double temperature;      /* 1     tau >= 1e-3: logits divided by tau (> 1 blends clips) */
    double bandwidth;        /* 0     h >= 0: each clip is a Gaussian N(clip, h^2 I) (KDE) */
    int condition;           /* FL_EMPIRICAL_COND_HARD */
    double condition_weight; /* 8     SOFT: logit penalty per unmatched frame, >= 0 */
    fl_param param;          /* FL_PARAM_EPS (eps, x0 or v) */
    /* The run's prompt list: condition id k of a frame means prompts[k]. Borrowed; the
     * model copies them. nprompts 0: every frame matches every clip. */
    const char *const *prompts;
    int nprompts;
} fl_empirical_opts;

void fl_empirical_opts_default(fl_empirical_opts *o);

const char *fl_empirical_mismatch_name(int mismatch); /* "exact", "own", "mean"; "?" */
const char *fl_empirical_condition_name(int cond);    /* "hard", "soft", "off"; "?" */

/* Creates the model from a dataset: *out keeps its own copy of the frames (as f32 in
 * [-1, 1], centred, [T, 3, H, W]), frame captions, clip table and prompts, so `data` may
 * be freed afterwards. A prompt that matches no frame of the dataset is an FL_E_INVALID
 * error naming it (unless condition is OFF). eval/eval_exact take x [n, 3, H, W] f32
 * contiguous CPU, 1 <= n <= window (a short window matches the clips' first n frames),
 * per-frame levels, and cond [n] (NULL: no prompt for any frame; an id < 0: no prompt for
 * that frame; an id >= nprompts: FL_E_RANGE naming the frame). They are deterministic and
 * safe to call from several threads at once on one model. eval_exact is the EXACT mode
 * with temperature 1 (bandwidth and conditions as configured). */
fl_status fl_empirical_new(const fl_empirical_opts *o, const fl_clips *data, fl_denoiser **out,
                           fl_error *err);

int fl_empirical_is(const fl_denoiser *d);
int64_t fl_empirical_nclips(const fl_denoiser *d); /* FL_ASSERT: d is an empirical model */

/* The clip weights eval uses for output frame j (EXACT and MEAN: the same for every j),
 * [nclips] doubles summing to 1, into w (caller allocated). For tests and inspection. */
fl_status fl_empirical_weights(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                               const int32_t *cond, int frame, double *w, fl_error *err);

#endif
