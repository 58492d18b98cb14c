/* cmocka suite for core/run.c (fl_run_point, fl_run_resume, fl_run_status; docs/runfile.md):
 * a tiny gauss experiment (FIFO + lookahead, online metrics, oracle trace, queue snapshots,
 * a prompt timeline) run to completion and read back with HDF5; two runs of one
 * configuration are bit-identical; runs killed (SIGKILL, the die_after hook, in a forked
 * child) at several frames or stopped cleanly (opts.stop) after every iteration are resumed
 * to files bit-identical to the uninterrupted run (frames, conditions, metrics, schedule,
 * trace, snapshots, totals); a complete run is skipped without touching its file; another
 * configuration is refused naming the directory unless force; a second process on a run
 * directory is refused (flock); errors name the path; online video is whole after a resume.
 * Everything lives under one mkdtemp directory, removed at the end. */
#define _XOPEN_SOURCE 700 /* nftw (tests/tmpdir.h) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/config.h"
#include "core/h5io.h"
#include "core/run.h"
#include "core/runfile.h"
#include "core/script.h"
#include "data/colour.h"
#include "data/ffmpeg.h"
#include "data/video_read.h"
#include "tests/tmpdir.h"

static char tmp[256];

/* ---- the experiment ------------------------------------------------------------------------ */

enum { FRAMES = 24, CH = 2, SZ = 8, FS = CH * SZ * SZ, SWITCH_AT = 9 };

/* The script of the experiment with `frames` frames and seed `seed`; `extra` is more keys. */
static char *script_text(int frames, int seed, const char *extra)
{
    char *t = malloc(4096);
    assert_non_null(t);
    int n = snprintf(t, 4096,
                     "local fl = require 'fifolab'\n"
                     "return fl.experiment { name = 'h4', seed = %d, frames = %d,\n"
                     "  model = fl.model.gauss { window = 4, channels = %d, size = {%d, %d}, rho = 0.9,\n"
                     "                           drift = {0.5, 0.25} },\n"
                     "  noise = fl.noise.sqrt_linear { timesteps = 1000, beta = {0.00085, 0.012} },\n"
                     "  sampler = fl.sampler.ddim { eta = 1.0 },\n"
                     "  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 },\n"
                     "                                  init = 'clip' },\n"
                     "  metrics = { 'adjacent', { module = 'flicker', window = 4 }, 'stats' },\n"
                     "  oracle = true, snapshots = 3,\n"
                     "  timeline = { {'a', %d}, {'b'} },\n"
                     "  %s }\n",
                     seed, frames, CH, SZ, SZ, SWITCH_AT, extra ? extra : "");
    assert_true(n > 0 && n < 4096);
    return t;
}

typedef struct exp_t {
    fl_script s;
    char *text;
} exp_t;

static void exp_load(exp_t *e, int frames, int seed, const char *extra)
{
    e->text = script_text(frames, seed, extra);
    fl_error err;
    if (fl_script_load_text("h4.lua", e->text, tmp, NULL, &e->s, &err))
        fail_msg("%s", fl_error_msg(&err));
}

static void exp_free(exp_t *e)
{
    fl_script_free(&e->s);
    free(e->text);
}

static fl_run_opts quiet_opts(void)
{
    fl_run_opts o;
    memset(&o, 0, sizeof o);
    o.quiet = 1;
    o.git_commit = "h4test";
    o.checkpoint_seconds = 0; /* a state after every iteration */
    return o;
}

/* fl_run_point of e into tmp/name (a fresh copy of the configuration). */
static fl_status run_into(const exp_t *e, const char *name, const fl_run_opts *o, fl_run_outcome *out,
                          fl_error *err)
{
    char d[512];
    snprintf(d, sizeof d, "%s/%s", tmp, name);
    fl_cfg *cfg = fl_cfg_copy(e->s.base, NULL);
    assert_non_null(cfg);
    *out = (fl_run_outcome)-1;
    fl_error_clear(err);
    fl_status st = fl_run_point(o, cfg, e->s.source, "h4.lua", d, out, err);
    fl_cfg_free(cfg);
    return st;
}

static void run_ok(const exp_t *e, const char *name, fl_run_outcome want)
{
    fl_run_opts o = quiet_opts();
    fl_run_outcome out;
    fl_error err;
    if (run_into(e, name, &o, &out, &err))
        fail_msg("run into %s: %s", name, fl_error_msg(&err));
    assert_int_equal(out, want);
}

static const char *path_of(char *buf, size_t n, const char *name, const char *file)
{
    int k = file ? snprintf(buf, n, "%s/%s/%s", tmp, name, file) : snprintf(buf, n, "%s/%s", tmp, name);
    assert_true(k > 0 && (size_t)k < n);
    return buf;
}

static int exists(const char *name, const char *file)
{
    char p[600];
    return access(path_of(p, sizeof p, name, file), F_OK) == 0;
}

static const char *status_of(const char *name)
{
    char p[600];
    return fl_run_status(path_of(p, sizeof p, name, NULL), NULL);
}

/* The whole file, to compare before and after. */
static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("%s: %s", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* ---- reading run files ----------------------------------------------------------------------- */

typedef struct names {
    char **v;
    size_t n, cap;
} names;

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *p)
{
    (void)info;
    names *ns = p;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0)
        return -1;
    int is_dset = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_dset)
        return 0;
    if (ns->n == ns->cap) {
        ns->cap = ns->cap ? 2 * ns->cap : 32;
        ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
        if (!ns->v)
            return -1;
    }
    ns->v[ns->n++] = strdup(name);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
}

static hid_t open_run(const char *name)
{
    char p[600];
    int64_t f;
    fl_error err;
    if (fl_runfile_open_read(path_of(p, sizeof p, name, "run.h5"), &f, &err))
        fail_msg("%s", fl_error_msg(&err));
    return (hid_t)f;
}

