/* fault.c - the one signal entry for SIGSEGV and SIGBUS, forwarding of faults
 * that are not ours, and the lock-free page-state machine that resolves them. */
#include "internal.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Handlers installed before ours (or later by the program, through the
 * preload's sigaction interposer).  Two slots per signal and an atomic index:
 * a writer fills the spare slot, flips the index, then waits a grace period
 * before the old slot may be written again.  Readers copy the slot inside a
 * grace section and call it outside (the program's handler may longjmp).
 * ------------------------------------------------------------------------ */
struct chain {
    struct sigaction slot[2];
    _Atomic int cur;
};
static struct chain g_chain_segv, g_chain_bus;
static pthread_mutex_t g_chain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_install_once = PTHREAD_ONCE_INIT;
static int g_install_err;
static _Atomic pid_t g_pid; /* updated in the fork child; vfork children share it */

static struct chain *chain_of(int sig)
{
    return sig == SIGSEGV ? &g_chain_segv : sig == SIGBUS ? &g_chain_bus : NULL;
}

static void chain_set(struct chain *c, const struct sigaction *act)
{
    int next = !atomic_load(&c->cur);
    c->slot[next] = *act;
    atomic_store(&c->cur, next);
    sf__grace_wait();
}

static void sf_entry(int sig, siginfo_t *si, void *uc);

static void at_fork_child(void)
{
    atomic_store(&g_pid, (pid_t)syscall(SYS_getpid));
}

static void install_once(void)
{
    sf__init();
    atomic_store(&g_pid, (pid_t)syscall(SYS_getpid));
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = sf_entry;
    /* All signals blocked while we run: an asynchronous handler that wrote
     * to a page we hold BUSY would otherwise spin forever on it. */
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    struct sigaction old;
    pthread_mutex_lock(&g_chain_lock);
    if (sigaction(SIGSEGV, &sa, &old) == 0) {
        g_chain_segv.slot[0] = old;
        if (sigaction(SIGBUS, &sa, &old) == 0)
            g_chain_bus.slot[0] = old;
        else
            g_install_err = -errno;
    } else {
        g_install_err = -errno;
    }
    pthread_mutex_unlock(&g_chain_lock);
    pthread_atfork(NULL, NULL, at_fork_child);
}

int sf__signals_install(void)
{
    pthread_once(&g_install_once, install_once);
    return g_install_err;
}

/* The program's view of sigaction(SIGSEGV/SIGBUS) once snapfault's handler
 * is installed: act replaces the forwarded handler, old receives it.  Used
 * by the preload runtime so that programs keep their own handlers. */
SF_INTERNAL int sf__chain_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
int sf__chain_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    struct chain *c = chain_of(sig);
    if (!c)
        return -EINVAL;
    int err = sf__signals_install();
    if (err)
        return err;
    pthread_mutex_lock(&g_chain_lock);
    if (old)
        *old = c->slot[atomic_load(&c->cur)];
    if (act)
        chain_set(c, act);
    pthread_mutex_unlock(&g_chain_lock);
    return 0;
}

/* Forwards a fault that is not ours to the handler installed before us, with
 * the same siginfo and ucontext, honouring its flags and mask.  Under SIG_DFL
 * (or SIG_IGN, which the kernel treats as default for a synchronous fault)
 * the default is restored and the faulting instruction runs again, so a real
 * crash dies with the right signal at the right place. */
