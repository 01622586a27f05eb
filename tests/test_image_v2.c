/* test_image_v2.c - what version 2 images add: zstd blocks and levels, page
 * maps (sf_image_read_map), mapping names and protection from
 * /proc/self/maps, and flattening a chain (sf_image_merge). */
#include "image_model.h"

static int case_zstd_blocks(void *pass)
{
    struct sf_image_range r[] = {{0x10000000, 900 * 4096}};
    static const unsigned levels[] = {0, 1, 19};
    size_t first_len = 0;
    for (size_t li = 0; li < 3; li++) {
        struct model m = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 12, .pct_zero = 10,
                          .version = SF_IMG_VERSION,
                          .flags = SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(levels[li])};
        int rc, fd = model_image(&m, &rc);
        EXPECT_EQ(rc, 0);
        size_t len;
        uint8_t *p = read_fd(fd, &len);
        struct v2_walk w;
        walk_v2(p, len, &w);
        EXPECT(w.blocks > 10 && w.zstd_blocks > 0, "%zu blocks, %zu zstd", w.blocks, w.zstd_blocks);
        EXPECT(w.zstd_stored < w.zstd_raw, "zstd blocks store %llu of %llu bytes",
              (unsigned long long)w.zstd_stored, (unsigned long long)w.zstd_raw);
        if (!li)
            first_len = len;
        EXPECT(len < first_len + first_len / 8, "level %u: %zu bytes", levels[li], len);
        free(p);
        check_image(fd, &m, 200);
        close(fd);
    }
    /* incompressible data is stored raw even when asked to compress */
    struct model rnd = {.ps = 512, .ranges = r, .nranges = 1, .seed = 5, .version = SF_IMG_VERSION,
                        .flags = SF_WRITE_ZSTD};
    r[0].len = 64 * 512;
    int rc, fd = model_image(&rnd, &rc);
    EXPECT_EQ(rc, 0);
    check_image(fd, &rnd, 50);
    close(fd);

    /* bad flags: unknown bits, a level past the maximum, compression in v1 */
    struct model bad = {.ps = 4096, .ranges = r, .nranges = 1, .seed = 5, .version = SF_IMG_VERSION};
    static const unsigned flags[] = {1u << 1, 1u << 20, SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(20),
                                     SF_WRITE_ZSTD_LEVEL(31)};
    for (size_t i = 0; i < 4; i++) {
        bad.flags = flags[i];
        fd = model_image(&bad, &rc);
        EXPECT(rc == -EINVAL, "flags %#x: %d", flags[i], rc);
        EXPECT_EQ(lseek(fd, 0, SEEK_END), 0);
        close(fd);
    }
    bad.version = SF_IMG_VERSION_1;
    struct sf_image_src src = model_src(&bad);
    src.flags = SF_WRITE_ZSTD;
    fd = new_memfd();
    EXPECT_EQ(sf__image_write(fd, &src), -EINVAL);
    close(fd);
    return 0;
}

/* sf_image_read_map: kinds per page, held bytes copied, absent bytes left. */
static int case_read_map(void *pass)
{
    static const uint32_t sizes[] = {512, 4096};
    for (size_t si = 0; si < 2; si++) {
        uint32_t ps = sizes[si];
        struct sf_image_range r[] = {{ps * 16, ps * 300}, {ps * 400, ps * 7}};
        struct model m = {.ps = ps, .ranges = r, .nranges = 2, .seed = 31 + si, .id = 5, .parent_id = 4,
                          .pct_zero = 20, .pct_absent = 40};
        int rc, fd = model_image(&m, &rc);
        EXPECT_EQ(rc, 0);
        sf_image *img;
        EXPECT_EQ(sf_image_open(&img, fd), 0);
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
            EXPECT(r1 == e, "%#llx+%zu: %d", (unsigned long long)a, len, r1);
            if (r1)
                continue;
            uint64_t base = a & ~(uint64_t)(ps - 1);
            for (uint64_t pa = base, i = 0; pa < a + len; pa += ps, i++) {
                int k = model_kind(&m, pa);
                int want = k == K_DATA ? SF_IMAGE_PAGE_STORED : k == K_ZEROFILL ? SF_IMAGE_PAGE_ZERO
                                                                               : SF_IMAGE_PAGE_ABSENT;
                EXPECT(map[i] == want, "page %#llx kind %d, expected %d", (unsigned long long)pa, map[i], want);
                if (k == K_DATA)
                    model_fill(&m, pa, page);
                else
                    memset(page, k == K_ZEROFILL ? 0 : 0xc3, ps);
                uint64_t from = pa > a ? pa : a, to = pa + ps < a + len ? pa + ps : a + len;
                EXPECT(!memcmp(got + (from - a), page + (from - pa), to - from), "page %#llx bytes",
                      (unsigned long long)pa);
            }
            /* the map alone */
            uint8_t map2[320];
            EXPECT_EQ(sf_image_read_map(img, a, NULL, len, map2), 0);
            EXPECT(!memcmp(map, map2, (a + len - 1) / ps - a / ps + 1), "map without buffer");
        }
        EXPECT_EQ(sf_image_read_map(img, r[0].addr, got, 0, NULL), 0);
        EXPECT_EQ(sf_image_read_map(img, r[0].addr, got, 1, NULL), -EINVAL);
        EXPECT_EQ(sf_image_read_map(NULL, r[0].addr, got, 1, map), -EINVAL);
        EXPECT_EQ(sf_image_read_map(img, UINT64_MAX, got, 2, map), -EINVAL);
        EXPECT_EQ(sf_image_read_map(img, r[1].addr - 1, got, 2, map), -ENOENT);
        free(got);
        free(page);
        sf_image_close(img);
        close(fd);
    }
    return 0;
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

