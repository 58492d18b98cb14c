/* cmocka suite for core/runfile: the run file (docs/runfile.md) written by its SWMR writer
 * thread and read back with the HDF5 C API: every dataset's shape, type, chunking, filters
 * and values bit for bit, every attribute, status and totals; frames crossing the 32-frame
 * batches and series crossing their 4096-value buffers; the trace and queue snapshots;
 * checkpoints saved only behind the frames they vouch for (and superseded ones skipped);
 * renaming while writing; an SWMR reader in another process seeing a consistent, growing
 * file; the 256 MiB queue bound holding generation back and releasing it; the space guard
 * (file-size limit, free-space reserve) stopping with an error naming the file before a
 * write could fail, leaving a file that opens; a killed writer's file still opening; and
 * errors naming the file and object (create over a file, open a directory, a non-HDF5 or
 * truncated file, series misuse, frames out of order, a failure that sticks).
 *
 * The free-space reserve is tested by defining statvfs() here: the library's call resolves
 * to it, and it reports the real answer unless a test shrinks the disk (fake_disk). An SWMR
 * reader must be another process (HDF5 shares one open file per process): this binary
 * re-executes itself as `test_runfile --swmr-reader FILE FRAMES`. */
#define _GNU_SOURCE /* RTLD_NEXT, mkdtemp, nftw */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/h5io.h"
#include "tests/tmpdir.h"
#include "core/runfile.h"

/* ---- a disk that fills up ----------------------------------------------------------- */

typedef int (*statvfs_fn)(const char *, struct statvfs *);
static statvfs_fn real_statvfs;
static volatile int fake_disk;          /* on: the file system holds fake_disk_bytes ... */
static uint64_t fake_disk_bytes;        /* ... of which fake_disk_file uses its size */
static char fake_disk_file[512];
static volatile int statvfs_calls;

int statvfs(const char *restrict path, struct statvfs *restrict buf)
{
    __atomic_add_fetch(&statvfs_calls, 1, __ATOMIC_RELAXED);
    int r = real_statvfs(path, buf);
    if (r == 0 && fake_disk) {
        struct stat sb;
        uint64_t used = stat(fake_disk_file, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        uint64_t avail = fake_disk_bytes > used ? fake_disk_bytes - used : 0;
        buf->f_frsize = 4096;
        buf->f_bsize = 4096;
        buf->f_bavail = buf->f_bfree = avail / 4096;
    }
    return r;
}

static void find_real_statvfs(void)
{
    union {
        void *p;
        statvfs_fn f;
    } u;
    u.p = dlsym(RTLD_NEXT, "statvfs");
    if (!u.p) {
        fprintf(stderr, "test_runfile: dlsym(statvfs): %s\n", dlerror());
        exit(1);
    }
    real_statvfs = u.f;
}

/* ---- files ---------------------------------------------------------------------------- */

static char tmp[] = "/tmp/fl_test_runfile_XXXXXX";

static void path_in(char *out, size_t cap, const char *name) { fl_test_path(out, cap, tmp, name); }

static int setup(void **unused)
{
    (void)unused;
    if (!mkdtemp(tmp))
        return -1;
    fl_h5_lock();
    fl_h5_unlock();
    return 0;
}

static int teardown(void **unused)
{
    (void)unused;
    return fl_test_rm_tree(tmp);
}

static int file_exists(const char *p)
{
    return access(p, F_OK) == 0;
}

static int64_t file_size(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static void sleep_ms(int ms)
{
    struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&t, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void assert_msg_has(const char *msg, const char *needle)
{
    if (!strstr(msg, needle))
        fail_msg("message \"%s\" does not contain \"%s\"", msg, needle);
}

/* ---- the run described ---------------------------------------------------------------- */

enum { CH = 2, HH = 4, WW = 5, FS = CH * HH * WW, POS = 6, CTX = 2 };

static char cond0[] = "a cat on a mat", cond1[] = "caf\xc3\xa9 \xe2\x98\x95", cond2[] = "";
static char *const conditions[3] = { cond0, cond1, cond2 };
static fl_level levels[POS];

static fl_runfile_info base_info(void)
{
    for (int p = 0; p < POS; p++)
        levels[p] = (fl_level){ 0.05 + 0.15 * p, cos(0.2 * p), sin(0.2 * p) * (1 + 0.1 * p) };
    fl_runfile_info in = {
        .name = "unit",
        .run_id = "r0123456789ab",
        .script = "-- the script\nreturn { frames = 100 }\n",
        .script_path = "/somewhere/unit.lua",
        .resolved = "frames = 100\nseed = 7\n",
        .git_commit = "0123456789ab",
        .git_dirty = 1,
        .seed = UINT64_C(0xfedcba9876543210),
        .channels = CH,
        .height = HH,
        .width = WW,
        .frames = 100,
        .scheduler = "fifo",
        .window = 4,
        .steps = 8,
        .partitions = 2,
        .positions = POS,
        .context = CTX,
        .levels = levels,
        .step_index = NULL,
        .snapshot_every = 0,
        .trace_positions = 0,
        .nconditions = 3,
        .conditions = conditions,
        .created = 1700000000,
        .resumed = 2,
    };
    return in;
}

static uint32_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Frame idx of fs floats: random bits (no infinities or NaNs from them, so incompressible
 * but finite), with a stamp, a -0 and a NaN with a payload to show bits survive. */
static void frame_fill(float *f, int64_t idx, int64_t fs)
{
    for (int64_t k = 0; k < fs; k++) {
        uint32_t b = mix((uint64_t)idx * 1000003u + (uint64_t)k) & 0xBFFFFFFFu;
        memcpy(&f[k], &b, 4);
    }
    f[0] = (float)idx;
    if (fs > 2) {
        uint32_t nan = 0x7fc00000u | (uint32_t)(idx & 0xffff);
        f[1] = -0.0f;
        memcpy(&f[2], &nan, 4);
    }
}

static int32_t cond_of(int64_t idx)
{
    return (int32_t)(idx % 4) - 1; /* -1 .. 2 */
}

static double value_of(int series, int64_t i)
{
    static const uint64_t odd[4] = { UINT64_C(0x7ff8000000000123), UINT64_C(0x8000000000000000),
                                     UINT64_C(0x7ff0000000000000), UINT64_C(0x0000000000000001) };
    double v;
    if (i % 97 == 5) {
        memcpy(&v, &odd[(i / 97) % 4], 8);
        return v;
    }
    return series * 1e6 + (double)i * 0.1 + 1.0 / 3.0;
}

/* ---- reading back (the C API, under the h5io lock) ------------------------------------ */

static hid_t open_read(const char *p)
{
    int64_t f;
    fl_error e;
    if (fl_runfile_open_read(p, &f, &e))
        fail_msg("%s", e.msg);
    return (hid_t)f;
}

static hid_t dopen(hid_t f, const char *name)
{
    fl_h5_lock();
    hid_t d = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    fl_h5_unlock();
    if (d < 0)
        fail_msg("dataset %s missing", name);
    return d;
}

static void dclose(hid_t d)
{
    fl_h5_lock();
    H5Dclose(d);
    fl_h5_unlock();
}

static int exists(hid_t f, const char *name)
{
    fl_h5_lock();
    int r = H5Lexists(f, name, H5P_DEFAULT) > 0;
    fl_h5_unlock();
    return r;
}

/* Rank and dims of a dataset; also checks the stored type equals `type`. */
static int shape_of(hid_t f, const char *name, hid_t type, hsize_t *dims, hsize_t *maxd)
{
    hid_t d = dopen(f, name);
    fl_h5_lock();
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    int r = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, dims, maxd);
    int same = H5Tequal(t, type) > 0;
    H5Tclose(t);
    H5Sclose(sp);
    H5Dclose(d);
    fl_h5_unlock();
    if (!same)
        fail_msg("dataset %s: another type than expected", name);
    return r;
}

static void read_all(hid_t f, const char *name, hid_t mem_type, void *buf)
{
    hid_t d = dopen(f, name);
    fl_h5_lock();
    assert_true(H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    fl_h5_unlock();
}

static void attr_str_is(hid_t obj, const char *name, const char *want)
{
    char buf[4096];
    fl_error e;
    if (fl_h5_get_attr_str(obj, name, buf, sizeof buf, &e))
        fail_msg("%s", e.msg);
    if (strcmp(buf, want))
        fail_msg("attribute %s: \"%s\", expected \"%s\"", name, buf, want);
}

static void attr_i64_is(hid_t obj, const char *name, int64_t want)
{
    int64_t v;
    fl_error e;
    if (fl_h5_get_attr_i64(obj, name, &v, &e))
        fail_msg("%s", e.msg);
    if (v != want)
        fail_msg("attribute %s: %lld, expected %lld", name, (long long)v, (long long)want);
}

static void attr_f64_is(hid_t obj, const char *name, double want)
{
    double v;
    fl_error e;
    if (fl_h5_get_attr_f64(obj, name, &v, &e))
        fail_msg("%s", e.msg);
    if (memcmp(&v, &want, 8))
        fail_msg("attribute %s: %.17g, expected %.17g", name, v, want);
}

static void attr_str_on(hid_t f, const char *obj, const char *name, const char *want)
{
    fl_h5_lock();
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(o >= 0);
    attr_str_is(o, name, want);
    fl_h5_lock();
    H5Oclose(o);
    fl_h5_unlock();
}

static void attr_i64_on(hid_t f, const char *obj, const char *name, int64_t want)
{
    fl_h5_lock();
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(o >= 0);
    attr_i64_is(o, name, want);
    fl_h5_lock();
    H5Oclose(o);
    fl_h5_unlock();
}

/* The status attribute: fixed 16 bytes (so it can be overwritten in SWMR mode). */
static void status_is(hid_t f, const char *want)
{
    attr_str_is(f, "status", want);
    fl_h5_lock();
    hid_t a = H5Aopen(f, "status", H5P_DEFAULT), t = H5Aget_type(a);
    int fixed16 = H5Tis_variable_str(t) == 0 && H5Tget_size(t) == 16;
    H5Tclose(t);
    H5Aclose(a);
    fl_h5_unlock();
    assert_true(fixed16);
}

/* Frames [0, n) of the file are exactly frame_fill's, conditions cond_of's. */
static void frames_are(hid_t f, int64_t n, int64_t fs)
{
    hsize_t dims[4], maxd[4];
    assert_int_equal(shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd), 4);
    if ((int64_t)dims[0] != n)
        fail_msg("frames/latent: %llu frames, expected %lld", (unsigned long long)dims[0], (long long)n);
    assert_true(maxd[0] == H5S_UNLIMITED);
    assert_int_equal(shape_of(f, "frames/condition", H5T_STD_I32LE, dims, maxd), 1);
    assert_int_equal(dims[0], n);
    hid_t d = dopen(f, "frames/latent"), c = dopen(f, "frames/condition");
    float *got = malloc((size_t)fs * sizeof *got), *want = malloc((size_t)fs * sizeof *want);
    int32_t *conds = malloc((size_t)(n ? n : 1) * sizeof *conds);
    fl_error e;
    assert_int_equal(fl_h5_read_rows(c, H5T_NATIVE_INT32, 0, n, conds, &e), FL_OK);
    for (int64_t i = 0; i < n; i++) {
        assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, i, 1, got, &e), FL_OK);
        frame_fill(want, i, fs);
        if (memcmp(got, want, (size_t)fs * sizeof *got))
            fail_msg("frame %lld differs", (long long)i);
        if (conds[i] != cond_of(i))
            fail_msg("condition of frame %lld: %d, expected %d", (long long)i, conds[i], cond_of(i));
    }
    free(got);
    free(want);
    free(conds);
    dclose(d);
    dclose(c);
}

