/* cmocka suite for core/script: the Lua host's conversion to configuration trees, validation
 * messages, the sandbox, the instruction and memory limits, includes, seeded math.random,
 * error positions and the sweep form. Scripts are written to a fresh temporary directory. */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, symlink */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "tests/tmpdir.h"
#include "core/script.h"
#include "core/status.h"

/* ---- helpers ------------------------------------------------------------------------ */

static char dir[64];

/* Writes `text` to dir/rel, creating the folders on the way. */
static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (char *p = path + strlen(dir) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

static const char *at(const char *rel)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    return path;
}

static fl_status load_lim(const char *rel, const fl_script_limits *lim, fl_script *s,
                          fl_error *e)
{
    fl_error_clear(e);
    return fl_script_load(at(rel), lim, s, e);
}

/* Loads dir/rel, which must succeed. */
static void load_ok(const char *rel, fl_script *s)
{
    fl_error e;
    fl_status st = load_lim(rel, NULL, s, &e);
    if (st)
        fail_msg("%s: status %d: %s", rel, st, fl_error_msg(&e));
}

static void assert_has(const char *msg, const char *want)
{
    if (want && !strstr(msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

/* Writes `text` as dir/rel, loads it with lim and expects status `code` with a message that
 * contains in1 and in2 (NULL: anything); *out is then empty. */
static void expect_lim(const char *rel, const char *text, const fl_script_limits *lim,
                       fl_status code, const char *in1, const char *in2)
{
    if (text)
        put(rel, text);
    fl_script s;
    fl_error e;
    fl_status st = load_lim(rel, lim, &s, &e);
    if (st != code)
        fail_msg("%s: status %d (%s), want %d", rel, st, fl_error_msg(&e), code);
    if (code == FL_OK) {
        fl_script_free(&s);
        return;
    }
    assert_has(e.msg, in1);
    assert_has(e.msg, in2);
    assert_null(s.base);
    assert_null(s.path);
    assert_null(s.axes);
    fl_script_free(&s);
}

static void expect(const char *rel, const char *text, fl_status code, const char *in1,
                   const char *in2)
{
    expect_lim(rel, text, NULL, code, in1, in2);
}

static char *text_of(const fl_cfg *n)
{
    size_t len = fl_cfg_format(n, 0, NULL, 0);
    char *s = malloc(len + 1);
    assert_non_null(s);
    fl_cfg_format(n, 0, s, len + 1);
    return s;
}

static void assert_text(const fl_cfg *n, const char *want)
{
    char *s = text_of(n);
    if (strcmp(s, want))
        fail_msg("printed:\n%s\nwant:\n%s", s, want);
    free(s);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/fl_test_script.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    return fl_test_rm_tree(dir);
}

#define QUICK                                                                                  \
    "local fl = require \"fifolab\"\n"                                                         \
    "return fl.experiment {\n"                                                                 \
    "  name = \"q\", seed = 7, frames = 32,\n"                                                 \
    "  model = fl.model.gauss { window = 4, channels = 2, size = {8, 8}, drift = {0.5, 0.25} },\n" \
    "  noise = fl.noise.sqrt_linear {},\n"                                                     \
    "  sampler = fl.sampler.ddim { eta = 1 },\n"                                               \
    "  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 } },\n" \
    "}\n"

/* ---- experiments and conversion ----------------------------------------------------- */

/* An experiment script gives its tree as written (unresolved), keys in a fixed order: the
 * experiment's own at the root, `module` first then sorted below; path and text kept. */
static void test_experiment(void **state)
{
    (void)state;
    put("q.lua", QUICK);
    fl_script s;
    load_ok("q.lua", &s);
    assert_int_equal(s.is_sweep, 0);
    assert_int_equal(s.naxes, 0);
    assert_int_equal(s.nseeds, 0);
    assert_string_equal(s.path, at("q.lua"));
    assert_string_equal(s.source, QUICK);
    assert_text(s.base, "{\n"
                        "  name = \"q\",\n"
                        "  seed = 7,\n"
                        "  frames = 32,\n"
                        "  model = {\n"
                        "    module = \"gauss\",\n"
                        "    channels = 2,\n"
                        "    drift = {0.5, 0.25},\n"
                        "    size = {8, 8},\n"
                        "    window = 4,\n"
                        "  },\n"
                        "  noise = {\n"
                        "    module = \"sqrt_linear\",\n"
                        "  },\n"
                        "  sampler = {\n"
                        "    module = \"ddim\",\n"
                        "    eta = 1,\n"
                        "  },\n"
                        "  scheduler = {\n"
                        "    module = \"fifo\",\n"
                        "    planner = {\n"
                        "      module = \"lookahead\",\n"
                        "      partitions = 2,\n"
                        "    },\n"
                        "  },\n"
                        "}\n");
    fl_script_free(&s);
    fl_script_free(&s); /* safe twice */
}

/* Every Lua value kind that is a configuration value converts to its typed node; a plain
 * Lua table passed as a module works like a constructor's; an empty table stays a table. */
static void test_conversion(void **state)
{
    (void)state;
    put("c.lua", "local fl = require 'fifolab'\n"
                 "return fl.experiment { name = 'c', oracle = true,\n"
                 "  model = { module = 'gauss', size = {8, 8}, rho = 0.5, zeta = nil }, frames = 16,\n"
                 "  scheduler = fl.scheduler.full { steps = 4 } }\n");
    fl_script s;
    load_ok("c.lua", &s);
    assert_text(s.base, "{\n"
                        "  name = \"c\",\n"
                        "  frames = 16,\n"
                        "  oracle = true,\n"
                        "  model = {\n"
                        "    module = \"gauss\",\n"
                        "    rho = 0.5,\n"
                        "    size = {8, 8},\n"
                        "  },\n"
                        "  scheduler = {\n"
                        "    module = \"full\",\n"
                        "    steps = 4,\n"
                        "  },\n"
                        "}\n");
    fl_script_free(&s);
    /* a bare name at a module slot is a module selector, as in --set */
    put("c2.lua", "return fl.experiment { frames = 8, scheduler = 'full', noise = fl.noise.cosine() }\n");
    load_ok("c2.lua", &s);
    assert_string_equal(fl_cfg_str_value(fl_cfg_lookup(s.base, "scheduler")), "full");
    assert_string_equal(fl_cfg_str_value(fl_cfg_lookup(s.base, "noise.module")), "cosine");
    fl_script_free(&s);
}

/* Values that are not configuration values are refused with the key path, at the line of
 * the fl.experiment call. */
static void test_conversion_errors(void **state)
{
    (void)state;
    expect("f.lua", "local fl = require 'fifolab'\n"
                    "return fl.experiment { model = fl.model.gauss { size = {1, 2, print} } }\n",
           FL_E_INVALID, "f.lua:2: model.size[3]: a function is not a configuration value",
           NULL);
    expect("n.lua", "return fl.experiment { model = { rho = 0/0 } }", FL_E_INVALID,
           "n.lua:1: model.rho: nan is not a configuration value", NULL);
    expect("i.lua", "return fl.experiment { model = { rho = -math.huge } }", FL_E_INVALID,
           "model.rho: -inf is not a configuration value", NULL);
    expect("m.lua", "return fl.experiment { model = { 1, rho = 2 } }", FL_E_INVALID,
           "model: a table mixes list items ([1]) and named keys (\"rho\")", NULL);
    expect("h.lua", "return fl.experiment { model = { size = { [1] = 8, [3] = 8 } } }",
           FL_E_INVALID, "model.size: a list must have keys 1..2", "a hole");
    expect("k.lua", "return fl.experiment { model = { [true] = 1 } }", FL_E_INVALID,
           "model: key true is not a configuration key", NULL);
    expect("k2.lua", "return fl.experiment { model = { [1.5] = 1 } }", FL_E_INVALID,
           "model: key 1.5 is not a configuration key", NULL);
    expect("s.lua", "local t = {} t.me = t\nreturn fl.experiment { model = t }",
           FL_E_INVALID, "s.lua:2: model.me: a table that contains itself", NULL);
    expect("b.lua", "return fl.experiment { seed = math.maxinteger }", FL_E_INVALID,
           "seed: the integer 9223372036854775807 is too large", NULL);
    expect("z.lua", "return fl.experiment { name = 'a\\0b' }", FL_E_INVALID,
           "name: a string with a NUL byte", NULL);
    expect("u.lua", "return fl.experiment { model = { x = coroutine.create(print) } }",
           FL_E_INVALID, "model.x: a thread is not a configuration value", NULL);
    expect("l.lua", "return fl.experiment { 1, 2 }", FL_E_INVALID,
           "experiment: expected named keys", NULL);
    expect("e.lua", "return fl.experiment 'x'", FL_E_INVALID,
           "e.lua:1: fl.experiment: expected a table", NULL);
}

/* Bad options fail at load with the module's own message (key path and value), prefixed
 * with the file: at the fl.experiment line, or without a line when the experiment was
 * broken after construction. The status code is the module's. */
static void test_validation(void **state)
{
    (void)state;
    expect("v.lua", "local fl = require 'fifolab'\nreturn fl.experiment {\n"
                    "  scheduler = fl.scheduler.fifo { planner = fl.planner.partition { partitions = 0 } } }\n",
           FL_E_RANGE, "v.lua:2: scheduler.planner.partitions: expected an integer in [1, ",
           "got 0");
    expect("v2.lua", "local e = fl.experiment {}\n"
                     "e.scheduler = fl.scheduler.fifo { planner = fl.planner.partition { partitions = 0 } }\n"
                     "return e\n",
           FL_E_RANGE, "v2.lua: scheduler.planner.partitions: expected an integer", "got 0");
    expect("v3.lua", "return fl.experiment { frams = 3 }", FL_E_INVALID,
           "v3.lua:1: frams: unknown key; accepted: ", "frames");
    expect("v4.lua", "return fl.experiment { model = fl.model.gauss { size = 'abc' } }",
           FL_E_INVALID, "v4.lua:1: model.size: expected a list of 2 numbers", "got \"abc\"");
    expect("v5.lua", "return fl.experiment { sampler = fl.sampler.ddim { eta = 2 } }",
           FL_E_RANGE, "v5.lua:1: sampler.eta: expected a number in [0, 1], got 2", NULL);
    expect("v6.lua", "return fl.experiment { model = fl.model.gauss { windw = 4 } }",
           FL_E_INVALID, "model.windw: unknown key; accepted: ", "window");
    /* a constructor's options cannot name another module */
    expect("v7.lua", "return fl.experiment { model = fl.model.gauss { module = 'x' } }",
           FL_E_INVALID, "v7.lua:1: fl.model.gauss: module is set by the constructor", NULL);
    expect("v8.lua", "return fl.experiment { model = fl.model.gauss(3) }", FL_E_INVALID,
           "fl.model.gauss: expected a table of options, got a number", NULL);
}

/* An unknown module name is an error at its line listing the names there are. */
static void test_unknown_module(void **state)
{
    (void)state;
    expect("m1.lua", "local fl = require 'fifolab'\n\nlocal m = fl.model.gaus { }\n",
           FL_E_INVALID, "m1.lua:3: unknown model \"gaus\"", "available: gauss");
    expect("m2.lua", "return fl.experiment { scheduler = fl.scheduler.fifo {\n"
                     "  planner = fl.planner.lookahaed {} } }",
           FL_E_INVALID, "m2.lua:2: unknown planner \"lookahaed\"", "lookahead");
    expect("m3.lua", "return fl.noise.sqrt {}", FL_E_INVALID, "unknown noise \"sqrt\"",
           "sqrt_linear, linear, cosine, flow");
    expect("m4.lua", "return fl.sampler.ddmi", FL_E_INVALID, "unknown sampler \"ddmi\"",
           "ddim, ddpm, euler");
    expect("m5.lua", "return fl.experimnt {}", FL_E_INVALID,
           "m5.lua:1: fl.experimnt: no such field; available: experiment, include", NULL);
    /* a selector string is checked when the experiment is built */
    expect("m6.lua", "return fl.experiment { scheduler = 'fifoo' }", FL_E_INVALID,
           "scheduler: unknown module \"fifoo\"", "fifo, full, chunked");
}

/* The script must return an experiment or a sweep. */
static void test_return_value(void **state)
{
    (void)state;
    expect("r1.lua", "return 42", FL_E_INVALID,
           "r1.lua: the script must return fl.experiment{...} or fl.sweep{...}, got a number",
           NULL);
    expect("r2.lua", "local x = 1", FL_E_INVALID, "must return", "got nil");
    expect("r3.lua", "return { model = 'gauss' }", FL_E_INVALID, "must return",
           "got a plain table");
    expect("r4.lua", "return fl.model.gauss {}", FL_E_INVALID, "must return",
           "got a plain table");
    /* the experiment mark cannot be forged or removed */
    expect("r5.lua", "return setmetatable({}, getmetatable(fl.experiment {}))", FL_E_INVALID,
           "bad argument #2", NULL);
    expect("r6.lua", "local e = fl.experiment {}\nsetmetatable(e, nil)\nreturn e",
           FL_E_INVALID, "r6.lua:2: cannot change a protected metatable", NULL);
}

/* ---- the sandbox -------------------------------------------------------------------- */

/* Everything outside the allowed set is absent or refused. */
static void test_sandbox_blocks(void **state)
{
    (void)state;
    static const struct {
        const char *code, *want;
    } cases[] = {
        { "io.open('x')", "global 'io'" },
        { "os.time()", "global 'os'" },
        { "os.execute('true')", "global 'os'" },
        { "load('return 1')", "global 'load'" },
        { "loadstring('return 1')", "global 'loadstring'" },
        { "dofile('x.lua')", "global 'dofile'" },
        { "loadfile('x.lua')", "global 'loadfile'" },
        { "require('os')", "require \"os\": only \"fifolab\" can be required" },
        { "require('io')", "require \"io\": only \"fifolab\"" },
        { "debug.traceback()", "global 'debug'" },
        { "string.dump(print)", "field 'dump'" },
        { "local s = 'x'; s:dump()", "method 'dump'" },
        { "getmetatable('').__index.dump(print)", "field 'dump'" },
        { "collectgarbage()", "global 'collectgarbage'" },
        { "package.loaded.os.exit()", "global 'package'" },
        { "_G.print('x')", "global '_G'" },
        { "setmetatable({}, { __gc = function() end })", "__gc metamethods are not allowed" },
        { "math.randomseed()", "math.randomseed needs a seed" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "local fl = require 'fifolab'\n%s\nreturn fl.experiment {}\n",
                 cases[i].code);
        expect("sb.lua", text, FL_E_INVALID, "sb.lua:2: ", cases[i].want);
    }
}

/* What the sandbox keeps works, print included (it writes to stderr). */
static void test_sandbox_allows(void **state)
{
    (void)state;
    put("ok.lua",
        "local fl = require 'fifolab'\n"
        "assert(fl == _ENV.fl)\n"
        "local t = {}\n"
        "for i, v in ipairs({3, 1, 2}) do t[#t + 1] = v end\n"
        "table.sort(t)\n"
        "assert(table.concat(t, ',') == '1,2,3')\n"
        "assert(select('#', 1, 2) == 2 and tonumber('4') == 4 and tostring(5) == '5')\n"
        "assert(type(next) == 'function' and rawequal(t, t) and rawlen(t) == 3)\n"
        "rawset(t, 'k', rawget(t, 1))\n"
        "assert(string.format('%03d', 7) == '007' and ('abc'):upper() == 'ABC')\n"
        "assert(math.floor(2.5) == 2 and utf8.char(72) == 'H')\n"
        "local co = coroutine.wrap(function() coroutine.yield(1) end)\n"
        "assert(co() == 1)\n"
        "assert(pcall(error, 'x') == false)\n"
        "assert(select(2, xpcall(error, function(m) return 'h:' .. m end, 'x')) == 'h:x')\n"
        "assert(pcall(function() local ok = pcall(coroutine.yield) end) == true)\n"
        "local mt = setmetatable({}, { __index = function() return 1 end })\n"
        "assert(mt.x == 1 and getmetatable(mt).__index)\n"
        "math.randomseed(3)\n"
        "print('print goes to stderr:', 1, nil, true)\n"
        "return fl.experiment { frames = #t }\n");
    fl_script s;
    load_ok("ok.lua", &s);
    assert_int_equal((int)fl_cfg_num_value(fl_cfg_get(s.base, "frames")), 3);
    fl_script_free(&s);
}

/* Bytecode is refused before Lua sees it, from a file and from text. */
static void test_bytecode(void **state)
{
    (void)state;
    expect("bc.lua", "\x1bLua\x54\x00 binary", FL_E_INVALID,
           "bc.lua: precompiled Lua (bytecode) is refused", NULL);
    put("inc_bc.lua", "\x1bLuaT");
    expect("bc2.lua", "return fl.include 'inc_bc.lua'", FL_E_INVALID,
           "inc_bc.lua: precompiled Lua (bytecode) is refused", NULL);
    fl_script s;
    fl_error e;
    assert_int_equal(fl_script_load_text("t.lua", "\x1bLua", dir, NULL, &s, &e), FL_E_INVALID);
    assert_has(e.msg, "bytecode");
}

/* The instruction limit stops loops, whatever pcall, xpcall or coroutines try, quickly and
 * with a message that names the limit and where it stopped. */
static void test_instruction_limit(void **state)
{
    (void)state;
    fl_script_limits lim = { 20000, 0, 0 };
    /* the outer loops are bounded: if a pcall could swallow the limit, the script would end
     * normally and the test fail (rather than hang) */
    static const char *const loops[] = {
        "while true do end",
        "for i = 1, 3000 do pcall(function() while true do end end) end\n"
        "return fl.experiment {}",
        "for i = 1, 3000 do xpcall(function() while true do end end, function(m) return m end) end\n"
        "return fl.experiment {}",
        "for i = 1, 3000 do coroutine.resume(coroutine.create(function() while true do end end)) end\n"
        "return fl.experiment {}",
        "for i = 1, 3000 do pcall(coroutine.wrap(function() while true do end end)) end\n"
        "return fl.experiment {}",
        "local co = coroutine.create(function() while true do end end)\n"
        "for i = 1, 3000 do coroutine.close(co) pcall(coroutine.resume, co) end\n"
        "return fl.experiment {}",
        "local function f() return f() end return f()",
        "local t = setmetatable({}, { __index = function(t, k) return t[k + 1] end })\n"
        "for i = 1, 3000 do pcall(function() return t[1] end) end\nreturn fl.experiment {}",
    };
    clock_t t0 = clock();
    for (size_t i = 0; i < sizeof loops / sizeof loops[0]; i++)
        expect_lim("loop.lua", loops[i], &lim, FL_E_INVALID,
                   "loop.lua: script exceeded 20000 instructions (stopped at ", "loop.lua:");
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (secs > 2.0)
        fail_msg("the limited loops took %.2f s", secs);
    /* a coroutine's instructions before its first hook are counted too: 20000 coroutines
     * of ~600 instructions each, in a loop whose own instructions stay under the limit */
    fl_script_limits lim2 = { 200000, 0, 0 };
    expect_lim("coro.lua", "for i = 1, 20000 do coroutine.wrap(function() for j = 1, 300 do end end)() end\n"
                           "return fl.experiment {}",
               &lim2, FL_E_INVALID, "script exceeded 200000 instructions", "coro.lua:1");
    expect_lim("coro2.lua", "for i = 1, 20000 do coroutine.resume(coroutine.create(function() for j = 1, 300 do end end)) end\n"
                            "return fl.experiment {}",
               &lim2, FL_E_INVALID, "script exceeded 200000 instructions", NULL);
    expect_lim("fine.lua", "local n = 0 for i = 1, 500 do n = n + i end\n"
                           "return fl.experiment { frames = n }",
               &lim, FL_OK, NULL, NULL);
}

/* The memory limit stops scripts that hold too much, even inside pcall; garbage the
 * collector can free does not count. */
static void test_memory_limit(void **state)
{
    (void)state;
    fl_script_limits lim = { 0, 1 << 20, 0 };
    expect_lim("mem.lua", "local t = {} for i = 1, 1e8 do t[i] = i end", &lim, FL_E_INVALID,
               "mem.lua: script exceeded the memory limit of 1048576 bytes", NULL);
    expect_lim("mem2.lua", "local s = 'x' for i = 1, 100 do pcall(function() s = s .. s end) end\n"
                           "return fl.experiment {}",
               &lim, FL_E_INVALID, "exceeded the memory limit of 1048576 bytes", NULL);
    /* one request over the limit fails like any memory error (nothing was allocated) */
    expect_lim("mem3.lua", "local ok, e = pcall(string.rep, 'x', 1 << 26)\n"
                           "assert(not ok and e == 'not enough memory')\nreturn fl.experiment {}",
               &lim, FL_OK, NULL, NULL);
    expect_lim("mem4.lua", "local keep = {}\n"
                           "while true do local ok = coroutine.resume(coroutine.create(function()\n"
                           "  keep[#keep + 1] = string.rep('y', 4096) .. #keep end)) end",
               &lim, FL_E_INVALID, "exceeded the memory limit", NULL);
    /* lots of short-lived garbage is fine */
    expect_lim("garbage.lua", "for i = 1, 3000 do local s = string.rep('z', 2000) .. i end\n"
                              "return fl.experiment {}",
               &lim, FL_OK, NULL, NULL);
    /* a limit too small to start is reported, not crashed on */
    fl_script_limits tiny = { 0, 1000, 0 };
    expect_lim("tiny.lua", "return fl.experiment {}", &tiny, FL_E_INVALID, "memory limit",
               "1000 bytes");
}

/* Memory running out at every point of a load (setup, constructors, conversion of the
 * experiment and of a sweep, includes) gives the limit's message and leaks nothing (the
 * sanitizer build checks the leaks): C memory is never held across a Lua call that can
 * raise unless the host can free it. */
static void test_memory_limit_everywhere(void **state)
{
    (void)state;
    put("mall/base.lua", QUICK);
    put("mall/sweep.lua",
        "local base = fl.include 'base.lua'\n"
        "local e = fl.experiment { name = 'x', model = { size = {8, 8}, drift = {1, 2} } }\n"
        "return fl.sweep { base = base, grid = {\n"
        "  { 'scheduler.planner', { fl.planner.partition {}, fl.planner.lookahead {} } },\n"
        "  ['x'] = nil, { {'model.window', 'model.channels'}, { {4, 2}, {8, 1} } } },\n"
        "  seeds = {1, 2, 3} }\n");
    int ok = 0, failed = 0;
    for (size_t mem = 8 << 10; mem < (256 << 10) && !ok; mem += 64) {
        fl_script_limits lim = { 0, mem, 0 };
        fl_script s;
        fl_error e;
        fl_status st = load_lim("mall/sweep.lua", &lim, &s, &e);
        if (st == FL_OK) {
            assert_int_equal(s.naxes, 2);
            assert_int_equal(s.nseeds, 3);
            ok = 1;
        } else {
            assert_int_equal(st, FL_E_INVALID);
            assert_has(e.msg, "memory limit");
            failed++;
        }
        fl_script_free(&s);
    }
    assert_true(ok);
    assert_true(failed > 20);
}

/* ---- includes ----------------------------------------------------------------------- */

/* fl.include runs a script relative to the including one and returns its value, which the
 * includer may change; nested includes resolve from their own directory. */
static void test_include(void **state)
{
    (void)state;
    put("inc/base.lua", QUICK);
    put("inc/lib/helpers.lua", "local M = {}\n"
                               "function M.planner(n) return fl.planner.partition { partitions = n } end\n"
                               "M.base = fl.include 'more/deep.lua'\n"
                               "return M\n");
    put("inc/lib/more/deep.lua", "return fl.include 'leaf.lua'\n");
    put("inc/lib/more/leaf.lua", QUICK);
    put("inc/main.lua", "local fl = require 'fifolab'\n"
                        "local base = fl.include 'base.lua'\n"
                        "base.frames = 128\n"
                        "base.model.window = 8\n"
                        "local h = fl.include './lib/helpers.lua'\n"
                        "base.scheduler.planner = h.planner(3)\n"
                        "assert(h.base.frames == 32)\n"
                        "return base\n");
    fl_script s;
    load_ok("inc/main.lua", &s);
    assert_int_equal((int)fl_cfg_num_value(fl_cfg_get(s.base, "frames")), 128);
    assert_int_equal((int)fl_cfg_num_value(fl_cfg_lookup(s.base, "model.window")), 8);
    assert_string_equal(fl_cfg_str_value(fl_cfg_lookup(s.base, "scheduler.planner.module")),
                        "partition");
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(s.base, "name")), "q");
    /* each included script once, in the order first included, verbatim (for the run file) */
    static const char *const order[] = { "inc/base.lua", "inc/lib/helpers.lua", "inc/lib/more/deep.lua",
                                         "inc/lib/more/leaf.lua" };
    assert_int_equal(s.nincludes, 4);
    for (int i = 0; i < 4; i++) {
        size_t pl = strlen(s.include_paths[i]), ol = strlen(order[i]);
        if (pl < ol || strcmp(s.include_paths[i] + pl - ol, order[i]))
            fail_msg("include %d is %s, expected .../%s", i, s.include_paths[i], order[i]);
    }
    assert_string_equal(s.include_texts[0], QUICK);
    assert_string_equal(s.include_texts[2], "return fl.include 'leaf.lua'\n");
    fl_script_free(&s);
    /* fl_script_load_text resolves includes from the directory it is given */
    fl_error e;
    char sub[256];
    snprintf(sub, sizeof sub, "%s/inc", dir);
    assert_int_equal(fl_script_load_text("text.lua", "return fl.include 'base.lua'", sub, NULL,
                                         &s, &e),
                     FL_OK);
    assert_string_equal(s.path, "text.lua");
    assert_string_equal(s.source, "return fl.include 'base.lua'");
    assert_int_equal(s.nincludes, 1);
    fl_script_free(&s);
}

/* Includes are confined to the including script's directory: absolute paths, `..` out of
 * it and symbolic links out of it are refused; a missing file is an I/O error. */
static void test_include_confined(void **state)
{
    (void)state;
    put("outside.lua", QUICK);
    put("jail/ok.lua", QUICK);
    expect("jail/a.lua", "return fl.include '../outside.lua'", FL_E_INVALID,
           "jail/a.lua:1: fl.include \"../outside.lua\": the path leaves the directory", NULL);
    expect("jail/b.lua", "return fl.include 'x/../../outside.lua'", FL_E_INVALID,
           "the path leaves the directory", NULL);
    char abs[600];
    snprintf(abs, sizeof abs, "return fl.include '%s'", at("outside.lua"));
    expect("jail/c.lua", abs, FL_E_INVALID, "absolute paths are refused", NULL);
    expect("jail/d.lua", "return fl.include 'x/../ok.lua'", FL_OK, NULL, NULL);
    expect("jail/e.lua", "return fl.include 'missing.lua'", FL_E_IO,
           "jail/e.lua:1: fl.include: cannot read ", "missing.lua: No such file");
    expect("jail/f.lua", "return fl.include(3)", FL_E_INVALID,
           "fl.include: expected a path string, got a number", NULL);
    char link[600];
    snprintf(link, sizeof link, "%s/jail/link.lua", dir);
    assert_int_equal(symlink(at("outside.lua"), link), 0);
    expect("jail/g.lua", "return fl.include 'link.lua'", FL_E_INVALID, "leads out of the directory",
           NULL);
    /* an include cannot climb above its own directory either */
    put("jail/sub/up.lua", "return fl.include '../ok.lua'");
    expect("jail/h.lua", "return fl.include 'sub/up.lua'", FL_E_INVALID,
           "jail/sub/up.lua:1: fl.include \"../ok.lua\": the path leaves the directory", NULL);
}

/* Include cycles and runaway nesting are caught with the chain of files. */
static void test_include_cycles(void **state)
{
    (void)state;
    put("cyc/a.lua", "return fl.include 'b.lua'");
    put("cyc/b.lua", "return fl.include 'a.lua'");
    expect("cyc/a.lua", NULL, FL_E_INVALID, "include cycle: ", "cyc/a.lua -> ");
    expect("cyc/a.lua", NULL, FL_E_INVALID, "cyc/b.lua -> ", "cyc/a.lua");
    expect("cyc/self.lua", "return fl.include 'self.lua'", FL_E_INVALID, "include cycle", NULL);
    /* a chain of distinct files deeper than the limit */
    for (int i = 0; i <= FL_SCRIPT_MAX_INCLUDE_DEPTH + 1; i++) {
        char name[64], text[64];
        snprintf(name, sizeof name, "deep/d%d.lua", i);
        snprintf(text, sizeof text, "return fl.include 'd%d.lua'", i + 1);
        put(name, text);
    }
    expect("deep/d0.lua", NULL, FL_E_INVALID, "includes nested more than 16 deep", NULL);
    /* the same file twice, not nested, is no cycle */
    expect("cyc/twice.lua", "fl.include 'one.lua'\nreturn fl.include 'one.lua'", FL_E_IO,
           "cannot read", NULL);
    put("cyc/one.lua", QUICK);
    expect("cyc/twice.lua", NULL, FL_OK, NULL, NULL);
}

/* ---- determinism and positions ------------------------------------------------------ */

static long frames_with_seed(const char *rel, uint64_t seed)
{
    fl_script_limits lim = { 0, 0, seed };
    fl_script s;
    fl_error e;
    fl_status st = load_lim(rel, &lim, &s, &e);
    if (st)
        fail_msg("%s", e.msg);
    long f = (long)fl_cfg_num_value(fl_cfg_get(s.base, "frames"));
    fl_script_free(&s);
    return f;
}

/* math.random is seeded from the limits: the same seed gives the same numbers, another
 * seed others; math.randomseed(n) reseeds reproducibly. */
static void test_random(void **state)
{
    (void)state;
    put("rnd.lua", "local n = 0\n"
                   "for i = 1, 3 do n = n * 1000 + math.random(0, 999) end\n"
                   "return fl.experiment { frames = n + 1 }\n");
    long a = frames_with_seed("rnd.lua", 1), b = frames_with_seed("rnd.lua", 1);
    long c = frames_with_seed("rnd.lua", 2), d = frames_with_seed("rnd.lua", 0);
    assert_int_equal(a, b);
    assert_true(a != c && a != d && c != d);
    assert_int_equal(frames_with_seed("rnd.lua", 2), c);
    put("rnd2.lua", "math.randomseed(42)\n"
                    "return fl.experiment { frames = math.random(1, 1000000) }\n");
    assert_int_equal(frames_with_seed("rnd2.lua", 1), frames_with_seed("rnd2.lua", 9));
}

/* Lua errors name the file and line, included files included. */
static void test_error_positions(void **state)
{
    (void)state;
    expect("p1.lua", "local fl = require 'fifolab'\n\nerror('boom')\n", FL_E_INVALID,
           "p1.lua:3: boom", NULL);
    expect("p2.lua", "local x\nlocal y = x.field\n", FL_E_INVALID,
           "p2.lua:2: attempt to index a nil value", NULL);
    expect("p3.lua", "local x = \nreturn\n", FL_E_INVALID, "p3.lua:2: unexpected symbol", NULL);
    expect("p4.lua", "error('no position', 0)", FL_E_INVALID, "p4.lua: no position", NULL);
    expect("p5.lua", "error({})", FL_E_INVALID, "p5.lua: error object is a table value", NULL);
    put("pos/inc.lua", "local a = 1\nerror('inside')\n");
    expect("pos/main.lua", "return fl.include 'inc.lua'", FL_E_INVALID,
           "pos/inc.lua:2: inside", NULL);
    expect("p6.lua", "#!/usr/bin/env fifolab\n\nerror('after a shebang')", FL_E_INVALID,
           "p6.lua:3: after a shebang", NULL);
    fl_script s;
    fl_error e;
    assert_int_equal(fl_script_load(at("no/such.lua"), NULL, &s, &e), FL_E_IO);
    assert_has(e.msg, "no/such.lua: cannot read: No such file");
}

/* ---- sweeps ------------------------------------------------------------------------- */

/* The list, zipped and map forms of a grid, and seeds, as the C side sees them. */
static void test_sweep_forms(void **state)
{
    (void)state;
    put("sw/base.lua", QUICK);
    put("sw/list.lua",
        "local fl = require 'fifolab'\n"
        "return fl.sweep { name = 'abl', base = fl.include 'base.lua',\n"
        "  grid = { { 'scheduler.planner.partitions', {1, 2, 4} },\n"
        "           { 'scheduler.planner', { fl.planner.partition {}, 'lookahead' } },\n"
        "           { {'model.window', 'model.channels'}, { {4, 2}, {8, 1} } } },\n"
        "  seeds = {1, 2, 3} }\n");
    fl_script s;
    load_ok("sw/list.lua", &s);
    assert_int_equal(s.is_sweep, 1);
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(s.base, "name")), "abl");
    assert_int_equal(s.naxes, 3);
    assert_int_equal(s.axes[0].nkeys, 1);
    assert_string_equal(s.axes[0].keys[0], "scheduler.planner.partitions");
    assert_int_equal(s.axes[0].count, 3);
    assert_text(s.axes[0].values, "{1, 2, 4}\n");
    assert_text(s.axes[1].values, "{\n  {\n    module = \"partition\",\n  },\n  \"lookahead\",\n}\n");
    assert_int_equal(s.axes[2].nkeys, 2);
    assert_string_equal(s.axes[2].keys[1], "model.channels");
    assert_text(s.axes[2].values, "{\n  {4, 2},\n  {8, 1},\n}\n");
    assert_int_equal(s.nseeds, 3);
    assert_int_equal(s.seeds[2], 3);
    fl_script_free(&s);

    put("sw/map.lua", "return fl.sweep { base = fl.include 'base.lua',\n"
                      "  grid = { ['sampler.eta'] = {0, 1}, ['model.rho'] = {0.5, 0.9} } }\n");
    load_ok("sw/map.lua", &s);
    assert_int_equal(s.naxes, 2);
    assert_string_equal(s.axes[0].keys[0], "model.rho"); /* sorted */
    assert_string_equal(s.axes[1].keys[0], "sampler.eta");
    assert_int_equal(s.nseeds, 0);
    assert_string_equal(fl_cfg_str_value(fl_cfg_get(s.base, "name")), "q"); /* the base's */
    fl_script_free(&s);
}

