/* `fifolab info` (one run file in words) and `fifolab summarize` (one table of every run
 * under a directory: the configuration keys that vary as columns, metrics as mean ± std
 * over seeds). */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cli.h"
#include "core/config.h"
#include "core/h5io.h"
#include "core/runfile.h"

typedef struct series_info {
    char name[128], per[16], unit[32];
    int64_t len;
    double mean;
} series_info;

typedef struct metrics_list {
    series_info *s;
    int n, cap;
} metrics_list;

static herr_t collect_series(hid_t g, const char *name, const H5L_info_t *li, void *p)
{
    (void)li;
    metrics_list *m = p;
    hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
    if (d < 0)
        return 0;
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        series_info *s = realloc(m->s, (size_t)cap * sizeof *s);
        if (!s) {
            H5Dclose(d);
            return -1;
        }
        m->s = s;
        m->cap = cap;
    }
    series_info *si = &m->s[m->n++];
    memset(si, 0, sizeof *si);
    snprintf(si->name, sizeof si->name, "%s", name);
    fl_error e;
    fl_h5_get_attr_str(d, "per", si->per, sizeof si->per, &e);
    fl_h5_get_attr_str(d, "unit", si->unit, sizeof si->unit, &e);
    si->len = fl_h5_rows(d);
    si->mean = NAN;
    if (si->len > 0) {
        double *v = malloc((size_t)si->len * sizeof *v);
        if (v && !fl_h5_read_rows(d, H5T_NATIVE_DOUBLE, 0, si->len, v, &e)) {
            double sum = 0;
            int64_t k = 0;
            for (int64_t i = 0; i < si->len; i++)
                if (isfinite(v[i])) {
                    sum += v[i];
                    k++;
                }
            si->mean = k ? sum / (double)k : NAN;
        }
        free(v);
    }
    H5Dclose(d);
    return 0;
}

static void list_metrics(hid_t f, metrics_list *m)
{
    memset(m, 0, sizeof *m);
    fl_h5_lock();
    if (H5Lexists(f, "metrics", H5P_DEFAULT) > 0) {
        hid_t g = H5Gopen2(f, "metrics", H5P_DEFAULT);
        if (g >= 0) {
            H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_series, m);
            H5Gclose(g);
        }
    }
    fl_h5_unlock();
}

/* The mean relative noise-prediction error over the queue positions that were written;
 * NaN without an oracle trace. */
static double oracle_mean(hid_t f)
{
    double mean = NAN;
    fl_h5_lock();
    if (H5Lexists(f, "trace", H5P_DEFAULT) > 0 && H5Lexists(f, "trace/position_error", H5P_DEFAULT) > 0) {
        hid_t d = H5Dopen2(f, "trace/position_error", H5P_DEFAULT);
        hid_t sp = H5Dget_space(d);
        hssize_t n = H5Sget_simple_extent_npoints(sp);
        double *v = n > 0 ? malloc((size_t)n * sizeof *v) : NULL;
        if (v && H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0) {
            double sum = 0;
            int k = 0;
            for (hssize_t i = 0; i < n; i++)
                if (isfinite(v[i])) {
                    sum += v[i];
                    k++;
                }
            mean = k ? sum / k : NAN;
        }
        free(v);
        H5Sclose(sp);
        H5Dclose(d);
    }
    fl_h5_unlock();
    return mean;
}

/* Rows of dataset `name` ("group/dataset"), -1 when it is not there. H5Lexists needs
 * every group on the path to exist, so the group is checked first. */
static int64_t rows_of(hid_t f, const char *name)
{
    char grp[64];
    const char *slash = strchr(name, '/');
    snprintf(grp, sizeof grp, "%.*s", slash ? (int)(slash - name) : 0, name);
    fl_h5_lock();
    int64_t n = -1;
    if ((!slash || H5Lexists(f, grp, H5P_DEFAULT) > 0) && H5Lexists(f, name, H5P_DEFAULT) > 0) {
        hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
        if (d >= 0) {
            n = fl_h5_rows(d);
            H5Dclose(d);
        }
    }
    fl_h5_unlock();
    return n;
}

