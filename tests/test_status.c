/* cmocka suite for core/status: status names, error records, prefixes, clipping, FL_ASSERT. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/status.h"

static const fl_status all_status[] = {
    FL_OK,       FL_E_NOMEM, FL_E_INVALID, FL_E_SHAPE,   FL_E_DTYPE,       FL_E_DEVICE,
    FL_E_IO,     FL_E_FORMAT, FL_E_RANGE,  FL_E_NUMERIC, FL_E_UNSUPPORTED, FL_E_INTERRUPTED,
};
#define N_STATUS (sizeof all_status / sizeof all_status[0])

/* An error record with guard bytes on both sides, to see writes past the record. */
typedef struct guarded_error {
    unsigned char before[64];
    fl_error err;
    unsigned char after[64];
} guarded_error;

static void guard_init(guarded_error *g)
{
    memset(g, 0xA5, sizeof *g);
    fl_error_clear(&g->err);
}

static void guard_check(const guarded_error *g)
{
    for (size_t i = 0; i < sizeof g->before; i++)
        if (g->before[i] != 0xA5 || g->after[i] != 0xA5)
            fail_msg("guard byte %zu around the fl_error was overwritten", i);
}

static void fill_chars(char *buf, size_t n, char c)
{
    memset(buf, c, n);
    buf[n] = '\0';
}

/* ---- names ---------------------------------------------------------------------------- */

static void test_status_names_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_STATUS; i++) {
        const char *a = fl_status_str(all_status[i]);
        assert_non_null(a);
        assert_true(strlen(a) > 0);
        assert_string_not_equal(a, "unknown status");
        for (size_t j = 0; j < i; j++)
            if (strcmp(a, fl_status_str(all_status[j])) == 0)
                fail_msg("status %d and %d share the name \"%s\"", (int)all_status[i],
                         (int)all_status[j], a);
    }
    assert_string_equal(fl_status_str(FL_OK), "ok");
    assert_string_equal(fl_status_str(FL_E_NOMEM), "out of memory");
}

static void test_status_str_unknown(void **state)
{
    (void)state;
    assert_string_equal(fl_status_str((fl_status)1), "unknown status");
    assert_string_equal(fl_status_str((fl_status)-12), "unknown status");
    assert_string_equal(fl_status_str((fl_status)-1000), "unknown status");
}

/* ---- set / clear / msg ---------------------------------------------------------------- */

static void test_error_set_returns_code_and_formats(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_STATUS; i++) {
        fl_error e;
        fl_error_clear(&e);
        fl_status st = fl_error_set(&e, all_status[i], "key %s: %d of %.2f (%%)", "lr", 3, 0.125);
        assert_int_equal(st, all_status[i]);
        assert_int_equal(e.code, all_status[i]);
        assert_string_equal(e.msg, "key lr: 3 of 0.12 (%)");
        assert_string_equal(fl_error_msg(&e), "key lr: 3 of 0.12 (%)");
    }
}

static void test_error_set_overwrites(void **state)
{
    (void)state;
    fl_error e;
    fl_error_set(&e, FL_E_IO, "a long first message about file %s", "x.h5");
    fl_error_set(&e, FL_E_SHAPE, "short");
    assert_int_equal(e.code, FL_E_SHAPE);
    assert_string_equal(e.msg, "short");
}

static void test_error_null_record(void **state)
{
    (void)state;
    assert_int_equal(fl_error_set(NULL, FL_E_IO, "file %s", "a"), FL_E_IO);
    assert_int_equal(fl_error_set(NULL, FL_OK, "nothing"), FL_OK);
    assert_int_equal(fl_error_prefix(NULL, "ctx %d", 1), FL_E_INVALID); /* still a failure */
    fl_error_clear(NULL);
    const char *m = fl_error_msg(NULL);
    assert_non_null(m);
}

static void test_error_clear(void **state)
{
    (void)state;
    fl_error e;
    fl_error_set(&e, FL_E_NUMERIC, "singular matrix");
    fl_error_clear(&e);
    assert_int_equal(e.code, FL_OK);
    assert_string_equal(e.msg, "");
    assert_string_equal(fl_error_msg(&e), "ok");
}

static void test_error_msg_falls_back_to_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_STATUS; i++) {
        fl_error e;
        fl_error_clear(&e);
        e.code = all_status[i];
        assert_string_equal(fl_error_msg(&e), fl_status_str(all_status[i]));
    }
    fl_error e;
    fl_error_set(&e, FL_E_RANGE, "%s", "");
    assert_string_equal(fl_error_msg(&e), "out of range");
}

static void test_error_set_clips_long_message(void **state)
{
    (void)state;
    static char longmsg[4 * FL_ERRMSG_MAX];
    fill_chars(longmsg, sizeof longmsg - 1, 'x');
    guarded_error g;
    guard_init(&g);
    assert_int_equal(fl_error_set(&g.err, FL_E_FORMAT, "%s", longmsg), FL_E_FORMAT);
    guard_check(&g);
    assert_int_equal(strlen(g.err.msg), FL_ERRMSG_MAX - 1);
    assert_memory_equal(g.err.msg, longmsg, FL_ERRMSG_MAX - 1);
}

/* ---- prefix --------------------------------------------------------------------------- */

