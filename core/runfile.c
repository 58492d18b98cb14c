/* The run file of core/runfile.h: HDF5 creation, the SWMR writer thread and its queue. */
#include "core/runfile.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "core/h5io.h"
#include "core/version.h"

#define MAX_SERIES 256
#define STATUS_BYTES 16    /* fixed size, so the status can be overwritten in SWMR mode */
#define FRAME_BATCH 32     /* frames written per H5Dwrite */
#define FLUSH_SECONDS 0.5  /* how stale an SWMR reader's view may get */

typedef enum msg_kind { MSG_FRAME, MSG_VALUE, MSG_TRACE, MSG_SNAPSHOT, MSG_CHECKPOINT, MSG_SYNC } msg_kind;

typedef struct msg {
    struct msg *next;
    msg_kind kind;
    int64_t index;     /* frame index, iteration */
    int32_t cond;
    int series;
    double value;
    fl_state *state;
    char *path;
    size_t bytes;      /* accounted size */
    uint64_t ticket;   /* MSG_SYNC */
    void *data;        /* frame / snapshot / trace arrays */
} msg;

typedef struct series_buf {
    hid_t dset;
    double *buf;
    int64_t len, cap;  /* values waiting */
    int64_t written;   /* values in the file */
} series_buf;

struct fl_runfile {
    char *path;
    char *old_path; /* the name before fl_runfile_rename */
    hid_t file;
    hid_t latent, condition, trace_num, trace_den, trace_count, trace_err, queue, queue_iter,
        queue_step;
    int C, H, W, positions, trace_positions;
    int64_t fs;
    series_buf s[MAX_SERIES];
    int nseries;
    /* frames waiting to be written */
    float *batch;
    int32_t *batch_cond;
    int64_t batch_first, batch_len, frames_written, snapshots;
    /* the queue */
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_space, cv_done;
    msg *head, *tail;
    size_t queued_bytes;
    int pending_checkpoints; /* queued, not yet handled */
    int stop;
    uint64_t sync_asked, sync_done;
    /* the writer's first error; after it everything is dropped */
    int failed;
    fl_error werr;
    struct timespec last_flush;
    int dirty; /* something written since the last flush */
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static fl_status attrs_root(fl_runfile *rf, const fl_runfile_info *in, fl_error *err)
{
    char host[256] = "unknown";
    gethostname(host, sizeof host - 1);
    time_t created = in->created ? (time_t)in->created : time(NULL);
    char iso[64];
    struct tm tm;
    gmtime_r(&created, &tm);
    strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", &tm);
    hid_t f = rf->file;
    fl_status st;
    if ((st = fl_h5_attr_i64(f, "format_version", FL_RUNFILE_FORMAT_VERSION, err)) ||
        (st = fl_h5_attr_str(f, "fifolab_version", FL_VERSION, err)) ||
        (st = fl_h5_attr_str(f, "git_commit", in->git_commit ? in->git_commit : "unknown", err)) ||
        (st = fl_h5_attr_i64(f, "git_dirty", in->git_dirty, err)) ||
        (st = fl_h5_attr_str(f, "created", iso, err)) ||
        (st = fl_h5_attr_i64(f, "created_unix", (int64_t)created, err)) ||
        (st = fl_h5_attr_str(f, "host", host, err)) ||
        (st = fl_h5_attr_i64(f, "pid", (int64_t)getpid(), err)) ||
        (st = fl_h5_attr_i64(f, "seed", (int64_t)in->seed, err)) ||
        (st = fl_h5_attr_str(f, "name", in->name ? in->name : "", err)) ||
        (st = fl_h5_attr_str(f, "run_id", in->run_id ? in->run_id : "", err)) ||
        (st = fl_h5_attr_str_fixed(f, "status", "running", STATUS_BYTES, err)) ||
        /* totals exist from the start (0 while running) so closing only overwrites them:
         * attributes cannot be created in SWMR mode, and reopening the file after closing
         * it would leave a window in which a kill makes it unreadable */
        (st = fl_h5_attr_i64(f, "frames_emitted", 0, err)) || (st = fl_h5_attr_i64(f, "iterations", 0, err)) ||
        (st = fl_h5_attr_i64(f, "window_calls", 0, err)) || (st = fl_h5_attr_i64(f, "frame_evals", 0, err)) ||
        (st = fl_h5_attr_f64(f, "seconds", 0, err)) ||
        (st = fl_h5_attr_i64(f, "frames_total", in->frames, err)) ||
        (st = fl_h5_attr_i64(f, "resumed", in->resumed, err)))
        return st;
    return FL_OK;
}

static hid_t group(hid_t f, const char *name)
{
    return H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
}

static fl_status write_schedule(fl_runfile *rf, const fl_runfile_info *in, fl_error *err)
{
    hid_t g = group(rf->file, "schedule");
    if (g < 0)
        return fl_error_set(err, FL_E_IO, "/schedule: cannot create");
    fl_status st;
    if ((st = fl_h5_attr_str(g, "scheduler", in->scheduler ? in->scheduler : "", err)) ||
        (st = fl_h5_attr_i64(g, "window", in->window, err)) ||
        (st = fl_h5_attr_i64(g, "steps", in->steps, err)) ||
        (st = fl_h5_attr_i64(g, "partitions", in->partitions, err)) ||
        (st = fl_h5_attr_i64(g, "positions", in->positions, err)) ||
        (st = fl_h5_attr_i64(g, "context", in->context, err)))
        goto done;
    if (in->positions > 0 && in->levels) {
        int P = in->positions;
        double *v = malloc((size_t)P * 4 * sizeof *v);
        int32_t *step = malloc((size_t)P * sizeof *step);
        if (!v || !step) {
            free(v);
            free(step);
            st = fl_error_set(err, FL_E_NOMEM, "/schedule");
            goto done;
        }
        for (int p = 0; p < P; p++) {
            fl_level l = in->levels[p];
            v[p] = l.t;
            v[P + p] = l.alpha;
            v[2 * P + p] = l.sigma;
            v[3 * P + p] = l.alpha * l.alpha / (l.alpha * l.alpha + l.sigma * l.sigma);
            step[p] = in->step_index ? in->step_index[p] : p - in->context;
        }
        static const char *const names[4] = { "timestep", "alpha", "sigma", "alpha_bar" };
        hsize_t dims[1] = { (hsize_t)P };
        hid_t sp = H5Screate_simple(1, dims, NULL);
        for (int k = 0; k < 5 && !st; k++) {
            hid_t type = k < 4 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT32;
            hid_t d = H5Dcreate2(g, k < 4 ? names[k] : "step", type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (d < 0 || H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, k < 4 ? (void *)(v + (size_t)k * P) : (void *)step) < 0)
                st = fl_error_set(err, FL_E_IO, "/schedule: cannot write");
            if (d >= 0)
                H5Dclose(d);
        }
        H5Sclose(sp);
        free(v);
        free(step);
    }
done:
    H5Gclose(g);
    return st;
}

/* /conditions/text: the prompt of each condition id, a 1-D variable-length string array. */
static fl_status write_conditions(fl_runfile *rf, const fl_runfile_info *in, fl_error *err)
{
    hid_t g = group(rf->file, "conditions");
    if (g < 0)
        return fl_error_set(err, FL_E_IO, "/conditions: cannot create");
    fl_status st = FL_OK;
    hsize_t dims[1] = { (hsize_t)(in->nconditions > 0 ? in->nconditions : 0) };
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(g, "text", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0 || (dims[0] && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, in->conditions) < 0))
        st = fl_error_set(err, FL_E_IO, "/conditions/text: cannot write");
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    H5Gclose(g);
    return st;
}

