/* Sweep expansion (core/sweep.h): the base configuration times the axes and seeds, each
 * point resolved by building it, labelled, and named by the hash of its configuration. */
#include "core/sweep.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/experiment.h"

#define MAX_POINTS 1000000
#define LABEL_VALUE_MAX 48 /* one axis value in a label is clipped to this */

/* ---- run ids ----------------------------------------------------------------------------- */

static void fnv1a(void *ctx, const char *p, size_t n)
{
    uint64_t *h = ctx;
    for (size_t i = 0; i < n; i++) {
        *h ^= (unsigned char)p[i];
        *h *= 0x100000001b3ULL;
    }
}

void fl_run_id(const fl_cfg *cfg, char id[FL_RUN_ID_LEN + 1])
{
    uint64_t h = 0xcbf29ce484222325ULL;
    fl_cfg_emit(cfg, 0, fnv1a, &h);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
    memcpy(id, hex, FL_RUN_ID_LEN);
    id[FL_RUN_ID_LEN] = '\0';
}

/* ---- labels ------------------------------------------------------------------------------ */

typedef struct strbuf {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A scalar as fl_cfg_format prints it, without the newline. */
static void sb_scalar(strbuf *b, const fl_cfg *v)
{
    char buf[128];
    size_t n = fl_cfg_format(v, 0, buf, sizeof buf);
    if (n >= sizeof buf) {
        n = sizeof buf - 1;
        memcpy(buf + n - 4, "...", 3);
    }
    sb_add(b, buf, n && buf[n - 1] == '\n' ? n - 1 : n);
}

/* A word that needs no quotes in a label: lookahead, sqrt_linear, 1e-3, a/b. */
static int plain_word(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("_-+./", *s)))
            return 0;
    return 1;
}

/* A value, short: 4, lookahead, lookahead{partitions=2}, {16,4}. */
static void sb_value(strbuf *b, const fl_cfg *v)
{
    fl_cfg_type t = fl_cfg_type_of(v);
    if (t == FL_CFG_STR && plain_word(fl_cfg_str_value(v))) {
        sb_str(b, fl_cfg_str_value(v));
        return;
    }
    if (t != FL_CFG_TABLE && t != FL_CFG_LIST) {
        sb_scalar(b, v);
        return;
    }
    const char *module = t == FL_CFG_TABLE ? fl_cfg_str_value(fl_cfg_get(v, "module")) : NULL;
    size_t n = fl_cfg_len(v), shown = 0;
    if (module)
        sb_str(b, module);
    if (module && n == 1)
        return;
    sb_str(b, "{");
    for (size_t i = 0; i < n; i++) {
        const fl_cfg *k = fl_cfg_item(v, i);
        if (module && !strcmp(fl_cfg_key(k), "module"))
            continue;
        if (shown++)
            sb_str(b, ",");
        if (t == FL_CFG_TABLE) {
            sb_str(b, fl_cfg_key(k));
            sb_str(b, "=");
        }
        sb_value(b, k);
    }
    sb_str(b, "}");
}

/* "key=value" for a label, the value clipped. */
static void sb_assign(strbuf *b, const char *key, const fl_cfg *v)
{
    strbuf vb = { NULL, 0, 0, 0 };
    sb_value(&vb, v);
    if (b->len)
        sb_str(b, " ");
    sb_str(b, key);
    sb_str(b, "=");
    if (vb.oom) {
        b->oom = 1;
    } else if (vb.len > LABEL_VALUE_MAX) {
        sb_add(b, vb.p, LABEL_VALUE_MAX - 3);
        sb_str(b, "...");
    } else {
        sb_add(b, vb.p, vb.len);
    }
    free(vb.p);
}

/* ---- expansion --------------------------------------------------------------------------- */

/* One key set at a point: applied shallow keys first, so that an axis over a module slot
 * (scheduler.planner) does not wipe an axis over one of its options
 * (scheduler.planner.partitions) whatever order the grid declares them in. */
typedef struct assign {
    const char *key;
    const fl_cfg *value;
    int depth, order;
} assign;