/* Malformed sweeps are refused at the fl.sweep line, naming what is wrong. */
static void test_sweep_errors(void **state)
{
    (void)state;
    put("se/base.lua", QUICK);
#define SW(grid_and_more) "local b = fl.include 'base.lua'\nreturn fl.sweep { base = b, " grid_and_more " }"
    expect("se/1.lua", SW("grd = {}"), FL_E_INVALID,
           "se/1.lua:2: fl.sweep: unknown key \"grd\"; accepted: base, grid, name, seeds", NULL);
    expect("se/2.lua", "return fl.sweep { base = { frames = 3 } }", FL_E_INVALID,
           "fl.sweep: base: expected an experiment", "got a plain table");
    expect("se/3.lua", SW("grid = { {'model..window', {1}} }"), FL_E_INVALID,
           "grid[1]: bad key path \"model..window\"", NULL);
    expect("se/4.lua", SW("grid = { {'model.window', {4}}, {'model.window', {8}} }"),
           FL_E_INVALID, "grid[2]: key \"model.window\" is varied twice", NULL);
    expect("se/5.lua", SW("grid = { {{'model.window', 'model.channels'}, {{4, 2}, {8}}} }"),
           FL_E_INVALID, "grid[1][2]: expected a list of 2 values", "length 1");
    expect("se/6.lua", SW("grid = { {'model.window', {}} }"), FL_E_INVALID,
           "grid[1]: expected a non-empty list of values", NULL);
    expect("se/7.lua", SW("seeds = {1, 2.5}"), FL_E_INVALID,
           "seeds[2]: expected an integer in [0, 2^53], got 2.5", NULL);
    expect("se/8.lua", SW("seeds = {1, 1}"), FL_E_INVALID, "seeds[2]: seed 1 is listed twice",
           NULL);
    expect("se/9.lua", SW("seeds = {1}, grid = { {'seed', {1, 2}} }"), FL_E_INVALID,
           "grid[1]: the seed is varied by seeds", NULL);
    expect("se/10.lua", SW("grid = { {'model.size', {{8, 8}, print}} }"), FL_E_INVALID,
           "grid[1][2]: a function is not a configuration value", NULL);
    expect("se/11.lua", SW("grid = { 'model.window' }"), FL_E_INVALID,
           "grid[1]: expected {\"key.path\", {values...}}", NULL);
    expect("se/12.lua", SW("name = 3"), FL_E_INVALID, "fl.sweep: name: expected a string", NULL);
    expect("se/13.lua", SW("grid = { {'model.window', {4}}, x = 1 }"), FL_E_INVALID,
           "grid: a table mixes list items", NULL);
    /* the base is checked as an experiment when the script returns */
    expect("se/14.lua", "local b = fl.include 'base.lua'\nlocal s = fl.sweep { base = b }\n"
                        "b.frames = 0\nreturn s",
           FL_E_RANGE, "se/14.lua: frames: expected an integer", "got 0");
#undef SW
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_experiment),
        cmocka_unit_test(test_conversion),
        cmocka_unit_test(test_conversion_errors),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_unknown_module),
        cmocka_unit_test(test_return_value),
        cmocka_unit_test(test_sandbox_blocks),
        cmocka_unit_test(test_sandbox_allows),
        cmocka_unit_test(test_bytecode),
        cmocka_unit_test(test_instruction_limit),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_memory_limit_everywhere),
        cmocka_unit_test(test_include),
        cmocka_unit_test(test_include_confined),
        cmocka_unit_test(test_include_cycles),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_error_positions),
        cmocka_unit_test(test_sweep_forms),
        cmocka_unit_test(test_sweep_errors),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
