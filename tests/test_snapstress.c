/* test_snapstress.c - model-based stress of snapshots: writer threads write
 * at random while a controller takes, reads, restores, streams and releases
 * snapshots at random; every read and image is compared with a shadow copy.
 * Usage: test_snapstress [OPS] (default 1000000 writes+operations).
 *
 * The run is bounded by counts (OPS writes and control operations, at least
 * OPS/500 of them control operations), never by the clock.  Environment:
 *   SF_TEST_VARIANT      one variant by name ("mprotect", "small-store", ...;
 *                        "!NAME": all but it)
 *   SF_TEST_ENGINE       one snapshot engine ("cow" or "mirror"; "!NAME":
 *                        the other)
 *   SF_TEST_STORE_PAGES  a store of N pages for the backend variants
 *   SF_TEST_VMA_BUDGET   leave the mprotect backend about N VMAs of budget
 *                        (holds mappings while the first tracker sizes it)
 *   SF_TEST_KEEP_GOING=1 count mismatches and go on (default: stop at the
 *                        first); the verdict fails on any
 *   SF_TEST_TIME_LIMIT   safety net in seconds (default 300 per 10^6 ops,
 *                        at least 300; 0: none): a run past it fails loudly
 *   SF_TEST_SEED         the controller's random seed (default: fixed, so
 *                        every variant runs the same operation sequence)
 * Each variant ends with one line to grep:
 *   SNAPSTRESS variant="..." ops=N writes=N control=N ... mismatches=N result=ok */
#include "harness.h"
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#define NPAGES 2048
#define WRITERS 2
#define MAXSNAP 16

static size_t PS, LEN;
static char *mem;
static _Atomic int pause_req, paused, stop;
static _Atomic long writes;

struct snap {
    sf_snapshot *s;
    char *shadow;
};

/* Under ThreadSanitizer the program's writes into tracked memory are left
 * uninstrumented.  Their order against snapfault's page copies is made by
 * page protection, which TSan cannot see: TSan records a store before the
 * instruction runs, so a store that faults and waits while the fault path
 * (or a handler thread) copies the still-protected page shows as a race,
 * and so does a live-page read in sf_snapshot_read / sf_snapshot_write,
 * which is validated afterwards by the page's state word (a seqlock).
 * Whether the copies are right is what the shadow comparison checks;
 * every access snapfault makes to its own state stays instrumented. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SF_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(SF_TSAN)
#define NO_TSAN __attribute__((no_sanitize("thread"), noinline))
#else
#define NO_TSAN
#endif

/* 64 writes at random: mostly random pages, sometimes a sequential burst. */
NO_TSAN static void write_some(unsigned long long *xp)
{
    unsigned long long x = *xp;
    for (int i = 0; i < 64; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t off = (x >> 8) % (LEN - 8) & ~(size_t)7;
        if ((x & 0xff) == 0) {
            size_t start = (off / PS) * PS, n = (x >> 40) % 32 + 1;
            for (size_t p = 0; p < n && start + p * PS < LEN; p++)
                ((volatile char *)mem)[start + p * PS + (x & 0x7f8)] = (char)x;
        } else {
            *(volatile uint64_t *)(mem + off) = x;
        }
    }
    *xp = x;
}

static void *writer(void *arg)
{
    unsigned long long x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    while (!atomic_load(&stop)) {
        if (atomic_load(&pause_req)) {
            atomic_fetch_add(&paused, 1);
            while (atomic_load(&pause_req) && !atomic_load(&stop))
                sched_yield();
            atomic_fetch_sub(&paused, 1);
            continue;
        }
        write_some(&x);
        atomic_fetch_add(&writes, 64);
    }
    return NULL;
}

static void quiesce(void)
{
    atomic_store(&pause_req, 1);
    while (atomic_load(&paused) < WRITERS)
        sched_yield();
}

/* Waits until every writer has left the pause, or the next quiesce could
 * count a writer that is already running again. */
