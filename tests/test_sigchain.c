/* test_sigchain.c - snapfault's handler stays first: a program that
 * installs its own SIGSEGV/SIGBUS handler (or SIG_DFL, SIG_IGN) with a raw
 * sigaction()/signal() once a tracker exists gets it put behind snapfault's
 * by the next call that protects memory; sf_sigaction() does it at once; a
 * fault that loses a race with sf_untrack never costs the process
 * snapfault's handler.  On every signal-delivered backend (mprotect:
 * SIGSEGV; uffd-sync in-thread: SIGBUS).
 *
 * Every case runs in a forked child (set-up and teardown are the process):
 * snapfault installs its handler once per process, and some cases must die.
 * The parent never creates a tracker.  The child reports the stage it
 * reached and the host handler's calls through a shared page, so that a
 * death at the wrong place is told from the expected one. */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>

#define NP 64 /* tracked pages */

static size_t PS;
static int g_sig; /* the signal tracked faults arrive as */
static const struct variant *g_v;

/* Shared with the parent. */
struct shared {
    _Atomic int stage;     /* last stage the child reached */
    _Atomic long host_calls; /* host handler calls for faults not its guard's */
    char msg[256];
};
static struct shared *g_sh;

/* ------------------------------------------------------------------------
 * The host program's handler
 * ------------------------------------------------------------------------ */
static char *g_guard;                  /* the host's own PROT_NONE guard page */
static volatile sig_atomic_t g_guard_hits;
static volatile int g_jump;            /* leave the guard fault by siglongjmp */
static volatile int g_chain;           /* chain to the saved previous handler */
static char *volatile g_in_handler_write; /* tracked memory the handler writes */
static char *volatile g_in_handler_crash; /* read-only page the handler writes */
static sigjmp_buf g_jb;
static struct sigaction g_saved_segv, g_saved_bus;

static void host_handler(int sig, siginfo_t *si, void *uc)
{
    if (sig == SIGSEGV && si->si_code > 0 && g_guard && (char *)si->si_addr >= g_guard &&
        (char *)si->si_addr < g_guard + PS) {
        g_guard_hits++;
        if (g_in_handler_write) /* its signal blocked (no SA_NODEFER) */
            for (size_t i = 0; i < NP; i++)
                g_in_handler_write[i * PS + 5] = (char)g_guard_hits;
        if (g_in_handler_crash)
            *g_in_handler_crash = 1;
        if (g_jump)
            siglongjmp(g_jb, 1);
        mprotect(g_guard, PS, PROT_READ | PROT_WRITE); /* repair, retry */
        return;
    }
    atomic_fetch_add(&g_sh->host_calls, 1);
    if (g_chain) {
        /* A crash reporter: hand it to whatever was there before us (which
         * is snapfault's handler, installed first). */
        struct sigaction *o = sig == SIGSEGV ? &g_saved_segv : &g_saved_bus;
        if (o->sa_flags & SA_SIGINFO) {
            o->sa_sigaction(sig, si, uc);
            return;
        }
        if (o->sa_handler != SIG_DFL && o->sa_handler != SIG_IGN) {
            o->sa_handler(sig);
            return;
        }
    }
    /* Not its fault: what libsigsegv does, die of the default action. */
    signal(sig, SIG_DFL);
}

static void install_host_raw(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = host_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_saved_segv);
    sigaction(SIGBUS, &sa, &g_saved_bus);
}

static int is_host(int sig)
{
    struct sigaction cur;
    sigaction(sig, NULL, &cur);
    return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == host_handler;
}

static int is_dfl(int sig)
{
    struct sigaction cur;
    sigaction(sig, NULL, &cur);
    return !(cur.sa_flags & SA_SIGINFO) && (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN);
}

/* ------------------------------------------------------------------------
 * Helpers (child side)
 * ------------------------------------------------------------------------ */
static char *g_mem;

static void stage(int s) { atomic_store(&g_sh->stage, s); }

