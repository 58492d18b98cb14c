/* cmocka suite for core/timeline.c (the prompt timeline, docs/experiments.md): segments
 * read from the configuration tree into condition ids (equal prompts share one), the
 * condition of every frame at and around each boundary, the last segment lasting to the
 * end, the switch mode, and errors for bad specifications naming the key path. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/timeline.h"

/* A root table with the given --set style assignments ("timeline={...}", ...). */
static fl_cfg *root_with(const char *const *sets, size_t n)
{
    fl_cfg *cfg = fl_cfg_new(NULL);
    assert_non_null(cfg);
    fl_error err;
    for (size_t i = 0; i < n; i++)
        if (fl_cfg_set_arg(cfg, sets[i], &err))
            fail_msg("%s: %s", sets[i], fl_error_msg(&err));
    return cfg;
}

/* Reads a timeline from one assignment (NULL: none). */
static fl_status read_one(const char *set, fl_timeline *tl, fl_error *err)
{
    fl_cfg *cfg = root_with(&set, set ? 1 : 0);
    fl_status st = fl_timeline_read(cfg, tl, err);
    fl_cfg_free(cfg);
    return st;
}

/* The condition of frame k by a linear scan of the segments: what fl_timeline_cond must
 * agree with. */
static int32_t cond_linear(const fl_timeline *tl, int64_t k)
{
    if (tl->nseg == 0)
        return 0;
    int32_t c = tl->seg_cond[0];
    for (int i = 0; i < tl->nseg; i++)
        if (tl->seg_start[i] <= k)
            c = tl->seg_cond[i];
    return c;
}

static void test_absent(void **state)
{
    (void)state;
    fl_timeline tl;
    fl_error err;
    assert_int_equal(read_one(NULL, &tl, &err), FL_OK);
    assert_int_equal(tl.nprompts, 0);
    assert_int_equal(tl.nseg, 0);
    assert_int_equal(tl.mode, FL_SWITCH_FRAME);
    for (int64_t k = -2; k < 10; k++)
        assert_int_equal(fl_timeline_cond(&tl, k), 0);
    fl_timeline_free(&tl);
    /* an empty list is the same thing */
    assert_int_equal(read_one("timeline={}", &tl, &err), FL_OK);
    assert_int_equal(tl.nprompts, 0);
    assert_int_equal(tl.nseg, 0);
    assert_int_equal(fl_timeline_cond(&tl, 5), 0);
    fl_timeline_free(&tl);
}

/* The documented example: both forms of a segment, a repeated prompt, a last segment
 * without frames. */
