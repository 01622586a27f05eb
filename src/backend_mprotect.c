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

static int mp_open(sf_tracker *t)
{
    if (g_budget < 0) {
        long max = sf__read_long_file("/proc/sys/vm/max_map_count", 65530);
        long now = sf__count_maps();
        /* Leave the program room for its own mappings: a quarter of the
         * limit or 4096, whichever is more. */
        long reserve = max / 4 > 4096 ? max / 4 : 4096;
        g_budget = max - (now > 0 ? now : 0) - reserve;
        if (g_budget < 64)
            g_budget = 64;
    }
    t->vma_budget = g_budget;
    t->fault_mode = SF_FAULTS_SIGNAL;
    return sf__signals_install();
}

static void mp_close(sf_tracker *t) {}

/* Whole-region protection changes merge everything inside into one VMA. */
static int mp_attach(sf_tracker *t, struct sf_region *r)
{
    if (mprotect((void *)r->start, r->end - r->start, PROT_READ) < 0) {
        int e = -errno;
        /* mprotect may have protected a part before failing: undo it. */
        mprotect((void *)r->start, r->end - r->start, PROT_READ | PROT_WRITE);
        return e;
    }
    atomic_store(&r->vmas, 1);
    return 0;
}

static void mp_detach(sf_tracker *t, struct sf_region *r)
{
    mprotect((void *)r->start, r->end - r->start, PROT_READ | PROT_WRITE);
    atomic_fetch_sub(&g_vmas, atomic_exchange(&r->vmas, 0) - 1);
}

/* Protection of a neighbouring page as far as the states say: +1 boundary
 * if it stays protected, -1 if it is writable (the boundary goes away). */
static int side(struct sf_region *r, size_t page, bool valid, bool protecting)
{
    if (!valid)
        return 0;
    unsigned st = PS_ST(atomic_load_explicit(&r->ps[page], memory_order_relaxed));
    bool prot = st != PS_WRITABLE;
    return protecting ? (prot ? -1 : 1) : (prot ? 1 : -1);
}

static long delta(struct sf_region *r, uintptr_t addr, size_t len, bool protecting)
{
    size_t p = (addr - r->start) >> sf_page_shift, n = len >> sf_page_shift;
    return side(r, p - 1, p > 0, protecting) + side(r, p + n, p + n < r->npages, protecting);
}

/* Degrade: one mprotect over the whole region merges its VMAs.  Snapshots
 * cannot survive a region written without faults: they are failed. */
static int degrade(sf_tracker *t, struct sf_region *r)
{
    if (mprotect((void *)r->start, r->end - r->start, PROT_READ | PROT_WRITE) < 0)
        return -errno;
    if (!atomic_exchange(&r->degraded, 1))
        SF_STAT_INC(t, st_degraded, 1);
    atomic_fetch_sub(&g_vmas, atomic_exchange(&r->vmas, 1) - 1);
    for (int i = 0; i < SF_MAX_SNAPSHOTS; i++)
        if (atomic_load(&t->live_gen[i]))
            atomic_store(&t->failed_slot[i], 1);
    sf__chunk_mark(r, 0, CH_DIRTY);
    return 0;
}

/* Async-signal-safe: called from the SIGSEGV handler. */
static int mp_unprotect(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len)
{
    if (atomic_load(&r->degraded)) {
        /* Writable as a whole, unless a collector's protect of a run landed
         * after the degrade: open the whole region again (one merged VMA). */
        return mprotect((void *)r->start, r->end - r->start, PROT_READ | PROT_WRITE) < 0
                   ? -errno : 0;
    }
    long d = delta(r, addr, len, false);
    if (atomic_load(&g_vmas) + d > t->vma_budget)
        return degrade(t, r);
    if (mprotect((void *)addr, len, PROT_READ | PROT_WRITE) < 0)
        return errno == ENOMEM ? degrade(t, r) : -errno;
    atomic_fetch_add(&g_vmas, d);
    atomic_fetch_add(&r->vmas, d);
    atomic_store(&t->vma_estimate, atomic_load(&g_vmas));
    return 0;
}

/* Collector side.  -ENOSPC tells the collector to leave the run writable
 * and dirty (it is reported again next time). */
static int mp_protect(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len)
{
    if (addr == r->start && len == r->end - r->start) {
        /* Clear the flag first: a handler that degrades again after this
         * sets it again, and nothing written meanwhile is lost. */
        atomic_store(&r->degraded, 0);
        if (mprotect((void *)addr, len, PROT_READ) < 0) {
            atomic_store(&r->degraded, 1);
            return -errno;
        }
        atomic_fetch_sub(&g_vmas, atomic_exchange(&r->vmas, 1) - 1);
        return 0;
    }
    long d = delta(r, addr, len, true);
    if (d > 0 && atomic_load(&g_vmas) + d > t->vma_budget)
        return -ENOSPC;
    if (mprotect((void *)addr, len, PROT_READ) < 0)
        return errno == ENOMEM ? -ENOSPC : -errno;
    atomic_fetch_add(&g_vmas, d);
    atomic_fetch_add(&r->vmas, d);
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
