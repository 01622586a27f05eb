/* pagestate.h - the page-state machine: the per-page state word, the
 * queries that read it and every transition that writes it, each named by
 * what it means.  Transitions of one page are static inline here (the fault
 * path and the collectors' per-page loops); those over ranges and whole
 * chunks are in pagestate.c.  No other file writes a state word.
 * doc/DESIGN.md, "The page-state word", explains why each rule holds.
 *
 * Every function says who calls it (liburcu style):
 *   handler    - a fault handler (signal context or a uffd handler thread):
 *                async-signal-safe, lock-free, never waits for a collector;
 *                it waits only for another handler's BUSY page
 *   collector  - collect, take, restore, track/untrack with t->lock held:
 *                not async-signal-safe; may wait for one BUSY page
 *   any        - a read only: async-signal-safe, lock-free
 *
 * internal.h includes this header at its end: every core file sees it. */
#ifndef SF_PAGESTATE_H
#define SF_PAGESTATE_H
#include "internal.h"

/* ------------------------------------------------------------------------
 * The word: one _Atomic uint64_t per tracked page.
 *
 *   bits 0-1  ST   WRITABLE   not protected: written (or degraded) this epoch
 *                  ARMED      protected: the next write faults (or, in a
 *                             take's walk on uffd-sync, about to be: see
 *                             sf__ps_take_chunk)
 *                  BUSY       a fault handler owns the page (copy + unprotect)
 *                  COLLECTING a collector is protecting it; a fault takes it
 *                             over (COLLECTING -> BUSY) and the collector's
 *                             final CAS then fails, leaving the page dirty
 *   bit  2    DIRTY written since the last reset (reported by sf_collect)
 *   bit  3    GONE  untracked by a partial sf_untrack; revived by sf_track
 *   bits 4-31 RSEQ handler threads only: the tracker's resolution sequence
 *                  (low 28 bits) when the page was last opened and its
 *                  faulting threads woken; a uffd message read before that
 *                  is stale (see sf__resolve)
 *   bits 32-63 CGEN the snapshot generation in which the current content
 *                  began (see snapshot_cow.c); never below the region's
 *                  track_gen.  Mirror engine: sgen, the generation the
 *                  shadow content began in
 *
 * ARMED is 0 so that fresh (zero-filled) metadata means "armed, clean".
 *
 * Transitions (the table of doc/DESIGN.md, with the function of each):
 *
 *   who        from                   to                      function
 *   handler    ARMED, COLLECTING      BUSY                    sf__ps_fault_claim
 *   handler    ARMED (cluster page)   BUSY                    sf__ps_cluster_claim
 *   handler    BUSY                   BUSY+DIRTY+CGEN=C       sf__ps_fault_publish
 *   handler    BUSY                   WRITABLE+DIRTY          sf__ps_fault_open
 *   handler    BUSY (unprotect fails) ARMED, as it was        sf__ps_fault_abort
 *   handler    WRITABLE (spurious)    BUSY                    sf__ps_heal_claim
 *   handler    BUSY                   WRITABLE (re-opened)    sf__ps_heal_open
 *   handler    BUSY (CH_TAKING)       WRITABLE, as it was     sf__ps_heal_yield
 *   collector  WRITABLE (+DIRTY)      COLLECTING              sf__ps_collect_pick
 *   collector  COLLECTING             WRITABLE (walk stopped) sf__ps_unpick_range
 *   collector  COLLECTING             ARMED (-DIRTY on reset) sf__ps_collect_rearm
 *   collector  ARMED+DIRTY (reset)    ARMED                   sf__ps_collect_rearm
 *   collector  COLLECTING (protect    WRITABLE+DIRTY          sf__ps_rearm_failed
 *              failed; ARMED in take)
 *   collector  ARMED (emit stopped)   ARMED+DIRTY             sf__ps_keep_dirty
 *   take       WRITABLE (whole chunk) ARMED                   sf__ps_take_chunk
 *   collector  not GONE (degraded)    COLLECTING+DIRTY        sf__ps_degraded_claim
 *   collector  COLLECTING (degraded)  ARMED (-DIRTY on reset) sf__ps_degraded_rearm
 *   collector  COLLECTING (degraded,  WRITABLE                sf__ps_unpick
 *              protect failed)
 *   restore    not BUSY               COLLECTING              sf__ps_restore_claim
 *   restore    COLLECTING             ARMED+DIRTY+CGEN=lo     sf__ps_restore_release
 *              (or WRITABLE+DIRTY when the protect failed)
 *   restore    COLLECTING (undo)      as it was (or WRITABLE  sf__ps_restore_undo
 *                                     +DIRTY if left open)
 *   untrack    not BUSY               ARMED+GONE              sf__ps_untrack_range
 *   track      GONE                   ARMED, CGEN=C           sf__ps_revive_range
 *   track      ARMED (revive failed)  ARMED+GONE              sf__ps_bury_range
 *   mirror     any (t->lock)          BUSY, then sgen=g       sf__ps_shadow_lock,
 *                                                             sf__ps_shadow_unlock
 * ------------------------------------------------------------------------ */
