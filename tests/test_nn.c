/* Backend-consistency suite for the neural-network ops: every op on every backend ("cpu",
 * and "cuda" when a GPU is there; skipped otherwise) against "cpu-ref" on fresh random
 * inputs, odd sizes and non-contiguous views, f32/f16/bf16 weights; plus properties
 * (masking, normalisation, hand-computed embeddings, conv 1x1 = linear, RoPE relativity),
 * scratch memory of attention, dispatcher errors and allocation failures. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "ops/ops.h"

#ifdef __SANITIZE_ADDRESS__
/* Under `make asan` on a GPU machine the CUDA libraries keep allocations until exit. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcuda.so\nleak:libcudart.so\nleak:libcublas\nleak:libnvidia\n";
}
#endif

/* ---- plumbing -------------------------------------------------------------------------- */

/* The run's seed: fixed by default, so that every run (and CI) draws the same inputs;
 * $FL_TEST_SEED=<n> draws others (and replays a failure), $FL_TEST_SEED=random a fresh
 * seed from /dev/urandom (or the clock). main() prints it, failures repeat it. */
#define DEFAULT_SEED UINT64_C(20260514)
static uint64_t g_seed;

static uint64_t pick_seed(void)
{
    const char *env = getenv("FL_TEST_SEED");
    if (!env || !*env)
        return DEFAULT_SEED;
    if (strcmp(env, "random") != 0) {
        char *end;
        uint64_t s = strtoull(env, &end, 0);
        if (*end) {
            fprintf(stderr, "test_nn: FL_TEST_SEED='%s' is neither a number nor 'random'\n", env);
            exit(2);
        }
        return s;
    }
    uint64_t s = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&s, sizeof s, 1, f) != 1)
        s = (uint64_t)time(NULL) * UINT64_C(0x9E3779B97F4A7C15);
    if (f)
        fclose(f);
    return s;
}

typedef struct T {
    const char *target; /* "cpu" or "cuda" */
    fl_backend *be, *ref;
    int cuda, tf32;
    fl_rng rng;
    uint32_t salt, draw;
    fl_error err;
} T;

#define OK(call)                                                                               \
    do {                                                                                       \
        fl_status st_ = (call);                                                                \
        if (st_ != FL_OK)                                                                      \
            fail_msg("%s -> %s: %s", #call, fl_status_str(st_), fl_error_msg(&t->err));        \
    } while (0)

static uint32_t hash_name(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Opens the target named by the test's initial state, or skips when it is "cuda" and this
 * build or machine has no GPU. Each test draws from its own address (its name). */
static void open_target(T *t, void **state, const char *test)
{
    memset(t, 0, sizeof *t);
    t->target = *state;
    t->cuda = strcmp(t->target, "cuda") == 0;
    fl_status st = fl_backend_new(&t->be, t->target, 0, NULL, &t->err);
    if (t->cuda && (st == FL_E_DEVICE || st == FL_E_UNSUPPORTED)) {
        print_message("skipping: %s\n", fl_error_msg(&t->err));
        skip();
    }
    OK(st);
    OK(fl_backend_new(&t->ref, "cpu-ref", 0, NULL, &t->err));
    const char *tf = getenv("FL_CUDA_TF32");
    t->tf32 = t->cuda && tf && strcmp(tf, "1") == 0;
    fl_rng_init(&t->rng, g_seed);
    t->salt = hash_name(test) ^ hash_name(t->target);
}

static void close_target(T *t)
{
    fl_backend_free(t->be);
    fl_backend_free(t->ref);
}

static double unif(T *t)
{
    float u;
    fl_rng_addr a = { FL_RNG_STREAM_TEST, t->salt, t->draw++ };
    fl_rng_uniform(&t->rng, a, 0, 1, &u);
    return u;
}

static int64_t rnd(T *t, int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)(unif(t) * (double)(hi - lo + 1));
}

/* The error a GEMM-based op may have against the reference with weights of dtype wdt:
 * the CPU computes in f32 on exactly widened weights; CUDA rounds activations to the
 * weight's half type for tensor-core GEMMs (and to TF32 when FL_CUDA_TF32=1). */
static double gemm_tol(const T *t, fl_dtype wdt)
{
    if (!t->cuda)
        return 1e-5;
    if (wdt == FL_BF16)
        return 1e-2;
    if (wdt == FL_F16)
        return 1e-3;
    return t->tf32 ? 1e-3 : 1e-5;
}
#define F32_TOL 1e-5

/* Fills a host tensor of any layout and float dtype with scale * N(0,1) + shift. */
static void fill_normal(T *t, fl_tensor *h, double scale, double shift)
{
    int64_t n = fl_tensor_numel(h), idx[FL_MAX_DIMS] = { 0 };
    fl_rng_addr a = { FL_RNG_STREAM_TEST, t->salt + 1, t->draw++ };
    for (int64_t i = 0; i < n; i++) {
        double z;
        fl_rng_normal_f64(&t->rng, a, (uint64_t)i, 1, &z);
        fl_tensor_set(h, idx, z * scale + shift);
        for (int d = h->ndim - 1; d >= 0; d--) {
            if (++idx[d] < h->shape[d])
                break;
            idx[d] = 0;
        }
    }
}

/* ---- tensors on both sides -------------------------------------------------------------- */

enum { L_CONTIG, L_PERMUTED, L_STEPPED, L_OFFSET, L_COUNT };
/* Inputs only: a stride-0 view (every other dim stored with size 1, then expanded). Kept
 * out of L_COUNT, which outputs draw from. A_BLHD (attention) is L_COUNT. */
enum { L_BCAST = L_COUNT + 1 };

/* One logical tensor seen twice: a host view (the reference reads it) and the same view
 * over a device copy of the base (the target reads it). On the "cpu" target the two are
 * the same tensor. */
typedef struct tv {
    fl_tensor hb, hv, db, dv;
} tv;

/* Host base and view of `shape` in one of the layouts. */
static void host_layout(T *t, tv *x, fl_dtype dt, int nd, const int64_t *shape, int layout)
{
    int64_t bs[FL_MAX_DIMS];
    memcpy(bs, shape, sizeof(int64_t) * (size_t)nd);
    if (nd == 0)
        layout = L_CONTIG;
    switch (layout) {
    case L_PERMUTED: {
        int perm[FL_MAX_DIMS];
        for (int i = 0; i < nd; i++) {
            bs[i] = shape[nd - 1 - i];
            perm[i] = nd - 1 - i;
        }
        OK(fl_tensor_empty(&x->hb, dt, nd, bs, NULL, &t->err));
        OK(fl_tensor_permute(&x->hv, &x->hb, perm, &t->err));
        break;
    }
    case L_STEPPED:
        bs[nd - 1] = shape[nd - 1] * 2 + 1;
        OK(fl_tensor_empty(&x->hb, dt, nd, bs, NULL, &t->err));
        OK(fl_tensor_slice(&x->hv, &x->hb, nd - 1, 1, bs[nd - 1], 2, &t->err));
        break;
    case L_OFFSET:
        bs[0] = shape[0] + 3;
        OK(fl_tensor_empty(&x->hb, dt, nd, bs, NULL, &t->err));
        OK(fl_tensor_narrow(&x->hv, &x->hb, 0, 2, shape[0], &t->err));
        break;
    case L_BCAST:
        for (int i = (int)rnd(t, 0, 1); i < nd; i += 2)
            bs[i] = 1;
        OK(fl_tensor_empty(&x->hb, dt, nd, bs, NULL, &t->err));
        OK(fl_tensor_expand(&x->hv, &x->hb, nd, shape, &t->err));
        break;
    default:
        OK(fl_tensor_empty(&x->hb, dt, nd, bs, NULL, &t->err));
        fl_tensor_retain(&x->hv, &x->hb);
        break;
    }
}

/* A layout for an input that no call writes in place: any of L_COUNT, or broadcast. */
static int in_layout(T *t)
{
    int l = (int)rnd(t, 0, L_COUNT);
    return l == L_COUNT ? L_BCAST : l;
}

/* The device side of x: the same view numbers over a device copy of the base. */
static void to_device(T *t, tv *x)
{
    if (!t->cuda) {
        fl_tensor_retain(&x->db, &x->hb);
        fl_tensor_retain(&x->dv, &x->hv);
        return;
    }
    OK(fl_empty(t->be, &x->db, x->hb.dtype, x->hb.ndim, x->hb.shape, &t->err));
    OK(fl_copy(t->be, &x->db, &x->hb, &t->err));
    fl_tensor v = x->hv;
    v.storage = x->db.storage;
    fl_tensor_retain(&x->dv, &v);
}

/* A random input, scale * N(0,1) + shift (the gaps of the base random too). */
static void tv_in_shift(T *t, tv *x, fl_dtype dt, int nd, const int64_t *shape, int layout, double scale,
                        double shift)
{
    memset(x, 0, sizeof *x);
    host_layout(t, x, dt, nd, shape, layout);
    fill_normal(t, &x->hb, scale, shift);
    to_device(t, x);
}

static void tv_in(T *t, tv *x, fl_dtype dt, int nd, const int64_t *shape, int layout, double scale)
{
    tv_in_shift(t, x, dt, nd, shape, layout, scale, 0.0);
}

/* An f32 output poisoned with NaN, so unwritten elements show. */
static void tv_out(T *t, tv *x, int nd, const int64_t *shape, int layout)
{
    memset(x, 0, sizeof *x);
    host_layout(t, x, FL_F32, nd, shape, layout);
    OK(fl_fill(t->ref, &x->hb, NAN, &t->err));
    to_device(t, x);
}

static void tv_free(tv *x)
{
    fl_tensor_release(&x->hb);
    fl_tensor_release(&x->hv);
    fl_tensor_release(&x->db);
    fl_tensor_release(&x->dv);
}

/* Brings the device base of an output back into the host base. */
static void tv_fetch(T *t, tv *x)
{
    if (t->cuda)
        OK(fl_copy(t->be, &x->hb, &x->db, &t->err));
}

/* A contiguous f32 host tensor (the reference's output). */
static void host_f32(T *t, fl_tensor *out, int nd, const int64_t *shape)
{
    OK(fl_tensor_empty(out, FL_F32, nd, shape, NULL, &t->err));
    OK(fl_fill(t->ref, out, NAN, &t->err));
}

/* ‖a − b‖ / ‖b‖ over host tensors of one shape; a NaN or inf on one side only is +inf.
 * *worst (optional) gets the row-major index of the largest difference. */
static double rel_err_at(T *t, const fl_tensor *a, const fl_tensor *b, int64_t *worst)
{
    fl_tensor x = FL_TENSOR_NULL, y = FL_TENSOR_NULL;
    OK(fl_tensor_empty(&x, FL_F64, a->ndim, a->shape, NULL, &t->err));
    OK(fl_tensor_empty(&y, FL_F64, b->ndim, b->shape, NULL, &t->err));
    OK(fl_copy(t->ref, &x, a, &t->err));
    OK(fl_copy(t->ref, &y, b, &t->err));
    const double *px = fl_tensor_data(&x), *py = fl_tensor_data(&y);
    double num = 0, den = 0, big = -1;
    int64_t n = fl_tensor_numel(&x);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(px[i] - py[i]);
        if (!isfinite(px[i]) || !isfinite(py[i])) {
            if ((isnan(px[i]) && isnan(py[i])) || px[i] == py[i])
                continue;
            num = d = INFINITY;
        } else {
            num += d * d;
            den += py[i] * py[i];
        }
        if (worst && !(d <= big)) {
            big = d;
            *worst = i;
        }
    }
    fl_tensor_release(&x);
    fl_tensor_release(&y);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double rel_err(T *t, const fl_tensor *a, const fl_tensor *b)
{
    return rel_err_at(t, a, b, NULL);
}

/* The value at row-major position i of a host tensor. */
static double value_at(const fl_tensor *x, int64_t i)
{
    int64_t idx[FL_MAX_DIMS];
    for (int d = x->ndim - 1; d >= 0; d--) {
        idx[d] = i % x->shape[d];
        i /= x->shape[d];
    }
    return fl_tensor_get(x, idx);
}

/* The target's output (fetched) must match the reference within tol, and every element of
 * its base outside the view must still hold the NaN poison. */
static void check_out(T *t, tv *o, const fl_tensor *want, double tol, const char *what)
{
    tv_fetch(t, o);
    int64_t worst = 0;
    double e = rel_err_at(t, &o->hv, want, &worst);
    if (!(e <= tol))
        fail_msg("%s on %s: relative error %.3g > %.1g; worst at element %lld: %.9g, reference %.9g (seed %llu)",
                 what, t->target, e, tol, (long long)worst, value_at(&o->hv, worst), value_at(want, worst),
                 (unsigned long long)g_seed);
    fl_tensor g = FL_TENSOR_NULL;
    OK(fl_tensor_empty(&g, FL_F32, o->hb.ndim, o->hb.shape, NULL, &t->err));
    OK(fl_copy(t->ref, &g, &o->hb, &t->err));
    fl_tensor gv = o->hv;
    gv.storage = g.storage;
    OK(fl_fill(t->ref, &gv, 0.0, &t->err));
    const float *p = fl_tensor_data(&g);
    for (int64_t i = 0; i < fl_tensor_numel(&g); i++)
        if (!(p[i] == 0.0f || isnan(p[i])))
            fail_msg("%s on %s: wrote element %lld of the output's base, outside the view", what,
                     t->target, (long long)i);
    fl_tensor_release(&g);
}

static fl_dtype wdtype(int i)
{
    static const fl_dtype d[3] = { FL_F32, FL_F16, FL_BF16 };
    return d[i % 3];
}

/* |src| as a new contiguous f32 host tensor (any dtype, any strides). */
static void abs_f32(T *t, fl_tensor *out, const fl_tensor *src)
{
    OK(fl_tensor_empty(out, FL_F32, src->ndim, src->shape, NULL, &t->err));
    OK(fl_copy(t->ref, out, src, &t->err));
    OK(fl_unary(t->ref, FL_UN_ABS, out, out, &t->err));
}

/* ‖x‖ of a contiguous f32 host tensor. */
static double norm_f32(const fl_tensor *x)
{
    const float *p = fl_tensor_data(x);
    double s = 0;
    for (int64_t i = 0; i < fl_tensor_numel(x); i++)
        s += (double)p[i] * p[i];
    return sqrt(s);
}

/* |x|, |w| and |b| (b may be NULL) as new contiguous f32 host tensors, for cancellation(). */
typedef struct { fl_tensor x, w, b; bool has_b; } abs_in;

static void abs_in_make(T *t, abs_in *a, const fl_tensor *x, const fl_tensor *w, const fl_tensor *b)
{
    abs_f32(t, &a->x, x);
    abs_f32(t, &a->w, w);
    a->has_b = b != NULL;
    if (b)
        abs_f32(t, &a->b, b);
}

static void abs_in_free(abs_in *a)
{
    fl_tensor_release(&a->x);
    fl_tensor_release(&a->w);
    if (a->has_b)
        fl_tensor_release(&a->b);
}

/* Rounding of a GEMM-like sum scales with its summands, not with the sum: where sums
 * cancel (‖|x||w|‖ >> ‖xw‖) the relative error of a correct f32 result grows by that
 * ratio. r is the reference result, ra the same op on the absolute values; >= 1. */
static double cancellation(const fl_tensor *r, const fl_tensor *ra)
{
    double n = norm_f32(r), na = norm_f32(ra);
    return n > 0 && na > n ? na / n : 1.0;
}

/* ---- linear ----------------------------------------------------------------------------- */

static void test_linear(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 24; trial++) {
        fl_dtype wdt = wdtype(trial);
        int nd = (int)rnd(t, 1, 4);
        int64_t xs[FL_MAX_DIMS], os[FL_MAX_DIMS];
        for (int i = 0; i < nd - 1; i++)
            xs[i] = rnd(t, 1, 5);
        int64_t K = trial == 0 ? 1 : rnd(t, 1, 70), N = trial == 1 ? 1 : rnd(t, 1, 45);
        xs[nd - 1] = K;
        memcpy(os, xs, sizeof xs);
        os[nd - 1] = N;
        int64_t wshape[2] = { N, K };
        tv x, w, b, o;
        tv_in(t, &x, FL_F32, nd, xs, in_layout(t), 1.0);
        tv_in(t, &w, wdt, 2, wshape, in_layout(t), 1.0 / sqrt((double)K));
        bool has_bias = trial % 4 != 3;
        if (has_bias)
            tv_in(t, &b, wdtype(trial + 1), 1, &N, in_layout(t), 1.0);
        tv_out(t, &o, nd, os, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, nd, os);
        OK(fl_linear(t->ref, &r, &x.hv, &w.hv, has_bias ? &b.hv : NULL, &t->err));
        OK(fl_linear(t->be, &o.dv, &x.dv, &w.dv, has_bias ? &b.dv : NULL, &t->err));
        abs_in a;
        fl_tensor ra;
        abs_in_make(t, &a, &x.hv, &w.hv, has_bias ? &b.hv : NULL);
        host_f32(t, &ra, nd, os);
        OK(fl_linear(t->ref, &ra, &a.x, &a.w, has_bias ? &a.b : NULL, &t->err));
        check_out(t, &o, &r, gemm_tol(t, wdt) * cancellation(&r, &ra), "linear");
        abs_in_free(&a);
        fl_tensor_release(&ra);
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&w);
        if (has_bias)
            tv_free(&b);
        tv_free(&o);
    }
    close_target(t);
}

