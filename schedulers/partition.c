/* Latent partitioning: n disjoint windows of f frames over the diagonal, all written. */
#include "schedulers/planner.h"

static fl_status partition_layout(int f, int n, int *context, fl_plan_window *w, int *count,
                                  int cap, fl_error *err)
{
    if (n > cap)
        return fl_error_set(err, FL_E_RANGE, "partition: %d partitions, at most %d", n, cap);
    *context = 0;
    for (int r = 0; r < n; r++)
        w[r] = (fl_plan_window){ r * f, f, r * f, f };
    *count = n;
    return FL_OK;
}

const fl_planner_vt fl_planner_partition = {
    "partition", "n disjoint windows of f frames; every frame written", partition_layout
};
