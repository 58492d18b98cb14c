/* Lookahead denoising: c = floor(f/2) context positions before the diagonal; 2n windows of
 * f frames, each writing only its noisier back part, so every written frame sees c cleaner
 * frames ahead of it. The diagonal's n*f positions are cut into 2n written segments as
 * evenly as possible (all f/2 for even f; alternating ceil and floor for odd f, as
 * Open-Sora Plan's f = 17 path), and each window ends where its segment ends. */
#include "schedulers/planner.h"

static fl_status lookahead_layout(int f, int n, int *context, fl_plan_window *w, int *count,
                                  int cap, fl_error *err)
{
    if (f < 2)
        return fl_error_set(err, FL_E_RANGE, "lookahead: needs a window of at least 2 frames, got %d", f);
    if (2 * n > cap)
        return fl_error_set(err, FL_E_RANGE, "lookahead: %d partitions, at most %d", n, cap / 2);
    int c = f / 2, segs = 2 * n, total = f * n;
    *context = c;
    int end = c;
    for (int r = 0; r < segs; r++) {
        /* segment r ends at c + round-up share of the diagonal */
        int seg_end = c + (int)(((long long)total * (r + 1) + segs - 1) / segs);
        int len = seg_end - end;
        w[r] = (fl_plan_window){ seg_end - f, f, end, len };
        end = seg_end;
    }
    *count = segs;
    return FL_OK;
}

const fl_planner_vt fl_planner_lookahead = {
    "lookahead", "2n windows of f frames at stride f/2 after f/2 context frames; back half written",
    lookahead_layout
};
