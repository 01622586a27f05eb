/* segv_handler.c - a program with its own SA_SIGINFO SIGSEGV handler: it must
 * see its handler as installed and receive exactly its own faults, with the
 * right siginfo, while snapfault tracks (and faults on) its other memory. */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t hits;
static void *volatile expect_addr;
static volatile int expect_code;
static sigjmp_buf jb;
static volatile int use_jump;
static char *guard;
static size_t page;

static void handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (sig != SIGSEGV || si->si_addr != expect_addr || si->si_code != expect_code) {
        static const char msg[] = "handler: unexpected fault\n";
        write(2, msg, sizeof(msg) - 1);
        _exit(3);
    }
    hits++;
    if (use_jump)
        siglongjmp(jb, 1);
    mprotect(guard, page, PROT_READ | PROT_WRITE); /* let the write go through */
}

static void churn(unsigned seed)
{
    /* heap and anonymous memory snapfault tracks, written between faults */
    size_t n = 4u << 20;
    unsigned char *a = malloc(n), *b = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (size_t i = 0; i < n; i += 512) {
        a[i] = (unsigned char)(i * seed);
        b[i] = a[i] ^ 0x5a;
    }
    unsigned long sum = 0;
    for (size_t i = 0; i < n; i += 512)
        sum += a[i] + b[i];
    printf("churn %u: %lu\n", seed, sum);
    free(a);
    munmap(b, n);
    usleep(120000); /* let a collect interval pass */
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old) != 0)
        return 10;
    printf("previous handler was default: %s\n", old.sa_handler == SIG_DFL ? "yes" : "no");
    struct sigaction now;
    sigaction(SIGSEGV, NULL, &now);
    printf("installed handler reported back: %s\n",
           (now.sa_flags & SA_SIGINFO) && now.sa_sigaction == handler ? "yes" : "no");

    guard = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (unsigned round = 1; round <= 3; round++) {
        churn(round);
        mprotect(guard, page, PROT_READ);
        expect_addr = guard + 8;
        expect_code = SEGV_ACCERR;
        guard[8] = (char)round; /* faults once, the handler opens the page */
        printf("write to a read-only page %u: handled %d, value %d\n", round, (int)hits, guard[8]);
    }
    /* a NULL dereference, recovered with siglongjmp */
    use_jump = 1;
    expect_addr = NULL;
    expect_code = SEGV_MAPERR;
    if (sigsetjmp(jb, 1) == 0) {
        *(volatile int *)expect_addr = 1;
        printf("not reached\n");
    }
    printf("NULL write recovered by siglongjmp: handled %d\n", (int)hits);
    /* signal() on SIGBUS reports the previous disposition */
    void (*prev)(int) = signal(SIGBUS, SIG_IGN);
    printf("SIGBUS was default: %s\n", prev == SIG_DFL ? "yes" : "no");
    prev = signal(SIGBUS, SIG_DFL);
    printf("SIGBUS then ignored: %s\n", prev == SIG_IGN ? "yes" : "no");
    churn(7);
    return hits == 4 ? 0 : 1;
}
