/* `fifolab generate`: build an experiment from defaults and --set overrides, run it, and
 * write the frames where a person can look at them (raw f32, PPM previews, statistics). */
#include "core/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/experiment.h"
#include "core/run.h"
#include "models/gauss.h"
#include "schedulers/schedulers.h"

#define STATS_WINDOW 16
#define MONTAGE_COLS 8
#define MONTAGE_ROWS 8

static void generate_usage(FILE *f)
{
    fprintf(f,
            "usage: fifolab generate [--set KEY=VALUE]... [--out DIR] [--ppm] [--quiet]\n"
            "       fifolab generate --print-config [--set KEY=VALUE]...\n"
            "\n"
            "Runs one experiment: the defaults below, changed by --set overrides, e.g.\n"
            "  --set frames=1024 --set scheduler.planner=partition --set scheduler.planner.partitions=2\n"
            "  --set scheduler=chunked --set model.mismatch=own --set sampler.eta=0 --set oracle=true\n"
            "Unknown keys and bad values are errors that name the key.\n"
            "\n"
            "Writes to DIR (default runs/<name>):\n"
            "  config.lua      the resolved configuration (every default explicit)\n"
            "  frames.f32      the emitted latents, [frames, C, H, W] float32 little-endian\n"
            "  frames.txt      their shape\n"
            "  preview.ppm     an %dx%d montage of frames evenly spaced over the video\n"
            "  frame_NNNNNN.ppm  every frame (with --ppm)\n"
            "  schedule.tsv    fifo: per queue position, step index, timestep, alpha, sigma\n"
            "  stats.tsv       gauss model: spectral statistics per window of %d frames\n"
            "  oracle.tsv      oracle=true: per queue position, relative error vs the exact model\n"
            "\n"
            "--print-config prints the resolved configuration and exits.\n",
            MONTAGE_COLS, MONTAGE_ROWS, STATS_WINDOW);
}

typedef struct gen_sink {
    const fl_experiment *ex;
    FILE *raw;
    const char *dir;
    int ppm;
    int64_t fs;
    int C, H, W;
    /* montage */
    unsigned char *montage;
    /* statistics over consecutive windows of frames */
    FILE *stats;
    float *win;
    int in_win;
    int64_t win_start;
} gen_sink;

static unsigned char to_byte(float v)
{
    float b = 128.0f + 40.0f * v; /* about +-3.2 standard deviations of a unit-variance latent */
    return (unsigned char)(b < 0 ? 0 : b > 255 ? 255 : b);
}

static void pixel(const gen_sink *g, const float *frame, int y, int x, unsigned char rgb[3])
{
    int64_t hw = (int64_t)g->H * g->W;
    for (int c = 0; c < 3; c++)
        rgb[c] = to_byte(frame[(g->C >= 3 ? c : 0) * hw + (int64_t)y * g->W + x]);
}

static fl_status write_ppm(const char *path, const unsigned char *rgb, int h,
                           int w, fl_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return fl_error_set(err, FL_E_IO, "%s: %s", path, strerror(errno));
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    size_t n = (size_t)h * (size_t)w * 3;
    int bad = fwrite(rgb, 1, n, f) != n;
    bad |= fclose(f) != 0;
    return bad ? fl_error_set(err, FL_E_IO, "%s: write failed", path) : FL_OK;
}

static fl_status flush_stats(gen_sink *g, fl_error *err)
{
    if (!g->stats || g->in_win < 2)
        return FL_OK;
    int64_t shape[4] = { g->in_win, g->C, g->H, g->W };
    fl_storage *s = fl_storage_wrap(NULL, g->win, (size_t)g->in_win * (size_t)g->fs * sizeof(float),
                                    (fl_device){ FL_DEVICE_CPU, 0 }, NULL, NULL);
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "generate: stats window");
    fl_tensor t;
    fl_status st = fl_tensor_from_storage(&t, s, FL_F32, 4, shape, NULL, 0, err);
    fl_storage_release(s);
    if (st)
        return st;
    fl_gauss_stats_result r;
    st = fl_gauss_stats(g->ex->model, &t, &r, err);
    fl_tensor_release(&t);
    if (st)
        return st;
    fprintf(g->stats, "%lld\t%lld\t%.6f\t%.6f\t%.6f\t%.6f\t%.6f\t%.6f\n", (long long)g->win_start,
            (long long)r.frames, r.power_ratio, r.power_ratio_low, r.power_ratio_high, r.corr_lag1,
            r.corr_lag1_raw, r.mean);
    g->in_win = 0;
    return FL_OK;
}

