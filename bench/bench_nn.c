/* Benchmarks for the neural-network ops of the "cpu" backend at VideoCrafter2-like shapes:
 * GFLOP/s of linear, conv2d, the temporal conv and attention, each as a ratio to
 * OpenBLAS's own sgemm on the GEMM of the same shape, timed in the same run. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/ops.h"

#include "bench/bench.h"

typedef void (*bench_fn)(void *ctx);

/* Medians of `reps` timings of f and g, taken alternately so drift hits both alike. */
static void median_pair(bench_fn f, bench_fn g, void *ctx, int reps, double *tf, double *tg)
{
    double a[32], b[32];
    if (reps > 32)
        reps = 32;
    f(ctx); /* warm-up: page faults, OpenBLAS's threads */
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

static fl_rng g_rng;
static uint32_t g_draw;

static int random_tensor(fl_tensor *t, fl_dtype dt, int nd, const int64_t *shape, double scale)
{
    fl_error err;
    fl_tensor f = FL_TENSOR_NULL;
    if (fl_tensor_empty(&f, FL_F32, nd, shape, NULL, &err) || fl_tensor_empty(t, dt, nd, shape, NULL, &err)) {
        fprintf(stderr, "bench_nn: %s\n", fl_error_msg(&err));
        fl_tensor_release(&f);
        return 1;
    }
    float *p = fl_tensor_data(&f);
    fl_rng_addr a = { FL_RNG_STREAM_TEST, 77, g_draw++ };
    fl_rng_normal(&g_rng, a, 0, (size_t)fl_tensor_numel(&f), p);
    for (int64_t i = 0; i < fl_tensor_numel(&f); i++)
        p[i] *= (float)scale;
    fl_backend *ref;
    int rc = fl_backend_new(&ref, "cpu", 0, NULL, &err) || fl_copy(ref, t, &f, &err);
    if (rc)
        fprintf(stderr, "bench_nn: %s\n", fl_error_msg(&err));
    fl_backend_free(ref);
    fl_tensor_release(&f);
    return rc;
}

/* The raw comparator: one sgemm C[M, N] = A[M, K] B[K, N], row-major, beta 0. */
typedef struct gemm {
    int M, N, K;
    float *a, *b, *c;
} gemm;

static void run_gemm(void *p)
{
    gemm *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->M, g->N, g->K, 1.0f, g->a, g->K, g->b, g->N, 0.0f,
                g->c, g->N);
}

static int gemm_init(gemm *g, int M, int N, int K)
{
    g->M = M;
    g->N = N;
    g->K = K;
    g->a = calloc((size_t)M * (size_t)K, sizeof(float));
    g->b = calloc((size_t)K * (size_t)N, sizeof(float));
    g->c = calloc((size_t)M * (size_t)N, sizeof(float));
    if (!g->a || !g->b || !g->c)
        return 1;
    for (size_t i = 0; i < (size_t)M * (size_t)K; i++)
        g->a[i] = (float)(i % 13) * 0.1f - 0.6f;
    for (size_t i = 0; i < (size_t)K * (size_t)N; i++)
        g->b[i] = (float)(i % 7) * 0.1f - 0.3f;
    return 0;
}

static void gemm_free(gemm *g)
{
    free(g->a);
    free(g->b);
    free(g->c);
}

/* One op under test plus its comparator GEMM. */
typedef struct job {
    int kind; /* 0 linear, 1 conv2d, 2 temporal conv, 3 attention */
    fl_backend *be;
    fl_tensor x, w, b, out, k, v;
    fl_conv_opts co;
    gemm g;
    bench_fn gfn;
    int chain; /* comparator: GEMM calls per op (for ops that are several GEMMs) */
} job;

static void run_op(void *p)
{
    job *j = p;
    fl_error err;
    fl_status st = FL_OK;
    switch (j->kind) {
    case 0: st = fl_linear(j->be, &j->out, &j->x, &j->w, &j->b, &err); break;
    case 1: st = fl_conv2d(j->be, &j->out, &j->x, &j->w, &j->b, j->co, &err); break;
    case 2: st = fl_conv_temporal(j->be, &j->out, &j->x, &j->w, &j->b, j->co, &err); break;
    default: st = fl_attention(j->be, &j->out, &j->x, &j->k, &j->v, NULL, 0.0, &err); break;
    }
    if (st)
        fprintf(stderr, "bench_nn: %s\n", fl_error_msg(&err));
}

static void run_chain(void *p)
{
    job *j = p;
    for (int i = 0; i < j->chain; i++)
        run_gemm(&j->g);
}

