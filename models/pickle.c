/* The restricted pickle machine: the binary opcodes of protocols 2-5, an inert object
 * tree in an arena, bounded stack/memo/marks, and an error naming byte and opcode. */
#include "models/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2', OP_FLOAT = 'F',
    OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L', OP_BININT2 = 'M', OP_NONE = 'N',
    OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_STRING = 'S', OP_BINSTRING = 'T',
    OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V', OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b',
    OP_GLOBAL = 'c', OP_DICT = 'd', OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_GET = 'g', OP_BINGET = 'h',
    OP_INST = 'i', OP_LONG_BINGET = 'j', OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't', OP_EMPTY_TUPLE = ')',
    OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83, OP_EXT4 = 0x84, OP_TUPLE1 = 0x85,
    OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
    OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f,
    OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92, OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94,
    OP_FRAME = 0x95, OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98
};

static const char *op_name(int op)
{
    switch (op) {
    case OP_MARK: return "MARK";
    case OP_STOP: return "STOP";
    case OP_POP: return "POP";
    case OP_POP_MARK: return "POP_MARK";
    case OP_DUP: return "DUP";
    case OP_FLOAT: return "FLOAT";
    case OP_INT: return "INT";
    case OP_BININT: return "BININT";
    case OP_BININT1: return "BININT1";
    case OP_LONG: return "LONG";
    case OP_BININT2: return "BININT2";
    case OP_NONE: return "NONE";
    case OP_PERSID: return "PERSID";
    case OP_BINPERSID: return "BINPERSID";
    case OP_REDUCE: return "REDUCE";
    case OP_STRING: return "STRING";
    case OP_BINSTRING: return "BINSTRING";
    case OP_SHORT_BINSTRING: return "SHORT_BINSTRING";
    case OP_UNICODE: return "UNICODE";
    case OP_BINUNICODE: return "BINUNICODE";
    case OP_APPEND: return "APPEND";
    case OP_BUILD: return "BUILD";
    case OP_GLOBAL: return "GLOBAL";
    case OP_DICT: return "DICT";
    case OP_EMPTY_DICT: return "EMPTY_DICT";
    case OP_APPENDS: return "APPENDS";
    case OP_GET: return "GET";
    case OP_BINGET: return "BINGET";
    case OP_INST: return "INST";
    case OP_LONG_BINGET: return "LONG_BINGET";
    case OP_LIST: return "LIST";
    case OP_EMPTY_LIST: return "EMPTY_LIST";
    case OP_OBJ: return "OBJ";
    case OP_PUT: return "PUT";
    case OP_BINPUT: return "BINPUT";
    case OP_LONG_BINPUT: return "LONG_BINPUT";
    case OP_SETITEM: return "SETITEM";
    case OP_TUPLE: return "TUPLE";
    case OP_EMPTY_TUPLE: return "EMPTY_TUPLE";
    case OP_SETITEMS: return "SETITEMS";
    case OP_BINFLOAT: return "BINFLOAT";
    case OP_PROTO: return "PROTO";
    case OP_NEWOBJ: return "NEWOBJ";
    case OP_EXT1: return "EXT1";
    case OP_EXT2: return "EXT2";
    case OP_EXT4: return "EXT4";
    case OP_TUPLE1: return "TUPLE1";
    case OP_TUPLE2: return "TUPLE2";
    case OP_TUPLE3: return "TUPLE3";
    case OP_NEWTRUE: return "NEWTRUE";
    case OP_NEWFALSE: return "NEWFALSE";
    case OP_LONG1: return "LONG1";
    case OP_LONG4: return "LONG4";
    case OP_BINBYTES: return "BINBYTES";
    case OP_SHORT_BINBYTES: return "SHORT_BINBYTES";
    case OP_SHORT_BINUNICODE: return "SHORT_BINUNICODE";
    case OP_BINUNICODE8: return "BINUNICODE8";
    case OP_BINBYTES8: return "BINBYTES8";
    case OP_EMPTY_SET: return "EMPTY_SET";
    case OP_ADDITEMS: return "ADDITEMS";
    case OP_FROZENSET: return "FROZENSET";
    case OP_NEWOBJ_EX: return "NEWOBJ_EX";
    case OP_STACK_GLOBAL: return "STACK_GLOBAL";
    case OP_MEMOIZE: return "MEMOIZE";
    case OP_FRAME: return "FRAME";
    case OP_BYTEARRAY8: return "BYTEARRAY8";
    case OP_NEXT_BUFFER: return "NEXT_BUFFER";
    case OP_READONLY_BUFFER: return "READONLY_BUFFER";
    }
    return NULL;
}

