/* stop.c - world stop for point-in-time takes: every other thread of the
 * process is sent one reserved signal and waits in its handler, on a futex,
 * until the take is done; threads asleep in the kernel count as stopped
 * when they provably did not run meanwhile (no EINTR for them). */
#include "stop.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define TLS __attribute__((tls_model("initial-exec")))

/* ------------------------------------------------------------------------
 * Exempt threads: a fixed table of tids, CAS in and out.
 * ------------------------------------------------------------------------ */
#define EXEMPT_SLOTS 64
static _Atomic pid_t g_exempt[EXEMPT_SLOTS];

static pid_t my_tid(void) { return sf__os_gettid(); }

void sf__stop_exempt_add(void)
{
    pid_t tid = my_tid();
    for (int i = 0; i < EXEMPT_SLOTS; i++) {
        pid_t z = 0;
        if (atomic_compare_exchange_strong(&g_exempt[i], &z, tid))
            return;
    }
    /* Table full: this thread is stopped like the program's; a take that
     * needs it (a pre-copy thread only takes t->lock, handler threads are
     * at most 8 per tracker) is then slower, never wrong. */
}

void sf__stop_exempt_remove(void)
{
    pid_t tid = my_tid();
    for (int i = 0; i < EXEMPT_SLOTS; i++) {
        pid_t w = tid;
        if (atomic_compare_exchange_strong(&g_exempt[i], &w, 0))
            return;
    }
}

/* A library thread is exempt from its first instruction on: its creator
 * waits until it registered, so no take sees it unregistered (it blocks
 * every signal, and would never acknowledge a stop). */
struct exempt_start {
    void *(*fn)(void *);
    void *arg;
    _Atomic uint32_t ready;
};

static void *exempt_main(void *p)
{
    struct exempt_start *st = p;
    void *(*fn)(void *) = st->fn;
    void *arg = st->arg;
    sf__stop_exempt_add();
    atomic_store(&st->ready, 1);
    sf__os_futex_wake((_Atomic int *)&st->ready, 1);
    void *r = fn(arg);
    sf__stop_exempt_remove();
    return r;
}

int sf__exempt_thread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    struct exempt_start st = {fn, arg, 0};
    int err = sf__os_thread_create(th, attr, exempt_main, &st);
    if (err)
        return err;
    while (!atomic_load(&st.ready))
        sf__os_futex_wait((_Atomic int *)&st.ready, 0, NULL);
    return 0;
}

static bool is_exempt(pid_t tid)
{
    for (int i = 0; i < EXEMPT_SLOTS; i++)
        if (atomic_load_explicit(&g_exempt[i], memory_order_relaxed) == tid)
            return true;
    return false;
}

bool sf__stop_exempt_self(void)
{
    return is_exempt(my_tid());
}

/* ------------------------------------------------------------------------
 * The stop itself.  g_world is odd while the world is stopped; a stopped
 * thread waits on it.  g_tg lists the threads of the current stop; a
 * thread that finds itself there acknowledges once (g_acks, a futex the
 * stopper waits on).  Only the stopper (g_stop_lock) writes the table.
 * ------------------------------------------------------------------------ */
#define STOP_MAX_THREADS 4096
struct target {
    _Atomic pid_t tid;
    _Atomic int acked;
    bool signalled;
    bool asleep;        /* counted stopped without a signal */
    bool gone;
    bool deaf;          /* blocks the signal: never acknowledges */
    uint64_t sched[3];  /* schedstat when judged asleep */
};
static struct target g_tg[STOP_MAX_THREADS];
static _Atomic size_t g_ntg;
static _Atomic uint32_t g_world;
static _Atomic uint32_t g_acks;
static _Atomic uint32_t g_parked; /* threads inside park(), woken or not */
static _Atomic long g_outstanding; /* signals sent that were never acknowledged */
static pthread_mutex_t g_stop_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int g_signo;
static _Atomic pid_t g_pid;
static struct sigaction g_host; /* the handler found on the signal, chained to */
static uint64_t g_t0;
/* Threads that ran while counted asleep in the last stop: signalled by a
 * FORCED stop. */
