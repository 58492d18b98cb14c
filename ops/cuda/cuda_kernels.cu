/* The CUDA half of the CUDA backend: runtime calls, strided elementwise kernels and cuBLAS
 * behind the plain-C interface of cuda_internal.h (the vtable lives in cuda_backend.c). */
#include <cstdio>
#include <cstring>
#include <type_traits>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda_common.cuh"

/* ------------------------------------------------------------------ devices and memory */

extern "C" int fl_cu_device_count_msg(int *count, char *msg)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    *count = 0;
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky; keep it from leaking into a later check */
        return fail(msg, FL_CU_E_DEVICE, "cudaGetDeviceCount", cudaGetErrorString(e));
    }
    *count = n;
    return FL_CU_OK;
}

extern "C" int fl_cu_device_count(void)
{
    int n;
    return fl_cu_device_count_msg(&n, NULL) == FL_CU_OK ? n : 0;
}

extern "C" int fl_cu_set_device(int device, char *msg)
{
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur == device)
        return FL_CU_OK;
    CU_TRY(cudaSetDevice(device), "cudaSetDevice");
    return FL_CU_OK;
}

/* Does nothing; its attributes say whether this binary has code the device can run. */
static __global__ void probe_kernel(void) {}

extern "C" int fl_cu_device_open(int device, int *async_alloc, char *msg)
{
    *async_alloc = 0;
    CU_TRY(cudaSetDevice(device), "cudaSetDevice");
    CU_TRY(cudaFree(0), "creating the device context (cudaFree(0))");
    /* A GPU older than the build's CUDA_ARCH has no kernel image: say so at open, with the
     * compute capability, rather than failing in the first op. */
    cudaFuncAttributes fa;
    cudaError_t pe = cudaFuncGetAttributes(&fa, probe_kernel);
    if (pe != cudaSuccess) {
        (void)cudaGetLastError();
        int major = 0, minor = 0;
        (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
        (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
        if (msg)
            snprintf(msg, FL_CU_MSG_MAX,
                     "this build has no kernels for compute capability %d.%d (%s); rebuild with "
                     "CUDA_ARCH='-gencode arch=compute_%d%d,code=sm_%d%d'",
                     major, minor, cudaGetErrorString(pe), major, minor, major, minor);
        return FL_CU_E_DEVICE;
    }
    int pools = 0;
    CU_TRY(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device),
           "cudaDeviceGetAttribute(MemoryPoolsSupported)");
    *async_alloc = pools != 0;
    if (pools) {
        /* keep freed scratch in the pool across synchronisations (the default threshold
         * of 0 hands it back to the driver at every sync, and the next op pays again);
         * fl_cu_trim returns it when memory runs short */
        cudaMemPool_t mp;
        uint64_t keep = UINT64_MAX;
        CU_TRY(cudaDeviceGetDefaultMemPool(&mp, device), "cudaDeviceGetDefaultMemPool");
        CU_TRY(cudaMemPoolSetAttribute(mp, cudaMemPoolAttrReleaseThreshold, &keep),
               "cudaMemPoolSetAttribute(ReleaseThreshold)");
    }
    return FL_CU_OK;
}

extern "C" void fl_cu_trim(int device)
{
    int pools = 0;
    cudaMemPool_t mp;
    if (cudaSetDevice(device) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess &&
        cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device) == cudaSuccess && pools &&
        cudaDeviceGetDefaultMemPool(&mp, device) == cudaSuccess)
        (void)cudaMemPoolTrimTo(mp, 0);
    (void)cudaGetLastError();
}

extern "C" int fl_cu_malloc(int device, size_t nbytes, void **out, char *msg)
{
    *out = NULL;
    CU_TRY(cudaSetDevice(device), "cudaSetDevice");
    /* one byte for an empty storage, so every storage has a unique non-NULL address */
    CU_TRY(cudaMalloc(out, nbytes ? nbytes : 1), "cudaMalloc");
    return FL_CU_OK;
}

extern "C" void fl_cu_free(int device, void *ptr)
{
    if (!ptr)
        return;
    int cur = -1;
    bool have_cur = cudaGetDevice(&cur) == cudaSuccess;
    if (!have_cur || cur != device)
        (void)cudaSetDevice(device);
    (void)cudaFree(ptr); /* fails only at process teardown or after a device fault */
    if (have_cur && cur != device)
        (void)cudaSetDevice(cur);
    (void)cudaGetLastError();
}

