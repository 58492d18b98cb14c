/* The "cpu" backend's neural-network kernels: OpenBLAS sgemm for linear, convolutions
 * (im2col, or one GEMM per tap for the temporal conv) and tiled attention with an online
 * softmax; f32 loops spread over the cores (ops/cpu/parallel.c) for the rest. Weights in
 * f16/bf16 are widened to f32 per call. Checked against nn_ref.c by tests/test_nn.c. */
#include "cpu_internal.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* im2col column buffers stay around this size, so they live in the last-level cache
 * while the GEMM reads them (measured with bench/bench_nn.c). */
#ifndef IM2COL_BYTES
#define IM2COL_BYTES (4u << 20)
#endif
/* Attention tiles: a query block against a key block at a time. Tile sizes from 256 x 512
 * to 1024 x 2560 measured within a few per cent of each other (the softmax step, not the
 * GEMMs' shape, sets the pace), so the smallest scratch wins. Both sizes can be set with
 * -D for such experiments. */
#ifndef ATT_BQ
#define ATT_BQ 256
#endif
#ifndef ATT_BK
#define ATT_BK 512
#endif
/* Sequences this short take the direct path (temporal attention over 16 frames). */
#define ATT_SMALL 64
/* Items per thread below which a loop is not worth a thread. */
#define GRAIN_ELEMS 32768

/* ------------------------------------------------------------------ helpers */

/* Host scratch of n floats from be->alloc; NULL after setting err. */
static float *fbuf(fl_backend *be, const char *op, int64_t n, fl_error *err)
{
    size_t nbytes = sizeof(float) * (size_t)(n > 0 ? n : 1);
    float *p = fl_alloc(be->alloc, nbytes);
    if (!p)
        fl_error_set(err, FL_E_NOMEM, "%s: cannot allocate %zu bytes of scratch", op, nbytes);
    return p;
}

static void fbuf_free(fl_backend *be, float *p, int64_t n)
{
    fl_free(be->alloc, p, sizeof(float) * (size_t)(n > 0 ? n : 1));
}

/* A contiguous f32 tensor with t's values: a new reference to t itself when it already is
 * one, else a converted copy in be->alloc memory. */
static fl_status f32_contig(fl_backend *be, const char *op, const char *name, const fl_tensor *t,
                            fl_tensor *out, fl_error *err)
{
    if (t->dtype == FL_F32 && fl_tensor_is_contiguous(t)) {
        fl_tensor_retain(out, t);
        return FL_OK;
    }
    if (fl_tensor_empty(out, FL_F32, t->ndim, t->shape, be->alloc, err))
        return fl_error_prefix(err, "%s: staging %s", op, name);
    return fl_cpu_fast_copy(be, out, t, err);
}

/* A length-n vector (bias, gamma, beta) as f32 scratch, or NULL (and no error) for none. */
static fl_status vec_f32(fl_backend *be, const char *op, const fl_tensor *t, int64_t n, float **out,
                         fl_error *err)
{
    *out = NULL;
    if (!t)
        return FL_OK;
    float *p = fbuf(be, op, n, err);
    if (!p)
        return err ? err->code : FL_E_NOMEM;
    const void *d = fl_tensor_data(t);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)fl_dtype_load(t->dtype, d, (size_t)(i * t->stride[0]));
    *out = p;
    return FL_OK;
}

/* t [..., cols] as a row-major matrix: rows share one stride *ld >= cols (so BLAS takes it)
 * and the columns have unit stride. */
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

/* Dims [from, ndim) of t are dense row-major (size-1 dims ignored). */
static bool dense_from(const fl_tensor *t, int from)
{
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= from; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect)
            return false;
        expect *= t->shape[d];
    }
    return true;
}

/* Copies a row of n floats to every row of a rows x n block with row stride ld
 * (bias broadcast before a beta = 1 GEMM; zeros when v is NULL). */
typedef struct rowfill {
    float *c;
    int64_t ld, n;
    const float *v;
} rowfill;

static void rowfill_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    rowfill *f = p;
    for (int64_t r = r0; r < r1; r++) {
        if (f->v)
            memcpy(f->c + r * f->ld, f->v, sizeof(float) * (size_t)f->n);
        else
            memset(f->c + r * f->ld, 0, sizeof(float) * (size_t)f->n);
    }
}

static void fill_rows(float *c, int64_t rows, int64_t ld, int64_t n, const float *v)
{
    rowfill f = { c, ld, n, v };
    fl_cpu_parallel_for(rows, GRAIN_ELEMS / (n > 0 ? n : 1) + 1, rowfill_run, &f);
}

/* Row r of a dense rows x n block = v[r] (0 when v is NULL): a per-channel bias. */
static void chanfill_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const rowfill *f = p;
    for (int64_t r = r0; r < r1; r++) {
        float x = f->v ? f->v[r] : 0.0f, *row = f->c + r * f->ld;
        for (int64_t i = 0; i < f->n; i++)
            row[i] = x;
    }
}

static void fill_channels(float *c, int64_t rows, int64_t n, const float *v)
{
    rowfill f = { c, n, n, v };
    fl_cpu_parallel_for(rows, GRAIN_ELEMS / (n > 0 ? n : 1) + 1, chanfill_run, &f);
}

/* sgemm with 64-bit row counts: M is split into int-sized pieces (the others are checked). */
static void sgemm_rows(CBLAS_TRANSPOSE tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *Bm, int64_t ldb, float beta,
                       float *C, int64_t ldc)
{
    const int64_t piece = INT_MAX / 2;
    for (int64_t m0 = 0; m0 < M; m0 += piece) {
        int64_t m = M - m0 < piece ? M - m0 : piece;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb, (int)m, (int)N, (int)K, alpha, A + m0 * lda,
                    (int)lda, Bm, (int)ldb, beta, C + m0 * ldc, (int)ldc);
    }
}

static fl_status too_big(const char *op, int64_t a, int64_t b, fl_error *err)
{
    return fl_error_set(err, FL_E_RANGE, "%s: dims %lld x %lld exceed OpenBLAS's int sizes", op,
                        (long long)a, (long long)b);
}

/* ------------------------------------------------------------------ linear */

