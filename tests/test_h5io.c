/* cmocka suite for core/h5io: the HDF5 lock (recursive, exclusive, used from several threads
 * at once), attributes of every kind (variable and fixed strings, int64, float64; replaced,
 * overwritten in place, also in SWMR-write mode), text datasets, row datasets (shape,
 * chunking, filters, growth, overwrite, range errors), and fl_state <-> file by
 * write-then-rename: a round trip is bit-exact, and a failed rename, a full file-size limit
 * or a crash in the middle of writing leaves the old file intact. Temporary files live in a
 * mkdtemp directory removed at the end. */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/h5io.h"
#include "tests/tmpdir.h"
#include "core/state.h"

static char tmp[] = "/tmp/fl_test_h5io_XXXXXX";

static void path_in(char *out, size_t cap, const char *name) { fl_test_path(out, cap, tmp, name); }

static int setup(void **unused)
{
    (void)unused;
    if (!mkdtemp(tmp))
        return -1;
    fl_h5_lock(); /* initialises HDF5 and silences its error printing */
    fl_h5_unlock();
    return 0;
}

static int teardown(void **unused)
{
    (void)unused;
    return fl_test_rm_tree(tmp);
}

static void assert_msg_has(const fl_error *e, const char *needle)
{
    if (!strstr(e->msg, needle))
        fail_msg("error message \"%s\" does not contain \"%s\"", e->msg, needle);
}

static hid_t new_file(const char *name)
{
    char p[512];
    path_in(p, sizeof p, name);
    fl_h5_lock();
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(f >= 0);
    return f;
}

static void close_file(hid_t f)
{
    fl_h5_lock();
    assert_true(H5Fclose(f) >= 0);
    fl_h5_unlock();
}

static int file_exists(const char *p)
{
    return access(p, F_OK) == 0;
}

static void sleep_ms(int ms)
{
    struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

/* ---- the lock ---------------------------------------------------------------------- */

static void test_lock_silences_hdf5_errors(void **unused)
{
    (void)unused;
    fl_h5_lock();
    H5E_auto2_t func = (H5E_auto2_t)1;
    void *data = NULL;
    assert_true(H5Eget_auto2(H5E_DEFAULT, &func, &data) >= 0);
    fl_h5_unlock();
    assert_null(func);
}

typedef struct blocked_call {
    hid_t obj;
    volatile int done;
    fl_status st;
    pthread_mutex_t mu;
} blocked_call;

static void *attr_in_thread(void *p)
{
    blocked_call *c = p;
    fl_error e;
    fl_status st = fl_h5_attr_i64(c->obj, "from_thread", 7, &e);
    pthread_mutex_lock(&c->mu);
    c->st = st;
    c->done = 1;
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int call_done(blocked_call *c)
{
    pthread_mutex_lock(&c->mu);
    int d = c->done;
    pthread_mutex_unlock(&c->mu);
    return d;
}

/* The lock is recursive (taking it twice in one thread does not deadlock) and excludes
 * other threads until released as often as taken. */
static void test_lock_recursive_and_exclusive(void **unused)
{
    (void)unused;
    alarm(60); /* a lock that is not recursive would hang here: fail instead */
    hid_t f = new_file("lock.h5");
    blocked_call c = { .obj = f, .done = 0, .st = FL_E_IO };
    pthread_mutex_init(&c.mu, NULL);
    fl_h5_lock();
    fl_h5_lock();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, attr_in_thread, &c), 0);
    sleep_ms(200);
    assert_int_equal(call_done(&c), 0); /* held twice: the other thread waits */
    fl_h5_unlock();
    sleep_ms(200);
    assert_int_equal(call_done(&c), 0); /* still held once */
    fl_h5_unlock();
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.done, 1);
    assert_int_equal(c.st, FL_OK);
    int64_t v = 0;
    assert_int_equal(fl_h5_get_attr_i64(f, "from_thread", &v, NULL), FL_OK);
    assert_int_equal(v, 7);
    close_file(f);
    pthread_mutex_destroy(&c.mu);
    alarm(0);
}

/* Several threads use HDF5 at once through the h5io calls, each on its own files: all
 * their results are right (HDF5 here is not thread-safe; only the lock makes this work). */
enum { NTHREADS = 4, THREAD_ROUNDS = 20 };

typedef struct worker {
    int id;
    int failures;
    char msg[FL_ERRMSG_MAX + 64];
} worker;

static void worker_fail(worker *w, const char *what, const fl_error *e)
{
    if (!w->failures++)
        snprintf(w->msg, sizeof w->msg, "thread %d: %s: %s", w->id, what, e ? e->msg : "");
}

static void *worker_main(void *p)
{
    worker *w = p;
    for (int r = 0; r < THREAD_ROUNDS; r++) {
        char path[512], name[64];
        snprintf(name, sizeof name, "thread%d_%d.h5", w->id, r);
        snprintf(path, sizeof path, "%s/%s", tmp, name);
        fl_error e;
        fl_h5_lock();
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        fl_h5_unlock();
        if (f < 0) {
            worker_fail(w, "create", NULL);
            continue;
        }
        int64_t inner[2] = { 3, 5 };
        hid_t d = -1;
        double rows[4][15];
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 15; k++)
                rows[i][k] = w->id * 1000 + r * 100 + i * 15 + k + 0.25;
        char text[64];
        snprintf(text, sizeof text, "thread %d round %d", w->id, r);
        if (fl_h5_attr_i64(f, "id", w->id * 100 + r, &e) || fl_h5_attr_str(f, "who", text, &e) ||
            fl_h5_attr_f64(f, "x", w->id + r / 8.0, &e) || fl_h5_write_text(f, "text", text, &e) ||
            fl_h5_create_rows(f, "g/rows", H5T_NATIVE_DOUBLE, 2, inner, 2, 1, &d, &e) ||
            fl_h5_write_rows(d, H5T_NATIVE_DOUBLE, 0, 2, rows[0], &e) ||
            fl_h5_write_rows(d, H5T_NATIVE_DOUBLE, 2, 2, rows[2], &e))
            worker_fail(w, "write", &e);
        double back[4][15];
        int64_t id = -1;
        double x = 0;
        char who[64] = "", *t = NULL;
        if (fl_h5_read_rows(d, H5T_NATIVE_DOUBLE, 0, 4, back, &e) || fl_h5_get_attr_i64(f, "id", &id, &e) ||
            fl_h5_get_attr_f64(f, "x", &x, &e) || fl_h5_get_attr_str(f, "who", who, sizeof who, &e) ||
            fl_h5_read_text(f, "text", &t, &e))
            worker_fail(w, "read", &e);
        else if (memcmp(back, rows, sizeof rows) || id != w->id * 100 + r || x != w->id + r / 8.0 ||
                 strcmp(who, text) || strcmp(t, text) || fl_h5_rows(d) != 4)
            worker_fail(w, "values differ", NULL);
        free(t);
        fl_h5_lock();
        if (d >= 0)
            H5Dclose(d);
        H5Fclose(f);
        fl_h5_unlock();
        /* a state file too */
        fl_state *st = fl_state_new(), *in = NULL;
        snprintf(path, sizeof path, "%s/state%d_%d.h5", tmp, w->id, r);
        fl_state_put(st, "a/b", FL_STATE_F64, rows, 60, NULL);
        fl_state_put_i64(st, "who", w->id, NULL);
        if (fl_state_save_file(st, path, NULL, &e) || fl_state_load_file(path, &in, &e))
            worker_fail(w, "state", &e);
        else {
            double sb[60];
            int64_t who_i = -1;
            if (fl_state_get(in, "a/b", FL_STATE_F64, sb, 60, &e) || fl_state_get_i64(in, "who", &who_i, &e) ||
                memcmp(sb, rows, sizeof sb) || who_i != w->id)
                worker_fail(w, "state values", &e);
        }
        fl_state_free(in);
        fl_state_free(st);
        unlink(path);
        snprintf(path, sizeof path, "%s/%s", tmp, name);
        unlink(path);
    }
    return NULL;
}