extern "C" int fl_cu_scratch_alloc(int async_alloc, size_t nbytes, void **out, char *msg)
{
    *out = NULL;
    if (!nbytes)
        nbytes = 1;
    cudaError_t e = async_alloc ? cudaMallocAsync(out, nbytes, 0) : cudaMalloc(out, nbytes);
    if (e == cudaErrorMemoryAllocation) { /* the pool may hold freed scratch: return it, retry */
        int dev = 0;
        (void)cudaGetLastError();
        if (cudaGetDevice(&dev) == cudaSuccess)
            fl_cu_trim(dev);
        e = async_alloc ? cudaMallocAsync(out, nbytes, 0) : cudaMalloc(out, nbytes);
    }
    CU_TRY(e, async_alloc ? "cudaMallocAsync (scratch)" : "cudaMalloc (scratch)");
    return FL_CU_OK;
}

extern "C" void fl_cu_scratch_free(int async_alloc, void *ptr)
{
    if (!ptr)
        return;
    if (async_alloc) {
        (void)cudaFreeAsync(ptr, 0);
    } else {
        (void)cudaDeviceSynchronize(); /* kernels queued on the scratch must finish first */
        (void)cudaFree(ptr);
    }
}

extern "C" int fl_cu_memcpy(void *dst, const void *src, size_t nbytes, int kind, char *msg)
{
    if (!nbytes)
        return FL_CU_OK;
    switch (kind) {
    case FL_CU_H2D: CU_TRY(cudaMemcpy(dst, src, nbytes, cudaMemcpyHostToDevice), "cudaMemcpy (host to device)"); break;
    case FL_CU_D2H: CU_TRY(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)"); break;
    default: CU_TRY(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToDevice), "cudaMemcpy (device to device)"); break;
    }
    return FL_CU_OK;
}

/* ------------------------------------------------------------------ element types
 * (f16_t, bf16_t and their conversions are in cuda_common.cuh) */

struct c64_t {
    float re, im;
};
struct c128_t {
    double re, im;
};
struct raw128_t {
    uint64_t lo, hi;
};

/* The CPU converts through double (fl_dtype_load / fl_dtype_store): widen the source
 * exactly, narrow once. f64 -> f32 is a plain (float) cast; f64 -> f16/bf16 first goes to
 * f32 rounded to odd so that the second rounding to nearest-even is correct. */
__host__ __device__ static inline float narrow_f64(double d) { return (float)d; }
__host__ __device__ static inline float narrow_f64_odd(double v) { return fl_h_f64_to_f32_odd(v); }

template <typename T> struct real_io;
template <> struct real_io<float> {
    __host__ __device__ static float to_float(float x) { return x; }
    __host__ __device__ static float from_float(float x) { return x; }
};
template <> struct real_io<f16_t> {
    __host__ __device__ static float to_float(f16_t x) { return from_f16(x.v); }
    __host__ __device__ static f16_t from_float(float x) { return f16_t{ to_f16(x) }; }
};
template <> struct real_io<bf16_t> {
    __host__ __device__ static float to_float(bf16_t x) { return from_bf16(x.v); }
    __host__ __device__ static bf16_t from_float(float x) { return bf16_t{ to_bf16(x) }; }
};

template <typename D, typename S> struct convert {
    /* float-type to float-type, neither double */
    __host__ __device__ static D run(S x) { return real_io<D>::from_float(real_io<S>::to_float(x)); }
};
template <typename S> struct convert<double, S> {
    __host__ __device__ static double run(S x) { return (double)real_io<S>::to_float(x); }
};
template <typename D> struct convert<D, double> { /* D is f16_t or bf16_t */
    __host__ __device__ static D run(double x) { return real_io<D>::from_float(narrow_f64_odd(x)); }
};
template <> struct convert<float, double> {
    __host__ __device__ static float run(double x) { return narrow_f64(x); }
};
template <> struct convert<double, double> {
    __host__ __device__ static double run(double x) { return x; }
};
template <> struct convert<c64_t, c128_t> {
    __host__ __device__ static c64_t run(c128_t x) { return c64_t{ narrow_f64(x.re), narrow_f64(x.im) }; }
};
template <> struct convert<c128_t, c64_t> {
    __host__ __device__ static c128_t run(c64_t x) { return c128_t{ (double)x.re, (double)x.im }; }
};
/* same-type bit copies */
#define FL_CU_SAME(T)                                                                             \
    template <> struct convert<T, T> {                                                           \
        __host__ __device__ static T run(T x) { return x; }                                      \
    };
