/* Building an experiment from its configuration (core/experiment.h). */
#include "core/experiment.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/h5io.h"
#include "core/run.h"
#include "data/procgen.h"
#include "data/video_read.h"
#include "models/empirical.h"
#include "models/gauss.h"
#include "schedulers/noise.h"
#include "schedulers/sampler.h"
#include "schedulers/schedulers.h"

static const char *const model_names[] = { "gauss", "empirical", NULL };
static const char *const noise_names[] = { "sqrt_linear", "linear", "cosine", "flow", NULL };
static const char *const sampler_names[] = { "ddim", "ddpm", "euler", NULL };
static const char *const scheduler_names[] = { "fifo", "full", "chunked", NULL };
static const char *const param_names[] = { "eps", "x0", "v", NULL };
static const char *const mismatch_names[] = { "exact", "own", "mean", NULL };
static const char *const condition_names[] = { "hard", "soft", "off", NULL };
static const char *const spacing_names[] = { "uniform", "ldm", "leading", NULL };
static const char *const init_names[] = { "clip", "staircase", "frames", NULL };
static const char *const final_names[] = { "clean", "t0", NULL };

const char *const *fl_experiment_modules(const char *kind)
{
    if (!kind)
        return NULL;
    if (!strcmp(kind, "model"))
        return model_names;
    if (!strcmp(kind, "noise"))
        return noise_names;
    if (!strcmp(kind, "sampler"))
        return sampler_names;
    if (!strcmp(kind, "scheduler"))
        return scheduler_names;
    if (!strcmp(kind, "planner"))
        return fl_planner_names();
    if (!strcmp(kind, "metric"))
        return fl_metric_names();
    return NULL;
}

/* A module's own error, prefixed with the path of the table it was configured from (the
 * message is copied first: err is both source and destination). */
static fl_status rethrow(fl_cfg *t, fl_error *err, fl_status st, const char *what)
{
    char msg[FL_ERRMSG_MAX];
    snprintf(msg, sizeof msg, "%s", fl_error_msg(err));
    return fl_cfg_error(t, NULL, err, st, "%s%s%s", what ? what : "", what ? ": " : "", msg);
}

