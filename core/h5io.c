/* The HDF5 helpers of core/h5io.h. */
#include "core/h5io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t h5_mutex;
static pthread_once_t h5_once = PTHREAD_ONCE_INIT;

static void h5_init(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&h5_mutex, &a);
    pthread_mutexattr_destroy(&a);
    /* After a failed write (a full disk) HDF5 may hold a file it cannot close; its exit
     * handler would then crash trying again. The process exiting releases everything. */
    H5dont_atexit();
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void fl_h5_lock(void)
{
    pthread_once(&h5_once, h5_init);
    pthread_mutex_lock(&h5_mutex);
}

void fl_h5_unlock(void)
{
    pthread_mutex_unlock(&h5_mutex);
}

static fl_status attr_write(hid_t obj, const char *name, hid_t type, const void *v, fl_error *err)
{
    fl_status st = FL_OK;
    fl_h5_lock();
    int same_type = 0;
    if (H5Aexists(obj, name) > 0 && H5Tget_class(type) != H5T_STRING) {
        hid_t a = H5Aopen(obj, name, H5P_DEFAULT), ft = a < 0 ? -1 : H5Aget_type(a);
        hid_t nt = ft < 0 ? -1 : H5Tget_native_type(ft, H5T_DIR_ASCEND);
        same_type = nt >= 0 && H5Tequal(nt, type) > 0;
        if (nt >= 0)
            H5Tclose(nt);
        if (ft >= 0)
            H5Tclose(ft);
        if (a >= 0)
            H5Aclose(a);
    }
    if (same_type) {
        /* overwrite in place: allowed in SWMR-write mode, where creating is not (an
         * attribute of another type is replaced below, which SWMR writing refuses) */
        hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, type, v) < 0)
            st = fl_error_set(err, FL_E_IO, "attribute %s: cannot write", name);
        if (a >= 0)
            H5Aclose(a);
        fl_h5_unlock();
        return st;
    }
    if (H5Aexists(obj, name) > 0)
        H5Adelete(obj, name);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(obj, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Awrite(a, type, v) < 0)
        st = fl_error_set(err, FL_E_IO, "attribute %s: cannot write", name);
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    fl_h5_unlock();
    return st;
}

static hid_t str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

fl_status fl_h5_attr_str(hid_t obj, const char *name, const char *value, fl_error *err)
{
    fl_h5_lock();
    hid_t t = str_type();
    fl_status st = attr_write(obj, name, t, &value, err);
    H5Tclose(t);
    fl_h5_unlock();
    return st;
}

fl_status fl_h5_attr_str_fixed(hid_t obj, const char *name, const char *value, size_t size,
                               fl_error *err)
{
    char *buf = calloc(size + 1, 1);
    if (!buf)
        return fl_error_set(err, FL_E_NOMEM, "attribute %s", name);
    snprintf(buf, size + 1, "%s", value);
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, size);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    if (H5Aexists(obj, name) > 0) {
        hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
        hid_t ft = a < 0 ? -1 : H5Aget_type(a);
        if (ft < 0 || H5Tis_variable_str(ft) > 0 || H5Tget_size(ft) != size || H5Awrite(a, t, buf) < 0)
            st = fl_error_set(err, FL_E_IO, "attribute %s: cannot overwrite", name);
        if (ft >= 0)
            H5Tclose(ft);
        if (a >= 0)
            H5Aclose(a);
    } else {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, t, buf) < 0)
            st = fl_error_set(err, FL_E_IO, "attribute %s: cannot write", name);
        if (a >= 0)
            H5Aclose(a);
        H5Sclose(sp);
    }
    H5Tclose(t);
    fl_h5_unlock();
    free(buf);
    return st;
}

fl_status fl_h5_attr_i64(hid_t obj, const char *name, int64_t value, fl_error *err)
{
    return attr_write(obj, name, H5T_NATIVE_INT64, &value, err);
}

fl_status fl_h5_attr_f64(hid_t obj, const char *name, double value, fl_error *err)
{
    return attr_write(obj, name, H5T_NATIVE_DOUBLE, &value, err);
}

