/* snapshot.c - copy-on-write snapshots: generations, page versions shared
 * between snapshots, read, restore, release and garbage collection. */
#include "snapshot.h"
#include "image.h"

#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Generations.  The tracker's generation C counts takes; the snapshot taken
 * when C was g has gen g, and C becomes g+1.  Each page records CGEN, the
 * generation in which its current content began.  Snapshot g sees, for
 * page p:
 *   - live memory, if CGEN(p) <= g (the page is protected since the take,
 *     so it cannot change without a fault that first saves it);
 *   - else the version of p with lo <= g <= hi.
 * The first write after a take saves the content once, as a version valid
 * for [CGEN, C-1]: every live snapshot taken since that content began
 * shares that one copy. */

static uint32_t eff_cgen(const struct sf_region *r, uint64_t w)
{
    uint32_t cg = PS_CGEN(w);
    return cg > r->track_gen ? cg : r->track_gen;
}

/* Async-signal-safe: is any live snapshot's generation >= cg?  (Live
 * generations are all < C, so this is "some snapshot in [cg, C-1]".) */
bool sf__snapshot_needs_save(sf_tracker *t, uint32_t cg)
{
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++) {
        uint32_t g = atomic_load_explicit(&t->live_gen[i], memory_order_seq_cst);
        if (g && g >= cg)
            return true;
    }
    return false;
}

static void fail_range(sf_tracker *t, uint32_t lo, uint32_t hi)
{
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++) {
        uint32_t g = atomic_load(&t->live_gen[i]);
        if (g && g >= lo && g <= hi && !atomic_exchange(&t->failed_slot[i], 1))
            SF_STAT_INC(t, st_failed, 1);
    }
}

/* Called by the fault handler that owns page (BUSY), before unprotecting.
 * Async-signal-safe: the store allocates without locks. */
