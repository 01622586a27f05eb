/* tracker.c - trackers, track/untrack, and collect: the collector's walks
 * over the page-state machine of pagestate.h (fault.c resolves faults). */
#include "internal.h"
#include "snapshot.h"
#include "stop.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct sf_backend_ops *const backends[SF_BACKEND_COUNT] = {
    [SF_BACKEND_UFFD_ASYNC] = &sf__backend_uffd_async,
    [SF_BACKEND_UFFD_SYNC] = &sf__backend_uffd_sync,
    [SF_BACKEND_MPROTECT] = &sf__backend_mprotect,
    [SF_BACKEND_SOFTDIRTY] = &sf__backend_softdirty,
};

#define SF_OPT_ALL (SF_OPT_SNAPSHOTS | SF_OPT_INTHREAD_FAULTS | SF_OPT_HANDLER_THREADS | \
                    SF_OPT_KERNEL_WRITES | SF_OPT_CLUSTER | SF_OPT_EXACT | SF_OPT_LOW_MEMORY | \
                    SF_OPT_STOP_THREADS)


SF_API int sf_tracker_create(sf_tracker **out, const sf_options *opt)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    sf__init();
    sf_options def = {0};
    if (!opt)
        opt = &def;
    if ((unsigned)opt->backend >= SF_BACKEND_COUNT || (opt->flags & ~SF_OPT_ALL) ||
        ((opt->flags & SF_OPT_INTHREAD_FAULTS) && (opt->flags & SF_OPT_HANDLER_THREADS)) ||
        ((opt->flags & SF_OPT_CLUSTER) && (opt->flags & SF_OPT_EXACT)) ||
        ((opt->flags & SF_OPT_STOP_THREADS) && !(opt->flags & SF_OPT_SNAPSHOTS)))
        return -EINVAL;
    const sf_caps *caps;
    sf__probe_cached(&caps);
    bool snaps = opt->flags & SF_OPT_SNAPSHOTS;
    sf_backend b = opt->backend;
    if ((unsigned)opt->engine >= SF_ENGINE_COUNT ||
        (opt->engine == SF_ENGINE_MIRROR && (opt->flags & SF_OPT_LOW_MEMORY)))
        return -EINVAL;
    if (b == SF_BACKEND_AUTO && snaps) {
        /* The engine policy (see sf_options in snapfault.h): mirror where
         * the kernel resolves writes itself, unless asked to save memory;
         * COW on the best sync backend otherwise. */
        sf_backend cow = !caps->backend_ok[SF_BACKEND_UFFD_SYNC] ? SF_BACKEND_UFFD_SYNC : SF_BACKEND_MPROTECT;
        sf_engine e = opt->engine;
        if (e == SF_ENGINE_AUTO)
            e = (opt->flags & (SF_OPT_LOW_MEMORY | SF_OPT_INTHREAD_FAULTS | SF_OPT_HANDLER_THREADS))
                    ? SF_ENGINE_COW : caps->auto_engine;
        b = e == SF_ENGINE_MIRROR ? SF_BACKEND_UFFD_ASYNC : cow;
    } else if (b == SF_BACKEND_AUTO) {
        b = caps->auto_tracking;
        /* In-thread faults were asked for: uffd-sync can do them. */
        if (!snaps && (opt->flags & (SF_OPT_INTHREAD_FAULTS | SF_OPT_HANDLER_THREADS)) &&
            !caps->backend_ok[SF_BACKEND_UFFD_SYNC])
            b = SF_BACKEND_UFFD_SYNC;
    }
    if (snaps && b == SF_BACKEND_SOFTDIRTY)
        return -ENOTSUP; /* its reset is whole-process and not atomic */
    if ((opt->flags & (SF_OPT_INTHREAD_FAULTS | SF_OPT_HANDLER_THREADS)) &&
        b != SF_BACKEND_UFFD_SYNC)
        return -EINVAL;

    sf_tracker *t = sf__os_calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->ops = backends[b];
    t->backend = b;
    t->flags = opt->flags;
    t->pid = sf__os_getpid();
    t->uffd = t->pagemap_fd = -1;
    t->wake_pipe[0] = t->wake_pipe[1] = -1;
    t->nthreads = opt->handler_threads;
    t->exact = (opt->flags & SF_OPT_EXACT) || (!snaps && !(opt->flags & SF_OPT_CLUSTER));
    atomic_init(&t->gen, 1);
    pthread_mutex_init(&t->lock, NULL);
    int err = sf__signals_ensure();
    if (!err && (opt->flags & SF_OPT_STOP_THREADS))
        err = sf__stop_init();
    if (!err)
        err = t->ops->open(t);
    if (!err && (opt->flags & SF_OPT_KERNEL_WRITES) &&
        (t->fault_mode == SF_FAULTS_SIGNAL || t->fault_mode == SF_FAULTS_INTHREAD))
        err = -ENOTSUP;
    t->store_limit = opt->store_limit ? opt->store_limit : SF_DEFAULT_STORE_LIMIT;
    /* The engine follows the backend (snapshot.c): COW needs a fault path,
     * uffd-async's kernel-resolved writes get a mirror. */
    const struct sf_engine_ops *engine = NULL;
    if (!err && snaps)
        engine = sf__engine_for(opt->engine, b, &err);
    if (!err && engine && (opt->flags & SF_OPT_LOW_MEMORY) && engine->id == SF_ENGINE_MIRROR)
        err = -ENOTSUP; /* an explicit uffd-async backend: only a mirror */
    t->shadow_counted = opt->store_limit != 0;
    if (!err && engine && !(err = engine->create(t)))
        t->engine = engine;
    if (err) {
        t->ops->close(t);
        sf__engine_destroy(t);
        pthread_mutex_destroy(&t->lock);
        sf__os_free(t);
        return err;
    }
    *out = t;
    return 0;
}

