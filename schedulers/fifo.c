/* `fifo`: FIFO-Diffusion's diagonal denoising (Kim et al., NeurIPS 2024). The queue holds
 * Q = context + S frames, head (cleanest) first; the planner decides the windows. See
 * docs/schedulers.md for how this differs from the official code and why. */
#include <stdlib.h>
#include <string.h>

#include "schedulers/schedulers.h"

typedef struct fifo_win {
    fl_plan_window plan;
    fl_tensor xt, outt;
    fl_level *lv;
    int32_t *cond, *pos;
    uint8_t *write;
} fifo_win;

typedef struct fifo_sched {
    fl_scheduler base;
    fl_sched_setup setup;
    fl_level *levels;
    const fl_planner_vt *planner;
    int f, n, S, c, Q;
    int64_t fs;
    fl_fifo_init init;
    /* the queue: a ring of Q slots; position p lives in slot (head + p) % Q */
    float *buf, *noise;
    int64_t *id;  /* output index of the frame in a slot (< 0: warm-up, never emitted) */
    int *idx;     /* its step index: the next step it takes goes idx -> idx - 1; -1 finished */
    int32_t *cond;
    int head;
    int64_t next_id; /* output index of the next frame to enter at the tail */
    /* windows */
    fifo_win *win;
    fl_window *windows;
    int nwin;
    /* base clip phase (init = clip) */
    fl_clip clip;
    int in_clip;
} fifo_sched;

static int slot(const fifo_sched *q, int p)
{
    return (q->head + p) % q->Q;
}

/* Fills the queue from the finished base clip, as the official code: position c + i gets
 * the base frame max(0, i - (S - f)) forward-noised to step i with fresh noise; context
 * positions hold base frame 0 as finished. Output index of position c + i: i - (S - f). */
static void fill_from_clip(fifo_sched *q)
{
    const fl_clip *clip = &q->clip;
    for (int p = 0; p < q->Q; p++) {
        int s = slot(q, p);
        float *x = q->buf + (int64_t)s * q->fs;
        if (p < q->c) {
            memcpy(x, fl_clip_frame(clip, 0), (size_t)q->fs * sizeof(float));
            q->id[s] = -1 - (int64_t)p - q->S; /* warm-up; distinct from the diagonal ids */
            q->idx[s] = -1;
            q->cond[s] = clip->cond[0];
            continue;
        }
        int i = p - q->c, k = i - (q->S - q->f);
        const float *x0 = fl_clip_frame(clip, k > 0 ? k : 0);
        fl_level lv = q->levels[i];
        fl_rng_normal(&q->setup.rng,
                      fl_sched_addr(FL_RNG_STREAM_FORWARD_NOISE, p, FL_SCHED_PHASE_DIAGONAL, 0), 0,
                      (size_t)q->fs, q->noise);
        for (int64_t e = 0; e < q->fs; e++)
            x[e] = (float)(lv.alpha * x0[e] + lv.sigma * q->noise[e]);
        q->id[s] = k;
        q->idx[s] = i;
        q->cond[s] = k >= 0 ? clip->cond[k] : clip->cond[0];
    }
    q->next_id = q->f;
}

/* Continuing a given video: position p holds given frame G - Q + p, forward-noised to
 * its position's level (context positions: the final level) with fresh noise at the same
 * addresses as fill_from_clip, so the given video ends at the tail and output frame 0 is
 * the frame that enters after it. Every queue frame is warm-up, id = its index counted from
 * the given video's end (-1: the last given frame): distinct and never emitted. */
static void fill_from_frames(fifo_sched *q, const fl_fifo_given *given)
{
    const float *g = given->frames + (given->count - q->Q) * q->fs;
    for (int p = 0; p < q->Q; p++) {
        int s = slot(q, p), i = p < q->c ? -1 : p - q->c;
        float *x = q->buf + (int64_t)s * q->fs;
        const float *x0 = g + (int64_t)p * q->fs;
        fl_level lv = fl_sched_level(&q->setup, q->levels, i);
        fl_rng_normal(&q->setup.rng,
                      fl_sched_addr(FL_RNG_STREAM_FORWARD_NOISE, p, FL_SCHED_PHASE_DIAGONAL, 0), 0,
                      (size_t)q->fs, q->noise);
        for (int64_t e = 0; e < q->fs; e++)
            x[e] = (float)(lv.alpha * x0[e] + lv.sigma * q->noise[e]);
        q->id[s] = (int64_t)p - q->Q;
        q->idx[s] = i;
        q->cond[s] = fl_sched_cond(&q->setup, q->id[s]);
    }
    q->next_id = 0;
}

