/* raw_mech.c - the baselines: each kernel write-tracking mechanism used
 * directly, the way a program would without snapfault, behind struct mech. */
#include "sfbench.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() do { } while (0)
#endif

enum raw_kind {
    RAW_PLAIN,         /* plain store / memcpy reference: nothing armed */
    RAW_ASYNC,         /* kernel-resolved uffd-wp, PAGEMAP_SCAN collect */
    RAW_SIGBUS,        /* uffd SIGBUS, one UFFDIO_WRITEPROTECT in the handler */
    RAW_MPROTECT,      /* SIGSEGV + mprotect of the page */
    RAW_MPROTECT_FULL, /* same faults; collect re-arms the whole region at once */
    RAW_THREAD,        /* sync uffd, a handler thread sleeping in poll(2) */
    RAW_SPIN,          /* sync uffd, a handler thread spinning on read(2) */
    RAW_FORK,          /* kernel COW after fork(); the child just waits */
};

static const struct {
    const char *name;
    enum raw_kind kind;
    int copy;   /* copy the page before unprotecting it (a snapshot's floor) */
    int rwlock; /* fault handling read-locks, collect write-locks (mmap_sem design) */
    unsigned flags;
} raw_table[] = {
    {"plain-write", RAW_PLAIN, 0, 0, 0},
    {"memcpy", RAW_PLAIN, 0, 0, MECH_OP_MEMCPY},
    {"raw-async-wp", RAW_ASYNC, 0, 0, 0},
    {"raw-sigbus", RAW_SIGBUS, 0, 0, 0},
    {"raw-sigbus-copy", RAW_SIGBUS, 1, 0, 0},
    {"raw-rwlock", RAW_SIGBUS, 0, 1, 0},
    {"raw-mprotect", RAW_MPROTECT, 0, 0, 0},
    {"raw-mprotect-copy", RAW_MPROTECT, 1, 0, 0},
    {"raw-mprotect-full", RAW_MPROTECT_FULL, 0, 0, 0},
    {"raw-uffd-thread", RAW_THREAD, 0, 0, 0},
    {"raw-uffd-spin", RAW_SPIN, 0, 0, 0},
    {"raw-fork-cow", RAW_FORK, 0, 0, 0},
};
#define N_RAW (sizeof raw_table / sizeof raw_table[0])

const char *const raw_mech_names[] = {
    "plain-write", "memcpy", "raw-async-wp", "raw-sigbus", "raw-sigbus-copy",
    "raw-rwlock", "raw-mprotect", "raw-mprotect-copy", "raw-mprotect-full",
    "raw-uffd-thread", "raw-uffd-spin", "raw-fork-cow", NULL,
};

/* One raw mechanism per process (the driver runs one job per process), and
 * signal handlers need to reach it: so the state is global. */
static struct {
    enum raw_kind kind;
    int copy, use_rw;
    char *base;
    size_t len, pages;
    int uffd, pagemap_fd;
    _Atomic uint64_t *dirty; /* one bit per page, set by the fault path */
    size_t words;
    char *save;              /* copy destination of the *-copy variants */
    pthread_rwlock_t rw;
    _Atomic uint64_t faults;
    pthread_t thread;
    int thread_running, stop_fd;
    atomic_int stop;
    pid_t child;
    int child_pipe;
    struct page_region *vec;
    size_t vec_len;
} R = {.uffd = -1, .pagemap_fd = -1, .stop_fd = -1, .child_pipe = -1};

/* ---- shared fault-path pieces (async-signal-safe) ---- */

static inline int in_region(uintptr_t a)
{
    return a >= (uintptr_t)R.base && a < (uintptr_t)R.base + R.len;
}

static inline void note_fault(size_t pg)
{
    if (R.copy)
        memcpy(R.save + (pg << PAGE_SHIFT_4K), R.base + (pg << PAGE_SHIFT_4K), PAGE_4K);
    atomic_fetch_or_explicit(&R.dirty[pg / 64], 1ULL << (pg % 64), memory_order_relaxed);
    atomic_fetch_add_explicit(&R.faults, 1, memory_order_relaxed);
}

