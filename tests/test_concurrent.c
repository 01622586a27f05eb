/* test_concurrent.c - writers racing a collector that resets in a loop: no
 * write is lost, nothing unwritten is reported, one fault per armed page. */
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdint.h>
#include <sys/wait.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#define REGION (64ul << 20)
#define NWRITERS 4
#define LOG_CAP (1u << 20)

static size_t PS, NPAGES;

/* A case's child is killed after this long: a hang fails loudly ("killed
 * by Alarm clock (hung)").  Every case is bounded by counts and runs in
 * about a second here; the watchdog is a safety net, never a verdict. */
#define CASE_WATCHDOG_S 300

/* One completed write: the page, and how many collects had started when
 * the write began.  A collect that returned before the write began cannot
 * report it, so with s collects started the write is owed by collect s-1
 * (possibly running) or a later one. */
struct wlog {
    uint32_t page;
    uint32_t started;
};

struct run {
    sf_tracker *t;
    char *mem;
    const uint32_t *targets; /* pages the writers pick from */
    size_t ntargets;
    /* The run is bounded by counts: `phases` collects race the writers,
     * each writer writes `per_phase` entries per phase.  Phase p (1-based)
     * begins once collect p-1 has begun, and collect p begins once every
     * writer has finished phase p: collect p-1 runs while phase p is
     * written, and phase p's writes are owed to collect p-1 or p, so at
     * least phases/2 collects report something, however the scheduler
     * runs the threads. */
    uint32_t phases, per_phase;
    _Atomic int stop;           /* the collector failed: writers give up */
    _Atomic uint32_t started; /* collects begun */
    /* collector's view, per page: 1 + first and last collect index that
     * reported it (0: never) */
    uint32_t *first, *last;
    long outside, collects_nonempty;
    uint32_t cur; /* index of the collect running now */
};

struct writer {
    pthread_t th;
    struct run *r;
    unsigned id;
    uint64_t rng;
    struct wlog *log;
    size_t n;
    _Atomic uint32_t done_phase; /* phases this writer has finished */
};

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Each writer owns 8 bytes of every page (at id * 8): the value is the
 * 1-based index of its log entry, so the final content can be checked
 * against the log. */
static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct run *r = w->r;
    for (uint32_t ph = 1; ph <= r->phases; ph++) {
        while (atomic_load(&r->started) < ph)
            if (atomic_load_explicit(&r->stop, memory_order_relaxed))
                return NULL;
            else
                sched_yield();
        for (uint32_t j = 0; j < r->per_phase && w->n < LOG_CAP; j++) {
            uint32_t p = r->targets[xs(&w->rng) % r->ntargets];
            uint32_t s = atomic_load(&r->started);
            *(volatile uint64_t *)(r->mem + (size_t)p * PS + w->id * 8) = w->n + 1;
            w->log[w->n++] = (struct wlog){p, s};
            /* A little pacing, so that writes spread over the collect
             * running meanwhile. */
            for (unsigned k = xs(&w->rng) % 512; k; k--)
                __asm__ volatile("" ::: "memory");
        }
        atomic_store(&w->done_phase, ph);
    }
    return NULL;
}

/* Waits (yielding) until every writer has finished phase ph. */
static void wait_writers(struct writer *w, uint32_t ph)
{
    for (unsigned i = 0; i < NWRITERS; i++)
        while (atomic_load(&w[i].done_phase) < ph)
            sched_yield();
}

static int on_run(void *addr, size_t len, void *arg)
{
    struct run *r = arg;
    for (char *p = addr; p < (char *)addr + len; p += PS) {
        if (p < r->mem || p >= r->mem + REGION) {
            r->outside++;
            continue;
        }
        size_t i = (size_t)(p - r->mem) / PS;
        if (!r->first[i])
            r->first[i] = r->cur + 1;
        r->last[i] = r->cur + 1;
    }
    return 0;
}

static int collect_once(struct run *r)
{
    r->cur = atomic_fetch_add(&r->started, 1);
    int rc = sf_collect(r->t, SF_COLLECT_RESET, on_run, r);
    if (rc > 0)
        r->collects_nonempty++;
    return rc;
}

/* Runs the writers against a collector for r->phases collects, then one
 * final collect, and checks the logs.  Returns 0 or 1 with h_msg. */