typedef struct vm {
    const unsigned char *start, *p, *end;
    fl_pickle *pk;
    const fl_allocator *a;
    fl_pickle_limits lim;
    fl_pk **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    fl_pk **memo;
    size_t memo_cap, memo_count;
    size_t op_at;
    int op;
    fl_error *err;
} vm;

static fl_status fail(vm *m, fl_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static fl_status fail(vm *m, fl_status code, const char *fmt, ...)
{
    char why[FL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    const char *name = op_name(m->op);
    char c = m->op >= 0x20 && m->op < 0x7f ? (char)m->op : '?';
    if (name)
        return fl_error_set(m->err, code, "pickle byte %zu: opcode 0x%02x '%c' (%s): %s", m->op_at, m->op, c, name,
                            why);
    return fl_error_set(m->err, code, "pickle byte %zu: opcode 0x%02x: %s", m->op_at, m->op, why);
}

static fl_status nomem(vm *m) { return fail(m, FL_E_NOMEM, "out of memory"); }

/* Grows a heap array (stack, marks, memo) through the allocator. */
static int grow(const fl_allocator *a, void **p, size_t *cap, size_t used, size_t elem, size_t need, bool zero)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 64, bytes;
    while (ncap < need)
        ncap *= 2;
    if (fl_mul_overflows(ncap, elem, &bytes))
        return -1;
    void *q = fl_alloc(a, bytes);
    if (!q)
        return -1;
    if (used)
        memcpy(q, *p, used * elem);
    if (zero)
        memset((char *)q + used * elem, 0, (ncap - used) * elem);
    fl_free(a, *p, *cap * elem);
    *p = q;
    *cap = ncap;
    return 0;
}

static fl_pk *new_obj(vm *m, fl_pk_type t)
{
    if (m->pk->nobjects >= m->lim.max_objects)
        return NULL;
    fl_pk *o = fl_arena_alloc(&m->pk->arena, sizeof *o, 8);
    if (!o)
        return NULL;
    memset(o, 0, sizeof *o);
    o->type = t;
    m->pk->nobjects++;
    return o;
}

static fl_status new_checked(vm *m, fl_pk_type t, fl_pk **out)
{
    if (m->pk->nobjects >= m->lim.max_objects)
        return fail(m, FL_E_FORMAT, "more than %zu objects", m->lim.max_objects);
    if (!(*out = new_obj(m, t)))
        return nomem(m);
    return FL_OK;
}

/* Appends to an arena vector (doubling; the old array is left in the arena). */
static fl_status vec_push(vm *m, fl_pk_vec *v, fl_pk *x)
{
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 4;
        if (ncap > SIZE_MAX / sizeof(fl_pk *))
            return nomem(m);
        fl_pk **q = fl_arena_alloc(&m->pk->arena, ncap * sizeof *q, 8);
        if (!q)
            return nomem(m);
        if (v->n)
            memcpy(q, v->v, v->n * sizeof *q);
        v->v = q;
        v->cap = ncap;
    }
    v->v[v->n++] = x;
    return FL_OK;
}

static size_t base_of(const vm *m) { return m->nmarks ? m->marks[m->nmarks - 1] : 0; }

static fl_status push(vm *m, fl_pk *x)
{
    if (m->sp >= m->lim.max_stack)
        return fail(m, FL_E_FORMAT, "stack deeper than %zu items", m->lim.max_stack);
    if (grow(m->a, (void **)&m->stack, &m->scap, m->sp, sizeof *m->stack, m->sp + 1, false))
        return nomem(m);
    m->stack[m->sp++] = x;
    return FL_OK;
}

