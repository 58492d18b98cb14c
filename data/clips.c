/* Clip datasets in memory and in HDF5 (data/clips.h; layout in docs/data.md). */
#include "data/clips.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/h5io.h"

fl_status fl_clips_alloc(int window, int height, int width, int64_t nframes, int64_t nvideos,
                         int64_t nclips, int ncaptions, fl_clips **out, fl_error *err)
{
    *out = NULL;
    if (window < 1 || window > FL_CLIPS_MAX_WINDOW || height < 1 || height > FL_CLIPS_MAX_SIDE ||
        width < 1 || width > FL_CLIPS_MAX_SIDE || nframes < 1 || nvideos < 1 || nclips < 0 ||
        ncaptions < 1)
        return fl_error_set(err, FL_E_INVALID,
                            "clips: invalid sizes (window %d, %dx%d, %lld frames, %lld videos, "
                            "%lld clips, %d captions)",
                            window, height, width, (long long)nframes, (long long)nvideos,
                            (long long)nclips, ncaptions);
    size_t fbytes = (size_t)height * (size_t)width * 3;
    if ((uint64_t)nframes > (uint64_t)SIZE_MAX / fbytes / 2)
        return fl_error_set(err, FL_E_RANGE, "clips: %lld frames of %dx%d do not fit in memory",
                            (long long)nframes, height, width);
    fl_clips *c = calloc(1, sizeof *c);
    if (!c)
        return fl_error_set(err, FL_E_NOMEM, "clips: out of memory");
    c->window = window;
    c->height = height;
    c->width = width;
    c->nframes = nframes;
    c->nvideos = nvideos;
    c->nclips = nclips;
    c->ncaptions = ncaptions;
    c->frames = calloc((size_t)nframes, fbytes);
    c->frame_caption = calloc((size_t)nframes, sizeof *c->frame_caption);
    c->video_first = calloc((size_t)nvideos, sizeof *c->video_first);
    c->video_len = calloc((size_t)nvideos, sizeof *c->video_len);
    c->clip_first = calloc(nclips ? (size_t)nclips : 1, sizeof *c->clip_first);
    c->clip_caption = calloc(nclips ? (size_t)nclips : 1, sizeof *c->clip_caption);
    c->captions = calloc((size_t)ncaptions, sizeof *c->captions);
    if (!c->frames || !c->frame_caption || !c->video_first || !c->video_len || !c->clip_first ||
        !c->clip_caption || !c->captions) {
        fl_clips_free(c);
        return fl_error_set(err, FL_E_NOMEM, "clips: out of memory for %lld frames of %dx%d",
                            (long long)nframes, height, width);
    }
    *out = c;
    return FL_OK;
}

void fl_clips_free(fl_clips *c)
{
    if (!c)
        return;
    if (c->captions)
        for (int i = 0; i < c->ncaptions; i++)
            free(c->captions[i]);
    free(c->captions);
    free(c->frames);
    free(c->frame_caption);
    free(c->video_first);
    free(c->video_len);
    free(c->clip_first);
    free(c->clip_caption);
    free(c->generator);
    free(c);
}