static int race(struct run *r, sf_stats *st)
{
    struct writer w[NWRITERS];
    memset(w, 0, sizeof w);
    r->first = calloc(NPAGES, sizeof(uint32_t));
    r->last = calloc(NPAGES, sizeof(uint32_t));
    CHECK(r->first && r->last, "calloc");
    CHECK((size_t)r->phases * r->per_phase <= LOG_CAP, "log too small for the run");
    int err = 0;
    for (unsigned i = 0; i < NWRITERS; i++) {
        w[i].r = r;
        w[i].id = i;
        w[i].rng = 0x9e3779b97f4a7c15ull * (i + 1);
        w[i].log = malloc(LOG_CAP * sizeof(struct wlog));
        CHECK(w[i].log, "malloc");
        CHECK(pthread_create(&w[i].th, NULL, writer_main, &w[i]) == 0, "pthread_create");
    }
    for (uint32_t c = 0; c < r->phases && !err; c++) {
        if (c > 0)
            wait_writers(w, c);
        int rc = collect_once(r);
        if (rc < 0)
            err = rc;
    }
    if (err)
        atomic_store(&r->stop, 1);
    else
        wait_writers(w, r->phases);
    for (unsigned i = 0; i < NWRITERS; i++)
        pthread_join(w[i].th, NULL);
    CHECK(err == 0, "sf_collect during the run: %s", sf_strerror(err));
    int rc = collect_once(r); /* what the last writes left */
    CHECK(rc >= 0, "final sf_collect: %s", sf_strerror(rc));
    CHECK(r->outside == 0, "%ld pages reported outside the region", r->outside);
    sf_tracker_stats(r->t, st);

    /* Every write reported by a collect that had not returned before it
     * began; the final content is the last logged value. */
    unsigned char *written = calloc(NPAGES, 1);
    uint32_t *minstart = malloc(NPAGES * sizeof(uint32_t));
    uint64_t *lastval = calloc(NPAGES, sizeof(uint64_t));
    CHECK(written && minstart && lastval, "calloc");
    memset(minstart, 0xff, NPAGES * sizeof(uint32_t));
    size_t total = 0;
    for (unsigned i = 0; i < NWRITERS && !err; i++) {
        memset(lastval, 0, NPAGES * sizeof(uint64_t));
        for (size_t k = 0; k < w[i].n; k++) {
            struct wlog e = w[i].log[k];
            uint32_t need = e.started ? e.started : 1; /* 1 + index of collect started-1 */
            if (r->last[e.page] < need) {
                snprintf(h_msg, sizeof h_msg,
                         "lost write: writer %u entry %zu page %u began after %u collects, "
                         "last reported by collect %d", i, k, e.page, e.started,
                         (int)r->last[e.page] - 1);
                err = 1;
                break;
            }
            written[e.page] = 1;
            if (e.started < minstart[e.page])
                minstart[e.page] = e.started;
            lastval[e.page] = k + 1;
        }
        for (size_t p = 0; p < NPAGES && !err; p++) {
            uint64_t got = *(volatile uint64_t *)(r->mem + p * PS + i * 8);
            if (got != lastval[p]) {
                snprintf(h_msg, sizeof h_msg, "page %zu writer %u holds %llu, last logged %llu", p,
                         i, (unsigned long long)got, (unsigned long long)lastval[p]);
                err = 1;
            }
        }
        total += w[i].n;
    }
    /* Exact trackers: nothing reported that was never written, and no
     * page reported by a collect that returned before its first write. */
    for (size_t p = 0; p < NPAGES && !err; p++) {
        if (!r->first[p])
            continue;
        if (!written[p]) {
            snprintf(h_msg, sizeof h_msg, "page %zu reported (collect %u) but never written", p,
                     r->first[p] - 1);
            err = 1;
        } else if (minstart[p] > r->first[p]) {
            snprintf(h_msg, sizeof h_msg,
                     "page %zu reported by collect %u, first written after %u collects began", p,
                     r->first[p] - 1, minstart[p]);
            err = 1;
        }
    }
    /* An mprotect region over its VMA budget is degraded: reported whole,
     * inexact.  Say so in the message (the budget is far from reached by
     * 256 pages: a degrade here is the estimate's fault). */
    if (err && st->degraded) {
        size_t len = strlen(h_msg);
        snprintf(h_msg + len, sizeof h_msg - len, " [mprotect degraded %llu, VMA estimate %llu]",
                 (unsigned long long)st->degraded, (unsigned long long)st->vma_estimate);
    }
    /* The run must have raced: many writes, collects that saw some (the
     * phases guarantee both when nothing is lost). */
    if (!err && (total < 10000 || r->collects_nonempty < 5)) {
        snprintf(h_msg, sizeof h_msg, "too little concurrency: %zu writes, %ld non-empty collects",
                 total, r->collects_nonempty);
        err = 1;
    }
    for (unsigned i = 0; i < NWRITERS; i++)
        free(w[i].log);
    free(written);
    free(minstart);
    free(lastval);
    free(r->first);
    free(r->last);
    return err;
}