static void forward(int sig, siginfo_t *si, void *uc)
{
    struct chain *c = chain_of(sig);
    unsigned g = sf__grace_enter();
    struct sigaction prev = c->slot[atomic_load(&c->cur)];
    sf__grace_exit(g);

    if (!(prev.sa_flags & SA_SIGINFO) &&
        (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN)) {
        bool sent = si->si_code <= 0; /* kill(), raise(), sigqueue() */
        if (sent && prev.sa_handler == SIG_IGN)
            return; /* ignored, as without snapfault */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        /* A real fault repeats when we return, now fatally; a sent signal
         * does not repeat: send it again (it stays pending until this
         * handler returns, then the default action runs). */
        if (sent)
            syscall(SYS_tgkill, (pid_t)syscall(SYS_getpid), (pid_t)syscall(SYS_gettid), sig);
        return;
    }
    if (prev.sa_flags & SA_RESETHAND) {
        /* One-shot handler: forward to the default from now on.  No lock in
         * a signal handler: fill the spare slot and flip, as chain_set does
         * (the grace wait is left to the next sigaction). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        int next = !atomic_load(&c->cur);
        c->slot[next] = dfl;
        atomic_store(&c->cur, next);
    }
    /* The mask the program asked for: the interrupted mask, its sa_mask,
     * and the signal itself unless SA_NODEFER. */
    sigset_t mask = ((ucontext_t *)uc)->uc_sigmask;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&prev.sa_mask, s))
            sigaddset(&mask, s);
    if (!(prev.sa_flags & SA_NODEFER))
        sigaddset(&mask, sig);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    if (prev.sa_flags & SA_SIGINFO)
        prev.sa_sigaction(sig, si, uc);
    else
        prev.sa_handler(sig);
}

/* Repeated spurious faults at one address from one thread mean the page is
 * protected by someone else (the program's own mprotect): not ours. */
static __thread uintptr_t tls_spurious_addr __attribute__((tls_model("initial-exec")));
static __thread unsigned tls_spurious_count __attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_spurious_seq __attribute__((tls_model("initial-exec")));

static void sf_entry(int sig, siginfo_t *si, void *uc)
{
    int saved_errno = errno;
    int res = SF_NOT_OURS;
    /* si_code > 0: raised by the kernel for a real fault, not by kill(). */
    if (si->si_code > 0 && ((sig == SIGSEGV && si->si_code == SEGV_ACCERR) ||
                            (sig == SIGBUS && si->si_code == BUS_ADRERR))) {
        uintptr_t addr = (uintptr_t)si->si_addr;
        unsigned g = sf__grace_enter();
        struct sf_region *r = sf__region_find(addr);
        uint64_t seq = 0;
        if (r) {
            sf_fault_mode m = r->t->fault_mode;
            seq = atomic_load_explicit(&r->t->rearm_seq, memory_order_relaxed);
            if ((sig == SIGSEGV && m == SF_FAULTS_SIGNAL) ||
                (sig == SIGBUS && m == SF_FAULTS_INTHREAD))
                res = sf__resolve(r, addr, NULL);
        }
        sf__grace_exit(g);
        /* Only heals count: a retry after another thread's BUSY page is
         * the normal race for a hot page and must never be forwarded. */
        /* ... and only heals with no re-arm in between: a thread that
         * loses the race for a page re-armed every round heals once per
         * round, while someone else's protection heals in a tight loop. */
        if (res == SF_HEALED) {
            if (tls_spurious_addr == addr && tls_spurious_seq == seq) {
                if (++tls_spurious_count > 3)
                    res = SF_NOT_OURS;
            } else {
                tls_spurious_addr = addr;
                tls_spurious_seq = seq;
                tls_spurious_count = 1;
            }
        } else if (res == SF_RESOLVED) {
            tls_spurious_addr = 0;
        }
    }
    if (res == SF_NOT_OURS) {
        tls_spurious_addr = 0;
        forward(sig, si, uc);
    }
    errno = saved_errno;
}

/* ------------------------------------------------------------------------
 * The page-state machine (see internal.h for the states).
 * ------------------------------------------------------------------------ */

void sf__chunk_mark(struct sf_region *r, size_t page, uint32_t bits)
{
    _Atomic uint32_t *c = &r->chunk[page >> SF_CHUNK_SHIFT];
    if ((atomic_load_explicit(c, memory_order_relaxed) & bits) != bits)
        atomic_fetch_or(c, bits);
}

static void chunk_maxgen(struct sf_region *r, size_t page, uint32_t gen)
{
    _Atomic uint32_t *m = &r->chunk_maxgen[page >> SF_CHUNK_SHIFT];
    uint32_t cur = atomic_load_explicit(m, memory_order_relaxed);
    while (cur < gen && !atomic_compare_exchange_weak(m, &cur, gen))
        ;
}

