/* test_image_hostile.c - damaged and hostile images: truncation at every
 * offset, bit flips, forged headers, blocks and trailers with valid
 * checksums, claims that would need gigabytes, hostile compressed blocks and
 * names.  The reader refuses them or reads exactly what was written. */
#include "image_model.h"

/* --- corruption ---------------------------------------------------------- */

/* After a successful open of a damaged image: every read either fails or
 * gives exactly the model's bytes.  Returns the number of -EBADMSG reads. */
static unsigned reads_never_wrong(sf_image *img, const struct model *m)
{
    unsigned bad = 0;
    uint8_t *got = malloc(m->ps), *want = malloc(m->ps);
    for (size_t i = 0; i < m->nranges; i++)
        for (uint64_t a = m->ranges[i].addr; a - m->ranges[i].addr < m->ranges[i].len; a += m->ps) {
            int e = model_expect(m, a, m->ps, want);
            int r = sf_image_read(img, a, got, m->ps);
            if (r == -EBADMSG) {
                bad++;
                continue;
            }
            EXPECT(r == e, "page %#llx: %d, expected %d or -EBADMSG", (unsigned long long)a, r, e);
            EXPECT(r || !memcmp(got, want, m->ps), "WRONG DATA at %#llx", (unsigned long long)a);
        }
    free(got);
    free(want);
    return bad;
}

static void truncation_case(uint32_t ps)
{
    struct sf_image_range rg[2] = {{ps * 2, ps * 6}, {ps * 64, ps * 3}};
    struct model m = {.ps = ps, .ranges = rg, .nranges = 2, .seed = 17, .id = 3,
                      .parent_id = 2, .pct_zero = 25, .pct_absent = 25};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    size_t len;
    free(read_fd(fd, &len));
    check_image(fd, &m, 50);
    for (size_t n = len; n-- > 0;) {
        if (ftruncate(fd, (off_t)n))
            die("ftruncate");
        sf_image *img;
        int r = sf_image_open(&img, fd);
        EXPECT(r == -EBADMSG, "truncated to %zu of %zu: %d", n, len, r);
        if (!r) {
            reads_never_wrong(img, &m);
            sf_image_close(img);
        }
    }
    close(fd);
}

static int case_truncation_512(void *pass) { truncation_case(512); return 0; }
static int case_truncation_4096(void *pass) { truncation_case(4096); return 0; }

static void flip_case(uint32_t ps, bool all_bits)
{
    struct sf_image_range rg[2] = {{ps * 2, ps * 6}, {ps * 64, ps * 3}};
    struct model m = {.ps = ps, .ranges = rg, .nranges = 2, .seed = 19, .id = 3,
                      .parent_id = 2, .pct_zero = 25, .pct_absent = 25};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    size_t len;
    uint8_t *full = read_fd(fd, &len);
    unsigned flips = 0;
    for (size_t i = 0; i < len; i++) {
        for (unsigned bit = all_bits ? 0 : i % 8; bit < 8; bit++) {
            uint8_t v = full[i] ^ (uint8_t)(1u << bit);
            if (pwrite(fd, &v, 1, (off_t)i) != 1)
                die("pwrite");
            flips++;
            sf_image *img;
            int r = sf_image_open(&img, fd);
            bool in_version = i >= SF_IMG_H_VERSION && i < SF_IMG_H_VERSION + 4;
            if (r) {
                EXPECT(r == (in_version ? -EPROTO : -EBADMSG), "flip %zu.%u: open %d", i, bit, r);
            } else {
                int vr = sf_image_verify(img);
                EXPECT(vr == -EBADMSG, "flip %zu.%u undetected by open and verify (%d)", i, bit, vr);
                unsigned bad = reads_never_wrong(img, &m);
                EXPECT(bad > 0, "flip %zu.%u: no read saw it", i, bit);
                sf_image_close(img);
            }
            if (!all_bits)
                break;
        }
        if (pwrite(fd, &full[i], 1, (off_t)i) != 1)
            die("pwrite");
    }
    EXPECT(flips >= len, "%u flips", flips);
    /* restored: intact again (guards against a test that broke the file) */
    check_image(fd, &m, 10);
    free(full);
    close(fd);
}

static int case_flips_512_all_bits(void *pass) { flip_case(512, true); return 0; }
static int case_flips_4096(void *pass) { flip_case(4096, false); return 0; }

/* --- hostile images ------------------------------------------------------ */

#define EXPECT_OPEN(b, want)                                                              \
    do {                                                                                  \
        int r_ = rb_open(&(b), NULL);                                                     \
        if (r_ != (want))                                                                 \
            h_failf(__LINE__, "open = %d, expected %d", r_, (want));                        \
    } while (0)
#define EXPECT_VERIFY(b, want)                                                            \
    do {                                                                                  \
        int v_, r_ = rb_open(&(b), &v_);                                                  \
        if (r_ || v_ != (want))                                                           \
            h_failf(__LINE__, "open = %d, verify = %d, expected 0, %d", r_, v_, (want));   \
    } while (0)

