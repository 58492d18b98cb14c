/* The CUDA backend's vtable: device storages, copies across the host/device boundary,
 * elementwise ops and cuBLAS matmul, planned here in C and run by cuda_kernels.cu. */
#ifdef FL_HAVE_CUDA

#include "cuda_backend.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_priv.h"

_Static_assert(FL_CU_MAX_DIMS == FL_MAX_DIMS, "cuda_internal.h and core/tensor.h disagree on rank");
_Static_assert(FL_CU_UN_NEG == (int)FL_UN_NEG && FL_CU_UN_ABS == (int)FL_UN_ABS &&
                   FL_CU_UN_SQUARE == (int)FL_UN_SQUARE && FL_CU_UN_SQRT == (int)FL_UN_SQRT &&
                   FL_CU_UN_EXP == (int)FL_UN_EXP && FL_CU_UN_LOG == (int)FL_UN_LOG &&
                   FL_CU_UN_AFFINE == (int)FL_UN_AFFINE && FL_CU_UN_COUNT == (int)FL_UN_COUNT,
               "FL_CU_UN_* must equal fl_unop");
_Static_assert(FL_CU_BIN_ADD == (int)FL_BIN_ADD && FL_CU_BIN_SUB == (int)FL_BIN_SUB &&
                   FL_CU_BIN_MUL == (int)FL_BIN_MUL && FL_CU_BIN_DIV == (int)FL_BIN_DIV &&
                   FL_CU_BIN_MAX == (int)FL_BIN_MAX && FL_CU_BIN_MIN == (int)FL_BIN_MIN &&
                   FL_CU_BIN_COUNT == (int)FL_BIN_COUNT,
               "FL_CU_BIN_* must equal fl_binop");

/* cuda_impl (be->impl) is in cuda_priv.h, shared with cuda_nn.c. */

static cuda_impl *impl_of(fl_backend *be) { return (cuda_impl *)be->impl; }

/* Records a failed fl_cu_* call as "cuda:<dev> <op>: <call>: <CUDA error text>". */
static fl_status cu_fail(fl_backend *be, int rc, const char *op, const char *msg, fl_error *err)
{
    return fl_error_set(err, rc == FL_CU_E_NOMEM ? FL_E_NOMEM : FL_E_DEVICE, "cuda:%d %s: %s",
                        impl_of(be)->device, op, msg);
}

/* Every op starts here: the backend's GPU becomes current, so backends on different GPUs
 * can be used in turn from one thread. */
static fl_status enter(fl_backend *be, const char *op, fl_error *err)
{
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_set_device(impl_of(be)->device, msg);
    return rc ? cu_fail(be, rc, op, msg, err) : FL_OK;
}

static bool on_cuda(const fl_tensor *t) { return fl_tensor_device(t).kind == FL_DEVICE_CUDA; }

/* ------------------------------------------------------------------ layouts */

/* The kernel layout of nops views of one shape: size-1 dims dropped, then neighbouring
 * dims merged wherever every operand steps through the pair as through one dim (so dense
 * and broadcast patterns collapse to one or two dims). False when the shape is empty. */
static bool make_layout(fl_cu_layout *l, int ndim, const int64_t *shape, int nops,
                        const int64_t *const *strides)
{
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    if (numel == 0)
        return false;
    memset(l, 0, sizeof *l);
    l->numel = numel;
    int n = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] == 1)
            continue;
        bool merge = n > 0;
        for (int k = 0; k < nops && merge; k++)
            merge = l->stride[k][n - 1] == strides[k][i] * shape[i];
        if (merge) {
            l->shape[n - 1] *= shape[i];
            for (int k = 0; k < nops; k++)
                l->stride[k][n - 1] = strides[k][i];
        } else {
            l->shape[n] = shape[i];
            for (int k = 0; k < nops; k++)
                l->stride[k][n] = strides[k][i];
            n++;
        }
    }
    if (n == 0) { /* a single element */
        l->shape[0] = 1;
        for (int k = 0; k < nops; k++)
            l->stride[k][0] = 1;
        n = 1;
    }
    l->ndim = n;
    return true;
}

