/* test_image.c - unit tests of the snapshot image format: writer/reader
 * round trips, pipes, truncation, bit flips, hostile headers, memory bounds. */
#include "image.h"
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* ------------------------------------------------------------------------ */
/* Checks                                                                   */
/* ------------------------------------------------------------------------ */

static int case_failures;

/* Reports the first few failures of a case; counting all of them keeps a
 * loop over thousands of offsets from flooding the log. */
static void failf(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(int line, const char *fmt, ...)
{
    if (case_failures++ < 10) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "    line %d: ", line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
}

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond))                                                                      \
            failf(__LINE__, "CHECK(" #cond ") " __VA_ARGS__);                             \
    } while (0)
#define CHECK_EQ(got, want)                                                               \
    do {                                                                                  \
        long long g_ = (long long)(got), w_ = (long long)(want);                          \
        if (g_ != w_)                                                                     \
            failf(__LINE__, "%s = %lld, expected %lld", #got, g_, w_);                   \
    } while (0)

static void die(const char *what)
{
    perror(what);
    exit(2);
}

/* ------------------------------------------------------------------------ */
/* A synthetic memory model: page kinds and contents derived from the       */
/* address, so tests need no memory proportional to the image.              */
/* ------------------------------------------------------------------------ */

enum { K_DATA, K_ZEROFILL, K_ABSENT };

struct model {
    uint32_t ps;
    const struct sf_image_range *ranges;
    size_t nranges;
    uint64_t seed, id, parent_id;
    int64_t taken_ns;
    unsigned pct_zero, pct_absent; /* per hundred pages */
    uint64_t fail_addr;            /* read_page returns fail_err here */
    int fail_err;
    int bogus;                     /* read_page returns this instead of 1 for data */
    uint32_t version;              /* 0: the pass's (g_version) */
    unsigned flags;                /* SF_WRITE_*, with version 0: the pass's (g_flags) */
};

/* The format the generic cases write: each runs once per pass of main(),
 * for version 1, version 2 and version 2 compressed. */
static uint32_t g_version = SF_IMG_VERSION_1;
static unsigned g_flags;

/* Mapping descriptions for model images: none, given explicitly, so the
 * writer does not consult /proc/self/maps for the models' made-up
 * addresses (cases of their own test that). */
static const struct sf_image_meta no_meta[64];

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static int model_kind(const struct model *m, uint64_t addr)
{
    unsigned r = (unsigned)(mix64(m->seed ^ (addr * 0x9e3779b97f4a7c15ull)) % 100);
    if (r < m->pct_zero)
        return K_ZEROFILL;
    if (m->parent_id && r < m->pct_zero + m->pct_absent)
        return K_ABSENT;
    return K_DATA;
}

static void model_fill(const struct model *m, uint64_t addr, uint8_t *buf)
{
    uint64_t s = mix64(m->seed + addr) | 1;
    if (s % 3 == 0) {
        /* a third of the pages compress (a short repeating pattern), so
         * compressed images hold both encodings */
        for (size_t i = 0; i < m->ps; i += 8)
            memcpy(buf + i, &s, 8);
        buf[(s >> 8) % m->ps] ^= 0x5a;
        buf[0] |= 1;
        return;
    }
    for (size_t i = 0; i < m->ps; i += 8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        memcpy(buf + i, &s, 8);
    }
    buf[0] |= 1; /* a data page must never be all zero */
}

static int model_read_page(void *ctx, uint64_t addr, void *buf)
{
    const struct model *m = ctx;
    if (m->fail_err && addr == m->fail_addr)
        return m->fail_err;
    switch (model_kind(m, addr)) {
    case K_DATA:
        model_fill(m, addr, buf);
        return m->bogus ? m->bogus : 1;
    case K_ZEROFILL:
        memset(buf, 0, m->ps);
        return 1;
    default:
        memset(buf, 0xee, m->ps); /* garbage the writer must not store */
        return 0;
    }
}

static uint32_t model_version(const struct model *m) { return m->version ? m->version : g_version; }

static struct sf_image_src model_src(struct model *m)
{
    uint32_t v = model_version(m);
    return (struct sf_image_src){
        .id = m->id, .parent_id = m->parent_id, .taken_ns = m->taken_ns,
        .page_size = m->ps, .ranges = m->ranges, .nranges = m->nranges,
        .read_page = model_read_page, .ctx = m,
        .version = v, .flags = v == SF_IMG_VERSION_1 ? 0 : m->version ? m->flags : g_flags,
        .meta = m->nranges <= 64 ? no_meta : NULL,
    };
}

static bool model_in_range(const struct model *m, uint64_t addr)
{
    for (size_t i = 0; i < m->nranges; i++)
        if (addr >= m->ranges[i].addr && addr - m->ranges[i].addr < m->ranges[i].len)
            return true;
    return false;
}

/* What sf_image_read must give for [addr, addr+len): -ENOENT if any byte is
 * outside the ranges, else -ENODATA if any page is absent, else 0 and the
 * bytes in want. */
static int model_expect(const struct model *m, uint64_t addr, size_t len, uint8_t *want)
{
    uint64_t ps = m->ps;
    uint64_t last = addr + (len - 1);
    uint64_t first_page = addr & ~(ps - 1);
    for (uint64_t p = first_page;; p += ps) {
        if (!model_in_range(m, p))
            return -ENOENT;
        if (p >= (last & ~(ps - 1)))
            break;
    }
    uint8_t *page = malloc(ps);
    int r = 0;
    for (uint64_t p = first_page; r == 0; p += ps) {
        int k = model_kind(m, p);
        if (k == K_ABSENT)
            r = -ENODATA;
        else if (k == K_ZEROFILL)
            memset(page, 0, ps);
        else
            model_fill(m, p, page);
        uint64_t from = p > addr ? p : addr;
        uint64_t to = p + ps - 1 < last ? p + ps - 1 : last;
        if (!r)
            memcpy(want + (from - addr), page + (from - p), to - from + 1);
        if (p >= (last & ~(ps - 1)))
            break;
    }
    free(page);
    return r;
}

static int new_memfd(void)
{
    int fd = memfd_create("test_image", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create");
    return fd;
}

/* Writes the model's image into a fresh memfd; *rc gets the writer's result. */
static int model_image(struct model *m, int *rc)
{
    int fd = new_memfd();
    struct sf_image_src src = model_src(m);
    *rc = sf__image_write(fd, &src);
    return fd;
}

static void *read_fd(int fd, size_t *len)
{
    off_t end = lseek(fd, 0, SEEK_END);
    if (end < 0)
        die("lseek");
    uint8_t *p = malloc(end ? (size_t)end : 1);
    if (!p || pread(fd, p, (size_t)end, 0) != end)
        die("pread");
    *len = (size_t)end;
    return p;
}

struct range_list {
    struct sf_image_range r[64];
    size_t n, stop_after;
};

static int collect_range(void *addr, size_t len, void *arg)
{
    struct range_list *l = arg;
    if (l->n < 64)
        l->r[l->n] = (struct sf_image_range){(uint64_t)(uintptr_t)addr, len};
    l->n++;
    return l->stop_after && l->n == l->stop_after;
}

/* Everything a reader can say about an image must agree with the model. */
static void check_image(int fd, const struct model *m, unsigned random_spans)
{
    sf_image *img;
    int r = sf_image_open(&img, fd);
    CHECK_EQ(r, 0);
    if (r)
        return;

    uint64_t bytes = 0, data = 0, zero = 0, absent = 0;
    for (size_t i = 0; i < m->nranges; i++) {
        bytes += m->ranges[i].len;
        for (uint64_t a = m->ranges[i].addr; a - m->ranges[i].addr < m->ranges[i].len; a += m->ps) {
            int k = model_kind(m, a);
            data += k == K_DATA;
            zero += k == K_ZEROFILL;
            absent += k == K_ABSENT;
        }
    }
    sf_image_info info;
    CHECK_EQ(sf_image_get_info(img, &info), 0);
    CHECK_EQ(info.version, model_version(m));
    CHECK_EQ(info.page_size, m->ps);
    CHECK(info.id == m->id && info.parent_id == m->parent_id && info.taken_ns == m->taken_ns);
    CHECK_EQ(info.ranges, m->nranges);
    CHECK(info.bytes == bytes, "bytes %llu", (unsigned long long)info.bytes);
    CHECK_EQ(info.pages_stored, data);
    CHECK_EQ(info.pages_zero, zero);
    CHECK_EQ(info.pages_absent, absent);

    struct range_list rl = {.n = 0};
    CHECK_EQ(sf_image_ranges(img, collect_range, &rl), m->nranges);
    CHECK_EQ(rl.n, m->nranges);
    for (size_t i = 0; i < rl.n && i < 64; i++)
        CHECK(rl.r[i].addr == m->ranges[i].addr && rl.r[i].len == m->ranges[i].len, "range %zu", i);
    CHECK_EQ(sf_image_ranges(img, NULL, NULL), m->nranges);
    CHECK_EQ(sf_image_verify(img), 0);

    size_t ps = m->ps;
    uint8_t *got = malloc(4 * ps), *want = malloc(4 * ps);
    /* every page, one read each */
    for (size_t i = 0; i < m->nranges; i++)
        for (uint64_t a = m->ranges[i].addr; a - m->ranges[i].addr < m->ranges[i].len; a += ps) {
            int e = model_expect(m, a, ps, want);
            memset(got, 0x5a, ps);
            r = sf_image_read(img, a, got, ps);
            CHECK(r == e, "page %#llx: %d, expected %d", (unsigned long long)a, r, e);
            CHECK(r || !memcmp(got, want, ps), "page %#llx content", (unsigned long long)a);
        }
    /* whole ranges in one call, crossing blocks */
    for (size_t i = 0; i < m->nranges; i++) {
        size_t len = m->ranges[i].len > (16u << 20) ? (16u << 20) : (size_t)m->ranges[i].len;
        uint8_t *g = malloc(len), *w = malloc(len);
        int e = model_expect(m, m->ranges[i].addr, len, w);
        r = sf_image_read(img, m->ranges[i].addr, g, len);
        CHECK(r == e, "range %zu: %d, expected %d", i, r, e);
        CHECK(r || !memcmp(g, w, len), "range %zu content", i);
        free(g);
        free(w);
    }
    /* unaligned spans around range edges, inside and across */
    uint64_t s = m->seed | 1;
    for (unsigned n = 0; n < random_spans && m->nranges; n++) {
        s = mix64(s);
        const struct sf_image_range *rg = &m->ranges[s % m->nranges];
        uint64_t base = (s >> 8) & 1 ? rg->addr : rg->addr + rg->len - ps;
        int64_t delta = (int64_t)((s >> 16) % (3 * ps)) - (int64_t)ps;
        uint64_t a = base + (uint64_t)delta;
        size_t len = 1 + (size_t)((s >> 40) % (3 * ps));
        if (len - 1 > UINT64_MAX - a)
            continue;
        int e = model_expect(m, a, len, want);
        r = sf_image_read(img, a, got, len);
        CHECK(r == e, "span %#llx+%zu: %d, expected %d", (unsigned long long)a, len, r, e);
        CHECK(r || !memcmp(got, want, len), "span %#llx+%zu content", (unsigned long long)a, len);
    }
    free(got);
    free(want);
    sf_image_close(img);
}

/* ------------------------------------------------------------------------ */
/* An independent encoder of the documented layout, for hostile images      */
/* ------------------------------------------------------------------------ */

struct rb {
    uint8_t *p;
    size_t len, cap;
    uint64_t hdr_sum;
    uint32_t ps;
    uint64_t nblocks, present, zero, absent;
};

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

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint8_t *rb_grow(struct rb *b, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("realloc");
    }
    uint8_t *at = b->p + b->len;
    memset(at, 0, n);
    b->len += n;
    return at;
}

static void rb_header_ex(struct rb *b, uint32_t version, uint32_t ps, uint64_t parent,
                         uint64_t nranges, uint64_t npages, uint64_t reserved)
{
    uint8_t *h = rb_grow(b, SF_IMG_HDR_SIZE);
    memcpy(h, SF_IMG_MAGIC, 8);
    put32(h + SF_IMG_H_VERSION, version);
    put32(h + SF_IMG_H_PAGE_SIZE, ps);
    put64(h + SF_IMG_H_ID, 0x1d1d1d1d);
    put64(h + SF_IMG_H_PARENT, parent);
    put64(h + SF_IMG_H_TAKEN, (uint64_t)-5);
    put64(h + SF_IMG_H_NRANGES, nranges);
    put64(h + SF_IMG_H_NPAGES, npages);
    put64(h + SF_IMG_H_RESERVED, reserved);
    b->hdr_sum = XXH3_64bits(h, SF_IMG_H_CHECKSUM);
    put64(h + SF_IMG_H_CHECKSUM, b->hdr_sum);
    b->ps = ps;
}

static void rb_header(struct rb *b, uint32_t ps, uint64_t parent, uint64_t nranges, uint64_t npages)
{
    rb_header_ex(b, SF_IMG_VERSION_1, ps, parent, nranges, npages, 0);
}

static void rb_table(struct rb *b, const struct sf_image_range *r, size_t n)
{
    size_t start = b->len;
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = rb_grow(b, 16);
        put64(e, r[i].addr);
        put64(e + 8, r[i].len);
    }
    uint64_t sum = XXH3_64bits_withSeed(b->p + start, b->len - start, b->hdr_sum);
    put64(rb_grow(b, 8), sum);
}

