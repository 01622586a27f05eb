/* snapfault.h - dirty-page tracking and copy-on-write snapshots of a
 * process's own memory, in userspace, without mmap_lock stalls.
 *
 * This is the one public header of libsnapfault.  Every function returns 0
 * (or a count) on success and a negative errno on failure, never aborts and
 * never prints.  Each function states:
 *
 *   - Thread-safety: what may run concurrently with it.
 *   - Signal-safety: "async-signal-safe" means it may be called from a signal
 *     handler; everything else must not be.
 *
 * Synchronization table (liburcu style).  "serialized" means snapfault
 * orders the calls itself with a per-tracker mutex; "caller" means the
 * caller must not run the two concurrently.
 *
 *                      | writes to  | collect | track/  | snapshot | snapshot | snapshot
 *                      | memory     |         | untrack | take     | read     | restore
 *   -------------------+------------+---------+---------+----------+----------+---------
 *   writes to memory   | ok         | ok      | ok (1)  | ok (2)   | ok       | caller
 *   collect            | ok         | serial. | serial. | serial.  | ok       | serial.
 *   track/untrack      | ok (1)     | serial. | serial. | serial.  | ok       | serial.
 *   snapshot take      | ok (2)     | serial. | serial. | serial.  | ok       | serial.
 *   snapshot read      | ok         | ok      | ok      | ok       | ok       | caller
 *   snapshot restore   | caller     | serial. | serial. | serial.  | caller   | serial.
 *
 *   (1) writes to a range being untracked may land untracked; writes to a
 *       range being tracked are tracked once sf_track has returned.
 *   (2) each page is captured atomically at some instant during the take;
 *       for one instant for all pages, stop the threads that write the
 *       tracked memory for the duration of sf_snapshot_take (its pause is the
 *       cost bench/ measures as the take time), or create the tracker with
 *       SF_OPT_STOP_THREADS, which does it (see sf_snapshot_take).  Mirror engine: a write racing
 *       the take's copy is resolved by the kernel at once (never blocked);
 *       its page lands in this snapshot or is written after it, page by
 *       page, and is always seen by the next take and collect.
 *
 * Faults taken on tracked memory are resolved lock-free: a fault never waits
 * for a collect, a take or a track, and those never wait for faults except
 * to let one page finish.
 */
#ifndef SNAPFAULT_H
#define SNAPFAULT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SNAPFAULT_BUILD)
#define SF_API __attribute__((visibility("default")))
#else
#define SF_API
#endif

/* SF_VERSION_MAJOR, SF_VERSION_MINOR, SF_VERSION_PATCH and SF_VERSION_STRING,
 * generated from the version in meson.build (its one source). */
#include "snapfault-version.h"

/* ------------------------------------------------------------------------ */
/* Trackers and backends                                                    */
/* ------------------------------------------------------------------------ */

typedef struct sf_tracker sf_tracker;

typedef enum {
    SF_BACKEND_AUTO = 0,
    SF_BACKEND_UFFD_ASYNC, /* kernel-resolved uffd-wp + PAGEMAP_SCAN; with
                              SF_OPT_SNAPSHOTS: the mirror engine (see sf_engine) */
    SF_BACKEND_UFFD_SYNC,  /* uffd-wp faults resolved by snapfault (in-thread or handler thread) */
    SF_BACKEND_MPROTECT,   /* mprotect + SIGSEGV, any kernel */
    SF_BACKEND_SOFTDIRTY,  /* /proc/self/clear_refs + pagemap bit 55 */
} sf_backend;
#define SF_BACKEND_COUNT 5

/* Snapshot engines: how a snapshot holds the content it must keep.
 *   COW     copy-on-write (uffd-sync, mprotect): the first write to a page
 *           after a take faults into snapfault, which copies the page first.
 *           Memory: only the pages written while snapshots live.  A write
 *           after a take costs a fault plus a page copy.
 *   MIRROR  uffd-async (kernel-resolved write protection, no fault path):
 *           a shadow copy of tracked memory, filled in the background from
 *           sf_track on and brought up to date by each take with the pages
 *           written since the previous take; the old shadow content a live
 *           snapshot still needs is kept as page versions.  Memory: one
 *           shadow the size of tracked memory plus the versions.  Writes
 *           cost nothing but the kernel's first-write fault per take.
 * See sf_options.engine and SF_OPT_LOW_MEMORY for how AUTO chooses. */
typedef enum {
    SF_ENGINE_AUTO = 0,
    SF_ENGINE_COW,
    SF_ENGINE_MIRROR,
} sf_engine;
#define SF_ENGINE_COUNT 3

/* "auto", "cow", "mirror"; NULL for an unknown value.  Thread-safe,
 * async-signal-safe. */
