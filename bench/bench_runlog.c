/* Benchmark: what logging a run costs. The default experiment (quickstart's settings:
 * gauss 16 frames x 3 x 32 x 32, fifo lookahead n = 4) generated in one process with the
 * frames thrown away, and through fl_run_point (run file via the writer thread, metric
 * series, periodic states), alternately, 5 times each; the ratio of medians is the figure
 * (target: logging on costs < 5 % more wall time), the ratio of minima the least noisy
 * one on a busy machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/experiment.h"
#include "core/run.h"

#include "bench/bench.h"

#define REPS 5

static const char *const sets[] = { "name=bench", "frames=256", NULL };

static fl_cfg *config(void)
{
    fl_error err;
    fl_cfg *cfg = fl_cfg_new(NULL);
    for (int i = 0; cfg && sets[i]; i++)
        if (fl_cfg_set_arg(cfg, sets[i], &err)) {
            fprintf(stderr, "bench_runlog: %s\n", fl_error_msg(&err));
            exit(1);
        }
    return cfg;
}

static fl_status discard(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    (void)index;
    (void)cond;
    (void)err;
    *(volatile float *)ctx = frame[0];
    return FL_OK;
}

static double run_plain(void)
{
    fl_cfg *cfg = config();
    fl_experiment ex;
    fl_error err;
    if (fl_experiment_build(cfg, &ex, &err)) {
        fprintf(stderr, "bench_runlog: %s\n", fl_error_msg(&err));
        exit(1);
    }
    float sink_val;
    fl_frame_sink sink = { discard, &sink_val };
    double t = bench_now();
    if (fl_engine_run(ex.scheduler, ex.model, &sink, NULL, NULL, &err)) {
        fprintf(stderr, "bench_runlog: %s\n", fl_error_msg(&err));
        exit(1);
    }
    t = bench_now() - t;
    fl_experiment_free(&ex);
    fl_cfg_free(cfg);
    return t;
}

static double run_logged(const char *dir)
{
    fl_cfg *cfg = config();
    fl_error err;
    fl_run_opts o = { .checkpoint_seconds = 5, .force = 1, .quiet = 1, .git_commit = "bench" };
    fl_run_outcome out;
    double t = bench_now();
    if (fl_run_point(&o, cfg, NULL, NULL, dir, &out, &err)) {
        fprintf(stderr, "bench_runlog: %s\n", fl_error_msg(&err));
        exit(1);
    }
    t = bench_now() - t;
    fl_cfg_free(cfg);
    return t;
}

int main(void)
{
    char dir[] = "/tmp/fifolab-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_runlog: mkdtemp");
        return 1;
    }
    double plain[REPS], logged[REPS];
    for (int r = 0; r < REPS; r++) {
        plain[r] = run_plain();
        logged[r] = run_logged(dir);
    }
    bench_sort(plain, REPS);
    bench_sort(logged, REPS);
    char path[4200];
    snprintf(path, sizeof path, "%s/run.h5", dir);
    unlink(path);
    rmdir(dir);
    double ratio = logged[REPS / 2] / plain[REPS / 2];
    printf("run logging (gauss 16x3x32x32, fifo lookahead n=4, 256 frames; median of %d):\n", REPS);
    printf("  generation, frames discarded   %8.3f s\n", plain[REPS / 2]);
    printf("  generation + run file (SWMR)   %8.3f s\n", logged[REPS / 2]);
    printf("  ratio logged / plain           %8.3f   (target < 1.05)\n", ratio);
    printf("  ratio of the fastest runs      %8.3f\n", logged[0] / plain[0]);
    return 0;
}