static fl_status fixed_1d(hid_t loc, const char *name, hid_t type, int64_t n, hid_t *out, fl_error *err)
{
    hsize_t dims[1] = { (hsize_t)n };
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    double nan = 0.0 / 0.0; /* "not measured yet", never a zero error */
    if (H5Tequal(type, H5T_NATIVE_DOUBLE) > 0)
        H5Pset_fill_value(pl, H5T_NATIVE_DOUBLE, &nan);
    *out = H5Dcreate2(loc, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return *out < 0 ? fl_error_set(err, FL_E_IO, "%s: cannot create", name) : FL_OK;
}

static void runfile_free(fl_runfile *rf)
{
    if (!rf)
        return;
    fl_h5_lock();
    hid_t ds[] = { rf->latent, rf->condition, rf->trace_num, rf->trace_den, rf->trace_count,
                   rf->trace_err, rf->queue, rf->queue_iter, rf->queue_step };
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        if (ds[i] > 0)
            H5Dclose(ds[i]);
    for (int i = 0; i < rf->nseries; i++) {
        if (rf->s[i].dset > 0)
            H5Dclose(rf->s[i].dset);
        free(rf->s[i].buf);
    }
    if (rf->file > 0)
        H5Fclose(rf->file);
    fl_h5_unlock();
    for (msg *m = rf->head, *n; m; m = n) {
        n = m->next;
        fl_state_free(m->state);
        free(m->path);
        free(m->data);
        free(m);
    }
    pthread_mutex_destroy(&rf->mu);
    pthread_cond_destroy(&rf->cv_work);
    pthread_cond_destroy(&rf->cv_space);
    pthread_cond_destroy(&rf->cv_done);
    free(rf->batch);
    free(rf->batch_cond);
    free(rf->path);
    free(rf->old_path);
    free(rf);
}

fl_status fl_runfile_create(fl_runfile **out, const char *path, const fl_runfile_info *in,
                            fl_error *err)
{
    *out = NULL;
    fl_runfile *rf = calloc(1, sizeof *rf);
    if (!rf)
        return fl_error_set(err, FL_E_NOMEM, "%s", path);
    pthread_mutex_init(&rf->mu, NULL);
    pthread_cond_init(&rf->cv_work, NULL);
    pthread_cond_init(&rf->cv_space, NULL);
    pthread_cond_init(&rf->cv_done, NULL);
    rf->C = in->channels;
    rf->H = in->height;
    rf->W = in->width;
    rf->fs = (int64_t)rf->C * rf->H * rf->W;
    rf->positions = in->positions;
    rf->trace_positions = in->trace_positions;
    rf->path = strdup(path);
    rf->batch = malloc((size_t)FRAME_BATCH * (size_t)rf->fs * sizeof(float));
    rf->batch_cond = malloc(FRAME_BATCH * sizeof(int32_t));
    if (!rf->path || !rf->batch || !rf->batch_cond) {
        runfile_free(rf);
        return fl_error_set(err, FL_E_NOMEM, "%s", path);
    }
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST); /* SWMR needs it */
    rf->file = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (rf->file < 0) {
        st = fl_error_set(err, FL_E_IO, "%s: cannot create the run file (%s)", path,
                          access(path, F_OK) == 0 ? "it exists" : strerror(errno));
        goto done;
    }
    if ((st = attrs_root(rf, in, err)))
        goto done;
    hid_t g = group(rf->file, "config");
    if (g < 0) {
        st = fl_error_set(err, FL_E_IO, "/config: cannot create");
        goto done;
    }
    st = fl_h5_write_text(g, "resolved", in->resolved ? in->resolved : "", err);
    if (!st && in->script)
        st = fl_h5_write_text(g, "script", in->script, err);
    if (!st && in->script_path)
        st = fl_h5_attr_str(g, "script_path", in->script_path, err);
    if (!st && in->nincludes > 0) {
        hid_t ig = group(g, "includes");
        if (ig < 0)
            st = fl_error_set(err, FL_E_IO, "/config/includes: cannot create");
        for (int i = 0; !st && i < in->nincludes; i++) {
            char nm[24];
            snprintf(nm, sizeof nm, "%d", i);
            if (!(st = fl_h5_write_text(ig, nm, in->include_texts[i], err))) {
                hid_t d = H5Dopen2(ig, nm, H5P_DEFAULT);
                st = d < 0 ? fl_error_set(err, FL_E_IO, "/config/includes/%s: cannot open", nm)
                           : fl_h5_attr_str(d, "path", in->include_paths[i], err);
                if (d >= 0)
                    H5Dclose(d);
            }
        }
        if (ig >= 0)
            H5Gclose(ig);
    }
    H5Gclose(g);
    if (st || (st = write_schedule(rf, in, err)))
        goto done;
    if ((st = write_conditions(rf, in, err)))
        goto done;
    int64_t inner[3] = { rf->C, rf->H, rf->W };
    if ((st = fl_h5_create_rows(rf->file, "frames/latent", H5T_NATIVE_FLOAT, 3, inner, 1, 4, &rf->latent, err)) ||
        (st = fl_h5_create_rows(rf->file, "frames/condition", H5T_NATIVE_INT32, 0, NULL, 1024, 0, &rf->condition, err)) ||
        (st = fl_h5_attr_str(rf->latent, "layout", "frames, channels, height, width", err)) ||
        (st = fl_h5_attr_str(rf->latent, "space", "latent", err)))
        goto done;
    hid_t mg = group(rf->file, "metrics"), tg = group(rf->file, "trace");
    if (mg >= 0)
        H5Gclose(mg);
    if (tg < 0 || mg < 0) {
        if (tg >= 0)
            H5Gclose(tg);
        st = fl_error_set(err, FL_E_IO, "/metrics, /trace: cannot create");
        goto done;
    }
    if (rf->trace_positions > 0) {
        int64_t P = rf->trace_positions;
        if ((st = fixed_1d(tg, "position_error", H5T_NATIVE_DOUBLE, P, &rf->trace_err, err)) ||
            (st = fixed_1d(tg, "position_error_num", H5T_NATIVE_DOUBLE, P, &rf->trace_num, err)) ||
            (st = fixed_1d(tg, "position_error_den", H5T_NATIVE_DOUBLE, P, &rf->trace_den, err)) ||
            (st = fixed_1d(tg, "position_error_count", H5T_NATIVE_INT64, P, &rf->trace_count, err)) ||
            (st = fl_h5_attr_str(rf->trace_err, "description",
                                 "relative noise-prediction error per queue position: sum |out - exact|^2 / sum |exact|^2 over the iterations that wrote it",
                                 err)))
            goto tdone;
    }
    if (in->snapshot_every > 0 && rf->positions > 0) {
        int64_t qin[4] = { rf->positions, rf->C, rf->H, rf->W }, pin[1] = { rf->positions };
        if ((st = fl_h5_create_rows(tg, "queue", H5T_NATIVE_FLOAT, 4, qin, 1, 4, &rf->queue, err)) ||
            (st = fl_h5_create_rows(tg, "queue_iteration", H5T_NATIVE_INT64, 0, NULL, 256, 0, &rf->queue_iter, err)) ||
            (st = fl_h5_create_rows(tg, "queue_step", H5T_NATIVE_INT32, 1, pin, 16, 0, &rf->queue_step, err)) ||
            (st = fl_h5_attr_i64(rf->queue, "every", in->snapshot_every, err)))
            goto tdone;
    }
tdone:
    H5Gclose(tg);
done:
    fl_h5_unlock();
    if (st) {
        /* name the file, unless the message already starts with it */
        if (err && strncmp(err->msg, path, strlen(path)))
            fl_error_prefix(err, "%s", path);
        int created = rf->file > 0; /* never remove a file this call did not create */
        runfile_free(rf);
        if (created)
            unlink(path);
        return st;
    }
    *out = rf;
    return FL_OK;
}

