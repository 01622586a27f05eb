/* harness.h - a small test harness in the style of the kernel mm selftests:
 * one line per case ("Testing X on Y ... ok"), skips with a reason, and a
 * closing "N passed, N failed, N skipped" line; exit 77 when all skipped. */
#ifndef SF_HARNESS_H
#define SF_HARNESS_H
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapfault.h"

static int h_pass, h_fail, h_skip;
static char h_msg[512];

#define SKIP(...) do { snprintf(h_msg, sizeof h_msg, __VA_ARGS__); return 77; } while (0)
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            int _n = snprintf(h_msg, sizeof h_msg, "%s:%d: %s: ", __FILE__,     \
                              __LINE__, #cond);                                 \
            snprintf(h_msg + _n, sizeof h_msg - (size_t)_n, __VA_ARGS__);       \
            return 1;                                                           \
        }                                                                       \
    } while (0)
#define CHECK_RC(expr, want)                                                    \
    do {                                                                        \
        long _r = (long)(expr);                                                 \
        CHECK(_r == (long)(want), "got %ld (%s), want %ld", _r,                 \
              _r < 0 ? sf_strerror((int)_r) : "", (long)(want));                \
    } while (0)

static void h_report(const char *name, const char *variant, int rc)
{
    printf("Testing %s on %s ... ", name, variant);
    if (rc == 0) {
        h_pass++;
        printf("ok\n");
    } else if (rc == 77) {
        h_skip++;
        printf("skip (%s)\n", h_msg);
    } else {
        h_fail++;
        printf("FAIL\n    %s\n", h_msg);
    }
    fflush(stdout);
    h_msg[0] = 0;
}

static int h_finish(void)
{
    printf("%d passed, %d failed, %d skipped\n", h_pass, h_fail, h_skip);
    if (h_fail)
        return 1;
    return h_pass == 0 && h_skip > 0 ? 77 : 0;
}

/* Backend variants: a backend plus the flags that select a delivery mode. */
struct variant {
    const char *name;
    sf_backend backend;
    unsigned flags;
    int exact;          /* reports exactly the written pages */
    int kernel_writes;  /* read(2) into tracked memory works */
};

static const struct variant variants[] = {
    {"uffd-async", SF_BACKEND_UFFD_ASYNC, 0, 1, 1},
    {"uffd-sync/in-thread", SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS, 1, 0},
    {"uffd-sync/handler-threads", SF_BACKEND_UFFD_SYNC, SF_OPT_HANDLER_THREADS, 1, 1},
    {"mprotect", SF_BACKEND_MPROTECT, 0, 1, 0},
    {"soft-dirty", SF_BACKEND_SOFTDIRTY, 0, 1, 1},
};
#define NVARIANTS (sizeof(variants) / sizeof(variants[0]))

/* Creates a tracker for v, or says why the machine cannot (skip). */
__attribute__((unused)) static int make_tracker(const struct variant *v, unsigned extra, sf_tracker **t)
{
    sf_options o = {.backend = v->backend, .flags = v->flags | extra};
    int rc = sf_tracker_create(t, &o);
    if (rc == -ENOTSUP) {
        sf_caps c;
        sf_probe(&c);
        snprintf(h_msg, sizeof h_msg, "%s", c.why[v->backend][0] ? c.why[v->backend] : "not supported here");
        return 77;
    }
    if (rc) {
        snprintf(h_msg, sizeof h_msg, "sf_tracker_create: %s", sf_strerror(rc));
        return 1;
    }
    return 0;
}

__attribute__((unused)) /* SF_TEST_VARIANT selects variants: "NAME" runs only that one, "!NAME"
 * all but it.  meson registers kernel-feature variants (soft-dirty) as
 * tests of their own, which exit 77 where the kernel lacks the feature. */
__attribute__((unused)) static int h_want(const char *variant)
{
    const char *f = getenv("SF_TEST_VARIANT");
    if (!f || !*f)
        return 1;
    if (f[0] == '!')
        return strcmp(f + 1, variant) != 0;
    return strcmp(f, variant) == 0;
}

__attribute__((unused)) static void *map_region(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, len, MADV_NOHUGEPAGE); /* 4 KiB granularity of dirtiness */
    return p;
}

/* xorshift: reproducible random pages */
static unsigned long long h_rng = 88172645463325252ull;
__attribute__((unused)) static unsigned long long rnd(void)
{
    h_rng ^= h_rng << 13;
    h_rng ^= h_rng >> 7;
    h_rng ^= h_rng << 17;
    return h_rng;
}

/* Collect into a bitmap of pages relative to base. */
struct pageset {
    char *base;
    size_t npages;
    unsigned char *bits;
    long runs, pages, outside, dup;
    long stop_after;  /* stop after this many runs (-1: never) */
};

__attribute__((unused)) static int collect_into(void *addr, size_t len, void *arg)
{
    struct pageset *s = arg;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    for (char *p = addr; p < (char *)addr + len; p += ps) {
        if (p < s->base || p >= s->base + s->npages * ps) {
            s->outside++;
            continue;
        }
        size_t i = (size_t)(p - s->base) / ps;
        if (s->bits[i])
            s->dup++;
        s->bits[i] = 1;
        s->pages++;
    }
    s->runs++;
    return s->stop_after >= 0 && s->runs >= s->stop_after;
}
#endif
