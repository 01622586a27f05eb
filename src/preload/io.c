/* io.c - calls that make the kernel write into the program's buffers, whose
 * destinations are pre-faulted when faults arrive as signals (EFAULT else). */
#include "runtime.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Touches every tracked page of [buf, buf+len) with an atomic no-op write
 * (lock or 0): the fault is resolved by snapfault, and a concurrent writer's
 * store is never lost.  Pages the library believes writable are touched
 * too: a protection can outlive its state (a collector's protect racing a
 * handler, a partly failed re-arm), and the library heals such a page when
 * it faults; the kernel would only say EFAULT. */
void sfp_prefault(const void *buf, size_t len)
{
    if (!len || !buf || !atomic_load_explicit(&sfp_prefault_needed, memory_order_relaxed))
        return;
    uintptr_t a = (uintptr_t)buf & ~(uintptr_t)(sf_page_size - 1);
    uintptr_t e = (uintptr_t)buf + len;
    if (e < a)
        return;
    for (uintptr_t p = a; p < e; p += sf_page_size) {
        if (sf__embed_page_state(p, NULL) != SF_EMBED_UNTRACKED)
            __atomic_fetch_or((unsigned char *)p, 0, __ATOMIC_RELAXED);
    }
}

bool sfp_range_tracked(const void *buf, size_t len)
{
    if (!len || !buf)
        return false;
    return sf__embed_regions_overlap((uintptr_t)buf, (uintptr_t)buf + len);
}

static bool need(void)
{
    return atomic_load_explicit(&sfp_prefault_needed, memory_order_relaxed) && !sfp_in_runtime;
}

/* Resolved on first use (dlsym), before that never needed: the runtime
 * pre-faults only once it is ready. */