/* The module name must be one of names; the message lists them. */
static fl_status check_name(fl_cfg *parent, const char *key, const char *name,
                            const char *const *names, fl_error *err)
{
    char list[256] = "";
    for (int i = 0; names[i]; i++) {
        if (!strcmp(names[i], name))
            return FL_OK;
        if (i)
            strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    return fl_cfg_error(parent, key, err, FL_E_INVALID, "unknown module \"%s\"; accepted: %s",
                        name, list);
}

static fl_status build_gauss(fl_cfg *t, fl_denoiser **out, fl_error *err)
{
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    long window, channels;
    double size_def[2] = { o.height, o.width }, size[2];
    double drift_def[2] = { o.drift_x, o.drift_y }, drift[2];
    int mismatch, param;
    fl_status st;
    if ((st = fl_cfg_int(t, "window", o.window, 1, 4096, &window, err)) ||
        (st = fl_cfg_int(t, "channels", o.channels, 1, 4096, &channels, err)) ||
        (st = fl_cfg_nums(t, "size", size_def, 2, 2, 2, 1, 65536, size, NULL, err)) ||
        (st = fl_cfg_num(t, "rho", o.rho, 0, 0.999999, &o.rho, err)) ||
        (st = fl_cfg_nums(t, "drift", drift_def, 2, 2, 2, -1e6, 1e6, drift, NULL, err)) ||
        (st = fl_cfg_num(t, "k0", o.k0, 1e-6, 1e6, &o.k0, err)) ||
        (st = fl_cfg_num(t, "beta", o.beta, 0, 64, &o.beta, err)) ||
        (st = fl_cfg_enum(t, "mismatch", mismatch_names, o.mismatch, &mismatch, err)) ||
        (st = fl_cfg_enum(t, "param", param_names, (int)o.param, &param, err)))
        return st;
    if (size[0] != (int)size[0] || size[1] != (int)size[1])
        return fl_cfg_error(t, "size", err, FL_E_INVALID, "expected whole numbers, got {%g, %g}",
                            size[0], size[1]);
    o.window = (int)window;
    o.channels = (int)channels;
    o.height = (int)size[0];
    o.width = (int)size[1];
    o.drift_x = drift[0];
    o.drift_y = drift[1];
    o.mismatch = mismatch;
    o.param = (fl_param)param;
    if ((st = fl_gauss_new(&o, out, err)))
        return rethrow(t, err, st, NULL);
    return FL_OK;
}

/* Makes the default procedural dataset (fl_procgen_opts_default, what `fifolab data make`
 * writes without options) at path, creating its directory. For `make_if_absent`. */
static fl_status make_default_dataset(fl_cfg *t, const char *path, fl_error *err)
{
    fl_status st = fl_mkdirs_parent(path, err);
    if (st)
        return rethrow(t, err, st, "dataset");
    fl_procgen_opts o;
    fl_procgen_opts_default(&o);
    fl_clips *c = NULL;
    if ((st = fl_procgen_make(&o, &c, err)) || (st = fl_clips_write(c, path, err)))
        rethrow(t, err, st, "dataset (make_if_absent)");
    fl_clips_free(c);
    return st;
}

/* The empirical-clip model (docs/empirical.md). Its prompt list is the timeline's (condition
 * id k = timeline prompt k) or, without a timeline, its own `prompts` option; neither: every
 * frame may match every clip. A missing dataset is an error that says which command makes
 * it, unless `make_if_absent` asks for the default one to be made there (the default
 * experiment: `make run` on a fresh clone needs no separate step). */
static fl_status build_empirical(fl_cfg *t, const fl_timeline *tl, fl_denoiser **out, fl_error *err)
{
    fl_empirical_opts o;
    fl_empirical_opts_default(&o);
    const char *path;
    long window;
    int mismatch, condition, param, make_if_absent;
    fl_cfg *pl;
    fl_status st;
    if ((st = fl_cfg_str(t, "dataset", "runs/data/clips.h5", &path, err)) ||
        (st = fl_cfg_int(t, "window", 0, 0, 4096, &window, err)) ||
        (st = fl_cfg_enum(t, "mismatch", mismatch_names, o.mismatch, &mismatch, err)) ||
        (st = fl_cfg_num(t, "temperature", o.temperature, 1e-3, 1e6, &o.temperature, err)) ||
        (st = fl_cfg_num(t, "bandwidth", o.bandwidth, 0, 100, &o.bandwidth, err)) ||
        (st = fl_cfg_enum(t, "condition", condition_names, o.condition, &condition, err)) ||
        (st = fl_cfg_num(t, "condition_weight", o.condition_weight, 0, 1e9, &o.condition_weight, err)) ||
        (st = fl_cfg_enum(t, "param", param_names, (int)o.param, &param, err)) ||
        (st = fl_cfg_list(t, "prompts", &pl, err)) ||
        (st = fl_cfg_bool(t, "make_if_absent", 0, &make_if_absent, err)))
        return st;
    o.window = (int)window;
    o.mismatch = mismatch;
    o.condition = condition;
    o.param = (fl_param)param;
    size_t np = fl_cfg_len(pl);
    if (np > 0 && tl->nprompts > 0)
        return fl_cfg_error(pl, NULL, err, FL_E_INVALID,
                            "the timeline already names the prompts; give them in one place");
    if (np > 65536)
        return fl_cfg_error(pl, NULL, err, FL_E_RANGE, "at most 65536 prompts, got %zu", np);
    const char **prompts = NULL;
    if (np > 0) {
        if (!(prompts = malloc(np * sizeof *prompts)))
            return fl_error_set(err, FL_E_NOMEM, "model.prompts: out of memory");
        for (size_t i = 0; i < np; i++) {
            fl_cfg *it = fl_cfg_item(pl, i);
            if (!(prompts[i] = fl_cfg_str_value(it))) {
                free(prompts);
                return fl_cfg_error(it, NULL, err, FL_E_INVALID, "expected a string, got a %s",
                                    fl_cfg_type_name(fl_cfg_type_of(it)));
            }
        }
        fl_cfg_mark_used(pl);
        o.prompts = prompts;
        o.nprompts = (int)np;
    } else if (tl->nprompts > 0) {
        o.prompts = (const char *const *)tl->prompts;
        o.nprompts = tl->nprompts;
    }
    fl_clips *data = NULL;
    int absent = access(path, F_OK) != 0;
    if (absent && make_if_absent)
        st = make_default_dataset(t, path, err);
    else if (absent)
        st = fl_cfg_error(t, "dataset", err, FL_E_IO,
                          "%s does not exist; make it with: fifolab data make --out %s (or set make_if_absent = true)",
                          path, path);
    if (!st && (st = fl_clips_read(path, &data, err)))
        rethrow(t, err, st, "dataset");
    else if (!st && (st = fl_empirical_new(&o, data, out, err)))
        rethrow(t, err, st, NULL);
    fl_clips_free(data);
    free(prompts);
    return st;
}

/* Reads the noise schedule and fills the S levels. */
static fl_status build_levels(fl_cfg *root, int S, fl_level *levels, fl_error *err)
{
    const char *name;
    fl_cfg *t;
    fl_status st;
    if ((st = fl_cfg_module(root, "noise", "sqrt_linear", &name, &t, err)) ||
        (st = check_name(root, "noise", name, noise_names, err)))
        return st;
    fl_noise ns;
    memset(&ns, 0, sizeof ns);
    int spacing;
    if (!strcmp(name, "flow")) {
        double shift;
        if ((st = fl_cfg_num(t, "shift", 1.0, 1e-6, 1e6, &shift, err)))
            return st;
        if ((st = fl_noise_flow(&ns, shift, err)))
            return rethrow(t, err, st, NULL);
        spacing = FL_STEPS_UNIFORM;
    } else {
        fl_beta_kind kind = !strcmp(name, "linear") ? FL_BETA_LINEAR
                            : !strcmp(name, "cosine") ? FL_BETA_COSINE : FL_BETA_SQRT_LINEAR;
        long T;
        double bdef[2] = { kind == FL_BETA_LINEAR ? 0.0001 : 0.00085, kind == FL_BETA_LINEAR ? 0.02 : 0.012 };
        double beta[2] = { 0, 0 };
        if ((st = fl_cfg_int(t, "timesteps", 1000, 2, FL_NOISE_T_MAX, &T, err)))
            return st;
        if (kind != FL_BETA_COSINE &&
            (st = fl_cfg_nums(t, "beta", bdef, 2, 2, 2, 1e-12, 0.999999, beta, NULL, err)))
            return st;
        if ((st = fl_cfg_enum(t, "spacing", spacing_names, FL_STEPS_UNIFORM, &spacing, err)))
            return st;
        if ((st = fl_noise_ddpm(&ns, kind, (int)T, beta[0], beta[1], err)))
            return rethrow(t, err, st, NULL);
    }
    st = fl_noise_levels(&ns, (fl_steps_kind)spacing, S, levels, err);
    fl_noise_free(&ns);
    if (st)
        return rethrow(t, err, st, "steps");
    return FL_OK;
}

static fl_status build_sampler(fl_cfg *root, fl_sampler *s, fl_error *err)
{
    const char *name;
    fl_cfg *t;
    fl_status st;
    if ((st = fl_cfg_module(root, "sampler", "ddim", &name, &t, err)) ||
        (st = check_name(root, "sampler", name, sampler_names, err)))
        return st;
    s->eta = 0;
    if (!strcmp(name, "ddim")) {
        s->kind = FL_SAMPLER_DDIM;
        if ((st = fl_cfg_num(t, "eta", 1.0, 0, 1, &s->eta, err)))
            return st;
    } else {
        s->kind = !strcmp(name, "ddpm") ? FL_SAMPLER_DDPM : FL_SAMPLER_EULER;
    }
    return FL_OK;
}

/* The given video of fifo's init = "frames" (docs/schedulers.md "Extending a given video"):
 * frames 0 .. last of a run file's /frames/latent, of one video of a clip dataset or of a
 * video file, mapped
 * to the model's latent layout, into *out (malloc'd, [*count, C, H, W]); `what` describes
 * them for the scheduler's messages. Read here, at build time only: the scheduler copies
 * what its queue needs and keeps nothing, so a resumed run restores its queue from the state. */
typedef struct given_video {
    float *frames;
    int64_t count;
    char what[PATH_MAX + 96];
} given_video;

static fl_status read_run_frames(fl_cfg *src, const char *path, long last, int64_t keep, const fl_denoiser *m,
                                 given_video *g, fl_error *err)
{
    fl_status st = FL_OK;
    fl_h5_lock();
    hid_t f = access(path, R_OK) == 0 ? H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT) : -1;
    hid_t d = f >= 0 && H5Lexists(f, "frames", H5P_DEFAULT) > 0 && H5Lexists(f, "frames/latent", H5P_DEFAULT) > 0
                  ? H5Dopen2(f, "frames/latent", H5P_DEFAULT)
                  : -1;
    hsize_t dims[4] = { 0, 0, 0, 0 };
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank == 4)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0)
        H5Sclose(sp);
    fl_h5_unlock();
    int64_t n = (int64_t)dims[0];
    if (f < 0)
        st = fl_cfg_error(src, "run", err, FL_E_IO, access(path, F_OK) != 0 ? "%s does not exist"
                                                     : "%s: cannot open (not an HDF5 run file?)", path);
    else if (rank != 4)
        st = fl_cfg_error(src, "run", err, FL_E_FORMAT, "%s: /frames/latent: %s", path,
                          d < 0 ? "missing" : "expected [N, C, H, W]");
    else if ((int64_t)dims[1] != m->channels || (int64_t)dims[2] != m->height || (int64_t)dims[3] != m->width)
        st = fl_cfg_error(src, "run", err, FL_E_INVALID, "%s holds frames of %dx%dx%d, the model's latents are %dx%dx%d",
                          path, (int)dims[1], (int)dims[2], (int)dims[3], m->channels, m->height, m->width);
    else if (n < 1)
        st = fl_cfg_error(src, "run", err, FL_E_FORMAT, "%s: /frames/latent holds no frames", path);
    else if (last >= n)
        st = fl_cfg_error(src, "last", err, FL_E_RANGE, "frame %ld, but %s holds %lld frames", last, path,
                          (long long)n);
    if (!st) {
        /* only the last `keep` frames: the scheduler takes its last Q anyway */
        int64_t total = last < 0 ? n : last + 1;
        g->count = total < keep ? total : keep;
        int64_t fs = (int64_t)m->channels * m->height * m->width;
        if (!(g->frames = malloc((size_t)(g->count * fs) * sizeof(float)))) {
            st = fl_error_set(err, FL_E_NOMEM, "scheduler.source: %lld frames", (long long)g->count);
        } else {
            fl_h5_lock();
            st = fl_h5_read_rows(d, H5T_NATIVE_FLOAT, total - g->count, g->count, g->frames, err);
            fl_h5_unlock();
            if (st)
                fl_error_prefix(err, "scheduler.source.run: %s: /frames/latent", path);
        }
        snprintf(g->what, sizeof g->what, "scheduler.source: %s (frames 0..%lld)", path, (long long)total - 1);
    }
    fl_h5_lock();
    if (d >= 0)
        H5Dclose(d);
    if (f >= 0)
        H5Fclose(f);
    fl_h5_unlock();
    return st;
}