/* Host-side strided copy of raw elements (same dtype): dst and src described by a
 * two-operand layout (operand 0 = dst). Used to stage non-contiguous host views. */
static void host_strided_copy(char *dst, const char *src, const fl_cu_layout *l, size_t es)
{
    int64_t idx[FL_MAX_DIMS] = { 0 };
    int nd = l->ndim;
    int64_t inner = l->shape[nd - 1], ds = l->stride[0][nd - 1], ss = l->stride[1][nd - 1];
    int64_t outer = l->numel / inner;
    for (int64_t o = 0; o < outer; o++) {
        int64_t doff = 0, soff = 0;
        for (int d = 0; d < nd - 1; d++) {
            doff += idx[d] * l->stride[0][d];
            soff += idx[d] * l->stride[1][d];
        }
        for (int64_t i = 0; i < inner; i++)
            memcpy(dst + (size_t)(doff + i * ds) * es, src + (size_t)(soff + i * ss) * es, es);
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < l->shape[d])
                break;
            idx[d] = 0;
        }
    }
}

/* ------------------------------------------------------------------ storage */

/* A storage's block goes back to the pool it came from (which it keeps alive). */
static void release_device_memory(void *ud, void *data, size_t nbytes)
{
    fl_cuda_pool_put((cuda_pool *)ud, data, nbytes);
}

static fl_status cu_storage_new(fl_backend *be, size_t nbytes, fl_storage **out, fl_error *err)
{
    cuda_impl *im = impl_of(be);
    int dev = im->device;
    char msg[FL_CU_MSG_MAX];
    void *p = NULL;
    *out = NULL;
    int rc = fl_cuda_pool_get(im->pool, nbytes, &p, msg);
    if (rc)
        return fl_error_set(err, rc == FL_CU_E_NOMEM ? FL_E_NOMEM : FL_E_DEVICE,
                            "cuda:%d: cannot allocate %zu bytes of device memory: %s", dev, nbytes, msg);
    fl_device d = { FL_DEVICE_CUDA, dev };
    fl_storage *s = fl_storage_wrap(be->alloc, p, nbytes, d, release_device_memory, im->pool);
    if (!s) {
        fl_cuda_pool_put(im->pool, p, nbytes);
        return fl_error_set(err, FL_E_NOMEM, "cuda:%d: out of host memory for a storage record", dev);
    }
    *out = s;
    return FL_OK;
}

/* ------------------------------------------------------------------ copy */

/* Device-to-device copy between two views of one shape (dtype conversion included). */
static fl_status dev_copy(fl_backend *be, const char *op, int ndim, const int64_t *shape, void *d,
                          fl_dtype dt, const int64_t *dstride, const void *s, fl_dtype sdt,
                          const int64_t *sstride, fl_error *err)
{
    fl_cu_layout l;
    const int64_t *strides[2] = { dstride, sstride };
    char msg[FL_CU_MSG_MAX];
    if (!make_layout(&l, ndim, shape, 2, strides))
        return FL_OK;
    if (dt == sdt && d == s)
        return FL_OK; /* onto itself: ops.c lets an overlapping dst through only as src's own view */
    int rc;
    if (dt == sdt && fl_cu_layout_dense(&l, 2))
        rc = fl_cu_memcpy(d, s, (size_t)l.numel * fl_dtype_size(dt), FL_CU_D2D, msg);
    else
        rc = fl_cu_copy(&l, d, dt, s, sdt, msg);
    return rc ? cu_fail(be, rc, op, msg, err) : FL_OK;
}