fl_status fl_runfile_series(fl_runfile *rf, const char *name, const char *unit,
                            const char *description, fl_runfile_per kind, int window,
                            int stride, int offset, int *id, fl_error *err)
{
    if (rf->started)
        return fl_error_set(err, FL_E_INVALID, "series %s: declared after the run started", name);
    if (rf->nseries == MAX_SERIES)
        return fl_error_set(err, FL_E_RANGE, "series %s: more than %d series", name, MAX_SERIES);
    for (int i = 0; i < rf->nseries; i++) {
        char nm[256];
        H5Iget_name(rf->s[i].dset, nm, sizeof nm);
        if (!strcmp(nm + strlen("/metrics/"), name))
            return fl_error_set(err, FL_E_INVALID, "series %s: declared twice", name);
    }
    char path[300];
    snprintf(path, sizeof path, "metrics/%s", name);
    series_buf *s = &rf->s[rf->nseries];
    static const char *const kinds[3] = { "frame", "window", "iteration" };
    fl_status st;
    fl_h5_lock();
    if (!(st = fl_h5_create_rows(rf->file, path, H5T_NATIVE_DOUBLE, 0, NULL, 1024, 0, &s->dset, err)) &&
        !(st = fl_h5_attr_str(s->dset, "unit", unit ? unit : "", err)) &&
        !(st = fl_h5_attr_str(s->dset, "description", description ? description : "", err)) &&
        !(st = fl_h5_attr_str(s->dset, "per", kinds[kind], err)) &&
        !(st = fl_h5_attr_i64(s->dset, "window", window, err)) &&
        !(st = fl_h5_attr_i64(s->dset, "stride", stride, err)))
        st = fl_h5_attr_i64(s->dset, "offset", offset, err);
    fl_h5_unlock();
    if (st) {
        fl_error_prefix(err, "%s", rf->path);
        return st;
    }
    *id = rf->nseries++;
    return FL_OK;
}

