/* kwrite.c - the kernel writing into tracked memory: read, pread, readv,
 * recv, stat, pipe, fread and friends into heap buffers that snapfault has
 * armed; none may fail with EFAULT, and the data must be right. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int fails;

static void check(const char *what, long r)
{
    if (r < 0) {
        printf("%s failed: %s\n", what, strerror(errno));
        fails++;
    }
}

static unsigned long sum(const unsigned char *p, size_t n)
{
    unsigned long s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

int main(int argc, char **argv)
{
    const char *file = argc > 1 ? argv[1] : "/proc/self/exe";
    size_t n = 1u << 20;
    unsigned long expect = 0;
    for (int round = 0; round < 6; round++) {
        /* fresh and reused heap buffers, written by the kernel only */
        unsigned char *a = malloc(n), *b = malloc(n);
        int fd = open(file, O_RDONLY);
        check("open", fd);
        ssize_t r = read(fd, a, n);
        check("read", r);
        check("pread", pread(fd, b, n, 0));
        if (r > 0 && memcmp(a, b, (size_t)r) != 0) {
            printf("read and pread disagree\n");
            fails++;
        }
        unsigned long s = r > 0 ? sum(a, (size_t)r) : 0;
        if (round == 0)
            expect = s;
        else if (s != expect) {
            printf("round %d: checksum changed\n", round);
            fails++;
        }
        struct iovec iov[2] = {{a, 4096}, {b + 4096, 8192}};
        check("preadv", preadv(fd, iov, 2, 0));
        struct stat *st = malloc(sizeof(*st));
        check("fstat", fstat(fd, st));
        check("stat", stat(file, st));
        close(fd);
        int *fds = malloc(2 * sizeof(int));
        check("pipe", pipe(fds));
        check("write", write(fds[1], "hello", 5));
        check("read pipe", read(fds[0], b + 100, 5));
        close(fds[0]);
        close(fds[1]);
        check("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
        check("send", send(fds[1], "world", 5, 0));
        check("recv", recv(fds[0], a + 200, 5, 0));
        close(fds[0]);
        close(fds[1]);
        FILE *f = fopen(file, "rb");
        size_t got = fread(a, 1, n, f);
        if (ferror(f)) {
            printf("fread failed\n");
            fails++;
        }
        fclose(f);
        int fd2 = open(file, O_RDONLY);
        check("pread again", pread(fd2, b, n, 0));
        close(fd2);
        if (got != (size_t)r || memcmp(a, b, got) != 0) {
            printf("fread disagrees with read\n");
            fails++;
        }
        free(st);
        free(fds);
        free(a);
        free(b);
        usleep(60000); /* let collects re-arm what was written */
    }
    printf("kernel writes: %s\n", fails ? "FAILED" : "all ok");
    return fails ? 1 : 0;
}