/* A contiguous device copy of host tensor src (src's dtype) in new scratch *out. */
static fl_status upload(fl_backend *be, const char *op, const fl_tensor *src, void **out, fl_error *err)
{
    cuda_impl *im = impl_of(be);
    size_t es = fl_dtype_size(src->dtype), n = (size_t)fl_tensor_numel(src), nbytes = n * es;
    char msg[FL_CU_MSG_MAX];
    const void *host = fl_tensor_data(src);
    void *staging = NULL;
    *out = NULL;
    if (!fl_tensor_is_contiguous(src)) {
        staging = fl_alloc(be->alloc, nbytes);
        if (!staging)
            return fl_error_set(err, FL_E_NOMEM, "cuda:%d %s: cannot stage %zu bytes on the host",
                                im->device, op, nbytes);
        int64_t cstride[FL_MAX_DIMS];
        const int64_t *strides[2] = { cstride, src->stride };
        fl_cu_layout l;
        fl_contiguous_strides(src->ndim, src->shape, cstride);
        if (make_layout(&l, src->ndim, src->shape, 2, strides))
            host_strided_copy(staging, host, &l, es);
        host = staging;
    }
    int rc = fl_cu_scratch_alloc(im->async_alloc, nbytes, out, msg);
    if (!rc && (rc = fl_cu_memcpy(*out, host, nbytes, FL_CU_H2D, msg))) {
        fl_cu_scratch_free(im->async_alloc, *out);
        *out = NULL;
    }
    fl_free(be->alloc, staging, nbytes);
    return rc ? cu_fail(be, rc, op, msg, err) : FL_OK;
}

/* Host dst = device values at s (dtype sdt, strides sstride, dst's shape). Conversion and
 * gathering happen on the device; scattering into a strided host view on the host. */
static fl_status download(fl_backend *be, const char *op, fl_tensor *dst, const void *s,
                          fl_dtype sdt, const int64_t *sstride, bool s_contiguous, fl_error *err)
{
    cuda_impl *im = impl_of(be);
    size_t es = fl_dtype_size(dst->dtype), n = (size_t)fl_tensor_numel(dst), nbytes = n * es;
    char msg[FL_CU_MSG_MAX];
    void *conv = NULL, *staging = NULL;
    const void *dbuf = s;
    fl_status st = FL_OK;
    int rc = FL_CU_OK;
    if (!(s_contiguous && sdt == dst->dtype)) {
        int64_t cstride[FL_MAX_DIMS];
        fl_contiguous_strides(dst->ndim, dst->shape, cstride);
        if ((rc = fl_cu_scratch_alloc(im->async_alloc, nbytes, &conv, msg)))
            goto out;
        if ((st = dev_copy(be, op, dst->ndim, dst->shape, conv, dst->dtype, cstride, s, sdt, sstride, err)))
            goto out;
        dbuf = conv;
    }
    if (fl_tensor_is_contiguous(dst)) {
        rc = fl_cu_memcpy(fl_tensor_data(dst), dbuf, nbytes, FL_CU_D2H, msg);
    } else {
        staging = fl_alloc(be->alloc, nbytes);
        if (!staging) {
            st = fl_error_set(err, FL_E_NOMEM, "cuda:%d %s: cannot stage %zu bytes on the host",
                              im->device, op, nbytes);
            goto out;
        }
        if (!(rc = fl_cu_memcpy(staging, dbuf, nbytes, FL_CU_D2H, msg))) {
            int64_t cstride[FL_MAX_DIMS];
            const int64_t *strides[2] = { dst->stride, cstride };
            fl_cu_layout l;
            fl_contiguous_strides(dst->ndim, dst->shape, cstride);
            if (make_layout(&l, dst->ndim, dst->shape, 2, strides))
                host_strided_copy(fl_tensor_data(dst), staging, &l, es);
        }
    }
out:
    if (rc && !st)
        st = cu_fail(be, rc, op, msg, err);
    fl_free(be->alloc, staging, nbytes);
    fl_cu_scratch_free(im->async_alloc, conv);
    return st;
}