/* ---- writing ---------------------------------------------------------------------------- */

static fl_runfile *create_ok(const char *p, const fl_runfile_info *in)
{
    fl_runfile *rf = NULL;
    fl_error e;
    if (fl_runfile_create(&rf, p, in, &e))
        fail_msg("%s", e.msg);
    assert_non_null(rf);
    return rf;
}

static void start_ok(fl_runfile *rf)
{
    fl_error e;
    if (fl_runfile_start(rf, &e))
        fail_msg("%s", e.msg);
}

static void frames_ok(fl_runfile *rf, int64_t from, int64_t to, int64_t fs)
{
    float *buf = malloc((size_t)fs * sizeof *buf);
    fl_error e;
    for (int64_t i = from; i < to; i++) {
        frame_fill(buf, i, fs);
        if (fl_runfile_frame(rf, i, buf, cond_of(i), &e))
            fail_msg("frame %lld: %s", (long long)i, e.msg);
    }
    free(buf);
}

static void close_ok(fl_runfile *rf, const char *status, const fl_runfile_totals *t)
{
    fl_error e;
    if (fl_runfile_close(rf, status, t, &e))
        fail_msg("%s", e.msg);
}

/* ---- layout ----------------------------------------------------------------------------- */

/* A run file created and closed without a frame: every fixed part of the layout. */
static void test_layout_and_provenance(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "layout.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    fl_runfile_totals t = { 90, 45, 180, 720, 12.625 };
    close_ok(rf, "complete", &t);

    hid_t f = open_read(p);
    attr_i64_is(f, "format_version", FL_RUNFILE_FORMAT_VERSION);
    attr_i64_is(f, "format_version", 1);
    attr_str_is(f, "fifolab_version", FL_VERSION);
    attr_str_is(f, "git_commit", "0123456789ab");
    attr_i64_is(f, "git_dirty", 1);
    attr_str_is(f, "created", "2023-11-14T22:13:20Z");
    attr_i64_is(f, "created_unix", 1700000000);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    attr_str_is(f, "host", host);
    attr_i64_is(f, "pid", getpid());
    int64_t seed;
    assert_int_equal(fl_h5_get_attr_i64(f, "seed", &seed, NULL), FL_OK);
    assert_true((uint64_t)seed == UINT64_C(0xfedcba9876543210)); /* all 64 bits kept */
    attr_str_is(f, "name", "unit");
    attr_str_is(f, "run_id", "r0123456789ab");
    status_is(f, "complete");
    attr_i64_is(f, "frames_total", 100);
    attr_i64_is(f, "resumed", 2);
    attr_i64_is(f, "frames_emitted", 90);
    attr_i64_is(f, "iterations", 45);
    attr_i64_is(f, "window_calls", 180);
    attr_i64_is(f, "frame_evals", 720);
    attr_f64_is(f, "seconds", 12.625);

    /* configuration */
    char *text = NULL;
    assert_int_equal(fl_h5_read_text(f, "config/resolved", &text, NULL), FL_OK);
    assert_string_equal(text, in.resolved);
    free(text);
    assert_int_equal(fl_h5_read_text(f, "config/script", &text, NULL), FL_OK);
    assert_string_equal(text, in.script);
    free(text);
    attr_str_on(f, "config", "script_path", "/somewhere/unit.lua");

    /* schedule */
    attr_str_on(f, "schedule", "scheduler", "fifo");
    attr_i64_on(f, "schedule", "window", 4);
    attr_i64_on(f, "schedule", "steps", 8);
    attr_i64_on(f, "schedule", "partitions", 2);
    attr_i64_on(f, "schedule", "positions", POS);
    attr_i64_on(f, "schedule", "context", CTX);
    hsize_t dims[5], maxd[5];
    static const char *const lv[4] = { "schedule/timestep", "schedule/alpha", "schedule/sigma", "schedule/alpha_bar" };
    for (int k = 0; k < 4; k++) {
        assert_int_equal(shape_of(f, lv[k], H5T_IEEE_F64LE, dims, maxd), 1);
        assert_int_equal(dims[0], POS);
        double v[POS];
        read_all(f, lv[k], H5T_NATIVE_DOUBLE, v);
        for (int q = 0; q < POS; q++) {
            fl_level l = levels[q];
            double want = k == 0 ? l.t : k == 1 ? l.alpha : k == 2 ? l.sigma
                        : l.alpha * l.alpha / (l.alpha * l.alpha + l.sigma * l.sigma);
            if (memcmp(&v[q], &want, 8))
                fail_msg("%s[%d] = %.17g, expected %.17g", lv[k], q, v[q], want);
        }
    }
    assert_int_equal(shape_of(f, "schedule/step", H5T_STD_I32LE, dims, maxd), 1);
    int32_t step[POS];
    read_all(f, "schedule/step", H5T_NATIVE_INT32, step);
    for (int q = 0; q < POS; q++)
        assert_int_equal(step[q], q - CTX); /* no step_index: position - context */

    /* conditions: variable-length UTF-8 strings */
    fl_h5_lock();
    hid_t d = H5Dopen2(f, "conditions/text", H5P_DEFAULT), ty = H5Dget_type(d), sp = H5Dget_space(d);
    assert_true(H5Tis_variable_str(ty) > 0);
    assert_int_equal(H5Tget_cset(ty), H5T_CSET_UTF8);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    char *strs[3] = { NULL, NULL, NULL };
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5T_CSET_UTF8);
    assert_true(H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, strs) >= 0);
    fl_h5_unlock();
    assert_int_equal(np, 3);
    for (int i = 0; i < 3; i++) {
        assert_non_null(strs[i]);
        assert_string_equal(strs[i], conditions[i]);
    }
    fl_h5_lock();
    H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, strs);
    H5Tclose(mt);
    H5Sclose(sp);
    H5Tclose(ty);
    H5Dclose(d);
    fl_h5_unlock();

    /* frames: empty, extendible, chunks of one frame, shuffle + gzip(4) */
    assert_int_equal(shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd), 4);
    assert_int_equal(dims[0], 0);
    assert_int_equal(dims[1], CH);
    assert_int_equal(dims[2], HH);
    assert_int_equal(dims[3], WW);
    assert_true(maxd[0] == H5S_UNLIMITED);
    d = dopen(f, "frames/latent");
    fl_h5_lock();
    hid_t pl = H5Dget_create_plist(d);
    hsize_t chunk[4];
    assert_int_equal(H5Pget_chunk(pl, 4, chunk), 4);
    int nf = H5Pget_nfilters(pl);
    unsigned flags, cd[4];
    size_t ncd = 4;
    H5Z_filter_t f0 = H5Pget_filter2(pl, 0, &flags, &ncd, cd, 0, NULL, NULL);
    ncd = 4;
    H5Z_filter_t f1 = H5Pget_filter2(pl, 1, &flags, &ncd, cd, 0, NULL, NULL);
    H5Pclose(pl);
    fl_h5_unlock();
    assert_true(chunk[0] == 1 && chunk[1] == CH && chunk[2] == HH && chunk[3] == WW);
    assert_int_equal(nf, 2);
    assert_int_equal(f0, H5Z_FILTER_SHUFFLE);
    assert_int_equal(f1, H5Z_FILTER_DEFLATE);
    assert_int_equal(cd[0], 4);
    attr_str_is(d, "layout", "frames, channels, height, width");
    attr_str_is(d, "space", "latent");
    dclose(d);
    assert_int_equal(shape_of(f, "frames/condition", H5T_STD_I32LE, dims, maxd), 1);
    assert_int_equal(dims[0], 0);

    /* groups always there; no trace or snapshots asked for */
    assert_true(exists(f, "metrics"));
    assert_true(exists(f, "trace"));
    assert_false(exists(f, "trace/position_error"));
    assert_false(exists(f, "trace/queue"));
    fl_runfile_close_read(f);
    unlink(p);
}

