/* A caching allocator for the CUDA backend's storages: device blocks of freed storages are
 * kept by size class and handed out again, so a network's many short-lived activations do
 * not pay cudaMalloc/cudaFree (which synchronise the device) on every op. */
#ifdef FL_HAVE_CUDA

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_priv.h"

#define DEFAULT_CACHE_MB 4096
/* Free blocks kept at most. A fixed table inside the pool: caching a block never
 * allocates host memory, so releasing a storage cannot fail and leaves the host
 * allocator's count as it was. */
#define SLOTS 512

typedef struct pool_block {
    void *ptr;
    size_t size; /* its size class */
} pool_block;

struct cuda_pool {
    atomic_long refs; /* the backend's, plus one per block handed out */
    pthread_mutex_t mu;
    int device;
    const fl_allocator *alloc; /* this struct */
    pool_block free[SLOTS];
    int nfree;
    size_t cached, limit;
};

/* 512-byte granules below 1 MiB, 2 MiB granules above: a request and its reuse differ by
 * little, and the list stays short. */
static size_t size_class(size_t n)
{
    const size_t big = (size_t)2 << 20;
    if (n <= 512)
        return 512;
    if (n < ((size_t)1 << 20))
        return (n + 511) & ~(size_t)511;
    if (n > SIZE_MAX - big)
        return n; /* cudaMalloc refuses it anyway */
    return (n + big - 1) & ~(big - 1);
}

fl_status fl_cuda_pool_new(const fl_allocator *alloc, int device, cuda_pool **out, fl_error *err)
{
    *out = NULL;
    cuda_pool *p = fl_alloc(alloc, sizeof *p);
    if (!p)
        return fl_error_set(err, FL_E_NOMEM, "cuda: out of host memory for the memory pool of device %d", device);
    memset(p, 0, sizeof *p);
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        fl_free(alloc, p, sizeof *p);
        return fl_error_set(err, FL_E_NOMEM, "cuda: cannot create the memory pool's lock for device %d", device);
    }
    atomic_init(&p->refs, 1);
    p->device = device;
    p->alloc = alloc;
    p->limit = (size_t)DEFAULT_CACHE_MB << 20;
    const char *env = getenv("FL_CUDA_CACHE_MB");
    if (env && *env) {
        char *end;
        unsigned long long mb = strtoull(env, &end, 10);
        if (*end == '\0' && mb < ((unsigned long long)SIZE_MAX >> 20))
            p->limit = (size_t)mb << 20;
    }
    *out = p;
    return FL_OK;
}

/* Frees every cached block (cudaFree), e.g. before retrying an allocation that failed. */
static void flush(cuda_pool *p)
{
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->nfree; i++)
        fl_cu_free(p->device, p->free[i].ptr);
    p->nfree = 0;
    p->cached = 0;
    pthread_mutex_unlock(&p->mu);
}

void fl_cuda_pool_unref(cuda_pool *p)
{
    if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    flush(p);
    pthread_mutex_destroy(&p->mu);
    fl_free(p->alloc, p, sizeof *p);
}

int fl_cuda_pool_get(cuda_pool *p, size_t nbytes, void **ptr, char *msg)
{
    size_t size = size_class(nbytes);
    *ptr = NULL;
    pthread_mutex_lock(&p->mu);
    for (int i = p->nfree - 1; i >= 0; i--) /* the most recently freed first: warm in L2 */
        if (p->free[i].size == size) {
            *ptr = p->free[i].ptr;
            p->free[i] = p->free[--p->nfree];
            p->cached -= size;
            pthread_mutex_unlock(&p->mu);
            atomic_fetch_add(&p->refs, 1);
            return FL_CU_OK;
        }
    pthread_mutex_unlock(&p->mu);
    int rc = fl_cu_malloc(p->device, size, ptr, msg);
    if (rc == FL_CU_E_NOMEM) { /* the cache may hold what is missing: give it all back, retry */
        flush(p);
        fl_cu_trim(p->device);
        rc = fl_cu_malloc(p->device, size, ptr, msg);
    }
    if (!rc)
        atomic_fetch_add(&p->refs, 1);
    return rc;
}

void fl_cuda_pool_put(cuda_pool *p, void *ptr, size_t nbytes)
{
    size_t size = size_class(nbytes);
    pthread_mutex_lock(&p->mu);
    if (p->nfree < SLOTS && size <= p->limit && p->cached + size <= p->limit) {
        p->free[p->nfree++] = (pool_block){ ptr, size };
        p->cached += size;
        ptr = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (ptr) /* over the cache's limits: a real free */
        fl_cu_free(p->device, ptr);
    fl_cuda_pool_unref(p);
}

#else
/* Built without CUDA: nothing here is used. ISO C wants a declaration. */
typedef int fl_cuda_pool_absent;
#endif
