/* Option values of the fifolab CLI, parsed the same way by every subcommand. */
#include "core/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int fl_cli_int(const char *cmd, const char *opt, const char *text, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long v = text ? strtoll(text, &end, 10) : 0;
    if (!text || !*text || errno || *end || v < lo || v > hi) {
        if (hi == LLONG_MAX)
            fprintf(stderr, "fifolab %s: %s: expected an integer >= %lld, got \"%s\"\n", cmd, opt, lo,
                    text ? text : "");
        else
            fprintf(stderr, "fifolab %s: %s: expected an integer in [%lld, %lld], got \"%s\"\n", cmd, opt, lo,
                    hi, text ? text : "");
        return -1;
    }
    *out = v;
    return 0;
}

int fl_cli_number(const char *cmd, const char *opt, const char *text, double lo, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = text ? strtod(text, &end) : 0;
    if (!text || !*text || errno || *end || !(v >= lo) || v == HUGE_VAL) {
        fprintf(stderr, "fifolab %s: %s: expected a number >= %g, got \"%s\"\n", cmd, opt, lo, text ? text : "");
        return -1;
    }
    *out = v;
    return 0;
}