/* ---- convolutions ----------------------------------------------------------------------- */

static void test_conv2d(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    static const int kern[][2] = { { 3, 3 }, { 1, 1 }, { 3, 3 }, { 2, 2 }, { 1, 3 } };
    for (int trial = 0; trial < 20; trial++) {
        fl_dtype wdt = wdtype(trial);
        int kh = kern[trial % 5][0], kw = kern[trial % 5][1];
        int64_t B = rnd(t, 1, 3), C = rnd(t, 1, 9), H = rnd(t, 1, 13), W = rnd(t, 1, 13), O = rnd(t, 1, 9);
        fl_conv_opts co = fl_conv_opts_make((int)rnd(t, 1, 2), kh == 3 ? (int)rnd(t, 0, 1) : 0);
        if (trial % 7 == 6) { /* asymmetric, as the SD VAE's downsampler */
            co.pad_lo[0] = co.pad_lo[1] = 0;
            co.pad_hi[0] = co.pad_hi[1] = 1;
        }
        if (H + co.pad_lo[0] + co.pad_hi[0] < kh)
            H = kh;
        if (W + co.pad_lo[1] + co.pad_hi[1] < kw)
            W = kw;
        int64_t Ho = (H + co.pad_lo[0] + co.pad_hi[0] - kh) / co.stride[0] + 1;
        int64_t Wo = (W + co.pad_lo[1] + co.pad_hi[1] - kw) / co.stride[1] + 1;
        int64_t xsh[4] = { B, C, H, W }, wsh[4] = { O, C, kh, kw }, osh[4] = { B, O, Ho, Wo };
        tv x, w, b, o;
        tv_in(t, &x, FL_F32, 4, xsh, in_layout(t), 1.0);
        tv_in(t, &w, wdt, 4, wsh, in_layout(t), 1.0 / sqrt((double)(C * kh * kw)));
        bool has_bias = trial % 3 != 2;
        if (has_bias)
            tv_in(t, &b, wdt, 1, &O, in_layout(t), 1.0);
        tv_out(t, &o, 4, osh, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, 4, osh);
        OK(fl_conv2d(t->ref, &r, &x.hv, &w.hv, has_bias ? &b.hv : NULL, co, &t->err));
        OK(fl_conv2d(t->be, &o.dv, &x.dv, &w.dv, has_bias ? &b.dv : NULL, co, &t->err));
        abs_in a;
        fl_tensor ra;
        abs_in_make(t, &a, &x.hv, &w.hv, has_bias ? &b.hv : NULL);
        host_f32(t, &ra, 4, osh);
        OK(fl_conv2d(t->ref, &ra, &a.x, &a.w, has_bias ? &a.b : NULL, co, &t->err));
        check_out(t, &o, &r, gemm_tol(t, wdt) * cancellation(&r, &ra), "conv2d");
        abs_in_free(&a);
        fl_tensor_release(&ra);
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&w);
        if (has_bias)
            tv_free(&b);
        tv_free(&o);
    }
    /* one large enough that the CPU's im2col runs in several bands of output rows */
    {
        int64_t xsh[4] = { 1, 128, 37, 41 }, wsh[4] = { 5, 128, 3, 3 }, osh[4] = { 1, 5, 37, 41 };
        tv x, w, o;
        tv_in(t, &x, FL_F32, 4, xsh, L_CONTIG, 1.0);
        tv_in(t, &w, FL_F32, 4, wsh, L_CONTIG, 0.03);
        tv_out(t, &o, 4, osh, L_STEPPED);
        fl_tensor r;
        host_f32(t, &r, 4, osh);
        OK(fl_conv2d(t->ref, &r, &x.hv, &w.hv, NULL, fl_conv_opts_make(1, 1), &t->err));
        OK(fl_conv2d(t->be, &o.dv, &x.dv, &w.dv, NULL, fl_conv_opts_make(1, 1), &t->err));
        check_out(t, &o, &r, gemm_tol(t, FL_F32), "conv2d (banded im2col)");
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&w);
        tv_free(&o);
    }
    close_target(t);
}