static pid_t g_ran[64];
static unsigned g_nran;

static __thread int tls_stopper TLS;
static __thread volatile int tls_depth TLS, tls_pending TLS;

/* The words are 32-bit counters: the contract's futex calls take them as
 * int (same size and representation). */
static long futex(_Atomic uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    if (op == FUTEX_WAKE_PRIVATE)
        return sf__os_futex_wake((_Atomic int *)w, (int)val);
    return sf__os_futex_wait((_Atomic int *)w, (int)val, ts);
}

bool sf__stop_is_stopper(void) { return tls_stopper != 0; }

/* Waits until the stopper advances g_world past w.  Async-signal-safe. */
static void park(void)
{
    uint32_t w = atomic_load(&g_world);
    if (!(w & 1))
        return; /* a late signal: the stop it was for is over */
    pid_t tid = my_tid();
    size_t n = atomic_load(&g_ntg);
    for (size_t i = 0; i < n; i++)
        if (atomic_load_explicit(&g_tg[i].tid, memory_order_relaxed) == tid) {
            int z = 0;
            if (atomic_compare_exchange_strong(&g_tg[i].acked, &z, 1)) {
                atomic_fetch_add(&g_acks, 1);
                futex(&g_acks, FUTEX_WAKE_PRIVATE, 1, NULL);
            }
            break;
        }
    atomic_fetch_add(&g_parked, 1);
    while (atomic_load(&g_world) == w)
        futex(&g_world, FUTEX_WAIT_PRIVATE, w, NULL);
    if (atomic_fetch_sub(&g_parked, 1) == 1)
        futex(&g_parked, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL);
}

void sf__nostop_enter(void)
{
    tls_depth++;
    atomic_signal_fence(memory_order_seq_cst);
}

void sf__nostop_exit(void)
{
    atomic_signal_fence(memory_order_seq_cst);
    if (--tls_depth == 0 && tls_pending) {
        tls_pending = 0;
        int saved = errno;
        park();
        errno = saved;
    }
}

static void chain(int sig, siginfo_t *si, void *uc)
{
    struct sigaction h = g_host;
    if (h.sa_flags & SA_SIGINFO) {
        if (h.sa_sigaction)
            h.sa_sigaction(sig, si, uc);
    } else if (h.sa_handler != SIG_DFL && h.sa_handler != SIG_IGN && h.sa_handler) {
        h.sa_handler(sig);
    }
    /* SIG_DFL of a real-time signal would end the process; a signal of the
     * stop's own kind that nobody else wants is dropped instead. */
}

static void stop_handler(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    bool ours = si->si_code == SI_TKILL && si->si_pid == atomic_load(&g_pid);
    if (ours && !(atomic_load(&g_world) & 1)) {
        /* A stop that timed out on this thread is over: swallow its late
         * signal; anything else from this process is the program's. */
        long o = atomic_load(&g_outstanding);
        ours = false;
        while (o > 0 && !ours)
            ours = atomic_compare_exchange_weak(&g_outstanding, &o, o - 1);
        if (!ours)
            chain(sig, si, uc);
    } else if (ours) {
        if (tls_stopper)
            ; /* a late one (it blocked it once): the stopper never waits */
        else if (tls_depth)
            tls_pending = 1; /* parks at the end of its section */
        else
            park();
    } else {
        chain(sig, si, uc);
    }
    errno = saved;
}