/* ---- the writer thread -------------------------------------------------------------- */

static void werror(fl_runfile *rf, const fl_error *e)
{
    if (!rf->failed) {
        rf->failed = 1;
        rf->werr = *e;
        fl_error_prefix(&rf->werr, "%s", rf->path);
    }
}

/* HDF5 cannot survive a failed write: the file it leaves may not open again. So the
 * writer stops (with an error, the file intact) before a write could fail for lack of
 * space: on the file system (keeping FL_RUNFILE_RESERVE_BYTES free) and under the
 * process's file-size limit. */
static fl_status check_room(fl_runfile *rf, size_t bytes, fl_error *err)
{
    struct stat sb;
    struct statvfs vs;
    size_t need = bytes + ((size_t)1 << 20);
    if (stat(rf->path, &sb) == 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            (uint64_t)sb.st_size + need > (uint64_t)rl.rlim_cur)
            return fl_error_set(err, FL_E_IO,
                                "no room to write: the file-size limit is %llu bytes and the run file has %llu; stopped before it could be damaged (raise the limit, then 'fifolab resume')",
                                (unsigned long long)rl.rlim_cur, (unsigned long long)sb.st_size);
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", rf->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    if (statvfs(dir, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
        if (avail < (uint64_t)need + FL_RUNFILE_RESERVE_BYTES)
            return fl_error_set(err, FL_E_IO,
                                "the disk is nearly full (%.1f MiB free, %.0f MiB kept in reserve); stopped before the run file could be damaged (free space, then 'fifolab resume')",
                                (double)avail / 1048576.0, (double)FL_RUNFILE_RESERVE_BYTES / 1048576.0);
    }
    return FL_OK;
}

