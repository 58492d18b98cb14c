/* The ops API: validated, backend-independent entry points for every numeric kernel.
 * Outputs come first and are allocated by the caller (fl_empty helps), so hot loops can
 * reuse them. Every function returns an fl_status and names the tensor at fault in err. */
#ifndef FL_OPS_H
#define FL_OPS_H

#include "backend.h"

/* --- backends --- */

/* Creates a backend by name: "cpu" (OpenBLAS/LAPACK/FFTW), "cpu-ref" (plain C reference),
 * "cuda" (device `device`; FL_E_UNSUPPORTED when built without CUDA, FL_E_DEVICE when no
 * GPU is usable). `alloc` NULL = default. The caller owns *out. */
fl_status fl_backend_new(fl_backend **out, const char *name, int device, const fl_allocator *alloc,
                         fl_error *err);
void fl_backend_free(fl_backend *be);
const char *fl_backend_name(const fl_backend *be);
/* Names of the backends compiled in, NULL-terminated. */
const char *const *fl_backend_list(void);
/* Whether the "cuda" backend was compiled in (nvcc was found at build time). */
int fl_backend_have_cuda(void);

/* --- memory --- */

/* Contiguous tensor on the backend's device, uninitialised; one reference to *out. */
fl_status fl_empty(fl_backend *be, fl_tensor *out, fl_dtype dtype, int ndim, const int64_t *shape,
                   fl_error *err);
fl_status fl_copy(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err);
fl_status fl_fill(fl_backend *be, fl_tensor *dst, double value, fl_error *err);
/* *out = a contiguous tensor with src's values on the backend's device: a new reference
 * to src itself when it already is one, else a copy. */
fl_status fl_contiguous(fl_backend *be, fl_tensor *out, const fl_tensor *src, fl_error *err);

/* --- elementwise (f32, f64; out must have the broadcast shape of the inputs) --- */
fl_status fl_unary(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in, fl_error *err);
fl_status fl_affine(fl_backend *be, fl_tensor *out, const fl_tensor *in, double a, double b,
                    fl_error *err); /* out = a * in + b */
fl_status fl_binary(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                    const fl_tensor *b, fl_error *err);
fl_status fl_add(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err);
fl_status fl_sub(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err);
fl_status fl_mul(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err);
fl_status fl_div(fl_backend *be, fl_tensor *out, const fl_tensor *a, const fl_tensor *b, fl_error *err);

/* --- reductions along one axis (negative axis counts from the end). out has in's shape
 * with that axis either removed or kept with size 1. --- */
fl_status fl_reduce(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in, int axis,
                    fl_error *err);
fl_status fl_softmax(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis, fl_error *err);

/* --- matrix products: c = alpha * op(a) @ op(b) + beta * c, op = transpose when the flag
 * is set. Batch dims (all but the last two) broadcast numpy-style to c's. f32/f64. --- */
#define FL_MATMUL_TA 1u
#define FL_MATMUL_TB 2u
fl_status fl_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                    unsigned flags, double alpha, double beta, fl_error *err);

/* --- small dense linear algebra, batched over leading dims (see backend.h) --- */
fl_status fl_eigh(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err);
fl_status fl_cholesky(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err);
fl_status fl_cholesky_solve(fl_backend *be, fl_tensor *x, const fl_tensor *l, const fl_tensor *b,
                            fl_error *err);
fl_status fl_solve(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b,
                   fl_error *err);

/* --- FFT over the last ndims (1..3) dims; see backend.h for conventions --- */
fl_status fl_fft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, fl_error *err);
fl_status fl_ifft(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, fl_error *err);

#endif