static int case_hostile_control(void *pass)
{
    /* the base every hostile variant departs from must itself be valid,
     * read back what was encoded, and equal nothing else */
    struct rb b = {0};
    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "PZP", 0x40);
    rb_block(&b, 0x200000, "ZP", 0x50);
    rb_trailer(&b);
    EXPECT_VERIFY(b, 0);
    int fd = rb_fd(&b);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    uint8_t buf[5 * 4096];
    EXPECT_EQ(sf_image_read(img, 0x100000, buf, 3 * 4096), 0);
    EXPECT(buf[0] == 0x40 && buf[4095] == 0x40 && buf[4096] == 0 && buf[8191] == 0 &&
          buf[8192] == 0x42 && buf[3 * 4096 - 1] == 0x42);
    EXPECT_EQ(sf_image_read(img, 0x201000, buf, 4096), 0);
    EXPECT(buf[0] == 0x51 && buf[4095] == 0x51);
    sf_image_info info;
    sf_image_get_info(img, &info);
    EXPECT(info.pages_stored == 3 && info.pages_zero == 2 && info.taken_ns == -5 &&
          info.id == 0x1d1d1d1d);
    sf_image_close(img);
    close(fd);
    rb_free(&b);

    /* incremental: absent pages allowed and reported */
    rb_header(&b, 4096, 77, 2, 5);
    rb_table(&b, base_ranges, 2);
    rb_block(&b, 0x100000, "PAP", 0x40);
    rb_block(&b, 0x200000, "AA", 0x50);
    rb_trailer(&b);
    fd = rb_fd(&b);
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    EXPECT_EQ(sf_image_verify(img), 0);
    EXPECT_EQ(sf_image_read(img, 0x100000, buf, 4096), 0);
    EXPECT_EQ(sf_image_read(img, 0x100000, buf, 4097), -ENODATA);
    EXPECT_EQ(sf_image_read(img, 0x200000, buf, 1), -ENODATA);
    sf_image_close(img);
    close(fd);
    rb_free(&b);
    return 0;
}

static int case_hostile_version_magic(void *pass)
{
    static const uint32_t versions[] = {0, 3, 0x100, 0xffffffffu};
    for (size_t i = 0; i < 4; i++) {
        struct rb b = {0};
        rb_header_ex(&b, versions[i], 4096, 0, 0, 0, 0);
        rb_table(&b, NULL, 0);
        rb_trailer(&b);
        EXPECT_OPEN(b, -EPROTO);
        rb_free(&b);
    }
    struct rb b = {0};
    rb_header(&b, 4096, 0, 0, 0);
    rb_table(&b, NULL, 0);
    rb_trailer(&b);
    EXPECT_OPEN(b, 0);
    b.p[0] = 'X';
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);
    rb_header_ex(&b, SF_IMG_VERSION_1, 4096, 0, 0, 0, 1); /* reserved set */
    rb_table(&b, NULL, 0);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);
    /* empty file, short file, not an image */
    EXPECT_OPEN(b, -EBADMSG);
    rb_grow(&b, 71);
    EXPECT_OPEN(b, -EBADMSG);
    rb_grow(&b, 4096);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);
    return 0;
}

static int case_hostile_page_size(void *pass)
{
    static const struct {
        uint32_t ps;
        int want;
    } t[] = {{0, -EBADMSG}, {3, -EBADMSG}, {256, -EBADMSG}, {4097, -EBADMSG},
             {6144, -EBADMSG}, {1u << 22, -EFBIG}, {1u << 30, -EFBIG}, {1u << 31, -EFBIG},
             {0xffffffffu, -EBADMSG}, {512, 0}, {1u << 21, 0}};
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        struct rb b = {0};
        rb_header(&b, t[i].ps, 0, 0, 0);
        rb_table(&b, NULL, 0);
        rb_trailer(&b);
        int r = rb_open(&b, NULL);
        EXPECT(r == t[i].want, "page size %u: %d, expected %d", t[i].ps, r, t[i].want);
        rb_free(&b);
    }
    return 0;
}