static void rb_block_raw(struct rb *b, uint64_t addr, uint32_t npages, uint32_t present,
                         uint32_t zero, uint32_t absent, uint32_t reserved,
                         const uint8_t *payload, size_t plen, uint64_t seed)
{
    uint8_t *h = rb_grow(b, SF_IMG_BLK_HDR_SIZE);
    memcpy(h, SF_IMG_BLOCK_MAGIC, 4);
    put32(h + SF_IMG_B_NPAGES, npages);
    put64(h + SF_IMG_B_ADDR, addr);
    put32(h + SF_IMG_B_PRESENT, present);
    put32(h + SF_IMG_B_ZERO, zero);
    put32(h + SF_IMG_B_ABSENT, absent);
    put32(h + SF_IMG_B_RESERVED, reserved);
    put64(h + SF_IMG_B_PAYLOAD_SUM, XXH3_64bits(payload, plen));
    put64(h + SF_IMG_B_CHECKSUM, XXH3_64bits_withSeed(h, SF_IMG_B_CHECKSUM, seed));
    memcpy(rb_grow(b, plen), payload, plen);
    b->nblocks++;
    b->present += present;
    b->zero += zero;
    b->absent += absent;
}

/* kinds as a string of P(resent) Z(ero) A(bsent) X(invalid kind 0);
 * present pages are filled with fill + their index.  Counts as given by
 * the string unless claim is non-NULL ("present zero absent"). */
static void rb_block_claim(struct rb *b, uint64_t addr, const char *kinds, uint8_t fill,
                           const uint32_t *claim)
{
    uint32_t n = (uint32_t)strlen(kinds), c[3] = {0, 0, 0};
    for (uint32_t i = 0; i < n; i++)
        c[kinds[i] == 'P' ? 0 : kinds[i] == 'Z' ? 1 : 2] += kinds[i] != 'X';
    size_t plen = n + (size_t)c[0] * b->ps;
    uint8_t *pl = malloc(plen);
    for (uint32_t i = 0, p = 0; i < n; i++) {
        pl[i] = kinds[i] == 'P' ? SF_IMG_PAGE_PRESENT : kinds[i] == 'Z' ? SF_IMG_PAGE_ZERO
              : kinds[i] == 'A' ? SF_IMG_PAGE_ABSENT : 0;
        if (kinds[i] == 'P')
            memset(pl + n + (size_t)p++ * b->ps, fill + (int)i, b->ps);
    }
    if (claim)
        memcpy(c, claim, sizeof c);
    rb_block_raw(b, addr, n, c[0], c[1], c[2], 0, pl, plen, b->hdr_sum);
    free(pl);
}

static void rb_block(struct rb *b, uint64_t addr, const char *kinds, uint8_t fill)
{
    rb_block_claim(b, addr, kinds, fill, NULL);
}

static void rb_trailer_raw(struct rb *b, uint64_t nblocks, uint64_t present, uint64_t zero,
                           uint64_t absent, uint64_t bytes, uint64_t reserved)
{
    uint8_t *t = rb_grow(b, SF_IMG_TRAILER_SIZE);
    memcpy(t, SF_IMG_TRAILER_MAGIC, 8);
    put64(t + SF_IMG_T_NBLOCKS, nblocks);
    put64(t + SF_IMG_T_PRESENT, present);
    put64(t + SF_IMG_T_ZERO, zero);
    put64(t + SF_IMG_T_ABSENT, absent);
    put64(t + SF_IMG_T_BYTES, bytes);
    put64(t + SF_IMG_T_RESERVED, reserved);
    put64(t + SF_IMG_T_CHECKSUM, XXH3_64bits_withSeed(t, SF_IMG_T_CHECKSUM, b->hdr_sum));
}

static void rb_trailer(struct rb *b)
{
    rb_trailer_raw(b, b->nblocks, b->present, b->zero, b->absent, b->len + SF_IMG_TRAILER_SIZE, 0);
}

static int rb_fd(const struct rb *b)
{
    int fd = new_memfd();
    if (b->len && pwrite(fd, b->p, b->len, 0) != (ssize_t)b->len)
        die("pwrite");
    return fd;
}

/* open result; if the open succeeds, *verify gets sf_image_verify's */
static int rb_open(const struct rb *b, int *verify)
{
    int fd = rb_fd(b);
    sf_image *img;
    int r = sf_image_open(&img, fd);
    if (verify)
        *verify = r ? r : sf_image_verify(img);
    if (!r)
        sf_image_close(img);
    close(fd);
    return r;
}

static void rb_free(struct rb *b) { free(b->p); memset(b, 0, sizeof *b); }

/* The valid base that hostile variants start from: two ranges, two blocks. */
static const struct sf_image_range base_ranges[2] = {{0x100000, 3 * 4096}, {0x200000, 2 * 4096}};

static void rb_base_prefix(struct rb *b)
{
    rb_header(b, 4096, 0, 2, 5);
    rb_table(b, base_ranges, 2);
}

/* ------------------------------------------------------------------------ */
/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

