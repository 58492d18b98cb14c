/* cmocka suite for scheduler resume (save/restore in core/scheduler.h): a run cut anywhere,
 * saved, rebuilt and restored emits the same bits as the run never cut; foreign, incomplete
 * or corrupt states are refused by name and leave the scheduler as it was. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/state.h"
#include "models/gauss.h"
#include "schedulers/noise.h"
#include "schedulers/schedulers.h"

/* ---- configurations ---------------------------------------------------------------- */

enum { F = 4, CH = 2, SIZE = 8, FS = CH * SIZE * SIZE };

typedef struct cfg {
    const char *sched; /* "fifo", "full", "chunked" */
    const fl_planner_vt *planner;
    int n;
    fl_fifo_init init;
    int final_t0;      /* final = levels[0] (the VideoCrafter2 identity step) */
    int steps;         /* full / chunked */
    int context;       /* chunked */
    double eta;        /* DDIM */
    int64_t frames;
    uint64_t seed;
} cfg;

static const char *cfg_name(const cfg *c, char *buf, size_t cap)
{
    if (!strcmp(c->sched, "fifo"))
        snprintf(buf, cap, "fifo %s n=%d init=%s final=%s eta=%g", c->planner->name, c->n,
                 fl_fifo_init_name(c->init), c->final_t0 ? "t0" : "clean", c->eta);
    else
        snprintf(buf, cap, "%s S=%d context=%d eta=%g", c->sched, c->steps, c->context, c->eta);
    return buf;
}

static int steps_of(const cfg *c)
{
    return !strcmp(c->sched, "fifo") ? F * c->n : c->steps;
}

/* Conditions change every third frame, so a lost or shifted condition shows in the sink. */
static int32_t cond_of(void *ctx, int64_t frame)
{
    (void)ctx;
    return (int32_t)(100 + frame / 3);
}

static fl_denoiser *model(void)
{
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    o.window = F;
    o.channels = CH;
    o.height = o.width = SIZE;
    o.rho = 0.8;
    o.k0 = 3;
    o.mismatch = FL_GAUSS_OWN; /* levels within a window matter: the output depends on them */
    fl_denoiser *d = NULL;
    fl_error err;
    if (fl_gauss_new(&o, &d, &err))
        fail_msg("%s", fl_error_msg(&err));
    return d;
}

/* The video fifo's init = frames continues: GIVEN frames of a smooth pattern. A rebuild for
 * a restore is given other frames (given_other): the restored queue must not depend on
 * them, since a resumed run reads its source again only to build. */
enum { GIVEN = 12 };
static int given_other;

static void given_frames(float *x)
{
    for (int k = 0; k < GIVEN; k++)
        for (int e = 0; e < FS; e++)
            x[k * FS + e] = given_other ? -0.5f : (float)(0.8 * sin(0.3 * k + 0.05 * e));
}

/* The scheduler of c, with levels from the `beta` schedule (VideoCrafter2's sqrt_linear in
 * every test but one). */
static fl_scheduler *build_with(const fl_denoiser *d, const cfg *c, fl_beta_kind beta)
{
    int S = steps_of(c);
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, beta, 1000, 0.00085, 0.012, &err), FL_OK);
    fl_level *lv = malloc((size_t)S * sizeof *lv);
    assert_non_null(lv);
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_UNIFORM, S, lv, &err), FL_OK);
    fl_noise_free(&ns);
    fl_sched_setup s;
    memset(&s, 0, sizeof s);
    s.window = d->window;
    s.channels = d->channels;
    s.height = d->height;
    s.width = d->width;
    s.param = d->param;
    s.levels = lv;
    s.steps = S;
    s.final = c->final_t0 ? lv[0] : fl_level_clean();
    s.sampler = (fl_sampler){ FL_SAMPLER_DDIM, c->eta };
    fl_rng_init(&s.rng, c->seed);
    s.frames = c->frames;
    s.cond_of = cond_of;
    s.nconds = (int32_t)(100 + (c->frames + 1000) / 3); /* queue tails run past the last frame */
    fl_scheduler *sch = NULL;
    fl_status st;
    static float given[GIVEN * FS];
    if (!strcmp(c->sched, "fifo") && c->init == FL_FIFO_INIT_FRAMES) {
        given_frames(given);
        st = fl_fifo_new_given(&s, c->planner, c->n, &(fl_fifo_given){ given, GIVEN, "test video" }, &sch, &err);
    } else if (!strcmp(c->sched, "fifo"))
        st = fl_fifo_new(&s, c->planner, c->n, c->init, &sch, &err);
    else if (!strcmp(c->sched, "full"))
        st = fl_full_new(&s, &sch, &err);
    else
        st = fl_chunked_new(&s, c->context, &sch, &err);
    free(lv); /* the scheduler keeps its own copy */
    if (st)
        fail_msg("%s", fl_error_msg(&err));
    assert_non_null(sch->vt->save);
    assert_non_null(sch->vt->restore);
    return sch;
}