static void test_conv1d(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 16; trial++) {
        fl_dtype wdt = wdtype(trial);
        int64_t B = rnd(t, 1, 3), C = rnd(t, 1, 9), L = rnd(t, 1, 17), O = rnd(t, 1, 9), K = rnd(t, 1, 4);
        fl_conv_opts co = fl_conv_opts_make((int)rnd(t, 1, 2), (int)rnd(t, 0, 2));
        if (trial % 5 == 4) { /* causal: all the padding in front (Wan's VAE) */
            co.pad_lo[0] = (int)K - 1;
            co.pad_hi[0] = 0;
        }
        if (L + co.pad_lo[0] + co.pad_hi[0] < K)
            L = K;
        int64_t Lo = (L + co.pad_lo[0] + co.pad_hi[0] - K) / co.stride[0] + 1;
        int64_t xsh[3] = { B, C, L }, wsh[3] = { O, C, K }, osh[3] = { B, O, Lo };
        tv x, w, b, o;
        tv_in(t, &x, FL_F32, 3, xsh, in_layout(t), 1.0);
        tv_in(t, &w, wdt, 3, wsh, in_layout(t), 1.0 / sqrt((double)(C * K)));
        tv_in(t, &b, wdtype(trial + 1), 1, &O, in_layout(t), 1.0);
        tv_out(t, &o, 3, osh, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, 3, osh);
        OK(fl_conv1d(t->ref, &r, &x.hv, &w.hv, &b.hv, co, &t->err));
        OK(fl_conv1d(t->be, &o.dv, &x.dv, &w.dv, &b.dv, co, &t->err));
        abs_in a;
        fl_tensor ra;
        abs_in_make(t, &a, &x.hv, &w.hv, &b.hv);
        host_f32(t, &ra, 3, osh);
        OK(fl_conv1d(t->ref, &ra, &a.x, &a.w, &a.b, co, &t->err));
        check_out(t, &o, &r, gemm_tol(t, wdt) * cancellation(&r, &ra), "conv1d");
        abs_in_free(&a);
        fl_tensor_release(&ra);
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&w);
        tv_free(&b);
        tv_free(&o);
    }
    close_target(t);
}

/* The temporal conv as VideoCrafter2 runs it: a (B F, C, H, W) activation viewed as
 * [B, C, F, H, W] (no copy), kernel (3, 1, 1), padding 1, written back into a (B F, O, H, W)
 * buffer through the same kind of view; and on plain [B, C, T, H, W] tensors. */
static void test_conv_temporal(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 9; trial++) {
        fl_dtype wdt = wdtype(trial);
        int64_t B = rnd(t, 1, 2), F = rnd(t, 1, 7), C = rnd(t, 1, 8), H = rnd(t, 1, 6), W = rnd(t, 1, 7);
        int64_t O = trial % 3 == 0 ? C : rnd(t, 1, 8), K = trial % 4 == 3 ? 1 : 3;
        fl_conv_opts co = fl_conv_opts_make(1, K == 3 ? 1 : 0);
        bool folded = trial % 2 == 0;
        int64_t x4[4] = { B * F, C, H, W }, o4[4] = { B * F, O, H, W };
        int64_t x5[5] = { B, C, F, H, W }, o5[5] = { B, O, F, H, W }, w5[5] = { O, C, K, 1, 1 };
        tv x, w, b, o;
        tv_in(t, &x, FL_F32, folded ? 4 : 5, folded ? x4 : x5, folded ? L_CONTIG : in_layout(t), 1.0);
        /* the weight as [O, C, K, 1, 1] or as [O, C, K] (both accepted) */
        int64_t w3[3] = { O, C, K };
        bool wk3 = trial % 3 == 1;
        tv_in(t, &w, wdt, wk3 ? 3 : 5, wk3 ? w3 : w5, in_layout(t), 1.0 / sqrt((double)(C * K)));
        tv_in(t, &b, wdtype(trial + 1), 1, &O, in_layout(t), 1.0);
        tv_out(t, &o, folded ? 4 : 5, folded ? o4 : o5, folded ? L_CONTIG : (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor hx = FL_TENSOR_NULL, dx = FL_TENSOR_NULL, ho = FL_TENSOR_NULL, dov = FL_TENSOR_NULL;
        if (folded) {
            OK(fl_view_frames_as_video(&hx, &x.hv, F, &t->err));
            OK(fl_view_frames_as_video(&dx, &x.dv, F, &t->err));
            OK(fl_view_frames_as_video(&dov, &o.dv, F, &t->err));
        } else {
            fl_tensor_retain(&hx, &x.hv);
            fl_tensor_retain(&dx, &x.dv);
            fl_tensor_retain(&dov, &o.dv);
        }
        host_f32(t, &ho, 5, o5);
        OK(fl_conv_temporal(t->ref, &ho, &hx, &w.hv, &b.hv, co, &t->err));
        OK(fl_conv_temporal(t->be, &dov, &dx, &w.dv, &b.dv, co, &t->err));
        abs_in a;
        fl_tensor rha = FL_TENSOR_NULL;
        abs_in_make(t, &a, &hx, &w.hv, &b.hv);
        host_f32(t, &rha, 5, o5);
        OK(fl_conv_temporal(t->ref, &rha, &a.x, &a.w, &a.b, co, &t->err));
        double cancel = cancellation(&ho, &rha);
        abs_in_free(&a);
        fl_tensor_release(&rha);
        /* compare in the output's own layout: the reference result viewed the same way */
        fl_tensor want = FL_TENSOR_NULL;
        if (folded) {
            fl_tensor r4 = FL_TENSOR_NULL, rv = FL_TENSOR_NULL;
            host_f32(t, &r4, 4, o4);
            OK(fl_view_frames_as_video(&rv, &r4, F, &t->err));
            OK(fl_copy(t->ref, &rv, &ho, &t->err));
            want = r4;
            fl_tensor_release(&rv);
        } else {
            fl_tensor_retain(&want, &ho);
        }
        check_out(t, &o, &want, gemm_tol(t, wdt) * cancel, "conv_temporal");
        fl_tensor_release(&want);
        fl_tensor_release(&ho);
        fl_tensor_release(&hx);
        fl_tensor_release(&dx);
        fl_tensor_release(&dov);
        tv_free(&x);
        tv_free(&w);
        tv_free(&b);
        tv_free(&o);
    }
    close_target(t);
}

/* ---- norms ------------------------------------------------------------------------------ */

static void test_group_norm(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 18; trial++) {
        int nd = (int)rnd(t, 2, 5), groups = (int)rnd(t, 1, 4);
        int64_t shape[FL_MAX_DIMS];
        shape[0] = rnd(t, 1, 3);
        shape[1] = groups * rnd(t, 1, 4);
        for (int i = 2; i < nd; i++)
            shape[i] = rnd(t, 1, nd > 3 ? 5 : 9);
        bool affine = trial % 3 != 0, silu = trial % 2 == 1;
        double eps = trial % 2 ? 1e-5 : 1e-6;
        tv x, g, b, o;
        /* x is normalised in place below on some trials: never a broadcast view there */
        tv_in(t, &x, FL_F32, nd, shape, trial % 4 == 1 ? (int)rnd(t, 0, L_COUNT - 1) : in_layout(t), 2.0);
        if (affine) {
            tv_in(t, &g, wdtype(trial), 1, &shape[1], in_layout(t), 1.0);
            tv_in(t, &b, wdtype(trial + 1), 1, &shape[1], in_layout(t), 1.0);
        }
        tv_out(t, &o, nd, shape, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, nd, shape);
        OK(fl_group_norm(t->ref, &r, &x.hv, groups, affine ? &g.hv : NULL, affine ? &b.hv : NULL, eps, silu, &t->err));
        OK(fl_group_norm(t->be, &o.dv, &x.dv, groups, affine ? &g.dv : NULL, affine ? &b.dv : NULL, eps, silu, &t->err));
        check_out(t, &o, &r, F32_TOL, "group_norm");
        /* in place on the input gives the same */
        if (trial % 4 == 1) {
            OK(fl_group_norm(t->be, &x.dv, &x.dv, groups, affine ? &g.dv : NULL, affine ? &b.dv : NULL, eps, silu, &t->err));
            tv_fetch(t, &x);
            double e = rel_err(t, &x.hv, &r);
            if (!(e <= F32_TOL))
                fail_msg("group_norm in place on %s: relative error %.3g", t->target, e);
        }
        fl_tensor_release(&r);
        tv_free(&x);
        if (affine) {
            tv_free(&g);
            tv_free(&b);
        }
        tv_free(&o);
    }
    close_target(t);
}

/* Without affine and SiLU, each (batch, group) comes out with mean 0 and variance
 * v / (v + eps) (v the input's variance): the defining property, checked directly. */