static names datasets(hid_t f)
{
    names ns = { 0 };
    fl_h5_lock();
    herr_t rc = H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, collect, &ns);
    fl_h5_unlock();
    assert_true(rc >= 0);
    qsort(ns.v, ns.n, sizeof *ns.v, cmp_str);
    return ns;
}

/* Compares dataset `name` of files a and b: shape, type and every byte (variable-length
 * strings by their text). 0 when equal, else a message in why. (No cmocka assertion
 * while the HDF5 lock is held: a failure would leave it locked.) */
static int dataset_differs(hid_t a, hid_t b, const char *name, char *why, size_t wn)
{
    int differs = 0, failed = 0;
    fl_h5_lock();
    hid_t d[2] = { H5Dopen2(a, name, H5P_DEFAULT), H5Dopen2(b, name, H5P_DEFAULT) };
    hid_t sp[2] = { -1, -1 }, ty[2] = { -1, -1 };
    if (d[0] < 0 || d[1] < 0) {
        snprintf(why, wn, "%s: missing in %s", name, d[0] < 0 ? "the first" : "the second");
        differs = 1;
        goto out;
    }
    for (int k = 0; k < 2; k++) {
        sp[k] = H5Dget_space(d[k]);
        ty[k] = H5Dget_type(d[k]);
    }
    hsize_t dims[2][8] = { { 0 } };
    int rank[2] = { H5Sget_simple_extent_dims(sp[0], dims[0], NULL), H5Sget_simple_extent_dims(sp[1], dims[1], NULL) };
    hssize_t np = H5Sget_simple_extent_npoints(sp[0]);
    if (rank[0] != rank[1] || memcmp(dims[0], dims[1], sizeof dims[0]) || H5Tequal(ty[0], ty[1]) <= 0) {
        snprintf(why, wn, "%s: shape or type differs (%lld vs %lld rows)", name,
                 rank[0] > 0 ? (long long)dims[0][0] : -1LL, rank[1] > 0 ? (long long)dims[1][0] : -1LL);
        differs = 1;
    } else if (H5Tis_variable_str(ty[0]) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ty[0]));
        char **s[2];
        for (int k = 0; k < 2; k++) {
            s[k] = calloc((size_t)(np > 0 ? np : 1), sizeof(char *));
            if (!s[k] || H5Dread(d[k], mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s[k]) < 0)
                failed = 1;
        }
        for (hssize_t i = 0; i < np && !differs && !failed; i++)
            if (strcmp(s[0][i] ? s[0][i] : "", s[1][i] ? s[1][i] : "")) {
                snprintf(why, wn, "%s[%lld]: \"%.80s\" vs \"%.80s\"", name, (long long)i, s[0][i], s[1][i]);
                differs = 1;
            }
        for (int k = 0; k < 2; k++) {
            if (s[k] && !failed)
                H5Dvlen_reclaim(mt, sp[k], H5P_DEFAULT, s[k]);
            free(s[k]);
        }
        H5Tclose(mt);
    } else {
        hid_t mt = H5Tget_native_type(ty[0], H5T_DIR_DEFAULT);
        size_t es = H5Tget_size(mt), bytes = (size_t)(np > 0 ? np : 0) * es;
        uint8_t *buf[2] = { malloc(bytes + 1), malloc(bytes + 1) };
        for (int k = 0; k < 2; k++)
            if (!buf[k] || (np > 0 && H5Dread(d[k], mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf[k]) < 0))
                failed = 1;
        if (!failed && bytes && memcmp(buf[0], buf[1], bytes)) {
            size_t i = 0;
            while (buf[0][i] == buf[1][i])
                i++;
            snprintf(why, wn, "%s: element %zu of %lld differs", name, i / es, (long long)np);
            differs = 1;
        }
        free(buf[0]);
        free(buf[1]);
        H5Tclose(mt);
    }
out:
    for (int k = 0; k < 2; k++) {
        if (sp[k] >= 0)
            H5Sclose(sp[k]);
        if (ty[k] >= 0)
            H5Tclose(ty[k]);
        if (d[k] >= 0)
            H5Dclose(d[k]);
    }
    fl_h5_unlock();
    if (failed)
        fail_msg("%s: cannot read", name);
    return differs;
}

static int64_t attr_i64(hid_t f, const char *name)
{
    int64_t v;
    fl_error err;
    if (fl_h5_get_attr_i64(f, name, &v, &err))
        fail_msg("%s", fl_error_msg(&err));
    return v;
}

/* Runs a and b hold the same data: the same datasets, every one bit-identical except the
 * wall times (metrics/iteration_seconds), and the same totals and identity. `only`: compare
 * just this dataset. 0 when the same; else the first difference in why. */
static int runs_differ(const char *a, const char *b, const char *only, char *why, size_t wn)
{
    hid_t fa = open_run(a), fb = open_run(b);
    int differs = 0;
    names na = datasets(fa), nb = datasets(fb);
    if (!only) {
        for (size_t i = 0; i < na.n || i < nb.n; i++)
            if (i >= na.n || i >= nb.n || strcmp(na.v[i], nb.v[i])) {
                snprintf(why, wn, "the datasets differ: %s vs %s", i < na.n ? na.v[i] : "(none)",
                         i < nb.n ? nb.v[i] : "(none)");
                differs = 1;
                break;
            }
        for (size_t i = 0; i < na.n && !differs; i++)
            if (strcmp(na.v[i], "metrics/iteration_seconds"))
                differs = dataset_differs(fa, fb, na.v[i], why, wn);
        static const char *const ints[] = { "frames_total", "frames_emitted", "iterations", "window_calls",
                                            "frame_evals", "seed", "format_version" };
        for (size_t i = 0; i < sizeof ints / sizeof ints[0] && !differs; i++)
            if (attr_i64(fa, ints[i]) != attr_i64(fb, ints[i])) {
                snprintf(why, wn, "attribute %s: %lld vs %lld", ints[i], (long long)attr_i64(fa, ints[i]),
                         (long long)attr_i64(fb, ints[i]));
                differs = 1;
            }
        static const char *const strs[] = { "status", "run_id", "name" };
        for (size_t i = 0; i < sizeof strs / sizeof strs[0] && !differs; i++) {
            char x[128], y[128];
            fl_error err;
            assert_int_equal(fl_h5_get_attr_str(fa, strs[i], x, sizeof x, &err), FL_OK);
            assert_int_equal(fl_h5_get_attr_str(fb, strs[i], y, sizeof y, &err), FL_OK);
            if (strcmp(x, y)) {
                snprintf(why, wn, "attribute %s: %s vs %s", strs[i], x, y);
                differs = 1;
            }
        }
    } else {
        differs = dataset_differs(fa, fb, only, why, wn);
    }
    names_free(&na);
    names_free(&nb);
    fl_runfile_close_read(fa);
    fl_runfile_close_read(fb);
    return differs;
}

