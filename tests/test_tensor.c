/* cmocka suite for core/tensor: creation, storage refcounting, views, shape checks, describe. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/tensor.h"

/* ---- helpers ------------------------------------------------------------------------ */

static long refs(const fl_tensor *t) { return atomic_load(&t->storage->refcount); }

static bool next_index(int ndim, const int64_t *shape, int64_t *idx)
{
    for (int i = ndim - 1; i >= 0; i--) {
        if (++idx[i] < shape[i])
            return true;
        idx[i] = 0;
    }
    return false;
}

/* Row-major linear position of idx in shape. */
static int64_t lin(int ndim, const int64_t *shape, const int64_t *idx)
{
    int64_t k = 0;
    for (int i = 0; i < ndim; i++)
        k = k * shape[i] + idx[i];
    return k;
}

/* A tensor whose element at linear position k holds k. */
static fl_tensor make_iota(fl_dtype dt, int ndim, const int64_t *shape, const fl_allocator *a)
{
    fl_tensor t = FL_TENSOR_NULL;
    fl_error err;
    if (fl_tensor_empty(&t, dt, ndim, shape, a, &err))
        fail_msg("make_iota: %s", err.msg);
    int64_t idx[FL_MAX_DIMS] = { 0 };
    if (fl_tensor_numel(&t) > 0)
        do
            fl_tensor_set(&t, idx, (double)lin(ndim, shape, idx));
        while (next_index(ndim, shape, idx));
    return t;
}

static void assert_shape(const fl_tensor *t, int ndim, const int64_t *shape)
{
    if (t->ndim != ndim)
        fail_msg("rank %d, want %d", t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            fail_msg("dim %d has size %lld, want %lld", i, (long long)t->shape[i],
                     (long long)shape[i]);
}

/* base index = off + m * view index: what a view's element [v] must alias in its base. */
typedef struct affine {
    int64_t off[FL_MAX_DIMS];
    int64_t m[FL_MAX_DIMS][FL_MAX_DIMS]; /* m[base dim][view dim] */
} affine;

/* Checks every element of `view` against the base element the index arithmetic says it
 * aliases (base is an iota), and that a write through the view lands there. */
static void check_view(fl_tensor *view, fl_tensor *base, const affine *a, const char *what)
{
    int64_t v[FL_MAX_DIMS] = { 0 }, b[FL_MAX_DIMS];
    if (fl_tensor_numel(view) == 0)
        return;
    int64_t k = 0;
    do {
        for (int j = 0; j < base->ndim; j++) {
            b[j] = a->off[j];
            for (int i = 0; i < view->ndim; i++)
                b[j] += a->m[j][i] * v[i];
            if (b[j] < 0 || b[j] >= base->shape[j])
                fail_msg("%s: test mapping leaves the base at dim %d", what, j);
        }
        double want = (double)lin(base->ndim, base->shape, b);
        double got = fl_tensor_get(view, v);
        if (got != want)
            fail_msg("%s: element %lld of the view is %g, want %g", what, (long long)k, got, want);
        fl_tensor_set(view, v, -1.0 - (double)k);
        if (fl_tensor_get(base, b) != -1.0 - (double)k)
            fail_msg("%s: write through element %lld of the view not seen in the base", what,
                     (long long)k);
        fl_tensor_set(base, b, want);
        k++;
    } while (next_index(view->ndim, view->shape, v));
}

static affine affine_identity(void)
{
    affine a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < FL_MAX_DIMS; i++)
        a.m[i][i] = 1;
    return a;
}

static const fl_device cpu = { FL_DEVICE_CPU, 0 };

/* An allocator that hands out garbage-filled memory, so zeroing is really tested. */
static void *dirty_alloc(void *ud, size_t size, size_t align)
{
    (void)ud;
    void *p = fl_allocator_default()->alloc(NULL, size, align);
    if (p)
        memset(p, 0xA5, size);
    return p;
}

static void dirty_free(void *ud, void *ptr, size_t size)
{
    (void)ud;
    fl_allocator_default()->free(NULL, ptr, size);
}

/* ---- creation ------------------------------------------------------------------------- */

static void test_empty_contiguous(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t shape[FL_MAX_DIMS], stride[FL_MAX_DIMS];
        int64_t numel;
    } cases[] = {
        { 3, { 2, 3, 4 }, { 12, 4, 1 }, 24 },
        { 1, { 5 }, { 1 }, 5 },
        { 0, { 0 }, { 0 }, 1 },
        { 5, { 1, 1, 1, 1, 1 }, { 1, 1, 1, 1, 1 }, 1 },
        { 5, { 7, 1, 3, 2, 2 }, { 12, 12, 4, 2, 1 }, 84 },
        { 3, { 3, 0, 2 }, { 2, 2, 1 }, 0 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int dt = 0; dt < FL_DTYPE_COUNT; dt++) {
            int64_t shape[FL_MAX_DIMS];
            memcpy(shape, cases[c].shape, sizeof shape);
            fl_tensor t = FL_TENSOR_NULL;
            fl_error err;
            assert_int_equal(fl_tensor_empty(&t, (fl_dtype)dt, cases[c].ndim, shape, NULL, &err),
                             FL_OK);
            shape[0] = 99; /* the tensor keeps its own copy */
            assert_shape(&t, cases[c].ndim, cases[c].shape);
            for (int i = 0; i < cases[c].ndim; i++)
                assert_int_equal(t.stride[i], cases[c].stride[i]);
            assert_int_equal(t.offset, 0);
            assert_int_equal(t.dtype, dt);
            assert_int_equal(fl_tensor_numel(&t), cases[c].numel);
            size_t nbytes = (size_t)cases[c].numel * fl_dtype_size((fl_dtype)dt);
            assert_int_equal(fl_tensor_nbytes(&t), nbytes);
            assert_non_null(t.storage);
            assert_int_equal(t.storage->nbytes, nbytes);
            assert_int_equal(refs(&t), 1);
            assert_true(fl_tensor_is_contiguous(&t));
            assert_int_equal(fl_tensor_device(&t).kind, FL_DEVICE_CPU);
            assert_string_equal(fl_device_name(fl_tensor_device(&t)), "cpu");
            assert_non_null(fl_tensor_data(&t));
            assert_true(((uintptr_t)fl_tensor_data(&t) & (FL_ALIGN - 1)) == 0);
            if (nbytes)
                memset(fl_tensor_data(&t), 0x3c, nbytes); /* ASan: all of it is ours */
            fl_tensor_release(&t);
            assert_null(t.storage);
        }
    }
}

static void test_zeros(void **state)
{
    (void)state;
    fl_allocator dirty = { dirty_alloc, dirty_free, NULL };
    const int64_t shape[] = { 3, 5, 7 };
    for (int dt = 0; dt < FL_DTYPE_COUNT; dt++) {
        fl_tensor e = FL_TENSOR_NULL, z = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_empty(&e, (fl_dtype)dt, 3, shape, &dirty, NULL), FL_OK);
        assert_int_equal(((unsigned char *)fl_tensor_data(&e))[0], 0xA5); /* really dirty */
        fl_tensor_release(&e);
        assert_int_equal(fl_tensor_zeros(&z, (fl_dtype)dt, 3, shape, &dirty, NULL), FL_OK);
        const unsigned char *p = fl_tensor_data(&z);
        for (size_t k = 0; k < fl_tensor_nbytes(&z); k++)
            if (p[k])
                fail_msg("%s zeros: byte %zu is %u", fl_dtype_name((fl_dtype)dt), k, p[k]);
        int64_t idx[3] = { 2, 4, 6 };
        assert_true(fl_tensor_get(&z, idx) == 0.0);
        fl_tensor_release(&z);
    }
}

