/* The generation loop of core/engine.h. Knows the scheduler and denoiser only through
 * their interfaces. */
#include "core/engine.h"

#include <math.h>
#include <stdlib.h>

#include "core/alloc.h"

void fl_scheduler_free(fl_scheduler *s)
{
    if (s && s->vt->free)
        s->vt->free(s);
}

fl_status fl_engine_trace_init(fl_engine_trace *t, int positions, fl_error *err)
{
    t->positions = positions;
    t->num = calloc((size_t)positions + 1, sizeof *t->num);
    t->den = calloc((size_t)positions + 1, sizeof *t->den);
    t->count = calloc((size_t)positions + 1, sizeof *t->count);
    if (!t->num || !t->den || !t->count) {
        fl_engine_trace_free(t);
        return fl_error_set(err, FL_E_NOMEM, "engine: trace of %d positions", positions);
    }
    return FL_OK;
}

void fl_engine_trace_free(fl_engine_trace *t)
{
    free(t->num);
    free(t->den);
    free(t->count);
    t->num = t->den = NULL;
    t->count = NULL;
    t->positions = 0;
}

double fl_engine_trace_rel(const fl_engine_trace *t, int p)
{
    if (p < 0 || p >= t->positions || t->count[p] == 0 || !(t->den[p] > 0))
        return NAN;
    return t->num[p] / t->den[p];
}

double fl_engine_trace_mean(const fl_engine_trace *t, int *count)
{
    double sum = 0;
    int n = 0;
    for (int p = 0; p < t->positions; p++)
        if (t->count[p]) {
            sum += fl_engine_trace_rel(t, p);
            n++;
        }
    if (count)
        *count = n;
    return n ? sum / n : NAN;
}

/* splitmix64: the shuffle only has to be reproducible, not good. */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static fl_status trace_window(fl_denoiser *d, const fl_window *w, fl_tensor *exact,
                              fl_engine_trace *tr, fl_arena *scratch, fl_error *err)
{
    int64_t n = w->x.shape[0];
    fl_tensor ex = *exact;
    ex.shape[0] = n; /* a prefix view of the [window, C, H, W] buffer: same strides */
    fl_status st = fl_denoiser_eval_exact(d, &w->x, w->levels, w->cond, &ex, scratch, err);
    if (st)
        return st;
    int64_t fs = w->x.shape[1] * w->x.shape[2] * w->x.shape[3];
    const float *o = fl_tensor_data(&w->out), *e = fl_tensor_data(&ex);
    for (int64_t j = 0; j < n; j++) {
        int p = w->pos[j];
        if (!w->write[j] || p < 0 || p >= tr->positions)
            continue;
        double num = 0, den = 0;
        for (int64_t i = 0; i < fs; i++) {
            double a = o[j * fs + i], b = e[j * fs + i];
            num += (a - b) * (a - b);
            den += b * b;
        }
        tr->num[p] += num;
        tr->den[p] += den;
        tr->count[p]++;
    }
    return FL_OK;
}

fl_status fl_engine_run(fl_scheduler *s, fl_denoiser *d, const fl_frame_sink *sink,
                        const fl_engine_opts *opts, fl_engine_stats *stats, fl_error *err)
{
    static const fl_engine_opts none = { 0 };
    if (!opts)
        opts = &none;
    fl_engine_stats st = opts->start ? *opts->start : (fl_engine_stats){ 0 };
    fl_status rc = FL_OK;
    int *order = NULL;
    int order_cap = 0;
    fl_tensor exact = FL_TENSOR_NULL;
    fl_engine_trace *tr = opts->trace;
    /* The denoiser's per-call scratch: rewound after each window, reset after every
     * iteration; once the first iteration has sized its one block, evaluation asks the
     * allocator for nothing. */
    fl_arena scratch;
    fl_arena_init(&scratch, opts->scratch_alloc, 0);
    if (tr && !d->vt->eval_exact) {
        rc = fl_error_set(err, FL_E_UNSUPPORTED,
                          "engine: the oracle trace needs the exact output, which model %s cannot give",
                          d->vt->name);
        goto done;
    }
    if (tr) {
        int64_t shape[4] = { d->window, d->channels, d->height, d->width };
        if ((rc = fl_tensor_empty(&exact, FL_F32, 4, shape, NULL, err)))
            goto done;
    }
    uint64_t shuffle = opts->shuffle_seed;
    while (!fl_scheduler_done(s)) {
        fl_window *w = NULL;
        int nw = 0;
        if ((rc = s->vt->plan(s, &w, &nw, err)))
            goto done;
        if (nw > order_cap) {
            int *o = realloc(order, (size_t)nw * sizeof *order);
            if (!o) {
                rc = fl_error_set(err, FL_E_NOMEM, "engine: window order of %d", nw);
                goto done;
            }
            order = o;
            order_cap = nw;
        }
        for (int i = 0; i < nw; i++)
            order[i] = i;
        if (opts->shuffle_seed)
            for (int i = nw - 1; i > 0; i--) {
                int j = (int)(mix(&shuffle) % (uint64_t)(i + 1)), t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        for (int k = 0; k < nw; k++) {
            fl_window *win = &w[order[k]];
            /* a window's scratch is dead once it is evaluated: the peak is one window's */
            fl_arena_mark m = fl_arena_get_mark(&scratch);
            if ((rc = fl_denoiser_eval(d, &win->x, win->levels, win->cond, &win->out, &scratch, err)))
                goto done;
            st.windows++;
            st.frame_evals += win->x.shape[0];
            if (tr && (rc = trace_window(d, win, &exact, tr, &scratch, err)))
                goto done;
            fl_arena_rewind(&scratch, m);
        }
        if (scratch.peak_bytes > st.scratch_peak_bytes)
            st.scratch_peak_bytes = scratch.peak_bytes;
        fl_arena_reset(&scratch);
        int64_t before = s->emitted;
        if ((rc = s->vt->apply(s, sink, err)))
            goto done;
        st.iterations++;
        st.emitted = s->emitted;
        if (opts->progress && s->emitted != before)
            opts->progress(opts->progress_ctx, s, &st);
        if (opts->after_iteration && (rc = opts->after_iteration(opts->after_ctx, s, &st, err)))
            goto done;
    }
done:
    fl_arena_free(&scratch);
    free(order);
    fl_tensor_release(&exact);
    if (stats)
        *stats = st;
    return rc;
}
