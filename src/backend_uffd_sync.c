/* backend_uffd_sync.c - userfaultfd write-protect faults resolved by
 * snapfault: in the faulting thread (SIGBUS) or by handler threads. */
#include "internal.h"
#include "uffd.h"
#include "embed/sf_embed.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Handler threads.  One of them at a time, the watcher, waits on the uffd
 * and reads its messages in batches of up to MSG_BATCH; the others sleep on
 * a futex and are only woken to take over when a read returned several
 * messages (several threads faulted at once): then the watcher hands the
 * uffd over before resolving its batch.  A single waiter means a message
 * wakes one thread, not every thread blocked in poll.
 *
 * Waiting for the next message: sleeping in poll costs a wake-up per fault;
 * spinning on read(2) costs a CPU, and where an idle vCPU halts (a VM) it
 * makes the faulting thread's wake-up cross CPUs to a halted one, which can
 * cost more than the sleep it saves.  Which one wins depends on the machine
 * and its load, so the watcher measures: the interval between consecutive
 * messages (the whole round trip of a thread that faults in a loop), its
 * median over WP_SAMPLES reads sleeping, then over WP_SAMPLES spinning;
 * it spins only when that is at least a fifth shorter, and measures again
 * after WP_EXPLOIT messages.  A spin lasts at most twice the sleeping round
 * trip (it could not win past that), and never more than SPIN_MAX_NS of CPU
 * per idle spell. */
#define MSG_BATCH 64
#define WP_SAMPLES 16
#define WP_EXPLOIT 4096
#define SPIN_MAX_NS 250000

static uint64_t median(const uint64_t *v, unsigned n)
{
    uint64_t s[WP_SAMPLES];
    for (unsigned i = 0; i < n; i++) {
        unsigned j = i;
        for (; j > 0 && s[j - 1] > v[i]; j--)
            s[j] = s[j - 1];
        s[j] = v[i];
    }
    return s[n / 2];
}

/* The watcher read k messages at time now (see above). */
static void policy_note(struct sf_wait_policy *p, uint64_t now, size_t k)
{
    if (p->phase == 2) {
        if (p->left > k) {
            p->left -= (unsigned)k;
            return;
        }
        p->phase = p->n = 0;
        p->last = 0;
        p->spin = false;
        return;
    }
    if (p->last)
        p->sample[p->phase][p->n++] = (now - p->last) / k;
    p->last = now;
    if (p->n < WP_SAMPLES)
        return;
    uint64_t sleep = median(p->sample[0], WP_SAMPLES);
    p->spin_ns = 2 * sleep < SPIN_MAX_NS ? 2 * sleep : SPIN_MAX_NS;
    p->n = 0;
    p->last = 0;
    if (p->phase == 0) {
        p->phase = 1;
        p->spin = true;
        return;
    }
    uint64_t spin = median(p->sample[1], WP_SAMPLES);
    p->spin = spin * 5 < sleep * 4;
    sf__debug("handler threads: a fault round trip takes %llu ns sleeping, %llu ns spinning: %s",
              (unsigned long long)sleep, (unsigned long long)spin, p->spin ? "spinning" : "sleeping");
    p->phase = 2;
    p->left = WP_EXPLOIT;
}

/* since: sf__rseq_mark(t) before the read that returned the message. */
static void handle_fault(sf_tracker *t, uintptr_t addr, uint32_t since)
{
    unsigned g = sf__grace_enter();
    struct sf_region *r = sf__region_find(addr);
    int res = SF_NOT_OURS;
    if (r && r->t == t)
        res = sf__resolve(r, addr, &since);
    sf__grace_exit(g);
    if (res != SF_RESOLVED) { /* RETRY, HEALED or NOT_OURS */
        /* Wake the faulting thread whatever happened: after RETRY its page
         * is writable or will fault again; a page no longer tracked must
         * not stay protected. */
        uintptr_t page = addr & ~(uintptr_t)(sf_page_size - 1);
        /* Only an untracked page may be opened here: a heal already opened
         * (and woke) its page while owning it, and opening it again now,
         * unowned, could undo a collector's re-arm and lose writes. */
        if (res == SF_NOT_OURS)
            sf__uffd_wp(t->uffd, page, sf_page_size, false, true);
        else
            sf__uffd_wake(t->uffd, page, sf_page_size);
    }
}

/* Gives the watcher role up and wakes a sleeping handler to take it. */
static void hand_over(sf_tracker *t)
{
    int one = 1;
    atomic_compare_exchange_strong(&t->watcher, &one, 0); /* 2 (stopping) stays */
    if (atomic_load(&t->waiters))
        sf__os_futex_wake(&t->watcher, 1);
}

/* The watcher's loop.  Returns 0 once it handed the uffd over, -1 when the
 * thread is to stop. */
