/* One run: experiment -> engine -> run file, with periodic states for resume and a clean
 * stop on signals (core/run.h). The order of writes is what makes a kill at any instant
 * harmless: frames are queued to the writer thread in emission order, a state is saved
 * (write-then-rename) only after every frame before it is flushed, and a resume rebuilds
 * the run file in RUN_DIR/run.h5.tmp from the old file's first `emitted` frames before
 * renaming it over the old one. */
#include "core/run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/engine.h"
#include "core/experiment.h"
#include "core/h5io.h"
#include "core/runfile.h"
#include "core/sweep.h"
#include "data/video.h"
#include "eval/metric.h"
#include "schedulers/schedulers.h"

#define PATH_MAX_LEN 4096
#define REPLAY_CHUNK 64

fl_status fl_mkdirs(const char *path, fl_error *err)
{
    char buf[PATH_MAX_LEN];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return fl_error_set(err, FL_E_INVALID, "%s: path too long", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST)
                return fl_error_set(err, FL_E_IO, "%s: cannot create the directory: %s", buf, strerror(errno));
            *p = '/';
        }
    if (mkdir(buf, 0777) && errno != EEXIST)
        return fl_error_set(err, FL_E_IO, "%s: cannot create the directory: %s", buf, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) || !S_ISDIR(sb.st_mode))
        return fl_error_set(err, FL_E_IO, "%s: not a directory", buf);
    if (access(buf, W_OK))
        return fl_error_set(err, FL_E_IO, "%s: not writable: %s", buf, strerror(errno));
    return FL_OK;
}