SF_API sf_backend sf_tracker_backend(const sf_tracker *t)
{
    return t ? t->backend : SF_BACKEND_AUTO;
}

SF_API sf_fault_mode sf_tracker_fault_mode(const sf_tracker *t)
{
    return t ? t->fault_mode : SF_FAULTS_NONE;
}

static int check_range(const void *addr, size_t len)
{
    uintptr_t a = (uintptr_t)addr;
    if (!addr || !len || (a & (sf_page_size - 1)) || (len & (sf_page_size - 1)) ||
        a + len < a)
        return -EINVAL;
    return 0;
}

/* Pages of an existing region of t that a partial untrack left GONE are
 * tracked again in place: regions in the table never overlap. */
static int revive(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    size_t p0 = (a - r->start) >> sf_page_shift, p1 = (e - r->start) >> sf_page_shift;
    if (!sf__ps_all_gone(r, p0, p1))
        return -EEXIST;
    uint32_t C = atomic_load(&t->gen);
    sf__ps_revive_range(r, p0, p1, C);
    atomic_fetch_sub(&r->gone, p1 - p0);
    int err = t->ops->attach(t, r, a, e);
    if (!err)
        err = sf__engine_attach(t, r, p0, p1); /* cannot fail for a revive */
    if (err) {
        sf__ps_bury_range(r, p0, p1, C);
        atomic_fetch_add(&r->gone, p1 - p0);
    }
    return err;
}

SF_API int sf_track(sf_tracker *t, void *addr, size_t len)
{
    if (!t)
        return -EINVAL;
    int err = check_range(addr, len);
    if (err)
        return err;
    if (sf__forked(t))
        return -ECHILD;
    sf__signals_ensure();
    /* A range with a hole would be half protected when the backend fails
     * on the hole (mprotect) or silently accepted (uffd). */
    if (sf__os_msync(addr, len, MS_ASYNC) < 0)
        return errno == ENOMEM ? -EFAULT : -errno;
    uintptr_t a = (uintptr_t)addr, e = a + len;
    pthread_mutex_lock(&t->lock);
    pthread_mutex_lock(&sf__regions_lock);
    if (sf__regions_overlap(a, e)) {
        /* Only GONE pages of one of our own regions may be tracked again. */
        unsigned g = sf__grace_enter();
        struct sf_region *r = sf__region_find(a);
        sf__grace_exit(g);
        err = (r && r->t == t && e <= r->end) ? revive(t, r, a, e) : -EEXIST;
        pthread_mutex_unlock(&sf__regions_lock);
        pthread_mutex_unlock(&t->lock);
        return err;
    }
    struct sf_region *r = sf__region_new(t, a, e, t->store != NULL);
    if (!r) {
        pthread_mutex_unlock(&sf__regions_lock);
        pthread_mutex_unlock(&t->lock);
        return -ENOMEM;
    }
    r->track_gen = atomic_load(&t->gen);
    err = sf__engine_attach(t, r, 0, r->npages);
    /* Publish before protecting: a fault must always find its region. */
    if (!err)
        err = sf__regions_insert(r);
    if (!err) {
        err = t->ops->attach(t, r, r->start, r->end);
        if (err) {
            sf__regions_remove(&r, 1);
        }
    }
    if (err)
        sf__engine_region_fini(t, r);
    pthread_mutex_unlock(&sf__regions_lock);
    pthread_mutex_unlock(&t->lock);
    if (err)
        sf__region_free(r);
    return err;
}

