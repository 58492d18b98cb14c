/* A generation state: named arrays of fixed-width values that a module saves between
 * iterations so a run can resume bit-identically (schedulers, sinks, metric accumulators).
 * In memory only; core/runfile.c stores one as state.h5 (one dataset per entry). */
#ifndef FL_STATE_H
#define FL_STATE_H

#include <stdint.h>

#include "core/status.h"

typedef enum fl_state_type {
    FL_STATE_U8 = 0,
    FL_STATE_I32,
    FL_STATE_I64,
    FL_STATE_F32,
    FL_STATE_F64,
    FL_STATE_TYPE_COUNT
} fl_state_type;

/* The state owns copies of every name and array put into it. Names are at most
 * FL_STATE_NAME_MAX bytes of letters, digits, '_', '.' and '/' (a module prefixes its own:
 * "sched/queue"), unique within a state. */
#define FL_STATE_NAME_MAX 120
typedef struct fl_state fl_state;

fl_state *fl_state_new(void);               /* NULL when out of memory */
void fl_state_free(fl_state *s);            /* s may be NULL */
size_t fl_state_type_size(fl_state_type t); /* bytes per value */
const char *fl_state_type_name(fl_state_type t);

/* Copies count values of type t under name; a name already there is replaced. */
fl_status fl_state_put(fl_state *s, const char *name, fl_state_type t, const void *data,
                       int64_t count, fl_error *err);
/* Scalars, for convenience. */
fl_status fl_state_put_i64(fl_state *s, const char *name, int64_t v, fl_error *err);
fl_status fl_state_put_f64(fl_state *s, const char *name, double v, fl_error *err);

/* Copies entry `name` into out, which holds exactly `count` values of type t; an absent
 * name, another type or another count is an FL_E_INVALID error naming the entry
 * ("state: sched/queue: expected 4096 f32 values, found 2048"). */
fl_status fl_state_get(const fl_state *s, const char *name, fl_state_type t, void *out,
                       int64_t count, fl_error *err);
fl_status fl_state_get_i64(const fl_state *s, const char *name, int64_t *v, fl_error *err);
fl_status fl_state_get_f64(const fl_state *s, const char *name, double *v, fl_error *err);

/* Lookup without copying: the entry's values (owned by s, valid until it is replaced or s
 * freed), or NULL when absent; *t and *count (may be NULL) describe them. */
const void *fl_state_find(const fl_state *s, const char *name, fl_state_type *t, int64_t *count);

/* Entries in the order they were first put, for storing a state. */
size_t fl_state_len(const fl_state *s);
const char *fl_state_entry(const fl_state *s, size_t i, fl_state_type *t, const void **data,
                           int64_t *count);

#endif