static int case_hostile_counts(void *pass)
{
    static const struct {
        uint64_t nranges, npages;
        int want;
    } t[] = {
        {UINT64_MAX, 5, -EFBIG},
        {1ull << 60, 5, -EFBIG},
        {SF_IMG_MAX_RANGES + 1ull, 1ull << 30, -EFBIG},
        {SF_IMG_MAX_RANGES, 1ull << 30, -EBADMSG}, /* table not in the file */
        {3, 5, -EBADMSG},                          /* table shorter than claimed */
        {1, 5, -EBADMSG},                          /* table longer than claimed */
        {2, UINT64_MAX, -EFBIG},
        {2, (UINT64_MAX >> 12) + 1, -EFBIG},
        {2, 1ull << 40, -EBADMSG},                 /* more pages than the file holds */
        {2, 6, -EBADMSG},                          /* ranges hold 5 */
        {2, 4, -EBADMSG},
        {2, 1, -EBADMSG},                          /* fewer pages than ranges */
        {2, 5, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        struct rb b = {0};
        rb_header(&b, 4096, 0, t[i].nranges, t[i].npages);
        rb_table(&b, base_ranges, 2);
        rb_block(&b, 0x100000, "PZP", 1);
        rb_block(&b, 0x200000, "ZP", 2);
        rb_trailer(&b);
        int r = rb_open(&b, NULL);
        EXPECT(r == t[i].want, "nranges %llu npages %llu: %d, expected %d",
              (unsigned long long)t[i].nranges, (unsigned long long)t[i].npages, r, t[i].want);
        rb_free(&b);
    }
    return 0;
}

static int case_hostile_ranges(void *pass)
{
    static const struct {
        const char *what;
        struct sf_image_range r[2];
    } t[] = {
        {"overlapping", {{0x100000, 3 * 4096}, {0x102000, 2 * 4096}}},
        {"unsorted", {{0x200000, 3 * 4096}, {0x100000, 2 * 4096}}},
        {"same start", {{0x100000, 3 * 4096}, {0x100000, 2 * 4096}}},
        {"unaligned addr", {{0x100100, 3 * 4096}, {0x200000, 2 * 4096}}},
        {"unaligned len", {{0x100000, 3 * 4096 - 1}, {0x200000, 2 * 4096 + 1}}},
        {"empty", {{0x100000, 0}, {0x200000, 5 * 4096}}},
        {"wrapping", {{0x100000, 3 * 4096}, {0xfffffffffffff000ull, 2 * 4096}}},
        {"ends at 2^64", {{0x100000, 4 * 4096}, {0xfffffffffffff000ull, 4096}}},
        {"huge len", {{0x100000, 3 * 4096}, {0x200000, 0xfffffffffff00000ull}}},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        struct rb b = {0};
        uint64_t pages = (t[i].r[0].len + t[i].r[1].len) / 4096;
        rb_header(&b, 4096, 0, 2, pages ? pages : 5);
        rb_table(&b, t[i].r, 2);
        rb_block(&b, t[i].r[0].addr, "PZP", 1);
        rb_block(&b, t[i].r[1].addr, "ZP", 2);
        rb_trailer(&b);
        int r = rb_open(&b, NULL);
        EXPECT(r == -EBADMSG, "%s ranges: %d", t[i].what, r);
        rb_free(&b);
    }
    /* adjacent ranges are fine, and a read may cross from one to the next */
    struct sf_image_range adj[2] = {{0x100000, 3 * 4096}, {0x103000, 2 * 4096}};
    struct rb b = {0};
    rb_header(&b, 4096, 0, 2, 5);
    rb_table(&b, adj, 2);
    rb_block(&b, 0x100000, "PZP", 1);
    rb_block(&b, 0x103000, "ZP", 2);
    rb_trailer(&b);
    int fd = rb_fd(&b);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    uint8_t buf[3];
    EXPECT_EQ(sf_image_read(img, 0x102fff, buf, 3), 0);
    EXPECT(buf[0] == 3 && buf[1] == 0 && buf[2] == 0);
    sf_image_close(img);
    close(fd);
    rb_free(&b);
    return 0;
}

static int case_hostile_blocks(void *pass)
{
    struct rb b = {0};
    uint8_t pl[8192 + 5000];
    memset(pl, SF_IMG_PAGE_ZERO, sizeof pl);

    /* more pages than a block may hold */
    rb_header(&b, 4096, 0, 1, 5000);
    struct sf_image_range big = {0x100000, 5000 * 4096ull};
    rb_table(&b, &big, 1);
    rb_block_raw(&b, 0x100000, 5000, 0, 5000, 0, 0, pl, 5000, b.hdr_sum);
    rb_trailer(&b);
    /* the file cannot hold 5000 pages in legal blocks: refused from the
     * header alone, before any block is read */
    EXPECT_OPEN(b, -EBADMSG);
    rb_grow(&b, 8192); /* past the open-time size estimate, to reach the block */
    EXPECT_OPEN(b, -EFBIG);
    rb_free(&b);

    /* more data than a block may hold (and than the file has) */
    rb_base_prefix(&b);
    rb_block_raw(&b, 0x100000, 3, 1025, 0, 0, 0, pl, 3, b.hdr_sum);
    rb_trailer(&b);
    rb_grow(&b, 8192);
    EXPECT_OPEN(b, -EFBIG);
    rb_free(&b);

    /* payload beyond the end of the file */
    rb_base_prefix(&b);
    rb_block_raw(&b, 0x100000, 3, 3, 0, 0, 0, pl, 3 + 4096, b.hdr_sum);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    static const struct {
        const char *what;
        uint64_t addr;
        uint32_t npages, present, zero, absent, reserved;
        int seed_other;
    } t[] = {
        {"counts exceed npages", 0x100000, 3, 1, 2, 1, 0, 0},
        {"counts short of npages", 0x100000, 3, 1, 1, 0, 0, 0},
        {"counts wrap u32", 0x100000, 3, 1, 2, 0xffffffffu, 0, 0},
        {"zero pages", 0x100000, 0, 0, 0, 0, 0, 0},
        {"absent in a full image", 0x100000, 3, 1, 1, 1, 0, 0},
        {"wrong address", 0x101000, 3, 1, 2, 0, 0, 0},
        {"beyond its range", 0x100000, 4, 1, 3, 0, 0, 0},
        {"reserved set", 0x100000, 3, 1, 2, 0, 1, 0},
        {"from another image", 0x100000, 3, 1, 2, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        rb_base_prefix(&b);
        size_t plen = t[i].npages + (size_t)t[i].present * 4096;
        rb_block_raw(&b, t[i].addr, t[i].npages, t[i].present, t[i].zero, t[i].absent,
                     t[i].reserved, pl, plen, t[i].seed_other ? b.hdr_sum ^ 1 : b.hdr_sum);
        rb_block(&b, 0x200000, "ZP", 2);
        rb_trailer(&b);
        int r = rb_open(&b, NULL);
        EXPECT(r == -EBADMSG, "block %s: %d", t[i].what, r);
        rb_free(&b);
    }

    /* bad block magic, a missing block, an extra block, a block crossing
     * into the next range */
    rb_base_prefix(&b);
    size_t at = b.len;
    rb_block(&b, 0x100000, "PZP", 1);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_trailer(&b);
    b.p[at] ^= 0x20;
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "PZP", 1);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "PZP", 1);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_block(&b, 0x202000, "Z", 2);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "PZ", 1);
    rb_block(&b, 0x102000, "PZP", 2);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    /* blocks that leave a hole, or repeat an address, inside a range */
    rb_base_prefix(&b);
    rb_block(&b, 0x101000, "P", 1);
    rb_block(&b, 0x102000, "P", 1);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "P", 1);
    rb_block(&b, 0x100000, "PP", 1);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_trailer(&b);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);

    /* the same blocks split differently are still valid */
    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "P", 1);
    rb_block(&b, 0x101000, "Z", 1);
    rb_block(&b, 0x102000, "P", 1);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_trailer(&b);
    EXPECT_VERIFY(b, 0);
    rb_free(&b);
    return 0;
}

