/* The Lua experiment host (core/script.h): a sandboxed Lua 5.4 state that runs a script and
 * turns the experiment or sweep it returns into configuration trees. */
#define _XOPEN_SOURCE 700 /* realpath */
#include "core/script.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "core/experiment.h"

/* The count hook runs every HOOK_STEP VM instructions (fewer when the limit is smaller). */
#define HOOK_STEP 1000
/* Lua integers beyond 2^53 do not survive the trip through a double. */
#define EXACT_MAX 9007199254740992.0
#define PATH_SHOWN 200 /* a key path in a message is clipped to this */

enum { FATAL_NONE = 0, FATAL_INSTRUCTIONS, FATAL_MEMORY };

/* Everything one load needs; reached from Lua through the allocator's user data. */
typedef struct host {
    /* limits */
    size_t mem_used, mem_limit;
    int mem_refused; /* the last growing request was refused: Lua answers with an
                        emergency collection and the same request again, and that retry
                        refused too stops the script */
    const void *refused_ptr;
    size_t refused_size;
    int64_t instr_limit, instr_used;
    int hook_step;
    uint64_t random_seed;
    int fatal;            /* FATAL_*: a limit was hit; no pcall may swallow it */
    char fatal_where[96]; /* file:line the instruction limit stopped at */
    /* the main script */
    const char *name, *dir, *real, *text;
    size_t text_len;
    /* scripts being run (real path, shown name), for include cycles; the strings are Lua
     * strings anchored on the stack of the fl.include call that runs the script */
    int depth;
    const char *stack_real[FL_SCRIPT_MAX_INCLUDE_DEPTH + 1];
    const char *stack_name[FL_SCRIPT_MAX_INCLUDE_DEPTH + 1];
    /* C memory that a Lua error may unwind past: kept here so it is always freed */
    fl_cfg *scratch;
    fl_script scratch_script;
    /* the last error raised from C, so its status code survives the trip through Lua */
    fl_status raised_code;
    char raised_msg[FL_ERRMSG_MAX];
    fl_script *out;
} host;

/* Registry keys: addresses of the elements of one array, so they are surely distinct
 * (light userdata keys via lua_rawgetp / lua_rawsetp). */
enum { K_EXPERIMENT_MT, K_SWEEP_MT, K_TEMPLATE, K_FL, K_CHUNKS, K_INCLUDES, K_COUNT };
static const char registry_keys[K_COUNT];
#define KEY(k) ((const void *)&registry_keys[k])

static const char *const kinds[] = { "model", "noise", "sampler", "scheduler", "planner", NULL };

/* The experiment's top-level keys print in this order (the rest after them, sorted), so a
 * resolved configuration reads like `fifolab generate --print-config`. */
static const char *const root_order[] = { "name", "seed", "frames", "oracle", "model", "noise",
                                           "sampler", "scheduler", "metrics", "video", NULL };

static const char *const sweep_keys[] = { "base", "grid", "name", "seeds", NULL };

static host *host_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* ---- limits ------------------------------------------------------------------------------ */

static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    host *h = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        h->mem_used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > h->mem_limit - h->mem_used) {
        /* the same request refused again after the emergency collection: the script
         * really holds too much (garbage the collector could free does not count) */
        if (h->mem_refused && ptr == h->refused_ptr && nsize == h->refused_size && !h->fatal)
            h->fatal = FATAL_MEMORY;
        h->mem_refused = 1;
        h->refused_ptr = ptr;
        h->refused_size = nsize;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    h->mem_used = h->mem_used - old + nsize;
    if (nsize > old)
        h->mem_refused = 0;
    return p;
}

static int raise_fatal(lua_State *L)
{
    lua_pushliteral(L, "script stopped by its limits");
    return lua_error(L);
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    host *h = host_of(L);
    h->instr_used += h->hook_step;
    if (h->instr_used > h->instr_limit && !h->fatal) {
        h->fatal = FATAL_INSTRUCTIONS;
        if (lua_getinfo(L, "Sl", ar))
            snprintf(h->fatal_where, sizeof h->fatal_where, "%s:%d", ar->short_src,
                     ar->currentline);
    }
    if (h->fatal)
        raise_fatal(L);
}

/* pcall, xpcall, coroutine.resume and coroutine.close catch errors; wrapped, they pass a
 * limit error on, so `while true do pcall(f) end` cannot outlive its limits. Upvalue 1 is
 * the original function; the continuation keeps them yieldable. */
static int guard_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    if (host_of(L)->fatal)
        return raise_fatal(L);
    return lua_gettop(L);
}

static int guarded(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_callk(L, n, LUA_MULTRET, 0, guard_k);
    return guard_k(L, LUA_OK, 0);
}

/* ---- errors ------------------------------------------------------------------------------ */

/* Raises msg as a Lua error, prefixed with the position at `level` (0: none), remembering
 * it with its status code. */
static int raise_msg(lua_State *L, int level, fl_status code, const char *msg)
{
    host *h = host_of(L);
    if (level > 0)
        luaL_where(L, level);
    else
        lua_pushliteral(L, "");
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    snprintf(h->raised_msg, sizeof h->raised_msg, "%s", lua_tostring(L, -1));
    h->raised_code = code;
    return lua_error(L);
}

static int raise_fmt(lua_State *L, int level, fl_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int raise_fmt(lua_State *L, int level, fl_status code, const char *fmt, ...)
{
    char msg[FL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return raise_msg(L, level, code, msg);
}

/* "a, b, c" */
static void join(char *buf, size_t size, const char *const *names)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "", names[i]);
}

/* ---- Lua values to configuration trees --------------------------------------------------- */

/* A conversion in progress: the Lua path of the value being converted, for messages, and the
 * tables entered (a table inside itself is refused). The trees it fills are always reachable
 * from the host, so a Lua memory error raised half way leaks nothing. */
typedef struct conv {
    lua_State *L;
    fl_error *err;
    char path[PATH_SHOWN + 8];
    size_t plen;
    const void *seen[FL_CFG_MAX_DEPTH + 2];
    int depth;
} conv;