/* Staircase start: every frame pure noise at the top step; frames entering later are the
 * output frames 0, 1, ..., so the first output is emitted after S iterations. */
static void fill_staircase(fifo_sched *q)
{
    for (int p = 0; p < q->Q; p++) {
        int s = slot(q, p);
        q->id[s] = -1 - (int64_t)p;
        q->idx[s] = q->S - 1;
        q->cond[s] = fl_sched_cond(&q->setup, 0);
        fl_sched_frame_noise(&q->setup, q->id[s], q->buf + (int64_t)s * q->fs, q->fs);
    }
    q->next_id = 0;
}

static fl_status fifo_plan(fl_scheduler *sch, fl_window **w, int *count, fl_error *err)
{
    (void)err;
    fifo_sched *q = (fifo_sched *)sch;
    if (q->in_clip) {
        *w = fl_clip_plan(&q->clip);
        *count = 1;
        return FL_OK;
    }
    /* Every window copies its frames now: all windows read the queue as it was before
     * the iteration (a Jacobi update), whatever order they are evaluated in. */
    for (int k = 0; k < q->nwin; k++) {
        fifo_win *fw = &q->win[k];
        float *x = fl_tensor_data(&fw->xt);
        for (int j = 0; j < fw->plan.len; j++) {
            int p = fw->plan.start + j, s = slot(q, p);
            memcpy(x + (int64_t)j * q->fs, q->buf + (int64_t)s * q->fs, (size_t)q->fs * sizeof(float));
            fw->lv[j] = fl_sched_level(&q->setup, q->levels, q->idx[s]);
            fw->cond[j] = q->setup.cond_whole_queue ? fl_sched_cond(&q->setup, q->base.emitted) : q->cond[s];
            fw->pos[j] = p;
            fw->write[j] = p >= fw->plan.write_start && p < fw->plan.write_start + fw->plan.write_len;
        }
    }
    *w = q->windows;
    *count = q->nwin;
    return FL_OK;
}

static fl_status fifo_apply(fl_scheduler *sch, const fl_frame_sink *sink, fl_error *err)
{
    fifo_sched *q = (fifo_sched *)sch;
    fl_status st;
    if (q->in_clip) {
        if ((st = fl_clip_apply(&q->clip, err)))
            return st;
        sch->iteration++; /* base-clip iterations count, as in full and chunked */
        if (fl_clip_done(&q->clip)) {
            fill_from_clip(q);
            q->in_clip = 0;
        }
        return FL_OK;
    }
    for (int k = 0; k < q->nwin; k++) {
        fifo_win *fw = &q->win[k];
        const float *x = fl_tensor_data(&fw->xt), *out = fl_tensor_data(&fw->outt);
        for (int j = 0; j < fw->plan.len; j++) {
            if (!fw->write[j])
                continue;
            int p = fw->pos[j], s = slot(q, p), i = q->idx[s];
            if (i < 0)
                return fl_error_set(err, FL_E_INVALID, "fifo: position %d is written but already finished", p);
            fl_level from = q->levels[i], to = fl_sched_level(&q->setup, q->levels, i - 1);
            const float *z = NULL;
            if (fl_sampler_needs_noise(&q->setup.sampler, from, to)) {
                fl_rng_normal(&q->setup.rng,
                              fl_sched_addr(FL_RNG_STREAM_SAMPLER, q->id[s], FL_SCHED_PHASE_DIAGONAL, (uint32_t)i),
                              0, (size_t)q->fs, q->noise);
                z = q->noise;
            }
            if ((st = fl_sampler_step(&q->setup.sampler, q->setup.param, from, to,
                                      x + (int64_t)j * q->fs, out + (int64_t)j * q->fs, z,
                                      q->buf + (int64_t)s * q->fs, (size_t)q->fs, err)))
                return st;
            q->idx[s] = i - 1;
        }
    }
    /* Emit the frame that just took its last step, then shift and enqueue. */
    int s = slot(q, q->c);
    if (q->id[s] >= 0) {
        if (q->idx[s] != -1 || q->id[s] != sch->emitted)
            return fl_error_set(err, FL_E_INVALID, "fifo: frame %lld at the head is not finished (step %d)",
                                (long long)q->id[s], q->idx[s]);
        if (sink && (st = sink->put(sink->ctx, q->id[s], q->buf + (int64_t)s * q->fs, q->cond[s], err)))
            return st;
        sch->emitted++;
    }
    sch->iteration++;
    int tail = slot(q, 0); /* the old head context slot becomes the new tail */
    q->head = (q->head + 1) % q->Q;
    q->id[tail] = q->next_id;
    q->idx[tail] = q->S - 1;
    q->cond[tail] = fl_sched_cond(&q->setup, q->next_id);
    fl_sched_frame_noise(&q->setup, q->next_id, q->buf + (int64_t)tail * q->fs, q->fs);
    q->next_id++;
    return FL_OK;
}

