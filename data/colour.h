/* Colours for frames: the fixed, documented maps from a testbed's latents and from decoded
 * pixels to 8-bit RGB, shared by every writer of images and videos (docs/video.md). */
#ifndef FL_COLOUR_H
#define FL_COLOUR_H

#include <stdint.h>

#include "core/status.h"

/* What the float values of a frame are. */
typedef enum fl_colour_space {
    FL_COLOUR_LATENT, /* unit-variance latents: [-3, 3] (3 sigma) -> [0, 255] */
    FL_COLOUR_PIXELS  /* decoded pixels in [-1, 1] -> [0, 255] */
} fl_colour_space;

/* Latents beyond +-FL_COLOUR_SIGMAS standard deviations saturate. */
#define FL_COLOUR_SIGMAS 3.0

/* One latent value to a byte: floor(127.5 + 127.5 v / 3 + 0.5) clamped to [0, 255], so
 * -3 -> 0, 0 -> 128, 3 -> 255 (and 42.5 levels per standard deviation). NaN -> 0. */
uint8_t fl_colour_latent_byte(float v);
/* One pixel value to a byte: floor(127.5 (v + 1) + 0.5) clamped, so -1 -> 0, 0 -> 128,
 * 1 -> 255. NaN -> 0. */
uint8_t fl_colour_pixel_byte(float v);

/* A frame [C, H, W] (channels first, as in /frames/latent) to RGB [H, W, 3] (caller's
 * buffer of 3 H W bytes). Channels to colours, before the byte map of `space`:
 *   C = 1:  R = G = B = x0 (grey)
 *   C = 2:  R = x0, G = x1, B = (x0 + x1) / sqrt(2)
 *   C >= 3: colour k = (sum of x_c over c = k mod 3) / sqrt(number of such c), so C = 3 is
 *           the identity and unit-variance independent channels stay unit variance.
 * FL_COLOUR_PIXELS takes C = 1 or 3 only (FL_E_SHAPE otherwise). */
fl_status fl_colour_frame(const float *frame, int channels, int height, int width,
                          fl_colour_space space, uint8_t *rgb, fl_error *err);

/* The space named by a run file's `space` attribute ("latent", "pixels"); -1 if unknown. */
int fl_colour_space_parse(const char *name);
const char *fl_colour_space_name(fl_colour_space space);

#endif