static void case_roundtrip_ranges(void)
{
    static const struct sf_image_range r[] = {
        {0x10000, 5 * 4096},
        {0x20000, 1 * 4096},
        {0x21000, 3 * 4096},                    /* adjacent to the previous one */
        {0x7fff00000000ull, 700 * 4096},        /* many data pages: several blocks */
        {0xffffffffffffd000ull, 2 * 4096},      /* as high as a range may go */
    };
    struct model m = {.ps = 4096, .ranges = r, .nranges = 5, .seed = 1, .id = 0xabcdef,
                      .taken_ns = 1700000000123456789ll, .pct_zero = 20};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    check_image(fd, &m, 2000);
    close(fd);
}

static void case_roundtrip_page_sizes(void)
{
    static const uint32_t sizes[] = {512, 4096, 16384, 65536, 1u << 21};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint64_t ps = sizes[i];
        struct sf_image_range r[] = {{ps * 3, ps * 4}, {ps * 1000, ps * 9}};
        struct model m = {.ps = sizes[i], .ranges = r, .nranges = 2, .seed = 7 + i,
                          .id = i + 1, .pct_zero = 30};
        int rc, fd = model_image(&m, &rc);
        CHECK_EQ(rc, 0);
        check_image(fd, &m, 200);
        close(fd);
    }
}

/* Walks a well-formed image's blocks (test-side, from the documented
 * layout): returns the block count and the largest page count of one. */
static size_t walk_blocks(const uint8_t *p, size_t len, uint32_t *max_pages, uint32_t *max_present)
{
    uint64_t nr = get64(p + SF_IMG_H_NRANGES);
    uint32_t ps = get32(p + SF_IMG_H_PAGE_SIZE);
    size_t off = SF_IMG_HDR_SIZE + nr * 16 + 8, n = 0;
    *max_pages = *max_present = 0;
    while (off + 4 <= len && !memcmp(p + off, SF_IMG_BLOCK_MAGIC, 4)) {
        uint32_t np = get32(p + off + SF_IMG_B_NPAGES), pr = get32(p + off + SF_IMG_B_PRESENT);
        if (np > *max_pages)
            *max_pages = np;
        if (pr > *max_present)
            *max_present = pr;
        off += SF_IMG_BLK_HDR_SIZE + np + (size_t)pr * ps;
        n++;
    }
    return n;
}

static void case_block_limits(void)
{
    /* mostly zero: blocks end at the page cap */
    struct sf_image_range r1[] = {{0x40000000, 10000ull * 4096}};
    struct model m1 = {.ps = 4096, .ranges = r1, .nranges = 1, .seed = 3, .pct_zero = 99,
                       .version = SF_IMG_VERSION_1};
    int rc, fd = model_image(&m1, &rc);
    CHECK_EQ(rc, 0);
    size_t len;
    uint8_t *p = read_fd(fd, &len);
    uint32_t maxp, maxd;
    size_t nb = walk_blocks(p, len, &maxp, &maxd);
    CHECK_EQ(nb, 3);
    CHECK_EQ(maxp, SF_IMG_MAX_BLOCK_PAGES);
    free(p);
    check_image(fd, &m1, 300);
    close(fd);

    /* all data: blocks end at the data cap (64 pages of 4 KiB) */
    struct model m2 = {.ps = 4096, .ranges = r1, .nranges = 1, .seed = 4, .version = SF_IMG_VERSION_1};
    r1[0].len = 600 * 4096;
    fd = model_image(&m2, &rc);
    CHECK_EQ(rc, 0);
    p = read_fd(fd, &len);
    nb = walk_blocks(p, len, &maxp, &maxd);
    CHECK_EQ(nb, (600 + SF_IMG_WRITE_BLOCK_DATA / 4096 - 1) / (SF_IMG_WRITE_BLOCK_DATA / 4096));
    CHECK_EQ(maxd, SF_IMG_WRITE_BLOCK_DATA / 4096);
    CHECK(len < 600 * 4096 + 4096, "image of %zu bytes", len);
    free(p);
    check_image(fd, &m2, 300);
    close(fd);
}

static void case_zero_pages_elided(void)
{
    struct sf_image_range r[] = {{0x1000000, 512 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 5, .pct_zero = 100};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    size_t len;
    free(read_fd(fd, &len));
    /* kinds bytes and headers only: no page data */
    CHECK(len < 512 + 4 * 512, "all-zero image is %zu bytes", len);
    check_image(fd, &m, 100);
    close(fd);
}

static void case_incremental(void)
{
    struct sf_image_range r[] = {{0x5000, 40 * 4096}, {0x100000, 300 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 9, .id = 22,
                      .parent_id = 21, .pct_zero = 10, .pct_absent = 50};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    check_image(fd, &m, 1000);
    close(fd);
}

static void case_zero_ranges(void)
{
    struct model m = {.ps = 4096, .seed = 1, .id = 5};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    size_t len;
    free(read_fd(fd, &len));
    CHECK_EQ(len, SF_IMG_HDR_SIZE + 8 + SF_IMG_TRAILER_SIZE);
    check_image(fd, &m, 0);
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), 0);
    uint8_t b[16];
    CHECK_EQ(sf_image_read(img, 0, b, 1), -ENOENT);
    CHECK_EQ(sf_image_read(img, 0x1000, b, 16), -ENOENT);
    sf_image_close(img);
    close(fd);
}

static void case_gaps(void)
{
    struct sf_image_range r[] = {{0x10000, 2 * 4096}, {0x20000, 2 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 11};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), 0);
    uint8_t b[3 * 4096];
    CHECK_EQ(sf_image_read(img, 0x10000 - 1, b, 1), -ENOENT);
    CHECK_EQ(sf_image_read(img, 0x10000 - 1, b, 2), -ENOENT);
    CHECK_EQ(sf_image_read(img, 0x12000, b, 1), -ENOENT);
    CHECK_EQ(sf_image_read(img, 0x11fff, b, 2), -ENOENT);
    CHECK_EQ(sf_image_read(img, 0x10000, b, 3 * 4096), -ENOENT);
    CHECK_EQ(sf_image_read(img, 0x21fff, b, 1), 0);
    CHECK_EQ(sf_image_read(img, 0x21fff, b, 2), -ENOENT);
    CHECK_EQ(sf_image_read(img, UINT64_MAX, b, 1), -ENOENT);
    CHECK_EQ(sf_image_read(img, UINT64_MAX, b, 2), -EINVAL); /* wraps */
    CHECK_EQ(sf_image_read(img, 0x10000, NULL, 0), 0);
    sf_image_close(img);
    close(fd);
}

static void case_trailing_bytes(void)
{
    struct sf_image_range r[] = {{0x10000, 9 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 12, .pct_zero = 30};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    CHECK_EQ(write(fd, "garbage after the trailer", 25), 25);
    check_image(fd, &m, 100);
    close(fd);
}

static void case_file_shrinks(void)
{
    struct sf_image_range r[] = {{0x10000, 600 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 14, .pct_zero = 10};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), 0);
    if (!img)
        return;
    size_t len;
    free(read_fd(fd, &len));
    /* open validated the file; now it loses its tail (another process
     * truncating it): reads past the new end must fail, not loop or crash */
    if (ftruncate(fd, (off_t)(len / 2)))
        die("ftruncate");
    uint8_t page[4096];
    CHECK_EQ(sf_image_verify(img), -EBADMSG);
    CHECK_EQ(sf_image_read(img, 0x10000 + 599 * 4096, page, 4096), -EBADMSG);
    CHECK_EQ(sf_image_read(img, 0x10000, page, 4096), 0);
    sf_image_close(img);
    close(fd);
}

/* --- pipes --------------------------------------------------------------- */

struct pipe_writer {
    struct model *m;
    int fd;
    int rc;
    pthread_t thread;
    _Atomic int done;
};

static void *pipe_writer_main(void *arg)
{
    struct pipe_writer *pw = arg;
    struct sf_image_src src = model_src(pw->m);
    pw->rc = sf__image_write(pw->fd, &src);
    close(pw->fd);
    atomic_store(&pw->done, 1);
    return NULL;
}

static _Atomic unsigned signals_seen;

static void on_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