static void test_create_rejects_bad_shapes(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t shape[8];
        fl_dtype dt;
        fl_status want;
        const char *in_msg;
    } bad[] = {
        { 6, { 1, 1, 1, 1, 1, 1 }, FL_F32, FL_E_SHAPE, "6" },
        { -1, { 1 }, FL_F32, FL_E_SHAPE, "-1" },
        { 3, { 2, -3, 4 }, FL_F32, FL_E_SHAPE, "-3" },
        { 1, { INT64_MIN }, FL_F32, FL_E_SHAPE, "negative" },
        { 2, { INT64_C(1) << 40, INT64_C(1) << 40 }, FL_F32, FL_E_RANGE, "overflow" },
        /* empty, but its strides would still overflow: refused whatever the dim order */
        { 3, { 0, INT64_C(1) << 40, INT64_C(1) << 40 }, FL_F32, FL_E_RANGE, "overflow" },
        { 3, { INT64_C(1) << 40, INT64_C(1) << 40, 0 }, FL_F32, FL_E_RANGE, "overflow" },
        { 2, { INT64_MAX, 2 }, FL_U8, FL_E_RANGE, "overflow" },
        { 3, { 1 << 20, 1 << 20, 1 << 24 }, FL_U8, FL_E_RANGE, "overflow" },
        { 1, { INT64_C(1) << 61 }, FL_F64, FL_E_RANGE, "overflow" },  /* bytes overflow */
        { 1, { INT64_C(1) << 60 }, FL_C128, FL_E_RANGE, "overflow" }, /* bytes overflow */
        { 2, { 2, 3 }, FL_DTYPE_COUNT, FL_E_DTYPE, "dtype" },
        { 2, { 2, 3 }, (fl_dtype)-1, FL_E_DTYPE, "dtype" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int zeros = 0; zeros < 2; zeros++) {
            fl_faultalloc fa;
            fl_faultalloc_init(&fa, NULL, -1);
            fl_tensor t, before;
            memset(&t, 0x5a, sizeof t);
            before = t;
            fl_error err;
            fl_error_clear(&err);
            fl_status st = zeros ? fl_tensor_zeros(&t, bad[i].dt, bad[i].ndim, bad[i].shape,
                                                   &fa.iface, &err)
                                 : fl_tensor_empty(&t, bad[i].dt, bad[i].ndim, bad[i].shape,
                                                   &fa.iface, &err);
            if (st != bad[i].want)
                fail_msg("case %zu: status %d (%s), want %d", i, st, err.msg, bad[i].want);
            assert_int_equal(err.code, bad[i].want);
            if (!strstr(err.msg, bad[i].in_msg))
                fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, bad[i].in_msg);
            assert_memory_equal(&t, &before, sizeof t);
            assert_int_equal(fa.total_allocs, 0);
            /* without an error record too */
            assert_int_equal(fl_tensor_empty(&t, bad[i].dt, bad[i].ndim, bad[i].shape, &fa.iface,
                                             NULL),
                             bad[i].want);
        }
    }
}

/* fail_after 0: the data allocation fails; 1: the storage struct fails after the data
 * succeeded. Both report FL_E_NOMEM and leave nothing behind. */
static void test_create_fault_injection(void **state)
{
    (void)state;
    const int64_t shape[] = { 4, 8 };
    for (int zeros = 0; zeros < 2; zeros++) {
        for (long n = 0; n <= 2; n++) {
            fl_faultalloc fa;
            fl_faultalloc_init(&fa, NULL, n);
            fl_tensor t = FL_TENSOR_NULL;
            fl_error err;
            fl_error_clear(&err);
            fl_status st = zeros ? fl_tensor_zeros(&t, FL_F32, 2, shape, &fa.iface, &err)
                                 : fl_tensor_empty(&t, FL_F32, 2, shape, &fa.iface, &err);
            if (n < 2) {
                assert_int_equal(st, FL_E_NOMEM);
                assert_int_equal(err.code, FL_E_NOMEM);
                assert_non_null(strstr(err.msg, "128")); /* names the size */
                assert_null(t.storage);
                assert_int_equal(fa.live_blocks, 0);
                assert_int_equal(fa.live_bytes, 0);
                assert_int_equal(fa.failures, 1);
            } else {
                assert_int_equal(st, FL_OK);
                assert_int_equal(fa.live_blocks, 2);
                fl_tensor_release(&t);
                assert_int_equal(fa.live_blocks, 0);
                assert_int_equal(fa.live_bytes, 0);
            }
        }
    }
    /* a huge but representable request fails cleanly too */
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, 0);
    fl_tensor t = FL_TENSOR_NULL;
    const int64_t huge[] = { INT64_C(1) << 40 };
    assert_int_equal(fl_tensor_empty(&t, FL_F32, 1, huge, &fa.iface, NULL), FL_E_NOMEM);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_storage_new_and_wrap_failures(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_storage *s = fl_storage_new_cpu(&fa.iface, 0);
    assert_non_null(s);
    assert_int_equal(s->nbytes, 0);
    assert_int_equal(s->device.kind, FL_DEVICE_CPU);
    fl_storage_release(s);
    s = fl_storage_new_cpu(&fa.iface, 100);
    assert_non_null(s);
    assert_true(((uintptr_t)s->data & (FL_ALIGN - 1)) == 0);
    assert_int_equal(atomic_load(&s->refcount), 1);
    fl_storage_retain(s);
    fl_storage_release(s);
    assert_int_equal(fa.live_blocks, 2);
    fl_storage_release(s);
    assert_int_equal(fa.live_blocks, 0);
    fl_storage_release(NULL);
    for (long n = 0; n < 2; n++) {
        fl_faultalloc_init(&fa, NULL, n);
        assert_null(fl_storage_new_cpu(&fa.iface, 64));
        assert_int_equal(fa.live_blocks, 0);
    }
}

/* ---- reference counting --------------------------------------------------------------- */

static void test_views_keep_storage_alive(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    const int64_t shape[] = { 4, 6 };
    fl_tensor base = make_iota(FL_F32, 2, shape, &fa.iface);
    fl_tensor a = FL_TENSOR_NULL, b = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_narrow(&a, &base, 1, 2, 3, NULL), FL_OK);
    assert_int_equal(fl_tensor_transpose(&b, &base, 0, 1, NULL), FL_OK);
    assert_int_equal(refs(&base), 3);
    fl_storage *s = base.storage;
    fl_tensor_release(&base);
    assert_null(base.storage);
    assert_int_equal(base.ndim, 0);
    assert_int_equal(atomic_load(&s->refcount), 2);
    assert_int_equal(fa.live_blocks, 2);
    /* both views still read the data (ASan reports any use after free) */
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 3; j++) {
            int64_t ia[2] = { i, j }, ib[2] = { j + 2, i };
            assert_true(fl_tensor_get(&a, ia) == (double)(i * 6 + j + 2));
            fl_tensor_set(&a, ia, 100.0 + (double)(i * 3 + j));
            assert_true(fl_tensor_get(&b, ib) == 100.0 + (double)(i * 3 + j));
        }
    fl_tensor_release(&a);
    assert_int_equal(refs(&b), 1);
    assert_int_equal(fa.live_blocks, 2);
    int64_t last[2] = { 5, 3 };
    assert_true(fl_tensor_get(&b, last) == 23.0);
    fl_tensor_release(&b);
    assert_int_equal(fa.live_blocks, 0);
    assert_int_equal(fa.live_bytes, 0);
}

static void test_retain_release(void **state)
{
    (void)state;
    const int64_t shape[] = { 3 };
    fl_tensor t = make_iota(FL_I32, 1, shape, NULL), u;
    fl_tensor_retain(&u, &t);
    assert_memory_equal(&u, &t, sizeof t);
    assert_int_equal(refs(&t), 2);
    fl_tensor copy = t; /* a struct copy adds no reference */
    assert_int_equal(refs(&copy), 2);
    fl_tensor_release(&u);
    assert_int_equal(refs(&t), 1);
    fl_tensor_release(&u); /* a released tensor holds nothing: releasing again is a no-op */
    fl_tensor n = FL_TENSOR_NULL, m;
    fl_tensor_retain(&m, &n); /* retaining a null tensor gives a null tensor */
    assert_null(m.storage);
    fl_tensor_release(&n);
    fl_tensor_release(NULL);
    assert_null(fl_tensor_data(&n));
    assert_int_equal(fl_tensor_device(&n).kind, FL_DEVICE_CPU);
    fl_tensor_release(&t);
}

typedef struct release_log {
    int calls;
    void *ud, *data;
    size_t nbytes;
} release_log;

static void log_release(void *ud, void *data, size_t nbytes)
{
    release_log *log = ud;
    log->calls++;
    log->ud = ud;
    log->data = data;
    log->nbytes = nbytes;
}

