/* The named-array state of core/state.h. */
#include "core/state.h"

#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char name[FL_STATE_NAME_MAX + 1];
    fl_state_type type;
    int64_t count;
    void *data;
} entry;

struct fl_state {
    entry *e;
    size_t len, cap;
};

static const size_t type_size[FL_STATE_TYPE_COUNT] = { 1, 4, 8, 4, 8 };
static const char *const type_name[FL_STATE_TYPE_COUNT] = { "u8", "i32", "i64", "f32", "f64" };

size_t fl_state_type_size(fl_state_type t)
{
    return (unsigned)t < FL_STATE_TYPE_COUNT ? type_size[t] : 0;
}

const char *fl_state_type_name(fl_state_type t)
{
    return (unsigned)t < FL_STATE_TYPE_COUNT ? type_name[t] : "?";
}

fl_state *fl_state_new(void)
{
    return calloc(1, sizeof(fl_state));
}

void fl_state_free(fl_state *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->len; i++)
        free(s->e[i].data);
    free(s->e);
    free(s);
}

static entry *find(const fl_state *s, const char *name)
{
    for (size_t i = 0; i < s->len; i++)
        if (strcmp(s->e[i].name, name) == 0)
            return &s->e[i];
    return NULL;
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > FL_STATE_NAME_MAX)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '/'))
            return 0;
    return 1;
}

fl_status fl_state_put(fl_state *s, const char *name, fl_state_type t, const void *data,
                       int64_t count, fl_error *err)
{
    if (!valid_name(name))
        return fl_error_set(err, FL_E_INVALID, "state: invalid entry name \"%s\"", name);
    if ((unsigned)t >= FL_STATE_TYPE_COUNT || count < 0 || (count > 0 && !data))
        return fl_error_set(err, FL_E_INVALID, "state: %s: bad type or count", name);
    if ((uint64_t)count > SIZE_MAX / type_size[t])
        return fl_error_set(err, FL_E_NOMEM, "state: %s: %lld values", name, (long long)count);
    size_t bytes = (size_t)count * type_size[t];
    void *copy = malloc(bytes ? bytes : 1);
    if (!copy)
        return fl_error_set(err, FL_E_NOMEM, "state: %s: %zu bytes", name, bytes);
    if (bytes)
        memcpy(copy, data, bytes);
    entry *e = find(s, name);
    if (!e) {
        if (s->len == s->cap) {
            size_t cap = s->cap ? 2 * s->cap : 16;
            entry *ne = realloc(s->e, cap * sizeof *ne);
            if (!ne) {
                free(copy);
                return fl_error_set(err, FL_E_NOMEM, "state: %s", name);
            }
            s->e = ne;
            s->cap = cap;
        }
        e = &s->e[s->len++];
        memset(e, 0, sizeof *e);
        strcpy(e->name, name);
    }
    free(e->data);
    e->data = copy;
    e->type = t;
    e->count = count;
    return FL_OK;
}

fl_status fl_state_put_i64(fl_state *s, const char *name, int64_t v, fl_error *err)
{
    return fl_state_put(s, name, FL_STATE_I64, &v, 1, err);
}

fl_status fl_state_put_f64(fl_state *s, const char *name, double v, fl_error *err)
{
    return fl_state_put(s, name, FL_STATE_F64, &v, 1, err);
}

fl_status fl_state_get(const fl_state *s, const char *name, fl_state_type t, void *out,
                       int64_t count, fl_error *err)
{
    const entry *e = find(s, name);
    if (!e)
        return fl_error_set(err, FL_E_INVALID, "state: %s: missing", name);
    if (e->type != t || e->count != count)
        return fl_error_set(err, FL_E_INVALID, "state: %s: expected %lld %s values, found %lld %s",
                            name, (long long)count, fl_state_type_name(t), (long long)e->count,
                            fl_state_type_name(e->type));
    if (count)
        memcpy(out, e->data, (size_t)count * type_size[t]);
    return FL_OK;
}

fl_status fl_state_get_i64(const fl_state *s, const char *name, int64_t *v, fl_error *err)
{
    return fl_state_get(s, name, FL_STATE_I64, v, 1, err);
}

fl_status fl_state_get_f64(const fl_state *s, const char *name, double *v, fl_error *err)
{
    return fl_state_get(s, name, FL_STATE_F64, v, 1, err);
}

const void *fl_state_find(const fl_state *s, const char *name, fl_state_type *t, int64_t *count)
{
    const entry *e = find(s, name);
    if (!e)
        return NULL;
    if (t)
        *t = e->type;
    if (count)
        *count = e->count;
    return e->data;
}

size_t fl_state_len(const fl_state *s)
{
    return s->len;
}

const char *fl_state_entry(const fl_state *s, size_t i, fl_state_type *t, const void **data,
                           int64_t *count)
{
    if (i >= s->len)
        return NULL;
    if (t)
        *t = s->e[i].type;
    if (data)
        *data = s->e[i].data;
    if (count)
        *count = s->e[i].count;
    return s->e[i].name;
}