static fl_status pop(vm *m, fl_pk **out)
{
    if (m->sp <= base_of(m))
        return fail(m, FL_E_FORMAT, "stack underflow%s", m->nmarks ? " (nothing above the last MARK)" : "");
    *out = m->stack[--m->sp];
    return FL_OK;
}

static fl_status top(vm *m, fl_pk **out)
{
    if (m->sp <= base_of(m))
        return fail(m, FL_E_FORMAT, "empty stack%s", m->nmarks ? " (nothing above the last MARK)" : "");
    *out = m->stack[m->sp - 1];
    return FL_OK;
}

/* Items since the last MARK: stack[*from, sp); the mark is removed, sp is left for the
 * caller to set to *from once it has taken them. */
static fl_status pop_mark(vm *m, size_t *from)
{
    if (!m->nmarks)
        return fail(m, FL_E_FORMAT, "no MARK to pop to");
    *from = m->marks[--m->nmarks];
    return FL_OK;
}

static fl_status need(vm *m, size_t n)
{
    if ((size_t)(m->end - m->p) < n)
        return fail(m, FL_E_FORMAT, "needs %zu byte%s of argument but the data ends after %zu", n, n == 1 ? "" : "s",
                    (size_t)(m->end - m->p));
    return FL_OK;
}

static fl_status read_le(vm *m, size_t n, uint64_t *out)
{
    fl_status s = need(m, n);
    if (s)
        return s;
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | m->p[i];
    m->p += n;
    *out = v;
    return FL_OK;
}

static fl_status push_int(vm *m, int64_t v)
{
    fl_pk *o;
    fl_status s = new_checked(m, FL_PK_INT, &o);
    if (s)
        return s;
    o->u.i = v;
    return push(m, o);
}

/* STR or BYTES of `len` bytes at the read position. */
static fl_status push_string(vm *m, fl_pk_type t, uint64_t len)
{
    if (len > (uint64_t)(m->end - m->p))
        return fail(m, FL_E_FORMAT, "string length %llu runs past the end of the data (%zu bytes left)",
                    (unsigned long long)len, (size_t)(m->end - m->p));
    fl_pk *o;
    fl_status s = new_checked(m, t, &o);
    if (s)
        return s;
    char *c = fl_arena_alloc(&m->pk->arena, (size_t)len + 1, 1);
    if (!c)
        return nomem(m);
    memcpy(c, m->p, (size_t)len);
    c[len] = '\0';
    m->p += len;
    o->u.str.s = c;
    o->u.str.len = (size_t)len;
    return push(m, o);
}

/* LONG1/LONG4: n bytes of little-endian two's complement. */
static fl_status push_long(vm *m, uint64_t n)
{
    if (n > (uint64_t)(m->end - m->p))
        return fail(m, FL_E_FORMAT, "integer of %llu bytes runs past the end of the data (%zu bytes left)",
                    (unsigned long long)n, (size_t)(m->end - m->p));
    const unsigned char *b = m->p;
    m->p += n;
    if (n == 0)
        return push_int(m, 0);
    size_t k = n < 8 ? (size_t)n : 8;
    bool neg = b[n - 1] & 0x80;
    for (size_t i = 8; i < n; i++)
        if (b[i] != (neg ? 0xff : 0x00) || ((b[7] & 0x80) != 0) != neg) {
            fl_pk *o;
            fl_status s = new_checked(m, FL_PK_BIGINT, &o);
            return s ? s : push(m, o);
        }
    uint64_t v = neg ? ~(uint64_t)0 : 0;
    for (size_t i = k; i-- > 0;)
        v = v << 8 | b[i];
    if (n < 8 && neg)
        v |= ~(uint64_t)0 << (8 * n);
    int64_t sv;
    memcpy(&sv, &v, sizeof sv);
    return push_int(m, sv);
}

/* A newline-terminated line of GLOBAL, at most 1024 bytes. */
static fl_status read_line(vm *m, const char **out)
{
    const unsigned char *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (!nl)
        return fail(m, FL_E_FORMAT, "name not terminated by a newline before the end of the data");
    size_t len = (size_t)(nl - m->p);
    if (len > 1024)
        return fail(m, FL_E_FORMAT, "name longer than 1024 bytes");
    char *c = fl_arena_alloc(&m->pk->arena, len + 1, 1);
    if (!c)
        return nomem(m);
    memcpy(c, m->p, len);
    c[len] = '\0';
    m->p = nl + 1;
    *out = c;
    return FL_OK;
}

