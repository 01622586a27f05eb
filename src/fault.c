/* fault.c - the one signal entry for SIGSEGV and SIGBUS, forwarding of faults
 * that are not ours, and the lock-free resolution of ours (the handler's
 * path through the page-state machine of pagestate.h). */
#include "internal.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef void (*sf_sa_fn)(int, siginfo_t *, void *);

/* ------------------------------------------------------------------------
 * Handlers that faults which are not ours go to: the one installed before
 * ours, one the program installed later through sf_sigaction() (or the
 * preload's sigaction interposer), or one that replaced ours with a raw
 * sigaction() and that sf__signals_ensure() put behind ours again.  Two slots
 * per signal and an atomic index: a writer fills the spare slot, flips the
 * index, then waits a grace period before the old slot may be written again.
 * Readers copy the slot inside a grace section and call it outside (the
 * program's handler may longjmp).
 *
 * `under` is what `fwd` replaced: a handler that replaced ours keeps ours
 * as its "previous" and may call it for a fault it does not want; that fault
 * goes one level down instead of back to `fwd` (see sf_entry).
 * ------------------------------------------------------------------------ */
struct link {
    struct sigaction fwd, under;
};
struct chain {
    struct link slot[2];
    _Atomic int cur;
};
static struct chain g_chain_segv, g_chain_bus;
static pthread_mutex_t g_chain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t g_install_once = PTHREAD_ONCE_INIT;
static int g_install_err;
static _Atomic pid_t g_pid; /* updated in the fork child; vfork children share it */
/* The hook an embedding (the preload) registers: called first by sf_entry,
 * it may deal with a fault itself (sf_embed.h). */
static _Atomic(sf_fault_hook) g_hook;

static struct chain *chain_of(int sig)
{
    return sig == SIGSEGV ? &g_chain_segv : sig == SIGBUS ? &g_chain_bus : NULL;
}

/* Caller holds g_chain_lock. */
static void chain_set(struct chain *c, const struct sigaction *act)
{
    int cur = atomic_load(&c->cur), next = !cur;
    c->slot[next].under = c->slot[cur].fwd;
    c->slot[next].fwd = *act;
    atomic_store(&c->cur, next);
    sf__grace_wait();
}

static void sf_entry(int sig, siginfo_t *si, void *uc);

static bool is_ours(const struct sigaction *a)
{
    return (a->sa_flags & SA_SIGINFO) && a->sa_sigaction == sf_entry;
}

static void keeper(struct sigaction *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sa_sigaction = sf_entry;
    /* All signals blocked while we run: an asynchronous handler that wrote
     * to a page we hold BUSY would otherwise spin forever on it. */
    sigfillset(&sa->sa_mask);
    sa->sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
}

static void at_fork_child(void)
{
    atomic_store(&g_pid, sf__os_getpid());
    /* Only the forking thread exists: a sigaction call in another thread
     * may have held the lock at the fork. */
    pthread_mutex_init(&g_chain_lock, NULL);
}

