/* The CUDA backend's neural-network entries: argument planning in C (operand layouts for
 * cuBLAS, staging and dtype conversion into scratch, im2col chunking) around the kernels
 * of nn_kernels.cu. Half weights run tensor-core GEMMs with the activations rounded to
 * the weights' type and f32 accumulation; f32 weights run plain FP32 GEMMs. */
#ifdef FL_HAVE_CUDA

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_priv.h"

/* im2col columns per chunk: bounded so a VAE-sized image does not need gigabytes. */
#define COL_BYTES ((size_t)256 << 20)

static cuda_impl *impl(fl_backend *be) { return (cuda_impl *)be->impl; }

static fl_status scratch(fl_backend *be, const char *op, size_t nbytes, void **p, fl_error *err)
{
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_scratch_alloc(impl(be)->async_alloc, nbytes, p, msg);
    return rc ? fl_cuda_fail(be, rc, op, msg, err) : FL_OK;
}

static void scratch_free(fl_backend *be, void *p) { fl_cu_scratch_free(impl(be)->async_alloc, p); }

/* A contiguous copy of device tensor t converted to dt, in new scratch *p. */
static fl_status contig_as(fl_backend *be, const char *op, const fl_tensor *t, fl_dtype dt, void **p,
                           fl_error *err)
{
    int64_t cs[FL_MAX_DIMS];
    size_t n = (size_t)fl_tensor_numel(t);
    fl_status st = scratch(be, op, n * fl_dtype_size(dt), p, err);
    if (st)
        return st;
    fl_contiguous_strides(t->ndim, t->shape, cs);
    st = fl_cuda_dev_copy(be, op, t->ndim, t->shape, *p, dt, cs, fl_tensor_data(t), t->dtype, t->stride, err);
    if (st) {
        scratch_free(be, *p);
        *p = NULL;
    }
    return st;
}

/* An optional vector (bias, gamma, beta) as contiguous f32 scratch, or NULL. */
static fl_status vec_f32(fl_backend *be, const char *op, const fl_tensor *t, float **p, fl_error *err)
{
    *p = NULL;
    return t ? contig_as(be, op, t, FL_F32, (void **)p, err) : FL_OK;
}

/* t [..., cols] as a row-major matrix whose rows share one stride *ld (>= cols, an int)
 * and whose columns have unit stride. */
static bool rows_view(const fl_tensor *t, int64_t *ld)
{
    int nd = t->ndim;
    int64_t cols = t->shape[nd - 1], rs = 0, span = 0;
    if (cols > 1 && t->stride[nd - 1] != 1)
        return false;
    for (int d = nd - 2; d >= 0; d--) {
        if (t->shape[d] == 1)
            continue;
        if (span == 0) {
            rs = t->stride[d];
            span = t->shape[d];
        } else if (t->stride[d] != rs * span) {
            return false;
        } else {
            span *= t->shape[d];
        }
    }
    *ld = span ? rs : (cols > 1 ? cols : 1);
    return *ld >= (cols > 1 ? cols : 1) && *ld <= INT_MAX;
}

static fl_status range_err(fl_backend *be, const char *op, int64_t a, int64_t b, fl_error *err)
{
    return fl_error_set(err, FL_E_RANGE, "cuda:%d %s: dims %lld x %lld exceed cuBLAS's int sizes", impl(be)->device,
                        op, (long long)a, (long long)b);
}

/* ------------------------------------------------------------------ linear */

