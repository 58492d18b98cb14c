/* `fifolab eval`: placeholder (being written). */
#include <stdio.h>

#include "core/cli.h"

int fl_cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab eval: not built yet\n");
    return 1;
}
