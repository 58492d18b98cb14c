/* The ops dispatcher: validates every call once (devices, dtypes, shapes, aliasing) and
 * hands normalised arguments to the backend's vtable. Also the backend registry. */
#include "ops.h"

#include <math.h>
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

/* ---------------------------------------------------------------- neural-network ops */

static const fl_dtype weight_types[] = { FL_F32, FL_F16, FL_BF16 };
static const fl_dtype f32_only[] = { FL_F32 };

/* An activation: on the device and f32. */
static fl_status check_act(fl_backend *be, const char *op, const char *name, const fl_tensor *t,
                           fl_error *err)
{
    fl_status st;
    if ((st = check_tensor(be, op, name, t, err)))
        return st;
    return check_dtype_in(op, name, t, f32_only, 1, err);
}

/* An optional weight-like tensor (weight, bias, norm affine): NULL or a tensor with no
 * storage is "absent"; otherwise on the device, f32/f16/bf16, with the given shape. */
static fl_status check_param(fl_backend *be, const char *op, const char *name, const fl_tensor **t,
                             int ndim, const int64_t *shape, fl_error *err)
{
    if (!*t || !(*t)->storage) {
        *t = NULL;
        return FL_OK;
    }
    fl_status st;
    if ((st = check_tensor(be, op, name, *t, err)) ||
        (st = check_dtype_in(op, name, *t, weight_types, 3, err)))
        return st;
    fl_tensor want = FL_TENSOR_NULL;
    want.ndim = ndim;
    want.dtype = (*t)->dtype;
    memcpy(want.shape, shape, sizeof(int64_t) * (size_t)ndim);
    char d1[96], d2[96];
    if (!fl_tensor_same_shape(*t, &want))
        return fl_error_set(err, FL_E_SHAPE, "%s: %s is %s, expected %s", op, name, desc(*t, d1, sizeof d1),
                            desc(&want, d2, sizeof d2));
    return FL_OK;
}

/* The output: writable, and overlapping none of the inputs (or only as their identical
 * view where the op works in place). */
static fl_status check_out(const char *op, const fl_tensor *out, const fl_tensor *const *ins,
                           const char *const *names, int n, bool in_place_ok, fl_error *err)
{
    fl_status st;
    if ((st = check_writable(op, "out", out, err)))
        return st;
    for (int i = 0; i < n; i++)
        if (ins[i] && (st = check_alias(op, "out", out, names[i], ins[i], in_place_ok, err)))
            return st;
    return FL_OK;
}

static fl_status shape_is(const char *op, const char *name, const fl_tensor *t, int ndim,
                          const int64_t *shape, fl_error *err)
{
    fl_tensor want = FL_TENSOR_NULL;
    want.ndim = ndim;
    want.dtype = t->dtype;
    memcpy(want.shape, shape, sizeof(int64_t) * (size_t)ndim);
    char d1[96], d2[96];
    if (!fl_tensor_same_shape(t, &want))
        return fl_error_set(err, FL_E_SHAPE, "%s: %s is %s, expected %s", op, name, desc(t, d1, sizeof d1),
                            desc(&want, d2, sizeof d2));
    return FL_OK;
}

fl_status fl_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                    const fl_tensor *bias, fl_error *err)
{
    const char *op = "linear";
    fl_status st;
    char d1[96], d2[96];
    if (!be->vt->linear)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_tensor(be, op, "w", w, err)) ||
        (st = check_dtype_in(op, "w", w, weight_types, 3, err)))
        return st;
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return fl_error_set(err, FL_E_SHAPE, "linear: x %s does not match w %s (expected x [..., %lld] and w [N, K])",
                            desc(x, d1, sizeof d1), desc(w, d2, sizeof d2),
                            w->ndim == 2 ? (long long)w->shape[1] : -1LL);
    int64_t shape[FL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w->shape[0];
    if ((st = shape_is(op, "out", out, x->ndim, shape, err)) ||
        (st = check_param(be, op, "bias", &bias, 1, &w->shape[0], err)))
        return st;
    const fl_tensor *ins[3] = { x, w, bias };
    const char *names[3] = { "x", "w", "bias" };
    if ((st = check_out(op, out, ins, names, 3, false, err)))
        return st;
    return be->vt->linear(be, out, x, w, bias, err);
}

fl_conv_opts fl_conv_opts_make(int stride, int pad)
{
    fl_conv_opts o = { { stride, stride }, { pad, pad }, { pad, pad } };
    return o;
}

