/* internal.h - shared internals of libsnapfault: regions, grace periods and
 * the backend contract; the per-page state word is in pagestate.h (included
 * at the end).  See doc/DESIGN.md. */
#ifndef SF_INTERNAL_H
#define SF_INTERNAL_H

#define SNAPFAULT_BUILD 1
#include "snapfault.h"
#include "embed/os.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define SF_INTERNAL __attribute__((visibility("hidden")))
#define SF_LIKELY(x) __builtin_expect(!!(x), 1)
#define SF_UNLIKELY(x) __builtin_expect(!!(x), 0)

extern size_t sf_page_size;  /* set once by sf__init */
extern unsigned sf_page_shift;

/* The per-page state word (PS_*), its queries and transitions: pagestate.h,
 * included at the end of this header. */

/* Chunks summarize 64 pages so that collect, take and restore visit only
 * chunks that changed: their cost follows the pages written, not the size. */
#define SF_CHUNK_SHIFT 6
#define SF_CHUNK_PAGES (1u << SF_CHUNK_SHIFT)
#define CH_DIRTY 1u     /* some page may be DIRTY */
#define CH_WRITABLE 2u  /* some page may be WRITABLE */
/* A take is arming the chunk's WRITABLE pages as a whole (sf__ps_take_chunk
 * in pagestate.c): a heal on one of them gives it back and retries.  Set
 * and cleared by the take around its reads and stores of the chunk. */
#define CH_TAKING 4u

struct sf_version;

/* A tracked range.  Immutable after publication except for the atomics;
 * freed only after a grace period (no fault handler can still see it). */
struct sf_region {
    uintptr_t start, end;           /* page aligned, end exclusive */
    size_t npages, nchunks;
    sf_tracker *t;
    uint32_t track_gen;             /* tracker generation when tracked */
    _Atomic uint64_t *ps;           /* npages state words */
    _Atomic uint32_t *chunk;        /* nchunks CH_* hints */
    _Atomic uint32_t *chunk_maxgen; /* nchunks: max CGEN in the chunk */
    _Atomic(struct sf_version *) *vhead; /* npages version chains (snapshots) */
    size_t meta_bytes;              /* bytes mmap'd for the arrays above */
    void *meta;
    _Atomic int degraded;           /* mprotect: whole region left writable */
    _Atomic size_t gone;            /* pages untracked by partial sf_untrack */
    _Atomic long vmas;              /* mprotect: estimated VMAs inside */
    /* uffd-async: pages the kernel reported written, not yet collected
     * (abits), and, for the mirror engine, pages whose shadow copy is
     * stale (mbits: written since last copied into the shadow).  Every
     * scan sets both.  Collectors only (t->lock). */
    uint64_t *abits;
    uint64_t *mbits;
    char *shadow;                   /* mirror: the region's shadow copy */
    size_t pc_next;                 /* mirror: next page for the pre-copy */
    _Atomic size_t last_fault;      /* sequential-write detection */
    _Atomic unsigned streak;
    struct sf_region *next_free;    /* grace-period reclamation list */
};

/* The process-wide table of regions, sorted by start, published through one
 * atomic pointer; replaced whole on track/untrack. */
struct sf_rtable {
    size_t n;
    struct sf_region *r[];
};

/* ------------------------------------------------------------------------
 * Grace periods (grace.c): readers are fault handlers and snapshot readers;
 * writers publish new tables and free old ones once every reader that could
 * have seen them has left.  Readers never block; async-signal-safe.
 * ------------------------------------------------------------------------ */
unsigned sf__grace_enter(void);
void sf__grace_exit(unsigned token);
void sf__grace_wait(void); /* writer side; not from a signal handler */
void sf__grace_init(void); /* registers the fork-child reset; idempotent */

