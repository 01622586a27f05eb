/* uffd.h - userfaultfd and PAGEMAP_SCAN definitions that Debian 12's 6.1
 * headers lack; the runtime probe decides what is really used.  Every uffd
 * and PAGEMAP_SCAN ioctl is made in uffd.c (the opening, registration and
 * write-protect calls are declared in internal.h). */
#ifndef SF_UFFD_H
#define SF_UFFD_H
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
struct page_region {
    __u64 start;
    __u64 end;
    __u64 categories;
};
struct pm_scan_arg {
    __u64 size;
    __u64 flags;
    __u64 start;
    __u64 end;
    __u64 walk_end;
    __u64 vec;
    __u64 vec_len;
    __u64 max_pages;
    __u64 category_inverted;
    __u64 category_mask;
    __u64 category_anyof_mask;
    __u64 return_mask;
};
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

/* UFFDIO_WAKE of [addr, addr+len): wakes the threads faulting there without
 * changing any protection.  0 or -errno.  Async-signal-safe. */
int sf__uffd_wake(int uffd, uintptr_t addr, size_t len);
/* One PAGEMAP_SCAN ioctl on the pagemap fd: as ioctl(2), the number of
 * page_region entries filled or -1 with errno.  Async-signal-safe. */
long sf__pagemap_scan(int pagemap_fd, struct pm_scan_arg *arg);
/* Read-only PAGEMAP_SCAN queries over [start, end) (nothing is re-armed,
 * any mapping may be asked): run(ctx, a, b) for each run of pages in every
 * category of all_of and in one of any_of (0: no such condition), in
 * address order, until run returns nonzero.  0, 1 when run stopped it, or
 * -errno of the ioctl (EINTR and EAGAIN are retried).  Async-signal-safe
 * when run is. */
int sf__pagemap_runs(int pagemap_fd, uintptr_t start, uintptr_t end, uint64_t all_of, uint64_t any_of,
                     int (*run)(void *ctx, uintptr_t a, uintptr_t b), void *ctx);
#endif
