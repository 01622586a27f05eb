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
};

/* A copy snapshot's copy of one region (snapshot_copy.c). */
struct sf_copy {
    uintptr_t start, end;
    char *buf;
};

struct sf_snapshot {
    sf_tracker *t;
    int slot;
    uint32_t gen;
    uint64_t id;
    int64_t taken_ns;
    _Atomic int stale;
    _Atomic int refs; /* the owner's 1 + writers in progress */
    struct sf_copy *copies; /* copy snapshots (uffd-async trackers) */
    size_t ncopies, copy_bytes;
};

struct sf_version *sf__store_alloc(struct sf_store *st);
void sf__store_free(struct sf_store *st, struct sf_version *v);
void *sf__store_data(struct sf_store *st, const struct sf_version *v);
#endif