/* Checks geometry `dim` of o for an input extent n and kernel k; gives the output extent. */
static fl_status conv_extent(const char *op, const fl_conv_opts *o, int dim, int64_t n, int64_t k,
                             int64_t *out, fl_error *err)
{
    const char *axis = dim ? "width" : (strcmp(op, "conv2d") == 0 ? "height" : "length");
    if (o->stride[dim] < 1 || o->pad_lo[dim] < 0 || o->pad_hi[dim] < 0 || o->pad_lo[dim] > (1 << 24) ||
        o->pad_hi[dim] > (1 << 24))
        return fl_error_set(err, FL_E_INVALID, "%s: %s stride %d must be >= 1 and padding (%d, %d) in 0..2^24",
                            op, axis, o->stride[dim], o->pad_lo[dim], o->pad_hi[dim]);
    int64_t span = n + o->pad_lo[dim] + o->pad_hi[dim];
    if (k < 1 || span < k)
        return fl_error_set(err, FL_E_SHAPE, "%s: kernel %s %lld does not fit the padded input %s %lld",
                            op, axis, (long long)k, axis, (long long)span);
    *out = (span - k) / o->stride[dim] + 1;
    return FL_OK;
}

fl_status fl_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                    const fl_tensor *bias, fl_conv_opts o, fl_error *err)
{
    const char *op = "conv2d";
    fl_status st;
    char d1[96], d2[96];
    if (!be->vt->conv2d)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_tensor(be, op, "w", w, err)) ||
        (st = check_dtype_in(op, "w", w, weight_types, 3, err)))
        return st;
    if (x->ndim != 4 || w->ndim != 4 || x->shape[1] != w->shape[1])
        return fl_error_set(err, FL_E_SHAPE, "conv2d: x %s and w %s must be [B, C, H, W] and [O, C, KH, KW]",
                            desc(x, d1, sizeof d1), desc(w, d2, sizeof d2));
    int64_t shape[4] = { x->shape[0], w->shape[0], 0, 0 };
    if ((st = conv_extent(op, &o, 0, x->shape[2], w->shape[2], &shape[2], err)) ||
        (st = conv_extent(op, &o, 1, x->shape[3], w->shape[3], &shape[3], err)) ||
        (st = shape_is(op, "out", out, 4, shape, err)) ||
        (st = check_param(be, op, "bias", &bias, 1, &w->shape[0], err)))
        return st;
    const fl_tensor *ins[3] = { x, w, bias };
    const char *names[3] = { "x", "w", "bias" };
    if ((st = check_out(op, out, ins, names, 3, false, err)))
        return st;
    return be->vt->conv2d(be, out, x, w, bias, &o, err);
}

/* Common half of conv1d and the temporal conv: x5 [B, C, L, S1, S2], w3 [O, C, K]. */
static fl_status conv_along(fl_backend *be, const char *op, fl_tensor *out5, const fl_tensor *x5,
                            const fl_tensor *w3, const fl_tensor *bias, const fl_conv_opts *o,
                            fl_error *err)
{
    fl_status st;
    char d1[96], d2[96];
    if (x5->shape[1] != w3->shape[1])
        return fl_error_set(err, FL_E_SHAPE, "%s: x %s has %lld channels but w %s expects %lld", op,
                            desc(x5, d1, sizeof d1), (long long)x5->shape[1], desc(w3, d2, sizeof d2),
                            (long long)w3->shape[1]);
    int64_t shape[5] = { x5->shape[0], w3->shape[0], 0, x5->shape[3], x5->shape[4] };
    if ((st = conv_extent(op, o, 0, x5->shape[2], w3->shape[2], &shape[2], err)) ||
        (st = shape_is(op, "out", out5, 5, shape, err)) ||
        (st = check_param(be, op, "bias", &bias, 1, &w3->shape[0], err)))
        return st;
    const fl_tensor *ins[3] = { x5, w3, bias };
    const char *names[3] = { "x", "w", "bias" };
    if ((st = check_out(op, out5, ins, names, 3, false, err)))
        return st;
    return be->vt->conv1d(be, out5, x5, w3, bias, o, err);
}

/* A borrowed view of t (rank < 5) with size-1 dims appended up to rank 5. */
static fl_tensor pad_rank5(const fl_tensor *t)
{
    fl_tensor v = *t;
    for (int i = t->ndim; i < 5; i++) {
        v.shape[i] = 1;
        v.stride[i] = 1;
    }
    v.ndim = 5;
    return v;
}

