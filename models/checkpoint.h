/* Checkpoint files as one collection of named tensors: safetensors (one file, or shards
 * through their index JSON) and PyTorch zip checkpoints; listing, loading and binding
 * weights to a model by name. See docs/checkpoints.md. */
#ifndef FL_CHECKPOINT_H
#define FL_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/tensor.h"

/* The largest rank a checkpoint entry may have (fifolab tensors hold FL_MAX_DIMS). */
#define FL_CKPT_MAX_DIMS 8

/* Element types as checkpoints declare them: a superset of fl_dtype, so a file can be
 * listed whole even where some tensors have types fifolab cannot compute with. */
typedef enum fl_ckpt_dtype {
    FL_CKPT_BOOL = 0,
    FL_CKPT_U8,
    FL_CKPT_I8,
    FL_CKPT_I16,
    FL_CKPT_U16,
    FL_CKPT_I32,
    FL_CKPT_U32,
    FL_CKPT_I64,
    FL_CKPT_U64,
    FL_CKPT_F16,
    FL_CKPT_BF16,
    FL_CKPT_F32,
    FL_CKPT_F64,
    FL_CKPT_C64,
    FL_CKPT_C128,
    FL_CKPT_F8_E4M3,
    FL_CKPT_F8_E5M2,
    FL_CKPT_F8_E8M0,
    FL_CKPT_DTYPE_COUNT
} fl_ckpt_dtype;

const char *fl_ckpt_dtype_name(fl_ckpt_dtype t); /* safetensors spelling: "F32", "BF16"; "?" if invalid */
size_t fl_ckpt_dtype_size(fl_ckpt_dtype t);      /* bytes per element; 0 if invalid */
/* safetensors name -> dtype; 0 on success, -1 if unknown. */
int fl_ckpt_dtype_from_name(const char *name, fl_ckpt_dtype *out);
/* The fifolab dtype holding it (F32 -> FL_F32, ...); 0 on success, -1 if none does. */
int fl_ckpt_dtype_to_fl(fl_ckpt_dtype t, fl_dtype *out);

/* One tensor of a checkpoint, as the file describes it. Owned by the checkpoint; valid
 * until fl_ckpt_close. */
typedef struct fl_ckpt_tensor {
    const char *name; /* full name path, e.g. "model.diffusion_model.out.2.weight" */
    fl_ckpt_dtype dtype;
    int ndim; /* 0 .. FL_CKPT_MAX_DIMS */
    int64_t shape[FL_CKPT_MAX_DIMS];
    int64_t stride[FL_CKPT_MAX_DIMS]; /* in elements, as stored: a PyTorch view may be non-contiguous */
    bool contiguous;                  /* stored row-major and dense */
    int64_t numel;
    size_t nbytes; /* numel * element size: what the tensor takes once loaded */
    /* where the bytes are (for the format readers): a blob of the checkpoint (a mapped
     * safetensors file, a PyTorch storage) and the byte offset of element 0 in it */
    size_t blob;
    uint64_t offset;
} fl_ckpt_tensor;

typedef struct fl_ckpt fl_ckpt;

typedef struct fl_ckpt_options {
    /* Allocator for the collection and for tensors copied on load; NULL: default. */
    const fl_allocator *alloc;
    /* PyTorch checkpoints: the object the tensors are taken from, as a dotted path of dict
     * keys from the top-level object. NULL: "state_dict" when the top level is a dict that
     * has one (Lightning and LVDM checkpoints), else the top level. "": the top level. */
    const char *root;
    /* PyTorch checkpoints: the largest data.pkl accepted; 0: 256 MiB. */
    size_t max_pickle_bytes;
} fl_ckpt_options;

/* Opens a checkpoint and validates all of it before any tensor can be used: a safetensors
 * file (memory-mapped), a safetensors index JSON ("*.safetensors.index.json": every shard
 * it names, resolved relative to it), or a PyTorch zip checkpoint (.ckpt/.pt/.pth). The
 * format is told by content. On success *out is a new checkpoint (close it with
 * fl_ckpt_close); on failure *out is NULL and err names the file and what is wrong.
 * `opt` may be NULL. A checkpoint is not thread-safe: load from one thread at a time. */
fl_status fl_ckpt_open(fl_ckpt **out, const char *path, const fl_ckpt_options *opt, fl_error *err);

/* The same over bytes in memory (safetensors or PyTorch zip; not an index). The buffer is
 * borrowed: it must stay valid and unchanged until the checkpoint and every tensor loaded
 * from it are released (safetensors tensors are views of it). `name` is used in messages. */
fl_status fl_ckpt_open_memory(fl_ckpt **out, const void *data, size_t size, const char *name,
                              const fl_ckpt_options *opt, fl_error *err);

/* Frees the checkpoint. Tensors already loaded stay valid (they hold their own references
 * to the mapping or storage they view). c may be NULL. */
void fl_ckpt_close(fl_ckpt *c);

