/* cmocka suite for core/config: --set parsing, builders, recording readers, unknown keys,
 * module slots, printing and reading back, allocation failures, very long keys. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/status.h"

/* ---- helpers ------------------------------------------------------------------------ */

/* The printed tree in a malloc'd string (test plumbing: not through the allocator under test). */
static char *text_of(const fl_cfg *n, unsigned flags)
{
    size_t len = fl_cfg_format(n, flags, NULL, 0);
    char *s = malloc(len + 1);
    assert_non_null(s);
    assert_int_equal(fl_cfg_format(n, flags, s, len + 1), len);
    assert_int_equal(strlen(s), len);
    return s;
}

static void assert_text(const fl_cfg *n, const char *want)
{
    char *s = text_of(n, 0);
    if (strcmp(s, want) != 0)
        fail_msg("printed:\n%s\nwant:\n%s", s, want);
    free(s);
}

static void must(fl_status st, const fl_error *err)
{
    if (st != FL_OK)
        fail_msg("status %d: %s", st, fl_error_msg(err));
}

/* Runs a failing call's status against the wanted code and message substrings. */
static void assert_fails(fl_status st, const fl_error *err, fl_status want, const char *in1,
                         const char *in2)
{
    if (st != want)
        fail_msg("status %d (%s), want %d", st, fl_error_msg(err), want);
    assert_int_equal(err->code, want);
    if (in1 && !strstr(err->msg, in1))
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, in1);
    if (in2 && !strstr(err->msg, in2))
        fail_msg("message \"%s\" lacks \"%s\"", err->msg, in2);
}

static void assert_msg(const fl_error *err, const char *want)
{
    if (strcmp(err->msg, want) != 0)
        fail_msg("message \"%s\", want \"%s\"", err->msg, want);
}

static fl_cfg *set_get(fl_cfg *root, const char *path, const char *text)
{
    fl_error err;
    must(fl_cfg_set(root, path, text, &err), &err);
    fl_cfg *n = fl_cfg_lookup(root, path);
    assert_non_null(n);
    return n;
}

/* ---- --set text --------------------------------------------------------------------- */

/* Every scalar form of a --set value lands as the type the syntax says. */
static void test_set_scalars(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    assert_non_null(root);
    fl_cfg *n = set_get(root, "t", "true");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_BOOL);
    assert_int_equal(fl_cfg_bool_value(n), 1);
    n = set_get(root, "f", " false ");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_BOOL);
    assert_int_equal(fl_cfg_bool_value(n), 0);
    assert_int_equal(fl_cfg_type_of(set_get(root, "z", "nil")), FL_CFG_NIL);
    const struct { const char *text; double v; } nums[] = {
        { "42", 42 }, { "-1.5e3", -1500 }, { "0x10", 16 }, { "+7", 7 }, { " 0.1 ", 0.1 },
        { "1e-400", 0 }, { "5e-324", 5e-324 },
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        n = set_get(root, "x", nums[i].text);
        if (fl_cfg_type_of(n) != FL_CFG_NUM || fl_cfg_num_value(n) != nums[i].v)
            fail_msg("\"%s\": type %s value %g", nums[i].text,
                     fl_cfg_type_name(fl_cfg_type_of(n)), fl_cfg_num_value(n));
    }
    /* not finite, not whole, or not a number at all: a string, kept as written (trimmed) */
    const struct { const char *text, *s; } strs[] = {
        { "inf", "inf" }, { "nan", "nan" }, { "1e400", "1e400" }, { "12abc", "12abc" },
        { "  hello world ", "hello world" }, { "", "" }, { "a=b", "a=b" },
        { "\"quoted, with comma\"", "quoted, with comma" }, { "'single'", "single" },
        { "\"true\"", "true" }, { "\"a\\tb\\065\\x42\\\\\\\"\"", "a\tbAB\\\"" },
        { "he said \"hi\"", "he said \"hi\"" },
        { "'\\r\\a\\b\\f\\v\\'\\x7e\\x7E\\xaB\\65\\0651'", "\r\a\b\f\v'~~\xab" "AA1" },
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        n = set_get(root, "s", strs[i].text);
        if (fl_cfg_type_of(n) != FL_CFG_STR || strcmp(fl_cfg_str_value(n), strs[i].s) != 0)
            fail_msg("\"%s\": type %s value \"%s\"", strs[i].text,
                     fl_cfg_type_name(fl_cfg_type_of(n)),
                     fl_cfg_str_value(n) ? fl_cfg_str_value(n) : "(null)");
    }
    fl_cfg_free(root);
}

/* Braced and comma texts become lists (or tables with k = v fields), nested as written. */
static void test_set_lists(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    fl_cfg *n = set_get(root, "a", "{1, 2}");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_LIST);
    assert_int_equal(fl_cfg_len(n), 2);
    assert_true(fl_cfg_num_value(fl_cfg_item(n, 0)) == 1);
    assert_true(fl_cfg_num_value(fl_cfg_item(n, 1)) == 2);
    assert_null(fl_cfg_key(fl_cfg_item(n, 0)));
    n = set_get(root, "b", "3,4.5");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_LIST);
    assert_int_equal(fl_cfg_len(n), 2);
    assert_true(fl_cfg_num_value(fl_cfg_item(n, 1)) == 4.5);
    n = set_get(root, "c", "{}");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_LIST);
    assert_int_equal(fl_cfg_len(n), 0);
    n = set_get(root, "d", "{\"a,b\", c d , true; 'x}'; }");
    assert_int_equal(fl_cfg_len(n), 4);
    assert_string_equal(fl_cfg_str_value(fl_cfg_item(n, 0)), "a,b");
    assert_string_equal(fl_cfg_str_value(fl_cfg_item(n, 1)), "c d");
    assert_int_equal(fl_cfg_type_of(fl_cfg_item(n, 2)), FL_CFG_BOOL);
    assert_string_equal(fl_cfg_str_value(fl_cfg_item(n, 3)), "x}");
    n = set_get(root, "e", "{{1, 2}, {3}, {}}");
    assert_int_equal(fl_cfg_len(n), 3);
    assert_int_equal(fl_cfg_len(fl_cfg_item(n, 0)), 2);
    assert_int_equal(fl_cfg_len(fl_cfg_item(n, 1)), 1);
    n = set_get(root, "f", "{k = 1, sub = {2, 3}, [\"odd key\"] = 'v'}");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_TABLE);
    assert_true(fl_cfg_num_value(fl_cfg_get(n, "k")) == 1);
    assert_int_equal(fl_cfg_len(fl_cfg_get(n, "sub")), 2);
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(n, "odd key")), "v");
    assert_string_equal(fl_cfg_key(fl_cfg_get(n, "sub")), "sub");
    n = set_get(root, "g", "x = 1, y = two");
    assert_int_equal(fl_cfg_type_of(n), FL_CFG_TABLE);
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(n, "y")), "two");

    /* malformed texts: FL_E_FORMAT naming the key, the text and the column; tree unchanged */
    char *before = text_of(root, 0);
    const struct { const char *text, *msg; fl_status code; } bad[] = {
        { "{1,", "h: cannot parse \"{1,\": expected '}' at column 4", FL_E_FORMAT },
        { "{a = 1, 2}", "cannot mix list items and key = value fields at column 9", FL_E_FORMAT },
        { "{a = 1, a = 2}", "duplicate key at column 9", FL_E_FORMAT },
        { "\"abc", "unterminated string at column 1", FL_E_FORMAT },
        { "\"abc\" x", "unexpected text after the value at column 7", FL_E_FORMAT },
        { "{1} 2", "unexpected text after the value", FL_E_FORMAT },
        { "{1 2 {3}}", "expected ',' or '}'", FL_E_FORMAT },
        { "\"a\\qb\"", "bad escape in string at column 3", FL_E_FORMAT },
        { "\"a\\0b\"", "NUL in string", FL_E_FORMAT },
        { "{[x] = 1}", "expected a quoted key after '['", FL_E_FORMAT },
        { "{['x' = 1}", "expected ']' at column 7", FL_E_FORMAT },
        { "{['x'] 1}", "expected '=' at column 8", FL_E_FORMAT },
        { "\"\\x4\"", "bad escape in string", FL_E_FORMAT },
        { "\"\\256\"", "bad escape in string", FL_E_FORMAT },
        { "{,}", "expected a value at column 2", FL_E_FORMAT },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_error err;
        assert_fails(fl_cfg_set(root, "h", bad[i].text, &err), &err, bad[i].code, bad[i].msg,
                     NULL);
        char *after = text_of(root, 0);
        assert_string_equal(after, before);
        free(after);
    }
    /* nesting deeper than FL_CFG_MAX_DEPTH is refused, not recursed into */
    char deep[2 * FL_CFG_MAX_DEPTH + 8];
    memset(deep, '{', FL_CFG_MAX_DEPTH + 1);
    memset(deep + FL_CFG_MAX_DEPTH + 1, '}', FL_CFG_MAX_DEPTH + 1);
    deep[2 * FL_CFG_MAX_DEPTH + 2] = '\0';
    fl_error err;
    assert_fails(fl_cfg_set(root, "h", deep, &err), &err, FL_E_INVALID, "h: cannot parse",
                 "nested too deeply");
    free(before);
    fl_cfg_free(root);
}

