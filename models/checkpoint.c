/* The checkpoint collection: format dispatch, the table of named tensors the readers fill,
 * loading (views, gathers, dtype conversion), binding by name, and the listing. */
#include "models/checkpoint.h"
#include "models/checkpoint_reader.h"
#include "models/safetensors.h"
#include "models/torchzip.h"

#include "core/arena.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- dtypes ------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
    int fl; /* fl_dtype, or -1 */
} dtype_table[FL_CKPT_DTYPE_COUNT] = {
    [FL_CKPT_BOOL] = { "BOOL", 1, -1 },         [FL_CKPT_U8] = { "U8", 1, FL_U8 },
    [FL_CKPT_I8] = { "I8", 1, -1 },             [FL_CKPT_I16] = { "I16", 2, -1 },
    [FL_CKPT_U16] = { "U16", 2, -1 },           [FL_CKPT_I32] = { "I32", 4, FL_I32 },
    [FL_CKPT_U32] = { "U32", 4, -1 },           [FL_CKPT_I64] = { "I64", 8, FL_I64 },
    [FL_CKPT_U64] = { "U64", 8, -1 },           [FL_CKPT_F16] = { "F16", 2, FL_F16 },
    [FL_CKPT_BF16] = { "BF16", 2, FL_BF16 },    [FL_CKPT_F32] = { "F32", 4, FL_F32 },
    [FL_CKPT_F64] = { "F64", 8, FL_F64 },       [FL_CKPT_C64] = { "C64", 8, FL_C64 },
    [FL_CKPT_C128] = { "C128", 16, FL_C128 },   [FL_CKPT_F8_E4M3] = { "F8_E4M3", 1, -1 },
    [FL_CKPT_F8_E5M2] = { "F8_E5M2", 1, -1 },   [FL_CKPT_F8_E8M0] = { "F8_E8M0", 1, -1 },
};

const char *fl_ckpt_dtype_name(fl_ckpt_dtype t)
{
    return (unsigned)t < FL_CKPT_DTYPE_COUNT ? dtype_table[t].name : "?";
}

size_t fl_ckpt_dtype_size(fl_ckpt_dtype t)
{
    return (unsigned)t < FL_CKPT_DTYPE_COUNT ? dtype_table[t].size : 0;
}

int fl_ckpt_dtype_from_name(const char *name, fl_ckpt_dtype *out)
{
    for (int i = 0; i < FL_CKPT_DTYPE_COUNT; i++)
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (fl_ckpt_dtype)i;
            return 0;
        }
    return -1;
}

int fl_ckpt_dtype_to_fl(fl_ckpt_dtype t, fl_dtype *out)
{
    if ((unsigned)t >= FL_CKPT_DTYPE_COUNT || dtype_table[t].fl < 0)
        return -1;
    *out = (fl_dtype)dtype_table[t].fl;
    return 0;
}

/* ---- the collection ------------------------------------------------------------------ */

typedef struct blob {
    const char *name;
    size_t nbytes;
    fl_storage *st; /* NULL until fetched */
    fl_ckpt_fetch_fn fetch;
    void *ud;
    uint64_t tag;
} blob;

#define MAX_CLOSERS 4

struct fl_ckpt {
    const fl_allocator *alloc;
    fl_ckpt_options opt;
    fl_arena arena; /* names, metadata, path */
    const char *path;
    const char *format;
    fl_ckpt_tensor *t;
    size_t n, tcap;
    size_t *by_name; /* tensor indices sorted by name, made by finish() */
    blob *blobs;
    size_t nblobs, bcap;
    struct meta {
        const char *key, *value;
    } *meta;
    size_t nmeta, mcap;
    struct {
        void (*fn)(void *);
        void *ud;
    } closers[MAX_CLOSERS];
    int nclosers;
};

/* Grows *p (n elements of size `elem`, capacity *cap) to hold at least need. */
static int grow(const fl_allocator *a, void **p, size_t *cap, size_t n, size_t elem, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 16, bytes;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return -1;
        ncap *= 2;
    }
    if (fl_mul_overflows(ncap, elem, &bytes))
        return -1;
    void *q = fl_alloc(a, bytes);
    if (!q)
        return -1;
    if (n)
        memcpy(q, *p, n * elem);
    fl_free(a, *p, *cap * elem);
    *p = q;
    *cap = ncap;
    return 0;
}

