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

const char *const *fl_planner_names(void)
{
    static const char *names[NPLANNERS + 1];
    for (size_t i = 0; i < NPLANNERS; i++)
        names[i] = planners[i]->name;
    names[NPLANNERS] = NULL;
    return names;
}