/* Setting again replaces in place; paths create tables; non-tables on the way are errors. */
static void test_set_override_and_paths(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    fl_error err;
    must(fl_cfg_set(root, "a.b.c", "1", &err), &err);
    must(fl_cfg_set(root, "a.b.d", "x", &err), &err);
    must(fl_cfg_set(root, "z", "2", &err), &err);
    must(fl_cfg_set(root, "a.b.c", "{3, 4}", &err), &err); /* replaced, same place */
    assert_text(root, "{\n  a = {\n    b = {\n      c = {3, 4},\n      d = \"x\",\n    },\n  },\n"
                      "  z = 2,\n}\n");
    must(fl_cfg_set(root, "a.b", "5", &err), &err); /* a table replaced by a number */
    assert_text(root, "{\n  a = {\n    b = 5,\n  },\n  z = 2,\n}\n");
    char path[64];
    assert_int_equal(fl_cfg_path(fl_cfg_lookup(root, "a.b"), path, sizeof path), 3);
    assert_string_equal(path, "a.b");
    assert_null(fl_cfg_lookup(root, "a.b.c"));
    assert_null(fl_cfg_lookup(root, "q"));

    char *before = text_of(root, 0);
    assert_fails(fl_cfg_set(root, "a.b.c.d", "1", &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "a.b.c.d: cannot set: a.b is a number, not a table");
    must(fl_cfg_set(root, "l", "{1}", &err), &err);
    assert_fails(fl_cfg_set(root, "l.x", "1", &err), &err, FL_E_INVALID,
                 "l.x: cannot set: l is a list, not a table", NULL);
    must(fl_cfg_put_nil(root, "l", &err), &err); /* a nil on the way is no value: replaced */
    must(fl_cfg_set(root, "l.x", "1", &err), &err);
    assert_string_equal(fl_cfg_key(fl_cfg_item(root, 2)), "l");
    assert_true(fl_cfg_num_value(fl_cfg_lookup(root, "l.x")) == 1);
    const struct { const char *path, *msg; } bad[] = {
        { "", "bad key path \"\": empty key at column 1" },
        { "a..b", "bad key path \"a..b\": empty key at column 3" },
        { ".a", "empty key at column 1" },
        { "a.", "empty key at column 3" },
        { "a b", "bad key path \"a b\": character ' ' at column 2 is not allowed in a key" },
        { "a.b[1]", "character '[' at column 4" },
        { "a\tb", "character 0x09 at column 2" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_fails(fl_cfg_set(root, bad[i].path, "1", &err), &err, FL_E_INVALID, bad[i].msg,
                     NULL);
    fl_cfg_free(root);
    free(before);

    /* the "path=value" form splits at the first '=' */
    root = fl_cfg_new(NULL);
    must(fl_cfg_set_arg(root, "model.kind=a=b", &err), &err);
    assert_string_equal(fl_cfg_str_value(fl_cfg_lookup(root, "model.kind")), "a=b");
    must(fl_cfg_set_arg(root, "model.size=64,32", &err), &err);
    assert_int_equal(fl_cfg_len(fl_cfg_lookup(root, "model.size")), 2);
    assert_fails(fl_cfg_set_arg(root, "model.size", &err), &err, FL_E_INVALID,
                 "bad override \"model.size\": expected key.path=value", NULL);
    assert_fails(fl_cfg_set_arg(root, "=3", &err), &err, FL_E_INVALID, "empty key", NULL);
    fl_cfg_free(root);
}

/* ---- builders and lookups ----------------------------------------------------------- */

/* The typed builders make exactly the nodes asked for; lookups walk them. */
static void test_builders_and_lookups(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    fl_error err;
    fl_cfg *t, *l, *lt, *ll;
    must(fl_cfg_put_num(root, "n", 2.5, &err), &err);
    must(fl_cfg_put_str(root, "s", "text", &err), &err);
    must(fl_cfg_put_bool(root, "b", 7, &err), &err);
    must(fl_cfg_put_nil(root, "z", &err), &err);
    must(fl_cfg_put_table(root, "t", &t, &err), &err);
    must(fl_cfg_put_list(t, "l", &l, &err), &err);
    must(fl_cfg_push_num(l, 1, &err), &err);
    must(fl_cfg_push_str(l, "two", &err), &err);
    must(fl_cfg_push_bool(l, 0, &err), &err);
    must(fl_cfg_push_nil(l, &err), &err);
    must(fl_cfg_push_table(l, &lt, &err), &err);
    must(fl_cfg_put_num(lt, "k", 3, &err), &err);
    must(fl_cfg_push_list(l, &ll, &err), &err);
    must(fl_cfg_push_num(ll, 4, &err), &err);

    assert_int_equal(fl_cfg_len(root), 5);
    assert_true(fl_cfg_num_value(fl_cfg_get(root, "n")) == 2.5);
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(root, "s")), "text");
    assert_int_equal(fl_cfg_bool_value(fl_cfg_get(root, "b")), 1);
    assert_int_equal(fl_cfg_type_of(fl_cfg_get(root, "z")), FL_CFG_NIL);
    assert_ptr_equal(fl_cfg_lookup(root, "t.l"), l);
    assert_ptr_equal(fl_cfg_parent(l), t);
    assert_ptr_equal(fl_cfg_parent(t), root);
    assert_null(fl_cfg_parent(root));
    assert_string_equal(fl_cfg_key(fl_cfg_item(root, 1)), "s");
    assert_null(fl_cfg_key(root));
    assert_int_equal(fl_cfg_len(l), 6);
    assert_int_equal(fl_cfg_type_of(fl_cfg_item(l, 3)), FL_CFG_NIL);
    assert_null(fl_cfg_item(l, 6));
    assert_null(fl_cfg_get(l, "k")); /* lists have no keys */
    assert_null(fl_cfg_str_value(fl_cfg_get(root, "n")));
    assert_true(fl_cfg_num_value(fl_cfg_get(root, "s")) == 0.0);
    assert_string_equal(fl_cfg_type_name(FL_CFG_TABLE), "table");
    assert_string_equal(fl_cfg_type_name(FL_CFG_LIST), "list");
    char path[64];
    assert_int_equal(fl_cfg_path(fl_cfg_get(lt, "k"), path, sizeof path), strlen("t.l[5].k"));
    assert_string_equal(path, "t.l[5].k");
    assert_int_equal(fl_cfg_path(root, path, sizeof path), 0);
    assert_string_equal(path, "");
    assert_text(root, "{\n  n = 2.5,\n  s = \"text\",\n  b = true,\n  z = nil,\n  t = {\n"
                      "    l = {\n      1,\n      \"two\",\n      false,\n      nil,\n      {\n"
                      "        k = 3,\n      },\n      {4},\n    },\n  },\n}\n");

    /* replacing keeps the place; refused puts leave the tree alone */
    must(fl_cfg_put_str(root, "n", "now a string", &err), &err);
    assert_string_equal(fl_cfg_key(fl_cfg_item(root, 0)), "n");
    assert_fails(fl_cfg_put_num(root, "x", NAN, &err), &err, FL_E_INVALID,
                 "x: expected a finite number", NULL);
    assert_fails(fl_cfg_put_num(root, "x", INFINITY, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_fails(fl_cfg_push_num(l, -INFINITY, &err), &err, FL_E_INVALID, "t.l: expected a finite",
                 NULL);
    assert_null(fl_cfg_get(root, "x"));
    assert_fails(fl_cfg_put_num(l, "k", 1, &err), &err, FL_E_INVALID,
                 "t.l: cannot set a key in a list", NULL);
    assert_fails(fl_cfg_push_num(t, 1, &err), &err, FL_E_INVALID, "t: cannot append to a table",
                 NULL);
    assert_fails(fl_cfg_put_num(fl_cfg_get(root, "b"), "k", 1, &err), &err, FL_E_INVALID,
                 "b: cannot set a key in a bool", NULL);
    /* {} is both: an empty list takes keys, an empty table takes items */
    fl_cfg *e1, *e2;
    must(fl_cfg_put_list(root, "e1", &e1, &err), &err);
    must(fl_cfg_put_num(e1, "k", 1, &err), &err);
    assert_int_equal(fl_cfg_type_of(e1), FL_CFG_TABLE);
    must(fl_cfg_put_table(root, "e2", &e2, &err), &err);
    must(fl_cfg_push_num(e2, 1, &err), &err);
    assert_int_equal(fl_cfg_type_of(e2), FL_CFG_LIST);

    /* nesting stops at FL_CFG_MAX_DEPTH */
    fl_cfg *d = root;
    for (int i = 0; i < FL_CFG_MAX_DEPTH; i++)
        must(fl_cfg_put_table(d, "d", &d, &err), &err);
    assert_fails(fl_cfg_put_num(d, "x", 1, &err), &err, FL_E_INVALID, "nested too deeply", NULL);
    char qs[2 * (FL_CFG_MAX_DEPTH + 1)];
    for (int i = 0; i <= FL_CFG_MAX_DEPTH; i++)
        memcpy(qs + 2 * i, "q.", 2);
    qs[sizeof qs - 1] = '\0'; /* FL_CFG_MAX_DEPTH + 1 keys */
    assert_fails(fl_cfg_set(root, qs, "1", &err), &err, FL_E_INVALID, "nested too deeply", NULL);
    qs[sizeof qs - 3] = '\0'; /* FL_CFG_MAX_DEPTH keys: fine */
    must(fl_cfg_set(root, qs, "1", &err), &err);
    assert_true(fl_cfg_num_value(fl_cfg_lookup(root, qs)) == 1);
    fl_cfg_free(root);
}

/* ---- readers ------------------------------------------------------------------------ */

static const char *const kinds[] = { "ddim", "ddpm", "euler", NULL };
static const char *const mismatches[] = { "own", "shared", NULL };

/* Reads a small experiment's options as modules would; the values come out in *o. */
typedef struct experiment_opts {
    long seed, window;
    double size[2], rho;
    int mismatch, mp4, kind;
    const char *model, *video_name;
} experiment_opts;

static fl_status read_all(fl_cfg *root, experiment_opts *o, fl_error *err)
{
    fl_status st;
    fl_cfg *model, *video, *metrics, *sampler;
    if ((st = fl_cfg_int(root, "seed", 1, 0, LONG_MAX, &o->seed, err)) ||
        (st = fl_cfg_module(root, "model", "gauss", &o->model, &model, err)) ||
        (st = fl_cfg_int(model, "window", 16, 1, 1024, &o->window, err)) ||
        (st = fl_cfg_nums(model, "size", (const double[]){ 32, 32 }, 2, 2, 2, 1, 4096, o->size,
                          NULL, err)) ||
        (st = fl_cfg_num(model, "rho", 0.95, 0, 1, &o->rho, err)) ||
        (st = fl_cfg_enum(model, "mismatch", mismatches, 0, &o->mismatch, err)) ||
        (st = fl_cfg_table(root, "sampler", &sampler, err)) ||
        (st = fl_cfg_enum(sampler, "kind", kinds, 0, &o->kind, err)) ||
        (st = fl_cfg_table(root, "video", &video, err)) ||
        (st = fl_cfg_bool(video, "mp4", 1, &o->mp4, err)) ||
        (st = fl_cfg_str(video, "name", "out", &o->video_name, err)) ||
        (st = fl_cfg_list(root, "metrics", &metrics, err)))
        return st;
    return FL_OK;
}

static const char resolved_defaults[] =
    "{\n"
    "  seed = 1,\n"
    "  model = {\n"
    "    module = \"gauss\",\n"
    "    window = 16,\n"
    "    size = {32, 32},\n"
    "    rho = 0.95,\n"
    "    mismatch = \"own\",\n"
    "  },\n"
    "  sampler = {\n"
    "    kind = \"ddim\",\n"
    "  },\n"
    "  video = {\n"
    "    mp4 = true,\n"
    "    name = \"out\",\n"
    "  },\n"
    "  metrics = {},\n"
    "}\n";

/* On an empty tree every reader returns its default and records it in the resolved tree. */
static void test_readers_record_defaults(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    fl_error err;
    experiment_opts o;
    must(read_all(root, &o, &err), &err);
    assert_int_equal(o.seed, 1);
    assert_string_equal(o.model, "gauss");
    assert_int_equal(o.window, 16);
    assert_true(o.size[0] == 32 && o.size[1] == 32 && o.rho == 0.95);
    assert_int_equal(o.mismatch, 0);
    assert_int_equal(o.kind, 0);
    assert_int_equal(o.mp4, 1);
    assert_string_equal(o.video_name, "out");
    assert_text(root, resolved_defaults);
    assert_true(fl_cfg_is_default(fl_cfg_lookup(root, "model.window")));
    assert_true(fl_cfg_is_used(fl_cfg_lookup(root, "model.window")));
    must(fl_cfg_check_unused(root, &err), &err);
    /* reading again finds the recorded defaults: same values, same text */
    must(read_all(root, &o, &err), &err);
    assert_int_equal(o.window, 16);
    assert_text(root, resolved_defaults);
    /* with the defaults marked */
    char *marked = text_of(root, FL_CFG_MARK_DEFAULTS);
    assert_non_null(strstr(marked, "\n  seed = 1, -- default\n"));
    assert_non_null(strstr(marked, "\n    module = \"gauss\", -- default\n"));
    assert_non_null(strstr(marked, "\n  }, -- default\n"));
    free(marked);
    fl_cfg_free(root);
}

/* Values that were set are read as set, and only absent (or nil) keys get defaults. */
static void test_readers_read_values(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    fl_error err;
    must(fl_cfg_set(root, "seed", "7", &err), &err);
    must(fl_cfg_set(root, "model.size", "64, 48", &err), &err);
    must(fl_cfg_set(root, "model.rho", "nil", &err), &err);
    must(fl_cfg_set(root, "model.mismatch", "shared", &err), &err);
    must(fl_cfg_set(root, "sampler.kind", "euler", &err), &err);
    must(fl_cfg_set(root, "video.mp4", "false", &err), &err);
    must(fl_cfg_set(root, "video.name", "2024", &err), &err); /* a number as written */
    experiment_opts o;
    must(read_all(root, &o, &err), &err);
    assert_int_equal(o.seed, 7);
    assert_true(o.size[0] == 64 && o.size[1] == 48);
    assert_true(o.rho == 0.95);
    assert_int_equal(o.mismatch, 1);
    assert_int_equal(o.kind, 2);
    assert_int_equal(o.mp4, 0);
    assert_string_equal(o.video_name, "2024");
    assert_int_equal(fl_cfg_type_of(fl_cfg_lookup(root, "video.name")), FL_CFG_STR);
    assert_false(fl_cfg_is_default(fl_cfg_lookup(root, "seed")));
    assert_true(fl_cfg_is_default(fl_cfg_lookup(root, "model.rho")));
    /* the nil was replaced in its place, after size, before mismatch */
    fl_cfg *model = fl_cfg_get(root, "model");
    assert_string_equal(fl_cfg_key(fl_cfg_item(model, 2)), "rho");
    must(fl_cfg_check_unused(root, &err), &err);

    /* text numbers read as strings keep their spelling; typed numbers do not become strings */
    must(fl_cfg_set(root, "e", "1e3", &err), &err);
    const char *s;
    must(fl_cfg_str(root, "e", NULL, &s, &err), &err);
    assert_string_equal(s, "1e3");
    must(fl_cfg_put_num(root, "typed", 5, &err), &err);
    assert_fails(fl_cfg_str(root, "typed", "x", &s, &err), &err, FL_E_INVALID,
                 "typed: expected a string, got 5", NULL);
    /* a single number where a list of one may stand */
    double v[3];
    int n = -1;
    must(fl_cfg_set(root, "one", "0.5", &err), &err);
    must(fl_cfg_nums(root, "one", NULL, 0, 1, 3, 0, 1, v, &n, &err), &err);
    assert_int_equal(n, 1);
    assert_true(v[0] == 0.5);
    must(fl_cfg_set(root, "empty", "{}", &err), &err);
    must(fl_cfg_nums(root, "empty", NULL, 0, 0, 3, 0, 1, v, &n, &err), &err);
    assert_int_equal(n, 0);
    fl_cfg_free(root);
}

/* Range and type errors: exact messages naming the key path, the value and what is accepted;
 * outputs untouched. */
static void test_reader_errors(void **state)
{
    (void)state;
    fl_cfg *root = fl_cfg_new(NULL);
    fl_error err;
    fl_cfg *sched, *planner, *noise, *model, *sampler;
    must(fl_cfg_set(root, "scheduler.planner.partitions", "0", &err), &err);
    must(fl_cfg_table(root, "scheduler", &sched, &err), &err);
    must(fl_cfg_table(sched, "planner", &planner, &err), &err);
    long l = 99;
    assert_fails(fl_cfg_int(planner, "partitions", 4, 1, 64, &l, &err), &err, FL_E_RANGE, NULL,
                 NULL);
    assert_msg(&err, "scheduler.planner.partitions: expected an integer in [1, 64], got 0");
    assert_int_equal(l, 99);
    must(fl_cfg_set(root, "scheduler.planner.partitions", "1.5", &err), &err);
    assert_fails(fl_cfg_int(planner, "partitions", 4, 1, 64, &l, &err), &err, FL_E_RANGE, NULL,
                 NULL);
    assert_msg(&err, "scheduler.planner.partitions: expected an integer in [1, 64], got 1.5");
    must(fl_cfg_set(root, "scheduler.planner.partitions", "abc", &err), &err);
    assert_fails(fl_cfg_int(planner, "partitions", 4, 1, 64, &l, &err), &err, FL_E_INVALID, NULL,
                 NULL);
    assert_msg(&err, "scheduler.planner.partitions: expected an integer in [1, 64], got \"abc\"");
    must(fl_cfg_set(root, "scheduler.planner.partitions", "1e19", &err), &err);
    assert_fails(fl_cfg_int(planner, "partitions", 4, LONG_MIN, LONG_MAX, &l, &err), &err,
                 FL_E_RANGE, NULL, NULL);
    assert_msg(&err, "scheduler.planner.partitions: expected an integer, got 1e+19");
    must(fl_cfg_set(root, "scheduler.planner.partitions", "-3", &err), &err);
    assert_fails(fl_cfg_int(planner, "partitions", 4, 0, LONG_MAX, &l, &err), &err, FL_E_RANGE,
                 "expected an integer >= 0, got -3", NULL);
    assert_int_equal(l, 99);

    double d = 99;
    must(fl_cfg_set(root, "noise.eta", "2", &err), &err);
    must(fl_cfg_table(root, "noise", &noise, &err), &err);
    assert_fails(fl_cfg_num(noise, "eta", 1, 0, 1, &d, &err), &err, FL_E_RANGE, NULL, NULL);
    assert_msg(&err, "noise.eta: expected a number in [0, 1], got 2");
    assert_fails(fl_cfg_num(noise, "eta", 2.5, 2.5, HUGE_VAL, &d, &err), &err, FL_E_RANGE,
                 "noise.eta: expected a number >= 2.5, got 2", NULL);
    assert_fails(fl_cfg_num(noise, "eta", -1, -HUGE_VAL, 0, &d, &err), &err, FL_E_RANGE,
                 "noise.eta: expected a number <= 0, got 2", NULL);
    must(fl_cfg_set(root, "noise.eta", "{0.1}", &err), &err);
    assert_fails(fl_cfg_num(noise, "eta", 0, -HUGE_VAL, HUGE_VAL, &d, &err), &err, FL_E_INVALID,
                 NULL, NULL);
    assert_msg(&err, "noise.eta: expected a number, got {0.1}");
    assert_true(d == 99);

    int b = 7;
    must(fl_cfg_set(root, "noise.on", "yes", &err), &err);
    assert_fails(fl_cfg_bool(noise, "on", 0, &b, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "noise.on: expected true or false, got \"yes\"");
    assert_int_equal(b, 7);

    const char *s = "unchanged";
    must(fl_cfg_set(root, "noise.name", "{a = 1, b = 'x'}", &err), &err);
    assert_fails(fl_cfg_str(noise, "name", "d", &s, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "noise.name: expected a string, got {a = 1, b = \"x\"}");
    assert_fails(fl_cfg_str(noise, "path", NULL, &s, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "noise.path: missing; expected a string");
    assert_string_equal(s, "unchanged");
    assert_fails(fl_cfg_table(noise, "eta", &model, &err), &err, FL_E_INVALID,
                 "noise.eta: expected a table, got {0.1}", NULL);
    assert_fails(fl_cfg_list(noise, "on", &model, &err), &err, FL_E_INVALID,
                 "noise.on: expected a list, got \"yes\"", NULL);

    int k = 9;
    must(fl_cfg_set(root, "sampler.kind", "ddmi", &err), &err);
    must(fl_cfg_table(root, "sampler", &sampler, &err), &err);
    assert_fails(fl_cfg_enum(sampler, "kind", kinds, 0, &k, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "sampler.kind: unknown value \"ddmi\"; accepted: ddim, ddpm, euler");
    must(fl_cfg_set(root, "sampler.kind", "3", &err), &err);
    assert_fails(fl_cfg_enum(sampler, "kind", kinds, 0, &k, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "sampler.kind: unknown value 3; accepted: ddim, ddpm, euler");
    must(fl_cfg_set(root, "sampler.kind", "{1}", &err), &err);
    assert_fails(fl_cfg_enum(sampler, "kind", kinds, 0, &k, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "sampler.kind: expected one of ddim, ddpm, euler, got {1}");
    assert_fails(fl_cfg_enum(sampler, "other", kinds, -1, &k, &err), &err, FL_E_INVALID, NULL,
                 NULL);
    assert_msg(&err, "sampler.other: missing; expected one of ddim, ddpm, euler");
    assert_int_equal(k, 9);
    static const char *const digits[] = { "1", "2", NULL };
    must(fl_cfg_set(root, "sampler.order", "2", &err), &err); /* a number as written */
    must(fl_cfg_enum(sampler, "order", digits, 0, &k, &err), &err);
    assert_int_equal(k, 1);
    assert_int_equal(fl_cfg_type_of(fl_cfg_get(sampler, "order")), FL_CFG_STR);
    l = 0;
    must(fl_cfg_set(root, "noise.steps", "-5", &err), &err);
    assert_fails(fl_cfg_int(noise, "steps", -10, LONG_MIN, -10, &l, &err), &err, FL_E_RANGE,
                 "noise.steps: expected an integer <= -10, got -5", NULL);

    double v[4] = { 9, 9, 9, 9 };
    int n = 9;
    const double def[2] = { 32, 32 };
    must(fl_cfg_set(root, "model.size", "abc", &err), &err);
    must(fl_cfg_table(root, "model", &model, &err), &err);
    assert_fails(fl_cfg_nums(model, "size", def, 2, 2, 2, -HUGE_VAL, HUGE_VAL, v, NULL, &err),
                 &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "model.size: expected a list of 2 numbers, got \"abc\"");
    must(fl_cfg_set(root, "model.size", "1,2,3", &err), &err);
    assert_fails(fl_cfg_nums(model, "size", def, 2, 2, 2, 1, 4096, v, NULL, &err), &err,
                 FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "model.size: expected a list of 2 numbers in [1, 4096], got {1, 2, 3}");
    assert_fails(fl_cfg_nums(model, "size", def, 2, 1, 2, 1, 4096, v, &n, &err), &err,
                 FL_E_INVALID, "expected a list of 1 to 2 numbers in [1, 4096], got {1, 2, 3}",
                 NULL);
    must(fl_cfg_set(root, "model.size", "{64, 0}", &err), &err);
    assert_fails(fl_cfg_nums(model, "size", def, 2, 2, 2, 1, 4096, v, NULL, &err), &err,
                 FL_E_RANGE, NULL, NULL);
    assert_msg(&err, "model.size[2]: expected a number in [1, 4096], got 0");
    must(fl_cfg_set(root, "model.size", "{64, x}", &err), &err);
    assert_fails(fl_cfg_nums(model, "size", def, 2, 2, 2, 1, 4096, v, NULL, &err), &err,
                 FL_E_INVALID, "model.size[2]: expected a number in [1, 4096], got \"x\"", NULL);
    must(fl_cfg_set(root, "model.size", "64", &err), &err);
    assert_fails(fl_cfg_nums(model, "size", def, 2, 2, 2, 1, 4096, v, NULL, &err), &err,
                 FL_E_INVALID, "model.size: expected a list of 2 numbers in [1, 4096], got 64",
                 NULL);
    must(fl_cfg_set(root, "model.size", "5000", &err), &err);
    assert_fails(fl_cfg_nums(model, "size", NULL, 0, 1, INT_MAX, 1, 4096, v, &n, &err), &err,
                 FL_E_RANGE, "model.size: expected a number in [1, 4096], got 5000", NULL);
    assert_fails(fl_cfg_nums(model, "shape", NULL, 0, 1, INT_MAX, 1, 4096, v, &n, &err), &err,
                 FL_E_INVALID, "model.shape: missing; expected a list of at least 1 number in",
                 NULL);
    assert_true(v[0] == 9 && v[1] == 9 && n == 9);

    /* the module's own checks across options get the same prefix */
    assert_int_equal(fl_cfg_error(sched, "window", &err, FL_E_INVALID, "must be a multiple of %d",
                                  4),
                     FL_E_INVALID);
    assert_msg(&err, "scheduler.window: must be a multiple of 4");
    assert_int_equal(fl_cfg_error(root, NULL, &err, FL_E_RANGE, "bad"), FL_E_RANGE);
    assert_msg(&err, "config: bad");
    assert_int_equal(fl_cfg_error(root, NULL, NULL, FL_E_RANGE, "bad"), FL_E_RANGE);
    fl_cfg_free(root);
}

/* ---- unknown keys ------------------------------------------------------------------- */

/* A misspelled key is never ignored: the check names it and the keys accepted there. */
static void test_unused_keys(void **state)
{
    (void)state;
    fl_error err;
    fl_cfg *root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, "scheduler.planner.partitons", "2", &err), &err);
    fl_cfg *sched, *opts;
    const char *name;
    long parts;
    must(fl_cfg_table(root, "scheduler", &sched, &err), &err);
    must(fl_cfg_module(sched, "planner", "lookahead", &name, &opts, &err), &err);
    must(fl_cfg_int(opts, "partitions", 4, 1, 64, &parts, &err), &err);
    assert_int_equal(parts, 4); /* the misspelling did not reach the option */
    assert_fails(fl_cfg_check_unused(root, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "scheduler.planner.partitons: unknown key; accepted: module, partitions");
    fl_cfg_free(root);

    /* a top-level key nobody opened: named at the top level with the top-level keys */
    root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, "schedular.planner.partitions", "2", &err), &err);
    experiment_opts o;
    must(read_all(root, &o, &err), &err);
    assert_fails(fl_cfg_check_unused(root, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "schedular: unknown key; accepted: metrics, model, sampler, seed, video");
    fl_cfg_free(root);

    /* a table that was taken but never read inside; then marked used by its consumer */
    root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, "env", "{A = 1, B = 2}", &err), &err);
    fl_cfg *env;
    must(fl_cfg_table(root, "env", &env, &err), &err);
    assert_fails(fl_cfg_check_unused(root, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "env.A: unknown key; accepted: none");
    fl_cfg_mark_used(env);
    must(fl_cfg_check_unused(root, &err), &err);
    /* tables inside lists are checked too */
    must(fl_cfg_set(root, "metrics", "{adjacent, {module = drift, lag = 2, lga = 3}}", &err),
         &err);
    fl_cfg *metrics;
    must(fl_cfg_list(root, "metrics", &metrics, &err), &err);
    for (size_t i = 0; i < fl_cfg_len(metrics); i++) {
        must(fl_cfg_item_module(metrics, i, &name, &opts, &err), &err);
        if (strcmp(name, "drift") == 0)
            must(fl_cfg_int(opts, "lag", 1, 1, 10, &parts, &err), &err);
    }
    assert_int_equal(parts, 2);
    assert_fails(fl_cfg_check_unused(root, &err), &err, FL_E_INVALID, NULL, NULL);
    assert_msg(&err, "metrics[2].lga: unknown key; accepted: lag, module");
    /* nil values nobody asked for are unknown keys too */
    fl_cfg_free(root);
    root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, "x", "nil", &err), &err);
    assert_fails(fl_cfg_check_unused(root, &err), &err, FL_E_INVALID,
                 "x: unknown key; accepted: none", NULL);
    fl_cfg_free(root);
}

/* ---- module slots ------------------------------------------------------------------- */

/* A string module selector becomes {module = name} so its options and defaults land under it;
 * `--set scheduler.planner.partitions=2` on planner = "lookahead" does the same conversion. */
static void test_module_slots(void **state)
{
    (void)state;
    fl_error err;
    fl_cfg *root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, "scheduler.planner", "lookahead", &err), &err);
    fl_cfg *sched, *opts;
    const char *name;
    long parts;
    must(fl_cfg_module(root, "scheduler", "fifo", &name, &sched, &err), &err);
    assert_string_equal(name, "fifo"); /* a table without module: the default goes first */
    must(fl_cfg_module(sched, "planner", "none", &name, &opts, &err), &err);
    assert_string_equal(name, "lookahead");
    assert_int_equal(fl_cfg_type_of(fl_cfg_get(sched, "planner")), FL_CFG_TABLE);
    assert_ptr_equal(opts, fl_cfg_get(sched, "planner"));
    must(fl_cfg_int(opts, "partitions", 4, 1, 64, &parts, &err), &err);
    assert_int_equal(parts, 4);
    assert_text(root, "{\n  scheduler = {\n    module = \"fifo\",\n    planner = {\n"
                      "      module = \"lookahead\",\n      partitions = 4,\n    },\n  },\n}\n");
    assert_false(fl_cfg_is_default(fl_cfg_lookup(root, "scheduler.planner.module")));
    assert_true(fl_cfg_is_default(fl_cfg_lookup(root, "scheduler.module")));
    must(fl_cfg_check_unused(root, &err), &err);
    fl_cfg_free(root);

    /* the --set case */
    root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, "scheduler.planner", "lookahead", &err), &err);
    must(fl_cfg_set(root, "scheduler.planner.partitions", "2", &err), &err);
    assert_text(root, "{\n  scheduler = {\n    planner = {\n      module = \"lookahead\",\n"
                      "      partitions = 2,\n    },\n  },\n}\n");
    /* the string's key "module" is not itself a selector: refused, and nothing converted */
    must(fl_cfg_set(root, "sampler", "ddim", &err), &err);
    assert_fails(fl_cfg_set(root, "sampler.module.eta", "1", &err), &err, FL_E_INVALID,
                 "sampler.module.eta: cannot set: sampler.module is a string, not a table", NULL);
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(root, "sampler")), "ddim");
    must(fl_cfg_table(root, "scheduler", &sched, &err), &err);
    must(fl_cfg_module(sched, "planner", NULL, &name, &opts, &err), &err);
    assert_string_equal(name, "lookahead");
    must(fl_cfg_int(opts, "partitions", 4, 1, 64, &parts, &err), &err);
    assert_int_equal(parts, 2);
    /* absent slot: the default module, recorded */
    must(fl_cfg_module(root, "model", "gauss", &name, &opts, &err), &err);
    assert_string_equal(name, "gauss");
    assert_string_equal(fl_cfg_str_value(fl_cfg_lookup(root, "model.module")), "gauss");
    /* required and ill-typed slots */
    assert_fails(fl_cfg_module(root, "noise", NULL, &name, &opts, &err), &err, FL_E_INVALID, NULL,
                 NULL);
    assert_msg(&err, "noise: missing; expected a module name");
    must(fl_cfg_set(root, "noise.steps", "10", &err), &err);
    assert_fails(fl_cfg_module(root, "noise", NULL, &name, &opts, &err), &err, FL_E_INVALID, NULL,
                 NULL);
    assert_msg(&err, "noise.module: missing; expected a module name");
    must(fl_cfg_set(root, "noise", "3", &err), &err);
    assert_fails(fl_cfg_module(root, "noise", "x", &name, &opts, &err), &err, FL_E_INVALID, NULL,
                 NULL);
    assert_msg(&err, "noise: expected a module name or a table with module = name, got 3");
    must(fl_cfg_set(root, "noise", "{module = {1}}", &err), &err);
    assert_fails(fl_cfg_module(root, "noise", "x", &name, &opts, &err), &err, FL_E_INVALID, NULL,
                 NULL);
    assert_msg(&err, "noise.module: expected a module name (a string), got {1}");
    must(fl_cfg_set(root, "noise", "{k = 1, module = nil}", &err), &err); /* nil: absent */
    must(fl_cfg_module(root, "noise", "dflt", &name, &opts, &err), &err);
    assert_string_equal(name, "dflt");
    assert_string_equal(fl_cfg_key(fl_cfg_item(opts, 1)), "module"); /* in the nil's place */
    must(fl_cfg_set(root, "noise", "{module = 7}", &err), &err); /* a name as written */
    must(fl_cfg_module(root, "noise", "x", &name, &opts, &err), &err);
    assert_string_equal(name, "7");
    /* list items */
    fl_cfg *metrics;
    must(fl_cfg_set(root, "metrics", "{adjacent, 3, nil}", &err), &err);
    must(fl_cfg_list(root, "metrics", &metrics, &err), &err);
    must(fl_cfg_item_module(metrics, 0, &name, &opts, &err), &err);
    assert_string_equal(name, "adjacent");
    assert_int_equal(fl_cfg_type_of(fl_cfg_item(metrics, 0)), FL_CFG_TABLE);
    assert_fails(fl_cfg_item_module(metrics, 1, &name, &opts, &err), &err, FL_E_INVALID,
                 "metrics[2]: expected a module name or a table with module = name, got 3", NULL);
    assert_fails(fl_cfg_item_module(metrics, 2, &name, &opts, &err), &err, FL_E_INVALID,
                 "metrics[3]: missing; expected a module name", NULL);
    fl_cfg_free(root);
}

