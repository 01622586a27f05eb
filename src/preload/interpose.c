/* interpose.c - the libc calls the preload stands in front of: mappings, heap,
 * signals, threads, exec, spawn, exit and malloc's own mapped blocks. */
#include "runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

static size_t pgsz(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* Runs the mapping change under the runtime lock with the guard set: the
 * library's own calls from inside reach libc directly. */
#define ENTER() do { sfp_in_runtime++; sfp_lock(); } while (0)
#define LEAVE() do { sfp_unlock(); sfp_runtime_leave(); } while (0)

/* ------------------------------------------------------------------------
 * Mappings
 * ------------------------------------------------------------------------ */
static bool maybe_trackable(int prot, int flags)
{
    return (flags & MAP_FIXED) ||
           ((prot & PROT_WRITE) && (flags & MAP_PRIVATE) && (flags & MAP_ANONYMOUS));
}

SFP_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (sfp_in_runtime) {
        /* A library the runtime calls (libunwind's memory pools, from the
         * fault handler): the runtime's own memory, never to be tracked. */
        void *p = sfp_real_mmap(addr, len, prot, flags, fd, off);
        if (p != MAP_FAILED)
            sfp_own_add((uintptr_t)p, (uintptr_t)p + len);
        return p;
    }
    if (!sfp_active() || !maybe_trackable(prot, flags))
        return sfp_real_mmap(addr, len, prot, flags, fd, off);
    ENTER();
    if ((flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE))
        sfp_untrack_range((uintptr_t)addr, (uintptr_t)addr + len); /* the kernel replaces it */
    void *p = sfp_real_mmap(addr, len, prot, flags, fd, off);
    int saved = errno;
    if (p != MAP_FAILED) {
        sfp_excl_remove((uintptr_t)p, (uintptr_t)p + len);
        sfp_track_new((uintptr_t)p, (uintptr_t)p + len, prot, flags);
    }
    LEAVE();
    errno = saved;
    return p;
}

SFP_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

SFP_EXPORT int munmap(void *addr, size_t len)
{
    if (!sfp_active())
        return sfp_real_munmap(addr, len);
    ENTER();
    sfp_untrack_range((uintptr_t)addr, (uintptr_t)addr + len);
    int r = sfp_real_munmap(addr, len);
    int saved = errno;
    if (r == 0)
        sfp_excl_remove((uintptr_t)addr, (uintptr_t)addr + len);
    LEAVE();
    errno = saved;
    return r;
}

SFP_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    void *new_addr = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_addr = va_arg(ap, void *);
        va_end(ap);
    }
    sfp_real_resolve();
    if (!sfp_active())
        return sfp_real.mremap(old, old_len, new_len, flags, new_addr);
    ENTER();
    struct sfp_saved sv;
    sfp_untrack_save((uintptr_t)old, (uintptr_t)old + old_len, &sv);
    if (flags & MREMAP_FIXED)
        sfp_untrack_range((uintptr_t)new_addr, (uintptr_t)new_addr + new_len);
    void *p = sfp_real.mremap(old, old_len, new_len, flags, new_addr);
    int saved = errno;
    if (p == MAP_FAILED) {
        sfp_retrack(&sv, PROT_READ | PROT_WRITE);
    } else {
        /* The tracked pieces moved with the mapping; growth of a mapping
         * tracked whole is tracked under the same label. */
        struct sfp_saved moved = sv;
        uintptr_t delta = (uintptr_t)p - (uintptr_t)old, nend = (uintptr_t)p + new_len;
        size_t k = 0;
        for (size_t i = 0; i < sv.n; i++) {
            uintptr_t a = sv.start[i] + delta, e = sv.end[i] + delta;
            if (e > nend)
                e = nend;
            if (a >= e)
                continue;
            moved.start[k] = a;
            moved.end[k] = e;
            moved.label[k] = sv.label[i];
            k++;
        }
        moved.n = k;
        if (k && new_len > old_len && moved.end[k - 1] == (uintptr_t)p + ((old_len + pgsz() - 1) & ~(pgsz() - 1)))
            moved.end[k - 1] = (nend + pgsz() - 1) & ~(pgsz() - 1);
        sfp_retrack(&moved, PROT_READ | PROT_WRITE);
    }
    LEAVE();
    errno = saved;
    return p;
}

