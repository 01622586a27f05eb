/* scenarios.c - the measurement loops, one subcommand each; the
 * same loop drives a raw mechanism, fork() or snapfault through struct mech. */
#include "sfbench.h"

#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- shared bits ---- */

static struct mech lookup_or_die(const char *name)
{
    struct mech m;
    if (!name)
        die("--mech is required");
    if (mech_lookup(name, &m) != 0)
        die("unknown mechanism '%s' (see 'sfbench list')", name);
    return m;
}

static void mech_extra(struct mech *m, char *buf, size_t n)
{
    buf[0] = 0;
    if (m->ops->extra)
        m->ops->extra(m, buf, n);
}

static void mech_teardown(struct mech *m)
{
    if (m->ops->teardown)
        m->ops->teardown(m);
}

static inline void store_page(char *base, size_t pg, uint64_t v)
{
    /* volatile: the store itself is the measured event */
    *(volatile uint64_t *)(base + (pg << PAGE_SHIFT_4K)) = v;
}

static inline uint64_t fill_pattern(size_t pg)
{
    return 0x5346424e43480000ULL | pg; /* what region_alloc(len, 1) wrote at each page start */
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static pid_t wait_child(pid_t pid)
{
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    return r;
}

/* Pss of anonymous memory in KiB: shared COW pages count half in each
 * process, so parent+child Pss growth is the memory a fork really added. */
static long pss_anon_kb(pid_t pid)
{
    return proc_kb(pid, "smaps_rollup", "Pss_Anon");
}

/* n distinct random pages of total, cheap enough to call per iteration
 * (a Fisher-Yates over the whole region would dominate a rollback). */
static void random_pages(uint32_t *out, size_t n, size_t total, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t pg;
        int dup;
        do {
            pg = (uint32_t)(rng_next(seed) % total);
            dup = 0;
            for (size_t j = 0; j < i; j++)
                if (out[j] == pg)
                    dup = 1;
        } while (dup);
        out[i] = pg;
    }
}

/* ------------------------------------------------------------------------ */
/* 1. first-write fault cost per page                                       */
/* ------------------------------------------------------------------------ */

