/* The configuration tree: typed option nodes built from Lua tables and `--set` overrides,
 * read by modules through recording readers, checked for unknown keys, printed as Lua. */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "alloc.h"
#include "status.h"

/* A node of the tree. The tree owns every node, string and key in it; a node pointer, and
 * the strings read from it, stay valid while the tree lives and the node is not replaced
 * (an fl_cfg_set / fl_cfg_put_* / fl_cfg_merge_text on that key or an ancestor's key
 * frees the old subtree). Readers mutate the tree (they record defaults and marks), so a
 * tree is used by one thread at a time. See docs/config.md. */
typedef struct fl_cfg fl_cfg;

typedef enum fl_cfg_type {
    FL_CFG_NIL = 0, /* "no value": readers treat it as absent and put their default there */
    FL_CFG_BOOL,
    FL_CFG_NUM,     /* a finite double; integers are numbers with an integral value */
    FL_CFG_STR,     /* NUL-terminated, no embedded NUL */
    FL_CFG_LIST,    /* ordered values, 1-based in paths: model.size[2] */
    FL_CFG_TABLE    /* string keys -> nodes, insertion order kept */
} fl_cfg_type;

/* Deepest nesting a tree may hold (root = 0); deeper sets and texts are refused. */
#define FL_CFG_MAX_DEPTH 64

/* ---- lifetime --------------------------------------------------------------------------- */

/* A new empty root table whose nodes come from `alloc` (NULL: the default allocator).
 * NULL when out of memory. Free with fl_cfg_free. */
fl_cfg *fl_cfg_new(const fl_allocator *alloc);
/* Frees the whole tree; `root` must be a root (from fl_cfg_new) or NULL. */
void fl_cfg_free(fl_cfg *root);

/* ---- text overrides (--set) ------------------------------------------------------------- */

/* Sets the dotted `path` below table `t` (usually the root) to the value `text` parses to:
 * true/false -> bool; nil -> nil; a finite number (strtod, whole text) -> number; "{...}" or
 * a text with a comma outside quotes -> list (or table when its fields are `k = v`); a
 * quoted string ("..." or '...', Lua escapes) -> that string; anything else -> the text
 * itself, trimmed, as a string. Missing tables on the way are created; a string met on the
 * way (a module selector) becomes {module = "<string>"} first; any other non-table on the
 * way is an FL_E_INVALID error naming the path. Path keys are letters, digits, _ and -.
 * The old value at the path, if any, is replaced in its place (insertion order is kept).
 * On any error the tree is left as it was. */
fl_status fl_cfg_set(fl_cfg *t, const char *path, const char *text, fl_error *err);
/* The same from one "path=value" argument (split at the first '='). */
fl_status fl_cfg_set_arg(fl_cfg *t, const char *arg, fl_error *err);
/* Sets the dotted `path` below table `t` as fl_cfg_set does (same path rules, selector
 * conversion, in-place replacement, atomic on error), to a copy of `value`: any node of any
 * tree (not one on `path` itself), copied as fl_cfg_copy copies. For sweeps: an axis value,
 * a number or a whole module table, set at its key path. */
fl_status fl_cfg_set_copy(fl_cfg *t, const char *path, const fl_cfg *value, fl_error *err);
/* Parses `text`, a Lua table constructor {k = v, ...} as fl_cfg_write prints it, and sets
 * each of its top-level keys into table `t` as fl_cfg_set would (replacing, in place).
 * On any error the tree is left as it was. */
fl_status fl_cfg_merge_text(fl_cfg *t, const char *text, fl_error *err);

/* ---- typed builders (C code, the Lua host) ---------------------------------------------- */

/* Each sets key `key` (any string) of table `t` to a new value, replacing an existing one in
 * its place; an empty list counts as an empty table. `put_num` refuses NaN and infinities
 * (FL_E_INVALID), `put_str` copies `s`. put_table/put_list give the new empty node in *out
 * (out may be NULL). On error (FL_E_NOMEM, FL_E_INVALID: `t` not a table, too deep) the tree
 * is unchanged. */
