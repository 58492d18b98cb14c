/* PyTorch zip checkpoints: libzip for the container, the restricted pickle reader for
 * data.pkl, and the interpretation of its tensor rebuild calls and storage ids. */
#include "models/torchzip.h"
#include "models/checkpoint_reader.h"
#include "models/pickle.h"

#include <zip.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 64    /* containers deeper than this are not searched for tensors */
#define MAX_NAME 4096   /* longest tensor name path */
#define MAX_META 64     /* top-level entries summarised as metadata */

/* ---- zip helpers -------------------------------------------------------------------- */

static fl_status zip_fail(fl_error *err, int code, const char *what)
{
    zip_error_t ze;
    zip_error_init_with_code(&ze, code);
    fl_status s = fl_error_set(err, code == ZIP_ER_MEMORY ? FL_E_NOMEM : FL_E_FORMAT, "%s: %s", what,
                               zip_error_strerror(&ze));
    zip_error_fini(&ze);
    return s;
}

/* Reads entry `idx` (uncompressing, CRC-checked at its end) into buf, which holds exactly
 * `nbytes` bytes: the entry must be that long. */
static fl_status read_entry_into(zip_t *za, zip_uint64_t idx, void *buf, size_t nbytes, fl_error *err)
{
    const char *name = zip_get_name(za, idx, ZIP_FL_ENC_RAW);
    if (!name)
        name = "?";
    zip_file_t *zf = zip_fopen_index(za, idx, 0);
    if (!zf)
        return fl_error_set(err, FL_E_FORMAT, "cannot open zip entry '%s': %s", name, zip_strerror(za));
    size_t done = 0;
    fl_status s = FL_OK;
    while (done < nbytes) {
        zip_int64_t k = zip_fread(zf, (char *)buf + done, nbytes - done);
        if (k < 0) {
            s = fl_error_set(err, FL_E_FORMAT, "reading zip entry '%s': %s", name, zip_file_strerror(zf));
            break;
        }
        if (k == 0)
            break;
        done += (size_t)k;
    }
    if (!s && done < nbytes)
        s = fl_error_set(err, FL_E_FORMAT, "zip entry '%s' holds %zu bytes, fewer than the %zu expected", name, done,
                         nbytes);
    if (!s) {
        /* read to the end, which is where libzip checks the CRC */
        char extra;
        zip_int64_t k = zip_fread(zf, &extra, 1);
        if (k < 0)
            s = fl_error_set(err, FL_E_FORMAT, "reading zip entry '%s': %s", name, zip_file_strerror(zf));
        else if (k > 0)
            s = fl_error_set(err, FL_E_FORMAT, "zip entry '%s' is longer than the %zu bytes expected", name, nbytes);
    }
    int rc = zip_fclose(zf);
    if (!s && rc)
        s = zip_fail(err, rc, "closing a zip entry");
    return s;
}

/* Size of entry idx from the central directory. */
static fl_status entry_size(zip_t *za, zip_uint64_t idx, uint64_t *size, fl_error *err)
{
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, idx, ZIP_FL_ENC_RAW, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return fl_error_set(err, FL_E_FORMAT, "cannot stat zip entry %llu: %s", (unsigned long long)idx,
                            zip_strerror(za));
    *size = st.size;
    return FL_OK;
}

/* A small whole entry (data.pkl, version, byteorder) into memory: at most `max` bytes. */
static fl_status read_small(zip_t *za, zip_uint64_t idx, size_t max, const fl_allocator *a, char **out,
                            size_t *len, fl_error *err)
{
    uint64_t size;
    fl_status s = entry_size(za, idx, &size, err);
    if (s)
        return s;
    if (size > max)
        return fl_error_set(err, FL_E_FORMAT, "zip entry '%s' is %llu bytes, more than the %zu accepted",
                            zip_get_name(za, idx, ZIP_FL_ENC_RAW), (unsigned long long)size, max);
    char *buf = fl_alloc(a, (size_t)size + 1);
    if (!buf)
        return fl_error_set(err, FL_E_NOMEM, "cannot allocate %llu bytes", (unsigned long long)size + 1);
    if ((s = read_entry_into(za, idx, buf, (size_t)size, err))) {
        fl_free(a, buf, (size_t)size + 1);
        return s;
    }
    buf[size] = '\0';
    *out = buf;
    *len = (size_t)size;
    return FL_OK;
}

