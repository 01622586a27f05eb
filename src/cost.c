/* cost.c - the batching decision of every re-arming walk, from protect
 * costs measured once per process.
 *
 * A walk that re-arms runs of pages (collect, take, restore, copy restore)
 * asks sf__span_join(t, gap) whether the next run, gap unwritten pages past
 * the end of the current span, joins the span (one protect call that also
 * covers the gap) or starts a new call.  Joining saves one call; it costs
 * the gap: the kernel rewrites every PTE of a protected range, those of
 * pages already armed included.  So
 *
 *     join  iff  gap * pte < call
 *
 * where `call` is the fixed cost of one protect call (syscall entry, mmap
 * lock, the VMA lookup, the TLB flush: a shootdown IPI when other threads
 * of the process run elsewhere) and `pte` what each page inside a span adds.
 * Both differ by two orders of magnitude between machines: on a shadow-
 * paged VM a call costs ~40 us and a PTE ~0.17 us (break-even ~235 pages),
 * on a natively paged one ~1-2 us and ~0.02-0.08 us (~25-50 pages).  A
 * fixed gap tuned for one makes a take on the other rewrite the whole range
 * for 1% scattered writes, or issue a call per page where a span is cheaper.
 *
 * The costs are measured here, once per process (from the capability probe,
 * before the first tracker exists), on a scratch mapping of SPAN_PAGES + 2
 * populated pages, for each mechanism separately:
 *
 *   A      one call protecting one open page (a lone run);
 *   B(g)   one call protecting [open page][g armed pages][open page], for
 *          g = 1 and g = SPAN_PAGES;
 *   pte  = (B(SPAN_PAGES) - B(1)) / (SPAN_PAGES - 1)   what a gap page adds;
 *   call = 2 A - B(1) + pte                             what joining saves.
 *
 * Each is the minimum of PROBE_REPS samples: a protect call has a hard
 * floor and noise (interrupts, a preempted vCPU) only adds to it.  With the
 * fast flavour this is ~20 calls of a few microseconds (well under a
 * millisecond including the scratch mapping); a slow one (40 us a call)
 * stays within a few milliseconds.
 *
 * mprotect: a span over pages already PROT_READ merges their VMAs without
 * rewriting their PTEs (the kernel skips a VMA whose protection does not
 * change), so its measured pte is small and its gap large: spans merge the
 * VMAs of the runs they cover, and the VMA estimate (span_delta in
 * backend_mprotect.c) counts every boundary inside a span whatever its
 * length, so the budget stays right.  The estimate scans the span's page
 * states in userspace, a few ns a page: the gap is capped at SF_SPAN_GAP_MAX
 * so that a span's scan stays far below one call.
 *
 * Only protect joins gaps: unprotect (restore) opens contiguous runs of
 * pages it owns and never spans a gap (see apply_spans in snapshot.c), so
 * its costs do not enter the decision.
 *
 * SNAPFAULT_SPAN_GAP=N forces gap N for every backend (tests, debugging);
 * sf_probe shows the measured costs and the gaps in use, sf_tracker_stats
 * the gap of a tracker and the protect calls it made. */
#include "internal.h"
#include "uffd.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define SPAN_PAGES 63
#define PROBE_REPS 7

/* The break-even gap per backend; read by walks, written by the probe (once,
 * before any tracker exists) and by sf__cost_set. */
static _Atomic size_t g_gap[SF_BACKEND_COUNT];
static bool g_forced;

size_t sf__cost_gap(double call_ns, double pte_ns)
{
    if (!(call_ns > 0))
        return 0;
    if (!(pte_ns > 0) || call_ns / pte_ns > (double)SF_SPAN_GAP_MAX)
        return SF_SPAN_GAP_MAX;
    /* the largest gap with gap * pte < call */
    double q = call_ns / pte_ns;
    size_t g = (size_t)q;
    if ((double)g * pte_ns >= call_ns && g > 0)
        g--;
    return g;
}

size_t sf__span_gap(const sf_tracker *t)
{
    return atomic_load_explicit(&g_gap[t->backend], memory_order_relaxed);
}

bool sf__span_join(const sf_tracker *t, size_t gap)
{
    return gap <= sf__span_gap(t);
}

static void set_mech(enum sf_cost_mech m, size_t gap)
{
    if (m == SF_COST_UFFD) {
        /* uffd-async uses UFFDIO_WRITEPROTECT for copy restores */
        atomic_store(&g_gap[SF_BACKEND_UFFD_SYNC], gap);
        atomic_store(&g_gap[SF_BACKEND_UFFD_ASYNC], gap);
    } else {
        atomic_store(&g_gap[SF_BACKEND_MPROTECT], gap);
    }
}

void sf__cost_set(enum sf_cost_mech m, double call_ns, double pte_ns)
{
    set_mech(m, sf__cost_gap(call_ns, pte_ns));
}

