/* dirtydemo.c - the README's demo: what this machine supports (sf_probe), then
 * for each usable backend, patterns written per interval and what snapfault saw. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <snapfault.h>

/* The region and its patterns, one thread each, all at once every interval:
 *   wave    an 8 MiB band, all pages, moving 8 MiB per interval through 0-40 MiB
 *   stripe  every 16th page of 48-64 MiB
 *   random  64 pages anywhere
 * so each interval's map shows a moving solid band, a faint fixed stripe
 * and a sprinkle.  The demo knows what it wrote and checks that snapfault
 * reported exactly that (tracking-only trackers never report neighbours). */
#define REGION_MIB 64
#define WAVE_MIB 8
#define WAVE_SPAN_MIB 40
#define STRIPE_FROM_MIB 48
#define STRIPE_EVERY 16
#define RANDOM_PAGES 64
#define INTERVALS 6

static size_t PS, NPAGES, PAGES_PER_MIB;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* ------------------------------------------------------------------------
 * Capability report
 * ------------------------------------------------------------------------ */

static void print_caps(const sf_caps *c)
{
    struct utsname u;
    if (uname(&u) == 0)
        printf("snapfault %d.%d.%d on Linux %s (%s)\n\n", SF_VERSION_MAJOR, SF_VERSION_MINOR,
               SF_VERSION_PATCH, u.release, u.machine);
    printf("Backends:\n");
    for (int b = 1; b < SF_BACKEND_COUNT; b++) {
        if (c->backend_ok[b] == 0)
            printf("  %-11s usable\n", sf_backend_name((sf_backend)b));
        else
            printf("  %-11s not usable: %s\n", sf_backend_name((sf_backend)b), c->why[b]);
    }
    printf("\nuffd-sync fault delivery: %s\n", sf_fault_mode_name(c->sync_mode));
    if (c->sync_mode_why[0])
        printf("  why: %s\n", c->sync_mode_why);
    printf("AUTO picks %s for tracking, %s for snapshots\n", sf_backend_name(c->auto_tracking),
           sf_backend_name(c->auto_snapshots));
    printf("vm.max_map_count %ld (this process has %ld mappings)\n", c->max_map_count,
           c->map_count);
    printf("userfaultfd: %s%s, features %#llx; PAGEMAP_SCAN %s; soft-dirty %s; THP %s\n",
           c->uffd ? "yes" : "no", c->uffd_kernel_faults ? " (kernel faults too)" : "",
           (unsigned long long)c->uffd_features, c->pagemap_scan ? "yes" : "no",
           c->soft_dirty ? "yes" : "no",
           c->thp_enabled ? "on (the demo asks MADV_NOHUGEPAGE: 4 KiB granularity)" : "off");
}

/* ------------------------------------------------------------------------
 * The patterns
 * ------------------------------------------------------------------------ */

struct interval {
    char *mem;
    int i;
    unsigned char *want; /* pages written this interval */
    uint64_t rng;
};

static void put(struct interval *iv, size_t p, unsigned char *want)
{
    iv->mem[p * PS + (size_t)iv->i] = (char)(iv->i + 1);
    want[p] = 1; /* each thread marks its own pages; bytes, no tearing */
}

static void *wave(void *arg)
{
    struct interval *iv = arg;
    size_t from = (size_t)(iv->i * WAVE_MIB % WAVE_SPAN_MIB) * PAGES_PER_MIB;
    for (size_t p = from; p < from + WAVE_MIB * PAGES_PER_MIB; p++)
        put(iv, p, iv->want);
    return NULL;
}

static void *stripe(void *arg)
{
    struct interval *iv = arg;
    for (size_t p = STRIPE_FROM_MIB * PAGES_PER_MIB; p < NPAGES; p += STRIPE_EVERY)
        put(iv, p, iv->want + NPAGES); /* its own copy of want: merged after */
    return NULL;
}

