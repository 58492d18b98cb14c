/* `fifolab eval`: metrics of stored runs computed offline from /frames/latent and written
 * into each run file's /metrics (attribute source = "eval"), a table of means, start-end
 * contrasts and slopes, and the segment-level Fréchet distance against reference clips
 * (FreeNoise's protocol on pooled latent features). docs/eval.md, section 6. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/cli.h"
#include "core/config.h"
#include "core/experiment.h"
#include "core/h5io.h"
#include "core/runfile.h"
#include "eval/fd.h"
#include "eval/metric.h"
#include "models/gauss.h"

#define PATH_LEN 4352
#define READ_CHUNK 64    /* frames read per HDF5 call */
#define FD_BATCH 256     /* clip rows added to an accumulator at a time */
#define MAX_MODULES 16

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fifolab eval RUN... [--metrics a,b,...] [--window N] [--ref REF]\n"
            "                   [--clip N] [--clip-stride N] [--segment N] [--pool G] [--no-write]\n"
            "\n"
            "Computes metrics of finished runs offline from their stored latents (/frames/latent),\n"
            "writes each series to /metrics/<name> of the run file (a series already there is\n"
            "replaced; attribute source = \"eval\"; /frames is never touched) and prints, per run,\n"
            "each series' mean, start-end contrast (last 15%% of values minus first 15%%) and slope.\n"
            "RUN is a run directory, its run.h5, or a directory searched for run.h5 files (a sweep).\n"
            "A run being written (status running) is refused.\n"
            "\n"
            "options:\n"
            "  --metrics a,b    metric modules (default: all that apply): adjacent, flicker, motion,\n"
            "                   drift, spectral, oracle (gauss testbed), stats; fd (needs --ref)\n"
            "  --window N       frames per window of the windowed metrics (default: the run's\n"
            "                   own options for modules its experiment names, else 16)\n"
            "  --ref REF        reference clips for the segment-level Frechet distance: a run,\n"
            "                   or a directory of runs (e.g. a sweep of `full` runs over seeds of\n"
            "                   the same model and settings); writes /metrics/fd_segment (per\n"
            "                   segment) and /metrics/fd_video (the whole video, one value)\n"
            "  --clip N         frames per clip (default: the model's window, /schedule window)\n"
            "  --clip-stride N  frames between clip starts, in the runs and the reference (default 1)\n"
            "  --segment N      frames per segment of fd_segment (default 16 clips)\n"
            "  --pool G         clip features: each frame's channels average-pooled to a G x G grid,\n"
            "                   frames concatenated: D = clip x C x G x G (default 1: channel means);\n"
            "                   0: the flattened latents, D = clip x C x H x W\n"
            "  --no-write       print the table only; leave the run files unchanged\n"
            "  -h, --help       show this help\n"
            "\n"
            "Exit status: 0 done, 1 a run or reference could not be evaluated (the others are),\n"
            "2 bad usage.\n");
}

/* ---- options and run lists -------------------------------------------------------------- */

typedef struct eval_opts {
    char names[MAX_MODULES][32]; /* metric modules asked for ("" list: the default set) */
    int nnames, named, want_fd;
    int window, clip, clip_stride, segment, pool, write;
    const char *ref;
} eval_opts;

typedef struct path_list {
    char **p;
    int n, cap;
} path_list;

static int list_add(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **q = realloc(l->p, (size_t)cap * sizeof *q);
        if (!q)
            return -1;
        l->p = q;
        l->cap = cap;
    }
    if (!(l->p[l->n] = strdup(p)))
        return -1;
    l->n++;
    return 0;
}

static void list_free(path_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->p[i]);
    free(l->p);
    memset(l, 0, sizeof *l);
}

static path_list *walk_into; /* nftw has no context pointer */

