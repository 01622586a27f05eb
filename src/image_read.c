/* image_read.c - the validating reader of snapshot images (sf_image_*):
 * open checks the header, range table and every block header and builds the
 * block index; reads and verify stream blocks through bounded scratch.
 * Byte layout: doc/IMAGE-FORMAT.md. */
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"
#include "image_impl.h"

/* ------------------------------------------------------------------------ */
/* Reader                                                                   */
/* ------------------------------------------------------------------------ */

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