static void fifo_free(fl_scheduler *sch)
{
    fifo_sched *q = (fifo_sched *)sch;
    if (!q)
        return;
    for (int k = 0; q->win && k < q->nwin; k++) {
        fl_tensor_release(&q->win[k].xt);
        fl_tensor_release(&q->win[k].outt);
        free(q->win[k].lv);
        free(q->win[k].cond);
        free(q->win[k].pos);
        free(q->win[k].write);
    }
    free(q->win);
    free(q->windows);
    fl_clip_free(&q->clip);
    free(q->levels);
    free(q->buf);
    free(q->noise);
    free(q->id);
    free(q->idx);
    free(q->cond);
    free(q);
}

/* Resume. The queue is saved in position order (head first), so the ring head is not state:
 * restore puts position p in slot p. During the base clip the queue is not yet filled and
 * only the clip is saved; afterwards the clip is finished and only the queue is saved. */
static int fifo_dims(const fifo_sched *q, fl_sched_dim *d)
{
    d[0] = (fl_sched_dim){ "n", q->n };
    d[1] = (fl_sched_dim){ "c", q->c };
    d[2] = (fl_sched_dim){ "Q", q->Q };
    d[3] = (fl_sched_dim){ "windows", q->nwin };
    return 4;
}

/* The queue head first (position p, not ring slot p); any output may be NULL. */
static void gather(const fifo_sched *q, float *x, int32_t *step, int64_t *id, int32_t *cond)
{
    for (int p = 0; p < q->Q; p++) {
        int s = slot(q, p);
        if (x)
            memcpy(x + (int64_t)p * q->fs, q->buf + (int64_t)s * q->fs, (size_t)q->fs * sizeof *x);
        if (step)
            step[p] = q->idx[s];
        if (id)
            id[p] = q->id[s];
        if (cond)
            cond[p] = q->cond[s];
    }
}

static fl_status fifo_save(const fl_scheduler *sch, fl_state *st, fl_error *err)
{
    const fifo_sched *q = (const fifo_sched *)sch;
    fl_sched_dim dims[4];
    int nd = fifo_dims(q, dims);
    fl_status rc;
    if ((rc = fl_sched_save_base(sch, &q->setup, dims, nd, st, err)) ||
        (rc = fl_sched_put_text(st, "sched/planner", q->planner->name, err)) ||
        (rc = fl_sched_put_text(st, "sched/init", fl_fifo_init_name(q->init), err)) ||
        (rc = fl_state_put_i64(st, "sched/in_clip", q->in_clip, err)))
        return rc;
    if (q->in_clip)
        return fl_clip_save(&q->clip, "sched/clip/", st, err);
    float *x = malloc((size_t)q->Q * (size_t)q->fs * sizeof *x);
    int64_t *id = malloc((size_t)q->Q * sizeof *id);
    int32_t *step = malloc((size_t)q->Q * sizeof *step), *cond = malloc((size_t)q->Q * sizeof *cond);
    if (!x || !id || !step || !cond) {
        rc = fl_error_set(err, FL_E_NOMEM, "fifo: save: queue of %d frames", q->Q);
        goto done;
    }
    gather(q, x, step, id, cond);
    if (!(rc = fl_state_put(st, "sched/queue", FL_STATE_F32, x, (int64_t)q->Q * q->fs, err)) &&
        !(rc = fl_state_put(st, "sched/id", FL_STATE_I64, id, q->Q, err)) &&
        !(rc = fl_state_put(st, "sched/step", FL_STATE_I32, step, q->Q, err)) &&
        !(rc = fl_state_put(st, "sched/cond", FL_STATE_I32, cond, q->Q, err)))
        rc = fl_state_put_i64(st, "sched/next_id", q->next_id, err);
done:
    free(x);
    free(id);
    free(step);
    free(cond);
    return rc;
}