fl_status fl_cuda_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                         const fl_tensor *bias, fl_error *err)
{
    const char *op = "linear";
    int nd = x->ndim;
    int64_t K = x->shape[nd - 1], N = w->shape[0], M = 1;
    for (int d = 0; d < nd - 1; d++)
        M *= x->shape[d];
    if (M == 0 || N == 0)
        return FL_OK;
    if (N > INT_MAX || K > INT_MAX)
        return range_err(be, op, N, K, err);
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    cuda_impl *im = impl(be);
    fl_dtype ab = w->dtype;
    size_t es = fl_dtype_size(ab);
    void *xs = NULL, *ws = NULL, *os = NULL;
    float *bv = NULL;
    char msg[FL_CU_MSG_MAX];
    int rc = FL_CU_OK;
    const char *px;
    const void *pw;
    int64_t ldx, ldw, ldc;
    int trans_w = 1;
    float *pc;
    /* activations: as they lie when f32 rows; else a contiguous copy in the GEMM's type */
    if (ab == FL_F32 && rows_view(x, &ldx)) {
        px = fl_tensor_data(x);
    } else {
        if ((st = contig_as(be, op, x, ab, &xs, err)))
            goto done;
        px = xs;
        ldx = K > 1 ? K : 1;
    }
    /* weights [N, K] row-major are cuBLAS's column-major K x N: used transposed; a
     * transposed view of them is N x K as it lies */
    if (ab == FL_F32 && (K <= 1 || w->stride[1] == 1) && w->stride[0] >= (K > 1 ? K : 1) && w->stride[0] <= INT_MAX) {
        pw = fl_tensor_data(w);
        ldw = w->stride[0];
    } else if (ab == FL_F32 && (N <= 1 || w->stride[0] == 1) && w->stride[1] >= (N > 1 ? N : 1) &&
               w->stride[1] <= INT_MAX) {
        pw = fl_tensor_data(w);
        ldw = w->stride[1];
        trans_w = 0;
    } else if (ab != FL_F32 && fl_tensor_is_contiguous(w)) {
        pw = fl_tensor_data(w);
        ldw = K > 1 ? K : 1;
    } else {
        if ((st = contig_as(be, op, w, ab, &ws, err)))
            goto done;
        pw = ws;
        ldw = K > 1 ? K : 1;
    }
    if (rows_view(out, &ldc)) {
        pc = fl_tensor_data(out);
    } else {
        if ((st = scratch(be, op, sizeof(float) * (size_t)(M * N), &os, err)))
            goto done;
        pc = os;
        ldc = N;
    }
    if ((st = vec_f32(be, op, bias, &bv, err)))
        goto done;
    if (bv || K == 0) { /* the bias first; the GEMM accumulates onto it */
        int64_t n[3] = { M, N, 1 }, s[3] = { ldc, 1, 0 };
        if ((rc = fl_cu_bias_fill(pc, n, s, 1, bv, msg)))
            goto done;
    }
    for (int64_t m0 = 0; m0 < M && K > 0; m0 += INT_MAX / 2) {
        int64_t m = M - m0 < INT_MAX / 2 ? M - m0 : INT_MAX / 2;
        fl_cu_gemm_args g;
        memset(&g, 0, sizeof g);
        g.trans_a = trans_w;
        g.m = N;
        g.n = m;
        g.k = K;
        g.a = pw;
        g.lda = ldw;
        g.b = px + (size_t)(m0 * ldx) * es;
        g.ldb = ldx;
        g.c = pc + m0 * ldc;
        g.ldc = ldc;
        g.batch = 1;
        g.alpha = 1.0;
        g.beta = bv ? 1.0 : 0.0;
        if ((rc = fl_cu_gemm_nn(im->blas, ab, im->tf32, &g, msg)))
            goto done;
    }
    if (os) {
        int64_t cs[FL_MAX_DIMS];
        fl_contiguous_strides(out->ndim, out->shape, cs);
        st = fl_cuda_dev_copy(be, op, out->ndim, out->shape, fl_tensor_data(out), FL_F32, out->stride, os, FL_F32,
                              cs, err);
    }
done:
    if (rc && !st)
        st = fl_cuda_fail(be, rc, op, msg, err);
    scratch_free(be, xs);
    scratch_free(be, ws);
    scratch_free(be, os);
    scratch_free(be, bv);
    return st;
}

/* ------------------------------------------------------------------ convolutions */

/* One convolution as im2col + GEMM. x is seen as [B, C, H, W, S] and out as
 * [B, O, Ho, Wo, S] (S: a trailing dim the kernel does not touch), w as a contiguous
 * [O, C KH KW] matrix of dtype ab at wp. */
typedef struct conv {
    const char *op;
    const float *x;
    int64_t xs[5];
    float *out;
    int64_t os[5];
    int64_t B, C, H, W, S, O, KH, KW, Ho, Wo;
    int stride[2], pad[2];
    const void *wp;
    fl_dtype ab;
} conv;

