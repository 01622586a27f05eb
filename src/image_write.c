/* image_write.c - the streaming writer of snapshot images (sf__image_write):
 * checks the source, names ranges from /proc/self/maps, writes header, range
 * table, blocks (raw or zstd) and trailer with write(2) only.  Byte layout:
 * doc/IMAGE-FORMAT.md. */
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"
#include "image_impl.h"

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