static void install_once(void)
{
    sf__init();
    atomic_store(&g_pid, sf__os_getpid());
    struct sigaction sa;
    keeper(&sa);
    struct sigaction old;
    pthread_mutex_lock(&g_chain_lock);
    if (sf__os_sigaction(SIGSEGV, &sa, &old) == 0) {
        g_chain_segv.slot[0].fwd = old;
        g_chain_segv.slot[0].under.sa_handler = SIG_DFL;
        if (sf__os_sigaction(SIGBUS, &sa, &old) == 0) {
            g_chain_bus.slot[0].fwd = old;
            g_chain_bus.slot[0].under.sa_handler = SIG_DFL;
        } else {
            g_install_err = -errno;
        }
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

/* Puts our handler back in front of one that replaced it (a raw sigaction()
 * or signal() of the program), which becomes the forwarded handler. */
static int reinstall(void)
{
    int err = 0;
    pthread_mutex_lock(&g_chain_lock);
    for (int k = 0; k < 2; k++) {
        int sig = k ? SIGBUS : SIGSEGV;
        struct sigaction cur, sa, old;
        if (sf__os_sigaction(sig, NULL, &cur) != 0) {
            err = -errno;
            continue;
        }
        if (is_ours(&cur))
            continue;
        keeper(&sa);
        /* The exchange is atomic: a handler installed since the check is
         * the one we get back and forward to. */
        if (sf__os_sigaction(sig, &sa, &old) != 0) {
            err = -errno;
            continue;
        }
        if (!is_ours(&old))
            chain_set(chain_of(sig), &old);
    }
    pthread_mutex_unlock(&g_chain_lock);
    return err;
}

int sf__signals_ensure(void)
{
    int err = sf__signals_install();
    if (err)
        return err;
    struct sigaction cur;
    if (sf__os_sigaction(SIGSEGV, NULL, &cur) == 0 && is_ours(&cur) &&
        sf__os_sigaction(SIGBUS, NULL, &cur) == 0 && is_ours(&cur))
        return 0;
    return reinstall();
}

void sf__signals_set_hook(sf_fault_hook hook)
{
    atomic_store(&g_hook, hook);
}

/* The program's view of sigaction(SIGSEGV/SIGBUS) once snapfault's handler
 * is installed: act replaces the forwarded handler, old receives it.  Used
 * by the preload runtime so that programs keep their own handlers. */
int sf__chain_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    struct chain *c = chain_of(sig);
    if (!c)
        return -EINVAL;
    int err = sf__signals_install();
    if (err)
        return err;
    pthread_mutex_lock(&g_chain_lock);
    struct sigaction prev = c->slot[atomic_load(&c->cur)].fwd;
    if (act)
        chain_set(c, act);
    pthread_mutex_unlock(&g_chain_lock);
    if (old)
        *old = prev;
    return 0;
}

SF_API int sf_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!chain_of(sig) || (act && is_ours(act)))
        return -EINVAL;
    /* A handler that replaced ours with a raw sigaction() is forwarded to
     * first, so that old reports it. */
    int err = sf__signals_ensure();
    if (err)
        return err;
    return sf__chain_sigaction(sig, act, old);
}

/* ------------------------------------------------------------------------
 * Regions removed lately (sf_untrack, sf_tracker_destroy).  A fault raised
 * on a page while it was tracked may find its region gone when its handler
 * looks: the untrack opened the page first, so the instruction only has to
 * run again.  One writer (the regions lock), lock-free readers.
 * ------------------------------------------------------------------------ */
#define RM_SLOTS 64
struct rm_slot {
    _Atomic unsigned long seq; /* odd while written */
    _Atomic uintptr_t start, end;
};
static struct rm_slot g_rm[RM_SLOTS];
static _Atomic unsigned long g_rm_count;

void sf__signals_note_removed(uintptr_t start, uintptr_t end)
{
    unsigned long n = atomic_load(&g_rm_count);
    struct rm_slot *s = &g_rm[n % RM_SLOTS];
    atomic_store(&s->seq, 2 * n + 1);
    atomic_store(&s->start, start);
    atomic_store(&s->end, end);
    atomic_store(&s->seq, 2 * n + 2);
    atomic_store(&g_rm_count, n + 1);
}

/* Whether addr was in a region removed lately (a slot being written counts:
 * one more retry is harmless). */
