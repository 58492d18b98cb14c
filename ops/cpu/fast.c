/* The optimised CPU elementwise, copy, reduction and softmax kernels: dimensions are
 * coalesced so the innermost loop runs over the longest stretch with fixed strides, in
 * the tensors' own precision, and the unit-stride case is a plain loop the compiler
 * vectorises. Checked against ref.c by tests/test_ops.c. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

#define MAXT 3

/* Shape and per-tensor strides after merging dims that are contiguous with each other in
 * every tensor and dropping size-1 dims. */
typedef struct walk {
    int ndim;
    int nt;
    int64_t shape[FL_MAX_DIMS];
    int64_t stride[MAXT][FL_MAX_DIMS];
} walk;

static void walk_init(walk *w, int nt, const fl_tensor *const *ts)
{
    const fl_tensor *t0 = ts[0];
    w->nt = nt;
    w->ndim = 0;
    for (int d = 0; d < t0->ndim; d++) {
        if (t0->shape[d] == 1)
            continue;
        int n = w->ndim;
        bool merge = n > 0;
        for (int k = 0; k < nt && merge; k++)
            merge = w->stride[k][n - 1] == ts[k]->stride[d] * t0->shape[d];
        if (merge) {
            w->shape[n - 1] *= t0->shape[d];
            for (int k = 0; k < nt; k++)
                w->stride[k][n - 1] = ts[k]->stride[d];
        } else {
            w->shape[n] = t0->shape[d];
            for (int k = 0; k < nt; k++)
                w->stride[k][n] = ts[k]->stride[d];
            w->ndim++;
        }
    }
    if (w->ndim == 0) { /* a scalar or all size-1: one element */
        w->ndim = 1;
        w->shape[0] = 1;
        for (int k = 0; k < nt; k++)
            w->stride[k][0] = 1;
    }
}

/* Calls body(n, offs, inner strides) for each innermost run. */
#define WALK(w, body)                                                                          \
    do {                                                                                       \
        int64_t idx_[FL_MAX_DIMS] = { 0 }, offs[MAXT] = { 0, 0, 0 };                           \
        int last_ = (w).ndim - 1;                                                              \
        int64_t outer_ = 1;                                                                    \
        for (int d_ = 0; d_ < last_; d_++)                                                     \
            outer_ *= (w).shape[d_];                                                           \
        const int64_t n = (w).shape[last_];                                                    \
        for (int64_t o_ = 0; o_ < outer_; o_++) {                                              \
            body;                                                                              \
            for (int d_ = last_ - 1; d_ >= 0; d_--) {                                          \
                idx_[d_]++;                                                                    \
                for (int k_ = 0; k_ < (w).nt; k_++)                                            \
                    offs[k_] += (w).stride[k_][d_];                                            \
                if (idx_[d_] < (w).shape[d_])                                                  \
                    break;                                                                     \
                for (int k_ = 0; k_ < (w).nt; k_++)                                            \
                    offs[k_] -= (w).stride[k_][d_] * (w).shape[d_];                            \
                idx_[d_] = 0;                                                                  \
            }                                                                                  \
        }                                                                                      \
    } while (0)

/* Runs EXPR over i < n twice-specialised: unit strides (vectorisable) and general. */
#define LOOP1(EXPR)                                                                            \
    do {                                                                                       \
        if (so == 1 && sx == 1) {                                                              \
            for (int64_t i = 0; i < n; i++) {                                                  \
                const int64_t io = i, ix = i;                                                  \
                EXPR;                                                                          \
            }                                                                                  \
        } else {                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                  \
                const int64_t io = i * so, ix = i * sx;                                        \
                EXPR;                                                                          \
            }                                                                                  \
        }                                                                                      \
    } while (0)

#define LOOP2(EXPR)                                                                            \
    do {                                                                                       \
        if (so == 1 && sx == 1 && sy == 1) {                                                   \
            for (int64_t i = 0; i < n; i++) {                                                  \
                const int64_t io = i, ix = i, iy = i;                                          \
                EXPR;                                                                          \
            }                                                                                  \
        } else if (so == 1 && sx == 1 && sy == 0) {                                            \
            for (int64_t i = 0; i < n; i++) {                                                  \
                const int64_t io = i, ix = i, iy = 0;                                          \
                EXPR;                                                                          \
            }                                                                                  \
        } else {                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                  \
                const int64_t io = i * so, ix = i * sx, iy = i * sy;                           \
                EXPR;                                                                          \
            }                                                                                  \
        }                                                                                      \
    } while (0)

