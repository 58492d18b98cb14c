/* Arena for per-iteration scratch memory: bump allocation from blocks taken through an
 * fl_allocator, released all at once by reset (blocks kept for reuse) or free. */
#ifndef FL_ARENA_H
#define FL_ARENA_H

#include "alloc.h"
#include "status.h"

typedef struct fl_arena_block fl_arena_block;

/* Caller-owned struct; the arena owns its blocks. Not thread-safe. */
typedef struct fl_arena {
    const fl_allocator *alloc;
    size_t block_size;     /* default size of a new block */
    fl_arena_block *head;  /* current block; earlier blocks follow ->next */
    size_t used_bytes;     /* bytes handed out since the last reset */
    size_t reserved_bytes; /* bytes held in blocks */
    size_t peak_bytes;     /* most bytes handed out at once since the last reset */
    size_t allocs;         /* allocations since the last reset */
    size_t max_align;      /* largest alignment asked for since the last reset */
} fl_arena;

/* A position to rewind to (stack-like scratch inside one iteration). */
typedef struct fl_arena_mark {
    fl_arena_block *block;
    size_t offset;
    size_t used_bytes;
} fl_arena_mark;

/* `alloc` may be NULL (default allocator); block_size 0 means 1 MiB. Allocates nothing yet. */
void fl_arena_init(fl_arena *arena, const fl_allocator *alloc, size_t block_size);

/* Returns `size` bytes aligned to `align` (power of two; 0 means FL_ALIGN), valid until the
 * next reset/rewind past it/free, or NULL when the allocator fails. Requests larger than
 * block_size get a block of their own. */
void *fl_arena_alloc(fl_arena *arena, size_t size, size_t align);

/* count elements of `size` bytes, FL_ALIGN-aligned, zeroed when `zero` is set; NULL when
 * count * size overflows or the allocator fails. For a denoiser's per-call arrays. */
void *fl_arena_array(fl_arena *arena, size_t count, size_t size, int zero);

/* As fl_arena_alloc but reports failure as FL_E_NOMEM in err naming `what`. */
fl_status fl_arena_alloc_checked(fl_arena *arena, size_t size, size_t align, void **out,
                                 const char *what, fl_error *err);

fl_arena_mark fl_arena_get_mark(const fl_arena *arena);
void fl_arena_rewind(fl_arena *arena, fl_arena_mark mark);

/* Makes all memory available again and keeps one block: when the iteration took several
 * blocks, one new block big enough for all it used (so the same work next time asks the
 * allocator for nothing), else the largest block; the others are freed. Cannot fail: when
 * the new block cannot be had, the largest is kept. */
void fl_arena_reset(fl_arena *arena);

/* Frees every block. The arena may be re-used after fl_arena_init. */
void fl_arena_free(fl_arena *arena);

#endif