static int walk_visit(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    size_t l = strlen(path);
    if (type == FTW_F && l >= 7 && !strcmp(path + l - 7, "/run.h5"))
        return list_add(walk_into, path) ? -1 : 0;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ARG: a run.h5 (any file), a directory holding run.h5, or a directory searched for them. */
static int expand_arg(const char *arg, path_list *out, const char *what)
{
    struct stat sb;
    if (stat(arg, &sb)) {
        fprintf(stderr, "fifolab eval: %s %s: %s\n", what, arg, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode))
        return list_add(out, arg);
    char p[PATH_LEN];
    snprintf(p, sizeof p, "%s/run.h5", arg);
    if (!access(p, F_OK))
        return list_add(out, p);
    int before = out->n;
    walk_into = out;
    if (nftw(arg, walk_visit, 16, FTW_PHYS)) {
        fprintf(stderr, "fifolab eval: %s %s: %s\n", what, arg, strerror(errno));
        return -1;
    }
    if (out->n == before) {
        fprintf(stderr, "fifolab eval: %s %s: no run files (run.h5) under it\n", what, arg);
        return -1;
    }
    qsort(out->p + before, (size_t)(out->n - before), sizeof *out->p, cmp_str);
    return 0;
}

/* ---- one run file, read side ------------------------------------------------------------ */

typedef struct run_in {
    const char *path;
    hid_t f, lat;
    char status[32];
    int64_t n;           /* frames stored */
    int c, h, w;         /* frame shape */
    int window;          /* the model's window (/schedule window), 0 unknown */
    fl_cfg *cfg;         /* the resolved configuration, NULL when unreadable */
    fl_experiment ex;    /* built from cfg (the oracle's model, the run's metric options) */
    int have_ex;
    char ex_error[FL_ERRMSG_MAX];
} run_in;

static void run_close(run_in *r)
{
    fl_h5_lock();
    if (r->lat >= 0)
        H5Dclose(r->lat);
    if (r->f >= 0)
        H5Fclose(r->f);
    fl_h5_unlock();
    r->lat = r->f = -1;
    if (r->have_ex)
        fl_experiment_free(&r->ex);
    r->have_ex = 0;
    fl_cfg_free(r->cfg);
    r->cfg = NULL;
}

/* Whether a run file with status "running" has a live writer: 1 alive (or cannot tell:
 * another host), 0 gone. */
static int writer_alive(hid_t f, char *host, size_t hn, int64_t *pid)
{
    fl_error e;
    char me[256] = "";
    *pid = 0;
    host[0] = 0;
    fl_h5_get_attr_str(f, "host", host, hn, &e);
    fl_h5_get_attr_i64(f, "pid", pid, &e);
    gethostname(me, sizeof me - 1);
    if (strcmp(me, host) || *pid <= 0)
        return 1;
    return !(kill((pid_t)*pid, 0) && errno == ESRCH);
}

/* Opens a run file for reading; refuses one being written. `reference`: 0 a run to evaluate
 * (needs a status that lets it be written afterwards), 1 a reference (read only). */
static fl_status run_open(const char *path, int reference, run_in *r, fl_error *err)
{
    memset(r, 0, sizeof *r);
    r->path = path;
    r->f = r->lat = -1;
    int64_t fid;
    fl_status st = fl_runfile_open_read(path, &fid, err);
    if (st)
        return st;
    r->f = (hid_t)fid;
    if (fl_h5_get_attr_str(r->f, "status", r->status, sizeof r->status, err)) {
        run_close(r);
        return fl_error_set(err, FL_E_FORMAT, "%s: not a fifolab run file (no status attribute)", path);
    }
    if (!reference && !strcmp(r->status, "running")) {
        char host[256];
        int64_t pid;
        int alive = writer_alive(r->f, host, sizeof host, &pid);
        run_close(r);
        if (alive)
            return fl_error_set(err, FL_E_INVALID,
                                "%s: being written (status running, writer pid %" PRId64 " on %s): evaluate it once it has finished",
                                path, pid, host);
        return fl_error_set(err, FL_E_INVALID,
                            "%s: status running but its writer (pid %" PRId64 ") is gone (killed?): 'fifolab resume' completes it; evaluate it then",
                            path, pid);
    }
    fl_h5_lock();
    r->lat = H5Lexists(r->f, "frames", H5P_DEFAULT) > 0 && H5Lexists(r->f, "frames/latent", H5P_DEFAULT) > 0
                 ? H5Dopen2(r->f, "frames/latent", H5P_DEFAULT)
                 : -1;
    hsize_t dims[4] = { 0, 0, 0, 0 };
    int rank = -1;
    if (r->lat >= 0) {
        hid_t sp = H5Dget_space(r->lat);
        rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
        if (rank == 4)
            H5Sget_simple_extent_dims(sp, dims, NULL);
        if (sp >= 0)
            H5Sclose(sp);
    }
    int64_t win = 0;
    if (H5Lexists(r->f, "schedule", H5P_DEFAULT) > 0) {
        hid_t g = H5Gopen2(r->f, "schedule", H5P_DEFAULT);
        fl_error e;
        if (g >= 0 && !fl_h5_get_attr_i64(g, "window", &win, &e))
            r->window = (int)win;
        if (g >= 0)
            H5Gclose(g);
    }
    fl_h5_unlock();
    if (r->lat < 0 || rank != 4) {
        run_close(r);
        return fl_error_set(err, FL_E_FORMAT, "%s: /frames/latent: %s", path,
                            rank < 0 ? "missing" : "expected [N, C, H, W]");
    }
    r->n = (int64_t)dims[0];
    r->c = (int)dims[1];
    r->h = (int)dims[2];
    r->w = (int)dims[3];
    if (r->n < 1) {
        run_close(r);
        return fl_error_set(err, FL_E_FORMAT, "%s: /frames/latent holds no frames", path);
    }
    if (reference)
        return FL_OK;
    /* The model (for the oracle) and the run's metric options, from /config/resolved. */
    char *text = NULL;
    fl_error e;
    r->cfg = fl_cfg_new(NULL);
    if (!r->cfg || fl_h5_read_text(r->f, "config/resolved", &text, &e) || fl_cfg_merge_text(r->cfg, text, &e) ||
        fl_experiment_build(r->cfg, &r->ex, &e))
        snprintf(r->ex_error, sizeof r->ex_error, "/config/resolved: %s", r->cfg ? fl_error_msg(&e) : "out of memory");
    else
        r->have_ex = 1;
    free(text);
    return FL_OK;
}

/* Frames [first, first + count) as f32 into buf. */
static fl_status run_read(run_in *r, int64_t first, int64_t count, float *buf, fl_error *err)
{
    fl_status st = fl_h5_read_rows(r->lat, H5T_NATIVE_FLOAT, first, count, buf, err);
    return st ? fl_error_prefix(err, "%s: /frames/latent", r->path) : FL_OK;
}

/* ---- clip features for the segment-level FD ------------------------------------------------ */

typedef struct feat_spec {
    int c, h, w, clip, stride, pool; /* pool 0: flattened */
    int64_t frame_dim, dim;
} feat_spec;

static fl_status feat_init(feat_spec *fs, int c, int h, int w, const eval_opts *o, int clip, fl_error *err)
{
    memset(fs, 0, sizeof *fs);
    fs->c = c;
    fs->h = h;
    fs->w = w;
    fs->clip = clip;
    fs->stride = o->clip_stride;
    fs->pool = o->pool;
    if (o->pool > h || o->pool > w)
        return fl_error_set(err, FL_E_INVALID, "--pool %d: larger than the %d x %d frames", o->pool, h, w);
    fs->frame_dim = o->pool ? (int64_t)c * o->pool * o->pool : (int64_t)c * h * w;
    fs->dim = fs->frame_dim * clip;
    if (fs->dim > FL_FD_DIM_MAX)
        return fl_error_set(err, FL_E_RANGE,
                            "clip features of %" PRId64 " dimensions (clip %d x %" PRId64 " per frame) exceed %d: use a smaller --pool or --clip",
                            fs->dim, clip, fs->frame_dim, FL_FD_DIM_MAX);
    return FL_OK;
}

static void feat_protocol(const feat_spec *fs, fl_fd_protocol *p)
{
    memset(p, 0, sizeof *p);
    if (fs->pool)
        snprintf(p->extractor, sizeof p->extractor, "latent-avgpool-%dx%d", fs->pool, fs->pool);
    else
        snprintf(p->extractor, sizeof p->extractor, "latent-flat");
    snprintf(p->resize, sizeof p->resize, "none");
    p->clip_len = fs->clip;
    p->dim = fs->dim;
}

/* One frame [C, H, W] to its features: the mean of each channel over each cell of a G x G
 * grid (cells as adaptive average pooling: rows floor(i H / G) .. ceil((i + 1) H / G)). */
static void frame_features(const feat_spec *fs, const float *x, double *out)
{
    if (!fs->pool) {
        for (int64_t i = 0; i < fs->frame_dim; i++)
            out[i] = x[i];
        return;
    }
    int G = fs->pool, H = fs->h, W = fs->w;
    for (int c = 0; c < fs->c; c++)
        for (int by = 0; by < G; by++) {
            int y0 = by * H / G, y1 = ((by + 1) * H + G - 1) / G;
            for (int bx = 0; bx < G; bx++) {
                int x0 = bx * W / G, x1 = ((bx + 1) * W + G - 1) / G;
                double s = 0.0;
                for (int y = y0; y < y1; y++)
                    for (int xx = x0; xx < x1; xx++)
                        s += x[((size_t)c * H + (size_t)y) * (size_t)W + (size_t)xx];
                out[((size_t)c * G + (size_t)by) * (size_t)G + (size_t)bx] = s / ((double)(y1 - y0) * (x1 - x0));
            }
        }
}

/* Turns a stream of frames into clip feature rows: a ring of the last `clip` frame
 * features; clip s (frames s .. s + clip - 1) is formed when s % stride == 0. */
typedef struct clipper {
    const feat_spec *fs;
    double *ring; /* [clip][frame_dim] */
    int64_t next;
} clipper;

static fl_status clipper_init(clipper *cp, const feat_spec *fs, fl_error *err)
{
    cp->fs = fs;
    cp->next = 0;
    cp->ring = malloc((size_t)fs->clip * (size_t)fs->frame_dim * sizeof(double));
    return cp->ring ? FL_OK : fl_error_set(err, FL_E_NOMEM, "clip features: out of memory");
}

/* Feeds frame cp->next; returns 1 and writes the clip row (starting at frame *start) when
 * one is complete. */
static int clipper_put(clipper *cp, const float *frame, double *row, int64_t *start)
{
    const feat_spec *fs = cp->fs;
    int64_t t = cp->next++;
    frame_features(fs, frame, cp->ring + (size_t)(t % fs->clip) * (size_t)fs->frame_dim);
    int64_t s = t - fs->clip + 1;
    if (s < 0 || s % fs->stride)
        return 0;
    for (int j = 0; j < fs->clip; j++)
        memcpy(row + (size_t)j * (size_t)fs->frame_dim, cp->ring + (size_t)((s + j) % fs->clip) * (size_t)fs->frame_dim,
               (size_t)fs->frame_dim * sizeof(double));
    *start = s;
    return 1;
}

/* Rows waiting to go into an accumulator. */
typedef struct row_batch {
    double *x;
    int64_t n, dim;
} row_batch;

static fl_status batch_flush(row_batch *b, fl_fd_stats *a, fl_fd_stats *a2, fl_error *err)
{
    fl_status st = FL_OK;
    if (b->n > 0 && a)
        st = fl_fd_stats_add_f64(a, b->x, b->n, err);
    if (!st && b->n > 0 && a2)
        st = fl_fd_stats_add_f64(a2, b->x, b->n, err);
    b->n = 0;
    return st;
}

/* The reference: every clip of every reference run, one accumulator. */
typedef struct reference {
    feat_spec fs;
    fl_fd_stats *stats;
    int runs;
    char spec[PATH_LEN];
} reference;

static fl_status reference_build(const char *spec, const path_list *runs, const feat_spec *fs, reference *ref,
                                 fl_error *err)
{
    memset(ref, 0, sizeof *ref);
    ref->fs = *fs;
    char *abs = realpath(spec, NULL); /* recorded in the run files: where the clips came from */
    snprintf(ref->spec, sizeof ref->spec, "%s", abs ? abs : spec);
    free(abs);
    fl_fd_protocol p;
    feat_protocol(fs, &p);
    fl_status st = fl_fd_stats_new(&p, NULL, &ref->stats, err);
    if (st)
        return st;
    float *buf = malloc((size_t)READ_CHUNK * (size_t)fs->c * (size_t)fs->h * (size_t)fs->w * sizeof(float));
    row_batch b = { malloc((size_t)FD_BATCH * (size_t)fs->dim * sizeof(double)), 0, fs->dim };
    clipper cp = { 0 };
    if (!buf || !b.x)
        st = fl_error_set(err, FL_E_NOMEM, "reference: out of memory");
    for (int i = 0; i < runs->n && !st; i++) {
        run_in r;
        if ((st = run_open(runs->p[i], 1, &r, err)))
            break;
        if (r.c != fs->c || r.h != fs->h || r.w != fs->w) {
            st = fl_error_set(err, FL_E_SHAPE, "reference %s: frames are [%d, %d, %d], the run's [%d, %d, %d]",
                              r.path, r.c, r.h, r.w, fs->c, fs->h, fs->w);
            run_close(&r);
            break;
        }
        if ((st = clipper_init(&cp, fs, err))) {
            run_close(&r);
            break;
        }
        for (int64_t t0 = 0; t0 < r.n && !st; t0 += READ_CHUNK) {
            int64_t cnt = r.n - t0 < READ_CHUNK ? r.n - t0 : READ_CHUNK;
            if ((st = run_read(&r, t0, cnt, buf, err)))
                break;
            for (int64_t j = 0; j < cnt && !st; j++) {
                int64_t s;
                if (clipper_put(&cp, buf + (size_t)j * (size_t)(fs->c * fs->h * fs->w), b.x + (size_t)b.n * (size_t)b.dim, &s) &&
                    ++b.n == FD_BATCH)
                    st = batch_flush(&b, ref->stats, NULL, err);
            }
        }
        if (!st)
            st = batch_flush(&b, ref->stats, NULL, err);
        if (st)
            fl_error_prefix(err, "reference %s", r.path);
        free(cp.ring);
        cp.ring = NULL;
        run_close(&r);
        ref->runs++;
    }
    free(buf);
    free(b.x);
    if (!st && fl_fd_stats_count(ref->stats) < 2)
        st = fl_error_set(err, FL_E_INVALID,
                          "reference %s: %" PRId64 " clip(s) of %d frames; the Frechet distance needs at least 2", spec,
                          fl_fd_stats_count(ref->stats), fs->clip);
    if (st) {
        fl_fd_stats_free(ref->stats);
        ref->stats = NULL;
    }
    return st;
}

static int same_feat(const feat_spec *a, const feat_spec *b)
{
    return a->c == b->c && a->h == b->h && a->w == b->w && a->clip == b->clip && a->stride == b->stride &&
           a->pool == b->pool;
}

/* ---- series computed for one run ---------------------------------------------------------- */

typedef struct out_series {
    char name[64], unit[32], per[16];
    char description[256];
    int window, stride;
    double *v;
    int64_t n;
    int is_fd; /* extra FD attributes */
} out_series;

typedef struct fd_out {
    int on;
    fl_fd_result video;
    int64_t segment, clips, seg_measured, seg_warned;
    char seg_warning[384];
} fd_out;

static void series_free(out_series *s, int n)
{
    for (int i = 0; i < n; i++)
        free(s[i].v);
    free(s);
}

/* The metric modules to run on r: the named ones, or every one that applies. */
static fl_status module_specs(const run_in *r, const eval_opts *o, fl_metric_spec *specs, fl_metric_opts *opts,
                              size_t *n, fl_error *err)
{
    const char *const *all = fl_metric_names();
    const char *pick[MAX_MODULES];
    size_t k = 0;
    if (o->named) {
        for (int i = 0; i < o->nnames; i++)
            if (strcmp(o->names[i], "fd"))
                pick[k++] = o->names[i];
    } else {
        for (size_t i = 0; all[i] && k < MAX_MODULES; i++) {
            if (!strcmp(all[i], "oracle") &&
                (!r->have_ex || !fl_gauss_is(r->ex.model) || r->ex.model->channels != r->c ||
                 r->ex.model->height != r->h || r->ex.model->width != r->w))
                continue; /* the oracle needs the gauss model the frames came from */
            pick[k++] = all[i];
        }
    }
    for (size_t i = 0; i < k; i++) {
        if (!strcmp(pick[i], "oracle") && !r->have_ex)
            return fl_error_set(err, FL_E_INVALID, "metric oracle needs the run's model: %s", r->ex_error);
        fl_metric_opts_default(&opts[i]);
        if (!r->have_ex && !o->window)
            fprintf(stderr, "fifolab eval: warning: %s: the run's configuration cannot be rebuilt (%s); "
                            "metric %s uses default options, which may differ from the run's\n",
                    r->path, r->ex_error, pick[i]);
        if (r->have_ex)
            for (int j = 0; j < r->ex.nmetrics; j++)
                if (!strcmp(r->ex.metrics[j].name, pick[i]))
                    opts[i] = r->ex.metric_opts[j]; /* as the run computed it online */
        if (o->window) {
            opts[i].window = o->window;
            opts[i].stride = 0;
            opts[i].min_frames = 0;
        }
        specs[i] = (fl_metric_spec){ pick[i], &opts[i] };
    }
    *n = k;
    return FL_OK;
}

/* Series values by position: value i belongs to frame (window start) i * stride. */
static fl_status collect(const fl_metrics *m, const fl_series_log *log, out_series **out, int *nout, fl_error *err)
{
    size_t ns = fl_metrics_series_count(m);
    out_series *s = calloc(ns + 2, sizeof *s); /* + fd_segment, fd_video */
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "series: out of memory");
    for (size_t i = 0; i < ns; i++) {
        const fl_series_info *si = fl_metrics_series(m, i);
        out_series *o = &s[i];
        snprintf(o->name, sizeof o->name, "%s", si->name);
        snprintf(o->unit, sizeof o->unit, "%s", si->unit);
        snprintf(o->description, sizeof o->description, "%s", si->description);
        snprintf(o->per, sizeof o->per, "%s", si->kind == FL_SERIES_WINDOW ? "window" : "frame");
        o->window = si->span;
        o->stride = si->stride > 0 ? si->stride : 1;
        const int64_t *idx;
        const double *val;
        size_t n;
        fl_error e;
        if (fl_series_log_get(log, si->name, &idx, &val, &n, &e))
            n = 0; /* no value at all (too few frames) */
        int64_t len = n ? idx[n - 1] / o->stride + 1 : 0;
        o->v = malloc((size_t)(len > 0 ? len : 1) * sizeof *o->v);
        if (!o->v) {
            series_free(s, (int)ns);
            return fl_error_set(err, FL_E_NOMEM, "series %s: out of memory", si->name);
        }
        for (int64_t j = 0; j < len; j++)
            o->v[j] = NAN;
        for (size_t j = 0; j < n; j++)
            o->v[idx[j] / o->stride] = val[j];
        o->n = len;
    }
    *out = s;
    *nout = (int)ns;
    return FL_OK;
}