static void test_lock_threads_concurrently(void **unused)
{
    (void)unused;
    pthread_t th[NTHREADS];
    worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker){ .id = i, .failures = 0, .msg = "" };
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < NTHREADS; i++)
        if (w[i].failures)
            fail_msg("%d failures; first: %s", w[i].failures, w[i].msg);
}

/* ---- attributes -------------------------------------------------------------------- */

/* The stored type of attribute `name`: class, size, variable-length, character set. */
static void attr_type(hid_t obj, const char *name, H5T_class_t *cls, size_t *size, int *vlen,
                      H5T_cset_t *cset)
{
    fl_h5_lock();
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    assert_true(a >= 0);
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    assert_int_equal(H5Sget_simple_extent_type(sp), H5S_SCALAR);
    *cls = H5Tget_class(t);
    *size = H5Tget_size(t);
    *vlen = *cls == H5T_STRING ? H5Tis_variable_str(t) > 0 : 0;
    if (cset)
        *cset = *cls == H5T_STRING ? H5Tget_cset(t) : H5T_CSET_ERROR;
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    fl_h5_unlock();
}

static int nattrs(hid_t obj)
{
    fl_h5_lock();
    H5O_info_t info;
    assert_true(H5Oget_info2(obj, &info, H5O_INFO_NUM_ATTRS) >= 0);
    fl_h5_unlock();
    return (int)info.num_attrs;
}

static void test_attr_str_roundtrip(void **unused)
{
    (void)unused;
    hid_t f = new_file("attr_str.h5");
    fl_h5_lock();
    hid_t g = H5Gcreate2(f, "grp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    fl_h5_unlock();
    size_t big_n = 10000;
    char *big = malloc(big_n + 1), *back = malloc(big_n + 1);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (char)('a' + i % 26);
    big[big_n] = 0;
    const char *values[] = { "", "plain", "caf\xc3\xa9 \xe2\x98\x95 \xe6\x97\xa5\xe6\x9c\xac", "line1\nline2\t\"q\"", big };
    hid_t objs[2] = { f, g };
    fl_error e;
    for (int o = 0; o < 2; o++)
        for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
            assert_int_equal(fl_h5_attr_str(objs[o], "s", values[i], &e), FL_OK);
            memset(back, 0x7f, big_n + 1);
            assert_int_equal(fl_h5_get_attr_str(objs[o], "s", back, big_n + 1, &e), FL_OK);
            assert_string_equal(back, values[i]);
            assert_int_equal(nattrs(objs[o]), 1); /* replaced, not added */
        }
    H5T_class_t cls;
    size_t size;
    int vlen;
    H5T_cset_t cset;
    attr_type(f, "s", &cls, &size, &vlen, &cset);
    assert_int_equal(cls, H5T_STRING);
    assert_true(vlen);
    assert_int_equal(cset, H5T_CSET_UTF8);
    /* clipped to the buffer, always terminated */
    assert_int_equal(fl_h5_attr_str(f, "s", "abcdef", &e), FL_OK);
    char small[4];
    assert_int_equal(fl_h5_get_attr_str(f, "s", small, sizeof small, &e), FL_OK);
    assert_string_equal(small, "abc");
    free(big);
    free(back);
    fl_h5_lock();
    H5Gclose(g);
    fl_h5_unlock();
    close_file(f);
}

static void test_attr_numbers_roundtrip(void **unused)
{
    (void)unused;
    hid_t f = new_file("attr_num.h5");
    fl_error e;
    const int64_t ints[] = { 0, 1, -1, INT64_MIN, INT64_MAX, (int64_t)1 << 53 | 1 };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        assert_int_equal(fl_h5_attr_i64(f, "i", ints[i], &e), FL_OK);
        int64_t v = 12345;
        assert_int_equal(fl_h5_get_attr_i64(f, "i", &v, &e), FL_OK);
        assert_true(v == ints[i]);
    }
    const uint64_t bits[] = { 0x7ff8000000abcdefull, 0x8000000000000000ull, 1, 0x7ff0000000000000ull,
                              0x3fb999999999999aull, 0xc00921fb54442d18ull };
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        double d, v = 0;
        memcpy(&d, &bits[i], 8);
        assert_int_equal(fl_h5_attr_f64(f, "d", d, &e), FL_OK);
        assert_int_equal(fl_h5_get_attr_f64(f, "d", &v, &e), FL_OK);
        assert_memory_equal(&v, &bits[i], 8);
    }
    assert_int_equal(nattrs(f), 2);
    H5T_class_t cls;
    size_t size;
    int vlen;
    attr_type(f, "i", &cls, &size, &vlen, NULL);
    assert_int_equal(cls, H5T_INTEGER);
    assert_int_equal(size, 8);
    attr_type(f, "d", &cls, &size, &vlen, NULL);
    assert_int_equal(cls, H5T_FLOAT);
    assert_int_equal(size, 8);
    /* an integer attribute of another width (as h5py may write) reads as int64 */
    fl_h5_lock();
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "i16", H5T_STD_I16BE, sp, H5P_DEFAULT, H5P_DEFAULT);
    short s16 = -1234;
    assert_true(H5Awrite(a, H5T_NATIVE_SHORT, &s16) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    fl_h5_unlock();
    int64_t v;
    assert_int_equal(fl_h5_get_attr_i64(f, "i16", &v, &e), FL_OK);
    assert_int_equal(v, -1234);
    close_file(f);
}

