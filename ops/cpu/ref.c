/* The CPU reference kernels: plain C, every element visited through its own strides,
 * arithmetic in double. Slow and obviously right; the yardstick for every other path. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* Advances a row-major multi-index over `shape` and the element offsets of `nt` tensors
 * that share that shape. */
static void step_index(int ndim, const int64_t *shape, int64_t *idx, int nt,
                       const fl_tensor *const *ts, int64_t *offs)
{
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d]++;
        for (int k = 0; k < nt; k++)
            offs[k] += ts[k]->stride[d];
        if (idx[d] < shape[d])
            return;
        for (int k = 0; k < nt; k++)
            offs[k] -= ts[k]->stride[d] * shape[d];
        idx[d] = 0;
    }
}

fl_status fl_cpu_ref_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[2] = { dst, src };
    int64_t idx[FL_MAX_DIMS] = { 0 }, offs[2] = { 0, 0 };
    int64_t n = fl_tensor_numel(dst);
    char *d = fl_tensor_data(dst);
    const char *s = fl_tensor_data(src);
    size_t ds = fl_dtype_size(dst->dtype), ss = fl_dtype_size(src->dtype);
    for (int64_t i = 0; i < n; i++) {
        if (dst->dtype == src->dtype) {
            memcpy(d + (size_t)offs[0] * ds, s + (size_t)offs[1] * ss, ds);
        } else if (fl_dtype_is_complex(dst->dtype)) {
            fl_dtype dr = fl_dtype_real_of(dst->dtype), sr = fl_dtype_real_of(src->dtype);
            for (int part = 0; part < 2; part++)
                fl_dtype_store(dr, d, (size_t)offs[0] * 2 + (size_t)part,
                               fl_dtype_load(sr, s, (size_t)offs[1] * 2 + (size_t)part));
        } else if (dst->dtype == FL_F16 && src->dtype == FL_F32) {
            /* direct, so f32 -> f16 rounds once */
            ((uint16_t *)d)[offs[0]] = fl_f32_to_f16(((const float *)s)[offs[1]]);
        } else if (dst->dtype == FL_BF16 && src->dtype == FL_F32) {
            ((uint16_t *)d)[offs[0]] = fl_f32_to_bf16(((const float *)s)[offs[1]]);
        } else {
            fl_dtype_store(dst->dtype, d, (size_t)offs[0], fl_dtype_load(src->dtype, s, (size_t)offs[1]));
        }
        step_index(dst->ndim, dst->shape, idx, 2, ts, offs);
    }
    return FL_OK;
}

fl_status fl_cpu_ref_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[1] = { dst };
    int64_t idx[FL_MAX_DIMS] = { 0 }, off = 0;
    int64_t n = fl_tensor_numel(dst);
    void *d = fl_tensor_data(dst);
    for (int64_t i = 0; i < n; i++) {
        fl_dtype_store(dst->dtype, d, (size_t)off, value);
        step_index(dst->ndim, dst->shape, idx, 1, ts, &off);
    }
    return FL_OK;
}

static double unop(fl_unop op, double x, double a, double b)
{
    switch (op) {
    case FL_UN_NEG: return -x;
    case FL_UN_ABS: return fabs(x);
    case FL_UN_SQUARE: return x * x;
    case FL_UN_SQRT: return sqrt(x);
    case FL_UN_EXP: return exp(x);
    case FL_UN_LOG: return log(x);
    case FL_UN_AFFINE: return a * x + b;
    case FL_UN_COUNT: break;
    }
    return NAN;
}

/* max/min propagate NaN, as numpy's maximum/minimum do. */
static double binop(fl_binop op, double x, double y)
{
    switch (op) {
    case FL_BIN_ADD: return x + y;
    case FL_BIN_SUB: return x - y;
    case FL_BIN_MUL: return x * y;
    case FL_BIN_DIV: return x / y;
    case FL_BIN_MAX: return isnan(x) || isnan(y) ? NAN : x > y ? x : y;
    case FL_BIN_MIN: return isnan(x) || isnan(y) ? NAN : x < y ? x : y;
    case FL_BIN_COUNT: break;
    }
    return NAN;
}

fl_status fl_cpu_ref_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in,
                           double a, double b, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[2] = { out, in };
    int64_t idx[FL_MAX_DIMS] = { 0 }, offs[2] = { 0, 0 };
    int64_t n = fl_tensor_numel(out);
    void *o = fl_tensor_data(out);
    const void *x = fl_tensor_data(in);
    for (int64_t i = 0; i < n; i++) {
        double v = fl_dtype_load(in->dtype, x, (size_t)offs[1]);
        /* f32 affine is computed in f32 so every backend rounds the same two operations */
        if (op == FL_UN_AFFINE && in->dtype == FL_F32)
            v = (double)((float)a * (float)v + (float)b);
        else
            v = unop(op, v, a, b);
        fl_dtype_store(out->dtype, o, (size_t)offs[0], v);
        step_index(out->ndim, out->shape, idx, 2, ts, offs);
    }
    return FL_OK;
}

fl_status fl_cpu_ref_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                            const fl_tensor *b, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[3] = { out, a, b };
    int64_t idx[FL_MAX_DIMS] = { 0 }, offs[3] = { 0, 0, 0 };
    int64_t n = fl_tensor_numel(out);
    void *o = fl_tensor_data(out);
    const void *x = fl_tensor_data(a), *y = fl_tensor_data(b);
    for (int64_t i = 0; i < n; i++) {
        double v = binop(op, fl_dtype_load(a->dtype, x, (size_t)offs[1]),
                         fl_dtype_load(b->dtype, y, (size_t)offs[2]));
        fl_dtype_store(out->dtype, o, (size_t)offs[0], v);
        step_index(out->ndim, out->shape, idx, 3, ts, offs);
    }
    return FL_OK;
}

