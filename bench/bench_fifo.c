/* Benchmark of the FIFO core on the Gaussian testbed: the paper's mechanism (mismatch error
 * per partition count and planner), memory against length, and generation speed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/experiment.h"

#include "bench/bench.h"


/* Builds an experiment from --set style overrides; exits on a bad one (a bench bug). */
static void build(fl_cfg **cfg, fl_experiment *ex, const char *const *sets)
{
    fl_error err;
    *cfg = fl_cfg_new(NULL);
    for (int i = 0; sets[i]; i++)
        if (fl_cfg_set_arg(*cfg, sets[i], &err)) {
            fprintf(stderr, "bench_fifo: %s: %s\n", sets[i], fl_error_msg(&err));
            exit(1);
        }
    if (fl_experiment_build(*cfg, ex, &err)) {
        fprintf(stderr, "bench_fifo: %s\n", fl_error_msg(&err));
        exit(1);
    }
}

static double mismatch_error(const char *mismatch, const char *rho, int n, const char *planner)
{
    char s_mm[64], s_rho[64], s_n[64], s_pl[64];
    snprintf(s_mm, sizeof s_mm, "model.mismatch=%s", mismatch);
    snprintf(s_rho, sizeof s_rho, "model.rho=%s", rho);
    snprintf(s_n, sizeof s_n, "scheduler.planner.partitions=%d", n);
    snprintf(s_pl, sizeof s_pl, "scheduler.planner.module=%s", planner);
    const char *sets[] = { "frames=64", "model.size=16,16", s_mm, s_rho, s_pl, s_n, NULL };
    fl_cfg *cfg;
    fl_experiment ex;
    build(&cfg, &ex, sets);
    fl_engine_trace tr;
    fl_error err;
    if (fl_engine_trace_init(&tr, ex.scheduler->positions, &err))
        exit(1);
    fl_engine_opts eo = { .trace = &tr };
    if (fl_engine_run(ex.scheduler, ex.model, NULL, &eo, NULL, &err)) {
        fprintf(stderr, "bench_fifo: %s\n", fl_error_msg(&err));
        exit(1);
    }
    double mean = fl_engine_trace_mean(&tr, NULL);
    fl_engine_trace_free(&tr);
    fl_experiment_free(&ex);
    fl_cfg_free(cfg);
    return mean;
}

static fl_status discard(void *ctx, int64_t index, const float *frame, int32_t cond, fl_error *err)
{
    (void)ctx, (void)index, (void)frame, (void)cond, (void)err;
    return FL_OK;
}

/* Peak resident memory (KiB) of a child process that generates `frames` frames. */
static long peak_rss_kib(long frames, double *secs)
{
    int fd[2];
    if (pipe(fd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char s_frames[64];
        snprintf(s_frames, sizeof s_frames, "frames=%ld", frames);
        const char *sets[] = { s_frames, "model.size=16,16", NULL };
        fl_cfg *cfg;
        fl_experiment ex;
        build(&cfg, &ex, sets);
        fl_frame_sink sink = { discard, NULL };
        fl_error err;
        double t0 = bench_now();
        if (fl_engine_run(ex.scheduler, ex.model, &sink, NULL, NULL, &err))
            _exit(1);
        double res[2];
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        res[0] = (double)ru.ru_maxrss;
        res[1] = bench_now() - t0;
        if (write(fd[1], res, sizeof res) != (ssize_t)sizeof res)
            _exit(1);
        _exit(0);
    }
    close(fd[1]);
    double res[2] = { -1, 0 };
    if (read(fd[0], res, sizeof res) != (ssize_t)sizeof res)
        res[0] = -1;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    *secs = res[1];
    return (long)res[0];
}

int main(void)
{
    printf("FIFO mechanism: mean relative noise-prediction error of a mismatch model against the\n"
           "exact posterior, over queue positions (gauss 16x16x3, f=16, DDIM eta=1, 64 frames)\n");
    printf("%-6s %-5s %-3s %12s %12s\n", "model", "rho", "n", "partition", "lookahead");
    const char *mms[] = { "own", "mean" }, *rhos[] = { "0.5", "0.95" };
    for (int m = 0; m < 2; m++)
        for (int r = 0; r < 2; r++)
            for (int n = 1; n <= 4; n *= 2)
                printf("%-6s %-5s %-3d %12.5f %12.5f\n", mms[m], rhos[r], n,
                       mismatch_error(mms[m], rhos[r], n, "partition"),
                       mismatch_error(mms[m], rhos[r], n, "lookahead"));

    double t200, t5000;
    long a = peak_rss_kib(200, &t200), b = peak_rss_kib(5000, &t5000);
    printf("\nmemory: peak RSS generating 200 frames %ld KiB, 5000 frames %ld KiB: ratio %.3f (target <= 1.05)\n",
           a, b, (double)b / (double)a);
    printf("speed: default fifo (lookahead n=4) at 16x16x3: %.1f frames/s (5000 frames in %.2f s)\n",
           5000 / t5000, t5000);
    return 0;
}
