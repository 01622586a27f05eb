/* sigsegv.c - a libsigsegv program (guard pages, stack overflow recovery)
 * that writes plenty of heap and anonymous memory in between: under the
 * preload (compat case 'libsigsegv') its output must be the plain run's. */
#include "../sigsegv_work.h"

static unsigned long churn(unsigned seed)
{
    size_t n = 8u << 20;
    unsigned char *a = malloc(n);
    unsigned char *b = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!a || b == MAP_FAILED)
        return 0;
    for (size_t i = 0; i < n; i += 256) {
        a[i] = (unsigned char)(i * seed);
        b[i] = a[i] ^ 0x5a;
    }
    unsigned long sum = 0;
    for (size_t i = 0; i < n; i += 256)
        sum += a[i] + b[i];
    free(a);
    munmap(b, n);
    return sum;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    /* "snap": ask the preload (snapshot mode) for a snapshot each round */
    int snap = argc > 2 && !strcmp(argv[2], "snap");
    if (sw_install())
        return 1;
    for (int r = 0; r < rounds; r++) {
        if (sw_guards() || sw_overflows())
            return 1;
        printf("round %d: churn %lu\n", r, churn((unsigned)r + 1));
        if (sw_guards())
            return 1;
        /* give the runtime's collect a chance between rounds: the output
         * does not depend on whether one happened */
        usleep(50000);
        if (snap)
            raise(SIGUSR2);
    }
    printf("guard faults %d, overflows caught %d\n", sw_guard_hits, 2 * rounds);
    return 0;
}