/* Interrupts the writer's write(2) calls until it is done. */
static void *signal_loop(void *arg)
{
    struct pipe_writer *pw = arg;
    while (!atomic_load(&pw->done)) {
        pthread_kill(pw->thread, SIGUSR1);
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* Drains the pipe into a memfd, in small reads if asked, so that the writer
 * meets a full pipe (partial writes, EAGAIN).  With sigwait, read number i
 * (for the first SIG_READS) waits until more than i signals were seen: the
 * writer, blocked on the full pipe, is interrupted at least SIG_READS times
 * however fast the machine (a writer that ends early ends the wait). */
#define SIG_READS 16
static int drain_pipe(int rfd, bool small, struct pipe_writer *sigwait)
{
    int out = new_memfd();
    uint8_t buf[65536];
    for (unsigned reads = 0;; reads++) {
        while (sigwait && reads < SIG_READS && atomic_load(&signals_seen) <= reads &&
               !atomic_load(&sigwait->done))
            sched_yield();
        ssize_t n = read(rfd, buf, small ? 3000 : sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read pipe");
        if (n == 0)
            break;
        if (write(out, buf, (size_t)n) != n)
            die("write memfd");
    }
    return out;
}

static void pipe_case(bool nonblock, bool signals)
{
    struct sf_image_range r[] = {{0x600000000ull, 2000 * 4096}, {0x700000000ull, 5 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 13, .pct_zero = 25};
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe");
    if (nonblock && fcntl(p[1], F_SETFL, O_NONBLOCK) < 0)
        die("fcntl");
    struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: EINTR, short writes */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    atomic_store(&signals_seen, 0);
    struct pipe_writer pw = {.m = &m, .fd = p[1]};
    if (pthread_create(&pw.thread, NULL, pipe_writer_main, &pw))
        die("pthread_create");
    pthread_t sth;
    if (signals && pthread_create(&sth, NULL, signal_loop, &pw))
        die("pthread_create");
    int out = drain_pipe(p[0], signals || nonblock, signals ? &pw : NULL);
    if (signals)
        pthread_join(sth, NULL);
    pthread_join(pw.thread, NULL);
    close(p[0]);
    CHECK_EQ(pw.rc, 0);
    if (signals)
        CHECK(atomic_load(&signals_seen) >= SIG_READS, "only %u signals",
              atomic_load(&signals_seen));
    check_image(out, &m, 300);
    close(out);
    signal(SIGUSR1, SIG_DFL);
}

static void case_pipe(void) { pipe_case(false, false); }
static void case_pipe_signals(void) { pipe_case(false, true); }
static void case_pipe_nonblock(void) { pipe_case(true, false); }

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
            CHECK(r == e, "page %#llx: %d, expected %d or -EBADMSG", (unsigned long long)a, r, e);
            CHECK(r || !memcmp(got, want, m->ps), "WRONG DATA at %#llx", (unsigned long long)a);
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
    CHECK_EQ(rc, 0);
    size_t len;
    free(read_fd(fd, &len));
    check_image(fd, &m, 50);
    for (size_t n = len; n-- > 0;) {
        if (ftruncate(fd, (off_t)n))
            die("ftruncate");
        sf_image *img;
        int r = sf_image_open(&img, fd);
        CHECK(r == -EBADMSG, "truncated to %zu of %zu: %d", n, len, r);
        if (!r) {
            reads_never_wrong(img, &m);
            sf_image_close(img);
        }
    }
    close(fd);
}

static void case_truncation_512(void) { truncation_case(512); }
static void case_truncation_4096(void) { truncation_case(4096); }

static void flip_case(uint32_t ps, bool all_bits)
{
    struct sf_image_range rg[2] = {{ps * 2, ps * 6}, {ps * 64, ps * 3}};
    struct model m = {.ps = ps, .ranges = rg, .nranges = 2, .seed = 19, .id = 3,
                      .parent_id = 2, .pct_zero = 25, .pct_absent = 25};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
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
                CHECK(r == (in_version ? -EPROTO : -EBADMSG), "flip %zu.%u: open %d", i, bit, r);
            } else {
                int vr = sf_image_verify(img);
                CHECK(vr == -EBADMSG, "flip %zu.%u undetected by open and verify (%d)", i, bit, vr);
                unsigned bad = reads_never_wrong(img, &m);
                CHECK(bad > 0, "flip %zu.%u: no read saw it", i, bit);
                sf_image_close(img);
            }
            if (!all_bits)
                break;
        }
        if (pwrite(fd, &full[i], 1, (off_t)i) != 1)
            die("pwrite");
    }
    CHECK(flips >= len, "%u flips", flips);
    /* restored: intact again (guards against a test that broke the file) */
    check_image(fd, &m, 10);
    free(full);
    close(fd);
}

static void case_flips_512_all_bits(void) { flip_case(512, true); }
static void case_flips_4096(void) { flip_case(4096, false); }

/* --- hostile images ------------------------------------------------------ */

#define EXPECT_OPEN(b, want)                                                              \
    do {                                                                                  \
        int r_ = rb_open(&(b), NULL);                                                     \
        if (r_ != (want))                                                                 \
            failf(__LINE__, "open = %d, expected %d", r_, (want));                        \
    } while (0)
#define EXPECT_VERIFY(b, want)                                                            \
    do {                                                                                  \
        int v_, r_ = rb_open(&(b), &v_);                                                  \
        if (r_ || v_ != (want))                                                           \
            failf(__LINE__, "open = %d, verify = %d, expected 0, %d", r_, v_, (want));   \
    } while (0)

static void case_hostile_control(void)
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
    CHECK_EQ(sf_image_open(&img, fd), 0);
    uint8_t buf[5 * 4096];
    CHECK_EQ(sf_image_read(img, 0x100000, buf, 3 * 4096), 0);
    CHECK(buf[0] == 0x40 && buf[4095] == 0x40 && buf[4096] == 0 && buf[8191] == 0 &&
          buf[8192] == 0x42 && buf[3 * 4096 - 1] == 0x42);
    CHECK_EQ(sf_image_read(img, 0x201000, buf, 4096), 0);
    CHECK(buf[0] == 0x51 && buf[4095] == 0x51);
    sf_image_info info;
    sf_image_get_info(img, &info);
    CHECK(info.pages_stored == 3 && info.pages_zero == 2 && info.taken_ns == -5 &&
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
    CHECK_EQ(sf_image_open(&img, fd), 0);
    CHECK_EQ(sf_image_verify(img), 0);
    CHECK_EQ(sf_image_read(img, 0x100000, buf, 4096), 0);
    CHECK_EQ(sf_image_read(img, 0x100000, buf, 4097), -ENODATA);
    CHECK_EQ(sf_image_read(img, 0x200000, buf, 1), -ENODATA);
    sf_image_close(img);
    close(fd);
    rb_free(&b);
}

static void case_hostile_version_magic(void)
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
}

static void case_hostile_page_size(void)
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
        CHECK(r == t[i].want, "page size %u: %d, expected %d", t[i].ps, r, t[i].want);
        rb_free(&b);
    }
}

static void case_hostile_counts(void)
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
        CHECK(r == t[i].want, "nranges %llu npages %llu: %d, expected %d",
              (unsigned long long)t[i].nranges, (unsigned long long)t[i].npages, r, t[i].want);
        rb_free(&b);
    }
}

static void case_hostile_ranges(void)
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
        CHECK(r == -EBADMSG, "%s ranges: %d", t[i].what, r);
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
    CHECK_EQ(sf_image_open(&img, fd), 0);
    uint8_t buf[3];
    CHECK_EQ(sf_image_read(img, 0x102fff, buf, 3), 0);
    CHECK(buf[0] == 3 && buf[1] == 0 && buf[2] == 0);
    sf_image_close(img);
    close(fd);
    rb_free(&b);
}

static void case_hostile_blocks(void)
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
        CHECK(r == -EBADMSG, "block %s: %d", t[i].what, r);
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
}

static void case_hostile_kinds(void)
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
            CHECK_EQ(sf_image_read(img, 0x100000, buf, 1), -EBADMSG);
            CHECK_EQ(sf_image_read(img, 0x200000, buf, 4096), 0); /* other block intact */
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
}

static void case_hostile_trailer(void)
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
        CHECK(r == -EBADMSG, "trailer %s: %d", t[i].what, r);
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

static void case_memory_bound(void)
{
    if (UNDER_ASAN) {
        /* ASan reserves terabytes of shadow: no address-space limit is
         * possible, so check the results only */
        int line = hostile_memory_checks();
        CHECK(line == 0, "hostile memory check failed at line %d", line);
        printf("    (ASan: results checked, RLIMIT_AS not applied)\n");
        return;
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
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 100)
        CHECK_EQ(hostile_memory_checks(), 0); /* say where, without the limit */
}

/* --- writer errors ------------------------------------------------------- */

static off_t fd_size(int fd)
{
    return lseek(fd, 0, SEEK_END);
}

static void case_writer_errors(void)
{
    struct sf_image_range r[] = {{0x10000, 40 * 4096}, {0x80000, 10 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 41, .pct_zero = 20,
                      .fail_addr = 0x80000 + 3 * 4096, .fail_err = -EIO};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, -EIO);
    CHECK(fd_size(fd) > 0, "nothing written before the failure");
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), -EBADMSG); /* the partial image is refused */
    close(fd);

    m.fail_err = -ENOMEM;
    m.fail_addr = 0x10000;
    fd = model_image(&m, &rc);
    CHECK_EQ(rc, -ENOMEM);
    close(fd);
    m.fail_err = 0;

    struct sf_image_src src = model_src(&m);
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        die("pipe");
    close(p[1]);
    CHECK_EQ(sf__image_write(p[1], &src), -EBADF); /* closed fd */
    CHECK_EQ(sf__image_write(-1, &src), -EBADF);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    if (pipe2(p, O_CLOEXEC))
        die("pipe");
    close(p[0]);
    CHECK_EQ(sf__image_write(p[1], &src), -EPIPE);
    close(p[1]);
    signal(SIGPIPE, old);
    int ro = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    CHECK_EQ(sf__image_write(ro, &src), -EBADF);
    close(ro);
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full >= 0) {
        CHECK_EQ(sf__image_write(full, &src), -ENOSPC);
        close(full);
    } else {
        printf("    (no /dev/full: -ENOSPC not checked)\n");
    }

    /* read_page contract violations */
    m.bogus = 2;
    fd = model_image(&m, &rc);
    CHECK_EQ(rc, -EINVAL);
    close(fd);
    m.bogus = 0;
    /* a model that has absent pages (it believes it is incremental) behind
     * a source that claims a full image */
    struct model m2 = m;
    m2.parent_id = 1;
    m2.pct_absent = 30;
    fd = new_memfd();
    struct sf_image_src s2 = model_src(&m2);
    s2.parent_id = 0;
    CHECK_EQ(sf__image_write(fd, &s2), -EINVAL);
    close(fd);
}

