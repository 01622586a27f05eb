/* image.c - snapshot images: the streaming writer (sf__image_write) and the
 * validating reader (sf_image_*).  Byte layout: doc/IMAGE-FORMAT.md. */
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"
#include "image.h"

#include <errno.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* A fuzzer cannot forge 64-bit checksums, so fuzzing builds compute them
 * but accept mismatches to reach the parsing behind them (the libFuzzer
 * convention); production builds never define this. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define SUM_OK(got, want) ((void)(got), (void)(want), true)
#else
#define SUM_OK(got, want) ((got) == (want))
#endif

/* ------------------------------------------------------------------------ */
/* Little-endian fields, independent of the host's byte order               */
/* ------------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

static unsigned log2_u32(uint32_t v) { return (unsigned)__builtin_ctz(v); }

/* Pages one block may hold data for: bounded so the writer's buffer is. */
static size_t write_block_present(uint32_t page_size)
{
    return page_size >= SF_IMG_WRITE_BLOCK_DATA ? 1 : SF_IMG_WRITE_BLOCK_DATA / page_size;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                   */
/* ------------------------------------------------------------------------ */

struct writer {
    int fd;
    uint64_t written; /* image bytes so far, for the trailer */
};

/* write(2) until done: pipes and sockets take partial writes, signals
 * interrupt, and a non-blocking fd is waited on rather than failed. */
static int write_all(struct writer *w, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        ssize_t got = write(w->fd, c, n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = w->fd, .events = POLLOUT};
                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                    return -errno;
                continue;
            }
            return -errno;
        }
        if (got == 0)
            return -EIO; /* no progress and no error: would spin forever */
        c += got;
        n -= (size_t)got;
        w->written += (uint64_t)got;
    }
    return 0;
}

/* The same rules the reader enforces, so the writer never emits an image
 * the reader rejects.  Stores the page count. */
static int check_src(const struct sf_image_src *src, uint64_t *npages)
{
    uint32_t ps = src->page_size;
    if (!is_pow2(ps) || ps < SF_IMG_MIN_PAGE || ps > SF_IMG_MAX_PAGE)
        return -EINVAL;
    if (src->nranges > SF_IMG_MAX_RANGES || (src->nranges && !src->ranges))
        return -EINVAL;
    unsigned shift = log2_u32(ps);
    uint64_t total = 0, prev_end = 0;
    for (size_t i = 0; i < src->nranges; i++) {
        uint64_t a = src->ranges[i].addr, l = src->ranges[i].len;
        if (!l || (a & (ps - 1)) || (l & (ps - 1)) || l > UINT64_MAX - a)
            return -EINVAL;
        if (i && a < prev_end)
            return -EINVAL;
        prev_end = a + l;
        total += l >> shift;
    }
    if (total && !src->read_page)
        return -EINVAL;
    *npages = total;
    return 0;
}

