/* cmocka suite for models/checkpoint, safetensors, pickle and torchzip: files written here
 * in their real formats, loaded back bit for bit; a corpus of broken files, each refused
 * with a message naming the file and the fault; truncations and random mutations never
 * crash; allocation failures leak nothing; binding reports every bad key in one error. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/tensor.h"
#include "models/checkpoint.h"
#include "models/pickle.h"
#include "tests/ckpt_write.h"

/* ---- helpers ------------------------------------------------------------------------ */

static char tmpdir[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "%s/fl-ckpt-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(tmpdir);
    return 0;
}

static const char *tmp_path(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static bool contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* open_memory must fail with `code` and a message naming `name` and holding `what`. */
static void expect_fail_mem(const wbuf *b, const char *name, fl_status code, const char *what)
{
    fl_ckpt *c = (fl_ckpt *)1;
    fl_error err;
    fl_error_clear(&err);
    fl_status s = fl_ckpt_open_memory(&c, b->p, b->n, name, NULL, &err);
    if (s == FL_OK) {
        fl_ckpt_close(c);
        fail_msg("%s: opened, expected an error containing '%s'", name, what);
    }
    assert_null(c);
    if (code && s != code)
        fail_msg("%s: status %s, expected %s (%s)", name, fl_status_str(s), fl_status_str(code), err.msg);
    if (!contains(err.msg, what) || strncmp(err.msg, name, strlen(name)) != 0)
        fail_msg("%s: message '%s' lacks '%s' or does not start with the name", name, err.msg, what);
}

/* Opens any bytes; if that works, loads every tensor (checking the bytes are readable). A
 * crash or sanitizer report is the failure here; returns whether it opened. */
static bool open_and_touch(const void *data, size_t n, const char *name)
{
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, data, n, name, NULL, &err))
        return false;
    for (size_t i = 0; i < fl_ckpt_count(c); i++) {
        fl_tensor t = FL_TENSOR_NULL;
        const fl_ckpt_tensor *ct = fl_ckpt_at(c, i);
        if (ct->nbytes > (1u << 24))
            continue;
        if (fl_ckpt_load(c, ct, &t, &err) == FL_OK) {
            volatile unsigned char sum = 0;
            const unsigned char *p = fl_tensor_data(&t);
            for (size_t k = 0; k < fl_tensor_nbytes(&t); k++)
                sum ^= p[k];
            fl_tensor_release(&t);
        }
    }
    fl_ckpt_close(c);
    return true;
}

/* ---- sample data (tests/ckpt_write.h) ---------------------------------------------- */

#define f32v (sample()->f32v)
#define f16v (sample()->f16v)
#define bf16v (sample()->bf16v)
#define i64v (sample()->i64v)
#define u8v (sample()->u8v)
#define scalar (sample()->scalar)
#define st0 (sample()->st0)
#define st1 (sample()->st1)
#define st2 (sample()->st2)
#define st3 (sample()->st3)
#define sample_storages (sample()->storages)

static void check_tensor(fl_ckpt *c, const char *name, fl_dtype dt, int ndim, const int64_t *shape,
                         const void *want, size_t nbytes)
{
    const fl_ckpt_tensor *ct = fl_ckpt_find(c, name);
    if (!ct)
        fail_msg("tensor '%s' not found", name);
    assert_int_equal(ct->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        assert_int_equal(ct->shape[i], shape[i]);
    assert_int_equal(ct->nbytes, nbytes);
    fl_tensor t = FL_TENSOR_NULL;
    fl_error err;
    if (fl_ckpt_load(c, ct, &t, &err))
        fail_msg("load %s: %s", name, err.msg);
    assert_int_equal(t.dtype, dt);
    assert_int_equal(t.ndim, ndim);
    assert_true(fl_tensor_is_contiguous(&t));
    assert_int_equal(fl_tensor_nbytes(&t), nbytes);
    if (nbytes)
        assert_memory_equal(fl_tensor_data(&t), want, nbytes);
    fl_tensor_release(&t);
}

static void check_sample(fl_ckpt *c)
{
    assert_int_equal(fl_ckpt_count(c), 8);
    int64_t s23[] = { 2, 3 }, s4[] = { 4 }, s22[] = { 2, 2 }, s3[] = { 3 }, s5[] = { 5 }, s03[] = { 0, 3 };
    check_tensor(c, "a.weight", FL_F32, 2, s23, f32v, sizeof f32v);
    check_tensor(c, "a.half", FL_F16, 1, s4, f16v, sizeof f16v);
    check_tensor(c, "b.bf16", FL_BF16, 2, s22, bf16v, sizeof bf16v);
    check_tensor(c, "b.steps", FL_I64, 1, s3, i64v, sizeof i64v);
    check_tensor(c, "c.bytes", FL_U8, 1, s5, u8v, sizeof u8v);
    check_tensor(c, "c.scalar", FL_F32, 0, NULL, &scalar, sizeof scalar);
    check_tensor(c, "c.empty", FL_F32, 2, s03, NULL, 0);
    /* file order is header order */
    assert_string_equal(fl_ckpt_at(c, 0)->name, "a.weight");
    assert_string_equal(fl_ckpt_at(c, 7)->name, "c.mask");
    assert_null(fl_ckpt_find(c, "a"));
    assert_null(fl_ckpt_find(c, "zzz"));
    /* BOOL is listed but fifolab tensors cannot hold it */
    const fl_ckpt_tensor *m = fl_ckpt_find(c, "c.mask");
    assert_non_null(m);
    assert_int_equal(m->dtype, FL_CKPT_BOOL);
    fl_tensor t = FL_TENSOR_NULL;
    fl_error err;
    assert_int_equal(fl_ckpt_load(c, m, &t, &err), FL_E_DTYPE);
    assert_true(contains(err.msg, "c.mask") && contains(err.msg, "BOOL"));
    assert_string_equal(fl_ckpt_meta_get(c, "format"), "pt");
    assert_string_equal(fl_ckpt_meta_get(c, "note"), "test");
    assert_null(fl_ckpt_meta_get(c, "nope"));
}

/* ---- safetensors: good files -------------------------------------------------------- */

static void test_st_roundtrip_memory(void **state)
{
    (void)state;
    wbuf b = { 0 };
    sample_safetensors(&b, 8);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "sample.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(fl_ckpt_format(c), "safetensors");
    check_sample(c);
    /* aligned tensors are views of the buffer, not copies */
    const fl_ckpt_tensor *w = fl_ckpt_find(c, "a.weight");
    fl_tensor t = FL_TENSOR_NULL;
    assert_int_equal(fl_ckpt_load(c, w, &t, &err), FL_OK);
    assert_ptr_equal(fl_tensor_data(&t), b.p + w->offset);
    fl_tensor_release(&t);
    fl_ckpt_close(c);
    wb_free(&b);
}

static void test_st_roundtrip_file(void **state)
{
    (void)state;
    wbuf b = { 0 };
    sample_safetensors(&b, 8);
    const char *path = tmp_path("sample.safetensors");
    assert_int_equal(wb_save(&b, path), 0);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open(&c, path, NULL, &err))
        fail_msg("%s", err.msg);
    check_sample(c);
    /* a loaded tensor outlives the checkpoint (it holds the mapping), and writing into it
     * does not reach the file (private copy-on-write mapping) */
    fl_tensor t = FL_TENSOR_NULL;
    assert_int_equal(fl_ckpt_load(c, fl_ckpt_find(c, "a.weight"), &t, &err), FL_OK);
    fl_ckpt_close(c);
    assert_memory_equal(fl_tensor_data(&t), f32v, sizeof f32v);
    ((float *)fl_tensor_data(&t))[0] = 99.0f;
    fl_tensor_release(&t);
    if (fl_ckpt_open(&c, path, NULL, &err))
        fail_msg("%s", err.msg);
    check_sample(c);
    fl_ckpt_close(c);
    wb_free(&b);
}

/* A header length that leaves the data section at an odd offset: loads copy instead of
 * viewing, with the same bytes. */