static fl_scheduler *build(const fl_denoiser *d, const cfg *c)
{
    return build_with(d, c, FL_BETA_SQRT_LINEAR);
}

/* ---- driving the loop ---------------------------------------------------------------- */

typedef struct out {
    float *x;     /* [frames][FS] */
    int32_t *cond;
    int64_t n, cap;
} out;

static void out_init(out *o, int64_t frames)
{
    o->x = calloc((size_t)(frames * FS), sizeof(float));
    o->cond = calloc((size_t)frames, sizeof(int32_t));
    assert_true(o->x && o->cond);
    o->n = 0;
    o->cap = frames;
}

static void out_free(out *o)
{
    free(o->x);
    free(o->cond);
}

static fl_status put(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    (void)err;
    out *o = ctx;
    assert_int_equal(index, o->n); /* in order, each once, continuing across a resume */
    assert_true(index < o->cap);
    memcpy(o->x + index * FS, frame, FS * sizeof(float));
    o->cond[index] = cond;
    o->n++;
    return FL_OK;
}

/* One iteration: plan, evaluate every window, apply. */
static void iterate(fl_scheduler *s, fl_denoiser *d, out *o)
{
    fl_window *w;
    int nw;
    fl_error err;
    fl_frame_sink sink = { put, o };
    if (s->vt->plan(s, &w, &nw, &err))
        fail_msg("plan: %s", fl_error_msg(&err));
    for (int k = 0; k < nw; k++)
        if (fl_denoiser_eval(d, &w[k].x, w[k].levels, w[k].cond, &w[k].out, NULL, &err))
            fail_msg("eval: %s", fl_error_msg(&err));
    if (s->vt->apply(s, &sink, &err))
        fail_msg("apply: %s", fl_error_msg(&err));
}

/* Runs until done or until `until` iterations of this call; returns how many it ran. */
static int64_t run_for(fl_scheduler *s, fl_denoiser *d, out *o, int64_t until)
{
    int64_t k = 0;
    while (!fl_scheduler_done(s) && k < until) {
        iterate(s, d, o);
        k++;
    }
    return k;
}

/* The uninterrupted reference: its frames and conditions, its number of iterations, and
 * the first iteration count after which a frame had been emitted. */
typedef struct ref {
    out o;
    int64_t iters, first_emit;
} ref;

static void reference(fl_denoiser *d, const cfg *c, ref *r)
{
    fl_scheduler *s = build(d, c);
    out_init(&r->o, c->frames);
    r->iters = 0;
    r->first_emit = -1;
    while (!fl_scheduler_done(s)) {
        iterate(s, d, &r->o);
        r->iters++;
        if (r->first_emit < 0 && r->o.n > 0)
            r->first_emit = r->iters;
        assert_int_equal(s->iteration, r->iters); /* every iteration counts, clip phase too */
    }
    assert_int_equal(r->o.n, c->frames);
    fl_scheduler_free(s);
}

static void same_output(const ref *r, const out *o, const cfg *c, const char *how, int64_t cut)
{
    char nm[160];
    if (o->n != r->o.n)
        fail_msg("%s, %s %lld: %lld frames, expected %lld", cfg_name(c, nm, sizeof nm), how,
                 (long long)cut, (long long)o->n, (long long)r->o.n);
    for (int64_t k = 0; k < o->n; k++)
        if (memcmp(o->x + k * FS, r->o.x + k * FS, FS * sizeof(float)) || o->cond[k] != r->o.cond[k])
            fail_msg("%s, %s %lld: frame %lld differs from the uninterrupted run",
                     cfg_name(c, nm, sizeof nm), how, (long long)cut, (long long)k);
}

