/* cmocka suite for core/alloc and core/arena: alignment, overflow, fault injection, arenas. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/arena.h"
#include "core/status.h"

/* ---- helpers ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static int is_aligned(const void *p, size_t align) { return ((uintptr_t)p & (align - 1)) == 0; }

/* An allocator that hands out memory full of garbage, so zeroing is really tested. */
static void *dirty_alloc(void *ud, size_t size, size_t align)
{
    const fl_allocator *base = ud;
    void *p = base->alloc(base->ud, size, align);
    if (p)
        memset(p, 0xA5, size);
    return p;
}

static void dirty_free(void *ud, void *ptr, size_t size)
{
    const fl_allocator *base = ud;
    base->free(base->ud, ptr, size);
}

/* Checks the arena's own accounting against what the counting allocator holds. */
static void check_arena_books(const fl_arena *a, const fl_faultalloc *fa)
{
    if (a->reserved_bytes != fa->live_bytes)
        fail_msg("arena reserved_bytes %zu, allocator holds %zu", a->reserved_bytes, fa->live_bytes);
    if (a->used_bytes > a->reserved_bytes)
        fail_msg("arena used_bytes %zu > reserved_bytes %zu", a->used_bytes, a->reserved_bytes);
}

typedef struct chunk {
    unsigned char *p;
    size_t size;
    unsigned char tag;
} chunk;

static int cmp_chunk(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const chunk *)a)->p, y = (uintptr_t)((const chunk *)b)->p;
    return (x > y) - (x < y);
}

static void verify_chunks(chunk *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < c[i].size; k++)
            if (c[i].p[k] != c[i].tag)
                fail_msg("chunk %zu (size %zu) byte %zu is 0x%02x, want 0x%02x: overlap", i,
                         c[i].size, k, c[i].p[k], c[i].tag);
    qsort(c, n, sizeof *c, cmp_chunk);
    for (size_t i = 1; i < n; i++)
        if ((uintptr_t)c[i - 1].p + c[i - 1].size > (uintptr_t)c[i].p)
            fail_msg("chunks at %p (+%zu) and %p overlap", (void *)c[i - 1].p, c[i - 1].size,
                     (void *)c[i].p);
}

/* ---- allocator ------------------------------------------------------------------------ */

static void test_default_allocator_constant(void **state)
{
    (void)state;
    const fl_allocator *a = fl_allocator_default();
    assert_non_null(a);
    assert_ptr_equal(a, fl_allocator_default());
    assert_non_null(a->alloc);
    assert_non_null(a->free);
}

static void test_default_alignment(void **state)
{
    (void)state;
    const size_t sizes[] = { 0, 1, 7, 63, 64, 65, 1000, 4096, 100000 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        void *p = fl_alloc(NULL, sizes[s]);
        assert_non_null(p);
        assert_true(is_aligned(p, FL_ALIGN));
        memset(p, 0x5a, sizes[s]);
        fl_free(NULL, p, sizes[s]);
        for (size_t align = sizeof(void *); align <= ((size_t)1 << 16); align <<= 1) {
            unsigned char *q = fl_alloc_aligned(NULL, sizes[s], align);
            assert_non_null(q);
            if (!is_aligned(q, align))
                fail_msg("size %zu align %zu: got %p", sizes[s], align, (void *)q);
            memset(q, 0x5a, sizes[s]);
            fl_free(fl_allocator_default(), q, sizes[s]);
        }
    }
}

