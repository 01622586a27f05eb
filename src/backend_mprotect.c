/* backend_mprotect.c - write tracking with mprotect(PROT_READ) and SIGSEGV:
 * works on any kernel and any private mapping, at the price of VMA splits. */
#include "internal.h"

#include <sys/mman.h>

/* Every unprotected run inside a protected region splits a VMA.  snapfault
 * keeps an estimate of the VMAs its protections create, process-wide, and
 * stays under a budget derived from vm.max_map_count; past it (or when
 * mprotect says ENOMEM) a region is degraded: left writable as a whole and
 * reported dirty as a whole until the next reset.  A fault never fails and
 * never loops on a failed mprotect. */
static _Atomic long g_vmas;   /* VMAs created by snapfault's splits */
static long g_budget = -1;    /* set once, under the regions lock */
static long g_maps0;          /* the process's VMAs when the budget was set */
static _Atomic unsigned long g_opens; /* unprotects since the last recount */

static int mp_open(sf_tracker *t)
{
    if (g_budget < 0) {
        long max = sf__read_long_file("/proc/sys/vm/max_map_count", 65530);
        long now = sf__count_maps();
        /* Leave the program room for its own mappings: a quarter of the
         * limit or 4096, whichever is more. */
        long reserve = max / 4 > 4096 ? max / 4 : 4096;
        g_maps0 = now > 0 ? now : 0;
        g_budget = max - g_maps0 - reserve;
        if (g_budget < 64)
            g_budget = 64;
    }
    t->vma_budget = g_budget;
    t->fault_mode = SF_FAULTS_SIGNAL;
    return sf__signals_install();
}

static void mp_close(sf_tracker *t) {}

/* The estimate: r->vmas counts the VMAs inside a region (1 when its
 * protection is uniform), g_vmas the VMAs all regions add beyond one each.
 * A boundary between two VMAs sits between pages whose protection
 * differs; the page states say which pages are open (writable now). */
static bool is_open(struct sf_region *r, size_t p)
{
    return sf__ps_open(atomic_load_explicit(&r->ps[p], memory_order_relaxed));
}

/* Handlers and collectors classify each other's pages in flight by the
 * state before their change, so two of them can both count one boundary;
 * a region never has fewer than one VMA, and over_budget() checks an
 * estimate past the budget against the kernel's count before degrading. */
static void account(struct sf_region *r, long d)
{
    if (!d)
        return;
    long v = atomic_fetch_add(&r->vmas, d) + d;
    if (v < 1) {
        atomic_fetch_add(&r->vmas, 1 - v);
        d += 1 - v;
    }
    atomic_fetch_add(&g_vmas, d);
}

/* Whether d more VMAs would pass the budget.  Past it by the estimate, the
 * process's real VMAs are counted (one read of /proc/self/maps, async-
 * signal-safe) and the estimate is set from them: a degrade fails live
 * snapshots, so it must not follow a drifted estimate.  At most one
 * recount per 256 unprotects: a process really at its budget degrades. */
static bool over_budget(sf_tracker *t, long d)
{
    if (atomic_load(&g_vmas) + d <= t->vma_budget)
        return false;
    if (atomic_exchange(&g_opens, 0) < 256)
        return true;
    long real = sf__count_maps();
    if (real < 0)
        return true;
    long v = real > g_maps0 ? real - g_maps0 : 0;
    atomic_store(&g_vmas, v);
    atomic_store(&t->vma_estimate, v);
    return v + d > t->vma_budget;
}

/* The boundaries a uniform [p0, p1) whose pages were all protected
 * (unprotect) or all open (protect, attach) adds: +1 per side whose
 * neighbour keeps the other protection, -1 per side whose neighbour has
 * the new one (that boundary goes away). */
static long edge_delta(struct sf_region *r, size_t p0, size_t p1, bool protecting)
{
    long d = 0;
    if (p0 > 0)
        d += is_open(r, p0 - 1) == protecting ? 1 : -1;
    if (p1 < r->npages)
        d += is_open(r, p1) == protecting ? 1 : -1;
    return d;
}

/* The boundaries a protection change of a mixed [p0, p1) to one protection
 * (open when !protecting) adds: every boundary inside the range goes away,
 * the two at its ends are what the neighbours make them.  The collector
 * protects spans over several runs with protected pages between them. */
static long span_delta(struct sf_region *r, size_t p0, size_t p1, bool protecting)
{
    long before = 0, after = 0;
    size_t lo = p0 > 0 ? p0 - 1 : p0, hi = p1 < r->npages ? p1 + 1 : p1;
    bool prev = is_open(r, lo);
    for (size_t p = lo + 1; p < hi; p++) {
        bool o = is_open(r, p);
        before += o != prev;
        prev = o;
    }
    if (p0 > 0)
        after += is_open(r, p0 - 1) == protecting;
    if (p1 < r->npages)
        after += is_open(r, p1) == protecting;
    return after - before;
}

