/* test_image.c - the snapshot image format's writer and reader: round trips
 * of every page kind and size, pipes, block limits, writer errors, API
 * arguments, concurrent readers, and the bytes against the documented layout. */
#include "image_model.h"

static int case_roundtrip_ranges(void *pass)
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
    EXPECT_EQ(rc, 0);
    check_image(fd, &m, 2000);
    close(fd);
    return 0;
}

static int case_roundtrip_page_sizes(void *pass)
{
    static const uint32_t sizes[] = {512, 4096, 16384, 65536, 1u << 21};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        uint64_t ps = sizes[i];
        struct sf_image_range r[] = {{ps * 3, ps * 4}, {ps * 1000, ps * 9}};
        struct model m = {.ps = sizes[i], .ranges = r, .nranges = 2, .seed = 7 + i,
                          .id = i + 1, .pct_zero = 30};
        int rc, fd = model_image(&m, &rc);
        EXPECT_EQ(rc, 0);
        check_image(fd, &m, 200);
        close(fd);
    }
    return 0;
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

static int case_block_limits(void *pass)
{
    /* mostly zero: blocks end at the page cap */
    struct sf_image_range r1[] = {{0x40000000, 10000ull * 4096}};
    struct model m1 = {.ps = 4096, .ranges = r1, .nranges = 1, .seed = 3, .pct_zero = 99,
                       .version = SF_IMG_VERSION_1};
    int rc, fd = model_image(&m1, &rc);
    EXPECT_EQ(rc, 0);
    size_t len;
    uint8_t *p = read_fd(fd, &len);
    uint32_t maxp, maxd;
    size_t nb = walk_blocks(p, len, &maxp, &maxd);
    EXPECT_EQ(nb, 3);
    EXPECT_EQ(maxp, SF_IMG_MAX_BLOCK_PAGES);
    free(p);
    check_image(fd, &m1, 300);
    close(fd);

    /* all data: blocks end at the data cap (64 pages of 4 KiB) */
    struct model m2 = {.ps = 4096, .ranges = r1, .nranges = 1, .seed = 4, .version = SF_IMG_VERSION_1};
    r1[0].len = 600 * 4096;
    fd = model_image(&m2, &rc);
    EXPECT_EQ(rc, 0);
    p = read_fd(fd, &len);
    nb = walk_blocks(p, len, &maxp, &maxd);
    EXPECT_EQ(nb, (600 + SF_IMG_WRITE_BLOCK_DATA / 4096 - 1) / (SF_IMG_WRITE_BLOCK_DATA / 4096));
    EXPECT_EQ(maxd, SF_IMG_WRITE_BLOCK_DATA / 4096);
    EXPECT(len < 600 * 4096 + 4096, "image of %zu bytes", len);
    free(p);
    check_image(fd, &m2, 300);
    close(fd);
    return 0;
}