SF_API const char *sf_engine_name(sf_engine e);

/* sf_options.flags */
#define SF_OPT_SNAPSHOTS       (1u << 0) /* the tracker must support sf_snapshot_take */
#define SF_OPT_INTHREAD_FAULTS (1u << 1) /* uffd-sync: resolve faults in the faulting
                                            thread (SIGBUS); kernel writes into
                                            protected pages then fail with EFAULT */
#define SF_OPT_HANDLER_THREADS (1u << 2) /* uffd-sync: insist on handler threads
                                            (kernel writes tracked); -ENOTSUP if the
                                            process may not open such a uffd */
#define SF_OPT_KERNEL_WRITES   (1u << 3) /* fail sf_tracker_create with -ENOTSUP unless
                                            read(2) into tracked memory works */
#define SF_OPT_CLUSTER         (1u << 4) /* sync backends: on sequential writes, unprotect
                                            a cluster of following pages per fault
                                            (default with SF_OPT_SNAPSHOTS); sf_collect
                                            may then report unwritten neighbours */
#define SF_OPT_EXACT           (1u << 5) /* never cluster: sf_collect reports exactly the
                                            written pages (default without snapshots) */
#define SF_OPT_LOW_MEMORY      (1u << 8) /* with SF_OPT_SNAPSHOTS and AUTO: prefer the COW
                                            engine (memory for written pages only) over
                                            the mirror (a shadow of all tracked memory);
                                            -ENOTSUP with an explicit uffd-async backend,
                                            -EINVAL with SF_ENGINE_MIRROR */
#define SF_OPT_STOP_THREADS    (1u << 9) /* with SF_OPT_SNAPSHOTS: every sf_snapshot_take
                                            stops the process's other threads for the
                                            take, so the snapshot is one instant across
                                            threads (see "World stop" below); -EINVAL
                                            without SF_OPT_SNAPSHOTS */

typedef struct {
    sf_backend backend;   /* SF_BACKEND_AUTO: best this process can use */
    unsigned flags;       /* SF_OPT_* */
    size_t store_limit;   /* bytes of page copies snapshots may hold; 0 = default
                             (SF_DEFAULT_STORE_LIMIT); mirror: see below */
    unsigned handler_threads; /* uffd-sync handler threads; 0 = default (2) */
    sf_engine engine;     /* with SF_OPT_SNAPSHOTS: SF_ENGINE_AUTO (the policy below),
                             SF_ENGINE_COW or SF_ENGINE_MIRROR */
} sf_options;
/* Engines, backends and memory.  The engine follows the backend: COW runs on
 * uffd-sync and mprotect, MIRROR on uffd-async (soft-dirty has no snapshots).
 * An explicit engine with a backend that cannot run it: -ENOTSUP.
 *
 * AUTO with SF_OPT_SNAPSHOTS picks MIRROR (backend uffd-async) when the
 * kernel has WP_ASYNC and PAGEMAP_SCAN (sf_caps.auto_engine says), unless
 * SF_OPT_LOW_MEMORY is set; else COW on the best sync backend.  Choose:
 *   MIRROR  takes and restores cost the pages written since the previous
 *           take / since the snapshot, writes cost only the kernel's
 *           first-write fault, reads and images never touch live memory
 *           (a background image costs the program nothing but bandwidth);
 *           memory: a shadow as large as the tracked memory (filled in the
 *           background from sf_track on) plus the versions live snapshots
 *           need.  read(2) into tracked memory works unprivileged.
 *   COW     memory: only the pages written while snapshots live; each first
 *           write to a page after a take costs a fault and a page copy.
 *
 * store_limit: COW: the page copies snapshots may hold.  MIRROR with an
 * explicit store_limit: shadow plus versions (an sf_track whose shadow would
 * pass it fails with -ENOSPC; a take whose versions would pass it fails with
 * -ENOSPC); MIRROR with store_limit 0: the versions may hold
 * SF_DEFAULT_STORE_LIMIT and the shadow is not counted, so the default never
 * refuses to track memory larger than 1 GiB. */
#define SF_DEFAULT_STORE_LIMIT ((size_t)1 << 30)

/* How uffd-sync delivers faults; visible in sf_probe and sf_stats. */
typedef enum {
    SF_FAULTS_NONE = 0,      /* backend has no userspace fault path (uffd-async, soft-dirty) */
    SF_FAULTS_SIGNAL,        /* SIGSEGV in the faulting thread (mprotect) */
    SF_FAULTS_INTHREAD,      /* uffd-sync: SIGBUS in the faulting thread */
    SF_FAULTS_HANDLER_THREAD /* uffd-sync: handler threads read the uffd */
} sf_fault_mode;