static bool is_dict_class(const fl_pk *c)
{
    return fl_pk_is_global(c, "collections", "OrderedDict") || fl_pk_is_global(c, "builtins", "dict") ||
           fl_pk_is_global(c, "__builtin__", "dict") || fl_pk_is_global(c, "collections", "defaultdict");
}

static bool is_set_class(const fl_pk *c)
{
    return fl_pk_is_global(c, "builtins", "set") || fl_pk_is_global(c, "__builtin__", "set") ||
           fl_pk_is_global(c, "builtins", "frozenset") || fl_pk_is_global(c, "__builtin__", "frozenset");
}

static fl_status dict_add(vm *m, fl_pk *d, fl_pk *k, fl_pk *v)
{
    fl_status s = vec_push(m, &d->u.dict.keys, k);
    return s ? s : vec_push(m, &d->u.dict.vals, v);
}

/* What calling `callable(*args)` builds: a dict or set for the few classes that are plain
 * containers (with their initial items when given as data), else an inert placeholder. */
static fl_status call(vm *m, fl_pk *callable, fl_pk *args, fl_pk **out)
{
    fl_status s;
    if (args->type != FL_PK_TUPLE)
        return fail(m, FL_E_FORMAT, "call arguments are a %s, not a tuple", fl_pk_type_name(args->type));
    fl_pk *o;
    fl_pk *first = args->u.seq.n ? args->u.seq.v[0] : NULL;
    if (is_dict_class(callable)) {
        if ((s = new_checked(m, FL_PK_DICT, &o)))
            return s;
        bool dd = fl_pk_is_global(callable, "collections", "defaultdict");
        fl_pk *init = dd ? (args->u.seq.n > 1 ? args->u.seq.v[1] : NULL) : first;
        if (init && init->type == FL_PK_DICT) {
            for (size_t i = 0; i < init->u.dict.keys.n; i++)
                if ((s = dict_add(m, o, init->u.dict.keys.v[i], init->u.dict.vals.v[i])))
                    return s;
        } else if (init && (init->type == FL_PK_LIST || init->type == FL_PK_TUPLE)) {
            for (size_t i = 0; i < init->u.seq.n; i++) {
                fl_pk *pair = init->u.seq.v[i];
                if (pair->type == FL_PK_TUPLE && pair->u.seq.n == 2 &&
                    (s = dict_add(m, o, pair->u.seq.v[0], pair->u.seq.v[1])))
                    return s;
            }
        }
    } else if (is_set_class(callable)) {
        if ((s = new_checked(m, FL_PK_SET, &o)))
            return s;
        if (first && (first->type == FL_PK_LIST || first->type == FL_PK_TUPLE || first->type == FL_PK_SET))
            for (size_t i = 0; i < first->u.seq.n; i++)
                if ((s = vec_push(m, &o->u.seq, first->u.seq.v[i])))
                    return s;
    } else {
        if ((s = new_checked(m, FL_PK_OBJECT, &o)))
            return s;
        o->u.obj.callable = callable;
        o->u.obj.args = args;
    }
    *out = o;
    return FL_OK;
}

/* A container from stack[from, sp) (the items since a MARK), replacing them. */
static fl_status collect(vm *m, fl_pk_type t, size_t from)
{
    fl_pk *o;
    fl_status s = new_checked(m, t, &o);
    if (s)
        return s;
    size_t n = m->sp - from;
    if (t == FL_PK_DICT) {
        if (n % 2)
            return fail(m, FL_E_FORMAT, "odd number of items (%zu) for key/value pairs", n);
        for (size_t i = from; i < m->sp; i += 2)
            if ((s = dict_add(m, o, m->stack[i], m->stack[i + 1])))
                return s;
    } else {
        for (size_t i = from; i < m->sp; i++)
            if ((s = vec_push(m, &o->u.seq, m->stack[i])))
                return s;
    }
    m->sp = from;
    return push(m, o);
}