void sf__snapshot_save(struct sf_region *r, size_t page, uint64_t w, uint32_t C)
{
    sf_tracker *t = r->t;
    uint32_t cg = eff_cgen(r, w);
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
        fail_range(t, cg, C - 1); /* the program's write proceeds anyway */
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

static struct sf_version *version_for(struct sf_region *r, size_t page, uint32_t g)
{
    for (struct sf_version *v = atomic_load(&r->vhead[page]); v; v = atomic_load(&v->next))
        if (v->lo <= g && g <= atomic_load(&v->hi))
            return v;
    return NULL;
}

/* Unlinks v from its page's chain.  Collector side (t->lock held): only
 * the head can change under us (a handler pushing). */
static void unlink_version(struct sf_version *v)
{
    _Atomic(struct sf_version *) *head = &v->region->vhead[v->page];
    for (;;) {
        struct sf_version *h = atomic_load(head);
        if (h == v) {
            if (atomic_compare_exchange_strong(head, &h, atomic_load(&v->next)))
                return;
            continue;
        }
        for (struct sf_version *p = h; p; p = atomic_load(&p->next))
            if (atomic_load(&p->next) == v) {
                atomic_store(&p->next, atomic_load(&v->next));
                return;
            }
        return; /* not linked */
    }
}

/* Frees versions after a grace period: readers may still be walking them. */
struct vlist {
    struct sf_version **v;
    size_t n, cap;
};

static void vlist_add(struct vlist *l, struct sf_version *v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct sf_version **nv = realloc(l->v, cap * sizeof(*nv));
        if (!nv)
            return; /* leaked until the tracker is destroyed; never unsafe */
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

static void vlist_free(sf_tracker *t, struct vlist *l)
{
    if (l->n) {
        sf__grace_wait();
        for (size_t i = 0; i < l->n; i++)
            sf__store_free(t->store, l->v[i]);
    }
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static bool covered(sf_tracker *t, const struct sf_version *v, uint32_t hi)
{
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++) {
        uint32_t g = atomic_load(&t->live_gen[i]);
        if (g && v->lo <= g && g <= hi)
            return true;
    }
    return false;
}

/* Drops every version no live snapshot needs.  Caller holds t->lock. */
static void gc(sf_tracker *t)
{
    struct sf_store *st = t->store;
    struct vlist dead = {0};
    size_t n = atomic_load(&st->bump);
    if (n > st->nslots) /* never, since allocation stops there: be sure */
        n = st->nslots;
    for (size_t i = 0; i < n; i++) {
        struct sf_version *v = &st->nodes[i];
        if (!atomic_load(&v->inuse))
            continue;
        /* Declare it dead by CAS on hi: a handler extending it at the same
         * time either wins (and it stays) or sees 0 and copies anew. */
        uint32_t hi = atomic_load(&v->hi);
        bool is_dead = hi == 0;
        while (!is_dead && !covered(t, v, hi))
            is_dead = atomic_compare_exchange_weak(&v->hi, &hi, 0) || hi == 0;
        if (is_dead) {
            unlink_version(v);
            vlist_add(&dead, v);
        }
    }
    vlist_free(t, &dead);
}

void sf__versions_drop_range(struct sf_region *r, uintptr_t start, uintptr_t end)
{
    sf_tracker *t = r->t;
    struct vlist dead = {0};
    for (size_t p = (start - r->start) >> sf_page_shift; p < (end - r->start) >> sf_page_shift; p++) {
        struct sf_version *v = atomic_exchange(&r->vhead[p], NULL);
        for (; v; v = atomic_load(&v->next))
            vlist_add(&dead, v);
    }
    vlist_free(t, &dead);
}

void sf__versions_drop_region(struct sf_region *r)
{
    sf__versions_drop_range(r, r->start, r->end);
}

static int snap_state(const sf_snapshot *s)
{
    if (sf__forked(s->t))
        return -ECHILD;
    if (atomic_load(&s->stale))
        return -ESTALE;
    if (atomic_load(&s->t->failed_slot[s->slot]))
        return -ENOSPC;
    return 0;
}

SF_API int sf_snapshot_take(sf_tracker *t, sf_snapshot **out)
{
    if (!t || !out)
        return -EINVAL;
    *out = NULL;
    if (!t->store && !t->copy_snapshots)
        return -ENOTSUP;
    if (sf__forked(t))
        return -ECHILD;
    sf__signals_ensure();
    sf_snapshot *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (getrandom(&s->id, sizeof(s->id), 0) != sizeof(s->id) || !s->id) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s->id = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)s;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s->taken_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;

    pthread_mutex_lock(&t->lock);
    int slot = -1;
    for (int i = 0; i < SF_MAX_SNAPSHOTS && slot < 0; i++)
        if (!t->snaps[i])
            slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&t->lock);
        free(s);
        return -EAGAIN;
    }
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs) {
        pthread_mutex_unlock(&t->lock);
        free(s);
        return -ENOMEM;
    }
    s->t = t;
    s->slot = slot;
    atomic_init(&s->refs, 1);
    s->gen = atomic_load(&t->gen);
    atomic_store(&t->failed_slot[slot], 0);
    /* Order matters: the slot is live before C moves, so a handler that
     * sees the new C also sees the snapshot and saves for it; the grace
     * period then waits out handlers that saw the old C, whose pages the
     * walk below finds writable and protects. */
    atomic_store(&t->live_gen[slot], s->gen);
    atomic_store(&t->gen, s->gen + 1);
    if (t->copy_snapshots) {
        free(rs);
        int err = sf__copysnap_take(t, s);
        if (err) {
            atomic_store(&t->live_gen[slot], 0);
            pthread_mutex_unlock(&t->lock);
            free(s);
            return err;
        }
        t->snaps[slot] = s;
        pthread_mutex_unlock(&t->lock);
        *out = s;
        return 0;
    }
    sf__grace_wait();
    atomic_store(&t->take_failed, 0);
    for (size_t i = 0; i < n; i++)
        sf__collect_sync(t, rs[i], SF_WALK_TAKE, NULL, NULL);
    free(rs);
    if (atomic_load(&t->take_failed) && !atomic_exchange(&t->failed_slot[slot], 1))
        SF_STAT_INC(t, st_failed, 1);
    t->snaps[slot] = s;
    pthread_mutex_unlock(&t->lock);
    *out = s;
    return 0;
}

