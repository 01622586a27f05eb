/* image.h - the snapshot image format (doc/IMAGE-FORMAT.md): layout constants
 * shared by the writer, the reader, the tests and the fuzzer, and the writer. */
#ifndef SF_IMAGE_H
#define SF_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every change to the byte layout bumps the version; readers accept only the
 * versions they know (-EPROTO otherwise).  Reserved fields are written as
 * zero and rejected when non-zero, so they can never be given a meaning
 * without a version bump. */
#define SF_IMG_VERSION 2u  /* what the writer writes unless told otherwise */
#define SF_IMG_VERSION_1 1u /* still read; written on request (tests) */

#define SF_IMG_MAGIC "SNAPFIMG"         /* 8 bytes, file header */
#define SF_IMG_BLOCK_MAGIC "SFBK"       /* 4 bytes, block header */
#define SF_IMG_TRAILER_MAGIC "SFIMGEND" /* 8 bytes, trailer */

/* Sizes of the fixed parts, in bytes. */
#define SF_IMG_HDR_SIZE 72u
#define SF_IMG_RANGE_SIZE 16u    /* version 1 */
#define SF_IMG_BLK_HDR_SIZE 48u  /* version 1 */
#define SF_IMG2_RANGE_SIZE 32u   /* version 2: + prot, name length, file offset */
#define SF_IMG2_BLK_HDR_SIZE 56u /* version 2: + encoding, stored length */
#define SF_IMG_TRAILER_SIZE 64u

/* File header field offsets. */
#define SF_IMG_H_MAGIC 0
#define SF_IMG_H_VERSION 8     /* u32 */
#define SF_IMG_H_PAGE_SIZE 12  /* u32 */
#define SF_IMG_H_ID 16         /* u64 */
#define SF_IMG_H_PARENT 24     /* u64 */
#define SF_IMG_H_TAKEN 32      /* i64 */
#define SF_IMG_H_NRANGES 40    /* u64 */
#define SF_IMG_H_NPAGES 48     /* u64 */
#define SF_IMG_H_RESERVED 56   /* u64, 0 */
#define SF_IMG_H_CHECKSUM 64   /* u64 XXH3 of bytes 0..63 */

/* Block header field offsets. */
#define SF_IMG_B_MAGIC 0       /* 4 bytes */
#define SF_IMG_B_NPAGES 4      /* u32 */
#define SF_IMG_B_ADDR 8        /* u64 */
#define SF_IMG_B_PRESENT 16    /* u32 */
#define SF_IMG_B_ZERO 20       /* u32 */
#define SF_IMG_B_ABSENT 24     /* u32 */
#define SF_IMG_B_RESERVED 28   /* u32, 0 */
#define SF_IMG_B_PAYLOAD_SUM 32 /* u64 XXH3 of kinds + data */
#define SF_IMG_B_CHECKSUM 40   /* u64 XXH3 of bytes 0..39, seeded */

/* Version 2 block header: the version 1 fields up to absent, then */
#define SF_IMG2_B_ENCODING 28   /* u32: SF_IMG_ENC_* */
#define SF_IMG2_B_STORED 32     /* u32: bytes of page data stored after the kinds */
#define SF_IMG2_B_RESERVED 36   /* u32, 0 */
#define SF_IMG2_B_PAYLOAD_SUM 40 /* u64 XXH3 of kinds + stored data */
#define SF_IMG2_B_CHECKSUM 48   /* u64 XXH3 of bytes 0..47, seeded */

/* Version 2 range entry: addr u64, len u64, then these. */
#define SF_IMG2_R_PROT 16       /* u32: SF_IMAGE_PROT_* bits */
#define SF_IMG2_R_NAMELEN 20    /* u32: bytes of name in the name area */
#define SF_IMG2_R_OFFSET 24     /* u64: file offset of addr (file mappings), else 0 */
#define SF_IMG_MAX_NAME 4096u   /* a mapping name's longest length */

/* Block encodings (version 2). */
enum { SF_IMG_ENC_RAW = 0, SF_IMG_ENC_ZSTD = 1 };

