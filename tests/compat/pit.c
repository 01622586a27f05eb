/* pit.c - a multi-threaded program for point-in-time images, driven by
 * events only.
 *
 *   pit DIR TAKES
 *
 * Three writer threads each increment a counter and store it into page A
 * and then page B of two separate mappings; a fourth thread sleeps in
 * epoll_wait on an eventfd.  The main thread raises SIGUSR2 TAKES times,
 * each time waiting until DIR/snap-PID.index has answered (an S or F
 * line), then stops the writers, wakes the sleeper and prints
 *   A ADDR
 *   B ADDR
 * In an image that is one instant, for each writer i, B[i] == A[i] or
 * B[i] == A[i] - 1.  Exit 3 if epoll_wait failed (EINTR). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WRITERS 3
static volatile uint64_t *A, *B;
static atomic_int stop;
static int efd, ep, sleep_rc, sleep_errno;
static atomic_int sleeper_tid;

static void *writer(void *p)
{
    int i = (int)(intptr_t)p;
    uint64_t v = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        v++;
        A[i] = v;
        B[i] = v;
    }
    return NULL;
}

static void *sleeper(void *p)
{
    (void)p;
    struct epoll_event ev;
    atomic_store(&sleeper_tid, (int)syscall(SYS_gettid));
    sleep_rc = epoll_wait(ep, &ev, 1, -1);
    sleep_errno = sleep_rc < 0 ? errno : 0;
    return NULL;
}

/* Whether the sleeper is inside epoll_wait: only a thread asleep in the
 * kernel is promised no EINTR.  A thread still running towards the call
 * can be signalled by a stop, and a signal pending as it enters
 * epoll_wait ends it with EINTR (SA_RESTART does not restart it). */
static int sleeper_asleep(void)
{
    char path[64], line[256];
    int tid = atomic_load(&sleeper_tid);
    if (!tid)
        return 0;
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long nr = -1;
    if (!fgets(line, sizeof(line), f) || sscanf(line, "%ld", &nr) != 1)
        nr = -1;
    fclose(f);
#ifdef SYS_epoll_wait
    if (nr == SYS_epoll_wait)
        return 1;
#endif
    return nr == SYS_epoll_pwait;
}

static int answered(const char *dir)
{
    char path[4096], line[1024];
    snprintf(path, sizeof(path), "%s/snap-%d.index", dir, (int)getpid());
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += (line[0] == 'S' || line[0] == 'F') && line[1] == '\t';
    fclose(f);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pit DIR TAKES\n");
        return 2;
    }
    const char *dir = argv[1];
    int takes = atoi(argv[2]);
    size_t len = (size_t)1 << 20;
    void *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *gap = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* apart */
    void *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED || gap == MAP_FAILED)
        return 1;
    memset(a, 0, len);
    memset(b, 0, len);
    A = a;
    B = b;
    efd = eventfd(0, 0);
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    if (efd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev))
        return 1;
    pthread_t th[WRITERS], sl;
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer, (void *)(intptr_t)i);
    pthread_create(&sl, NULL, sleeper, NULL);
    while (!sleeper_asleep())
        usleep(1000); /* a poll for an event: never a verdict */
    for (int k = 1; k <= takes; k++) {
        uint64_t seen = A[k % WRITERS];
        while (A[k % WRITERS] == seen) /* the writers run between takes */
            ;
        raise(SIGUSR2);
        while (answered(dir) < k)
            usleep(1000); /* a poll for an event: never a verdict */
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    uint64_t one = 1;
    if (write(efd, &one, sizeof(one)) != sizeof(one))
        return 1;
    pthread_join(sl, NULL);
    printf("A %p\nB %p\n", a, b);
    if (sleep_rc != 1) {
        fprintf(stderr, "pit: epoll_wait returned %d (%s)\n", sleep_rc, strerror(sleep_errno));
        return 3;
    }
    return 0;
}
