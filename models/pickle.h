/* A restricted pickle reader: runs the opcodes of protocols 2-5 that state dicts need and
 * builds an inert object tree. It never imports or calls anything: a global is a
 * (module, name) pair, a REDUCE/NEWOBJ call is a placeholder holding its callable and
 * arguments, BUILD stores the state on the placeholder, a persistent id is kept as data.
 * Only dict-like globals (collections.OrderedDict, builtins.dict, collections.defaultdict)
 * and sets are turned into what they build, so SETITEMS can fill them. */
#ifndef FL_PICKLE_H
#define FL_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/status.h"

typedef enum fl_pk_type {
    FL_PK_NONE = 0,
    FL_PK_BOOL,
    FL_PK_INT,    /* fits int64 */
    FL_PK_BIGINT, /* an int wider than 64 bits: the value is not kept */
    FL_PK_FLOAT,
    FL_PK_STR,   /* unicode or (protocol 2) str bytes */
    FL_PK_BYTES,
    FL_PK_TUPLE,
    FL_PK_LIST,
    FL_PK_SET,
    FL_PK_DICT,
    FL_PK_GLOBAL, /* module.name, never resolved */
    FL_PK_OBJECT, /* placeholder for REDUCE / NEWOBJ: callable(args), then BUILD state */
    FL_PK_PERSID  /* a persistent id (BINPERSID); PyTorch's storage references */
} fl_pk_type;

typedef struct fl_pk fl_pk;

typedef struct fl_pk_vec {
    fl_pk **v;
    size_t n, cap;
} fl_pk_vec;

struct fl_pk {
    fl_pk_type type;
    int visiting; /* scratch for graph walkers (cycle detection); 0 after loading */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *s; /* NUL-terminated copy; may contain NULs (then len > strlen) */
            size_t len;
        } str;          /* STR, BYTES */
        fl_pk_vec seq;  /* TUPLE, LIST, SET */
        struct {
            fl_pk_vec keys, vals; /* in insertion order; duplicate keys are kept */
        } dict;
        struct {
            const char *module, *name;
        } global;
        struct {
            fl_pk *callable, *args; /* args: a tuple (NEWOBJ_EX: the positional ones) */
            fl_pk *state;           /* BUILD argument, or NULL */
            fl_pk *items;           /* a DICT filled by SETITEM(S) on the placeholder, or NULL */
            fl_pk *list;            /* a LIST filled by APPEND(S), or NULL */
        } obj;
        fl_pk *pid; /* PERSID */
    } u;
};

/* Bounds on what one pickle may build; zero fields take the defaults. */
typedef struct fl_pickle_limits {
    size_t max_stack;   /* items on the stack: default 1 << 24 */
    size_t max_marks;   /* nested MARKs: default 1 << 16 */
    size_t max_memo;    /* memo index: default 1 << 24 (and never more than the input's bytes) */
    size_t max_objects; /* objects built: default 1 << 26 */
} fl_pickle_limits;

/* The loaded tree and the memory it lives in (all of it freed by fl_pickle_free). */
typedef struct fl_pickle {
    fl_arena arena;
    fl_pk *root;
    size_t nobjects;
    int protocol; /* from PROTO; 0 if absent */
} fl_pickle;

/* Runs the pickle in data[0, size) up to STOP. On failure nothing is left allocated and
 * err says at which byte which opcode failed and why ("byte 1234: opcode 'R' (REDUCE):
 * stack underflow"); opcodes outside the subset (protocol 0/1 text opcodes, EXT*, out-of-band
 * buffers) are refused by name. `limits` and `alloc` may be NULL. */
fl_status fl_pickle_load(fl_pickle *pk, const void *data, size_t size, const fl_pickle_limits *limits,
                         const fl_allocator *alloc, fl_error *err);
void fl_pickle_free(fl_pickle *pk);

/* Queries on the tree. */
const char *fl_pk_type_name(fl_pk_type t);
bool fl_pk_is_global(const fl_pk *o, const char *module, const char *name);
bool fl_pk_is_str(const fl_pk *o, const char *s); /* a STR equal to s */
/* The value of the last entry of a DICT whose key is the string `key`; NULL if none. */
fl_pk *fl_pk_dict_get(const fl_pk *dict, const char *key);

#endif
