/* cmocka suite for core/state: named arrays put/get/replace, every type bit-exact, names
 * checked, errors naming the entry, entry order, and copies owned by the state. (The file
 * round trip, fl_state_save_file / fl_state_load_file, is in tests/test_h5io.c.) */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/state.h"

static const fl_state_type all_types[] = { FL_STATE_U8, FL_STATE_I32, FL_STATE_I64, FL_STATE_F32,
                                           FL_STATE_F64 };

static void assert_msg_has(const fl_error *e, const char *needle)
{
    if (!strstr(e->msg, needle))
        fail_msg("error message \"%s\" does not contain \"%s\"", e->msg, needle);
}

static void test_type_sizes_and_names(void **unused)
{
    (void)unused;
    static const size_t sizes[] = { 1, 4, 8, 4, 8 };
    static const char *const names[] = { "u8", "i32", "i64", "f32", "f64" };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(fl_state_type_size(all_types[i]), sizes[i]);
        assert_string_equal(fl_state_type_name(all_types[i]), names[i]);
    }
    assert_int_equal(fl_state_type_size(FL_STATE_TYPE_COUNT), 0);
    assert_string_equal(fl_state_type_name(FL_STATE_TYPE_COUNT), "?");
    assert_int_equal(fl_state_type_size((fl_state_type)-1), 0);
    assert_string_equal(fl_state_type_name((fl_state_type)-1), "?");
}

static void test_new_free(void **unused)
{
    (void)unused;
    fl_state_free(NULL); /* allowed */
    fl_state *s = fl_state_new();
    assert_non_null(s);
    assert_int_equal(fl_state_len(s), 0);
    assert_null(fl_state_entry(s, 0, NULL, NULL, NULL));
    assert_null(fl_state_find(s, "x", NULL, NULL));
    fl_state_free(s);
}

/* Every type: values with awkward bit patterns come back bit for bit (NaN payloads, -0,
 * denormals, extremes). */
static void test_put_get_every_type_bit_exact(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    uint8_t u8[5] = { 0, 1, 127, 128, 255 };
    int32_t i32[5] = { INT32_MIN, -1, 0, 1, INT32_MAX };
    int64_t i64[5] = { INT64_MIN, -1, 0, (int64_t)1 << 53 | 1, INT64_MAX };
    uint32_t f32bits[5] = { 0x7fc12345u, 0x80000000u, 0x00000001u, 0x7f800000u, 0xff7fffffu };
    uint64_t f64bits[5] = { 0x7ff8000000abcdefull, 0x8000000000000000ull, 0x0000000000000001ull,
                            0xfff0000000000000ull, 0x3fb999999999999aull };
    float f32[5];
    double f64[5];
    memcpy(f32, f32bits, sizeof f32);
    memcpy(f64, f64bits, sizeof f64);
    const void *src[5] = { u8, i32, i64, f32, f64 };
    const char *names[5] = { "m/u8", "m/i32", "m/i64", "m/f32", "m/f64" };
    fl_error e;
    for (int i = 0; i < 5; i++)
        assert_int_equal(fl_state_put(s, names[i], all_types[i], src[i], 5, &e), FL_OK);
    assert_int_equal(fl_state_len(s), 5);
    for (int i = 0; i < 5; i++) {
        unsigned char out[40];
        memset(out, 0xEE, sizeof out);
        assert_int_equal(fl_state_get(s, names[i], all_types[i], out, 5, &e), FL_OK);
        size_t bytes = 5 * fl_state_type_size(all_types[i]);
        assert_memory_equal(out, src[i], bytes);
        for (size_t k = bytes; k < sizeof out; k++) /* nothing written past count values */
            assert_int_equal(out[k], 0xEE);
        fl_state_type t;
        int64_t n;
        const void *p = fl_state_find(s, names[i], &t, &n);
        assert_non_null(p);
        assert_int_equal(t, all_types[i]);
        assert_int_equal(n, 5);
        assert_memory_equal(p, src[i], bytes);
        assert_true(p != src[i]); /* a copy */
    }
    fl_state_free(s);
}

