/* The interface between the checkpoint collection (checkpoint.c) and the format readers
 * (safetensors.c, torchzip.c): how a reader adds blobs, tensors and metadata. Models use
 * checkpoint.h only. */
#ifndef FL_CHECKPOINT_READER_H
#define FL_CHECKPOINT_READER_H

#include "models/checkpoint.h"

/* Gives a new reference to a storage holding the blob's `nbytes` bytes (a PyTorch
 * storage read from the zip on demand). `tag` is what the reader registered. */
typedef fl_status (*fl_ckpt_fetch_fn)(void *ud, uint64_t tag, size_t nbytes, const fl_allocator *a,
                                      fl_storage **out, fl_error *err);

/* The options the checkpoint was opened with (defaults filled in; never NULL). */
const fl_ckpt_options *fl_ckpt_options_of(const fl_ckpt *c);
const fl_allocator *fl_ckpt_alloc(const fl_ckpt *c);

/* Records the format name (a static string). */
void fl_ckpt_set_format(fl_ckpt *c, const char *format);

/* Adds a blob of `nbytes` bytes named `name` (for messages: "model-00001.safetensors",
 * "archive/data/7") and sets *index. Either `st` (a reference the checkpoint takes over,
 * even on failure) holds the bytes now, or `fetch` gives them on first load. */
fl_status fl_ckpt_add_blob(fl_ckpt *c, const char *name, size_t nbytes, fl_storage *st,
                           fl_ckpt_fetch_fn fetch, void *ud, uint64_t tag, size_t *index,
                           fl_error *err);

/* The name blob i was added with ("?" if there is none). */
const char *fl_ckpt_blob_name(const fl_ckpt *c, size_t i);

/* Adds a tensor. Validates what the reader could not: rank <= FL_CKPT_MAX_DIMS, sizes and
 * strides >= 0, element count and byte size without overflow, and that every element lies
 * inside the blob (byte_offset + extent). `stride` NULL: contiguous. The name is copied;
 * duplicates are found when the reader finishes (fl_ckpt_finish). */
fl_status fl_ckpt_add_tensor(fl_ckpt *c, const char *name, fl_ckpt_dtype dtype, int ndim,
                             const int64_t *shape, const int64_t *stride, size_t blob,
                             uint64_t byte_offset, fl_error *err);

/* Adds a metadata pair (both copied). */
fl_status fl_ckpt_add_meta(fl_ckpt *c, const char *key, const char *value, fl_error *err);

/* Calls fn(ud) when the checkpoint is closed, after every blob reference is dropped (the
 * reader's own state: a zip handle). At most 4 per checkpoint; FL_E_NOMEM beyond (fn is
 * then called at once). */
fl_status fl_ckpt_on_close(fl_ckpt *c, void (*fn)(void *ud), void *ud, fl_error *err);

/* Copies a string into the checkpoint's own memory (freed at close). NULL on failure. */
char *fl_ckpt_strdup(fl_ckpt *c, const char *s, size_t len);

#endif
