/* What every long-video scheduler is built from, and the clip sampler that full, chunked
 * and fifo's base clip share. Internal to schedulers/. */
#ifndef FL_SCHED_COMMON_H
#define FL_SCHED_COMMON_H

#include <stdint.h>

#include "core/denoiser.h"
#include "core/rng.h"
#include "core/scheduler.h"
#include "core/state.h"
#include "schedulers/sampler.h"

/* The inputs of a scheduler. levels[i] is step index i's level (i = 0 cleanest); a frame
 * that has taken its last step sits at `final` (clean, or levels[0] for the official
 * VideoCrafter2 identity step). The scheduler copies what it keeps. */
typedef struct fl_sched_setup {
    int window, channels, height, width; /* the denoiser's f and latent shape */
    fl_param param;                      /* the denoiser's output parameterization */
    const fl_level *levels;
    int steps;
    fl_level final;
    fl_sampler sampler;
    fl_rng rng;
    int64_t frames; /* frames to emit */
    /* condition of output frame k (NULL: every frame has condition 0) */
    int32_t (*cond_of)(void *ctx, int64_t frame);
    void *cond_ctx;
    /* Optional observer: called with the pure noise a frame starts from, as it enters
     * (id < 0: a warm-up frame that is never emitted). For traces and tests. */
    void (*on_noise)(void *ctx, int64_t id, const float *noise, int64_t n);
    void *noise_ctx;
    /* fifo: every queue frame is evaluated under the condition of the next frame to be
     * emitted (the official code's whole-queue prompt switch) instead of its own. */
    int cond_whole_queue;
    /* cond_of returns values in [0, nconds): restore refuses a saved condition outside it
     * (0: not checked) */
    int32_t nconds;
} fl_sched_setup;

/* Random-number addresses (docs/rng.md). A frame is named by its output index id >= 0;
 * frames that are never emitted (warm-up) have negative ids and are addressed as
 * frame = -1 - id with bit 31 of step set. Steps carry a phase tag in bits 24..30. */
#define FL_SCHED_PHASE_CLIP 0u     /* full, chunked and fifo's base clip */
#define FL_SCHED_PHASE_DIAGONAL 1u /* fifo's queue */
#define FL_SCHED_PHASE_CHUNK 2u    /* + chunk % 120: chunked re-noising of known frames */
fl_rng_addr fl_sched_addr(uint32_t stream, int64_t id, uint32_t phase, uint32_t step);

/* Checks the fields of a setup; messages name the field. */
fl_status fl_sched_setup_check(const fl_sched_setup *s, const char *who, fl_error *err);
int32_t fl_sched_cond(const fl_sched_setup *s, int64_t frame);
/* FL_OK when every one of the n saved conditions is one cond_of can return (setup->nconds),
 * else FL_E_INVALID naming the entry, the index and the value. */
fl_status fl_sched_check_conds(const fl_sched_setup *s, const char *entry, const int32_t *cond, int64_t n,
                               fl_error *err);
/* The level of step index idx, or setup->final for idx == -1. */
fl_level fl_sched_level(const fl_sched_setup *s, const fl_level *levels, int idx);
/* Pure noise for frame id (FRAME_NOISE stream, step 0): the same for every scheduler. */
void fl_sched_frame_noise(const fl_sched_setup *s, int64_t id, float *out, int64_t n);

/* Sampling of one clip of f frames over all S steps, every frame at one level, with the
 * first `known` frames replaced at every step by given clean frames noised to the current
 * level (the replacement method of chunked extension). One window per iteration. */
typedef struct fl_clip {
    const fl_sched_setup *setup;
    const fl_level *levels;
    int f;
    int64_t fs;        /* floats per frame */
    float *x, *out, *known_x, *noise;
    fl_level *lv;
    int32_t *cond, *pos;
    uint8_t *write;
    int64_t *id;
    int known;
    int64_t chunk;     /* which clip this is (addresses the re-noising of known frames) */
    int step;          /* the step index the next iteration takes; -1 when finished */
    fl_window win;
    fl_tensor xt, outt;
} fl_clip;

