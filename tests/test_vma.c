/* test_vma.c - the mprotect backend against vm.max_map_count: scattered
 * writes needing more VMA splits than allowed degrade, never hang or fail. */
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <time.h>

static size_t PS;
static long MMC; /* vm.max_map_count */

/* The program must keep room for its own mappings whatever snapfault does
 * (snapfault reserves a quarter of the limit; this asks for much less). */
#define HEADROOM 256

static const struct variant *mprotect_variant(void)
{
    for (size_t i = 0; i < NVARIANTS; i++)
        if (variants[i].backend == SF_BACKEND_MPROTECT)
            return &variants[i];
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VMAs of this process: lines of /proc/self/maps, minus [vsyscall] (not a
 * VMA).  No allocation: it runs when the process is short of mappings. */
static long count_vmas(void)
{
    static char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long lines = 0;
    ssize_t n;
    int vsys = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
        if (memmem(buf, (size_t)n, "[vsyscall]", 10))
            vsys = 1;
    }
    close(fd);
    return lines - vsys;
}

/* Can the program still create mappings of its own (HEADROOM/4 of them,
 * each its own VMA)?  Returns how many it got. */
static int own_mappings_ok(void)
{
    enum { N = HEADROOM / 4 };
    void *m[N];
    int got = 0;
    for (; got < N; got++) {
        /* Alternate protections so that neighbours never merge. */
        m[got] = mmap(NULL, PS, got % 2 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m[got] == MAP_FAILED)
            break;
    }
    for (int i = 0; i < got; i++)
        munmap(m[i], PS);
    return got;
}

struct round {
    long peak_vmas;      /* most VMAs seen while writing */
    int own_short;       /* the program's own mappings failed (count got) */
    double secs;
};

/* Writes pages first, first+stride, ... of mem (npages), sampling the VMA
 * count as it goes. */
static void write_scattered(char *mem, size_t npages, size_t first, size_t stride, struct round *r)
{
    double t0 = now_s();
    r->peak_vmas = 0;
    r->own_short = -1;
    size_t k = 0;
    for (size_t p = first; p < npages; p += stride, k++) {
        mem[p * PS] = (char)(p | 1);
        if (k % 2048 == 0) {
            long v = count_vmas();
            if (v > r->peak_vmas)
                r->peak_vmas = v;
            if (r->own_short < 0 && MMC - v < HEADROOM) {
                int got = own_mappings_ok();
                if (got < HEADROOM / 4)
                    r->own_short = got;
            }
        }
    }
    long v = count_vmas();
    if (v > r->peak_vmas)
        r->peak_vmas = v;
    r->secs = now_s() - t0;
}

/* Collects with reset and checks that every page written in this round
 * (first, first+stride, ...) is reported; exact when want_exact. */
static int check_round(sf_tracker *t, char *mem, size_t npages, size_t first, size_t stride,
                       int want_exact, const char *what)
{
    struct pageset s;
    memset(&s, 0, sizeof s);
    s.base = mem;
    s.npages = npages;
    s.bits = calloc(npages, 1);
    s.stop_after = -1;
    CHECK(s.bits, "calloc");
    int rc = sf_collect(t, SF_COLLECT_RESET, collect_into, &s);
    CHECK(rc >= 0 && rc == s.pages, "%s: collect %d (%s)", what, rc, rc < 0 ? sf_strerror(rc) : "");
    CHECK(s.outside == 0 && s.dup == 0, "%s: outside %ld dup %ld", what, s.outside, s.dup);
    size_t want = 0;
    for (size_t p = first; p < npages; p += stride, want++)
        CHECK(s.bits[p], "%s: page %zu written, not reported", what, p);
    if (want_exact)
        CHECK((size_t)s.pages == want, "%s: %ld pages reported, %zu written", what, s.pages, want);
    free(s.bits);
    return 0;
}