static fl_status fifo_restore(fl_scheduler *sch, const fl_state *st, fl_error *err)
{
    fifo_sched *q = (fifo_sched *)sch;
    fl_sched_dim dims[4];
    int nd = fifo_dims(q, dims);
    int64_t emitted, iteration, in_clip, next_id;
    fl_status rc;
    if ((rc = fl_sched_check_base(sch, &q->setup, dims, nd, st, &emitted, &iteration, err)) ||
        (rc = fl_sched_check_text(st, "sched/planner", "planner", q->planner->name, err)) ||
        (rc = fl_sched_check_text(st, "sched/init", "init", fl_fifo_init_name(q->init), err)) ||
        (rc = fl_sched_get_int(st, "sched/in_clip", 0, q->init == FL_FIFO_INIT_CLIP, &in_clip, err)))
        return rc;
    if (in_clip) {
        if ((rc = fl_clip_restore(&q->clip, "sched/clip/", st, err)))
            return rc;
        q->in_clip = 1;
        sch->emitted = emitted;
        sch->iteration = iteration;
        return FL_OK;
    }
    /* next_id never passes frames + S (the tail's id when the last frame is emitted) */
    if ((rc = fl_sched_get_int(st, "sched/next_id", 0, sch->total + q->S, &next_id, err)))
        return rc;
    const float *x = fl_sched_entry(st, "sched/queue", FL_STATE_F32, (int64_t)q->Q * q->fs, err);
    const int64_t *id = x ? fl_sched_entry(st, "sched/id", FL_STATE_I64, q->Q, err) : NULL;
    const int32_t *step = id ? fl_sched_entry(st, "sched/step", FL_STATE_I32, q->Q, err) : NULL;
    const int32_t *cond = step ? fl_sched_entry(st, "sched/cond", FL_STATE_I32, q->Q, err) : NULL;
    if (!cond)
        return FL_E_INVALID;
    if ((rc = fl_sched_check_conds(&q->setup, "sched/cond", cond, q->Q, err)))
        return rc;
    for (int p = 0; p < q->Q; p++) {
        if (step[p] < -1 || step[p] >= q->S)
            return fl_error_set(err, FL_E_INVALID, "state: sched/step: position %d at step %d, expected -1 .. %d",
                                p, (int)step[p], q->S - 1);
        if (!fl_sched_id_ok(id[p]))
            return fl_error_set(err, FL_E_INVALID, "state: sched/id: frame id %lld at position %d is out of range",
                                (long long)id[p], p);
    }
    /* Everything checked: commit, position p into slot p. */
    q->head = 0;
    memcpy(q->buf, x, (size_t)q->Q * (size_t)q->fs * sizeof *x);
    for (int p = 0; p < q->Q; p++) {
        q->id[p] = id[p];
        q->idx[p] = step[p];
        q->cond[p] = cond[p];
    }
    q->next_id = next_id;
    q->in_clip = 0;
    sch->emitted = emitted;
    sch->iteration = iteration;
    return FL_OK;
}

static const fl_scheduler_vt fifo_vt = { "fifo", fifo_plan, fifo_apply, fifo_free, fifo_save, fifo_restore };

const char *fl_fifo_init_name(fl_fifo_init i)
{
    return i == FL_FIFO_INIT_CLIP ? "clip" : i == FL_FIFO_INIT_STAIRCASE ? "staircase"
           : i == FL_FIFO_INIT_FRAMES ? "frames" : "?";
}

/* A planner's layout must cover the diagonal exactly: windows of f frames inside the
 * queue, write ranges inside their windows, every diagonal position written once, no
 * context position written. */
