/* The run file (RUN_DIR/run.h5, DESIGN.md "The run file"): created with its provenance,
 * configuration and schedule, then written by one writer thread while generation runs,
 * readable during the run by SWMR readers (h5py.File(p, "r", swmr=True)). Layout:
 * docs/runfile.md. Also hands generation states to the writer thread, which saves them
 * (state.h5, write-then-rename) only after every frame before them is on disk. */
#ifndef FL_RUNFILE_H
#define FL_RUNFILE_H

#include <stdint.h>

#include "core/denoiser.h"
#include "core/state.h"
#include "core/status.h"

#define FL_RUNFILE_FORMAT_VERSION 1

typedef struct fl_runfile fl_runfile;

/* What the file records before generation starts. Strings are copied; NULL is allowed
 * where noted. */
typedef struct fl_runfile_info {
    const char *name;        /* experiment name */
    const char *run_id;      /* the stable id of the resolved configuration */
    const char *script;      /* the Lua source verbatim (NULL: none, e.g. generate) */
    const char *script_path; /* NULL: none */
    /* the scripts the main one included: /config/includes/<i>, verbatim, attribute "path" */
    int nincludes;
    const char *const *include_paths, *const *include_texts;
    const char *resolved;    /* the resolved configuration, as fl_cfg_format prints it */
    const char *git_commit;
    int git_dirty;
    uint64_t seed;
    int channels, height, width;
    int64_t frames;          /* frames the run will emit */
    const char *scheduler;   /* its name */
    int window, steps, partitions;
    /* Per queue position (positions == 0: no queue): level and step index (-1: finished). */
    int positions, context;
    const fl_level *levels;
    const int *step_index;
    /* Queue snapshots (/trace/queue): every `snapshot_every` iterations, 0: none. */
    int snapshot_every;
    /* > 0: /trace/position_error etc. have this many positions (the oracle trace). */
    int trace_positions;
    /* The condition texts (prompts): /conditions/text[i] is condition id i. */
    int nconditions;
    char *const *conditions;
    int64_t created;         /* unix seconds; 0: now (resume passes the original) */
    int64_t resumed;         /* times this run was resumed */
} fl_runfile_info;

typedef enum fl_runfile_per {
    FL_RUNFILE_PER_FRAME,     /* value i belongs to frame offset + i */
    FL_RUNFILE_PER_WINDOW,    /* value i to frames [offset + i*stride, offset + i*stride + window) */
    FL_RUNFILE_PER_ITERATION  /* value i to iteration i */
} fl_runfile_per;

/* Creates `path` (which must not exist: callers decide about overwriting) with every
 * group, dataset and attribute that does not grow; status "running". */
fl_status fl_runfile_create(fl_runfile **out, const char *path, const fl_runfile_info *info,
                            fl_error *err);
/* Declares a series /metrics/<name> (before fl_runfile_start: SWMR cannot create objects).
 * Returns its id (>= 0) in *id. */
fl_status fl_runfile_series(fl_runfile *rf, const char *name, const char *unit,
                            const char *description, fl_runfile_per kind, int window,
                            int stride, int offset, int *id, fl_error *err);
/* Turns on SWMR writing and starts the writer thread. */
fl_status fl_runfile_start(fl_runfile *rf, fl_error *err);

/* Queue work for the writer thread (copies the data). Frames must come in index order
 * 0, 1, 2, ...; a series' values in order. Returns the writer's error if it failed earlier
 * (disk full, ...): generation should stop. Blocks while too much is queued. */
fl_status fl_runfile_frame(fl_runfile *rf, int64_t index, const float *frame, int32_t cond,
                           fl_error *err);
fl_status fl_runfile_value(fl_runfile *rf, int series, double value, fl_error *err);
/* The oracle trace so far (arrays of trace_positions), written at the next flush. */
fl_status fl_runfile_trace(fl_runfile *rf, const double *num, const double *den,
                           const int64_t *count, fl_error *err);
/* A queue snapshot at `iteration`: `positions` frames (C*H*W floats each, head first) and
 * their step indices. */
fl_status fl_runfile_snapshot(fl_runfile *rf, int64_t iteration, const float *frames,
                              const int32_t *step_index, fl_error *err);
/* Takes ownership of st: once every frame queued before it is written and flushed, the
 * writer saves it to state_path (write-then-rename) with attrs run_id and run file. */
fl_status fl_runfile_checkpoint(fl_runfile *rf, fl_state *st, const char *state_path,
                                fl_error *err);
/* Waits until everything queued so far is written and flushed. */
fl_status fl_runfile_sync(fl_runfile *rf, fl_error *err);

/* Renames the file being written (the writer goes on writing it) and syncs its directory:
 * how a resume's rebuilt file replaces the old one. */
fl_status fl_runfile_rename(fl_runfile *rf, const char *path, fl_error *err);

/* Totals recorded as root attributes when the run file is closed. */
typedef struct fl_runfile_totals {
    int64_t emitted, iterations, windows, frame_evals;
    double seconds;
} fl_runfile_totals;
/* Drains the queue, stops the thread, closes the file and records status ("complete",
 * "interrupted", "failed") and totals. Frees rf (also on error). */
fl_status fl_runfile_close(fl_runfile *rf, const char *status, const fl_runfile_totals *t,
                           fl_error *err);

/* Free space the writer keeps on the file system: it stops with an error rather than
 * let a write fail (docs/runfile.md). */
#define FL_RUNFILE_RESERVE_BYTES ((uint64_t)64 << 20)

/* Bytes the writer queue may hold before fl_runfile_frame blocks. */
#define FL_RUNFILE_QUEUE_BYTES ((size_t)256 << 20)

/* ---- reading ------------------------------------------------------------------------- */

/* The run file named by a command-line argument: RUN_DIR/run.h5 for a directory, else the
 * argument itself. */
void fl_runfile_path(const char *arg, char *buf, size_t n);

/* Opens a run file for reading (SWMR read, so a file being written or left by a killed
 * writer opens too). */
fl_status fl_runfile_open_read(const char *path, int64_t *file_id, fl_error *err);
void fl_runfile_close_read(int64_t file_id);

#endif
