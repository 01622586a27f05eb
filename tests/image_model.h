/* image_model.h - what the image tests share: a synthetic memory model
 * whose images are checked against it (check_image), an independent encoder
 * of the documented layout for hostile images, and the fixture every case
 * runs in (one pass of the per-format cases for each format). */
#ifndef SF_TEST_IMAGE_MODEL_H
#define SF_TEST_IMAGE_MODEL_H
#include "image.h"
#ifndef SNAPFAULT_BUILD
#define SNAPFAULT_BUILD 1
#endif
#include "snapfault.h"
#include "harness.h"

#include <dirent.h>
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

__attribute__((unused)) static void die(const char *what)
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

__attribute__((unused)) static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

__attribute__((unused)) static int model_kind(const struct model *m, uint64_t addr)
{
    unsigned r = (unsigned)(mix64(m->seed ^ (addr * 0x9e3779b97f4a7c15ull)) % 100);
    if (r < m->pct_zero)
        return K_ZEROFILL;
    if (m->parent_id && r < m->pct_zero + m->pct_absent)
        return K_ABSENT;
    return K_DATA;
}

__attribute__((unused)) static void model_fill(const struct model *m, uint64_t addr, uint8_t *buf)
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

__attribute__((unused)) static int model_read_page(void *ctx, uint64_t addr, void *buf)
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

__attribute__((unused)) static uint32_t model_version(const struct model *m) { return m->version ? m->version : g_version; }

__attribute__((unused)) static struct sf_image_src model_src(struct model *m)
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

__attribute__((unused)) static bool model_in_range(const struct model *m, uint64_t addr)
{
    for (size_t i = 0; i < m->nranges; i++)
        if (addr >= m->ranges[i].addr && addr - m->ranges[i].addr < m->ranges[i].len)
            return true;
    return false;
}

/* What sf_image_read must give for [addr, addr+len): -ENOENT if any byte is
 * outside the ranges, else -ENODATA if any page is absent, else 0 and the
 * bytes in want. */
__attribute__((unused)) static int model_expect(const struct model *m, uint64_t addr, size_t len, uint8_t *want)
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

__attribute__((unused)) static int new_memfd(void)
{
    int fd = memfd_create("test_image", MFD_CLOEXEC);
    if (fd < 0)
        die("memfd_create");
    return fd;
}

/* Writes the model's image into a fresh memfd; *rc gets the writer's result. */
__attribute__((unused)) static int model_image(struct model *m, int *rc)
{
    int fd = new_memfd();
    struct sf_image_src src = model_src(m);
    *rc = sf__image_write(fd, &src);
    return fd;
}

__attribute__((unused)) static void *read_fd(int fd, size_t *len)
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

__attribute__((unused)) static int collect_range(void *addr, size_t len, void *arg)
{
    struct range_list *l = arg;
    if (l->n < 64)
        l->r[l->n] = (struct sf_image_range){(uint64_t)(uintptr_t)addr, len};
    l->n++;
    return l->stop_after && l->n == l->stop_after;
}