static void test_scalars(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    fl_error e;
    assert_int_equal(fl_state_put_i64(s, "run/emitted", INT64_MIN + 7, &e), FL_OK);
    assert_int_equal(fl_state_put_f64(s, "run/seconds", -0.0, &e), FL_OK);
    int64_t v = 0;
    double d = 1;
    assert_int_equal(fl_state_get_i64(s, "run/emitted", &v, &e), FL_OK);
    assert_true(v == INT64_MIN + 7);
    assert_int_equal(fl_state_get_f64(s, "run/seconds", &d, &e), FL_OK);
    assert_true(d == 0.0 && signbit(d));
    /* a scalar is a one-value array of its type */
    fl_state_type t;
    int64_t n;
    assert_non_null(fl_state_find(s, "run/emitted", &t, &n));
    assert_int_equal(t, FL_STATE_I64);
    assert_int_equal(n, 1);
    assert_non_null(fl_state_find(s, "run/seconds", &t, &n));
    assert_int_equal(t, FL_STATE_F64);
    assert_int_equal(n, 1);
    /* scalar getters check the type */
    assert_int_equal(fl_state_get_f64(s, "run/emitted", &d, &e), FL_E_INVALID);
    assert_msg_has(&e, "run/emitted");
    assert_int_equal(fl_state_get_i64(s, "run/seconds", &v, &e), FL_E_INVALID);
    assert_msg_has(&e, "run/seconds");
    fl_state_free(s);
}

/* The state copies what is put: changing the caller's array afterwards changes nothing. */
static void test_put_copies(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    double v[3] = { 1, 2, 3 };
    char name[16] = "a/b";
    assert_int_equal(fl_state_put(s, name, FL_STATE_F64, v, 3, NULL), FL_OK);
    v[1] = 99;
    name[0] = 'z';
    double out[3];
    assert_int_equal(fl_state_get(s, "a/b", FL_STATE_F64, out, 3, NULL), FL_OK);
    assert_true(out[0] == 1 && out[1] == 2 && out[2] == 3);
    assert_null(fl_state_find(s, "z/b", NULL, NULL));
    fl_state_free(s);
}

/* Replacing keeps the entry's place and the number of entries, and takes the new type and
 * count. */
static void test_replace(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    int32_t a[4] = { 1, 2, 3, 4 };
    double b[2] = { 0.5, -0.25 };
    assert_int_equal(fl_state_put(s, "first", FL_STATE_I32, a, 4, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "second", FL_STATE_I32, a, 2, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "third", FL_STATE_U8, "xyz", 3, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "second", FL_STATE_F64, b, 2, NULL), FL_OK);
    assert_int_equal(fl_state_len(s), 3);
    fl_state_type t;
    const void *data;
    int64_t n;
    assert_string_equal(fl_state_entry(s, 0, NULL, NULL, NULL), "first");
    assert_string_equal(fl_state_entry(s, 1, &t, &data, &n), "second");
    assert_int_equal(t, FL_STATE_F64);
    assert_int_equal(n, 2);
    assert_memory_equal(data, b, sizeof b);
    assert_string_equal(fl_state_entry(s, 2, NULL, NULL, NULL), "third");
    assert_null(fl_state_entry(s, 3, NULL, NULL, NULL));
    /* the old type is gone */
    fl_error e;
    int32_t back[2];
    assert_int_equal(fl_state_get(s, "second", FL_STATE_I32, back, 2, &e), FL_E_INVALID);
    /* replacing by its own data (a pointer into the state) is safe */
    const void *own = fl_state_find(s, "first", &t, &n);
    assert_int_equal(fl_state_put(s, "first", t, own, n, &e), FL_OK);
    int32_t got[4];
    assert_int_equal(fl_state_get(s, "first", FL_STATE_I32, got, 4, &e), FL_OK);
    assert_memory_equal(got, a, sizeof a);
    /* and by an empty array */
    assert_int_equal(fl_state_put(s, "third", FL_STATE_U8, NULL, 0, &e), FL_OK);
    assert_non_null(fl_state_find(s, "third", &t, &n));
    assert_int_equal(n, 0);
    assert_int_equal(fl_state_get(s, "third", FL_STATE_U8, NULL, 0, &e), FL_OK);
    fl_state_free(s);
}