static void path_add(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void path_add(conv *c, const char *fmt, ...)
{
    if (c->plen >= PATH_SHOWN) {
        if (c->plen == PATH_SHOWN) {
            memcpy(c->path + c->plen, "...", 4);
            c->plen += 3;
        }
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->path + c->plen, sizeof c->path - c->plen, fmt, ap);
    va_end(ap);
    c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : sizeof c->path - c->plen - 1;
    if (c->plen > PATH_SHOWN) {
        c->plen = PATH_SHOWN;
        memcpy(c->path + c->plen, "...", 4);
        c->plen += 3;
    }
}

static void path_key(conv *c, const char *key)
{
    path_add(c, "%s%s", c->plen ? "." : "", key);
}

static const char *path_of(const conv *c) { return c->plen ? c->path : "experiment"; }

static fl_status cv_fail(conv *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static fl_status cv_fail(conv *c, const char *fmt, ...)
{
    char msg[FL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fl_error_set(c->err, FL_E_INVALID, "%s: %s", path_of(c), msg);
}

/* The value at idx as a short literal for a message. */
static const char *show_key(lua_State *L, int idx, char *buf, size_t size)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: snprintf(buf, size, "\"%.60s\"", lua_tostring(L, idx)); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            snprintf(buf, size, "%lld", (long long)lua_tointeger(L, idx));
        else
            snprintf(buf, size, "%.17g", lua_tonumber(L, idx));
        break;
    case LUA_TBOOLEAN: snprintf(buf, size, "%s", lua_toboolean(L, idx) ? "true" : "false"); break;
    default: snprintf(buf, size, "a %s", luaL_typename(L, idx)); break;
    }
    return buf;
}

enum { SHAPE_EMPTY, SHAPE_LIST, SHAPE_MAP };

/* Whether the table at idx is empty, a list (keys exactly 1..n) or a map (string keys only);
 * anything else is an error naming the offending key. *n: its number of entries. */
static fl_status cv_shape(conv *c, int idx, int *shape, lua_Integer *n)
{
    lua_State *L = c->L;
    lua_Integer nint = 0, nstr = 0, lo = LUA_MAXINTEGER, hi = 0;
    char bad[96] = "", first_int[96] = "", first_str[96] = "";
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            if (!nstr++)
                show_key(L, -2, first_str, sizeof first_str);
        } else if (lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            if (!nint++)
                show_key(L, -2, first_int, sizeof first_int);
            lo = k < lo ? k : lo;
            hi = k > hi ? k : hi;
        } else if (!bad[0]) {
            show_key(L, -2, bad, sizeof bad);
        }
        lua_pop(L, 1);
    }
    *n = nint + nstr;
    if (bad[0])
        return cv_fail(c, "key %s is not a configuration key (keys are strings, or 1..n in a "
                          "list)", bad);
    if (nint && nstr)
        return cv_fail(c, "a table mixes list items ([%s]) and named keys (%s)", first_int,
                       first_str);
    if (nint && (lo != 1 || hi != nint))
        return cv_fail(c, "a list must have keys 1..%lld, this one has keys %lld..%lld "
                          "(a hole, or a key below 1)", (long long)nint, (long long)lo,
                       (long long)hi);
    *shape = !*n ? SHAPE_EMPTY : nint ? SHAPE_LIST : SHAPE_MAP;
    return FL_OK;
}

typedef struct key_ref {
    const char *s;
    size_t len;
    int rank;
} key_ref;

static int key_cmp(const void *a, const void *b)
{
    const key_ref *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return strcmp(x->s, y->s);
}

static fl_status cv_put(conv *c, int idx, fl_cfg *parent, const char *key);

/* Fills table `node` from the string-keyed Lua table at idx, keys sorted (Lua tables have no
 * order and the printed configuration must not depend on hashing): `module` first, or the
 * experiment's own order at its root. */
static fl_status cv_map(conv *c, int idx, fl_cfg *node, lua_Integer n, int is_root)
{
    lua_State *L = c->L;
    /* a userdata, so a memory error below frees it with the state */
    key_ref *keys = lua_newuserdatauv(L, (size_t)n * sizeof *keys, 0);
    lua_Integer k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t len;
        const char *s = lua_tolstring(L, -2, &len); /* a string key: no conversion */
        if (strlen(s) != len) {
            lua_pop(L, 3);
            return cv_fail(c, "key \"%s...\" contains a NUL byte", s);
        }
        int rank = 1;
        if (is_root) {
            rank = 100;
            for (int i = 0; root_order[i]; i++)
                if (!strcmp(s, root_order[i]))
                    rank = i;
        } else if (!strcmp(s, "module")) {
            rank = 0;
        }
        keys[k++] = (key_ref){ s, len, rank };
        lua_pop(L, 1);
    }
    qsort(keys, (size_t)n, sizeof *keys, key_cmp);
    fl_status st = FL_OK;
    for (lua_Integer i = 0; i < n && !st; i++) {
        size_t saved = c->plen;
        path_key(c, keys[i].s);
        lua_pushlstring(L, keys[i].s, keys[i].len);
        lua_rawget(L, idx);
        st = cv_put(c, lua_gettop(L), node, keys[i].s);
        lua_pop(L, 1);
        c->plen = saved;
        c->path[saved] = '\0';
    }
    lua_pop(L, 1); /* keys */
    return st;
}

/* Converts the Lua value at idx (absolute) into key `key` of table parent, or appends it to
 * list parent when key is NULL. */
static fl_status cv_put(conv *c, int idx, fl_cfg *parent, const char *key)
{
    lua_State *L = c->L;
    fl_status st;
    if (!lua_checkstack(L, 8))
        return fl_error_set(c->err, FL_E_NOMEM, "%s: out of memory", path_of(c));
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: {
        int b = lua_toboolean(L, idx);
        return key ? fl_cfg_put_bool(parent, key, b, c->err) : fl_cfg_push_bool(parent, b, c->err);
    }
    case LUA_TNUMBER: {
        double v;
        if (lua_isinteger(L, idx)) {
            lua_Integer i = lua_tointeger(L, idx);
            v = (double)i;
            if (v > EXACT_MAX || v < -EXACT_MAX)
                return cv_fail(c, "the integer %lld is too large to be kept exactly (at most "
                                  "2^53 in magnitude)", (long long)i);
        } else {
            v = lua_tonumber(L, idx);
            if (!isfinite(v))
                return cv_fail(c, "%s is not a configuration value (numbers must be finite)",
                               isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        }
        return key ? fl_cfg_put_num(parent, key, v, c->err) : fl_cfg_push_num(parent, v, c->err);
    }
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len)
            return cv_fail(c, "a string with a NUL byte is not a configuration value");
        return key ? fl_cfg_put_str(parent, key, s, c->err) : fl_cfg_push_str(parent, s, c->err);
    }
    case LUA_TTABLE: break;
    default:
        return cv_fail(c, "a %s is not a configuration value", luaL_typename(L, idx));
    }
    const void *p = lua_topointer(L, idx);
    for (int i = 0; i < c->depth; i++)
        if (c->seen[i] == p)
            return cv_fail(c, "a table that contains itself is not a configuration value");
    if (c->depth > FL_CFG_MAX_DEPTH)
        return cv_fail(c, "nested too deeply (more than %d levels)", FL_CFG_MAX_DEPTH);
    int shape;
    lua_Integer n;
    if ((st = cv_shape(c, idx, &shape, &n)))
        return st;
    fl_cfg *node;
    if (shape == SHAPE_LIST)
        st = key ? fl_cfg_put_list(parent, key, &node, c->err)
                 : fl_cfg_push_list(parent, &node, c->err);
    else
        st = key ? fl_cfg_put_table(parent, key, &node, c->err)
                 : fl_cfg_push_table(parent, &node, c->err);
    if (st)
        return st;
    c->seen[c->depth++] = p;
    if (shape == SHAPE_LIST) {
        for (lua_Integer i = 1; i <= n && !st; i++) {
            size_t saved = c->plen;
            path_add(c, "[%lld]", (long long)i);
            lua_rawgeti(L, idx, i);
            st = cv_put(c, lua_gettop(L), node, NULL);
            lua_pop(L, 1);
            c->plen = saved;
            c->path[saved] = '\0';
        }
    } else if (shape == SHAPE_MAP) {
        st = cv_map(c, idx, node, n, 0);
    }
    c->depth--;
    return st;
}

static int is_type(lua_State *L, int idx, const void *mt_key)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, mt_key);
    int eq = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return eq;
}