/* Creates a tracker.  opt NULL means all defaults (AUTO, tracking only).
 * -EINVAL: bad backend or flags; -ENOTSUP: the requested backend (or, with
 * AUTO, any backend meeting the flags) cannot work here, sf_probe says why;
 * -ENOMEM.  Thread-safe.  Not async-signal-safe. */
SF_API int sf_tracker_create(sf_tracker **out, const sf_options *opt);

/* Untracks every range (memory is left writable), releases every snapshot
 * still held and frees the tracker.  NULL is a no-op.  Must not run
 * concurrently with any other call on the same tracker.  Not
 * async-signal-safe. */
SF_API void sf_tracker_destroy(sf_tracker *t);

/* The backend in use (never SF_BACKEND_AUTO); SF_BACKEND_AUTO for NULL.
 * Thread-safe, async-signal-safe. */
SF_API sf_backend sf_tracker_backend(const sf_tracker *t);

/* "uffd-async", "uffd-sync", "mprotect", "soft-dirty", "auto"; NULL for an
 * unknown value.  Thread-safe, async-signal-safe. */
SF_API const char *sf_backend_name(sf_backend b);

/* Parses a name as returned by sf_backend_name (also "uffd_async" etc.).
 * Returns the backend or -EINVAL.  Thread-safe, async-signal-safe. */
SF_API int sf_backend_parse(const char *name);

/* How faults are delivered for this tracker.  Thread-safe, async-signal-safe. */
SF_API sf_fault_mode sf_tracker_fault_mode(const sf_tracker *t);
SF_API const char *sf_fault_mode_name(sf_fault_mode m);

/* Starts tracking [addr, addr+len): page-aligned, non-zero, mapped private
 * anonymous memory (uffd backends) or any private writable mapping
 * (mprotect).  Every page, including pages never touched yet, counts as
 * clean from now on.  -EINVAL: NULL/unaligned/zero length/wrapping;
 * -EFAULT: some page of the range is not mapped; -EEXIST: overlaps a
 * tracked range of any tracker (pages a partial sf_untrack gave back stay
 * reserved to their tracker, which may track them again, until the rest of
 * their range is untracked); -ENOMEM; other -errno from the kernel (for
 * example -EINVAL from uffd on a file mapping).
 * Thread-safe (serialized per tracker).  Not async-signal-safe.
 *
 * Do not change the protection of tracked memory yourself (mprotect,
 * munmap, mremap, madvise(MADV_DONTNEED)): untrack it first. */
SF_API int sf_track(sf_tracker *t, void *addr, size_t len);

/* Stops tracking exactly a range previously tracked (or a page-aligned
 * sub-range of one, which splits it).  The memory is left writable and its
 * pages are dropped from every snapshot of this tracker.  -EINVAL as for
 * sf_track; -ENOENT: some page of it is not tracked.  Thread-safe
 * (serialized).  Not async-signal-safe. */
SF_API int sf_untrack(sf_tracker *t, void *addr, size_t len);

/* sf_collect flags */
#define SF_COLLECT_RESET (1u << 0) /* re-arm the reported pages atomically */

/* Calls fn once per run of pages written since the last reset, in address
 * order.  With SF_COLLECT_RESET the reported pages are re-armed atomically:
 * a write that races with the collect is reported now or by the next
 * collect, never lost.  Returns the number of pages reported, or -errno.
 * If fn returns non-zero the walk stops there, and pages not yet reported
 * stay dirty (not reset).  fn may be NULL (just count, and reset).
 * fn may write tracked memory; it must not call sf_* functions on t.
 * Thread-safe (serialized).  Not async-signal-safe.  Never blocks a fault. */
