/* os.h - the OS contract: every call the library core (the C files of
 * src/) makes to the kernel, the C library's allocator or the environment
 * goes through one of these functions.  Two implementations: os_libc.c
 * (libsnapfault.so, the tests, the fuzz targets) and
 * src/preload/os_preload.c (the LD_PRELOAD runtime, whose own heap and
 * interposers the core must reach or avoid on purpose).
 * The build fails when a core object references an OS function directly
 * (scripts/check_os_calls.py; the pure libc functions it accepts are listed
 * in src/os-allowed.txt).  See doc/DESIGN.md, "The OS contract".
 *
 * Unless a function says otherwise it has the semantics of its POSIX/Linux
 * namesake, errors included: -1 (MAP_FAILED for sf__os_mmap) with errno
 * set.  An implementation may make the raw system call instead of calling
 * libc, but it keeps errno's meaning.  Labels as in include/snapfault.h:
 * "async-signal-safe" means callable from snapfault's SIGSEGV/SIGBUS handler
 * (and from a uffd handler thread) with every signal blocked, in any thread,
 * including one that a signal interrupted inside the allocator or inside a
 * call of this contract; such a function takes no lock. */
#ifndef SF_OS_H
#define SF_OS_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define SF_OS __attribute__((visibility("hidden")))

/* ------------------------------------------------------------------------
 * Memory mappings.  mprotect, madvise and msync are async-signal-safe;
 * mmap and munmap are not (the preload registers what they map, under a
 * lock of its own).  Under the preload, mappings made here belong to the
 * runtime (never tracked) until unmapped, and a protect call may be
 * dropped for a range whose mapping the program has replaced meanwhile (it
 * keeps its own protection).
 * ------------------------------------------------------------------------ */
SF_OS void *sf__os_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
SF_OS int sf__os_munmap(void *addr, size_t len);
SF_OS int sf__os_mprotect(void *addr, size_t len, int prot);
SF_OS int sf__os_madvise(void *addr, size_t len, int advice);
SF_OS int sf__os_msync(void *addr, size_t len, int flags);

/* ------------------------------------------------------------------------
 * The allocator: malloc(3) family.  Not async-signal-safe: never on the
 * fault path.  Under the preload it is the runtime's private heap, so the
 * core's own state never sits in tracked memory.  Memory from one
 * implementation is freed only by the same one.
 * ------------------------------------------------------------------------ */
SF_OS void *sf__os_malloc(size_t n);
SF_OS void *sf__os_calloc(size_t n, size_t size);
SF_OS void *sf__os_realloc(void *p, size_t n);
SF_OS void sf__os_free(void *p);

/* ------------------------------------------------------------------------
 * Signals.  All async-signal-safe (the preload resolves libc's entry
 * points at start-up, before any fault).  sf__os_sigaction reaches the
 * kernel's disposition itself, never an embedding's sigaction interposer
 * (the handler chain in fault.c is how the program's handlers are kept).
 * sf__os_sigmask is pthread_sigmask(3): 0 or an error number, errno
 * untouched.  sf__os_tgkill sends sig to thread tid of process tgid.
 * ------------------------------------------------------------------------ */
SF_OS int sf__os_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
SF_OS int sf__os_sigmask(int how, const sigset_t *set, sigset_t *old);
SF_OS int sf__os_sigpending(sigset_t *set);
SF_OS int sf__os_sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *timeout);
SF_OS int sf__os_tgkill(pid_t tgid, pid_t tid, int sig);

/* ------------------------------------------------------------------------
 * Threads and processes.
 * sf__os_thread_create/join: pthread_create(3)/pthread_join(3), 0 or an
 *   error number.  Not async-signal-safe.  Under the preload the new
 *   thread's stack belongs to the runtime (never tracked).  The caller
 *   sets the signal mask the thread inherits.
 * sf__os_getpid, sf__os_gettid: the kernel's ids (raw system calls, right
 *   in a fork child too).  Async-signal-safe.
 * sf__os_yield: sched_yield(2).  Async-signal-safe.
 * sf__os_futex_wait: FUTEX_WAIT_PRIVATE on *addr while it holds val, until
 *   woken or timeout (relative, NULL: none) passes; 0, or -1 with errno
 *   EAGAIN (*addr != val), EINTR, ETIMEDOUT.  sf__os_futex_wake:
 *   FUTEX_WAKE_PRIVATE of up to n waiters; the number woken or -1.  Both
 *   async-signal-safe.
 * ------------------------------------------------------------------------ */