/* Drops whole regions: unprotect, unpublish, wait out the handlers, free. */
static void drop_regions(sf_tracker *t, struct sf_region **rs, size_t n)
{
    if (!n)
        return;
    if (!sf__forked(t))
        for (size_t i = 0; i < n; i++)
            t->ops->detach(t, rs[i], rs[i]->start, rs[i]->end);
    pthread_mutex_lock(&sf__regions_lock);
    sf__regions_remove(rs, n);
    pthread_mutex_unlock(&sf__regions_lock);
    for (size_t i = 0; i < n; i++) {
        if (rs[i]->vhead)
            sf__versions_drop_region(rs[i]);
        sf__engine_region_fini(t, rs[i]);
        sf__region_free(rs[i]);
    }
}

SF_API int sf_untrack(sf_tracker *t, void *addr, size_t len)
{
    if (!t)
        return -EINVAL;
    int err = check_range(addr, len);
    if (err)
        return err;
    if (sf__forked(t))
        return -ECHILD;
    uintptr_t a = (uintptr_t)addr, e = a + len;
    pthread_mutex_lock(&t->lock);
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs) {
        pthread_mutex_unlock(&t->lock);
        return -ENOMEM;
    }
    /* Every page must be tracked (and not GONE) by t. */
    uintptr_t cover = a;
    for (size_t i = 0; i < n && cover < e; i++) {
        struct sf_region *r = rs[i];
        if (r->end <= cover || r->start > cover)
            continue;
        uintptr_t hi = r->end < e ? r->end : e;
        if (sf__gone_between(r, (cover - r->start) >> sf_page_shift, (hi - r->start) >> sf_page_shift))
            goto notfound;
        cover = hi;
    }
    if (cover < e) {
    notfound:
        sf__os_free(rs);
        pthread_mutex_unlock(&t->lock);
        return -ENOENT;
    }
    size_t ndrop = 0;
    bool partial = false;
    for (size_t i = 0; i < n; i++) {
        struct sf_region *r = rs[i];
        if (r->end <= a || r->start >= e)
            continue;
        if (a <= r->start && r->end <= e) {
            rs[ndrop++] = r;
            continue;
        }
        partial = true;
        /* Part of a region: unprotect it, then mark its pages GONE (a fault
         * racing with this finds them writable or GONE, never armed). */
        uintptr_t sa = a > r->start ? a : r->start, se = e < r->end ? e : r->end;
        if (!sf__forked(t))
            t->ops->detach(t, r, sa, se);
        sf__ps_untrack_range(r, (sa - r->start) >> sf_page_shift, (se - r->start) >> sf_page_shift);
        /* A region untracked piece by piece goes away once all of it has. */
        if (atomic_fetch_add(&r->gone, (se - sa) >> sf_page_shift) + ((se - sa) >> sf_page_shift) ==
            r->npages)
            rs[ndrop++] = r;
        /* What the kernel reported for these pages is no longer owed. */
        for (uintptr_t a2 = sa; a2 < se; a2 += sf_page_size) {
            size_t p = (a2 - r->start) >> sf_page_shift;
            if (r->abits)
                r->abits[p >> 6] &= ~(1ull << (p & 63));
            if (r->mbits)
                r->mbits[p >> 6] &= ~(1ull << (p & 63));
        }
        if (r->vhead)
            sf__versions_drop_range(r, sa, se);
    }
    /* Readers (an image writer copying live pages) may still be inside
     * pages given back here: the caller may unmap them once we return. */
    if (partial)
        sf__grace_wait();
    drop_regions(t, rs, ndrop);
    sf__os_free(rs);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