static bool page_is_zero(const uint8_t *p, size_t n)
{
    /* overlapping memcmp: p[i] == p[i+1] for all i, and p[0] == 0 */
    return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

/* The block being filled.  Kinds and data live in one buffer laid out so
 * that, once the block ends, header + kinds + data are moved next to each
 * other and go out in a single write. */
struct wblock {
    uint8_t *mem;      /* [hdr][SF_IMG_MAX_BLOCK_PAGES kinds][data] */
    uint8_t *kinds;    /* mem + SF_IMG_BLK_HDR_SIZE */
    uint8_t *data;     /* kinds + SF_IMG_MAX_BLOCK_PAGES */
    size_t max_present;
    uint64_t addr;     /* first page */
    uint32_t npages, present, zero, absent;
};

static int flush_block(struct writer *w, struct wblock *b, uint64_t hdr_sum, uint32_t ps)
{
    if (!b->npages)
        return 0;
    uint8_t *kinds = b->data - b->npages;
    memmove(kinds, b->kinds, b->npages);
    size_t payload = b->npages + (size_t)b->present * ps;
    uint8_t *h = kinds - SF_IMG_BLK_HDR_SIZE;
    memcpy(h + SF_IMG_B_MAGIC, SF_IMG_BLOCK_MAGIC, 4);
    put32(h + SF_IMG_B_NPAGES, b->npages);
    put64(h + SF_IMG_B_ADDR, b->addr);
    put32(h + SF_IMG_B_PRESENT, b->present);
    put32(h + SF_IMG_B_ZERO, b->zero);
    put32(h + SF_IMG_B_ABSENT, b->absent);
    put32(h + SF_IMG_B_RESERVED, 0);
    put64(h + SF_IMG_B_PAYLOAD_SUM, XXH3_64bits(kinds, payload));
    /* seeded with the file header's checksum: blocks cannot be spliced in
     * from another image */
    put64(h + SF_IMG_B_CHECKSUM, XXH3_64bits_withSeed(h, SF_IMG_B_CHECKSUM, hdr_sum));
    int r = write_all(w, h, SF_IMG_BLK_HDR_SIZE + payload);
    b->npages = b->present = b->zero = b->absent = 0;
    return r;
}

int sf__image_write(int fd, const struct sf_image_src *src)
{
    if (!src)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    uint64_t npages;
    int r = check_src(src, &npages);
    if (r)
        return r;
    const uint32_t ps = src->page_size;
    const bool incremental = src->parent_id != 0;

    struct wblock b = {.max_present = write_block_present(ps)};
    size_t memsize = SF_IMG_BLK_HDR_SIZE + SF_IMG_MAX_BLOCK_PAGES + b.max_present * ps;
    b.mem = malloc(memsize);
    if (!b.mem)
        return -ENOMEM;
    b.kinds = b.mem + SF_IMG_BLK_HDR_SIZE;
    b.data = b.kinds + SF_IMG_MAX_BLOCK_PAGES;
    struct writer w = {.fd = fd};
    XXH3_state_t *st = NULL;
    uint64_t tot_present = 0, tot_zero = 0, tot_absent = 0, nblocks = 0;

    /* file header */
    uint8_t hdr[SF_IMG_HDR_SIZE];
    memcpy(hdr + SF_IMG_H_MAGIC, SF_IMG_MAGIC, 8);
    put32(hdr + SF_IMG_H_VERSION, SF_IMG_VERSION);
    put32(hdr + SF_IMG_H_PAGE_SIZE, ps);
    put64(hdr + SF_IMG_H_ID, src->id);
    put64(hdr + SF_IMG_H_PARENT, src->parent_id);
    put64(hdr + SF_IMG_H_TAKEN, (uint64_t)src->taken_ns);
    put64(hdr + SF_IMG_H_NRANGES, src->nranges);
    put64(hdr + SF_IMG_H_NPAGES, npages);
    put64(hdr + SF_IMG_H_RESERVED, 0);
    const uint64_t hdr_sum = XXH3_64bits(hdr, SF_IMG_H_CHECKSUM);
    put64(hdr + SF_IMG_H_CHECKSUM, hdr_sum);
    if ((r = write_all(&w, hdr, sizeof hdr)))
        goto out;

    /* range table, staged through the block buffer (at least 1 MiB) */
    st = XXH3_createState();
    if (!st || XXH3_64bits_reset_withSeed(st, hdr_sum) != XXH_OK) {
        r = -ENOMEM;
        goto out;
    }
    size_t per_chunk = memsize / SF_IMG_RANGE_SIZE;
    for (size_t i = 0; i < src->nranges;) {
        size_t n = src->nranges - i < per_chunk ? src->nranges - i : per_chunk;
        for (size_t j = 0; j < n; j++) {
            put64(b.mem + j * SF_IMG_RANGE_SIZE, src->ranges[i + j].addr);
            put64(b.mem + j * SF_IMG_RANGE_SIZE + 8, src->ranges[i + j].len);
        }
        XXH3_64bits_update(st, b.mem, n * SF_IMG_RANGE_SIZE);
        if ((r = write_all(&w, b.mem, n * SF_IMG_RANGE_SIZE)))
            goto out;
        i += n;
    }
    uint8_t sum[8];
    put64(sum, XXH3_64bits_digest(st));
    if ((r = write_all(&w, sum, sizeof sum)))
        goto out;

    /* blocks: runs of pages inside one range */
    for (size_t i = 0; i < src->nranges; i++) {
        uint64_t a = src->ranges[i].addr, end = a + src->ranges[i].len;
        for (; a < end; a += ps) {
            if (!b.npages)
                b.addr = a;
            uint8_t *slot = b.data + (size_t)b.present * ps;
            int got = src->read_page(src->ctx, a, slot);
            uint8_t kind;
            if (got < 0) {
                r = got;
                goto out;
            } else if (got == 1) {
                kind = page_is_zero(slot, ps) ? SF_IMG_PAGE_ZERO : SF_IMG_PAGE_PRESENT;
            } else if (got == 0 && incremental) {
                kind = SF_IMG_PAGE_ABSENT;
            } else {
                r = -EINVAL; /* absent page in a full image, or a bogus result */
                goto out;
            }
            b.kinds[b.npages++] = kind;
            if (kind == SF_IMG_PAGE_PRESENT) {
                b.present++;
                tot_present++;
            } else if (kind == SF_IMG_PAGE_ZERO) {
                b.zero++;
                tot_zero++;
            } else {
                b.absent++;
                tot_absent++;
            }
            if (b.npages == SF_IMG_MAX_BLOCK_PAGES || b.present == b.max_present ||
                a + ps == end) {
                if ((r = flush_block(&w, &b, hdr_sum, ps)))
                    goto out;
                nblocks++;
            }
        }
    }

    /* trailer: without it a reader treats the stream as truncated */
    uint8_t tr[SF_IMG_TRAILER_SIZE];
    memcpy(tr + SF_IMG_T_MAGIC, SF_IMG_TRAILER_MAGIC, 8);
    put64(tr + SF_IMG_T_NBLOCKS, nblocks);
    put64(tr + SF_IMG_T_PRESENT, tot_present);
    put64(tr + SF_IMG_T_ZERO, tot_zero);
    put64(tr + SF_IMG_T_ABSENT, tot_absent);
    put64(tr + SF_IMG_T_BYTES, w.written + SF_IMG_TRAILER_SIZE);
    put64(tr + SF_IMG_T_RESERVED, 0);
    put64(tr + SF_IMG_T_CHECKSUM, XXH3_64bits_withSeed(tr, SF_IMG_T_CHECKSUM, hdr_sum));
    r = write_all(&w, tr, sizeof tr);
out:
    XXH3_freeState(st);
    free(b.mem);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Reader                                                                   */
/* ------------------------------------------------------------------------ */

struct img_block {
    uint64_t addr;  /* first page */
    uint64_t off;   /* file offset of the payload (kinds, then data) */
    uint64_t sum;   /* payload checksum */
    uint32_t npages, present, absent, zero;
};

struct sf_image {
    int fd;
    uint32_t page_size;
    unsigned shift;
    uint64_t id, parent_id;
    int64_t taken_ns;
    uint64_t npages, present, zero, absent;
    size_t nranges;
    struct sf_image_range *ranges;
    size_t nblocks;
    struct img_block *blocks;
};

/* pread exactly n bytes.  End of file is corruption (the file was checked
 * to be long enough, or shrank after open). */
static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
    uint8_t *c = p;
    while (n) {
        if (off > (uint64_t)INT64_MAX)
            return -EBADMSG;
        ssize_t got = pread(fd, c, n, (off_t)off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (got == 0)
            return -EBADMSG;
        c += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return 0;
}

/* Appends to a growing array; growth follows what was already validated
 * from the file, never a count the file claims. */
static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > SIZE_MAX / elem)
        return -ENOMEM;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static uint64_t payload_len(const struct sf_image *img, const struct img_block *b)
{
    return b->npages + ((uint64_t)b->present << img->shift);
}

/* Scratch for streaming a block: its kinds, then its data in chunks, so
 * that reading never allocates in proportion to a block. */
#define SCRATCH_CHUNK (64u << 10)
struct scratch {
    XXH3_state_t *st;
    uint8_t *kinds; /* SF_IMG_MAX_BLOCK_PAGES */
    uint8_t *chunk; /* SCRATCH_CHUNK */
};

static int scratch_init(struct scratch *s)
{
    s->st = XXH3_createState();
    s->kinds = malloc(SF_IMG_MAX_BLOCK_PAGES + SCRATCH_CHUNK);
    s->chunk = s->kinds ? s->kinds + SF_IMG_MAX_BLOCK_PAGES : NULL;
    return s->st && s->kinds ? 0 : -ENOMEM;
}

static void scratch_fini(struct scratch *s)
{
    XXH3_freeState(s->st);
    free(s->kinds);
}

/* Streams one block payload: checksums all of it and, if dst is not NULL,
 * copies the bytes of [addr, last] that fall in this block to dst (dst
 * holds addr).  Kinds are checked against the header's counts before they
 * steer any copy (a checksum proves integrity, not that a hostile writer
 * produced sane kinds).  dst may be partly written when this fails; the
 * caller then fails too, so no wrong byte is ever returned as success. */
static int scan_block(const sf_image *img, const struct img_block *b, struct scratch *s,
                      uint64_t addr, uint64_t last, uint8_t *dst)
{
    const uint64_t ps = img->page_size;
    int r = pread_all(img->fd, s->kinds, b->npages, b->off);
    if (r)
        return r;
    if (XXH3_64bits_reset(s->st) != XXH_OK)
        return -ENOMEM;
    XXH3_64bits_update(s->st, s->kinds, b->npages);
    uint32_t n[SF_IMG_PAGE_ABSENT + 1] = {0};
    for (uint32_t i = 0; i < b->npages; i++) {
        uint8_t k = s->kinds[i];
        if (k < SF_IMG_PAGE_PRESENT || k > SF_IMG_PAGE_ABSENT)
            return -EBADMSG;
        n[k]++;
    }
    /* the absent count follows: open checked that the three sum to npages */
    if (n[SF_IMG_PAGE_PRESENT] != b->present || n[SF_IMG_PAGE_ZERO] != b->zero)
        return -EBADMSG;

    /* zero and absent pages need no data */
    bool absent_hit = false;
    uint64_t first_j = 0, end_j = 0; /* pages of this block inside the request */
    if (dst) {
        first_j = addr > b->addr ? (addr - b->addr) >> img->shift : 0;
        end_j = ((last - b->addr) >> img->shift) + 1;
        if (end_j > b->npages)
            end_j = b->npages;
        for (uint64_t j = first_j; j < end_j; j++) {
            uint64_t pa = b->addr + (j << img->shift);
            uint64_t from = pa > addr ? pa : addr;
            uint64_t to = pa + (ps - 1) < last ? pa + (ps - 1) : last;
            if (s->kinds[j] == SF_IMG_PAGE_ZERO)
                memset(dst + (from - addr), 0, (size_t)(to - from + 1));
            else if (s->kinds[j] == SF_IMG_PAGE_ABSENT)
                absent_hit = true;
        }
    }

    /* data: present pages in page order; (p, j) walks present page p,
     * which is page j of the block, in step with the stream */
    const uint64_t dlen = (uint64_t)b->present << img->shift;
    uint64_t p = 0, j = 0;
    while (j < b->npages && s->kinds[j] != SF_IMG_PAGE_PRESENT)
        j++;
    for (uint64_t d0 = 0; d0 < dlen;) {
        size_t n_chunk = dlen - d0 < SCRATCH_CHUNK ? (size_t)(dlen - d0) : SCRATCH_CHUNK;
        if ((r = pread_all(img->fd, s->chunk, n_chunk, b->off + b->npages + d0)))
            return r;
        XXH3_64bits_update(s->st, s->chunk, n_chunk);
        const uint64_t d1 = d0 + n_chunk;
        while (dst && p < b->present && (p << img->shift) < d1) {
            if (j >= first_j && j < end_j) {
                uint64_t pa = b->addr + (j << img->shift);
                /* the bytes of page j wanted, intersected with this chunk */
                uint64_t from = pa > addr ? pa : addr;
                uint64_t to = pa + (ps - 1) < last ? pa + (ps - 1) : last;
                uint64_t dfrom = (p << img->shift) + (from - pa);
                uint64_t dto = (p << img->shift) + (to - pa);
                if (dfrom < d0) {
                    from += d0 - dfrom;
                    dfrom = d0;
                }
                if (dto >= d1)
                    dto = d1 - 1;
                if (dfrom <= dto)
                    memcpy(dst + (from - addr), s->chunk + (dfrom - d0), (size_t)(dto - dfrom + 1));
            }
            if (((p + 1) << img->shift) > d1)
                break; /* page continues in the next chunk */
            p++;
            do
                j++;
            while (j < b->npages && s->kinds[j] != SF_IMG_PAGE_PRESENT);
        }
        d0 = d1;
    }
    if (!SUM_OK(XXH3_64bits_digest(s->st), b->sum))
        return -EBADMSG;
    return absent_hit ? -ENODATA : 0;
}

static int file_size(int fd, uint64_t *size)
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

/* Range table: read in chunks, checked entry by entry as it streams so that
 * a hostile count costs at most the bytes actually present and valid. */
static int read_ranges(struct sf_image *img, uint64_t hdr_sum, uint64_t off)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st || XXH3_64bits_reset_withSeed(st, hdr_sum) != XXH_OK) {
        XXH3_freeState(st);
        return -ENOMEM;
    }
    uint8_t chunk[256 * SF_IMG_RANGE_SIZE];
    size_t cap = 0, left = (size_t)img->nranges;
    uint64_t pages = 0, prev_end = 0;
    int r = 0;
    img->nranges = 0;
    while (left) {
        size_t n = left < 256 ? left : 256;
        if ((r = pread_all(img->fd, chunk, n * SF_IMG_RANGE_SIZE, off)))
            goto out;
        XXH3_64bits_update(st, chunk, n * SF_IMG_RANGE_SIZE);
        for (size_t j = 0; j < n; j++) {
            uint64_t a = get64(chunk + j * SF_IMG_RANGE_SIZE);
            uint64_t l = get64(chunk + j * SF_IMG_RANGE_SIZE + 8);
            uint64_t mask = img->page_size - 1;
            if (!l || (a & mask) || (l & mask) || l > UINT64_MAX - a ||
                (img->nranges && a < prev_end)) {
                r = -EBADMSG;
                goto out;
            }
            prev_end = a + l;
            pages += l >> img->shift; /* sorted, disjoint: cannot overflow */
            if ((r = grow((void **)&img->ranges, &cap, img->nranges, sizeof *img->ranges)))
                goto out;
            img->ranges[img->nranges++] = (struct sf_image_range){a, l};
        }
        off += n * SF_IMG_RANGE_SIZE;
        left -= n;
    }
    uint8_t sum[8];
    if ((r = pread_all(img->fd, sum, sizeof sum, off)))
        goto out;
    if (!SUM_OK(XXH3_64bits_digest(st), get64(sum)) || pages != img->npages)
        r = -EBADMSG;
out:
    XXH3_freeState(st);
    return r;
}