SFP_EXPORT int mprotect(void *addr, size_t len, int prot)
{
    if (!sfp_active())
        return sfp_real_mprotect(addr, len, prot);
    /* Never change the protection of tracked memory under the library:
     * untrack, protect, track again if it stays private and writable. */
    ENTER();
    struct sfp_saved sv;
    sfp_untrack_save((uintptr_t)addr, (uintptr_t)addr + len, &sv);
    int r = sfp_real_mprotect(addr, len, prot);
    int saved = errno;
    sfp_retrack(&sv, r == 0 ? prot : PROT_READ | PROT_WRITE);
    LEAVE();
    errno = saved;
    return r;
}

SFP_EXPORT int madvise(void *addr, size_t len, int advice)
{
    /* Advice that discards content changes memory without a write fault:
     * tracking (and snapshots) must not trust the old state of those
     * pages.  Other advice leaves content alone. */
    bool discards = advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE ||
                    advice == MADV_DONTNEED_LOCKED;
    if (!sfp_active() || !discards)
        return sfp_real_madvise(addr, len, advice);
    ENTER();
    struct sfp_saved sv;
    sfp_untrack_save((uintptr_t)addr, (uintptr_t)addr + len, &sv);
    int r = sfp_real_madvise(addr, len, advice);
    int saved = errno;
    sfp_retrack(&sv, PROT_READ | PROT_WRITE);
    LEAVE();
    errno = saved;
    return r;
}

SFP_EXPORT int posix_madvise(void *addr, size_t len, int advice)
{
    if (advice != POSIX_MADV_DONTNEED) /* glibc ignores POSIX_MADV_DONTNEED */
        return madvise(addr, len, advice) ? errno : 0;
    return 0;
}

/* ------------------------------------------------------------------------
 * The heap: libc grows it with its internal brk (seen by the scanner);
 * a program calling brk/sbrk itself is followed here.
 * ------------------------------------------------------------------------ */
static uintptr_t cur_brk(void) { return (uintptr_t)sfp_raw_syscall(SYS_brk, 0, 0, 0, 0, 0, 0); }

SFP_EXPORT int brk(void *addr)
{
    sfp_real_resolve();
    if (!sfp_active())
        return sfp_real.brk(addr);
    ENTER();
    uintptr_t cur = cur_brk();
    if ((uintptr_t)addr < cur)
        sfp_untrack_range((uintptr_t)addr, cur);
    int r = sfp_real.brk(addr);
    int saved = errno;
    LEAVE();
    errno = saved;
    return r;
}

SFP_EXPORT void *sbrk(intptr_t inc)
{
    sfp_real_resolve();
    if (!sfp_active() || inc >= 0)
        return sfp_real.sbrk(inc);
    ENTER();
    uintptr_t cur = cur_brk();
    sfp_untrack_range(cur + (uintptr_t)inc, cur);
    void *r = sfp_real.sbrk(inc);
    int saved = errno;
    LEAVE();
    errno = saved;
    return r;
}

/* ------------------------------------------------------------------------
 * Signals.  SIGSEGV and SIGBUS stay snapfault's; what the program installs
 * for them is kept by the library and called for faults that are not
 * snapfault's (sf__embed_sigaction).  The snapshot trigger is shared the
 * same way.
 * ------------------------------------------------------------------------ */