const char *fl_ckpt_path(const fl_ckpt *c);   /* as given to open */
const char *fl_ckpt_format(const fl_ckpt *c); /* "safetensors", "safetensors-index", "pytorch-zip" */
size_t fl_ckpt_count(const fl_ckpt *c);
/* Tensor i in file order (safetensors: header order; PyTorch: dict order). */
const fl_ckpt_tensor *fl_ckpt_at(const fl_ckpt *c, size_t i);
/* By full name; NULL if absent. O(log n). */
const fl_ckpt_tensor *fl_ckpt_find(const fl_ckpt *c, const char *name);

/* Metadata as key/value strings: safetensors "__metadata__", index "metadata", and for
 * PyTorch checkpoints a summary of the top-level objects ("epoch" = "12", "callbacks" =
 * "dict, 2 entries", ...) plus the archive's folder and version. */
size_t fl_ckpt_meta_count(const fl_ckpt *c);
void fl_ckpt_meta_at(const fl_ckpt *c, size_t i, const char **key, const char **value);
const char *fl_ckpt_meta_get(const fl_ckpt *c, const char *key); /* NULL if absent */

/* Loads tensor t (from this checkpoint) into *out as a contiguous CPU tensor of its own
 * dtype; *out gets one new reference (release it with fl_tensor_release). Safetensors
 * tensors are zero-copy views of the mapping when their offset is element-aligned (the map
 * is private copy-on-write: writing into a tensor never changes the file); PyTorch
 * storages are read from the zip on first use and kept until close or fl_ckpt_drop_cache;
 * non-contiguous views are copied into a contiguous tensor. FL_E_DTYPE if fifolab tensors
 * cannot hold the dtype, FL_E_SHAPE if the rank exceeds FL_MAX_DIMS, FL_E_IO/FL_E_FORMAT
 * when reading fails; the message names the file and tensor. */
fl_status fl_ckpt_load(fl_ckpt *c, const fl_ckpt_tensor *t, fl_tensor *out, fl_error *err);
/* As fl_ckpt_load, converted to `dtype`: any of f32/f64/f16/bf16 from any of them (a new
 * tensor; rounding to nearest even). Same dtype: as fl_ckpt_load. */
fl_status fl_ckpt_load_as(fl_ckpt *c, const fl_ckpt_tensor *t, fl_dtype dtype, fl_tensor *out,
                          fl_error *err);
/* Drops the checkpoint's references to PyTorch storages read so far (tensors loaded from
 * them keep theirs). */
void fl_ckpt_drop_cache(fl_ckpt *c);

/* ---- binding a model's weights by name ---------------------------------------------- */

/* One tensor a model expects. */
typedef struct fl_ckpt_want {
    const char *name; /* relative to the bind prefix */
    fl_dtype dtype;   /* the dtype the model computes with */
    int ndim;         /* 0 .. FL_MAX_DIMS */
    int64_t shape[FL_MAX_DIMS];
    fl_tensor *dst; /* receives one new reference on success (must hold none); NULL: check only */
    bool optional;  /* absent is not an error: *dst is left FL_TENSOR_NULL */
} fl_ckpt_want;

typedef struct fl_bind_options {
    /* Prepended to every wanted name; only checkpoint tensors under it take part, so a
     * model binds its own subtree ("model.diffusion_model.") and the rest of the file
     * (VAE, text encoder) is neither loaded nor called unexpected. NULL: "". */
    const char *prefix;
    /* NULL-terminated list of fnmatch(3) patterns, matched against names relative to the
     * prefix: tensors the model knows to be present and does not use (e.g.
     * "*.num_batches_tracked", "model_ema.*"). They are counted, not reported. NULL: none. */
    const char *const *allow_unexpected;
    /* Float tensors stored as another float dtype (f32/f64/f16/bf16) are converted to the
     * wanted dtype. false: the dtype must match exactly. */
    bool convert;
} fl_bind_options;

/* Everything a failed (or successful) bind found, one line per key. Caller-owned: zero it
 * before the call, free it with fl_bind_report_free. */
typedef struct fl_bind_report {
    size_t bound, missing, unexpected, allowed, wrong_shape, wrong_dtype;
    char *text; /* "missing    NAME (model wants [..] f32)\n..." or NULL when nothing is wrong */
    size_t text_cap;
} fl_bind_report;
void fl_bind_report_free(fl_bind_report *r);

/* Binds n wanted tensors. Every wanted name is looked up (prefix + name); every missing,
 * unexpected (under the prefix, not wanted, not allowed), wrongly shaped or wrongly typed
 * key is collected, and if there is any the call fails with FL_E_FORMAT and ONE message
 * giving the counts and as many of the names as fit (all of them in `report`, which may be
 * NULL). Only when everything fits are the tensors loaded (fl_ckpt_load_as) and stored in
 * the dst pointers; on any failure no dst is touched. `opt` may be NULL. */
fl_status fl_ckpt_bind(fl_ckpt *c, const fl_ckpt_want *wants, size_t n, const fl_bind_options *opt,
                       fl_bind_report *report, fl_error *err);

/* ---- listing ------------------------------------------------------------------------ */

/* Writes what `fifolab inspect` prints: the format, metadata, one line per tensor whose
 * name starts with `filter` (NULL: all) with dtype, shape and bytes, and totals. Returns
 * the number of tensors listed. */
size_t fl_ckpt_list(FILE *f, const fl_ckpt *c, const char *filter);

#endif
