/* snapshot_mirror.c - the mirror engine (uffd-async trackers): a shadow
 * copy of every tracked region, brought up to date by each take with the
 * pages written since the previous one; the old shadow content a live
 * snapshot still needs is pushed as a version first.
 *
 * Writes are resolved by the kernel (WP_ASYNC): nothing can be copied
 * before a write, so the shadow is what snapshots read.  Per page:
 *   - mbits (region bitmap): the shadow is stale, live memory was written
 *     since it was last copied (every PAGEMAP_SCAN sets it, beside abits);
 *   - CGEN of the state word (uffd-async has no fault path): sgen, the
 *     generation the shadow content began in; ST is BUSY while the shadow
 *     page is rewritten, so readers use the state word as a seqlock.
 * Snapshot g sees page p in the shadow if sgen(p) <= g, else in the
 * version of p with lo <= g <= hi.  A take g copies each stale page: if a
 * live snapshot has a generation in [sgen, g-1] the old shadow content is
 * pushed as the version {sgen, g-1} (shared by all of them), then live is
 * copied into the shadow and sgen = g.  The cost follows the pages written
 * since the previous take.  Reads and images never touch live memory.
 *
 * Pre-copy: a background thread per tracker fills new shadows from
 * sf_track on, 2 MiB at a time under t->lock (scan the chunk, copy its
 * stale pages, sgen = the current generation), so the first take copies
 * only what was written since.  A write after the chunk's scan shows in
 * the next scan, so nothing is missed.
 *
 * Copy helper: a take copies stale pages at the latency of their first
 * loads, not at memory bandwidth, so a second thread halves the time when
 * a CPU is free (the writers are stopped).  A helper thread per tracker
 * shares each block of pages through one atomic index; the take decides
 * per block from what it measured on this machine (its own copy cost per
 * page and the helper's wake latency), so a busy or single CPU machine
 * copies alone. */
#include "snapshot.h"
#include "stop.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define PC_CHUNK_PAGES 512 /* pre-copy step: 2 MiB of 4 KiB pages */

_Static_assert(SF_CHUNK_PAGES == 64, "one mbits word per chunk");

static inline bool bit_test(const uint64_t *b, size_t p)
{
    return b[p >> 6] & (1ull << (p & 63));
}

static inline void bit_clear(uint64_t *b, size_t p)
{
    b[p >> 6] &= ~(1ull << (p & 63));
}

/* For mbits while a take and its copy helper clear bits of one word. */
static inline void bit_clear_shared(uint64_t *b, size_t p)
{
    __atomic_fetch_and(&b[p >> 6], ~(1ull << (p & 63)), __ATOMIC_RELAXED);
}

static inline char *shadow_page(struct sf_region *r, size_t p)
{
    return r->shadow + (p << sf_page_shift);
}

static inline char *live_page(struct sf_region *r, size_t p)
{
    return (char *)r->start + (p << sf_page_shift);
}

/* Copies one page into the shadow.  Takes copy scattered pages that no one
 * reads soon: streaming stores skip reading the destination into the cache
 * first (a third of the memory traffic), then a fence orders them before
 * the state word's release store. */
static void shadow_copy(void *dst, const void *src)
{
#if defined(__SSE2__)
    const __m128i *s = src;
    __m128i *d = dst;
    for (size_t i = 0; i < sf_page_size / sizeof(__m128i); i += 4) {
        __m128i a = _mm_load_si128(s + i), b = _mm_load_si128(s + i + 1);
        __m128i c = _mm_load_si128(s + i + 2), e = _mm_load_si128(s + i + 3);
        _mm_stream_si128(d + i, a);
        _mm_stream_si128(d + i + 1, b);
        _mm_stream_si128(d + i + 2, c);
        _mm_stream_si128(d + i + 3, e);
    }
    _mm_sfence();
#else
    memcpy(dst, src, sf_page_size);
#endif
}

/* Rewrites shadow page p (a seqlock write: readers retry while BUSY).
 * src NULL: the content stays (both pages read as zeros), only sgen moves. */