typedef int (*sf_range_fn)(void *addr, size_t len, void *arg);
SF_API int sf_collect(sf_tracker *t, unsigned flags, sf_range_fn fn, void *arg);

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/* snapfault resolves the faults of the mprotect backend (SIGSEGV) and of
 * in-thread uffd-sync (SIGBUS) in a handler of its own, installed for both
 * signals by the first sf_tracker_create (or sf_sigaction).  Faults that are
 * not on tracked memory go to the handler that was installed before it, as
 * if snapfault were not there (SIG_DFL and SIG_IGN included: a real crash
 * dies of the same signal at the same instruction and dumps core).
 *
 * The rule: snapfault's handler must stay first.  A program that installs
 * its own SIGSEGV/SIGBUS handler once a tracker exists should do it with
 * sf_sigaction() below, which puts it behind snapfault's at once.  If it
 * calls sigaction() or signal() instead (a crash reporter, a runtime
 * initialised later, signal(SIGSEGV, SIG_DFL) after a guard page), its
 * handler replaces snapfault's until snapfault's next call that protects
 * memory -- sf_tracker_create, sf_track, sf_collect with SF_COLLECT_RESET,
 * sf_snapshot_take, sf_snapshot_restore -- and in that window a write to
 * protected tracked memory goes to the program's handler (under SIG_DFL:
 * the process dies of SIGSEGV/SIGBUS).  That next call finds the handler
 * replaced and installs snapfault's again in front of it; the program's
 * handler becomes the one faults that are not snapfault's go to (and if it
 * calls the handler it replaced, snapfault's, for a fault it does not want,
 * that fault goes to the handler before it).  Each of those calls costs
 * two sigaction() reads for the check.
 *
 * A forwarded handler runs with the mask it asked for: one that writes
 * memory a signal-delivered tracker protects needs SA_NODEFER (a fault on a
 * blocked SIGSEGV/SIGBUS is fatal).  A fault nobody handles (SIG_DFL,
 * SIG_IGN) is left to the kernel's default action with the signal blocked
 * in the faulting thread only: the process dies of it at the faulting
 * instruction and the other threads keep snapfault's handler meanwhile.
 *
 * Under the preload (libsnapfault-preload.so) the program's sigaction() and
 * signal() for these signals are this function already. */

struct sigaction;

/* sigaction() for SIGSEGV and SIGBUS as the program should see it with
 * snapfault: act (if not NULL) becomes the handler faults that are not
 * snapfault's are forwarded to, with its sa_mask and flags (SA_SIGINFO,
 * SA_NODEFER, SA_RESETHAND) honoured; old (if not NULL) receives the one
 * forwarded to until now (the handler installed before snapfault's, or by
 * the previous call, or one that replaced snapfault's with a raw
 * sigaction()).  Installs snapfault's handler if it is not installed (no
 * tracker needed), or again in front if it was replaced.  Returns 0;
 * -EINVAL for another signal or for act being snapfault's own handler.
 * Thread-safe (serialized with every other sf_sigaction and the re-install
 * checks); a fault in another thread meanwhile goes to the old or the new
 * handler, never nowhere.  Not async-signal-safe (waits for fault handlers
 * that are reading the old handler to leave it). */
SF_API int sf_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

/* ------------------------------------------------------------------------ */
/* Capabilities                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint64_t uffd_features;        /* UFFDIO_API features the kernel offers (0: none) */
    int uffd;                      /* userfaultfd(2) can be opened at all */
    int uffd_kernel_faults;        /* a uffd that receives kernel-mode faults can be
                                      opened (root, CAP_SYS_PTRACE, /dev/userfaultfd
                                      or vm.unprivileged_userfaultfd=1) */
    int uffd_wp;                   /* write-protect mode on anonymous memory */
    int uffd_wp_unpopulated;       /* WP of never-touched pages (6.4+) */
    int uffd_wp_async;             /* kernel-resolved WP faults (6.7+) */
    int uffd_sigbus;               /* UFFD_FEATURE_SIGBUS */
    int pagemap_scan;              /* PAGEMAP_SCAN ioctl (6.7+) */
    int soft_dirty;                /* CONFIG_MEM_SOFT_DIRTY works (probed by a write) */
    int thp_enabled;               /* THP not "never".  Tracking stays 4 KiB exact:
                                      arming keeps huge pages, the first write
                                      after it splits the one written (every
                                      backend), see doc/PRELOAD.md */
    long max_map_count;            /* vm.max_map_count */
    long map_count;                /* VMAs in this process now */
    int backend_ok[SF_BACKEND_COUNT];   /* 0 if usable, else -errno */
    char why[SF_BACKEND_COUNT][160];    /* reason when not usable ("" if usable) */
    sf_backend auto_tracking;      /* what AUTO picks for tracking only */
    sf_backend auto_snapshots;     /* what AUTO picks with SF_OPT_SNAPSHOTS (the
                                      backend of auto_engine; with SF_OPT_LOW_MEMORY
                                      AUTO picks the COW backend, uffd-sync or
                                      mprotect) */
    sf_fault_mode sync_mode;       /* uffd-sync delivery AUTO would use */
    char sync_mode_why[160];
    sf_engine auto_engine;         /* the engine AUTO picks with SF_OPT_SNAPSHOTS
                                      (without SF_OPT_LOW_MEMORY) */
    char auto_engine_why[160];
    /* Re-arming costs, measured once per process on scratch memory: one
     * protect call (UFFDIO_WRITEPROTECT, mprotect) and what each page
     * inside a protected span adds, in ns (0: not measured); and the gap
     * they give: a run at most that many unwritten pages past a span is
     * protected by the same call (gap * per-page cost < one call). */
    double uffd_wp_call_ns;
    double uffd_wp_pte_ns;
    double mprotect_call_ns;
    double mprotect_pte_ns;
    long uffd_span_gap;
    long mprotect_span_gap;
    int span_gap_forced;           /* the gaps come from SNAPFAULT_SPAN_GAP */
} sf_caps;

