/* Entry points shared by the two CPU backends (cpu-ref and cpu); private to ops/. Each
 * takes arguments already validated by ops.c (see backend.h for the contracts). */
#ifndef FL_CPU_INTERNAL_H
#define FL_CPU_INTERNAL_H

#include "../backend.h"

/* Element offset (from fl_tensor_data) of batch item b, where the batch is every dim but
 * the last `core_dims`, flattened row-major. */
int64_t fl_cpu_batch_offset(const fl_tensor *t, int core_dims, int64_t b);
/* Number of batch items: product of all dims but the last `core_dims`. */
int64_t fl_cpu_batch_count(const fl_tensor *t, int core_dims);

fl_status fl_cpu_storage_new(fl_backend *be, size_t nbytes, fl_storage **out, fl_error *err);

/* plain C reference (ops/cpu/ref.c) */
fl_status fl_cpu_ref_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err);
fl_status fl_cpu_ref_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err);
fl_status fl_cpu_ref_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in,
                           double a, double b, fl_error *err);
fl_status fl_cpu_ref_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                            const fl_tensor *b, fl_error *err);
fl_status fl_cpu_ref_reduce(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in,
                            int axis, fl_error *err);
fl_status fl_cpu_ref_softmax(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis,
                             fl_error *err);
fl_status fl_cpu_ref_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                            double alpha, double beta, fl_error *err);

/* optimised paths (ops/cpu/fast.c, ops/cpu/blas.c) */
fl_status fl_cpu_fast_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err);
fl_status fl_cpu_fast_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err);
fl_status fl_cpu_fast_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in,
                            double a, double b, fl_error *err);
fl_status fl_cpu_fast_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                             const fl_tensor *b, fl_error *err);
fl_status fl_cpu_fast_reduce(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in,
                             int axis, fl_error *err);
fl_status fl_cpu_fast_softmax(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis,
                              fl_error *err);
fl_status fl_cpu_blas_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                             double alpha, double beta, fl_error *err);

/* linear algebra: reference (ops/cpu/linalg_ref.c) and LAPACKE (ops/cpu/linalg_lapack.c) */
fl_status fl_cpu_ref_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err);
fl_status fl_cpu_ref_cholesky(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err);
fl_status fl_cpu_ref_cholesky_solve(fl_backend *be, fl_tensor *x, const fl_tensor *l,
                                    const fl_tensor *b, fl_error *err);
fl_status fl_cpu_ref_solve(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b,
                           fl_error *err);
fl_status fl_cpu_lapack_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err);
fl_status fl_cpu_lapack_cholesky(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err);
fl_status fl_cpu_lapack_cholesky_solve(fl_backend *be, fl_tensor *x, const fl_tensor *l,
                                       const fl_tensor *b, fl_error *err);
fl_status fl_cpu_lapack_solve(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b,
                              fl_error *err);

/* FFT: naive DFT reference (ops/cpu/fft_ref.c) and FFTW (ops/cpu/fft_fftw.c) */
fl_status fl_cpu_ref_fft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims,
                         int inverse, fl_error *err);
fl_status fl_cpu_fftw_fft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims,
                          int inverse, fl_error *err);

/* neural-network ops: reference (ops/cpu/nn_ref.c) and fast (ops/cpu/nn_fast.c); the
 * NN_DECL list declares fl_cpu_<kind>_<op> for both kinds. */
#define FL_CPU_NN_DECL(kind)                                                                   \
    fl_status fl_cpu_##kind##_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x,        \
                                     const fl_tensor *w, const fl_tensor *bias, fl_error *err); \
    fl_status fl_cpu_##kind##_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x,        \
                                     const fl_tensor *w, const fl_tensor *bias,                 \
                                     const fl_conv_opts *o, fl_error *err);                     \
    fl_status fl_cpu_##kind##_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x,        \
                                     const fl_tensor *w, const fl_tensor *bias,                 \
                                     const fl_conv_opts *o, fl_error *err);                     \
    fl_status fl_cpu_##kind##_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,    \
                                         int groups, const fl_tensor *gamma,                    \
                                         const fl_tensor *beta, double eps, int silu,           \
                                         fl_error *err);                                        \
    fl_status fl_cpu_##kind##_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,    \
                                         const fl_tensor *gamma, const fl_tensor *beta,         \
                                         double eps, fl_error *err);                            \
    fl_status fl_cpu_##kind##_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x,      \
                                       const fl_tensor *gamma, double eps, fl_error *err);      \
    fl_status fl_cpu_##kind##_activation(fl_backend *be, fl_act act, fl_tensor *out,            \
                                         const fl_tensor *in, fl_error *err);                   \
    fl_status fl_cpu_##kind##_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q,     \
                                        const fl_tensor *k, const fl_tensor *v,                 \
                                        const fl_tensor *mask, double scale, fl_error *err);    \
    fl_status fl_cpu_##kind##_timestep_embedding(fl_backend *be, fl_tensor *out,                \
                                                 const fl_tensor *t, const fl_temb_opts *o,     \
                                                 fl_error *err);                                \
    fl_status fl_cpu_##kind##_upsample_nearest(fl_backend *be, fl_tensor *out,                  \
                                               const fl_tensor *x, fl_error *err);              \
    fl_status fl_cpu_##kind##_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x,      \
                                       const fl_tensor *scale, const fl_tensor *shift,          \
                                       fl_error *err);                                          \
    fl_status fl_cpu_##kind##_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res,    \
                                       const fl_tensor *gate, const fl_tensor *y,               \
                                       fl_error *err);                                          \
    fl_status fl_cpu_##kind##_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x,          \
                                   const fl_rope_opts *o, fl_error *err);
FL_CPU_NN_DECL(ref)
FL_CPU_NN_DECL(fast)

/* The activation functions in double (shared by the reference and the tests' notes). */
double fl_cpu_act_ref(fl_act act, double v);

/* Fork-join over [0, n): fn(ctx, chunk, begin, end) for up to fl_cpu_threads() contiguous
 * chunks of at least `grain` items, chunk 0 on the calling thread (ops/cpu/parallel.c).
 * Workers only compute: they never call BLAS (OpenBLAS runs its own threads) and cannot
 * fail. A thread that cannot be started leaves its chunk to the caller. */
typedef void (*fl_cpu_range_fn)(void *ctx, int chunk, int64_t begin, int64_t end);
/* Threads to use: FL_NUM_THREADS when set (1..256), else the online processors. */
int fl_cpu_threads(void);
/* How many chunks fl_cpu_parallel_for(n, grain, ...) will make (for per-chunk scratch). */
int fl_cpu_parallel_chunks(int64_t n, int64_t grain);
void fl_cpu_parallel_for(int64_t n, int64_t grain, fl_cpu_range_fn fn, void *ctx);

#endif
