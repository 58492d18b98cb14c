/* Tensor metadata, storage reference counting and views. No arithmetic lives here:
 * that is ops/. */
#include "tensor.h"

#include <stdio.h>
#include <string.h>

const char *fl_device_name(fl_device d)
{
    switch (d.kind) {
    case FL_DEVICE_CPU: return "cpu";
    case FL_DEVICE_CUDA: return "cuda";
    }
    return "unknown";
}

fl_storage *fl_storage_wrap(const fl_allocator *alloc, void *data, size_t nbytes, fl_device dev,
                            void (*release)(void *ud, void *data, size_t nbytes), void *release_ud)
{
    if (!alloc)
        alloc = fl_allocator_default();
    fl_storage *s = fl_alloc(alloc, sizeof *s);
    if (!s)
        return NULL;
    atomic_init(&s->refcount, 1);
    s->data = data;
    s->nbytes = nbytes;
    s->device = dev;
    s->release = release;
    s->release_ud = release_ud;
    s->alloc = alloc;
    return s;
}

static void release_cpu(void *ud, void *data, size_t nbytes) { fl_free(ud, data, nbytes); }

fl_storage *fl_storage_new_cpu(const fl_allocator *alloc, size_t nbytes)
{
    if (!alloc)
        alloc = fl_allocator_default();
    void *data = fl_alloc(alloc, nbytes);
    if (!data)
        return NULL;
    fl_device cpu = { FL_DEVICE_CPU, 0 };
    fl_storage *s = fl_storage_wrap(alloc, data, nbytes, cpu, release_cpu, (void *)alloc);
    if (!s)
        fl_free(alloc, data, nbytes);
    return s;
}

void fl_storage_retain(fl_storage *s)
{
    FL_ASSERT(s);
    atomic_fetch_add_explicit(&s->refcount, 1, memory_order_relaxed);
}

void fl_storage_release(fl_storage *s)
{
    if (!s)
        return;
    long prev = atomic_fetch_sub_explicit(&s->refcount, 1, memory_order_acq_rel);
    FL_ASSERT(prev > 0);
    if (prev != 1)
        return;
    if (s->release)
        s->release(s->release_ud, s->data, s->nbytes);
    fl_free(s->alloc, s, sizeof *s);
}

void fl_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

const char *fl_tensor_describe(const fl_tensor *t, char *buf, size_t n)
{
    size_t used = 0;
    if (n == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, n - used, "[");
    for (int i = 0; i < t->ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (used < n)
        snprintf(buf + used, n - used, "] %s", fl_dtype_name(t->dtype));
    return buf;
}

static fl_status check_dtype(fl_dtype dtype, fl_error *err)
{
    if (!fl_dtype_size(dtype))
        return fl_error_set(err, FL_E_DTYPE, "invalid dtype value %d", (int)dtype);
    return FL_OK;
}

static fl_status check_shape(int ndim, const int64_t *shape, size_t elsize, int64_t *numel,
                             fl_error *err)
{
    if (ndim < 0 || ndim > FL_MAX_DIMS)
        return fl_error_set(err, FL_E_SHAPE, "tensor rank %d is outside 0..%d", ndim, FL_MAX_DIMS);
    /* The product of the non-zero dims must fit whatever the order of the dims: the
     * strides are built from it even when a zero dim makes the tensor empty. */
    int64_t n = 1;
    int empty = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return fl_error_set(err, FL_E_SHAPE, "tensor dim %d has negative size %lld", i,
                                (long long)shape[i]);
        if (!shape[i])
            empty = 1;
        else if (__builtin_mul_overflow(n, shape[i], &n))
            return fl_error_set(err, FL_E_RANGE, "tensor element count overflows at dim %d", i);
    }
    int64_t bytes;
    if (__builtin_mul_overflow(n, (int64_t)elsize, &bytes))
        return fl_error_set(err, FL_E_RANGE, "tensor of %lld elements overflows size_t", (long long)n);
    *numel = empty ? 0 : n;
    return FL_OK;
}