static void test_zero_size_unique(void **state)
{
    (void)state;
    void *a = fl_alloc(NULL, 0), *b = fl_alloc(NULL, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    fl_free(NULL, a, 0);
    fl_free(NULL, b, 0);
    void *c = fl_calloc(NULL, 0, 16);
    assert_non_null(c);
    fl_free(NULL, c, 0);
}

static void test_alloc_size_wraps_to_null(void **state)
{
    (void)state;
    /* rounding up to the alignment would wrap around: must fail, not return a tiny block */
    assert_null(fl_alloc(NULL, SIZE_MAX));
    assert_null(fl_alloc(NULL, SIZE_MAX - FL_ALIGN + 2));
    assert_null(fl_alloc_aligned(NULL, SIZE_MAX - 100, 4096));
}

static void test_mul_overflows(void **state)
{
    (void)state;
    size_t out = 123;
    assert_false(fl_mul_overflows(3, 5, &out));
    assert_int_equal(out, 15);
    assert_false(fl_mul_overflows(0, SIZE_MAX, &out));
    assert_int_equal(out, 0);
    assert_false(fl_mul_overflows(SIZE_MAX, 1, &out));
    assert_true(out == SIZE_MAX);
    assert_true(fl_mul_overflows(SIZE_MAX, 2, &out));
    assert_true(fl_mul_overflows((size_t)1 << 32, (size_t)1 << 32, &out));
    assert_false(fl_mul_overflows((size_t)1 << 31, (size_t)1 << 32, &out));
    assert_true(out == (size_t)1 << 63);
}

static void test_calloc_overflow_is_null(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    const size_t bad[][2] = {
        { SIZE_MAX, 2 },
        { 2, SIZE_MAX },
        { SIZE_MAX / 2 + 1, 2 },
        { (size_t)1 << 33, (size_t)1 << 33 },
        { SIZE_MAX, SIZE_MAX },
        { SIZE_MAX / 3 + 1, 3 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_null(fl_calloc(&fa.iface, bad[i][0], bad[i][1]));
        assert_null(fl_calloc(NULL, bad[i][0], bad[i][1]));
    }
    /* an overflowing product never reaches the allocator */
    assert_int_equal(fa.total_allocs, 0);
    assert_int_equal(fa.failures, 0);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_calloc_zeroes(void **state)
{
    (void)state;
    fl_allocator dirty = { dirty_alloc, dirty_free, (void *)fl_allocator_default() };
    /* the dirty allocator really is dirty */
    unsigned char *d = fl_alloc(&dirty, 64);
    assert_non_null(d);
    assert_int_equal(d[10], 0xA5);
    fl_free(&dirty, d, 64);
    const size_t dims[][2] = { { 1, 1 }, { 3, 7 }, { 100, 8 }, { 4096, 3 }, { 1, 65537 } };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        size_t n = dims[i][0] * dims[i][1];
        unsigned char *p = fl_calloc(&dirty, dims[i][0], dims[i][1]);
        assert_non_null(p);
        assert_true(is_aligned(p, FL_ALIGN));
        for (size_t k = 0; k < n; k++)
            if (p[k])
                fail_msg("calloc(%zu, %zu) byte %zu is %u", dims[i][0], dims[i][1], k, p[k]);
        fl_free(&dirty, p, n);
    }
}

static void test_free_null_is_noop(void **state)
{
    (void)state;
    fl_free(NULL, NULL, 0);
    fl_free(NULL, NULL, 100);
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_free(&fa.iface, NULL, 10);
    assert_int_equal(fa.live_blocks, 0);
    assert_int_equal(fa.live_bytes, 0);
}

/* ---- fault-injecting allocator -------------------------------------------------------- */

static void test_faultalloc_counts(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    assert_ptr_equal(fa.base, fl_allocator_default());
    assert_ptr_equal(fa.iface.ud, &fa);
    void *p[100];
    size_t sz[100], total = 0;
    for (int i = 0; i < 100; i++) {
        sz[i] = (size_t)(i * 37 % 500);
        p[i] = fl_alloc(&fa.iface, sz[i]);
        assert_non_null(p[i]);
        assert_true(is_aligned(p[i], FL_ALIGN));
        total += sz[i];
        assert_int_equal(fa.live_blocks, (size_t)i + 1);
        assert_int_equal(fa.live_bytes, total);
    }
    assert_int_equal(fa.total_allocs, 100);
    assert_int_equal(fa.failures, 0);
    for (int i = 0; i < 100; i += 2) {
        fl_free(&fa.iface, p[i], sz[i]);
        total -= sz[i];
    }
    assert_int_equal(fa.live_blocks, 50);
    assert_int_equal(fa.live_bytes, total);
    for (int i = 1; i < 100; i += 2)
        fl_free(&fa.iface, p[i], sz[i]);
    assert_int_equal(fa.live_blocks, 0);
    assert_int_equal(fa.live_bytes, 0);
    assert_int_equal(fa.total_allocs, 100);
}

static void test_faultalloc_fails_after_n(void **state)
{
    (void)state;
    for (long n = 0; n <= 8; n++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, n);
        void *p[16];
        int got = 0;
        for (int i = 0; i < 12; i++) {
            p[i] = fl_alloc_aligned(&fa.iface, 24, 128);
            if (i < n) {
                if (!p[i])
                    fail_msg("fail_after %ld: allocation %d failed early", n, i);
                assert_true(is_aligned(p[i], 128));
                got++;
            } else if (p[i]) {
                fail_msg("fail_after %ld: allocation %d succeeded", n, i);
            }
        }
        assert_int_equal(got, n);
        assert_int_equal(fa.total_allocs, (size_t)n);
        assert_int_equal(fa.failures, (size_t)(12 - n));
        assert_int_equal(fa.live_blocks, (size_t)n);
        assert_int_equal(fa.live_bytes, (size_t)n * 24);
        /* freeing does not bring allocations back */
        for (int i = 0; i < n; i++)
            fl_free(&fa.iface, p[i], 24);
        assert_int_equal(fa.live_blocks, 0);
        assert_int_equal(fa.live_bytes, 0);
        assert_null(fl_alloc(&fa.iface, 1));
        /* a failed calloc is reported too */
        assert_null(fl_calloc(&fa.iface, 4, 4));
    }
}

typedef struct counting_base {
    fl_allocator iface;
    int allocs, frees;
} counting_base;

static void *counting_alloc(void *ud, size_t size, size_t align)
{
    counting_base *c = ud;
    c->allocs++;
    return fl_allocator_default()->alloc(NULL, size, align);
}

static void counting_free(void *ud, void *ptr, size_t size)
{
    counting_base *c = ud;
    c->frees++;
    fl_allocator_default()->free(NULL, ptr, size);
}

static void test_faultalloc_wraps_base(void **state)
{
    (void)state;
    counting_base cb = { { counting_alloc, counting_free, NULL }, 0, 0 };
    cb.iface.ud = &cb;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, &cb.iface, 2);
    void *a = fl_alloc(&fa.iface, 10), *b = fl_alloc(&fa.iface, 20), *c = fl_alloc(&fa.iface, 30);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_int_equal(cb.allocs, 2); /* an injected failure does not call the base */
    fl_free(&fa.iface, a, 10);
    fl_free(&fa.iface, b, 20);
    assert_int_equal(cb.frees, 2);
}