static uint32_t *pick_targets(size_t n)
{
    uint32_t *v = malloc(n * sizeof(uint32_t));
    unsigned char *used = calloc(NPAGES, 1);
    if (!v || !used) {
        free(v);
        free(used);
        return NULL;
    }
    for (size_t i = 0; i < n;) {
        uint32_t p = (uint32_t)(rnd() % NPAGES);
        if (!used[p]) {
            used[p] = 1;
            v[i++] = p;
        }
    }
    free(used);
    return v;
}

/* 4 writers on 256 random pages of 64 MiB against a resetting collector
 * (re-arming costs a protect call per run, 60-150 us a page on this
 * machine under contention: more targets would mean a handful of collects
 * a second, fewer races). */
static int t_random(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    char *mem = map_region(REGION);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, REGION), 0);
    struct run r = {.t = t, .mem = mem, .ntargets = 256, .phases = 200, .per_phase = 500};
    uint32_t *targets = pick_targets(r.ntargets);
    CHECK(targets, "malloc");
    r.targets = targets;
    sf_stats st;
    rc = race(&r, &st);
    if (rc == 0 && sf_tracker_fault_mode(t) != SF_FAULTS_NONE) {
        /* Exact sync trackers: each report of a page follows one resolved
         * fault, and each fault is reported once by the end. */
        if (st.faults != st.pages_collected || st.degraded) {
            snprintf(h_msg, sizeof h_msg, "faults %llu != pages collected %llu (degraded %llu)",
                     (unsigned long long)st.faults, (unsigned long long)st.pages_collected,
                     (unsigned long long)st.degraded);
            rc = 1;
        }
    }
    free(targets);
    sf_tracker_destroy(t);
    munmap(mem, REGION);
    return rc;
}

/* All writers on the same 8 pages: they fault on the same page at the
 * same time, and each armed page is resolved once. */
static int t_hot(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    char *mem = map_region(REGION);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, REGION), 0);
    /* Neighbours and strangers: 4 adjacent pages and 4 spread out. */
    static const uint32_t hot[8] = {100, 101, 102, 103, 5000, 9001, 12345, 16383};
    struct run r = {.t = t, .mem = mem, .targets = hot, .ntargets = 8, .phases = 400,
                    .per_phase = 100};
    sf_stats st;
    rc = race(&r, &st);
    if (rc == 0 && sf_tracker_fault_mode(t) != SF_FAULTS_NONE) {
        /* Each collect re-arms a page at most once, so at most one fault
         * per page per collect (plus the first arming). */
        uint64_t bound = 8 * (st.collects + 1);
        if (st.faults > bound || st.faults < 8 || st.faults != st.pages_collected) {
            snprintf(h_msg, sizeof h_msg,
                     "faults %llu, pages collected %llu, collects %llu (bound %llu)",
                     (unsigned long long)st.faults, (unsigned long long)st.pages_collected,
                     (unsigned long long)st.collects, (unsigned long long)bound);
            rc = 1;
        }
    } else if (rc == 0 && st.faults != 0) {
        snprintf(h_msg, sizeof h_msg, "kernel-resolved backend counted %llu faults",
                 (unsigned long long)st.faults);
        rc = 1;
    }
    sf_tracker_destroy(t);
    munmap(mem, REGION);
    return rc;
}

/* Lock-step rounds: the page is armed, all writers hit it at once behind
 * a barrier, exactly one fault resolves it; in quiet rounds nobody writes
 * and the next collect must report nothing (no stale resolution re-opens
 * a page nobody wrote). */