static void shadow_write(struct sf_region *r, size_t p, const void *src, uint32_t sgen)
{
    uint64_t w = sf__ps_shadow_lock(&r->ps[p]);
    if (src)
        shadow_copy(shadow_page(r, p), src);
    sf__ps_shadow_unlock(&r->ps[p], w, sgen);
}

/* Brings the shadow of stale page p up to date as content of generation
 * ng (t->lock held, p not GONE) from src, the live page or a copy of it.
 * src NULL: the shadow page holds no memory and the live page reads as
 * zeros, so nothing is copied and the shadow stays unpopulated.  -ENOSPC:
 * no room for the version a live snapshot needs; the page is left stale
 * and the shadow as it was. */
static int refresh_page(sf_tracker *t, struct sf_region *r, size_t p, uint32_t ng, const void *src,
                        const struct sf_live *live)
{
    uint32_t sg = sf__eff_cgen(r, atomic_load(&r->ps[p]));
    if (sg < ng && sf__live_in(live, sg, ng - 1)) {
        struct sf_version *v = sf__store_alloc(t->store);
        if (!v)
            return -ENOSPC;
        memcpy(sf__store_data(t->store, v), shadow_page(r, p), sf_page_size);
        v->lo = sg;
        atomic_store_explicit(&v->hi, ng - 1, memory_order_relaxed);
        v->region = r;
        v->page = p;
        struct sf_version *h = atomic_load(&r->vhead[p]);
        atomic_store_explicit(&v->next, h, memory_order_relaxed);
        atomic_store(&r->vhead[p], v); /* only t->lock holders (and a take's helper, on other pages) push */
        atomic_store(&v->inuse, 1);
        SF_STAT_INC(t, st_copies, 1);
    }
    shadow_write(r, p, src, ng);
    bit_clear_shared(r->mbits, p);
    sf__chunk_maxgen_raise(r, p, ng);
    return 0;
}

/* Pages of [p0, p1) of r (bit i for page p0 + i) whose shadow page must
 * be written even when the live page reads as zeros: those whose shadow
 * page holds memory (it may hold older content), and those resident in
 * live memory (populated: likely written soon, and a take that first
 * touches a shadow page pays the kernel's page allocation and zeroing,
 * several times the copy, so the pre-copy or an earlier take pays it
 * instead).  A live page never written holds a uffd-wp marker, which the
 * kernel reports as swapped, not resident: its content decides, so a
 * sparse range's shadow stays about what was written.  NULL when the
 * shadow query fails (then every stale page is copied); a failed live
 * query leaves only the shadow's bits. */
static uint64_t *holding(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1)
{
    size_t n = p1 - p0, words = (n + 63) >> 6;
    uint64_t *sh = sf__tmp_calloc(words, sizeof(uint64_t));
    if (sh && sf__async_present(t, (uintptr_t)shadow_page(r, p0), n, sh)) {
        sf__tmp_free(sh);
        return NULL;
    }
    uint64_t *lv = sh ? sf__tmp_calloc(words, sizeof(uint64_t)) : NULL;
    if (lv && sf__async_resident(t, (uintptr_t)live_page(r, p0), n, lv) == 0)
        for (size_t i = 0; i < words; i++)
            sh[i] |= lv[i];
    sf__tmp_free(lv);
    return sh;
}

static bool page_is_zero(const char *page)
{
    const uint64_t *w = (const uint64_t *)page;
    for (size_t i = 0; i < sf_page_size / sizeof(uint64_t); i += 8)
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
            return false;
    return true;
}

/* Copies live page src into dst without touching it directly: the
 * pre-copy thread runs beside the program, which may unmap tracked memory
 * it was told not to (an embedder such as the preload cannot see libc's
 * internal munmap of a freed block), and a read of it must not crash the
 * process: sf__os_read_self fails with EFAULT instead.  0, -EFAULT (the page is gone), or -errno when the call is not
 * available (seccomp, an old kernel): then the pre-copy stops. */