enum { PS_ARMED = 0, PS_WRITABLE = 1, PS_BUSY = 2, PS_COLLECTING = 3 };
#define PS_ST_MASK 3ull
#define PS_DIRTY 4ull
#define PS_GONE 8ull /* untracked part of a region (partial sf_untrack) */
#define PS_CGEN_SHIFT 32
#define PS_CGEN_MASK ((uint64_t)UINT32_MAX << PS_CGEN_SHIFT)
#define PS_ST(w) ((unsigned)((w) & PS_ST_MASK))
#define PS_CGEN(w) ((uint32_t)((w) >> PS_CGEN_SHIFT))
#define PS_MAKE(st, dirty, cgen) \
    ((uint64_t)(st) | ((dirty) ? PS_DIRTY : 0) | ((uint64_t)(cgen) << PS_CGEN_SHIFT))
#define PS_WITH_ST(w, st) (((w) & ~PS_ST_MASK) | (uint64_t)(st))
#define PS_RSEQ_SHIFT 4
#define PS_RSEQ_BITS 28
#define PS_RSEQ_MASK ((((uint64_t)1 << PS_RSEQ_BITS) - 1) << PS_RSEQ_SHIFT)
#define PS_RSEQ(w) ((uint32_t)(((w) & PS_RSEQ_MASK) >> PS_RSEQ_SHIFT))

/* ------------------------------------------------------------------------
 * Queries (any): reads only.
 * ------------------------------------------------------------------------ */

static inline bool sf__ps_gone(uint64_t w) { return w & PS_GONE; }
static inline bool sf__ps_dirty(uint64_t w) { return w & PS_DIRTY; }
static inline bool sf__ps_writable(uint64_t w) { return PS_ST(w) == PS_WRITABLE; }

/* Whether page p of r was given back by a partial untrack. */
static inline bool sf__page_gone(struct sf_region *r, size_t p)
{
    return sf__ps_gone(atomic_load(&r->ps[p]));
}

/* The generation page content began in (COW: CGEN; mirror: sgen), never
 * below the region's track_gen. */
static inline uint32_t sf__eff_cgen(const struct sf_region *r, uint64_t w)
{
    uint32_t cg = PS_CGEN(w);
    return cg > r->track_gen ? cg : r->track_gen;
}

/* mprotect's VMA estimate: whether the page is open in the kernel as far as
 * its state tells (given back, writable, or picked and not protected yet). */
static inline bool sf__ps_open(uint64_t w)
{
    unsigned st = PS_ST(w);
    return (w & PS_GONE) || st == PS_WRITABLE || st == PS_COLLECTING;
}

/* Whether sequence x was taken after the reader's mark `since` and by the
 * time `now` (t->res_seq read after the page's word), modulo 2^28.  The
 * window (since, now] holds only the openings in flight around one read
 * of the uffd, so a sequence taken 2^27 openings ago (or never: a page
 * never opened holds 0) is not mistaken for a recent one; a plain
 * half-range test did that once the counter passed 2^27 and sent such a
 * page's every message back as stale: the faulting thread never got
 * through. */
static inline bool ps_rseq_after(uint32_t x, uint32_t since, uint32_t now)
{
    uint32_t m = (1u << PS_RSEQ_BITS) - 1;
    uint32_t d = (x - since) & m;
    return d != 0 && d <= ((now - since) & m);
}

/* The RSEQ bits of w, as sf__rseq_next returns them. */
static inline uint64_t sf__ps_rseq(uint64_t w) { return w & PS_RSEQ_MASK; }

