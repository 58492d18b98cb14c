/* cmocka suite for the CUDA backend: every op against the "cpu" backend on random shapes
 * and views, exact f16/bf16 conversions, error paths. GPU tests skip without a GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../ops/ops.h"

#ifdef FL_HAVE_CUDA
#include "../ops/cuda/cuda_backend.h"
#include "../ops/cuda/cuda_internal.h"
#endif

/* ---- plumbing -------------------------------------------------------------------------- */

#ifdef __SANITIZE_ADDRESS__
/* Under `make asan` on a GPU machine: the CUDA driver and libraries keep allocations until
 * the process exits. They are not ours, so LeakSanitizer is told to ignore them. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcuda.so\nleak:libcudart.so\nleak:libcublas\nleak:libnvidia\n";
}
#endif

/* A small independent generator for shapes, views and values. Each test has its own seed
 * (mixed with $FL_TEST_SEED when set), so each draws fresh inputs and any failure can be
 * replayed. */
static uint64_t rng_seed(uint64_t test_id)
{
    /* FL_TEST_SEED=N mixes N in; =random draws N once from /dev/urandom and prints it, so a
     * failure can be replayed with FL_TEST_SEED=N */
    static uint64_t mixed;
    static int read_env;
    if (!read_env) {
        read_env = 1;
        const char *env = getenv("FL_TEST_SEED");
        if (env && !strcmp(env, "random")) {
            FILE *u = fopen("/dev/urandom", "rb");
            if (!u || fread(&mixed, sizeof mixed, 1, u) != 1)
                mixed = (uint64_t)time(NULL);
            if (u)
                fclose(u);
            printf("test_cuda: FL_TEST_SEED=%llu\n", (unsigned long long)mixed);
        } else if (env) {
            char *end;
            mixed = strtoull(env, &end, 0);
            if (*end || end == env) {
                fprintf(stderr, "test_cuda: FL_TEST_SEED must be a number or 'random', got '%s'\n", env);
                exit(2);
            }
        }
    }
    uint64_t s = test_id * UINT64_C(0x9E3779B97F4A7C15) + UINT64_C(0x1234567);
    s ^= mixed * UINT64_C(0xBF58476D1CE4E5B9);
    return s ? s : 1;
}

static uint64_t rnext(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(0x2545F4914F6CDD1D);
}

static int64_t rint_in(uint64_t *s, int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)(rnext(s) % (uint64_t)(hi - lo + 1));
}

static double runif(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rnext(s) >> 11) * 0x1p-53;
}

typedef struct ctx {
    fl_backend *gpu, *cpu;
    uint64_t rng;
} ctx;

/* The GPU backend, or skip() (which does not return) when this build or machine has none. */
static void open_or_skip(ctx *c, uint64_t test_id)
{
    memset(c, 0, sizeof *c);
    c->rng = rng_seed(test_id);
#ifndef FL_HAVE_CUDA
    print_message("built without CUDA\n");
    skip();
#else
    fl_error err;
    fl_status st = fl_backend_new(&c->gpu, "cuda", 0, NULL, &err);
    if (st == FL_E_DEVICE || st == FL_E_UNSUPPORTED) {
        print_message("no usable GPU: %s\n", fl_error_msg(&err));
        skip();
    }
    assert_int_equal(st, FL_OK);
    assert_int_equal(fl_backend_new(&c->cpu, "cpu", 0, NULL, &err), FL_OK);
#endif
}

static void close_ctx(ctx *c)
{
    fl_backend_free(c->gpu);
    fl_backend_free(c->cpu);
}

