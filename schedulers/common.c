/* Shared scheduler plumbing: setup checks, noise addressing, the clip sampler. */
#include "schedulers/common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

fl_rng_addr fl_sched_addr(uint32_t stream, int64_t id, uint32_t phase, uint32_t step)
{
    FL_ASSERT(step < (1u << 24) && phase < (1u << 7));
    fl_rng_addr a = { stream, 0, (phase << 24) | step };
    if (id >= 0) {
        FL_ASSERT(id <= (int64_t)UINT32_MAX);
        a.frame = (uint32_t)id;
    } else {
        FL_ASSERT(-1 - id <= (int64_t)UINT32_MAX);
        a.frame = (uint32_t)(-1 - id);
        a.step |= 1u << 31;
    }
    return a;
}

fl_status fl_sched_setup_check(const fl_sched_setup *s, const char *who, fl_error *err)
{
    if (s->window < 1 || s->channels < 1 || s->height < 1 || s->width < 1)
        return fl_error_set(err, FL_E_INVALID, "%s: bad window %d or frame shape %dx%dx%d", who,
                            s->window, s->channels, s->height, s->width);
    if (s->steps < 1 || s->steps >= (1 << 24))
        return fl_error_set(err, FL_E_RANGE, "%s: steps: expected 1 .. %d, got %d", who,
                            (1 << 24) - 1, s->steps);
    if (s->frames < 1 || s->frames > (int64_t)INT32_MAX)
        return fl_error_set(err, FL_E_RANGE, "%s: frames: expected 1 .. %d, got %lld", who,
                            INT32_MAX, (long long)s->frames);
    for (int i = 0; i < s->steps; i++) {
        const fl_level *a = &s->levels[i];
        if (!(a->sigma > 0) || !(a->alpha >= 0) || !isfinite(a->alpha) || !isfinite(a->sigma))
            return fl_error_set(err, FL_E_RANGE, "%s: level of step %d is not a noisy level (alpha=%g, sigma=%g)",
                                who, i, a->alpha, a->sigma);
        if (i > 0) {
            const fl_level *b = &s->levels[i - 1];
            if (a->sigma / a->alpha < b->sigma / b->alpha)
                return fl_error_set(err, FL_E_RANGE, "%s: step %d is less noisy than step %d; levels must ascend",
                                    who, i, i - 1);
        }
    }
    return FL_OK;
}

int32_t fl_sched_cond(const fl_sched_setup *s, int64_t frame)
{
    return s->cond_of ? s->cond_of(s->cond_ctx, frame) : 0;
}

fl_level fl_sched_level(const fl_sched_setup *s, const fl_level *levels, int idx)
{
    return idx < 0 ? s->final : levels[idx];
}

void fl_sched_frame_noise(const fl_sched_setup *s, int64_t id, float *out, int64_t n)
{
    fl_rng_normal(&s->rng, fl_sched_addr(FL_RNG_STREAM_FRAME_NOISE, id, 0, 0), 0, (size_t)n, out);
    if (s->on_noise)
        s->on_noise(s->noise_ctx, id, out, n);
}

/* ---- the clip sampler ------------------------------------------------------------- */

fl_status fl_clip_init(fl_clip *c, const fl_sched_setup *setup, const fl_level *levels,
                       fl_error *err)
{
    memset(c, 0, sizeof *c);
    c->setup = setup;
    c->levels = levels;
    c->f = setup->window;
    c->fs = (int64_t)setup->channels * setup->height * setup->width;
    c->step = -1;
    size_t nf = (size_t)c->f, fs = (size_t)c->fs;
    int64_t shape[4] = { c->f, setup->channels, setup->height, setup->width };
    fl_status st;
    if ((st = fl_tensor_empty(&c->xt, FL_F32, 4, shape, NULL, err)) ||
        (st = fl_tensor_empty(&c->outt, FL_F32, 4, shape, NULL, err)))
        goto fail;
    c->x = fl_tensor_data(&c->xt);
    c->out = fl_tensor_data(&c->outt);
    c->known_x = malloc(nf * fs * sizeof(float));
    c->noise = malloc(fs * sizeof(float));
    c->lv = malloc(nf * sizeof *c->lv);
    c->cond = malloc(nf * sizeof *c->cond);
    c->pos = malloc(nf * sizeof *c->pos);
    c->write = malloc(nf);
    c->id = malloc(nf * sizeof *c->id);
    if (!c->known_x || !c->noise || !c->lv || !c->cond || !c->pos || !c->write || !c->id) {
        st = fl_error_set(err, FL_E_NOMEM, "clip: buffers for %d frames", c->f);
        goto fail;
    }
    c->win = (fl_window){ c->xt, c->outt, c->lv, c->cond, c->pos, c->write };
    return FL_OK;
fail:
    fl_clip_free(c);
    return st;
}