/* Block headers: each one is checked, must continue exactly where the
 * previous one ended (blocks tile the ranges in order) and must fit in the
 * file, so the index grows only with real, valid blocks. */
static int read_blocks(struct sf_image *img, uint64_t hdr_sum, uint64_t *offp, uint64_t avail)
{
    uint64_t off = *offp;
    size_t cap = 0, ri = 0;
    uint64_t next = img->nranges ? img->ranges[0].addr : 0;
    while (ri < img->nranges) {
        uint8_t h[SF_IMG_BLK_HDR_SIZE];
        if (avail - off < SF_IMG_BLK_HDR_SIZE + SF_IMG_TRAILER_SIZE)
            return -EBADMSG;
        int r = pread_all(img->fd, h, sizeof h, off);
        if (r)
            return r;
        if (memcmp(h + SF_IMG_B_MAGIC, SF_IMG_BLOCK_MAGIC, 4) != 0 ||
            !SUM_OK(XXH3_64bits_withSeed(h, SF_IMG_B_CHECKSUM, hdr_sum),
                    get64(h + SF_IMG_B_CHECKSUM)) ||
            get32(h + SF_IMG_B_RESERVED))
            return -EBADMSG;
        struct img_block b = {
            .addr = get64(h + SF_IMG_B_ADDR),
            .off = off + SF_IMG_BLK_HDR_SIZE,
            .sum = get64(h + SF_IMG_B_PAYLOAD_SUM),
            .npages = get32(h + SF_IMG_B_NPAGES),
            .present = get32(h + SF_IMG_B_PRESENT),
            .zero = get32(h + SF_IMG_B_ZERO),
            .absent = get32(h + SF_IMG_B_ABSENT),
        };
        if (b.npages > SF_IMG_MAX_BLOCK_PAGES ||
            ((uint64_t)b.present << img->shift) > SF_IMG_MAX_BLOCK_DATA)
            return -EFBIG;
        if (!b.npages || (uint64_t)b.present + b.zero + b.absent != b.npages ||
            (b.absent && !img->parent_id) || b.addr != next)
            return -EBADMSG;
        const struct sf_image_range *rg = &img->ranges[ri];
        uint64_t blen = (uint64_t)b.npages << img->shift;
        if (blen > rg->addr + rg->len - b.addr)
            return -EBADMSG;
        uint64_t plen = payload_len(img, &b);
        if (plen > avail - b.off || avail - b.off - plen < SF_IMG_TRAILER_SIZE)
            return -EBADMSG;
        if ((r = grow((void **)&img->blocks, &cap, img->nblocks, sizeof *img->blocks)))
            return r;
        img->blocks[img->nblocks++] = b;
        img->present += b.present;
        img->zero += b.zero;
        img->absent += b.absent;
        off = b.off + plen;
        next = b.addr + blen;
        if (next == rg->addr + rg->len && ++ri < img->nranges)
            next = img->ranges[ri].addr;
    }
    *offp = off;
    return 0;
}