FL_CU_SAME(float)
FL_CU_SAME(f16_t)
FL_CU_SAME(bf16_t)
FL_CU_SAME(uint8_t)
FL_CU_SAME(uint32_t)
FL_CU_SAME(uint64_t)
FL_CU_SAME(raw128_t)
#undef FL_CU_SAME


template <typename D, typename S, bool DENSE>
__global__ static void copy_kernel(fl_cu_layout l, D *dst, const S *src)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < l.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (DENSE) {
            dst[i] = convert<D, S>::run(src[i]);
        } else {
            int64_t off[2];
            offsets_of<2>(l, i, off);
            dst[off[0]] = convert<D, S>::run(src[off[1]]);
        }
    }
}

template <typename D, typename S>
static int launch_copy(const fl_cu_layout *l, void *dst, const void *src, char *msg)
{
    if (fl_cu_layout_dense(l, 2))
        copy_kernel<D, S, true><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (D *)dst, (const S *)src);
    else
        copy_kernel<D, S, false><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (D *)dst, (const S *)src);
    return launch_check(msg, "copy kernel");
}

/* Dispatch on a (dst, src) dtype pair; `F` is called with typed null pointers to pick the
 * template instance. Returns 0 for pairs that are not converted. */
template <typename F> static bool with_pair(fl_dtype dt, fl_dtype st, F f)
{
#define FL_CU_REAL(T)                                                                             \
    switch (st) {                                                                                \
    case FL_F32: f((T *)0, (float *)0); return true;                                             \
    case FL_F64: f((T *)0, (double *)0); return true;                                            \
    case FL_F16: f((T *)0, (f16_t *)0); return true;                                             \
    case FL_BF16: f((T *)0, (bf16_t *)0); return true;                                           \
    default: return false;                                                                       \
    }
    if (dt == st) {
        switch (fl_dtype_size(dt)) {
        case 1: f((uint8_t *)0, (uint8_t *)0); return true;
        case 2: f((f16_t *)0, (f16_t *)0); return true; /* any 16-bit type: bits */
        case 4: f((uint32_t *)0, (uint32_t *)0); return true;
        case 8: f((uint64_t *)0, (uint64_t *)0); return true;
        case 16: f((raw128_t *)0, (raw128_t *)0); return true;
        default: return false;
        }
    }
    switch (dt) {
    case FL_F32: FL_CU_REAL(float)
    case FL_F64: FL_CU_REAL(double)
    case FL_F16: FL_CU_REAL(f16_t)
    case FL_BF16: FL_CU_REAL(bf16_t)
    case FL_C64:
        if (st != FL_C128)
            return false;
        f((c64_t *)0, (c128_t *)0);
        return true;
    case FL_C128:
        if (st != FL_C64)
            return false;
        f((c128_t *)0, (c64_t *)0);
        return true;
    default: return false;
    }
#undef FL_CU_REAL
}

extern "C" int fl_cu_copy(const fl_cu_layout *l, void *dst, fl_dtype dt, const void *src, fl_dtype st,
                         char *msg)
{
    int rc = FL_CU_OK;
    bool ok = with_pair(dt, st, [&](auto *d, auto *s) {
        using D = typename std::remove_pointer<decltype(d)>::type;
        using S = typename std::remove_pointer<decltype(s)>::type;
        rc = launch_copy<D, S>(l, dst, src, msg);
    });
    if (!ok) {
        char why[96];
        snprintf(why, sizeof why, "no conversion from %s to %s", fl_dtype_name(st), fl_dtype_name(dt));
        return fail(msg, FL_CU_E_DEVICE, "copy kernel", why);
    }
    return rc;
}

extern "C" int fl_cu_host_convert(fl_dtype dt, void *dst, fl_dtype st, const void *src, size_t n)
{
    bool ok = with_pair(dt, st, [&](auto *d, auto *s) {
        using D = typename std::remove_pointer<decltype(d)>::type;
        using S = typename std::remove_pointer<decltype(s)>::type;
        for (size_t i = 0; i < n; i++)
            ((D *)dst)[i] = convert<D, S>::run(((const S *)src)[i]);
    });
    return ok ? FL_CU_OK : FL_CU_E_DEVICE;
}