fl_status fl_shape_nbytes(fl_dtype dtype, int ndim, const int64_t *shape, size_t *nbytes,
                          fl_error *err)
{
    int64_t numel;
    fl_status st = check_dtype(dtype, err);
    if (st || (st = check_shape(ndim, shape, fl_dtype_size(dtype), &numel, err)))
        return st;
    *nbytes = (size_t)numel * fl_dtype_size(dtype);
    return FL_OK;
}

fl_status fl_tensor_empty(fl_tensor *out, fl_dtype dtype, int ndim, const int64_t *shape,
                          const fl_allocator *alloc, fl_error *err)
{
    size_t nbytes;
    fl_status st = fl_shape_nbytes(dtype, ndim, shape, &nbytes, err);
    if (st)
        return st;
    fl_storage *s = fl_storage_new_cpu(alloc, nbytes);
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "cannot allocate a tensor of %zu bytes", nbytes);
    fl_tensor t = FL_TENSOR_NULL;
    t.storage = s;
    t.dtype = dtype;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t.shape[i] = shape[i];
    fl_contiguous_strides(ndim, shape, t.stride);
    *out = t;
    return FL_OK;
}

fl_status fl_tensor_zeros(fl_tensor *out, fl_dtype dtype, int ndim, const int64_t *shape,
                          const fl_allocator *alloc, fl_error *err)
{
    fl_status st = fl_tensor_empty(out, dtype, ndim, shape, alloc, err);
    if (!st)
        memset(out->storage->data, 0, out->storage->nbytes);
    return st;
}

/* The largest element offset a view reaches, -1 for an empty view, or INT64_MAX when
 * that does not fit in int64 (strides and offset come from the caller). */
static int64_t max_offset(const fl_tensor *t)
{
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0)
            return -1;
    int64_t m = t->offset, step;
    for (int i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(t->shape[i] - 1, t->stride[i], &step) ||
            __builtin_add_overflow(m, step, &m))
            return INT64_MAX;
    return m;
}

fl_status fl_tensor_from_storage(fl_tensor *out, fl_storage *storage, fl_dtype dtype, int ndim,
                                 const int64_t *shape, const int64_t *stride, int64_t offset,
                                 fl_error *err)
{
    int64_t numel;
    fl_status st = check_dtype(dtype, err);
    if (st || (st = check_shape(ndim, shape, fl_dtype_size(dtype), &numel, err)))
        return st;
    fl_tensor t = FL_TENSOR_NULL;
    t.storage = storage;
    t.dtype = dtype;
    t.ndim = ndim;
    t.offset = offset;
    for (int i = 0; i < ndim; i++)
        t.shape[i] = shape[i];
    if (stride) {
        for (int i = 0; i < ndim; i++) {
            if (stride[i] < 0)
                return fl_error_set(err, FL_E_SHAPE, "tensor dim %d has negative stride %lld", i,
                                    (long long)stride[i]);
            t.stride[i] = stride[i];
        }
    } else {
        fl_contiguous_strides(ndim, shape, t.stride);
    }
    if (offset < 0)
        return fl_error_set(err, FL_E_RANGE, "tensor offset %lld is negative", (long long)offset);
    int64_t last = max_offset(&t);
    size_t elsize = fl_dtype_size(dtype);
    if (last >= 0 && (uint64_t)last >= storage->nbytes / elsize) {
        char d[96];
        return fl_error_set(err, FL_E_RANGE,
                            "tensor %s at offset %lld reaches element %lld of a storage holding %zu",
                            fl_tensor_describe(&t, d, sizeof d), (long long)offset,
                            (long long)last, storage->nbytes / elsize);
    }
    fl_storage_retain(storage);
    *out = t;
    return FL_OK;
}

void fl_tensor_retain(fl_tensor *dst, const fl_tensor *src)
{
    if (src->storage)
        fl_storage_retain(src->storage);
    *dst = *src;
}

void fl_tensor_release(fl_tensor *t)
{
    if (!t)
        return;
    fl_storage_release(t->storage);
    *t = FL_TENSOR_NULL;
}