/* ---- arena ---------------------------------------------------------------------------- */

static void test_arena_init_allocates_nothing(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, 0);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 0);
    assert_int_equal(a.block_size, (size_t)1 << 20);
    assert_int_equal(a.used_bytes, 0);
    assert_int_equal(a.reserved_bytes, 0);
    assert_null(a.head);
    assert_int_equal(fa.failures, 0);
    fl_arena_reset(&a); /* on an empty arena: fine */
    fl_arena_free(&a);
    fl_arena b;
    fl_arena_init(&b, NULL, 4096);
    assert_ptr_equal(b.alloc, fl_allocator_default());
    assert_int_equal(b.block_size, 4096);
    void *p = fl_arena_alloc(&b, 10, 0);
    assert_non_null(p);
    fl_arena_free(&b);
}

static void test_arena_alignment(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 1024);
    uint64_t rng = 1;
    for (int i = 0; i < 3000; i++) {
        size_t align = (size_t)1 << (splitmix64(&rng) % 13); /* 1 .. 4096 */
        size_t size = (size_t)(splitmix64(&rng) % 300);
        int zero_align = (i % 7) == 0;
        unsigned char *p = fl_arena_alloc(&a, size, zero_align ? 0 : align);
        assert_non_null(p);
        size_t want = zero_align ? FL_ALIGN : align;
        if (!is_aligned(p, want))
            fail_msg("alloc %d (size %zu, align %zu) at %p", i, size, want, (void *)p);
        memset(p, 0x11, size);
        check_arena_books(&a, &fa);
    }
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_arena_no_overlap(void **state)
{
    (void)state;
    enum { N = 2000 };
    static chunk c[N];
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 512);
    uint64_t rng = 42;
    size_t sum = 0;
    for (int i = 0; i < N; i++) {
        size_t size = (size_t)(splitmix64(&rng) % 200);
        if (i % 97 == 0)
            size = 600 + (size_t)(splitmix64(&rng) % 3000); /* larger than a block */
        size_t align = (size_t)1 << (splitmix64(&rng) % 8);
        c[i].p = fl_arena_alloc(&a, size, align);
        assert_non_null(c[i].p);
        c[i].size = size;
        c[i].tag = (unsigned char)(i * 131 + 7);
        memset(c[i].p, c[i].tag, size);
        sum += size;
    }
    assert_true(a.used_bytes >= sum);
    check_arena_books(&a, &fa);
    verify_chunks(c, N);
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_arena_large_request_own_block(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 1024);
    unsigned char *small = fl_arena_alloc(&a, 100, 0);
    assert_non_null(small);
    assert_int_equal(fa.live_blocks, 1);
    size_t before = a.reserved_bytes;
    unsigned char *big = fl_arena_alloc(&a, 100000, 256);
    assert_non_null(big);
    assert_true(is_aligned(big, 256));
    assert_int_equal(fa.live_blocks, 2);
    assert_true(a.reserved_bytes - before >= 100000);
    memset(big, 0x77, 100000); /* ASan: the whole request lies inside one block */
    memset(small, 0x33, 100);
    for (size_t k = 0; k < 100; k++)
        assert_int_equal(small[k], 0x33);
    for (size_t k = 0; k < 100000; k += 997)
        assert_int_equal(big[k], 0x77);
    /* a request of exactly block_size at the largest alignment still fits one new block */
    unsigned char *exact = fl_arena_alloc(&a, 1024, 4096);
    assert_non_null(exact);
    assert_true(is_aligned(exact, 4096));
    memset(exact, 0x44, 1024);
    assert_int_equal(big[99999], 0x77);
    check_arena_books(&a, &fa);
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_arena_zero_size_and_huge(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 256);
    assert_non_null(fl_arena_alloc(&a, 0, 0));
    size_t allocs = fa.total_allocs;
    /* sizes whose block would overflow size_t: NULL, and the allocator is not asked */
    assert_null(fl_arena_alloc(&a, SIZE_MAX, 0));
    assert_null(fl_arena_alloc(&a, SIZE_MAX - 64, 64));
    assert_null(fl_arena_alloc(&a, SIZE_MAX - 100, 4096));
    assert_int_equal(fa.total_allocs, allocs);
    assert_int_equal(fa.failures, 0);
    /* and the arena still works */
    void *p = fl_arena_alloc(&a, 100, 0);
    assert_non_null(p);
    memset(p, 1, 100);
    check_arena_books(&a, &fa);
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_arena_mark_rewind(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 1024);
    unsigned char *keep = fl_arena_alloc(&a, 300, 0);
    memset(keep, 0xEE, 300);
    fl_arena_mark m = fl_arena_get_mark(&a);
    size_t used = a.used_bytes, reserved = a.reserved_bytes, blocks = fa.live_blocks;
    unsigned char *first = fl_arena_alloc(&a, 200, 32);
    assert_non_null(first);
    for (int round = 0; round < 5; round++) {
        /* fill past the current block, and with a big block, then go back */
        for (int i = 0; i < 20; i++)
            memset(fl_arena_alloc(&a, 150, 0), 0x99, 150);
        memset(fl_arena_alloc(&a, 5000, 0), 0x98, 5000);
        assert_true(fa.live_blocks > blocks);
        fl_arena_rewind(&a, m);
        assert_int_equal(a.used_bytes, used);
        assert_int_equal(a.reserved_bytes, reserved);
        assert_int_equal(fa.live_blocks, blocks);
        check_arena_books(&a, &fa);
        /* the memory after the mark is handed out again */
        unsigned char *again = fl_arena_alloc(&a, 200, 32);
        assert_ptr_equal(again, first);
        for (size_t k = 0; k < 300; k++)
            assert_int_equal(keep[k], 0xEE);
    }
    /* nested marks rewind in stack order */
    fl_arena_mark m1 = fl_arena_get_mark(&a);
    size_t u1 = a.used_bytes;
    void *x = fl_arena_alloc(&a, 64, 0);
    fl_arena_mark m2 = fl_arena_get_mark(&a);
    size_t u2 = a.used_bytes;
    void *y = fl_arena_alloc(&a, 64, 0);
    fl_arena_rewind(&a, m2);
    assert_int_equal(a.used_bytes, u2);
    assert_ptr_equal(fl_arena_alloc(&a, 64, 0), y);
    fl_arena_rewind(&a, m1);
    assert_int_equal(a.used_bytes, u1);
    assert_ptr_equal(fl_arena_alloc(&a, 64, 0), x);
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_arena_rewind_to_empty(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 128);
    fl_arena_mark m = fl_arena_get_mark(&a);
    for (int i = 0; i < 10; i++)
        assert_non_null(fl_arena_alloc(&a, 100, 0));
    fl_arena_rewind(&a, m);
    assert_int_equal(a.used_bytes, 0);
    assert_int_equal(a.reserved_bytes, 0);
    assert_int_equal(fa.live_blocks, 0);
    assert_non_null(fl_arena_alloc(&a, 100, 0));
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