/* The distance of segment k's clips to the reference, into segv[k] (left NaN with fewer
 * than two clips). */
static fl_status segment_close(const fl_fd_stats *seg, const reference *ref, int64_t k, double *segv, fd_out *fo,
                               fl_error *err)
{
    if (!seg || k < 0 || fl_fd_stats_count(seg) < 2)
        return FL_OK;
    fl_fd_result res;
    fl_status st = fl_fd_distance(seg, ref->stats, NULL, &res, err);
    if (st)
        return fl_error_prefix(err, "segment at frame %" PRId64, k * fo->segment);
    segv[k] = res.fd;
    fo->seg_measured++;
    if (res.warnings && !fo->seg_warned++)
        snprintf(fo->seg_warning, sizeof fo->seg_warning, "%s", res.warning);
    return FL_OK;
}

/* Reads the run's frames once: metrics and (with a reference) clip features per segment. */
static fl_status evaluate(run_in *r, const eval_opts *o, const reference *ref, out_series **series, int *nseries,
                          fd_out *fo, fl_error *err)
{
    fl_metric_spec specs[MAX_MODULES];
    fl_metric_opts mopts[MAX_MODULES];
    size_t nspec = 0;
    fl_status st = module_specs(r, o, specs, mopts, &nspec, err);
    if (st)
        return st;
    fl_series_log *log = NULL;
    fl_metrics *m = NULL;
    fl_fd_stats *seg = NULL, *video = NULL;
    float *buf = NULL;
    row_batch b = { NULL, 0, 0 };
    clipper cp = { 0 };
    double *segv = NULL;
    int64_t nseg = 0, seg_len = 0;
    fl_frame_format fmt = { FL_FRAME_LATENT, r->c, r->h, r->w };
    if ((st = fl_series_log_new(NULL, &log, err)))
        goto out;
    fl_metric_emit emit = fl_series_log_emit(log);
    if (nspec && (st = fl_metrics_new(specs, nspec, &fmt, r->have_ex ? r->ex.model : NULL, &emit, NULL, &m, err)))
        goto out;
    fl_fd_protocol proto;
    if (ref) {
        feat_protocol(&ref->fs, &proto);
        seg_len = o->segment ? o->segment : 16 * (int64_t)ref->fs.clip;
        nseg = (r->n + seg_len - 1) / seg_len;
        segv = malloc((size_t)(nseg > 0 ? nseg : 1) * sizeof *segv);
        b.dim = ref->fs.dim;
        b.x = malloc((size_t)FD_BATCH * (size_t)b.dim * sizeof(double));
        if (!segv || !b.x) {
            st = fl_error_set(err, FL_E_NOMEM, "fd: out of memory");
            goto out;
        }
        for (int64_t k = 0; k < nseg; k++)
            segv[k] = NAN;
        if ((st = clipper_init(&cp, &ref->fs, err)) || (st = fl_fd_stats_new(&proto, NULL, &video, err)))
            goto out;
        memset(fo, 0, sizeof *fo);
        fo->on = 1;
        fo->segment = seg_len;
    }
    size_t fl = (size_t)r->c * (size_t)r->h * (size_t)r->w;
    buf = malloc((size_t)READ_CHUNK * fl * sizeof *buf);
    if (!buf) {
        st = fl_error_set(err, FL_E_NOMEM, "frames: out of memory");
        goto out;
    }
    int64_t cur_seg = -1;
    for (int64_t t0 = 0; t0 < r->n && !st; t0 += READ_CHUNK) {
        int64_t cnt = r->n - t0 < READ_CHUNK ? r->n - t0 : READ_CHUNK;
        if ((st = run_read(r, t0, cnt, buf, err)))
            break;
        for (int64_t j = 0; j < cnt && !st; j++) {
            const float *x = buf + (size_t)j * fl;
            if (m && (st = fl_metrics_put(m, t0 + j, x, err)))
                break;
            int64_t s;
            if (!ref || !clipper_put(&cp, x, b.x + (size_t)b.n * (size_t)b.dim, &s))
                continue;
            fo->clips++;
            /* clip s .. s + clip - 1 counts for segment k when it lies wholly inside it */
            int64_t k = s / seg_len;
            if (s + ref->fs.clip > (k + 1) * seg_len) {
                st = fl_fd_stats_add_f64(video, b.x + (size_t)b.n * (size_t)b.dim, 1, err);
                continue;
            }
            if (k != cur_seg) {
                /* a new segment: the previous one is complete (the new clip row moves to
                 * the front of the emptied batch) */
                int64_t at = b.n;
                if ((st = batch_flush(&b, seg, video, err)) ||
                    (st = segment_close(seg, ref, cur_seg, segv, fo, err)))
                    break;
                memmove(b.x, b.x + (size_t)at * (size_t)b.dim, (size_t)b.dim * sizeof(double));
                fl_fd_stats_free(seg);
                seg = NULL;
                if ((st = fl_fd_stats_new(&proto, NULL, &seg, err)))
                    break;
                cur_seg = k;
            }
            if (++b.n == FD_BATCH)
                st = batch_flush(&b, seg, video, err);
        }
    }
    if (!st && m)
        st = fl_metrics_finish(m, err);
    if (!st && ref) {
        st = batch_flush(&b, seg, video, err);
        /* the last segment: measured when it spans at least half a segment of frames */
        if (!st && seg && r->n - cur_seg * seg_len >= (seg_len + 1) / 2)
            st = segment_close(seg, ref, cur_seg, segv, fo, err);
        if (!st && fl_fd_stats_count(video) < 2)
            st = fl_error_set(err, FL_E_INVALID, "fd: the run has %" PRId64 " clip(s) of %d frames; at least 2 are needed",
                              fl_fd_stats_count(video), ref->fs.clip);
        if (!st)
            st = fl_fd_distance(video, ref->stats, NULL, &fo->video, err);
        if (st)
            fl_error_prefix(err, "fd");
    }
    if (st)
        goto out;
    if (m)
        st = collect(m, log, series, nseries, err);
    else if (!(*series = calloc(2, sizeof **series)))
        st = fl_error_set(err, FL_E_NOMEM, "series: out of memory");
    else
        *nseries = 0;
    if (!st && ref) {
        /* drop the trailing segments never measured (too short) */
        int64_t len = r->n / seg_len + (r->n % seg_len >= (seg_len + 1) / 2 ? 1 : 0);
        if (len > nseg)
            len = nseg;
        const feat_spec *fs = &ref->fs;
        char feat[160];
        if (fs->pool)
            snprintf(feat, sizeof feat, "clips of %d frames, each frame's channels average-pooled to %dx%d", fs->clip,
                     fs->pool, fs->pool);
        else
            snprintf(feat, sizeof feat, "clips of %d frames, latents flattened", fs->clip);
        out_series *a = &(*series)[(*nseries)++];
        snprintf(a->name, sizeof a->name, "fd_segment");
        snprintf(a->unit, sizeof a->unit, "latent^2");
        snprintf(a->per, sizeof a->per, "window");
        snprintf(a->description, sizeof a->description,
                 "Frechet distance of the segment's clips to the reference clips (%s)", feat);
        a->window = a->stride = (int)seg_len;
        a->v = segv;
        a->n = len;
        a->is_fd = 1;
        segv = NULL;
        out_series *v = &(*series)[(*nseries)++];
        snprintf(v->name, sizeof v->name, "fd_video");
        snprintf(v->unit, sizeof v->unit, "latent^2");
        snprintf(v->per, sizeof v->per, "window");
        snprintf(v->description, sizeof v->description,
                 "Frechet distance of all the run's clips to the reference clips (%s)", feat);
        v->window = v->stride = (int)r->n;
        v->v = malloc(sizeof *v->v);
        if (!v->v) {
            st = fl_error_set(err, FL_E_NOMEM, "series: out of memory");
        } else {
            v->v[0] = fo->video.fd;
            v->n = 1;
        }
        v->is_fd = 2;
    }
out:
    if (st && *series) {
        series_free(*series, *nseries);
        *series = NULL;
    }
    fl_metrics_free(m);
    fl_series_log_free(log);
    fl_fd_stats_free(seg);
    fl_fd_stats_free(video);
    free(buf);
    free(b.x);
    free(cp.ring);
    free(segv);
    return st;
}