fl_status fl_cpu_fast_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                             const fl_tensor *bias, fl_error *err)
{
    const char *op = "linear";
    int nd = x->ndim;
    int64_t K = x->shape[nd - 1], N = w->shape[0], M = fl_cpu_batch_count(x, 1);
    if (M == 0 || N == 0)
        return FL_OK;
    if (N > INT_MAX / 2 || K > INT_MAX / 2)
        return too_big(op, N, K, err);
    fl_tensor xs = FL_TENSOR_NULL, ws = FL_TENSOR_NULL, os = FL_TENSOR_NULL;
    float *b = NULL;
    fl_status st = FL_OK;
    int64_t lda, ldw, ldc;
    const fl_tensor *px = x;
    fl_tensor *po = out;
    if (!rows_view(x, &lda)) {
        if ((st = f32_contig(be, op, "x", x, &xs, err)))
            goto done;
        px = &xs;
        rows_view(px, &lda);
    }
    /* w [N, K] row-major is B^T; a transposed view of it is B itself */
    CBLAS_TRANSPOSE tb = CblasTrans;
    const float *pw;
    if (w->dtype == FL_F32 && (K <= 1 || w->stride[1] == 1) && w->stride[0] >= (K > 1 ? K : 1) &&
        w->stride[0] <= INT_MAX) {
        pw = fl_tensor_data(w);
        ldw = w->stride[0];
    } else if (w->dtype == FL_F32 && (N <= 1 || w->stride[0] == 1) && w->stride[1] >= (N > 1 ? N : 1) &&
               w->stride[1] <= INT_MAX) {
        pw = fl_tensor_data(w);
        ldw = w->stride[1];
        tb = CblasNoTrans;
    } else {
        if ((st = f32_contig(be, op, "w", w, &ws, err)))
            goto done;
        pw = fl_tensor_data(&ws);
        ldw = K > 1 ? K : 1;
    }
    if (!rows_view(out, &ldc)) {
        if ((st = fl_tensor_empty(&os, FL_F32, out->ndim, out->shape, be->alloc, err))) {
            fl_error_prefix(err, "%s: scratch output", op);
            goto done;
        }
        po = &os;
        rows_view(po, &ldc);
    }
    if ((st = vec_f32(be, op, bias, N, &b, err)))
        goto done;
    float *C = fl_tensor_data(po);
    if (b || K == 0)
        fill_rows(C, M, ldc, N, b);
    if (K > 0)
        sgemm_rows(tb, M, N, K, 1.0f, fl_tensor_data(px), lda, pw, ldw, b ? 1.0f : 0.0f, C, ldc);
    if (po != out)
        st = fl_cpu_fast_copy(be, out, po, err);
done:
    if (b)
        fbuf_free(be, b, N);
    fl_tensor_release(&xs);
    fl_tensor_release(&ws);
    fl_tensor_release(&os);
    return st;
}

/* ------------------------------------------------------------------ conv2d */

typedef struct im2col {
    const float *x; /* one image [C, H, W], dense */
    float *col;     /* [C KH KW, n Wo] */
    int64_t H, W, KH, KW, Wo, oy0, n;
    const fl_conv_opts *o;
} im2col;

static void im2col_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const im2col *a = p;
    int64_t sh = a->o->stride[0], sw = a->o->stride[1], pt = a->o->pad_lo[0], pl = a->o->pad_lo[1];
    int64_t ncol = a->n * a->Wo;
    for (int64_t r = r0; r < r1; r++) {
        int64_t c = r / (a->KH * a->KW), ky = (r / a->KW) % a->KH, kx = r % a->KW;
        const float *img = a->x + c * a->H * a->W;
        float *dst = a->col + r * ncol;
        /* output columns whose input column lies inside the image: [lo, hi) */
        int64_t lo = pl - kx > 0 ? (pl - kx + sw - 1) / sw : 0;
        int64_t hi = a->W - 1 + pl - kx >= 0 ? (a->W - 1 + pl - kx) / sw + 1 : 0;
        if (hi > a->Wo)
            hi = a->Wo;
        if (lo > hi)
            lo = hi;
        for (int64_t oy = a->oy0; oy < a->oy0 + a->n; oy++, dst += a->Wo) {
            int64_t iy = oy * sh - pt + ky;
            if (iy < 0 || iy >= a->H) {
                memset(dst, 0, sizeof(float) * (size_t)a->Wo);
                continue;
            }
            const float *src = img + iy * a->W + kx - pl;
            memset(dst, 0, sizeof(float) * (size_t)lo);
            if (sw == 1)
                memcpy(dst + lo, src + lo, sizeof(float) * (size_t)(hi - lo));
            else
                for (int64_t ox = lo; ox < hi; ox++)
                    dst[ox] = src[ox * sw];
            memset(dst + hi, 0, sizeof(float) * (size_t)(a->Wo - hi));
        }
    }
}

fl_status fl_cpu_fast_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                             const fl_tensor *bias, const fl_conv_opts *o, fl_error *err)
{
    const char *op = "conv2d";
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], KH = w->shape[2], KW = w->shape[3], Ho = out->shape[2], Wo = out->shape[3];
    int64_t CKK = C * KH * KW, HWo = Ho * Wo;
    if (B == 0 || O == 0 || HWo == 0)
        return FL_OK;
    if (CKK > INT_MAX / 2 || HWo > INT_MAX / 2 || O > INT_MAX / 2 || H * W > INT_MAX / 2)
        return too_big(op, O, CKK > HWo ? CKK : HWo, err);
    fl_tensor xs = FL_TENSOR_NULL, ws = FL_TENSOR_NULL, os = FL_TENSOR_NULL;
    float *b = NULL, *col = NULL;
    int64_t ncol = 0;
    fl_status st = FL_OK;
    const fl_tensor *px = x;
    fl_tensor *po = out;
    if (!dense_from(x, 1)) {
        if ((st = f32_contig(be, op, "x", x, &xs, err)))
            goto done;
        px = &xs;
    }
    if ((st = f32_contig(be, op, "w", w, &ws, err)))
        goto done;
    if (!dense_from(out, 1)) {
        if ((st = fl_tensor_empty(&os, FL_F32, 4, out->shape, be->alloc, err))) {
            fl_error_prefix(err, "%s: scratch output", op);
            goto done;
        }
        po = &os;
    }
    if ((st = vec_f32(be, op, bias, O, &b, err)))
        goto done;
    bool pointwise = KH == 1 && KW == 1 && o->stride[0] == 1 && o->stride[1] == 1 && o->pad_lo[0] == 0 &&
                     o->pad_lo[1] == 0 && o->pad_hi[0] == 0 && o->pad_hi[1] == 0;
    int64_t rows = 1;
    if (!pointwise) {
        rows = (int64_t)(IM2COL_BYTES / sizeof(float)) / (CKK * Wo);
        rows = rows < 1 ? 1 : rows > Ho ? Ho : rows;
        ncol = CKK * rows * Wo;
        if (!(col = fbuf(be, op, ncol, err))) {
            st = err ? err->code : FL_E_NOMEM;
            goto done;
        }
    }
    const float *pw = fl_tensor_data(&ws);
    for (int64_t bi = 0; bi < B; bi++) {
        const float *xb = (const float *)fl_tensor_data(px) + bi * px->stride[0];
        float *ob = (float *)fl_tensor_data(po) + bi * po->stride[0];
        /* the bias goes in first, so every GEMM accumulates (beta = 1) */
        fill_channels(ob, O, HWo, b);
        if (pointwise) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)HWo, (int)C, 1.0f, pw,
                        (int)C, xb, (int)(H * W), 1.0f, ob, (int)HWo);
            continue;
        }
        for (int64_t oy0 = 0; oy0 < Ho; oy0 += rows) {
            int64_t n = Ho - oy0 < rows ? Ho - oy0 : rows;
            im2col a = { xb, col, H, W, KH, KW, Wo, oy0, n, o };
            fl_cpu_parallel_for(CKK, GRAIN_ELEMS / (n * Wo) + 1, im2col_run, &a);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)(n * Wo), (int)CKK, 1.0f,
                        pw, (int)CKK, col, (int)(n * Wo), 1.0f, ob + oy0 * Wo, (int)HWo);
        }
    }
    if (po != out)
        st = fl_cpu_fast_copy(be, out, po, err);