static int case_hostile_kinds(void *pass)
{
    /* payloads whose checksum is right but whose kinds are not: open
     * succeeds (only headers are read), verify and reads refuse */
    static const struct {
        const char *kinds;
        uint32_t claim[3];
        uint64_t parent;
    } t[] = {
        {"PXP", {2, 1, 0}, 0},  /* kind 0 */
        {"PZA", {1, 2, 0}, 0},  /* absent kind in a full image */
        {"PZZ", {1, 1, 1}, 9},  /* counts disagree with kinds (same payload length) */
        {"PAA", {1, 2, 0}, 9},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        struct rb b = {0};
        rb_header(&b, 4096, t[i].parent, 2, 5);
        rb_table(&b, base_ranges, 2);
        rb_block_claim(&b, 0x100000, t[i].kinds, 1, t[i].claim);
        rb_block(&b, 0x200000, "ZP", 2);
        rb_trailer(&b);
        EXPECT_VERIFY(b, -EBADMSG);
        int fd = rb_fd(&b);
        sf_image *img;
        uint8_t buf[4096];
        if (sf_image_open(&img, fd) == 0) {
            EXPECT_EQ(sf_image_read(img, 0x100000, buf, 1), -EBADMSG);
            EXPECT_EQ(sf_image_read(img, 0x200000, buf, 4096), 0); /* other block intact */
            sf_image_close(img);
        }
        close(fd);
        rb_free(&b);
    }
    /* a kind byte beyond ABSENT */
    struct rb b = {0};
    rb_base_prefix(&b);
    uint8_t pl[3 + 4096];
    memset(pl, 0x33, sizeof pl);
    pl[0] = SF_IMG_PAGE_PRESENT;
    pl[1] = SF_IMG_PAGE_ABSENT + 1;
    pl[2] = SF_IMG_PAGE_ZERO;
    rb_block_raw(&b, 0x100000, 3, 1, 2, 0, 0, pl, sizeof pl, b.hdr_sum);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_trailer(&b);
    EXPECT_VERIFY(b, -EBADMSG);
    rb_free(&b);
    return 0;
}