char *fl_ckpt_strdup(fl_ckpt *c, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *d = fl_arena_alloc(&c->arena, len + 1, 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

const fl_ckpt_options *fl_ckpt_options_of(const fl_ckpt *c) { return &c->opt; }
const fl_allocator *fl_ckpt_alloc(const fl_ckpt *c) { return c->alloc; }
void fl_ckpt_set_format(fl_ckpt *c, const char *format) { c->format = format; }

fl_status fl_ckpt_add_blob(fl_ckpt *c, const char *name, size_t nbytes, fl_storage *st,
                           fl_ckpt_fetch_fn fetch, void *ud, uint64_t tag, size_t *index,
                           fl_error *err)
{
    FL_ASSERT(st || fetch);
    const char *nm = fl_ckpt_strdup(c, name, strlen(name));
    if (!nm || grow(c->alloc, (void **)&c->blobs, &c->bcap, c->nblobs, sizeof *c->blobs, c->nblobs + 1)) {
        fl_storage_release(st);
        return fl_error_set(err, FL_E_NOMEM, "out of memory recording blob '%s'", name);
    }
    blob b = { nm, nbytes, st, fetch, ud, tag };
    c->blobs[c->nblobs] = b;
    *index = c->nblobs++;
    return FL_OK;
}

const char *fl_ckpt_blob_name(const fl_ckpt *c, size_t i)
{
    return i < c->nblobs ? c->blobs[i].name : "?";
}

fl_status fl_ckpt_add_tensor(fl_ckpt *c, const char *name, fl_ckpt_dtype dtype, int ndim,
                             const int64_t *shape, const int64_t *stride, size_t blob_index,
                             uint64_t byte_offset, fl_error *err)
{
    FL_ASSERT(blob_index < c->nblobs);
    if (!name[0])
        return fl_error_set(err, FL_E_FORMAT, "a tensor has an empty name");
    size_t esz = fl_ckpt_dtype_size(dtype);
    if (!esz)
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': invalid dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > FL_CKPT_MAX_DIMS)
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': rank %d outside 0..%d", name, ndim,
                            FL_CKPT_MAX_DIMS);
    fl_ckpt_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dtype;
    t.ndim = ndim;
    int64_t numel = 1, expect = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] < 0)
            return fl_error_set(err, FL_E_FORMAT, "tensor '%s': size %" PRId64 " of dim %d is negative",
                                name, shape[i], i);
        if (stride && stride[i] < 0)
            return fl_error_set(err, FL_E_FORMAT, "tensor '%s': stride %" PRId64 " of dim %d is negative",
                                name, stride[i], i);
        t.shape[i] = shape[i];
        t.stride[i] = stride ? stride[i] : expect;
        if (__builtin_mul_overflow(numel, shape[i], &numel))
            return fl_error_set(err, FL_E_FORMAT, "tensor '%s': element count overflows", name);
        if (shape[i] > 0 && __builtin_mul_overflow(expect, shape[i], &expect))
            expect = INT64_MAX; /* only compared with strides below, which are smaller */
    }
    size_t nbytes;
    if ((uint64_t)numel > SIZE_MAX / esz || fl_mul_overflows((size_t)numel, esz, &nbytes))
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': byte size overflows", name);
    t.numel = numel;
    t.nbytes = nbytes;
    /* contiguous: strides equal the row-major ones on every dim of size > 1 */
    t.contiguous = true;
    int64_t run = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] != 1 && t.stride[i] != run)
            t.contiguous = false;
        if (shape[i] > 0 && __builtin_mul_overflow(run, shape[i], &run))
            run = INT64_MAX;
    }
    /* every element inside the blob */
    size_t bsize = c->blobs[blob_index].nbytes;
    if (byte_offset > bsize)
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': offset %" PRIu64 " is past the end of %s (%zu bytes)",
                            name, byte_offset, c->blobs[blob_index].name, bsize);
    if (numel > 0) {
        uint64_t last = 0, term, end;
        bool ovf = false;
        for (int i = 0; i < ndim; i++) {
            ovf |= __builtin_mul_overflow((uint64_t)(shape[i] - 1), (uint64_t)t.stride[i], &term);
            ovf |= __builtin_add_overflow(last, term, &last);
        }
        ovf |= __builtin_add_overflow(last, 1, &last);
        ovf |= __builtin_mul_overflow(last, (uint64_t)esz, &end);
        ovf |= __builtin_add_overflow(end, byte_offset, &end);
        if (ovf || end > bsize)
            return fl_error_set(err, FL_E_FORMAT,
                                "tensor '%s': its elements reach past the end of %s (%zu bytes)", name,
                                c->blobs[blob_index].name, bsize);
    }
    t.blob = blob_index;
    t.offset = byte_offset;
    t.name = fl_ckpt_strdup(c, name, strlen(name));
    if (!t.name || grow(c->alloc, (void **)&c->t, &c->tcap, c->n, sizeof *c->t, c->n + 1))
        return fl_error_set(err, FL_E_NOMEM, "out of memory recording tensor '%s'", name);
    c->t[c->n++] = t;
    return FL_OK;
}