static fl_status write_batch(fl_runfile *rf, fl_error *err)
{
    if (!rf->batch_len)
        return FL_OK;
    fl_status st;
    /* gzip may not shrink noise: count frames at twice their raw size, for metadata too */
    if ((st = check_room(rf, 2 * (size_t)rf->batch_len * (size_t)rf->fs * sizeof(float), err)))
        return st;
    if ((st = fl_h5_write_rows(rf->latent, H5T_NATIVE_FLOAT, rf->batch_first, rf->batch_len, rf->batch, err)) ||
        (st = fl_h5_write_rows(rf->condition, H5T_NATIVE_INT32, rf->batch_first, rf->batch_len, rf->batch_cond, err)))
        return fl_error_prefix(err, "/frames");
    rf->frames_written = rf->batch_first + rf->batch_len;
    rf->batch_len = 0;
    return FL_OK;
}

static fl_status write_values(fl_runfile *rf, fl_error *err)
{
    for (int i = 0; i < rf->nseries; i++) {
        series_buf *s = &rf->s[i];
        if (!s->len)
            continue;
        fl_status st = fl_h5_write_rows(s->dset, H5T_NATIVE_DOUBLE, s->written, s->len, s->buf, err);
        if (st)
            return fl_error_prefix(err, "/metrics series %d", i);
        s->written += s->len;
        s->len = 0;
    }
    return FL_OK;
}

static fl_status flush_all(fl_runfile *rf, fl_error *err)
{
    fl_status st;
    if ((st = write_batch(rf, err)) || (st = write_values(rf, err)))
        return st;
    fl_h5_lock();
    int bad = H5Fflush(rf->file, H5F_SCOPE_GLOBAL) < 0;
    fl_h5_unlock();
    clock_gettime(CLOCK_MONOTONIC, &rf->last_flush);
    rf->dirty = 0;
    return bad ? fl_error_set(err, FL_E_IO, "flush failed (disk full?)") : FL_OK;
}

static fl_status handle(fl_runfile *rf, msg *m, fl_error *err)
{
    switch (m->kind) {
    case MSG_FRAME:
        /* frames come in order from 0: a gap would leave rows of zeros in the file */
        if (rf->frames_written + rf->batch_len != m->index)
            return fl_error_set(err, FL_E_INVALID, "frame %lld out of order (expected frame %lld)",
                                (long long)m->index, (long long)(rf->frames_written + rf->batch_len));
        if (!rf->batch_len)
            rf->batch_first = m->index;
        memcpy(rf->batch + rf->batch_len * rf->fs, m->data, (size_t)rf->fs * sizeof(float));
        rf->batch_cond[rf->batch_len++] = m->cond;
        return rf->batch_len == FRAME_BATCH ? write_batch(rf, err) : FL_OK;
    case MSG_VALUE: {
        series_buf *s = &rf->s[m->series];
        if (s->len == s->cap) {
            int64_t cap = s->cap ? 2 * s->cap : 256;
            double *b = realloc(s->buf, (size_t)cap * sizeof *b);
            if (!b)
                return fl_error_set(err, FL_E_NOMEM, "series buffer");
            s->buf = b;
            s->cap = cap;
        }
        s->buf[s->len++] = m->value;
        return s->len >= 4096 ? write_values(rf, err) : FL_OK;
    }
    case MSG_TRACE: {
        int64_t P = rf->trace_positions;
        double *num = m->data, *den = num + P, *rel = den + P;
        int64_t *cnt = (int64_t *)(rel + P);
        fl_h5_lock();
        int bad = H5Dwrite(rf->trace_num, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, num) < 0 ||
                  H5Dwrite(rf->trace_den, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, den) < 0 ||
                  H5Dwrite(rf->trace_err, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rel) < 0 ||
                  H5Dwrite(rf->trace_count, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, cnt) < 0;
        fl_h5_unlock();
        return bad ? fl_error_set(err, FL_E_IO, "/trace: cannot write") : FL_OK;
    }
    case MSG_SNAPSHOT: {
        float *q = m->data;
        fl_status cst = check_room(rf, 2 * m->bytes, err);
        if (cst)
            return cst;
        int32_t *step = (int32_t *)(q + (int64_t)rf->positions * rf->fs);
        fl_status st;
        if ((st = fl_h5_write_rows(rf->queue, H5T_NATIVE_FLOAT, rf->snapshots, 1, q, err)) ||
            (st = fl_h5_write_rows(rf->queue_step, H5T_NATIVE_INT32, rf->snapshots, 1, step, err)) ||
            (st = fl_h5_write_rows(rf->queue_iter, H5T_NATIVE_INT64, rf->snapshots, 1, &m->index, err)))
            return fl_error_prefix(err, "/trace/queue");
        rf->snapshots++;
        return FL_OK;
    }
    case MSG_CHECKPOINT: {
        /* Everything before the state is on disk first, so a state never runs ahead of
         * the frames it claims were emitted. */
        fl_status st = flush_all(rf, err);
        if (!st) /* on disk, not only handed to the OS, before a state vouches for it */
            st = fl_fsync_path(rf->path, err);
        if (st)
            return st;
        size_t state_bytes = 0;
        for (size_t i = 0; i < fl_state_len(m->state); i++) {
            fl_state_type t;
            int64_t count;
            fl_state_entry(m->state, i, &t, NULL, &count);
            state_bytes += (size_t)count * fl_state_type_size(t) + 1024;
        }
        if ((st = check_room(rf, 2 * state_bytes, err)))
            return st;
        char emitted[32], written[32];
        int64_t e = 0;
        fl_state_get_i64(m->state, "run/emitted", &e, NULL);
        snprintf(emitted, sizeof emitted, "%lld", (long long)e);
        snprintf(written, sizeof written, "%lld", (long long)rf->frames_written);
        const char *attrs[] = { "run_file", rf->path, "emitted", emitted, "frames_in_file", written, NULL };
        return fl_state_save_file(m->state, m->path, attrs, err);
    }
    case MSG_SYNC:
        return flush_all(rf, err);
    }
    return FL_OK;
}