static int case_hostile_trailer(void *pass)
{
    static const struct {
        const char *what;
        int64_t dblocks, dpresent, dzero, dabsent, dbytes;
        uint64_t reserved;
    } t[] = {
        {"block count", 1, 0, 0, 0, 0, 0},  {"present", 0, -1, 0, 0, 0, 0},
        {"zero", 0, 0, 1, 0, 0, 0},         {"absent", 0, 0, 0, 1, 0, 0},
        {"length", 0, 0, 0, 0, 8, 0},       {"reserved", 0, 0, 0, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        struct rb b = {0};
        rb_base_prefix(&b);
        rb_block(&b, 0x100000, "PZP", 1);
        rb_block(&b, 0x200000, "ZP", 2);
        rb_trailer_raw(&b, b.nblocks + (uint64_t)t[i].dblocks, b.present + (uint64_t)t[i].dpresent,
                       b.zero + (uint64_t)t[i].dzero, b.absent + (uint64_t)t[i].dabsent,
                       b.len + SF_IMG_TRAILER_SIZE + (uint64_t)t[i].dbytes, t[i].reserved);
        int r = rb_open(&b, NULL);
        EXPECT(r == -EBADMSG, "trailer %s: %d", t[i].what, r);
        rb_free(&b);
    }
    struct rb b = {0};
    rb_base_prefix(&b);
    rb_block(&b, 0x100000, "PZP", 1);
    rb_block(&b, 0x200000, "ZP", 2);
    rb_trailer(&b);
    memcpy(b.p + b.len - SF_IMG_TRAILER_SIZE, "SFIMGENX", 8);
    EXPECT_OPEN(b, -EBADMSG);
    rb_free(&b);
    return 0;
}

/* RSS/VM of this process in bytes, from /proc/self/statm */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1)
        die("statm");
    fclose(f);
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* Hostile images whose claims would need gigabytes if believed.  Returns
 * a line number on failure, 0 on success (runs in a child under a small
 * RLIMIT_AS where possible). */
static int hostile_memory_checks(void)
{
    /* 2^40 pages in a 200-byte file */
    struct rb b = {0};
    struct sf_image_range huge = {0, 1ull << 52};
    rb_header(&b, 4096, 0, 1, 1ull << 40);
    rb_table(&b, &huge, 1);
    rb_block(&b, 0, "P", 1);
    rb_trailer(&b);
    int r = rb_open(&b, NULL);
    if (r != -EBADMSG && r != -EFBIG)
        return __LINE__;
    rb_free(&b);

    /* the maximum range count in a sparse file big enough for the table:
     * believing the count would allocate 256 MiB */
    rb_header(&b, 4096, 0, SF_IMG_MAX_RANGES, SF_IMG_MAX_RANGES);
    int fd = rb_fd(&b);
    if (ftruncate(fd, (off_t)SF_IMG_MAX_RANGES * 20 + 4096))
        return __LINE__;
    sf_image *img;
    r = sf_image_open(&img, fd);
    close(fd);
    if (r != -EBADMSG)
        return __LINE__;
    rb_free(&b);

    /* 2^30 pages (4 TiB) in a sparse file that passes the size checks */
    struct sf_image_range tib = {1ull << 40, 1ull << 42};
    rb_header(&b, 4096, 0, 1, 1ull << 30);
    rb_table(&b, &tib, 1);
    fd = rb_fd(&b);
    if (ftruncate(fd, (off_t)(b.len + (1ull << 30) + (1ull << 18) * 48 + 4096)))
        return __LINE__;
    r = sf_image_open(&img, fd);
    close(fd);
    if (r != -EBADMSG)
        return __LINE__;
    rb_free(&b);

    /* and a real image still opens, and a big one can be written, with the
     * same memory: neither side scales with the image */
    struct sf_image_range rr[] = {{0x10000000, 16384 * 4096ull}};
    struct model m = {.ps = 4096, .ranges = rr, .nranges = 1, .seed = 31, .pct_zero = 5};
    int dn = open("/dev/null", O_WRONLY | O_CLOEXEC);
    struct sf_image_src src = model_src(&m);
    if (dn < 0 || sf__image_write(dn, &src) != 0)
        return __LINE__;
    close(dn);
    rr[0].len = 700 * 4096;
    fd = model_image(&m, &r);
    if (r || sf_image_open(&img, fd))
        return __LINE__;
    if (sf_image_verify(img))
        return __LINE__;
    static uint8_t page[4096];
    if (sf_image_read(img, 0x10000000 + 699 * 4096, page, 4096))
        return __LINE__;
    sf_image_close(img);
    close(fd);
    return 0;
}

static int case_memory_bound(void *pass)
{
    if (UNDER_ASAN) {
        /* ASan reserves terabytes of shadow: no address-space limit is
         * possible, so check the results only */
        int line = hostile_memory_checks();
        EXPECT(line == 0, "hostile memory check failed at line %d", line);
        printf("    (ASan: results checked, RLIMIT_AS not applied)\n");
        return 0;
    }
    size_t limit = vm_size() + (40u << 20);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_AS, &rl))
            _exit(1);
        /* the limit must really bite, or the test proves nothing */
        void *p = malloc(128u << 20);
        if (p)
            _exit(2);
        _exit(hostile_memory_checks() ? 100 : 0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        die("waitpid");
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 100)
        EXPECT_EQ(hostile_memory_checks(), 0); /* say where, without the limit */
    return 0;
}