#define OK(call)                                                                                 \
    do {                                                                                         \
        fl_error e_;                                                                             \
        fl_status s_ = (call);                                                                   \
        if (s_ != FL_OK)                                                                         \
            fail_msg("%s -> %s", #call, fl_error_msg(&e_));                                      \
    } while (0)
#define ERR (&e_)

static bool is_nan_elem(fl_dtype dt, const void *base, size_t i)
{
    if (fl_dtype_is_complex(dt)) {
        fl_dtype r = fl_dtype_real_of(dt);
        return isnan(fl_dtype_load(r, base, 2 * i)) || isnan(fl_dtype_load(r, base, 2 * i + 1));
    }
    return fl_dtype_is_float(dt) && isnan(fl_dtype_load(dt, base, i));
}

/* Writes v (complex: v + v i) into element i; NaN poisons every component. */
static void store_elem(fl_dtype dt, void *base, size_t i, double v)
{
    if (fl_dtype_is_complex(dt)) {
        fl_dtype r = fl_dtype_real_of(dt);
        fl_dtype_store(r, base, 2 * i, v);
        fl_dtype_store(r, base, 2 * i + 1, isnan(v) ? v : -0.5 * v);
    } else {
        fl_dtype_store(dt, base, i, v);
    }
}

/* A value for random test data: uniform in [lo, hi], with a share `special` of values
 * that stress conversions (signed zeros, infinities, NaN, f16 limits, ties, tiny). */
static double rand_value(uint64_t *r, double lo, double hi, double special)
{
    static const double specials[] = { 0.0, -0.0, INFINITY, -INFINITY, NAN, 65504.0, 65520.0,
                                       -65536.0, 6.103515625e-05, 5.960464477539063e-08,
                                       2.980232238769531e-08, 1.0009765625 + 0x1p-11, 1e-40,
                                       3.4e38, 1e39, -1e300, 1.00390625 };
    if (special > 0 && runif(r, 0, 1) < special)
        return specials[rnext(r) % (sizeof specials / sizeof specials[0])];
    return runif(r, lo, hi);
}

/* ---- tensors on both sides ------------------------------------------------------------ */

/* The same values held on the host (h) and on the GPU (d). */
typedef struct pair {
    fl_tensor h, d;
} pair;

enum { FILL_RANDOM, FILL_POISON };

static void pair_new(ctx *c, pair *p, fl_dtype dt, int nd, const int64_t *shape, int mode, double lo,
                     double hi, double special)
{
    p->h = p->d = FL_TENSOR_NULL;
    OK(fl_empty(c->cpu, &p->h, dt, nd, shape, ERR));
    OK(fl_empty(c->gpu, &p->d, dt, nd, shape, ERR));
    size_t n = (size_t)fl_tensor_numel(&p->h);
    void *data = fl_tensor_data(&p->h);
    for (size_t i = 0; i < n; i++) {
        if (!fl_dtype_is_float(dt) && !fl_dtype_is_complex(dt))
            fl_dtype_store(dt, data, i, mode == FILL_POISON ? 90.0 : (double)rint_in(&c->rng, 0, 100));
        else
            store_elem(dt, data, i, mode == FILL_POISON ? NAN : rand_value(&c->rng, lo, hi, special));
    }
    OK(fl_copy(c->gpu, &p->d, &p->h, ERR)); /* contiguous upload: a bit copy */
}

static void pair_free(pair *p)
{
    fl_tensor_release(&p->h);
    fl_tensor_release(&p->d);
}

/* A host copy of device tensor d (a bit copy: same dtype, contiguous). */
static void fetch(ctx *c, fl_tensor *out, const fl_tensor *d)
{
    *out = FL_TENSOR_NULL;
    OK(fl_empty(c->cpu, out, d->dtype, d->ndim, d->shape, ERR));
    OK(fl_copy(c->gpu, out, d, ERR));
}

/* Bitwise equality of two contiguous host tensors, except that NaNs only need to agree in
 * being NaN (CUDA and the CPU may pick different payloads for f64 -> f32 narrowing). */
static void assert_same_bits(const fl_tensor *got, const fl_tensor *want, const char *what)
{
    assert_int_equal(got->dtype, want->dtype);
    size_t n = (size_t)fl_tensor_numel(want), es = fl_dtype_size(want->dtype);
    const char *g = fl_tensor_data(got), *w = fl_tensor_data(want);
    for (size_t i = 0; i < n; i++) {
        bool gn = is_nan_elem(got->dtype, g, i), wn = is_nan_elem(want->dtype, w, i);
        if (gn != wn || (!gn && memcmp(g + i * es, w + i * es, es) != 0))
            fail_msg("%s: element %zu of %zu differs: gpu %.17g, cpu %.17g (%s)", what, i, n,
                     fl_dtype_load(got->dtype, g, fl_dtype_is_complex(got->dtype) ? 2 * i : i),
                     fl_dtype_load(want->dtype, w, fl_dtype_is_complex(want->dtype) ? 2 * i : i),
                     fl_dtype_name(want->dtype));
    }
}

/* ||got - want|| / ||want|| over two contiguous host tensors of one real dtype; every NaN
 * must sit at the same place in both (poisoned, unwritten elements stay NaN on both). */
static double rel_err(const fl_tensor *got, const fl_tensor *want, const char *what)
{
    size_t n = (size_t)fl_tensor_numel(want);
    const void *g = fl_tensor_data(got), *w = fl_tensor_data(want);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fl_dtype_load(got->dtype, g, i), y = fl_dtype_load(want->dtype, w, i);
        if (isnan(x) || isnan(y)) {
            if (!(isnan(x) && isnan(y)))
                fail_msg("%s: element %zu: gpu %.17g, cpu %.17g (one is NaN)", what, i, x, y);
            continue;
        }
        if (isinf(x) || isinf(y)) {
            if (x != y)
                fail_msg("%s: element %zu: gpu %.17g, cpu %.17g", what, i, x, y);
            continue;
        }
        num += (x - y) * (x - y);
        den += y * y;
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Compares the GPU's device tensor d (fetched) with the CPU's host tensor h. */
static double rel_err_dev(ctx *c, const fl_tensor *d, const fl_tensor *h, const char *what)
{
    fl_tensor got;
    fetch(c, &got, d);
    double e = rel_err(&got, h, what);
    fl_tensor_release(&got);
    return e;
}

/* ---- random views --------------------------------------------------------------------- */

#define V_PERM 1u
#define V_STEP 2u
#define V_BCAST 4u
#define V_SWAP_LAST 8u

/* How to cut a view of a given shape out of a larger base: slice each base dim (start,
 * step), permute, and expand the dims marked broadcast from size 1. */
typedef struct vspec {
    int ndim;
    int64_t shape[FL_MAX_DIMS]; /* the view */
    int64_t base[FL_MAX_DIMS];  /* the base tensor to cut it from */
    int perm[FL_MAX_DIMS];      /* view dim i = base dim perm[i] */
    int64_t start[FL_MAX_DIMS], step[FL_MAX_DIMS], len[FL_MAX_DIMS]; /* per base dim */
    bool bcast;
} vspec;

static void vspec_rand(uint64_t *r, vspec *s, int nd, const int64_t *shape, unsigned flags)
{
    memset(s, 0, sizeof *s);
    s->ndim = nd;
    for (int i = 0; i < nd; i++) {
        s->shape[i] = shape[i];
        s->perm[i] = i;
    }
    if (flags & V_PERM) {
        for (int i = nd - 1; i > 0; i--) {
            int j = (int)rint_in(r, 0, i), t = s->perm[i];
            s->perm[i] = s->perm[j];
            s->perm[j] = t;
        }
    } else if ((flags & V_SWAP_LAST) && nd >= 2 && rnext(r) % 2) {
        s->perm[nd - 2] = nd - 1;
        s->perm[nd - 1] = nd - 2;
    }
    for (int i = 0; i < nd; i++) {
        int p = s->perm[i];
        bool bc = (flags & V_BCAST) && shape[i] > 1 && rnext(r) % 4 == 0;
        s->bcast |= bc;
        s->len[p] = bc ? 1 : shape[i];
        s->step[p] = (flags & V_STEP) && rnext(r) % 3 == 0 ? rint_in(r, 2, 3) : 1;
        s->start[p] = (flags & V_STEP) ? rint_in(r, 0, 1) : 0;
        s->base[p] = s->start[p] + (s->len[p] > 0 ? (s->len[p] - 1) * s->step[p] + 1 : 0) +
                     ((flags & V_STEP) ? rint_in(r, 0, 1) : 0);
    }
}

static void vspec_apply(const vspec *s, const fl_tensor *base, fl_tensor *view)
{
    fl_tensor v = FL_TENSOR_NULL;
    fl_tensor_retain(&v, base);
    for (int p = 0; p < s->ndim; p++)
        OK(fl_tensor_slice(&v, &v, p, s->start[p], s->start[p] + (s->len[p] - 1) * s->step[p] + 1,
                           s->step[p], ERR));
    OK(fl_tensor_permute(&v, &v, s->perm, ERR));
    if (s->bcast)
        OK(fl_tensor_expand(&v, &v, s->ndim, s->shape, ERR));
    *view = v;
}

/* Base tensors on both sides and the same view of each. */
typedef struct vpair {
    pair base;
    fl_tensor h, d;
} vpair;

static void vpair_new(ctx *c, vpair *v, fl_dtype dt, int nd, const int64_t *shape, unsigned flags,
                      int mode, double lo, double hi, double special)
{
    vspec s;
    vspec_rand(&c->rng, &s, nd, shape, flags);
    pair_new(c, &v->base, dt, nd, s.base, mode, lo, hi, special);
    vspec_apply(&s, &v->base.h, &v->h);
    vspec_apply(&s, &v->base.d, &v->d);
}

static void vpair_free(vpair *v)
{
    fl_tensor_release(&v->h);
    fl_tensor_release(&v->d);
    pair_free(&v->base);
}

static int rand_shape(uint64_t *r, int64_t *shape, int min_nd, int max_nd, int64_t max_dim)
{
    int nd = (int)rint_in(r, min_nd, max_nd);
    for (int i = 0; i < nd; i++)
        shape[i] = rint_in(r, 1, max_dim);
    return nd;
}

/* ---- tests that need no GPU ----------------------------------------------------------- */

static void test_backend_open_and_device_errors(void **state)
{
    (void)state;
    fl_backend *be = NULL;
    fl_error err;
#ifndef FL_HAVE_CUDA
    assert_int_equal(fl_backend_new(&be, "cuda", 0, NULL, &err), FL_E_UNSUPPORTED);
    assert_null(be);
    skip();
#else
    int count = fl_cuda_device_count();
    assert_true(count >= 0);
    assert_int_equal(fl_backend_new(&be, "cuda", 999, NULL, &err), FL_E_DEVICE);
    assert_null(be);
    assert_non_null(strstr(fl_error_msg(&err), "999"));
    assert_int_equal(fl_backend_new(&be, "cuda", -1, NULL, &err), FL_E_DEVICE);
    assert_non_null(strstr(fl_error_msg(&err), "-1"));
    /* nothing is held after a failed open */
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    assert_int_equal(fl_backend_new(&be, "cuda", count, &fa.iface, &err), FL_E_DEVICE);
    assert_int_equal(fa.live_blocks, 0);
    fl_status st = fl_backend_new(&be, "cuda", 0, &fa.iface, &err);
    if (count == 0) {
        assert_int_equal(st, FL_E_DEVICE);
        assert_int_equal(fa.live_blocks, 0);
        print_message("no usable GPU: %s\n", fl_error_msg(&err));
        return;
    }
    assert_int_equal(st, FL_OK);
    assert_string_equal(fl_backend_name(be), "cuda");
    assert_int_equal(be->device.kind, FL_DEVICE_CUDA);
    assert_int_equal(be->device.index, 0);
    fl_backend_free(be);
    assert_int_equal(fa.live_blocks, 0);
    /* out of host memory while opening */
    for (long k = 0; k < 3; k++) {
        fl_faultalloc_init(&fa, NULL, k);
        st = fl_backend_new(&be, "cuda", 0, &fa.iface, &err);
        if (st == FL_OK)
            fl_backend_free(be);
        else
            assert_int_equal(st, FL_E_NOMEM);
        assert_int_equal(fa.live_blocks, 0);
    }
#endif
}

/* Source values that exercise every conversion: all 2^16 patterns of a 16-bit type; f32
 * with every high half and low halves at the f16/bf16 rounding boundaries; f64 specials,
 * values around the f16 range and random bits. */
static void conversion_sources(fl_backend *cpu, uint64_t *r, fl_dtype st, fl_tensor *out)
{
    static const uint16_t lows[] = { 0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000,
                                     0x3000, 0x5000, 0x7fff, 0x8000, 0x8001, 0xffff };
    int64_t n = st == FL_F16 || st == FL_BF16 ? 65536
                : st == FL_F32               ? 65536 * (int64_t)(sizeof lows / sizeof lows[0]) + 200000
                                             : 300000;
    *out = FL_TENSOR_NULL;
    OK(fl_empty(cpu, out, st, 1, &n, ERR));
    void *d = fl_tensor_data(out);
    for (int64_t i = 0; i < n; i++) {
        if (st == FL_F16 || st == FL_BF16) {
            ((uint16_t *)d)[i] = (uint16_t)i;
        } else if (st == FL_F32) {
            uint32_t u = i < 65536 * (int64_t)(sizeof lows / sizeof lows[0])
                             ? (uint32_t)(i % 65536) << 16 | lows[i / 65536]
                             : (uint32_t)rnext(r);
            memcpy((char *)d + 4 * i, &u, 4);
        } else if (st == FL_F64) {
            double v;
            if (i % 3 == 0) {
                uint64_t u = rnext(r);
                memcpy(&v, &u, 8);
            } else if (i % 3 == 1) {
                v = rand_value(r, -70000, 70000, 0.1);
            } else {
                v = ldexp(runif(r, -2, 2), (int)rint_in(r, -30, 20));
            }
            ((double *)d)[i] = v;
        } else { /* complex: random bits in both components */
            size_t es = fl_dtype_size(st);
            for (size_t b = 0; b < es; b += 4) {
                uint32_t u = (uint32_t)rnext(r);
                memcpy((char *)d + (size_t)i * es + b, &u, 4);
            }
        }
    }
}

#ifdef FL_HAVE_CUDA
/* The reference for a conversion: the CPU backend's copy over contiguous host buffers. */
static void check_host_convert(fl_backend *cpu, fl_dtype dt, fl_dtype st, const fl_tensor *src)
{
    int64_t n = fl_tensor_numel(src);
    fl_tensor want = FL_TENSOR_NULL, got = FL_TENSOR_NULL;
    OK(fl_empty(cpu, &want, dt, 1, &n, ERR));
    OK(fl_empty(cpu, &got, dt, 1, &n, ERR));
    OK(fl_copy(cpu, &want, src, ERR));
    assert_int_equal(fl_cu_host_convert(dt, fl_tensor_data(&got), st, fl_tensor_data(src), (size_t)n),
                     FL_CU_OK);
    char what[64];
    snprintf(what, sizeof what, "host build of the copy kernel, %s -> %s", fl_dtype_name(st),
             fl_dtype_name(dt));
    assert_same_bits(&got, &want, what);
    fl_tensor_release(&want);
    fl_tensor_release(&got);
}

static void test_conversions_host_build(void **state)
{
    (void)state;
    fl_backend *cpu;
    fl_error err;
    uint64_t r = rng_seed(2);
    assert_int_equal(fl_backend_new(&cpu, "cpu", 0, NULL, &err), FL_OK);
    static const fl_dtype floats[] = { FL_F32, FL_F64, FL_F16, FL_BF16 };
    for (int s = 0; s < 4; s++) {
        fl_tensor src;
        conversion_sources(cpu, &r, floats[s], &src);
        for (int d = 0; d < 4; d++)
            check_host_convert(cpu, floats[d], floats[s], &src);
        fl_tensor_release(&src);
    }
    static const fl_dtype complexes[] = { FL_C64, FL_C128 };
    for (int s = 0; s < 2; s++) {
        fl_tensor src;
        conversion_sources(cpu, &r, complexes[s], &src);
        for (int d = 0; d < 2; d++)
            check_host_convert(cpu, complexes[d], complexes[s], &src);
        fl_tensor_release(&src);
    }
    /* pairs the copy kernel must refuse */
    float f = 1;
    int32_t i32;
    assert_int_equal(fl_cu_host_convert(FL_I32, &i32, FL_F32, &f, 1), FL_CU_E_DEVICE);
    assert_int_equal(fl_cu_host_convert(FL_C64, &i32, FL_F32, &f, 1), FL_CU_E_DEVICE);
    fl_backend_free(cpu);
}
#else
static void test_conversions_host_build(void **state)
{
    (void)state;
    skip();
}
#endif

/* ---- GPU tests -------------------------------------------------------------------------- */

static void test_storage_and_lifetimes(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 3);
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_backend *g1, *g2;
    fl_error err;
    assert_int_equal(fl_backend_new(&g1, "cuda", 0, &fa.iface, &err), FL_OK);
    assert_int_equal(fl_backend_new(&g2, "cuda", 0, &fa.iface, &err), FL_OK);
    int64_t shape[3] = { 3, 4, 5 }, empty[2] = { 0, 7 };
    fl_tensor t = FL_TENSOR_NULL, e = FL_TENSOR_NULL, h = FL_TENSOR_NULL, back = FL_TENSOR_NULL;
    assert_int_equal(fl_empty(g1, &t, FL_F32, 3, shape, &err), FL_OK);
    assert_int_equal(fl_tensor_device(&t).kind, FL_DEVICE_CUDA);
    assert_int_equal(fl_tensor_device(&t).index, 0);
    assert_non_null(fl_tensor_data(&t));
    assert_int_equal(fl_empty(g1, &e, FL_F64, 2, empty, &err), FL_OK);
    assert_int_equal(fl_fill(g1, &e, 1.0, &err), FL_OK); /* empty: nothing to do */
    /* a tensor made by one backend, filled by another on the same GPU */
    assert_int_equal(fl_fill(g2, &t, 2.5, &err), FL_OK);
    OK(fl_empty(c.cpu, &h, FL_F32, 3, shape, ERR));
    assert_int_equal(fl_copy(g2, &h, &t, &err), FL_OK);
    for (int64_t i = 0; i < 60; i++)
        assert_true(((float *)fl_tensor_data(&h))[i] == 2.5f);
    /* storages outlive the backend that made them */
    fl_backend_free(g1);
    fl_tensor_retain(&back, &t);
    fl_tensor_release(&t);
    assert_int_equal(fl_fill(g2, &back, -1.0, &err), FL_OK);
    fl_tensor_release(&back);
    fl_tensor_release(&e);
    fl_backend_free(g2);
    assert_int_equal(fa.live_blocks, 0);
    fl_tensor_release(&h);
    close_ctx(&c);
}

static void test_copy_views(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 4);
    static const fl_dtype pairs[][2] = {
        { FL_F32, FL_F32 },  { FL_F32, FL_F64 },  { FL_F32, FL_F16 },   { FL_F32, FL_BF16 },
        { FL_F64, FL_F32 },  { FL_F64, FL_F64 },  { FL_F64, FL_F16 },   { FL_F64, FL_BF16 },
        { FL_F16, FL_F32 },  { FL_F16, FL_F64 },  { FL_F16, FL_F16 },   { FL_F16, FL_BF16 },
        { FL_BF16, FL_F32 }, { FL_BF16, FL_F64 }, { FL_BF16, FL_F16 },  { FL_BF16, FL_BF16 },
        { FL_C64, FL_C64 },  { FL_C64, FL_C128 }, { FL_C128, FL_C64 },  { FL_C128, FL_C128 },
        { FL_I32, FL_I32 },  { FL_I64, FL_I64 },  { FL_U8, FL_U8 },
    };
    const int npairs = (int)(sizeof pairs / sizeof pairs[0]);
    for (int iter = 0; iter < 6 * npairs; iter++) {
        fl_dtype dt = pairs[iter % npairs][0], st = pairs[iter % npairs][1];
        int where = (iter / npairs) % 4; /* 0: host->dev, 1: dev->host, 2: dev->dev, 3: host->host */
        bool sdev = where == 1 || where == 2, ddev = where == 0 || where == 2;
        int64_t shape[FL_MAX_DIMS];
        int nd = rand_shape(&c.rng, shape, 0, 5, 6);
        if (iter % 17 == 0) { /* one long dim: dense fast paths and many blocks */
            nd = 1;
            shape[0] = rint_in(&c.rng, 1000, 300000);
        }
        unsigned sflags = (unsigned)rint_in(&c.rng, 0, 15), dflags = (unsigned)rint_in(&c.rng, 0, 11) & ~V_BCAST;
        vpair src, dst;
        vpair_new(&c, &src, st, nd, shape, sflags, FILL_RANDOM, -70000, 70000, 0.05);
        vpair_new(&c, &dst, dt, nd, shape, dflags, FILL_POISON, 0, 0, 0);
        fl_tensor gdst_base = FL_TENSOR_NULL, gdst = FL_TENSOR_NULL; /* the GPU path's host dst */
        if (!ddev) {
            OK(fl_empty(c.cpu, &gdst_base, dt, dst.base.h.ndim, dst.base.h.shape, ERR));
            memcpy(fl_tensor_data(&gdst_base), fl_tensor_data(&dst.base.h), fl_tensor_nbytes(&gdst_base));
            gdst = dst.h;
            gdst.storage = gdst_base.storage;
        }
        OK(fl_copy(c.cpu, &dst.h, &src.h, ERR));
        OK(fl_copy(c.gpu, ddev ? &dst.d : &gdst, sdev ? &src.d : &src.h, ERR));
        char what[96];
        snprintf(what, sizeof what, "copy %s -> %s (%s), iter %d", fl_dtype_name(st), fl_dtype_name(dt),
                 (const char *[]){ "host->dev", "dev->host", "dev->dev", "host->host" }[where], iter);
        if (ddev) {
            fl_tensor got;
            fetch(&c, &got, &dst.base.d);
            assert_same_bits(&got, &dst.base.h, what);
            fl_tensor_release(&got);
        } else {
            assert_same_bits(&gdst_base, &dst.base.h, what);
            fl_tensor_release(&gdst_base);
        }
        vpair_free(&src);
        vpair_free(&dst);
    }
    close_ctx(&c);
}