fl_status fl_ckpt_add_meta(fl_ckpt *c, const char *key, const char *value, fl_error *err)
{
    const char *k = fl_ckpt_strdup(c, key, strlen(key));
    const char *v = k ? fl_ckpt_strdup(c, value, strlen(value)) : NULL;
    if (!v || grow(c->alloc, (void **)&c->meta, &c->mcap, c->nmeta, sizeof *c->meta, c->nmeta + 1))
        return fl_error_set(err, FL_E_NOMEM, "out of memory recording metadata '%s'", key);
    c->meta[c->nmeta].key = k;
    c->meta[c->nmeta].value = v;
    c->nmeta++;
    return FL_OK;
}

fl_status fl_ckpt_on_close(fl_ckpt *c, void (*fn)(void *ud), void *ud, fl_error *err)
{
    if (c->nclosers == MAX_CLOSERS) {
        fn(ud);
        return fl_error_set(err, FL_E_NOMEM, "too many reader states on one checkpoint");
    }
    c->closers[c->nclosers].fn = fn;
    c->closers[c->nclosers].ud = ud;
    c->nclosers++;
    return FL_OK;
}

static fl_status new_ckpt(fl_ckpt **out, const char *path, const fl_ckpt_options *opt, fl_error *err)
{
    const fl_allocator *a = opt && opt->alloc ? opt->alloc : fl_allocator_default();
    fl_ckpt *c = fl_alloc(a, sizeof *c);
    if (!c)
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", path);
    memset(c, 0, sizeof *c);
    c->alloc = a;
    if (opt)
        c->opt = *opt;
    c->opt.alloc = a;
    if (!c->opt.max_pickle_bytes)
        c->opt.max_pickle_bytes = (size_t)256 << 20;
    fl_arena_init(&c->arena, a, 64 << 10);
    c->format = "?";
    if (!(c->path = fl_ckpt_strdup(c, path, strlen(path))) ||
        (opt && opt->root && !(c->opt.root = fl_ckpt_strdup(c, opt->root, strlen(opt->root))))) {
        fl_ckpt_close(c);
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", path);
    }
    *out = c;
    return FL_OK;
}

void fl_ckpt_close(fl_ckpt *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nblobs; i++)
        fl_storage_release(c->blobs[i].st);
    for (int i = c->nclosers - 1; i >= 0; i--)
        c->closers[i].fn(c->closers[i].ud);
    const fl_allocator *a = c->alloc;
    fl_free(a, c->t, c->tcap * sizeof *c->t);
    fl_free(a, c->by_name, (c->n ? c->n : 1) * sizeof *c->by_name);
    fl_free(a, c->blobs, c->bcap * sizeof *c->blobs);
    fl_free(a, c->meta, c->mcap * sizeof *c->meta);
    fl_arena_free(&c->arena);
    fl_free(a, c, sizeof *c);
}

/* ---- finishing: the name index, duplicate names ------------------------------------- */

/* Heap sort of indices by name (qsort would need a global for the tensor table). */
static void sift(size_t *idx, size_t start, size_t end, const fl_ckpt_tensor *t)
{
    size_t root = start;
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= end)
            return;
        if (child + 1 < end && strcmp(t[idx[child]].name, t[idx[child + 1]].name) < 0)
            child++;
        if (strcmp(t[idx[root]].name, t[idx[child]].name) >= 0)
            return;
        size_t tmp = idx[root];
        idx[root] = idx[child];
        idx[child] = tmp;
        root = child;
    }
}

static void sort_names(size_t *idx, size_t n, const fl_ckpt_tensor *t)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(idx, i, n, t);
    for (size_t end = n; end-- > 1;) {
        size_t tmp = idx[0];
        idx[0] = idx[end];
        idx[end] = tmp;
        sift(idx, 0, end, t);
    }
}

static fl_status finish(fl_ckpt *c, fl_error *err)
{
    size_t bytes;
    if (fl_mul_overflows(c->n ? c->n : 1, sizeof *c->by_name, &bytes) || !(c->by_name = fl_alloc(c->alloc, bytes)))
        return fl_error_set(err, FL_E_NOMEM, "out of memory indexing %zu tensor names", c->n);
    for (size_t i = 0; i < c->n; i++)
        c->by_name[i] = i;
    sort_names(c->by_name, c->n, c->t);
    for (size_t i = 1; i < c->n; i++) {
        const fl_ckpt_tensor *x = &c->t[c->by_name[i - 1]], *y = &c->t[c->by_name[i]];
        if (strcmp(x->name, y->name) == 0) {
            if (x->blob != y->blob && c->nblobs > 1 && strcmp(c->format, "safetensors-index") == 0)
                return fl_error_set(err, FL_E_FORMAT, "duplicate tensor name '%s' (in %s and %s)", x->name,
                                    c->blobs[x->blob].name, c->blobs[y->blob].name);
            return fl_error_set(err, FL_E_FORMAT, "duplicate tensor name '%s'", x->name);
        }
    }
    return FL_OK;
}

/* ---- opening ------------------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

typedef enum kind { K_SAFETENSORS, K_ZIP, K_INDEX, K_LEGACY, K_UNKNOWN } kind;

/* Tells the format by content: a safetensors header (u64 length, then '{'), a zip
 * signature, a JSON object, a bare pickle (pre-1.6 PyTorch). */