fl_status fl_mkdirs_parent(const char *path, fl_error *err)
{
    char dir[PATH_MAX_LEN];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return fl_error_set(err, FL_E_INVALID, "%s: path too long", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return FL_OK;
    slash[slash == dir] = 0; /* "/x" -> "/" */
    return fl_mkdirs(dir, err);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The scripts a run records: the main one, its path and what it included. */
typedef struct sources {
    const char *script, *script_path;
    int nincl;
    const char *const *incl_paths, *const *incl_texts;
} sources;

typedef struct run_ctx {
    const fl_run_opts *o;
    fl_experiment *ex; /* built by the caller of execute, which frees it */
    fl_runfile *rf;
    fl_engine_trace trace;
    int tracing;
    char run_path[PATH_MAX_LEN + 16], state_path[PATH_MAX_LEN + 16], tmp_path[PATH_MAX_LEN + 16];
    uint64_t config_hash;
    int s_windows, s_evals, s_seconds;
    double t0, t_iter, last_ckpt, last_progress, seconds_before;
    fl_engine_stats prev;
    int64_t queued;
    int64_t emitted_at_start;
    int tty;
    /* online metrics: their series' ids in the run file and values written so far */
    fl_metrics *metrics;
    fl_video *video;       /* NULL: none asked, or ffmpeg failed (warned) */
    char video_tmp[3][PATH_MAX_LEN + 32], video_final[3][PATH_MAX_LEN + 32];
    size_t nseries;
    int *series_id;
    int64_t *series_len;
} run_ctx;

/* A metric value to its /metrics series. Value i of a series belongs to frame i * stride;
 * a value that skips ahead (none does today) is preceded by NaN padding. */
static fl_status metric_emit(void *p, const fl_series_info *si, int64_t index, double value,
                             fl_error *err)
{
    run_ctx *c = p;
    for (size_t i = 0; i < c->nseries; i++) {
        if (fl_metrics_series(c->metrics, i) != si)
            continue;
        int64_t stride = si->stride > 0 ? si->stride : 1;
        if (index % stride || index / stride < c->series_len[i])
            return fl_error_set(err, FL_E_INVALID, "metric series %s: value for frame %lld out of order",
                                si->name, (long long)index);
        fl_status st;
        while (c->series_len[i] < index / stride) {
            if ((st = fl_runfile_value(c->rf, c->series_id[i], NAN, err)))
                return st;
            c->series_len[i]++;
        }
        c->series_len[i]++;
        return fl_runfile_value(c->rf, c->series_id[i], value, err);
    }
    return fl_error_set(err, FL_E_INVALID, "metric series %s: not declared", si->name);
}

/* Every emitted frame (and every replayed one) goes to the run file and the metrics. */
static fl_status feed(run_ctx *c, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    fl_status st = fl_runfile_frame(c->rf, index, frame, cond, err);
    if (!st && c->metrics)
        st = fl_metrics_put(c->metrics, index, frame, err);
    if (!st && c->video) {
        fl_error verr;
        if (fl_video_frame_f32(c->video, frame, c->ex->model->channels, FL_COLOUR_LATENT, &verr)) {
            /* a video is a view of the run, not the run: warn, go on without it */
            fprintf(stderr, "fifolab: warning: video stopped: %s\n", fl_error_msg(&verr));
            fl_video_discard(c->video);
            c->video = NULL;
        }
    }
    return st;
}

static fl_status sink_put(void *p, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    run_ctx *c = p;
    fl_status st = feed(c, index, frame, cond, err);
    if (st)
        return st;
    c->queued++;
    if (c->o->die_after > 0 && c->queued >= c->o->die_after)
        raise(SIGKILL); /* test hook: a crash at a chosen frame */
    return FL_OK;
}

static fl_status checkpoint(run_ctx *c, const fl_scheduler *s, const fl_engine_stats *es,
                            fl_error *err)
{
    if (!s->vt->save)
        return FL_OK; /* this scheduler cannot resume: no state (resume restarts it) */
    fl_state *st = fl_state_new();
    if (!st)
        return fl_error_set(err, FL_E_NOMEM, "state");
    fl_status rc;
    double secs = c->seconds_before + (now_s() - c->t0);
    if ((rc = s->vt->save(s, st, err)) ||
        (rc = fl_state_put_i64(st, "run/config_hash", (int64_t)c->config_hash, err)) ||
        (rc = fl_state_put_i64(st, "run/emitted", s->emitted, err)) ||
        (rc = fl_state_put_i64(st, "run/iterations", es->iterations, err)) ||
        (rc = fl_state_put_i64(st, "run/windows", es->windows, err)) ||
        (rc = fl_state_put_i64(st, "run/frame_evals", es->frame_evals, err)) ||
        (rc = fl_state_put_f64(st, "run/seconds", secs, err)))
        goto fail;
    if (c->tracing) {
        int64_t P = c->trace.positions;
        if ((rc = fl_state_put(st, "trace/num", FL_STATE_F64, c->trace.num, P, err)) ||
            (rc = fl_state_put(st, "trace/den", FL_STATE_F64, c->trace.den, P, err)) ||
            (rc = fl_state_put(st, "trace/count", FL_STATE_I64, c->trace.count, P, err)) ||
            (rc = fl_runfile_trace(c->rf, c->trace.num, c->trace.den, c->trace.count, err)))
            goto fail;
    }
    c->last_ckpt = now_s();
    return fl_runfile_checkpoint(c->rf, st, c->state_path, err);
fail:
    fl_state_free(st);
    return rc;
}

static void fmt_secs(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

static void progress(run_ctx *c, const fl_scheduler *s, const fl_engine_stats *es, int last)
{
    double t = now_s();
    if (c->o->quiet || (!last && t - c->last_progress < (c->tty ? 0.25 : 5.0)))
        return;
    c->last_progress = t;
    double el = t - c->t0, done = (double)(s->emitted - c->emitted_at_start);
    double fps = el > 0 ? done / el : 0;
    char e1[32], e2[32];
    fmt_secs(e1, sizeof e1, el);
    fmt_secs(e2, sizeof e2, fps > 0 ? (double)(s->total - s->emitted) / fps : -1);
    fprintf(stderr, "%s%s%sframe %lld/%lld  %.1f frames/s  %lld denoiser calls  elapsed %s  ETA %s%s",
            c->tty ? "\r" : "", c->o->label ? c->o->label : "", c->o->label ? ": " : "",
            (long long)s->emitted, (long long)s->total, fps, (long long)es->windows, e1, e2,
            c->tty ? (last ? "\n" : "\033[K") : "\n");
    fflush(stderr);
}

static fl_status after_iteration(void *p, fl_scheduler *s, const fl_engine_stats *es, fl_error *err)
{
    run_ctx *c = p;
    double t = now_s();
    fl_status st;
    if ((st = fl_runfile_value(c->rf, c->s_windows, (double)(es->windows - c->prev.windows), err)) ||
        (st = fl_runfile_value(c->rf, c->s_evals, (double)(es->frame_evals - c->prev.frame_evals), err)) ||
        (st = fl_runfile_value(c->rf, c->s_seconds, t - c->t_iter, err)))
        return st;
    c->t_iter = t;
    c->prev = *es;
    if (c->ex->snapshot_every > 0 && s->iteration % c->ex->snapshot_every == 0) {
        int Q, ctx;
        if (fl_fifo_schedule(s, &Q, &ctx, NULL, NULL, NULL) == FL_OK) {
            float *q = malloc((size_t)Q * (size_t)((int64_t)c->ex->model->channels * c->ex->model->height * c->ex->model->width) * sizeof(float));
            int32_t *step = malloc((size_t)Q * sizeof *step);
            if (!q || !step)
                st = fl_error_set(err, FL_E_NOMEM, "queue snapshot");
            else if (fl_fifo_queue(s, q, step, NULL) == FL_OK) /* no queue yet in the clip phase */
                st = fl_runfile_snapshot(c->rf, s->iteration, q, step, err);
            free(q);
            free(step);
            if (st)
                return st;
        }
    }
    progress(c, s, es, 0);
    if (c->o->stop && *c->o->stop)
        return fl_error_set(err, FL_E_INTERRUPTED, "interrupted by signal %d", (int)*c->o->stop);
    if (t - c->last_ckpt >= c->o->checkpoint_seconds && !fl_scheduler_done(s))
        return checkpoint(c, s, es, err);
    return FL_OK;
}

static fl_status replay_snapshots(run_ctx *c, hid_t old, int64_t iters, fl_error *err)
{
    fl_h5_lock();
    int have = H5Lexists(old, "trace/queue", H5P_DEFAULT) > 0;
    hid_t dq = have ? H5Dopen2(old, "trace/queue", H5P_DEFAULT) : -1;
    hid_t di = have ? H5Dopen2(old, "trace/queue_iteration", H5P_DEFAULT) : -1;
    hid_t ds = have ? H5Dopen2(old, "trace/queue_step", H5P_DEFAULT) : -1;
    fl_h5_unlock();
    fl_status st = FL_OK;
    int64_t n = dq < 0 || di < 0 || ds < 0 ? 0 : fl_h5_rows(di);
    if (n > fl_h5_rows(dq))
        n = fl_h5_rows(dq);
    if (n > fl_h5_rows(ds))
        n = fl_h5_rows(ds);
    int Q = c->ex->scheduler->positions;
    int64_t fs = (int64_t)c->ex->model->channels * c->ex->model->height * c->ex->model->width;
    float *q = n > 0 ? malloc((size_t)Q * (size_t)fs * sizeof *q) : NULL;
    int32_t *step = n > 0 ? malloc((size_t)Q * sizeof *step) : NULL;
    if (n > 0 && (!q || !step))
        st = fl_error_set(err, FL_E_NOMEM, "resume: snapshots");
    for (int64_t r = 0; r < n && !st; r++) {
        int64_t it;
        if ((st = fl_h5_read_rows(di, H5T_NATIVE_INT64, r, 1, &it, err)) || it > iters)
            break;
        if (!(st = fl_h5_read_rows(dq, H5T_NATIVE_FLOAT, r, 1, q, err)) &&
            !(st = fl_h5_read_rows(ds, H5T_NATIVE_INT32, r, 1, step, err)))
            st = fl_runfile_snapshot(c->rf, it, q, step, err);
    }
    free(q);
    free(step);
    fl_h5_lock();
    if (dq >= 0)
        H5Dclose(dq);
    if (di >= 0)
        H5Dclose(di);
    if (ds >= 0)
        H5Dclose(ds);
    fl_h5_unlock();
    return st;
}

/* Reads the first `frames` frames of the old run file and feeds them through the sink of
 * the new one; copies the per-iteration series of the first `iters` iterations. */
static fl_status replay(run_ctx *c, hid_t old, int64_t frames, int64_t iters, fl_error *err)
{
    fl_status st = FL_OK;
    int64_t fs = ((int64_t)c->ex->model->channels * c->ex->model->height * c->ex->model->width);
    float *buf = malloc((size_t)REPLAY_CHUNK * (size_t)fs * sizeof(float));
    int32_t *cond = malloc(REPLAY_CHUNK * sizeof *cond);
    double *vals = NULL;
    if (!buf || !cond) {
        st = fl_error_set(err, FL_E_NOMEM, "resume: replay buffer");
        goto done;
    }
    fl_h5_lock();
    hid_t dl = H5Dopen2(old, "frames/latent", H5P_DEFAULT), dc = H5Dopen2(old, "frames/condition", H5P_DEFAULT);
    fl_h5_unlock();
    int64_t have = dl < 0 ? -1 : fl_h5_rows(dl);
    if (dl < 0 || dc < 0 || have < frames) {
        st = fl_error_set(err, FL_E_FORMAT,
                          "the run file holds %lld frames but the saved state has emitted %lld: cannot resume (rerun with 'fifolab run SCRIPT --force' to start over)",
                          (long long)(have < 0 ? 0 : have), (long long)frames);
    }
    for (int64_t i = 0; !st && i < frames; i += REPLAY_CHUNK) {
        int64_t n = frames - i < REPLAY_CHUNK ? frames - i : REPLAY_CHUNK;
        if ((st = fl_h5_read_rows(dl, H5T_NATIVE_FLOAT, i, n, buf, err)) ||
            (st = fl_h5_read_rows(dc, H5T_NATIVE_INT32, i, n, cond, err)))
            break;
        for (int64_t j = 0; j < n && !st; j++)
            st = feed(c, i + j, buf + j * fs, cond[j], err);
    }
    fl_h5_lock();
    if (dl >= 0)
        H5Dclose(dl);
    if (dc >= 0)
        H5Dclose(dc);
    fl_h5_unlock();
    static const char *const names[3] = { "metrics/iteration_windows", "metrics/iteration_frame_evals",
                                           "metrics/iteration_seconds" };
    int ids[3] = { c->s_windows, c->s_evals, c->s_seconds };
    vals = malloc((size_t)(iters > 0 ? iters : 1) * sizeof *vals);
    if (!st && !vals)
        st = fl_error_set(err, FL_E_NOMEM, "resume: series");
    for (int k = 0; k < 3 && !st; k++) {
        fl_h5_lock();
        hid_t d = H5Lexists(old, names[k], H5P_DEFAULT) > 0 ? H5Dopen2(old, names[k], H5P_DEFAULT) : -1;
        fl_h5_unlock();
        int64_t n = d < 0 ? 0 : fl_h5_rows(d);
        n = n < iters ? n : iters;
        if (n > 0)
            st = fl_h5_read_rows(d, H5T_NATIVE_DOUBLE, 0, n, vals, err);
        for (int64_t i = n; i < iters; i++)
            vals[i] = NAN; /* lost with the killed writer's buffers */
        for (int64_t i = 0; i < iters && !st; i++)
            st = fl_runfile_value(c->rf, ids[k], vals[i], err);
        if (d >= 0) {
            fl_h5_lock();
            H5Dclose(d);
            fl_h5_unlock();
        }
    }
    /* queue snapshots taken up to the state's iteration (after_iteration snapshots before
     * it checkpoints) */
    if (!st && c->ex->snapshot_every > 0)
        st = replay_snapshots(c, old, iters, err);
done:
    free(buf);
    free(cond);
    free(vals);
    return st;
}

/* Removes the temporary videos of earlier processes in dir (one fifolab holds a run
 * directory at a time, so they are a killed run's). Its ffmpeg may outlive it and still be
 * writing: unlinked, that file no longer has a name this run could be handed. */
static void remove_stale_video_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[PATH_MAX_LEN + 300];
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "video.mp4.tmp", 13) || !strncmp(e->d_name, "video.gif.tmp", 13)) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

/* Opens the run's video outputs (as video.*.tmp.PID files, renamed when the run completes:
 * a resume rewrites them whole from the replayed frames). Failures are warnings. */
static void video_open(run_ctx *c, const char *dir)
{
    static const char *const names[3] = { "video.mp4", "video.gif", "frames_png" };
    int want[3] = { c->ex->video.mp4, c->ex->video.gif, c->ex->video.png };
    if (!want[0] && !want[1] && !want[2])
        return;
    for (int k = 0; k < 3; k++) {
        snprintf(c->video_final[k], sizeof c->video_final[k], "%s/%s", dir, names[k]);
        snprintf(c->video_tmp[k], sizeof c->video_tmp[k], "%s/%s.tmp.%ld", dir, names[k], (long)getpid());
        if (!want[k])
            c->video_tmp[k][0] = c->video_final[k][0] = 0;
    }
    remove_stale_video_tmp(dir);
    int H = c->ex->model->height, W = c->ex->model->width, side = H > W ? H : W;
    int scale = c->ex->video.scale ? c->ex->video.scale : (256 + side - 1) / side;
    fl_video_opts vo = { .mp4 = want[0] ? c->video_tmp[0] : NULL, .gif = want[1] ? c->video_tmp[1] : NULL,
                         .png_dir = want[2] ? c->video_final[2] : NULL, .fps = c->ex->video.fps,
                         .scale = scale > 64 ? 64 : scale };
    fl_error verr;
    if (fl_video_open(&c->video, &vo, H, W, &verr)) {
        fprintf(stderr, "fifolab: warning: no video: %s (the run file is written all the same)\n",
                fl_error_msg(&verr));
        c->video = NULL;
    }
}

/* Finishes the video: complete -> renamed into place; otherwise dropped. */
static void video_close(run_ctx *c, int complete)
{
    if (!c->video)
        return;
    fl_error verr;
    if (!complete) {
        fl_video_discard(c->video);
        c->video = NULL;
        for (int k = 0; k < 2; k++)
            if (c->video_tmp[k][0])
                unlink(c->video_tmp[k]);
        return;
    }
    fl_status st = fl_video_close(c->video, &verr);
    c->video = NULL;
    for (int k = 0; k < 2; k++) {
        if (!c->video_tmp[k][0])
            continue;
        if (st || rename(c->video_tmp[k], c->video_final[k])) {
            fprintf(stderr, "fifolab: warning: %s not written: %s\n", c->video_final[k],
                    st ? fl_error_msg(&verr) : strerror(errno));
            unlink(c->video_tmp[k]);
        } else if (!c->o->quiet) {
            printf("%s\n", c->video_final[k]);
        }
    }
}

/* Runs cfg into dir. `old` >= 0: an existing run file of the same configuration, resumed
 * from `state` (NULL: from the start). */
/* Runs (or continues) the experiment ex, built from cfg by the caller (once per command:
 * building may read a dataset or decode a source video), into dir. */
static fl_status execute(const fl_run_opts *o, fl_cfg *cfg, fl_experiment *ex, const sources *src,
                         const char *dir, hid_t old,
                         const fl_state *state, int64_t created, int64_t resumed,
                         fl_run_outcome *outcome, fl_error *err)
{
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.ex = ex;
    c.tty = isatty(2);
    fl_status st;
    char *resolved = NULL;
    size_t n = fl_cfg_format(cfg, 0, NULL, 0);
    resolved = malloc(n + 1);
    if (!resolved)
        return fl_error_set(err, FL_E_NOMEM, "configuration text");
    fl_cfg_format(cfg, 0, resolved, n + 1);
    char id[FL_RUN_ID_LEN + 1];
    fl_run_id(cfg, id);
    c.config_hash = strtoull(id, NULL, 16);
    snprintf(c.run_path, sizeof c.run_path, "%s/run.h5", dir);
    snprintf(c.state_path, sizeof c.state_path, "%s/state.h5", dir);
    snprintf(c.tmp_path, sizeof c.tmp_path, "%s/run.h5.tmp", dir);
    fl_scheduler *s = c.ex->scheduler;
    fl_engine_stats start = { 0 };
    int positions = s->positions > 0 ? s->positions : 1;
    c.tracing = c.ex->oracle;
    if (c.tracing && (st = fl_engine_trace_init(&c.trace, positions, err)))
        goto out;
    if (state) {
        int64_t h = 0;
        if (!s->vt->restore)
            st = fl_error_set(err, FL_E_UNSUPPORTED, "scheduler %s cannot resume", s->vt->name);
        else if ((st = fl_state_get_i64(state, "run/config_hash", &h, err)) || (uint64_t)h != c.config_hash)
            st = st ? st : fl_error_set(err, FL_E_INVALID, "%s: the saved state belongs to another configuration", c.state_path);
        if (!st)
            st = s->vt->restore(s, state, err);
        if (!st && !(st = fl_state_get_i64(state, "run/iterations", &start.iterations, err)) &&
            !(st = fl_state_get_i64(state, "run/windows", &start.windows, err)) &&
            !(st = fl_state_get_i64(state, "run/frame_evals", &start.frame_evals, err)))
            st = fl_state_get_f64(state, "run/seconds", &c.seconds_before, err);
        if (!st && c.tracing && !(st = fl_state_get(state, "trace/num", FL_STATE_F64, c.trace.num, positions, err)) &&
            !(st = fl_state_get(state, "trace/den", FL_STATE_F64, c.trace.den, positions, err)))
            st = fl_state_get(state, "trace/count", FL_STATE_I64, c.trace.count, positions, err);
        start.emitted = s->emitted;
        if (st) {
            fl_error_prefix(err, "%s", c.state_path);
            goto out;
        }
    }
    c.prev = start;
    c.emitted_at_start = s->emitted;
    /* The run file: a fresh run writes run.h5; a resume rebuilds it beside the old one. */
    const char *target = old >= 0 ? c.tmp_path : c.run_path;
    unlink(c.tmp_path);
    int Q = 0, ctx = 0;
    fl_level *lv = NULL;
    int *step = NULL;
    if (fl_fifo_schedule(s, &Q, &ctx, NULL, NULL, NULL) == FL_OK) {
        lv = malloc((size_t)Q * sizeof *lv);
        step = malloc((size_t)Q * sizeof *step);
        if (!lv || !step) {
            free(lv);
            free(step);
            st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory for the schedule of %d positions", target, Q);
            goto out;
        }
        fl_fifo_schedule(s, &Q, &ctx, lv, step, NULL);
    }
    const fl_cfg *pn = fl_cfg_lookup(cfg, "scheduler.planner.partitions");
    fl_runfile_info info = {
        .name = c.ex->name, .run_id = id, .script = src->script, .script_path = src->script_path,
        .nincludes = src->nincl, .include_paths = src->incl_paths, .include_texts = src->incl_texts,
        .resolved = resolved, .git_commit = o->git_commit, .git_dirty = o->git_dirty,
        .seed = c.ex->seed, .channels = c.ex->model->channels, .height = c.ex->model->height,
        .width = c.ex->model->width, .frames = c.ex->frames, .scheduler = s->vt->name,
        .window = c.ex->model->window, .steps = c.ex->steps,
        .partitions = pn ? (int)fl_cfg_num_value(pn) : 0, .positions = lv && step ? Q : 0,
        .context = ctx, .levels = lv, .step_index = step,
        .snapshot_every = c.ex->snapshot_every, .trace_positions = c.tracing ? positions : 0,
        .nconditions = c.ex->timeline.nprompts, .conditions = c.ex->timeline.prompts,
        .created = created, .resumed = resumed,
    };
    st = fl_runfile_create(&c.rf, target, &info, err);
    free(lv);
    free(step);
    if (st)
        goto out;
    if ((st = fl_runfile_series(c.rf, "iteration_windows", "calls", "denoiser window calls in the iteration",
                                FL_RUNFILE_PER_ITERATION, 1, 1, 0, &c.s_windows, err)) ||
        (st = fl_runfile_series(c.rf, "iteration_frame_evals", "frames", "frames passed through the denoiser in the iteration",
                                FL_RUNFILE_PER_ITERATION, 1, 1, 0, &c.s_evals, err)) ||
        (st = fl_runfile_series(c.rf, "iteration_seconds", "s", "wall time of the iteration (not deterministic)",
                                FL_RUNFILE_PER_ITERATION, 1, 1, 0, &c.s_seconds, err)))
        goto out;
    if (c.ex->nmetrics > 0) {
        fl_metric_spec specs[FL_EXPERIMENT_METRICS_MAX];
        for (int i = 0; i < c.ex->nmetrics; i++)
            specs[i] = (fl_metric_spec){ c.ex->metrics[i].name, &c.ex->metric_opts[i] };
        fl_frame_format fmt = { FL_FRAME_LATENT, c.ex->model->channels, c.ex->model->height, c.ex->model->width };
        fl_metric_emit emit = { metric_emit, &c };
        if ((st = fl_metrics_new(specs, (size_t)c.ex->nmetrics, &fmt, c.ex->model, &emit, NULL, &c.metrics, err)))
            goto out;
        c.nseries = fl_metrics_series_count(c.metrics);
        c.series_id = calloc(c.nseries + 1, sizeof *c.series_id);
        c.series_len = calloc(c.nseries + 1, sizeof *c.series_len);
        if (!c.series_id || !c.series_len) {
            st = fl_error_set(err, FL_E_NOMEM, "metric series");
            goto out;
        }
        for (size_t i = 0; i < c.nseries; i++) {
            const fl_series_info *si = fl_metrics_series(c.metrics, i);
            if ((st = fl_runfile_series(c.rf, si->name, si->unit, si->description,
                                        si->kind == FL_SERIES_WINDOW ? FL_RUNFILE_PER_WINDOW : FL_RUNFILE_PER_FRAME,
                                        si->span, si->stride, 0, &c.series_id[i], err)))
                goto out;
        }
    }
    if ((st = fl_runfile_start(c.rf, err)))
        goto out;
    video_open(&c, dir);
    if (old >= 0) {
        if ((st = replay(&c, old, s->emitted, start.iterations, err)) ||
            (c.tracing && (st = fl_runfile_trace(c.rf, c.trace.num, c.trace.den, c.trace.count, err))) ||
            (st = fl_runfile_sync(c.rf, err)))
            goto out;
        /* The rebuilt file now holds all the old one had that the state vouches for. */
        if ((st = fl_runfile_rename(c.rf, c.run_path, err)))
            goto out;
    }
    c.t0 = c.t_iter = c.last_progress = now_s();
    c.last_ckpt = c.t0;
    c.last_progress -= 10;
    fl_frame_sink sink = { sink_put, &c };
    fl_engine_opts eo = { .trace = c.tracing ? &c.trace : NULL, .after_iteration = after_iteration,
                          .after_ctx = &c, .start = &start };
    fl_engine_stats es = start;
    if (!o->quiet && !c.tty)
        fprintf(stderr, "%s%s%s%s %lld frames with %s into %s/\n", o->label ? o->label : "", o->label ? ": " : "",
                old >= 0 ? "resuming, " : "", old >= 0 ? "" : "generating", (long long)c.ex->frames,
                s->vt->name, dir);
    st = fl_engine_run(s, c.ex->model, &sink, &eo, &es, err);
    if (!st)
        progress(&c, s, &es, 1);
    else if (c.tty && !o->quiet)
        fputc('\n', stderr);
    fl_runfile_totals tot = { s->emitted, es.iterations, es.windows, es.frame_evals,
                              c.seconds_before + now_s() - c.t0 };
    if (st == FL_E_INTERRUPTED) {
        fl_error e2;
        fl_status s2 = checkpoint(&c, s, &es, &e2);
        fl_status s3 = fl_runfile_close(c.rf, s2 ? "failed" : "interrupted", &tot, s2 ? NULL : &e2);
        s2 = s2 ? s2 : s3;
        c.rf = NULL;
        if (s2) {
            *err = e2;
            st = s2;
        } else {
            st = FL_OK;
            *outcome = FL_RUN_INTERRUPTED;
        }
        goto out;
    }
    if (!st && c.tracing)
        st = fl_runfile_trace(c.rf, c.trace.num, c.trace.den, c.trace.count, err);
    if (!st && c.metrics)
        st = fl_metrics_finish(c.metrics, err); /* the trailing windows */
    if (st) {
        /* the last good state stays: the run can be resumed from it */
        fl_runfile_close(c.rf, "failed", &tot, NULL);
        c.rf = NULL;
        goto out;
    }
    video_close(&c, 1);
    st = fl_runfile_close(c.rf, "complete", &tot, err);
    c.rf = NULL;
    if (!st) {
        unlink(c.state_path); /* complete: nothing to resume */
        char stale[PATH_MAX_LEN + 32];
        snprintf(stale, sizeof stale, "%s/state.h5.tmp", dir);
        unlink(stale); /* a state a kill interrupted while it was written */
        *outcome = FL_RUN_COMPLETE;
        if (!o->quiet)
            printf("%s%s%s: %lld frames, %lld iterations, %lld window calls, %.2f s -> %s\n",
                   o->label ? o->label : "", o->label ? " " : "", c.ex->name, (long long)s->emitted,
                   (long long)es.iterations, (long long)es.windows, tot.seconds, c.run_path);
    }
out:
    video_close(&c, 0);
    if (c.rf)
        fl_runfile_close(c.rf, "failed", NULL, NULL);
    fl_metrics_free(c.metrics);
    free(c.series_id);
    free(c.series_len);
    fl_engine_trace_free(&c.trace);
    free(resolved);
    return st;
}

/* What an existing run directory holds. */
typedef struct existing {
    hid_t file;
    char status[32];
    char *resolved, *script, *script_path;
    int nincl; /* /config/includes */
    char **incl_paths, **incl_texts;
    int64_t created, resumed;
} existing;

static void existing_free(existing *e)
{
    if (e->file >= 0)
        fl_runfile_close_read(e->file);
    free(e->resolved);
    free(e->script);
    free(e->script_path);
    for (int i = 0; i < e->nincl; i++) {
        free(e->incl_paths[i]);
        free(e->incl_texts[i]);
    }
    free(e->incl_paths);
    free(e->incl_texts);
    e->nincl = 0;
    e->incl_paths = e->incl_texts = NULL;
    e->file = -1;
    e->resolved = e->script = e->script_path = NULL;
}

/* /config/includes/<i> (text, attribute "path") of an existing run, for its resume. */
static fl_status read_includes(hid_t config, existing *e, fl_error *err)
{
    if (H5Lexists(config, "includes", H5P_DEFAULT) <= 0)
        return FL_OK;
    hid_t ig = H5Gopen2(config, "includes", H5P_DEFAULT);
    H5G_info_t gi;
    if (ig < 0 || H5Gget_info(ig, &gi) < 0) {
        if (ig >= 0)
            H5Gclose(ig);
        return fl_error_set(err, FL_E_FORMAT, "/config/includes: cannot read");
    }
    fl_status st = FL_OK;
    int n = gi.nlinks > 4096 ? 4096 : (int)gi.nlinks;
    e->incl_paths = calloc((size_t)n + 1, sizeof *e->incl_paths);
    e->incl_texts = calloc((size_t)n + 1, sizeof *e->incl_texts);
    if (!e->incl_paths || !e->incl_texts)
        st = fl_error_set(err, FL_E_NOMEM, "/config/includes: out of memory");
    for (int i = 0; !st && i < n; i++) {
        char nm[24], p[PATH_MAX_LEN];
        snprintf(nm, sizeof nm, "%d", i);
        e->nincl = i + 1;
        hid_t d = -1;
        if (!(st = fl_h5_read_text(ig, nm, &e->incl_texts[i], err))) {
            d = H5Dopen2(ig, nm, H5P_DEFAULT);
            if (d < 0)
                st = fl_error_set(err, FL_E_FORMAT, "/config/includes/%s: cannot open", nm);
            else if (!(st = fl_h5_get_attr_str(d, "path", p, sizeof p, err)) && !(e->incl_paths[i] = strdup(p)))
                st = fl_error_set(err, FL_E_NOMEM, "/config/includes: out of memory");
        }
        if (d >= 0)
            H5Dclose(d);
    }
    H5Gclose(ig);
    return st;
}

static fl_status existing_open(const char *path, existing *e, fl_error *err)
{
    memset(e, 0, sizeof *e);
    e->file = -1;
    int64_t f;
    fl_status st = fl_runfile_open_read(path, &f, err);
    if (st)
        return st;
    e->file = (hid_t)f;
    if ((st = fl_h5_get_attr_str(e->file, "status", e->status, sizeof e->status, err)) ||
        (st = fl_h5_read_text(e->file, "config/resolved", &e->resolved, err))) {
        existing_free(e);
        return fl_error_prefix(err, "%s", path);
    }
    fl_error ignore;
    fl_h5_get_attr_i64(e->file, "created_unix", &e->created, &ignore);
    fl_h5_get_attr_i64(e->file, "resumed", &e->resumed, &ignore);
    /* The script and its path are optional, but one that is there must be read: a resume
     * copies them into the rebuilt file. */
    fl_h5_lock();
    if (H5Lexists(e->file, "config/script", H5P_DEFAULT) > 0)
        st = fl_h5_read_text(e->file, "config/script", &e->script, err);
    hid_t g = st ? -1 : H5Gopen2(e->file, "config", H5P_DEFAULT);
    if (g >= 0) {
        char sp[PATH_MAX_LEN];
        if (H5Aexists(g, "script_path") > 0 && !(st = fl_h5_get_attr_str(g, "script_path", sp, sizeof sp, err)) &&
            !(e->script_path = strdup(sp)))
            st = fl_error_set(err, FL_E_NOMEM, "out of memory for the script path");
        if (!st)
            st = read_includes(g, e, err);
        H5Gclose(g);
    }
    fl_h5_unlock();
    if (st) {
        existing_free(e);
        return fl_error_prefix(err, "%s", path);
    }
    return FL_OK;
}

const char *fl_run_status(const char *dir, char **resolved)
{
    static const char *const known[] = { "complete", "running", "interrupted", "failed" };
    char path[PATH_MAX_LEN + 16];
    snprintf(path, sizeof path, "%s/run.h5", dir);
    if (resolved)
        *resolved = NULL;
    if (access(path, F_OK))
        return "none";
    existing e;
    fl_error err;
    if (existing_open(path, &e, &err))
        return "unreadable";
    const char *s = "unreadable";
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(e.status, known[i]))
            s = known[i];
    if (resolved) {
        *resolved = e.resolved;
        e.resolved = NULL;
    }
    existing_free(&e);
    return s;
}

