/* Writers of checkpoint files in their real formats, for the checkpoint suite and the fuzz
 * seed generator: safetensors, pickles as torch.save writes them, and zip archives through
 * libzip. Header-only (static inline): include it in one test program. Allocation
 * failures abort: these are test helpers. */
#ifndef FL_TESTS_CKPT_WRITE_H
#define FL_TESTS_CKPT_WRITE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zip.h>

/* ---- a growable byte buffer --------------------------------------------------------- */

typedef struct wbuf {
    unsigned char *p;
    size_t n, cap;
} wbuf;

static inline void wb_put(wbuf *b, const void *x, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1)
            c *= 2;
        unsigned char *q = realloc(b->p, c);
        if (!q)
            abort();
        b->p = q;
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, x, n);
    b->n += n;
    b->p[b->n] = 0; /* keeps text terminated */
}

static inline void wb_byte(wbuf *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    wb_put(b, &c, 1);
}

static inline void wb_le(wbuf *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        wb_byte(b, (unsigned)(v >> (8 * i)) & 0xff);
}

static inline void wb_str(wbuf *b, const char *s) { wb_put(b, s, strlen(s)); }

static inline void wb_printf(wbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void wb_printf(wbuf *b, const char *fmt, ...)
{
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= sizeof tmp)
        abort();
    wb_put(b, tmp, (size_t)k);
}

static inline void wb_free(wbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static inline int wb_save(const wbuf *b, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t k = b->n ? fwrite(b->p, 1, b->n, f) : 0;
    return fclose(f) == 0 && k == b->n ? 0 : -1;
}

/* ---- safetensors -------------------------------------------------------------------- */

/* The file: u64 little-endian header length, the header (padded with spaces so data starts
 * at a multiple of `align`, as the official writer does with 8; align 1: no padding), data. */
static inline void st_write(wbuf *out, const char *header, size_t align, const void *data, size_t len)
{
    size_t n = strlen(header);
    size_t pad = align > 1 ? (align - (8 + n) % align) % align : 0;
    wb_le(out, n + pad, 8);
    wb_str(out, header);
    for (size_t i = 0; i < pad; i++)
        wb_byte(out, ' ');
    wb_put(out, data, len);
}

typedef struct st_tensor {
    const char *name, *dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes;
} st_tensor;

/* A valid file of these tensors, data in the given order; `meta` is the JSON object text of
 * "__metadata__" or NULL. */
static inline void st_build(wbuf *out, const st_tensor *t, size_t n, const char *meta, size_t align)
{
    wbuf h = { 0 }, d = { 0 };
    wb_str(&h, "{");
    if (meta)
        wb_printf(&h, "\"__metadata__\":%s%s", meta, n ? "," : "");
    for (size_t i = 0; i < n; i++) {
        wb_printf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name, t[i].dtype);
        for (int k = 0; k < t[i].ndim; k++)
            wb_printf(&h, "%s%lld", k ? "," : "", (long long)t[i].shape[k]);
        wb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", d.n, d.n + t[i].nbytes);
        wb_put(&d, t[i].data, t[i].nbytes);
    }
    wb_str(&h, "}");
    st_write(out, (const char *)h.p, align, d.p, d.n);
    wb_free(&h);
    wb_free(&d);
}

/* ---- pickles ------------------------------------------------------------------------ */

/* A pickle writer. With `memo`, every object written is followed by BINPUT/LONG_BINPUT of
 * the next memo index, as Python's pickler does. proto >= 4 writes SHORT_BINUNICODE and
 * STACK_GLOBAL + MEMOIZE as protocol 4 does. */
typedef struct pkw {
    wbuf b;
    int proto;
    bool memo;
    uint32_t next;
} pkw;

static inline void pk_op(pkw *w, unsigned op) { wb_byte(&w->b, op); }

static inline uint32_t pk_put(pkw *w)
{
    if (!w->memo)
        return 0;
    uint32_t i = w->next++;
    if (w->proto >= 4) {
        pk_op(w, 0x94); /* MEMOIZE */
    } else if (i < 256) {
        pk_op(w, 'q');
        wb_byte(&w->b, i);
    } else {
        pk_op(w, 'r');
        wb_le(&w->b, i, 4);
    }
    return i;
}