/* ---- writing ---------------------------------------------------------------------------------- */

static fl_status write_one(hid_t f, const out_series *s, const eval_opts *o, const reference *ref, const fd_out *fo,
                           fl_error *err)
{
    char path[128];
    snprintf(path, sizeof path, "metrics/%s", s->name);
    fl_status st = FL_OK;
    fl_h5_lock();
    if (H5Lexists(f, "metrics", H5P_DEFAULT) <= 0) {
        hid_t g = H5Gcreate2(f, "metrics", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0)
            st = fl_error_set(err, FL_E_IO, "/metrics: cannot create");
        else
            H5Gclose(g);
    }
    hid_t d = -1;
    if (!st && H5Lexists(f, path, H5P_DEFAULT) > 0) {
        /* A series there already (online, or an earlier eval): rewritten in place when it
         * is an extendible 1-D float64 dataset, so evaluating again does not grow the file
         * (HDF5 does not reuse the space of deleted datasets); anything else is replaced. */
        d = H5Dopen2(f, path, H5P_DEFAULT);
        hid_t sp = d < 0 ? -1 : H5Dget_space(d), ty = d < 0 ? -1 : H5Dget_type(d);
        hsize_t maxd = 0;
        int reuse = sp >= 0 && ty >= 0 && H5Sget_simple_extent_ndims(sp) == 1 &&
                    H5Sget_simple_extent_dims(sp, NULL, &maxd) == 1 && maxd == H5S_UNLIMITED &&
                    H5Tequal(ty, H5T_NATIVE_DOUBLE) > 0;
        if (sp >= 0)
            H5Sclose(sp);
        if (ty >= 0)
            H5Tclose(ty);
        hsize_t n = (hsize_t)s->n;
        if (reuse && H5Dset_extent(d, &n) < 0)
            reuse = 0;
        if (!reuse) {
            if (d >= 0)
                H5Dclose(d);
            d = -1;
            if (H5Ldelete(f, path, H5P_DEFAULT) < 0)
                st = fl_error_set(err, FL_E_IO, "/%s: cannot replace", path);
        } else {
            /* its old attributes go: those of another writer must not outlive it */
            while (H5Adelete_by_idx(d, ".", H5_INDEX_NAME, H5_ITER_INC, 0, H5P_DEFAULT) >= 0)
                ;
        }
    }
    if (!st && d < 0)
        st = fl_h5_create_rows(f, path, H5T_NATIVE_DOUBLE, 0, NULL, 1024, 0, &d, err);
    if (!st)
        st = fl_h5_write_rows(d, H5T_NATIVE_DOUBLE, 0, s->n, s->v, err);
    if (!st && !(st = fl_h5_attr_str(d, "unit", s->unit, err)) &&
        !(st = fl_h5_attr_str(d, "description", s->description, err)) &&
        !(st = fl_h5_attr_str(d, "per", s->per, err)) && !(st = fl_h5_attr_i64(d, "window", s->window, err)) &&
        !(st = fl_h5_attr_i64(d, "stride", s->stride, err)) && !(st = fl_h5_attr_i64(d, "offset", 0, err)))
        st = fl_h5_attr_str(d, "source", "eval", err);
    if (!st && s->is_fd) {
        const feat_spec *fs = &ref->fs;
        if (!(st = fl_h5_attr_str(d, "reference", ref->spec, err)) &&
            !(st = fl_h5_attr_i64(d, "reference_runs", ref->runs, err)) &&
            !(st = fl_h5_attr_i64(d, "reference_clips", fl_fd_stats_count(ref->stats), err)) &&
            !(st = fl_h5_attr_i64(d, "clip", fs->clip, err)) &&
            !(st = fl_h5_attr_i64(d, "clip_stride", fs->stride, err)) &&
            !(st = fl_h5_attr_i64(d, "pool", fs->pool, err)) && !(st = fl_h5_attr_i64(d, "dim", fs->dim, err)) &&
            !(st = fl_h5_attr_i64(d, "cov_ddof", 1, err)))
            st = fl_h5_attr_i64(d, "clips", s->is_fd == 2 ? fo->video.n_a : fo->clips, err);
        if (!st && s->is_fd == 2 && !(st = fl_h5_attr_f64(d, "mean_term", fo->video.mean_term, err)))
            st = fl_h5_attr_f64(d, "trace_term", fo->video.trace_term, err);
    }
    (void)o;
    if (d >= 0)
        H5Dclose(d);
    fl_h5_unlock();
    return st ? fl_error_prefix(err, "/%s", path) : FL_OK;
}

