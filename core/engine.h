/* The generation loop: plan windows, evaluate them, apply, emit, until done. */
#ifndef FL_ENGINE_H
#define FL_ENGINE_H

#include <stdint.h>

#include "core/denoiser.h"
#include "core/scheduler.h"

/* What the loop spent. frame_evals counts frames passed through the denoiser. */
typedef struct fl_engine_stats {
    int64_t iterations;
    int64_t windows;      /* denoiser window calls (eval only, not the oracle's) */
    int64_t frame_evals;
    int64_t emitted;
    size_t scratch_peak_bytes; /* most per-iteration denoiser scratch, in this process only */
} fl_engine_stats;

/* Per queue position: the relative noise-prediction error of the model against its exact
 * output, sum over iterations of |out - exact|^2 (num) and |exact|^2 (den), over the
 * frames that are written. Arrays of `positions` entries, owned by the engine caller
 * (fl_engine_trace_init/free). */
typedef struct fl_engine_trace {
    int positions;
    double *num, *den;
    int64_t *count;
} fl_engine_trace;

fl_status fl_engine_trace_init(fl_engine_trace *t, int positions, fl_error *err);
void fl_engine_trace_free(fl_engine_trace *t);
/* num[p] / den[p], or NaN where position p was never written. */
double fl_engine_trace_rel(const fl_engine_trace *t, int p);
/* The mean of fl_engine_trace_rel over the positions that were written; *count (may be
 * NULL) gets how many. NaN when none was. */
double fl_engine_trace_mean(const fl_engine_trace *t, int *count);

typedef struct fl_engine_opts {
    /* When non-zero, windows are evaluated in an order shuffled by this seed (a test and
     * debugging aid: the result must not change). */
    uint64_t shuffle_seed;
    /* When non-NULL and the model has eval_exact: accumulate per-position errors here. */
    fl_engine_trace *trace;
    /* Called after every iteration that emitted frames (progress output). */
    void (*progress)(void *ctx, const fl_scheduler *s, const fl_engine_stats *st);
    void *progress_ctx;
    /* Called after every iteration (after apply, so between iterations: the moment a
     * scheduler may be saved). A non-OK status stops the loop and is returned: this is how
     * checkpoints and signals (FL_E_INTERRUPTED) reach the loop. */
    fl_status (*after_iteration)(void *ctx, fl_scheduler *s, const fl_engine_stats *st,
                                 fl_error *err);
    void *after_ctx;
    /* Totals of an earlier part of the same run (resume): counting continues from them.
     * NULL: from zero. */
    const fl_engine_stats *start;
    /* Where the per-iteration scratch arena takes its blocks (NULL: the default allocator);
     * tests pass a counting one to see that steady-state iterations allocate nothing. */
    const fl_allocator *scratch_alloc;
} fl_engine_opts;

/* Runs s with d until s has emitted all its frames, handing each to sink. opts may be
 * NULL. stats (may be NULL) receives the totals. Nothing is kept beyond the scheduler's
 * own state, so memory does not grow with the number of frames. */
fl_status fl_engine_run(fl_scheduler *s, fl_denoiser *d, const fl_frame_sink *sink,
                        const fl_engine_opts *opts, fl_engine_stats *stats, fl_error *err);

#endif
