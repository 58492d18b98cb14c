/* Sweep expansion: a script's base configuration times its axes and seeds gives points,
 * each a full resolved configuration with a stable run id (a hash of that configuration)
 * and its own run directory. */
#ifndef FL_SWEEP_H
#define FL_SWEEP_H

#include <stdint.h>

#include "core/config.h"
#include "core/script.h"

#define FL_RUN_ID_LEN 12 /* hex digits */

typedef struct fl_sweep_point {
    int64_t index;                  /* 0-based, in expansion order */
    fl_cfg *cfg;                    /* resolved: every default explicit (owned) */
    char id[FL_RUN_ID_LEN + 1];     /* hash of the resolved configuration's text */
    char *label;                    /* "scheduler.planner.partitions=4 seed=2" (owned) */
} fl_sweep_point;

typedef struct fl_sweep {
    char *name;
    int64_t count;
    fl_sweep_point *points;
} fl_sweep;

/* Expands script s (an experiment gives one point) with the overrides `sets` (nset
 * "key.path=value" strings, applied to every point after the axes, with the same
 * validation) into *out. Each point's configuration is resolved by building the
 * experiment (fl_experiment_build) and then freeing it, so an invalid point is an error
 * that names the point's label and the key. Two points with the same resolved
 * configuration are an error (the axes do not change anything). */
fl_status fl_sweep_expand(const fl_script *s, const char *const *sets, int nset, fl_sweep *out,
                          fl_error *err);
void fl_sweep_free(fl_sweep *sw);

/* The stable id of a resolved configuration: first FL_RUN_ID_LEN hex digits of a 64-bit
 * FNV-1a hash of fl_cfg_format(cfg, 0). Same configuration, same id, on every machine. */
void fl_run_id(const fl_cfg *cfg, char id[FL_RUN_ID_LEN + 1]);

#endif