done:
    if (b)
        fbuf_free(be, b, O);
    if (col)
        fbuf_free(be, col, ncol);
    fl_tensor_release(&xs);
    fl_tensor_release(&ws);
    fl_tensor_release(&os);
    return st;
}

/* ------------------------------------------------------------------ conv1d / temporal conv */

/* The two trailing dims (S1, S2) of a [B, C, L, S1, S2] view form one unit-stride run
 * of S elements, and the channel stride leaves room for it (BLAS's leading dimension). */
static bool conv1d_ok(const fl_tensor *t)
{
    int64_t S1 = t->shape[3], S2 = t->shape[4], S = S1 * S2;
    bool run = (S2 == 1 || t->stride[4] == 1) && (S1 == 1 || t->stride[3] == (S2 == 1 ? 1 : S2));
    return run && (t->shape[1] == 1 || (t->stride[1] >= (S > 1 ? S : 1) && t->stride[1] <= INT_MAX));
}

typedef struct tapgather {
    const float *x; /* one batch item [C, L, S] dense */
    float *col;     /* [C, Lo S] */
    int64_t L, S, Lo, stride, shift;
} tapgather;

static void tapgather_run(void *p, int chunk, int64_t c0, int64_t c1)
{
    (void)chunk;
    const tapgather *g = p;
    for (int64_t c = c0; c < c1; c++)
        for (int64_t l = 0; l < g->Lo; l++) {
            int64_t il = l * g->stride + g->shift;
            float *dst = g->col + (c * g->Lo + l) * g->S;
            if (il < 0 || il >= g->L)
                memset(dst, 0, sizeof(float) * (size_t)g->S);
            else
                memcpy(dst, g->x + (c * g->L + il) * g->S, sizeof(float) * (size_t)g->S);
        }
}

fl_status fl_cpu_fast_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                             const fl_tensor *bias, const fl_conv_opts *o, fl_error *err)
{
    const char *op = "conv1d";
    int64_t B = x->shape[0], C = x->shape[1], L = x->shape[2], S = x->shape[3] * x->shape[4];
    int64_t O = w->shape[0], K = w->shape[2], Lo = out->shape[2];
    int64_t stride = o->stride[0], pad = o->pad_lo[0];
    if (B == 0 || O == 0 || Lo == 0 || S == 0)
        return FL_OK;
    if (O > INT_MAX / 2 || C > INT_MAX / 2 || Lo * S > INT_MAX / 2 || L * S > INT_MAX / 2)
        return too_big(op, O, Lo * S, err);
    fl_tensor xs = FL_TENSOR_NULL, ws = FL_TENSOR_NULL, os = FL_TENSOR_NULL;
    float *b = NULL, *wt = NULL, *col = NULL;
    fl_status st = FL_OK;
    const fl_tensor *px = x;
    fl_tensor *po = out;
    /* strided convolutions gather their taps from a dense copy */
    if (!conv1d_ok(x) || (stride > 1 && !dense_from(x, 1))) {
        if ((st = f32_contig(be, op, "x", x, &xs, err)))
            goto done;
        px = &xs;
    }
    if (!conv1d_ok(out) || (stride > 1 && !dense_from(out, 1))) {
        if ((st = fl_tensor_empty(&os, FL_F32, 5, out->shape, be->alloc, err))) {
            fl_error_prefix(err, "%s: scratch output", op);
            goto done;
        }
        po = &os;
    }
    /* taps apart: wt[k] = w[:, :, k] as a dense O x C matrix */
    if ((st = f32_contig(be, op, "w", w, &ws, err)) || (st = vec_f32(be, op, bias, O, &b, err)))
        goto done;
    if (!(wt = fbuf(be, op, K * O * C, err)) || (stride > 1 && !(col = fbuf(be, op, C * Lo * S, err)))) {
        st = err ? err->code : FL_E_NOMEM;
        goto done;
    }
    const float *wd = fl_tensor_data(&ws);
    for (int64_t k = 0; k < K; k++)
        for (int64_t i = 0; i < O * C; i++)
            wt[k * O * C + i] = wd[i * K + k];
    const int64_t *xst = px->stride, *ost = po->stride;
    /* (L, S) merge into one GEMM column range when both are dense in it */
    bool merged = (L == 1 || xst[2] == S) && (Lo == 1 || ost[2] == S) && (C == 1 || xst[1] >= L * S) &&
                  (O == 1 || ost[1] >= Lo * S);
    for (int64_t bi = 0; bi < B; bi++) {
        const float *xb = (const float *)fl_tensor_data(px) + bi * xst[0];
        float *ob = (float *)fl_tensor_data(po) + bi * ost[0];
        for (int64_t oc = 0; oc < O; oc++)
            for (int64_t l = 0; l < Lo; l++) {
                float *r = ob + oc * ost[1] + l * ost[2];
                for (int64_t s = 0; s < S; s++)
                    r[s] = b ? b[oc] : 0.0f;
            }
        for (int64_t k = 0; k < K; k++) {
            const float *wk = wt + k * O * C;
            if (stride > 1) {
                tapgather g = { xb, col, L, S, Lo, stride, k - pad };
                fl_cpu_parallel_for(C, GRAIN_ELEMS / (Lo * S) + 1, tapgather_run, &g);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)(Lo * S), (int)C, 1.0f, wk,
                            (int)C, col, (int)(Lo * S), 1.0f, ob, (int)(O > 1 ? ost[1] : Lo * S));
                continue;
            }
            /* outputs whose input position l + k - pad lies in [0, L) */
            int64_t l0 = pad - k > 0 ? pad - k : 0, l1 = L + pad - k < Lo ? L + pad - k : Lo;
            if (l1 <= l0)
                continue;
            if (merged) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)((l1 - l0) * S), (int)C,
                            1.0f, wk, (int)C, xb + (l0 + k - pad) * xst[2], (int)(C > 1 ? xst[1] : (L * S)),
                            1.0f, ob + l0 * ost[2], (int)(O > 1 ? ost[1] : (Lo * S)));
            } else {
                for (int64_t l = l0; l < l1; l++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)S, (int)C, 1.0f, wk,
                                (int)C, xb + (l + k - pad) * xst[2], (int)(C > 1 ? xst[1] : S), 1.0f,
                                ob + l * ost[2], (int)(O > 1 ? ost[1] : S));
            }
        }
    }
    if (po != out)
        st = fl_cpu_fast_copy(be, out, po, err);
