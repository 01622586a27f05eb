/* snapshot.c - what every snapshot engine shares: slots, generations,
 * refcounts, the public API (take, read, restore, write, release), page
 * version chains and their garbage collection.  The engines (struct
 * sf_engine_ops) hold the content: snapshot_cow.c, snapshot_mirror.c. */
#include "snapshot.h"
#include "image.h"
#include "stop.h"

#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Generations.  The tracker's generation C counts takes; the snapshot taken
 * when C was g has gen g, and C becomes g+1.  A version is one saved page
 * content valid for the snapshot generations [lo, hi]; versions are chained
 * per page (r->vhead), newest first, and shared by every live snapshot in
 * their range.  Where the content of the other generations lives is the
 * engine's business (live memory for COW, the shadow for mirror). */

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

void sf__live_read(sf_tracker *t, struct sf_live *l)
{
    l->n = 0;
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++) {
        uint32_t g = atomic_load_explicit(&t->live_gen[i], memory_order_relaxed);
        if (g)
            l->g[l->n++] = g;
    }
}

void sf__snapshot_fail_range(sf_tracker *t, uint32_t lo, uint32_t hi)
{
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++) {
        uint32_t g = atomic_load(&t->live_gen[i]);
        if (g && g >= lo && g <= hi && !atomic_exchange(&t->failed_slot[i], 1))
            SF_STAT_INC(t, st_failed, 1);
    }
}

struct sf_version *sf__version_for(struct sf_region *r, size_t page, uint32_t g)
{
    for (struct sf_version *v = atomic_load(&r->vhead[page]); v; v = atomic_load(&v->next))
        if (v->lo <= g && g <= atomic_load(&v->hi))
            return v;
    return NULL;
}

/* Unlinks v from its page's chain.  Collector side (t->lock held): only
 * the head can change under us (a handler pushing). */
void sf__version_unlink(struct sf_version *v)
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