static void assert_same_run(const char *a, const char *b)
{
    char why[600];
    if (runs_differ(a, b, NULL, why, sizeof why))
        fail_msg("%s and %s differ: %s", a, b, why);
}

/* Rows of a dataset of run `name`. */
static int64_t rows_of(const char *name, const char *dset)
{
    hid_t f = open_run(name);
    fl_h5_lock();
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    fl_h5_unlock();
    if (d < 0)
        fail_msg("%s: no %s", name, dset);
    int64_t n = fl_h5_rows(d);
    fl_h5_lock();
    H5Dclose(d);
    fl_h5_unlock();
    fl_runfile_close_read(f);
    return n;
}

/* rows [0, n) of a 1-D dataset as doubles / int32 */
static void read_col(const char *name, const char *dset, hid_t type, int64_t n, void *out)
{
    hid_t f = open_run(name);
    fl_h5_lock();
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(d >= 0);
    fl_error err;
    if (fl_h5_read_rows(d, type, 0, n, out, &err))
        fail_msg("%s", fl_error_msg(&err));
    fl_h5_lock();
    H5Dclose(d);
    fl_h5_unlock();
    fl_runfile_close_read(f);
}

static int64_t run_attr(const char *name, const char *attr)
{
    hid_t f = open_run(name);
    int64_t v = attr_i64(f, attr);
    fl_runfile_close_read(f);
    return v;
}

static char *run_text(const char *name, const char *dset)
{
    hid_t f = open_run(name);
    char *t = NULL;
    fl_error err;
    if (fl_h5_read_text(f, dset, &t, &err))
        fail_msg("%s", fl_error_msg(&err));
    fl_runfile_close_read(f);
    return t;
}

/* ---- set-up ------------------------------------------------------------------------------- */

static exp_t base;      /* the experiment */
static char ref[] = "ref"; /* its uninterrupted run, made once */

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmp, sizeof tmp, "%s/fl_test_run_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmp))
        return -1;
    unsetenv("FIFOLAB_FFMPEG");
    exp_load(&base, FRAMES, 3, NULL);
    fl_run_opts o = quiet_opts();
    fl_run_outcome out;
    fl_error err;
    if (run_into(&base, ref, &o, &out, &err) || out != FL_RUN_COMPLETE) {
        fprintf(stderr, "reference run: %s\n", fl_error_msg(&err));
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    exp_free(&base);
    return fl_test_rm_tree(tmp);
}

/* ---- tests -------------------------------------------------------------------------------- */

/* A run to completion: status, totals, the frames and their conditions, the series, the
 * script and configuration, no state left. */
static void test_complete_run(void **state)
{
    (void)state;
    assert_string_equal(status_of(ref), "complete");
    assert_true(exists(ref, "run.h5"));
    assert_false(exists(ref, "state.h5"));
    assert_false(exists(ref, "state.h5.tmp"));
    assert_false(exists(ref, "run.h5.tmp"));
    assert_int_equal(rows_of(ref, "frames/latent"), FRAMES);
    assert_int_equal(run_attr(ref, "frames_total"), FRAMES);
    assert_int_equal(run_attr(ref, "frames_emitted"), FRAMES);
    assert_int_equal(run_attr(ref, "resumed"), 0);
    int64_t iters = run_attr(ref, "iterations");
    assert_true(iters >= FRAMES);
    /* the timeline: frames 0..8 under "a", the rest under "b" */
    int32_t cond[FRAMES];
    read_col(ref, "frames/condition", H5T_NATIVE_INT32, FRAMES, cond);
    for (int k = 0; k < FRAMES; k++)
        assert_int_equal(cond[k], k < SWITCH_AT ? 0 : 1);
    assert_int_equal(rows_of(ref, "conditions/text"), 2);
    /* per-iteration series: one value per iteration, adding up to the totals */
    assert_int_equal(rows_of(ref, "metrics/iteration_windows"), iters);
    assert_int_equal(rows_of(ref, "metrics/iteration_frame_evals"), iters);
    assert_int_equal(rows_of(ref, "metrics/iteration_seconds"), iters);
    double *v = malloc((size_t)iters * sizeof *v);
    assert_non_null(v);
    read_col(ref, "metrics/iteration_windows", H5T_NATIVE_DOUBLE, iters, v);
    double sum = 0;
    for (int64_t i = 0; i < iters; i++)
        sum += v[i];
    assert_true(sum == (double)run_attr(ref, "window_calls"));
    read_col(ref, "metrics/iteration_frame_evals", H5T_NATIVE_DOUBLE, iters, v);
    sum = 0;
    for (int64_t i = 0; i < iters; i++)
        sum += v[i];
    assert_true(sum == (double)run_attr(ref, "frame_evals"));
    free(v);
    /* online metrics: a value per frame (frame_mean, frame_std), per adjacent pair, per
     * window; frame_mean is the mean of the frame written */
    assert_int_equal(rows_of(ref, "metrics/frame_mean"), FRAMES);
    assert_int_equal(rows_of(ref, "metrics/frame_std"), FRAMES);
    assert_int_equal(rows_of(ref, "metrics/adjacent_mse"), FRAMES - 1);
    assert_true(rows_of(ref, "metrics/flicker") >= 1);
    assert_true(rows_of(ref, "trace/position_error") >= 1);
    assert_true(rows_of(ref, "trace/queue") >= 2);
    double mean[FRAMES];
    read_col(ref, "metrics/frame_mean", H5T_NATIVE_DOUBLE, FRAMES, mean);
    float *lat = malloc((size_t)FRAMES * FS * sizeof *lat);
    assert_non_null(lat);
    read_col(ref, "frames/latent", H5T_NATIVE_FLOAT, FRAMES, lat);
    for (int k = 0; k < FRAMES; k++) {
        double m = 0;
        for (int i = 0; i < FS; i++)
            m += lat[(size_t)k * FS + i];
        m /= FS;
        if (fabs(m - mean[k]) > 1e-5 * (1 + fabs(m)))
            fail_msg("frame %d: frame_mean %.9g, the frame's mean %.9g", k, mean[k], m);
    }
    /* and not all alike */
    assert_true(mean[0] != mean[FRAMES - 1]);
    free(lat);
    /* the script verbatim and the resolved configuration */
    char *s = run_text(ref, "config/script");
    assert_string_equal(s, base.text);
    free(s);
    char *resolved = NULL;
    char d[600];
    assert_string_equal(fl_run_status(path_of(d, sizeof d, ref, NULL), &resolved), "complete");
    assert_non_null(resolved);
    assert_non_null(strstr(resolved, "frames = 24"));
    char *r2 = run_text(ref, "config/resolved");
    assert_string_equal(resolved, r2);
    free(r2);
    free(resolved);
}