/* What may be absent: strings default, no script, no queue, no conditions, created now,
 * explicit step indices. */
static void test_layout_minimal_info(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "minimal.h5");
    fl_runfile_info in = { 0 };
    in.channels = 1;
    in.height = 2;
    in.width = 3;
    time_t before = time(NULL);
    fl_runfile *rf = create_ok(p, &in);
    close_ok(rf, "complete", NULL);
    time_t after = time(NULL);
    hid_t f = open_read(p);
    attr_str_is(f, "name", "");
    attr_str_is(f, "run_id", "");
    attr_str_is(f, "git_commit", "unknown");
    attr_i64_is(f, "seed", 0);
    int64_t created;
    assert_int_equal(fl_h5_get_attr_i64(f, "created_unix", &created, NULL), FL_OK);
    assert_true(created >= before && created <= after);
    /* no totals given: they stay 0 */
    attr_i64_is(f, "frames_emitted", 0);
    attr_i64_is(f, "iterations", 0);
    attr_f64_is(f, "seconds", 0.0);
    status_is(f, "complete");
    char *text = NULL;
    assert_int_equal(fl_h5_read_text(f, "config/resolved", &text, NULL), FL_OK);
    assert_string_equal(text, "");
    free(text);
    assert_false(exists(f, "config/script"));
    fl_h5_lock();
    hid_t g = H5Gopen2(f, "config", H5P_DEFAULT);
    int has_path = H5Aexists(g, "script_path");
    H5Gclose(g);
    fl_h5_unlock();
    assert_int_equal(has_path, 0);
    attr_str_on(f, "schedule", "scheduler", "");
    assert_false(exists(f, "schedule/timestep"));
    assert_false(exists(f, "schedule/step"));
    hsize_t dims[4], maxd[4];
    fl_h5_lock();
    hid_t d = H5Dopen2(f, "conditions/text", H5P_DEFAULT), sp = H5Dget_space(d);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Dclose(d);
    fl_h5_unlock();
    assert_int_equal(np, 0);
    assert_int_equal(shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd), 4);
    assert_true(dims[1] == 1 && dims[2] == 2 && dims[3] == 3);
    fl_runfile_close_read(f);
    unlink(p);

    /* step indices given: stored as given */
    path_in(p, sizeof p, "steps.h5");
    in = base_info();
    int32_t steps[POS] = { -1, -1, 0, 3, 5, 7 };
    int steps_int[POS];
    for (int i = 0; i < POS; i++)
        steps_int[i] = steps[i];
    in.step_index = steps_int;
    rf = create_ok(p, &in);
    close_ok(rf, "complete", NULL);
    f = open_read(p);
    int32_t got[POS];
    read_all(f, "schedule/step", H5T_NATIVE_INT32, got);
    assert_memory_equal(got, steps, sizeof steps);
    fl_runfile_close_read(f);
    unlink(p);
}

/* ---- frames and series ------------------------------------------------------------------ */

typedef struct series_def {
    const char *name, *unit, *description;
    fl_runfile_per per;
    int window, stride, offset;
    int64_t n; /* values written */
} series_def;

static void test_frames_and_series_roundtrip(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "frames.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    static const series_def defs[4] = {
        { "psnr", "dB", "per-frame PSNR", FL_RUNFILE_PER_FRAME, 1, 1, 3, 74 },
        { "fd_segment", "", "FD of windows", FL_RUNFILE_PER_WINDOW, 16, 8, 0, 9 },
        { "iteration_seconds", "s", "wall time of iteration i", FL_RUNFILE_PER_ITERATION, 0, 0, 0, 9000 },
        { "nested/empty", NULL, NULL, FL_RUNFILE_PER_ITERATION, 0, 0, 0, 0 },
    };
    int ids[4];
    fl_error e;
    for (int s = 0; s < 4; s++) {
        assert_int_equal(fl_runfile_series(rf, defs[s].name, defs[s].unit, defs[s].description, defs[s].per,
                                           defs[s].window, defs[s].stride, defs[s].offset, &ids[s], &e),
                         FL_OK);
        assert_int_equal(ids[s], s);
    }
    start_ok(rf);
    /* 77 frames: two full batches of 32 and a partial one; values in between */
    enum { N = 77 };
    int64_t written[4] = { 0 };
    float buf[FS];
    for (int64_t i = 0; i < N; i++) {
        frame_fill(buf, i, FS);
        assert_int_equal(fl_runfile_frame(rf, i, buf, cond_of(i), &e), FL_OK);
        for (int s = 0; s < 3; s++) {
            int64_t want = defs[s].n * (i + 1) / N; /* spread over the frames */
            for (; written[s] < want; written[s]++)
                assert_int_equal(fl_runfile_value(rf, ids[s], value_of(s, written[s]), &e), FL_OK);
        }
    }
    fl_runfile_totals t = { N, 9000, 12, 48, 0.5 };
    close_ok(rf, "complete", &t);

    hid_t f = open_read(p);
    frames_are(f, N, FS);
    status_is(f, "complete");
    attr_i64_is(f, "frames_emitted", N);
    attr_i64_is(f, "iterations", 9000);
    static const char *const pers[3] = { "frame", "window", "iteration" };
    for (int s = 0; s < 4; s++) {
        char path[128];
        snprintf(path, sizeof path, "metrics/%s", defs[s].name);
        hsize_t dims[1], maxd[1];
        assert_int_equal(shape_of(f, path, H5T_IEEE_F64LE, dims, maxd), 1);
        assert_int_equal(dims[0], defs[s].n);
        assert_true(maxd[0] == H5S_UNLIMITED);
        hid_t d = dopen(f, path);
        attr_str_is(d, "unit", defs[s].unit ? defs[s].unit : "");
        attr_str_is(d, "description", defs[s].description ? defs[s].description : "");
        attr_str_is(d, "per", pers[defs[s].per]);
        attr_i64_is(d, "window", defs[s].window);
        attr_i64_is(d, "stride", defs[s].stride);
        attr_i64_is(d, "offset", defs[s].offset);
        if (defs[s].n) {
            double *v = malloc((size_t)defs[s].n * sizeof *v);
            assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_DOUBLE, 0, defs[s].n, v, &e), FL_OK);
            for (int64_t i = 0; i < defs[s].n; i++) {
                double want = value_of(s, i);
                if (memcmp(&v[i], &want, 8))
                    fail_msg("%s[%lld] = %.17g, expected %.17g", path, (long long)i, v[i], want);
            }
            free(v);
        }
        dclose(d);
    }
    fl_runfile_close_read(f);
    unlink(p);
}

/* ---- trace and snapshots ---------------------------------------------------------------- */