SF_API void sf_tracker_destroy(sf_tracker *t)
{
    if (!t)
        return;
    /* In a fork child the parent's lock may have been inherited held (a
     * collect running in another thread at the fork): the child's path
     * never takes it.  Only the forking thread runs there. */
    bool forked = sf__forked(t);
    if (!forked)
        pthread_mutex_lock(&t->lock);
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    drop_regions(t, rs, rs ? n : 0);
    sf__os_free(rs);
    sf__snapshots_destroy(t);
    if (!forked) {
        pthread_mutex_unlock(&t->lock);
        sf__engine_destroy(t); /* stops the engine's thread, if any */
        t->ops->close(t);
        pthread_mutex_destroy(&t->lock);
    } else {
        /* The uffd belongs to the parent's address space: never ioctl it,
         * just drop our descriptor. */
        if (t->uffd >= 0)
            sf__os_close(t->uffd);
        if (t->pagemap_fd >= 0)
            sf__os_close(t->pagemap_fd);
    }
    if (forked)
        sf__engine_destroy(t);
    sf__os_free(t);
}

/* ------------------------------------------------------------------------
 * The collector.
 * ------------------------------------------------------------------------ */

/* Runs picked by a walk are re-armed in batches: one protect call over the
 * span from the first run to the last.  Every protect call costs a TLB
 * shootdown (an IPI when other threads of the process run), which for
 * scattered pages costs far more than walking the page tables in between;
 * pages between the runs are ARMED already (re-protecting is harmless) or
 * were just opened by a fault (the heal path in fault.c re-opens them).
 * A span never crosses a GONE stretch (unregistered for uffd). */
#define BATCH_RUNS 128
struct batch {
    size_t n;
    size_t s[BATCH_RUNS], e[BATCH_RUNS];
    uint64_t *whole; /* take: chunks armed as a whole (sf__ps_take_chunk), or NULL */
};

static bool chunk_whole(const struct batch *b, size_t c)
{
    return b->whole && (b->whole[c >> 6] >> (c & 63)) & 1;
}

static void rearm_batch(sf_tracker *t, struct sf_region *r, const struct batch *b, enum sf_walk mode)
{
    atomic_fetch_add(&t->rearm_seq, 1); /* heals after this are a new round */
    size_t p0 = b->s[0], p1 = b->e[b->n - 1];
    int rc = t->ops->protect(t, r, r->start + (p0 << sf_page_shift), (p1 - p0) << sf_page_shift);
    for (size_t k = 0; k < b->n; k++)
        for (size_t p = b->s[k]; p < b->e[k]; p++) {
            if (rc == 0 && !(p & (SF_CHUNK_PAGES - 1)) && chunk_whole(b, p >> SF_CHUNK_SHIFT)) {
                p += SF_CHUNK_PAGES - 1; /* ARMED already */
                continue;
            }
            if (rc < 0) {
                /* Could not protect (VMA budget): the pages stay writable
                 * and dirty, reported now and again next time; a snapshot
                 * being taken cannot hold them.  (ARMED in a take's run:
                 * re-armed with its whole chunk, see sf__ps_take_chunk.) */
                sf__ps_rearm_failed(&r->ps[p], mode);
                sf__chunk_mark(r, p, CH_DIRTY | CH_WRITABLE);
                continue;
            }
            sf__ps_collect_rearm(&r->ps[p], mode);
        }
    if (rc < 0 && mode == SF_WALK_TAKE)
        atomic_store(&t->take_failed, 1);
}

/* Re-arms the batch (unless only getting) and reports its runs in order.
 * Returns 0, 1 (emit said stop) or -errno. */
