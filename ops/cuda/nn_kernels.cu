/* The CUDA backend's neural-network kernels behind cuda_internal.h: mixed-precision cuBLAS
 * GEMMs, im2col, group/layer/RMS norms, activations, modulation, flash-style attention,
 * timestep embedding, upsampling and RoPE. The C half (cuda_nn.c) plans the calls. */
#include <cmath>
#include <cstring>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_common.cuh"

/* ------------------------------------------------------------------ element stores */

template <typename T> struct put;
template <> struct put<float> {
    __device__ static float f(float x) { return x; }
};
template <> struct put<f16_t> {
    __device__ static f16_t f(float x) { return f16_t{ to_f16(x) }; }
};
template <> struct put<bf16_t> {
    __device__ static bf16_t f(float x) { return bf16_t{ to_bf16(x) }; }
};

static int blas_fail(char *msg, const char *what, cublasStatus_t s)
{
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? FL_CU_E_NOMEM : FL_CU_E_DEVICE;
    return fail(msg, code, what, cublasGetStatusString(s));
}

/* ------------------------------------------------------------------ GEMM */

extern "C" int fl_cu_gemm_nn(void *handle, fl_dtype ab, int tf32, const fl_cu_gemm_args *g, char *msg)
{
    cublasHandle_t h = (cublasHandle_t)handle;
    cudaDataType_t type;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    size_t es;
    switch (ab) {
    case FL_F32:
        type = CUDA_R_32F;
        es = 4;
        if (tf32) /* opt-in (FL_CUDA_TF32=1): inputs rounded to TF32 on the tensor cores */
            compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        break;
    case FL_F16: type = CUDA_R_16F; es = 2; break;
    case FL_BF16: type = CUDA_R_16BF; es = 2; break;
    default: return fail(msg, FL_CU_E_DEVICE, "cublasGemmStridedBatchedEx", "operand dtype is not f32/f16/bf16");
    }
    cublasOperation_t ta = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    float alpha = (float)g->alpha, beta = (float)g->beta;
    const char *pa = (const char *)g->a, *pb = (const char *)g->b;
    char *pc = (char *)g->c;
    for (int64_t done = 0; done < g->batch;) { /* batchCount is an int */
        int64_t chunk = g->batch - done;
        if (chunk > 0x40000000)
            chunk = 0x40000000;
        cublasStatus_t s = cublasGemmStridedBatchedEx(
            h, ta, tb, (int)g->m, (int)g->n, (int)g->k, &alpha, pa, type, (int)g->lda, (long long)g->stride_a, pb,
            type, (int)g->ldb, (long long)g->stride_b, &beta, pc, CUDA_R_32F, (int)g->ldc, (long long)g->stride_c,
            (int)chunk, compute, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS)
            return blas_fail(msg, "cublasGemmStridedBatchedEx", s);
        pa += (size_t)(chunk * g->stride_a) * es;
        pb += (size_t)(chunk * g->stride_b) * es;
        pc += (size_t)(chunk * g->stride_c) * 4;
        done += chunk;
    }
    return launch_check(msg, "cublasGemmStridedBatchedEx");
}

/* ------------------------------------------------------------------ bias fill */

__global__ static void bias_fill_kernel(float *out, int64_t n0, int64_t n1, int64_t n2, int64_t s0, int64_t s1,
                                        int64_t s2, int bias_dim, const float *bias)
{
    int64_t total = n0 * n1 * n2;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t i2 = i % n2, i1 = (i / n2) % n1, i0 = i / (n1 * n2);
        float v = 0.0f;
        if (bias)
            v = bias[bias_dim == 0 ? i0 : bias_dim == 1 ? i1 : i2];
        out[i0 * s0 + i1 * s1 + i2 * s2] = v;
    }
}

extern "C" int fl_cu_bias_fill(float *out, const int64_t n[3], const int64_t s[3], int bias_dim, const float *bias,
                              char *msg)
{
    int64_t total = n[0] * n[1] * n[2];
    if (total == 0)
        return FL_CU_OK;
    bias_fill_kernel<<<grid_for(total), FL_CU_THREADS>>>(out, n[0], n[1], n[2], s[0], s[1], s[2], bias_dim, bias);
    return launch_check(msg, "bias fill kernel");
}