static int setup(sf_tracker **t)
{
    g_mem = map_region(NP * PS);
    g_guard = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(g_mem && g_guard != MAP_FAILED, "mmap");
    int rc = make_tracker(g_v, 0, t);
    if (rc)
        return rc;
    CHECK_RC(sf_track(*t, g_mem, NP * PS), 0);
    return 0;
}

static void write_all(char *mem, unsigned char v)
{
    for (size_t i = 0; i < NP; i++)
        ((volatile char *)mem)[i * PS + (i * 67) % PS] = (char)(v + i);
}

/* Writes every tracked page and checks a reset collect reports them all. */
static int write_collect_n(sf_tracker *t, char *mem, unsigned char v, int want)
{
    write_all(mem, v);
    for (size_t i = 0; i < NP; i++)
        CHECK(mem[i * PS + (i * 67) % PS] == (char)(v + i), "page %zu lost its write", i);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), want);
    return 0;
}
static int write_collect(sf_tracker *t, char *mem, unsigned char v) { return write_collect_n(t, mem, v, NP); }

/* Writes the guard page and leaves the fault by siglongjmp: 1 if it did. */
static __attribute__((noinline)) int guard_jump(void)
{
    if (sigsetjmp(g_jb, 1) == 0) {
        *(volatile char *)g_guard = 1;
        return 0;
    }
    return 1;
}

static int touch_guard(void)
{
    sig_atomic_t before = g_guard_hits;
    *(volatile char *)g_guard = 7;
    CHECK(g_guard_hits == before + 1, "guard fault seen %d times, want 1", (int)(g_guard_hits - before));
    CHECK(*(volatile char *)g_guard == 7, "guard write lost");
    mprotect(g_guard, PS, PROT_NONE);
    return 0;
}

#define TRY(x)              \
    do {                    \
        int _rc = (x);      \
        if (_rc)            \
            return _rc;     \
    } while (0)

/* ------------------------------------------------------------------------
 * Cases.  Each returns 0 (exit 0), 77, 1; or dies where `dies` says.
 * ------------------------------------------------------------------------ */

/* A host handler installed with raw sigaction() after the first tracker:
 * after the next protecting call, tracked writes are snapfault's again and
 * the host's guard page is still repaired by the host. */
static int c_host_after(void)
{
    sf_tracker *t;
    TRY(setup(&t));
    TRY(write_collect(t, g_mem, 1));
    install_host_raw();
    stage(1);
    /* The window: a tracked write now would go to the host handler. */
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 0);
    CHECK(!is_host(SIGSEGV) && !is_host(SIGBUS), "snapfault's handler not put back in front");
    stage(2);
    TRY(write_collect(t, g_mem, 2));
    TRY(touch_guard());
    TRY(touch_guard());
    /* and after another protecting call, a second range */
    char *m2 = map_region(NP * PS);
    CHECK_RC(sf_track(t, m2, NP * PS), 0);
    write_all(m2, 3);
    TRY(write_collect_n(t, g_mem, 4, 2 * NP)); /* m2's pages are reported too */
    CHECK(atomic_load(&g_sh->host_calls) == 0, "host handler got %ld tracked faults",
          atomic_load(&g_sh->host_calls));
    (void)t;
    return 0;
}

/* The same host handler installed again and again, with other protecting
 * calls in between: a snapshot take and a restore. */
static int c_host_snapshot(void)
{
    g_mem = map_region(NP * PS);
    g_guard = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sf_tracker *t;
    int rc = make_tracker(g_v, SF_OPT_SNAPSHOTS, &t);
    if (rc)
        return rc;
    CHECK_RC(sf_track(t, g_mem, NP * PS), 0);
    write_all(g_mem, 1);
    install_host_raw();
    sf_snapshot *s;
    CHECK_RC(sf_snapshot_take(t, &s), 0);
    CHECK(!is_host(g_sig), "take did not put snapfault's handler back");
    write_all(g_mem, 2);
    TRY(touch_guard());
    install_host_raw();
    CHECK(sf_snapshot_restore(s) >= 0, "restore failed");
    CHECK(!is_host(g_sig), "restore did not put snapfault's handler back");
    for (size_t i = 0; i < NP; i++)
        CHECK(g_mem[i * PS + (i * 67) % PS] == (char)(1 + i), "page %zu not restored", i);
    write_all(g_mem, 3);
    char buf[1];
    CHECK_RC(sf_snapshot_read(s, g_mem, buf, 1), 0);
    CHECK(buf[0] == 1, "snapshot changed by a later write");
    sf_snapshot_release(s);
    CHECK(atomic_load(&g_sh->host_calls) == 0, "host handler got tracked faults");
    return 0;
}