static int live_read(void *dst, const void *src)
{
    ssize_t n = sf__os_read_self(dst, src, sf_page_size);
    if (n == (ssize_t)sf_page_size)
        return 0;
    return n < 0 && errno != EFAULT ? -errno : -EFAULT;
}

/* ------------------------------------------------------------------------
 * Copy helper.  One work descriptor per tracker; a round k is posted by
 * the take (state = k << 2 | CW_POSTED, then go = k and a wake).  The
 * helper claims it (CW_RUNNING), copies, and marks it CW_DONE; the take,
 * once its own share is done, either closes a round never claimed
 * (CW_CLOSED: the helper will not touch it) or waits for CW_DONE.  So the
 * descriptor is never read by the helper outside a round it claimed.
 * ------------------------------------------------------------------------ */
enum { CW_POSTED, CW_RUNNING, CW_CLOSED, CW_DONE };

struct sf_copy_work {
    _Atomic int go;    /* futex: the latest round posted */
    _Atomic int state; /* futex: round << 2 | CW_* */
    _Atomic int stop;
    _Atomic int exempt; /* the helper is exempt from world stops (else unused:
                           woken inside a stop it would run as a thread counted
                           asleep, and the take would be done again) */
    /* the round's pages, written before it is posted */
    struct sf_region *r;
    const size_t *pages;
    size_t n, p0;
    uint32_t ng;
    const uint64_t *hold;
    const struct sf_live *live;
    _Atomic size_t next;
    _Atomic int err;
    _Atomic long copied;
    uint64_t posted_ns, started_ns;
    /* what the take measured (t->lock holders only): ns per page copied
     * by one thread and the helper's wake latency, moving averages; 0
     * until measured */
    uint64_t page_ns, wake_ns;
    unsigned declined;
};

/* Copies pages of w until none is left or one fails (-ENOSPC); returns
 * how many it refreshed. */
static long copy_share(sf_tracker *t, struct sf_copy_work *w)
{
    enum { STEP = 32, AHEAD = 2 };
    struct sf_region *r = w->r;
    long n = 0;
    for (;;) {
        size_t i0 = atomic_fetch_add_explicit(&w->next, STEP, memory_order_relaxed);
        if (i0 >= w->n || atomic_load_explicit(&w->err, memory_order_relaxed))
            break;
        size_t i1 = i0 + STEP < w->n ? i0 + STEP : w->n;
        for (size_t i = i0; i < i1; i++) {
            size_t p = w->pages[i];
            /* load the page after next while this one is copied */
            if (i + AHEAD < i1) {
                const char *nx = live_page(r, w->pages[i + AHEAD]);
                for (size_t o = 0; o < 256; o += 64)
                    __builtin_prefetch(nx + o);
                __builtin_prefetch(&r->ps[w->pages[i + AHEAD]], 1);
            }
            if (sf__page_gone(r, p)) {
                bit_clear_shared(r->mbits, p);
                continue;
            }
            const void *src = live_page(r, p);
            /* A write racing the zero check shows in the next scan. */
            if (w->hold && !bit_test(w->hold, p - w->p0) && page_is_zero(src))
                src = NULL;
            if (refresh_page(t, r, p, w->ng, src, w->live)) {
                atomic_store(&w->err, -ENOSPC);
                break;
            }
            n++;
        }
    }
    return n;
}

static void *cp_main(void *arg)
{
    sf_tracker *t = arg;
    struct sf_copy_work *w = t->cp;
    atomic_store(&w->exempt, sf__stop_exempt_self());
    int seen = atomic_load(&w->go);
    while (!atomic_load(&w->stop)) {
        int g = atomic_load(&w->go);
        if (g == seen) {
            sf__os_futex_wait(&w->go, seen, NULL);
            continue;
        }
        seen = g;
        int s = (int)((unsigned)g << 2 | CW_POSTED);
        if (!atomic_compare_exchange_strong(&w->state, &s, (int)((unsigned)g << 2 | CW_RUNNING)))
            continue; /* closed by the take, which did it all */
        w->started_ns = sf__now_ns();
        atomic_fetch_add(&w->copied, copy_share(t, w));
        atomic_store(&w->state, (int)((unsigned)g << 2 | CW_DONE));
        sf__os_futex_wake(&w->state, 1);
    }
    return NULL;
}