static fl_status attr_open(hid_t obj, const char *name, H5T_class_t cls, hid_t *a, fl_error *err)
{
    if (H5Aexists(obj, name) <= 0)
        return fl_error_set(err, FL_E_FORMAT, "attribute %s: missing", name);
    *a = H5Aopen(obj, name, H5P_DEFAULT);
    if (*a < 0)
        return fl_error_set(err, FL_E_FORMAT, "attribute %s: cannot open", name);
    hid_t t = H5Aget_type(*a);
    H5T_class_t c = H5Tget_class(t);
    H5Tclose(t);
    if (c != cls) {
        H5Aclose(*a);
        return fl_error_set(err, FL_E_FORMAT, "attribute %s: unexpected type", name);
    }
    return FL_OK;
}

fl_status fl_h5_get_attr_str(hid_t obj, const char *name, char *buf, size_t size, fl_error *err)
{
    fl_h5_lock();
    hid_t a;
    fl_status st = attr_open(obj, name, H5T_STRING, &a, err);
    if (!st) {
        hid_t ft = H5Aget_type(a);
        if (H5Tis_variable_str(ft) > 0) {
            hid_t t = str_type();
            char *s = NULL;
            if (H5Aread(a, t, &s) < 0 || !s)
                st = fl_error_set(err, FL_E_FORMAT, "attribute %s: cannot read", name);
            else
                snprintf(buf, size, "%s", s);
            if (s)
                H5free_memory(s);
            H5Tclose(t);
        } else {
            size_t n = H5Tget_size(ft);
            char *tmp = calloc(n + 1, 1);
            if (!tmp)
                st = fl_error_set(err, FL_E_NOMEM, "attribute %s: out of memory for %zu bytes", name, n + 1);
            else if (H5Aread(a, ft, tmp) < 0)
                st = fl_error_set(err, FL_E_FORMAT, "attribute %s: cannot read", name);
            else
                snprintf(buf, size, "%s", tmp);
            free(tmp);
        }
        H5Tclose(ft);
        H5Aclose(a);
    }
    fl_h5_unlock();
    return st;
}

static fl_status get_attr_num(hid_t obj, const char *name, H5T_class_t cls, hid_t mem_type,
                              void *value, fl_error *err)
{
    fl_h5_lock();
    hid_t a;
    fl_status st = attr_open(obj, name, cls, &a, err);
    if (!st) {
        if (H5Aread(a, mem_type, value) < 0)
            st = fl_error_set(err, FL_E_FORMAT, "attribute %s: cannot read", name);
        H5Aclose(a);
    }
    fl_h5_unlock();
    return st;
}

fl_status fl_h5_get_attr_i64(hid_t obj, const char *name, int64_t *value, fl_error *err)
{
    return get_attr_num(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, value, err);
}

fl_status fl_h5_get_attr_f64(hid_t obj, const char *name, double *value, fl_error *err)
{
    return get_attr_num(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, value, err);
}

fl_status fl_h5_write_text(hid_t loc, const char *name, const char *text, fl_error *err)
{
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t t = str_type(), sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0 || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &text) < 0)
        st = fl_error_set(err, FL_E_IO, "dataset %s: cannot write", name);
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    fl_h5_unlock();
    return st;
}