static kind sniff(const unsigned char *b, size_t n, uint64_t size)
{
    if (n >= 9 && b[8] == '{') {
        uint64_t len = 0;
        for (int i = 7; i >= 0; i--)
            len = len << 8 | b[i];
        if (len <= size - 8)
            return K_SAFETENSORS;
    }
    if (n >= 4 && b[0] == 'P' && b[1] == 'K' &&
        ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
        return K_ZIP;
    size_t i = 0;
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r'))
        i++;
    if (i < n && b[i] == '{')
        return K_INDEX;
    if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
        return K_LEGACY;
    return K_UNKNOWN;
}

static fl_status legacy_error(fl_error *err)
{
    return fl_error_set(err, FL_E_UNSUPPORTED,
                        "a bare pickle (the legacy PyTorch format before 1.6): not supported; re-save it "
                        "with a current torch.save (zip format) or convert it to safetensors");
}

static fl_status unknown_error(const unsigned char *b, size_t n, fl_error *err)
{
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(hex + 3 * i, 4, "%02x ", b[i]);
    if (n)
        hex[3 * (n < 8 ? n : 8) - 1] = '\0';
    return fl_error_set(err, FL_E_FORMAT,
                        "not a checkpoint fifolab reads: the first bytes (%s) are neither a safetensors "
                        "header, a zip archive (PyTorch) nor a JSON index",
                        n ? hex : "none: the file is empty");
}

fl_status fl_ckpt_open(fl_ckpt **out, const char *path, const fl_ckpt_options *opt, fl_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fl_error_set(err, FL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fl_error_set(err, FL_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fl_error_set(err, FL_E_IO, "%s: not a regular file%s", path,
                            S_ISDIR(sb.st_mode) ? " (a directory: name the .safetensors, the "
                                                  ".safetensors.index.json or the checkpoint file)"
                                                : "");
    }
    unsigned char head[16];
    ssize_t got = pread(fd, head, sizeof head, 0);
    int e = errno;
    close(fd);
    if (got < 0)
        return fl_error_set(err, FL_E_IO, "%s: cannot read: %s", path, strerror(e));
    kind k = sniff(head, (size_t)got, (uint64_t)sb.st_size);
    if (k == K_UNKNOWN) {
        /* an extension says which reader gives the most precise message */
        if (ends_with(path, ".safetensors"))
            k = K_SAFETENSORS;
        else if (ends_with(path, ".ckpt") || ends_with(path, ".pt") || ends_with(path, ".pth") ||
                 ends_with(path, ".bin"))
            k = K_ZIP;
        else if (ends_with(path, ".json"))
            k = K_INDEX;
    }
    if (k == K_LEGACY) {
        legacy_error(err);
        return fl_error_prefix(err, "%s", path);
    }
    if (k == K_UNKNOWN) {
        unknown_error(head, (size_t)got, err);
        return fl_error_prefix(err, "%s", path);
    }
    fl_ckpt *c;
    fl_status st = new_ckpt(&c, path, opt, err);
    if (st)
        return st;
    switch (k) {
    case K_SAFETENSORS: st = fl_safetensors_read_file(c, path, err); break;
    case K_ZIP: st = fl_torchzip_read_file(c, path, err); break;
    default: st = fl_safetensors_read_index(c, path, err); break;
    }
    if (!st)
        st = finish(c, err);
    if (st) {
        fl_ckpt_close(c);
        return fl_error_prefix(err, "%s", path);
    }
    *out = c;
    return FL_OK;
}

fl_status fl_ckpt_open_memory(fl_ckpt **out, const void *data, size_t size, const char *name,
                              const fl_ckpt_options *opt, fl_error *err)
{
    *out = NULL;
    if (!name)
        name = "(memory)";
    size_t n = size < 16 ? size : 16;
    kind k = sniff(data, n, size);
    if (k == K_LEGACY || k == K_UNKNOWN || k == K_INDEX) {
        if (k == K_LEGACY)
            legacy_error(err);
        else if (k == K_INDEX)
            fl_error_set(err, FL_E_INVALID, "a safetensors index names files: open it by path");
        else if (ends_with(name, ".safetensors"))
            k = K_SAFETENSORS;
        else
            unknown_error(data, n, err);
        if (k != K_SAFETENSORS)
            return fl_error_prefix(err, "%s", name);
    }
    fl_ckpt *c;
    fl_status st = new_ckpt(&c, name, opt, err);
    if (st)
        return st;
    st = k == K_ZIP ? fl_torchzip_read_memory(c, data, size, err)
                    : fl_safetensors_read_memory(c, data, size, err);
    if (!st)
        st = finish(c, err);
    if (st) {
        fl_ckpt_close(c);
        return fl_error_prefix(err, "%s", name);
    }
    *out = c;
    return FL_OK;
}

/* ---- queries ------------------------------------------------------------------------ */

const char *fl_ckpt_path(const fl_ckpt *c) { return c->path; }
const char *fl_ckpt_format(const fl_ckpt *c) { return c->format; }
size_t fl_ckpt_count(const fl_ckpt *c) { return c->n; }
const fl_ckpt_tensor *fl_ckpt_at(const fl_ckpt *c, size_t i) { return i < c->n ? &c->t[i] : NULL; }

const fl_ckpt_tensor *fl_ckpt_find(const fl_ckpt *c, const char *name)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->t[c->by_name[mid]].name, name);
        if (r == 0)
            return &c->t[c->by_name[mid]];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t fl_ckpt_meta_count(const fl_ckpt *c) { return c->nmeta; }

void fl_ckpt_meta_at(const fl_ckpt *c, size_t i, const char **key, const char **value)
{
    FL_ASSERT(i < c->nmeta);
    *key = c->meta[i].key;
    *value = c->meta[i].value;
}

const char *fl_ckpt_meta_get(const fl_ckpt *c, const char *key)
{
    for (size_t i = 0; i < c->nmeta; i++)
        if (strcmp(c->meta[i].key, key) == 0)
            return c->meta[i].value;
    return NULL;
}

/* ---- loading ------------------------------------------------------------------------ */

static fl_status blob_storage(fl_ckpt *c, size_t i, fl_storage **out, fl_error *err)
{
    blob *b = &c->blobs[i];
    if (!b->st) {
        fl_storage *st = NULL;
        fl_status s = b->fetch(b->ud, b->tag, b->nbytes, c->alloc, &st, err);
        if (s)
            return s;
        FL_ASSERT(st && st->nbytes >= b->nbytes);
        b->st = st;
    }
    *out = b->st;
    return FL_OK;
}

void fl_ckpt_drop_cache(fl_ckpt *c)
{
    for (size_t i = 0; i < c->nblobs; i++)
        if (c->blobs[i].fetch && c->blobs[i].st) {
            fl_storage_release(c->blobs[i].st);
            c->blobs[i].st = NULL;
        }
}

/* Copies the (possibly strided) elements of t starting at src into dst, row-major. */
static void gather(unsigned char *dst, const unsigned char *src, const fl_ckpt_tensor *t, size_t esz)
{
    int nd = t->ndim;
    if (t->numel == 0)
        return;
    if (nd == 0) {
        memcpy(dst, src, esz);
        return;
    }
    /* the innermost dim is copied as one run when its stride is 1 */
    int64_t inner = t->shape[nd - 1];
    bool run = t->stride[nd - 1] == 1;
    int outer = nd - 1;
    int64_t idx[FL_CKPT_MAX_DIMS] = { 0 };
    int64_t off = 0;
    for (;;) {
        if (run) {
            memcpy(dst, src + (size_t)off * esz, (size_t)inner * esz);
            dst += (size_t)inner * esz;
        } else {
            for (int64_t k = 0; k < inner; k++, dst += esz)
                memcpy(dst, src + (size_t)(off + k * t->stride[nd - 1]) * esz, esz);
        }
        int d = outer - 1;
        for (; d >= 0; d--) {
            off += t->stride[d];
            if (++idx[d] < t->shape[d])
                break;
            off -= t->stride[d] * t->shape[d];
            idx[d] = 0;
        }
        if (d < 0)
            return;
    }
}

static fl_status load_raw(fl_ckpt *c, const fl_ckpt_tensor *t, fl_tensor *out, fl_error *err)
{
    fl_dtype dt;
    if (fl_ckpt_dtype_to_fl(t->dtype, &dt))
        return fl_error_set(err, FL_E_DTYPE, "tensor '%s' is %s, which fifolab tensors do not hold",
                            t->name, fl_ckpt_dtype_name(t->dtype));
    if (t->ndim > FL_MAX_DIMS)
        return fl_error_set(err, FL_E_SHAPE, "tensor '%s' has rank %d; fifolab tensors hold at most %d dims",
                            t->name, t->ndim, FL_MAX_DIMS);
    fl_storage *st;
    fl_status s = blob_storage(c, t->blob, &st, err);
    if (s)
        return fl_error_prefix(err, "tensor '%s'", t->name);
    size_t esz = fl_ckpt_dtype_size(t->dtype);
    const unsigned char *base = (const unsigned char *)st->data + t->offset;
    if (t->contiguous && t->offset % esz == 0 && (uintptr_t)base % esz == 0) {
        int64_t shape[FL_MAX_DIMS];
        for (int i = 0; i < t->ndim; i++)
            shape[i] = t->shape[i];
        return fl_tensor_from_storage(out, st, dt, t->ndim, shape, NULL, (int64_t)(t->offset / esz), err);
    }
    int64_t shape[FL_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++)
        shape[i] = t->shape[i];
    if ((s = fl_tensor_empty(out, dt, t->ndim, shape, c->alloc, err)))
        return s;
    gather(fl_tensor_data(out), base, t, esz);
    return FL_OK;
}

fl_status fl_ckpt_load(fl_ckpt *c, const fl_ckpt_tensor *t, fl_tensor *out, fl_error *err)
{
    FL_ASSERT(t >= c->t && t < c->t + c->n);
    fl_status s = load_raw(c, t, out, err);
    return s ? fl_error_prefix(err, "%s", c->path) : FL_OK;
}

static bool is_float(fl_dtype d) { return d == FL_F32 || d == FL_F64 || d == FL_F16 || d == FL_BF16; }

fl_status fl_ckpt_load_as(fl_ckpt *c, const fl_ckpt_tensor *t, fl_dtype dtype, fl_tensor *out,
                          fl_error *err)
{
    FL_ASSERT(t >= c->t && t < c->t + c->n);
    fl_dtype have;
    if (fl_ckpt_dtype_to_fl(t->dtype, &have) == 0 && have == dtype)
        return fl_ckpt_load(c, t, out, err);
    if (fl_ckpt_dtype_to_fl(t->dtype, &have) || !is_float(have) || !is_float(dtype)) {
        fl_error_set(err, FL_E_DTYPE, "tensor '%s' is %s; cannot convert it to %s (only between f32, "
                     "f64, f16 and bf16)", t->name, fl_ckpt_dtype_name(t->dtype), fl_dtype_name(dtype));
        return fl_error_prefix(err, "%s", c->path);
    }
    fl_tensor src = FL_TENSOR_NULL;
    fl_status s = load_raw(c, t, &src, err);
    if (!s)
        s = fl_tensor_empty(out, dtype, src.ndim, src.shape, c->alloc, err);
    if (s) {
        fl_tensor_release(&src);
        return fl_error_prefix(err, "%s", c->path);
    }
    size_t n = (size_t)t->numel;
    const void *x = fl_tensor_data(&src);
    void *y = fl_tensor_data(out);
    if (have == FL_F16 && dtype == FL_F32)
        fl_f16_to_f32_n(x, y, n);
    else if (have == FL_BF16 && dtype == FL_F32)
        fl_bf16_to_f32_n(x, y, n);
    else if (have == FL_F32 && dtype == FL_F16)
        fl_f32_to_f16_n(x, y, n);
    else if (have == FL_F32 && dtype == FL_BF16)
        fl_f32_to_bf16_n(x, y, n);
    else
        for (size_t i = 0; i < n; i++)
            fl_dtype_store(dtype, y, i, fl_dtype_load(have, x, i));
    fl_tensor_release(&src);
    return FL_OK;
}

/* ---- binding ------------------------------------------------------------------------ */

void fl_bind_report_free(fl_bind_report *r)
{
    if (!r)
        return;
    fl_free(NULL, r->text, r->text_cap);
    memset(r, 0, sizeof *r);
}

/* A growable text (the report), on the default allocator; failures make it stop growing
 * (the counts stay right). */
typedef struct text {
    char *p;
    size_t n, cap;
    bool failed;
} text;

static void tprintf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(text *t, const char *fmt, ...)
{
    if (t->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->failed = true;
            return;
        }
        if (t->p && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        size_t ncap = t->cap ? t->cap : 256;
        while (ncap <= t->n + (size_t)k)
            ncap *= 2;
        char *q = fl_alloc(NULL, ncap);
        if (!q) {
            t->failed = true;
            return;
        }
        if (t->p)
            memcpy(q, t->p, t->n + 1);
        fl_free(NULL, t->p, t->cap);
        t->p = q;
        t->cap = ncap;
    }
}

static const char *shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "]");
    return buf;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    const fl_ckpt_want *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* The one error message: counts first, then as many names as fit. */