static void *sprinkle(void *arg)
{
    struct interval *iv = arg;
    for (int k = 0; k < RANDOM_PAGES; k++) {
        iv->rng ^= iv->rng << 13;
        iv->rng ^= iv->rng >> 7;
        iv->rng ^= iv->rng << 17;
        put(iv, iv->rng % NPAGES, iv->want + 2 * NPAGES);
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * Collecting and drawing
 * ------------------------------------------------------------------------ */

struct seen {
    char *base;
    unsigned char *bits;
    long runs, pages, outside;
};

static int on_run(void *addr, size_t len, void *arg)
{
    struct seen *s = arg;
    s->runs++;
    for (char *p = addr; p < (char *)addr + len; p += PS) {
        if (p < s->base || p >= s->base + NPAGES * PS) {
            s->outside++;
            continue;
        }
        s->bits[(size_t)(p - s->base) / PS] = 1;
        s->pages++;
    }
    return 0;
}

/* One character per MiB: how much of the block was reported dirty. */
static void draw(const unsigned char *bits, char *out)
{
    for (size_t b = 0; b < REGION_MIB; b++) {
        size_t n = 0;
        for (size_t p = b * PAGES_PER_MIB; p < (b + 1) * PAGES_PER_MIB; p++)
            n += bits[p];
        out[b] = n == 0 ? ' ' : n == PAGES_PER_MIB ? '#' : n * 2 >= PAGES_PER_MIB ? 'O'
               : n * 8 >= PAGES_PER_MIB ? 'o' : '.';
    }
    out[REGION_MIB] = 0;
}

/* Runs the intervals on one tracker.  Returns 0 when every interval was
 * reported exactly, 1 otherwise, 77 when the backend is not usable. */
static int demo(const char *title, sf_backend backend, unsigned flags)
{
    sf_options o = {.backend = backend, .flags = flags};
    sf_tracker *t;
    int rc = sf_tracker_create(&t, &o);
    printf("\n== %s ", title);
    if (rc) {
        printf("==\n  skipped: %s\n", sf_strerror(rc));
        return 77;
    }
    printf("(faults: %s) ==\n", sf_fault_mode_name(sf_tracker_fault_mode(t)));
    char *mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *want = calloc(3 * NPAGES, 1), *all = calloc(NPAGES, 1);
    struct seen s = {.base = mem, .bits = calloc(NPAGES, 1)};
    int bad = 0;
    if (mem == MAP_FAILED || !want || !all || !s.bits) {
        printf("  out of memory\n");
        bad = 1;
        goto out;
    }
    madvise(mem, NPAGES * PS, MADV_NOHUGEPAGE);
    if ((rc = sf_track(t, mem, NPAGES * PS)) != 0) {
        printf("  sf_track: %s\n", sf_strerror(rc));
        bad = 1;
        goto out;
    }
    printf("  wave: 8 MiB band moving through 0-%d MiB; stripe: every %dth page of %d-%d MiB; "
           "random: %d pages\n", WAVE_SPAN_MIB, STRIPE_EVERY, STRIPE_FROM_MIB, REGION_MIB,
           RANDOM_PAGES);
    printf("  map: 1 char = 1 MiB; ' ' clean, '.' < 1/8, 'o' < 1/2, 'O' < all, '#' all pages\n\n");
    printf("  interval  pages  runs  write ms  collect us  |%-*s| check\n", REGION_MIB, "0 MiB");
    double collect_us = 0;
    for (int i = 0; i < INTERVALS; i++) {
        struct interval iv = {.mem = mem, .i = i, .want = want, .rng = 0x2545f4914f6cdd1dull * (i + 1)};
        memset(want, 0, 3 * NPAGES);
        double w0 = now_us();
        pthread_t th[3];
        void *(*fn[3])(void *) = {wave, stripe, sprinkle};
        int started[3];
        for (int k = 0; k < 3; k++)
            if (!(started[k] = pthread_create(&th[k], NULL, fn[k], &iv) == 0))
                fn[k](&iv); /* no thread: do it here */
        for (int k = 0; k < 3; k++)
            if (started[k])
                pthread_join(th[k], NULL);
        double w1 = now_us();
        memset(s.bits, 0, NPAGES);
        s.runs = s.pages = s.outside = 0;
        double c0 = now_us();
        rc = sf_collect(t, SF_COLLECT_RESET, on_run, &s);
        double c1 = now_us();
        collect_us += c1 - c0;
        long missing = 0, extra = 0;
        for (size_t p = 0; p < NPAGES; p++) {
            all[p] = want[p] | want[NPAGES + p] | want[2 * NPAGES + p];
            missing += all[p] && !s.bits[p];
            extra += !all[p] && s.bits[p];
        }
        char map[REGION_MIB + 1];
        draw(s.bits, map);
        char verdict[64];
        if (rc < 0)
            snprintf(verdict, sizeof verdict, "collect failed: %s", sf_strerror(rc));
        else if (missing || extra || s.outside)
            snprintf(verdict, sizeof verdict, "MISMATCH: %ld missing, %ld extra", missing,
                     extra + s.outside);
        else
            snprintf(verdict, sizeof verdict, "exact");
        bad |= rc < 0 || missing || extra || s.outside;
        printf("  %8d %6ld %5ld %9.1f %11.0f  |%s| %s\n", i + 1, s.pages, s.runs,
               (w1 - w0) / 1e3, c1 - c0, map, verdict);
    }
    sf_stats st;
    sf_tracker_stats(t, &st);
    printf("\n  stats: %llu faults (%llu spurious), %llu pages unprotected, %llu collects, "
           "%llu pages collected,\n         collect time %.0f us in all (%.0f us per collect)",
           (unsigned long long)st.faults, (unsigned long long)st.spurious,
           (unsigned long long)st.pages_unprotected, (unsigned long long)st.collects,
           (unsigned long long)st.pages_collected, collect_us, collect_us / INTERVALS);
    if (backend == SF_BACKEND_MPROTECT)
        printf(",\n         %llu regions degraded, VMA estimate %llu", (unsigned long long)st.degraded,
               (unsigned long long)st.vma_estimate);
    printf("\n");
    sf_untrack(t, mem, NPAGES * PS);
out:
    sf_tracker_destroy(t);
    if (mem != MAP_FAILED)
        munmap(mem, NPAGES * PS);
    free(want);
    free(all);
    free(s.bits);
    return bad;
}

int main(int argc, char **argv)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    PAGES_PER_MIB = (1u << 20) / PS;
    NPAGES = (size_t)REGION_MIB * PAGES_PER_MIB;
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Optional arguments: backend names to demo (default: all usable). */
    int only[SF_BACKEND_COUNT] = {0}, any = 0;
    for (int a = 1; a < argc; a++) {
        int b = sf_backend_parse(argv[a]);
        if (b <= SF_BACKEND_AUTO) {
            fprintf(stderr, "usage: %s [uffd-async|uffd-sync|mprotect|soft-dirty]...\n", argv[0]);
            return 2;
        }
        only[b] = any = 1;
    }

    sf_caps c;
    if (sf_probe(&c) != 0) {
        fprintf(stderr, "sf_probe failed\n");
        return 1;
    }
    print_caps(&c);

    /* uffd-sync twice when both delivery modes work: AUTO's choice, then
     * the other one (in-thread is the fast one; handler threads also see
     * kernel writes). */
    static const struct {
        sf_backend b;
        unsigned flags;
        const char *title;
    } order[] = {
        {SF_BACKEND_UFFD_ASYNC, 0, "uffd-async: kernel-resolved write-protect, PAGEMAP_SCAN"},
        {SF_BACKEND_UFFD_SYNC, 0, "uffd-sync: write-protect faults resolved by snapfault"},
        {SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS, "uffd-sync, in-thread delivery asked for"},
        {SF_BACKEND_MPROTECT, 0, "mprotect: PROT_READ + SIGSEGV"},
        {SF_BACKEND_SOFTDIRTY, 0, "soft-dirty: clear_refs + pagemap"},
    };
    int failed = 0, ran = 0;
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
        if (any ? !only[order[k].b] : c.backend_ok[order[k].b] != 0)
            continue;
        if ((order[k].flags & SF_OPT_INTHREAD_FAULTS) &&
            (c.sync_mode == SF_FAULTS_INTHREAD || !c.uffd_sigbus))
            continue; /* AUTO's run already was in-thread, or it cannot be */
        int rc = demo(order[k].title, order[k].b, order[k].flags);
        ran += rc != 77;
        failed |= rc == 1;
    }
    printf("\n%s\n", failed ? "Some interval was not reported exactly." :
           ran ? "Every interval was reported exactly." : "No backend could run.");
    return failed ? 1 : 0;
}