static void test_arena_reset_keeps_one_block(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 1024);
    for (int i = 0; i < 30; i++)
        assert_non_null(fl_arena_alloc(&a, 200, 0));
    memset(fl_arena_alloc(&a, 50000, 0), 1, 50000); /* the largest block */
    for (int i = 0; i < 10; i++)
        assert_non_null(fl_arena_alloc(&a, 200, 0));
    assert_true(fa.live_blocks > 3);
    size_t used = a.used_bytes;
    fl_arena_reset(&a);
    assert_int_equal(a.used_bytes, 0);
    assert_int_equal(fa.live_blocks, 1);
    assert_int_equal(a.reserved_bytes, fa.live_bytes);
    assert_true(a.reserved_bytes >= used); /* one block for all the iteration used */
    /* the kept block serves the same iteration again without asking the allocator */
    size_t allocs = fa.total_allocs;
    for (int i = 0; i < 30; i++)
        assert_non_null(fl_arena_alloc(&a, 200, 0));
    unsigned char *p = fl_arena_alloc(&a, 50000, 0);
    assert_non_null(p);
    memset(p, 2, 50000);
    for (int i = 0; i < 10; i++)
        assert_non_null(fl_arena_alloc(&a, 200, 0));
    assert_int_equal(fa.total_allocs, allocs);
    assert_int_equal(fa.live_blocks, 1);
    assert_true(a.used_bytes >= 50000);
    /* the peak counts, not what is left after a rewind: 3 x 40000 held at once, then
     * rewound, is served next time from one block */
    fl_arena_reset(&a);
    fl_arena_mark m = fl_arena_get_mark(&a);
    for (int i = 0; i < 3; i++)
        assert_non_null(fl_arena_alloc(&a, 40000, 16));
    fl_arena_rewind(&a, m);
    fl_arena_reset(&a);
    assert_int_equal(fa.live_blocks, 1);
    assert_true(a.reserved_bytes >= 120000);
    allocs = fa.total_allocs;
    for (int i = 0; i < 3; i++)
        assert_non_null(fl_arena_alloc(&a, 40000, 16));
    assert_int_equal(fa.total_allocs, allocs);
    /* when the one big block cannot be had, reset still succeeds and keeps the largest */
    assert_non_null(fl_arena_alloc(&a, 200000, 0)); /* a second block */
    fa.fail_after = 0;
    size_t largest = 200000;
    fl_arena_reset(&a);
    assert_int_equal(fa.live_blocks, 1);
    assert_true(a.reserved_bytes >= largest && a.reserved_bytes < largest + 4096);
    check_arena_books(&a, &fa);
    fa.fail_after = -1;
    allocs = fa.total_allocs;
    for (int iter = 0; iter < 5; iter++) {
        fl_arena_reset(&a);
        for (int i = 0; i < 100; i++)
            assert_non_null(fl_arena_alloc(&a, 400, 0));
        assert_int_equal(fa.total_allocs, allocs);
        assert_int_equal(fa.live_blocks, 1);
    }
    check_arena_books(&a, &fa);
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
    assert_int_equal(fa.live_bytes, 0);
    assert_int_equal(a.reserved_bytes, 0);
    assert_int_equal(a.used_bytes, 0);
    assert_null(a.head);
}