#define REAL(name) \
    if (__builtin_expect(!real_##name, 0)) \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

int __underflow(FILE *fp);
int __uflow(FILE *fp);

/* libc's versions, resolved at start-up (sfp_io_resolve, from a constructor)
 * so that a signal handler's read() never runs dlsym. */
static __typeof__(read) *real_read;
static __typeof__(readdir) *real_readdir;
static __typeof__(readdir64) *real_readdir64;
static __typeof__(pread) *real_pread;
static __typeof__(pread64) *real_pread64;
static __typeof__(readv) *real_readv;
static __typeof__(preadv) *real_preadv;
static __typeof__(preadv64) *real_preadv64;
static __typeof__(preadv2) *real_preadv2;
static __typeof__(preadv64v2) *real_preadv64v2;
static __typeof__(recv) *real_recv;
static __typeof__(recvfrom) *real_recvfrom;
static __typeof__(recvmsg) *real_recvmsg;
static __typeof__(recvmmsg) *real_recvmmsg;
static __typeof__(accept) *real_accept;
static __typeof__(accept4) *real_accept4;
static __typeof__(getsockname) *real_getsockname;
static __typeof__(getpeername) *real_getpeername;
static __typeof__(getsockopt) *real_getsockopt;
static __typeof__(socketpair) *real_socketpair;
static __typeof__(pipe) *real_pipe;
static __typeof__(pipe2) *real_pipe2;
static __typeof__(getdents64) *real_getdents64;
static __typeof__(stat) *real_stat;
static __typeof__(lstat) *real_lstat;
static __typeof__(fstat) *real_fstat;
static __typeof__(fstatat) *real_fstatat;
static __typeof__(stat64) *real_stat64;
static __typeof__(lstat64) *real_lstat64;
static __typeof__(fstat64) *real_fstat64;
static __typeof__(fstatat64) *real_fstatat64;
static __typeof__(statx) *real_statx;
static __typeof__(readlink) *real_readlink;
static __typeof__(readlinkat) *real_readlinkat;
static __typeof__(getcwd) *real_getcwd;
static __typeof__(getrandom) *real_getrandom;
static __typeof__(waitpid) *real_waitpid;
static __typeof__(wait) *real_wait;
static __typeof__(wait4) *real_wait4;
static __typeof__(waitid) *real_waitid;
static __typeof__(poll) *real_poll;
static __typeof__(ppoll) *real_ppoll;
static __typeof__(epoll_wait) *real_epoll_wait;
static __typeof__(epoll_pwait) *real_epoll_pwait;
static __typeof__(select) *real_select;
static __typeof__(nanosleep) *real_nanosleep;
static __typeof__(fread) *real_fread;
static __typeof__(fgets) *real_fgets;
static __typeof__(fgetc) *real_fgetc;
static __typeof__(getdelim) *real_getdelim;
static __typeof__(__uflow) *real___uflow;
static __typeof__(__underflow) *real___underflow;

void sfp_io_resolve(void)
{
    real_readdir = (__typeof__(readdir) *)dlsym(RTLD_NEXT, "readdir");
    real_readdir64 = (__typeof__(readdir64) *)dlsym(RTLD_NEXT, "readdir64");
    real_read = (__typeof__(read) *)dlsym(RTLD_NEXT, "read");
    real_pread = (__typeof__(pread) *)dlsym(RTLD_NEXT, "pread");
    real_pread64 = (__typeof__(pread64) *)dlsym(RTLD_NEXT, "pread64");
    real_readv = (__typeof__(readv) *)dlsym(RTLD_NEXT, "readv");
    real_preadv = (__typeof__(preadv) *)dlsym(RTLD_NEXT, "preadv");
    real_preadv64 = (__typeof__(preadv64) *)dlsym(RTLD_NEXT, "preadv64");
    real_preadv2 = (__typeof__(preadv2) *)dlsym(RTLD_NEXT, "preadv2");
    real_preadv64v2 = (__typeof__(preadv64v2) *)dlsym(RTLD_NEXT, "preadv64v2");
    real_recv = (__typeof__(recv) *)dlsym(RTLD_NEXT, "recv");
    real_recvfrom = (__typeof__(recvfrom) *)dlsym(RTLD_NEXT, "recvfrom");
    real_recvmsg = (__typeof__(recvmsg) *)dlsym(RTLD_NEXT, "recvmsg");
    real_recvmmsg = (__typeof__(recvmmsg) *)dlsym(RTLD_NEXT, "recvmmsg");
    real_accept = (__typeof__(accept) *)dlsym(RTLD_NEXT, "accept");
    real_accept4 = (__typeof__(accept4) *)dlsym(RTLD_NEXT, "accept4");
    real_getsockname = (__typeof__(getsockname) *)dlsym(RTLD_NEXT, "getsockname");
    real_getpeername = (__typeof__(getpeername) *)dlsym(RTLD_NEXT, "getpeername");
    real_getsockopt = (__typeof__(getsockopt) *)dlsym(RTLD_NEXT, "getsockopt");
    real_socketpair = (__typeof__(socketpair) *)dlsym(RTLD_NEXT, "socketpair");
    real_pipe = (__typeof__(pipe) *)dlsym(RTLD_NEXT, "pipe");
    real_pipe2 = (__typeof__(pipe2) *)dlsym(RTLD_NEXT, "pipe2");
    real_getdents64 = (__typeof__(getdents64) *)dlsym(RTLD_NEXT, "getdents64");
    real_stat = (__typeof__(stat) *)dlsym(RTLD_NEXT, "stat");
    real_lstat = (__typeof__(lstat) *)dlsym(RTLD_NEXT, "lstat");
    real_fstat = (__typeof__(fstat) *)dlsym(RTLD_NEXT, "fstat");
    real_fstatat = (__typeof__(fstatat) *)dlsym(RTLD_NEXT, "fstatat");
    real_stat64 = (__typeof__(stat64) *)dlsym(RTLD_NEXT, "stat64");
    real_lstat64 = (__typeof__(lstat64) *)dlsym(RTLD_NEXT, "lstat64");
    real_fstat64 = (__typeof__(fstat64) *)dlsym(RTLD_NEXT, "fstat64");
    real_fstatat64 = (__typeof__(fstatat64) *)dlsym(RTLD_NEXT, "fstatat64");
    real_statx = (__typeof__(statx) *)dlsym(RTLD_NEXT, "statx");
    real_readlink = (__typeof__(readlink) *)dlsym(RTLD_NEXT, "readlink");
    real_readlinkat = (__typeof__(readlinkat) *)dlsym(RTLD_NEXT, "readlinkat");
    real_getcwd = (__typeof__(getcwd) *)dlsym(RTLD_NEXT, "getcwd");
    real_getrandom = (__typeof__(getrandom) *)dlsym(RTLD_NEXT, "getrandom");
    real_waitpid = (__typeof__(waitpid) *)dlsym(RTLD_NEXT, "waitpid");
    real_wait = (__typeof__(wait) *)dlsym(RTLD_NEXT, "wait");
    real_wait4 = (__typeof__(wait4) *)dlsym(RTLD_NEXT, "wait4");
    real_waitid = (__typeof__(waitid) *)dlsym(RTLD_NEXT, "waitid");
    real_poll = (__typeof__(poll) *)dlsym(RTLD_NEXT, "poll");
    real_ppoll = (__typeof__(ppoll) *)dlsym(RTLD_NEXT, "ppoll");
    real_epoll_wait = (__typeof__(epoll_wait) *)dlsym(RTLD_NEXT, "epoll_wait");
    real_epoll_pwait = (__typeof__(epoll_pwait) *)dlsym(RTLD_NEXT, "epoll_pwait");
    real_select = (__typeof__(select) *)dlsym(RTLD_NEXT, "select");
    real_nanosleep = (__typeof__(nanosleep) *)dlsym(RTLD_NEXT, "nanosleep");
    real_fread = (__typeof__(fread) *)dlsym(RTLD_NEXT, "fread");
    real_fgets = (__typeof__(fgets) *)dlsym(RTLD_NEXT, "fgets");
    real_fgetc = (__typeof__(fgetc) *)dlsym(RTLD_NEXT, "fgetc");
    real_getdelim = (__typeof__(getdelim) *)dlsym(RTLD_NEXT, "getdelim");
    real___uflow = (__typeof__(__uflow) *)dlsym(RTLD_NEXT, "__uflow");
    real___underflow = (__typeof__(__underflow) *)dlsym(RTLD_NEXT, "__underflow");
}

/* Retries a call that failed with EFAULT while its destination is tracked:
 * a collector may re-arm a page between the pre-fault and the kernel's
 * write.  PREFAULT re-touches the destination before each try; retries
 * hold off the background thread's re-arming (sfp_kwrite_hold), which a
 * first try does not, so that a read blocking on a socket never delays
 * tracking. */
_Atomic int sfp_kwrite_hold;
#define KWRITE(rettype, call, PREFAULT, tracked)                                  \
    do {                                                                          \
        if (!need())                                                              \
            return call;                                                          \
        rettype r_;                                                               \
        for (int try_ = 0;; try_++) {                                             \
            if (try_)                                                             \
                atomic_fetch_add(&sfp_kwrite_hold, 1);                            \
            PREFAULT;                                                             \
            r_ = call;                                                            \
            if (try_) {                                                           \
                int e_ = errno;                                                   \
                atomic_fetch_sub(&sfp_kwrite_hold, 1);                            \
                errno = e_;                                                       \
            }                                                                     \
            if (!(r_ == (rettype)-1 && errno == EFAULT && try_ < 8 && (tracked))) \
                break;                                                            \
        }                                                                         \
        if (r_ == (rettype)-1 && errno == EFAULT)                                 \
            efault_seen(__func__);                                                \
        return r_;                                                                \
    } while (0)

/* An EFAULT that reached the program while pre-faulting was on: most
 * likely its own bad pointer, but say so once in verbose mode (and where
 * the protections stand), since snapfault is the usual suspect. */
static void efault_seen(const char *fn)
{
    int saved = errno;
    sfp_info("%s returned EFAULT to the program", fn);
    errno = saved;
}

static void prefault_iov(const struct iovec *iov, int n)
{
    for (int i = 0; iov && i < n; i++)
        sfp_prefault(iov[i].iov_base, iov[i].iov_len);
}

static bool iov_tracked(const struct iovec *iov, int n)
{
    for (int i = 0; iov && i < n; i++)
        if (sfp_range_tracked(iov[i].iov_base, iov[i].iov_len))
            return true;
    return false;
}

SFP_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    REAL(read);
    KWRITE(ssize_t, real_read(fd, buf, n), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    REAL(pread);
    KWRITE(ssize_t, real_pread(fd, buf, n, off), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off64_t off)
{
    REAL(pread64);
    KWRITE(ssize_t, real_pread64(fd, buf, n, off), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    REAL(readv);
    KWRITE(ssize_t, real_readv(fd, iov, cnt), prefault_iov(iov, cnt), iov_tracked(iov, cnt));
}

SFP_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
    REAL(preadv);
    KWRITE(ssize_t, real_preadv(fd, iov, cnt, off), prefault_iov(iov, cnt), iov_tracked(iov, cnt));
}

SFP_EXPORT ssize_t preadv64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    REAL(preadv64);
    KWRITE(ssize_t, real_preadv64(fd, iov, cnt, off), prefault_iov(iov, cnt), iov_tracked(iov, cnt));
}

SFP_EXPORT ssize_t preadv2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    REAL(preadv2);
    KWRITE(ssize_t, real_preadv2(fd, iov, cnt, off, flags), prefault_iov(iov, cnt), iov_tracked(iov, cnt));
}

SFP_EXPORT ssize_t preadv64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags)
{
    REAL(preadv64v2);
    KWRITE(ssize_t, real_preadv64v2(fd, iov, cnt, off, flags), prefault_iov(iov, cnt),
           iov_tracked(iov, cnt));
}