static double now_ns(void)
{
    struct timespec ts;
    sf__os_clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One mechanism's protect (true) / open (false) of [a, a + len). */
typedef int (*prot_fn)(int fd, uintptr_t a, size_t len, bool protect);

static int uffd_prot(int fd, uintptr_t a, size_t len, bool protect)
{
    return sf__uffd_wp(fd, a, len, protect, false);
}

static int mp_prot(int fd, uintptr_t a, size_t len, bool protect)
{
    (void)fd;
    return sf__os_mprotect((void *)a, len, protect ? PROT_READ : PROT_READ | PROT_WRITE) < 0 ? -errno : 0;
}

/* Times one protect of [first, last] (pages of base) after opening the two
 * end pages; every page is armed before and after.  Returns ns or < 0. */
static double time_span(prot_fn f, int fd, uintptr_t base, size_t first, size_t last)
{
    uintptr_t a = base + (first << sf_page_shift), e = base + (last << sf_page_shift);
    if (f(fd, a, sf_page_size, false) || (last != first && f(fd, e, sf_page_size, false)))
        return -1;
    double t0 = now_ns();
    int rc = f(fd, a, e + sf_page_size - a, true);
    double t1 = now_ns();
    return rc ? -1 : t1 - t0;
}

/* Measures call and pte for f on the armed scratch at base (SPAN_PAGES + 2
 * pages).  Returns 0 or -1. */
static int measure(prot_fn f, int fd, uintptr_t base, double *call_ns, double *pte_ns)
{
    double a = 0, b1 = 0, b2 = 0;
    for (int k = 0; k < PROBE_REPS; k++) {
        double x = time_span(f, fd, base, 0, 0);
        double y = time_span(f, fd, base, 0, 2);
        double z = time_span(f, fd, base, 0, SPAN_PAGES + 1);
        if (x < 0 || y < 0 || z < 0)
            return -1;
        if (!k || x < a)
            a = x;
        if (!k || y < b1)
            b1 = y;
        if (!k || z < b2)
            b2 = z;
    }
    double pte = (b2 - b1) / (SPAN_PAGES - 1);
    if (pte < 0)
        pte = 0;
    double call = 2 * a - b1 + pte;
    if (call < a / 2) /* noise made the saving implausibly small */
        call = a / 2;
    *call_ns = call;
    *pte_ns = pte;
    return 0;
}

static void *scratch(void)
{
    size_t len = (SPAN_PAGES + 2) << sf_page_shift;
    void *p = sf__os_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    sf__os_madvise(p, len, MADV_NOHUGEPAGE);
    /* MAP_POPULATE may leave the zero page mapped read-only: write it. */
    for (size_t i = 0; i < SPAN_PAGES + 2; i++)
        ((volatile char *)p)[i << sf_page_shift] = 1;
    return p;
}

void sf__cost_probe(sf_caps *c)
{
    size_t len = (SPAN_PAGES + 2) << sf_page_shift;
    c->uffd_wp_call_ns = c->uffd_wp_pte_ns = c->mprotect_call_ns = c->mprotect_pte_ns = 0;
    const char *env = sf__os_getenv("SNAPFAULT_SPAN_GAP");
    long forced = -1;
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (!*end && v >= 0)
            forced = v > (long)SF_SPAN_GAP_MAX ? (long)SF_SPAN_GAP_MAX : v;
    }

    /* mprotect works everywhere. */
    void *m = scratch();
    if (m) {
        double call, pte;
        if (sf__os_mprotect(m, len, PROT_READ) == 0 &&
            measure(mp_prot, -1, (uintptr_t)m, &call, &pte) == 0) {
            c->mprotect_call_ns = call;
            c->mprotect_pte_ns = pte;
        }
        sf__os_munmap(m, len);
    }
    if (c->uffd_wp) {
        int fd = sf__uffd_open(false, UFFD_FEATURE_PAGEFAULT_FLAG_WP, NULL);
        m = fd >= 0 ? scratch() : NULL;
        if (m) {
            double call, pte;
            if (sf__uffd_register_wp(fd, (uintptr_t)m, len) == 0 &&
                sf__uffd_wp(fd, (uintptr_t)m, len, true, false) == 0 &&
                measure(uffd_prot, fd, (uintptr_t)m, &call, &pte) == 0) {
                c->uffd_wp_call_ns = call;
                c->uffd_wp_pte_ns = pte;
            }
            sf__os_munmap(m, len);
        }
        if (fd >= 0)
            sf__os_close(fd);
    }
    /* Not measured (the mechanism failed on scratch memory): every run is
     * a call of its own, the choice that never rewrites a PTE for nothing. */
    set_mech(SF_COST_MPROTECT, sf__cost_gap(c->mprotect_call_ns, c->mprotect_pte_ns));
    set_mech(SF_COST_UFFD, sf__cost_gap(c->uffd_wp_call_ns, c->uffd_wp_pte_ns));
    if (forced >= 0) {
        g_forced = true;
        set_mech(SF_COST_MPROTECT, (size_t)forced);
        set_mech(SF_COST_UFFD, (size_t)forced);
    }
    c->span_gap_forced = g_forced;
    c->mprotect_span_gap = (long)atomic_load(&g_gap[SF_BACKEND_MPROTECT]);
    c->uffd_span_gap = (long)atomic_load(&g_gap[SF_BACKEND_UFFD_SYNC]);
}
