/* The configuration tree: nodes, --set text parsing, recording readers, the unknown-key
 * check and Lua-literal printing. */
#include "config.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    F_USED = 1u,    /* read by a reader (or marked) */
    F_DEFAULT = 2u, /* put there by a reader */
    F_TEXT = 4u,    /* a bool/number parsed from bare text: str holds that text */
    F_CONV = 8u     /* turned from a string into a table by the fl_cfg_set in progress */
};

struct fl_cfg {
    const fl_allocator *alloc;
    fl_cfg *parent;
    fl_cfg_type type;
    unsigned flags;
    int b;
    double num;
    char *str; /* STR: the value; BOOL/NUM with F_TEXT: the text it was parsed from */
    size_t str_len;
    fl_cfg **kids; /* LIST: items; TABLE: values, each carrying its own key */
    size_t n_kids, cap_kids;
    char *acc; /* TABLE: keys accepted by readers, sorted, each NUL-terminated */
    size_t acc_len, acc_cap;
    size_t key_len;
    char key[]; /* key in the parent table; "" for the root and list items */
};

#define CFG_ALIGN 16
#define NOT_FOUND SIZE_MAX
#define VALUE_MAX 96     /* a value quoted in an error message is clipped to this */
#define MSG_PATH_MAX 240 /* and a key path */

/* ---- memory ------------------------------------------------------------------------------ */

static void *cfg_alloc(const fl_allocator *a, size_t n)
{
    return fl_alloc_aligned(a, n, CFG_ALIGN);
}

static char *str_dup(const fl_allocator *a, const char *s, size_t len)
{
    if (len == SIZE_MAX)
        return NULL;
    char *p = cfg_alloc(a, len + 1);
    if (p) {
        if (len)
            memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static fl_cfg *node_new(const fl_allocator *a, fl_cfg_type type, const char *key, size_t key_len)
{
    if (key_len > SIZE_MAX - sizeof(fl_cfg) - 1)
        return NULL;
    fl_cfg *n = cfg_alloc(a, sizeof(fl_cfg) + key_len + 1);
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->alloc = a;
    n->type = type;
    n->key_len = key_len;
    if (key_len)
        memcpy(n->key, key, key_len);
    n->key[key_len] = '\0';
    return n;
}

static void node_free(fl_cfg *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_kids; i++)
        node_free(n->kids[i]);
    fl_free(n->alloc, n->kids, n->cap_kids * sizeof *n->kids);
    if (n->str)
        fl_free(n->alloc, n->str, n->str_len + 1);
    fl_free(n->alloc, n->acc, n->acc_cap);
    fl_free(n->alloc, n, sizeof(fl_cfg) + n->key_len + 1);
}

static fl_cfg *new_str(const fl_allocator *a, const char *key, size_t key_len, const char *s,
                       size_t len)
{
    fl_cfg *n = node_new(a, FL_CFG_STR, key, key_len);
    if (!n)
        return NULL;
    n->str = str_dup(a, s, len);
    if (!n->str) {
        node_free(n);
        return NULL;
    }
    n->str_len = len;
    return n;
}

/* Room for `extra` more children; 0 or -1 (out of memory, nothing changed). */
static int kids_reserve(fl_cfg *n, size_t extra)
{
    if (n->cap_kids - n->n_kids >= extra)
        return 0;
    size_t cap = n->cap_kids ? n->cap_kids : 4;
    while (cap - n->n_kids < extra) {
        if (cap > SIZE_MAX / 2 / sizeof(fl_cfg *))
            return -1;
        cap *= 2;
    }
    fl_cfg **k = cfg_alloc(n->alloc, cap * sizeof *k);
    if (!k)
        return -1;
    if (n->n_kids)
        memcpy(k, n->kids, n->n_kids * sizeof *k);
    fl_free(n->alloc, n->kids, n->cap_kids * sizeof *n->kids);
    n->kids = k;
    n->cap_kids = cap;
    return 0;
}

static void attach(fl_cfg *t, fl_cfg *c) /* room reserved */
{
    FL_ASSERT(t->n_kids < t->cap_kids);
    t->kids[t->n_kids++] = c;
    c->parent = t;
}

static size_t find_key(const fl_cfg *t, const char *key, size_t len)
{
    if (t->type != FL_CFG_TABLE)
        return NOT_FOUND;
    for (size_t i = 0; i < t->n_kids; i++) {
        const fl_cfg *k = t->kids[i];
        if (k->key_len == len && memcmp(k->key, key, len) == 0)
            return i;
    }
    return NOT_FOUND;
}

/* Puts c under its key in table t, replacing an old value in its place or appending.
 * -1: out of memory, c freed, t unchanged. */
static int place(fl_cfg *t, fl_cfg *c)
{
    size_t i = find_key(t, c->key, c->key_len);
    if (i != NOT_FOUND) {
        fl_cfg *old = t->kids[i];
        t->kids[i] = c;
        c->parent = t;
        node_free(old);
        return 0;
    }
    if (kids_reserve(t, 1)) {
        node_free(c);
        return -1;
    }
    attach(t, c);
    return 0;
}

/* An empty list and an empty table are the same thing ({} in Lua): these settle which. */
static int as_table(fl_cfg *n)
{
    if (n->type == FL_CFG_LIST && !n->n_kids)
        n->type = FL_CFG_TABLE;
    return n->type == FL_CFG_TABLE;
}

static int as_list(fl_cfg *n)
{
    if (n->type == FL_CFG_TABLE && !n->n_kids)
        n->type = FL_CFG_LIST;
    return n->type == FL_CFG_LIST;
}

static int depth_of(const fl_cfg *n)
{
    int d = 0;
    for (; n->parent; n = n->parent)
        d++;
    return d;
}

static int is_module_key(const char *key, size_t len)
{
    return len == 6 && memcmp(key, "module", 6) == 0;
}

/* A module selector string s becomes {module = s}, in place. -1: out of memory, unchanged. */
static int convert_selector(fl_cfg *s)
{
    FL_ASSERT(s->type == FL_CFG_STR);
    fl_cfg *m = node_new(s->alloc, FL_CFG_STR, "module", 6);
    if (!m)
        return -1;
    fl_cfg **k = cfg_alloc(s->alloc, 4 * sizeof *k);
    if (!k) {
        node_free(m);
        return -1;
    }
    m->str = s->str;
    m->str_len = s->str_len;
    m->flags = s->flags & F_DEFAULT;
    s->str = NULL;
    s->str_len = 0;
    s->type = FL_CFG_TABLE;
    s->kids = k;
    s->cap_kids = 4;
    s->n_kids = 0;
    attach(s, m);
    return 0;
}

static void unconvert_selector(fl_cfg *s)
{
    FL_ASSERT(s->type == FL_CFG_TABLE && s->n_kids == 1);
    fl_cfg *m = s->kids[0];
    s->str = m->str;
    s->str_len = m->str_len;
    m->str = NULL;
    node_free(m);
    fl_free(s->alloc, s->kids, s->cap_kids * sizeof *s->kids);
    s->kids = NULL;
    s->n_kids = s->cap_kids = 0;
    s->type = FL_CFG_STR;
}

/* A number or bool parsed from bare text becomes the string it was written as. */
static void text_to_str(fl_cfg *n)
{
    FL_ASSERT(n->flags & F_TEXT);
    n->type = FL_CFG_STR;
    n->flags &= ~F_TEXT;
}

/* Records key as accepted at table t (sorted, no duplicates). -1: out of memory. */
static int accept_key(fl_cfg *t, const char *key)
{
    size_t len = strlen(key), pos = 0;
    while (pos < t->acc_len) {
        const char *e = t->acc + pos;
        int c = strcmp(key, e);
        if (c == 0)
            return 0;
        if (c < 0)
            break;
        pos += strlen(e) + 1;
    }
    if (len >= SIZE_MAX - t->acc_len)
        return -1;
    size_t need = t->acc_len + len + 1;
    if (need > t->acc_cap) {
        size_t cap = t->acc_cap ? t->acc_cap : 64;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *a = cfg_alloc(t->alloc, cap);
        if (!a)
            return -1;
        if (t->acc_len)
            memcpy(a, t->acc, t->acc_len);
        fl_free(t->alloc, t->acc, t->acc_cap);
        t->acc = a;
        t->acc_cap = cap;
    }
    memmove(t->acc + pos + len + 1, t->acc + pos, t->acc_len - pos);
    memcpy(t->acc + pos, key, len + 1);
    t->acc_len += len + 1;
    return 0;
}

/* ---- text output ------------------------------------------------------------------------- */

/* Output to a stream or into a buffer (snprintf-style: counts everything, stores what fits). */
typedef struct sink {
    FILE *f;
    char *buf;
    size_t size, len;
    int failed;
    void (*emit)(void *ctx, const char *p, size_t n); /* fl_cfg_emit: takes every piece */
    void *ctx;
} sink;

static void out(sink *s, const char *p, size_t n)
{
    if (s->emit) {
        if (n)
            s->emit(s->ctx, p, n);
    } else if (s->f) {
        if (n && fwrite(p, 1, n, s->f) != n)
            s->failed = 1;
    } else if (s->size && s->len < s->size - 1) {
        size_t room = s->size - 1 - s->len;
        memcpy(s->buf + s->len, p, n < room ? n : room);
    }
    s->len += n;
}

static void outs(sink *s, const char *p) { out(s, p, strlen(p)); }

static size_t sink_end(sink *s)
{
    if (!s->f && s->size)
        s->buf[s->len < s->size ? s->len : s->size - 1] = '\0';
    return s->len;
}

/* Ends a buffer sink; text that did not fit ends in "...". */
static const char *sink_clip(sink *s)
{
    sink_end(s);
    if (s->len >= s->size && s->size >= 4)
        memcpy(s->buf + s->size - 4, "...", 3);
    return s->buf;
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int is_lua_name(const char *k, size_t n)
{
    static const char *const kw[] = { "and", "break", "do", "else", "elseif", "end", "false",
                                      "for", "function", "goto", "if", "in", "local", "nil",
                                      "not", "or", "repeat", "return", "then", "true", "until",
                                      "while" };
    if (!n || !(is_alpha(k[0]) || k[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(is_alpha(k[i]) || is_digit(k[i]) || k[i] == '_'))
            return 0;
    for (size_t i = 0; i < sizeof kw / sizeof kw[0]; i++)
        if (strlen(kw[i]) == n && memcmp(kw[i], k, n) == 0)
            return 0;
    return 1;
}

/* The shortest of %.15g, %.16g, %.17g that reads back as the same double. */
static void fmt_num(char b[64], double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, 64, "%.*g", prec, v);
        if (strtod(b, NULL) == v)
            break;
    }
}

static void w_quoted(sink *s, const char *p, size_t n)
{
    out(s, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char b[8];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(b, sizeof b, "\\%03u", (unsigned)c); /* 3 digits: a digit may follow */
                esc = b;
            }
        }
        if (esc) {
            out(s, p + start, i - start);
            outs(s, esc);
            start = i + 1;
        }
    }
    out(s, p + start, n - start);
    out(s, "\"", 1);
}