static void test_st_unaligned_data(void **state)
{
    (void)state;
    wbuf b = { 0 };
    sample_safetensors(&b, 1);
    fl_ckpt *c;
    fl_error err;
    /* the sample's header is not a multiple of 8 long by construction; say which */
    if (fl_ckpt_open_memory(&c, b.p, b.n, "odd.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    const fl_ckpt_tensor *w = fl_ckpt_find(c, "a.weight");
    check_sample(c);
    if (w->offset % 4 != 0) {
        fl_tensor t = FL_TENSOR_NULL;
        assert_int_equal(fl_ckpt_load(c, w, &t, &err), FL_OK);
        assert_ptr_not_equal(fl_tensor_data(&t), b.p + w->offset);
        fl_tensor_release(&t);
    }
    fl_ckpt_close(c);
    wb_free(&b);
}

static void test_st_empty_and_null_metadata(void **state)
{
    (void)state;
    wbuf b = { 0 };
    st_write(&b, "{}", 8, NULL, 0);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "empty.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(fl_ckpt_count(c), 0);
    fl_ckpt_close(c);
    b.n = 0;
    st_write(&b, "{\"__metadata__\":null,\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 1,
             f32v, 4);
    if (fl_ckpt_open_memory(&c, b.p, b.n, "nullmeta.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(fl_ckpt_count(c), 1);
    assert_int_equal(fl_ckpt_meta_count(c), 0);
    fl_ckpt_close(c);
    /* trailing whitespace after the JSON (spaces, tabs, newlines) is padding; so are
     * extra keys inside an entry, which the reference implementation ignores too */
    b.n = 0;
    st_write(&b, "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}} \t\n\r", 1, f32v, 4);
    if (fl_ckpt_open_memory(&c, b.p, b.n, "ws.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    fl_ckpt_close(c);
    wb_free(&b);
}

/* All dtypes the format declares and fifolab lists (the byte-sized ones). */
static void test_st_all_dtypes(void **state)
{
    (void)state;
    const char *names[] = { "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16",
                            "BF16", "F32", "F64", "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0" };
    unsigned char data[16 * 2 * 17] = { 0 };
    st_tensor t[17];
    size_t n = sizeof names / sizeof *names;
    char nm[17][16];
    for (size_t i = 0; i < n; i++) {
        fl_ckpt_dtype d;
        assert_int_equal(fl_ckpt_dtype_from_name(names[i], &d), 0);
        assert_string_equal(fl_ckpt_dtype_name(d), names[i]);
        snprintf(nm[i], sizeof nm[i], "t%zu", i);
        t[i] = (st_tensor){ nm[i], names[i], 1, { 2 }, data, 2 * fl_ckpt_dtype_size(d) };
    }
    wbuf b = { 0 };
    st_build(&b, t, n, NULL, 8);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "dtypes.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(fl_ckpt_count(c), n);
    for (size_t i = 0; i < n; i++) {
        const fl_ckpt_tensor *ct = fl_ckpt_find(c, nm[i]);
        assert_string_equal(fl_ckpt_dtype_name(ct->dtype), names[i]);
        fl_dtype fd;
        fl_tensor x = FL_TENSOR_NULL;
        fl_status s = fl_ckpt_load(c, ct, &x, &err);
        assert_int_equal(s, fl_ckpt_dtype_to_fl(ct->dtype, &fd) == 0 ? FL_OK : FL_E_DTYPE);
        fl_tensor_release(&x);
    }
    fl_ckpt_close(c);
    wb_free(&b);
}

/* ---- safetensors: the broken-file corpus ---------------------------------------------- */

typedef struct st_case {
    const char *name;   /* also the file name in the expected message */
    const char *header; /* NULL: raw bytes below */
    size_t data_len;    /* data bytes after the header */
    fl_status code;
    const char *what;
} st_case;

#define E(n) "\"" n "\":"
#define T(name, dt, shape, off) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}"

static const st_case st_cases[] = {
    { "not-json.safetensors", "{\"a\":", 0, FL_E_FORMAT, "not valid JSON" },
    { "trailing.safetensors", "{} x", 0, FL_E_FORMAT, "bytes after its JSON value" },
    { "not-brace.safetensors", " {}", 0, FL_E_FORMAT, "does not start with '{'" },
    { "array.safetensors", "[1]", 0, FL_E_FORMAT, "does not start with '{'" },
    { "meta-type.safetensors", "{\"__metadata__\":[1]}", 0, FL_E_FORMAT, "\"__metadata__\" is an array" },
    { "meta-value.safetensors", "{\"__metadata__\":{\"k\":3}}", 0, FL_E_FORMAT, "value of 'k' is a number" },
    { "meta-twice.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, FL_E_FORMAT, "twice" },
    { "entry-type.safetensors", "{\"w\":7}", 0, FL_E_FORMAT, "tensor 'w': entry is a number" },
    { "no-dtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, FL_E_FORMAT,
      "\"dtype\" is missing" },
    { "bad-dtype.safetensors", "{" T("w", "F33", "[1]", "[0,4]") "}", 4, FL_E_FORMAT, "unknown dtype 'F33'" },
    { "sub-byte.safetensors", "{" T("w", "F4", "[2]", "[0,1]") "}", 1, FL_E_UNSUPPORTED, "sub-byte" },
    { "shape-type.safetensors", "{" T("w", "F32", "7", "[0,4]") "}", 4, FL_E_FORMAT, "\"shape\" is a number" },
    { "shape-neg.safetensors", "{" T("w", "F32", "[-1]", "[0,4]") "}", 4, FL_E_FORMAT, "shape[0] is not" },
    { "shape-frac.safetensors", "{" T("w", "F32", "[1.5]", "[0,4]") "}", 4, FL_E_FORMAT, "shape[0] is not" },
    { "shape-str.safetensors", "{" T("w", "F32", "[\"1\"]", "[0,4]") "}", 4, FL_E_FORMAT, "shape[0] is not" },
    { "shape-huge.safetensors", "{" T("w", "F32", "[1e300]", "[0,4]") "}", 4, FL_E_FORMAT, "shape[0] is not" },
    { "shape-overflow.safetensors", "{" T("w", "F32", "[4294967296,4294967296,4294967296]", "[0,4]") "}", 4,
      FL_E_FORMAT, "overflows" },
    { "bytes-overflow.safetensors", "{" T("w", "F64", "[4611686018427387904]", "[0,4]") "}", 4, FL_E_FORMAT,
      "shape[0] is not" },
    { "rank9.safetensors", "{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, FL_E_FORMAT, "rank 9" },
    { "offs-type.safetensors", "{" T("w", "F32", "[1]", "{}") "}", 4, FL_E_FORMAT, "\"data_offsets\" is an object" },
    { "offs-len.safetensors", "{" T("w", "F32", "[1]", "[0,4,8]") "}", 4, FL_E_FORMAT, "wrong length" },
    { "offs-neg.safetensors", "{" T("w", "F32", "[1]", "[-4,0]") "}", 4, FL_E_FORMAT, "not non-negative" },
    { "offs-backwards.safetensors", "{" T("w", "F32", "[0]", "[4,0]") "}", 4, FL_E_FORMAT, "end before" },
    { "offs-size.safetensors", "{" T("w", "F32", "[2]", "[0,4]") "}", 4, FL_E_FORMAT, "hold 4 bytes but F32" },
    { "gap-start.safetensors", "{" T("w", "F32", "[1]", "[4,8]") "}", 8, FL_E_FORMAT, "the first 4 data bytes" },
    { "gap-middle.safetensors", "{" T("a", "F32", "[1]", "[0,4]") "," T("b", "F32", "[1]", "[8,12]") "}", 12,
      FL_E_FORMAT, "between tensors 'a' and 'b'" },
    { "overlap.safetensors", "{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[1]", "[4,8]") "}", 8,
      FL_E_FORMAT, "overlap" },
    { "trailing-data.safetensors", "{" T("a", "F32", "[1]", "[0,4]") "}", 12, FL_E_FORMAT,
      "8 bytes after the last tensor" },
    { "truncated-data.safetensors", "{" T("a", "F32", "[4]", "[0,16]") "}", 12, FL_E_FORMAT, "truncated" },
    { "duplicate.safetensors", "{" T("a", "F32", "[1]", "[0,4]") "," T("a", "F32", "[1]", "[4,8]") "}", 8,
      FL_E_FORMAT, "duplicate tensor name 'a'" },
    { "empty-name.safetensors", "{" T("", "F32", "[1]", "[0,4]") "}", 4, FL_E_FORMAT, "empty name" },
};

static void test_st_broken_corpus(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof st_cases / sizeof *st_cases; i++) {
        const st_case *k = &st_cases[i];
        wbuf b = { 0 };
        unsigned char zeros[64] = { 0 };
        st_write(&b, k->header, 1, zeros, k->data_len);
        expect_fail_mem(&b, k->name, k->code, k->what);
        /* the same from a file: the message names the path */
        const char *path = tmp_path(k->name);
        assert_int_equal(wb_save(&b, path), 0);
        fl_ckpt *c;
        fl_error err;
        fl_status s = fl_ckpt_open(&c, path, NULL, &err);
        if (s != k->code || !contains(err.msg, path) || !contains(err.msg, k->what))
            fail_msg("%s from file: %s (%s)", k->name, fl_status_str(s), err.msg);
        wb_free(&b);
    }
}

/* Raw framing errors: sizes, header length, encoding. */
static void test_st_broken_framing(void **state)
{
    (void)state;
    wbuf b = { 0 };
    expect_fail_mem(&b, "zero.safetensors", FL_E_FORMAT, "too short");
    wb_str(&b, "\x02\0\0\0\0\0");
    expect_fail_mem(&b, "short.safetensors", FL_E_FORMAT, "too short");
    b.n = 0;
    wb_le(&b, (uint64_t)1 << 40, 8);
    wb_str(&b, "{}");
    expect_fail_mem(&b, "huge.safetensors", FL_E_FORMAT, "exceeds the limit");
    b.n = 0;
    wb_le(&b, 100000001, 8);
    wb_str(&b, "{}");
    expect_fail_mem(&b, "limit.safetensors", FL_E_FORMAT, "exceeds the limit");
    b.n = 0;
    wb_le(&b, 64, 8);
    wb_str(&b, "{}");
    expect_fail_mem(&b, "past.safetensors", FL_E_FORMAT, "runs past the end");
    b.n = 0;
    wb_le(&b, 0, 8);
    expect_fail_mem(&b, "zerolen.safetensors", FL_E_FORMAT, "does not start with '{'");
    b.n = 0;
    wb_le(&b, 12, 8);
    wb_put(&b, "{\"\xff\":1}    ", 12);
    expect_fail_mem(&b, "utf8.safetensors", FL_E_FORMAT, "not UTF-8");
    b.n = 0;
    wb_le(&b, 4, 8);
    wb_put(&b, "{}\0 ", 4);
    expect_fail_mem(&b, "nul.safetensors", FL_E_FORMAT, "NUL byte");
    b.n = 0;
    wb_le(&b, 6, 8);
    wb_put(&b, "{\"\xc0\x80\"}", 6); /* overlong NUL */
    expect_fail_mem(&b, "overlong.safetensors", FL_E_FORMAT, "not UTF-8");
    /* an unknown format altogether */
    b.n = 0;
    wb_str(&b, "hello world, not a checkpoint");
    expect_fail_mem(&b, "x.bin", FL_E_FORMAT, "neither a safetensors header");
    b.n = 0;
    wb_str(&b, "\x80\x02}q\x00.");
    expect_fail_mem(&b, "legacy.pt", FL_E_UNSUPPORTED, "legacy PyTorch format");
    wb_free(&b);
    /* files: missing, a directory, empty */
    fl_ckpt *c;
    fl_error err;
    assert_int_equal(fl_ckpt_open(&c, tmp_path("missing.safetensors"), NULL, &err), FL_E_IO);
    assert_true(contains(err.msg, "missing.safetensors") && contains(err.msg, "No such file"));
    assert_int_equal(fl_ckpt_open(&c, tmpdir, NULL, &err), FL_E_IO);
    assert_true(contains(err.msg, "directory"));
    wbuf e = { 0 };
    assert_int_equal(wb_save(&e, tmp_path("empty.safetensors")), 0);
    assert_int_equal(fl_ckpt_open(&c, tmp_path("empty.safetensors"), NULL, &err), FL_E_FORMAT);
    assert_true(contains(err.msg, "empty.safetensors") && contains(err.msg, "too short"));
}

/* Every proper prefix of a good file is refused; none crashes. */
static void test_st_truncations(void **state)
{
    (void)state;
    wbuf b = { 0 };
    sample_safetensors(&b, 8);
    for (size_t n = 0; n < b.n; n++) {
        fl_ckpt *c;
        fl_error err;
        if (fl_ckpt_open_memory(&c, b.p, n, "cut.safetensors", NULL, &err) == FL_OK)
            fail_msg("prefix of %zu of %zu bytes opened", n, b.n);
    }
    wb_free(&b);
}

/* Random byte changes (mostly in the header) never crash; what opens loads. */
static void test_st_mutations(void **state)
{
    (void)state;
    wbuf b = { 0 };
    sample_safetensors(&b, 8);
    uint64_t seed = 12345;
    unsigned char *m = malloc(b.n);
    size_t header = 8 + (size_t)b.p[0] + 256 * b.p[1];
    size_t opened = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(m, b.p, b.n);
        int k = 1 + (int)(splitmix64(&seed) % 4);
        for (int j = 0; j < k; j++) {
            uint64_t r = splitmix64(&seed);
            size_t pos = r % 8 == 0 ? (size_t)(r >> 8) % b.n : (size_t)(r >> 8) % header;
            const char *tokens = "{}[],:\"0123456789-.eE ";
            m[pos] = r % 3 == 0 ? (unsigned char)(r >> 32) : (unsigned char)tokens[(r >> 32) % 22];
        }
        opened += open_and_touch(m, b.n, "mut.safetensors");
    }
    print_message("safetensors mutations: %zu of 20000 still opened\n", opened);
    free(m);
    wb_free(&b);
}

/* ---- sharded safetensors -------------------------------------------------------------- */

static void write_shards(void)
{
    wbuf a = { 0 }, b = { 0 };
    st_tensor ta[] = { { "enc.w", "F32", 2, { 2, 3 }, f32v, sizeof f32v }, { "enc.b", "F16", 1, { 4 }, f16v, 8 } };
    st_tensor tb[] = { { "dec.w", "BF16", 2, { 2, 2 }, bf16v, sizeof bf16v } };
    st_build(&a, ta, 2, "{\"format\":\"pt\"}", 8);
    st_build(&b, tb, 1, NULL, 8);
    assert_int_equal(wb_save(&a, tmp_path("m-00001-of-00002.safetensors")), 0);
    assert_int_equal(wb_save(&b, tmp_path("m-00002-of-00002.safetensors")), 0);
    wb_free(&a);
    wb_free(&b);
}

static fl_status open_index(const char *json, const char *name, fl_ckpt **c, fl_error *err)
{
    wbuf j = { 0 };
    wb_str(&j, json);
    assert_int_equal(wb_save(&j, tmp_path(name)), 0);
    wb_free(&j);
    return fl_ckpt_open(c, tmp_path(name), NULL, err);
}

#define SHARD1 "\"m-00001-of-00002.safetensors\""
#define SHARD2 "\"m-00002-of-00002.safetensors\""

static void test_st_index(void **state)
{
    (void)state;
    write_shards();
    fl_ckpt *c;
    fl_error err;
    const char *good = "{\"metadata\":{\"total_size\":40,\"note\":\"x\"},\"weight_map\":{\"enc.w\":" SHARD1
                       ",\"enc.b\":" SHARD1 ",\"dec.w\":" SHARD2 "}}";
    if (open_index(good, "m.safetensors.index.json", &c, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(fl_ckpt_format(c), "safetensors-index");
    assert_int_equal(fl_ckpt_count(c), 3);
    assert_string_equal(fl_ckpt_meta_get(c, "total_size"), "40");
    assert_string_equal(fl_ckpt_meta_get(c, "shards"), "2");
    assert_string_equal(fl_ckpt_meta_get(c, "m-00001-of-00002.safetensors: format"), "pt");
    int64_t s23[] = { 2, 3 }, s22[] = { 2, 2 };
    check_tensor(c, "enc.w", FL_F32, 2, s23, f32v, sizeof f32v);
    check_tensor(c, "dec.w", FL_BF16, 2, s22, bf16v, sizeof bf16v);
    fl_ckpt_close(c);

    static const struct {
        const char *json, *what;
    } bad[] = {
        { "{\"weight_map\":{\"enc.w\":" SHARD2 ",\"enc.b\":" SHARD1 ",\"dec.w\":" SHARD2 "}}",
          "index maps 'enc.w' to shard 'm-00002-of-00002.safetensors' but it is in shard 'm-00001" },
        { "{\"weight_map\":{\"enc.w\":" SHARD1 ",\"dec.w\":" SHARD2 "}}",
          "tensor 'enc.b' of shard 'm-00001-of-00002.safetensors' is not in the index" },
        { "{\"weight_map\":{\"enc.w\":" SHARD1 ",\"enc.b\":" SHARD1 ",\"dec.w\":" SHARD2 ",\"ghost\":" SHARD2 "}}",
          "index maps 'ghost' to shard 'm-00002-of-00002.safetensors', which has no such tensor" },
        { "{\"weight_map\":{\"enc.w\":\"nope.safetensors\"}}", "shard 'nope.safetensors': cannot open" },
        { "{\"weight_map\":{\"enc.w\":\"../m-00001-of-00002.safetensors\"}}", "not a file name inside" },
        { "{\"weight_map\":{\"enc.w\":\"/etc/passwd\"}}", "not a file name inside" },
        { "{\"weight_map\":{\"enc.w\":3}}", "weight_map['enc.w'] is a number" },
        { "{\"weight_map\":{\"a\":" SHARD1 ",\"a\":" SHARD1 "}}", "lists 'a' twice" },
        { "{\"metadata\":{}}", "\"weight_map\" is missing" },
        { "{\"metadata\":3,\"weight_map\":{}}", "\"metadata\" is a number" },
        { "{\"weight_map\":{}", "not valid JSON" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fl_status s = open_index(bad[i].json, "bad.safetensors.index.json", &c, &err);
        if (s == FL_OK) {
            fl_ckpt_close(c);
            fail_msg("bad index %zu opened", i);
        }
        if (!contains(err.msg, "bad.safetensors.index.json") || !contains(err.msg, bad[i].what))
            fail_msg("bad index %zu: '%s' lacks '%s'", i, err.msg, bad[i].what);
    }
    /* the same tensor in two shards */
    wbuf d = { 0 };
    st_tensor td[] = { { "enc.w", "F32", 2, { 2, 3 }, f32v, sizeof f32v } };
    st_build(&d, td, 1, NULL, 8);
    assert_int_equal(wb_save(&d, tmp_path("dup.safetensors")), 0);
    wb_free(&d);
    fl_status s = open_index("{\"weight_map\":{\"enc.w\":" SHARD1 ",\"enc.b\":" SHARD1 ",\"x\":\"dup.safetensors\"}}",
                             "dup.safetensors.index.json", &c, &err);
    assert_int_not_equal(s, FL_OK);
    assert_true(contains(err.msg, "enc.w"));
}

/* ---- allocation failures ---------------------------------------------------------------- */

/* Runs open(+load+close) with the N-th allocation failing, N = 0, 1, ... until it succeeds;
 * every failure must be FL_E_NOMEM (or the op's own error) and leave nothing allocated. */
static void fault_loop(const wbuf *b, const char *name)
{
    for (long n = 0;; n++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, n);
        fl_ckpt_options opt = { 0 };
        opt.alloc = &fa.iface;
        fl_ckpt *c;
        fl_error err;
        fl_status s = fl_ckpt_open_memory(&c, b->p, b->n, name, &opt, &err);
        fl_tensor t[16];
        size_t nt = 0;
        if (!s) {
            for (size_t i = 0; i < fl_ckpt_count(c) && !s && nt < 16; i++) {
                const fl_ckpt_tensor *ct = fl_ckpt_at(c, i);
                fl_dtype d;
                if (fl_ckpt_dtype_to_fl(ct->dtype, &d))
                    continue;
                t[nt] = FL_TENSOR_NULL;
                s = fl_ckpt_load_as(c, ct, d == FL_F16 ? FL_F32 : d, &t[nt], &err);
                if (!s)
                    nt++;
            }
            fl_ckpt_close(c);
        }
        for (size_t i = 0; i < nt; i++)
            fl_tensor_release(&t[i]);
        if (s && s != FL_E_NOMEM)
            fail_msg("%s: allocation %ld failing gave %s (%s)", name, n, fl_status_str(s), err.msg);
        if (fa.live_blocks)
            fail_msg("%s: allocation %ld failing left %zu blocks", name, n, fa.live_blocks);
        if (!s) {
            assert_true(fa.failures == 0 || n > 0);
            break;
        }
        assert_true(n < 100000);
    }
}

static void test_st_fault_injection(void **state)
{
    (void)state;
    wbuf b = { 0 };
    sample_safetensors(&b, 1);
    fault_loop(&b, "fault.safetensors");
    wb_free(&b);
}

/* ---- the pickle machine ----------------------------------------------------------------- */

static fl_pickle load_pickle(const wbuf *b)
{
    fl_pickle pk;
    fl_error err;
    if (fl_pickle_load(&pk, b->p, b->n, NULL, NULL, &err))
        fail_msg("%s", err.msg);
    return pk;
}

static void test_pickle_values(void **state)
{
    (void)state;
    for (int proto = 2; proto <= 5; proto += 2) {
        pkw w;
        pk_start(&w, proto, true);
        if (proto >= 4) { /* a FRAME header, as protocol 4 writes */
            pk_op(&w, 0x95);
            wb_le(&w.b, 0, 8);
        }
        pk_empty_dict(&w);
        pk_mark(&w);
        pk_str(&w, "small");
        pk_int(&w, 200);
        pk_str(&w, "mid");
        pk_int(&w, 60000);
        pk_str(&w, "neg");
        pk_int(&w, -5);
        pk_str(&w, "big");
        pk_int(&w, -(INT64_C(1) << 40));
        pk_str(&w, "pi");
        pk_float(&w, 3.25);
        pk_str(&w, "t");
        pk_op(&w, 0x88);
        pk_str(&w, "none");
        pk_op(&w, 'N');
        pk_str(&w, "bytes");
        pk_op(&w, 'C');
        wb_byte(&w.b, 3);
        wb_put(&w.b, "a\0b", 3);
        pk_str(&w, "list");
        pk_empty_list(&w);
        pk_mark(&w);
        pk_int(&w, 1);
        pk_int(&w, 2);
        pk_op(&w, 'e'); /* APPENDS */
        pk_str(&w, "again");
        pk_get(&w, 1); /* memo 1: the "small" key string */
        pk_str(&w, "huge");
        pk_op(&w, 0x8a); /* LONG1 of 9 bytes: 2^64, wider than int64 */
        wb_byte(&w.b, 9);
        wb_le(&w.b, 0, 8);
        wb_byte(&w.b, 1);
        pk_str(&w, "minus1");
        pk_op(&w, 0x8a); /* LONG1 of 9 bytes that still fits: -1 */
        wb_byte(&w.b, 9);
        wb_le(&w.b, UINT64_MAX, 8);
        wb_byte(&w.b, 0xff);
        pk_op(&w, 'u'); /* SETITEMS */
        pk_stop(&w);
        fl_pickle pk = load_pickle(&w.b);
        fl_pk *r = pk.root;
        assert_int_equal(r->type, FL_PK_DICT);
        assert_int_equal(fl_pk_dict_get(r, "small")->u.i, 200);
        assert_int_equal(fl_pk_dict_get(r, "mid")->u.i, 60000);
        assert_int_equal(fl_pk_dict_get(r, "neg")->u.i, -5);
        assert_int_equal(fl_pk_dict_get(r, "big")->u.i, -(INT64_C(1) << 40));
        assert_true(fl_pk_dict_get(r, "pi")->u.f == 3.25);
        assert_true(fl_pk_dict_get(r, "t")->u.b);
        assert_int_equal(fl_pk_dict_get(r, "none")->type, FL_PK_NONE);
        fl_pk *by = fl_pk_dict_get(r, "bytes");
        assert_int_equal(by->type, FL_PK_BYTES);
        assert_int_equal(by->u.str.len, 3);
        fl_pk *l = fl_pk_dict_get(r, "list");
        assert_int_equal(l->u.seq.n, 2);
        assert_true(fl_pk_is_str(fl_pk_dict_get(r, "again"), "small"));
        assert_int_equal(fl_pk_dict_get(r, "huge")->type, FL_PK_BIGINT);
        assert_int_equal(fl_pk_dict_get(r, "minus1")->u.i, -1);
        assert_int_equal(pk.protocol, proto);
        fl_pickle_free(&pk);
        wb_free(&w.b);
    }
}

/* Globals are never resolved: os.system("...") is an inert placeholder holding its call. */
static void test_pickle_never_executes(void **state)
{
    (void)state;
    pkw w;
    pk_start(&w, 2, true);
    pk_global(&w, "os", "system");
    pk_mark(&w);
    pk_str(&w, "echo pwned > /tmp/fl-pickle-pwned");
    pk_tuple(&w);
    pk_reduce(&w);
    pk_empty_dict(&w);
    pk_op(&w, 'b'); /* BUILD on the placeholder */
    pk_stop(&w);
    fl_pickle pk = load_pickle(&w.b);
    assert_int_equal(pk.root->type, FL_PK_OBJECT);
    assert_true(fl_pk_is_global(pk.root->u.obj.callable, "os", "system"));
    assert_int_equal(pk.root->u.obj.state->type, FL_PK_DICT);
    assert_int_not_equal(access("/tmp/fl-pickle-pwned", F_OK), 0);
    fl_pickle_free(&pk);
    wb_free(&w.b);
}

typedef struct pk_case {
    const char *name;
    const char *bytes;
    size_t len;
    fl_status code;
    const char *what;
} pk_case;

#define PK(s) s, sizeof s - 1

static const pk_case pk_cases[] = {
    { "empty", PK(""), FL_E_FORMAT, "without a STOP" },
    { "no-stop", PK("\x80\x02K\x01"), FL_E_FORMAT, "without a STOP" },
    { "proto6", PK("\x80\x06N."), FL_E_UNSUPPORTED, "protocol 6" },
    { "text-int", PK("\x80\x02I1\n."), FL_E_UNSUPPORTED, "(INT): outside the supported subset" },
    { "text-get", PK("\x80\x02Ng0\n."), FL_E_UNSUPPORTED, "(GET)" },
    { "inst", PK("\x80\x02(imod\nname\n."), FL_E_UNSUPPORTED, "(INST)" },
    { "ext1", PK("\x80\x02\x82\x01."), FL_E_UNSUPPORTED, "(EXT1)" },
    { "buffer", PK("\x80\x05\x97."), FL_E_UNSUPPORTED, "(NEXT_BUFFER)" },
    { "not-op", PK("\x80\x02\xff."), FL_E_FORMAT, "0xff: not a pickle opcode" },
    { "underflow", PK("\x80\x02R."), FL_E_FORMAT, "(REDUCE): stack underflow" },
    { "underflow-mark", PK("\x80\x02N(R."), FL_E_FORMAT, "nothing above the last MARK" },
    { "stop-empty", PK("\x80\x02."), FL_E_FORMAT, "(STOP): stack underflow" },
    { "get-unset", PK("\x80\x02h\x05."), FL_E_FORMAT, "memo index 5 was never set" },
    { "put-huge", PK("\x80\x02Nr\xff\xff\xff\x7f."), FL_E_FORMAT, "memo index 2147483647 out of range" },
    { "put-empty", PK("\x80\x02q\x00."), FL_E_FORMAT, "(BINPUT): empty stack" },
    { "str-past", PK("\x80\x02X\xff\xff\x00\x00" "ab."), FL_E_FORMAT, "runs past the end" },
    { "str8-past", PK("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff."), FL_E_FORMAT, "runs past the end" },
    { "arg-short", PK("\x80\x02J\x01\x02"), FL_E_FORMAT, "needs 4 bytes of argument" },
    { "long4-neg", PK("\x80\x02\x8b\xff\xff\xff\xff."), FL_E_FORMAT, "negative integer length" },
    { "frame-past", PK("\x80\x04\x95\x00\x01\x00\x00\x00\x00\x00\x00N."), FL_E_FORMAT, "frame of 256 bytes" },
    { "odd-setitems", PK("\x80\x02}(K\x01u."), FL_E_FORMAT, "odd number of items" },
    { "setitem-list", PK("\x80\x02]K\x01K\x02s."), FL_E_FORMAT, "sets items on a list" },
    { "append-int", PK("\x80\x02K\x01K\x02" "a."), FL_E_FORMAT, "appends to a int" },
    { "appends-nomark", PK("\x80\x02]K\x01" "e."), FL_E_FORMAT, "no MARK to pop to" },
    { "reduce-args", PK("\x80\x02" "cmod\nf\nK\x01R."), FL_E_FORMAT, "call arguments are a int, not a tuple" },
    { "global-nl", PK("\x80\x02" "cmod"), FL_E_FORMAT, "not terminated by a newline" },
    { "stack-global", PK("\x80\x04K\x01K\x02\x93."), FL_E_FORMAT, "not strings" },
    { "additems-list", PK("\x80\x04](K\x01\x90."), FL_E_FORMAT, "not a set" },
};

static void test_pickle_refuses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof pk_cases / sizeof *pk_cases; i++) {
        const pk_case *k = &pk_cases[i];
        fl_pickle pk;
        fl_error err;
        fl_status s = fl_pickle_load(&pk, k->bytes, k->len, NULL, NULL, &err);
        if (s == FL_OK) {
            fl_pickle_free(&pk);
            fail_msg("pickle case %s loaded", k->name);
        }
        if (s != k->code || !contains(err.msg, k->what) || !contains(err.msg, "pickle"))
            fail_msg("pickle case %s: %s '%s', expected %s '%s'", k->name, fl_status_str(s), err.msg,
                     fl_status_str(k->code), k->what);
    }
    /* limits */
    wbuf b = { 0 };
    wb_str(&b, "\x80\x02");
    for (int i = 0; i < 100; i++)
        wb_str(&b, "(");
    wb_str(&b, "N.");
    fl_pickle_limits lim = { 0 };
    lim.max_marks = 50;
    fl_pickle pk;
    fl_error err;
    assert_int_equal(fl_pickle_load(&pk, b.p, b.n, &lim, NULL, &err), FL_E_FORMAT);
    assert_true(contains(err.msg, "more than 50 nested MARKs"));
    b.n = 0;
    wb_str(&b, "\x80\x02");
    for (int i = 0; i < 100; i++)
        wb_str(&b, "N");
    wb_str(&b, ".");
    lim.max_stack = 10;
    assert_int_equal(fl_pickle_load(&pk, b.p, b.n, &lim, NULL, &err), FL_E_FORMAT);
    assert_true(contains(err.msg, "stack deeper than 10"));
    lim.max_stack = 0;
    lim.max_objects = 10;
    assert_int_equal(fl_pickle_load(&pk, b.p, b.n, &lim, NULL, &err), FL_E_FORMAT);
    assert_true(contains(err.msg, "more than 10 objects"));
    wb_free(&b);
}

/* ---- PyTorch checkpoints --------------------------------------------------------------- */

static void torch_sample(wbuf *out, int proto, bool memo, const char *folder, bool deflate, bool pad)
{
    assert_int_equal(torch_sample_build(out, proto, memo, folder, deflate, pad), 0);
}

static void check_torch_sample(fl_ckpt *c, const char *prefix)
{
    char n[128];
    assert_int_equal(fl_ckpt_count(c), 6);
    int64_t s34[] = { 3, 4 }, s43[] = { 4, 3 }, s4[] = { 4 }, s22[] = { 2, 2 }, s3[] = { 3 };
    snprintf(n, sizeof n, "%snet.w", prefix);
    check_tensor(c, n, FL_F32, 2, s34, st0, sizeof st0);
    float wT[12];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++)
            wT[i * 3 + j] = st0[j * 4 + i];
    snprintf(n, sizeof n, "%snet.wT", prefix);
    const fl_ckpt_tensor *t = fl_ckpt_find(c, n);
    assert_non_null(t);
    assert_false(t->contiguous);
    assert_int_equal(t->stride[0], 1);
    assert_int_equal(t->stride[1], 4);
    check_tensor(c, n, FL_F32, 2, s43, wT, sizeof wT);
    snprintf(n, sizeof n, "%snet.row", prefix);
    check_tensor(c, n, FL_F32, 1, s4, st0 + 8, 16);
    snprintf(n, sizeof n, "%snet.h", prefix);
    check_tensor(c, n, FL_F16, 2, s22, st1, sizeof st1);
    snprintf(n, sizeof n, "%snet.bf", prefix);
    check_tensor(c, n, FL_BF16, 1, s3, st2, sizeof st2);
    snprintf(n, sizeof n, "%ssteps", prefix);
    check_tensor(c, n, FL_I64, 0, NULL, st3, sizeof st3);
    /* f16 -> f32 and bf16 -> f32 on load */
    snprintf(n, sizeof n, "%snet.h", prefix);
    fl_tensor x = FL_TENSOR_NULL;
    fl_error err;
    assert_int_equal(fl_ckpt_load_as(c, fl_ckpt_find(c, n), FL_F32, &x, &err), FL_OK);
    const float *xf = fl_tensor_data(&x);
    assert_true(xf[0] == 1.0f && xf[1] == 2.0f && xf[2] == 3.0f && xf[3] == 4.0f);
    fl_tensor_release(&x);
    snprintf(n, sizeof n, "%snet.bf", prefix);
    assert_int_equal(fl_ckpt_load_as(c, fl_ckpt_find(c, n), FL_F64, &x, &err), FL_OK);
    const double *xd = fl_tensor_data(&x);
    assert_true(xd[0] == 1.0 && xd[1] == 2.0 && xd[2] == 3.0);
    fl_tensor_release(&x);
    snprintf(n, sizeof n, "%ssteps", prefix);
    assert_int_equal(fl_ckpt_load_as(c, fl_ckpt_find(c, n), FL_F32, &x, &err), FL_E_DTYPE);
}

static void test_torch_state_dict(void **state)
{
    (void)state;
    /* protocol 2 with memo (what torch.save writes), protocol 4 framing/MEMOIZE/STACK_GLOBAL,
     * both folder conventions, stored and deflated, with and without local padding */
    static const struct {
        int proto;
        bool memo;
        const char *folder;
        bool deflate, pad;
    } v[] = {
        { 2, true, "archive", false, true },
        { 2, false, "model", false, false },
        { 4, true, "archive", true, false },
        { 5, true, "my_checkpoint", true, true },
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        wbuf b = { 0 };
        torch_sample(&b, v[i].proto, v[i].memo, v[i].folder, v[i].deflate, v[i].pad);
        fl_ckpt *c;
        fl_error err;
        if (fl_ckpt_open_memory(&c, b.p, b.n, "sample.pt", NULL, &err))
            fail_msg("variant %zu: %s", i, err.msg);
        assert_string_equal(fl_ckpt_format(c), "pytorch-zip");
        check_torch_sample(c, "");
        assert_string_equal(fl_ckpt_meta_get(c, "torch.archive"), v[i].folder);
        assert_string_equal(fl_ckpt_meta_get(c, "torch.version"), "3");
        /* file order is the dict's order */
        assert_string_equal(fl_ckpt_at(c, 0)->name, "net.w");
        assert_string_equal(fl_ckpt_at(c, 5)->name, "steps");
        fl_ckpt_close(c);
        /* and from a file */
        const char *path = tmp_path("sample.ckpt");
        assert_int_equal(wb_save(&b, path), 0);
        if (fl_ckpt_open(&c, path, NULL, &err))
            fail_msg("variant %zu from file: %s", i, err.msg);
        check_torch_sample(c, "");
        /* storages are read on first use and shared; dropping the cache keeps loaded
         * tensors valid */
        fl_tensor t = FL_TENSOR_NULL;
        assert_int_equal(fl_ckpt_load(c, fl_ckpt_find(c, "net.row"), &t, &err), FL_OK);
        fl_ckpt_drop_cache(c);
        fl_ckpt_close(c);
        assert_memory_equal(fl_tensor_data(&t), st0 + 8, 16);
        fl_tensor_release(&t);
        wb_free(&b);
    }
}

static void test_torch_lightning_nested(void **state)
{
    (void)state;
    pkw w;
    pk_start(&w, 2, true);
    pk_lightning(&w);
    pk_stop(&w);
    wbuf b = { 0 };
    assert_int_equal(torch_build(&b, "model", &w.b, sample_storages, 4, false, true), 0);
    fl_ckpt *c;
    fl_error err;
    /* default root: the "state_dict" */
    if (fl_ckpt_open_memory(&c, b.p, b.n, "model.ckpt", NULL, &err))
        fail_msg("%s", err.msg);
    check_torch_sample(c, "");
    assert_string_equal(fl_ckpt_meta_get(c, "epoch"), "12");
    assert_string_equal(fl_ckpt_meta_get(c, "global_step"), "123456");
    assert_string_equal(fl_ckpt_meta_get(c, "pytorch-lightning_version"), "1.9.0");
    assert_string_equal(fl_ckpt_meta_get(c, "lr"), "0.0001");
    assert_string_equal(fl_ckpt_meta_get(c, "state_dict"), "dict, 6 entries");
    assert_string_equal(fl_ckpt_meta_get(c, "evil"), "object os.system");
    assert_string_equal(fl_ckpt_meta_get(c, "hyper_parameters"), "object omegaconf.dictconfig.DictConfig");
    assert_string_equal(fl_ckpt_meta_get(c, "torch.root"), "state_dict");
    fl_ckpt_close(c);
    /* the whole tree: names carry the path */
    fl_ckpt_options opt = { 0 };
    opt.root = "";
    if (fl_ckpt_open_memory(&c, b.p, b.n, "model.ckpt", &opt, &err))
        fail_msg("%s", err.msg);
    check_torch_sample(c, "state_dict.");
    fl_ckpt_close(c);
    /* an explicit root, and a wrong one */
    opt.root = "state_dict";
    if (fl_ckpt_open_memory(&c, b.p, b.n, "model.ckpt", &opt, &err))
        fail_msg("%s", err.msg);
    check_torch_sample(c, "");
    fl_ckpt_close(c);
    opt.root = "nope.x";
    assert_int_equal(fl_ckpt_open_memory(&c, b.p, b.n, "model.ckpt", &opt, &err), FL_E_INVALID);
    assert_true(contains(err.msg, "model.ckpt") && contains(err.msg, "no key matching 'nope.x'"));
    opt.root = "epoch.x";
    assert_int_equal(fl_ckpt_open_memory(&c, b.p, b.n, "model.ckpt", &opt, &err), FL_E_INVALID);
    assert_true(contains(err.msg, "inside a int"));
    wb_free(&b);
    wb_free(&w.b);
}

/* Parameters, _rebuild_from_type_v2, _rebuild_tensor_v3, a pickled nn.Module, and a
 * quantized tensor that is skipped with a note. */
static void test_torch_rebuild_variants(void **state)
{
    (void)state;
    int64_t s4[] = { 4 }, c1[] = { 1 }, s2[] = { 2 };
    pkw w;
    pk_start(&w, 2, true);
    pk_empty_dict(&w);
    pk_mark(&w);
    /* nn.Parameter: torch._utils._rebuild_parameter(tensor, True, OrderedDict()) */
    pk_str(&w, "param");
    pk_global(&w, "torch._utils", "_rebuild_parameter");
    pk_mark(&w);
    pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, s4, c1);
    pk_op(&w, 0x88);
    pk_ordered_dict(&w);
    pk_tuple(&w);
    pk_reduce(&w);
    /* torch._tensor._rebuild_from_type_v2(_rebuild_tensor_v2, Tensor, (args), {}) */
    pk_str(&w, "typed");
    pk_global(&w, "torch._tensor", "_rebuild_from_type_v2");
    pk_mark(&w);
    pk_global(&w, "torch._utils", "_rebuild_tensor_v2");
    pk_global(&w, "torch", "Tensor");
    pk_mark(&w);
    pk_mark(&w);
    pk_str(&w, "storage");
    pk_global(&w, "torch", "FloatStorage");
    pk_str(&w, "0");
    pk_str(&w, "cpu");
    pk_int(&w, 12);
    pk_tuple(&w);
    pk_op(&w, 'Q');
    pk_int(&w, 4);
    pk_int_tuple(&w, 1, s2);
    pk_int_tuple(&w, 1, c1);
    pk_op(&w, 0x89);
    pk_ordered_dict(&w);
    pk_tuple(&w);
    pk_empty_dict(&w);
    pk_tuple(&w);
    pk_reduce(&w);
    /* v3 over an untyped storage with an explicit dtype: uint8 bytes of storage 1 as f16 */
    pk_str(&w, "v3");
    pk_global(&w, "torch._utils", "_rebuild_tensor_v3");
    pk_mark(&w);
    pk_mark(&w);
    pk_str(&w, "storage");
    pk_global(&w, "torch", "UntypedStorage");
    pk_str(&w, "1");
    pk_str(&w, "cpu");
    pk_int(&w, 8);
    pk_tuple(&w);
    pk_op(&w, 'Q');
    pk_int(&w, 0);
    pk_int_tuple(&w, 1, s4);
    pk_int_tuple(&w, 1, c1);
    pk_op(&w, 0x89);
    pk_ordered_dict(&w);
    pk_global(&w, "torch", "float16");
    pk_tuple(&w);
    pk_reduce(&w);
    /* a whole pickled module: Linear.__dict__ with _parameters/_buffers/_modules */
    pk_str(&w, "mod");
    pk_global(&w, "torch.nn.modules.linear", "Linear");
    pk_empty_tuple(&w);
    pk_op(&w, 0x81);
    pk_empty_dict(&w);
    pk_mark(&w);
    pk_str(&w, "training");
    pk_op(&w, 0x88);
    pk_str(&w, "_parameters");
    pk_ordered_dict(&w);
    pk_str(&w, "bias");
    pk_tensor(&w, "FloatStorage", "0", 12, 10, 1, s2, c1);
    pk_op(&w, 's');
    pk_str(&w, "_modules");
    pk_ordered_dict(&w);
    pk_op(&w, 'u');
    pk_op(&w, 'b');
    /* a quantized tensor: not read, noted */
    pk_str(&w, "q");
    pk_global(&w, "torch._utils", "_rebuild_qtensor");
    pk_empty_tuple(&w);
    pk_reduce(&w);
    pk_op(&w, 'u');
    pk_stop(&w);
    wbuf b = { 0 };
    tz_storage untyped[] = { { st0, sizeof st0 }, { st1, sizeof st1 } };
    assert_int_equal(torch_build(&b, "archive", &w.b, untyped, 2, false, false), 0);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "variants.pt", NULL, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(fl_ckpt_count(c), 4);
    check_tensor(c, "param", FL_F32, 1, s4, st0, 16);
    check_tensor(c, "typed", FL_F32, 1, s2, st0 + 4, 8);
    check_tensor(c, "v3", FL_F16, 1, s4, st1, 8);
    check_tensor(c, "mod.bias", FL_F32, 1, s2, st0 + 10, 8);
    const char *skipped = fl_ckpt_meta_get(c, "torch.skipped");
    assert_non_null(skipped);
    assert_true(contains(skipped, "_rebuild_qtensor at 'q'"));
    fl_ckpt_close(c);
    wb_free(&b);
    wb_free(&w.b);
}

/* A data.pkl with one tensor entry written by `body` after "w": for the broken cases. */
typedef struct tz_case {
    const char *name, *what;
    fl_status code;
    int kind;
} tz_case;

enum {
    TZ_NO_PKL, TZ_TWO_PKL, TZ_BIG_ENDIAN, TZ_BAD_ORDER, TZ_NO_STORAGE, TZ_STORAGE_SIZE, TZ_STORAGE_CONFLICT,
    TZ_EXTENT, TZ_BAD_PID, TZ_BAD_TYPE, TZ_SIZE_STRIDE, TZ_NEG_SIZE, TZ_BAD_OPCODE, TZ_DUP_NAME, TZ_BIG_PKL,
    TZ_BAD_ARGS, TZ_OFFSET_TYPE, TZ_RANK, TZ_NOT_ZIP
};

static const tz_case tz_cases[] = {
    { "no-pkl.pt", "without '<folder>/data.pkl'", FL_E_FORMAT, TZ_NO_PKL },
    { "two-pkl.pt", "two data.pkl entries", FL_E_FORMAT, TZ_TWO_PKL },
    { "big-endian.pt", "big-endian, which is not supported", FL_E_UNSUPPORTED, TZ_BIG_ENDIAN },
    { "bad-order.pt", "neither 'little' nor 'big'", FL_E_FORMAT, TZ_BAD_ORDER },
    { "no-storage.pt", "tensor 'w': storage '7' has no zip entry 'archive/data/7'", FL_E_FORMAT, TZ_NO_STORAGE },
    { "storage-size.pt", "zip entry 'archive/data/0' holds 48 bytes but its storage is declared as F32 x 10",
      FL_E_FORMAT, TZ_STORAGE_SIZE },
    { "conflict.pt", "storage '0' is declared as F16 x 24 here and as F32 x 12 before", FL_E_FORMAT,
      TZ_STORAGE_CONFLICT },
    { "extent.pt", "tensor 'w': its elements reach past the end of archive/data/0 (48 bytes)", FL_E_FORMAT,
      TZ_EXTENT },
    { "bad-pid.pt", "persistent id is not ('storage', type, key, location, numel)", FL_E_FORMAT, TZ_BAD_PID },
    { "bad-type.pt", "storage type torch.QInt8Storage is not supported", FL_E_UNSUPPORTED, TZ_BAD_TYPE },
    { "size-stride.pt", "size has 2 entries but stride 1", FL_E_FORMAT, TZ_SIZE_STRIDE },
    { "neg-size.pt", "size[0] is not a non-negative int", FL_E_FORMAT, TZ_NEG_SIZE },
    { "bad-opcode.pt", "archive/data.pkl: pickle byte", FL_E_UNSUPPORTED, TZ_BAD_OPCODE },
    { "dup-name.pt", "duplicate tensor name 'a.b'", FL_E_FORMAT, TZ_DUP_NAME },
    { "big-pkl.pt", "more than the 64 accepted", FL_E_FORMAT, TZ_BIG_PKL },
    { "bad-args.pt", "_rebuild_tensor_v2 takes 6 or more arguments, not 2", FL_E_FORMAT, TZ_BAD_ARGS },
    { "offset-type.pt", "storage offset is not a non-negative int", FL_E_FORMAT, TZ_OFFSET_TYPE },
    { "rank.pt", "size has 9 entries, more than 8", FL_E_FORMAT, TZ_RANK },
    { "not-zip.pt", "not a readable zip archive", FL_E_FORMAT, TZ_NOT_ZIP },
};

static void build_tz_case(int kind, wbuf *out, fl_ckpt_options *opt)
{
    int64_t s3[] = { 3 }, c1[] = { 1 }, s22[] = { 2, 2 }, s12[] = { 12 };
    pkw w;
    pk_start(&w, 2, true);
    pk_empty_dict(&w);
    pk_str(&w, "w");
    switch (kind) {
    case TZ_NO_STORAGE: pk_tensor(&w, "FloatStorage", "7", 3, 0, 1, s3, c1); break;
    case TZ_STORAGE_SIZE: pk_tensor(&w, "FloatStorage", "0", 10, 0, 1, s3, c1); break;
    case TZ_STORAGE_CONFLICT:
        pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, s3, c1);
        pk_op(&w, 's');
        pk_str(&w, "w2");
        pk_tensor(&w, "HalfStorage", "0", 24, 0, 1, s3, c1);
        break;
    case TZ_EXTENT: pk_tensor(&w, "FloatStorage", "0", 12, 10, 1, s3, c1); break;
    case TZ_BAD_PID:
        pk_global(&w, "torch._utils", "_rebuild_tensor_v2");
        pk_mark(&w);
        pk_mark(&w);
        pk_str(&w, "storage");
        pk_tuple(&w);
        pk_op(&w, 'Q');
        pk_int(&w, 0);
        pk_int_tuple(&w, 1, s3);
        pk_int_tuple(&w, 1, c1);
        pk_op(&w, 0x89);
        pk_op(&w, 'N');
        pk_tuple(&w);
        pk_reduce(&w);
        break;
    case TZ_BAD_TYPE: pk_tensor(&w, "QInt8Storage", "0", 48, 0, 1, s3, c1); break;
    case TZ_SIZE_STRIDE: pk_tensor_strided(&w, "FloatStorage", "0", 12, 0, 2, s22, 1, c1); break;
    case TZ_NEG_SIZE: {
        int64_t neg[] = { -3 };
        pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, neg, c1);
        break;
    }
    case TZ_BAD_OPCODE: pk_op(&w, 'I'); break;
    case TZ_DUP_NAME:
        pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, s3, c1);
        pk_op(&w, 's');
        pk_str(&w, "a.b");
        pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, s3, c1);
        pk_op(&w, 's');
        pk_str(&w, "a");
        pk_empty_dict(&w);
        pk_str(&w, "b");
        pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, s3, c1);
        pk_op(&w, 's'); /* inner["b"]; the outer "a" is set below */
        break;
    case TZ_BAD_ARGS:
        pk_global(&w, "torch._utils", "_rebuild_tensor_v2");
        pk_int(&w, 1);
        pk_int(&w, 2);
        pk_op(&w, 0x86);
        pk_reduce(&w);
        break;
    case TZ_OFFSET_TYPE:
        pk_global(&w, "torch._utils", "_rebuild_tensor_v2");
        pk_mark(&w);
        pk_mark(&w);
        pk_str(&w, "storage");
        pk_global(&w, "torch", "FloatStorage");
        pk_str(&w, "0");
        pk_str(&w, "cpu");
        pk_int(&w, 12);
        pk_tuple(&w);
        pk_op(&w, 'Q');
        pk_str(&w, "zero");
        pk_int_tuple(&w, 1, s3);
        pk_int_tuple(&w, 1, c1);
        pk_op(&w, 0x89);
        pk_op(&w, 'N');
        pk_tuple(&w);
        pk_reduce(&w);
        break;
    case TZ_RANK: {
        int64_t r9[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
        pk_tensor(&w, "FloatStorage", "0", 12, 0, 9, r9, r9);
        break;
    }
    default: pk_tensor(&w, "FloatStorage", "0", 12, 0, 1, s12, c1); break;
    }
    pk_op(&w, 's');
    pk_stop(&w);
    zentry e[6];
    size_t n = 0;
    e[n++] = (zentry){ "archive/data.pkl", w.b.p, w.b.n, false, 0 };
    e[n++] = (zentry){ "archive/data/0", st0, sizeof st0, false, 0 };
    switch (kind) {
    case TZ_NO_PKL: e[0].name = "archive/other.pkl"; break;
    case TZ_TWO_PKL: e[n++] = (zentry){ "second/data.pkl", w.b.p, w.b.n, false, 0 }; break;
    case TZ_BIG_ENDIAN: e[n++] = (zentry){ "archive/byteorder", "big", 3, false, 0 }; break;
    case TZ_BAD_ORDER: e[n++] = (zentry){ "archive/byteorder", "middle", 6, false, 0 }; break;
    case TZ_BIG_PKL: opt->max_pickle_bytes = 64; break;
    default: break;
    }
    if (kind == TZ_NOT_ZIP) {
        out->n = 0;
        wb_str(out, "PK\x03\x04 but nothing that follows is a zip archive");
    } else {
        assert_int_equal(zip_build(out, e, n), 0);
    }
    wb_free(&w.b);
}

