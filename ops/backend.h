/* The backend interface: one vtable per compute backend (cpu-ref, cpu = OpenBLAS/LAPACK/
 * FFTW, cuda) plus its context. Users call ops through ops/ops.h, which validates
 * shapes, dtypes and devices once, so a backend entry may trust its arguments. */
#ifndef FL_BACKEND_H
#define FL_BACKEND_H

#include "../core/tensor.h"

typedef struct fl_backend fl_backend;

typedef enum fl_unop {
    FL_UN_NEG,
    FL_UN_ABS,
    FL_UN_SQUARE,
    FL_UN_SQRT,
    FL_UN_EXP,
    FL_UN_LOG,
    FL_UN_AFFINE, /* a * x + b */
    FL_UN_COUNT
} fl_unop;

typedef enum fl_binop { FL_BIN_ADD, FL_BIN_SUB, FL_BIN_MUL, FL_BIN_DIV, FL_BIN_MAX, FL_BIN_MIN, FL_BIN_COUNT } fl_binop;

typedef enum fl_reduceop {
    FL_RED_SUM,
    FL_RED_MEAN,
    FL_RED_MAX,
    FL_RED_MIN,
    FL_RED_VAR,          /* population variance (divides by n) */
    FL_RED_VAR_UNBIASED, /* sample variance (divides by n - 1) */
    FL_RED_COUNT
} fl_reduceop;

/* Entries receive arguments already validated by ops.c:
 * - every tensor lives on the backend's device (copy: see below) and has the dtype the op
 *   takes; shapes agree as stated per entry;
 * - outputs may alias an input only as the identical view (elementwise ops); otherwise
 *   outputs do not overlap inputs.
 * An entry may be NULL: ops.c then answers FL_E_UNSUPPORTED naming the backend and op. */
typedef struct fl_backend_vtable {
    const char *name;

    /* New storage of nbytes on the backend's device, one reference, uninitialised. */
    fl_status (*storage_new)(fl_backend *be, size_t nbytes, fl_storage **out, fl_error *err);
    /* dst[i] = src[i] for same-shape tensors of any strides, converting between dtypes
     * (float types among themselves, complex among themselves, any type to itself). One
     * side may be on the CPU when the backend's device is not (uploads/downloads). */
    fl_status (*copy)(fl_backend *be, fl_tensor *dst, const fl_tensor *src, fl_error *err);
    fl_status (*fill)(fl_backend *be, fl_tensor *dst, double value, fl_error *err);
    /* out = op(in), same shape; a, b are FL_UN_AFFINE's parameters. f32/f64. */
    fl_status (*unary)(fl_backend *be, fl_unop op, fl_tensor *out, const fl_tensor *in, double a,
                       double b, fl_error *err);
    /* out = a op b; a and b have already been expanded to out's shape (stride-0 dims). */
    fl_status (*binary)(fl_backend *be, fl_binop op, fl_tensor *out, const fl_tensor *a,
                        const fl_tensor *b, fl_error *err);
    /* out has in's rank with shape[axis] == 1. f32/f64; accumulation in f64. */
    fl_status (*reduce)(fl_backend *be, fl_reduceop op, fl_tensor *out, const fl_tensor *in,
                        int axis, fl_error *err);
    /* Numerically stable softmax along axis; out same shape as in. */
    fl_status (*softmax)(fl_backend *be, fl_tensor *out, const fl_tensor *in, int axis,
                         fl_error *err);
    /* c = alpha * a @ b + beta * c over the last two dims; all three have the same rank
     * (>= 2) and batch dims already expanded to c's (stride 0 where broadcast):
     * a [..., M, K], b [..., K, N], c [..., M, N]. Transposed operands arrive as views
     * (strides of any order). beta == 0 means c is not read (NaNs in c do not leak). */
    fl_status (*matmul)(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                        double alpha, double beta, fl_error *err);

    /* Dense linear algebra on a batch of small matrices [..., n, n]; f32, f64, c64, c128.
     * eigh: symmetric / Hermitian a (lower triangle read); w [..., n] real, ascending;
     * v [..., n, n] with eigenvector i in column i, or v == NULL for values only. */
    fl_status (*eigh)(fl_backend *be, fl_tensor *w, fl_tensor *v, const fl_tensor *a, fl_error *err);
    /* l = lower Cholesky factor of a (lower triangle read), upper triangle set to 0.
     * FL_E_NUMERIC naming the batch index and minor when a is not positive definite. */
    fl_status (*cholesky)(fl_backend *be, fl_tensor *l, const fl_tensor *a, fl_error *err);
    /* x = a^-1 b given l = chol(a); b, x [..., n, k]. */
    fl_status (*cholesky_solve)(fl_backend *be, fl_tensor *x, const fl_tensor *l,
                                const fl_tensor *b, fl_error *err);
    /* x = a^-1 b by LU with partial pivoting; FL_E_NUMERIC when a is singular. */
    fl_status (*solve)(fl_backend *be, fl_tensor *x, const fl_tensor *a, const fl_tensor *b,
                       fl_error *err);
    /* Discrete Fourier transform over the last `ndims` (1..3) dims, batched over the rest.
     * in: f32 or c64 -> out c64; f64 or c128 -> out c128; same shape. Forward is
     * unnormalised (exp(-2πi k n / N)); inverse uses exp(+...) and divides by N. */
    fl_status (*fft)(fl_backend *be, fl_tensor *out, const fl_tensor *in, int ndims, int inverse,
                     fl_error *err);

    void (*destroy)(fl_backend *be); /* frees impl; ops.c frees the struct */
} fl_backend_vtable;

/* Owned by whoever created it (fl_backend_new); free with fl_backend_free. A backend may
 * be used from one thread at a time. */
struct fl_backend {
    const fl_backend_vtable *vt;
    void *impl;
    fl_device device;
    const fl_allocator *alloc; /* host memory: this struct, scratch, CPU storages */
};

#endif