static int assign_cmp(const void *a, const void *b)
{
    const assign *x = a, *y = b;
    if (x->depth != y->depth)
        return x->depth < y->depth ? -1 : 1;
    return (x->order > y->order) - (x->order < y->order);
}

static int dots(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '.';
    return n;
}

/* Prefixes err's message with the point it is about (sweeps only). */
static fl_status point_error(const fl_script *s, const fl_sweep_point *p, int64_t count,
                             fl_error *err)
{
    if (!s->is_sweep || !err)
        return err ? err->code : FL_E_INVALID;
    if (p->label && p->label[0])
        return fl_error_prefix(err, "point %lld of %lld (%s)", (long long)p->index + 1,
                               (long long)count, p->label);
    return fl_error_prefix(err, "point %lld of %lld", (long long)p->index + 1, (long long)count);
}

/* Point p: the base, its axis values, seed and sets, resolved. */
static fl_status make_point(const fl_script *s, const char *const *sets, int nset,
                            const int *digit, int64_t seed_i, assign *as, fl_sweep_point *p,
                            fl_error *err)
{
    strbuf label = { NULL, 0, 0, 0 };
    int na = 0;
    for (int a = 0; a < s->naxes; a++) {
        const fl_sweep_axis *ax = &s->axes[a];
        const fl_cfg *item = fl_cfg_item(ax->values, (size_t)digit[a]);
        for (int k = 0; k < ax->nkeys; k++) {
            const fl_cfg *v = ax->nkeys == 1 ? item : fl_cfg_item(item, (size_t)k);
            FL_ASSERT(v); /* the host checked the zipped lists' lengths */
            as[na] = (assign){ ax->keys[k], v, dots(ax->keys[k]), na };
            sb_assign(&label, ax->keys[k], v);
            na++;
        }
    }
    if (s->nseeds) {
        char b[40];
        snprintf(b, sizeof b, "%sseed=%lld", label.len ? " " : "", (long long)s->seeds[seed_i]);
        sb_str(&label, b);
    }
    if (label.oom) {
        free(label.p);
        return fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
    }
    p->label = label.p ? label.p : calloc(1, 1);
    p->cfg = fl_cfg_copy(s->base, NULL);
    if (!p->label || !p->cfg)
        return fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
    qsort(as, (size_t)na, sizeof *as, assign_cmp);
    fl_status st;
    for (int i = 0; i < na; i++)
        if ((st = fl_cfg_set_copy(p->cfg, as[i].key, as[i].value, err)))
            return st;
    if (s->nseeds && (st = fl_cfg_put_num(p->cfg, "seed", (double)s->seeds[seed_i], err)))
        return st;
    for (int i = 0; i < nset; i++)
        if ((st = fl_cfg_set_arg(p->cfg, sets[i], err)))
            return fl_error_prefix(err, "--set %.200s", sets[i]);
    fl_experiment ex;
    if ((st = fl_experiment_build(p->cfg, &ex, err)))
        return st;
    fl_experiment_free(&ex);
    if (!p->label[0]) {
        /* no axes and no seeds: the seed is what tells such points apart */
        char b[40];
        snprintf(b, sizeof b, "seed=%.0f", fl_cfg_num_value(fl_cfg_get(p->cfg, "seed")));
        char *l = strdup(b);
        if (!l)
            return fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
        free(p->label);
        p->label = l;
    }
    fl_run_id(p->cfg, p->id);
    return FL_OK;
}

typedef struct id_ref {
    char id[FL_RUN_ID_LEN + 1];
    int64_t index;
} id_ref;