/* Handler threads: whether the page was opened by an opening that had not
 * finished its wake when the reader took its mark `since` (t->res_done
 * before a read(2) of the uffd): a message that read returned may be
 * older than the wake, so it is stale.  now: t->res_seq, read after w. */
static inline bool sf__ps_opened_since(uint64_t w, uint32_t since, uint32_t now)
{
    return ps_rseq_after(PS_RSEQ(w), since, now);
}

/* What a page is to an embedding (the preload): not tracked (no region, or
 * GONE), armed and clean (the next write is the first since the last
 * reset), armed and dirty (protected again by a take, still to be
 * collected), or open (writable, or owned by a handler or a collector). */
enum sf_page_class { SF_PAGE_UNTRACKED, SF_PAGE_ARMED_CLEAN, SF_PAGE_ARMED_DIRTY, SF_PAGE_OPEN };

static inline enum sf_page_class sf__ps_class(uint64_t w)
{
    if (w & PS_GONE)
        return SF_PAGE_UNTRACKED;
    if (PS_ST(w) != PS_ARMED)
        return SF_PAGE_OPEN;
    return (w & PS_DIRTY) ? SF_PAGE_ARMED_DIRTY : SF_PAGE_ARMED_CLEAN;
}

/* The class of the page at addr, in whichever tracker tracks it (an
 * embedding's question: the preload's first-write test, its pre-faulting
 * of buffers).  Any: async-signal-safe, lock-free (a grace section of its
 * own; sections nest).  pagestate.c. */
enum sf_page_class sf__page_class(uintptr_t addr);

/* Lets one page finish: waits while a handler holds it BUSY (a few
 * microseconds of copy and syscall), spinning, then yielding the CPU (its
 * owner may be preempted on this one).  Returns the word it left.  Any
 * (the only wait a handler does; collectors and readers wait here too). */
static inline uint64_t sf__wait_not_busy(_Atomic uint64_t *ps)
{
    uint64_t w;
    unsigned spins = 0;
    while (PS_ST(w = atomic_load(ps)) == PS_BUSY) {
        if (++spins < 4096)
            sf__cpu_relax();
        else
            sf__os_yield();
    }
    return w;
}

/* Seqlock readers of a page's content (COW: live memory; mirror: the
 * shadow).  Any, inside the grace section that found the region:
 *     w = sf__ps_read_begin(ps); ...copy...; if (sf__ps_read_valid(ps, w))
 * The writers hold the page BUSY while its content changes. */
static inline uint64_t sf__ps_read_begin(_Atomic uint64_t *ps)
{
    return sf__wait_not_busy(ps);
}

static inline bool sf__ps_read_valid(_Atomic uint64_t *ps, uint64_t w)
{
    /* The copy's plain reads happen before the re-check. */
    atomic_thread_fence(memory_order_acquire);
    return atomic_load(ps) == w;
}

/* ------------------------------------------------------------------------
 * Chunk hints: 64 pages share a CH_* word and a max-CGEN word.
 * ------------------------------------------------------------------------ */

/* Sets hint bits of page's chunk (a fetch_or only if not set already).
 * Handler or collector; async-signal-safe, lock-free. */
static inline void sf__chunk_mark(struct sf_region *r, size_t page, uint32_t bits)
{
    _Atomic uint32_t *c = &r->chunk[page >> SF_CHUNK_SHIFT];
    if ((atomic_load_explicit(c, memory_order_relaxed) & bits) != bits)
        atomic_fetch_or(c, bits);
}

/* Raises the max-CGEN of page's chunk to gen.  Handler or collector;
 * async-signal-safe, lock-free. */
static inline void sf__chunk_maxgen_raise(struct sf_region *r, size_t page, uint32_t gen)
{
    _Atomic uint32_t *m = &r->chunk_maxgen[page >> SF_CHUNK_SHIFT];
    uint32_t cur = atomic_load_explicit(m, memory_order_relaxed);
    while (cur < gen && !atomic_compare_exchange_weak(m, &cur, gen))
        ;
}

/* Page's chunk was written in generation C: both hints and the max-CGEN.
 * Handler; async-signal-safe, lock-free. */
static inline void sf__chunk_written(struct sf_region *r, size_t page, uint32_t C)
{
    sf__chunk_mark(r, page, CH_DIRTY | CH_WRITABLE);
    sf__chunk_maxgen_raise(r, page, C);
}