done:
    if (b)
        fbuf_free(be, b, O);
    if (wt)
        fbuf_free(be, wt, K * O * C);
    if (col)
        fbuf_free(be, col, C * Lo * S);
    fl_tensor_release(&xs);
    fl_tensor_release(&ws);
    fl_tensor_release(&os);
    return st;
}

/* ------------------------------------------------------------------ norms */

/* The trailing dims [from, ndim) of x and out, neighbours merged where both tensors step
 * through them as one: `mid` dims then one run of `len` elements with strides sx, so. */
typedef struct trail {
    int nmid;
    int64_t mid_shape[FL_MAX_DIMS], mid_sx[FL_MAX_DIMS], mid_so[FL_MAX_DIMS];
    int64_t len, sx, so;
} trail;

static void trail_init(trail *t, const fl_tensor *x, const fl_tensor *out, int from)
{
    int n = 0;
    int64_t shape[FL_MAX_DIMS], sx[FL_MAX_DIMS], so[FL_MAX_DIMS];
    for (int d = from; d < x->ndim; d++) {
        if (x->shape[d] == 1)
            continue;
        if (n > 0 && sx[n - 1] == x->stride[d] * x->shape[d] && so[n - 1] == out->stride[d] * x->shape[d]) {
            shape[n - 1] *= x->shape[d];
            sx[n - 1] = x->stride[d];
            so[n - 1] = out->stride[d];
        } else {
            shape[n] = x->shape[d];
            sx[n] = x->stride[d];
            so[n] = out->stride[d];
            n++;
        }
    }
    if (n == 0) {
        t->nmid = 0;
        t->len = 1;
        t->sx = t->so = 1;
        return;
    }
    t->nmid = n - 1;
    for (int i = 0; i < n - 1; i++) {
        t->mid_shape[i] = shape[i];
        t->mid_sx[i] = sx[i];
        t->mid_so[i] = so[i];
    }
    t->len = shape[n - 1];
    t->sx = sx[n - 1];
    t->so = so[n - 1];
}

static int64_t trail_rows(const trail *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->nmid; i++)
        n *= t->mid_shape[i];
    return n;
}

/* Offsets (x, out) of the start of run r. */
static void trail_offsets(const trail *t, int64_t r, int64_t *ox, int64_t *oo)
{
    int64_t a = 0, b = 0;
    for (int i = t->nmid - 1; i >= 0; i--) {
        int64_t q = r % t->mid_shape[i];
        r /= t->mid_shape[i];
        a += q * t->mid_sx[i];
        b += q * t->mid_so[i];
    }
    *ox = a;
    *oo = b;
}

static inline float silu_f(float v) { return v / (1.0f + expf(-v)); }

typedef struct gn {
    const float *x;
    float *out;
    const fl_tensor *tx, *tout;
    int groups;
    int64_t cg;
    const float *gamma, *beta;
    double eps;
    int silu;
    trail t;
} gn;

static void gn_run(void *p, int chunk, int64_t i0, int64_t i1)
{
    (void)chunk;
    const gn *a = p;
    int64_t rows = trail_rows(&a->t), len = a->t.len, sx = a->t.sx, so = a->t.so;
    for (int64_t it = i0; it < i1; it++) {
        int64_t b = it / a->groups, g = it % a->groups, c0 = g * a->cg;
        const float *xb = a->x + b * a->tx->stride[0];
        float *ob = a->out + b * a->tout->stride[0];
        double sum = 0.0, sq = 0.0, n = (double)(a->cg * rows * len);
        for (int64_t c = c0; c < c0 + a->cg; c++)
            for (int64_t r = 0; r < rows; r++) {
                int64_t ox, oo;
                trail_offsets(&a->t, r, &ox, &oo);
                const float *px = xb + c * a->tx->stride[1] + ox;
                for (int64_t i = 0; i < len; i++)
                    sum += (double)px[i * sx];
            }
        double mean = sum / n;
        for (int64_t c = c0; c < c0 + a->cg; c++)
            for (int64_t r = 0; r < rows; r++) {
                int64_t ox, oo;
                trail_offsets(&a->t, r, &ox, &oo);
                const float *px = xb + c * a->tx->stride[1] + ox;
                for (int64_t i = 0; i < len; i++) {
                    double d = (double)px[i * sx] - mean;
                    sq += d * d;
                }
            }
        double rstd = 1.0 / sqrt(sq / n + a->eps);
        for (int64_t c = c0; c < c0 + a->cg; c++) {
            /* y = (x - mean) * mul + add. The mean goes in as two floats (mh + ml), so
             * x - mean keeps its digits when the group's spread is tiny next to its mean
             * (folding it into `add` would cancel catastrophically there). */
            double ga = a->gamma ? a->gamma[c] : 1.0;
            float mul = (float)(rstd * ga), add = a->beta ? a->beta[c] : 0.0f;
            float mh = (float)mean, ml = (float)(mean - (double)mh);
            for (int64_t r = 0; r < rows; r++) {
                int64_t ox, oo;
                trail_offsets(&a->t, r, &ox, &oo);
                const float *px = xb + c * a->tx->stride[1] + ox;
                float *po = ob + c * a->tout->stride[1] + oo;
                if (a->silu)
                    for (int64_t i = 0; i < len; i++)
                        po[i * so] = silu_f((px[i * sx] - mh - ml) * mul + add);
                else
                    for (int64_t i = 0; i < len; i++)
                        po[i * so] = (px[i * sx] - mh - ml) * mul + add;
            }
        }
    }
}

fl_status fl_cpu_fast_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                                 const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu,
                                 fl_error *err)
{
    const char *op = "group_norm";
    int64_t B = x->shape[0], C = x->shape[1];
    if (fl_tensor_numel(x) == 0)
        return FL_OK;
    gn a = { fl_tensor_data(x), fl_tensor_data(out), x, out, groups, C / groups, NULL, NULL, eps, silu,
             { 0 } };
    float *ga = NULL, *bb = NULL;
    fl_status st;
    if (!(st = vec_f32(be, op, gamma, C, &ga, err)) && !(st = vec_f32(be, op, beta, C, &bb, err))) {
        a.gamma = ga;
        a.beta = bb;
        trail_init(&a.t, x, out, 2);
        int64_t per = a.cg * trail_rows(&a.t) * a.t.len;
        fl_cpu_parallel_for(B * groups, GRAIN_ELEMS / per + 1, gn_run, &a);
    }
    if (ga)
        fbuf_free(be, ga, C);
    if (bb)
        fbuf_free(be, bb, C);
    return st;
}

typedef struct lnorm {
    const fl_tensor *x;
    fl_tensor *out;
    const float *gamma, *beta;
    double eps;
    int rms;
} lnorm;