static void test_group_norm_moments(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    int64_t shape[4] = { 2, 12, 5, 7 };
    int groups = 3;
    double eps = 1e-5;
    tv x, o;
    tv_in_shift(t, &x, FL_F32, 4, shape, L_PERMUTED, 3.0, 1.5); /* a non-zero mean too */
    tv_out(t, &o, 4, shape, L_CONTIG);
    OK(fl_group_norm(t->be, &o.dv, &x.dv, groups, NULL, NULL, eps, 0, &t->err));
    tv_fetch(t, &o);
    for (int64_t b = 0; b < 2; b++)
        for (int g = 0; g < groups; g++) {
            double s = 0, s2 = 0, xs = 0, xs2 = 0;
            int64_t n = 0;
            for (int64_t c = g * 4; c < g * 4 + 4; c++)
                for (int64_t i = 0; i < 5; i++)
                    for (int64_t j = 0; j < 7; j++) {
                        int64_t idx[4] = { b, c, i, j };
                        double v = fl_tensor_get(&o.hv, idx), xv = fl_tensor_get(&x.hv, idx);
                        s += v;
                        s2 += v * v;
                        xs += xv;
                        xs2 += xv * xv;
                        n++;
                    }
            double mean = s / (double)n, var = s2 / (double)n - mean * mean;
            double xm = xs / (double)n, xv = xs2 / (double)n - xm * xm;
            assert_true(fabs(mean) < 1e-5);
            assert_true(fabs(var - xv / (xv + eps)) < 1e-5);
        }
    tv_free(&x);
    tv_free(&o);
    close_target(t);
}

static void test_layer_rms_norm(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 24; trial++) {
        int nd = (int)rnd(t, 1, 4);
        int64_t shape[FL_MAX_DIMS];
        for (int i = 0; i < nd; i++)
            shape[i] = rnd(t, 1, 6);
        shape[nd - 1] = trial % 5 == 0 ? 1 : rnd(t, 1, 300);
        bool rms = trial % 2 == 1;
        int affine = (int)(trial / 2 % 3); /* 0 none, 1 gamma, 2 gamma and beta */
        if (rms && affine == 2)
            affine = 1;
        tv x, g, b, o;
        tv_in(t, &x, FL_F32, nd, shape, (int)rnd(t, 0, L_COUNT - 1), 1.5);
        if (affine >= 1)
            tv_in(t, &g, wdtype(trial), 1, &shape[nd - 1], in_layout(t), 1.0);
        if (affine == 2)
            tv_in(t, &b, wdtype(trial + 1), 1, &shape[nd - 1], in_layout(t), 1.0);
        tv_out(t, &o, nd, shape, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, nd, shape);
        const fl_tensor *hg = affine >= 1 ? &g.hv : NULL, *dg = affine >= 1 ? &g.dv : NULL;
        const fl_tensor *hb = affine == 2 ? &b.hv : NULL, *db = affine == 2 ? &b.dv : NULL;
        if (rms) {
            OK(fl_rms_norm(t->ref, &r, &x.hv, hg, 1e-6, &t->err));
            OK(fl_rms_norm(t->be, &o.dv, &x.dv, dg, 1e-6, &t->err));
        } else {
            OK(fl_layer_norm(t->ref, &r, &x.hv, hg, hb, 1e-6, &t->err));
            OK(fl_layer_norm(t->be, &o.dv, &x.dv, dg, db, 1e-6, &t->err));
        }
        check_out(t, &o, &r, F32_TOL, rms ? "rms_norm" : "layer_norm");
        fl_tensor_release(&r);
        tv_free(&x);
        if (affine >= 1)
            tv_free(&g);
        if (affine == 2)
            tv_free(&b);
        tv_free(&o);
    }
    close_target(t);
}

/* ---- elementwise ------------------------------------------------------------------------ */

static void test_activation(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 18; trial++) {
        fl_act act = (fl_act)(trial % FL_ACT_COUNT);
        int nd = (int)rnd(t, 1, 5);
        int64_t shape[FL_MAX_DIMS];
        for (int i = 0; i < nd; i++)
            shape[i] = rnd(t, 1, nd > 3 ? 5 : 12);
        tv x, o;
        tv_in(t, &x, FL_F32, nd, shape, (int)rnd(t, 0, L_COUNT - 1), 3.0);
        tv_out(t, &o, nd, shape, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, nd, shape);
        OK(fl_activation(t->ref, act, &r, &x.hv, &t->err));
        OK(fl_activation(t->be, act, &o.dv, &x.dv, &t->err));
        check_out(t, &o, &r, F32_TOL, "activation");
        if (trial % 3 == 0) { /* in place */
            OK(fl_activation(t->be, act, &x.dv, &x.dv, &t->err));
            tv_fetch(t, &x);
            assert_true(rel_err(t, &x.hv, &r) <= F32_TOL);
        }
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&o);
    }
    /* a few closed forms: silu(1) = 1 / (1 + e^-1); gelu(1) = Φ(1); gelu_tanh(-2) */
    int64_t one = 1;
    fl_tensor a, y;
    OK(fl_tensor_empty(&a, FL_F32, 1, &one, NULL, &t->err));
    OK(fl_tensor_empty(&y, FL_F32, 1, &one, NULL, &t->err));
    int64_t z = 0;
    fl_tensor_set(&a, &z, 1.0);
    OK(fl_silu(t->ref, &y, &a, &t->err));
    assert_true(fabs(fl_tensor_get(&y, &z) - 0.7310585786300049) < 1e-7);
    OK(fl_gelu(t->ref, &y, &a, &t->err));
    assert_true(fabs(fl_tensor_get(&y, &z) - 0.8413447460685429) < 1e-7);
    fl_tensor_set(&a, &z, -2.0);
    OK(fl_gelu_tanh(t->ref, &y, &a, &t->err));
    assert_true(fabs(fl_tensor_get(&y, &z) - (-0.04540230591222)) < 1e-7);
    fl_tensor_release(&a);
    fl_tensor_release(&y);
    close_target(t);
}

static void test_modulate_gate(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 16; trial++) {
        int64_t B = rnd(t, 1, 3), L = rnd(t, 1, 20), C = rnd(t, 1, 40);
        int64_t xs[3] = { B, L, C }, ps[3] = { B, 1, C };
        tv x, s, h, o;
        tv_in(t, &x, FL_F32, 3, xs, (int)rnd(t, 0, L_COUNT - 1), 1.0);
        tv_in(t, &s, FL_F32, 3, trial % 2 ? ps : xs, in_layout(t), 0.5);
        tv_in(t, &h, FL_F32, 3, trial % 3 ? ps : xs, in_layout(t), 0.5);
        tv_out(t, &o, 3, xs, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, 3, xs);
        bool gate = trial % 2 == 0;
        if (gate) {
            OK(fl_gate_add(t->ref, &r, &x.hv, &s.hv, &h.hv, &t->err));
            OK(fl_gate_add(t->be, &o.dv, &x.dv, &s.dv, &h.dv, &t->err));
        } else {
            OK(fl_modulate(t->ref, &r, &x.hv, &s.hv, &h.hv, &t->err));
            OK(fl_modulate(t->be, &o.dv, &x.dv, &s.dv, &h.dv, &t->err));
        }
        check_out(t, &o, &r, F32_TOL, gate ? "gate_add" : "modulate");
        /* in place on x (the residual stream) */
        if (gate)
            OK(fl_gate_add(t->be, &x.dv, &x.dv, &s.dv, &h.dv, &t->err));
        else
            OK(fl_modulate(t->be, &x.dv, &x.dv, &s.dv, &h.dv, &t->err));
        tv_fetch(t, &x);
        assert_true(rel_err(t, &x.hv, &r) <= F32_TOL);
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&s);
        tv_free(&h);
        tv_free(&o);
    }
    close_target(t);
}

static void test_upsample(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 12; trial++) {
        int nd = (int)rnd(t, 2, 5);
        int64_t xs[FL_MAX_DIMS], os[FL_MAX_DIMS];
        for (int i = 0; i < nd; i++)
            xs[i] = os[i] = rnd(t, 1, nd > 3 ? 5 : 9);
        int64_t fh = trial % 3 == 2 ? rnd(t, 1, 3) : 2, fw = trial % 3 == 2 ? rnd(t, 1, 3) : 2;
        os[nd - 2] *= fh;
        os[nd - 1] *= fw;
        tv x, o;
        tv_in(t, &x, FL_F32, nd, xs, in_layout(t), 1.0);
        tv_out(t, &o, nd, os, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, nd, os);
        OK(fl_upsample_nearest(t->ref, &r, &x.hv, &t->err));
        OK(fl_upsample_nearest(t->be, &o.dv, &x.dv, &t->err));
        check_out(t, &o, &r, 0.0, "upsample_nearest"); /* a copy: exact */
        /* and the reference is the definition */
        int64_t idx[FL_MAX_DIMS] = { 0 }, xi[FL_MAX_DIMS];
        for (int64_t i = 0; i < fl_tensor_numel(&r); i++) {
            memcpy(xi, idx, sizeof idx);
            xi[nd - 2] /= fh;
            xi[nd - 1] /= fw;
            assert_true(fl_tensor_get(&r, idx) == fl_tensor_get(&x.hv, xi));
            for (int d = nd - 1; d >= 0; d--) {
                if (++idx[d] < os[d])
                    break;
                idx[d] = 0;
            }
        }
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&o);
    }
    close_target(t);
}

/* ---- attention -------------------------------------------------------------------------- */

enum { A_BLHD = L_COUNT }; /* q, k, v as the permuted view of a [B, L, NH, D] activation */

/* An attention operand [B, NH, L, D] in layout `lay` (including A_BLHD). */
static void att_operand(T *t, tv *x, int64_t B, int64_t NH, int64_t L, int64_t D, int lay)
{
    int64_t shape[4] = { B, NH, L, D };
    if (lay != A_BLHD) {
        tv_in(t, x, FL_F32, 4, shape, lay, 1.0);
        return;
    }
    memset(x, 0, sizeof *x);
    int64_t bs[4] = { B, L, NH, D };
    static const int perm[4] = { 0, 2, 1, 3 };
    OK(fl_tensor_empty(&x->hb, FL_F32, 4, bs, NULL, &t->err));
    fill_normal(t, &x->hb, 1.0, 0.0);
    OK(fl_tensor_permute(&x->hv, &x->hb, perm, &t->err));
    to_device(t, x);
}