/* Sequential writes unprotect (and copy) a growing cluster of following
 * pages per fault; random writes one.  Only pages still ARMED join. */
static size_t cluster_pages(struct sf_region *r, size_t p)
{
    size_t last = atomic_load_explicit(&r->last_fault, memory_order_relaxed);
    unsigned streak = atomic_load_explicit(&r->streak, memory_order_relaxed);
    if (p > last && p - last <= 64)
        streak = streak < 8 ? streak + 1 : 8;
    else
        streak = 0;
    atomic_store_explicit(&r->streak, streak, memory_order_relaxed);
    atomic_store_explicit(&r->last_fault, p, memory_order_relaxed);
    if (streak < 2)
        return 1;
    size_t n = (size_t)1 << (streak < 7 ? streak - 1 : 6); /* 2 .. 64 */
    return n;
}

/* Handler threads: whether the kernel has page write-protected now
 * (pagemap bit 57).  A page nobody protected cannot be the page of a
 * pending fault: its message is stale. */
static bool page_wp(sf_tracker *t, uintptr_t page_addr)
{
    uint64_t ent = 0;
    if (t->pagemap_fd < 0 ||
        pread(t->pagemap_fd, &ent, sizeof(ent), (off_t)((page_addr >> sf_page_shift) * sizeof(ent))) !=
            (ssize_t)sizeof(ent))
        return true; /* cannot tell: resolve it (over-reports at worst) */
    return (ent >> 57) & 1;
}