/* Opens the run file read-write (plain, not SWMR), checks again that nobody writes it,
 * writes every series and closes. SIGINT/SIGTERM wait until the file is closed: a plain
 * HDF5 writer stopped half-way can leave the file damaged. */
static fl_status write_series(const char *path, const out_series *s, int n, const eval_opts *o,
                              const reference *ref, const fd_out *fo, fl_error *err)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    fl_h5_lock();
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    fl_h5_unlock();
    fl_status st = FL_OK;
    if (f < 0) {
        st = fl_error_set(err, FL_E_IO, "%s: cannot open for writing (%s)", path,
                          access(path, W_OK) ? strerror(errno)
                                             : "another process has it open, or it is still marked as being written");
    } else {
        char status[32] = "";
        fl_error e;
        fl_h5_get_attr_str(f, "status", status, sizeof status, &e);
        if (!strcmp(status, "running"))
            st = fl_error_set(err, FL_E_INVALID, "%s: a run started writing it meanwhile (status running)", path);
        for (int i = 0; i < n && !st; i++)
            st = write_one(f, &s[i], o, ref, fo, err);
        if (st && st != FL_E_INVALID)
            fl_error_prefix(err, "%s", path);
        fl_h5_lock();
        if (H5Fclose(f) < 0 && !st)
            st = fl_error_set(err, FL_E_IO, "%s: cannot close (disk full?)", path);
        fl_h5_unlock();
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return st;
}