/* The output run (ho, wo, s) is dense: one GEMM column range per image. */
static bool conv_dense(const conv *c, int64_t *ldc)
{
    int64_t P = c->Ho * c->Wo * c->S;
    bool run = (c->S == 1 || c->os[4] == 1) && (c->Wo == 1 || c->os[3] == c->S) &&
               (c->Ho == 1 || c->os[2] == c->Wo * c->S);
    *ldc = c->O > 1 ? c->os[1] : P;
    return run && *ldc >= P && *ldc <= INT_MAX;
}

/* Each output row's (wo, s) run is dense: one GEMM per output row (the temporal conv
 * writing into a (B F, O, H, W) activation). */
static bool conv_rows(const conv *c, int64_t *ldc)
{
    int64_t R = c->Wo * c->S;
    bool run = (c->S == 1 || c->os[4] == 1) && (c->Wo == 1 || c->os[3] == c->S);
    *ldc = c->O > 1 ? c->os[1] : R;
    return run && R >= 32 && *ldc >= R && *ldc <= INT_MAX;
}

static fl_status conv_run(fl_backend *be, conv *c, const float *bias, fl_error *err)
{
    cuda_impl *im = impl(be);
    const char *op = c->op;
    int64_t CKK = c->C * c->KH * c->KW, R = c->Wo * c->S, P = c->Ho * R;
    size_t es = fl_dtype_size(c->ab);
    char msg[FL_CU_MSG_MAX];
    int rc = FL_CU_OK;
    fl_status st = FL_OK;
    void *col = NULL, *os = NULL;
    int64_t ldc;
    int mode = conv_dense(c, &ldc) ? 0 : conv_rows(c, &ldc) ? 1 : 2;
    float *out = c->out;
    int64_t ost[5];
    memcpy(ost, c->os, sizeof ost);
    if (CKK > INT_MAX || R > INT_MAX || c->O > INT_MAX)
        return range_err(be, op, c->O, CKK, err);
    if (mode == 2) { /* no layout cuBLAS can write: a dense result, copied over after */
        int64_t shape[5] = { c->B, c->O, c->Ho, c->Wo, c->S };
        if ((st = scratch(be, op, sizeof(float) * (size_t)(c->B * c->O * P), &os, err)))
            return st;
        out = os;
        fl_contiguous_strides(5, shape, ost);
        ldc = P;
    }
    /* chunks: whole images while they fit COL_BYTES, else bands of output rows */
    int64_t per_img = CKK * P * (int64_t)es;
    int64_t nimg = per_img > 0 ? (int64_t)(COL_BYTES / (size_t)per_img) : c->B;
    nimg = nimg < 1 ? 1 : nimg > c->B ? c->B : nimg;
    int64_t nho = c->Ho;
    if (nimg == 1 && per_img > (int64_t)COL_BYTES) {
        nho = (int64_t)(COL_BYTES / ((size_t)(CKK * R) * es));
        nho = nho < 1 ? 1 : nho > c->Ho ? c->Ho : nho;
    }
    if (nho * R > INT_MAX)
        nho = INT_MAX / R;
    if ((st = scratch(be, op, (size_t)(nimg * CKK * nho * R) * es, &col, err)))
        goto done;
    if (bias) { /* the bias first, so every GEMM accumulates onto it (beta 1) */
        if (mode == 1) {
            for (int64_t b = 0; b < c->B && !rc; b++) {
                int64_t n[3] = { c->O, c->Ho, R }, s[3] = { ldc, ost[2], 1 };
                rc = fl_cu_bias_fill(out + b * ost[0], n, s, 0, bias, msg);
            }
        } else {
            int64_t n[3] = { c->B, c->O, P }, s[3] = { ost[0], ldc, 1 };
            rc = fl_cu_bias_fill(out, n, s, 1, bias, msg);
        }
        if (rc)
            goto done;
    }
    for (int64_t n0 = 0; n0 < c->B; n0 += nimg) {
        int64_t ni = c->B - n0 < nimg ? c->B - n0 : nimg;
        for (int64_t ho0 = 0; ho0 < c->Ho; ho0 += nho) {
            int64_t nh = c->Ho - ho0 < nho ? c->Ho - ho0 : nho, m = nh * R;
            fl_cu_im2col_args a;
            memset(&a, 0, sizeof a);
            a.x = c->x + n0 * c->xs[0];
            memcpy(a.xs, c->xs, sizeof a.xs);
            a.C = c->C;
            a.H = c->H;
            a.W = c->W;
            a.S = c->S;
            a.KH = c->KH;
            a.KW = c->KW;
            a.Wo = c->Wo;
            a.ho0 = ho0;
            a.nho = nh;
            a.nimg = ni;
            a.stride[0] = c->stride[0];
            a.stride[1] = c->stride[1];
            a.pad[0] = c->pad[0];
            a.pad[1] = c->pad[1];
            a.col = col;
            a.ct = c->ab;
            if ((rc = fl_cu_im2col(&a, msg)))
                goto done;
            /* out^T (m x O) = col^T (m x CKK) . w^T (CKK x O), column-major */
            fl_cu_gemm_args g;
            memset(&g, 0, sizeof g);
            g.n = c->O;
            g.k = CKK;
            g.b = c->wp;
            g.ldb = CKK;
            g.stride_b = 0;
            g.ldc = ldc;
            g.alpha = 1.0;
            g.beta = bias ? 1.0 : 0.0; /* chunks write disjoint outputs: none reads another's */
            if (mode != 1) {
                g.m = m;
                g.a = col;
                g.lda = m;
                g.stride_a = CKK * m;
                g.c = out + n0 * ost[0] + ho0 * R;
                g.stride_c = ost[0];
                g.batch = ni;
                rc = fl_cu_gemm_nn(im->blas, c->ab, im->tf32, &g, msg);
            } else {
                for (int64_t i = 0; i < ni && !rc; i++) {
                    g.m = R;
                    g.a = (const char *)col + (size_t)(i * CKK * m) * es;
                    g.lda = m;
                    g.stride_a = R;
                    g.c = out + (n0 + i) * ost[0] + ho0 * ost[2];
                    g.stride_c = ost[2];
                    g.batch = nh;
                    rc = fl_cu_gemm_nn(im->blas, c->ab, im->tf32, &g, msg);
                }
            }
            if (rc)
                goto done;
        }
    }
    if (os) {
        int64_t shape[5] = { c->B, c->O, c->Ho, c->Wo, c->S };
        st = fl_cuda_dev_copy(be, op, 5, shape, c->out, FL_F32, c->os, os, FL_F32, ost, err);
    }
done:
    if (rc && !st)
        st = fl_cuda_fail(be, rc, op, msg, err);
    scratch_free(be, col);
    scratch_free(be, os);
    return st;
}

