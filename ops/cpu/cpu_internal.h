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

#endif