/* Hands a finished view to dst, carrying the reference over when dst aliases src. */
static fl_status emit_view(fl_tensor *dst, const fl_tensor *src, const fl_tensor *view)
{
    if (dst != src && view->storage)
        fl_storage_retain(view->storage);
    *dst = *view;
    return FL_OK;
}

static fl_status check_dim(const fl_tensor *t, int dim, const char *op, fl_error *err)
{
    if (dim < 0 || dim >= t->ndim)
        return fl_error_set(err, FL_E_RANGE, "%s: dim %d is outside 0..%d of a %d-d tensor", op,
                            dim, t->ndim - 1, t->ndim);
    return FL_OK;
}

fl_status fl_tensor_narrow(fl_tensor *dst, const fl_tensor *src, int dim, int64_t start,
                           int64_t length, fl_error *err)
{
    fl_status st = check_dim(src, dim, "narrow", err);
    if (st)
        return st;
    if (start < 0 || length < 0 || start > src->shape[dim] || length > src->shape[dim] - start)
        return fl_error_set(err, FL_E_RANGE,
                            "narrow: start %lld, length %lld is outside dim %d of size %lld",
                            (long long)start, (long long)length, dim, (long long)src->shape[dim]);
    fl_tensor v = *src;
    v.offset += start * src->stride[dim];
    v.shape[dim] = length;
    return emit_view(dst, src, &v);
}

fl_status fl_tensor_slice(fl_tensor *dst, const fl_tensor *src, int dim, int64_t start,
                          int64_t stop, int64_t step, fl_error *err)
{
    fl_status st = check_dim(src, dim, "slice", err);
    if (st)
        return st;
    if (step < 1)
        return fl_error_set(err, FL_E_INVALID, "slice: step %lld must be >= 1", (long long)step);
    int64_t n = src->shape[dim];
    if (start < 0)
        start += n;
    if (stop < 0)
        stop += n;
    start = start < 0 ? 0 : start > n ? n : start;
    stop = stop < start ? start : stop > n ? n : stop;
    fl_tensor v = *src;
    v.offset += start * src->stride[dim];
    v.shape[dim] = stop > start ? (stop - start - 1) / step + 1 : 0; /* step may be huge */
    if (v.shape[dim] > 1) /* else the stride is never used, and stride * step may overflow */
        v.stride[dim] = src->stride[dim] * step;
    return emit_view(dst, src, &v);
}

fl_status fl_tensor_select(fl_tensor *dst, const fl_tensor *src, int dim, int64_t index,
                           fl_error *err)
{
    fl_status st = check_dim(src, dim, "select", err);
    if (st)
        return st;
    if (index < 0 || index >= src->shape[dim])
        return fl_error_set(err, FL_E_RANGE, "select: index %lld is outside dim %d of size %lld",
                            (long long)index, dim, (long long)src->shape[dim]);
    fl_tensor v = *src;
    v.offset += index * src->stride[dim];
    for (int i = dim; i < src->ndim - 1; i++) {
        v.shape[i] = src->shape[i + 1];
        v.stride[i] = src->stride[i + 1];
    }
    v.ndim--;
    v.shape[v.ndim] = 0;
    v.stride[v.ndim] = 0;
    return emit_view(dst, src, &v);
}

fl_status fl_tensor_permute(fl_tensor *dst, const fl_tensor *src, const int *perm, fl_error *err)
{
    int seen = 0;
    for (int i = 0; i < src->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= src->ndim || (seen & (1 << perm[i])))
            return fl_error_set(err, FL_E_INVALID,
                                "permute: entry %d (%d) does not make a permutation of %d dims", i,
                                perm[i], src->ndim);
        seen |= 1 << perm[i];
    }
    fl_tensor v = *src;
    for (int i = 0; i < src->ndim; i++) {
        v.shape[i] = src->shape[perm[i]];
        v.stride[i] = src->stride[perm[i]];
    }
    return emit_view(dst, src, &v);
}

