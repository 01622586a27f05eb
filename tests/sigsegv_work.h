/* sigsegv_work.h - a libsigsegv host: guard pages repaired by a
 * sigsegv_install_handler handler, and deep recursion caught by a
 * stackoverflow_install_handler handler and recovered from (twice), as in
 * libsigsegv's own tests.  Included by tests/test_libsigsegv.c (linked with
 * libsnapfault) and tests/compat/sigsegv.c (run under the preload).
 * Every function returns 0 or prints what went wrong and returns 1. */
#ifndef SF_SIGSEGV_WORK_H
#define SF_SIGSEGV_WORK_H
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <sigsegv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define SW_GUARDS 4
static char *sw_guard;
static size_t sw_ps;
static volatile int sw_guard_hits, sw_other;

static int sw_segv_handler(void *fault_address, int serious)
{
    (void)serious;
    char *a = fault_address;
    if (sw_guard && a >= sw_guard && a < sw_guard + SW_GUARDS * sw_ps) {
        sw_guard_hits++;
        char *page = sw_guard + (size_t)(a - sw_guard) / sw_ps * sw_ps;
        return mprotect(page, sw_ps, PROT_READ | PROT_WRITE) == 0;
    }
    sw_other++;
    return 0; /* not ours: a stack overflow, or libsigsegv lets the default action run */
}

static sigjmp_buf sw_mainloop;
static sigset_t sw_mainmask;
static volatile int sw_pass;
static char sw_extra_stack[64 * 1024] __attribute__((aligned(16)));

static void sw_continuation(void *arg1, void *arg2, void *arg3)
{
    (void)arg2;
    (void)arg3;
    siglongjmp(sw_mainloop, (int)(long)arg1);
}

static void sw_overflow_handler(int emergency, stackoverflow_context_t scp)
{
    (void)scp;
    sw_pass++;
    sigprocmask(SIG_SETMASK, &sw_mainmask, NULL);
    sigsegv_leave_handler(sw_continuation, (void *)(long)(emergency ? -1 : sw_pass), NULL, NULL);
}

static volatile int *sw_recurse_1(int n, volatile int *p)
{
    if (n < INT_MAX)
        *sw_recurse_1(n + 1, p) += n;
    return p;
}
static __attribute__((noinline)) int sw_recurse(volatile int n) { return *sw_recurse_1(n, &n); }

/* Installs both handlers (sigaction() inside libsigsegv). */
static int sw_install(void)
{
    sw_ps = (size_t)sysconf(_SC_PAGESIZE);
    /* a small stack: the overflow comes quickly */
    struct rlimit rl = {1 << 20, 1 << 20};
    setrlimit(RLIMIT_STACK, &rl);
    if (!sw_guard) {
        sw_guard = mmap(NULL, SW_GUARDS * sw_ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (sw_guard == MAP_FAILED) {
            printf("mmap failed\n");
            return 1;
        }
    }
    if (sigsegv_install_handler(sw_segv_handler) < 0) {
        printf("sigsegv_install_handler failed\n");
        return 1;
    }
    if (stackoverflow_install_handler(sw_overflow_handler, sw_extra_stack, sizeof(sw_extra_stack)) < 0) {
        printf("stackoverflow_install_handler failed\n");
        return 1;
    }
    return 0;
}

/* Writes every guard page (each repaired by the handler), then protects
 * them again. */
static int sw_guards(void)
{
    int before = sw_guard_hits, other = sw_other;
    for (int i = 0; i < SW_GUARDS; i++)
        ((volatile char *)sw_guard)[(size_t)i * sw_ps + 8] = (char)(i + 1);
    for (int i = 0; i < SW_GUARDS; i++)
        if (sw_guard[(size_t)i * sw_ps + 8] != (char)(i + 1)) {
            printf("guard page %d lost its write\n", i);
            return 1;
        }
    if (sw_guard_hits - before != SW_GUARDS || sw_other != other) {
        printf("guard faults %d (want %d), other faults %d\n", sw_guard_hits - before, SW_GUARDS, sw_other - other);
        return 1;
    }
    mprotect(sw_guard, SW_GUARDS * sw_ps, PROT_NONE);
    return 0;
}

/* Two stack overflows in a row, each caught and left by siglongjmp. */
static int sw_overflows(void)
{
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &empty, &sw_mainmask);
    sw_pass = 0;
    switch (sigsetjmp(sw_mainloop, 0)) {
    case -1:
        printf("stack overflow: emergency exit\n");
        return 1;
    case 0:
    case 1:
        sw_recurse(0);
        printf("no endless recursion?!\n");
        return 1;
    case 2:
        break;
    default:
        printf("stack overflow: bad pass\n");
        return 1;
    }
    return 0;
}
#endif
