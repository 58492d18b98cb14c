/* The ops dispatcher: validates every call once (devices, dtypes, shapes, aliasing) and
 * hands normalised arguments to the backend's vtable. Also the backend registry. */
#include "ops.h"

#include <string.h>

#ifdef FL_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

/* Defined in ops/cpu/backends.c. */
extern const fl_backend_vtable fl_cpu_ref_vtable;
extern const fl_backend_vtable fl_cpu_blas_vtable;

static const char *const backend_names[] = {
    "cpu",
    "cpu-ref",
#ifdef FL_HAVE_CUDA
    "cuda",
#endif
    NULL,
};

const char *const *fl_backend_list(void) { return backend_names; }

int fl_backend_have_cuda(void)
{
#ifdef FL_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

fl_status fl_backend_new(fl_backend **out, const char *name, int device, const fl_allocator *alloc,
                         fl_error *err)
{
    *out = NULL;
    if (!alloc)
        alloc = fl_allocator_default();
    const fl_backend_vtable *vt = NULL;
    int cuda = 0;
    if (strcmp(name, "cpu") == 0)
        vt = &fl_cpu_blas_vtable;
    else if (strcmp(name, "cpu-ref") == 0)
        vt = &fl_cpu_ref_vtable;
    else if (strcmp(name, "cuda") == 0)
        cuda = 1;
    else
        return fl_error_set(err, FL_E_INVALID,
                            "backend '%s' is unknown (known: cpu, cpu-ref%s)", name,
                            fl_backend_have_cuda() ? ", cuda" : "");
    if (cuda && !fl_backend_have_cuda())
        return fl_error_set(err, FL_E_UNSUPPORTED,
                            "backend 'cuda': this build has no CUDA support (nvcc was not found "
                            "when it was compiled)");
    fl_backend *be = fl_alloc(alloc, sizeof *be);
    if (!be)
        return fl_error_set(err, FL_E_NOMEM, "backend '%s': out of memory", name);
    memset(be, 0, sizeof *be);
    be->alloc = alloc;
    be->device.kind = FL_DEVICE_CPU;
    if (cuda) {
#ifdef FL_HAVE_CUDA
        fl_status st = fl_cuda_backend_init(be, device, err);
        if (st) {
            fl_free(alloc, be, sizeof *be);
            return st;
        }
#endif
    } else {
        if (device != 0) {
            fl_free(alloc, be, sizeof *be);
            return fl_error_set(err, FL_E_INVALID, "backend '%s' has only device 0, not %d", name,
                                device);
        }
        be->vt = vt;
    }
    *out = be;
    return FL_OK;
}

void fl_backend_free(fl_backend *be)
{
    if (!be)
        return;
    if (be->vt && be->vt->destroy)
        be->vt->destroy(be);
    fl_free(be->alloc, be, sizeof *be);
}

const char *fl_backend_name(const fl_backend *be) { return be->vt->name; }

/* ---------------------------------------------------------------- validation helpers */

static const char *desc(const fl_tensor *t, char *buf, size_t n) { return fl_tensor_describe(t, buf, n); }

static fl_status unsupported(fl_backend *be, const char *op, fl_error *err)
{
    return fl_error_set(err, FL_E_UNSUPPORTED, "%s: not implemented by backend '%s'", op,
                        be->vt->name);
}

static fl_status check_tensor(fl_backend *be, const char *op, const char *name, const fl_tensor *t,
                              fl_error *err)
{
    if (!t || !t->storage)
        return fl_error_set(err, FL_E_INVALID, "%s: %s is an empty tensor (no storage)", op, name);
    fl_device d = fl_tensor_device(t);
    if (d.kind != be->device.kind || d.index != be->device.index)
        return fl_error_set(err, FL_E_DEVICE, "%s: %s is on %s:%d but backend '%s' runs on %s:%d",
                            op, name, fl_device_name(d), d.index, be->vt->name,
                            fl_device_name(be->device), be->device.index);
    return FL_OK;
}

static fl_status check_dtype_in(const char *op, const char *name, const fl_tensor *t,
                                const fl_dtype *ok, int nok, fl_error *err)
{
    for (int i = 0; i < nok; i++)
        if (t->dtype == ok[i])
            return FL_OK;
    char list[64] = "";
    for (int i = 0; i < nok; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, fl_dtype_name(ok[i]), sizeof list - strlen(list) - 1);
    }
    return fl_error_set(err, FL_E_DTYPE, "%s: %s has dtype %s; expected one of %s", op, name,
                        fl_dtype_name(t->dtype), list);
}