static void w_key(sink *s, const fl_cfg *k)
{
    if (is_lua_name(k->key, k->key_len)) {
        out(s, k->key, k->key_len);
    } else {
        out(s, "[", 1);
        w_quoted(s, k->key, k->key_len);
        out(s, "]", 1);
    }
    out(s, " = ", 3);
}

static int is_scalar(const fl_cfg *n) { return n->type != FL_CFG_LIST && n->type != FL_CFG_TABLE; }

static void w_node(sink *s, const fl_cfg *n, int level, unsigned flags, int compact)
{
    char b[64];
    switch (n->type) {
    case FL_CFG_NIL: outs(s, "nil"); return;
    case FL_CFG_BOOL: outs(s, n->b ? "true" : "false"); return;
    case FL_CFG_NUM: fmt_num(b, n->num); outs(s, b); return;
    case FL_CFG_STR: w_quoted(s, n->str, n->str_len); return;
    case FL_CFG_LIST:
    case FL_CFG_TABLE: break;
    }
    if (!n->n_kids) {
        outs(s, "{}");
        return;
    }
    int one_line = compact;
    if (n->type == FL_CFG_LIST && !one_line) {
        one_line = 1;
        for (size_t i = 0; i < n->n_kids; i++)
            if (!is_scalar(n->kids[i]))
                one_line = 0;
    }
    if (one_line) {
        out(s, "{", 1);
        for (size_t i = 0; i < n->n_kids; i++) {
            if (i)
                out(s, ", ", 2);
            if (n->type == FL_CFG_TABLE)
                w_key(s, n->kids[i]);
            w_node(s, n->kids[i], level, flags, 1);
        }
        out(s, "}", 1);
        return;
    }
    out(s, "{\n", 2);
    for (size_t i = 0; i < n->n_kids; i++) {
        const fl_cfg *k = n->kids[i];
        for (int l = 0; l <= level; l++)
            out(s, "  ", 2);
        if (n->type == FL_CFG_TABLE)
            w_key(s, k);
        w_node(s, k, level + 1, flags, 0);
        out(s, ",", 1);
        if ((flags & FL_CFG_MARK_DEFAULTS) && (k->flags & F_DEFAULT))
            outs(s, " -- default");
        out(s, "\n", 1);
    }
    for (int l = 0; l < level; l++)
        out(s, "  ", 2);
    out(s, "}", 1);
}

static size_t index_in(const fl_cfg *parent, const fl_cfg *n)
{
    for (size_t i = 0; i < parent->n_kids; i++)
        if (parent->kids[i] == n)
            return i;
    return 0;
}

static void w_path(sink *s, const fl_cfg *n)
{
    const fl_cfg *p = n->parent;
    if (!p)
        return;
    w_path(s, p);
    if (p->type == FL_CFG_LIST) {
        char b[32];
        snprintf(b, sizeof b, "[%zu]", index_in(p, n) + 1);
        outs(s, b);
    } else {
        if (p->parent)
            out(s, ".", 1);
        out(s, n->key, n->key_len);
    }
}

/* "<path of n>.<key>" for a message (key may be NULL); "config" for the root. Clipped to
 * MSG_PATH_MAX so that what follows it in a message always fits. */
static const char *msg_path(char *buf, size_t size, const fl_cfg *n, const char *key, size_t len)
{
    sink s = { NULL, buf, size < MSG_PATH_MAX ? size : MSG_PATH_MAX, 0, 0, NULL, NULL };
    w_path(&s, n);
    if (key) {
        if (s.len)
            out(&s, ".", 1);
        out(&s, key, len);
    }
    if (!s.len)
        outs(&s, "config");
    return sink_clip(&s);
}

static const char *msg_value(char *buf, size_t size, const fl_cfg *v)
{
    sink s = { NULL, buf, size, 0, 0, NULL, NULL };
    w_node(&s, v, 0, 0, 1);
    return sink_clip(&s);
}

static const char *msg_accepted(char *buf, size_t size, const fl_cfg *t)
{
    sink s = { NULL, buf, size, 0, 0, NULL, NULL };
    if (!t || !t->acc_len)
        outs(&s, "none");
    for (size_t pos = 0; t && pos < t->acc_len; pos += strlen(t->acc + pos) + 1) {
        if (pos)
            out(&s, ", ", 2);
        outs(&s, t->acc + pos);
    }
    return sink_clip(&s);
}

static fl_status nomem_at(const fl_cfg *t, const char *key, fl_error *err)
{
    char path[FL_ERRMSG_MAX];
    msg_path(path, sizeof path, t, key, key ? strlen(key) : 0);
    return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", path);
}

/* "<path>: expected <want>, got <value>" */
static fl_status fail_value(const fl_cfg *t, const char *key, const fl_cfg *v, fl_error *err,
                            fl_status code, const char *want)
{
    char path[FL_ERRMSG_MAX], val[VALUE_MAX];
    msg_path(path, sizeof path, t, key, key ? strlen(key) : 0);
    msg_value(val, sizeof val, v);
    return fl_error_set(err, code, "%s: expected %s, got %s", path, want, val);
}

