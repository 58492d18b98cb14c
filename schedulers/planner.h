/* FIFO window planners: how the diagonal queue is cut into windows. fifo knows planners
 * only through this interface, so a new planner is a new file plus a line in planner.c. */
#ifndef FL_PLANNER_H
#define FL_PLANNER_H

#include "core/status.h"

/* A window of the queue: positions [start, start + len); of those, positions
 * [write_start, write_start + write_len) take the window's output (a subrange). */
typedef struct fl_plan_window {
    int start, len, write_start, write_len;
} fl_plan_window;

#define FL_PLANNER_MAX_WINDOWS 1024

/* layout(f, n, ...): for window length f and n partitions (S = f * n diagonal steps), sets
 * *context, the number of positions before the diagonal (at the head) that are only read,
 * never written, and up to `cap` windows. The queue then has context + f * n positions;
 * the scheduler checks that every diagonal position is written exactly once and no
 * context position is written, so a planner cannot silently break the diagonal. */
typedef struct fl_planner_vt {
    const char *name;
    const char *summary;
    fl_status (*layout)(int f, int n, int *context, fl_plan_window *windows, int *count,
                        int cap, fl_error *err);
} fl_planner_vt;

/* The registered planners by name; NULL when unknown. */
const fl_planner_vt *fl_planner_find(const char *name);
/* NULL-terminated list of planner names (for messages and --help). */
const char *const *fl_planner_names(void);

extern const fl_planner_vt fl_planner_partition;
extern const fl_planner_vt fl_planner_lookahead;

#endif