static int flush_batch(sf_tracker *t, struct sf_region *r, struct batch *b, enum sf_walk mode,
                       sf_emit_fn emit, void *ctx)
{
    if (!b->n)
        return 0;
    if (mode != SF_WALK_GET)
        rearm_batch(t, r, b, mode);
    int rc = 0;
    size_t k = 0;
    while (k < b->n && !rc) {
        if (emit)
            rc = emit(t, r->start + (b->s[k] << sf_page_shift), (b->e[k] - b->s[k]) << sf_page_shift, ctx);
        k++;
    }
    /* Stopped: runs of the batch not reported were re-armed already; they
     * stay dirty (ARMED|DIRTY, as after a take) for the next collect. */
    for (; k < b->n && mode == SF_WALK_RESET; k++)
        for (size_t p = b->s[k]; p < b->e[k]; p++) {
            sf__ps_keep_dirty(&r->ps[p]);
            sf__chunk_mark(r, p, CH_DIRTY);
        }
    b->n = 0;
    return rc < 0 ? rc : rc ? 1 : 0;
}

/* A degraded region (mprotect over its VMA budget) was writable as a whole:
 * every page counts as written, and its content may have changed without a
 * fault in the generation in force now (the walk of a take runs after C
 * moved: C - 1).  Re-arming it protects it as a whole: the flag is cleared
 * once every page is owned (COLLECTING) and before the protect, so a
 * degrade that races with this walk sets it again and the next collect
 * reports the whole region again (see degrade() in backend_mprotect.c). */
static int walk_degraded(sf_tracker *t, struct sf_region *r, enum sf_walk mode, sf_emit_fn emit,
                         void *ctx)
{
    if (mode == SF_WALK_GET)
        return emit ? emit(t, r->start, r->end - r->start, ctx) : 0;
    uint32_t C = atomic_load(&t->gen);
    uint32_t cgen = mode == SF_WALK_TAKE ? C - 1 : C;
    for (size_t p = 0; p < r->npages; p++)
        sf__ps_degraded_claim(&r->ps[p], cgen);
    for (size_t c = 0; c < r->nchunks; c++)
        sf__chunk_maxgen_raise(r, c << SF_CHUNK_SHIFT, cgen);
    atomic_store(&r->degraded, 0);
    int err = t->ops->protect(t, r, r->start, r->end - r->start);
    if (err) {
        atomic_store(&r->degraded, 1);
        for (size_t p = 0; p < r->npages; p++)
            sf__ps_unpick(&r->ps[p]);
        if (mode == SF_WALK_TAKE) /* the snapshot cannot hold this region */
            atomic_store(&t->take_failed, 1);
        return mode == SF_WALK_RESET && emit ? emit(t, r->start, r->end - r->start, ctx) : 0;
    }
    for (size_t p = 0; p < r->npages; p++)
        sf__ps_degraded_rearm(&r->ps[p], mode == SF_WALK_RESET);
    if (mode == SF_WALK_TAKE) /* every page stays dirty for the next collect */
        for (size_t c = 0; c < r->nchunks; c++)
            sf__chunk_mark(r, c << SF_CHUNK_SHIFT, CH_DIRTY);
    return mode == SF_WALK_RESET && emit ? emit(t, r->start, r->end - r->start, ctx) : 0;
}

/* Walks the chunks whose hints say they may hold what mode looks for: its
 * cost follows the pages written, not the tracked size.  Runs continue
 * across chunk boundaries. */
