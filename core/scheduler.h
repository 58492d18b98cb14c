/* The scheduler interface: which frames sit at which noise level, which windows are
 * evaluated each iteration, how results merge, and when frames are emitted. */
#ifndef FL_SCHEDULER_H
#define FL_SCHEDULER_H

#include <stdint.h>

#include "core/denoiser.h"
#include "core/state.h"
#include "core/status.h"
#include "core/tensor.h"

/* One window evaluation of an iteration. Everything here is owned by the scheduler and
 * stays valid until its next apply() call. x is a snapshot of the frames taken when the
 * iteration was planned, so windows may be evaluated in any order (or on any process):
 * none of them sees another's result. The engine writes the model output into out. */
typedef struct fl_window {
    fl_tensor x;             /* [n, C, H, W] f32, read-only for the engine */
    fl_tensor out;           /* [n, C, H, W] f32, filled by the engine */
    const fl_level *levels;  /* [n] each frame's noise level */
    const int32_t *cond;     /* [n] each frame's condition */
    const int32_t *pos;      /* [n] queue position of each frame (-1: not a queue frame) */
    const uint8_t *write;    /* [n] 1 when this frame's output is used by apply() */
} fl_window;

/* Where finished frames go. put() receives frames in increasing index order, 0, 1, 2, ...,
 * each once; frame points to C*H*W floats valid only during the call. */
typedef struct fl_frame_sink {
    fl_status (*put)(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err);
    void *ctx;
} fl_frame_sink;

typedef struct fl_scheduler fl_scheduler;
typedef struct fl_scheduler_vt {
    const char *name;
    /* The windows of the next iteration: *windows points to *count windows owned by the
     * scheduler. */
    fl_status (*plan)(fl_scheduler *s, fl_window **windows, int *count, fl_error *err);
    /* After every window's out is filled: update the frames, emit finished ones to sink,
     * enqueue fresh noise. */
    fl_status (*apply)(fl_scheduler *s, const fl_frame_sink *sink, fl_error *err);
    void (*free)(fl_scheduler *s);
    /* Resume (DESIGN.md "Randomness"; docs/schedulers.md "Resume"): save() puts everything
     * that changes between iterations into st under names starting "sched/" (queue latents,
     * step indices, conditions, ids, phase), its own base counters emitted and iteration
     * ("sched/emitted", "sched/iteration"), and what identifies it: "sched/kind" (vt->name),
     * "sched/shape/..." (f, S, Q, frames, ...) and "sched/setup/..." (seed, sampler, levels).
     * total is configuration and is not restored: it is checked. restore() is called on a
     * scheduler freshly built from the same configuration, between iterations (after an
     * apply, before the next plan), and makes it continue exactly where the saved one stood,
     * base emitted and iteration included: the frames emitted afterwards are bit-identical.
     * The engine neither saves nor sets the base fields. A state of another scheduler, shape or
     * setup, or with an entry missing or out of range, is an FL_E_INVALID error naming the
     * entry, and leaves s unchanged. NULL: the scheduler cannot resume. */
    fl_status (*save)(const fl_scheduler *s, fl_state *st, fl_error *err);
    fl_status (*restore)(fl_scheduler *s, const fl_state *st, fl_error *err);
} fl_scheduler_vt;

/* Implementations embed this as their first member. emitted/total/iteration are kept (and
 * emitted/iteration saved and restored) by the implementation; the engine only reads them.
 * positions is the number of queue positions (for per-position traces), 0 when the
 * scheduler has no queue. */
struct fl_scheduler {
    const fl_scheduler_vt *vt;
    int64_t total;      /* frames to emit */
    int64_t emitted;    /* frames emitted so far */
    int64_t iteration;  /* iterations completed */
    int positions;
};

static inline int fl_scheduler_done(const fl_scheduler *s)
{
    return s->emitted >= s->total;
}

void fl_scheduler_free(fl_scheduler *s); /* s may be NULL */

#endif
