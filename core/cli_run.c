/* `fifolab run`, `resume` and `plan`: scripts to sweeps to run directories, one point per
 * run (all, one by --index, or this MPI rank's share), with clean stops on SIGINT/SIGTERM. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef FL_HAVE_MPI
#include <mpi.h>
#endif

#include "core/cli.h"
#include "core/run.h"
#include "core/script.h"
#include "core/sweep.h"

const char *fl_cli_git_commit = "unknown";
int fl_cli_git_dirty = 0;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A file-size limit (as a full disk) must come back as a write error, not kill us. */
    signal(SIGXFSZ, SIG_IGN);
}

typedef struct run_args {
    const char *script, *out;
    const char **sets;
    int nset;
    int64_t index; /* -1: all */
    int force, quiet, count;
    double checkpoint_seconds;
} run_args;

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: fifolab run SCRIPT.lua [--set KEY=VALUE]... [--out DIR] [--index I]\n"
            "                  [--force] [--checkpoint-seconds S] [--quiet]\n"
            "\n"
            "Runs the experiment or sweep that SCRIPT.lua returns (see docs/experiments.md).\n"
            "An experiment runs into DIR (default runs/<name>); a sweep runs each point into\n"
            "DIR/<name>/<run id> (DIR default runs). A point whose directory holds the same\n"
            "configuration is skipped when complete and resumed when interrupted; a directory\n"
            "holding another configuration is an error unless --force.\n"
            "\n"
            "  --set KEY=VALUE         override a key of every point (same validation as the script)\n"
            "  --out DIR               where runs go (see above)\n"
            "  --index I               run only point I (0-based; see 'fifolab plan'), e.g. from a\n"
            "                          Slurm job array: --index $SLURM_ARRAY_TASK_ID\n"
            "  --force                 overwrite runs of another configuration, rerun complete ones\n"
            "  --checkpoint-seconds S  save the resumable state at most every S seconds (default 5;\n"
            "                          0: every iteration)\n"
            "  --quiet, -q             no progress output\n"
            "\n"
            "Under mpirun (built with MPI) rank r of K runs points r, r+K, r+2K, ...\n"
            "SIGINT/SIGTERM stop cleanly: state saved, status 'interrupted', exit 130/143;\n"
            "'fifolab resume DIR' or the same 'fifolab run' continues. Exit 0 when every point\n"
            "completed or was skipped, 1 when one failed, 2 on bad usage.\n");
}

static void plan_usage(FILE *f)
{
    fprintf(f,
            "usage: fifolab plan SCRIPT.lua [--set KEY=VALUE]... [--out DIR] [--count]\n"
            "\n"
            "Lists the points of the experiment or sweep: index, run id, status of its run\n"
            "directory (new, complete, interrupted, running, failed, other-config), directory\n"
            "and the values that vary. --count prints only the number of points (for\n"
            "sbatch --array=0-$((N-1))).\n");
}

static void resume_usage(FILE *f)
{
    fprintf(f,
            "usage: fifolab resume RUN_DIR [--checkpoint-seconds S] [--quiet]\n"
            "\n"
            "Continues the interrupted (or killed) run in RUN_DIR from its saved state with the\n"
            "configuration recorded in RUN_DIR/run.h5. The frames are bit-identical to those of\n"
            "an uninterrupted run. A complete run is left as it is.\n");
}

/* Parses the shared options; returns -1 on success, else the exit status (0 after
 * --help). */
static int parse(int argc, char **argv, run_args *a, int is_plan, const char *cmd)
{
    memset(a, 0, sizeof *a);
    a->index = -1;
    a->checkpoint_seconds = 5;
    a->sets = calloc((size_t)argc, sizeof *a->sets);
    if (!a->sets) {
        fprintf(stderr, "fifolab %s: out of memory\n", cmd);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            is_plan ? plan_usage(stdout) : run_usage(stdout);
            return 0;
        } else if (!strcmp(s, "--set") && more) {
            a->sets[a->nset++] = argv[++i];
        } else if (!strncmp(s, "--set=", 6)) {
            a->sets[a->nset++] = s + 6;
        } else if (!strcmp(s, "--out") && more) {
            a->out = argv[++i];
        } else if (!is_plan && !strcmp(s, "--index") && more) {
            long long v;
            if (fl_cli_int(cmd, "--index", argv[++i], 0, LLONG_MAX, &v))
                return 2;
            a->index = v;
        } else if (!is_plan && !strcmp(s, "--checkpoint-seconds") && more) {
            if (fl_cli_number(cmd, "--checkpoint-seconds", argv[++i], 0, &a->checkpoint_seconds))
                return 2;
        } else if (!is_plan && !strcmp(s, "--force")) {
            a->force = 1;
        } else if (!is_plan && (!strcmp(s, "--quiet") || !strcmp(s, "-q"))) {
            a->quiet = 1;
        } else if (is_plan && !strcmp(s, "--count")) {
            a->count = 1;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "fifolab %s: unknown or incomplete option \"%s\" (see 'fifolab %s --help')\n", cmd, s, cmd);
            return 2;
        } else if (!a->script) {
            a->script = s;
        } else {
            fprintf(stderr, "fifolab %s: unexpected argument \"%s\" (one script only)\n", cmd, s);
            return 2;
        }
    }
    if (!a->script) {
        fprintf(stderr, "fifolab %s: no script given\n", cmd);
        is_plan ? plan_usage(stderr) : run_usage(stderr);
        return 2;
    }
    return -1;
}