/* Whether a take is arming page p's chunk as a whole (sf__ps_take_chunk).
 * Handler: read after owning the page (sf__ps_heal_claim). */
static inline bool sf__chunk_taking(struct sf_region *r, size_t p)
{
    return atomic_load(&r->chunk[p >> SF_CHUNK_SHIFT]) & CH_TAKING;
}

/* Handler threads: the next resolution sequence, taken before the wake,
 * as RSEQ bits.  The opening is in flight until sf__rseq_woken(t, *slot):
 * first a slot holds a lower bound of its sequence, so that a reader's
 * mark (sf__rseq_mark) that counts the sequence also sees the slot.
 * Handler or collector; async-signal-safe, lock-free. */
static inline uint64_t sf__rseq_next(sf_tracker *t, unsigned *slot)
{
    uint32_t lb = atomic_load(&t->res_seq) + 1;
    if (!lb)
        lb--; /* 0 marks a free slot; one lower is still a lower bound */
    for (unsigned i = 0;; i = (i + 1) % SF_RES_SLOTS) {
        uint32_t z = 0;
        if (atomic_compare_exchange_strong(&t->res_open[i], &z, lb)) {
            *slot = i;
            break;
        }
    }
    uint32_t n = atomic_fetch_add(&t->res_seq, 1) + 1;
    return ((uint64_t)n << PS_RSEQ_SHIFT) & PS_RSEQ_MASK;
}

/* Handler threads: the opening that took its sequence with slot has woken
 * its pages' waiters.  No waiting for other openings (an order of
 * completion made every opening wait for a preempted one).  Handler or
 * collector; async-signal-safe, lock-free. */
static inline void sf__rseq_woken(sf_tracker *t, unsigned slot)
{
    atomic_store(&t->res_open[slot], 0);
}

/* Handler threads: a reader's mark, taken before a read(2) of the uffd: a
 * sequence up to which every opening has woken its waiters (the lowest in
 * flight, less one, or the last taken).  A message the read returns is
 * stale when its page was opened by a later sequence (sf__ps_opened_since):
 * the opening may have woken its thread after the kernel queued it.
 * Async-signal-safe, lock-free. */
static inline uint32_t sf__rseq_mark(sf_tracker *t)
{
    uint32_t mark = atomic_load(&t->res_seq);
    for (unsigned i = 0; i < SF_RES_SLOTS; i++) {
        uint32_t v = atomic_load(&t->res_open[i]);
        if (v && (int32_t)(v - 1 - mark) < 0)
            mark = v - 1;
    }
    return mark;
}

/* ------------------------------------------------------------------------
 * Handler transitions (fault.c, sf__resolve).  All async-signal-safe and
 * lock-free; *w is the word as last read, updated when a CAS fails.
 * ------------------------------------------------------------------------ */

/* ARMED or COLLECTING -> BUSY: the handler owns the page.  Taking a
 * COLLECTING page over makes its collector's final CAS fail (the page
 * stays dirty for the next collect).  A weak CAS: false means re-read. */
static inline bool sf__ps_fault_claim(_Atomic uint64_t *ps, uint64_t *w)
{
    return atomic_compare_exchange_weak(ps, w, PS_WITH_ST(*w, PS_BUSY));
}

/* A following page joins the fault's cluster: ARMED (and tracked) ->
 * BUSY.  Never a COLLECTING one (its collector would protect it after our
 * unprotect).  Returns whether the page is now the handler's. */
static inline bool sf__ps_cluster_claim(_Atomic uint64_t *ps)
{
    uint64_t w = atomic_load(ps);
    return PS_ST(w) == PS_ARMED && !(w & PS_GONE) &&
           atomic_compare_exchange_strong(ps, &w, PS_WITH_ST(w, PS_BUSY));
}

/* BUSY -> BUSY+DIRTY+CGEN=C (+ the wake's RSEQ), before the unprotect: with
 * handler threads the unprotect wakes the faulting thread, whose next
 * collect, take or restore must see the write.  Returns the word before. */
static inline uint64_t sf__ps_fault_publish(_Atomic uint64_t *ps, uint32_t C, uint64_t rs)
{
    uint64_t orig = atomic_load(ps);
    atomic_store(ps, PS_MAKE(PS_BUSY, 1, C) | rs);
    return orig;
}