static void test_torch_broken_corpus(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tz_cases / sizeof *tz_cases; i++) {
        const tz_case *k = &tz_cases[i];
        wbuf b = { 0 };
        fl_ckpt_options opt = { 0 };
        build_tz_case(k->kind, &b, &opt);
        fl_ckpt *c;
        fl_error err;
        fl_status s = fl_ckpt_open_memory(&c, b.p, b.n, k->name, &opt, &err);
        if (s == FL_OK) {
            fl_ckpt_close(c);
            fail_msg("%s opened", k->name);
        }
        if (s != k->code || !contains(err.msg, k->what) || strncmp(err.msg, k->name, strlen(k->name)))
            fail_msg("%s: %s '%s', expected %s '%s'", k->name, fl_status_str(s), err.msg, fl_status_str(k->code),
                     k->what);
        /* and from a file named like it */
        assert_int_equal(wb_save(&b, tmp_path(k->name)), 0);
        s = fl_ckpt_open(&c, tmp_path(k->name), &opt, &err);
        if (s != k->code || !contains(err.msg, tmp_path(k->name)))
            fail_msg("%s from file: %s '%s'", k->name, fl_status_str(s), err.msg);
        wb_free(&b);
    }
    /* the control: the default case opens */
    wbuf b = { 0 };
    fl_ckpt_options opt = { 0 };
    build_tz_case(-1, &b, &opt);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "control.pt", &opt, &err))
        fail_msg("%s", err.msg);
    fl_ckpt_close(c);
    wb_free(&b);
}