/* ------------------------------------------------------------------ im2col */

/* One thread per column element; consecutive threads walk the output columns, so the
 * writes are coalesced and (for stride 1) so are the reads. */
template <typename T> __global__ static void im2col_kernel(fl_cu_im2col_args a)
{
    int64_t ncol = a.nho * a.Wo * a.S, rows = a.C * a.KH * a.KW, total = a.nimg * rows * ncol;
    T *col = (T *)a.col;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = i % ncol, r = (i / ncol) % rows, n = i / (ncol * rows);
        int64_t s = p % a.S, wo = (p / a.S) % a.Wo, ho = a.ho0 + p / (a.S * a.Wo);
        int64_t kw = r % a.KW, kh = (r / a.KW) % a.KH, c = r / (a.KW * a.KH);
        int64_t iy = ho * a.stride[0] - a.pad[0] + kh, ix = wo * a.stride[1] - a.pad[1] + kw;
        float v = 0.0f;
        if (iy >= 0 && iy < a.H && ix >= 0 && ix < a.W)
            v = a.x[n * a.xs[0] + c * a.xs[1] + iy * a.xs[2] + ix * a.xs[3] + s * a.xs[4]];
        col[i] = put<T>::f(v);
    }
}

extern "C" int fl_cu_im2col(const fl_cu_im2col_args *a, char *msg)
{
    int64_t total = a->nimg * a->C * a->KH * a->KW * a->nho * a->Wo * a->S;
    if (total == 0)
        return FL_CU_OK;
    switch (a->ct) {
    case FL_F32: im2col_kernel<float><<<grid_for(total), FL_CU_THREADS>>>(*a); break;
    case FL_F16: im2col_kernel<f16_t><<<grid_for(total), FL_CU_THREADS>>>(*a); break;
    case FL_BF16: im2col_kernel<bf16_t><<<grid_for(total), FL_CU_THREADS>>>(*a); break;
    default: return fail(msg, FL_CU_E_DEVICE, "im2col kernel", "column dtype is not f32/f16/bf16");
    }
    return launch_check(msg, "im2col kernel");
}

/* ------------------------------------------------------------------ reductions */

/* Welford state: count, mean, sum of squared deviations. */
struct wstate {
    double n, mean, m2;
};

__device__ static inline wstate wcombine(wstate a, wstate b)
{
    if (b.n == 0.0)
        return a;
    if (a.n == 0.0)
        return b;
    double n = a.n + b.n, d = b.mean - a.mean;
    return wstate{ n, a.mean + d * (b.n / n), a.m2 + b.m2 + d * d * (a.n * b.n / n) };
}

/* Combines every thread's state; the block's total is returned to thread 0. */
__device__ static wstate block_welford(wstate v)
{
    __shared__ double sh[3][32];
    for (int off = 16; off > 0; off /= 2) {
        wstate o{ __shfl_down_sync(0xffffffffu, v.n, off), __shfl_down_sync(0xffffffffu, v.mean, off),
                  __shfl_down_sync(0xffffffffu, v.m2, off) };
        v = wcombine(v, o);
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) {
        sh[0][warp] = v.n;
        sh[1][warp] = v.mean;
        sh[2][warp] = v.m2;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? wstate{ sh[0][lane], sh[1][lane], sh[2][lane] } : wstate{ 0.0, 0.0, 0.0 };
        for (int off = 16; off > 0; off /= 2) {
            wstate o{ __shfl_down_sync(0xffffffffu, v.n, off), __shfl_down_sync(0xffffffffu, v.mean, off),
                      __shfl_down_sync(0xffffffffu, v.m2, off) };
            v = wcombine(v, o);
        }
    }
    __syncthreads(); /* sh may be reused by the caller's next reduction */
    return v;
}