/* All 2^16 f16 and bf16 patterns widened on the device, f32 and f64 narrowed on the
 * device: bit-equal to the CPU (NaN: NaN-ness only). */
static void test_copy_conversions_exhaustive(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 5);
    static const fl_dtype floats[] = { FL_F32, FL_F64, FL_F16, FL_BF16 };
    for (int s = 0; s < 4; s++) {
        fl_tensor src_h, src_d = FL_TENSOR_NULL;
        conversion_sources(c.cpu, &c.rng, floats[s], &src_h);
        OK(fl_empty(c.gpu, &src_d, floats[s], 1, src_h.shape, ERR));
        OK(fl_copy(c.gpu, &src_d, &src_h, ERR));
        for (int d = 0; d < 4; d++) {
            fl_tensor want = FL_TENSOR_NULL, dst_d = FL_TENSOR_NULL, got;
            OK(fl_empty(c.cpu, &want, floats[d], 1, src_h.shape, ERR));
            OK(fl_empty(c.gpu, &dst_d, floats[d], 1, src_h.shape, ERR));
            OK(fl_copy(c.cpu, &want, &src_h, ERR));
            OK(fl_copy(c.gpu, &dst_d, &src_d, ERR)); /* converts on the device */
            fetch(&c, &got, &dst_d);
            char what[64];
            snprintf(what, sizeof what, "device copy %s -> %s", fl_dtype_name(floats[s]),
                     fl_dtype_name(floats[d]));
            assert_same_bits(&got, &want, what);
            /* and the download path that converts on the way */
            fl_tensor down = FL_TENSOR_NULL;
            OK(fl_empty(c.cpu, &down, floats[d], 1, src_h.shape, ERR));
            OK(fl_copy(c.gpu, &down, &src_d, ERR));
            assert_same_bits(&down, &want, what);
            fl_tensor_release(&down);
            fl_tensor_release(&got);
            fl_tensor_release(&want);
            fl_tensor_release(&dst_d);
        }
        fl_tensor_release(&src_h);
        fl_tensor_release(&src_d);
    }
    close_ctx(&c);
}