/* The blob fetcher: a storage's bytes, read when a tensor of it is first loaded. */
static fl_status fetch(void *ud, uint64_t tag, size_t nbytes, const fl_allocator *a, fl_storage **out,
                       fl_error *err)
{
    zip_t *za = ud;
    fl_storage *st = fl_storage_new_cpu(a, nbytes);
    if (!st)
        return fl_error_set(err, FL_E_NOMEM, "cannot allocate %zu bytes for storage '%s'", nbytes,
                            zip_get_name(za, tag, ZIP_FL_ENC_RAW));
    fl_status s = read_entry_into(za, tag, st->data, nbytes, err);
    if (s) {
        fl_storage_release(st);
        return s;
    }
    *out = st;
    return FL_OK;
}

static void discard(void *ud) { zip_discard(ud); }

/* ---- storages ----------------------------------------------------------------------- */

static const struct {
    const char *storage; /* torch.<X>Storage */
    const char *dtype;   /* torch.<dtype> (for _rebuild_tensor_v3) */
    const char *alias;
    fl_ckpt_dtype t;
} torch_types[] = {
    { "FloatStorage", "float32", "float", FL_CKPT_F32 },
    { "DoubleStorage", "float64", "double", FL_CKPT_F64 },
    { "HalfStorage", "float16", "half", FL_CKPT_F16 },
    { "BFloat16Storage", "bfloat16", NULL, FL_CKPT_BF16 },
    { "LongStorage", "int64", "long", FL_CKPT_I64 },
    { "IntStorage", "int32", "int", FL_CKPT_I32 },
    { "ShortStorage", "int16", "short", FL_CKPT_I16 },
    { "CharStorage", "int8", NULL, FL_CKPT_I8 },
    { "ByteStorage", "uint8", NULL, FL_CKPT_U8 },
    { "BoolStorage", "bool", NULL, FL_CKPT_BOOL },
    { "ComplexFloatStorage", "complex64", "cfloat", FL_CKPT_C64 },
    { "ComplexDoubleStorage", "complex128", "cdouble", FL_CKPT_C128 },
    { "Float8_e4m3fnStorage", "float8_e4m3fn", NULL, FL_CKPT_F8_E4M3 },
    { "Float8_e5m2Storage", "float8_e5m2", NULL, FL_CKPT_F8_E5M2 },
    { "UInt16Storage", "uint16", NULL, FL_CKPT_U16 },
    { "UInt32Storage", "uint32", NULL, FL_CKPT_U32 },
    { "UInt64Storage", "uint64", NULL, FL_CKPT_U64 },
    { "UntypedStorage", NULL, NULL, FL_CKPT_U8 }, /* bytes; the tensor's dtype comes from v3 */
};

typedef struct storage {
    const char *key;
    size_t blob;
    fl_ckpt_dtype dtype;
    uint64_t numel;
} storage;

typedef struct walker {
    fl_ckpt *c;
    zip_t *za;
    const fl_allocator *a;
    const char *folder;
    storage *st;
    size_t nst, stcap;
    size_t *hash; /* open addressing: index + 1 into st, 0 = empty */
    size_t hcap;
    char name[MAX_NAME];
    size_t nlen;
    size_t budget;
    size_t skipped;
    char skipped_first[256];
    fl_error *err;
} walker;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static fl_status table_grow(walker *w)
{
    size_t ncap = w->hcap ? w->hcap * 2 : 256;
    size_t *h = fl_calloc(w->a, ncap, sizeof *h);
    storage *st = fl_alloc(w->a, ncap / 2 * sizeof *st);
    if (!h || !st) {
        fl_free(w->a, h, ncap * sizeof *h);
        fl_free(w->a, st, ncap / 2 * sizeof *st);
        return fl_error_set(w->err, FL_E_NOMEM, "out of memory for the storage table");
    }
    if (w->nst)
        memcpy(st, w->st, w->nst * sizeof *st);
    for (size_t i = 0; i < w->nst; i++) {
        size_t j = hash_str(st[i].key) & (ncap - 1);
        while (h[j])
            j = (j + 1) & (ncap - 1);
        h[j] = i + 1;
    }
    fl_free(w->a, w->hash, w->hcap * sizeof *w->hash);
    fl_free(w->a, w->st, w->stcap * sizeof *w->st);
    w->hash = h;
    w->hcap = ncap;
    w->st = st;
    w->stcap = ncap / 2;
    return FL_OK;
}