__device__ static inline wstate wpush(wstate w, double x)
{
    w.n += 1.0;
    double d = x - w.mean;
    w.mean += d / w.n;
    w.m2 += d * (x - w.mean);
    return w;
}

/* ------------------------------------------------------------------ group norm */

#define GN_CHUNK 16384 /* elements of a group per block in the statistics pass */

/* Offset of trailing position s (row-major over sp[0..nsp)) through strides st. */
__device__ static inline int64_t sp_offset(const fl_cu_gn_args &a, int64_t s, const int64_t *st)
{
    int64_t off = 0;
    for (int d = a.nsp - 1; d >= 0; d--) {
        off += (s % a.sp[d]) * st[2 + d];
        s /= a.sp[d];
    }
    return off;
}

__global__ static void gn_stats_kernel(fl_cu_gn_args a, int64_t S, int64_t nchunk, double *part)
{
    int64_t bg = blockIdx.x / nchunk, chunk = blockIdx.x % nchunk;
    int64_t cg = a.C / a.groups, b = bg / a.groups, g = bg % a.groups, n = cg * S;
    int64_t e0 = chunk * GN_CHUNK, e1 = e0 + GN_CHUNK < n ? e0 + GN_CHUNK : n;
    wstate w{ 0.0, 0.0, 0.0 };
    for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
        int64_t c = g * cg + e / S;
        w = wpush(w, (double)a.x[b * a.xs[0] + c * a.xs[1] + sp_offset(a, e % S, a.xs)]);
    }
    w = block_welford(w);
    if (threadIdx.x == 0) {
        part[3 * blockIdx.x] = w.n;
        part[3 * blockIdx.x + 1] = w.mean;
        part[3 * blockIdx.x + 2] = w.m2;
    }
}

/* stats[bg] = (mean, 1 / sqrt(var + eps)) from the chunks' partial states. */
__global__ static void gn_final_kernel(int64_t ngroups, int64_t nchunk, const double *part, double eps,
                                       double *stats)
{
    for (int64_t bg = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; bg < ngroups;
         bg += (int64_t)gridDim.x * blockDim.x) {
        wstate w{ 0.0, 0.0, 0.0 };
        for (int64_t c = 0; c < nchunk; c++) {
            const double *p = part + 3 * (bg * nchunk + c);
            w = wcombine(w, wstate{ p[0], p[1], p[2] });
        }
        stats[2 * bg] = w.mean;
        stats[2 * bg + 1] = 1.0 / sqrt(w.m2 / (w.n > 0.0 ? w.n : 1.0) + eps);
    }
}

__device__ static inline float silu_f(float v) { return v / (1.0f + expf(-v)); }

__global__ static void gn_apply_kernel(fl_cu_gn_args a, int64_t S, const double *stats)
{
    int64_t total = a.B * a.C * S, cg = a.C / a.groups;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t s = i % S, c = (i / S) % a.C, b = i / (S * a.C), bg = b * a.groups + c / cg;
        float x = a.x[b * a.xs[0] + c * a.xs[1] + sp_offset(a, s, a.xs)];
        /* x - mean in double, as the CPU keeps the mean's digits */
        float y = (float)(((double)x - stats[2 * bg]) * stats[2 * bg + 1]);
        if (a.gamma)
            y *= a.gamma[c];
        if (a.beta)
            y += a.beta[c];
        if (a.silu)
            y = silu_f(y);
        a.out[b * a.os[0] + c * a.os[1] + sp_offset(a, s, a.os)] = y;
    }
}

