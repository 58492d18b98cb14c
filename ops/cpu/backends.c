/* The two CPU backends' vtables: "cpu-ref" runs only the plain reference kernels; "cpu"
 * runs OpenBLAS, LAPACKE and FFTW for the dense work and the coalesced kernels for the
 * rest. */
#include "cpu_internal.h"


const fl_backend_vtable fl_cpu_ref_vtable;
const fl_backend_vtable fl_cpu_blas_vtable;

const fl_backend_vtable fl_cpu_ref_vtable = {
    .name = "cpu-ref",
    .storage_new = fl_cpu_storage_new,
    .copy = fl_cpu_ref_copy,
    .fill = fl_cpu_ref_fill,
    .unary = fl_cpu_ref_unary,
    .binary = fl_cpu_ref_binary,
    .reduce = fl_cpu_ref_reduce,
    .softmax = fl_cpu_ref_softmax,
    .matmul = fl_cpu_ref_matmul,
    .eigh = fl_cpu_ref_eigh,
    .cholesky = fl_cpu_ref_cholesky,
    .cholesky_solve = fl_cpu_ref_cholesky_solve,
    .solve = fl_cpu_ref_solve,
    .fft = fl_cpu_ref_fft,
    .linear = fl_cpu_ref_linear,
    .conv2d = fl_cpu_ref_conv2d,
    .conv1d = fl_cpu_ref_conv1d,
    .group_norm = fl_cpu_ref_group_norm,
    .layer_norm = fl_cpu_ref_layer_norm,
    .rms_norm = fl_cpu_ref_rms_norm,
    .activation = fl_cpu_ref_activation,
    .attention = fl_cpu_ref_attention,
    .timestep_embedding = fl_cpu_ref_timestep_embedding,
    .upsample_nearest = fl_cpu_ref_upsample_nearest,
    .modulate = fl_cpu_ref_modulate,
    .gate_add = fl_cpu_ref_gate_add,
    .rope = fl_cpu_ref_rope,
    .destroy = NULL,
};

const fl_backend_vtable fl_cpu_blas_vtable = {
    .name = "cpu",
    .storage_new = fl_cpu_storage_new,
    .copy = fl_cpu_fast_copy,
    .fill = fl_cpu_fast_fill,
    .unary = fl_cpu_fast_unary,
    .binary = fl_cpu_fast_binary,
    .reduce = fl_cpu_fast_reduce,
    .softmax = fl_cpu_fast_softmax,
    .matmul = fl_cpu_blas_matmul,
    .eigh = fl_cpu_lapack_eigh,
    .cholesky = fl_cpu_lapack_cholesky,
    .cholesky_solve = fl_cpu_lapack_cholesky_solve,
    .solve = fl_cpu_lapack_solve,
    .fft = fl_cpu_fftw_fft,
    .linear = fl_cpu_fast_linear,
    .conv2d = fl_cpu_fast_conv2d,
    .conv1d = fl_cpu_fast_conv1d,
    .group_norm = fl_cpu_fast_group_norm,
    .layer_norm = fl_cpu_fast_layer_norm,
    .rms_norm = fl_cpu_fast_rms_norm,
    .activation = fl_cpu_fast_activation,
    .attention = fl_cpu_fast_attention,
    .timestep_embedding = fl_cpu_fast_timestep_embedding,
    .upsample_nearest = fl_cpu_fast_upsample_nearest,
    .modulate = fl_cpu_fast_modulate,
    .gate_add = fl_cpu_fast_gate_add,
    .rope = fl_cpu_fast_rope,
    .destroy = NULL,
};