/* ---- the table ---------------------------------------------------------------------------------- */

static void print_table(const run_in *r, const out_series *s, int n, const reference *ref, const fd_out *fo,
                        int written)
{
    printf("%s  (%s, %" PRId64 " frames of [%d, %d, %d])%s\n", r->path, r->status, r->n, r->c, r->h, r->w,
           written ? "" : "  [not written: --no-write]");
    printf("  %-26s %-6s %6s %12s %12s %12s %12s %12s\n", "series", "per", "values", "mean", "start", "end",
           "contrast", "slope/frame");
    for (int i = 0; i < n; i++) {
        const out_series *a = &s[i];
        double sum = 0;
        int64_t k = 0;
        for (int64_t j = 0; j < a->n; j++)
            if (isfinite(a->v[j])) {
                sum += a->v[j];
                k++;
            }
        printf("  %-26s %-6s %6" PRId64 " %12.6g", a->name, a->per, a->n, k ? sum / (double)k : NAN);
        fl_series_trend t;
        fl_error e;
        int64_t *idx = a->n > 1 ? malloc((size_t)a->n * sizeof *idx) : NULL;
        if (idx) {
            for (int64_t j = 0; j < a->n; j++)
                idx[j] = j * a->stride;
        }
        if (idx && k > 1 && !fl_series_trend_of(idx, a->v, (size_t)a->n, 0.15, &t, &e))
            printf(" %12.6g %12.6g %+12.4g %+12.4g\n", t.start, t.end, t.contrast, t.slope);
        else
            printf(" %12s %12s %12s %12s\n", "-", "-", "-", "-");
        free(idx);
    }
    if (fo && fo->on) {
        const feat_spec *fs = &ref->fs;
        printf("  segment FD against %s: %" PRId64 " clips from %d run%s; D = %" PRId64 " (%d frames x ", ref->spec,
               fl_fd_stats_count(ref->stats), ref->runs, ref->runs == 1 ? "" : "s", fs->dim, fs->clip);
        if (fs->pool)
            printf("%d channels x %dx%d pooled", fs->c, fs->pool, fs->pool);
        else
            printf("%d x %d x %d flattened", fs->c, fs->h, fs->w);
        printf("), clip stride %d, segments of %" PRId64 " frames\n", fs->stride, fo->segment);
        printf("  fd_video %.6g = mean term %.6g + trace term %.6g over %" PRId64 " clips\n", fo->video.fd,
               fo->video.mean_term, fo->video.trace_term, fo->video.n_a);
    }
    printf("\n");
}

