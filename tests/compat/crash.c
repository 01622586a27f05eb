/* crash.c - a program that writes tracked memory and then crashes: under
 * snapfault it must die of the same signal (segv, bus, abort). */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *how = argc > 1 ? argv[1] : "segv";
    size_t n = 8u << 20;
    char *buf = malloc(n);
    memset(buf, 1, n);
    usleep(260000); /* two scans adopt the buffer, a collect re-arms it */
    memset(buf, 2, n);
    printf("about to crash (%s)\n", how);
    fflush(stdout);
    if (strcmp(how, "segv") == 0) {
        *(volatile int *)(uintptr_t)16 = 1;
    } else if (strcmp(how, "readonly") == 0) {
        static const char ro[4096] __attribute__((aligned(4096))) = "x";
        *(volatile char *)ro = 1; /* write to .rodata: SEGV_ACCERR, not ours */
    } else if (strcmp(how, "bus") == 0) {
        char path[] = "/tmp/sf-crash-XXXXXX";
        int fd = mkstemp(path);
        unlink(path);
        char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0); /* file is empty */
        m[0] = 1;
    } else if (strcmp(how, "abort") == 0) {
        abort();
    }
    return 0;
}
