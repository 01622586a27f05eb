/* preload.h - internals of libsnapfault-preload.so shared by its files: the
 * options table, the real libc entry points, the private heap and the runtime. */
#ifndef SFP_PRELOAD_H
#define SFP_PRELOAD_H

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SFP_EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------------
 * Options: the table and its parsers (options.h); the values in force
 * (config.c), read from SNAPFAULT_* by scanning environ.
 * ------------------------------------------------------------------------ */
#include "options.h"

/* Loads every option from envp (NULL: defaults only).  secure: ignore the
 * environment (setuid).  Warnings for bad values go through sfp_warn. */
void sfp_options_load(char *const *envp, bool secure);
long long sfp_opt_val(sfp_opt o);
const char *sfp_opt_str(sfp_opt o); /* SFP_T_STRING options; never NULL */
bool sfp_opt_explicit(sfp_opt o);   /* set in the environment (validly) */

/* ------------------------------------------------------------------------
 * Messages (log.c): "snapfault[pid]: ..." with write(2), no allocation.
 * ------------------------------------------------------------------------ */
void sfp_log_init(bool verbose, bool quiet);
void sfp_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* verbose only */
void sfp_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));  /* unless quiet */
/* Warns once per key (a small fixed set, see log.c). */
enum sfp_once { SFP_ONCE_OUTPUT, SFP_ONCE_IMAGE, SFP_ONCE_TRACK, SFP_ONCE_STACKS, SFP_ONCE_ATTR,
                SFP_ONCE_SIGNAL, SFP_ONCE_EFAULT, SFP_ONCE_COUNT };
void sfp_warn_once(enum sfp_once key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* snprintf into buf, always terminated, returns the length written. */
size_t sfp_fmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void sfp_write_all(int fd, const char *buf, size_t len);
/* The system's message for a file error (-errno or errno). */
const char *sfp_errstr(int err);

/* ------------------------------------------------------------------------
 * Real libc entry points (real.c).  Every call made inside the preload (by
 * the library core or the runtime) reaches libc through these or through
 * the OS contract (src/embed/os.h, implemented in os_preload.c), never the
 * interposers: the build rejects a preload object that names one.
 * ------------------------------------------------------------------------ */
struct sfp_real {
    void *(*mmap)(void *, size_t, int, int, int, off_t);
    int (*munmap)(void *, size_t);
    int (*mprotect)(void *, size_t, int);
    int (*madvise)(void *, size_t, int);
    void *(*mremap)(void *, size_t, size_t, int, ...);
    int (*brk)(void *);
    void *(*sbrk)(intptr_t);
    int (*sigaction)(int, const struct sigaction *, struct sigaction *);
    int (*sigprocmask)(int, const sigset_t *, sigset_t *);
    int (*pthread_sigmask)(int, const sigset_t *, sigset_t *);
    int (*sigaltstack)(const stack_t *, stack_t *);
    int (*pthread_create)(void *, const void *, void *(*)(void *), void *);
    int (*execve)(const char *, char *const[], char *const[]);
    int (*execveat)(int, const char *, char *const[], char *const[], int);
    int (*fexecve)(int, char *const[], char *const[]);
    int (*posix_spawn)(pid_t *, const char *, const void *, const void *, char *const[], char *const[]);
    int (*posix_spawnp)(pid_t *, const char *, const void *, const void *, char *const[], char *const[]);
    void (*_exit)(int);
};
extern struct sfp_real sfp_real;
void sfp_real_resolve(void); /* idempotent; before it, raw syscalls stand in */
/* Resolves sfp_real unless called from inside the runtime before that was
 * done (then false: raw system calls stand in). */
bool sfp_real_ready(void);
void sfp_io_resolve(void);   /* io.c */

/* The recursion guard: set while the runtime (or the library through it)
 * runs, so that interposers reached from inside pass straight to libc. */
extern __thread int sfp_in_runtime __attribute__((tls_model("initial-exec")));

/* Raw system calls for the earliest calls (before dlsym is possible). */
long sfp_raw_syscall(long n, long a, long b, long c, long d, long e, long f);

/* ------------------------------------------------------------------------
 * Private heap and own-memory registry (alloc.c).  The library core and the
 * runtime allocate here (the OS contract's allocator, os_preload.c), so that
 * their own state never lies in memory they track: a fault handler that
 * wrote to a protected page of its own would deadlock or die.
 * ------------------------------------------------------------------------ */
void *sfp_malloc(size_t n);
void *sfp_calloc(size_t n, size_t m);
void *sfp_realloc(void *p, size_t n);
void sfp_free(void *p);
char *sfp_strdup(const char *s);
/* Memory that must never be tracked: the private heap, the library's
 * metadata and page store, the runtime's threads' stacks.  Lock-free,
 * async-signal-safe. */
void sfp_own_add(uintptr_t start, uintptr_t end);
/* The stack of a thread just created, guard page included: [*lo, *hi).
 * false when libc cannot tell.  os_preload.c. */
bool sfp_thread_stack(pthread_t th, uintptr_t *lo, uintptr_t *hi);
void sfp_own_remove(uintptr_t start, uintptr_t end);
bool sfp_own_overlaps(uintptr_t start, uintptr_t end);
/* Ranges the program uses where tracking would hurt (thread stacks,
 * alternate signal stacks): never adopted by the scanner. */
void sfp_excl_add(uintptr_t start, uintptr_t end);
void sfp_excl_remove(uintptr_t start, uintptr_t end);
bool sfp_excl_overlaps(uintptr_t start, uintptr_t end);
extern _Atomic int sfp_own_overflow;
struct sfp_range {
    uintptr_t start, end;
};
size_t sfp_registry_overlaps(uintptr_t start, uintptr_t end, struct sfp_range *out, size_t cap);
void sfp_heap_atfork_prepare(void);
void sfp_heap_atfork_parent(void);
void sfp_heap_atfork_child(void);
/* libc's calls for the runtime's own use (real.c) */
void *sfp_real_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off);
int sfp_real_munmap(void *a, size_t len);
int sfp_real_mprotect(void *a, size_t len, int prot);
int sfp_real_madvise(void *a, size_t len, int advice);