static void test_trace_and_snapshots(void **unused)
{
    (void)unused;
    char p[512];
    enum { TP = 5, Q = 3, FS2 = 2 * 3 * 2 };
    fl_runfile_info in = base_info();
    in.channels = 2;
    in.height = 3;
    in.width = 2;
    in.positions = Q;
    in.context = 0;
    in.trace_positions = TP;
    in.snapshot_every = 2;
    fl_level lv3[Q] = { { 0.1, 0.9, 0.1 }, { 0.5, 0.5, 0.5 }, { 0.9, 0.1, 0.9 } };
    in.levels = lv3;

    /* before any trace: NaN ("not measured yet", never 0) and zero counts; no snapshots */
    path_in(p, sizeof p, "trace0.h5");
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    close_ok(rf, "complete", NULL);
    hid_t f = open_read(p);
    static const char *const tn[3] = { "trace/position_error", "trace/position_error_num", "trace/position_error_den" };
    hsize_t dims[5], maxd[5];
    for (int k = 0; k < 3; k++) {
        double v[TP];
        assert_int_equal(shape_of(f, tn[k], H5T_IEEE_F64LE, dims, maxd), 1);
        assert_int_equal(dims[0], TP);
        read_all(f, tn[k], H5T_NATIVE_DOUBLE, v);
        for (int i = 0; i < TP; i++)
            assert_true(isnan(v[i]));
    }
    int64_t cnt[TP];
    assert_int_equal(shape_of(f, "trace/position_error_count", H5T_STD_I64LE, dims, maxd), 1);
    read_all(f, "trace/position_error_count", H5T_NATIVE_INT64, cnt);
    for (int i = 0; i < TP; i++)
        assert_int_equal(cnt[i], 0);
    assert_int_equal(shape_of(f, "trace/queue", H5T_IEEE_F32LE, dims, maxd), 5);
    assert_int_equal(dims[0], 0);
    assert_true(dims[1] == Q && dims[2] == 2 && dims[3] == 3 && dims[4] == 2);
    fl_runfile_close_read(f);
    unlink(p);

    /* traces (the last one wins) and three snapshots */
    path_in(p, sizeof p, "trace.h5");
    rf = create_ok(p, &in);
    start_ok(rf);
    fl_error e;
    double num[TP] = { 1, 2, 3, 4, 5 }, den[TP] = { 2, 2, 2, 2, 2 };
    int64_t count[TP] = { 1, 1, 1, 1, 1 };
    assert_int_equal(fl_runfile_trace(rf, num, den, count, &e), FL_OK);
    double num2[TP] = { 0.5, 3.0, 7.25, 1e-300, 9 }, den2[TP] = { 4.0, 0.0, 2.0, 3.0, 1 };
    int64_t count2[TP] = { 3, 5, 0, 7, INT64_MAX };
    assert_int_equal(fl_runfile_trace(rf, num2, den2, count2, &e), FL_OK);
    float snap[3][Q * FS2];
    int32_t steps[3][Q];
    int64_t iters[3] = { 0, 2, 4 };
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < Q * FS2; i++) {
            uint32_t b = mix((uint64_t)(s * 1000 + i)) & 0xBFFFFFFFu;
            memcpy(&snap[s][i], &b, 4);
        }
        for (int q = 0; q < Q; q++)
            steps[s][q] = s * 10 + q - 1;
        assert_int_equal(fl_runfile_snapshot(rf, iters[s], snap[s], steps[s], &e), FL_OK);
    }
    frames_ok(rf, 0, 3, FS2);
    close_ok(rf, "complete", NULL);
    f = open_read(p);
    double v[TP];
    read_all(f, "trace/position_error_num", H5T_NATIVE_DOUBLE, v);
    assert_memory_equal(v, num2, sizeof v);
    read_all(f, "trace/position_error_den", H5T_NATIVE_DOUBLE, v);
    assert_memory_equal(v, den2, sizeof v);
    read_all(f, "trace/position_error_count", H5T_NATIVE_INT64, cnt);
    assert_memory_equal(cnt, count2, sizeof cnt);
    read_all(f, "trace/position_error", H5T_NATIVE_DOUBLE, v);
    for (int i = 0; i < TP; i++) {
        if (count2[i] && den2[i] > 0) {
            double want = num2[i] / den2[i];
            assert_memory_equal(&v[i], &want, 8);
        } else {
            assert_true(isnan(v[i])); /* no count or no denominator: not measured */
        }
    }
    hid_t d = dopen(f, "trace/position_error");
    attr_str_is(d, "description",
                "relative noise-prediction error per queue position: sum |out - exact|^2 / sum |exact|^2 over the iterations that wrote it");
    dclose(d);
    assert_int_equal(shape_of(f, "trace/queue", H5T_IEEE_F32LE, dims, maxd), 5);
    assert_int_equal(dims[0], 3);
    float qback[3][Q * FS2];
    read_all(f, "trace/queue", H5T_NATIVE_FLOAT, qback);
    assert_memory_equal(qback, snap, sizeof snap);
    int64_t qi[3];
    assert_int_equal(shape_of(f, "trace/queue_iteration", H5T_STD_I64LE, dims, maxd), 1);
    assert_int_equal(dims[0], 3);
    read_all(f, "trace/queue_iteration", H5T_NATIVE_INT64, qi);
    assert_memory_equal(qi, iters, sizeof qi);
    int32_t qs[3][Q];
    assert_int_equal(shape_of(f, "trace/queue_step", H5T_STD_I32LE, dims, maxd), 2);
    assert_true(dims[0] == 3 && dims[1] == Q);
    read_all(f, "trace/queue_step", H5T_NATIVE_INT32, qs);
    assert_memory_equal(qs, steps, sizeof qs);
    attr_i64_on(f, "trace/queue", "every", 2);
    frames_are(f, 3, FS2);
    fl_runfile_close_read(f);
    unlink(p);

    /* neither asked for: the calls do nothing and succeed */
    path_in(p, sizeof p, "notrace.h5");
    in = base_info();
    rf = create_ok(p, &in);
    start_ok(rf);
    float big[POS * FS] = { 0 };
    int32_t st6[POS] = { 0 };
    assert_int_equal(fl_runfile_trace(rf, num, den, count, &e), FL_OK);
    assert_int_equal(fl_runfile_snapshot(rf, 0, big, st6, &e), FL_OK);
    close_ok(rf, "complete", NULL);
    f = open_read(p);
    assert_false(exists(f, "trace/position_error"));
    assert_false(exists(f, "trace/queue"));
    fl_runfile_close_read(f);
    unlink(p);
}

/* ---- status ------------------------------------------------------------------------------- */

static void test_status_values(void **unused)
{
    (void)unused;
    static const char *const statuses[] = { "complete", "interrupted", "failed", "a-status-longer-than-16" };
    static const char *const stored[] = { "complete", "interrupted", "failed", "a-status-longer-" };
    for (int i = 0; i < 4; i++) {
        char p[512], name[32];
        snprintf(name, sizeof name, "status%d.h5", i);
        path_in(p, sizeof p, name);
        fl_runfile_info in = base_info();
        fl_runfile *rf = create_ok(p, &in);
        if (i != 1) /* also closed without ever starting */
            start_ok(rf);
        if (i != 1)
            frames_ok(rf, 0, 5, FS);
        fl_runfile_totals t = { 5 + i, 10 + i, 20 + i, 30 + i, 0.25 * i };
        close_ok(rf, statuses[i], &t);
        hid_t f = open_read(p);
        status_is(f, stored[i]);
        attr_i64_is(f, "frames_emitted", 5 + i);
        attr_i64_is(f, "iterations", 10 + i);
        attr_i64_is(f, "window_calls", 20 + i);
        attr_i64_is(f, "frame_evals", 30 + i);
        attr_f64_is(f, "seconds", 0.25 * i);
        frames_are(f, i != 1 ? 5 : 0, FS);
        fl_runfile_close_read(f);
        unlink(p);
    }
}

/* A writer killed (SIGKILL) leaves a file that opens, says "running", and holds at least the
 * frames synced before the kill, bit for bit. */
static void test_killed_writer_file_opens(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "killed.h5");
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60); /* never hang the suite */
        fl_runfile_info in = base_info();
        fl_runfile *rf = NULL;
        fl_error e;
        if (fl_runfile_create(&rf, p, &in, &e) || fl_runfile_start(rf, &e))
            _exit(2);
        float buf[FS];
        for (int64_t i = 0; i < 45; i++) {
            frame_fill(buf, i, FS);
            if (fl_runfile_frame(rf, i, buf, cond_of(i), &e))
                _exit(3);
            if (i == 39 && fl_runfile_sync(rf, &e))
                _exit(4);
        }
        raise(SIGKILL);
        _exit(5);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFSIGNALED(ws) || WTERMSIG(ws) != SIGKILL)
        fail_msg("child status %#x", ws);
    hid_t f = open_read(p);
    status_is(f, "running");
    hsize_t dims[4], maxd[4];
    shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd);
    assert_true(dims[0] >= 40 && dims[0] <= 45);
    frames_are(f, (int64_t)dims[0], FS);
    fl_runfile_close_read(f);
    unlink(p);
}

/* ---- SWMR: a reader in another process -------------------------------------------------- */

/* The reader: reports every new frame count it sees ("rows N"), checking each new frame bit
 * for bit and that the count never shrinks; stops at `expect` frames or after 20 s. */