/* The video holding frame t (videos tile the frames in order, checked first). */
static int64_t video_of(const fl_clips *c, int64_t t)
{
    int64_t lo = 0, hi = c->nvideos - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (c->video_first[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

fl_status fl_clips_check(const fl_clips *c, fl_error *err)
{
    for (int k = 0; k < c->ncaptions; k++)
        if (!c->captions[k])
            return fl_error_set(err, FL_E_FORMAT, "captions[%d]: missing", k);
    for (int64_t t = 0; t < c->nframes; t++)
        if (c->frame_caption[t] < 0 || c->frame_caption[t] >= c->ncaptions)
            return fl_error_set(err, FL_E_FORMAT,
                                "frame_caption[%lld]: %d is not a caption id (0..%d)", (long long)t,
                                (int)c->frame_caption[t], c->ncaptions - 1);
    int64_t next = 0;
    for (int64_t v = 0; v < c->nvideos; v++) {
        if (c->video_first[v] != next || c->video_len[v] < 1 ||
            c->video_len[v] > c->nframes - next)
            return fl_error_set(err, FL_E_FORMAT,
                                "videos[%lld]: first frame %lld, %lld frames: videos must tile "
                                "the %lld frames in order (expected first frame %lld)",
                                (long long)v, (long long)c->video_first[v],
                                (long long)c->video_len[v], (long long)c->nframes,
                                (long long)next);
        next += c->video_len[v];
    }
    if (next != c->nframes)
        return fl_error_set(err, FL_E_FORMAT, "videos: they hold %lld frames of %lld",
                            (long long)next, (long long)c->nframes);
    if (c->nclips < 1)
        return fl_error_set(err, FL_E_FORMAT, "clip_first: no clips");
    for (int64_t i = 0; i < c->nclips; i++) {
        int64_t t = c->clip_first[i];
        if (t < 0 || t >= c->nframes)
            return fl_error_set(err, FL_E_FORMAT, "clip_first[%lld]: frame %lld is not in 0..%lld",
                                (long long)i, (long long)t, (long long)c->nframes - 1);
        int64_t v = video_of(c, t);
        if (t + c->window > c->video_first[v] + c->video_len[v])
            return fl_error_set(err, FL_E_FORMAT,
                                "clip_first[%lld]: a clip of %d frames from frame %lld runs past "
                                "the end of video %lld (frames %lld..%lld)",
                                (long long)i, c->window, (long long)t, (long long)v,
                                (long long)c->video_first[v],
                                (long long)(c->video_first[v] + c->video_len[v] - 1));
        if (c->clip_caption[i] < 0 || c->clip_caption[i] >= c->ncaptions)
            return fl_error_set(err, FL_E_FORMAT, "clip_caption[%lld]: %d is not a caption id",
                                (long long)i, (int)c->clip_caption[i]);
    }
    return FL_OK;
}

int64_t fl_clips_count_offsets(const fl_clips *c)
{
    int64_t n = 0;
    for (int64_t v = 0; v < c->nvideos; v++)
        if (c->video_len[v] >= c->window)
            n += c->video_len[v] - c->window + 1;
    return n;
}

void fl_clips_fill_offsets(fl_clips *c)
{
    int64_t i = 0;
    for (int64_t v = 0; v < c->nvideos; v++)
        for (int64_t o = 0; o + c->window <= c->video_len[v]; o++, i++) {
            c->clip_first[i] = c->video_first[v] + o;
            c->clip_caption[i] = c->frame_caption[c->clip_first[i] + c->window / 2];
        }
    FL_ASSERT(i == c->nclips);
}

int32_t fl_clips_find_caption(const fl_clips *c, const char *text)
{
    for (int k = 0; k < c->ncaptions; k++)
        if (c->captions[k] && text && !strcmp(c->captions[k], text))
            return k;
    return -1;
}

/* ---- HDF5 ---------------------------------------------------------------------------- */

/* Every function below is called with fl_h5_lock() held. */

static hid_t vlen_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* A dataset of `rank` dims written in one go; chunked with shuffle + gzip when chunk0 > 0
 * (chunk0 rows of the first dim). */
static int write_array(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank,
                       const hsize_t *dims, hsize_t chunk0, const void *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int ok = sp >= 0 && dcpl >= 0;
    if (ok && chunk0 > 0) {
        hsize_t chunk[8];
        for (int i = 0; i < rank; i++)
            chunk[i] = dims[i];
        chunk[0] = chunk0 < dims[0] ? chunk0 : dims[0];
        ok = H5Pset_chunk(dcpl, rank, chunk) >= 0 && H5Pset_shuffle(dcpl) >= 0 &&
             H5Pset_deflate(dcpl, 4) >= 0;
    }
    hid_t d = ok ? H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    ok = d >= 0 && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
    if (d >= 0)
        H5Dclose(d);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (sp >= 0)
        H5Sclose(sp);
    return ok;
}

static fl_status write_locked(const fl_clips *c, const char *tmp, const char *path, fl_error *err)
{
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        return fl_error_set(err, FL_E_IO, "%s: cannot create the file", tmp);
    fl_status st = FL_OK;
    const char *what = NULL;
    hsize_t fdims[4] = { (hsize_t)c->nframes, (hsize_t)c->height, (hsize_t)c->width, 3 };
    hsize_t tdim = (hsize_t)c->nframes, vdim = (hsize_t)c->nvideos, ndim = (hsize_t)c->nclips,
            kdim = (hsize_t)c->ncaptions;
    hid_t stype = vlen_str_type();
    if (!write_array(f, "frames", H5T_STD_U8LE, H5T_NATIVE_UINT8, 4, fdims, 16, c->frames))
        what = "/frames";
    else if (!write_array(f, "frame_caption", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &tdim, 0,
                          c->frame_caption))
        what = "/frame_caption";
    else if (!write_array(f, "video_first", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &vdim, 0,
                          c->video_first) ||
             !write_array(f, "video_len", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &vdim, 0,
                          c->video_len))
        what = "/video_first, /video_len";
    else if (!write_array(f, "clip_first", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &ndim, 0,
                          c->clip_first) ||
             !write_array(f, "clip_caption", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &ndim, 0,
                          c->clip_caption))
        what = "/clip_first, /clip_caption";
    else if (stype < 0 || !write_array(f, "captions", stype, stype, 1, &kdim, 0, c->captions))
        what = "/captions";
    if (stype >= 0)
        H5Tclose(stype);
    if (what)
        st = fl_error_set(err, FL_E_IO, "%s: cannot write %s", path, what);
    if (!st &&
        ((st = fl_h5_attr_str(f, "format", FL_CLIPS_FORMAT, err)) ||
         (st = fl_h5_attr_i64(f, "format_version", FL_CLIPS_FORMAT_VERSION, err)) ||
         (st = fl_h5_attr_i64(f, "window", c->window, err)) ||
         (st = fl_h5_attr_i64(f, "height", c->height, err)) ||
         (st = fl_h5_attr_i64(f, "width", c->width, err)) ||
         (st = fl_h5_attr_i64(f, "channels", 3, err)) ||
         (st = fl_h5_attr_i64(f, "seed", (int64_t)c->seed, err)) ||
         (st = fl_h5_attr_str(f, "generator", c->generator ? c->generator : "", err))))
        fl_error_prefix(err, "%s", path);
    if (H5Fclose(f) < 0 && !st)
        st = fl_error_set(err, FL_E_IO, "%s: cannot close the file", tmp);
    return st;
}

fl_status fl_clips_write(const fl_clips *c, const char *path, fl_error *err)
{
    fl_status st = fl_clips_check(c, err);
    if (st)
        return fl_error_prefix(err, "%s: refusing to write an inconsistent dataset", path);
    /* a temporary name of this process's own: concurrent makers (array tasks) never share it */
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp)
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", path);
    snprintf(tmp, len, "%s.%ld.tmp", path, (long)getpid());
    fl_h5_lock();
    st = write_locked(c, tmp, path, err);
    fl_h5_unlock();
    if (!st && rename(tmp, path) != 0)
        st = fl_error_set(err, FL_E_IO, "%s: cannot rename %s over it", path, tmp);
    if (st)
        remove(tmp);
    free(tmp);
    return st;
}

/* The dims of dataset `name` (rank must be `rank`); 0 on success. */
static int dims_of(hid_t f, const char *name, int rank, hsize_t *dims, hid_t *dset)
{
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return -1;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hid_t sp = H5Dget_space(d);
    int r = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (r != rank || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        if (sp >= 0)
            H5Sclose(sp);
        H5Dclose(d);
        return -1;
    }
    H5Sclose(sp);
    *dset = d;
    return 0;
}

/* Reads 1-D dataset `name` of exactly n entries as mtype into buf. */
static fl_status read_1d(hid_t f, const char *path, const char *name, hid_t mtype, int64_t n,
                         void *buf, fl_error *err)
{
    hsize_t dim;
    hid_t d;
    if (dims_of(f, name, 1, &dim, &d))
        return fl_error_set(err, FL_E_FORMAT, "%s: /%s missing or not 1-D", path, name);
    fl_status st = FL_OK;
    if ((int64_t)dim != n)
        st = fl_error_set(err, FL_E_FORMAT, "%s: /%s has %llu entries, expected %lld", path, name,
                          (unsigned long long)dim, (long long)n);
    else if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        st = fl_error_set(err, FL_E_FORMAT, "%s: cannot read /%s", path, name);
    H5Dclose(d);
    return st;
}

static fl_status read_locked(hid_t f, const char *path, fl_clips **out, fl_error *err)
{
    char fmt[64];
    int64_t version, window, height, width, channels, seed = 0;
    fl_status st;
    if ((st = fl_h5_get_attr_str(f, "format", fmt, sizeof fmt, err)) || strcmp(fmt, FL_CLIPS_FORMAT))
        return fl_error_set(err, FL_E_FORMAT, "%s: not a clip dataset (attribute format is not \"%s\")",
                            path, FL_CLIPS_FORMAT);
    if ((st = fl_h5_get_attr_i64(f, "format_version", &version, err)) ||
        (st = fl_h5_get_attr_i64(f, "window", &window, err)) ||
        (st = fl_h5_get_attr_i64(f, "height", &height, err)) ||
        (st = fl_h5_get_attr_i64(f, "width", &width, err)) ||
        (st = fl_h5_get_attr_i64(f, "channels", &channels, err)))
        return fl_error_prefix(err, "%s", path);
    if (version != FL_CLIPS_FORMAT_VERSION)
        return fl_error_set(err, FL_E_FORMAT, "%s: format_version %lld, this build reads %d", path,
                            (long long)version, FL_CLIPS_FORMAT_VERSION);
    if (channels != 3 || window < 1 || window > FL_CLIPS_MAX_WINDOW || height < 1 ||
        height > FL_CLIPS_MAX_SIDE || width < 1 || width > FL_CLIPS_MAX_SIDE)
        return fl_error_set(err, FL_E_FORMAT,
                            "%s: unsupported window %lld, size %lldx%lld, channels %lld", path,
                            (long long)window, (long long)height, (long long)width,
                            (long long)channels);
    if (H5Aexists(f, "seed") > 0)
        fl_h5_get_attr_i64(f, "seed", &seed, NULL);
    hsize_t fd[4], vd, nd, kd;
    hid_t dfr, d;
    if (dims_of(f, "frames", 4, fd, &dfr))
        return fl_error_set(err, FL_E_FORMAT, "%s: /frames missing or not [T, H, W, 3]", path);
    if (fd[1] != (hsize_t)height || fd[2] != (hsize_t)width || fd[3] != 3 || fd[0] < 1) {
        H5Dclose(dfr);
        return fl_error_set(err, FL_E_FORMAT,
                            "%s: /frames is [%llu, %llu, %llu, %llu], expected [T, %lld, %lld, 3]",
                            path, (unsigned long long)fd[0], (unsigned long long)fd[1],
                            (unsigned long long)fd[2], (unsigned long long)fd[3],
                            (long long)height, (long long)width);
    }
    int ok = !dims_of(f, "video_first", 1, &vd, &d);
    if (ok)
        H5Dclose(d);
    ok = ok && !dims_of(f, "clip_first", 1, &nd, &d);
    if (ok)
        H5Dclose(d);
    ok = ok && !dims_of(f, "captions", 1, &kd, &d);
    if (ok)
        H5Dclose(d);
    if (!ok || kd < 1 || kd > INT32_MAX || vd < 1) {
        H5Dclose(dfr);
        return fl_error_set(err, FL_E_FORMAT,
                            "%s: /video_first, /clip_first or /captions missing or empty", path);
    }
    fl_clips *c;
    if ((st = fl_clips_alloc((int)window, (int)height, (int)width, (int64_t)fd[0], (int64_t)vd,
                             (int64_t)nd, (int)kd, &c, err))) {
        H5Dclose(dfr);
        return fl_error_prefix(err, "%s", path);
    }
    c->seed = (uint64_t)seed;
    if (H5Dread(dfr, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->frames) < 0)
        st = fl_error_set(err, FL_E_FORMAT, "%s: cannot read /frames", path);
    H5Dclose(dfr);
    if (!st)
        (void)((st = read_1d(f, path, "frame_caption", H5T_NATIVE_INT32, c->nframes,
                             c->frame_caption, err)) ||
               (st = read_1d(f, path, "video_first", H5T_NATIVE_INT64, c->nvideos, c->video_first,
                             err)) ||
               (st = read_1d(f, path, "video_len", H5T_NATIVE_INT64, c->nvideos, c->video_len,
                             err)) ||
               (st = read_1d(f, path, "clip_first", H5T_NATIVE_INT64, c->nclips, c->clip_first,
                             err)) ||
               (st = read_1d(f, path, "clip_caption", H5T_NATIVE_INT32, c->nclips,
                             c->clip_caption, err)));
    if (!st) {
        hid_t stype = vlen_str_type();
        char **raw = calloc((size_t)c->ncaptions, sizeof *raw);
        hid_t dc = raw && stype >= 0 ? H5Dopen2(f, "captions", H5P_DEFAULT) : -1;
        if (!raw) {
            st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory for %d captions", path, c->ncaptions);
        } else if (dc < 0 || H5Dread(dc, stype, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) {
            st = fl_error_set(err, FL_E_FORMAT, "%s: cannot read /captions as strings", path);
        } else {
            for (int k = 0; k < c->ncaptions && !st; k++) {
                size_t len = raw[k] ? strlen(raw[k]) : 0;
                if (len > FL_CLIPS_MAX_CAPTION)
                    st = fl_error_set(err, FL_E_FORMAT, "%s: /captions[%d] is over %d bytes", path,
                                      k, FL_CLIPS_MAX_CAPTION);
                else if (!(c->captions[k] = malloc(len + 1)))
                    st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory", path);
                else
                    memcpy(c->captions[k], raw[k] ? raw[k] : "", len + 1);
            }
            hid_t sp = H5Dget_space(dc);
            H5Dvlen_reclaim(stype, sp, H5P_DEFAULT, raw);
            H5Sclose(sp);
        }
        if (dc >= 0)
            H5Dclose(dc);
        if (stype >= 0)
            H5Tclose(stype);
        free(raw);
    }
    if (!st && H5Aexists(f, "generator") > 0) {
        char gen[1024];
        if (fl_h5_get_attr_str(f, "generator", gen, sizeof gen, NULL) == FL_OK &&
            !(c->generator = strdup(gen)))
            st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory for the generator text", path);
    }
    if (!st && (st = fl_clips_check(c, err)))
        fl_error_prefix(err, "%s", path);
    if (st) {
        fl_clips_free(c);
        return st;
    }
    *out = c;
    return FL_OK;
}

fl_status fl_clips_read(const char *path, fl_clips **out, fl_error *err)
{
    *out = NULL;
    fl_h5_lock();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    fl_status st;
    if (f < 0) {
        st = fl_error_set(err, FL_E_IO, "%s: cannot open as HDF5", path);
    } else {
        st = read_locked(f, path, out, err);
        H5Fclose(f);
    }
    fl_h5_unlock();
    return st;
}