/* Iterates the output positions of an axis reduction: `out` keeps the axis with size 1.
 * For each position calls fn with the input offset of the first element of the lane. */
typedef void (*lane_fn)(void *ctx, int64_t in_off, int64_t out_off);

static void for_each_lane(const fl_tensor *out, const fl_tensor *in, int axis, lane_fn fn, void *ctx)
{
    fl_tensor lanes = *in; /* in's shape with the axis collapsed: one entry per lane */
    lanes.shape[axis] = 1;
    const fl_tensor *ts[2] = { &lanes, out };
    int64_t idx[FL_MAX_DIMS] = { 0 }, offs[2] = { 0, 0 };
    int64_t n = fl_tensor_numel(&lanes);
    for (int64_t i = 0; i < n; i++) {
        fn(ctx, offs[0], offs[1]);
        step_index(lanes.ndim, lanes.shape, idx, 2, ts, offs);
    }
}

struct reduce_ctx {
    fl_reduceop op;
    const fl_tensor *in, *out;
    int axis;
};

static void reduce_lane(void *vctx, int64_t in_off, int64_t out_off)
{
    struct reduce_ctx *c = vctx;
    int64_t len = c->in->shape[c->axis], st = c->in->stride[c->axis];
    const void *x = fl_tensor_data(c->in);
    double r = 0.0;
    switch (c->op) {
    case FL_RED_SUM:
    case FL_RED_MEAN:
        for (int64_t k = 0; k < len; k++)
            r += fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * st));
        if (c->op == FL_RED_MEAN)
            r /= (double)len;
        break;
    case FL_RED_MAX:
    case FL_RED_MIN:
        r = fl_dtype_load(c->in->dtype, x, (size_t)in_off);
        for (int64_t k = 1; k < len; k++)
            r = binop(c->op == FL_RED_MAX ? FL_BIN_MAX : FL_BIN_MIN, r,
                      fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * st)));
        break;
    case FL_RED_VAR:
    case FL_RED_VAR_UNBIASED: {
        double mean = 0.0;
        for (int64_t k = 0; k < len; k++)
            mean += fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * st));
        mean /= (double)len;
        for (int64_t k = 0; k < len; k++) {
            double dlt = fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * st)) - mean;
            r += dlt * dlt;
        }
        r /= (double)(c->op == FL_RED_VAR ? len : len - 1);
        break;
    }
    case FL_RED_COUNT: break;
    }
    fl_dtype_store(c->out->dtype, fl_tensor_data(c->out), (size_t)out_off, r);
}

fl_status fl_cpu_ref_reduce(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in,
                            int axis, fl_error *err)
{
    (void)be;
    (void)err;
    struct reduce_ctx c = { op, in, out, axis };
    for_each_lane(out, in, axis, reduce_lane, &c);
    return FL_OK;
}

struct softmax_ctx {
    const fl_tensor *in, *out;
    int axis;
};

static void softmax_lane(void *vctx, int64_t in_off, int64_t out_off)
{
    (void)out_off;
    struct softmax_ctx *c = vctx;
    int64_t len = c->in->shape[c->axis], si = c->in->stride[c->axis], so = c->out->stride[c->axis];
    /* the out lane starts where the in lane does, shifted by out's own strides */
    const void *x = fl_tensor_data(c->in);
    void *o = fl_tensor_data(c->out);
    double m = -INFINITY, s = 0.0;
    for (int64_t k = 0; k < len; k++) {
        double v = fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * si));
        m = isnan(v) || v > m ? v : m;
    }
    for (int64_t k = 0; k < len; k++)
        s += exp(fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * si)) - m);
    for (int64_t k = 0; k < len; k++)
        fl_dtype_store(c->out->dtype, o, (size_t)(out_off + k * so),
                       exp(fl_dtype_load(c->in->dtype, x, (size_t)(in_off + k * si)) - m) / s);
}

fl_status fl_cpu_ref_softmax(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis,
                             fl_error *err)
{
    (void)be;
    (void)err;
    struct softmax_ctx c = { in, out, axis };
    fl_tensor lanes_out = *out;
    lanes_out.shape[axis] = 1;
    for_each_lane(&lanes_out, in, axis, softmax_lane, &c);
    return FL_OK;
}

fl_status fl_cpu_ref_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                            double alpha, double beta, fl_error *err)
{
    (void)be;
    (void)err;
    int nd = c->ndim;
    int64_t M = c->shape[nd - 2], N = c->shape[nd - 1], K = a->shape[nd - 1];
    int64_t batches = fl_cpu_batch_count(c, 2);
    const void *pa = fl_tensor_data(a), *pb = fl_tensor_data(b);
    void *pc = fl_tensor_data(c);
    for (int64_t bt = 0; bt < batches; bt++) {
        int64_t oa = fl_cpu_batch_offset(a, 2, bt), ob = fl_cpu_batch_offset(b, 2, bt),
                oc = fl_cpu_batch_offset(c, 2, bt);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0.0;
                for (int64_t k = 0; k < K; k++)
                    s += fl_dtype_load(a->dtype, pa, (size_t)(oa + i * a->stride[nd - 2] + k * a->stride[nd - 1])) *
                         fl_dtype_load(b->dtype, pb, (size_t)(ob + k * b->stride[nd - 2] + j * b->stride[nd - 1]));
                size_t co = (size_t)(oc + i * c->stride[nd - 2] + j * c->stride[nd - 1]);
                double r = alpha * s;
                if (beta != 0.0)
                    r += beta * fl_dtype_load(c->dtype, pc, co);
                fl_dtype_store(c->dtype, pc, co, r);
            }
    }
    return FL_OK;
}