/* Continues from an existing run file `e` (same configuration). */
static fl_status continue_run(const fl_run_opts *o, fl_cfg *cfg, fl_experiment *ex, const sources *src,
                              const char *dir, existing *e,
                              fl_run_outcome *outcome, fl_error *err)
{
    char state_path[PATH_MAX_LEN + 16];
    snprintf(state_path, sizeof state_path, "%s/state.h5", dir);
    fl_state *state = NULL;
    fl_status st;
    if (!access(state_path, F_OK) && (st = fl_state_load_file(state_path, &state, err)))
        return st;
    st = execute(o, cfg, ex, src, dir, e->file, state, e->created, e->resumed + 1, outcome, err);
    fl_state_free(state);
    return st;
}

static fl_status remove_run(const char *dir, fl_error *err)
{
    static const char *const files[] = { "run.h5", "state.h5", "run.h5.tmp", "state.h5.tmp" };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[PATH_MAX_LEN + 16];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (unlink(p) && errno != ENOENT)
            return fl_error_set(err, FL_E_IO, "%s: cannot remove: %s", p, strerror(errno));
    }
    return FL_OK;
}

/* One process per run directory: an exclusive lock on RUN_DIR/.lock, held until the
 * process ends or fl_run_unlock (a killed process releases it with its descriptor). */
