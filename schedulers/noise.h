/* Noise schedules: the DDPM ᾱ table or the flow-matching σ grid, and the levels S steps visit. */
#ifndef FL_NOISE_H
#define FL_NOISE_H

#include "core/denoiser.h"
#include "core/status.h"

/* Ownership: an fl_noise owns its ᾱ table (DDPM only); fl_noise_free releases it and is
 * safe on a zeroed or already-freed schedule. Every other output buffer belongs to the
 * caller. A built schedule is read-only, so any number of threads may query it at once.
 * The formulas, with literal examples, are in docs/samplers.md. */

/* How the T training betas are laid out (DDPM-type schedules).
 *   linear       beta_i = linspace(beta_start, beta_end, T)            (DDPM, diffusers "linear")
 *   sqrt_linear  beta_i = linspace(sqrt beta_start, sqrt beta_end, T)^2 (what LDM and
 *                VideoCrafter2 call "linear"; diffusers "scaled_linear")
 *   cosine       Nichol & Dhariwal: beta_i = min(1 - f((i+1)/T) / f(i/T), 0.999),
 *                f(u) = cos((u + 0.008) / 1.008 * pi/2)^2; beta_start/beta_end unused. */
typedef enum fl_beta_kind { FL_BETA_LINEAR = 0, FL_BETA_SQRT_LINEAR = 1, FL_BETA_COSINE = 2 } fl_beta_kind;

const char *fl_beta_kind_name(fl_beta_kind k); /* "linear", "sqrt_linear", "cosine"; "?" otherwise */
fl_status fl_beta_kind_parse(const char *name, fl_beta_kind *out, fl_error *err);

/* Which training timesteps a run of S sampling steps visits (DDPM-type schedules), listed
 * ascending (index 0 = cleanest):
 *   uniform  round(linspace(0, T-1, S)), numpy's round-half-to-even: VideoCrafter2 / FIFO
 *            (S=64, T=1000: 0, 16, 32, 48, 63, ..., 967, 983, 999). Starts at t = 0.
 *   ldm      i * (T / S) + 1, i = 0..S-1, integer division: LDM's range(0, T, T/S) + 1 when S
 *            divides T (S=50, T=1000: 1, 21, ..., 981), diffusers "leading" with
 *            steps_offset = 1 otherwise. Needs S < T (t = T would be off the table).
 *   leading  i * (T / S): diffusers "leading" with steps_offset = 0, as DDPMScheduler
 *            defaults give Open-Sora Plan (S=136, T=1000: 0, 7, ..., 945).
 * Flow schedules take uniform only. */
typedef enum fl_steps_kind { FL_STEPS_UNIFORM = 0, FL_STEPS_LDM = 1, FL_STEPS_LEADING = 2 } fl_steps_kind;

const char *fl_steps_kind_name(fl_steps_kind k); /* "uniform", "ldm", "leading"; "?" otherwise */
fl_status fl_steps_kind_parse(const char *name, fl_steps_kind *out, fl_error *err);

typedef enum fl_noise_kind { FL_NOISE_DDPM = 0, FL_NOISE_FLOW = 1 } fl_noise_kind;

/* Limits on T (training timesteps) and S (sampling steps of a flow schedule); the tables
 * are small, these only keep index arithmetic far from int overflow. */
#define FL_NOISE_T_MAX 1000000
#define FL_NOISE_FLOW_STEPS_MAX 1000000

/* A schedule. Fields are read-only after construction.
 *   DDPM: abar[t] = prod_{i <= t} (1 - beta_i), t = 0..T-1, strictly decreasing in (0, 1).
 *         The level of timestep t is {t, sqrt(abar[t]), sqrt(1 - abar[t])}.
 *   flow: x = (1 - sigma) x0 + sigma eps with sigma in (0, 1] on the grid of
 *         fl_noise_levels; t = 1000 sigma. T = 0 and abar = NULL. */
typedef struct fl_noise {
    fl_noise_kind kind;
    fl_beta_kind beta;              /* DDPM */
    int T;                          /* DDPM: training timesteps */
    double beta_start, beta_end;    /* DDPM, as given */
    double *abar;                   /* DDPM: [T], owned */
    double shift;                   /* flow: timestep shift s (1 = none) */
} fl_noise;

/* Builds a DDPM-type schedule of T training timesteps. linear and sqrt_linear need
 * 0 < beta_start <= beta_end < 1 (FL_E_RANGE otherwise); cosine ignores both betas.
 * 1 <= T <= FL_NOISE_T_MAX. On failure ns is left zeroed (fl_noise_free is still safe). */
fl_status fl_noise_ddpm(fl_noise *ns, fl_beta_kind kind, int T, double beta_start,
                        double beta_end, fl_error *err);

/* Builds a flow-matching schedule with timestep shift s > 0 (finite): a grid point sigma
 * becomes s*sigma / (1 + (s-1)*sigma) (SD3's shift; s = 1 leaves the grid uniform,
 * s > 1 spends more steps at high noise). Allocates nothing. */
fl_status fl_noise_flow(fl_noise *ns, double shift, fl_error *err);

void fl_noise_free(fl_noise *ns); /* ns may be NULL */

/* The S training timesteps of a step selection, ascending, into ts[0..S-1]. A pure
 * function of (kind, T, S). FL_E_RANGE when S is not in 1..T (or, for ldm, when the top
 * timestep would reach T); FL_E_INVALID for an unknown kind. Duplicates cannot occur for
 * S <= T (consecutive linspace points are >= 1 apart), but are still checked and refused. */
fl_status fl_noise_timesteps(fl_steps_kind kind, int T, int S, int *ts, fl_error *err);

/* The S levels a run visits, ascending noise: levels[0] is the cleanest, levels[S-1] the
 * noisiest. DDPM: the levels of fl_noise_timesteps. Flow (uniform only): sigma_i =
 * shift((i + 1) / S), so levels[S-1] is pure noise (alpha = 0, sigma = 1). The clean level
 * below levels[0] is fl_level_clean(); whether the last step goes there or, as in
 * VideoCrafter2, stays at levels[0], is the scheduler's choice. */
fl_status fl_noise_levels(const fl_noise *ns, fl_steps_kind steps, int S, fl_level *levels,
                          fl_error *err);

/* The level labelled t. DDPM: t must be an integer in 0..T-1. Flow: t in [0, 1000] is
 * 1000 sigma (already shifted), so the level is {t, 1 - t/1000, t/1000}. FL_E_RANGE
 * naming t otherwise. */
fl_status fl_noise_level_at(const fl_noise *ns, double t, fl_level *out, fl_error *err);

#endif