/* A storage whose bytes were changed after the archive was written: the checkpoint opens
 * (sizes agree) but loading the tensor fails on libzip's CRC check, naming the tensor. */
static void test_torch_crc(void **state)
{
    (void)state;
    wbuf b = { 0 };
    torch_sample(&b, 2, true, "archive", false, false);
    /* the stored bytes of storage 0 (floats 0..11) appear verbatim: find and flip one */
    unsigned char *p = NULL;
    for (size_t i = 0; i + sizeof st0 <= b.n && !p; i++)
        if (memcmp(b.p + i, st0, sizeof st0) == 0)
            p = b.p + i;
    assert_non_null(p);
    p[5] ^= 0x40;
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "crc.pt", NULL, &err))
        fail_msg("%s", err.msg);
    fl_tensor t = FL_TENSOR_NULL;
    assert_int_equal(fl_ckpt_load(c, fl_ckpt_find(c, "net.w"), &t, &err), FL_E_FORMAT);
    assert_true(contains(err.msg, "crc.pt") && contains(err.msg, "tensor 'net.w'") && contains(err.msg, "CRC"));
    /* a storage that is fine still loads */
    assert_int_equal(fl_ckpt_load(c, fl_ckpt_find(c, "net.h"), &t, &err), FL_OK);
    fl_tensor_release(&t);
    fl_ckpt_close(c);
    wb_free(&b);
}

