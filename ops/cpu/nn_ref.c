/* The reference neural-network kernels of "cpu-ref": every element through its own
 * strides, arithmetic in double, weights widened exactly from f32/f16/bf16. Slow and
 * obviously right: the yardstick tests/test_nn.c holds every other backend to. */
#include "cpu_internal.h"

#include <math.h>
#include <string.h>

/* Element at element offset `off` of t, as double. */
static double ld(const fl_tensor *t, int64_t off)
{
    return fl_dtype_load(t->dtype, fl_tensor_data(t), (size_t)off);
}

static void put(fl_tensor *t, int64_t off, double v)
{
    fl_dtype_store(t->dtype, fl_tensor_data(t), (size_t)off, v);
}

/* Element i of an optional vector (bias, gamma, beta), or `absent` when there is none. */
static double vec(const fl_tensor *t, int64_t i, double absent)
{
    return t ? ld(t, i * t->stride[0]) : absent;
}

/* Element offset of the multi-index of linear position i (row-major over shape). */
static int64_t offset_at(const fl_tensor *t, const int64_t *shape, int ndim, int64_t i)
{
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; d--) {
        off += (i % shape[d]) * t->stride[d];
        i /= shape[d];
    }
    return off;
}

fl_status fl_cpu_ref_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                            const fl_tensor *bias, fl_error *err)
{
    (void)be;
    (void)err;
    int nd = x->ndim;
    int64_t K = x->shape[nd - 1], N = w->shape[0], rows = fl_cpu_batch_count(x, 1);
    for (int64_t r = 0; r < rows; r++) {
        int64_t xo = fl_cpu_batch_offset(x, 1, r), oo = fl_cpu_batch_offset(out, 1, r);
        for (int64_t n = 0; n < N; n++) {
            double s = vec(bias, n, 0.0);
            for (int64_t k = 0; k < K; k++)
                s += ld(x, xo + k * x->stride[nd - 1]) * ld(w, n * w->stride[0] + k * w->stride[1]);
            put(out, oo + n * out->stride[nd - 1], s);
        }
    }
    return FL_OK;
}

fl_status fl_cpu_ref_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                            const fl_tensor *bias, const fl_conv_opts *o, fl_error *err)
{
    (void)be;
    (void)err;
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], KH = w->shape[2], KW = w->shape[3], Ho = out->shape[2], Wo = out->shape[3];
    const int64_t *xs = x->stride, *ws = w->stride, *os = out->stride;
    for (int64_t b = 0; b < B; b++)
        for (int64_t oc = 0; oc < O; oc++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double s = vec(bias, oc, 0.0);
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < KH; ky++) {
                            int64_t iy = oy * o->stride[0] - o->pad_lo[0] + ky;
                            if (iy < 0 || iy >= H)
                                continue;
                            for (int64_t kx = 0; kx < KW; kx++) {
                                int64_t ix = ox * o->stride[1] - o->pad_lo[1] + kx;
                                if (ix < 0 || ix >= W)
                                    continue;
                                s += ld(x, b * xs[0] + c * xs[1] + iy * xs[2] + ix * xs[3]) *
                                     ld(w, oc * ws[0] + c * ws[1] + ky * ws[2] + kx * ws[3]);
                            }
                        }
                    put(out, b * os[0] + oc * os[1] + oy * os[2] + ox * os[3], s);
                }
    return FL_OK;
}

fl_status fl_cpu_ref_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                            const fl_tensor *bias, const fl_conv_opts *o, fl_error *err)
{
    (void)be;
    (void)err;
    int64_t B = x->shape[0], C = x->shape[1], L = x->shape[2], S1 = x->shape[3], S2 = x->shape[4];
    int64_t O = w->shape[0], K = w->shape[2], Lo = out->shape[2];
    const int64_t *xs = x->stride, *ws = w->stride, *os = out->stride;
    for (int64_t b = 0; b < B; b++)
        for (int64_t oc = 0; oc < O; oc++)
            for (int64_t l = 0; l < Lo; l++)
                for (int64_t s1 = 0; s1 < S1; s1++)
                    for (int64_t s2 = 0; s2 < S2; s2++) {
                        double s = vec(bias, oc, 0.0);
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t k = 0; k < K; k++) {
                                int64_t il = l * o->stride[0] - o->pad_lo[0] + k;
                                if (il < 0 || il >= L)
                                    continue;
                                s += ld(x, b * xs[0] + c * xs[1] + il * xs[2] + s1 * xs[3] + s2 * xs[4]) *
                                     ld(w, oc * ws[0] + c * ws[1] + k * ws[2]);
                            }
                        put(out, b * os[0] + oc * os[1] + l * os[2] + s1 * os[3] + s2 * os[4], s);
                    }
    return FL_OK;
}

