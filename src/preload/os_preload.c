/* os_preload.c - the OS contract (src/embed/os.h) inside libsnapfault-preload.so,
 * for the library core and the runtime's own files alike.  Interposed
 * names are never called here: each function reaches libc's entry point
 * (sfp_real, resolved once) or makes the raw system call, so the core never
 * meets the interposers; memory and threads it creates are the runtime's
 * own (never tracked); the allocator is the private heap (alloc.c). */
#include "preload.h"
#include "os.h"

#include <errno.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A raw system call, its result the libc way: -1 and errno. */
static long raw(long n, long a, long b, long c, long d)
{
    long r = sfp_raw_syscall(n, a, b, c, d, 0, 0);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* ------------------------------------------------------------------------
 * Memory: everything the library and the runtime map for themselves
 * (region metadata, the page store, shadows, scratch pages) stays
 * untracked.
 * ------------------------------------------------------------------------ */
void *sf__os_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    void *p = sfp_real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED)
        sfp_own_add((uintptr_t)p, (uintptr_t)p + len);
    return p;
}

int sf__os_munmap(void *addr, size_t len)
{
    int r = sfp_real_munmap(addr, len);
    if (r == 0)
        sfp_own_remove((uintptr_t)addr, (uintptr_t)addr + len);
    return r;
}

int sf__os_mprotect(void *addr, size_t len, int prot)
{
    /* The library re-opens a range it stops tracking (mprotect backend);
     * a range whose mapping was replaced meanwhile must keep the new
     * mapping's protection. */
    if (sfp_stale_hi && (uintptr_t)addr >= sfp_stale_lo && (uintptr_t)addr + len <= sfp_stale_hi &&
        (prot & PROT_WRITE))
        return 0;
    return sfp_real_mprotect(addr, len, prot);
}

int sf__os_madvise(void *addr, size_t len, int advice) { return sfp_real_madvise(addr, len, advice); }
int sf__os_msync(void *addr, size_t len, int flags) { return msync(addr, len, flags); }

void *sf__os_malloc(size_t n) { return sfp_malloc(n); }
void *sf__os_calloc(size_t n, size_t size) { return sfp_calloc(n, size); }
void *sf__os_realloc(void *p, size_t n) { return sfp_realloc(p, n); }
void sf__os_free(void *p) { sfp_free(p); }

/* ------------------------------------------------------------------------
 * Signals: libc's sigaction and pthread_sigmask, never the interposers
 * (which would hand the core's own handler to the chain).
 * ------------------------------------------------------------------------ */
int sf__os_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    sfp_real_ready();
    if (sfp_real.sigaction)
        return sfp_real.sigaction(sig, act, old);
    errno = ENOSYS;
    return -1;
}

int sf__os_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    sfp_real_ready();
    if (sfp_real.pthread_sigmask)
        return sfp_real.pthread_sigmask(how, set, old);
    long r = sfp_raw_syscall(SYS_rt_sigprocmask, how, (long)set, (long)old, 8, 0, 0);
    return r < 0 ? (int)-r : 0;
}

int sf__os_sigpending(sigset_t *set) { return sigpending(set); }
int sf__os_sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *timeout)
{
    return sigtimedwait(set, info, timeout);
}
int sf__os_tgkill(pid_t tgid, pid_t tid, int sig) { return (int)syscall(SYS_tgkill, tgid, tid, sig); }

/* ------------------------------------------------------------------------
 * Threads of the library (uffd handlers, the pre-copy) and of the runtime:
 * their stacks are the runtime's own memory.
 * ------------------------------------------------------------------------ */
bool sfp_thread_stack(pthread_t th, uintptr_t *lo, uintptr_t *hi)
{
    pthread_attr_t a;
    bool ok = false;
    if (pthread_getattr_np(th, &a) == 0) {
        void *base;
        size_t size, guard = 0;
        if (pthread_attr_getstack(&a, &base, &size) == 0) {
            pthread_attr_getguardsize(&a, &guard);
            *lo = (uintptr_t)base - guard;
            *hi = (uintptr_t)base + size;
            ok = true;
        }
        pthread_attr_destroy(&a);
    }
    return ok;
}

