/* An experiment built from a configuration tree: the model, noise schedule, sampler and
 * scheduler, each created by name and validated by itself. This is the composition root:
 * the one place in core/ that names concrete modules (models/, schedulers/). */
#ifndef FL_EXPERIMENT_H
#define FL_EXPERIMENT_H

#include <stdint.h>

#include "core/config.h"
#include "core/denoiser.h"
#include "core/scheduler.h"
#include "core/timeline.h"
#include "eval/metric.h"

#define FL_EXPERIMENT_METRICS_MAX 16

typedef struct fl_experiment {
    const char *name;      /* points into the config tree */
    uint64_t seed;
    int64_t frames;
    fl_denoiser *model;
    fl_scheduler *scheduler;
    int steps;             /* S */
    fl_level *levels;      /* [steps], owned */
    int oracle;            /* record the per-position error against the exact model */
    int snapshot_every;    /* queue snapshots in the run file every K iterations (0: none) */
    /* Online metrics (eval/metric.h) computed on the emitted frames: names point into the
     * config tree, options are resolved. */
    fl_timeline timeline;  /* the condition of each output frame (prompts), owned */
    /* video written while the run goes (data/video.h): into the run directory */
    struct {
        int mp4, gif, png, fps, scale; /* scale 0: the longer side at least 256 pixels */
    } video;
    int nmetrics;
    fl_metric_spec metrics[FL_EXPERIMENT_METRICS_MAX];
    fl_metric_opts metric_opts[FL_EXPERIMENT_METRICS_MAX];
} fl_experiment;

/* Reads every key it knows from cfg (recording defaults, so cfg becomes the resolved
 * configuration), creates the modules, then refuses any key nobody read. On failure
 * nothing is left allocated and err names the key at fault. */
fl_status fl_experiment_build(fl_cfg *cfg, fl_experiment *ex, fl_error *err);
void fl_experiment_free(fl_experiment *ex);

/* NULL-terminated names of the registered modules of a kind: "model", "noise", "sampler",
 * "scheduler", "planner". NULL for an unknown kind. */
const char *const *fl_experiment_modules(const char *kind);

#endif
