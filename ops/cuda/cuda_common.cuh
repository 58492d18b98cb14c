/* Device-side helpers shared by the CUDA backend's .cu files (cuda_kernels.cu: runtime,
 * copies, elementwise, cuBLAS; nn_kernels.cu: the neural-network kernels): error
 * reporting, the f16/bf16 element types and their exact conversions, strided iteration.
 * Private to ops/cuda; everything here is static or inline, so each .cu has its own copy. */
#ifndef FL_CUDA_COMMON_CUH
#define FL_CUDA_COMMON_CUH

#include <cstdio>
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda_internal.h"
#include "../../core/half.h"

/* ------------------------------------------------------------------ error reporting */

static inline int fail(char *msg, int code, const char *what, const char *why)
{
    if (msg)
        snprintf(msg, FL_CU_MSG_MAX, "%s: %s", what, why);
    return code;
}

static inline int cuda_fail(char *msg, const char *what, cudaError_t e)
{
    int code = e == cudaErrorMemoryAllocation ? FL_CU_E_NOMEM : FL_CU_E_DEVICE;
    return fail(msg, code, what, cudaGetErrorString(e));
}

#define CU_TRY(call, what)                                                                       \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess)                                                                   \
            return cuda_fail(msg, what, e_);                                                     \
    } while (0)

/* Launch errors show up in cudaGetLastError (and clear it); execution errors surface at
 * the next synchronising call, which then reports them. */
static inline int launch_check(char *msg, const char *kernel)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return cuda_fail(msg, kernel, e);
    return FL_CU_OK;
}

/* ------------------------------------------------------------------ 16-bit element types */

struct f16_t {
    uint16_t v;
};
struct bf16_t {
    uint16_t v;
};

/* ------------------------------------------------------------------ f16 / bf16 conversions
 * The very integer code of core/dtype.c (core/half.h), on host and device alike, NaN
 * payloads included, rather than the __float2half_rn intrinsics; a host build of this
 * file's converters (fl_cu_host_convert) is checked against the CPU on any machine. */

__host__ __device__ static inline uint16_t to_f16(float x) { return fl_h_f32_to_f16(x); }
__host__ __device__ static inline float from_f16(uint16_t h) { return fl_h_f16_to_f32(h); }
__host__ __device__ static inline uint16_t to_bf16(float x) { return fl_h_f32_to_bf16(x); }
__host__ __device__ static inline float from_bf16(uint16_t b) { return fl_h_bf16_to_f32(b); }

/* ------------------------------------------------------------------ strided iteration */

#define FL_CU_THREADS 256

static inline unsigned grid_for(int64_t n)
{
    int64_t blocks = (n + FL_CU_THREADS - 1) / FL_CU_THREADS;
    /* grid-stride loops cover the rest; this is plenty to fill any current GPU */
    return (unsigned)(blocks < 65535 ? blocks : 65535);
}

/* Element offsets of linear index i (row-major over l.shape) for the first NOPS operands. */
template <int NOPS>
__device__ static inline void offsets_of(const fl_cu_layout &l, int64_t i, int64_t *off)
{
#pragma unroll
    for (int k = 0; k < NOPS; k++)
        off[k] = 0;
    for (int d = l.ndim - 1; d >= 0; d--) {
        int64_t s = l.shape[d];
        int64_t q = i / s, r = i - q * s;
        i = q;
#pragma unroll
        for (int k = 0; k < NOPS; k++)
            off[k] += r * l.stride[k][d];
    }
}

#endif