static void stop_atfork_child(void)
{
    for (int i = 0; i < EXEMPT_SLOTS; i++)
        atomic_store(&g_exempt[i], 0);
    atomic_store(&g_ntg, 0);
    atomic_store(&g_world, 0);
    atomic_store(&g_outstanding, 0);
    atomic_store(&g_parked, 0);
    g_nran = 0;
    tls_stopper = 0;
    tls_depth = 0;
    tls_pending = 0;
    pthread_mutex_init(&g_stop_lock, NULL);
    atomic_store(&g_pid, sf__os_getpid());
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void stop_once(void)
{
    int off = SF_STOP_SIGNAL_OFFSET;
    const char *e = sf__os_getenv("SNAPFAULT_STOP_SIGNAL");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (!*end && v >= 0 && SIGRTMIN + v <= SIGRTMAX)
            off = (int)v;
    }
    atomic_store(&g_signo, SIGRTMIN + off);
    atomic_store(&g_pid, sf__os_getpid());
    pthread_atfork(NULL, NULL, stop_atfork_child);
}

int sf__stop_init(void)
{
    pthread_once(&g_once, stop_once);
    int sig = atomic_load(&g_signo);
    struct sigaction cur;
    if (sf__os_sigaction(sig, NULL, &cur))
        return -errno;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == stop_handler)
        return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = stop_handler;
    /* Nothing else interrupts a stopped thread: the wait is short and a
     * handler that ran inside it could not write memory consistently. */
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    struct sigaction old;
    if (sf__os_sigaction(sig, &sa, &old))
        return -errno;
    if (!((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == stop_handler))
        g_host = old;
    return 0;
}

/* ------------------------------------------------------------------------
 * /proc reads with plain system calls (no stdio, no malloc).
 * ------------------------------------------------------------------------ */
static char *put_u(char *p, unsigned long v)
{
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10));
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* The stop's descriptor of /proc/self/task: paths relative to it cost
 * the kernel one lookup less per file. */
static int g_task_fd = -1;