fl_status fl_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                    const fl_tensor *bias, fl_conv_opts o, fl_error *err)
{
    const char *op = "conv1d";
    fl_status st;
    char d1[96], d2[96], d3[96];
    if (!be->vt->conv1d)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_tensor(be, op, "w", w, err)) ||
        (st = check_dtype_in(op, "w", w, weight_types, 3, err)))
        return st;
    if (x->ndim != 3 || w->ndim != 3 || out->ndim != 3)
        return fl_error_set(err, FL_E_SHAPE, "conv1d: x %s, w %s, out %s must be [B, C, L], [O, C, K], [B, O, Lo]",
                            desc(x, d1, sizeof d1), desc(w, d2, sizeof d2), desc(out, d3, sizeof d3));
    fl_tensor x5 = pad_rank5(x), o5 = pad_rank5(out);
    return conv_along(be, op, &o5, &x5, w, bias, &o, err);
}

fl_status fl_conv_temporal(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                           const fl_tensor *bias, fl_conv_opts o, fl_error *err)
{
    const char *op = "conv_temporal";
    fl_status st;
    char d1[96], d2[96];
    if (!be->vt->conv1d)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_tensor(be, op, "w", w, err)) ||
        (st = check_dtype_in(op, "w", w, weight_types, 3, err)))
        return st;
    bool w5 = w->ndim == 5 && w->shape[3] == 1 && w->shape[4] == 1;
    if (x->ndim != 5 || out->ndim != 5 || !(w5 || w->ndim == 3))
        return fl_error_set(err, FL_E_SHAPE,
                            "conv_temporal: x %s and w %s must be [B, C, T, H, W] and [O, C, K, 1, 1] (or [O, C, K])",
                            desc(x, d1, sizeof d1), desc(w, d2, sizeof d2));
    fl_tensor w3 = *w; /* borrowed: the trailing 1x1 dropped */
    w3.ndim = 3;
    return conv_along(be, op, out, x, &w3, bias, &o, err);
}

fl_status fl_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                        const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu,
                        fl_error *err)
{
    const char *op = "group_norm";
    fl_status st;
    char d1[96];
    if (!be->vt->group_norm)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_same_shape(op, "out", out, "x", x, err)))
        return st;
    if (x->ndim < 2)
        return fl_error_set(err, FL_E_SHAPE, "group_norm: x %s must be [B, C, ...]", desc(x, d1, sizeof d1));
    int64_t c = x->shape[1];
    if (groups < 1 || c % groups != 0)
        return fl_error_set(err, FL_E_INVALID, "group_norm: %d groups do not divide the %lld channels of x %s",
                            groups, (long long)c, desc(x, d1, sizeof d1));
    if (!(eps >= 0.0) || !isfinite(eps))
        return fl_error_set(err, FL_E_INVALID, "group_norm: eps %g must be finite and >= 0", eps);
    if ((st = check_param(be, op, "gamma", &gamma, 1, &c, err)) ||
        (st = check_param(be, op, "beta", &beta, 1, &c, err)))
        return st;
    const fl_tensor *ins[3] = { x, gamma, beta };
    const char *names[3] = { "x", "gamma", "beta" };
    if ((st = check_out(op, out, ins, names, 1, true, err)) ||
        (st = check_out(op, out, ins + 1, names + 1, 2, false, err)))
        return st;
    return be->vt->group_norm(be, out, x, groups, gamma, beta, eps, silu != 0, err);
}

static fl_status lastdim_norm(fl_backend *be, const char *op, fl_tensor *out, const fl_tensor *x,
                              const fl_tensor **gamma, const fl_tensor **beta, double eps, fl_error *err)
{
    fl_status st;
    char d1[96];
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_same_shape(op, "out", out, "x", x, err)))
        return st;
    if (x->ndim < 1)
        return fl_error_set(err, FL_E_SHAPE, "%s: x %s needs at least one dim", op, desc(x, d1, sizeof d1));
    if (!(eps >= 0.0) || !isfinite(eps))
        return fl_error_set(err, FL_E_INVALID, "%s: eps %g must be finite and >= 0", op, eps);
    const int64_t *d = &x->shape[x->ndim - 1];
    if ((st = check_param(be, op, "gamma", gamma, 1, d, err)) ||
        (beta && (st = check_param(be, op, "beta", beta, 1, d, err))))
        return st;
    const fl_tensor *ins[3] = { x, *gamma, beta ? *beta : NULL };
    const char *names[3] = { "x", "gamma", "beta" };
    if ((st = check_out(op, out, ins, names, 1, true, err)) ||
        (st = check_out(op, out, ins + 1, names + 1, 2, false, err)))
        return st;
    return FL_OK;
}