static fl_status tuple_n(vm *m, size_t n)
{
    if (m->sp - base_of(m) < n)
        return fail(m, FL_E_FORMAT, "stack underflow (needs %zu items)", n);
    return collect(m, FL_PK_TUPLE, m->sp - n);
}

/* SETITEM(S) target: a dict, or a placeholder (its items). */
static fl_status dict_target(vm *m, fl_pk *t, fl_pk **d)
{
    if (t->type == FL_PK_DICT) {
        *d = t;
        return FL_OK;
    }
    if (t->type == FL_PK_OBJECT) {
        if (!t->u.obj.items) {
            fl_status s = new_checked(m, FL_PK_DICT, &t->u.obj.items);
            if (s)
                return s;
        }
        *d = t->u.obj.items;
        return FL_OK;
    }
    return fail(m, FL_E_FORMAT, "sets items on a %s", fl_pk_type_name(t->type));
}

static fl_status list_target(vm *m, fl_pk *t, fl_pk_vec **v)
{
    if (t->type == FL_PK_LIST) {
        *v = &t->u.seq;
        return FL_OK;
    }
    if (t->type == FL_PK_OBJECT) {
        if (!t->u.obj.list) {
            fl_status s = new_checked(m, FL_PK_LIST, &t->u.obj.list);
            if (s)
                return s;
        }
        *v = &t->u.obj.list->u.seq;
        return FL_OK;
    }
    return fail(m, FL_E_FORMAT, "appends to a %s", fl_pk_type_name(t->type));
}

static fl_status memo_put(vm *m, uint64_t idx)
{
    fl_pk *x = NULL;
    fl_status s = top(m, &x);
    if (s)
        return s;
    if (idx >= m->lim.max_memo || idx > (uint64_t)(m->end - m->start))
        return fail(m, FL_E_FORMAT, "memo index %llu out of range", (unsigned long long)idx);
    if (grow(m->a, (void **)&m->memo, &m->memo_cap, m->memo_cap, sizeof *m->memo, (size_t)idx + 1, true))
        return nomem(m);
    if (!m->memo[idx])
        m->memo_count++;
    m->memo[idx] = x;
    return FL_OK;
}

static fl_status memo_get(vm *m, uint64_t idx)
{
    if (idx >= m->memo_cap || !m->memo[idx])
        return fail(m, FL_E_FORMAT, "memo index %llu was never set", (unsigned long long)idx);
    return push(m, m->memo[idx]);
}