static void test_fill(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 6);
    for (int iter = 0; iter < 40; iter++) {
        fl_dtype dt = iter % 2 ? FL_F64 : FL_F32;
        int64_t shape[FL_MAX_DIMS];
        int nd = rand_shape(&c.rng, shape, 0, 5, 7);
        vpair v;
        vpair_new(&c, &v, dt, nd, shape, (unsigned)rint_in(&c.rng, 0, 11) & ~V_BCAST, FILL_POISON, 0, 0, 0);
        double value = iter % 10 == 9 ? NAN : rand_value(&c.rng, -1e6, 1e6, 0.2);
        OK(fl_fill(c.cpu, &v.h, value, ERR));
        OK(fl_fill(c.gpu, &v.d, value, ERR));
        fl_tensor got;
        fetch(&c, &got, &v.base.d);
        assert_same_bits(&got, &v.base.h, "fill");
        fl_tensor_release(&got);
        vpair_free(&v);
    }
    close_ctx(&c);
}

static double tol_of(fl_dtype dt) { return dt == FL_F32 ? 1e-5 : 1e-12; }

static void test_unary(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 7);
    static const char *const names[FL_UN_COUNT] = { "neg", "abs", "square", "sqrt", "exp", "log", "affine" };
    for (int iter = 0; iter < 8 * FL_UN_COUNT; iter++) {
        fl_unop op = (fl_unop)(iter % FL_UN_COUNT);
        fl_dtype dt = (iter / FL_UN_COUNT) % 2 ? FL_F64 : FL_F32;
        bool in_place = (iter / FL_UN_COUNT) % 4 == 3;
        double lo = -4, hi = 4;
        if (op == FL_UN_SQRT || op == FL_UN_LOG)
            lo = 0.01;
        int64_t shape[FL_MAX_DIMS];
        int nd = rand_shape(&c.rng, shape, 0, 5, 7);
        double a = runif(&c.rng, -3, 3), b = runif(&c.rng, -3, 3);
        vpair in, out;
        vpair_new(&c, &in, dt, nd, shape, (unsigned)rint_in(&c.rng, 0, 15) & (in_place ? ~V_BCAST : ~0u),
                  FILL_RANDOM, lo, hi, 0);
        if (!in_place)
            vpair_new(&c, &out, dt, nd, shape, (unsigned)rint_in(&c.rng, 0, 11) & ~V_BCAST, FILL_POISON, 0, 0, 0);
        vpair *o = in_place ? &in : &out;
        if (op == FL_UN_AFFINE) {
            OK(fl_affine(c.cpu, &o->h, &in.h, a, b, ERR));
            OK(fl_affine(c.gpu, &o->d, &in.d, a, b, ERR));
        } else {
            OK(fl_unary(c.cpu, op, &o->h, &in.h, ERR));
            OK(fl_unary(c.gpu, op, &o->d, &in.d, ERR));
        }
        char what[64];
        snprintf(what, sizeof what, "%s %s%s, iter %d", names[op], fl_dtype_name(dt),
                 in_place ? " in place" : "", iter);
        double e = rel_err_dev(&c, &o->base.d, &o->base.h, what);
        if (!(e < tol_of(dt)))
            fail_msg("%s: relative error %.3g", what, e);
        if (!in_place)
            vpair_free(&out);
        vpair_free(&in);
    }
    close_ctx(&c);
}