/* Probes what this kernel and process support, by really trying each
 * mechanism on a scratch page (a second call reuses the first answer).
 * Returns 0, or -EINVAL for NULL.  Thread-safe.  Not async-signal-safe. */
SF_API int sf_probe(sf_caps *caps);

/* A static message for -errno or errno, including snapfault's meanings
 * (for example -ENOSPC: "snapshot page store exhausted").  Thread-safe,
 * async-signal-safe. */
SF_API const char *sf_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */
/* ------------------------------------------------------------------------ */

#define SF_STOP_HIST_BUCKETS 48

typedef struct {
    sf_backend backend;
    sf_fault_mode fault_mode;
    uint64_t tracked_bytes;
    uint64_t regions;
    uint64_t faults;          /* write faults resolved by snapfault */
    uint64_t spurious;        /* faults on pages already writable (races, retries) */
    uint64_t pages_unprotected; /* pages made writable by faults (incl. clusters) */
    uint64_t collects;
    uint64_t pages_collected;
    uint64_t degraded;        /* mprotect: runs left writable for the VMA budget */
    uint64_t vma_estimate;    /* mprotect: VMAs this tracker's protections create */
    uint64_t copies;          /* page versions saved (COW: by faults; mirror: old shadow
                                 content kept by takes for live snapshots) */
    uint64_t copies_shared;   /* saves that reused an existing copy */
    uint64_t store_bytes;     /* bytes of page copies held now */
    uint64_t store_limit;
    uint64_t snapshots_live;
    uint64_t snapshots_failed;
    uint64_t metadata_bytes;  /* per-page state and indexes */
    sf_engine engine;         /* SF_ENGINE_AUTO: no snapshots */
    uint64_t shadow_bytes;    /* mirror: bytes of shadow mapped (one per tracked byte) */
    uint64_t version_bytes;   /* bytes of page versions held (= store_bytes) */
    uint64_t take_copied;     /* mirror: pages takes copied into the shadow */
    uint64_t precopied;       /* mirror: pages the background pre-copy copied */
    uint64_t span_gap;        /* sync backends: the largest gap of unwritten pages
                                 one protect call spans (see sf_caps) */
    uint64_t protect_calls;   /* protect calls made by collects, takes, restores */
    /* SF_OPT_STOP_THREADS: the world stops of takes.  A stop lasts from the
     * first stop signal to the resume (the take inside it). */
    uint64_t stops;
    uint64_t stop_last_ns;
    uint64_t stop_max_ns;
    uint64_t stop_total_ns;
    uint64_t stop_retries;    /* takes done again: a thread counted asleep ran */
    uint64_t stop_fallbacks;  /* takes that signalled every thread after retries
                                 (but those asleep where a signal means EINTR) */
    uint64_t stop_inexact;    /* of those, takes kept although such a thread ran
                                 meanwhile: not one instant for that thread */
    uint64_t stop_timeouts;   /* threads that ran with the stop signal blocked
                                 until the bound: not stopped */
    uint64_t stop_signalled;  /* threads stopped by the signal, summed over stops */
    uint64_t stop_asleep;     /* threads counted stopped because asleep in the
                                 kernel (not signalled), summed over stops */
    /* Stop times: bucket 0 below 1 us, then two per octave (bucket 1 + 2k:
     * [2^(10+k), 1.5 * 2^(10+k)) ns, 2 + 2k: [1.5 * 2^(10+k), 2^(11+k))); the
     * last bucket holds everything above.  See sf_stats_stop_quantile. */
    uint64_t stop_hist[SF_STOP_HIST_BUCKETS];
} sf_stats;

/* A quantile q in [0, 1] of the stop times in st->stop_hist, in ns (the
 * middle of its bucket, at most stop_max_ns: within 25%); 0 without stops.
 * Thread-safe, async-signal-safe. */
SF_API uint64_t sf_stats_stop_quantile(const sf_stats *st, double q);

/* Fills *st.  Counters are read without stopping faults, so they are
 * approximate while faults run.  Thread-safe; async-signal-safe. */
SF_API int sf_tracker_stats(const sf_tracker *t, sf_stats *st);

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                */
/* ------------------------------------------------------------------------ */

typedef struct sf_snapshot sf_snapshot;