/* BUSY -> WRITABLE+DIRTY+CGEN=C: the page is open. */
static inline void sf__ps_fault_open(_Atomic uint64_t *ps, uint32_t C, uint64_t rs)
{
    atomic_store(ps, PS_MAKE(PS_WRITABLE, 1, C) | rs);
}

/* BUSY -> ARMED as it was before the fault (orig from sf__ps_fault_publish):
 * the unprotect failed, nothing was written. */
static inline void sf__ps_fault_abort(_Atomic uint64_t *ps, uint64_t orig)
{
    atomic_store(ps, PS_WITH_ST(orig, PS_ARMED));
}

/* WRITABLE -> BUSY: a fault on a page its state says is open (a collector's
 * protect landed after a handler's unprotect).  Owning it keeps collectors
 * off while it is unprotected again.  A weak CAS: false means re-read. */
static inline bool sf__ps_heal_claim(_Atomic uint64_t *ps, uint64_t *w)
{
    return atomic_compare_exchange_weak(ps, w, PS_WITH_ST(*w, PS_BUSY));
}

/* BUSY -> WRITABLE as it was (w, from before sf__ps_heal_claim): a take is
 * arming the chunk as a whole.  Fails harmlessly when the take's store
 * replaced our BUSY (the page is ARMED then; the write retries and faults
 * on it). */
static inline void sf__ps_heal_yield(_Atomic uint64_t *ps, uint64_t w)
{
    uint64_t busy = PS_WITH_ST(w, PS_BUSY);
    atomic_compare_exchange_strong(ps, &busy, w);
}

/* BUSY -> WRITABLE as it was, with the RSEQ of this opening, after the
 * unprotect. */
static inline void sf__ps_heal_open(_Atomic uint64_t *ps, uint64_t w, uint64_t rs)
{
    atomic_store(ps, (w & ~PS_RSEQ_MASK) | rs);
}

/* ------------------------------------------------------------------------
 * Collector transitions (tracker.c; t->lock held).
 * ------------------------------------------------------------------------ */

/* Picks page p for a walk of the given mode: GET reports DIRTY pages,
 * RESET re-arms and reports them, TAKE re-arms WRITABLE ones.  A page that
 * must be protected goes WRITABLE -> COLLECTING.  Waits for a BUSY page to
 * finish.  Returns whether p belongs to the run. */
static inline bool sf__ps_collect_pick(_Atomic uint64_t *ps, enum sf_walk mode)
{
    uint64_t w = atomic_load(ps);
    for (;;) {
        if (w & PS_GONE)
            return false;
        if (PS_ST(w) == PS_BUSY) {
            w = sf__wait_not_busy(ps); /* let one page finish */
            continue;
        }
        bool writable = PS_ST(w) == PS_WRITABLE;
        if (mode == SF_WALK_TAKE ? !writable : !(w & PS_DIRTY))
            return false;
        if (mode == SF_WALK_GET || !writable)
            return true;
        if (atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(w, PS_COLLECTING)))
            return true;
    }
}

/* COLLECTING -> WRITABLE: a picked page that will not be protected (never
 * protected, so no fault can have taken it over; a CAS all the same, as a
 * heal may own it meanwhile).  The page stays dirty. */
static inline void sf__ps_unpick(_Atomic uint64_t *ps)
{
    uint64_t w = atomic_load(ps);
    while (PS_ST(w) == PS_COLLECTING &&
           !atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(w, PS_WRITABLE)))
        ;
}

/* After the walk's protect landed: COLLECTING -> ARMED, clean on a reset;
 * on a reset also ARMED+DIRTY -> ARMED (a page a take protected).  A page a
 * handler took over fails the CAS and stays dirty. */
static inline void sf__ps_collect_rearm(_Atomic uint64_t *ps, enum sf_walk mode)
{
    uint64_t w = atomic_load(ps);
    unsigned st = PS_ST(w);
    if (w & PS_GONE)
        return;
    if (st != PS_COLLECTING && !(mode == SF_WALK_RESET && st == PS_ARMED))
        return; /* taken over by a handler: it stays dirty */
    uint64_t nw = PS_WITH_ST(w, PS_ARMED);
    if (mode == SF_WALK_RESET)
        nw &= ~PS_DIRTY;
    atomic_compare_exchange_strong(ps, &w, nw);
}

/* The walk's protect failed (VMA budget): a picked page (or, in a take, an
 * ARMED one of a chunk armed as a whole) -> WRITABLE+DIRTY, reported now
 * and again next time. */
