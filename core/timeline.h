/* The prompt timeline: which condition each output frame is generated under. A list of
 * (prompt, frames) segments from the configuration; the condition of frame k is the id of
 * its segment's prompt (equal prompts share an id), and the last segment lasts to the end.
 * Each frame keeps its condition from entering the queue until it is emitted (switch =
 * "frame"), or, as the official FIFO-Diffusion code, the whole queue takes the prompt of
 * the next frame to be emitted (switch = "queue"). docs/experiments.md. */
#ifndef FL_TIMELINE_H
#define FL_TIMELINE_H

#include <stdint.h>

#include "core/config.h"
#include "core/status.h"

typedef enum fl_timeline_switch { FL_SWITCH_FRAME = 0, FL_SWITCH_QUEUE = 1 } fl_timeline_switch;

typedef struct fl_timeline {
    int nprompts;
    char **prompts;      /* distinct prompt texts; condition id i is prompts[i] (owned) */
    int nseg;
    int64_t *seg_start;  /* first frame of each segment, increasing, seg_start[0] = 0 */
    int32_t *seg_cond;   /* its condition id */
    fl_timeline_switch mode;
} fl_timeline;

/* Reads `timeline` (a list of {prompt = "...", frames = N} or {"...", N}; the last may omit
 * its frames) and `timeline_switch` ("frame" | "queue") from the root table. Absent or
 * empty: no prompts, every frame has condition 0. Errors name the key path. *tl is zeroed
 * first and holds nothing to free on error. */
fl_status fl_timeline_read(fl_cfg *root, fl_timeline *tl, fl_error *err);
void fl_timeline_free(fl_timeline *tl);
/* The condition of output frame k (frames before 0, warm-up, take the first segment's). */
int32_t fl_timeline_cond(const fl_timeline *tl, int64_t k);

#endif