fl_status fl_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                        const fl_tensor *beta, double eps, fl_error *err)
{
    fl_status st;
    if (!be->vt->layer_norm)
        return unsupported(be, "layer_norm", err);
    if ((st = lastdim_norm(be, "layer_norm", out, x, &gamma, &beta, eps, err)))
        return st;
    return be->vt->layer_norm(be, out, x, gamma, beta, eps, err);
}

fl_status fl_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                      double eps, fl_error *err)
{
    fl_status st;
    if (!be->vt->rms_norm)
        return unsupported(be, "rms_norm", err);
    if ((st = lastdim_norm(be, "rms_norm", out, x, &gamma, NULL, eps, err)))
        return st;
    return be->vt->rms_norm(be, out, x, gamma, eps, err);
}

fl_status fl_activation(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in, fl_error *err)
{
    static const char *const names[FL_ACT_COUNT] = { "silu", "gelu", "gelu_tanh" };
    if ((unsigned)act >= FL_ACT_COUNT)
        return fl_error_set(err, FL_E_INVALID, "activation: unknown function %d", (int)act);
    const char *op = names[act];
    fl_status st;
    char d1[96], d2[96];
    if (!be->vt->activation)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "in", in, err)))
        return st;
    fl_tensor ex = FL_TENSOR_NULL;
    if (fl_tensor_expand(&ex, in, out->ndim, out->shape, NULL))
        return fl_error_set(err, FL_E_SHAPE, "%s: input %s does not broadcast to output %s", op,
                            desc(in, d1, sizeof d1), desc(out, d2, sizeof d2));
    if (!(st = check_writable(op, "out", out, err)) &&
        !(st = check_alias(op, "out", out, "in", &ex, true, err)))
        st = be->vt->activation(be, act, out, &ex, err);
    fl_tensor_release(&ex);
    return st;
}

fl_status fl_silu(fl_backend *be, fl_tensor *out, const fl_tensor *in, fl_error *err)
{
    return fl_activation(be, FL_ACT_SILU, out, in, err);
}
fl_status fl_gelu(fl_backend *be, fl_tensor *out, const fl_tensor *in, fl_error *err)
{
    return fl_activation(be, FL_ACT_GELU, out, in, err);
}
fl_status fl_gelu_tanh(fl_backend *be, fl_tensor *out, const fl_tensor *in, fl_error *err)
{
    return fl_activation(be, FL_ACT_GELU_TANH, out, in, err);
}

/* A borrowed rank-4 view of a rank-3 [N, L, D] tensor as [N, 1, L, D]. */
static fl_tensor heads1(const fl_tensor *t)
{
    fl_tensor v = *t;
    v.ndim = 4;
    v.shape[3] = t->shape[2];
    v.stride[3] = t->stride[2];
    v.shape[2] = t->shape[1];
    v.stride[2] = t->stride[1];
    v.shape[1] = 1;
    v.stride[1] = 0;
    return v;
}