static int case_zero_pages_elided(void *pass)
{
    struct sf_image_range r[] = {{0x1000000, 512 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 5, .pct_zero = 100};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    size_t len;
    free(read_fd(fd, &len));
    /* kinds bytes and headers only: no page data */
    EXPECT(len < 512 + 4 * 512, "all-zero image is %zu bytes", len);
    check_image(fd, &m, 100);
    close(fd);
    return 0;
}

static int case_incremental(void *pass)
{
    struct sf_image_range r[] = {{0x5000, 40 * 4096}, {0x100000, 300 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 9, .id = 22,
                      .parent_id = 21, .pct_zero = 10, .pct_absent = 50};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    check_image(fd, &m, 1000);
    close(fd);
    return 0;
}

static int case_zero_ranges(void *pass)
{
    struct model m = {.ps = 4096, .seed = 1, .id = 5};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    size_t len;
    free(read_fd(fd, &len));
    EXPECT_EQ(len, SF_IMG_HDR_SIZE + 8 + SF_IMG_TRAILER_SIZE);
    check_image(fd, &m, 0);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    uint8_t b[16];
    EXPECT_EQ(sf_image_read(img, 0, b, 1), -ENOENT);
    EXPECT_EQ(sf_image_read(img, 0x1000, b, 16), -ENOENT);
    sf_image_close(img);
    close(fd);
    return 0;
}

static int case_gaps(void *pass)
{
    struct sf_image_range r[] = {{0x10000, 2 * 4096}, {0x20000, 2 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 11};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    uint8_t b[3 * 4096];
    EXPECT_EQ(sf_image_read(img, 0x10000 - 1, b, 1), -ENOENT);
    EXPECT_EQ(sf_image_read(img, 0x10000 - 1, b, 2), -ENOENT);
    EXPECT_EQ(sf_image_read(img, 0x12000, b, 1), -ENOENT);
    EXPECT_EQ(sf_image_read(img, 0x11fff, b, 2), -ENOENT);
    EXPECT_EQ(sf_image_read(img, 0x10000, b, 3 * 4096), -ENOENT);
    EXPECT_EQ(sf_image_read(img, 0x21fff, b, 1), 0);
    EXPECT_EQ(sf_image_read(img, 0x21fff, b, 2), -ENOENT);
    EXPECT_EQ(sf_image_read(img, UINT64_MAX, b, 1), -ENOENT);
    EXPECT_EQ(sf_image_read(img, UINT64_MAX, b, 2), -EINVAL); /* wraps */
    EXPECT_EQ(sf_image_read(img, 0x10000, NULL, 0), 0);
    sf_image_close(img);
    close(fd);
    return 0;
}

static int case_trailing_bytes(void *pass)
{
    struct sf_image_range r[] = {{0x10000, 9 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 12, .pct_zero = 30};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(write(fd, "garbage after the trailer", 25), 25);
    check_image(fd, &m, 100);
    close(fd);
    return 0;
}

static int case_file_shrinks(void *pass)
{
    struct sf_image_range r[] = {{0x10000, 600 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 14, .pct_zero = 10};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    if (!img)
        return 0;
    size_t len;
    free(read_fd(fd, &len));
    /* open validated the file; now it loses its tail (another process
     * truncating it): reads past the new end must fail, not loop or crash */
    if (ftruncate(fd, (off_t)(len / 2)))
        die("ftruncate");
    uint8_t page[4096];
    EXPECT_EQ(sf_image_verify(img), -EBADMSG);
    EXPECT_EQ(sf_image_read(img, 0x10000 + 599 * 4096, page, 4096), -EBADMSG);
    EXPECT_EQ(sf_image_read(img, 0x10000, page, 4096), 0);
    sf_image_close(img);
    close(fd);
    return 0;
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
    EXPECT_EQ(pw.rc, 0);
    if (signals)
        EXPECT(atomic_load(&signals_seen) >= SIG_READS, "only %u signals",
              atomic_load(&signals_seen));
    check_image(out, &m, 300);
    close(out);
    signal(SIGUSR1, SIG_DFL);
}

static int case_pipe(void *pass) { pipe_case(false, false); return 0; }
static int case_pipe_signals(void *pass) { pipe_case(false, true); return 0; }
static int case_pipe_nonblock(void *pass) { pipe_case(true, false); return 0; }

/* --- writer errors ------------------------------------------------------- */

static off_t fd_size(int fd)
{
    return lseek(fd, 0, SEEK_END);
}

static int case_writer_errors(void *pass)
{
    struct sf_image_range r[] = {{0x10000, 40 * 4096}, {0x80000, 10 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 41, .pct_zero = 20,
                      .fail_addr = 0x80000 + 3 * 4096, .fail_err = -EIO};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, -EIO);
    EXPECT(fd_size(fd) > 0, "nothing written before the failure");
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), -EBADMSG); /* the partial image is refused */
    close(fd);

    m.fail_err = -ENOMEM;
    m.fail_addr = 0x10000;
    fd = model_image(&m, &rc);
    EXPECT_EQ(rc, -ENOMEM);
    close(fd);
    m.fail_err = 0;

    struct sf_image_src src = model_src(&m);
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        die("pipe");
    close(p[1]);
    EXPECT_EQ(sf__image_write(p[1], &src), -EBADF); /* closed fd */
    EXPECT_EQ(sf__image_write(-1, &src), -EBADF);
    close(p[0]);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    if (pipe2(p, O_CLOEXEC))
        die("pipe");
    close(p[0]);
    EXPECT_EQ(sf__image_write(p[1], &src), -EPIPE);
    close(p[1]);
    signal(SIGPIPE, old);
    int ro = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    EXPECT_EQ(sf__image_write(ro, &src), -EBADF);
    close(ro);
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full >= 0) {
        EXPECT_EQ(sf__image_write(full, &src), -ENOSPC);
        close(full);
    } else {
        printf("    (no /dev/full: -ENOSPC not checked)\n");
    }

    /* read_page contract violations */
    m.bogus = 2;
    fd = model_image(&m, &rc);
    EXPECT_EQ(rc, -EINVAL);
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
    EXPECT_EQ(sf__image_write(fd, &s2), -EINVAL);
    close(fd);
    return 0;
}

static int case_writer_bad_sources(void *pass)
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
        EXPECT(rc == -EINVAL, "%s: %d", t[i].what, rc);
        EXPECT(fd_size(fd) == 0, "%s: bytes written before the check", t[i].what);
        close(fd);
    }
    struct sf_image_range one = {0x10000, 4096};
    struct model m = {.ps = 4096, .ranges = &one, .nranges = 1, .seed = 1};
    struct sf_image_src src = model_src(&m);
    int fd = new_memfd();
    EXPECT_EQ(sf__image_write(fd, NULL), -EINVAL);
    src.ranges = NULL;
    EXPECT_EQ(sf__image_write(fd, &src), -EINVAL);
    src = model_src(&m);
    src.read_page = NULL;
    EXPECT_EQ(sf__image_write(fd, &src), -EINVAL);
    src.nranges = SF_IMG_MAX_RANGES + 1ull;
    EXPECT_EQ(sf__image_write(fd, &src), -EINVAL);
    EXPECT_EQ(fd_size(fd), 0);
    close(fd);
    return 0;
}