static const char *tname(const walker *w) { return w->nlen ? w->name : "tensor"; }

/* The storage a persistent id names: found in the table, or located in the zip, checked
 * against its declared size and added as a blob. */
static fl_status get_storage(walker *w, const fl_pk *pers, const storage **out)
{
    const char *tn = tname(w);
    if (!pers || pers->type != FL_PK_PERSID)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': its storage is a %s, not a persistent id", tn,
                            pers ? fl_pk_type_name(pers->type) : "nothing");
    const fl_pk *pid = pers->u.pid;
    if (pid->type != FL_PK_TUPLE || pid->u.seq.n != 5 || !fl_pk_is_str(pid->u.seq.v[0], "storage"))
        return fl_error_set(w->err, FL_E_FORMAT,
                            "tensor '%s': persistent id is not ('storage', type, key, location, numel)", tn);
    const fl_pk *type = pid->u.seq.v[1], *key = pid->u.seq.v[2], *numel = pid->u.seq.v[4];
    if (type->type != FL_PK_GLOBAL || strcmp(type->u.global.module, "torch") != 0)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage type is not a torch.*Storage global", tn);
    int ti = -1;
    for (size_t i = 0; i < sizeof torch_types / sizeof *torch_types; i++)
        if (strcmp(type->u.global.name, torch_types[i].storage) == 0)
            ti = (int)i;
    if (ti < 0)
        return fl_error_set(w->err, FL_E_UNSUPPORTED, "tensor '%s': storage type torch.%.64s is not supported", tn,
                            type->u.global.name);
    char kbuf[32];
    const char *k;
    if (key->type == FL_PK_STR && key->u.str.len == strlen(key->u.str.s) && key->u.str.len > 0 &&
        key->u.str.len < 256)
        k = key->u.str.s;
    else if (key->type == FL_PK_INT) {
        snprintf(kbuf, sizeof kbuf, "%" PRId64, key->u.i);
        k = kbuf;
    } else
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage key is not a short string", tn);
    if (numel->type != FL_PK_INT || numel->u.i < 0)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage size is not a non-negative int", tn);
    fl_ckpt_dtype dt = torch_types[ti].t;
    uint64_t n = (uint64_t)numel->u.i;
    /* known already? */
    if (w->hcap) {
        for (size_t j = hash_str(k) & (w->hcap - 1); w->hash[j]; j = (j + 1) & (w->hcap - 1)) {
            const storage *s = &w->st[w->hash[j] - 1];
            if (strcmp(s->key, k) == 0) {
                if (s->dtype != dt || s->numel != n)
                    return fl_error_set(w->err, FL_E_FORMAT,
                                        "tensor '%s': storage '%s' is declared as %s x %" PRIu64
                                        " here and as %s x %" PRIu64 " before", tn, k, fl_ckpt_dtype_name(dt), n,
                                        fl_ckpt_dtype_name(s->dtype), s->numel);
                *out = s;
                return FL_OK;
            }
        }
    }
    /* a new one: its zip entry must hold exactly numel elements */
    char ename[600];
    snprintf(ename, sizeof ename, "%s/data/%s", w->folder, k);
    zip_int64_t idx = zip_name_locate(w->za, ename, ZIP_FL_ENC_RAW);
    if (idx < 0)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage '%s' has no zip entry '%s'", tn, k, ename);
    uint64_t size, want;
    fl_status s = entry_size(w->za, (zip_uint64_t)idx, &size, w->err);
    if (s)
        return s;
    if (__builtin_mul_overflow(n, (uint64_t)fl_ckpt_dtype_size(dt), &want) || size != want)
        return fl_error_set(w->err, FL_E_FORMAT,
                            "tensor '%s': zip entry '%s' holds %" PRIu64 " bytes but its storage is declared as %s x %"
                            PRIu64, tn, ename, size, fl_ckpt_dtype_name(dt), n);
    if (size > SIZE_MAX)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage too large", tn);
    if (2 * (w->nst + 1) > w->hcap && (s = table_grow(w)))
        return s;
    storage rec;
    rec.key = fl_ckpt_strdup(w->c, k, strlen(k));
    if (!rec.key)
        return fl_error_set(w->err, FL_E_NOMEM, "out of memory");
    rec.dtype = dt;
    rec.numel = n;
    if ((s = fl_ckpt_add_blob(w->c, ename, (size_t)size, NULL, fetch, w->za, (uint64_t)idx, &rec.blob, w->err)))
        return s;
    w->st[w->nst] = rec;
    size_t j = hash_str(rec.key) & (w->hcap - 1);
    while (w->hash[j])
        j = (j + 1) & (w->hcap - 1);
    w->hash[j] = ++w->nst;
    *out = &w->st[w->nst - 1];
    return FL_OK;
}