/* ------------------------------------------------------------------ fill */

template <typename T, bool DENSE> __global__ static void fill_kernel(fl_cu_layout l, T *dst, T value)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < l.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (DENSE) {
            dst[i] = value;
        } else {
            int64_t off[1];
            offsets_of<1>(l, i, off);
            dst[off[0]] = value;
        }
    }
}

template <typename T> static int launch_fill(const fl_cu_layout *l, void *dst, const void *pattern, char *msg)
{
    T v;
    memcpy(&v, pattern, sizeof v);
    if (fl_cu_layout_dense(l, 1))
        fill_kernel<T, true><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (T *)dst, v);
    else
        fill_kernel<T, false><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (T *)dst, v);
    return launch_check(msg, "fill kernel");
}

extern "C" int fl_cu_fill(const fl_cu_layout *l, void *dst, size_t elsize, const void *pattern, char *msg)
{
    switch (elsize) {
    case 1: return launch_fill<uint8_t>(l, dst, pattern, msg);
    case 2: return launch_fill<uint16_t>(l, dst, pattern, msg);
    case 4: return launch_fill<uint32_t>(l, dst, pattern, msg);
    case 8: return launch_fill<uint64_t>(l, dst, pattern, msg);
    case 16: return launch_fill<raw128_t>(l, dst, pattern, msg);
    default: return fail(msg, FL_CU_E_DEVICE, "fill kernel", "unsupported element size");
    }
}

/* ------------------------------------------------------------------ unary and binary */

/* Arithmetic follows ops/cpu/ref.c: +, -, *, / and sqrt are correctly rounded in the
 * operand type (nvcc's defaults -prec-div=true -prec-sqrt=true), which equals the CPU's
 * double computation rounded back to f32; exp and log use CUDA's libdevice (a few ulp in
 * f32, about 1 ulp in f64). Affine is rounded as two operations with no FMA contraction,
 * exactly as the CPU does it. max/min propagate NaN (numpy's maximum/minimum). */
template <int OP> struct un;
template <> struct un<FL_CU_UN_NEG> {
    template <typename T> __device__ static T f(T x, T, T) { return -x; }
};
template <> struct un<FL_CU_UN_ABS> {
    __device__ static float f(float x, float, float) { return fabsf(x); }
    __device__ static double f(double x, double, double) { return fabs(x); }
};
template <> struct un<FL_CU_UN_SQUARE> {
    __device__ static float f(float x, float, float) { return __fmul_rn(x, x); }
    __device__ static double f(double x, double, double) { return __dmul_rn(x, x); }
};
template <> struct un<FL_CU_UN_SQRT> {
    __device__ static float f(float x, float, float) { return sqrtf(x); }
    __device__ static double f(double x, double, double) { return sqrt(x); }
};
template <> struct un<FL_CU_UN_EXP> {
    __device__ static float f(float x, float, float) { return expf(x); }
    __device__ static double f(double x, double, double) { return exp(x); }
};
template <> struct un<FL_CU_UN_LOG> {
    __device__ static float f(float x, float, float) { return logf(x); }
    __device__ static double f(double x, double, double) { return log(x); }
};
template <> struct un<FL_CU_UN_AFFINE> {
    __device__ static float f(float x, float a, float b) { return __fadd_rn(__fmul_rn(a, x), b); }
    __device__ static double f(double x, double a, double b) { return __dadd_rn(__dmul_rn(a, x), b); }
};

template <int OP> struct bin;
template <> struct bin<FL_CU_BIN_ADD> {
    __device__ static float f(float x, float y) { return __fadd_rn(x, y); }
    __device__ static double f(double x, double y) { return __dadd_rn(x, y); }
};
template <> struct bin<FL_CU_BIN_SUB> {
    __device__ static float f(float x, float y) { return __fsub_rn(x, y); }
    __device__ static double f(double x, double y) { return __dsub_rn(x, y); }
};
template <> struct bin<FL_CU_BIN_MUL> {
    __device__ static float f(float x, float y) { return __fmul_rn(x, y); }
    __device__ static double f(double x, double y) { return __dmul_rn(x, y); }
};
template <> struct bin<FL_CU_BIN_DIV> {
    __device__ static float f(float x, float y) { return __fdiv_rn(x, y); }
    __device__ static double f(double x, double y) { return __ddiv_rn(x, y); }
};
template <> struct bin<FL_CU_BIN_MAX> {
    template <typename T> __device__ static T f(T x, T y)
    {
        return isnan(x) ? x : isnan(y) ? y : x > y ? x : y;
    }
};
template <> struct bin<FL_CU_BIN_MIN> {
    template <typename T> __device__ static T f(T x, T y)
    {
        return isnan(x) ? x : isnan(y) ? y : x < y ? x : y;
    }
};