void fl_clip_free(fl_clip *c)
{
    fl_tensor_release(&c->xt);
    fl_tensor_release(&c->outt);
    free(c->known_x);
    free(c->noise);
    free(c->lv);
    free(c->cond);
    free(c->pos);
    free(c->write);
    free(c->id);
    memset(c, 0, sizeof *c);
}

void fl_clip_start(fl_clip *c, int64_t first_id, int known, int64_t chunk)
{
    FL_ASSERT(known >= 0 && known < c->f);
    c->known = known;
    c->chunk = chunk;
    c->step = c->setup->steps - 1;
    for (int j = 0; j < c->f; j++) {
        c->id[j] = first_id + j;
        c->cond[j] = fl_sched_cond(c->setup, c->id[j]);
        c->pos[j] = -1; /* no queue: not traced by position */
        c->write[j] = j >= known;
        if (j >= known)
            fl_sched_frame_noise(c->setup, c->id[j], fl_clip_frame(c, j), c->fs);
    }
}

fl_window *fl_clip_plan(fl_clip *c)
{
    fl_level lv = c->levels[c->step];
    for (int j = 0; j < c->f; j++)
        c->lv[j] = lv;
    /* Known frames re-noised to the current level with fresh noise at every step,
     * addressed by (known frame, chunk mod 120, step): a frame is context in fewer than
     * f < 120 consecutive chunks, so no two re-noisings share numbers. */
    for (int j = 0; j < c->known; j++) {
        fl_rng_addr a = fl_sched_addr(FL_RNG_STREAM_FORWARD_NOISE, c->id[j],
                                      FL_SCHED_PHASE_CHUNK + (uint32_t)(c->chunk % 120),
                                      (uint32_t)c->step);
        fl_rng_normal(&c->setup->rng, a, 0, (size_t)c->fs, c->noise);
        float *x = fl_clip_frame(c, j);
        const float *k = c->known_x + (int64_t)j * c->fs;
        for (int64_t i = 0; i < c->fs; i++)
            x[i] = (float)(lv.alpha * k[i] + lv.sigma * c->noise[i]);
    }
    return &c->win;
}

fl_status fl_clip_apply(fl_clip *c, fl_error *err)
{
    const fl_sched_setup *s = c->setup;
    fl_level from = c->levels[c->step], to = fl_sched_level(s, c->levels, c->step - 1);
    int noisy = fl_sampler_needs_noise(&s->sampler, from, to);
    for (int j = c->known; j < c->f; j++) {
        const float *z = NULL;
        if (noisy) {
            fl_rng_normal(&s->rng,
                          fl_sched_addr(FL_RNG_STREAM_SAMPLER, c->id[j], FL_SCHED_PHASE_CLIP,
                                        (uint32_t)c->step),
                          0, (size_t)c->fs, c->noise);
            z = c->noise;
        }
        float *x = fl_clip_frame(c, j);
        fl_status st = fl_sampler_step(&s->sampler, s->param, from, to, x,
                                       c->out + (int64_t)j * c->fs, z, x, (size_t)c->fs, err);
        if (st)
            return st;
    }
    c->step--;
    return FL_OK;
}