extern "C" int fl_cu_group_norm(const fl_cu_gn_args *a, int async_alloc, char *msg)
{
    int64_t S = 1;
    for (int d = 0; d < a->nsp; d++)
        S *= a->sp[d];
    int64_t n = (a->C / a->groups) * S, ngroups = a->B * a->groups;
    if (ngroups == 0 || n == 0)
        return FL_CU_OK;
    int64_t nchunk = (n + GN_CHUNK - 1) / GN_CHUNK;
    if (ngroups * nchunk > 0x7fffffff)
        return fail(msg, FL_CU_E_DEVICE, "group norm", "too many groups for one grid");
    void *scratch = NULL;
    size_t nbytes = sizeof(double) * (size_t)(3 * ngroups * nchunk + 2 * ngroups);
    int rc = fl_cu_scratch_alloc(async_alloc, nbytes, &scratch, msg);
    if (rc)
        return rc;
    double *part = (double *)scratch, *stats = part + 3 * ngroups * nchunk;
    gn_stats_kernel<<<(unsigned)(ngroups * nchunk), FL_CU_THREADS>>>(*a, S, nchunk, part);
    rc = launch_check(msg, "group norm statistics kernel");
    if (!rc) {
        gn_final_kernel<<<grid_for(ngroups), FL_CU_THREADS>>>(ngroups, nchunk, part, a->eps, stats);
        rc = launch_check(msg, "group norm statistics kernel");
    }
    if (!rc) {
        gn_apply_kernel<<<grid_for(a->B * a->C * S), FL_CU_THREADS>>>(*a, S, stats);
        rc = launch_check(msg, "group norm kernel");
    }
    fl_cu_scratch_free(async_alloc, scratch); /* stream-ordered: after the kernels */
    return rc;
}

/* ------------------------------------------------------------------ layer / RMS norm */

/* One block per row: Welford statistics over the row, then the normalised row. */
__global__ static void lastdim_kernel(fl_cu_ln_args a)
{
    __shared__ double stat[2];
    for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
        int64_t xo = 0, oo = 0, q = r;
        for (int d = a.nlead - 1; d >= 0; d--) {
            int64_t i = q % a.lead[d];
            q /= a.lead[d];
            xo += i * a.xs_lead[d];
            oo += i * a.os_lead[d];
        }
        const float *x = a.x + xo;
        float *out = a.out + oo;
        wstate w{ 0.0, 0.0, 0.0 };
        for (int64_t i = threadIdx.x; i < a.D; i += blockDim.x) {
            double v = (double)x[i * a.xs];
            if (a.rms) { /* mean of squares about 0: kept in m2 with the mean pinned at 0 */
                w.n += 1.0;
                w.m2 += v * v;
            } else {
                w = wpush(w, v);
            }
        }
        w = block_welford(w);
        if (threadIdx.x == 0) {
            /* for RMS the per-thread means are 0, so the combine adds the m2 sums plainly */
            stat[0] = a.rms ? 0.0 : w.mean;
            stat[1] = 1.0 / sqrt(w.m2 / (double)a.D + a.eps);
        }
        __syncthreads();
        double mean = stat[0], rstd = stat[1];
        for (int64_t i = threadIdx.x; i < a.D; i += blockDim.x) {
            float y = (float)(((double)x[i * a.xs] - mean) * rstd);
            if (a.gamma)
                y *= a.gamma[i];
            if (a.beta)
                y += a.beta[i];
            out[i * a.os] = y;
        }
        __syncthreads(); /* stat is rewritten for the next row */
    }
}

extern "C" int fl_cu_lastdim_norm(const fl_cu_ln_args *a, char *msg)
{
    if (a->rows == 0 || a->D == 0)
        return FL_CU_OK;
    unsigned blocks = (unsigned)(a->rows < 0x7fffffff ? a->rows : 0x7fffffff);
    lastdim_kernel<<<blocks, FL_CU_THREADS>>>(*a);
    return launch_check(msg, "layer norm kernel");
}

/* ------------------------------------------------------------------ elementwise */

/* The same forms as ops/cpu: erfc and the logistic form avoid the cancellation of
 * 1 + erf / 1 + tanh for negative inputs. */
template <int ACT> __device__ static inline float act_f(float v);
template <> __device__ inline float act_f<0>(float v) { return v / (1.0f + expf(-v)); }
template <> __device__ inline float act_f<1>(float v) { return 0.5f * v * erfcf(-v * 0.70710678118654752f); }
template <> __device__ inline float act_f<2>(float v)
{
    return v / (1.0f + expf(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
}

template <int ACT> __global__ static void act_kernel(fl_cu_layout l, float *out, const float *in)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < l.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[2];
        offsets_of<2>(l, i, off);
        out[off[0]] = act_f<ACT>(in[off[1]]);
    }
}

