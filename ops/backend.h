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

/* Activation functions (fl_activation). */
typedef enum fl_act {
    FL_ACT_SILU,      /* x * sigmoid(x) */
    FL_ACT_GELU,      /* exact: x/2 * (1 + erf(x / sqrt 2)) */
    FL_ACT_GELU_TANH, /* x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) */
    FL_ACT_COUNT
} fl_act;

/* Convolution geometry: stride and zero padding before (top/left) and after
 * (bottom/right) per spatial dim; conv1d and the temporal conv use index 0 only.
 * Output extent = (in + pad_lo + pad_hi - kernel) / stride + 1. */
typedef struct fl_conv_opts {
    int stride[2];
    int pad_lo[2];
    int pad_hi[2];
} fl_conv_opts;

/* Sinusoidal timestep embedding (see docs/ops.md): for half = dim / 2 and j < half,
 * freq_j = exp(-ln(max_period) * j / (half - freq_shift)), arg = scale * t * freq_j;
 * the row is [cos(arg) | sin(arg)] when cos_first, else [sin | cos]; an odd dim gets a
 * trailing 0. LDM / VideoCrafter2 / Wan: max_period 10000, freq_shift 0, scale 1,
 * cos_first 1 (= diffusers flip_sin_to_cos=True, downscale_freq_shift=0). */
typedef struct fl_temb_opts {
    double max_period;
    double freq_shift;
    double scale;
    int cos_first;
} fl_temb_opts;

/* 3-D rotary position embedding over a token grid (F, H, W) in row-major order (token n
 * sits at f = n / (H W), y = (n / W) % H, x = n % W). The head dim is split into
 * dims[0] (frames), dims[1] (rows), dims[2] (columns) elements, each even, in that
 * order; elements past their sum pass through. Pairs are interleaved (x[2i], x[2i+1]),
 * as Wan and rotary_embedding_torch: pair j of axis a turns by angle
 * (pos0[a] + p) * theta^(-2j / dims[a]). A 1-D RoPE is dims = {D, 0, 0}, grid = {L, 1, 1}. */
typedef struct fl_rope_opts {
    int64_t grid[3];
    int64_t dims[3];
    int64_t pos0[3];
    double theta;
} fl_rope_opts;

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

    /* --- neural-network ops: activations f32; weights, biases and norm affines f32,
     * f16 or bf16 (any strides); compute in f32 or better. Optional tensors are NULL. */

    /* out [M..., N] = x [M..., K] @ w^T + bias; w [N, K] (PyTorch Linear), bias [N]. */
    fl_status (*linear)(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                        const fl_tensor *bias, fl_error *err);
    /* x [B, C, H, W], w [O, C, KH, KW], bias [O], out [B, O, Ho, Wo] (sizes checked). */
    fl_status (*conv2d)(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                        const fl_tensor *bias, const fl_conv_opts *o, fl_error *err);
    /* Convolution along dim 2 of x [B, C, L, S1, S2], each (S1, S2) position apart:
     * w [O, C, K], bias [O], out [B, O, Lo, S1, S2]. conv1d has S1 = S2 = 1; the
     * temporal conv (kernel (K,1,1) over frames) has L = frames, (S1, S2) = (H, W). */
    fl_status (*conv1d)(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                        const fl_tensor *bias, const fl_conv_opts *o, fl_error *err);
    /* x, out [B, C, ...] (rank 2..5); statistics per (batch, group of C/groups channels)
     * over those channels and every trailing dim; gamma, beta [C]; then SiLU if silu. */
    fl_status (*group_norm)(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                            const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu,
                            fl_error *err);
    /* Over the last dim D: layer norm (x - mean) / sqrt(var + eps) * gamma + beta, or
     * (rms) x / sqrt(mean(x^2) + eps) * gamma; gamma, beta [D]. */
    fl_status (*layer_norm)(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                            const fl_tensor *gamma, const fl_tensor *beta, double eps,
                            fl_error *err);
    fl_status (*rms_norm)(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                          const fl_tensor *gamma, double eps, fl_error *err);
    /* out = act(in); in already expanded to out's shape. */
    fl_status (*activation)(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in,
                            fl_error *err);
    /* out [B, NH, Lq, Dv] = softmax(scale q k^T + mask) v over keys; q [B, NH, Lq, D],
     * k [B, NH, Lk, D], v [B, NH, Lk, Dv] (batch dims of k, v may be stride 0); mask NULL
     * or [B, NH, Lq, Lk] (expanded): f32 added to the scores, or u8 (0 = hidden). A query
     * whose every key is hidden gets zeros. Memory must not grow as Lq * Lk. */
    fl_status (*attention)(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                           const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err);
    /* t [N] (f32 or f64), out [N, dim] f32. */
    fl_status (*timestep_embedding)(fl_backend *be, fl_tensor *out, const fl_tensor *t,
                                    const fl_temb_opts *o, fl_error *err);
    /* Nearest-neighbour upsampling of the last two dims by whole factors:
     * x [..., H, W], out [..., H fh, W fw], out[..., i, j] = x[..., i / fh, j / fw]. */
    fl_status (*upsample_nearest)(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                                  fl_error *err);
    /* out = x * (1 + scale) + shift; scale and shift expanded to x's shape. */
    fl_status (*modulate)(fl_backend *be, fl_tensor *out, const fl_tensor *x,
                          const fl_tensor *scale, const fl_tensor *shift, fl_error *err);
    /* out = res + gate * y; gate and y expanded to res's shape. */
    fl_status (*gate_add)(fl_backend *be, fl_tensor *out, const fl_tensor *res,
                          const fl_tensor *gate, const fl_tensor *y, fl_error *err);
    /* x, out [B, L, NH, D]; L >= grid product (tokens past the grid pass through). */
    fl_status (*rope)(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_rope_opts *o,
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
