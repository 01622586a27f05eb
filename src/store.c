/* store.c - the page store: page copies for snapshots in one reserved arena
 * of page-sized slots, allocated from signal handlers without malloc or
 * locks (a tagged Treiber stack of free slots plus a bump pointer). */
#include "internal.h"
#include "snapshot.h"

#include <stdlib.h>
#include <sys/mman.h>

/* free_head packs (tag << 32) | (slot + 1); the tag defeats ABA when a
 * handler pops while another pops and a collector pushes. */
int sf__store_create(sf_tracker *t, size_t limit)
{
    struct sf_store *st = sf__os_calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    size_t nslots = limit >> sf_page_shift;
    if (nslots < 16)
        nslots = 16;
    if (nslots > UINT32_MAX - 1)
        nslots = UINT32_MAX - 1;
    st->nslots = nslots;
    /* Reserved, not committed: the kernel gives pages on first copy. */
    st->arena = sf__os_mmap(NULL, nslots << sf_page_shift, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    st->nodes = sf__os_mmap(NULL, nslots * sizeof(struct sf_version), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (st->arena == MAP_FAILED || st->nodes == MAP_FAILED) {
        if (st->arena != MAP_FAILED)
            sf__os_munmap(st->arena, nslots << sf_page_shift);
        if (st->nodes != MAP_FAILED)
            sf__os_munmap(st->nodes, nslots * sizeof(struct sf_version));
        sf__os_free(st);
        return -ENOMEM;
    }
    sf__os_madvise(st->arena, nslots << sf_page_shift, MADV_NOHUGEPAGE);
    t->store = st;
    t->store_limit = nslots << sf_page_shift;
    return 0;
}

void sf__store_destroy(sf_tracker *t)
{
    struct sf_store *st = t->store;
    if (!st)
        return;
    sf__os_munmap(st->arena, st->nslots << sf_page_shift);
    sf__os_munmap(st->nodes, st->nslots * sizeof(struct sf_version));
    sf__os_free(st);
    t->store = NULL;
}

int sf__store_reserve(struct sf_store *st, size_t n)
{
    size_t r = atomic_load(&st->reserved);
    do {
        if (atomic_load(&st->used) + r + n > st->nslots)
            return -ENOSPC;
    } while (!atomic_compare_exchange_weak(&st->reserved, &r, r + n));
    return 0;
}

void sf__store_unreserve(struct sf_store *st, size_t n)
{
    atomic_fetch_sub(&st->reserved, n);
}

/* Async-signal-safe.  NULL when the store is exhausted (or what is left
 * is reserved for mirror shadows). */
struct sf_version *sf__store_alloc(struct sf_store *st)
{
    if (atomic_load_explicit(&st->reserved, memory_order_relaxed) &&
        atomic_load(&st->used) + atomic_load(&st->reserved) >= st->nslots)
        return NULL;
    uint64_t h = atomic_load(&st->free_head);
    while ((uint32_t)h) {
        uint32_t slot = (uint32_t)h - 1;
        uint64_t nh = ((h >> 32) + 1) << 32 | atomic_load_explicit(&st->nodes[slot].free_next, memory_order_relaxed);
        if (atomic_compare_exchange_weak(&st->free_head, &h, nh)) {
            atomic_fetch_add_explicit(&st->used, 1, memory_order_relaxed);
            return &st->nodes[slot];
        }
    }
    /* The bump pointer never passes the slot count, so that GC, which
     * scans [0, bump), never reads a node past the array. */
    size_t slot = atomic_load(&st->bump);
    do {
        if (slot >= st->nslots) {
            /* A slot may have been freed meanwhile: one more look. */
            h = atomic_load(&st->free_head);
            if ((uint32_t)h)
                return sf__store_alloc(st);
            return NULL;
        }
    } while (!atomic_compare_exchange_weak(&st->bump, &slot, slot + 1));
    st->nodes[slot].slot = (uint32_t)slot;
    atomic_fetch_add_explicit(&st->used, 1, memory_order_relaxed);
    return &st->nodes[slot];
}

/* Collector side, after a grace period (no reader can hold any of v[]).
 * The n slots are chained first and pushed with one CAS: a release of a
 * snapshot that holds every page of a large range frees 10^5..10^6 slots,
 * and one contended atomic each was a third of its cost. */
void sf__store_free_many(struct sf_store *st, struct sf_version *const *v, size_t n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n; i++) {
        atomic_store_explicit(&v[i]->inuse, 0, memory_order_relaxed);
        if (i + 1 < n)
            atomic_store_explicit(&v[i]->free_next, v[i + 1]->slot + 1, memory_order_relaxed);
    }
    uint64_t h = atomic_load(&st->free_head);
    uint64_t nh;
    do {
        atomic_store_explicit(&v[n - 1]->free_next, (uint32_t)h, memory_order_relaxed);
        nh = ((h >> 32) + 1) << 32 | (uint64_t)(v[0]->slot + 1);
    } while (!atomic_compare_exchange_weak(&st->free_head, &h, nh));
    atomic_fetch_sub_explicit(&st->used, n, memory_order_relaxed);
}

void *sf__store_data(struct sf_store *st, const struct sf_version *v)
{
    return st->arena + ((size_t)v->slot << sf_page_shift);
}

void sf__store_stats(const sf_tracker *t, uint64_t *bytes)
{
    *bytes = t->store ? (uint64_t)atomic_load(&t->store->used) << sf_page_shift : 0;
}