static fl_status run_lock(const char *dir, int *fd, fl_error *err)
{
    char p[PATH_MAX_LEN + 16];
    snprintf(p, sizeof p, "%s/.lock", dir);
    *fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (*fd < 0)
        return fl_error_set(err, FL_E_IO, "%s: %s", p, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB)) {
        close(*fd);
        *fd = -1;
        return fl_error_set(err, FL_E_IO, "%s: another fifolab process is running this run", dir);
    }
    return FL_OK;
}

static void run_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the lock */
}

static fl_status run_point_locked(const fl_run_opts *opts, fl_cfg *cfg, const char *script,
                                  const char *script_path, const char *dir, fl_run_outcome *outcome,
                                  fl_error *err);

fl_status fl_run_point(const fl_run_opts *opts, fl_cfg *cfg, const char *script,
                       const char *script_path, const char *dir, fl_run_outcome *outcome,
                       fl_error *err)
{
    fl_status st;
    int fd;
    if ((st = fl_mkdirs(dir, err)) || (st = run_lock(dir, &fd, err)))
        return st;
    st = run_point_locked(opts, cfg, script, script_path, dir, outcome, err);
    run_unlock(fd);
    return st;
}

static fl_status run_built(const fl_run_opts *opts, fl_cfg *cfg, fl_experiment *ex, const char *script,
                           const char *script_path, const char *dir, fl_run_outcome *outcome, fl_error *err);

