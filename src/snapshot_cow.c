/* snapshot_cow.c - the copy-on-write engine (uffd-sync, mprotect): a take
 * protects the pages written since the previous take; the first write to a
 * page after a take faults, and the handler saves the page's content as a
 * version before opening it.  Memory: only the pages written while
 * snapshots live; reads of unchanged pages come from live memory.
 *
 * Each page records CGEN, the generation in which its current content
 * began.  Snapshot g sees, for page p:
 *   - live memory, if CGEN(p) <= g (the page is protected since the take,
 *     so it cannot change without a fault that first saves it);
 *   - else the version of p with lo <= g <= hi.
 * The first write after a take saves the content once, as a version valid
 * for [CGEN, C-1]: every live snapshot taken since that content began
 * shares that one copy. */
#include "snapshot.h"
#include "stop.h"

#include <stdlib.h>
#include <string.h>

/* Called by the fault handler that owns page (BUSY), before unprotecting.
 * Async-signal-safe: the store allocates without locks. */
void sf__snapshot_save(struct sf_region *r, size_t page, uint64_t w, uint32_t C)
{
    sf_tracker *t = r->t;
    uint32_t cg = sf__eff_cgen(r, w);
    _Atomic(struct sf_version *) *head = &r->vhead[page];
    struct sf_version *h = atomic_load(head);
    /* After a restore the page holds exactly the head version's content
     * (same lo): extend its validity instead of copying again, unless a
     * collector has just declared it dead (hi 0); the CAS decides. */
    if (h && h->lo == cg) {
        uint32_t hi = atomic_load(&h->hi);
        while (hi && hi < C - 1 && !atomic_compare_exchange_weak(&h->hi, &hi, C - 1))
            ;
        if (hi) {
            SF_STAT_INC(t, st_shared, 1);
            return;
        }
    }
    struct sf_version *v = sf__store_alloc(t->store);
    if (!v) {
        sf__snapshot_fail_range(t, cg, C - 1); /* the program's write proceeds anyway */
        return;
    }
    memcpy(sf__store_data(t->store, v), (void *)(r->start + (page << sf_page_shift)), sf_page_size);
    v->lo = cg;
    atomic_store_explicit(&v->hi, C - 1, memory_order_relaxed);
    v->region = r;
    v->page = page;
    do
        atomic_store_explicit(&v->next, h, memory_order_relaxed);
    while (!atomic_compare_exchange_weak(head, &h, v));
    /* Only a linked version is visible to the collector's GC: marking it
     * before the push could let GC free a node that then gets linked. */
    atomic_store(&v->inuse, 1);
    SF_STAT_INC(t, st_copies, 1);
}


/* Reads one page of s into buf.  Returns 0, -ENOENT (not in s) or another
 * -errno.  Runs concurrently with faults: live memory is read between two
 * identical non-BUSY state words (a seqlock whose writer is the handler). */
static int cow_read_page(const sf_snapshot *s, uintptr_t page_addr, void *buf, size_t off, size_t len)
{
    sf_tracker *t = s->t;
    for (;;) {
        unsigned g = sf__grace_enter();
        struct sf_region *r = sf__region_find(page_addr);
        if (!r || r->t != t || r->track_gen > s->gen) {
            sf__grace_exit(g);
            return -ENOENT;
        }
        size_t p = (page_addr - r->start) >> sf_page_shift;
        /* A handler holding the page BUSY finishes in microseconds. */
        uint64_t w = sf__ps_read_begin(&r->ps[p]);
        if (sf__ps_gone(w)) {
            sf__grace_exit(g);
            return -ENOENT;
        }
        if (sf__eff_cgen(r, w) <= s->gen) {
            memcpy(buf, (char *)page_addr + off, len);
            bool same = sf__ps_read_valid(&r->ps[p], w);
            sf__grace_exit(g);
            if (same)
                return 0;
            continue;
        }
        struct sf_version *v = sf__version_for(r, p, s->gen);
        if (v)
            memcpy(buf, (char *)sf__store_data(t->store, v) + off, len);
        sf__grace_exit(g);
        if (v)
            return 0;
        /* No copy: the page was revived after s, or the copy failed. */
        return atomic_load(&t->failed_slot[s->slot]) ? -ENOSPC : -ENOENT;
    }
}