static int info_one(const char *arg, int show_config)
{
    char path[4200];
    fl_runfile_path(arg, path, sizeof path);
    fl_error err;
    int64_t fid;
    if (fl_runfile_open_read(path, &fid, &err)) {
        fprintf(stderr, "fifolab info: %s\n", fl_error_msg(&err));
        return 1;
    }
    hid_t f = (hid_t)fid;
    char name[256] = "?", id[64] = "?", status[32] = "?", created[64] = "?", host[256] = "?",
         version[64] = "?", git[64] = "?";
    int64_t fv = 0, seed = 0, total = -1, pid = 0, dirty = 0, resumed = 0;
    if (fl_h5_get_attr_i64(f, "format_version", &fv, &err) || fl_h5_get_attr_str(f, "status", status, sizeof status, &err)) {
        fprintf(stderr, "fifolab info: %s: not a fifolab run file (%s)\n", path, fl_error_msg(&err));
        fl_runfile_close_read(fid);
        return 1;
    }
    fl_h5_get_attr_str(f, "name", name, sizeof name, &err);
    fl_h5_get_attr_str(f, "run_id", id, sizeof id, &err);
    fl_h5_get_attr_str(f, "created", created, sizeof created, &err);
    fl_h5_get_attr_str(f, "host", host, sizeof host, &err);
    fl_h5_get_attr_str(f, "fifolab_version", version, sizeof version, &err);
    fl_h5_get_attr_str(f, "git_commit", git, sizeof git, &err);
    fl_h5_get_attr_i64(f, "git_dirty", &dirty, &err);
    fl_h5_get_attr_i64(f, "seed", &seed, &err);
    fl_h5_get_attr_i64(f, "frames_total", &total, &err);
    fl_h5_get_attr_i64(f, "pid", &pid, &err);
    fl_h5_get_attr_i64(f, "resumed", &resumed, &err);
    char note[160] = "";
    if (!strcmp(status, "running")) {
        char me[256] = "";
        gethostname(me, sizeof me - 1);
        if (!strcmp(me, host) && pid > 0 && kill((pid_t)pid, 0) && errno == ESRCH)
            snprintf(note, sizeof note, " (its writer, pid %lld, is gone: killed? 'fifolab resume' continues it)",
                     (long long)pid);
    }
    printf("%s\n", path);
    printf("  name        %s\n  run id      %s\n  status      %s%s\n", name, id, status, note);
    printf("  created     %s on %s (fifolab %s, git %s%s, format %lld)%s\n", created, host, version, git,
           dirty ? " dirty" : "", (long long)fv, resumed ? "" : "");
    if (resumed)
        printf("  resumed     %lld time%s\n", (long long)resumed, resumed == 1 ? "" : "s");
    printf("  seed        %lld\n", (long long)seed);
    int64_t frames = rows_of(f, "frames/latent");
    int64_t shape[3] = { 0, 0, 0 };
    fl_h5_lock();
    hid_t d = H5Dopen2(f, "frames/latent", H5P_DEFAULT);
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        hsize_t dims[4];
        if (H5Sget_simple_extent_dims(sp, dims, NULL) == 4)
            for (int i = 0; i < 3; i++)
                shape[i] = (int64_t)dims[i + 1];
        H5Sclose(sp);
        H5Dclose(d);
    }
    char sched[64] = "?";
    int64_t window = 0, steps = 0, parts = 0, positions = 0;
    hid_t g = H5Lexists(f, "schedule", H5P_DEFAULT) > 0 ? H5Gopen2(f, "schedule", H5P_DEFAULT) : -1;
    if (g >= 0) {
        fl_h5_get_attr_str(g, "scheduler", sched, sizeof sched, &err);
        fl_h5_get_attr_i64(g, "window", &window, &err);
        fl_h5_get_attr_i64(g, "steps", &steps, &err);
        fl_h5_get_attr_i64(g, "partitions", &parts, &err);
        fl_h5_get_attr_i64(g, "positions", &positions, &err);
        H5Gclose(g);
    }
    fl_h5_unlock();
    printf("  frames      %lld of %lld  (/frames/latent [%lld, %lld, %lld, %lld] float32)\n", (long long)frames,
           (long long)total, (long long)frames, (long long)shape[0], (long long)shape[1], (long long)shape[2]);
    printf("  scheduler   %s: window %lld, steps %lld", sched, (long long)window, (long long)steps);
    if (parts)
        printf(", partitions %lld, queue of %lld", (long long)parts, (long long)positions);
    printf("\n");
    int64_t calls = 0, iters = 0, emitted = 0;
    double secs = 0;
    if (!fl_h5_get_attr_i64(f, "window_calls", &calls, &err) && !fl_h5_get_attr_i64(f, "iterations", &iters, &err) &&
        !fl_h5_get_attr_i64(f, "frames_emitted", &emitted, &err) && !fl_h5_get_attr_f64(f, "seconds", &secs, &err))
        printf("  work        %lld iterations, %lld denoiser window calls (%.3f per frame), %.2f s\n",
               (long long)iters, (long long)calls, emitted ? (double)calls / (double)emitted : 0.0, secs);
    metrics_list m;
    list_metrics(f, &m);
    printf("  metrics     %d series\n", m.n);
    for (int i = 0; i < m.n; i++)
        printf("    %-28s %-9s %8lld values  mean %.6g %s\n", m.s[i].name, m.s[i].per, (long long)m.s[i].len,
               m.s[i].mean, m.s[i].unit);
    free(m.s);
    double om = oracle_mean(f);
    if (!isnan(om))
        printf("  oracle      mean relative noise-prediction error over queue positions %.6g (/trace/position_error)\n", om);
    int64_t snaps = rows_of(f, "trace/queue");
    if (snaps > 0)
        printf("  snapshots   %lld queue snapshots (/trace/queue)\n", (long long)snaps);
    char state[4300];
    snprintf(state, sizeof state, "%.*s/state.h5", (int)(strrchr(path, '/') ? strrchr(path, '/') - path : 1),
             strrchr(path, '/') ? path : ".");
    if (!access(state, F_OK))
        printf("  state       %s (resumable)\n", state);
    if (show_config) {
        char *text = NULL;
        if (!fl_h5_read_text(f, "config/resolved", &text, &err))
            printf("  config (resolved):\n%s", text);
        free(text);
    }
    fl_runfile_close_read(fid);
    return 0;
}