static fl_status bind_error(fl_ckpt *c, const char *prefix, const fl_bind_report *r, const text *details,
                            fl_error *err)
{
    char msg[FL_ERRMSG_MAX];
    int k = snprintf(msg, sizeof msg, "%s: binding%s%s%s failed: %zu missing, %zu unexpected, %zu wrong shape, "
                     "%zu wrong dtype", c->path, prefix[0] ? " '" : "", prefix, prefix[0] ? "'" : "",
                     r->missing, r->unexpected, r->wrong_shape, r->wrong_dtype);
    size_t len = k < 0 ? 0 : (size_t)k >= sizeof msg ? sizeof msg - 1 : (size_t)k;
    /* details holds "; what name (...)" items, each starting with "; " */
    const char *p = details->p ? details->p : "";
    const char *tail = " ... (all in the bind report)";
    size_t tl = strlen(tail);
    while (*p) {
        const char *next = strstr(p + 2, "; ");
        size_t item = next ? (size_t)(next - p) : strlen(p);
        if (len + item + tl >= sizeof msg) {
            memcpy(msg + len, tail, tl + 1);
            len += tl;
            break;
        }
        memcpy(msg + len, p, item);
        len += item;
        msg[len] = '\0';
        p += item;
    }
    msg[len] = '\0';
    return fl_error_set(err, FL_E_FORMAT, "%s", msg);
}