/* What the value at idx is, in a message: "an experiment", "a plain table", "nil", ... */
static const char *describe(lua_State *L, int idx)
{
    if (is_type(L, idx, KEY(K_EXPERIMENT_MT)))
        return "an experiment";
    if (is_type(L, idx, KEY(K_SWEEP_MT)))
        return "a sweep";
    switch (lua_type(L, idx)) {
    case LUA_TNONE:
    case LUA_TNIL: return "nil";
    case LUA_TBOOLEAN: return "a boolean";
    case LUA_TNUMBER: return "a number";
    case LUA_TSTRING: return "a string";
    case LUA_TTABLE: return "a plain table";
    case LUA_TFUNCTION: return "a function";
    default: return "a userdata or thread";
    }
}

/* The experiment table at idx into the empty root `root`. */
static fl_status cv_experiment(conv *c, int idx, fl_cfg *root)
{
    int shape;
    lua_Integer n;
    fl_status st = cv_shape(c, idx, &shape, &n);
    if (st)
        return st;
    if (shape == SHAPE_LIST)
        return cv_fail(c, "expected named keys (name = ..., model = ...), got a list");
    c->seen[c->depth++] = lua_topointer(c->L, idx);
    st = shape == SHAPE_MAP ? cv_map(c, idx, root, n, 1) : FL_OK;
    c->depth--;
    return st;
}

/* A key path as fl_cfg_set takes it: keys of letters, digits, _ and -, joined by dots. */
static int good_path(const char *p)
{
    size_t seg = 0;
    for (size_t i = 0;; i++) {
        char ch = p[i];
        if (ch == '.' || ch == '\0') {
            if (i == seg)
                return 0;
            if (!ch)
                return 1;
            seg = i + 1;
        } else if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '_' || ch == '-')) {
            return 0;
        }
    }
}

/* One axis: keyspec (a string or a list of strings) at kidx, values (a non-empty list) at
 * vidx, into axis number ai of s. c->path names the axis ("grid[2]"). */
static fl_status cv_axis(conv *c, int kidx, int vidx, fl_script *s, int ai)
{
    lua_State *L = c->L;
    fl_sweep_axis *ax = &s->axes[ai];
    fl_status st;
    int nkeys = 1;
    if (lua_type(L, kidx) == LUA_TTABLE) {
        int shape;
        lua_Integer n;
        if ((st = cv_shape(c, kidx, &shape, &n)))
            return st;
        if (shape != SHAPE_LIST || n > 64)
            return cv_fail(c, "expected a key path or a list of up to 64 key paths (a zipped "
                              "axis), got %s", shape == SHAPE_MAP ? "named keys" : "{}");
        nkeys = (int)n;
    } else if (lua_type(L, kidx) != LUA_TSTRING) {
        return cv_fail(c, "expected {\"key.path\", {values...}} or {{\"key\", \"key\", ...}, "
                          "{{values...}, ...}}, got %s as the key", describe(L, kidx));
    }
    ax->keys = calloc((size_t)nkeys, sizeof *ax->keys);
    if (!ax->keys)
        return fl_error_set(c->err, FL_E_NOMEM, "%s: out of memory", path_of(c));
    ax->nkeys = nkeys;
    for (int k = 0; k < nkeys; k++) {
        if (lua_type(L, kidx) == LUA_TTABLE)
            lua_rawgeti(L, kidx, k + 1);
        else
            lua_pushvalue(L, kidx);
        const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (!key) {
            st = cv_fail(c, "key %d: expected a key path string, got %s", k + 1,
                         describe(L, -1));
            lua_pop(L, 1);
            return st;
        }
        if (!good_path(key) || strlen(key) != lua_rawlen(L, -1)) {
            st = cv_fail(c, "bad key path \"%.200s\": expected keys of letters, digits, _ "
                            "and - joined by dots", key);
            lua_pop(L, 1);
            return st;
        }
        for (int a = 0; a <= ai; a++)
            for (int j = 0; j < (a == ai ? k : s->axes[a].nkeys); j++)
                if (!strcmp(s->axes[a].keys[j], key)) {
                    st = cv_fail(c, "key \"%.200s\" is varied twice", key);
                    lua_pop(L, 1);
                    return st;
                }
        if (!strcmp(key, "seed") && s->nseeds) {
            lua_pop(L, 1);
            return cv_fail(c, "the seed is varied by seeds = {...}; vary it there or here, "
                              "not both");
        }
        ax->keys[k] = strdup(key);
        lua_pop(L, 1);
        if (!ax->keys[k])
            return fl_error_set(c->err, FL_E_NOMEM, "%s: out of memory", path_of(c));
    }
    int shape;
    lua_Integer n;
    if (lua_type(L, vidx) != LUA_TTABLE)
        return cv_fail(c, "expected a list of values, got %s", describe(L, vidx));
    if ((st = cv_shape(c, vidx, &shape, &n)))
        return st;
    if (shape != SHAPE_LIST)
        return cv_fail(c, "expected a non-empty list of values, got %s",
                       shape == SHAPE_MAP ? "named keys" : "{}");
    if (n > INT_MAX / 2)
        return cv_fail(c, "too many values (%lld)", (long long)n);
    char name[24];
    snprintf(name, sizeof name, "%d", ai + 1);
    if ((st = fl_cfg_put_list(s->axes_tree, name, &ax->values, c->err)))
        return st;
    ax->count = (int)n;
    for (lua_Integer i = 1; i <= n && !st; i++) {
        size_t saved = c->plen;
        path_add(c, "[%lld]", (long long)i);
        lua_rawgeti(L, vidx, i);
        int item = lua_gettop(L);
        if (nkeys == 1) {
            st = cv_put(c, item, ax->values, NULL);
        } else if (lua_type(L, item) != LUA_TTABLE) {
            st = cv_fail(c, "expected a list of %d values (one per key of the zipped axis), "
                            "got %s", nkeys, describe(L, item));
        } else if (lua_rawlen(L, item) != (size_t)nkeys) {
            st = cv_fail(c, "expected a list of %d values (one per key of the zipped axis), "
                            "got a table of length %lld", nkeys, (long long)lua_rawlen(L, item));
        } else {
            /* a list of nkeys values: shape and items checked by the conversion */
            st = cv_put(c, item, ax->values, NULL);
            if (!st && fl_cfg_len(fl_cfg_item(ax->values, (size_t)(i - 1))) != (size_t)nkeys)
                st = cv_fail(c, "expected a list of %d values (one per key of the zipped "
                                "axis)", nkeys);
        }
        lua_pop(L, 1);
        c->plen = saved;
        c->path[saved] = '\0';
    }
    return st;
}

static fl_status cv_seeds(conv *c, int idx, fl_script *s)
{
    lua_State *L = c->L;
    int shape;
    lua_Integer n;
    fl_status st;
    if (lua_type(L, idx) != LUA_TTABLE)
        return cv_fail(c, "expected a list of integers, got %s", describe(L, idx));
    if ((st = cv_shape(c, idx, &shape, &n)))
        return st;
    if (shape == SHAPE_MAP)
        return cv_fail(c, "expected a list of integers, got named keys");
    if (n > 1000000)
        return cv_fail(c, "too many seeds (%lld)", (long long)n);
    if (!n)
        return FL_OK;
    s->seeds = malloc((size_t)n * sizeof *s->seeds);
    if (!s->seeds)
        return fl_error_set(c->err, FL_E_NOMEM, "%s: out of memory", path_of(c));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int isnum = lua_type(L, -1) == LUA_TNUMBER;
        double v = lua_tonumber(L, -1);
        char shown[96];
        show_key(L, -1, shown, sizeof shown);
        lua_pop(L, 1);
        if (!isnum || v != floor(v) || v < 0 || v > EXACT_MAX) {
            path_add(c, "[%lld]", (long long)i);
            return cv_fail(c, "expected an integer in [0, 2^53], got %s", shown);
        }
        for (int j = 0; j < s->nseeds; j++)
            if (s->seeds[j] == (int64_t)v) {
                path_add(c, "[%lld]", (long long)i);
                return cv_fail(c, "seed %lld is listed twice", (long long)v);
            }
        s->seeds[s->nseeds++] = (int64_t)v;
    }
    return FL_OK;
}

