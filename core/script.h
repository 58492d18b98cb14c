/* The Lua host: runs an experiment or sweep script (Lua 5.4, sandboxed, text only, with
 * instruction and memory limits) and turns what it returns into configuration trees. The
 * Lua state is closed before fl_script_load returns; no Lua runs during generation. This
 * is the only file set that includes Lua headers. See docs/experiments.md. */
#ifndef FL_SCRIPT_H
#define FL_SCRIPT_H

#include <stdint.h>

#include "core/config.h"
#include "core/status.h"

typedef struct fl_script_limits {
    int64_t instructions; /* VM instructions before the script is stopped (0: default 1e8) */
    size_t memory;        /* bytes the Lua state may hold (0: default 256 MiB) */
    uint64_t random_seed; /* math.random's seed, so scripts are reproducible; the CLI passes
                             the --set seed when one is given, else 0 */
} fl_script_limits;

#define FL_SCRIPT_DEFAULT_INSTRUCTIONS 100000000
#define FL_SCRIPT_DEFAULT_MEMORY ((size_t)256 << 20)
#define FL_SCRIPT_MAX_INCLUDE_DEPTH 16 /* fl.include nesting */

/* One axis of a sweep: `nkeys` dotted key paths that vary together; `values` is a list
 * node of `count` items; with one key each item is the key's value, with several keys each
 * item is a list of nkeys values (a zipped axis). Values may be any config value: numbers,
 * strings, module tables (fl.planner.lookahead{...}). */
typedef struct fl_sweep_axis {
    int nkeys;
    char **keys;
    fl_cfg *values; /* owned by the script's tree `axes_tree` */
    int count;
} fl_sweep_axis;

typedef struct fl_script {
    char *path;   /* as given to fl_script_load */
    char *source; /* the main script's text, verbatim */
    /* the scripts it included (fl.include), each once, in the order first included:
     * paths as shown in messages (relative to the main script's directory), texts verbatim */
    int nincludes;
    char **include_paths, **include_texts;
    int is_sweep;
    /* The experiment's configuration (root table: name, seed, frames, model, noise, sampler,
     * scheduler, metrics, ...), unresolved: exactly what the script gave, as module tables
     * ({module = "gauss", window = 16, ...}). For a sweep: the base experiment, with the
     * sweep's name. */
    fl_cfg *base;
    /* sweep only: grid axes in declaration order (the last varies fastest), then seeds
     * (fastest of all); nseeds == 0 means the base seed only. */
    int naxes;
    fl_sweep_axis *axes;
    fl_cfg *axes_tree;
    int nseeds;
    int64_t *seeds;
} fl_script;

/* Runs the script at `path` with limits (NULL: defaults) and fills *out (zeroed first). The
 * script must return fl.experiment{...} or fl.sweep{...}; an experiment (a sweep's base) is
 * built once on a copy (fl_experiment_build), so bad options fail here. Errors (file
 * unreadable, Lua syntax or runtime error with file:line, sandbox violation, limit hit,
 * unknown module name, wrong option type) are FL_E_INVALID (FL_E_RANGE for an option out of
 * its range, FL_E_IO for an unreadable file, FL_E_NOMEM) with a message naming the file,
 * line or key. On error *out holds nothing to free (fl_script_free is still safe). */
fl_status fl_script_load(const char *path, const fl_script_limits *limits, fl_script *out,
                         fl_error *err);
/* The same from text; `name` stands for the file in messages and fl.include resolves
 * relative to `dir` (NULL: the current directory). */
fl_status fl_script_load_text(const char *name, const char *text, const char *dir,
                              const fl_script_limits *limits, fl_script *out, fl_error *err);
void fl_script_free(fl_script *s);

#endif
