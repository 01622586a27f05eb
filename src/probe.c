/* probe.c - what this kernel and process support, found by really using
 * each mechanism on a scratch page, and why a backend cannot be used. */
#include "internal.h"
#include "uffd.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sf_caps g_caps;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

__attribute__((format(printf, 4, 5)))
static void why(sf_caps *c, sf_backend b, int err, const char *fmt, ...)
{
    c->backend_ok[b] = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why[b], sizeof(c->why[b]), fmt, ap);
    va_end(ap);
}

/* Registers WP on a scratch page with the given features and protects it. */
static int try_wp(int fd, void *page)
{
    int err = sf__uffd_register_wp(fd, (uintptr_t)page, sf_page_size);
    if (!err)
        err = sf__uffd_wp(fd, (uintptr_t)page, sf_page_size, true, false);
    return err;
}

static int probe_pagemap_scan(void *page)
{
    int fd = sf__os_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct page_region vec[1];
    struct pm_scan_arg arg;
    memset(&arg, 0, sizeof(arg));
    arg.size = sizeof(arg);
    arg.start = (uintptr_t)page;
    arg.end = (uintptr_t)page + sf_page_size;
    arg.vec = (uintptr_t)vec;
    arg.vec_len = 1;
    arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_WRITTEN;
    arg.return_mask = PAGE_IS_PRESENT;
    int ok = sf__pagemap_scan(fd, &arg) >= 0;
    sf__os_close(fd);
    return ok;
}

/* Soft-dirty exists when a write sets bit 55 after a reset.  The reset is
 * whole-process: probing clears other soft-dirty users' bits, which is why
 * it runs once. */
static int probe_soft_dirty(volatile char *page)
{
    int pm = sf__os_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    int cr = sf__os_open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    int ok = 0;
    if (pm >= 0 && cr >= 0) {
        page[0] = 1;
        uint64_t e = 0;
        off_t off = (off_t)(((uintptr_t)page >> sf_page_shift) * 8);
        if (sf__os_write(cr, "4", 1) == 1 && sf__os_pread(pm, &e, 8, off) == 8 && !(e & (1ull << 55))) {
            page[0] = 2;
            ok = sf__os_pread(pm, &e, 8, off) == 8 && (e & (1ull << 55));
        }
    }
    if (pm >= 0)
        sf__os_close(pm);
    if (cr >= 0)
        sf__os_close(cr);
    return ok;
}

