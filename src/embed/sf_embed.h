/* sf_embed.h - the embedding contract: all that a runtime linking the core's
 * static archive (the preload, src/preload/) may use of it besides the public
 * include/snapfault.h.  Implemented by src/embed.c over the internals; hidden
 * symbols, never exported from libsnapfault.so.  The preload's include path
 * holds include/, this directory and its own: src/internal.h is out of reach.
 *
 *   call                       AS-safe  locks       who may call
 *   sf__embed_init             no       none        start-up, before the rest
 *   sf__embed_page_state       yes      none        any thread, signal handlers
 *   sf__embed_regions_overlap  yes      none        any thread, signal handlers
 *   sf__embed_runs             yes      none        any thread (fn decides)
 *   sf__embed_grace_wait       no       none        not inside a fault hook
 *   sf__embed_set_fault_hook   yes      none        once the tracker exists
 *   sf__embed_sigaction        no       chain lock  the sigaction interposers
 *   sf__embed_atfork_*         no       see below   pthread_atfork handlers
 */
#ifndef SF_EMBED_H
#define SF_EMBED_H

#include "snapfault.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The page size and its log2, set by sf__embed_init; read-only after it. */
extern size_t sf_page_size;
extern unsigned sf_page_shift;

/* The core's one-time set-up (page size, debug settings); idempotent. */
void sf__embed_init(void);

/* What the core knows of one page, as an embedding needs it. */
typedef enum {
    SF_EMBED_UNTRACKED = 0, /* in no region, or given back by a partial sf_untrack */
    SF_EMBED_ARMED_CLEAN,   /* protected, not written since the last reset: the
                               next write is the first */
    SF_EMBED_ARMED_DIRTY,   /* protected again by a take, written before it */
    SF_EMBED_OPEN,          /* writable now, or being opened or protected */
} sf_embed_page;

/* The state of the page holding addr.  region_end (optional) receives the
 * end of the region that holds addr (also for a given-back page), 0 when
 * none does.  Lock-free; async-signal-safe. */
sf_embed_page sf__embed_page_state(uintptr_t addr, uintptr_t *region_end);

/* Whether some page of [start, end) (page aligned) is protected as far as
 * the core knows (ARMED, clean or dirty), in a region that is not left
 * writable as a whole (mprotect's degraded regions are not).  An embedding
 * that finds such a page writable in /proc/self/maps knows its mapping was
 * replaced behind the core's back (the mprotect backend: a heap trimmed and
 * grown again by libc's internal brk), so writes to it go unseen.
 * Lock-free; async-signal-safe. */
bool sf__embed_any_armed(uintptr_t start, uintptr_t end);

/* A run of addresses, [start, end). */
struct sf_embed_span {
    uintptr_t start, end;
};

/* Runs of t's tracked memory that the core holds protected (ARMED) while
 * the kernel says they were written without a fault: no uffd-wp bit on
 * their page table entries.  That is a mapping replaced behind the core's
 * back (libc's heap trimmed and grown again by its internal brk: the new
 * pages are not registered) whose writes go unseen.  Fills up to max runs
 * of out in address order and returns their number (the rest is found by
 * the next call, once these are dealt with); -EOPNOTSUPP when the backend
 * cannot tell this way (mprotect and soft-dirty: see sf__embed_any_armed;
 * uffd-async: its scans fail on such a mapping) or the kernel lacks
 * PAGEMAP_SCAN; -errno.  Takes t's lock: not async-signal-safe, not during
 * a take. */
long sf__embed_unseen_writes(sf_tracker *t, struct sf_embed_span *out, size_t max);

/* Whether a region overlaps [start, end) (pages given back by a partial
 * sf_untrack count: their region is still there).  Lock-free;
 * async-signal-safe. */
bool sf__embed_regions_overlap(uintptr_t start, uintptr_t end);

/* The kinds of run sf__embed_runs reports. */
typedef enum {
    SF_EMBED_RUN_NONE = 0, /* between regions */
    SF_EMBED_RUN_GONE,     /* inside a region, given back by a partial sf_untrack */
    SF_EMBED_RUN_TRACKED,  /* inside a region, tracked */
} sf_embed_run;

/* Calls fn on the consecutive runs of [start, end) (page aligned), in
 * address order: each run is of one kind and never crosses a region's
 * bound, so a run can be handed to sf_track or sf_untrack as it is.  fn
 * runs outside any grace section (it may track, untrack, or wait) and
 * returns 0 to go on; anything else ends the walk and is returned.  Runs
 * are read under a grace section one at a time: a table changed by fn is
 * seen from the next run on.  Async-signal-safe if fn is. */
typedef int (*sf_embed_run_fn)(uintptr_t start, uintptr_t end, sf_embed_run kind, void *arg);
int sf__embed_runs(uintptr_t start, uintptr_t end, sf_embed_run_fn fn, void *arg);

/* Waits until every reader that may have seen the region table as it was
 * (fault handlers, snapshot readers, image writers) has left: after a
 * partial sf_untrack, before the memory is unmapped. */
void sf__embed_grace_wait(void);

/* A hook called first by the core's SIGSEGV/SIGBUS entry, for every such
 * signal, with every signal blocked and errno saved.  It returns true when
 * it dealt with the fault itself (the instruction runs again), false to let
 * the core resolve or forward it.  Registering one also tells the core
 * that the embedding tracks the program's own memory: a forwarded handler
 * gets its own signal blocked only virtually (doc/DESIGN.md, "Signals").
 * NULL removes it. */
typedef bool (*sf_embed_fault_hook)(int sig, siginfo_t *si, void *uc);
void sf__embed_set_fault_hook(sf_embed_fault_hook hook);

/* The program's sigaction for SIGSEGV and SIGBUS: act (optional) becomes
 * the handler faults that are not snapfault's go to, old (optional)
 * receives the one in place.  0, or -EINVAL for other signals, -errno. */
int sf__embed_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

/* fork: prepare takes the locks the core's state needs whole in the child
 * (t's lock when t is not NULL, then the region table's), parent releases
 * them, child makes them usable again (only the forking thread runs
 * there).  Call them from the embedding's own atfork handlers, inside its
 * own locks. */
void sf__embed_atfork_prepare(sf_tracker *t);
void sf__embed_atfork_parent(sf_tracker *t);
void sf__embed_atfork_child(sf_tracker *t);

/* Creates a thread of the embedding's own that world stops (SF_OPT_STOP_THREADS
 * takes) never stop: the thread that takes snapshots, any it waits for.
 * The thread is registered before this returns.  0 or an errno value
 * (pthread_create's convention).  Not async-signal-safe. */
int sf__embed_thread_create(pthread_t *th, void *(*fn)(void *), void *arg);

#endif
