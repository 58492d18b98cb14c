/* `full`: the base model's own sampling of one clip (all frames at one level). */
#include <stdlib.h>

#include "schedulers/schedulers.h"

typedef struct full_sched {
    fl_scheduler base;
    fl_sched_setup setup;
    fl_level *levels;
    fl_clip clip;
} full_sched;

static fl_status full_plan(fl_scheduler *s, fl_window **w, int *count, fl_error *err)
{
    (void)err;
    full_sched *f = (full_sched *)s;
    *w = fl_clip_plan(&f->clip);
    *count = 1;
    return FL_OK;
}

static fl_status full_apply(fl_scheduler *s, const fl_frame_sink *sink, fl_error *err)
{
    full_sched *f = (full_sched *)s;
    fl_status st = fl_clip_apply(&f->clip, err);
    if (st)
        return st;
    s->iteration++;
    if (fl_clip_done(&f->clip))
        for (int j = 0; j < s->total; j++) {
            if (sink && (st = sink->put(sink->ctx, j, fl_clip_frame(&f->clip, j), f->clip.cond[j], err)))
                return st;
            s->emitted++;
        }
    return FL_OK;
}

static void full_free(fl_scheduler *s)
{
    full_sched *f = (full_sched *)s;
    fl_clip_free(&f->clip);
    free(f->levels);
    free(f);
}

/* Resume: the clip is the whole state. */
static fl_status full_save(const fl_scheduler *s, fl_state *st, fl_error *err)
{
    const full_sched *f = (const full_sched *)s;
    fl_status rc = fl_sched_save_base(s, &f->setup, NULL, 0, st, err);
    return rc ? rc : fl_clip_save(&f->clip, "sched/clip/", st, err);
}

static fl_status full_restore(fl_scheduler *s, const fl_state *st, fl_error *err)
{
    full_sched *f = (full_sched *)s;
    int64_t emitted, iteration;
    fl_status rc;
    if ((rc = fl_sched_check_base(s, &f->setup, NULL, 0, st, &emitted, &iteration, err)) ||
        (rc = fl_clip_restore(&f->clip, "sched/clip/", st, err)))
        return rc;
    s->emitted = emitted;
    s->iteration = iteration;
    return FL_OK;
}

static const fl_scheduler_vt full_vt = { "full", full_plan, full_apply, full_free, full_save, full_restore };

fl_status fl_full_new(const fl_sched_setup *s, fl_scheduler **out, fl_error *err)
{
    fl_status st = fl_sched_setup_check(s, "full", err);
    if (st)
        return st;
    if (s->frames > s->window)
        return fl_error_set(err, FL_E_RANGE,
                            "full: frames: the base model makes at most its window of %d frames, got %lld (use fifo or chunked for longer videos)",
                            s->window, (long long)s->frames);
    full_sched *f = calloc(1, sizeof *f);
    if (!f)
        return fl_error_set(err, FL_E_NOMEM, "full: scheduler");
    f->setup = *s;
    f->levels = malloc((size_t)s->steps * sizeof *f->levels);
    if (!f->levels) {
        free(f);
        return fl_error_set(err, FL_E_NOMEM, "full: %d levels", s->steps);
    }
    for (int i = 0; i < s->steps; i++)
        f->levels[i] = s->levels[i];
    f->setup.levels = f->levels;
    if ((st = fl_clip_init(&f->clip, &f->setup, f->levels, err))) {
        free(f->levels);
        free(f);
        return st;
    }
    f->base = (fl_scheduler){ &full_vt, s->frames, 0, 0, 0 };
    fl_clip_start(&f->clip, 0, 0, 0);
    *out = &f->base;
    return FL_OK;
}