static void test_attr_read_errors_name_the_attribute(void **unused)
{
    (void)unused;
    hid_t f = new_file("attr_err.h5");
    fl_error e;
    assert_int_equal(fl_h5_attr_str(f, "text", "x", &e), FL_OK);
    assert_int_equal(fl_h5_attr_i64(f, "count", 3, &e), FL_OK);
    assert_int_equal(fl_h5_attr_f64(f, "ratio", 0.5, &e), FL_OK);
    int64_t i = 99;
    double d = 99;
    char buf[16] = "untouched";
    assert_int_equal(fl_h5_get_attr_i64(f, "nope", &i, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "attribute nope: missing");
    assert_int_equal(fl_h5_get_attr_str(f, "nope2", buf, sizeof buf, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "attribute nope2: missing");
    assert_int_equal(fl_h5_get_attr_f64(f, "nope3", &d, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "attribute nope3: missing");
    assert_int_equal(fl_h5_get_attr_i64(f, "text", &i, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "attribute text: unexpected type");
    assert_int_equal(fl_h5_get_attr_f64(f, "count", &d, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "attribute count: unexpected type");
    assert_int_equal(fl_h5_get_attr_str(f, "ratio", buf, sizeof buf, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "attribute ratio: unexpected type");
    assert_int_equal(fl_h5_get_attr_i64(f, "ratio", &i, &e), FL_E_FORMAT);
    assert_true(i == 99 && d == 99); /* outputs untouched on error */
    assert_string_equal(buf, "untouched");
    /* writing to something that is not an object */
    assert_int_equal(fl_h5_attr_i64(-1, "bad_obj", 1, &e), FL_E_IO);
    assert_string_equal(e.msg, "attribute bad_obj: cannot write");
    assert_int_equal(fl_h5_attr_str(-1, "bad_str", "v", &e), FL_E_IO);
    assert_msg_has(&e, "bad_str");
    assert_int_equal(fl_h5_attr_str_fixed(-1, "bad_fixed", "v", 8, &e), FL_E_IO);
    assert_msg_has(&e, "bad_fixed");
    close_file(f);
}

/* The header promises "an existing one is replaced": a number written where another type
 * was reads back as that number, with its own type. */
static void test_attr_replaces_other_type(void **unused)
{
    (void)unused;
    hid_t f = new_file("attr_retype.h5");
    fl_error e;
    /* string -> number and number -> string */
    assert_int_equal(fl_h5_attr_i64(f, "a", 5, &e), FL_OK);
    assert_int_equal(fl_h5_attr_str(f, "a", "five", &e), FL_OK);
    char buf[16];
    assert_int_equal(fl_h5_get_attr_str(f, "a", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "five");
    /* a number over an attribute of another type replaces it (it used to be written into
     * the old type: 0.5 over an int64 stored 0) */
    assert_int_equal(fl_h5_attr_f64(f, "n", 0, &e), FL_OK);
    assert_int_equal(fl_h5_attr_i64(f, "n", 3, &e), FL_OK);
    int64_t i = 0;
    assert_int_equal(fl_h5_get_attr_i64(f, "n", &i, &e), FL_OK);
    assert_int_equal(i, 3);
    assert_int_equal(fl_h5_attr_i64(f, "m", 0, &e), FL_OK);
    assert_int_equal(fl_h5_attr_f64(f, "m", 0.5, &e), FL_OK);
    double d = 0;
    assert_int_equal(fl_h5_get_attr_f64(f, "m", &d, &e), FL_OK);
    assert_true(d == 0.5);
    assert_int_equal(fl_h5_attr_str(f, "s", "text", &e), FL_OK);
    assert_int_equal(fl_h5_attr_i64(f, "s", 9, &e), FL_OK);
    assert_int_equal(fl_h5_get_attr_i64(f, "s", &i, &e), FL_OK);
    assert_int_equal(i, 9);
    close_file(f);
}

static void test_attr_str_fixed(void **unused)
{
    (void)unused;
    hid_t f = new_file("attr_fixed.h5");
    fl_error e;
    char buf[64];
    assert_int_equal(fl_h5_attr_str_fixed(f, "status", "interrupted", 16, &e), FL_OK);
    H5T_class_t cls;
    size_t size;
    int vlen;
    attr_type(f, "status", &cls, &size, &vlen, NULL);
    assert_int_equal(cls, H5T_STRING);
    assert_false(vlen);
    assert_int_equal(size, 16);
    fl_h5_lock();
    hid_t a = H5Aopen(f, "status", H5P_DEFAULT), t = H5Aget_type(a);
    assert_int_equal(H5Tget_strpad(t), H5T_STR_NULLPAD);
    char raw[16];
    assert_true(H5Aread(a, t, raw) >= 0);
    H5Tclose(t);
    H5Aclose(a);
    fl_h5_unlock();
    assert_memory_equal(raw, "interrupted\0\0\0\0\0", 16);
    assert_int_equal(fl_h5_get_attr_str(f, "status", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "interrupted");
    /* overwritten in place by a shorter value: nothing of the old one is left */
    assert_int_equal(fl_h5_attr_str_fixed(f, "status", "failed", 16, &e), FL_OK);
    assert_int_equal(fl_h5_get_attr_str(f, "status", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "failed");
    /* clipped to its size, no terminator stored when full */
    assert_int_equal(fl_h5_attr_str_fixed(f, "status", "0123456789abcdefXYZ", 16, &e), FL_OK);
    assert_int_equal(fl_h5_get_attr_str(f, "status", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "0123456789abcdef");
    char small[5];
    assert_int_equal(fl_h5_get_attr_str(f, "status", small, sizeof small, &e), FL_OK);
    assert_string_equal(small, "0123");
    assert_int_equal(nattrs(f), 1);
    /* another size, or a variable-length string there: refused, naming the attribute */
    assert_int_equal(fl_h5_attr_str_fixed(f, "status", "x", 8, &e), FL_E_IO);
    assert_string_equal(e.msg, "attribute status: cannot overwrite");
    assert_int_equal(fl_h5_attr_str(f, "v", "variable", &e), FL_OK);
    assert_int_equal(fl_h5_attr_str_fixed(f, "v", "x", 8, &e), FL_E_IO);
    assert_string_equal(e.msg, "attribute v: cannot overwrite");
    assert_int_equal(fl_h5_get_attr_str(f, "status", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "0123456789abcdef"); /* left as it was */
    close_file(f);
}

/* In SWMR-write mode fixed strings and numbers are overwritten in place (what the run
 * file's status and totals rely on), and the file opens afterwards with the new values. */
static void test_attr_overwrite_in_swmr_mode(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "swmr_attr.h5");
    fl_h5_lock();
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    fl_h5_unlock();
    assert_true(f >= 0);
    fl_error e;
    assert_int_equal(fl_h5_attr_str_fixed(f, "status", "running", 16, &e), FL_OK);
    assert_int_equal(fl_h5_attr_i64(f, "frames", 0, &e), FL_OK);
    assert_int_equal(fl_h5_attr_f64(f, "seconds", 0, &e), FL_OK);
    assert_int_equal(fl_h5_attr_str(f, "name", "before", &e), FL_OK);
    fl_h5_lock();
    assert_true(H5Fstart_swmr_write(f) >= 0);
    fl_h5_unlock();
    assert_int_equal(fl_h5_attr_str_fixed(f, "status", "complete", 16, &e), FL_OK);
    assert_int_equal(fl_h5_attr_i64(f, "frames", 1234567890123, &e), FL_OK);
    assert_int_equal(fl_h5_attr_f64(f, "seconds", 2.75, &e), FL_OK);
    close_file(f);
    fl_h5_lock();
    f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(f >= 0);
    char buf[32];
    int64_t i;
    double d;
    assert_int_equal(fl_h5_get_attr_str(f, "status", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "complete");
    assert_int_equal(fl_h5_get_attr_i64(f, "frames", &i, &e), FL_OK);
    assert_true(i == 1234567890123);
    assert_int_equal(fl_h5_get_attr_f64(f, "seconds", &d, &e), FL_OK);
    assert_true(d == 2.75);
    assert_int_equal(fl_h5_get_attr_str(f, "name", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "before");
    close_file(f);
}

/* ---- text datasets ------------------------------------------------------------------ */

static void test_text_roundtrip(void **unused)
{
    (void)unused;
    hid_t f = new_file("text.h5");
    fl_h5_lock();
    hid_t g = H5Gcreate2(f, "config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    fl_h5_unlock();
    size_t big_n = 200000;
    char *big = malloc(big_n + 1);
    for (size_t i = 0; i < big_n; i++)
        big[i] = i % 61 == 60 ? '\n' : (char)(' ' + i % 90);
    big[big_n] = 0;
    const char *texts[] = { "", "return { a = 1 }\n", "-- caf\xc3\xa9 \xe2\x98\x95\n", big };
    const char *names[] = { "empty", "lua", "utf8", "big" };
    fl_error e;
    for (int i = 0; i < 4; i++)
        assert_int_equal(fl_h5_write_text(g, names[i], texts[i], &e), FL_OK);
    for (int i = 0; i < 4; i++) {
        char *out = NULL;
        assert_int_equal(fl_h5_read_text(g, names[i], &out, &e), FL_OK);
        assert_non_null(out);
        assert_string_equal(out, texts[i]);
        free(out);
        /* by a path from the file too */
        char path[64];
        snprintf(path, sizeof path, "config/%s", names[i]);
        assert_int_equal(fl_h5_read_text(f, path, &out, &e), FL_OK);
        assert_string_equal(out, texts[i]);
        free(out);
    }
    /* stored as a scalar variable-length UTF-8 string */
    fl_h5_lock();
    hid_t d = H5Dopen2(g, "utf8", H5P_DEFAULT), t = H5Dget_type(d), sp = H5Dget_space(d);
    assert_int_equal(H5Tget_class(t), H5T_STRING);
    assert_true(H5Tis_variable_str(t) > 0);
    assert_int_equal(H5Tget_cset(t), H5T_CSET_UTF8);
    assert_int_equal(H5Sget_simple_extent_type(sp), H5S_SCALAR);
    H5Sclose(sp);
    H5Tclose(t);
    H5Dclose(d);
    /* a fixed-length string dataset (another writer's) reads too */
    hid_t ft = H5Tcopy(H5T_C_S1);
    H5Tset_size(ft, 10);
    sp = H5Screate(H5S_SCALAR);
    d = H5Dcreate2(f, "fixed", ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, "0123456789") >= 0);
    H5Dclose(d);
    H5Tclose(ft);
    /* and a number dataset */
    d = H5Dcreate2(f, "number", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(sp);
    fl_h5_unlock();
    char *out = NULL;
    assert_int_equal(fl_h5_read_text(f, "fixed", &out, &e), FL_OK);
    assert_string_equal(out, "0123456789");
    free(out);
    out = (char *)"sentinel";
    assert_int_equal(fl_h5_read_text(f, "number", &out, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "dataset number: not a string");
    assert_null(out);
    assert_int_equal(fl_h5_read_text(f, "config/nope", &out, &e), FL_E_FORMAT);
    assert_string_equal(e.msg, "dataset config/nope: missing");
    assert_null(out);
    /* a name already there is not overwritten */
    assert_int_equal(fl_h5_write_text(g, "lua", "other", &e), FL_E_IO);
    assert_string_equal(e.msg, "dataset lua: cannot write");
    assert_int_equal(fl_h5_read_text(g, "lua", &out, &e), FL_OK);
    assert_string_equal(out, texts[1]);
    free(out);
    free(big);
    fl_h5_lock();
    H5Gclose(g);
    fl_h5_unlock();
    close_file(f);
}

/* ---- row datasets ------------------------------------------------------------------- */

static void dset_layout(hid_t d, int *rank, hsize_t *dims, hsize_t *maxd, hsize_t *chunk,
                        int *shuffle, int *deflate)
{
    fl_h5_lock();
    hid_t sp = H5Dget_space(d), pl = H5Dget_create_plist(d);
    *rank = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, dims, maxd);
    assert_int_equal(H5Pget_layout(pl), H5D_CHUNKED);
    assert_int_equal(H5Pget_chunk(pl, *rank, chunk), *rank);
    *shuffle = 0;
    *deflate = -1;
    int nf = H5Pget_nfilters(pl);
    for (int i = 0; i < nf; i++) {
        unsigned flags, cd[4];
        size_t ncd = 4;
        H5Z_filter_t id = H5Pget_filter2(pl, (unsigned)i, &flags, &ncd, cd, 0, NULL, NULL);
        if (id == H5Z_FILTER_SHUFFLE)
            *shuffle = i + 1; /* position + 1: shuffle must come before deflate */
        else if (id == H5Z_FILTER_DEFLATE)
            *deflate = (int)cd[0];
    }
    H5Pclose(pl);
    H5Sclose(sp);
    fl_h5_unlock();
}

static void close_dset(hid_t d)
{
    fl_h5_lock();
    H5Dclose(d);
    fl_h5_unlock();
}

static void test_rows_create_layout(void **unused)
{
    (void)unused;
    hid_t f = new_file("rows_layout.h5");
    fl_error e;
    hid_t d;
    int rank, shuffle, deflate;
    hsize_t dims[8], maxd[8], chunk[8];
    int64_t inner[3] = { 2, 3, 4 };
    assert_int_equal(fl_h5_create_rows(f, "frames/latent", H5T_NATIVE_FLOAT, 3, inner, 1, 4, &d, &e), FL_OK);
    dset_layout(d, &rank, dims, maxd, chunk, &shuffle, &deflate);
    assert_int_equal(rank, 4);
    assert_int_equal(dims[0], 0);
    assert_true(maxd[0] == H5S_UNLIMITED);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dims[i + 1], inner[i]);
        assert_int_equal(maxd[i + 1], inner[i]);
        assert_int_equal(chunk[i + 1], inner[i]);
    }
    assert_int_equal(chunk[0], 1);
    assert_int_equal(shuffle, 1);
    assert_int_equal(deflate, 4);
    assert_int_equal(fl_h5_rows(d), 0);
    fl_h5_lock();
    hid_t t = H5Dget_type(d);
    assert_true(H5Tequal(t, H5T_NATIVE_FLOAT) > 0);
    H5Tclose(t);
    assert_true(H5Lexists(f, "frames", H5P_DEFAULT) > 0); /* intermediate group made */
    fl_h5_unlock();
    close_dset(d);
    /* 1-D, no compression */
    assert_int_equal(fl_h5_create_rows(f, "a/b/c/series", H5T_NATIVE_DOUBLE, 0, NULL, 1024, 0, &d, &e), FL_OK);
    dset_layout(d, &rank, dims, maxd, chunk, &shuffle, &deflate);
    assert_int_equal(rank, 1);
    assert_int_equal(chunk[0], 1024);
    assert_int_equal(shuffle, 0);
    assert_int_equal(deflate, -1);
    close_dset(d);
    /* refused shapes and names, naming the dataset */
    assert_int_equal(fl_h5_create_rows(f, "bad_rank", H5T_NATIVE_FLOAT, 8, (int64_t[8]){ 1, 1, 1, 1, 1, 1, 1, 1 }, 1, 0, &d, &e),
                     FL_E_INVALID);
    assert_string_equal(e.msg, "dataset bad_rank: bad shape");
    assert_int_equal(fl_h5_create_rows(f, "bad_chunk", H5T_NATIVE_FLOAT, 0, NULL, 0, 0, &d, &e), FL_E_INVALID);
    assert_string_equal(e.msg, "dataset bad_chunk: bad shape");
    assert_int_equal(fl_h5_create_rows(f, "neg", H5T_NATIVE_FLOAT, -1, NULL, 1, 0, &d, &e), FL_E_INVALID);
    assert_int_equal(fl_h5_create_rows(f, "frames/latent", H5T_NATIVE_FLOAT, 0, NULL, 1, 0, &d, &e), FL_E_IO);
    assert_string_equal(e.msg, "dataset frames/latent: cannot create");
    assert_true(d < 0);
    /* the largest rank taken */
    int64_t seven[7] = { 1, 2, 1, 2, 1, 2, 1 };
    assert_int_equal(fl_h5_create_rows(f, "rank8", H5T_NATIVE_UINT8, 7, seven, 3, 1, &d, &e), FL_OK);
    dset_layout(d, &rank, dims, maxd, chunk, &shuffle, &deflate);
    assert_int_equal(rank, 8);
    assert_int_equal(deflate, 1);
    close_dset(d);
    close_file(f);
}

static void test_rows_write_read(void **unused)
{
    (void)unused;
    hid_t f = new_file("rows_rw.h5");
    fl_error e;
    hid_t d;
    int64_t inner[2] = { 2, 3 };
    assert_int_equal(fl_h5_create_rows(f, "m", H5T_NATIVE_FLOAT, 2, inner, 2, 4, &d, &e), FL_OK);
    enum { RS = 6 };
    float rows[8][RS];
    for (int r = 0; r < 8; r++)
        for (int k = 0; k < RS; k++)
            rows[r][k] = (float)(r * 10 + k) + 0.5f;
    uint32_t nanbits = 0x7fc0beefu;
    memcpy(&rows[0][1], &nanbits, 4);
    rows[0][2] = -0.0f;
    assert_int_equal(fl_h5_write_rows(d, H5T_NATIVE_FLOAT, 0, 3, rows[0], &e), FL_OK);
    assert_int_equal(fl_h5_rows(d), 3);
    /* past the end: grows, the gap reads as zeros */
    assert_int_equal(fl_h5_write_rows(d, H5T_NATIVE_FLOAT, 5, 3, rows[5], &e), FL_OK);
    assert_int_equal(fl_h5_rows(d), 8);
    /* overwrite inside: does not shrink or grow */
    float over[2][RS];
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < RS; k++)
            over[r][k] = -(float)(r * 100 + k);
    assert_int_equal(fl_h5_write_rows(d, H5T_NATIVE_FLOAT, 1, 2, over[0], &e), FL_OK);
    assert_int_equal(fl_h5_rows(d), 8);
    /* nothing to write */
    assert_int_equal(fl_h5_write_rows(d, H5T_NATIVE_FLOAT, 100, 0, NULL, &e), FL_OK);
    assert_int_equal(fl_h5_rows(d), 8);
    float back[8][RS];
    memset(back, 0x55, sizeof back);
    assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, 0, 8, back[0], &e), FL_OK);
    assert_memory_equal(back[0], rows[0], sizeof rows[0]);
    assert_memory_equal(back[1], over[0], sizeof over);
    for (int r = 3; r < 5; r++)
        for (int k = 0; k < RS; k++)
            assert_true(back[r][k] == 0.0f);
    assert_memory_equal(back[5], rows[5], 3 * sizeof rows[0]);
    /* a part, converted to double on the way */
    double dd[2][RS];
    assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_DOUBLE, 6, 2, dd[0], &e), FL_OK);
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < RS; k++)
            assert_true(dd[r][k] == (double)rows[6 + r][k]);
    /* written from doubles */
    double from_d[RS] = { 1e-3, 2.5, -3, 1e30, 1e-45, 7 };
    assert_int_equal(fl_h5_write_rows(d, H5T_NATIVE_DOUBLE, 8, 1, from_d, &e), FL_OK);
    float one[RS];
    assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, 8, 1, one, &e), FL_OK);
    for (int k = 0; k < RS; k++)
        assert_true(one[k] == (float)from_d[k]);
    /* out of range reads: refused with the rows asked and those there */
    memset(back, 0x55, sizeof back);
    assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, 7, 3, back[0], &e), FL_E_RANGE);
    assert_msg_has(&e, "rows [7, 10) beyond its 9 rows");
    assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, -1, 1, back[0], &e), FL_E_RANGE);
    assert_msg_has(&e, "rows [-1, 0) beyond its 9 rows");
    uint32_t w;
    memcpy(&w, back[0], 4);
    assert_int_equal(w, 0x55555555u); /* nothing read */
    assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, 3, 0, NULL, &e), FL_OK);
    close_dset(d);
    /* a scalar dataset has one row; an invalid id none */
    fl_h5_lock();
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t sd = H5Dcreate2(f, "scalar", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(sp);
    fl_h5_unlock();
    assert_int_equal(fl_h5_rows(sd), 1);
    close_dset(sd);
    assert_int_equal(fl_h5_rows(-1), -1);
    assert_int_equal(fl_h5_write_rows(-1, H5T_NATIVE_FLOAT, 0, 1, one, &e), FL_E_IO);
    assert_msg_has(&e, "dataset");
    close_file(f);
}

