/* Small HDF5 helpers shared by the run file, the state file and the readers (info,
 * summarize, resume): one lock around the non-thread-safe library, typed attributes,
 * text datasets, extendible datasets that grow by rows, and fl_state <-> file. */
#ifndef FL_H5IO_H
#define FL_H5IO_H

#include <stdint.h>

#include <hdf5.h>

#include "core/state.h"
#include "core/status.h"

/* Debian's libhdf5 is built without thread safety: every HDF5 call in fifolab happens
 * with this (recursive) lock held. The first call also turns off HDF5's own error
 * printing; failures come back as fl_status with a message naming the file and object. */
void fl_h5_lock(void);
void fl_h5_unlock(void);

/* Attributes on any object (file, group, dataset); an existing one is replaced. The writers
 * need the object not to be in SWMR-write mode. */
fl_status fl_h5_attr_str(hid_t obj, const char *name, const char *value, fl_error *err);
fl_status fl_h5_attr_i64(hid_t obj, const char *name, int64_t value, fl_error *err);
fl_status fl_h5_attr_f64(hid_t obj, const char *name, double value, fl_error *err);
/* A fixed-size string attribute (value clipped to size bytes, NUL-padded): an existing one
 * of that size is overwritten in place, which SWMR-write mode allows. Numbers written to an
 * existing attribute are overwritten in place too. */
fl_status fl_h5_attr_str_fixed(hid_t obj, const char *name, const char *value, size_t size,
                               fl_error *err);
/* Readers: FL_E_FORMAT when absent or of another class. Strings are clipped to size. */
fl_status fl_h5_get_attr_str(hid_t obj, const char *name, char *buf, size_t size, fl_error *err);
fl_status fl_h5_get_attr_i64(hid_t obj, const char *name, int64_t *value, fl_error *err);
fl_status fl_h5_get_attr_f64(hid_t obj, const char *name, double *value, fl_error *err);

/* A scalar variable-length UTF-8 string dataset (h5py: ds[()].decode()). */
fl_status fl_h5_write_text(hid_t loc, const char *name, const char *text, fl_error *err);
/* Reads one back; *out is malloc'd (caller frees). */
fl_status fl_h5_read_text(hid_t loc, const char *name, char **out, fl_error *err);

/* An extendible dataset of rows: shape [0, inner...] with maxshape [unlimited, inner...],
 * chunked by `chunk_rows` rows, shuffle + gzip level `gzip` (0: none). rank = 1 + ninner. */
fl_status fl_h5_create_rows(hid_t loc, const char *name, hid_t type, int ninner,
                            const int64_t *inner, int64_t chunk_rows, int gzip, hid_t *out,
                            fl_error *err);
/* Rows in a dataset (its first dimension). */
int64_t fl_h5_rows(hid_t dset);
/* Writes `count` rows at row `first`, growing the dataset to at least first + count rows
 * (first may be below the current length: rows are overwritten). mem_type describes data. */
fl_status fl_h5_write_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count,
                           const void *data, fl_error *err);
/* Reads rows [first, first + count) into data. */
fl_status fl_h5_read_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count, void *data,
                          fl_error *err);

/* Writes every entry of st as a dataset at the root of a new file `path`, with attributes
 * `attrs` (NULL-terminated name/value string pairs, may be NULL), by write-then-rename:
 * path.tmp is written, flushed to disk (fsync), renamed over path, and the directory
 * synced, so `path` is always either the old complete state or the new one. */
fl_status fl_state_save_file(const fl_state *st, const char *path, const char *const *attrs,
                             fl_error *err);
/* Reads such a file into a new state (*out, free with fl_state_free). */
fl_status fl_state_load_file(const char *path, fl_state **out, fl_error *err);

/* fsync of a file (by path) and of the directory holding it. */
fl_status fl_fsync_path(const char *path, fl_error *err);
fl_status fl_fsync_dir_of(const char *path, fl_error *err);

#endif