fl_status fl_cpu_ref_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                                const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu,
                                fl_error *err)
{
    (void)be;
    (void)err;
    int nd = x->ndim;
    int64_t B = x->shape[0], C = x->shape[1], cg = C / groups, S = 1;
    for (int d = 2; d < nd; d++)
        S *= x->shape[d];
    const int64_t *sp = x->shape + 2; /* the trailing (spatial) dims */
    fl_tensor xs = *x, os = *out;     /* borrowed views of the spatial dims alone */
    xs.ndim = os.ndim = nd - 2;
    memmove(xs.stride, x->stride + 2, sizeof(int64_t) * (size_t)(nd - 2));
    memmove(os.stride, out->stride + 2, sizeof(int64_t) * (size_t)(nd - 2));
    for (int64_t b = 0; b < B; b++)
        for (int g = 0; g < groups; g++) {
            double n = (double)(cg * S), mean = 0.0, var = 0.0;
            for (int64_t c = g * cg; c < (g + 1) * cg; c++)
                for (int64_t i = 0; i < S; i++)
                    mean += ld(x, b * x->stride[0] + c * x->stride[1] + offset_at(&xs, sp, nd - 2, i));
            mean /= n;
            for (int64_t c = g * cg; c < (g + 1) * cg; c++)
                for (int64_t i = 0; i < S; i++) {
                    double d = ld(x, b * x->stride[0] + c * x->stride[1] + offset_at(&xs, sp, nd - 2, i)) - mean;
                    var += d * d;
                }
            double rstd = 1.0 / sqrt(var / n + eps);
            for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                double ga = vec(gamma, c, 1.0), be_ = vec(beta, c, 0.0);
                for (int64_t i = 0; i < S; i++) {
                    double v = ld(x, b * x->stride[0] + c * x->stride[1] + offset_at(&xs, sp, nd - 2, i));
                    v = (v - mean) * rstd * ga + be_;
                    if (silu)
                        v = v / (1.0 + exp(-v));
                    put(out, b * out->stride[0] + c * out->stride[1] + offset_at(&os, sp, nd - 2, i), v);
                }
            }
        }
    return FL_OK;
}

/* Layer norm (rms = 0) or RMS norm (rms = 1) over the last dim. */
static void lastdim_norm(fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                         const fl_tensor *beta, double eps, int rms)
{
    int nd = x->ndim;
    int64_t D = x->shape[nd - 1], rows = fl_cpu_batch_count(x, 1);
    int64_t sx = x->stride[nd - 1], so = out->stride[nd - 1];
    for (int64_t r = 0; r < rows; r++) {
        int64_t xo = fl_cpu_batch_offset(x, 1, r), oo = fl_cpu_batch_offset(out, 1, r);
        double mean = 0.0, var = 0.0;
        if (!rms) {
            for (int64_t i = 0; i < D; i++)
                mean += ld(x, xo + i * sx);
            mean /= (double)D;
        }
        for (int64_t i = 0; i < D; i++) {
            double d = ld(x, xo + i * sx) - mean;
            var += d * d;
        }
        double rstd = D ? 1.0 / sqrt(var / (double)D + eps) : 0.0;
        for (int64_t i = 0; i < D; i++)
            put(out, oo + i * so, (ld(x, xo + i * sx) - mean) * rstd * vec(gamma, i, 1.0) + vec(beta, i, 0.0));
    }
}