/* Everything a reader can say about an image must agree with the model. */
__attribute__((unused)) static void check_image(int fd, const struct model *m, unsigned random_spans)
{
    sf_image *img;
    int r = sf_image_open(&img, fd);
    EXPECT_EQ(r, 0);
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
    EXPECT_EQ(sf_image_get_info(img, &info), 0);
    EXPECT_EQ(info.version, model_version(m));
    EXPECT_EQ(info.page_size, m->ps);
    EXPECT(info.id == m->id && info.parent_id == m->parent_id && info.taken_ns == m->taken_ns);
    EXPECT_EQ(info.ranges, m->nranges);
    EXPECT(info.bytes == bytes, "bytes %llu", (unsigned long long)info.bytes);
    EXPECT_EQ(info.pages_stored, data);
    EXPECT_EQ(info.pages_zero, zero);
    EXPECT_EQ(info.pages_absent, absent);

    struct range_list rl = {.n = 0};
    EXPECT_EQ(sf_image_ranges(img, collect_range, &rl), m->nranges);
    EXPECT_EQ(rl.n, m->nranges);
    for (size_t i = 0; i < rl.n && i < 64; i++)
        EXPECT(rl.r[i].addr == m->ranges[i].addr && rl.r[i].len == m->ranges[i].len, "range %zu", i);
    EXPECT_EQ(sf_image_ranges(img, NULL, NULL), m->nranges);
    EXPECT_EQ(sf_image_verify(img), 0);

    size_t ps = m->ps;
    uint8_t *got = malloc(4 * ps), *want = malloc(4 * ps);
    /* every page, one read each */
    for (size_t i = 0; i < m->nranges; i++)
        for (uint64_t a = m->ranges[i].addr; a - m->ranges[i].addr < m->ranges[i].len; a += ps) {
            int e = model_expect(m, a, ps, want);
            memset(got, 0x5a, ps);
            r = sf_image_read(img, a, got, ps);
            EXPECT(r == e, "page %#llx: %d, expected %d", (unsigned long long)a, r, e);
            EXPECT(r || !memcmp(got, want, ps), "page %#llx content", (unsigned long long)a);
        }
    /* whole ranges in one call, crossing blocks */
    for (size_t i = 0; i < m->nranges; i++) {
        size_t len = m->ranges[i].len > (16u << 20) ? (16u << 20) : (size_t)m->ranges[i].len;
        uint8_t *g = malloc(len), *w = malloc(len);
        int e = model_expect(m, m->ranges[i].addr, len, w);
        r = sf_image_read(img, m->ranges[i].addr, g, len);
        EXPECT(r == e, "range %zu: %d, expected %d", i, r, e);
        EXPECT(r || !memcmp(g, w, len), "range %zu content", i);
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
        EXPECT(r == e, "span %#llx+%zu: %d, expected %d", (unsigned long long)a, len, r, e);
        EXPECT(r || !memcmp(got, want, len), "span %#llx+%zu content", (unsigned long long)a, len);
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

__attribute__((unused)) static uint8_t *rb_grow(struct rb *b, size_t n)
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

__attribute__((unused)) static void rb_header_ex(struct rb *b, uint32_t version, uint32_t ps, uint64_t parent,
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

__attribute__((unused)) static void rb_header(struct rb *b, uint32_t ps, uint64_t parent, uint64_t nranges, uint64_t npages)
{
    rb_header_ex(b, SF_IMG_VERSION_1, ps, parent, nranges, npages, 0);
}

__attribute__((unused)) static void rb_table(struct rb *b, const struct sf_image_range *r, size_t n)
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

__attribute__((unused)) static void rb_block_raw(struct rb *b, uint64_t addr, uint32_t npages, uint32_t present,
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
__attribute__((unused)) static void rb_block_claim(struct rb *b, uint64_t addr, const char *kinds, uint8_t fill,
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

__attribute__((unused)) static void rb_block(struct rb *b, uint64_t addr, const char *kinds, uint8_t fill)
{
    rb_block_claim(b, addr, kinds, fill, NULL);
}

__attribute__((unused)) static void rb_trailer_raw(struct rb *b, uint64_t nblocks, uint64_t present, uint64_t zero,
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

__attribute__((unused)) static void rb_trailer(struct rb *b)
{
    rb_trailer_raw(b, b->nblocks, b->present, b->zero, b->absent, b->len + SF_IMG_TRAILER_SIZE, 0);
}

__attribute__((unused)) static int rb_fd(const struct rb *b)
{
    int fd = new_memfd();
    if (b->len && pwrite(fd, b->p, b->len, 0) != (ssize_t)b->len)
        die("pwrite");
    return fd;
}

/* open result; if the open succeeds, *verify gets sf_image_verify's */
__attribute__((unused)) static int rb_open(const struct rb *b, int *verify)
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

__attribute__((unused)) static void rb_free(struct rb *b) { free(b->p); memset(b, 0, sizeof *b); }

/* The valid base that hostile variants start from: two ranges, two blocks. */
static const struct sf_image_range base_ranges[2] = {{0x100000, 3 * 4096}, {0x200000, 2 * 4096}};

__attribute__((unused)) static void rb_base_prefix(struct rb *b)
{
    rb_header(b, 4096, 0, 2, 5);
    rb_table(b, base_ranges, 2);
}

/* ------------------------------------------------------------------------ */
/* Version 2 block walk                                                     */
/* ------------------------------------------------------------------------ */

/* Walks a version 2 image's blocks: counts and the stored bytes of each
 * encoding. */
struct v2_walk {
    size_t blocks, zstd_blocks;
    uint64_t raw_bytes, zstd_stored, zstd_raw;
    size_t first_zstd_off; /* file offset of the first zstd block header, or 0 */
};

__attribute__((unused)) static void walk_v2(const uint8_t *p, size_t len, struct v2_walk *w)
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

/* ------------------------------------------------------------------------ */
/* The fixture                                                              */
/* ------------------------------------------------------------------------ */

/* The format model_src writes unless a model says otherwise: the cases
 * written for every format run once per pass (version 1, version 2,
 * version 2 compressed); the others once, under the version 2 pass. */
#define IMG_MAX_FD 1024
struct image_pass {
    const char *name;
    uint32_t version;
    unsigned flags;
    uint8_t fds[IMG_MAX_FD / 8];         /* open at set-up */
    struct sigaction usr1, pipe;         /* dispositions at set-up */
};

/* The descriptors this process has open, as a bitmap. */
__attribute__((unused)) static void open_fds(uint8_t *bits)
{
    memset(bits, 0, IMG_MAX_FD / 8);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        die("opendir /proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        int fd = atoi(e->d_name);
        if (fd != dirfd(d) && fd < IMG_MAX_FD)
            bits[fd / 8] |= (uint8_t)(1u << (fd % 8));
    }
    closedir(d);
}

__attribute__((unused)) static int image_setup(void *ctx)
{
    struct image_pass *p = ctx;
    g_version = p->version;
    g_flags = p->flags;
    open_fds(p->fds);
    sigaction(SIGUSR1, NULL, &p->usr1);
    sigaction(SIGPIPE, NULL, &p->pipe);
    return 0;
}

/* Undoes what a case may leave behind when it fails half-way (its early
 * returns skip the closes): descriptors, the signal dispositions the pipe
 * and writer cases change.  A descriptor left open fails the case. */
__attribute__((unused)) static int image_teardown(void *ctx)
{
    struct image_pass *p = ctx;
    uint8_t now[IMG_MAX_FD / 8];
    open_fds(now);
    int left = 0, first = -1;
    for (int fd = 0; fd < IMG_MAX_FD; fd++)
        if (now[fd / 8] & ~p->fds[fd / 8] & (1u << (fd % 8))) {
            if (first < 0)
                first = fd;
            left++;
            close(fd);
        }
    sigaction(SIGUSR1, &p->usr1, NULL);
    sigaction(SIGPIPE, &p->pipe, NULL);
    g_version = SF_IMG_VERSION;
    g_flags = 0;
    if (left) {
        snprintf(h_msg, sizeof h_msg, "the case left %d descriptor%s open (fd %d%s)", left,
                 left == 1 ? "" : "s", first, left > 1 ? ", ..." : "");
        return 1;
    }
    return 0;
}

/* Runs the per-format cases under each format's pass, then the others
 * under the version 2 pass; the exit status of the test. */
__attribute__((unused)) static int image_main(const struct h_case *per_format, size_t nper,
                                              const struct h_case *once, size_t nonce)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    static struct image_pass passes[] = {
        {.name = "image v1", .version = SF_IMG_VERSION_1},
        {.name = "image v2", .version = SF_IMG_VERSION},
        {.name = "image v2+zstd", .version = SF_IMG_VERSION, .flags = SF_WRITE_ZSTD},
    };
    for (size_t i = 0; i < sizeof passes / sizeof *passes; i++) {
        struct h_fixture fx = {passes[i].name, image_setup, image_teardown, &passes[i]};
        h_run_cases(&fx, per_format, nper);
    }
    struct h_fixture fx = {passes[1].name, image_setup, image_teardown, &passes[1]};
    h_run_cases(&fx, once, nonce);
    return h_finish();
}

#endif
