/* safetensors reader: header validation over a memory map or a buffer, and sharded
 * checkpoints through their index JSON ("weight_map"). Used by checkpoint.c; models open
 * files with fl_ckpt_open. */
#ifndef FL_SAFETENSORS_H
#define FL_SAFETENSORS_H

#include "models/checkpoint.h"

/* The largest header accepted, as the reference implementation (safetensors' MAX_HEADER_SIZE). */
#define FL_SAFETENSORS_MAX_HEADER 100000000u

/* Maps the file (private, copy-on-write) and adds its tensors and "__metadata__" to c after
 * validating everything: header length (<= FL_SAFETENSORS_MAX_HEADER and <= file size - 8),
 * a UTF-8 JSON object starting with '{' followed only by whitespace, a string-to-string
 * "__metadata__", and for every tensor a known dtype, a shape of non-negative integers
 * whose element and byte counts do not overflow, data_offsets [begin, end] holding exactly
 * dtype x shape bytes, and offsets that tile the data section exactly (no gap, no overlap,
 * nothing after the last tensor, nothing missing: the file size matches). Messages do not
 * name the file (fl_ckpt_open prefixes it). */
fl_status fl_safetensors_read_file(fl_ckpt *c, const char *path, fl_error *err);

/* The same over a borrowed buffer (see fl_ckpt_open_memory). */
fl_status fl_safetensors_read_memory(fl_ckpt *c, const void *data, size_t size, fl_error *err);

/* Reads "*.safetensors.index.json": its "metadata" and "weight_map" {tensor: shard file}.
 * Every shard named is read as above (resolved relative to the index's folder; absolute
 * names and ".." are refused), and the map must agree with the shards exactly: each listed
 * tensor is in the shard it is mapped to, and each shard tensor is listed. */
fl_status fl_safetensors_read_index(fl_ckpt *c, const char *path, fl_error *err);

#endif