static void *writer_main(void *p)
{
    fl_runfile *rf = p;
    pthread_mutex_lock(&rf->mu);
    for (;;) {
        while (!rf->head && !rf->stop) {
            /* Idle: make what is buffered visible to readers within FLUSH_SECONDS. */
            struct timespec t;
            clock_gettime(CLOCK_REALTIME, &t);
            t.tv_nsec += 200000000;
            if (t.tv_nsec >= 1000000000) {
                t.tv_sec++;
                t.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&rf->cv_work, &rf->mu, &t);
            if (!rf->head && !rf->failed) {
                double since = now_s() - ((double)rf->last_flush.tv_sec + 1e-9 * (double)rf->last_flush.tv_nsec);
                if (since > FLUSH_SECONDS && rf->dirty) {
                    pthread_mutex_unlock(&rf->mu);
                    fl_error e;
                    fl_status st = flush_all(rf, &e);
                    pthread_mutex_lock(&rf->mu);
                    if (st)
                        werror(rf, &e);
                }
            }
        }
        if (!rf->head && rf->stop)
            break;
        msg *m = rf->head;
        rf->head = m->next;
        if (!rf->head)
            rf->tail = NULL;
        int failed = rf->failed;
        /* A state with a newer one queued behind it is superseded: saving only the newest
         * keeps a writer that lags behind from spending its time on fsyncs. */
        int superseded = 0;
        if (m->kind == MSG_CHECKPOINT)
            superseded = --rf->pending_checkpoints > 0;
        pthread_mutex_unlock(&rf->mu);
        fl_error e;
        fl_status st = failed || superseded ? FL_OK : handle(rf, m, &e);
        rf->dirty = 1;
        if (!failed && !st && m->kind != MSG_SYNC) {
            double since = now_s() - ((double)rf->last_flush.tv_sec + 1e-9 * (double)rf->last_flush.tv_nsec);
            if (since > FLUSH_SECONDS)
                st = flush_all(rf, &e);
        }
        pthread_mutex_lock(&rf->mu);
        if (st)
            werror(rf, &e);
        rf->queued_bytes -= m->bytes;
        if (m->kind == MSG_SYNC)
            rf->sync_done = m->ticket;
        pthread_cond_broadcast(&rf->cv_space);
        pthread_cond_broadcast(&rf->cv_done);
        fl_state_free(m->state);
        free(m->path);
        free(m->data);
        free(m);
    }
    pthread_mutex_unlock(&rf->mu);
    return NULL;
}

fl_status fl_runfile_start(fl_runfile *rf, fl_error *err)
{
    fl_h5_lock();
    int bad = H5Fstart_swmr_write(rf->file) < 0;
    fl_h5_unlock();
    if (bad)
        return fl_error_set(err, FL_E_IO, "%s: cannot start SWMR writing", rf->path);
    clock_gettime(CLOCK_MONOTONIC, &rf->last_flush);
    if (pthread_create(&rf->thread, NULL, writer_main, rf))
        return fl_error_set(err, FL_E_NOMEM, "%s: cannot start the writer thread", rf->path);
    rf->started = 1;
    return FL_OK;
}

