/* cmocka suite for core/sweep: run ids (pinned to a literal), expansion order, labels and
 * resolved points, axes over module slots, zipped and map axes, --set overrides, invalid
 * and duplicate points; and the config additions the sweep is built on (copy, set_copy,
 * emit). Scripts come from text (fl_script_load_text). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/script.h"
#include "core/status.h"
#include "core/sweep.h"

/* ---- helpers ------------------------------------------------------------------------ */

#define BASE                                                                                   \
    "local fl = require 'fifolab'\n"                                                           \
    "local base = fl.experiment { name = 'sw', seed = 5, frames = 16,\n"                       \
    "  model = fl.model.gauss { window = 4, channels = 2, size = {8, 8} },\n"                  \
    "  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 } } }\n"

static void must(fl_status st, const fl_error *e)
{
    if (st)
        fail_msg("status %d: %s", st, fl_error_msg(e));
}

static void script(const char *text, fl_script *s)
{
    fl_error e;
    must(fl_script_load_text("t.lua", text, NULL, NULL, s, &e), &e);
}

/* Loads `text` and expands it with `sets`; must succeed. */
static void expand(const char *text, const char *const *sets, int nset, fl_sweep *sw)
{
    fl_script s;
    fl_error e;
    script(text, &s);
    must(fl_sweep_expand(&s, sets, nset, sw, &e), &e);
    fl_script_free(&s);
}

/* Loads and expands `text`; the expansion must fail with `code` and a message holding
 * in1 and in2. */
static void expand_fails(const char *text, const char *const *sets, int nset, fl_status code,
                         const char *in1, const char *in2)
{
    fl_script s;
    fl_sweep sw;
    fl_error e;
    script(text, &s);
    fl_status st = fl_sweep_expand(&s, sets, nset, &sw, &e);
    fl_script_free(&s);
    if (st != code)
        fail_msg("status %d (%s), want %d", st, fl_error_msg(&e), code);
    if (in1 && !strstr(e.msg, in1))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, in1);
    if (in2 && !strstr(e.msg, in2))
        fail_msg("message \"%s\" lacks \"%s\"", e.msg, in2);
    assert_null(sw.points);
    assert_int_equal(sw.count, 0);
}

static double num_at(const fl_cfg *cfg, const char *path)
{
    const fl_cfg *n = fl_cfg_lookup(cfg, path);
    if (fl_cfg_type_of(n) != FL_CFG_NUM)
        fail_msg("%s is not a number", path);
    return fl_cfg_num_value(n);
}

static const char *str_at(const fl_cfg *cfg, const char *path)
{
    const char *s = fl_cfg_str_value(fl_cfg_lookup(cfg, path));
    if (!s)
        fail_msg("%s is not a string", path);
    return s;
}

/* ---- run ids ------------------------------------------------------------------------ */

/* The id is the FNV-1a 64 hash of the printed tree, first 12 hex digits: pinned to a
 * literal so an accidental change of the hash or of the printing shows up here. */
static void test_run_id_literal(void **state)
{
    (void)state;
    fl_cfg *t = fl_cfg_new(NULL);
    fl_error e;
    must(fl_cfg_merge_text(t, "{ name = \"x\", seed = 1, model = { module = \"gauss\", size = {8, 8} } }", &e), &e);
    char id[FL_RUN_ID_LEN + 1];
    fl_run_id(t, id);
    assert_int_equal(strlen(id), FL_RUN_ID_LEN);
    /* independent check: FNV-1a 64 over the same text, computed here */
    size_t n = fl_cfg_format(t, 0, NULL, 0);
    char *text = malloc(n + 1);
    assert_non_null(text);
    fl_cfg_format(t, 0, text, n + 1);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)text[i];
        h *= 0x100000001b3ULL;
    }
    char want[17];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)h);
    assert_memory_equal(id, want, FL_RUN_ID_LEN);
    assert_string_equal(id, "69c297d296cc");
    free(text);

    /* the same tree built another way has the same id; any change changes it */
    fl_cfg *u = fl_cfg_new(NULL), *m, *size;
    must(fl_cfg_put_str(u, "name", "x", &e), &e);
    must(fl_cfg_put_num(u, "seed", 1, &e), &e);
    must(fl_cfg_put_table(u, "model", &m, &e), &e);
    must(fl_cfg_put_str(m, "module", "gauss", &e), &e);
    must(fl_cfg_put_list(m, "size", &size, &e), &e);
    must(fl_cfg_push_num(size, 8, &e), &e);
    must(fl_cfg_push_num(size, 8, &e), &e);
    char id2[FL_RUN_ID_LEN + 1];
    fl_run_id(u, id2);
    assert_string_equal(id, id2);
    must(fl_cfg_set(u, "model.size", "{8, 9}", &e), &e);
    fl_run_id(u, id2);
    assert_string_not_equal(id, id2);
    fl_cfg_free(t);
    fl_cfg_free(u);
}

