/* cmocka suite: allocation failures on every path of a run (docs/core.md, "Allocation
 * failures"). The test is linked with -Wl,--wrap=malloc,calloc,realloc,free,strdup,strndup,
 * aligned_alloc,posix_memalign,realpath (Makefile), so every such call made by
 * libfifolab.a (and by this file) comes through the wrappers below; calls made inside
 * shared libraries (HDF5, libc) do not, while Lua's allocations do, through core/script.c's
 * allocator. For an operation, allocation number N = 0, 1, 2, ... is made to fail, with
 * every later one too ("sticky": a process out of memory stays so) or alone ("one-shot":
 * the error paths then run with memory to spare), and each attempt must
 *   - return FL_E_NOMEM, or a status whose message speaks of memory (an allocation failure
 *     that surfaces through another layer), or FL_OK when no allocation failed;
 *   - not crash (FL_OOM_TRACE=1 prints each N before it runs);
 *   - leave as many live blocks (a thread-safe table of every block), open HDF5 objects and
 *     open file descriptors as there were before.
 * A leak is printed with the stack of the failed allocation and of each block left behind
 * (symbolized by the sanitizer runtime, else by addr2line). An attempt that returns FL_OK
 * although an allocation failed is counted as "survived" and its stack printed (sticky
 * mode; one-shot with FL_OOM_NOTES=1): the operation went on without that memory. Known
 * library bugs are listed per case (`known`) with the file and line to fix.
 *
 * Which N: a counting run records a hash of the 8-frame call stack of every allocation.
 * Every N below FULL is faulted, every N whose stack was not seen before, the last TAIL
 * (closing files), and every k-th of the rest, k chosen so that at most `budget` strided
 * N run: a run repeats the same per-frame allocations, and faulting each of them costs
 * minutes and finds nothing the first occurrences do not. */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, realpath */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/config.h"
#include "tests/tmpdir.h"
#include "core/h5io.h"
#include "core/run.h"
#include "core/script.h"
#include "core/state.h"
#include "core/status.h"
#include "core/sweep.h"
#include "data/clips.h"
#include "data/procgen.h"
#include "models/empirical.h"

/* ---- the wrappers ------------------------------------------------------------------------ */

void *__real_malloc(size_t n);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__real_aligned_alloc(size_t align, size_t n);
int __real_posix_memalign(void **out, size_t align, size_t n);
char *__real_realpath(const char *path, char *resolved);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);
void *__wrap_aligned_alloc(size_t align, size_t n);
int __wrap_posix_memalign(void **out, size_t align, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
char *__wrap_realpath(const char *path, char *resolved);

/* The sanitizer runtime symbolizes a program counter ("in fn file:line"); absent (NULL)
 * in a plain build. */
void __sanitizer_symbolize_pc(void *pc, const char *fmt, char *out, size_t size)
    __attribute__((weak));

enum { BT_MAX = 10, SITE_FRAMES = 8, NBUCKET = 1 << 16, CHUNK = 4096, MAX_CHUNKS = 4096 };

/* A live block: in a chained hash table on the pointer, nodes from our own pool. */
typedef struct blk {
    struct blk *next;
    void *p;
    size_t size;
    uint64_t seq;  /* allocation ordinal over the whole process */
    int nbt;       /* stack (only in record mode) */
    void *bt[BT_MAX];
} blk;

static struct {
    pthread_mutex_t mu;
    blk *bucket[NBUCKET];
    blk *spare;
    blk *chunks[MAX_CHUNKS];
    int nchunks;
    long live;          /* tracked blocks now */
    uint64_t seq;       /* tracked allocations so far */
    long foreign_frees; /* free() of memory a shared library allocated (realpath, ...) */
    /* Fault injection; written only while no other thread runs. */
    int armed;
    long fail_at;       /* the index that fails (< 0: none) */
    int oneshot;        /* 1: only that one; 0: that one and every later one */
    int record;         /* keep stacks of new blocks and of the first failed allocation */
    int want_sites;     /* keep a hash of each allocation's stack (counting run) */
    /* Changed under mu while armed. */
    long next;          /* index of the next allocation */
    long failed;        /* allocations refused */
    int fail_nbt;
    void *fail_bt[BT_MAX];
    uint32_t *sites;
    long nsites, capsites;
    /* Test hook: *interrupt = SIGINT at allocation interrupt_at (a run's opts->stop). */
    volatile sig_atomic_t *interrupt;
    long interrupt_at;
} H = { .mu = PTHREAD_MUTEX_INITIALIZER, .fail_at = -1 };

static unsigned bucket_of(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p >> 4;
    x *= UINT64_C(0x9E3779B97F4A7C15);
    return (unsigned)(x >> 48) & (NBUCKET - 1);
}

/* Under H.mu. */
static void track_locked(void *p, size_t size, int nbt, void *const *bt)
{
    if (!H.spare) {
        blk *c = H.nchunks < MAX_CHUNKS ? __real_malloc(CHUNK * sizeof *c) : NULL;
        if (c)
            H.chunks[H.nchunks++] = c;
        for (int i = 0; c && i < CHUNK; i++) {
            c[i].next = H.spare;
            H.spare = &c[i];
        }
    }
    blk *b = H.spare;
    if (!b) { /* cannot happen below MAX_CHUNKS * CHUNK live blocks */
        fputs("test_oom: the block table is full\n", stderr);
        abort();
    }
    H.spare = b->next;
    unsigned h = bucket_of(p);
    b->p = p;
    b->size = size;
    b->seq = H.seq++;
    b->nbt = nbt;
    if (nbt)
        memcpy(b->bt, bt, (size_t)nbt * sizeof *bt);
    b->next = H.bucket[h];
    H.bucket[h] = b;
    H.live++;
}

__attribute__((noinline)) static void track(void *p, size_t size)
{
    if (!p)
        return;
    void *bt[BT_MAX];
    int nbt = H.record ? backtrace(bt, BT_MAX) : 0;
    pthread_mutex_lock(&H.mu);
    track_locked(p, size, nbt, bt);
    pthread_mutex_unlock(&H.mu);
}

/* Removes p; returns 1 when it was tracked. */
static int untrack(void *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&H.mu);
    for (blk **q = &H.bucket[bucket_of(p)]; *q; q = &(*q)->next)
        if ((*q)->p == p) {
            blk *b = *q;
            *q = b->next;
            b->next = H.spare;
            H.spare = b;
            H.live--;
            pthread_mutex_unlock(&H.mu);
            return 1;
        }
    H.foreign_frees++;
    pthread_mutex_unlock(&H.mu);
    return 0;
}

