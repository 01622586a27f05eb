/* heaptrim.c - libc trims its heap and grows it again over the same pages
 * (its internal brk, which no interposer sees) between two images.
 *
 *   heaptrim DIR
 *
 * Fills an 8 MiB block of the brk heap with 'A', raises the snapshot
 * trigger (SIGUSR2) and waits until the index in DIR lists the image; frees
 * the block (the heap shrinks below it), allocates it again (the heap grows
 * back over the same addresses) and fills it with 'B', raises the trigger
 * again and waits for the second image; then prints "buf ADDR LEN".  The
 * second image must hold 'B' there: with the mprotect backend the grown
 * heap is writable without a fault, with the uffd backends it is no longer
 * registered.  Exit 3 when libc did not trim and grow the heap as planned
 * (the case would prove nothing), 4 when the index lists a failed image. */
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Images listed in DIR/snap-PID.index so far.  Read without stdio, whose
 * buffers (kept in malloc's per-thread cache when freed) would sit above
 * the block and keep the heap from being trimmed. */
static int listed(const char *dir)
{
    char path[4096];
    static char buf[1 << 16];
    snprintf(path, sizeof(path), "%s/snap-%d.index", dir, (int)getpid());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t len = 0, r;
    while (len < (ssize_t)sizeof(buf) - 1 && (r = read(fd, buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
        len += r;
    close(fd);
    int n = 0;
    for (ssize_t i = 0; i + 1 < len; i++) {
        if ((i && buf[i - 1] != '\n') || buf[i + 1] != '\t')
            continue;
        n += buf[i] == 'S';
        if (buf[i] == 'F') { /* a failed image: waiting would never end */
            fprintf(stderr, "heaptrim: an image failed: %.*s\n", (int)strcspn(buf + i, "\n"), buf + i);
            exit(4);
        }
    }
    return n;
}

static void image(const char *dir, int i)
{
    raise(SIGUSR2);
    while (listed(dir) < i) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* The program break, asked of the kernel (sbrk is interposed). */
static uintptr_t cur_brk(void) { return (uintptr_t)syscall(SYS_brk, 0); }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: heaptrim DIR\n");
        return 2;
    }
    /* from the brk heap, and given back to the kernel when freed */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 10);
    mallopt(M_TOP_PAD, 0);
    /* no filling of freed blocks (meson sets MALLOC_PERTURB_): a fill
     * would write, and so open, every page of the block before the trim */
    mallopt(M_PERTURB, 0);
    size_t n = 8u << 20;
    char *p = malloc(n);
    if (!p)
        return 3;
    memset(p, 'A', n);
    image(argv[1], 1);
    uintptr_t pa = (uintptr_t)p;
    free(p);
    uintptr_t trimmed = cur_brk();
    char *q = malloc(n);
    if (!q)
        return 3;
    if (trimmed >= pa + n || (uintptr_t)q >= pa + n || (uintptr_t)q + n <= pa) {
        fprintf(stderr, "heaptrim: the heap was not trimmed and grown over the block (%#lx, break %#lx, %p)\n",
                (unsigned long)pa, (unsigned long)trimmed, (void *)q);
        return 3;
    }
    memset(q, 'B', n);
    image(argv[1], 2);
    printf("buf %p %zu\n", (void *)q, n);
    return 0;
}