static fl_status check_layout(const fifo_sched *q, const fl_plan_window *w, int count, fl_error *err)
{
    const char *pn = q->planner->name;
    int *hits = calloc((size_t)q->Q, sizeof *hits);
    if (!hits)
        return fl_error_set(err, FL_E_NOMEM, "fifo: layout check");
    fl_status st = FL_OK;
    for (int k = 0; k < count && !st; k++) {
        const fl_plan_window *a = &w[k];
        if (a->len != q->f || a->start < 0 || a->start + a->len > q->Q || a->write_len < 1 ||
            a->write_start < a->start || a->write_start + a->write_len > a->start + a->len)
            st = fl_error_set(err, FL_E_INVALID,
                              "fifo: planner %s: window %d [%d, %d) writing [%d, %d) does not fit a queue of %d with windows of %d",
                              pn, k, a->start, a->start + a->len, a->write_start,
                              a->write_start + a->write_len, q->Q, q->f);
        for (int p = a->write_start; !st && p < a->write_start + a->write_len; p++)
            hits[p]++;
    }
    for (int p = 0; p < q->Q && !st; p++)
        if (hits[p] != (p >= q->c))
            st = fl_error_set(err, FL_E_INVALID, "fifo: planner %s writes queue position %d %d times (expected %d)",
                              pn, p, hits[p], p >= q->c);
    free(hits);
    return st;
}

static fl_status fifo_create(const fl_sched_setup *s, const fl_planner_vt *planner, int partitions,
                             fl_fifo_init init, const fl_fifo_given *given, fl_scheduler **out, fl_error *err)
{
    fl_status st = fl_sched_setup_check(s, "fifo", err);
    if (st)
        return st;
    if (!planner)
        return fl_error_set(err, FL_E_INVALID, "fifo: no planner");
    if (partitions < 1 || partitions > FL_PLANNER_MAX_WINDOWS / 2)
        return fl_error_set(err, FL_E_RANGE, "fifo: partitions: expected an integer in [1, %d], got %d",
                            FL_PLANNER_MAX_WINDOWS / 2, partitions);
    if (s->steps != s->window * partitions)
        return fl_error_set(err, FL_E_INVALID,
                            "fifo: steps must be window x partitions = %d x %d = %d (one step per queue position), got %d",
                            s->window, partitions, s->window * partitions, s->steps);
    if (init != FL_FIFO_INIT_CLIP && init != FL_FIFO_INIT_STAIRCASE && init != FL_FIFO_INIT_FRAMES)
        return fl_error_set(err, FL_E_INVALID, "fifo: init: expected clip, staircase or frames");
    if (init == FL_FIFO_INIT_FRAMES && (!given || !given->frames || given->count < 1))
        return fl_error_set(err, FL_E_INVALID, "fifo: init frames: no given frames (fl_fifo_new_given)");
    fifo_sched *q = calloc(1, sizeof *q);
    if (!q)
        return fl_error_set(err, FL_E_NOMEM, "fifo: scheduler");
    q->setup = *s;
    q->planner = planner;
    q->f = s->window;
    q->n = partitions;
    q->S = s->steps;
    q->init = init;
    q->fs = (int64_t)s->channels * s->height * s->width;
    fl_plan_window layout[FL_PLANNER_MAX_WINDOWS];
    int count = 0;
    if ((st = planner->layout(q->f, q->n, &q->c, layout, &count, FL_PLANNER_MAX_WINDOWS, err)))
        goto fail;
    if (q->c < 0 || q->c > 4 * q->f) {
        st = fl_error_set(err, FL_E_INVALID, "fifo: planner %s: context of %d positions", planner->name, q->c);
        goto fail;
    }
    q->Q = q->c + q->S;
    if ((st = check_layout(q, layout, count, err)))
        goto fail;
    if (init == FL_FIFO_INIT_FRAMES && given->count < q->Q) {
        st = fl_error_set(err, FL_E_INVALID,
                          "fifo: init frames: %s gives %lld frames, the queue needs %d (%d context + %d steps)",
                          given->what ? given->what : "the given video", (long long)given->count,
                          q->Q, q->c, q->S);
        goto fail;
    }
    q->levels = malloc((size_t)q->S * sizeof *q->levels);
    q->buf = malloc((size_t)q->Q * (size_t)q->fs * sizeof(float));
    q->noise = malloc((size_t)q->fs * sizeof(float));
    q->id = malloc((size_t)q->Q * sizeof *q->id);
    q->idx = malloc((size_t)q->Q * sizeof *q->idx);
    q->cond = malloc((size_t)q->Q * sizeof *q->cond);
    q->win = calloc((size_t)count, sizeof *q->win);
    q->windows = calloc((size_t)count, sizeof *q->windows);
    if (!q->levels || !q->buf || !q->noise || !q->id || !q->idx || !q->cond || !q->win || !q->windows) {
        st = fl_error_set(err, FL_E_NOMEM, "fifo: queue of %d frames", q->Q);
        goto fail;
    }
    memcpy(q->levels, s->levels, (size_t)q->S * sizeof *q->levels);
    q->setup.levels = q->levels;
    q->nwin = count;
    int64_t shape[4] = { q->f, s->channels, s->height, s->width };
    for (int k = 0; k < count; k++) {
        fifo_win *fw = &q->win[k];
        fw->plan = layout[k];
        if ((st = fl_tensor_empty(&fw->xt, FL_F32, 4, shape, NULL, err)) ||
            (st = fl_tensor_empty(&fw->outt, FL_F32, 4, shape, NULL, err)))
            goto fail;
        fw->lv = malloc((size_t)q->f * sizeof *fw->lv);
        fw->cond = malloc((size_t)q->f * sizeof *fw->cond);
        fw->pos = malloc((size_t)q->f * sizeof *fw->pos);
        fw->write = malloc((size_t)q->f);
        if (!fw->lv || !fw->cond || !fw->pos || !fw->write) {
            st = fl_error_set(err, FL_E_NOMEM, "fifo: window %d", k);
            goto fail;
        }
        q->windows[k] = (fl_window){ fw->xt, fw->outt, fw->lv, fw->cond, fw->pos, fw->write };
    }
    if (init == FL_FIFO_INIT_CLIP) {
        if ((st = fl_clip_init(&q->clip, &q->setup, q->levels, err)))
            goto fail;
        fl_clip_start(&q->clip, 0, 0, 0);
        q->in_clip = 1;
    } else if (init == FL_FIFO_INIT_FRAMES) {
        fill_from_frames(q, given);
    } else {
        fill_staircase(q);
    }
    q->base = (fl_scheduler){ &fifo_vt, s->frames, 0, 0, q->Q };
    *out = &q->base;
    return FL_OK;
fail:
    fifo_free(&q->base);
    return st;
}