static void test_custom_release_called_once(void **state)
{
    (void)state;
    static float buf[32];
    for (int k = 0; k < 32; k++)
        buf[k] = (float)k;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    release_log log = { 0, NULL, NULL, 0 };
    fl_device dev = { FL_DEVICE_CPU, 0 };
    fl_storage *s = fl_storage_wrap(&fa.iface, buf, sizeof buf, dev, log_release, &log);
    assert_non_null(s);
    assert_int_equal(fa.live_blocks, 1); /* the struct; the data is not copied */
    assert_ptr_equal(s->data, buf);
    fl_tensor t1 = FL_TENSOR_NULL, t2 = FL_TENSOR_NULL, v = FL_TENSOR_NULL;
    const int64_t shape[] = { 4, 8 };
    assert_int_equal(fl_tensor_from_storage(&t1, s, FL_F32, 2, shape, NULL, 0, NULL), FL_OK);
    assert_int_equal(fl_tensor_from_storage(&t2, s, FL_F32, 1, shape + 1, NULL, 8, NULL), FL_OK);
    fl_storage_release(s); /* the creator's reference */
    assert_int_equal(atomic_load(&s->refcount), 2);
    assert_int_equal(fl_tensor_select(&v, &t1, 0, 3, NULL), FL_OK);
    fl_tensor_release(&t1);
    assert_int_equal(log.calls, 0);
    int64_t i7[1] = { 7 };
    assert_true(fl_tensor_get(&v, i7) == 31.0);
    assert_true(fl_tensor_get(&t2, i7) == 15.0);
    fl_tensor_release(&t2);
    assert_int_equal(log.calls, 0);
    fl_tensor_release(&v);
    assert_int_equal(log.calls, 1);
    assert_ptr_equal(log.ud, &log);
    assert_ptr_equal(log.data, buf);
    assert_int_equal(log.nbytes, sizeof buf);
    assert_int_equal(fa.live_blocks, 0);
    assert_int_equal(fa.live_bytes, 0);

    /* release NULL: memory the caller keeps; just the struct goes */
    s = fl_storage_wrap(&fa.iface, buf, sizeof buf, dev, NULL, NULL);
    assert_non_null(s);
    fl_storage_release(s);
    assert_int_equal(fa.live_blocks, 0);

    /* a failed wrap does not call release: the caller still owns the data */
    fl_faultalloc_init(&fa, NULL, 0);
    assert_null(fl_storage_wrap(&fa.iface, buf, sizeof buf, dev, log_release, &log));
    assert_int_equal(log.calls, 1);
}

typedef struct thread_arg {
    fl_tensor t; /* one reference owned by the thread */
    int iters;
} thread_arg;

static void *refcount_worker(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < a->iters; i++) {
        fl_tensor v = FL_TENSOR_NULL;
        fl_tensor_retain(&v, &a->t);
        fl_tensor w = FL_TENSOR_NULL;
        if (fl_tensor_narrow(&w, &v, 0, 1, 2, NULL) == FL_OK)
            fl_tensor_release(&w);
        fl_tensor_release(&v);
    }
    fl_tensor_release(&a->t);
    return NULL;
}