/* The weights as a contiguous [O, C K...] matrix in their own dtype, and the bias in f32. */
static fl_status conv_operands(fl_backend *be, const char *op, const fl_tensor *w, const fl_tensor *bias,
                               const void **wp, void **ws, float **bv, fl_error *err)
{
    fl_status st;
    *ws = NULL;
    *bv = NULL;
    if (fl_tensor_is_contiguous(w)) {
        *wp = fl_tensor_data(w);
    } else {
        if ((st = contig_as(be, op, w, w->dtype, ws, err)))
            return st;
        *wp = *ws;
    }
    if ((st = vec_f32(be, op, bias, bv, err))) {
        scratch_free(be, *ws);
        *ws = NULL;
    }
    return st;
}

fl_status fl_cuda_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                         const fl_tensor *bias, const fl_conv_opts *o, fl_error *err)
{
    const char *op = "conv2d";
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    conv c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.x = fl_tensor_data(x);
    c.out = fl_tensor_data(out);
    for (int d = 0; d < 4; d++) {
        c.xs[d] = x->stride[d];
        c.os[d] = out->stride[d];
    }
    c.xs[4] = c.os[4] = 1;
    c.B = x->shape[0];
    c.C = x->shape[1];
    c.H = x->shape[2];
    c.W = x->shape[3];
    c.S = 1;
    c.O = w->shape[0];
    c.KH = w->shape[2];
    c.KW = w->shape[3];
    c.Ho = out->shape[2];
    c.Wo = out->shape[3];
    c.stride[0] = o->stride[0];
    c.stride[1] = o->stride[1];
    c.pad[0] = o->pad_lo[0];
    c.pad[1] = o->pad_lo[1];
    c.ab = w->dtype;
    void *ws;
    float *bv;
    if ((st = conv_operands(be, op, w, bias, &c.wp, &ws, &bv, err)))
        return st;
    st = conv_run(be, &c, bv, err);
    scratch_free(be, ws);
    scratch_free(be, bv);
    return st;
}