/* Started with the pre-copy thread (t->lock held, signals blocked). */
static void cp_start(sf_tracker *t)
{
    if (t->cp_started)
        return;
    struct sf_copy_work *w = sf__os_calloc(1, sizeof(*w));
    if (!w)
        return;
    t->cp = w;
    t->cp_started = sf__exempt_thread_create(&t->cp_thread, NULL, cp_main, t) == 0;
    if (!t->cp_started) {
        t->cp = NULL;
        sf__os_free(w);
    }
}

static void cp_stop(sf_tracker *t)
{
    if (!t->cp_started)
        return;
    atomic_store(&t->cp->stop, 1);
    atomic_fetch_add(&t->cp->go, 1);
    sf__os_futex_wake(&t->cp->go, 1);
    sf__os_thread_join(t->cp_thread, NULL);
    t->cp_started = false;
    sf__os_free(t->cp);
    t->cp = NULL;
}

/* Whether sharing n pages with the helper pays, from this machine's
 * measured costs: half the copying saved must beat the wake twice over.
 * Unmeasured: try it (n >= 64: a wake of tens of microseconds cannot cost
 * much more than the copy).  Declined, every 64th time it is tried anyway,
 * so that a wake measured on a busy moment does not decide for ever. */
static bool cp_worth(sf_tracker *t, size_t n)
{
    struct sf_copy_work *w = t->cp;
    if (!w || n < 64 || sf__forked(t) || !atomic_load(&w->exempt))
        return false;
    if (!w->page_ns || !w->wake_ns)
        return true;
    if ((uint64_t)n * w->page_ns > 4 * w->wake_ns)
        return true;
    return (++w->declined & 63) == 0; /* the wake measured again now and then */
}

static uint64_t ewma(uint64_t old, uint64_t x)
{
    return old ? (3 * old + x) / 4 : x;
}

/* Posts w's next round to the helper; returns the round. */
static int cp_post(struct sf_copy_work *w)
{
    int k = atomic_load(&w->go) + 1;
    if (k == 0 || (unsigned)k >= 1u << 29)
        k = 1; /* rounds wrap well inside the state word */
    w->started_ns = 0;
    w->posted_ns = sf__now_ns();
    atomic_store(&w->state, (int)((unsigned)k << 2 | CW_POSTED));
    atomic_store(&w->go, k);
    sf__os_futex_wake(&w->go, 1);
    return k;
}

/* Ends round k once the caller's own share is done: true when the helper
 * did its part, false when it never claimed the round (then it never
 * will, and the caller does what is left).  Measures the wake. */
static bool cp_finish(struct sf_copy_work *w, int k)
{
    int s = (int)((unsigned)k << 2 | CW_POSTED);
    if (atomic_compare_exchange_strong(&w->state, &s, (int)((unsigned)k << 2 | CW_CLOSED))) {
        /* never claimed: the wake took longer than the caller's share */
        w->wake_ns = ewma(w->wake_ns, sf__now_ns() - w->posted_ns);
        return false;
    }
    /* its last pages are in flight: a short spin, then sleep */
    int spins = 0;
    while ((s = atomic_load(&w->state)) == (int)((unsigned)k << 2 | CW_RUNNING)) {
        if (++spins < 2000)
            sf__cpu_relax();
        else
            sf__os_futex_wait(&w->state, s, NULL);
    }
    w->wake_ns = ewma(w->wake_ns, w->started_ns - w->posted_ns);
    return true;
}

/* Refreshes pages[0, n) of r (a take: t->lock held, writers stopped),
 * shared with the helper when that pays.  Returns the pages copied or
 * -ENOSPC. */
