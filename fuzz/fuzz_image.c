/* fuzz_image.c - libFuzzer target for the image reader: whatever the bytes,
 * open/info/ranges/read/verify must fail cleanly or agree with each other. */
#include "snapfault.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A trap, not an assert: the property must hold in every build mode and
 * libFuzzer records the input that broke it. */
#define PROPERTY(c)                                                                       \
    do {                                                                                  \
        if (!(c))                                                                         \
            __builtin_trap();                                                             \
    } while (0)

#define MAX_PROBE 65536u

struct seen {
    uint64_t addr[8], len[8];
    size_t n;
};

static int keep_range(void *addr, size_t len, void *arg)
{
    struct seen *s = arg;
    s->addr[s->n] = (uint64_t)(uintptr_t)addr;
    s->len[s->n] = len;
    return ++s->n == 8; /* stop early: the visited count must say 8 */
}

static uint8_t buf1[MAX_PROBE], buf2[MAX_PROBE], map[MAX_PROBE / 512 + 2];

/* Reads [addr, addr+len) and checks the answer is one the contract allows:
 * -EBADMSG only if verify found corruption, -ENODATA only in an image with
 * absent pages, -ENOENT never for a span known to be inside one range, and
 * a success repeats identically. */
static void probe(const sf_image *img, const sf_image_info *info, int verified, uint64_t addr,
                  uint64_t len, int inside)
{
    if (!len)
        return;
    if (len > MAX_PROBE)
        len = MAX_PROBE;
    int r = sf_image_read(img, addr, buf1, (size_t)len);
    int wraps = len - 1 > UINT64_MAX - addr;
    PROPERTY(r == 0 || r == -ENOENT || r == -ENODATA || r == -EBADMSG || r == -EINVAL);
    PROPERTY((r == -EINVAL) == wraps);
    PROPERTY(r != -EBADMSG || verified == -EBADMSG);
    PROPERTY(r != -ENODATA || info->pages_absent);
    PROPERTY(!inside || r != -ENOENT);
    if (r == 0) {
        PROPERTY(sf_image_read(img, addr, buf2, (size_t)len) == 0);
        PROPERTY(!memcmp(buf1, buf2, (size_t)len));
    }
    /* the page map agrees with read: same errors except -ENODATA, which
     * it answers with 0 and an absent page in the map; held bytes match */
    if (r == -EINVAL)
        return;
    uint64_t ps = info->page_size, npg = ((addr + len - 1) / ps) - addr / ps + 1;
    memset(buf2, 0xa5, (size_t)len);
    int rm = sf_image_read_map(img, addr, buf2, (size_t)len, map);
    PROPERTY(rm == (r == -ENODATA ? 0 : r));
    if (rm == 0) {
        int absent = 0;
        for (uint64_t i = 0; i < npg; i++) {
            PROPERTY(map[i] >= SF_IMAGE_PAGE_STORED && map[i] <= SF_IMAGE_PAGE_ABSENT);
            absent |= map[i] == SF_IMAGE_PAGE_ABSENT;
        }
        PROPERTY(absent == (r == -ENODATA));
        if (r == 0)
            PROPERTY(!memcmp(buf1, buf2, (size_t)len));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("fuzz_image", MFD_CLOEXEC)) < 0)
        abort();
    if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
        abort();

    sf_image *img = (sf_image *)&fd;
    int r = sf_image_open(&img, fd);
    if (r) {
        PROPERTY(r == -EBADMSG || r == -EPROTO || r == -EFBIG);
        PROPERTY(img == NULL);
        return 0;
    }

    sf_image_info info;
    PROPERTY(sf_image_get_info(img, &info) == 0);
    PROPERTY(info.page_size >= 512 && !(info.page_size & (info.page_size - 1)));
    PROPERTY(info.bytes % info.page_size == 0);
    PROPERTY(info.pages_stored + info.pages_zero + info.pages_absent ==
             info.bytes / info.page_size);
    PROPERTY(info.parent_id || !info.pages_absent);
    /* stored pages are in the file (uncompressed: version 1), and so is a
     * kind byte for every page */
    PROPERTY(info.version == 2 || info.pages_stored <= size / info.page_size);
    PROPERTY(info.version == 1 || info.version == 2);
    PROPERTY(info.bytes / info.page_size <= size);

    struct seen s = {.n = 0};
    int n = sf_image_ranges(img, keep_range, &s);
    PROPERTY(n == (int)(info.ranges < 8 ? info.ranges : 8) && (size_t)n == s.n);
    PROPERTY(sf_image_ranges(img, NULL, NULL) == (int)info.ranges);

    sf_image_mapping mp;
    for (size_t i = 0; i < s.n; i++) {
        PROPERTY(sf_image_mapping_get(img, i, &mp) == 0);
        PROPERTY(mp.addr == s.addr[i] && mp.len == s.len[i] && mp.name);
        PROPERTY(strlen(mp.name) <= 4096);
        PROPERTY(info.version != 1 || (!mp.prot && !mp.name[0]));
    }
    PROPERTY(sf_image_mapping_get(img, (size_t)info.ranges, &mp) == -ENOENT);

    int v = sf_image_verify(img);
    PROPERTY(v == 0 || v == -EBADMSG);
    PROPERTY(sf_image_verify(img) == v);

    const uint64_t ps = info.page_size;
    for (size_t i = 0; i < s.n; i++) {
        uint64_t a = s.addr[i], l = s.len[i];
        PROPERTY(l && !(a % ps) && !(l % ps) && l - 1 <= UINT64_MAX - a);
        PROPERTY(!i || a >= s.addr[i - 1] + s.len[i - 1]);
        probe(img, &info, v, a, ps, 1);
        probe(img, &info, v, a + l - ps, ps, 1);
        probe(img, &info, v, a, l, 1);
        probe(img, &info, v, a + l - 1 - (l - 1) / 3, ps + 7, 0);
        probe(img, &info, v, a + ps / 2, ps, l > ps);
        if (a)
            probe(img, &info, v, a - 1, 2, 0);
        probe(img, &info, v, a + l - 1, 2, 0);
    }
    probe(img, &info, v, 0, 1, 0);
    probe(img, &info, v, UINT64_MAX, 1, 0);
    probe(img, &info, v, UINT64_MAX, 2, 0);
    sf_image_close(img);
    return 0;
}