/* Frames of a clip dataset are RGB bytes [H, W, 3]; the pixel-space models take [3, H, W]
 * in [-1, 1] (byte / 127.5 - 1, as the empirical model reads its dataset). */
static fl_status read_clip_frames(fl_cfg *src, const char *path, long video, long last, int64_t keep,
                                  const fl_denoiser *m, given_video *g, fl_error *err)
{
    fl_clips *c = NULL;
    fl_status st;
    if (access(path, F_OK) != 0)
        return fl_cfg_error(src, "clips", err, FL_E_IO, "%s does not exist", path);
    if ((st = fl_clips_read(path, &c, err)))
        return rethrow(src, err, st, "clips");
    if (video >= c->nvideos)
        st = fl_cfg_error(src, "video", err, FL_E_RANGE, "video %ld, but %s holds %lld videos (0..%lld)", video,
                          path, (long long)c->nvideos, (long long)c->nvideos - 1);
    else if (m->channels != 3 || m->height != c->height || m->width != c->width)
        st = fl_cfg_error(src, "clips", err, FL_E_INVALID,
                          "%s holds RGB frames of %dx%d, the model's latents are %dx%dx%d (a pixel-space model "
                          "of that size is needed)", path, c->height, c->width, m->channels, m->height, m->width);
    else if (last >= c->video_len[video])
        st = fl_cfg_error(src, "last", err, FL_E_RANGE, "frame %ld, but video %ld of %s has %lld frames", last,
                          video, path, (long long)c->video_len[video]);
    if (!st) {
        int64_t hw = (int64_t)c->height * c->width, fs = 3 * hw;
        int64_t total = last < 0 ? c->video_len[video] : last + 1, from;
        g->count = total < keep ? total : keep; /* the last `keep` frames, as for a run */
        from = total - g->count;
        if (!(g->frames = malloc((size_t)(g->count * fs) * sizeof(float)))) {
            st = fl_error_set(err, FL_E_NOMEM, "scheduler.source: %lld frames", (long long)g->count);
        } else {
            for (int64_t k = 0; k < g->count; k++) {
                const uint8_t *px = c->frames + (c->video_first[video] + from + k) * fs;
                float *x = g->frames + k * fs;
                for (int64_t e = 0; e < hw; e++)
                    for (int ch = 0; ch < 3; ch++)
                        x[ch * hw + e] = (float)(px[e * 3 + ch] / 127.5 - 1.0);
            }
            snprintf(g->what, sizeof g->what, "scheduler.source: video %ld of %s (frames 0..%lld)", video, path,
                     (long long)total - 1);
        }
    }
    fl_clips_free(c);
    return st;
}