template <typename T, int OP, bool DENSE>
__global__ static void unary_kernel(fl_cu_layout l, T *out, const T *in, T a, T b)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < l.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (DENSE) {
            out[i] = un<OP>::f(in[i], a, b);
        } else {
            int64_t off[2];
            offsets_of<2>(l, i, off);
            out[off[0]] = un<OP>::f(in[off[1]], a, b);
        }
    }
}

template <typename T, int OP, bool DENSE>
__global__ static void binary_kernel(fl_cu_layout l, T *out, const T *a, const T *b)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < l.numel;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (DENSE) {
            out[i] = bin<OP>::f(a[i], b[i]);
        } else {
            int64_t off[3];
            offsets_of<3>(l, i, off);
            out[off[0]] = bin<OP>::f(a[off[1]], b[off[2]]);
        }
    }
}

template <typename T, int OP>
static int launch_unary(const fl_cu_layout *l, void *out, const void *in, double a, double b, char *msg)
{
    T ta = (T)a, tb = (T)b;
    if (fl_cu_layout_dense(l, 2))
        unary_kernel<T, OP, true><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (T *)out, (const T *)in, ta, tb);
    else
        unary_kernel<T, OP, false><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (T *)out, (const T *)in, ta, tb);
    return launch_check(msg, "unary kernel");
}

template <typename T>
static int unary_t(int op, const fl_cu_layout *l, void *out, const void *in, double a, double b, char *msg)
{
    switch (op) {
    case FL_CU_UN_NEG: return launch_unary<T, FL_CU_UN_NEG>(l, out, in, a, b, msg);
    case FL_CU_UN_ABS: return launch_unary<T, FL_CU_UN_ABS>(l, out, in, a, b, msg);
    case FL_CU_UN_SQUARE: return launch_unary<T, FL_CU_UN_SQUARE>(l, out, in, a, b, msg);
    case FL_CU_UN_SQRT: return launch_unary<T, FL_CU_UN_SQRT>(l, out, in, a, b, msg);
    case FL_CU_UN_EXP: return launch_unary<T, FL_CU_UN_EXP>(l, out, in, a, b, msg);
    case FL_CU_UN_LOG: return launch_unary<T, FL_CU_UN_LOG>(l, out, in, a, b, msg);
    case FL_CU_UN_AFFINE: return launch_unary<T, FL_CU_UN_AFFINE>(l, out, in, a, b, msg);
    default: return fail(msg, FL_CU_E_DEVICE, "unary kernel", "unknown op");
    }
}

extern "C" int fl_cu_unary(int op, fl_dtype dt, const fl_cu_layout *l, void *out, const void *in,
                          double a, double b, char *msg)
{
    if (dt == FL_F32)
        return unary_t<float>(op, l, out, in, a, b, msg);
    if (dt == FL_F64)
        return unary_t<double>(op, l, out, in, a, b, msg);
    return fail(msg, FL_CU_E_DEVICE, "unary kernel", "dtype is not f32 or f64");
}

template <typename T, int OP>
static int launch_binary(const fl_cu_layout *l, void *out, const void *a, const void *b, char *msg)
{
    if (fl_cu_layout_dense(l, 3))
        binary_kernel<T, OP, true><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (T *)out, (const T *)a, (const T *)b);
    else
        binary_kernel<T, OP, false><<<grid_for(l->numel), FL_CU_THREADS>>>(*l, (T *)out, (const T *)a, (const T *)b);
    return launch_check(msg, "binary kernel");
}