static fl_state *save(const fl_scheduler *s)
{
    fl_state *st = fl_state_new();
    assert_non_null(st);
    fl_error err;
    if (s->vt->save(s, st, &err))
        fail_msg("save: %s", fl_error_msg(&err));
    /* every entry is the scheduler's own */
    for (size_t i = 0; i < fl_state_len(st); i++)
        assert_int_equal(strncmp(fl_state_entry(st, i, NULL, NULL, NULL), "sched/", 6), 0);
    return st;
}

static fl_scheduler *rebuild(fl_denoiser *d, const cfg *c, const fl_state *st)
{
    given_other = 1;
    fl_scheduler *s = build(d, c);
    given_other = 0;
    fl_error err;
    if (s->vt->restore(s, st, &err))
        fail_msg("restore: %s", fl_error_msg(&err));
    return s;
}

/* Same entries, same order, same bits. */
static void same_state(const fl_state *a, const fl_state *b)
{
    assert_int_equal(fl_state_len(a), fl_state_len(b));
    for (size_t i = 0; i < fl_state_len(a); i++) {
        fl_state_type ta, tb;
        const void *da, *db;
        int64_t ca, cb;
        const char *na = fl_state_entry(a, i, &ta, &da, &ca), *nb = fl_state_entry(b, i, &tb, &db, &cb);
        assert_string_equal(na, nb);
        assert_int_equal(ta, tb);
        assert_int_equal(ca, cb);
        if (memcmp(da, db, (size_t)ca * fl_state_type_size(ta)))
            fail_msg("state entry %s differs after save -> restore -> save", na);
    }
}

/* ---- the configurations under test --------------------------------------------------- */

#define FIFO(pl, n, init, t0, eta) { "fifo", &fl_planner_##pl, n, FL_FIFO_INIT_##init, t0, 0, 0, eta, 13, 7 }

static cfg all_cfgs[64];
static int ncfg;

static void make_cfgs(void)
{
    ncfg = 0;
    const fl_planner_vt *pl[2] = { &fl_planner_partition, &fl_planner_lookahead };
    for (int p = 0; p < 2; p++)
        for (int init = 0; init < 3; init++) /* clip, staircase, frames */
            for (int t0 = 0; t0 < 2; t0++)
                for (int n = 1; n <= 2; n++)
                    all_cfgs[ncfg++] = (cfg){ "fifo", pl[p], n, (fl_fifo_init)init, t0, 0, 0, 1.0, 13, 7 };
    all_cfgs[ncfg++] = (cfg)FIFO(lookahead, 2, CLIP, 0, 0.0); /* deterministic sampler */
    all_cfgs[ncfg++] = (cfg){ "full", NULL, 0, 0, 0, 6, 0, 1.0, 3, 7 };
    all_cfgs[ncfg++] = (cfg){ "full", NULL, 0, 0, 1, 6, 0, 0.0, 4, 7 };
    all_cfgs[ncfg++] = (cfg){ "chunked", NULL, 0, 0, 0, 5, 2, 1.0, 9, 7 };
    all_cfgs[ncfg++] = (cfg){ "chunked", NULL, 0, 0, 0, 3, 1, 0.0, 10, 7 };
}

/* ---- resume is bit-identical --------------------------------------------------------- */

/* Cut points: before anything, inside and at the end of the first clip (fifo's base clip,
 * chunked's first chunk), mid-chunk and between chunks, right after the first emission,
 * halfway, the last iteration before done, and done. */
static int cut_points(const cfg *c, const ref *r, int64_t *cuts)
{
    int S = steps_of(c), n = 0;
    int64_t want[] = { 0, 1, S / 2, S - 1, S, S + 1, S + S / 2, 2 * S, r->first_emit,
                       r->first_emit + 1, r->iters / 2, r->iters - 1, r->iters };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int64_t k = want[i];
        int dup = k < 0 || k > r->iters;
        for (int j = 0; j < n && !dup; j++)
            dup = cuts[j] == k;
        if (!dup)
            cuts[n++] = k;
    }
    return n;
}

/* Run to the cut, save, free, build afresh, restore, run to the end: every frame (and its
 * condition) is the reference's, bit for bit. */