static void lnorm_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const lnorm *a = p;
    int nd = a->x->ndim;
    int64_t D = a->x->shape[nd - 1], sx = a->x->stride[nd - 1], so = a->out->stride[nd - 1];
    const float *xd = fl_tensor_data(a->x);
    float *od = fl_tensor_data(a->out);
    for (int64_t r = r0; r < r1; r++) {
        const float *px = xd + fl_cpu_batch_offset(a->x, 1, r);
        float *po = od + fl_cpu_batch_offset(a->out, 1, r);
        double mean = 0.0, sq = 0.0;
        if (!a->rms) {
            for (int64_t i = 0; i < D; i++)
                mean += (double)px[i * sx];
            mean /= (double)D;
        }
        for (int64_t i = 0; i < D; i++) {
            double d = (double)px[i * sx] - mean;
            sq += d * d;
        }
        /* the mean as two floats: see gn_run */
        float rstd = (float)(1.0 / sqrt(sq / (double)D + a->eps)), mh = (float)mean;
        float ml = (float)(mean - (double)mh);
        for (int64_t i = 0; i < D; i++) {
            float v = (px[i * sx] - mh - ml) * rstd;
            if (a->gamma)
                v *= a->gamma[i];
            if (a->beta)
                v += a->beta[i];
            po[i * so] = v;
        }
    }
}

static fl_status lastdim_norm(fl_backend *be, const char *op, fl_tensor *out, const fl_tensor *x,
                              const fl_tensor *gamma, const fl_tensor *beta, double eps, int rms,
                              fl_error *err)
{
    int64_t D = x->shape[x->ndim - 1], rows = fl_cpu_batch_count(x, 1);
    if (rows == 0 || D == 0)
        return FL_OK;
    lnorm a = { x, out, NULL, NULL, eps, rms };
    float *ga = NULL, *bb = NULL;
    fl_status st;
    if (!(st = vec_f32(be, op, gamma, D, &ga, err)) && !(st = vec_f32(be, op, beta, D, &bb, err))) {
        a.gamma = ga;
        a.beta = bb;
        fl_cpu_parallel_for(rows, GRAIN_ELEMS / D + 1, lnorm_run, &a);
    }
    if (ga)
        fbuf_free(be, ga, D);
    if (bb)
        fbuf_free(be, bb, D);
    return st;
}

fl_status fl_cpu_fast_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                                 const fl_tensor *gamma, const fl_tensor *beta, double eps, fl_error *err)
{
    return lastdim_norm(be, "layer_norm", out, x, gamma, beta, eps, 0, err);
}

fl_status fl_cpu_fast_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                               const fl_tensor *gamma, double eps, fl_error *err)
{
    return lastdim_norm(be, "rms_norm", out, x, gamma, NULL, eps, 1, err);
}

/* ------------------------------------------------------------------ elementwise */

/* Up to three same-shape operands (0 = the output) walked as rows of their last dim. */
typedef struct ew {
    int nt;
    const fl_tensor *t[4];
    fl_act act;
    int kind; /* 0 activation, 1 modulate, 2 gate_add */
} ew;

/* The GELUs in forms without the cancellation of 1 + erf / 1 + tanh for negative inputs:
 * (1 + erf(z)) / 2 = erfc(-z) / 2 and (1 + tanh(u)) / 2 = 1 / (1 + exp(-2u)). */
static inline float gelu_f(float v) { return 0.5f * v * erfcf(-v * 0.70710678118654752f); }
static inline float gelu_tanh_f(float v)
{
    return v / (1.0f + expf(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
}

static void ew_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const ew *a = p;
    const fl_tensor *o = a->t[0];
    int nd = o->ndim;
    int64_t n = nd ? o->shape[nd - 1] : 1;
    int64_t s[4] = { 0, 0, 0, 0 };
    float *base[4];
    for (int k = 0; k < a->nt; k++) {
        s[k] = nd ? a->t[k]->stride[nd - 1] : 1;
        base[k] = fl_tensor_data(a->t[k]);
    }
    for (int64_t r = r0; r < r1; r++) {
        float *po = base[0] + (nd ? fl_cpu_batch_offset(o, 1, r) : 0);
        const float *p1 = base[1] + (nd ? fl_cpu_batch_offset(a->t[1], 1, r) : 0);
        if (a->kind == 0) {
            switch (a->act) {
            case FL_ACT_SILU:
                for (int64_t i = 0; i < n; i++)
                    po[i * s[0]] = silu_f(p1[i * s[1]]);
                break;
            case FL_ACT_GELU:
                for (int64_t i = 0; i < n; i++)
                    po[i * s[0]] = gelu_f(p1[i * s[1]]);
                break;
            default:
                for (int64_t i = 0; i < n; i++)
                    po[i * s[0]] = gelu_tanh_f(p1[i * s[1]]);
                break;
            }
            continue;
        }
        const float *p2 = base[2] + (nd ? fl_cpu_batch_offset(a->t[2], 1, r) : 0);
        const float *p3 = base[3] + (nd ? fl_cpu_batch_offset(a->t[3], 1, r) : 0);
        if (a->kind == 1) /* x * (1 + scale) + shift */
            for (int64_t i = 0; i < n; i++)
                po[i * s[0]] = p1[i * s[1]] * (1.0f + p2[i * s[2]]) + p3[i * s[3]];
        else /* res + gate * y */
            for (int64_t i = 0; i < n; i++)
                po[i * s[0]] = p1[i * s[1]] + p2[i * s[2]] * p3[i * s[3]];
    }
}

static fl_status ew_go(ew *a)
{
    const fl_tensor *o = a->t[0];
    int64_t n = fl_tensor_numel(o);
    if (n == 0)
        return FL_OK;
    int64_t len = o->ndim ? o->shape[o->ndim - 1] : 1;
    fl_cpu_parallel_for(n / len, GRAIN_ELEMS / len + 1, ew_run, a);
    return FL_OK;
}

fl_status fl_cpu_fast_activation(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in,
                                 fl_error *err)
{
    (void)be;
    (void)err;
    ew a = { 2, { out, in, NULL, NULL }, act, 0 };
    return ew_go(&a);
}

fl_status fl_cpu_fast_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                               const fl_tensor *scale, const fl_tensor *shift, fl_error *err)
{
    (void)be;
    (void)err;
    ew a = { 4, { out, x, scale, shift }, FL_ACT_SILU, 1 };
    return ew_go(&a);
}

fl_status fl_cpu_fast_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res,
                               const fl_tensor *gate, const fl_tensor *y, fl_error *err)
{
    (void)be;
    (void)err;
    ew a = { 4, { out, res, gate, y }, FL_ACT_SILU, 2 };
    return ew_go(&a);
}

/* ------------------------------------------------------------------ attention */

/* Vector helpers for the attention's inner loops. The build compiles at -O2 for the
 * baseline x86-64 ISA, where GCC vectorises only loops whose trip count is a known
 * multiple of the vector width: so the work goes in blocks of LANES with a scalar tail.
 * On x86-64 Linux with GCC each helper is also compiled for AVX2 and AVX-512 and the
 * loader picks the best the CPU has (target_clones; 2.3x for the exponential on a
 * Zen 4), so the build needs no -march. */
