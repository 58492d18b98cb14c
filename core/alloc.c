/* The default allocator, checked size arithmetic and the failure-injecting test allocator. */
#include "alloc.h"
#include "status.h"

#include <stdlib.h>
#include <string.h>

static void *default_alloc(void *ud, size_t size, size_t align)
{
    (void)ud;
    if (align < sizeof(void *))
        align = sizeof(void *);
    /* aligned_alloc wants size to be a multiple of align */
    size_t rounded = (size + align - 1) & ~(align - 1);
    if (rounded < size)
        return NULL;
    return aligned_alloc(align, rounded ? rounded : align);
}

static void default_free(void *ud, void *ptr, size_t size)
{
    (void)ud;
    (void)size;
    free(ptr);
}

static const fl_allocator default_allocator = { default_alloc, default_free, NULL };

const fl_allocator *fl_allocator_default(void) { return &default_allocator; }

void *fl_alloc_aligned(const fl_allocator *a, size_t size, size_t align)
{
    if (!a)
        a = &default_allocator;
    FL_ASSERT(align && (align & (align - 1)) == 0);
    return a->alloc(a->ud, size, align);
}

void *fl_alloc(const fl_allocator *a, size_t size) { return fl_alloc_aligned(a, size, FL_ALIGN); }

int fl_mul_overflows(size_t a, size_t b, size_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

void *fl_calloc(const fl_allocator *a, size_t count, size_t size)
{
    size_t total;
    if (fl_mul_overflows(count, size, &total))
        return NULL;
    void *p = fl_alloc(a, total);
    if (p)
        memset(p, 0, total);
    return p;
}

void fl_free(const fl_allocator *a, void *ptr, size_t size)
{
    if (!ptr)
        return;
    if (!a)
        a = &default_allocator;
    a->free(a->ud, ptr, size);
}

static void *fault_alloc(void *ud, size_t size, size_t align)
{
    fl_faultalloc *fa = ud;
    if (fa->fail_after == 0) {
        fa->failures++;
        return NULL;
    }
    void *p = fa->base->alloc(fa->base->ud, size, align);
    if (!p)
        return NULL;
    if (fa->fail_after > 0)
        fa->fail_after--;
    fa->live_blocks++;
    fa->live_bytes += size;
    fa->total_allocs++;
    return p;
}

static void fault_free(void *ud, void *ptr, size_t size)
{
    fl_faultalloc *fa = ud;
    if (!ptr)
        return;
    FL_ASSERT(fa->live_blocks > 0 && fa->live_bytes >= size);
    fa->live_blocks--;
    fa->live_bytes -= size;
    fa->base->free(fa->base->ud, ptr, size);
}

void fl_faultalloc_init(fl_faultalloc *fa, const fl_allocator *base, long fail_after)
{
    memset(fa, 0, sizeof *fa);
    fa->iface.alloc = fault_alloc;
    fa->iface.free = fault_free;
    fa->iface.ud = fa;
    fa->base = base ? base : fl_allocator_default();
    fa->fail_after = fail_after;
}