/* The same configuration twice, in two directories: bit-identical. Another seed is not (so
 * the comparison can fail). */
static void test_deterministic(void **state)
{
    (void)state;
    run_ok(&base, "same", FL_RUN_COMPLETE);
    assert_same_run(ref, "same");
    exp_t other;
    exp_load(&other, FRAMES, 4, NULL);
    run_ok(&other, "seed4", FL_RUN_COMPLETE);
    exp_free(&other);
    char why[600];
    assert_true(runs_differ(ref, "seed4", "frames/latent", why, sizeof why));
    assert_non_null(strstr(why, "frames/latent"));
    assert_true(runs_differ(ref, "seed4", NULL, why, sizeof why));
    assert_false(runs_differ(ref, "seed4", "frames/condition", why, sizeof why));
}

/* Killed (SIGKILL at the die_after-th frame, in a child process, a state after every
 * iteration), then resumed, by fl_run_resume or by fl_run_point again: the same file as the
 * uninterrupted run. */
static void test_kill_and_resume(void **state)
{
    (void)state;
    static const int die_after[] = { 1, 5, 11, 17, FRAMES };
    for (size_t i = 0; i < sizeof die_after / sizeof die_after[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "kill%d", die_after[i]);
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            fl_run_opts o = quiet_opts();
            o.die_after = die_after[i];
            fl_run_outcome out;
            fl_error err;
            fl_cfg *cfg = fl_cfg_copy(base.s.base, NULL);
            char d[512];
            snprintf(d, sizeof d, "%s/%s", tmp, name);
            fl_status st = cfg ? fl_run_point(&o, cfg, base.s.source, "h4.lua", d, &out, &err) : FL_E_NOMEM;
            _exit(st ? 2 : 3); /* not reached: the hook kills the process */
        }
        int ws;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
            fail_msg("die_after %d: the child was not killed (status 0x%x)", die_after[i], ws);
        /* a killed writer leaves "running" */
        assert_string_equal(status_of(name), "running");
        /* (whether a state was saved before the kill depends on the writer thread's timing:
         * both ways are resumable; test_stop_then_kill has one for sure) */
        fl_run_opts o = quiet_opts();
        fl_run_outcome out = (fl_run_outcome)-1;
        fl_error err;
        fl_status st;
        if (i % 2 == 0) {
            char d[600];
            st = fl_run_resume(&o, path_of(d, sizeof d, name, NULL), &out, &err);
        } else {
            st = run_into(&base, name, &o, &out, &err);
        }
        if (st)
            fail_msg("die_after %d: resume: %s", die_after[i], fl_error_msg(&err));
        assert_int_equal(out, FL_RUN_COMPLETE);
        assert_string_equal(status_of(name), "complete");
        assert_false(exists(name, "state.h5"));
        assert_false(exists(name, "run.h5.tmp"));
        assert_same_run(ref, name);
        assert_int_equal(run_attr(name, "resumed"), 1);
        char *s = run_text(name, "config/script");
        assert_string_equal(s, base.text);
        free(s);
    }
}

/* A child process: fl_run_resume of tmp/name with die_after; returns the wait status. */
static int resume_killed(const char *name, int die_after)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fl_run_opts o = quiet_opts();
        o.die_after = die_after;
        fl_run_outcome out;
        fl_error err;
        char d[512];
        snprintf(d, sizeof d, "%s/%s", tmp, name);
        fl_status st = fl_run_resume(&o, d, &out, &err);
        _exit(st ? 2 : 3);
    }
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    return ws;
}

/* Stopped after its first iteration (a state for sure), then killed part way through the
 * resumed run (whose rebuilt file has replaced the old one), then resumed again. */