fl_status fl_cpu_ref_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                                const fl_tensor *gamma, const fl_tensor *beta, double eps, fl_error *err)
{
    (void)be;
    (void)err;
    lastdim_norm(out, x, gamma, beta, eps, 0);
    return FL_OK;
}

fl_status fl_cpu_ref_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                              const fl_tensor *gamma, double eps, fl_error *err)
{
    (void)be;
    (void)err;
    lastdim_norm(out, x, gamma, NULL, eps, 1);
    return FL_OK;
}

double fl_cpu_act_ref(fl_act act, double v)
{
    switch (act) {
    case FL_ACT_SILU: return v / (1.0 + exp(-v));
    /* erfc and the logistic form keep their precision where 1 + erf / 1 + tanh cancel */
    case FL_ACT_GELU: return 0.5 * v * erfc(-v * 0.70710678118654752440);
    case FL_ACT_GELU_TANH:
        return v / (1.0 + exp(-1.59576912160573071175 * (v + 0.044715 * v * v * v)));
    case FL_ACT_COUNT: break;
    }
    return NAN;
}

fl_status fl_cpu_ref_activation(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in,
                                fl_error *err)
{
    (void)be;
    (void)err;
    int64_t n = fl_tensor_numel(out);
    for (int64_t i = 0; i < n; i++)
        put(out, offset_at(out, out->shape, out->ndim, i),
            fl_cpu_act_ref(act, ld(in, offset_at(in, out->shape, out->ndim, i))));
    return FL_OK;
}

fl_status fl_cpu_ref_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                               const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err)
{
    int64_t B = q->shape[0], NH = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Lk = k->shape[2], Dv = v->shape[3];
    size_t nbytes = sizeof(double) * (size_t)(Lk > 0 ? Lk : 1);
    double *s = fl_alloc(be->alloc, nbytes);
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "attention (cpu-ref): cannot allocate %zu bytes of scores", nbytes);
    const int64_t *qs = q->stride, *ks = k->stride, *vs = v->stride, *os = out->stride;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t i = 0; i < Lq; i++) {
                double m = -INFINITY;
                for (int64_t j = 0; j < Lk; j++) {
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; d++)
                        dot += ld(q, b * qs[0] + h * qs[1] + i * qs[2] + d * qs[3]) *
                               ld(k, b * ks[0] + h * ks[1] + j * ks[2] + d * ks[3]);
                    dot *= scale;
                    if (mask) {
                        const int64_t *ms = mask->stride;
                        double mv = ld(mask, b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3]);
                        if (mask->dtype == FL_U8)
                            dot = mv != 0.0 ? dot : -INFINITY;
                        else
                            dot += mv;
                    }
                    s[j] = dot;
                    if (dot > m)
                        m = dot;
                }
                double l = 0.0;
                for (int64_t j = 0; j < Lk; j++) {
                    s[j] = m == -INFINITY ? 0.0 : exp(s[j] - m);
                    l += s[j];
                }
                for (int64_t e = 0; e < Dv; e++) {
                    double acc = 0.0;
                    for (int64_t j = 0; j < Lk; j++)
                        if (s[j] != 0.0)
                            acc += s[j] * ld(v, b * vs[0] + h * vs[1] + j * vs[2] + e * vs[3]);
                    put(out, b * os[0] + h * os[1] + i * os[2] + e * os[3], l > 0.0 ? acc / l : 0.0);
                }
            }
    fl_free(be->alloc, s, nbytes);
    return FL_OK;
}

fl_status fl_cpu_ref_timestep_embedding(fl_backend *be, fl_tensor *out, const fl_tensor *t,
                                        const fl_temb_opts *o, fl_error *err)
{
    (void)be;
    (void)err;
    int64_t N = out->shape[0], dim = out->shape[1], half = dim / 2;
    for (int64_t n = 0; n < N; n++) {
        double tv = ld(t, n * t->stride[0]);
        for (int64_t j = 0; j < half; j++) {
            double freq = exp(-log(o->max_period) * (double)j / ((double)half - o->freq_shift));
            double arg = o->scale * tv * freq;
            int64_t ci = o->cos_first ? j : half + j, si = o->cos_first ? half + j : j;
            put(out, n * out->stride[0] + ci * out->stride[1], cos(arg));
            put(out, n * out->stride[0] + si * out->stride[1], sin(arg));
        }
        if (dim % 2)
            put(out, n * out->stride[0] + (dim - 1) * out->stride[1], 0.0);
    }
    return FL_OK;
}