static const fl_dtype real_types[] = { FL_F32, FL_F64 };
static const fl_dtype linalg_types[] = { FL_F32, FL_F64, FL_C64, FL_C128 };

static fl_status check_same_dtype(const char *op, const char *na, const fl_tensor *a,
                                  const char *nb, const fl_tensor *b, fl_error *err)
{
    if (a->dtype != b->dtype)
        return fl_error_set(err, FL_E_DTYPE, "%s: %s is %s but %s is %s", op, na,
                            fl_dtype_name(a->dtype), nb, fl_dtype_name(b->dtype));
    return FL_OK;
}

static fl_status check_same_shape(const char *op, const char *na, const fl_tensor *a,
                                  const char *nb, const fl_tensor *b, fl_error *err)
{
    char da[96], db[96];
    if (!fl_tensor_same_shape(a, b))
        return fl_error_set(err, FL_E_SHAPE, "%s: %s is %s but %s is %s", op, na,
                            desc(a, da, sizeof da), nb, desc(b, db, sizeof db));
    return FL_OK;
}

/* Byte ranges [lo, hi] a view touches within its storage (a conservative box). */
static void extent(const fl_tensor *t, int64_t *lo, int64_t *hi)
{
    int64_t es = (int64_t)fl_dtype_size(t->dtype);
    int64_t last = t->offset;
    for (int i = 0; i < t->ndim; i++)
        last += (t->shape[i] > 0 ? t->shape[i] - 1 : 0) * t->stride[i];
    *lo = t->offset * es;
    *hi = (last + 1) * es - 1;
}

static bool identical_view(const fl_tensor *a, const fl_tensor *b)
{
    if (a->storage != b->storage || a->dtype != b->dtype || a->offset != b->offset || a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->stride[i] != b->stride[i]))
            return false;
    return true;
}

/* Outputs may not overlap inputs, except as the identical view when `same_ok`. */
static fl_status check_alias(const char *op, const char *nout, const fl_tensor *out,
                             const char *nin, const fl_tensor *in, bool same_ok, fl_error *err)
{
    if (!in || out->storage != in->storage || fl_tensor_numel(out) == 0 || fl_tensor_numel(in) == 0)
        return FL_OK;
    if (same_ok && identical_view(out, in))
        return FL_OK;
    int64_t lo1, hi1, lo2, hi2;
    extent(out, &lo1, &hi1);
    extent(in, &lo2, &hi2);
    if (hi1 < lo2 || hi2 < lo1)
        return FL_OK;
    return fl_error_set(err, FL_E_INVALID, "%s: output %s overlaps input %s%s", op, nout, nin,
                        same_ok ? " (only the identical view may be reused in place)" : "");
}

/* Writing through a stride-0 (broadcast) dim would race with itself. */
static fl_status check_writable(const char *op, const char *name, const fl_tensor *t, fl_error *err)
{
    for (int i = 0; i < t->ndim; i++)
        if (t->stride[i] == 0 && t->shape[i] > 1)
            return fl_error_set(err, FL_E_INVALID,
                                "%s: output %s has a broadcast (stride 0) dim %d; write to a real tensor",
                                op, name, i);
    return FL_OK;
}

