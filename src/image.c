/* image.c - snapshot images: the streaming writer (sf__image_write) and the
 * validating reader (sf_image_*).  Byte layout: doc/IMAGE-FORMAT.md. */
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"
#include "image.h"
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

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
        ssize_t got = sf__os_write(w->fd, c, n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd pfd = {.fd = w->fd, .events = POLLOUT};
                if (sf__os_poll(&pfd, 1, -1) < 0 && errno != EINTR)
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

#define PROT_BITS                                                                          \
    (SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE | SF_IMAGE_PROT_EXEC | SF_IMAGE_PROT_SHARED | \
     SF_IMAGE_PROT_KNOWN)
#define WRITE_FLAGS (SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(0x1f))

/* The same rules the reader enforces, so the writer never emits an image
 * the reader rejects.  Stores the page count. */
static int check_src(const struct sf_image_src *src, uint64_t *npages)
{
    uint32_t ps = src->page_size;
    if (!is_pow2(ps) || ps < SF_IMG_MIN_PAGE || ps > SF_IMG_MAX_PAGE)
        return -EINVAL;
    if (src->nranges > SF_IMG_MAX_RANGES || (src->nranges && !src->ranges))
        return -EINVAL;
    if (src->version && src->version != SF_IMG_VERSION && src->version != SF_IMG_VERSION_1)
        return -EINVAL;
    if ((src->flags & ~WRITE_FLAGS) || SF_WRITE_ZSTD_LEVEL_OF(src->flags) > SF_WRITE_ZSTD_LEVEL_MAX)
        return -EINVAL;
    if (src->version == SF_IMG_VERSION_1 && src->flags)
        return -EINVAL; /* version 1 has no compression */
    unsigned shift = log2_u32(ps);
    uint64_t total = 0, prev_end = 0;
    for (size_t i = 0; i < src->nranges; i++) {
        const struct sf_image_range *rg = &src->ranges[i];
        const struct sf_image_meta *mt = src->meta ? &src->meta[i] : NULL;
        uint64_t a = rg->addr, l = rg->len;
        if (!l || (a & (ps - 1)) || (l & (ps - 1)) || l > UINT64_MAX - a)
            return -EINVAL;
        if (i && a < prev_end)
            return -EINVAL;
        if (mt && ((mt->prot & ~PROT_BITS) || (mt->name && strlen(mt->name) > SF_IMG_MAX_NAME)))
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

/* ------------------------------------------------------------------------ */
/* Mapping names and protections from /proc/self/maps                       */
/* ------------------------------------------------------------------------ */

struct map_ent {
    uint64_t start, end, offset;
    uint32_t prot;
    char *name; /* "" for none */
};

struct maps {
    struct map_ent *v;
    size_t n;
};

static void maps_free(struct maps *m)
{
    for (size_t i = 0; i < m->n; i++)
        sf__os_free(m->v[i].name);
    sf__os_free(m->v);
    m->v = NULL;
    m->n = 0;
}

static int grow(void **v, size_t *cap, size_t n, size_t elem);

/* One line: "start-end perms offset dev inode   name". */
static int maps_line(struct maps *m, size_t *cap, const char *line, size_t len)
{
    char *end;
    uint64_t s = strtoull(line, &end, 16);
    if (*end != '-')
        return 0;
    uint64_t e = strtoull(end + 1, &end, 16);
    if (*end != ' ' || e <= s || (size_t)(end - line) + 5 > len)
        return 0;
    const char *perm = end + 1;
    uint32_t prot = SF_IMAGE_PROT_KNOWN;
    prot |= perm[0] == 'r' ? SF_IMAGE_PROT_READ : 0;
    prot |= perm[1] == 'w' ? SF_IMAGE_PROT_WRITE : 0;
    prot |= perm[2] == 'x' ? SF_IMAGE_PROT_EXEC : 0;
    prot |= perm[3] == 's' ? SF_IMAGE_PROT_SHARED : 0;
    uint64_t offset = len > (size_t)(perm - line) + 5 ? strtoull(perm + 5, NULL, 16) : 0;
    /* the name starts after the fifth field and the spaces after it */
    const char *p = perm, *lim = line + len;
    for (int f = 0; f < 4 && p < lim; f++) {
        while (p < lim && *p != ' ')
            p++;
        while (p < lim && *p == ' ')
            p++;
    }
    size_t nl = (size_t)(lim - p);
    if (nl > SF_IMG_MAX_NAME)
        nl = SF_IMG_MAX_NAME;
    int r = grow((void **)&m->v, cap, m->n, sizeof *m->v);
    if (r)
        return r;
    char *name = sf__os_malloc(nl + 1);
    if (!name)
        return -ENOMEM;
    memcpy(name, p, nl);
    name[nl] = 0;
    m->v[m->n++] = (struct map_ent){s, e, offset, prot, name};
    return 0;
}

static int maps_read(struct maps *m)
{
    int fd = sf__os_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* no /proc: ranges go without names */
    size_t cap = 0, have = 0, bcap = 8192;
    char *buf = sf__os_malloc(bcap);
    int r = buf ? 0 : -ENOMEM;
    for (;;) {
        if (r)
            break;
        if (have == bcap) {
            char *nb = sf__os_realloc(buf, bcap * 2);
            if (!nb) {
                r = -ENOMEM;
                break;
            }
            buf = nb;
            bcap *= 2;
        }
        ssize_t got = sf__os_read(fd, buf + have, bcap - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        have += (size_t)got;
        size_t used = 0;
        for (char *nl; !r && (nl = memchr(buf + used, '\n', have - used)); used = (size_t)(nl - buf) + 1)
            r = maps_line(m, &cap, buf + used, (size_t)(nl - (buf + used)));
        memmove(buf, buf + used, have - used);
        have -= used;
    }
    sf__os_free(buf);
    sf__os_close(fd);
    if (r)
        maps_free(m);
    return r;
}

/* The ranges to write: src's, each split where the mapping holding it
 * changes name or protection, with those attached.  Tracked memory is a
 * writable mapping whatever protection snapfault itself put on it (the
 * mprotect backend write-protects clean pages), so PROT_WRITE is recorded
 * for every part that lies in a mapping. */
static int ranges_with_maps(const struct sf_image_src *src, struct maps *m,
                            struct sf_image_range **out, struct sf_image_meta **outm, size_t *nout)
{
    int r = maps_read(m);
    if (r)
        return r;
    struct sf_image_range *v = NULL;
    struct sf_image_meta *vm = NULL;
    size_t n = 0, cap = 0, capm = 0, mi = 0;
    for (size_t i = 0; i < src->nranges && !r; i++) {
        uint64_t a = src->ranges[i].addr, end = a + src->ranges[i].len;
        while (a < end && !r) {
            while (mi < m->n && m->v[mi].end <= a)
                mi++;
            uint64_t to = end;
            uint32_t prot = 0;
            uint64_t offset = 0;
            const char *name = "";
            if (mi < m->n && m->v[mi].start <= a) {
                prot = m->v[mi].prot | SF_IMAGE_PROT_WRITE;
                name = m->v[mi].name;
                if (name[0] == '/')
                    offset = m->v[mi].offset + (a - m->v[mi].start);
                size_t k = mi;
                /* following mappings that look the same join this part */
                while (k + 1 < m->n && m->v[k].end < end && m->v[k + 1].start == m->v[k].end &&
                       (m->v[k + 1].prot | SF_IMAGE_PROT_WRITE) == prot &&
                       strcmp(m->v[k + 1].name, name) == 0 &&
                       (name[0] != '/' ||
                        m->v[k + 1].offset == m->v[k].offset + (m->v[k].end - m->v[k].start)))
                    k++;
                if (m->v[k].end < to)
                    to = m->v[k].end;
            } else if (mi < m->n && m->v[mi].start < to) {
                to = m->v[mi].start; /* a hole before the next mapping */
            }
            if ((r = grow((void **)&v, &cap, n, sizeof *v)) ||
                (r = grow((void **)&vm, &capm, n, sizeof *vm)))
                break;
            vm[n] = (struct sf_image_meta){prot, name, offset};
            v[n++] = (struct sf_image_range){a, to - a};
            a = to;
        }
    }
    if (r) {
        sf__os_free(v);
        sf__os_free(vm);
        maps_free(m);
        return r;
    }
    *out = v;
    *outm = vm;
    *nout = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Blocks                                                                   */
/* ------------------------------------------------------------------------ */

/* The block being filled.  Kinds and data live in one buffer laid out so
 * that, once the block ends, header + kinds + data are moved next to each
 * other and go out in a single write. */
struct wblock {
    uint8_t *mem;      /* [hdr][SF_IMG_MAX_BLOCK_PAGES kinds][data] */
    uint8_t *kinds;    /* mem + header size */
    uint8_t *data;     /* kinds + SF_IMG_MAX_BLOCK_PAGES */
    size_t max_present;
    uint64_t addr;     /* first page */
    uint32_t npages, present, zero, absent;
    /* compression (version 2, SF_WRITE_ZSTD) */
    ZSTD_CCtx *cctx;
    int level;
    uint8_t *zmem;     /* [hdr][kinds][compressed data] */
    size_t zcap;       /* bytes of compressed data zmem holds */
};

static void block_header(uint8_t *h, const struct wblock *b, uint32_t version, uint32_t enc,
                         uint64_t stored, uint64_t payload_sum, uint64_t hdr_sum)
{
    memcpy(h + SF_IMG_B_MAGIC, SF_IMG_BLOCK_MAGIC, 4);
    put32(h + SF_IMG_B_NPAGES, b->npages);
    put64(h + SF_IMG_B_ADDR, b->addr);
    put32(h + SF_IMG_B_PRESENT, b->present);
    put32(h + SF_IMG_B_ZERO, b->zero);
    put32(h + SF_IMG_B_ABSENT, b->absent);
    /* checksums seeded with the file header's checksum: blocks cannot be
     * spliced in from another image */
    if (version == SF_IMG_VERSION_1) {
        put32(h + SF_IMG_B_RESERVED, 0);
        put64(h + SF_IMG_B_PAYLOAD_SUM, payload_sum);
        put64(h + SF_IMG_B_CHECKSUM, XXH3_64bits_withSeed(h, SF_IMG_B_CHECKSUM, hdr_sum));
    } else {
        put32(h + SF_IMG2_B_ENCODING, enc);
        put32(h + SF_IMG2_B_STORED, (uint32_t)stored);
        put32(h + SF_IMG2_B_RESERVED, 0);
        put64(h + SF_IMG2_B_PAYLOAD_SUM, payload_sum);
        put64(h + SF_IMG2_B_CHECKSUM, XXH3_64bits_withSeed(h, SF_IMG2_B_CHECKSUM, hdr_sum));
    }
}

static int flush_block(struct writer *w, struct wblock *b, uint64_t hdr_sum, uint32_t ps,
                       uint32_t version)
{
    if (!b->npages)
        return 0;
    const size_t hs = version == SF_IMG_VERSION_1 ? SF_IMG_BLK_HDR_SIZE : SF_IMG2_BLK_HDR_SIZE;
    const size_t raw = (size_t)b->present * ps;
    int r;
    if (b->cctx && b->present) {
        uint8_t *kinds = b->zmem + hs;
        memcpy(kinds, b->kinds, b->npages);
        size_t c = ZSTD_compressCCtx(b->cctx, kinds + b->npages, b->zcap, b->data, raw, b->level);
        if (ZSTD_isError(c)) {
            r = -ENOMEM; /* the bound was given: only an allocation can fail */
            goto done;
        }
        if (c < raw) {
            size_t payload = b->npages + c;
            block_header(b->zmem, b, version, SF_IMG_ENC_ZSTD, c, XXH3_64bits(kinds, payload), hdr_sum);
            r = write_all(w, b->zmem, hs + payload);
            goto done;
        }
        /* incompressible: stored raw */
    }
    uint8_t *kinds = b->data - b->npages;
    memmove(kinds, b->kinds, b->npages);
    size_t payload = b->npages + raw;
    uint8_t *h = kinds - hs;
    block_header(h, b, version, SF_IMG_ENC_RAW, raw, XXH3_64bits(kinds, payload), hdr_sum);
    r = write_all(w, h, hs + payload);
done:
    b->npages = b->present = b->zero = b->absent = 0;
    return r;
}

/* Range table bytes go through a staging buffer, checksummed as they go. */
struct stage {
    struct writer *w;
    XXH3_state_t *st;
    uint8_t *p;
    size_t n, cap;
};

static int stage_put(struct stage *s, const void *p, size_t n)
{
    const uint8_t *c = p;
    while (n) {
        size_t k = s->cap - s->n < n ? s->cap - s->n : n;
        memcpy(s->p + s->n, c, k);
        s->n += k;
        c += k;
        n -= k;
        if (s->n == s->cap) {
            XXH3_64bits_update(s->st, s->p, s->n);
            int r = write_all(s->w, s->p, s->n);
            s->n = 0;
            if (r)
                return r;
        }
    }
    return 0;
}

static int stage_end(struct stage *s)
{
    XXH3_64bits_update(s->st, s->p, s->n);
    int r = write_all(s->w, s->p, s->n);
    s->n = 0;
    if (r)
        return r;
    uint8_t sum[8];
    put64(sum, XXH3_64bits_digest(s->st));
    return write_all(s->w, sum, sizeof sum);
}

static int write_table(struct writer *w, const struct sf_image_range *rg,
                       const struct sf_image_meta *mt, size_t n, uint32_t version,
                       uint64_t hdr_sum, uint8_t *buf, size_t cap)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st || XXH3_64bits_reset_withSeed(st, hdr_sum) != XXH_OK) {
        XXH3_freeState(st);
        return -ENOMEM;
    }
    struct stage s = {.w = w, .st = st, .p = buf, .cap = cap};
    int r = 0;
    for (size_t i = 0; i < n && !r; i++) {
        uint8_t e[SF_IMG2_RANGE_SIZE];
        put64(e, rg[i].addr);
        put64(e + 8, rg[i].len);
        if (version == SF_IMG_VERSION_1) {
            r = stage_put(&s, e, SF_IMG_RANGE_SIZE);
            continue;
        }
        put32(e + SF_IMG2_R_PROT, mt ? mt[i].prot : 0);
        put32(e + SF_IMG2_R_NAMELEN, mt && mt[i].name ? (uint32_t)strlen(mt[i].name) : 0);
        put64(e + SF_IMG2_R_OFFSET, mt ? mt[i].offset : 0);
        r = stage_put(&s, e, SF_IMG2_RANGE_SIZE);
    }
    /* version 2: the names, in range order, after the entries */
    for (size_t i = 0; i < n && !r && version != SF_IMG_VERSION_1; i++)
        if (mt && mt[i].name)
            r = stage_put(&s, mt[i].name, strlen(mt[i].name));
    if (!r)
        r = stage_end(&s);
    XXH3_freeState(st);
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
    const uint32_t version = src->version ? src->version : SF_IMG_VERSION;
    const bool incremental = src->parent_id != 0;
    const size_t hs = version == SF_IMG_VERSION_1 ? SF_IMG_BLK_HDR_SIZE : SF_IMG2_BLK_HDR_SIZE;

    struct wblock b = {.max_present = write_block_present(ps)};
    /* the ranges with their mappings' names (version 2) */
    struct maps maps = {0};
    const struct sf_image_range *ranges = src->ranges;
    const struct sf_image_meta *meta = src->meta;
    struct sf_image_range *split = NULL;
    struct sf_image_meta *split_meta = NULL;
    size_t nranges = src->nranges;
    if (version != SF_IMG_VERSION_1 && !meta) {
        if ((r = ranges_with_maps(src, &maps, &split, &split_meta, &nranges)))
            return r;
        ranges = split;
        meta = split_meta;
        if (nranges > SF_IMG_MAX_RANGES) {
            r = -EFBIG;
            goto out;
        }
    }

    size_t memsize = hs + SF_IMG_MAX_BLOCK_PAGES + b.max_present * ps;
    b.mem = sf__os_malloc(memsize);
    if (!b.mem) {
        r = -ENOMEM;
        goto out;
    }
    b.kinds = b.mem + hs;
    b.data = b.kinds + SF_IMG_MAX_BLOCK_PAGES;
    if (src->flags & SF_WRITE_ZSTD) {
        unsigned lvl = SF_WRITE_ZSTD_LEVEL_OF(src->flags);
        b.level = lvl ? (int)lvl : ZSTD_CLEVEL_DEFAULT;
        b.zcap = ZSTD_compressBound(b.max_present * ps);
        b.cctx = ZSTD_createCCtx();
        b.zmem = sf__os_malloc(hs + SF_IMG_MAX_BLOCK_PAGES + b.zcap);
        if (!b.cctx || !b.zmem) {
            r = -ENOMEM;
            goto out;
        }
    }
    struct writer w = {.fd = fd};
    uint64_t tot_present = 0, tot_zero = 0, tot_absent = 0, nblocks = 0;

    /* file header */
    uint8_t hdr[SF_IMG_HDR_SIZE];
    memcpy(hdr + SF_IMG_H_MAGIC, SF_IMG_MAGIC, 8);
    put32(hdr + SF_IMG_H_VERSION, version);
    put32(hdr + SF_IMG_H_PAGE_SIZE, ps);
    put64(hdr + SF_IMG_H_ID, src->id);
    put64(hdr + SF_IMG_H_PARENT, src->parent_id);
    put64(hdr + SF_IMG_H_TAKEN, (uint64_t)src->taken_ns);
    put64(hdr + SF_IMG_H_NRANGES, nranges);
    put64(hdr + SF_IMG_H_NPAGES, npages);
    put64(hdr + SF_IMG_H_RESERVED, 0);
    const uint64_t hdr_sum = XXH3_64bits(hdr, SF_IMG_H_CHECKSUM);
    put64(hdr + SF_IMG_H_CHECKSUM, hdr_sum);
    if ((r = write_all(&w, hdr, sizeof hdr)))
        goto out;

    /* range table, staged through the block buffer (at least 1 MiB) */
    if ((r = write_table(&w, ranges, meta, nranges, version, hdr_sum, b.mem, memsize)))
        goto out;

    /* blocks: runs of pages inside one range */
    for (size_t i = 0; i < nranges; i++) {
        uint64_t a = ranges[i].addr, end = a + ranges[i].len;
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
                if ((r = flush_block(&w, &b, hdr_sum, ps, version)))
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
    ZSTD_freeCCtx(b.cctx);
    sf__os_free(b.zmem);
    sf__os_free(b.mem);
    sf__os_free(split);
    sf__os_free(split_meta);
    maps_free(&maps);
    return r;
}


/* ------------------------------------------------------------------------ */
/* Reader                                                                   */
/* ------------------------------------------------------------------------ */

struct img_block {
    uint64_t addr;   /* first page */
    uint64_t off;    /* file offset of the payload (kinds, then data) */
    uint64_t sum;    /* payload checksum */
    uint32_t npages, present, absent, zero;
    uint32_t enc;    /* SF_IMG_ENC_* */
    uint32_t stored; /* bytes of data after the kinds */
};

struct sf_image {
    int fd;
    uint32_t version;
    uint32_t page_size;
    unsigned shift;
    uint64_t id, parent_id;
    int64_t taken_ns;
    uint64_t npages, present, zero, absent;
    size_t nranges;
    struct sf_image_range *ranges;
    struct sf_image_meta *meta;    /* per range; name: into names, never NULL */
    char *names;                   /* the names, each NUL-terminated */
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
        ssize_t got = sf__os_pread(fd, c, n, (off_t)off);
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
    void *p = sf__os_realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static uint64_t payload_len(const struct img_block *b) { return (uint64_t)b->npages + b->stored; }

/* Scratch for streaming a block: its kinds, then its raw data in chunks,
 * so that reading a raw block never allocates in proportion to it.  A
 * compressed block is read whole and decompressed whole: zin and zout grow
 * to the largest such block read (at most SF_IMG_MAX_BLOCK_DATA each,
 * checked at open against the file's size). */
#define SCRATCH_CHUNK (64u << 10)
struct scratch {
    XXH3_state_t *st;
    uint8_t *kinds; /* SF_IMG_MAX_BLOCK_PAGES */
    uint8_t *chunk; /* SCRATCH_CHUNK */
    ZSTD_DCtx *dctx;
    uint8_t *zin, *zout;
    size_t zin_cap, zout_cap;
};

static int scratch_init(struct scratch *s)
{
    memset(s, 0, sizeof *s);
    s->st = XXH3_createState();
    s->kinds = sf__os_malloc(SF_IMG_MAX_BLOCK_PAGES + SCRATCH_CHUNK);
    s->chunk = s->kinds ? s->kinds + SF_IMG_MAX_BLOCK_PAGES : NULL;
    return s->st && s->kinds ? 0 : -ENOMEM;
}

static void scratch_fini(struct scratch *s)
{
    XXH3_freeState(s->st);
    sf__os_free(s->kinds);
    ZSTD_freeDCtx(s->dctx);
    sf__os_free(s->zin);
    sf__os_free(s->zout);
}

static int scratch_room(uint8_t **p, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    uint8_t *q = sf__os_realloc(*p, n);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* What one block scan is asked for: the bytes [addr, last] (copied to dst
 * if not NULL) and the kind of each page of it (to map if not NULL, index 0
 * being the page holding addr).  active false: checksum only (verify). */
struct span {
    bool active;
    uint64_t addr, last;
    uint8_t *dst, *map;
};

/* Present page p of the block, page j of it, in step with the data stream. */
struct walk {
    uint64_t p, j, first_j, end_j;
};

/* Copies what the request wants out of data bytes [d0, d0 + n) of the block. */
static void copy_out(const sf_image *img, const struct img_block *b, const uint8_t *kinds,
                     const struct span *sp, struct walk *wk, uint64_t d0, const uint8_t *chunk,
                     size_t n)
{
    const uint64_t ps = img->page_size, d1 = d0 + n;
    while (wk->p < b->present && (wk->p << img->shift) < d1) {
        if (wk->j >= wk->first_j && wk->j < wk->end_j) {
            uint64_t pa = b->addr + (wk->j << img->shift);
            /* the bytes of page j wanted, intersected with this chunk */
            uint64_t from = pa > sp->addr ? pa : sp->addr;
            uint64_t to = pa + (ps - 1) < sp->last ? pa + (ps - 1) : sp->last;
            uint64_t dfrom = (wk->p << img->shift) + (from - pa);
            uint64_t dto = (wk->p << img->shift) + (to - pa);
            if (dfrom < d0) {
                from += d0 - dfrom;
                dfrom = d0;
            }
            if (dto >= d1)
                dto = d1 - 1;
            if (dfrom <= dto)
                memcpy(sp->dst + (from - sp->addr), chunk + (dfrom - d0), (size_t)(dto - dfrom + 1));
        }
        if (((wk->p + 1) << img->shift) > d1)
            break; /* page continues in the next chunk */
        wk->p++;
        do
            wk->j++;
        while (wk->j < b->npages && kinds[wk->j] != SF_IMG_PAGE_PRESENT);
    }
}

/* Streams one block payload: checksums all of it and, for an active span,
 * copies the bytes of [addr, last] that fall in this block to dst and
 * records their pages' kinds in map.  Kinds are checked against the
 * header's counts before they steer any copy (a checksum proves integrity,
 * not that a hostile writer produced sane kinds).  A compressed block's
 * stored bytes are checksummed before they are decompressed, and must
 * decompress to exactly its present pages.  dst may be partly written when
 * this fails; the caller then fails too, so no wrong byte is ever returned
 * as success.  Returns 0, 1 if the span holds an absent page of this block,
 * or -errno. */
static int scan_block(const sf_image *img, const struct img_block *b, struct scratch *s,
                      const struct span *sp)
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
    struct walk wk = {0};
    if (sp->active) {
        const uint64_t base = sp->addr & ~(ps - 1);
        wk.first_j = sp->addr > b->addr ? (sp->addr - b->addr) >> img->shift : 0;
        wk.end_j = ((sp->last - b->addr) >> img->shift) + 1;
        if (wk.end_j > b->npages)
            wk.end_j = b->npages;
        for (uint64_t j = wk.first_j; j < wk.end_j; j++) {
            uint64_t pa = b->addr + (j << img->shift);
            uint64_t from = pa > sp->addr ? pa : sp->addr;
            uint64_t to = pa + (ps - 1) < sp->last ? pa + (ps - 1) : sp->last;
            if (sp->map)
                sp->map[(pa - base) >> img->shift] = s->kinds[j];
            if (s->kinds[j] == SF_IMG_PAGE_ZERO) {
                if (sp->dst)
                    memset(sp->dst + (from - sp->addr), 0, (size_t)(to - from + 1));
            } else if (s->kinds[j] == SF_IMG_PAGE_ABSENT) {
                absent_hit = true;
            }
        }
    }
    const bool copy = sp->active && sp->dst;

    /* data: present pages in page order */
    while (wk.j < b->npages && s->kinds[wk.j] != SF_IMG_PAGE_PRESENT)
        wk.j++;
    const uint64_t dlen = (uint64_t)b->present << img->shift;
    if (b->enc == SF_IMG_ENC_ZSTD) {
        if ((r = scratch_room(&s->zin, &s->zin_cap, b->stored)) ||
            (r = scratch_room(&s->zout, &s->zout_cap, (size_t)dlen)))
            return r;
        if (!s->dctx && !(s->dctx = ZSTD_createDCtx()))
            return -ENOMEM;
        if ((r = pread_all(img->fd, s->zin, b->stored, b->off + b->npages)))
            return r;
        XXH3_64bits_update(s->st, s->zin, b->stored);
        if (!SUM_OK(XXH3_64bits_digest(s->st), b->sum))
            return -EBADMSG;
        size_t got = ZSTD_decompressDCtx(s->dctx, s->zout, (size_t)dlen, s->zin, b->stored);
        if (ZSTD_isError(got) || got != dlen)
            return -EBADMSG;
        if (copy)
            copy_out(img, b, s->kinds, sp, &wk, 0, s->zout, (size_t)dlen);
        return absent_hit;
    }
    for (uint64_t d0 = 0; d0 < dlen;) {
        size_t n_chunk = dlen - d0 < SCRATCH_CHUNK ? (size_t)(dlen - d0) : SCRATCH_CHUNK;
        if ((r = pread_all(img->fd, s->chunk, n_chunk, b->off + b->npages + d0)))
            return r;
        XXH3_64bits_update(s->st, s->chunk, n_chunk);
        if (copy)
            copy_out(img, b, s->kinds, sp, &wk, d0, s->chunk, n_chunk);
        d0 += n_chunk;
    }
    if (!SUM_OK(XXH3_64bits_digest(s->st), b->sum))
        return -EBADMSG;
    return absent_hit;
}

static int file_size(int fd, uint64_t *size) { return sf__os_file_size(fd, size); }

/* Range table: read in chunks, checked entry by entry as it streams so that
 * a hostile count costs at most the bytes actually present and valid.
 * Version 2: the names follow the entries; their total is checked against
 * what the file has left before their buffer is allocated.  *offp: where
 * the table starts; on return, where the blocks start. */
static int read_ranges(struct sf_image *img, uint64_t hdr_sum, uint64_t *offp, uint64_t avail)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st || XXH3_64bits_reset_withSeed(st, hdr_sum) != XXH_OK) {
        XXH3_freeState(st);
        return -ENOMEM;
    }
    const bool v2 = img->version != SF_IMG_VERSION_1;
    const size_t es = v2 ? SF_IMG2_RANGE_SIZE : SF_IMG_RANGE_SIZE;
    uint8_t chunk[256 * SF_IMG2_RANGE_SIZE];
    size_t cap = 0, capm = 0, left = (size_t)img->nranges;
    uint64_t pages = 0, prev_end = 0, names = 0, off = *offp;
    int r = 0;
    img->nranges = 0;
    while (left) {
        size_t n = left < 256 ? left : 256;
        if ((r = pread_all(img->fd, chunk, n * es, off)))
            goto out;
        XXH3_64bits_update(st, chunk, n * es);
        for (size_t j = 0; j < n; j++) {
            const uint8_t *e = chunk + j * es;
            uint64_t a = get64(e), l = get64(e + 8);
            uint32_t prot = v2 ? get32(e + SF_IMG2_R_PROT) : 0;
            uint32_t nl = v2 ? get32(e + SF_IMG2_R_NAMELEN) : 0;
            uint64_t fo = v2 ? get64(e + SF_IMG2_R_OFFSET) : 0;
            uint64_t mask = img->page_size - 1;
            if (!l || (a & mask) || (l & mask) || l > UINT64_MAX - a ||
                (img->nranges && a < prev_end) || (prot & ~PROT_BITS) || nl > SF_IMG_MAX_NAME) {
                r = -EBADMSG;
                goto out;
            }
            prev_end = a + l;
            pages += l >> img->shift; /* sorted, disjoint: cannot overflow */
            names += nl;
            if ((r = grow((void **)&img->ranges, &cap, img->nranges, sizeof *img->ranges)) ||
                (r = grow((void **)&img->meta, &capm, img->nranges, sizeof *img->meta)))
                goto out;
            /* name: its length until the names are read */
            img->meta[img->nranges] = (struct sf_image_meta){prot, (const char *)(uintptr_t)nl, fo};
            img->ranges[img->nranges++] = (struct sf_image_range){a, l};
        }
        off += n * es;
        left -= n;
    }
    /* the names, then the checksum, must fit before the blocks' least */
    if (names > avail - off || avail - off - names < 8 + SF_IMG_TRAILER_SIZE) {
        r = -EBADMSG;
        goto out;
    }
    img->names = sf__os_malloc((size_t)names + img->nranges + 1);
    if (!img->names) {
        r = -ENOMEM;
        goto out;
    }
    if ((r = pread_all(img->fd, img->names, (size_t)names, off)))
        goto out;
    XXH3_64bits_update(st, img->names, (size_t)names);
    /* spread the names out, each followed by its NUL, from the end down */
    size_t src = (size_t)names, dst = (size_t)names + img->nranges;
    img->names[dst] = 0;
    for (size_t i = img->nranges; i-- > 0;) {
        size_t nl = (size_t)(uintptr_t)img->meta[i].name;
        src -= nl;
        img->names[--dst] = 0;
        dst -= nl;
        memmove(img->names + dst, img->names + src, nl);
        if (memchr(img->names + dst, 0, nl)) {
            r = -EBADMSG; /* a name is a C string */
            goto out;
        }
    }
    for (size_t i = 0, at = 0; i < img->nranges; i++) {
        size_t nl = (size_t)(uintptr_t)img->meta[i].name;
        img->meta[i].name = img->names + at;
        at += nl + 1;
    }
    off += names;
    uint8_t sum[8];
    if ((r = pread_all(img->fd, sum, sizeof sum, off)))
        goto out;
    if (!SUM_OK(XXH3_64bits_digest(st), get64(sum)) || pages != img->npages)
        r = -EBADMSG;
    *offp = off + 8;
out:
    if (r)
        img->nranges = 0; /* names may still be lengths, not pointers */
    XXH3_freeState(st);
    return r;
}

/* Block headers: each one is checked, must continue exactly where the
 * previous one ended (blocks tile the ranges in order) and must fit in the
 * file, so the index grows only with real, valid blocks. */
static int read_blocks(struct sf_image *img, uint64_t hdr_sum, uint64_t *offp, uint64_t avail)
{
    const bool v2 = img->version != SF_IMG_VERSION_1;
    const size_t hs = v2 ? SF_IMG2_BLK_HDR_SIZE : SF_IMG_BLK_HDR_SIZE;
    const size_t cs = v2 ? SF_IMG2_B_CHECKSUM : SF_IMG_B_CHECKSUM;
    uint64_t off = *offp;
    size_t cap = 0, ri = 0;
    uint64_t next = img->nranges ? img->ranges[0].addr : 0;
    while (ri < img->nranges) {
        uint8_t h[SF_IMG2_BLK_HDR_SIZE];
        if (avail - off < hs + SF_IMG_TRAILER_SIZE)
            return -EBADMSG;
        int r = pread_all(img->fd, h, hs, off);
        if (r)
            return r;
        if (memcmp(h + SF_IMG_B_MAGIC, SF_IMG_BLOCK_MAGIC, 4) != 0 ||
            !SUM_OK(XXH3_64bits_withSeed(h, cs, hdr_sum), get64(h + cs)) ||
            get32(h + (v2 ? SF_IMG2_B_RESERVED : SF_IMG_B_RESERVED)))
            return -EBADMSG;
        struct img_block b = {
            .addr = get64(h + SF_IMG_B_ADDR),
            .off = off + hs,
            .sum = get64(h + (v2 ? SF_IMG2_B_PAYLOAD_SUM : SF_IMG_B_PAYLOAD_SUM)),
            .npages = get32(h + SF_IMG_B_NPAGES),
            .present = get32(h + SF_IMG_B_PRESENT),
            .zero = get32(h + SF_IMG_B_ZERO),
            .absent = get32(h + SF_IMG_B_ABSENT),
            .enc = v2 ? get32(h + SF_IMG2_B_ENCODING) : SF_IMG_ENC_RAW,
        };
        const uint64_t raw = (uint64_t)b.present << img->shift;
        if (b.npages > SF_IMG_MAX_BLOCK_PAGES || raw > SF_IMG_MAX_BLOCK_DATA)
            return -EFBIG;
        uint64_t stored = v2 ? get32(h + SF_IMG2_B_STORED) : raw;
        /* raw: the data as is; zstd: something that is smaller */
        if (b.enc == SF_IMG_ENC_RAW ? stored != raw
            : b.enc != SF_IMG_ENC_ZSTD || !stored || stored >= raw)
            return -EBADMSG;
        b.stored = (uint32_t)stored;
        if (!b.npages || (uint64_t)b.present + b.zero + b.absent != b.npages ||
            (b.absent && !img->parent_id) || b.addr != next)
            return -EBADMSG;
        const struct sf_image_range *rg = &img->ranges[ri];
        uint64_t blen = (uint64_t)b.npages << img->shift;
        if (blen > rg->addr + rg->len - b.addr)
            return -EBADMSG;
        uint64_t plen = payload_len(&b);
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
    sf__os_free(img->ranges);
    sf__os_free(img->meta);
    sf__os_free(img->names);
    sf__os_free(img->blocks);
    sf__os_free(img);
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
    const uint32_t version = get32(h + SF_IMG_H_VERSION);
    if (version != SF_IMG_VERSION && version != SF_IMG_VERSION_1)
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
    const bool v2 = version != SF_IMG_VERSION_1;
    const uint64_t es = v2 ? SF_IMG2_RANGE_SIZE : SF_IMG_RANGE_SIZE;
    const uint64_t hs = v2 ? SF_IMG2_BLK_HDR_SIZE : SF_IMG_BLK_HDR_SIZE;
    uint64_t off = SF_IMG_HDR_SIZE + nranges * es + 8;
    if (nranges > npages || off > avail || npages > avail - off)
        return -EBADMSG;
    uint64_t need = npages + (npages + SF_IMG_MAX_BLOCK_PAGES - 1) / SF_IMG_MAX_BLOCK_PAGES * hs +
                    SF_IMG_TRAILER_SIZE;
    if (need > avail - off)
        return -EBADMSG;

    sf_image *img = sf__os_calloc(1, sizeof *img);
    if (!img)
        return -ENOMEM;
    img->fd = fd;
    img->version = version;
    img->page_size = ps;
    img->shift = shift;
    img->id = get64(h + SF_IMG_H_ID);
    img->parent_id = get64(h + SF_IMG_H_PARENT);
    img->taken_ns = (int64_t)get64(h + SF_IMG_H_TAKEN);
    img->npages = npages;
    img->nranges = (size_t)nranges;
    off = SF_IMG_HDR_SIZE;
    if ((r = read_ranges(img, hdr_sum, &off, avail)) ||
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
        .version = img->version,
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

SF_API int sf_image_mapping_get(const sf_image *img, size_t i, sf_image_mapping *m)
{
    if (!img || !m)
        return -EINVAL;
    if (i >= img->nranges)
        return -ENOENT;
    const struct sf_image_range *rg = &img->ranges[i];
    const struct sf_image_meta *mt = &img->meta[i];
    *m = (sf_image_mapping){.addr = rg->addr, .len = rg->len, .prot = mt->prot, .name = mt->name,
                            .offset = mt->offset};
    return 0;
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

/* sf_image_read and sf_image_read_map: 0, 1 if an absent page was in the
 * span, or -errno. */
static int read_span(const sf_image *img, uint64_t addr, void *buf, size_t len, uint8_t *map)
{
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
    int r = scratch_init(&s), absent = 0;
    struct span sp = {.active = true, .addr = addr, .last = last, .dst = buf, .map = map};
    for (i = (size_t)first; i <= lastblk && r >= 0; i++)
        if ((r = scan_block(img, &img->blocks[i], &s, &sp)) > 0)
            absent = 1;
    scratch_fini(&s);
    return r < 0 ? r : absent;
}

SF_API int sf_image_read(const sf_image *img, uint64_t addr, void *buf, size_t len)
{
    if (!img || (!buf && len))
        return -EINVAL;
    int r = read_span(img, addr, buf, len, NULL);
    return r > 0 ? -ENODATA : r;
}

SF_API int sf_image_read_map(const sf_image *img, uint64_t addr, void *buf, size_t len,
                             uint8_t *map)
{
    if (!img || (!map && len))
        return -EINVAL;
    int r = read_span(img, addr, buf, len, map);
    return r > 0 ? 0 : r;
}

SF_API int sf_image_verify(const sf_image *img)
{
    if (!img)
        return -EINVAL;
    struct scratch s;
    int r = scratch_init(&s);
    struct span sp = {.active = false};
    for (size_t i = 0; i < img->nblocks && r >= 0; i++)
        r = scan_block(img, &img->blocks[i], &s, &sp);
    scratch_fini(&s);
    return r < 0 ? r : 0;
}

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