fl_status fl_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                       const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err)
{
    const char *op = "attention";
    fl_status st;
    char d1[96], d2[96], d3[96];
    if (!be->vt->attention)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "q", q, err)) ||
        (st = check_act(be, op, "k", k, err)) || (st = check_act(be, op, "v", v, err)))
        return st;
    int r = q->ndim;
    if ((r != 3 && r != 4) || k->ndim != r || v->ndim != r || out->ndim != r)
        return fl_error_set(err, FL_E_SHAPE,
                            "attention: q %s, k %s, v %s must all be [B, NH, L, D] (or all [N, L, D])",
                            desc(q, d1, sizeof d1), desc(k, d2, sizeof d2), desc(v, d3, sizeof d3));
    fl_tensor q4 = r == 3 ? heads1(q) : *q, k4 = r == 3 ? heads1(k) : *k, v4 = r == 3 ? heads1(v) : *v;
    fl_tensor o4 = r == 3 ? heads1(out) : *out;
    int64_t B = q4.shape[0], NH = q4.shape[1], Lq = q4.shape[2], D = q4.shape[3];
    int64_t Lk = k4.shape[2], Dv = v4.shape[3];
    if (k4.shape[3] != D || v4.shape[2] != Lk || D < 1)
        return fl_error_set(err, FL_E_SHAPE,
                            "attention: k %s must have q's head dim %lld (>= 1) and v %s k's length %lld",
                            desc(k, d1, sizeof d1), (long long)D, desc(v, d2, sizeof d2), (long long)Lk);
    int64_t oshape[4] = { B, NH, Lq, Dv }, kshape[4] = { B, NH, Lk, D }, vshape[4] = { B, NH, Lk, Dv };
    if ((st = shape_is(op, "out", &o4, 4, oshape, err)))
        return st;
    fl_tensor ek = FL_TENSOR_NULL, ev = FL_TENSOR_NULL, em = FL_TENSOR_NULL;
    if (fl_tensor_expand(&ek, &k4, 4, kshape, NULL) || fl_tensor_expand(&ev, &v4, 4, vshape, NULL)) {
        st = fl_error_set(err, FL_E_SHAPE, "attention: batch dims of k %s and v %s do not broadcast to q %s",
                          desc(k, d1, sizeof d1), desc(v, d2, sizeof d2), desc(q, d3, sizeof d3));
        goto done;
    }
    if (mask && mask->storage) {
        static const fl_dtype mask_types[] = { FL_F32, FL_U8 };
        int64_t mshape[4] = { B, NH, Lq, Lk };
        if ((st = check_tensor(be, op, "mask", mask, err)) ||
            (st = check_dtype_in(op, "mask", mask, mask_types, 2, err)))
            goto done;
        fl_tensor m = *mask;
        bool ok = mask->ndim <= r;
        if (ok && r == 3) { /* broadcast to [N, Lq, Lk] first, then give it the heads dim */
            fl_tensor m3 = FL_TENSOR_NULL;
            ok = !fl_tensor_expand(&m3, mask, 3, (int64_t[3]){ B, Lq, Lk }, NULL);
            if (ok) {
                fl_tensor h = heads1(&m3);
                ok = !fl_tensor_expand(&em, &h, 4, mshape, NULL);
            }
            fl_tensor_release(&m3);
        } else if (ok) {
            ok = !fl_tensor_expand(&em, &m, 4, mshape, NULL);
        }
        if (!ok) {
            st = fl_error_set(err, FL_E_SHAPE, "attention: mask %s does not broadcast to the scores [%lld, %lld, %lld, %lld]",
                              desc(mask, d1, sizeof d1), (long long)B, (long long)NH, (long long)Lq, (long long)Lk);
            goto done;
        }
    }
    const fl_tensor *ins[4] = { &q4, &ek, &ev, em.storage ? &em : NULL };
    const char *names[4] = { "q", "k", "v", "mask" };
    if ((st = check_out(op, &o4, ins, names, 4, false, err)))
        goto done;
    if (!(scale > 0.0) || !isfinite(scale))
        scale = 1.0 / sqrt((double)D);
    st = be->vt->attention(be, &o4, &q4, &ek, &ev, em.storage ? &em : NULL, scale, err);
done:
    fl_tensor_release(&ek);
    fl_tensor_release(&ev);
    fl_tensor_release(&em);
    return st;
}

fl_status fl_timestep_embedding(fl_backend *be, fl_tensor *out, const fl_tensor *t, fl_temb_opts o,
                                fl_error *err)
{
    const char *op = "timestep_embedding";
    static const fl_dtype t_types[] = { FL_F32, FL_F64 };
    fl_status st;
    char d1[96], d2[96];
    if (!be->vt->timestep_embedding)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_tensor(be, op, "t", t, err)) ||
        (st = check_dtype_in(op, "t", t, t_types, 2, err)))
        return st;
    if (t->ndim != 1 || out->ndim != 2 || out->shape[0] != t->shape[0] || out->shape[1] < 1)
        return fl_error_set(err, FL_E_SHAPE, "timestep_embedding: t %s and out %s must be [N] and [N, dim >= 1]",
                            desc(t, d1, sizeof d1), desc(out, d2, sizeof d2));
    int64_t half = out->shape[1] / 2;
    if (!(o.max_period > 0.0) || !isfinite(o.max_period) || !isfinite(o.freq_shift) ||
        !isfinite(o.scale) || (half > 0 && (double)half - o.freq_shift <= 0.0))
        return fl_error_set(err, FL_E_INVALID,
                            "timestep_embedding: max_period %g must be > 0, and freq_shift %g below half the dim (%lld), scale %g finite",
                            o.max_period, o.freq_shift, (long long)half, o.scale);
    const fl_tensor *ins[1] = { t };
    const char *names[1] = { "t" };
    if ((st = check_out(op, out, ins, names, 1, false, err)))
        return st;
    return be->vt->timestep_embedding(be, out, t, &o, err);
}