/* The sweep at idx into the zeroed s (its memory is s's from the first allocation, so a
 * failure or a Lua error leaves it for fl_script_free). */
static fl_status cv_sweep(conv *c, int idx, fl_script *s)
{
    lua_State *L = c->L;
    fl_status st;
    char accepted[128];
    join(accepted, sizeof accepted, sweep_keys);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int known = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int i = 0; sweep_keys[i]; i++)
                known |= !strcmp(lua_tostring(L, -2), sweep_keys[i]);
        if (!known) {
            char k[96];
            show_key(L, -2, k, sizeof k);
            lua_pop(L, 2);
            return fl_error_set(c->err, FL_E_INVALID, "fl.sweep: unknown key %s; accepted: %s",
                                k, accepted);
        }
        lua_pop(L, 1);
    }
    s->is_sweep = 1;
    int top = lua_gettop(L);
    lua_getfield(L, idx, "base"); /* top+1; raw: a sweep's metatable has no __index */
    lua_getfield(L, idx, "name"); /* top+2 */
    lua_getfield(L, idx, "grid"); /* top+3 */
    lua_getfield(L, idx, "seeds"); /* top+4 */
    if (!is_type(L, top + 1, KEY(K_EXPERIMENT_MT))) {
        st = fl_error_set(c->err, FL_E_INVALID, "fl.sweep: base: expected an experiment "
                          "(fl.experiment{...} or fl.include of a script returning one), got %s",
                          describe(L, top + 1));
        goto out;
    }
    if (!lua_isnil(L, top + 2) && lua_type(L, top + 2) != LUA_TSTRING) {
        st = fl_error_set(c->err, FL_E_INVALID, "fl.sweep: name: expected a string, got %s",
                          describe(L, top + 2));
        goto out;
    }
    s->base = fl_cfg_new(NULL);
    s->axes_tree = fl_cfg_new(NULL);
    if (!s->base || !s->axes_tree) {
        st = fl_error_set(c->err, FL_E_NOMEM, "fl.sweep: out of memory");
        goto out;
    }
    c->plen = 0;
    path_add(c, "base");
    st = cv_experiment(c, top + 1, s->base);
    c->plen = 0;
    c->path[0] = '\0';
    if (st)
        goto out;
    if (lua_type(L, top + 2) == LUA_TSTRING &&
        (st = fl_cfg_put_str(s->base, "name", lua_tostring(L, top + 2), c->err)))
        goto out;
    if (!lua_isnil(L, top + 4)) {
        path_add(c, "seeds");
        st = cv_seeds(c, top + 4, s);
        c->plen = 0;
        c->path[0] = '\0';
        if (st)
            goto out;
    }
    if (!lua_isnil(L, top + 3)) {
        int gi = top + 3, shape;
        lua_Integer n;
        path_add(c, "grid");
        if (lua_type(L, gi) != LUA_TTABLE) {
            st = cv_fail(c, "expected a list of axes or a table of key = values, got %s",
                         describe(L, gi));
            goto out;
        }
        if ((st = cv_shape(c, gi, &shape, &n)))
            goto out;
        if (n > 64) {
            st = cv_fail(c, "too many axes (%lld, at most 64)", (long long)n);
            goto out;
        }
        if (n) {
            s->axes = calloc((size_t)n, sizeof *s->axes);
            if (!s->axes) {
                st = fl_error_set(c->err, FL_E_NOMEM, "grid: out of memory");
                goto out;
            }
            s->naxes = (int)n;
        }
        if (shape == SHAPE_LIST) {
            for (lua_Integer i = 1; i <= n && !st; i++) {
                c->plen = 0;
                path_add(c, "grid[%lld]", (long long)i);
                lua_rawgeti(L, gi, i);
                int ai = lua_gettop(L);
                if (lua_type(L, ai) != LUA_TTABLE || lua_rawlen(L, ai) != 2) {
                    st = cv_fail(c, "expected {\"key.path\", {values...}} or {{\"key\", ...}, "
                                    "{{values...}, ...}}, got %s", describe(L, ai));
                } else {
                    lua_rawgeti(L, ai, 1);
                    lua_rawgeti(L, ai, 2);
                    st = cv_axis(c, ai + 1, ai + 2, s, (int)i - 1);
                    lua_pop(L, 2);
                }
                lua_pop(L, 1);
            }
        } else if (shape == SHAPE_MAP) {
            /* the map form: axes in sorted key order (Lua tables have none) */
            key_ref *keys = lua_newuserdatauv(L, (size_t)n * sizeof *keys, 0);
            lua_Integer k = 0;
            lua_pushnil(L);
            while (lua_next(L, gi)) {
                size_t len;
                const char *ks = lua_tolstring(L, -2, &len);
                keys[k++] = (key_ref){ ks, len, 0 };
                lua_pop(L, 1);
            }
            qsort(keys, (size_t)n, sizeof *keys, key_cmp);
            for (lua_Integer i = 0; i < n && !st; i++) {
                c->plen = 0;
                path_add(c, "grid[\"%s\"]", keys[i].s);
                lua_pushlstring(L, keys[i].s, keys[i].len);
                lua_pushlstring(L, keys[i].s, keys[i].len);
                lua_rawget(L, gi);
                int ki = lua_gettop(L) - 1;
                st = cv_axis(c, ki, ki + 1, s, (int)i);
                lua_pop(L, 2);
            }
            lua_pop(L, 1);
        }
    }
out:
    lua_settop(L, top);
    return st;
}

/* ---- the Lua side: constructors ---------------------------------------------------------- */

/* A shallow copy of the table at idx, pushed. */
static void copy_table(lua_State *L, int idx)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, t);
    }
}

/* fl.<kind>.<name>{opts}: {module = name, ...opts}. Upvalues: kind, name. */
static int l_module(lua_State *L)
{
    const char *kind = lua_tostring(L, lua_upvalueindex(1));
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    int t = lua_type(L, 1);
    if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TTABLE)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.%s.%s: expected a table of options, got %s",
                         kind, name, describe(L, 1));
    lua_settop(L, 1);
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "module");
        lua_rawget(L, 1);
        if (!lua_isnil(L, -1) &&
            (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), name) != 0))
            return raise_fmt(L, 1, FL_E_INVALID, "fl.%s.%s: module is set by the constructor "
                             "(got a different one in the options)", kind, name);
        lua_pop(L, 1);
        copy_table(L, 1);
    } else {
        lua_newtable(L);
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "module");
    return 1;
}

/* __index of fl.<kind>: an unknown module name. Upvalue: kind. */
static int l_unknown_module(lua_State *L)
{
    const char *kind = lua_tostring(L, lua_upvalueindex(1));
    char names[256], k[96];
    join(names, sizeof names, fl_experiment_modules(kind));
    if (lua_type(L, 2) == LUA_TSTRING)
        return raise_fmt(L, 1, FL_E_INVALID, "unknown %s \"%.60s\" (fl.%s.%.60s); available: %s",
                         kind, lua_tostring(L, 2), kind, lua_tostring(L, 2), names);
    return raise_fmt(L, 1, FL_E_INVALID, "fl.%s[%s]: no such %s; available: %s", kind,
                     show_key(L, 2, k, sizeof k), kind, names);
}