/* A tuple (or list, or torch.Size(tuple)) of non-negative ints. */
static fl_status int_tuple(walker *w, const fl_pk *o, const char *what, int64_t *v, int *n)
{
    if (o && o->type == FL_PK_OBJECT && fl_pk_is_global(o->u.obj.callable, "torch", "Size") && o->u.obj.args &&
        o->u.obj.args->u.seq.n == 1)
        o = o->u.obj.args->u.seq.v[0];
    if (!o || (o->type != FL_PK_TUPLE && o->type != FL_PK_LIST))
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': %s is a %s, not a tuple of ints", tname(w), what,
                            o ? fl_pk_type_name(o->type) : "nothing");
    if (o->u.seq.n > FL_CKPT_MAX_DIMS)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': %s has %zu entries, more than %d", tname(w), what,
                            o->u.seq.n, FL_CKPT_MAX_DIMS);
    for (size_t i = 0; i < o->u.seq.n; i++) {
        const fl_pk *x = o->u.seq.v[i];
        if (x->type != FL_PK_INT || x->u.i < 0)
            return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': %s[%zu] is not a non-negative int", tname(w), what, i);
        v[i] = x->u.i;
    }
    *n = (int)o->u.seq.n;
    return FL_OK;
}

typedef enum rebuild { R_NONE, R_V1, R_V2, R_V3, R_PARAM, R_PARAM_STATE, R_FROM_TYPE, R_OTHER } rebuild;

static rebuild rebuild_kind(const fl_pk *callable)
{
    if (!callable || callable->type != FL_PK_GLOBAL)
        return R_NONE;
    const char *m = callable->u.global.module, *n = callable->u.global.name;
    if (strcmp(m, "torch._tensor") == 0 && strcmp(n, "_rebuild_from_type_v2") == 0)
        return R_FROM_TYPE;
    if (strcmp(m, "torch._utils") != 0 || strncmp(n, "_rebuild_", 9) != 0)
        return R_NONE;
    if (strcmp(n, "_rebuild_tensor") == 0)
        return R_V1;
    if (strcmp(n, "_rebuild_tensor_v2") == 0)
        return R_V2;
    if (strcmp(n, "_rebuild_tensor_v3") == 0)
        return R_V3;
    if (strcmp(n, "_rebuild_parameter") == 0)
        return R_PARAM;
    if (strcmp(n, "_rebuild_parameter_with_state") == 0)
        return R_PARAM_STATE;
    return R_OTHER;
}

static void note_skip(walker *w, const fl_pk *callable)
{
    if (!w->skipped++)
        snprintf(w->skipped_first, sizeof w->skipped_first, "%.80s.%.80s at '%.80s'",
                 callable && callable->type == FL_PK_GLOBAL ? callable->u.global.module : "?",
                 callable && callable->type == FL_PK_GLOBAL ? callable->u.global.name : "?", tname(w));
}