/* ---- fl_state <-> file -------------------------------------------------------------- */

static fl_state *sample_state(int variant)
{
    fl_state *s = fl_state_new();
    uint8_t u8[3] = { 0, 128, 255 };
    int32_t i32[4] = { INT32_MIN, -1, 0, INT32_MAX };
    int64_t i64[2] = { INT64_MIN, INT64_MAX - variant };
    uint32_t f32b[3] = { 0x7fc12345u, 0x80000000u, 0x00000001u };
    uint64_t f64b[3] = { 0x7ff8000000abcdefull, 0xfff0000000000000ull, 0x3fb999999999999aull };
    enum { BIG = 300000 };
    float *big = malloc(BIG * sizeof *big);
    for (int i = 0; i < BIG; i++)
        big[i] = (float)sin(i * 0.001 + variant) * 1000.0f;
    assert_int_equal(fl_state_put(s, "sched/u8", FL_STATE_U8, u8, 3, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "sched/i32", FL_STATE_I32, i32, 4, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "engine/i64", FL_STATE_I64, i64, 2, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "f32bits", FL_STATE_F32, f32b, 3, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "a/b/c/f64bits", FL_STATE_F64, f64b, 3, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "empty", FL_STATE_F64, NULL, 0, NULL), FL_OK);
    assert_int_equal(fl_state_put(s, "sched/queue", FL_STATE_F32, big, BIG, NULL), FL_OK);
    assert_int_equal(fl_state_put_i64(s, "variant", variant, NULL), FL_OK);
    if (variant == 0)
        assert_int_equal(fl_state_put_i64(s, "only_in_0", 1, NULL), FL_OK);
    free(big);
    return s;
}