static fl_status cu_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err)
{
    const char *op = "copy";
    cuda_impl *im = impl_of(be);
    fl_status st;
    bool ddev = on_cuda(dst), sdev = on_cuda(src);
    if ((ddev && fl_tensor_device(dst).index != im->device) ||
        (sdev && fl_tensor_device(src).index != im->device))
        return fl_error_set(err, FL_E_DEVICE, "cuda:%d copy: %s is on cuda:%d", im->device,
                            (ddev && fl_tensor_device(dst).index != im->device) ? "dst" : "src",
                            (ddev && fl_tensor_device(dst).index != im->device)
                                ? fl_tensor_device(dst).index
                                : fl_tensor_device(src).index);
    if (fl_tensor_numel(dst) == 0)
        return FL_OK;
    if ((st = enter(be, op, err)))
        return st;
    if (ddev && sdev)
        return dev_copy(be, op, dst->ndim, dst->shape, fl_tensor_data(dst), dst->dtype, dst->stride,
                        fl_tensor_data(src), src->dtype, src->stride, err);
    size_t nbytes = fl_tensor_nbytes(src);
    char msg[FL_CU_MSG_MAX];
    if (ddev && src->dtype == dst->dtype && fl_tensor_is_contiguous(src) && fl_tensor_is_contiguous(dst)) {
        int rc = fl_cu_memcpy(fl_tensor_data(dst), fl_tensor_data(src), nbytes, FL_CU_H2D, msg);
        return rc ? cu_fail(be, rc, op, msg, err) : FL_OK;
    }
    if (sdev) /* device to host */
        return download(be, op, dst, fl_tensor_data(src), src->dtype, src->stride,
                        fl_tensor_is_contiguous(src), err);
    /* from the host: a contiguous upload of src, then a device copy to dst's layout (or,
     * for a host dst, a download that converts and scatters) */
    void *up = NULL;
    int64_t cstride[FL_MAX_DIMS];
    fl_contiguous_strides(src->ndim, src->shape, cstride);
    if ((st = upload(be, op, src, &up, err)))
        return st;
    if (ddev)
        st = dev_copy(be, op, dst->ndim, dst->shape, fl_tensor_data(dst), dst->dtype, dst->stride, up,
                      src->dtype, cstride, err);
    else
        st = download(be, op, dst, up, src->dtype, cstride, true, err);
    fl_cu_scratch_free(im->async_alloc, up);
    return st;
}

/* ------------------------------------------------------------------ fill, unary, binary */

static fl_status cu_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err)
{
    const char *op = "fill";
    union {
        double align;
        unsigned char bytes[16];
    } pattern;
    const int64_t *strides[1] = { dst->stride };
    fl_cu_layout l;
    char msg[FL_CU_MSG_MAX];
    fl_status st;
    if (!make_layout(&l, dst->ndim, dst->shape, 1, strides))
        return FL_OK;
    if ((st = enter(be, op, err)))
        return st;
    memset(&pattern, 0, sizeof pattern);
    fl_dtype_store(dst->dtype, pattern.bytes, 0, value); /* the CPU's rounding, once */
    int rc = fl_cu_fill(&l, fl_tensor_data(dst), fl_dtype_size(dst->dtype), pattern.bytes, msg);
    return rc ? cu_fail(be, rc, op, msg, err) : FL_OK;
}

static fl_status cu_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in, double a,
                          double b, fl_error *err)
{
    static const char *const names[FL_UN_COUNT] = { "neg", "abs", "square", "sqrt", "exp", "log", "affine" };
    const char *name = (unsigned)op < FL_UN_COUNT ? names[op] : "unary";
    const int64_t *strides[2] = { out->stride, in->stride };
    fl_cu_layout l;
    char msg[FL_CU_MSG_MAX];
    fl_status st;
    if (!make_layout(&l, out->ndim, out->shape, 2, strides))
        return FL_OK;
    if ((st = enter(be, name, err)))
        return st;
    int rc = fl_cu_unary((int)op, out->dtype, &l, fl_tensor_data(out), fl_tensor_data(in), a, b, msg);
    return rc ? cu_fail(be, rc, name, msg, err) : FL_OK;
}