/* ---- printing ----------------------------------------------------------------------- */

/* Builds the same tree from one sequence of calls, through allocator a. */
static fl_cfg *build_varied(const fl_allocator *a)
{
    fl_error err;
    fl_cfg *root = fl_cfg_new(a), *t;
    assert_non_null(root);
    must(fl_cfg_set(root, "name", "\"tab\\there \\\"quoted\\\" back\\\\slash \\001 nl\\n\"", &err),
         &err);
    must(fl_cfg_put_str(root, "utf8", "caf\xc3\xa9", &err), &err);
    must(fl_cfg_put_num(root, "tenth", 0.1, &err), &err);
    must(fl_cfg_put_num(root, "third", 1.0 / 3.0, &err), &err);
    must(fl_cfg_put_num(root, "huge", 1e300, &err), &err);
    must(fl_cfg_put_num(root, "tiny", 5e-324, &err), &err);
    must(fl_cfg_put_num(root, "negzero", -0.0, &err), &err);
    must(fl_cfg_put_num(root, "big", 9007199254740993.0, &err), &err);
    must(fl_cfg_put_num(root, "end", 1, &err), &err);     /* a Lua keyword */
    must(fl_cfg_put_num(root, "a b", 2, &err), &err);     /* not a Lua name */
    must(fl_cfg_put_num(root, "", 3, &err), &err);        /* the empty key */
    must(fl_cfg_put_str(root, "x]=", "]]", &err), &err);  /* brackets in a key */
    must(fl_cfg_set(root, "model.size", "{64, 32}", &err), &err);
    must(fl_cfg_set(root, "model.blocks", "{{1, 2}, {k = true}, {}, nil}", &err), &err);
    must(fl_cfg_put_table(root, "empty", &t, &err), &err);
    must(fl_cfg_set(root, "flag", "false", &err), &err);
    return root;
}