static fl_status fail_missing(const fl_cfg *t, const char *key, fl_error *err, const char *want)
{
    char path[FL_ERRMSG_MAX];
    msg_path(path, sizeof path, t, key, key ? strlen(key) : 0);
    return fl_error_set(err, FL_E_INVALID, "%s: missing; expected %s", path, want);
}

fl_status fl_cfg_error(const fl_cfg *t, const char *key, fl_error *err, fl_status code,
                       const char *fmt, ...)
{
    if (!err)
        return code;
    char path[FL_ERRMSG_MAX], msg[FL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    msg_path(path, sizeof path, t, key, key ? strlen(key) : 0);
    return fl_error_set(err, code, "%s: %s", path, msg);
}

size_t fl_cfg_path(const fl_cfg *n, char *buf, size_t size)
{
    FL_ASSERT(n && (buf || !size));
    sink s = { NULL, buf, size, 0, 0, NULL, NULL };
    w_path(&s, n);
    return sink_end(&s);
}

size_t fl_cfg_format(const fl_cfg *n, unsigned flags, char *buf, size_t size)
{
    FL_ASSERT(n && (buf || !size));
    sink s = { NULL, buf, size, 0, 0, NULL, NULL };
    w_node(&s, n, 0, flags, 0);
    out(&s, "\n", 1);
    return sink_end(&s);
}

fl_status fl_cfg_write(const fl_cfg *n, FILE *f, unsigned flags, fl_error *err)
{
    FL_ASSERT(n && f);
    sink s = { f, NULL, 0, 0, 0, NULL, NULL };
    w_node(&s, n, 0, flags, 0);
    out(&s, "\n", 1);
    if (s.failed || ferror(f))
        return fl_error_set(err, FL_E_IO, "config: writing the configuration failed");
    return FL_OK;
}

size_t fl_cfg_emit(const fl_cfg *n, unsigned flags,
                   void (*emit)(void *ctx, const char *p, size_t len), void *ctx)
{
    FL_ASSERT(n && emit);
    sink s = { NULL, NULL, 0, 0, 0, emit, ctx };
    w_node(&s, n, 0, flags, 0);
    out(&s, "\n", 1);
    return s.len;
}

/* ---- text input -------------------------------------------------------------------------- */

typedef struct parser {
    const fl_allocator *alloc;
    const char *text, *p, *end;
    int depth_left; /* nesting levels a value may still open */
    fl_status st;
    const char *why;
    size_t col;
} parser;

static fl_cfg *perr(parser *ps, fl_status code, const char *why)
{
    if (!ps->st) {
        ps->st = code;
        ps->why = why;
        ps->col = (size_t)(ps->p - ps->text) + 1;
    }
    return NULL;
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && is_space((unsigned char)*ps->p))
        ps->p++;
}

static int hex_val(int c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One escape at p (p[0] == '\\'): its byte in *v and where it ends in *next; 0 if malformed. */
static int unescape(const char *p, const char *end, int *v, const char **next)
{
    if (p + 1 >= end)
        return 0;
    char c = p[1];
    const char *q = p + 2;
    switch (c) {
    case 'n': *v = '\n'; break;
    case 't': *v = '\t'; break;
    case 'r': *v = '\r'; break;
    case 'a': *v = '\a'; break;
    case 'b': *v = '\b'; break;
    case 'f': *v = '\f'; break;
    case 'v': *v = '\v'; break;
    case '\\': *v = '\\'; break;
    case '"': *v = '"'; break;
    case '\'': *v = '\''; break;
    case 'x': {
        if (end - q < 2 || hex_val((unsigned char)q[0]) < 0 || hex_val((unsigned char)q[1]) < 0)
            return 0;
        *v = hex_val((unsigned char)q[0]) * 16 + hex_val((unsigned char)q[1]);
        q += 2;
        break;
    }
    default: {
        if (!is_digit((unsigned char)c))
            return 0;
        int x = 0;
        q = p + 1;
        for (int i = 0; i < 3 && q < end && is_digit((unsigned char)*q); i++)
            x = x * 10 + (*q++ - '0');
        if (x > 255)
            return 0;
        *v = x;
    }
    }
    *next = q;
    return 1;
}

/* A quoted string at ps->p into a new buffer (*len bytes). 0 on error (ps says why). */
static int parse_quoted(parser *ps, char **s_out, size_t *len_out)
{
    char q = *ps->p;
    const char *p = ps->p + 1;
    size_t len = 0;
    for (;;) {
        if (p >= ps->end) {
            perr(ps, FL_E_FORMAT, "unterminated string");
            return 0;
        }
        if (*p == q)
            break;
        if (*p == '\\') {
            int v;
            const char *next;
            if (!unescape(p, ps->end, &v, &next)) {
                ps->p = p;
                perr(ps, FL_E_FORMAT, "bad escape in string");
                return 0;
            }
            if (v == 0) {
                ps->p = p;
                perr(ps, FL_E_FORMAT, "NUL in string");
                return 0;
            }
            p = next;
        } else {
            p++;
        }
        len++;
    }
    char *s = cfg_alloc(ps->alloc, len + 1);
    if (!s) {
        perr(ps, FL_E_NOMEM, "out of memory");
        return 0;
    }
    size_t i = 0;
    for (p = ps->p + 1; *p != q;) {
        if (*p == '\\') {
            int v;
            const char *next;
            unescape(p, ps->end, &v, &next);
            s[i++] = (char)v;
            p = next;
        } else {
            s[i++] = *p++;
        }
    }
    s[len] = '\0';
    ps->p = p + 1;
    *s_out = s;
    *len_out = len;
    return 1;
}

/* A bare word: true, false, nil, a finite number, else a string. */
static fl_cfg *classify(parser *ps, const char *key, size_t key_len, const char *tok, size_t len)
{
    char *s = str_dup(ps->alloc, tok, len);
    fl_cfg *n = s ? node_new(ps->alloc, FL_CFG_STR, key, key_len) : NULL;
    if (!n) {
        fl_free(ps->alloc, s, len + 1);
        return perr(ps, FL_E_NOMEM, "out of memory");
    }
    n->str = s;
    n->str_len = len;
    char *e;
    double v;
    if ((len == 4 && memcmp(s, "true", 4) == 0) || (len == 5 && memcmp(s, "false", 5) == 0)) {
        n->type = FL_CFG_BOOL;
        n->b = len == 4;
        n->flags = F_TEXT;
    } else if (len == 3 && memcmp(s, "nil", 3) == 0) {
        fl_free(ps->alloc, s, len + 1);
        n->str = NULL;
        n->str_len = 0;
        n->type = FL_CFG_NIL;
    } else if (len && (v = strtod(s, &e), e == s + len) && isfinite(v)) {
        n->type = FL_CFG_NUM;
        n->num = v;
        n->flags = F_TEXT;
    }
    return n;
}

static int bare_stop(int c)
{
    return c == ',' || c == ';' || c == '{' || c == '}' || c == '[' || c == ']' || c == '=' ||
           c == '"' || c == '\'';
}

/* A bare word inside braces: [*t0, *t1) trimmed; ps->p after it. */
static void scan_bare(parser *ps, const char **t0, const char **t1)
{
    *t0 = ps->p;
    while (ps->p < ps->end && !bare_stop((unsigned char)*ps->p))
        ps->p++;
    const char *e = ps->p;
    while (e > *t0 && is_space((unsigned char)e[-1]))
        e--;
    *t1 = e;
}

static fl_cfg *parse_table(parser *ps, const char *key, size_t key_len, int braced);

/* One value inside braces: a constructor, a quoted string or a bare word. */
static fl_cfg *parse_item(parser *ps, const char *key, size_t key_len)
{
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '{')
        return parse_table(ps, key, key_len, 1);
    if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '\'')) {
        char *s;
        size_t len;
        if (!parse_quoted(ps, &s, &len))
            return NULL;
        fl_cfg *n = node_new(ps->alloc, FL_CFG_STR, key, key_len);
        if (!n) {
            fl_free(ps->alloc, s, len + 1);
            return perr(ps, FL_E_NOMEM, "out of memory");
        }
        n->str = s;
        n->str_len = len;
        return n;
    }
    const char *t0, *t1;
    scan_bare(ps, &t0, &t1);
    if (t0 == t1) {
        ps->p = t0;
        return perr(ps, FL_E_FORMAT, "expected a value");
    }
    return classify(ps, key, key_len, t0, (size_t)(t1 - t0));
}