/* Along dim 2 of [B, C, L, S1, S2]: an im2col over (L, S1) with kernel (K, 1), S2 aside. */
fl_status fl_cuda_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                         const fl_tensor *bias, const fl_conv_opts *o, fl_error *err)
{
    const char *op = "conv1d";
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    conv c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.x = fl_tensor_data(x);
    c.out = fl_tensor_data(out);
    memcpy(c.xs, x->stride, sizeof c.xs);
    memcpy(c.os, out->stride, sizeof c.os);
    c.B = x->shape[0];
    c.C = x->shape[1];
    c.H = x->shape[2];
    c.W = x->shape[3];
    c.S = x->shape[4];
    c.O = w->shape[0];
    c.KH = w->shape[2];
    c.KW = 1;
    c.Ho = out->shape[2];
    c.Wo = out->shape[3];
    c.stride[0] = o->stride[0];
    c.stride[1] = 1;
    c.pad[0] = o->pad_lo[0];
    c.pad[1] = 0;
    c.ab = w->dtype;
    void *ws;
    float *bv;
    if ((st = conv_operands(be, op, w, bias, &c.wp, &ws, &bv, err)))
        return st;
    st = conv_run(be, &c, bv, err);
    scratch_free(be, ws);
    scratch_free(be, bv);
    return st;
}

/* ------------------------------------------------------------------ norms */

fl_status fl_cuda_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                             const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu, fl_error *err)
{
    const char *op = "group_norm";
    if (fl_tensor_numel(x) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    fl_cu_gn_args a;
    memset(&a, 0, sizeof a);
    float *g = NULL, *b = NULL;
    if ((st = vec_f32(be, op, gamma, &g, err)) || (st = vec_f32(be, op, beta, &b, err)))
        goto done;
    a.x = fl_tensor_data(x);
    a.out = fl_tensor_data(out);
    a.gamma = g;
    a.beta = b;
    a.B = x->shape[0];
    a.C = x->shape[1];
    a.groups = groups;
    a.nsp = x->ndim - 2;
    for (int d = 0; d < x->ndim; d++) {
        a.xs[d] = x->stride[d];
        a.os[d] = out->stride[d];
        if (d >= 2)
            a.sp[d - 2] = x->shape[d];
    }
    a.eps = eps;
    a.silu = silu;
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_group_norm(&a, impl(be)->async_alloc, msg);
    if (rc)
        st = fl_cuda_fail(be, rc, op, msg, err);
done:
    scratch_free(be, g);
    scratch_free(be, b);
    return st;
}

static fl_status lastdim(fl_backend *be, const char *op, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                         const fl_tensor *beta, double eps, int rms, fl_error *err)
{
    if (fl_tensor_numel(x) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    fl_cu_ln_args a;
    memset(&a, 0, sizeof a);
    float *g = NULL, *b = NULL;
    if ((st = vec_f32(be, op, gamma, &g, err)) || (st = vec_f32(be, op, beta, &b, err)))
        goto done;
    int nd = x->ndim;
    a.x = fl_tensor_data(x);
    a.out = fl_tensor_data(out);
    a.gamma = g;
    a.beta = b;
    a.D = x->shape[nd - 1];
    a.xs = x->stride[nd - 1];
    a.os = out->stride[nd - 1];
    a.nlead = nd - 1;
    a.rows = 1;
    for (int d = 0; d < nd - 1; d++) {
        a.lead[d] = x->shape[d];
        a.xs_lead[d] = x->stride[d];
        a.os_lead[d] = out->stride[d];
        a.rows *= x->shape[d];
    }
    a.eps = eps;
    a.rms = rms;
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_lastdim_norm(&a, msg);
    if (rc)
        st = fl_cuda_fail(be, rc, op, msg, err);
done:
    scratch_free(be, g);
    scratch_free(be, b);
    return st;
}

fl_status fl_cuda_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                             const fl_tensor *beta, double eps, fl_error *err)
{
    return lastdim(be, "layer_norm", out, x, gamma, beta, eps, 0, err);
}

fl_status fl_cuda_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                           double eps, fl_error *err)
{
    return lastdim(be, "rms_norm", out, x, gamma, NULL, eps, 1, err);
}