static void test_refcount_across_threads(void **state)
{
    (void)state;
    enum { NT = 8 };
    static float buf[16];
    release_log log = { 0, NULL, NULL, 0 };
    fl_storage *s = fl_storage_wrap(NULL, buf, sizeof buf, cpu, log_release, &log);
    assert_non_null(s);
    const int64_t shape[] = { 16 };
    thread_arg args[NT];
    pthread_t th[NT];
    for (int i = 0; i < NT; i++) {
        args[i].t = FL_TENSOR_NULL;
        args[i].iters = 20000;
        assert_int_equal(fl_tensor_from_storage(&args[i].t, s, FL_F32, 1, shape, NULL, 0, NULL),
                         FL_OK);
    }
    assert_int_equal(atomic_load(&s->refcount), NT + 1);
    for (int i = 0; i < NT; i++)
        assert_int_equal(pthread_create(&th[i], NULL, refcount_worker, &args[i]), 0);
    for (int i = 0; i < NT; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(atomic_load(&s->refcount), 1);
    assert_int_equal(log.calls, 0);
    fl_storage_release(s);
    assert_int_equal(log.calls, 1);
}

/* ---- views ---------------------------------------------------------------------------- */

static const int64_t base3[] = { 4, 5, 6 };

static void test_narrow(void **state)
{
    (void)state;
    fl_tensor base = make_iota(FL_F32, 3, base3, NULL);
    for (int dim = 0; dim < 3; dim++)
        for (int64_t start = 0; start <= base3[dim]; start++)
            for (int64_t len = 0; start + len <= base3[dim]; len++) {
                fl_tensor v = FL_TENSOR_NULL;
                assert_int_equal(fl_tensor_narrow(&v, &base, dim, start, len, NULL), FL_OK);
                int64_t want[3] = { 4, 5, 6 };
                want[dim] = len;
                assert_shape(&v, 3, want);
                assert_int_equal(refs(&base), 2);
                affine a = affine_identity();
                a.off[dim] = start;
                check_view(&v, &base, &a, "narrow");
                /* narrowing the leading dim keeps a dense tensor */
                if (dim == 0 || len == base3[dim])
                    assert_true(fl_tensor_is_contiguous(&v));
                fl_tensor_release(&v);
            }
    const struct {
        int dim;
        int64_t start, len;
        fl_status want;
    } bad[] = {
        { -1, 0, 1, FL_E_RANGE }, { 3, 0, 1, FL_E_RANGE }, { 1, -1, 2, FL_E_RANGE },
        { 1, 0, -1, FL_E_RANGE }, { 1, 4, 2, FL_E_RANGE }, { 1, 6, 0, FL_E_RANGE },
        { 1, 1, INT64_MAX, FL_E_RANGE }, { 1, INT64_MAX, 1, FL_E_RANGE },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_tensor v = FL_TENSOR_NULL;
        fl_error err;
        if (fl_tensor_narrow(&v, &base, bad[i].dim, bad[i].start, bad[i].len, &err) != bad[i].want)
            fail_msg("narrow case %zu accepted", i);
        assert_null(v.storage);
        assert_non_null(strstr(err.msg, "narrow"));
    }
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

/* Python's slice.indices for step >= 1. */
static void py_slice(int64_t n, int64_t start, int64_t stop, int64_t step, int64_t *first,
                     int64_t *len)
{
    if (start < 0) {
        start += n;
        if (start < 0)
            start = 0;
    } else if (start > n) {
        start = n;
    }
    if (stop < 0) {
        stop += n;
        if (stop < 0)
            stop = 0;
    } else if (stop > n) {
        stop = n;
    }
    *first = start;
    *len = stop > start ? (stop - start + step - 1) / step : 0;
}

static void test_slice_python_semantics(void **state)
{
    (void)state;
    fl_tensor base = make_iota(FL_F64, 3, base3, NULL);
    for (int dim = 0; dim < 3; dim++) {
        int64_t n = base3[dim];
        for (int64_t start = -n - 3; start <= n + 3; start++)
            for (int64_t stop = -n - 3; stop <= n + 3; stop++)
                for (int64_t step = 1; step <= n + 1; step++) {
                    fl_tensor v = FL_TENSOR_NULL;
                    assert_int_equal(fl_tensor_slice(&v, &base, dim, start, stop, step, NULL),
                                     FL_OK);
                    int64_t first, len;
                    py_slice(n, start, stop, step, &first, &len);
                    int64_t want[3] = { 4, 5, 6 };
                    want[dim] = len;
                    if (v.shape[dim] != len)
                        fail_msg("slice dim %d [%lld:%lld:%lld] of %lld: %lld elements, want %lld",
                                 dim, (long long)start, (long long)stop, (long long)step,
                                 (long long)n, (long long)v.shape[dim], (long long)len);
                    assert_shape(&v, 3, want);
                    affine a = affine_identity();
                    a.off[dim] = first;
                    a.m[dim][dim] = step;
                    check_view(&v, &base, &a, "slice");
                    fl_tensor_release(&v);
                }
    }
    /* a slice of a slice composes offsets and steps: [1::2][1::3] == [3::6] */
    const int64_t s1[] = { 20 };
    fl_tensor line = make_iota(FL_I64, 1, s1, NULL), a = FL_TENSOR_NULL, b = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_slice(&a, &line, 0, 1, INT64_MAX, 2, NULL), FL_OK);
    assert_int_equal(fl_tensor_slice(&b, &a, 0, 1, INT64_MAX, 3, NULL), FL_OK);
    assert_int_equal(b.shape[0], 3);
    for (int64_t i = 0; i < 3; i++)
        assert_true(fl_tensor_get(&b, &i) == (double)(3 + 6 * i));
    fl_tensor_release(&b);
    fl_tensor_release(&a);
    /* extreme bounds and steps clamp instead of overflowing */
    const struct {
        int64_t start, stop, step, first, len;
    } ext[] = {
        { INT64_MIN, INT64_MAX, 1, 0, 20 },  { INT64_MAX, INT64_MIN, 1, 20, 0 },
        { 0, INT64_MAX, INT64_MAX, 0, 1 },   { 5, 20, INT64_MAX, 5, 1 },
        { 19, INT64_MAX, INT64_MAX - 1, 19, 1 }, { INT64_MIN, INT64_MIN, INT64_MAX, 0, 0 },
        { -1, INT64_MAX, 7, 19, 1 },         { 3, 3, 1, 3, 0 },
    };
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        fl_tensor v = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_slice(&v, &line, 0, ext[i].start, ext[i].stop, ext[i].step,
                                         NULL),
                         FL_OK);
        if (v.shape[0] != ext[i].len)
            fail_msg("extreme slice %zu: %lld elements, want %lld", i, (long long)v.shape[0],
                     (long long)ext[i].len);
        if (ext[i].len) {
            int64_t z = 0;
            assert_true(fl_tensor_get(&v, &z) == (double)ext[i].first);
        }
        fl_tensor_release(&v);
    }
    /* a huge step on a strided dim gives one element, without overflowing the stride */
    fl_tensor hs = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_slice(&hs, &base, 0, 2, 4, INT64_MAX, NULL), FL_OK);
    assert_int_equal(hs.shape[0], 1);
    int64_t i000[3] = { 0, 1, 2 };
    assert_true(fl_tensor_get(&hs, i000) == (double)(2 * 30 + 1 * 6 + 2));
    assert_true(fl_tensor_is_contiguous(&hs));
    fl_tensor_release(&hs);
    /* bad steps and dims */
    fl_tensor v = FL_TENSOR_NULL;
    fl_error err;
    assert_int_equal(fl_tensor_slice(&v, &line, 0, 0, 5, 0, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "step"));
    assert_int_equal(fl_tensor_slice(&v, &line, 0, 0, 5, -1, NULL), FL_E_INVALID);
    assert_int_equal(fl_tensor_slice(&v, &line, 0, 0, 5, INT64_MIN, NULL), FL_E_INVALID);
    assert_int_equal(fl_tensor_slice(&v, &line, 1, 0, 5, 1, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_slice(&v, &line, -1, 0, 5, 1, NULL), FL_E_RANGE);
    assert_null(v.storage);
    assert_int_equal(refs(&line), 1);
    fl_tensor_release(&line);
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

static void test_select(void **state)
{
    (void)state;
    fl_tensor base = make_iota(FL_F32, 3, base3, NULL);
    for (int dim = 0; dim < 3; dim++)
        for (int64_t k = 0; k < base3[dim]; k++) {
            fl_tensor v = FL_TENSOR_NULL;
            assert_int_equal(fl_tensor_select(&v, &base, dim, k, NULL), FL_OK);
            assert_int_equal(v.ndim, 2);
            affine a;
            memset(&a, 0, sizeof a);
            for (int i = 0, j = 0; j < 3; j++) {
                if (j == dim) {
                    a.off[j] = k;
                    continue;
                }
                assert_int_equal(v.shape[i], base3[j]);
                a.m[j][i++] = 1;
            }
            check_view(&v, &base, &a, "select");
            fl_tensor_release(&v);
        }
    /* down to a 0-d tensor */
    fl_tensor s = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_select(&s, &base, 0, 3, NULL), FL_OK);
    assert_int_equal(fl_tensor_select(&s, &s, 0, 4, NULL), FL_OK);
    assert_int_equal(fl_tensor_select(&s, &s, 0, 5, NULL), FL_OK);
    assert_int_equal(s.ndim, 0);
    assert_int_equal(fl_tensor_numel(&s), 1);
    assert_true(fl_tensor_get(&s, NULL) == (double)(3 * 30 + 4 * 6 + 5));
    assert_int_equal(fl_tensor_select(&s, &s, 0, 0, NULL), FL_E_RANGE);
    char d[64];
    assert_string_equal(fl_tensor_describe(&s, d, sizeof d), "[] f32");
    fl_tensor_release(&s);
    fl_tensor v = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_select(&v, &base, 1, -1, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_select(&v, &base, 1, 5, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_select(&v, &base, 3, 0, NULL), FL_E_RANGE);
    assert_null(v.storage);
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

static void test_permute_transpose(void **state)
{
    (void)state;
    fl_tensor base = make_iota(FL_F32, 3, base3, NULL);
    const int perms[6][3] = { { 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
                              { 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 } };
    for (int p = 0; p < 6; p++) {
        fl_tensor v = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_permute(&v, &base, perms[p], NULL), FL_OK);
        affine a;
        memset(&a, 0, sizeof a);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(v.shape[i], base3[perms[p][i]]);
            a.m[perms[p][i]][i] = 1;
        }
        check_view(&v, &base, &a, "permute");
        assert_int_equal(fl_tensor_is_contiguous(&v), p == 0);
        fl_tensor_release(&v);
    }
    for (int d0 = 0; d0 < 3; d0++)
        for (int d1 = 0; d1 < 3; d1++) {
            fl_tensor v = FL_TENSOR_NULL;
            assert_int_equal(fl_tensor_transpose(&v, &base, d0, d1, NULL), FL_OK);
            affine a;
            memset(&a, 0, sizeof a);
            for (int i = 0; i < 3; i++) {
                int j = i == d0 ? d1 : i == d1 ? d0 : i;
                a.m[j][i] = 1;
            }
            check_view(&v, &base, &a, "transpose");
            fl_tensor_release(&v);
        }
    /* transposing twice gives the original layout back */
    fl_tensor t = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_transpose(&t, &base, 0, 2, NULL), FL_OK);
    assert_int_equal(fl_tensor_transpose(&t, &t, 2, 0, NULL), FL_OK);
    assert_memory_equal(t.shape, base.shape, sizeof t.shape);
    assert_memory_equal(t.stride, base.stride, sizeof t.stride);
    fl_tensor_release(&t);
    /* 5-d reversal */
    const int64_t s5[] = { 2, 3, 1, 2, 3 };
    fl_tensor b5 = make_iota(FL_F32, 5, s5, NULL), v5 = FL_TENSOR_NULL;
    const int rev[5] = { 4, 3, 2, 1, 0 };
    assert_int_equal(fl_tensor_permute(&v5, &b5, rev, NULL), FL_OK);
    affine a5;
    memset(&a5, 0, sizeof a5);
    for (int i = 0; i < 5; i++)
        a5.m[4 - i][i] = 1;
    check_view(&v5, &b5, &a5, "permute 5-d");
    fl_tensor_release(&v5);
    fl_tensor_release(&b5);
    /* not a permutation */
    const int bad[][3] = { { 0, 0, 1 }, { 0, 1, 3 }, { -1, 0, 1 }, { 2, 2, 2 }, { 1, 0, 31 } };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_tensor v = FL_TENSOR_NULL;
        fl_error err;
        assert_int_equal(fl_tensor_permute(&v, &base, bad[i], &err), FL_E_INVALID);
        assert_non_null(strstr(err.msg, "permut"));
        assert_null(v.storage);
    }
    fl_tensor v = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_transpose(&v, &base, 0, 3, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_transpose(&v, &base, -1, 0, NULL), FL_E_RANGE);
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