/* A constructor {a, b} / {k = v, ["k"] = v}, or its body alone up to the end (braced 0). */
static fl_cfg *parse_table(parser *ps, const char *key, size_t key_len, int braced)
{
    if (ps->depth_left <= 0)
        return perr(ps, FL_E_INVALID, "nested too deeply");
    if (braced)
        ps->p++;
    fl_cfg *n = node_new(ps->alloc, FL_CFG_LIST, key, key_len);
    if (!n)
        return perr(ps, FL_E_NOMEM, "out of memory");
    ps->depth_left--;
    int keyed = -1; /* not known until the first field */
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end) {
            if (braced) {
                perr(ps, FL_E_FORMAT, "expected '}'");
                goto fail;
            }
            break;
        }
        if (braced && *ps->p == '}') {
            ps->p++;
            break;
        }
        const char *field = ps->p, *fk = NULL;
        char *fkbuf = NULL;
        size_t fklen = 0;
        if (*ps->p == '[') {
            ps->p++;
            skip_ws(ps);
            if (ps->p >= ps->end || (*ps->p != '"' && *ps->p != '\'')) {
                perr(ps, FL_E_FORMAT, "expected a quoted key after '['");
                goto fail;
            }
            if (!parse_quoted(ps, &fkbuf, &fklen))
                goto fail;
            fk = fkbuf;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ']') {
                fl_free(ps->alloc, fkbuf, fklen + 1);
                perr(ps, FL_E_FORMAT, "expected ']'");
                goto fail;
            }
            ps->p++;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '=') {
                fl_free(ps->alloc, fkbuf, fklen + 1);
                perr(ps, FL_E_FORMAT, "expected '='");
                goto fail;
            }
            ps->p++;
        } else if (*ps->p != '{' && *ps->p != '"' && *ps->p != '\'') {
            const char *t0, *t1;
            scan_bare(ps, &t0, &t1);
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == '=' && t1 > t0) {
                fk = t0;
                fklen = (size_t)(t1 - t0);
                ps->p++;
            } else {
                ps->p = field; /* a positional bare value: parse_item reads it again */
            }
        }
        if (keyed >= 0 && keyed != (fk != NULL)) {
            fl_free(ps->alloc, fkbuf, fklen + 1);
            ps->p = field;
            perr(ps, FL_E_FORMAT, "cannot mix list items and key = value fields");
            goto fail;
        }
        keyed = fk != NULL;
        if (fk && find_key(n, fk, fklen) != NOT_FOUND) {
            fl_free(ps->alloc, fkbuf, fklen + 1);
            ps->p = field;
            perr(ps, FL_E_FORMAT, "duplicate key");
            goto fail;
        }
        if (keyed)
            n->type = FL_CFG_TABLE; /* so find_key sees the keys so far */
        fl_cfg *item = parse_item(ps, fk ? fk : "", fklen);
        if (fkbuf)
            fl_free(ps->alloc, fkbuf, fklen + 1);
        if (!item)
            goto fail;
        if (kids_reserve(n, 1)) {
            node_free(item);
            perr(ps, FL_E_NOMEM, "out of memory");
            goto fail;
        }
        attach(n, item);
        skip_ws(ps);
        if (ps->p < ps->end && (*ps->p == ',' || *ps->p == ';'))
            ps->p++;
        else if (ps->p < ps->end && !(braced && *ps->p == '}')) {
            perr(ps, FL_E_FORMAT, braced ? "expected ',' or '}'" : "expected ','");
            goto fail;
        }
    }
    ps->depth_left++;
    return n;
fail:
    ps->depth_left++;
    node_free(n);
    return NULL;
}

/* Whether [p, end) has a comma outside quotes and braces (then it is a list without braces). */
static int has_outer_comma(const char *p, const char *end)
{
    int depth = 0;
    while (p < end) {
        char c = *p++;
        if (c == '"' || c == '\'') {
            while (p < end && *p != c)
                p += (*p == '\\' && p + 1 < end) ? 2 : 1;
            p += p < end;
        } else if (c == '{') {
            depth++;
        } else if (c == '}') {
            depth--;
        } else if (c == ',' && depth == 0) {
            return 1;
        }
    }
    return 0;
}

/* A --set value (see fl_cfg_set) as a detached node with key `key`. */
static fl_cfg *parse_text(parser *ps, const char *key, size_t key_len)
{
    skip_ws(ps);
    while (ps->end > ps->p && is_space((unsigned char)ps->end[-1]))
        ps->end--;
    fl_cfg *n;
    if (has_outer_comma(ps->p, ps->end)) {
        return parse_table(ps, key, key_len, 0);
    } else if (ps->p < ps->end && *ps->p == '{') {
        n = parse_table(ps, key, key_len, 1);
    } else if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '\'')) {
        n = parse_item(ps, key, key_len);
    } else {
        return classify(ps, key, key_len, ps->p, (size_t)(ps->end - ps->p));
    }
    if (!n)
        return NULL;
    skip_ws(ps);
    if (ps->p < ps->end) {
        node_free(n);
        return perr(ps, FL_E_FORMAT, "unexpected text after the value");
    }
    return n;
}

static fl_status parse_failed(const parser *ps, const char *where, fl_error *err)
{
    if (ps->st == FL_E_NOMEM)
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", where);
    char text[VALUE_MAX];
    size_t len = strlen(ps->text);
    if (len < sizeof text)
        memcpy(text, ps->text, len + 1);
    else {
        memcpy(text, ps->text, sizeof text - 4);
        memcpy(text + sizeof text - 4, "...", 4);
    }
    return fl_error_set(err, ps->st, "%s: cannot parse \"%s\": %s at column %zu", where, text,
                        ps->why, ps->col);
}

/* ---- copies ------------------------------------------------------------------------------ */

/* Levels below n (0 for a scalar or an empty container). */
static int height_of(const fl_cfg *n)
{
    int h = 0;
    for (size_t i = 0; i < n->n_kids; i++) {
        int k = height_of(n->kids[i]) + 1;
        if (k > h)
            h = k;
    }
    return h;
}

/* A copy of src's value under key [key, key+klen), from allocator a: values and their
 * spelling (F_TEXT), not the reader records (accepted keys, used and default marks), so the
 * copy reads as if freshly built. NULL when out of memory. Recursion is bounded by the
 * tree's depth limit. */
static fl_cfg *copy_node(const fl_allocator *a, const fl_cfg *src, const char *key, size_t klen)
{
    fl_cfg *c = node_new(a, src->type, key, klen);
    if (!c)
        return NULL;
    c->b = src->b;
    c->num = src->num;
    c->flags = src->flags & F_TEXT;
    if (src->str) {
        c->str = str_dup(a, src->str, src->str_len);
        if (!c->str) {
            node_free(c);
            return NULL;
        }
        c->str_len = src->str_len;
    }
    if (src->n_kids && kids_reserve(c, src->n_kids)) {
        node_free(c);
        return NULL;
    }
    for (size_t i = 0; i < src->n_kids; i++) {
        const fl_cfg *k = src->kids[i];
        fl_cfg *kc = copy_node(a, k, k->key, k->key_len);
        if (!kc) {
            node_free(c);
            return NULL;
        }
        attach(c, kc);
    }
    return c;
}