fl_status fl_upsample_nearest(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err)
{
    const char *op = "upsample_nearest";
    fl_status st;
    char d1[96], d2[96];
    if (!be->vt->upsample_nearest)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)))
        return st;
    int n = x->ndim;
    bool ok = n >= 2 && out->ndim == n;
    for (int i = 0; ok && i < n - 2; i++)
        ok = out->shape[i] == x->shape[i];
    for (int i = n - 2; ok && i < n; i++)
        ok = x->shape[i] == 0 ? out->shape[i] == 0
                              : out->shape[i] >= x->shape[i] && out->shape[i] % x->shape[i] == 0;
    if (!ok)
        return fl_error_set(err, FL_E_SHAPE,
                            "upsample_nearest: out %s must be x %s with its last two dims multiplied by whole factors",
                            desc(out, d1, sizeof d1), desc(x, d2, sizeof d2));
    const fl_tensor *ins[1] = { x };
    const char *names[1] = { "x" };
    if ((st = check_out(op, out, ins, names, 1, false, err)))
        return st;
    return be->vt->upsample_nearest(be, out, x, err);
}

/* Expands a f32 operand `t` to shape `like`; on error names it. */
static fl_status expand_to(fl_backend *be, const char *op, const char *name, const fl_tensor *t,
                           const fl_tensor *like, fl_tensor *ex, fl_error *err)
{
    fl_status st;
    char d1[96], d2[96];
    if ((st = check_act(be, op, name, t, err)))
        return st;
    if (fl_tensor_expand(ex, t, like->ndim, like->shape, NULL))
        return fl_error_set(err, FL_E_SHAPE, "%s: %s %s does not broadcast to %s", op, name,
                            desc(t, d1, sizeof d1), desc(like, d2, sizeof d2));
    return FL_OK;
}

fl_status fl_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *scale,
                      const fl_tensor *shift, fl_error *err)
{
    const char *op = "modulate";
    fl_status st;
    if (!be->vt->modulate)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_same_shape(op, "out", out, "x", x, err)))
        return st;
    fl_tensor es = FL_TENSOR_NULL, eh = FL_TENSOR_NULL;
    if (!(st = expand_to(be, op, "scale", scale, x, &es, err)) &&
        !(st = expand_to(be, op, "shift", shift, x, &eh, err))) {
        const fl_tensor *ins[3] = { x, &es, &eh };
        const char *names[3] = { "x", "scale", "shift" };
        if (!(st = check_out(op, out, ins, names, 3, true, err)))
            st = be->vt->modulate(be, out, x, &es, &eh, err);
    }
    fl_tensor_release(&es);
    fl_tensor_release(&eh);
    return st;
}

fl_status fl_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res, const fl_tensor *gate,
                      const fl_tensor *y, fl_error *err)
{
    const char *op = "gate_add";
    fl_status st;
    if (!be->vt->gate_add)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "res", res, err)) ||
        (st = check_same_shape(op, "out", out, "res", res, err)))
        return st;
    fl_tensor eg = FL_TENSOR_NULL, ey = FL_TENSOR_NULL;
    if (!(st = expand_to(be, op, "gate", gate, res, &eg, err)) &&
        !(st = expand_to(be, op, "y", y, res, &ey, err))) {
        const fl_tensor *ins[3] = { res, &eg, &ey };
        const char *names[3] = { "res", "gate", "y" };
        if (!(st = check_out(op, out, ins, names, 3, true, err)))
            st = be->vt->gate_add(be, out, res, &eg, &ey, err);
    }
    fl_tensor_release(&eg);
    fl_tensor_release(&ey);
    return st;
}

fl_status fl_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_rope_opts o, fl_error *err)
{
    const char *op = "rope";
    fl_status st;
    char d1[96];
    if (!be->vt->rope)
        return unsupported(be, op, err);
    if ((st = check_act(be, op, "out", out, err)) || (st = check_act(be, op, "x", x, err)) ||
        (st = check_same_shape(op, "out", out, "x", x, err)))
        return st;
    if (x->ndim != 4)
        return fl_error_set(err, FL_E_SHAPE, "rope: x %s must be [B, L, NH, D]", desc(x, d1, sizeof d1));
    int64_t tokens = 1, dims = 0;
    for (int a = 0; a < 3; a++) {
        if (o.grid[a] < 1 || o.grid[a] > (INT64_C(1) << 31) || o.dims[a] < 0 || o.dims[a] % 2 ||
            o.pos0[a] < 0 || o.pos0[a] > (INT64_C(1) << 40))
            return fl_error_set(err, FL_E_INVALID,
                                "rope: axis %d has grid %lld (must be 1..2^31), dims %lld (even, >= 0), pos0 %lld (0..2^40)",
                                a, (long long)o.grid[a], (long long)o.dims[a], (long long)o.pos0[a]);
        tokens *= o.grid[a];
        dims += o.dims[a];
        if (tokens > x->shape[1])
            break; /* refused below; stopping here keeps the product from overflowing */
    }
    if (tokens > x->shape[1] || dims > x->shape[3] || !(o.theta > 0.0) || !isfinite(o.theta))
        return fl_error_set(err, FL_E_SHAPE,
                            "rope: x %s has fewer tokens than the grid %lld x %lld x %lld, or a head dim below "
                            "the rotated %lld, or theta %g is not > 0",
                            desc(x, d1, sizeof d1), (long long)o.grid[0], (long long)o.grid[1],
                            (long long)o.grid[2], (long long)dims, o.theta);
    const fl_tensor *ins[1] = { x };
    const char *names[1] = { "x" };
    if ((st = check_out(op, out, ins, names, 1, true, err)))
        return st;
    return be->vt->rope(be, out, x, &o, err);
}