/* Every entry of a is in b with the same type, count and bits, and b has no others. */
static void assert_states_equal(const fl_state *a, const fl_state *b)
{
    assert_int_equal(fl_state_len(a), fl_state_len(b));
    for (size_t i = 0; i < fl_state_len(a); i++) {
        fl_state_type ta, tb;
        const void *da;
        int64_t ca, cb;
        const char *name = fl_state_entry(a, i, &ta, &da, &ca);
        const void *db = fl_state_find(b, name, &tb, &cb);
        if (!db)
            fail_msg("entry %s lost", name);
        assert_int_equal(ta, tb);
        assert_int_equal(ca, cb);
        if (ca && memcmp(da, db, (size_t)ca * fl_state_type_size(ta)))
            fail_msg("entry %s differs", name);
    }
}

static int64_t state_variant(const char *path)
{
    fl_state *in = NULL;
    fl_error e;
    if (fl_state_load_file(path, &in, &e))
        fail_msg("%s", e.msg);
    int64_t v = -1;
    assert_int_equal(fl_state_get_i64(in, "variant", &v, &e), FL_OK);
    fl_state *ref = sample_state((int)v);
    assert_states_equal(ref, in);
    fl_state_free(ref);
    fl_state_free(in);
    return v;
}

static void test_state_file_roundtrip(void **unused)
{
    (void)unused;
    char p[512], tmpp[600];
    path_in(p, sizeof p, "state.h5");
    snprintf(tmpp, sizeof tmpp, "%s.tmp", p);
    fl_state *s = sample_state(0), *in = NULL;
    fl_error e;
    const char *const attrs[] = { "run_id", "abc123", "emitted", "42", NULL };
    assert_int_equal(fl_state_save_file(s, p, attrs, &e), FL_OK);
    assert_false(file_exists(tmpp));
    assert_int_equal(fl_state_load_file(p, &in, &e), FL_OK);
    assert_states_equal(s, in);
    fl_state_free(in);
    /* the layout: one dataset per entry at the root, '/' stored as '|', attributes */
    fl_h5_lock();
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(f >= 0);
    fl_h5_lock();
    assert_true(H5Lexists(f, "sched|queue", H5P_DEFAULT) > 0);
    assert_true(H5Lexists(f, "a|b|c|f64bits", H5P_DEFAULT) > 0);
    assert_true(H5Lexists(f, "sched", H5P_DEFAULT) == 0);
    hid_t d = H5Dopen2(f, "engine|i64", H5P_DEFAULT), t = H5Dget_type(d);
    assert_true(H5Tequal(t, H5T_NATIVE_INT64) > 0);
    H5Tclose(t);
    H5Dclose(d);
    d = H5Dopen2(f, "sched|u8", H5P_DEFAULT);
    t = H5Dget_type(d);
    assert_true(H5Tequal(t, H5T_NATIVE_UINT8) > 0);
    H5Tclose(t);
    H5Dclose(d);
    fl_h5_unlock();
    char buf[32];
    assert_int_equal(fl_h5_get_attr_str(f, "run_id", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "abc123");
    assert_int_equal(fl_h5_get_attr_str(f, "emitted", buf, sizeof buf, &e), FL_OK);
    assert_string_equal(buf, "42");
    close_file(f);
    /* a new state replaces the file whole: entries only the old one had are gone */
    fl_state *s1 = sample_state(1);
    assert_int_equal(fl_state_save_file(s1, p, NULL, &e), FL_OK);
    assert_int_equal(state_variant(p), 1);
    assert_int_equal(fl_state_load_file(p, &in, &e), FL_OK);
    assert_null(fl_state_find(in, "only_in_0", NULL, NULL));
    fl_state_free(in);
    /* an empty state */
    fl_state *none = fl_state_new();
    assert_int_equal(fl_state_save_file(none, p, NULL, &e), FL_OK);
    assert_int_equal(fl_state_load_file(p, &in, &e), FL_OK);
    assert_int_equal(fl_state_len(in), 0);
    fl_state_free(in);
    fl_state_free(none);
    fl_state_free(s1);
    fl_state_free(s);
    unlink(p);
}

/* The rename fails (a directory is in the way): an error naming both names, the temporary
 * file removed, the directory untouched. */
static void test_state_file_rename_fails(void **unused)
{
    (void)unused;
    char p[512], tmpp[600], inside[600];
    path_in(p, sizeof p, "state_dir.h5");
    snprintf(tmpp, sizeof tmpp, "%s.tmp", p);
    snprintf(inside, sizeof inside, "%s/keep", p);
    assert_int_equal(mkdir(p, 0700), 0);
    FILE *fp = fopen(inside, "w");
    assert_non_null(fp);
    fclose(fp);
    fl_state *s = sample_state(0);
    fl_error e;
    assert_int_equal(fl_state_save_file(s, p, NULL, &e), FL_E_IO);
    char want[1300];
    snprintf(want, sizeof want, "%s: cannot rename to %s: ", tmpp, p);
    assert_msg_has(&e, want);
    assert_false(file_exists(tmpp));
    assert_true(file_exists(inside));
    fl_state_free(s);
    unlink(inside);
    rmdir(p);
}

static void test_state_file_cannot_create(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "no_such_dir/state.h5");
    fl_state *s = sample_state(0);
    fl_error e;
    assert_int_equal(fl_state_save_file(s, p, NULL, &e), FL_E_IO);
    char want[600];
    snprintf(want, sizeof want, "%s.tmp: cannot create (No such file or directory)", p);
    assert_string_equal(e.msg, want);
    fl_state_free(s);
}

