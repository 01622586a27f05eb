/* image_io.c - what writing and reading a snapshot image costs, raw and
 * zstd-compressed, against write(2)/pread(2) of the same bytes measured in
 * the same run.
 *
 * usage: image_io DIR [OUT]
 *   DIR  files whose contents become the tracked memory, for example a real
 *        process's memory: snapfault image export IMG --raw DIR
 *   OUT  scratch file for the images (default ./image_io.tmp, removed)
 * Prints, per encoding: file size, compression ratio, CPU seconds and MiB/s
 * to write (sf_snapshot_write_flags) and to read everything back
 * (sf_image_read), and those times over the write(2)/pread(2) baseline. */
#include "snapfault.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int load(const char *dir, unsigned char **mem, size_t *len)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    size_t total = 0, cap = 1u << 20;
    unsigned char *m = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.' || stat(p, &st) || !S_ISREG(st.st_mode))
            continue;
        total += (size_t)st.st_size;
    }
    total = (total + 4095) & ~(size_t)4095;
    if (!total)
        return -1;
    m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    rewinddir(d);
    size_t off = 0;
    while ((e = readdir(d))) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        int fd = e->d_name[0] == '.' ? -1 : open(p, O_RDONLY | O_CLOEXEC);
        ssize_t r;
        while (fd >= 0 && off < total && (r = read(fd, m + off, total - off < cap ? total - off : cap)) > 0)
            off += (size_t)r;
        if (fd >= 0)
            close(fd);
    }
    closedir(d);
    *mem = m;
    *len = total;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: image_io DIR [OUT]\n");
        return 2;
    }
    const char *out = argc > 2 ? argv[2] : "image_io.tmp";
    unsigned char *mem;
    size_t total;
    if (load(argv[1], &mem, &total)) {
        fprintf(stderr, "image_io: nothing to load from %s\n", argv[1]);
        return 1;
    }
    const size_t chunk = 1u << 20;
    unsigned char *buf = malloc(chunk);
    double mib = (double)total / 1048576.0;

    /* the baseline: the same bytes through write(2) and pread(2) */
    int fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    double c0 = cpu_now();
    for (size_t o = 0; o < total; o += chunk)
        if (write(fd, mem + o, total - o < chunk ? total - o : chunk) < 0)
            return 1;
    double c1 = cpu_now();
    for (size_t o = 0; o < total; o += chunk)
        if (pread(fd, buf, total - o < chunk ? total - o : chunk, (off_t)o) < 0)
            return 1;
    double c2 = cpu_now();
    close(fd);
    const double base_w = c1 - c0, base_r = c2 - c1;
    printf("memory %.1f MiB; write(2) %.3f s cpu, pread(2) %.3f s cpu\n", mib, base_w, base_r);

    sf_options o = {.flags = SF_OPT_SNAPSHOTS};
    sf_tracker *t;
    sf_snapshot *s;
    int r;
    if ((r = sf_tracker_create(&t, &o)) || (r = sf_track(t, mem, total)) || (r = sf_snapshot_take(t, &s))) {
        fprintf(stderr, "image_io: %s\n", sf_strerror(r));
        return 1;
    }
    static const struct {
        const char *name;
        unsigned flags;
    } enc[] = {
        {"raw", 0},
        {"zstd-1", SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(1)},
        {"zstd-3", SF_WRITE_ZSTD},
        {"zstd-9", SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(9)},
    };
    printf("%-7s %9s %6s %9s %8s %7s %9s %8s %7s\n", "image", "MiB", "ratio", "write s", "MiB/s", "x write",
           "read s", "MiB/s", "x pread");
    for (size_t k = 0; k < sizeof enc / sizeof *enc; k++) {
        fd = open(out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        c0 = cpu_now();
        r = sf_snapshot_write_flags(s, NULL, fd, enc[k].flags);
        c1 = cpu_now();
        struct stat st;
        fstat(fd, &st);
        sf_image *img = NULL;
        if (!r)
            r = sf_image_open(&img, fd);
        for (size_t o2 = 0; !r && o2 < total; o2 += chunk)
            r = sf_image_read(img, (uintptr_t)mem + o2, buf, total - o2 < chunk ? total - o2 : chunk);
        c2 = cpu_now();
        sf_image_close(img);
        close(fd);
        if (r) {
            fprintf(stderr, "image_io: %s: %s\n", enc[k].name, sf_strerror(r));
            return 1;
        }
        printf("%-7s %9.1f %6.2f %9.3f %8.0f %7.1f %9.3f %8.0f %7.1f\n", enc[k].name,
               (double)st.st_size / 1048576.0, (double)total / (double)st.st_size, c1 - c0, mib / (c1 - c0),
               (c1 - c0) / base_w, c2 - c1, mib / (c2 - c1), (c2 - c1) / base_r);
    }
    unlink(out);
    sf_snapshot_release(s);
    sf_tracker_destroy(t);
    free(buf);
    return 0;
}