static inline void sf__ps_rearm_failed(_Atomic uint64_t *ps, enum sf_walk mode)
{
    uint64_t w = atomic_load(ps);
    unsigned st = PS_ST(w);
    if (st == PS_COLLECTING || (mode == SF_WALK_TAKE && st == PS_ARMED && !(w & PS_GONE)))
        atomic_compare_exchange_strong(ps, &w, PS_WITH_ST(w, PS_WRITABLE) | PS_DIRTY);
}

/* ARMED -> ARMED+DIRTY: a run re-armed but not reported (the caller's
 * callback stopped the collect) stays dirty for the next collect. */
static inline void sf__ps_keep_dirty(_Atomic uint64_t *ps)
{
    uint64_t w = atomic_load(ps);
    while (!(w & (PS_DIRTY | PS_GONE)) && !atomic_compare_exchange_weak(ps, &w, w | PS_DIRTY))
        ;
}

/* A degraded region (written without faults) is re-armed as a whole: every
 * tracked page -> COLLECTING+DIRTY, with a content generation of at least
 * cgen (a later one a fault gave it stays).  Waits for BUSY pages. */
static inline void sf__ps_degraded_claim(_Atomic uint64_t *ps, uint32_t cgen)
{
    uint64_t w = atomic_load(ps);
    for (;;) {
        if (w & PS_GONE)
            break;
        if (PS_ST(w) == PS_BUSY) {
            w = sf__wait_not_busy(ps);
            continue;
        }
        uint32_t cg = PS_CGEN(w) > cgen ? PS_CGEN(w) : cgen;
        uint64_t nw = (w & ~PS_CGEN_MASK) | ((uint64_t)cg << PS_CGEN_SHIFT);
        if (atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(nw, PS_COLLECTING) | PS_DIRTY))
            break;
    }
}

/* After the degraded region's protect: COLLECTING -> ARMED, clean on a
 * reset (a page taken over meanwhile stays as its handler left it). */
static inline void sf__ps_degraded_rearm(_Atomic uint64_t *ps, bool reset)
{
    uint64_t w = atomic_load(ps);
    if (PS_ST(w) == PS_COLLECTING)
        atomic_compare_exchange_strong(ps, &w, PS_WITH_ST(w, PS_ARMED) & ~(reset ? PS_DIRTY : 0));
}

/* ------------------------------------------------------------------------
 * Restore transitions (snapshot_cow.c; t->lock held, writers stopped).
 * ------------------------------------------------------------------------ */

/* Any state but BUSY -> COLLECTING: restore owns the page (a write that
 * faults meanwhile takes it over, as from a collector).  Waits for a BUSY
 * page.  Returns the word it had, to give back on failure. */
static inline uint64_t sf__ps_restore_claim(_Atomic uint64_t *ps)
{
    uint64_t w = atomic_load(ps);
    for (;;) {
        if (PS_ST(w) == PS_BUSY) {
            w = sf__wait_not_busy(ps);
            continue;
        }
        if (atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(w, PS_COLLECTING)))
            return w;
    }
}

/* COLLECTING -> the word before restore owned it (orig), after a failure
 * before any page was copied; left_open: the protect of the pages it opened
 * failed too, so the page is WRITABLE+DIRTY instead (and hinted so). */
static inline void sf__ps_restore_undo(struct sf_region *r, size_t p, uint64_t orig, bool left_open)
{
    _Atomic uint64_t *ps = &r->ps[p];
    uint64_t w = atomic_load(ps);
    if (PS_ST(w) != PS_COLLECTING)
        return; /* a writer took it over */
    uint64_t nw = left_open ? PS_WITH_ST(orig, PS_WRITABLE) | PS_DIRTY : orig;
    atomic_compare_exchange_strong(ps, &w, nw);
    if (left_open)
        sf__chunk_mark(r, p, CH_DIRTY | CH_WRITABLE);
}

/* COLLECTING -> ARMED+DIRTY with the content generation of what was copied
 * back (armed: the protect landed), or WRITABLE+DIRTY+CGEN=cgen (it did
 * not); rs: the RSEQ of this opening (handler threads), else 0.  A page a
 * writer took over stays dirty as it left it. */