static const char varied_text[] =
    "{\n"
    "  name = \"tab\\there \\\"quoted\\\" back\\\\slash \\001 nl\\n\",\n"
    "  utf8 = \"caf\xc3\xa9\",\n"
    "  tenth = 0.1,\n"
    "  third = 0.3333333333333333,\n"
    "  huge = 1e+300,\n"
    "  tiny = 4.94065645841247e-324,\n"
    "  negzero = -0,\n"
    "  big = 9007199254740992,\n"
    "  [\"end\"] = 1,\n"
    "  [\"a b\"] = 2,\n"
    "  [\"\"] = 3,\n"
    "  [\"x]=\"] = \"]]\",\n"
    "  model = {\n"
    "    size = {64, 32},\n"
    "    blocks = {\n"
    "      {1, 2},\n"
    "      {\n"
    "        k = true,\n"
    "      },\n"
    "      {},\n"
    "      nil,\n"
    "    },\n"
    "  },\n"
    "  empty = {},\n"
    "  flag = false,\n"
    "}\n";

/* The printed text is exact and stable, and reads back into a tree that prints the same. */
static void test_write_and_read_back(void **state)
{
    (void)state;
    fl_cfg *a = build_varied(NULL);
    assert_text(a, varied_text);
    /* same calls, another allocator: the same text */
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_cfg *b = build_varied(&fa.iface);
    assert_text(b, varied_text);
    fl_cfg_free(b);
    assert_int_equal(fa.live_blocks, 0);

    /* read back: same text, and every number bit for bit */
    fl_error err;
    fl_cfg *c = fl_cfg_new(NULL);
    must(fl_cfg_merge_text(c, varied_text, &err), &err);
    assert_text(c, varied_text);
    const char *keys[] = { "tenth", "third", "huge", "tiny", "negzero", "big" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        double x = fl_cfg_num_value(fl_cfg_get(a, keys[i]));
        double y = fl_cfg_num_value(fl_cfg_get(c, keys[i]));
        if (memcmp(&x, &y, sizeof x) != 0)
            fail_msg("%s: %.17g read back as %.17g", keys[i], x, y);
    }
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(c, "name")),
                        fl_cfg_str_value(fl_cfg_get(a, "name")));
    /* merging replaces keys in place and appends new ones */
    must(fl_cfg_merge_text(c, "{ flag = true, tenth = 2, new = 'n' }", &err), &err);
    assert_string_equal(fl_cfg_key(fl_cfg_item(c, 2)), "tenth");
    assert_true(fl_cfg_num_value(fl_cfg_item(c, 2)) == 2);
    assert_string_equal(fl_cfg_key(fl_cfg_item(c, fl_cfg_len(c) - 1)), "new");
    must(fl_cfg_merge_text(c, " {} ", &err), &err);
    char *before = text_of(c, 0);
    assert_fails(fl_cfg_merge_text(c, "x = 1", &err), &err, FL_E_FORMAT,
                 "config: cannot parse \"x = 1\": expected a table constructor", NULL);
    assert_fails(fl_cfg_merge_text(c, "{1, 2}", &err), &err, FL_E_FORMAT,
                 "expected key = value fields, not a list", NULL);
    assert_fails(fl_cfg_merge_text(c, "{a = 1} x", &err), &err, FL_E_FORMAT,
                 "unexpected text after '}' at column 9", NULL);
    assert_fails(fl_cfg_merge_text(fl_cfg_get(c, "model"), "{size = {1,}", &err), &err,
                 FL_E_FORMAT, "model: cannot parse", "expected '}'");
    char *after = text_of(c, 0);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* snprintf semantics of fl_cfg_format, and fl_cfg_write gives the same bytes */
    char small[10];
    size_t full = fl_cfg_format(a, 0, small, sizeof small);
    assert_int_equal(full, strlen(varied_text));
    assert_memory_equal(small, varied_text, 9);
    assert_int_equal(small[9], '\0');
    assert_int_equal(fl_cfg_format(a, 0, NULL, 0), full);
    char *mem = NULL;
    size_t memlen = 0;
    FILE *f = open_memstream(&mem, &memlen);
    assert_non_null(f);
    must(fl_cfg_write(a, f, 0, &err), &err);
    fclose(f);
    assert_int_equal(memlen, full);
    assert_memory_equal(mem, varied_text, full);
    free(mem);
    /* a stream that cannot be written */
    f = fopen("/dev/null", "r");
    if (f) {
        assert_fails(fl_cfg_write(a, f, 0, &err), &err, FL_E_IO, "config: writing", NULL);
        fclose(f);
    }
    /* a scalar prints alone */
    char one[32];
    assert_int_equal(fl_cfg_format(fl_cfg_get(a, "flag"), 0, one, sizeof one), 6);
    assert_string_equal(one, "false\n");
    fl_cfg_free(a);
    fl_cfg_free(c);
}