/* Queues m (taking it); blocks while the queue is over its byte budget. */
static fl_status enqueue(fl_runfile *rf, msg *m, fl_error *err)
{
    pthread_mutex_lock(&rf->mu);
    while (!rf->failed && rf->queued_bytes > 0 && rf->queued_bytes + m->bytes > FL_RUNFILE_QUEUE_BYTES)
        pthread_cond_wait(&rf->cv_space, &rf->mu);
    if (rf->failed) {
        if (err)
            *err = rf->werr;
        pthread_mutex_unlock(&rf->mu);
        fl_state_free(m->state);
        free(m->path);
        free(m->data);
        free(m);
        return rf->werr.code ? rf->werr.code : FL_E_IO;
    }
    rf->queued_bytes += m->bytes;
    rf->pending_checkpoints += m->kind == MSG_CHECKPOINT;
    if (rf->tail)
        rf->tail->next = m;
    else
        rf->head = m;
    rf->tail = m;
    pthread_cond_signal(&rf->cv_work);
    pthread_mutex_unlock(&rf->mu);
    return FL_OK;
}

static msg *new_msg(msg_kind kind, size_t data_bytes)
{
    msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->kind = kind;
    m->bytes = sizeof *m + data_bytes;
    if (data_bytes && !(m->data = malloc(data_bytes))) {
        free(m);
        return NULL;
    }
    return m;
}

fl_status fl_runfile_frame(fl_runfile *rf, int64_t index, const float *frame, int32_t cond,
                           fl_error *err)
{
    msg *m = new_msg(MSG_FRAME, (size_t)rf->fs * sizeof(float));
    if (!m)
        return fl_error_set(err, FL_E_NOMEM, "%s: frame %lld", rf->path, (long long)index);
    memcpy(m->data, frame, (size_t)rf->fs * sizeof(float));
    m->index = index;
    m->cond = cond;
    return enqueue(rf, m, err);
}

fl_status fl_runfile_value(fl_runfile *rf, int series, double value, fl_error *err)
{
    FL_ASSERT(series >= 0 && series < rf->nseries);
    msg *m = new_msg(MSG_VALUE, 0);
    if (!m)
        return fl_error_set(err, FL_E_NOMEM, "%s: value", rf->path);
    m->series = series;
    m->value = value;
    return enqueue(rf, m, err);
}

fl_status fl_runfile_trace(fl_runfile *rf, const double *num, const double *den,
                           const int64_t *count, fl_error *err)
{
    int64_t P = rf->trace_positions;
    if (P <= 0)
        return FL_OK;
    msg *m = new_msg(MSG_TRACE, (size_t)P * (3 * sizeof(double) + sizeof(int64_t)));
    if (!m)
        return fl_error_set(err, FL_E_NOMEM, "%s: trace", rf->path);
    double *d = m->data;
    int64_t *c = (int64_t *)(d + 3 * P);
    for (int64_t p = 0; p < P; p++) {
        d[p] = num[p];
        d[P + p] = den[p];
        d[2 * P + p] = count[p] && den[p] > 0 ? num[p] / den[p] : 0.0 / 0.0;
        c[p] = count[p];
    }
    return enqueue(rf, m, err);
}

fl_status fl_runfile_snapshot(fl_runfile *rf, int64_t iteration, const float *frames,
                              const int32_t *step_index, fl_error *err)
{
    if (rf->queue <= 0)
        return FL_OK;
    size_t fb = (size_t)rf->positions * (size_t)rf->fs * sizeof(float);
    msg *m = new_msg(MSG_SNAPSHOT, fb + (size_t)rf->positions * sizeof(int32_t));
    if (!m)
        return fl_error_set(err, FL_E_NOMEM, "%s: snapshot", rf->path);
    memcpy(m->data, frames, fb);
    memcpy((char *)m->data + fb, step_index, (size_t)rf->positions * sizeof(int32_t));
    m->index = iteration;
    return enqueue(rf, m, err);
}

fl_status fl_runfile_checkpoint(fl_runfile *rf, fl_state *st, const char *state_path,
                                fl_error *err)
{
    msg *m = new_msg(MSG_CHECKPOINT, 0);
    char *p = strdup(state_path);
    if (!m || !p) {
        free(m);
        free(p);
        fl_state_free(st);
        return fl_error_set(err, FL_E_NOMEM, "%s: checkpoint", rf->path);
    }
    m->state = st;
    m->path = p;
    return enqueue(rf, m, err);
}

fl_status fl_runfile_sync(fl_runfile *rf, fl_error *err)
{
    msg *m = new_msg(MSG_SYNC, 0);
    if (!m)
        return fl_error_set(err, FL_E_NOMEM, "%s: sync", rf->path);
    pthread_mutex_lock(&rf->mu);
    uint64_t ticket = m->ticket = ++rf->sync_asked;
    pthread_mutex_unlock(&rf->mu);
    fl_status st = enqueue(rf, m, err);
    if (st)
        return st;
    pthread_mutex_lock(&rf->mu);
    while (rf->sync_done < ticket && !rf->failed)
        pthread_cond_wait(&rf->cv_done, &rf->mu);
    if (rf->failed) {
        if (err)
            *err = rf->werr;
        st = rf->werr.code ? rf->werr.code : FL_E_IO;
    }
    pthread_mutex_unlock(&rf->mu);
    return st;
}

