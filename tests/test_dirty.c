/* test_dirty.c - exact dirty sets on every backend: known random pages
 * written into a fresh 64 MiB region are reported exactly once, reset, and
 * the early-stop, no-reset, untrack and kernel-write rules hold. */
#include "harness.h"

#include <signal.h>
#include <sys/wait.h>

#define REGION (64ul << 20)
static size_t PS;

static void pageset_init(struct pageset *s, void *base, size_t npages)
{
    memset(s, 0, sizeof(*s));
    s->base = base;
    s->npages = npages;
    s->bits = calloc(npages, 1);
    s->stop_after = -1;
}

/* Writes a random set of pages (half of them never touched before the
 * tracker started: the region is fresh) and checks collect reports it. */
static int t_exact(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = REGION / PS;
    char *mem = map_region(REGION);
    CHECK(mem, "mmap");
    /* Touch the first half before tracking: resident pages and never
     * touched pages must both be tracked. */
    memset(mem, 1, REGION / 2);
    CHECK_RC(sf_track(t, mem, REGION), 0);
    unsigned char *want = calloc(n, 1);
    size_t nwant = 0;
    for (int i = 0; i < 3000; i++) {
        size_t p = rnd() % n;
        mem[p * PS + rnd() % PS] = (char)i;
        nwant += !want[p];
        want[p] = 1;
    }
    struct pageset s;
    pageset_init(&s, mem, n);
    rc = sf_collect(t, SF_COLLECT_RESET, collect_into, &s);
    CHECK(rc == (int)s.pages, "returned %d, reported %ld", rc, s.pages);
    CHECK(s.outside == 0 && s.dup == 0, "outside %ld dup %ld", s.outside, s.dup);
    for (size_t p = 0; p < n; p++) {
        CHECK(!want[p] || s.bits[p], "page %zu written but not reported", p);
        if (v->exact)
            CHECK(want[p] || !s.bits[p], "page %zu reported but never written", p);
    }
    CHECK(s.pages >= (long)nwant, "pages %ld < %zu", s.pages, nwant);
    /* A second collect reports nothing. */
    struct pageset s2;
    pageset_init(&s2, mem, n);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s2), 0);
    /* Writes after the reset are seen again (re-armed). */
    mem[5 * PS] = 9;
    mem[n / 2 * PS + 7] = 9;
    struct pageset s3;
    pageset_init(&s3, mem, n);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s3), 2);
    CHECK(s3.bits[5] && s3.bits[n / 2] && s3.runs == 2, "runs %ld", s3.runs);
    /* The data itself is intact. */
    CHECK(mem[5 * PS] == 9 && mem[n / 2 * PS + 7] == 9, "data");
    sf_tracker_destroy(t);
    /* After destroy the memory is writable again. */
    mem[7 * PS] = 3;
    munmap(mem, REGION);
    free(want);
    free(s.bits);
    free(s2.bits);
    free(s3.bits);
    return 0;
}

/* Collect without reset leaves the set dirty; fn returning non-zero stops
 * the walk and pages not yet reported are reported by the next collect. */
static int t_stop_and_get(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 4096;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    /* 40 separate runs of 3 pages. */
    for (size_t r = 0; r < 40; r++)
        for (size_t k = 0; k < 3; k++)
            mem[(r * 100 + k) * PS] = 1;
    struct pageset s;
    pageset_init(&s, mem, n);
    CHECK_RC(sf_collect(t, 0, collect_into, &s), 120);
    CHECK(s.runs == 40, "runs %ld", s.runs);
    free(s.bits);
    pageset_init(&s, mem, n);
    CHECK_RC(sf_collect(t, 0, collect_into, &s), 120); /* still dirty */
    free(s.bits);
    /* Stop after 10 runs. */
    pageset_init(&s, mem, n);
    s.stop_after = 10;
    rc = sf_collect(t, SF_COLLECT_RESET, collect_into, &s);
    CHECK(rc == 30 && s.runs == 10, "rc %d runs %ld", rc, s.runs);
    struct pageset s2;
    pageset_init(&s2, mem, n);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s2), 90);
    for (size_t r = 0; r < 40; r++)
        CHECK(s.bits[r * 100] != s2.bits[r * 100], "run %zu reported %d+%d times", r,
              s.bits[r * 100], s2.bits[r * 100]);
    free(s.bits);
    free(s2.bits);
    pageset_init(&s, mem, n);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s), 0);
    free(s.bits);
    /* fn NULL: count and reset. */
    mem[0] = 2;
    mem[PS] = 2;
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 2);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 0);
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return 0;
}