static void run_attention(T *t, int64_t B, int64_t NH, int64_t Lq, int64_t Lk, int64_t D, int64_t Dv,
                          int mask_kind, int lay)
{
    tv q, k, v, o, m;
    att_operand(t, &q, B, NH, Lq, D, lay);
    att_operand(t, &k, B, NH, Lk, D, lay);
    att_operand(t, &v, B, NH, Lk, Dv, lay);
    int64_t osh[4] = { B, NH, Lq, Dv };
    tv_out(t, &o, 4, osh, lay == A_BLHD ? L_CONTIG : (int)rnd(t, 0, L_COUNT - 1));
    bool has_mask = mask_kind != 0;
    if (mask_kind == 1) { /* f32 additive, per head */
        int64_t ms[4] = { B, NH, Lq, Lk };
        tv_in(t, &m, FL_F32, 4, ms, in_layout(t), 2.0);
    } else if (mask_kind == 2) { /* u8 key padding [B, 1, 1, Lk], some keys hidden */
        int64_t ms[4] = { B, 1, 1, Lk };
        memset(&m, 0, sizeof m);
        OK(fl_tensor_empty(&m.hb, FL_U8, 4, ms, NULL, &t->err));
        uint8_t *p = fl_tensor_data(&m.hb);
        for (int64_t i = 0; i < B * Lk; i++)
            p[i] = unif(t) < 0.7;
        fl_tensor_retain(&m.hv, &m.hb);
        to_device(t, &m);
    } else if (mask_kind == 3) { /* u8 [Lq, Lk] causal-like with whole rows hidden */
        int64_t ms[2] = { Lq, Lk };
        memset(&m, 0, sizeof m);
        OK(fl_tensor_empty(&m.hb, FL_U8, 2, ms, NULL, &t->err));
        uint8_t *p = fl_tensor_data(&m.hb);
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t j = 0; j < Lk; j++)
                p[i * Lk + j] = i % 5 != 4 && j <= i + Lk / 3;
        fl_tensor_retain(&m.hv, &m.hb);
        to_device(t, &m);
    }
    fl_tensor r;
    host_f32(t, &r, 4, osh);
    OK(fl_attention(t->ref, &r, &q.hv, &k.hv, &v.hv, has_mask ? &m.hv : NULL, 0.0, &t->err));
    OK(fl_attention(t->be, &o.dv, &q.dv, &k.dv, &v.dv, has_mask ? &m.dv : NULL, 0.0, &t->err));
    char what[200];
    snprintf(what, sizeof what, "attention B%lld NH%lld Lq%lld Lk%lld D%lld Dv%lld mask%d layout%d", (long long)B,
             (long long)NH, (long long)Lq, (long long)Lk, (long long)D, (long long)Dv, mask_kind, lay);
    check_out(t, &o, &r, F32_TOL, what);
    fl_tensor_release(&r);
    tv_free(&q);
    tv_free(&k);
    tv_free(&v);
    tv_free(&o);
    if (has_mask)
        tv_free(&m);
}

static void test_attention(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    /* short sequences (the temporal attention's regime), odd sizes, every mask kind */
    for (int trial = 0; trial < 16; trial++)
        run_attention(t, rnd(t, 1, 3), rnd(t, 1, 3), rnd(t, 1, 20), rnd(t, 1, 20), rnd(t, 1, 40), rnd(t, 1, 40),
                      trial % 4, (int)rnd(t, 0, A_BLHD));
    /* longer ones that cross the tiles of every backend (and D = 40 as VideoCrafter2's
     * 320-channel level with 8 heads; 64, 128 as Wan's heads) */
    run_attention(t, 1, 2, 300, 600, 40, 40, 0, A_BLHD);
    run_attention(t, 2, 1, 129, 513, 64, 64, 1, L_CONTIG);
    run_attention(t, 1, 1, 70, 1030, 128, 128, 2, A_BLHD);
    run_attention(t, 1, 2, 260, 90, 17, 33, 3, L_STEPPED);
    close_target(t);
}

/* Hiding keys with a mask is the same as leaving them out; and a query with every key
 * hidden gets zeros. */
static void test_attention_mask_property(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    int64_t B = 2, NH = 2, Lq = 37, Lk = 300, D = 24;
    int64_t qs[4] = { B, NH, Lq, D }, ks[4] = { B, NH, Lk, D };
    tv q, k, v, o, o2, m;
    tv_in(t, &q, FL_F32, 4, qs, L_CONTIG, 1.0);
    tv_in(t, &k, FL_F32, 4, ks, L_CONTIG, 1.0);
    tv_in(t, &v, FL_F32, 4, ks, L_CONTIG, 1.0);
    /* keep every key j with keep[j], the same for all batches and heads */
    uint8_t keep[300];
    int64_t kept = 0;
    for (int64_t j = 0; j < Lk; j++)
        kept += keep[j] = j % 3 != 1 && unif(t) < 0.8;
    int64_t ms[1] = { Lk };
    memset(&m, 0, sizeof m);
    OK(fl_tensor_empty(&m.hb, FL_U8, 1, ms, NULL, &t->err));
    memcpy(fl_tensor_data(&m.hb), keep, (size_t)Lk);
    fl_tensor_retain(&m.hv, &m.hb);
    to_device(t, &m);
    tv_out(t, &o, 4, qs, L_CONTIG);
    OK(fl_attention(t->be, &o.dv, &q.dv, &k.dv, &v.dv, &m.dv, 0.0, &t->err));
    /* the same keys gathered into shorter k, v */
    int64_t ks2[4] = { B, NH, kept, D };
    tv k2, v2;
    memset(&k2, 0, sizeof k2);
    memset(&v2, 0, sizeof v2);
    OK(fl_tensor_empty(&k2.hb, FL_F32, 4, ks2, NULL, &t->err));
    OK(fl_tensor_empty(&v2.hb, FL_F32, 4, ks2, NULL, &t->err));
    for (int64_t bh = 0; bh < B * NH; bh++)
        for (int64_t j = 0, jj = 0; j < Lk; j++) {
            if (!keep[j])
                continue;
            for (int64_t d = 0; d < D; d++) {
                int64_t from[4] = { bh / NH, bh % NH, j, d }, to[4] = { bh / NH, bh % NH, jj, d };
                fl_tensor_set(&k2.hb, to, fl_tensor_get(&k.hv, from));
                fl_tensor_set(&v2.hb, to, fl_tensor_get(&v.hv, from));
            }
            jj++;
        }
    fl_tensor_retain(&k2.hv, &k2.hb);
    fl_tensor_retain(&v2.hv, &v2.hb);
    to_device(t, &k2);
    to_device(t, &v2);
    tv_out(t, &o2, 4, qs, L_CONTIG);
    OK(fl_attention(t->be, &o2.dv, &q.dv, &k2.dv, &v2.dv, NULL, 0.0, &t->err));
    tv_fetch(t, &o);
    tv_fetch(t, &o2);
    double e = rel_err(t, &o.hv, &o2.hv);
    if (!(e <= F32_TOL))
        fail_msg("attention on %s: masked keys differ from removed keys by %.3g", t->target, e);
    /* every key hidden: zeros */
    memset(fl_tensor_data(&m.hb), 0, (size_t)Lk);
    tv_free(&o2);
    fl_tensor_release(&m.db);
    fl_tensor_release(&m.dv);
    to_device(t, &m);
    tv_out(t, &o2, 4, qs, L_CONTIG);
    OK(fl_attention(t->be, &o2.dv, &q.dv, &k.dv, &v.dv, &m.dv, 0.0, &t->err));
    tv_fetch(t, &o2);
    const float *p = fl_tensor_data(&o2.hb);
    for (int64_t i = 0; i < fl_tensor_numel(&o2.hb); i++)
        assert_true(p[i] == 0.0f);
    tv_free(&q);
    tv_free(&k);
    tv_free(&v);
    tv_free(&k2);
    tv_free(&v2);
    tv_free(&o);
    tv_free(&o2);
    tv_free(&m);
    close_target(t);
}

/* An allocator that remembers the most bytes it ever had out at once. */
typedef struct peak_alloc {
    fl_allocator iface;
    size_t live, peak;
} peak_alloc;

static void *peak_alloc_fn(void *ud, size_t size, size_t align)
{
    peak_alloc *p = ud;
    void *m = fl_allocator_default()->alloc(fl_allocator_default()->ud, size, align);
    if (m) {
        p->live += size;
        p->peak = p->live > p->peak ? p->live : p->peak;
    }
    return m;
}

static void peak_free_fn(void *ud, void *ptr, size_t size)
{
    peak_alloc *p = ud;
    if (ptr)
        p->live -= size;
    fl_allocator_default()->free(fl_allocator_default()->ud, ptr, size);
}

/* The CPU attention's scratch stays far below the Lq x Lk score matrix. */
static void test_attention_memory(void **state)
{
    (void)state;
    fl_error err;
    peak_alloc pa = { { peak_alloc_fn, peak_free_fn, NULL }, 0, 0 };
    pa.iface.ud = &pa;
    fl_backend *be;
    assert_int_equal(fl_backend_new(&be, "cpu", 0, &pa.iface, &err), FL_OK);
    int64_t L = 3000, D = 16, shape[4] = { 1, 1, L, D };
    fl_tensor q, o;
    assert_int_equal(fl_tensor_zeros(&q, FL_F32, 4, shape, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&o, FL_F32, 4, shape, NULL, &err), FL_OK);
    size_t before = pa.peak;
    assert_int_equal(fl_attention(be, &o, &q, &q, &q, NULL, 0.0, &err), FL_OK);
    size_t scores = (size_t)(L * L) * sizeof(float);
    print_message("attention L=%lld: peak scratch %zu bytes (the score matrix would be %zu)\n", (long long)L,
                  pa.peak - before, scores);
    assert_true(pa.peak - before < scores / 8);
    fl_tensor_release(&q);
    fl_tensor_release(&o);
    fl_backend_free(be);
}

/* ---- embeddings ------------------------------------------------------------------------- */