/* ---- allocation failures ------------------------------------------------------------ */

/* A whole session: overrides (with a selector conversion), builders, readers with defaults,
 * module conversions, read-back and the check. */
static fl_status session(const fl_allocator *a, fl_error *err)
{
    fl_cfg *root = fl_cfg_new(a), *t, *l, *opts, *metrics;
    if (!root)
        return fl_error_set(err, FL_E_NOMEM, "root");
    const char *name;
    long parts;
    experiment_opts o;
    fl_status st;
    if ((st = fl_cfg_set(root, "scheduler.planner", "lookahead", err)) ||
        (st = fl_cfg_set(root, "scheduler.planner.partitions", "2", err)) ||
        (st = fl_cfg_set_arg(root, "model.size={64, 'x,y'}", err)) ||
        (st = fl_cfg_set(root, "model.size", "48,48", err)) ||
        (st = fl_cfg_set(root, "deep.a.b.c", "{{1}, {k = \"v\"}}", err)) ||
        (st = fl_cfg_set(root, "sampler", "{kind = ddpm}", err)) ||
        (st = fl_cfg_merge_text(root, "{ seed = 3, video = { name = \"n\" } }", err)) ||
        (st = fl_cfg_put_table(root, "built", &t, err)) ||
        (st = fl_cfg_put_str(t, "s", "str", err)) ||
        (st = fl_cfg_put_list(t, "l", &l, err)) ||
        (st = fl_cfg_push_num(l, 1, err)) || (st = fl_cfg_push_str(l, "two", err)) ||
        (st = fl_cfg_push_table(l, NULL, err)) ||
        (st = fl_cfg_set(root, "metrics", "adjacent, drift", err)) ||
        (st = read_all(root, &o, err)) ||
        (st = fl_cfg_table(root, "scheduler", &t, err)) ||
        (st = fl_cfg_module(t, "planner", NULL, &name, &opts, err)) ||
        (st = fl_cfg_int(opts, "partitions", 4, 1, 64, &parts, err)) ||
        (st = fl_cfg_list(root, "metrics", &metrics, err)) ||
        (st = fl_cfg_item_module(metrics, 0, &name, &opts, err)) ||
        (st = fl_cfg_item_module(metrics, 1, &name, &opts, err)))
        goto done;
    fl_cfg_mark_used(root);
    if ((st = fl_cfg_check_unused(root, err)))
        goto done;
    /* every reader putting its default into an empty tree */
    fl_cfg_free(root);
    root = fl_cfg_new(a);
    if (!root)
        return fl_error_set(err, FL_E_NOMEM, "root");
    if ((st = read_all(root, &o, err)) ||
        (st = fl_cfg_set(root, "m", "{k = 1, module = nil}", err)) ||
        (st = fl_cfg_module(root, "m", "dflt", &name, &opts, err)) ||
        (st = fl_cfg_int(opts, "k", 0, 0, 9, &parts, err)))
        goto done;
    st = fl_cfg_check_unused(root, err);
done:
    fl_cfg_free(root);
    return st;
}