fl_status fl_cfg_put_nil(fl_cfg *t, const char *key, fl_error *err);
fl_status fl_cfg_put_bool(fl_cfg *t, const char *key, int v, fl_error *err);
fl_status fl_cfg_put_num(fl_cfg *t, const char *key, double v, fl_error *err);
fl_status fl_cfg_put_str(fl_cfg *t, const char *key, const char *s, fl_error *err);
fl_status fl_cfg_put_table(fl_cfg *t, const char *key, fl_cfg **out, fl_error *err);
fl_status fl_cfg_put_list(fl_cfg *t, const char *key, fl_cfg **out, fl_error *err);
/* Appends to list `list` (an empty table counts as an empty list); same rules. */
fl_status fl_cfg_push_nil(fl_cfg *list, fl_error *err);
fl_status fl_cfg_push_bool(fl_cfg *list, int v, fl_error *err);
fl_status fl_cfg_push_num(fl_cfg *list, double v, fl_error *err);
fl_status fl_cfg_push_str(fl_cfg *list, const char *s, fl_error *err);
fl_status fl_cfg_push_table(fl_cfg *list, fl_cfg **out, fl_error *err);
fl_status fl_cfg_push_list(fl_cfg *list, fl_cfg **out, fl_error *err);

/* A new root (from `alloc`, NULL: the default allocator) holding a deep copy of table `t`
 * (a root or any table in a tree; an empty list counts as an empty table): every value with
 * its type and spelling (a --set number keeps its text), keys in the same order. Reader
 * records (accepted keys, used and default marks) are not copied: the copy reads as if
 * freshly built, so it can be resolved again. NULL when out of memory. */
fl_cfg *fl_cfg_copy(const fl_cfg *t, const fl_allocator *alloc);

/* ---- lookups (no marks, no defaults) ---------------------------------------------------- */

fl_cfg *fl_cfg_get(const fl_cfg *t, const char *key);        /* NULL: absent or t not a table */
fl_cfg *fl_cfg_lookup(const fl_cfg *t, const char *path);    /* dotted path through tables */
fl_cfg_type fl_cfg_type_of(const fl_cfg *n);
const char *fl_cfg_type_name(fl_cfg_type type);              /* "nil", "bool", ... "table" */
int fl_cfg_bool_value(const fl_cfg *n);                      /* 0 unless a true bool */
double fl_cfg_num_value(const fl_cfg *n);                    /* 0.0 unless a number */
const char *fl_cfg_str_value(const fl_cfg *n);               /* NULL unless a string */
size_t fl_cfg_len(const fl_cfg *n);                          /* items of a list, keys of a table */
fl_cfg *fl_cfg_item(const fl_cfg *n, size_t i);              /* i-th item / value (0-based) */
const char *fl_cfg_key(const fl_cfg *n);                     /* key in its table, else NULL */
fl_cfg *fl_cfg_parent(const fl_cfg *n);                      /* NULL for the root */
int fl_cfg_is_default(const fl_cfg *n);                      /* put there by a reader */
int fl_cfg_is_used(const fl_cfg *n);                         /* read by a reader */

/* Writes n's full path from the root ("scheduler.planner.partitions", "metrics[2].module";
 * "" for the root) into buf (always NUL-terminated when size > 0, clipped to fit) and
 * returns its full length, as snprintf does. */
size_t fl_cfg_path(const fl_cfg *n, char *buf, size_t size);

/* ---- readers (modules) ------------------------------------------------------------------ */

/* Every reader reads key `key` of table `t`: it records `key` as accepted at `t` (even when
 * absent), marks the value used, and when the key is absent (or nil) puts its default there,
 * marked as a default, so the tree ends up as the resolved configuration. Outputs are written
 * only on success. Errors name the full key path, the value and what is accepted:
 *   scheduler.planner.partitions: expected an integer in [1, 64], got 0      (FL_E_RANGE)
 *   sampler.kind: unknown value "ddmi"; accepted: ddim, ddpm, euler          (FL_E_INVALID)
 *   model.size: expected a list of 2 numbers, got "abc"                      (FL_E_INVALID)
 * A missing required value (NULL/negative default) is FL_E_INVALID "...: missing; ...".
 * `t` must be a table (the root, or from fl_cfg_table / fl_cfg_module); defaults must lie in
 * their own ranges (both asserted: programmer errors). Ranges are inclusive; LONG_MIN /
 * LONG_MAX and -HUGE_VAL / HUGE_VAL leave a side open. */
fl_status fl_cfg_int(fl_cfg *t, const char *key, long def, long lo, long hi, long *out,
                     fl_error *err);