static bool recently_removed(uintptr_t addr)
{
    for (unsigned i = 0; i < RM_SLOTS; i++) {
        struct rm_slot *s = &g_rm[i];
        unsigned long q = atomic_load(&s->seq);
        if (!q)
            continue;
        uintptr_t a = atomic_load(&s->start), e = atomic_load(&s->end);
        if ((q & 1) || atomic_load(&s->seq) != q)
            return true;
        if (a <= addr && addr < e)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------------
 * Forwarding
 * ------------------------------------------------------------------------ */

/* The fault being forwarded by this thread, to recognise the forwarded
 * handler calling ours (its saved "previous") for it: same siginfo, on a
 * frame deeper than forward()'s.  A handler that longjmps out leaves these
 * stale, but a later fault with the same siginfo address has its frames at
 * the same depth as this one's, never deeper than forward()'s. */
static __thread const siginfo_t *tls_fwd_si __attribute__((tls_model("initial-exec")));
static __thread const char *tls_fwd_frame __attribute__((tls_model("initial-exec")));
static __thread int tls_fwd_level __attribute__((tls_model("initial-exec")));
/* The program handler running with its signal virtually blocked. */
static __thread int tls_vb_sig __attribute__((tls_model("initial-exec")));
static __thread const char *tls_vb_frame __attribute__((tls_model("initial-exec")));
static __thread volatile uint64_t *tls_vb_cookie __attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_vb_val __attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_vb_gen __attribute__((tls_model("initial-exec")));

/* The default action for a fault nobody handles (SIG_DFL, or SIG_IGN, which
 * the kernel treats as default for a synchronous fault), without touching
 * the disposition: the other threads keep snapfault's handler. */
static void default_action(int sig, siginfo_t *si, void *uc, bool ignored)
{
    /* si_code <= 0: kill(), raise(), sigqueue(); BUS_MCEERR_AO: reported,
     * not raised by the instruction.  Neither repeats. */
    bool sent = si->si_code <= 0 || (sig == SIGBUS && si->si_code == BUS_MCEERR_AO);
    if (!sent) {
        /* The instruction runs again with the signal blocked: a fault on a
         * blocked signal makes the kernel restore the default and kill the
         * process with it (core dump included) at that instruction. */
        sigaddset(&((ucontext_t *)uc)->uc_sigmask, sig);
        return;
    }
    if (ignored)
        return; /* ignored, as without snapfault */
    /* Sent again, to this thread, once the default is back: it stays
     * pending until this handler returns, then the process dies of it. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sf__os_sigaction(sig, &dfl, NULL);
    sf__os_tgkill(sf__os_getpid(), sf__os_gettid(), sig);
}

/* Forwards a fault that is not ours to the handler behind ours (level 0) or
 * the one below it (level 1, see struct link), with the same siginfo and
 * ucontext, honouring its flags and mask. */
static void forward(int sig, siginfo_t *si, void *uc, int level)
{
    struct chain *c = chain_of(sig);
    unsigned g = sf__grace_enter();
    int cur = atomic_load(&c->cur);
    struct sigaction prev = level == 0 ? c->slot[cur].fwd : c->slot[cur].under;
    sf__grace_exit(g);

    if (level > 1 || is_ours(&prev) ||
        (!(prev.sa_flags & SA_SIGINFO) && (prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN))) {
        default_action(sig, si, uc, level <= 1 && !(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_IGN);
        return;
    }
    if (level == 0 && (prev.sa_flags & SA_RESETHAND)) {
        /* One-shot handler: forward to the default from now on.  No lock in
         * a signal handler: fill the spare slot and flip, as chain_set does
         * (the grace wait is left to the next sigaction). */
        int next = !cur;
        c->slot[next].under = c->slot[cur].under;
        memset(&c->slot[next].fwd, 0, sizeof(c->slot[next].fwd));
        c->slot[next].fwd.sa_handler = SIG_DFL;
        atomic_store(&c->cur, next);
    }
    /* The mask the program asked for: the interrupted mask, its sa_mask,
     * and the signal itself unless SA_NODEFER -- but under an embedding
     * that tracks the program's globals (the preload, which registers a
     * fault hook) the signal itself only virtually: the handler may write
     * tracked memory (its own globals, libsigsegv's state), and each such
     * write is a fault of ours that must be delivered.  A fault in the handler that is not ours gets the
     * default action, as the kernel gives a blocked fault (in_vblock). */
    sigset_t mask = ((ucontext_t *)uc)->uc_sigmask;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&prev.sa_mask, s) && s != sig)
            sigaddset(&mask, s);
    bool vblock = !(prev.sa_flags & SA_NODEFER) && !sigismember(&mask, sig);
    if (vblock && !atomic_load_explicit(&g_hook, memory_order_relaxed)) {
        /* Linked library: the mask exactly as asked (the program chose
         * what is tracked; its handler sees its signal blocked). */
        sigaddset(&mask, sig);
        vblock = false;
    }
    sf__os_sigmask(SIG_SETMASK, &mask, NULL);
    const siginfo_t *save_si = tls_fwd_si;
    const char *save_frame = tls_fwd_frame;
    int save_level = tls_fwd_level;
    int save_vb_sig = tls_vb_sig;
    const char *save_vb_frame = tls_vb_frame;
    volatile uint64_t *save_vb_cookie = tls_vb_cookie;
    uint64_t save_vb_val = tls_vb_val;
    volatile uint64_t cookie = ++tls_vb_gen * 0x9E3779B97F4A7C15ull ^ (uintptr_t)&cookie;
    tls_fwd_si = si;
    tls_fwd_frame = __builtin_frame_address(0);
    tls_fwd_level = level;
    if (vblock) {
        tls_vb_cookie = &cookie;
        tls_vb_val = cookie;
        tls_vb_frame = __builtin_frame_address(0);
        tls_vb_sig = sig;
    }
    if (prev.sa_flags & SA_SIGINFO)
        prev.sa_sigaction(sig, si, uc);
    else
        prev.sa_handler(sig);
    tls_vb_sig = save_vb_sig;
    tls_vb_frame = save_vb_frame;
    tls_vb_cookie = save_vb_cookie;
    tls_vb_val = save_vb_val;
    cookie = 0;
    tls_fwd_si = save_si;
    tls_fwd_frame = save_frame;
    tls_fwd_level = save_level;
}

/* Whether this fault (not ours) comes from inside a program handler that
 * has its signal virtually blocked (see forward): a signal frame deeper
 * than forward()'s, interrupting code deeper than it, and forward()'s frame
 * still live (its cookie intact: a handler that longjmps out leaves these
 * stale). */
static bool in_vblock(int sig, const siginfo_t *si, const void *uc, const char *frame)
{
    if (tls_vb_sig != sig || !tls_vb_frame || si->si_code <= 0 || frame >= tls_vb_frame)
        return false;
#ifdef REG_RSP
    if ((uintptr_t)((const ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP] >= (uintptr_t)tls_vb_frame)
        return false;
#else
    (void)uc;
#endif
    return *tls_vb_cookie == tls_vb_val;
}

/* Repeated spurious faults at one address from one thread mean the page is
 * protected by someone else (the program's own mprotect): not ours. */
static __thread uintptr_t tls_spurious_addr __attribute__((tls_model("initial-exec")));
static __thread unsigned tls_spurious_count __attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_spurious_seq __attribute__((tls_model("initial-exec")));
/* A fault that may have lost a race with an untrack runs again before it is
 * forwarded: again while regions keep being removed, at most NF_ROUNDS
 * times in a row at one address, so that a real crash still crashes. */
#define NF_ROUNDS 8
static __thread uintptr_t tls_nf_addr __attribute__((tls_model("initial-exec")));
static __thread unsigned long tls_nf_rm __attribute__((tls_model("initial-exec")));
static __thread unsigned tls_nf_rounds __attribute__((tls_model("initial-exec")));

static bool retry_first(uintptr_t addr)
{
    unsigned long rm = atomic_load(&g_rm_count);
    if (tls_nf_addr != addr) {
        tls_nf_addr = addr;
        tls_nf_rounds = 0;
    } else if (tls_nf_rm == rm || tls_nf_rounds >= NF_ROUNDS) {
        tls_nf_addr = 0; /* forwarded; the next fault here starts afresh */
        return false;
    }
    tls_nf_rm = rm;
    tls_nf_rounds++;
    return true;
}

static void sf_entry(int sig, siginfo_t *si, void *uc)
{
    int saved_errno = errno;
    const char *frame = __builtin_frame_address(0);
    sf_fault_hook hook = atomic_load_explicit(&g_hook, memory_order_relaxed);
    if (hook && hook(sig, si, uc)) {
        errno = saved_errno;
        return; /* the embedding dealt with it: the instruction runs again */
    }
    errno = saved_errno;
    if (SF_UNLIKELY(si == tls_fwd_si && frame < tls_fwd_frame)) {
        /* The handler we forwarded this fault to handed it back (it calls
         * the handler it replaced, ours): one level further down. */
        forward(sig, si, uc, tls_fwd_level + 1);
        errno = saved_errno;
        return;
    }
    int res = SF_NOT_OURS;
    bool suspect = false; /* not ours, but maybe only late */
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
                (sig == SIGBUS && m == SF_FAULTS_INTHREAD)) {
                res = sf__resolve(r, addr, NULL);
                /* e.g. the backend's unprotect failed on a range an
                 * untrack has just given back */
                suspect = res == SF_NOT_OURS;
            }
        } else {
            suspect = recently_removed(addr);
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
            tls_nf_addr = 0;
        }
        if (res == SF_NOT_OURS && suspect && retry_first(addr)) {
            errno = saved_errno;
            return;
        }
    }
    if (res == SF_NOT_OURS) {
        tls_spurious_addr = 0;
        if (SF_UNLIKELY(tls_vb_frame && in_vblock(sig, si, uc, frame)))
            default_action(sig, si, uc, false);
        else
            forward(sig, si, uc, 0);
    }
    errno = saved_errno;
}