static fl_status step(vm *m, bool *stop)
{
    fl_status s = FL_OK;
    uint64_t u = 0;
    fl_pk *o = NULL, *x = NULL, *y = NULL, *z = NULL;
    size_t from = 0;
    m->op_at = (size_t)(m->p - m->start);
    m->op = *m->p++;
    switch (m->op) {
    case OP_PROTO:
        if ((s = read_le(m, 1, &u)))
            return s;
        if (u > 5)
            return fail(m, FL_E_UNSUPPORTED, "pickle protocol %llu (protocols up to 5 are read)", (unsigned long long)u);
        m->pk->protocol = (int)u;
        return FL_OK;
    case OP_FRAME:
        if ((s = read_le(m, 8, &u)))
            return s;
        if (u > (uint64_t)(m->end - m->p))
            return fail(m, FL_E_FORMAT, "frame of %llu bytes runs past the end of the data (%zu bytes left)",
                        (unsigned long long)u, (size_t)(m->end - m->p));
        return FL_OK;
    case OP_STOP:
        if ((s = pop(m, &o)))
            return s;
        m->pk->root = o;
        *stop = true;
        return FL_OK;
    case OP_NONE: return (s = new_checked(m, FL_PK_NONE, &o)) ? s : push(m, o);
    case OP_NEWTRUE:
    case OP_NEWFALSE:
        if ((s = new_checked(m, FL_PK_BOOL, &o)))
            return s;
        o->u.b = m->op == OP_NEWTRUE;
        return push(m, o);
    case OP_BININT1: return (s = read_le(m, 1, &u)) ? s : push_int(m, (int64_t)u);
    case OP_BININT2: return (s = read_le(m, 2, &u)) ? s : push_int(m, (int64_t)u);
    case OP_BININT:
        if ((s = read_le(m, 4, &u)))
            return s;
        return push_int(m, (int64_t)(int32_t)(uint32_t)u);
    case OP_LONG1: return (s = read_le(m, 1, &u)) ? s : push_long(m, u);
    case OP_LONG4:
        if ((s = read_le(m, 4, &u)))
            return s;
        if ((int32_t)(uint32_t)u < 0)
            return fail(m, FL_E_FORMAT, "negative integer length %d", (int)(int32_t)(uint32_t)u);
        return push_long(m, u);
    case OP_BINFLOAT: {
        if ((s = need(m, 8)))
            return s;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits = bits << 8 | m->p[i];
        m->p += 8;
        if ((s = new_checked(m, FL_PK_FLOAT, &o)))
            return s;
        memcpy(&o->u.f, &bits, sizeof o->u.f);
        return push(m, o);
    }
    case OP_SHORT_BINUNICODE:
    case OP_SHORT_BINSTRING: return (s = read_le(m, 1, &u)) ? s : push_string(m, FL_PK_STR, u);
    case OP_BINUNICODE: return (s = read_le(m, 4, &u)) ? s : push_string(m, FL_PK_STR, u);
    case OP_BINSTRING:
        if ((s = read_le(m, 4, &u)))
            return s;
        if ((int32_t)(uint32_t)u < 0)
            return fail(m, FL_E_FORMAT, "negative string length %d", (int)(int32_t)(uint32_t)u);
        return push_string(m, FL_PK_STR, u);
    case OP_BINUNICODE8: return (s = read_le(m, 8, &u)) ? s : push_string(m, FL_PK_STR, u);
    case OP_SHORT_BINBYTES: return (s = read_le(m, 1, &u)) ? s : push_string(m, FL_PK_BYTES, u);
    case OP_BINBYTES: return (s = read_le(m, 4, &u)) ? s : push_string(m, FL_PK_BYTES, u);
    case OP_BINBYTES8:
    case OP_BYTEARRAY8: return (s = read_le(m, 8, &u)) ? s : push_string(m, FL_PK_BYTES, u);
    case OP_EMPTY_TUPLE: return (s = new_checked(m, FL_PK_TUPLE, &o)) ? s : push(m, o);
    case OP_EMPTY_LIST: return (s = new_checked(m, FL_PK_LIST, &o)) ? s : push(m, o);
    case OP_EMPTY_DICT: return (s = new_checked(m, FL_PK_DICT, &o)) ? s : push(m, o);
    case OP_EMPTY_SET: return (s = new_checked(m, FL_PK_SET, &o)) ? s : push(m, o);
    case OP_TUPLE1: return tuple_n(m, 1);
    case OP_TUPLE2: return tuple_n(m, 2);
    case OP_TUPLE3: return tuple_n(m, 3);
    case OP_MARK:
        if (m->nmarks >= m->lim.max_marks)
            return fail(m, FL_E_FORMAT, "more than %zu nested MARKs", m->lim.max_marks);
        if (grow(m->a, (void **)&m->marks, &m->mcap, m->nmarks, sizeof *m->marks, m->nmarks + 1, false))
            return nomem(m);
        m->marks[m->nmarks++] = m->sp;
        return FL_OK;
    case OP_TUPLE: return (s = pop_mark(m, &from)) ? s : collect(m, FL_PK_TUPLE, from);
    case OP_LIST: return (s = pop_mark(m, &from)) ? s : collect(m, FL_PK_LIST, from);
    case OP_DICT: return (s = pop_mark(m, &from)) ? s : collect(m, FL_PK_DICT, from);
    case OP_FROZENSET: return (s = pop_mark(m, &from)) ? s : collect(m, FL_PK_SET, from);
    case OP_POP:
        if (m->sp > base_of(m)) {
            m->sp--;
            return FL_OK;
        }
        if ((s = pop_mark(m, &from)))
            return s;
        m->sp = from;
        return FL_OK;
    case OP_POP_MARK:
        if ((s = pop_mark(m, &from)))
            return s;
        m->sp = from;
        return FL_OK;
    case OP_DUP: return (s = top(m, &o)) ? s : push(m, o);
    case OP_APPEND: {
        fl_pk_vec *v;
        if ((s = pop(m, &x)) || (s = top(m, &o)) || (s = list_target(m, o, &v)))
            return s;
        return vec_push(m, v, x);
    }
    case OP_APPENDS:
    case OP_ADDITEMS: {
        fl_pk_vec *v;
        if ((s = pop_mark(m, &from)))
            return s;
        if (from <= base_of(m) || from == 0)
            return fail(m, FL_E_FORMAT, "no list below the MARK");
        o = m->stack[from - 1];
        if (m->op == OP_ADDITEMS) {
            if (o->type != FL_PK_SET)
                return fail(m, FL_E_FORMAT, "adds items to a %s, not a set", fl_pk_type_name(o->type));
            v = &o->u.seq;
        } else if ((s = list_target(m, o, &v))) {
            return s;
        }
        for (size_t i = from; i < m->sp; i++)
            if ((s = vec_push(m, v, m->stack[i])))
                return s;
        m->sp = from;
        return FL_OK;
    }
    case OP_SETITEM: {
        fl_pk *d;
        if ((s = pop(m, &y)) || (s = pop(m, &x)) || (s = top(m, &o)) || (s = dict_target(m, o, &d)))
            return s;
        return dict_add(m, d, x, y);
    }
    case OP_SETITEMS: {
        fl_pk *d;
        if ((s = pop_mark(m, &from)))
            return s;
        if (from <= base_of(m) || from == 0)
            return fail(m, FL_E_FORMAT, "no dict below the MARK");
        if ((s = dict_target(m, m->stack[from - 1], &d)))
            return s;
        if ((m->sp - from) % 2)
            return fail(m, FL_E_FORMAT, "odd number of items (%zu) for key/value pairs", m->sp - from);
        for (size_t i = from; i < m->sp; i += 2)
            if ((s = dict_add(m, d, m->stack[i], m->stack[i + 1])))
                return s;
        m->sp = from;
        return FL_OK;
    }
    case OP_GLOBAL: {
        const char *mod, *name;
        if ((s = read_line(m, &mod)) || (s = read_line(m, &name)) || (s = new_checked(m, FL_PK_GLOBAL, &o)))
            return s;
        o->u.global.module = mod;
        o->u.global.name = name;
        return push(m, o);
    }
    case OP_STACK_GLOBAL:
        if ((s = pop(m, &y)) || (s = pop(m, &x)))
            return s;
        if (x->type != FL_PK_STR || y->type != FL_PK_STR)
            return fail(m, FL_E_FORMAT, "module and name are a %s and a %s, not strings", fl_pk_type_name(x->type),
                        fl_pk_type_name(y->type));
        if ((s = new_checked(m, FL_PK_GLOBAL, &o)))
            return s;
        o->u.global.module = x->u.str.s;
        o->u.global.name = y->u.str.s;
        return push(m, o);
    case OP_REDUCE:
        if ((s = pop(m, &y)) || (s = pop(m, &x)) || (s = call(m, x, y, &o)))
            return s;
        return push(m, o);
    case OP_NEWOBJ:
        if ((s = pop(m, &y)) || (s = pop(m, &x)) || (s = call(m, x, y, &o)))
            return s;
        return push(m, o);
    case OP_NEWOBJ_EX:
        if ((s = pop(m, &z)) || (s = pop(m, &y)) || (s = pop(m, &x)) || (s = call(m, x, y, &o)))
            return s;
        return push(m, o);
    case OP_BUILD:
        if ((s = pop(m, &y)) || (s = top(m, &o)))
            return s;
        if (o->type == FL_PK_OBJECT)
            o->u.obj.state = y;
        return FL_OK; /* state on anything else is dropped: nothing is ever called */
    case OP_BINPERSID:
        if ((s = pop(m, &x)) || (s = new_checked(m, FL_PK_PERSID, &o)))
            return s;
        o->u.pid = x;
        return push(m, o);
    case OP_BINPUT: return (s = read_le(m, 1, &u)) ? s : memo_put(m, u);
    case OP_LONG_BINPUT: return (s = read_le(m, 4, &u)) ? s : memo_put(m, u);
    case OP_MEMOIZE: return memo_put(m, m->memo_count);
    case OP_BINGET: return (s = read_le(m, 1, &u)) ? s : memo_get(m, u);
    case OP_LONG_BINGET: return (s = read_le(m, 4, &u)) ? s : memo_get(m, u);
    default: break;
    }
    if (op_name(m->op))
        return fail(m, FL_E_UNSUPPORTED, "outside the supported subset (the binary opcodes of protocols 2-5 that "
                    "state dicts use; text opcodes of protocol 0/1, extension codes and out-of-band buffers are not "
                    "read)");
    return fail(m, FL_E_FORMAT, "not a pickle opcode");
}