static int by_id(const void *a, const void *b)
{
    const id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

static char *text_of(const fl_cfg *cfg)
{
    size_t n = fl_cfg_format(cfg, 0, NULL, 0);
    char *t = malloc(n + 1);
    if (t)
        fl_cfg_format(cfg, 0, t, n + 1);
    return t;
}

/* Two points with the same id: the same configuration (or, once in 2^48, a collision). */
static fl_status check_duplicates(fl_sweep *sw, fl_error *err)
{
    if (sw->count < 2)
        return FL_OK;
    id_ref *order = malloc((size_t)sw->count * sizeof *order);
    if (!order)
        return fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
    for (int64_t i = 0; i < sw->count; i++) {
        memcpy(order[i].id, sw->points[i].id, sizeof order[i].id);
        order[i].index = i;
    }
    qsort(order, (size_t)sw->count, sizeof *order, by_id);
    fl_status st = FL_OK;
    for (int64_t i = 1; i < sw->count && !st; i++) {
        const fl_sweep_point *a = &sw->points[order[i - 1].index];
        const fl_sweep_point *b = &sw->points[order[i].index];
        if (strcmp(a->id, b->id))
            continue;
        char *ta = text_of(a->cfg), *tb = text_of(b->cfg);
        if (!ta || !tb)
            st = fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
        else if (!strcmp(ta, tb))
            st = fl_error_set(err, FL_E_INVALID, "points %lld (%s) and %lld (%s) resolve to the "
                              "same configuration (run id %s): an axis or --set changes "
                              "nothing there", (long long)a->index + 1, a->label,
                              (long long)b->index + 1, b->label, a->id);
        else
            st = fl_error_set(err, FL_E_INVALID, "points %lld (%s) and %lld (%s) have the same "
                              "run id %s although their configurations differ (a hash "
                              "collision): change the sweep's name", (long long)a->index + 1,
                              a->label, (long long)b->index + 1, b->label, a->id);
        free(ta);
        free(tb);
    }
    free(order);
    return st;
}

fl_status fl_sweep_expand(const fl_script *s, const char *const *sets, int nset, fl_sweep *out,
                          fl_error *err)
{
    FL_ASSERT(s && s->base && out && nset >= 0 && (!nset || sets));
    memset(out, 0, sizeof *out);
    int64_t count = s->nseeds ? s->nseeds : 1;
    int nassign = 0;
    for (int a = 0; a < s->naxes; a++) {
        FL_ASSERT(s->axes[a].count > 0 && s->axes[a].nkeys > 0);
        if (count > MAX_POINTS / s->axes[a].count)
            return fl_error_set(err, FL_E_RANGE, "%s: the sweep has more than %d points",
                                s->path ? s->path : "sweep", MAX_POINTS);
        count *= s->axes[a].count;
        nassign += s->axes[a].nkeys;
    }
    out->points = calloc((size_t)count, sizeof *out->points);
    assign *as = malloc((size_t)(nassign ? nassign : 1) * sizeof *as);
    int *digit = malloc((size_t)(s->naxes ? s->naxes : 1) * sizeof *digit);
    fl_status st = FL_OK;
    if (!out->points || !as || !digit) {
        st = fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
        goto done;
    }
    /* seeds vary fastest, then the last axis, ..., then the first */
    for (int64_t i = 0; i < count && !st; i++) {
        fl_sweep_point *p = &out->points[i];
        out->count = i + 1;
        p->index = i;
        int64_t rest = i, seed_i = 0;
        if (s->nseeds) {
            seed_i = rest % s->nseeds;
            rest /= s->nseeds;
        }
        for (int a = s->naxes - 1; a >= 0; a--) {
            digit[a] = (int)(rest % s->axes[a].count);
            rest /= s->axes[a].count;
        }
        if ((st = make_point(s, sets, nset, digit, seed_i, as, p, err)))
            st = point_error(s, p, count, err);
    }
    if (!st)
        st = check_duplicates(out, err);
    if (!st) {
        const char *name = fl_cfg_str_value(fl_cfg_get(s->base, "name"));
        if (!name)
            name = fl_cfg_str_value(fl_cfg_get(out->points[0].cfg, "name"));
        out->name = strdup(name ? name : "default");
        if (!out->name)
            st = fl_error_set(err, FL_E_NOMEM, "sweep: out of memory");
    }
done:
    free(as);
    free(digit);
    if (st)
        fl_sweep_free(out);
    return st;
}

void fl_sweep_free(fl_sweep *sw)
{
    if (!sw)
        return;
    for (int64_t i = 0; sw->points && i < sw->count; i++) {
        fl_cfg_free(sw->points[i].cfg);
        free(sw->points[i].label);
    }
    free(sw->points);
    free(sw->name);
    memset(sw, 0, sizeof *sw);
}