static const char *const fl_fields[] = { "experiment", "include", "model", "noise", "planner",
                                         "sampler", "scheduler", "sweep", NULL };

/* __index of fl itself. */
static int l_unknown_field(lua_State *L)
{
    char names[256], k[96];
    join(names, sizeof names, fl_fields);
    return raise_fmt(L, 1, FL_E_INVALID, "fl.%s: no such field; available: %s",
                     lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2)
                                                   : show_key(L, 2, k, sizeof k),
                     names);
}

/* Converts the experiment at idx into h->scratch, builds it once and frees it all: the
 * message of a bad one. */
static fl_status check_experiment(lua_State *L, host *h, int idx, fl_error *e)
{
    fl_cfg_free(h->scratch);
    h->scratch = fl_cfg_new(NULL);
    if (!h->scratch)
        return fl_error_set(e, FL_E_NOMEM, "experiment: out of memory");
    conv c;
    memset(&c, 0, sizeof c);
    c.L = L;
    c.err = e;
    fl_status st = cv_experiment(&c, idx, h->scratch);
    if (!st) {
        fl_experiment ex;
        st = fl_experiment_build(h->scratch, &ex, e);
        if (!st)
            fl_experiment_free(&ex);
    }
    fl_cfg_free(h->scratch);
    h->scratch = NULL;
    return st;
}

static int l_experiment(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.experiment: expected a table "
                         "{name = ..., model = ..., ...}, got %s", describe(L, 1));
    lua_settop(L, 1);
    copy_table(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_EXPERIMENT_MT));
    lua_setmetatable(L, 2);
    fl_error e;
    fl_status st = check_experiment(L, host_of(L), 2, &e);
    if (st)
        return raise_msg(L, 1, st, e.msg);
    return 1;
}

static int l_sweep(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TTABLE)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.sweep: expected a table "
                         "{base = ..., grid = ..., seeds = ...}, got %s", describe(L, 1));
    lua_settop(L, 1);
    copy_table(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_SWEEP_MT));
    lua_setmetatable(L, 2);
    host *h = host_of(L);
    fl_script_free(&h->scratch_script);
    conv c;
    fl_error e;
    memset(&c, 0, sizeof c);
    c.L = L;
    c.err = &e;
    fl_status st = cv_sweep(&c, 2, &h->scratch_script);
    fl_script_free(&h->scratch_script);
    if (st)
        return raise_msg(L, 1, st, e.msg);
    return 1;
}

/* ---- the Lua side: files and includes ---------------------------------------------------- */

/* Pushes the text of the file at `path` (at most max bytes) as a Lua string; 0, or an errno
 * value with nothing pushed. It is read into Lua memory straight away, so a Lua memory
 * error cannot leak a C buffer or a descriptor. */
static int push_file(lua_State *L, const char *path, size_t max)
{
    struct stat sb;
    if (stat(path, &sb))
        return errno;
    if (S_ISDIR(sb.st_mode))
        return EISDIR;
    if (!S_ISREG(sb.st_mode))
        return EINVAL;
    if ((uintmax_t)sb.st_size > max)
        return EFBIG;
    size_t size = (size_t)sb.st_size;
    char *buf = lua_newuserdatauv(L, size ? size : 1, 0);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        lua_pop(L, 1);
        return e;
    }
    size_t n = fread(buf, 1, size, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        lua_pop(L, 1);
        return EIO;
    }
    lua_pushlstring(L, buf, n);
    lua_remove(L, -2);
    return 0;
}

/* A fresh sandbox: the template's functions, and copies of its library tables (a script
 * that rewrites math.floor does so for itself only). Pushed. */
static void push_env(lua_State *L)
{
    lua_newtable(L);
    int env = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_TEMPLATE));
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_FL));
    int tpl = env + 1, fl = env + 2;
    lua_pushnil(L);
    while (lua_next(L, tpl)) { /* key, value */
        if (lua_type(L, -1) == LUA_TTABLE && !lua_rawequal(L, -1, fl)) {
            copy_table(L, lua_gettop(L));
            lua_remove(L, -2);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, env);
    }
    lua_pop(L, 2);
}

/* Loads `text` (a script shown as `shown`) as a text chunk with a fresh sandbox as its
 * environment and pushes the function. A first line starting with '#' (a shebang) is
 * skipped as lua(1) does, keeping its newline so line numbers stay right. */
static void load_chunk(lua_State *L, const char *shown, const char *text, size_t len)
{
    if (len && text[0] == LUA_SIGNATURE[0])
        raise_fmt(L, 0, FL_E_INVALID, "%s: precompiled Lua (bytecode) is refused; scripts are "
                  "loaded as text only", shown);
    if (len && text[0] == '#') {
        const char *nl = memchr(text, '\n', len);
        size_t skip = nl ? (size_t)(nl - text) : len;
        text += skip;
        len -= skip;
    }
    lua_pushfstring(L, "@%s", shown);
    int st = luaL_loadbufferx(L, text, len, lua_tostring(L, -1), "t");
    lua_remove(L, -2);
    if (st != LUA_OK) {
        if (st == LUA_ERRMEM)
            lua_error(L);
        raise_msg(L, 0, FL_E_INVALID, lua_tostring(L, -1));
    }
    push_env(L);
    lua_setupvalue(L, -2, 1);
}

/* Pushes the shown name and the directory of the innermost script on the call stack (the
 * one calling fl.include), looked up in the chunk table; the main script if none is. */
static void caller_chunk(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_CHUNKS));
    int chunks = lua_gettop(L);
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "S", &ar) || ar.source[0] != '@')
            continue;
        if (lua_getfield(L, chunks, ar.source + 1) == LUA_TSTRING) {
            lua_pushstring(L, ar.source + 1);
            lua_insert(L, -2);
            lua_remove(L, chunks);
            return;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    host *h = host_of(L);
    lua_pushstring(L, h->name);
    lua_pushstring(L, h->dir);
}

/* fl.include "path": runs another script (relative to the calling script's directory and
 * confined to it) in a fresh sandbox and returns what it returns. */