#define LANES 16
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

typedef union fbits {
    float f;
    uint32_t u;
} fbits;

/* s[j] = exp(s[j] - m) for j < n (every s[j] - m <= 0), returns their sum. exp is
 * Cody-Waite: n = round(x / ln 2) by the 1.5 * 2^23 trick, f = x - n ln 2 in two parts,
 * e^f by its Taylor series to degree 7 (|f| <= ln2 / 2: truncation < 6e-9), times 2^n
 * built in the exponent bits; within 1e-7 of expf. Arguments below -87 (hidden keys,
 * -inf) give exactly 0. All integer work, no branches, so it vectorises. */
SIMD_CLONES static float exp_sub_sum(float *restrict s, float m, int64_t n)
{
    float acc[LANES] = { 0 }, sum = 0.0f;
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) {
            fbits x, k, e, r;
            x.f = s[j + l] - m;
            /* for x <= 0 the bit patterns grow with |x|: an unsigned min clamps at -87 */
            uint32_t keep = (uint32_t) - (int32_t)(x.u < 0xC2AE0000u);
            x.u = x.u < 0xC2AE0000u ? x.u : 0xC2AE0000u;
            k.f = x.f * 1.44269504088896341f + 12582912.0f;
            float nf = k.f - 12582912.0f;
            float f = (x.f - nf * 0.693145751953125f) - nf * 1.428606820309417e-6f;
            e.u = (k.u - 0x4B400000u + 127u) << 23;
            float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 +
                      f * (1.0f / 720 + f * (1.0f / 5040)))))));
            r.f = p * e.f;
            r.u &= keep;
            s[j + l] = r.f;
            acc[l] += r.f;
        }
    for (; j < n; j++) {
        float x = s[j] - m;
        s[j] = x < -87.0f ? 0.0f : expf(x);
        sum += s[j];
    }
    for (int l = 0; l < LANES; l++)
        sum += acc[l];
    return sum;
}

SIMD_CLONES static float vmax(const float *restrict s, int64_t n)
{
    float acc[LANES], m = -INFINITY;
    for (int l = 0; l < LANES; l++)
        acc[l] = -INFINITY;
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] = s[j + l] > acc[l] ? s[j + l] : acc[l];
    for (; j < n; j++)
        m = s[j] > m ? s[j] : m;
    for (int l = 0; l < LANES; l++)
        m = acc[l] > m ? acc[l] : m;
    return m;
}

SIMD_CLONES static void vscal(float *restrict y, float a, int64_t n)
{
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++)
            y[i + l] *= a;
    for (; i < n; i++)
        y[i] *= a;
}

typedef struct att {
    const float *q, *k, *v;
    const fl_tensor *tq, *tk, *tv, *tout, *mask;
    float *out;
    int64_t NH, Lq, Lk, D, Dv;
    float scale;
    /* tiled path: the current tile */
    float *S, *O, *m, *l;
    int64_t b, h, q0, k0, nq, nk;
    /* small path: per-chunk scratch of `per` floats */
    float *scratch;
    int64_t per;
} att;

/* The mask's value for query i, key j of head (b, h): added to the score, or -inf. */
static inline float mask_at(const fl_tensor *mk, const void *base, int64_t off)
{
    if (mk->dtype == FL_U8)
        return ((const uint8_t *)base)[off] ? 0.0f : -INFINITY;
    return ((const float *)base)[off];
}

static void add_mask_row(const att *a, float *s, int64_t b, int64_t h, int64_t i, int64_t j0, int64_t n)
{
    const fl_tensor *mk = a->mask;
    const void *mb = fl_tensor_data(mk);
    int64_t off = b * mk->stride[0] + h * mk->stride[1] + i * mk->stride[2] + j0 * mk->stride[3];
    for (int64_t j = 0; j < n; j++)
        s[j] += mask_at(mk, mb, off + j * mk->stride[3]);
}

/* Softmax update of rows [r0, r1) of the tile: scores S become probabilities relative to
 * the new running max, l and the accumulated O rescale to it. */
static void att_update(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const att *a = p;
    for (int64_t i = r0; i < r1; i++) {
        float *s = a->S + i * a->nk;
        if (a->mask)
            add_mask_row(a, s, a->b, a->h, a->q0 + i, a->k0, a->nk);
        float mx = vmax(s, a->nk);
        float mnew = mx > a->m[i] ? mx : a->m[i];
        if (mnew == -INFINITY) { /* every key so far hidden: nothing to add */
            memset(s, 0, sizeof(float) * (size_t)a->nk);
            continue;
        }
        float corr = expf(a->m[i] - mnew);
        a->l[i] = a->l[i] * corr + exp_sub_sum(s, mnew, a->nk);
        a->m[i] = mnew;
        if (corr != 1.0f)
            vscal(a->O + i * a->Dv, corr, a->Dv);
    }
}

/* Rows [r0, r1) of the tile's result, O / l, to the output view. */
static void att_finish(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const att *a = p;
    const int64_t *os = a->tout->stride;
    for (int64_t i = r0; i < r1; i++) {
        float *dst = a->out + a->b * os[0] + a->h * os[1] + (a->q0 + i) * os[2];
        float inv = a->l[i] > 0.0f ? 1.0f / a->l[i] : 0.0f;
        for (int64_t e = 0; e < a->Dv; e++)
            dst[e * os[3]] = a->O[i * a->Dv + e] * inv;
    }
}

/* s [Lq, Lk] = q [Lq, D] kt [D, Lk], all dense: axpys over key blocks of LANES, inline so
 * a 16-key row is one vector op, not a call. */
SIMD_CLONES static void small_scores(float *restrict s, const float *restrict q, const float *restrict kt,
                                     int64_t Lq, int64_t Lk, int64_t D)
{
    memset(s, 0, sizeof(float) * (size_t)(Lq * Lk));
    for (int64_t i = 0; i < Lq; i++) {
        float *row = s + i * Lk;
        for (int64_t d = 0; d < D; d++) {
            const float *kr = kt + d * Lk;
            float a = q[i * D + d];
            int64_t j = 0;
            for (; j + LANES <= Lk; j += LANES)
                for (int l = 0; l < LANES; l++)
                    row[j + l] += a * kr[j + l];
            for (; j < Lk; j++)
                row[j] += a * kr[j];
        }
    }
}

/* o [Lq, Dv] = p [Lq, Lk] v [Lk, Dv], dense. */
SIMD_CLONES static void small_values(float *restrict o, const float *restrict p, const float *restrict v,
                                     int64_t Lq, int64_t Lk, int64_t Dv)
{
    memset(o, 0, sizeof(float) * (size_t)(Lq * Dv));
    for (int64_t i = 0; i < Lq; i++) {
        float *row = o + i * Dv;
        for (int64_t j = 0; j < Lk; j++) {
            const float *vr = v + j * Dv;
            float a = p[i * Lk + j];
            int64_t e = 0;
            for (; e + LANES <= Dv; e += LANES)
                for (int l = 0; l < LANES; l++)
                    row[e + l] += a * vr[e + l];
            for (; e < Dv; e++)
                row[e] += a * vr[e];
        }
    }
}

