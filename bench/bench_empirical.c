/* Benchmark for the empirical-clip model at its defaults (procgen's default dataset: 3840
 * frames of 32x32 RGB, 3480 clips of 16 frames): ms per window call in each mismatch mode
 * and noise regime, the call against one OpenBLAS sgemm of the same shape, and frames per
 * second of the default FIFO experiment (lookahead, 4 partitions) built from its config. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/engine.h"
#include "core/experiment.h"
#include "core/rng.h"
#include "data/clips.h"
#include "data/procgen.h"
#include "models/empirical.h"

#include "bench/bench.h"

#define REPS 21

static double median_ms(double *t, int n)
{
    bench_sort(t, n);
    return 1e3 * t[n / 2];
}

static fl_status count_frame(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    (void)index;
    (void)frame;
    (void)cond;
    (void)err;
    (*(int64_t *)ctx)++;
    return FL_OK;
}

int main(void)
{
    fl_error err;
    fl_procgen_opts po;
    fl_procgen_opts_default(&po);
    fl_clips *c = NULL;
    double t0 = bench_now();
    if (fl_procgen_make(&po, &c, &err)) {
        fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
        return 1;
    }
    double tgen = bench_now() - t0;
    int f = c->window, D = 3 * c->height * c->width;
    int64_t T = c->nframes;
    printf("empirical: dataset %lld frames of %dx%d, %lld clips of %d (generated in %.0f ms)\n",
           (long long)T, c->height, c->width, (long long)c->nclips, f, 1e3 * tgen);

    int64_t shape[4] = { f, 3, c->height, c->width };
    fl_tensor x = FL_TENSOR_NULL, out = FL_TENSOR_NULL;
    if (fl_tensor_empty(&x, FL_F32, 4, shape, NULL, &err) || fl_tensor_empty(&out, FL_F32, 4, shape, NULL, &err)) {
        fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_rng rng;
    fl_rng_init(&rng, 1);
    float *xs = fl_tensor_data(&x);
    fl_rng_normal(&rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 0, 0 }, 0, (size_t)f * D, xs);
    /* a noisy clip of the data: x_j = a_j clip_j + s_j noise */
    int HW = c->height * c->width;
    fl_level lv[3][64];
    static const char *const regime[3] = { "fifo (mixed)", "low noise", "high noise" };
    for (int j = 0; j < f; j++) {
        double mixed = 1.0 - (j + 0.5) / f;
        lv[0][j] = (fl_level){ 1000.0 * j / f, sqrt(mixed), sqrt(1 - mixed) };
        lv[1][j] = (fl_level){ 10, sqrt(0.995), sqrt(0.005) };
        lv[2][j] = (fl_level){ 990, sqrt(0.01), sqrt(0.99) };
    }
    float *clean = malloc((size_t)f * D * sizeof *clean);
    for (int j = 0; j < f; j++)
        for (int p = 0; p < HW; p++)
            for (int ch = 0; ch < 3; ch++)
                clean[(size_t)j * D + ch * HW + p] =
                    c->frames[((size_t)(c->clip_first[100] + j) * HW + p) * 3 + ch] / 127.5f - 1.0f;

    /* the sgemm the first pass is: [T, D] x [D, f] */
    float *F = malloc((size_t)T * D * sizeof *F), *P = malloc((size_t)T * f * sizeof *P);
    for (size_t k = 0; k < (size_t)T * D; k++)
        F[k] = (float)((k * 2654435761u) % 1000) / 1000.0f - 0.5f;
    double ts[REPS];
    for (int r = 0; r < REPS; r++) {
        double s = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, f, D, 1.0f, F, D, xs, D, 0.0f, P, f);
        ts[r] = bench_now() - s;
    }
    double sgemm_ms = median_ms(ts, REPS);
    printf("  OpenBLAS sgemm [%lld x %d] x [%d x %d]: %.2f ms (%.1f GFLOP/s)\n", (long long)T, D, D, f,
           sgemm_ms, 2.0 * T * D * f / (sgemm_ms * 1e6));
    free(F);
    free(P);

    for (int mode = FL_EMPIRICAL_EXACT; mode <= FL_EMPIRICAL_MEAN; mode++) {
        fl_empirical_opts o;
        fl_empirical_opts_default(&o);
        o.mismatch = mode;
        fl_denoiser *d = NULL;
        if (fl_empirical_new(&o, c, &d, &err)) {
            fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
            return 1;
        }
        for (int g = 0; g < 3; g++) {
            float noise[64];
            for (int j = 0; j < f; j++)
                for (int k = 0; k < D; k++) {
                    fl_rng_normal(&rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, (uint32_t)j, 1 }, (uint64_t)k, 1, noise);
                    xs[(size_t)j * D + k] = (float)(lv[g][j].alpha * clean[(size_t)j * D + k] + lv[g][j].sigma * noise[0]);
                }
            for (int r = 0; r < REPS; r++) {
                double s = bench_now();
                if (fl_denoiser_eval(d, &x, lv[g], NULL, &out, NULL, &err)) {
                    fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
                    return 1;
                }
                ts[r] = bench_now() - s;
            }
            double ms = median_ms(ts, REPS);
            printf("  %-5s %-13s %7.2f ms per window call (%.2f x one sgemm of its shape)\n",
                   fl_empirical_mismatch_name(mode), regime[g], ms, ms / sgemm_ms);
        }
        fl_denoiser_free(d);
    }
    free(clean);
    fl_tensor_release(&x);
    fl_tensor_release(&out);

    /* The default FIFO experiment on this dataset, through the composition root. */
    char dir[] = "/tmp/fl_bench_empirical_XXXXXX", path[256];
    if (!mkdtemp(dir)) {
        perror("bench_empirical: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/clips.h5", dir);
    if (fl_clips_write(c, path, &err)) {
        fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_clips_free(c);
    fl_cfg *cfg = fl_cfg_new(NULL);
    fl_experiment ex;
    int64_t frames = 0;
    const int want = 96;
    char nframes[16];
    snprintf(nframes, sizeof nframes, "%d", want);
    if (!cfg || fl_cfg_set(cfg, "model", "empirical", &err) ||
        fl_cfg_set(cfg, "model.dataset", path, &err) || fl_cfg_set(cfg, "frames", nframes, &err) ||
        fl_experiment_build(cfg, &ex, &err)) {
        fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_frame_sink sink = { count_frame, &frames };
    fl_engine_stats st;
    double s = bench_now();
    if (fl_engine_run(ex.scheduler, ex.model, &sink, NULL, &st, &err)) {
        fprintf(stderr, "bench_empirical: %s\n", fl_error_msg(&err));
        return 1;
    }
    double secs = bench_now() - s;
    printf("  fifo (lookahead, 4 partitions, %d steps, exact): %lld frames in %.2f s = %.2f frames/s "
           "(%lld window calls, %.2f ms each, warm-up included)\n",
           ex.steps, (long long)frames, secs, frames / secs, (long long)st.windows,
           1e3 * secs / (double)st.windows);
    fl_experiment_free(&ex);
    fl_cfg_free(cfg);
    remove(path);
    rmdir(dir);
    return 0;
}