static inline void sf__ps_restore_release(struct sf_region *r, size_t p, bool armed, uint32_t cgen,
                                          uint64_t rs)
{
    _Atomic uint64_t *ps = &r->ps[p];
    uint64_t w = atomic_load(ps);
    if (PS_ST(w) != PS_COLLECTING)
        return; /* a writer took it over: it stays dirty */
    uint64_t nw = armed ? PS_MAKE(PS_ARMED, 1, cgen) : PS_MAKE(PS_WRITABLE, 1, cgen);
    atomic_compare_exchange_strong(ps, &w, nw | rs);
    sf__chunk_mark(r, p, CH_DIRTY | (armed ? 0 : CH_WRITABLE));
}

/* ------------------------------------------------------------------------
 * Mirror engine (snapshot_mirror.c; t->lock held): the word of a page of a
 * uffd-async region, which has no fault path, is the seqlock of its shadow
 * page, and its CGEN bits hold sgen.
 * ------------------------------------------------------------------------ */

/* -> BUSY while the shadow page is rewritten.  Returns the word before. */
static inline uint64_t sf__ps_shadow_lock(_Atomic uint64_t *ps)
{
    uint64_t w = atomic_load(ps);
    atomic_store(ps, PS_WITH_ST(w, PS_BUSY));
    atomic_thread_fence(memory_order_seq_cst);
    return w;
}

/* BUSY -> ARMED with sgen (the shadow content began in generation sgen);
 * w from sf__ps_shadow_lock.  A release store: the copy comes first. */
static inline void sf__ps_shadow_unlock(_Atomic uint64_t *ps, uint64_t w, uint32_t sgen)
{
    uint64_t nw = (w & ~(PS_ST_MASK | PS_CGEN_MASK)) | ((uint64_t)sgen << PS_CGEN_SHIFT);
    atomic_store_explicit(ps, nw, memory_order_release);
}

/* ------------------------------------------------------------------------
 * pagestate.c: transitions over ranges and whole chunks, and the walk over
 * live runs.  Collector side (t->lock held) unless said otherwise.
 * ------------------------------------------------------------------------ */

/* The take's fast path (uffd-sync): arms chunk c (pages p0 .. p0+63, all
 * WRITABLE) with plain stores before the protect.  Returns whether it did;
 * false: the chunk takes the page-by-page path. */
bool sf__ps_take_chunk(struct sf_region *r, size_t c, size_t p0);
/* sf__ps_unpick on pages [s, e), hinted dirty and writable again. */
void sf__ps_unpick_range(struct sf_region *r, size_t s, size_t e);
/* Partial untrack, after the backend opened [p0, p1): each page (waiting
 * for a BUSY one) -> ARMED+GONE, its CGEN kept.  A fault racing with this
 * finds the page writable or GONE, never armed. */
void sf__ps_untrack_range(struct sf_region *r, size_t p0, size_t p1);
/* sf_track of GONE pages [p0, p1): whether all of them are GONE (else the
 * range is tracked already); then -> ARMED, clean, CGEN=C.  (The caller
 * keeps r->gone, the count of GONE pages, beside the words.) */
bool sf__ps_all_gone(struct sf_region *r, size_t p0, size_t p1);
void sf__ps_revive_range(struct sf_region *r, size_t p0, size_t p1, uint32_t C);
/* The revive failed: [p0, p1) -> ARMED+GONE again. */
void sf__ps_bury_range(struct sf_region *r, size_t p0, size_t p1, uint32_t C);
/* Sets chunk c's max-CGEN from its pages (after a restore lowered them). */
void sf__chunk_maxgen_recompute(struct sf_region *r, size_t c);

/* Whether a page in [p0, p1) of r was given back by a partial untrack: a
 * span must not cross it (unregistered for uffd).  Collector side. */
bool sf__gone_between(struct sf_region *r, size_t p0, size_t p1);

/* The live (not GONE) runs of pages [p0, p1) of r, in order: one run when
 * nothing of r is GONE.  *s, *e: the previous run (both p0 at the start);
 * sets the next and returns true, or returns false after the last.  Reads
 * only: collector side, or in a grace section. */
bool sf__live_run_next(struct sf_region *r, size_t *s, size_t *e, size_t p1);
#define SF_FOR_LIVE_RUNS(r, p0, p1, s, e) \
    for (size_t s = (p0), e = (p0); sf__live_run_next((r), &s, &e, (p1));)

#endif