static int case_names_from_maps(void *pass)
{
    const size_t ps = 4096;
    if (sysconf(_SC_PAGESIZE) != (long)ps)
        SKIP("the layout below assumes 4 KiB pages");
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
    EXPECT_EQ(sf__image_write(fd, &src), 0);
    sf_image *img;
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    if (img) {
        sf_image_info info;
        sf_image_get_info(img, &info);
        EXPECT_EQ(info.version, SF_IMG_VERSION);
        EXPECT_EQ(info.ranges, 5);
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
            EXPECT_EQ(sf_image_mapping_get(img, i, &mp), 0);
            EXPECT(mp.addr == (uintptr_t)base + want[i].first * ps && mp.len == want[i].pages * ps,
                  "range %zu at +%#llx len %#llx", i, (unsigned long long)(mp.addr - (uintptr_t)base),
                  (unsigned long long)mp.len);
            EXPECT(mp.prot == (want[i].prot | SF_IMAGE_PROT_KNOWN), "range %zu prot %#x", i, mp.prot);
            if (i == 3) {
                EXPECT(!strcmp(mp.name, path), "file range named '%s', expected '%s'", mp.name, path);
                EXPECT(mp.offset == 3 * ps, "file offset %#llx", (unsigned long long)mp.offset);
            } else if (i == 4 && named) {
                EXPECT(!strcmp(mp.name, "[anon:sfname]"), "anon range named '%s'", mp.name);
            } else if (i != 4) {
                EXPECT(mp.name[0] == 0 && mp.offset == 0, "range %zu named '%s'", i, mp.name);
            }
        }
        uint8_t page[4096];
        EXPECT_EQ(sf_image_read(img, (uintptr_t)base + 6 * ps, page, ps), 0);
        EXPECT(page[0] == 'f' + 4 && page[4095] == 'f' + 4, "file page content");
        EXPECT_EQ(sf_image_verify(img), 0);
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
    EXPECT_EQ(sf__image_write(fd, &src), 0);
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    if (img) {
        sf_image_mapping mp;
        EXPECT_EQ(sf_image_mapping_get(img, 1, &mp), 0);
        EXPECT(mp.addr == (uintptr_t)base + 4 * ps && mp.prot == 0 && !mp.name[0], "hole part");
        sf_image_close(img);
    }
    close(fd);
    /* version 1 images know neither */
    src.version = SF_IMG_VERSION_1;
    fd = new_memfd();
    EXPECT_EQ(sf__image_write(fd, &src), 0);
    EXPECT_EQ(sf_image_open(&img, fd), 0);
    if (img) {
        sf_image_mapping mp;
        EXPECT_EQ(sf_image_mapping_get(img, 0, &mp), 0);
        EXPECT(mp.len == 2 * ps && mp.prot == 0 && !mp.name[0] && !mp.offset, "v1 mapping");
        sf_image_close(img);
    }
    close(fd);
    close(ffd);
    unlink(path);
    munmap(base, 8 * ps);
    return 0;
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

static int case_merge(void *pass)
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
        EXPECT_EQ(sf__image_write(fds[k], &src), 0);
        EXPECT_EQ(sf_image_open(&imgs[k], fds[k]), 0);
    }
    for (int zi = 0; zi < 2; zi++) {
        int out = new_memfd();
        EXPECT_EQ(sf_image_merge((const sf_image *const *)imgs, 3, out, zi ? SF_WRITE_ZSTD : 0), 0);
        sf_image *mg;
        EXPECT_EQ(sf_image_open(&mg, out), 0);
        if (!mg)
            break;
        sf_image_info info;
        sf_image_get_info(mg, &info);
        EXPECT(info.id == 12 && info.parent_id == 0 && info.taken_ns == 99 && info.ranges == 2 &&
                  info.pages_absent == 0,
              "merged header");
        EXPECT_EQ(sf_image_verify(mg), 0);
        sf_image_mapping mp;
        EXPECT_EQ(sf_image_mapping_get(mg, 1, &mp), 0);
        EXPECT(!strcmp(mp.name, "/lib/x.so") && mp.offset == 0x3000 && mp.prot == meta[1].prot, "merged names");
        uint8_t got[4096], want[4096];
        uint64_t zero = 0;
        for (size_t i = 0; i < 2; i++)
            for (uint64_t a = r[i].addr; a < r[i].addr + r[i].len; a += ps) {
                int kd = chain_kind_fill(models, 3, a, want);
                zero += kd == K_ZEROFILL;
                EXPECT_EQ(sf_image_read(mg, a, got, ps), 0);
                EXPECT(!memcmp(got, want, ps), "merged page %#llx", (unsigned long long)a);
            }
        EXPECT_EQ(info.pages_zero, zero);
        if (zi) {
            size_t len;
            uint8_t *p = read_fd(out, &len);
            struct v2_walk w;
            walk_v2(p, len, &w);
            EXPECT(w.zstd_blocks > 0, "merge --zstd wrote no zstd block");
            free(p);
        }
        sf_image_close(mg);
        close(out);
    }
    /* broken chains */
    int out = new_memfd();
    const sf_image *skip[2] = {imgs[0], imgs[2]};
    EXPECT_EQ(sf_image_merge(skip, 2, out, 0), -EINVAL);       /* ids do not follow */
    const sf_image *nofull[2] = {imgs[0], imgs[1]};
    EXPECT_EQ(sf_image_merge(nofull, 2, out, 0), -EINVAL);     /* does not end in a full image */
    EXPECT_EQ(sf_image_merge(NULL, 1, out, 0), -EINVAL);
    EXPECT_EQ(sf_image_merge((const sf_image *const *)imgs, 0, out, 0), -EINVAL);
    EXPECT_EQ(sf_image_merge((const sf_image *const *)imgs, 3, out, 1u << 3), -EINVAL);
    EXPECT_EQ(lseek(out, 0, SEEK_END), 0);
    /* a full image alone flattens to itself */
    EXPECT_EQ(sf_image_merge((const sf_image *const *)&imgs[2], 1, out, 0), 0);
    close(out);
    /* a parent lacking a range its child needs */
    struct sf_image_range rp[] = {{0x10000000, 700 * 4096}};
    struct model small = {.ps = ps, .ranges = rp, .nranges = 1, .seed = 1, .id = 11,
                          .version = SF_IMG_VERSION};
    struct sf_image_src src = model_src(&small);
    int sfd = new_memfd();
    EXPECT_EQ(sf__image_write(sfd, &src), 0);
    sf_image *simg;
    EXPECT_EQ(sf_image_open(&simg, sfd), 0);
    const sf_image *lack[2] = {imgs[0], simg};
    out = new_memfd();
    EXPECT_EQ(sf_image_merge(lack, 2, out, 0), -ENOENT);
    close(out);
    sf_image_close(simg);
    close(sfd);
    for (int k = 0; k < 3; k++) {
        sf_image_close(imgs[k]);
        close(fds[k]);
    }
    return 0;
}

/* Run once. */
static const struct h_case once[] = {
    {"zstd: compressed blocks, levels, raw fallback, bad flags", case_zstd_blocks},
    {"read_map: page kinds, held bytes, absent bytes untouched", case_read_map},
    {"names and protection from /proc/self/maps", case_names_from_maps},
    {"merge: a chain flattens to the nearest pages", case_merge},
};

int main(void)
{
    return image_main(NULL, 0, once, H_NCASES(once));
}