static inline void pk_get(pkw *w, uint32_t i)
{
    if (i < 256) {
        pk_op(w, 'h');
        wb_byte(&w->b, i);
    } else {
        pk_op(w, 'j');
        wb_le(&w->b, i, 4);
    }
}

static inline void pk_start(pkw *w, int proto, bool memo)
{
    memset(w, 0, sizeof *w);
    w->proto = proto;
    w->memo = memo;
    pk_op(w, 0x80);
    wb_byte(&w->b, (unsigned)proto);
}

static inline void pk_str(pkw *w, const char *s)
{
    size_t n = strlen(s);
    if (w->proto >= 4 && n < 256) {
        pk_op(w, 0x8c);
        wb_byte(&w->b, (unsigned)n);
    } else {
        pk_op(w, 'X');
        wb_le(&w->b, n, 4);
    }
    wb_put(&w->b, s, n);
    pk_put(w);
}

static inline void pk_int(pkw *w, int64_t v)
{
    if (v >= 0 && v < 256) {
        pk_op(w, 'K');
        wb_byte(&w->b, (unsigned)v);
    } else if (v >= 0 && v < 65536) {
        pk_op(w, 'M');
        wb_le(&w->b, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        pk_op(w, 'J');
        wb_le(&w->b, (uint64_t)v, 4);
    } else {
        pk_op(w, 0x8a); /* LONG1, 8 bytes */
        wb_byte(&w->b, 8);
        wb_le(&w->b, (uint64_t)v, 8);
    }
}

static inline void pk_float(pkw *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    pk_op(w, 'G');
    for (int i = 7; i >= 0; i--)
        wb_byte(&w->b, (unsigned)(u >> (8 * i)) & 0xff);
}

static inline void pk_global(pkw *w, const char *mod, const char *name)
{
    if (w->proto >= 4) {
        pk_str(w, mod);
        pk_str(w, name);
        pk_op(w, 0x93);
    } else {
        pk_op(w, 'c');
        wb_printf(&w->b, "%s\n%s\n", mod, name);
    }
    pk_put(w);
}

static inline void pk_mark(pkw *w) { pk_op(w, '('); }
static inline void pk_tuple(pkw *w)
{
    pk_op(w, 't');
    pk_put(w);
}
static inline void pk_empty_tuple(pkw *w) { pk_op(w, ')'); }
static inline void pk_reduce(pkw *w)
{
    pk_op(w, 'R');
    pk_put(w);
}
static inline void pk_empty_dict(pkw *w)
{
    pk_op(w, '}');
    pk_put(w);
}
static inline void pk_empty_list(pkw *w)
{
    pk_op(w, ']');
    pk_put(w);
}
static inline void pk_stop(pkw *w) { pk_op(w, '.'); }

/* collections.OrderedDict() as pickled by protocol 2: the call; then MARK k v ... SETITEMS. */
static inline void pk_ordered_dict(pkw *w)
{
    pk_global(w, "collections", "OrderedDict");
    pk_empty_tuple(w);
    pk_reduce(w);
}

/* A small tuple of ints (TUPLE1/2/3 or MARK ... TUPLE, as the pickler chooses). */
static inline void pk_int_tuple(pkw *w, int n, const int64_t *v)
{
    if (n == 0) {
        pk_empty_tuple(w);
        return;
    }
    if (n > 3)
        pk_mark(w);
    for (int i = 0; i < n; i++)
        pk_int(w, v[i]);
    if (n <= 3) {
        pk_op(w, 0x84 + (unsigned)n); /* TUPLE1..3 */
        pk_put(w);
    } else {
        pk_tuple(w);
    }
}

/* A torch tensor as torch.save pickles it:
 *   torch._utils._rebuild_tensor_v2(persistent_id(('storage', torch.<type>, key, 'cpu',
 *   numel)), offset, size, stride, False, OrderedDict()) */
static inline void pk_tensor_strided(pkw *w, const char *storage_type, const char *key, int64_t numel,
                                     int64_t offset, int ndim, const int64_t *shape, int nstride,
                                     const int64_t *stride)
{
    pk_global(w, "torch._utils", "_rebuild_tensor_v2");
    pk_mark(w);
    pk_mark(w);
    pk_str(w, "storage");
    pk_global(w, "torch", storage_type);
    pk_str(w, key);
    pk_str(w, "cpu");
    pk_int(w, numel);
    pk_tuple(w);
    pk_op(w, 'Q'); /* BINPERSID */
    pk_int(w, offset);
    pk_int_tuple(w, ndim, shape);
    pk_int_tuple(w, nstride, stride);
    pk_op(w, 0x89); /* NEWFALSE */
    pk_ordered_dict(w);
    pk_tuple(w);
    pk_reduce(w);
}

static inline void pk_tensor(pkw *w, const char *storage_type, const char *key, int64_t numel, int64_t offset,
                             int ndim, const int64_t *shape, const int64_t *stride)
{
    pk_tensor_strided(w, storage_type, key, numel, offset, ndim, shape, ndim, stride);
}

/* ---- zip archives ------------------------------------------------------------------- */

typedef struct zentry {
    const char *name;
    const void *data;
    size_t len;
    bool deflate;
    uint16_t pad; /* bytes of a local extra field (id 0x4246, "FB", as torch pads), 0: none */
} zentry;

/* The archive of these entries, through libzip, into out. 0 on success. */
static inline int zip_build(wbuf *out, const zentry *e, size_t n)
{
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(NULL, 0, 0, &ze);
    if (!src)
        return -1;
    zip_t *za = zip_open_from_source(src, ZIP_TRUNCATE, &ze);
    if (!za) {
        zip_source_free(src);
        return -1;
    }
    zip_source_keep(src);
    static const unsigned char zeros[4096];
    for (size_t i = 0; i < n; i++) {
        zip_source_t *s = zip_source_buffer(za, e[i].data, e[i].len, 0);
        zip_int64_t idx = s ? zip_file_add(za, e[i].name, s, ZIP_FL_ENC_UTF_8 | ZIP_FL_OVERWRITE) : -1;
        if (idx < 0 || zip_set_file_compression(za, (zip_uint64_t)idx, e[i].deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) ||
            (e[i].pad && zip_file_extra_field_set(za, (zip_uint64_t)idx, 0x4246, ZIP_EXTRA_FIELD_NEW, zeros, e[i].pad,
                                                  ZIP_FL_LOCAL))) {
            if (s && idx < 0)
                zip_source_free(s);
            zip_discard(za);
            zip_source_free(src);
            return -1;
        }
    }
    if (zip_close(za) != 0) {
        zip_discard(za);
        zip_source_free(src);
        return -1;
    }
    zip_stat_t st;
    int rc = -1;
    if (zip_source_stat(src, &st) == 0 && zip_source_open(src) == 0) {
        unsigned char *buf = malloc(st.size ? st.size : 1);
        if (buf && zip_source_read(src, buf, st.size) == (zip_int64_t)st.size) {
            out->n = 0;
            wb_put(out, buf, st.size);
            rc = 0;
        }
        free(buf);
        zip_source_close(src);
    }
    zip_source_free(src);
    zip_error_fini(&ze);
    return rc;
}

/* A torch.save archive: <folder>/data.pkl, byteorder, version and data/<key> for each
 * storage (keys "0", "1", ...), entries stored unless `deflate`, padded like torch's. */
typedef struct tz_storage {
    const void *data;
    size_t len;
} tz_storage;

static inline int torch_build(wbuf *out, const char *folder, const wbuf *pkl, const tz_storage *st, size_t nst,
                              bool deflate, bool pad)
{
    zentry e[40];
    char names[40][128];
    size_t n = 0;
    if (nst > 32)
        return -1;
    snprintf(names[n], sizeof names[n], "%s/data.pkl", folder);
    e[n] = (zentry){ names[n], pkl->p, pkl->n, deflate, (uint16_t)(pad ? 21 : 0) };
    n++;
    snprintf(names[n], sizeof names[n], "%s/byteorder", folder);
    e[n] = (zentry){ names[n], "little", 6, false, 0 };
    n++;
    for (size_t i = 0; i < nst; i++, n++) {
        snprintf(names[n], sizeof names[n], "%s/data/%zu", folder, i);
        e[n] = (zentry){ names[n], st[i].data, st[i].len, deflate, (uint16_t)(pad ? 13 + 7 * i : 0) };
    }
    snprintf(names[n], sizeof names[n], "%s/version", folder);
    e[n] = (zentry){ names[n], "3\n", 2, false, 0 };
    n++;
    return zip_build(out, e, n);
}


/* ---- the sample checkpoints the suite and the fuzz seeds share ------------------------ */

typedef struct sample_data {
    /* safetensors sample */
    float f32v[6];
    uint16_t f16v[4], bf16v[4];
    int64_t i64v[3];
    uint8_t u8v[5];
    float scalar;
    uint8_t boolv[2];
    /* PyTorch sample storages: FloatStorage 0..11, HalfStorage 1..4, BFloat16Storage 1..3,
     * LongStorage {1000} */
    float st0[12];
    uint16_t st1[4], st2[3];
    int64_t st3[1];
    tz_storage storages[4];
} sample_data;

static inline const sample_data *sample(void)
{
    static sample_data s = {
        { 1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f },
        { 0x3c00, 0xc000, 0x3555, 0x7bff }, /* 1, -2, ~0.333, 65504 */
        { 0x3f80, 0xc040, 0x0001, 0x7f80 }, /* 1, -3, tiny, inf */
        { -1, INT64_C(1) << 40, 7 },
        { 0, 1, 127, 128, 255 },
        42.0f,
        { 1, 0 },
        { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 },
        { 0x3c00, 0x4000, 0x4200, 0x4400 },
        { 0x3f80, 0x4000, 0x4040 },
        { 1000 },
        { { 0, 0 } },
    };
    s.storages[0] = (tz_storage){ s.st0, sizeof s.st0 };
    s.storages[1] = (tz_storage){ s.st1, sizeof s.st1 };
    s.storages[2] = (tz_storage){ s.st2, sizeof s.st2 };
    s.storages[3] = (tz_storage){ s.st3, sizeof s.st3 };
    return &s;
}

/* Eight tensors of every common dtype, a scalar, an empty one, BOOL, and metadata. */
static inline void sample_safetensors(wbuf *b, size_t align)
{
    const sample_data *d = sample();
    st_tensor t[] = {
        { "a.weight", "F32", 2, { 2, 3 }, d->f32v, sizeof d->f32v },
        { "a.half", "F16", 1, { 4 }, d->f16v, sizeof d->f16v },
        { "b.bf16", "BF16", 2, { 2, 2 }, d->bf16v, sizeof d->bf16v },
        { "b.steps", "I64", 1, { 3 }, d->i64v, sizeof d->i64v },
        { "c.bytes", "U8", 1, { 5 }, d->u8v, sizeof d->u8v },
        { "c.scalar", "F32", 0, { 0 }, &d->scalar, sizeof d->scalar },
        { "c.empty", "F32", 2, { 0, 3 }, NULL, 0 },
        { "c.mask", "BOOL", 1, { 2 }, d->boolv, sizeof d->boolv },
    };
    st_build(b, t, sizeof t / sizeof *t, "{\"format\":\"pt\",\"note\":\"test\"}", align);
}

/* The state dict: OrderedDict with
 *   "net.w"    F32 [3, 4] contiguous over storage 0
 *   "net.wT"   F32 [4, 3] the transpose view of the same storage (stride (1, 4))
 *   "net.row"  F32 [4] at offset 8 of storage 0 (the last row)
 *   "net.h"    F16 [2, 2]
 *   "net.bf"   BF16 [3]
 *   "steps"    I64 [] scalar
 * and the `_metadata` BUILD that module.state_dict() carries. */
static inline void pk_state_dict(pkw *w)
{
    int64_t s34[] = { 3, 4 }, c34[] = { 4, 1 }, s43[] = { 4, 3 }, t43[] = { 1, 4 }, s4[] = { 4 }, c1[] = { 1 },
            s22[] = { 2, 2 }, c22[] = { 2, 1 }, s3[] = { 3 };
    pk_ordered_dict(w);
    pk_mark(w);
    pk_str(w, "net.w");
    pk_tensor(w, "FloatStorage", "0", 12, 0, 2, s34, c34);
    pk_str(w, "net.wT");
    pk_tensor(w, "FloatStorage", "0", 12, 0, 2, s43, t43);
    pk_str(w, "net.row");
    pk_tensor(w, "FloatStorage", "0", 12, 8, 1, s4, c1);
    pk_str(w, "net.h");
    pk_tensor(w, "HalfStorage", "1", 4, 0, 2, s22, c22);
    pk_str(w, "net.bf");
    pk_tensor(w, "BFloat16Storage", "2", 3, 0, 1, s3, c1);
    pk_str(w, "steps");
    pk_tensor(w, "LongStorage", "3", 1, 0, 0, NULL, NULL);
    pk_op(w, 'u');
    /* state: {'_metadata': OrderedDict({'': {'version': 1}})} */
    pk_empty_dict(w);
    pk_str(w, "_metadata");
    pk_ordered_dict(w);
    pk_str(w, "");
    pk_empty_dict(w);
    pk_str(w, "version");
    pk_int(w, 1);
    pk_op(w, 's');
    pk_op(w, 's');
    pk_op(w, 's');
    pk_op(w, 'b');
}

/* A Lightning/LVDM-style checkpoint: {"epoch", "global_step", "state_dict": {...},
 * "callbacks", "optimizer_states", "hyper_parameters", and something hostile}. */
static inline void pk_lightning(pkw *w)
{
    pk_empty_dict(w);
    pk_mark(w);
    pk_str(w, "epoch");
    pk_int(w, 12);
    pk_str(w, "global_step");
    pk_int(w, 123456);
    pk_str(w, "pytorch-lightning_version");
    pk_str(w, "1.9.0");
    pk_str(w, "lr");
    pk_float(w, 1e-4);
    pk_str(w, "state_dict");
    pk_state_dict(w);
    pk_str(w, "callbacks");
    pk_empty_dict(w);
    pk_str(w, "ModelCheckpoint{'monitor': None}");
    pk_global(w, "pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint");
    pk_empty_tuple(w);
    pk_op(w, 0x81); /* NEWOBJ */
    pk_put(w);
    pk_empty_dict(w);
    pk_str(w, "best_model_path");
    pk_str(w, "/ckpt/best.ckpt");
    pk_op(w, 's');
    pk_op(w, 'b');
    pk_op(w, 's');
    pk_str(w, "optimizer_states");
    pk_empty_list(w);
    pk_empty_dict(w);
    pk_str(w, "param_groups");
    pk_empty_list(w);
    pk_op(w, 's');
    pk_op(w, 'a');
    pk_str(w, "hyper_parameters");
    pk_global(w, "omegaconf.dictconfig", "DictConfig");
    pk_empty_tuple(w);
    pk_op(w, 0x81);
    pk_mark(w);
    pk_str(w, "model");
    pk_str(w, "lvdm");
    pk_op(w, 'u'); /* SETITEMS on the placeholder */
    pk_str(w, "evil");
    pk_global(w, "os", "system");
    pk_mark(w);
    pk_str(w, "rm -rf /");
    pk_tuple(w);
    pk_reduce(w);
    pk_op(w, 'u');
}


/* torch.save of the sample state dict. */
static inline int torch_sample_build(wbuf *out, int proto, bool memo, const char *folder, bool deflate, bool pad)
{
    pkw w;
    pk_start(&w, proto, memo);
    pk_state_dict(&w);
    pk_stop(&w);
    int rc = torch_build(out, folder, &w.b, sample()->storages, 4, deflate, pad);
    wb_free(&w.b);
    return rc;
}

#endif
