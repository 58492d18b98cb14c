/* Private interface of the CUDA backend's C half: shared between cuda_backend.c (the
 * vtable, storages, copies, elementwise, matmul) and cuda_nn.c (the neural-network
 * entries). Only compiled with FL_HAVE_CUDA. */
#ifndef FL_CUDA_PRIV_H
#define FL_CUDA_PRIV_H

#include <stdbool.h>

#include "../backend.h"
#include "cuda_internal.h"

/* The storages' caching allocator (cuda_pool.c). Reference-counted: the backend holds one
 * reference and every block handed out another, so storages may outlive their backend;
 * the last reference frees the cached blocks. Thread-safe (a storage may be released on
 * any thread). Blocks are reused in issue order on the default stream, which is what
 * makes handing a freed block to the next storage safe without synchronising. */
typedef struct cuda_pool cuda_pool;
/* The cache keeps at most $FL_CUDA_CACHE_MB (default 4096) MiB of free blocks. */
fl_status fl_cuda_pool_new(const fl_allocator *alloc, int device, cuda_pool **out, fl_error *err);
void fl_cuda_pool_unref(cuda_pool *p);
/* A block of at least nbytes: a cached one of the same size class, else cudaMalloc
 * (after emptying the cache and the scratch pool when the device is out of memory). */
int fl_cuda_pool_get(cuda_pool *p, size_t nbytes, void **ptr, char *msg);
/* Takes back a block from fl_cuda_pool_get (nbytes as asked) and drops its reference. */
void fl_cuda_pool_put(cuda_pool *p, void *ptr, size_t nbytes);

/* be->impl. The backend's own state; storages it made outlive it (they hold the pool). */
typedef struct cuda_impl {
    int device;
    void *blas;      /* cublasHandle_t, created on `device` */
    int async_alloc; /* scratch through cudaMallocAsync (stream-ordered) */
    int tf32;        /* FL_CUDA_TF32=1 at creation: f32 NN GEMMs on TF32 tensor cores */
    cuda_pool *pool; /* storages' device memory */
} cuda_impl;

/* Makes the backend's GPU current; every op starts here. */
fl_status fl_cuda_enter(fl_backend *be, const char *op, fl_error *err);
/* A failed fl_cu_* call as "cuda:<dev> <op>: <msg>" (FL_E_NOMEM or FL_E_DEVICE). */
fl_status fl_cuda_fail(fl_backend *be, int rc, const char *op, const char *msg, fl_error *err);
/* The kernel layout of nops views of one shape (dims merged); false when empty. */
bool fl_cuda_layout(fl_cu_layout *l, int ndim, const int64_t *shape, int nops, const int64_t *const *strides);
/* Device-to-device copy between two views of one shape, converting dtypes. */
fl_status fl_cuda_dev_copy(fl_backend *be, const char *op, int ndim, const int64_t *shape, void *d, fl_dtype dt,
                           const int64_t *dstride, const void *s, fl_dtype sdt, const int64_t *sstride,
                           fl_error *err);

/* The neural-network vtable entries (cuda_nn.c); contracts in ops/backend.h. */
fl_status fl_cuda_linear(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                         const fl_tensor *bias, fl_error *err);
fl_status fl_cuda_conv2d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                         const fl_tensor *bias, const fl_conv_opts *o, fl_error *err);
fl_status fl_cuda_conv1d(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *w,
                         const fl_tensor *bias, const fl_conv_opts *o, fl_error *err);
fl_status fl_cuda_group_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, int groups,
                             const fl_tensor *gamma, const fl_tensor *beta, double eps, int silu, fl_error *err);
fl_status fl_cuda_layer_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                             const fl_tensor *beta, double eps, fl_error *err);
fl_status fl_cuda_rms_norm(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *gamma,
                           double eps, fl_error *err);
fl_status fl_cuda_activation(fl_backend *be, fl_act act, fl_tensor *out, const fl_tensor *in, fl_error *err);
fl_status fl_cuda_attention(fl_backend *be, fl_tensor *out, const fl_tensor *q, const fl_tensor *k,
                            const fl_tensor *v, const fl_tensor *mask, double scale, fl_error *err);
fl_status fl_cuda_timestep_embedding(fl_backend *be, fl_tensor *out, const fl_tensor *t, const fl_temb_opts *o,
                                     fl_error *err);
fl_status fl_cuda_upsample_nearest(fl_backend *be, fl_tensor *out, const fl_tensor *x, fl_error *err);
fl_status fl_cuda_modulate(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_tensor *scale,
                           const fl_tensor *shift, fl_error *err);
fl_status fl_cuda_gate_add(fl_backend *be, fl_tensor *out, const fl_tensor *res, const fl_tensor *gate,
                           const fl_tensor *y, fl_error *err);
fl_status fl_cuda_rope(fl_backend *be, fl_tensor *out, const fl_tensor *x, const fl_rope_opts *o, fl_error *err);

#endif