/* ---- the command ---------------------------------------------------------------------------------- */

/* The options of eval that take a value. */
static int is_value_option(const char *a)
{
    static const char *const names[] = { "--metrics", "--ref", "--window", "--clip", "--clip-stride",
                                         "--segment", "--pool", NULL };
    for (int k = 0; names[k]; k++)
        if (!strcmp(a, names[k]))
            return 1;
    return 0;
}

/* An int option of eval through the CLI's one parser. */
static int parse_int(const char *opt, const char *v, int lo, int hi, int *out)
{
    long long x;
    if (fl_cli_int("eval", opt, v, lo, hi, &x))
        return -1;
    *out = (int)x;
    return 0;
}

static int parse_metrics(const char *list, eval_opts *o)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    o->named = 1;
    o->nnames = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int known = !strcmp(tok, "fd");
        for (const char *const *n = fl_metric_names(); *n && !known; n++)
            known = !strcmp(*n, tok);
        if (!known) {
            fprintf(stderr, "fifolab eval: --metrics: unknown metric \"%s\"; known:", tok);
            for (const char *const *n = fl_metric_names(); *n; n++)
                fprintf(stderr, " %s", *n);
            fprintf(stderr, " fd\n");
            return -1;
        }
        for (int i = 0; i < o->nnames; i++)
            if (!strcmp(o->names[i], tok)) {
                fprintf(stderr, "fifolab eval: --metrics: \"%s\" named twice\n", tok);
                return -1;
            }
        if (o->nnames == MAX_MODULES) {
            fprintf(stderr, "fifolab eval: --metrics: more than %d names\n", MAX_MODULES);
            return -1;
        }
        snprintf(o->names[o->nnames++], sizeof o->names[0], "%s", tok);
        if (!strcmp(tok, "fd"))
            o->want_fd = 1;
    }
    if (!o->nnames) {
        fprintf(stderr, "fifolab eval: --metrics: empty list\n");
        return -1;
    }
    return 0;
}

