/* budget.c - a write-heavy program for snapshot mode's disk budget, driven
 * by events only.
 *
 *   budget DIR ROUNDS MIB
 *
 * Maps MIB MiB; round r (1..ROUNDS) rewrites a quarter of its pages with
 * data that does not compress (each page begins with "R<r>P<page>;"),
 * raises SIGUSR2 and waits until DIR/snap-PID.index has answered r takes
 * (S or F lines).  After each it prints
 *   round R files N bytes B
 * with the images in DIR at that moment (count and bytes).  First it
 * prints "buf ADDR".  The last round's pages stay for the final image. */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static void on_disk(const char *dir, int *files, long long *bytes)
{
    *files = 0;
    *bytes = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 6, ".sfimg") != 0)
            continue;
        char p[4096 + 256];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (stat(p, &st) == 0) {
            (*files)++;
            *bytes += st.st_size;
        }
    }
    if (d)
        closedir(d);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: budget DIR ROUNDS MIB\n");
        return 2;
    }
    const char *dir = argv[1];
    int rounds = atoi(argv[2]);
    size_t len = (size_t)atol(argv[3]) << 20, ps = (size_t)sysconf(_SC_PAGESIZE), np = len / ps;
    unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return 1;
    memset(buf, 0, len);
    printf("buf %p\n", (void *)buf);
    fflush(stdout);
    uint64_t x = 88172645463325252ull;
    for (int r = 1; r <= rounds; r++) {
        for (size_t p = (size_t)(r % 4); p < np; p += 4) {
            uint64_t *w = (uint64_t *)(buf + p * ps);
            for (size_t i = 0; i < ps / 8; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                w[i] = x;
            }
            char tag[64];
            int n = snprintf(tag, sizeof(tag), "R%dP%zu;", r, p);
            memcpy(w, tag, (size_t)n);
        }
        raise(SIGUSR2);
        for (int i = 0; answered(dir) < r; i++) {
            if (i == 60000) { /* loud safety net: 60 s */
                fprintf(stderr, "budget: take %d never answered in %s\n", r, dir);
                return 1;
            }
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        int files;
        long long bytes;
        on_disk(dir, &files, &bytes);
        printf("round %d files %d bytes %lld\n", r, files, bytes);
        fflush(stdout);
    }
    return 0;
}