static int swmr_reader(const char *p, int64_t expect)
{
    int64_t fid;
    fl_error e;
    double t0 = now_s();
    while (fl_runfile_open_read(p, &fid, &e)) {
        if (now_s() - t0 > 10) {
            printf("BAD cannot open: %s\n", e.msg);
            return 2;
        }
        sleep_ms(10);
    }
    hid_t f = (hid_t)fid;
    char status[32] = "";
    fl_h5_get_attr_str(f, "status", status, sizeof status, &e);
    printf("status %s\n", status);
    fflush(stdout);
    fl_h5_lock();
    hid_t d = H5Dopen2(f, "frames/latent", H5P_DEFAULT), c = H5Dopen2(f, "frames/condition", H5P_DEFAULT);
    fl_h5_unlock();
    int64_t seen = 0, seen_c = 0;
    int rc = 1;
    float got[FS], want[FS];
    while (now_s() - t0 < 20) {
        fl_h5_lock();
        int bad = H5Drefresh(d) < 0 || H5Drefresh(c) < 0;
        fl_h5_unlock();
        if (bad) {
            printf("BAD refresh\n");
            break;
        }
        int64_t n = fl_h5_rows(d), nc = fl_h5_rows(c);
        if (n < seen || nc < seen_c) {
            printf("BAD shrank: %lld -> %lld frames\n", (long long)seen, (long long)n);
            break;
        }
        for (int64_t i = seen; i < n && !bad; i++) {
            frame_fill(want, i, FS);
            if (fl_h5_read_rows(d, H5T_NATIVE_FLOAT, i, 1, got, &e) || memcmp(got, want, sizeof got)) {
                printf("BAD frame %lld of %lld\n", (long long)i, (long long)n);
                bad = 1;
            }
        }
        for (int64_t i = seen_c; i < nc && !bad; i++) {
            int32_t cv;
            if (fl_h5_read_rows(c, H5T_NATIVE_INT32, i, 1, &cv, &e) || cv != cond_of(i)) {
                printf("BAD condition %lld\n", (long long)i);
                bad = 1;
            }
        }
        if (bad)
            break;
        seen_c = nc;
        if (n > seen) {
            seen = n;
            printf("rows %lld\n", (long long)n);
            fflush(stdout);
        }
        if (seen == expect) {
            rc = 0;
            break;
        }
        sleep_ms(5);
    }
    printf("end %lld\n", (long long)seen);
    fl_h5_lock();
    H5Dclose(d);
    H5Dclose(c);
    fl_h5_unlock();
    fl_runfile_close_read(fid);
    return rc;
}

typedef struct reader_proc {
    pid_t pid;
    int fd;
    char buf[8192];
    size_t len;
    int64_t last_rows;
    char log[8192];
} reader_proc;

/* Reads the reader's lines until it reports `rows` frames (1) or timeout (0). */
static int wait_rows(reader_proc *r, int64_t rows, double timeout)
{
    double t0 = now_s();
    while (now_s() - t0 < timeout) {
        char *nl;
        while ((nl = memchr(r->buf, '\n', r->len))) {
            *nl = 0;
            long long n;
            if (strlen(r->log) + strlen(r->buf) + 3 < sizeof r->log) {
                strcat(r->log, r->buf);
                strcat(r->log, "; ");
            }
            if (!strncmp(r->buf, "BAD", 3))
                fail_msg("SWMR reader: %s", r->buf);
            if (sscanf(r->buf, "rows %lld", &n) == 1) {
                if (n < r->last_rows)
                    fail_msg("SWMR reader: frames went from %lld to %lld", (long long)r->last_rows, n);
                r->last_rows = n;
            }
            size_t used = (size_t)(nl - r->buf) + 1;
            memmove(r->buf, nl + 1, r->len - used);
            r->len -= used;
            if (r->last_rows == rows)
                return 1;
        }
        struct pollfd pf = { r->fd, POLLIN, 0 };
        if (poll(&pf, 1, 50) > 0) {
            ssize_t k = read(r->fd, r->buf + r->len, sizeof r->buf - 1 - r->len);
            if (k <= 0)
                return r->last_rows == rows;
            r->len += (size_t)k;
        }
    }
    return r->last_rows == rows;
}

static void test_swmr_reader_sees_growing_file(void **unused)
{
    (void)unused;
    char p[512], self[1024];
    path_in(p, sizeof p, "swmr.h5");
    ssize_t sn = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(sn > 0);
    self[sn] = 0;
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    frames_ok(rf, 0, 32, FS);
    fl_error e;
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    enum { TOTAL = 104 };
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        char *args[] = { self, (char *)"--swmr-reader", p, (char *)"104", NULL };
        execv(self, args);
        _exit(127);
    }
    close(fds[1]);
    reader_proc r = { .pid = pid, .fd = fds[0], .len = 0, .last_rows = 0, .log = "" };
    const char *failed = NULL;
    double lag = 0;
    /* synced frames are visible */
    if (!wait_rows(&r, 32, 10))
        failed = "the reader never saw 32 frames";
    else if (!strstr(r.log, "status running"))
        failed = "the reader did not see status running";
    if (!failed) {
        frames_ok(rf, 32, 64, FS);
        assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
        if (!wait_rows(&r, 64, 10))
            failed = "the reader never saw 64 frames";
    }
    if (!failed) {
        /* without a sync: the writer's own flush makes them visible within about 0.5 s */
        frames_ok(rf, 64, TOTAL, FS);
        double t0 = now_s();
        if (!wait_rows(&r, TOTAL, 10))
            failed = "the reader never saw the frames written without a sync";
        lag = now_s() - t0;
    }
    close_ok(rf, "complete", NULL);
    if (failed) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(fds[0]);
        fail_msg("%s (%s)", failed, r.log);
    }
    if (lag > 5.0)
        fail_msg("the reader saw the frames only after %.2f s", lag);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    wait_rows(&r, -1, 0.2);
    close(fds[0]);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        fail_msg("reader status %#x (%s)", ws, r.log);
    hid_t f = open_read(p);
    frames_are(f, TOTAL, FS);
    fl_runfile_close_read(f);
    unlink(p);
}

/* ---- checkpoints ---------------------------------------------------------------------- */

static fl_state *make_state(int64_t emitted, int tag)
{
    fl_state *st = fl_state_new();
    double q[50];
    for (int i = 0; i < 50; i++)
        q[i] = tag * 100.0 + i * 0.5;
    fl_state_put(st, "sched/queue", FL_STATE_F64, q, 50, NULL);
    fl_state_put_i64(st, "run/emitted", emitted, NULL);
    fl_state_put_i64(st, "tag", tag, NULL);
    return st;
}

static void state_is(const char *sp, int64_t emitted, int tag, const char *run_file, int64_t in_file)
{
    fl_state *st = NULL;
    fl_error e;
    if (fl_state_load_file(sp, &st, &e))
        fail_msg("%s", e.msg);
    fl_state *ref = make_state(emitted, tag);
    assert_int_equal(fl_state_len(st), fl_state_len(ref));
    double q[50], qr[50];
    assert_int_equal(fl_state_get(st, "sched/queue", FL_STATE_F64, q, 50, &e), FL_OK);
    assert_int_equal(fl_state_get(ref, "sched/queue", FL_STATE_F64, qr, 50, &e), FL_OK);
    assert_memory_equal(q, qr, sizeof q);
    int64_t v;
    assert_int_equal(fl_state_get_i64(st, "tag", &v, &e), FL_OK);
    assert_int_equal(v, tag);
    fl_state_free(ref);
    fl_state_free(st);
    fl_h5_lock();
    hid_t f = H5Fopen(sp, H5F_ACC_RDONLY, H5P_DEFAULT);
    fl_h5_unlock();
    assert_true(f >= 0);
    char want[64];
    attr_str_is(f, "run_file", run_file);
    snprintf(want, sizeof want, "%lld", (long long)emitted);
    attr_str_is(f, "emitted", want);
    snprintf(want, sizeof want, "%lld", (long long)in_file);
    attr_str_is(f, "frames_in_file", want);
    fl_h5_lock();
    H5Fclose(f);
    fl_h5_unlock();
}

/* A state is saved only once every frame queued before it is in the file; its attributes
 * say so. */
static void test_checkpoint_behind_frames(void **unused)
{
    (void)unused;
    char p[512], sp[512], stmp[600];
    path_in(p, sizeof p, "ckpt.h5");
    path_in(sp, sizeof sp, "ckpt_state.h5");
    snprintf(stmp, sizeof stmp, "%s.tmp", sp);
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    fl_error e;
    frames_ok(rf, 0, 45, FS); /* one batch of 32, 13 waiting */
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(45, 1), sp, &e), FL_OK);
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    state_is(sp, 45, 1, p, 45);
    assert_false(file_exists(stmp));
    frames_ok(rf, 45, 50, FS);
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(50, 2), sp, &e), FL_OK);
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    state_is(sp, 50, 2, p, 50);
    close_ok(rf, "complete", NULL);
    hid_t f = open_read(p);
    frames_are(f, 50, FS);
    fl_runfile_close_read(f);
    unlink(p);
    unlink(sp);
}

