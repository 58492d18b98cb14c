/* safetensors: strict header validation (cJSON for the JSON itself), memory maps, and
 * sharded checkpoints through their index JSON. */
#include "models/safetensors.h"
#include "models/checkpoint_reader.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* JSON numbers are doubles in cJSON: integers are exact below 2^53, which bounds every
 * size and offset we accept (8 PiB). */
#define MAX_JSON_INT 9007199254740992.0

static fl_device cpu_device(void)
{
    fl_device d = { FL_DEVICE_CPU, 0 };
    return d;
}

static bool host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* The byte offset of the first invalid UTF-8 sequence or NUL, or len if none. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c == 0)
            return i;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (len - i < n)
            return i;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += n;
    }
    return len;
}

/* A JSON number that is a non-negative integer below 2^53. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double v = j->valuedouble;
    if (!(v >= 0) || v >= MAX_JSON_INT || v != floor(v))
        return false;
    *out = (uint64_t)v;
    return true;
}

static const char *json_kind(const cJSON *j)
{
    if (!j)
        return "missing";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsObject(j))
        return "an object";
    if (cJSON_IsBool(j))
        return "a boolean";
    if (cJSON_IsNull(j))
        return "null";
    return "not JSON";
}

/* Parses `len` bytes of JSON text (copied so the parser always sees a terminated string)
 * into *out; only whitespace may follow the value. `what` names the text in messages. */
static fl_status parse_json(const char *text, size_t len, const fl_allocator *a, const char *what,
                            cJSON **out, fl_error *err)
{
    char *buf = fl_alloc(a, len + 1);
    if (!buf)
        return fl_error_set(err, FL_E_NOMEM, "%s: cannot allocate %zu bytes", what, len + 1);
    memcpy(buf, text, len);
    buf[len] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    fl_status st = FL_OK;
    if (!j) {
        size_t at = end && end >= buf && end <= buf + len ? (size_t)(end - buf) : 0;
        char near[24];
        size_t k = 0;
        for (size_t i = at; i < len && k < sizeof near - 1; i++)
            near[k++] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '?';
        near[k] = '\0';
        st = fl_error_set(err, FL_E_FORMAT, "%s is not valid JSON (error at byte %zu%s%s%s)", what, at,
                          k ? ", near '" : "", near, k ? "'" : ": at the end");
    } else {
        size_t at = (size_t)(end - buf);
        while (at < len && (buf[at] == ' ' || buf[at] == '\t' || buf[at] == '\n' || buf[at] == '\r'))
            at++;
        if (at < len)
            st = fl_error_set(err, FL_E_FORMAT, "%s has bytes after its JSON value (at byte %zu)", what, at);
        else if (!cJSON_IsObject(j))
            st = fl_error_set(err, FL_E_FORMAT, "%s is %s, not a JSON object", what, json_kind(j));
    }
    fl_free(a, buf, len + 1);
    if (st) {
        cJSON_Delete(j);
        return st;
    }
    *out = j;
    return FL_OK;
}

