/* image_merge.c - flattening a chain of images into one full image
 * (sf_image_merge): the writer fed by reads from the nearest image of the
 * chain holding each page. */
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"
#include "image_impl.h"

/* ------------------------------------------------------------------------ */
/* Flattening a chain                                                       */
/* ------------------------------------------------------------------------ */

/* A window of chain[0]'s memory, filled from the chain a stretch at a time
 * so that each block is checksummed once per window, not once per page. */
struct merge_ctx {
    const sf_image *const *chain;
    size_t n;
    uint64_t win, win_len; /* the window [win, win + win_len) */
    size_t cap;            /* bytes the window may hold */
    uint8_t *buf, *need, *map;
};

/* Fills [addr, addr+len) (in one range of chain[0]) page by page from the
 * nearest image of the chain holding each page. */
static int chain_fill(struct merge_ctx *c, uint64_t addr, size_t len)
{
    const unsigned shift = c->chain[0]->shift;
    const size_t np = len >> shift;
    memset(c->need, 1, np);
    size_t left = np;
    for (size_t k = 0; k < c->n && left; k++) {
        for (size_t i = 0; i < np;) {
            if (!c->need[i]) {
                i++;
                continue;
            }
            size_t j = i;
            while (j < np && c->need[j])
                j++;
            uint64_t ra = addr + ((uint64_t)i << shift);
            int r = sf_image_read_map(c->chain[k], ra, c->buf + (i << shift), (j - i) << shift,
                                      c->map);
            if (r)
                return r;
            for (size_t q = i; q < j; q++)
                if (c->map[q - i] != SF_IMAGE_PAGE_ABSENT) {
                    c->need[q] = 0;
                    left--;
                }
            i = j;
        }
    }
    return left ? -ENODATA : 0;
}

static int merge_page(void *vctx, uint64_t addr, void *buf)
{
    struct merge_ctx *c = vctx;
    const sf_image *top = c->chain[0];
    const uint64_t ps = top->page_size;
    if (addr - c->win >= c->win_len || addr < c->win) {
        /* the window: from addr to the end of its range, at most cap */
        ptrdiff_t bi = find_block(top, addr);
        if (bi < 0)
            return -ENOENT;
        size_t ri = 0;
        while (ri < top->nranges && top->ranges[ri].addr + top->ranges[ri].len <= addr)
            ri++;
        if (ri == top->nranges)
            return -ENOENT;
        uint64_t left = top->ranges[ri].addr + top->ranges[ri].len - addr;
        size_t len = left < c->cap ? (size_t)left : c->cap;
        c->win_len = 0;
        int r = chain_fill(c, addr, len);
        if (r)
            return r;
        c->win = addr;
        c->win_len = len;
    }
    memcpy(buf, c->buf + (addr - c->win), (size_t)ps);
    return 1;
}

SF_API int sf_image_merge(const sf_image *const *chain, size_t n, int fd, unsigned flags)
{
    if (!chain || !n)
        return -EINVAL;
    for (size_t k = 0; k < n; k++) {
        if (!chain[k] || chain[k]->page_size != chain[0]->page_size)
            return -EINVAL;
        if (k + 1 < n ? chain[k]->parent_id != chain[k + 1]->id || !chain[k]->parent_id
                      : chain[k]->parent_id != 0)
            return -EINVAL;
    }
    const sf_image *top = chain[0];
    const size_t ps = top->page_size;
    struct merge_ctx c = {.chain = chain, .n = n};
    c.cap = ps >= (1u << 20) ? ps : (1u << 20);
    c.buf = sf__os_malloc(c.cap);
    c.need = sf__os_malloc(2 * (c.cap / ps));
    c.map = c.need ? c.need + c.cap / ps : NULL;
    int r = -ENOMEM;
    if (c.buf && c.need) {
        struct sf_image_src src = {
            .id = top->id,
            .taken_ns = top->taken_ns,
            .page_size = top->page_size,
            .ranges = top->ranges,
            .nranges = top->nranges,
            .read_page = merge_page,
            .ctx = &c,
            .flags = flags,
            .meta = top->meta,
        };
        /* a reader that went away is -EPIPE, not a SIGPIPE that kills */
        sigset_t pipe_set, old, pending;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        sf__os_sigpending(&pending);
        bool was_pending = sigismember(&pending, SIGPIPE);
        sf__os_sigmask(SIG_BLOCK, &pipe_set, &old);
        r = sf__image_write(fd, &src);
        if (r == -EPIPE && !was_pending) {
            struct timespec zero = {0, 0};
            while (sf__os_sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                ;
        }
        sf__os_sigmask(SIG_SETMASK, &old, NULL);
    }
    sf__os_free(c.buf);
    sf__os_free(c.need);
    return r;
}