fl_cfg *fl_cfg_copy(const fl_cfg *t, const fl_allocator *alloc)
{
    FL_ASSERT(t && (t->type == FL_CFG_TABLE || (t->type == FL_CFG_LIST && !t->n_kids)));
    fl_cfg *c = copy_node(alloc ? alloc : fl_allocator_default(), t, "", 0);
    if (c)
        c->type = FL_CFG_TABLE; /* an empty list root is an empty table */
    return c;
}

/* ---- building ---------------------------------------------------------------------------- */

fl_cfg *fl_cfg_new(const fl_allocator *alloc)
{
    return node_new(alloc ? alloc : fl_allocator_default(), FL_CFG_TABLE, "", 0);
}

void fl_cfg_free(fl_cfg *root)
{
    if (!root)
        return;
    FL_ASSERT(!root->parent);
    node_free(root);
}

static int key_char_ok(int c) { return is_alpha(c) || is_digit(c) || c == '_' || c == '-'; }

/* Checks a dotted path; *nseg its number of keys. */
static fl_status check_path(const char *path, size_t plen, size_t *nseg, fl_error *err)
{
    int shown = plen > 200 ? 200 : (int)plen;
    const char *more = plen > 200 ? "..." : "";
    size_t segs = 1, seg = 0;
    for (size_t i = 0; i <= plen; i++) {
        if (i == plen || path[i] == '.') {
            if (i == seg)
                return fl_error_set(err, FL_E_INVALID,
                                    "bad key path \"%.*s%s\": empty key at column %zu", shown,
                                    path, more, i + 1);
            if (i < plen)
                segs++;
            seg = i + 1;
        } else if (!key_char_ok((unsigned char)path[i])) {
            unsigned char c = (unsigned char)path[i];
            char shown_c[8];
            if (c >= 0x20 && c < 0x7f)
                snprintf(shown_c, sizeof shown_c, "'%c'", c);
            else
                snprintf(shown_c, sizeof shown_c, "0x%02x", (unsigned)c);
            return fl_error_set(err, FL_E_INVALID,
                                "bad key path \"%.*s%s\": character %s at column %zu is not "
                                "allowed in a key (letters, digits, _ and -)",
                                shown, path, more, shown_c, i + 1);
        }
    }
    *nseg = segs;
    return FL_OK;
}

/* Clears the conversion marks left along `path` by a set; reverts the conversions on failure. */
static void finish_conversions(fl_cfg *t, const char *path, size_t plen, int revert)
{
    const char *seg = path, *pend = path + plen;
    while (t->type == FL_CFG_TABLE) {
        const char *dot = memchr(seg, '.', (size_t)(pend - seg));
        if (!dot)
            return;
        size_t i = find_key(t, seg, (size_t)(dot - seg));
        if (i == NOT_FOUND)
            return;
        t = t->kids[i];
        if (t->flags & F_CONV) {
            t->flags &= ~F_CONV;
            if (revert)
                unconvert_selector(t);
        }
        seg = dot + 1;
    }
}

/* Sets path to the value `text` parses to or, when src is not NULL, to a copy of src. */
static fl_status set_n(fl_cfg *t, const char *path, size_t plen, const char *text,
                       const fl_cfg *src, fl_error *err)
{
    FL_ASSERT(t && path && (text || src));
    char where[FL_ERRMSG_MAX];
    if (!as_table(t))
        return fl_cfg_error(t, NULL, err, FL_E_INVALID, "cannot set keys in a %s",
                            fl_cfg_type_name(t->type));
    size_t nseg = 0;
    fl_status st = check_path(path, plen, &nseg, err);
    if (st)
        return st;
    int d0 = depth_of(t);
    if (nseg > (size_t)(FL_CFG_MAX_DEPTH - d0))
        return fl_error_set(err, FL_E_INVALID, "%s: nested too deeply (more than %d levels)",
                            msg_path(where, sizeof where, t, path, plen), FL_CFG_MAX_DEPTH);

    /* walk the tables that exist; strings on the way are module selectors */
    fl_cfg *cur = t;
    const char *seg = path, *pend = path + plen;
    for (;;) {
        const char *dot = memchr(seg, '.', (size_t)(pend - seg));
        if (!dot)
            break;
        size_t i = find_key(cur, seg, (size_t)(dot - seg));
        if (i == NOT_FOUND || cur->kids[i]->type == FL_CFG_NIL)
            break; /* a nil is no value: the new tables replace it */
        fl_cfg *c = cur->kids[i];
        if (c->type == FL_CFG_STR && !is_module_key(seg, (size_t)(dot - seg))) {
            if (convert_selector(c)) {
                st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory",
                                  msg_path(where, sizeof where, t, path, plen));
                goto fail;
            }
            c->flags |= F_CONV;
        } else if (!as_table(c)) {
            char at[FL_ERRMSG_MAX];
            msg_path(where, sizeof where, t, path, plen);
            msg_path(at, sizeof at, t, path, (size_t)(dot - path));
            st = fl_error_set(err, FL_E_INVALID, "%s: cannot set: %s is a %s, not a table",
                              where, at, fl_cfg_type_name(c->type));
            goto fail;
        }
        cur = c;
        seg = dot + 1;
    }

    /* the value, then the missing tables around it, then one link into the tree */
    const char *last = pend;
    while (last > path && last[-1] != '.')
        last--;
    fl_cfg *head;
    if (src) {
        if (height_of(src) > FL_CFG_MAX_DEPTH - d0 - (int)nseg) {
            st = fl_error_set(err, FL_E_INVALID, "%s: nested too deeply (more than %d levels)",
                              msg_path(where, sizeof where, t, path, plen), FL_CFG_MAX_DEPTH);
            goto fail;
        }
        head = copy_node(t->alloc, src, last, (size_t)(pend - last));
        if (!head) {
            st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory",
                              msg_path(where, sizeof where, t, path, plen));
            goto fail;
        }
    } else {
        parser ps = { t->alloc, text, text, text + strlen(text),
                      FL_CFG_MAX_DEPTH - d0 - (int)nseg, FL_OK, NULL, 0 };
        head = parse_text(&ps, last, (size_t)(pend - last));
        if (!head) {
            st = parse_failed(&ps, msg_path(where, sizeof where, t, path, plen), err);
            goto fail;
        }
    }
    while (last > seg) {
        const char *e = last - 1, *s = e; /* the key before `last` is [s, e) */
        while (s > seg && s[-1] != '.')
            s--;
        fl_cfg *tb = node_new(t->alloc, FL_CFG_TABLE, s, (size_t)(e - s));
        if (!tb || kids_reserve(tb, 1)) {
            node_free(tb);
            node_free(head);
            st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory",
                              msg_path(where, sizeof where, t, path, plen));
            goto fail;
        }
        attach(tb, head);
        head = tb;
        last = s;
    }
    if (place(cur, head)) {
        st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory",
                          msg_path(where, sizeof where, t, path, plen));
        goto fail;
    }
    finish_conversions(t, path, plen, 0);
    return FL_OK;
fail:
    finish_conversions(t, path, plen, 1);
    return st;
}

fl_status fl_cfg_set(fl_cfg *t, const char *path, const char *text, fl_error *err)
{
    FL_ASSERT(path && text);
    return set_n(t, path, strlen(path), text, NULL, err);
}

fl_status fl_cfg_set_copy(fl_cfg *t, const char *path, const fl_cfg *value, fl_error *err)
{
    FL_ASSERT(path && value);
    return set_n(t, path, strlen(path), NULL, value, err);
}

fl_status fl_cfg_set_arg(fl_cfg *t, const char *arg, fl_error *err)
{
    FL_ASSERT(arg);
    const char *eq = strchr(arg, '=');
    if (!eq)
        return fl_error_set(err, FL_E_INVALID, "bad override \"%.200s\": expected key.path=value",
                            arg);
    return set_n(t, arg, (size_t)(eq - arg), eq + 1, NULL, err);
}