static void report(const char *what, double flops, double t_op, double gflops_gemm, const char *vs)
{
    double g = flops / t_op * 1e-9;
    printf("%-44s %8.1f GFLOP/s  %7.2f ms  sgemm %s %7.1f GFLOP/s  ratio %.2f\n", what, g, t_op * 1e3, vs,
           gflops_gemm, g / gflops_gemm);
}

static void job_free(job *j)
{
    fl_tensor_release(&j->x);
    fl_tensor_release(&j->w);
    fl_tensor_release(&j->b);
    fl_tensor_release(&j->out);
    fl_tensor_release(&j->k);
    fl_tensor_release(&j->v);
    gemm_free(&j->g);
}

/* Times the op against `chain` sgemm calls of (M, N, K) doing the same FLOPs. */
static int measure(job *j, const char *what, double flops, int M, int N, int K, int chain, int reps)
{
    if (gemm_init(&j->g, M, N, K)) {
        fprintf(stderr, "bench_nn: out of memory\n");
        return 1;
    }
    j->chain = chain;
    double t_op, t_gemm;
    median_pair(run_op, run_chain, j, reps, &t_op, &t_gemm);
    char vs[48];
    snprintf(vs, sizeof vs, "%dx[%dx%dx%d]", chain, M, N, K);
    report(what, flops, t_op, 2.0 * M * N * (double)K * chain / t_gemm * 1e-9, vs);
    return 0;
}

static int bench_linear(fl_backend *be, int64_t tokens, int64_t in, int64_t outf, fl_dtype wdt)
{
    job j;
    memset(&j, 0, sizeof j);
    j.kind = 0;
    j.be = be;
    int64_t xs[2] = { tokens, in }, ws[2] = { outf, in }, os[2] = { tokens, outf };
    if (random_tensor(&j.x, FL_F32, 2, xs, 1.0) || random_tensor(&j.w, wdt, 2, ws, 0.05) ||
        random_tensor(&j.b, wdt, 1, &outf, 0.1) || random_tensor(&j.out, FL_F32, 2, os, 0.0))
        return 1;
    char what[96];
    snprintf(what, sizeof what, "linear %lld->%lld x %lld tokens, %s w", (long long)in, (long long)outf,
             (long long)tokens, fl_dtype_name(wdt));
    int rc = measure(&j, what, 2.0 * (double)(tokens * in * outf), (int)tokens, (int)outf, (int)in, 1, 7);
    job_free(&j);
    return rc;
}

static int bench_conv2d(fl_backend *be, int64_t B, int64_t C, int64_t O, int64_t H, int64_t W, int k, int stride,
                        fl_dtype wdt)
{
    job j;
    memset(&j, 0, sizeof j);
    j.kind = 1;
    j.be = be;
    int pad = k / 2;
    j.co = fl_conv_opts_make(stride, pad);
    int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
    int64_t xs[4] = { B, C, H, W }, ws[4] = { O, C, k, k }, os[4] = { B, O, Ho, Wo };
    if (random_tensor(&j.x, FL_F32, 4, xs, 1.0) || random_tensor(&j.w, wdt, 4, ws, 0.02) ||
        random_tensor(&j.b, wdt, 1, &O, 0.1) || random_tensor(&j.out, FL_F32, 4, os, 0.0))
        return 1;
    char what[96];
    snprintf(what, sizeof what, "conv2d %lld->%lld %dx%d/%d on %lldx%lldx%lld, %s w", (long long)C, (long long)O, k,
             k, stride, (long long)B, (long long)H, (long long)W, fl_dtype_name(wdt));
    double flops = 2.0 * (double)(B * O * Ho * Wo * C * k * k);
    int rc = measure(&j, what, flops, (int)O, (int)(Ho * Wo), (int)(C * k * k), (int)B, 5);
    job_free(&j);
    return rc;
}