static void test_error_prefix_composes(void **state)
{
    (void)state;
    fl_error e;
    fl_error_set(&e, FL_E_FORMAT, "line %d: unexpected '%c'", 12, '}');
    assert_int_equal(fl_error_prefix(&e, "config %s", "run.lua"), FL_E_FORMAT);
    assert_string_equal(e.msg, "config run.lua: line 12: unexpected '}'");
    assert_int_equal(e.code, FL_E_FORMAT);
    assert_int_equal(fl_error_prefix(&e, "experiment"), FL_E_FORMAT);
    assert_string_equal(e.msg, "experiment: config run.lua: line 12: unexpected '}'");
}

static void test_error_prefix_on_empty_message_uses_name(void **state)
{
    (void)state;
    fl_error e;
    fl_error_clear(&e);
    e.code = FL_E_NOMEM;
    assert_int_equal(fl_error_prefix(&e, "tensor %s", "x"), FL_E_NOMEM);
    assert_string_equal(e.msg, "tensor x: out of memory");
    fl_error_clear(&e);
    assert_int_equal(fl_error_prefix(&e, "ctx"), FL_OK);
    assert_string_equal(e.msg, "ctx: ok");
}

/* Long prefixes and long inner messages are clipped to FL_ERRMSG_MAX - 1, the outer
 * context kept first, and nothing is written outside the record. */
static void test_error_prefix_clips(void **state)
{
    (void)state;
    static char inner[2 * FL_ERRMSG_MAX], outer[2 * FL_ERRMSG_MAX], want[4 * FL_ERRMSG_MAX];
    const size_t inner_lens[] = { 0, 1, 100, FL_ERRMSG_MAX - 3, FL_ERRMSG_MAX - 2,
                                  FL_ERRMSG_MAX - 1, FL_ERRMSG_MAX, 2 * FL_ERRMSG_MAX - 1 };
    const size_t outer_lens[] = { 0, 1, 100, FL_ERRMSG_MAX - 3, FL_ERRMSG_MAX - 2,
                                  FL_ERRMSG_MAX - 1, FL_ERRMSG_MAX, 2 * FL_ERRMSG_MAX - 1 };
    for (size_t i = 0; i < sizeof inner_lens / sizeof inner_lens[0]; i++) {
        for (size_t o = 0; o < sizeof outer_lens / sizeof outer_lens[0]; o++) {
            fill_chars(inner, inner_lens[i], 'i');
            fill_chars(outer, outer_lens[o], 'o');
            guarded_error g;
            guard_init(&g);
            fl_error_set(&g.err, FL_E_IO, "%s", inner);
            assert_int_equal(fl_error_prefix(&g.err, "%s", outer), FL_E_IO);
            guard_check(&g);
            /* expected: clip(clip(outer) + ": " + (clip(inner) or the status name)) */
            size_t ol = outer_lens[o] < FL_ERRMSG_MAX ? outer_lens[o] : FL_ERRMSG_MAX - 1;
            size_t il = inner_lens[i] < FL_ERRMSG_MAX ? inner_lens[i] : FL_ERRMSG_MAX - 1;
            const char *old = il ? inner : fl_status_str(FL_E_IO);
            size_t oldl = il ? il : strlen(old);
            memcpy(want, outer, ol);
            memcpy(want + ol, ": ", 2);
            memcpy(want + ol + 2, old, oldl);
            size_t total = ol + 2 + oldl;
            if (total > FL_ERRMSG_MAX - 1)
                total = FL_ERRMSG_MAX - 1;
            want[total] = '\0';
            if (strcmp(g.err.msg, want) != 0)
                fail_msg("inner %zu, outer %zu: got %zu chars, want %zu", inner_lens[i],
                         outer_lens[o], strlen(g.err.msg), total);
        }
    }
}

static void test_error_prefix_repeated_stays_bounded(void **state)
{
    (void)state;
    guarded_error g;
    guard_init(&g);
    fl_error_set(&g.err, FL_E_SHAPE, "core");
    for (int k = 0; k < 200; k++) {
        assert_int_equal(fl_error_prefix(&g.err, "level %d", k), FL_E_SHAPE);
        guard_check(&g);
        assert_true(strlen(g.err.msg) <= FL_ERRMSG_MAX - 1);
    }
    /* the newest context is outermost */
    assert_true(strncmp(g.err.msg, "level 199: level 198: ", 22) == 0);
}

/* ---- assertions ----------------------------------------------------------------------- */

static int always_zero(void) { return 0; }

/* FL_ASSERT aborts (this suite is built with optimisation and no special flags). */
static void test_assert_aborts(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(3);
        FL_ASSERT(always_zero() == 1);
        _exit(0);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGABRT);
    FL_ASSERT(always_zero() == 0); /* and a true one is a no-op */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names_distinct),
        cmocka_unit_test(test_status_str_unknown),
        cmocka_unit_test(test_error_set_returns_code_and_formats),
        cmocka_unit_test(test_error_set_overwrites),
        cmocka_unit_test(test_error_null_record),
        cmocka_unit_test(test_error_clear),
        cmocka_unit_test(test_error_msg_falls_back_to_name),
        cmocka_unit_test(test_error_set_clips_long_message),
        cmocka_unit_test(test_error_prefix_composes),
        cmocka_unit_test(test_error_prefix_on_empty_message_uses_name),
        cmocka_unit_test(test_error_prefix_clips),
        cmocka_unit_test(test_error_prefix_repeated_stays_bounded),
        cmocka_unit_test(test_assert_aborts),
    };
    return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