static void test_timestep_embedding(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    /* hand-computed: LDM, dim 4: freqs 10000^(-j/2) = {1, 0.01}, row [cos | sin] */
    int64_t n = 2, osh[2] = { 2, 4 };
    tv tm, o;
    memset(&tm, 0, sizeof tm);
    OK(fl_tensor_empty(&tm.hb, FL_F64, 1, &n, NULL, &t->err));
    ((double *)fl_tensor_data(&tm.hb))[0] = 1.0;
    ((double *)fl_tensor_data(&tm.hb))[1] = 500.0;
    fl_tensor_retain(&tm.hv, &tm.hb);
    to_device(t, &tm);
    tv_out(t, &o, 2, osh, L_CONTIG);
    OK(fl_timestep_embedding(t->be, &o.dv, &tm.dv, FL_TEMB_LDM, &t->err));
    tv_fetch(t, &o);
    const double want[2][4] = {
        { 0.5403023058681398, 0.9999500004166653, 0.8414709848078965, 0.009999833334166664 },
        { -0.883849273431478, 0.28366218546322625, -0.46777180532247614, -0.9589242746631385 },
    };
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            int64_t idx[2] = { i, j };
            double got = fl_tensor_get(&o.hv, idx);
            if (!(fabs(got - want[i][j]) < 2e-7))
                fail_msg("timestep embedding [%d][%d] on %s: %.9g, expected %.9g", i, j, t->target, got, want[i][j]);
        }
    tv_free(&o);
    /* diffusers' default (downscale_freq_shift 1, sin first), dim 5 (odd: trailing 0):
     * half 2, freqs exp(-ln(1e4) j / (2 - 1)) = {1, 1e-4}, t = 2 */
    ((double *)fl_tensor_data(&tm.hb))[0] = 2.0;
    fl_tensor_release(&tm.db);
    fl_tensor_release(&tm.dv);
    to_device(t, &tm);
    int64_t osh5[2] = { 2, 5 };
    tv_out(t, &o, 2, osh5, L_STEPPED);
    fl_temb_opts df = { 10000.0, 1.0, 1.0, 0 };
    OK(fl_timestep_embedding(t->be, &o.dv, &tm.dv, df, &t->err));
    tv_fetch(t, &o);
    const double want5[5] = { 0.9092974268256817, 1.999999986666667e-4, -0.4161468365471424, 0.9999999800000001, 0.0 };
    for (int j = 0; j < 5; j++) {
        int64_t idx[2] = { 0, j };
        assert_true(fabs(fl_tensor_get(&o.hv, idx) - want5[j]) < 2e-7);
    }
    tv_free(&o);
    tv_free(&tm);
    /* random t and dims against the reference */
    for (int trial = 0; trial < 6; trial++) {
        int64_t N = rnd(t, 1, 9), d = rnd(t, 1, 321);
        int64_t sh[2] = { N, d };
        tv tr;
        tv_in(t, &tr, trial % 2 ? FL_F32 : FL_F64, 1, &N, (int)rnd(t, 0, L_COUNT - 1), 300.0);
        tv_out(t, &o, 2, sh, (int)rnd(t, 0, L_COUNT - 1));
        fl_temb_opts op = { trial % 3 ? 10000.0 : 1000.0, trial % 2 ? 0.0 : 1.0, trial == 4 ? 1000.0 : 1.0, trial % 2 };
        if (d / 2 <= 1)
            op.freq_shift = 0.0;
        fl_tensor r;
        host_f32(t, &r, 2, sh);
        OK(fl_timestep_embedding(t->ref, &r, &tr.hv, op, &t->err));
        OK(fl_timestep_embedding(t->be, &o.dv, &tr.dv, op, &t->err));
        check_out(t, &o, &r, F32_TOL, "timestep_embedding");
        fl_tensor_release(&r);
        tv_free(&tr);
        tv_free(&o);
    }
    close_target(t);
}

static void test_rope(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    for (int trial = 0; trial < 12; trial++) {
        fl_rope_opts ro = { { rnd(t, 1, 4), rnd(t, 1, 4), rnd(t, 1, 5) }, { 0, 0, 0 }, { 0, 0, 0 }, 10000.0 };
        int64_t D = 2 * rnd(t, 1, 20);
        if (trial % 3 == 0) { /* Wan's split */
            D = 2 * rnd(t, 3, 24);
            ro.dims[1] = ro.dims[2] = 2 * (D / 6);
            ro.dims[0] = D - 4 * (D / 6);
        } else { /* partial: some dims pass through */
            int64_t left = D;
            for (int a = 0; a < 3; a++) {
                ro.dims[a] = 2 * rnd(t, 0, left / 2);
                left -= ro.dims[a];
            }
        }
        if (trial % 4 == 1)
            ro.pos0[0] = rnd(t, 0, 50);
        int64_t G = ro.grid[0] * ro.grid[1] * ro.grid[2];
        int64_t shape[4] = { rnd(t, 1, 2), G + (trial % 2 ? rnd(t, 0, 5) : 0), rnd(t, 1, 3), D };
        tv x, o;
        tv_in(t, &x, FL_F32, 4, shape, (int)rnd(t, 0, L_COUNT - 1), 1.0);
        tv_out(t, &o, 4, shape, (int)rnd(t, 0, L_COUNT - 1));
        fl_tensor r;
        host_f32(t, &r, 4, shape);
        OK(fl_rope(t->ref, &r, &x.hv, ro, &t->err));
        OK(fl_rope(t->be, &o.dv, &x.dv, ro, &t->err));
        check_out(t, &o, &r, F32_TOL, "rope");
        OK(fl_rope(t->be, &x.dv, &x.dv, ro, &t->err)); /* in place */
        tv_fetch(t, &x);
        assert_true(rel_err(t, &x.hv, &r) <= F32_TOL);
        fl_tensor_release(&r);
        tv_free(&x);
        tv_free(&o);
    }
    close_target(t);
}

/* RoPE's point: after it, q . k depends on the positions only through their difference;
 * shifting both by pos0 leaves every score unchanged, and norms are kept. */
static void test_rope_relative(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    int64_t F = 6, D = 16, shape[4] = { 1, F, 1, D };
    fl_rope_opts a = { { F, 1, 1 }, { D, 0, 0 }, { 0, 0, 0 }, 10000.0 }, b = a;
    b.pos0[0] = 37;
    tv q, k, qa, ka, qb, kb;
    tv_in(t, &q, FL_F32, 4, shape, L_CONTIG, 1.0);
    tv_in(t, &k, FL_F32, 4, shape, L_CONTIG, 1.0);
    tv_out(t, &qa, 4, shape, L_CONTIG);
    tv_out(t, &ka, 4, shape, L_CONTIG);
    tv_out(t, &qb, 4, shape, L_CONTIG);
    tv_out(t, &kb, 4, shape, L_CONTIG);
    OK(fl_rope(t->be, &qa.dv, &q.dv, a, &t->err));
    OK(fl_rope(t->be, &ka.dv, &k.dv, a, &t->err));
    OK(fl_rope(t->be, &qb.dv, &q.dv, b, &t->err));
    OK(fl_rope(t->be, &kb.dv, &k.dv, b, &t->err));
    tv_fetch(t, &qa);
    tv_fetch(t, &ka);
    tv_fetch(t, &qb);
    tv_fetch(t, &kb);
    const float *pq = fl_tensor_data(&q.hb), *pqa = fl_tensor_data(&qa.hb), *pka = fl_tensor_data(&ka.hb);
    const float *pqb = fl_tensor_data(&qb.hb), *pkb = fl_tensor_data(&kb.hb);
    for (int64_t i = 0; i < F; i++) {
        double n0 = 0, n1 = 0;
        for (int64_t d = 0; d < D; d++) {
            n0 += (double)pq[i * D + d] * pq[i * D + d];
            n1 += (double)pqa[i * D + d] * pqa[i * D + d];
        }
        assert_true(fabs(n0 - n1) < 1e-5 * n0);
        for (int64_t j = 0; j < F; j++) {
            double sa = 0, sb = 0;
            for (int64_t d = 0; d < D; d++) {
                sa += (double)pqa[i * D + d] * pka[j * D + d];
                sb += (double)pqb[i * D + d] * pkb[j * D + d];
            }
            if (!(fabs(sa - sb) < 1e-4 * (1.0 + fabs(sa))))
                fail_msg("rope on %s: score (%lld, %lld) %.7g changes to %.7g when both positions shift", t->target,
                         (long long)i, (long long)j, sa, sb);
        }
    }
    tv_free(&q);
    tv_free(&k);
    tv_free(&qa);
    tv_free(&ka);
    tv_free(&qb);
    tv_free(&kb);
    close_target(t);
}

/* ---- properties across ops -------------------------------------------------------------- */

/* A 1x1 convolution is a linear layer over the channels of each pixel. */
static void test_conv1x1_is_linear(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    int64_t N = 2, C = 19, O = 13, H = 5, W = 7;
    int64_t xs[4] = { N, C, H, W }, ws[4] = { O, C, 1, 1 }, os[4] = { N, O, H, W };
    tv x, w, b, o;
    tv_in(t, &x, FL_F32, 4, xs, L_CONTIG, 1.0);
    tv_in(t, &w, FL_BF16, 4, ws, L_CONTIG, 0.3);
    tv_in(t, &b, FL_F32, 1, &O, L_CONTIG, 1.0);
    tv_out(t, &o, 4, os, L_CONTIG);
    OK(fl_conv2d(t->be, &o.dv, &x.dv, &w.dv, &b.dv, fl_conv_opts_make(1, 0), &t->err));
    /* the same through tokens: (N, H W, C) @ w[O, C]^T + b, back to (N, O, H, W) */
    int64_t ts[3] = { N, H * W, C }, to[3] = { N, H * W, O };
    fl_tensor tok, tout, w2 = w.dv, back;
    w2.ndim = 2;
    OK(fl_empty(t->be, &tok, FL_F32, 3, ts, &t->err));
    OK(fl_empty(t->be, &tout, FL_F32, 3, to, &t->err));
    OK(fl_empty(t->be, &back, FL_F32, 4, os, &t->err));
    OK(fl_channels_to_tokens(t->be, &tok, &x.dv, &t->err));
    OK(fl_linear(t->be, &tout, &tok, &w2, &b.dv, &t->err));
    OK(fl_tokens_to_channels(t->be, &back, &tout, &t->err));
    tv_fetch(t, &o);
    fl_tensor hb;
    OK(fl_tensor_empty(&hb, FL_F32, 4, os, NULL, &t->err));
    OK(fl_copy(t->be, &hb, &back, &t->err));
    double e = rel_err(t, &o.hv, &hb);
    if (!(e <= 1e-5))
        fail_msg("conv2d 1x1 and linear differ on %s by %.3g", t->target, e);
    fl_tensor_release(&hb);
    fl_tensor_release(&tok);
    fl_tensor_release(&tout);
    fl_tensor_release(&back);
    tv_free(&x);
    tv_free(&w);
    tv_free(&b);
    tv_free(&o);
    close_target(t);
}