/* signal(SIG_DFL) (or SIG_IGN) when the host is done with its handler,
 * after a tracker exists; then a new tracker: tracked writes still work,
 * and a real crash still dies of SIGSEGV at the crash (stage 3). */
static int sigdfl_common(__sighandler_t h)
{
    sf_tracker *t, *t2;
    TRY(setup(&t));
    TRY(write_collect(t, g_mem, 1));
    signal(SIGSEGV, h);
    signal(SIGBUS, h);
    stage(1);
    TRY(make_tracker(g_v, 0, &t2));
    CHECK(!is_dfl(g_sig), "snapfault's handler not put back in front");
    stage(2);
    TRY(write_collect(t, g_mem, 2));
    sf_tracker_destroy(t2);
    TRY(write_collect(t, g_mem, 3));
    stage(3);
    /* a real crash: a write to a read-only page nobody tracks */
    char *ro = mmap(NULL, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *(volatile char *)ro = 1;
    stage(4);
    return 0;
}
static int c_sigdfl_after(void) { return sigdfl_common(SIG_DFL); }
static int c_sigign_after(void) { return sigdfl_common(SIG_IGN); }

/* A host handler that siglongjmp()s out of its guard fault, installed raw
 * after the tracker; rounds of tracked writes and guard jumps. */
static int c_longjmp(void)
{
    sf_tracker *t;
    TRY(setup(&t));
    g_jump = 1;
    install_host_raw();
    char *m2 = map_region(NP * PS);
    CHECK_RC(sf_track(t, m2, NP * PS), 0); /* protecting: snapfault first again */
    stage(2);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 0);
    for (int round = 0; round < 100; round++) {
        write_all(g_mem, (unsigned char)round);
        CHECK(guard_jump(), "round %d: no fault on the guard page", round);
        write_all(m2, (unsigned char)round);
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 2 * NP);
    }
    CHECK(g_guard_hits == 100, "guard hits %d", (int)g_guard_hits);
    CHECK(atomic_load(&g_sh->host_calls) == 0, "host handler got tracked faults");
    return 0;
}

/* sf_sigaction puts a handler behind snapfault's, with or without a
 * tracker, and reports what was forwarded to (also a raw replacement). */