typedef struct entry {
    const char *name; /* in the cJSON tree */
    fl_ckpt_dtype dtype;
    int ndim;
    int64_t shape[FL_CKPT_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int cmp_offsets(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static fl_status bad_dtype(const char *name, const char *dt, fl_error *err)
{
    if (strcmp(dt, "F4") == 0 || strncmp(dt, "F6_", 3) == 0)
        return fl_error_set(err, FL_E_UNSUPPORTED, "tensor '%s': dtype %s (sub-byte) is not supported", name, dt);
    return fl_error_set(err, FL_E_FORMAT,
                        "tensor '%s': unknown dtype '%.32s' (known: BOOL U8 I8 I16 U16 I32 U32 I64 U64 F16 "
                        "BF16 F32 F64 C64 F8_E4M3 F8_E5M2 F8_E8M0)", name, dt);
}

/* One tensor entry of the header. */
static fl_status parse_entry(const cJSON *item, entry *e, fl_error *err)
{
    const char *name = item->string;
    e->name = name;
    if (!cJSON_IsObject(item))
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': entry is %s, not an object", name, json_kind(item));
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt))
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': \"dtype\" is %s, not a string", name, json_kind(dt));
    if (fl_ckpt_dtype_from_name(dt->valuestring, &e->dtype))
        return bad_dtype(name, dt->valuestring, err);
    if (!cJSON_IsArray(sh))
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': \"shape\" is %s, not an array", name, json_kind(sh));
    int rank = cJSON_GetArraySize(sh);
    if (rank > FL_CKPT_MAX_DIMS)
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': rank %d exceeds %d", name, rank, FL_CKPT_MAX_DIMS);
    e->ndim = rank;
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        uint64_t v;
        if (!json_uint(x, &v))
            return fl_error_set(err, FL_E_FORMAT, "tensor '%s': shape[%d] is not a non-negative integer below 2^53",
                                name, d);
        e->shape[d] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel))
            return fl_error_set(err, FL_E_FORMAT, "tensor '%s': the element count of its shape overflows", name);
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': \"data_offsets\" is %s, not an array [begin, end]",
                            name, cJSON_IsArray(off) ? "an array of the wrong length" : json_kind(off));
    if (!json_uint(off->child, &e->begin) || !json_uint(off->child->next, &e->end))
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': data_offsets are not non-negative integers below 2^53",
                            name);
    if (e->begin > e->end)
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                            name, e->begin, e->end);
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, (uint64_t)fl_ckpt_dtype_size(e->dtype), &nbytes))
        return fl_error_set(err, FL_E_FORMAT, "tensor '%s': its byte size overflows", name);
    if (nbytes != e->end - e->begin)
        return fl_error_set(err, FL_E_FORMAT,
                            "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64 " bytes but %s x %" PRIu64
                            " elements need %" PRIu64, name, e->begin, e->end, e->end - e->begin,
                            fl_ckpt_dtype_name(e->dtype), numel, nbytes);
    return FL_OK;
}

/* Validates one file's bytes [data, data + size) and adds blob + tensors + metadata.
 * `st` (taken) holds those bytes; `blob_name` names the file in messages of other parts;
 * `meta_prefix` (NULL: none) is put before metadata keys (shards). */