static fl_status cu_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                           const fl_tensor *b, fl_error *err)
{
    static const char *const names[FL_BIN_COUNT] = { "add", "sub", "mul", "div", "max", "min" };
    const char *name = (unsigned)op < FL_BIN_COUNT ? names[op] : "binary";
    const int64_t *strides[3] = { out->stride, a->stride, b->stride };
    fl_cu_layout l;
    char msg[FL_CU_MSG_MAX];
    fl_status st;
    if (!make_layout(&l, out->ndim, out->shape, 3, strides))
        return FL_OK;
    if ((st = enter(be, name, err)))
        return st;
    int rc = fl_cu_binary((int)op, out->dtype, &l, fl_tensor_data(out), fl_tensor_data(a),
                         fl_tensor_data(b), msg);
    return rc ? cu_fail(be, rc, name, msg, err) : FL_OK;
}

/* ------------------------------------------------------------------ matmul */

/* One matmul operand as cuBLAS will see it: a device address and strides, possibly of a
 * contiguous staging copy this op owns. */
typedef struct operand {
    char *ptr;
    int64_t stride[FL_MAX_DIMS];
    void *scratch;
} operand;

/* How the rows x cols matrix in the last two dims lies in memory for cuBLAS (column-
 * major): row-major (its transpose is a column-major matrix with leading dimension ld)
 * or column-major. False when neither fits (broadcast rows, both strides non-unit, or an
 * ld beyond int), and the operand must be staged. Mirrors ops/cpu/blas.c. */
static bool mat_layout(const int64_t *stride, int nd, int64_t rows, int64_t cols, bool *rowmajor,
                       int64_t *ld)
{
    int64_t rs = stride[nd - 2], cs = stride[nd - 1];
    if (cols == 1)
        cs = 1; /* a size-1 dim's stride is never used */
    if (rows == 1)
        rs = cols;
    if (cs == 1 && rs >= (cols > 1 ? cols : 1)) {
        *rowmajor = true;
        *ld = rs;
    } else if (rs == 1 && cs >= (rows > 1 ? rows : 1)) {
        *rowmajor = false;
        *ld = cs;
    } else {
        return false;
    }
    return *ld <= INT_MAX;
}

/* The single stride s with offset(batch item i) == i * s over the flattened batch dims
 * (0 when every batch dim broadcasts), if there is one. */
static bool batch_stride(const int64_t *stride, int nb, const int64_t *bshape, int64_t *out)
{
    int64_t s = 0, span = 0;
    for (int i = nb - 1; i >= 0; i--) {
        if (bshape[i] == 1)
            continue;
        if (span == 0) {
            s = stride[i];
            span = bshape[i];
        } else {
            if (stride[i] != s * span)
                return false;
            span *= bshape[i];
        }
    }
    *out = s;
    return true;
}

static int64_t batch_offset(const int64_t *stride, int nb, const int64_t *bshape, int64_t item)
{
    int64_t off = 0;
    for (int i = nb - 1; i >= 0; i--) {
        off += (item % bshape[i]) * stride[i];
        item /= bshape[i];
    }
    return off;
}

/* A contiguous device copy of t with row-major inner dims, filled with t's values when
 * `fill`. With keep_broadcast, batch dims that t broadcasts (stride 0) stay broadcast, so
 * an operand shared by the whole batch is copied once. */
