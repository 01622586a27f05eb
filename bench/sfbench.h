/* sfbench.h - shared declarations of sfbench, the benchmark binary:
 * timing, statistics, RESULT output, kernel ABI fallbacks and the mechanism table. */
#ifndef SFBENCH_H
#define SFBENCH_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <time.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>

/* Debian 12 ships 6.1 UAPI headers; the kernels we measure (6.7+) know more.
 * These are the upstream values, used only when the headers lack them; every
 * mechanism is still probed at run time and reports "unsupported" if absent. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
    __u64 start;
    __u64 end;
    __u64 categories;
};
struct pm_scan_arg {
    __u64 size;
    __u64 flags;
    __u64 start;
    __u64 end;
    __u64 walk_end;
    __u64 vec;
    __u64 vec_len;
    __u64 max_pages;
    __u64 category_inverted;
    __u64 category_mask;
    __u64 category_anyof_mask;
    __u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif
#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN (1 << 1)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define PAGE_SHIFT_4K 12
#define PAGE_4K ((size_t)1 << PAGE_SHIFT_4K)
#define MIB ((size_t)1 << 20)

/* ---- time and statistics (util.c) ---- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap, deterministic per seed, good enough to scatter pages. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

double stat_median(double *v, size_t n);          /* sorts v */
double stat_min(const double *v, size_t n);
double stat_max(const double *v, size_t n);
uint64_t stat_pct_u64(uint64_t *v, size_t n, double p); /* sorts v; nearest rank */

/* ---- output ---- */

/* Prints one "RESULT k=v ..." line on stdout and flushes it, so that a job
 * killed by the driver's timeout still leaves the lines it finished. */
void result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Copies s into buf with characters that would break the driver's
 * shlex-style parsing replaced ('"', newlines). */
const char *quote_safe(const char *s, char *buf, size_t n);
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* For signal handlers: write(2) a message and _exit(3). */
void die_async(const char *msg) __attribute__((noreturn));

/* ---- options: "--key value" pairs after the subcommand ---- */

void opt_init(int argc, char **argv);
const char *opt_str(const char *key, const char *def);
long opt_long(const char *key, long def);
double opt_double(const char *key, double def);
void opt_check_all_used(void); /* dies on an unknown option (typos) */

/* ---- memory (util.c) ---- */

/* Private anonymous read-write mapping with MADV_NOHUGEPAGE (4 KiB dirtiness
 * granularity, as snapfault tracks), every page resident, so that faults
 * measured later are protection faults, never page allocation.  fill: also
 * store a non-zero word in every page (images and restores are checked on
 * real content; costs a first touch per page, ~3 us under shadow paging). */
char *region_alloc(size_t len, int fill);
void region_free(char *p, size_t len);
/* n distinct page indices out of total: 0..n-1 ("seq") or a random subset
 * in random order ("rand"). */
uint32_t *page_order(size_t total, size_t n, int random_order, uint64_t seed);
long proc_kb(pid_t pid, const char *file, const char *field); /* -1 if absent */

/* ---- mechanisms: a raw kernel mechanism or a snapfault tracker ---- */

struct mech;

/* What the snapshot-engine scenarios read from sf_tracker_stats. */
struct mech_stats {
    uint64_t tracked_bytes, store_bytes, store_limit, metadata_bytes, copies, snapshots_live;
    int has_precopy;          /* the library counts a background pre-copy: */
    uint64_t precopied_pages; /* pages it copied so far */
    /* statistics the library has beyond these (" k=v ..."), "" if none */
    char more[256];
};

struct mech_ops {
    /* Starts tracking m->base..len.  0, or -errno (-ENOTSUP: row unsupported). */
    int (*setup)(struct mech *m);
    /* Makes every page clean and write-protected (for snapshots: takes one). */
    int (*arm)(struct mech *m);
    /* Ends a measured phase (fork child exits, snapshot released); may be NULL. */
    int (*disarm)(struct mech *m);
    /* Snapshots: releases the earlier snapshots the next arm would release
     * first (beyond m->live), so that a take is timed alone; may be NULL. */
    void (*release_old)(struct mech *m);
    /* Collect+reset: number of written pages reported, or -errno; may be NULL. */
    long (*collect)(struct mech *m);
    /* Snapshot mechanisms only (else NULL). */
    int (*restore)(struct mech *m);
    int (*write_image)(struct mech *m, int fd);
    /* Appends " k=v" statistics for the RESULT line; may be NULL. */
    void (*extra)(struct mech *m, char *buf, size_t n);
    /* Bytes of tracker metadata and of snapshot page copies held; may be NULL. */
    int (*memory)(struct mech *m, uint64_t *metadata, uint64_t *store, uint64_t *copies);
    /* The tracker's statistics (struct mech_stats below); may be NULL. */
    int (*stats)(struct mech *m, struct mech_stats *st);
    void (*teardown)(struct mech *m);
};

#define MECH_OP_MEMCPY (1u << 0) /* scenario 1 reference: copy instead of store */
#define MECH_SNAPSHOT  (1u << 1) /* arm takes a snapshot, disarm releases it */
#define MECH_SNAPFAULT (1u << 2) /* goes through libsnapfault */
#define MECH_ABSENT    (1u << 3) /* snapfault row in a binary built without it */
#define MECH_ENGINE    (1u << 4) /* a snapshot engine by name (engines.c): -ENOTSUP is a skip */

struct mech {
    const char *name;
    const struct mech_ops *ops;
    unsigned flags;
    char *base;
    size_t len;
    size_t store_limit; /* snapfault: sf_options.store_limit (0: default; engines: 2.5x len) */
    int live;           /* snapshots: earlier snapshots an arm keeps live (0: none) */
    void *priv;
    char why[256]; /* reason for an unsupported/error row */
};

/* Fills *m for a name; 0, or -ENOENT for an unknown name.  Raw mechanisms
 * live in raw_mech.c, snapfault ones ("sf-...") in sf_mech.c (or sf_absent.c
 * in the raw-only build). */
int mech_lookup(const char *name, struct mech *m);
int raw_mech_lookup(const char *name, struct mech *m);
int sf_mech_lookup(const char *name, struct mech *m);
/* A snapshot engine by name ("mirror", "cow-uffd", "cow-uffd-handler",
 * "cow-uffd-inthread", "cow-mprotect", "auto"; sf_mech.c): 0, or -ENOENT
 * if name is not an engine. */
int sf_engine_lookup(const char *name, struct mech *m);
extern const char *const sf_engine_names[];
extern const char *const raw_mech_names[];
/* "linked" or the reason the snapfault side is absent from this binary. */
const char *sf_side_status(void);
/* Prints snapfault's own sf_probe verdicts as a RESULT line (if linked). */
void sf_side_probe(void);

/* Prints the RESULT of a row that could not run: status=unsupported for
 * -ENOTSUP (the brief's contract with the library; status=skip for a
 * snapshot engine), not-built for a snapfault row in the raw-only binary,
 * error otherwise.  key_vals carries
 * the row's identifying keys ("scenario=fault mech=... pattern=seq"). */
void result_failed(const char *key_vals, const struct mech *m, int rc, const char *stage);

/* ---- subcommands (scenarios.c) ---- */

int cmd_fault(void);
int cmd_collect(void);
int cmd_pause(void);
int cmd_bgsave(void);
int cmd_rollback(void);
int cmd_stall(void);
int cmd_memory(void);
int cmd_take(void);
int cmd_first_take(void);
int cmd_bg_save(void);
int cmd_engine_memory(void);
int cmd_probe(void);
int cmd_calib(void);

#endif /* SFBENCH_H */