/* callable(*args) where callable is a torch rebuild function: adds the tensor. */
static fl_status rebuild_tensor(walker *w, const fl_pk *callable, const fl_pk *args, int depth)
{
    rebuild r = rebuild_kind(callable);
    const char *tn = tname(w);
    if (depth > 4)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': rebuild calls nested too deeply", tn);
    if (!args || args->type != FL_PK_TUPLE)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': rebuild arguments are not a tuple", tn);
    size_t n = args->u.seq.n;
    fl_pk *const *a = args->u.seq.v;
    switch (r) {
    case R_PARAM:
    case R_PARAM_STATE:
        if (n != (r == R_PARAM ? 3u : 4u) || a[0]->type != FL_PK_OBJECT)
            return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': malformed torch._utils.%s call", tn,
                                callable->u.global.name);
        return rebuild_tensor(w, a[0]->u.obj.callable, a[0]->u.obj.args, depth + 1);
    case R_FROM_TYPE:
        if (n != 4)
            return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': malformed _rebuild_from_type_v2 call", tn);
        if (rebuild_kind(a[0]) == R_OTHER || rebuild_kind(a[0]) == R_NONE) {
            note_skip(w, a[0]);
            return FL_OK;
        }
        return rebuild_tensor(w, a[0], a[2], depth + 1);
    case R_V1:
    case R_V2:
    case R_V3: break;
    default: note_skip(w, callable); return FL_OK;
    }
    size_t lo = r == R_V1 ? 4 : r == R_V2 ? 6 : 7, hi = r == R_V1 ? 4 : lo + 1;
    if (n < lo || n > hi)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': torch._utils.%s takes %zu%s arguments, not %zu", tn,
                            callable->u.global.name, lo, hi > lo ? " or more" : "", n);
    const storage *st = NULL;
    fl_status s = get_storage(w, a[0], &st);
    if (s)
        return s;
    if (a[1]->type != FL_PK_INT || a[1]->u.i < 0)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage offset is not a non-negative int", tn);
    int64_t shape[FL_CKPT_MAX_DIMS], stride[FL_CKPT_MAX_DIMS];
    int nd, ns;
    if ((s = int_tuple(w, a[2], "size", shape, &nd)) || (s = int_tuple(w, a[3], "stride", stride, &ns)))
        return s;
    if (nd != ns)
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': size has %d entries but stride %d", tn, nd, ns);
    fl_ckpt_dtype dt = st->dtype;
    if (r == R_V3) {
        const fl_pk *d = a[6];
        int ti = -1;
        if (d->type == FL_PK_GLOBAL && strcmp(d->u.global.module, "torch") == 0)
            for (size_t i = 0; i < sizeof torch_types / sizeof *torch_types; i++)
                if ((torch_types[i].dtype && strcmp(d->u.global.name, torch_types[i].dtype) == 0) ||
                    (torch_types[i].alias && strcmp(d->u.global.name, torch_types[i].alias) == 0))
                    ti = (int)i;
        if (ti < 0)
            return fl_error_set(w->err, FL_E_UNSUPPORTED, "tensor '%s': dtype is not a supported torch dtype", tn);
        dt = torch_types[ti].t;
        if (st->dtype != FL_CKPT_U8 && st->dtype != dt)
            return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': dtype %s over a %s storage", tn,
                                fl_ckpt_dtype_name(dt), fl_ckpt_dtype_name(st->dtype));
    }
    uint64_t off;
    if (__builtin_mul_overflow((uint64_t)a[1]->u.i, (uint64_t)fl_ckpt_dtype_size(dt), &off))
        return fl_error_set(w->err, FL_E_FORMAT, "tensor '%s': storage offset overflows", tn);
    return fl_ckpt_add_tensor(w->c, tn, dt, nd, shape, stride, st->blob, off, w->err);
}

/* ---- walking the object tree -------------------------------------------------------- */

static fl_status walk(walker *w, fl_pk *o, int depth);

/* Walks child `o` under name component `comp` (NULL: the same name). */
static fl_status walk_child(walker *w, fl_pk *o, const char *comp, size_t clen, int depth)
{
    size_t saved = w->nlen;
    if (comp) {
        if (saved + 1 + clen >= MAX_NAME) {
            note_skip(w, NULL);
            return FL_OK;
        }
        if (saved)
            w->name[w->nlen++] = '.';
        memcpy(w->name + w->nlen, comp, clen);
        w->nlen += clen;
        w->name[w->nlen] = '\0';
    }
    fl_status s = walk(w, o, depth + 1);
    w->nlen = saved;
    w->name[saved] = '\0';
    return s;
}

/* A dict's entries by key: string keys as they are, int keys in decimal; other keys (and
 * strings holding NUL) cannot name a tensor and are passed over. With `module_state`, the
 * nn.Module bookkeeping keys add no name component, so a whole pickled module yields
 * state-dict names. */
static fl_status walk_dict(walker *w, fl_pk *d, int depth, bool module_state)
{
    char num[32];
    for (size_t i = 0; i < d->u.dict.keys.n; i++) {
        const fl_pk *k = d->u.dict.keys.v[i];
        fl_pk *v = d->u.dict.vals.v[i];
        const char *comp;
        size_t len;
        if (k->type == FL_PK_STR && k->u.str.len == strlen(k->u.str.s)) {
            comp = k->u.str.s;
            len = k->u.str.len;
        } else if (k->type == FL_PK_INT) {
            len = (size_t)snprintf(num, sizeof num, "%" PRId64, k->u.i);
            comp = num;
        } else {
            continue;
        }
        if (module_state && (fl_pk_is_str(k, "_parameters") || fl_pk_is_str(k, "_buffers") ||
                             fl_pk_is_str(k, "_modules")))
            comp = NULL;
        fl_status s = walk_child(w, v, comp, len, depth);
        if (s)
            return s;
    }
    return FL_OK;
}