static void test_binary(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 8);
    static const char *const names[FL_BIN_COUNT] = { "add", "sub", "mul", "div", "max", "min" };
    for (int iter = 0; iter < 8 * FL_BIN_COUNT; iter++) {
        fl_binop op = (fl_binop)(iter % FL_BIN_COUNT);
        fl_dtype dt = (iter / FL_BIN_COUNT) % 2 ? FL_F64 : FL_F32;
        int variant = (iter / FL_BIN_COUNT) % 4; /* 3: out is a; 2: b has lower rank */
        int64_t shape[FL_MAX_DIMS] = { 0 }, bshape[FL_MAX_DIMS] = { 0 };
        int nd = rand_shape(&c.rng, shape, 0, 5, 7);
        int bnd = nd;
        memcpy(bshape, shape, sizeof shape);
        if (variant == 2 && nd > 0) { /* the dispatcher broadcasts b's missing leading dims */
            bnd = (int)rint_in(&c.rng, 0, nd - 1);
            memcpy(bshape, shape + (nd - bnd), (size_t)bnd * sizeof *shape);
        }
        vpair a, b, out;
        vpair_new(&c, &a, dt, nd, shape, (unsigned)rint_in(&c.rng, 0, 15) & (variant == 3 ? ~V_BCAST : ~0u),
                  FILL_RANDOM, -4, 4, 0);
        vpair_new(&c, &b, dt, bnd, bshape, (unsigned)rint_in(&c.rng, 0, 15), FILL_RANDOM, 0.25, 4, 0);
        if (variant != 3)
            vpair_new(&c, &out, dt, nd, shape, (unsigned)rint_in(&c.rng, 0, 11) & ~V_BCAST, FILL_POISON, 0, 0, 0);
        vpair *o = variant == 3 ? &a : &out;
        OK(fl_binary(c.cpu, op, &o->h, &a.h, &b.h, ERR));
        OK(fl_binary(c.gpu, op, &o->d, &a.d, &b.d, ERR));
        char what[64];
        snprintf(what, sizeof what, "%s %s variant %d, iter %d", names[op], fl_dtype_name(dt), variant, iter);
        double e = rel_err_dev(&c, &o->base.d, &o->base.h, what);
        if (!(e < tol_of(dt)))
            fail_msg("%s: relative error %.3g", what, e);
        if (variant != 3)
            vpair_free(&out);
        vpair_free(&a);
        vpair_free(&b);
    }
    close_ctx(&c);
}

