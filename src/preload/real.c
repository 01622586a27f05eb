/* real.c - libc's own entry points for everything the preload interposes,
 * resolved once with dlsym(RTLD_NEXT), raw system calls before that. */
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct sfp_real sfp_real;
__thread int sfp_in_runtime __attribute__((tls_model("initial-exec")));

long sfp_raw_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* A raw call's result the libc way: -1 and errno. */
static long raw_ret(long r)
{
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

static _Atomic int g_resolved;
static pthread_mutex_t g_resolve_lock = PTHREAD_MUTEX_INITIALIZER;

#define RESOLVE(name) \
    do { \
        void *p = dlsym(RTLD_NEXT, #name); \
        if (p) \
            __atomic_store_n((void **)&sfp_real.name, p, __ATOMIC_RELEASE); \
    } while (0)

void sfp_real_resolve(void)
{
    if (atomic_load_explicit(&g_resolved, memory_order_acquire))
        return;
    /* dlsym may allocate or take loader locks, which may land in an
     * interposer again: the guard makes those use raw calls. */
    sfp_in_runtime++;
    pthread_mutex_lock(&g_resolve_lock);
    if (!atomic_load(&g_resolved)) {
        RESOLVE(mmap);
        RESOLVE(munmap);
        RESOLVE(mprotect);
        RESOLVE(madvise);
        RESOLVE(mremap);
        RESOLVE(brk);
        RESOLVE(sbrk);
        RESOLVE(sigaction);
        RESOLVE(sigprocmask);
        RESOLVE(pthread_sigmask);
        RESOLVE(sigaltstack);
        RESOLVE(pthread_create);
        RESOLVE(execve);
        RESOLVE(execveat);
        RESOLVE(fexecve);
        RESOLVE(posix_spawn);
        RESOLVE(posix_spawnp);
        RESOLVE(_exit);
        sfp_io_resolve();
        atomic_store_explicit(&g_resolved, 1, memory_order_release);
    }
    pthread_mutex_unlock(&g_resolve_lock);
    sfp_runtime_leave();
}

static bool ready(void)
{
    if (__builtin_expect(!!(atomic_load_explicit(&g_resolved, memory_order_acquire)), 1))
        return true;
    if (sfp_in_runtime)
        return false;
    sfp_real_resolve();
    return true;
}

/* ------------------------------------------------------------------------
 * The calls the preload itself makes.  -Wl,--wrap=NAME sends every
 * undefined reference to NAME inside the preload (library core included)
 * to __wrap_NAME, so internal calls never meet the interposers.
 * ------------------------------------------------------------------------ */
void *__wrap_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap64(void *a, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_munmap(void *a, size_t len);
int __wrap_mprotect(void *a, size_t len, int prot);
int __wrap_madvise(void *a, size_t len, int advice);
int __wrap_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
int __wrap_sigprocmask(int how, const sigset_t *set, sigset_t *old);
int __wrap_pthread_sigmask(int how, const sigset_t *set, sigset_t *old);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

void *sfp_real_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    if (ready() && sfp_real.mmap)
        return sfp_real.mmap(a, len, prot, flags, fd, off);
    long r = sfp_raw_syscall(SYS_mmap, (long)a, (long)len, prot, flags, fd, off);
    return (void *)raw_ret(r);
}

int sfp_real_munmap(void *a, size_t len)
{
    if (ready() && sfp_real.munmap)
        return sfp_real.munmap(a, len);
    return (int)raw_ret(sfp_raw_syscall(SYS_munmap, (long)a, (long)len, 0, 0, 0, 0));
}

int sfp_real_mprotect(void *a, size_t len, int prot)
{
    /* Called from snapfault's SIGSEGV handler: a raw call is
     * async-signal-safe and cannot depend on resolution. */
    return (int)raw_ret(sfp_raw_syscall(SYS_mprotect, (long)a, (long)len, prot, 0, 0, 0));
}

int sfp_real_madvise(void *a, size_t len, int advice)
{
    return (int)raw_ret(sfp_raw_syscall(SYS_madvise, (long)a, (long)len, advice, 0, 0, 0));
}

void *__wrap_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    void *p = sfp_real_mmap(a, len, prot, flags, fd, off);
    /* Everything the library and the runtime map for themselves (region
     * metadata, the page store, scratch pages) stays untracked. */
    if (p != MAP_FAILED)
        sfp_own_add((uintptr_t)p, (uintptr_t)p + len);
    return p;
}

void *__wrap_mmap64(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    return __wrap_mmap(a, len, prot, flags, fd, off);
}

int __wrap_munmap(void *a, size_t len)
{
    int r = sfp_real_munmap(a, len);
    if (r == 0)
        sfp_own_remove((uintptr_t)a, (uintptr_t)a + len);
    return r;
}

int __wrap_mprotect(void *a, size_t len, int prot)
{
    /* The library re-opens a range it stops tracking (mprotect backend);
     * a range whose mapping was replaced meanwhile must keep the new
     * mapping's protection. */
    if (sfp_stale_hi && (uintptr_t)a >= sfp_stale_lo && (uintptr_t)a + len <= sfp_stale_hi &&
        (prot & PROT_WRITE))
        return 0;
    return sfp_real_mprotect(a, len, prot);
}
int __wrap_madvise(void *a, size_t len, int advice) { return sfp_real_madvise(a, len, advice); }

int __wrap_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    ready();
    if (sfp_real.sigaction)
        return sfp_real.sigaction(sig, act, old);
    errno = ENOSYS;
    return -1;
}