extern "C" int fl_cu_activation(int act, const fl_cu_layout *l, float *out, const float *in, char *msg)
{
    switch (act) {
    case 0: act_kernel<0><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, out, in); break;
    case 1: act_kernel<1><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, out, in); break;
    case 2: act_kernel<2><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, out, in); break;
    default: return fail(msg, FL_CU_E_DEVICE, "activation kernel", "unknown activation");
    }
    return launch_check(msg, "activation kernel");
}

template <int KIND>
__global__ static void mod_kernel(fl_cu_layout l, float *out, const float *a, const float *b, const float *c)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < l.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t off[4];
        offsets_of<4>(l, i, off);
        float x = a[off[1]], y = b[off[2]], z = c[off[3]];
        out[off[0]] = KIND == 0 ? x * (1.0f + y) + z : x + y * z;
    }
}

extern "C" int fl_cu_modulate(int kind, const fl_cu_layout *l, float *out, const float *a, const float *b,
                             const float *c, char *msg)
{
    if (kind == 0)
        mod_kernel<0><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, out, a, b, c);
    else
        mod_kernel<1><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, out, a, b, c);
    return launch_check(msg, "modulate kernel");
}

/* ------------------------------------------------------------------ attention */

/* Each thread owns one query: its (pre-scaled) q row and its output accumulator live in
 * registers (DK, DV >= the head dims, compile-time so the arrays stay in registers), key
 * and value tiles of BK rows are staged through shared memory by the whole block, and the
 * softmax runs online in base 2: per tile the running max m, the sum l and the
 * accumulator are rescaled by 2^(m_old - m_new). No score matrix is ever stored. */
template <int DK, int DV, int BK> __global__ static void attn_kernel(fl_cu_attn_args a, int64_t qblocks)
{
    __shared__ float ks[BK][DK];
    __shared__ float vs[BK][DV];
    const float LOG2E = 1.4426950408889634f;
    int64_t bh = blockIdx.x / qblocks, qb = blockIdx.x % qblocks;
    int64_t b = bh / a.NH, h = bh % a.NH;
    int64_t i = qb * blockDim.x + threadIdx.x;
    bool active = i < a.Lq;
    const float *qp = a.q + b * a.qs[0] + h * a.qs[1] + (active ? i : 0) * a.qs[2];
    const float *kp = a.k + b * a.ks[0] + h * a.ks[1], *vp = a.v + b * a.vs[0] + h * a.vs[1];
    float q[DK], o[DV];
    float qscale = a.scale * LOG2E;
#pragma unroll
    for (int d = 0; d < DK; d++)
        q[d] = active && d < a.D ? qp[d * a.qs[3]] * qscale : 0.0f;
#pragma unroll
    for (int e = 0; e < DV; e++)
        o[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int64_t k0 = 0; k0 < a.Lk; k0 += BK) {
        int64_t nk = a.Lk - k0 < BK ? a.Lk - k0 : BK;
        /* the whole tile is written, zeros past the data, so no stale value (or NaN) from
         * a previous tile can meet a zero weight */
        for (int t = threadIdx.x; t < BK * DK; t += blockDim.x) {
            int j = t / DK, d = t % DK;
            ks[j][d] = j < nk && d < a.D ? kp[(k0 + j) * a.ks[2] + d * a.ks[3]] : 0.0f;
        }
        for (int t = threadIdx.x; t < BK * DV; t += blockDim.x) {
            int j = t / DV, e = t % DV;
            vs[j][e] = j < nk && e < a.Dv ? vp[(k0 + j) * a.vs[2] + e * a.vs[3]] : 0.0f;
        }
        __syncthreads();
        if (active) {
            float s[BK], mt = -INFINITY;
#pragma unroll
            for (int j = 0; j < BK; j++) {
                float dot = 0.0f;
#pragma unroll
                for (int d = 0; d < DK; d++)
                    dot += q[d] * ks[j][d];
                if (j >= nk) {
                    dot = -INFINITY;
                } else if (a.mask) {
                    int64_t mo = b * a.ms[0] + h * a.ms[1] + i * a.ms[2] + (k0 + j) * a.ms[3];
                    if (a.mask_u8)
                        dot = ((const uint8_t *)a.mask)[mo] ? dot : -INFINITY;
                    else
                        dot += ((const float *)a.mask)[mo] * LOG2E;
                }
                s[j] = dot;
                mt = fmaxf(mt, dot);
            }
            float mnew = fmaxf(m, mt);
            if (mnew != -INFINITY) { /* else every key so far is hidden: nothing to add */
                float corr = exp2f(m - mnew);
                l *= corr;
#pragma unroll
                for (int e = 0; e < DV; e++)
                    o[e] *= corr;
#pragma unroll
                for (int j = 0; j < BK; j++) {
                    float p = exp2f(s[j] - mnew);
                    l += p;
#pragma unroll
                    for (int e = 0; e < DV; e++)
                        o[e] += p * vs[j][e];
                }
                m = mnew;
            }
        }
        __syncthreads();
    }
    if (active) {
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        float *op = a.out + b * a.os[0] + h * a.os[1] + i * a.os[2];
#pragma unroll
        for (int e = 0; e < DV; e++)
            if (e < a.Dv)
                op[e * a.os[3]] = o[e] * inv;
    }
}