/* max/min propagate NaN like the CPU (numpy's maximum/minimum), elementwise on specials. */
static void test_binary_specials(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 9);
    for (int op = 0; op < FL_BIN_COUNT; op++)
        for (int t = 0; t < 2; t++) {
            fl_dtype dt = t ? FL_F64 : FL_F32;
            int64_t n = 4096;
            pair a, b, o;
            pair_new(&c, &a, dt, 1, &n, FILL_RANDOM, -2, 2, 0.5);
            pair_new(&c, &b, dt, 1, &n, FILL_RANDOM, -2, 2, 0.5);
            pair_new(&c, &o, dt, 1, &n, FILL_POISON, 0, 0, 0);
            OK(fl_binary(c.cpu, (fl_binop)op, &o.h, &a.h, &b.h, ERR));
            OK(fl_binary(c.gpu, (fl_binop)op, &o.d, &a.d, &b.d, ERR));
            fl_tensor got;
            fetch(&c, &got, &o.d);
            /* +, -, *, / are correctly rounded on both sides; max/min are exact */
            assert_same_bits(&got, &o.h, "binary on special values");
            fl_tensor_release(&got);
            pair_free(&a);
            pair_free(&b);
            pair_free(&o);
        }
    close_ctx(&c);
}

/* Logical shape of op(x) is [batch..., r, k]; returns the stored view for the flag. */
static void matmul_operand(ctx *c, vpair *v, fl_dtype dt, int nd, const int64_t *batch, int64_t r,
                           int64_t k, bool trans)
{
    int64_t shape[FL_MAX_DIMS];
    /* drop leading batch dims (numpy broadcasting) or make some size 1 */
    int drop = nd > 2 && rnext(&c->rng) % 4 == 0 ? (int)rint_in(&c->rng, 1, nd - 2) : 0;
    int n = nd - drop;
    for (int i = 0; i < n - 2; i++)
        shape[i] = rnext(&c->rng) % 4 == 0 ? 1 : batch[i + drop];
    shape[n - 2] = trans ? k : r;
    shape[n - 1] = trans ? r : k;
    /* a third of the operands get any layout at all (random perms, steps, broadcast inner
     * dims: these must be staged); the rest stay BLAS-friendly (maybe transposed) */
    unsigned flags = rnext(&c->rng) % 3 == 0 ? (unsigned)rint_in(&c->rng, 0, 15)
                                             : (V_SWAP_LAST | (rnext(&c->rng) % 2 ? V_STEP : 0));
    vpair_new(c, v, dt, n, shape, flags, FILL_RANDOM, -1, 1, 0);
}