/* Every allocation of a session failing in turn: FL_E_NOMEM each time, nothing leaked. */
static void test_session_fault_injection(void **state)
{
    (void)state;
    long n;
    for (n = 0;; n++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, n);
        fl_error err;
        fl_error_clear(&err);
        fl_status st = session(&fa.iface, &err);
        if (fa.live_blocks || fa.live_bytes)
            fail_msg("fail_after %ld: %zu blocks (%zu bytes) leaked", n, fa.live_blocks,
                     fa.live_bytes);
        if (st == FL_OK) {
            assert_int_equal(fa.failures, 0);
            break;
        }
        if (st != FL_E_NOMEM || err.code != FL_E_NOMEM)
            fail_msg("fail_after %ld: status %d (%s), want FL_E_NOMEM", n, st, err.msg);
        assert_int_equal(fa.failures, 1);
        assert_true(n < 10000);
    }
    assert_true(n > 50); /* the loop really went through many allocation points */
}

/* Overrides, merges and builders that run out of memory leave the tree as it was. */
static void test_edits_atomic_under_faults(void **state)
{
    (void)state;
    const char *const edits[][2] = {
        { "scheduler.planner.partitions", "2" },       /* converts a selector */
        { "scheduler.planner.x.y.z", "{1, {a = 2}}" }, /* converts, then builds tables */
        { "scheduler.extra", "'s'" },                 /* a new key in a full table */
        { "sampler", "{1, 2, 3, 4, 5, 6, 7, 8, 9}" }, /* replaces */
        { "new.path", "a, b" },
        { "", "{ sampler = 1, other = {x = 1} }" },   /* merge_text */
        { "", "put" },                                /* builders */
    };
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        for (long n = 0;; n++) {
            fl_faultalloc fa;
            fl_faultalloc_init(&fa, NULL, -1);
            fl_error err;
            fl_cfg *root = fl_cfg_new(&fa.iface);
            assert_non_null(root);
            must(fl_cfg_set(root, "scheduler.planner", "lookahead", &err), &err);
            must(fl_cfg_set(root, "scheduler.a", "1", &err), &err);
            must(fl_cfg_set(root, "scheduler.b", "2", &err), &err);
            must(fl_cfg_set(root, "scheduler.c", "3", &err), &err);
            must(fl_cfg_set(root, "sampler", "ddim", &err), &err);
            char *before = text_of(root, 0);
            fa.fail_after = n;
            fl_status st;
            if (edits[e][0][0])
                st = fl_cfg_set(root, edits[e][0], edits[e][1], &err);
            else if (strcmp(edits[e][1], "put") != 0)
                st = fl_cfg_merge_text(root, edits[e][1], &err);
            else {
                fl_cfg *t = fl_cfg_get(root, "scheduler");
                st = fl_cfg_put_str(t, "d", "four", &err);
                if (!st)
                    st = fl_cfg_put_list(t, "e", NULL, &err);
            }
            char *after = text_of(root, 0);
            fl_cfg_free(root);
            assert_int_equal(fa.live_blocks, 0);
            if (st == FL_OK) {
                assert_string_not_equal(before, after);
                free(before);
                free(after);
                break;
            }
            if (st != FL_E_NOMEM)
                fail_msg("edit %zu fail_after %ld: status %d (%s)", e, n, st, err.msg);
            if (edits[e][1][0] != 'p' && strcmp(before, after) != 0)
                fail_msg("edit %zu fail_after %ld changed the tree:\n%s\nto\n%s", e, n, before,
                         after);
            free(before);
            free(after);
        }
    }
}