static void case_writer_bad_sources(void)
{
    static const struct {
        const char *what;
        uint32_t ps;
        struct sf_image_range r[2];
        size_t n;
    } t[] = {
        {"page size 0", 0, {{0x10000, 4096}}, 1},
        {"page size 3", 3, {{0x10000, 4096}}, 1},
        {"page size 256", 256, {{0x10000, 4096}}, 1},
        {"page size 2^22", 1u << 22, {{1ull << 22, 1ull << 22}}, 1},
        {"page size 2^30", 1u << 30, {{1ull << 30, 1ull << 30}}, 1},
        {"unaligned addr", 4096, {{0x10001, 4096}}, 1},
        {"unaligned len", 4096, {{0x10000, 4095}}, 1},
        {"empty range", 4096, {{0x10000, 0}}, 1},
        {"overlap", 4096, {{0x10000, 0x2000}, {0x11000, 0x1000}}, 2},
        {"unsorted", 4096, {{0x20000, 0x1000}, {0x10000, 0x1000}}, 2},
        {"wrapping", 4096, {{0xfffffffffffff000ull, 0x2000}}, 1},
        {"ends at 2^64", 4096, {{0xfffffffffffff000ull, 0x1000}}, 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++) {
        struct model m = {.ps = t[i].ps, .ranges = t[i].r, .nranges = t[i].n, .seed = 1};
        int rc, fd = model_image(&m, &rc);
        CHECK(rc == -EINVAL, "%s: %d", t[i].what, rc);
        CHECK(fd_size(fd) == 0, "%s: bytes written before the check", t[i].what);
        close(fd);
    }
    struct sf_image_range one = {0x10000, 4096};
    struct model m = {.ps = 4096, .ranges = &one, .nranges = 1, .seed = 1};
    struct sf_image_src src = model_src(&m);
    int fd = new_memfd();
    CHECK_EQ(sf__image_write(fd, NULL), -EINVAL);
    src.ranges = NULL;
    CHECK_EQ(sf__image_write(fd, &src), -EINVAL);
    src = model_src(&m);
    src.read_page = NULL;
    CHECK_EQ(sf__image_write(fd, &src), -EINVAL);
    src.nranges = SF_IMG_MAX_RANGES + 1ull;
    CHECK_EQ(sf__image_write(fd, &src), -EINVAL);
    CHECK_EQ(fd_size(fd), 0);
    close(fd);
}

/* --- API ----------------------------------------------------------------- */

static void case_api_args(void)
{
    struct sf_image_range r[] = {{0x10000, 4 * 4096}, {0x20000, 4096}, {0x30000, 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 3, .seed = 51};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    sf_image *img = (sf_image *)&m;
    CHECK_EQ(sf_image_open(NULL, fd), -EINVAL);
    CHECK_EQ(sf_image_open(&img, -1), -EBADF);
    CHECK(img == NULL, "out not cleared on failure");
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        die("pipe");
    CHECK_EQ(sf_image_open(&img, p[0]), -ESPIPE);
    close(p[0]);
    close(p[1]);
    CHECK_EQ(sf_image_open(&img, fd), 0);
    sf_image_info info;
    CHECK_EQ(sf_image_get_info(NULL, &info), -EINVAL);
    CHECK_EQ(sf_image_get_info(img, NULL), -EINVAL);
    CHECK_EQ(sf_image_ranges(NULL, NULL, NULL), -EINVAL);
    struct range_list rl = {.stop_after = 2};
    CHECK_EQ(sf_image_ranges(img, collect_range, &rl), 2);
    CHECK_EQ(rl.n, 2);
    uint8_t b[8];
    CHECK_EQ(sf_image_read(NULL, 0x10000, b, 8), -EINVAL);
    CHECK_EQ(sf_image_read(img, 0x10000, NULL, 8), -EINVAL);
    CHECK_EQ(sf_image_verify(NULL), -EINVAL);
    sf_image_close(img);
    sf_image_close(NULL);
    /* the file offset is irrelevant: reads use pread from offset 0 */
    lseek(fd, 100, SEEK_SET);
    CHECK_EQ(sf_image_open(&img, fd), 0);
    sf_image_close(img);
    close(fd);
}

struct reader_ctx {
    const sf_image *img;
    const struct model *m;
    uint64_t seed;
    int errors;
};

static void *reader_main(void *arg)
{
    struct reader_ctx *c = arg;
    const struct model *m = c->m;
    uint8_t *got = malloc(2 * m->ps), *want = malloc(2 * m->ps);
    uint64_t s = c->seed;
    for (int i = 0; i < 1500; i++) {
        s = mix64(s + 1);
        const struct sf_image_range *rg = &m->ranges[s % m->nranges];
        uint64_t a = rg->addr + (s >> 20) % rg->len;
        size_t len = 1 + (size_t)((s >> 8) % m->ps);
        if (a + len > rg->addr + rg->len)
            len = (size_t)(rg->addr + rg->len - a);
        int e = model_expect(m, a, len, want);
        int r = sf_image_read(c->img, a, got, len);
        if (r != e || (!r && memcmp(got, want, len)))
            c->errors++;
        if (i % 500 == 0 && sf_image_verify(c->img))
            c->errors++;
    }
    free(got);
    free(want);
    return NULL;
}

static void case_concurrent_readers(void)
{
    struct sf_image_range r[] = {{0x10000000, 1000 * 4096}, {0x20000000, 300 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 61, .id = 9,
                      .parent_id = 8, .pct_zero = 20, .pct_absent = 10};
    int rc, fd = model_image(&m, &rc);
    CHECK_EQ(rc, 0);
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), 0);
    if (!img)
        return;
    pthread_t th[4];
    struct reader_ctx ctx[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (struct reader_ctx){img, &m, (uint64_t)i * 1000 + 1, 0};
        if (pthread_create(&th[i], NULL, reader_main, &ctx[i]))
            die("pthread_create");
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(ctx[i].errors == 0, "reader %d: %d errors", i, ctx[i].errors);
    }
    sf_image_close(img);
    close(fd);
}

/* The writer's bytes equal an independent encoding of the documented
 * layout and block policy: the spec and the code agree. */
static void case_conformance(void)
{
    static const uint32_t sizes[] = {512, 4096};
    for (size_t si = 0; si < 2; si++) {
        uint32_t ps = sizes[si];
        struct sf_image_range r[] = {{ps * 8, ps * 10}, {ps * 40, ps * 3000}, {ps * 5000, ps * 5000}};
        struct model m = {.ps = ps, .ranges = r, .nranges = 3, .seed = 71, .id = 0x1d1d1d1d,
                          .parent_id = 4, .taken_ns = -5, .pct_zero = 30, .pct_absent = 20,
                          .version = SF_IMG_VERSION_1};
        int rc, fd = model_image(&m, &rc);
        CHECK_EQ(rc, 0);
        size_t len;
        uint8_t *got = read_fd(fd, &len);
        close(fd);

        struct rb b = {0};
        uint64_t npages = 0;
        for (size_t i = 0; i < 3; i++)
            npages += r[i].len / ps;
        rb_header(&b, ps, 4, 3, npages);
        rb_table(&b, r, 3);
        size_t cap = ps >= SF_IMG_WRITE_BLOCK_DATA ? 1 : SF_IMG_WRITE_BLOCK_DATA / ps;
        uint8_t *kinds = malloc(SF_IMG_MAX_BLOCK_PAGES), *data = malloc(cap * ps);
        uint8_t *pl = malloc(SF_IMG_MAX_BLOCK_PAGES + cap * ps);
        for (size_t i = 0; i < 3; i++) {
            uint32_t n = 0, c[3] = {0, 0, 0};
            uint64_t start = r[i].addr;
            for (uint64_t a = r[i].addr; a < r[i].addr + r[i].len; a += ps) {
                if (!n)
                    start = a;
                int k = model_kind(&m, a);
                kinds[n++] = k == K_DATA ? SF_IMG_PAGE_PRESENT
                           : k == K_ZEROFILL ? SF_IMG_PAGE_ZERO : SF_IMG_PAGE_ABSENT;
                if (k == K_DATA)
                    model_fill(&m, a, data + (size_t)c[0] * ps);
                c[k == K_DATA ? 0 : k == K_ZEROFILL ? 1 : 2]++;
                if (n == SF_IMG_MAX_BLOCK_PAGES || c[0] == cap || a + ps == r[i].addr + r[i].len) {
                    memcpy(pl, kinds, n);
                    memcpy(pl + n, data, (size_t)c[0] * ps);
                    rb_block_raw(&b, start, n, c[0], c[1], c[2], 0, pl, n + (size_t)c[0] * ps,
                                 b.hdr_sum);
                    n = c[0] = c[1] = c[2] = 0;
                }
            }
        }
        rb_trailer(&b);
        CHECK(b.len == len, "ps %u: writer %zu bytes, encoder %zu", ps, len, b.len);
        CHECK(b.len == len && !memcmp(b.p, got, len), "ps %u: bytes differ", ps);
        free(kinds);
        free(data);
        free(pl);
        free(got);
        rb_free(&b);
    }
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* Version 2: compression, page maps, mapping names, merge                  */
/* ------------------------------------------------------------------------ */

/* Walks a version 2 image's blocks: counts and the stored bytes of each
 * encoding. */
struct v2_walk {
    size_t blocks, zstd_blocks;
    uint64_t raw_bytes, zstd_stored, zstd_raw;
    size_t first_zstd_off; /* file offset of the first zstd block header, or 0 */
};

static void walk_v2(const uint8_t *p, size_t len, struct v2_walk *w)
{
    memset(w, 0, sizeof *w);
    uint64_t nr = get64(p + SF_IMG_H_NRANGES);
    uint32_t ps = get32(p + SF_IMG_H_PAGE_SIZE);
    size_t off = SF_IMG_HDR_SIZE, names = 0;
    for (uint64_t i = 0; i < nr; i++)
        names += get32(p + off + i * SF_IMG2_RANGE_SIZE + SF_IMG2_R_NAMELEN);
    off += nr * SF_IMG2_RANGE_SIZE + names + 8;
    while (off + SF_IMG2_BLK_HDR_SIZE <= len && !memcmp(p + off, SF_IMG_BLOCK_MAGIC, 4)) {
        uint32_t np = get32(p + off + SF_IMG_B_NPAGES), pr = get32(p + off + SF_IMG_B_PRESENT);
        uint32_t enc = get32(p + off + SF_IMG2_B_ENCODING), st = get32(p + off + SF_IMG2_B_STORED);
        w->blocks++;
        if (enc == SF_IMG_ENC_ZSTD) {
            if (!w->zstd_blocks)
                w->first_zstd_off = off;
            w->zstd_blocks++;
            w->zstd_stored += st;
            w->zstd_raw += (uint64_t)pr * ps;
        } else {
            w->raw_bytes += st;
        }
        off += SF_IMG2_BLK_HDR_SIZE + np + st;
    }
}

static void case_zstd_blocks(void)
{
    struct sf_image_range r[] = {{0x10000000, 900 * 4096}};
    static const unsigned levels[] = {0, 1, 19};
    size_t first_len = 0;
    for (size_t li = 0; li < 3; li++) {
        struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 12, .pct_zero = 10,
                          .version = SF_IMG_VERSION,
                          .flags = SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(levels[li])};
        int rc, fd = model_image(&m, &rc);
        CHECK_EQ(rc, 0);
        size_t len;
        uint8_t *p = read_fd(fd, &len);
        struct v2_walk w;
        walk_v2(p, len, &w);
        CHECK(w.blocks > 10 && w.zstd_blocks > 0, "%zu blocks, %zu zstd", w.blocks, w.zstd_blocks);
        CHECK(w.zstd_stored < w.zstd_raw, "zstd blocks store %llu of %llu bytes",
              (unsigned long long)w.zstd_stored, (unsigned long long)w.zstd_raw);
        if (!li)
            first_len = len;
        CHECK(len < first_len + first_len / 8, "level %u: %zu bytes", levels[li], len);
        free(p);
        check_image(fd, &m, 200);
        close(fd);
    }
    /* incompressible data is stored raw even when asked to compress */
    struct model rnd = {.ps = 512, .ranges = r, .nranges = 1, .seed = 5, .version = SF_IMG_VERSION,
                        .flags = SF_WRITE_ZSTD};
    r[0].len = 64 * 512;
    int rc, fd = model_image(&rnd, &rc);
    CHECK_EQ(rc, 0);
    check_image(fd, &rnd, 50);
    close(fd);

    /* bad flags: unknown bits, a level past the maximum, compression in v1 */
    struct model bad = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 5, .version = SF_IMG_VERSION};
    static const unsigned flags[] = {1u << 1, 1u << 20, SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(20),
                                     SF_WRITE_ZSTD_LEVEL(31)};
    for (size_t i = 0; i < 4; i++) {
        bad.flags = flags[i];
        fd = model_image(&bad, &rc);
        CHECK(rc == -EINVAL, "flags %#x: %d", flags[i], rc);
        CHECK_EQ(lseek(fd, 0, SEEK_END), 0);
        close(fd);
    }
    bad.version = SF_IMG_VERSION_1;
    struct sf_image_src src = model_src(&bad);
    src.flags = SF_WRITE_ZSTD;
    fd = new_memfd();
    CHECK_EQ(sf__image_write(fd, &src), -EINVAL);
    close(fd);
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
                failf(__LINE__, "read %d, verify %d", rr, *verify);
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

static void case_zstd_hostile(void)
{
    int v;
    uint8_t page[4096];
    CHECK_EQ(zimage(NULL, &v, page), 0);
    CHECK_EQ(v, 0);
    const char last_want = "snapfault "[4095 % 10];
    CHECK(page[0] == 's' && page[10] == 's' && page[4095] == last_want, "control content");
    /* checksummed, but not a zstd stream of the right size */
    CHECK_EQ(zimage(z_garbage, &v, page), 0);
    CHECK_EQ(v, -EBADMSG);
    CHECK_EQ(zimage(z_short, &v, page), 0);
    CHECK_EQ(v, -EBADMSG);
    CHECK_EQ(zimage(z_long, &v, page), 0);
    CHECK_EQ(v, -EBADMSG);
    CHECK_EQ(zimage(z_cut, &v, page), 0);
    CHECK_EQ(v, -EBADMSG);
    /* concatenated frames are one stream: fine if the size is right */
    CHECK_EQ(zimage(z_two_frames, &v, page), 0);
    CHECK_EQ(v, 0);
    /* stored lengths and encodings the header cannot have */
    CHECK_EQ(zimage(z_claim_more, &v, NULL), -EBADMSG);
    CHECK_EQ(zimage(z_claim_raw_size, &v, NULL), -EBADMSG);
    CHECK_EQ(zimage(z_claim_zero, &v, NULL), -EBADMSG);
    CHECK_EQ(zimage(z_bad_enc, &v, NULL), -EBADMSG);
    CHECK_EQ(zimage(z_raw_enc, &v, NULL), -EBADMSG);
    CHECK_EQ(zimage(z_reserved, &v, NULL), -EBADMSG);
    CHECK_EQ(zimage(z_no_present, &v, NULL), -EBADMSG);

    /* a written compressed image: a flip in its compressed data is caught */
    struct sf_image_range r[] = {{0x10000000, 200 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 9, .version = SF_IMG_VERSION,
                      .flags = SF_WRITE_ZSTD};
    int rc, fd = model_image(&m, &rc);
    size_t len;
    uint8_t *p = read_fd(fd, &len);
    struct v2_walk w;
    walk_v2(p, len, &w);
    CHECK(w.first_zstd_off != 0, "no zstd block");
    uint32_t np = get32(p + w.first_zstd_off + SF_IMG_B_NPAGES);
    size_t at = w.first_zstd_off + SF_IMG2_BLK_HDR_SIZE + np + 5;
    p[at] ^= 1;
    CHECK_EQ(pwrite(fd, p + at, 1, (off_t)at), 1);
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), 0);
    CHECK_EQ(sf_image_verify(img), -EBADMSG);
    uint8_t buf[4096], map[2];
    uint64_t a = get64(p + w.first_zstd_off + SF_IMG_B_ADDR);
    CHECK_EQ(sf_image_read(img, a, buf, sizeof buf), -EBADMSG);
    CHECK_EQ(sf_image_read_map(img, a, buf, sizeof buf, map), -EBADMSG);
    sf_image_close(img);
    free(p);
    close(fd);
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
        CHECK_EQ(sf_image_mapping_get(img, 0, &mp), 0);
        CHECK(mp.prot == prot && strlen(mp.name) == namelen && !memcmp(mp.name, name, namelen) &&
                  mp.offset == 0x2000,
              "mapping read back");
        CHECK_EQ(sf_image_mapping_get(img, 1, &mp), -ENOENT);
        sf_image_close(img);
    }
    close(fd);
    rb_free(&b);
    return r;
}