static void test_matmul(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 10);
    for (int iter = 0; iter < 120; iter++) {
        fl_dtype dt = iter % 2 ? FL_F64 : FL_F32;
        int nb = (int)rint_in(&c.rng, 0, 3), nd = nb + 2;
        int64_t cshape[FL_MAX_DIMS];
        for (int i = 0; i < nb; i++)
            cshape[i] = rint_in(&c.rng, 1, 3);
        int64_t M = rint_in(&c.rng, 1, 33), N = rint_in(&c.rng, 1, 33), K = rint_in(&c.rng, 1, 33);
        if (iter % 5 == 0)
            K = rint_in(&c.rng, 100, 400);
        if (iter % 7 == 0)
            M = 1;
        if (iter % 11 == 0)
            N = 1;
        cshape[nd - 2] = M;
        cshape[nd - 1] = N;
        bool ta = rnext(&c.rng) % 2, tb = rnext(&c.rng) % 2;
        double alpha = runif(&c.rng, -2, 2), beta = iter % 3 == 0 ? 0.0 : runif(&c.rng, -1.5, 1.5);
        vpair a, b, cc;
        matmul_operand(&c, &a, dt, nd, cshape, M, K, ta);
        matmul_operand(&c, &b, dt, nd, cshape, K, N, tb);
        unsigned cflags = rnext(&c.rng) % 3 == 0 ? (unsigned)rint_in(&c.rng, 0, 11) & ~V_BCAST
                                                 : (V_SWAP_LAST | (rnext(&c.rng) % 2 ? V_STEP : 0));
        /* beta == 0: c starts as NaN and none of it may leak */
        vpair_new(&c, &cc, dt, nd, cshape, cflags, beta == 0.0 ? FILL_POISON : FILL_RANDOM, -1, 1, 0);
        unsigned flags = (ta ? FL_MATMUL_TA : 0u) | (tb ? FL_MATMUL_TB : 0u);
        OK(fl_matmul(c.cpu, &cc.h, &a.h, &b.h, flags, alpha, beta, ERR));
        OK(fl_matmul(c.gpu, &cc.d, &a.d, &b.d, flags, alpha, beta, ERR));
        char what[128];
        snprintf(what, sizeof what, "matmul %s batch %d M %lld N %lld K %lld ta %d tb %d beta %g, iter %d",
                 fl_dtype_name(dt), nb, (long long)M, (long long)N, (long long)K, ta, tb, beta, iter);
        double e = rel_err_dev(&c, &cc.base.d, &cc.base.h, what);
        double tol = dt == FL_F32 ? 1e-5 * sqrt((double)K) : 1e-12;
        if (!(e < tol))
            fail_msg("%s: relative error %.3g (tolerance %.3g)", what, e, tol);
        vpair_free(&a);
        vpair_free(&b);
        vpair_free(&cc);
    }
    close_ctx(&c);
}

/* K == 0: c = beta c, and beta == 0 writes zeros without reading c. */
static void test_matmul_empty_inner(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 11);
    for (int t = 0; t < 4; t++) {
        fl_dtype dt = t % 2 ? FL_F64 : FL_F32;
        double beta = t < 2 ? 0.0 : -1.5;
        int64_t sa[3] = { 2, 3, 0 }, sb[3] = { 2, 0, 4 }, sc[3] = { 2, 3, 4 };
        pair a, b, cc;
        pair_new(&c, &a, dt, 3, sa, FILL_RANDOM, -1, 1, 0);
        pair_new(&c, &b, dt, 3, sb, FILL_RANDOM, -1, 1, 0);
        pair_new(&c, &cc, dt, 3, sc, beta == 0.0 ? FILL_POISON : FILL_RANDOM, -1, 1, 0);
        OK(fl_matmul(c.cpu, &cc.h, &a.h, &b.h, 0, 1.0, beta, ERR));
        OK(fl_matmul(c.gpu, &cc.d, &a.d, &b.d, 0, 1.0, beta, ERR));
        fl_tensor got;
        fetch(&c, &got, &cc.d);
        assert_same_bits(&got, &cc.h, "matmul with K = 0");
        fl_tensor_release(&got);
        pair_free(&a);
        pair_free(&b);
        pair_free(&cc);
    }
    close_ctx(&c);
}

static void test_errors_and_unsupported(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 12);
    fl_error err;
    int64_t s23[2] = { 2, 3 }, s32[2] = { 3, 2 }, s33[2] = { 3, 3 };
    fl_tensor d23 = FL_TENSOR_NULL, h32 = FL_TENSOR_NULL, d33 = FL_TENSOR_NULL, o = FL_TENSOR_NULL;
    OK(fl_empty(c.gpu, &d23, FL_F32, 2, s23, ERR));
    OK(fl_empty(c.cpu, &h32, FL_F32, 2, s32, ERR));
    OK(fl_empty(c.gpu, &d33, FL_F32, 2, s33, ERR));
    OK(fl_empty(c.gpu, &o, FL_F32, 2, s33, ERR));
    /* mismatched shapes are rejected before the backend sees them */
    assert_int_equal(fl_copy(c.gpu, &d23, &h32, &err), FL_E_SHAPE);
    assert_int_equal(fl_copy(c.gpu, &h32, &d23, &err), FL_E_SHAPE);
    /* host tensors are not the GPU's to compute on */
    assert_int_equal(fl_unary(c.gpu, FL_UN_NEG, &h32, &h32, &err), FL_E_DEVICE);
    /* what this backend does not have yet */
    assert_int_equal(fl_reduce(c.gpu, FL_RED_SUM, &o, &d33, 0, &err), FL_E_UNSUPPORTED);
    assert_int_equal(fl_softmax(c.gpu, &o, &d33, 1, &err), FL_E_UNSUPPORTED);
    assert_int_equal(fl_cholesky(c.gpu, &o, &d33, &err), FL_E_UNSUPPORTED);
    assert_int_equal(fl_solve(c.gpu, &o, &d33, &d33, &err), FL_E_UNSUPPORTED);
    assert_int_equal(fl_cholesky_solve(c.gpu, &o, &d33, &d33, &err), FL_E_UNSUPPORTED);
    assert_int_equal(fl_eigh(c.gpu, &o, NULL, &d33, &err), FL_E_UNSUPPORTED);
    assert_int_equal(fl_fft(c.gpu, &o, &d33, 1, &err), FL_E_UNSUPPORTED);
    assert_non_null(strstr(fl_error_msg(&err), "cuda"));
    fl_tensor_release(&d23);
    fl_tensor_release(&h32);
    fl_tensor_release(&d33);
    fl_tensor_release(&o);
    close_ctx(&c);
}