fl_status fl_pickle_load(fl_pickle *pk, const void *data, size_t size, const fl_pickle_limits *limits,
                         const fl_allocator *alloc, fl_error *err)
{
    memset(pk, 0, sizeof *pk);
    vm m;
    memset(&m, 0, sizeof m);
    m.start = m.p = data;
    m.end = m.start + size;
    m.pk = pk;
    m.a = alloc ? alloc : fl_allocator_default();
    m.err = err;
    if (limits)
        m.lim = *limits;
    if (!m.lim.max_stack)
        m.lim.max_stack = (size_t)1 << 24;
    if (!m.lim.max_marks)
        m.lim.max_marks = (size_t)1 << 16;
    if (!m.lim.max_memo)
        m.lim.max_memo = (size_t)1 << 24;
    if (!m.lim.max_objects)
        m.lim.max_objects = (size_t)1 << 26;
    fl_arena_init(&pk->arena, m.a, 256 << 10);
    fl_status s = FL_OK;
    bool stop = false;
    while (!s && !stop) {
        if (m.p >= m.end) {
            s = fl_error_set(err, FL_E_FORMAT, "pickle ends after %zu bytes without a STOP opcode%s", size,
                             size ? " (truncated?)" : "");
            break;
        }
        s = step(&m, &stop);
    }
    fl_free(m.a, m.stack, m.scap * sizeof *m.stack);
    fl_free(m.a, m.marks, m.mcap * sizeof *m.marks);
    fl_free(m.a, m.memo, m.memo_cap * sizeof *m.memo);
    if (s) {
        fl_arena_free(&pk->arena);
        memset(pk, 0, sizeof *pk);
    }
    return s;
}

