/* os_libc.c - the OS contract (os.h) on the C library: the implementation
 * of libsnapfault.so, the tests and the tools.  Each function is its libc
 * namesake, or the raw system call where libc has no wrapper. */
#include "embed/os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <unistd.h>

void *sf__os_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}
int sf__os_munmap(void *addr, size_t len) { return munmap(addr, len); }
int sf__os_mprotect(void *addr, size_t len, int prot) { return mprotect(addr, len, prot); }
int sf__os_madvise(void *addr, size_t len, int advice) { return madvise(addr, len, advice); }
int sf__os_msync(void *addr, size_t len, int flags) { return msync(addr, len, flags); }

void *sf__os_malloc(size_t n) { return malloc(n); }
void *sf__os_calloc(size_t n, size_t size) { return calloc(n, size); }
void *sf__os_realloc(void *p, size_t n) { return realloc(p, n); }
void sf__os_free(void *p) { free(p); }

int sf__os_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    return sigaction(sig, act, old);
}
int sf__os_sigmask(int how, const sigset_t *set, sigset_t *old) { return pthread_sigmask(how, set, old); }
int sf__os_sigpending(sigset_t *set) { return sigpending(set); }
int sf__os_sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *timeout)
{
    return sigtimedwait(set, info, timeout);
}
int sf__os_tgkill(pid_t tgid, pid_t tid, int sig) { return (int)syscall(SYS_tgkill, tgid, tid, sig); }

int sf__os_thread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    return pthread_create(th, attr, fn, arg);
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

int sf__os_open(const char *path, int flags) { return open(path, flags); }
int sf__os_openat(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }
int sf__os_close(int fd) { return close(fd); }
ssize_t sf__os_read(int fd, void *buf, size_t n) { return read(fd, buf, n); }
ssize_t sf__os_pread(int fd, void *buf, size_t n, off_t off) { return pread(fd, buf, n, off); }
ssize_t sf__os_write(int fd, const void *buf, size_t n) { return write(fd, buf, n); }
ssize_t sf__os_getdents64(int fd, void *buf, size_t n) { return getdents64(fd, buf, n); }
off_t sf__os_lseek(int fd, off_t off, int whence) { return lseek(fd, off, whence); }
int sf__os_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
int sf__os_poll(struct pollfd *fds, unsigned long n, int timeout_ms) { return poll(fds, n, timeout_ms); }

ssize_t sf__os_read_self(void *dst, const void *src, size_t n)
{
    struct iovec l = {dst, n}, r = {(void *)src, n};
    return process_vm_readv(getpid(), &l, 1, &r, 1, 0);
}

int sf__os_file_size(int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
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

int sf__os_clock_gettime(clockid_t clock, struct timespec *ts) { return clock_gettime(clock, ts); }
ssize_t sf__os_getrandom(void *buf, size_t n, unsigned flags) { return getrandom(buf, n, flags); }
const char *sf__os_getenv(const char *name) { return secure_getenv(name); }
long sf__os_page_size(void) { return sysconf(_SC_PAGESIZE); }