/* Host staging goes through the backend's allocator: failures come back as FL_E_NOMEM
 * and every path frees what it took. */
static void test_staging_alloc_failures(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 13);
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_backend *g;
    fl_error err;
    assert_int_equal(fl_backend_new(&g, "cuda", 0, &fa.iface, &err), FL_OK);
    int64_t shape[3] = { 4, 5, 6 };
    vspec s;
    vspec_rand(&c.rng, &s, 3, shape, V_PERM | V_STEP);
    s.step[0] = 2; /* never contiguous */
    s.base[0] = s.start[0] + (s.len[0] - 1) * 2 + 1;
    fl_tensor hb = FL_TENSOR_NULL, hv, d = FL_TENSOR_NULL, d2 = FL_TENSOR_NULL;
    OK(fl_empty(c.cpu, &hb, FL_F32, 3, s.base, ERR));
    for (int64_t i = 0; i < fl_tensor_numel(&hb); i++)
        ((float *)fl_tensor_data(&hb))[i] = (float)i;
    vspec_apply(&s, &hb, &hv);
    OK(fl_empty(g, &d, FL_F16, 3, shape, ERR));
    size_t base_blocks = fa.live_blocks;
    int failures = 0;
    for (long k = 0; k < 8; k++) {
        fa.fail_after = k;
        fl_status st1 = fl_copy(g, &d, &hv, &err);              /* upload through staging */
        fl_status st2 = fl_copy(g, &hv, &d, &err);              /* download through staging */
        fl_status st3 = fl_empty(g, &d2, FL_F32, 3, shape, &err); /* storage record */
        fa.fail_after = -1;
        assert_true(st1 == FL_OK || st1 == FL_E_NOMEM);
        assert_true(st2 == FL_OK || st2 == FL_E_NOMEM);
        assert_true(st3 == FL_OK || st3 == FL_E_NOMEM);
        failures += (st1 != FL_OK) + (st2 != FL_OK) + (st3 != FL_OK);
        fl_tensor_release(&d2);
        assert_int_equal(fa.live_blocks, base_blocks);
    }
    assert_true(failures > 0);
    fl_tensor_release(&d);
    fl_backend_free(g);
    assert_int_equal(fa.live_blocks, 0);
    fl_tensor_release(&hv);
    fl_tensor_release(&hb);
    close_ctx(&c);
}

/* Two GPUs: each backend makes its own GPU current, values round-trip through the host,
 * and a tensor on the other GPU is refused. */
static void test_two_devices(void **state)
{
    (void)state;
    ctx c;
    open_or_skip(&c, 14);
#ifdef FL_HAVE_CUDA
    if (fl_cuda_device_count() < 2) {
        close_ctx(&c);
        print_message("fewer than two GPUs\n");
        skip();
        return;
    }
    fl_backend *g1;
    fl_error err;
    assert_int_equal(fl_backend_new(&g1, "cuda", 1, NULL, &err), FL_OK);
    assert_int_equal(g1->device.index, 1);
    int64_t n = 1000;
    pair p;
    pair_new(&c, &p, FL_F32, 1, &n, FILL_RANDOM, -1, 1, 0);
    fl_tensor d1 = FL_TENSOR_NULL, back = FL_TENSOR_NULL;
    OK(fl_empty(g1, &d1, FL_F32, 1, &n, ERR));
    assert_int_equal(fl_tensor_device(&d1).index, 1);
    assert_int_equal(fl_copy(g1, &d1, &p.d, &err), FL_E_DEVICE); /* p.d is on GPU 0 */
    OK(fl_copy(g1, &d1, &p.h, ERR));
    OK(fl_affine(g1, &d1, &d1, 2.0, 1.0, ERR));
    OK(fl_affine(c.gpu, &p.d, &p.d, 2.0, 1.0, ERR)); /* interleaved use of both GPUs */
    OK(fl_empty(c.cpu, &back, FL_F32, 1, &n, ERR));
    OK(fl_copy(g1, &back, &d1, ERR));
    fl_tensor got;
    fetch(&c, &got, &p.d);
    assert_same_bits(&back, &got, "the same affine on GPU 1 and GPU 0");
    fl_tensor_release(&got);
    fl_tensor_release(&back);
    fl_tensor_release(&d1);
    pair_free(&p);
    fl_backend_free(g1);
#endif
    close_ctx(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_open_and_device_errors),
        cmocka_unit_test(test_conversions_host_build),
        cmocka_unit_test(test_storage_and_lifetimes),
        cmocka_unit_test(test_copy_views),
        cmocka_unit_test(test_copy_conversions_exhaustive),
        cmocka_unit_test(test_fill),
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_binary),
        cmocka_unit_test(test_binary_specials),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_empty_inner),
        cmocka_unit_test(test_errors_and_unsupported),
        cmocka_unit_test(test_staging_alloc_failures),
        cmocka_unit_test(test_two_devices),
    };
    return cmocka_run_group_tests_name("cuda", tests, NULL, NULL);
}
