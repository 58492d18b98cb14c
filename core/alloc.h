/* The one allocator interface: every fifolab allocation goes through an fl_allocator, so
 * tests can count live blocks and inject failures into any allocation of any path. */
#ifndef FL_ALLOC_H
#define FL_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* A vtable plus its context. `alloc` returns memory aligned to `align` (a power of two,
 * at least sizeof(void *)) or NULL; `free` receives the pointer and the size it was
 * allocated with (NULL is a no-op). Implementations must be thread-safe if they are
 * shared between threads; the default one is. */
typedef struct fl_allocator {
    void *(*alloc)(void *ud, size_t size, size_t align);
    void (*free)(void *ud, void *ptr, size_t size);
    void *ud;
} fl_allocator;

#define FL_ALIGN 64 /* cache line; also what AVX-512 loads want */

/* The process allocator (aligned_alloc/free). Returns a pointer to a constant object:
 * there is no mutable global state behind it. */
const fl_allocator *fl_allocator_default(void);

/* Convenience wrappers; `a` may be NULL for the default allocator. Zero-size requests
 * return a valid unique pointer that must be freed like any other. */
void *fl_alloc(const fl_allocator *a, size_t size);
void *fl_alloc_aligned(const fl_allocator *a, size_t size, size_t align);
void *fl_calloc(const fl_allocator *a, size_t count, size_t size); /* overflow-checked, zeroed */
void fl_free(const fl_allocator *a, void *ptr, size_t size);

/* size = a * b, returning 0 on overflow (callers treat 0 from a non-zero product as error). */
int fl_mul_overflows(size_t a, size_t b, size_t *out);

/* A counting, failure-injecting allocator for tests (SQLite's faultsim, Lua's ltests).
 * Wraps `base`; after `fail_after` further successful allocations every allocation fails
 * (`fail_after` < 0 never fails). Counts live blocks and bytes so a test can assert that
 * an error path freed everything it took. Not thread-safe: one per test. */
typedef struct fl_faultalloc {
    fl_allocator iface; /* pass &fa.iface wherever an allocator is wanted */
    const fl_allocator *base;
    long fail_after;
    size_t live_blocks, live_bytes, total_allocs, failures;
} fl_faultalloc;

void fl_faultalloc_init(fl_faultalloc *fa, const fl_allocator *base, long fail_after);

#endif
