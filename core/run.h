/* Running one point of an experiment into its run directory (RUN_DIR/run.h5 plus the
 * resumable state RUN_DIR/state.h5): fresh, skipped when complete, resumed when
 * interrupted, refused when the directory holds another configuration. */
#ifndef FL_RUN_H
#define FL_RUN_H

#include <signal.h>
#include <stdint.h>

#include "core/config.h"
#include "core/status.h"

typedef struct fl_run_opts {
    double checkpoint_seconds; /* state saved at most this often (0: every iteration) */
    int force;                 /* overwrite a directory holding another or a finished run */
    int quiet;                 /* no progress output */
    const char *git_commit;
    int git_dirty;
    const char *label;         /* prefix of progress lines (sweep point), may be NULL */
    /* Set asynchronously (signal handler) to the signal number to stop between
     * iterations: state saved, file closed, status "interrupted". May be NULL. */
    volatile sig_atomic_t *stop;
    /* Test hook: stop (as if by SIGKILL, nothing closed) after this many frames are
     * queued; 0: never. Set from the environment variable FIFOLAB_TEST_DIE_AFTER. */
    int64_t die_after;
    /* The scripts the main one included (fl_script's include_paths/texts), recorded in the
     * run file beside it; 0 and NULL: none. A resume takes them from the run file. */
    int nincludes;
    const char *const *include_paths, *const *include_texts;
} fl_run_opts;

typedef enum fl_run_outcome {
    FL_RUN_COMPLETE,     /* ran (or resumed) to the end */
    FL_RUN_SKIPPED,      /* already complete with this configuration */
    FL_RUN_INTERRUPTED   /* stopped by opts->stop; resumable */
} fl_run_outcome;

/* Runs configuration cfg (an unresolved or resolved tree; it is resolved in place) into
 * `dir`. script/script_path: the Lua source recorded in the run file (may be NULL). When
 * dir already holds a run: the same resolved configuration completes (resumes) it or
 * skips it when complete; another configuration is an error unless opts->force. */
fl_status fl_run_point(const fl_run_opts *opts, fl_cfg *cfg, const char *script,
                       const char *script_path, const char *dir, fl_run_outcome *outcome,
                       fl_error *err);

/* Continues the run in `dir` from its saved state (or from the start when it was killed
 * before its first state), with the configuration recorded in its run file. */
fl_status fl_run_resume(const fl_run_opts *opts, const char *dir, fl_run_outcome *outcome,
                        fl_error *err);

/* Status of the run in dir: "none" (no run file), "complete", "running", "interrupted",
 * "failed", "unreadable"; and its resolved configuration text (*resolved, malloc'd, may be
 * NULL when unreadable). */
const char *fl_run_status(const char *dir, char **resolved);

/* mkdir -p, then checks that path is a writable directory. */
fl_status fl_mkdirs(const char *path, fl_error *err);
/* fl_mkdirs of the directory holding file `path` (nothing for a bare file name). */
fl_status fl_mkdirs_parent(const char *path, fl_error *err);

#endif