/* Many entries (the table grows): every one found, in the order first put. */
static void test_many_entries_order(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    enum { N = 1000 };
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "e/%d", (i * 7919) % N);
        int64_t v = i;
        assert_int_equal(fl_state_put(s, name, FL_STATE_I64, &v, 1, NULL), FL_OK);
    }
    /* replacing some does not move them */
    for (int i = 0; i < N; i += 10) {
        snprintf(name, sizeof name, "e/%d", (i * 7919) % N);
        assert_int_equal(fl_state_put_i64(s, name, -i, NULL), FL_OK);
    }
    assert_int_equal(fl_state_len(s), N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "e/%d", (i * 7919) % N);
        assert_string_equal(fl_state_entry(s, (size_t)i, NULL, NULL, NULL), name);
        int64_t v;
        assert_int_equal(fl_state_get_i64(s, name, &v, NULL), FL_OK);
        assert_int_equal(v, i % 10 ? i : -i);
    }
    fl_state_free(s);
}

static void test_get_errors_name_the_entry(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    float q[4] = { 1, 2, 3, 4 };
    assert_int_equal(fl_state_put(s, "sched/queue", FL_STATE_F32, q, 4, NULL), FL_OK);
    fl_error e;
    float out[8];
    memset(out, 0x5A, sizeof out);
    assert_int_equal(fl_state_get(s, "sched/queue", FL_STATE_F32, out, 8, &e), FL_E_INVALID);
    assert_int_equal(e.code, FL_E_INVALID);
    assert_string_equal(e.msg, "state: sched/queue: expected 8 f32 values, found 4 f32");
    for (int i = 0; i < 8; i++) { /* nothing copied on error */
        uint32_t b;
        memcpy(&b, &out[i], 4);
        assert_int_equal(b, 0x5A5A5A5Au);
    }
    assert_int_equal(fl_state_get(s, "sched/queue", FL_STATE_F64, out, 4, &e), FL_E_INVALID);
    assert_string_equal(e.msg, "state: sched/queue: expected 4 f64 values, found 4 f32");
    assert_int_equal(fl_state_get(s, "sched/queue", FL_STATE_F32, out, 3, &e), FL_E_INVALID);
    assert_msg_has(&e, "expected 3 f32");
    assert_int_equal(fl_state_get(s, "sched/missing", FL_STATE_F32, out, 4, &e), FL_E_INVALID);
    assert_string_equal(e.msg, "state: sched/missing: missing");
    /* names are exact: no prefix or case match */
    assert_int_equal(fl_state_get(s, "sched/queu", FL_STATE_F32, out, 4, NULL), FL_E_INVALID);
    assert_int_equal(fl_state_get(s, "Sched/queue", FL_STATE_F32, out, 4, NULL), FL_E_INVALID);
    assert_int_equal(fl_state_get(s, "sched/queue/", FL_STATE_F32, out, 4, NULL), FL_E_INVALID);
    assert_int_equal(fl_state_get(s, "sched/queue", FL_STATE_F32, out, 4, NULL), FL_OK);
    fl_state_free(s);
}

static void test_names_checked(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    fl_error e;
    char longest[FL_STATE_NAME_MAX + 2];
    memset(longest, 'a', FL_STATE_NAME_MAX);
    longest[FL_STATE_NAME_MAX] = 0;
    assert_int_equal(fl_state_put_i64(s, longest, 1, &e), FL_OK);
    assert_int_equal(fl_state_put_i64(s, "Az09_./x", 1, &e), FL_OK);
    longest[FL_STATE_NAME_MAX] = 'a';
    longest[FL_STATE_NAME_MAX + 1] = 0;
    assert_int_equal(fl_state_put_i64(s, longest, 1, &e), FL_E_INVALID);
    assert_msg_has(&e, "invalid entry name");
    static const char *const bad[] = { "", "a b", "a-b", "a|b", "a\tb", "caf\xc3\xa9", "a:b", "a\\b" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_error_clear(&e);
        assert_int_equal(fl_state_put_i64(s, bad[i], 1, &e), FL_E_INVALID);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        assert_msg_has(&e, quoted);
    }
    assert_int_equal(fl_state_len(s), 2); /* nothing added by the refusals */
    fl_state_free(s);
}

