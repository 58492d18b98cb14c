/* Frame-level measurements behind the temporal metrics: adjacent-frame errors, PSNR, SSIM
 * and the spectral high-frequency energy split of a window (docs/eval.md). Frames here
 * are channel-planar [C, H, W] floats: latents as they are, 8-bit pixels as 0..255. */
#ifndef FL_EVAL_TEMPORAL_H
#define FL_EVAL_TEMPORAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/status.h"

/* Ownership: frames stay the caller's and are only read. fl_ssim and fl_spectral own
 * their scratch (released by their _free); neither keeps state between calls beyond
 * it, so results depend on the inputs only. One object per thread. */

/* Mean squared / mean absolute difference over n elements, summed in double. */
double fl_frames_mse(const float *a, const float *b, size_t n);
double fl_frames_mae(const float *a, const float *b, size_t n);

/* PSNR = 10 log10(range^2 / mse) in dB, capped at FL_PSNR_MAX (also for mse = 0: equal
 * frames), as common_metrics_on_video_quality caps it, so series stay finite. */
#define FL_PSNR_MAX 100.0
double fl_psnr(double mse, double range);

/* SSIM (Wang et al. 2004) per channel with a w x w Gaussian window (w odd, std sigma),
 * the "valid" region only (windows wholly inside the frame), C1 = (0.01 range)^2,
 * C2 = (0.03 range)^2, averaged over positions and then channels; at w = 11, sigma = 1.5
 * this is the common_metrics / scikit-image gaussian_weights=True definition. Frames
 * smaller than the window (small latents) use the largest odd w' <= min(H, W) with
 * sigma' = sigma w' / w (docs/eval.md). */
typedef struct fl_ssim {
    int channels, height, width, win;
    double sigma, range;
    const fl_allocator *alloc;
    double *kernel;  /* [win] */
    double *scratch; /* 5 horizontally filtered planes and the squares, see temporal.c */
    size_t scratch_len;
} fl_ssim;

fl_status fl_ssim_init(fl_ssim *s, int channels, int height, int width, int win, double sigma, double range,
                       const fl_allocator *alloc, fl_error *err);
double fl_ssim_frames(fl_ssim *s, const float *a, const float *b);
void fl_ssim_free(fl_ssim *s);

/* The share of a window's energy above a frequency cutoff, from the 3-D DFT of each
 * channel's [T, H, W] block after its mean over the window is removed (so the constant
 * offset of a latent does not count as low-frequency energy). With signed bin k of an
 * axis of length N normalised as f = k / (N / 2) (1 = Nyquist):
 *   spatial        energy with sqrt(fy^2 + fx^2) > cutoff, over all energy
 *   temporal       energy with |ft| > cutoff
 *   spatiotemporal energy with sqrt(ft^2 + fy^2 + fx^2) > cutoff
 * White noise gives the share of bins in each region; a video without any variation
 * (no energy) gives NaN. FreeLong splits at 0.25 (of Nyquist, i.e. 0.25 pi). */
typedef struct fl_spectral_split {
    double spatial, temporal, spatiotemporal;
    double energy; /* sum of |X|^2 over all bins = (T H W) sum of squared deviations */
} fl_spectral_split;

typedef struct fl_spectral fl_spectral;
/* For windows of up to max_frames frames of [channels, height, width]; cutoff in (0, 1]. */
fl_status fl_spectral_new(int channels, int max_frames, int height, int width, double cutoff,
                          const fl_allocator *alloc, fl_spectral **out, fl_error *err);
void fl_spectral_free(fl_spectral *s); /* s may be NULL */
/* frames[t] points to planar frame t, 1 <= n_frames <= max_frames. */
fl_status fl_spectral_window(fl_spectral *s, const float *const *frames, int n_frames, fl_spectral_split *out,
                             fl_error *err);
/* The expected split for white noise (every bin but DC equally likely to hold energy):
 * counts of bins, for tests and for judging a measured value. */
void fl_spectral_white(int frames, int height, int width, double cutoff, fl_spectral_split *out);

#endif