/* Sockets */
static void prefault_addr(void *addr, socklen_t *len)
{
    if (len) {
        sfp_prefault(len, sizeof(*len));
        if (addr)
            sfp_prefault(addr, *len);
    }
}

SFP_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    REAL(recv);
    KWRITE(ssize_t, real_recv(fd, buf, n, flags), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *alen)
{
    REAL(recvfrom);
    KWRITE(ssize_t, real_recvfrom(fd, buf, n, flags, addr, alen),
           (sfp_prefault(buf, n), prefault_addr(addr, alen)), sfp_range_tracked(buf, n));
}

static void prefault_msg(struct msghdr *m)
{
    if (!m)
        return;
    sfp_prefault(m, sizeof(*m)); /* msg_flags, msg_namelen, msg_controllen are written */
    sfp_prefault(m->msg_name, m->msg_namelen);
    sfp_prefault(m->msg_control, m->msg_controllen);
    prefault_iov(m->msg_iov, (int)m->msg_iovlen);
}

static bool msg_tracked(const struct msghdr *m)
{
    return m && (sfp_range_tracked(m, sizeof(*m)) || iov_tracked(m->msg_iov, (int)m->msg_iovlen) ||
                 sfp_range_tracked(m->msg_name, m->msg_namelen) ||
                 sfp_range_tracked(m->msg_control, m->msg_controllen));
}