template <int DK, int DV, int BK> static int launch_attn(const fl_cu_attn_args *a, char *msg)
{
    /* one thread per query; short sequences (temporal attention) take narrow blocks */
    int64_t threads = a->Lq < 128 ? ((a->Lq + 31) / 32) * 32 : 128;
    int64_t qblocks = (a->Lq + threads - 1) / threads, blocks = a->B * a->NH * qblocks;
    if (blocks > 0x7fffffff)
        return fail(msg, FL_CU_E_DEVICE, "attention kernel", "too many (batch, head, query block) items");
    attn_kernel<DK, DV, BK><<<(unsigned)blocks, (unsigned)threads>>>(*a, qblocks);
    return launch_check(msg, "attention kernel");
}

extern "C" int fl_cu_attention(const fl_cu_attn_args *a, char *msg)
{
    if (a->Lq == 0 || a->B * a->NH == 0)
        return FL_CU_OK;
    int64_t d = a->D > a->Dv ? a->D : a->Dv;
    if (d <= 32)
        return launch_attn<32, 32, 32>(a, msg);
    if (d <= 64)
        return launch_attn<64, 64, 32>(a, msg);
    if (d <= 128)
        return launch_attn<128, 128, 16>(a, msg);
    if (d <= FL_CU_ATTN_MAXD)
        return launch_attn<256, 256, 8>(a, msg);
    return fail(msg, FL_CU_E_DEVICE, "attention kernel", "head dim above 256");
}

/* ------------------------------------------------------------------ embeddings */

__global__ static void temb_kernel(fl_cu_temb_args a)
{
    int64_t half = a.dim / 2, cols = half + (a.dim % 2), total = a.N * cols;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = i / cols, j = i % cols;
        float *row = a.out + n * a.os0;
        if (j == half) { /* odd dim: the trailing zero */
            row[(a.dim - 1) * a.os1] = 0.0f;
            continue;
        }
        double t = a.t_f64 ? ((const double *)a.t)[n * a.ts] : (double)((const float *)a.t)[n * a.ts];
        double freq = exp(-log(a.max_period) * (double)j / ((double)half - a.freq_shift));
        double arg = a.scale * t * freq;
        int64_t ci = a.cos_first ? j : half + j, si = a.cos_first ? half + j : j;
        row[ci * a.os1] = (float)cos(arg);
        row[si * a.os1] = (float)sin(arg);
    }
}