SFP_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    sfp_real_resolve();
    if (!sfp_in_runtime) {
        if ((sig == SIGSEGV || sig == SIGBUS) && atomic_load(&sfp_chain_active)) {
            int rc = sf__embed_sigaction(sig, act, old);
            if (rc < 0) {
                errno = -rc;
                return -1;
            }
            return 0;
        }
        if (sig > 0 && sig == sfp_trigger_sig) {
            if (act && (act->sa_flags & SA_SIGINFO) == 0 && act->sa_handler == SIG_ERR) {
                errno = EINVAL;
                return -1;
            }
            return sfp_trigger_sigaction(act, old);
        }
        if (sfp_fatal_shared(sig)) {
            int rc = sfp_fatal_sigaction(sig, act, old);
            if (rc != 0)
                return rc > 0 ? 0 : -1;
        }
    }
    return sfp_real.sigaction(sig, act, old);
}

/* signal() with glibc's BSD semantics, through the interposed sigaction. */
static __sighandler_t signal_via_sigaction(int sig, __sighandler_t h, int flags)
{
    struct sigaction act, old;
    memset(&act, 0, sizeof(act));
    act.sa_handler = h;
    sigemptyset(&act.sa_mask);
    if (!(flags & SA_NODEFER))
        sigaddset(&act.sa_mask, sig);
    act.sa_flags = flags;
    if (sigaction(sig, &act, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

static bool shared_signal(int sig)
{
    return ((sig == SIGSEGV || sig == SIGBUS) && atomic_load(&sfp_chain_active)) ||
           (sig > 0 && sig == sfp_trigger_sig) || sfp_fatal_shared(sig);
}

SFP_EXPORT __sighandler_t signal(int sig, __sighandler_t h)
{
    if (shared_signal(sig) && !sfp_in_runtime)
        return signal_via_sigaction(sig, h, SA_RESTART);
    static __sighandler_t (*real)(int, __sighandler_t);
    if (!real)
        real = (__sighandler_t(*)(int, __sighandler_t))dlsym(RTLD_NEXT, "signal");
    return real ? real(sig, h) : SIG_ERR;
}

__sighandler_t bsd_signal(int sig, __sighandler_t h);
SFP_EXPORT __sighandler_t bsd_signal(int sig, __sighandler_t h) { return signal(sig, h); }

SFP_EXPORT __sighandler_t sysv_signal(int sig, __sighandler_t h)
{
    if (shared_signal(sig) && !sfp_in_runtime)
        return signal_via_sigaction(sig, h, SA_RESETHAND | SA_NODEFER);
    static __sighandler_t (*real)(int, __sighandler_t);
    if (!real)
        real = (__sighandler_t(*)(int, __sighandler_t))dlsym(RTLD_NEXT, "sysv_signal");
    return real ? real(sig, h) : SIG_ERR;
}

/* With faults delivered as signals, a thread that blocks SIGSEGV/SIGBUS
 * and writes a tracked page would be killed: those two stay unblocked.
 * The kernel's writes of the old mask are pre-faulted like other calls. */
static const sigset_t *keep_fault_signals(int how, const sigset_t *set, sigset_t *copy)
{
    if (!set || how == SIG_UNBLOCK || !atomic_load(&sfp_prefault_needed) || sfp_in_runtime)
        return set;
    if (!sigismember(set, SIGSEGV) && !sigismember(set, SIGBUS))
        return set;
    *copy = *set;
    sigdelset(copy, SIGSEGV);
    sigdelset(copy, SIGBUS);
    return copy;
}

SFP_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
    sfp_real_resolve();
    sigset_t copy;
    set = keep_fault_signals(how, set, &copy);
    if (old)
        sfp_prefault(old, sizeof(*old));
    return sfp_real.sigprocmask(how, set, old);
}

SFP_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    sfp_real_resolve();
    sigset_t copy;
    set = keep_fault_signals(how, set, &copy);
    if (old)
        sfp_prefault(old, sizeof(*old));
    return sfp_real.pthread_sigmask(how, set, old);
}

SFP_EXPORT int sigaltstack(const stack_t *ss, stack_t *old)
{
    sfp_real_resolve();
    if (old)
        sfp_prefault(old, sizeof(*old));
    int r = sfp_real.sigaltstack(ss, old);
    if (r == 0 && ss && !(ss->ss_flags & SS_DISABLE) && ss->ss_size)
        sfp_altstack((uintptr_t)ss->ss_sp, (uintptr_t)ss->ss_sp + ss->ss_size);
    return r;
}

/* ------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------ */
SFP_EXPORT int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    sfp_real_resolve();
    atomic_fetch_add(&sfp_creating_threads, 1);
    int r = sfp_real.pthread_create(th, attr, fn, arg);
    uintptr_t lo, hi;
    if (r == 0 && !sfp_in_runtime && atomic_load(&sfp_state) != SFP_DISABLED && sfp_thread_stack(*th, &lo, &hi))
        sfp_thread_created(lo, hi);
    atomic_fetch_sub(&sfp_creating_threads, 1);
    return r;
}

