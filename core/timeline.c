/* The prompt timeline of core/timeline.h. */
#include "core/timeline.h"

#include <stdlib.h>
#include <string.h>

void fl_timeline_free(fl_timeline *tl)
{
    for (int i = 0; i < tl->nprompts; i++)
        free(tl->prompts[i]);
    free(tl->prompts);
    free(tl->seg_start);
    free(tl->seg_cond);
    memset(tl, 0, sizeof *tl);
}

/* Reads segment i: its prompt text and frame count (-1: to the end, last only). */
static fl_status read_segment(fl_cfg *list, size_t i, size_t n, const char **text, long *frames,
                              fl_error *err)
{
    fl_cfg *item = fl_cfg_item(list, i);
    fl_status st;
    int last = i + 1 == n;
    if (fl_cfg_type_of(item) == FL_CFG_TABLE) {
        if ((st = fl_cfg_str(item, "prompt", NULL, text, err)))
            return st;
        if (!last && fl_cfg_type_of(fl_cfg_get(item, "frames")) == FL_CFG_NIL)
            return fl_cfg_error(item, "frames", err, FL_E_INVALID, "missing (only the last segment may omit it)");
        return fl_cfg_int(item, "frames", last ? 0 : 1, last ? 0 : 1, INT32_MAX, frames, err); /* last: 0 = to the end */
    }
    if (fl_cfg_type_of(item) == FL_CFG_LIST && (fl_cfg_len(item) == 2 || (last && fl_cfg_len(item) == 1))) {
        const fl_cfg *p = fl_cfg_item(item, 0), *f = fl_cfg_len(item) == 2 ? fl_cfg_item(item, 1) : NULL;
        double v = f ? fl_cfg_num_value(f) : -1;
        if (!fl_cfg_str_value(p))
            return fl_cfg_error(item, NULL, err, FL_E_INVALID, "expected {\"prompt text\", frames}, the prompt is a %s",
                                fl_cfg_type_name(fl_cfg_type_of(p)));
        if (f && (fl_cfg_type_of(f) != FL_CFG_NUM || v != (double)(long)v || v < 1 || v > INT32_MAX))
            return fl_cfg_error(item, NULL, err, FL_E_RANGE, "frames: expected an integer in [1, %d]", INT32_MAX);
        fl_cfg_mark_used(item);
        *text = fl_cfg_str_value(p);
        *frames = f ? (long)v : -1;
        return FL_OK;
    }
    return fl_cfg_error(item, NULL, err, FL_E_INVALID,
                        "expected {prompt = \"...\", frames = N} or {\"...\", N}, got a %s",
                        fl_cfg_type_name(fl_cfg_type_of(item)));
}

fl_status fl_timeline_read(fl_cfg *root, fl_timeline *tl, fl_error *err)
{
    memset(tl, 0, sizeof *tl);
    static const char *const modes[] = { "frame", "queue", NULL };
    int mode;
    fl_cfg *list;
    fl_status st;
    if ((st = fl_cfg_list(root, "timeline", &list, err)) ||
        (st = fl_cfg_enum(root, "timeline_switch", modes, 0, &mode, err)))
        return st;
    tl->mode = (fl_timeline_switch)mode;
    size_t n = fl_cfg_len(list);
    if (n == 0)
        return FL_OK;
    if (n > 1u << 20)
        return fl_cfg_error(root, "timeline", err, FL_E_RANGE, "more than %u segments", 1u << 20);
    tl->prompts = calloc(n, sizeof *tl->prompts);
    tl->seg_start = calloc(n, sizeof *tl->seg_start);
    tl->seg_cond = calloc(n, sizeof *tl->seg_cond);
    if (!tl->prompts || !tl->seg_start || !tl->seg_cond) {
        fl_timeline_free(tl);
        return fl_error_set(err, FL_E_NOMEM, "timeline of %zu segments", n);
    }
    int64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *text;
        long frames;
        if ((st = read_segment(list, i, n, &text, &frames, err))) {
            fl_timeline_free(tl);
            return st;
        }
        int id = 0;
        while (id < tl->nprompts && strcmp(tl->prompts[id], text))
            id++;
        if (id == tl->nprompts && !(tl->prompts[tl->nprompts++] = strdup(text))) {
            fl_timeline_free(tl);
            return fl_error_set(err, FL_E_NOMEM, "timeline prompt");
        }
        tl->seg_start[i] = at;
        tl->seg_cond[i] = id;
        tl->nseg = (int)i + 1;
        at += frames > 0 ? frames : 0;
    }
    return FL_OK;
}

int32_t fl_timeline_cond(const fl_timeline *tl, int64_t k)
{
    if (tl->nseg == 0 || k <= 0)
        return tl->nseg ? tl->seg_cond[0] : 0;
    int lo = 0, hi = tl->nseg - 1; /* the last segment starting at or before k */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (tl->seg_start[mid] <= k)
            lo = mid;
        else
            hi = mid - 1;
    }
    return tl->seg_cond[lo];
}