/* ---- the config additions ----------------------------------------------------------- */

typedef struct sinkbuf {
    char *p;
    size_t len;
    int pieces;
} sinkbuf;

static void append(void *ctx, const char *p, size_t n)
{
    sinkbuf *b = ctx;
    char *q = realloc(b->p, b->len + n);
    assert_non_null(q);
    memcpy(q + b->len, p, n);
    b->p = q;
    b->len += n;
    b->pieces++;
}

/* fl_cfg_copy copies values, spelling and order but not reader records; fl_cfg_set_copy
 * sets a copy at a path with --set's rules (selectors, creation, atomic errors);
 * fl_cfg_emit streams exactly fl_cfg_format's text. */
static void test_config_additions(void **state)
{
    (void)state;
    fl_error e;
    fl_cfg *t = fl_cfg_new(NULL);
    must(fl_cfg_merge_text(t, "{ b = 1, a = { module = \"m\", x = {1, 2} }, s = \"lookahead\" }", &e), &e);
    must(fl_cfg_set(t, "n", "2024", &e), &e); /* bare text: remembers its spelling */
    long v;
    must(fl_cfg_int(t, "b", 0, 0, 10, &v, &e), &e); /* a reader's mark, and a default: */
    must(fl_cfg_int(t, "d", 3, 0, 10, &v, &e), &e);
    fl_cfg *c = fl_cfg_copy(t, NULL);
    assert_non_null(c);
    size_t n1 = fl_cfg_format(t, 0, NULL, 0), n2 = fl_cfg_format(c, 0, NULL, 0);
    char *a = malloc(n1 + 1), *b = malloc(n2 + 1);
    fl_cfg_format(t, 0, a, n1 + 1);
    fl_cfg_format(c, 0, b, n2 + 1);
    assert_string_equal(a, b);
    assert_true(fl_cfg_is_used(fl_cfg_get(t, "b")));
    assert_false(fl_cfg_is_used(fl_cfg_get(c, "b")));
    assert_false(fl_cfg_is_default(fl_cfg_get(c, "d")));
    const char *str;
    must(fl_cfg_str(c, "n", NULL, &str, &e), &e);
    assert_string_equal(str, "2024");
    /* the copy is independent */
    must(fl_cfg_set(c, "a.x", "3", &e), &e);
    assert_int_equal(fl_cfg_len(fl_cfg_lookup(t, "a.x")), 2);
    /* an empty list copies as an empty root table */
    fl_cfg *el;
    must(fl_cfg_put_list(t, "empty", &el, &e), &e);
    fl_cfg *ec = fl_cfg_copy(el, NULL);
    assert_int_equal(fl_cfg_type_of(ec), FL_CFG_TABLE);
    fl_cfg_free(ec);

    /* set_copy: a table at a path that crosses a selector string and a missing table */
    fl_cfg *src = fl_cfg_lookup(t, "a");
    must(fl_cfg_set_copy(c, "s.planner", src, &e), &e);
    assert_string_equal(str_at(c, "s.module"), "lookahead");
    assert_string_equal(str_at(c, "s.planner.module"), "m");
    must(fl_cfg_set_copy(c, "new.deep.key", fl_cfg_lookup(t, "b"), &e), &e);
    assert_int_equal((int)num_at(c, "new.deep.key"), 1);
    /* in place, keeping the key's position */
    must(fl_cfg_set_copy(c, "b", fl_cfg_lookup(t, "a.x"), &e), &e);
    assert_string_equal(fl_cfg_key(fl_cfg_item(c, 0)), "b");
    assert_int_equal(fl_cfg_len(fl_cfg_get(c, "b")), 2);
    /* a non-table on the way: refused, tree unchanged */
    size_t before = fl_cfg_format(c, 0, NULL, 0);
    assert_int_equal(fl_cfg_set_copy(c, "d.x", src, &e), FL_E_INVALID);
    assert_string_equal(e.msg, "d.x: cannot set: d is a number, not a table");
    assert_int_equal(fl_cfg_format(c, 0, NULL, 0), before);
    assert_int_equal(fl_cfg_set_copy(c, "a..b", src, &e), FL_E_INVALID);

    /* emit: the same bytes as format, in pieces */
    sinkbuf sb = { NULL, 0, 0 };
    assert_int_equal(fl_cfg_emit(t, FL_CFG_MARK_DEFAULTS, append, &sb),
                     fl_cfg_format(t, FL_CFG_MARK_DEFAULTS, NULL, 0));
    assert_true(sb.pieces > 10);
    free(a);
    a = malloc(sb.len + 1);
    fl_cfg_format(t, FL_CFG_MARK_DEFAULTS, a, sb.len + 1);
    assert_memory_equal(sb.p, a, sb.len);
    assert_non_null(strstr(a, "d = 3, -- default"));
    free(sb.p);
    free(a);
    free(b);
    fl_cfg_free(c);
    fl_cfg_free(t);
}