/* Takes a snapshot of every range the tracker holds.  The tracker must
 * have been created with SF_OPT_SNAPSHOTS (-ENOTSUP otherwise).  Up to
 * SF_MAX_SNAPSHOTS live at once (-EAGAIN past that).  -ENOMEM: no memory
 * for its bookkeeping.  COW engine: the pages written since the previous
 * take (or collect) are protected; a snapshot that cannot hold a page
 * later, or whose pages could not be protected, fails afterwards: its reads
 * and writes answer -ENOSPC.  Mirror engine: the pages written since the
 * previous take are copied into the shadow (their old shadow content kept
 * as versions where a live snapshot needs it); -ENOSPC when those versions
 * would pass store_limit (no snapshot; memory, tracking and the other
 * snapshots are unharmed).  The first take after sf_track copies only
 * what the background pre-copy has not (what was written since).  A
 * helper thread of the tracker shares the copying of large write sets
 * when the costs the take measures on the machine say it pays (it then
 * uses a second CPU for the copy: threads of the program that keep
 * running during the take share that CPU with it).
 * The pause grows with the pages written since the previous take, not with
 * the tracked size.  Thread-safe (serialized), see
 * note (2) of the table above.  Not async-signal-safe.
 *
 * World stop (SF_OPT_STOP_THREADS): the take stops every other thread of
 * the process while it fixes the content, so the snapshot is one instant.
 * A thread is stopped by one real-time signal, SIGRTMIN + 6 (or SIGRTMIN +
 * N with SNAPFAULT_STOP_SIGNAL=N in the environment), installed SA_RESTART
 * by sf_tracker_create and re-installed by each take if replaced; its
 * handler acknowledges and waits on a futex until the take is done
 * (async-signal-safe: no malloc, no lock).  A handler the program had on
 * that signal is kept and called for every instance snapfault did not send.
 * A thread asleep in the kernel is not signalled when it provably does not
 * run during the take (its /proc schedstat is unchanged), so epoll_wait,
 * poll, nanosleep or sem_timedwait never see EINTR; if it ran, the take is
 * done again with it signalled (twice), then with every thread signalled
 * but those asleep in a call a signal would end with EINTR (if one of them
 * ran, the snapshot is kept and counted in sf_stats.stop_inexact).  A
 * thread running when a stop begins is signalled: if it enters such a call
 * as the signal arrives, that call ends with EINTR, as with any signal.
 * snapfault's own threads (uffd-sync handler threads, the mirror's
 * pre-copy and copy helper) are never stopped.  A thread that blocks the
 * signal counts as stopped while it sleeps with it blocked (as glibc's
 * thread exit does for a moment), checked after the take as any thread
 * asleep (sf_stats.stop_asleep); one that runs with it blocked is waited
 * for SNAPFAULT_STOP_TIMEOUT_MS (2000 ms), then counted in
 * sf_stats.stop_timeouts and not stopped.  A signal such a thread takes
 * after the stop is swallowed, never passed to the program's handler.
 * The calling thread is not stopped, and inside the take snapfault needs
 * no lock or memory a stopped thread could hold (malloc's included).  One
 * world stop at a time
 * per process: takes of two such trackers are serialized.  A forked child
 * starts with no stop in progress; its own trackers stop its threads.
 * Without /proc (not mounted) the take runs without a stop (sf_stats.stops
 * does not count it). */
#define SF_MAX_SNAPSHOTS 64
SF_API int sf_snapshot_take(sf_tracker *t, sf_snapshot **out);

/* Copies len bytes at addr as they were when s was taken.  The range must
 * lie in memory tracked when s was taken and still tracked (-ENOENT
 * otherwise).  -ENOSPC: the snapshot failed (page store exhausted);
 * -ESTALE: invalidated by restoring an older snapshot.  buf may be tracked
 * memory.  Mirror engine: reads come from the shadow or versions, never
 * from live memory.  Thread-safe, runs concurrently with writers and faults.
 * Not async-signal-safe. */
SF_API int sf_snapshot_read(const sf_snapshot *s, const void *addr, void *buf, size_t len);

/* Makes tracked memory equal to s again; cost grows with the pages written
 * since s (both engines: COW copies back versions, mirror copies back from
 * its shadow and versions and re-protects the pages in spans).  Snapshots taken after s are invalidated (-ESTALE); s stays valid
 * and may be restored again.  Ranges tracked after s was taken are left as
 * they are; ranges untracked since are skipped.  The caller stops writers of
 * the tracked memory during the call.  Restored pages count as dirty for
 * sf_collect.  Returns the number of pages restored.  A failure before any
 * page was written back (-ENOMEM, a protection change refused) leaves
 * memory and the newer snapshots as they were.  Not async-signal-safe. */
SF_API int sf_snapshot_restore(sf_snapshot *s);