int cmd_fault(void)
{
    const char *name = opt_str("mech", NULL);
    const char *pattern = opt_str("pattern", "seq");
    size_t len = (size_t)opt_long("mib", 256) * MIB;
    size_t n = (size_t)opt_long("pages", 16384);
    int reps = (int)opt_long("reps", 5);
    uint64_t seed = (uint64_t)opt_long("seed", 1);
    opt_check_all_used();
    int rnd = strcmp(pattern, "rand") == 0;
    if (!rnd && strcmp(pattern, "seq") != 0)
        die("--pattern seq|rand");
    size_t total = len >> PAGE_SHIFT_4K;
    if (n == 0 || n > total)
        n = total;
    if (reps < 1)
        reps = 1;

    struct mech m = lookup_or_die(name);
    char kv[256], extra[512];
    snprintf(kv, sizeof kv, "scenario=fault mech=%s pattern=%s mib=%zu pages=%zu",
             name, pattern, len / MIB, n);
    m.base = region_alloc(len, 1);
    m.len = len;
    char *dst = (m.flags & MECH_OP_MEMCPY) ? region_alloc(n << PAGE_SHIFT_4K, 0) : NULL;
    uint32_t *order = page_order(total, n, rnd, seed);
    double *ns = calloc((size_t)reps, sizeof *ns);
    int rc = m.ops->setup(&m);
    if (rc) {
        result_failed(kv, &m, rc, "setup");
        goto out;
    }
    /* snapshots have nothing to collect; the copy is the work */
    int verify = m.ops->collect && !(m.flags & MECH_SNAPSHOT);
    long collected_min = LONG_MAX;
    for (int r = 0; r < reps; r++) {
        if ((rc = m.ops->arm(&m)) != 0) {
            result_failed(kv, &m, rc, "arm");
            goto out;
        }
        uint64_t t0 = now_ns();
        if (dst)
            for (size_t i = 0; i < n; i++)
                memcpy(dst + (i << PAGE_SHIFT_4K), m.base + ((size_t)order[i] << PAGE_SHIFT_4K), PAGE_4K);
        else
            for (size_t i = 0; i < n; i++)
                store_page(m.base, order[i], i + 1);
        uint64_t t1 = now_ns();
        if (m.ops->disarm)
            m.ops->disarm(&m);
        ns[r] = (double)(t1 - t0) / (double)n;
        if (verify) {
            /* proves the pages really faulted and were seen as written */
            long c = m.ops->collect(&m);
            if (c == -ENOTSUP)
                verify = 0;
            else if (c < 0) {
                result_failed(kv, &m, (int)c, "collect");
                goto out;
            } else if (c < collected_min)
                collected_min = c;
        }
    }
    mech_extra(&m, extra, sizeof extra);
    double mn = stat_min(ns, (size_t)reps), mx = stat_max(ns, (size_t)reps);
    result("%s status=ok reps=%d ns_per_page=%.1f min=%.1f max=%.1f collected=%ld%s", kv, reps,
           stat_median(ns, (size_t)reps), mn, mx, verify ? collected_min : -1L, extra);
out:
    mech_teardown(&m);
    free(ns);
    free(order);
    region_free(dst, n << PAGE_SHIFT_4K);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 2. collect + reset at 0/1/10/100% written                                */
/* ------------------------------------------------------------------------ */

int cmd_collect(void)
{
    const char *name = opt_str("mech", NULL);
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    const char *pcts = opt_str("pcts", "0,1,10,100");
    int reps = (int)opt_long("reps", 5);
    uint64_t seed = (uint64_t)opt_long("seed", 2);
    opt_check_all_used();
    if (reps < 1)
        reps = 1;
    size_t total = len >> PAGE_SHIFT_4K;

    struct mech m = lookup_or_die(name);
    char kv[256], extra[512];
    snprintf(kv, sizeof kv, "scenario=collect mech=%s mib=%zu", name, len / MIB);
    m.base = region_alloc(len, 0);
    m.len = len;
    double *ms = calloc((size_t)reps, sizeof *ms);
    int rc = m.ops->setup(&m);
    if (rc) {
        result_failed(kv, &m, rc, "setup");
        goto out;
    }
    if (!m.ops->collect) {
        m.why[0] = 0;
        result_failed(kv, &m, -ENOTSUP, "collect");
        goto out;
    }
    char *list = strdup(pcts), *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double pct = atof(tok);
        size_t n = (size_t)((double)total * pct / 100.0);
        /* 100%: in address order, so mprotect's VMAs merge back instead of
         * exceeding vm.max_map_count; partial: scattered pages */
        int rnd = pct < 100;
        char kvp[320];
        snprintf(kvp, sizeof kvp, "%s pct=%s pages_written=%zu", kv, tok, n);
        long collected_min = LONG_MAX, collected_max = 0;
        int r;
        for (r = 0; r < reps; r++) {
            uint32_t *order = page_order(total, n, rnd, seed + (uint64_t)r);
            if ((rc = m.ops->arm(&m)) != 0) {
                free(order);
                break;
            }
            for (size_t i = 0; i < n; i++)
                store_page(m.base, order[i], i + 1);
            free(order);
            uint64_t t0 = now_ns();
            long c = m.ops->collect(&m);
            uint64_t t1 = now_ns();
            if (c < 0) {
                rc = (int)c;
                break;
            }
            ms[r] = (double)(t1 - t0) / 1e6;
            if (c < collected_min)
                collected_min = c;
            if (c > collected_max)
                collected_max = c;
        }
        if (r < reps) {
            result_failed(kvp, &m, rc, "arm/collect");
            continue;
        }
        mech_extra(&m, extra, sizeof extra);
        result("%s status=ok reps=%d ms=%.3f min=%.3f max=%.3f collected_min=%ld collected_max=%ld%s",
               kvp, reps, stat_median(ms, (size_t)reps), stat_min(ms, (size_t)reps),
               stat_max(ms, (size_t)reps), collected_min, collected_max, extra);
    }
    free(list);
out:
    mech_teardown(&m);
    free(ms);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 3. pause: fork() vs sf_snapshot_take                                     */
/* ------------------------------------------------------------------------ */

static void dirty_for_pause(char *base, size_t total, double pct, uint64_t seed)
{
    size_t n = (size_t)((double)total * pct / 100.0);
    if (pct >= 100) {
        for (size_t pg = 0; pg < total; pg++)
            store_page(base, pg, pg ^ seed);
        return;
    }
    uint32_t *order = page_order(total, n, 1, seed);
    for (size_t i = 0; i < n; i++)
        store_page(base, order[i], i ^ seed);
    free(order);
}

int cmd_pause(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 256) * MIB;
    double pct = opt_double("pct", 100);
    int reps = (int)opt_long("reps", 5);
    opt_check_all_used();
    if (reps < 1)
        reps = 1;
    size_t total = len >> PAGE_SHIFT_4K;
    int is_fork = strcmp(name, "fork") == 0;
    struct mech m = {0};
    if (!is_fork)
        m = lookup_or_die(name);
    char kv[256], extra[512] = "";
    snprintf(kv, sizeof kv, "scenario=pause mech=%s mib=%zu pct=%g", name, len / MIB, pct);
    m.base = region_alloc(len, 0);
    m.len = len;
    double *ms = calloc((size_t)reps, sizeof *ms);
    int rc;
    if (is_fork) {
        /* one fork first, so every measured fork follows a previous one */
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        wait_child(pid);
        for (int r = 0; r < reps; r++) {
            dirty_for_pause(m.base, total, pct, (uint64_t)r + 1);
            uint64_t t0 = now_ns();
            pid = fork();
            if (pid == 0)
                _exit(0);
            uint64_t t1 = now_ns();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            ms[r] = (double)(t1 - t0) / 1e6;
            wait_child(pid);
        }
        snprintf(extra, sizeof extra, " vm_pte_kb=%ld", proc_kb(0, "status", "VmPTE"));
    } else {
        if (!(m.flags & MECH_SNAPSHOT)) {
            snprintf(m.why, sizeof m.why, "pause needs fork or an sf-snap-* mechanism");
            result_failed(kv, &m, -EINVAL, "setup");
            goto out;
        }
        if ((rc = m.ops->setup(&m)) != 0) {
            result_failed(kv, &m, rc, "setup");
            goto out;
        }
        /* a take+release first, for the same reason as the warm-up fork */
        if ((rc = m.ops->arm(&m)) != 0) {
            result_failed(kv, &m, rc, "take");
            goto out;
        }
        m.ops->disarm(&m);
        for (int r = 0; r < reps; r++) {
            dirty_for_pause(m.base, total, pct, (uint64_t)r + 1);
            uint64_t t0 = now_ns();
            rc = m.ops->arm(&m);
            uint64_t t1 = now_ns();
            if (rc) {
                result_failed(kv, &m, rc, "take");
                goto out;
            }
            /* released before the next writes, so no copies pile up: the
             * pause under test is the take, not the store filling up */
            m.ops->disarm(&m);
            ms[r] = (double)(t1 - t0) / 1e6;
        }
        mech_extra(&m, extra, sizeof extra);
    }
    result("%s status=ok reps=%d pause_ms=%.3f min=%.3f max=%.3f%s", kv, reps,
           stat_median(ms, (size_t)reps), stat_min(ms, (size_t)reps), stat_max(ms, (size_t)reps), extra);
out:
    if (!is_fork)
        mech_teardown(&m);
    free(ms);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 4. background save: fork()+child writes a file vs snapshot + write       */
/* ------------------------------------------------------------------------ */

enum { PH_IDLE = 0, PH_SAVE = 1 };

struct mutator {
    _Atomic uint64_t ops;
    _Atomic uint64_t maxgap[2]; /* longest gap between stamps, per phase */
    uint64_t seed;
    pthread_t th;
} __attribute__((aligned(64)));

static struct {
    volatile uint64_t *words;
    size_t mask;
    int stamp_every;
    atomic_int phase, stop;
} B;

static void *mutator_main(void *arg)
{
    struct mutator *mu = arg;
    uint64_t s = mu->seed, ops = 0, last = now_ns();
    while (!atomic_load_explicit(&B.stop, memory_order_relaxed)) {
        for (int k = 0; k < B.stamp_every; k++) {
            uint64_t x = rng_next(&s);
            B.words[(x >> 11) & B.mask] = x;
        }
        ops += (uint64_t)B.stamp_every;
        /* a stamp every few writes: the gap bounds how long one write took */
        uint64_t t = now_ns(), gap = t - last;
        last = t;
        int ph = atomic_load_explicit(&B.phase, memory_order_relaxed);
        if (gap > atomic_load_explicit(&mu->maxgap[ph], memory_order_relaxed))
            atomic_store_explicit(&mu->maxgap[ph], gap, memory_order_relaxed);
        atomic_store_explicit(&mu->ops, ops, memory_order_relaxed);
    }
    return NULL;
}

static uint64_t ops_sum(struct mutator *mu, int n)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++)
        s += atomic_load_explicit(&mu[i].ops, memory_order_relaxed);
    return s;
}