static fl_status walk(walker *w, fl_pk *o, int depth)
{
    if (!w->budget)
        return fl_error_set(w->err, FL_E_FORMAT,
                            "data.pkl: the object graph is too large or too shared to search (more visits than allowed)");
    w->budget--;
    if (o->visiting || depth > MAX_DEPTH)
        return FL_OK;
    fl_status s = FL_OK;
    char num[32];
    o->visiting = 1;
    switch (o->type) {
    case FL_PK_DICT: s = walk_dict(w, o, depth, false); break;
    case FL_PK_LIST:
    case FL_PK_TUPLE:
        for (size_t i = 0; i < o->u.seq.n && !s; i++) {
            size_t len = (size_t)snprintf(num, sizeof num, "%zu", i);
            s = walk_child(w, o->u.seq.v[i], num, len, depth);
        }
        break;
    case FL_PK_OBJECT:
        if (rebuild_kind(o->u.obj.callable) != R_NONE) {
            s = rebuild_tensor(w, o->u.obj.callable, o->u.obj.args, 0);
            break;
        }
        if (o->u.obj.state && o->u.obj.state->type == FL_PK_DICT)
            s = walk_dict(w, o->u.obj.state, depth, true);
        else if (o->u.obj.state)
            s = walk_child(w, o->u.obj.state, NULL, 0, depth);
        if (!s && o->u.obj.items)
            s = walk_dict(w, o->u.obj.items, depth, false);
        if (!s && o->u.obj.list)
            s = walk_child(w, o->u.obj.list, NULL, 0, depth);
        break;
    default: break;
    }
    o->visiting = 0;
    return s;
}

/* ---- metadata: a one-line summary of each top-level object ------------------------- */

static bool is_tensor_obj(const fl_pk *o)
{
    return o->type == FL_PK_OBJECT && rebuild_kind(o->u.obj.callable) != R_NONE &&
           rebuild_kind(o->u.obj.callable) != R_OTHER;
}


static void describe(const fl_pk *o, char *buf, size_t n)
{
    switch (o->type) {
    case FL_PK_NONE: snprintf(buf, n, "None"); return;
    case FL_PK_BOOL: snprintf(buf, n, "%s", o->u.b ? "True" : "False"); return;
    case FL_PK_INT: snprintf(buf, n, "%" PRId64, o->u.i); return;
    case FL_PK_BIGINT: snprintf(buf, n, "(int wider than 64 bits)"); return;
    case FL_PK_FLOAT: snprintf(buf, n, "%.17g", o->u.f); return;
    case FL_PK_STR: {
        size_t k = 0;
        for (size_t i = 0; i < o->u.str.len && k + 4 < n && i < 200; i++) {
            unsigned char ch = (unsigned char)o->u.str.s[i];
            buf[k++] = ch >= 0x20 && ch != 0x7f ? (char)ch : '?';
        }
        if (o->u.str.len > 200 && k + 4 < n) {
            memcpy(buf + k, "...", 3);
            k += 3;
        }
        buf[k] = '\0';
        return;
    }
    case FL_PK_BYTES: snprintf(buf, n, "bytes, %zu", o->u.str.len); return;
    case FL_PK_TUPLE:
    case FL_PK_LIST:
    case FL_PK_SET:
        snprintf(buf, n, "%s, %zu item%s", fl_pk_type_name(o->type), o->u.seq.n, o->u.seq.n == 1 ? "" : "s");
        return;
    case FL_PK_DICT:
        snprintf(buf, n, "dict, %zu entr%s", o->u.dict.keys.n, o->u.dict.keys.n == 1 ? "y" : "ies");
        return;
    case FL_PK_GLOBAL: snprintf(buf, n, "%.100s.%.100s", o->u.global.module, o->u.global.name); return;
    case FL_PK_OBJECT: {
        const fl_pk *c = o->u.obj.callable;
        if (is_tensor_obj(o))
            snprintf(buf, n, "tensor");
        else if (c->type == FL_PK_GLOBAL)
            snprintf(buf, n, "object %.100s.%.100s", c->u.global.module, c->u.global.name);
        else
            snprintf(buf, n, "object");
        return;
    }
    case FL_PK_PERSID: snprintf(buf, n, "persistent id"); return;
    }
    snprintf(buf, n, "?");
}