/* --- API ----------------------------------------------------------------- */

static int case_api_args(void *pass)
{
    struct sf_image_range r[] = {{0x10000, 4 * 4096}, {0x20000, 4096}, {0x30000, 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 3, .seed = 51};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    sf_image *img = (sf_image *)&m;
    EXPECT_EQ(sf_image_open(NULL, fd), -EINVAL);
    EXPECT_EQ(sf_image_open(&img, -1), -EBADF);
    EXPECT(img == NULL, "out not cleared on failure");
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        die("pipe");
    EXPECT_EQ(sf_image_open(&img, p[0]), -ESPIPE);
    close(p[0]);
    close(p[1]);
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    sf_image_info info;
    EXPECT_EQ(sf_image_get_info(NULL, &info), -EINVAL);
    EXPECT_EQ(sf_image_get_info(img, NULL), -EINVAL);
    EXPECT_EQ(sf_image_ranges(NULL, NULL, NULL), -EINVAL);
    struct range_list rl = {.stop_after = 2};
    EXPECT_EQ(sf_image_ranges(img, collect_range, &rl), 2);
    EXPECT_EQ(rl.n, 2);
    uint8_t b[8];
    EXPECT_EQ(sf_image_read(NULL, 0x10000, b, 8), -EINVAL);
    EXPECT_EQ(sf_image_read(img, 0x10000, NULL, 8), -EINVAL);
    EXPECT_EQ(sf_image_verify(NULL), -EINVAL);
    sf_image_close(img);
    sf_image_close(NULL);
    /* the file offset is irrelevant: reads use pread from offset 0 */
    lseek(fd, 100, SEEK_SET);
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    sf_image_close(img);
    close(fd);
    return 0;
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

static int case_concurrent_readers(void *pass)
{
    struct sf_image_range r[] = {{0x10000000, 1000 * 4096}, {0x20000000, 300 * 4096}};
    struct model m = {.ps = 4096, .ranges = r, .nranges = 2, .seed = 61, .id = 9,
                      .parent_id = 8, .pct_zero = 20, .pct_absent = 10};
    int rc, fd = model_image(&m, &rc);
    EXPECT_EQ(rc, 0);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    if (!img)
        return 0;
    pthread_t th[4];
    struct reader_ctx ctx[4];
    for (int i = 0; i < 4; i++) {
        ctx[i] = (struct reader_ctx){img, &m, (uint64_t)i * 1000 + 1, 0};
        if (pthread_create(&th[i], NULL, reader_main, &ctx[i]))
            die("pthread_create");
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        EXPECT(ctx[i].errors == 0, "reader %d: %d errors", i, ctx[i].errors);
    }
    sf_image_close(img);
    close(fd);
    return 0;
}

/* The writer's bytes equal an independent encoding of the documented
 * layout and block policy: the spec and the code agree. */
static int case_conformance(void *pass)
{
    static const uint32_t sizes[] = {512, 4096};
    for (size_t si = 0; si < 2; si++) {
        uint32_t ps = sizes[si];
        struct sf_image_range r[] = {{ps * 8, ps * 10}, {ps * 40, ps * 3000}, {ps * 5000, ps * 5000}};
        struct model m = {.ps = ps, .ranges = r, .nranges = 3, .seed = 71, .id = 0x1d1d1d1d,
                          .parent_id = 4, .taken_ns = -5, .pct_zero = 30, .pct_absent = 20,
                          .version = SF_IMG_VERSION_1};
        int rc, fd = model_image(&m, &rc);
        EXPECT_EQ(rc, 0);
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
        EXPECT(b.len == len, "ps %u: writer %zu bytes, encoder %zu", ps, len, b.len);
        EXPECT(b.len == len && !memcmp(b.p, got, len), "ps %u: bytes differ", ps);
        free(kinds);
        free(data);
        free(pl);
        free(got);
        rb_free(&b);
    }
    return 0;
}

/* Run once per format pass (version 1, version 2, version 2 + zstd). */
static const struct h_case per_format[] = {
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
    {"concurrent readers", case_concurrent_readers},
};

/* Run once. */
static const struct h_case once[] = {
    {"blocks end at the page cap and at the data cap", case_block_limits},
    {"writer errors: -EIO from read_page, -EBADF, -EPIPE, -ENOSPC", case_writer_errors},
    {"writer rejects bad sources before writing", case_writer_bad_sources},
    {"API argument checks", case_api_args},
    {"writer bytes match the documented layout", case_conformance},
};

int main(void)
{
    return image_main(per_format, H_NCASES(per_format), once, H_NCASES(once));
}