/* regions.c */
struct sf_region *sf__region_find(uintptr_t addr); /* inside a grace section */
struct sf_rtable *sf__regions_table(void);          /* inside a grace section */
int sf__regions_insert(struct sf_region *r);        /* -EEXIST on overlap */
void sf__regions_remove(struct sf_region *const *rs, size_t n); /* then grace wait */
int sf__regions_overlap(uintptr_t start, uintptr_t end);
struct sf_region *sf__region_new(sf_tracker *t, uintptr_t start, uintptr_t end, bool versions);
void sf__region_free(struct sf_region *r);
size_t sf__regions_of(sf_tracker *t, struct sf_region **out, size_t max); /* sorted */
struct sf_region **sf__regions_list(sf_tracker *t, size_t *n); /* malloc'd; t->lock held */
extern pthread_mutex_t sf__regions_lock; /* writers of the table */
void sf__regions_atfork_child(void);     /* registered by sf__grace_init */

/* ------------------------------------------------------------------------
 * Backends: one file each, one contract.  protect/unprotect work on whole
 * pages inside one region; unprotect is async-signal-safe and never blocks.
 * ------------------------------------------------------------------------ */
struct sf_backend_ops {
    sf_backend id;
    /* per tracker set-up and tear-down */
    int (*open)(sf_tracker *t);
    void (*close)(sf_tracker *t);
    /* start/stop tracking [a, e) of region r (all of it, or the part a
     * partial untrack gives back / sf_track revives): after attach every
     * page of [a, e) is armed, after detach plain writable memory */
    int (*attach)(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e);
    void (*detach)(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e);
    /* sync backends (state machine in pagestate.h) */
    int (*protect)(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len);
    int (*unprotect)(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len);
    /* kernel-tracked backends: collect one region, emitting runs */
    int (*collect)(sf_tracker *t, struct sf_region *r, unsigned flags,
                   int (*emit)(sf_tracker *t, uintptr_t a, size_t len, void *ctx), void *ctx);
    /* whole-process reset after every region was collected (soft-dirty) */
    int (*reset_all)(sf_tracker *t);
};

extern const struct sf_backend_ops sf__backend_uffd_async;
extern const struct sf_backend_ops sf__backend_uffd_sync;
extern const struct sf_backend_ops sf__backend_mprotect;
extern const struct sf_backend_ops sf__backend_softdirty;

struct sf_snapshot_slot; /* snapshot.c */
struct sf_store;         /* store.c */
struct sf_engine_ops;    /* snapshot.h */

/* Openings in flight at once, at most: one per handler thread and one
 * for the holder of the tracker's lock (restore), with room to spare. */
#define SF_RES_SLOTS 16

struct sf_tracker {
    const struct sf_backend_ops *ops;
    sf_backend backend;
    sf_fault_mode fault_mode;
    unsigned flags;
    pid_t pid;                 /* owner; a forked child sees a different pid */
    pthread_mutex_t lock;      /* serializes collect/track/take/restore */

    /* uffd backends */
    int uffd;
    int pagemap_fd;
    unsigned nthreads;
    pthread_t threads[8];
    int wake_pipe[2];
    _Atomic int stopping;
    /* One handler thread at a time waits on the uffd (spinning or in
     * poll): the watcher; the others sleep on this word (a futex) until it
     * hands over.  0 free, 1 held, 2 stopped. */
    _Atomic int watcher;
    _Atomic int waiters;       /* threads sleeping on watcher */
    struct sf_wait_policy {    /* the watcher's only (backend_uffd_sync.c) */
        uint64_t last;         /* when the previous message was read */
        unsigned phase, n, left;
        bool spin;
        uint64_t spin_ns;
        uint64_t sample[2][16];
    } wp;

