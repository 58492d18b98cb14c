/* Tensors: up to FL_MAX_DIMS dimensions (batch, frames, channels, height, width), shape +
 * strides + offset over a reference-counted storage, and views that share it. */
#ifndef FL_TENSOR_H
#define FL_TENSOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "alloc.h"
#include "dtype.h"
#include "status.h"

#define FL_MAX_DIMS 5

typedef enum fl_device_kind { FL_DEVICE_CPU = 0, FL_DEVICE_CUDA = 1 } fl_device_kind;

typedef struct fl_device {
    fl_device_kind kind;
    int index; /* GPU ordinal; 0 for the CPU */
} fl_device;

const char *fl_device_name(fl_device d); /* "cpu", "cuda" */

/* A block of memory on a device, shared by every tensor that views it. The storage frees
 * itself (data through `release`, the struct through `alloc`) when its last reference is
 * released. The refcount is atomic so views may be released from other threads. */
typedef struct fl_storage {
    atomic_long refcount;
    void *data;
    size_t nbytes;
    fl_device device;
    void (*release)(void *ud, void *data, size_t nbytes); /* NULL: memory not owned */
    void *release_ud;
    const fl_allocator *alloc; /* frees this struct */
} fl_storage;

/* Creates a storage with one reference over `data` (not copied). `release(ud, data, nbytes)`
 * is called when the last reference goes; pass NULL for memory the caller keeps owning
 * (e.g. an arena block or a memory map it unmaps itself). NULL on allocation failure. */
fl_storage *fl_storage_wrap(const fl_allocator *alloc, void *data, size_t nbytes, fl_device dev,
                            void (*release)(void *ud, void *data, size_t nbytes), void *release_ud);
/* A new CPU storage of nbytes (uninitialised, FL_ALIGN-aligned) from `alloc` (NULL: default). */
fl_storage *fl_storage_new_cpu(const fl_allocator *alloc, size_t nbytes);
void fl_storage_retain(fl_storage *s);
void fl_storage_release(fl_storage *s); /* s may be NULL */

/* A tensor is a small value: copying the struct does not add a reference; use
 * fl_tensor_retain for that. A zeroed struct (FL_TENSOR_NULL) holds nothing.
 * Strides and offset count elements, not bytes; strides are >= 0 (0 = broadcast). */
typedef struct fl_tensor {
    fl_storage *storage;
    fl_dtype dtype;
    int ndim;
    int64_t shape[FL_MAX_DIMS];
    int64_t stride[FL_MAX_DIMS];
    int64_t offset;
} fl_tensor;

#define FL_TENSOR_NULL ((fl_tensor){ 0 })

/* --- creation: each gives `out` one new reference; release it with fl_tensor_release --- */

/* Contiguous CPU tensor, uninitialised (zeros: fl_tensor_zeros). `alloc` NULL = default. */
fl_status fl_tensor_empty(fl_tensor *out, fl_dtype dtype, int ndim, const int64_t *shape,
                          const fl_allocator *alloc, fl_error *err);
fl_status fl_tensor_zeros(fl_tensor *out, fl_dtype dtype, int ndim, const int64_t *shape,
                          const fl_allocator *alloc, fl_error *err);
/* A tensor over an existing storage (adds a reference to it). `stride` NULL = contiguous.
 * Fails with FL_E_RANGE if any element would fall outside the storage. */
fl_status fl_tensor_from_storage(fl_tensor *out, fl_storage *storage, fl_dtype dtype, int ndim,
                                 const int64_t *shape, const int64_t *stride, int64_t offset,
                                 fl_error *err);

void fl_tensor_retain(fl_tensor *dst, const fl_tensor *src); /* dst = src, plus a reference */
void fl_tensor_release(fl_tensor *t);                          /* drops the reference; t = NULL tensor */

/* --- views: write into *dst a view of src holding its own new reference. dst may equal
 * src (the reference is then carried over); otherwise *dst must hold no reference. On
 * error *dst is untouched. --- */
fl_status fl_tensor_narrow(fl_tensor *dst, const fl_tensor *src, int dim, int64_t start,
                           int64_t length, fl_error *err);
/* Python-style src[..., start:stop:step, ...] on one dim, step >= 1; start/stop clamped. */
fl_status fl_tensor_slice(fl_tensor *dst, const fl_tensor *src, int dim, int64_t start,
                          int64_t stop, int64_t step, fl_error *err);
/* Removes `dim`, keeping index `index` of it. */
fl_status fl_tensor_select(fl_tensor *dst, const fl_tensor *src, int dim, int64_t index,
                           fl_error *err);
/* dst dim i = src dim perm[i]; perm has src->ndim entries and is a permutation. */
fl_status fl_tensor_permute(fl_tensor *dst, const fl_tensor *src, const int *perm, fl_error *err);
fl_status fl_tensor_transpose(fl_tensor *dst, const fl_tensor *src, int d0, int d1, fl_error *err);
/* New shape with the same element count; src must be contiguous. One entry may be -1. */
fl_status fl_tensor_reshape(fl_tensor *dst, const fl_tensor *src, int ndim, const int64_t *shape,
                            fl_error *err);
/* Inserts a size-1 dim at `dim` (0..ndim). */
fl_status fl_tensor_unsqueeze(fl_tensor *dst, const fl_tensor *src, int dim, fl_error *err);
/* Broadcast view to `shape` (numpy rules, aligned right): stride 0 on expanded dims. */
fl_status fl_tensor_expand(fl_tensor *dst, const fl_tensor *src, int ndim, const int64_t *shape,
                           fl_error *err);

/* --- queries --- */
int64_t fl_tensor_numel(const fl_tensor *t);
size_t fl_tensor_nbytes(const fl_tensor *t); /* numel * element size */
bool fl_tensor_is_contiguous(const fl_tensor *t); /* row-major, dense, size-1 dims ignored */
bool fl_tensor_same_shape(const fl_tensor *a, const fl_tensor *b);
fl_device fl_tensor_device(const fl_tensor *t);
/* Address of element [0,...,0] (host address for CPU, device address for CUDA). */
void *fl_tensor_data(const fl_tensor *t);
/* Element offset (in elements from fl_tensor_data) of a multi-index of ndim entries. */
int64_t fl_tensor_offset_of(const fl_tensor *t, const int64_t *index);
/* Writes "[2, 3, 4] f32" into buf (always terminated); returns buf, for error messages. */
const char *fl_tensor_describe(const fl_tensor *t, char *buf, size_t n);
/* numpy-rule broadcast of two shapes; FL_E_SHAPE naming both if incompatible. */
fl_status fl_broadcast_shapes(int na, const int64_t *a, int nb, const int64_t *b, int *nout,
                              int64_t *out, fl_error *err);
/* Validates a dtype and shape (rank 0..FL_MAX_DIMS, sizes >= 0, element count, strides and
 * bytes representable whatever the order of the dims) and gives the bytes a contiguous
 * tensor of it needs. FL_E_DTYPE / FL_E_SHAPE / FL_E_RANGE naming the dim at fault. */
fl_status fl_shape_nbytes(fl_dtype dtype, int ndim, const int64_t *shape, size_t *nbytes,
                          fl_error *err);
/* Contiguous row-major strides for a shape. */
void fl_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

/* CPU element access as double (reference code and tests; not for hot loops). */
double fl_tensor_get(const fl_tensor *t, const int64_t *index);
void fl_tensor_set(fl_tensor *t, const int64_t *index, double v);

#endif