static fl_status gen_put(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    (void)cond;
    gen_sink *g = ctx;
    if (fwrite(frame, sizeof(float), (size_t)g->fs, g->raw) != (size_t)g->fs)
        return fl_error_set(err, FL_E_IO, "%s/frames.f32: write failed at frame %lld", g->dir, (long long)index);
    /* montage tile for frames evenly spaced over the video */
    int64_t total = g->ex->frames, tiles = MONTAGE_COLS * MONTAGE_ROWS;
    int64_t slot_of = total <= tiles ? index : index * tiles / total;
    if ((total <= tiles || slot_of * total / tiles == index) && slot_of < tiles) {
        int ty = (int)(slot_of / MONTAGE_COLS), tx = (int)(slot_of % MONTAGE_COLS);
        int mw = MONTAGE_COLS * g->W;
        for (int y = 0; y < g->H; y++)
            for (int x = 0; x < g->W; x++)
                pixel(g, frame, y, x, g->montage + 3 * ((size_t)(ty * g->H + y) * (size_t)mw + (size_t)(tx * g->W + x)));
    }
    if (g->ppm) {
        char path[4200];
        unsigned char *rgb = malloc((size_t)g->H * (size_t)g->W * 3);
        if (!rgb)
            return fl_error_set(err, FL_E_NOMEM, "generate: frame image");
        for (int y = 0; y < g->H; y++)
            for (int x = 0; x < g->W; x++)
                pixel(g, frame, y, x, rgb + 3 * ((size_t)y * (size_t)g->W + (size_t)x));
        snprintf(path, sizeof path, "%s/frame_%06lld.ppm", g->dir, (long long)index);
        fl_status st = write_ppm(path, rgb, g->H, g->W, err);
        free(rgb);
        if (st)
            return st;
    }
    if (g->stats) {
        if (g->in_win == 0)
            g->win_start = index;
        memcpy(g->win + (int64_t)g->in_win * g->fs, frame, (size_t)g->fs * sizeof(float));
        if (++g->in_win == STATS_WINDOW)
            return flush_stats(g, err);
    }
    return FL_OK;
}

typedef struct progress_ctx {
    int quiet, tty;
    struct timespec t0;
    double last;
} progress_ctx;

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

static void progress(void *ctx, const fl_scheduler *s, const fl_engine_stats *st)
{
    progress_ctx *p = ctx;
    double now = seconds_since(&p->t0);
    if (p->quiet || (now - p->last < 1.0 && s->emitted < s->total))
        return;
    p->last = now;
    fprintf(stderr, "%sframe %lld/%lld (%.0f%%), %lld window calls, %.1f frames/s%s",
            p->tty ? "\r" : "", (long long)s->emitted, (long long)s->total,
            100.0 * (double)s->emitted / (double)s->total, (long long)st->windows,
            (double)s->emitted / (now > 0 ? now : 1e-9), p->tty ? "" : "\n");
    fflush(stderr);
}