struct lockstep {
    pthread_barrier_t go, done;
    char *page;
    int rounds;
    _Atomic int quiet; /* this round: do not write */
};

struct lockstep_writer {
    struct lockstep *ls;
    unsigned id;
    pthread_t th;
};

static void *lockstep_main(void *arg)
{
    struct lockstep_writer *w = arg;
    struct lockstep *ls = w->ls;
    for (int i = 0; i < ls->rounds; i++) {
        pthread_barrier_wait(&ls->go);
        if (!atomic_load(&ls->quiet))
            *(volatile uint64_t *)(ls->page + w->id * 8) = (uint64_t)i + 1;
        pthread_barrier_wait(&ls->done);
    }
    return NULL;
}

static int t_lockstep(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 16;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    struct lockstep ls = {.page = mem + 7 * PS, .rounds = 400};
    pthread_barrier_init(&ls.go, NULL, NWRITERS + 1);
    pthread_barrier_init(&ls.done, NULL, NWRITERS + 1);
    struct lockstep_writer w[NWRITERS];
    for (unsigned i = 0; i < NWRITERS; i++) {
        w[i] = (struct lockstep_writer){.ls = &ls, .id = i};
        CHECK(pthread_create(&w[i].th, NULL, lockstep_main, &w[i]) == 0, "pthread_create");
    }
    int writes = 0, err = 0;
    for (int i = 0; i < ls.rounds; i++) {
        int quiet = (i % 3) == 2;
        atomic_store(&ls.quiet, quiet);
        pthread_barrier_wait(&ls.go);
        pthread_barrier_wait(&ls.done);
        writes += !quiet;
        int got = sf_collect(t, SF_COLLECT_RESET, NULL, NULL);
        if (!err && got != !quiet) {
            snprintf(h_msg, sizeof h_msg, "round %d (%s): collect reported %d pages", i,
                     quiet ? "nobody wrote" : "4 writers", got);
            err = 1;
        }
        for (unsigned k = 0; k < NWRITERS && !err && !quiet; k++)
            if (*(volatile uint64_t *)(ls.page + k * 8) != (uint64_t)i + 1) {
                snprintf(h_msg, sizeof h_msg, "round %d: writer %u's value lost", i, k);
                err = 1;
            }
    }
    for (unsigned i = 0; i < NWRITERS; i++)
        pthread_join(w[i].th, NULL);
    pthread_barrier_destroy(&ls.go);
    pthread_barrier_destroy(&ls.done);
    sf_stats st;
    sf_tracker_stats(t, &st);
    if (!err && sf_tracker_fault_mode(t) != SF_FAULTS_NONE && st.faults != (uint64_t)writes) {
        snprintf(h_msg, sizeof h_msg, "%d write rounds took %llu resolved faults (spurious %llu)",
                 writes, (unsigned long long)st.faults, (unsigned long long)st.spurious);
        err = 1;
    }
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return err;
}

/* Many threads racing for one page after every reset, HOT_ROUNDS times: the
 * threads that lose the race fault while the winner holds the page and
 * retry.  Each such retry is a fault that completes; none may be taken for
 * "a page someone else protected" and forwarded to SIG_DFL. */
#define HOT_THREADS 8
#define HOT_ROUNDS 5000
struct hot_race {
    pthread_barrier_t go, done;
    char *page;
    _Atomic int stop;
};

static void *hot_race_main(void *arg)
{
    struct hot_race *h = ((void **)arg)[0];
    uintptr_t id = (uintptr_t)((void **)arg)[1];
    for (uint64_t i = 1;; i++) {
        pthread_barrier_wait(&h->go);
        if (atomic_load(&h->stop))
            return NULL;
        *(volatile uint64_t *)(h->page + id * 8) = i;
        pthread_barrier_wait(&h->done);
    }
}