/* ---- layouts ---------------------------------------------------------------------------- */

static void test_layouts(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    int64_t B = 2, F = 3, C = 4, H = 5, W = 6;
    int64_t fs[4] = { B * F, C, H, W }, ts[3] = { B * H * W, F, C };
    tv x;
    tv_in(t, &x, FL_F32, 4, fs, L_STEPPED, 1.0);
    fl_tensor tok, back, htok;
    OK(fl_empty(t->be, &tok, FL_F32, 3, ts, &t->err));
    OK(fl_empty(t->be, &back, FL_F32, 4, fs, &t->err));
    OK(fl_frames_to_tokens(t->be, &tok, &x.dv, F, &t->err));
    OK(fl_tokens_to_frames(t->be, &back, &tok, F, &t->err));
    OK(fl_tensor_empty(&htok, FL_F32, 3, ts, NULL, &t->err));
    OK(fl_copy(t->be, &htok, &tok, &t->err));
    for (int64_t b = 0; b < B; b++)
        for (int64_t f = 0; f < F; f++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t y = 0; y < H; y++)
                    for (int64_t z = 0; z < W; z++) {
                        int64_t xi[4] = { b * F + f, c, y, z }, ti[3] = { (b * H + y) * W + z, f, c };
                        assert_true(fl_tensor_get(&x.hv, xi) == fl_tensor_get(&htok, ti));
                    }
    fl_tensor hback;
    OK(fl_tensor_empty(&hback, FL_F32, 4, fs, NULL, &t->err));
    OK(fl_copy(t->be, &hback, &back, &t->err));
    assert_true(rel_err(t, &hback, &x.hv) == 0.0);
    /* the video view addresses the same elements */
    fl_tensor vid;
    OK(fl_view_frames_as_video(&vid, &x.hv, F, &t->err));
    int64_t vi[5] = { 1, 2, 1, 3, 4 }, xi[4] = { 1 * F + 1, 2, 3, 4 };
    assert_true(fl_tensor_get(&vid, vi) == fl_tensor_get(&x.hv, xi));
    /* concat along each axis, f16 parts into an f32 output (fl_copy converts) */
    for (int axis = 0; axis < 3; axis++) {
        int64_t s1[3] = { 2, 3, 4 }, s2[3] = { 2, 3, 4 }, so[3] = { 2, 3, 4 };
        s2[axis] = 5;
        so[axis] = s1[axis] + s2[axis];
        tv a, b2, o;
        tv_in(t, &a, FL_F32, 3, s1, (int)rnd(t, 0, L_COUNT - 1), 1.0);
        tv_in(t, &b2, FL_F16, 3, s2, (int)rnd(t, 0, L_COUNT - 1), 1.0);
        tv_out(t, &o, 3, so, (int)rnd(t, 0, L_COUNT - 1));
        const fl_tensor *parts[2] = { &a.dv, &b2.dv };
        OK(fl_concat(t->be, &o.dv, parts, 2, axis - 3, &t->err));
        tv_fetch(t, &o);
        int64_t idx[3];
        for (idx[0] = 0; idx[0] < so[0]; idx[0]++)
            for (idx[1] = 0; idx[1] < so[1]; idx[1]++)
                for (idx[2] = 0; idx[2] < so[2]; idx[2]++) {
                    int64_t j[3] = { idx[0], idx[1], idx[2] };
                    bool first = idx[axis] < s1[axis];
                    if (!first)
                        j[axis] -= s1[axis];
                    assert_true(fl_tensor_get(&o.hv, idx) == fl_tensor_get(first ? &a.hv : &b2.hv, j));
                }
        tv_free(&a);
        tv_free(&b2);
        tv_free(&o);
    }
    fl_tensor_release(&vid);
    fl_tensor_release(&hback);
    fl_tensor_release(&htok);
    fl_tensor_release(&tok);
    fl_tensor_release(&back);
    tv_free(&x);
    close_target(t);
}

/* Empty dims: K = 0 leaves the bias, Lk = 0 gives zeros, nothing to do elsewhere. */
static void test_empty_dims(void **state)
{
    T tt, *t = &tt;
    open_target(t, state, __func__);
    int64_t xs[2] = { 3, 0 }, ws[2] = { 4, 0 }, os[2] = { 3, 4 }, four = 4;
    tv x, w, b, o;
    tv_in(t, &x, FL_F32, 2, xs, L_CONTIG, 1.0);
    tv_in(t, &w, FL_BF16, 2, ws, L_CONTIG, 1.0);
    tv_in(t, &b, FL_F32, 1, &four, L_CONTIG, 1.0);
    tv_out(t, &o, 2, os, L_STEPPED);
    fl_tensor r;
    host_f32(t, &r, 2, os);
    OK(fl_linear(t->ref, &r, &x.hv, &w.hv, &b.hv, &t->err));
    OK(fl_linear(t->be, &o.dv, &x.dv, &w.dv, &b.dv, &t->err));
    check_out(t, &o, &r, 0.0, "linear with K = 0");
    fl_tensor_release(&r);
    tv_free(&x);
    tv_free(&w);
    tv_free(&b);
    tv_free(&o);
    int64_t qs[4] = { 1, 2, 3, 4 }, ks[4] = { 1, 2, 0, 4 }, vs[4] = { 1, 2, 0, 5 }, aos[4] = { 1, 2, 3, 5 };
    tv q, k, v;
    tv_in(t, &q, FL_F32, 4, qs, L_CONTIG, 1.0);
    tv_in(t, &k, FL_F32, 4, ks, L_CONTIG, 1.0);
    tv_in(t, &v, FL_F32, 4, vs, L_CONTIG, 1.0);
    tv_out(t, &o, 4, aos, L_PERMUTED);
    host_f32(t, &r, 4, aos);
    OK(fl_attention(t->ref, &r, &q.hv, &k.hv, &v.hv, NULL, 0.0, &t->err));
    OK(fl_attention(t->be, &o.dv, &q.dv, &k.dv, &v.dv, NULL, 0.0, &t->err));
    check_out(t, &o, &r, 0.0, "attention with no keys");
    fl_tensor_release(&r);
    tv_free(&q);
    tv_free(&k);
    tv_free(&v);
    tv_free(&o);
    int64_t cx[4] = { 0, 3, 4, 4 }, cw[4] = { 2, 3, 3, 3 }, co[4] = { 0, 2, 4, 4 }, gx[3] = { 2, 4, 0 };
    tv cxv, cwv, cov, g;
    tv_in(t, &cxv, FL_F32, 4, cx, L_CONTIG, 1.0);
    tv_in(t, &cwv, FL_F16, 4, cw, L_CONTIG, 1.0);
    tv_out(t, &cov, 4, co, L_CONTIG);
    tv_out(t, &g, 3, gx, L_CONTIG);
    OK(fl_conv2d(t->be, &cov.dv, &cxv.dv, &cwv.dv, NULL, fl_conv_opts_make(1, 1), &t->err));
    OK(fl_group_norm(t->be, &g.dv, &g.dv, 2, NULL, NULL, 1e-5, 1, &t->err));
    tv_free(&cxv);
    tv_free(&cwv);
    tv_free(&cov);
    tv_free(&g);
    close_target(t);
}