static void test_resume_at_cuts(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    make_cfgs();
    int tested = 0;
    for (int i = 0; i < ncfg; i++) {
        const cfg *c = &all_cfgs[i];
        ref r;
        reference(d, c, &r);
        int64_t cuts[16];
        int nc = cut_points(c, &r, cuts);
        for (int k = 0; k < nc; k++) {
            out o;
            out_init(&o, c->frames);
            fl_scheduler *s = build(d, c);
            assert_int_equal(run_for(s, d, &o, cuts[k]), cuts[k]);
            fl_state *st = save(s);
            int64_t emitted = s->emitted, iteration = s->iteration;
            fl_scheduler_free(s);
            s = rebuild(d, c, st);
            assert_int_equal(s->emitted, emitted);
            assert_int_equal(s->iteration, iteration);
            assert_int_equal(s->total, c->frames);
            int64_t rest = run_for(s, d, &o, INT64_MAX);
            assert_int_equal(cuts[k] + rest, r.iters); /* no iteration lost or repeated */
            assert_int_equal(s->iteration, r.iters);
            same_output(&r, &o, c, "cut at iteration", cuts[k]);
            fl_scheduler_free(s);
            fl_state_free(st);
            out_free(&o);
            tested++;
        }
        out_free(&r.o);
    }
    printf("# %d configurations, %d cuts resumed bit-identically\n", ncfg, tested);
    fl_denoiser_free(d);
}

/* The windows two schedulers plan are the same: frames (bits), levels, conditions, queue
 * positions and write flags. */
static void same_windows(fl_scheduler *a, fl_scheduler *b, fl_window **wa, int *na, fl_window **wbp,
                         const cfg *c, int64_t it)
{
    fl_window *wb;
    int nb;
    fl_error err;
    char nm[160];
    if (a->vt->plan(a, wa, na, &err) || b->vt->plan(b, &wb, &nb, &err))
        fail_msg("plan: %s", fl_error_msg(&err));
    assert_int_equal(*na, nb);
    for (int k = 0; k < nb; k++) {
        const fl_window *x = &(*wa)[k], *y = &wb[k];
        int64_t n = x->x.shape[0];
        assert_int_equal(n, y->x.shape[0]);
        if (memcmp(fl_tensor_data(&x->x), fl_tensor_data(&y->x), (size_t)(n * FS) * sizeof(float)) ||
            memcmp(x->levels, y->levels, (size_t)n * sizeof *x->levels) ||
            memcmp(x->cond, y->cond, (size_t)n * sizeof *x->cond) ||
            memcmp(x->pos, y->pos, (size_t)n * sizeof *x->pos) ||
            memcmp(x->write, y->write, (size_t)n))
            fail_msg("%s: window %d of iteration %lld differs after a restore", cfg_name(c, nm, sizeof nm),
                     k, (long long)it);
    }
    *wbp = wb;
}

/* Save, free, rebuild and restore at EVERY iteration of one run, in lockstep with an
 * uninterrupted one: every iteration plans the same windows (frames, levels, conditions,
 * positions, write flags), the frames emitted are the same bits, and saving the restored
 * scheduler gives back the state it was restored from. */
static void test_resume_every_iteration(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    make_cfgs();
    for (int i = 0; i < ncfg; i++) {
        const cfg *c = &all_cfgs[i];
        out oa, ob;
        out_init(&oa, c->frames);
        out_init(&ob, c->frames);
        fl_scheduler *a = build(d, c), *b = build(d, c);
        int64_t it = 0;
        for (;;) {
            fl_state *st = save(b);
            fl_scheduler_free(b);
            b = rebuild(d, c, st);
            fl_state *again = save(b);
            same_state(st, again);
            fl_state_free(again);
            fl_state_free(st);
            assert_int_equal(fl_scheduler_done(a), fl_scheduler_done(b));
            assert_int_equal(a->emitted, b->emitted);
            assert_int_equal(a->iteration, b->iteration);
            if (fl_scheduler_done(b))
                break;
            fl_window *w, *wb;
            int nw;
            same_windows(a, b, &w, &nw, &wb, c, it);
            fl_error err;
            fl_frame_sink sa = { put, &oa }, sb = { put, &ob };
            /* b's windows equal a's, so one evaluation serves both */
            for (int k = 0; k < nw; k++) {
                if (fl_denoiser_eval(d, &w[k].x, w[k].levels, w[k].cond, &w[k].out, NULL, &err))
                    fail_msg("eval: %s", fl_error_msg(&err));
                memcpy(fl_tensor_data(&wb[k].out), fl_tensor_data(&w[k].out),
                       (size_t)(w[k].x.shape[0] * FS) * sizeof(float));
            }
            if (a->vt->apply(a, &sa, &err) || b->vt->apply(b, &sb, &err))
                fail_msg("apply: %s", fl_error_msg(&err));
            it++;
        }
        ref r = { oa, it, 0 };
        same_output(&r, &ob, c, "restored at every iteration up to", it);
        assert_int_equal(oa.n, c->frames);
        fl_scheduler_free(a);
        fl_scheduler_free(b);
        out_free(&oa);
        out_free(&ob);
    }
    fl_denoiser_free(d);
}