static fl_status stage_operand(fl_backend *be, const char *op, const fl_tensor *t, bool keep_broadcast,
                               bool fill, operand *o, fl_error *err)
{
    cuda_impl *im = impl_of(be);
    int nd = t->ndim;
    int64_t cshape[FL_MAX_DIMS] = { 0 }, cstride[FL_MAX_DIMS] = { 0 }, n = 1;
    char msg[FL_CU_MSG_MAX];
    for (int i = 0; i < nd; i++) {
        cshape[i] = keep_broadcast && i < nd - 2 && t->stride[i] == 0 ? 1 : t->shape[i];
        n *= cshape[i];
    }
    fl_contiguous_strides(nd, cshape, cstride);
    int rc = fl_cu_scratch_alloc(im->async_alloc, (size_t)n * fl_dtype_size(t->dtype), &o->scratch, msg);
    if (rc)
        return cu_fail(be, rc, op, msg, err);
    o->ptr = o->scratch;
    for (int i = 0; i < nd; i++)
        o->stride[i] = cshape[i] == 1 && t->shape[i] != 1 ? 0 : cstride[i];
    if (!fill)
        return FL_OK;
    return dev_copy(be, op, nd, cshape, o->ptr, t->dtype, cstride, fl_tensor_data(t), t->dtype,
                    t->stride, err);
}