static void case_names_hostile(void)
{
    static char big[SF_IMG_MAX_NAME + 2];
    memset(big, 'n', sizeof big);
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ, 6, "[heap]", 6), 0);
    CHECK_EQ(name_image(0, 0, "", 0), 0);
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN, SF_IMG_MAX_NAME, big, SF_IMG_MAX_NAME), 0);
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN, SF_IMG_MAX_NAME + 1, big, SF_IMG_MAX_NAME + 1), -EBADMSG);
    CHECK_EQ(name_image(1u << 5, 6, "[heap]", 6), -EBADMSG);        /* unknown prot bit */
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN, 6, "[he\0p]", 6), -EBADMSG); /* NUL in a name */
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN, 6, "[heap", 5), -EBADMSG);   /* name runs into the sum */
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN, 0xffffffffu, "[heap]", 6), -EBADMSG); /* huge length */
    CHECK_EQ(name_image(SF_IMAGE_PROT_KNOWN, 3000, "[heap]", 6), -EBADMSG);  /* past the file */
}

/* sf_image_read_map: kinds per page, held bytes copied, absent bytes left. */
static void case_read_map(void)
{
    static const uint32_t sizes[] = {512, 4096};
    for (size_t si = 0; si < 2; si++) {
        uint32_t ps = sizes[si];
        struct sf_image_range r[] = {{ps * 16, ps * 300}, {ps * 400, ps * 7}};
        struct model m = {.ps = ps, .ranges = r, .nranges = 2, .seed = 31 + si, .id = 5, .parent_id = 4,
                          .pct_zero = 20, .pct_absent = 40};
        int rc, fd = model_image(&m, &rc);
        CHECK_EQ(rc, 0);
        sf_image *img;
        CHECK_EQ(sf_image_open(&img, fd), 0);
        size_t cap = 310 * (size_t)ps;
        uint8_t *got = malloc(cap), *page = malloc(ps), map[320];
        uint64_t s = 77;
        for (int n = 0; n < 200; n++) {
            s = mix64(s + (uint64_t)n);
            const struct sf_image_range *rg = &r[s % 2];
            uint64_t a = rg->addr + (s >> 8) % rg->len;
            size_t len = 1 + (size_t)((s >> 32) % (rg->addr + rg->len - a));
            if (len > cap)
                len = cap;
            memset(got, 0xc3, len);
            memset(map, 0, sizeof map);
            int e = a + len <= rg->addr + rg->len ? 0 : -ENOENT;
            int r1 = sf_image_read_map(img, a, got, len, map);
            CHECK(r1 == e, "%#llx+%zu: %d", (unsigned long long)a, len, r1);
            if (r1)
                continue;
            uint64_t base = a & ~(uint64_t)(ps - 1);
            for (uint64_t pa = base, i = 0; pa < a + len; pa += ps, i++) {
                int k = model_kind(&m, pa);
                int want = k == K_DATA ? SF_IMAGE_PAGE_STORED : k == K_ZEROFILL ? SF_IMAGE_PAGE_ZERO
                                                                               : SF_IMAGE_PAGE_ABSENT;
                CHECK(map[i] == want, "page %#llx kind %d, expected %d", (unsigned long long)pa, map[i], want);
                if (k == K_DATA)
                    model_fill(&m, pa, page);
                else
                    memset(page, k == K_ZEROFILL ? 0 : 0xc3, ps);
                uint64_t from = pa > a ? pa : a, to = pa + ps < a + len ? pa + ps : a + len;
                CHECK(!memcmp(got + (from - a), page + (from - pa), to - from), "page %#llx bytes",
                      (unsigned long long)pa);
            }
            /* the map alone */
            uint8_t map2[320];
            CHECK_EQ(sf_image_read_map(img, a, NULL, len, map2), 0);
            CHECK(!memcmp(map, map2, (a + len - 1) / ps - a / ps + 1), "map without buffer");
        }
        CHECK_EQ(sf_image_read_map(img, r[0].addr, got, 0, NULL), 0);
        CHECK_EQ(sf_image_read_map(img, r[0].addr, got, 1, NULL), -EINVAL);
        CHECK_EQ(sf_image_read_map(NULL, r[0].addr, got, 1, map), -EINVAL);
        CHECK_EQ(sf_image_read_map(img, UINT64_MAX, got, 2, map), -EINVAL);
        CHECK_EQ(sf_image_read_map(img, r[1].addr - 1, got, 2, map), -ENOENT);
        free(got);
        free(page);
        sf_image_close(img);
        close(fd);
    }
}