#define DEFINE_KERNELS(T, SUF, EXPF, LOGF, SQRTF, FABSF)                                           \
    static void unary_##SUF(fl_unop op, int64_t n, T *o, int64_t so, const T *x, int64_t sx, T a, \
                            T b)                                                                  \
    {                                                                                             \
        switch (op) {                                                                             \
        case FL_UN_NEG: LOOP1(o[io] = -x[ix]); break;                                             \
        case FL_UN_ABS: LOOP1(o[io] = FABSF(x[ix])); break;                                       \
        case FL_UN_SQUARE: LOOP1(o[io] = x[ix] * x[ix]); break;                                   \
        case FL_UN_SQRT: LOOP1(o[io] = SQRTF(x[ix])); break;                                      \
        case FL_UN_EXP: LOOP1(o[io] = EXPF(x[ix])); break;                                        \
        case FL_UN_LOG: LOOP1(o[io] = LOGF(x[ix])); break;                                        \
        case FL_UN_AFFINE: LOOP1(o[io] = a * x[ix] + b); break;                                   \
        case FL_UN_COUNT: break;                                                                  \
        }                                                                                         \
    }                                                                                             \
    static T max_##SUF(T p, T q) { return p != p || q != q ? (T)NAN : p > q ? p : q; }            \
    static T min_##SUF(T p, T q) { return p != p || q != q ? (T)NAN : p < q ? p : q; }            \
    static void binary_##SUF(fl_binop op, int64_t n, T *o, int64_t so, const T *x, int64_t sx,    \
                             const T *y, int64_t sy)                                              \
    {                                                                                             \
        switch (op) {                                                                             \
        case FL_BIN_ADD: LOOP2(o[io] = x[ix] + y[iy]); break;                                     \
        case FL_BIN_SUB: LOOP2(o[io] = x[ix] - y[iy]); break;                                     \
        case FL_BIN_MUL: LOOP2(o[io] = x[ix] * y[iy]); break;                                     \
        case FL_BIN_DIV: LOOP2(o[io] = x[ix] / y[iy]); break;                                     \
        case FL_BIN_MAX: LOOP2(o[io] = max_##SUF(x[ix], y[iy])); break;                           \
        case FL_BIN_MIN: LOOP2(o[io] = min_##SUF(x[ix], y[iy])); break;                           \
        case FL_BIN_COUNT: break;                                                                 \
        }                                                                                         \
    }

DEFINE_KERNELS(float, f32, expf, logf, sqrtf, fabsf)
DEFINE_KERNELS(double, f64, exp, log, sqrt, fabs)

fl_status fl_cpu_fast_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in,
                            double a, double b, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[2] = { out, in };
    walk w;
    walk_init(&w, 2, ts);
    const int64_t so = w.stride[0][w.ndim - 1], sx = w.stride[1][w.ndim - 1];
    if (out->dtype == FL_F32) {
        float *o = fl_tensor_data(out);
        const float *x = fl_tensor_data(in);
        WALK(w, unary_f32(op, n, o + offs[0], so, x + offs[1], sx, (float)a, (float)b));
    } else {
        double *o = fl_tensor_data(out);
        const double *x = fl_tensor_data(in);
        WALK(w, unary_f64(op, n, o + offs[0], so, x + offs[1], sx, a, b));
    }
    return FL_OK;
}

fl_status fl_cpu_fast_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                             const fl_tensor *b, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[3] = { out, a, b };
    walk w;
    walk_init(&w, 3, ts);
    const int64_t so = w.stride[0][w.ndim - 1], sx = w.stride[1][w.ndim - 1],
                  sy = w.stride[2][w.ndim - 1];
    if (out->dtype == FL_F32) {
        float *o = fl_tensor_data(out);
        const float *x = fl_tensor_data(a), *y = fl_tensor_data(b);
        WALK(w, binary_f32(op, n, o + offs[0], so, x + offs[1], sx, y + offs[2], sy));
    } else {
        double *o = fl_tensor_data(out);
        const double *x = fl_tensor_data(a), *y = fl_tensor_data(b);
        WALK(w, binary_f64(op, n, o + offs[0], so, x + offs[1], sx, y + offs[2], sy));
    }
    return FL_OK;
}