static int c_sf_sigaction(void)
{
    g_mem = map_region(NP * PS);
    g_guard = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct sigaction sa, old, cur;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = host_handler;
    sa.sa_flags = SA_SIGINFO;
    CHECK_RC(sf_sigaction(SIGUSR1, &sa, &old), -EINVAL);
    CHECK_RC(sf_sigaction(SIGSEGV, &sa, &old), 0); /* no tracker yet */
    CHECK(!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL, "old is not SIG_DFL");
    CHECK_RC(sf_sigaction(SIGBUS, &sa, NULL), 0);
    sigaction(SIGSEGV, NULL, &cur);
    CHECK((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction != host_handler,
          "sf_sigaction installed the host's handler itself");
    CHECK_RC(sf_sigaction(SIGSEGV, &cur, NULL), -EINVAL); /* snapfault's own */
    TRY(touch_guard()); /* forwarded to the host without a tracker */
    sf_tracker *t;
    int rc = make_tracker(g_v, 0, &t);
    if (rc)
        return rc;
    CHECK_RC(sf_track(t, g_mem, NP * PS), 0);
    TRY(write_collect(t, g_mem, 1));
    TRY(touch_guard());
    CHECK_RC(sf_sigaction(SIGSEGV, NULL, &old), 0);
    CHECK((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == host_handler, "old is not the host's");
    /* A raw replacement is what sf_sigaction reports (and forwards to). */
    signal(SIGSEGV, SIG_IGN);
    CHECK_RC(sf_sigaction(SIGSEGV, NULL, &old), 0);
    CHECK(!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN, "raw SIG_IGN not reported");
    CHECK(!is_dfl(SIGSEGV), "snapfault's handler not in front");
    CHECK_RC(sf_sigaction(SIGSEGV, &sa, NULL), 0);
    TRY(write_collect(t, g_mem, 2));
    TRY(touch_guard());
    CHECK(atomic_load(&g_sh->host_calls) == 0, "host handler got tracked faults");
    return 0;
}

/* A chaining host handler (it calls the handler it replaced, snapfault's,
 * for faults that are not its own) put behind snapfault's: a real crash
 * reaches it once and then dies of SIGSEGV, not in a loop between the two
 * handlers (stage 3, one host call). */
static int c_chain_crash(void)
{
    sf_tracker *t;
    TRY(setup(&t));
    g_chain = 1;
    install_host_raw();
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 0);
    stage(2);
    TRY(write_collect(t, g_mem, 1));
    TRY(touch_guard());
    stage(3);
    char *ro = mmap(NULL, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *(volatile char *)ro = 1;
    stage(4);
    return 0;
}

/* A host handler (put behind snapfault's) that writes tracked memory in
 * its guard fault: the writes are tracked (a fault of snapfault's inside
 * it is resolved).  Linked, snapfault runs the handler with the mask it
 * asked for, so a handler that writes tracked memory of a signal-delivered
 * tracker uses SA_NODEFER (under the preload the block is virtual and it
 * need not: compat-libsigsegv).  Then the handler itself crashes: the
 * nested fault reaches it once, it chains to snapfault's, and the process
 * dies of SIGSEGV. */
static int c_handler_writes(void)
{
    sf_tracker *t;
    TRY(setup(&t));
    install_host_raw();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = host_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 0);
    g_in_handler_write = g_mem;
    TRY(touch_guard());
    for (size_t i = 0; i < NP; i++)
        CHECK(g_mem[i * PS + 5] == 1, "handler's write %zu lost", i);
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), NP);
    TRY(touch_guard());
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), NP);
    stage(3);
    g_in_handler_write = NULL;
    g_in_handler_crash = mmap(NULL, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_chain = 1; /* its crash is not its guard: it would chain */
    *(volatile char *)g_guard = 1;
    stage(4);
    return 0;
}

/* Writers keep writing a range while the main thread tracks and untracks
 * it, with SIG_DFL behind snapfault.  A fault that loses the race with the
 * untrack must run again, not be forwarded to SIG_DFL: the process
 * survives every round and keeps snapfault's handler. */
#define RACE_WRITERS 3
static _Atomic int race_stop;
static _Atomic long race_writes;
static void *race_writer(void *arg)
{
    unsigned long long x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    while (!atomic_load(&race_stop)) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((volatile char *)g_mem)[(x % NP) * PS + (x >> 40) % PS] = (char)x;
        atomic_fetch_add_explicit(&race_writes, 1, memory_order_relaxed);
    }
    return NULL;
}