static fl_status cu_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                           double alpha, double beta, fl_error *err)
{
    const char *op = "matmul";
    cuda_impl *im = impl_of(be);
    int nd = c->ndim, nb = nd - 2;
    int64_t M = c->shape[nd - 2], N = c->shape[nd - 1], K = a->shape[nd - 1];
    int64_t batches = 1;
    for (int i = 0; i < nb; i++)
        batches *= c->shape[i];
    if (M == 0 || N == 0 || batches == 0)
        return FL_OK;
    fl_status st = enter(be, op, err);
    if (st)
        return st;
    if (K == 0) { /* c = beta c, and beta == 0 must not read c */
        const int64_t *strides[2] = { c->stride, c->stride };
        fl_cu_layout l;
        char msg[FL_CU_MSG_MAX];
        make_layout(&l, nd, c->shape, 2, strides);
        int rc = beta == 0.0 ? fl_cu_fill(&l, fl_tensor_data(c), fl_dtype_size(c->dtype),
                                         &(double[2]){ 0.0, 0.0 }, msg)
                             : fl_cu_unary(FL_CU_UN_AFFINE, c->dtype, &l, fl_tensor_data(c),
                                          fl_tensor_data(c), beta, 0.0, msg);
        return rc ? cu_fail(be, rc, op, msg, err) : FL_OK;
    }
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return fl_error_set(err, FL_E_RANGE,
                            "cuda:%d matmul: M=%lld N=%lld K=%lld exceed cuBLAS's int dimensions",
                            im->device, (long long)M, (long long)N, (long long)K);

    size_t es = fl_dtype_size(c->dtype);
    operand oa = { fl_tensor_data(a), { 0 }, NULL }, ob = { fl_tensor_data(b), { 0 }, NULL },
            oc = { fl_tensor_data(c), { 0 }, NULL };
    memcpy(oa.stride, a->stride, sizeof oa.stride);
    memcpy(ob.stride, b->stride, sizeof ob.stride);
    memcpy(oc.stride, c->stride, sizeof oc.stride);
    bool rm_a = true, rm_b = true, rm_c = true;
    int64_t lda = 1, ldb = 1, ldc = 1;
    char msg[FL_CU_MSG_MAX];
    int rc = FL_CU_OK;

    if (!mat_layout(a->stride, nd, M, K, &rm_a, &lda)) {
        if ((st = stage_operand(be, op, a, true, true, &oa, err)))
            goto out;
        bool staged_ok = mat_layout(oa.stride, nd, M, K, &rm_a, &lda);
        FL_ASSERT(staged_ok); /* a staged operand is row-major with ld = cols */
    }
    if (!mat_layout(b->stride, nd, K, N, &rm_b, &ldb)) {
        if ((st = stage_operand(be, op, b, true, true, &ob, err)))
            goto out;
        bool staged_ok = mat_layout(ob.stride, nd, K, N, &rm_b, &ldb);
        FL_ASSERT(staged_ok); /* a staged operand is row-major with ld = cols */
    }
    if (!mat_layout(c->stride, nd, M, N, &rm_c, &ldc)) {
        /* compute into a contiguous copy (which beta == 0 must not read), then scatter back */
        if ((st = stage_operand(be, op, c, false, beta != 0.0, &oc, err)))
            goto out;
        bool staged_ok = mat_layout(oc.stride, nd, M, N, &rm_c, &ldc);
        FL_ASSERT(staged_ok); /* a staged operand is row-major with ld = cols */
    }

    /* Row-major C (the usual case) is a column-major C^T: compute C^T = B^T A^T, where
     * a row-major operand is already its own transpose in column-major terms. A
     * column-major C (a transposed view) is computed as C = A B directly. */
    fl_cu_gemm_args g;
    memset(&g, 0, sizeof g);
    const int64_t *sa, *sb;
    const char *pa, *pb;
    if (rm_c) {
        g.m = N;
        g.n = M;
        g.trans_a = !rm_b;
        g.lda = ldb;
        g.trans_b = !rm_a;
        g.ldb = lda;
        pa = ob.ptr, sa = ob.stride;
        pb = oa.ptr, sb = oa.stride;
    } else {
        g.m = M;
        g.n = N;
        g.trans_a = rm_a;
        g.lda = lda;
        g.trans_b = rm_b;
        g.ldb = ldb;
        pa = oa.ptr, sa = oa.stride;
        pb = ob.ptr, sb = ob.stride;
    }
    g.k = K;
    g.ldc = ldc;
    g.alpha = alpha;
    g.beta = beta;
    int64_t bsa, bsb, bsc;
    if (batch_stride(sa, nb, c->shape, &bsa) && batch_stride(sb, nb, c->shape, &bsb) &&
        batch_stride(oc.stride, nb, c->shape, &bsc)) {
        g.a = pa, g.stride_a = bsa;
        g.b = pb, g.stride_b = bsb;
        g.c = oc.ptr, g.stride_c = bsc;
        g.batch = batches;
        rc = fl_cu_gemm(im->blas, c->dtype, &g, msg);
    } else { /* batch dims that no single stride describes: one GEMM per item */
        g.batch = 1;
        for (int64_t i = 0; i < batches && !rc; i++) {
            g.a = pa + (size_t)batch_offset(sa, nb, c->shape, i) * es;
            g.b = pb + (size_t)batch_offset(sb, nb, c->shape, i) * es;
            g.c = oc.ptr + (size_t)batch_offset(oc.stride, nb, c->shape, i) * es;
            rc = fl_cu_gemm(im->blas, c->dtype, &g, msg);
        }
    }
    if (rc)
        goto out;
    if (oc.scratch)
        st = dev_copy(be, op, nd, c->shape, fl_tensor_data(c), c->dtype, c->stride, oc.ptr, c->dtype,
                      oc.stride, err);
out:
    if (rc && !st)
        st = cu_fail(be, rc, op, msg, err);
    fl_cu_scratch_free(im->async_alloc, oa.scratch);
    fl_cu_scratch_free(im->async_alloc, ob.scratch);
    fl_cu_scratch_free(im->async_alloc, oc.scratch);
    return st;
}

/* ------------------------------------------------------------------ for cuda_nn.c */

fl_status fl_cuda_enter(fl_backend *be, const char *op, fl_error *err) { return enter(be, op, err); }

fl_status fl_cuda_fail(fl_backend *be, int rc, const char *op, const char *msg, fl_error *err)
{
    return cu_fail(be, rc, op, msg, err);
}

bool fl_cuda_layout(fl_cu_layout *l, int ndim, const int64_t *shape, int nops, const int64_t *const *strides)
{
    return make_layout(l, ndim, shape, nops, strides);
}