/* Whole-region protection changes merge everything inside into one VMA. */
static void whole(struct sf_region *r)
{
    atomic_fetch_sub(&g_vmas, atomic_exchange(&r->vmas, 1) - 1);
}

static int mp_attach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    if (sf__os_mprotect((void *)a, e - a, PROT_READ) < 0) {
        int err = -errno;
        /* mprotect may have protected a part before failing: undo it. */
        sf__os_mprotect((void *)a, e - a, PROT_READ | PROT_WRITE);
        return err;
    }
    if (a == r->start && e == r->end)
        atomic_store(&r->vmas, 1);
    else /* sf_track of a part a partial untrack gave back: it was open */
        account(r, edge_delta(r, (a - r->start) >> sf_page_shift, (e - r->start) >> sf_page_shift, true));
    return 0;
}

static void mp_detach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    size_t p0 = (a - r->start) >> sf_page_shift, p1 = (e - r->start) >> sf_page_shift;
    /* Measured before the change, from the states it is about to undo. */
    long d = a == r->start && e == r->end ? 0 : span_delta(r, p0, p1, false);
    sf__os_mprotect((void *)a, e - a, PROT_READ | PROT_WRITE);
    if (a == r->start && e == r->end)
        atomic_fetch_sub(&g_vmas, atomic_exchange(&r->vmas, 0) - 1);
    else
        account(r, d);
}

/* Degrade: one mprotect over the whole region merges its VMAs, and the
 * region counts as written as a whole until a collector re-arms it
 * (walk_degraded in tracker.c).  Snapshots cannot survive a region written
 * without faults: the live ones are failed.  Idempotent; async-signal-safe.
 * The flag is set after the region is open, so a collector that cleared it
 * to re-arm the region either protects after this open (and the flag it
 * cleared was this degrade's) or finds it set again: a degrade is never
 * lost to a re-arm that raced with it. */
static int degrade(sf_tracker *t, struct sf_region *r)
{
    if (sf__os_mprotect((void *)r->start, r->end - r->start, PROT_READ | PROT_WRITE) < 0)
        return -errno;
    whole(r);
    if (!atomic_exchange(&r->degraded, 1))
        SF_STAT_INC(t, st_degraded, 1);
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++)
        if (atomic_load(&t->live_gen[i]) && !atomic_exchange(&t->failed_slot[i], 1))
            SF_STAT_INC(t, st_failed, 1);
    sf__chunk_mark(r, 0, CH_DIRTY);
    atomic_store(&t->vma_estimate, atomic_load(&g_vmas));
    return 0;
}

/* Async-signal-safe: called from the SIGSEGV handler, which owns the
 * pages of [addr, addr + len) (BUSY; all protected). */
static int mp_unprotect(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len)
{
    /* Writable as a whole, unless a collector's protect landed after the
     * degrade: open the whole region again, and make sure it still counts
     * as degraded (a collector may have cleared the flag meanwhile). */
    if (atomic_load(&r->degraded))
        return degrade(t, r);
    size_t p = (addr - r->start) >> sf_page_shift;
    long d = edge_delta(r, p, p + (len >> sf_page_shift), false);
    atomic_fetch_add_explicit(&g_opens, 1, memory_order_relaxed);
    if (over_budget(t, d))
        return degrade(t, r);
    if (sf__os_mprotect((void *)addr, len, PROT_READ | PROT_WRITE) < 0)
        return errno == ENOMEM ? degrade(t, r) : -errno;
    account(r, d);
    atomic_store(&t->vma_estimate, atomic_load(&g_vmas));
    return 0;
}

/* Collector side.  -ENOSPC tells the collector to leave the run writable
 * and dirty (it is reported again next time).  Never touches the degraded
 * flag: only the walk of a degraded region clears it (see degrade()). */
static int mp_protect(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len)
{
    SF_STAT_INC(t, st_protects, 1);
    if (addr == r->start && len == r->end - r->start) {
        if (sf__os_mprotect((void *)addr, len, PROT_READ) < 0)
            return -errno;
        whole(r);
        atomic_store(&t->vma_estimate, atomic_load(&g_vmas));
        return 0;
    }
    size_t p = (addr - r->start) >> sf_page_shift;
    long d = span_delta(r, p, p + (len >> sf_page_shift), true);
    if (d > 0 && over_budget(t, d))
        return -ENOSPC;
    if (sf__os_mprotect((void *)addr, len, PROT_READ) < 0)
        return errno == ENOMEM ? -ENOSPC : -errno;
    account(r, d);
    atomic_store(&t->vma_estimate, atomic_load(&g_vmas));
    return 0;
}

const struct sf_backend_ops sf__backend_mprotect = {
    .id = SF_BACKEND_MPROTECT,
    .open = mp_open,
    .close = mp_close,
    .attach = mp_attach,
    .detach = mp_detach,
    .protect = mp_protect,
    .unprotect = mp_unprotect,
};