fl_status fl_cfg_merge_text(fl_cfg *t, const char *text, fl_error *err)
{
    FL_ASSERT(t && text);
    char where[FL_ERRMSG_MAX];
    msg_path(where, sizeof where, t, NULL, 0);
    if (!as_table(t))
        return fl_error_set(err, FL_E_INVALID, "%s: cannot merge keys into a %s", where,
                            fl_cfg_type_name(t->type));
    parser ps = { t->alloc, text, text, text + strlen(text), FL_CFG_MAX_DEPTH - depth_of(t),
                  FL_OK, NULL, 0 };
    skip_ws(&ps);
    fl_cfg *v = NULL;
    if (ps.p >= ps.end || *ps.p != '{')
        perr(&ps, FL_E_FORMAT, "expected a table constructor {...}");
    else if ((v = parse_table(&ps, "", 0, 1)) != NULL) {
        skip_ws(&ps);
        if (ps.p < ps.end)
            perr(&ps, FL_E_FORMAT, "unexpected text after '}'");
        else if (v->type == FL_CFG_LIST && v->n_kids) {
            ps.p = text;
            perr(&ps, FL_E_FORMAT, "expected key = value fields, not a list");
        }
    }
    if (ps.st) {
        node_free(v);
        return parse_failed(&ps, where, err);
    }
    size_t fresh = 0;
    for (size_t i = 0; i < v->n_kids; i++)
        fresh += find_key(t, v->kids[i]->key, v->kids[i]->key_len) == NOT_FOUND;
    if (kids_reserve(t, fresh)) {
        node_free(v);
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", where);
    }
    for (size_t i = 0; i < v->n_kids; i++) {
        int failed = place(t, v->kids[i]);
        FL_ASSERT(!failed); /* room reserved above */
    }
    v->n_kids = 0;
    node_free(v);
    return FL_OK;
}

/* Checks t for a put/push (the value lands one level below t). */
static fl_status put_check(fl_cfg *t, const char *key, int want_table, fl_error *err)
{
    FL_ASSERT(t);
    if (want_table ? !as_table(t) : !as_list(t))
        return fl_cfg_error(t, NULL, err, FL_E_INVALID, "cannot %s a %s",
                            want_table ? "set a key in" : "append to", fl_cfg_type_name(t->type));
    if (depth_of(t) >= FL_CFG_MAX_DEPTH)
        return fl_cfg_error(t, key, err, FL_E_INVALID, "nested too deeply (more than %d levels)",
                            FL_CFG_MAX_DEPTH);
    return FL_OK;
}

/* Puts c (NULL: its allocation failed) under key in table t, or appends it to list t. */
static fl_status put_node(fl_cfg *t, const char *key, fl_cfg *c, fl_cfg **outp, fl_error *err)
{
    if (!c)
        return nomem_at(t, key, err);
    if (key) {
        if (place(t, c))
            return nomem_at(t, key, err);
    } else {
        if (kids_reserve(t, 1)) {
            node_free(c);
            return nomem_at(t, key, err);
        }
        attach(t, c);
    }
    if (outp)
        *outp = c;
    return FL_OK;
}

static fl_status put_any(fl_cfg *t, const char *key, fl_cfg_type type, double num, const char *s,
                         fl_cfg **outp, fl_error *err)
{
    fl_status st = put_check(t, key, key != NULL, err);
    if (st)
        return st;
    size_t klen = key ? strlen(key) : 0;
    fl_cfg *c = type == FL_CFG_STR ? new_str(t->alloc, key ? key : "", klen, s, strlen(s))
                                   : node_new(t->alloc, type, key ? key : "", klen);
    if (c) {
        c->num = type == FL_CFG_NUM ? num : 0.0;
        c->b = type == FL_CFG_BOOL && num != 0.0;
    }
    return put_node(t, key, c, outp, err);
}

fl_status fl_cfg_put_nil(fl_cfg *t, const char *key, fl_error *err)
{
    FL_ASSERT(key);
    return put_any(t, key, FL_CFG_NIL, 0, NULL, NULL, err);
}

fl_status fl_cfg_put_bool(fl_cfg *t, const char *key, int v, fl_error *err)
{
    FL_ASSERT(key);
    return put_any(t, key, FL_CFG_BOOL, v ? 1.0 : 0.0, NULL, NULL, err);
}

fl_status fl_cfg_put_num(fl_cfg *t, const char *key, double v, fl_error *err)
{
    FL_ASSERT(t && key);
    if (!isfinite(v))
        return fl_cfg_error(t, key, err, FL_E_INVALID, "expected a finite number, got %g", v);
    return put_any(t, key, FL_CFG_NUM, v, NULL, NULL, err);
}

fl_status fl_cfg_put_str(fl_cfg *t, const char *key, const char *s, fl_error *err)
{
    FL_ASSERT(key && s);
    return put_any(t, key, FL_CFG_STR, 0, s, NULL, err);
}

fl_status fl_cfg_put_table(fl_cfg *t, const char *key, fl_cfg **outp, fl_error *err)
{
    FL_ASSERT(key);
    return put_any(t, key, FL_CFG_TABLE, 0, NULL, outp, err);
}

fl_status fl_cfg_put_list(fl_cfg *t, const char *key, fl_cfg **outp, fl_error *err)
{
    FL_ASSERT(key);
    return put_any(t, key, FL_CFG_LIST, 0, NULL, outp, err);
}

fl_status fl_cfg_push_nil(fl_cfg *list, fl_error *err)
{
    return put_any(list, NULL, FL_CFG_NIL, 0, NULL, NULL, err);
}

fl_status fl_cfg_push_bool(fl_cfg *list, int v, fl_error *err)
{
    return put_any(list, NULL, FL_CFG_BOOL, v ? 1.0 : 0.0, NULL, NULL, err);
}

fl_status fl_cfg_push_num(fl_cfg *list, double v, fl_error *err)
{
    FL_ASSERT(list);
    if (!isfinite(v))
        return fl_cfg_error(list, NULL, err, FL_E_INVALID, "expected a finite number, got %g", v);
    return put_any(list, NULL, FL_CFG_NUM, v, NULL, NULL, err);
}

fl_status fl_cfg_push_str(fl_cfg *list, const char *s, fl_error *err)
{
    FL_ASSERT(s);
    return put_any(list, NULL, FL_CFG_STR, 0, s, NULL, err);
}

fl_status fl_cfg_push_table(fl_cfg *list, fl_cfg **outp, fl_error *err)
{
    return put_any(list, NULL, FL_CFG_TABLE, 0, NULL, outp, err);
}

fl_status fl_cfg_push_list(fl_cfg *list, fl_cfg **outp, fl_error *err)
{
    return put_any(list, NULL, FL_CFG_LIST, 0, NULL, outp, err);
}

/* ---- lookups ----------------------------------------------------------------------------- */

fl_cfg *fl_cfg_get(const fl_cfg *t, const char *key)
{
    FL_ASSERT(key);
    if (!t)
        return NULL;
    size_t i = find_key(t, key, strlen(key));
    return i == NOT_FOUND ? NULL : t->kids[i];
}

fl_cfg *fl_cfg_lookup(const fl_cfg *t, const char *path)
{
    FL_ASSERT(path);
    const char *seg = path;
    for (;;) {
        if (!t)
            return NULL;
        const char *dot = strchr(seg, '.');
        size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
        size_t i = find_key(t, seg, len);
        if (i == NOT_FOUND)
            return NULL;
        if (!dot)
            return t->kids[i];
        t = t->kids[i];
        seg = dot + 1;
    }
}

fl_cfg_type fl_cfg_type_of(const fl_cfg *n) { return n ? n->type : FL_CFG_NIL; }

const char *fl_cfg_type_name(fl_cfg_type type)
{
    switch (type) {
    case FL_CFG_NIL: return "nil";
    case FL_CFG_BOOL: return "bool";
    case FL_CFG_NUM: return "number";
    case FL_CFG_STR: return "string";
    case FL_CFG_LIST: return "list";
    case FL_CFG_TABLE: return "table";
    }
    return "?";
}