/* Metadata from the top-level object: each entry that is not a tensor (a plain state dict
 * gives none; a training checkpoint gives its epoch, step, config objects, ...). */
static fl_status summarise(fl_ckpt *c, const fl_pk *top, fl_error *err)
{
    char v[256], k[128];
    if (top->type != FL_PK_DICT) {
        describe(top, v, sizeof v);
        return fl_ckpt_add_meta(c, "torch.top", v, err);
    }
    size_t shown = 0, more = 0;
    for (size_t i = 0; i < top->u.dict.keys.n; i++) {
        const fl_pk *key = top->u.dict.keys.v[i], *val = top->u.dict.vals.v[i];
        if (is_tensor_obj(val))
            continue;
        if (shown == MAX_META) {
            more++;
            continue;
        }
        if (key->type == FL_PK_STR)
            describe(key, k, sizeof k);
        else if (key->type == FL_PK_INT)
            snprintf(k, sizeof k, "%" PRId64, key->u.i);
        else
            continue;
        describe(val, v, sizeof v);
        fl_status s = fl_ckpt_add_meta(c, k, v, err);
        if (s)
            return s;
        shown++;
    }
    if (more) {
        snprintf(v, sizeof v, "%zu more top-level entries not shown", more);
        return fl_ckpt_add_meta(c, "...", v, err);
    }
    return FL_OK;
}

/* The root named by a dotted path of dict keys (keys may themselves hold dots: the longest
 * key matching at each step is taken). */
static fl_status find_root(fl_pk *top, const char *path, fl_pk **out, fl_error *err)
{
    fl_pk *cur = top;
    const char *rem = path;
    while (*rem) {
        if (cur->type != FL_PK_DICT)
            return fl_error_set(err, FL_E_INVALID, "root '%s': '%s' is inside a %s, not a dict", path, rem,
                                fl_pk_type_name(cur->type));
        size_t best = 0;
        fl_pk *next = NULL;
        for (size_t i = 0; i < cur->u.dict.keys.n; i++) {
            const fl_pk *k = cur->u.dict.keys.v[i];
            if (k->type != FL_PK_STR)
                continue;
            size_t len = k->u.str.len;
            if (len > best && strncmp(rem, k->u.str.s, len) == 0 && (rem[len] == '\0' || rem[len] == '.')) {
                best = len;
                next = cur->u.dict.vals.v[i];
            }
        }
        if (!next)
            return fl_error_set(err, FL_E_INVALID, "root '%s': no key matching '%s'", path, rem);
        cur = next;
        rem += best;
        if (*rem == '.')
            rem++;
    }
    *out = cur;
    return FL_OK;
}

/* ---- the archive -------------------------------------------------------------------- */