/* ---- expansion ---------------------------------------------------------------------- */

/* Axes in declaration order, the last fastest, seeds fastest of all; labels say the axis
 * values and seed; each point is fully resolved (defaults explicit) with its own id. */
static void test_order_and_labels(void **state)
{
    (void)state;
    fl_sweep sw;
    expand(BASE "return fl.sweep { name = 'abl', base = base,\n"
                "  grid = { { 'scheduler.planner.partitions', {1, 2, 4} },\n"
                "           { 'scheduler.planner', { fl.planner.partition {}, 'lookahead' } } },\n"
                "  seeds = {1, 2} }\n",
           NULL, 0, &sw);
    assert_string_equal(sw.name, "abl");
    assert_int_equal(sw.count, 12);
    static const char *const labels[] = {
        "scheduler.planner.partitions=1 scheduler.planner=partition seed=1",
        "scheduler.planner.partitions=1 scheduler.planner=partition seed=2",
        "scheduler.planner.partitions=1 scheduler.planner=lookahead seed=1",
        "scheduler.planner.partitions=1 scheduler.planner=lookahead seed=2",
        "scheduler.planner.partitions=2 scheduler.planner=partition seed=1",
    };
    for (int i = 0; i < 5; i++)
        assert_string_equal(sw.points[i].label, labels[i]);
    assert_string_equal(sw.points[11].label,
                        "scheduler.planner.partitions=4 scheduler.planner=lookahead seed=2");
    for (int64_t i = 0; i < sw.count; i++) {
        const fl_sweep_point *p = &sw.points[i];
        assert_int_equal(p->index, i);
        static const int parts[] = { 1, 2, 4 };
        /* an axis over the module slot does not wipe the axis over its option */
        assert_int_equal((int)num_at(p->cfg, "scheduler.planner.partitions"), parts[i / 4]);
        assert_string_equal(str_at(p->cfg, "scheduler.planner.module"),
                            (i / 2) % 2 ? "lookahead" : "partition");
        assert_int_equal((int)num_at(p->cfg, "seed"), 1 + i % 2);
        assert_string_equal(str_at(p->cfg, "name"), "abl");
        assert_int_equal((int)num_at(p->cfg, "model.k0"), 4); /* a default, resolved */
        assert_true(fl_cfg_is_default(fl_cfg_lookup(p->cfg, "model.k0")));
        assert_int_equal(strlen(p->id), FL_RUN_ID_LEN);
        for (int64_t j = 0; j < i; j++)
            assert_string_not_equal(p->id, sw.points[j].id);
    }
    /* stable: the same script expands to the same ids */
    fl_sweep again;
    expand(BASE "return fl.sweep { name = 'abl', base = base,\n"
                "  grid = { { 'scheduler.planner.partitions', {1, 2, 4} },\n"
                "           { 'scheduler.planner', { fl.planner.partition {}, 'lookahead' } } },\n"
                "  seeds = {1, 2} }\n",
           NULL, 0, &again);
    for (int64_t i = 0; i < sw.count; i++)
        assert_string_equal(sw.points[i].id, again.points[i].id);
    fl_sweep_free(&again);
    fl_sweep_free(&sw);
    fl_sweep_free(&sw); /* safe twice */
}