static long copy_pages(sf_tracker *t, struct sf_region *r, const size_t *pages, size_t n, size_t p0,
                       uint32_t ng, const uint64_t *hold, const struct sf_live *live)
{
    struct sf_copy_work local = {0}, *w = cp_worth(t, n) ? t->cp : &local;
    bool duo = w != &local;
    w->r = r;
    w->pages = pages;
    w->n = n;
    w->p0 = p0;
    w->ng = ng;
    w->hold = hold;
    w->live = live;
    atomic_store(&w->next, 0);
    atomic_store(&w->err, 0);
    atomic_store(&w->copied, 0);
    int k = duo ? cp_post(w) : 0;
    uint64_t t0 = sf__now_ns();
    long mine = copy_share(t, w);
    uint64_t busy = sf__now_ns() - t0;
    bool helped = duo && cp_finish(w, k);
    if (t->cp && mine >= 16)
        t->cp->page_ns = ewma(t->cp->page_ns, busy / (uint64_t)mine);
    int err = atomic_load(&w->err);
    long total = mine + (helped ? atomic_load(&w->copied) : 0);
    return err ? err : total;
}

/* Refreshes the stale pages of [p0, p1) of r (scanned just before).
 * strict (a take, which the caller serializes with the program's mapping
 * changes): reads live memory directly and returns -ENOSPC after the
 * first failure.  Else (the pre-copy thread) each live page is read with
 * live_read into bounce, page-sized; a page that is gone stays stale.
 * Returns the pages copied, or -errno of live_read when it cannot work. */
static long refresh_range(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1, uint32_t ng,
                          bool strict, void *bounce)
{
    long n = 0;
    struct sf_live live;
    sf__live_read(t, &live);
    size_t stale = 0;
    for (size_t wi = p0 >> 6; wi < (p1 + 63) >> 6; wi++)
        stale += (size_t)__builtin_popcountll(r->mbits[wi]);
    /* Many stale pages (a shadow not filled yet): one query tells which
     * shadow pages are still empty, so that zero pages (never written) do
     * not populate the shadow.  For a few pages it is not worth a walk. */
    uint64_t *hold = stale > (p1 - p0) / 16 ? holding(t, r, p0, p1) : NULL;
    /* The stale pages go in blocks: a take (strict: it reads live memory
     * directly) copies each block with the helper when that pays,
     * prefetching ahead, so scattered pages are copied at the latency of
     * their first loads, not one after another. */
    enum { BLOCK = 2048 };
    size_t block[BLOCK], next = p0;
    for (;;) {
        /* Pages a block handled are cleared or left stale behind next. */
        size_t nb = 0;
        for (size_t p = sf__bits_next(r->mbits, next, p1, true); p < p1 && nb < (strict ? BLOCK : 64);
             p = sf__bits_next(r->mbits, p + 1, p1, true))
            next = (block[nb++] = p) + 1;
        if (!nb)
            break;
        if (strict) {
            long c = copy_pages(t, r, block, nb, p0, ng, hold, &live);
            if (c < 0) {
                sf__tmp_free(hold);
                return c;
            }
            n += c;
            continue;
        }
        /* The pre-copy thread: each live page through live_read. */
        for (size_t bi = 0; bi < nb; bi++) {
            size_t p = block[bi];
            if (sf__page_gone(r, p)) {
                bit_clear(r->mbits, p);
                continue;
            }
            int e = live_read(bounce, live_page(r, p));
            if (e == -EFAULT)
                continue;
            if (e) {
                sf__tmp_free(hold);
                return e;
            }
            const void *src = bounce;
            /* A write racing the zero check shows in the next scan. */
            if (hold && !bit_test(hold, p - p0) && page_is_zero(src))
                src = NULL;
            if (refresh_page(t, r, p, ng, src, &live) == 0)
                n++;
        }
    }
    sf__tmp_free(hold);
    return n;
}

/* ------------------------------------------------------------------------
 * Pre-copy thread.
 * ------------------------------------------------------------------------ */