/* A video file (data/video_read.h), decoded by ffmpeg at the model's size and mapped like a
 * clip dataset's frames. Only the last `keep` frames (at least the queue) are held, so a
 * long video costs constant memory: the scheduler takes its last Q frames anyway. */
static fl_status read_file_frames(fl_cfg *src, const char *path, long last, int64_t keep, const fl_denoiser *m,
                                  given_video *g, fl_error *err)
{
    if (m->channels != 3)
        return fl_cfg_error(src, "video", err, FL_E_INVALID,
                            "%s: the model's latents are %dx%dx%d; a video's RGB frames need a pixel-space "
                            "model (3 channels)", path, m->channels, m->height, m->width);
    fl_video_reader *r = NULL;
    fl_video_read_opts ro = { NULL, last < 0 ? 0 : (int64_t)last + 1 };
    fl_status st = fl_video_reader_open(path, m->height, m->width, &ro, &r, err);
    if (st)
        return rethrow(src, err, st, "video");
    int64_t hw = (int64_t)m->height * m->width, fs = 3 * hw, total = 0;
    uint8_t *ring = malloc((size_t)(keep * fs));
    if (!ring) {
        fl_video_reader_close(r);
        return fl_error_set(err, FL_E_NOMEM, "scheduler.source: %lld frames of %s", (long long)keep, path);
    }
    int got;
    while ((got = fl_video_reader_frame(r, ring + (total % keep) * fs, err)) == 1)
        total++;
    fl_video_reader_close(r);
    if (got < 0)
        st = rethrow(src, err, (fl_status)got, "video");
    else if (last >= total)
        st = fl_cfg_error(src, "last", err, FL_E_RANGE, "frame %ld, but %s has %lld frames", last, path,
                          (long long)total);
    if (!st) {
        g->count = total < keep ? total : keep;
        if (!(g->frames = malloc((size_t)(g->count * fs) * sizeof(float)))) {
            st = fl_error_set(err, FL_E_NOMEM, "scheduler.source: %lld frames", (long long)g->count);
        } else {
            /* oldest kept frame first */
            for (int64_t k = 0; k < g->count; k++) {
                const uint8_t *px = ring + ((total - g->count + k) % keep) * fs;
                float *x = g->frames + k * fs;
                for (int64_t e = 0; e < hw; e++)
                    for (int ch = 0; ch < 3; ch++)
                        x[ch * hw + e] = (float)(px[e * 3 + ch] / 127.5 - 1.0);
            }
            snprintf(g->what, sizeof g->what, "scheduler.source: %s (frames 0..%lld)", path, (long long)total - 1);
        }
    }
    free(ring);
    return st;
}