/* Reads one page of s into buf.  Returns 0, -ENOENT (not in s) or another
 * -errno.  Runs concurrently with faults: live memory is read between two
 * identical non-BUSY state words (a seqlock whose writer is the handler). */
static int read_page(const sf_snapshot *s, uintptr_t page_addr, void *buf, size_t off, size_t len)
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
        uint64_t w = atomic_load(&r->ps[p]);
        if (w & PS_GONE) {
            sf__grace_exit(g);
            return -ENOENT;
        }
        if (PS_ST(w) == PS_BUSY) {
            sf__grace_exit(g);
            sf__cpu_relax();
            continue;
        }
        if (eff_cgen(r, w) <= s->gen) {
            memcpy(buf, (char *)page_addr + off, len);
            /* The copy's plain reads happen before the re-check (seqlock). */
            atomic_thread_fence(memory_order_acquire);
            bool same = atomic_load(&r->ps[p]) == w;
            sf__grace_exit(g);
            if (same)
                return 0;
            continue;
        }
        struct sf_version *v = version_for(r, p, s->gen);
        if (v)
            memcpy(buf, (char *)sf__store_data(t->store, v) + off, len);
        sf__grace_exit(g);
        if (v)
            return 0;
        /* No copy: the page was revived after s, or the copy failed. */
        return atomic_load(&t->failed_slot[s->slot]) ? -ENOSPC : -ENOENT;
    }
}