fl_status fl_cpu_ref_upsample_nearest(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err)
{
    (void)be;
    (void)err;
    int nd = out->ndim;
    int64_t fh = x->shape[nd - 2] ? out->shape[nd - 2] / x->shape[nd - 2] : 1;
    int64_t fw = x->shape[nd - 1] ? out->shape[nd - 1] / x->shape[nd - 1] : 1;
    int64_t n = fl_tensor_numel(out);
    for (int64_t i = 0; i < n; i++) {
        int64_t idx[FL_MAX_DIMS], r = i;
        for (int d = nd - 1; d >= 0; d--) {
            idx[d] = r % out->shape[d];
            r /= out->shape[d];
        }
        int64_t xo = 0, oo = 0;
        for (int d = 0; d < nd; d++) {
            int64_t xi = d == nd - 2 ? idx[d] / fh : d == nd - 1 ? idx[d] / fw : idx[d];
            xo += xi * x->stride[d];
            oo += idx[d] * out->stride[d];
        }
        put(out, oo, ld(x, xo));
    }
    return FL_OK;
}

fl_status fl_cpu_ref_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                              const fl_tensor *scale, const fl_tensor *shift, fl_error *err)
{
    (void)be;
    (void)err;
    int64_t n = fl_tensor_numel(out);
    const int64_t *sh = out->shape;
    int nd = out->ndim;
    for (int64_t i = 0; i < n; i++)
        put(out, offset_at(out, sh, nd, i),
            ld(x, offset_at(x, sh, nd, i)) * (1.0 + ld(scale, offset_at(scale, sh, nd, i))) +
                ld(shift, offset_at(shift, sh, nd, i)));
    return FL_OK;
}

fl_status fl_cpu_ref_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res,
                              const fl_tensor *gate, const fl_tensor *y, fl_error *err)
{
    (void)be;
    (void)err;
    int64_t n = fl_tensor_numel(out);
    const int64_t *sh = out->shape;
    int nd = out->ndim;
    for (int64_t i = 0; i < n; i++)
        put(out, offset_at(out, sh, nd, i),
            ld(res, offset_at(res, sh, nd, i)) +
                ld(gate, offset_at(gate, sh, nd, i)) * ld(y, offset_at(y, sh, nd, i)));
    return FL_OK;
}

fl_status fl_cpu_ref_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_rope_opts *o,
                          fl_error *err)
{
    (void)be;
    (void)err;
    int64_t B = x->shape[0], L = x->shape[1], NH = x->shape[2], D = x->shape[3];
    int64_t G = o->grid[0] * o->grid[1] * o->grid[2];
    const int64_t *xs = x->stride, *os = out->stride;
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < L; n++)
            for (int64_t h = 0; h < NH; h++) {
                int64_t xo = b * xs[0] + n * xs[1] + h * xs[2], oo = b * os[0] + n * os[1] + h * os[2];
                int64_t pos[3] = { n / (o->grid[1] * o->grid[2]), (n / o->grid[2]) % o->grid[1], n % o->grid[2] };
                int64_t e = 0;
                for (int a = 0; a < 3 && n < G; a++)
                    for (int64_t j = 0; j < o->dims[a] / 2; j++, e += 2) {
                        double ang = (double)(o->pos0[a] + pos[a]) * pow(o->theta, -2.0 * (double)j / (double)o->dims[a]);
                        double c = cos(ang), s = sin(ang);
                        double x0 = ld(x, xo + e * xs[3]), x1 = ld(x, xo + (e + 1) * xs[3]);
                        put(out, oo + e * os[3], x0 * c - x1 * s);
                        put(out, oo + (e + 1) * os[3], x0 * s + x1 * c);
                    }
                for (; e < D; e++)
                    put(out, oo + e * os[3], ld(x, xo + e * xs[3]));
            }
    return FL_OK;
}