/* restore also rewinds a scheduler that has already run (its ring head elsewhere, its base
 * clip done, its chunk later): from a state saved at iteration k into the same scheduler
 * run on to the end, the rest of the run repeats bit for bit. */
static void test_rewind_used(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    make_cfgs();
    for (int i = 0; i < ncfg; i++) {
        const cfg *c = &all_cfgs[i];
        ref r;
        reference(d, c, &r);
        for (int64_t k = 0; k < r.iters; k += 3) {
            out o;
            out_init(&o, c->frames);
            fl_scheduler *s = build(d, c);
            run_for(s, d, &o, k);
            fl_state *st = save(s);
            int64_t emitted = o.n;
            run_for(s, d, &o, k % 2 ? INT64_MAX : 5); /* on to the end, or a little */
            fl_error err;
            if (s->vt->restore(s, st, &err))
                fail_msg("restore: %s", fl_error_msg(&err));
            o.n = emitted; /* the sink rewinds with it */
            assert_int_equal(run_for(s, d, &o, INT64_MAX), r.iters - k);
            same_output(&r, &o, c, "rewound to iteration", k);
            fl_scheduler_free(s);
            fl_state_free(st);
            out_free(&o);
        }
        out_free(&r.o);
    }
    fl_denoiser_free(d);
}

/* ---- refusals ------------------------------------------------------------------------ */

/* Restore must fail with FL_E_INVALID and a message naming `entry` (and containing `also`,
 * when given); the scheduler must be untouched: run to the end, it gives the reference. */
static void refused_by(fl_scheduler *s, fl_denoiser *d, const cfg *c, const fl_state *st,
                       const char *entry, const char *also, const ref *r)
{
    fl_error err;
    memset(&err, 0, sizeof err);
    char nm[160], want[160];
    fl_status rc = s->vt->restore(s, st, &err);
    snprintf(want, sizeof want, "state: %s:", entry);
    if (rc != FL_E_INVALID || !strstr(fl_error_msg(&err), want) || (also && !strstr(fl_error_msg(&err), also)))
        fail_msg("%s: restore gave %d \"%s\", expected FL_E_INVALID naming %s%s%s", cfg_name(c, nm, sizeof nm),
                 (int)rc, fl_error_msg(&err), entry, also ? " and saying " : "", also ? also : "");
    if (r) {
        out o;
        out_init(&o, c->frames);
        run_for(s, d, &o, INT64_MAX);
        same_output(r, &o, c, "after a refused restore, iteration", 0);
        out_free(&o);
    }
    fl_scheduler_free(s);
}

static void refused(fl_denoiser *d, const cfg *c, const fl_state *st, const char *entry,
                    const char *also, const ref *r)
{
    refused_by(build(d, c), d, c, st, entry, also, r);
}

static fl_state *saved_at(fl_denoiser *d, const cfg *c, int64_t iters)
{
    out o;
    out_init(&o, c->frames);
    fl_scheduler *s = build(d, c);
    run_for(s, d, &o, iters);
    fl_state *st = save(s);
    fl_scheduler_free(s);
    out_free(&o);
    return st;
}