SF_API int sf_snapshot_read(const sf_snapshot *s, const void *addr, void *buf, size_t len)
{
    if (!s || !addr || (!buf && len))
        return -EINVAL;
    uintptr_t a = (uintptr_t)addr;
    if (a + len < a)
        return -EINVAL;
    int err = snap_state(s);
    if (err)
        return err;
    if (s->t->copy_snapshots)
        return sf__copysnap_read(s, a, buf, len);
    char *out = buf;
    while (len) {
        uintptr_t page = a & ~(uintptr_t)(sf_page_size - 1);
        size_t off = a - page, n = sf_page_size - off;
        if (n > len)
            n = len;
        err = read_page(s, page, out, off, n);
        if (err)
            return err;
        a += n;
        out += n;
        len -= n;
    }
    /* A copy that failed after we read would make what we returned
     * unverifiable: report it. */
    return snap_state(s);
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
        size_t *np = realloc(td->page, cap * sizeof(*np));
        if (np)
            td->page = np;
        struct sf_version **nv = realloc(td->src, cap * sizeof(*nv));
        if (nv)
            td->src = nv;
        uint64_t *no = realloc(td->orig, cap * sizeof(*no));
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
    return PS_ST(td->orig[i]) != PS_WRITABLE;
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
    for (size_t i = 0; i < td->n; i++) {
        _Atomic uint64_t *ps = &r->ps[td->page[i]];
        uint64_t w = atomic_load(ps);
        if (PS_ST(w) != PS_COLLECTING)
            continue; /* a writer took it over */
        uint64_t nw = open ? PS_WITH_ST(td->orig[i], PS_WRITABLE) | PS_DIRTY : td->orig[i];
        atomic_compare_exchange_strong(ps, &w, nw);
        if (open)
            sf__chunk_mark(r, td->page[i], CH_DIRTY | CH_WRITABLE);
    }
    if (open)
        fail_range(t, 0, UINT32_MAX);
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
            if (w & PS_GONE || eff_cgen(r, w) <= g)
                continue;
            struct sf_version *v = version_for(r, p, g);
            if (v) /* no version: tracked again after s, left as it is */
                err = todo_add(&td, p, v);
        }
    }
    for (size_t i = 0; i < td.n && !err; i++) {
        _Atomic uint64_t *ps = &r->ps[td.page[i]];
        uint64_t w = atomic_load(ps);
        for (;;) {
            if (PS_ST(w) == PS_BUSY) {
                w = sf__wait_not_busy(ps);
                continue;
            }
            if (atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(w, PS_COLLECTING)))
                break;
        }
        td.orig[i] = w;
    }
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
                unlink_version(x);
                vlist_add(dead, x);
            }
    }
    int perr = err ? 0 : apply_spans(t, r, &td, true, false);
    /* Handler threads: messages read before these pages were opened are
     * stale (see sf__resolve). */
    uint64_t rs = t->fault_mode == SF_FAULTS_HANDLER_THREAD ? sf__rseq_next(t) : 0;
    for (size_t i = 0; i < td.n && !err; i++) {
        size_t p = td.page[i];
        uint64_t w = atomic_load(&r->ps[p]);
        if (PS_ST(w) != PS_COLLECTING)
            continue; /* a writer took it over: it stays dirty */
        uint64_t nw = perr ? PS_MAKE(PS_WRITABLE, 1, atomic_load(&t->gen))
                           : PS_MAKE(PS_ARMED, 1, td.src[i]->lo);
        atomic_compare_exchange_strong(&r->ps[p], &w, nw | rs);
        sf__chunk_mark(r, p, CH_DIRTY | (perr ? CH_WRITABLE : 0));
    }
    /* Every restored chunk now holds content from <= g, except pages
     * tracked again after s. */
    for (size_t i = 0; i < td.n && !err; i++) {
        size_t c = td.page[i] >> SF_CHUNK_SHIFT;
        if (i && (td.page[i - 1] >> SF_CHUNK_SHIFT) == c)
            continue;
        uint32_t mx = 0;
        size_t q0 = c << SF_CHUNK_SHIFT, q1 = q0 + SF_CHUNK_PAGES < r->npages ? q0 + SF_CHUNK_PAGES : r->npages;
        for (size_t q = q0; q < q1; q++) {
            uint32_t cg = eff_cgen(r, atomic_load(&r->ps[q]));
            mx = cg > mx ? cg : mx;
        }
        atomic_store(&r->chunk_maxgen[c], mx);
    }
    long n = err ? 0 : (long)td.n;
    free(td.page);
    free(td.src);
    free(td.orig);
    *errp = err ? err : perr;
    return n;
}

SF_API int sf_snapshot_restore(sf_snapshot *s)
{
    if (!s)
        return -EINVAL;
    sf_tracker *t = s->t;
    if (sf__forked(t)) /* before the lock: a child may inherit it held */
        return -ECHILD;
    sf__signals_ensure();
    pthread_mutex_lock(&t->lock);
    int err = snap_state(s);
    if (err) {
        pthread_mutex_unlock(&t->lock);
        return err;
    }
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs) {
        pthread_mutex_unlock(&t->lock);
        return -ENOMEM;
    }
    uint32_t g = s->gen;
    struct vlist dead = {0};
    long restored = 0;
    bool changed = false;
    if (t->copy_snapshots)
        err = sf__copysnap_restore(s, &restored, &changed);
    for (size_t i = 0; i < n && !err && !t->copy_snapshots; i++)
        if (rs[i]->track_gen <= g) /* tracked after s: left as it is */
            restored += restore_region(t, rs[i], g, &dead, &err, &changed);
    free(rs);
    /* Snapshots taken after s described memory that no longer exists,
     * once any of it was written back (a restore that failed before that
     * leaves them as they were). */
    for (int i = 0; i < SF_MAX_SNAPSHOTS && changed; i++)
        if (t->snaps[i] && t->snaps[i]->gen > g) {
            atomic_store(&t->snaps[i]->stale, 1);
            atomic_store(&t->live_gen[i], 0);
        }
    /* A fresh generation: no version numbering is ever reused. */
    if (changed)
        atomic_store(&t->gen, atomic_load(&t->gen) + 1);
    vlist_free(t, &dead);
    pthread_mutex_unlock(&t->lock);
    if (err)
        return err;
    return restored > INT32_MAX ? INT32_MAX : (int)restored;
}