    /* snapshots (snapshot.c) */
    _Atomic uint32_t gen;      /* current content generation C */
    struct sf_snapshot *snaps[SF_MAX_SNAPSHOTS];
    _Atomic uint32_t live_gen[SF_MAX_SNAPSHOTS]; /* gen of live slot, 0 = free */
    _Atomic int failed_slot[SF_MAX_SNAPSHOTS];
    const struct sf_engine_ops *engine; /* NULL: no snapshots */
    struct sf_store *store;
    size_t store_limit;
    bool shadow_counted;       /* mirror: the shadow counts against store_limit */
    bool exact;                /* no clustering of neighbour pages */
    /* mirror engine: the pre-copy thread (snapshot_mirror.c) */
    pthread_t pc_thread;
    bool pc_started;
    _Atomic int pc_stop;
    pthread_cond_t pc_cond;    /* with t->lock: new pre-copy work or stop */
    /* mirror engine: the copy helper, which shares a take's copying
     * (snapshot_mirror.c, "Copy helper") */
    pthread_t cp_thread;
    bool cp_started;
    struct sf_copy_work *cp;   /* the one work descriptor, NULL without helper */
    _Atomic int take_failed;   /* a take could not protect some page */
    _Atomic uint64_t rearm_seq; /* bumped by every walk that protects pages */
    _Atomic uint32_t res_seq;   /* handler threads: openings' sequences taken */

    /* statistics (relaxed atomics) */
    _Atomic uint64_t st_faults, st_spurious, st_unprot, st_collects, st_collected,
        st_degraded, st_copies, st_shared, st_failed, st_take_copied, st_precopied,
        st_protects;
    /* SF_OPT_STOP_THREADS: world stops of takes (stop.c) */
    _Atomic uint64_t st_stops, st_stop_last, st_stop_max, st_stop_total, st_stop_retries,
        st_stop_fallbacks, st_stop_inexact, st_stop_timeouts, st_stop_signalled, st_stop_asleep;
    _Atomic uint64_t st_stop_hist[SF_STOP_HIST_BUCKETS];
    _Atomic long vma_estimate;
    long vma_budget;
    /* Handler threads: the openings in flight (between their sequence and
     * their wake): a lower bound of each one's sequence, 0 for a free
     * slot.  Last, away from the fields takes and collects use. */
    _Atomic uint32_t res_open[SF_RES_SLOTS];
};

/* backend_uffd_sync.c: sf__embed_unseen_writes for a uffd-sync tracker. */
struct sf_embed_span;
long sf__sync_unseen_writes(sf_tracker *t, struct sf_embed_span *out, size_t max);

/* fault.c */
int sf__signals_install(void);                   /* idempotent */
/* Installs snapfault's handler, or puts it back in front of one that
 * replaced it (which becomes the forwarded handler); called by every call
 * that protects memory.  Two sigaction() reads when nothing changed. */
int sf__signals_ensure(void);
/* The embedding's fault hook (sf_embed.h): called first by the entry; true
 * when it dealt with the fault.  Registered, the process is embedded. */
typedef bool (*sf_fault_hook)(int sig, siginfo_t *si, void *uc);
void sf__signals_set_hook(sf_fault_hook hook);
/* The program's sigaction for SIGSEGV/SIGBUS once snapfault's handler is
 * installed (sf_sigaction, the preload's interposers). */
int sf__chain_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
/* A region is about to leave the table (caller holds sf__regions_lock). */
void sf__signals_note_removed(uintptr_t start, uintptr_t end);
/* RETRY: the instruction runs again (the page is being resolved by
 * another thread); HEALED: snapfault re-opened a page its state says is
 * writable, or found it untracked — repeated at one address, the
 * protection is not snapfault's and the fault is forwarded. */
enum { SF_RESOLVED = 0, SF_RETRY = 1, SF_NOT_OURS = 2, SF_HEALED = 3 };
/* Resolves a write fault at addr in r (grace section held by caller).
 * since: NULL for a fault delivered now (a signal in the faulting thread);
 * for a uffd message, sf__rseq_mark(t) as it was before the read that returned
 * it, so that a message made stale by a resolution since is recognised. */