/* The writer names ranges after /proc/self/maps: split where the mapping
 * changes, file path and offset, anonymous names, holes. */
static uint8_t *maps_mem;
static int maps_read_page(void *ctx, uint64_t addr, void *buf)
{
    (void)ctx;
    memcpy(buf, (void *)(uintptr_t)addr, 4096);
    return 1;
}

static void case_names_from_maps(void)
{
    const size_t ps = 4096;
    if (sysconf(_SC_PAGESIZE) != (long)ps)
        return;
    /* 8 pages: 0-1 anonymous rw, 2 anonymous r-x, 3 anonymous rw, 4 a hole,
     * 5-6 a file at offset 3 pages, 7 anonymous */
    uint8_t *base = mmap(NULL, 8 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        die("mmap");
    maps_mem = base;
    memset(base, 'a', 8 * ps);
    char path[] = "/tmp/snapfault-names-XXXXXX";
    int ffd = mkstemp(path);
    if (ffd < 0)
        die("mkstemp");
    uint8_t fpage[4096];
    for (int i = 0; i < 6; i++) {
        memset(fpage, 'f' + i, ps);
        if (write(ffd, fpage, ps) != (ssize_t)ps)
            die("write");
    }
    if (mmap(base + 5 * ps, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, ffd, 3 * ps) == MAP_FAILED)
        die("mmap file");
    if (mprotect(base + 2 * ps, ps, PROT_READ | PROT_EXEC))
        die("mprotect");
    munmap(base + 4 * ps, ps);
    bool named = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)(base + 7 * ps), ps, "sfname") == 0;

    /* two source ranges: pages 0-3 and 5-7 (the hole is not read) */
    struct sf_image_range r[] = {{(uintptr_t)base, 4 * ps}, {(uintptr_t)base + 5 * ps, 3 * ps}};
    struct sf_image_src src = {.id = 1, .page_size = 4096, .ranges = r, .nranges = 2,
                               .read_page = maps_read_page};
    int fd = new_memfd();
    CHECK_EQ(sf__image_write(fd, &src), 0);
    sf_image *img;
    CHECK_EQ(sf_image_open(&img, fd), 0);
    if (img) {
        sf_image_info info;
        sf_image_get_info(img, &info);
        CHECK_EQ(info.version, SF_IMG_VERSION);
        CHECK_EQ(info.ranges, 5);
        static const struct {
            size_t first, pages;
            uint32_t prot;
        } want[] = {
            {0, 2, SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE},
            {2, 1, SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE | SF_IMAGE_PROT_EXEC},
            {3, 1, SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE},
            {5, 2, SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE},
            {7, 1, SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE},
        };
        for (size_t i = 0; i < 5; i++) {
            sf_image_mapping mp;
            CHECK_EQ(sf_image_mapping_get(img, i, &mp), 0);
            CHECK(mp.addr == (uintptr_t)base + want[i].first * ps && mp.len == want[i].pages * ps,
                  "range %zu at +%#llx len %#llx", i, (unsigned long long)(mp.addr - (uintptr_t)base),
                  (unsigned long long)mp.len);
            CHECK(mp.prot == (want[i].prot | SF_IMAGE_PROT_KNOWN), "range %zu prot %#x", i, mp.prot);
            if (i == 3) {
                CHECK(!strcmp(mp.name, path), "file range named '%s', expected '%s'", mp.name, path);
                CHECK(mp.offset == 3 * ps, "file offset %#llx", (unsigned long long)mp.offset);
            } else if (i == 4 && named) {
                CHECK(!strcmp(mp.name, "[anon:sfname]"), "anon range named '%s'", mp.name);
            } else if (i != 4) {
                CHECK(mp.name[0] == 0 && mp.offset == 0, "range %zu named '%s'", i, mp.name);
            }
        }
        uint8_t page[4096];
        CHECK_EQ(sf_image_read(img, (uintptr_t)base + 6 * ps, page, ps), 0);
        CHECK(page[0] == 'f' + 4 && page[4095] == 'f' + 4, "file page content");
        CHECK_EQ(sf_image_verify(img), 0);
        sf_image_close(img);
    }
    close(fd);
    /* a source range over the hole: the hole's part has no name, no prot,
     * and read_page is asked for it (here: fails, as reading it would) */
    struct sf_image_range hole[] = {{(uintptr_t)base + 3 * ps, 2 * ps}};
    src.ranges = hole;
    src.nranges = 1;
    src.read_page = model_read_page;
    struct model m = {.ps = 4096, .seed = 1};
    src.ctx = &m;
    fd = new_memfd();
    CHECK_EQ(sf__image_write(fd, &src), 0);
    CHECK_EQ(sf_image_open(&img, fd), 0);
    if (img) {
        sf_image_mapping mp;
        CHECK_EQ(sf_image_mapping_get(img, 1, &mp), 0);
        CHECK(mp.addr == (uintptr_t)base + 4 * ps && mp.prot == 0 && !mp.name[0], "hole part");
        sf_image_close(img);
    }
    close(fd);
    /* version 1 images know neither */
    src.version = SF_IMG_VERSION_1;
    fd = new_memfd();
    CHECK_EQ(sf__image_write(fd, &src), 0);
    CHECK_EQ(sf_image_open(&img, fd), 0);
    if (img) {
        sf_image_mapping mp;
        CHECK_EQ(sf_image_mapping_get(img, 0, &mp), 0);
        CHECK(mp.len == 2 * ps && mp.prot == 0 && !mp.name[0] && !mp.offset, "v1 mapping");
        sf_image_close(img);
    }
    close(fd);
    close(ffd);
    unlink(path);
    munmap(base, 8 * ps);
}

/* sf_image_merge: a chain of three models flattens to the pages of the
 * nearest model holding each. */
static int chain_kind_fill(struct model *const *ch, size_t n, uint64_t addr, uint8_t *buf)
{
    for (size_t k = 0; k < n; k++) {
        int kd = model_kind(ch[k], addr);
        if (kd == K_ABSENT)
            continue;
        if (kd == K_ZEROFILL)
            memset(buf, 0, ch[k]->ps);
        else
            model_fill(ch[k], addr, buf);
        return kd;
    }
    return -1;
}