static int read_trailer(struct sf_image *img, uint64_t hdr_sum, uint64_t off, uint64_t avail)
{
    uint8_t t[SF_IMG_TRAILER_SIZE];
    if (avail - off < SF_IMG_TRAILER_SIZE)
        return -EBADMSG;
    int r = pread_all(img->fd, t, sizeof t, off);
    if (r)
        return r;
    if (memcmp(t + SF_IMG_T_MAGIC, SF_IMG_TRAILER_MAGIC, 8) != 0 ||
        !SUM_OK(XXH3_64bits_withSeed(t, SF_IMG_T_CHECKSUM, hdr_sum),
                get64(t + SF_IMG_T_CHECKSUM)) ||
        get64(t + SF_IMG_T_RESERVED) || get64(t + SF_IMG_T_NBLOCKS) != img->nblocks ||
        get64(t + SF_IMG_T_PRESENT) != img->present ||
        get64(t + SF_IMG_T_ZERO) != img->zero || get64(t + SF_IMG_T_ABSENT) != img->absent ||
        get64(t + SF_IMG_T_BYTES) != off + SF_IMG_TRAILER_SIZE)
        return -EBADMSG;
    return 0;
}

SF_API void sf_image_close(sf_image *img)
{
    if (!img)
        return;
    free(img->ranges);
    free(img->blocks);
    free(img);
}