fl_status fl_ckpt_bind(fl_ckpt *c, const fl_ckpt_want *wants, size_t n, const fl_bind_options *opt,
                       fl_bind_report *report, fl_error *err)
{
    fl_bind_options none;
    memset(&none, 0, sizeof none);
    if (!opt)
        opt = &none;
    const char *prefix = opt->prefix ? opt->prefix : "";
    size_t plen = strlen(prefix);
    fl_bind_report r;
    memset(&r, 0, sizeof r);
    if (report)
        fl_bind_report_free(report);

    /* wanted names sorted, for the unexpected-key pass and duplicate wants */
    const fl_ckpt_want **sorted = NULL;
    size_t sbytes = (n ? n : 1) * sizeof *sorted;
    if (!(sorted = fl_alloc(c->alloc, sbytes)))
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory binding %zu tensors", c->path, n);
    for (size_t i = 0; i < n; i++) {
        FL_ASSERT(wants[i].name && wants[i].ndim >= 0 && wants[i].ndim <= FL_MAX_DIMS);
        sorted[i] = &wants[i];
    }
    qsort(sorted, n, sizeof *sorted, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            fl_error_set(err, FL_E_INVALID, "bind: the model wants '%s' twice", sorted[i]->name);
            fl_free(c->alloc, sorted, sbytes);
            return FL_E_INVALID;
        }

    text rep = { 0 }, det = { 0 };
    char full[4096], b1[160], b2[160];
    const fl_ckpt_tensor **found = NULL;
    size_t fbytes = (n ? n : 1) * sizeof *found;
    if (!(found = fl_alloc(c->alloc, fbytes))) {
        fl_free(c->alloc, sorted, sbytes);
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory binding %zu tensors", c->path, n);
    }
    for (size_t i = 0; i < n; i++) {
        const fl_ckpt_want *w = &wants[i];
        snprintf(full, sizeof full, "%s%s", prefix, w->name);
        const fl_ckpt_tensor *t = found[i] = fl_ckpt_find(c, full);
        if (!t) {
            if (!w->optional) {
                r.missing++;
                tprintf(&rep, "missing     %s (model wants %s %s)\n", full,
                        shape_str(b1, sizeof b1, w->ndim, w->shape), fl_dtype_name(w->dtype));
                tprintf(&det, "; missing %s", full);
            }
            continue;
        }
        bool shape_ok = t->ndim == w->ndim;
        for (int d = 0; shape_ok && d < w->ndim; d++)
            shape_ok = t->shape[d] == w->shape[d];
        if (!shape_ok) {
            r.wrong_shape++;
            tprintf(&rep, "wrong shape %s: checkpoint %s, model %s\n", full,
                    shape_str(b1, sizeof b1, t->ndim, t->shape), shape_str(b2, sizeof b2, w->ndim, w->shape));
            tprintf(&det, "; shape %s (checkpoint %s, model %s)", full, b1, b2);
        }
        fl_dtype have;
        bool have_fl = fl_ckpt_dtype_to_fl(t->dtype, &have) == 0;
        bool dtype_ok = have_fl && (have == w->dtype || (opt->convert && is_float(have) && is_float(w->dtype)));
        if (!dtype_ok) {
            r.wrong_dtype++;
            tprintf(&rep, "wrong dtype %s: checkpoint %s, model %s%s\n", full, fl_ckpt_dtype_name(t->dtype),
                    fl_dtype_name(w->dtype), have_fl && is_float(have) && is_float(w->dtype) ? " (convert is off)" : "");
            tprintf(&det, "; dtype %s (checkpoint %s, model %s)", full, fl_ckpt_dtype_name(t->dtype),
                    fl_dtype_name(w->dtype));
        }
    }
    /* unexpected: under the prefix, not wanted, not allowed */
    for (size_t i = 0; i < c->n; i++) {
        const fl_ckpt_tensor *t = &c->t[i];
        if (strncmp(t->name, prefix, plen) != 0)
            continue;
        const char *rel = t->name + plen;
        size_t lo = 0, hi = n;
        bool wanted = false;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int cr = strcmp(sorted[mid]->name, rel);
            if (cr == 0) {
                wanted = true;
                break;
            }
            if (cr < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (wanted)
            continue;
        bool allowed = false;
        for (const char *const *pat = opt->allow_unexpected; pat && *pat && !allowed; pat++)
            allowed = fnmatch(*pat, rel, 0) == 0;
        if (allowed) {
            r.allowed++;
            continue;
        }
        r.unexpected++;
        tprintf(&rep, "unexpected  %s (%s %s)\n", t->name, fl_ckpt_dtype_name(t->dtype),
                shape_str(b1, sizeof b1, t->ndim, t->shape));
        tprintf(&det, "; unexpected %s", t->name);
    }
    fl_free(c->alloc, sorted, sbytes);
    fl_status s = FL_OK;
    if (r.missing || r.unexpected || r.wrong_shape || r.wrong_dtype) {
        s = bind_error(c, prefix, &r, &det, err);
        if (rep.failed)
            fl_error_prefix(err, "(report incomplete: out of memory)");
    } else {
        /* everything fits: load, all or nothing */
        fl_tensor *got = NULL;
        size_t gbytes = (n ? n : 1) * sizeof *got;
        if (!(got = fl_alloc(c->alloc, gbytes)))
            s = fl_error_set(err, FL_E_NOMEM, "%s: out of memory binding %zu tensors", c->path, n);
        size_t done = 0;
        for (; !s && done < n; done++) {
            got[done] = FL_TENSOR_NULL;
            if (found[done])
                s = fl_ckpt_load_as(c, found[done], wants[done].dtype, &got[done], err);
        }
        if (s) {
            for (size_t i = 0; got && i < done; i++)
                fl_tensor_release(&got[i]);
        } else {
            for (size_t i = 0; i < n; i++) {
                if (found[i])
                    r.bound++;
                if (wants[i].dst)
                    *wants[i].dst = got[i];
                else
                    fl_tensor_release(&got[i]);
            }
        }
        fl_free(c->alloc, got, gbytes);
    }
    fl_free(c->alloc, found, fbytes);
    fl_free(NULL, det.p, det.cap);
    r.text = rep.p;
    r.text_cap = rep.cap;
    if (report)
        *report = r;
    else
        fl_free(NULL, rep.p, rep.cap);
    return s;
}

/* ---- listing ------------------------------------------------------------------------ */

static const char *human(char *buf, size_t n, uint64_t bytes)
{
    const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%" PRIu64 " B", bytes);
    else
        snprintf(buf, n, "%.2f %s", v, unit[u]);
    return buf;
}

size_t fl_ckpt_list(FILE *f, const fl_ckpt *c, const char *filter)
{
    size_t flen = filter ? strlen(filter) : 0;
    fprintf(f, "file:     %s\nformat:   %s\n", c->path, c->format);
    if (c->nmeta) {
        fprintf(f, "metadata:\n");
        for (size_t i = 0; i < c->nmeta; i++)
            fprintf(f, "  %s = %s\n", c->meta[i].key, c->meta[i].value);
    }
    size_t w = 4, listed = 0;
    for (size_t i = 0; i < c->n; i++)
        if (!filter || strncmp(c->t[i].name, filter, flen) == 0) {
            size_t l = strlen(c->t[i].name);
            if (l > w)
                w = l;
        }
    if (w > 96)
        w = 96;
    uint64_t total_bytes = 0, total_elems = 0, dt_bytes[FL_CKPT_DTYPE_COUNT] = { 0 };
    size_t dt_count[FL_CKPT_DTYPE_COUNT] = { 0 };
    char sb[256], hb[32];
    fprintf(f, "tensors:\n  %-*s  %-7s  %-24s  %s\n", (int)w, "NAME", "DTYPE", "SHAPE", "BYTES");
    for (size_t i = 0; i < c->n; i++) {
        const fl_ckpt_tensor *t = &c->t[i];
        if (filter && strncmp(t->name, filter, flen) != 0)
            continue;
        listed++;
        total_bytes += t->nbytes;
        total_elems += (uint64_t)t->numel;
        dt_count[t->dtype]++;
        dt_bytes[t->dtype] += t->nbytes;
        fprintf(f, "  %-*s  %-7s  %-24s  %zu", (int)w, t->name, fl_ckpt_dtype_name(t->dtype),
                shape_str(sb, sizeof sb, t->ndim, t->shape), t->nbytes);
        if (!t->contiguous)
            fprintf(f, "  (stored strided: stride %s; copied on load)", shape_str(sb, sizeof sb, t->ndim, t->stride));
        fputc('\n', f);
    }
    fprintf(f, "total:    %zu tensor%s", listed, listed == 1 ? "" : "s");
    if (filter)
        fprintf(f, " of %zu (filter '%s')", c->n, filter);
    fprintf(f, ", %" PRIu64 " elements, %" PRIu64 " bytes (%s)\n", total_elems, total_bytes,
            human(hb, sizeof hb, total_bytes));
    for (int d = 0; d < FL_CKPT_DTYPE_COUNT; d++)
        if (dt_count[d])
            fprintf(f, "  %-7s %zu tensor%s, %" PRIu64 " bytes (%s)\n", fl_ckpt_dtype_name((fl_ckpt_dtype)d),
                    dt_count[d], dt_count[d] == 1 ? "" : "s", dt_bytes[d], human(hb, sizeof hb, dt_bytes[d]));
    return listed;
}