static int watch(sf_tracker *t, struct uffd_msg *msg, struct pollfd *pfd)
{
    struct sf_wait_policy *p = &t->wp;
    bool wait_first = false; /* poll before reading */
    uint64_t idle_since = 0;
    for (;;) {
        if (atomic_load(&t->stopping))
            return -1;
        if (wait_first) {
            sf__os_poll(pfd, 2, -1);
            wait_first = false;
            if (pfd[1].revents)
                continue; /* woken to stop */
        }
        /* Before the read: a page opened after this (by any thread) has
         * woken the threads whose messages this read returns. */
        uint32_t since = sf__rseq_mark(t);
        ssize_t n = sf__os_read(t->uffd, msg, MSG_BATCH * sizeof(msg[0]));
        if (n > 0) {
            size_t k = (size_t)n / sizeof(msg[0]);
            policy_note(p, sf__now_ns(), k);
            bool handed = k > 1 && atomic_load(&t->waiters);
            if (handed)
                hand_over(t);
            for (size_t i = 0; i < k; i++)
                if (msg[i].event == UFFD_EVENT_PAGEFAULT)
                    handle_fault(t, (uintptr_t)msg[i].arg.pagefault.address, since);
            if (handed)
                return 0;
            idle_since = 0;
            /* Sleeping: poll (it returns at once if more is queued) rather
             * than a read that finds the queue empty. */
            wait_first = !p->spin;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            hand_over(t);
            return -1;
        }
        if (p->spin) {
            uint64_t now = sf__now_ns();
            if (!idle_since)
                idle_since = now;
            if (now - idle_since < p->spin_ns) {
                sf__cpu_relax();
                continue;
            }
        }
        idle_since = 0;
        wait_first = true;
    }
}

static void *handler_main(void *arg)
{
    sf_tracker *t = arg;
    struct uffd_msg msg[MSG_BATCH];
    struct pollfd pfd[2] = {{.fd = t->uffd, .events = POLLIN}, {.fd = t->wake_pipe[0], .events = POLLIN}};
    while (!atomic_load(&t->stopping)) {
        int w = 0;
        if (!atomic_compare_exchange_strong(&t->watcher, &w, 1)) {
            if (w == 1) {
                atomic_fetch_add(&t->waiters, 1);
                sf__os_futex_wait(&t->watcher, 1, NULL); /* returns at once unless still 1 */
                atomic_fetch_sub(&t->waiters, 1);
            }
            continue;
        }
        if (watch(t, msg, pfd) < 0)
            break;
    }
    return NULL;
}