/* Same-dtype copies and the f32 <-> f16/bf16 conversions run here; the rest in ref.c. */
fl_status fl_cpu_fast_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err)
{
    fl_dtype dt = dst->dtype, st = src->dtype;
    bool same = dt == st;
    bool conv = (st == FL_F32 && (dt == FL_F16 || dt == FL_BF16)) ||
                (dt == FL_F32 && (st == FL_F16 || st == FL_BF16));
    if (!same && !conv)
        return fl_cpu_ref_copy(be, dst, src, err);
    const fl_tensor *ts[2] = { dst, src };
    walk w;
    walk_init(&w, 2, ts);
    const int64_t so = w.stride[0][w.ndim - 1], sx = w.stride[1][w.ndim - 1];
    char *o = fl_tensor_data(dst);
    const char *x = fl_tensor_data(src);
    size_t es = fl_dtype_size(dt);
    if (same) {
        WALK(w, {
            char *po = o + (size_t)offs[0] * es;
            const char *px = x + (size_t)offs[1] * es;
            if (po == px && so == sx)
                ; /* in place on the identical view: nothing to move */
            else if (so == 1 && sx == 1)
                memcpy(po, px, (size_t)n * es);
            else
                for (int64_t i = 0; i < n; i++)
                    memcpy(po + (size_t)(i * so) * es, px + (size_t)(i * sx) * es, es);
        });
        return FL_OK;
    }
    if (st == FL_F32) {
        uint16_t *po = (uint16_t *)(void *)o;
        const float *px = (const float *)(const void *)x;
        if (dt == FL_F16)
            WALK(w, LOOP1(po[offs[0] + io] = fl_f32_to_f16(px[offs[1] + ix])));
        else
            WALK(w, LOOP1(po[offs[0] + io] = fl_f32_to_bf16(px[offs[1] + ix])));
    } else {
        float *po = (float *)(void *)o;
        const uint16_t *px = (const uint16_t *)(const void *)x;
        if (st == FL_F16)
            WALK(w, LOOP1(po[offs[0] + io] = fl_f16_to_f32(px[offs[1] + ix])));
        else
            WALK(w, LOOP1(po[offs[0] + io] = fl_bf16_to_f32(px[offs[1] + ix])));
    }
    return FL_OK;
}

fl_status fl_cpu_fast_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err)
{
    (void)be;
    (void)err;
    const fl_tensor *ts[1] = { dst };
    walk w;
    walk_init(&w, 1, ts);
    const int64_t so = w.stride[0][w.ndim - 1];
    if (dst->dtype == FL_F32) {
        float *o = fl_tensor_data(dst), v = (float)value;
        WALK(w, for (int64_t i = 0; i < n; i++) o[offs[0] + i * so] = v);
    } else {
        double *o = fl_tensor_data(dst);
        WALK(w, for (int64_t i = 0; i < n; i++) o[offs[0] + i * so] = value);
    }
    return FL_OK;
}

/* Reductions: the axis is moved last; each lane is summed in double. For a unit-stride
 * axis this is a straight pass over memory. */
#define DEFINE_REDUCE(T, SUF)                                                                  \
    static double lane_##SUF(fl_reduceop op, const T *x, int64_t len, int64_t st)              \
    {                                                                                          \
        double r = 0.0;                                                                        \
        switch (op) {                                                                          \
        case FL_RED_SUM:                                                                       \
        case FL_RED_MEAN:                                                                      \
            for (int64_t k = 0; k < len; k++)                                                  \
                r += (double)x[k * st];                                                        \
            return op == FL_RED_MEAN ? r / (double)len : r;                                    \
        case FL_RED_MAX:                                                                       \
        case FL_RED_MIN: {                                                                     \
            T m = x[0];                                                                        \
            for (int64_t k = 1; k < len; k++)                                                  \
                m = op == FL_RED_MAX ? max_##SUF(m, x[k * st]) : min_##SUF(m, x[k * st]);      \
            return (double)m;                                                                  \
        }                                                                                      \
        case FL_RED_VAR:                                                                       \
        case FL_RED_VAR_UNBIASED: {                                                            \
            double mean = 0.0;                                                                 \
            for (int64_t k = 0; k < len; k++)                                                  \
                mean += (double)x[k * st];                                                     \
            mean /= (double)len;                                                               \
            for (int64_t k = 0; k < len; k++) {                                                \
                double d = (double)x[k * st] - mean;                                           \
                r += d * d;                                                                    \
            }                                                                                  \
            return r / (double)(op == FL_RED_VAR ? len : len - 1);                             \
        }                                                                                      \
        case FL_RED_COUNT: break;                                                              \
        }                                                                                      \
        return r;                                                                              \
    }