SF_API int sf_image_open(sf_image **out, int fd)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (fd < 0)
        return -EBADF;
    uint64_t avail = 0;
    int r = file_size(fd, &avail);
    if (r)
        return r;

    uint8_t h[SF_IMG_HDR_SIZE];
    if (avail < SF_IMG_HDR_SIZE)
        return -EBADMSG;
    if ((r = pread_all(fd, h, sizeof h, 0)))
        return r;
    if (memcmp(h + SF_IMG_H_MAGIC, SF_IMG_MAGIC, 8) != 0)
        return -EBADMSG;
    /* before the checksum: another version may lay the header out
     * differently */
    if (get32(h + SF_IMG_H_VERSION) != SF_IMG_VERSION)
        return -EPROTO;
    uint64_t hdr_sum = get64(h + SF_IMG_H_CHECKSUM);
    if (!SUM_OK(XXH3_64bits(h, SF_IMG_H_CHECKSUM), hdr_sum) || get64(h + SF_IMG_H_RESERVED))
        return -EBADMSG;

    uint32_t ps = get32(h + SF_IMG_H_PAGE_SIZE);
    uint64_t nranges = get64(h + SF_IMG_H_NRANGES), npages = get64(h + SF_IMG_H_NPAGES);
    if (!is_pow2(ps) || ps < SF_IMG_MIN_PAGE)
        return -EBADMSG;
    unsigned shift = log2_u32(ps);
    if (ps > SF_IMG_MAX_PAGE || nranges > SF_IMG_MAX_RANGES || npages > (UINT64_MAX >> shift))
        return -EFBIG;
    /* What the claimed counts need at least: the range table, one kind
     * byte per page, a header per SF_IMG_MAX_BLOCK_PAGES pages and the
     * trailer.  Checked before anything is allocated. */
    uint64_t off = SF_IMG_HDR_SIZE + nranges * SF_IMG_RANGE_SIZE + 8;
    if (nranges > npages || off > avail || npages > avail - off)
        return -EBADMSG;
    uint64_t need = npages +
                    (npages + SF_IMG_MAX_BLOCK_PAGES - 1) / SF_IMG_MAX_BLOCK_PAGES *
                        SF_IMG_BLK_HDR_SIZE +
                    SF_IMG_TRAILER_SIZE;
    if (need > avail - off)
        return -EBADMSG;

    sf_image *img = calloc(1, sizeof *img);
    if (!img)
        return -ENOMEM;
    img->fd = fd;
    img->page_size = ps;
    img->shift = shift;
    img->id = get64(h + SF_IMG_H_ID);
    img->parent_id = get64(h + SF_IMG_H_PARENT);
    img->taken_ns = (int64_t)get64(h + SF_IMG_H_TAKEN);
    img->npages = npages;
    img->nranges = (size_t)nranges;
    if ((r = read_ranges(img, hdr_sum, SF_IMG_HDR_SIZE)) ||
        (r = read_blocks(img, hdr_sum, &off, avail)) ||
        (r = read_trailer(img, hdr_sum, off, avail))) {
        sf_image_close(img);
        return r;
    }
    *out = img;
    return 0;
}

