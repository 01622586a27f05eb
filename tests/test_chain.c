/* test_chain.c - snapfault beside a program's own signal handling: chained
 * SIGSEGV/SIGBUS handlers, crashes that must still crash, errno kept. */
#include "harness.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <ucontext.h>

/* Every case runs in a fresh process (this binary re-executed with the
 * case and variant as arguments): snapfault installs its handler once per
 * process and remembers the handler it found, so "installed before" and
 * "installed after" need processes of their own, and the crash cases must
 * die.  The child reports through its stdout: markers written as it goes
 * (they survive a crash) and a last line with the reason of a failure. */

static size_t PS;

/* ------------------------------------------------------------------------
 * The program's own handler (child side)
 * ------------------------------------------------------------------------ */

static char *g_guard;             /* PROT_NONE page the handler repairs */
static char *g_trap;              /* PROT_NONE page the handler leaves by siglongjmp */
static char *g_filemap;           /* 2 pages of a memfd truncated to 1 */
static int g_memfd = -1;
static char *volatile g_expect;   /* address the next fault must report */
static volatile int g_expect_write;
static volatile sig_atomic_t g_segv, g_bus, g_user, g_jumps;
static sigjmp_buf g_jmp;

/* The first problem a handler saw, formatted later (no stdio in there). */
enum {
    HB_NONE, HB_ADDR, HB_CODE, HB_CR2, HB_ERR, HB_MASK_SA, HB_MASK_SIG, HB_UCMASK, HB_PID, HB_WHERE
};
static const char *const hb_what[] = {
    "", "si_addr differs from the faulting address", "si_code changed",
    "ucontext fault address (CR2) differs from si_addr", "ucontext error code: wrong access type",
    "handler's sa_mask not applied", "signal not blocked in its handler (no SA_NODEFER asked)",
    "uc_sigmask is not the interrupted thread's mask", "si_pid of raise() is not ours",
    "fault where the program expects none",
};
static volatile sig_atomic_t hb_code;
static volatile uintptr_t hb_a, hb_b;
#define HBAD(code, a, b)                     \
    do {                                     \
        if (!hb_code) {                      \
            hb_a = (uintptr_t)(a);           \
            hb_b = (uintptr_t)(b);           \
            hb_code = (code);                \
        }                                    \
    } while (0)

static void say(const char *s)
{
    ssize_t w = write(1, s, strlen(s));
    (void)w;
}

static int in_page(const void *a, const char *page)
{
    return page && (const char *)a >= page && (const char *)a < page + PS;
}

/* A program's SA_SIGINFO handler: checks what it is given, then repairs
 * the guard page, revives the truncated file page, or jumps out. */
static void prog_handler(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    if (si->si_code <= 0) { /* raise()/kill(): nothing to repair */
        if (si->si_pid != getpid())
            HBAD(HB_PID, si->si_pid, getpid());
        g_user++;
        return;
    }
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    if (!sigismember(&cur, SIGUSR1))
        HBAD(HB_MASK_SA, sig, 0);
    if (!sigismember(&cur, sig))
        HBAD(HB_MASK_SIG, sig, 0);
    /* The interrupted main thread blocks SIGUSR2 and not SIGUSR1. */
    if (!sigismember(&uc->uc_sigmask, SIGUSR2) || sigismember(&uc->uc_sigmask, SIGUSR1))
        HBAD(HB_UCMASK, sig, 0);
    if (si->si_addr != (void *)g_expect)
        HBAD(HB_ADDR, si->si_addr, g_expect);
    if (sig == SIGSEGV) {
        if (si->si_code != SEGV_ACCERR)
            HBAD(HB_CODE, si->si_code, SEGV_ACCERR);
#if defined(__x86_64__)
        if ((uintptr_t)uc->uc_mcontext.gregs[REG_CR2] != (uintptr_t)si->si_addr)
            HBAD(HB_CR2, uc->uc_mcontext.gregs[REG_CR2], si->si_addr);
        if (!!(uc->uc_mcontext.gregs[REG_ERR] & 2) != g_expect_write)
            HBAD(HB_ERR, uc->uc_mcontext.gregs[REG_ERR], g_expect_write);
#endif
        if (in_page(si->si_addr, g_guard)) {
            mprotect(g_guard, PS, PROT_READ | PROT_WRITE);
            g_segv++;
        } else if (in_page(si->si_addr, g_trap)) {
            g_jumps++;
            siglongjmp(g_jmp, 1);
        } else {
            say("unexpected SIGSEGV in the program's handler\n");
            _exit(3);
        }
    } else {
        if (si->si_code != BUS_ADRERR)
            HBAD(HB_CODE, si->si_code, BUS_ADRERR);
        if (!in_page(si->si_addr, g_filemap + PS)) {
            say("unexpected SIGBUS in the program's handler\n");
            _exit(3);
        }
        if (ftruncate(g_memfd, (off_t)(2 * PS)) < 0)
            _exit(4);
        g_bus++;
    }
}