/* Streams a self-describing image of s to fd (from the current offset;
 * fd may be a pipe) while the program keeps running (mirror engine: the
 * pages come from the shadow, so the program's writes meanwhile cost it
 * nothing but memory bandwidth).  Returns 0 or
 * -errno (-ENOSPC if the snapshot failed, -EPIPE if a pipe's reader went
 * away: SIGPIPE is not raised, -EIO/-errno from write).
 * Thread-safe: may run concurrently with writers, reads and takes; not with
 * sf_snapshot_release(s).  Not async-signal-safe. */
SF_API int sf_snapshot_write(sf_snapshot *s, int fd);

/* Like sf_snapshot_write but only pages that differ from parent (a snapshot
 * taken earlier on the same tracker), naming parent's id in the image.
 * -EINVAL if parent is not older.  Same safety as sf_snapshot_write (not
 * async-signal-safe). */
SF_API int sf_snapshot_write_incremental(sf_snapshot *s, const sf_snapshot *parent, int fd);

/* sf_snapshot_write_flags flags.  SF_WRITE_ZSTD compresses the page data of
 * each block with zstd (a block whose data does not shrink is stored raw);
 * SF_WRITE_ZSTD_LEVEL(n) picks zstd level n, 1 to 19 (0 or absent: level 3,
 * zstd's default).  The level is a flag field rather than an environment
 * variable so that a library call never depends on the environment
 * (`snapfault image merge --zstd[=N]` passes it on).  Readers decompress
 * whatever level wrote the image. */
#define SF_WRITE_ZSTD              (1u << 0)
#define SF_WRITE_ZSTD_LEVEL(n)     (((unsigned)(n) & 0x1fu) << 8)
#define SF_WRITE_ZSTD_LEVEL_OF(fl) (((fl) >> 8) & 0x1fu)
#define SF_WRITE_ZSTD_LEVEL_MAX    19

/* Writes the image of s like sf_snapshot_write (parent NULL: a full image)
 * or sf_snapshot_write_incremental (parent: only the pages that differ
 * from it), with flags SF_WRITE_*.  Every range the image holds carries
 * the name and protection of the mapping holding it when written (read
 * from /proc/self/maps; see sf_image_mapping).  -EINVAL for unknown flag
 * bits or a level above SF_WRITE_ZSTD_LEVEL_MAX, else as those two.
 * Same safety as sf_snapshot_write (thread-safe, not async-signal-safe). */
SF_API int sf_snapshot_write_flags(sf_snapshot *s, const sf_snapshot *parent, int fd,
                                   unsigned flags);

/* A 64-bit id unique to this snapshot (random per process and take);
 * images carry it and their parent's.  Thread-safe, async-signal-safe. */
SF_API uint64_t sf_snapshot_id(const sf_snapshot *s);

/* Releases s; its page copies are freed once no other snapshot shares
 * them.  NULL is a no-op.  Thread-safe (serialized per tracker); may run
 * while another thread writes s's image (the writer holds a reference and
 * the last of the two frees it); s must not be used afterwards.  Not
 * async-signal-safe. */
SF_API void sf_snapshot_release(sf_snapshot *s);

/* ------------------------------------------------------------------------ */
/* Images                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct sf_image sf_image;

typedef struct {
    uint32_t version;       /* format version of this image (1 or 2) */
    uint32_t page_size;
    uint64_t id;            /* snapshot id */
    uint64_t parent_id;     /* 0: full image; else incremental over parent */
    uint64_t ranges;        /* tracked ranges held */
    uint64_t bytes;         /* bytes of tracked memory described */
    uint64_t pages_stored;  /* pages with data in the file */
    uint64_t pages_zero;    /* all-zero pages elided */
    uint64_t pages_absent;  /* incremental: pages not in this image (see parent) */
    int64_t  taken_ns;      /* CLOCK_REALTIME at take */
} sf_image_info;

/* Opens and validates an image from fd (read with pread; fd must stay open
 * until sf_image_close).  Truncated, corrupted or hostile input gives
 * -EBADMSG (or -EPROTO for an unknown version, -EFBIG for absurd sizes)
 * and never an over-read or an unbounded allocation.  Reads format
 * versions 1 and 2 (doc/IMAGE-FORMAT.md).  Thread-safe.  Not
 * async-signal-safe. */
SF_API int sf_image_open(sf_image **out, int fd);

/* Fills *info from the validated header.  Thread-safe; async-signal-safe
 * (reads what sf_image_open already checked). */
SF_API int sf_image_get_info(const sf_image *img, sf_image_info *info);

/* Calls fn(addr, len, arg) for each tracked range the image holds, in
 * address order; stops early if fn returns non-zero.  Returns the number of
 * ranges visited.  Thread-safe.  Not async-signal-safe. */