int sf__resolve(struct sf_region *r, uintptr_t addr, const uint32_t *since);

/* tracker.c */
/* What a sync collect does to the pages it visits. */
enum sf_walk { SF_WALK_GET, SF_WALK_RESET, SF_WALK_TAKE };
/* emit returns 0 to go on, 1 to stop (pages not yet visited stay dirty),
 * or -errno. */
typedef int (*sf_emit_fn)(sf_tracker *t, uintptr_t a, size_t len, void *ctx);
int sf__collect_sync(sf_tracker *t, struct sf_region *r, enum sf_walk mode, sf_emit_fn emit,
                     void *ctx);

/* snapshot.c: copies (or shares) the content of page before its first
 * write in the current generation.  Async-signal-safe. */
void sf__snapshot_save(struct sf_region *r, size_t page, uint64_t w, uint32_t C);
bool sf__snapshot_needs_save(sf_tracker *t, uint32_t cgen);
void sf__snapshots_destroy(sf_tracker *t);
void sf__versions_drop_region(struct sf_region *r);
void sf__versions_drop_range(struct sf_region *r, uintptr_t start, uintptr_t end);

/* store.c: the page store, a fixed arena of page-sized slots with a
 * lock-free free list; allocation is async-signal-safe. */
int sf__store_create(sf_tracker *t, size_t limit);
void sf__store_destroy(sf_tracker *t);
void sf__store_stats(const sf_tracker *t, uint64_t *bytes);

/* backend_uffd_async.c: moves what the kernel marked written into the
 * region's bitmaps (and re-arms it); the range form scans pages [p0, p1)
 * only.  Both skip GONE pages.  Collector side (t->lock). */
int sf__async_sync(sf_tracker *t, struct sf_region *r);
int sf__async_sync_range(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1);
/* The same without re-arming: the written pages stay writable (and are
 * reported again by the next scan) until the caller protects them. */
int sf__async_note(sf_tracker *t, struct sf_region *r);
int sf__async_present(sf_tracker *t, uintptr_t start, size_t npages, uint64_t *bits);
int sf__async_resident(sf_tracker *t, uintptr_t start, size_t npages, uint64_t *bits);
/* Bitmaps of pages, bit p of word p / 64: word-wise range operations and
 * searches (a collect of 10% scattered pages of 1 GiB walks 4,096 words,
 * not 262,144 bits). */
static inline uint64_t sf__bits_mask(size_t lo, size_t hi) /* bits [lo, hi) of a word, hi <= 64 */
{
    return (hi - lo == 64 ? ~0ull : ((1ull << (hi - lo)) - 1)) << lo;
}

static inline void sf__bits_set(uint64_t *b, size_t p0, size_t p1)
{
    while (p0 < p1) {
        size_t w = p0 >> 6, lo = p0 & 63, hi = (p1 - (w << 6)) < 64 ? p1 - (w << 6) : 64;
        b[w] |= sf__bits_mask(lo, hi);
        p0 = (w << 6) + hi;
    }
}

static inline void sf__bits_clear(uint64_t *b, size_t p0, size_t p1)
{
    while (p0 < p1) {
        size_t w = p0 >> 6, lo = p0 & 63, hi = (p1 - (w << 6)) < 64 ? p1 - (w << 6) : 64;
        b[w] &= ~sf__bits_mask(lo, hi);
        p0 = (w << 6) + hi;
    }
}

/* The first page >= p in [p, n) whose bit is set (want) or clear (!want);
 * n when none. */
static inline size_t sf__bits_next(const uint64_t *b, size_t p, size_t n, bool want)
{
    while (p < n) {
        size_t w = p >> 6;
        uint64_t x = (want ? b[w] : ~b[w]) & (~0ull << (p & 63));
        if (x) {
            size_t q = (w << 6) + (size_t)__builtin_ctzll(x);
            return q < n ? q : n;
        }
        p = (w + 1) << 6;
    }
    return n;
}