SF_API uint64_t sf_snapshot_id(const sf_snapshot *s)
{
    return s ? s->id : 0;
}

static void snapshot_free(sf_snapshot *s)
{
    sf_tracker *t = s->t;
    if (sf__forked(t)) {
        /* A fork child: the parent's lock may have been inherited held,
         * and no handler of this process uses the parent's snapshots. */
        t->snaps[s->slot] = NULL;
        atomic_store(&t->live_gen[s->slot], 0);
        if (t->copy_snapshots)
            sf__copysnap_free(s);
        free(s);
        return;
    }
    pthread_mutex_lock(&t->lock);
    atomic_store(&t->live_gen[s->slot], 0);
    t->snaps[s->slot] = NULL;
    if (t->copy_snapshots)
        sf__copysnap_free(s);
    else if (!sf__forked(t)) {
        sf__grace_wait(); /* handlers that saw the slot live are done */
        gc(t);
    }
    pthread_mutex_unlock(&t->lock);
    free(s);
}

static void snapshot_put(sf_snapshot *s)
{
    if (atomic_fetch_sub(&s->refs, 1) == 1)
        snapshot_free(s);
}

/* A write in progress holds a reference: the snapshot (and its copies)
 * goes away when the last of release and the writers is done. */
SF_API void sf_snapshot_release(sf_snapshot *s)
{
    if (s)
        snapshot_put(s);
}

/* Called by sf_tracker_destroy (t->lock held): snapshots the caller did not
 * release are freed with the tracker. */
void sf__snapshots_destroy(sf_tracker *t)
{
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++) {
        atomic_store(&t->live_gen[i], 0);
        if (t->snaps[i] && t->copy_snapshots)
            sf__copysnap_free(t->snaps[i]);
        free(t->snaps[i]);
        t->snaps[i] = NULL;
    }
}

/* ------------------------------------------------------------------------
 * Images: the writer pulls pages through read_page, so a page still
 * protected since the take goes from live memory straight into the
 * writer's buffer; only pages written before the writer reached them were
 * copied (by the fault path).
 * ------------------------------------------------------------------------ */
struct write_ctx {
    const sf_snapshot *s, *parent;
};

/* Which content page p has in snapshot gen g: the generation its content
 * began in (live CGEN or the covering version's lo), or 0 if not in it. */
static uint32_t content_epoch(const sf_snapshot *s, uintptr_t page_addr, uint32_t g)
{
    uint32_t e = 0;
    unsigned tok = sf__grace_enter();
    struct sf_region *r = sf__region_find(page_addr);
    if (r && r->t == s->t && r->track_gen <= g) {
        size_t p = (page_addr - r->start) >> sf_page_shift;
        uint64_t w = atomic_load(&r->ps[p]);
        if (!(w & PS_GONE)) {
            uint32_t cg = eff_cgen(r, w);
            if (cg <= g)
                e = cg;
            else {
                struct sf_version *v = version_for(r, p, g);
                e = v ? v->lo : 0;
            }
        }
    }
    sf__grace_exit(tok);
    return e;
}

static int image_page(void *vctx, uint64_t addr, void *buf)
{
    struct write_ctx *c = vctx;
    if (c->s->t->copy_snapshots)
        return sf__copysnap_page(c->s, c->parent, (uintptr_t)addr, buf);
    if (c->parent) {
        uint32_t mine = content_epoch(c->s, (uintptr_t)addr, c->s->gen);
        if (mine && mine == content_epoch(c->s, (uintptr_t)addr, c->parent->gen))
            return 0; /* unchanged since the parent */
    }
    int err = read_page(c->s, (uintptr_t)addr, buf, 0, sf_page_size);
    return err ? err : 1;
}

