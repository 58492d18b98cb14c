/* Samplers: the per-frame update x_t -> x_t' from a model output (DDIM(eta), DDPM, flow Euler). */
#ifndef FL_SAMPLER_H
#define FL_SAMPLER_H

#include <stddef.h>

#include "core/denoiser.h"
#include "core/status.h"

/* Ownership: nothing here allocates or keeps state. Every buffer belongs to the caller and
 * holds n floats. All functions are pure functions of their arguments (noise is an input:
 * the caller draws it, from FL_RNG_STREAM_SAMPLER), so any number of threads may call them
 * at once. They compute in double and store float. The formulas are in docs/samplers.md.
 *
 * Levels are fl_level {t, alpha, sigma}: a frame is x = alpha x0 + sigma eps. Samplers read
 * only alpha and sigma (t is for the model and for messages). A level is valid when all
 * three are finite, alpha >= 0, sigma >= 0 and not both are 0. "Noisier" means a lower
 * signal-to-noise ratio alpha^2 / sigma^2. */

typedef enum fl_sampler_kind { FL_SAMPLER_DDIM = 0, FL_SAMPLER_DDPM = 1, FL_SAMPLER_EULER = 2 } fl_sampler_kind;

const char *fl_sampler_kind_name(fl_sampler_kind k); /* "ddim", "ddpm", "euler"; "?" otherwise */
fl_status fl_sampler_kind_parse(const char *name, fl_sampler_kind *out, fl_error *err);

/* A sampler is a value: kind plus eta (DDIM only: 0 deterministic, 1 = DDPM's posterior
 * variance, VideoCrafter2's default; 0 <= eta <= 1). DDPM and Euler ignore eta. */
typedef struct fl_sampler {
    fl_sampler_kind kind;
    double eta;
} fl_sampler;

/* FL_E_INVALID for an unknown kind, FL_E_RANGE for eta outside [0, 1] (DDIM). Every
 * function below checks the sampler this way, so calling it first is only for reporting
 * a bad configuration early. */
fl_status fl_sampler_check(const fl_sampler *s, fl_error *err);

/* Tolerances on the level families: v outputs need variance-preserving levels
 * (|alpha^2 + sigma^2 - 1| <= FL_LEVEL_TOL), flow outputs and the Euler sampler need
 * flow levels (|alpha + sigma - 1| <= FL_LEVEL_TOL). The clean level {0, 1, 0} is both. */
#define FL_LEVEL_TOL 1e-6

/* ---- parameterizations -------------------------------------------------------------- */

/* At a level (alpha, sigma), the model output `out` and the frame x give the clean-frame and
 * noise estimates as linear maps:  x0_hat = x0_x * x + x0_out * out,
 *                                  eps_hat = eps_x * x + eps_out * out.
 *   eps   x0 = (x - sigma out) / alpha,   eps = out                  (needs alpha > 0)
 *   x0    x0 = out,                       eps = (x - alpha out) / sigma   (sigma = 0: eps = 0)
 *   v     x0 = (alpha x - sigma out) / N, eps = (sigma x + alpha out) / N,  N = alpha^2 + sigma^2
 *   flow  x0 = (x - sigma out) / M,       eps = (x + alpha out) / M,        M = alpha + sigma
 * (N = 1 and M = 1 on the levels v and flow require; dividing by them anyway makes the
 * maps exact inverses of fl_param_from_x0_eps within the tolerance.) */
typedef struct fl_param_coef {
    double x0_x, x0_out, eps_x, eps_out;
} fl_param_coef;

/* FL_E_INVALID for an unknown param; FL_E_RANGE naming the level when it is invalid, not in
 * the param's family, or alpha = 0 for eps (pure noise says nothing about x0 there). */
fl_status fl_param_coefs(fl_param p, fl_level lv, fl_param_coef *c, fl_error *err);

/* Applies fl_param_coefs elementwise: x0 and eps (either may be NULL) get the estimates.
 * x0 or eps may alias x or out exactly (same pointer), not partially. */
fl_status fl_predict_x0_eps(fl_param p, fl_level lv, const float *x, const float *out, float *x0,
                            float *eps, size_t n, fl_error *err);

