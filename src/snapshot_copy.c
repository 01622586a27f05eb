/* snapshot_copy.c - snapshots of uffd-async trackers: a full copy at take,
 * then kernel-resolved write tracking tells restore what to copy back. */
#include "snapshot.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* For restore-heavy use (a fuzzer's reset loop) the copy at take is paid
 * once; every write after it costs a kernel-resolved fault (no signal, no
 * thread round trip), and restore is a PAGEMAP_SCAN plus a copy of each
 * page written since.  The same scan feeds sf_collect's bitmap, so dirty
 * tracking and snapshots keep sharing one write-protect state.  Each page
 * is captured at some instant during take: stop the writers for one
 * instant, as with copy-on-write snapshots. */

/* Copies [p, q) of r unless a partial untrack made pages of it GONE (they
 * may be unmapped now). */
static void copy_tracked(struct sf_region *r, char *dst, bool to_live)
{
    for (size_t p = 0; p < r->npages;) {
        if (atomic_load(&r->gone) && (atomic_load(&r->ps[p]) & PS_GONE)) {
            p++;
            continue;
        }
        size_t q = p + 1;
        while (q < r->npages && !(atomic_load(&r->gone) && (atomic_load(&r->ps[q]) & PS_GONE)))
            q++;
        char *live = (char *)r->start + (p << sf_page_shift);
        if (to_live)
            memcpy(live, dst + (p << sf_page_shift), (q - p) << sf_page_shift);
        else
            memcpy(dst + (p << sf_page_shift), live, (q - p) << sf_page_shift);
        p = q;
    }
}

/* Caller holds t->lock; s has its slot and generation. */
int sf__copysnap_take(sf_tracker *t, sf_snapshot *s)
{
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs)
        return -ENOMEM;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += rs[i]->end - rs[i]->start;
    int err = 0;
    if (t->copy_bytes + total > t->store_limit)
        err = -ENOSPC;
    if (!err && !(s->copies = calloc(n ? n : 1, sizeof(*s->copies))))
        err = -ENOMEM;
    for (size_t i = 0; i < n && !err; i++) {
        struct sf_region *r = rs[i];
        size_t len = r->end - r->start;
        char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        uint64_t *bits = calloc((r->npages + 63) >> 6, sizeof(uint64_t));
        if (buf == MAP_FAILED || !bits) {
            if (buf != MAP_FAILED)
                munmap(buf, len);
            free(bits);
            err = -ENOMEM;
            break;
        }
        /* Writes before this point belong to collect and older snapshots;
         * from here on they are "written since s". */
        err = sf__async_sync(t, r);
        if (err) {
            munmap(buf, len);
            free(bits);
            break;
        }
        r->sbits[s->slot] = bits;
        copy_tracked(r, buf, false);
        s->copies[s->ncopies++] = (struct sf_copy){r->start, r->end, buf};
        s->copy_bytes += len;
    }
    t->copy_bytes += s->copy_bytes;
    free(rs);
    if (err)
        sf__copysnap_free(s);
    return err;
}

static const struct sf_copy *copy_of(const sf_snapshot *s, uintptr_t a)
{
    for (size_t i = 0; i < s->ncopies; i++)
        if (a >= s->copies[i].start && a < s->copies[i].end)
            return &s->copies[i];
    return NULL;
}

/* The page must still be tracked (and not GONE) by s's tracker. */
static bool still_tracked(const sf_snapshot *s, uintptr_t a)
{
    unsigned g = sf__grace_enter();
    struct sf_region *r = sf__region_find(a);
    bool ok = r && r->t == s->t && r->track_gen <= s->gen &&
              !(atomic_load(&r->ps[(a - r->start) >> sf_page_shift]) & PS_GONE);
    sf__grace_exit(g);
    return ok;
}

int sf__copysnap_read(const sf_snapshot *s, uintptr_t a, void *buf, size_t len)
{
    char *out = buf;
    while (len) {
        const struct sf_copy *c = copy_of(s, a);
        if (!c || !still_tracked(s, a))
            return -ENOENT;
        uintptr_t page_end = (a | (sf_page_size - 1)) + 1;
        size_t n = page_end - a < len ? page_end - a : len;
        memcpy(out, c->buf + (a - c->start), n);
        a += n;
        out += n;
        len -= n;
    }
    return 0;
}

