/* PyTorch zip checkpoints (torch.save since 1.6: .ckpt/.pt/.pth): the zip container through
 * libzip, data.pkl through the restricted pickle reader, tensors from the rebuild calls
 * and persistent storage ids it holds. Used by checkpoint.c; models open files with
 * fl_ckpt_open. */
#ifndef FL_TORCHZIP_H
#define FL_TORCHZIP_H

#include "models/checkpoint.h"

/* Reads the archive: the one "<folder>/data.pkl" (folder: the file's own name in older
 * torch, "archive" in newer), "<folder>/byteorder" if present (must be "little"),
 * "<folder>/version" / ".data/version" (kept as metadata), and "<folder>/data/<key>" for
 * each storage, whose size must equal what its persistent id declares. Tensors are the
 * torch._utils._rebuild_tensor_v2 (also _rebuild_tensor, _rebuild_tensor_v3,
 * _rebuild_parameter, torch._tensor._rebuild_from_type_v2) calls reachable from the root
 * object (see fl_ckpt_options.root) through dicts, lists, tuples and placeholder objects'
 * state, named by their key path joined with '.'. Everything else in the pickle is inert
 * and only summarised as metadata. Storages are read (and CRC-checked) when a tensor is
 * first loaded. */
fl_status fl_torchzip_read_file(fl_ckpt *c, const char *path, fl_error *err);

/* The same over a borrowed buffer (see fl_ckpt_open_memory). */
fl_status fl_torchzip_read_memory(fl_ckpt *c, const void *data, size_t size, fl_error *err);

#endif