static uint64_t gap_max(struct mutator *mu, int n, int ph)
{
    uint64_t g = 0;
    for (int i = 0; i < n; i++) {
        uint64_t x = atomic_load_explicit(&mu[i].maxgap[ph], memory_order_relaxed);
        if (x > g)
            g = x;
    }
    return g;
}

/* The fork child: what Redis's BGSAVE child does, minus serialization.
 * Only async-signal-safe calls: the parent is multi-threaded. */
static void __attribute__((noreturn))
bgsave_child(const char *path, const char *base, size_t len, int fsync_it, int done_fd, int ack_fd)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        _exit(10);
    for (size_t off = 0; off < len;) {
        size_t chunk = len - off < MIB ? len - off : MIB;
        ssize_t w = write(fd, base + off, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(11);
        }
        off += (size_t)w;
    }
    if (fsync_it)
        fsync(fd);
    close(fd);
    char c = 1;
    if (write(done_fd, &c, 1) != 1)
        _exit(12);
    /* stay alive until the parent has read our memory figures */
    while (read(ack_fd, &c, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

struct save_figures {
    double save_ms, pause_ms, ops_per_s, stall_ms, extra_mib, image_mib;
};

/* One consistent save while the mutators run: fork + child writing the
 * file, or take + sf_snapshot_write + release.  0, or -errno from snapfault. */
static int one_save(struct mech *m, int is_fork, const char *path, int fsync_it,
                    struct mutator *mu, int threads, struct save_figures *f)
{
    long p0 = pss_anon_kb(0), p_end = 0;
    int rc = 0;
    for (int i = 0; i < threads; i++)
        atomic_store(&mu[i].maxgap[PH_SAVE], 0);
    uint64_t s0 = ops_sum(mu, threads);
    atomic_store(&B.phase, PH_SAVE);
    uint64_t ts = now_ns(), tf0, tf1, te;
    if (is_fork) {
        int done[2], ack[2];
        if (pipe2(done, O_CLOEXEC) || pipe2(ack, O_CLOEXEC))
            die("pipe: %s", strerror(errno));
        tf0 = now_ns();
        pid_t pid = fork();
        if (pid == 0)
            bgsave_child(path, m->base, m->len, fsync_it, done[1], ack[0]);
        tf1 = now_ns();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        char c;
        ssize_t got;
        while ((got = read(done[0], &c, 1)) < 0 && errno == EINTR)
            ;
        te = now_ns();
        atomic_store(&B.phase, PH_IDLE);
        if (got != 1)
            die("bgsave child failed");
        /* copies only accumulate during a save: now is the peak */
        p_end = pss_anon_kb(0) + pss_anon_kb(pid);
        if (write(ack[1], &c, 1) != 1)
            die("ack child");
        wait_child(pid);
        close(done[0]);
        close(done[1]);
        close(ack[0]);
        close(ack[1]);
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            die("open %s: %s", path, strerror(errno));
        tf0 = now_ns();
        rc = m->ops->arm(m);
        tf1 = now_ns();
        if (rc == 0)
            rc = m->ops->write_image(m, fd);
        if (rc == 0 && fsync_it)
            fsync(fd);
        te = now_ns();
        atomic_store(&B.phase, PH_IDLE);
        p_end = pss_anon_kb(0);
        m->ops->disarm(m);
        close(fd);
    }
    struct stat sb;
    f->image_mib = stat(path, &sb) == 0 ? (double)sb.st_size / (double)MIB : -1;
    unlink(path);
    uint64_t s1 = ops_sum(mu, threads);
    f->save_ms = (double)(te - ts) / 1e6;
    f->pause_ms = (double)(tf1 - tf0) / 1e6;
    f->ops_per_s = (double)(s1 - s0) * 1e9 / (double)(te - ts);
    f->stall_ms = (double)gap_max(mu, threads, PH_SAVE) / 1e6;
    f->extra_mib = (double)(p_end - p0) / 1024.0;
    return rc;
}

static double median_of(const struct save_figures *f, int reps, size_t off, double *tmp)
{
    for (int r = 0; r < reps; r++)
        tmp[r] = *(const double *)((const char *)&f[r] + off);
    return stat_median(tmp, (size_t)reps);
}

int cmd_bgsave(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    int threads = (int)opt_long("threads", 1);
    int reps = (int)opt_long("reps", 3);
    uint64_t base_ms = (uint64_t)opt_long("base-ms", 1000);
    uint64_t gap_ms = (uint64_t)opt_long("gap-ms", 300);
    int fsync_it = (int)opt_long("fsync", 0);
    const char *dir = opt_str("dir", "/tmp");
    B.stamp_every = (int)opt_long("stamp-every", 8);
    opt_check_all_used();
    /* threads 0 is allowed: the save of an idle process, for diagnosis */
    if (threads < 0 || threads > 64 || reps < 1 || B.stamp_every < 1)
        die("bad --threads/--reps/--stamp-every");
    if (len & (len - 1))
        die("--mib must be a power of two");
    int is_fork = strcmp(name, "fork") == 0;
    struct mech m = {0};
    if (!is_fork)
        m = lookup_or_die(name);
    char kv[256], extra[512] = "", path[256];
    snprintf(kv, sizeof kv, "scenario=bgsave mech=%s mib=%zu threads=%d", name, len / MIB, threads);
    snprintf(path, sizeof path, "%s/sfbench-bgsave-%d.img", dir, (int)getpid());
    if (!is_fork && (!(m.flags & MECH_SNAPSHOT) || !m.ops->write_image)) {
        snprintf(m.why, sizeof m.why, "bgsave needs fork or an sf-snap-* mechanism");
        result_failed(kv, &m, -EINVAL, "setup");
        return 0;
    }
    m.base = region_alloc(len, 1);
    m.len = len;
    /* copies can reach the whole region while mutators write during a save */
    m.store_limit = 2 * len;
    B.words = (volatile uint64_t *)m.base;
    B.mask = len / sizeof(uint64_t) - 1;
    struct save_figures *f = calloc((size_t)reps, sizeof *f);
    double *v = calloc((size_t)reps, sizeof *v);
    struct mutator *mu = aligned_alloc(64, sizeof *mu * (size_t)(threads ? threads : 1));
    memset(mu, 0, sizeof *mu * (size_t)(threads ? threads : 1));
    int rc = 0;
    for (int i = 0; i < threads; i++) {
        mu[i].seed = 0x1234567ULL * (uint64_t)(i + 1);
        if (pthread_create(&mu[i].th, NULL, mutator_main, &mu[i]) != 0)
            die("pthread_create");
    }
    sleep_ns(100 * 1000000ull); /* let the mutators reach steady state */

    /* "no save": the same mutators in the same process before any tracker
     * or fork exists, so both mechanisms are compared to one plain program */
    uint64_t o0 = ops_sum(mu, threads), t0 = now_ns();
    sleep_ns(base_ms * 1000000ull);
    uint64_t o1 = ops_sum(mu, threads), t1 = now_ns();
    double ops_base = (double)(o1 - o0) * 1e9 / (double)(t1 - t0);
    double idle_stall_ms = (double)gap_max(mu, threads, PH_IDLE) / 1e6;

    if (!is_fork) {
        if ((rc = m.ops->setup(&m)) != 0) {
            result_failed(kv, &m, rc, "setup");
            goto stop;
        }
    }
    /* A first, unmeasured save: afterwards every measured save starts from
     * the steady state "pages dirtied since the previous save". */
    struct save_figures warm;
    if ((rc = one_save(&m, is_fork, path, fsync_it, mu, threads, &warm)) != 0) {
        result_failed(kv, &m, rc, "take/write");
        goto stop;
    }
    for (int r = 0; r < reps; r++) {
        sleep_ns(gap_ms * 1000000ull); /* the mutators dirty pages between saves */
        if ((rc = one_save(&m, is_fork, path, fsync_it, mu, threads, &f[r])) != 0) {
            result_failed(kv, &m, rc, "take/write");
            goto stop;
        }
    }
    if (!is_fork)
        mech_extra(&m, extra, sizeof extra);
    double save_ms = median_of(f, reps, offsetof(struct save_figures, save_ms), v);
    double pause_ms = median_of(f, reps, offsetof(struct save_figures, pause_ms), v);
    double os = median_of(f, reps, offsetof(struct save_figures, ops_per_s), v);
    double extra_mib = median_of(f, reps, offsetof(struct save_figures, extra_mib), v);
    double image_mib = median_of(f, reps, offsetof(struct save_figures, image_mib), v);
    double stall = median_of(f, reps, offsetof(struct save_figures, stall_ms), v);
    double worst = stat_max(v, (size_t)reps);
    result("%s status=ok reps=%d save_ms=%.1f pause_ms=%.3f ops_per_s_save=%.0f ops_per_s_base=%.0f"
           " throughput_ratio=%.4f stall_ms=%.3f stall_ms_worst=%.3f idle_stall_ms=%.3f"
           " extra_mib=%.1f image_mib=%.1f%s",
           kv, reps, save_ms, pause_ms, os, ops_base, ops_base > 0 ? os / ops_base : 0, stall, worst,
           idle_stall_ms, extra_mib, image_mib, extra);
stop:
    atomic_store(&B.stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(mu[i].th, NULL);
    if (!is_fork)
        mech_teardown(&m); /* also frees a mechanism whose setup failed */
    free(mu);
    free(f);
    free(v);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 5. rollback loop: fork per iteration vs snapshot restore                 */
/* ------------------------------------------------------------------------ */

int cmd_rollback(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 256) * MIB;
    size_t dirty = (size_t)opt_long("dirty", 64);
    long iters = opt_long("iters", 200);
    int reps = (int)opt_long("reps", 3);
    const char *label = opt_str("label", "rollback"); /* the engines family: engine-rollback */
    opt_check_all_used();
    if (reps < 1 || iters < 1 || dirty < 1 || dirty > 4096)
        die("bad --reps/--iters/--dirty");
    size_t total = len >> PAGE_SHIFT_4K;
    int is_fork = strcmp(name, "fork") == 0;
    struct mech m = {0};
    if (!is_fork)
        m = lookup_or_die(name);
    char kv[256], extra[512] = "";
    snprintf(kv, sizeof kv, "scenario=%s mech=%s mib=%zu dirty=%zu", label, name, len / MIB, dirty);
    m.base = region_alloc(len, 1);
    m.len = len;
    double *rate = calloc((size_t)reps, sizeof *rate);
    uint32_t *pages = calloc(dirty, sizeof *pages);
    long restored_min = LONG_MAX;
    int rc, bad = 0;
    if (!is_fork) {
        if (!(m.flags & MECH_SNAPSHOT) || !m.ops->restore) {
            snprintf(m.why, sizeof m.why, "rollback needs fork or an sf-snap-* mechanism");
            result_failed(kv, &m, -EINVAL, "setup");
            goto out;
        }
        if ((rc = m.ops->setup(&m)) != 0) {
            result_failed(kv, &m, rc, "setup");
            goto out;
        }
        if ((rc = m.ops->arm(&m)) != 0) {
            result_failed(kv, &m, rc, "take");
            goto out;
        }
    }
    uint64_t seed = 77;
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = now_ns();
        for (long it = 0; it < iters; it++) {
            random_pages(pages, dirty, total, &seed);
            if (is_fork) {
                pid_t pid = fork();
                if (pid == 0) {
                    for (size_t i = 0; i < dirty; i++)
                        store_page(m.base, pages[i], (uint64_t)it);
                    _exit(0);
                }
                if (pid < 0)
                    die("fork: %s", strerror(errno));
                wait_child(pid);
            } else {
                for (size_t i = 0; i < dirty; i++)
                    store_page(m.base, pages[i], (uint64_t)it);
                rc = m.ops->restore(&m);
                if (rc < 0) {
                    result_failed(kv, &m, rc, "restore");
                    goto out;
                }
                if (rc < restored_min)
                    restored_min = rc;
            }
        }
        uint64_t t1 = now_ns();
        rate[r] = (double)iters * 1e9 / (double)(t1 - t0);
        /* the last iteration's pages must hold the original content again */
        for (size_t i = 0; i < dirty; i++)
            if (*(volatile uint64_t *)(m.base + ((size_t)pages[i] << PAGE_SHIFT_4K)) != fill_pattern(pages[i]))
                bad++;
    }
    if (!is_fork)
        mech_extra(&m, extra, sizeof extra);
    result("%s status=%s reps=%d iters=%ld iters_per_s=%.1f min=%.1f max=%.1f restored_min=%ld"
           " not_restored=%d%s",
           kv, bad ? "wrong" : "ok", reps, iters, stat_median(rate, (size_t)reps),
           stat_min(rate, (size_t)reps), stat_max(rate, (size_t)reps),
           is_fork ? (long)dirty : restored_min, bad, extra);
out:
    if (!is_fork)
        mech_teardown(&m);
    free(rate);
    free(pages);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 6/7. stall: writers faulting on fresh pages while a collector resets     */
/* ------------------------------------------------------------------------ */

struct writer {
    pthread_t th;
    size_t first, n, done;
    uint64_t *lat;
    uint64_t t_end;
};

static struct {
    struct mech *m;
    atomic_int stop, running;
    pthread_barrier_t bar;
    uint64_t period_ns;
    uint64_t *clat, *cpages;
    size_t nclat, clat_cap;
    int collect_err;
} S;

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    pthread_barrier_wait(&S.bar);
    size_t i;
    for (i = 0; i < w->n; i++) {
        if (atomic_load_explicit(&S.stop, memory_order_relaxed))
            break;
        uint64_t t0 = now_ns();
        store_page(S.m->base, w->first + i, i);
        w->lat[i] = now_ns() - t0;
    }
    w->done = i;
    w->t_end = now_ns();
    atomic_fetch_sub(&S.running, 1);
    return NULL;
}

static void *collector_main(void *arg)
{
    int have_writers = arg != NULL;
    pthread_barrier_wait(&S.bar);
    uint64_t next = now_ns();
    while (!atomic_load_explicit(&S.stop, memory_order_relaxed) &&
           (!have_writers || atomic_load(&S.running) > 0)) {
        uint64_t t0 = now_ns();
        long c = S.m->ops->collect(S.m);
        uint64_t t1 = now_ns();
        if (c < 0) {
            S.collect_err = (int)c;
            break;
        }
        if (S.nclat < S.clat_cap) {
            S.clat[S.nclat] = t1 - t0;
            S.cpages[S.nclat] = (uint64_t)c;
            S.nclat++;
        }
        next += S.period_ns;
        if (t1 < next) {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000u), .tv_nsec = (long)(next % 1000000000u)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        } else {
            next = t1; /* overran the period: no catch-up burst */
        }
    }
    return NULL;
}

int cmd_stall(void)
{
    const char *name = opt_str("mech", NULL);
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    int writers = (int)opt_long("writers", 1);
    int collect = (int)opt_long("collect", 1);
    double secs = opt_double("secs", 1.0);
    S.period_ns = (uint64_t)opt_long("period-us", 1000) * 1000u;
    opt_check_all_used();
    if (writers < 0 || writers > 64 || (writers == 0 && !collect))
        die("bad --writers/--collect");
    size_t total = len >> PAGE_SHIFT_4K;

    struct mech m = lookup_or_die(name);
    char kv[256], extra[512];
    snprintf(kv, sizeof kv, "scenario=stall mech=%s mib=%zu writers=%d collect=%d", name, len / MIB,
             writers, collect);
    m.base = region_alloc(len, 0);
    m.len = len;
    S.m = &m;
    struct writer *w = calloc((size_t)(writers ? writers : 1), sizeof *w);
    pthread_t cth;
    int rc = m.ops->setup(&m);
    if (rc) {
        result_failed(kv, &m, rc, "setup");
        goto out;
    }
    if (collect && !m.ops->collect) {
        result_failed(kv, &m, -ENOTSUP, "collect");
        goto out;
    }
    if ((rc = m.ops->arm(&m)) != 0) {
        result_failed(kv, &m, rc, "arm");
        goto out;
    }
    S.clat_cap = (size_t)(secs * 1e9 / (double)S.period_ns) * 2 + 64;
    S.clat = calloc(S.clat_cap, sizeof *S.clat);
    S.cpages = calloc(S.clat_cap, sizeof *S.cpages);
    pthread_barrier_init(&S.bar, NULL, (unsigned)(writers + collect + 1));
    atomic_store(&S.running, writers);
    /* each writer walks its own slice once, so every store hits a page that
     * is still armed from the start: each one is a fault, with or without
     * the collector re-arming what was already written */
    for (int i = 0; i < writers; i++) {
        w[i].first = total / (size_t)writers * (size_t)i;
        w[i].n = total / (size_t)writers;
        w[i].lat = malloc(w[i].n * sizeof *w[i].lat);
        if (!w[i].lat || pthread_create(&w[i].th, NULL, writer_main, &w[i]) != 0)
            die("writer setup");
    }
    if (collect && pthread_create(&cth, NULL, collector_main, writers ? &S : NULL) != 0)
        die("collector setup");
    pthread_barrier_wait(&S.bar);
    uint64_t t_start = now_ns(), deadline = t_start + (uint64_t)(secs * 1e9);
    while (now_ns() < deadline && (writers == 0 || atomic_load(&S.running) > 0))
        sleep_ns(1000000);
    atomic_store(&S.stop, 1);
    for (int i = 0; i < writers; i++)
        pthread_join(w[i].th, NULL);
    if (collect)
        pthread_join(cth, NULL);
    uint64_t t_stop = now_ns();
    if (S.collect_err) {
        result_failed(kv, &m, S.collect_err, "collect");
        goto out;
    }

    size_t nf = 0;
    uint64_t t_last = t_start;
    for (int i = 0; i < writers; i++) {
        nf += w[i].done;
        if (w[i].t_end > t_last)
            t_last = w[i].t_end;
    }
    uint64_t *all = malloc((nf ? nf : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < writers; i++) {
        memcpy(all + k, w[i].lat, w[i].done * sizeof *all);
        k += w[i].done;
    }
    double f50 = 0, f99 = 0, f999 = 0, fmax = 0, fps = 0;
    if (nf) {
        f50 = (double)stat_pct_u64(all, nf, 50) / 1e3;
        f99 = (double)stat_pct_u64(all, nf, 99) / 1e3;
        f999 = (double)stat_pct_u64(all, nf, 99.9) / 1e3;
        fmax = (double)stat_pct_u64(all, nf, 100) / 1e3;
        fps = (double)nf * 1e9 / (double)(t_last - t_start);
    }
    uint64_t cpages = 0;
    for (size_t i = 0; i < S.nclat; i++)
        cpages += S.cpages[i];
    double c50 = (double)stat_pct_u64(S.clat, S.nclat, 50) / 1e6;
    double c99 = (double)stat_pct_u64(S.clat, S.nclat, 99) / 1e6;
    double cmax = (double)stat_pct_u64(S.clat, S.nclat, 100) / 1e6;
    mech_extra(&m, extra, sizeof extra);
    result("%s status=ok secs=%.3f faults=%zu faults_per_s=%.0f fault_p50_us=%.2f fault_p99_us=%.2f"
           " fault_p999_us=%.2f fault_max_us=%.1f collects=%zu collected_pages=%llu"
           " collect_p50_ms=%.3f collect_p99_ms=%.3f collect_max_ms=%.3f%s",
           kv, (double)(t_stop - t_start) / 1e9, nf, fps, f50, f99, f999, fmax, S.nclat,
           (unsigned long long)cpages, c50, c99, cmax, extra);
    free(all);
out:
    mech_teardown(&m);
    for (int i = 0; i < writers; i++)
        free(w[i].lat);
    free(w);
    free(S.clat);
    free(S.cpages);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* 8. memory: metadata per tracked GiB, bytes per copied page               */
/* ------------------------------------------------------------------------ */

int cmd_memory(void)
{
    const char *name = opt_str("mech", "fork");
    size_t len = (size_t)opt_long("mib", 1024) * MIB;
    size_t copies = (size_t)opt_long("copies", 4096);
    opt_check_all_used();
    size_t total = len >> PAGE_SHIFT_4K;
    if (copies > total)
        copies = total;
    int is_fork = strcmp(name, "fork") == 0;
    struct mech m = {0};
    if (!is_fork)
        m = lookup_or_die(name);
    char kv[256], extra[512] = "";
    snprintf(kv, sizeof kv, "scenario=memory mech=%s mib=%zu copies=%zu", name, len / MIB, copies);
    m.base = region_alloc(len, 0);
    m.len = len;
    uint32_t *order = page_order(total, copies, 1, 5);
    double gib = (double)len / (double)(1u << 30);
    int rc;
    if (is_fork) {
        /* what the kernel keeps per process to share memory with a fork
         * child: the child's page tables; and what a COW copy really adds */
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0)
            die("pipe");
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(p[1]);
            while (read(p[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        close(p[0]);
        long pte_kb = proc_kb(pid, "status", "VmPTE");
        long p0 = pss_anon_kb(0) + pss_anon_kb(pid);
        for (size_t i = 0; i < copies; i++)
            store_page(m.base, order[i], i);
        long p1 = pss_anon_kb(0) + pss_anon_kb(pid);
        close(p[1]);
        wait_child(pid);
        result("%s status=ok metadata_bytes_per_gib=%.0f store_bytes_per_copy=%.1f", kv,
               (double)pte_kb * 1024.0 / gib, (double)(p1 - p0) * 1024.0 / (double)copies);
        goto out;
    }
    if ((rc = m.ops->setup(&m)) != 0) {
        result_failed(kv, &m, rc, "setup");
        goto out;
    }
    uint64_t meta = 0, store = 0, ncopies = 0;
    if (!m.ops->memory || (rc = m.ops->memory(&m, &meta, &store, &ncopies)) != 0) {
        result_failed(kv, &m, m.ops->memory ? rc : -ENOTSUP, "stats");
        goto out;
    }
    double per_copy = -1;
    if (m.flags & MECH_SNAPSHOT) {
        if ((rc = m.ops->arm(&m)) != 0) {
            result_failed(kv, &m, rc, "take");
            goto out;
        }
        for (size_t i = 0; i < copies; i++)
            store_page(m.base, order[i], i);
        uint64_t meta2, c0 = ncopies;
        if ((rc = m.ops->memory(&m, &meta2, &store, &ncopies)) != 0) {
            result_failed(kv, &m, rc, "stats");
            goto out;
        }
        if (ncopies > c0)
            per_copy = (double)store / (double)(ncopies - c0);
        m.ops->disarm(&m);
    }
    mech_extra(&m, extra, sizeof extra);
    result("%s status=ok metadata_bytes_per_gib=%.0f store_bytes_per_copy=%.1f%s", kv,
           (double)meta / gib, per_copy, extra);
out:
    if (!is_fork)
        mech_teardown(&m);
    free(order);
    region_free(m.base, len);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* calib: costs of kernel entry on this machine right now                   */
/* ------------------------------------------------------------------------ */

static void on_usr1(int sig)
{
    (void)sig;
}

/* The report quotes these next to FIELD-NOTES: a VM whose syscall or fault
 * entry is several times slower explains absolute figures; ratios remain. */
int cmd_calib(void)
{
    int n = (int)opt_long("n", 20000);
    opt_check_all_used();
    uint64_t t0 = now_ns();
    for (int i = 0; i < n; i++)
        syscall(SYS_getppid);
    double sys_ns = (double)(now_ns() - t0) / n;

    signal(SIGUSR1, on_usr1);
    t0 = now_ns();
    for (int i = 0; i < n / 4; i++)
        raise(SIGUSR1);
    double raise_ns = (double)(now_ns() - t0) / (n / 4);

    size_t len = 64 * MIB, pages = len >> PAGE_SHIFT_4K;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    madvise(p, len, MADV_NOHUGEPAGE);
    t0 = now_ns();
    for (size_t i = 0; i < pages; i++)
        store_page(p, i, i);
    double touch_ns = (double)(now_ns() - t0) / (double)pages;
    t0 = now_ns();
    for (size_t i = 0; i < pages; i++)
        store_page(p, i, i + 1);
    double write_ns = (double)(now_ns() - t0) / (double)pages;
    t0 = now_ns();
    mprotect(p, len, PROT_READ);
    double mprot_ms = (double)(now_ns() - t0) / 1e6;
    munmap(p, len);
    result("scenario=calib status=ok syscall_ns=%.0f raise_ns=%.0f first_touch_ns=%.0f"
           " resident_write_ns=%.1f mprotect_64mib_ms=%.3f",
           sys_ns, raise_ns, touch_ns, write_ns, mprot_ms);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* probe: what this kernel offers, for the report header                    */
/* ------------------------------------------------------------------------ */

int cmd_probe(void)
{
    opt_check_all_used();
    uint64_t features = 0;
    int ufd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (ufd >= 0) {
        struct uffdio_api api = {.api = UFFD_API, .features = 0};
        if (ioctl(ufd, UFFDIO_API, &api) == 0)
            features = api.features;
        close(ufd);
    }
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), scan = 0;
    if (pm >= 0) {
        struct page_region v;
        static char page[4096] __attribute__((aligned(4096)));
        struct pm_scan_arg a = {.size = sizeof a, .start = (uintptr_t)page, .end = (uintptr_t)page + 4096,
                                .vec = (uintptr_t)&v, .vec_len = 1, .category_mask = PAGE_IS_WRITTEN,
                                .return_mask = PAGE_IS_WRITTEN};
        scan = ioctl(pm, PAGEMAP_SCAN, &a) >= 0;
        close(pm);
    }
    long max_map = -1;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (f) {
        if (fscanf(f, "%ld", &max_map) != 1)
            max_map = -1;
        fclose(f);
    }
    result("scenario=probe uffd=%d uffd_features=0x%llx wp_async=%d wp_unpopulated=%d sigbus=%d"
           " pagemap_scan=%d max_map_count=%ld snapfault=%s",
           ufd >= 0, (unsigned long long)features, !!(features & UFFD_FEATURE_WP_ASYNC),
           !!(features & UFFD_FEATURE_WP_UNPOPULATED), !!(features & UFFD_FEATURE_SIGBUS), scan,
           max_map, sf_side_status());
    sf_side_probe();
    return 0;
}