/* Pages written since s (or since s was last restored) come back from the
 * copy.  Copying marks them written in the kernel; rather than a second
 * scan, they are re-protected in spans (one call per span, as the
 * collector does) and recorded by hand: dirty for collect and for the
 * other snapshots, clean for s.  Caller holds t->lock, writers stopped. */
int sf__copysnap_restore(sf_snapshot *s, long *restored, bool *changed)
{
    sf_tracker *t = s->t;
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    if (!rs)
        return -ENOMEM;
    int err = 0;
    for (size_t i = 0; i < n && !err; i++) {
        struct sf_region *r = rs[i];
        uint64_t *bits = r->sbits[s->slot];
        const struct sf_copy *c = copy_of(s, r->start);
        if (!bits || !c)
            continue; /* tracked after s: left as it is */
        err = sf__async_sync(t, r);
        size_t span0 = SIZE_MAX, span1 = 0;
        for (size_t wi = 0; !err && wi < (r->npages + 63) >> 6; wi++) {
            /* Each bit is cleared once its page is back: on a failure the
             * pages not yet restored stay owed to the next restore. */
            while (!err && bits[wi]) {
                size_t p = (wi << 6) + (size_t)__builtin_ctzll(bits[wi]);
                bits[wi] &= bits[wi] - 1;
                if (atomic_load(&r->ps[p]) & PS_GONE)
                    continue;
                memcpy((char *)r->start + (p << sf_page_shift), c->buf + (p << sf_page_shift), sf_page_size);
                *changed = true;
                (*restored)++;
                sf__bits_set(r->abits, p, p + 1);
                for (int k = 0; k < SF_MAX_SNAPSHOTS; k++)
                    if (r->sbits[k] && k != s->slot)
                        sf__bits_set(r->sbits[k], p, p + 1);
                /* Spans never cross GONE pages (unregistered). */
                if (span0 != SIZE_MAX && (!sf__span_join(t, p - span1) || sf__gone_between(r, span1, p))) {
                    err = sf__uffd_wp(t->uffd, r->start + (span0 << sf_page_shift),
                                      (span1 - span0) << sf_page_shift, true, false);
                    span0 = SIZE_MAX;
                }
                if (span0 == SIZE_MAX)
                    span0 = p;
                span1 = p + 1;
            }
        }
        if (!err && span0 != SIZE_MAX)
            err = sf__uffd_wp(t->uffd, r->start + (span0 << sf_page_shift),
                              (span1 - span0) << sf_page_shift, true, false);
    }
    free(rs);
    return err;
}

/* Image pages: 1 with the page in buf, 0 when unchanged since parent. */
int sf__copysnap_page(const sf_snapshot *s, const sf_snapshot *parent, uintptr_t a, void *buf)
{
    const struct sf_copy *c = copy_of(s, a);
    if (!c || !still_tracked(s, a))
        return -ENOENT;
    const char *src = c->buf + (a - c->start);
    if (parent) {
        const struct sf_copy *pc = copy_of(parent, a);
        if (pc && memcmp(src, pc->buf + (a - pc->start), sf_page_size) == 0)
            return 0;
    }
    memcpy(buf, src, sf_page_size);
    return 1;
}

/* Caller holds t->lock. */
void sf__copysnap_free(sf_snapshot *s)
{
    sf_tracker *t = s->t;
    size_t n;
    struct sf_region **rs = sf__regions_list(t, &n);
    for (size_t i = 0; rs && i < n; i++) {
        free(rs[i]->sbits[s->slot]);
        rs[i]->sbits[s->slot] = NULL;
    }
    free(rs);
    for (size_t i = 0; i < s->ncopies; i++)
        munmap(s->copies[i].buf, s->copies[i].end - s->copies[i].start);
    free(s->copies);
    s->copies = NULL;
    s->ncopies = 0;
    t->copy_bytes -= s->copy_bytes;
    s->copy_bytes = 0;
}