static void probe(void)
{
    sf__init();
    sf_caps *c = &g_caps;
    memset(c, 0, sizeof(*c));
    c->max_map_count = sf__read_long_file("/proc/sys/vm/max_map_count", -1);
    c->map_count = sf__count_maps();
    int thp = sf__os_open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (thp >= 0) {
        char buf[128] = {0};
        if (sf__os_read(thp, buf, sizeof(buf) - 1) > 0)
            c->thp_enabled = strstr(buf, "[never]") == NULL;
        sf__os_close(thp);
    }
    char *page = sf__os_mmap(NULL, sf_page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
        for (int b = 1; b < SF_BACKEND_COUNT; b++)
            why(c, b, -ENOMEM, "%s", "cannot map a scratch page");
        return;
    }

    /* userfaultfd: which kind can we open, which features does it offer. */
    int kfd = sf__uffd_open(true, 0, &c->uffd_features);
    c->uffd_kernel_faults = kfd >= 0;
    int ufd = kfd >= 0 ? kfd : sf__uffd_open(false, 0, &c->uffd_features);
    c->uffd = ufd >= 0;
    int uffd_err = ufd < 0 ? ufd : 0;
    if (kfd >= 0)
        sf__os_close(kfd);
    else if (ufd >= 0)
        sf__os_close(ufd);
    uint64_t f = c->uffd_features;
    c->uffd_sigbus = !!(f & UFFD_FEATURE_SIGBUS);
    c->uffd_wp_unpopulated = !!(f & UFFD_FEATURE_WP_UNPOPULATED);
    c->uffd_wp_async = !!(f & UFFD_FEATURE_WP_ASYNC);
    if (c->uffd && (f & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        int fd = sf__uffd_open(false, UFFD_FEATURE_PAGEFAULT_FLAG_WP, NULL);
        if (fd >= 0) {
            c->uffd_wp = try_wp(fd, page) == 0;
            sf__os_close(fd);
        }
    }
    c->pagemap_scan = probe_pagemap_scan(page);

    /* uffd-async */
    if (!c->uffd)
        why(c, SF_BACKEND_UFFD_ASYNC, uffd_err, "userfaultfd cannot be opened: %s", sf_strerror(uffd_err));
    else if (!c->uffd_wp_async || !c->uffd_wp_unpopulated)
        why(c, SF_BACKEND_UFFD_ASYNC, -ENOTSUP, "%s", "kernel lacks UFFD_FEATURE_WP_ASYNC / WP_UNPOPULATED (Linux 6.7+)");
    else if (!c->pagemap_scan)
        why(c, SF_BACKEND_UFFD_ASYNC, -ENOTSUP, "%s", "kernel lacks the PAGEMAP_SCAN ioctl (Linux 6.7+)");
    else {
        int fd = sf__uffd_open(false, UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC |
                                          UFFD_FEATURE_WP_UNPOPULATED, NULL);
        int err = fd < 0 ? fd : try_wp(fd, page);
        if (fd >= 0)
            sf__os_close(fd);
        if (err)
            why(c, SF_BACKEND_UFFD_ASYNC, err, "async write-protect failed: %s", sf_strerror(err));
    }

    /* uffd-sync: needs WP on anonymous memory including unpopulated pages,
     * and a delivery mode. */
    if (!c->uffd)
        why(c, SF_BACKEND_UFFD_SYNC, uffd_err, "userfaultfd cannot be opened: %s", sf_strerror(uffd_err));
    else if (!c->uffd_wp)
        why(c, SF_BACKEND_UFFD_SYNC, -ENOTSUP, "%s", "kernel lacks userfaultfd write-protect on anonymous memory");
    else if (!c->uffd_wp_unpopulated)
        why(c, SF_BACKEND_UFFD_SYNC, -ENOTSUP, "%s", "kernel lacks UFFD_FEATURE_WP_UNPOPULATED (Linux 6.4+): never-touched pages would escape tracking");
    else if (!c->uffd_kernel_faults && !c->uffd_sigbus)
        why(c, SF_BACKEND_UFFD_SYNC, -ENOTSUP, "%s", "no delivery mode: no kernel-fault uffd (unprivileged) and no UFFD_FEATURE_SIGBUS");
    if (c->uffd_kernel_faults) {
        c->sync_mode = SF_FAULTS_HANDLER_THREAD;
        snprintf(c->sync_mode_why, sizeof(c->sync_mode_why), "%s",
                 "handler threads: this process may open a uffd that receives kernel-mode faults, so read(2) into tracked memory works");
    } else if (c->uffd_sigbus) {
        c->sync_mode = SF_FAULTS_INTHREAD;
        snprintf(c->sync_mode_why, sizeof(c->sync_mode_why), "%s",
                 "in-thread SIGBUS: unprivileged (no CAP_SYS_PTRACE, /dev/userfaultfd or vm.unprivileged_userfaultfd=1), kernel writes into protected pages fail with EFAULT");
    }

    /* mprotect works everywhere. */
    c->backend_ok[SF_BACKEND_MPROTECT] = 0;

    /* soft-dirty */
    c->soft_dirty = probe_soft_dirty(page);
    if (!c->soft_dirty)
        why(c, SF_BACKEND_SOFTDIRTY, -ENOTSUP, "%s", "soft-dirty bits are not set by writes (kernel built without CONFIG_MEM_SOFT_DIRTY)");

    why(c, SF_BACKEND_AUTO, 0, "%s", "");
    c->auto_tracking = !c->backend_ok[SF_BACKEND_UFFD_ASYNC] ? SF_BACKEND_UFFD_ASYNC : SF_BACKEND_MPROTECT;
    /* Snapshots: the mirror engine where the kernel resolves writes itself
     * (no fault per first write after a take, takes and restores cost the
     * pages written); it holds a shadow of all tracked memory, so a caller
     * short of memory asks for COW with SF_OPT_LOW_MEMORY. */
    sf_backend cow = !c->backend_ok[SF_BACKEND_UFFD_SYNC] ? SF_BACKEND_UFFD_SYNC : SF_BACKEND_MPROTECT;
    if (!c->backend_ok[SF_BACKEND_UFFD_ASYNC]) {
        c->auto_engine = SF_ENGINE_MIRROR;
        c->auto_snapshots = SF_BACKEND_UFFD_ASYNC;
        snprintf(c->auto_engine_why, sizeof(c->auto_engine_why),
                 "mirror on uffd-async: the kernel has WP_ASYNC and PAGEMAP_SCAN (costs a shadow the size of tracked memory; SF_OPT_LOW_MEMORY gives COW on %s)",
                 sf_backend_name(cow));
    } else {
        c->auto_engine = SF_ENGINE_COW;
        c->auto_snapshots = cow;
        snprintf(c->auto_engine_why, sizeof(c->auto_engine_why), "COW on %s: uffd-async unusable (%.100s)",
                 sf_backend_name(cow), c->why[SF_BACKEND_UFFD_ASYNC]);
    }
    sf__os_munmap(page, sf_page_size);
    /* What a protect call and a PTE inside a span cost here (cost.c). */
    sf__cost_probe(c);
}

int sf__probe_cached(const sf_caps **out)
{
    pthread_once(&g_once, probe);
    *out = &g_caps;
    return 0;
}

SF_API int sf_probe(sf_caps *caps)
{
    if (!caps)
        return -EINVAL;
    const sf_caps *c;
    sf__probe_cached(&c);
    *caps = *c;
    caps->map_count = sf__count_maps();
    return 0;
}