static int l_include(lua_State *L)
{
    host *h = host_of(L);
    if (lua_type(L, 1) != LUA_TSTRING)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.include: expected a path string, got %s",
                         describe(L, 1));
    size_t rlen;
    const char *rel = lua_tolstring(L, 1, &rlen);
    if (!rlen || strlen(rel) != rlen || rlen > 1024)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.include: bad path \"%.200s\"", rel);
    if (rel[0] == '/')
        return raise_fmt(L, 1, FL_E_INVALID, "fl.include \"%.200s\": absolute paths are "
                         "refused; give a path relative to the including script's directory",
                         rel);
    lua_settop(L, 1);
    caller_chunk(L); /* 2: the caller's shown name, 3: its directory */
    const char *cname = lua_tostring(L, 2), *cdir = lua_tostring(L, 3);

    /* normalized: "" and "." dropped, ".." may not climb out of the directory */
    char norm[1100];
    size_t nl = 0;
    for (const char *p = rel; *p;) {
        const char *e = strchr(p, '/');
        size_t sl = e ? (size_t)(e - p) : strlen(p);
        if (sl == 2 && p[0] == '.' && p[1] == '.') {
            if (!nl)
                return raise_fmt(L, 1, FL_E_INVALID, "fl.include \"%.200s\": the path leaves "
                                 "the directory of %s; includes are confined to it", rel,
                                 cname);
            while (nl && norm[nl - 1] != '/')
                nl--;
            if (nl)
                nl--; /* the '/' before the dropped component */
        } else if (sl && !(sl == 1 && p[0] == '.')) {
            if (nl)
                norm[nl++] = '/';
            memcpy(norm + nl, p, sl);
            nl += sl;
        }
        p += sl + (e ? 1 : 0);
    }
    norm[nl] = '\0';
    if (!nl)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.include \"%.200s\": not a file path", rel);
    const char *slash = strrchr(cname, '/'), *nslash = strrchr(norm, '/');
    lua_pushlstring(L, cname, slash ? (size_t)(slash - cname + 1) : 0);
    lua_pushstring(L, norm);
    lua_concat(L, 2);                         /* 4: shown name */
    lua_pushfstring(L, "%s/%s", cdir, norm);  /* 5: file */
    lua_pushstring(L, cdir);                  /* 6: its directory */
    if (nslash) {
        lua_pushliteral(L, "/");
        lua_pushlstring(L, norm, (size_t)(nslash - norm));
        lua_concat(L, 3);
    }
    const char *shown = lua_tostring(L, 4), *file = lua_tostring(L, 5);

    /* symbolic links may not lead out of the directory either */
    char *rdir = realpath(cdir, NULL), *rfile = rdir ? realpath(file, NULL) : NULL;
    int e = errno;
    size_t rl = rdir ? strlen(rdir) : 0;
    int inside = rdir && rfile && (!strcmp(rdir, "/") ||
                                   (!strncmp(rfile, rdir, rl) && rfile[rl] == '/'));
    char real[4096];
    snprintf(real, sizeof real, "%s", rfile ? rfile : "");
    free(rdir);
    free(rfile);
    if (!real[0])
        return raise_fmt(L, 1, FL_E_IO, "fl.include: cannot read %s: %s", shown, strerror(e));
    if (!inside)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.include \"%.200s\": %s leads out of the "
                         "directory of %s (a symbolic link?); includes are confined to it",
                         rel, shown, cname);
    for (int i = 0; i < h->depth; i++)
        if (h->stack_real[i] && !strcmp(h->stack_real[i], real)) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            luaL_addstring(&b, "fl.include: include cycle: ");
            for (int j = i; j < h->depth; j++) {
                luaL_addstring(&b, h->stack_name[j]);
                luaL_addstring(&b, " -> ");
            }
            luaL_addstring(&b, shown);
            luaL_pushresult(&b);
            return raise_msg(L, 1, FL_E_INVALID, lua_tostring(L, -1));
        }
    if (h->depth >= FL_SCRIPT_MAX_INCLUDE_DEPTH)
        return raise_fmt(L, 1, FL_E_INVALID, "fl.include %s: includes nested more than %d "
                         "deep", shown, FL_SCRIPT_MAX_INCLUDE_DEPTH);
    lua_pushstring(L, real); /* 7: the real path, kept here while the script runs */
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_CHUNKS));
    lua_pushvalue(L, 4);
    lua_pushvalue(L, 6);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    int fe = push_file(L, file, h->mem_limit); /* 8: the text */
    if (fe)
        return raise_fmt(L, 1, FL_E_IO, "fl.include: cannot read %s: %s", shown, strerror(fe));
    size_t tl;
    const char *t = lua_tolstring(L, 8, &tl);
    /* kept (once per file) for the run file, beside the main script */
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_INCLUDES));
    if (lua_getfield(L, -1, shown) == LUA_TNIL) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -2);
        lua_pushvalue(L, 4);
        lua_rawseti(L, -3, n + 1);
        lua_pushvalue(L, 8);
        lua_rawseti(L, -3, n + 2);
        lua_pushboolean(L, 1);
        lua_setfield(L, -3, shown);
    }
    lua_pop(L, 2);
    load_chunk(L, shown, t, tl); /* 9: the chunk */
    h->stack_real[h->depth] = lua_tostring(L, 7);
    h->stack_name[h->depth] = shown;
    h->depth++;
    int st = lua_pcall(L, 0, LUA_MULTRET, 0);
    h->depth--;
    if (st != LUA_OK)
        return lua_error(L); /* the same error object, passed on */
    return lua_gettop(L) - 8;
}

/* ---- the sandbox ------------------------------------------------------------------------- */

static int l_print(lua_State *L)
{
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_tolstring(L, i, &len);
        if (i > 1)
            fputc('\t', stderr);
        fwrite(s, 1, len, stderr);
        lua_pop(L, 1);
    }
    fputc('\n', stderr);
    return 0;
}

static int l_require(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING && !strcmp(lua_tostring(L, 1), "fifolab")) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_FL));
        return 1;
    }
    char k[96];
    return raise_fmt(L, 1, FL_E_INVALID, "require %s: only \"fifolab\" can be required in an "
                     "experiment script (fl.include runs another script)",
                     show_key(L, 1, k, sizeof k));
}

/* Calls upvalue 1 (a library function) with the arguments on the stack and returns its
 * results; its errors are raised again with the caller's position (a library function
 * called from C would report none). */
static int call_original(lua_State *L)
{
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    int st = lua_pcall(L, n, LUA_MULTRET, 0);
    if (st == LUA_ERRRUN && lua_type(L, -1) == LUA_TSTRING)
        return raise_msg(L, 1, FL_E_INVALID, lua_tostring(L, -1));
    if (st != LUA_OK)
        return lua_error(L);
    return lua_gettop(L);
}

/* coroutine.create and coroutine.wrap: a new thread starts a fresh hook countdown, so up
 * to one hook step of its instructions would go uncounted; each new thread is charged a
 * whole step, which keeps the count an upper bound. Upvalue: the original. */
static int l_charged(lua_State *L)
{
    host *h = host_of(L);
    h->instr_used += h->hook_step;
    if (h->instr_used > h->instr_limit && !h->fatal) {
        lua_Debug ar;
        h->fatal = FATAL_INSTRUCTIONS;
        if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
            snprintf(h->fatal_where, sizeof h->fatal_where, "%s:%d", ar.short_src,
                     ar.currentline);
    }
    if (h->fatal)
        return raise_fatal(L);
    return call_original(L);
}

/* setmetatable without __gc: finalizers run with hooks off, out of reach of the
 * instruction limit (a `while true do end` there would never stop). Upvalue: the original. */
static int l_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, 2) != LUA_TNIL)
            return raise_fmt(L, 1, FL_E_INVALID, "setmetatable: __gc metamethods are not "
                             "allowed in experiment scripts");
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    return call_original(L);
}

/* math.randomseed(x) as usual; without an argument (a seed from the clock) it is refused,
 * so that a script gives the same configuration every time. Upvalue: the original. */
static int l_randomseed(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        return raise_fmt(L, 1, FL_E_INVALID, "math.randomseed needs a seed: seeding from the "
                         "clock is disabled so that scripts are reproducible");
    return call_original(L);
}