static fl_status run_point_locked(const fl_run_opts *opts, fl_cfg *cfg, const char *script,
                                  const char *script_path, const char *dir, fl_run_outcome *outcome,
                                  fl_error *err)
{
    fl_status st;
    /* Resolve first (the comparison with an existing run is between resolved texts); the
     * experiment built here is the one that runs. */
    fl_experiment ex;
    if ((st = fl_experiment_build(cfg, &ex, err)))
        return st;
    st = run_built(opts, cfg, &ex, script, script_path, dir, outcome, err);
    fl_experiment_free(&ex);
    return st;
}

static fl_status run_built(const fl_run_opts *opts, fl_cfg *cfg, fl_experiment *ex, const char *script,
                           const char *script_path, const char *dir, fl_run_outcome *outcome, fl_error *err)
{
    fl_status st;
    sources src = { script, script_path, opts->nincludes, opts->include_paths, opts->include_texts };
    size_t n = fl_cfg_format(cfg, 0, NULL, 0);
    char *text = malloc(n + 1);
    if (!text)
        return fl_error_set(err, FL_E_NOMEM, "configuration text");
    fl_cfg_format(cfg, 0, text, n + 1);
    if ((st = fl_mkdirs(dir, err))) {
        free(text);
        return st;
    }
    char path[PATH_MAX_LEN + 16];
    snprintf(path, sizeof path, "%s/run.h5", dir);
    if (!access(path, F_OK)) {
        existing e;
        if ((st = existing_open(path, &e, err))) {
            if (!opts->force) {
                free(text);
                return fl_error_prefix(err, "%s holds an unreadable run (use --force to overwrite)", dir);
            }
        } else if (strcmp(e.resolved, text) != 0) {
            existing_free(&e);
            if (!opts->force) {
                free(text);
                return fl_error_set(err, FL_E_INVALID,
                                    "%s holds a run of another configuration; use another --out or --force to overwrite it",
                                    dir);
            }
        } else if (!opts->force) {
            free(text);
            if (!strcmp(e.status, "complete")) {
                existing_free(&e);
                *outcome = FL_RUN_SKIPPED;
                if (!opts->quiet)
                    printf("%s%sskipped (complete): %s\n", opts->label ? opts->label : "",
                           opts->label ? " " : "", path);
                return FL_OK;
            }
            st = continue_run(opts, cfg, ex, &src, dir, &e, outcome, err);
            existing_free(&e);
            return st;
        } else {
            existing_free(&e);
        }
        if ((st = remove_run(dir, err))) {
            free(text);
            return st;
        }
    }
    free(text);
    return execute(opts, cfg, ex, &src, dir, -1, NULL, 0, 0, outcome, err);
}