static void test_torch_truncations(void **state)
{
    (void)state;
    wbuf b = { 0 };
    torch_sample(&b, 2, true, "archive", false, true);
    for (size_t n = 0; n < b.n; n++) {
        fl_ckpt *c;
        fl_error err;
        if (fl_ckpt_open_memory(&c, b.p, n, "cut.pt", NULL, &err) == FL_OK)
            fail_msg("prefix of %zu of %zu bytes opened", n, b.n);
    }
    wb_free(&b);
    /* every prefix of data.pkl inside an otherwise good archive */
    pkw w;
    pk_start(&w, 2, true);
    pk_lightning(&w);
    pk_stop(&w);
    for (size_t n = 0; n < w.b.n; n++) {
        wbuf cut = { 0 }, z = { 0 };
        wb_put(&cut, w.b.p, n);
        assert_int_equal(torch_build(&z, "archive", &cut, sample_storages, 4, false, false), 0);
        fl_ckpt *c;
        fl_error err;
        if (fl_ckpt_open_memory(&c, z.p, z.n, "cutpkl.pt", NULL, &err) == FL_OK)
            fail_msg("data.pkl prefix of %zu of %zu bytes opened", n, w.b.n);
        assert_true(contains(err.msg, "data.pkl"));
        wb_free(&cut);
        wb_free(&z);
    }
    wb_free(&w.b);
}

