/* uffd.c - opening userfaultfds and the few ioctls snapfault uses; every
 * call here is async-signal-safe (plain syscalls, errno preserved). */
#include "internal.h"
#include "uffd.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* A uffd that receives kernel-mode faults needs privilege; user-mode-only is
 * open to everyone.  Tries the syscall, then /dev/userfaultfd.  Returns the
 * fd after UFFDIO_API with exactly `features`, or -errno. */
int sf__uffd_open(bool kernel_faults, uint64_t features, uint64_t *got)
{
    int flags = O_CLOEXEC | O_NONBLOCK | (kernel_faults ? 0 : UFFD_USER_MODE_ONLY);
    int fd = sf__os_userfaultfd(flags);
    if (fd < 0 && kernel_faults && (errno == EPERM || errno == EACCES)) {
        int dev = sf__os_open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = sf__os_ioctl(dev, USERFAULTFD_IOC_NEW, (void *)(uintptr_t)(O_CLOEXEC | O_NONBLOCK));
            sf__os_close(dev);
        }
    }
    if (fd < 0)
        return -errno;
    struct uffdio_api api;
    memset(&api, 0, sizeof(api));
    api.api = UFFD_API;
    api.features = features;
    if (sf__os_ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = -errno;
        sf__os_close(fd);
        return e;
    }
    if (got)
        *got = api.features;
    return fd;
}

int sf__uffd_register_wp(int uffd, uintptr_t addr, size_t len)
{
    struct uffdio_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.range.start = addr;
    reg.range.len = len;
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    if (sf__os_ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
        return -errno;
    if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_WRITEPROTECT)))
        return -ENOTSUP;
    return 0;
}

int sf__uffd_unregister(int uffd, uintptr_t addr, size_t len)
{
    struct uffdio_range r = {.start = addr, .len = len};
    return sf__os_ioctl(uffd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/* EAGAIN means the address space is changing (fork, mremap): retry. */
int sf__uffd_wp(int uffd, uintptr_t addr, size_t len, bool protect, bool wake)
{
    int saved = errno;
    struct uffdio_writeprotect wp;
    wp.range.start = addr;
    wp.range.len = len;
    /* DONTWAKE only means something when un-protecting; the kernel
     * rejects it together with WP. */
    wp.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP
                      : (wake ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
    int rc = 0;
    for (unsigned tries = 0;; tries++) {
        if (sf__os_ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
            break;
        if (errno != EAGAIN || tries > 100000) {
            rc = -errno;
            break;
        }
        if (tries > 16)
            sf__os_yield();
    }
    errno = saved;
    return rc;
}

int sf__uffd_wake(int uffd, uintptr_t addr, size_t len)
{
    struct uffdio_range r = {.start = addr, .len = len};
    return sf__os_ioctl(uffd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

long sf__pagemap_scan(int pagemap_fd, struct pm_scan_arg *arg)
{
    return sf__os_ioctl(pagemap_fd, PAGEMAP_SCAN, arg);
}

int sf__pagemap_runs(int pagemap_fd, uintptr_t start, uintptr_t end, uint64_t all_of, uint64_t any_of,
                     int (*run)(void *ctx, uintptr_t a, uintptr_t b), void *ctx)
{
    struct page_region vec[256];
    uintptr_t pos = start;
    while (pos < end) {
        struct pm_scan_arg arg;
        memset(&arg, 0, sizeof(arg));
        arg.size = sizeof(arg);
        arg.start = pos;
        arg.end = end;
        arg.vec = (uintptr_t)vec;
        arg.vec_len = sizeof(vec) / sizeof(vec[0]);
        arg.category_mask = all_of;
        arg.category_anyof_mask = any_of;
        arg.return_mask = all_of | any_of;
        long n = sf__pagemap_scan(pagemap_fd, &arg);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        for (long i = 0; i < n; i++)
            if (run(ctx, (uintptr_t)vec[i].start, (uintptr_t)vec[i].end))
                return 1;
        if (arg.walk_end <= pos)
            break; /* no progress: should not happen, never loop */
        pos = (uintptr_t)arg.walk_end;
    }
    return 0;
}