static fl_status norm_axis(const char *op, int *axis, int ndim, fl_error *err)
{
    int a = *axis < 0 ? *axis + ndim : *axis;
    if (a < 0 || a >= ndim)
        return fl_error_set(err, FL_E_RANGE, "%s: axis %d is outside a %d-d tensor", op, *axis, ndim);
    *axis = a;
    return FL_OK;
}

/* ---------------------------------------------------------------- memory */

fl_status fl_empty(fl_backend *be, fl_tensor *out, fl_dtype dtype, int ndim, const int64_t *shape,
                   fl_error *err)
{
    fl_tensor probe = FL_TENSOR_NULL;
    size_t nbytes;
    if (fl_shape_nbytes(dtype, ndim, shape, &nbytes, err))
        return fl_error_prefix(err, "empty");
    fl_storage *s = NULL;
    fl_status st = be->vt->storage_new(be, nbytes, &s, err);
    if (st)
        return st;
    st = fl_tensor_from_storage(&probe, s, dtype, ndim, shape, NULL, 0, err);
    fl_storage_release(s); /* the tensor holds its own reference now (or none on error) */
    if (st)
        return st;
    *out = probe;
    return FL_OK;
}

static bool copy_types_ok(fl_dtype d, fl_dtype s)
{
    if (d == s)
        return true;
    if (fl_dtype_is_float(d) && fl_dtype_is_float(s))
        return true;
    return fl_dtype_is_complex(d) && fl_dtype_is_complex(s);
}

fl_status fl_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err)
{
    const char *op = "copy";
    fl_status st;
    if (!be->vt->copy)
        return unsupported(be, op, err);
    if (!dst->storage || !src->storage)
        return fl_error_set(err, FL_E_INVALID, "copy: %s is an empty tensor", dst->storage ? "src" : "dst");
    /* copy may cross between the host and the backend's device */
    fl_device dd = fl_tensor_device(dst), ds = fl_tensor_device(src);
    bool dok = dd.kind == FL_DEVICE_CPU || (dd.kind == be->device.kind && dd.index == be->device.index);
    bool sok = ds.kind == FL_DEVICE_CPU || (ds.kind == be->device.kind && ds.index == be->device.index);
    if (!dok || !sok)
        return fl_error_set(err, FL_E_DEVICE, "copy: %s is on %s:%d, which backend '%s' cannot reach",
                            dok ? "src" : "dst", fl_device_name(dok ? ds : dd), (dok ? ds : dd).index,
                            be->vt->name);
    if ((st = check_same_shape(op, "dst", dst, "src", src, err)))
        return st;
    if (!copy_types_ok(dst->dtype, src->dtype))
        return fl_error_set(err, FL_E_DTYPE, "copy: cannot convert %s to %s",
                            fl_dtype_name(src->dtype), fl_dtype_name(dst->dtype));
    if ((st = check_writable(op, "dst", dst, err)) ||
        (st = check_alias(op, "dst", dst, "src", src, true, err)))
        return st;
    return be->vt->copy(be, dst, src, err);
}

fl_status fl_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err)
{
    fl_status st;
    if (!be->vt->fill)
        return unsupported(be, "fill", err);
    if ((st = check_tensor(be, "fill", "dst", dst, err)) ||
        (st = check_dtype_in("fill", "dst", dst, real_types, 2, err)) ||
        (st = check_writable("fill", "dst", dst, err)))
        return st;
    return be->vt->fill(be, dst, value, err);
}

fl_status fl_contiguous(fl_backend *be, fl_tensor *out, const fl_tensor *src, fl_error *err)
{
    fl_device d = fl_tensor_device(src);
    if (src->storage && fl_tensor_is_contiguous(src) && d.kind == be->device.kind &&
        d.index == be->device.index) {
        fl_tensor_retain(out, src);
        return FL_OK;
    }
    fl_tensor t = FL_TENSOR_NULL;
    fl_status st = fl_empty(be, &t, src->dtype, src->ndim, src->shape, err);
    if (st)
        return st;
    if ((st = fl_copy(be, &t, src, err))) {
        fl_tensor_release(&t);
        return st;
    }
    *out = t;
    return FL_OK;
}

