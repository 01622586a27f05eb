/* uxprog.c - small programs for tests/compat/ux.sh, each driven by events
 * (the intervals its own track record shows), never by the clock:
 *   dirty MIB            dirty MIB of fresh memory once and exit
 *   long RECORD N MIB    dirty MIB, wait for the next interval, N times
 *   thp RECORD           huge pages through tracking: AnonHugePages after
 *   names RECORD         a named anonymous mapping, dirtied in two intervals
 *   closeerr MIB         close stderr, then dirty MIB and exit */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

static void dirty(char *p, size_t len, int v)
{
    for (size_t i = 0; i < len; i += 4096)
        p[i] = (char)v;
}

/* Through the interposed mmap: tracked from the start (libc's malloc maps
 * large blocks with its internal mmap, which only the scanner finds). */
static char *fresh(size_t len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        exit(2);
    return p;
}

static int intervals(const char *record)
{
    FILE *f = fopen(record, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += line[0] == 'I' && line[1] == '\t';
    fclose(f);
    return n;
}

/* Until the record shows k more intervals than it did (a loud watchdog
 * of 120 s, never a verdict). */
static void wait_intervals(const char *record, int k)
{
    int want = intervals(record) + k;
    for (int i = 0; intervals(record) < want; i++) {
        if (i > 120000) {
            fprintf(stderr, "uxprog: no new interval in %s\n", record);
            exit(3);
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static long huge_kb(uintptr_t lo, uintptr_t hi)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char l[512];
    long kb = 0;
    int in = 0;
    while (f && fgets(l, sizeof(l), f)) {
        unsigned long a, b;
        char c;
        if (sscanf(l, "%lx-%lx %c", &a, &b, &c) == 3) {
            in = a < hi && lo < b;
            continue;
        }
        long v;
        if (in && sscanf(l, "AnonHugePages: %ld kB", &v) == 1)
            kb += v;
    }
    if (f)
        fclose(f);
    return kb;
}

static char *aligned(size_t len, int raw)
{
    size_t huge = 2u << 20;
    char *m = raw ? (char *)syscall(SYS_mmap, NULL, len + huge, PROT_READ | PROT_WRITE,
                                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                  : mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        exit(2);
    return (char *)(((uintptr_t)m + huge - 1) & ~(uintptr_t)(huge - 1));
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *cmd = argv[1];
    if (strcmp(cmd, "dirty") == 0 && argc == 3) {
        size_t len = (size_t)atoi(argv[2]) << 20;
        char *p = fresh(len);
        dirty(p, len, 1);
        printf("dirtied %zu\n", len);
        return 0;
    }
    if (strcmp(cmd, "long") == 0 && argc == 5) {
        int n = atoi(argv[3]);
        size_t len = (size_t)atoi(argv[4]) << 20;
        char *p = fresh(len);
        for (int i = 0; i < n; i++) {
            dirty(p, len, i + 1);
            wait_intervals(argv[2], 1);
        }
        printf("rounds %d\n", n);
        return 0;
    }
    if (strcmp(cmd, "closeerr") == 0 && argc == 3) {
        close(2);
        size_t len = (size_t)atoi(argv[2]) << 20;
        char *p = fresh(len);
        dirty(p, len, 1);
        return 0;
    }
    if (strcmp(cmd, "names") == 0 && argc == 3) {
        size_t len = 1u << 20;
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        int named = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p, len, (unsigned long)"uxbuf") == 0;
        char *h = malloc(64 << 10); /* the heap */
        for (int i = 0; i < 3; i++) {
            dirty(p, len, i + 1);
            dirty(h, 64 << 10, i + 1);
            wait_intervals(argv[2], 1);
        }
        printf("named %d\n", named);
        return 0;
    }
    if (strcmp(cmd, "thp") == 0 && argc == 3) {
        size_t len = 16u << 20;
        /* a mapping the preload cannot see being made (as libc's internal
         * mmap): only the scanner finds it, with its huge pages */
        char *p = aligned(len, 1);
        madvise(p, len, MADV_HUGEPAGE);
        dirty(p, len, 1);
        long before = huge_kb((uintptr_t)p, (uintptr_t)p + len);
        /* an interposed mmap, asked for huge pages before it is written */
        char *q = aligned(len, 0);
        madvise(q, len, MADV_HUGEPAGE);
        dirty(q, len, 1);
        wait_intervals(argv[2], 2);
        dirty(p, len, 2);
        dirty(q, len, 2);
        wait_intervals(argv[2], 2);
        printf("raw before %ld after %ld\n", before, huge_kb((uintptr_t)p, (uintptr_t)p + len));
        printf("mmap after %ld\n", huge_kb((uintptr_t)q, (uintptr_t)q + len));
        return 0;
    }
    return 2;
}