int __wrap_sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
    ready();
    return sfp_real.sigprocmask ? sfp_real.sigprocmask(how, set, old)
                                : (int)raw_ret(sfp_raw_syscall(SYS_rt_sigprocmask, how, (long)set,
                                                               (long)old, 8, 0, 0));
}

int __wrap_pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    ready();
    if (sfp_real.pthread_sigmask)
        return sfp_real.pthread_sigmask(how, set, old);
    long r = sfp_raw_syscall(SYS_rt_sigprocmask, how, (long)set, (long)old, 8, 0, 0);
    return r < 0 ? (int)-r : 0;
}

/* Threads of the library (uffd handlers) and of the runtime: their stacks
 * are the runtime's own memory. */
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    ready();
    atomic_fetch_add(&sfp_creating_threads, 1);
    int r = sfp_real.pthread_create ? sfp_real.pthread_create(th, attr, fn, arg) : ENOSYS;
    if (r == 0) {
        pthread_attr_t a;
        if (pthread_getattr_np(*th, &a) == 0) {
            void *base;
            size_t size, guard = 0;
            if (pthread_attr_getstack(&a, &base, &size) == 0) {
                pthread_attr_getguardsize(&a, &guard);
                sfp_own_add((uintptr_t)base - guard, (uintptr_t)base + size);
            }
            pthread_attr_destroy(&a);
        }
    }
    atomic_fetch_sub(&sfp_creating_threads, 1);
    return r;
}

void *__wrap_malloc(size_t n) { return sfp_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return sfp_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return sfp_realloc(p, n); }
void __wrap_free(void *p) { sfp_free(p); }

/* Calls the library core makes that the preload also interposes (the uffd
 * handler threads read and poll in a loop): raw, never pre-faulted. */
ssize_t __wrap_read(int fd, void *buf, size_t n);
ssize_t __wrap_pread64(int fd, void *buf, size_t n, off_t off);
int __wrap_poll(void *fds, unsigned long n, int timeout);
int __wrap_pipe2(int fds[2], int flags);
int __wrap_fstat64(int fd, void *st);

ssize_t __wrap_read(int fd, void *buf, size_t n)
{
    return (ssize_t)raw_ret(sfp_raw_syscall(SYS_read, fd, (long)buf, (long)n, 0, 0, 0));
}

ssize_t __wrap_pread64(int fd, void *buf, size_t n, off_t off)
{
    return (ssize_t)raw_ret(sfp_raw_syscall(SYS_pread64, fd, (long)buf, (long)n, off, 0, 0));
}

int __wrap_poll(void *fds, unsigned long n, int timeout)
{
    return (int)raw_ret(sfp_raw_syscall(SYS_poll, (long)fds, (long)n, timeout, 0, 0, 0));
}

int __wrap_pipe2(int fds[2], int flags)
{
    return (int)raw_ret(sfp_raw_syscall(SYS_pipe2, (long)fds, flags, 0, 0, 0, 0));
}

int __wrap_fstat64(int fd, void *st)
{
    /* x86_64: glibc's struct stat64 is the kernel's struct stat */
    return (int)raw_ret(sfp_raw_syscall(SYS_fstat, fd, (long)st, 0, 0, 0, 0));
}