static int t_hot_race(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    char *mem = map_region(PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, PS), 0);
    struct hot_race h = {.page = mem};
    pthread_barrier_init(&h.go, NULL, HOT_THREADS + 1);
    pthread_barrier_init(&h.done, NULL, HOT_THREADS + 1);
    pthread_t th[HOT_THREADS];
    void *args[HOT_THREADS][2];
    for (uintptr_t i = 0; i < HOT_THREADS; i++) {
        args[i][0] = &h;
        args[i][1] = (void *)i;
        CHECK(pthread_create(&th[i], NULL, hot_race_main, args[i]) == 0, "pthread_create");
    }
    long rounds = 0;
    int err = 0;
    while (rounds < HOT_ROUNDS) {
        pthread_barrier_wait(&h.go);
        pthread_barrier_wait(&h.done);
        rounds++;
        int got = sf_collect(t, SF_COLLECT_RESET, NULL, NULL);
        if (got != 1 && !err) {
            snprintf(h_msg, sizeof h_msg, "round %ld: collect reported %d pages", rounds, got);
            err = 1;
        }
    }
    atomic_store(&h.stop, 1);
    pthread_barrier_wait(&h.go);
    for (unsigned i = 0; i < HOT_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&h.go);
    pthread_barrier_destroy(&h.done);
    sf_stats st;
    sf_tracker_stats(t, &st);
    if (!err && sf_tracker_fault_mode(t) != SF_FAULTS_NONE && st.faults != (uint64_t)rounds) {
        snprintf(h_msg, sizeof h_msg, "%ld rounds took %llu resolved faults", rounds,
                 (unsigned long long)st.faults);
        err = 1;
    }
    sf_tracker_destroy(t);
    munmap(mem, PS);
    return err;
}

/* ------------------------------------------------------------------------
 * Running the cases
 * ------------------------------------------------------------------------ */

/* Each case runs in a child: a library bug that kills the process fails
 * that case only, and the others still run.  h_msg comes back through a
 * shared page.  Returns the case's result, or KILLED for a child killed by
 * SIGSEGV/SIGBUS (a fault snapfault forwarded to SIG_DFL). */
#define KILLED 2
static char *g_shared_msg;

static int run_isolated(int (*fn)(const struct variant *), const struct variant *v)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        SKIP("fork: %s", strerror(errno));
    if (pid == 0) {
        alarm(CASE_WATCHDOG_S);
        int rc = fn(v);
        memcpy(g_shared_msg, h_msg, sizeof h_msg);
#if defined(__SANITIZE_ADDRESS__)
        if (__lsan_do_recoverable_leak_check() && rc == 0) {
            snprintf(g_shared_msg, sizeof h_msg, "leaks (see the report above)");
            rc = 1;
        }
#endif
        _exit(rc);
    }
    g_shared_msg[0] = 0;
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    memcpy(h_msg, g_shared_msg, sizeof h_msg);
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        snprintf(h_msg, sizeof h_msg, "killed by %s%s", strsignal(sig),
                 sig == SIGALRM ? " (hung)" : "");
        return sig == SIGSEGV || sig == SIGBUS ? KILLED : 1;
    }
    if (WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 77 && !h_msg[0])
        snprintf(h_msg, sizeof h_msg, "child exited %d", WEXITSTATUS(st));
    return WEXITSTATUS(st);
}

/* A writer killed by SIGSEGV/SIGBUS (its fault forwarded as not ours) is
 * a failure like any other; these cases once had expected failures for
 * the stale handler-thread message and the mprotect VMA estimate drift,
 * both fixed in the core and checked strictly now. */
static void report(const char *name, int (*fn)(const struct variant *), const struct variant *v,
                   int rc)
{
    h_report(name, v->name, rc == KILLED ? 1 : rc);
}

int main(void)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    NPAGES = REGION / PS;
    g_shared_msg = mmap(NULL, sizeof h_msg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_shared_msg == MAP_FAILED)
        return 1;
    static const struct {
        const char *name;
        int (*fn)(const struct variant *);
    } cases[] = {
        {"4 writers on random pages vs a resetting collector", t_random},
        {"4 writers on the same 8 pages vs a resetting collector", t_hot},
        {"4 writers fault one armed page at once (lock-step)", t_lockstep},
        {"8 threads race for one page after every reset (5000 rounds)", t_hot_race},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
        for (size_t v = 0; v < NVARIANTS; v++)
            if (h_want(variants[v].name))
            report(cases[c].name, cases[c].fn, &variants[v],
                   run_isolated(cases[c].fn, &variants[v]));
    munmap(g_shared_msg, sizeof h_msg);
    return h_finish();
}