/* Zipped axes set their keys together; map grids go in sorted key order; module tables
 * with options label as name{options}. */
static void test_zipped_map_and_module_labels(void **state)
{
    (void)state;
    fl_sweep sw;
    expand(BASE "return fl.sweep { base = base, grid = {\n"
                "  { {'model.window', 'scheduler.planner.partitions'}, { {4, 2}, {8, 1} } },\n"
                "  { 'scheduler.planner', { fl.planner.partition { partitions = 3 } } } } }\n",
           NULL, 0, &sw);
    assert_int_equal(sw.count, 2);
    assert_string_equal(sw.name, "sw");
    assert_string_equal(sw.points[0].label, "model.window=4 scheduler.planner.partitions=2 "
                                            "scheduler.planner=partition{partitions=3}");
    /* the deeper key is applied after the module slot, whatever the declaration order */
    assert_int_equal((int)num_at(sw.points[0].cfg, "scheduler.planner.partitions"), 2);
    assert_int_equal((int)num_at(sw.points[1].cfg, "model.window"), 8);
    assert_int_equal((int)num_at(sw.points[1].cfg, "scheduler.planner.partitions"), 1);
    assert_int_equal((int)num_at(sw.points[1].cfg, "seed"), 5); /* the base's */
    fl_sweep_free(&sw);

    expand(BASE "return fl.sweep { base = base, grid = {\n"
                "  ['sampler.eta'] = {0, 1}, ['model.size'] = { {8, 8}, {4, 6} },\n"
                "  ['noise'] = { 'cosine' } } }\n",
           NULL, 0, &sw);
    assert_int_equal(sw.count, 4);
    assert_string_equal(sw.points[0].label, "model.size={8,8} noise=cosine sampler.eta=0");
    assert_string_equal(sw.points[3].label, "model.size={4,6} noise=cosine sampler.eta=1");
    assert_int_equal((int)fl_cfg_num_value(fl_cfg_item(fl_cfg_lookup(sw.points[3].cfg,
                                                                     "model.size"), 1)), 6);
    fl_sweep_free(&sw);
}

/* An experiment is one point: --set overrides applied, label the seed, fully resolved. */
static void test_experiment_point(void **state)
{
    (void)state;
    fl_sweep sw;
    const char *sets[] = { "frames=24", "scheduler.planner=partition" };
    expand(BASE "return base\n", sets, 2, &sw);
    assert_int_equal(sw.count, 1);
    assert_string_equal(sw.name, "sw");
    assert_string_equal(sw.points[0].label, "seed=5");
    assert_int_equal((int)num_at(sw.points[0].cfg, "frames"), 24);
    assert_string_equal(str_at(sw.points[0].cfg, "scheduler.planner.module"), "partition");
    assert_int_equal((int)num_at(sw.points[0].cfg, "scheduler.planner.partitions"), 4);
    char id[FL_RUN_ID_LEN + 1];
    fl_run_id(sw.points[0].cfg, id);
    assert_string_equal(id, sw.points[0].id);
    fl_sweep_free(&sw);
    /* without the overrides the id differs */
    fl_sweep plain;
    expand(BASE "return base\n", NULL, 0, &plain);
    assert_string_not_equal(plain.points[0].id, id);
    fl_sweep_free(&plain);
}

