/* Benchmarks for the foundation: the ops API against the raw libraries under it, measured
 * in one run so the figures are ratios, robust to a noisy machine. */
#include <cblas.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "ops/ops.h"

#include "bench/bench.h"



/* Medians of `reps` timings of f(ctx) and g(ctx), taken alternately so that drift in the
 * machine's speed hits both alike. */
typedef void (*bench_fn)(void *ctx);
static void median_pair(bench_fn f, bench_fn g, void *ctx, int reps, double *tf, double *tg)
{
    double a[64], b[64];
    if (reps > 64)
        reps = 64;
    f(ctx); /* warm-up */
    g(ctx);
    for (int i = 0; i < reps; i++) {
        double t0 = bench_now();
        f(ctx);
        double t1 = bench_now();
        g(ctx);
        a[i] = t1 - t0;
        b[i] = bench_now() - t1;
    }
    bench_sort(a, reps);
    bench_sort(b, reps);
    *tf = a[reps / 2];
    *tg = b[reps / 2];
}

typedef struct mm {
    fl_backend *be;
    fl_tensor a, b, c;
    int64_t batch, m, n, k;
} mm;

static void run_fl_matmul(void *p)
{
    mm *x = p;
    fl_error err;
    if (fl_matmul(x->be, &x->c, &x->a, &x->b, 0, 1.0, 0.0, &err))
        fprintf(stderr, "bench: %s\n", fl_error_msg(&err));
}

static void run_raw_sgemm(void *p)
{
    mm *x = p;
    const float *a = fl_tensor_data(&x->a), *b = fl_tensor_data(&x->b);
    float *c = fl_tensor_data(&x->c);
    for (int64_t i = 0; i < x->batch; i++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)x->m, (int)x->n, (int)x->k, 1.0f,
                    a + i * x->m * x->k, (int)x->k, b + i * x->k * x->n, (int)x->n, 0.0f,
                    c + i * x->m * x->n, (int)x->n);
}

static int bench_matmul(fl_backend *be, int64_t batch, int64_t m, int64_t n, int64_t k)
{
    fl_error err;
    mm x = { be, FL_TENSOR_NULL, FL_TENSOR_NULL, FL_TENSOR_NULL, batch, m, n, k };
    int64_t sa[3] = { batch, m, k }, sb[3] = { batch, k, n }, sc[3] = { batch, m, n };
    if (fl_tensor_empty(&x.a, FL_F32, 3, sa, NULL, &err) || fl_tensor_empty(&x.b, FL_F32, 3, sb, NULL, &err) ||
        fl_tensor_empty(&x.c, FL_F32, 3, sc, NULL, &err)) {
        fprintf(stderr, "bench: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_rng rng;
    fl_rng_init(&rng, 7);
    fl_rng_addr ad = { FL_RNG_STREAM_TEST, 1, 0 };
    fl_rng_normal(&rng, ad, 0, (size_t)(batch * m * k), fl_tensor_data(&x.a));
    ad.frame = 2;
    fl_rng_normal(&rng, ad, 0, (size_t)(batch * k * n), fl_tensor_data(&x.b));
    double flops = 2.0 * (double)(batch * m * n * k);
    int reps = flops > 1e9 ? 11 : 31;
    double t_raw, t_fl;
    median_pair(run_raw_sgemm, run_fl_matmul, &x, reps, &t_raw, &t_fl);
    printf("matmul f32 %4lldx[%4lld x %4lld x %4lld]  fl_matmul %7.2f GFLOP/s  raw sgemm %7.2f GFLOP/s"
           "  ratio %.3f\n",
           (long long)batch, (long long)m, (long long)n, (long long)k, flops / t_fl * 1e-9,
           flops / t_raw * 1e-9, t_raw / t_fl);
    fl_tensor_release(&x.a);
    fl_tensor_release(&x.b);
    fl_tensor_release(&x.c);
    return 0;
}

typedef struct ew {
    fl_backend *be;
    fl_tensor a, b, c;
    int64_t n;
} ew;

static void run_fl_add(void *p)
{
    ew *x = p;
    fl_error err;
    if (fl_add(x->be, &x->c, &x->a, &x->b, &err))
        fprintf(stderr, "bench: %s\n", fl_error_msg(&err));
}

static void run_raw_add(void *p)
{
    ew *x = p;
    const float *a = fl_tensor_data(&x->a), *b = fl_tensor_data(&x->b);
    float *c = fl_tensor_data(&x->c);
    for (int64_t i = 0; i < x->n; i++)
        c[i] = a[i] + b[i];
}

static int bench_add(fl_backend *be, int64_t n)
{
    fl_error err;
    ew x = { be, FL_TENSOR_NULL, FL_TENSOR_NULL, FL_TENSOR_NULL, n };
    if (fl_tensor_zeros(&x.a, FL_F32, 1, &n, NULL, &err) || fl_tensor_zeros(&x.b, FL_F32, 1, &n, NULL, &err) ||
        fl_tensor_zeros(&x.c, FL_F32, 1, &n, NULL, &err)) {
        fprintf(stderr, "bench: %s\n", fl_error_msg(&err));
        return 1;
    }
    double t_raw, t_fl;
    median_pair(run_raw_add, run_fl_add, &x, 31, &t_raw, &t_fl);
    double bytes = 12.0 * (double)n;
    printf("add f32 %9lld elements          fl_add %7.2f GB/s      plain C loop %7.2f GB/s  ratio %.3f\n",
           (long long)n, bytes / t_fl * 1e-9, bytes / t_raw * 1e-9, t_raw / t_fl);
    fl_tensor_release(&x.a);
    fl_tensor_release(&x.b);
    fl_tensor_release(&x.c);
    return 0;
}

int main(void)
{
    fl_error err;
    fl_backend *be;
    if (fl_backend_new(&be, "cpu", 0, NULL, &err)) {
        fprintf(stderr, "bench: %s\n", fl_error_msg(&err));
        return 1;
    }
    printf("# fifolab ops benchmark: the 'cpu' backend against the library under it, same run\n");
    printf("# ratio = raw time / fifolab time (1.0 = no overhead)\n");
    int rc = 0;
    rc |= bench_matmul(be, 1, 1024, 1024, 1024);
    rc |= bench_matmul(be, 1, 256, 256, 256);
    rc |= bench_matmul(be, 64, 64, 64, 64);
    rc |= bench_matmul(be, 256, 16, 16, 64);
    rc |= bench_add(be, 1 << 22);
    rc |= bench_add(be, 1 << 12);
    fl_backend_free(be);
    return rc;
}