/* A state from another configuration is refused, naming the first entry that differs. */
static void test_other_configuration(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    cfg base = FIFO(lookahead, 2, CLIP, 0, 1.0);
    ref r;
    reference(d, &base, &r);
    /* saved in the queue phase (past the base clip of S = 8 iterations) */
    fl_state *st = saved_at(d, &base, 11);
    struct {
        cfg c;
        const char *entry, *also;
    } other[] = {
        { { "chunked", NULL, 0, 0, 0, 8, 2, 1.0, 13, 7 }, "sched/kind", "scheduler is chunked, the saved state is of fifo" },
        { { "full", NULL, 0, 0, 0, 8, 0, 1.0, 4, 7 }, "sched/kind", "scheduler is full" },
        { FIFO(lookahead, 1, CLIP, 0, 1.0), "sched/shape/S", "scheduler is fifo with S=4, the saved state has S=8" },
        { FIFO(partition, 2, CLIP, 0, 1.0), "sched/shape/c", "scheduler is fifo with c=0, the saved state has c=2" },
        { FIFO(lookahead, 2, STAIRCASE, 0, 1.0), "sched/init", "scheduler has init staircase, the saved state has init clip" },
        { FIFO(lookahead, 2, CLIP, 1, 1.0), "sched/setup/final", NULL },
        { FIFO(lookahead, 2, CLIP, 0, 0.0), "sched/setup/sampler", "eta 0" },
        { { "fifo", &fl_planner_lookahead, 2, FL_FIFO_INIT_CLIP, 0, 0, 0, 1.0, 14, 7 }, "sched/shape/frames",
          "frames=14, the saved state has frames=13" },
        { { "fifo", &fl_planner_lookahead, 2, FL_FIFO_INIT_CLIP, 0, 0, 0, 1.0, 13, 8 }, "sched/setup/seed",
          "seed 8, the saved state has seed 7" },
    };
    for (size_t i = 0; i < sizeof other / sizeof *other; i++)
        refused(d, &other[i].c, st, other[i].entry, other[i].also, NULL);
    /* the same S from another noise schedule */
    refused_by(build_with(d, &base, FL_BETA_LINEAR), d, &base, st, "sched/setup/levels",
               "of the scheduler is at (t 143", NULL);
    /* a planner of the same shape but another name */
    fl_state_put(st, "sched/planner", FL_STATE_U8, "front", 5, NULL);
    refused(d, &base, st, "sched/planner", "planner lookahead, the saved state has planner front", &r);
    fl_state_free(st);
    /* chunked with another context length; full saved into chunked */
    cfg ch = { "chunked", NULL, 0, 0, 0, 5, 2, 1.0, 9, 7 }, ch3 = ch, fu = { "full", NULL, 0, 0, 0, 5, 0, 1.0, 4, 7 };
    ch3.context = 3;
    st = saved_at(d, &ch, 7);
    refused(d, &ch3, st, "sched/shape/context", "context=3, the saved state has context=2", NULL);
    fl_state_free(st);
    st = saved_at(d, &fu, 2);
    refused(d, &ch, st, "sched/kind", "scheduler is chunked, the saved state is of full", NULL);
    fl_state_free(st);
    /* not a scheduler's state at all */
    st = fl_state_new();
    fl_state_put_i64(st, "metrics/count", 3, NULL);
    refused(d, &base, st, "sched/kind", "missing", &r);
    fl_state_free(st);
    out_free(&r.o);
    fl_denoiser_free(d);
}

/* A copy of st without entry `skip` (or with it replaced by `count` zeros of type t). */
static fl_state *copy_state(const fl_state *st, size_t skip, int replace, fl_state_type t, int64_t count)
{
    fl_state *c = fl_state_new();
    assert_non_null(c);
    for (size_t i = 0; i < fl_state_len(st); i++) {
        fl_state_type et;
        const void *data;
        int64_t n;
        const char *name = fl_state_entry(st, i, &et, &data, &n);
        if (i == skip && !replace)
            continue;
        if (i == skip) {
            void *z = calloc((size_t)count + 1, 8);
            assert_int_equal(fl_state_put(c, name, t, z, count, NULL), FL_OK);
            free(z);
            continue;
        }
        assert_int_equal(fl_state_put(c, name, et, data, n, NULL), FL_OK);
    }
    return c;
}

/* Every saved entry is needed: without any one of them, or with one of another type or
 * length, restore fails naming it and leaves the scheduler fresh. In the clip phase and in
 * the queue phase of fifo, and mid-run for full and chunked. */