static int install(int sig, void (*fn)(int, siginfo_t *, void *), int flags, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR1); /* checked inside: the handler's mask is honoured */
    return sigaction(sig, &sa, old);
}

/* A program that installs its handler after snapfault's and chains to the
 * handler it replaced for faults it does not own (what a well-behaved
 * library does).  A program that does not chain takes snapfault's faults
 * away on the signal-based backends: keeping its handler behind snapfault's
 * is the preload's job (its sigaction interposer), not testable here. */
static struct sigaction g_old_segv, g_old_bus;
static void after_handler(int sig, siginfo_t *si, void *uc)
{
    if (si->si_code > 0 && (in_page(si->si_addr, g_guard) || in_page(si->si_addr, g_trap) ||
                            in_page(si->si_addr, g_filemap + PS))) {
        prog_handler(sig, si, uc);
        return;
    }
    if (si->si_code <= 0) {
        prog_handler(sig, si, uc);
        return;
    }
    struct sigaction *o = sig == SIGSEGV ? &g_old_segv : &g_old_bus;
    if (o->sa_flags & SA_SIGINFO)
        o->sa_sigaction(sig, si, uc);
    else if (o->sa_handler == SIG_DFL || o->sa_handler == SIG_IGN)
        signal(sig, SIG_DFL); /* the fault repeats and kills */
    else
        o->sa_handler(sig);
}

/* ------------------------------------------------------------------------
 * Child cases
 * ------------------------------------------------------------------------ */

struct bg_writer {
    char *mem;      /* pages [0, n) it writes */
    size_t n;
    unsigned char *written;
    _Atomic int stop;
    pthread_t th;
};

static void *bg_main(void *arg)
{
    struct bg_writer *b = arg;
    uint64_t s = 88172645463325252ull;
    while (!atomic_load(&b->stop)) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        size_t p = s % b->n;
        b->mem[p * PS + 64] = (char)s;
        b->written[p] = 1;
        usleep(50);
    }
    return NULL;
}

static int file_setup(void)
{
    g_memfd = memfd_create("snapfault-chain", MFD_CLOEXEC);
    if (g_memfd < 0 || ftruncate(g_memfd, (off_t)(2 * PS)) < 0)
        return -1;
    g_filemap = mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_SHARED, g_memfd, 0);
    if (g_filemap == MAP_FAILED)
        return -1;
    g_filemap[0] = 1;
    return ftruncate(g_memfd, (off_t)PS); /* page 1 now raises SIGBUS */
}

/* Writes the trap page; the handler jumps back here.  Kept out of line so
 * that no caller's locals live across the sigsetjmp. */
static int __attribute__((noinline)) trap_once(void)
{
    g_expect = g_trap + 16;
    g_expect_write = 1;
    if (sigsetjmp(g_jmp, 1))
        return 1;
    *(volatile char *)g_expect = 1;
    return 0;
}

/* The body shared by the before and after cases: tracking runs (main and
 * a background thread write tracked pages, collects reset) while the
 * program's guard page, truncated file, raise() and siglongjmp traps go
 * to the program's handler. */
