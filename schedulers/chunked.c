/* `chunked`: naive autoregressive extension by replacement. Each clip keeps the last k
 * emitted frames as known context: at every step they are overwritten with the known
 * clean frames forward-noised to the current level, so the new frames are sampled
 * "around" them. */
#include <stdlib.h>
#include <string.h>

#include "schedulers/schedulers.h"

typedef struct chunked_sched {
    fl_scheduler base;
    fl_sched_setup setup;
    fl_level *levels;
    fl_clip clip;
    int context;
    int64_t chunk;
} chunked_sched;

static fl_status chunked_plan(fl_scheduler *s, fl_window **w, int *count, fl_error *err)
{
    (void)err;
    chunked_sched *c = (chunked_sched *)s;
    *w = fl_clip_plan(&c->clip);
    *count = 1;
    return FL_OK;
}

static fl_status chunked_apply(fl_scheduler *s, const fl_frame_sink *sink, fl_error *err)
{
    chunked_sched *c = (chunked_sched *)s;
    fl_clip *clip = &c->clip;
    fl_status st = fl_clip_apply(clip, err);
    if (st)
        return st;
    s->iteration++;
    if (!fl_clip_done(clip))
        return FL_OK;
    for (int j = clip->known; j < clip->f && s->emitted < s->total; j++) {
        if (sink && (st = sink->put(sink->ctx, clip->id[j], fl_clip_frame(clip, j), clip->cond[j], err)))
            return st;
        s->emitted++;
    }
    if (s->emitted >= s->total)
        return FL_OK;
    /* The next clip starts with the last k frames of this one as known context. */
    int k = c->context;
    memcpy(clip->known_x, fl_clip_frame(clip, clip->f - k), (size_t)k * (size_t)clip->fs * sizeof(float));
    c->chunk++;
    fl_clip_start(clip, s->emitted - k, k, c->chunk);
    return FL_OK;
}

static void chunked_free(fl_scheduler *s)
{
    chunked_sched *c = (chunked_sched *)s;
    fl_clip_free(&c->clip);
    free(c->levels);
    free(c);
}

/* Resume: the clip (its chunk number included) is the whole state; between chunks the next
 * clip has already started, with its known frames in known_x. */
static fl_status chunked_save(const fl_scheduler *s, fl_state *st, fl_error *err)
{
    const chunked_sched *c = (const chunked_sched *)s;
    fl_sched_dim dims[1] = { { "context", c->context } };
    fl_status rc = fl_sched_save_base(s, &c->setup, dims, 1, st, err);
    return rc ? rc : fl_clip_save(&c->clip, "sched/clip/", st, err);
}

static fl_status chunked_restore(fl_scheduler *s, const fl_state *st, fl_error *err)
{
    chunked_sched *c = (chunked_sched *)s;
    fl_sched_dim dims[1] = { { "context", c->context } };
    int64_t emitted, iteration;
    fl_status rc;
    if ((rc = fl_sched_check_base(s, &c->setup, dims, 1, st, &emitted, &iteration, err)) ||
        (rc = fl_clip_restore(&c->clip, "sched/clip/", st, err)))
        return rc;
    c->chunk = c->clip.chunk;
    s->emitted = emitted;
    s->iteration = iteration;
    return FL_OK;
}

static const fl_scheduler_vt chunked_vt = { "chunked", chunked_plan, chunked_apply, chunked_free, chunked_save, chunked_restore };

fl_status fl_chunked_new(const fl_sched_setup *s, int context, fl_scheduler **out, fl_error *err)
{
    fl_status st = fl_sched_setup_check(s, "chunked", err);
    if (st)
        return st;
    if (context < 0 || context >= s->window || s->window > 120)
        return fl_error_set(err, FL_E_RANGE,
                            "chunked: context: expected an integer in [0, %d] (window - 1), got %d",
                            s->window - 1, context);
    chunked_sched *c = calloc(1, sizeof *c);
    if (!c)
        return fl_error_set(err, FL_E_NOMEM, "chunked: scheduler");
    c->setup = *s;
    c->context = context;
    c->levels = malloc((size_t)s->steps * sizeof *c->levels);
    if (!c->levels) {
        free(c);
        return fl_error_set(err, FL_E_NOMEM, "chunked: %d levels", s->steps);
    }
    memcpy(c->levels, s->levels, (size_t)s->steps * sizeof *c->levels);
    c->setup.levels = c->levels;
    if ((st = fl_clip_init(&c->clip, &c->setup, c->levels, err))) {
        free(c->levels);
        free(c);
        return st;
    }
    c->base = (fl_scheduler){ &chunked_vt, s->frames, 0, 0, 0 };
    fl_clip_start(&c->clip, 0, 0, 0);
    *out = &c->base;
    return FL_OK;
}