/* The next stretch of pre-copy work (t->lock held): a region whose cursor
 * has not reached its end. */
static struct sf_region *pc_next_region(sf_tracker *t)
{
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    struct sf_region *found = NULL;
    for (size_t i = 0; rs && i < n && !found; i++)
        if (rs[i]->mbits && rs[i]->pc_next < rs[i]->npages)
            found = rs[i];
    sf__os_free(rs);
    return found;
}

static void *pc_main(void *arg)
{
    sf_tracker *t = arg;
    void *bounce = sf__os_malloc(sf_page_size);
    if (!bounce)
        return NULL; /* no pre-copy: the takes copy */
    pthread_mutex_lock(&t->lock);
    while (!atomic_load(&t->pc_stop)) {
        struct sf_region *r = pc_next_region(t);
        if (!r) {
            pthread_cond_wait(&t->pc_cond, &t->lock);
            continue;
        }
        size_t p0 = r->pc_next, p1 = p0 + PC_CHUNK_PAGES < r->npages ? p0 + PC_CHUNK_PAGES : r->npages;
        /* Writes before this scan are in mbits after it; a write after it
         * is reported by the next scan (take, collect or restore). */
        if (sf__async_sync_range(t, r, p0, p1) == 0) {
            long n = refresh_range(t, r, p0, p1, atomic_load(&t->gen), false, bounce);
            if (n > 0)
                SF_STAT_INC(t, st_precopied, (uint64_t)n);
            if (n < 0)
                break; /* no safe way to read live memory here: the takes copy */
        }
        r->pc_next = p1;
        /* Let takes and collects in between chunks. */
        pthread_mutex_unlock(&t->lock);
        sf__os_yield();
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    sf__os_free(bounce);
    return NULL;
}

/* Started lazily by the first sf_track (t->lock held).  Without a thread
 * the takes do all the copying. */
static void pc_start(sf_tracker *t)
{
    if (t->pc_started)
        return;
    sigset_t all, old;
    sigfillset(&all);
    sf__os_sigmask(SIG_BLOCK, &all, &old); /* the program's signals stay its own */
    /* exempt from world stops: a take may wait for t->lock it holds */
    t->pc_started = sf__exempt_thread_create(&t->pc_thread, NULL, pc_main, t) == 0;
    cp_start(t);
    sf__os_sigmask(SIG_SETMASK, &old, NULL);
}

/* ------------------------------------------------------------------------
 * Engine operations.
 * ------------------------------------------------------------------------ */

static int mirror_create(sf_tracker *t)
{
    int err = sf__store_create(t, t->store_limit);
    if (!err)
        pthread_cond_init(&t->pc_cond, NULL);
    return err;
}

static void mirror_destroy(sf_tracker *t)
{
    /* A fork child has no pre-copy thread: the parent's is not ours. */
    if (t->store && t->pc_started && !sf__forked(t)) {
        pthread_mutex_lock(&t->lock);
        atomic_store(&t->pc_stop, 1);
        pthread_cond_broadcast(&t->pc_cond);
        pthread_mutex_unlock(&t->lock);
        sf__os_thread_join(t->pc_thread, NULL);
        t->pc_started = false;
    }
    if (t->store && !sf__forked(t))
        cp_stop(t);
    if (t->store && !sf__forked(t))
        pthread_cond_destroy(&t->pc_cond);
    sf__store_destroy(t);
}

/* A new region gets its shadow (reserved, filled by the pre-copy) and a
 * stale bit per page; pages tracked again after a partial untrack are
 * stale again (their CGEN is the current generation: older snapshots do
 * not hold them). */
static int mirror_attach(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1)
{
    if (!r->shadow) {
        size_t len = r->end - r->start;
        if (t->shadow_counted && sf__store_reserve(t->store, r->npages))
            return -ENOSPC;
        r->mbits = sf__os_calloc((r->npages + 63) >> 6, sizeof(uint64_t));
        void *m = sf__os_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (!r->mbits || m == MAP_FAILED) {
            sf__os_free(r->mbits);
            r->mbits = NULL;
            if (m != MAP_FAILED)
                sf__os_munmap(m, len);
            if (t->shadow_counted)
                sf__store_unreserve(t->store, r->npages);
            return -ENOMEM;
        }
        sf__os_madvise(m, len, MADV_NOHUGEPAGE);
        r->shadow = m;
        r->pc_next = 0;
    }
    sf__bits_set(r->mbits, p0, p1);
    if (p0 < r->pc_next)
        r->pc_next = p0;
    pc_start(t);
    pthread_cond_broadcast(&t->pc_cond);
    return 0;
}

static void mirror_region_fini(sf_tracker *t, struct sf_region *r)
{
    if (!r->shadow)
        return;
    sf__os_munmap(r->shadow, r->end - r->start);
    r->shadow = NULL;
    sf__os_free(r->mbits);
    r->mbits = NULL;
    if (t->shadow_counted && t->store)
        sf__store_unreserve(t->store, r->npages);
}

/* Caller holds t->lock; the writers of tracked memory are stopped (a write
 * racing the copy lands in this snapshot or the next one, page by page). */
static int mirror_take(sf_tracker *t, sf_snapshot *s)
{
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs)
        return -ENOMEM;
    int err = 0;
    for (size_t i = 0; i < n && !err; i++) {
        struct sf_region *r = rs[i];
        if (!r->mbits)
            continue;
        err = sf__async_sync(t, r);
        long c = err ? 0 : refresh_range(t, r, 0, r->npages, s->gen, true, NULL);
        if (c < 0) {
            err = (int)c;
        } else {
            SF_STAT_INC(t, st_take_copied, (uint64_t)c);
            r->pc_next = r->npages; /* the shadow is whole: nothing left to pre-copy */
        }
    }
    sf__tmp_free(rs);
    /* On failure the pages copied so far keep their new content (their
     * old one is in versions where a live snapshot needs it): consistent,
     * and the next take copies the rest. */
    return err;
}