static void test_reshape(void **state)
{
    (void)state;
    fl_tensor base = make_iota(FL_F32, 3, base3, NULL);
    static const struct {
        int ndim;
        int64_t shape[FL_MAX_DIMS], want[FL_MAX_DIMS];
    } ok[] = {
        { 2, { 20, 6 }, { 20, 6 } },
        { 2, { 4, -1 }, { 4, 30 } },
        { 1, { -1 }, { 120 } },
        { 3, { 2, -1, 3 }, { 2, 20, 3 } },
        { 5, { 1, 2, 3, 4, 5 }, { 1, 2, 3, 4, 5 } },
        { 5, { 2, 1, -1, 1, 3 }, { 2, 1, 20, 1, 3 } },
    };
    for (size_t c = 0; c < sizeof ok / sizeof ok[0]; c++) {
        fl_tensor v = FL_TENSOR_NULL;
        fl_error err;
        if (fl_tensor_reshape(&v, &base, ok[c].ndim, ok[c].shape, &err) != FL_OK)
            fail_msg("reshape case %zu: %s", c, err.msg);
        assert_shape(&v, ok[c].ndim, ok[c].want);
        assert_true(fl_tensor_is_contiguous(&v));
        int64_t idx[FL_MAX_DIMS] = { 0 };
        do /* same row-major order as the base */
            assert_true(fl_tensor_get(&v, idx) == (double)lin(v.ndim, v.shape, idx));
        while (next_index(v.ndim, v.shape, idx));
        /* the last element of the view is the last of the base */
        for (int i = 0; i < v.ndim; i++)
            idx[i] = v.shape[i] - 1;
        fl_tensor_set(&v, idx, -5.0);
        int64_t blast[3] = { 3, 4, 5 };
        assert_true(fl_tensor_get(&base, blast) == -5.0);
        fl_tensor_set(&base, blast, 119.0);
        assert_int_equal(refs(&base), 2);
        fl_tensor_release(&v);
    }
    /* a narrowed leading dim is still contiguous: reshape keeps its offset */
    fl_tensor n = FL_TENSOR_NULL, r = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_narrow(&n, &base, 0, 2, 2, NULL), FL_OK);
    const int64_t flat[] = { -1 };
    assert_int_equal(fl_tensor_reshape(&r, &n, 1, flat, NULL), FL_OK);
    assert_int_equal(r.shape[0], 60);
    for (int64_t i = 0; i < 60; i++)
        assert_true(fl_tensor_get(&r, &i) == (double)(60 + i));
    fl_tensor_release(&r);
    fl_tensor_release(&n);
    /* a one-element tensor to 0-d and back */
    fl_tensor one = FL_TENSOR_NULL, z = FL_TENSOR_NULL;
    const int64_t s111[] = { 1, 1, 1 };
    assert_int_equal(fl_tensor_narrow(&one, &base, 2, 5, 1, NULL), FL_OK);
    assert_int_equal(fl_tensor_narrow(&one, &one, 1, 4, 1, NULL), FL_OK);
    assert_int_equal(fl_tensor_narrow(&one, &one, 0, 3, 1, NULL), FL_OK);
    assert_int_equal(fl_tensor_reshape(&z, &one, 0, NULL, NULL), FL_OK);
    assert_true(fl_tensor_get(&z, NULL) == 119.0);
    assert_int_equal(fl_tensor_reshape(&z, &z, 3, s111, NULL), FL_OK);
    int64_t i000[3] = { 0, 0, 0 };
    assert_true(fl_tensor_get(&z, i000) == 119.0);
    fl_tensor_release(&z);
    fl_tensor_release(&one);
    /* bad shapes */
    static const struct {
        int ndim;
        int64_t shape[8];
        fl_status want;
        const char *in_msg;
    } bad[] = {
        { 2, { 7, 6 }, FL_E_SHAPE, "[4, 5, 6]" },
        { 2, { -1, 7 }, FL_E_SHAPE, "infer" },
        { 2, { -1, -1 }, FL_E_SHAPE, "-1" },
        { 2, { -2, -60 }, FL_E_SHAPE, "negative" },
        { 2, { 0, -1 }, FL_E_SHAPE, "infer" },
        { 6, { 1, 1, 1, 1, 120, 1 }, FL_E_SHAPE, "rank" },
        { -1, { 120 }, FL_E_SHAPE, "rank" },
        { 3, { INT64_C(1) << 40, INT64_C(1) << 40, 0 }, FL_E_RANGE, "overflow" },
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        fl_tensor v = FL_TENSOR_NULL;
        fl_error err;
        fl_error_clear(&err);
        fl_status st = fl_tensor_reshape(&v, &base, bad[c].ndim, bad[c].shape, &err);
        if (st != bad[c].want || !strstr(err.msg, bad[c].in_msg))
            fail_msg("bad reshape %zu: status %d, message \"%s\"", c, st, err.msg);
        assert_null(v.storage);
    }
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

static void test_reshape_rejects_noncontiguous(void **state)
{
    (void)state;
    const int64_t s[] = { 4, 6 };
    fl_tensor base = make_iota(FL_F32, 2, s, NULL);
    fl_tensor views[4];
    const int64_t big[] = { 3, 4, 6 };
    for (int i = 0; i < 4; i++)
        views[i] = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_transpose(&views[0], &base, 0, 1, NULL), FL_OK);
    assert_int_equal(fl_tensor_narrow(&views[1], &base, 1, 1, 4, NULL), FL_OK);
    assert_int_equal(fl_tensor_slice(&views[2], &base, 0, 0, 4, 2, NULL), FL_OK);
    assert_int_equal(fl_tensor_expand(&views[3], &base, 3, big, NULL), FL_OK);
    const char *names[] = { "[6, 4] f32", "[4, 4] f32", "[2, 6] f32", "[3, 4, 6] f32" };
    for (int i = 0; i < 4; i++) {
        assert_false(fl_tensor_is_contiguous(&views[i]));
        fl_tensor r = FL_TENSOR_NULL;
        fl_error err;
        const int64_t flat[] = { fl_tensor_numel(&views[i]) }; /* a count that fits */
        assert_int_equal(fl_tensor_reshape(&r, &views[i], 1, flat, &err), FL_E_SHAPE);
        assert_int_equal(err.code, FL_E_SHAPE);
        if (!strstr(err.msg, names[i]) || !strstr(err.msg, "contiguous"))
            fail_msg("reshape of view %d: message \"%s\" should name %s", i, err.msg, names[i]);
        assert_null(r.storage);
        fl_tensor_release(&views[i]);
    }
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

static void test_unsqueeze(void **state)
{
    (void)state;
    const int64_t s[] = { 3, 4 };
    fl_tensor base = make_iota(FL_F32, 2, s, NULL);
    for (int dim = 0; dim <= 2; dim++) {
        fl_tensor v = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_unsqueeze(&v, &base, dim, NULL), FL_OK);
        assert_int_equal(v.ndim, 3);
        assert_int_equal(v.shape[dim], 1);
        affine a;
        memset(&a, 0, sizeof a);
        for (int i = 0, j = 0; i < 3; i++) {
            if (i == dim)
                continue;
            assert_int_equal(v.shape[i], s[j]);
            a.m[j++][i] = 1;
        }
        check_view(&v, &base, &a, "unsqueeze");
        assert_true(fl_tensor_is_contiguous(&v));
        /* and reshape accepts it */
        fl_tensor r = FL_TENSOR_NULL;
        const int64_t flat[] = { 12 };
        assert_int_equal(fl_tensor_reshape(&r, &v, 1, flat, NULL), FL_OK);
        fl_tensor_release(&r);
        fl_tensor_release(&v);
    }
    fl_tensor v = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_unsqueeze(&v, &base, -1, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_unsqueeze(&v, &base, 3, NULL), FL_E_RANGE);
    /* up to rank 5, then no further */
    fl_tensor u = FL_TENSOR_NULL;
    fl_tensor_retain(&u, &base);
    for (int k = 0; k < 3; k++)
        assert_int_equal(fl_tensor_unsqueeze(&u, &u, 0, NULL), FL_OK);
    assert_int_equal(u.ndim, 5);
    assert_int_equal(fl_tensor_unsqueeze(&v, &u, 0, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_unsqueeze(&v, &u, 5, NULL), FL_E_RANGE);
    assert_null(v.storage);
    fl_tensor_release(&u);
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

static void test_expand(void **state)
{
    (void)state;
    const int64_t s[] = { 3, 1 };
    fl_tensor base = make_iota(FL_F32, 2, s, NULL);
    const int64_t to[] = { 2, 3, 4 };
    fl_tensor v = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_expand(&v, &base, 3, to, NULL), FL_OK);
    assert_shape(&v, 3, to);
    assert_int_equal(v.stride[0], 0);
    assert_int_equal(v.stride[1], base.stride[0]);
    assert_int_equal(v.stride[2], 0);
    assert_false(fl_tensor_is_contiguous(&v));
    affine a;
    memset(&a, 0, sizeof a);
    a.m[0][1] = 1; /* base dim 0 follows view dim 1; base dim 1 is always 0 */
    check_view(&v, &base, &a, "expand");
    /* a write through one alias is seen through every other alias of that element */
    int64_t w[3] = { 1, 2, 3 }, r[3] = { 0, 2, 0 };
    fl_tensor_set(&v, w, 77.0);
    assert_true(fl_tensor_get(&v, r) == 77.0);
    fl_tensor_release(&v);
    /* same shape: a plain view; expanding a size-1 dim to 0 is allowed */
    assert_int_equal(fl_tensor_expand(&v, &base, 2, s, NULL), FL_OK);
    assert_memory_equal(v.stride, base.stride, sizeof v.stride);
    fl_tensor_release(&v);
    const int64_t to0[] = { 3, 0 };
    assert_int_equal(fl_tensor_expand(&v, &base, 2, to0, NULL), FL_OK);
    assert_int_equal(fl_tensor_numel(&v), 0);
    fl_tensor_release(&v);
    /* invalid */
    static const struct {
        int ndim;
        int64_t shape[8];
    } bad[] = {
        { 2, { 3, -1 } },     { 2, { 3, -4 } },    { 3, { -1, 3, 1 } }, { 2, { 4, 4 } },
        { 2, { 1, 4 } },      { 1, { 3 } },        { 0, { 0 } },        { 6, { 1, 1, 1, 1, 3, 1 } },
        { 3, { 2, 2, 1 } },
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        fl_error err;
        fl_error_clear(&err);
        fl_status st = fl_tensor_expand(&v, &base, bad[c].ndim, bad[c].shape, &err);
        if (st != FL_E_SHAPE)
            fail_msg("bad expand %zu: status %d (shape %lld)", c, st, (long long)v.shape[1]);
        if (!strstr(err.msg, "[3, 1] f32"))
            fail_msg("bad expand %zu: message \"%s\" should name the tensor", c, err.msg);
        assert_null(v.storage);
    }
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
}