/* ------------------------------------------------------------------------
 * Resolving a fault: the handler's path through the page-state machine
 * (the states and transitions are in pagestate.h).
 * ------------------------------------------------------------------------ */

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
        sf__os_pread(t->pagemap_fd, &ent, sizeof(ent), (off_t)((page_addr >> sf_page_shift) * sizeof(ent))) !=
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
            sf__os_mprotect((void *)page_addr, sf_page_size, PROT_READ | PROT_WRITE) == 0)
            return SF_RESOLVED;
        return SF_NOT_OURS;
    }

    uint64_t w;
    for (;;) {
        w = atomic_load(ps);
        unsigned st = PS_ST(w);
        if (SF_UNLIKELY(sf__ps_gone(w))) {
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
        if (since && sf__ps_opened_since(w, *since, atomic_load(&t->res_seq)))
            return SF_RETRY;
        if (st == PS_WRITABLE) {
            /* Protected although WRITABLE: a collector's protect landed
             * after a handler's unprotect (see DESIGN.md, "heal").  Own the
             * page so no collector moves it meanwhile, unprotect again. */
            if (!sf__ps_heal_claim(ps, &w))
                continue;
            /* Read after owning it: a take that marks the chunk after this
             * finds the page BUSY (sf__ps_take_chunk).  Marked: the take is
             * arming the page with its chunk; give the page back as it was
             * (unless the take's store replaced it already) and let the
             * write retry, to fault on an armed page. */
            if (SF_UNLIKELY(sf__chunk_taking(r, p))) {
                sf__ps_heal_yield(ps, w);
                return SF_RETRY;
            }
            unsigned slot = 0;
            uint64_t rs = threads ? sf__rseq_next(t, &slot) : sf__ps_rseq(w);
            t->ops->unprotect(t, r, page_addr, sf_page_size);
            sf__ps_heal_open(ps, w, rs);
            if (threads)
                sf__rseq_woken(t, slot);
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
        if (sf__ps_fault_claim(ps, &w))
            break;
    }

    /* Own a cluster of following ARMED pages (never COLLECTING ones: their
     * collector has not protected them yet and would protect them after our
     * unprotect). */
    size_t n = 1;
    if (!t->exact) {
        size_t want = cluster_pages(r, p);
        while (n < want && p + n < r->npages && sf__ps_cluster_claim(&r->ps[p + n]))
            n++;
    }

    uint32_t C = atomic_load(&t->gen);
    if (r->vhead) {
        for (size_t i = 0; i < n; i++) {
            uint64_t wi = atomic_load(&r->ps[p + i]);
            uint32_t cg = sf__eff_cgen(r, wi);
            if (cg < C && sf__snapshot_needs_save(t, cg))
                sf__snapshot_save(r, p + i, wi, C);
        }
    }

    /* Publish the write before the page opens: with handler threads the
     * unprotect wakes the faulting thread, whose next sf_collect, restore or
     * take must see this page written (DIRTY, content generation C).  It is
     * still BUSY, so collectors and readers wait for it to finish. */
    uint64_t orig[64];
    unsigned slot = 0;
    uint64_t rs = threads ? sf__rseq_next(t, &slot) : 0;
    for (size_t i = 0; i < n; i++)
        orig[i] = sf__ps_fault_publish(&r->ps[p + i], C, rs);
    for (size_t i = 0; i < n; i += SF_CHUNK_PAGES - ((p + i) & (SF_CHUNK_PAGES - 1)))
        sf__chunk_written(r, p + i, C);
    if (n > 1)
        sf__chunk_written(r, p + n - 1, C);

    int rc = t->ops->unprotect(t, r, page_addr, n << sf_page_shift);
    if (SF_UNLIKELY(rc < 0) && n > 1) {
        /* Part of the cluster may have been unregistered meanwhile (a
         * partial sf_untrack: ENOENT), after the kernel opened the pages
         * before it.  Page by page: what opens is written, what cannot is
         * given back armed as it was (its untrack marks it GONE). */
        for (size_t i = 1; i < n; i++) {
            if (t->ops->unprotect(t, r, page_addr + (i << sf_page_shift), sf_page_size) < 0)
                sf__ps_fault_abort(&r->ps[p + i], orig[i]);
            else
                sf__ps_fault_open(&r->ps[p + i], C, rs);
        }
        n = 1;
        rc = t->ops->unprotect(t, r, page_addr, sf_page_size);
    }
    if (threads)
        sf__rseq_woken(t, slot); /* whether or not the pages opened */
    if (SF_UNLIKELY(rc < 0)) {
        sf__ps_fault_abort(ps, orig[0]);
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
        sf__ps_fault_open(&r->ps[p + i], C, rs);
    SF_STAT_INC(t, st_faults, 1);
    SF_STAT_INC(t, st_unprot, n);
    return SF_RESOLVED;
}
