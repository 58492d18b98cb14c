/* Procedural videos: coloured sprites moving, bouncing and spinning over simple
 * backgrounds, with a caption per segment, cut into a clip dataset (docs/data.md). */
#ifndef FL_PROCGEN_H
#define FL_PROCGEN_H

#include <stdint.h>

#include "core/status.h"
#include "data/clips.h"

#define FL_PROCGEN_SHAPES 4  /* circle, square, triangle, ring */
#define FL_PROCGEN_COLORS 8  /* red, green, blue, yellow, magenta, cyan, orange, purple */
#define FL_PROCGEN_MOTIONS 6 /* moving left/right/up/down, bouncing, spinning */

/* Options; fl_procgen_opts_default fills the defaults shown, fl_procgen_make checks every
 * field and names the one at fault ("procgen.videos: expected 1..100000, got 0"). */
typedef struct fl_procgen_opts {
    uint64_t seed;     /* 1 */
    int height, width; /* 32, 32   (8..512 each) */
    int window;        /* 16   f: frames per clip (1..frames) */
    int videos;        /* 24   one sprite each; video v has shape v % shapes and colour
                        *      (v / shapes) % colors, so 24 videos cover every pair once */
    int frames;        /* 160  frames per video */
    int segment;       /* 32   frames per caption segment (the motion changes between them) */
    int shapes;        /* 4    the first n shapes of the list above */
    int colors;        /* 6    the first n colours */
    int texture;       /* 0    1: stripes on the sprites (makes a spinning circle visible) */
} fl_procgen_opts;

void fl_procgen_opts_default(fl_procgen_opts *o);

/* Generates the videos and the clip table (a clip at every offset of every video) into a
 * new dataset *out (free with fl_clips_free). Deterministic: the same options give the
 * same bytes on any machine. Randomness is Philox keyed by seed, stream
 * FL_RNG_STREAM_MODEL, frame = video index, step = 0 for the video's set-up or 1 + segment
 * for a segment's motion, element = the parameter's slot (docs/data.md). */
fl_status fl_procgen_make(const fl_procgen_opts *o, fl_clips **out, fl_error *err);

/* The vocabulary: names for indices in range, "?" otherwise. Caption id of (shape, colour,
 * motion) is (shape * colors + colour) * FL_PROCGEN_MOTIONS + motion, and its text is
 * "a <colour> <shape> <motion>", e.g. "a red circle moving left". */
const char *fl_procgen_shape_name(int shape);
const char *fl_procgen_color_name(int color);
const char *fl_procgen_motion_name(int motion);
/* The sRGB bytes of a colour (0 for an index out of range). */
void fl_procgen_color_rgb(int color, uint8_t rgb[3]);

#endif
