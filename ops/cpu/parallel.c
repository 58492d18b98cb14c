/* Fork-join threading for the CPU kernels that OpenBLAS does not already spread over the
 * cores (norms, activations, im2col, small attentions): one pthread per extra chunk,
 * started and joined within the call, so no thread outlives an op. */
#include "cpu_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256

int fl_cpu_threads(void)
{
    const char *env = getenv("FL_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 1 && v <= MAX_THREADS)
            return (int)v;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

int fl_cpu_parallel_chunks(int64_t n, int64_t grain)
{
    if (n <= 0)
        return 1;
    if (grain < 1)
        grain = 1;
    int64_t by_size = (n + grain - 1) / grain;
    int t = fl_cpu_threads();
    return by_size < t ? (int)by_size : t;
}

typedef struct job {
    fl_cpu_range_fn fn;
    void *ctx;
    int chunk;
    int64_t begin, end;
} job;

static void *run_job(void *p)
{
    job *j = p;
    j->fn(j->ctx, j->chunk, j->begin, j->end);
    return NULL;
}

void fl_cpu_parallel_for(int64_t n, int64_t grain, fl_cpu_range_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    int chunks = fl_cpu_parallel_chunks(n, grain);
    if (chunks <= 1) {
        fn(ctx, 0, 0, n);
        return;
    }
    job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = { false };
    for (int c = 0; c < chunks; c++) {
        jobs[c] = (job){ fn, ctx, c, n * c / chunks, n * (c + 1) / chunks };
        if (c > 0)
            started[c] = pthread_create(&tid[c], NULL, run_job, &jobs[c]) == 0;
    }
    run_job(&jobs[0]);
    for (int c = 1; c < chunks; c++) {
        if (started[c])
            pthread_join(tid[c], NULL);
        else
            run_job(&jobs[c]); /* no thread to spare: the work is still done, only slower */
    }
}