int fl_cfg_bool_value(const fl_cfg *n) { return n && n->type == FL_CFG_BOOL && n->b; }
double fl_cfg_num_value(const fl_cfg *n) { return n && n->type == FL_CFG_NUM ? n->num : 0.0; }
const char *fl_cfg_str_value(const fl_cfg *n) { return n && n->type == FL_CFG_STR ? n->str : NULL; }

size_t fl_cfg_len(const fl_cfg *n)
{
    return n && (n->type == FL_CFG_LIST || n->type == FL_CFG_TABLE) ? n->n_kids : 0;
}

fl_cfg *fl_cfg_item(const fl_cfg *n, size_t i) { return i < fl_cfg_len(n) ? n->kids[i] : NULL; }

const char *fl_cfg_key(const fl_cfg *n)
{
    return n && n->parent && n->parent->type == FL_CFG_TABLE ? n->key : NULL;
}

fl_cfg *fl_cfg_parent(const fl_cfg *n) { return n ? n->parent : NULL; }
int fl_cfg_is_default(const fl_cfg *n) { return n && (n->flags & F_DEFAULT); }
int fl_cfg_is_used(const fl_cfg *n) { return n && (n->flags & F_USED); }

/* ---- readers ----------------------------------------------------------------------------- */

/* Accepts key at t and finds its value (*v NULL when absent or nil), marked used. */
static fl_status read_begin(fl_cfg *t, const char *key, fl_cfg **v, fl_error *err)
{
    FL_ASSERT(t && key);
    FL_ASSERT(as_table(t)); /* readers read tables: the root, fl_cfg_table, fl_cfg_module */
    if (accept_key(t, key))
        return nomem_at(t, key, err);
    size_t i = find_key(t, key, strlen(key));
    *v = i == NOT_FOUND || t->kids[i]->type == FL_CFG_NIL ? NULL : t->kids[i];
    if (*v)
        (*v)->flags |= F_USED;
    return FL_OK;
}

/* Puts a reader's default c (NULL: its allocation failed) under its key in t. */
static fl_status put_default(fl_cfg *t, fl_cfg *c, const char *key, fl_error *err)
{
    if (!c)
        return nomem_at(t, key, err);
    c->flags |= F_DEFAULT | F_USED;
    if (place(t, c))
        return nomem_at(t, key, err);
    return FL_OK;
}

static void range_long(char *b, size_t n, long lo, long hi)
{
    if (lo == LONG_MIN && hi == LONG_MAX)
        b[0] = '\0';
    else if (hi == LONG_MAX)
        snprintf(b, n, " >= %ld", lo);
    else if (lo == LONG_MIN)
        snprintf(b, n, " <= %ld", hi);
    else
        snprintf(b, n, " in [%ld, %ld]", lo, hi);
}

static void range_num(char *b, size_t n, double lo, double hi)
{
    char l[64], h[64];
    fmt_num(l, lo);
    fmt_num(h, hi);
    if (isinf(lo) && isinf(hi))
        b[0] = '\0';
    else if (isinf(hi))
        snprintf(b, n, " >= %s", l);
    else if (isinf(lo))
        snprintf(b, n, " <= %s", h);
    else
        snprintf(b, n, " in [%s, %s]", l, h);
}

fl_status fl_cfg_int(fl_cfg *t, const char *key, long def, long lo, long hi, long *outp,
                     fl_error *err)
{
    FL_ASSERT(outp && lo <= def && def <= hi);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        fl_cfg *c = node_new(t->alloc, FL_CFG_NUM, key, strlen(key));
        if (c)
            c->num = (double)def;
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        *outp = def;
        return FL_OK;
    }
    char r[96], want[128];
    range_long(r, sizeof r, lo, hi);
    snprintf(want, sizeof want, "an integer%s", r);
    if (v->type != FL_CFG_NUM)
        return fail_value(t, key, v, err, FL_E_INVALID, want);
    double x = v->num;
    /* (double)LONG_MIN is -2^63 exactly; -(double)LONG_MIN is the first double past LONG_MAX */
    if (!isfinite(x) || x != floor(x) || x < (double)LONG_MIN || x >= -(double)LONG_MIN ||
        (long)x < lo || (long)x > hi)
        return fail_value(t, key, v, err, FL_E_RANGE, want);
    *outp = (long)x;
    return FL_OK;
}

fl_status fl_cfg_num(fl_cfg *t, const char *key, double def, double lo, double hi, double *outp,
                     fl_error *err)
{
    FL_ASSERT(outp && isfinite(def) && lo <= def && def <= hi);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        fl_cfg *c = node_new(t->alloc, FL_CFG_NUM, key, strlen(key));
        if (c)
            c->num = def;
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        *outp = def;
        return FL_OK;
    }
    char r[160], want[192];
    range_num(r, sizeof r, lo, hi);
    snprintf(want, sizeof want, "a number%s", r);
    if (v->type != FL_CFG_NUM)
        return fail_value(t, key, v, err, FL_E_INVALID, want);
    if (!isfinite(v->num) || v->num < lo || v->num > hi)
        return fail_value(t, key, v, err, FL_E_RANGE, want);
    *outp = v->num;
    return FL_OK;
}

fl_status fl_cfg_bool(fl_cfg *t, const char *key, int def, int *outp, fl_error *err)
{
    FL_ASSERT(outp);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        fl_cfg *c = node_new(t->alloc, FL_CFG_BOOL, key, strlen(key));
        if (c)
            c->b = def != 0;
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        *outp = def != 0;
        return FL_OK;
    }
    if (v->type != FL_CFG_BOOL)
        return fail_value(t, key, v, err, FL_E_INVALID, "true or false");
    *outp = v->b;
    return FL_OK;
}

fl_status fl_cfg_str(fl_cfg *t, const char *key, const char *def, const char **outp,
                     fl_error *err)
{
    FL_ASSERT(outp);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        if (!def)
            return fail_missing(t, key, err, "a string");
        fl_cfg *c = new_str(t->alloc, key, strlen(key), def, strlen(def));
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        *outp = c->str;
        return FL_OK;
    }
    if (v->type != FL_CFG_STR && (v->flags & F_TEXT))
        text_to_str(v);
    if (v->type != FL_CFG_STR)
        return fail_value(t, key, v, err, FL_E_INVALID, "a string");
    *outp = v->str;
    return FL_OK;
}

static const char *join_names(char *buf, size_t size, const char *const *names)
{
    sink s = { NULL, buf, size, 0, 0, NULL, NULL };
    for (size_t i = 0; names[i]; i++) {
        if (i)
            out(&s, ", ", 2);
        outs(&s, names[i]);
    }
    return sink_clip(&s);
}

fl_status fl_cfg_enum(fl_cfg *t, const char *key, const char *const *names, int def_index,
                      int *outp, fl_error *err)
{
    FL_ASSERT(names && names[0] && outp);
    int n = 0;
    while (names[n])
        n++;
    FL_ASSERT(def_index < n);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    char list[FL_ERRMSG_MAX / 2], want[FL_ERRMSG_MAX / 2 + 16];
    join_names(list, sizeof list, names);
    if (!v) {
        if (def_index < 0) {
            snprintf(want, sizeof want, "one of %s", list);
            return fail_missing(t, key, err, want);
        }
        const char *d = names[def_index];
        if ((st = put_default(t, new_str(t->alloc, key, strlen(key), d, strlen(d)), key, err)))
            return st;
        *outp = def_index;
        return FL_OK;
    }
    if (v->type != FL_CFG_STR && !(v->flags & F_TEXT)) {
        snprintf(want, sizeof want, "one of %s", list);
        return fail_value(t, key, v, err, FL_E_INVALID, want);
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(v->str, names[i]) == 0) {
            if (v->type != FL_CFG_STR)
                text_to_str(v);
            *outp = i;
            return FL_OK;
        }
    }
    char path[FL_ERRMSG_MAX], val[VALUE_MAX];
    msg_path(path, sizeof path, t, key, strlen(key));
    msg_value(val, sizeof val, v);
    return fl_error_set(err, FL_E_INVALID, "%s: unknown value %s; accepted: %s", path, val, list);
}