fl_status fl_h5_read_text(hid_t loc, const char *name, char **out, fl_error *err)
{
    *out = NULL;
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t d = H5Lexists(loc, name, H5P_DEFAULT) > 0 ? H5Dopen2(loc, name, H5P_DEFAULT) : -1;
    if (d < 0) {
        fl_h5_unlock();
        return fl_error_set(err, FL_E_FORMAT, "dataset %s: missing", name);
    }
    hid_t ft = H5Dget_type(d);
    if (H5Tget_class(ft) != H5T_STRING) {
        st = fl_error_set(err, FL_E_FORMAT, "dataset %s: not a string", name);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t t = str_type();
        char *s = NULL;
        if (H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s) < 0 || !s)
            st = fl_error_set(err, FL_E_FORMAT, "dataset %s: cannot read", name);
        else if (!(*out = strdup(s)))
            st = fl_error_set(err, FL_E_NOMEM, "dataset %s", name);
        if (s)
            H5free_memory(s);
        H5Tclose(t);
    } else {
        size_t n = H5Tget_size(ft);
        *out = calloc(n + 1, 1);
        if (!*out) {
            st = fl_error_set(err, FL_E_NOMEM, "dataset %s: out of memory for %zu bytes", name, n + 1);
        } else if (H5Dread(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) {
            free(*out);
            *out = NULL;
            st = fl_error_set(err, FL_E_FORMAT, "dataset %s: cannot read", name);
        }
    }
    H5Tclose(ft);
    H5Dclose(d);
    fl_h5_unlock();
    return st;
}

#define MAX_RANK 8

fl_status fl_h5_create_rows(hid_t loc, const char *name, hid_t type, int ninner,
                            const int64_t *inner, int64_t chunk_rows, int gzip, hid_t *out,
                            fl_error *err)
{
    if (ninner < 0 || ninner + 1 > MAX_RANK || chunk_rows < 1)
        return fl_error_set(err, FL_E_INVALID, "dataset %s: bad shape", name);
    hsize_t dims[MAX_RANK], maxd[MAX_RANK], chunk[MAX_RANK];
    dims[0] = 0;
    maxd[0] = H5S_UNLIMITED;
    chunk[0] = (hsize_t)chunk_rows;
    for (int i = 0; i < ninner; i++)
        dims[i + 1] = maxd[i + 1] = chunk[i + 1] = (hsize_t)inner[i];
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t sp = H5Screate_simple(ninner + 1, dims, maxd);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, ninner + 1, chunk);
    if (gzip > 0) {
        H5Pset_shuffle(pl);
        H5Pset_deflate(pl, (unsigned)gzip);
    }
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    *out = H5Dcreate2(loc, name, type, sp, lcpl, pl, H5P_DEFAULT);
    if (*out < 0)
        st = fl_error_set(err, FL_E_IO, "dataset %s: cannot create", name);
    H5Pclose(lcpl);
    H5Pclose(pl);
    H5Sclose(sp);
    fl_h5_unlock();
    return st;
}

int64_t fl_h5_rows(hid_t dset)
{
    fl_h5_lock();
    hid_t sp = H5Dget_space(dset);
    hsize_t dims[MAX_RANK] = { 0 };
    int r = sp < 0 ? -1 : H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0)
        H5Sclose(sp);
    fl_h5_unlock();
    return r < 1 ? (r == 0 ? 1 : -1) : (int64_t)dims[0];
}

/* The file and memory spaces for rows [first, first + count) of dset. */
static int row_spaces(hid_t dset, int64_t first, int64_t count, hid_t *fsp, hid_t *msp)
{
    *fsp = H5Dget_space(dset);
    hsize_t dims[MAX_RANK], start[MAX_RANK] = { 0 }, cnt[MAX_RANK];
    int r = *fsp < 0 ? -1 : H5Sget_simple_extent_dims(*fsp, dims, NULL);
    if (r < 1)
        return -1;
    for (int i = 0; i < r; i++)
        cnt[i] = dims[i];
    start[0] = (hsize_t)first;
    cnt[0] = (hsize_t)count;
    if (H5Sselect_hyperslab(*fsp, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0)
        return -1;
    *msp = H5Screate_simple(r, cnt, NULL);
    return *msp < 0 ? -1 : 0;
}

fl_status fl_h5_write_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count,
                           const void *data, fl_error *err)
{
    if (count <= 0)
        return FL_OK;
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t fsp = -1, msp = -1;
    hid_t sp = H5Dget_space(dset);
    hsize_t dims[MAX_RANK];
    int r = sp < 0 ? -1 : H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0)
        H5Sclose(sp);
    if (r < 1) {
        st = fl_error_set(err, FL_E_IO, "dataset: cannot read its shape");
        goto done;
    }
    if (dims[0] < (hsize_t)(first + count)) {
        dims[0] = (hsize_t)(first + count);
        if (H5Dset_extent(dset, dims) < 0) {
            st = fl_error_set(err, FL_E_IO, "dataset: cannot grow to %lld rows", (long long)(first + count));
            goto done;
        }
    }
    if (row_spaces(dset, first, count, &fsp, &msp) < 0 ||
        H5Dwrite(dset, mem_type, msp, fsp, H5P_DEFAULT, data) < 0)
        st = fl_error_set(err, FL_E_IO, "dataset: cannot write rows [%lld, %lld)", (long long)first,
                          (long long)(first + count));