static long read_task_file(pid_t tid, const char *name, char *buf, size_t cap)
{
    char path[64], *p = path;
    int dir = g_task_fd;
    if (dir < 0) {
        memcpy(p, "/proc/self/task/", 16);
        p += 16;
        dir = AT_FDCWD;
    }
    p = put_u(p, (unsigned long)tid);
    *p++ = '/';
    size_t n = strlen(name);
    memcpy(p, name, n + 1);
    int fd = sf__os_openat(dir, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long got = sf__os_read(fd, buf, cap - 1);
    sf__os_close(fd);
    if (got < 0)
        return -1;
    buf[got] = 0;
    return got;
}

static const char *parse_u(const char *s, uint64_t *v)
{
    while (*s == ' ')
        s++;
    uint64_t x = 0;
    while (*s >= '0' && *s <= '9')
        x = x * 10 + (uint64_t)(*s++ - '0');
    *v = x;
    return s;
}

/* schedstat: time on CPU, time waiting for it, times switched in: any
 * change means the thread was scheduled. */
static bool read_sched(pid_t tid, uint64_t v[3])
{
    char buf[128];
    if (read_task_file(tid, "schedstat", buf, sizeof(buf)) <= 0)
        return false;
    const char *s = buf;
    for (int i = 0; i < 3; i++)
        s = parse_u(s, &v[i]);
    return true;
}

/* The system call the thread sleeps in, -1 when it is not in one (it runs,
 * is runnable in user mode or in a page fault), -2 when it is gone. */
static long read_syscall(pid_t tid)
{
    char buf[256];
    long n = read_task_file(tid, "syscall", buf, sizeof(buf));
    if (n < 0)
        return -2;
    if (buf[0] < '0' || buf[0] > '9')
        return -1; /* "running", or "-1 ..." */
    uint64_t nr;
    parse_u(buf, &nr);
    return (long)nr;
}

/* Zombie or dead: it will never run again. */
static bool thread_gone(pid_t tid)
{
    char buf[256];
    if (read_task_file(tid, "stat", buf, sizeof(buf)) <= 0)
        return true;
    const char *p = strrchr(buf, ')');
    return !p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X' || p[2] == 'x';
}

/* Whether the thread sleeps in the kernel with sig blocked (status: State
 * and SigBlk): it cannot take the signal before it wakes, as a thread of
 * the program's that blocks every signal and waits in poll.  (A thread
 * that is runnable with it blocked, say one just created that has not run
 * yet, or one in a fault handler, takes it soon: not this.) */
static bool blocks_signal(pid_t tid, int sig)
{
    char buf[2048];
    if (read_task_file(tid, "status", buf, sizeof(buf)) <= 0)
        return false;
    const char *st = strstr(buf, "\nState:");
    if (!st)
        return false;
    st += 7;
    while (*st == ' ' || *st == '\t')
        st++;
    if (*st != 'S' && *st != 'D')
        return false;
    const char *p = strstr(buf, "\nSigBlk:");
    if (!p)
        return false;
    p += 8;
    while (*p == ' ' || *p == '\t')
        p++;
    uint64_t m = 0;
    for (; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++)
        m = (m << 4) | (uint64_t)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
    return (m >> (sig - 1)) & 1;
}

/* System calls SA_RESTART does not restart (signal(7)): a thread asleep in
 * one is never signalled: it would see EINTR. */
static bool never_restarted(long nr)
{
    switch (nr) {
#ifdef SYS_epoll_wait
    case SYS_epoll_wait:
#endif
    case SYS_epoll_pwait:
#ifdef SYS_epoll_pwait2
    case SYS_epoll_pwait2:
#endif
#ifdef SYS_poll
    case SYS_poll:
#endif
    case SYS_ppoll:
#ifdef SYS_select
    case SYS_select:
#endif
    case SYS_pselect6:
    case SYS_nanosleep:
    case SYS_clock_nanosleep:
    case SYS_futex:
    case SYS_msgrcv:
    case SYS_msgsnd:
    case SYS_semop:
    case SYS_semtimedop:
    case SYS_io_getevents:
    case SYS_rt_sigtimedwait:
    case SYS_rt_sigsuspend:
#ifdef SYS_pause
    case SYS_pause:
#endif
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------------
 * Scratch memory for the stopper.
 * ------------------------------------------------------------------------ */
#define SCRATCH_BYTES ((size_t)64 << 20)
static char *g_scratch;
static size_t g_scratch_used;

void *sf__tmp_calloc(size_t n, size_t size)
{
    if (!tls_stopper)
        return sf__os_calloc(n, size);
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t b = (n * size + 15) & ~(size_t)15;
    if (!g_scratch || b > SCRATCH_BYTES - g_scratch_used)
        return NULL; /* every caller has a path without the memory */
    void *p = g_scratch + g_scratch_used;
    g_scratch_used += b;
    memset(p, 0, b); /* reused between stops */
    return p;
}

void sf__tmp_free(void *p)
{
    if (g_scratch && (char *)p >= g_scratch && (char *)p < g_scratch + SCRATCH_BYTES)
        return; /* the arena is reset as a whole */
    sf__os_free(p);
}

/* ------------------------------------------------------------------------
 * Stop and resume.
 * ------------------------------------------------------------------------ */
struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static bool in_table(pid_t tid)
{
    size_t n = atomic_load(&g_ntg);
    for (size_t i = 0; i < n; i++)
        if (atomic_load_explicit(&g_tg[i].tid, memory_order_relaxed) == tid)
            return true;
    return false;
}

static bool ran_last_time(pid_t tid)
{
    for (unsigned i = 0; i < g_nran; i++)
        if (g_ran[i] == tid)
            return true;
    return false;
}

/* Adds tid to the stop: judged asleep, or signalled.  Returns whether a
 * signal was sent. */
static bool add_thread(pid_t tid, enum sf_stop_mode mode, pid_t pid, int sig)
{
    size_t i = atomic_load(&g_ntg);
    if (i == STOP_MAX_THREADS)
        return false; /* beyond the table: not stopped (counted in timeouts) */
    struct target *tg = &g_tg[i];
    tg->signalled = tg->asleep = tg->gone = tg->deaf = false;
    atomic_store(&tg->acked, 0);
    atomic_store(&tg->tid, tid);
    atomic_store(&g_ntg, i + 1);
    {
        /* schedstat first: had it run after that, the second reading
         * differs and the take is done again. */
        bool forced = mode == SF_STOP_FORCED && ran_last_time(tid);
        if (read_sched(tid, tg->sched)) {
            long nr = read_syscall(tid);
            if (nr >= 0 && ((!forced && mode != SF_STOP_SIGNAL_ALL) || never_restarted(nr))) {
                tg->asleep = true;
                return false;
            }
            if (nr == -2) {
                tg->gone = true;
                return false;
            }
        }
    }
    if (sf__os_tgkill(pid, tid, sig) == 0) {
        tg->signalled = true;
        return true;
    }
    tg->gone = true; /* ESRCH: exited */
    return false;
}

/* One pass over /proc/self/task: every thread not yet in the stop is
 * added.  Returns the threads signalled, or -errno. */
static int scan(int dfd, enum sf_stop_mode mode, pid_t self, pid_t pid, int sig, unsigned *found)
{
    char buf[4096] __attribute__((aligned(8)));
    int sent = 0;
    *found = 0;
    if (sf__os_lseek(dfd, 0, SEEK_SET) < 0)
        return -errno;
    for (;;) {
        long n = sf__os_getdents64(dfd, buf, sizeof(buf));
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        for (long off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9')
                continue;
            uint64_t v;
            parse_u(d->d_name, &v);
            pid_t tid = (pid_t)v;
            if (tid == self || is_exempt(tid) || in_table(tid))
                continue;
            (*found)++;
            sent += add_thread(tid, mode, pid, sig);
        }
    }
    return sent;
}

/* The bound on one thread's acknowledgement: generous, since a thread in a
 * no-stop section (a grace period's wait) acknowledges at its end. */
static uint64_t stop_timeout_ns(void)
{
    static _Atomic uint64_t cached;
    uint64_t v = atomic_load(&cached);
    if (v)
        return v;
    v = 2000000000u;
    const char *e = sf__os_getenv("SNAPFAULT_STOP_TIMEOUT_MS");
    if (e && *e) {
        long ms = strtol(e, NULL, 10);
        if (ms > 0)
            v = (uint64_t)ms * 1000000u;
    }
    atomic_store(&cached, v);
    return v;
}

/* Signalled threads of the stop whose signal is still pending at its end:
 * not acknowledged and not exited.  Each will take it later (a thread that
 * timed out, or one that slept with it blocked), so the handler swallows
 * that many late signals.  Read at resume, when the late ones may have
 * acknowledged or exited meanwhile. */
static unsigned pending_late(void)
{
    unsigned late = 0;
    size_t n = atomic_load(&g_ntg);
    for (size_t i = 0; i < n; i++) {
        struct target *tg = &g_tg[i];
        if (tg->signalled && !atomic_load(&tg->acked) && !tg->gone && !thread_gone(atomic_load(&tg->tid)))
            late++;
    }
    return late;
}

/* Signalled threads that have not acknowledged, have not exited and may
 * still do so (not judged deaf: asleep with the signal blocked). */
static unsigned waiting(void)
{
    unsigned late = 0;
    size_t n = atomic_load(&g_ntg);
    for (size_t i = 0; i < n; i++)
        if (g_tg[i].signalled && !atomic_load(&g_tg[i].acked) && !g_tg[i].gone && !g_tg[i].deaf)
            late++;
    return late;
}

/* Waits for every signalled thread's acknowledgement; threads that exit
 * meanwhile are dropped, and so are threads found asleep with the signal
 * blocked (deaf: counted asleep, checked after the take as the others; a
 * thread in glibc's exit path sleeps so, in madvise of its stack, state
 * D).  Returns the threads still awaited at the deadline: timeouts. */
static unsigned wait_acks(uint64_t deadline)
{
    for (;;) {
        uint32_t a = atomic_load(&g_acks);
        unsigned w = waiting();
        if (!w)
            return 0;
        uint64_t now = sf__now_ns();
        if (now >= deadline)
            return w;
        /* Woken by each acknowledgement; every 10 ms it looks for
         * signalled threads that exited before handling the signal (a
         * thread exits with its signals blocked) or that block it. */
        uint64_t left = deadline - now < 10000000u ? deadline - now : 10000000u;
        struct timespec ts = {0, (long)left};
        if (futex(&g_acks, FUTEX_WAIT_PRIVATE, a, &ts) < 0 && errno == ETIMEDOUT) {
            size_t n = atomic_load(&g_ntg);
            for (size_t i = 0; i < n; i++) {
                struct target *tg = &g_tg[i];
                if (!tg->signalled || atomic_load(&tg->acked) || tg->gone || tg->deaf)
                    continue;
                pid_t tid = atomic_load(&tg->tid);
                if (thread_gone(tid))
                    tg->gone = true;
                else if (blocks_signal(tid, atomic_load(&g_signo)) && read_sched(tid, tg->sched))
                    /* It cannot take the signal, and is asleep: it counts
                     * as asleep, checked after the take as the others. */
                    tg->deaf = tg->asleep = true;
            }
        }
    }
}

static unsigned g_timeouts, g_signalled;

int sf__world_stop(enum sf_stop_mode mode)
{
    int err = sf__stop_init();
    if (err)
        return err;
    /* Everything that needs memory or a lock comes first. */
    if (!g_scratch) {
        void *p = sf__os_mmap(NULL, SCRATCH_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED)
            g_scratch = p;
    }
    int dfd = sf__os_openat(AT_FDCWD, "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    pthread_mutex_lock(&g_stop_lock);
    /* Threads the previous stop parked leave the handler first: one still
     * asleep in park's futex would look asleep to this stop and then run. */
    uint64_t until = sf__now_ns() + 10000000u;
    for (uint32_t p; (p = atomic_load(&g_parked)) != 0 && sf__now_ns() < until;) {
        struct timespec ts = {0, 1000000};
        futex(&g_parked, FUTEX_WAIT_PRIVATE, p, &ts);
    }
    g_task_fd = dfd;
    /* A stopped thread could hold the table's lock (sf_track elsewhere);
     * the take reads the table, so the stopper holds it throughout. */
    pthread_mutex_lock(&sf__regions_lock);
    g_scratch_used = 0;
    tls_stopper = 1;
    pid_t self = my_tid(), pid = atomic_load(&g_pid);
    int sig = atomic_load(&g_signo);
    atomic_store(&g_ntg, 0);
    atomic_store(&g_acks, 0);
    atomic_fetch_add(&g_world, 1); /* odd: stopped */
    g_t0 = sf__now_ns();
    uint64_t deadline = g_t0 + stop_timeout_ns();
    unsigned want = 0, found;
    g_timeouts = 0;
    /* Threads created meanwhile (by a thread not yet stopped) show in the
     * next pass; the loop ends when a pass finds none. */
    do {
        int sent = scan(dfd, mode, self, pid, sig, &found);
        if (sent < 0)
            break;
        want += (unsigned)sent;
        g_timeouts = wait_acks(deadline);
        if (g_timeouts)
            break; /* one late thread: the pass cannot converge */
    } while (found);
    g_signalled = want;
    return 0;
}

void sf__world_resume(struct sf_stop_result *res)
{
    memset(res, 0, sizeof(*res));
    size_t n = atomic_load(&g_ntg);
    g_nran = 0;
    for (size_t i = 0; i < n; i++) {
        struct target *tg = &g_tg[i];
        if (!tg->asleep)
            continue;
        res->blocked++;
        uint64_t v[3];
        pid_t tid = atomic_load(&tg->tid);
        if (!read_sched(tid, v) || v[0] != tg->sched[0] || v[1] != tg->sched[1] ||
            v[2] != tg->sched[2]) {
            res->ran++;
            if (g_nran < sizeof(g_ran) / sizeof(g_ran[0]))
                g_ran[g_nran++] = tid;
        }
    }
    /* Before the world runs: a late signal that arrives after it does is
     * then swallowed, not passed to the program's handler. */
    atomic_fetch_add(&g_outstanding, pending_late());
    sf__os_close(g_task_fd);
    g_task_fd = -1;
    res->signalled = g_signalled;
    res->timeouts = g_timeouts;
    atomic_fetch_add(&g_world, 1); /* even: running */
    futex(&g_world, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL);
    res->ns = sf__now_ns() - g_t0;
    tls_stopper = 0;
    pthread_mutex_unlock(&sf__regions_lock);
    pthread_mutex_unlock(&g_stop_lock);
}

/* Bucket of a stop time: 0 below 1 us, then two per octave. */
static unsigned hist_bucket(uint64_t ns)
{
    if (ns < 1024)
        return 0;
    unsigned o = 63u - (unsigned)__builtin_clzll(ns);
    unsigned half = (unsigned)(ns >> (o - 1)) & 1u;
    unsigned b = 1 + 2 * (o - 10) + half;
    return b < SF_STOP_HIST_BUCKETS ? b : SF_STOP_HIST_BUCKETS - 1;
}

void sf__stop_record(sf_tracker *t, const struct sf_stop_result *res, unsigned retries,
                     bool fallback)
{
    SF_STAT_INC(t, st_stops, 1);
    atomic_store_explicit(&t->st_stop_last, res->ns, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&t->st_stop_max, memory_order_relaxed);
    while (res->ns > m && !atomic_compare_exchange_weak(&t->st_stop_max, &m, res->ns))
        ;
    SF_STAT_INC(t, st_stop_total, res->ns);
    SF_STAT_INC(t, st_stop_retries, retries);
    SF_STAT_INC(t, st_stop_fallbacks, fallback ? 1 : 0);
    SF_STAT_INC(t, st_stop_inexact, fallback && res->ran ? 1 : 0);
    SF_STAT_INC(t, st_stop_timeouts, res->timeouts);
    SF_STAT_INC(t, st_stop_signalled, res->signalled);
    SF_STAT_INC(t, st_stop_asleep, res->blocked);
    SF_STAT_INC(t, st_stop_hist[hist_bucket(res->ns)], 1);
}

SF_API uint64_t sf_stats_stop_quantile(const sf_stats *st, double q)
{
    if (!st || !st->stops || q < 0 || q > 1)
        return 0;
    uint64_t total = 0;
    for (unsigned b = 0; b < SF_STOP_HIST_BUCKETS; b++)
        total += st->stop_hist[b];
    if (!total)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1, seen = 0;
    for (unsigned b = 0; b < SF_STOP_HIST_BUCKETS; b++) {
        seen += st->stop_hist[b];
        if (seen >= rank) {
            /* the bucket's middle, never above the maximum */
            uint64_t lo, hi;
            if (b == 0) {
                lo = 0;
                hi = 1024;
            } else {
                unsigned o = 10 + (b - 1) / 2, half = (b - 1) % 2;
                lo = ((uint64_t)1 << o) + (half ? (uint64_t)1 << (o - 1) : 0);
                hi = half ? (uint64_t)1 << (o + 1) : lo + ((uint64_t)1 << (o - 1));
            }
            uint64_t mid = lo + (hi - lo) / 2;
            return st->stop_max_ns && mid > st->stop_max_ns ? st->stop_max_ns : mid;
        }
    }
    return st->stop_max_ns;
}