static fl_status parse(fl_ckpt *c, const unsigned char *data, size_t size, fl_storage *st, const char *blob_name,
                       const char *meta_prefix, fl_error *err)
{
    size_t blob;
    fl_status s = fl_ckpt_add_blob(c, blob_name, size, st, NULL, NULL, 0, &blob, err);
    if (s)
        return s;
    if (!host_little_endian())
        return fl_error_set(err, FL_E_UNSUPPORTED, "safetensors data is little-endian; this host is not");
    if (size < 8)
        return fl_error_set(err, FL_E_FORMAT, "file is %zu bytes: too short for the 8-byte header length", size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | data[i];
    if (n > FL_SAFETENSORS_MAX_HEADER)
        return fl_error_set(err, FL_E_FORMAT, "header length %" PRIu64 " exceeds the limit of %u bytes", n,
                            FL_SAFETENSORS_MAX_HEADER);
    if (n > size - 8)
        return fl_error_set(err, FL_E_FORMAT,
                            "header length %" PRIu64 " runs past the end of the file (%zu bytes: at most %zu fit)",
                            n, size, size - 8);
    const unsigned char *h = data + 8;
    if (n < 2 || h[0] != '{')
        return fl_error_set(err, FL_E_FORMAT, "header does not start with '{' (header length %" PRIu64 "%s)", n,
                            n ? "" : ", empty");
    size_t bad = utf8_invalid_at(h, (size_t)n);
    if (bad < n)
        return fl_error_set(err, FL_E_FORMAT, "header is not UTF-8 text (%s at header byte %zu)",
                            h[bad] ? "invalid sequence" : "NUL byte", bad);
    cJSON *root;
    if ((s = parse_json((const char *)h, (size_t)n, fl_ckpt_alloc(c), "header", &root, err)))
        return s;
    size_t count = (size_t)cJSON_GetArraySize(root), ne = 0;
    entry *es = fl_calloc(fl_ckpt_alloc(c), count ? count : 1, sizeof *es);
    if (!es) {
        cJSON_Delete(root);
        return fl_error_set(err, FL_E_NOMEM, "out of memory for %zu header entries", count);
    }
    const cJSON *meta = NULL;
    char key[512];
    for (const cJSON *it = root->child; it && !s; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (meta) {
                s = fl_error_set(err, FL_E_FORMAT, "header has \"__metadata__\" twice");
                break;
            }
            meta = it;
            if (cJSON_IsNull(it))
                continue;
            if (!cJSON_IsObject(it)) {
                s = fl_error_set(err, FL_E_FORMAT, "\"__metadata__\" is %s, not an object", json_kind(it));
                break;
            }
            for (const cJSON *m = it->child; m && !s; m = m->next) {
                if (!cJSON_IsString(m)) {
                    s = fl_error_set(err, FL_E_FORMAT, "\"__metadata__\" value of '%s' is %s, not a string",
                                     m->string, json_kind(m));
                    break;
                }
                snprintf(key, sizeof key, "%s%s%s", meta_prefix ? meta_prefix : "", meta_prefix ? ": " : "",
                         m->string);
                s = fl_ckpt_add_meta(c, key, m->valuestring, err);
            }
            continue;
        }
        s = parse_entry(it, &es[ne], err);
        ne++;
    }
    /* every tensor inside the data section, then the offsets tile it exactly */
    uint64_t data_size = size - 8 - n;
    for (size_t i = 0; i < ne && !s; i++)
        if (es[i].end > data_size)
            s = fl_error_set(err, FL_E_FORMAT,
                             "tensor '%s' ends at data byte %" PRIu64 " but the data section has only %" PRIu64
                             " bytes: the file is truncated or its offsets are wrong", es[i].name, es[i].end, data_size);
    entry *sorted = NULL;
    if (!s && ne) {
        if (!(sorted = fl_calloc(fl_ckpt_alloc(c), ne, sizeof *sorted)))
            s = fl_error_set(err, FL_E_NOMEM, "out of memory for %zu header entries", ne);
        else {
            memcpy(sorted, es, ne * sizeof *es);
            qsort(sorted, ne, sizeof *sorted, cmp_offsets);
        }
    }
    uint64_t pos = 0;
    for (size_t i = 0; i < ne && !s; i++) {
        const entry *e = &sorted[i];
        if (e->begin > pos)
            s = i ? fl_error_set(err, FL_E_FORMAT,
                                 "data bytes [%" PRIu64 ", %" PRIu64 ") between tensors '%s' and '%s' belong to no tensor",
                                 pos, e->begin, sorted[i - 1].name, e->name)
                  : fl_error_set(err, FL_E_FORMAT,
                                 "the first %" PRIu64 " data bytes belong to no tensor (the first, '%s', begins at %" PRIu64 ")",
                                 e->begin, e->name, e->begin);
        else if (e->begin < pos)
            s = fl_error_set(err, FL_E_FORMAT,
                             "tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                             sorted[i - 1].name, sorted[i - 1].begin, sorted[i - 1].end, e->name, e->begin, e->end);
        pos = e->end;
    }
    if (!s && pos != data_size)
        s = fl_error_set(err, FL_E_FORMAT,
                         "the file has %" PRIu64 " bytes after the last tensor's data (tensors end at data byte %" PRIu64
                         ", the data section is %" PRIu64 " bytes)", data_size - pos, pos, data_size);
    uint64_t base = 8 + n;
    for (size_t i = 0; i < ne && !s; i++)
        s = fl_ckpt_add_tensor(c, es[i].name, es[i].dtype, es[i].ndim, es[i].shape, NULL, blob, base + es[i].begin,
                               err);
    fl_free(fl_ckpt_alloc(c), sorted, ne * sizeof *sorted);
    fl_free(fl_ckpt_alloc(c), es, (count ? count : 1) * sizeof *es);
    cJSON_Delete(root);
    return s;
}

static void unmap(void *ud, void *data, size_t nbytes)
{
    (void)ud;
    munmap(data, nbytes);
}

/* Maps a whole file privately (copy-on-write: writes into loaded tensors never reach the
 * file). *st gets the mapping; files shorter than 8 bytes are read into memory instead
 * (mmap of an empty file fails). */
static fl_status map_file(const char *path, const fl_allocator *a, fl_storage **st, fl_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fl_error_set(err, FL_E_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return fl_error_set(err, FL_E_IO, "cannot stat or not a regular file%s%s", e ? ": " : "", e ? strerror(e) : "");
    }
    size_t size = (size_t)sb.st_size;
    void *p;
    if (size < 8) {
        if (!(*st = fl_storage_new_cpu(a, size))) {
            close(fd);
            return fl_error_set(err, FL_E_NOMEM, "out of memory");
        }
        ssize_t got = size ? pread(fd, (*st)->data, size, 0) : 0;
        close(fd);
        if (got != (ssize_t)size) {
            fl_storage_release(*st);
            return fl_error_set(err, FL_E_IO, "cannot read %zu bytes", size);
        }
        return FL_OK;
    }
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return fl_error_set(err, FL_E_IO, "cannot map %zu bytes: %s", size, strerror(e));
    if (!(*st = fl_storage_wrap(a, p, size, cpu_device(), unmap, NULL))) {
        munmap(p, size);
        return fl_error_set(err, FL_E_NOMEM, "out of memory");
    }
    return FL_OK;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

fl_status fl_safetensors_read_file(fl_ckpt *c, const char *path, fl_error *err)
{
    fl_storage *st;
    fl_status s = map_file(path, fl_ckpt_alloc(c), &st, err);
    if (s)
        return s;
    fl_ckpt_set_format(c, "safetensors");
    return parse(c, st->data, st->nbytes, st, base_name(path), NULL, err);
}

fl_status fl_safetensors_read_memory(fl_ckpt *c, const void *data, size_t size, fl_error *err)
{
    fl_storage *st = fl_storage_wrap(fl_ckpt_alloc(c), (void *)data, size, cpu_device(), NULL, NULL);
    if (!st)
        return fl_error_set(err, FL_E_NOMEM, "out of memory");
    fl_ckpt_set_format(c, "safetensors");
    return parse(c, data, size, st, fl_ckpt_path(c), NULL, err);
}

/* ---- sharded checkpoints ------------------------------------------------------------- */

typedef struct mapping {
    const char *tensor, *file;
    bool seen;
} mapping;

static int cmp_mapping(const void *a, const void *b)
{
    return strcmp(((const mapping *)a)->tensor, ((const mapping *)b)->tensor);
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* A shard name must stay inside the index's folder. */
static bool safe_shard_name(const char *f)
{
    if (!f[0] || f[0] == '/' || strchr(f, '\\'))
        return false;
    for (const char *p = f; *p;) {
        const char *q = strchr(p, '/');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0 || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        p += len + (q ? 1 : 0);
    }
    return true;
}

static fl_status read_small_file(const char *path, const fl_allocator *a, char **out, size_t *len, fl_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fl_error_set(err, FL_E_IO, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size > (off_t)FL_SAFETENSORS_MAX_HEADER) {
        fclose(f);
        return fl_error_set(err, FL_E_FORMAT, "index is larger than %u bytes", FL_SAFETENSORS_MAX_HEADER);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = fl_alloc(a, n + 1);
    if (!buf) {
        fclose(f);
        return fl_error_set(err, FL_E_NOMEM, "cannot allocate %zu bytes for the index", n);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        fl_free(a, buf, n + 1);
        return fl_error_set(err, FL_E_IO, "cannot read %zu bytes", n);
    }
    *out = buf;
    *len = n;
    return FL_OK;
}

static fl_status index_meta(fl_ckpt *c, const cJSON *meta, fl_error *err)
{
    if (!meta || cJSON_IsNull(meta))
        return FL_OK;
    if (!cJSON_IsObject(meta))
        return fl_error_set(err, FL_E_FORMAT, "\"metadata\" is %s, not an object", json_kind(meta));
    fl_status s = FL_OK;
    char v[64];
    for (const cJSON *m = meta->child; m && !s; m = m->next) {
        const char *val = v;
        uint64_t u;
        if (cJSON_IsString(m))
            val = m->valuestring;
        else if (json_uint(m, &u))
            snprintf(v, sizeof v, "%" PRIu64, u);
        else if (cJSON_IsNumber(m))
            snprintf(v, sizeof v, "%.17g", m->valuedouble);
        else
            val = cJSON_IsBool(m) ? (cJSON_IsTrue(m) ? "true" : "false") : cJSON_IsNull(m) ? "null" : json_kind(m);
        s = fl_ckpt_add_meta(c, m->string, val, err);
    }
    return s;
}

fl_status fl_safetensors_read_index(fl_ckpt *c, const char *path, fl_error *err)
{
    const fl_allocator *a = fl_ckpt_alloc(c);
    fl_ckpt_set_format(c, "safetensors-index");
    char *text = NULL;
    size_t len = 0;
    fl_status s = read_small_file(path, a, &text, &len, err);
    if (s)
        return s;
    cJSON *root = NULL;
    s = parse_json(text, len, a, "index", &root, err);
    fl_free(a, text, len + 1);
    if (s)
        return s;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    mapping *map = NULL;
    const char **files = NULL;
    size_t n = 0, nfiles = 0;
    char *shard_path = NULL;
    size_t sp_cap = 0;
    if (!cJSON_IsObject(wm)) {
        s = fl_error_set(err, FL_E_FORMAT, "index: \"weight_map\" is %s, not an object", json_kind(wm));
        goto out;
    }
    if ((s = index_meta(c, cJSON_GetObjectItemCaseSensitive(root, "metadata"), err)))
        goto out;
    n = (size_t)cJSON_GetArraySize(wm);
    map = fl_calloc(a, n ? n : 1, sizeof *map);
    files = fl_calloc(a, n ? n : 1, sizeof *files);
    if (!map || !files) {
        s = fl_error_set(err, FL_E_NOMEM, "out of memory for an index of %zu tensors", n);
        goto out;
    }
    size_t i = 0;
    for (const cJSON *it = wm->child; it; it = it->next, i++) {
        if (!cJSON_IsString(it)) {
            s = fl_error_set(err, FL_E_FORMAT, "index: weight_map['%s'] is %s, not a file name", it->string,
                             json_kind(it));
            goto out;
        }
        if (!safe_shard_name(it->valuestring)) {
            s = fl_error_set(err, FL_E_FORMAT,
                             "index: weight_map['%s'] = '%s' is not a file name inside the index's folder",
                             it->string, it->valuestring);
            goto out;
        }
        map[i].tensor = it->string;
        map[i].file = files[i] = it->valuestring;
    }
    qsort(map, n, sizeof *map, cmp_mapping);
    for (i = 1; i < n; i++)
        if (strcmp(map[i - 1].tensor, map[i].tensor) == 0) {
            s = fl_error_set(err, FL_E_FORMAT, "index: weight_map lists '%s' twice", map[i].tensor);
            goto out;
        }
    qsort(files, n, sizeof *files, cmp_cstr);
    for (i = 0; i < n; i++)
        if (!i || strcmp(files[i], files[nfiles - 1]) != 0)
            files[nfiles++] = files[i];
    /* read every shard */
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    for (i = 0; i < nfiles; i++) {
        size_t need = dirlen + strlen(files[i]) + 1;
        if (need > sp_cap) {
            fl_free(a, shard_path, sp_cap);
            sp_cap = need * 2;
            if (!(shard_path = fl_alloc(a, sp_cap))) {
                sp_cap = 0;
                s = fl_error_set(err, FL_E_NOMEM, "out of memory");
                goto out;
            }
        }
        memcpy(shard_path, path, dirlen);
        strcpy(shard_path + dirlen, files[i]);
        fl_storage *st;
        if (!(s = map_file(shard_path, a, &st, err)))
            s = parse(c, st->data, st->nbytes, st, files[i], files[i], err);
        if (s) {
            fl_error_prefix(err, "shard '%s'", files[i]);
            goto out;
        }
    }
    /* the map and the shards agree exactly */
    for (i = 0; i < fl_ckpt_count(c); i++) {
        const fl_ckpt_tensor *t = fl_ckpt_at(c, i);
        mapping key = { t->name, NULL, false };
        mapping *m = bsearch(&key, map, n, sizeof *map, cmp_mapping);
        const char *in = fl_ckpt_blob_name(c, t->blob);
        if (!m) {
            s = fl_error_set(err, FL_E_FORMAT, "tensor '%s' of shard '%s' is not in the index's weight_map", t->name, in);
            goto out;
        }
        if (strcmp(m->file, in) != 0) {
            s = fl_error_set(err, FL_E_FORMAT, "index maps '%s' to shard '%s' but it is in shard '%s'", t->name,
                             m->file, in);
            goto out;
        }
        if (m->seen) {
            s = fl_error_set(err, FL_E_FORMAT, "duplicate tensor name '%s' in shard '%s'", t->name, in);
            goto out;
        }
        m->seen = true;
    }
    for (i = 0; i < n; i++)
        if (!map[i].seen) {
            s = fl_error_set(err, FL_E_FORMAT, "index maps '%s' to shard '%s', which has no such tensor", map[i].tensor,
                             map[i].file);
            goto out;
        }
    char v[32];
    snprintf(v, sizeof v, "%zu", nfiles);
    s = fl_ckpt_add_meta(c, "shards", v, err);
out:
    fl_free(a, shard_path, sp_cap);
    fl_free(a, map, (n ? n : 1) * sizeof *map);
    fl_free(a, files, (n ? n : 1) * sizeof *files);
    cJSON_Delete(root);
    return s;
}