/* The inverse: the output a model of parameterization p gives for a frame made of x0 and
 * eps at level lv: eps -> eps; x0 -> x0; v -> alpha eps - sigma x0; flow -> eps - x0.
 * Same level checks as fl_param_coefs (alpha = 0 is fine here). out may alias x0 or eps. */
fl_status fl_param_from_x0_eps(fl_param p, fl_level lv, const float *x0, const float *eps,
                               float *out, size_t n, fl_error *err);

/* ---- the update ----------------------------------------------------------------------- */

/* Every update is linear in the frame, the model output and the noise:
 *     x_next = x * x + out * model_out + z * noise
 * fl_sampler_coef gives the three numbers; a backend can apply them as one fused axpby. */
typedef struct fl_step_coef {
    double x, out, z;
} fl_step_coef;

/* The coefficients of one update from level `from` to level `to` for model outputs in p.
 *   to == from (same alpha and sigma): the identity {1, 0, 0}, for every sampler (the
 *     step VideoCrafter2 takes at its smallest timestep).
 *   otherwise `to` must not be noisier than `from`, from must not be clean (sigma > 0),
 *     to must not be pure noise (alpha > 0); to may be clean {alpha 1, sigma 0}, and then
 *     every sampler lands on x0_hat.
 *   ddim  x' = alpha' x0 + sqrt(sigma'^2 - s^2) eps + s z,  s = eta sigma' sqrt(1 - r^2)
 *   ddpm  x' = alpha'(1 - r^2) x0 + r (sigma'/sigma) x + sigma' sqrt(1 - r^2) z
 *         (the posterior q(x_t' | x_t, x0); the textbook form on VP levels)
 *   euler x' = x + (sigma' - sigma) u,  u = eps - x0   (flow levels only)
 *   with r = (alpha sigma') / (alpha' sigma) in [0, 1], x0/eps from fl_param_coefs at from.
 * Errors: those of fl_sampler_check and fl_param_coefs (both levels are checked for p's
 * family), FL_E_RANGE naming both levels for the rules above. */
fl_status fl_sampler_coef(const fl_sampler *s, fl_param p, fl_level from, fl_level to,
                          fl_step_coef *c, fl_error *err);

/* 1 when the update from `from` to `to` draws noise (coefficient z > 0): DDIM with eta > 0
 * and DDPM, unless `to` is clean or equal to `from`. 0 otherwise, and 0 for a step that
 * fl_sampler_coef refuses (the step then fails before reading noise). */
int fl_sampler_needs_noise(const fl_sampler *s, fl_level from, fl_level to);

/* One update of n elements: x_next = the update of x given the model output model_out
 * (evaluated at `from`, in parameterization p) and noise (n standard normals, read only
 * when fl_sampler_needs_noise; may be NULL otherwise). x_next may be x or model_out
 * exactly (in place), not a partial overlap. model_out may be NULL for the identity step.
 * FL_E_INVALID for a NULL buffer that the step needs; otherwise the errors of
 * fl_sampler_coef. On error x_next is untouched. */
fl_status fl_sampler_step(const fl_sampler *s, fl_param p, fl_level from, fl_level to,
                          const float *x, const float *model_out, const float *noise,
                          float *x_next, size_t n, fl_error *err);

/* Deterministic DDIM run backwards (DDIM inversion): the eta = 0 update
 * x' = alpha' x0 + sigma' eps towards a level `to` that is at least as noisy as `from`.
 * With the same model output it undoes a forward eta = 0 step exactly (up to rounding).
 * FL_E_RANGE when `to` is cleaner than `from`, or from is clean (sigma = 0) with an x0
 * output (eps is then unknown); other errors as fl_sampler_coef. */
fl_status fl_sampler_invert_coef(fl_param p, fl_level from, fl_level to, fl_step_coef *c,
                                 fl_error *err);
fl_status fl_sampler_invert(fl_param p, fl_level from, fl_level to, const float *x,
                            const float *model_out, float *x_next, size_t n, fl_error *err);

#endif