/* VideoCrafter2's temporal conv: (B F, C, H, W) viewed as [B, C, F, H, W], kernel (3,1,1). */
static int bench_temporal(fl_backend *be, int64_t F, int64_t C, int64_t H, int64_t W)
{
    job j;
    memset(&j, 0, sizeof j);
    j.kind = 2;
    j.be = be;
    j.co = fl_conv_opts_make(1, 1);
    int64_t xs[4] = { F, C, H, W }, ws[5] = { C, C, 3, 1, 1 };
    fl_tensor x4, o4;
    fl_error err;
    if (random_tensor(&x4, FL_F32, 4, xs, 1.0) || random_tensor(&j.w, FL_F32, 5, ws, 0.02) ||
        random_tensor(&j.b, FL_F32, 1, &C, 0.1) || random_tensor(&o4, FL_F32, 4, xs, 0.0))
        return 1;
    if (fl_view_frames_as_video(&j.x, &x4, F, &err) || fl_view_frames_as_video(&j.out, &o4, F, &err)) {
        fprintf(stderr, "bench_nn: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_tensor_release(&x4);
    fl_tensor_release(&o4);
    char what[96];
    snprintf(what, sizeof what, "temporal conv %lld->%lld k3 on %lldx%lldx%lld (frames)", (long long)C, (long long)C,
             (long long)F, (long long)H, (long long)W);
    double flops = 2.0 * (double)(C * C * 3 * F * H * W);
    /* the same FLOPs as one GEMM: out [C, F H W] = w [C, 3C] @ taps [3C, F H W] */
    int rc = measure(&j, what, flops, (int)C, (int)(F * H * W), (int)(3 * C), 1, 3);
    job_free(&j);
    return rc;
}

/* q, k, v as the permuted view of [B, L, NH, D] (what a Linear gives); out likewise. */
static int bench_attention(fl_backend *be, int64_t B, int64_t L, int64_t NH, int64_t D, int reps)
{
    job j;
    memset(&j, 0, sizeof j);
    j.kind = 3;
    j.be = be;
    int64_t s[4] = { B, L, NH, D };
    fl_tensor q, k, v, o;
    fl_error err;
    static const int perm[4] = { 0, 2, 1, 3 };
    if (random_tensor(&q, FL_F32, 4, s, 1.0) || random_tensor(&k, FL_F32, 4, s, 1.0) ||
        random_tensor(&v, FL_F32, 4, s, 1.0) || random_tensor(&o, FL_F32, 4, s, 0.0))
        return 1;
    if (fl_tensor_permute(&j.x, &q, perm, &err) || fl_tensor_permute(&j.k, &k, perm, &err) ||
        fl_tensor_permute(&j.v, &v, perm, &err) || fl_tensor_permute(&j.out, &o, perm, &err)) {
        fprintf(stderr, "bench_nn: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_tensor_release(&q);
    fl_tensor_release(&k);
    fl_tensor_release(&v);
    fl_tensor_release(&o);
    char what[96];
    snprintf(what, sizeof what, "attention L=%lld d=%lld x %lld heads x %lld", (long long)L, (long long)D,
             (long long)NH, (long long)B);
    double flops = 4.0 * (double)(B * NH * L * L * D);
    int rc;
    if (L >= 256) /* comparator: the two GEMMs per head (scores, then values) at full size */
        rc = measure(&j, what, flops, (int)L, (int)L, (int)D, (int)(2 * B * NH), reps);
    else /* tiny heads: no GEMM shape is fair; compare with sgemm's large-matrix rate */
        rc = measure(&j, what, flops, 1024, 1024, 1024, 1, reps);
    job_free(&j);
    return rc;
}

int main(void)
{
    fl_error err;
    fl_backend *be;
    fl_rng_init(&g_rng, 11);
    if (fl_backend_new(&be, "cpu", 0, NULL, &err)) {
        fprintf(stderr, "bench_nn: %s\n", fl_error_msg(&err));
        return 1;
    }
    printf("# fifolab NN ops, 'cpu' backend (OpenBLAS, %d threads); ratio = op GFLOP/s / sgemm GFLOP/s "
           "on the GEMM named, same run\n",
           openblas_get_num_threads());
    int rc = 0;
    /* VideoCrafter2 UNet, level 0 (320 channels, 40 x 64 latents, 16 frames) */
    rc |= bench_linear(be, 2560, 320, 1280, FL_F32);
    rc |= bench_linear(be, 2560, 320, 1280, FL_BF16);
    rc |= bench_linear(be, 2560, 1280, 320, FL_F32);
    rc |= bench_conv2d(be, 1, 320, 320, 40, 64, 3, 1, FL_F32);
    rc |= bench_conv2d(be, 1, 320, 320, 40, 64, 3, 1, FL_F16);
    rc |= bench_conv2d(be, 1, 320, 320, 40, 64, 3, 2, FL_F32);
    rc |= bench_conv2d(be, 2, 640, 640, 20, 32, 3, 1, FL_F32);
    rc |= bench_conv2d(be, 1, 320, 320, 40, 64, 1, 1, FL_F32);
    rc |= bench_temporal(be, 16, 320, 40, 64);
    rc |= bench_attention(be, 1, 2560, 8, 40, 3);
    rc |= bench_attention(be, 1, 2560, 5, 64, 3);
    rc |= bench_attention(be, 2560, 16, 5, 64, 5);
    fl_backend_free(be);
    return rc;
}