/* Reads the shadow between two identical non-BUSY state words, or the
 * version covering s. */
static int mirror_read_page(const sf_snapshot *s, uintptr_t page_addr, void *buf, size_t off, size_t len)
{
    sf_tracker *t = s->t;
    for (;;) {
        unsigned g = sf__grace_enter();
        struct sf_region *r = sf__region_find(page_addr);
        if (!r || r->t != t || r->track_gen > s->gen || !r->shadow) {
            sf__grace_exit(g);
            return -ENOENT;
        }
        size_t p = (page_addr - r->start) >> sf_page_shift;
        /* A take or pre-copy rewriting the shadow page holds it BUSY. */
        uint64_t w = sf__ps_read_begin(&r->ps[p]);
        if (sf__ps_gone(w)) {
            sf__grace_exit(g);
            return -ENOENT;
        }
        if (sf__eff_cgen(r, w) <= s->gen) {
            memcpy(buf, shadow_page(r, p) + off, len);
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
        return v ? 0 : -ENOENT; /* no version: tracked again after s */
    }
}

/* Protects [p0, p1) of r after restore wrote it.  The scan before the
 * copy recorded every written page as stale and dirty (abits) without
 * protecting it, so that the copy into it takes no fault; writers are
 * stopped, so a span over pages in between loses nothing: what they hold
 * is either protected already or recorded. */
static int rearm(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1)
{
    return sf__uffd_wp(t->uffd, r->start + (p0 << sf_page_shift), (p1 - p0) << sf_page_shift, true, false);
}

/* Pages of r that differ from s: stale now (after a scan) or with a shadow
 * newer than s.  Each is copied back into live memory from the shadow or
 * the version covering s; the shadow takes the version's content (and its
 * sgen), versions newer than s go, the pages are re-armed in spans and
 * recorded as written for sf_collect. */
static long restore_region(sf_tracker *t, struct sf_region *r, uint32_t g, struct vlist *dead,
                           int *errp, bool *changed)
{
    int err = sf__async_note(t, r);
    long restored = 0;
    size_t span0 = SIZE_MAX, span1 = 0;
    for (size_t c = 0; c < r->nchunks && !err; c++) {
        /* A chunk whose shadow is nowhere newer than s differs from s in
         * its stale pages only (its mbits word); else every page is asked. */
        bool newer = atomic_load(&r->chunk_maxgen[c]) > g;
        if (!r->mbits[c] && !newer)
            continue;
        size_t q0 = c << SF_CHUNK_SHIFT, q1 = q0 + SF_CHUNK_PAGES < r->npages ? q0 + SF_CHUNK_PAGES : r->npages;
        uint64_t cand = newer ? (q1 - q0 == 64 ? ~0ull : (1ull << (q1 - q0)) - 1) : r->mbits[c];
        bool touched = false;
        for (; cand && !err; cand &= cand - 1) {
            size_t p = q0 + (size_t)__builtin_ctzll(cand);
            uint64_t w = atomic_load(&r->ps[p]);
            if (sf__ps_gone(w))
                continue;
            uint32_t sg = sf__eff_cgen(r, w);
            bool stale = bit_test(r->mbits, p);
            if (!stale && sg <= g)
                continue;
            struct sf_version *v = NULL;
            if (sg > g && !(v = sf__version_for(r, p, g)))
                continue; /* tracked again after s: left as it is */
            memcpy(live_page(r, p), v ? sf__store_data(t->store, v) : shadow_page(r, p), sf_page_size);
            if (v) {
                shadow_write(r, p, sf__store_data(t->store, v), v->lo);
                /* The shadow holds v now; versions of content newer than
                 * s belonged to snapshots that restore invalidates. */
                for (struct sf_version *x = atomic_load(&r->vhead[p]); x; x = atomic_load(&x->next))
                    if (x == v || x->lo > g) {
                        atomic_store(&x->hi, 0);
                        sf__version_unlink(x);
                        sf__vlist_add(dead, x);
                    }
            }
            bit_clear(r->mbits, p);
            sf__bits_set(r->abits, p, p + 1);
            touched = true;
            *changed = true;
            restored++;
            /* Spans never cross GONE pages (unregistered). */
            if (span0 != SIZE_MAX && (!sf__span_join(t, p - span1) || sf__gone_between(r, span1, p))) {
                err = rearm(t, r, span0, span1);
                span0 = SIZE_MAX;
            }
            if (span0 == SIZE_MAX)
                span0 = p;
            span1 = p + 1;
        }
        /* Only versions put back lower a chunk's max-sgen, and only a
         * chunk newer than s has them; a copy from the shadow keeps sgen. */
        if (touched && newer)
            sf__chunk_maxgen_recompute(r, c);
    }
    if (!err && span0 != SIZE_MAX)
        err = rearm(t, r, span0, span1);
    /* A page left unprotected by a failed re-arm shows as written in the
     * next scan: stale again and dirty again, never lost. */
    *errp = err;
    return restored;
}

static long mirror_restore(sf_snapshot *s, struct vlist *dead, int *err, bool *changed)
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
        if (rs[i]->mbits && rs[i]->track_gen <= s->gen) /* tracked after s: left */
            restored += restore_region(t, rs[i], s->gen, dead, err, changed);
    sf__os_free(rs);
    return restored;
}

static void mirror_release(sf_tracker *t, sf_snapshot *s)
{
    (void)s;
    sf__versions_gc(t); /* waits out readers before freeing */
}

const struct sf_engine_ops sf__engine_mirror = {
    .id = SF_ENGINE_MIRROR,
    .create = mirror_create,
    .destroy = mirror_destroy,
    .attach = mirror_attach,
    .region_fini = mirror_region_fini,
    .take = mirror_take,
    .read_page = mirror_read_page,
    .content_epoch = sf__content_epoch,
    .restore = mirror_restore,
    .release = mirror_release,
};
