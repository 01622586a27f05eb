/* rollback.c - a fuzz-style loop that mutates a large state and resets it
 * with sf_snapshot_restore, next to the fork-per-iteration reset that
 * fuzzers use today, measured in the same process.
 *
 *   rollback [--mb N] [--pages N] [--seconds S | --iterations N] [--backend NAME]
 *            [--engine auto|cow|mirror]
 *
 * --engine picks the snapshot engine: cow (copy-on-write, a fault and a page
 * copy per first write) or mirror (uffd-async: writes resolved by the
 * kernel, restore copies back from a shadow); run it once with each to see
 * both side by side.
 * --seconds runs each loop for a while (a measurement); --iterations runs
 * the restore loop N times and the fork baseline N/20 times, at least once
 * (the test suite: the same checks on any machine). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "snapfault.h"

static size_t PS;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* One fuzz iteration: dirty `pages` random pages and compute something
 * from them, so the compiler cannot drop the writes. */
static uint64_t iteration(char *state, size_t npages, unsigned pages)
{
    uint64_t acc = 0;
    for (unsigned i = 0; i < pages; i++) {
        size_t p = next() % npages;
        uint64_t *w = (uint64_t *)(state + p * PS + (next() % (PS / 8)) * 8);
        *w ^= next();
        acc += *w;
    }
    return acc;
}

static uint64_t checksum(const char *state, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i += 64)
        h = (h ^ *(const uint64_t *)(state + i)) * 1099511628211ull;
    return h;
}

int main(int argc, char **argv)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    size_t mb = 256;
    unsigned pages = 64;
    double seconds = 2;
    unsigned long iterations = 0; /* 0: run for `seconds` */
    sf_backend backend = SF_BACKEND_AUTO;
    unsigned flags = SF_OPT_SNAPSHOTS;
    sf_engine engine = SF_ENGINE_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mb") && i + 1 < argc)
            mb = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
            pages = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iterations = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--backend") && i + 1 < argc) {
            int b = sf_backend_parse(argv[++i]);
            if (b < 0) {
                fprintf(stderr, "rollback: unknown backend %s\n", argv[i]);
                return 2;
            }
            backend = (sf_backend)b;
        } else if (!strcmp(argv[i], "--engine") && i + 1 < argc) {
            i++;
            engine = !strcmp(argv[i], "cow") ? SF_ENGINE_COW : !strcmp(argv[i], "mirror") ? SF_ENGINE_MIRROR
                   : !strcmp(argv[i], "auto") ? SF_ENGINE_AUTO : SF_ENGINE_COUNT;
            if (engine == SF_ENGINE_COUNT) {
                fprintf(stderr, "rollback: unknown engine %s\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--in-thread"))
            flags |= SF_OPT_INTHREAD_FAULTS;
        else {
            fprintf(stderr, "usage: rollback [--mb N] [--pages N] [--seconds S | --iterations N] "
                            "[--backend NAME] [--engine auto|cow|mirror] [--in-thread]\n");
            return 2;
        }
    }
    if (!mb || !pages) {
        fprintf(stderr, "rollback: --mb and --pages must be positive\n");
        return 2;
    }
    size_t len = mb << 20, npages = len / PS;
    char *state = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (state == MAP_FAILED) {
        perror("rollback: mmap");
        return 1;
    }
    madvise(state, len, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < len; i += 8)
        *(uint64_t *)(state + i) = i * 0x9E3779B97F4A7C15ull;
    uint64_t golden = checksum(state, len);

    /* Baseline: fork per iteration, the child runs it and exits. */
    unsigned long forks = 0;
    double a = now_s();
    unsigned long fork_iterations = iterations / 20 ? iterations / 20 : 1;
    while (iterations ? forks < fork_iterations : now_s() - a < seconds) {
        pid_t pid = fork();
        if (pid == 0) {
            iteration(state, npages, pages);
            _exit(0);
        }
        if (pid < 0) {
            perror("rollback: fork");
            return 1;
        }
        waitpid(pid, NULL, 0);
        forks++;
    }
    double fork_rate = (double)forks / (now_s() - a);

    sf_tracker *t;
    sf_options opt = {.backend = backend, .flags = flags, .engine = engine};
    int rc = sf_tracker_create(&t, &opt);
    if (!rc)
        rc = sf_track(t, state, len);
    sf_snapshot *s = NULL;
    if (!rc)
        rc = sf_snapshot_take(t, &s);
    if (rc) {
        fprintf(stderr, "rollback: snapfault: %s\n", sf_strerror(rc));
        return 1;
    }
    unsigned long iters = 0, restored = 0;
    a = now_s();
    while (iterations ? iters < iterations : now_s() - a < seconds) {
        iteration(state, npages, pages);
        rc = sf_snapshot_restore(s);
        if (rc < 0) {
            fprintf(stderr, "rollback: restore: %s\n", sf_strerror(rc));
            return 1;
        }
        restored += (unsigned long)rc;
        iters++;
        /* Spot-check the reset now and then: the state is the original. */
        if ((iters & 1023) == 1 && checksum(state, len) != golden) {
            fprintf(stderr, "rollback: state differs from the snapshot after %lu iterations\n", iters);
            return 1;
        }
    }
    double sf_rate = (double)iters / (now_s() - a);
    int ok = checksum(state, len) == golden;
    sf_stats st;
    sf_tracker_stats(t, &st);
    printf("rollback: %zu MiB state, %u random pages dirtied per iteration\n", mb, pages);
    printf("  fork per iteration:    %10.0f iterations/s\n", fork_rate);
    printf("  sf_snapshot_restore:   %10.0f iterations/s  (%.1fx), %.1f us per restored page, %s engine, backend %s, %s\n",
           sf_rate, sf_rate / fork_rate, 1e6 / sf_rate / ((double)restored / (double)iters), sf_engine_name(st.engine),
           sf_backend_name(sf_tracker_backend(t)), sf_fault_mode_name(sf_tracker_fault_mode(t)));
    printf("  final state %s the snapshot; %" PRIu64 " faults, %" PRIu64 " copies, %" PRIu64 " reused\n",
           ok ? "equals" : "DIFFERS FROM", st.faults, st.copies, st.copies_shared);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    munmap(state, len);
    return ok ? 0 : 1;
}