static int guard_loop(sf_tracker *t)
{
    size_t n = 256;
    char *mem = map_region(n * PS);
    char *scratch = map_region(4 * PS);
    CHECK(mem && scratch, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    g_guard = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_trap = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(g_guard != MAP_FAILED && g_trap != MAP_FAILED, "mmap");
    CHECK(file_setup() == 0, "memfd: %s", strerror(errno));
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);

    unsigned char want[256] = {0}, bgw[256] = {0};
    struct bg_writer bg = {.mem = mem + 128 * PS, .n = 128, .written = bgw};
    CHECK(pthread_create(&bg.th, NULL, bg_main, &bg) == 0, "pthread_create");
    struct pageset acc;
    memset(&acc, 0, sizeof acc);
    acc.base = mem;
    acc.npages = n;
    acc.bits = calloc(n, 1);
    acc.stop_after = -1;
    CHECK(acc.bits, "calloc");
    int iters = 200, reads = 0, bus = 0, raises = 0, jumps = 0;
    for (int i = 0; i < iters; i++) {
        size_t p = (size_t)i * 7 % 128;
        mem[p * PS] = (char)i;
        want[p] = 1;
        /* Guard page: a write, every fourth time a read. */
        g_expect = g_guard + (size_t)i * 8 % PS;
        g_expect_write = i % 4 != 3;
        if (g_expect_write) {
            *(volatile char *)g_expect = 1;
        } else {
            (void)*(volatile char *)g_expect;
            reads++;
        }
        CHECK(g_segv == i + 1, "guard fault %d reached the program's handler %d times", i + 1,
              (int)g_segv);
        mprotect(g_guard, PS, PROT_NONE);
        if (i % 4 == 0) { /* SIGBUS from the truncated file */
            g_expect = g_filemap + PS + (size_t)i % PS;
            g_expect_write = 1;
            *(volatile char *)g_expect = (char)i;
            bus++;
            CHECK(g_bus == bus, "SIGBUS %d reached the handler %d times", bus, (int)g_bus);
            CHECK(ftruncate(g_memfd, (off_t)PS) == 0, "ftruncate");
        }
        if (i % 50 == 0) { /* sent, not faulted: si_code <= 0 */
            raise(SIGSEGV);
            raise(SIGBUS);
            raises += 2;
            CHECK(g_user == raises, "raise() reached the handler %d of %d times", (int)g_user,
                  raises);
        }
        if (i % 25 == 0) { /* the handler leaves by siglongjmp */
            CHECK(trap_once(), "the trap page did not fault");
            jumps++;
            CHECK(g_jumps == jumps, "jumps %d of %d", (int)g_jumps, jumps);
            /* No grace section may be left open by the jump: track and
             * untrack wait for readers (a hang here ends by the alarm). */
            CHECK_RC(sf_track(t, scratch, 4 * PS), 0);
            CHECK_RC(sf_untrack(t, scratch, 4 * PS), 0);
        }
        if (i % 16 == 15)
            CHECK(sf_collect(t, SF_COLLECT_RESET, collect_into, &acc) >= 0, "collect");
    }
    atomic_store(&bg.stop, 1);
    pthread_join(bg.th, NULL);
    CHECK(sf_collect(t, SF_COLLECT_RESET, collect_into, &acc) >= 0, "collect");
    CHECK(!hb_code, "%s (%#lx vs %#lx)", hb_what[hb_code], (unsigned long)hb_a, (unsigned long)hb_b);
    CHECK(acc.outside == 0, "pages outside");
    for (size_t p = 0; p < n; p++) {
        int w = p < 128 ? want[p] : bgw[p - 128];
        CHECK(w == acc.bits[p], "page %zu: written %d, reported %d", p, w, acc.bits[p]);
    }
    for (size_t p = 0; p < 128; p++)
        if (want[p]) /* the last i with i*7 % 128 == p wrote it */
            for (int i = iters - 1; i >= 0; i--)
                if ((size_t)i * 7 % 128 == p) {
                    CHECK(mem[p * PS] == (char)i, "page %zu lost its data", p);
                    break;
                }
    CHECK(reads > 0 && jumps > 0, "loop");
    free(acc.bits);
    munmap(mem, n * PS);
    munmap(scratch, 4 * PS);
    munmap(g_guard, PS);
    munmap(g_trap, PS);
    munmap(g_filemap, 2 * PS);
    close(g_memfd);
    return 0;
}