void fl_pickle_free(fl_pickle *pk)
{
    if (!pk)
        return;
    fl_arena_free(&pk->arena);
    memset(pk, 0, sizeof *pk);
}

const char *fl_pk_type_name(fl_pk_type t)
{
    switch (t) {
    case FL_PK_NONE: return "None";
    case FL_PK_BOOL: return "bool";
    case FL_PK_INT: return "int";
    case FL_PK_BIGINT: return "big int";
    case FL_PK_FLOAT: return "float";
    case FL_PK_STR: return "str";
    case FL_PK_BYTES: return "bytes";
    case FL_PK_TUPLE: return "tuple";
    case FL_PK_LIST: return "list";
    case FL_PK_SET: return "set";
    case FL_PK_DICT: return "dict";
    case FL_PK_GLOBAL: return "global";
    case FL_PK_OBJECT: return "object";
    case FL_PK_PERSID: return "persistent id";
    }
    return "?";
}

bool fl_pk_is_global(const fl_pk *o, const char *module, const char *name)
{
    return o && o->type == FL_PK_GLOBAL && strcmp(o->u.global.module, module) == 0 &&
           strcmp(o->u.global.name, name) == 0;
}

bool fl_pk_is_str(const fl_pk *o, const char *s)
{
    return o && o->type == FL_PK_STR && o->u.str.len == strlen(s) && memcmp(o->u.str.s, s, o->u.str.len) == 0;
}

fl_pk *fl_pk_dict_get(const fl_pk *dict, const char *key)
{
    if (!dict || dict->type != FL_PK_DICT)
        return NULL;
    for (size_t i = dict->u.dict.keys.n; i-- > 0;)
        if (fl_pk_is_str(dict->u.dict.keys.v[i], key))
            return dict->u.dict.vals.v[i];
    return NULL;
}