SF_API int sf_image_ranges(const sf_image *img, sf_range_fn fn, void *arg);

/* Copies len bytes at addr (an address of the imaged process).  -ENOENT:
 * outside the image's ranges; -ENODATA: incremental image without this page
 * (read the parent); -EBADMSG: checksum mismatch.  Thread-safe.  Not
 * async-signal-safe. */
SF_API int sf_image_read(const sf_image *img, uint64_t addr, void *buf, size_t len);

/* Page kinds reported by sf_image_read_map (one byte per page). */
#define SF_IMAGE_PAGE_STORED 1 /* data held in this image */
#define SF_IMAGE_PAGE_ZERO   2 /* held: reads as zeros */
#define SF_IMAGE_PAGE_ABSENT 3 /* not held: unchanged since the parent */

/* Like sf_image_read, but an incremental image answers for the pages it
 * holds instead of failing the whole span: map[i] receives the kind of the
 * i-th page the span [addr, addr+len) touches (page (addr & ~(ps-1)) + i*ps;
 * map must hold ((addr+len-1)/ps - addr/ps + 1) bytes), the bytes of held
 * pages are copied to buf and the bytes of absent pages are left as they
 * were in buf.  buf may be NULL: only the map is filled.  Every block the
 * span touches is checksummed in full before 0 is returned.  Returns 0,
 * -ENOENT (outside the ranges, before any I/O), -EBADMSG, -EINVAL, -ENOMEM.
 * On error map and buf are unspecified.  Thread-safe.  Not
 * async-signal-safe. */
SF_API int sf_image_read_map(const sf_image *img, uint64_t addr, void *buf, size_t len,
                             uint8_t *map);

/* Protection bits of sf_image_mapping.prot. */
#define SF_IMAGE_PROT_READ   (1u << 0)
#define SF_IMAGE_PROT_WRITE  (1u << 1)
#define SF_IMAGE_PROT_EXEC   (1u << 2)
#define SF_IMAGE_PROT_SHARED (1u << 3) /* a MAP_SHARED mapping */
#define SF_IMAGE_PROT_KNOWN  (1u << 4) /* prot is known (format version 2) */

typedef struct {
    uint64_t addr, len;
    uint32_t prot;    /* SF_IMAGE_PROT_*; 0 when unknown (version 1 images) */
    const char *name; /* as /proc/PID/maps names the mapping: a file path,
                         "[heap]", "[stack]", "[anon:NAME]", ...; "" for an
                         anonymous mapping or when unknown; valid until
                         sf_image_close */
    uint64_t offset;  /* a file mapping: offset in the file of addr; else 0 */
} sf_image_mapping;

/* Fills *m for the i-th range of the image (0 <= i < info.ranges, in
 * address order).  The protection is the program's (snapfault's own write
 * protection of tracked memory is not recorded: tracked ranges are always
 * writable mappings).  -ENOENT past the last range, -EINVAL for NULL.
 * Thread-safe, async-signal-safe (reads what sf_image_open validated). */
SF_API int sf_image_mapping_get(const sf_image *img, size_t i, sf_image_mapping *m);

/* Verifies every block checksum (and, for compressed blocks, that the data
 * decompresses to exactly its size).  Returns 0 or -EBADMSG.  Thread-safe.
 * Not async-signal-safe. */
SF_API int sf_image_verify(const sf_image *img);

/* Flattens a chain into one full image written to fd (from its current
 * offset; fd may be a pipe): chain[0] is the image to flatten, chain[i+1]
 * the parent of chain[i] (its id is chain[i]'s parent_id), and chain[n-1]
 * a full image.  The result has chain[0]'s id, time, ranges, names and
 * protections, and each page from the nearest image of the chain that
 * holds it.  flags: SF_WRITE_* (compression).  -EINVAL: NULL, n == 0, a
 * broken chain (ids or page sizes that do not follow) or bad flags;
 * -ENODATA: a page no image of the chain holds; -ENOENT: a parent lacks a
 * range its child needs from it; -EBADMSG from a corrupt image; -errno from
 * write (-EPIPE without SIGPIPE).  Thread-safe (the images are only read).
 * Not async-signal-safe. */
SF_API int sf_image_merge(const sf_image *const *chain, size_t n, int fd, unsigned flags);

/* Frees img (not its fd).  NULL is a no-op.  Must not run concurrently
 * with other calls on img.  Not async-signal-safe.  None of the sf_image_*
 * functions is async-signal-safe except sf_image_get_info and
 * sf_image_mapping_get. */
SF_API void sf_image_close(sf_image *img);

#ifdef __cplusplus
}
#endif
#endif /* SNAPFAULT_H */
