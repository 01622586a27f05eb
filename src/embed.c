/* embed.c - the embedding contract (src/embed/sf_embed.h) over the internals:
 * page-state queries, the walk over tracked runs, fork, the fault hook. */
#include "internal.h"
#include "embed/sf_embed.h"

void sf__embed_init(void) { sf__init(); }

/* The state word is decoded in one place (pagestate.h); the embedding's
 * names are the same four classes. */
_Static_assert((int)SF_EMBED_UNTRACKED == (int)SF_PAGE_UNTRACKED && (int)SF_EMBED_ARMED_CLEAN == (int)SF_PAGE_ARMED_CLEAN &&
                   (int)SF_EMBED_ARMED_DIRTY == (int)SF_PAGE_ARMED_DIRTY && (int)SF_EMBED_OPEN == (int)SF_PAGE_OPEN,
               "sf_embed_page mirrors enum sf_page_class");

static sf_embed_page page_of(uint64_t w)
{
    return (sf_embed_page)sf__ps_class(w);
}

sf_embed_page sf__embed_page_state(uintptr_t addr, uintptr_t *region_end)
{
    sf_embed_page s = SF_EMBED_UNTRACKED;
    uintptr_t rend = 0;
    unsigned g = sf__grace_enter();
    struct sf_region *r = sf__region_find(addr);
    if (r) {
        s = page_of(atomic_load(&r->ps[(addr - r->start) >> sf_page_shift]));
        rend = r->end;
    }
    sf__grace_exit(g);
    if (region_end)
        *region_end = rend;
    return s;
}

bool sf__embed_any_armed(uintptr_t start, uintptr_t end)
{
    bool hit = false;
    unsigned g = sf__grace_enter();
    struct sf_rtable *tb = sf__regions_table();
    for (size_t i = 0; tb && i < tb->n && !hit; i++) {
        struct sf_region *r = tb->r[i];
        if (r->end <= start || end <= r->start || atomic_load(&r->degraded))
            continue;
        size_t p0 = ((start > r->start ? start : r->start) - r->start) >> sf_page_shift;
        size_t p1 = ((end < r->end ? end : r->end) - r->start) >> sf_page_shift;
        for (size_t p = p0; p < p1 && !hit; p++) {
            sf_embed_page c = page_of(atomic_load(&r->ps[p]));
            hit = c == SF_EMBED_ARMED_CLEAN || c == SF_EMBED_ARMED_DIRTY;
        }
    }
    sf__grace_exit(g);
    return hit;
}

long sf__embed_unseen_writes(sf_tracker *t, struct sf_embed_span *out, size_t max)
{
    if (!t || t->ops->id != SF_BACKEND_UFFD_SYNC)
        return -EOPNOTSUPP;
    return sf__sync_unseen_writes(t, out, max);
}

bool sf__embed_regions_overlap(uintptr_t start, uintptr_t end)
{
    bool hit = false;
    unsigned g = sf__grace_enter();
    struct sf_rtable *tb = sf__regions_table();
    for (size_t i = 0; tb && i < tb->n && !hit; i++)
        hit = tb->r[i]->start < end && start < tb->r[i]->end;
    sf__grace_exit(g);
    return hit;
}

/* The run that starts at pos (below end): its end and kind.  Inside a
 * grace section. */
static uintptr_t run_at(uintptr_t pos, uintptr_t end, sf_embed_run *kind)
{
    struct sf_rtable *tb = sf__regions_table();
    uintptr_t next = UINTPTR_MAX;
    for (size_t i = 0; tb && i < tb->n; i++) {
        struct sf_region *r = tb->r[i];
        if (r->start <= pos && pos < r->end) {
            uintptr_t e = r->end < end ? r->end : end;
            bool gone = sf__ps_gone(atomic_load(&r->ps[(pos - r->start) >> sf_page_shift]));
            uintptr_t q = pos + sf_page_size;
            while (q < e && sf__ps_gone(atomic_load(&r->ps[(q - r->start) >> sf_page_shift])) == gone)
                q += sf_page_size;
            *kind = gone ? SF_EMBED_RUN_GONE : SF_EMBED_RUN_TRACKED;
            return q;
        }
        if (r->start > pos) {
            next = r->start;
            break;
        }
    }
    *kind = SF_EMBED_RUN_NONE;
    return next < end ? next : end;
}

int sf__embed_runs(uintptr_t start, uintptr_t end, sf_embed_run_fn fn, void *arg)
{
    for (uintptr_t pos = start; pos < end;) {
        sf_embed_run kind;
        unsigned g = sf__grace_enter();
        uintptr_t e = run_at(pos, end, &kind);
        sf__grace_exit(g);
        int rc = fn(pos, e, kind, arg);
        if (rc)
            return rc;
        pos = e;
    }
    return 0;
}

void sf__embed_grace_wait(void) { sf__grace_wait(); }

void sf__embed_set_fault_hook(sf_embed_fault_hook hook) { sf__signals_set_hook(hook); }

int sf__embed_thread_create(pthread_t *th, void *(*fn)(void *), void *arg)
{
    return sf__exempt_thread_create(th, NULL, fn, arg);
}

int sf__embed_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    return sf__chain_sigaction(sig, act, old);
}

/* The tracker's lock before the table's: the order of every collector
 * (track and untrack take t->lock, then the regions lock). */
void sf__embed_atfork_prepare(sf_tracker *t)
{
    if (t)
        pthread_mutex_lock(&t->lock);
    pthread_mutex_lock(&sf__regions_lock);
}

void sf__embed_atfork_parent(sf_tracker *t)
{
    pthread_mutex_unlock(&sf__regions_lock);
    if (t)
        pthread_mutex_unlock(&t->lock);
}

void sf__embed_atfork_child(sf_tracker *t)
{
    pthread_mutex_init(&sf__regions_lock, NULL);
    if (t)
        pthread_mutex_init(&t->lock, NULL);
}