static void resume(void)
{
    atomic_store(&pause_req, 0);
    while (atomic_load(&paused) > 0)
        sched_yield();
}

/* What a run did, for its SNAPSTRESS line. */
struct result {
    long writes, control, reads, restores, images, failed, mismatches;
    double secs;
};
static struct result last;
static int keep_going;
static long time_limit; /* seconds, 0: none */

/* A data mismatch: the first one's message is kept for the verdict; with
 * SF_TEST_KEEP_GOING the run goes on and counts them (the model stays
 * valid: shadows describe snapshots, and each take copies the memory as it
 * is), else it stops. */
static int mismatch(int *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int mismatch(int *err, const char *fmt, ...)
{
    char m[sizeof h_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (last.mismatches++ == 0)
        snprintf(h_msg, sizeof h_msg, "%s", m);
    if (last.mismatches <= 10 && keep_going) {
        printf("    mismatch %ld: %s\n", last.mismatches, m);
        fflush(stdout);
    }
    if (!keep_going)
        *err = 1;
    return 0;
}

static double since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static int run(const struct variant *v, long ops, size_t store)
{
    memset(&last, 0, sizeof last);
    sf_tracker *t;
    sf_options o = {.backend = v->backend, .flags = v->flags | SF_OPT_SNAPSHOTS, .store_limit = store,
                    .engine = v->engine};
    int rc = sf_tracker_create(&t, &o);
    if (rc == -ENOTSUP)
        SKIP("not supported here");
    CHECK_RC(rc, 0);
    LEN = NPAGES * PS;
    mem = map_region(LEN);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, LEN), 0);
    struct snap sn[MAXSNAP] = {{0}};
    char *buf = malloc(LEN);
    atomic_store(&stop, 0);
    atomic_store(&writes, 0);
    pthread_t th[WRITERS];
    for (long i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *)(i + 1));
    long control = 0, reads = 0, restores = 0, images = 0, failed = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int err = 0;
    /* Writers outrun the controller: require control operations too. */
    long min_control = ops / 500, progress_every = min_control / 10 > 0 ? min_control / 10 : 1;
    while (!err && (atomic_load(&writes) + control < ops || control < min_control)) {
        /* A safety net, not a verdict: a run that takes this long on any
         * machine is hung or pathologically slow, and says so. */
        if ((control & 63) == 0 && time_limit && since(&t0) > (double)time_limit) {
            snprintf(h_msg, sizeof h_msg,
                     "safety time limit of %ld s (SF_TEST_TIME_LIMIT) hit: %ld ops done, %ld of "
                     "%ld control ops", time_limit, atomic_load(&writes) + control, control,
                     min_control);
            err = 1;
            break;
        }
        if (control && control % progress_every == 0 && min_control >= 20000) {
            printf("    progress: %ld of %ld control ops, %ld writes, %ld mismatches, %.0f s\n",
                   control, min_control, atomic_load(&writes), last.mismatches, since(&t0));
            fflush(stdout);
        }
        int k = (int)(rnd() % MAXSNAP);
        unsigned op = (unsigned)(rnd() % 100);
        control++;
        if (!sn[k].s) {
            /* take: quiesce so that the shadow is exactly take's instant */
            quiesce();
            sn[k].shadow = malloc(LEN);
            memcpy(sn[k].shadow, mem, LEN);
            rc = sf_snapshot_take(t, &sn[k].s);
            resume();
            if (rc == -ENOSPC && store && v->engine == SF_ENGINE_MIRROR) {
                /* The mirror keeps versions at take: a small store fails
                 * the take itself. */
                free(sn[k].shadow);
                sn[k].s = NULL;
                failed++;
            } else if (rc) {
                snprintf(h_msg, sizeof h_msg, "take: %s", sf_strerror(rc));
                err = 1;
            }
        } else if (op < 60) {
            size_t off = rnd() % LEN, len = rnd() % (4 * PS) + 1;
            if (off + len > LEN)
                len = LEN - off;
            rc = sf_snapshot_read(sn[k].s, mem + off, buf, len);
            reads++;
            if (rc == -ENOSPC || rc == -ESTALE)
                failed++;
            else if (rc) {
                snprintf(h_msg, sizeof h_msg, "read of snapshot %d at %zu+%zu: %s", k, off, len,
                         sf_strerror(rc));
                err = 1;
            } else if (memcmp(buf, sn[k].shadow + off, len)) {
                mismatch(&err, "read of snapshot %d at %zu+%zu: data differs from the shadow", k,
                         off, len);
            }
        } else if (op < 70) {
            /* restore: memory equals the shadow; later snapshots go stale */
            quiesce();
            rc = sf_snapshot_restore(sn[k].s);
            if (rc >= 0 && memcmp(mem, sn[k].shadow, LEN)) {
                mismatch(&err, "memory differs after restore of %d", k);
            } else if (rc < 0 && rc != -ENOSPC && rc != -ESTALE) {
                snprintf(h_msg, sizeof h_msg, "restore: %s", sf_strerror(rc));
                err = 1;
            }
            resume();
            restores++;
        } else if (op < 75) {
            int fd = memfd_create("img", 0);
            rc = sf_snapshot_write(sn[k].s, fd); /* while writers run */
            images++;
            if (rc == 0) {
                sf_image *img;
                rc = sf_image_open(&img, fd);
                if (!rc) {
                    rc = sf_image_read(img, (uint64_t)(uintptr_t)mem, buf, LEN);
                    sf_image_close(img);
                }
                if (rc) {
                    snprintf(h_msg, sizeof h_msg, "image of %d: %s", k, sf_strerror(rc));
                    err = 1;
                } else if (memcmp(buf, sn[k].shadow, LEN)) {
                    mismatch(&err, "image of %d: differs", k);
                }
            } else if (rc != -ENOSPC && rc != -ESTALE) {
                snprintf(h_msg, sizeof h_msg, "write: %s", sf_strerror(rc));
                err = 1;
            }
            close(fd);
        } else if (op < 85) {
            sf_snapshot_release(sn[k].s);
            free(sn[k].shadow);
            sn[k].s = NULL;
        }
    }
    atomic_store(&stop, 1);
    resume();
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    sf_stats st;
    sf_tracker_stats(t, &st);
    for (int k = 0; k < MAXSNAP; k++)
        if (sn[k].s) {
            sf_snapshot_release(sn[k].s);
            free(sn[k].shadow);
        }
    sf_stats end;
    sf_tracker_stats(t, &end);
    sf_tracker_destroy(t);
    munmap(mem, LEN);
    free(buf);
    last = (struct result){atomic_load(&writes), control, reads, restores, images, failed,
                           last.mismatches, since(&t0)};
    if (err)
        return 1;
    if (last.mismatches) {
        size_t n = strlen(h_msg);
        snprintf(h_msg + n, sizeof h_msg - n, " (%ld mismatches in all)", last.mismatches);
        return 1;
    }
    CHECK(end.store_bytes == 0, "store holds %llu bytes with no snapshot", (unsigned long long)end.store_bytes);
    printf("    %ld writes, %ld control ops (%ld reads, %ld restores, %ld images, %ld failed/stale); "
           "faults %llu copies %llu shared %llu degraded %llu snapshots failed %llu\n",
           atomic_load(&writes), control, reads, restores, images, failed,
           (unsigned long long)st.faults, (unsigned long long)st.copies, (unsigned long long)st.copies_shared,
           (unsigned long long)st.degraded, (unsigned long long)st.snapshots_failed);
    return 0;
}