/* ------------------------------------------------------------------------
 * exec and spawn: the preload follows (SNAPFAULT_FOLLOW_EXEC=1) even into
 * environments that dropped LD_PRELOAD or the SNAPFAULT_* settings.  These
 * may run in a vfork child: stack buffers only, no locks.
 * ------------------------------------------------------------------------ */
#define MAX_ENV 1024
#define MAX_ARGS 2048

extern char **environ;

static bool names_self(const char *list)
{
    const char *self = sfp_self_path();
    const char *base = strrchr(self, '/');
    base = base ? base + 1 : self;
    size_t bl = strlen(base);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ':')
            p++;
        const char *s = p;
        while (*p && *p != ' ' && *p != ':')
            p++;
        const char *sb = s;
        for (const char *q = s; q < p; q++)
            if (*q == '/')
                sb = q + 1;
        if ((size_t)(p - sb) == bl && strncmp(sb, base, bl) == 0)
            return true;
    }
    return false;
}

/* Fills out (cap entries) with envp plus what following needs, or returns
 * envp itself when nothing is missing.  ld is a buffer for LD_PRELOAD. */
static char *const *follow_env(char *const *envp, char **out, size_t cap, char *ld, size_t ldcap)
{
    if (!sfp_follow_exec() || !envp)
        return envp;
    size_t n = 0;
    const char *ld_old = NULL;
    while (envp[n]) {
        if (strncmp(envp[n], "LD_PRELOAD=", 11) == 0)
            ld_old = envp[n] + 11;
        n++;
    }
    bool need_ld = !ld_old || !names_self(ld_old);
    size_t nsaved;
    const char *const *saved = sfp_saved_env(&nsaved);
    size_t missing = 0;
    for (size_t i = 0; i < nsaved; i++) {
        const char *eq = strchr(saved[i], '=');
        size_t nl = eq ? (size_t)(eq - saved[i]) + 1 : strlen(saved[i]);
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = strncmp(envp[j], saved[i], nl) == 0;
        missing += !found;
    }
    if (!need_ld && !missing)
        return envp;
    if (n + missing + 2 > cap)
        return envp; /* absurdly large environment: leave it alone */
    size_t k = 0;
    for (size_t j = 0; j < n; j++)
        if (!(need_ld && strncmp(envp[j], "LD_PRELOAD=", 11) == 0))
            out[k++] = envp[j];
    if (need_ld) {
        size_t len = sfp_fmt(ld, ldcap, "LD_PRELOAD=%s%s%s", sfp_self_path(), ld_old && *ld_old ? ":" : "",
                             ld_old ? ld_old : "");
        if (len + 1 < ldcap)
            out[k++] = ld;
    }
    for (size_t i = 0; i < nsaved; i++) {
        const char *eq = strchr(saved[i], '=');
        size_t nl = eq ? (size_t)(eq - saved[i]) + 1 : strlen(saved[i]);
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = strncmp(envp[j], saved[i], nl) == 0;
        if (!found)
            out[k++] = (char *)saved[i];
    }
    out[k] = NULL;
    return out;
}