fl_status fl_tensor_transpose(fl_tensor *dst, const fl_tensor *src, int d0, int d1, fl_error *err)
{
    fl_status st = check_dim(src, d0, "transpose", err);
    if (st || (st = check_dim(src, d1, "transpose", err)))
        return st;
    int perm[FL_MAX_DIMS];
    for (int i = 0; i < src->ndim; i++)
        perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return fl_tensor_permute(dst, src, perm, err);
}

bool fl_tensor_is_contiguous(const fl_tensor *t)
{
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0)
            return true; /* empty: trivially dense whatever its strides or where the 0 is */
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1)
            continue;
        if (t->stride[i] != expect)
            return false;
        expect *= t->shape[i];
    }
    return true;
}

fl_status fl_tensor_reshape(fl_tensor *dst, const fl_tensor *src, int ndim, const int64_t *shape,
                            fl_error *err)
{
    char d[96];
    if (!fl_tensor_is_contiguous(src))
        return fl_error_set(err, FL_E_SHAPE, "reshape: tensor %s is not contiguous (copy it first)",
                            fl_tensor_describe(src, d, sizeof d));
    if (ndim < 0 || ndim > FL_MAX_DIMS)
        return fl_error_set(err, FL_E_SHAPE, "reshape: rank %d is outside 0..%d", ndim, FL_MAX_DIMS);
    int64_t known = 1, numel = fl_tensor_numel(src);
    int infer = -1;
    int64_t s[FL_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0)
                return fl_error_set(err, FL_E_SHAPE, "reshape: more than one -1 in the new shape");
            infer = i;
        } else if (shape[i] < 0) {
            return fl_error_set(err, FL_E_SHAPE, "reshape: dim %d has negative size %lld", i,
                                (long long)shape[i]);
        } else if (__builtin_mul_overflow(known, shape[i], &known)) {
            return fl_error_set(err, FL_E_RANGE, "reshape: new shape overflows");
        }
    }
    if (infer >= 0) {
        if (known == 0 || numel % known)
            return fl_error_set(err, FL_E_SHAPE, "reshape: cannot infer dim %d for %lld elements",
                                infer, (long long)numel);
        s[infer] = numel / known;
        known = numel;
    }
    if (known != numel)
        return fl_error_set(err, FL_E_SHAPE, "reshape: %s has %lld elements, new shape has %lld",
                            fl_tensor_describe(src, d, sizeof d), (long long)numel, (long long)known);
    fl_tensor v = *src;
    v.ndim = ndim;
    for (int i = 0; i < FL_MAX_DIMS; i++) {
        v.shape[i] = i < ndim ? s[i] : 0;
        v.stride[i] = 0;
    }
    fl_contiguous_strides(ndim, s, v.stride);
    return emit_view(dst, src, &v);
}

fl_status fl_tensor_unsqueeze(fl_tensor *dst, const fl_tensor *src, int dim, fl_error *err)
{
    if (dim < 0 || dim > src->ndim || src->ndim >= FL_MAX_DIMS)
        return fl_error_set(err, FL_E_RANGE, "unsqueeze: dim %d is outside 0..%d (or rank is %d)",
                            dim, src->ndim, FL_MAX_DIMS);
    fl_tensor v = *src;
    for (int i = src->ndim; i > dim; i--) {
        v.shape[i] = src->shape[i - 1];
        v.stride[i] = src->stride[i - 1];
    }
    v.shape[dim] = 1;
    v.stride[dim] = dim < src->ndim ? src->stride[dim] * src->shape[dim] : 1;
    v.ndim++;
    return emit_view(dst, src, &v);
}