/* ---------------------------------------------------------------- elementwise */

static fl_status unary_call(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in,
                            double a, double b, fl_error *err)
{
    static const char *const names[FL_UN_COUNT] = { "neg", "abs", "square", "sqrt", "exp", "log", "affine" };
    if ((unsigned)op >= FL_UN_COUNT)
        return fl_error_set(err, FL_E_INVALID, "unary: unknown op %d", (int)op);
    const char *name = names[op];
    fl_status st;
    if (!be->vt->unary)
        return unsupported(be, name, err);
    if ((st = check_tensor(be, name, "out", out, err)) || (st = check_tensor(be, name, "in", in, err)) ||
        (st = check_dtype_in(name, "in", in, real_types, 2, err)) ||
        (st = check_same_dtype(name, "out", out, "in", in, err)))
        return st;
    /* in may broadcast to out */
    fl_tensor ex = FL_TENSOR_NULL;
    char d1[96], d2[96];
    if (fl_tensor_expand(&ex, in, out->ndim, out->shape, NULL))
        return fl_error_set(err, FL_E_SHAPE, "%s: input %s does not broadcast to output %s", name,
                            desc(in, d1, sizeof d1), desc(out, d2, sizeof d2));
    if (!(st = check_writable(name, "out", out, err)) &&
        !(st = check_alias(name, "out", out, "in", &ex, true, err)))
        st = be->vt->unary(be, op, out, &ex, a, b, err);
    fl_tensor_release(&ex);
    return st;
}

fl_status fl_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in, fl_error *err)
{
    if (op == FL_UN_AFFINE)
        return fl_error_set(err, FL_E_INVALID, "unary: affine takes parameters; call fl_affine");
    return unary_call(be, op, out, in, 0.0, 0.0, err);
}

fl_status fl_affine(fl_backend *be, fl_tensor *out, const fl_tensor *in, double a, double b,
                    fl_error *err)
{
    return unary_call(be, FL_UN_AFFINE, out, in, a, b, err);
}

fl_status fl_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                    const fl_tensor *b, fl_error *err)
{
    static const char *const names[FL_BIN_COUNT] = { "add", "sub", "mul", "div", "max", "min" };
    if ((unsigned)op >= FL_BIN_COUNT)
        return fl_error_set(err, FL_E_INVALID, "binary: unknown op %d", (int)op);
    const char *name = names[op];
    fl_status st;
    if (!be->vt->binary)
        return unsupported(be, name, err);
    if ((st = check_tensor(be, name, "out", out, err)) || (st = check_tensor(be, name, "a", a, err)) ||
        (st = check_tensor(be, name, "b", b, err)) ||
        (st = check_dtype_in(name, "a", a, real_types, 2, err)) ||
        (st = check_same_dtype(name, "a", a, "b", b, err)) ||
        (st = check_same_dtype(name, "out", out, "a", a, err)))
        return st;
    int n;
    int64_t shape[FL_MAX_DIMS];
    if ((st = fl_broadcast_shapes(a->ndim, a->shape, b->ndim, b->shape, &n, shape, err)))
        return fl_error_prefix(err, "%s", name);
    fl_tensor bs = FL_TENSOR_NULL;
    bs.ndim = n;
    memcpy(bs.shape, shape, sizeof shape);
    char d1[96], d2[96];
    if (!fl_tensor_same_shape(&bs, out))
        return fl_error_set(err, FL_E_SHAPE, "%s: output is %s but the inputs broadcast to %s", name,
                            desc(out, d1, sizeof d1), desc(&bs, d2, sizeof d2));
    if ((st = check_writable(name, "out", out, err)))
        return st;
    fl_tensor ea = FL_TENSOR_NULL, eb = FL_TENSOR_NULL;
    if ((st = fl_tensor_expand(&ea, a, n, shape, err)) || (st = fl_tensor_expand(&eb, b, n, shape, err)))
        goto done;
    if ((st = check_alias(name, "out", out, "a", &ea, true, err)) ||
        (st = check_alias(name, "out", out, "b", &eb, true, err)))
        goto done;
    st = be->vt->binary(be, op, out, &ea, &eb, err);
done:
    fl_tensor_release(&ea);
    fl_tensor_release(&eb);
    return st;
}