/* (a) The program's handlers exist before snapfault's: faults outside
 * tracked memory are forwarded to them. */
static int c_before(const struct variant *v)
{
    CHECK(install(SIGSEGV, prog_handler, 0, NULL) == 0, "sigaction");
    CHECK(install(SIGBUS, prog_handler, 0, NULL) == 0, "sigaction");
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    rc = guard_loop(t);
    sf_tracker_destroy(t);
    return rc;
}

/* (a) The program installs its handlers after snapfault's and chains. */
static int c_after(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    CHECK(install(SIGSEGV, after_handler, 0, &g_old_segv) == 0, "sigaction");
    CHECK(install(SIGBUS, after_handler, 0, &g_old_bus) == 0, "sigaction");
    /* What it replaced is snapfault's entry: SA_SIGINFO | SA_ONSTACK. */
    CHECK((g_old_segv.sa_flags & (SA_SIGINFO | SA_ONSTACK)) == (SA_SIGINFO | SA_ONSTACK) &&
              (g_old_bus.sa_flags & (SA_SIGINFO | SA_ONSTACK)) == (SA_SIGINFO | SA_ONSTACK),
          "snapfault's handler flags %#x / %#x", g_old_segv.sa_flags, g_old_bus.sa_flags);
    rc = guard_loop(t);
    sf_tracker_destroy(t);
    return rc;
}

/* A plain (not SA_SIGINFO) handler installed before: forwarded with the
 * signal number only, and it can repair and resume. */
static volatile sig_atomic_t g_plain;
static void plain_handler(int sig)
{
    if (sig == SIGSEGV && mprotect(g_guard, PS, PROT_READ | PROT_WRITE) == 0)
        g_plain++;
}

static int c_plain(const struct variant *v)
{
    CHECK(signal(SIGSEGV, plain_handler) != SIG_ERR, "signal");
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 64;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    g_guard = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(g_guard != MAP_FAILED, "mmap");
    for (int i = 0; i < 50; i++) {
        mem[(size_t)i % n * PS] = 1;
        *(volatile char *)(g_guard + i) = 1; /* volatile: not moved past the check */
        CHECK(g_plain == i + 1, "plain handler ran %d times for %d faults", (int)g_plain, i + 1);
        mprotect(g_guard, PS, PROT_NONE);
    }
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 50);
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    munmap(g_guard, PS);
    return 0;
}

/* (a) Memory given back by a partial untrack is the program's again: a
 * protection it sets there itself is respected, so its own faults reach
 * its handler (snapfault must not "repair" them). */
static int c_given_back(const struct variant *v)
{
    CHECK(install(SIGSEGV, prog_handler, 0, NULL) == 0, "sigaction");
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 64;
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    CHECK_RC(sf_untrack(t, mem + 32 * PS, 32 * PS), 0);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);
    g_guard = mem + 40 * PS; /* the program's own guard page now */
    for (int i = 0; i < 6; i++) {
        CHECK(mprotect(g_guard, PS, PROT_READ) == 0, "mprotect");
        g_expect = g_guard + 8 * (size_t)i;
        g_expect_write = 1;
        *(volatile char *)g_expect = 1;
        CHECK(g_segv == i + 1, "write %d to the program's read-only page reached its handler "
              "%d times", i + 1, (int)g_segv);
    }
    CHECK(!hb_code, "%s (%#lx vs %#lx)", hb_what[hb_code], (unsigned long)hb_a, (unsigned long)hb_b);
    mem[3 * PS] = 1; /* the tracked half still tracks */
    CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 1);
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return 0;
}