fl_status fl_clip_init(fl_clip *c, const fl_sched_setup *setup, const fl_level *levels,
                       fl_error *err);
void fl_clip_free(fl_clip *c);
/* Starts a clip whose frame j has output index first_id + j; frames [known, f) start from
 * their pure noise; frames [0, known) are taken from c->known_x (clean) at every step. */
void fl_clip_start(fl_clip *c, int64_t first_id, int known, int64_t chunk);
fl_window *fl_clip_plan(fl_clip *c);
fl_status fl_clip_apply(fl_clip *c, fl_error *err);
static inline int fl_clip_done(const fl_clip *c)
{
    return c->step < 0;
}
static inline float *fl_clip_frame(const fl_clip *c, int j)
{
    return c->x + (int64_t)j * c->fs;
}

/* ---- resume (core/scheduler.h save/restore; docs/schedulers.md "Resume") ----------- */

/* A static dimension of a scheduler (f, Q, ...), saved as "sched/shape/<name>". */
typedef struct fl_sched_dim {
    const char *name;
    int64_t value;
} fl_sched_dim;

/* Saves what every scheduler saves: "sched/kind" (s->vt->name as u8 text), its static
 * shape "sched/shape/{f,C,H,W,S,frames}" plus the scheduler's own dims, the setup that fixes
 * its numbers ("sched/setup/{seed,sampler,final,levels}") and the base counters
 * "sched/emitted" and "sched/iteration". */
fl_status fl_sched_save_base(const fl_scheduler *s, const fl_sched_setup *setup,
                             const fl_sched_dim *dims, int ndims, fl_state *st, fl_error *err);
/* Checks those entries against s, naming the first that differs ("state: sched/shape/Q:
 * scheduler is fifo with Q=68, the saved state has Q=36"), and reads the counters into
 * *emitted and *iteration (0 <= emitted <= total, iteration >= 0). Changes nothing. */
fl_status fl_sched_check_base(const fl_scheduler *s, const fl_sched_setup *setup,
                              const fl_sched_dim *dims, int ndims, const fl_state *st,
                              int64_t *emitted, int64_t *iteration, fl_error *err);

/* A text entry (u8, no terminator). check: FL_E_INVALID naming the entry when it is absent
 * or is not `want` ("state: sched/planner: scheduler has planner lookahead, the saved state
 * has planner partition"); `what` names the setting. */
fl_status fl_sched_put_text(fl_state *st, const char *name, const char *text, fl_error *err);
fl_status fl_sched_check_text(const fl_state *st, const char *name, const char *what,
                              const char *want, fl_error *err);
/* The values of entry `name` (owned by st) when it holds exactly `count` values of type t;
 * otherwise NULL and an FL_E_INVALID error naming the entry, as fl_state_get (so a caller
 * returns FL_E_INVALID: err may be NULL). */
const void *fl_sched_entry(const fl_state *st, const char *name, fl_state_type t,
                           int64_t count, fl_error *err);
/* An i64 scalar entry in [lo, hi]; out of range is FL_E_INVALID naming the entry. */
fl_status fl_sched_get_int(const fl_state *st, const char *name, int64_t lo, int64_t hi,
                           int64_t *v, fl_error *err);
/* Whether fl_sched_addr can address frame id (a restored id must not trip its assertion). */
int fl_sched_id_ok(int64_t id);

/* A clip's state under `prefix` (e.g. "sched/clip/"): step, known, chunk (i64), id [f] i64,
 * cond [f] i32, x [f * fs] f32 and known_x [known * fs] f32. out, lv and noise are scratch
 * (written before they are read), pos and write follow from known. restore checks every
 * entry before it changes c, so on error c is as it was. */
fl_status fl_clip_save(const fl_clip *c, const char *prefix, fl_state *st, fl_error *err);
fl_status fl_clip_restore(fl_clip *c, const char *prefix, const fl_state *st, fl_error *err);

#endif