/* snapshot.c: the engine a tracker with these options and backend uses
 * (NULL without SF_OPT_SNAPSHOTS), or an error pointer's -errno in *err. */
const struct sf_engine_ops *sf__engine_for(sf_engine e, sf_backend b, int *err);
/* snapshot.c: engine hooks the tracker calls (no-ops without an engine) */
int sf__engine_attach(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1);
void sf__engine_region_fini(sf_tracker *t, struct sf_region *r);
void sf__engine_destroy(sf_tracker *t);

/* stop.c: the library's own threads (the mirror's pre-copy and copy-helper threads,
 * uffd-sync handler threads, an embedding's background thread) are never
 * stopped by a world stop (SF_OPT_STOP_THREADS): a take may need them.  The
 * thread registers itself at start and deregisters before it exits.
 * Lock-free, async-signal-safe. */
void sf__stop_exempt_add(void);
void sf__stop_exempt_remove(void);
/* Whether the calling thread is registered (the table holds 64: past
 * that a library thread is stopped like the program's). */
bool sf__stop_exempt_self(void);
/* pthread_create for such a thread: exempt from its start to its end
 * (returns once it is registered). */
int sf__exempt_thread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);

/* probe.c */
int sf__probe_cached(const sf_caps **out);

/* uffd.c */
int sf__uffd_open(bool kernel_faults, uint64_t features, uint64_t *got_features);
int sf__uffd_register_wp(int uffd, uintptr_t addr, size_t len);
int sf__uffd_unregister(int uffd, uintptr_t addr, size_t len);
int sf__uffd_wp(int uffd, uintptr_t addr, size_t len, bool protect, bool wake);

/* util.c */
void sf__init(void);
long sf__read_long_file(const char *path, long dflt);
long sf__count_maps(void);
void sf__debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void sf__cpu_relax(void) { __builtin_ia32_pause(); }
/* CLOCK_MONOTONIC in ns. */
static inline uint64_t sf__now_ns(void)
{
    struct timespec ts;
    sf__os_clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A forked child sees a different pid: trackers inherited from the parent
 * answer -ECHILD there and never touch its uffd. */
static inline bool sf__forked(const sf_tracker *t)
{
    return t->pid != sf__os_getpid();
}

/* The one batching decision (cost.c): whether the next run, gap pages past
 * the end of the current span, joins that span (one protect call over the
 * gap) or starts a new one.  Every re-arming walk asks here; the answer
 * follows protect costs measured once per process (gap * per-PTE cost <
 * one call's cost), or SNAPFAULT_SPAN_GAP.  Collector side. */
bool sf__span_join(const sf_tracker *t, size_t gap);
/* The largest gap sf__span_join joins for t's backend. */
size_t sf__span_gap(const sf_tracker *t);
/* The largest gap with gap * pte_ns < call_ns (0 when call_ns is unknown,
 * at most SF_SPAN_GAP_MAX).  Pure. */
size_t sf__cost_gap(double call_ns, double pte_ns);
/* A span scans the page states of its gaps (mprotect's VMA estimate): a
 * bound on the gap even where the kernel's cost per gap page is ~0. */
#define SF_SPAN_GAP_MAX ((size_t)4096)
enum sf_cost_mech { SF_COST_UFFD, SF_COST_MPROTECT };
/* Measures the protect costs of each mechanism on scratch memory and sets
 * the gaps (probe.c, once); fills the cost fields of c. */
void sf__cost_probe(sf_caps *c);
/* Sets the costs of one mechanism (tests inject them here). */
void sf__cost_set(enum sf_cost_mech m, double call_ns, double pte_ns);

#define SF_STAT_INC(t, f, n) atomic_fetch_add_explicit(&(t)->f, (n), memory_order_relaxed)

/* The page-state machine needs the types above. */
#include "pagestate.h"

#endif
