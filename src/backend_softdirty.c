/* backend_softdirty.c - tracking with the kernel's soft-dirty bits: pagemap
 * bit 55 reports writes, "4" in /proc/self/clear_refs resets them. */
#include "internal.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Limits, documented in the header and README: the reset is whole-process
 * (every soft-dirty user in the process is reset, so one tracker at a time)
 * and runs under the kernel's mmap write lock; and it is not atomic with the
 * read: a write between reading pagemap and clear_refs is lost unless the
 * writers are stopped.  AUTO never picks this backend. */
#define PM_SOFT_DIRTY (1ull << 55)
#define PM_BATCH 512

static _Atomic int g_owner;

static int clear_refs(void)
{
    int fd = sf__os_open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = sf__os_write(fd, "4", 1);
    int e = n == 1 ? 0 : -errno;
    sf__os_close(fd);
    return e;
}

static int sd_open(sf_tracker *t)
{
    const sf_caps *caps;
    sf__probe_cached(&caps);
    if (caps->backend_ok[SF_BACKEND_SOFTDIRTY])
        return caps->backend_ok[SF_BACKEND_SOFTDIRTY];
    int expect = 0;
    if (!atomic_compare_exchange_strong(&g_owner, &expect, 1))
        return -EBUSY;
    t->pagemap_fd = sf__os_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (t->pagemap_fd < 0) {
        atomic_store(&g_owner, 0);
        return -errno;
    }
    t->fault_mode = SF_FAULTS_NONE;
    return 0;
}

static void sd_close(sf_tracker *t)
{
    if (t->pagemap_fd >= 0) {
        sf__os_close(t->pagemap_fd);
        t->pagemap_fd = -1;
        atomic_store(&g_owner, 0);
    }
}

static int sd_attach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    return clear_refs();
}

static void sd_detach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e) {}

static int sd_collect(sf_tracker *t, struct sf_region *r, unsigned flags,
                      int (*emit)(sf_tracker *, uintptr_t, size_t, void *), void *ctx)
{
    uint64_t ent[PM_BATCH];
    uintptr_t run = 0;
    size_t runlen = 0;
    for (uintptr_t a = r->start; a < r->end;) {
        size_t n = (r->end - a) >> sf_page_shift;
        if (n > PM_BATCH)
            n = PM_BATCH;
        off_t off = (off_t)((a >> sf_page_shift) * sizeof(uint64_t));
        ssize_t got = sf__os_pread(t->pagemap_fd, ent, n * sizeof(uint64_t), off);
        if (got < (ssize_t)sizeof(uint64_t))
            return got < 0 ? -errno : -EIO;
        n = (size_t)got / sizeof(uint64_t);
        for (size_t i = 0; i < n; i++, a += sf_page_size) {
            if (ent[i] & PM_SOFT_DIRTY) {
                if (!runlen)
                    run = a;
                runlen += sf_page_size;
                continue;
            }
            if (runlen) {
                int rc = emit(t, run, runlen, ctx);
                if (rc)
                    return rc;
                runlen = 0;
            }
        }
    }
    return runlen ? emit(t, run, runlen, ctx) : 0;
}

/* Called once after every region was collected. */
static int sd_reset_all(sf_tracker *t)
{
    return clear_refs();
}

const struct sf_backend_ops sf__backend_softdirty = {
    .id = SF_BACKEND_SOFTDIRTY,
    .open = sd_open,
    .close = sd_close,
    .attach = sd_attach,
    .detach = sd_detach,
    .collect = sd_collect,
    .reset_all = sd_reset_all,
};