static int start_threads(sf_tracker *t, unsigned n)
{
    if (sf__os_pipe2(t->wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    sigset_t all, old;
    sigfillset(&all);
    sf__os_sigmask(SIG_SETMASK, &all, &old); /* threads inherit: no signals */
    int err = 0;
    for (t->nthreads = 0; t->nthreads < n; t->nthreads++) {
        err = -sf__exempt_thread_create(&t->threads[t->nthreads], NULL, handler_main, t); /* never stopped */
        if (err)
            break;
    }
    sf__os_sigmask(SIG_SETMASK, &old, NULL);
    return t->nthreads ? 0 : err;
}

static int us_open(sf_tracker *t)
{
    const sf_caps *caps;
    sf__probe_cached(&caps);
    if (caps->backend_ok[SF_BACKEND_UFFD_SYNC])
        return caps->backend_ok[SF_BACKEND_UFFD_SYNC];
    bool inthread;
    if (t->flags & SF_OPT_INTHREAD_FAULTS)
        inthread = true;
    else if (t->flags & SF_OPT_HANDLER_THREADS)
        inthread = false;
    else
        inthread = !caps->uffd_kernel_faults;
    if (inthread && !caps->uffd_sigbus)
        return -ENOTSUP;
    if (!inthread && !caps->uffd_kernel_faults)
        return -ENOTSUP;
    uint64_t features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED |
                        (inthread ? UFFD_FEATURE_SIGBUS : 0);
    int fd = sf__uffd_open(!inthread, features, NULL);
    if (fd < 0)
        return fd;
    t->uffd = fd;
    t->fault_mode = inthread ? SF_FAULTS_INTHREAD : SF_FAULTS_HANDLER_THREAD;
    if (inthread)
        return sf__signals_install();
    /* Tells a stale message on a page a collector picked (sf__resolve). */
    t->pagemap_fd = sf__os_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    unsigned n = t->nthreads ? t->nthreads : 2;
    if (n > sizeof(t->threads) / sizeof(t->threads[0]))
        n = sizeof(t->threads) / sizeof(t->threads[0]);
    t->nthreads = 0;
    return start_threads(t, n);
}

static void us_close(sf_tracker *t)
{
    if (t->nthreads) {
        atomic_store(&t->stopping, 1);
        /* Sleepers on the futex see 2 (never 1 again) and stop; the
         * watcher is woken from poll by the pipe. */
        atomic_store(&t->watcher, 2);
        sf__os_futex_wake(&t->watcher, INT32_MAX);
        char c = 1;
        for (unsigned i = 0; i < t->nthreads; i++)
            if (sf__os_write(t->wake_pipe[1], &c, 1) < 0)
                break;
        for (unsigned i = 0; i < t->nthreads; i++)
            sf__os_thread_join(t->threads[i], NULL);
        t->nthreads = 0;
    }
    if (t->wake_pipe[0] >= 0) {
        sf__os_close(t->wake_pipe[0]);
        sf__os_close(t->wake_pipe[1]);
        t->wake_pipe[0] = t->wake_pipe[1] = -1;
    }
    if (t->uffd >= 0)
        sf__os_close(t->uffd);
    t->uffd = -1;
    if (t->pagemap_fd >= 0)
        sf__os_close(t->pagemap_fd);
    t->pagemap_fd = -1;
}

/* sf__embed_unseen_writes (sf_embed.h) on this backend: a read-only
 * PAGEMAP_SCAN per region for written pages (no uffd-wp bit), kept where
 * the page is ARMED here. */

/* Appends to out the runs of [a, b) (pages of r) whose pages are ARMED
 * here, merging with the last run when adjacent. */
static void unseen_add(struct sf_region *r, uintptr_t a, uintptr_t b, struct sf_embed_span *out, size_t max,
                       size_t *n)
{
    for (uintptr_t x = a; x < b; x += sf_page_size) {
        enum sf_page_class c = sf__ps_class(atomic_load(&r->ps[(x - r->start) >> sf_page_shift]));
        if (c != SF_PAGE_ARMED_CLEAN && c != SF_PAGE_ARMED_DIRTY)
            continue;
        if (*n && out[*n - 1].end == x)
            out[*n - 1].end = x + sf_page_size;
        else if (*n < max)
            out[(*n)++] = (struct sf_embed_span){x, x + sf_page_size};
        else
            return;
    }
}

struct unseen_ctx {
    struct sf_region *r;
    struct sf_embed_span *out;
    size_t max, *n;
};

static int unseen_run(void *ctx, uintptr_t a, uintptr_t b)
{
    struct unseen_ctx *c = ctx;
    unseen_add(c->r, a, b, c->out, c->max, c->n);
    return *c->n >= c->max;
}

long sf__sync_unseen_writes(sf_tracker *t, struct sf_embed_span *out, size_t max)
{
    pthread_mutex_lock(&t->lock);
    if (t->pagemap_fd < 0) /* in-thread mode opens none: kept until close */
        t->pagemap_fd = sf__os_open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (t->pagemap_fd < 0) {
        int err = -errno;
        pthread_mutex_unlock(&t->lock);
        return err;
    }
    size_t nr, n = 0;
    struct sf_region **rs = sf__regions_list(t, &nr);
    long err = rs ? 0 : -ENOMEM;
    for (size_t i = 0; rs && i < nr && !err && n < max; i++) {
        struct unseen_ctx c = {rs[i], out, max, &n};
        /* A query only: nothing is re-armed.  The page states are read
         * after the kernel's answer, so a page a fault opened in between
         * reads OPEN, not ARMED. */
        int rc = sf__pagemap_runs(t->pagemap_fd, rs[i]->start, rs[i]->end, PAGE_IS_WRITTEN, 0, unseen_run, &c);
        if (rc < 0)
            err = rc == -ENOTTY || rc == -EINVAL ? -EOPNOTSUPP : rc;
    }
    sf__os_free(rs);
    pthread_mutex_unlock(&t->lock);
    return err ? err : (long)n;
}

static int us_attach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    int err = sf__uffd_register_wp(t->uffd, a, e - a);
    if (err)
        return err;
    err = sf__uffd_wp(t->uffd, a, e - a, true, false);
    if (err)
        sf__uffd_unregister(t->uffd, a, e - a);
    return err;
}

/* Unregistering drops the WP bits and wakes any thread still waiting. */
static void us_detach(sf_tracker *t, struct sf_region *r, uintptr_t a, uintptr_t e)
{
    sf__uffd_wp(t->uffd, a, e - a, false, true);
    sf__uffd_unregister(t->uffd, a, e - a);
}

static int us_protect(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len)
{
    SF_STAT_INC(t, st_protects, 1);
    return sf__uffd_wp(t->uffd, addr, len, true, false);
}

static int us_unprotect(sf_tracker *t, struct sf_region *r, uintptr_t addr, size_t len)
{
    return sf__uffd_wp(t->uffd, addr, len, false, t->fault_mode == SF_FAULTS_HANDLER_THREAD);
}

const struct sf_backend_ops sf__backend_uffd_sync = {
    .id = SF_BACKEND_UFFD_SYNC,
    .open = us_open,
    .close = us_close,
    .attach = us_attach,
    .detach = us_detach,
    .protect = us_protect,
    .unprotect = us_unprotect,
};