static void test_segments(void **state)
{
    (void)state;
    fl_timeline tl;
    fl_error err;
    assert_int_equal(read_one("timeline={{\"a red circle\", 96}, {prompt = \"a blue square\", frames = 64}, "
                              "{\"a red circle\"}}",
                              &tl, &err),
                     FL_OK);
    assert_int_equal(tl.nprompts, 2);
    assert_string_equal(tl.prompts[0], "a red circle");
    assert_string_equal(tl.prompts[1], "a blue square");
    assert_int_equal(tl.nseg, 3);
    assert_int_equal(tl.seg_start[0], 0);
    assert_int_equal(tl.seg_start[1], 96);
    assert_int_equal(tl.seg_start[2], 160);
    assert_int_equal(tl.seg_cond[0], 0);
    assert_int_equal(tl.seg_cond[1], 1);
    assert_int_equal(tl.seg_cond[2], 0);
    assert_int_equal(tl.mode, FL_SWITCH_FRAME);
    /* boundary frames: the last of a segment and the first of the next */
    static const struct { int64_t k; int32_t c; } want[] = {
        { -5, 0 }, { -1, 0 }, { 0, 0 }, { 1, 0 }, { 95, 0 }, { 96, 1 }, { 97, 1 },
        { 159, 1 }, { 160, 0 }, { 161, 0 }, { 100000, 0 }, { INT64_MAX, 0 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (fl_timeline_cond(&tl, want[i].k) != want[i].c)
            fail_msg("frame %lld: condition %d, expected %d", (long long)want[i].k,
                     (int)fl_timeline_cond(&tl, want[i].k), (int)want[i].c);
    }
    fl_timeline_free(&tl);
    assert_int_equal(tl.nprompts, 0);
    assert_null(tl.prompts);
    assert_null(tl.seg_start);
}

/* Distinct prompts get ids in order of first appearance; warm-up frames (k < 0) take the
 * first segment's condition, whatever its id; the last segment lasts to the end even when
 * it gives its frames. */
static void test_ids_and_ends(void **state)
{
    (void)state;
    fl_timeline tl;
    fl_error err;
    assert_int_equal(read_one("timeline={{\"x\", 1}, {\"y\", 2}, {\"x\", 1}, {\"z\", 1}, {\"y\", 3}}", &tl, &err),
                     FL_OK);
    assert_int_equal(tl.nprompts, 3);
    assert_string_equal(tl.prompts[0], "x");
    assert_string_equal(tl.prompts[1], "y");
    assert_string_equal(tl.prompts[2], "z");
    static const int32_t per_frame[] = { 0, 1, 1, 0, 2, 1, 1, 1, 1, 1, 1 }; /* frames 0..10 */
    for (int k = 0; k < (int)(sizeof per_frame / sizeof per_frame[0]); k++)
        assert_int_equal(fl_timeline_cond(&tl, k), per_frame[k]);
    fl_timeline_free(&tl);
    /* a first segment whose prompt comes back later: warm-up frames take its id */
    assert_int_equal(read_one("timeline={{\"b\", 2}, {\"a\", 2}, {\"b\"}}", &tl, &err), FL_OK);
    assert_int_equal(fl_timeline_cond(&tl, -3), 0);
    assert_int_equal(fl_timeline_cond(&tl, 2), 1);
    assert_int_equal(fl_timeline_cond(&tl, 4), 0);
    fl_timeline_free(&tl);
    /* a single segment (with or without frames): every frame is condition 0 */
    assert_int_equal(read_one("timeline={{prompt = \"only\"}}", &tl, &err), FL_OK);
    assert_int_equal(tl.nprompts, 1);
    assert_int_equal(tl.nseg, 1);
    assert_int_equal(fl_timeline_cond(&tl, 0), 0);
    assert_int_equal(fl_timeline_cond(&tl, 1000), 0);
    fl_timeline_free(&tl);
    /* the last segment in table form may say frames = 0: to the end */
    assert_int_equal(read_one("timeline={{\"p\", 4}, {prompt = \"q\", frames = 0}}", &tl, &err), FL_OK);
    assert_int_equal(tl.nseg, 2);
    assert_int_equal(fl_timeline_cond(&tl, 3), 0);
    assert_int_equal(fl_timeline_cond(&tl, 4), 1);
    assert_int_equal(fl_timeline_cond(&tl, 1 << 30), 1);
    fl_timeline_free(&tl);
}

/* Segment starts past 2^31 (int32 frame counts add up in 64 bits). */
static void test_long_segments(void **state)
{
    (void)state;
    fl_timeline tl;
    fl_error err;
    assert_int_equal(read_one("timeline={{\"a\", 2147483647}, {\"b\", 2147483647}, {\"c\"}}", &tl, &err), FL_OK);
    assert_int_equal(tl.seg_start[1], 2147483647LL);
    assert_int_equal(tl.seg_start[2], 4294967294LL);
    assert_int_equal(fl_timeline_cond(&tl, 2147483646LL), 0);
    assert_int_equal(fl_timeline_cond(&tl, 2147483647LL), 1);
    assert_int_equal(fl_timeline_cond(&tl, 4294967293LL), 1);
    assert_int_equal(fl_timeline_cond(&tl, 4294967294LL), 2);
    fl_timeline_free(&tl);
}

/* Many segments of varied lengths: the binary search agrees with a scan on every frame. */
static void test_many_segments(void **state)
{
    (void)state;
    char *set = malloc(1 << 16);
    assert_non_null(set);
    size_t at = (size_t)snprintf(set, 1 << 16, "timeline={");
    int64_t total = 0;
    unsigned x = 12345;
    enum { NSEG = 101 };
    for (int i = 0; i < NSEG; i++) {
        x = x * 1103515245u + 12345u;
        int len = 1 + (int)((x >> 16) % 7);
        int prompt = (int)((x >> 8) % 9);
        if (i + 1 < NSEG) {
            at += (size_t)snprintf(set + at, (1 << 16) - at, "{\"p%d\", %d}, ", prompt, len);
            total += len;
        } else {
            at += (size_t)snprintf(set + at, (1 << 16) - at, "{\"p%d\"}}", prompt);
        }
    }
    fl_timeline tl;
    fl_error err;
    assert_int_equal(read_one(set, &tl, &err), FL_OK);
    free(set);
    assert_int_equal(tl.nseg, NSEG);
    assert_true(tl.nprompts >= 2 && tl.nprompts <= 9);
    for (int i = 1; i < NSEG; i++)
        assert_true(tl.seg_start[i] > tl.seg_start[i - 1]);
    assert_int_equal(tl.seg_start[NSEG - 1], total);
    for (int64_t k = -3; k < total + 5; k++)
        if (fl_timeline_cond(&tl, k) != cond_linear(&tl, k))
            fail_msg("frame %lld: condition %d, a scan of the segments says %d", (long long)k,
                     (int)fl_timeline_cond(&tl, k), (int)cond_linear(&tl, k));
    fl_timeline_free(&tl);
}

static void test_switch(void **state)
{
    (void)state;
    fl_timeline tl;
    fl_error err;
    const char *q[] = { "timeline={{\"a\", 2}, {\"b\"}}", "timeline_switch=queue" };
    fl_cfg *cfg = root_with(q, 2);
    assert_int_equal(fl_timeline_read(cfg, &tl, &err), FL_OK);
    assert_int_equal(tl.mode, FL_SWITCH_QUEUE);
    fl_timeline_free(&tl);
    fl_cfg_free(cfg);
    const char *f[] = { "timeline_switch=frame" };
    cfg = root_with(f, 1);
    assert_int_equal(fl_timeline_read(cfg, &tl, &err), FL_OK);
    assert_int_equal(tl.mode, FL_SWITCH_FRAME);
    fl_timeline_free(&tl);
    fl_cfg_free(cfg);
    const char *bad[] = { "timeline_switch=whole" };
    cfg = root_with(bad, 1);
    assert_int_not_equal(fl_timeline_read(cfg, &tl, &err), FL_OK);
    assert_non_null(strstr(err.msg, "timeline_switch"));
    assert_non_null(strstr(err.msg, "whole"));
    assert_int_equal(tl.nseg, 0);
    fl_cfg_free(cfg);
}

/* Bad specifications: the status, and the message names the key path (and says what is
 * wrong); nothing is left to free. */
static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *set;
        fl_status code;
        const char *path, *says;
    } cases[] = {
        /* a table segment without frames, not last (the key misspelt) */
        { "timeline={{prompt = \"a\", frame = 3}, {\"b\"}}", FL_E_INVALID, "timeline[1].frames", "missing" },
        /* a table segment without a prompt */
        { "timeline={{frames = 3}, {\"b\"}}", 0, "timeline[1].prompt", NULL },
        /* a prompt that is not a string (a number from --set text reads as its text, so
         * test_prompt_number builds that case from typed values) */
        { "timeline={{prompt = {\"x\"}, frames = 3}, {\"b\"}}", FL_E_INVALID, "timeline[1].prompt", "string" },
        { "timeline={{7, 3}, {\"b\"}}", FL_E_INVALID, "timeline[1]", "the prompt is a number" },
        /* frames out of range or not integers, in both forms */
        { "timeline={{\"a\", 0}, {\"b\"}}", FL_E_RANGE, "timeline[1]", "frames" },
        { "timeline={{\"a\", 2.5}, {\"b\"}}", FL_E_RANGE, "timeline[1]", "frames" },
        { "timeline={{\"a\", -4}, {\"b\"}}", FL_E_RANGE, "timeline[1]", "frames" },
        { "timeline={{\"a\", 3}, {\"b\", 2147483648}}", FL_E_RANGE, "timeline[2]", "frames" },
        { "timeline={{\"a\", \"3\"}, {\"b\"}}", FL_E_RANGE, "timeline[1]", "frames" },
        { "timeline={{prompt = \"a\", frames = 0}, {\"b\"}}", 0, "timeline[1].frames", NULL },
        { "timeline={{prompt = \"a\", frames = 1.5}, {\"b\"}}", 0, "timeline[1].frames", NULL },
        /* only the last segment may omit its frames (list form) */
        { "timeline={{\"a\"}, {\"b\", 3}}", FL_E_INVALID, "timeline[1]", "expected" },
        /* a list of three */
        { "timeline={{\"a\", 3, 4}, {\"b\"}}", FL_E_INVALID, "timeline[1]", "expected" },
        /* a segment that is neither a table nor a list */
        { "timeline={{\"a\", 2}, \"b\"}", FL_E_INVALID, "timeline[2]", "got a string" },
        /* the timeline itself not a list */
        { "timeline=\"a\"", 0, "timeline", NULL },
        { "timeline=3", 0, "timeline", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fl_timeline tl;
        fl_error err;
        fl_error_clear(&err);
        fl_status st = read_one(cases[i].set, &tl, &err);
        if (st == FL_OK)
            fail_msg("%s: accepted", cases[i].set);
        if (cases[i].code && st != cases[i].code)
            fail_msg("%s: status %d, expected %d (%s)", cases[i].set, (int)st, (int)cases[i].code, err.msg);
        if (err.code != st)
            fail_msg("%s: err.code %d, returned %d", cases[i].set, (int)err.code, (int)st);
        /* the path, at the start of the message, as a whole key */
        size_t pl = strlen(cases[i].path);
        if (strncmp(err.msg, cases[i].path, pl) || (err.msg[pl] != ':' && err.msg[pl] != ' '))
            fail_msg("%s: message \"%s\" does not start with the key path %s", cases[i].set, err.msg,
                     cases[i].path);
        if (cases[i].says && !strstr(err.msg, cases[i].says))
            fail_msg("%s: message \"%s\" does not say \"%s\"", cases[i].set, err.msg, cases[i].says);
        /* nothing to free on error */
        assert_int_equal(tl.nprompts, 0);
        assert_int_equal(tl.nseg, 0);
        assert_null(tl.prompts);
        assert_null(tl.seg_start);
        assert_null(tl.seg_cond);
    }
}