/* A tracker with some faults behind it, for the crash cases. */
static char *g_mem;
static sf_tracker *g_t;
static int tracked_setup(const struct variant *v)
{
    int rc = make_tracker(v, 0, &g_t);
    if (rc)
        return rc;
    g_mem = map_region(257 * PS);
    CHECK(g_mem, "mmap");
    CHECK_RC(sf_track(g_t, g_mem, 256 * PS), 0);
    for (size_t p = 0; p < 256; p += 3)
        g_mem[p * PS] = 1;
    CHECK_RC(sf_collect(g_t, SF_COLLECT_RESET, NULL, NULL), 86);
    g_mem[PS] = 2; /* armed again: one more fault */
    return 0;
}

/* No core files from the crashes this test causes on purpose. */
static void no_core(void)
{
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    prctl(PR_SET_DUMPABLE, 0);
}

/* Through a volatile pointer the compiler can neither prove the NULL (and
 * emit a trap instead) nor drop or move the store; UBSan's null check is
 * off here so that the kernel, not the sanitizer, sees the write. */
__attribute__((no_sanitize_undefined, noinline)) static void null_write(void)
{
    volatile int *volatile np = NULL;
    *np = 1;
}

/* (b) Untracked NULL write under SIG_DFL: dies with SIGSEGV. */
static int c_null(const struct variant *v)
{
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    no_core();
    say("T\n");
    null_write();
    say("SURVIVED\n");
    CHECK(0, "a NULL write did not kill the process");
}

/* (b) A write to an untracked read-only page right after the tracked
 * range (SEGV_ACCERR, the code snapfault handles): dies with SIGSEGV. */
static int c_readonly(const struct variant *v)
{
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    CHECK(mprotect(g_mem + 256 * PS, PS, PROT_READ) == 0, "mprotect");
    no_core();
    say("T\n");
    *(volatile char *)(g_mem + 256 * PS) = 1;
    say("SURVIVED\n");
    CHECK(0, "a write to a read-only page did not kill the process");
}

/* (b) A truncated file page under SIG_DFL: dies with SIGBUS. */
static int c_sigbus(const struct variant *v)
{
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    CHECK(file_setup() == 0, "memfd: %s", strerror(errno));
    no_core();
    say("T\n");
    *(volatile char *)(g_filemap + PS) = 1;
    say("SURVIVED\n");
    CHECK(0, "a write past the end of a file did not kill the process");
}

/* (b) raise(SIGSEGV) / raise(SIGBUS) under SIG_DFL (si_code <= 0): the
 * signal is not swallowed. */
static int c_raise_segv(const struct variant *v)
{
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    no_core();
    say("T\n");
    raise(SIGSEGV);
    say("SURVIVED\n");
    CHECK(0, "raise(SIGSEGV) was swallowed");
}

static int c_raise_bus(const struct variant *v)
{
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    no_core();
    say("T\n");
    raise(SIGBUS);
    say("SURVIVED\n");
    CHECK(0, "raise(SIGBUS) was swallowed");
}

/* (b) kill(pid, SIGSEGV) from another process (SI_USER), while this one
 * waits: the parent sends it when it reads "W". */
static int c_kill(const struct variant *v)
{
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    no_core();
    alarm(1); /* swallowed: SIGALRM ends it */
    say("W\n");
    for (;;)
        pause();
}

/* (c) SA_RESETHAND: the first fault goes to the handler, the second kills. */
static volatile sig_atomic_t g_once;
static void once_handler(int sig, siginfo_t *si, void *uc)
{
    g_once++;
    say("H\n");
    if (in_page(si->si_addr, g_guard))
        mprotect(g_guard, PS, PROT_READ | PROT_WRITE);
}