int fl_cmd_eval(int argc, char **argv)
{
    eval_opts o;
    memset(&o, 0, sizeof o);
    o.clip_stride = 1;
    o.pool = 1;
    o.write = 1;
    path_list args = { 0 };
    int rc = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            list_free(&args);
            return 0;
        } else if (!strcmp(a, "--no-write")) {
            o.write = 0;
            continue;
        } else if (a[0] == '-' && a[1] == '-' && !v && is_value_option(a)) {
            fprintf(stderr, "fifolab eval: %s: missing its value\n", a);
            bad = 1;
        } else if (!strcmp(a, "--metrics")) {
            bad = parse_metrics(v, &o);
        } else if (!strcmp(a, "--ref")) {
            o.ref = v;
        } else if (!strcmp(a, "--window")) {
            bad = parse_int(a, v, 2, 4096, &o.window);
        } else if (!strcmp(a, "--clip")) {
            bad = parse_int(a, v, 1, 4096, &o.clip);
        } else if (!strcmp(a, "--clip-stride")) {
            bad = parse_int(a, v, 1, 1 << 20, &o.clip_stride);
        } else if (!strcmp(a, "--segment")) {
            bad = parse_int(a, v, 2, 1 << 30, &o.segment);
        } else if (!strcmp(a, "--pool")) {
            bad = parse_int(a, v, 0, 4096, &o.pool);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "fifolab eval: unknown option \"%s\" (see fifolab eval --help)\n", a);
            bad = 1;
        } else {
            if (list_add(&args, a)) {
                fprintf(stderr, "fifolab eval: out of memory\n");
                list_free(&args);
                return 1;
            }
            continue;
        }
        if (bad) {
            list_free(&args);
            return 2;
        }
        i++; /* the option's value */
    }
    if (!args.n) {
        fprintf(stderr, "usage: fifolab eval RUN... [--metrics a,b,...] [--window N] [--ref REF] (see --help)\n");
        list_free(&args);
        return 2;
    }
    if (o.want_fd && !o.ref) {
        fprintf(stderr, "fifolab eval: --metrics fd needs --ref REF (the reference clips)\n");
        list_free(&args);
        return 2;
    }
    if (o.ref)
        o.want_fd = 1;
    path_list runs = { 0 }, refs = { 0 };
    for (int i = 0; i < args.n; i++)
        if (expand_arg(args.p[i], &runs, "run"))
            rc = 1;
    if (o.ref && expand_arg(o.ref, &refs, "--ref")) {
        list_free(&args);
        list_free(&runs);
        return 1;
    }
    reference ref;
    int have_ref = 0;
    memset(&ref, 0, sizeof ref);
    for (int i = 0; i < runs.n; i++) {
        run_in r;
        fl_error err;
        out_series *s = NULL;
        int ns = 0;
        fd_out fo;
        memset(&fo, 0, sizeof fo);
        fl_status st = run_open(runs.p[i], 0, &r, &err);
        if (!st && o.want_fd) {
            feat_spec fs;
            int clip = o.clip ? o.clip : r.window > 0 ? r.window : 16;
            if (!(st = feat_init(&fs, r.c, r.h, r.w, &o, clip, &err)) && (!have_ref || !same_feat(&fs, &ref.fs))) {
                if (have_ref)
                    fl_fd_stats_free(ref.stats);
                have_ref = 0;
                if (!(st = reference_build(o.ref, &refs, &fs, &ref, &err)))
                    have_ref = 1;
            }
            if (!st && (o.segment ? o.segment : 16 * clip) < clip + o.clip_stride)
                st = fl_error_set(&err, FL_E_INVALID, "--segment %d: a segment must hold at least two clips (%d frames)",
                                  o.segment, clip + o.clip_stride);
        }
        if (!st)
            st = evaluate(&r, &o, o.want_fd ? &ref : NULL, &s, &ns, &fo, &err);
        if (st) {
            if (!strstr(fl_error_msg(&err), runs.p[i]))
                fl_error_prefix(&err, "%s", runs.p[i]);
            fprintf(stderr, "fifolab eval: %s\n", fl_error_msg(&err));
            run_close(&r);
            rc = 1;
            continue;
        }
        char status[32];
        snprintf(status, sizeof status, "%s", r.status);
        if (fo.on && fo.video.warnings)
            fprintf(stderr, "fifolab eval: warning: %s: fd_video: %s\n", r.path, fo.video.warning);
        if (fo.on && fo.seg_warned)
            fprintf(stderr, "fifolab eval: warning: %s: fd_segment: %lld of %lld segments: %s\n", r.path,
                    (long long)fo.seg_warned, (long long)fo.seg_measured, fo.seg_warning);
        /* the read handle goes before the file is reopened for writing */
        fl_h5_lock();
        H5Dclose(r.lat);
        H5Fclose(r.f);
        fl_h5_unlock();
        r.lat = r.f = -1;
        if (o.write && (st = write_series(r.path, s, ns, &o, &ref, &fo, &err))) {
            fprintf(stderr, "fifolab eval: %s\n", fl_error_msg(&err));
            rc = 1;
        } else {
            print_table(&r, s, ns, &ref, &fo, o.write);
            if (o.write && strcmp(status, "complete"))
                fprintf(stderr,
                        "fifolab eval: note: %s is %s; resuming it rebuilds its run file without these series: evaluate it again when complete\n",
                        r.path, status);
        }
        series_free(s, ns);
        run_close(&r);
    }
    if (have_ref)
        fl_fd_stats_free(ref.stats);
    list_free(&args);
    list_free(&runs);
    list_free(&refs);
    return rc;
}
