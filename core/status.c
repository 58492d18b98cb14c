/* Status names and the error record helpers. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fl_status_str(fl_status s)
{
    switch (s) {
    case FL_OK: return "ok";
    case FL_E_NOMEM: return "out of memory";
    case FL_E_INVALID: return "invalid argument";
    case FL_E_SHAPE: return "shape mismatch";
    case FL_E_DTYPE: return "unsupported dtype";
    case FL_E_DEVICE: return "device error";
    case FL_E_IO: return "I/O error";
    case FL_E_FORMAT: return "malformed input";
    case FL_E_RANGE: return "out of range";
    case FL_E_NUMERIC: return "numerical failure";
    case FL_E_UNSUPPORTED: return "unsupported operation";
    case FL_E_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

void fl_error_clear(fl_error *err)
{
    if (!err)
        return;
    err->code = FL_OK;
    err->msg[0] = '\0';
}

fl_status fl_error_set(fl_error *err, fl_status code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

fl_status fl_error_prefix(fl_error *err, const char *fmt, ...)
{
    if (!err)
        return FL_E_INVALID; /* the code is lost with the record, but never the failure */
    char buf[2 * FL_ERRMSG_MAX + 2]; /* prefix (< MAX) + ": " + old (< MAX) + NUL */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, FL_ERRMSG_MAX, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n >= FL_ERRMSG_MAX ? FL_ERRMSG_MAX - 1 : (size_t)n;
    const char *old = err->msg[0] ? err->msg : fl_status_str(err->code);
    size_t olen = strlen(old);
    memcpy(buf + len, ": ", 2);
    memcpy(buf + len + 2, old, olen + 1);
    /* a message too long for the record is clipped, keeping the outer context */
    size_t total = len + 2 + olen;
    if (total >= FL_ERRMSG_MAX)
        total = FL_ERRMSG_MAX - 1;
    memcpy(err->msg, buf, total);
    err->msg[total] = '\0';
    return err->code;
}

const char *fl_error_msg(const fl_error *err)
{
    if (!err)
        return "";
    return err->msg[0] ? err->msg : fl_status_str(err->code);
}

void fl_assert_fail_(const char *expr, const char *file, int line)
{
    fprintf(stderr, "fifolab: internal error: assertion `%s' failed at %s:%d\n", expr, file, line);
    abort();
}