fl_status fl_add(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err)
{
    return fl_binary(be, FL_BIN_ADD, out, a, b, err);
}
fl_status fl_sub(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err)
{
    return fl_binary(be, FL_BIN_SUB, out, a, b, err);
}
fl_status fl_mul(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err)
{
    return fl_binary(be, FL_BIN_MUL, out, a, b, err);
}
fl_status fl_div(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err)
{
    return fl_binary(be, FL_BIN_DIV, out, a, b, err);
}

/* ---------------------------------------------------------------- reductions */

/* Accepts out with the axis removed or kept as 1, and returns a view with it kept. */
static fl_status keepdim_view(const char *op, fl_tensor *view, const fl_tensor *out,
                              const fl_tensor *in, int axis, fl_error *err)
{
    char d1[96], d2[96], d3[96];
    fl_tensor want = *in;
    want.shape[axis] = 1;
    if (fl_tensor_same_shape(out, &want)) {
        fl_tensor_retain(view, out);
        return FL_OK;
    }
    /* the shape with the axis removed (only the shape matters: no storage reference) */
    fl_tensor removed = want;
    removed.storage = NULL;
    for (int i = axis; i < in->ndim - 1; i++)
        removed.shape[i] = in->shape[i + 1];
    removed.ndim = in->ndim - 1;
    if (fl_tensor_same_shape(out, &removed))
        return fl_tensor_unsqueeze(view, out, axis, err);
    return fl_error_set(err, FL_E_SHAPE, "%s: output is %s; for input %s along axis %d expected %s "
                        "or the same with the axis removed",
                        op, desc(out, d1, sizeof d1), desc(in, d2, sizeof d2), axis,
                        desc(&want, d3, sizeof d3));
}

fl_status fl_reduce(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in, int axis,
                    fl_error *err)
{
    static const char *const names[FL_RED_COUNT] = { "sum", "mean", "max", "min", "var", "var_unbiased" };
    if ((unsigned)op >= FL_RED_COUNT)
        return fl_error_set(err, FL_E_INVALID, "reduce: unknown op %d", (int)op);
    const char *name = names[op];
    fl_status st;
    if (!be->vt->reduce)
        return unsupported(be, name, err);
    if ((st = check_tensor(be, name, "out", out, err)) || (st = check_tensor(be, name, "in", in, err)) ||
        (st = check_dtype_in(name, "in", in, real_types, 2, err)) ||
        (st = check_same_dtype(name, "out", out, "in", in, err)) ||
        (st = norm_axis(name, &axis, in->ndim, err)))
        return st;
    if (in->shape[axis] == 0 && op != FL_RED_SUM)
        return fl_error_set(err, FL_E_SHAPE, "%s: axis %d of the input is empty", name, axis);
    if (op == FL_RED_VAR_UNBIASED && in->shape[axis] < 2)
        return fl_error_set(err, FL_E_SHAPE, "%s: needs at least 2 elements along axis %d, got %lld",
                            name, axis, (long long)in->shape[axis]);
    fl_tensor v = FL_TENSOR_NULL;
    if ((st = keepdim_view(name, &v, out, in, axis, err)))
        return st;
    if (!(st = check_writable(name, "out", &v, err)) &&
        !(st = check_alias(name, "out", &v, "in", in, false, err)))
        st = be->vt->reduce(be, op, &v, in, axis, err);
    fl_tensor_release(&v);
    return st;
}