void sf__vlist_add(struct vlist *l, struct sf_version *v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        struct sf_version **nv = sf__os_realloc(l->v, cap * sizeof(*nv));
        if (!nv)
            return; /* leaked until the tracker is destroyed; never unsafe */
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

void sf__vlist_free(sf_tracker *t, struct vlist *l)
{
    if (l->n) {
        sf__grace_wait();
        sf__store_free_many(t->store, l->v, l->n);
    }
    sf__os_free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

/* Drops every version no live snapshot needs.  Caller holds t->lock. */
void sf__versions_gc(sf_tracker *t)
{
    struct sf_store *st = t->store;
    struct vlist dead = {0};
    struct sf_live live;
    sf__live_read(t, &live);
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
        while (!is_dead && !sf__live_in(&live, v->lo, hi))
            is_dead = atomic_compare_exchange_weak(&v->hi, &hi, 0) || hi == 0;
        if (is_dead) {
            sf__version_unlink(v);
            sf__vlist_add(&dead, v);
        }
    }
    sf__vlist_free(t, &dead);
}

void sf__versions_drop_range(struct sf_region *r, uintptr_t start, uintptr_t end)
{
    sf_tracker *t = r->t;
    struct vlist dead = {0};
    for (size_t p = (start - r->start) >> sf_page_shift; p < (end - r->start) >> sf_page_shift; p++) {
        struct sf_version *v = atomic_exchange(&r->vhead[p], NULL);
        for (; v; v = atomic_load(&v->next))
            sf__vlist_add(&dead, v);
    }
    sf__vlist_free(t, &dead);
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

/* The content-fixing part of a take (t->lock held): the slot goes live, C
 * moves, the engine takes.  With SF_OPT_STOP_THREADS the other threads are
 * stopped meanwhile (stop.c); when a thread counted asleep ran during it
 * the snapshot is not one instant, so it is dropped and taken again with
 * that thread signalled, then, after STOP_RETRIES, with every thread
 * signalled but those asleep in a call a signal would end with EINTR
 * (epoll_wait, nanosleep...): if one of those ran, the snapshot is kept
 * and counted in stop_inexact. */
#define STOP_RETRIES 2
static int take_stopped(sf_tracker *t, sf_snapshot *s, int slot)
{
    bool stop = t->flags & SF_OPT_STOP_THREADS;
    for (unsigned attempt = 0;; attempt++) {
        enum sf_stop_mode mode = attempt == 0 ? SF_STOP_PROVE
                               : attempt <= STOP_RETRIES ? SF_STOP_FORCED : SF_STOP_SIGNAL_ALL;
        bool stopped = stop && sf__world_stop(mode) == 0;
        s->gen = atomic_load(&t->gen);
        atomic_store(&t->failed_slot[slot], 0);
        /* Order matters: the slot is live before C moves, so a handler that
         * sees the new C also sees the snapshot and saves for it; the grace
         * period then waits out handlers that saw the old C, whose pages the
         * walk below finds writable and protects. */
        atomic_store(&t->live_gen[slot], s->gen);
        atomic_store(&t->gen, s->gen + 1);
        /* The engine's part of the take: the one place the snapshot's
         * content is fixed (writers of tracked memory stopped meanwhile,
         * by the world stop or by the caller). */
        int err = t->engine->take(t, s);
        if (!stopped)
            return err;
        struct sf_stop_result res;
        sf__world_resume(&res);
        bool again = !err && res.ran && mode != SF_STOP_SIGNAL_ALL;
        sf__stop_record(t, &res, again, mode == SF_STOP_SIGNAL_ALL);
        if (!again)
            return err;
        /* Not one instant: drop it (the generation stays used). */
        atomic_store(&t->live_gen[slot], 0);
        t->engine->release(t, s);
    }
}

SF_API int sf_snapshot_take(sf_tracker *t, sf_snapshot **out)
{
    if (!t || !out)
        return -EINVAL;
    *out = NULL;
    if (!t->engine)
        return -ENOTSUP;
    if (sf__forked(t))
        return -ECHILD;
    sf__signals_ensure();
    sf_snapshot *s = sf__os_calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    if (sf__os_getrandom(&s->id, sizeof(s->id), 0) != sizeof(s->id) || !s->id) {
        struct timespec ts;
        sf__os_clock_gettime(CLOCK_MONOTONIC, &ts);
        s->id = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)s;
    }
    struct timespec now;
    sf__os_clock_gettime(CLOCK_REALTIME, &now);
    s->taken_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;

    pthread_mutex_lock(&t->lock);
    int slot = -1;
    for (int i = 0; i < SF_MAX_SNAPSHOTS && slot < 0; i++)
        if (!t->snaps[i])
            slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&t->lock);
        sf__os_free(s);
        return -EAGAIN;
    }
    s->t = t;
    s->slot = slot;
    atomic_init(&s->refs, 1);
    s->gen = atomic_load(&t->gen);
    int err = take_stopped(t, s, slot);
    if (err) {
        /* No snapshot: the generation stays used, nothing else changes. */
        atomic_store(&t->live_gen[slot], 0);
        t->engine->release(t, s);
        pthread_mutex_unlock(&t->lock);
        sf__os_free(s);
        return err;
    }
    t->snaps[slot] = s;
    pthread_mutex_unlock(&t->lock);
    *out = s;
    return 0;
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
    char *out = buf;
    while (len) {
        uintptr_t page = a & ~(uintptr_t)(sf_page_size - 1);
        size_t off = a - page, n = sf_page_size - off;
        if (n > len)
            n = len;
        err = s->t->engine->read_page(s, page, out, off, n);
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
    uint32_t g = s->gen;
    struct vlist dead = {0};
    bool changed = false;
    long restored = t->engine->restore(s, &dead, &err, &changed);
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
    sf__vlist_free(t, &dead);
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
        sf__os_free(s);
        return;
    }
    pthread_mutex_lock(&t->lock);
    atomic_store(&t->live_gen[s->slot], 0);
    t->snaps[s->slot] = NULL;
    t->engine->release(t, s);
    pthread_mutex_unlock(&t->lock);
    sf__os_free(s);
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
        sf__os_free(t->snaps[i]);
        t->snaps[i] = NULL;
    }
}

