/* backend_uffd_async.c - kernel-resolved write tracking: uffd WP_ASYNC marks
 * written pages, PAGEMAP_SCAN reports and re-protects them in one walk. */
#include "internal.h"
#include "uffd.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SCAN_VEC 512

static int ua_open(sf_tracker *t)
{
    const sf_caps *caps;
    sf__probe_cached(&caps);
    if (caps->backend_ok[SF_BACKEND_UFFD_ASYNC])
        return caps->backend_ok[SF_BACKEND_UFFD_ASYNC];
    /* Async faults are resolved by the kernel, kernel-mode ones included,
     * so a user-mode-only uffd is enough and works unprivileged. */
    int fd = sf__uffd_open(false,
                           UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED |
                               UFFD_FEATURE_WP_ASYNC,
                           NULL);
    if (fd < 0)
        return fd;
    t->uffd = fd;
    t->pagemap_fd = sf__os_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (t->pagemap_fd < 0)
        return -errno;
    t->fault_mode = SF_FAULTS_NONE;
    return 0;
}

static void ua_close(sf_tracker *t)
{
    if (t->pagemap_fd >= 0)
        sf__os_close(t->pagemap_fd);
    if (t->uffd >= 0)
        sf__os_close(t->uffd);
    t->pagemap_fd = t->uffd = -1;
}

static int ua_attach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    if (!r->abits && !(r->abits = sf__os_calloc((r->npages + 63) >> 6, sizeof(uint64_t))))
        return -ENOMEM;
    int err = sf__uffd_register_wp(t->uffd, a, e - a);
    if (err)
        return err;
    err = sf__uffd_wp(t->uffd, a, e - a, true, false);
    if (err)
        sf__uffd_unregister(t->uffd, a, e - a);
    return err;
}

static void ua_detach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    sf__uffd_wp(t->uffd, a, e - a, false, false);
    sf__uffd_unregister(t->uffd, a, e - a);
}

/* Records the runs the kernel reported (and re-protected) in r's bitmaps. */
static void note_written(struct sf_region *r, const struct page_region *vec, long n)
{
    for (long i = 0; i < n; i++) {
        size_t p0 = (vec[i].start - r->start) >> sf_page_shift;
        size_t p1 = (vec[i].end - r->start) >> sf_page_shift;
        sf__bits_set(r->abits, p0, p1);
        if (r->mbits) /* mirror snapshots: the shadow is stale */
            sf__bits_set(r->mbits, p0, p1);
    }
}

/* One walk per batch: written runs come back and are re-protected
 * atomically by the kernel; walk_end says where a full vector stopped.
 * Each run goes into the region's bitmaps, so nothing the kernel reported
 * can be lost whatever the caller does next.
 *
 * A walk that meets a VMA not registered for WP_ASYNC (a mapping replaced
 * behind the tracker's back) fails with EPERM after it re-protected and
 * copied out the runs of the VMAs before it, and returns no count: the
 * vector is zeroed first, so those runs are found (end > start) and kept,
 * not lost with the error.
 *
 * rearm false: the runs are recorded but stay writable in the kernel, so
 * the next scan reports them again (restore writes them back first, then
 * protects them itself, and spares the copy a fault per page). */
static int scan(sf_tracker *t, struct sf_region *r, uintptr_t start, uintptr_t end, bool rearm)
{
    struct page_region vec[SCAN_VEC];
    uintptr_t pos = start;
    while (pos < end) {
        memset(vec, 0, sizeof(vec));
        struct pm_scan_arg arg;
        memset(&arg, 0, sizeof(arg));
        arg.size = sizeof(arg);
        arg.flags = rearm ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : PM_SCAN_CHECK_WPASYNC;
        arg.start = pos;
        arg.end = end;
        arg.vec = (uintptr_t)vec;
        arg.vec_len = SCAN_VEC;
        arg.category_mask = PAGE_IS_WRITTEN;
        arg.return_mask = PAGE_IS_WRITTEN;
        long n = sf__pagemap_scan(t->pagemap_fd, &arg);
        if (n < 0) {
            int err = errno;
            long k = 0;
            while (k < SCAN_VEC && vec[k].end > vec[k].start && vec[k].start >= r->start && vec[k].end <= r->end)
                k++;
            note_written(r, vec, k);
            if (err == EINTR || err == EAGAIN)
                continue;
            return -err;
        }
        note_written(r, vec, n);
        if (arg.walk_end <= pos)
            break; /* no progress: should not happen, never loop */
        pos = arg.walk_end;
    }
    return 0;
}