/* dst == src: the view takes over the one reference; no op adds or drops one, and an
 * error leaves the tensor as it was. */
static void test_inplace_views_keep_one_ref(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_tensor base = make_iota(FL_F32, 3, base3, &fa.iface), t;
    fl_tensor_retain(&t, &base);
    assert_int_equal(refs(&base), 2);
    const int perm[3] = { 2, 0, 1 };
    const int64_t flat[] = { -1 };
    assert_int_equal(fl_tensor_reshape(&t, &t, 1, flat, NULL), FL_OK);
    assert_int_equal(refs(&base), 2);
    const int64_t s3[] = { 4, 5, 6 };
    assert_int_equal(fl_tensor_reshape(&t, &t, 3, s3, NULL), FL_OK);
    assert_int_equal(fl_tensor_permute(&t, &t, perm, NULL), FL_OK);
    assert_int_equal(refs(&base), 2);
    assert_int_equal(fl_tensor_transpose(&t, &t, 0, 2, NULL), FL_OK);
    assert_int_equal(fl_tensor_narrow(&t, &t, 0, 1, 2, NULL), FL_OK);
    assert_int_equal(fl_tensor_slice(&t, &t, 2, 0, 6, 2, NULL), FL_OK);
    assert_int_equal(refs(&base), 2);
    assert_int_equal(fl_tensor_select(&t, &t, 0, 1, NULL), FL_OK);
    assert_int_equal(fl_tensor_unsqueeze(&t, &t, 0, NULL), FL_OK);
    assert_int_equal(refs(&base), 2);
    fl_tensor before = t;
    assert_int_equal(fl_tensor_expand(&t, &t, 3, (const int64_t[]){ 9, 9, 9 }, NULL), FL_E_SHAPE);
    assert_int_equal(fl_tensor_narrow(&t, &t, 0, 0, 5, NULL), FL_E_RANGE);
    assert_int_equal(fl_tensor_reshape(&t, &t, 1, (const int64_t[]){ 7 }, NULL), FL_E_SHAPE);
    assert_memory_equal(&t, &before, sizeof t);
    assert_int_equal(refs(&base), 2);
    /* permute, transpose(0, 2), narrow, slice, select and unsqueeze compose to
     * t[0, b, c] = base[b, 2, 2c] */
    const int64_t tshape[] = { 1, 4, 3 };
    assert_shape(&t, 3, tshape);
    affine a;
    memset(&a, 0, sizeof a);
    a.m[0][1] = 1;
    a.off[1] = 2;
    a.m[2][2] = 2;
    check_view(&t, &base, &a, "composed in place");
    const int64_t ok[] = { 2, 4, 3 };
    assert_int_equal(fl_tensor_expand(&t, &t, 3, ok, NULL), FL_OK);
    assert_int_equal(refs(&base), 2);
    fl_tensor_release(&t);
    assert_int_equal(refs(&base), 1);
    fl_tensor_release(&base);
    assert_int_equal(fa.live_blocks, 0);
}

/* ---- tensors over existing storage ---------------------------------------------------- */

static void test_from_storage(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_storage *s = fl_storage_new_cpu(&fa.iface, 24 * sizeof(float));
    assert_non_null(s);
    for (int k = 0; k < 24; k++)
        ((float *)s->data)[k] = (float)k;
    fl_tensor t = FL_TENSOR_NULL;
    fl_error err;
    /* strided, offset, reaching exactly the last element */
    const int64_t sh[] = { 2, 3 }, st[] = { 12, 4 };
    assert_int_equal(fl_tensor_from_storage(&t, s, FL_F32, 2, sh, st, 3, &err), FL_OK);
    assert_int_equal(atomic_load(&s->refcount), 2);
    assert_false(fl_tensor_is_contiguous(&t));
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++) {
            int64_t idx[2] = { i, j };
            assert_true(fl_tensor_get(&t, idx) == (double)(3 + 12 * i + 4 * j));
            assert_int_equal(fl_tensor_offset_of(&t, idx), 12 * i + 4 * j);
        }
    fl_tensor_release(&t);
    /* contiguous (stride NULL) up to the end */
    assert_int_equal(fl_tensor_from_storage(&t, s, FL_F32, 2, sh, NULL, 18, NULL), FL_OK);
    assert_int_equal(t.stride[0], 3);
    assert_int_equal(t.stride[1], 1);
    int64_t last[2] = { 1, 2 };
    assert_true(fl_tensor_get(&t, last) == 23.0);
    fl_tensor_release(&t);
    /* stride 0 is a broadcast */
    const int64_t sh1000[] = { 1000 }, st0[] = { 0 };
    assert_int_equal(fl_tensor_from_storage(&t, s, FL_F32, 1, sh1000, st0, 23, NULL), FL_OK);
    int64_t i999 = 999;
    assert_true(fl_tensor_get(&t, &i999) == 23.0);
    fl_tensor_release(&t);
    /* an empty view reaches nothing */
    const int64_t sh0[] = { 0, 3 };
    assert_int_equal(fl_tensor_from_storage(&t, s, FL_F32, 2, sh0, NULL, 0, NULL), FL_OK);
    assert_int_equal(fl_tensor_numel(&t), 0);
    fl_tensor_release(&t);
    /* the same bytes as f64: 12 elements */
    const int64_t s12[] = { 12 };
    assert_int_equal(fl_tensor_from_storage(&t, s, FL_F64, 1, s12, NULL, 0, NULL), FL_OK);
    fl_tensor_release(&t);
    assert_int_equal(atomic_load(&s->refcount), 1);

    static const struct {
        fl_dtype dt;
        int ndim;
        int64_t shape[8], stride[8];
        int null_stride;
        int64_t offset;
        fl_status want;
        const char *in_msg;
    } bad[] = {
        { FL_F32, 2, { 2, 3 }, { 0 }, 1, 19, FL_E_RANGE, "[2, 3] f32" },
        { FL_F32, 2, { 2, 3 }, { 12, 4 }, 0, 4, FL_E_RANGE, "[2, 3] f32" },
        { FL_F32, 1, { 25 }, { 0 }, 1, 0, FL_E_RANGE, "[25] f32" },
        { FL_F64, 1, { 13 }, { 0 }, 1, 0, FL_E_RANGE, "[13] f64" },
        { FL_C128, 1, { 7 }, { 0 }, 1, 0, FL_E_RANGE, "[7] c128" },
        { FL_F32, 2, { 2, 3 }, { -1, 1 }, 0, 10, FL_E_SHAPE, "stride" },
        { FL_F32, 2, { 2, 3 }, { 3, -1 }, 0, 10, FL_E_SHAPE, "stride" },
        { FL_F32, 2, { 1, 3 }, { INT64_MIN, 1 }, 0, 0, FL_E_SHAPE, "stride" },
        { FL_F32, 1, { 2 }, { 0 }, 1, -1, FL_E_RANGE, "offset" },
        { FL_F32, 1, { 2 }, { INT64_MAX }, 0, 0, FL_E_RANGE, "" },
        { FL_F32, 2, { INT64_C(1) << 31, 2 }, { INT64_C(1) << 40, 1 }, 0, 0, FL_E_RANGE, "" },
        { FL_F32, 3, { 3, 3, 3 }, { INT64_MAX / 2, INT64_MAX / 2, 1 }, 0, 0, FL_E_RANGE, "" },
        { FL_F32, 1, { 2 }, { 1 }, 0, INT64_MAX, FL_E_RANGE, "" },
        { FL_F32, 1, { 2 }, { 1 }, 0, INT64_MAX - 1, FL_E_RANGE, "" },
        { FL_F32, 2, { INT64_C(1) << 40, INT64_C(1) << 40 }, { 0 }, 1, 0, FL_E_RANGE, "" },
        { FL_F32, 2, { 2, -3 }, { 0 }, 1, 0, FL_E_SHAPE, "negative" },
        { FL_F32, 6, { 1, 1, 1, 1, 1, 1 }, { 0 }, 1, 0, FL_E_SHAPE, "rank" },
        { FL_DTYPE_COUNT, 1, { 2 }, { 0 }, 1, 0, FL_E_DTYPE, "dtype" },
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        fl_tensor out;
        memset(&out, 0x5a, sizeof out);
        fl_tensor keep = out;
        fl_error_clear(&err);
        fl_status got = fl_tensor_from_storage(&out, s, bad[c].dt, bad[c].ndim, bad[c].shape,
                                               bad[c].null_stride ? NULL : bad[c].stride,
                                               bad[c].offset, &err);
        if (got != bad[c].want || !strstr(err.msg, bad[c].in_msg))
            fail_msg("from_storage case %zu: status %d, message \"%s\"", c, got, err.msg);
        assert_memory_equal(&out, &keep, sizeof out);
        assert_int_equal(atomic_load(&s->refcount), 1); /* no reference taken */
    }
    fl_storage_release(s);
    assert_int_equal(fa.live_blocks, 0);
}