DEFINE_REDUCE(float, f32)
DEFINE_REDUCE(double, f64)

/* Lanes: `in` with `axis` collapsed, walked together with `out` (axis kept at size 1). */
static void lanes_walk(walk *w, const fl_tensor *out, const fl_tensor *in, int axis)
{
    fl_tensor lanes = *in;
    lanes.shape[axis] = 1;
    const fl_tensor *ts[2] = { &lanes, out };
    walk_init(w, 2, ts);
}

fl_status fl_cpu_fast_reduce(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in,
                             int axis, fl_error *err)
{
    (void)be;
    (void)err;
    int64_t len = in->shape[axis], st = in->stride[axis];
    if (len == 0) /* only sum is allowed on an empty axis */
        return fl_cpu_fast_fill(be, out, 0.0, err);
    walk w;
    lanes_walk(&w, out, in, axis);
    const int64_t si = w.stride[0][w.ndim - 1], so = w.stride[1][w.ndim - 1];
    if (in->dtype == FL_F32) {
        const float *x = fl_tensor_data(in);
        float *o = fl_tensor_data(out);
        WALK(w, for (int64_t i = 0; i < n; i++) o[offs[1] + i * so] =
                    (float)lane_f32(op, x + offs[0] + i * si, len, st));
    } else {
        const double *x = fl_tensor_data(in);
        double *o = fl_tensor_data(out);
        WALK(w, for (int64_t i = 0; i < n; i++) o[offs[1] + i * so] =
                    lane_f64(op, x + offs[0] + i * si, len, st));
    }
    return FL_OK;
}

#define DEFINE_SOFTMAX(T, SUF, EXPF)                                                           \
    static void softmax_##SUF(T *o, int64_t so, const T *x, int64_t sx, int64_t len)           \
    {                                                                                          \
        T m = -(T)INFINITY;                                                                    \
        for (int64_t k = 0; k < len; k++)                                                      \
            m = x[k * sx] != x[k * sx] || x[k * sx] > m ? x[k * sx] : m;                       \
        double s = 0.0;                                                                        \
        for (int64_t k = 0; k < len; k++) {                                                    \
            T e = EXPF(x[k * sx] - m);                                                         \
            o[k * so] = e;                                                                     \
            s += (double)e;                                                                    \
        }                                                                                      \
        T inv = (T)(1.0 / s);                                                                  \
        for (int64_t k = 0; k < len; k++)                                                      \
            o[k * so] *= inv;                                                                  \
    }

DEFINE_SOFTMAX(float, f32, expf)
DEFINE_SOFTMAX(double, f64, exp)

fl_status fl_cpu_fast_softmax(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis,
                              fl_error *err)
{
    (void)be;
    (void)err;
    int64_t len = in->shape[axis];
    if (len == 0 || fl_tensor_numel(in) == 0)
        return FL_OK;
    fl_tensor lanes_out = *out;
    lanes_out.shape[axis] = 1;
    walk w;
    lanes_walk(&w, &lanes_out, in, axis);
    const int64_t si = w.stride[0][w.ndim - 1], so = w.stride[1][w.ndim - 1];
    int64_t sxa = in->stride[axis], soa = out->stride[axis];
    if (in->dtype == FL_F32) {
        const float *x = fl_tensor_data(in);
        float *o = fl_tensor_data(out);
        WALK(w, for (int64_t i = 0; i < n; i++)
                    softmax_f32(o + offs[1] + i * so, soa, x + offs[0] + i * si, sxa, len));
    } else {
        const double *x = fl_tensor_data(in);
        double *o = fl_tensor_data(out);
        WALK(w, for (int64_t i = 0; i < n; i++)
                    softmax_f64(o + offs[1] + i * so, soa, x + offs[0] + i * si, sxa, len));
    }
    return FL_OK;
}