/* Random changes to data.pkl (re-zipped so they reach the pickle reader) and to the raw
 * archive bytes: never a crash. */
static void test_torch_mutations(void **state)
{
    (void)state;
    pkw w;
    pk_start(&w, 2, true);
    pk_lightning(&w);
    pk_stop(&w);
    uint64_t seed = 777;
    size_t opened = 0;
    unsigned char *m = malloc(w.b.n);
    for (int it = 0; it < 4000; it++) {
        memcpy(m, w.b.p, w.b.n);
        int k = 1 + (int)(splitmix64(&seed) % 3);
        for (int j = 0; j < k; j++) {
            uint64_t r = splitmix64(&seed);
            const unsigned char ops[] = "().NKJMXqhRbsutQ\x80\x85\x86\x87\x88\x89\x8a\x93\x94";
            m[(r >> 8) % w.b.n] = r % 2 ? (unsigned char)(r >> 40) : ops[(r >> 40) % (sizeof ops - 1)];
        }
        wbuf pk = { 0 }, z = { 0 };
        wb_put(&pk, m, w.b.n);
        assert_int_equal(torch_build(&z, "archive", &pk, sample_storages, 4, false, false), 0);
        opened += open_and_touch(z.p, z.n, "mut.pt");
        wb_free(&pk);
        wb_free(&z);
    }
    free(m);
    wbuf b = { 0 };
    torch_sample(&b, 2, true, "archive", true, true);
    m = malloc(b.n);
    for (int it = 0; it < 4000; it++) {
        memcpy(m, b.p, b.n);
        uint64_t r = splitmix64(&seed);
        m[(r >> 8) % b.n] = (unsigned char)(r >> 40);
        opened += open_and_touch(m, b.n, "mutzip.pt");
    }
    print_message("torch mutations: %zu of 8000 still opened\n", opened);
    free(m);
    wb_free(&b);
    wb_free(&w.b);
}