done:
    if (fsp >= 0)
        H5Sclose(fsp);
    if (msp >= 0)
        H5Sclose(msp);
    fl_h5_unlock();
    return st;
}

fl_status fl_h5_read_rows(hid_t dset, hid_t mem_type, int64_t first, int64_t count, void *data,
                          fl_error *err)
{
    if (count <= 0)
        return FL_OK;
    fl_h5_lock();
    fl_status st = FL_OK;
    hid_t fsp = -1, msp = -1;
    int64_t n = fl_h5_rows(dset);
    if (first < 0 || first + count > n)
        st = fl_error_set(err, FL_E_RANGE, "dataset: rows [%lld, %lld) beyond its %lld rows",
                          (long long)first, (long long)(first + count), (long long)n);
    else if (row_spaces(dset, first, count, &fsp, &msp) < 0 ||
             H5Dread(dset, mem_type, msp, fsp, H5P_DEFAULT, data) < 0)
        st = fl_error_set(err, FL_E_IO, "dataset: cannot read rows [%lld, %lld)", (long long)first,
                          (long long)(first + count));
    if (fsp >= 0)
        H5Sclose(fsp);
    if (msp >= 0)
        H5Sclose(msp);
    fl_h5_unlock();
    return st;
}

fl_status fl_fsync_path(const char *path, fl_error *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return fl_error_set(err, FL_E_IO, "%s: %s", path, strerror(errno));
    int bad = fsync(fd) != 0;
    close(fd);
    return bad ? fl_error_set(err, FL_E_IO, "%s: fsync: %s", path, strerror(errno)) : FL_OK;
}

fl_status fl_fsync_dir_of(const char *path, fl_error *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = 0;
    else
        snprintf(dir, sizeof dir, ".");
    return fl_fsync_path(dir, err);
}

static hid_t state_h5_type(fl_state_type t)
{
    switch (t) {
    case FL_STATE_U8: return H5T_NATIVE_UINT8;
    case FL_STATE_I32: return H5T_NATIVE_INT32;
    case FL_STATE_I64: return H5T_NATIVE_INT64;
    case FL_STATE_F32: return H5T_NATIVE_FLOAT;
    default: return H5T_NATIVE_DOUBLE;
    }
}

/* State names may hold '/': stored with '/' as '|' so every entry is one dataset at the
 * root (no intermediate groups to walk back). */
static void name_to_h5(const char *name, char *out, size_t size, char from, char to)
{
    snprintf(out, size, "%s", name);
    for (char *p = out; *p; p++)
        if (*p == from)
            *p = to;
}