/* Short sequences: one (batch, head) item per iteration, no BLAS. The head's q (scaled),
 * k^T and v are first gathered into dense scratch, then scores, softmax and values run on
 * dense rows. */
static void att_small(void *p, int chunk, int64_t i0, int64_t i1)
{
    const att *a = p;
    int64_t Lq = a->Lq, Lk = a->Lk, D = a->D, Dv = a->Dv;
    float *q = a->scratch + chunk * a->per, *kt = q + Lq * D, *v = kt + D * Lk, *s = v + Lk * Dv;
    float *o = s + Lq * Lk, *l = o + Lq * Dv;
    const int64_t *qs = a->tq->stride, *ks = a->tk->stride, *vs = a->tv->stride, *os = a->tout->stride;
    for (int64_t it = i0; it < i1; it++) {
        int64_t b = it / a->NH, h = it % a->NH;
        const float *qb = a->q + b * qs[0] + h * qs[1], *kb = a->k + b * ks[0] + h * ks[1];
        const float *vb = a->v + b * vs[0] + h * vs[1];
        float *ob = a->out + b * os[0] + h * os[1];
        for (int64_t i = 0; i < Lq; i++)
            for (int64_t d = 0; d < D; d++)
                q[i * D + d] = qb[i * qs[2] + d * qs[3]] * a->scale;
        for (int64_t j = 0; j < Lk; j++) {
            for (int64_t d = 0; d < D; d++)
                kt[d * Lk + j] = kb[j * ks[2] + d * ks[3]];
            for (int64_t e = 0; e < Dv; e++)
                v[j * Dv + e] = vb[j * vs[2] + e * vs[3]];
        }
        small_scores(s, q, kt, Lq, Lk, D);
        for (int64_t i = 0; i < Lq; i++) {
            float *row = s + i * Lk;
            if (a->mask)
                add_mask_row(a, row, b, h, i, 0, Lk);
            float mx = vmax(row, Lk);
            if (mx == -INFINITY) { /* every key hidden: zeros */
                memset(row, 0, sizeof(float) * (size_t)Lk);
                l[i] = 0.0f;
            } else {
                l[i] = exp_sub_sum(row, mx, Lk);
            }
        }
        small_values(o, s, v, Lq, Lk, Dv);
        for (int64_t i = 0; i < Lq; i++) {
            float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
            for (int64_t e = 0; e < Dv; e++)
                ob[i * os[2] + e * os[3]] = o[i * Dv + e] * inv;
        }
    }
}

/* A q/k/v operand BLAS can read: unit stride along the head dim, rows at a stride that
 * leaves room for a row. Anything else is staged. */
static bool att_ok(const fl_tensor *t)
{
    int64_t d = t->shape[3];
    return (d == 1 || t->stride[3] == 1) && (t->shape[2] == 1 || (t->stride[2] >= d && t->stride[2] <= INT_MAX));
}

fl_status fl_cpu_fast_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                                const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err)
{
    const char *op = "attention";
    int64_t B = q->shape[0], NH = q->shape[1], Lq = q->shape[2], D = q->shape[3];
    int64_t Lk = k->shape[2], Dv = v->shape[3];
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    if (Lk == 0)
        return fl_cpu_fast_fill(be, out, 0.0, err);
    att a;
    memset(&a, 0, sizeof a);
    a.tq = q;
    a.tk = k;
    a.tv = v;
    a.tout = out;
    a.mask = mask;
    a.out = fl_tensor_data(out);
    a.NH = NH;
    a.Lq = Lq;
    a.Lk = Lk;
    a.D = D;
    a.Dv = Dv;
    a.scale = (float)scale;
    fl_tensor qs = FL_TENSOR_NULL, ks = FL_TENSOR_NULL, vs = FL_TENSOR_NULL;
    fl_status st = FL_OK;
    int64_t nscratch = 0;
    bool small = Lk <= ATT_SMALL && Lq <= ATT_SMALL;
    if (!small) {
        if (!att_ok(q)) {
            if ((st = f32_contig(be, op, "q", q, &qs, err)))
                goto done;
            a.tq = &qs;
        }
        if (!att_ok(k)) {
            if ((st = f32_contig(be, op, "k", k, &ks, err)))
                goto done;
            a.tk = &ks;
        }
        if (!att_ok(v)) {
            if ((st = f32_contig(be, op, "v", v, &vs, err)))
                goto done;
            a.tv = &vs;
        }
    }
    a.q = fl_tensor_data(a.tq);
    a.k = fl_tensor_data(a.tk);
    a.v = fl_tensor_data(a.tv);
    if (small) {
        int64_t work = Lq * Lk * (D + Dv) + 1;
        int64_t grain = 8 * GRAIN_ELEMS / work + 1;
        int chunks = fl_cpu_parallel_chunks(B * NH, grain);
        a.per = Lq * D + D * Lk + Lk * Dv + Lq * Lk + Lq * Dv + Lq;
        nscratch = chunks * a.per;
        if (!(a.scratch = fbuf(be, op, nscratch, err))) {
            st = err ? err->code : FL_E_NOMEM;
            goto done;
        }
        fl_cpu_parallel_for(B * NH, grain, att_small, &a);
        goto done;
    }
    {
        int64_t bq = Lq < ATT_BQ ? Lq : ATT_BQ, bk = Lk < ATT_BK ? Lk : ATT_BK;
        nscratch = bq * bk + bq * Dv + 2 * bq;
        float *buf = fbuf(be, op, nscratch, err);
        if (!buf) {
            st = err ? err->code : FL_E_NOMEM;
            goto done;
        }
        a.scratch = buf;
        a.S = buf;
        a.O = buf + bq * bk;
        a.m = a.O + bq * Dv;
        a.l = a.m + bq;
        const int64_t *sq = a.tq->stride, *sk = a.tk->stride, *sv = a.tv->stride;
        for (int64_t bh = 0; bh < B * NH; bh++) {
            a.b = bh / NH;
            a.h = bh % NH;
            const float *qb = a.q + a.b * sq[0] + a.h * sq[1], *kb = a.k + a.b * sk[0] + a.h * sk[1];
            const float *vb = a.v + a.b * sv[0] + a.h * sv[1];
            for (a.q0 = 0; a.q0 < Lq; a.q0 += bq) {
                a.nq = Lq - a.q0 < bq ? Lq - a.q0 : bq;
                for (int64_t i = 0; i < a.nq; i++) {
                    a.m[i] = -INFINITY;
                    a.l[i] = 0.0f;
                }
                memset(a.O, 0, sizeof(float) * (size_t)(a.nq * Dv));
                for (a.k0 = 0; a.k0 < Lk; a.k0 += bk) {
                    a.nk = Lk - a.k0 < bk ? Lk - a.k0 : bk;
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)a.nq, (int)a.nk, (int)D, a.scale,
                                qb + a.q0 * sq[2], (int)(Lq > 1 ? sq[2] : D), kb + a.k0 * sk[2],
                                (int)(Lk > 1 ? sk[2] : D), 0.0f, a.S, (int)a.nk);
                    /* on this thread: OpenBLAS's workers spin between GEMMs, so threads
                     * of ours here would only contend with them for the cores */
                    att_update(&a, 0, 0, a.nq);
                    if (Dv > 0)
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)a.nq, (int)Dv, (int)a.nk,
                                    1.0f, a.S, (int)a.nk, vb + a.k0 * sv[2], (int)(Lk > 1 ? sv[2] : Dv), 1.0f,
                                    a.O, (int)Dv);
                }
                att_finish(&a, 0, 0, a.nq);
            }
        }
    }