/* Pages of one region to restore, in address order, with their sources
 * and the state words they had before restore owned them. */
struct todo {
    size_t *page;
    struct sf_version **src;
    uint64_t *orig;
    size_t n, cap;
};

static int todo_add(struct todo *td, size_t p, struct sf_version *v)
{
    if (td->n == td->cap) {
        size_t cap = td->cap ? 2 * td->cap : 256;
        size_t *np = sf__os_realloc(td->page, cap * sizeof(*np));
        if (np)
            td->page = np;
        struct sf_version **nv = sf__os_realloc(td->src, cap * sizeof(*nv));
        if (nv)
            td->src = nv;
        uint64_t *no = sf__os_realloc(td->orig, cap * sizeof(*no));
        if (no)
            td->orig = no;
        if (!np || !nv || !no)
            return -ENOMEM;
        td->cap = cap;
    }
    td->page[td->n] = p;
    td->src[td->n++] = v;
    return 0;
}

static bool todo_armed(const struct todo *td, size_t i)
{
    return !sf__ps_writable(td->orig[i]);
}

/* Protect or unprotect pages of td, one call per span whose gaps are at
 * most sf__span_join's gap and hold no GONE page (the collector's batching,
 * see tracker.c).  Unprotect, and protect with only_armed, touch only the
 * pages that were armed, in contiguous runs: opening a gap would open
 * pages nobody restores.  Protecting across other gaps is harmless. */
static int apply_spans(sf_tracker *t, struct sf_region *r, const struct todo *td, bool protect,
                       bool only_armed)
{
    bool sel = !protect || only_armed;
    int err = 0;
    size_t i = 0;
    while (i < td->n) {
        if (sel && !todo_armed(td, i)) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < td->n && (!sel ? sf__span_join(t, td->page[j] - td->page[j - 1] - 1)
                                  : todo_armed(td, j) && td->page[j] == td->page[j - 1] + 1)) {
            if (!sel && sf__gone_between(r, td->page[j - 1] + 1, td->page[j]))
                break;
            j++;
        }
        uintptr_t a = r->start + (td->page[i] << sf_page_shift);
        size_t len = (td->page[j - 1] + 1 - td->page[i]) << sf_page_shift;
        int rc = protect ? t->ops->protect(t, r, a, len) : t->ops->unprotect(t, r, a, len);
        if (rc && !err)
            err = rc;
        i = j;
    }
    return err;
}

/* Gives the pages of td back as they were, after a failure before any was
 * copied: what was opened is protected again; if even that fails, the
 * pages stay open and dirty, and no live snapshot can rely on them. */
static void restore_undo(sf_tracker *t, struct sf_region *r, const struct todo *td)
{
    bool open = apply_spans(t, r, td, true, true) != 0;
    for (size_t i = 0; i < td->n; i++)
        sf__ps_restore_undo(r, td->page[i], td->orig[i], open);
    if (open)
        sf__snapshot_fail_range(t, 0, UINT32_MAX);
}

/* Restores the pages of r written since g: own them (COLLECTING), open
 * the ones still protected, copy their versions back, protect them again
 * in spans, and leave them ARMED+DIRTY with CGEN = the version's lo.
 * *changed says whether memory was written (then snapshots newer than g
 * no longer describe it). */