int sf__os_thread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    sfp_real_ready();
    atomic_fetch_add(&sfp_creating_threads, 1);
    int r = sfp_real.pthread_create ? sfp_real.pthread_create(th, attr, fn, arg) : ENOSYS;
    uintptr_t lo, hi;
    if (r == 0 && sfp_thread_stack(*th, &lo, &hi))
        sfp_own_add(lo, hi);
    atomic_fetch_sub(&sfp_creating_threads, 1);
    return r;
}

int sf__os_thread_join(pthread_t th, void **ret) { return pthread_join(th, ret); }
pid_t sf__os_getpid(void) { return (pid_t)syscall(SYS_getpid); }
pid_t sf__os_gettid(void) { return (pid_t)syscall(SYS_gettid); }
void sf__os_yield(void) { sched_yield(); }
int sf__os_futex_wait(_Atomic int *addr, int val, const struct timespec *timeout)
{
    return (int)syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, timeout, NULL, 0);
}
int sf__os_futex_wake(_Atomic int *addr, int n)
{
    return (int)syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* ------------------------------------------------------------------------
 * Files.  Where the preload interposes the name (read, pread, getdents64,
 * pipe2, poll, fstat, getrandom): the raw system call, never pre-faulted
 * (the uffd handler threads read and poll in a loop; every buffer is the
 * runtime's own memory).  The other names are libc's.
 * ------------------------------------------------------------------------ */
int sf__os_open(const char *path, int flags) { return open(path, flags); }
int sf__os_openat(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }
int sf__os_close(int fd) { return close(fd); }
ssize_t sf__os_write(int fd, const void *buf, size_t n) { return write(fd, buf, n); }

ssize_t sf__os_read(int fd, void *buf, size_t n) { return raw(SYS_read, fd, (long)buf, (long)n, 0); }

ssize_t sf__os_pread(int fd, void *buf, size_t n, off_t off)
{
    return raw(SYS_pread64, fd, (long)buf, (long)n, off);
}

ssize_t sf__os_read_self(void *dst, const void *src, size_t n)
{
    struct iovec l = {dst, n}, r = {(void *)src, n};
    long pid = sfp_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    long got = sfp_raw_syscall(SYS_process_vm_readv, pid, (long)&l, 1, (long)&r, 1, 0);
    if (got < 0 && got > -4096) {
        errno = (int)-got;
        return -1;
    }
    return got;
}

off_t sf__os_lseek(int fd, off_t off, int whence)
{
    return (off_t)raw(SYS_lseek, fd, (long)off, whence, 0);
}

ssize_t sf__os_getdents64(int fd, void *buf, size_t n)
{
    return raw(SYS_getdents64, fd, (long)buf, (long)n, 0);
}

int sf__os_pipe2(int fds[2], int flags) { return (int)raw(SYS_pipe2, (long)fds, flags, 0, 0); }

int sf__os_poll(struct pollfd *fds, unsigned long n, int timeout_ms)
{
    return (int)raw(SYS_poll, (long)fds, (long)n, timeout_ms, 0);
}

int sf__os_file_size(int fd, uint64_t *size)
{
    struct stat st; /* x86_64: glibc's struct stat is the kernel's */
    if (raw(SYS_fstat, fd, (long)&st, 0, 0) < 0)
        return -errno;
    if (S_ISREG(st.st_mode)) {
        *size = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
        return 0;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t sz;
        if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
            return -errno;
        *size = sz;
        return 0;
    }
    return -ESPIPE;
}

int sf__os_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
int sf__os_userfaultfd(int flags) { return (int)syscall(SYS_userfaultfd, flags); }

/* ------------------------------------------------------------------------
 * Time, randomness, the environment.
 * ------------------------------------------------------------------------ */
int sf__os_clock_gettime(clockid_t clock, struct timespec *ts) { return clock_gettime(clock, ts); }

ssize_t sf__os_getrandom(void *buf, size_t n, unsigned flags)
{
    return raw(SYS_getrandom, (long)buf, (long)n, flags, 0);
}

const char *sf__os_getenv(const char *name) { return secure_getenv(name); }
long sf__os_page_size(void) { return sysconf(_SC_PAGESIZE); }