/* Large alignments count in the one block's slack: 4096-aligned requests settle too. */
static void test_arena_reset_large_alignment(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    fl_arena_init(&a, &fa.iface, 1024);
    size_t settled = 0;
    for (int iter = 0; iter < 6; iter++) {
        size_t before = fa.total_allocs;
        for (int i = 0; i < 20; i++)
            assert_non_null(fl_arena_alloc(&a, 3000 + (size_t)i * 17, 4096));
        if (iter >= 2)
            assert_int_equal(fa.total_allocs, before); /* nothing asked after settling */
        settled = fa.live_blocks;
        fl_arena_reset(&a);
    }
    assert_int_equal(settled, 1);
    check_arena_books(&a, &fa);
    fl_arena_free(&a);
    assert_int_equal(fa.live_blocks, 0);
}

/* Arrays from the arena: aligned, zeroed on request, NULL when count * size overflows. */
static void test_arena_array(void **state)
{
    (void)state;
    fl_arena a;
    fl_arena_init(&a, NULL, 256);
    unsigned char *dirty = fl_arena_array(&a, 100, 1, 0);
    assert_non_null(dirty);
    memset(dirty, 0xAB, 100);
    fl_arena_reset(&a); /* the next array reuses the dirty bytes */
    double *z = fl_arena_array(&a, 12, sizeof(double), 1);
    assert_non_null(z);
    assert_int_equal((uintptr_t)z % FL_ALIGN, 0);
    for (int i = 0; i < 12; i++)
        assert_true(z[i] == 0.0);
    assert_null(fl_arena_array(&a, SIZE_MAX / 2, 4, 0));
    fl_arena_free(&a);
}