static fl_status write_schedule(const fl_experiment *ex, const char *dir, fl_error *err)
{
    int Q, c;
    if (fl_fifo_schedule(ex->scheduler, &Q, &c, NULL, NULL, NULL) != FL_OK)
        return FL_OK; /* not a queue scheduler */
    fl_level *lv = malloc((size_t)Q * sizeof *lv);
    int *step = malloc((size_t)Q * sizeof *step);
    fl_status st = FL_OK;
    if (!lv || !step) {
        st = fl_error_set(err, FL_E_NOMEM, "generate: schedule");
        goto done;
    }
    fl_fifo_schedule(ex->scheduler, &Q, &c, lv, step, NULL);
    char path[4200];
    snprintf(path, sizeof path, "%s/schedule.tsv", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        st = fl_error_set(err, FL_E_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    fprintf(f, "position\tstep\ttimestep\talpha\tsigma\talpha_bar\n");
    for (int p = 0; p < Q; p++)
        fprintf(f, "%d\t%d\t%.17g\t%.17g\t%.17g\t%.17g\n", p, step[p], lv[p].t, lv[p].alpha,
                lv[p].sigma, lv[p].alpha * lv[p].alpha / (lv[p].alpha * lv[p].alpha + lv[p].sigma * lv[p].sigma));
    if (fclose(f))
        st = fl_error_set(err, FL_E_IO, "%s: write failed", path);
done:
    free(lv);
    free(step);
    return st;
}

static int fail(const fl_error *err)
{
    fprintf(stderr, "fifolab generate: %s\n", fl_error_msg(err));
    return 1;
}

int fl_cmd_generate(int argc, char **argv)
{
    const char *out_dir = NULL;
    int print_config = 0, ppm = 0, quiet = 0;
    fl_error err;
    fl_error_clear(&err);
    fl_cfg *cfg = fl_cfg_new(NULL);
    if (!cfg) {
        fprintf(stderr, "fifolab generate: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            generate_usage(stdout);
            fl_cfg_free(cfg);
            return 0;
        } else if (!strcmp(a, "--set") && i + 1 < argc) {
            if (fl_cfg_set_arg(cfg, argv[++i], &err)) {
                fprintf(stderr, "fifolab generate: --set %s: %s\n", argv[i], fl_error_msg(&err));
                fl_cfg_free(cfg);
                return 2;
            }
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            out_dir = argv[++i];
        } else if (!strcmp(a, "--print-config")) {
            print_config = 1;
        } else if (!strcmp(a, "--ppm")) {
            ppm = 1;
        } else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
            quiet = 1;
        } else {
            fprintf(stderr, "fifolab generate: unknown or incomplete argument \"%s\"\n", a);
            generate_usage(stderr);
            fl_cfg_free(cfg);
            return 2;
        }
    }
    fl_experiment ex;
    if (fl_experiment_build(cfg, &ex, &err)) {
        fprintf(stderr, "fifolab generate: %s\n", fl_error_msg(&err));
        fl_cfg_free(cfg);
        return 2;
    }
    if (print_config) {
        int rc = fl_cfg_write(cfg, stdout, 0, &err) ? fail(&err) : 0;
        fl_experiment_free(&ex);
        fl_cfg_free(cfg);
        return rc;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s", out_dir ? "" : "runs/", out_dir ? out_dir : ex.name);
    int rc = 1;
    gen_sink g;
    memset(&g, 0, sizeof g);
    fl_engine_trace trace;
    memset(&trace, 0, sizeof trace);
    char path[4200];
    if (fl_mkdirs(dir, &err))
        goto done;
    snprintf(path, sizeof path, "%s/config.lua", dir);
    FILE *cf = fopen(path, "w");
    if (!cf) {
        fl_error_set(&err, FL_E_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    fl_status st = fl_cfg_write(cfg, cf, 0, &err);
    if (fclose(cf) && !st)
        st = fl_error_set(&err, FL_E_IO, "%s: write failed", path);
    if (st || write_schedule(&ex, dir, &err))
        goto done;
    g.ex = &ex;
    g.dir = dir;
    g.ppm = ppm;
    g.C = ex.model->channels;
    g.H = ex.model->height;
    g.W = ex.model->width;
    g.fs = (int64_t)g.C * g.H * g.W;
    g.montage = calloc((size_t)MONTAGE_COLS * MONTAGE_ROWS * (size_t)g.H * (size_t)g.W * 3, 1);
    if (fl_gauss_is(ex.model)) {
        g.win = malloc((size_t)STATS_WINDOW * (size_t)g.fs * sizeof(float));
        snprintf(path, sizeof path, "%s/stats.tsv", dir);
        g.stats = fopen(path, "w");
        if (!g.win || !g.stats) {
            fl_error_set(&err, FL_E_IO, "%s: cannot write", path);
            goto done;
        }
        fprintf(g.stats, "first_frame\tframes\tpower_ratio\tpower_ratio_low\tpower_ratio_high\tcorr_lag1\tcorr_lag1_raw\tmean\n");
    }
    snprintf(path, sizeof path, "%s/frames.f32", dir);
    g.raw = fopen(path, "wb");
    if (!g.raw || !g.montage) {
        fl_error_set(&err, FL_E_IO, "%s: %s", path, g.raw ? "out of memory" : strerror(errno));
        goto done;
    }
    if (ex.oracle && fl_engine_trace_init(&trace, ex.scheduler->positions > 0 ? ex.scheduler->positions : 1, &err))
        goto done;
    progress_ctx pc = { quiet, isatty(2), { 0, 0 }, -1e9 };
    clock_gettime(CLOCK_MONOTONIC, &pc.t0);
    fl_engine_opts eo = { .trace = ex.oracle ? &trace : NULL, .progress = progress, .progress_ctx = &pc };
    fl_engine_stats es;
    fl_frame_sink sink = { gen_put, &g };
    if (!quiet)
        fprintf(stderr, "generating %lld frames with %s into %s/\n", (long long)ex.frames,
                ex.scheduler->vt->name, dir);
    if (fl_engine_run(ex.scheduler, ex.model, &sink, &eo, &es, &err) || flush_stats(&g, &err))
        goto done;
    double secs = seconds_since(&pc.t0);
    if (pc.tty && !quiet)
        fputc('\n', stderr);
    if (fclose(g.raw)) {
        g.raw = NULL;
        fl_error_set(&err, FL_E_IO, "%s/frames.f32: write failed", dir);
        goto done;
    }
    g.raw = NULL;
    snprintf(path, sizeof path, "%s/frames.txt", dir);
    FILE *hf = fopen(path, "w");
    if (!hf) {
        fl_error_set(&err, FL_E_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    fprintf(hf, "frames.f32: float32 little-endian, shape [%lld, %d, %d, %d] (frames, channels, height, width)\n",
            (long long)es.emitted, g.C, g.H, g.W);
    fclose(hf);
    snprintf(path, sizeof path, "%s/preview.ppm", dir);
    if (write_ppm(path, g.montage, MONTAGE_ROWS * g.H, MONTAGE_COLS * g.W, &err))
        goto done;
    if (ex.oracle) {
        snprintf(path, sizeof path, "%s/oracle.tsv", dir);
        FILE *of = fopen(path, "w");
        if (!of) {
            fl_error_set(&err, FL_E_IO, "%s: %s", path, strerror(errno));
            goto done;
        }
        fprintf(of, "position\tcount\trelative_error\n");
        for (int p = 0; p < trace.positions; p++)
            if (trace.count[p])
                fprintf(of, "%d\t%lld\t%.6g\n", p, (long long)trace.count[p], fl_engine_trace_rel(&trace, p));
        fclose(of);
    }
    printf("%s: %lld frames, %lld iterations, %lld window calls (%.3f per frame), %.2f s, %.1f frames/s -> %s/\n",
           ex.name, (long long)es.emitted, (long long)es.iterations, (long long)es.windows,
           (double)es.windows / (double)es.emitted, secs, (double)es.emitted / (secs > 0 ? secs : 1e-9), dir);
    rc = 0;
done:
    if (rc)
        fail(&err);
    if (g.raw)
        fclose(g.raw);
    if (g.stats)
        fclose(g.stats);
    free(g.win);
    free(g.montage);
    fl_engine_trace_free(&trace);
    fl_experiment_free(&ex);
    fl_cfg_free(cfg);
    return rc;
}