/* A reader that went away must not kill the program: SIGPIPE is blocked
 * in this thread while writing, and one we caused is consumed, so the
 * caller sees -EPIPE instead. */
static int write_no_sigpipe(int fd, const struct sf_image_src *src)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int err = sf__image_write(fd, src);
    if (err == -EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

static int write_image(sf_snapshot *s, const sf_snapshot *parent, int fd, unsigned flags)
{
    if (!s || fd < 0)
        return -EINVAL;
    if (parent && (parent->t != s->t || parent->gen >= s->gen))
        return -EINVAL;
    int err = snap_state(s);
    if (!err && parent)
        err = snap_state(parent);
    if (err)
        return err;
    sf_tracker *t = s->t;
    /* The ranges s holds: regions tracked when s was taken, still tracked
     * (GONE stretches of a region are left out). */
    pthread_mutex_lock(&t->lock);
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    struct sf_image_range *ranges = NULL;
    size_t nr = 0, cap = 0;
    for (size_t i = 0; rs && i < n; i++) {
        struct sf_region *r = rs[i];
        if (r->track_gen > s->gen)
            continue;
        for (size_t p = 0; p < r->npages;) {
            if (atomic_load(&r->ps[p]) & PS_GONE) {
                p++;
                continue;
            }
            size_t q = p + 1;
            while (q < r->npages && !(atomic_load(&r->ps[q]) & PS_GONE))
                q++;
            if (nr == cap) {
                cap = cap ? 2 * cap : 16;
                struct sf_image_range *nv = realloc(ranges, cap * sizeof(*nv));
                if (!nv) {
                    err = -ENOMEM;
                    break;
                }
                ranges = nv;
            }
            ranges[nr++] = (struct sf_image_range){r->start + (p << sf_page_shift), (q - p) << sf_page_shift};
            p = q;
        }
    }
    pthread_mutex_unlock(&t->lock);
    free(rs);
    if (!rs)
        err = -ENOMEM;
    if (!err) {
        struct write_ctx ctx = {s, parent};
        struct sf_image_src src = {
            .id = s->id,
            .parent_id = parent ? parent->id : 0,
            .taken_ns = s->taken_ns,
            .page_size = (uint32_t)sf_page_size,
            .ranges = ranges,
            .nranges = nr,
            .read_page = image_page,
            .ctx = &ctx,
            .flags = flags,
        };
        err = write_no_sigpipe(fd, &src);
    }
    free(ranges);
    if (!err)
        err = snap_state(s);
    return err;
}

static int write_ref(sf_snapshot *s, sf_snapshot *parent, int fd, unsigned flags)
{
    atomic_fetch_add(&s->refs, 1);
    if (parent)
        atomic_fetch_add(&parent->refs, 1);
    int err = write_image(s, parent, fd, flags);
    if (parent)
        snapshot_put(parent);
    snapshot_put(s);
    return err;
}

SF_API int sf_snapshot_write(sf_snapshot *s, int fd)
{
    if (!s)
        return -EINVAL;
    return write_ref(s, NULL, fd, 0);
}

SF_API int sf_snapshot_write_incremental(sf_snapshot *s, const sf_snapshot *parent, int fd)
{
    if (!s || !parent)
        return -EINVAL;
    return write_ref(s, (sf_snapshot *)parent, fd, 0);
}

SF_API int sf_snapshot_write_flags(sf_snapshot *s, const sf_snapshot *parent, int fd, unsigned flags)
{
    if (!s)
        return -EINVAL;
    return write_ref(s, (sf_snapshot *)parent, fd, flags);
}