static void test_put_argument_errors(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    fl_error e;
    int64_t v = 1;
    assert_int_equal(fl_state_put(s, "t/bad", FL_STATE_TYPE_COUNT, &v, 1, &e), FL_E_INVALID);
    assert_msg_has(&e, "t/bad");
    assert_int_equal(fl_state_put(s, "t/neg", FL_STATE_I64, &v, -1, &e), FL_E_INVALID);
    assert_msg_has(&e, "t/neg");
    assert_int_equal(fl_state_put(s, "t/null", FL_STATE_I64, NULL, 2, &e), FL_E_INVALID);
    assert_msg_has(&e, "t/null");
    /* a count no memory can hold is refused before anything is allocated */
    assert_int_equal(fl_state_put(s, "t/huge", FL_STATE_F64, &v, INT64_MAX, &e), FL_E_NOMEM);
    assert_msg_has(&e, "t/huge");
    /* 2^61 + 1 f64 values: the byte count would wrap around to 8 */
    assert_int_equal(fl_state_put(s, "t/wrap", FL_STATE_F64, &v, (INT64_C(1) << 61) + 1, &e), FL_E_NOMEM);
    assert_msg_has(&e, "t/wrap");
    assert_int_equal(fl_state_len(s), 0);
    /* an empty array needs no data */
    assert_int_equal(fl_state_put(s, "t/empty", FL_STATE_F32, NULL, 0, &e), FL_OK);
    assert_int_equal(fl_state_len(s), 1);
    /* a refused replacement leaves the entry as it was */
    assert_int_equal(fl_state_put_i64(s, "t/keep", 42, &e), FL_OK);
    assert_int_equal(fl_state_put(s, "t/keep", FL_STATE_I64, NULL, 3, &e), FL_E_INVALID);
    int64_t got = 0;
    assert_int_equal(fl_state_get_i64(s, "t/keep", &got, &e), FL_OK);
    assert_int_equal(got, 42);
    /* errors without a record still return the code */
    assert_int_equal(fl_state_put(s, "", FL_STATE_I64, &v, 1, NULL), FL_E_INVALID);
    assert_int_equal(fl_state_get_i64(s, "nope", &got, NULL), FL_E_INVALID);
    fl_state_free(s);
}

/* fl_state_find's outputs may be NULL; fl_state_entry's too. */
static void test_find_and_entry_optional_outputs(void **unused)
{
    (void)unused;
    fl_state *s = fl_state_new();
    int32_t v[3] = { 7, 8, 9 };
    assert_int_equal(fl_state_put(s, "k", FL_STATE_I32, v, 3, NULL), FL_OK);
    const int32_t *p = fl_state_find(s, "k", NULL, NULL);
    assert_non_null(p);
    assert_int_equal(p[2], 9);
    int64_t n = 0;
    assert_non_null(fl_state_find(s, "k", NULL, &n));
    assert_int_equal(n, 3);
    fl_state_type t = FL_STATE_U8;
    assert_non_null(fl_state_find(s, "k", &t, NULL));
    assert_int_equal(t, FL_STATE_I32);
    const void *data = NULL;
    assert_string_equal(fl_state_entry(s, 0, NULL, &data, NULL), "k");
    assert_ptr_equal(data, p);
    fl_state_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_sizes_and_names),
        cmocka_unit_test(test_new_free),
        cmocka_unit_test(test_put_get_every_type_bit_exact),
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_put_copies),
        cmocka_unit_test(test_replace),
        cmocka_unit_test(test_many_entries_order),
        cmocka_unit_test(test_get_errors_name_the_entry),
        cmocka_unit_test(test_names_checked),
        cmocka_unit_test(test_put_argument_errors),
        cmocka_unit_test(test_find_and_entry_optional_outputs),
    };
    return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