fl_status fl_runfile_rename(fl_runfile *rf, const char *path, fl_error *err)
{
    char *p = strdup(path);
    if (!p)
        return fl_error_set(err, FL_E_NOMEM, "%s", path);
    fl_status fst = fl_runfile_sync(rf, err); /* the data reach the disk before the name does */
    if (!fst)
        fst = fl_fsync_path(rf->path, err);
    if (fst) {
        free(p);
        return fst;
    }
    pthread_mutex_lock(&rf->mu);
    int bad = rename(rf->path, path) != 0;
    int e = errno;
    if (!bad) {
        /* the writer thread may still hold the old string: freed at close */
        free(rf->old_path);
        rf->old_path = rf->path;
        rf->path = p;
        p = NULL;
    }
    pthread_mutex_unlock(&rf->mu);
    free(p);
    if (bad)
        return fl_error_set(err, FL_E_IO, "%s: cannot rename to %s: %s", rf->path, path, strerror(e));
    return fl_fsync_dir_of(path, err);
}

fl_status fl_runfile_close(fl_runfile *rf, const char *status, const fl_runfile_totals *t,
                           fl_error *err)
{
    fl_status st = FL_OK;
    if (rf->started) {
        pthread_mutex_lock(&rf->mu);
        rf->stop = 1;
        pthread_cond_signal(&rf->cv_work);
        pthread_mutex_unlock(&rf->mu);
        pthread_join(rf->thread, NULL);
        rf->started = 0;
        fl_error e;
        if (!rf->failed && flush_all(rf, &e))
            werror(rf, &e);
        if (rf->failed) {
            if (err)
                *err = rf->werr;
            st = rf->werr.code ? rf->werr.code : FL_E_IO;
            status = "failed";
        }
    }
    /* How the run ended, written while the file is still open (in place: SWMR allows it). */
    fl_error e2;
    fl_status s2 = fl_h5_attr_str_fixed(rf->file, "status", status, STATUS_BYTES, &e2);
    if (!s2 && t && !(s2 = fl_h5_attr_i64(rf->file, "frames_emitted", t->emitted, &e2)) &&
        !(s2 = fl_h5_attr_i64(rf->file, "iterations", t->iterations, &e2)) &&
        !(s2 = fl_h5_attr_i64(rf->file, "window_calls", t->windows, &e2)) &&
        !(s2 = fl_h5_attr_i64(rf->file, "frame_evals", t->frame_evals, &e2)))
        s2 = fl_h5_attr_f64(rf->file, "seconds", t->seconds, &e2);
    if (s2 && !st) {
        st = s2;
        if (err) {
            *err = e2;
            fl_error_prefix(err, "%s", rf->path);
        }
    }
    fl_h5_lock();
    hid_t ds[] = { rf->latent, rf->condition, rf->trace_num, rf->trace_den, rf->trace_count,
                   rf->trace_err, rf->queue, rf->queue_iter, rf->queue_step };
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        if (ds[i] > 0)
            H5Dclose(ds[i]);
    rf->latent = rf->condition = rf->trace_num = rf->trace_den = rf->trace_count = rf->trace_err =
        rf->queue = rf->queue_iter = rf->queue_step = -1;
    for (int i = 0; i < rf->nseries; i++) {
        H5Dclose(rf->s[i].dset);
        rf->s[i].dset = -1;
    }
    int bad = H5Fclose(rf->file) < 0;
    rf->file = -1;
    if (bad && !st)
        st = fl_error_set(err, FL_E_IO, "%s: cannot close (disk full?)", rf->path);
    fl_h5_unlock();
    runfile_free(rf);
    return st;
}

void fl_runfile_path(const char *arg, char *buf, size_t n)
{
    struct stat sb;
    if (!stat(arg, &sb) && S_ISDIR(sb.st_mode))
        snprintf(buf, n, "%s/run.h5", arg);
    else
        snprintf(buf, n, "%s", arg);
}

fl_status fl_runfile_open_read(const char *path, int64_t *file_id, fl_error *err)
{
    fl_h5_lock();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl);
    if (f < 0) /* a file not written in the SWMR format (older or foreign) */
        f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5Pclose(fapl);
    fl_h5_unlock();
    if (f < 0)
        return fl_error_set(err, FL_E_IO, "%s: cannot open as an HDF5 run file (%s)", path,
                            access(path, R_OK) == 0 ? "not HDF5, or damaged" : strerror(errno));
    *file_id = (int64_t)f;
    return FL_OK;
}

void fl_runfile_close_read(int64_t file_id)
{
    fl_h5_lock();
    H5Fclose((hid_t)file_id);
    fl_h5_unlock();
}