static void test_incomplete_state(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    struct {
        cfg c;
        int64_t at;
    } cases[] = {
        { FIFO(lookahead, 2, CLIP, 0, 1.0), 3 },      /* inside the base clip */
        { FIFO(lookahead, 2, CLIP, 0, 1.0), 12 },     /* on the diagonal */
        { FIFO(partition, 1, STAIRCASE, 1, 1.0), 6 },
        { { "full", NULL, 0, 0, 0, 6, 0, 1.0, 3, 7 }, 2 },
        { { "chunked", NULL, 0, 0, 0, 5, 2, 1.0, 9, 7 }, 7 }, /* second chunk: known frames */
    };
    int checked = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const cfg *c = &cases[i].c;
        ref r;
        reference(d, c, &r);
        fl_state *st = saved_at(d, c, cases[i].at);
        for (size_t e = 0; e < fl_state_len(st); e++) {
            fl_state_type t;
            int64_t n;
            const char *name = fl_state_entry(st, e, &t, NULL, &n);
            fl_state *missing = copy_state(st, e, 0, t, 0);
            refused(d, c, missing, name, "missing", &r);
            fl_state_free(missing);
            /* another length (texts are checked by content: one byte more is another text) */
            fl_state *longer = copy_state(st, e, 1, t, n + 1);
            refused(d, c, longer, name, NULL, &r);
            fl_state_free(longer);
            fl_state *typed = copy_state(st, e, 1, t == FL_STATE_F64 ? FL_STATE_I64 : FL_STATE_F64, n);
            refused(d, c, typed, name, NULL, &r);
            fl_state_free(typed);
            checked++;
        }
        fl_state_free(st);
        out_free(&r.o);
    }
    printf("# %d entries each refused when missing, longer or of another type\n", checked);
    fl_denoiser_free(d);
}

static void put_i64_at(fl_state *st, const char *name, int64_t v, int64_t at)
{
    fl_state_type t;
    int64_t n;
    const void *p = fl_state_find(st, name, &t, &n);
    assert_non_null(p);
    assert_true(at < n);
    void *copy = malloc((size_t)n * fl_state_type_size(t));
    memcpy(copy, p, (size_t)n * fl_state_type_size(t));
    if (t == FL_STATE_I64)
        ((int64_t *)copy)[at] = v;
    else
        ((int32_t *)copy)[at] = (int32_t)v;
    assert_int_equal(fl_state_put(st, name, t, copy, n, NULL), FL_OK);
    free(copy);
}

/* Values that would index out of bounds or trip an assertion are refused by name (a
 * corrupt state file must not crash the resume), and the scheduler stays fresh. */