fl_status fl_state_save_file(const fl_state *st, const char *path, const char *const *attrs,
                             fl_error *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fl_h5_lock();
    fl_status rc = FL_OK;
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fl_h5_unlock();
        return fl_error_set(err, FL_E_IO, "%s: cannot create (%s)", tmp, strerror(errno));
    }
    for (size_t i = 0; !rc && i < fl_state_len(st); i++) {
        fl_state_type t;
        const void *data;
        int64_t count;
        const char *name = fl_state_entry(st, i, &t, &data, &count);
        char h5name[FL_STATE_NAME_MAX + 1];
        name_to_h5(name, h5name, sizeof h5name, '/', '|');
        hsize_t dims[1] = { (hsize_t)count };
        hid_t sp = H5Screate_simple(1, dims, NULL);
        hid_t d = H5Dcreate2(f, h5name, state_h5_type(t), sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (d < 0 || (count > 0 && H5Dwrite(d, state_h5_type(t), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
            rc = fl_error_set(err, FL_E_IO, "%s: cannot write entry %s", tmp, name);
        if (d >= 0)
            H5Dclose(d);
        H5Sclose(sp);
    }
    for (size_t i = 0; !rc && attrs && attrs[i]; i += 2)
        if ((rc = fl_h5_attr_str(f, attrs[i], attrs[i + 1], err)))
            fl_error_prefix(err, "%s", tmp);
    if (H5Fclose(f) < 0 && !rc)
        rc = fl_error_set(err, FL_E_IO, "%s: cannot close (disk full?)", tmp);
    fl_h5_unlock();
    if (!rc)
        rc = fl_fsync_path(tmp, err);
    if (!rc && rename(tmp, path) != 0)
        rc = fl_error_set(err, FL_E_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (!rc)
        rc = fl_fsync_dir_of(path, err);
    if (rc)
        unlink(tmp);
    return rc;
}

typedef struct load_ctx {
    fl_state *st;
    fl_error *err;
    fl_status rc;
    const char *path;
} load_ctx;

static herr_t load_one(hid_t g, const char *h5name, const H5L_info_t *info, void *p)
{
    (void)info;
    load_ctx *c = p;
    char name[FL_STATE_NAME_MAX + 1];
    name_to_h5(h5name, name, sizeof name, '|', '/');
    hid_t d = H5Dopen2(g, h5name, H5P_DEFAULT);
    if (d < 0) {
        c->rc = fl_error_set(c->err, FL_E_FORMAT, "%s: %s is not a dataset", c->path, h5name);
        return -1;
    }
    hid_t ft = H5Dget_type(d), sp = H5Dget_space(d);
    H5T_class_t cls = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(ft) : H5T_SGN_NONE;
    fl_state_type t = cls == H5T_FLOAT ? (sz == 4 ? FL_STATE_F32 : FL_STATE_F64)
                      : sz == 1 && sign == H5T_SGN_NONE ? FL_STATE_U8
                      : sz == 4 ? FL_STATE_I32 : FL_STATE_I64;
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    void *buf = n > 0 ? malloc((size_t)n * fl_state_type_size(t)) : NULL;
    if ((cls != H5T_FLOAT && cls != H5T_INTEGER) || H5Sget_simple_extent_ndims(sp) != 1 || n < 0)
        c->rc = fl_error_set(c->err, FL_E_FORMAT, "%s: entry %s: not a 1-D numeric array", c->path, name);
    else if (n > 0 && !buf)
        c->rc = fl_error_set(c->err, FL_E_NOMEM, "%s: entry %s: out of memory for %lld values", c->path, name,
                             (long long)n);
    else if (n > 0 && H5Dread(d, state_h5_type(t), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        c->rc = fl_error_set(c->err, FL_E_FORMAT, "%s: entry %s: cannot read", c->path, name);
    else
        c->rc = fl_state_put(c->st, name, t, buf, (int64_t)n, c->err);
    free(buf);
    H5Sclose(sp);
    H5Tclose(ft);
    H5Dclose(d);
    return c->rc ? -1 : 0;
}

fl_status fl_state_load_file(const char *path, fl_state **out, fl_error *err)
{
    *out = NULL;
    fl_state *st = fl_state_new();
    if (!st)
        return fl_error_set(err, FL_E_NOMEM, "%s", path);
    fl_h5_lock();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fl_h5_unlock();
        fl_state_free(st);
        return fl_error_set(err, FL_E_IO, "%s: cannot open as HDF5", path);
    }
    load_ctx c = { st, err, FL_OK, path };
    if (H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, load_one, &c) < 0 && !c.rc)
        c.rc = fl_error_set(err, FL_E_FORMAT, "%s: cannot list its entries", path);
    H5Fclose(f);
    fl_h5_unlock();
    if (c.rc) {
        fl_state_free(st);
        return c.rc;
    }
    *out = st;
    return FL_OK;
}
