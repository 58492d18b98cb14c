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

/* --- neural-network ops (docs/ops.md has the table). Activations are f32 on the backend's
 * device; weights, biases and norm affines may be f32, f16 or bf16 with any strides;
 * optional tensors are NULL. Inputs and outputs may be strided views; outputs may not
 * overlap inputs except where a function says "in place". --- */

/* out [..., N] = x [..., K] @ w^T + bias, w [N, K] as PyTorch's Linear stores it. */
fl_status fl_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                    const fl_tensor *bias, fl_error *err);

/* The common geometries: stride s, the same zero padding p on every side. */
fl_conv_opts fl_conv_opts_make(int stride, int pad);

/* 2-D convolution (cross-correlation, as PyTorch): x [B, C, H, W], w [O, C, KH, KW],
 * bias [O], out [B, O, Ho, Wo] with Ho = (H + pad_lo[0] + pad_hi[0] - KH) / stride[0] + 1
 * (likewise Wo). */
fl_status fl_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                    const fl_tensor *bias, fl_conv_opts o, fl_error *err);
/* 1-D convolution: x [B, C, L], w [O, C, K], bias [O], out [B, O, Lo] (index 0 of o). */
fl_status fl_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                    const fl_tensor *bias, fl_conv_opts o, fl_error *err);
/* Temporal convolution, PyTorch Conv3d with kernel (K, 1, 1) as VideoCrafter2 uses it:
 * x [B, C, T, H, W], w [O, C, K, 1, 1] or [O, C, K], bias [O], out [B, O, To, H, W]
 * (index 0 of o: along T). A (B F, C, H, W) activation is viewed as [B, F, C, H, W] and
 * permuted to [B, C, F, H, W] without a copy (fl_view_frames_as_video). */
fl_status fl_conv_temporal(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                           const fl_tensor *bias, fl_conv_opts o, fl_error *err);

/* Group norm over x [B, C, ...] (rank 2..5): groups must divide C; statistics over each
 * group's channels and all trailing dims (population variance); gamma, beta [C]
 * optional; then SiLU when `silu` (the GN + SiLU pair of every ResBlock). In place. */
fl_status fl_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                        const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu,
                        fl_error *err);
/* Layer norm over the last dim D; gamma, beta [D] each optional (Wan's norm1/norm2 have
 * neither). In place. */
fl_status fl_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                        const fl_tensor *beta, double eps, fl_error *err);
/* RMS norm over the last dim: x / sqrt(mean(x^2) + eps) * gamma; gamma [D] optional. In place. */
fl_status fl_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                      double eps, fl_error *err);

/* Elementwise activation; in broadcasts to out. In place. */
fl_status fl_activation(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in,
                        fl_error *err);
fl_status fl_silu(fl_backend *be, fl_tensor *out, const fl_tensor *in, fl_error *err);
fl_status fl_gelu(fl_backend *be, fl_tensor *out, const fl_tensor *in, fl_error *err);
fl_status fl_gelu_tanh(fl_backend *be, fl_tensor *out, const fl_tensor *in, fl_error *err);

/* Scaled dot-product attention: out = softmax(scale q k^T + mask) v.
 * q [B, NH, Lq, D], k [B, NH, Lk, D], v [B, NH, Lk, Dv], out [B, NH, Lq, Dv]; rank 3
 * ([N, L, D]) is accepted too. k and v batch dims broadcast to q's. A [B, L, NH, D]
 * activation (as a Linear gives it) is passed as its permuted view, no copy needed.
 * mask: NULL, or broadcastable to [B, NH, Lq, Lk]: f32 (added to the scores, -inf hides)
 * or u8 (0 hides the key). A query with every key hidden gets zeros. scale <= 0 means
 * 1 / sqrt(D). Tiled with an online softmax on every backend: scratch memory is
 * O(tile * (Lk + D)), never O(Lq * Lk). */
fl_status fl_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                       const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err);

/* Sinusoidal timestep embedding, t [N] f32/f64, out [N, dim] f32 (fl_temb_opts in
 * ops/backend.h; FL_TEMB_LDM is the LDM / VideoCrafter2 / Wan convention). */
#define FL_TEMB_LDM ((fl_temb_opts){ 10000.0, 0.0, 1.0, 1 })
fl_status fl_timestep_embedding(fl_backend *be, fl_tensor *out, const fl_tensor *t,
                                fl_temb_opts o, fl_error *err);

/* Nearest upsampling of the last two dims; the factors are out's H, W over x's (whole
 * numbers >= 1): x [..., H, W] -> out [..., 2H, 2W] for the UNet's 2x. */
fl_status fl_upsample_nearest(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err);

/* Adaptive-norm modulation: out = x * (1 + scale) + shift, scale and shift broadcast to
 * x (e.g. [B, 1, C] against [B, L, C]). In place. */
fl_status fl_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *scale,
                      const fl_tensor *shift, fl_error *err);
/* Gated residual: out = res + gate * y, gate and y broadcast to res. In place on res. */
fl_status fl_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res, const fl_tensor *gate,
                      const fl_tensor *y, fl_error *err);

/* Rotary position embedding on x, out [B, L, NH, D] (fl_rope_opts in ops/backend.h:
 * Wan2.1's is grid = latent (F, H/2, W/2), dims = {D - 4 (D/6), 2 (D/6), 2 (D/6)},
 * theta = 10000). In place. */
fl_status fl_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_rope_opts o,
                  fl_error *err);

/* --- layouts (copies through fl_copy, so every backend has them) --- */

/* out = the inputs joined along axis (negative counts from the end); every input has
 * out's shape except along axis, whose sizes sum to out's. Any dtype fl_copy takes. */
fl_status fl_concat(fl_backend *be, fl_tensor *out, const fl_tensor *const *inputs, int n,
                    int axis, fl_error *err);
/* Video activations: spatial layers see (B F, C, H, W) per frame, temporal layers
 * (B H W, F, C) per pixel. These copy between the two (frames = F). */
fl_status fl_frames_to_tokens(fl_backend *be, fl_tensor *out, const fl_tensor *x, int64_t frames,
                              fl_error *err);
fl_status fl_tokens_to_frames(fl_backend *be, fl_tensor *out, const fl_tensor *x, int64_t frames,
                              fl_error *err);
/* Spatial transformers see tokens (N, H W, C) of an (N, C, H, W) map, and back (H and
 * W are out's). */
fl_status fl_channels_to_tokens(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err);
fl_status fl_tokens_to_channels(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err);
/* A view (no copy, one new reference in *out) of x (B F, C, H, W) as [B, C, F, H, W],
 * the layout fl_conv_temporal and fl_group_norm take for temporal blocks. */
fl_status fl_view_frames_as_video(fl_tensor *out, const fl_tensor *x, int64_t frames, fl_error *err);

#endif
