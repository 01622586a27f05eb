/* backend_uffd_sync.c - userfaultfd write-protect faults resolved by
 * snapfault: in the faulting thread (SIGBUS) or by handler threads. */
#include "internal.h"
#include "uffd.h"

#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Handler threads read messages in batches, resolve each with the shared
 * state machine, and spin briefly on an empty queue before sleeping in
 * poll: on a 2-core machine a sleeping handler costs a wake-up (~30 us) per
 * fault, a spinning one only the queue round trip. */
#define MSG_BATCH 64
#define SPIN_NS 50000

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* since: t->res_seq before the read that returned the message. */
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
        else {
            struct uffdio_range rg = {.start = page, .len = sf_page_size};
            ioctl(t->uffd, UFFDIO_WAKE, &rg);
        }
    }
}

static void *handler_main(void *arg)
{
    sf_tracker *t = arg;
    struct uffd_msg msg[MSG_BATCH];
    struct pollfd pfd[2] = {{.fd = t->uffd, .events = POLLIN}, {.fd = t->wake_pipe[0], .events = POLLIN}};
    uint64_t idle_since = 0;
    bool spinning = false; /* holds t->spinner */
    while (!atomic_load(&t->stopping)) {
        /* Before the read: a page opened after this (by any thread) has
         * woken the threads whose messages this read returns. */
        uint32_t since = atomic_load(&t->res_seq);
        ssize_t n = read(t->uffd, msg, sizeof(msg));
        if (n > 0) {
            for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++)
                if (msg[i].event == UFFD_EVENT_PAGEFAULT)
                    handle_fault(t, (uintptr_t)msg[i].arg.pagefault.address, since);
            idle_since = 0;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            break;
        /* One spinner at a time: on a small machine a second spinning
         * handler takes the CPU the woken program thread needs. */
        uint64_t now = now_ns();
        if (!idle_since) {
            idle_since = now;
            int expect = 0;
            if (!spinning)
                spinning = atomic_compare_exchange_strong(&t->spinner, &expect, 1);
        }
        if (spinning && now - idle_since < SPIN_NS) {
            sf__cpu_relax();
            continue;
        }
        if (spinning) {
            atomic_store(&t->spinner, 0);
            spinning = false;
        }
        poll(pfd, 2, -1);
        idle_since = 0;
    }
    if (spinning)
        atomic_store(&t->spinner, 0);
    return NULL;
}

static int start_threads(sf_tracker *t, unsigned n)
{
    if (pipe2(t->wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* threads inherit: no signals */
    int err = 0;
    for (t->nthreads = 0; t->nthreads < n; t->nthreads++) {
        err = -pthread_create(&t->threads[t->nthreads], NULL, handler_main, t);
        if (err)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
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
    t->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
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
        char c = 1;
        for (unsigned i = 0; i < t->nthreads; i++)
            if (write(t->wake_pipe[1], &c, 1) < 0)
                break;
        for (unsigned i = 0; i < t->nthreads; i++)
            pthread_join(t->threads[i], NULL);
        t->nthreads = 0;
    }
    if (t->wake_pipe[0] >= 0) {
        close(t->wake_pipe[0]);
        close(t->wake_pipe[1]);
        t->wake_pipe[0] = t->wake_pipe[1] = -1;
    }
    if (t->uffd >= 0)
        close(t->uffd);
    t->uffd = -1;
    if (t->pagemap_fd >= 0)
        close(t->pagemap_fd);
    t->pagemap_fd = -1;
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