extern "C" int fl_cu_timestep_embedding(const fl_cu_temb_args *a, char *msg)
{
    int64_t total = a->N * (a->dim / 2 + a->dim % 2);
    if (total == 0)
        return FL_CU_OK;
    temb_kernel<<<grid_for(total), FL_CU_THREADS>>>(*a);
    return launch_check(msg, "timestep embedding kernel");
}

struct ups_args {
    int ndim;
    int64_t shape[FL_CU_MAX_DIMS], os[FL_CU_MAX_DIMS], xs[FL_CU_MAX_DIMS];
    int64_t fh, fw, numel;
};

__global__ static void ups_kernel(ups_args a, float *out, const float *x)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i, oo = 0, xo = 0;
        for (int d = a.ndim - 1; d >= 0; d--) {
            int64_t k = r % a.shape[d];
            r /= a.shape[d];
            oo += k * a.os[d];
            xo += (d == a.ndim - 1 ? k / a.fw : d == a.ndim - 2 ? k / a.fh : k) * a.xs[d];
        }
        out[oo] = x[xo];
    }
}

extern "C" int fl_cu_upsample(int ndim, const int64_t *oshape, const int64_t *ostride, float *out,
                             const int64_t *xstride, const float *x, int64_t fh, int64_t fw, char *msg)
{
    ups_args a;
    memset(&a, 0, sizeof a);
    a.ndim = ndim;
    a.fh = fh;
    a.fw = fw;
    a.numel = 1;
    for (int d = 0; d < ndim; d++) {
        a.shape[d] = oshape[d];
        a.os[d] = ostride[d];
        a.xs[d] = xstride[d];
        a.numel *= oshape[d];
    }
    if (a.numel == 0)
        return FL_CU_OK;
    ups_kernel<<<grid_for(a.numel), FL_CU_THREADS>>>(a, out, x);
    return launch_check(msg, "upsample kernel");
}

/* One thread per pair of head-dim elements (2p, 2p + 1), so in-place use is safe. */
__global__ static void rope_kernel(fl_cu_rope_args a)
{
    int64_t pairs = (a.D + 1) / 2, total = a.B * a.L * a.NH * pairs;
    int64_t G = a.grid[0] * a.grid[1] * a.grid[2], rot = a.dims[0] + a.dims[1] + a.dims[2];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = i % pairs, h = (i / pairs) % a.NH, n = (i / (pairs * a.NH)) % a.L, b = i / (pairs * a.NH * a.L);
        const float *x = a.x + b * a.xs[0] + n * a.xs[1] + h * a.xs[2];
        float *out = a.out + b * a.os[0] + n * a.os[1] + h * a.os[2];
        int64_t e = 2 * p;
        if (n < G && e < rot) { /* rot is even: the pair is whole */
            int64_t pos[3] = { n / (a.grid[1] * a.grid[2]), (n / a.grid[2]) % a.grid[1], n % a.grid[2] };
            int64_t start = 0, base = 0;
            int ax = 0;
            while (e >= start + a.dims[ax]) { /* the axis this pair belongs to */
                start += a.dims[ax];
                base += a.grid[ax] * a.dims[ax];
                ax++;
            }
            const float *t = a.table + base + pos[ax] * a.dims[ax] + (e - start);
            float c = t[0], s = t[1], x0 = x[e * a.xs[3]], x1 = x[(e + 1) * a.xs[3]];
            out[e * a.os[3]] = x0 * c - x1 * s;
            out[(e + 1) * a.os[3]] = x0 * s + x1 * c;
        } else {
            out[e * a.os[3]] = x[e * a.xs[3]];
            if (e + 1 < a.D)
                out[(e + 1) * a.os[3]] = x[(e + 1) * a.xs[3]];
        }
    }
}

extern "C" int fl_cu_rope(const fl_cu_rope_args *a, char *msg)
{
    int64_t total = a->B * a->L * a->NH * ((a->D + 1) / 2);
    if (total == 0)
        return FL_CU_OK;
    rope_kernel<<<grid_for(total), FL_CU_THREADS>>>(*a);
    return launch_check(msg, "rope kernel");
}