fl_status fl_cfg_num(fl_cfg *t, const char *key, double def, double lo, double hi, double *out,
                     fl_error *err);
fl_status fl_cfg_bool(fl_cfg *t, const char *key, int def, int *out, fl_error *err);
/* def NULL: required. A number or bool that came from --set text reads as its text ("2024"). */
fl_status fl_cfg_str(fl_cfg *t, const char *key, const char *def, const char **out,
                     fl_error *err);
/* `names` is NULL-terminated; *out is the index of the value; def_index < 0: required. */
fl_status fl_cfg_enum(fl_cfg *t, const char *key, const char *const *names, int def_index,
                      int *out, fl_error *err);
/* A list of n_min..n_max numbers in [lo, hi] into out[0..n_max-1], the count in *n_out (may be
 * NULL when n_min == n_max). A single number is a list of one when n_min <= 1. def: n_def
 * numbers (NULL: required). */
fl_status fl_cfg_nums(fl_cfg *t, const char *key, const double *def, int n_def, int n_min,
                      int n_max, double lo, double hi, double *out, int *n_out, fl_error *err);
/* A sub-table (created empty when absent) in *child. */
fl_status fl_cfg_table(fl_cfg *t, const char *key, fl_cfg **child, fl_error *err);
/* A list (created empty when absent) in *list; its items are read with the lookups,
 * fl_cfg_item_module or fl_cfg_mark_used. */
fl_status fl_cfg_list(fl_cfg *t, const char *key, fl_cfg **list, fl_error *err);
/* A module slot: a string (the module's name, all options default) or a table whose key
 * "module" names it. A string is turned into {module = name} so the module's own options and
 * defaults are recorded under it; a table without "module" gets module = def_name (def_name
 * NULL: required). *name is the module's name, *opts the table the module reads its options
 * from (key "module" already accepted there). */
fl_status fl_cfg_module(fl_cfg *t, const char *key, const char *def_name, const char **name,
                        fl_cfg **opts, fl_error *err);
/* The same for item i (0-based) of a list, e.g. metrics = {"adjacent", {module = "drift"}}. */
fl_status fl_cfg_item_module(fl_cfg *list, size_t i, const char **name, fl_cfg **opts,
                             fl_error *err);
/* Marks n and everything below it used: for free-form values a module consumes whole. */
void fl_cfg_mark_used(fl_cfg *n);

/* Records "<path of t>.<key>: <message>" in err (key may be NULL: the path of t itself) and
 * returns code: for a module's own checks across options. */
fl_status fl_cfg_error(const fl_cfg *t, const char *key, fl_error *err, fl_status code,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* After every module has read its options: FL_E_INVALID if any key in the tree was never read,
 * naming the first one (depth first, insertion order) and the keys accepted at its level:
 *   scheduler.planner.partitons: unknown key; accepted: module, partitions */
fl_status fl_cfg_check_unused(const fl_cfg *root, fl_error *err);

/* ---- printing --------------------------------------------------------------------------- */

/* Flags for printing. FL_CFG_MARK_DEFAULTS: a "-- default" comment after each value a
 * reader put there. */
enum { FL_CFG_MARK_DEFAULTS = 1u };

/* Prints node n (usually the root) as a Lua literal followed by a newline: tables one key per
 * line, indented by two, in insertion order; lists of scalars on one line; numbers in the
 * shortest form that reads back to the same double; strings quoted with Lua escapes; keys
 * that are not Lua names as ["key"]. Same tree, same text. fl_cfg_merge_text reads it back.
 * fl_cfg_format writes into buf (NUL-terminated, clipped to fit when size > 0) and returns the
 * full length, as snprintf does; fl_cfg_write returns FL_E_IO when the stream fails. */
size_t fl_cfg_format(const fl_cfg *n, unsigned flags, char *buf, size_t size);
fl_status fl_cfg_write(const fl_cfg *n, FILE *f, unsigned flags, fl_error *err);
/* The same text handed to `emit` piece by piece (no allocation, no size limit: for hashing a
 * configuration, fl_run_id); returns the full length. */
size_t fl_cfg_emit(const fl_cfg *n, unsigned flags,
                   void (*emit)(void *ctx, const char *p, size_t len), void *ctx);

#endif