static void test_torch_fault_injection(void **state)
{
    (void)state;
    pkw w;
    pk_start(&w, 2, true);
    pk_lightning(&w);
    pk_stop(&w);
    wbuf b = { 0 };
    assert_int_equal(torch_build(&b, "archive", &w.b, sample_storages, 4, true, false), 0);
    fault_loop(&b, "fault.pt");
    wb_free(&b);
    wb_free(&w.b);
}

/* ---- binding ------------------------------------------------------------------------ */

static fl_ckpt *bind_ckpt(wbuf *b)
{
    static float z[64];
    st_tensor t[] = {
        { "model.diffusion_model.in.weight", "F32", 2, { 4, 3 }, z, 48 },
        { "model.diffusion_model.in.bias", "F16", 1, { 4 }, z, 8 },
        { "model.diffusion_model.out.weight", "F32", 2, { 2, 4 }, z, 32 },
        { "model.diffusion_model.bn.num_batches_tracked", "I64", 0, { 0 }, z, 8 },
        { "first_stage_model.decoder.weight", "F32", 1, { 3 }, z, 12 },
        { "model_ema.decay", "F32", 0, { 0 }, z, 4 },
    };
    b->n = 0;
    st_build(b, t, sizeof t / sizeof *t, NULL, 8);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b->p, b->n, "vc2.safetensors", NULL, &err))
        fail_msg("%s", err.msg);
    return c;
}