/* math.random's seed: the seed given with --set, else 0 (docs/experiments.md). */
static uint64_t random_seed(const run_args *a)
{
    uint64_t seed = 0;
    for (int i = 0; i < a->nset; i++)
        if (!strncmp(a->sets[i], "seed=", 5))
            seed = strtoull(a->sets[i] + 5, NULL, 10);
    return seed;
}

/* Loads and expands; returns -1 on success, else the exit status. */
static int load(const run_args *a, const char *cmd, fl_script *sc, fl_sweep *sw)
{
    fl_error err;
    fl_error_clear(&err);
    fl_script_limits lim = { 0 };
    lim.random_seed = random_seed(a);
    memset(sw, 0, sizeof *sw);
    if (fl_script_load(a->script, &lim, sc, &err)) {
        fprintf(stderr, "fifolab %s: %s\n", cmd, fl_error_msg(&err));
        return err.code == FL_E_IO ? 1 : 2;
    }
    if (fl_sweep_expand(sc, a->sets, a->nset, sw, &err)) {
        fprintf(stderr, "fifolab %s: %s\n", cmd, fl_error_msg(&err));
        fl_script_free(sc);
        return 2;
    }
    return -1;
}

static void point_dir(const run_args *a, const fl_script *sc, const fl_sweep *sw,
                      const fl_sweep_point *p, char *buf, size_t n)
{
    if (!sc->is_sweep)
        snprintf(buf, n, "%s%s%s", a->out ? a->out : "runs", a->out ? "" : "/", a->out ? "" : sw->name);
    else
        snprintf(buf, n, "%s/%s/%s", a->out ? a->out : "runs", sw->name, p->id);
}

int fl_cmd_plan(int argc, char **argv)
{
    run_args a;
    int rc = parse(argc, argv, &a, 1, "plan");
    if (rc >= 0) {
        free(a.sets);
        return rc;
    }
    fl_script sc;
    fl_sweep sw;
    if ((rc = load(&a, "plan", &sc, &sw)) >= 0) {
        free(a.sets);
        return rc;
    }
    if (a.count) {
        printf("%lld\n", (long long)sw.count);
    } else {
        printf("%s: %lld point%s (%s)\n", sw.name, (long long)sw.count, sw.count == 1 ? "" : "s",
               sc.is_sweep ? "sweep" : "experiment");
        printf("%-6s %-12s %-12s %s\n", "index", "id", "status", "directory  [varying keys]");
        for (int64_t i = 0; i < sw.count; i++) {
            char dir[4096];
            point_dir(&a, &sc, &sw, &sw.points[i], dir, sizeof dir);
            char *resolved = NULL;
            const char *status = fl_run_status(dir, &resolved);
            if (resolved) {
                size_t n = fl_cfg_format(sw.points[i].cfg, 0, NULL, 0);
                char *mine = malloc(n + 1);
                if (mine) {
                    fl_cfg_format(sw.points[i].cfg, 0, mine, n + 1);
                    if (strcmp(mine, resolved))
                        status = "other-config";
                }
                free(mine);
                free(resolved);
            }
            if (!strcmp(status, "none"))
                status = "new";
            printf("%-6lld %-12s %-12s %s%s%s%s\n", (long long)i, sw.points[i].id, status, dir,
                   sw.points[i].label && *sw.points[i].label ? "  [" : "",
                   sw.points[i].label ? sw.points[i].label : "",
                   sw.points[i].label && *sw.points[i].label ? "]" : "");
        }
    }
    fl_sweep_free(&sw);
    fl_script_free(&sc);
    free(a.sets);
    return 0;
}

/* The MPI rank and size when started by mpirun (and built with MPI), else 0 and 1. */
static int mpi_active;

static void mpi_begin(int *rank, int *size)
{
    *rank = 0;
    *size = 1;
#ifdef FL_HAVE_MPI
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK")) {
        MPI_Init(NULL, NULL);
        MPI_Comm_rank(MPI_COMM_WORLD, rank);
        MPI_Comm_size(MPI_COMM_WORLD, size);
        mpi_active = 1;
    }
#endif
}

