/* Private interface between the two halves of the CUDA backend: cuda_backend.c (C11: the
 * vtable, argument planning, host staging) and cuda_kernels.cu (CUDA C++: the runtime,
 * the kernels, cuBLAS). The split exists because core/tensor.h uses C11 atomics that C++
 * cannot parse, so the .cu side only ever sees plain pointers and integer strides.
 *
 * Ownership: nothing here keeps state between calls except what the caller holds (the
 * cuBLAS handle from fl_cu_blas_create, memory from fl_cu_malloc / fl_cu_scratch_alloc).
 * Every fallible call returns FL_CU_OK or an FL_CU_E_* code and then writes a message of at
 * most FL_CU_MSG_MAX bytes into `msg` naming the CUDA or cuBLAS call and its error text. */
#ifndef FL_CUDA_INTERNAL_H
#define FL_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../../core/dtype.h"

#define FL_CU_MAX_DIMS 5 /* == FL_MAX_DIMS (checked in cuda_backend.c) */
#define FL_CU_MAX_OPS 4  /* operands of an elementwise kernel: out and up to three inputs */
#define FL_CU_MSG_MAX 256

enum { FL_CU_OK = 0, FL_CU_E_DEVICE = 1, FL_CU_E_NOMEM = 2 };

/* The iteration space of an elementwise kernel, dims already merged where possible.
 * Operand 0 is the output; strides are in elements, >= 0 (0 = broadcast). */
typedef struct fl_cu_layout {
    int ndim; /* 1..FL_CU_MAX_DIMS */
    int64_t numel; /* > 0 */
    int64_t shape[FL_CU_MAX_DIMS];
    int64_t stride[FL_CU_MAX_OPS][FL_CU_MAX_DIMS];
} fl_cu_layout;

/* All nops operands dense and in the same order: one run of unit stride. */
static inline int fl_cu_layout_dense(const fl_cu_layout *l, int nops)
{
    if (l->ndim != 1)
        return 0;
    for (int k = 0; k < nops; k++)
        if (l->stride[k][0] != 1)
            return 0;
    return 1;
}

/* Op codes, equal to fl_unop / fl_binop (cuda_backend.c asserts it at compile time). */
enum { FL_CU_UN_NEG, FL_CU_UN_ABS, FL_CU_UN_SQUARE, FL_CU_UN_SQRT, FL_CU_UN_EXP, FL_CU_UN_LOG,
       FL_CU_UN_AFFINE, FL_CU_UN_COUNT };
enum { FL_CU_BIN_ADD, FL_CU_BIN_SUB, FL_CU_BIN_MUL, FL_CU_BIN_DIV, FL_CU_BIN_MAX, FL_CU_BIN_MIN,
       FL_CU_BIN_COUNT };

/* --- devices and memory --- */

/* Usable devices; 0 (never an error, never output) without a driver or a GPU. */
int fl_cu_device_count(void);
/* Like fl_cu_device_count but says why there are none: FL_CU_E_DEVICE with msg when the
 * runtime cannot count devices. */
int fl_cu_device_count_msg(int *count, char *msg);
/* Makes `device` current for this thread (cheap when it already is). */
int fl_cu_set_device(int device, char *msg);
/* Initialises the device's context and reports whether it supports stream-ordered
 * allocation (cudaMallocAsync), which the scratch allocator then uses. */
int fl_cu_device_open(int device, int *async_alloc, char *msg);

/* Plain device memory (cudaMalloc, never managed), for storages. nbytes may be 0. */
int fl_cu_malloc(int device, size_t nbytes, void **out, char *msg);
/* Frees memory from fl_cu_malloc on its device; errors are dropped (no one to tell). */
void fl_cu_free(int device, void *ptr);
/* Scratch for one op, ordered on the default stream: freeing it does not wait for the
 * kernels that use it when async_alloc is set (otherwise it synchronises first). */
int fl_cu_scratch_alloc(int async_alloc, size_t nbytes, void **out, char *msg);
void fl_cu_scratch_free(int async_alloc, void *ptr);

/* Waits for the device and returns the stream-ordered pool's unused memory to the
 * driver (before retrying an allocation that ran out of memory). Errors are dropped. */