/* A version 2 image with one zstd block of four pages, assembled here;
 * edit() may change the block (header fields and payload) before the
 * checksums are computed.  Returns open's result, *verify verify's. */
struct zblk {
    uint8_t kinds[4];
    uint8_t data[4 * 4096 + 4096]; /* compressed data (or anything) */
    size_t stored;
    uint32_t enc, present, stored_claim, reserved;
};

static int zimage(void (*edit)(struct zblk *), int *verify, uint8_t *first_page)
{
    uint8_t raw[4 * 4096];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)("snapfault "[i % 10] + i / 4096);
    struct zblk z = {.kinds = {1, 1, 1, 1}, .enc = SF_IMG_ENC_ZSTD, .present = 4};
    z.stored = ZSTD_compress(z.data, sizeof z.data, raw, sizeof raw, 3);
    z.stored_claim = (uint32_t)z.stored;
    if (edit)
        edit(&z);
    struct rb b = {0};
    rb_header_ex(&b, SF_IMG_VERSION, 4096, 0, 1, 4, 0);
    size_t start = b.len;
    uint8_t *e = rb_grow(&b, SF_IMG2_RANGE_SIZE);
    put64(e, 0x100000);
    put64(e + 8, 4 * 4096);
    put32(e + SF_IMG2_R_PROT, 0);
    put32(e + SF_IMG2_R_NAMELEN, 0);
    put64(e + SF_IMG2_R_OFFSET, 0);
    put64(rb_grow(&b, 8), XXH3_64bits_withSeed(b.p + start, b.len - start, b.hdr_sum));
    uint8_t *h = rb_grow(&b, SF_IMG2_BLK_HDR_SIZE);
    size_t hoff = (size_t)(h - b.p);
    memcpy(h, SF_IMG_BLOCK_MAGIC, 4);
    put32(h + SF_IMG_B_NPAGES, 4);
    put64(h + SF_IMG_B_ADDR, 0x100000);
    put32(h + SF_IMG_B_PRESENT, z.present);
    put32(h + SF_IMG_B_ZERO, 4 - z.present);
    put32(h + SF_IMG_B_ABSENT, 0);
    put32(h + SF_IMG2_B_ENCODING, z.enc);
    put32(h + SF_IMG2_B_STORED, z.stored_claim);
    put32(h + SF_IMG2_B_RESERVED, z.reserved);
    uint8_t *pl = rb_grow(&b, 4 + z.stored);
    memcpy(pl, z.kinds, 4);
    memcpy(pl + 4, z.data, z.stored);
    h = b.p + hoff;
    put64(h + SF_IMG2_B_PAYLOAD_SUM, XXH3_64bits(b.p + hoff + SF_IMG2_BLK_HDR_SIZE, 4 + z.stored));
    put64(h + SF_IMG2_B_CHECKSUM, XXH3_64bits_withSeed(h, SF_IMG2_B_CHECKSUM, b.hdr_sum));
    b.nblocks = 1;
    b.present = z.present;
    b.zero = 4 - z.present;
    rb_trailer(&b);
    int fd = rb_fd(&b);
    sf_image *img;
    int r = sf_image_open(&img, fd);
    *verify = r;
    if (!r) {
        *verify = sf_image_verify(img);
        if (first_page) {
            int rr = sf_image_read(img, 0x100000, first_page, 4096);
            if (rr != *verify)
                h_failf(__LINE__, "read %d, verify %d", rr, *verify);
        }
        sf_image_close(img);
    }
    close(fd);
    rb_free(&b);
    return r;
}

/* not a zstd frame (its magic broken); a flip inside a frame may still
 * decode, to other bytes of the right size: that is a forgery, which the
 * checksums (recomputed here) are not meant to catch */