static fl_status resume_locked(const fl_run_opts *opts, const char *dir, fl_run_outcome *outcome,
                               fl_error *err);

fl_status fl_run_resume(const fl_run_opts *opts, const char *dir, fl_run_outcome *outcome,
                        fl_error *err)
{
    char path[PATH_MAX_LEN + 16];
    snprintf(path, sizeof path, "%s/run.h5", dir);
    if (access(path, F_OK))
        return fl_error_set(err, FL_E_IO, "%s: no run here (%s)", dir, strerror(errno));
    int fd;
    fl_status st = run_lock(dir, &fd, err);
    if (st)
        return st;
    st = resume_locked(opts, dir, outcome, err);
    run_unlock(fd);
    return st;
}

static fl_status resume_locked(const fl_run_opts *opts, const char *dir, fl_run_outcome *outcome,
                               fl_error *err)
{
    char path[PATH_MAX_LEN + 16];
    snprintf(path, sizeof path, "%s/run.h5", dir);
    existing e;
    fl_status st = existing_open(path, &e, err);
    if (st)
        return st;
    if (!strcmp(e.status, "complete")) {
        existing_free(&e);
        *outcome = FL_RUN_SKIPPED;
        if (!opts->quiet)
            printf("already complete: %s\n", path);
        return FL_OK;
    }
    fl_cfg *cfg = fl_cfg_new(NULL);
    if (!cfg) {
        existing_free(&e);
        return fl_error_set(err, FL_E_NOMEM, "configuration");
    }
    fl_experiment ex;
    if ((st = fl_cfg_merge_text(cfg, e.resolved, err))) {
        fl_error_prefix(err, "%s: /config/resolved", path);
    } else if (!(st = fl_experiment_build(cfg, &ex, err))) {
        sources src = { e.script, e.script_path, e.nincl, (const char *const *)e.incl_paths,
                        (const char *const *)e.incl_texts };
        st = continue_run(opts, cfg, &ex, &src, dir, &e, outcome, err);
        fl_experiment_free(&ex);
    }
    fl_cfg_free(cfg);
    existing_free(&e);
    return st;
}