/* A state with a newer one queued behind it is skipped. The writer is held (the test holds
 * the HDF5 lock, which its first write needs) while both are queued. */
static void test_checkpoint_superseded(void **unused)
{
    (void)unused;
    char p[512], sa[512], sb[512];
    path_in(p, sizeof p, "supersede.h5");
    path_in(sa, sizeof sa, "state_a.h5");
    path_in(sb, sizeof sb, "state_b.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    fl_error e;
    fl_h5_lock();
    frames_ok(rf, 0, 32, FS); /* the 32nd frame's batch write waits for the lock */
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(32, 1), sa, &e), FL_OK);
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(32, 2), sb, &e), FL_OK);
    fl_h5_unlock();
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    assert_false(file_exists(sa));
    state_is(sb, 32, 2, p, 32);
    close_ok(rf, "complete", NULL);
    unlink(p);
    unlink(sb);
}

/* ---- rename ------------------------------------------------------------------------------ */

static void test_rename_while_writing(void **unused)
{
    (void)unused;
    char p[512], q[512], sp[512];
    path_in(p, sizeof p, "run.h5.tmp");
    path_in(q, sizeof q, "run.h5");
    path_in(sp, sizeof sp, "rename_state.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    frames_ok(rf, 0, 40, FS);
    fl_error e;
    assert_int_equal(fl_runfile_rename(rf, q, &e), FL_OK);
    assert_false(file_exists(p));
    assert_true(file_exists(q));
    frames_ok(rf, 40, 70, FS);
    /* the writer knows its new name */
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(70, 3), sp, &e), FL_OK);
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    state_is(sp, 70, 3, q, 70);
    /* a rename that cannot happen: an error naming both, the file stays and is written on */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no_such_dir/run.h5", tmp);
    assert_int_equal(fl_runfile_rename(rf, bad, &e), FL_E_IO);
    char want[1300];
    snprintf(want, sizeof want, "%s: cannot rename to %s: No such file or directory", q, bad);
    assert_string_equal(e.msg, want);
    frames_ok(rf, 70, 75, FS);
    fl_runfile_totals t = { 75, 1, 1, 1, 1 };
    close_ok(rf, "complete", &t);
    assert_false(file_exists(p));
    hid_t f = open_read(q);
    frames_are(f, 75, FS);
    status_is(f, "complete");
    attr_i64_is(f, "frames_emitted", 75);
    fl_runfile_close_read(f);
    unlink(q);
    unlink(sp);
}

/* ---- the queue bound ---------------------------------------------------------------------- */

enum { BIG_SIDE = 512, BIG_FS = BIG_SIDE * BIG_SIDE, BIG_N = 300 }; /* 1 MiB frames */

typedef struct producer {
    fl_runfile *rf;
    pthread_mutex_t mu;
    int64_t done;
    fl_status st;
    fl_error err;
} producer;

static void big_frame(float *f, int64_t i)
{
    memset(f, 0, BIG_FS * sizeof *f);
    for (int k = 0; k < 16; k++)
        f[k * 4099] = (float)(i * 16 + k);
}

static void *producer_main(void *p)
{
    producer *pr = p;
    float *f = malloc(BIG_FS * sizeof *f);
    for (int64_t i = 0; i < BIG_N; i++) {
        big_frame(f, i);
        fl_status st = fl_runfile_frame(pr->rf, i, f, (int32_t)i, &pr->err);
        pthread_mutex_lock(&pr->mu);
        pr->st = st;
        if (!st)
            pr->done = i + 1;
        pthread_mutex_unlock(&pr->mu);
        if (st)
            break;
    }
    free(f);
    return NULL;
}

static int64_t produced(producer *pr)
{
    pthread_mutex_lock(&pr->mu);
    int64_t n = pr->done;
    pthread_mutex_unlock(&pr->mu);
    return n;
}

/* With the writer held, generation gets at most FL_RUNFILE_QUEUE_BYTES (plus the batch the
 * writer took) ahead, then waits; released, everything is written. */
static void test_queue_bound_backpressure(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "queue.h5");
    fl_runfile_info in = base_info();
    in.channels = 1;
    in.height = in.width = BIG_SIDE;
    in.positions = 0;
    in.frames = BIG_N;
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    producer pr = { .rf = rf, .done = 0, .st = FL_OK };
    pthread_mutex_init(&pr.mu, NULL);
    fl_h5_lock(); /* the writer's first write waits for this */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer_main, &pr), 0);
    double t0 = now_s(), still_since = now_s();
    int64_t last = -1;
    /* queued: at most the bound (each frame 1 MiB plus its record); the writer holds at most
     * one batch of 32. Waits until generation stops (0.5 s without a frame) in that range,
     * or runs through (the bound is not kept). */
    int64_t per = (int64_t)(FL_RUNFILE_QUEUE_BYTES / (BIG_FS * sizeof(float)));
    while (now_s() - t0 < 30) {
        int64_t n = produced(&pr);
        if (n == BIG_N)
            break;
        if (n != last) {
            last = n;
            still_since = now_s();
        } else if (now_s() - still_since > 0.5 && n >= per - 8) {
            break;
        }
        sleep_ms(20);
    }
    int64_t held = produced(&pr);
    fl_h5_unlock();
    assert_int_equal(pthread_join(th, NULL), 0);
    pthread_mutex_destroy(&pr.mu);
    fl_runfile_totals t = { BIG_N, 0, 0, 0, 0 };
    fl_error ce;
    fl_status cst = fl_runfile_close(rf, "complete", &t, &ce);
    if (pr.st)
        fail_msg("%s", pr.err.msg);
    if (cst)
        fail_msg("%s", ce.msg);
    assert_int_equal(pr.done, BIG_N);
    if (held > per + 32 || held < per - 8)
        fail_msg("generation got %lld frames ahead of a held writer (bound: %lld queued + 32)", (long long)held,
                 (long long)per);
    hid_t f = open_read(p);
    hsize_t dims[4], maxd[4];
    shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd);
    assert_int_equal(dims[0], BIG_N);
    hid_t d = dopen(f, "frames/latent"), c = dopen(f, "frames/condition");
    float *got = malloc(BIG_FS * sizeof *got), *want = malloc(BIG_FS * sizeof *want);
    int32_t *conds = malloc(BIG_N * sizeof *conds);
    fl_error e;
    assert_int_equal(fl_h5_read_rows(c, H5T_NATIVE_INT32, 0, BIG_N, conds, &e), FL_OK);
    for (int64_t i = 0; i < BIG_N; i++) {
        assert_int_equal(fl_h5_read_rows(d, H5T_NATIVE_FLOAT, i, 1, got, &e), FL_OK);
        big_frame(want, i);
        if (memcmp(got, want, BIG_FS * sizeof *got) || conds[i] != (int32_t)i)
            fail_msg("frame %lld differs", (long long)i);
    }
    free(got);
    free(want);
    free(conds);
    dclose(d);
    dclose(c);
    fl_runfile_close_read(f);
    unlink(p);
}

/* ---- the space guard ---------------------------------------------------------------------- */

enum { SG_C = 4, SG_S = 32, SG_FS = SG_C * SG_S * SG_S }; /* 16 KiB frames of random bits */

static fl_runfile_info guard_info(void)
{
    fl_runfile_info in = base_info();
    in.channels = SG_C;
    in.height = in.width = SG_S;
    in.frames = 100000;
    return in;
}

/* Writes frames until the writer refuses (or `max`); returns the frames accepted. */
static int64_t write_until_refused(fl_runfile *rf, int64_t max, fl_status *st, fl_error *e)
{
    float *buf = malloc(SG_FS * sizeof *buf);
    int64_t i;
    *st = FL_OK;
    for (i = 0; i < max; i++) {
        frame_fill(buf, i, SG_FS);
        if ((*st = fl_runfile_frame(rf, i, buf, cond_of(i), e)))
            break;
        if (i % 64 == 63 && (*st = fl_runfile_sync(rf, e)))
            break;
    }
    free(buf);
    if (!*st)
        *st = fl_runfile_sync(rf, e);
    return i;
}

/* The file-size limit (RLIMIT_FSIZE), in a child with SIGXFSZ at its default: a write past
 * the limit would kill it. The writer stops before, with an error naming the file; the file
 * opens, says "failed", and its frames are intact. */