/* Untracking part of a range: the rest stays tracked, the part is
 * writable and unreported, and can be tracked again. */
static int t_partial_untrack(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 256;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    mem[10 * PS] = 1;
    CHECK_RC(sf_untrack(t, mem + 64 * PS, 64 * PS), 0);
    CHECK_RC(sf_untrack(t, mem + 64 * PS, PS), -ENOENT);
    for (size_t p = 0; p < n; p++)
        mem[p * PS] = 2;
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), (int)(n - 64));
    CHECK_RC(sf_track(t, mem + 64 * PS, 64 * PS), 0);
    mem[70 * PS] = 3;
    struct pageset s;
    pageset_init(&s, mem, n);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s), 1);
    CHECK(s.bits[70], "revived page not reported");
    free(s.bits);
    CHECK_RC(sf_untrack(t, mem, n * PS), 0);
    CHECK_RC(sf_untrack(t, mem, PS), -ENOENT);
    mem[0] = 4;
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return 0;
}

/* read(2) from a pipe into tracked memory: a kernel write. */
static int t_kernel_write(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 64;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    char msg[3 * 4096];
    memset(msg, 'k', sizeof msg);
    CHECK(write(fds[1], msg, sizeof msg) == (ssize_t)sizeof msg, "write");
    ssize_t got = read(fds[0], mem + 5 * PS, sizeof msg);
    int err = errno;
    if (v->kernel_writes) {
        CHECK(got == (ssize_t)sizeof msg, "read into tracked memory: %zd (%s)", got, strerror(err));
        CHECK(memcmp(mem + 5 * PS, msg, sizeof msg) == 0, "data");
        struct pageset s;
        pageset_init(&s, mem, n);
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s), 3);
        CHECK(s.bits[5] && s.bits[6] && s.bits[7], "kernel-written pages not reported");
        free(s.bits);
    } else {
        /* Documented limit of in-thread and mprotect delivery. */
        CHECK(got < 0 && err == EFAULT, "expected EFAULT, got %zd", got);
        mem[5 * PS] = 1; /* a user write still works and is tracked */
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 1);
    }
    close(fds[0]);
    close(fds[1]);
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return 0;
}

/* fork(): the child gets tracking off and writable memory (its trackers
 * answer -ECHILD); the parent is unaffected. */
static int t_fork(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 64;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    memset(mem, 0, n * PS);
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    mem[PS] = 1;
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        for (size_t p = 0; p < n; p++)
            mem[p * PS] = 7; /* must not fault fatally */
        int ok = sf_collect(t, 0, NULL, NULL) == -ECHILD && sf_track(t, mem, PS) == -ECHILD;
        sf_tracker_destroy(t); /* frees the child's copy, never touches the uffd */
        _exit(ok ? 0 : 3);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    CHECK(mem[2 * PS] == 0, "child's write leaked into the parent");
    mem[3 * PS] = 1;
    struct pageset s;
    pageset_init(&s, mem, n);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, collect_into, &s), 2);
    CHECK(s.bits[1] && s.bits[3], "parent's writes");
    free(s.bits);
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return 0;
}

int main(void)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    static const struct {
        const char *name;
        int (*fn)(const struct variant *);
    } cases[] = {
        {"exact dirty set (64 MiB, 3000 random writes)", t_exact},
        {"collect without reset and early stop", t_stop_and_get},
        {"partial untrack and re-track", t_partial_untrack},
        {"read(2) into tracked memory", t_kernel_write},
        {"fork child view", t_fork},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (size_t v = 0; v < NVARIANTS; v++)
            if (h_want(variants[v].name))
                h_report(cases[c].name, variants[v].name, cases[c].fn(&variants[v]));
    return h_finish();
}
