/* engines.c - the snapshot-engine scenarios (take-1pct, take-all, first-take,
 * bg-save, engine-memory; engine-rollback is cmd_rollback with a label): each
 * engine (bench/sf_mech.c engine_options) next to fork() or the raw kernel
 * mechanism, measured in the same run. */
#include "sfbench.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum side { SIDE_FORK, SIDE_RAW_WP, SIDE_RAW_MPROTECT, SIDE_ENGINE };

static enum side side_of(const char *name, struct mech *m)
{
    if (strcmp(name, "fork") == 0)
        return SIDE_FORK;
    if (strcmp(name, "raw-wp") == 0)
        return SIDE_RAW_WP;
    if (strcmp(name, "raw-mprotect") == 0)
        return SIDE_RAW_MPROTECT;
    if (sf_engine_lookup(name, m) != 0)
        die("unknown engine '%s' (fork, raw-wp, raw-mprotect, or one of sf_engine_names)", name);
    return SIDE_ENGINE;
}

static inline void put(char *base, size_t pg, uint64_t v)
{
    *(volatile uint64_t *)(base + (pg << PAGE_SHIFT_4K)) = v;
}

/* Writes pct% of the pages: all in address order at 100%, else a random
 * subset (a different one per seed).  Returns ns per page written. */
static double dirty_pages(char *base, size_t total, double pct, uint64_t seed)
{
    size_t n = pct >= 100 ? total : (size_t)((double)total * pct / 100.0);
    uint32_t *order = pct >= 100 ? NULL : page_order(total, n, 1, seed);
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++)
        put(base, order ? order[i] : i, seed * 0x9e3779b97f4a7c15ULL + i);
    uint64_t t1 = now_ns();
    free(order);
    return n ? (double)(t1 - t0) / (double)n : 0;
}

static pid_t reap(pid_t pid)
{
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    return r;
}

/* fork() timed in the parent until it returns; the child exits at once. */
static double fork_ms(void)
{
    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    uint64_t t1 = now_ns();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    reap(pid);
    return (double)(t1 - t0) / 1e6;
}

static void engine_extra(struct mech *m, char *buf, size_t n)
{
    buf[0] = 0;
    if (m->ops && m->ops->extra)
        m->ops->extra(m, buf, n);
}

static void engine_teardown(struct mech *m)
{
    if (m->ops && m->ops->teardown)
        m->ops->teardown(m);
}

/* Gives a background pre-copy (the mirror engine fills its shadow from
 * sf_track on) a bounded chance to finish: polls sf_tracker_stats every
 * 5 ms until the pages pre-copied (sf_stats.precopied, when the library has
 * it; else store_bytes) reach the tracked size ("filled"), or have not grown
 * for settle_ms ("settled": nothing is being copied), or max_ms passed
 * ("bound").  Returns the ms waited. */
