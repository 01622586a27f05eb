/* imgchain.c - writes a chain of snapshot images of its own memory for the
 * `snapfault image` command tests (tests/cli/image_cli.sh):
 *   DIR/snap-1.sfimg  full image
 *   DIR/snap-2.sfimg  incremental over 1 (zstd, level 19)
 *   DIR/snap-3.sfimg  incremental over 2 (zstd)
 *   DIR/expect.bin    the buffer's bytes as of snapshot 3
 * and prints "buf ADDR LEN", "var ADDR" and "anon-name yes|no".  Pages of
 * the buffer change so that no image after the first holds every page of
 * it: page 0 and 2 in snapshot 2, page 1 in snapshot 3, page 3 never.
 * Built without PIE, so gdb finds sf_page.counter at its link address in a
 * core exported from snapshot 3. */
#include "snapfault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

/* Initialised, so it lives in the executable's writable data mapping; a
 * whole page of its own, since the image holds (and its writer reads) the
 * whole tracked page, which a sanitizer would otherwise see as reading past
 * a smaller global. */
volatile union {
    long counter;
    char page[4096];
} sf_page __attribute__((aligned(4096))) = {.counter = 7};
#define sf_counter sf_page.counter

#define NPAGES 6

static void die(const char *what, int err)
{
    fprintf(stderr, "imgchain: %s: %s\n", what, sf_strerror(err));
    exit(err == -ENOTSUP ? 77 : 1);
}

static void write_image(const char *dir, int n, sf_snapshot *s, sf_snapshot *parent, unsigned flags)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/snap-%d.sfimg", dir, n);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, -errno);
    int r = sf_snapshot_write_flags(s, parent, fd, flags);
    if (r)
        die("sf_snapshot_write_flags", r);
    close(fd);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: imgchain DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    long ps = sysconf(_SC_PAGESIZE);
    if (ps != (long)sizeof sf_page.page) {
        fprintf(stderr, "imgchain: pages of %ld bytes, the test is written for 4 KiB\n", ps);
        return 77;
    }
    size_t len = (size_t)ps * NPAGES;
    unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        die("mmap", -errno);
    bool named = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)buf, len, "sfbuf") == 0;
    for (int p = 0; p < NPAGES; p++)
        for (long i = 0; i < ps; i++)
            buf[(size_t)p * ps + i] = (unsigned char)('A' + (i % 7 == 0 ? p : 0));

    sf_options opt = {.backend = SF_BACKEND_MPROTECT, .flags = SF_OPT_SNAPSHOTS | SF_OPT_EXACT};
    sf_tracker *t;
    int r = sf_tracker_create(&t, &opt);
    if (r)
        die("sf_tracker_create", r);
    uintptr_t var_page = (uintptr_t)&sf_page & ~(uintptr_t)(ps - 1);
    if ((r = sf_track(t, buf, len)) || (r = sf_track(t, (void *)var_page, (size_t)ps)))
        die("sf_track", r);

    sf_snapshot *s1, *s2, *s3;
    if ((r = sf_snapshot_take(t, &s1)))
        die("take 1", r);
    write_image(dir, 1, s1, NULL, 0);

    memset(buf, 'B', (size_t)ps);
    memset(buf + 2 * ps, 'B', (size_t)ps);
    sf_counter = 1000;
    if ((r = sf_snapshot_take(t, &s2)))
        die("take 2", r);
    write_image(dir, 2, s2, s1, SF_WRITE_ZSTD | SF_WRITE_ZSTD_LEVEL(19));

    memset(buf + ps, 'D', (size_t)ps / 2);
    sf_counter = 12345;
    if ((r = sf_snapshot_take(t, &s3)))
        die("take 3", r);
    write_image(dir, 3, s3, s2, SF_WRITE_ZSTD);

    char path[4096];
    snprintf(path, sizeof path, "%s/expect.bin", dir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f))
        die(path, -EIO);
    /* written after snapshot 3: in no image */
    memset(buf, 'Z', len);
    sf_counter = -1;

    printf("buf %#lx %zu\nvar %#lx\nanon-name %s\n", (unsigned long)(uintptr_t)buf, len,
           (unsigned long)(uintptr_t)&sf_page, named ? "yes" : "no");
    sf_snapshot_release(s1);
    sf_snapshot_release(s2);
    sf_snapshot_release(s3);
    sf_tracker_destroy(t);
    return 0;
}