SFP_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    REAL(recvmsg);
    KWRITE(ssize_t, real_recvmsg(fd, m, flags), prefault_msg(m), msg_tracked(m));
}

SFP_EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *tmo)
{
    REAL(recvmmsg);
    KWRITE(int, real_recvmmsg(fd, v, n, flags, tmo),
           for (unsigned i_ = 0; v && i_ < n; i_++) {
               prefault_msg(&v[i_].msg_hdr);
               sfp_prefault(&v[i_].msg_len, sizeof(v[i_].msg_len));
           },
           v && n && (msg_tracked(&v[0].msg_hdr) || sfp_range_tracked(v, n * sizeof(*v))));
}

SFP_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
    REAL(accept);
    KWRITE(int, real_accept(fd, addr, alen), prefault_addr(addr, alen), sfp_range_tracked(alen, 4));
}

SFP_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
    REAL(accept4);
    KWRITE(int, real_accept4(fd, addr, alen, flags), prefault_addr(addr, alen), sfp_range_tracked(alen, 4));
}

SFP_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *alen)
{
    REAL(getsockname);
    KWRITE(int, real_getsockname(fd, addr, alen), prefault_addr(addr, alen), sfp_range_tracked(alen, 4));
}

SFP_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *alen)
{
    REAL(getpeername);
    KWRITE(int, real_getpeername(fd, addr, alen), prefault_addr(addr, alen), sfp_range_tracked(alen, 4));
}

SFP_EXPORT int getsockopt(int fd, int level, int opt, void *val, socklen_t *vlen)
{
    REAL(getsockopt);
    KWRITE(int, real_getsockopt(fd, level, opt, val, vlen), prefault_addr(val, vlen),
           sfp_range_tracked(vlen, 4));
}