void fl_cu_trim(int device);

enum { FL_CU_H2D, FL_CU_D2H, FL_CU_D2D };
/* Synchronous with respect to the host for H2D/D2H (pageable memory). */
int fl_cu_memcpy(void *dst, const void *src, size_t nbytes, int kind, char *msg);

/* --- elementwise kernels (default stream, asynchronous) --- */

/* dst[i] = convert(src[i]) with operand 0 = dst, 1 = src. Same dtype: bit copy. Float
 * types among themselves and complex among themselves convert exactly as the CPU backend
 * does (see docs/cuda.md). Returns FL_CU_E_DEVICE for a pair it does not convert. */
int fl_cu_copy(const fl_cu_layout *l, void *dst, fl_dtype dt, const void *src, fl_dtype st,
              char *msg);
/* Every element of dst (operand 0) = the elsize bytes at pattern (elsize 1, 2, 4, 8, 16). */
int fl_cu_fill(const fl_cu_layout *l, void *dst, size_t elsize, const void *pattern, char *msg);
/* out = op(in), operands 0 = out, 1 = in; dt is FL_F32 or FL_F64. */
int fl_cu_unary(int op, fl_dtype dt, const fl_cu_layout *l, void *out, const void *in, double a,
               double b, char *msg);
/* out = a op b, operands 0 = out, 1 = a, 2 = b. */
int fl_cu_binary(int op, fl_dtype dt, const fl_cu_layout *l, void *out, const void *a,
                const void *b, char *msg);

/* --- cuBLAS --- */

int fl_cu_blas_create(int device, void **handle, char *msg);
void fl_cu_blas_destroy(int device, void *handle);

/* One strided-batched GEMM in cuBLAS's column-major terms:
 * C_i = alpha op(A_i) op(B_i) + beta C_i, X_i = x + i * stride_x (elements), i < batch.
 * m, n, k and the lds must fit an int (the caller checks); beta == 0 does not read C. */
typedef struct fl_cu_gemm_args {
    int trans_a, trans_b;
    int64_t m, n, k;
    const void *a;
    int64_t lda, stride_a;
    const void *b;
    int64_t ldb, stride_b;
    void *c;
    int64_t ldc, stride_c;
    int64_t batch;
    double alpha, beta;
} fl_cu_gemm_args;
int fl_cu_gemm(void *handle, fl_dtype dt, const fl_cu_gemm_args *g, char *msg);

/* --- neural-network kernels (nn_kernels.cu; default stream, asynchronous) --- */

/* GEMM as fl_cu_gemm, with A and B of type ab (f32, f16 or bf16) and C f32; the products
 * accumulate in f32 (tensor cores for f16/bf16; TF32 tensor cores for f32 when tf32). */
int fl_cu_gemm_nn(void *handle, fl_dtype ab, int tf32, const fl_cu_gemm_args *g, char *msg);

/* out[i0*s0 + i1*s1 + i2*s2] = bias ? bias[i_{bias_dim}] : 0 over shape n[3]. */
int fl_cu_bias_fill(float *out, const int64_t n[3], const int64_t s[3], int bias_dim, const float *bias,
                   char *msg);

/* Unfolds images for a convolution GEMM. x is viewed as [n, C, H, W, S] through xs (S a
 * trailing dim the kernel does not touch: 1 for conv2d, the second spatial dim for the
 * temporal conv). col [nimg][C KH KW][nho Wo S] (row (c, kh, kw), column (ho, wo, s)) of
 * dtype ct (f32/f16/bf16) holds output rows [ho0, ho0 + nho); zeros where the kernel
 * reaches into the padding. */
typedef struct fl_cu_im2col_args {
    const float *x; /* image 0 of this chunk */
    int64_t xs[5];
    int64_t C, H, W, S, KH, KW, Wo, ho0, nho, nimg;
    int stride[2], pad[2];
    void *col;
    fl_dtype ct;
} fl_cu_im2col_args;
int fl_cu_im2col(const fl_cu_im2col_args *a, char *msg);