static double wait_precopy(struct mech *m, double max_ms, double settle_ms, const char **how)
{
    struct mech_stats st;
    uint64_t t0 = now_ns(), last_change = t0, last = UINT64_MAX;
    *how = "no-stats";
    if (!m->ops->stats)
        return 0;
    for (;;) {
        uint64_t t = now_ns();
        if (m->ops->stats(m, &st) != 0)
            return (double)(t - t0) / 1e6;
        uint64_t done = st.has_precopy ? st.precopied_pages << PAGE_SHIFT_4K : st.store_bytes;
        if (done != last) {
            last = done;
            last_change = t;
        }
        if (st.tracked_bytes && done >= st.tracked_bytes) {
            *how = "filled";
            return (double)(t - t0) / 1e6;
        }
        if ((double)(t - last_change) / 1e6 >= settle_ms) {
            *how = "settled";
            return (double)(t - t0) / 1e6;
        }
        if ((double)(t - t0) / 1e6 >= max_ms) {
            *how = "bound";
            return (double)(t - t0) / 1e6;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

/* ---- raw whole-range re-protection: the floor of a COW take ---- */

static int raw_uffd = -1;

static int raw_wp(char *base, size_t len, int protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = (uintptr_t)base, .len = len},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    while (ioctl(raw_uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
        if (errno != EAGAIN)
            return -errno;
    return 0;
}

static int raw_wp_setup(char *base, size_t len, char *why, size_t n)
{
    raw_uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (raw_uffd < 0) {
        snprintf(why, n, "userfaultfd(): %s", strerror(errno));
        return -ENOTSUP;
    }
    struct uffdio_api api = {.api = UFFD_API};
    struct uffdio_register reg = {.range = {.start = (uintptr_t)base, .len = len},
                                  .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(raw_uffd, UFFDIO_API, &api) != 0 || ioctl(raw_uffd, UFFDIO_REGISTER, &reg) != 0) {
        snprintf(why, n, "uffd WP registration: %s", strerror(errno));
        return -ENOTSUP;
    }
    return 0;
}

static void skip_or_fail(const char *kv, struct mech *m, int rc, const char *stage)
{
    m->flags |= MECH_ENGINE; /* raw sides too: an absent mechanism is a skip */
    result_failed(kv, m, rc, stage);
}

/* ------------------------------------------------------------------------ */
/* take-<pct>pct / take-all: the take after pct% of the pages were written  */
/* ------------------------------------------------------------------------ */

int cmd_take(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    double pct = opt_double("pct", 1);
    int takes = (int)opt_long("takes", 10);
    int live = (int)opt_long("live", 0);
    double wait_ms = opt_double("wait-ms", 10000);
    opt_check_all_used();
    if (takes < 1 || live < 0 || live > 62 || pct <= 0 || pct > 100) /* the library holds 64 */
        die("bad --takes/--live/--pct");
    size_t total = len >> PAGE_SHIFT_4K;
    struct mech m = {0};
    enum side side = side_of(name, &m);
    char kv[256], scn[32], extra[1024] = "";
    if (pct >= 100)
        snprintf(scn, sizeof scn, "take-all");
    else
        snprintf(scn, sizeof scn, "take-%gpct", pct);
    snprintf(kv, sizeof kv, "scenario=%s mech=%s mib=%zu live=%d", scn, name, len / MIB, live);
    m.base = region_alloc(len, 1);
    m.len = len;
    m.live = live;
    uint64_t *ns = calloc((size_t)takes, sizeof *ns);
    uint64_t *rel = calloc((size_t)takes, sizeof *rel);
    double *wr = calloc((size_t)takes, sizeof *wr);
    double waited = 0;
    const char *how = "";
    int rc = 0;
    uint64_t seed = 11;

    if (side == SIDE_ENGINE) {
        if ((rc = m.ops->setup(&m)) != 0) {
            skip_or_fail(kv, &m, rc, "setup");
            goto out;
        }
        waited = wait_precopy(&m, wait_ms, 200, &how);
    } else if (side == SIDE_RAW_WP) {
        if ((rc = raw_wp_setup(m.base, len, m.why, sizeof m.why)) != 0) {
            skip_or_fail(kv, &m, rc, "setup");
            goto out;
        }
    }
    /* one unmeasured fork/take/protect first: every measured one follows a
     * previous one, with pct% of the pages written in between */
    for (int r = -1; r < takes; r++) {
        /* the raw sides write while their range is unprotected (no handler) */
        int early = side == SIDE_FORK || side == SIDE_ENGINE;
        double w = r >= 0 && early ? dirty_pages(m.base, total, pct, seed++) : 0;
        uint64_t t0 = 0, t1 = 0, rel_ns = 0;
        switch (side) {
        case SIDE_FORK: {
            t0 = now_ns();
            pid_t pid = fork();
            if (pid == 0)
                _exit(0);
            t1 = now_ns();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            reap(pid);
            break;
        }
        case SIDE_RAW_WP:
            /* the state a COW take finds: written pages writable again */
            if ((rc = raw_wp(m.base, len, 0)) != 0)
                break;
            if (r >= 0)
                w = dirty_pages(m.base, total, pct, seed++);
            t0 = now_ns();
            rc = raw_wp(m.base, len, 1);
            t1 = now_ns();
            break;
        case SIDE_RAW_MPROTECT:
            if (mprotect(m.base, len, PROT_READ | PROT_WRITE) != 0) {
                rc = -errno;
                break;
            }
            if (r >= 0)
                w = dirty_pages(m.base, total, pct, seed++);
            t0 = now_ns();
            rc = mprotect(m.base, len, PROT_READ) == 0 ? 0 : -errno;
            t1 = now_ns();
            break;
        case SIDE_ENGINE:
            /* The release of the previous snapshot (live 0) is its own
             * call, which a program makes when it is done with that
             * snapshot (after its image is written); it is timed apart. */
            t0 = now_ns();
            if (m.ops->release_old)
                m.ops->release_old(&m);
            t1 = now_ns();
            rel_ns = t1 - t0;
            t0 = now_ns();
            rc = m.ops->arm(&m);
            t1 = now_ns();
            break;
        }
        if (rc) {
            skip_or_fail(kv, &m, rc, "take");
            goto out;
        }
        if (r >= 0) {
            ns[r] = t1 - t0;
            rel[r] = rel_ns;
            wr[r] = w;
        }
    }
    if (side == SIDE_ENGINE)
        engine_extra(&m, extra, sizeof extra);
    {
        double wmed = stat_median(wr, (size_t)takes);
        double mx = (double)stat_pct_u64(ns, (size_t)takes, 100) / 1e6;
        double mn = (double)stat_pct_u64(ns, (size_t)takes, 0) / 1e6;
        double p99 = (double)stat_pct_u64(ns, (size_t)takes, 99) / 1e6;
        double med = (double)stat_pct_u64(ns, (size_t)takes, 50) / 1e6;
        double relmed = (double)stat_pct_u64(rel, (size_t)takes, 50) / 1e6;
        char relkv[64] = "";
        if (side == SIDE_ENGINE)
            snprintf(relkv, sizeof relkv, " release_ms=%.3f", relmed);
        result("%s status=ok takes=%d pct=%g take_ms=%.3f take_p99_ms=%.3f take_min_ms=%.3f"
               " take_max_ms=%.3f write_ns_per_page=%.0f wait_ms=%.0f wait_end=%s%s%s",
               kv, takes, pct, med, p99, mn, mx, wmed, waited, how[0] ? how : "-", relkv, extra);
    }
out:
    if (side == SIDE_ENGINE)
        engine_teardown(&m);
    if (raw_uffd >= 0)
        close(raw_uffd);
    free(ns);
    free(rel);
    free(wr);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* first-take: the first take after sf_track of populated memory            */
/* ------------------------------------------------------------------------ */

int cmd_first_take(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    double wait_ms = opt_double("wait-ms", 10000);
    opt_check_all_used();
    size_t total = len >> PAGE_SHIFT_4K;
    struct mech m = {0};
    enum side side = side_of(name, &m);
    if (side == SIDE_RAW_WP || side == SIDE_RAW_MPROTECT)
        die("first-take compares engines with fork");
    char kv[256], extra[1024] = "";
    snprintf(kv, sizeof kv, "scenario=first-take mech=%s mib=%zu", name, len / MIB);
    m.base = region_alloc(len, 1);
    m.len = len;
    if (side == SIDE_FORK) {
        double first = fork_ms();
        dirty_pages(m.base, total, 1, 3);
        double second = fork_ms();
        result("%s status=ok first_take_ms=%.3f second_take_ms=%.3f track_ms=0 wait_ms=0 wait_end=-",
               kv, first, second);
        goto out;
    }
    uint64_t t0 = now_ns();
    int rc = m.ops->setup(&m);
    uint64_t t1 = now_ns();
    if (rc) {
        skip_or_fail(kv, &m, rc, "setup");
        goto out;
    }
    const char *how;
    double waited = wait_precopy(&m, wait_ms, 200, &how);
    uint64_t t2 = now_ns();
    rc = m.ops->arm(&m);
    uint64_t t3 = now_ns();
    if (rc) {
        skip_or_fail(kv, &m, rc, "take");
        goto out;
    }
    m.ops->disarm(&m);
    dirty_pages(m.base, total, 1, 3);
    uint64_t t4 = now_ns();
    rc = m.ops->arm(&m);
    uint64_t t5 = now_ns();
    if (rc) {
        skip_or_fail(kv, &m, rc, "second take");
        goto out;
    }
    engine_extra(&m, extra, sizeof extra);
    result("%s status=ok first_take_ms=%.3f second_take_ms=%.3f track_ms=%.3f wait_ms=%.1f"
           " wait_end=%s%s",
           kv, (double)(t3 - t2) / 1e6, (double)(t5 - t4) / 1e6, (double)(t1 - t0) / 1e6, waited,
           how, extra);
out:
    if (side == SIDE_ENGINE)
        engine_teardown(&m);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* bg-save: one mutator, a consistent save to a drained pipe or /dev/null   */
/* ------------------------------------------------------------------------ */

#if defined(__x86_64__) || defined(__i386__)
#define relax() __builtin_ia32_pause()
#else
#define relax() sched_yield()
#endif

enum { PH_OUT = 0, PH_SAVE = 1 };

static struct {
    volatile uint64_t *words;
    size_t mask;
    int every;
    atomic_int stop, phase, pause_req, paused;
    _Atomic uint64_t ops;
    _Atomic uint64_t maxgap[2]; /* longest gap between progress samples, per phase */
} G;

/* Random 8-byte writes over the whole region; a clock sample every G.every
 * writes.  A take stops it through pause_req (the header's rule: writers
 * are stopped for a take); the time it waits is part of its longest gap. */
static void *mutator(void *arg)
{
    (void)arg;
    uint64_t s = 0x5eed, ops = 0, last = now_ns();
    while (!atomic_load_explicit(&G.stop, memory_order_relaxed)) {
        if (atomic_load_explicit(&G.pause_req, memory_order_acquire)) {
            atomic_store_explicit(&G.paused, 1, memory_order_release);
            while (atomic_load_explicit(&G.pause_req, memory_order_acquire))
                relax();
            atomic_store_explicit(&G.paused, 0, memory_order_release);
        }
        for (int k = 0; k < G.every; k++) {
            uint64_t x = rng_next(&s);
            G.words[(x >> 11) & G.mask] = x;
        }
        ops += (uint64_t)G.every;
        uint64_t t = now_ns(), gap = t - last;
        last = t;
        int ph = atomic_load_explicit(&G.phase, memory_order_relaxed);
        if (gap > atomic_load_explicit(&G.maxgap[ph], memory_order_relaxed))
            atomic_store_explicit(&G.maxgap[ph], gap, memory_order_relaxed);
        atomic_store_explicit(&G.ops, ops, memory_order_relaxed);
    }
    return NULL;
}

static void *drain(void *arg)
{
    int fd = *(int *)arg;
    static char buf[1 << 20];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) != 0)
        if (n < 0 && errno != EINTR)
            break;
    return NULL;
}

/* The sink of one save: a pipe whose reader is a thread of this process, or
 * /dev/null (which reads nothing: a write(2) there touches no page). */
struct sink {
    int use_pipe, wfd, rfd;
    pthread_t th;
};

static void sink_open(struct sink *k, int use_pipe)
{
    k->use_pipe = use_pipe;
    if (!use_pipe) {
        k->wfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (k->wfd < 0)
            die("/dev/null: %s", strerror(errno));
        return;
    }
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    k->rfd = p[0];
    k->wfd = p[1];
    if (pthread_create(&k->th, NULL, drain, &k->rfd) != 0)
        die("drain thread");
}

static void sink_close(struct sink *k)
{
    close(k->wfd);
    if (k->use_pipe) {
        pthread_join(k->th, NULL);
        close(k->rfd);
    }
}

struct save_fig {
    double save_ms, pause_ms, handshake_ms, ops_per_s, stall_ms;
};

static int one_save(struct mech *m, enum side side, int use_pipe, struct save_fig *f)
{
    struct sink k;
    int rc = 0;
    sink_open(&k, use_pipe);
    atomic_store(&G.maxgap[PH_SAVE], 0);
    uint64_t o0 = atomic_load(&G.ops), ts = now_ns(), th = ts, tf0, tf1;
    atomic_store(&G.phase, PH_SAVE);
    if (side == SIDE_FORK) {
        /* the parent keeps mutating: fork is what stops it (page-table copy) */
        tf0 = now_ns();
        pid_t pid = fork();
        if (pid == 0) {
            /* async-signal-safe calls only: the parent is multi-threaded */
            for (size_t off = 0; off < m->len;) {
                size_t c = m->len - off < MIB ? m->len - off : MIB;
                ssize_t w = write(k.wfd, m->base + off, c);
                if (w < 0 && errno != EINTR)
                    _exit(1);
                off += w > 0 ? (size_t)w : 0;
            }
            _exit(0);
        }
        tf1 = now_ns();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        sink_close(&k); /* the parent's write end; the drain ends with the child's */
        reap(pid);
    } else {
        atomic_store(&G.pause_req, 1);
        while (!atomic_load(&G.paused))
            sched_yield();
        tf0 = now_ns();
        rc = m->ops->arm(m);
        tf1 = now_ns();
        atomic_store(&G.pause_req, 0);
        if (rc == 0)
            rc = m->ops->write_image(m, k.wfd);
        sink_close(&k);
    }
    uint64_t te = now_ns();
    atomic_store(&G.phase, PH_OUT);
    uint64_t o1 = atomic_load(&G.ops);
    if (side == SIDE_ENGINE)
        m->ops->disarm(m);
    f->save_ms = (double)(te - ts) / 1e6;
    f->pause_ms = (double)(tf1 - tf0) / 1e6;
    f->handshake_ms = (double)(tf0 - th) / 1e6;
    f->ops_per_s = (double)(o1 - o0) * 1e9 / (double)(te - ts);
    f->stall_ms = (double)atomic_load(&G.maxgap[PH_SAVE]) / 1e6;
    return rc;
}

static double med_field(struct save_fig *f, int n, size_t off, double *tmp)
{
    for (int i = 0; i < n; i++)
        tmp[i] = *(double *)((char *)&f[i] + off);
    return stat_median(tmp, (size_t)n);
}

int cmd_bg_save(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    int reps = (int)opt_long("reps", 2);
    uint64_t gap_ms = (uint64_t)opt_long("gap-ms", 300);
    const char *sinkname = opt_str("sink", "pipe");
    G.every = (int)opt_long("stamp-every", 16);
    opt_check_all_used();
    if (reps < 1 || G.every < 1 || (len & (len - 1)))
        die("bad --reps/--stamp-every, or --mib not a power of two");
    int use_pipe = strcmp(sinkname, "pipe") == 0;
    if (!use_pipe && strcmp(sinkname, "null") != 0)
        die("--sink pipe|null");
    struct mech m = {0};
    enum side side = side_of(name, &m);
    if (side == SIDE_RAW_WP || side == SIDE_RAW_MPROTECT)
        die("bg-save compares engines with fork");
    char kv[256], extra[1024] = "";
    snprintf(kv, sizeof kv, "scenario=bg-save mech=%s mib=%zu", name, len / MIB);
    m.base = region_alloc(len, 1);
    m.len = len;
    G.words = (volatile uint64_t *)m.base;
    G.mask = len / sizeof(uint64_t) - 1;
    struct save_fig *f = calloc((size_t)reps, sizeof *f);
    double *tmp = calloc((size_t)reps, sizeof *tmp);
    int rc = 0;
    if (side == SIDE_ENGINE) {
        if ((rc = m.ops->setup(&m)) != 0) {
            skip_or_fail(kv, &m, rc, "setup");
            goto done;
        }
        const char *how;
        wait_precopy(&m, 10000, 200, &how);
    }
    pthread_t th;
    if (pthread_create(&th, NULL, mutator, NULL) != 0)
        die("pthread_create");
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL); /* steady state */
    /* one unmeasured save: then each measured one saves what the mutator
     * wrote since the previous one */
    struct save_fig warm;
    if ((rc = one_save(&m, side, use_pipe, &warm)) != 0) {
        skip_or_fail(kv, &m, rc, "take/write");
        goto stop;
    }
    for (int r = 0; r < reps; r++) {
        struct timespec g = {(time_t)(gap_ms / 1000), (long)(gap_ms % 1000) * 1000000L};
        nanosleep(&g, NULL);
        if ((rc = one_save(&m, side, use_pipe, &f[r])) != 0) {
            skip_or_fail(kv, &m, rc, "take/write");
            goto stop;
        }
    }
    if (side == SIDE_ENGINE) {
        engine_extra(&m, extra, sizeof extra);
        engine_teardown(&m); /* the baseline below runs untracked */
    }
    {
        double save_ms = med_field(f, reps, offsetof(struct save_fig, save_ms), tmp);
        /* without a save: the same mutator, untracked, for as long as a save took */
        uint64_t dur = (uint64_t)((save_ms < 200 ? 200 : save_ms) * 1e6);
        atomic_store(&G.maxgap[PH_OUT], 0);
        uint64_t o0 = atomic_load(&G.ops), t0 = now_ns();
        struct timespec d = {(time_t)(dur / 1000000000u), (long)(dur % 1000000000u)};
        nanosleep(&d, NULL);
        uint64_t o1 = atomic_load(&G.ops), t1 = now_ns();
        double base = (double)(o1 - o0) * 1e9 / (double)(t1 - t0);
        double base_stall = (double)atomic_load(&G.maxgap[PH_OUT]) / 1e6;
        double pause = med_field(f, reps, offsetof(struct save_fig, pause_ms), tmp);
        double hs = med_field(f, reps, offsetof(struct save_fig, handshake_ms), tmp);
        double ops = med_field(f, reps, offsetof(struct save_fig, ops_per_s), tmp);
        double stall = med_field(f, reps, offsetof(struct save_fig, stall_ms), tmp);
        double worst = stat_max(tmp, (size_t)reps);
        result("%s status=ok reps=%d sink=%s save_ms=%.1f pause_ms=%.3f handshake_ms=%.3f"
               " ops_per_s_save=%.0f ops_per_s_base=%.0f throughput_ratio=%.4f stall_ms=%.3f"
               " stall_worst_ms=%.3f base_stall_ms=%.3f%s",
               kv, reps, sinkname, save_ms, pause, hs, ops, base, base > 0 ? ops / base : 0, stall,
               worst, base_stall, extra);
    }
stop:
    atomic_store(&G.stop, 1);
    pthread_join(th, NULL);
done:
    if (side == SIDE_ENGINE)
        engine_teardown(&m); /* a no-op after the teardown above */
    free(f);
    free(tmp);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* engine-memory: metadata, store and RSS per tracked GiB                   */
/* ------------------------------------------------------------------------ */

int cmd_engine_memory(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    double pct = opt_double("pct", 1);
    opt_check_all_used();
    size_t total = len >> PAGE_SHIFT_4K;
    struct mech m = {0};
    enum side side = side_of(name, &m);
    if (side == SIDE_RAW_WP || side == SIDE_RAW_MPROTECT)
        die("engine-memory compares engines with fork");
    char kv[256], extra[1024] = "";
    snprintf(kv, sizeof kv, "scenario=engine-memory mech=%s mib=%zu", name, len / MIB);
    m.base = region_alloc(len, 1);
    m.len = len;
    double gib = (double)len / (double)(1u << 30);
    long rss0 = proc_kb(0, "status", "VmRSS");
    if (side == SIDE_FORK) {
        /* a child that holds the memory as it was: one live "snapshot" */
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0)
            die("pipe");
        long pss0 = proc_kb(0, "smaps_rollup", "Pss_Anon");
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(p[1]);
            while (read(p[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        close(p[0]);
        long pte = proc_kb(pid, "status", "VmPTE");
        dirty_pages(m.base, total, pct, 4);
        long pss1 = proc_kb(0, "smaps_rollup", "Pss_Anon") + proc_kb(pid, "smaps_rollup", "Pss_Anon");
        close(p[1]);
        reap(pid);
        /* metadata: the child's page tables; memory: what parent + child
         * hold beyond the parent alone before the fork */
        result("%s status=ok pct=%g metadata_per_gib=%.0f store_per_gib=0 rss_track_per_gib=%.0f"
               " rss_live_per_gib=%.0f rss_two_per_gib=-1",
               kv, pct, (double)pte * 1024 / gib, (double)pte * 1024 / gib,
               (double)(pss1 - pss0 + pte) * 1024 / gib);
        goto out;
    }
    int rc = m.ops->setup(&m);
    if (rc) {
        skip_or_fail(kv, &m, rc, "setup");
        goto out;
    }
    const char *how;
    wait_precopy(&m, 10000, 200, &how);
    struct mech_stats s1, s2, s3;
    long rss1 = proc_kb(0, "status", "VmRSS");
    m.live = 1;
    if ((rc = m.ops->arm(&m)) != 0) {
        skip_or_fail(kv, &m, rc, "take");
        goto out;
    }
    dirty_pages(m.base, total, pct, 4);
    if ((rc = m.ops->stats(&m, &s1)) != 0) {
        skip_or_fail(kv, &m, rc, "stats");
        goto out;
    }
    long rss2 = proc_kb(0, "status", "VmRSS");
    /* a second take with the first still live, after another pct% */
    if ((rc = m.ops->arm(&m)) != 0) {
        skip_or_fail(kv, &m, rc, "second take");
        goto out;
    }
    dirty_pages(m.base, total, pct, 5);
    m.ops->stats(&m, &s2);
    long rss3 = proc_kb(0, "status", "VmRSS");
    m.ops->disarm(&m);
    m.ops->stats(&m, &s3);
    engine_extra(&m, extra, sizeof extra);
    result("%s status=ok pct=%g metadata_per_gib=%.0f store_per_gib=%.0f rss_track_per_gib=%.0f"
           " rss_live_per_gib=%.0f rss_two_per_gib=%.0f store_two_per_gib=%.0f"
           " store_released_per_gib=%.0f wait_end=%s%s",
           kv, pct, (double)s1.metadata_bytes / gib, (double)s1.store_bytes / gib,
           (double)(rss1 - rss0) * 1024 / gib, (double)(rss2 - rss0) * 1024 / gib,
           (double)(rss3 - rss0) * 1024 / gib, (double)s2.store_bytes / gib,
           (double)s3.store_bytes / gib, how, extra);
out:
    if (side == SIDE_ENGINE)
        engine_teardown(&m);
    region_free(m.base, len);
    return 0;
}
