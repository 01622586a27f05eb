/* pagestate.c - the page-state machine's transitions over ranges and whole
 * chunks, and the walk over a region's live runs.  The states, the table of
 * transitions and the per-page ones are in pagestate.h. */
#include "pagestate.h"

enum sf_page_class sf__page_class(uintptr_t addr)
{
    enum sf_page_class c = SF_PAGE_UNTRACKED;
    unsigned g = sf__grace_enter();
    struct sf_region *r = sf__region_find(addr);
    if (r)
        c = sf__ps_class(atomic_load(&r->ps[(addr - r->start) >> sf_page_shift]));
    sf__grace_exit(g);
    return c;
}

/* The take's fast path (uffd-sync): a chunk whose pages are all WRITABLE
 * is moved to ARMED before the protect with plain stores, instead of a CAS
 * to COLLECTING and another to ARMED per page.  Until the protect lands
 * the pages are ARMED but writable: their writes need no fault, and belong
 * to the snapshot as writes before a page's protect always have; a page a
 * stale protect already covers (a heal pending) faults as an ARMED page,
 * and is saved and opened as one.  The only other writer of a WRITABLE
 * page's word is a heal (sf__ps_heal_claim): it CASes its page to BUSY,
 * then reads CH_TAKING and, if set, gives the page back (sf__ps_heal_yield,
 * a CAS from BUSY) and lets the write retry.  Here the flag is set before
 * the pages are read: either the heal sees it, or this sees its BUSY and
 * the chunk takes the page-by-page path.  A store that overwrites a heal's
 * BUSY leaves that heal's give-back CAS failing: the page is ARMED, the
 * retried write faults on it as on any armed page.  mprotect's VMA
 * estimate reads the page states when it protects (span_delta), so
 * mprotect takes the page-by-page path.  The walk notes the chunks
 * (batch.whole in tracker.c) so that its re-arm skips them. */
bool sf__ps_take_chunk(struct sf_region *r, size_t c, size_t p0)
{
    for (size_t i = 0; i < SF_CHUNK_PAGES; i++)
        if ((atomic_load_explicit(&r->ps[p0 + i], memory_order_relaxed) & (PS_ST_MASK | PS_GONE)) !=
            PS_WRITABLE)
            return false;
    atomic_fetch_or(&r->chunk[c], CH_TAKING);
    uint64_t w[SF_CHUNK_PAGES];
    bool whole = true;
    for (size_t i = 0; i < SF_CHUNK_PAGES && whole; i++)
        whole = ((w[i] = atomic_load(&r->ps[p0 + i])) & (PS_ST_MASK | PS_GONE)) == PS_WRITABLE;
    if (whole)
        for (size_t i = 0; i < SF_CHUNK_PAGES; i++)
            atomic_store_explicit(&r->ps[p0 + i], PS_WITH_ST(w[i], PS_ARMED), memory_order_release);
    atomic_fetch_and(&r->chunk[c], ~CH_TAKING);
    return whole;
}

void sf__ps_unpick_range(struct sf_region *r, size_t s, size_t e)
{
    for (size_t p = s; p < e; p++) {
        sf__ps_unpick(&r->ps[p]);
        sf__chunk_mark(r, p, CH_DIRTY | CH_WRITABLE);
    }
}

void sf__ps_untrack_range(struct sf_region *r, size_t p0, size_t p1)
{
    for (size_t p = p0; p < p1; p++) {
        _Atomic uint64_t *ps = &r->ps[p];
        uint64_t w = atomic_load(ps);
        for (;;) {
            if (PS_ST(w) == PS_BUSY) {
                w = sf__wait_not_busy(ps);
                continue;
            }
            if (atomic_compare_exchange_weak(ps, &w, PS_MAKE(PS_ARMED, 0, PS_CGEN(w)) | PS_GONE))
                break;
        }
    }
}

bool sf__ps_all_gone(struct sf_region *r, size_t p0, size_t p1)
{
    for (size_t p = p0; p < p1; p++)
        if (!(atomic_load(&r->ps[p]) & PS_GONE))
            return false;
    return true;
}

void sf__ps_revive_range(struct sf_region *r, size_t p0, size_t p1, uint32_t C)
{
    for (size_t p = p0; p < p1; p++)
        atomic_store(&r->ps[p], PS_MAKE(PS_ARMED, 0, C));
}

void sf__ps_bury_range(struct sf_region *r, size_t p0, size_t p1, uint32_t C)
{
    for (size_t p = p0; p < p1; p++)
        atomic_store(&r->ps[p], PS_MAKE(PS_ARMED, 0, C) | PS_GONE);
}

void sf__chunk_maxgen_recompute(struct sf_region *r, size_t c)
{
    size_t q0 = c << SF_CHUNK_SHIFT, q1 = q0 + SF_CHUNK_PAGES < r->npages ? q0 + SF_CHUNK_PAGES : r->npages;
    uint32_t mx = 0;
    for (size_t q = q0; q < q1; q++) {
        uint32_t cg = sf__eff_cgen(r, atomic_load(&r->ps[q]));
        mx = cg > mx ? cg : mx;
    }
    atomic_store(&r->chunk_maxgen[c], mx);
}

bool sf__gone_between(struct sf_region *r, size_t p0, size_t p1)
{
    if (!atomic_load(&r->gone))
        return false;
    for (size_t q = p0; q < p1; q++)
        if (atomic_load(&r->ps[q]) & PS_GONE)
            return true;
    return false;
}

bool sf__live_run_next(struct sf_region *r, size_t *s, size_t *e, size_t p1)
{
    size_t p = *e;
    if (!atomic_load(&r->gone)) {
        /* Nothing GONE: the rest of [p0, p1) is one run. */
        if (p >= p1)
            return false;
        *s = p;
        *e = p1;
        return true;
    }
    while (p < p1 && (atomic_load(&r->ps[p]) & PS_GONE))
        p++;
    if (p >= p1)
        return false;
    size_t q = p + 1;
    while (q < p1 && !(atomic_load(&r->ps[q]) & PS_GONE))
        q++;
    *s = p;
    *e = q;
    return true;
}
