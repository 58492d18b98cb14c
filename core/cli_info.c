/* `fifolab info` and `fifolab summarize`: placeholder (being written). */
#include <stdio.h>

#include "core/cli.h"

int fl_cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab info: not built yet\n");
    return 1;
}

int fl_cmd_summarize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab summarize: not built yet\n");
    return 1;
}