fl_status fl_softmax(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis, fl_error *err)
{
    const char *name = "softmax";
    fl_status st;
    if (!be->vt->softmax)
        return unsupported(be, name, err);
    if ((st = check_tensor(be, name, "out", out, err)) || (st = check_tensor(be, name, "in", in, err)) ||
        (st = check_dtype_in(name, "in", in, real_types, 2, err)) ||
        (st = check_same_dtype(name, "out", out, "in", in, err)) ||
        (st = check_same_shape(name, "out", out, "in", in, err)) ||
        (st = norm_axis(name, &axis, in->ndim, err)) ||
        (st = check_writable(name, "out", out, err)) ||
        (st = check_alias(name, "out", out, "in", in, true, err)))
        return st;
    return be->vt->softmax(be, out, in, axis, err);
}

/* ---------------------------------------------------------------- matmul */

/* The same view with its last two dims swapped (no reference taken). */
static fl_tensor swap_last2(const fl_tensor *t)
{
    fl_tensor v = *t;
    int n = t->ndim;
    v.shape[n - 2] = t->shape[n - 1];
    v.shape[n - 1] = t->shape[n - 2];
    v.stride[n - 2] = t->stride[n - 1];
    v.stride[n - 1] = t->stride[n - 2];
    return v;
}

fl_status fl_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                    unsigned flags, double alpha, double beta, fl_error *err)
{
    const char *name = "matmul";
    fl_status st;
    char d1[96], d2[96], d3[96];
    if (!be->vt->matmul)
        return unsupported(be, name, err);
    if ((st = check_tensor(be, name, "c", c, err)) || (st = check_tensor(be, name, "a", a, err)) ||
        (st = check_tensor(be, name, "b", b, err)) ||
        (st = check_dtype_in(name, "a", a, real_types, 2, err)) ||
        (st = check_same_dtype(name, "a", a, "b", b, err)) ||
        (st = check_same_dtype(name, "c", c, "a", a, err)))
        return st;
    if (a->ndim < 2 || b->ndim < 2 || c->ndim < 2)
        return fl_error_set(err, FL_E_SHAPE, "matmul: operands need rank >= 2 (a %s, b %s, c %s)",
                            desc(a, d1, sizeof d1), desc(b, d2, sizeof d2), desc(c, d3, sizeof d3));
    /* borrowed views: transposing a copy of the struct does not touch refcounts */
    fl_tensor ta = flags & FL_MATMUL_TA ? swap_last2(a) : *a;
    fl_tensor tb = flags & FL_MATMUL_TB ? swap_last2(b) : *b;
    int64_t M = ta.shape[ta.ndim - 2], K = ta.shape[ta.ndim - 1];
    int64_t K2 = tb.shape[tb.ndim - 2], N = tb.shape[tb.ndim - 1];
    if (K != K2 || c->shape[c->ndim - 2] != M || c->shape[c->ndim - 1] != N)
        return fl_error_set(err, FL_E_SHAPE,
                            "matmul: op(a) %s @ op(b) %s does not give c %s (inner dims %lld vs %lld)",
                            desc(&ta, d1, sizeof d1), desc(&tb, d2, sizeof d2), desc(c, d3, sizeof d3),
                            (long long)K, (long long)K2);
    /* batch dims of a and b must broadcast to c's */
    int64_t shape_a[FL_MAX_DIMS], shape_b[FL_MAX_DIMS];
    memcpy(shape_a, c->shape, sizeof shape_a);
    memcpy(shape_b, c->shape, sizeof shape_b);
    shape_a[c->ndim - 2] = M;
    shape_a[c->ndim - 1] = K;
    shape_b[c->ndim - 2] = K;
    shape_b[c->ndim - 1] = N;
    fl_tensor ea = FL_TENSOR_NULL, eb = FL_TENSOR_NULL;
    if (fl_tensor_expand(&ea, &ta, c->ndim, shape_a, NULL) ||
        fl_tensor_expand(&eb, &tb, c->ndim, shape_b, NULL)) {
        fl_tensor_release(&ea);
        return fl_error_set(err, FL_E_SHAPE, "matmul: batch dims of a %s and b %s do not broadcast to c %s",
                            desc(a, d1, sizeof d1), desc(b, d2, sizeof d2), desc(c, d3, sizeof d3));
    }
    if (!(st = check_writable(name, "c", c, err)) &&
        !(st = check_alias(name, "c", c, "a", &ea, false, err)) &&
        !(st = check_alias(name, "c", c, "b", &eb, false, err)))
        st = be->vt->matmul(be, c, &ea, &eb, alpha, beta, err);
    fl_tensor_release(&ea);
    fl_tensor_release(&eb);
    return st;
}