#define FOLLOW_ENV(envp) \
    char *env_buf_[MAX_ENV + 64]; \
    char ld_buf_[2048]; \
    char *const *fenv_ = follow_env((envp), env_buf_, sizeof(env_buf_) / sizeof(env_buf_[0]), ld_buf_, sizeof(ld_buf_))

SFP_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    sfp_real_resolve();
    FOLLOW_ENV(envp);
    sfp_before_exec();
    return sfp_real.execve(path, argv, fenv_);
}

SFP_EXPORT int execv(const char *path, char *const argv[])
{
    return execve(path, argv, environ);
}

static int (*real_execvpe(void))(const char *, char *const[], char *const[])
{
    static int (*p)(const char *, char *const[], char *const[]);
    if (!p)
        p = (int (*)(const char *, char *const[], char *const[]))dlsym(RTLD_NEXT, "execvpe");
    return p;
}

SFP_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    FOLLOW_ENV(envp);
    int (*p)(const char *, char *const[], char *const[]) = real_execvpe();
    if (!p) {
        errno = ENOSYS;
        return -1;
    }
    sfp_before_exec();
    return p(file, argv, fenv_);
}

SFP_EXPORT int execvp(const char *file, char *const argv[])
{
    return execvpe(file, argv, environ);
}

/* execl*: the variadic list becomes an argv on the stack. */
#define COLLECT_ARGS(arg0, ap, argv, n) \
    do { \
        const char *a0_ = (arg0); \
        __asm__("" : "+r"(a0_)); /* declared nonnull, may be NULL all the same */ \
        argv[0] = (char *)a0_; \
        n = 1; \
        if (a0_) \
            while (n < MAX_ARGS && (argv[n] = va_arg(ap, char *)) != NULL) \
                n++; \
        argv[n] = NULL; \
    } while (0)

SFP_EXPORT int execl(const char *path, const char *arg0, ...)
{
    char *argv[MAX_ARGS + 1];
    size_t n;
    va_list ap;
    va_start(ap, arg0);
    COLLECT_ARGS(arg0, ap, argv, n);
    va_end(ap);
    if (n == MAX_ARGS) {
        errno = E2BIG;
        return -1;
    }
    return execve(path, argv, environ);
}

SFP_EXPORT int execlp(const char *file, const char *arg0, ...)
{
    char *argv[MAX_ARGS + 1];
    size_t n;
    va_list ap;
    va_start(ap, arg0);
    COLLECT_ARGS(arg0, ap, argv, n);
    va_end(ap);
    if (n == MAX_ARGS) {
        errno = E2BIG;
        return -1;
    }
    return execvpe(file, argv, environ);
}

SFP_EXPORT int execle(const char *path, const char *arg0, ...)
{
    char *argv[MAX_ARGS + 1];
    size_t n;
    va_list ap;
    va_start(ap, arg0);
    COLLECT_ARGS(arg0, ap, argv, n);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    if (n == MAX_ARGS) {
        errno = E2BIG;
        return -1;
    }
    return execve(path, argv, envp);
}

SFP_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    sfp_real_resolve();
    FOLLOW_ENV(envp);
    sfp_before_exec();
    return sfp_real.fexecve(fd, argv, fenv_);
}

SFP_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    sfp_real_resolve();
    FOLLOW_ENV(envp);
    sfp_before_exec();
    if (!sfp_real.execveat)
        return (int)sfp_raw_syscall(SYS_execveat, dirfd, (long)path, (long)argv, (long)fenv_, flags, 0);
    return sfp_real.execveat(dirfd, path, argv, fenv_, flags);
}

/* posix_spawn runs the child on a stack libc maps for it: the scanner must
 * not adopt that meanwhile (sfp_creating_threads). */