static long restore_region(sf_tracker *t, struct sf_region *r, uint32_t g, struct vlist *dead,
                           int *errp, bool *changed)
{
    struct todo td = {0};
    int err = 0;
    for (size_t c = 0; c < r->nchunks && !err; c++) {
        if (atomic_load(&r->chunk_maxgen[c]) <= g)
            continue;
        size_t p0 = c << SF_CHUNK_SHIFT, p1 = p0 + SF_CHUNK_PAGES;
        if (p1 > r->npages)
            p1 = r->npages;
        for (size_t p = p0; p < p1 && !err; p++) {
            /* a handler finishing (writers should be stopped) */
            uint64_t w = sf__wait_not_busy(&r->ps[p]);
            if (sf__ps_gone(w) || sf__eff_cgen(r, w) <= g)
                continue;
            struct sf_version *v = sf__version_for(r, p, g);
            if (v) /* no version: tracked again after s, left as it is */
                err = todo_add(&td, p, v);
        }
    }
    for (size_t i = 0; i < td.n && !err; i++)
        td.orig[i] = sf__ps_restore_claim(&r->ps[td.page[i]]);
    if (!err && (err = apply_spans(t, r, &td, false, false)) != 0)
        restore_undo(t, r, &td);
    *changed |= !err && td.n;
    for (size_t i = 0; i < td.n && !err; i++) {
        size_t p = td.page[i];
        struct sf_version *v = td.src[i];
        memcpy((char *)r->start + (p << sf_page_shift), sf__store_data(t->store, v), sf_page_size);
        /* Versions of content newer than s belong to invalidated
         * snapshots: drop them, so v is the head again. */
        for (struct sf_version *x = atomic_load(&r->vhead[p]); x && x != v; x = atomic_load(&x->next))
            if (x->lo > g) {
                atomic_store(&x->hi, 0);
                sf__version_unlink(x);
                sf__vlist_add(dead, x);
            }
    }
    int perr = err ? 0 : apply_spans(t, r, &td, true, false);
    /* Handler threads: messages read before these pages were opened are
     * stale (see sf__resolve). */
    unsigned slot = 0;
    uint64_t rs = t->fault_mode == SF_FAULTS_HANDLER_THREAD ? sf__rseq_next(t, &slot) : 0;
    for (size_t i = 0; i < td.n && !err; i++)
        sf__ps_restore_release(r, td.page[i], !perr, perr ? atomic_load(&t->gen) : td.src[i]->lo, rs);
    if (t->fault_mode == SF_FAULTS_HANDLER_THREAD)
        sf__rseq_woken(t, slot);
    /* Every restored chunk now holds content from <= g, except pages
     * tracked again after s. */
    for (size_t i = 0; i < td.n && !err; i++) {
        size_t c = td.page[i] >> SF_CHUNK_SHIFT;
        if (i && (td.page[i - 1] >> SF_CHUNK_SHIFT) == c)
            continue;
        sf__chunk_maxgen_recompute(r, c);
    }
    long n = err ? 0 : (long)td.n;
    sf__os_free(td.page);
    sf__os_free(td.src);
    sf__os_free(td.orig);
    *errp = err ? err : perr;
    return n;
}


static int cow_create(sf_tracker *t)
{
    return sf__store_create(t, t->store_limit);
}

static void cow_destroy(sf_tracker *t)
{
    sf__store_destroy(t);
}

/* Protects every page written since the previous take (SF_WALK_TAKE);
 * a page that cannot be protected fails the snapshot (-ENOSPC on use). */
static int cow_take(sf_tracker *t, sf_snapshot *s)
{
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs)
        return -ENOMEM;
    /* Handlers that saw the old C are done: their pages are writable
     * and the walk protects them. */
    sf__grace_wait();
    atomic_store(&t->take_failed, 0);
    for (size_t i = 0; i < n; i++)
        sf__collect_sync(t, rs[i], SF_WALK_TAKE, NULL, NULL);
    sf__tmp_free(rs);
    if (atomic_load(&t->take_failed) && !atomic_exchange(&t->failed_slot[s->slot], 1))
        SF_STAT_INC(t, st_failed, 1);
    return 0;
}

static long cow_restore(sf_snapshot *s, struct vlist *dead, int *err, bool *changed)
{
    sf_tracker *t = s->t;
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs) {
        *err = -ENOMEM;
        return 0;
    }
    long restored = 0;
    for (size_t i = 0; i < n && !*err; i++)
        if (rs[i]->track_gen <= s->gen) /* tracked after s: left as it is */
            restored += restore_region(t, rs[i], s->gen, dead, err, changed);
    sf__os_free(rs);
    return restored;
}

static void cow_release(sf_tracker *t, sf_snapshot *s)
{
    (void)s;
    sf__grace_wait(); /* handlers that saw the slot live are done */
    sf__versions_gc(t);
}

const struct sf_engine_ops sf__engine_cow = {
    .id = SF_ENGINE_COW,
    .create = cow_create,
    .destroy = cow_destroy,
    .take = cow_take,
    .read_page = cow_read_page,
    .content_epoch = sf__content_epoch,
    .restore = cow_restore,
    .release = cow_release,
};