static void test_space_guard_file_size_limit(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "fsize.h5");
    const rlim_t limit = 4 << 20;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        close(fds[0]);
        signal(SIGXFSZ, SIG_DFL);
        struct rlimit rl = { limit, limit };
        if (setrlimit(RLIMIT_FSIZE, &rl))
            _exit(2);
        fl_runfile_info in = guard_info();
        fl_runfile *rf = NULL;
        fl_error e, ce;
        if (fl_runfile_create(&rf, p, &in, &e) || fl_runfile_start(rf, &e))
            _exit(3);
        fl_status st;
        int64_t n = write_until_refused(rf, 2000, &st, &e);
        /* after the failure, more work is refused with the same error */
        float zero[SG_FS] = { 0 };
        fl_error e2;
        fl_status st2 = fl_runfile_frame(rf, n + 1000, zero, 0, &e2);
        fl_status st3 = fl_runfile_close(rf, "complete", NULL, &ce);
        char line[4 * FL_ERRMSG_MAX];
        int k = snprintf(line, sizeof line, "%lld|%d|%d|%d|%s|%s|%s", (long long)n, (int)st, (int)st2, (int)st3, e.msg,
                         e2.msg, ce.msg);
        if (write(fds[1], line, (size_t)k) < 0)
            _exit(4);
        _exit(0);
    }
    close(fds[1]);
    char line[4 * FL_ERRMSG_MAX] = "";
    ssize_t n = 0, k;
    while ((k = read(fds[0], line + n, sizeof line - 1 - (size_t)n)) > 0)
        n += k;
    line[n] = 0;
    close(fds[0]);
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        fail_msg("child status %#x (a write went past the limit?) said \"%s\"", ws, line);
    long long accepted;
    int st, st2, st3;
    char msg[FL_ERRMSG_MAX + 1] = "";
    assert_int_equal(sscanf(line, "%lld|%d|%d|%d|%512[^|]", &accepted, &st, &st2, &st3, msg), 5);
    assert_int_equal(st, FL_E_IO);
    assert_int_equal(st2, FL_E_IO);
    assert_int_equal(st3, FL_E_IO);
    char want[700];
    snprintf(want, sizeof want, "%s: no room to write: the file-size limit is %llu bytes", p, (unsigned long long)limit);
    assert_msg_has(msg, want);
    assert_msg_has(msg, "stopped before it could be damaged");
    /* the same error from every later call (the second and third messages) */
    const char *second = strchr(strchr(strchr(strchr(strchr(line, '|') + 1, '|') + 1, '|') + 1, '|') + 1, '|');
    assert_non_null(second);
    assert_true(strncmp(second + 1, msg, strlen(msg)) == 0);
    assert_true(file_size(p) <= (int64_t)limit);
    hid_t f = open_read(p);
    status_is(f, "failed");
    hsize_t dims[4], maxd[4];
    shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd);
    assert_true(dims[0] >= 32 && (int64_t)dims[0] <= accepted);
    assert_int_equal(dims[0] % 32, 0); /* whole batches, nothing half-written */
    frames_are(f, (int64_t)dims[0], SG_FS);
    fl_runfile_close_read(f);
    unlink(p);
}

/* The free-space reserve: a disk (statvfs, faked) with a few MiB beyond the reserve fills as
 * the file grows; the writer stops with an error naming the file before the reserve is
 * touched. Checkpoints after that are refused (and their state freed), the old state stays. */