static int c_resethand(const struct variant *v)
{
    CHECK(install(SIGSEGV, once_handler, SA_RESETHAND, NULL) == 0, "sigaction");
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    g_guard = mmap(NULL, PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(g_guard != MAP_FAILED, "mmap");
    *(volatile char *)g_guard = 1;
    CHECK(g_once == 1, "first fault: handler ran %d times", (int)g_once);
    say("1\n");
    g_mem[7 * PS] = 1; /* tracking still works in between */
    mprotect(g_guard, PS, PROT_NONE);
    no_core();
    *(volatile char *)g_guard = 2;
    say("SURVIVED\n");
    CHECK(0, "second fault did not kill (handler ran %d times)", (int)g_once);
}

/* (c) A stack overflow caught by the program on its sigaltstack: snapfault
 * must run on the alternate stack too (SA_ONSTACK) to forward it. */
static void overflow_handler(int sig, siginfo_t *si, void *uc)
{
    g_jumps++;
    siglongjmp(g_jmp, 1);
}

static int __attribute__((noinline)) recurse(volatile char *prev, int depth)
{
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[1023] = prev ? prev[0] : 0;
    if (depth > (1 << 24)) /* 16 GiB of frames: never, but the recursion has an end */
        return 0;
    return recurse(frame, depth + 1) + frame[1023]; /* not a tail call */
}

static int c_altstack(const struct variant *v)
{
    CHECK(install(SIGSEGV, overflow_handler, SA_ONSTACK, NULL) == 0, "sigaction");
    int rc = tracked_setup(v);
    if (rc)
        return rc;
    stack_t ss = {.ss_size = 1 << 16};
    ss.ss_sp = malloc(ss.ss_size);
    CHECK(ss.ss_sp && sigaltstack(&ss, NULL) == 0, "sigaltstack");
    if (!sigsetjmp(g_jmp, 1))
        recurse(NULL, 0);
    CHECK(g_jumps == 1, "overflow handler ran %d times", (int)g_jumps);
    g_mem[9 * PS] = 1;
    CHECK_RC(sf_collect(g_t, SF_COLLECT_RESET, NULL, NULL), 2);
    sf_tracker_destroy(g_t);
    munmap(g_mem, 257 * PS);
    stack_t off = {.ss_flags = SS_DISABLE};
    sigaltstack(&off, NULL);
    free(ss.ss_sp);
    return 0;
}

/* (d) errno survives a tracked fault.  On mprotect the program first eats
 * the VMA headroom so that snapfault's own mprotect fails with ENOMEM in
 * the handler (and the region degrades): a handler that did not restore
 * errno would leak that ENOMEM into the program. */
static int c_errno(const struct variant *v)
{
    sf_tracker *t;
    int rc = make_tracker(v, 0, &t);
    if (rc)
        return rc;
    size_t n = 2048; /* the flood below writes the second half, untouched till then */
    char *mem = map_region(n * PS);
    CHECK(mem, "mmap");
    CHECK_RC(sf_track(t, mem, n * PS), 0);
    for (int round = 0; round < 3; round++) {
        for (size_t p = 0; p < 256; p++) {
            errno = 1000 + (int)p;
            mem[(p * 4 + (size_t)round) * PS] = 1;
            CHECK(errno == 1000 + (int)p, "round %d page %zu: errno %d", round, p * 4, errno);
        }
        CHECK_RC(sf_collect(t, SF_COLLECT_RESET, NULL, NULL), 256);
    }
    if (v->backend == SF_BACKEND_MPROTECT) {
        sf_caps c;
        sf_probe(&c);
        size_t fl = (size_t)c.max_map_count + 64;
        char *flood = mmap(NULL, fl * PS, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        CHECK(flood != MAP_FAILED, "mmap");
        size_t k = 0;
        while (k < fl / 2 && mprotect(flood + 2 * k * PS, PS, PROT_READ) == 0)
            k++;
        int merr = errno;
        /* From here to the munmap: no allocation (a sanitizer's allocator
         * would need a mapping it cannot get). */
        int bad = -1, got = 0;
        /* Every other page of a stretch that is still one VMA: each
         * unprotect must split it. */
        for (size_t p = 0; p < 256; p++) {
            errno = 2000 + (int)p;
            mem[(1024 + p * 2 + 1) * PS] = 1;
            if (errno != 2000 + (int)p && bad < 0) {
                bad = (int)p;
                got = errno;
            }
        }
        sf_stats st;
        sf_tracker_stats(t, &st);
        munmap(flood, fl * PS);
        CHECK(k < fl / 2 && merr == ENOMEM, "could not reach vm.max_map_count (%zu splits, %s)", k,
              strerror(merr));
        CHECK(bad < 0, "page %d: errno %d (%s) after the fault", 1024 + bad * 2 + 1, got,
              strerror(got));
        CHECK(st.degraded > 0, "snapfault's mprotect never failed: the case proves nothing");
        struct pageset s;
        memset(&s, 0, sizeof s);
        s.base = mem;
        s.npages = n;
        s.bits = calloc(n, 1);
        s.stop_after = -1;
        CHECK(s.bits, "calloc");
        CHECK(sf_collect(t, SF_COLLECT_RESET, collect_into, &s) >= 256, "collect");
        for (size_t p = 0; p < 256; p++)
            CHECK(s.bits[1024 + p * 2 + 1], "page %zu written under the flood, not reported",
                  1024 + p * 2 + 1);
        free(s.bits);
    }
    sf_tracker_destroy(t);
    munmap(mem, n * PS);
    return 0;
}

/* ------------------------------------------------------------------------
 * Parent side
 * ------------------------------------------------------------------------ */

struct ccase {
    const char *id, *name;
    int (*fn)(const struct variant *);
    int expect_sig;     /* the child must die of this (0: exit 0) */
    const char *marker; /* ... after printing this */
    int send_sig;       /* sent to the child when the marker appears */
    const char *bug;    /* known library bug making it fail (see report()) */
    sf_backend bug_on;  /* ... on this backend only (AUTO: on all) */
};

static const struct ccase cases[] = {
    {"before", "program handler installed before: guard page, SIGBUS, raise, siglongjmp",
     c_before, 0, NULL, 0, NULL, SF_BACKEND_AUTO},
    {"after", "program handler installed after, chaining to snapfault's", c_after, 0, NULL, 0,
     NULL, SF_BACKEND_AUTO},
    {"plain", "plain (not SA_SIGINFO) handler installed before", c_plain, 0, NULL, 0, NULL,
     SF_BACKEND_AUTO},
    {"given-back", "program's own mprotect on memory a partial untrack gave back", c_given_back,
     0, NULL, 0, NULL, SF_BACKEND_AUTO},
    {"null", "untracked NULL write under SIG_DFL dies with SIGSEGV", c_null, SIGSEGV, "T\n", 0,
     NULL, SF_BACKEND_AUTO},
    {"readonly", "read-only page after the tracked range dies with SIGSEGV", c_readonly, SIGSEGV,
     "T\n", 0, NULL, SF_BACKEND_AUTO},
    {"sigbus", "truncated file page under SIG_DFL dies with SIGBUS", c_sigbus, SIGBUS, "T\n", 0,
     NULL, SF_BACKEND_AUTO},
    {"raise-segv", "raise(SIGSEGV) under SIG_DFL is not swallowed", c_raise_segv, SIGSEGV, "T\n",
     0, NULL, SF_BACKEND_AUTO},
    {"raise-bus", "raise(SIGBUS) under SIG_DFL is not swallowed", c_raise_bus, SIGBUS, "T\n", 0,
     NULL, SF_BACKEND_AUTO},
    {"kill", "kill(SIGSEGV) from another process is not swallowed", c_kill, SIGSEGV, "W\n",
     SIGSEGV, NULL, SF_BACKEND_AUTO},
    {"resethand", "SA_RESETHAND: first fault handled, second kills", c_resethand, SIGSEGV, "1\n",
     0, NULL, SF_BACKEND_AUTO},
    {"altstack", "stack overflow reaches the program's sigaltstack handler", c_altstack, 0, NULL,
     0, NULL, SF_BACKEND_AUTO},
    {"errno", "errno preserved across tracked faults (and failing mprotect)", c_errno, 0, NULL, 0,
     NULL, SF_BACKEND_AUTO},
};
#define NCASES (sizeof cases / sizeof cases[0])

static char g_self[PATH_MAX];

/* Runs case c on variant vi in a fresh process; returns 0/1/77 with h_msg. */
static int spawn(const struct ccase *c, size_t vi)
{
    int pfd[2];
    if (pipe(pfd) < 0)
        SKIP("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        SKIP("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        char vs[16];
        snprintf(vs, sizeof vs, "%zu", vi);
        execl(g_self, g_self, c->id, vs, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char out[4096];
    size_t n = 0;
    int sent = 0;
    for (;;) {
        ssize_t k = read(pfd[0], out + n, sizeof out - 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
        out[n] = 0;
        if (c->send_sig && !sent && strstr(out, c->marker)) {
            kill(pid, c->send_sig);
            sent = 1;
        }
        if (n == sizeof out - 1)
            n = sizeof out / 2; /* keep reading; the tail is what matters */
    }
    out[n] = 0;
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    int marked = c->marker && strstr(out, c->marker);
    /* The child's last line is its verdict or reason. */
    while (n && out[n - 1] == '\n')
        out[--n] = 0;
    const char *last = strrchr(out, '\n') ? strrchr(out, '\n') + 1 : out;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        SKIP("%.300s", last);
    if (!c->expect_sig) {
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
            return 0;
        if (WIFSIGNALED(st))
            CHECK(0, "child killed by %s%s; output: %.300s", strsignal(WTERMSIG(st)),
                  WTERMSIG(st) == SIGALRM ? " (hung)" : "", out);
        CHECK(0, "child exited %d: %.300s", WEXITSTATUS(st), last);
    }
    CHECK(marked, "child did not reach the crash (status %#x): %.300s", st, out);
    CHECK(WIFSIGNALED(st), "child survived, exit %d: %.300s", WEXITSTATUS(st), last);
    CHECK(WTERMSIG(st) == c->expect_sig, "child died of %s, want %s", strsignal(WTERMSIG(st)),
          strsignal(c->expect_sig));
    if (c->fn == c_resethand) {
        const char *h = strstr(out, "H\n");
        CHECK(h && !strstr(h + 2, "H\n"), "handler ran more than once: %.300s", out);
    }
    return 0;
}

static void report(const struct ccase *c, const struct variant *v, int rc)
{
    const char *strict = getenv("SF_TEST_STRICT");
    const char *vname = v->name;
    int marked = c->bug && (c->bug_on == SF_BACKEND_AUTO || c->bug_on == v->backend);
    if (!marked || rc == 77 || (strict && *strict && strcmp(strict, "0") != 0)) {
        h_report(c->name, vname, rc);
    } else if (rc == 0) {
        snprintf(h_msg, sizeof h_msg, "passes although marked as a known bug (%s): drop the mark",
                 c->bug);
        h_report(c->name, vname, 1);
    } else {
        printf("Testing %s on %s ... expected failure (known bug: %s)\n    %s\n", c->name, vname,
               c->bug, h_msg);
        fflush(stdout);
        h_skip++;
        h_msg[0] = 0;
    }
}

int main(int argc, char **argv)
{
    PS = (size_t)sysconf(_SC_PAGESIZE);
    if (argc == 3) { /* a child: run one case, say why on failure */
        alarm(30);
        size_t vi = strtoul(argv[2], NULL, 10);
        for (size_t i = 0; i < NCASES && vi < NVARIANTS; i++)
            if (strcmp(cases[i].id, argv[1]) == 0) {
                int rc = cases[i].fn(&variants[vi]);
                printf("\n%s\n", h_msg);
                fflush(stdout);
                return rc;
            }
        printf("\nunknown case %s/%s\n", argv[1], argv[2]);
        return 2;
    }
    ssize_t l = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
    if (l <= 0)
        return 1;
    g_self[l] = 0;
    for (size_t c = 0; c < NCASES; c++)
        for (size_t v = 0; v < NVARIANTS; v++)
            if (h_want(variants[v].name))
                report(&cases[c], &variants[v], spawn(&cases[c], v));
    return h_finish();
}