static void test_arena_reuse_after_free(void **state)
{
    (void)state;
    fl_faultalloc fa;
    fl_faultalloc_init(&fa, NULL, -1);
    fl_arena a;
    for (int round = 0; round < 3; round++) {
        fl_arena_init(&a, &fa.iface, 300);
        for (int i = 0; i < 50; i++)
            memset(fl_arena_alloc(&a, 120, 16), round, 120);
        check_arena_books(&a, &fa);
        fl_arena_free(&a);
        assert_int_equal(fa.live_blocks, 0);
        fl_arena_free(&a); /* twice is harmless */
    }
}

/* Every allocation of the arena fails in turn: NULL comes back, the arena stays usable
 * and consistent, and freeing it returns every byte. */
static void test_arena_fault_injection(void **state)
{
    (void)state;
    for (long n = 0; n < 25; n++) {
        fl_faultalloc fa;
        fl_faultalloc_init(&fa, NULL, n);
        fl_arena a;
        fl_arena_init(&a, &fa.iface, 256);
        uint64_t rng = 7;
        int failed_at = -1;
        for (int i = 0; i < 400; i++) {
            size_t size = (size_t)(splitmix64(&rng) % 180) + 1;
            if (i % 11 == 0)
                size = 1000;
            size_t before_allocs = fa.total_allocs, before_fail = fa.failures;
            void *p = fl_arena_alloc(&a, size, 0);
            check_arena_books(&a, &fa);
            if (!p) {
                /* NULL only when the allocator refused */
                assert_int_equal(fa.failures, before_fail + 1);
                assert_int_equal(fa.total_allocs, before_allocs);
                failed_at = i;
                break;
            }
            memset(p, 0xC3, size);
        }
        if (failed_at < 0)
            fail_msg("fail_after %ld: the arena never saw an allocation failure", n);
        assert_int_equal(fa.total_allocs, (size_t)n);
        /* checked variant: FL_E_NOMEM naming what wanted the memory */
        fl_error err;
        fl_error_clear(&err);
        void *out = (void *)&err;
        assert_int_equal(fl_arena_alloc_checked(&a, 5000, 0, &out, "attn_scratch", &err),
                         FL_E_NOMEM);
        assert_null(out);
        assert_int_equal(err.code, FL_E_NOMEM);
        assert_non_null(strstr(err.msg, "attn_scratch"));
        assert_non_null(strstr(err.msg, "5000"));
        assert_int_equal(fl_arena_alloc_checked(&a, 5000, 0, &out, NULL, NULL), FL_E_NOMEM);
        fl_arena_alloc_checked(&a, 5000, 0, &out, NULL, &err);
        assert_non_null(strstr(err.msg, "arena"));
        /* after the failure the arena is still consistent: reset keeps a block that serves
         * small requests without the (now failing) allocator */
        fl_arena_reset(&a);
        if (a.head) {
            void *q = fl_arena_alloc(&a, 8, 0);
            assert_non_null(q);
            memset(q, 0, 8);
        }
        check_arena_books(&a, &fa);
        fl_arena_free(&a);
        assert_int_equal(fa.live_blocks, 0);
        assert_int_equal(fa.live_bytes, 0);
    }
}