static void test_bind_ok(void **state)
{
    (void)state;
    wbuf b = { 0 };
    fl_ckpt *c = bind_ckpt(&b);
    fl_tensor w_in = FL_TENSOR_NULL, b_in = FL_TENSOR_NULL, w_out = FL_TENSOR_NULL, extra = FL_TENSOR_NULL;
    fl_ckpt_want wants[] = {
        { "in.weight", FL_F32, 2, { 4, 3 }, &w_in, false },
        { "in.bias", FL_F32, 1, { 4 }, &b_in, false }, /* f16 in the file: converted */
        { "out.weight", FL_F32, 2, { 2, 4 }, &w_out, false },
        { "extra.scale", FL_F32, 1, { 1 }, &extra, true }, /* optional, absent */
    };
    const char *allow[] = { "*.num_batches_tracked", NULL };
    fl_bind_options opt = { "model.diffusion_model.", allow, true };
    fl_bind_report rep = { 0 };
    fl_error err;
    if (fl_ckpt_bind(c, wants, 4, &opt, &rep, &err))
        fail_msg("%s\n%s", err.msg, rep.text ? rep.text : "");
    assert_int_equal(rep.bound, 3);
    assert_int_equal(rep.allowed, 1);
    assert_int_equal(rep.missing + rep.unexpected + rep.wrong_shape + rep.wrong_dtype, 0);
    assert_null(rep.text);
    assert_int_equal(w_in.dtype, FL_F32);
    assert_int_equal(b_in.dtype, FL_F32);
    assert_int_equal(b_in.shape[0], 4);
    assert_int_equal(w_out.shape[1], 4);
    assert_null(extra.storage);
    fl_tensor_release(&w_in);
    fl_tensor_release(&b_in);
    fl_tensor_release(&w_out);
    fl_bind_report_free(&rep);
    /* dst NULL: check only */
    fl_ckpt_want check[] = { { "first_stage_model.decoder.weight", FL_F32, 1, { 3 }, NULL, false },
                             { "model_ema.decay", FL_F32, 0, { 0 }, NULL, false } };
    fl_bind_options none = { 0 };
    const char *allow_all[] = { "*", NULL };
    none.allow_unexpected = allow_all;
    assert_int_equal(fl_ckpt_bind(c, check, 2, &none, NULL, &err), FL_OK);
    fl_ckpt_close(c);
    wb_free(&b);
}

static void test_bind_reports_everything(void **state)
{
    (void)state;
    wbuf b = { 0 };
    fl_ckpt *c = bind_ckpt(&b);
    fl_tensor d[5];
    for (int i = 0; i < 5; i++)
        d[i] = FL_TENSOR_NULL;
    fl_ckpt_want wants[] = {
        { "in.weight", FL_F32, 2, { 3, 4 }, &d[0], false },  /* wrong shape */
        { "in.bias", FL_F32, 1, { 4 }, &d[1], false },       /* wrong dtype (convert off) */
        { "mid.weight", FL_F32, 2, { 4, 4 }, &d[2], false }, /* missing */
        { "mid.bias", FL_F32, 1, { 4 }, &d[3], false },      /* missing */
        { "extra", FL_F32, 1, { 1 }, &d[4], true },          /* optional */
    };
    fl_bind_options opt = { "model.diffusion_model.", NULL, false };
    fl_bind_report rep = { 0 };
    fl_error err;
    assert_int_equal(fl_ckpt_bind(c, wants, 5, &opt, &rep, &err), FL_E_FORMAT);
    /* one error, every key: out.weight and num_batches_tracked unexpected (not allowed) */
    const char *msg = err.msg;
    assert_true(contains(msg, "vc2.safetensors"));
    assert_true(contains(msg, "2 missing, 2 unexpected, 1 wrong shape, 1 wrong dtype"));
    assert_true(contains(msg, "missing model.diffusion_model.mid.weight"));
    assert_true(contains(msg, "missing model.diffusion_model.mid.bias"));
    assert_true(contains(msg, "unexpected model.diffusion_model.out.weight"));
    assert_true(contains(msg, "unexpected model.diffusion_model.bn.num_batches_tracked"));
    assert_true(contains(msg, "shape model.diffusion_model.in.weight (checkpoint [4, 3], model [3, 4])"));
    assert_true(contains(msg, "dtype model.diffusion_model.in.bias (checkpoint F16, model f32)"));
    assert_false(contains(msg, "first_stage_model")); /* outside the prefix */
    assert_int_equal(rep.missing, 2);
    assert_int_equal(rep.unexpected, 2);
    assert_int_equal(rep.wrong_shape, 1);
    assert_int_equal(rep.wrong_dtype, 1);
    assert_true(contains(rep.text, "wrong dtype model.diffusion_model.in.bias: checkpoint F16, model f32 (convert is off)"));
    for (int i = 0; i < 5; i++)
        assert_null(d[i].storage); /* nothing bound on failure */
    fl_bind_report_free(&rep);
    /* duplicate wants are a programmer error */
    fl_ckpt_want twice[] = { { "in.weight", FL_F32, 2, { 4, 3 }, NULL, false },
                             { "in.weight", FL_F32, 2, { 4, 3 }, NULL, false } };
    assert_int_equal(fl_ckpt_bind(c, twice, 2, &opt, NULL, &err), FL_E_INVALID);
    fl_ckpt_close(c);
    wb_free(&b);
}

/* Hundreds of bad keys: the message stays one line within the error record, with the
 * counts first and an ellipsis; the report lists them all. */
static void test_bind_many(void **state)
{
    (void)state;
    wbuf b = { 0 };
    fl_ckpt *c = bind_ckpt(&b);
    enum { N = 300 };
    fl_ckpt_want *w = calloc(N, sizeof *w);
    char (*names)[32] = calloc(N, sizeof *names);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "block.%d.weight", i);
        w[i] = (fl_ckpt_want){ names[i], FL_F32, 1, { 8 }, NULL, false };
    }
    fl_bind_report rep = { 0 };
    fl_error err;
    assert_int_equal(fl_ckpt_bind(c, w, N, NULL, &rep, &err), FL_E_FORMAT);
    assert_true(strlen(err.msg) < FL_ERRMSG_MAX);
    assert_true(contains(err.msg, "300 missing, 6 unexpected"));
    assert_true(contains(err.msg, "... (all in the bind report)"));
    size_t lines = 0;
    for (const char *p = rep.text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, N + 6);
    fl_bind_report_free(&rep);
    free(w);
    free(names);
    fl_ckpt_close(c);
    wb_free(&b);
}

/* ---- listing ------------------------------------------------------------------------ */

static void test_list(void **state)
{
    (void)state;
    wbuf b = { 0 };
    torch_sample(&b, 2, true, "archive", false, false);
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, b.p, b.n, "sample.pt", NULL, &err))
        fail_msg("%s", err.msg);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(fl_ckpt_list(f, c, NULL), 6);
    fclose(f);
    assert_true(contains(text, "format:   pytorch-zip"));
    assert_true(contains(text, "torch.archive = archive"));
    assert_true(contains(text, "net.wT"));
    assert_true(contains(text, "stored strided: stride [1, 4]"));
    assert_true(contains(text, "total:    6 tensors, 36 elements, 134 bytes (134 B)"));
    assert_true(contains(text, "F32     3 tensors, 112 bytes"));
    free(text);
    f = open_memstream(&text, &len);
    assert_int_equal(fl_ckpt_list(f, c, "net.w"), 2);
    fclose(f);
    assert_true(contains(text, "total:    2 tensors of 6 (filter 'net.w'), 24 elements, 96 bytes"));
    assert_false(contains(text, "net.row"));
    free(text);
    fl_ckpt_close(c);
    wb_free(&b);
}

/* The fuzz seed corpus (fuzz/corpus/, written by fuzz/seeds.c) and any regression inputs
 * a fuzzer found (fuzz/regressions/): each opens or is refused cleanly. Run from the
 * repository root, as make test does; skipped elsewhere. */
static void test_fuzz_corpus_files(void **state)
{
    (void)state;
    const char *dirs[] = { "fuzz/corpus/safetensors", "fuzz/corpus/torchzip", "fuzz/corpus/pickle",
                           "fuzz/regressions" };
    size_t files = 0, opened = 0;
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        DIR *d = opendir(dirs[i]);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dirs[i], e->d_name);
            FILE *f = fopen(p, "rb");
            if (!f)
                continue;
            wbuf b = { 0 };
            unsigned char buf[4096];
            size_t k;
            while ((k = fread(buf, 1, sizeof buf, f)) > 0)
                wb_put(&b, buf, k);
            fclose(f);
            if (strstr(dirs[i], "pickle")) {
                fl_pickle pk;
                fl_error err;
                if (fl_pickle_load(&pk, b.p, b.n, NULL, NULL, &err) == FL_OK) {
                    opened++;
                    fl_pickle_free(&pk);
                }
            } else {
                opened += open_and_touch(b.p, b.n, e->d_name);
            }
            wb_free(&b);
            files++;
        }
        closedir(d);
    }
    if (!files)
        skip();
    print_message("fuzz corpus: %zu files, %zu opened\n", files, opened);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_st_roundtrip_memory),
        cmocka_unit_test(test_st_roundtrip_file),
        cmocka_unit_test(test_st_unaligned_data),
        cmocka_unit_test(test_st_empty_and_null_metadata),
        cmocka_unit_test(test_st_all_dtypes),
        cmocka_unit_test(test_st_broken_corpus),
        cmocka_unit_test(test_st_broken_framing),
        cmocka_unit_test(test_st_truncations),
        cmocka_unit_test(test_st_mutations),
        cmocka_unit_test(test_st_index),
        cmocka_unit_test(test_st_fault_injection),
        cmocka_unit_test(test_pickle_values),
        cmocka_unit_test(test_pickle_never_executes),
        cmocka_unit_test(test_pickle_refuses),
        cmocka_unit_test(test_torch_state_dict),
        cmocka_unit_test(test_torch_lightning_nested),
        cmocka_unit_test(test_torch_rebuild_variants),
        cmocka_unit_test(test_torch_broken_corpus),
        cmocka_unit_test(test_torch_crc),
        cmocka_unit_test(test_torch_truncations),
        cmocka_unit_test(test_torch_mutations),
        cmocka_unit_test(test_torch_fault_injection),
        cmocka_unit_test(test_bind_ok),
        cmocka_unit_test(test_bind_reports_everything),
        cmocka_unit_test(test_bind_many),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_fuzz_corpus_files),
    };
    return cmocka_run_group_tests_name("checkpoint", tests, setup_dir, teardown_dir);
}