static void push_fl(lua_State *L)
{
    lua_newtable(L);
    int fl = lua_gettop(L);
    lua_pushcfunction(L, l_experiment);
    lua_setfield(L, fl, "experiment");
    lua_pushcfunction(L, l_sweep);
    lua_setfield(L, fl, "sweep");
    lua_pushcfunction(L, l_include);
    lua_setfield(L, fl, "include");
    for (int k = 0; kinds[k]; k++) {
        const char *const *names = fl_experiment_modules(kinds[k]);
        lua_newtable(L);
        for (int i = 0; names && names[i]; i++) {
            lua_pushstring(L, kinds[k]);
            lua_pushstring(L, names[i]);
            lua_pushcclosure(L, l_module, 2);
            lua_setfield(L, -2, names[i]);
        }
        lua_newtable(L);
        lua_pushstring(L, kinds[k]);
        lua_pushcclosure(L, l_unknown_module, 1);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, -2);
        lua_setfield(L, fl, kinds[k]);
    }
    lua_newtable(L);
    lua_pushcfunction(L, l_unknown_field);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, fl);
}

static const char *const base_names[] = { "assert", "error", "ipairs", "next", "pairs",
                                          "select", "tonumber", "tostring", "type", "rawequal",
                                          "rawget", "rawlen", "rawset", "getmetatable", NULL };

/* Opens the safe libraries only (no io, os, debug, package) and builds the template every
 * script's environment is copied from. */
static void setup(lua_State *L, host *h)
{
    static const luaL_Reg libs[] = { { LUA_GNAME, luaopen_base },
                                     { LUA_STRLIBNAME, luaopen_string },
                                     { LUA_TABLIBNAME, luaopen_table },
                                     { LUA_MATHLIBNAME, luaopen_math },
                                     { LUA_UTF8LIBNAME, luaopen_utf8 },
                                     { LUA_COLIBNAME, luaopen_coroutine },
                                     { NULL, NULL } };
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    lua_newtable(L);
    int tpl = g + 1;
    for (int i = 0; base_names[i]; i++) {
        lua_getfield(L, g, base_names[i]);
        lua_setfield(L, tpl, base_names[i]);
    }
    static const char *const guarded_base[] = { "pcall", "xpcall", NULL };
    for (int i = 0; guarded_base[i]; i++) {
        lua_getfield(L, g, guarded_base[i]);
        lua_pushcclosure(L, guarded, 1);
        lua_setfield(L, tpl, guarded_base[i]);
    }
    lua_getfield(L, g, "setmetatable");
    lua_pushcclosure(L, l_setmetatable, 1);
    lua_setfield(L, tpl, "setmetatable");
    lua_pushcfunction(L, l_print);
    lua_setfield(L, tpl, "print");
    lua_pushcfunction(L, l_require);
    lua_setfield(L, tpl, "require");

    /* string.dump goes from the library table itself: strings reach it through their
     * metatable ("":dump) whatever the environment holds */
    lua_getfield(L, g, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_setfield(L, tpl, LUA_STRLIBNAME);
    lua_getfield(L, g, LUA_TABLIBNAME);
    lua_setfield(L, tpl, LUA_TABLIBNAME);
    lua_getfield(L, g, LUA_UTF8LIBNAME);
    lua_setfield(L, tpl, LUA_UTF8LIBNAME);

    lua_getfield(L, g, LUA_MATHLIBNAME);
    lua_getfield(L, -1, "randomseed");
    lua_pushvalue(L, -1);
    lua_pushinteger(L, (lua_Integer)h->random_seed);
    lua_call(L, 1, 0);
    lua_pushcclosure(L, l_randomseed, 1);
    lua_setfield(L, -2, "randomseed");
    lua_setfield(L, tpl, LUA_MATHLIBNAME);

    lua_getfield(L, g, LUA_COLIBNAME);
    static const char *const guarded_co[] = { "resume", "close", NULL };
    for (int i = 0; guarded_co[i]; i++) {
        lua_getfield(L, -1, guarded_co[i]);
        lua_pushcclosure(L, guarded, 1);
        lua_setfield(L, -2, guarded_co[i]);
    }
    static const char *const charged_co[] = { "create", "wrap", NULL };
    for (int i = 0; charged_co[i]; i++) {
        lua_getfield(L, -1, charged_co[i]);
        lua_pushcclosure(L, l_charged, 1);
        lua_setfield(L, -2, charged_co[i]);
    }
    lua_setfield(L, tpl, LUA_COLIBNAME);

    /* the experiment and sweep marks: protected, so a script cannot forge or strip them */
    lua_newtable(L);
    lua_pushliteral(L, "fifolab.experiment");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, KEY(K_EXPERIMENT_MT));
    lua_newtable(L);
    lua_pushliteral(L, "fifolab.sweep");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, KEY(K_SWEEP_MT));
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, KEY(K_CHUNKS));
    lua_newtable(L); /* included scripts: {shown, text} at 2i-1, 2i; shown -> true */
    lua_rawsetp(L, LUA_REGISTRYINDEX, KEY(K_INCLUDES));

    push_fl(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, KEY(K_FL));
    lua_setfield(L, tpl, "fl");
    lua_rawsetp(L, LUA_REGISTRYINDEX, KEY(K_TEMPLATE));
    lua_pop(L, 1);
}

/* ---- loading ----------------------------------------------------------------------------- */

/* Builds a copy of cfg once, to check it; the copy is freed. */
static fl_status build_copy(const fl_cfg *cfg, fl_error *e)
{
    fl_cfg *copy = fl_cfg_copy(cfg, NULL);
    if (!copy)
        return fl_error_set(e, FL_E_NOMEM, "experiment: out of memory");
    fl_experiment ex;
    fl_status st = fl_experiment_build(copy, &ex, e);
    if (!st)
        fl_experiment_free(&ex);
    fl_cfg_free(copy);
    return st;
}

/* The included scripts into out (fl_script_free frees them, also after an error here). */
static int copy_includes(lua_State *L, fl_script *out)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_INCLUDES));
    int n = (int)(lua_rawlen(L, -1) / 2);
    if (n) {
        out->include_paths = calloc((size_t)n, sizeof *out->include_paths);
        out->include_texts = calloc((size_t)n, sizeof *out->include_texts);
        if (!out->include_paths || !out->include_texts)
            return raise_fmt(L, 0, FL_E_NOMEM, "included scripts: out of memory");
        for (int i = 0; i < n; i++) {
            out->nincludes = i + 1;
            for (int k = 0; k < 2; k++) {
                size_t len;
                lua_rawgeti(L, -1, 2 * i + 1 + k);
                const char *v = lua_tolstring(L, -1, &len);
                char *c = malloc(len + 1);
                if (!c)
                    return raise_fmt(L, 0, FL_E_NOMEM, "included scripts: out of memory");
                memcpy(c, v, len + 1);
                (k ? out->include_texts : out->include_paths)[i] = c;
                lua_pop(L, 1);
            }
        }
    }
    lua_pop(L, 1);
    return 0;
}