done:
    if (a.scratch)
        fbuf_free(be, a.scratch, nscratch);
    fl_tensor_release(&qs);
    fl_tensor_release(&ks);
    fl_tensor_release(&vs);
    return st;
}

/* ------------------------------------------------------------------ embeddings, upsampling */

/* N x dim numbers computed once in double: the reference is already the fast path. */
fl_status fl_cpu_fast_timestep_embedding(fl_backend *be, fl_tensor *out, const fl_tensor *t,
                                         const fl_temb_opts *o, fl_error *err)
{
    return fl_cpu_ref_timestep_embedding(be, out, t, o, err);
}

typedef struct ups {
    const fl_tensor *x, *out;
    int64_t fh, fw;
} ups;

static void ups_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const ups *a = p;
    int nd = a->out->ndim;
    int64_t Ho = a->out->shape[nd - 2], Wo = a->out->shape[nd - 1];
    int64_t xs = a->x->stride[nd - 1], os = a->out->stride[nd - 1];
    const float *xd = fl_tensor_data(a->x);
    float *od = fl_tensor_data(a->out);
    for (int64_t r = r0; r < r1; r++) { /* r = (leading index, output row) */
        int64_t lead = r / Ho, oy = r % Ho;
        const float *src = xd + fl_cpu_batch_offset(a->x, 2, lead) + (oy / a->fh) * a->x->stride[nd - 2];
        float *dst = od + fl_cpu_batch_offset(a->out, 2, lead) + oy * a->out->stride[nd - 2];
        if (a->fw == 2 && xs == 1 && os == 1)
            for (int64_t ix = 0; ix < Wo / 2; ix++)
                dst[2 * ix] = dst[2 * ix + 1] = src[ix];
        else
            for (int64_t ox = 0; ox < Wo; ox++)
                dst[ox * os] = src[(ox / a->fw) * xs];
    }
}

fl_status fl_cpu_fast_upsample_nearest(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err)
{
    (void)be;
    (void)err;
    int nd = out->ndim;
    if (fl_tensor_numel(out) == 0)
        return FL_OK;
    ups a = { x, out, out->shape[nd - 2] / x->shape[nd - 2], out->shape[nd - 1] / x->shape[nd - 1] };
    int64_t rows = fl_cpu_batch_count(out, 2) * out->shape[nd - 2];
    fl_cpu_parallel_for(rows, GRAIN_ELEMS / out->shape[nd - 1] + 1, ups_run, &a);
    return FL_OK;
}

/* ------------------------------------------------------------------ rotary embedding */

typedef struct rope {
    const fl_tensor *x, *out;
    const fl_rope_opts *o;
    const float *cs[3]; /* per axis: [positions][pairs][cos, sin] */
} rope;

static void rope_run(void *p, int chunk, int64_t r0, int64_t r1)
{
    (void)chunk;
    const rope *a = p;
    const fl_rope_opts *o = a->o;
    int64_t L = a->x->shape[1], NH = a->x->shape[2], D = a->x->shape[3];
    int64_t G = o->grid[0] * o->grid[1] * o->grid[2];
    const int64_t *xs = a->x->stride, *os = a->out->stride;
    const float *xd = fl_tensor_data(a->x);
    float *od = fl_tensor_data(a->out);
    for (int64_t r = r0; r < r1; r++) { /* r = (batch, token) */
        int64_t b = r / L, n = r % L;
        int64_t pos[3] = { n / (o->grid[1] * o->grid[2]), (n / o->grid[2]) % o->grid[1], n % o->grid[2] };
        for (int64_t h = 0; h < NH; h++) {
            const float *px = xd + b * xs[0] + n * xs[1] + h * xs[2];
            float *po = od + b * os[0] + n * os[1] + h * os[2];
            int64_t e = 0;
            for (int ax = 0; ax < 3 && n < G; ax++) {
                const float *t = a->cs[ax] + pos[ax] * o->dims[ax];
                for (int64_t j = 0; j < o->dims[ax] / 2; j++, e += 2) {
                    float c = t[2 * j], s = t[2 * j + 1], x0 = px[e * xs[3]], x1 = px[(e + 1) * xs[3]];
                    po[e * os[3]] = x0 * c - x1 * s;
                    po[(e + 1) * os[3]] = x0 * s + x1 * c;
                }
            }
            for (; e < D; e++)
                po[e * os[3]] = px[e * xs[3]];
        }
    }
}

fl_status fl_cpu_fast_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_rope_opts *o,
                           fl_error *err)
{
    const char *op = "rope";
    int64_t n[3];
    float *tab[3] = { NULL, NULL, NULL };
    fl_status st = FL_OK;
    if (fl_tensor_numel(x) == 0)
        return FL_OK;
    /* angles in double, as the reference computes them; the rotation itself in f32 */
    for (int ax = 0; ax < 3; ax++) {
        n[ax] = o->grid[ax] * o->dims[ax];
        if (!(tab[ax] = fbuf(be, op, n[ax], err))) {
            st = err ? err->code : FL_E_NOMEM;
            goto done;
        }
        for (int64_t p = 0; p < o->grid[ax]; p++)
            for (int64_t j = 0; j < o->dims[ax] / 2; j++) {
                double ang = (double)(o->pos0[ax] + p) * pow(o->theta, -2.0 * (double)j / (double)o->dims[ax]);
                tab[ax][p * o->dims[ax] + 2 * j] = (float)cos(ang);
                tab[ax][p * o->dims[ax] + 2 * j + 1] = (float)sin(ang);
            }
    }
    rope a = { x, out, o, { tab[0], tab[1], tab[2] } };
    int64_t per = x->shape[2] * x->shape[3];
    fl_cpu_parallel_for(x->shape[0] * x->shape[1], GRAIN_ELEMS / (per + 1) + 1, rope_run, &a);
done:
    for (int ax = 0; ax < 3; ax++)
        if (tab[ax])
            fbuf_free(be, tab[ax], n[ax]);
    return st;
}