static int c_untrack_race(void)
{
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    sf_tracker *t;
    TRY(setup(&t));
    CHECK_RC(sf_untrack(t, g_mem, NP * PS), 0);
    struct sigaction mine, now;
    sigaction(g_sig, NULL, &mine);
    pthread_t th[RACE_WRITERS];
    for (long i = 0; i < RACE_WRITERS; i++)
        pthread_create(&th[i], NULL, race_writer, (void *)(i + 1));
    int rounds = getenv("SF_TEST_RACE_ROUNDS") ? atoi(getenv("SF_TEST_RACE_ROUNDS")) : 3000;
    stage(2);
    for (int i = 0; i < rounds; i++) {
        CHECK_RC(sf_track(t, g_mem, NP * PS), 0);
        /* let the writers fault on it: a count, not a time */
        long w0 = atomic_load(&race_writes);
        while (atomic_load(&race_writes) - w0 < 16 + (i % 7) * 8)
            sched_yield();
        CHECK_RC(sf_untrack(t, g_mem, NP * PS), 0);
        sigaction(g_sig, NULL, &now);
        CHECK((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == mine.sa_sigaction,
              "round %d: snapfault's handler was replaced", i);
    }
    atomic_store(&race_stop, 1);
    for (int i = 0; i < RACE_WRITERS; i++)
        pthread_join(th[i], NULL);
    CHECK_RC(sf_track(t, g_mem, NP * PS), 0);
    TRY(write_collect(t, g_mem, 5));
    return 0;
}

/* ------------------------------------------------------------------------
 * Table and driver
 * ------------------------------------------------------------------------ */
struct tcase {
    const char *name;
    int (*fn)(void);
    int dies;        /* 0: exits 0; else the signal it must die of */
    int die_stage;   /* ... having reached this stage */
    long host_calls; /* ... with this many host calls (-1: any) */
};
static const struct tcase cases[] = {
    {"host handler installed after the tracker", c_host_after, 0, 0, 0},
    {"host handler replaced around take and restore", c_host_snapshot, 0, 0, 0},
    {"signal(SIG_DFL) after the tracker, then a new tracker", c_sigdfl_after, SIGSEGV, 3, 0},
    {"signal(SIG_IGN) after the tracker, then a new tracker", c_sigign_after, SIGSEGV, 3, 0},
    {"host handler that siglongjmps out of its guard fault", c_longjmp, 0, 0, 0},
    {"sf_sigaction puts a handler behind snapfault's", c_sf_sigaction, 0, 0, 0},
    {"chaining host handler: a real crash still dies, once", c_chain_crash, SIGSEGV, 3, 1},
    {"host handler writes tracked memory, then crashes", c_handler_writes, SIGSEGV, 3, 1},
    {"untrack race with SIG_DFL behind snapfault", c_untrack_race, 0, 0, 0},
};

static int run_case(const struct tcase *c, const struct variant *v)
{
    memset(g_sh, 0, sizeof(*g_sh));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* the crash cases */
        g_v = v;
        g_sig = v->flags & SF_OPT_INTHREAD_FAULTS ? SIGBUS : SIGSEGV;
        h_msg[0] = 0;
        int rc = c->fn();
        snprintf(g_sh->msg, sizeof g_sh->msg, "%s", h_msg);
        _exit(rc);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        SKIP("waitpid");
    int stg = atomic_load(&g_sh->stage);
    long calls = atomic_load(&g_sh->host_calls);
    if (WIFEXITED(st)) {
        int rc = WEXITSTATUS(st);
        snprintf(h_msg, sizeof h_msg, "%s", g_sh->msg);
        if (rc == 77 || (rc && !c->dies))
            return rc;
        CHECK(!c->dies, "exited %d at stage %d, expected death by signal %d", rc, stg, c->dies);
        return 0;
    }
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : -1;
    CHECK(c->dies, "killed by signal %d (%s) at stage %d", sig, strsignal(sig), stg);
    CHECK(sig == c->dies && stg == c->die_stage, "killed by signal %d at stage %d, want %d at stage %d",
          sig, stg, c->dies, c->die_stage);
    CHECK(c->host_calls < 0 || calls == c->host_calls, "host handler called %ld times, want %ld", calls,
          c->host_calls);
    return 0;
}

int main(void)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    g_sh = mmap(NULL, sizeof(*g_sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sh == MAP_FAILED)
        return 1;
    for (size_t vi = 0; vi < NVARIANTS; vi++) {
        const struct variant *v = &variants[vi];
        if (!h_signal_delivered(v))
            continue;
        if (!h_want(v->name))
            continue;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
            h_report(cases[i].name, v->name, run_case(&cases[i], v));
    }
    return h_finish();
}