SF_OS int sf__os_thread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                               void *arg);
SF_OS int sf__os_thread_join(pthread_t th, void **ret);
SF_OS pid_t sf__os_getpid(void);
SF_OS pid_t sf__os_gettid(void);
SF_OS void sf__os_yield(void);
SF_OS int sf__os_futex_wait(_Atomic int *addr, int val, const struct timespec *timeout);
SF_OS int sf__os_futex_wake(_Atomic int *addr, int n);

/* ------------------------------------------------------------------------
 * Files and descriptors.  All async-signal-safe, and none of them
 * pre-faults or otherwise treats tracked memory specially: a buffer the
 * kernel writes into must be the core's own memory (never tracked).
 * sf__os_open/openat: no O_CREAT (no mode argument).
 * sf__os_lseek: lseek(2) (a directory descriptor rewound to list it again).
 * sf__os_file_size: the size of a regular file or of a block device
 *   (BLKGETSIZE64); 0 or -errno, -ESPIPE for anything else.
 * sf__os_ioctl: raw ioctl(2).  Only src/uffd.c calls it (the build checks
 *   that), so every userfaultfd and PAGEMAP_SCAN request has one home.
 * sf__os_userfaultfd: the userfaultfd(2) system call (uffd.c only).
 * ------------------------------------------------------------------------ */
SF_OS int sf__os_open(const char *path, int flags);
SF_OS int sf__os_openat(int dirfd, const char *path, int flags);
SF_OS int sf__os_close(int fd);
SF_OS ssize_t sf__os_read(int fd, void *buf, size_t n);
SF_OS ssize_t sf__os_pread(int fd, void *buf, size_t n, off_t off);
SF_OS ssize_t sf__os_write(int fd, const void *buf, size_t n);
SF_OS ssize_t sf__os_getdents64(int fd, void *buf, size_t n);
SF_OS off_t sf__os_lseek(int fd, off_t off, int whence);
SF_OS int sf__os_pipe2(int fds[2], int flags);
struct pollfd;
SF_OS int sf__os_poll(struct pollfd *fds, unsigned long n, int timeout_ms);
SF_OS int sf__os_file_size(int fd, uint64_t *size);
SF_OS int sf__os_ioctl(int fd, unsigned long request, void *arg);
SF_OS int sf__os_userfaultfd(int flags);

/* sf__os_read_self: copies n bytes of this process's memory at src into
 * dst without touching src directly (process_vm_readv(2) on the process
 * itself): memory unmapped meanwhile fails the call instead of raising
 * SIGSEGV.  Returns the bytes copied (fewer when the source ends in a hole)
 * or -1 and errno (EFAULT: nothing readable; ENOSYS, EPERM: not available,
 * a seccomp filter).  Async-signal-safe. */
SF_OS ssize_t sf__os_read_self(void *dst, const void *src, size_t n);

/* ------------------------------------------------------------------------
 * Time, randomness, the environment.
 * sf__os_clock_gettime: clock_gettime(2).  Async-signal-safe.
 * sf__os_getrandom: getrandom(2) into the core's own memory.
 *   Async-signal-safe.
 * sf__os_getenv: secure_getenv(3) (NULL in a set-user-ID process).  Not
 *   async-signal-safe; the string stays valid while the environment is
 *   not changed.
 * sf__os_page_size: the page size, or -1.  Not async-signal-safe (once,
 *   from sf__init).
 * ------------------------------------------------------------------------ */
SF_OS int sf__os_clock_gettime(clockid_t clock, struct timespec *ts);
SF_OS ssize_t sf__os_getrandom(void *buf, size_t n, unsigned flags);
SF_OS const char *sf__os_getenv(const char *name);
SF_OS long sf__os_page_size(void);

#endif