/* ---- shapes and queries --------------------------------------------------------------- */

static void test_broadcast_shapes(void **state)
{
    (void)state;
    static const struct {
        int na, nb, nw;
        int64_t a[FL_MAX_DIMS], b[FL_MAX_DIMS], w[FL_MAX_DIMS];
    } ok[] = {
        { 3, 2, 3, { 3, 1, 5 }, { 4, 5 }, { 3, 4, 5 } },
        { 0, 2, 2, { 0 }, { 2, 3 }, { 2, 3 } },
        { 0, 0, 0, { 0 }, { 0 }, { 0 } },
        { 1, 1, 1, { 1 }, { 0 }, { 0 } },
        { 2, 2, 2, { 2, 1 }, { 1, 3 }, { 2, 3 } },
        { 5, 4, 5, { 5, 1, 1, 1, 7 }, { 1, 6, 1, 1 }, { 5, 1, 6, 1, 7 } },
        { 2, 2, 2, { 4, 5 }, { 4, 5 }, { 4, 5 } },
        { 3, 1, 3, { 2, 0, 1 }, { 1 }, { 2, 0, 1 } },
    };
    for (size_t c = 0; c < sizeof ok / sizeof ok[0]; c++) {
        for (int swap = 0; swap < 2; swap++) {
            int64_t out[FL_MAX_DIMS];
            int nout = -7;
            const int64_t *a = swap ? ok[c].b : ok[c].a, *b = swap ? ok[c].a : ok[c].b;
            int na = swap ? ok[c].nb : ok[c].na, nb = swap ? ok[c].na : ok[c].nb;
            assert_int_equal(fl_broadcast_shapes(na, a, nb, b, &nout, out, NULL), FL_OK);
            assert_int_equal(nout, ok[c].nw);
            for (int i = 0; i < nout; i++)
                if (out[i] != ok[c].w[i])
                    fail_msg("broadcast case %zu dim %d: %lld, want %lld", c, i,
                             (long long)out[i], (long long)ok[c].w[i]);
        }
    }
    /* the output may alias an input */
    int64_t a[3] = { 3, 1, 5 }, b[2] = { 4, 1 };
    int n;
    assert_int_equal(fl_broadcast_shapes(3, a, 2, b, &n, a, NULL), FL_OK);
    assert_int_equal(a[1], 4);
    assert_int_equal(a[2], 5);
    /* incompatible: the message names both shapes, outputs untouched */
    static const struct {
        int na, nb;
        int64_t a[FL_MAX_DIMS], b[FL_MAX_DIMS];
        const char *sa, *sb;
    } bad[] = {
        { 2, 1, { 2, 3 }, { 2 }, "[2, 3]", "[2]" },
        { 3, 3, { 4, 5, 6 }, { 4, 1, 7 }, "[4, 5, 6]", "[4, 1, 7]" },
        { 1, 2, { 0 }, { 5, 2 }, "[0]", "[5, 2]" },
        { 5, 5,
          { INT64_C(1000000000000000000), INT64_C(2000000000000000000),
            INT64_C(3000000000000000000), INT64_C(4000000000000000000),
            INT64_C(5000000000000000000) },
          { INT64_C(1000000000000000000), INT64_C(2000000000000000000),
            INT64_C(3000000000000000000), INT64_C(4000000000000000000),
            INT64_C(6000000000000000000) },
          "[1000000000000000000, 2000000000000000000, 3000000000000000000, "
          "4000000000000000000, 5000000000000000000]",
          "[1000000000000000000, 2000000000000000000, 3000000000000000000, "
          "4000000000000000000, 6000000000000000000]" },
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        int64_t out[FL_MAX_DIMS] = { -9, -9, -9, -9, -9 };
        int nout = -7;
        fl_error err;
        fl_error_clear(&err);
        assert_int_equal(
            fl_broadcast_shapes(bad[c].na, bad[c].a, bad[c].nb, bad[c].b, &nout, out, &err),
            FL_E_SHAPE);
        if (!strstr(err.msg, bad[c].sa) || !strstr(err.msg, bad[c].sb))
            fail_msg("broadcast error \"%s\" should name %s and %s", err.msg, bad[c].sa, bad[c].sb);
        assert_null(strstr(err.msg, "f32")); /* shapes, not tensors */
        assert_int_equal(nout, -7);
        assert_true(out[0] == -9);
    }
    int64_t six[6] = { 1, 1, 1, 1, 1, 1 }, out[FL_MAX_DIMS];
    assert_int_equal(fl_broadcast_shapes(6, six, 1, six, &n, out, NULL), FL_E_SHAPE);
    assert_int_equal(fl_broadcast_shapes(1, six, 6, six, &n, out, NULL), FL_E_SHAPE);
}

static fl_tensor meta(int ndim, const int64_t *shape, const int64_t *stride)
{
    fl_tensor t = FL_TENSOR_NULL;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        t.shape[i] = shape[i];
        t.stride[i] = stride[i];
    }
    return t;
}