/* ---------------------------------------------------------------- layouts */

fl_status fl_concat(fl_backend *be, fl_tensor *out, const fl_tensor *const *inputs, int n, int axis,
                    fl_error *err)
{
    const char *op = "concat";
    fl_status st;
    char d1[96], d2[96];
    if (!out || !out->storage || !inputs || n < 1)
        return fl_error_set(err, FL_E_INVALID, "concat: needs an output and at least one input (got %d)", n);
    if ((st = norm_axis(op, &axis, out->ndim, err)))
        return st;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const fl_tensor *t = inputs[i];
        if (!t || !t->storage)
            return fl_error_set(err, FL_E_INVALID, "concat: input %d is an empty tensor", i);
        bool ok = t->ndim == out->ndim;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = d == axis || t->shape[d] == out->shape[d];
        if (!ok)
            return fl_error_set(err, FL_E_SHAPE, "concat: input %d %s does not fit out %s along axis %d", i,
                                desc(t, d1, sizeof d1), desc(out, d2, sizeof d2), axis);
        if ((st = check_alias(op, "out", out, "an input", t, false, err)))
            return fl_error_prefix(err, "input %d", i);
        total += t->shape[axis];
    }
    if (total != out->shape[axis])
        return fl_error_set(err, FL_E_SHAPE, "concat: the inputs' sizes along axis %d add up to %lld but out %s has %lld",
                            axis, (long long)total, desc(out, d1, sizeof d1), (long long)out->shape[axis]);
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        fl_tensor part = *out; /* borrowed narrow view */
        part.shape[axis] = inputs[i]->shape[axis];
        part.offset = out->offset + at * out->stride[axis];
        if (part.shape[axis] > 0 && (st = fl_copy(be, &part, inputs[i], err)))
            return fl_error_prefix(err, "concat: input %d", i);
        at += inputs[i]->shape[axis];
    }
    return FL_OK;
}

/* Borrowed 5-D view [B, F, C, H, W] of x (B F, C, H, W). */
static fl_status split_frames(const char *op, const fl_tensor *x, int64_t frames, fl_tensor *v,
                              fl_error *err)
{
    char d1[96];
    if (!x || !x->storage || x->ndim != 4 || frames < 1 || x->shape[0] % frames != 0)
        return fl_error_set(err, FL_E_SHAPE, "%s: x %s must be [B F, C, H, W] with B F a multiple of %lld frames",
                            op, x && x->storage ? desc(x, d1, sizeof d1) : "(empty)", (long long)frames);
    *v = *x;
    v->ndim = 5;
    for (int i = 4; i >= 2; i--) {
        v->shape[i] = x->shape[i - 1];
        v->stride[i] = x->stride[i - 1];
    }
    v->shape[0] = x->shape[0] / frames;
    v->stride[0] = x->stride[0] * frames;
    v->shape[1] = frames;
    v->stride[1] = x->stride[0];
    return FL_OK;
}

/* Borrowed 5-D view [B, H, W, F, C] of t (B H W, F, C), given H and W. */
static fl_status split_pixels(const char *op, const fl_tensor *t, int64_t b, int64_t f, int64_t c,
                              int64_t h, int64_t w, fl_tensor *v, fl_error *err)
{
    int64_t want[3] = { b * h * w, f, c };
    fl_status st;
    if (!t || !t->storage)
        return fl_error_set(err, FL_E_INVALID, "%s: the tokens tensor is empty", op);
    if ((st = shape_is(op, "tokens", t, 3, want, err)))
        return st;
    *v = *t;
    v->ndim = 5;
    v->shape[0] = b;
    v->stride[0] = t->stride[0] * h * w;
    v->shape[1] = h;
    v->stride[1] = t->stride[0] * w;
    v->shape[2] = w;
    v->stride[2] = t->stride[0];
    v->shape[3] = f;
    v->stride[3] = t->stride[1];
    v->shape[4] = c;
    v->stride[4] = t->stride[2];
    return FL_OK;
}