/* ---------------------------------------------------------------- linear algebra */

/* a must be [..., n, n]; returns n. */
static fl_status square_batch(const char *op, const char *name, const fl_tensor *a, int64_t *n,
                              fl_error *err)
{
    char d[96];
    if (a->ndim < 2 || a->shape[a->ndim - 1] != a->shape[a->ndim - 2])
        return fl_error_set(err, FL_E_SHAPE, "%s: %s must be a batch of square matrices [..., n, n], got %s",
                            op, name, desc(a, d, sizeof d));
    *n = a->shape[a->ndim - 1];
    return FL_OK;
}

/* t must have `batch` (a's leading dims) then the given trailing dims. */
static fl_status batch_shape(const char *op, const char *name, const fl_tensor *t, const fl_tensor *a,
                             int trailing, const int64_t *tail, fl_error *err)
{
    int nb = a->ndim - 2;
    fl_tensor want = FL_TENSOR_NULL;
    want.ndim = nb + trailing;
    want.dtype = t->dtype;
    for (int i = 0; i < nb; i++)
        want.shape[i] = a->shape[i];
    for (int i = 0; i < trailing; i++)
        want.shape[nb + i] = tail[i];
    char d1[96], d2[96];
    if (!fl_tensor_same_shape(t, &want))
        return fl_error_set(err, FL_E_SHAPE, "%s: %s is %s, expected %s", op, name, desc(t, d1, sizeof d1),
                            desc(&want, d2, sizeof d2));
    return FL_OK;
}

static fl_status linalg_common(fl_backend *be, const char *op, const fl_tensor *a, int64_t *n,
                               fl_error *err)
{
    fl_status st;
    if ((st = check_tensor(be, op, "a", a, err)) ||
        (st = check_dtype_in(op, "a", a, linalg_types, 4, err)))
        return st;
    return square_batch(op, "a", a, n, err);
}

static fl_status output_ok(fl_backend *be, const char *op, const char *name, const fl_tensor *out,
                           fl_dtype dtype, const fl_tensor *in1, const fl_tensor *in2, fl_error *err)
{
    fl_status st;
    if ((st = check_tensor(be, op, name, out, err)))
        return st;
    if (out->dtype != dtype)
        return fl_error_set(err, FL_E_DTYPE, "%s: %s must be %s, got %s", op, name,
                            fl_dtype_name(dtype), fl_dtype_name(out->dtype));
    if ((st = check_writable(op, name, out, err)) ||
        (st = check_alias(op, name, out, "input", in1, false, err)) ||
        (st = check_alias(op, name, out, "input", in2, false, err)))
        return st;
    return FL_OK;
}

fl_status fl_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err)
{
    int64_t n;
    fl_status st;
    if (!be->vt->eigh)
        return unsupported(be, "eigh", err);
    if ((st = linalg_common(be, "eigh", a, &n, err)) ||
        (st = output_ok(be, "eigh", "w", w, fl_dtype_real_of(a->dtype), a, NULL, err)) ||
        (st = batch_shape("eigh", "w", w, a, 1, &n, err)))
        return st;
    if (v && v->storage) {
        int64_t nn[2] = { n, n };
        if ((st = output_ok(be, "eigh", "v", v, a->dtype, a, w, err)) ||
            (st = batch_shape("eigh", "v", v, a, 2, nn, err)))
            return st;
    } else {
        v = NULL;
    }
    return be->vt->eigh(be, w, v, a, err);
}