/* Stretches untracked by a partial sf_untrack are unregistered: the scan
 * (which checks WP_ASYNC) must skip them. */
static int sync_runs(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1, bool rearm)
{
    SF_FOR_LIVE_RUNS(r, p0, p1, p, q) {
        int rc = scan(t, r, r->start + (p << sf_page_shift), r->start + (q << sf_page_shift), rearm);
        if (rc)
            return rc;
    }
    return 0;
}

int sf__async_sync_range(sf_tracker *t, struct sf_region *r, size_t p0, size_t p1)
{
    return sync_runs(t, r, p0, p1, true);
}

int sf__async_note(sf_tracker *t, struct sf_region *r)
{
    return sync_runs(t, r, 0, r->npages, false);
}

int sf__async_sync(sf_tracker *t, struct sf_region *r)
{
    return sf__async_sync_range(t, r, 0, r->npages);
}

struct bits_ctx {
    uint64_t *bits;
    uintptr_t start;
};

static int set_run(void *ctx, uintptr_t a, uintptr_t b)
{
    struct bits_ctx *c = ctx;
    sf__bits_set(c->bits, (a - c->start) >> sf_page_shift, (b - c->start) >> sf_page_shift);
    return 0;
}

/* The pages of [start, +npages pages) in any of the categories of mask,
 * as bits. */
static int query(sf_tracker *t, uintptr_t start, size_t npages, uint64_t *bits, uint64_t mask)
{
    struct bits_ctx c = {bits, start};
    int rc = sf__pagemap_runs(t->pagemap_fd, start, start + (npages << sf_page_shift), 0, mask, set_run, &c);
    return rc < 0 ? rc : 0;
}

/* Sets in bits (bit i for page i of [start, start + npages pages)) the
 * pages that hold memory (present or swapped); a page without is read as
 * zeros.  A query only: nothing is re-armed, any mapping may be asked. */
int sf__async_present(sf_tracker *t, uintptr_t start, size_t npages, uint64_t *bits)
{
    return query(t, start, npages, bits, PAGE_IS_PRESENT | PAGE_IS_SWAPPED);
}

/* The same for pages present in RAM only: a tracked page never written
 * holds a uffd-wp marker, which the kernel reports as swapped, so this is
 * the query that tells a populated page of a tracked range from one never
 * touched (a page truly swapped out counts as not resident). */
int sf__async_resident(sf_tracker *t, uintptr_t start, size_t npages, uint64_t *bits)
{
    return query(t, start, npages, bits, PAGE_IS_PRESENT);
}

/* Reports the runs of the region's bitmap in address order; with reset
 * each reported run is cleared, and runs the caller declined stay set for
 * the next collect.  Returns 0, 1 when emit said stop, or -errno. */
static int ua_collect(sf_tracker *t, struct sf_region *r, unsigned flags,
                      int (*emit)(sf_tracker *, uintptr_t, size_t, void *), void *ctx)
{
    int rc = sf__async_sync(t, r);
    if (rc)
        return rc;
    uint64_t *b = r->abits;
    for (size_t p = sf__bits_next(b, 0, r->npages, true); p < r->npages;
         p = sf__bits_next(b, p, r->npages, true)) {
        size_t q = sf__bits_next(b, p, r->npages, false);
        /* Reported means reset, even when the caller then says stop. */
        if (flags & SF_COLLECT_RESET)
            sf__bits_clear(b, p, q);
        rc = emit(t, r->start + (p << sf_page_shift), (q - p) << sf_page_shift, ctx);
        if (rc)
            return rc;
        p = q;
    }
    return 0;
}

const struct sf_backend_ops sf__backend_uffd_async = {
    .id = SF_BACKEND_UFFD_ASYNC,
    .open = ua_open,
    .close = ua_close,
    .attach = ua_attach,
    .detach = ua_detach,
    .collect = ua_collect,
};