/* Combines the ranks' failure counts (every rank returns the same exit status). */
static int mpi_end(int failed)
{
#ifdef FL_HAVE_MPI
    if (mpi_active) {
        int total = 0;
        MPI_Allreduce(&failed, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Finalize();
        return total;
    }
#endif
    return failed;
}

int fl_cmd_run(int argc, char **argv)
{
    run_args a;
    int rc = parse(argc, argv, &a, 0, "run");
    if (rc >= 0) {
        free(a.sets);
        return rc;
    }
    fl_script sc;
    fl_sweep sw;
    if ((rc = load(&a, "run", &sc, &sw)) >= 0) {
        free(a.sets);
        return rc;
    }
    if (a.index >= sw.count) {
        fprintf(stderr, "fifolab run: --index %lld: the %s has %lld point%s (0..%lld)\n", (long long)a.index,
                sc.is_sweep ? "sweep" : "experiment", (long long)sw.count, sw.count == 1 ? "" : "s",
                (long long)sw.count - 1);
        fl_sweep_free(&sw);
        fl_script_free(&sc);
        free(a.sets);
        return 2;
    }
    install_signals();
    int rank, size;
    mpi_begin(&rank, &size);
    const char *die = getenv("FIFOLAB_TEST_DIE_AFTER");
    fl_run_opts o = { .checkpoint_seconds = a.checkpoint_seconds, .force = a.force, .quiet = a.quiet,
                      .git_commit = fl_cli_git_commit, .git_dirty = fl_cli_git_dirty, .stop = &stop_signal,
                      .die_after = die ? strtoll(die, NULL, 10) : 0, .nincludes = sc.nincludes,
                      .include_paths = (const char *const *)sc.include_paths,
                      .include_texts = (const char *const *)sc.include_texts };
    int failed = 0, done = 0, skipped = 0, interrupted = 0;
    for (int64_t i = a.index >= 0 ? a.index : rank; i < sw.count && !stop_signal;
         i += a.index >= 0 ? sw.count : size) {
        fl_sweep_point *p = &sw.points[i];
        char dir[4096], label[600];
        point_dir(&a, &sc, &sw, p, dir, sizeof dir);
        if (size > 1)
            snprintf(label, sizeof label, "[rank %d] point %lld/%lld", rank, (long long)i, (long long)sw.count);
        else
            snprintf(label, sizeof label, "point %lld/%lld", (long long)i, (long long)sw.count);
        o.label = sw.count > 1 || size > 1 ? label : NULL;
        fl_error err;
        fl_error_clear(&err);
        fl_run_outcome out = FL_RUN_COMPLETE;
        if (fl_run_point(&o, p->cfg, sc.source, sc.path, dir, &out, &err)) {
            fprintf(stderr, "fifolab run: %s%s%s\n", o.label ? o.label : "", o.label ? ": " : "", fl_error_msg(&err));
            failed++;
            continue;
        }
        done += out == FL_RUN_COMPLETE;
        skipped += out == FL_RUN_SKIPPED;
        interrupted += out == FL_RUN_INTERRUPTED;
    }
    if (sw.count > 1 && !a.quiet)
        printf("%s%s: %d run, %d skipped (complete), %d failed%s\n", size > 1 ? "[rank] " : "", sw.name, done,
               skipped, failed, interrupted ? ", interrupted" : "");
    int total_failed = mpi_end(failed);
    fl_sweep_free(&sw);
    fl_script_free(&sc);
    free(a.sets);
    if (stop_signal) {
        fprintf(stderr, "fifolab run: interrupted by signal %d; %s\n", (int)stop_signal,
                total_failed ? "a point failed (see above); the others can be resumed with the same command"
                             : "state saved, resume with the same command");
        return 128 + stop_signal;
    }
    return total_failed ? 1 : 0;
}

int fl_cmd_resume(int argc, char **argv)
{
    const char *dir = NULL;
    run_args a;
    memset(&a, 0, sizeof a);
    a.checkpoint_seconds = 5;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            resume_usage(stdout);
            return 0;
        } else if (!strcmp(s, "--quiet") || !strcmp(s, "-q")) {
            a.quiet = 1;
        } else if (!strcmp(s, "--checkpoint-seconds") && i + 1 < argc) {
            if (fl_cli_number("resume", "--checkpoint-seconds", argv[++i], 0, &a.checkpoint_seconds))
                return 2;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "fifolab resume: unknown or incomplete option \"%s\"\n", s);
            return 2;
        } else if (!dir) {
            dir = s;
        } else {
            fprintf(stderr, "fifolab resume: unexpected argument \"%s\" (one RUN_DIR only)\n", s);
            return 2;
        }
    }
    if (!dir) {
        resume_usage(stderr);
        return 2;
    }
    install_signals();
    const char *die = getenv("FIFOLAB_TEST_DIE_AFTER");
    fl_run_opts o = { .checkpoint_seconds = a.checkpoint_seconds, .quiet = a.quiet,
                      .git_commit = fl_cli_git_commit, .git_dirty = fl_cli_git_dirty, .stop = &stop_signal,
                      .die_after = die ? strtoll(die, NULL, 10) : 0 };
    fl_error err;
    fl_error_clear(&err);
    fl_run_outcome out;
    if (fl_run_resume(&o, dir, &out, &err)) {
        fprintf(stderr, "fifolab resume: %s\n", fl_error_msg(&err));
        return 1;
    }
    if (out == FL_RUN_INTERRUPTED) {
        fprintf(stderr, "fifolab resume: interrupted by signal %d; state saved\n", (int)stop_signal);
        return 128 + stop_signal;
    }
    return 0;
}