fl_status fl_cholesky(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err)
{
    int64_t n;
    fl_status st;
    if (!be->vt->cholesky)
        return unsupported(be, "cholesky", err);
    int64_t nn[2];
    if ((st = linalg_common(be, "cholesky", a, &n, err)))
        return st;
    nn[0] = nn[1] = n;
    if ((st = output_ok(be, "cholesky", "l", l, a->dtype, a, NULL, err)) ||
        (st = batch_shape("cholesky", "l", l, a, 2, nn, err)))
        return st;
    return be->vt->cholesky(be, l, a, err);
}

static fl_status solve_common(fl_backend *be, const char *op, fl_tensor *x, const fl_tensor *a,
                              const fl_tensor *b, fl_error *err)
{
    int64_t n;
    fl_status st;
    if ((st = linalg_common(be, op, a, &n, err)) || (st = check_tensor(be, op, "b", b, err)) ||
        (st = check_same_dtype(op, "b", b, "a", a, err)))
        return st;
    char d1[96];
    if (b->ndim != a->ndim || b->shape[b->ndim - 2] != n)
        return fl_error_set(err, FL_E_SHAPE, "%s: b must be [..., %lld, k] with a's batch dims, got %s",
                            op, (long long)n, desc(b, d1, sizeof d1));
    int64_t tail[2] = { n, b->shape[b->ndim - 1] };
    if ((st = batch_shape(op, "b", b, a, 2, tail, err)) ||
        (st = output_ok(be, op, "x", x, a->dtype, a, b, err)) ||
        (st = batch_shape(op, "x", x, a, 2, tail, err)))
        return st;
    return FL_OK;
}

fl_status fl_cholesky_solve(fl_backend *be, fl_tensor *x, const fl_tensor *l, const fl_tensor *b,
                            fl_error *err)
{
    fl_status st;
    if (!be->vt->cholesky_solve)
        return unsupported(be, "cholesky_solve", err);
    if ((st = solve_common(be, "cholesky_solve", x, l, b, err)))
        return st;
    return be->vt->cholesky_solve(be, x, l, b, err);
}

fl_status fl_solve(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b, fl_error *err)
{
    fl_status st;
    if (!be->vt->solve)
        return unsupported(be, "solve", err);
    if ((st = solve_common(be, "solve", x, a, b, err)))
        return st;
    return be->vt->solve(be, x, a, b, err);
}

/* ---------------------------------------------------------------- FFT */

static fl_status fft_call(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, int inverse,
                          fl_error *err)
{
    const char *op = inverse ? "ifft" : "fft";
    static const fl_dtype in_types[] = { FL_F32, FL_F64, FL_C64, FL_C128 };
    fl_status st;
    if (!be->vt->fft)
        return unsupported(be, op, err);
    if ((st = check_tensor(be, op, "in", in, err)) ||
        (st = check_dtype_in(op, "in", in, in_types, 4, err)))
        return st;
    if (ndims < 1 || ndims > 3 || ndims > in->ndim)
        return fl_error_set(err, FL_E_INVALID, "%s: ndims %d must be 1..3 and at most the rank %d",
                            op, ndims, in->ndim);
    fl_dtype want = (in->dtype == FL_F32 || in->dtype == FL_C64) ? FL_C64 : FL_C128;
    if ((st = output_ok(be, op, "out", out, want, in, NULL, err)) ||
        (st = check_same_shape(op, "out", out, "in", in, err)))
        return st;
    return be->vt->fft(be, out, in, ndims, inverse, err);
}

fl_status fl_fft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, fl_error *err)
{
    return fft_call(be, out, in, ndims, 0, err);
}

fl_status fl_ifft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, fl_error *err)
{
    return fft_call(be, out, in, ndims, 1, err);
}
