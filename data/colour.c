/* The fixed maps from latents and pixels to 8-bit RGB (data/colour.h, docs/video.md). */
#include "data/colour.h"

#include <math.h>
#include <string.h>

static uint8_t clamp_byte(double b)
{
    if (!(b >= 0.0)) /* also NaN */
        return 0;
    if (b >= 255.0)
        return 255;
    return (uint8_t)floor(b);
}

uint8_t fl_colour_latent_byte(float v)
{
    return clamp_byte(127.5 + 127.5 * (double)v / FL_COLOUR_SIGMAS + 0.5);
}

uint8_t fl_colour_pixel_byte(float v)
{
    return clamp_byte(127.5 * ((double)v + 1.0) + 0.5);
}

fl_status fl_colour_frame(const float *frame, int channels, int height, int width,
                          fl_colour_space space, uint8_t *rgb, fl_error *err)
{
    if (channels < 1 || height < 1 || width < 1)
        return fl_error_set(err, FL_E_SHAPE, "colour: frame of %d x %d x %d (channels, height, width) is empty",
                            channels, height, width);
    if (space == FL_COLOUR_PIXELS && channels != 1 && channels != 3)
        return fl_error_set(err, FL_E_SHAPE, "colour: pixels must have 1 or 3 channels, this frame has %d",
                            channels);
    if (space != FL_COLOUR_PIXELS && space != FL_COLOUR_LATENT)
        return fl_error_set(err, FL_E_INVALID, "colour: unknown colour space %d", (int)space);
    uint8_t (*byte)(float) = space == FL_COLOUR_PIXELS ? fl_colour_pixel_byte : fl_colour_latent_byte;
    size_t hw = (size_t)height * (size_t)width;
    /* 1/sqrt(n) per colour group keeps independent unit-variance channels at unit
     * variance, so the 3-sigma map means the same for every channel count. */
    double norm[3] = { 1, 1, 1 };
    if (channels >= 3)
        for (int k = 0; k < 3; k++)
            norm[k] = 1.0 / sqrt((double)((channels - k + 2) / 3));
    for (size_t i = 0; i < hw; i++) {
        double c[3];
        if (channels == 1) {
            c[0] = c[1] = c[2] = frame[i];
        } else if (channels == 2) {
            c[0] = frame[i];
            c[1] = frame[hw + i];
            c[2] = (c[0] + c[1]) / sqrt(2.0);
        } else {
            c[0] = c[1] = c[2] = 0;
            for (int ch = 0; ch < channels; ch++)
                c[ch % 3] += frame[(size_t)ch * hw + i];
            for (int k = 0; k < 3; k++)
                c[k] *= norm[k];
        }
        for (int k = 0; k < 3; k++)
            rgb[3 * i + (size_t)k] = byte((float)c[k]);
    }
    return FL_OK;
}

int fl_colour_space_parse(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "latent"))
        return FL_COLOUR_LATENT;
    if (!strcmp(name, "pixels") || !strcmp(name, "pixel"))
        return FL_COLOUR_PIXELS;
    return -1;
}

const char *fl_colour_space_name(fl_colour_space space)
{
    return space == FL_COLOUR_PIXELS ? "pixels" : "latent";
}