int sf__resolve(struct sf_region *r, uintptr_t addr, const uint32_t *since)
{
    sf_tracker *t = r->t;
    size_t p = (addr - r->start) >> sf_page_shift;
    _Atomic uint64_t *ps = &r->ps[p];
    uintptr_t page_addr = r->start + (p << sf_page_shift);
    bool threads = t->fault_mode == SF_FAULTS_HANDLER_THREAD;

    if (SF_UNLIKELY(t->pid != atomic_load_explicit(&g_pid, memory_order_relaxed))) {
        /* A forked child: tracking is off there; make the page writable in
         * the child's own address space (mprotect is per process; uffd WP
         * bits do not follow a fork, so only mprotect faults arrive). */
        if (t->backend == SF_BACKEND_MPROTECT &&
            mprotect((void *)page_addr, sf_page_size, PROT_READ | PROT_WRITE) == 0)
            return SF_RESOLVED;
        return SF_NOT_OURS;
    }

    uint64_t w;
    for (;;) {
        w = atomic_load(ps);
        unsigned st = PS_ST(w);
        if (SF_UNLIKELY(w & PS_GONE)) {
            /* Untracked: sf_untrack opened it before marking it GONE, so
             * this is a fault that raced with that, or the program's own
             * protection (forwarded once it repeats). */
            return SF_HEALED;
        }
        if (st == PS_BUSY) {
            sf__wait_not_busy(ps);
            return SF_RETRY;
        }
        /* A uffd message read before the page was last opened: the wake of
         * that opening released its thread (the kernel drops a waiter's
         * message once woken, so it was read before).  Resolving it now
         * would report a write nobody made, and copy a page a take picked
         * while others write it.  The caller wakes the page instead. */
        if (since && ps_rseq_after(PS_RSEQ(w), *since))
            return SF_RETRY;
        if (st == PS_WRITABLE) {
            /* Protected although WRITABLE: a collector's protect landed
             * after a handler's unprotect (see DESIGN.md, "heal").  Own the
             * page so no collector moves it meanwhile, unprotect again. */
            if (!atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(w, PS_BUSY)))
                continue;
            uint64_t rs = threads ? sf__rseq_next(t) : (w & PS_RSEQ_MASK);
            t->ops->unprotect(t, r, page_addr, sf_page_size);
            atomic_store(ps, (w & ~PS_RSEQ_MASK) | rs);
            SF_STAT_INC(t, st_spurious, 1);
            return SF_HEALED;
        }
        /* COLLECTING from a message: the collector may not have protected
         * it yet.  A fault delivered now proves the protect landed; a
         * message may be older than it (two threads on one page): only a
         * page the kernel protects now is safe to copy and take over. */
        if (st == PS_COLLECTING && since && !page_wp(t, page_addr))
            return SF_RETRY;
        /* ARMED, or COLLECTING (taken over: the collector's final CAS fails
         * and the page stays dirty for the next collect). */
        if (atomic_compare_exchange_weak(ps, &w, PS_WITH_ST(w, PS_BUSY)))
            break;
    }

    /* Own a cluster of following ARMED pages (never COLLECTING ones: their
     * collector has not protected them yet and would protect them after our
     * unprotect). */
    size_t n = 1;
    if (!t->exact) {
        size_t want = cluster_pages(r, p);
        while (n < want && p + n < r->npages) {
            _Atomic uint64_t *q = &r->ps[p + n];
            uint64_t wq = atomic_load(q);
            if (PS_ST(wq) != PS_ARMED || (wq & PS_GONE) ||
                !atomic_compare_exchange_strong(q, &wq, PS_WITH_ST(wq, PS_BUSY)))
                break;
            n++;
        }
    }

    uint32_t C = atomic_load(&t->gen);
    if (r->vhead) {
        for (size_t i = 0; i < n; i++) {
            uint64_t wi = atomic_load(&r->ps[p + i]);
            uint32_t cg = PS_CGEN(wi) > r->track_gen ? PS_CGEN(wi) : r->track_gen;
            if (cg < C && sf__snapshot_needs_save(t, cg))
                sf__snapshot_save(r, p + i, wi, C);
        }
    }

    /* Publish the write before the page opens: with handler threads the
     * unprotect wakes the faulting thread, whose next sf_collect, restore or
     * take must see this page written (DIRTY, content generation C).  It is
     * still BUSY, so collectors and readers wait for it to finish. */
    uint64_t orig[64];
    uint64_t rs = threads ? sf__rseq_next(t) : 0;
    for (size_t i = 0; i < n; i++) {
        orig[i] = atomic_load(&r->ps[p + i]);
        atomic_store(&r->ps[p + i], PS_MAKE(PS_BUSY, 1, C) | rs);
    }
    for (size_t i = 0; i < n; i += SF_CHUNK_PAGES - ((p + i) & (SF_CHUNK_PAGES - 1))) {
        sf__chunk_mark(r, p + i, CH_DIRTY | CH_WRITABLE);
        chunk_maxgen(r, p + i, C);
    }
    if (n > 1) {
        sf__chunk_mark(r, p + n - 1, CH_DIRTY | CH_WRITABLE);
        chunk_maxgen(r, p + n - 1, C);
    }

    uint64_t nw = PS_MAKE(PS_WRITABLE, 1, C) | rs;
    int rc = t->ops->unprotect(t, r, page_addr, n << sf_page_shift);
    if (SF_UNLIKELY(rc < 0) && n > 1) {
        /* Part of the cluster may have been unregistered meanwhile (a
         * partial sf_untrack: ENOENT), after the kernel opened the pages
         * before it.  Page by page: what opens is written, what cannot is
         * given back armed as it was (its untrack marks it GONE). */
        for (size_t i = 1; i < n; i++)
            atomic_store(&r->ps[p + i],
                         t->ops->unprotect(t, r, page_addr + (i << sf_page_shift), sf_page_size) < 0
                             ? PS_WITH_ST(orig[i], PS_ARMED) : nw);
        n = 1;
        rc = t->ops->unprotect(t, r, page_addr, sf_page_size);
    }
    if (SF_UNLIKELY(rc < 0)) {
        atomic_store(ps, PS_WITH_ST(orig[0], PS_ARMED));
        /* Unregistered under us: an untrack gives the page back writable;
         * the instruction runs again and finds it so. */
        if (rc == -ENOENT)
            return SF_RETRY;
        /* The backend could not unprotect even after degrading (see
         * backend_mprotect.c): give the page back armed as it was and let
         * the fault go to the previous handler rather than loop. */
        return SF_NOT_OURS;
    }
    for (size_t i = 0; i < n; i++)
        atomic_store(&r->ps[p + i], nw);
    SF_STAT_INC(t, st_faults, 1);
    SF_STAT_INC(t, st_unprot, n);
    return SF_RESOLVED;
}