/* ------------------------------------------------------------------------
 * Images: the writer pulls pages through the engine's read_page (COW: a
 * page still protected since the take goes from live memory straight into
 * the writer's buffer; mirror: from the shadow or a version, never live
 * memory).  An incremental image leaves out a page whose content epoch is
 * the same in s and its parent.
 * ------------------------------------------------------------------------ */
struct write_ctx {
    const sf_snapshot *s, *parent;
};

/* Which content page p has in snapshot gen g: the generation its content
 * began in (live CGEN or the covering version's lo), or 0 if not in it. */
uint32_t sf__content_epoch(const sf_snapshot *s, uintptr_t page_addr, uint32_t g)
{
    uint32_t e = 0;
    unsigned tok = sf__grace_enter();
    struct sf_region *r = sf__region_find(page_addr);
    if (r && r->t == s->t && r->track_gen <= g) {
        size_t p = (page_addr - r->start) >> sf_page_shift;
        uint64_t w = atomic_load(&r->ps[p]);
        if (!sf__ps_gone(w)) {
            uint32_t cg = sf__eff_cgen(r, w);
            if (cg <= g)
                e = cg;
            else {
                struct sf_version *v = sf__version_for(r, p, g);
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
    const struct sf_engine_ops *e = c->s->t->engine;
    if (c->parent) {
        uint32_t mine = e->content_epoch(c->s, (uintptr_t)addr, c->s->gen);
        if (mine && mine == e->content_epoch(c->s, (uintptr_t)addr, c->parent->gen))
            return 0; /* unchanged since the parent */
    }
    int err = e->read_page(c->s, (uintptr_t)addr, buf, 0, sf_page_size);
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
    sf__os_sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    sf__os_sigmask(SIG_BLOCK, &pipe_set, &old);
    int err = sf__image_write(fd, src);
    if (err == -EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        while (sf__os_sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    sf__os_sigmask(SIG_SETMASK, &old, NULL);
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
        SF_FOR_LIVE_RUNS(r, 0, r->npages, p, q) {
            if (nr == cap) {
                cap = cap ? 2 * cap : 16;
                struct sf_image_range *nv = sf__os_realloc(ranges, cap * sizeof(*nv));
                if (!nv) {
                    err = -ENOMEM;
                    break;
                }
                ranges = nv;
            }
            ranges[nr++] = (struct sf_image_range){r->start + (p << sf_page_shift), (q - p) << sf_page_shift};
        }
    }
    pthread_mutex_unlock(&t->lock);
    sf__os_free(rs);
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
    sf__os_free(ranges);
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

/* ------------------------------------------------------------------------
 * Engine selection and the tracker's hooks.
 * ------------------------------------------------------------------------ */

SF_API const char *sf_engine_name(sf_engine e)
{
    switch (e) {
    case SF_ENGINE_AUTO:
        return "auto";
    case SF_ENGINE_COW:
        return "cow";
    case SF_ENGINE_MIRROR:
        return "mirror";
    }
    return NULL;
}

/* The engine follows the backend: copy-on-write needs a fault path
 * (uffd-sync, mprotect); uffd-async resolves writes in the kernel, so its
 * snapshots are mirrors.  Soft-dirty has no atomic reset: no snapshots. */
const struct sf_engine_ops *sf__engine_for(sf_engine e, sf_backend b, int *err)
{
    *err = 0;
    if ((unsigned)e >= SF_ENGINE_COUNT) {
        *err = -EINVAL;
        return NULL;
    }
    const struct sf_engine_ops *ops = b == SF_BACKEND_UFFD_ASYNC ? &sf__engine_mirror
                                    : b == SF_BACKEND_SOFTDIRTY ? NULL : &sf__engine_cow;
    if (!ops || (e != SF_ENGINE_AUTO && e != ops->id)) {
        *err = -ENOTSUP;
        return NULL;
    }
    return ops;
}

int sf__engine_attach(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1)
{
    return t->engine && t->engine->attach ? t->engine->attach(t, r, p0, p1) : 0;
}

void sf__engine_region_fini(sf_tracker *t, struct sf_region *r)
{
    if (t->engine && t->engine->region_fini)
        t->engine->region_fini(t, r);
}

void sf__engine_destroy(sf_tracker *t)
{
    if (t->engine)
        t->engine->destroy(t);
}