int fl_cmd_info(int argc, char **argv)
{
    int show_config = 1, n = 0, rc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: fifolab info [--no-config] RUN...\n\n"
                   "Summarizes run files (a run directory or its run.h5): provenance, status, frames,\n"
                   "schedule, work done, metrics present with their means, oracle error, snapshots,\n"
                   "whether a resumable state exists, and the resolved configuration.\n"
                   "Reads files being written too. Exit 1 if a file cannot be read.\n");
            return 0;
        }
        if (!strcmp(argv[i], "--no-config")) {
            show_config = 0;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "fifolab info: unknown option \"%s\"\n", argv[i]);
            return 2;
        }
        n++;
    }
    if (!n) {
        fprintf(stderr, "usage: fifolab info [--no-config] RUN...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-')
            rc |= info_one(argv[i], show_config);
    return rc;
}

/* ---- summarize ------------------------------------------------------------------------ */

typedef struct kv {
    char *key, *val;
} kv;

typedef struct run_row {
    char *path;
    kv *kv;
    int nkv;
    char status[32];
    int64_t frames;
    double calls_per_frame, seconds, oracle;
    metrics_list m;
} run_row;

typedef struct runs {
    run_row *r;
    int n, cap;
} runs;

static runs found;

static int add_kv(run_row *r, const char *key, const char *val)
{
    kv *k = realloc(r->kv, (size_t)(r->nkv + 1) * sizeof *k);
    if (!k)
        return -1;
    r->kv = k;
    k[r->nkv].key = strdup(key);
    k[r->nkv].val = strdup(val);
    r->nkv++;
    return 0;
}

/* Flattens a resolved configuration into key = value leaves ("scheduler.planner" =
 * "lookahead" for module tables' names). */
static void flatten(run_row *r, const fl_cfg *n, const char *prefix)
{
    fl_cfg_type t = fl_cfg_type_of(n);
    if (t == FL_CFG_TABLE) {
        for (size_t i = 0; i < fl_cfg_len(n); i++) {
            const fl_cfg *c = fl_cfg_item(n, i);
            const char *k = fl_cfg_key(c);
            char p[512];
            if (!strcmp(k, "module"))
                snprintf(p, sizeof p, "%s", *prefix ? prefix : "module");
            else
                snprintf(p, sizeof p, "%s%s%s", prefix, *prefix ? "." : "", k);
            flatten(r, c, p);
        }
        return;
    }
    char buf[512];
    fl_cfg_format(n, 0, buf, sizeof buf);
    size_t l = strlen(buf);
    while (l && (buf[l - 1] == '\n' || buf[l - 1] == ' '))
        buf[--l] = 0;
    if (l >= 2 && buf[0] == '"' && buf[l - 1] == '"') {
        memmove(buf, buf + 1, l - 2);
        buf[l - 2] = 0;
    }
    add_kv(r, prefix, buf);
}

static int visit(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    size_t l = strlen(path);
    if (type != FTW_F || l < 7 || strcmp(path + l - 7, "/run.h5"))
        return 0;
    int64_t fid;
    fl_error err;
    if (fl_runfile_open_read(path, &fid, &err)) {
        fprintf(stderr, "fifolab summarize: skipping %s\n", fl_error_msg(&err));
        return 0;
    }
    hid_t f = (hid_t)fid;
    char *text = NULL;
    fl_cfg *cfg = fl_cfg_new(NULL);
    if (!cfg || fl_h5_read_text(f, "config/resolved", &text, &err) || fl_cfg_merge_text(cfg, text, &err)) {
        fprintf(stderr, "fifolab summarize: skipping %s: %s\n", path, fl_error_msg(&err));
        fl_cfg_free(cfg);
        free(text);
        fl_runfile_close_read(fid);
        return 0;
    }
    if (found.n == found.cap) {
        int cap = found.cap ? 2 * found.cap : 32;
        run_row *r = realloc(found.r, (size_t)cap * sizeof *r);
        if (!r)
            return -1;
        found.r = r;
        found.cap = cap;
    }
    run_row *r = &found.r[found.n++];
    memset(r, 0, sizeof *r);
    r->path = strdup(path);
    flatten(r, cfg, "");
    fl_h5_get_attr_str(f, "status", r->status, sizeof r->status, &err);
    r->frames = rows_of(f, "frames/latent");
    int64_t calls = 0, em = 0;
    r->calls_per_frame = r->seconds = NAN;
    if (!fl_h5_get_attr_i64(f, "window_calls", &calls, &err) && !fl_h5_get_attr_i64(f, "frames_emitted", &em, &err) && em)
        r->calls_per_frame = (double)calls / (double)em;
    fl_h5_get_attr_f64(f, "seconds", &r->seconds, &err);
    r->oracle = oracle_mean(f);
    list_metrics(f, &r->m);
    fl_cfg_free(cfg);
    free(text);
    fl_runfile_close_read(fid);
    return 0;
}

static const char *val_of(const run_row *r, const char *key)
{
    for (int i = 0; i < r->nkv; i++)
        if (!strcmp(r->kv[i].key, key))
            return r->kv[i].val;
    return "-";
}

static int cmp_rows(const void *a, const void *b)
{
    return strcmp(((const run_row *)a)->path, ((const run_row *)b)->path);
}

static char **sort_vary;
static int sort_nv;

static int cmp_groups(const void *a, const void *b)
{
    const run_row *x = &found.r[*(const int *)a], *y = &found.r[*(const int *)b];
    for (int k = 0; k < sort_nv; k++) {
        const char *u = val_of(x, sort_vary[k]), *v = val_of(y, sort_vary[k]);
        char *eu, *ev;
        double du = strtod(u, &eu), dv = strtod(v, &ev);
        int c = (!*eu && !*ev && eu != u && ev != v) ? (du > dv) - (du < dv) : strcmp(u, v);
        if (c)
            return c;
    }
    return 0;
}

typedef struct column {
    char name[128];
    int series; /* index into metrics name, or -1/-2/-3/-4: frames, calls/frame, oracle, seconds */
} column;

static double metric_of(const run_row *r, const column *c)
{
    switch (c->series) {
    case -1: return (double)r->frames;
    case -2: return r->calls_per_frame;
    case -3: return r->oracle;
    case -4: return r->seconds;
    default:
        for (int i = 0; i < r->m.n; i++)
            if (!strcmp(r->m.s[i].name, c->name))
                return r->m.s[i].mean;
        return NAN;
    }
}

static void print_cell(int csv, double mean, double sd, int n)
{
    if (csv) {
        printf(",%.6g,%.6g", mean, n > 1 ? sd : NAN);
    } else if (isnan(mean)) {
        printf(" - |");
    } else if (n > 1) {
        printf(" %.4g ± %.2g |", mean, sd);
    } else {
        printf(" %.4g |", mean);
    }
}

int fl_cmd_summarize(int argc, char **argv)
{
    const char *dir = NULL, *metrics = NULL;
    int csv = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: fifolab summarize DIR [--csv] [--metrics a,b,...]\n\n"
                   "One table of every run file under DIR: the configuration keys that differ between\n"
                   "runs as columns (seed aside), then metrics as mean ± std over the seeds of each\n"
                   "configuration: emitted frames, denoiser calls per frame, oracle (mean relative noise-\n"
                   "prediction error per queue position, when recorded), seconds, and the mean of\n"
                   "each /metrics series (iteration_* aside) or those named by --metrics.\n"
                   "Markdown on the terminal; --csv for CSV.\n");
            return 0;
        } else if (!strcmp(a, "--csv")) {
            csv = 1;
        } else if (!strcmp(a, "--metrics") && i + 1 < argc) {
            metrics = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "fifolab summarize: unknown or incomplete option \"%s\"\n", a);
            return 2;
        } else if (!dir) {
            dir = a;
        } else {
            fprintf(stderr, "fifolab summarize: unexpected argument \"%s\"\n", a);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: fifolab summarize DIR [--csv] [--metrics a,b,...]\n");
        return 2;
    }
    memset(&found, 0, sizeof found);
    if (nftw(dir, visit, 16, FTW_PHYS)) {
        fprintf(stderr, "fifolab summarize: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (!found.n) {
        fprintf(stderr, "fifolab summarize: no run files under %s\n", dir);
        return 1;
    }
    qsort(found.r, (size_t)found.n, sizeof *found.r, cmp_rows);
    /* keys that vary (seed apart: it is what the mean ± std is over), over the union of
     * every run's keys: a key only some runs have varies too ("-" where absent) */
    size_t nkeys = 0;
    for (int i = 0; i < found.n; i++)
        nkeys += (size_t)found.r[i].nkv;
    char **vary = calloc(nkeys + 1, sizeof *vary);
    int nv = 0;
    for (int i = 0; vary && i < found.n; i++)
        for (int k = 0; k < found.r[i].nkv; k++) {
            const char *key = found.r[i].kv[k].key;
            int seen = !strcmp(key, "seed");
            for (int v = 0; v < nv && !seen; v++)
                seen = !strcmp(vary[v], key);
            for (int j = 0; j < i && !seen; j++) /* met before in an earlier run: decided there */
                seen = strcmp(val_of(&found.r[j], key), "-") != 0;
            if (seen)
                continue;
            const char *v0 = val_of(&found.r[0], key);
            for (int j = 1; j < found.n; j++)
                if (strcmp(val_of(&found.r[j], key), v0)) {
                    vary[nv++] = found.r[i].kv[k].key;
                    break;
                }
        }
    column cols[64];
    int nc = 0;
    if (metrics) {
        char *list = strdup(metrics);
        for (char *tok = strtok(list, ","); tok && nc < 64; tok = strtok(NULL, ",")) {
            column c = { "", 0 };
            snprintf(c.name, sizeof c.name, "%s", tok);
            c.series = !strcmp(tok, "emitted") ? -1 : !strcmp(tok, "calls_per_frame") ? -2 : !strcmp(tok, "oracle") ? -3
                       : !strcmp(tok, "seconds") ? -4 : 0;
            cols[nc++] = c;
        }
        free(list);
    } else {
        static const char *const fixed[4] = { "emitted", "calls_per_frame", "oracle", "seconds" };
        for (int k = 0; k < 4; k++) {
            if (k == 2) {
                int any = 0;
                for (int i = 0; i < found.n; i++)
                    any |= !isnan(found.r[i].oracle);
                if (!any)
                    continue;
            }
            snprintf(cols[nc].name, sizeof cols[nc].name, "%s", fixed[k]);
            cols[nc++].series = -1 - k;
        }
        for (int i = 0; i < found.n; i++)
            for (int s = 0; s < found.r[i].m.n && nc < 64; s++) {
                const char *nm = found.r[i].m.s[s].name;
                int dup = !strncmp(nm, "iteration_", 10);
                for (int c = 0; c < nc && !dup; c++)
                    dup = !strcmp(cols[c].name, nm);
                if (!dup) {
                    snprintf(cols[nc].name, sizeof cols[nc].name, "%s", nm);
                    cols[nc++].series = 0;
                }
            }
    }
    /* group runs by the varying keys, in order of first appearance */
    size_t nrun = (unsigned)found.n;
    int *group = calloc(nrun, sizeof *group), ng = 0;
    int *rep = calloc(nrun, sizeof *rep);
    for (int i = 0; group && rep && i < found.n; i++) {
        group[i] = -1;
        for (int g = 0; g < ng && group[i] < 0; g++) {
            int same = 1;
            for (int k = 0; k < nv && same; k++)
                same = !strcmp(val_of(&found.r[i], vary[k]), val_of(&found.r[rep[g]], vary[k]));
            if (same)
                group[i] = g;
        }
        if (group[i] < 0) {
            rep[ng] = i;
            group[i] = ng++;
        }
    }
    /* configurations in the order of their keys' values (numbers as numbers) */
    sort_vary = vary;
    sort_nv = nv;
    qsort(rep, (size_t)ng, sizeof *rep, cmp_groups);
    for (int i = 0; i < found.n; i++)
        for (int g = 0; g < ng; g++) {
            int same = 1;
            for (int k = 0; k < nv && same; k++)
                same = !strcmp(val_of(&found.r[i], vary[k]), val_of(&found.r[rep[g]], vary[k]));
            if (same) {
                group[i] = g;
                break;
            }
        }
    /* header */
    if (csv) {
        for (int k = 0; k < nv; k++)
            printf("%s%s", k ? "," : "", vary[k]);
        printf("%sruns", nv ? "," : "");
        for (int c = 0; c < nc; c++)
            printf(",%s,%s_std", cols[c].name, cols[c].name);
        printf("\n");
    } else {
        printf("%d runs under %s, %d configurations%s\n\n|", found.n, dir, ng, nv ? "" : " (all alike)");
        for (int k = 0; k < nv; k++)
            printf(" %s |", vary[k]);
        printf(" runs |");
        for (int c = 0; c < nc; c++)
            printf(" %s |", cols[c].name);
        printf("\n|");
        for (int k = 0; k < nv + 1 + nc; k++)
            printf("---|");
        printf("\n");
    }
    for (int g = 0; g < ng; g++) {
        const run_row *r0 = &found.r[rep[g]];
        int members = 0, incomplete = 0;
        for (int i = 0; i < found.n; i++)
            if (group[i] == g) {
                members++;
                incomplete += strcmp(found.r[i].status, "complete") != 0;
            }
        if (!csv)
            printf("|");
        for (int k = 0; k < nv; k++)
            printf(csv ? "%s%s" : " %s%s |", csv && k ? "," : "", val_of(r0, vary[k]));
        if (csv)
            printf("%s%d", nv ? "," : "", members);
        else
            printf(" %d%s |", members, incomplete ? "*" : "");
        for (int c = 0; c < nc; c++) {
            double sum = 0, sq = 0;
            int n = 0;
            for (int i = 0; i < found.n; i++) {
                double v = group[i] == g ? metric_of(&found.r[i], &cols[c]) : NAN;
                if (!isnan(v)) {
                    sum += v;
                    n++;
                }
            }
            double mean = n ? sum / n : NAN;
            for (int i = 0; i < found.n; i++) {
                double v = group[i] == g ? metric_of(&found.r[i], &cols[c]) : NAN;
                if (!isnan(v))
                    sq += (v - mean) * (v - mean);
            }
            print_cell(csv, mean, n > 1 ? sqrt(sq / (n - 1)) : NAN, n);
        }
        printf("\n");
    }
    if (!csv) {
        int any_incomplete = 0;
        for (int i = 0; i < found.n; i++)
            any_incomplete |= strcmp(found.r[i].status, "complete") != 0;
        if (any_incomplete)
            printf("\n* some runs of this configuration are not complete\n");
        int has_oracle = 0;
        for (int c = 0; c < nc; c++)
            has_oracle |= cols[c].series == -3;
        printf("\nmean ± sample std over runs (seeds)%s\n",
               has_oracle ? "; oracle: mean over queue positions of the relative noise-prediction\n"
                            "error |out - exact|^2 / |exact|^2 against the exact model." : ".");
    }
    for (int i = 0; i < found.n; i++) {
        for (int k = 0; k < found.r[i].nkv; k++) {
            free(found.r[i].kv[k].key);
            free(found.r[i].kv[k].val);
        }
        free(found.r[i].kv);
        free(found.r[i].m.s);
        free(found.r[i].path);
    }
    free(found.r);
    free(vary);
    free(group);
    free(rep);
    return 0;
}
