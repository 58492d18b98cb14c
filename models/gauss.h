/* The Gaussian video testbed (`gauss`): a stationary Gaussian video with a known spectrum,
 * AR(1) time correlation and a global drift, whose exact posterior mean is a closed form
 * per Fourier mode; plus the mismatch modes that emulate a network trained only on windows
 * of one noise level, an exact sampler and spectral statistics. See docs/gauss.md. */
#ifndef FL_GAUSS_H
#define FL_GAUSS_H

#include <stdint.h>

#include "core/denoiser.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/tensor.h"

/* How eval answers (eval_exact always answers as FL_GAUSS_EXACT):
 *   EXACT  the true posterior, each frame at its own level;
 *   OWN    frame j as if every frame of the window were at frame j's level;
 *   MEAN   every frame as if all were at one level, abar_m = mean_j a_j^2 / (a_j^2 + s_j^2)
 *          (variance-preserving levels assumed: a_m = sqrt(abar_m), s_m = sqrt(1 - abar_m)). */
enum { FL_GAUSS_EXACT = 0, FL_GAUSS_OWN = 1, FL_GAUSS_MEAN = 2 };

const char *fl_gauss_mismatch_name(int mismatch); /* "exact", "own", "mean"; "?" otherwise */
/* Parses a name above; FL_E_INVALID naming the value and the accepted names otherwise. */
fl_status fl_gauss_mismatch_parse(const char *name, int *out, fl_error *err);

/* Options. fl_gauss_opts_default fills the defaults shown; fl_gauss_new validates every
 * field and names the one at fault ("gauss.rho: expected a number in [0, 1), got 1"). */
typedef struct fl_gauss_opts {
    int window;              /* 16   native window length f (eval takes 1..window frames) */
    int channels;            /* 3    C, independent channels with the same spectrum */
    int height, width;       /* 32, 32   H x W, a periodic grid */
    double rho;              /* 0.95 AR(1) correlation of each mode between frames, [0, 1) */
    double drift_x, drift_y; /* 0.5, 0.25   content moves by (drift_x, drift_y) px per frame */
    double k0;               /* 4    spectrum knee, cycles per grid: P(k) ~ (1 + |k|^2/k0^2)^-beta */
    double beta;             /* 2    spectrum slope, [0, 64] */
    int mismatch;            /* FL_GAUSS_EXACT */
    fl_param param;          /* FL_PARAM_EPS (eps, x0 or v) */
} fl_gauss_opts;

void fl_gauss_opts_default(fl_gauss_opts *o);

/* Creates the model: *out owns everything it needs (spectrum, phase tables, FFTW plans),
 * freed by fl_denoiser_free. eval/eval_exact take x [n, C, H, W] f32 contiguous CPU,
 * 1 <= n <= window, any per-frame levels, cond ignored (may be NULL); they are
 * deterministic and safe to call from several threads at once on one model. */
fl_status fl_gauss_new(const fl_gauss_opts *o, fl_denoiser **out, fl_error *err);

/* Whether d is a gauss model (the functions below need one: FL_ASSERT for the two that
 * return no status, FL_E_INVALID for the others). */
int fl_gauss_is(const fl_denoiser *d);
/* The options the model was created with. */
const fl_gauss_opts *fl_gauss_opts_of(const fl_denoiser *d);

/* P(k) for every mode, [H * W] in FFT index order (row ky, column kx; index k stands for
 * frequency k, or k - N for k > (N - 1) / 2), with (1/HW) sum_k P(k) = 1 and P = 0 on the
 * Nyquist lines (ky = H/2 for even H, kx = W/2 for even W). Owned by the model. */
const double *fl_gauss_power(const fl_denoiser *d);
/* theta_k = 2 pi (kx drift_x / W + ky drift_y / H) for the mode at (ky_index, kx_index)
 * (indices in 0..H-1, 0..W-1; signed frequencies as above, Nyquist taken as -N/2): per
 * frame, the mode is multiplied by rho e^{-i theta_k} plus innovation. */
double fl_gauss_phase(const fl_denoiser *d, int ky_index, int kx_index);

/* An exact sample of n_frames consecutive frames of the true process (stationary start)
 * into out [n_frames, C, H, W] f32 contiguous CPU (caller allocated). Frame t draws its
 * white noise from address {addr.stream, addr.frame + t, addr.step}, element c*H*W + y*W + x
 * (so a longer sample from the same addr extends a shorter one). FL_E_RANGE when
 * addr.frame + n_frames - 1 exceeds 2^32 - 1. */
fl_status fl_gauss_sample(const fl_denoiser *d, const fl_rng *rng, fl_rng_addr addr,
                          int64_t n_frames, fl_tensor *out, fl_error *err);

/* Spectral statistics of a frame sequence against the truth, with X_t(k) the orthonormal
 * 2-D DFT of frame t, channel c (sums over every mode k, every channel; docs/gauss.md):
 *   power_ratio       sum_k mean_{t,c} |X_t(k)|^2 / sum_k P(k)          (true process: 1)
 *   power_ratio_low   the same over |k| <= radius_split, and _high over |k| > radius_split,
 *                     radius_split = half the largest |k| with P(k) > 0 (blur lowers _high)
 *   corr_lag1         sum_{t<N-1} Re(X_{t+1} conj(X_t) e^{i theta_k}) /
 *                     sum_{t<N-1} (|X_t|^2 + |X_{t+1}|^2) / 2              (true process: rho)
 *   corr_lag1_raw     the same without e^{i theta_k}       (true process: corr_lag1_raw_true)
 *   mean              the mean of every element                            (true process: 0)
 * The *_se fields are the standard errors of these estimators for this N and C when the
 * frames are a sample of the true process (exact for power and mean, delta method with
 * the exact finite-N variance for the correlations), for setting test tolerances. */
typedef struct fl_gauss_stats_result {
    int64_t frames;
    double power_ratio, power_ratio_low, power_ratio_high;
    double corr_lag1, corr_lag1_raw;
    double mean;
    double radius_split;
    double corr_lag1_raw_true; /* rho sum_k P cos(theta_k) / sum_k P */
    double power_ratio_se, power_ratio_low_se, power_ratio_high_se;
    double corr_lag1_se, corr_lag1_raw_se, mean_se;
} fl_gauss_stats_result;

/* frames: [N, C, H, W] f32 CPU, N >= 2, any strides. (The result type is not named
 * fl_gauss_stats: C gives a typedef and a function one namespace.) */
fl_status fl_gauss_stats(const fl_denoiser *d, const fl_tensor *frames, fl_gauss_stats_result *st,
                         fl_error *err);
/* Per mode, [H * W] in FFT index order (either pointer may be NULL):
 *   power[k] = mean_{t,c} |X_t(k)|^2 (true process: P(k); standard error
 *              P(k) sqrt(kappa g(rho^2) / C) / N with kappa = 2 for k = -k, else 1, and
 *              g(r) = sum_{t,s<N} r^{|t-s|});
 *   corr[k]  = the drift-compensated lag-1 correlation of mode k alone (0 where the
 *              denominator is 0; true process: rho, standard error about
 *              sqrt((1 - rho^2) / ((N - 1) C kappa')), kappa' = 1 for k = -k, else 2). */
fl_status fl_gauss_mode_stats(const fl_denoiser *d, const fl_tensor *frames, double *power,
                              double *corr, fl_error *err);

#endif