static int uffd_wp(uintptr_t addr, size_t len, int protect)
{
    struct uffdio_writeprotect wp = {
        .range = {.start = addr, .len = len},
        .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    /* EAGAIN: the address space is changing under us; the call is idempotent */
    while (ioctl(R.uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
        if (errno != EAGAIN)
            return -errno;
    return 0;
}

static void on_sigsegv(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int saved = errno;
    uintptr_t a = (uintptr_t)si->si_addr;
    if (!in_region(a)) {
        /* not ours: return with the default action so the fault repeats and
         * kills the process with the right signal and address */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(sig, &dfl, NULL);
        errno = saved;
        return;
    }
    size_t pg = (a - (uintptr_t)R.base) >> PAGE_SHIFT_4K;
    note_fault(pg);
    /* ENOMEM past vm.max_map_count: returning would loop on this fault forever */
    if (mprotect(R.base + (pg << PAGE_SHIFT_4K), PAGE_4K, PROT_READ | PROT_WRITE) != 0)
        die_async("sfbench: mprotect in SIGSEGV handler failed (VMA limit?)\n");
    errno = saved;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int saved = errno;
    uintptr_t a = (uintptr_t)si->si_addr;
    if (!in_region(a)) {
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigaction(sig, &dfl, NULL);
        errno = saved;
        return;
    }
    size_t pg = (a - (uintptr_t)R.base) >> PAGE_SHIFT_4K;
    /* The interrupted code never holds R.rw (only handlers and the collector
     * take it, outside any tracked write), so locking here cannot self-deadlock. */
    if (R.use_rw)
        pthread_rwlock_rdlock(&R.rw);
    note_fault(pg);
    if (uffd_wp(a & ~(uintptr_t)(PAGE_4K - 1), PAGE_4K, 0) != 0)
        die_async("sfbench: UFFDIO_WRITEPROTECT in SIGBUS handler failed\n");
    if (R.use_rw)
        pthread_rwlock_unlock(&R.rw);
    errno = saved;
}

static void *uffd_handler_main(void *arg)
{
    (void)arg;
    struct uffd_msg msg[32];
    struct pollfd pfd[2] = {{.fd = R.uffd, .events = POLLIN}, {.fd = R.stop_fd, .events = POLLIN}};
    for (;;) {
        if (R.kind == RAW_SPIN) {
            if (atomic_load_explicit(&R.stop, memory_order_relaxed))
                break;
        } else {
            if (poll(pfd, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                die("poll(uffd): %s", strerror(errno));
            }
            if (pfd[1].revents)
                break;
        }
        ssize_t n = read(R.uffd, msg, sizeof msg);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                die("read(uffd): %s", strerror(errno));
            if (R.kind == RAW_SPIN)
                cpu_relax();
            continue;
        }
        for (size_t i = 0; i < (size_t)n / sizeof msg[0]; i++) {
            if (msg[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            uintptr_t a = (uintptr_t)msg[i].arg.pagefault.address & ~(uintptr_t)(PAGE_4K - 1);
            if (!in_region(a))
                continue;
            note_fault((a - (uintptr_t)R.base) >> PAGE_SHIFT_4K);
            /* mode 0 without DONTWAKE also wakes the thread blocked on the page */
            int rc = uffd_wp(a, PAGE_4K, 0);
            if (rc != 0)
                die("UFFDIO_WRITEPROTECT(0) from handler: %s", strerror(-rc));
        }
    }
    return NULL;
}

/* ---- setup ---- */

static int uffd_open(struct mech *m, uint64_t features)
{
    R.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (R.uffd < 0) {
        int e = errno;
        snprintf(m->why, sizeof m->why, "userfaultfd(): %s", strerror(e));
        return e == EPERM ? -ENOTSUP : -e;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    if (ioctl(R.uffd, UFFDIO_API, &api) != 0 || (api.features & features) != features) {
        snprintf(m->why, sizeof m->why, "UFFDIO_API features 0x%llx not offered: %s",
                 (unsigned long long)features, strerror(errno));
        return -ENOTSUP;
    }
    struct uffdio_register reg = {
        .range = {.start = (uintptr_t)R.base, .len = R.len},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(R.uffd, UFFDIO_REGISTER, &reg) != 0) {
        int e = errno;
        snprintf(m->why, sizeof m->why, "UFFDIO_REGISTER(WP): %s", strerror(e));
        return -e;
    }
    return 0;
}

static int install(int sig, void (*fn)(int, siginfo_t *, void *))
{
    struct sigaction sa = {.sa_sigaction = fn, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL) == 0 ? 0 : -errno;
}

static int raw_setup(struct mech *m)
{
    R.base = m->base;
    R.len = m->len;
    R.pages = m->len >> PAGE_SHIFT_4K;
    R.words = (R.pages + 63) / 64;
    R.dirty = calloc(R.words, sizeof *R.dirty);
    if (!R.dirty)
        return -ENOMEM;
    if (R.copy)
        R.save = region_alloc(m->len, 0);
    switch (R.kind) {
    case RAW_PLAIN:
    case RAW_FORK:
        return 0;
    case RAW_ASYNC: {
        int rc = uffd_open(m, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED);
        if (rc)
            return rc;
        R.pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        if (R.pagemap_fd < 0)
            return -errno;
        R.vec_len = 4096; /* 96 KiB of output; the walk resumes from walk_end when full */
        R.vec = calloc(R.vec_len, sizeof *R.vec);
        if (!R.vec)
            return -ENOMEM;
        /* probe PAGEMAP_SCAN once so an old kernel is "unsupported", not an error */
        struct pm_scan_arg a = {.size = sizeof a, .start = (uintptr_t)R.base,
                                .end = (uintptr_t)R.base + PAGE_4K, .vec = (uintptr_t)R.vec,
                                .vec_len = 1, .category_mask = PAGE_IS_WRITTEN,
                                .return_mask = PAGE_IS_WRITTEN};
        if (ioctl(R.pagemap_fd, PAGEMAP_SCAN, &a) < 0) {
            snprintf(m->why, sizeof m->why, "PAGEMAP_SCAN: %s", strerror(errno));
            return -ENOTSUP;
        }
        return 0;
    }
    case RAW_SIGBUS: {
        if (R.use_rw) {
            /* writer preference, like the kernel's rw_semaphore: a waiting
             * collect blocks new faults instead of starving */
            pthread_rwlockattr_t at;
            pthread_rwlockattr_init(&at);
            pthread_rwlockattr_setkind_np(&at, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
            pthread_rwlock_init(&R.rw, &at);
            pthread_rwlockattr_destroy(&at);
        }
        int rc = uffd_open(m, UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_UNPOPULATED);
        return rc ? rc : install(SIGBUS, on_sigbus);
    }
    case RAW_MPROTECT:
    case RAW_MPROTECT_FULL:
        return install(SIGSEGV, on_sigsegv);
    case RAW_THREAD:
    case RAW_SPIN: {
        int rc = uffd_open(m, UFFD_FEATURE_WP_UNPOPULATED);
        if (rc)
            return rc;
        R.stop_fd = eventfd(0, EFD_CLOEXEC);
        if (R.stop_fd < 0)
            return -errno;
        rc = pthread_create(&R.thread, NULL, uffd_handler_main, NULL);
        if (rc)
            return -rc;
        R.thread_running = 1;
        return 0;
    }
    }
    return -EINVAL;
}

/* ---- arm / disarm ---- */

static int raw_arm(struct mech *m)
{
    (void)m;
    for (size_t w = 0; w < R.words; w++)
        atomic_store_explicit(&R.dirty[w], 0, memory_order_relaxed);
    switch (R.kind) {
    case RAW_PLAIN:
        return 0;
    case RAW_ASYNC:
    case RAW_SIGBUS:
    case RAW_THREAD:
    case RAW_SPIN:
        return uffd_wp((uintptr_t)R.base, R.len, 1);
    case RAW_MPROTECT:
    case RAW_MPROTECT_FULL:
        return mprotect(R.base, R.len, PROT_READ) == 0 ? 0 : -errno;
    case RAW_FORK: {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0)
            return -errno;
        pid_t pid = fork();
        if (pid < 0)
            return -errno;
        if (pid == 0) {
            /* the child only keeps the pages shared until the parent is done */
            close(p[1]);
            char c;
            while (read(p[0], &c, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
        close(p[0]);
        R.child = pid;
        R.child_pipe = p[1];
        return 0;
    }
    }
    return -EINVAL;
}

static int raw_disarm(struct mech *m)
{
    (void)m;
    if (R.kind != RAW_FORK || R.child <= 0)
        return 0;
    close(R.child_pipe);
    R.child_pipe = -1;
    int st;
    while (waitpid(R.child, &st, 0) < 0 && errno == EINTR)
        ;
    R.child = 0;
    return 0;
}

/* ---- collect + reset ---- */

static int protect_run(size_t first, size_t n)
{
    char *p = R.base + (first << PAGE_SHIFT_4K);
    size_t len = n << PAGE_SHIFT_4K;
    if (R.kind == RAW_MPROTECT)
        return mprotect(p, len, PROT_READ) == 0 ? 0 : -errno;
    return uffd_wp((uintptr_t)p, len, 1);
}

/* The handler-based baselines keep their own dirty bitmap, as any userspace
 * tracker must.  Note: without a lock, a fault that sets its bit just before
 * the exchange and unprotects just after our re-protect leaves a writable
 * page with a clear bit (a lost write); the raw baselines measure cost, and
 * raw-rwlock shows what closing that race with a lock costs. */
static long bitmap_collect(void)
{
    long total = 0;
    size_t run_first = 0, run_n = 0;
    for (size_t w = 0; w < R.words; w++) {
        if (atomic_load_explicit(&R.dirty[w], memory_order_relaxed) == 0)
            continue;
        uint64_t x = atomic_exchange_explicit(&R.dirty[w], 0, memory_order_acq_rel);
        total += __builtin_popcountll(x);
        if (R.kind == RAW_MPROTECT_FULL)
            continue;
        while (x) {
            size_t pg = w * 64 + (size_t)__builtin_ctzll(x);
            x &= x - 1;
            if (run_n && run_first + run_n == pg) {
                run_n++;
                continue;
            }
            if (run_n) {
                int rc = protect_run(run_first, run_n);
                if (rc)
                    return rc;
            }
            run_first = pg;
            run_n = 1;
        }
    }
    if (R.kind == RAW_MPROTECT_FULL)
        return mprotect(R.base, R.len, PROT_READ) == 0 ? total : -errno;
    if (run_n) {
        int rc = protect_run(run_first, run_n);
        if (rc)
            return rc;
    }
    return total;
}

static long pagemap_collect(void)
{
    struct pm_scan_arg a = {
        .size = sizeof a,
        .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        .start = (uintptr_t)R.base,
        .end = (uintptr_t)R.base + R.len,
        .vec = (uintptr_t)R.vec,
        .vec_len = R.vec_len,
        .category_mask = PAGE_IS_WRITTEN,
        .return_mask = PAGE_IS_WRITTEN,
    };
    long total = 0;
    for (;;) {
        long n = ioctl(R.pagemap_fd, PAGEMAP_SCAN, &a);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        for (long i = 0; i < n; i++)
            total += (long)((R.vec[i].end - R.vec[i].start) >> PAGE_SHIFT_4K);
        /* a full vector stops the walk early: pages past walk_end are not reset yet */
        if (a.walk_end >= a.end)
            break;
        a.start = a.walk_end;
    }
    return total;
}

static long raw_collect(struct mech *m)
{
    (void)m;
    switch (R.kind) {
    case RAW_ASYNC:
        return pagemap_collect();
    case RAW_SIGBUS:
    case RAW_THREAD:
    case RAW_SPIN:
    case RAW_MPROTECT:
    case RAW_MPROTECT_FULL: {
        if (R.use_rw)
            pthread_rwlock_wrlock(&R.rw);
        long n = bitmap_collect();
        if (R.use_rw)
            pthread_rwlock_unlock(&R.rw);
        return n;
    }
    default:
        return -ENOTSUP;
    }
}

static void raw_extra(struct mech *m, char *buf, size_t n)
{
    (void)m;
    if (R.kind != RAW_PLAIN && R.kind != RAW_FORK && R.kind != RAW_ASYNC)
        snprintf(buf, n, " handler_faults=%llu",
                 (unsigned long long)atomic_load(&R.faults));
    else if (n)
        buf[0] = 0;
}

static void raw_teardown(struct mech *m)
{
    raw_disarm(m);
    if (R.thread_running) {
        atomic_store(&R.stop, 1);
        uint64_t one = 1;
        ssize_t w = write(R.stop_fd, &one, sizeof one);
        (void)w;
        pthread_join(R.thread, NULL);
        R.thread_running = 0;
    }
    if (R.uffd >= 0)
        close(R.uffd);
    if (R.pagemap_fd >= 0)
        close(R.pagemap_fd);
    if (R.stop_fd >= 0)
        close(R.stop_fd);
    R.uffd = R.pagemap_fd = R.stop_fd = -1;
    if (R.kind == RAW_MPROTECT || R.kind == RAW_MPROTECT_FULL)
        mprotect(R.base, R.len, PROT_READ | PROT_WRITE);
    region_free(R.save, R.len);
    R.save = NULL;
    free(R.dirty);
    free(R.vec);
    R.dirty = NULL;
    R.vec = NULL;
}

static const struct mech_ops raw_ops = {
    .setup = raw_setup,
    .arm = raw_arm,
    .disarm = raw_disarm,
    .collect = raw_collect,
    .extra = raw_extra,
    .teardown = raw_teardown,
};

int raw_mech_lookup(const char *name, struct mech *m)
{
    for (size_t i = 0; i < N_RAW; i++)
        if (strcmp(raw_table[i].name, name) == 0) {
            memset(m, 0, sizeof *m);
            m->name = raw_table[i].name;
            m->ops = &raw_ops;
            m->flags = raw_table[i].flags;
            R.kind = raw_table[i].kind;
            R.copy = raw_table[i].copy;
            R.use_rw = raw_table[i].rwlock;
            return 0;
        }
    return -ENOENT;
}

int mech_lookup(const char *name, struct mech *m)
{
    if (strncmp(name, "sf-", 3) == 0)
        return sf_mech_lookup(name, m);
    if (sf_engine_lookup(name, m) == 0)
        return 0;
    return raw_mech_lookup(name, m);
}