/* Trailer field offsets. */
#define SF_IMG_T_MAGIC 0
#define SF_IMG_T_NBLOCKS 8     /* u64 */
#define SF_IMG_T_PRESENT 16    /* u64 */
#define SF_IMG_T_ZERO 24       /* u64 */
#define SF_IMG_T_ABSENT 32     /* u64 */
#define SF_IMG_T_BYTES 40      /* u64: image length, header to trailer end */
#define SF_IMG_T_RESERVED 48   /* u64, 0 */
#define SF_IMG_T_CHECKSUM 56   /* u64 XXH3 of bytes 0..55, seeded */

/* Limits.  Beyond them a reader says -EFBIG even if the file could hold it. */
#define SF_IMG_MIN_PAGE 512u
#define SF_IMG_MAX_PAGE (1u << 21)
#define SF_IMG_MAX_RANGES (1u << 24)
#define SF_IMG_MAX_BLOCK_PAGES 4096u
#define SF_IMG_MAX_BLOCK_DATA (4u << 20)  /* bytes of page data in one block */

/* What this writer puts in one block: at most this much page data (or one
 * page if pages are bigger).  A read checksums the whole block holding the
 * bytes it wants, so this is also the cost of a random one-page read. */
#define SF_IMG_WRITE_BLOCK_DATA (256u << 10)

/* Per-page kind bytes in a block payload.  0 is invalid so that a zeroed
 * (sparse, wiped) payload can never pass for a valid one. */
enum { SF_IMG_PAGE_PRESENT = 1, SF_IMG_PAGE_ZERO = 2, SF_IMG_PAGE_ABSENT = 3 };

/* ------------------------------------------------------------------------ */
/* Little-endian fields, independent of the host's byte order: the writer, */
/* the reader, and the tests' independent encoder of the layout            */
/* ------------------------------------------------------------------------ */

static inline void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

struct sf_image_range {
    uint64_t addr, len; /* page aligned, sorted, disjoint, addr+len <= UINT64_MAX */
};

/* What a version 2 image records about the mapping of each range. */
struct sf_image_meta {
    uint32_t prot;    /* SF_IMAGE_PROT_* */
    const char *name; /* mapping name; NULL or "" for none */
    uint64_t offset;  /* offset in the mapped file of the range's first byte */
};

struct sf_image_src {
    uint64_t id, parent_id; /* parent_id 0: full image */
    int64_t taken_ns;       /* CLOCK_REALTIME ns */
    uint32_t page_size;     /* power of two, SF_IMG_MIN_PAGE..SF_IMG_MAX_PAGE */
    const struct sf_image_range *ranges;
    size_t nranges;
    /* Fill buf (page_size bytes) with the page at addr.  Return 1: present
     * (data in buf), 0: absent (incremental image: unchanged since parent),
     * <0: -errno, abort the write.  Called once per page in address order. */
    int (*read_page)(void *ctx, uint64_t addr, void *buf);
    void *ctx;
    /* SF_WRITE_* flags of the public API (compression and its level). */
    unsigned flags;
    /* 0 or SF_IMG_VERSION: the current layout; SF_IMG_VERSION_1: the old
     * one (no names, no compression; for tests of the old reader path). */
    uint32_t version;
    /* Version 2: NULL: the writer reads /proc/self/maps and gives each
     * range the name and protection of the mapping holding it (splitting a
     * range where the mapping changes); else meta[i] describes ranges[i]. */
    const struct sf_image_meta *meta;
};

/* Streams an image of src to fd with write(2) only (fd may be a pipe or a
 * non-blocking descriptor).  Returns 0, -EINVAL for a bad src (including a
 * read_page result of 0 in a full image), the read_page error, -ENOMEM, or
 * -errno from write.  On error a partial image may have been written; a
 * reader rejects it because the trailer is missing. */
__attribute__((visibility("hidden")))
int sf__image_write(int fd, const struct sf_image_src *src);

#endif