/* Writing under a file-size limit, in a child. SIGXFSZ at its default kills the child in
 * the middle of writing state.h5.tmp (a crash); ignored, the write fails with EFBIG and the
 * save reports it. Either way state.h5 is the old complete state, and a later save works. */
static void state_save_under_limit(int ignore_sigxfsz)
{
    char p[512], tmpp[600];
    path_in(p, sizeof p, ignore_sigxfsz ? "state_efbig.h5" : "state_crash.h5");
    snprintf(tmpp, sizeof tmpp, "%s.tmp", p);
    fl_state *s0 = sample_state(0), *s1 = sample_state(1);
    fl_error e;
    assert_int_equal(fl_state_save_file(s0, p, NULL, &e), FL_OK);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        close(fds[0]);
        signal(SIGXFSZ, ignore_sigxfsz ? SIG_IGN : SIG_DFL);
        struct rlimit rl = { 256 << 10, 256 << 10 }; /* the state is > 1 MiB */
        setrlimit(RLIMIT_FSIZE, &rl);
        fl_error ce;
        fl_status st = fl_state_save_file(s1, p, NULL, &ce);
        char line[FL_ERRMSG_MAX + 16];
        int n = snprintf(line, sizeof line, "%d %s", (int)st, ce.msg);
        if (write(fds[1], line, (size_t)n) < 0)
            _exit(3);
        _exit(st ? 1 : 0);
    }
    close(fds[1]);
    char line[FL_ERRMSG_MAX + 16] = "";
    ssize_t n = 0, k;
    while ((k = read(fds[0], line + n, sizeof line - 1 - (size_t)n)) > 0)
        n += k;
    line[n] = 0;
    close(fds[0]);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (ignore_sigxfsz) {
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 1)
            fail_msg("child: status %#x, said \"%s\"", ws, line);
        assert_true(strstr(line, tmpp) != NULL); /* the message names the file written */
        assert_false(file_exists(tmpp));         /* and it was removed */
    } else {
        if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGXFSZ)
            fail_msg("child: status %#x, said \"%s\" (expected to die of SIGXFSZ)", ws, line);
    }
    assert_int_equal(state_variant(p), 0); /* the old state, whole */
    /* and the next save works (over a stale .tmp if the crash left one) */
    assert_int_equal(fl_state_save_file(s1, p, NULL, &e), FL_OK);
    assert_false(file_exists(tmpp));
    assert_int_equal(state_variant(p), 1);
    fl_state_free(s0);
    fl_state_free(s1);
    unlink(p);
}