static void z_garbage(struct zblk *z) { z->data[1] ^= 0x40; }
static void z_short(struct zblk *z)
{
    /* a valid frame of three pages where four are claimed */
    uint8_t raw[3 * 4096];
    memset(raw, 'x', sizeof raw);
    z->stored = ZSTD_compress(z->data, sizeof z->data, raw, sizeof raw, 1);
    z->stored_claim = (uint32_t)z->stored;
}
static void z_long(struct zblk *z)
{
    /* a frame of five pages where four are claimed */
    uint8_t raw[5 * 4096];
    memset(raw, 'y', sizeof raw);
    z->stored = ZSTD_compress(z->data, sizeof z->data, raw, sizeof raw, 1);
    z->stored_claim = (uint32_t)z->stored;
}
static void z_cut(struct zblk *z)
{
    z->stored -= 3;
    z->stored_claim = (uint32_t)z->stored;
}
static void z_two_frames(struct zblk *z)
{
    /* two frames of two pages each: decompresses to exactly four pages */
    uint8_t raw[2 * 4096];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)("snapfault "[i % 10] + i / 4096);
    size_t a = ZSTD_compress(z->data, sizeof z->data, raw, sizeof raw, 1);
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (uint8_t)("snapfault "[i % 10] + 2 + i / 4096);
    size_t b = ZSTD_compress(z->data + a, sizeof z->data - a, raw, sizeof raw, 1);
    z->stored = a + b;
    z->stored_claim = (uint32_t)z->stored;
}
static void z_claim_more(struct zblk *z) { z->stored_claim = (uint32_t)z->stored + 10; }
static void z_claim_raw_size(struct zblk *z) { z->stored_claim = 4 * 4096; }
static void z_claim_zero(struct zblk *z) { z->stored_claim = 0; }
static void z_bad_enc(struct zblk *z) { z->enc = 2; }
static void z_raw_enc(struct zblk *z) { z->enc = SF_IMG_ENC_RAW; }
static void z_reserved(struct zblk *z) { z->reserved = 1; }
static void z_no_present(struct zblk *z)
{
    z->present = 0;
    memset(z->kinds, SF_IMG_PAGE_ZERO, 4);
}

static int case_zstd_hostile(void *pass)
{
    int v;
    uint8_t page[4096];
    EXPECT_EQ(zimage(NULL, &v, page), 0);
    EXPECT_EQ(v, 0);
    const char last_want = "snapfault "[4095 % 10];
    EXPECT(page[0] == 's' && page[10] == 's' && page[4095] == last_want, "control content");
    /* checksummed, but not a zstd stream of the right size */
    EXPECT_EQ(zimage(z_garbage, &v, page), 0);
    EXPECT_EQ(v, -EBADMSG);
    EXPECT_EQ(zimage(z_short, &v, page), 0);
    EXPECT_EQ(v, -EBADMSG);
    EXPECT_EQ(zimage(z_long, &v, page), 0);
    EXPECT_EQ(v, -EBADMSG);
    EXPECT_EQ(zimage(z_cut, &v, page), 0);
    EXPECT_EQ(v, -EBADMSG);
    /* concatenated frames are one stream: fine if the size is right */
    EXPECT_EQ(zimage(z_two_frames, &v, page), 0);
    EXPECT_EQ(v, 0);
    /* stored lengths and encodings the header cannot have */
    EXPECT_EQ(zimage(z_claim_more, &v, NULL), -EBADMSG);
    EXPECT_EQ(zimage(z_claim_raw_size, &v, NULL), -EBADMSG);
    EXPECT_EQ(zimage(z_claim_zero, &v, NULL), -EBADMSG);
    EXPECT_EQ(zimage(z_bad_enc, &v, NULL), -EBADMSG);
    EXPECT_EQ(zimage(z_raw_enc, &v, NULL), -EBADMSG);
    EXPECT_EQ(zimage(z_reserved, &v, NULL), -EBADMSG);
    EXPECT_EQ(zimage(z_no_present, &v, NULL), -EBADMSG);

    /* a written compressed image: a flip in its compressed data is caught */
    struct sf_image_range r[] = {{0x10000000, 200 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 9, .version = SF_IMG_VERSION,
                      .flags = SF_WRITE_ZSTD};
    int rc, fd = model_image(&m, &rc);
    size_t len;
    uint8_t *p = read_fd(fd, &len);
    struct v2_walk w;
    walk_v2(p, len, &w);
    EXPECT(w.first_zstd_off != 0, "no zstd block");
    uint32_t np = get32(p + w.first_zstd_off + SF_IMG_B_NPAGES);
    size_t at = w.first_zstd_off + SF_IMG2_BLK_HDR_SIZE + np + 5;
    p[at] ^= 1;
    EXPECT_EQ(pwrite(fd, p + at, 1, (off_t)at), 1);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    EXPECT_EQ(sf_image_verify(img), -EBADMSG);
    uint8_t buf[4096], map[2];
    uint64_t a = get64(p + w.first_zstd_off + SF_IMG_B_ADDR);
    EXPECT_EQ(sf_image_read(img, a, buf, sizeof buf), -EBADMSG);
    EXPECT_EQ(sf_image_read_map(img, a, buf, sizeof buf, map), -EBADMSG);
    sf_image_close(img);
    free(p);
    close(fd);
    return 0;
}

/* Names, protection and file offset in version 2 headers the reader
 * refuses. */
static int name_image(uint32_t prot, uint32_t namelen, const char *name, size_t name_bytes)
{
    struct rb b = {0};
    rb_header_ex(&b, SF_IMG_VERSION, 4096, 0, 1, 1, 0);
    size_t start = b.len;
    uint8_t *e = rb_grow(&b, SF_IMG2_RANGE_SIZE);
    put64(e, 0x100000);
    put64(e + 8, 4096);
    put32(e + SF_IMG2_R_PROT, prot);
    put32(e + SF_IMG2_R_NAMELEN, namelen);
    put64(e + SF_IMG2_R_OFFSET, 0x2000);
    memcpy(rb_grow(&b, name_bytes), name, name_bytes);
    put64(rb_grow(&b, 8), XXH3_64bits_withSeed(b.p + start, b.len - start, b.hdr_sum));
    uint8_t *h = rb_grow(&b, SF_IMG2_BLK_HDR_SIZE);
    size_t hoff = (size_t)(h - b.p);
    memcpy(h, SF_IMG_BLOCK_MAGIC, 4);
    put32(h + SF_IMG_B_NPAGES, 1);
    put64(h + SF_IMG_B_ADDR, 0x100000);
    put32(h + SF_IMG_B_PRESENT, 0);
    put32(h + SF_IMG_B_ZERO, 1);
    put32(h + SF_IMG_B_ABSENT, 0);
    put32(h + SF_IMG2_B_ENCODING, 0);
    put32(h + SF_IMG2_B_STORED, 0);
    put32(h + SF_IMG2_B_RESERVED, 0);
    uint8_t *k = rb_grow(&b, 1);
    *k = SF_IMG_PAGE_ZERO;
    h = b.p + hoff;
    put64(h + SF_IMG2_B_PAYLOAD_SUM, XXH3_64bits(b.p + hoff + SF_IMG2_BLK_HDR_SIZE, 1));
    put64(h + SF_IMG2_B_CHECKSUM, XXH3_64bits_withSeed(h, SF_IMG2_B_CHECKSUM, b.hdr_sum));
    b.nblocks = 1;
    b.zero = 1;
    rb_trailer(&b);
    int fd = rb_fd(&b);
    sf_image *img;
    int r = sf_image_open(&img, fd);
    if (!r) {
        sf_image_mapping mp;
        EXPECT_EQ(sf_image_mapping_get(img, 0, &mp), 0);
        EXPECT(mp.prot == prot && strlen(mp.name) == namelen && !memcmp(mp.name, name, namelen) &&
                  mp.offset == 0x2000,
              "mapping read back");
        EXPECT_EQ(sf_image_mapping_get(img, 1, &mp), -ENOENT);
        sf_image_close(img);
    }
    close(fd);
    rb_free(&b);
    return r;
}

static int case_names_hostile(void *pass)
{
    static char big[SF_IMG_MAX_NAME + 2];
    memset(big, 'n', sizeof big);
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ, 6, "[heap]", 6), 0);
    EXPECT_EQ(name_image(0, 0, "", 0), 0);
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN, SF_IMG_MAX_NAME, big, SF_IMG_MAX_NAME), 0);
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN, SF_IMG_MAX_NAME + 1, big, SF_IMG_MAX_NAME + 1), -EBADMSG);
    EXPECT_EQ(name_image(1u << 5, 6, "[heap]", 6), -EBADMSG);        /* unknown prot bit */
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN, 6, "[he\0p]", 6), -EBADMSG); /* NUL in a name */
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN, 6, "[heap", 5), -EBADMSG);   /* name runs into the sum */
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN, 0xffffffffu, "[heap]", 6), -EBADMSG); /* huge length */
    EXPECT_EQ(name_image(SF_IMAGE_PROT_KNOWN, 3000, "[heap]", 6), -EBADMSG);  /* past the file */
    return 0;
}