static void test_space_guard_disk_reserve(void **unused)
{
    (void)unused;
    char p[512], sp[512];
    path_in(p, sizeof p, "diskfull.h5");
    path_in(sp, sizeof sp, "diskfull_state.h5");
    fl_runfile_info in = guard_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    fl_error e;
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(0, 7), sp, &e), FL_OK);
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    snprintf(fake_disk_file, sizeof fake_disk_file, "%s", p);
    const uint64_t room = 5 << 20;
    fake_disk_bytes = FL_RUNFILE_RESERVE_BYTES + room + (uint64_t)file_size(p);
    int calls0 = statvfs_calls;
    fake_disk = 1;
    fl_status st;
    int64_t accepted = write_until_refused(rf, 3000, &st, &e);
    fake_disk = 0;
    assert_true(statvfs_calls > calls0); /* the guard asked the file system */
    assert_int_equal(st, FL_E_IO);
    char want[700];
    snprintf(want, sizeof want, "%s: the disk is nearly full (", p);
    assert_msg_has(e.msg, want);
    assert_msg_has(e.msg, "MiB free, 64 MiB kept in reserve); stopped before the run file could be damaged");
    assert_true(accepted < 3000);
    /* refused from now on, the state given is freed (ASan checks), the old state stays */
    fl_error e2;
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(999, 8), sp, &e2), FL_E_IO);
    assert_string_equal(e2.msg, e.msg);
    assert_int_equal(fl_runfile_sync(rf, &e2), FL_E_IO);
    assert_string_equal(e2.msg, e.msg);
    fl_error ce;
    fl_runfile_totals t = { accepted, 1, 1, 1, 1 };
    assert_int_equal(fl_runfile_close(rf, "complete", &t, &ce), FL_E_IO);
    assert_string_equal(ce.msg, e.msg);
    state_is(sp, 0, 7, p, 0);
    /* the reserve was never touched: the file grew by less than `room` */
    assert_true((uint64_t)file_size(p) + FL_RUNFILE_RESERVE_BYTES <= fake_disk_bytes);
    hid_t f = open_read(p);
    status_is(f, "failed");
    attr_i64_is(f, "frames_emitted", accepted);
    hsize_t dims[4], maxd[4];
    shape_of(f, "frames/latent", H5T_IEEE_F32LE, dims, maxd);
    assert_true(dims[0] >= 32 && (int64_t)dims[0] <= accepted);
    frames_are(f, (int64_t)dims[0], SG_FS);
    fl_runfile_close_read(f);
    unlink(p);
    unlink(sp);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void write_bytes(const char *p, const void *data, size_t n)
{
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

static void test_create_errors(void **unused)
{
    (void)unused;
    char p[512], want[700];
    fl_runfile_info in = base_info();
    fl_runfile *rf = (fl_runfile *)1;
    fl_error e;
    /* an existing file: refused, and left exactly as it was */
    path_in(p, sizeof p, "precious.h5");
    write_bytes(p, "precious bytes", 14);
    assert_int_equal(fl_runfile_create(&rf, p, &in, &e), FL_E_IO);
    assert_null(rf);
    snprintf(want, sizeof want, "%s: cannot create the run file (it exists)", p);
    assert_string_equal(e.msg, want);
    char back[32] = "";
    FILE *fp = fopen(p, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(back, 1, sizeof back, fp), 14);
    fclose(fp);
    assert_memory_equal(back, "precious bytes", 14);
    unlink(p);
    /* a directory */
    path_in(p, sizeof p, "a_dir");
    assert_int_equal(mkdir(p, 0700), 0);
    rf = (fl_runfile *)1;
    assert_int_equal(fl_runfile_create(&rf, p, &in, &e), FL_E_IO);
    assert_null(rf);
    snprintf(want, sizeof want, "%s: cannot create the run file (it exists)", p);
    assert_string_equal(e.msg, want);
    rmdir(p);
    /* a missing directory */
    path_in(p, sizeof p, "missing_dir/run.h5");
    assert_int_equal(fl_runfile_create(&rf, p, &in, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: cannot create the run file (No such file or directory)", p);
    assert_string_equal(e.msg, want);
    /* a failure after the file was made (frames of zero channels): the error names the
     * dataset, and the half-made file is removed */
    path_in(p, sizeof p, "zero_channels.h5");
    in.channels = 0;
    rf = (fl_runfile *)1;
    assert_int_equal(fl_runfile_create(&rf, p, &in, &e), FL_E_IO);
    assert_null(rf);
    assert_msg_has(e.msg, "frames/latent");
    assert_false(file_exists(p));
    assert_msg_has(e.msg, p); /* named like every other run-file error */
}

static void test_open_read_errors(void **unused)
{
    (void)unused;
    char p[512], want[700];
    int64_t fid = -77;
    fl_error e;
    path_in(p, sizeof p, "nothing.h5");
    assert_int_equal(fl_runfile_open_read(p, &fid, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: cannot open as an HDF5 run file (No such file or directory)", p);
    assert_string_equal(e.msg, want);
    assert_int_equal(fid, -77);
    assert_int_equal(fl_runfile_open_read(tmp, &fid, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: cannot open as an HDF5 run file (not HDF5, or damaged)", tmp);
    assert_string_equal(e.msg, want);
    path_in(p, sizeof p, "text.h5");
    write_bytes(p, "not HDF5 at all\n", 16);
    assert_int_equal(fl_runfile_open_read(p, &fid, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: cannot open as an HDF5 run file (not HDF5, or damaged)", p);
    assert_string_equal(e.msg, want);
    unlink(p);
    /* a truncated run file (a copy cut in half) */
    char full[512];
    path_in(full, sizeof full, "full.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(full, &in);
    start_ok(rf);
    frames_ok(rf, 0, 40, FS);
    close_ok(rf, "complete", NULL);
    int64_t size = file_size(full);
    char *bytes = malloc((size_t)size);
    FILE *fp = fopen(full, "rb");
    assert_int_equal(fread(bytes, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    path_in(p, sizeof p, "truncated.h5");
    write_bytes(p, bytes, (size_t)size / 2);
    free(bytes);
    assert_int_equal(fl_runfile_open_read(p, &fid, &e), FL_E_IO);
    snprintf(want, sizeof want, "%s: cannot open as an HDF5 run file (not HDF5, or damaged)", p);
    assert_string_equal(e.msg, want);
    /* an HDF5 file written without SWMR's format (another writer's) opens too */
    path_in(p, sizeof p, "plain.h5");
    fl_h5_lock();
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    fl_h5_unlock();
    assert_int_equal(fl_runfile_open_read(p, &fid, &e), FL_OK);
    fl_runfile_close_read(fid);
    unlink(p);
    unlink(full);
    path_in(p, sizeof p, "truncated.h5");
    unlink(p);
}

static void test_runfile_path(void **unused)
{
    (void)unused;
    char buf[600], want[600];
    fl_runfile_path(tmp, buf, sizeof buf);
    snprintf(want, sizeof want, "%s/run.h5", tmp);
    assert_string_equal(buf, want);
    fl_runfile_path("/no/such/thing.h5", buf, sizeof buf);
    assert_string_equal(buf, "/no/such/thing.h5");
    char p[512];
    path_in(p, sizeof p, "a_file");
    write_bytes(p, "x", 1);
    fl_runfile_path(p, buf, sizeof buf);
    assert_string_equal(buf, p);
    unlink(p);
    char small[8];
    fl_runfile_path("/a/very/long/name.h5", small, sizeof small);
    assert_string_equal(small, "/a/very"); /* clipped, terminated */
}

static void test_series_errors(void **unused)
{
    (void)unused;
    char p[512];
    path_in(p, sizeof p, "series_err.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    fl_error e;
    int id = -1, id2 = -1;
    assert_int_equal(fl_runfile_series(rf, "loss", "", "", FL_RUNFILE_PER_FRAME, 1, 1, 0, &id, &e), FL_OK);
    assert_int_equal(fl_runfile_series(rf, "loss", "", "", FL_RUNFILE_PER_FRAME, 1, 1, 0, &id2, &e), FL_E_INVALID);
    assert_string_equal(e.msg, "series loss: declared twice");
    assert_int_equal(id2, -1);
    /* up to 256 series */
    for (int i = 1; i < 256; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d", i);
        assert_int_equal(fl_runfile_series(rf, name, "u", "d", FL_RUNFILE_PER_ITERATION, 0, 0, 0, &id, &e), FL_OK);
        assert_int_equal(id, i);
    }
    assert_int_equal(fl_runfile_series(rf, "one_more", "", "", FL_RUNFILE_PER_FRAME, 1, 1, 0, &id2, &e), FL_E_RANGE);
    assert_string_equal(e.msg, "series one_more: more than 256 series");
    start_ok(rf);
    assert_int_equal(fl_runfile_series(rf, "late", "", "", FL_RUNFILE_PER_FRAME, 1, 1, 0, &id2, &e), FL_E_INVALID);
    assert_string_equal(e.msg, "series late: declared after the run started");
    assert_int_equal(fl_runfile_value(rf, 255, 2.5, &e), FL_OK);
    assert_int_equal(fl_runfile_value(rf, 0, -1.0, &e), FL_OK);
    close_ok(rf, "complete", NULL);
    hid_t f = open_read(p);
    double v;
    read_all(f, "metrics/s255", H5T_NATIVE_DOUBLE, &v);
    assert_true(v == 2.5);
    read_all(f, "metrics/loss", H5T_NATIVE_DOUBLE, &v);
    assert_true(v == -1.0);
    hsize_t dims[1], maxd[1];
    shape_of(f, "metrics/s7", H5T_IEEE_F64LE, dims, maxd);
    assert_int_equal(dims[0], 0);
    fl_runfile_close_read(f);
    unlink(p);
}

/* A frame out of order stops the writer: the error names the file and the frame, every later
 * call returns it, close reports it and records "failed"; frames before it stay. */
static void test_frame_out_of_order_sticks(void **unused)
{
    (void)unused;
    char p[512], sp[512], want[700];
    path_in(p, sizeof p, "order.h5");
    path_in(sp, sizeof sp, "order_state.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    frames_ok(rf, 0, 3, FS);
    float buf[FS];
    frame_fill(buf, 5, FS);
    fl_error e;
    assert_int_equal(fl_runfile_frame(rf, 5, buf, 0, &e), FL_OK); /* queued; the writer finds it */
    assert_int_equal(fl_runfile_sync(rf, &e), FL_E_INVALID);
    snprintf(want, sizeof want, "%s: frame 5 out of order (expected frame 3)", p);
    assert_string_equal(e.msg, want);
    fl_error e2;
    assert_int_equal(fl_runfile_frame(rf, 6, buf, 0, &e2), FL_E_INVALID);
    assert_string_equal(e2.msg, want);
    assert_int_equal(fl_runfile_checkpoint(rf, make_state(3, 1), sp, &e2), FL_E_INVALID);
    assert_string_equal(e2.msg, want);
    assert_false(file_exists(sp));
    double num[1] = { 0 };
    int64_t cnt[1] = { 0 };
    assert_int_equal(fl_runfile_trace(rf, num, num, cnt, &e2), FL_OK); /* no trace: nothing queued */
    fl_runfile_totals t = { 3, 1, 1, 1, 1 };
    assert_int_equal(fl_runfile_close(rf, "complete", &t, &e2), FL_E_INVALID);
    assert_string_equal(e2.msg, want);
    hid_t f = open_read(p);
    status_is(f, "failed");
    attr_i64_is(f, "frames_emitted", 3);
    fl_runfile_close_read(f);
    unlink(p);

    /* a failure with no error record still fails */
    path_in(p, sizeof p, "order2.h5");
    rf = create_ok(p, &in);
    start_ok(rf);
    frames_ok(rf, 0, 2, FS);
    assert_int_equal(fl_runfile_frame(rf, 1, buf, 0, NULL), FL_OK);
    assert_int_equal(fl_runfile_sync(rf, NULL), FL_E_INVALID);
    assert_int_equal(fl_runfile_close(rf, "complete", NULL, NULL), FL_E_INVALID);
    f = open_read(p);
    status_is(f, "failed");
    fl_runfile_close_read(f);
    unlink(p);
}

/* Frames must come 0, 1, 2, ...: a gap across a batch boundary, or a first frame other than
 * 0, must be refused as a gap inside a batch is. */
static void test_frame_gap_across_batches(void **unused)
{
    (void)unused;
    /* frames in order from 0 across batches: a gap after a full batch of 32, or a first
     * frame other than 0, is refused (it used to leave rows of zeros) */
    char p[512];
    path_in(p, sizeof p, "gap.h5");
    fl_runfile_info in = base_info();
    fl_runfile *rf = create_ok(p, &in);
    start_ok(rf);
    frames_ok(rf, 0, 32, FS);
    fl_error e;
    assert_int_equal(fl_runfile_sync(rf, &e), FL_OK);
    float buf[FS];
    frame_fill(buf, 40, FS);
    fl_runfile_frame(rf, 40, buf, 0, &e);
    assert_int_equal(fl_runfile_sync(rf, &e), FL_E_INVALID);
    fl_runfile_close(rf, "failed", NULL, NULL);
    unlink(p);
    path_in(p, sizeof p, "gap0.h5");
    rf = create_ok(p, &in);
    start_ok(rf);
    fl_runfile_frame(rf, 5, buf, 0, &e);
    assert_int_equal(fl_runfile_sync(rf, &e), FL_E_INVALID);
    fl_runfile_close(rf, "failed", NULL, NULL);
    unlink(p);
}

int main(int argc, char **argv)
{
    find_real_statvfs();
    if (argc == 4 && !strcmp(argv[1], "--swmr-reader"))
        return swmr_reader(argv[2], atoll(argv[3]));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout_and_provenance),
        cmocka_unit_test(test_layout_minimal_info),
        cmocka_unit_test(test_frames_and_series_roundtrip),
        cmocka_unit_test(test_trace_and_snapshots),
        cmocka_unit_test(test_status_values),
        cmocka_unit_test(test_killed_writer_file_opens),
        cmocka_unit_test(test_swmr_reader_sees_growing_file),
        cmocka_unit_test(test_checkpoint_behind_frames),
        cmocka_unit_test(test_checkpoint_superseded),
        cmocka_unit_test(test_rename_while_writing),
        cmocka_unit_test(test_queue_bound_backpressure),
        cmocka_unit_test(test_space_guard_file_size_limit),
        cmocka_unit_test(test_space_guard_disk_reserve),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_open_read_errors),
        cmocka_unit_test(test_runfile_path),
        cmocka_unit_test(test_series_errors),
        cmocka_unit_test(test_frame_out_of_order_sticks),
        cmocka_unit_test(test_frame_gap_across_batches),
    };
    return cmocka_run_group_tests_name("runfile", tests, setup, teardown);
}
