/* Arena allocator: a singly linked chain of blocks, newest first. */
#include "arena.h"

#include <stdint.h>
#include <string.h>

struct fl_arena_block {
    fl_arena_block *next;
    size_t size;   /* usable bytes after the header */
    size_t offset; /* bytes used */
    size_t total;  /* bytes allocated, header included (what free is told) */
};

#define HDR (((sizeof(fl_arena_block) + FL_ALIGN - 1) / FL_ALIGN) * FL_ALIGN)

static unsigned char *block_data(fl_arena_block *b) { return (unsigned char *)b + HDR; }

void fl_arena_init(fl_arena *arena, const fl_allocator *alloc, size_t block_size)
{
    arena->alloc = alloc ? alloc : fl_allocator_default();
    arena->block_size = block_size ? block_size : (size_t)1 << 20;
    arena->head = NULL;
    arena->used_bytes = 0;
    arena->reserved_bytes = 0;
    arena->allocs = 0;
    arena->peak_bytes = 0;
    arena->max_align = 0;
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

static void *take(fl_arena_block *b, size_t size, size_t align)
{
    uintptr_t base = (uintptr_t)block_data(b);
    size_t start = align_up(base + b->offset, align) - base;
    if (start > b->size || b->size - start < size)
        return NULL;
    b->offset = start + size;
    return block_data(b) + start;
}

void *fl_arena_alloc(fl_arena *arena, size_t size, size_t align)
{
    if (!align)
        align = FL_ALIGN;
    FL_ASSERT((align & (align - 1)) == 0 && align <= 4096);
    if (align > arena->max_align)
        arena->max_align = align;
    size_t before = arena->head ? arena->head->offset : 0;
    void *p = arena->head ? take(arena->head, size, align) : NULL;
    if (p) {
        arena->used_bytes += arena->head->offset - before;
        arena->allocs++;
        if (arena->used_bytes > arena->peak_bytes)
            arena->peak_bytes = arena->used_bytes;
        return p;
    }
    size_t want = size + align > arena->block_size ? size + align : arena->block_size;
    if (want < size || want + HDR < want)
        return NULL;
    fl_arena_block *b = fl_alloc_aligned(arena->alloc, want + HDR, FL_ALIGN);
    if (!b)
        return NULL;
    b->next = arena->head;
    b->size = want;
    b->offset = 0;
    b->total = want + HDR;
    arena->head = b;
    arena->reserved_bytes += b->total;
    p = take(b, size, align);
    FL_ASSERT(p);
    arena->used_bytes += b->offset;
    arena->allocs++;
    if (arena->used_bytes > arena->peak_bytes)
        arena->peak_bytes = arena->used_bytes;
    return p;
}

void *fl_arena_array(fl_arena *arena, size_t count, size_t size, int zero)
{
    size_t bytes;
    if (fl_mul_overflows(count, size, &bytes))
        return NULL;
    void *p = fl_arena_alloc(arena, bytes, FL_ALIGN);
    if (p && zero)
        memset(p, 0, bytes);
    return p;
}

fl_status fl_arena_alloc_checked(fl_arena *arena, size_t size, size_t align, void **out,
                                 const char *what, fl_error *err)
{
    *out = fl_arena_alloc(arena, size, align);
    if (!*out)
        return fl_error_set(err, FL_E_NOMEM, "%s: cannot allocate %zu bytes of scratch memory",
                            what ? what : "arena", size);
    return FL_OK;
}

fl_arena_mark fl_arena_get_mark(const fl_arena *arena)
{
    fl_arena_mark m = { arena->head, arena->head ? arena->head->offset : 0, arena->used_bytes };
    return m;
}

void fl_arena_rewind(fl_arena *arena, fl_arena_mark mark)
{
    /* Blocks added after the mark are freed: they only held memory past it. */
    while (arena->head && arena->head != mark.block) {
        fl_arena_block *b = arena->head;
        arena->head = b->next;
        arena->reserved_bytes -= b->total;
        fl_free(arena->alloc, b, b->total);
    }
    if (arena->head) {
        FL_ASSERT(mark.offset <= arena->head->offset);
        arena->head->offset = mark.offset;
    }
    arena->used_bytes = mark.used_bytes;
}

void fl_arena_reset(fl_arena *arena)
{
    fl_arena_block *keep = NULL;
    int blocks = 0;
    for (fl_arena_block *b = arena->head; b; b = b->next, blocks++)
        if (!keep || b->size > keep->size)
            keep = b;
    /* The most this iteration held at once, plus worst-case alignment padding per allocation: one
     * block that large serves the same sequence again without asking the allocator. */
    size_t slack = arena->max_align > FL_ALIGN ? arena->max_align : FL_ALIGN;
    size_t need = arena->allocs > SIZE_MAX / slack || arena->peak_bytes > SIZE_MAX - arena->allocs * slack
                      ? 0 /* no block that size: keep the largest */
                      : arena->peak_bytes + arena->allocs * slack;
    /* Several blocks, or fewer than the peak took (a rewind freed the rest). */
    int grow = arena->peak_bytes > 0 && (blocks > 1 || !keep || keep->size < arena->peak_bytes);
    if (grow && need > 0 && (!keep || keep->size < need) && need + HDR > need) {
        fl_arena_block *one = fl_alloc_aligned(arena->alloc, need + HDR, FL_ALIGN);
        if (one) { /* else keep the largest block: smaller, but reset cannot fail */
            one->size = need;
            one->total = need + HDR;
            arena->reserved_bytes += one->total;
            one->next = arena->head;
            arena->head = one;
            keep = one;
        }
    }
    fl_arena_block *b = arena->head;
    while (b) {
        fl_arena_block *next = b->next;
        if (b != keep) {
            arena->reserved_bytes -= b->total;
            fl_free(arena->alloc, b, b->total);
        }
        b = next;
    }
    arena->head = keep;
    if (keep) {
        keep->next = NULL;
        keep->offset = 0;
    }
    arena->used_bytes = 0;
    arena->allocs = 0;
    arena->peak_bytes = 0;
    arena->max_align = 0;
}

void fl_arena_free(fl_arena *arena)
{
    fl_arena_block *b = arena->head;
    while (b) {
        fl_arena_block *next = b->next;
        fl_free(arena->alloc, b, b->total);
        b = next;
    }
    arena->head = NULL;
    arena->used_bytes = 0;
    arena->reserved_bytes = 0;
    arena->allocs = 0;
    arena->peak_bytes = 0;
    arena->max_align = 0;
}