SFP_EXPORT int socketpair(int d, int type, int proto, int sv[2])
{
    REAL(socketpair);
    KWRITE(int, real_socketpair(d, type, proto, sv), sfp_prefault(sv, 2 * sizeof(int)),
           sfp_range_tracked(sv, 2 * sizeof(int)));
}

SFP_EXPORT int pipe(int fds[2])
{
    REAL(pipe);
    KWRITE(int, real_pipe(fds), sfp_prefault(fds, 2 * sizeof(int)), sfp_range_tracked(fds, 2 * sizeof(int)));
}

SFP_EXPORT int pipe2(int fds[2], int flags)
{
    REAL(pipe2);
    KWRITE(int, real_pipe2(fds, flags), sfp_prefault(fds, 2 * sizeof(int)),
           sfp_range_tracked(fds, 2 * sizeof(int)));
}

/* Files and directories */
SFP_EXPORT ssize_t getdents64(int fd, void *buf, size_t n)
{
    REAL(getdents64);
    KWRITE(ssize_t, real_getdents64(fd, buf, n), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT int stat(const char *path, struct stat *st)
{
    REAL(stat);
    KWRITE(int, real_stat(path, st), sfp_prefault(st, sizeof(*st)), sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int lstat(const char *path, struct stat *st)
{
    REAL(lstat);
    KWRITE(int, real_lstat(path, st), sfp_prefault(st, sizeof(*st)), sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int fstat(int fd, struct stat *st)
{
    REAL(fstat);
    KWRITE(int, real_fstat(fd, st), sfp_prefault(st, sizeof(*st)), sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int fstatat(int dfd, const char *path, struct stat *st, int flags)
{
    REAL(fstatat);
    KWRITE(int, real_fstatat(dfd, path, st, flags), sfp_prefault(st, sizeof(*st)),
           sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int stat64(const char *path, struct stat64 *st)
{
    REAL(stat64);
    KWRITE(int, real_stat64(path, st), sfp_prefault(st, sizeof(*st)), sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int lstat64(const char *path, struct stat64 *st)
{
    REAL(lstat64);
    KWRITE(int, real_lstat64(path, st), sfp_prefault(st, sizeof(*st)), sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int fstat64(int fd, struct stat64 *st)
{
    REAL(fstat64);
    KWRITE(int, real_fstat64(fd, st), sfp_prefault(st, sizeof(*st)), sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int fstatat64(int dfd, const char *path, struct stat64 *st, int flags)
{
    REAL(fstatat64);
    KWRITE(int, real_fstatat64(dfd, path, st, flags), sfp_prefault(st, sizeof(*st)),
           sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT int statx(int dfd, const char *path, int flags, unsigned mask, struct statx *st)
{
    REAL(statx);
    KWRITE(int, real_statx(dfd, path, flags, mask, st), sfp_prefault(st, sizeof(*st)),
           sfp_range_tracked(st, sizeof(*st)));
}

SFP_EXPORT ssize_t readlink(const char *path, char *buf, size_t n)
{
    REAL(readlink);
    KWRITE(ssize_t, real_readlink(path, buf, n), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT ssize_t readlinkat(int dfd, const char *path, char *buf, size_t n)
{
    REAL(readlinkat);
    KWRITE(ssize_t, real_readlinkat(dfd, path, buf, n), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

SFP_EXPORT char *getcwd(char *buf, size_t n)
{
    REAL(getcwd);
    if (!need() || !buf)
        return real_getcwd(buf, n);
    char *r;
    for (int try_ = 0;; try_++) {
        sfp_prefault(buf, n);
        r = real_getcwd(buf, n);
        if (!(r == NULL && errno == EFAULT && try_ < 8 && sfp_range_tracked(buf, n)))
            return r;
    }
}

SFP_EXPORT ssize_t getrandom(void *buf, size_t n, unsigned flags)
{
    REAL(getrandom);
    KWRITE(ssize_t, real_getrandom(buf, n, flags), sfp_prefault(buf, n), sfp_range_tracked(buf, n));
}

/* Waiting */
SFP_EXPORT pid_t waitpid(pid_t pid, int *status, int opts)
{
    REAL(waitpid);
    KWRITE(pid_t, real_waitpid(pid, status, opts), sfp_prefault(status, sizeof(int)),
           sfp_range_tracked(status, sizeof(int)));
}

SFP_EXPORT pid_t wait(int *status)
{
    REAL(wait);
    KWRITE(pid_t, real_wait(status), sfp_prefault(status, sizeof(int)), sfp_range_tracked(status, sizeof(int)));
}

SFP_EXPORT pid_t wait4(pid_t pid, int *status, int opts, struct rusage *ru)
{
    REAL(wait4);
    KWRITE(pid_t, real_wait4(pid, status, opts, ru),
           (sfp_prefault(status, sizeof(int)), sfp_prefault(ru, sizeof(*ru))),
           sfp_range_tracked(status, sizeof(int)) || sfp_range_tracked(ru, sizeof(*ru)));
}

SFP_EXPORT int waitid(idtype_t idtype, id_t id, siginfo_t *info, int opts)
{
    REAL(waitid);
    KWRITE(int, real_waitid(idtype, id, info, opts), sfp_prefault(info, sizeof(*info)),
           sfp_range_tracked(info, sizeof(*info)));
}

SFP_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    REAL(poll);
    KWRITE(int, real_poll(fds, n, timeout), sfp_prefault(fds, n * sizeof(*fds)),
           sfp_range_tracked(fds, n * sizeof(*fds)));
}

SFP_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo, const sigset_t *mask)
{
    REAL(ppoll);
    KWRITE(int, real_ppoll(fds, n, tmo, mask), sfp_prefault(fds, n * sizeof(*fds)),
           sfp_range_tracked(fds, n * sizeof(*fds)));
}

SFP_EXPORT int epoll_wait(int ep, struct epoll_event *ev, int max, int timeout)
{
    REAL(epoll_wait);
    KWRITE(int, real_epoll_wait(ep, ev, max, timeout),
           sfp_prefault(ev, max > 0 ? (size_t)max * sizeof(*ev) : 0),
           sfp_range_tracked(ev, max > 0 ? (size_t)max * sizeof(*ev) : 0));
}

SFP_EXPORT int epoll_pwait(int ep, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    REAL(epoll_pwait);
    KWRITE(int, real_epoll_pwait(ep, ev, max, timeout, mask),
           sfp_prefault(ev, max > 0 ? (size_t)max * sizeof(*ev) : 0),
           sfp_range_tracked(ev, max > 0 ? (size_t)max * sizeof(*ev) : 0));
}

SFP_EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv)
{
    REAL(select);
    KWRITE(int, real_select(n, r, w, e, tv),
           (sfp_prefault(r, r ? sizeof(*r) : 0), sfp_prefault(w, w ? sizeof(*w) : 0),
            sfp_prefault(e, e ? sizeof(*e) : 0), sfp_prefault(tv, tv ? sizeof(*tv) : 0)),
           sfp_range_tracked(r, r ? sizeof(*r) : 0) || sfp_range_tracked(w, w ? sizeof(*w) : 0) ||
               sfp_range_tracked(e, e ? sizeof(*e) : 0) || sfp_range_tracked(tv, tv ? sizeof(*tv) : 0));
}

SFP_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    REAL(nanosleep);
    KWRITE(int, real_nanosleep(req, rem), sfp_prefault(rem, rem ? sizeof(*rem) : 0),
           sfp_range_tracked(rem, rem ? sizeof(*rem) : 0));
}

/* ------------------------------------------------------------------------
 * stdio: libc refills FILE buffers with its internal read, which cannot
 * be interposed.  The buffer of the stream is pre-faulted before each
 * reading call; a refill that still failed with EFAULT (a buffer allocated
 * inside the call) is retried once the buffer exists.
 * ------------------------------------------------------------------------ */
static void prefault_file(FILE *fp)
{
    if (fp && fp->_IO_buf_base && fp->_IO_buf_end > fp->_IO_buf_base)
        sfp_prefault(fp->_IO_buf_base, (size_t)(fp->_IO_buf_end - fp->_IO_buf_base));
}

static bool file_efault(FILE *fp, bool had_error)
{
    if (had_error || !ferror(fp) || errno != EFAULT || feof(fp))
        return false;
    if (!fp->_IO_buf_base || !sfp_range_tracked(fp->_IO_buf_base, (size_t)(fp->_IO_buf_end - fp->_IO_buf_base)))
        return false;
    clearerr(fp);
    return true;
}

SFP_EXPORT size_t fread(void *ptr, size_t size, size_t n, FILE *fp)
{
    REAL(fread);
    if (!need())
        return real_fread(ptr, size, n, fp);
    bool had_error = ferror(fp);
    size_t done = 0;
    for (int try_ = 0;; try_++) {
        sfp_prefault((char *)ptr + done * size, (n - done) * size);
        prefault_file(fp);
        done += real_fread((char *)ptr + done * size, size, n - done, fp);
        /* with size > 1 a partial element may have been consumed: no retry */
        if (done == n || size != 1 || try_ >= 8 || !file_efault(fp, had_error))
            return done;
    }
}

SFP_EXPORT char *fgets(char *s, int n, FILE *fp)
{
    REAL(fgets);
    if (!need())
        return real_fgets(s, n, fp);
    bool had_error = ferror(fp);
    char *r;
    for (int try_ = 0;; try_++) {
        sfp_prefault(s, n > 0 ? (size_t)n : 0);
        prefault_file(fp);
        r = real_fgets(s, n, fp);
        if (r || try_ >= 8 || !file_efault(fp, had_error))
            return r;
    }
}

SFP_EXPORT int fgetc(FILE *fp)
{
    REAL(fgetc);
    if (!need())
        return real_fgetc(fp);
    bool had_error = ferror(fp);
    int c;
    for (int try_ = 0;; try_++) {
        prefault_file(fp);
        c = real_fgetc(fp);
        if (c != EOF || try_ >= 8 || !file_efault(fp, had_error))
            return c;
    }
}

SFP_EXPORT int getc(FILE *fp) { return fgetc(fp); }

SFP_EXPORT ssize_t getdelim(char **line, size_t *cap, int delim, FILE *fp)
{
    REAL(getdelim);
    if (!need())
        return real_getdelim(line, cap, delim, fp);
    bool had_error = ferror(fp);
    ssize_t r;
    for (int try_ = 0;; try_++) {
        if (line && *line && cap)
            sfp_prefault(*line, *cap);
        prefault_file(fp);
        r = real_getdelim(line, cap, delim, fp);
        if (r >= 0 || try_ >= 8 || !file_efault(fp, had_error))
            return r;
    }
}

SFP_EXPORT ssize_t getline(char **line, size_t *cap, FILE *fp) { return getdelim(line, cap, '\n', fp); }

/* readdir refills its buffer with libc's internal getdents64.  glibc 2.36's
 * DIR (dirent/dirstreamP.h), mirrored to find that buffer; the fd field is
 * checked against dirfd() before the layout is trusted. */
struct sfp_dirstream {
    int fd;
    int lock;
    size_t allocation;
    size_t size;
    size_t offset;
    off_t filepos;
    int errcode;
    char data[] __attribute__((aligned(__alignof__(void *))));
};

static void prefault_dir(DIR *d)
{
    struct sfp_dirstream *ds = (struct sfp_dirstream *)d;
    if (d && dirfd(d) == ds->fd && ds->allocation && ds->allocation <= (1u << 20))
        sfp_prefault(ds->data, ds->allocation);
}

SFP_EXPORT struct dirent *readdir(DIR *d)
{
    REAL(readdir);
    if (!need())
        return real_readdir(d);
    struct dirent *e;
    for (int try_ = 0;; try_++) {
        prefault_dir(d);
        errno = 0;
        e = real_readdir(d);
        if (e || errno != EFAULT || try_ >= 8)
            return e;
    }
}

SFP_EXPORT struct dirent64 *readdir64(DIR *d)
{
    REAL(readdir64);
    if (!need())
        return real_readdir64(d);
    struct dirent64 *e;
    for (int try_ = 0;; try_++) {
        prefault_dir(d);
        errno = 0;
        e = real_readdir64(d);
        if (e || errno != EFAULT || try_ >= 8)
            return e;
    }
}

SFP_EXPORT int __uflow(FILE *fp)
{
    REAL(__uflow);
    prefault_file(fp);
    return real___uflow(fp);
}

SFP_EXPORT int __underflow(FILE *fp)
{
    REAL(__underflow);
    prefault_file(fp);
    return real___underflow(fp);
}