/* ------------------------------------------------------------------ elementwise */

fl_status fl_cuda_activation(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in, fl_error *err)
{
    const char *op = "activation";
    const int64_t *strides[2] = { out->stride, in->stride };
    fl_cu_layout l;
    char msg[FL_CU_MSG_MAX];
    if (!fl_cuda_layout(&l, out->ndim, out->shape, 2, strides))
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    int rc = fl_cu_activation((int)act, &l, fl_tensor_data(out), fl_tensor_data(in), msg);
    return rc ? fl_cuda_fail(be, rc, op, msg, err) : FL_OK;
}

static fl_status ternary(fl_backend *be, const char *op, int kind, fl_tensor *out, const fl_tensor *a,
                         const fl_tensor *b, const fl_tensor *c, fl_error *err)
{
    const int64_t *strides[4] = { out->stride, a->stride, b->stride, c->stride };
    fl_cu_layout l;
    char msg[FL_CU_MSG_MAX];
    if (!fl_cuda_layout(&l, out->ndim, out->shape, 4, strides))
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    int rc = fl_cu_modulate(kind, &l, fl_tensor_data(out), fl_tensor_data(a), fl_tensor_data(b), fl_tensor_data(c),
                           msg);
    return rc ? fl_cuda_fail(be, rc, op, msg, err) : FL_OK;
}

fl_status fl_cuda_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *scale,
                           const fl_tensor *shift, fl_error *err)
{
    return ternary(be, "modulate", 0, out, x, scale, shift, err);
}

fl_status fl_cuda_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res, const fl_tensor *gate,
                           const fl_tensor *y, fl_error *err)
{
    return ternary(be, "gate_add", 1, out, res, gate, y, err);
}

/* ------------------------------------------------------------------ attention */

fl_status fl_cuda_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                            const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err)
{
    const char *op = "attention";
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    if (q->shape[3] > FL_CU_ATTN_MAXD || v->shape[3] > FL_CU_ATTN_MAXD)
        return fl_error_set(err, FL_E_UNSUPPORTED,
                            "cuda:%d attention: head dims %lld (q, k) and %lld (v) must be at most %d on this backend",
                            impl(be)->device, (long long)q->shape[3], (long long)v->shape[3], FL_CU_ATTN_MAXD);
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    fl_cu_attn_args a;
    memset(&a, 0, sizeof a);
    a.q = fl_tensor_data(q);
    a.k = fl_tensor_data(k);
    a.v = fl_tensor_data(v);
    a.out = fl_tensor_data(out);
    if (mask) {
        a.mask = fl_tensor_data(mask);
        a.mask_u8 = mask->dtype == FL_U8;
        memcpy(a.ms, mask->stride, sizeof a.ms);
    }
    a.B = q->shape[0];
    a.NH = q->shape[1];
    a.Lq = q->shape[2];
    a.D = q->shape[3];
    a.Lk = k->shape[2];
    a.Dv = v->shape[3];
    memcpy(a.qs, q->stride, sizeof a.qs);
    memcpy(a.ks, k->stride, sizeof a.ks);
    memcpy(a.vs, v->stride, sizeof a.vs);
    memcpy(a.os, out->stride, sizeof a.os);
    a.scale = (float)scale;
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_attention(&a, msg);
    return rc ? fl_cuda_fail(be, rc, op, msg, err) : FL_OK;
}

/* ------------------------------------------------------------------ embeddings, upsampling */