SF_API int sf_image_get_info(const sf_image *img, sf_image_info *info)
{
    if (!img || !info)
        return -EINVAL;
    *info = (sf_image_info){
        .version = SF_IMG_VERSION,
        .page_size = img->page_size,
        .id = img->id,
        .parent_id = img->parent_id,
        .ranges = img->nranges,
        .bytes = img->npages << img->shift,
        .pages_stored = img->present,
        .pages_zero = img->zero,
        .pages_absent = img->absent,
        .taken_ns = img->taken_ns,
    };
    return 0;
}

SF_API int sf_image_ranges(const sf_image *img, sf_range_fn fn, void *arg)
{
    if (!img)
        return -EINVAL;
    size_t i = 0;
    while (i < img->nranges) {
        const struct sf_image_range *rg = &img->ranges[i++];
        if (fn && fn((void *)(uintptr_t)rg->addr, (size_t)rg->len, arg))
            break;
    }
    return (int)i; /* nranges <= SF_IMG_MAX_RANGES < INT_MAX */
}

/* The block holding addr, by binary search over the address-ordered index;
 * -1 if addr lies in no range. */
static ptrdiff_t find_block(const sf_image *img, uint64_t addr)
{
    size_t lo = 0, hi = img->nblocks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (img->blocks[mid].addr <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return -1;
    const struct img_block *b = &img->blocks[lo - 1];
    if (addr - b->addr >= ((uint64_t)b->npages << img->shift))
        return -1;
    return (ptrdiff_t)(lo - 1);
}

SF_API int sf_image_read(const sf_image *img, uint64_t addr, void *buf, size_t len)
{
    if (!img || (!buf && len))
        return -EINVAL;
    if (!len)
        return 0;
    if (len - 1 > UINT64_MAX - addr)
        return -EINVAL;
    const uint64_t last = addr + (len - 1);

    /* Check the whole span is covered before any I/O, so that -ENOENT
     * never depends on checksums. */
    ptrdiff_t first = find_block(img, addr);
    if (first < 0)
        return -ENOENT;
    size_t i = (size_t)first;
    for (;;) {
        const struct img_block *b = &img->blocks[i];
        uint64_t blast = b->addr + ((uint64_t)b->npages << img->shift) - 1;
        if (last <= blast)
            break;
        if (i + 1 == img->nblocks || img->blocks[i + 1].addr != blast + 1)
            return -ENOENT;
        i++;
    }
    const size_t lastblk = i;

    struct scratch s;
    int r = scratch_init(&s);
    for (i = (size_t)first; i <= lastblk && !r; i++)
        r = scan_block(img, &img->blocks[i], &s, addr, last, buf);
    scratch_fini(&s);
    return r;
}

SF_API int sf_image_verify(const sf_image *img)
{
    if (!img)
        return -EINVAL;
    struct scratch s;
    int r = scratch_init(&s);
    for (size_t i = 0; i < img->nblocks && !r; i++)
        r = scan_block(img, &img->blocks[i], &s, 0, 0, NULL);
    scratch_fini(&s);
    return r;
}