fl_status fl_cuda_dev_copy(fl_backend *be, const char *op, int ndim, const int64_t *shape, void *d, fl_dtype dt,
                           const int64_t *dstride, const void *s, fl_dtype sdt, const int64_t *sstride,
                           fl_error *err)
{
    return dev_copy(be, op, ndim, shape, d, dt, dstride, s, sdt, sstride, err);
}

/* ------------------------------------------------------------------ backend */

static void cu_destroy(fl_backend *be)
{
    cuda_impl *im = impl_of(be);
    if (!im)
        return;
    fl_cu_blas_destroy(im->device, im->blas);
    fl_cuda_pool_unref(im->pool); /* live storages keep it until they go */
    fl_free(be->alloc, im, sizeof *im);
    be->impl = NULL;
}

static const fl_backend_vtable cuda_vtable = {
    .name = "cuda",
    .storage_new = cu_storage_new,
    .copy = cu_copy,
    .fill = cu_fill,
    .unary = cu_unary,
    .binary = cu_binary,
    .reduce = NULL,
    .softmax = NULL,
    .matmul = cu_matmul,
    .eigh = NULL,
    .cholesky = NULL,
    .cholesky_solve = NULL,
    .solve = NULL,
    .fft = NULL,
    .linear = fl_cuda_linear,
    .conv2d = fl_cuda_conv2d,
    .conv1d = fl_cuda_conv1d,
    .group_norm = fl_cuda_group_norm,
    .layer_norm = fl_cuda_layer_norm,
    .rms_norm = fl_cuda_rms_norm,
    .activation = fl_cuda_activation,
    .attention = fl_cuda_attention,
    .timestep_embedding = fl_cuda_timestep_embedding,
    .upsample_nearest = fl_cuda_upsample_nearest,
    .modulate = fl_cuda_modulate,
    .gate_add = fl_cuda_gate_add,
    .rope = fl_cuda_rope,
    .destroy = cu_destroy,
};

int fl_cuda_device_count(void) { return fl_cu_device_count(); }

fl_status fl_cuda_backend_init(fl_backend *be, int device, fl_error *err)
{
    char msg[FL_CU_MSG_MAX];
    int count = 0;
    if (fl_cu_device_count_msg(&count, msg))
        return fl_error_set(err, FL_E_DEVICE, "cuda: cannot use device %d: no usable CUDA driver or GPU (%s)",
                            device, msg);
    if (device < 0 || device >= count)
        return fl_error_set(err, FL_E_DEVICE,
                            "cuda: device index %d is out of range (this machine has %d CUDA device%s)",
                            device, count, count == 1 ? "" : "s");
    cuda_impl *im = fl_alloc(be->alloc, sizeof *im);
    if (!im)
        return fl_error_set(err, FL_E_NOMEM, "cuda: out of host memory for the backend of device %d", device);
    memset(im, 0, sizeof *im);
    im->device = device;
    const char *tf32 = getenv("FL_CUDA_TF32");
    im->tf32 = tf32 && strcmp(tf32, "1") == 0;
    fl_status st = fl_cuda_pool_new(be->alloc, device, &im->pool, err);
    if (st) {
        fl_free(be->alloc, im, sizeof *im);
        return st;
    }
    int rc = fl_cu_device_open(device, &im->async_alloc, msg);
    if (!rc)
        rc = fl_cu_blas_create(device, &im->blas, msg);
    if (rc) {
        fl_cuda_pool_unref(im->pool);
        fl_free(be->alloc, im, sizeof *im);
        return fl_error_set(err, rc == FL_CU_E_NOMEM ? FL_E_NOMEM : FL_E_DEVICE,
                            "cuda: cannot open device %d: %s", device, msg);
    }
    be->vt = &cuda_vtable;
    be->impl = im;
    be->device.kind = FL_DEVICE_CUDA;
    be->device.index = device;
    return FL_OK;
}

#else
/* Built without CUDA: ops.c never asks for this backend. ISO C wants a declaration. */
typedef int fl_cuda_backend_absent;
#endif