static void test_stop_then_kill(void **state)
{
    (void)state;
    volatile sig_atomic_t stop = SIGTERM;
    fl_run_opts o = quiet_opts();
    o.stop = &stop;
    fl_run_outcome out;
    fl_error err;
    assert_int_equal(run_into(&base, "stopkill", &o, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_INTERRUPTED);
    assert_true(exists("stopkill", "state.h5"));
    int64_t emitted = run_attr("stopkill", "frames_emitted");
    int ws = resume_killed("stopkill", 6);
    if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
        fail_msg("the resumed child was not killed (status 0x%x)", ws);
    assert_string_equal(status_of("stopkill"), "running");
    assert_true(exists("stopkill", "state.h5"));
    /* the rebuilt file is in place: the killed resume's frames are there (at least those a
     * state vouched for), none of the old file's lost */
    assert_true(rows_of("stopkill", "frames/latent") >= emitted);
    ws = resume_killed("stopkill", 4);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
    char d[600];
    o.stop = NULL;
    out = (fl_run_outcome)-1;
    if (fl_run_resume(&o, path_of(d, sizeof d, "stopkill", NULL), &out, &err))
        fail_msg("%s", fl_error_msg(&err));
    assert_int_equal(out, FL_RUN_COMPLETE);
    assert_same_run(ref, "stopkill");
    assert_int_equal(run_attr("stopkill", "resumed"), 3);
    assert_false(exists("stopkill", "state.h5"));
    assert_false(exists("stopkill", "run.h5.tmp"));
}

/* Stopped cleanly (opts.stop set: the run stops after its next iteration with status
 * "interrupted" and a state) at every iteration in turn, resumed each time: the same file
 * as the uninterrupted run. */
static void test_stop_every_iteration(void **state)
{
    (void)state;
    volatile sig_atomic_t stop = SIGINT;
    fl_run_opts o = quiet_opts();
    o.stop = &stop;
    fl_run_outcome out;
    fl_error err;
    if (run_into(&base, "stops", &o, &out, &err))
        fail_msg("%s", fl_error_msg(&err));
    assert_int_equal(out, FL_RUN_INTERRUPTED);
    assert_string_equal(status_of("stops"), "interrupted");
    assert_true(exists("stops", "state.h5"));
    assert_int_equal(run_attr("stops", "iterations"), 1);
    char d[600];
    path_of(d, sizeof d, "stops", NULL);
    int64_t iters = run_attr(ref, "iterations"), resumes = 0, last_emitted = run_attr("stops", "frames_emitted");
    while (out == FL_RUN_INTERRUPTED) {
        assert_true(resumes <= iters + 1);
        out = (fl_run_outcome)-1;
        /* alternately through fl_run_resume and fl_run_point */
        fl_status st = resumes % 2 ? fl_run_resume(&o, d, &out, &err) : run_into(&base, "stops", &o, &out, &err);
        if (st)
            fail_msg("resume %lld: %s", (long long)resumes, fl_error_msg(&err));
        resumes++;
        assert_int_equal(run_attr("stops", "resumed"), resumes);
        int64_t e = run_attr("stops", "frames_emitted");
        assert_true(e >= last_emitted);
        last_emitted = e;
        if (out == FL_RUN_INTERRUPTED) {
            /* one more iteration each time */
            assert_int_equal(run_attr("stops", "iterations"), resumes + 1);
            assert_string_equal(status_of("stops"), "interrupted");
        }
    }
    assert_int_equal(out, FL_RUN_COMPLETE);
    assert_true(resumes >= iters - 1);
    assert_string_equal(status_of("stops"), "complete");
    assert_false(exists("stops", "state.h5"));
    assert_same_run(ref, "stops");
}

/* A complete run is skipped, by fl_run_point and by fl_run_resume, and its file is not
 * rewritten. */
static void test_skip_complete(void **state)
{
    (void)state;
    run_ok(&base, "skip", FL_RUN_COMPLETE);
    char p[600];
    path_of(p, sizeof p, "skip", "run.h5");
    struct stat before, after;
    assert_int_equal(stat(p, &before), 0);
    size_t n0, n1;
    uint8_t *b0 = slurp(p, &n0);
    struct timespec pause = { 0, 20 * 1000 * 1000 };
    nanosleep(&pause, NULL); /* a rewrite would show in the mtime */
    run_ok(&base, "skip", FL_RUN_SKIPPED);
    fl_run_opts o = quiet_opts();
    fl_run_outcome out = (fl_run_outcome)-1;
    fl_error err;
    char d[600];
    assert_int_equal(fl_run_resume(&o, path_of(d, sizeof d, "skip", NULL), &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_SKIPPED);
    assert_int_equal(stat(p, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
    assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
    uint8_t *b1 = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(b0, b1, n0);
    free(b0);
    free(b1);
    assert_false(exists("skip", "state.h5"));
    /* force reruns it: a new file, the same data */
    o.force = 1;
    assert_int_equal(run_into(&base, "skip", &o, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_COMPLETE);
    assert_int_equal(stat(p, &after), 0);
    assert_true(after.st_mtim.tv_sec != before.st_mtim.tv_sec || after.st_mtim.tv_nsec != before.st_mtim.tv_nsec ||
                after.st_ino != before.st_ino);
    assert_same_run(ref, "skip");
    assert_int_equal(run_attr("skip", "resumed"), 0);
}

/* Another configuration in a directory that holds a run: refused, naming the directory,
 * the run untouched; with force it replaces the run. Also for an interrupted run. */
static void test_other_configuration(void **state)
{
    (void)state;
    run_ok(&base, "other", FL_RUN_COMPLETE);
    char p[600], d[600];
    path_of(p, sizeof p, "other", "run.h5");
    path_of(d, sizeof d, "other", NULL);
    size_t n0, n1;
    uint8_t *b0 = slurp(p, &n0);
    exp_t shorter;
    exp_load(&shorter, 20, 3, NULL);
    fl_run_opts o = quiet_opts();
    fl_run_outcome out;
    fl_error err;
    assert_int_equal(run_into(&shorter, "other", &o, &out, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, d));
    assert_non_null(strstr(err.msg, "another configuration"));
    assert_non_null(strstr(err.msg, "--force"));
    uint8_t *b1 = slurp(p, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(b0, b1, n0);
    free(b0);
    free(b1);
    /* a change deep in a module counts too */
    fl_cfg *cfg = fl_cfg_copy(base.s.base, NULL);
    assert_int_equal(fl_cfg_set_arg(cfg, "sampler.eta=0.5", &err), FL_OK);
    out = (fl_run_outcome)-1;
    assert_int_equal(fl_run_point(&o, cfg, base.s.source, "h4.lua", d, &out, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, d));
    assert_int_equal((int)out, -1);
    fl_cfg_free(cfg);
    /* force: the other configuration replaces it */
    o.force = 1;
    assert_int_equal(run_into(&shorter, "other", &o, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_COMPLETE);
    assert_int_equal(rows_of("other", "frames/latent"), 20);
    run_ok(&shorter, "short_ref", FL_RUN_COMPLETE);
    assert_same_run("short_ref", "other");
    /* an interrupted run of another configuration: refused too, its state kept */
    volatile sig_atomic_t stop = SIGTERM;
    fl_run_opts os = quiet_opts();
    os.stop = &stop;
    assert_int_equal(run_into(&base, "other_int", &os, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_INTERRUPTED);
    fl_run_opts plain = quiet_opts();
    assert_int_equal(run_into(&shorter, "other_int", &plain, &out, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "other_int"));
    assert_true(exists("other_int", "state.h5"));
    assert_string_equal(status_of("other_int"), "interrupted");
    os.stop = NULL;
    os.force = 1;
    assert_int_equal(run_into(&shorter, "other_int", &os, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_COMPLETE);
    assert_same_run("short_ref", "other_int");
    assert_false(exists("other_int", "state.h5"));
    exp_free(&shorter);
}

/* A fake ffmpeg that records its pid and never reads its input: the run blocks on its first
 * video frame while holding the run directory. */
static void write_blocking_ffmpeg(const char *marker, char *prog, size_t n)
{
    snprintf(prog, n, "%s/block_ffmpeg.sh", tmp);
    FILE *f = fopen(prog, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\necho $$ > '%s.tmp'\nmv '%s.tmp' '%s'\nexec sleep 60\n", marker, marker, marker);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(prog, 0755), 0);
}

/* No video.*.tmp* file is left in run directory `name`. */
static void assert_no_tmp_video(const char *name)
{
    char d[600];
    DIR *dd = opendir(path_of(d, sizeof d, name, NULL));
    assert_non_null(dd);
    struct dirent *de;
    while ((de = readdir(dd)))
        if (strstr(de->d_name, ".tmp"))
            fail_msg("%s: temporary file %s left", name, de->d_name);
    closedir(dd);
}

/* Two processes on one run directory: the second is refused (the lock), by fl_run_point
 * and fl_run_resume, whatever its configuration; once the first is done the directory is
 * free again. */
static void test_concurrent(void **state)
{
    (void)state;
    char marker[512], prog[512], log[512], d[600];
    snprintf(marker, sizeof marker, "%s/ffmpeg.pid", tmp);
    snprintf(log, sizeof log, "%s/concurrent.log", tmp);
    path_of(d, sizeof d, "busy", NULL);
    write_blocking_ffmpeg(marker, prog, sizeof prog);
    exp_t vid;
    exp_load(&vid, FRAMES, 3, "video = { mp4 = true, scale = 32 },");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        setenv("FIFOLAB_FFMPEG", prog, 1);
        fl_run_opts o = quiet_opts();
        fl_run_outcome out;
        fl_error err;
        fl_cfg *cfg = fl_cfg_copy(vid.s.base, NULL);
        fl_status st = cfg ? fl_run_point(&o, cfg, vid.s.source, "h4.lua", d, &out, &err) : FL_E_NOMEM;
        if (st)
            fprintf(stderr, "child: %s\n", fl_error_msg(&err));
        fl_cfg_free(cfg);
        _exit(st ? 1 : out == FL_RUN_COMPLETE ? 0 : 2);
    }
    /* wait until the child's ffmpeg runs: the child then holds the directory */
    long fpid = 0;
    for (int i = 0; i < 3000 && !fpid; i++) {
        FILE *f = fopen(marker, "r");
        if (f) {
            if (fscanf(f, "%ld", &fpid) != 1)
                fpid = 0;
            fclose(f);
        }
        if (!fpid) {
            struct timespec ms = { 0, 10 * 1000 * 1000 };
            nanosleep(&ms, NULL);
        }
    }
    if (!fpid) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the first run did not start its video (see %s)", log);
    }
    assert_string_equal(fl_run_status(d, NULL), "running");
    fl_run_opts o = quiet_opts();
    fl_run_outcome out = (fl_run_outcome)-1;
    fl_error err;
    assert_int_equal(run_into(&vid, "busy", &o, &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, d));
    assert_non_null(strstr(err.msg, "another fifolab process is running this run"));
    assert_int_equal(fl_run_resume(&o, d, &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "another fifolab process is running this run"));
    o.force = 1; /* force does not break the lock, nor does another configuration */
    assert_int_equal(run_into(&base, "busy", &o, &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "another fifolab process"));
    assert_int_equal((int)out, -1);
    /* let the first run go on: its video fails (a warning), the run completes */
    assert_int_equal(kill((pid_t)fpid, SIGKILL), 0);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        size_t n;
        char *l = (char *)slurp(log, &n);
        l[n] = 0;
        fail_msg("the first run did not complete (status 0x%x): %s", ws, l);
    }
    assert_string_equal(fl_run_status(d, NULL), "complete");
    size_t ln;
    char *l = (char *)slurp(log, &ln);
    l[ln] = 0;
    assert_non_null(strstr(l, "warning")); /* the video's failure, reported as a warning */
    free(l);
    o.force = 0;
    assert_int_equal(run_into(&vid, "busy", &o, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_SKIPPED);
    /* the video was dropped: no partial files */
    assert_false(exists("busy", "video.mp4"));
    assert_no_tmp_video("busy");
    /* the same frames as the run without video */
    char why[600];
    assert_false(runs_differ(ref, "busy", "frames/latent", why, sizeof why));
    exp_free(&vid);
}

/* Errors name the path at fault. */
static void test_errors_name_paths(void **state)
{
    (void)state;
    fl_run_opts o = quiet_opts();
    fl_run_outcome out = (fl_run_outcome)-1;
    fl_error err;
    fl_cfg *cfg = fl_cfg_copy(base.s.base, NULL);
    /* a directory that cannot be made */
    assert_int_equal(fl_run_point(&o, cfg, NULL, NULL, "/proc/nonexistent/h4run", &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, "/proc/nonexistent"));
    assert_int_equal((int)out, -1);
    /* a path through a regular file */
    char file[512], below[600];
    snprintf(file, sizeof file, "%s/plain_file", tmp);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
    snprintf(below, sizeof below, "%s/run", file);
    assert_int_equal(fl_run_point(&o, cfg, NULL, NULL, below, &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, file));
    /* the run directory itself a file */
    assert_int_equal(fl_run_point(&o, cfg, NULL, NULL, file, &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, file));
    assert_non_null(strstr(err.msg, "not a directory"));
    fl_cfg_free(cfg);
    /* resume where there is no run */
    char d[600];
    assert_int_equal(fl_run_resume(&o, path_of(d, sizeof d, "nothing_here", NULL), &out, &err), FL_E_IO);
    assert_non_null(strstr(err.msg, d));
    assert_non_null(strstr(err.msg, "no run here"));
    assert_string_equal(fl_run_status(d, NULL), "none");
    /* a run.h5 that is not a run file: unreadable; refused unless force */
    assert_int_equal(fl_mkdirs(path_of(d, sizeof d, "garbage", NULL), &err), FL_OK);
    char p[600];
    f = fopen(path_of(p, sizeof p, "garbage", "run.h5"), "w");
    assert_non_null(f);
    fputs("this is not HDF5\n", f);
    fclose(f);
    assert_string_equal(fl_run_status(d, NULL), "unreadable");
    assert_int_not_equal(run_into(&base, "garbage", &o, &out, &err), FL_OK);
    assert_non_null(strstr(err.msg, d));
    assert_non_null(strstr(err.msg, "unreadable"));
    assert_int_not_equal(fl_run_resume(&o, d, &out, &err), FL_OK);
    assert_non_null(strstr(err.msg, "garbage/run.h5"));
    o.force = 1;
    assert_int_equal(run_into(&base, "garbage", &o, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_COMPLETE);
    assert_same_run(ref, "garbage");
    /* a saved state of another configuration, or not a state at all: refused, naming
     * state.h5, the run left as it was */
    volatile sig_atomic_t stop = SIGINT;
    fl_run_opts os = quiet_opts();
    os.stop = &stop;
    exp_t shorter;
    exp_load(&shorter, 20, 3, NULL);
    assert_int_equal(run_into(&base, "cross_a", &os, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_INTERRUPTED);
    assert_int_equal(run_into(&shorter, "cross_b", &os, &out, &err), FL_OK);
    assert_int_equal(out, FL_RUN_INTERRUPTED);
    exp_free(&shorter);
    char sa[600], sb[600];
    size_t n;
    uint8_t *b = slurp(path_of(sb, sizeof sb, "cross_b", "state.h5"), &n);
    f = fopen(path_of(sa, sizeof sa, "cross_a", "state.h5"), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    free(b);
    o.force = 0;
    assert_int_not_equal(fl_run_resume(&o, path_of(d, sizeof d, "cross_a", NULL), &out, &err), FL_OK);
    assert_non_null(strstr(err.msg, sa));
    assert_non_null(strstr(err.msg, "another configuration"));
    assert_string_equal(status_of("cross_a"), "interrupted");
    assert_false(exists("cross_a", "run.h5.tmp"));
    f = fopen(sa, "w");
    assert_non_null(f);
    fputs("not a state\n", f);
    fclose(f);
    assert_int_not_equal(run_into(&base, "cross_a", &o, &out, &err), FL_OK);
    assert_non_null(strstr(err.msg, sa));
    assert_string_equal(status_of("cross_a"), "interrupted");
    /* a bad configuration names its key */
    cfg = fl_cfg_copy(base.s.base, NULL);
    assert_int_equal(fl_cfg_set_arg(cfg, "frames=0", &err), FL_OK);
    o.force = 0;
    assert_int_not_equal(fl_run_point(&o, cfg, NULL, NULL, path_of(d, sizeof d, "badcfg", NULL), &out, &err), FL_OK);
    assert_non_null(strstr(err.msg, "frames"));
    assert_false(exists("badcfg", "run.h5"));
    fl_cfg_free(cfg);
}

/* Waits (at most 30 s) until no process has `what` in its command line: the ffmpeg a
 * killed run leaves behind, which goes on to finish its file. */
/* The killed run's temporary MP4 in dir (video.mp4.tmp.PID) into out; 0 when none. */
static int killed_video(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d)))
        if (!strncmp(de->d_name, "video.mp4.tmp.", 14)) {
            snprintf(out, cap, "%s/%s", dir, de->d_name);
            found = 1;
        }
    closedir(d);
    return found;
}

/* No process has `what` in its command line within 5 s (a killed process's children are
 * signalled at once; the wait covers their exit). */
static void assert_no_process_with(const char *what)
{
    for (int tries = 0; tries < 500; tries++) {
        int found = 0;
        DIR *pd = opendir("/proc");
        if (!pd)
            return; /* no /proc: nothing to look at */
        struct dirent *de;
        while ((de = readdir(pd)) && !found) {
            if (de->d_name[0] < '0' || de->d_name[0] > '9')
                continue;
            char p[300], cmd[8192];
            snprintf(p, sizeof p, "/proc/%s/cmdline", de->d_name);
            FILE *f = fopen(p, "rb");
            if (!f)
                continue;
            size_t n = fread(cmd, 1, sizeof cmd - 1, f);
            fclose(f);
            for (size_t i = 0; i < n; i++)
                if (!cmd[i])
                    cmd[i] = ' ';
            cmd[n] = 0;
            found = strstr(cmd, what) != NULL;
        }
        closedir(pd);
        if (!found)
            return;
        struct timespec ms = { 0, 10 * 1000 * 1000 };
        nanosleep(&ms, NULL);
    }
    fail_msg("a process with %s in its command line outlived its killed run", what);
}

/* Online video: an MP4 of every frame and PNG frames equal to the run's frames through the
 * colour map; after a kill and a resume, the video is whole again. Needs the real ffmpeg. */
static void test_video(void **state)
{
    (void)state;
    char prog[FL_FFMPEG_PATH_MAX];
    fl_error err;
    unsetenv("FIFOLAB_FFMPEG");
    if (fl_ffmpeg_find(prog, sizeof prog, &err)) {
        print_message("(%s: skipped)\n", err.msg);
        skip();
    }
    exp_t vid;
    exp_load(&vid, FRAMES, 3, "video = { mp4 = true, png = true, fps = 12, scale = 2 },");
    for (int killed = 0; killed < 2; killed++) {
        const char *name = killed ? "video_killed" : "video";
        if (killed) {
            fflush(NULL);
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) {
                int fd = open("/dev/null", O_WRONLY);
                if (fd >= 0)
                    dup2(fd, 2);
                fl_run_opts o = quiet_opts();
                o.die_after = 13;
                fl_run_outcome out;
                fl_cfg *cfg = fl_cfg_copy(vid.s.base, NULL);
                char d[512];
                snprintf(d, sizeof d, "%s/%s", tmp, name);
                if (cfg)
                    fl_run_point(&o, cfg, vid.s.source, "h4.lua", d, &out, &err);
                _exit(3);
            }
            int ws;
            assert_int_equal(waitpid(pid, &ws, 0), pid);
            assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
            assert_false(exists(name, "video.mp4"));
            /* its ffmpeg died with it (PR_SET_PDEATHSIG): its temporary MP4 is absent or
             * unfinished (no index at the end: unreadable); an ffmpeg left alive completes
             * it, writing in the directory the resume writes */
            char rundir[600], left[900];
            assert_no_process_with(path_of(rundir, sizeof rundir, name, "video.mp4.tmp"));
            if (killed_video(path_of(rundir, sizeof rundir, name, NULL), left, sizeof left)) {
                fl_video_reader *kr = NULL;
                int got = fl_video_reader_open(left, 0, 0, NULL, &kr, &err) ? -1 : 0;
                uint8_t one[2 * SZ * 2 * SZ * 3];
                while (!got && (got = fl_video_reader_frame(kr, one, &err)) == 1)
                    got = 0;
                fl_video_reader_close(kr);
                if (got >= 0)
                    fail_msg("%s: the killed run's ffmpeg finished its video", left);
            } /* else it died before it made the file */
            /* Resumed at once, while the killed run's ffmpeg (its own process group) may
             * still be finishing its temporary video: each process writes its own
             * video.mp4.tmp.PID and the resume unlinks the stale one, so the two never share
             * a file (they did: about 1 resume in 10 ended with the killed run's 13 frames). */
            char d[600];
            fl_run_opts o = quiet_opts();
            fl_run_outcome out;
            if (fl_run_resume(&o, path_of(d, sizeof d, name, NULL), &out, &err))
                fail_msg("%s", fl_error_msg(&err));
            assert_int_equal(out, FL_RUN_COMPLETE);
        } else {
            run_ok(&vid, name, FL_RUN_COMPLETE);
        }
        assert_no_tmp_video(name);
        char p[600];
        fl_video_reader *r;
        assert_int_equal(fl_video_reader_open(path_of(p, sizeof p, name, "video.mp4"), 0, 0, NULL, &r, &err), FL_OK);
        int h, w;
        fl_video_reader_size(r, &h, &w);
        assert_int_equal(h, 2 * SZ);
        assert_int_equal(w, 2 * SZ);
        uint8_t rgb[2 * SZ * 2 * SZ * 3];
        int n = 0, rc;
        while ((rc = fl_video_reader_frame(r, rgb, &err)) == 1)
            n++;
        assert_int_equal(rc, 0);
        assert_int_equal(n, FRAMES);
        fl_video_reader_close(r);
        /* PNG frames: the colour map of the run's own frames, scaled by pixel repetition */
        float lat[FS];
        uint8_t want[SZ * SZ * 3];
        hid_t f = open_run(name);
        fl_h5_lock();
        hid_t dl = H5Dopen2(f, "frames/latent", H5P_DEFAULT);
        fl_h5_unlock();
        for (int k = 0; k < FRAMES; k += 7) {
            char png[64];
            snprintf(png, sizeof png, "frames_png/frame_%06d.png", k);
            assert_int_equal(fl_h5_read_rows(dl, H5T_NATIVE_FLOAT, k, 1, lat, &err), FL_OK);
            assert_int_equal(fl_colour_frame(lat, CH, SZ, SZ, FL_COLOUR_LATENT, want, &err), FL_OK);
            assert_int_equal(fl_video_reader_open(path_of(p, sizeof p, name, png), 0, 0, NULL, &r, &err), FL_OK);
            assert_int_equal(fl_video_reader_frame(r, rgb, &err), 1);
            fl_video_reader_close(r);
            for (int y = 0; y < 2 * SZ; y++)
                for (int x = 0; x < 2 * SZ; x++)
                    assert_memory_equal(rgb + ((size_t)y * 2 * SZ + x) * 3, want + ((size_t)(y / 2) * SZ + x / 2) * 3, 3);
        }
        fl_h5_lock();
        H5Dclose(dl);
        fl_h5_unlock();
        fl_runfile_close_read(f);
        char why[600];
        assert_false(runs_differ(ref, name, "frames/latent", why, sizeof why));
    }
    exp_free(&vid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_run),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_kill_and_resume),
        cmocka_unit_test(test_stop_then_kill),
        cmocka_unit_test(test_stop_every_iteration),
        cmocka_unit_test(test_skip_complete),
        cmocka_unit_test(test_other_configuration),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_errors_name_paths),
        cmocka_unit_test(test_video),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
