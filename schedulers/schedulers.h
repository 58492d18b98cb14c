/* The long-video schedulers: full, chunked, fifo. Each returns an fl_scheduler (core/
 * scheduler.h) that the engine drives; the caller frees it with fl_scheduler_free. */
#ifndef FL_SCHEDULERS_H
#define FL_SCHEDULERS_H

#include "core/scheduler.h"
#include "schedulers/common.h"
#include "schedulers/planner.h"

/* The base model's own sampling: one clip of f frames, S steps, every frame at the same
 * level. frames must be <= f; the first `frames` frames of the clip are emitted. */
fl_status fl_full_new(const fl_sched_setup *s, fl_scheduler **out, fl_error *err);

/* Naive autoregressive extension: a first clip of f frames, then clips that keep the last
 * `context` emitted frames (0 <= context < f) by replacing them, at every step, with the
 * known frames noised to the current level; each clip emits its f - context new frames. */
fl_status fl_chunked_new(const fl_sched_setup *s, int context, fl_scheduler **out,
                         fl_error *err);

typedef enum fl_fifo_init {
    FL_FIFO_INIT_CLIP = 0,
    FL_FIFO_INIT_STAIRCASE = 1,
    FL_FIFO_INIT_FRAMES = 2
} fl_fifo_init;
const char *fl_fifo_init_name(fl_fifo_init i); /* "clip", "staircase", "frames" */

/* FIFO-Diffusion's diagonal queue with S = f * n steps (s->steps must equal f * n).
 * Queue position context + i carries step index i (head = cleanest); the planner cuts it
 * into windows; each iteration every written frame takes one step, the frame at position
 * `context` is emitted, the queue shifts and fresh noise for the next output frame enters
 * at the tail. init: clip (the official code: a base clip by full sampling, forward-noised
 * along the diagonal; warm-up outputs discarded) or staircase (pure noise; the diagonal
 * forms over the first S iterations); frames needs fl_fifo_new_given. Exactly s->frames
 * frames are emitted. */
fl_status fl_fifo_new(const fl_sched_setup *s, const fl_planner_vt *planner, int partitions,
                      fl_fifo_init init, fl_scheduler **out, fl_error *err);

/* The video a fifo queue continues (init frames): clean frames in the latent layout
 * [count, C, H, W], oldest first; `what` names them in messages ("scheduler.source: video 3
 * of d.h5 (frames 0..29)"). Borrowed for the call only: the scheduler keeps neither, so a
 * resumed run restores its queue from the saved state and never needs the source. */
typedef struct fl_fifo_given {
    const float *frames;
    int64_t count;
    const char *what;
} fl_fifo_given;

/* fifo with init frames: the given video's last Q frames are forward-noised to the levels of
 * the Q queue positions (context positions: the final level), its last frame at the tail;
 * they are re-denoised as warm-up, never emitted, and output frame 0 is the frame that enters
 * after them, so generation continues the video. given->count < Q is FL_E_INVALID naming
 * given->what and both counts. (Not a field of fl_sched_setup: positional initializers of
 * the setup in the tests would lose their completeness.) */
fl_status fl_fifo_new_given(const fl_sched_setup *s, const fl_planner_vt *planner, int partitions,
                            const fl_fifo_given *given, fl_scheduler **out, fl_error *err);

/* The schedule of a fifo scheduler: its queue has *positions positions, *context of them
 * before the diagonal. For position p, levels[p] is the level a frame there is at when an
 * iteration starts in the steady state (context positions: the final level) and step[p]
 * its step index (-1 for context). Arrays of at least *positions entries, or NULL to ask
 * for the size only. */
/* A copy of fifo's queue, head (position 0) first: frames [positions, C, H, W] into
 * `frames` and each position's step index (-1: finished) into `step`. FL_E_INVALID for
 * another scheduler. For queue snapshots in the run file. */
fl_status fl_fifo_queue(const fl_scheduler *s, float *frames, int32_t *step, fl_error *err);
fl_status fl_fifo_schedule(const fl_scheduler *s, int *positions, int *context,
                           fl_level *levels, int *step, fl_error *err);

#endif