/* ------------------------------------------------------------------------
 * The runtime (model.c, reconcile.c, lifecycle.c, snapmode.c ...) used by
 * the interposers.
 * ------------------------------------------------------------------------ */
enum sfp_state { SFP_NOT_READY = 0, SFP_INITIALIZING, SFP_READY, SFP_DISABLED };
extern _Atomic int sfp_state;

static inline bool sfp_active(void)
{
    return atomic_load_explicit(&sfp_state, memory_order_acquire) == SFP_READY && !sfp_in_runtime;
}

/* Mapping changes reported by the interposers; each runs under the runtime
 * lock with the recursion guard set.  untrack before the real call, track
 * after it. */
void sfp_untrack_range(uintptr_t start, uintptr_t end);
void sfp_track_new(uintptr_t start, uintptr_t end, int prot, int flags);
/* Re-tracks what sfp_untrack_range removed, if still private and writable. */
struct sfp_saved {
    uintptr_t start[16], end[16];
    uint32_t label[16];
    size_t n;
    bool overflow;
};
void sfp_untrack_save(uintptr_t start, uintptr_t end, struct sfp_saved *sv);
void sfp_retrack(const struct sfp_saved *sv, int prot);
void sfp_lock(void);
void sfp_unlock(void);

/* Kernel writes: in signal-delivered fault modes (mprotect, uffd in-thread)
 * a syscall writing into an armed page fails with EFAULT; the interposers
 * pre-fault such buffers.  true when pre-faulting is needed at all. */
extern _Atomic int sfp_prefault_needed;
/* Calls retrying after EFAULT: re-arming waits for them (briefly). */
extern _Atomic int sfp_kwrite_hold;
void sfp_kwrite_wait(void);
void sfp_prefault(const void *buf, size_t len);
bool sfp_range_tracked(const void *buf, size_t len);

/* A program thread was created: its stack is excluded, or tracked with
 * SNAPFAULT_INCLUDE=stacks where the fault mode allows it. */
void sfp_thread_created(uintptr_t stack_lo, uintptr_t stack_hi);
/* An alternate signal stack: never tracked in signal-delivered modes. */
void sfp_altstack(uintptr_t lo, uintptr_t hi);
/* Threads or spawned children being created: the scanner adopts nothing
 * new meanwhile (their stacks are not registered yet). */
extern _Atomic int sfp_creating_threads;

/* fork/exec */
void sfp_fork_prepare(void);
void sfp_fork_parent(void);
void sfp_fork_child(void);
bool sfp_follow_exec(void);
/* The program ends without destructors: finish the record now. */
void sfp_before_exit(void);
void sfp_before_exec(void);
/* SNAPFAULT_* settings as the process started with them (for exec). */
const char *const *sfp_saved_env(size_t *n);
/* The library's SIGSEGV/SIGBUS handler is installed: chain through it. */
extern _Atomic int sfp_chain_active;
/* Set while the scanner drops a range whose mapping changed behind the
 * runtime's back: the library's detach must not re-open it (real.c). */
extern __thread uintptr_t sfp_stale_lo __attribute__((tls_model("initial-exec")));
extern __thread uintptr_t sfp_stale_hi __attribute__((tls_model("initial-exec")));
const char *sfp_self_path(void); /* path of libsnapfault-preload.so */

/* The snapshot trigger signal (0: none) and what the program installed for
 * it, kept behind snapfault's handler. */
extern int sfp_trigger_sig;
int sfp_trigger_sigaction(const struct sigaction *act, struct sigaction *old);

/* SIGHUP, SIGINT, SIGTERM left at SIG_DFL are caught for the final image
 * (snapmode.c); the program's sigaction on them comes here: 1 handled,
 * 0 not managed, -1 failed (errno). */
bool sfp_fatal_shared(int sig);
int sfp_fatal_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
/* A fatal signal that arrived while its thread was inside the runtime is
 * kept blocked and pending until the thread leaves it. */
extern __thread int sfp_fatal_pending __attribute__((tls_model("initial-exec")));
void sfp_fatal_redeliver(void);
static inline void sfp_runtime_leave(void)
{
    if (--sfp_in_runtime == 0 && __builtin_expect(sfp_fatal_pending != 0, 0))
        sfp_fatal_redeliver();
}

/* Write attribution (attrib.c). */
int sfp_attr_start(int depth);                /* installs the fault-path hook */
void sfp_attr_report(int fd, int top, bool text);
void sfp_attr_sample(int sig, siginfo_t *si, void *uc); /* from the fault entry */
extern _Atomic int sfp_attr_active;

/* front.c: the runtime's fault hook, called first by the library's entry. */
int sfp_front_install(void);
void sfp_patch_begin(void);    /* this thread starts writing an image */
unsigned sfp_patch_end(void);  /* ... and ends: pages it had to patch */


#endif