static void test_state_file_crash_mid_write(void **unused)
{
    (void)unused;
    state_save_under_limit(0);
}

static void test_state_file_write_error(void **unused)
{
    (void)unused;
    state_save_under_limit(1);
}

static void write_bytes(const char *p, const void *data, size_t n)
{
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static void test_state_load_errors(void **unused)
{
    (void)unused;
    char p[512], want[700];
    fl_state *in = (fl_state *)1;
    fl_error e;
    path_in(p, sizeof p, "missing.h5");
    assert_int_equal(fl_state_load_file(p, &in, &e), FL_E_IO);
    assert_null(in);
    snprintf(want, sizeof want, "%s: cannot open as HDF5", p);
    assert_string_equal(e.msg, want);
    path_in(p, sizeof p, "not_hdf5.h5");
    write_bytes(p, "this is not an HDF5 file\n", 25);
    assert_int_equal(fl_state_load_file(p, &in, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: cannot open as HDF5", p);
    assert_string_equal(e.msg, want);
    /* a truncated state */
    path_in(p, sizeof p, "trunc.h5");
    fl_state *s = sample_state(0);
    assert_int_equal(fl_state_save_file(s, p, NULL, &e), FL_OK);
    fl_state_free(s);
    assert_int_equal(truncate(p, 4096), 0);
    in = (fl_state *)1;
    fl_status st = fl_state_load_file(p, &in, &e);
    assert_true(st == FL_E_IO || st == FL_E_FORMAT);
    assert_null(in);
    assert_msg_has(&e, p);
    /* objects a state file does not hold: a group, a 2-D array, strings */
    const char *cases[] = { "group", "two_d", "text" };
    for (int c = 0; c < 3; c++) {
        char name[64];
        snprintf(name, sizeof name, "bad_%s.h5", cases[c]);
        hid_t f = new_file(name);
        path_in(p, sizeof p, name);
        fl_h5_lock();
        hsize_t one[1] = { 2 }, two[2] = { 2, 2 };
        hid_t sp = H5Screate_simple(1, one, NULL);
        hid_t d = H5Dcreate2(f, "aaa_good", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5Dclose(d);
        H5Sclose(sp);
        if (c == 0) {
            hid_t g = H5Gcreate2(f, "sub", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            H5Gclose(g);
        } else if (c == 1) {
            sp = H5Screate_simple(2, two, NULL);
            d = H5Dcreate2(f, "grid", H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            H5Dclose(d);
            H5Sclose(sp);
        }
        fl_h5_unlock();
        if (c == 2)
            assert_int_equal(fl_h5_write_text(f, "words", "hello", &e), FL_OK);
        close_file(f);
        in = (fl_state *)1;
        st = fl_state_load_file(p, &in, &e);
        assert_int_equal(st, FL_E_FORMAT);
        assert_null(in);
        if (c == 0)
            snprintf(want, sizeof want, "%s: sub is not a dataset", p);
        else
            snprintf(want, sizeof want, "%s: entry %s: not a 1-D numeric array", p, c == 1 ? "grid" : "words");
        assert_string_equal(e.msg, want);
    }
}

/* Types in a state file other than fl_state's own are read as the nearest one. */
static void test_state_load_foreign_types(void **unused)
{
    (void)unused;
    hid_t f = new_file("foreign.h5");
    fl_h5_lock();
    hsize_t n[1] = { 3 };
    hid_t sp = H5Screate_simple(1, n, NULL);
    int16_t s16[3] = { -3, 0, 300 };
    uint8_t u8[3] = { 1, 2, 250 };
    int8_t i8[3] = { -1, 0, 1 };
    hid_t d = H5Dcreate2(f, "s16", H5T_STD_I16BE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, s16);
    H5Dclose(d);
    d = H5Dcreate2(f, "u8be", H5T_STD_U8BE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, u8);
    H5Dclose(d);
    d = H5Dcreate2(f, "i8", H5T_NATIVE_INT8, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, i8);
    H5Dclose(d);
    H5Sclose(sp);
    fl_h5_unlock();
    close_file(f);
    char p[512];
    path_in(p, sizeof p, "foreign.h5");
    fl_state *in = NULL;
    fl_error e;
    assert_int_equal(fl_state_load_file(p, &in, &e), FL_OK);
    int64_t v64[3];
    assert_int_equal(fl_state_get(in, "s16", FL_STATE_I64, v64, 3, &e), FL_OK);
    assert_true(v64[0] == -3 && v64[1] == 0 && v64[2] == 300);
    uint8_t b[3];
    assert_int_equal(fl_state_get(in, "u8be", FL_STATE_U8, b, 3, &e), FL_OK);
    assert_memory_equal(b, u8, 3);
    /* a signed byte is not the u8 type: widened, sign kept */
    assert_int_equal(fl_state_get(in, "i8", FL_STATE_I64, v64, 3, &e), FL_OK);
    assert_true(v64[0] == -1 && v64[1] == 0 && v64[2] == 1);
    fl_state_free(in);
}

/* ---- fsync helpers ------------------------------------------------------------------ */

static void test_fsync_helpers(void **unused)
{
    (void)unused;
    char p[512], want[700];
    fl_error e;
    path_in(p, sizeof p, "sync_me");
    write_bytes(p, "x", 1);
    assert_int_equal(fl_fsync_path(p, &e), FL_OK);
    assert_int_equal(fl_fsync_dir_of(p, &e), FL_OK);
    assert_int_equal(fl_fsync_path(tmp, &e), FL_OK); /* a directory */
    unlink(p);
    assert_int_equal(fl_fsync_path(p, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: No such file or directory", p);
    assert_string_equal(e.msg, want);
    /* the directory of a path: its parent, "/" for a file at the root, "." for none */
    path_in(p, sizeof p, "no_dir/file");
    assert_int_equal(fl_fsync_dir_of(p, &e), FL_E_IO);
    path_in(want, sizeof want, "no_dir: No such file or directory");
    assert_string_equal(e.msg, want);
    assert_int_equal(fl_fsync_dir_of("/no_such_file_here", &e), FL_OK);
    assert_int_equal(fl_fsync_dir_of("no_slash_at_all", &e), FL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_silences_hdf5_errors),
        cmocka_unit_test(test_lock_recursive_and_exclusive),
        cmocka_unit_test(test_lock_threads_concurrently),
        cmocka_unit_test(test_attr_str_roundtrip),
        cmocka_unit_test(test_attr_numbers_roundtrip),
        cmocka_unit_test(test_attr_read_errors_name_the_attribute),
        cmocka_unit_test(test_attr_replaces_other_type),
        cmocka_unit_test(test_attr_str_fixed),
        cmocka_unit_test(test_attr_overwrite_in_swmr_mode),
        cmocka_unit_test(test_text_roundtrip),
        cmocka_unit_test(test_rows_create_layout),
        cmocka_unit_test(test_rows_write_read),
        cmocka_unit_test(test_state_file_roundtrip),
        cmocka_unit_test(test_state_file_rename_fails),
        cmocka_unit_test(test_state_file_cannot_create),
        cmocka_unit_test(test_state_file_crash_mid_write),
        cmocka_unit_test(test_state_file_write_error),
        cmocka_unit_test(test_state_load_errors),
        cmocka_unit_test(test_state_load_foreign_types),
        cmocka_unit_test(test_fsync_helpers),
    };
    return cmocka_run_group_tests_name("h5io", tests, setup, teardown);
}