/* ---- errors and allocation failures (CPU) ----------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    fl_error err;
    fl_backend *be;
    assert_int_equal(fl_backend_new(&be, "cpu", 0, NULL, &err), FL_OK);
    int64_t xs[2] = { 4, 8 }, ws[2] = { 5, 8 }, wbad[2] = { 5, 7 }, os[2] = { 4, 5 };
    fl_tensor x, w, wb, o, w64, x16;
    assert_int_equal(fl_tensor_zeros(&x, FL_F32, 2, xs, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&w, FL_F32, 2, ws, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&wb, FL_F32, 2, wbad, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&o, FL_F32, 2, os, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&w64, FL_F64, 2, ws, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&x16, FL_F16, 2, xs, NULL, &err), FL_OK);
    assert_int_equal(fl_linear(be, &o, &x, &wb, NULL, &err), FL_E_SHAPE);
    assert_non_null(strstr(fl_error_msg(&err), "linear"));
    assert_int_equal(fl_linear(be, &o, &x, &w64, NULL, &err), FL_E_DTYPE);
    assert_non_null(strstr(fl_error_msg(&err), "w has dtype f64"));
    assert_int_equal(fl_linear(be, &o, &x16, &w, NULL, &err), FL_E_DTYPE);
    assert_int_equal(fl_linear(be, &o, &x, &w, &x, &err), FL_E_SHAPE); /* bias [4, 8] */
    assert_non_null(strstr(fl_error_msg(&err), "bias"));
    assert_int_equal(fl_layer_norm(be, &x, &x, &w, NULL, 1e-5, &err), FL_E_SHAPE); /* gamma [5, 8] */
    /* broadcast (stride-0) views are fine as inputs (test_linear and others draw them), but
     * never as an output */
    fl_tensor orow, obc;
    int64_t orow_s[2] = { 1, 5 };
    assert_int_equal(fl_tensor_zeros(&orow, FL_F32, 2, orow_s, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_expand(&obc, &orow, 2, os, &err), FL_OK);
    assert_int_equal(fl_linear(be, &obc, &x, &w, NULL, &err), FL_E_INVALID);
    assert_non_null(strstr(fl_error_msg(&err), "stride 0"));
    fl_tensor_release(&obc);
    fl_tensor_release(&orow);
    int64_t gs[3] = { 2, 6, 3 };
    fl_tensor g;
    assert_int_equal(fl_tensor_zeros(&g, FL_F32, 3, gs, NULL, &err), FL_OK);
    assert_int_equal(fl_group_norm(be, &g, &g, 4, NULL, NULL, 1e-5, 0, &err), FL_E_INVALID);
    assert_non_null(strstr(fl_error_msg(&err), "4 groups"));
    assert_int_equal(fl_group_norm(be, &g, &g, 3, NULL, NULL, -1.0, 0, &err), FL_E_INVALID);
    /* an output overlapping an input that is not its identical view */
    fl_tensor part;
    assert_int_equal(fl_tensor_narrow(&part, &x, 1, 0, 5, &err), FL_OK);
    assert_int_equal(fl_linear(be, &part, &x, &w, NULL, &err), FL_E_INVALID);
    assert_non_null(strstr(fl_error_msg(&err), "overlaps"));
    /* conv geometry */
    int64_t cx[4] = { 1, 2, 3, 3 }, cw[4] = { 2, 2, 5, 5 }, co[4] = { 1, 2, 1, 1 };
    fl_tensor tx, tw, to;
    assert_int_equal(fl_tensor_zeros(&tx, FL_F32, 4, cx, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&tw, FL_F32, 4, cw, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&to, FL_F32, 4, co, NULL, &err), FL_OK);
    assert_int_equal(fl_conv2d(be, &to, &tx, &tw, NULL, fl_conv_opts_make(1, 0), &err), FL_E_SHAPE);
    assert_non_null(strstr(fl_error_msg(&err), "kernel"));
    assert_int_equal(fl_conv2d(be, &to, &tx, &tw, NULL, fl_conv_opts_make(0, 1), &err), FL_E_INVALID);
    assert_int_equal(fl_conv2d(be, &to, &tx, &tw, NULL, fl_conv_opts_make(3, 1), &err), FL_OK);
    /* attention: mismatched head dims, a mask that does not broadcast */
    int64_t qa[4] = { 1, 2, 3, 4 }, kb[4] = { 1, 2, 5, 6 }, mbad[2] = { 4, 5 };
    fl_tensor q, k, m;
    assert_int_equal(fl_tensor_zeros(&q, FL_F32, 4, qa, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&k, FL_F32, 4, kb, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&m, FL_U8, 2, mbad, NULL, &err), FL_OK);
    assert_int_equal(fl_attention(be, &q, &q, &k, &k, NULL, 0.0, &err), FL_E_SHAPE);
    assert_int_equal(fl_attention(be, &q, &q, &q, &q, &m, 0.0, &err), FL_E_SHAPE);
    assert_non_null(strstr(fl_error_msg(&err), "mask"));
    /* timestep embedding with a shift that zeroes the denominator, RoPE beyond the tokens */
    int64_t one = 1, od[2] = { 1, 2 };
    fl_tensor tt1, te;
    assert_int_equal(fl_tensor_zeros(&tt1, FL_F32, 1, &one, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&te, FL_F32, 2, od, NULL, &err), FL_OK);
    fl_temb_opts bad = { 10000.0, 1.0, 1.0, 1 };
    assert_int_equal(fl_timestep_embedding(be, &te, &tt1, bad, &err), FL_E_INVALID);
    fl_rope_opts ro = { { 2, 2, 2 }, { 2, 0, 0 }, { 0, 0, 0 }, 10000.0 };
    assert_int_equal(fl_rope(be, &q, &q, ro, &err), FL_E_SHAPE);
    ro.dims[0] = 3;
    assert_int_equal(fl_rope(be, &q, &q, ro, &err), FL_E_INVALID);
    /* concat sizes that do not add up */
    const fl_tensor *parts[2] = { &x, &x };
    assert_int_equal(fl_concat(be, &o, parts, 2, 0, &err), FL_E_SHAPE);
    fl_tensor_release(&part);
    fl_tensor_release(&tx);
    fl_tensor_release(&tw);
    fl_tensor_release(&to);
    fl_tensor_release(&q);
    fl_tensor_release(&k);
    fl_tensor_release(&m);
    fl_tensor_release(&tt1);
    fl_tensor_release(&te);
    fl_tensor_release(&g);
    fl_tensor_release(&x);
    fl_tensor_release(&w);
    fl_tensor_release(&wb);
    fl_tensor_release(&o);
    fl_tensor_release(&w64);
    fl_tensor_release(&x16);
    fl_backend_free(be);
}

/* Every host allocation of the CPU ops' staging and scratch may fail: the op then says
 * FL_E_NOMEM and leaves nothing allocated; with enough memory it succeeds. */
static void test_alloc_failures(void **state)
{
    (void)state;
    fl_error err;
    int64_t ws[2] = { 7, 12 }, os[3] = { 2, 9, 7 }, four = 4, six = 6;
    int64_t cw[4] = { 4, 3, 3, 3 }, co[4] = { 2, 4, 6, 5 }, c1w[3] = { 4, 3, 3 }, c1o[3] = { 2, 4, 5 };
    int64_t qs[4] = { 1, 2, 100, 8 }, gs[3] = { 3, 6, 5 }, rs[4] = { 1, 6, 2, 6 };
    fl_tensor x, xt, w16, b16, b4, g6, o, cxt, cxv, cwv, cov, c1xt, c1xv, c1wv, c1ov, q, qo, g, rx, ro;
    /* non-contiguous inputs and half weights, so the staging paths run */
    assert_int_equal(fl_tensor_zeros(&x, FL_F32, 3, (int64_t[3]){ 2, 12, 9 }, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_transpose(&xt, &x, 1, 2, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&w16, FL_F16, 2, ws, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&b16, FL_BF16, 1, &ws[0], NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&b4, FL_BF16, 1, &four, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&g6, FL_F16, 1, &six, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&o, FL_F32, 3, os, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&cxt, FL_F32, 4, (int64_t[4]){ 2, 6, 5, 3 }, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_permute(&cxv, &cxt, (int[4]){ 0, 3, 1, 2 }, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&cwv, FL_BF16, 4, cw, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&cov, FL_F32, 4, co, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&c1xt, FL_F32, 3, (int64_t[3]){ 2, 9, 3 }, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_transpose(&c1xv, &c1xt, 1, 2, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&c1wv, FL_F16, 3, c1w, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&c1ov, FL_F32, 3, c1o, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&q, FL_F32, 4, qs, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&qo, FL_F32, 4, qs, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&g, FL_F32, 3, gs, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&rx, FL_F32, 4, rs, NULL, &err), FL_OK);
    assert_int_equal(fl_tensor_zeros(&ro, FL_F32, 4, rs, NULL, &err), FL_OK);
    fl_rope_opts rop = { { 3, 2, 1 }, { 2, 2, 2 }, { 0, 0, 0 }, 10000.0 };
    static const char *const backends[2] = { "cpu-ref", "cpu" };
    for (int bi = 0; bi < 2; bi++)
        for (int op = 0; op < 6; op++) {
            bool done = false;
            for (long fail_after = 0; fail_after < 64 && !done; fail_after++) {
                fl_faultalloc fa;
                fl_faultalloc_init(&fa, NULL, fail_after);
                fl_backend *be;
                if (fl_backend_new(&be, backends[bi], 0, &fa.iface, &err) != FL_OK) {
                    assert_int_equal(err.code, FL_E_NOMEM);
                    continue;
                }
                size_t live = fa.live_blocks;
                fl_status st;
                switch (op) {
                case 0: st = fl_linear(be, &o, &xt, &w16, &b16, &err); break;
                case 1: st = fl_conv2d(be, &cov, &cxv, &cwv, &b4, fl_conv_opts_make(1, 1), &err); break;
                case 2: st = fl_conv1d(be, &c1ov, &c1xv, &c1wv, NULL, fl_conv_opts_make(2, 1), &err); break;
                case 3: st = fl_attention(be, &qo, &q, &q, &q, NULL, 0.0, &err); break;
                case 4: st = fl_group_norm(be, &g, &g, 2, &g6, NULL, 1e-5, 1, &err); break;
                default: st = fl_rope(be, &ro, &rx, rop, &err); break;
                }
                if (st != FL_OK && st != FL_E_NOMEM)
                    fail_msg("op %d on %s: %s", op, backends[bi], fl_error_msg(&err));
                assert_int_equal(fa.live_blocks, live);
                done = st == FL_OK;
                fl_backend_free(be);
                assert_int_equal(fa.live_blocks, 0);
            }
            assert_true(done);
        }
    fl_tensor *all[] = { &x, &xt, &w16, &b16, &b4, &g6, &o, &cxt, &cxv, &cwv, &cov, &c1xt, &c1xv,
                         &c1wv, &c1ov, &q, &qo, &g, &rx, &ro };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        fl_tensor_release(all[i]);
}

/* ---- main ------------------------------------------------------------------------------- */

#define ON(fn, tgt) { #fn " [" tgt "]", fn, NULL, NULL, (void *)tgt }
#define BOTH(fn) ON(fn, "cpu"), ON(fn, "cuda")

int main(void)
{
    g_seed = pick_seed();
    printf("test_nn: seed %llu (replay with FL_TEST_SEED=%llu)\n", (unsigned long long)g_seed,
           (unsigned long long)g_seed);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        BOTH(test_linear),
        BOTH(test_conv2d),
        BOTH(test_conv1d),
        BOTH(test_conv_temporal),
        BOTH(test_group_norm),
        BOTH(test_group_norm_moments),
        BOTH(test_layer_rms_norm),
        BOTH(test_activation),
        BOTH(test_modulate_gate),
        BOTH(test_upsample),
        BOTH(test_attention),
        BOTH(test_attention_mask_property),
        BOTH(test_timestep_embedding),
        BOTH(test_rope),
        BOTH(test_rope_relative),
        BOTH(test_conv1x1_is_linear),
        BOTH(test_layouts),
        BOTH(test_empty_dims),
        cmocka_unit_test(test_attention_memory),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests_name("nn", tests, NULL, NULL);
}