static void test_arena_checked_success(void **state)
{
    (void)state;
    fl_arena a;
    fl_arena_init(&a, NULL, 0);
    fl_error err;
    fl_error_clear(&err);
    void *out = NULL;
    assert_int_equal(fl_arena_alloc_checked(&a, 100, 128, &out, "x", &err), FL_OK);
    assert_non_null(out);
    assert_true(is_aligned(out, 128));
    assert_int_equal(err.code, FL_OK);
    fl_arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_allocator_constant),
        cmocka_unit_test(test_default_alignment),
        cmocka_unit_test(test_zero_size_unique),
        cmocka_unit_test(test_alloc_size_wraps_to_null),
        cmocka_unit_test(test_mul_overflows),
        cmocka_unit_test(test_calloc_overflow_is_null),
        cmocka_unit_test(test_calloc_zeroes),
        cmocka_unit_test(test_free_null_is_noop),
        cmocka_unit_test(test_faultalloc_counts),
        cmocka_unit_test(test_faultalloc_fails_after_n),
        cmocka_unit_test(test_faultalloc_wraps_base),
        cmocka_unit_test(test_arena_init_allocates_nothing),
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_no_overlap),
        cmocka_unit_test(test_arena_large_request_own_block),
        cmocka_unit_test(test_arena_zero_size_and_huge),
        cmocka_unit_test(test_arena_mark_rewind),
        cmocka_unit_test(test_arena_rewind_to_empty),
        cmocka_unit_test(test_arena_reset_keeps_one_block),
        cmocka_unit_test(test_arena_reset_large_alignment),
        cmocka_unit_test(test_arena_array),
        cmocka_unit_test(test_arena_reuse_after_free),
        cmocka_unit_test(test_arena_fault_injection),
        cmocka_unit_test(test_arena_checked_success),
    };
    return cmocka_run_group_tests_name("alloc", tests, NULL, NULL);
}