int sf__collect_sync(sf_tracker *t, struct sf_region *r, enum sf_walk mode, sf_emit_fn emit,
                     void *ctx)
{
    if (atomic_load(&r->degraded))
        return walk_degraded(t, r, mode, emit, ctx);
    uint32_t need = mode == SF_WALK_TAKE ? CH_WRITABLE : CH_DIRTY;
    uint32_t clear = mode == SF_WALK_TAKE ? CH_WRITABLE
                   : mode == SF_WALK_RESET ? (CH_DIRTY | CH_WRITABLE) : 0;
    bool gone = atomic_load(&r->gone) != 0;
    struct batch b;
    b.n = 0;
    /* No memory for the map: every chunk takes the page-by-page path. */
    b.whole = mode == SF_WALK_TAKE && t->backend == SF_BACKEND_UFFD_SYNC
                  ? sf__tmp_calloc((r->nchunks + 63) >> 6, sizeof(uint64_t)) : NULL;
    size_t run = SIZE_MAX;
    int rc = 0;
    for (size_t c = 0; c < r->nchunks && !rc; c++) {
        size_t p0 = c << SF_CHUNK_SHIFT, p1 = p0 + SF_CHUNK_PAGES;
        if (p1 > r->npages)
            p1 = r->npages;
        bool hinted = atomic_load(&r->chunk[c]) & need;
        if (hinted && clear)
            atomic_fetch_and(&r->chunk[c], ~clear);
        if (hinted && b.whole && p1 - p0 == SF_CHUNK_PAGES && sf__ps_take_chunk(r, c, p0)) {
            b.whole[c >> 6] |= 1ull << (c & 63);
            if (run == SIZE_MAX)
                run = p0;
            continue;
        }
        for (size_t p = p0; p < p1 && !rc; p++) {
            if (hinted && sf__ps_collect_pick(&r->ps[p], mode)) {
                if (run == SIZE_MAX)
                    run = p;
                continue;
            }
            if (run != SIZE_MAX) {
                /* Far from the batch, or the batch is full: the batch is
                 * re-armed and reported first. */
                if (b.n && (!sf__span_join(t, run - b.e[b.n - 1]) || b.n == BATCH_RUNS))
                    rc = flush_batch(t, r, &b, mode, emit, ctx);
                if (rc) {
                    sf__ps_unpick_range(r, run, p);
                    break;
                }
                b.s[b.n] = run;
                b.e[b.n++] = p;
                run = SIZE_MAX;
            }
            if (gone && sf__page_gone(r, p))
                rc = flush_batch(t, r, &b, mode, emit, ctx);
            if (!hinted)
                break; /* nothing to see in this chunk */
        }
        if (rc && clear) /* what this chunk still holds stays dirty */
            sf__chunk_mark(r, p0, CH_DIRTY | CH_WRITABLE);
    }
    if (!rc && run != SIZE_MAX) {
        if (b.n == BATCH_RUNS)
            rc = flush_batch(t, r, &b, mode, emit, ctx);
        if (rc)
            sf__ps_unpick_range(r, run, r->npages);
        else {
            b.s[b.n] = run;
            b.e[b.n++] = r->npages;
        }
    }
    if (!rc)
        rc = flush_batch(t, r, &b, mode, emit, ctx);
    sf__tmp_free(b.whole);
    return rc;
}

/* Delivery to the caller's fn.  Every run handed to emit is reported at
 * once: backends re-arm a run before emitting it, and keep what was not
 * emitted dirty (sync: state words; async: the region's bitmap). */
struct deliver {
    sf_range_fn fn;
    void *arg;
    long pages;
};

static int emit_run(sf_tracker *t, uintptr_t a, size_t len, void *ctx)
{
    struct deliver *d = ctx;
    d->pages += (long)(len >> sf_page_shift);
    return d->fn && d->fn((void *)a, len, d->arg) ? 1 : 0;
}

SF_API int sf_collect(sf_tracker *t, unsigned flags, sf_range_fn fn, void *arg)
{
    if (!t || (flags & ~SF_COLLECT_RESET))
        return -EINVAL;
    if (sf__forked(t))
        return -ECHILD;
    if (flags & SF_COLLECT_RESET)
        sf__signals_ensure();
    pthread_mutex_lock(&t->lock);
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs) {
        pthread_mutex_unlock(&t->lock);
        return -ENOMEM;
    }
    bool reset = flags & SF_COLLECT_RESET;
    struct deliver d = {.fn = fn, .arg = arg};
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (t->ops->collect)
            rc = t->ops->collect(t, rs[i], flags, emit_run, &d);
        else
            rc = sf__collect_sync(t, rs[i], reset ? SF_WALK_RESET : SF_WALK_GET, emit_run, &d);
    }
    /* Soft-dirty resets the whole process at once: only when every page
     * was reported. */
    if (!rc && reset && t->ops->reset_all)
        rc = t->ops->reset_all(t);
    sf__os_free(rs);
    SF_STAT_INC(t, st_collects, 1);
    SF_STAT_INC(t, st_collected, (uint64_t)d.pages);
    pthread_mutex_unlock(&t->lock);
    if (rc < 0)
        return rc;
    return d.pages > INT32_MAX ? INT32_MAX : (int)d.pages;
}