/* The protected main: sandbox, run, convert. Argument: the host. */
static int host_main(lua_State *L)
{
    host *h = lua_touserdata(L, 1);
    lua_settop(L, 0);
    setup(L, h);
    lua_rawgetp(L, LUA_REGISTRYINDEX, KEY(K_CHUNKS));
    lua_pushstring(L, h->dir);
    lua_setfield(L, -2, h->name);
    lua_pop(L, 1);
    h->stack_real[0] = h->real;
    h->stack_name[0] = h->name;
    h->depth = 1;
    load_chunk(L, h->name, h->text, h->text_len);
    lua_sethook(L, count_hook, LUA_MASKCOUNT, h->hook_step);
    lua_call(L, 0, 1);
    lua_sethook(L, NULL, 0, 0);
    if (h->fatal)
        return raise_fatal(L);
    int r = lua_gettop(L);
    fl_error e;
    conv c;
    memset(&c, 0, sizeof c);
    c.L = L;
    c.err = &e;
    fl_status st;
    if (is_type(L, r, KEY(K_EXPERIMENT_MT))) {
        h->out->base = fl_cfg_new(NULL);
        st = h->out->base ? cv_experiment(&c, r, h->out->base)
                          : fl_error_set(&e, FL_E_NOMEM, "experiment: out of memory");
    } else if (is_type(L, r, KEY(K_SWEEP_MT))) {
        st = cv_sweep(&c, r, h->out);
    } else {
        return raise_fmt(L, 0, FL_E_INVALID, "%s: the script must return fl.experiment{...} "
                         "or fl.sweep{...}, got %s", h->name, describe(L, r));
    }
    if (!st)
        st = build_copy(h->out->base, &e);
    if (st)
        return raise_fmt(L, 0, st, "%s: %s", h->name, e.msg);
    return copy_includes(L, h->out);
}

/* Whether a Lua error message already starts with a position ("file:12: ..."). */
static int has_position(const char *m)
{
    const char *colon = strchr(m, ':');
    if (!colon || colon == m || memchr(m, '\n', (size_t)(colon - m)))
        return 0;
    const char *d = colon + 1;
    while (*d >= '0' && *d <= '9')
        d++;
    return d > colon + 1 && *d == ':';
}

static fl_status load(const char *name, const char *text, size_t len, const char *dir,
                      const char *real, const fl_script_limits *limits, fl_script *out,
                      fl_error *err)
{
    host *h = calloc(1, sizeof *h);
    if (!h)
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", name);
    h->mem_limit = limits && limits->memory ? limits->memory : FL_SCRIPT_DEFAULT_MEMORY;
    h->instr_limit = limits && limits->instructions > 0 ? limits->instructions
                                                        : FL_SCRIPT_DEFAULT_INSTRUCTIONS;
    h->hook_step = h->instr_limit < HOOK_STEP ? (int)h->instr_limit : HOOK_STEP;
    h->random_seed = limits ? limits->random_seed : 0;
    h->name = name;
    h->dir = dir;
    h->real = real;
    h->text = text;
    h->text_len = len;
    h->out = out;
    fl_status code = FL_OK;
    lua_State *L = lua_newstate(host_alloc, h);
    if (!L) {
        code = fl_error_set(err, h->mem_refused ? FL_E_INVALID : FL_E_NOMEM,
                            "%s: cannot start Lua within the memory limit of %zu bytes", name,
                            h->mem_limit);
        free(h);
        return code;
    }
    lua_pushcfunction(L, host_main);
    lua_pushlightuserdata(L, h);
    int st = lua_pcall(L, 1, 0, 0);
    if (st != LUA_OK) {
        if (h->fatal == FATAL_INSTRUCTIONS) {
            code = fl_error_set(err, FL_E_INVALID, "%s: script exceeded %lld instructions "
                                "(stopped at %s)", name, (long long)h->instr_limit,
                                h->fatal_where[0] ? h->fatal_where : "?");
        } else if (h->fatal == FATAL_MEMORY || (st == LUA_ERRMEM && h->mem_refused)) {
            code = fl_error_set(err, FL_E_INVALID, "%s: script exceeded the memory limit of "
                                "%zu bytes", name, h->mem_limit);
        } else if (st == LUA_ERRMEM) {
            code = fl_error_set(err, FL_E_NOMEM, "%s: out of memory", name);
        } else {
            /* no conversion that could allocate: the state may be short of memory */
            char m[FL_ERRMSG_MAX];
            int t = lua_type(L, -1);
            if (t == LUA_TSTRING)
                snprintf(m, sizeof m, "%s", lua_tostring(L, -1));
            else if (t == LUA_TNUMBER && lua_isinteger(L, -1))
                snprintf(m, sizeof m, "%lld", (long long)lua_tointeger(L, -1));
            else if (t == LUA_TNUMBER)
                snprintf(m, sizeof m, "%.14g", lua_tonumber(L, -1));
            else
                snprintf(m, sizeof m, "error object is a %s value", lua_typename(L, t));
            code = t == LUA_TSTRING && !strcmp(m, h->raised_msg) ? h->raised_code
                                                                 : FL_E_INVALID;
            size_t nl = strlen(name);
            if (has_position(m) || (!strncmp(m, name, nl) && m[nl] == ':'))
                fl_error_set(err, code, "%s", m);
            else
                fl_error_set(err, code, "%s: %s", name, m);
        }
    }
    lua_close(L);
    fl_cfg_free(h->scratch);
    fl_script_free(&h->scratch_script);
    free(h);
    return code;
}

/* Everything before the last '/' ("." when there is none), malloc'd. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Reads a whole file into malloc'd memory (NUL-terminated); NULL with errno set. */
static char *read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int e = ENOMEM;
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (ferror(f) || n > max) {
            e = ferror(f) ? EIO : EFBIG;
            free(buf);
            buf = NULL;
            break;
        }
        if (feof(f))
            break;
        if (n == cap - 1) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) {
        errno = e;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

fl_status fl_script_load(const char *path, const fl_script_limits *limits, fl_script *out,
                         fl_error *err)
{
    FL_ASSERT(path && out);
    memset(out, 0, sizeof *out);
    size_t max = limits && limits->memory ? limits->memory : FL_SCRIPT_DEFAULT_MEMORY, len = 0;
    char *text = read_file(path, max, &len);
    if (!text)
        return fl_error_set(err, errno == ENOMEM ? FL_E_NOMEM : FL_E_IO, "%s: cannot read: %s",
                            path, strerror(errno));
    out->source = text;
    out->path = strdup(path);
    errno = 0;
    char *dir = dir_of(path), *real = realpath(path, NULL);
    /* real may be NULL for a path realpath cannot resolve (then the include-cycle check goes
     * by the names given), but not for want of memory */
    fl_status st = out->path && dir && (real || errno != ENOMEM)
                       ? load(path, text, len, dir, real, limits, out, err)
                       : fl_error_set(err, FL_E_NOMEM, "%s: out of memory", path);
    free(dir);
    free(real);
    if (st)
        fl_script_free(out);
    return st;
}

fl_status fl_script_load_text(const char *name, const char *text, const char *dir,
                              const fl_script_limits *limits, fl_script *out, fl_error *err)
{
    FL_ASSERT(name && text && out);
    memset(out, 0, sizeof *out);
    out->path = strdup(name);
    out->source = strdup(text);
    fl_status st = out->path && out->source
                       ? load(name, text, strlen(text), dir ? dir : ".", NULL, limits, out, err)
                       : fl_error_set(err, FL_E_NOMEM, "%s: out of memory", name);
    if (st)
        fl_script_free(out);
    return st;
}

void fl_script_free(fl_script *s)
{
    if (!s)
        return;
    free(s->path);
    free(s->source);
    for (int i = 0; i < s->nincludes; i++) {
        free(s->include_paths[i]);
        free(s->include_texts[i]);
    }
    free(s->include_paths);
    free(s->include_texts);
    fl_cfg_free(s->base);
    for (int i = 0; i < s->naxes; i++) {
        for (int k = 0; k < s->axes[i].nkeys; k++)
            free(s->axes[i].keys[k]);
        free(s->axes[i].keys);
    }
    free(s->axes);
    fl_cfg_free(s->axes_tree);
    free(s->seeds);
    memset(s, 0, sizeof *s);
}