template <typename T>
static int binary_t(int op, const fl_cu_layout *l, void *out, const void *a, const void *b, char *msg)
{
    switch (op) {
    case FL_CU_BIN_ADD: return launch_binary<T, FL_CU_BIN_ADD>(l, out, a, b, msg);
    case FL_CU_BIN_SUB: return launch_binary<T, FL_CU_BIN_SUB>(l, out, a, b, msg);
    case FL_CU_BIN_MUL: return launch_binary<T, FL_CU_BIN_MUL>(l, out, a, b, msg);
    case FL_CU_BIN_DIV: return launch_binary<T, FL_CU_BIN_DIV>(l, out, a, b, msg);
    case FL_CU_BIN_MAX: return launch_binary<T, FL_CU_BIN_MAX>(l, out, a, b, msg);
    case FL_CU_BIN_MIN: return launch_binary<T, FL_CU_BIN_MIN>(l, out, a, b, msg);
    default: return fail(msg, FL_CU_E_DEVICE, "binary kernel", "unknown op");
    }
}

extern "C" int fl_cu_binary(int op, fl_dtype dt, const fl_cu_layout *l, void *out, const void *a,
                           const void *b, char *msg)
{
    if (dt == FL_F32)
        return binary_t<float>(op, l, out, a, b, msg);
    if (dt == FL_F64)
        return binary_t<double>(op, l, out, a, b, msg);
    return fail(msg, FL_CU_E_DEVICE, "binary kernel", "dtype is not f32 or f64");
}

/* ------------------------------------------------------------------ cuBLAS */

static int blas_fail(char *msg, const char *what, cublasStatus_t s)
{
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? FL_CU_E_NOMEM : FL_CU_E_DEVICE;
    return fail(msg, code, what, cublasGetStatusString(s));
}

extern "C" int fl_cu_blas_create(int device, void **handle, char *msg)
{
    *handle = NULL;
    CU_TRY(cudaSetDevice(device), "cudaSetDevice");
    cublasHandle_t h;
    cublasStatus_t s = cublasCreate(&h);
    if (s != CUBLAS_STATUS_SUCCESS)
        return blas_fail(msg, "cublasCreate", s);
    /* Plain FP32/FP64 arithmetic: no TF32 tensor cores, so results stay comparable to the
     * CPU backend (cuBLAS never enables TF32 unless asked; say so explicitly anyway). */
    s = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        return blas_fail(msg, "cublasSetMathMode", s);
    }
    *handle = h;
    return FL_CU_OK;
}

extern "C" void fl_cu_blas_destroy(int device, void *handle)
{
    if (!handle)
        return;
    (void)cudaSetDevice(device);
    (void)cublasDestroy((cublasHandle_t)handle);
    (void)cudaGetLastError();
}

extern "C" int fl_cu_gemm(void *handle, fl_dtype dt, const fl_cu_gemm_args *g, char *msg)
{
    cublasHandle_t h = (cublasHandle_t)handle;
    cublasOperation_t ta = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t type;
    cublasComputeType_t compute;
    float alpha32 = (float)g->alpha, beta32 = (float)g->beta;
    const void *alpha, *beta;
    size_t es;
    if (dt == FL_F32) {
        type = CUDA_R_32F;
        compute = CUBLAS_COMPUTE_32F; /* not _FAST_TF32: full FP32 products */
        alpha = &alpha32;
        beta = &beta32;
        es = 4;
    } else if (dt == FL_F64) {
        type = CUDA_R_64F;
        compute = CUBLAS_COMPUTE_64F;
        alpha = &g->alpha;
        beta = &g->beta;
        es = 8;
    } else {
        return fail(msg, FL_CU_E_DEVICE, "cublasGemmStridedBatchedEx", "dtype is not f32 or f64");
    }
    /* batchCount is an int: run huge batches in chunks */
    const char *pa = (const char *)g->a, *pb = (const char *)g->b;
    char *pc = (char *)g->c;
    for (int64_t done = 0; done < g->batch;) {
        int64_t chunk = g->batch - done;
        if (chunk > 0x40000000)
            chunk = 0x40000000;
        cublasStatus_t s = cublasGemmStridedBatchedEx(
            h, ta, tb, (int)g->m, (int)g->n, (int)g->k, alpha, pa, type, (int)g->lda,
            (long long)g->stride_a, pb, type, (int)g->ldb, (long long)g->stride_b, beta, pc, type,
            (int)g->ldc, (long long)g->stride_c, (int)chunk, compute, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS)
            return blas_fail(msg, "cublasGemmStridedBatchedEx", s);
        pa += (size_t)(chunk * g->stride_a) * es;
        pb += (size_t)(chunk * g->stride_b) * es;
        pc += (size_t)(chunk * g->stride_c) * es;
        done += chunk;
    }
    return launch_check(msg, "cublasGemmStridedBatchedEx");
}