fl_status fl_broadcast_shapes(int na, const int64_t *a, int nb, const int64_t *b, int *nout,
                              int64_t *out, fl_error *err)
{
    int n = na > nb ? na : nb;
    int64_t r[FL_MAX_DIMS];
    if (n > FL_MAX_DIMS)
        return fl_error_set(err, FL_E_SHAPE, "broadcast: rank %d exceeds %d", n, FL_MAX_DIMS);
    for (int i = 0; i < n; i++) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[128] = "", sb[128] = ""; /* 5 dims of 20 digits fit, so ']' is there */
            fl_tensor ta = FL_TENSOR_NULL, tb = FL_TENSOR_NULL;
            ta.ndim = na;
            tb.ndim = nb;
            memcpy(ta.shape, a, (size_t)na * sizeof *a);
            memcpy(tb.shape, b, (size_t)nb * sizeof *b);
            fl_tensor_describe(&ta, sa, sizeof sa);
            fl_tensor_describe(&tb, sb, sizeof sb);
            return fl_error_set(err, FL_E_SHAPE,
                                "cannot broadcast shapes %.*s and %.*s (dim %d: %lld vs %lld)",
                                (int)(strchr(sa, ']') - sa + 1), sa, (int)(strchr(sb, ']') - sb + 1),
                                sb, i, (long long)da, (long long)db);
        }
        r[i] = da == 1 ? db : da;
    }
    *nout = n;
    memcpy(out, r, (size_t)n * sizeof *r);
    return FL_OK;
}

fl_status fl_tensor_expand(fl_tensor *dst, const fl_tensor *src, int ndim, const int64_t *shape,
                           fl_error *err)
{
    char d[96];
    if (ndim < src->ndim || ndim > FL_MAX_DIMS)
        return fl_error_set(err, FL_E_SHAPE, "expand: cannot expand %s to rank %d",
                            fl_tensor_describe(src, d, sizeof d), ndim);
    fl_tensor v = *src;
    v.ndim = ndim;
    for (int i = ndim - 1; i >= 0; i--) {
        int is = src->ndim - ndim + i;
        int64_t sd = is >= 0 ? src->shape[is] : 1;
        int64_t ss = is >= 0 ? src->stride[is] : 0;
        if (shape[i] < 0)
            return fl_error_set(err, FL_E_SHAPE, "expand: cannot expand %s to negative size %lld",
                                fl_tensor_describe(src, d, sizeof d), (long long)shape[i]);
        if (sd == shape[i]) {
            v.shape[i] = sd;
            v.stride[i] = ss;
        } else if (sd == 1) {
            v.shape[i] = shape[i];
            v.stride[i] = 0;
        } else {
            return fl_error_set(err, FL_E_SHAPE, "expand: dim %d of %s has size %lld, not 1 or %lld",
                                is, fl_tensor_describe(src, d, sizeof d), (long long)sd,
                                (long long)shape[i]);
        }
    }
    return emit_view(dst, src, &v);
}

int64_t fl_tensor_numel(const fl_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

size_t fl_tensor_nbytes(const fl_tensor *t)
{
    return (size_t)fl_tensor_numel(t) * fl_dtype_size(t->dtype);
}

bool fl_tensor_same_shape(const fl_tensor *a, const fl_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

fl_device fl_tensor_device(const fl_tensor *t)
{
    fl_device cpu = { FL_DEVICE_CPU, 0 };
    return t->storage ? t->storage->device : cpu;
}

void *fl_tensor_data(const fl_tensor *t)
{
    if (!t->storage)
        return NULL;
    return (char *)t->storage->data + (size_t)t->offset * fl_dtype_size(t->dtype);
}

int64_t fl_tensor_offset_of(const fl_tensor *t, const int64_t *index)
{
    int64_t o = 0;
    for (int i = 0; i < t->ndim; i++) {
        FL_ASSERT(index[i] >= 0 && index[i] < t->shape[i]);
        o += index[i] * t->stride[i];
    }
    return o;
}

double fl_tensor_get(const fl_tensor *t, const int64_t *index)
{
    FL_ASSERT(fl_tensor_device(t).kind == FL_DEVICE_CPU);
    return fl_dtype_load(t->dtype, fl_tensor_data(t), (size_t)fl_tensor_offset_of(t, index));
}

void fl_tensor_set(fl_tensor *t, const int64_t *index, double v)
{
    FL_ASSERT(fl_tensor_device(t).kind == FL_DEVICE_CPU);
    fl_dtype_store(t->dtype, fl_tensor_data(t), (size_t)fl_tensor_offset_of(t, index), v);
}
