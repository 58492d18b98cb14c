/* Shared scheduler plumbing: setup checks, noise addressing, the clip sampler, save/restore. */
#include "schedulers/common.h"

#include <math.h>
#include <stdio.h>
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

fl_status fl_sched_check_conds(const fl_sched_setup *s, const char *entry, const int32_t *cond, int64_t n,
                               fl_error *err)
{
    int32_t top = s->cond_of ? s->nconds : 1; /* no cond_of: every frame has condition 0 */
    for (int64_t i = 0; top > 0 && i < n; i++)
        if (cond[i] < 0 || cond[i] >= top)
            return fl_error_set(err, FL_E_INVALID, "state: %s: condition %d at %lld, expected 0 .. %d", entry,
                                (int)cond[i], (long long)i, (int)top - 1);
    return FL_OK;
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

/* ---- resume ------------------------------------------------------------------------ */

#define NAME_LEN (FL_STATE_NAME_MAX + 1)
#define TEXT_SHOW 48 /* bytes of a saved text shown in a message */

/* prefix + leaf; both come from code, so an overlong name is a programmer error. */
static const char *entry_name(char *buf, const char *prefix, const char *leaf)
{
    int n = snprintf(buf, NAME_LEN, "%s%s", prefix, leaf);
    FL_ASSERT(n > 0 && n < NAME_LEN);
    return buf;
}

int fl_sched_id_ok(int64_t id)
{
    return id >= -1 - (int64_t)UINT32_MAX && id <= (int64_t)UINT32_MAX;
}

const void *fl_sched_entry(const fl_state *st, const char *name, fl_state_type t,
                           int64_t count, fl_error *err)
{
    fl_state_type ft;
    int64_t fc;
    const void *v = fl_state_find(st, name, &ft, &fc);
    if (!v) {
        fl_error_set(err, FL_E_INVALID, "state: %s: missing", name);
        return NULL;
    }
    if (ft != t || fc != count) {
        fl_error_set(err, FL_E_INVALID, "state: %s: expected %lld %s values, found %lld %s", name,
                     (long long)count, fl_state_type_name(t), (long long)fc, fl_state_type_name(ft));
        return NULL;
    }
    return v;
}

fl_status fl_sched_get_int(const fl_state *st, const char *name, int64_t lo, int64_t hi,
                           int64_t *v, fl_error *err)
{
    const int64_t *p = fl_sched_entry(st, name, FL_STATE_I64, 1, err);
    if (!p)
        return FL_E_INVALID;
    if (*p < lo || *p > hi)
        return fl_error_set(err, FL_E_INVALID, "state: %s: expected %lld .. %lld, found %lld", name,
                            (long long)lo, (long long)hi, (long long)*p);
    *v = *p;
    return FL_OK;
}

fl_status fl_sched_put_text(fl_state *st, const char *name, const char *text, fl_error *err)
{
    return fl_state_put(st, name, FL_STATE_U8, text, (int64_t)strlen(text), err);
}

/* A saved text for a message: at most TEXT_SHOW bytes, anything unprintable as '?'. */
static const char *show_text(char *buf, const uint8_t *p, int64_t n)
{
    int64_t k = n < TEXT_SHOW ? n : TEXT_SHOW;
    for (int64_t i = 0; i < k; i++)
        buf[i] = p[i] >= 32 && p[i] < 127 ? (char)p[i] : '?';
    strcpy(buf + k, n > k ? "..." : "");
    return buf;
}

/* Finds text entry `name`; sets *found to it, shown, for messages. 1 when it equals want. */
static int text_is(const fl_state *st, const char *name, const char *want, char *found,
                   fl_error *err, fl_status *rc)
{
    fl_state_type t;
    int64_t n;
    const uint8_t *p = fl_state_find(st, name, &t, &n);
    *rc = FL_OK;
    if (!p) {
        *rc = fl_error_set(err, FL_E_INVALID, "state: %s: missing", name);
        return 0;
    }
    if (t != FL_STATE_U8) {
        *rc = fl_error_set(err, FL_E_INVALID, "state: %s: expected u8 text, found %s values", name,
                           fl_state_type_name(t));
        return 0;
    }
    show_text(found, p, n);
    return n == (int64_t)strlen(want) && memcmp(p, want, (size_t)n) == 0;
}

fl_status fl_sched_check_text(const fl_state *st, const char *name, const char *what,
                              const char *want, fl_error *err)
{
    char found[TEXT_SHOW + 4];
    fl_status rc;
    if (text_is(st, name, want, found, err, &rc) || rc)
        return rc;
    return fl_error_set(err, FL_E_INVALID, "state: %s: scheduler has %s %s, the saved state has %s %s",
                        name, what, want, what, found);
}

/* The dims every scheduler has, then its own. */
#define MAX_DIMS 32
static int all_dims(const fl_scheduler *s, const fl_sched_setup *u, const fl_sched_dim *own,
                    int nown, fl_sched_dim *d)
{
    FL_ASSERT(nown >= 0 && nown <= MAX_DIMS - 6);
    int n = 0;
    d[n++] = (fl_sched_dim){ "f", u->window };
    d[n++] = (fl_sched_dim){ "C", u->channels };
    d[n++] = (fl_sched_dim){ "H", u->height };
    d[n++] = (fl_sched_dim){ "W", u->width };
    d[n++] = (fl_sched_dim){ "S", u->steps };
    d[n++] = (fl_sched_dim){ "frames", s->total };
    for (int i = 0; i < nown; i++)
        d[n++] = own[i];
    return n;
}

static int64_t seed_of(const fl_sched_setup *u)
{
    return (int64_t)(((uint64_t)u->rng.key[1] << 32) | u->rng.key[0]);
}

static void level_f64(fl_level l, double *out)
{
    out[0] = l.t;
    out[1] = l.alpha;
    out[2] = l.sigma;
}

fl_status fl_sched_save_base(const fl_scheduler *s, const fl_sched_setup *setup,
                             const fl_sched_dim *dims, int ndims, fl_state *st, fl_error *err)
{
    fl_sched_dim d[MAX_DIMS];
    int nd = all_dims(s, setup, dims, ndims, d);
    char nm[NAME_LEN];
    fl_status rc;
    if ((rc = fl_sched_put_text(st, "sched/kind", s->vt->name, err)))
        return rc;
    for (int i = 0; i < nd; i++)
        if ((rc = fl_state_put_i64(st, entry_name(nm, "sched/shape/", d[i].name), d[i].value, err)))
            return rc;
    double sm[3] = { setup->sampler.kind, setup->sampler.eta, setup->param }, fin[3];
    level_f64(setup->final, fin);
    if ((rc = fl_state_put_i64(st, "sched/setup/seed", seed_of(setup), err)) ||
        (rc = fl_state_put(st, "sched/setup/sampler", FL_STATE_F64, sm, 3, err)) ||
        (rc = fl_state_put(st, "sched/setup/final", FL_STATE_F64, fin, 3, err)))
        return rc;
    double *lv = malloc((size_t)setup->steps * 3 * sizeof *lv);
    if (!lv)
        return fl_error_set(err, FL_E_NOMEM, "state: sched/setup/levels: %d levels", setup->steps);
    for (int i = 0; i < setup->steps; i++)
        level_f64(setup->levels[i], lv + 3 * i);
    rc = fl_state_put(st, "sched/setup/levels", FL_STATE_F64, lv, 3 * (int64_t)setup->steps, err);
    free(lv);
    if (rc)
        return rc;
    if ((rc = fl_state_put_i64(st, "sched/emitted", s->emitted, err)) ||
        (rc = fl_state_put_i64(st, "sched/iteration", s->iteration, err)))
        return rc;
    return FL_OK;
}

/* Bitwise: a resumed run is bit-identical only with bit-identical levels. */
static int same_f64(const double *a, const double *b, int n)
{
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

static fl_status check_setup(const fl_scheduler *s, const fl_sched_setup *u, const fl_state *st,
                             fl_error *err)
{
    const int64_t *seed = fl_sched_entry(st, "sched/setup/seed", FL_STATE_I64, 1, err);
    if (!seed)
        return FL_E_INVALID;
    if (*seed != seed_of(u))
        return fl_error_set(err, FL_E_INVALID, "state: sched/setup/seed: scheduler is %s with seed %llu, the saved state has seed %llu",
                            s->vt->name, (unsigned long long)seed_of(u), (unsigned long long)*seed);
    const double *sm = fl_sched_entry(st, "sched/setup/sampler", FL_STATE_F64, 3, err);
    if (!sm)
        return FL_E_INVALID;
    double want[3] = { u->sampler.kind, u->sampler.eta, u->param };
    if (!same_f64(sm, want, 3))
        return fl_error_set(err, FL_E_INVALID,
                            "state: sched/setup/sampler: scheduler has sampler %s (eta %g) on %s output, the saved state has sampler %d (eta %g) on output %d",
                            fl_sampler_kind_name(u->sampler.kind), u->sampler.eta, fl_param_name(u->param),
                            (int)sm[0], sm[1], (int)sm[2]);
    const double *fin = fl_sched_entry(st, "sched/setup/final", FL_STATE_F64, 3, err);
    if (!fin)
        return FL_E_INVALID;
    double l[3];
    level_f64(u->final, l);
    if (!same_f64(fin, l, 3))
        return fl_error_set(err, FL_E_INVALID,
                            "state: sched/setup/final: scheduler's final level is (t %g, alpha %g, sigma %g), the saved state's is (t %g, alpha %g, sigma %g)",
                            l[0], l[1], l[2], fin[0], fin[1], fin[2]);
    const double *lv = fl_sched_entry(st, "sched/setup/levels", FL_STATE_F64, 3 * (int64_t)u->steps, err);
    if (!lv)
        return FL_E_INVALID;
    for (int i = 0; i < u->steps; i++) {
        level_f64(u->levels[i], l);
        if (!same_f64(lv + 3 * i, l, 3))
            return fl_error_set(err, FL_E_INVALID,
                                "state: sched/setup/levels: step %d of the scheduler is at (t %g, alpha %g, sigma %g), in the saved state at (t %g, alpha %g, sigma %g)",
                                i, l[0], l[1], l[2], lv[3 * i], lv[3 * i + 1], lv[3 * i + 2]);
    }
    return FL_OK;
}

fl_status fl_sched_check_base(const fl_scheduler *s, const fl_sched_setup *setup,
                              const fl_sched_dim *dims, int ndims, const fl_state *st,
                              int64_t *emitted, int64_t *iteration, fl_error *err)
{
    char found[TEXT_SHOW + 4], nm[NAME_LEN];
    fl_status rc;
    if (!text_is(st, "sched/kind", s->vt->name, found, err, &rc))
        return rc ? rc : fl_error_set(err, FL_E_INVALID, "state: sched/kind: scheduler is %s, the saved state is of %s",
                                      s->vt->name, found);
    fl_sched_dim d[MAX_DIMS];
    int nd = all_dims(s, setup, dims, ndims, d);
    for (int i = 0; i < nd; i++) {
        entry_name(nm, "sched/shape/", d[i].name);
        const int64_t *v = fl_sched_entry(st, nm, FL_STATE_I64, 1, err);
        if (!v)
            return FL_E_INVALID;
        if (*v != d[i].value)
            return fl_error_set(err, FL_E_INVALID, "state: %s: scheduler is %s with %s=%lld, the saved state has %s=%lld",
                                nm, s->vt->name, d[i].name, (long long)d[i].value, d[i].name, (long long)*v);
    }
    if ((rc = check_setup(s, setup, st, err)) ||
        (rc = fl_sched_get_int(st, "sched/emitted", 0, s->total, emitted, err)) ||
        (rc = fl_sched_get_int(st, "sched/iteration", 0, INT64_MAX, iteration, err)))
        return rc;
    return FL_OK;
}

fl_status fl_clip_save(const fl_clip *c, const char *prefix, fl_state *st, fl_error *err)
{
    char nm[NAME_LEN];
    fl_status rc;
    if ((rc = fl_state_put_i64(st, entry_name(nm, prefix, "step"), c->step, err)) ||
        (rc = fl_state_put_i64(st, entry_name(nm, prefix, "known"), c->known, err)) ||
        (rc = fl_state_put_i64(st, entry_name(nm, prefix, "chunk"), c->chunk, err)) ||
        (rc = fl_state_put(st, entry_name(nm, prefix, "id"), FL_STATE_I64, c->id, c->f, err)) ||
        (rc = fl_state_put(st, entry_name(nm, prefix, "cond"), FL_STATE_I32, c->cond, c->f, err)) ||
        (rc = fl_state_put(st, entry_name(nm, prefix, "x"), FL_STATE_F32, c->x, c->f * c->fs, err)) ||
        (rc = fl_state_put(st, entry_name(nm, prefix, "known_x"), FL_STATE_F32, c->known_x,
                           c->known * c->fs, err)))
        return rc;
    return FL_OK;
}

fl_status fl_clip_restore(fl_clip *c, const char *prefix, const fl_state *st, fl_error *err)
{
    FL_ASSERT(c->x); /* an initialised clip */
    char nm[NAME_LEN];
    int64_t step, known, chunk;
    fl_status rc;
    if ((rc = fl_sched_get_int(st, entry_name(nm, prefix, "step"), -1, c->setup->steps - 1, &step, err)) ||
        (rc = fl_sched_get_int(st, entry_name(nm, prefix, "known"), 0, c->f - 1, &known, err)) ||
        (rc = fl_sched_get_int(st, entry_name(nm, prefix, "chunk"), 0, INT64_MAX, &chunk, err)))
        return rc;
    const int64_t *id = fl_sched_entry(st, entry_name(nm, prefix, "id"), FL_STATE_I64, c->f, err);
    if (!id)
        return FL_E_INVALID;
    for (int j = 0; j < c->f; j++)
        if (!fl_sched_id_ok(id[j]))
            return fl_error_set(err, FL_E_INVALID, "state: %s: frame id %lld (frame %d) is out of range",
                                nm, (long long)id[j], j);
    const int32_t *cond = fl_sched_entry(st, entry_name(nm, prefix, "cond"), FL_STATE_I32, c->f, err);
    if (!cond)
        return FL_E_INVALID;
    if ((rc = fl_sched_check_conds(c->setup, nm, cond, c->f, err)))
        return rc;
    const float *x = fl_sched_entry(st, entry_name(nm, prefix, "x"), FL_STATE_F32, c->f * c->fs, err);
    if (!x)
        return FL_E_INVALID;
    const float *kx = fl_sched_entry(st, entry_name(nm, prefix, "known_x"), FL_STATE_F32, known * c->fs, err);
    if (!kx)
        return FL_E_INVALID;
    /* Everything checked: commit. */
    c->step = (int)step;
    c->known = (int)known;
    c->chunk = chunk;
    memcpy(c->id, id, (size_t)c->f * sizeof *c->id);
    memcpy(c->cond, cond, (size_t)c->f * sizeof *c->cond);
    memcpy(c->x, x, (size_t)(c->f * c->fs) * sizeof(float));
    if (known)
        memcpy(c->known_x, kx, (size_t)(known * c->fs) * sizeof(float));
    for (int j = 0; j < c->f; j++) {
        c->pos[j] = -1;
        c->write[j] = j >= c->known;
    }
    return FL_OK;
}