fl_status fl_cuda_timestep_embedding(fl_backend *be, fl_tensor *out, const fl_tensor *t, const fl_temb_opts *o,
                                     fl_error *err)
{
    const char *op = "timestep_embedding";
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    fl_cu_temb_args a;
    memset(&a, 0, sizeof a);
    a.out = fl_tensor_data(out);
    a.os0 = out->stride[0];
    a.os1 = out->stride[1];
    a.t = fl_tensor_data(t);
    a.t_f64 = t->dtype == FL_F64;
    a.ts = t->stride[0];
    a.N = out->shape[0];
    a.dim = out->shape[1];
    a.max_period = o->max_period;
    a.freq_shift = o->freq_shift;
    a.scale = o->scale;
    a.cos_first = o->cos_first;
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_timestep_embedding(&a, msg);
    return rc ? fl_cuda_fail(be, rc, op, msg, err) : FL_OK;
}

fl_status fl_cuda_upsample_nearest(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err)
{
    const char *op = "upsample_nearest";
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    int nd = out->ndim;
    int64_t fh = out->shape[nd - 2] / x->shape[nd - 2], fw = out->shape[nd - 1] / x->shape[nd - 1];
    char msg[FL_CU_MSG_MAX];
    int rc = fl_cu_upsample(nd, out->shape, out->stride, fl_tensor_data(out), x->stride, fl_tensor_data(x), fh, fw, msg);
    return rc ? fl_cuda_fail(be, rc, op, msg, err) : FL_OK;
}

/* The angle tables are made on the host in double (as cpu-ref computes them) and
 * uploaded; they are small (positions x rotated dims). */
fl_status fl_cuda_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_rope_opts *o, fl_error *err)
{
    const char *op = "rope";
    if (fl_tensor_numel(x) == 0)
        return FL_OK;
    fl_status st = fl_cuda_enter(be, op, err);
    if (st)
        return st;
    int64_t n = 0;
    for (int ax = 0; ax < 3; ax++)
        n += o->grid[ax] * o->dims[ax];
    size_t nbytes = sizeof(float) * (size_t)(n > 0 ? n : 1);
    float *host = fl_alloc(be->alloc, nbytes);
    if (!host)
        return fl_error_set(err, FL_E_NOMEM, "cuda:%d rope: cannot allocate %zu bytes of host table",
                            impl(be)->device, nbytes);
    float *t = host;
    for (int ax = 0; ax < 3; ax++)
        for (int64_t p = 0; p < o->grid[ax]; p++, t += o->dims[ax])
            for (int64_t j = 0; j < o->dims[ax] / 2; j++) {
                double ang = (double)(o->pos0[ax] + p) * pow(o->theta, -2.0 * (double)j / (double)o->dims[ax]);
                t[2 * j] = (float)cos(ang);
                t[2 * j + 1] = (float)sin(ang);
            }
    void *dev = NULL;
    char msg[FL_CU_MSG_MAX];
    int rc = FL_CU_OK;
    if (!(st = scratch(be, op, nbytes, &dev, err))) {
        rc = fl_cu_memcpy(dev, host, nbytes, FL_CU_H2D, msg);
        if (!rc) {
            fl_cu_rope_args a;
            memset(&a, 0, sizeof a);
            a.x = fl_tensor_data(x);
            a.out = fl_tensor_data(out);
            a.B = x->shape[0];
            a.L = x->shape[1];
            a.NH = x->shape[2];
            a.D = x->shape[3];
            memcpy(a.xs, x->stride, sizeof a.xs);
            memcpy(a.os, out->stride, sizeof a.os);
            memcpy(a.grid, o->grid, sizeof a.grid);
            memcpy(a.dims, o->dims, sizeof a.dims);
            a.table = dev;
            rc = fl_cu_rope(&a, msg);
        }
        if (rc)
            st = fl_cuda_fail(be, rc, op, msg, err);
        scratch_free(be, dev);
    }
    fl_free(be->alloc, host, nbytes);
    return st;
}

#else
/* Built without CUDA: nothing here is used. ISO C wants a declaration. */
typedef int fl_cuda_nn_absent;
#endif