__attribute__((noinline)) static uint32_t stack_hash(void)
{
    void *bt[SITE_FRAMES + 2];
    int n = backtrace(bt, SITE_FRAMES + 2);
    uint32_t h = 2166136261u;
    for (int i = 2; i < n; i++) { /* past stack_hash and should_fail */
        uintptr_t a = (uintptr_t)bt[i];
        for (size_t k = 0; k < sizeof a; k++, a >>= 8)
            h = (h ^ (uint32_t)(a & 0xff)) * 16777619u;
    }
    return h;
}

/* Is this allocation to fail? Counts it when armed. */
__attribute__((noinline)) static int should_fail(void)
{
    if (!H.armed)
        return 0;
    uint32_t site = H.want_sites ? stack_hash() : 0;
    pthread_mutex_lock(&H.mu);
    long i = H.next++;
    if (H.want_sites) {
        if (H.nsites == H.capsites) {
            long cap = H.capsites ? 2 * H.capsites : 4096;
            uint32_t *s = __real_realloc(H.sites, (size_t)cap * sizeof *s);
            if (s) {
                H.sites = s;
                H.capsites = cap;
            }
        }
        if (H.nsites < H.capsites)
            H.sites[H.nsites++] = site;
    }
    if (H.interrupt && i == H.interrupt_at)
        *H.interrupt = SIGINT;
    int fail = H.fail_at >= 0 && (H.oneshot ? i == H.fail_at : i >= H.fail_at);
    if (fail && H.failed++ == 0 && H.record)
        H.fail_nbt = backtrace(H.fail_bt, BT_MAX);
    pthread_mutex_unlock(&H.mu);
    if (fail)
        errno = ENOMEM;
    return fail;
}

static void *tracked_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    void *p = __real_malloc(n);
    track(p, n);
    return p;
}

void *__wrap_malloc(size_t n)
{
    return tracked_malloc(n);
}

void *__wrap_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = __real_calloc(count, size);
    track(p, count * size);
    return p;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (should_fail())
        return NULL;
    void *p = __real_aligned_alloc(align, n);
    track(p, n);
    return p;
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    if (should_fail())
        return ENOMEM;
    int r = __real_posix_memalign(out, align, n);
    if (!r)
        track(*out, n);
    return r;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (p && n == 0) { /* glibc frees p */
        untrack(p);
        return __real_realloc(p, n);
    }
    if (should_fail())
        return NULL; /* p stays valid and owned */
    int had = untrack(p);
    void *q = __real_realloc(p, n);
    if (q)
        track(q, n);
    else if (had)
        track(p, n); /* really out of memory: p is still the caller's */
    return q;
}

void __wrap_free(void *p)
{
    untrack(p);
    __real_free(p);
}