static int region_setup(sf_tracker **t, char **mem, size_t npages)
{
    int rc = make_tracker(mprotect_variant(), 0, t);
    if (rc)
        return rc;
    *mem = mmap(NULL, npages * PS, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(*mem != MAP_FAILED, "mmap %zu MiB", npages * PS >> 20);
    madvise(*mem, npages * PS, MADV_NOHUGEPAGE);
    CHECK_RC(sf_track(*t, *mem, npages * PS), 0);
    return 0;
}

#define CHECK_ROUND(r, what)                                                                   \
    do {                                                                                       \
        CHECK((r).peak_vmas + HEADROOM <= MMC, "%s: %ld VMAs of %ld: no headroom left", what,   \
              (r).peak_vmas, MMC);                                                             \
        CHECK((r).own_short < 0, "%s: the program got only %d of %d mappings of its own", what, \
              (r).own_short, HEADROOM / 4);                                                    \
    } while (0)

/* Every other page of 2 * max_map_count pages, twice (even pages, then odd
 * pages after a reset), then a small round that must be exact again. */
static int t_scattered(const struct variant *unused)
{
    size_t npages = 2 * (size_t)MMC + 2;
    if (npages * PS > (8ul << 30))
        SKIP("vm.max_map_count %ld would need %zu MiB of address space", MMC, npages * PS >> 20);
    sf_tracker *t;
    char *mem;
    int rc = region_setup(&t, &mem, npages);
    if (rc)
        return rc;
    sf_stats st;
    struct round r1, r2, r3;
    write_scattered(mem, npages, 0, 2, &r1);
    CHECK_ROUND(r1, "round 1");
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    CHECK(st.degraded > 0, "round 1: %llu faults and never degraded", (unsigned long long)st.faults);
    if (check_round(t, mem, npages, 0, 2, 0, "round 1"))
        return 1;
    uint64_t deg1 = st.degraded;
    write_scattered(mem, npages, 1, 2, &r2);
    CHECK_ROUND(r2, "round 2");
    if (check_round(t, mem, npages, 1, 2, 0, "round 2"))
        return 1;
    CHECK_RC(sf_tracker_stats(t, &st), 0);
    CHECK(st.degraded > deg1, "round 2 never degraded");
    /* 100 scattered pages fit any budget: reported exactly. */
    write_scattered(mem, npages, 12345, npages / 100, &r3);
    CHECK_ROUND(r3, "round 3");
    if (check_round(t, mem, npages, 12345, npages / 100, 1, "round 3 (100 pages)"))
        return 1;
    printf("    rounds: %.1f s (peak %ld VMAs), %.1f s (peak %ld), %.2f s (peak %ld); "
           "%llu faults, %llu degraded\n",
           r1.secs, r1.peak_vmas, r2.secs, r2.peak_vmas, r3.secs, r3.peak_vmas,
           (unsigned long long)st.faults, (unsigned long long)st.degraded);
    sf_tracker_destroy(t);
    munmap(mem, npages * PS);
    return 0;
}

/* The program itself uses up the VMAs after snapfault sized its budget:
 * snapfault's mprotect fails with ENOMEM in the fault handler; the fault
 * must still complete (degraded), and everything written is reported. */
static int t_program_eats_vmas(const struct variant *unused)
{
    size_t npages = 4096;
    sf_tracker *t;
    char *mem;
    int rc = region_setup(&t, &mem, npages);
    if (rc)
        return rc;
    size_t fl = (size_t)MMC + 64;
    char *flood = mmap(NULL, fl * PS, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(flood != MAP_FAILED, "mmap");
    size_t k = 0;
    while (k < fl / 2 && mprotect(flood + 2 * k * PS, PS, PROT_READ) == 0)
        k++;
    int merr = errno;
    /* No allocation until the flood is gone. */
    struct round r;
    write_scattered(mem, npages, 0, 2, &r);
    sf_stats st;
    sf_tracker_stats(t, &st);
    munmap(flood, fl * PS);
    CHECK(merr == ENOMEM, "could not reach vm.max_map_count: %s", strerror(merr));
    CHECK(st.degraded > 0, "snapfault's mprotect never failed: the case proves nothing");
    if (check_round(t, mem, npages, 0, 2, 0, "under the flood"))
        return 1;
    /* Room again: the next rounds are exact. */
    write_scattered(mem, npages, 1, 2, &r);
    if (check_round(t, mem, npages, 1, 2, 1, "after the flood"))
        return 1;
    write_scattered(mem, npages, 3, 64, &r);
    if (check_round(t, mem, npages, 3, 64, 1, "after the flood, sparse"))
        return 1;
    sf_tracker_destroy(t);
    munmap(mem, npages * PS);
    return 0;
}

int main(void)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (!f || fscanf(f, "%ld", &MMC) != 1 || MMC <= 0) {
        printf("cannot read vm.max_map_count\n");
        return 77;
    }
    fclose(f);
    alarm(540); /* a hang ends as a failure, not a stuck suite (meson: 600 s) */
    static const struct {
        const char *name;
        int (*fn)(const struct variant *);
    } cases[] = {
        {"scattered writes over 2 x max_map_count pages", t_scattered},
        {"the program's own VMAs exhaust the limit", t_program_eats_vmas},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        h_report(cases[c].name, "mprotect", cases[c].fn(NULL));
    return h_finish();
}