fl_status fl_cfg_nums(fl_cfg *t, const char *key, const double *def, int n_def, int n_min,
                      int n_max, double lo, double hi, double *outp, int *n_out, fl_error *err)
{
    FL_ASSERT(outp && n_min >= 0 && n_max >= 1 && n_min <= n_max && (n_out || n_min == n_max));
    if (def) {
        FL_ASSERT(n_def >= n_min && n_def <= n_max);
        for (int i = 0; i < n_def; i++)
            FL_ASSERT(isfinite(def[i]) && def[i] >= lo && def[i] <= hi);
    }
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    char r[160], item_want[192], want[256];
    range_num(r, sizeof r, lo, hi);
    snprintf(item_want, sizeof item_want, "a number%s", r);
    if (n_min == n_max)
        snprintf(want, sizeof want, "a list of %d number%s%s", n_min, n_min == 1 ? "" : "s", r);
    else if (n_max == INT_MAX)
        snprintf(want, sizeof want, "a list of at least %d number%s%s", n_min,
                 n_min == 1 ? "" : "s", r);
    else
        snprintf(want, sizeof want, "a list of %d to %d numbers%s", n_min, n_max, r);
    if (!v) {
        if (!def)
            return fail_missing(t, key, err, want);
        fl_cfg *c = node_new(t->alloc, FL_CFG_LIST, key, strlen(key));
        if (c && kids_reserve(c, (size_t)n_def)) {
            node_free(c);
            c = NULL;
        }
        for (int i = 0; c && i < n_def; i++) {
            fl_cfg *x = node_new(t->alloc, FL_CFG_NUM, "", 0);
            if (!x) {
                node_free(c);
                c = NULL;
                break;
            }
            x->num = def[i];
            x->flags = F_DEFAULT | F_USED;
            attach(c, x);
        }
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        if (n_def)
            memcpy(outp, def, (size_t)n_def * sizeof *def);
        if (n_out)
            *n_out = n_def;
        return FL_OK;
    }
    if (v->type == FL_CFG_NUM && n_min <= 1) {
        if (!isfinite(v->num) || v->num < lo || v->num > hi)
            return fail_value(t, key, v, err, FL_E_RANGE, item_want);
        outp[0] = v->num;
        if (n_out)
            *n_out = 1;
        return FL_OK;
    }
    if (!as_list(v) || v->n_kids < (size_t)n_min || v->n_kids > (size_t)n_max)
        return fail_value(t, key, v, err, FL_E_INVALID, want);
    for (size_t i = 0; i < v->n_kids; i++) {
        const fl_cfg *x = v->kids[i];
        if (x->type != FL_CFG_NUM)
            return fail_value(x, NULL, x, err, FL_E_INVALID, item_want);
        if (!isfinite(x->num) || x->num < lo || x->num > hi)
            return fail_value(x, NULL, x, err, FL_E_RANGE, item_want);
    }
    for (size_t i = 0; i < v->n_kids; i++)
        outp[i] = v->kids[i]->num;
    if (n_out)
        *n_out = (int)v->n_kids;
    return FL_OK;
}

fl_status fl_cfg_table(fl_cfg *t, const char *key, fl_cfg **child, fl_error *err)
{
    FL_ASSERT(child);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        fl_cfg *c = node_new(t->alloc, FL_CFG_TABLE, key, strlen(key));
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        *child = c;
        return FL_OK;
    }
    if (!as_table(v))
        return fail_value(t, key, v, err, FL_E_INVALID, "a table");
    *child = v;
    return FL_OK;
}

fl_status fl_cfg_list(fl_cfg *t, const char *key, fl_cfg **list, fl_error *err)
{
    FL_ASSERT(list);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        fl_cfg *c = node_new(t->alloc, FL_CFG_LIST, key, strlen(key));
        if ((st = put_default(t, c, key, err)) != FL_OK)
            return st;
        *list = c;
        return FL_OK;
    }
    if (!as_list(v))
        return fail_value(t, key, v, err, FL_E_INVALID, "a list");
    *list = v;
    return FL_OK;
}

#define MODULE_WANT "a module name or a table with module = name"

/* The module in an existing slot s (a table value or a list item, not nil). */
static fl_status module_in(fl_cfg *s, const char *def_name, const char **name, fl_cfg **opts,
                           fl_error *err)
{
    if (s->type == FL_CFG_STR) {
        if (convert_selector(s))
            return nomem_at(s, NULL, err);
    } else if (!as_table(s)) {
        return fail_value(s, NULL, s, err, FL_E_INVALID, MODULE_WANT);
    }
    fl_cfg *m;
    fl_status st = read_begin(s, "module", &m, err);
    if (st)
        return st;
    if (!m) {
        if (!def_name)
            return fail_missing(s, "module", err, "a module name");
        m = new_str(s->alloc, "module", 6, def_name, strlen(def_name));
        size_t i = find_key(s, "module", 6); /* a nil there */
        if (!m || (i == NOT_FOUND && kids_reserve(s, 1))) {
            node_free(m);
            return nomem_at(s, "module", err);
        }
        m->flags |= F_DEFAULT | F_USED;
        if (i != NOT_FOUND) {
            node_free(s->kids[i]);
            s->kids[i] = m;
            m->parent = s;
        } else { /* the name goes first, where a reader of the printed tree looks */
            memmove(s->kids + 1, s->kids, s->n_kids * sizeof *s->kids);
            s->kids[0] = m;
            s->n_kids++;
            m->parent = s;
        }
    } else if (m->type != FL_CFG_STR) {
        if (!(m->flags & F_TEXT))
            return fail_value(s, "module", m, err, FL_E_INVALID, "a module name (a string)");
        text_to_str(m);
    }
    s->flags |= F_USED;
    *name = m->str;
    *opts = s;
    return FL_OK;
}

fl_status fl_cfg_module(fl_cfg *t, const char *key, const char *def_name, const char **name,
                        fl_cfg **opts, fl_error *err)
{
    FL_ASSERT(name && opts);
    fl_cfg *v;
    fl_status st = read_begin(t, key, &v, err);
    if (st)
        return st;
    if (!v) {
        if (!def_name)
            return fail_missing(t, key, err, "a module name");
        v = node_new(t->alloc, FL_CFG_TABLE, key, strlen(key));
        if ((st = put_default(t, v, key, err)) != FL_OK)
            return st;
    }
    return module_in(v, def_name, name, opts, err);
}

fl_status fl_cfg_item_module(fl_cfg *list, size_t i, const char **name, fl_cfg **opts,
                             fl_error *err)
{
    FL_ASSERT(list && list->type == FL_CFG_LIST && i < list->n_kids && name && opts);
    fl_cfg *s = list->kids[i];
    if (s->type == FL_CFG_NIL)
        return fail_missing(s, NULL, err, "a module name");
    return module_in(s, NULL, name, opts, err);
}

void fl_cfg_mark_used(fl_cfg *n)
{
    FL_ASSERT(n);
    n->flags |= F_USED;
    for (size_t i = 0; i < n->n_kids; i++)
        fl_cfg_mark_used(n->kids[i]);
}

/* ---- the unknown-key check --------------------------------------------------------------- */

static const fl_cfg *first_unused(const fl_cfg *n)
{
    for (size_t i = 0; i < n->n_kids; i++) {
        const fl_cfg *k = n->kids[i];
        if (n->type == FL_CFG_TABLE && !(k->flags & F_USED))
            return k;
        const fl_cfg *u = first_unused(k);
        if (u)
            return u;
    }
    return NULL;
}

fl_status fl_cfg_check_unused(const fl_cfg *root, fl_error *err)
{
    FL_ASSERT(root);
    const fl_cfg *u = first_unused(root);
    if (!u)
        return FL_OK;
    char path[FL_ERRMSG_MAX], acc[FL_ERRMSG_MAX];
    msg_path(path, sizeof path, u, NULL, 0);
    msg_accepted(acc, sizeof acc, u->parent);
    return fl_error_set(err, FL_E_INVALID, "%s: unknown key; accepted: %s", path, acc);
}