/* Run once per format pass (version 1, version 2, version 2 + zstd). */
static const struct h_case per_format[] = {
    {"truncation at every offset, 512 B pages", case_truncation_512},
    {"truncation at every offset, 4 KiB pages", case_truncation_4096},
    {"every bit flipped at every byte, 512 B pages", case_flips_512_all_bits},
    {"a bit flipped at every byte, 4 KiB pages", case_flips_4096},
};

/* Run once. */
static const struct h_case once[] = {
    {"hostile: control images are valid", case_hostile_control},
    {"hostile: magic, version (-EPROTO), reserved", case_hostile_version_magic},
    {"hostile: page size 0, 3, 256, 2^22, 2^30", case_hostile_page_size},
    {"hostile: huge and inconsistent counts", case_hostile_counts},
    {"hostile: overlapping, unsorted, unaligned, wrapping ranges", case_hostile_ranges},
    {"hostile: block headers", case_hostile_blocks},
    {"hostile: kinds with valid checksums", case_hostile_kinds},
    {"hostile: trailer", case_hostile_trailer},
    {"hostile: 2^40 pages, memory stays bounded (RLIMIT_AS)", case_memory_bound},
    {"zstd: hostile compressed blocks (checksummed garbage, wrong sizes)", case_zstd_hostile},
    {"names: hostile lengths, bytes, protection bits", case_names_hostile},
};

int main(void)
{
    return image_main(per_format, H_NCASES(per_format), once, H_NCASES(once));
}