static void case_merge(void)
{
    const uint32_t ps = 4096;
    struct sf_image_range r[] = {{0x10000000, 700 * 4096}, {0x20000000, 5 * 4096}};
    static const struct sf_image_meta meta[2] = {
        {SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE, "[heap]", 0},
        {SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE, "/lib/x.so", 0x3000},
    };
    struct model full = {.ps = ps, .ranges = r, .nranges = 2, .seed = 1, .id = 10, .pct_zero = 10};
    struct model i1 = {.ps = ps, .ranges = r, .nranges = 2, .seed = 2, .id = 11, .parent_id = 10,
                       .pct_zero = 5, .pct_absent = 70};
    struct model i2 = {.ps = ps, .ranges = r, .nranges = 2, .seed = 3, .id = 12, .parent_id = 11,
                       .taken_ns = 99, .pct_zero = 5, .pct_absent = 80};
    struct model *models[3] = {&i2, &i1, &full};
    int fds[3];
    sf_image *imgs[3];
    for (int k = 0; k < 3; k++) {
        models[k]->version = SF_IMG_VERSION;
        models[k]->flags = k == 1 ? SF_WRITE_ZSTD : 0;
        struct sf_image_src src = model_src(models[k]);
        src.meta = meta;
        fds[k] = new_memfd();
        CHECK_EQ(sf__image_write(fds[k], &src), 0);
        CHECK_EQ(sf_image_open(&imgs[k], fds[k]), 0);
    }
    for (int zi = 0; zi < 2; zi++) {
        int out = new_memfd();
        CHECK_EQ(sf_image_merge((const sf_image *const *)imgs, 3, out, zi ? SF_WRITE_ZSTD : 0), 0);
        sf_image *mg;
        CHECK_EQ(sf_image_open(&mg, out), 0);
        if (!mg)
            break;
        sf_image_info info;
        sf_image_get_info(mg, &info);
        CHECK(info.id == 12 && info.parent_id == 0 && info.taken_ns == 99 && info.ranges == 2 &&
                  info.pages_absent == 0,
              "merged header");
        CHECK_EQ(sf_image_verify(mg), 0);
        sf_image_mapping mp;
        CHECK_EQ(sf_image_mapping_get(mg, 1, &mp), 0);
        CHECK(!strcmp(mp.name, "/lib/x.so") && mp.offset == 0x3000 && mp.prot == meta[1].prot, "merged names");
        uint8_t got[4096], want[4096];
        uint64_t zero = 0;
        for (size_t i = 0; i < 2; i++)
            for (uint64_t a = r[i].addr; a < r[i].addr + r[i].len; a += ps) {
                int kd = chain_kind_fill(models, 3, a, want);
                zero += kd == K_ZEROFILL;
                CHECK_EQ(sf_image_read(mg, a, got, ps), 0);
                CHECK(!memcmp(got, want, ps), "merged page %#llx", (unsigned long long)a);
            }
        CHECK_EQ(info.pages_zero, zero);
        if (zi) {
            size_t len;
            uint8_t *p = read_fd(out, &len);
            struct v2_walk w;
            walk_v2(p, len, &w);
            CHECK(w.zstd_blocks > 0, "merge --zstd wrote no zstd block");
            free(p);
        }
        sf_image_close(mg);
        close(out);
    }
    /* broken chains */
    int out = new_memfd();
    const sf_image *skip[2] = {imgs[0], imgs[2]};
    CHECK_EQ(sf_image_merge(skip, 2, out, 0), -EINVAL);       /* ids do not follow */
    const sf_image *nofull[2] = {imgs[0], imgs[1]};
    CHECK_EQ(sf_image_merge(nofull, 2, out, 0), -EINVAL);     /* does not end in a full image */
    CHECK_EQ(sf_image_merge(NULL, 1, out, 0), -EINVAL);
    CHECK_EQ(sf_image_merge((const sf_image *const *)imgs, 0, out, 0), -EINVAL);
    CHECK_EQ(sf_image_merge((const sf_image *const *)imgs, 3, out, 1u << 3), -EINVAL);
    CHECK_EQ(lseek(out, 0, SEEK_END), 0);
    /* a full image alone flattens to itself */
    CHECK_EQ(sf_image_merge((const sf_image *const *)&imgs[2], 1, out, 0), 0);
    close(out);
    /* a parent lacking a range its child needs */
    struct sf_image_range rp[] = {{0x10000000, 700 * 4096}};
    struct model small = {.ps = ps, .ranges = rp, .nranges = 1, .seed = 1, .id = 11,
                          .version = SF_IMG_VERSION};
    struct sf_image_src src = model_src(&small);
    int sfd = new_memfd();
    CHECK_EQ(sf__image_write(sfd, &src), 0);
    sf_image *simg;
    CHECK_EQ(sf_image_open(&simg, sfd), 0);
    const sf_image *lack[2] = {imgs[0], simg};
    out = new_memfd();
    CHECK_EQ(sf_image_merge(lack, 2, out, 0), -ENOENT);
    close(out);
    sf_image_close(simg);
    close(sfd);
    for (int k = 0; k < 3; k++) {
        sf_image_close(imgs[k]);
        close(fds[k]);
    }
}

struct test_case {
    const char *name;
    void (*fn)(void);
};

/* Run once per format pass (version 1, version 2, version 2 + zstd). */
static const struct test_case generic_cases[] = {
    {"round trip: several ranges, random and zero pages, high addresses", case_roundtrip_ranges},
    {"round trip: page sizes 512 B to 2 MiB", case_roundtrip_page_sizes},
    {"all-zero pages are elided", case_zero_pages_elided},
    {"incremental: absent pages give -ENODATA", case_incremental},
    {"zero ranges", case_zero_ranges},
    {"reads outside ranges give -ENOENT", case_gaps},
    {"bytes after the trailer are ignored", case_trailing_bytes},
    {"file shrinking after open: -EBADMSG, no hang", case_file_shrinks},
    {"pipe as the output fd", case_pipe},
    {"pipe with signals (EINTR, short writes)", case_pipe_signals},
    {"non-blocking pipe (EAGAIN)", case_pipe_nonblock},
    {"truncation at every offset, 512 B pages", case_truncation_512},
    {"truncation at every offset, 4 KiB pages", case_truncation_4096},
    {"every bit flipped at every byte, 512 B pages", case_flips_512_all_bits},
    {"a bit flipped at every byte, 4 KiB pages", case_flips_4096},
    {"concurrent readers", case_concurrent_readers},
};

/* Run once. */
static const struct test_case cases[] = {
    {"blocks end at the page cap and at the data cap", case_block_limits},
    {"hostile: control images are valid", case_hostile_control},
    {"hostile: magic, version (-EPROTO), reserved", case_hostile_version_magic},
    {"hostile: page size 0, 3, 256, 2^22, 2^30", case_hostile_page_size},
    {"hostile: huge and inconsistent counts", case_hostile_counts},
    {"hostile: overlapping, unsorted, unaligned, wrapping ranges", case_hostile_ranges},
    {"hostile: block headers", case_hostile_blocks},
    {"hostile: kinds with valid checksums", case_hostile_kinds},
    {"hostile: trailer", case_hostile_trailer},
    {"hostile: 2^40 pages, memory stays bounded (RLIMIT_AS)", case_memory_bound},
    {"writer errors: -EIO from read_page, -EBADF, -EPIPE, -ENOSPC", case_writer_errors},
    {"writer rejects bad sources before writing", case_writer_bad_sources},
    {"API argument checks", case_api_args},
    {"writer bytes match the documented layout", case_conformance},
    {"zstd: compressed blocks, levels, raw fallback, bad flags", case_zstd_blocks},
    {"zstd: hostile compressed blocks (checksummed garbage, wrong sizes)", case_zstd_hostile},
    {"names: hostile lengths, bytes, protection bits", case_names_hostile},
    {"read_map: page kinds, held bytes, absent bytes untouched", case_read_map},
    {"names and protection from /proc/self/maps", case_names_from_maps},
    {"merge: a chain flattens to the nearest pages", case_merge},

};

static void run_case(const struct test_case *c, const char *pass, int *passed, int *failed)
{
    case_failures = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    c->fn();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (case_failures) {
        printf("image%s: %s ... FAILED (%d checks, %.0f ms)\n", pass, c->name, case_failures, ms);
        (*failed)++;
    } else {
        printf("image%s: %s ... ok (%.0f ms)\n", pass, c->name, ms);
        (*passed)++;
    }
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int passed = 0, failed = 0;
    static const struct {
        const char *name;
        uint32_t version;
        unsigned flags;
    } passes[] = {
        {" v1", SF_IMG_VERSION_1, 0},
        {" v2", SF_IMG_VERSION, 0},
        {" v2+zstd", SF_IMG_VERSION, SF_WRITE_ZSTD},
    };
    for (size_t p = 0; p < sizeof passes / sizeof *passes; p++) {
        g_version = passes[p].version;
        g_flags = passes[p].flags;
        for (size_t i = 0; i < sizeof generic_cases / sizeof *generic_cases; i++)
            run_case(&generic_cases[i], passes[p].name, &passed, &failed);
    }
    g_version = SF_IMG_VERSION;
    g_flags = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_case(&cases[i], "", &passed, &failed);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
