/* snapshot.h - versions (page copies) and snapshots, shared by snapshot.c,
 * store.c and the image writer glue. */
#ifndef SF_SNAPSHOT_H
#define SF_SNAPSHOT_H
#include "internal.h"

/* One saved content of one page, valid for snapshot generations [lo, hi];
 * hi 0 marks a version a collector declared dead (generations start at 1).
 * Chained per page, newest first, from r->vhead[page]. */
struct sf_version {
    _Atomic(struct sf_version *) next;
    uint32_t lo;
    _Atomic uint32_t hi;
    uint32_t slot;
    _Atomic uint32_t free_next; /* free-list link: slot + 1, 0 = end */
    _Atomic int inuse;
    struct sf_region *region;
    size_t page;
};

struct sf_store {
    char *arena;
    struct sf_version *nodes;
    size_t nslots;
    _Atomic uint64_t free_head;
    _Atomic size_t bump;
    _Atomic size_t used;
    _Atomic size_t reserved; /* slots set aside for mirror shadows */
};

struct sf_snapshot {
    sf_tracker *t;
    int slot;
    uint32_t gen;
    uint64_t id;
    int64_t taken_ns;
    _Atomic int stale;
    _Atomic int refs; /* the owner's 1 + writers in progress */
};

/* Frees versions after a grace period: readers may still be walking them. */
struct vlist {
    struct sf_version **v;
    size_t n, cap;
};

/* A snapshot engine: how snapshots hold page contents.  snapshot.c keeps
 * slots, generations, refcounts, the public API, version chains and gc;
 * an engine supplies the parts below.  Every call but read_page and
 * content_epoch runs with t->lock held (and not in a fork child). */
struct sf_engine_ops {
    sf_engine id;
    /* per tracker set-up (t->store_limit set) and tear-down; destroy may
     * run in a fork child (then it must not touch the parent's threads) */
    int (*create)(sf_tracker *t);
    void (*destroy)(sf_tracker *t);
    /* pages [p0, p1) of r start being tracked (a new region, or pages a
     * partial untrack left GONE tracked again); optional */
    int (*attach)(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1);
    /* r is about to be freed (no reader can see it any more); optional */
    void (*region_fini)(sf_tracker *t, struct sf_region *r);
    /* s has its slot (live) and gen; t->gen is already s->gen + 1 */
    int (*take)(sf_tracker *t, sf_snapshot *s);
    /* len bytes at off of the page at page_addr as s holds it: 0, -ENOENT
     * (not in s), -ENOSPC; lock-free, concurrent with writers */
    int (*read_page)(const sf_snapshot *s, uintptr_t page_addr, void *buf, size_t off, size_t len);
    /* the generation in which page_addr's content in snapshot gen g began,
     * 0 if not in it (images: unchanged since a parent = same epoch) */
    uint32_t (*content_epoch)(const sf_snapshot *s, uintptr_t page_addr, uint32_t g);
    /* writes s back into memory; returns the pages restored; *changed
     * when memory was written; versions it drops go into dead */
    long (*restore)(sf_snapshot *s, struct vlist *dead, int *err, bool *changed);
    /* s's slot was freed (live_gen 0) */
    void (*release)(sf_tracker *t, sf_snapshot *s);
};
extern const struct sf_engine_ops sf__engine_cow;
extern const struct sf_engine_ops sf__engine_mirror;

/* snapshot.c: helpers shared by the engines (sf__eff_cgen: pagestate.h) */
struct sf_version *sf__version_for(struct sf_region *r, size_t page, uint32_t g);
void sf__version_unlink(struct sf_version *v);
void sf__vlist_add(struct vlist *l, struct sf_version *v);
void sf__vlist_free(sf_tracker *t, struct vlist *l); /* grace wait, then free */
void sf__versions_gc(sf_tracker *t);                 /* drops what no live snapshot needs */
void sf__snapshot_fail_range(sf_tracker *t, uint32_t lo, uint32_t hi);

/* The live generations, read once by a t->lock holder: every change of
 * t->live_gen holds t->lock (a fork child's, which has no other user of
 * the tracker, aside), so the set stays as read until the holder unlocks.
 * Walks over many pages test this compact copy instead of the 64 slots. */
struct sf_live {
    unsigned n;
    uint32_t g[SF_MAX_SNAPSHOTS];
};
void sf__live_read(sf_tracker *t, struct sf_live *l);

/* Whether a live generation of l lies in [lo, hi]. */
static inline bool sf__live_in(const struct sf_live *l, uint32_t lo, uint32_t hi)
{
    for (unsigned i = 0; i < l->n; i++)
        if (l->g[i] >= lo && l->g[i] <= hi)
            return true;
    return false;
}

struct sf_version *sf__store_alloc(struct sf_store *st);
void sf__store_free_many(struct sf_store *st, struct sf_version *const *v, size_t n);
void *sf__store_data(struct sf_store *st, const struct sf_version *v);
/* Sets n slots aside (a mirror shadow counted against store_limit):
 * -ENOSPC if versions held plus reservations would pass the store. */
int sf__store_reserve(struct sf_store *st, size_t n);
void sf__store_unreserve(struct sf_store *st, size_t n);
/* The generation in which page_addr's content in snapshot generation g
 * began (the page's CGEN, or the covering version's lo), 0 if the page is
 * not in it.  Lock-free (a grace section).  Both engines keep CGEN. */
uint32_t sf__content_epoch(const sf_snapshot *s, uintptr_t page_addr, uint32_t g);
#endif
