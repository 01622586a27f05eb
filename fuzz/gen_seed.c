/* gen_seed.c - writes a seed corpus of small valid images for fuzz_image
 * (usage: gen_seed DIR), covering every page kind, page-size and block shape. */
#include "image.h"
#include "snapfault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct gen {
    uint32_t ps;
    unsigned zero_every, absent_every; /* 0: never */
};

/* Deterministic page kinds and contents from the address. */
static int gen_page(void *ctx, uint64_t addr, void *buf)
{
    const struct gen *g = ctx;
    uint64_t n = addr / g->ps;
    if (g->absent_every && n % g->absent_every == 1)
        return 0;
    if (g->zero_every && n % g->zero_every == 0) {
        memset(buf, 0, g->ps);
        return 1;
    }
    for (uint32_t i = 0; i < g->ps; i++)
        ((uint8_t *)buf)[i] = (uint8_t)(n * 31 + i / 64);
    if (n % 5 == 4) /* some pages that do not compress */
        for (uint32_t i = 0; i < g->ps; i++)
            ((uint8_t *)buf)[i] = (uint8_t)((n * 2654435761u + i * 40503u) >> 7);
    return 1;
}

static const struct sf_image_meta names[3] = {
    {SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE, "[heap]", 0},
    {SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ, "/usr/lib/x86_64-linux-gnu/libc.so.6", 0x1000},
    {SF_IMAGE_PROT_KNOWN | SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE, "[anon:seed]", 0},
};

/* version 0: current; flags: SF_WRITE_*; the ranges named from names[] */
static int emit_v(const char *dir, const char *name, uint32_t ps, uint64_t parent,
                  const struct sf_image_range *r, size_t n, unsigned zero_every,
                  unsigned absent_every, uint32_t version, unsigned flags);

static int emit(const char *dir, const char *name, uint32_t ps, uint64_t parent,
                const struct sf_image_range *r, size_t n, unsigned zero_every, unsigned absent_every)
{
    return emit_v(dir, name, ps, parent, r, n, zero_every, absent_every, 0, 0);
}

static int emit_v(const char *dir, const char *name, uint32_t ps, uint64_t parent,
                  const struct sf_image_range *r, size_t n, unsigned zero_every,
                  unsigned absent_every, uint32_t version, unsigned flags)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror(path);
        return -1;
    }
    struct gen g = {ps, zero_every, absent_every};
    struct sf_image_src src = {.id = 0x5eed0000 + n, .parent_id = parent, .taken_ns = 1,
                               .page_size = ps, .ranges = r, .nranges = n,
                               .read_page = gen_page, .ctx = &g, .version = version,
                               .flags = flags, .meta = n <= 3 ? names : NULL};
    int rc = sf__image_write(fd, &src);
    close(fd);
    if (rc) {
        fprintf(stderr, "%s: %s\n", path, strerror(-rc));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *d = argv[1];
    static const struct sf_image_range two[] = {{0x1000, 4 * 512}, {0x8000, 3 * 512}};
    static const struct sf_image_range adjacent[] = {{0x400, 512}, {0x600, 1024}, {0xa00, 512}};
    static const struct sf_image_range one4k[] = {{0x10000, 3 * 4096}};
    static const struct sf_image_range zeros[] = {{0x200000, 5000 * 512}};
    static const struct sf_image_range high[] = {{0xfffffffffffffa00ull, 2 * 512}};
    int bad = 0;
    bad |= emit(d, "empty", 512, 0, NULL, 0, 0, 0);
    bad |= emit(d, "two-ranges", 512, 0, two, 2, 3, 0);
    bad |= emit(d, "incremental", 512, 7, two, 2, 3, 3);
    bad |= emit(d, "adjacent", 512, 0, adjacent, 3, 2, 0);
    bad |= emit(d, "page-4k", 4096, 0, one4k, 1, 2, 0);
    bad |= emit(d, "zeros-two-blocks", 512, 0, zeros, 1, 1, 0);
    bad |= emit(d, "high", 512, 9, high, 1, 0, 2);
    bad |= emit_v(d, "v1-two-ranges", 512, 0, two, 2, 3, 0, SF_IMG_VERSION_1, 0);
    bad |= emit_v(d, "v1-incremental", 512, 7, two, 2, 3, 3, SF_IMG_VERSION_1, 0);
    bad |= emit_v(d, "zstd-two-ranges", 512, 0, two, 2, 3, 0, 0, SF_WRITE_ZSTD);
    bad |= emit_v(d, "zstd-incremental", 512, 7, adjacent, 3, 4, 3, 0, SF_WRITE_ZSTD);
    bad |= emit_v(d, "zstd-page-4k", 4096, 0, one4k, 1, 0, 0, 0, SF_WRITE_ZSTD_LEVEL(19) | SF_WRITE_ZSTD);
    return bad ? 1 : 0;
}