SFP_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    sfp_real_resolve();
    FOLLOW_ENV(envp);
    atomic_fetch_add(&sfp_creating_threads, 1);
    int r = sfp_real.posix_spawn(pid, path, fa, attr, argv, fenv_);
    atomic_fetch_sub(&sfp_creating_threads, 1);
    return r;
}

SFP_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                            const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    sfp_real_resolve();
    FOLLOW_ENV(envp);
    atomic_fetch_add(&sfp_creating_threads, 1);
    int r = sfp_real.posix_spawnp(pid, file, fa, attr, argv, fenv_);
    atomic_fetch_sub(&sfp_creating_threads, 1);
    return r;
}

/* ------------------------------------------------------------------------
 * _exit skips destructors: the record is finished here (if the runtime
 * lock is free: _exit may come from a signal handler).
 * ------------------------------------------------------------------------ */
SFP_EXPORT void _exit(int status)
{
    sfp_real_resolve();
    sfp_before_exit();
    if (sfp_real._exit)
        sfp_real._exit(status);
    sfp_raw_syscall(SYS_exit_group, status, 0, 0, 0, 0, 0);
    __builtin_unreachable();
}

SFP_EXPORT void _Exit(int status) { _exit(status); }

/* ------------------------------------------------------------------------
 * glibc's malloc maps large blocks with its internal mmap and gives them
 * back with its internal munmap (free) or moves them with its internal
 * mremap (realloc), none of which the interposers see.  A moved mapping
 * keeps its protections (mprotect backend: read-only pages with no region
 * behind them), an unmapped one leaves a stale region an image writer may
 * read.  So a block that glibc mapped on its own is untracked before it is
 * freed or reallocated; the scanner adopts whatever replaces it.
 * ------------------------------------------------------------------------ */
static void (*real_free)(void *);
static void *(*real_realloc)(void *, size_t);
static void *(*real_reallocarray)(void *, size_t, size_t);
static _Atomic int g_glibc_malloc = -1; /* the program's malloc is glibc's */

static void resolve_malloc(void)
{
    if (atomic_load(&g_glibc_malloc) >= 0)
        return;
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_reallocarray = (void *(*)(void *, size_t, size_t))dlsym(RTLD_NEXT, "reallocarray");
    Dl_info info;
    int glibc = real_free && dladdr((void *)real_free, &info) && info.dli_fname &&
                strstr(info.dli_fname, "/libc.so") != NULL;
    atomic_store(&g_glibc_malloc, glibc);
}

/* glibc's chunk header: the size word before the block, IS_MMAPPED = 2;
 * an mmapped chunk's prev_size is its offset in the mapping. */
static void untrack_if_mapped_block(void *p)
{
    if (!p || atomic_load(&g_glibc_malloc) != 1 || !sfp_active())
        return;
    size_t size = ((size_t *)p)[-1];
    if (!(size & 2))
        return;
    size_t prev = ((size_t *)p)[-2];
    uintptr_t start = (uintptr_t)p - 2 * sizeof(size_t) - prev;
    uintptr_t end = (uintptr_t)p - 2 * sizeof(size_t) + (size & ~(size_t)7);
    if ((start & (pgsz() - 1)) || end <= start || !sfp_range_tracked((void *)start, end - start))
        return;
    ENTER();
    sfp_untrack_range(start, end);
    LEAVE();
}

SFP_EXPORT void free(void *p)
{
    resolve_malloc();
    untrack_if_mapped_block(p);
    real_free(p);
}

SFP_EXPORT void *realloc(void *p, size_t n)
{
    resolve_malloc();
    untrack_if_mapped_block(p);
    return real_realloc(p, n);
}

SFP_EXPORT void *reallocarray(void *p, size_t n, size_t m)
{
    resolve_malloc();
    untrack_if_mapped_block(p);
    return real_reallocarray(p, n, m);
}