/* Makes the process-wide mprotect VMA budget about `budget` (h_hold_vmas)
 * and returns the budget the library set, or -1. */
static long set_vma_budget(long budget)
{
    if (h_hold_vmas(budget))
        return -1;
    sf_tracker *t0;
    sf_options o0 = {.backend = SF_BACKEND_MPROTECT};
    long got = -1;
    if (sf_tracker_create(&t0, &o0) == 0) {
        got = t0->vma_budget;
        sf_tracker_destroy(t0);
    }
    return got;
}

static unsigned long long seed;

static void result_line(const char *variant, long ops, int rc, const char *verdict)
{
    printf("SNAPSTRESS variant=\"%s\" seed=%llu target_ops=%ld ops=%ld writes=%ld control=%ld reads=%ld "
           "restores=%ld images=%ld failed_or_stale=%ld mismatches=%ld seconds=%.1f result=%s\n",
           variant, seed, ops, last.writes + last.control, last.writes, last.control, last.reads,
           last.restores, last.images, last.failed, last.mismatches, last.secs,
           verdict ? verdict : rc == 0 ? "ok" : rc == 77 ? "skip" : "FAIL");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    setvbuf(stdout, NULL, _IOLBF, 0);
    long ops = argc > 1 ? atol(argv[1]) : 1000000;
    const char *e = getenv("SF_TEST_KEEP_GOING");
    keep_going = e && *e && strcmp(e, "0") != 0;
    e = getenv("SF_TEST_TIME_LIMIT");
    time_limit = e && *e ? atol(e) : (ops / 1000000 > 1 ? ops / 1000000 : 1) * 300;
    e = getenv("SF_TEST_SEED");
    if (e && *e && strtoull(e, NULL, 0))
        h_rng = strtoull(e, NULL, 0);
    seed = h_rng;
    e = getenv("SF_TEST_STORE_PAGES");
    size_t store = e && *e ? (size_t)atol(e) * PS : 0;
    e = getenv("SF_TEST_VMA_BUDGET");
    long budget = -1;
    if (e && *e) {
        budget = set_vma_budget(atol(e));
        printf("mprotect VMA budget: %ld (asked for %s)\n", budget, e);
    }
    static const struct variant vs[] = {
        {"uffd-sync/in-thread", SF_BACKEND_UFFD_SYNC, SF_OPT_INTHREAD_FAULTS, 1, 0, SF_ENGINE_COW},
        {"uffd-sync/handler-threads", SF_BACKEND_UFFD_SYNC, SF_OPT_HANDLER_THREADS, 1, 1, SF_ENGINE_COW},
        {"mprotect", SF_BACKEND_MPROTECT, 0, 1, 0, SF_ENGINE_COW},
        {"mirror/uffd-async", SF_BACKEND_UFFD_ASYNC, 0, 1, 1, SF_ENGINE_MIRROR},
    };
    char name[200], what[120];
    for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
        if (!h_want(vs[i].name) || !h_want_engine(vs[i].engine))
            continue;
        char st_s[40] = "", bu_s[40] = "";
        if (store)
            snprintf(st_s, sizeof st_s, ", %zu-page store", store / PS);
        if (budget >= 0 && vs[i].backend == SF_BACKEND_MPROTECT)
            snprintf(bu_s, sizeof bu_s, ", VMA budget %ld", budget);
        snprintf(what, sizeof what, "%s%s%s", vs[i].name, st_s, bu_s);
        snprintf(name, sizeof name, "%s, %ld ops", what, ops);
        int rc = run(&vs[i], ops, store);
        result_line(what, ops, rc, NULL);
        h_report("model-based snapshot stress", name, rc);
    }
    /* A store too small for the traffic: snapshots fail, nothing else. */
    if (h_want("small-store") && h_want_engine(SF_ENGINE_COW)) {
        snprintf(what, sizeof what, "small-store: uffd-sync/in-thread, 64-page store");
        snprintf(name, sizeof name, "uffd-sync/in-thread, 64-page store, %ld ops", ops / 4);
        int rc = run(&vs[0], ops / 4, 64 * PS);
        result_line(what, ops / 4, rc, NULL);
        h_report("model-based snapshot stress", name, rc);
    }
    return h_finish();
}