static fl_status read_archive(fl_ckpt *c, zip_t *za, fl_error *err)
{
    const fl_allocator *a = fl_ckpt_alloc(c);
    const fl_ckpt_options *opt = fl_ckpt_options_of(c);
    fl_status s = fl_ckpt_on_close(c, discard, za, err);
    if (s)
        return s;
    fl_ckpt_set_format(c, "pytorch-zip");
    /* the one <folder>/data.pkl */
    zip_int64_t n = zip_get_num_entries(za, 0), pkl = -1;
    const char *first = NULL;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *nm = zip_get_name(za, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        if (!nm)
            continue;
        const char *slash = strchr(nm, '/');
        if (slash && slash != nm && strcmp(slash + 1, "data.pkl") == 0) {
            if (pkl >= 0)
                return fl_error_set(err, FL_E_FORMAT, "two data.pkl entries ('%s' and '%s')", first, nm);
            pkl = i;
            first = nm;
        }
    }
    if (pkl < 0)
        return fl_error_set(err, FL_E_FORMAT, "a zip archive without '<folder>/data.pkl' (%lld entries): not a "
                            "PyTorch checkpoint", (long long)n);
    const char *folder = fl_ckpt_strdup(c, first, (size_t)(strchr(first, '/') - first));
    if (!folder || (s = fl_ckpt_add_meta(c, "torch.archive", folder, err)))
        return s ? s : fl_error_set(err, FL_E_NOMEM, "out of memory");
    char ename[600], *text;
    size_t len;
    snprintf(ename, sizeof ename, "%s/byteorder", folder);
    zip_int64_t bo = zip_name_locate(za, ename, ZIP_FL_ENC_RAW);
    if (bo >= 0) {
        if ((s = read_small(za, (zip_uint64_t)bo, 64, a, &text, &len, err)))
            return s;
        bool little = strcmp(text, "little") == 0, big = strcmp(text, "big") == 0;
        fl_free(a, text, len + 1);
        if (!little)
            return fl_error_set(err, big ? FL_E_UNSUPPORTED : FL_E_FORMAT, "'%s' says %s", ename,
                                big ? "big-endian, which is not supported" : "neither 'little' nor 'big'");
    }
    const char *vnames[2] = { "version", ".data/version" };
    for (int i = 0; i < 2; i++) {
        snprintf(ename, sizeof ename, "%s/%s", folder, vnames[i]);
        zip_int64_t vi = zip_name_locate(za, ename, ZIP_FL_ENC_RAW);
        if (vi < 0)
            continue;
        if ((s = read_small(za, (zip_uint64_t)vi, 64, a, &text, &len, err)))
            return s;
        while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
            text[--len] = '\0';
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)text[k] < 0x20 || (unsigned char)text[k] >= 0x7f)
                text[k] = '?';
        s = fl_ckpt_add_meta(c, "torch.version", text, err);
        fl_free(a, text, len + 1);
        if (s)
            return s;
        break;
    }
    /* the pickle */
    if ((s = read_small(za, (zip_uint64_t)pkl, opt->max_pickle_bytes, a, &text, &len, err)))
        return s;
    fl_pickle pk;
    s = fl_pickle_load(&pk, text, len, NULL, a, err);
    fl_free(a, text, len + 1);
    if (s)
        return fl_error_prefix(err, "%s", first);
    fl_pk *root = pk.root;
    const char *rootname = "";
    if ((s = summarise(c, pk.root, err)))
        goto out;
    if (!opt->root) {
        fl_pk *sd = fl_pk_dict_get(pk.root, "state_dict");
        if (sd && sd->type == FL_PK_DICT) {
            root = sd;
            rootname = "state_dict";
        }
    } else if (opt->root[0]) {
        if ((s = find_root(pk.root, opt->root, &root, err)))
            goto out;
        rootname = opt->root;
    }
    if ((s = fl_ckpt_add_meta(c, "torch.root", rootname[0] ? rootname : "(top level)", err)))
        goto out;
    walker *w = fl_alloc(a, sizeof *w);
    if (!w) {
        s = fl_error_set(err, FL_E_NOMEM, "out of memory");
        goto out;
    }
    memset(w, 0, sizeof *w);
    w->c = c;
    w->za = za;
    w->a = a;
    w->folder = folder;
    w->err = err;
    w->budget = 8 * pk.nobjects + 4096;
    s = walk(w, root, 0);
    if (!s && w->skipped) {
        char v[400];
        snprintf(v, sizeof v, "%zu object%s that are not plain tensors or too deep (first: %s)", w->skipped,
                 w->skipped == 1 ? "" : "s", w->skipped_first);
        s = fl_ckpt_add_meta(c, "torch.skipped", v, err);
    }
    fl_free(a, w->hash, w->hcap * sizeof *w->hash);
    fl_free(a, w->st, w->stcap * sizeof *w->st);
    fl_free(a, w, sizeof *w);
out:
    fl_pickle_free(&pk);
    if (s)
        fl_error_prefix(err, "%s", first);
    return s;
}

fl_status fl_torchzip_read_file(fl_ckpt *c, const char *path, fl_error *err)
{
    int code = 0;
    zip_t *za = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &code);
    if (!za)
        return zip_fail(err, code, "not a readable zip archive");
    return read_archive(c, za, err);
}

fl_status fl_torchzip_read_memory(fl_ckpt *c, const void *data, size_t size, fl_error *err)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(data, size, 0, &ze);
    zip_t *za = src ? zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze) : NULL;
    if (!za) {
        fl_status s = fl_error_set(err, zip_error_code_zip(&ze) == ZIP_ER_MEMORY ? FL_E_NOMEM : FL_E_FORMAT,
                                   "not a readable zip archive: %s", zip_error_strerror(&ze));
        zip_error_fini(&ze);
        if (src)
            zip_source_free(src);
        return s;
    }
    zip_error_fini(&ze);
    return read_archive(c, za, err);
}