static void test_corrupt_values(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    cfg fifo = FIFO(lookahead, 2, CLIP, 0, 1.0), ch = { "chunked", NULL, 0, 0, 0, 5, 2, 1.0, 9, 7 };
    cfg stair = FIFO(partition, 2, STAIRCASE, 0, 1.0);
    ref rf, rc, rs;
    reference(d, &fifo, &rf);
    reference(d, &ch, &rc);
    reference(d, &stair, &rs);
    struct {
        const cfg *c;
        const ref *r;
        int64_t at;
        const char *entry;
        int64_t index, value;
        const char *also;
    } bad[] = {
        { &fifo, &rf, 12, "sched/step", 5, 8, "position 5 at step 8" },
        { &fifo, &rf, 12, "sched/step", 0, -2, NULL },
        { &fifo, &rf, 12, "sched/id", 3, (int64_t)1 << 40, "out of range" },
        { &fifo, &rf, 12, "sched/next_id", 0, -1, "expected 0 .. 21, found -1" },
        { &fifo, &rf, 12, "sched/emitted", 0, 14, "expected 0 .. 13, found 14" },
        { &fifo, &rf, 12, "sched/iteration", 0, -5, NULL },
        { &fifo, &rf, 12, "sched/in_clip", 0, 2, NULL },
        { &stair, &rs, 3, "sched/in_clip", 0, 1, "expected 0 .. 0, found 1" }, /* no base clip */
        { &fifo, &rf, 3, "sched/clip/step", 0, 8, "expected -1 .. 7, found 8" },
        { &fifo, &rf, 3, "sched/clip/known", 0, 4, NULL },
        { &fifo, &rf, 3, "sched/clip/chunk", 0, -1, NULL },
        { &fifo, &rf, 3, "sched/clip/id", 2, -((int64_t)1 << 40), "out of range" },
        { &ch, &rc, 7, "sched/clip/known", 0, -1, NULL },
        { &ch, &rc, 7, "sched/clip/step", 0, -2, NULL },
        /* a condition the timeline cannot give (conditions here are 100 + frame / 3) */
        { &fifo, &rf, 12, "sched/cond", 4, 1000, "condition 1000 at 4, expected 0 .. " },
        { &fifo, &rf, 12, "sched/cond", 0, -1, "condition -1 at 0" },
        { &fifo, &rf, 3, "sched/clip/cond", 1, 5000, "condition 5000 at 1" },
        { &ch, &rc, 7, "sched/clip/cond", 0, -7, NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fl_state *st = saved_at(d, bad[i].c, bad[i].at);
        put_i64_at(st, bad[i].entry, bad[i].value, bad[i].index);
        refused(d, bad[i].c, st, bad[i].entry, bad[i].also, bad[i].r);
        fl_state_free(st);
    }
    out_free(&rf.o);
    out_free(&rc.o);
    out_free(&rs.o);
    fl_denoiser_free(d);
}

/* What a state holds, for the record: fifo in each phase, full, chunked. */
static void test_entries(void **state)
{
    (void)state;
    fl_denoiser *d = model();
    cfg fifo = FIFO(lookahead, 2, CLIP, 0, 1.0);
    fl_state *clip = saved_at(d, &fifo, 2), *queue = saved_at(d, &fifo, 10);
    assert_non_null(fl_state_find(clip, "sched/clip/x", NULL, NULL));
    assert_null(fl_state_find(clip, "sched/queue", NULL, NULL)); /* not filled yet */
    assert_null(fl_state_find(queue, "sched/clip/x", NULL, NULL)); /* finished, never read again */
    int64_t n;
    fl_state_type t;
    assert_non_null(fl_state_find(queue, "sched/queue", &t, &n));
    assert_int_equal(t, FL_STATE_F32);
    assert_int_equal(n, 10 * FS); /* Q = c + S = 2 + 8 positions */
    int64_t v;
    assert_int_equal(fl_state_get_i64(queue, "sched/iteration", &v, NULL), FL_OK);
    assert_int_equal(v, 10);
    assert_int_equal(fl_state_get_i64(queue, "sched/shape/Q", &v, NULL), FL_OK);
    assert_int_equal(v, 10);
    /* the queue is saved head first: position c is the next to be emitted, at step 0 */
    const int32_t *step = fl_state_find(queue, "sched/step", NULL, NULL);
    const int64_t *id = fl_state_find(queue, "sched/id", NULL, NULL);
    assert_int_equal(step[2], 0);
    assert_int_equal(step[9], 7);
    assert_int_equal(id[3], id[2] + 1);
    /* fl_fifo_queue (queue snapshots) gives the same head-first view; none during the base
     * clip, none for another scheduler */
    {
        out o;
        out_init(&o, fifo.frames);
        fl_scheduler *s = build(d, &fifo);
        float qx[10 * FS];
        int32_t qs[10];
        fl_error err;
        run_for(s, d, &o, 2);
        assert_int_equal(fl_fifo_queue(s, qx, qs, &err), FL_E_INVALID);
        assert_non_null(strstr(fl_error_msg(&err), "base clip"));
        run_for(s, d, &o, 8);
        assert_int_equal(fl_fifo_queue(s, qx, qs, &err), FL_OK);
        assert_memory_equal(qx, fl_state_find(queue, "sched/queue", NULL, NULL), sizeof qx);
        assert_memory_equal(qs, step, sizeof qs);
        fl_scheduler_free(s);
        cfg fu = { "full", NULL, 0, 0, 0, 6, 0, 1.0, 3, 7 };
        s = build(d, &fu);
        assert_int_equal(fl_fifo_queue(s, qx, qs, &err), FL_E_INVALID);
        fl_scheduler_free(s);
        out_free(&o);
    }
    for (int pass = 0; pass < 2; pass++) {
        const fl_state *st = pass ? queue : clip;
        printf("# fifo (lookahead, n=2, %s):", pass ? "diagonal" : "base clip");
        for (size_t i = 0; i < fl_state_len(st); i++) {
            const char *name = fl_state_entry(st, i, &t, NULL, &n);
            printf(" %s[%lld %s]", name + 6, (long long)n, fl_state_type_name(t));
        }
        printf("\n");
    }
    fl_state_free(clip);
    fl_state_free(queue);
    fl_denoiser_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_at_cuts),
        cmocka_unit_test(test_resume_every_iteration),
        cmocka_unit_test(test_rewind_used),
        cmocka_unit_test(test_other_configuration),
        cmocka_unit_test(test_incomplete_state),
        cmocka_unit_test(test_corrupt_values),
        cmocka_unit_test(test_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
