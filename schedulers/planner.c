/* The planner registry. */
#include "schedulers/planner.h"

#include <string.h>

static const fl_planner_vt *const planners[] = { &fl_planner_partition, &fl_planner_lookahead };
#define NPLANNERS (sizeof planners / sizeof planners[0])

const fl_planner_vt *fl_planner_find(const char *name)
{
    for (size_t i = 0; name && i < NPLANNERS; i++)
        if (strcmp(planners[i]->name, name) == 0)
            return planners[i];
    return NULL;
}

/* A constant list (no lazily filled static, so no race between threads); test_schedulers
 * checks it against the vtables' own names. */
const char *const *fl_planner_names(void)
{
    static const char *const names[] = { "partition", "lookahead", NULL };
    _Static_assert(sizeof names / sizeof names[0] == NPLANNERS + 1, "one name per planner");
    return names;
}
