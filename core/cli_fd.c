/* `fifolab fd`: placeholder until eval/ lands (being written). */
#include <stdio.h>

#include "core/cli.h"

int fl_cmd_fd(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "fifolab fd: not built yet\n");
    return 1;
}
