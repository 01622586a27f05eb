/* image_impl.h - what the image code shares between its files (the
 * writer image_write.c, the reader image_read.c, the chain flattening
 * image_merge.c): small helpers and the reader's view of an open image.
 * Not included by anything else; the format itself is image.h. */
#ifndef SF_IMAGE_IMPL_H
#define SF_IMAGE_IMPL_H

#include "image.h"
#include "embed/os.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static inline bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

static inline unsigned log2_u32(uint32_t v) { return (unsigned)__builtin_ctz(v); }

#define PROT_BITS                                                                          \
    (SF_IMAGE_PROT_READ | SF_IMAGE_PROT_WRITE | SF_IMAGE_PROT_EXEC | SF_IMAGE_PROT_SHARED | \
     SF_IMAGE_PROT_KNOWN)

/* Appends to a growing array; growth follows what was already validated
 * from the file, never a count the file claims. */
static inline int grow(void **arr, size_t *cap, size_t n, size_t elem)
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

/* The reader's view of an open image (sf_image_open builds it). */
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

/* The block holding addr, by binary search over the address-ordered index;
 * -1 if addr lies in no range. */
static inline ptrdiff_t find_block(const sf_image *img, uint64_t addr)
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

#endif