static void test_is_contiguous_edges(void **state)
{
    (void)state;
    static const struct {
        int ndim;
        int64_t shape[FL_MAX_DIMS], stride[FL_MAX_DIMS];
        bool want;
    } cases[] = {
        { 0, { 0 }, { 0 }, true },                     /* a scalar */
        { 1, { 1 }, { 7 }, true },                     /* size-1 dims: any stride */
        { 3, { 3, 1, 4 }, { 4, 999, 1 }, true },
        { 2, { 1, 1 }, { 5, 9 }, true },
        { 3, { 1, 6, 1 }, { 0, 1, 123 }, true },
        { 2, { 2, 3 }, { 3, 1 }, true },
        { 2, { 2, 3 }, { 1, 2 }, false },              /* transposed */
        { 2, { 2, 3 }, { 4, 1 }, false },              /* padded rows */
        { 2, { 2, 3 }, { 0, 1 }, false },              /* broadcast */
        { 1, { 3 }, { 2 }, false },                    /* stepped */
        { 1, { 0 }, { 5 }, true },                     /* empty tensors are trivially dense */
        { 2, { 0, 3 }, { 3, 2 }, true },
        { 2, { 3, 0 }, { 5, 7 }, true },
        { 3, { 2, 0, 3 }, { 100, 3, 50 }, true },
        { 3, { 4, 3, 0 }, { 0, 0, 0 }, true },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fl_tensor t = meta(cases[c].ndim, cases[c].shape, cases[c].stride);
        if (fl_tensor_is_contiguous(&t) != cases[c].want)
            fail_msg("is_contiguous case %zu: got %d", c, !cases[c].want);
    }
    /* views of a real tensor */
    const int64_t s[] = { 4, 6 }, s16[] = { 1, 6 };
    fl_tensor base = make_iota(FL_F32, 2, s, NULL), row = make_iota(FL_F32, 2, s16, NULL);
    fl_tensor v = FL_TENSOR_NULL;
    assert_int_equal(fl_tensor_select(&v, &base, 0, 2, NULL), FL_OK);
    assert_true(fl_tensor_is_contiguous(&v));
    fl_tensor_release(&v);
    assert_int_equal(fl_tensor_select(&v, &base, 1, 2, NULL), FL_OK);
    assert_false(fl_tensor_is_contiguous(&v));
    fl_tensor_release(&v);
    assert_int_equal(fl_tensor_slice(&v, &base, 1, 3, 6, 5, NULL), FL_OK); /* one element/row */
    assert_int_equal(v.shape[1], 1);
    assert_false(fl_tensor_is_contiguous(&v)); /* rows 6 apart, each holding 1 */
    fl_tensor_release(&v);
    assert_int_equal(fl_tensor_slice(&v, &base, 0, 1, 4, 3, NULL), FL_OK);
    assert_int_equal(v.shape[0], 1);
    assert_true(fl_tensor_is_contiguous(&v)); /* a single row with a stepped stride */
    fl_tensor_release(&v);
    assert_int_equal(fl_tensor_transpose(&v, &row, 0, 1, NULL), FL_OK);
    assert_true(fl_tensor_is_contiguous(&v)); /* [6, 1]: the size-1 dim does not count */
    fl_tensor_release(&v);
    assert_int_equal(fl_tensor_narrow(&v, &base, 1, 0, 0, NULL), FL_OK);
    assert_true(fl_tensor_is_contiguous(&v)); /* empty */
    fl_tensor r = FL_TENSOR_NULL;
    const int64_t to[] = { 0, 7 };
    assert_int_equal(fl_tensor_reshape(&r, &v, 2, to, NULL), FL_OK);
    fl_tensor_release(&r);
    fl_tensor_release(&v);
    assert_int_equal(fl_tensor_slice(&v, &base, 0, 0, 4, 2, NULL), FL_OK);
    assert_int_equal(fl_tensor_narrow(&v, &v, 1, 3, 0, NULL), FL_OK);
    assert_true(fl_tensor_is_contiguous(&v)); /* empty, whatever its strides */
    fl_tensor_release(&v);
    fl_tensor_release(&row);
    fl_tensor_release(&base);
}

static void test_describe(void **state)
{
    (void)state;
    char buf[128];
    const int64_t s23[] = { 2, 3 }, s0[] = { 0 }, s5[] = { 2, 3, 4, 5, 6 };
    fl_tensor t = meta(2, s23, s23);
    assert_string_equal(fl_tensor_describe(&t, buf, sizeof buf), "[2, 3] f32");
    assert_ptr_equal(fl_tensor_describe(&t, buf, sizeof buf), buf);
    t = meta(0, s23, s23);
    assert_string_equal(fl_tensor_describe(&t, buf, sizeof buf), "[] f32");
    t = meta(1, s0, s0);
    t.dtype = FL_BF16;
    assert_string_equal(fl_tensor_describe(&t, buf, sizeof buf), "[0] bf16");
    t = meta(5, s5, s5);
    t.dtype = FL_C128;
    assert_string_equal(fl_tensor_describe(&t, buf, sizeof buf), "[2, 3, 4, 5, 6] c128");
    const int64_t sbig[] = { INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX };
    t = meta(5, sbig, sbig);
    fl_tensor_describe(&t, buf, sizeof buf);
    assert_non_null(strstr(buf, "9223372036854775807, 9223372036854775807]"));
    /* too small: truncated, always terminated, never past n */
    t = meta(2, s23, s23);
    const char *full = "[2, 3] f32";
    for (size_t n = 1; n <= strlen(full) + 1; n++) {
        char small[32];
        memset(small, '#', sizeof small);
        fl_tensor_describe(&t, small, n);
        if (strlen(small) != n - 1 || strncmp(small, full, n - 1) != 0)
            fail_msg("describe into %zu bytes gave \"%s\"", n, small);
        for (size_t k = n; k < sizeof small; k++)
            assert_int_equal(small[k], '#');
    }
    char none = '#';
    fl_tensor_describe(&t, &none, 0);
    assert_int_equal(none, '#');
}

static void test_queries_and_access(void **state)
{
    (void)state;
    const int64_t s[] = { 3, 4 };
    for (int dt = 0; dt < FL_DTYPE_COUNT; dt++) {
        fl_tensor t = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_zeros(&t, (fl_dtype)dt, 2, s, NULL, NULL), FL_OK);
        int64_t idx[2] = { 0, 0 };
        do {
            double v = (double)(idx[0] * 4 + idx[1] + 1);
            fl_tensor_set(&t, idx, v);
        } while (next_index(2, s, idx));
        do {
            double v = (double)(idx[0] * 4 + idx[1] + 1);
            if (fl_tensor_get(&t, idx) != v)
                fail_msg("%s: [%lld, %lld] reads %g", fl_dtype_name((fl_dtype)dt),
                         (long long)idx[0], (long long)idx[1], fl_tensor_get(&t, idx));
            assert_int_equal(fl_tensor_offset_of(&t, idx), idx[0] * 4 + idx[1]);
            /* the bytes sit where offset_of says */
            assert_true(fl_dtype_load((fl_dtype)dt, fl_tensor_data(&t),
                                      (size_t)fl_tensor_offset_of(&t, idx)) == v);
        } while (next_index(2, s, idx));
        /* views: data points at element [0, ...], nbytes counts the view */
        fl_tensor v = FL_TENSOR_NULL;
        assert_int_equal(fl_tensor_narrow(&v, &t, 1, 2, 2, NULL), FL_OK);
        assert_ptr_equal(fl_tensor_data(&v),
                         (char *)fl_tensor_data(&t) + 2 * fl_dtype_size((fl_dtype)dt));
        assert_int_equal(fl_tensor_nbytes(&v), 6 * fl_dtype_size((fl_dtype)dt));
        assert_false(fl_tensor_same_shape(&v, &t));
        fl_tensor_release(&v);
        fl_tensor_release(&t);
    }
    fl_tensor a = meta(2, s, s), b = meta(2, s, s), c = meta(1, s, s);
    assert_true(fl_tensor_same_shape(&a, &b));
    assert_false(fl_tensor_same_shape(&a, &c));
    b.shape[1] = 5;
    assert_false(fl_tensor_same_shape(&a, &b));
    fl_tensor z0 = meta(0, s, s), z1 = meta(0, s, s);
    assert_true(fl_tensor_same_shape(&z0, &z1));
    int64_t st[5];
    const int64_t sh[5] = { 2, 0, 3, 1, 4 };
    fl_contiguous_strides(5, sh, st);
    const int64_t want[5] = { 12, 12, 4, 4, 1 };
    assert_memory_equal(st, want, sizeof want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_contiguous),
        cmocka_unit_test(test_zeros),
        cmocka_unit_test(test_create_rejects_bad_shapes),
        cmocka_unit_test(test_create_fault_injection),
        cmocka_unit_test(test_storage_new_and_wrap_failures),
        cmocka_unit_test(test_views_keep_storage_alive),
        cmocka_unit_test(test_retain_release),
        cmocka_unit_test(test_custom_release_called_once),
        cmocka_unit_test(test_refcount_across_threads),
        cmocka_unit_test(test_narrow),
        cmocka_unit_test(test_slice_python_semantics),
        cmocka_unit_test(test_select),
        cmocka_unit_test(test_permute_transpose),
        cmocka_unit_test(test_reshape),
        cmocka_unit_test(test_reshape_rejects_noncontiguous),
        cmocka_unit_test(test_unsqueeze),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_inplace_views_keep_one_ref),
        cmocka_unit_test(test_from_storage),
        cmocka_unit_test(test_broadcast_shapes),
        cmocka_unit_test(test_is_contiguous_edges),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_queries_and_access),
    };
    return cmocka_run_group_tests_name("tensor", tests, NULL, NULL);
}
