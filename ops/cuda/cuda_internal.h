/* Private interface between the two halves of the CUDA backend: cuda_backend.c (C11: the
 * vtable, argument planning, host staging) and cuda_kernels.cu (CUDA C++: the runtime,
 * the kernels, cuBLAS). The split exists because core/tensor.h uses C11 atomics that C++
 * cannot parse, so the .cu side only ever sees plain pointers and integer strides.
 *
 * Ownership: nothing here keeps state between calls except what the caller holds (the
 * cuBLAS handle from flcu_blas_create, memory from flcu_malloc / flcu_scratch_alloc).
 * Every fallible call returns FLCU_OK or an FLCU_E_* code and then writes a message of at
 * most FLCU_MSG_MAX bytes into `msg` naming the CUDA or cuBLAS call and its error text. */
#ifndef FL_CUDA_INTERNAL_H
#define FL_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../../core/dtype.h"

#define FLCU_MAX_DIMS 5 /* == FL_MAX_DIMS (checked in cuda_backend.c) */
#define FLCU_MAX_OPS 3  /* operands of an elementwise kernel: out, a, b */
#define FLCU_MSG_MAX 256

enum { FLCU_OK = 0, FLCU_E_DEVICE = 1, FLCU_E_NOMEM = 2 };

/* The iteration space of an elementwise kernel, dims already merged where possible.
 * Operand 0 is the output; strides are in elements, >= 0 (0 = broadcast). */
typedef struct flcu_layout {
    int ndim; /* 1..FLCU_MAX_DIMS */
    int64_t numel; /* > 0 */
    int64_t shape[FLCU_MAX_DIMS];
    int64_t stride[FLCU_MAX_OPS][FLCU_MAX_DIMS];
} flcu_layout;

/* All nops operands dense and in the same order: one run of unit stride. */
static inline int flcu_layout_dense(const flcu_layout *l, int nops)
{
    if (l->ndim != 1)
        return 0;
    for (int k = 0; k < nops; k++)
        if (l->stride[k][0] != 1)
            return 0;
    return 1;
}

/* Op codes, equal to fl_unop / fl_binop (cuda_backend.c asserts it at compile time). */
enum { FLCU_UN_NEG, FLCU_UN_ABS, FLCU_UN_SQUARE, FLCU_UN_SQRT, FLCU_UN_EXP, FLCU_UN_LOG,
       FLCU_UN_AFFINE, FLCU_UN_COUNT };
enum { FLCU_BIN_ADD, FLCU_BIN_SUB, FLCU_BIN_MUL, FLCU_BIN_DIV, FLCU_BIN_MAX, FLCU_BIN_MIN,
       FLCU_BIN_COUNT };

/* --- devices and memory --- */

/* Usable devices; 0 (never an error, never output) without a driver or a GPU. */
int flcu_device_count(void);
/* Like flcu_device_count but says why there are none: FLCU_E_DEVICE with msg when the
 * runtime cannot count devices. */
int flcu_device_count_msg(int *count, char *msg);
/* Makes `device` current for this thread (cheap when it already is). */
int flcu_set_device(int device, char *msg);
/* Initialises the device's context and reports whether it supports stream-ordered
 * allocation (cudaMallocAsync), which the scratch allocator then uses. */
int flcu_device_open(int device, int *async_alloc, char *msg);

/* Plain device memory (cudaMalloc, never managed), for storages. nbytes may be 0. */
int flcu_malloc(int device, size_t nbytes, void **out, char *msg);
/* Frees memory from flcu_malloc on its device; errors are dropped (no one to tell). */
void flcu_free(int device, void *ptr);
/* Scratch for one op, ordered on the default stream: freeing it does not wait for the
 * kernels that use it when async_alloc is set (otherwise it synchronises first). */
int flcu_scratch_alloc(int async_alloc, size_t nbytes, void **out, char *msg);
void flcu_scratch_free(int async_alloc, void *ptr);

enum { FLCU_H2D, FLCU_D2H, FLCU_D2D };
/* Synchronous with respect to the host for H2D/D2H (pageable memory). */
int flcu_memcpy(void *dst, const void *src, size_t nbytes, int kind, char *msg);

/* --- elementwise kernels (default stream, asynchronous) --- */

/* dst[i] = convert(src[i]) with operand 0 = dst, 1 = src. Same dtype: bit copy. Float
 * types among themselves and complex among themselves convert exactly as the CPU backend
 * does (see docs/cuda.md). Returns FLCU_E_DEVICE for a pair it does not convert. */
int flcu_copy(const flcu_layout *l, void *dst, fl_dtype dt, const void *src, fl_dtype st,
              char *msg);
/* Every element of dst (operand 0) = the elsize bytes at pattern (elsize 1, 2, 4, 8, 16). */
int flcu_fill(const flcu_layout *l, void *dst, size_t elsize, const void *pattern, char *msg);
/* out = op(in), operands 0 = out, 1 = in; dt is FL_F32 or FL_F64. */
int flcu_unary(int op, fl_dtype dt, const flcu_layout *l, void *out, const void *in, double a,
               double b, char *msg);
/* out = a op b, operands 0 = out, 1 = a, 2 = b. */
int flcu_binary(int op, fl_dtype dt, const flcu_layout *l, void *out, const void *a,
                const void *b, char *msg);

/* --- cuBLAS --- */

int flcu_blas_create(int device, void **handle, char *msg);
void flcu_blas_destroy(int device, void *handle);

/* One strided-batched GEMM in cuBLAS's column-major terms:
 * C_i = alpha op(A_i) op(B_i) + beta C_i, X_i = x + i * stride_x (elements), i < batch.
 * m, n, k and the lds must fit an int (the caller checks); beta == 0 does not read C. */
typedef struct flcu_gemm_args {
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
} flcu_gemm_args;
int flcu_gemm(void *handle, fl_dtype dt, const flcu_gemm_args *g, char *msg);

/* --- host builds of device code, for tests on machines without a GPU --- */

/* Runs the copy kernel's element conversion on the host over n contiguous elements (the
 * same source the kernel compiles). dt/st as for flcu_copy; returns FLCU_E_DEVICE for a
 * pair flcu_copy would reject. */
int flcu_host_convert(fl_dtype dt, void *dst, fl_dtype st, const void *src, size_t n);

#ifdef __cplusplus
}
#endif

#endif