SF_API int sf_tracker_stats(const sf_tracker *ct, sf_stats *st)
{
    if (!ct || !st)
        return -EINVAL;
    sf_tracker *t = (sf_tracker *)ct;
    memset(st, 0, sizeof(*st));
    st->backend = t->backend;
    st->fault_mode = t->fault_mode;
    st->faults = atomic_load_explicit(&t->st_faults, memory_order_relaxed);
    st->spurious = atomic_load_explicit(&t->st_spurious, memory_order_relaxed);
    st->pages_unprotected = atomic_load_explicit(&t->st_unprot, memory_order_relaxed);
    st->collects = atomic_load_explicit(&t->st_collects, memory_order_relaxed);
    st->pages_collected = atomic_load_explicit(&t->st_collected, memory_order_relaxed);
    st->degraded = atomic_load_explicit(&t->st_degraded, memory_order_relaxed);
    st->vma_estimate = (uint64_t)atomic_load_explicit(&t->vma_estimate, memory_order_relaxed);
    st->copies = atomic_load_explicit(&t->st_copies, memory_order_relaxed);
    st->copies_shared = atomic_load_explicit(&t->st_shared, memory_order_relaxed);
    st->snapshots_failed = atomic_load_explicit(&t->st_failed, memory_order_relaxed);
    st->store_limit = t->store_limit;
    if (t->backend != SF_BACKEND_SOFTDIRTY)
        st->span_gap = sf__span_gap(t);
    st->protect_calls = atomic_load_explicit(&t->st_protects, memory_order_relaxed);
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++)
        st->snapshots_live += atomic_load(&t->live_gen[i]) != 0;
    sf__store_stats(t, &st->store_bytes);
    st->engine = t->engine ? t->engine->id : SF_ENGINE_AUTO;
    st->version_bytes = st->store_bytes;
    st->take_copied = atomic_load_explicit(&t->st_take_copied, memory_order_relaxed);
    st->precopied = atomic_load_explicit(&t->st_precopied, memory_order_relaxed);
    st->stops = atomic_load_explicit(&t->st_stops, memory_order_relaxed);
    st->stop_last_ns = atomic_load_explicit(&t->st_stop_last, memory_order_relaxed);
    st->stop_max_ns = atomic_load_explicit(&t->st_stop_max, memory_order_relaxed);
    st->stop_total_ns = atomic_load_explicit(&t->st_stop_total, memory_order_relaxed);
    st->stop_retries = atomic_load_explicit(&t->st_stop_retries, memory_order_relaxed);
    st->stop_fallbacks = atomic_load_explicit(&t->st_stop_fallbacks, memory_order_relaxed);
    st->stop_inexact = atomic_load_explicit(&t->st_stop_inexact, memory_order_relaxed);
    st->stop_timeouts = atomic_load_explicit(&t->st_stop_timeouts, memory_order_relaxed);
    st->stop_signalled = atomic_load_explicit(&t->st_stop_signalled, memory_order_relaxed);
    st->stop_asleep = atomic_load_explicit(&t->st_stop_asleep, memory_order_relaxed);
    for (unsigned b = 0; b < SF_STOP_HIST_BUCKETS; b++)
        st->stop_hist[b] = atomic_load_explicit(&t->st_stop_hist[b], memory_order_relaxed);
    /* Region sizes: read the table inside a grace section (no lock, so this
     * stays async-signal-safe). */
    unsigned g = sf__grace_enter();
    struct sf_rtable *tb = sf__regions_table();
    for (size_t i = 0; tb && i < tb->n; i++)
        if (tb->r[i]->t == t) {
            st->regions++;
            st->tracked_bytes += tb->r[i]->end - tb->r[i]->start -
                                 (atomic_load(&tb->r[i]->gone) << sf_page_shift);
            st->metadata_bytes += tb->r[i]->meta_bytes + sizeof(struct sf_region);
            if (tb->r[i]->shadow)
                st->shadow_bytes += tb->r[i]->end - tb->r[i]->start;
        }
    sf__grace_exit(g);
    return 0;
}
