/* `fifolab run`, `resume`, `plan`: placeholder (being written). */
#include <stdio.h>

#include "core/cli.h"

int fl_cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab run: not built yet\n");
    return 1;
}

int fl_cmd_resume(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab resume: not built yet\n");
    return 1;
}

int fl_cmd_plan(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab plan: not built yet\n");
    return 1;
}