fl_status fl_fifo_new(const fl_sched_setup *s, const fl_planner_vt *planner, int partitions,
                      fl_fifo_init init, fl_scheduler **out, fl_error *err)
{
    return fifo_create(s, planner, partitions, init, NULL, out, err);
}

fl_status fl_fifo_new_given(const fl_sched_setup *s, const fl_planner_vt *planner, int partitions,
                            const fl_fifo_given *given, fl_scheduler **out, fl_error *err)
{
    return fifo_create(s, planner, partitions, FL_FIFO_INIT_FRAMES, given, out, err);
}

fl_status fl_fifo_queue(const fl_scheduler *sch, float *frames, int32_t *step, fl_error *err)
{
    if (sch->vt != &fifo_vt)
        return fl_error_set(err, FL_E_INVALID, "scheduler %s has no queue", sch->vt->name);
    const fifo_sched *q = (const fifo_sched *)sch;
    /* The queue is filled from the base clip once it is finished; before, it holds nothing. */
    if (q->in_clip)
        return fl_error_set(err, FL_E_INVALID, "fifo: no queue yet: the base clip is being sampled (step %d of %d)",
                            q->S - 1 - q->clip.step, q->S);
    gather(q, frames, step, NULL, NULL);
    return FL_OK;
}

fl_status fl_fifo_schedule(const fl_scheduler *sch, int *positions, int *context,
                           fl_level *levels, int *step, fl_error *err)
{
    if (sch->vt != &fifo_vt)
        return fl_error_set(err, FL_E_INVALID, "scheduler %s has no diagonal schedule", sch->vt->name);
    const fifo_sched *q = (const fifo_sched *)sch;
    *positions = q->Q;
    *context = q->c;
    for (int p = 0; p < q->Q; p++) {
        int i = p < q->c ? -1 : p - q->c;
        if (levels)
            levels[p] = fl_sched_level(&q->setup, q->levels, i);
        if (step)
            step[p] = i;
    }
    return FL_OK;
}