static fl_status read_source(fl_cfg *sched, const fl_denoiser *m, int64_t keep, given_video *g, fl_error *err)
{
    fl_cfg *src;
    const char *path;
    long video = 0, last;
    fl_status st;
    if ((st = fl_cfg_table(sched, "source", &src, err)))
        return st;
    int has_run = fl_cfg_get(src, "run") != NULL, has_clips = fl_cfg_get(src, "clips") != NULL;
    /* `video` is a file name on its own, a video's index with `clips` */
    int has_file = !has_clips && fl_cfg_get(src, "video") && fl_cfg_type_of(fl_cfg_get(src, "video")) == FL_CFG_STR;
    if (has_run + has_clips + has_file != 1)
        return fl_cfg_error(sched, "source", err, FL_E_INVALID,
                            "init = \"frames\" needs the video to continue: { run = \"RUN/run.h5\" }, "
                            "{ clips = \"DATASET.h5\", video = N } or { video = \"FILE.mp4\" } (optionally "
                            "last = K)");
    if ((st = fl_cfg_str(src, has_run ? "run" : has_clips ? "clips" : "video", NULL, &path, err)) ||
        (has_clips && (st = fl_cfg_int(src, "video", 0, 0, INT32_MAX, &video, err))) ||
        (st = fl_cfg_int(src, "last", -1, -1, INT32_MAX, &last, err)))
        return st;
    if (has_file)
        return read_file_frames(src, path, last, keep, m, g, err);
    return has_run ? read_run_frames(src, path, last, keep, m, g, err)
                   : read_clip_frames(src, path, video, last, keep, m, g, err);
}