/* ---- very long keys ----------------------------------------------------------------- */

/* A 10k-character key works everywhere; messages about it are clipped, never overflowed. */
static void test_very_long_keys(void **state)
{
    (void)state;
    enum { K = 10000 };
    char *key = malloc(K + 1), *path = malloc(K + 3);
    assert_non_null(key);
    assert_non_null(path);
    memset(key, 'k', K);
    key[K] = '\0';
    snprintf(path, K + 3, "a.%s", key);
    fl_error err;
    fl_cfg *root = fl_cfg_new(NULL);
    must(fl_cfg_set(root, path, "0", &err), &err);
    fl_cfg *a = fl_cfg_get(root, "a"), *n = fl_cfg_get(a, key);
    assert_non_null(n);
    assert_ptr_equal(fl_cfg_lookup(root, path), n);
    /* its path, full length, and clipped into a small buffer */
    char *full = malloc(K + 3);
    assert_non_null(full);
    assert_int_equal(fl_cfg_path(n, full, K + 3), K + 2);
    assert_string_equal(full, path);
    char small[16];
    assert_int_equal(fl_cfg_path(n, small, sizeof small), K + 2);
    assert_int_equal(strlen(small), 15);
    /* a range error names it, clipped to the message record */
    long v = 5;
    assert_fails(fl_cfg_int(a, key, 1, 1, 9, &v, &err), &err, FL_E_RANGE, "a.kkkk",
                 "kkk...: expected an integer in [1, 9], got 0");
    assert_true(strlen(err.msg) < FL_ERRMSG_MAX);
    assert_int_equal(v, 5);
    must(fl_cfg_set(root, path, "3", &err), &err);
    must(fl_cfg_int(a, key, 1, 1, 9, &v, &err), &err);
    assert_int_equal(v, 3);
    /* and a value under a long key prints and reads back */
    must(fl_cfg_put_str(a, "other", key, &err), &err);
    char *text = text_of(root, 0);
    assert_true(strlen(text) > 2 * K);
    fl_cfg *back = fl_cfg_new(NULL);
    must(fl_cfg_merge_text(back, text, &err), &err);
    char *text2 = text_of(back, 0);
    assert_string_equal(text, text2);
    free(text2);
    /* unknown long keys, long bad paths and long bad texts: clean, clipped messages */
    assert_fails(fl_cfg_check_unused(back, &err), &err, FL_E_INVALID, "a: unknown key", NULL);
    fl_cfg *ba;
    must(fl_cfg_table(back, "a", &ba, &err), &err);
    const char *other;
    must(fl_cfg_str(ba, "other", NULL, &other, &err), &err);
    assert_int_equal(strlen(other), K);
    assert_fails(fl_cfg_check_unused(back, &err), &err, FL_E_INVALID, "a.kkkk",
                 "kkk...: unknown key; accepted: other");
    assert_true(strlen(err.msg) < FL_ERRMSG_MAX);
    path[K + 1] = ' ';
    assert_fails(fl_cfg_set(root, path, "1", &err), &err, FL_E_INVALID, "bad key path \"a.kkk",
                 NULL);
    assert_true(strlen(err.msg) < FL_ERRMSG_MAX);
    char *longtext = malloc(3 * K);
    assert_non_null(longtext);
    memset(longtext, 'v', 3 * K);
    longtext[0] = '{';
    longtext[3 * K - 1] = '\0';
    assert_fails(fl_cfg_set(root, "x", longtext, &err), &err, FL_E_FORMAT,
                 "x: cannot parse \"{vvv", "...\": expected '}' at column 30000");
    longtext[0] = 'v';
    must(fl_cfg_set(root, "x", longtext, &err), &err); /* a long plain string is fine */
    assert_int_equal(strlen(fl_cfg_str_value(fl_cfg_get(root, "x"))), 3 * K - 1);
    /* ten thousand keys of one level */
    char k[16];
    for (int i = 0; i < K; i++) {
        snprintf(k, sizeof k, "k%d", i);
        must(fl_cfg_put_num(root, k, i, &err), &err);
    }
    assert_true(fl_cfg_num_value(fl_cfg_get(root, "k9999")) == 9999);
    /* read them all back (the accepted list grows to match); then only a.* and x are unread */
    for (int i = 0; i < K; i++) {
        double x;
        snprintf(k, sizeof k, "k%d", i);
        must(fl_cfg_num(root, k, 0, 0, K, &x, &err), &err);
        assert_true(x == i);
    }
    assert_fails(fl_cfg_check_unused(root, &err), &err, FL_E_INVALID,
                 "a: unknown key; accepted: k0, k1, k10, k100, k1000, k1001,", NULL);
    free(longtext);
    free(text);
    free(full);
    free(key);
    free(path);
    fl_cfg_free(back);
    fl_cfg_free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_scalars),
        cmocka_unit_test(test_set_lists),
        cmocka_unit_test(test_set_override_and_paths),
        cmocka_unit_test(test_builders_and_lookups),
        cmocka_unit_test(test_readers_record_defaults),
        cmocka_unit_test(test_readers_read_values),
        cmocka_unit_test(test_reader_errors),
        cmocka_unit_test(test_unused_keys),
        cmocka_unit_test(test_module_slots),
        cmocka_unit_test(test_write_and_read_back),
        cmocka_unit_test(test_session_fault_injection),
        cmocka_unit_test(test_edits_atomic_under_faults),
        cmocka_unit_test(test_very_long_keys),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