/* --set overrides go through the same validation: an unknown key is named with the
 * accepted ones, a bad value with its key, a malformed override as such. */
static void test_sets_validated(void **state)
{
    (void)state;
    const char *unknown[] = { "schedular.x=1" };
    expand_fails(BASE "return base\n", unknown, 1, FL_E_INVALID,
                 "schedular: unknown key; accepted: ", "scheduler");
    const char *range[] = { "scheduler.planner.partitions=0" };
    expand_fails(BASE "return fl.sweep { base = base, seeds = {1, 2} }\n", range, 1, FL_E_RANGE,
                 "point 1 of 2 (seed=1): scheduler.planner.partitions: expected an integer in [1, ",
                 "got 0");
    const char *bad[] = { "frames" };
    expand_fails(BASE "return base\n", bad, 1, FL_E_INVALID, "bad override \"frames\"", NULL);
    const char *typo[] = { "model.size={1," };
    expand_fails(BASE "return base\n", typo, 1, FL_E_FORMAT, "--set model.size={1,",
                 "cannot parse");
}

/* A point the modules refuse names its label and the key. */
static void test_invalid_point(void **state)
{
    (void)state;
    expand_fails(BASE "return fl.sweep { base = base, grid = {\n"
                      "  { 'scheduler.planner.partitions', {2, 0} } } }\n",
                 NULL, 0, FL_E_RANGE,
                 "point 2 of 2 (scheduler.planner.partitions=0): scheduler.planner.partitions: "
                 "expected an integer in [1, ",
                 "got 0");
    expand_fails(BASE "return fl.sweep { base = base, grid = { { 'model.nope', {1} } } }\n",
                 NULL, 0, FL_E_INVALID, "point 1 of 1 (model.nope=1): model.nope: unknown key",
                 "accepted: ");
    expand_fails(BASE "return fl.sweep { base = base, grid = { { 'frames.x', {1} } } }\n",
                 NULL, 0, FL_E_INVALID, "frames.x: cannot set: frames is a number", NULL);
}

/* Points that resolve to the same configuration are refused, naming both. */
static void test_duplicates(void **state)
{
    (void)state;
    expand_fails(BASE "return fl.sweep { base = base, grid = { { 'model.window', {4, 4} } } }\n",
                 NULL, 0, FL_E_INVALID,
                 "points 1 (model.window=4) and 2 (model.window=4) resolve to the same "
                 "configuration",
                 NULL);
    /* an override that pins the swept key makes every point the same */
    const char *pin[] = { "frames=8" };
    expand_fails(BASE "return fl.sweep { base = base, grid = { { 'frames', {16, 32} } } }\n",
                 pin, 1, FL_E_INVALID, "points 1 (frames=16) and 2 (frames=32)",
                 "same configuration");
    /* a module by name and the same module with its default options written out */
    expand_fails(BASE "return fl.sweep { base = base, grid = {\n"
                      "  { 'sampler', { 'ddim', fl.sampler.ddim { eta = 1 } } } } }\n",
                 NULL, 0, FL_E_INVALID, "points 1 (sampler=ddim) and 2 (sampler=ddim{eta=1})",
                 "same configuration");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_id_literal),
        cmocka_unit_test(test_config_additions),
        cmocka_unit_test(test_order_and_labels),
        cmocka_unit_test(test_zipped_map_and_module_labels),
        cmocka_unit_test(test_experiment_point),
        cmocka_unit_test(test_sets_validated),
        cmocka_unit_test(test_invalid_point),
        cmocka_unit_test(test_duplicates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