static char *copy_string(const char *s, size_t n)
{
    char *p = tracked_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

char *__wrap_strdup(const char *s)
{
    return copy_string(s, strlen(s));
}

char *__wrap_strndup(const char *s, size_t max)
{
    return copy_string(s, strnlen(s, max));
}

/* realpath(path, NULL) mallocs inside libc: resolve into our buffer, then copy through
 * the wrapper, so that the copy is a fault point and tracked like any other block. */
char *__wrap_realpath(const char *path, char *resolved)
{
    if (resolved)
        return __real_realpath(path, resolved);
    char buf[PATH_MAX];
    if (!__real_realpath(path, buf))
        return NULL;
    return copy_string(buf, strlen(buf));
}

/* ---- one attempt -------------------------------------------------------------------------- */

static void arm(long fail_at, int oneshot, int record, int want_sites)
{
    H.fail_at = fail_at;
    H.oneshot = oneshot;
    H.record = record;
    H.want_sites = want_sites;
    H.next = 0;
    H.failed = 0;
    H.fail_nbt = 0;
    H.nsites = 0;
    H.armed = 1;
}

static void disarm(void)
{
    H.armed = 0;
    H.record = 0;
    H.want_sites = 0;
}

/* Open HDF5 objects (files, groups, datasets, datatypes, attributes) of every file. */
static long h5_ids(void)
{
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    return n < 0 ? -1 : (long)n;
}

static long open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    long n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* One line per frame: "0x... in function file:line" from the sanitizer's symbolizer, else
 * addr2line's answer for frames in the test binary, else what backtrace_symbols says. */
static void print_stack(void *const *bt, int n)
{
    if (n <= 2)
        return;
    bt += 2; /* past the harness and the wrapper */
    n -= 2;
    char buf[1024];
    if (__sanitizer_symbolize_pc) {
        for (int i = 0; i < n; i++) {
            __sanitizer_symbolize_pc(bt[i], "%p in %f %L", buf, sizeof buf);
            fprintf(stderr, "        %s\n", buf);
        }
        return;
    }
    char **sym = backtrace_symbols(bt, n);
    for (int i = 0; i < n; i++) {
        const char *s = sym ? sym[i] : "?", *open = strchr(s, '('), *close = open ? strchr(open, ')') : NULL;
        int shown = 0;
        if (open && close && open[1] == '+' && !strstr(s, ".so")) { /* the test binary, no symbol */
            int k = snprintf(buf, sizeof buf, "addr2line -f -i -p -e '%.*s' %.*s 2>/dev/null",
                             (int)(open - s), s, (int)(close - open - 2), open + 2);
            FILE *p = k > 0 && (size_t)k < sizeof buf ? popen(buf, "r") : NULL;
            while (p && fgets(buf, sizeof buf, p)) {
                fprintf(stderr, "        %s", buf);
                shown = buf[0] != '?';
            }
            if (p)
                pclose(p);
        }
        if (!shown)
            fprintf(stderr, "        %s\n", s);
    }
    free(sym);
}

/* Blocks allocated since `seq0` and still live. */
static void print_leaks(uint64_t seq0, int max)
{
    int shown = 0;
    pthread_mutex_lock(&H.mu);
    for (unsigned h = 0; h < NBUCKET && shown < max; h++)
        for (blk *b = H.bucket[h]; b && shown < max; b = b->next)
            if (b->seq >= seq0) {
                fprintf(stderr, "      leaked %zu bytes at %p, allocated at:\n", b->size, b->p);
                print_stack(b->bt, b->nbt);
                shown++;
            }
    pthread_mutex_unlock(&H.mu);
}

/* Frees every block allocated since seq0 (what the self-tests leaked on purpose). */
static void free_since(uint64_t seq0)
{
    for (;;) {
        void *p = NULL;
        pthread_mutex_lock(&H.mu);
        for (unsigned h = 0; h < NBUCKET && !p; h++)
            for (blk *b = H.bucket[h]; b && !p; b = b->next)
                if (b->seq >= seq0)
                    p = b->p;
        pthread_mutex_unlock(&H.mu);
        if (!p)
            return;
        __wrap_free(p);
    }
}

typedef struct oom_case {
    const char *name;
    void (*prepare)(void);          /* before each attempt, not counted: reset files */
    fl_status (*op)(fl_error *err); /* the operation; frees all it made */
    /* Known library bugs, to be removed when fixed: messages (substrings) that report an
     * allocation failure as something else; counted and shown once, not failed. */
    const char *const *known;
} oom_case;

typedef struct oom_report {
    long allocations;   /* in a run without failures */
    long sites;         /* distinct 8-frame stacks among them */
    long attempts;      /* indices faulted */
    long stride;
    long leaks, bad_status, other_leaks, survived, known;
    long first_leak, first_bad;
    double seconds;
} oom_report;

typedef struct attempt {
    fl_status st;
    fl_error err;
    long failed, next;
    long dlive, dh5, dfd;
} attempt;

static int trace_on, notes;
static int quiet; /* the self-tests: one line per problem, no stacks */

static void attempt_run(const oom_case *c, long n, int oneshot, int record, attempt *a)
{
    if (c->prepare)
        c->prepare();
    fl_error_clear(&a->err);
    long live = H.live, h5 = h5_ids(), fd = open_fds();
    if (trace_on && n >= 0)
        fprintf(stderr, "oom: %s: N=%ld\n", c->name, n);
    arm(n, oneshot, record, n < 0);
    a->st = c->op(&a->err);
    a->failed = H.failed;
    a->next = H.next;
    disarm();
    a->dlive = H.live - live;
    a->dh5 = h5_ids() - h5;
    a->dfd = open_fds() - fd;
}

static int mentions_memory(const char *msg)
{
    return strstr(msg, "memory") || strstr(msg, "Memory") || strstr(msg, "allocat");
}

/* A known bug's message: `known` as is, or "A*B": A, then B later in the message. */
static int matches(const char *msg, const char *known)
{
    const char *star = strchr(known, '*');
    if (!star)
        return strstr(msg, known) != NULL;
    size_t n = (size_t)(star - known);
    for (const char *p = msg; (p = strstr(p, star + 1)); p++)
        if (n == 0 || (size_t)(p - msg) >= n)
            for (const char *q = msg; q + n <= p; q++)
                if (!strncmp(q, known, n))
                    return 1;
    return 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { FULL = 200, TAIL = 16 };
static long show = 3; /* problems printed per kind and case (FL_OOM_SHOW) */

/* Runs case c over its fault indices; fills *r. Problems are printed, not asserted, so
 * the harness's own tests can check what it reports. */
static void oom_check(const oom_case *c, int oneshot, long budget, oom_report *r)
{
    memset(r, 0, sizeof *r);
    r->first_leak = r->first_bad = -1;
    double t0 = now_s();
    attempt a;
    /* Warm-up: one-time initialisations (HDF5's, the thread pool's) happen here. */
    attempt_run(c, -1, 0, 0, &a);
    if (a.st)
        fail_msg("%s: fails without injected failures: %s", c->name, fl_error_msg(&a.err));
    /* Counting run: the success path takes back all it took. */
    attempt_run(c, -1, 0, 0, &a);
    if (a.st)
        fail_msg("%s: fails without injected failures: %s", c->name, fl_error_msg(&a.err));
    if (a.dlive || a.dh5 || a.dfd)
        fail_msg("%s: a run without failures leaves %ld blocks, %ld HDF5 ids, %ld fds", c->name,
                 a.dlive, a.dh5, a.dfd);
    long T = a.next;
    r->allocations = T;
    long nsites = H.nsites < T ? H.nsites : T;
    uint32_t *sites = __real_malloc((size_t)(nsites + 1) * sizeof *sites);
    unsigned char *pick = __real_calloc((size_t)T + 1, 1);
    assert_true(sites && pick);
    memcpy(sites, H.sites, (size_t)nsites * sizeof *sites);
    /* first occurrences of each stack (a small open-addressing set) */
    size_t cap = 1;
    while (cap < 2 * (size_t)nsites + 2)
        cap <<= 1;
    uint32_t *seen = __real_calloc(cap, sizeof *seen);
    unsigned char *used = __real_calloc(cap, 1);
    assert_true(seen && used);
    for (long i = 0; i < nsites; i++) {
        size_t h = (sites[i] * 2654435761u) & (cap - 1);
        while (used[h] && seen[h] != sites[i])
            h = (h + 1) & (cap - 1);
        if (!used[h]) {
            used[h] = 1;
            seen[h] = sites[i];
            pick[i] = 1;
            r->sites++;
        }
    }
    long rest = T > FULL ? T - FULL : 0;
    r->stride = budget > 0 && rest > budget ? (rest + budget - 1) / budget : 1;
    for (long i = 0; i < T; i++)
        if (i < FULL || i >= T - TAIL || (i - FULL) % r->stride == 0)
            pick[i] = 1;
    /* Every picked index, then on past T until an attempt where nothing failed (the count
     * can differ between runs by a few: the writer thread's allocations interleave). */
    for (long n = 0;; n++) {
        if (n < T && !pick[n])
            continue;
        attempt_run(c, n, oneshot, 0, &a);
        r->attempts++;
        int leak = a.dlive != 0, other = a.dh5 != 0 || a.dfd != 0;
        int bad = a.failed ? a.st != FL_OK && a.st != FL_E_NOMEM && !mentions_memory(a.err.msg)
                           : a.st != FL_OK;
        for (const char *const *k = c->known; bad && a.failed && k && *k; k++)
            if (matches(a.err.msg, *k)) {
                bad = 0;
                if (r->known++ == 0)
                    fprintf(stderr, "  known bug: %s N=%ld: status %d (%s): %s\n", c->name, n,
                            (int)a.st, fl_status_str(a.st), fl_error_msg(&a.err));
            }
        attempt again;
        /* Shown in one-shot mode only with FL_OOM_NOTES set: Lua retries a failed
         * allocation after a full collection, and succeeds, by design. */
        if (a.failed && a.st == FL_OK && r->survived++ < show && (!oneshot || notes) && !quiet) {
            fprintf(stderr, "  note: %s N=%ld: succeeded although allocation %ld failed; at:\n",
                    c->name, n, n);
            attempt_run(c, n, oneshot, 1, &again);
            print_stack(H.fail_bt, H.fail_nbt);
        }
        if (bad && r->bad_status++ < show) {
            fprintf(stderr, "  %s N=%ld: status %d (%s), expected FL_E_NOMEM: %s\n", c->name, n,
                    (int)a.st, fl_status_str(a.st), fl_error_msg(&a.err));
            if (r->first_bad < 0)
                r->first_bad = n;
        }
        if (other && r->other_leaks++ < show)
            fprintf(stderr, "  %s N=%ld: leaves %ld HDF5 ids and %ld file descriptors open (%s)\n",
                    c->name, n, a.dh5, a.dfd, fl_error_msg(&a.err));
        if (leak && r->leaks++ < show) {
            if (r->first_leak < 0)
                r->first_leak = n;
            fprintf(stderr, "  %s N=%ld: %ld blocks leaked (status %d: %s)\n", c->name, n,
                    a.dlive, (int)a.st, fl_error_msg(&a.err));
            if (!quiet) { /* again, with stacks */
                uint64_t seq0 = H.seq;
                attempt_run(c, n, oneshot, 1, &again);
                if (H.fail_nbt) {
                    fprintf(stderr, "      the failed allocation:\n");
                    print_stack(H.fail_bt, H.fail_nbt);
                }
                print_leaks(seq0, 4);
            }
            /* the leaked blocks stay live; later attempts are measured from their own start */
        }
        if (n >= T && !a.failed)
            break;
        if (n > T + 1000)
            fail_msg("%s: allocation count does not settle (%ld, ran %ld)", c->name, T, n);
    }
    __real_free(sites);
    __real_free(pick);
    __real_free(seen);
    __real_free(used);
    r->seconds = now_s() - t0;
    fprintf(stderr, "oom: %-22s %s: %5ld allocations, %4ld stacks, %4ld faulted (stride %ld), "
                    "%ld survived, %ld known, %.1f s\n",
            c->name, oneshot ? "one-shot" : "sticky  ", r->allocations, r->sites, r->attempts,
            r->stride, r->survived, r->known, r->seconds);
}

static void oom_expect_clean(const oom_case *c, int oneshot, long budget)
{
    oom_report r;
    oom_check(c, oneshot, budget, &r);
    if (r.leaks || r.bad_status || r.other_leaks)
        fail_msg("%s: %ld leaking indices (first N=%ld), %ld with a wrong status (first N=%ld), "
                 "%ld leaving HDF5 ids or fds open",
                 c->name, r.leaks, r.first_leak, r.bad_status, r.first_bad, r.other_leaks);
}

/* ---- files ------------------------------------------------------------------------------- */

static char tmp[PATH_MAX];

static void rm_rf(const char *path)
{
    if (fl_test_rm_tree(path))
        fail_msg("cannot remove %s: %s", path, strerror(errno));
}

static void path_in(char *out, size_t cap, const char *name) { fl_test_path(out, cap, tmp, name); }

static void put_file(const char *name, const char *text)
{
    char p[PATH_MAX];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Copies every regular file of directory `from` into `to` (made when absent). */
static void copy_dir(const char *from, const char *to)
{
    mkdir(to, 0777);
    DIR *d = opendir(from);
    assert_non_null(d);
    struct dirent *e;
    char buf[1 << 16];
    while ((e = readdir(d))) {
        char a[PATH_MAX], b[PATH_MAX];
        int na = snprintf(a, sizeof a, "%s/%s", from, e->d_name);
        int nb = snprintf(b, sizeof b, "%s/%s", to, e->d_name);
        assert_true(na > 0 && (size_t)na < sizeof a && nb > 0 && (size_t)nb < sizeof b);
        struct stat sb;
        if (lstat(a, &sb) || !S_ISREG(sb.st_mode))
            continue;
        int in = open(a, O_RDONLY), out = open(b, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        assert_true(in >= 0 && out >= 0);
        ssize_t k;
        while ((k = read(in, buf, sizeof buf)) > 0)
            assert_int_equal(write(out, buf, (size_t)k), k);
        close(in);
        close(out);
    }
    closedir(d);
}

static int setup_suite(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    struct stat sb;
    if (!base || !*base)
        base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0
                   ? "/dev/shm" /* no disk: the runs fsync */
                   : "/tmp";
    snprintf(tmp, sizeof tmp, "%s/fl_test_oom.XXXXXX", base);
    if (!mkdtemp(tmp))
        return -1;
    trace_on = getenv("FL_OOM_TRACE") != NULL;
    notes = getenv("FL_OOM_NOTES") != NULL;
    if (getenv("FL_OOM_SHOW"))
        show = atol(getenv("FL_OOM_SHOW"));
    void *bt[2];
    backtrace(bt, 2); /* loads the unwinder now, not inside a counted allocation */
    return 0;
}

static int teardown_suite(void **state)
{
    (void)state;
    return fl_test_rm_tree(tmp);
}

/* ---- the harness finds what it should ------------------------------------------------------ */

static void *volatile sink; /* so the compiler keeps the allocations below */

/* Leaks its first block when the second allocation fails. */
static fl_status leaky_op(fl_error *err)
{
    char *a = malloc(32);
    sink = a;
    if (!a)
        return fl_error_set(err, FL_E_NOMEM, "leaky: a");
    char *b = strdup("leaky");
    sink = b;
    if (!b)
        return fl_error_set(err, FL_E_NOMEM, "leaky: b"); /* forgets a */
    free(a);
    free(b);
    return FL_OK;
}

/* Calls an allocation failure an I/O error, without a word about memory. */
static fl_status misreporting_op(fl_error *err)
{
    void *p = calloc(4, 8);
    sink = p;
    if (!p)
        return fl_error_set(err, FL_E_IO, "cannot write the file");
    free(p);
    return FL_OK;
}

/* Leaves a file descriptor and an HDF5 file open when its allocation fails. */
static int leaked_fd = -1;
static hid_t leaked_h5 = -1;
static int leaky_calls;

static fl_status leaky_files_op(fl_error *err)
{
    char name[32], path[PATH_MAX];
    snprintf(name, sizeof name, "leaky%d.h5", leaky_calls++); /* the leaked one stays open */
    path_in(path, sizeof path, name);
    int fd = open("/dev/null", O_RDONLY);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    void *p = malloc(8);
    sink = p;
    if (!p) {
        leaked_fd = fd;
        leaked_h5 = f;
        return fl_error_set(err, FL_E_NOMEM, "leaky files");
    }
    free(p);
    H5Fclose(f);
    close(fd);
    return FL_OK;
}

/* One call of each wrapped function, half of them in a second thread; correct. */
typedef struct thread_job {
    fl_status st;
} thread_job;

static void *thread_allocs(void *p)
{
    thread_job *j = p;
    void *a = NULL, *b = NULL;
    char *c = strndup("abcdef", 3), *d = NULL;
    sink = c;
    j->st = FL_OK;
    if (!c || posix_memalign(&a, 64, 100) || !(b = aligned_alloc(64, 128)) ||
        !(d = realpath(".", NULL)))
        j->st = FL_E_NOMEM;
    sink = b;
    sink = d;
    free(a);
    free(b);
    free(c);
    free(d);
    return NULL;
}

static fl_status every_wrapper_op(fl_error *err)
{
    char *m = malloc(10), *z = calloc(2, 10), *r = NULL;
    sink = m;
    sink = z;
    if (m && z) {
        r = realloc(m, 1000);
        if (r)
            m = r;
    }
    free(z);
    free(m);
    if (!m || !z || !r)
        return fl_error_set(err, FL_E_NOMEM, "every_wrapper");
    thread_job job;
    pthread_t t;
    if (pthread_create(&t, NULL, thread_allocs, &job))
        return fl_error_set(err, FL_E_IO, "cannot start a thread");
    pthread_join(t, NULL);
    return job.st ? fl_error_set(err, job.st, "out of memory in the thread") : FL_OK;
}

static void test_harness_finds_leak(void **state)
{
    (void)state;
    oom_report r;
    static const oom_case c = { "self-test: leak", NULL, leaky_op, NULL };
    uint64_t seq0 = H.seq;
    long live = H.live;
    fprintf(stderr, "oom: the self-tests plant the problems they print\n");
    quiet = 1;
    oom_check(&c, 0, 0, &r);
    assert_int_equal(r.allocations, 2);
    assert_int_equal(r.attempts, 3); /* N = 0, 1 fail; N = 2 succeeds */
    assert_int_equal(r.leaks, 1);
    assert_int_equal(r.first_leak, 1);
    assert_int_equal(r.bad_status, 0);
    oom_check(&c, 1, 0, &r); /* one-shot: the same */
    assert_int_equal(r.leaks, 1);
    assert_int_equal(r.first_leak, 1);
    assert_int_equal(H.live - live, 2); /* N = 1, in each mode */
    free_since(seq0);
    assert_int_equal(H.live, live);
    quiet = 0;
}

static void test_harness_finds_wrong_status(void **state)
{
    (void)state;
    oom_report r;
    static const oom_case c = { "self-test: status", NULL, misreporting_op, NULL };
    quiet = 1;
    oom_check(&c, 0, 0, &r);
    assert_int_equal(r.allocations, 1);
    assert_int_equal(r.bad_status, 1);
    assert_int_equal(r.first_bad, 0);
    assert_int_equal(r.leaks, 0);
    /* a known bug's message is counted as such, not as a failure */
    static const char *const known[] = { "cannot write the file", NULL };
    static const oom_case k = { "self-test: known", NULL, misreporting_op, known };
    oom_check(&k, 0, 0, &r);
    assert_int_equal(r.bad_status, 0);
    assert_int_equal(r.known, 1);
    assert_true(matches("f.h5: entry a/b: cannot read", "entry *: cannot read"));
    assert_false(matches("f.h5: cannot read entry a/b", "entry *: cannot read"));
    assert_false(matches("entry: cannot", "entry *: cannot read"));
    quiet = 0;
}

static void test_harness_finds_open_files(void **state)
{
    (void)state;
    oom_report r;
    static const oom_case c = { "self-test: open files", NULL, leaky_files_op, NULL };
    quiet = 1;
    oom_check(&c, 0, 0, &r);
    quiet = 0;
    assert_int_equal(r.allocations, 1);
    assert_int_equal(r.other_leaks, 1);
    assert_int_equal(r.leaks + r.bad_status, 0);
    assert_true(leaked_fd >= 0 && leaked_h5 >= 0);
    close(leaked_fd);
    H5Fclose(leaked_h5);
}

/* malloc, calloc, realloc, free, strndup, posix_memalign, aligned_alloc and realpath are all
 * fault points, also in another thread, and the correct function is found clean. */
static void test_harness_every_wrapper(void **state)
{
    (void)state;
    oom_report r;
    static const oom_case c = { "self-test: wrappers", NULL, every_wrapper_op, NULL };
    oom_check(&c, 0, 0, &r);
    assert_int_equal(r.allocations, 7);
    assert_int_equal(r.attempts, 8);
    assert_int_equal(r.leaks + r.bad_status + r.other_leaks + r.survived, 0);
    oom_check(&c, 1, 0, &r);
    assert_int_equal(r.leaks + r.bad_status + r.other_leaks + r.survived, 0);
}

/* ---- state ------------------------------------------------------------------------------ */

static char state_path[PATH_MAX];

static fl_status state_op(fl_error *err)
{
    fl_state *s = fl_state_new(), *back = NULL;
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "state");
    double v[64];
    int32_t q[16] = { 0 };
    for (int i = 0; i < 64; i++)
        v[i] = i * 0.5;
    fl_status st = FL_OK;
    char name[32];
    for (int i = 0; i < 12 && !st; i++) {
        snprintf(name, sizeof name, "mod/e%d", i);
        st = fl_state_put(s, name, FL_STATE_F64, v, 64 - i, err);
    }
    if (!st) /* replace: another type and count */
        st = fl_state_put(s, "mod/e3", FL_STATE_I32, q, 16, err);
    if (!st)
        st = fl_state_put_i64(s, "run/emitted", 7, err);
    if (!st)
        st = fl_state_put_f64(s, "run/seconds", 1.5, err);
    static const char *const attrs[] = { "format", "fifolab.state", NULL };
    if (!st)
        st = fl_state_save_file(s, state_path, attrs, err);
    if (!st)
        st = fl_state_load_file(state_path, &back, err);
    if (!st && fl_state_len(back) != fl_state_len(s))
        st = fl_error_set(err, FL_E_FORMAT, "state: %zu entries back, %zu saved", fl_state_len(back),
                          fl_state_len(s));
    int32_t q2[16];
    if (!st)
        st = fl_state_get(back, "mod/e3", FL_STATE_I32, q2, 16, err);
    fl_state_free(back);
    fl_state_free(s);
    return st;
}

static void state_prepare(void)
{
    unlink(state_path);
}

static void test_state(void **state)
{
    (void)state;
    path_in(state_path, sizeof state_path, "state.h5");
    static const oom_case c = { "state put/save/load", state_prepare, state_op, NULL };
    oom_expect_clean(&c, 0, 0);
    oom_expect_clean(&c, 1, 0);
}

/* ---- script and sweep ---------------------------------------------------------------------- */

#define GAUSS_BASE                                                                             \
    "local fl = require 'fifolab'\n"                                                           \
    "return fl.experiment { name = 'tiny', seed = 3, frames = 12,\n"                           \
    "  model = fl.model.gauss { window = 4, channels = 2, size = {8, 8}, rho = 0.9, drift = {0.5, 0.25} },\n" \
    "  noise = fl.noise.sqrt_linear { timesteps = 1000, beta = {0.00085, 0.012} },\n"         \
    "  sampler = fl.sampler.ddim { eta = 1.0 },\n"                                             \
    "  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = 'clip' } }\n"

static char sweep_path[PATH_MAX];

static fl_status sweep_op(fl_error *err)
{
    fl_script sc;
    fl_sweep sw;
    static const char *const sets[] = { "frames=10" };
    fl_status st = fl_script_load(sweep_path, NULL, &sc, err);
    if (st)
        return st;
    st = fl_sweep_expand(&sc, sets, 1, &sw, err);
    if (!st) {
        if (sw.count != 8)
            st = fl_error_set(err, FL_E_INVALID, "sweep: %lld points", (long long)sw.count);
        fl_sweep_free(&sw);
    }
    fl_script_free(&sc);
    return st;
}

static void test_script_sweep(void **state)
{
    (void)state;
    put_file("sweep_base.lua", GAUSS_BASE);
    put_file("sweep.lua",
             "local fl = require 'fifolab'\n"
             "local base = fl.include 'sweep_base.lua'\n"
             "base.metrics = { 'adjacent' }\n"
             "return fl.sweep { name = 'small', base = base,\n"
             "  grid = {\n"
             "    { 'scheduler.planner.partitions', {1, 2} },\n"
             "    { { 'sampler.eta', 'model.rho' }, { {0.0, 0.8}, {1.0, 0.9} } },\n"
             "  },\n"
             "  seeds = {5, 6} }\n");
    path_in(sweep_path, sizeof sweep_path, "sweep.lua");
    static const oom_case c = { "script + sweep", NULL, sweep_op, NULL };
    oom_expect_clean(&c, 0, 400);
    oom_expect_clean(&c, 1, 200);
}

/* ---- runs ---------------------------------------------------------------------------------- */

static fl_script run_script;  /* loaded once per test, outside the counted attempts */
static char run_dir[PATH_MAX];
static fl_run_opts run_opts;

static void run_prepare(void)
{
    rm_rf(run_dir);
}

static fl_status run_op(fl_error *err)
{
    fl_cfg *cfg = fl_cfg_copy(run_script.base, NULL);
    if (!cfg)
        return fl_error_set(err, FL_E_NOMEM, "configuration");
    fl_run_outcome out = FL_RUN_SKIPPED;
    fl_status st = fl_run_point(&run_opts, cfg, run_script.source, "oom.lua", run_dir, &out, err);
    if (!st && out != FL_RUN_COMPLETE)
        st = fl_error_set(err, FL_E_INVALID, "run: outcome %d, not complete", (int)out);
    fl_cfg_free(cfg);
    return st;
}

static void load_run_script(const char *text, const char *dir_name)
{
    fl_error err;
    if (fl_script_load_text("oom.lua", text, tmp, NULL, &run_script, &err))
        fail_msg("%s", fl_error_msg(&err));
    path_in(run_dir, sizeof run_dir, dir_name);
    memset(&run_opts, 0, sizeof run_opts);
    run_opts.quiet = 1;
    run_opts.git_commit = "oom";
    run_opts.checkpoint_seconds = 1e9;
}

static void check_run(const char *name, const char *text, double checkpoint_seconds, long budget,
                      const char *const *known)
{
    load_run_script(text, "run");
    run_opts.checkpoint_seconds = checkpoint_seconds;
    oom_case c = { name, run_prepare, run_op, known };
    oom_expect_clean(&c, 0, budget);
    oom_expect_clean(&c, 1, budget / 2);
    fl_script_free(&run_script);
    rm_rf(run_dir);
}

#define EXPERIMENT(frames, scheduler, extra)                                                   \
    "local fl = require 'fifolab'\n"                                                           \
    "return fl.experiment { name = 'oom', seed = 3, frames = " #frames ",\n"                   \
    "  model = fl.model.gauss { window = 4, channels = 2, size = {8, 8}, rho = 0.9, drift = {0.5, 0.25} },\n" \
    "  noise = fl.noise.sqrt_linear { timesteps = 1000, beta = {0.00085, 0.012} },\n"         \
    "  sampler = fl.sampler.ddim { eta = 1.0 },\n"                                             \
    "  scheduler = " scheduler ",\n" extra " video = { mp4 = false } }\n"

/* FIFO with lookahead, online metrics, queue snapshots; checkpoints every iteration. */
static const char *const RUN_FIFO =
    EXPERIMENT(12, "fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = 'clip' }",
               "  metrics = { 'adjacent', { module = 'flicker', window = 4 }, 'stats' }, snapshots = 2,\n");

static const char *const RUN_CHUNKED =
    EXPERIMENT(10, "fl.scheduler.chunked { steps = 6, context = 2 }",
               "  oracle = true, metrics = { { module = 'drift', window = 4, gaps = {1, 2} } },\n");

static const char *const RUN_FULL = EXPERIMENT(4, "fl.scheduler.full { steps = 6 }", "  metrics = { 'motion' },\n");

static void test_run_fifo(void **state)
{
    (void)state;
    check_run("run fifo+lookahead", RUN_FIFO, 0, 300, NULL);
}

static void test_run_chunked(void **state)
{
    (void)state;
    check_run("run chunked", RUN_CHUNKED, 0, 300, NULL);
}

static void test_run_full(void **state)
{
    (void)state;
    check_run("run full", RUN_FULL, 1e9, 300, NULL);
}

/* ---- resume ------------------------------------------------------------------------------ */

static char resume_master[PATH_MAX];

static void resume_prepare(void)
{
    rm_rf(run_dir);
    copy_dir(resume_master, run_dir);
}

static fl_status resume_op(fl_error *err)
{
    fl_run_outcome out = FL_RUN_SKIPPED;
    fl_status st = fl_run_resume(&run_opts, run_dir, &out, err);
    if (!st && out != FL_RUN_COMPLETE)
        st = fl_error_set(err, FL_E_INVALID, "resume: outcome %d, not complete", (int)out);
    return st;
}

static volatile sig_atomic_t stop_flag;

/* A run interrupted (as by SIGINT: state saved, file closed "interrupted") halfway through
 * its allocations, made once; each attempt resumes a fresh copy of it. */
static void test_resume(void **state)
{
    (void)state;
    load_run_script(EXPERIMENT(16, "fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = 'clip' }",
                               "  oracle = true, metrics = { 'adjacent' }, snapshots = 2,\n"),
                    "resume");
    path_in(resume_master, sizeof resume_master, "resume_master");
    fl_error err;
    fl_run_outcome out = FL_RUN_SKIPPED;
    /* how many allocations a whole run makes */
    arm(-1, 0, 0, 0);
    fl_status st = run_op(&err);
    long T = H.next;
    disarm();
    if (st)
        fail_msg("%s", fl_error_msg(&err));
    rm_rf(run_dir);
    /* the same, stopped at the iteration in which allocation T / 2 happens */
    stop_flag = 0;
    run_opts.stop = &stop_flag;
    run_opts.checkpoint_seconds = 0;
    fl_cfg *cfg = fl_cfg_copy(run_script.base, NULL);
    assert_non_null(cfg);
    H.interrupt = &stop_flag;
    H.interrupt_at = T / 2;
    arm(-1, 0, 0, 0);
    st = fl_run_point(&run_opts, cfg, run_script.source, "oom.lua", resume_master, &out, &err);
    disarm();
    H.interrupt = NULL;
    fl_cfg_free(cfg);
    if (st)
        fail_msg("%s", fl_error_msg(&err));
    assert_int_equal(out, FL_RUN_INTERRUPTED);
    assert_string_equal(fl_run_status(resume_master, NULL), "interrupted");
    char sp[PATH_MAX + 16];
    int n = snprintf(sp, sizeof sp, "%s/state.h5", resume_master);
    assert_true(n > 0 && (size_t)n < sizeof sp);
    assert_int_equal(access(sp, F_OK), 0);
    stop_flag = 0;
    run_opts.stop = NULL;
    run_opts.checkpoint_seconds = 1e9;
    oom_case c = { "resume", resume_prepare, resume_op, NULL };
    oom_expect_clean(&c, 0, 300);
    oom_expect_clean(&c, 1, 150);
    fl_script_free(&run_script);
    rm_rf(run_dir);
    rm_rf(resume_master);
}

/* ---- the empirical model ---------------------------------------------------------------- */

static void test_empirical(void **state)
{
    (void)state;
    /* 4 videos (red/green x circle/square) of 8 frames of 8x8, made once */
    fl_procgen_opts po;
    fl_procgen_opts_default(&po);
    po.height = po.width = 8;
    po.window = 4;
    po.videos = 4;
    po.frames = 8;
    po.segment = 4;
    po.shapes = 2;
    po.colors = 2;
    fl_clips *clips = NULL;
    fl_error err;
    char data[PATH_MAX];
    path_in(data, sizeof data, "clips.h5");
    if (fl_procgen_make(&po, &clips, &err) || fl_clips_write(clips, data, &err))
        fail_msg("%s", fl_error_msg(&err));
    fl_clips_free(clips);
    char text[PATH_MAX + 1024];
    int n = snprintf(text, sizeof text,
             "local fl = require 'fifolab'\n"
             "return fl.experiment { name = 'emp', seed = 2, frames = 10,\n"
             "  timeline = { { 'a red circle', 5 }, { 'a green square' } },\n"
             "  model = fl.model.empirical { dataset = '%s', bandwidth = 0.05 },\n"
             "  noise = fl.noise.sqrt_linear { timesteps = 1000, beta = {0.00085, 0.012} },\n"
             "  sampler = fl.sampler.ddim { eta = 1.0 },\n"
             "  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = 'clip' },\n"
             "  metrics = { 'adjacent' }, video = { mp4 = false } }\n",
             data);
    assert_true(n > 0 && (size_t)n < sizeof text);
    check_run("run empirical", text, 1e9, 300, NULL);
    unlink(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_harness_finds_leak),
        cmocka_unit_test(test_harness_finds_wrong_status),
        cmocka_unit_test(test_harness_finds_open_files),
        cmocka_unit_test(test_harness_every_wrapper),
        cmocka_unit_test(test_state),
        cmocka_unit_test(test_script_sweep),
        cmocka_unit_test(test_run_fifo),
        cmocka_unit_test(test_run_chunked),
        cmocka_unit_test(test_run_full),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_empirical),
    };
    return cmocka_run_group_tests_name("oom", tests, setup_suite, teardown_suite);
}