static int32_t timeline_cond(void *ctx, int64_t frame)
{
    return fl_timeline_cond(ctx, frame);
}

fl_status fl_experiment_build(fl_cfg *cfg, fl_experiment *ex, fl_error *err)
{
    memset(ex, 0, sizeof *ex);
    given_video given; /* before any goto fail, which frees it */
    memset(&given, 0, sizeof given);
    fl_status st;
    long seed, frames, snapshots;
    const char *mname, *sname;
    fl_cfg *mt, *st_t;
    if ((st = fl_cfg_str(cfg, "name", "default", &ex->name, err)) ||
        (st = fl_cfg_int(cfg, "seed", 1, 0, LONG_MAX, &seed, err)) ||
        (st = fl_cfg_int(cfg, "frames", 256, 1, INT32_MAX, &frames, err)) ||
        (st = fl_cfg_bool(cfg, "oracle", 0, &ex->oracle, err)) ||
        (st = fl_cfg_int(cfg, "snapshots", 0, 0, INT32_MAX, &snapshots, err)))
        return st;
    ex->seed = (uint64_t)seed;
    ex->frames = frames;
    ex->snapshot_every = (int)snapshots;
    if ((st = fl_timeline_read(cfg, &ex->timeline, err)))
        goto fail;
    fl_cfg *vt;
    long fps, scale;
    if ((st = fl_cfg_table(cfg, "video", &vt, err)) || (st = fl_cfg_bool(vt, "mp4", 0, &ex->video.mp4, err)) ||
        (st = fl_cfg_bool(vt, "gif", 0, &ex->video.gif, err)) || (st = fl_cfg_bool(vt, "png", 0, &ex->video.png, err)) ||
        (st = fl_cfg_int(vt, "fps", 8, 1, 240, &fps, err)) || (st = fl_cfg_int(vt, "scale", 0, 0, 64, &scale, err)))
        goto fail;
    ex->video.fps = (int)fps;
    ex->video.scale = (int)scale;
    fl_cfg *ml;
    if ((st = fl_cfg_list(cfg, "metrics", &ml, err)))
        goto fail;
    if (fl_cfg_len(ml) > FL_EXPERIMENT_METRICS_MAX) {
        st = fl_cfg_error(cfg, "metrics", err, FL_E_RANGE, "at most %d metrics, got %zu",
                          FL_EXPERIMENT_METRICS_MAX, fl_cfg_len(ml));
        goto fail;
    }
    for (size_t i = 0; i < fl_cfg_len(ml); i++) {
        const char *mn;
        fl_cfg *mo;
        if ((st = fl_cfg_item_module(ml, i, &mn, &mo, err)) ||
            (st = fl_metric_opts_read(mo, mn, &ex->metric_opts[i], err)))
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ex->metrics[j].name, mn)) {
                st = fl_cfg_error(ml, NULL, err, FL_E_INVALID, "metric %s named twice", mn);
                goto fail;
            }
        ex->metrics[i] = (fl_metric_spec){ mn, &ex->metric_opts[i] };
        ex->nmetrics = (int)i + 1;
    }
    if ((st = fl_cfg_module(cfg, "model", "gauss", &mname, &mt, err)) ||
        (st = check_name(cfg, "model", mname, model_names, err)) ||
        (st = !strcmp(mname, "empirical") ? build_empirical(mt, &ex->timeline, &ex->model, err)
                                           : build_gauss(mt, &ex->model, err)))
        goto fail;
    fl_sched_setup s;
    memset(&s, 0, sizeof s);
    s.window = ex->model->window;
    s.channels = ex->model->channels;
    s.height = ex->model->height;
    s.width = ex->model->width;
    s.param = ex->model->param;
    s.frames = frames;
    fl_rng_init(&s.rng, ex->seed);
    s.cond_of = timeline_cond;
    s.cond_ctx = &ex->timeline;
    s.nconds = ex->timeline.nprompts > 0 ? ex->timeline.nprompts : 1;
    s.cond_whole_queue = ex->timeline.mode == FL_SWITCH_QUEUE;
    if ((st = build_sampler(cfg, &s.sampler, err)))
        goto fail;
    if ((st = fl_cfg_module(cfg, "scheduler", "fifo", &sname, &st_t, err)) ||
        (st = check_name(cfg, "scheduler", sname, scheduler_names, err)))
        goto fail;
    if (s.cond_whole_queue && strcmp(sname, "fifo")) {
        st = fl_cfg_error(cfg, "timeline_switch", err, FL_E_INVALID,
                          "\"queue\" switches the prompt of fifo's whole queue; scheduler %s has no queue", sname);
        goto fail;
    }
    int final;
    if ((st = fl_cfg_enum(st_t, "final", final_names, 0, &final, err)))
        goto fail;
    const fl_planner_vt *planner = NULL;
    long partitions = 1, steps = 64, context = 0;
    int init = 0;
    if (!strcmp(sname, "fifo")) {
        const char *pname;
        fl_cfg *pt;
        if ((st = fl_cfg_module(st_t, "planner", "lookahead", &pname, &pt, err)) ||
            (st = check_name(st_t, "planner", pname, fl_planner_names(), err)) ||
            (st = fl_cfg_int(pt, "partitions", 4, 1, FL_PLANNER_MAX_WINDOWS / 2, &partitions, err)) ||
            (st = fl_cfg_enum(st_t, "init", init_names, 0, &init, err)))
            goto fail;
        planner = fl_planner_find(pname);
        steps = (long)s.window * partitions;
        /* the queue is context (at most 4 windows: fifo.c) + steps positions */
        if (init == FL_FIFO_INIT_FRAMES &&
            (st = read_source(st_t, ex->model, steps + 4 * (int64_t)s.window, &given, err)))
            goto fail;
        if (init != FL_FIFO_INIT_FRAMES && fl_cfg_get(st_t, "source")) {
            st = fl_cfg_error(st_t, "source", err, FL_E_INVALID, "only with init = \"frames\" (init is \"%s\")",
                              init_names[init]);
            goto fail;
        }
    } else {
        if ((st = fl_cfg_int(st_t, "steps", 64, 1, 100000, &steps, err)))
            goto fail;
        if (!strcmp(sname, "chunked") &&
            (st = fl_cfg_int(st_t, "context", s.window / 2, 0, s.window - 1, &context, err)))
            goto fail;
    }
    ex->steps = (int)steps;
    ex->levels = malloc((size_t)steps * sizeof *ex->levels);
    if (!ex->levels) {
        st = fl_error_set(err, FL_E_NOMEM, "experiment: %ld levels", steps);
        goto fail;
    }
    if ((st = build_levels(cfg, ex->steps, ex->levels, err)))
        goto fail;
    s.levels = ex->levels;
    s.steps = ex->steps;
    s.final = final == 0 ? fl_level_clean() : ex->levels[0];
    if ((st = fl_sampler_check(&s.sampler, err)) || (st = fl_cfg_check_unused(cfg, err)))
        goto fail;
    if (!strcmp(sname, "fifo") && init == FL_FIFO_INIT_FRAMES)
        st = fl_fifo_new_given(&s, planner, (int)partitions,
                               &(fl_fifo_given){ given.frames, given.count, given.what }, &ex->scheduler, err);
    else if (!strcmp(sname, "fifo"))
        st = fl_fifo_new(&s, planner, (int)partitions, (fl_fifo_init)init, &ex->scheduler, err);
    else if (!strcmp(sname, "full"))
        st = fl_full_new(&s, &ex->scheduler, err);
    else
        st = fl_chunked_new(&s, (int)context, &ex->scheduler, err);
    if (st) {
        rethrow(st_t, err, st, NULL);
        goto fail;
    }
    free(given.frames);
    return FL_OK;
fail:
    free(given.frames);
    fl_experiment_free(ex);
    return st;
}

void fl_experiment_free(fl_experiment *ex)
{
    fl_scheduler_free(ex->scheduler);
    fl_denoiser_free(ex->model);
    free(ex->levels);
    fl_timeline_free(&ex->timeline);
    memset(ex, 0, sizeof *ex);
}
