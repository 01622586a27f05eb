/* regions.c - the process-wide table of tracked regions: an immutable sorted
 * array behind one atomic pointer, found lock-free from signal handlers. */
#include "internal.h"
#include "stop.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static _Atomic(struct sf_rtable *) g_table;
pthread_mutex_t sf__regions_lock = PTHREAD_MUTEX_INITIALIZER;

/* A fork child inherits the lock as it was: held, if another thread was
 * tracking or untracking at the fork.  Only the forking thread exists
 * there and the table behind the atomic pointer is whole either way (old
 * tables are freed after their replacement is published): start afresh. */
void sf__regions_atfork_child(void)
{
    pthread_mutex_init(&sf__regions_lock, NULL);
}

/* Binary search in the published table.  Caller holds a grace section. */
struct sf_region *sf__region_find(uintptr_t addr)
{
    struct sf_rtable *tb = atomic_load_explicit(&g_table, memory_order_acquire);
    if (!tb)
        return NULL;
    size_t lo = 0, hi = tb->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct sf_region *r = tb->r[mid];
        if (addr < r->start)
            hi = mid;
        else if (addr >= r->end)
            lo = mid + 1;
        else
            return r;
    }
    return NULL;
}

struct sf_rtable *sf__regions_table(void)
{
    return atomic_load_explicit(&g_table, memory_order_acquire);
}

static struct sf_rtable *table_alloc(size_t n)
{
    struct sf_rtable *tb = sf__os_malloc(sizeof(*tb) + n * sizeof(tb->r[0]));
    if (tb)
        tb->n = n;
    return tb;
}

/* Publishes tb, waits until no reader can see the old table, frees it. */
static void table_publish(struct sf_rtable *tb)
{
    struct sf_rtable *old = atomic_exchange(&g_table, tb);
    sf__grace_wait();
    sf__os_free(old);
}

int sf__regions_overlap(uintptr_t start, uintptr_t end)
{
    struct sf_rtable *tb = atomic_load(&g_table);
    for (size_t i = 0; tb && i < tb->n; i++)
        if (tb->r[i]->start < end && start < tb->r[i]->end)
            return 1;
    return 0;
}

/* Caller holds sf__regions_lock. */
int sf__regions_insert(struct sf_region *r)
{
    struct sf_rtable *old = atomic_load(&g_table);
    size_t n = old ? old->n : 0;
    if (sf__regions_overlap(r->start, r->end))
        return -EEXIST;
    struct sf_rtable *tb = table_alloc(n + 1);
    if (!tb)
        return -ENOMEM;
    size_t j = 0;
    bool placed = false;
    for (size_t i = 0; i < n; i++) {
        if (!placed && r->start < old->r[i]->start) {
            tb->r[j++] = r;
            placed = true;
        }
        tb->r[j++] = old->r[i];
    }
    if (!placed)
        tb->r[j++] = r;
    table_publish(tb);
    return 0;
}

/* Caller holds sf__regions_lock.  On return no handler can see any of rs. */
void sf__regions_remove(struct sf_region *const *rs, size_t nrs)
{
    struct sf_rtable *old = atomic_load(&g_table);
    if (!old || nrs == 0)
        return;
    /* Removal cannot fail: the regions' memory is about to be freed. */
    struct sf_rtable *tb;
    while (!(tb = table_alloc(old->n)))
        sf__os_yield();
    size_t j = 0;
    for (size_t i = 0; i < old->n; i++) {
        bool drop = false;
        for (size_t k = 0; k < nrs; k++)
            drop |= old->r[i] == rs[k];
        if (!drop)
            tb->r[j++] = old->r[i];
    }
    tb->n = j;
    for (size_t k = 0; k < nrs; k++)
        sf__signals_note_removed(rs[k]->start, rs[k]->end);
    table_publish(tb);
}

size_t sf__regions_of(sf_tracker *t, struct sf_region **out, size_t max)
{
    struct sf_rtable *tb = atomic_load(&g_table);
    size_t k = 0;
    for (size_t i = 0; tb && i < tb->n; i++)
        if (tb->r[i]->t == t) {
            if (k < max)
                out[k] = tb->r[i];
            k++;
        }
    return k;
}

/* An array of t's regions (free with sf__tmp_free) in address order (*n of them), or NULL.
 * Caller holds t->lock, so none of them can go away; the table itself is
 * read under the regions lock. */
struct sf_region **sf__regions_list(sf_tracker *t, size_t *n)
{
    /* A stopper of the world already holds the lock (stop.c). */
    bool stopper = sf__stop_is_stopper();
    if (!stopper)
        pthread_mutex_lock(&sf__regions_lock);
    size_t k = sf__regions_of(t, NULL, 0);
    struct sf_region **v = sf__tmp_calloc(k ? k : 1, sizeof(*v));
    if (v)
        sf__regions_of(t, v, k);
    if (!stopper)
        pthread_mutex_unlock(&sf__regions_lock);
    *n = v ? k : 0;
    return v;
}

/* Metadata lives in one anonymous mapping (zero-filled lazily by the
 * kernel): state words, chunk hints, chunk max-generation, version heads. */
struct sf_region *sf__region_new(sf_tracker *t, uintptr_t start, uintptr_t end, bool versions)
{
    struct sf_region *r = sf__os_calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->start = start;
    r->end = end;
    r->t = t;
    r->npages = (end - start) >> sf_page_shift;
    r->nchunks = (r->npages + SF_CHUNK_PAGES - 1) >> SF_CHUNK_SHIFT;
    size_t ps = r->npages * sizeof(uint64_t);
    size_t ch = r->nchunks * sizeof(uint32_t);
    size_t vh = versions ? r->npages * sizeof(void *) : 0;
    size_t bytes = ps + 2 * ch + vh;
    bytes = (bytes + sf_page_size - 1) & ~(sf_page_size - 1);
    void *m = sf__os_mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        sf__os_free(r);
        return NULL;
    }
    r->meta = m;
    r->meta_bytes = bytes;
    char *p = m;
    r->ps = (void *)p;
    p += ps;
    r->vhead = versions ? (void *)p : NULL;
    p += vh;
    r->chunk = (void *)p;
    p += ch;
    r->chunk_maxgen = (void *)p;
    atomic_init(&r->last_fault, (size_t)-2);
    return r;
}

void sf__region_free(struct sf_region *r)
{
    if (!r)
        return;
    sf__os_free(r->abits);
    sf__os_munmap(r->meta, r->meta_bytes);
    sf__os_free(r);
}