/* A prompt given as a typed number (as a Lua script gives it), not --set text. */
static void test_prompt_number(void **state)
{
    (void)state;
    fl_error err;
    fl_cfg *cfg = fl_cfg_new(NULL), *list, *seg;
    assert_non_null(cfg);
    assert_int_equal(fl_cfg_put_list(cfg, "timeline", &list, &err), FL_OK);
    assert_int_equal(fl_cfg_push_table(list, &seg, &err), FL_OK);
    assert_int_equal(fl_cfg_put_num(seg, "prompt", 5, &err), FL_OK);
    assert_int_equal(fl_cfg_put_num(seg, "frames", 3, &err), FL_OK);
    assert_int_equal(fl_cfg_push_table(list, &seg, &err), FL_OK);
    assert_int_equal(fl_cfg_put_str(seg, "prompt", "b", &err), FL_OK);
    fl_timeline tl;
    assert_int_equal(fl_timeline_read(cfg, &tl, &err), FL_E_INVALID);
    assert_non_null(strstr(err.msg, "timeline[1].prompt"));
    assert_non_null(strstr(err.msg, "string"));
    assert_int_equal(tl.nseg, 0);
    assert_null(tl.prompts);
    fl_cfg_free(cfg);
    /* the same with a string prompt reads */
    cfg = fl_cfg_new(NULL);
    assert_int_equal(fl_cfg_put_list(cfg, "timeline", &list, &err), FL_OK);
    assert_int_equal(fl_cfg_push_table(list, &seg, &err), FL_OK);
    assert_int_equal(fl_cfg_put_str(seg, "prompt", "5", &err), FL_OK);
    assert_int_equal(fl_cfg_put_num(seg, "frames", 3, &err), FL_OK);
    assert_int_equal(fl_cfg_push_table(list, &seg, &err), FL_OK);
    assert_int_equal(fl_cfg_put_str(seg, "prompt", "b", &err), FL_OK);
    assert_int_equal(fl_timeline_read(cfg, &tl, &err), FL_OK);
    assert_int_equal(tl.nprompts, 2);
    assert_string_equal(tl.prompts[0], "5");
    assert_int_equal(fl_timeline_cond(&tl, 3), 1);
    fl_timeline_free(&tl);
    fl_cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_ids_and_ends),
        cmocka_unit_test(test_long_segments),
        cmocka_unit_test(test_many_segments),
        cmocka_unit_test(test_switch),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_prompt_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