/* Group norm of x [B, C, sp...] (up to three trailing dims); gamma, beta device f32 [C]
 * or NULL. Statistics by Welford / Chan in double; scratch from the stream-ordered pool
 * when async_alloc. */
typedef struct fl_cu_gn_args {
    const float *x;
    float *out;
    const float *gamma, *beta;
    int64_t B, C, groups;
    int nsp;
    int64_t sp[3];
    int64_t xs[5], os[5]; /* strides of [B, C, sp...] */
    double eps;
    int silu;
} fl_cu_gn_args;
int fl_cu_group_norm(const fl_cu_gn_args *a, int async_alloc, char *msg);

/* Layer norm (rms = 0) or RMS norm (rms = 1) of rows of D elements; row r's start is the
 * row-major index r over lead[nlead] through the strides. */
typedef struct fl_cu_ln_args {
    const float *x;
    float *out;
    const float *gamma, *beta;
    int64_t rows, D;
    int nlead;
    int64_t lead[4], xs_lead[4], os_lead[4];
    int64_t xs, os; /* strides along the normalised dim */
    double eps;
    int rms;
} fl_cu_ln_args;
int fl_cu_lastdim_norm(const fl_cu_ln_args *a, char *msg);

/* Activation (fl_act codes) over a two-operand layout, f32. */
int fl_cu_activation(int act, const fl_cu_layout *l, float *out, const float *in, char *msg);
/* kind 0: out = a (1 + b) + c (modulate); kind 1: out = a + b c (gate_add). f32, four
 * operands (0 = out). */
int fl_cu_modulate(int kind, const fl_cu_layout *l, float *out, const float *a, const float *b,
                  const float *c, char *msg);

/* Flash-style attention (online softmax over key tiles in shared memory, one query per
 * thread): out [B, NH, Lq, Dv] = softmax(scale q k^T + mask) v; strides in elements;
 * mask NULL, f32 (added) or u8 (0 hides). D and Dv at most FL_CU_ATTN_MAXD. */
#define FL_CU_ATTN_MAXD 256
typedef struct fl_cu_attn_args {
    const float *q, *k, *v;
    float *out;
    const void *mask;
    int mask_u8;
    int64_t B, NH, Lq, Lk, D, Dv;
    int64_t qs[4], ks[4], vs[4], os[4], ms[4];
    float scale;
} fl_cu_attn_args;
int fl_cu_attention(const fl_cu_attn_args *a, char *msg);

/* out[n, :] (strides os0, os1) = embedding of t[n * ts] (f32 or f64), computed in double. */
typedef struct fl_cu_temb_args {
    float *out;
    int64_t os0, os1;
    const void *t;
    int t_f64;
    int64_t ts, N, dim;
    double max_period, freq_shift, scale;
    int cos_first;
} fl_cu_temb_args;
int fl_cu_timestep_embedding(const fl_cu_temb_args *a, char *msg);

/* Nearest upsampling: out[..., i, j] = x[..., i / fh, j / fw]; ndim 2..5. */
int fl_cu_upsample(int ndim, const int64_t *oshape, const int64_t *ostride, float *out,
                  const int64_t *xstride, const float *x, int64_t fh, int64_t fw, char *msg);

/* Rotary embedding of x [B, L, NH, D] (fl_rope_opts semantics). table: for each axis a in
 * turn, grid[a] rows of dims[a] floats (cos, sin per pair), already on the device. */
typedef struct fl_cu_rope_args {
    const float *x;
    float *out;
    int64_t B, L, NH, D;
    int64_t xs[4], os[4];
    int64_t grid[3], dims[3];
    const float *table;
} fl_cu_rope_args;
int fl_cu_rope(const fl_cu_rope_args *a, char *msg);

/* --- host builds of device code, for tests on machines without a GPU --- */

/* Runs the copy kernel's element conversion on the host over n contiguous elements (the
 * same source the kernel compiles). dt/st as for fl_cu_copy; returns FL_CU_E_DEVICE for a
 * pair fl_cu_copy would reject. */
int fl_cu_host_convert(fl_dtype dt, void *dst, fl_dtype st, const void *src, size_t n);

#ifdef __cplusplus
}
#endif

#endif
