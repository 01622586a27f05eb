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

bool sfp_real_ready(void)
{
    if (__builtin_expect(!!(atomic_load_explicit(&g_resolved, memory_order_acquire)), 1))
        return true;
    if (sfp_in_runtime)
        return false;
    sfp_real_resolve();
    return true;
}

/* libc's mmap and munmap once resolved, raw system calls before; mprotect
 * and madvise always raw. */
void *sfp_real_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    if (sfp_real_ready() && sfp_real.mmap)
        return sfp_real.mmap(a, len, prot, flags, fd, off);
    long r = sfp_raw_syscall(SYS_mmap, (long)a, (long)len, prot, flags, fd, off);
    return (void *)raw_ret(r);
}

int sfp_real_munmap(void *a, size_t len)
{
    if (sfp_real_ready() && sfp_real.munmap)
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
