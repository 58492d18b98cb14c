/* Status codes and error messages: every fallible fifolab call returns an fl_status
 * and, where it was given an fl_error, says in words which input was at fault. */
#ifndef FL_STATUS_H
#define FL_STATUS_H

#include <stddef.h>

typedef enum fl_status {
    FL_OK = 0,
    FL_E_NOMEM = -1,       /* an allocation failed */
    FL_E_INVALID = -2,     /* an argument or option value is not acceptable */
    FL_E_SHAPE = -3,       /* tensor shapes, strides or ranks do not fit together */
    FL_E_DTYPE = -4,       /* a dtype the operation does not take */
    FL_E_DEVICE = -5,      /* tensors on the wrong device, or a device call failed */
    FL_E_IO = -6,          /* reading or writing a file failed */
    FL_E_FORMAT = -7,      /* a file or text is malformed */
    FL_E_RANGE = -8,       /* a value or index is out of its range */
    FL_E_NUMERIC = -9,     /* a numerical failure: singular matrix, not positive definite, NaN */
    FL_E_UNSUPPORTED = -10, /* the backend or build lacks this operation */
    FL_E_INTERRUPTED = -11  /* stopped on request (a signal); the work can be resumed */
} fl_status;

#define FL_ERRMSG_MAX 512

/* A caller-owned error record. Functions that take an `fl_error *` fill it on failure
 * (the pointer may be NULL when the caller only wants the code). Not shared between
 * threads: give each thread its own. */
typedef struct fl_error {
    fl_status code;
    char msg[FL_ERRMSG_MAX];
} fl_error;

/* Short fixed name of a status ("out of memory", "invalid argument", ...). */
const char *fl_status_str(fl_status s);

/* Clears err to FL_OK with an empty message. err may be NULL. */
void fl_error_clear(fl_error *err);

/* Records `code` and a printf-style message in err (if non-NULL) and returns code, so
 * callers can write `return fl_error_set(err, FL_E_SHAPE, "a: expected ...");`.
 * The message should name the file, key, tensor or value at fault. */
fl_status fl_error_set(fl_error *err, fl_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an already-set message, to add context on the way up
 * (e.g. the file name around a parser's message). Returns err->code; with err NULL there is
 * no code to return, and it returns FL_E_INVALID, so `return fl_error_prefix(err, ...)`
 * after a failure never turns into success. */
fl_status fl_error_prefix(fl_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message, or the status name when no message was set. Never NULL. */
const char *fl_error_msg(const fl_error *err);

/* Assertions are for programmer errors only (broken invariants a user cannot cause);
 * bad input must come back as a status. FL_ASSERT stays on in release builds. */
void fl_assert_fail_(const char *expr, const char *file, int line) __attribute__((noreturn));
#define FL_ASSERT(x) ((x) ? (void)0 : fl_assert_fail_(#x, __FILE__, __LINE__))

#endif