fl_status fl_frames_to_tokens(fl_backend *be, fl_tensor *out, const fl_tensor *x, int64_t frames,
                              fl_error *err)
{
    const char *op = "frames_to_tokens";
    fl_tensor xv, ov;
    fl_status st;
    if ((st = split_frames(op, x, frames, &xv, err)) ||
        (st = split_pixels(op, out, xv.shape[0], frames, xv.shape[2], xv.shape[3], xv.shape[4], &ov, err)))
        return st;
    /* [B, F, C, H, W] -> [B, H, W, F, C] */
    static const int perm[5] = { 0, 3, 4, 1, 2 };
    fl_tensor p = xv;
    for (int i = 0; i < 5; i++) {
        p.shape[i] = xv.shape[perm[i]];
        p.stride[i] = xv.stride[perm[i]];
    }
    return fl_copy(be, &ov, &p, err);
}

fl_status fl_tokens_to_frames(fl_backend *be, fl_tensor *out, const fl_tensor *x, int64_t frames,
                              fl_error *err)
{
    const char *op = "tokens_to_frames";
    fl_tensor ov, xv;
    fl_status st;
    if ((st = split_frames(op, out, frames, &ov, err)) ||
        (st = split_pixels(op, x, ov.shape[0], frames, ov.shape[2], ov.shape[3], ov.shape[4], &xv, err)))
        return st;
    /* out [B, F, C, H, W] seen as [B, H, W, F, C] */
    static const int perm[5] = { 0, 3, 4, 1, 2 };
    fl_tensor p = ov;
    for (int i = 0; i < 5; i++) {
        p.shape[i] = ov.shape[perm[i]];
        p.stride[i] = ov.stride[perm[i]];
    }
    return fl_copy(be, &p, &xv, err);
}

/* Borrowed views of a map m (N, C, H, W) and tokens t (N, H W, C), both as [N, H, W, C]. */
static fl_status channel_views(const char *op, const fl_tensor *m, const fl_tensor *t, fl_tensor *mv,
                               fl_tensor *tv, fl_error *err)
{
    char d1[96], d2[96];
    if (!m || !m->storage || !t || !t->storage)
        return fl_error_set(err, FL_E_INVALID, "%s: empty tensor", op);
    if (m->ndim != 4 || t->ndim != 3 || t->shape[0] != m->shape[0] ||
        t->shape[1] != m->shape[2] * m->shape[3] || t->shape[2] != m->shape[1])
        return fl_error_set(err, FL_E_SHAPE, "%s: map %s and tokens %s must be (N, C, H, W) and (N, H W, C)",
                            op, desc(m, d1, sizeof d1), desc(t, d2, sizeof d2));
    static const int perm[4] = { 0, 2, 3, 1 };
    *mv = *m;
    for (int i = 0; i < 4; i++) {
        mv->shape[i] = m->shape[perm[i]];
        mv->stride[i] = m->stride[perm[i]];
    }
    *tv = *t;
    tv->ndim = 4;
    tv->shape[3] = t->shape[2];
    tv->stride[3] = t->stride[2];
    tv->shape[2] = m->shape[3];
    tv->stride[2] = t->stride[1];
    tv->shape[1] = m->shape[2];
    tv->stride[1] = t->stride[1] * m->shape[3];
    return FL_OK;
}

fl_status fl_channels_to_tokens(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err)
{
    fl_tensor mv, tv;
    fl_status st = channel_views("channels_to_tokens", x, out, &mv, &tv, err);
    return st ? st : fl_copy(be, &tv, &mv, err);
}

fl_status fl_tokens_to_channels(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err)
{
    fl_tensor mv, tv;
    fl_status st = channel_views("tokens_to_channels", out, x, &mv, &tv, err);
    return st ? st : fl_copy(be, &mv, &tv, err);
}

fl_status fl_view_frames_as_video(fl_tensor *out, const fl_tensor *x, int64_t frames, fl_error *err)
{
    fl_tensor v;
    fl_status st = split_frames("view_frames_as_video", x, frames, &v, err);
    if (st)
        return st;
    /* [B, F, C, H, W] -> [B, C, F, H, W] */
    int64_t s = v.shape[1], t = v.stride[1];
    v.shape[1] = v.shape[2];
    v.stride[1] = v.stride[2];
    v.shape[2] = s;
    v.stride[2] = t;
    fl_tensor_retain(out, &v);
    return FL_OK;
}
